//! What reaches the operator's terminal, against the real daemon and the
//! real CLI: text from pages, clients and actions is shown escaped on the
//! daemon's console, in `pagewire monitor`, in `ws` listings and in CLI
//! output, and can never start a Monitor line of its own; names follow the
//! spec's rule at every door; a flood of one event is summarised.

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::page::{listing, Page};
use crate::support::{command, Daemon, Process, TIMEOUT};

/// Terminal controls a command line can carry: ESC starting "clear the
/// screen", a bidi override, a zero-width space, C1 CSI (U+009B), a tab and
/// DEL.
const EVIL: &str = "\u{1b}[2J\u{202e}\u{200b}\u{9b}31m\tx\u{7f}";

/// [`EVIL`] as every output must show it.
const EVIL_SHOWN: &str = r"\u{1b}[2J\u{202e}\u{200b}\u{9b}31m\tx\u{7f}";

/// What would forge a Monitor line if a newline got through.
const FORGED: &str = "\n12:00:00.000 page 1: forged";

/// [`FORGED`] as every output must show it.
const FORGED_SHOWN: &str = r"\n12:00:00.000 page 1: forged";

/// Whether `c` must never reach a terminal raw: C0, DEL and C1 controls,
/// bidi controls, zero-width and other invisible format characters, and
/// the Unicode line and paragraph separators.
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{200b}'..='\u{200f}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{2069}'
                | '\u{061c}'
                | '\u{feff}'
                | '\u{2028}'
                | '\u{2029}'
        )
}

/// Panics, naming the first offending line, if `lines` hold a character
/// that must not reach a terminal raw.
#[track_caller]
fn assert_no_raw_controls<S: AsRef<str>>(what: &str, lines: &[S]) {
    for line in lines {
        let line = line.as_ref();
        if let Some(c) = line.chars().find(|&c| is_unsafe(c)) {
            panic!("{what}: raw {c:?} in {line:?}");
        }
    }
}

/// Whether `line` looks like a Monitor line (`HH:MM:SS.mmm ` first).
fn is_stamped(line: &str) -> bool {
    let b = line.as_bytes();
    b.len() > 13
        && b[..12].iter().enumerate().all(|(i, c)| match i {
            2 | 5 => *c == b':',
            8 => *c == b'.',
            _ => c.is_ascii_digit(),
        })
        && b[12] == b' '
}

/// Starts `pagewire monitor` and waits until it shows a line, so that
/// everything after this call reaches it.
fn live_monitor(d: &Daemon) -> Process {
    let monitor = d.cli_spawn(&["monitor"]);
    let deadline = Instant::now() + TIMEOUT;
    while !monitor
        .stdout_lines()
        .iter()
        .any(|l| l.contains("control: ws ->"))
    {
        assert!(Instant::now() < deadline, "{}", monitor.snapshot());
        d.cli(&["ws"]).assert_exit_code(0);
    }
    monitor
}

fn config_file(dir: &Path, text: &str) -> String {
    let path = dir.join("pagewire.toml");
    std::fs::write(&path, text).expect("write the config");
    path.display().to_string()
}

#[tokio::test]
async fn text_from_pages_clients_and_actions_reaches_no_terminal_raw() {
    let dir = tempfile::tempdir().expect("tempdir");
    // An action whose output carries a carriage return and the controls
    // (a command line cannot hold a CR; a program's output can).
    let config = config_file(
        dir.path(),
        "[actions.evil]\nprogram = \"echo\"\n\
         args = [\"out\\r\\u001b[2J\\u202e\\u200b\\u009b31m\"]\n",
    );
    let d = Daemon::start(&["--config", &config]);
    let mut monitor = live_monitor(&d);
    let mut page = Page::with_names(&d, &["status"]).await;

    // A page's refused command line carries the text into the Monitor.
    page.send(&format!("ws write status \"{EVIL}{FORGED}\""))
        .await;
    assert_eq!(page.recv().await["type"], "error");
    // A name with a bidi override and a zero-width space (checked last).
    page.send("ws register \"a\u{202e}b\u{200b}\"").await;
    let register = page.recv().await;

    // An operator's text that reaches no page is printed on the console.
    let fallback = d.cli(&["ws", "write", "nobody", EVIL]);
    fallback
        .assert_exit_code(0)
        .assert_stdout_contains("printed on the console");
    // A client's line that the parser refuses is recorded as sent.
    let newline = d.cli(&["ws", "write", "nobody", &format!("{EVIL}{FORGED}")]);
    newline.assert_exit_code(1);
    // An action's output goes to the Monitor line by line.
    d.cli(&["run", "evil"]).assert_exit_code(0);
    monitor.next_stdout(|l| l.contains("action evil[1] done"));
    // The last event: everything before it has been printed.
    d.cli(&["help", "ws"]).assert_exit_code(0);
    monitor.next_stdout(|l| l.contains("control: help ws -> ok"));
    d.wait_for_stdout(|l| l.contains("control: help ws -> ok"));
    let ws = d.cli(&["ws"]);
    ws.assert_exit_code(0);

    let console = d.process().stdout_lines();
    let watched = monitor.stdout_lines();
    for (what, lines) in [("console", &console), ("pagewire monitor", &watched)] {
        assert_no_raw_controls(what, lines);
        // Every Monitor line starts with its time; none is the forged one.
        let forged: Vec<&String> = lines.iter().filter(|l| l.contains("forged")).collect();
        assert_eq!(forged.len(), 2, "{what}: {forged:#?}");
        for line in &forged {
            assert!(
                line.contains("ws write") && line.contains(FORGED_SHOWN),
                "{what}: a line of its own: {line:?}"
            );
            assert!(!line.starts_with("12:00:00.000 page 1"), "{what}: {line:?}");
        }
        assert!(
            lines
                .iter()
                .any(|l| l.contains("page 1: ws write status") && l.contains(EVIL_SHOWN)),
            "{what}: {lines:#?}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.contains(r"stdout: out\r\u{1b}[2J\u{202e}\u{200b}\u{9b}31m")),
            "{what}: the action's line escaped: {lines:#?}"
        );
    }
    // The text a `ws write` printed on the console, as one line.
    assert!(console.iter().any(|l| l == EVIL_SHOWN), "{console:#?}");
    for line in &watched {
        assert!(is_stamped(line), "pagewire monitor: {line:?}");
    }
    for out in [&fallback, &newline, &ws] {
        let lines: Vec<&str> = out.stdout.lines().chain(out.stderr.lines()).collect();
        assert_no_raw_controls(&out.command, &lines);
    }
    // The name was refused, and not registered.
    assert_eq!(register["type"], "error", "{register}");
    assert!(ws.stdout.contains("names=status "), "{ws}");
    assert_eq!(listing(&d).len(), 1, "{ws}");
}

/// Serves one control connection at `path` the way a daemon would, but
/// with raw control characters in what it sends: the reply to a command,
/// or two Monitor lines.
fn fake_daemon(listener: UnixListener, ok: bool, output: &'static str) {
    std::thread::spawn(move || {
        while let Ok((stream, _)) = listener.accept() {
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut request = String::new();
            if reader.read_line(&mut request).is_err() {
                continue;
            }
            let mut out = &stream;
            let answers = if request.contains("\"monitor\"") {
                vec![
                    serde_json::json!({ "line": format!("12:00:00.000 {output}") }),
                    serde_json::json!({ "line": "12:00:01.000 last" }),
                ]
            } else {
                vec![serde_json::json!({ "ok": ok, "output": output })]
            };
            for answer in answers {
                let _ = writeln!(out, "{answer}");
            }
        }
    });
}

/// Runs the CLI against a fake daemon and returns (exit code, stdout,
/// stderr) as raw bytes decoded without loss checks.
fn cli_against_fake(
    ok: bool,
    output: &'static str,
    args: &[&str],
) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("fake.sock");
    let listener = UnixListener::bind(&path).expect("bind the fake control socket");
    fake_daemon(listener, ok, output);
    let mut cmd = command([std::ffi::OsStr::new("--control"), path.as_os_str()]);
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = cmd.spawn().expect("start the CLI");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = rx
        .recv_timeout(TIMEOUT)
        .expect("the CLI exits in time")
        .expect("the CLI's output");
    (
        out.status.code(),
        String::from_utf8(out.stdout).expect("UTF-8 stdout"),
        String::from_utf8(out.stderr).expect("UTF-8 stderr"),
    )
}

#[test]
fn the_cli_escapes_whatever_the_control_socket_sends() {
    // Something answering on the socket (a daemon of another version, or
    // not pagewire at all) sends raw controls: the CLI still shows them
    // escaped, and a multi-line reply stays multi-line.
    const LISTING: &str = "1 names=a\u{1b}]0;pwned\u{7} page=x\r\n2 names=b\u{202e}\u{9b}";
    let (code, stdout, stderr) = cli_against_fake(true, LISTING, &["ws"]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert_eq!(
        stdout,
        "1 names=a\\u{1b}]0;pwned\\u{7} page=x\\r\n2 names=b\\u{202e}\\u{9b}\n"
    );
    let (code, stdout, stderr) = cli_against_fake(false, "bad \u{1b}[2J\nthing", &["ws"]);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert_eq!(stderr, "bad \\u{1b}[2J\nthing\n");
    // A Monitor line is one line, whatever it holds.
    let (code, stdout, stderr) = cli_against_fake(true, "x\u{1b}[2J\ny\u{2028}z", &["monitor"]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert_eq!(
        stdout,
        "12:00:00.000 x\\u{1b}[2J\\ny\\u{2028}z\n12:00:01.000 last\n"
    );
}

/// What every refusal of a name says a name may hold.
const NAME_RULE: &str =
    "a name is 1 to 64 characters of ASCII letters, digits and -_.: and does not start with a digit";

#[tokio::test]
async fn names_follow_the_rule_at_every_door() {
    let d = Daemon::start::<&str>(&[]);
    let mut page = Page::open(&d).await;
    let long = "n".repeat(65);
    for name in [
        "1abc",
        "9",
        "\"a b\"",
        "é",
        "statüs",
        "\"a\u{202e}b\"",
        "a\u{200b}",
        "*",
        "a/b",
        "a,b",
        "\"\"",
        long.as_str(),
    ] {
        page.send(&format!("ws register {name}")).await;
        let frame = page.recv().await;
        assert_eq!(frame["type"], "error", "{name}: {frame}");
        let message = frame["message"].as_str().unwrap_or_default();
        assert!(message.contains(NAME_RULE), "{name}: {message}");
        assert!(!message.contains('\n'), "{name}: {message}");
    }
    let listed = listing(&d);
    assert!(
        listed[0].contains("names=- "),
        "nothing registered: {listed:?}"
    );
    let longest = "n".repeat(64);
    for name in ["ok-name_1.x:y", "A", "-", "_9", longest.as_str()] {
        page.send(&format!("ws register {name}")).await;
        let frame = page.recv().await;
        assert_eq!(frame["type"], "reply", "{name}: {frame}");
    }
    // The CLI's doors: a TARGET, `set notify`, `run --to`.
    for args in [
        &["ws", "write", "1abc", "x"][..],
        &["ws", "exec", "é", "f"],
        &["ws", "close", "a b"],
        &["set", "notify", "stat\u{202e}us"],
        &["run", "--to", "a/b", "x"],
        &["ws", "register", "1abc"],
    ] {
        let out = d.cli(args);
        out.assert_exit_code(1).assert_stderr_contains(NAME_RULE);
        assert_eq!(out.stderr.lines().count(), 1, "{out}");
    }
    d.cli(&["ws", "write", "ok-name_1.x:y", "fine"])
        .assert_exit_code(0)
        .assert_stdout_contains("sent to 1 connection");
}

#[test]
fn configured_action_names_follow_the_rule() {
    let dir = tempfile::tempdir().expect("tempdir");
    for name in ["1up", "\"up now\"", "\"ünï\"", "\"a\\u202eb\""] {
        let config = config_file(
            dir.path(),
            &format!("[actions.{name}]\nprogram = \"true\"\n"),
        );
        let out = Daemon::builder()
            .args(&["--config", &config])
            .spawn()
            .wait_exit();
        out.assert_exit_code(1).assert_stderr_contains(NAME_RULE);
    }
    let config = config_file(dir.path(), "[actions.\"up-2.b:c\"]\nprogram = \"true\"\n");
    let d = Daemon::start(&["--config", &config]);
    d.cli(&["run", "up-2.b:c"]).assert_exit_code(0);
}

/// The number of events behind wrong-token lines: a line in full counts
/// one, a summary counts what it says.
fn wrong_tokens(lines: &[String]) -> (usize, u64) {
    let mut shown = 0;
    let mut events = 0;
    for line in lines.iter().filter(|l| l.contains("wrong bearer token")) {
        shown += 1;
        events += repeated(line).unwrap_or(1);
    }
    (shown, events)
}

/// N in a summary line's "… repeated N times".
fn repeated(line: &str) -> Option<u64> {
    let rest = &line[line.find("repeated ")? + "repeated ".len()..];
    rest.split(' ').next()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_wrong_tokens_is_summarised() {
    const FLOOD: u64 = 1000;
    let d = Daemon::builder().args(&["--token", "right-token"]).start();
    let monitor = live_monitor(&d);
    let mut page = Page::with_names(&d, &["status"]).await;
    d.cli(&["set", "notify", "status"]).assert_exit_code(0);

    let start = Instant::now();
    let url = d.url("/api/command");
    let mut senders = Vec::new();
    for _ in 0..4 {
        let url = url.clone();
        senders.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            for _ in 0..FLOOD / 4 {
                let resp = http
                    .post(&url)
                    .header("authorization", "Bearer wrong-token")
                    .body("ws")
                    .send()
                    .await
                    .expect("request");
                assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
            }
        }));
    }
    for sender in senders {
        sender.await.expect("sender");
    }

    // The page, with `set notify status` on, sees the same few lines.
    let mut frames = Vec::new();
    let mut seen = 0;
    while seen < FLOOD {
        let frame = page.recv_type("write").await;
        let text = frame["text"].as_str().unwrap_or_default().to_owned();
        if text.contains("wrong bearer token") {
            seen += repeated(&text).unwrap_or(1);
            frames.push(text);
        }
    }
    let elapsed = start.elapsed();
    let handful = |n: usize| n <= 3 + elapsed.as_secs() as usize + 2;
    assert_eq!(seen, FLOOD, "{frames:#?}");
    assert!(
        handful(frames.len()),
        "{} frames in {elapsed:?}: {frames:#?}",
        frames.len()
    );
    assert!(frames.iter().any(|f| f.contains("repeated")), "{frames:#?}");

    // The console and `pagewire monitor` add up to the same.
    for (what, process) in [("console", d.process()), ("pagewire monitor", &monitor)] {
        let deadline = Instant::now() + TIMEOUT;
        let (shown, events) = loop {
            let (shown, events) = wrong_tokens(&process.stdout_lines());
            if events >= FLOOD || Instant::now() > deadline {
                break (shown, events);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(events, FLOOD, "{what}\n{}", process.snapshot());
        assert!(handful(shown), "{what}: {shown} lines in {elapsed:?}");
    }
}
