//! Accepted and refused command lines, one line per case.

use super::*;
use std::time::Duration;

fn idx(index: u64) -> Target {
    Target::Index(index)
}

fn name(name: &str) -> Target {
    Target::Name(name.to_string())
}

fn register(name: &str) -> Command {
    Command::Register {
        name: name.to_string(),
    }
}

fn write(target: Target, text: &str) -> Command {
    Command::Write {
        target,
        text: text.to_string(),
        retain: None,
    }
}

fn exec(target: Target, func: &str, arg: &str) -> Command {
    Command::Exec {
        target,
        func: func.to_string(),
        arg: arg.to_string(),
        retain: None,
    }
}

fn close(target: Target) -> Command {
    Command::Close { target }
}

fn notify(name: Option<&str>) -> Command {
    Command::Notify {
        name: name.map(str::to_string),
    }
}

fn run(action: &str, args: &[&str]) -> Command {
    Command::Run {
        action: action.to_string(),
        args: args.iter().map(|a| a.to_string()).collect(),
        to: None,
    }
}

fn run_to(target: Target, action: &str, args: &[&str]) -> Command {
    Command::Run {
        action: action.to_string(),
        args: args.iter().map(|a| a.to_string()).collect(),
        to: Some(target),
    }
}

fn call(target: Target, func: &str, arg: &str, timeout_ms: u64) -> Command {
    Command::Call {
        target,
        func: func.to_string(),
        arg: arg.to_string(),
        timeout: Duration::from_millis(timeout_ms),
    }
}

fn read(target: Target, element: Option<&str>, timeout_ms: u64) -> Command {
    Command::Read {
        target,
        name: element.map(str::to_string),
        timeout: Duration::from_millis(timeout_ms),
    }
}

fn wait(name: &str, count: usize, timeout_ms: u64) -> Command {
    Command::Wait {
        name: name.to_string(),
        count,
        timeout: Duration::from_millis(timeout_ms),
    }
}

fn dry(cmd: Command) -> Command {
    Command::DryRun(Box::new(cmd))
}

fn confirm(cmd: Command, timeout_ms: u64) -> Command {
    Command::Confirm {
        cmd: Box::new(cmd),
        timeout: Duration::from_millis(timeout_ms),
    }
}

fn help(topic: Option<&str>) -> Command {
    Command::Help {
        topic: topic.map(str::to_string),
    }
}

/// `line => Ok(command)` or `line => Err("the error text")`, one per line.
macro_rules! cases {
    ($($line:expr => $want:expr,)*) => {
        vec![$(($line, $want)),*]
    };
}

/// What every refusal of a name ends with: [`NAME_RULE`] as a literal,
/// for `concat!`.
macro_rules! rule {
    () => {
        "a name is 1 to 64 characters of ASCII letters, digits and -_.: and does not start with a digit"
    };
}

#[test]
fn the_rule_in_the_tables_is_the_rule() {
    assert_eq!(rule!(), NAME_RULE);
}

fn accepted() -> Vec<(&'static str, Result<Command, &'static str>)> {
    use Command::List;
    cases! {
        "ws" => Ok(List),
        "  ws  " => Ok(List),
        "\tws\t" => Ok(List),
        "ws register status" => Ok(register("status")),
        "ws register off" => Ok(register("off")),
        "ws register a1" => Ok(register("a1")),
        "ws register -1" => Ok(register("-1")),
        "ws register \"x\"" => Ok(register("x")),
        "ws register Status-2_b.c:d" => Ok(register("Status-2_b.c:d")),
        "ws register _" => Ok(register("_")),
        "ws register .9" => Ok(register(".9")),
        "ws register :" => Ok(register(":")),
        "ws write status up" => Ok(write(name("status"), "up")),
        "ws write status \"VPN up\"" => Ok(write(name("status"), "VPN up")),
        "ws\twrite\tstatus\t\"VPN\tup\"" => Ok(write(name("status"), "VPN\tup")),
        "ws write * \"héllo wörld ✓\"" => Ok(write(Target::All, "héllo wörld ✓")),
        "ws write status \"готово ✓\"" => Ok(write(name("status"), "готово ✓")),
        "ws write a.b:c x" => Ok(write(name("a.b:c"), "x")),
        "ws write 7 \"\"" => Ok(write(idx(7), "")),
        "ws write 007 x" => Ok(write(idx(7), "x")),
        "ws write 18446744073709551615 x" => Ok(write(idx(u64::MAX), "x")),
        r#"ws write 1 "say \"hi\"""# => Ok(write(idx(1), r#"say "hi""#)),
        r#"ws write 1 "back\\slash""# => Ok(write(idx(1), r"back\slash")),
        r#"ws write 1 "C:\temp\new""# => Ok(write(idx(1), r"C:\temp\new")),
        r"ws write 1 C:\temp\" => Ok(write(idx(1), r"C:\temp\")),
        "ws write 1 <b>bold</b>" => Ok(write(idx(1), "<b>bold</b>")),
        "ws exec 3 setProgress 42" => Ok(exec(idx(3), "setProgress", "42")),
        "ws exec 3 setProgress" => Ok(exec(idx(3), "setProgress", "")),
        "ws exec status alert \"two words\"" => Ok(exec(name("status"), "alert", "two words")),
        "ws exec * f \"\"" => Ok(exec(Target::All, "f", "")),
        "ws close" => Ok(close(Target::All)),
        "ws close *" => Ok(close(Target::All)),
        "ws close 12" => Ok(close(idx(12))),
        "ws close status" => Ok(close(name("status"))),
        "set notify status" => Ok(notify(Some("status"))),
        "set notify off" => Ok(notify(None)),
        "set notify OFF" => Ok(notify(Some("OFF"))),
        "run vpn-up" => Ok(run("vpn-up", &[])),
        "run backup /home \"two words\" \"\"" => Ok(run("backup", &["/home", "two words", ""])),
        "run 1 2 3" => Ok(run("1", &["2", "3"])),
        "run --to 3 build" => Ok(run_to(idx(3), "build", &[])),
        "run --to status build -j4" => Ok(run_to(name("status"), "build", &["-j4"])),
        "run --to * build" => Ok(run_to(Target::All, "build", &[])),
        "run build --to 3" => Ok(run("build", &["--to", "3"])),
        "run ok \"; rm -rf /\"" => Ok(run("ok", &["; rm -rf /"])),
        "run ok; rm -rf /" => Ok(run("ok;", &["rm", "-rf", "/"])),
        "run sh -c \"x\"" => Ok(run("sh", &["-c", "x"])),
        "help" => Ok(help(None)),
        "help ws" => Ok(help(Some("ws"))),
        "help ws write" => Ok(help(Some("ws write"))),
        "help\tws \t write" => Ok(help(Some("ws write"))),
        "help \"ws write\"" => Ok(help(Some("ws write"))),
        "help write" => Ok(help(Some("ws write"))),
        "help set" => Ok(help(Some("set notify"))),
        "help notify" => Ok(help(Some("set notify"))),
        "help run" => Ok(help(Some("run"))),
        "help help" => Ok(help(Some("help"))),
        "ws write --retain status up" => Ok(Command::Write {
            target: name("status"),
            text: "up".into(),
            retain: Some(Retain { ttl: None }),
        }),
        "ws write --ttl 20m --retain status up" => Ok(Command::Write {
            target: name("status"),
            text: "up".into(),
            retain: Some(Retain { ttl: Some(Duration::from_secs(1200)) }),
        }),
        "ws write status --retain" => Ok(write(name("status"), "--retain")),
        "ws exec --retain --ttl 2h gauge setLevel 42" => Ok(Command::Exec {
            target: name("gauge"),
            func: "setLevel".into(),
            arg: "42".into(),
            retain: Some(Retain { ttl: Some(Duration::from_secs(7200)) }),
        }),
        "ws retained" => Ok(Command::Retained),
        "ws forget status" => Ok(Command::Forget { name: "status".into() }),
        "ws visibility hidden" => Ok(Command::Visibility { state: Visibility::Hidden }),
        "ws visibility frozen" => Ok(Command::Visibility { state: Visibility::Frozen }),
        "help retained" => Ok(help(Some("ws retained"))),
        "help call" => Ok(help(Some("ws call"))),
        "help who" => Ok(help(Some("ws who"))),
        "ws call 3 getVersion" => Ok(call(idx(3), "getVersion", "", 5000)),
        "ws call * add \"1 2\"" => Ok(call(Target::All, "add", "1 2", 5000)),
        "ws call --timeout 500ms kiosk f x" => Ok(call(name("kiosk"), "f", "x", 500)),
        "ws call --timeout 2m --dry-run kiosk f" => Ok(dry(call(name("kiosk"), "f", "", 120_000))),
        "ws call kiosk f --timeout 2s" => Ok(call(name("kiosk"), "f", "", 2000)),
        "ws call kiosk f 42 --timeout 250ms" => Ok(call(name("kiosk"), "f", "42", 250)),
        "ws call kiosk f \"{\\\"a\\\": 1}\" --timeout 1s" => Ok(call(name("kiosk"), "f", "{\"a\": 1}", 1000)),
        "ws read status" => Ok(read(name("status"), None, 5000)),
        "ws read 4 clock" => Ok(read(idx(4), Some("clock"), 5000)),
        "ws read 4 clock --timeout 1s" => Ok(read(idx(4), Some("clock"), 1000)),
        "ws read 4 --timeout 1s clock" => Ok(read(idx(4), Some("clock"), 1000)),
        "ws read --dry-run *" => Ok(dry(read(Target::All, None, 5000))),
        "ws wait kiosk" => Ok(wait("kiosk", 1, 5000)),
        "ws wait kiosk --count 2 --timeout 30s" => Ok(wait("kiosk", 2, 30_000)),
        "ws wait --timeout 1.5s --count 3 kiosk" => Ok(wait("kiosk", 3, 1500)),
        "ws who status" => Ok(Command::Who { target: name("status") }),
        "ws who *" => Ok(Command::Who { target: Target::All }),
        "ws write --wait status up" => Ok(confirm(write(name("status"), "up"), 5000)),
        "ws write --wait --timeout 90s 7 up" => Ok(confirm(write(idx(7), "up"), 90_000)),
        "ws write --timeout 1s --wait 7 up" => Ok(confirm(write(idx(7), "up"), 1000)),
        "ws write --dry-run * up" => Ok(dry(write(Target::All, "up"))),
        "ws write --dry-run --wait * up" => Ok(dry(confirm(write(Target::All, "up"), 5000))),
        "ws write status --wait" => Ok(write(name("status"), "--wait")),
        "ws write --x up" => Ok(write(name("--x"), "up")),
        "ws exec --wait 3 f 42" => Ok(confirm(exec(idx(3), "f", "42"), 5000)),
        "ws exec 3 f --dry-run" => Ok(exec(idx(3), "f", "--dry-run")),
        "ws close --dry-run" => Ok(dry(close(Target::All))),
        "ws close status --dry-run" => Ok(dry(close(name("status")))),
        "ws close --x" => Ok(close(name("--x"))),
        "run --dry-run --to 3 build" => Ok(dry(run_to(idx(3), "build", &[]))),
        "run --to 3 --dry-run build x" => Ok(dry(run_to(idx(3), "build", &["x"]))),
        "run --to 3 build --dry-run" => Ok(run_to(idx(3), "build", &["--dry-run"])),
        "ws help" => Ok(help(Some("ws"))),
    }
}

fn refused() -> Vec<(&'static str, Result<Command, &'static str>)> {
    cases! {
        "" => Err("empty command line; try 'help'"),
        "   " => Err("empty command line; try 'help'"),
        "\t \t" => Err("empty command line; try 'help'"),
        "foo" => Err("unknown command 'foo'; try 'help'"),
        "WS" => Err("unknown command 'WS'; did you mean 'ws'? try 'help'"),
        "wss write 1 x" => Err("unknown command 'wss'; did you mean 'ws'? try 'help'"),
        "hlep" => Err("unknown command 'hlep'; did you mean 'help'? try 'help'"),
        "\"\"" => Err("unknown command ''; try 'help'"),
        "\"ws write\" 1 x" => Err("unknown command 'ws write'; try 'help'"),
        "ws bogus" => Err("ws: unknown subcommand 'bogus'; expected register, write, exec, close, retained, forget, visibility, call, read, wait or who"),
        "ws wirte status x" => Err("ws: unknown subcommand 'wirte'; did you mean 'write'? expected register, write, exec, close, retained, forget, visibility, call, read, wait or who"),
        "ws clos" => Err("ws: unknown subcommand 'clos'; did you mean 'close'? expected register, write, exec, close, retained, forget, visibility, call, read, wait or who"),
        "ws regster a" => Err("ws: unknown subcommand 'regster'; did you mean 'register'? expected register, write, exec, close, retained, forget, visibility, call, read, wait or who"),
        "set notfy x" => Err("set: unknown subcommand 'notfy'; did you mean 'notify'? expected notify"),
        "ws help x" => Err("help: unexpected extra argument 'x'; usage: help [COMMAND]"),
        "ws list" => Err("ws: unknown subcommand 'list'; expected register, write, exec, close, retained, forget, visibility, call, read, wait or who"),
        "ws \"\"" => Err("ws: unknown subcommand ''; expected register, write, exec, close, retained, forget, visibility, call, read, wait or who"),
        "ws write \"x" => Err("unterminated double quote"),
        "ws write status \"VPN up" => Err("unterminated double quote"),
        "ws write status \"VPN\"up" => Err("unexpected 'up' after a closing double quote; expected a blank or the end of the line"),
        "ws write status VPN\"up\"" => Err(r#"double quote inside 'VPN"up"'; a double quote may only start a token (inside a quoted token write \")"#),
        "ws write 1 a\0b" => Err("line contains a NUL character; a command line is one line of text"),
        "ws write 1 a\nws close" => Err("line contains a newline; a command line is one line of text"),
        "ws write 1 \"a\rb\"" => Err("line contains a carriage return; a command line is one line of text"),
        "ws register" => Err("ws register: missing NAME; usage: ws register NAME"),
        "ws register a b" => Err("ws register: unexpected extra argument 'b'; usage: ws register NAME"),
        "ws register 123" => Err(concat!("invalid name '123': it starts with a digit; ", rule!())),
        "ws register 0" => Err(concat!("invalid name '0': it starts with a digit; ", rule!())),
        "ws register 1abc" => Err(concat!("invalid name '1abc': it starts with a digit; ", rule!())),
        "ws register *" => Err(concat!("invalid name '*': '*' is not allowed; ", rule!())),
        "ws register \"\"" => Err(concat!("invalid name '': it is empty; ", rule!())),
        "ws register \"a b\"" => Err(concat!("invalid name 'a b': ' ' is not allowed; ", rule!())),
        "ws register \"a\tb\"" => Err(concat!(r"invalid name 'a\tb': '\t' is not allowed; ", rule!())),
        "ws register \"a\u{7}b\"" => Err(concat!(r"invalid name 'a\u{7}b': '\u{7}' is not allowed; ", rule!())),
        "ws register \"a\u{a0}b\"" => Err(concat!("invalid name 'a\u{a0}b': '\u{a0}' is not allowed; ", rule!())),
        "ws register \"a\u{1b}[2J\"" => Err(concat!(r"invalid name 'a\u{1b}[2J': '\u{1b}' is not allowed; ", rule!())),
        "ws register \"st\u{202e}sutat\"" => Err(concat!(r"invalid name 'st\u{202e}sutat': '\u{202e}' is not allowed; ", rule!())),
        "ws register \"sta\u{200b}tus\"" => Err(concat!(r"invalid name 'sta\u{200b}tus': '\u{200b}' is not allowed; ", rule!())),
        "ws register é" => Err(concat!("invalid name 'é': 'é' is not allowed; ", rule!())),
        "ws register statüs" => Err(concat!("invalid name 'statüs': 'ü' is not allowed; ", rule!())),
        "ws register \u{441}tatus" => Err(concat!("invalid name '\u{441}tatus': '\u{441}' is not allowed; ", rule!())),
        "ws register статус" => Err(concat!("invalid name 'статус': 'с' is not allowed; ", rule!())),
        "ws register a/b" => Err(concat!("invalid name 'a/b': '/' is not allowed; ", rule!())),
        "ws register a,b" => Err(concat!("invalid name 'a,b': ',' is not allowed; ", rule!())),
        "ws register \"it's\"" => Err(concat!("invalid name 'it's': ''' is not allowed; ", rule!())),
        "ws register <b>" => Err(concat!("invalid name '<b>': '<' is not allowed; ", rule!())),
        "ws write" => Err("ws write: missing TARGET; usage: ws write TARGET \"text\""),
        "ws write status" => Err("ws write: missing TEXT; usage: ws write TARGET \"text\""),
        "ws write status VPN up" => Err("ws write: unexpected extra argument 'up'; usage: ws write TARGET \"text\" (quote text that has spaces)"),
        "ws write 0 x" => Err("index must be a positive integer, not 0"),
        "ws write 000 x" => Err("index must be a positive integer, not 0"),
        "ws write 18446744073709551616 x" => Err("index 18446744073709551616 is too large; the largest index is 18446744073709551615"),
        "ws write 99999999999999999999999 x" => Err("index 99999999999999999999999 is too large; the largest index is 18446744073709551615"),
        "ws write \"\" x" => Err(concat!("invalid name '': it is empty; ", rule!())),
        "ws write \"two words\" x" => Err(concat!("invalid name 'two words': ' ' is not allowed; ", rule!())),
        "ws write 7up x" => Err(concat!("invalid name '7up': it starts with a digit; ", rule!())),
        "ws write статус x" => Err(concat!("invalid name 'статус': 'с' is not allowed; ", rule!())),
        "ws exec 1e3 f" => Err(concat!("invalid name '1e3': it starts with a digit; ", rule!())),
        "ws close a*" => Err(concat!("invalid name 'a*': '*' is not allowed; ", rule!())),
        "ws exec" => Err("ws exec: missing TARGET; usage: ws exec TARGET FUNC [ARG]"),
        "ws exec 1" => Err("ws exec: missing FUNC; usage: ws exec TARGET FUNC [ARG]"),
        "ws exec 1 \"\" x" => Err("ws exec: FUNC must not be empty; usage: ws exec TARGET FUNC [ARG]"),
        "ws exec 1 f a b" => Err("ws exec: unexpected extra argument 'b'; usage: ws exec TARGET FUNC [ARG] (quote ARG if it has spaces)"),
        "ws exec 0 f" => Err("index must be a positive integer, not 0"),
        "ws close 0" => Err("index must be a positive integer, not 0"),
        "ws close 1 2" => Err("ws close: unexpected extra argument '2'; usage: ws close [TARGET]"),
        "ws close * status" => Err("ws close: unexpected extra argument 'status'; usage: ws close [TARGET]"),
        "set" => Err("set: missing subcommand; expected notify"),
        "set bogus x" => Err("set: unknown subcommand 'bogus'; expected notify"),
        "set notify" => Err("set notify: missing NAME; usage: set notify NAME|off"),
        "set notify a b" => Err("set notify: unexpected extra argument 'b'; usage: set notify NAME|off"),
        "set notify off now" => Err("set notify: unexpected extra argument 'now'; usage: set notify NAME|off"),
        "set notify 5" => Err(concat!("invalid name '5': it starts with a digit; ", rule!())),
        "set notify *" => Err(concat!("invalid name '*': '*' is not allowed; ", rule!())),
        "set notify статус" => Err(concat!("invalid name 'статус': 'с' is not allowed; ", rule!())),
        "run" => Err("run: missing ACTION; usage: run [--to TARGET] ACTION [ARG...]"),
        "run \"\"" => Err("run: ACTION must not be empty; usage: run [--to TARGET] ACTION [ARG...]"),
        "run --to" => Err("run: missing TARGET; usage: run [--to TARGET] ACTION [ARG...]"),
        "run --to 3" => Err("run: missing ACTION; usage: run [--to TARGET] ACTION [ARG...]"),
        "run --to 0 build" => Err("index must be a positive integer, not 0"),
        "ws write --retain 7 x" => Err("ws write: --retain needs a NAME as TARGET (a value is kept per name), not an index or *; usage: ws write TARGET \"text\""),
        "ws exec --retain * f" => Err("ws exec: --retain needs a NAME as TARGET (a value is kept per name), not an index or *; usage: ws exec TARGET FUNC [ARG]"),
        "ws write --ttl 5s status x" => Err("ws write: --ttl needs --retain; usage: ws write TARGET \"text\""),
        "ws write --retain --ttl 5 status x" => Err("ws write: --ttl: invalid duration '5'; expected a whole number and s, m, h or d (90s, 20m, 2h), at most 366d; usage: ws write TARGET \"text\""),
        "ws write --retain --ttl 0s status x" => Err("ws write: --ttl: invalid duration '0s'; expected a whole number and s, m, h or d (90s, 20m, 2h), at most 366d; usage: ws write TARGET \"text\""),
        "ws write --retain --ttl 367d status x" => Err("ws write: --ttl: invalid duration '367d'; expected a whole number and s, m, h or d (90s, 20m, 2h), at most 366d; usage: ws write TARGET \"text\""),
        "ws write --retain --ttl 99999999999999999999s status x" => Err("ws write: --ttl: invalid duration '99999999999999999999s'; expected a whole number and s, m, h or d (90s, 20m, 2h), at most 366d; usage: ws write TARGET \"text\""),
        "ws write --retain --ttl" => Err("ws write: missing DURATION; usage: ws write TARGET \"text\""),
        "ws write --retain" => Err("ws write: missing TARGET; usage: ws write TARGET \"text\""),
        "ws retained x" => Err("ws retained: unexpected extra argument 'x'; usage: ws retained"),
        "ws forget" => Err("ws forget: missing NAME; usage: ws forget NAME"),
        "ws forget 7" => Err(concat!("invalid name '7': it starts with a digit; ", rule!())),
        "ws visibility" => Err("ws visibility: missing STATE; usage: ws visibility STATE"),
        "ws visibility gone" => Err("ws visibility: unknown state 'gone'; expected visible, hidden or frozen"),
        "run --to \"a b\" build" => Err(concat!("invalid name 'a b': ' ' is not allowed; ", rule!())),
        "run --to é build" => Err(concat!("invalid name 'é': 'é' is not allowed; ", rule!())),
        "run --to 3 --to 4 build" => Err("run: unknown option '--to'; usage: run [--to TARGET] ACTION [ARG...]"),
        "run -x build" => Err("run: unknown option '-x'; usage: run [--to TARGET] ACTION [ARG...]"),
        "run --help" => Err("run: unknown option '--help'; usage: run [--to TARGET] ACTION [ARG...]"),
        "ws call" => Err("ws call: missing TARGET; usage: ws call TARGET FUNC [ARG]"),
        "ws call 3" => Err("ws call: missing FUNC; usage: ws call TARGET FUNC [ARG]"),
        "ws call 3 f a b" => Err("ws call: unexpected extra argument 'b'; usage: ws call TARGET FUNC [ARG] (quote ARG if it has spaces)"),
        "ws call --timeout 3 f" => Err("ws call: --timeout: '3' is not a duration; expected a number and a unit, e.g. 500ms, 5s, 2m or 1h; usage: ws call TARGET FUNC [ARG]"),
        "ws call --timeout" => Err("ws call: missing DURATION; usage: ws call TARGET FUNC [ARG]"),
        "ws call --timeout 0s 3 f" => Err("ws call: --timeout: '0s' is out of range; it must be from 1ms to 1h; usage: ws call TARGET FUNC [ARG]"),
        "ws call --timeout 2h 3 f" => Err("ws call: --timeout: '2h' is out of range; it must be from 1ms to 1h; usage: ws call TARGET FUNC [ARG]"),
        "ws call kiosk f --timeout" => Err("ws call: missing DURATION; usage: ws call TARGET FUNC [ARG]"),
        "ws call kiosk f 1 --timeout 2s extra" => Err("ws call: unexpected extra argument 'extra'; usage: ws call TARGET FUNC [ARG] (quote ARG if it has spaces)"),
        "ws call --wait 3 f" => Err("ws call: unknown option '--wait'; usage: ws call TARGET FUNC [ARG]"),
        "ws who --dry-run 3" => Err("ws who: unknown option '--dry-run'; usage: ws who TARGET"),
        "ws read" => Err("ws read: missing TARGET; usage: ws read TARGET [NAME]"),
        "ws read 3 a b" => Err("ws read: unexpected extra argument 'b'; usage: ws read TARGET [NAME]"),
        "ws read 3 --count 2" => Err("ws read: unknown option '--count'; usage: ws read TARGET [NAME]"),
        "ws read 3 \"a b\"" => Err(concat!("invalid name 'a b': ' ' is not allowed; ", rule!())),
        "ws wait" => Err("ws wait: missing NAME; usage: ws wait NAME [--count N] [--timeout DURATION]"),
        "ws wait 3" => Err(concat!("invalid name '3': it starts with a digit; ", rule!())),
        "ws wait * " => Err(concat!("invalid name '*': '*' is not allowed; ", rule!())),
        "ws wait kiosk --count 0" => Err("ws wait: --count: '0' is not a count; expected a whole number from 1 to 1000000; usage: ws wait NAME [--count N] [--timeout DURATION]"),
        "ws wait kiosk --count" => Err("ws wait: missing N; usage: ws wait NAME [--count N] [--timeout DURATION]"),
        "ws wait kiosk --dry-run" => Err("ws wait: unknown option '--dry-run'; usage: ws wait NAME [--count N] [--timeout DURATION]"),
        "ws wait kiosk 2" => Err("ws wait: unexpected extra argument '2'; usage: ws wait NAME [--count N] [--timeout DURATION]"),
        "ws who" => Err("ws who: missing TARGET; usage: ws who TARGET"),
        "ws who 0" => Err("index must be a positive integer, not 0"),
        "ws who 1 2" => Err("ws who: unexpected extra argument '2'; usage: ws who TARGET"),
        "ws write --timeout 2s 7 up" => Err("ws write: --timeout: only with --wait; usage: ws write TARGET \"text\""),
        "ws write --wait --timeout 5 7 up" => Err("ws write: --timeout: '5' is not a duration; expected a number and a unit, e.g. 500ms, 5s, 2m or 1h; usage: ws write TARGET \"text\""),
        "ws write --wait 7" => Err("ws write: missing TEXT; usage: ws write TARGET \"text\""),
        "ws close 3 --x" => Err("ws close: unknown option '--x'; usage: ws close [TARGET]"),
        "run --dry-run build" => Err("run: --dry-run: only with --to TARGET; usage: run [--to TARGET] ACTION [ARG...]"),
        "run --dry-run --dry-run --to 3 build" => Err("run: unknown option '--dry-run'; usage: run [--to TARGET] ACTION [ARG...]"),
        "help bogus" => Err("help: unknown topic 'bogus'; known topics: ws, ws register, ws write, ws exec, ws close, ws retained, ws forget, ws visibility, ws call, ws read, ws wait, ws who, set notify, run, help"),
        "help ws write now" => Err("help: unknown topic 'ws write now'; known topics: ws, ws register, ws write, ws exec, ws close, ws retained, ws forget, ws visibility, ws call, ws read, ws wait, ws who, set notify, run, help"),
    }
}

fn check(cases: Vec<(&'static str, Result<Command, &'static str>)>) {
    let mut failures = Vec::new();
    for (line, want) in cases {
        let got = parse(line).map_err(|e| e.to_string());
        let want = want.map_err(str::to_string);
        if got != want {
            failures.push(format!("{line:?}\n   got {got:?}\n  want {want:?}"));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn accepted_lines() {
    check(accepted());
}

#[test]
fn refused_lines() {
    check(refused());
}

#[test]
fn errors_are_one_line_without_full_stop() {
    for (line, _) in refused() {
        let Err(error) = parse(line) else {
            panic!("{line:?} parses");
        };
        let text = error.to_string();
        assert!(!text.contains('\n'), "{text:?}");
        assert!(!text.ends_with('.'), "{text:?}");
        assert!(
            !text.starts_with(|c: char| c.is_uppercase()),
            "{text:?} starts with a capital"
        );
    }
}

#[test]
fn line_length_limit() {
    let prefix = "ws write 1 ";
    let longest = format!("{prefix}{}", "x".repeat(MAX_LINE_BYTES - prefix.len()));
    assert_eq!(parse(&longest), Ok(write(idx(1), &longest[prefix.len()..])));
    let too_long = format!("{longest}x");
    assert_eq!(parse(&too_long), Err(ParseError::TooLong));
    assert_eq!(
        ParseError::TooLong.to_string(),
        "line is longer than 65536 bytes"
    );
}

#[test]
fn name_length_limit() {
    let longest = "n".repeat(MAX_NAME_LEN);
    assert_eq!(valid_name(&longest), Ok(()));
    assert_eq!(
        parse(&format!("ws register {longest}")),
        Ok(register(&longest))
    );
    let too_long = format!("{longest}n");
    assert_eq!(
        parse(&format!("ws register {too_long}")).map_err(|e| e.to_string()),
        Err(format!(
            "invalid name '{}...': it is longer than 64 characters; {NAME_RULE}",
            "n".repeat(40)
        ))
    );
    // A long name of characters outside the rule names the character.
    let wide = "é".repeat(MAX_NAME_LEN * 2);
    assert_eq!(
        valid_name(&wide),
        Err(ParseError::InvalidName {
            name: wide.clone(),
            problem: NameProblem::Char('é'),
        })
    );
}

#[test]
fn long_input_is_cut_short_in_errors() {
    let word = "y".repeat(10_000);
    let error = parse(&word).map_err(|e| e.to_string());
    assert_eq!(
        error,
        Err(format!(
            "unknown command '{}...'; try 'help'",
            "y".repeat(40)
        ))
    );
}

#[test]
fn errors_keep_the_raw_input() {
    assert_eq!(
        parse("ws write status VPN up"),
        Err(ParseError::ExtraArgument {
            command: "ws write",
            arg: "up".to_string(),
            usage: "ws write TARGET \"text\"",
            hint: Some("(quote text that has spaces)"),
        })
    );
    assert_eq!(
        parse("ws register \"a\tb\""),
        Err(ParseError::InvalidName {
            name: "a\tb".to_string(),
            problem: NameProblem::Char('\t'),
        })
    );
}

#[test]
fn command_names() {
    let cases = [
        (Command::List, "ws"),
        (register("a"), "ws register"),
        (write(Target::All, ""), "ws write"),
        (exec(Target::All, "f", ""), "ws exec"),
        (close(Target::All), "ws close"),
        (notify(None), "set notify"),
        (run("a", &[]), "run"),
        (help(None), "help"),
        (call(Target::All, "f", "", 1), "ws call"),
        (read(Target::All, None, 1), "ws read"),
        (wait("a", 1, 1), "ws wait"),
        (
            Command::Who {
                target: Target::All,
            },
            "ws who",
        ),
        (dry(write(Target::All, "")), "ws write"),
        (confirm(exec(Target::All, "f", ""), 1), "ws exec"),
    ];
    for (command, want) in cases {
        assert_eq!(command.name(), want);
        assert!(COMMANDS.iter().any(|def| def.name == want), "{want:?}");
    }
}

#[test]
fn target_display() {
    assert_eq!(idx(42).to_string(), "42");
    assert_eq!(name("статус").to_string(), "статус");
    assert_eq!(Target::All.to_string(), "*");
}

#[test]
fn targets_round_trip_through_display() {
    for target in [
        idx(1),
        idx(u64::MAX),
        name("status"),
        name("x1"),
        Target::All,
    ] {
        let line = format!("ws close {target}");
        assert_eq!(parse(&line), Ok(close(target)));
    }
}

/// The CLI turns its argv into a line with `quote`; the daemon must see the
/// same words the shell passed.
#[test]
fn cli_argv_round_trips() {
    let cases: &[(&[&str], Command)] = &[
        (&["ws"], Command::List),
        (
            &["ws", "write", "status", "VPN up"],
            write(name("status"), "VPN up"),
        ),
        (
            &["ws", "write", "*", r#"say "hi" \o/"#],
            write(Target::All, r#"say "hi" \o/"#),
        ),
        (&["ws", "write", "3", ""], write(idx(3), "")),
        (
            &["ws", "write", "3", r"trailing\"],
            write(idx(3), r"trailing\"),
        ),
        (&["ws", "exec", "3", "f", "a b"], exec(idx(3), "f", "a b")),
        (
            &["ws", "register", "ok-name.v2:x"],
            register("ok-name.v2:x"),
        ),
        (&["run", "x", "", " "], run("x", &["", " "])),
        (
            &["run", "--to", "status", "x", "a b"],
            run_to(name("status"), "x", &["a b"]),
        ),
        (&["help", "ws", "write"], help(Some("ws write"))),
    ];
    for (argv, want) in cases {
        let argv: Vec<String> = argv.iter().map(|a| a.to_string()).collect();
        let line = quote(&argv);
        assert_eq!(parse(&line).as_ref(), Ok(want), "line {line:?}");
    }
}
