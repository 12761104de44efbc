//! The command table: name, usage and help of every command, in one place.
//!
//! The parser takes its usage strings from here and `help` prints from here,
//! so an error message, the help text and the parser cannot disagree.

use super::ParseError;

/// Everything a user can be told about one command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandDef {
    /// The words that select the command, e.g. `ws write`.
    pub name: &'static str,
    /// The command's syntax, e.g. `ws write TARGET "text"`.
    pub(crate) usage: &'static str,
    /// What the command does, in a few words (lowercase, no full stop).
    pub(crate) summary: &'static str,
    /// A few lines for `help NAME`.
    pub(crate) help: &'static str,
    /// A line the command accepts; tests parse it.
    pub(crate) example: &'static str,
    /// Appended to the usage when an extra argument is refused, for commands
    /// whose last argument is free text that people forget to quote.
    pub(crate) extra_hint: Option<&'static str>,
    /// The options the command takes ([`super::options`]).
    pub(crate) options: &'static [&'static OptionDef],
}

use super::options::{OptionDef, COUNT, DRY_RUN, RETAIN, TIMEOUT, TTL, WAIT};

/// The explanation of TARGET, shown with every command that takes one.
pub(crate) const TARGET_HELP: &str =
    "TARGET is a connection index (a positive integer), a registered name or * (all)";

/// `ws`: list connections.
pub(super) static WS: CommandDef = CommandDef {
    name: "ws",
    usage: "ws",
    summary: "list current WebSocket connections",
    help: "Prints one line per WebSocket connection: its index first, then the names it\n\
           registered, its remote address, its age, how long ago it last sent anything\n\
           (idle), what it reported of its visibility (visible, hidden, frozen; - for\n\
           nothing yet), the messages and bytes it sent and received, and the page it\n\
           came from. The index, a name or * is the TARGET of the other ws commands.",
    example: "ws",
    extra_hint: None,
    options: &[],
};

/// `ws register NAME`: a page claims an element name.
pub(super) static WS_REGISTER: CommandDef = CommandDef {
    name: "ws register",
    usage: "ws register NAME",
    summary: "(from a page) let the page's element NAME take writes to NAME",
    help: "Sent by a page over its own WebSocket (ws.js sends it when the socket opens):\n\
           the element whose id is NAME on that page receives the ws write, ws exec and\n\
           ws close commands addressed to NAME. A page may register several names, and\n\
           several pages may register the same name. Only a page can register; from the\n\
           console, the CLI or HTTP it is an error.\n\
           NAME is 1 to 64 characters of ASCII letters, digits and -_.: and does not\n\
           start with a digit (so that it never reads as an index).",
    example: "ws register status",
    extra_hint: None,
    options: &[],
};

/// `ws write [--retain [--ttl DURATION]] TARGET "text"`: show text on pages.
pub(super) static WS_WRITE: CommandDef = CommandDef {
    name: "ws write",
    usage: "ws write TARGET \"text\"",
    summary: "show text in the registered element of the target pages",
    help: "The text replaces the content of the element that each target page\n\
           registered. It is shown as plain text, never parsed as HTML. Quote text that\n\
           has blanks. If no connection matches a name or *, the text is printed on the\n\
           daemon's console instead and the output says so; an index that does not\n\
           exist is an error. Prints how many connections got the text.\n\
           With --wait it returns once every target page confirmed that it shows the\n\
           text (ws.js confirms), or at the timeout, naming the pages that did not\n\
           confirm; then, or when no page matched, it fails (exit 1).\n\
           --retain (TARGET a NAME) also keeps the text as NAME's current text: a page\n\
           that registers NAME later, or again after a reconnect, gets it first, and it\n\
           survives a restart (in a cluster it is kept in Redis and every node serves\n\
           it). --ttl DURATION with --retain (90s, 20m, 2h, 7d) lets it\n\
           expire. A write without --retain is never kept and leaves a retained text as\n\
           it is.",
    example: "ws write status \"VPN up\"",
    extra_hint: Some("(quote text that has spaces)"),
    options: &[&WAIT, &TIMEOUT, &DRY_RUN, &RETAIN, &TTL],
};

/// `ws exec TARGET FUNC [ARG]`: call a function on pages.
pub(super) static WS_EXEC: CommandDef = CommandDef {
    name: "ws exec",
    usage: "ws exec TARGET FUNC [ARG]",
    summary: "call FUNC(ARG) on the target pages",
    help: "If a target page has a JavaScript function FUNC, it is called as FUNC(ARG);\n\
           otherwise FUNC:ARG is shown in the page's registered element. ARG is one\n\
           token (quote it if it has blanks) and is the empty string when left out.\n\
           Prints how many connections got it. With --wait it returns once every target\n\
           page confirmed that it ran the call (or showed FUNC:ARG), or fails at the\n\
           timeout naming the pages that did not. To get what FUNC returns, use ws call.\n\
           --retain (TARGET a NAME) also keeps the call as NAME's last call of FUNC: a\n\
           page that registers NAME later gets it (after NAME's retained text, if any),\n\
           one call per FUNC, so setLevel and setColor are both kept. --ttl DURATION\n\
           with --retain lets it expire.",
    example: "ws exec 3 setProgress 42",
    extra_hint: Some("(quote ARG if it has spaces)"),
    options: &[&WAIT, &TIMEOUT, &DRY_RUN, &RETAIN, &TTL],
};

/// `ws close [TARGET]`: close connections.
pub(super) static WS_CLOSE: CommandDef = CommandDef {
    name: "ws close",
    usage: "ws close [TARGET]",
    summary: "close the target connections, or all of them",
    help: "Closes the connections that TARGET names, or every connection when TARGET is\n\
           left out or *. A page closed this way does not reconnect. Prints how many\n\
           connections were closed.",
    example: "ws close *",
    extra_hint: None,
    options: &[&DRY_RUN],
};

/// `ws call TARGET FUNC [ARG]`: call a function on pages, gather results.
pub(super) static WS_CALL: CommandDef = CommandDef {
    name: "ws call",
    usage: "ws call TARGET FUNC [ARG]",
    summary: "call FUNC(ARG) on the target pages and print each result",
    help: "Calls FUNC(ARG) on each target page, as ws exec does (only functions the page\n\
           defined, never a browser built-in such as eval), and waits for the results.\n\
           Prints one line per page: its index, then the result as JSON (a Promise is\n\
           awaited), or 'error:' and why: no such function, threw: MESSAGE, timed out,\n\
           closed before answering (said as soon as the page is gone), closed as a slow\n\
           consumer (the call overflowed its queue). Nothing is shown in the page's\n\
           element. Succeeds (exit 0) only when every target page answered without an\n\
           error; no page at all is an error. A result is at most 4096 bytes of JSON.",
    example: "ws call kiosk getVersion",
    extra_hint: Some("(quote ARG if it has spaces)"),
    options: &[&TIMEOUT, &DRY_RUN],
};

/// `ws read TARGET [NAME]`: what the pages' elements show.
pub(super) static WS_READ: CommandDef = CommandDef {
    name: "ws read",
    usage: "ws read TARGET [NAME]",
    summary: "print the text each target page's element shows now",
    help: "Asks each target page for the text (textContent) of its element NAME; without\n\
           NAME, the element the TARGET names, or the page's first registered element.\n\
           Prints one line per page: its index, then the text, escaped and cut after\n\
           1000 characters, or 'error:' and why (no element NAME, timed out, closed\n\
           before answering).\n\
           Succeeds only when every target page answered.",
    example: "ws read status",
    extra_hint: None,
    options: &[&TIMEOUT, &DRY_RUN],
};

/// `ws wait NAME [--count N] [--timeout DURATION]`: wait for pages.
pub(super) static WS_WAIT: CommandDef = CommandDef {
    name: "ws wait",
    usage: "ws wait NAME [--count N] [--timeout DURATION]",
    summary: "wait until N pages have registered NAME",
    help: "Returns as soon as at least N pages (default 1) have registered NAME, and\n\
           prints how many have; fails (exit 1) when the timeout (default 5s) passes\n\
           first. For scripts that must wait for a kiosk or a dashboard to come up.",
    example: "ws wait kiosk --count 2 --timeout 30s",
    extra_hint: None,
    options: &[&COUNT, &TIMEOUT],
};

/// `ws who TARGET`: what a TARGET reaches.
pub(super) static WS_WHO: CommandDef = CommandDef {
    name: "ws who",
    usage: "ws who TARGET",
    summary: "list the connections TARGET reaches, touching nothing",
    help: "Lists, as ws does, exactly the connections a command with this TARGET would\n\
           reach now, and sends them nothing. Every command that takes a TARGET also\n\
           takes --dry-run, which prints the same instead of running the command.",
    example: "ws who status",
    extra_hint: None,
    options: &[],
};

/// `ws retained`: list retained values.
pub(super) static WS_RETAINED: CommandDef = CommandDef {
    name: "ws retained",
    usage: "ws retained",
    summary: "list the values kept with --retain",
    help: "Prints one line per retained value: the name, what is kept (write, or exec\n\
           and the function), its age, when it expires (never, or in how long) and the\n\
           start of the text or argument, escaped. A page that registers the name gets\n\
           these first. In a cluster it lists what Redis holds, for every node.",
    example: "ws retained",
    extra_hint: None,
    options: &[],
};

/// `ws forget NAME`: drop retained values.
pub(super) static WS_FORGET: CommandDef = CommandDef {
    name: "ws forget",
    usage: "ws forget NAME",
    summary: "drop everything retained for NAME",
    help: "Drops NAME's retained text and retained calls, here and in the state\n\
           directory (in a cluster: in Redis and on every node): pages that register\n\
           NAME afterwards get nothing until the next --retain. Pages showing it now\n\
           keep showing it.",
    example: "ws forget status",
    extra_hint: None,
    options: &[],
};

/// `ws visibility STATE`: a page reports what the browser shows of it.
pub(super) static WS_VISIBILITY: CommandDef = CommandDef {
    name: "ws visibility",
    usage: "ws visibility STATE",
    summary: "(from a page) report: visible, hidden or frozen",
    help: "STATE is visible, hidden or frozen. Sent by a page over its own WebSocket\n\
           when the browser shows, hides or freezes it (ws.js sends it on open and on\n\
           every change of the Page Visibility or lifecycle state): 'ws' shows it for\n\
           the page. Any page may send it; from the console, the CLI or HTTP it is an error.",
    example: "ws visibility hidden",
    extra_hint: None,
    options: &[],
};

/// `set notify NAME|off`: mirror the Monitor to pages.
pub(super) static SET_NOTIFY: CommandDef = CommandDef {
    name: "set notify",
    usage: "set notify NAME|off",
    summary: "send every Monitor line to element NAME of all pages, or stop",
    help: "While on, every Monitor line (connections, commands, actions, errors) is sent\n\
           to all current WebSockets, to their element NAME (usually status).\n\
           'set notify off' stops it.",
    example: "set notify status",
    extra_hint: None,
    options: &[],
};

/// `run [--to TARGET] ACTION [ARG...]`: start a configured action.
pub(super) static RUN: CommandDef = CommandDef {
    name: "run",
    usage: "run [--to TARGET] ACTION [ARG...]",
    summary: "run a configured action and stream its output",
    help: "Runs ACTION, a program and its arguments named in the configuration file;\n\
           pages can run configured actions only, never a shell command line. The\n\
           program's output lines stream, as they come, to the element of the page\n\
           that ran it, followed by its exit status; every line also goes to the\n\
           Monitor. ARG words are passed to the program as arguments (never to a\n\
           shell), and only where the action's configuration accepts them.\n\
           --to TARGET (before ACTION) sends the output to those connections instead;\n\
           it needs operator rights, except that a caller with a page's rights over\n\
           HTTP may name one connection by its index. Without --to, a run from the\n\
           console, the CLI or HTTP shows its output on the Monitor only.",
    example: "run --to status vpn-up",
    extra_hint: None,
    options: &[&DRY_RUN],
};

/// `help [COMMAND]`: this text.
pub(super) static HELP: CommandDef = CommandDef {
    name: "help",
    usage: "help [COMMAND]",
    summary: "list the commands, or explain one",
    help: "Without COMMAND, lists every command with its usage. 'help ws write' (or\n\
           'help write') explains one command.",
    example: "help ws write",
    extra_hint: None,
    options: &[],
};

/// Every command, in the order `help` lists them.
pub static COMMANDS: [&CommandDef; 15] = [
    &WS,
    &WS_REGISTER,
    &WS_WRITE,
    &WS_EXEC,
    &WS_CLOSE,
    &WS_RETAINED,
    &WS_FORGET,
    &WS_VISIBILITY,
    &WS_CALL,
    &WS_READ,
    &WS_WAIT,
    &WS_WHO,
    &SET_NOTIFY,
    &RUN,
    &HELP,
];

/// Finds the command a help topic names: its full name (`ws write`), its
/// last word (`write`), or a first word that only one command has (`set`).
/// Runs of blanks in `topic` count as one space.
pub(crate) fn find(topic: &str) -> Option<&'static CommandDef> {
    let topic = topic.split_whitespace().collect::<Vec<_>>().join(" ");
    if let Some(def) = COMMANDS.iter().find(|def| def.name == topic) {
        return Some(def);
    }
    let mut matches = COMMANDS.iter().filter(|def| {
        def.name.rsplit(' ').next() == Some(topic.as_str())
            || def
                .name
                .strip_prefix(topic.as_str())
                .is_some_and(|rest| rest.starts_with(' '))
    });
    match (matches.next(), matches.next()) {
        (Some(def), None) => Some(def),
        _ => None,
    }
}

/// The text `help` prints: with no topic, one line per command and the
/// meaning of TARGET; with a topic, that command's long help.
pub(crate) fn help_text(topic: Option<&str>) -> Result<String, ParseError> {
    let Some(topic) = topic.filter(|t| !t.trim().is_empty()) else {
        return Ok(overview());
    };
    let def = find(topic).ok_or_else(|| ParseError::UnknownTopic {
        topic: topic.to_string(),
        known: known_topics(),
    })?;
    Ok(details(def))
}

/// Usages up to this many characters line their summaries up; a longer
/// one is not padded, so that one long usage does not push every summary
/// past the edge of an 80-column console.
const MAX_ALIGNED_USAGE: usize = 26;

/// One line per command, aligned, then how to read TARGET.
fn overview() -> String {
    let width = COMMANDS
        .iter()
        .map(|def| def.usage.chars().count())
        .filter(|&n| n <= MAX_ALIGNED_USAGE)
        .max()
        .unwrap_or(0);
    let mut text = String::new();
    for def in COMMANDS {
        text.push_str(&format!("{:width$}  {}\n", def.usage, def.summary));
    }
    text.push_str(TARGET_HELP);
    text.push('\n');
    text.push_str(DRY_RUN_HELP);
    text.push_str("\n'help COMMAND' explains one command, e.g. 'help ws write'");
    text
}

/// Said once in the overview: every command with a TARGET takes it.
const DRY_RUN_HELP: &str =
    "A command with a TARGET also takes --dry-run: it shows whom it would reach";

/// The commands of `group` (`ws`, `set` …), one line each with its
/// summary: what `pagewire ws --help` lists, since the CLI passes the
/// words on to the daemon as they are.
pub(crate) fn group_overview(group: &str) -> String {
    let defs: Vec<&CommandDef> = COMMANDS
        .iter()
        .copied()
        .filter(|def| def.name == group || def.name.starts_with(&format!("{group} ")))
        .collect();
    let width = defs
        .iter()
        .map(|def| def.usage.chars().count())
        .filter(|&n| n <= MAX_ALIGNED_USAGE)
        .max()
        .unwrap_or(0);
    let mut text = String::from("Commands:\n");
    for def in &defs {
        text.push_str(&format!("  {:width$}  {}\n", def.usage, def.summary));
    }
    if defs.iter().any(|def| def.usage.contains("TARGET")) {
        text.push_str(TARGET_HELP);
        text.push('\n');
        text.push_str(DRY_RUN_HELP);
        text.push('\n');
    }
    text.push_str(&format!("'pagewire help {group} SUBCOMMAND' explains one."));
    text
}

/// The long help of one command.
fn details(def: &CommandDef) -> String {
    let mut text = format!(
        "{} - {}\nusage: {}\n\n{}\n",
        def.name, def.summary, def.usage, def.help
    );
    if def.usage.contains("TARGET") {
        text.push_str(TARGET_HELP);
        text.push('\n');
    }
    if !def.options.is_empty() {
        text.push_str("options:\n");
        let shown = |o: &OptionDef| match o.value {
            Some(value) => format!("{} {value}", o.name),
            None => o.name.to_string(),
        };
        let width = def
            .options
            .iter()
            .map(|o| shown(o).len())
            .max()
            .unwrap_or(0);
        for option in def.options {
            text.push_str(&format!("  {:width$}  {}\n", shown(option), option.help));
        }
    }
    text.push_str(&format!("\nexample: {}", def.example));
    let group_prefix = format!("{} ", def.name);
    let related: Vec<&str> = COMMANDS
        .iter()
        .map(|other| other.name)
        .filter(|name| name.starts_with(&group_prefix))
        .collect();
    // Wrapped, so that a group with many commands stays readable in an
    // 80-column console.
    let mut line = String::from("see also:");
    for (i, name) in related.iter().enumerate() {
        let word = if i + 1 < related.len() {
            format!(" {name},")
        } else {
            format!(" {name}")
        };
        if line.len() + word.len() > 80 {
            text.push('\n');
            text.push_str(line.trim_end());
            line = String::from("  ");
        }
        line.push_str(&word);
    }
    if !related.is_empty() {
        text.push('\n');
        text.push_str(&line);
    }
    text
}

/// Every command name, for the error about an unknown help topic.
pub(super) fn known_topics() -> String {
    COMMANDS
        .iter()
        .map(|def| def.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The first words of every command (`ws`, `set`, `run`, `help`).
pub(super) fn command_words() -> Vec<&'static str> {
    let mut words: Vec<&'static str> = Vec::new();
    for def in COMMANDS {
        let first = def.name.split(' ').next().unwrap_or(def.name);
        if !words.contains(&first) {
            words.push(first);
        }
    }
    words
}

/// The subcommands of `group` (`register`, `write` … for `ws`).
pub(super) fn subcommand_words(group: &str) -> Vec<&'static str> {
    COMMANDS
        .iter()
        .filter_map(|def| def.name.strip_prefix(group)?.strip_prefix(' '))
        .collect()
}

/// The one of `words` that `typed` is most likely a typo of: at most two
/// edits away (one for short words), and nearer than any other.
pub(super) fn closest(typed: &str, words: &[&'static str]) -> Option<&'static str> {
    let limit = if typed.chars().count() <= 3 { 1 } else { 2 };
    let mut best: Option<(usize, &'static str)> = None;
    let mut tie = false;
    for &word in words {
        let d = edit_distance(&typed.to_ascii_lowercase(), word);
        if d > limit {
            continue;
        }
        match best {
            Some((b, _)) if d > b => {}
            Some((b, _)) if d == b => tie = true,
            _ => {
                best = Some((d, word));
                tie = false;
            }
        }
    }
    best.filter(|_| !tie).map(|(_, word)| word)
}

/// Levenshtein distance, with a swap of two neighbours counting as one
/// edit (`wirte` is one edit from `write`).
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut rows = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in rows[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut d = (rows[i - 1][j] + 1)
                .min(rows[i][j - 1] + 1)
                .min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d = d.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = d;
        }
    }
    rows[a.len()][b.len()]
}

/// The subcommands of `group` as a phrase, e.g. `register, write, exec or
/// close` for `ws`.
pub(super) fn subcommands(group: &str) -> String {
    let words: Vec<&str> = COMMANDS
        .iter()
        .filter_map(|def| def.name.strip_prefix(group)?.strip_prefix(' '))
        .collect();
    match words.split_last() {
        None => String::new(),
        Some((last, [])) => last.to_string(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{parse, MAX_NAME_LEN, NAME_RULE};
    use super::*;

    #[test]
    fn every_example_parses_as_its_own_command() {
        for def in COMMANDS {
            let command = parse(def.example)
                .unwrap_or_else(|e| panic!("example of {:?} fails: {e}", def.name));
            assert_eq!(command.name(), def.name, "example {:?}", def.example);
            assert_eq!(command.def(), def);
        }
    }

    #[test]
    fn every_usage_starts_with_its_name() {
        for def in COMMANDS {
            let rest = def.usage.strip_prefix(def.name);
            assert!(
                rest.is_some_and(|r| r.is_empty() || r.starts_with(' ')),
                "{:?}",
                def.usage
            );
        }
    }

    #[test]
    fn names_are_unique() {
        for (i, def) in COMMANDS.iter().enumerate() {
            assert!(
                COMMANDS[..i].iter().all(|other| other.name != def.name),
                "{:?} twice",
                def.name
            );
        }
    }

    #[test]
    fn register_help_states_the_name_rule() {
        let help = WS_REGISTER
            .help
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        let rule = NAME_RULE.strip_prefix("a name is ").expect("the rule");
        assert!(help.contains(rule), "{help}");
        assert!(NAME_RULE.contains(&format!("1 to {MAX_NAME_LEN} characters")));
    }

    #[test]
    fn text_is_tidy() {
        for topic in [None]
            .into_iter()
            .chain(COMMANDS.iter().map(|def| Some(def.name)))
        {
            let text = help_text(topic).expect("known topic");
            assert!(!text.ends_with('\n'), "{topic:?}");
            for line in text.lines() {
                assert_eq!(line, line.trim_end(), "{topic:?}");
                // Readable in an 80-column console, give or take a summary.
                assert!(line.chars().count() <= 90, "{line:?} is too wide");
            }
        }
    }

    /// One line per case: the topic, then the command it finds (if any).
    const TOPICS: &[(&str, Option<&str>)] = &[
        ("ws", Some("ws")),
        ("ws write", Some("ws write")),
        ("  ws \t write ", Some("ws write")),
        ("write", Some("ws write")),
        ("register", Some("ws register")),
        ("exec", Some("ws exec")),
        ("close", Some("ws close")),
        ("call", Some("ws call")),
        ("read", Some("ws read")),
        ("wait", Some("ws wait")),
        ("who", Some("ws who")),
        ("set", Some("set notify")),
        ("notify", Some("set notify")),
        ("set notify", Some("set notify")),
        ("run", Some("run")),
        ("help", Some("help")),
        ("", None),
        ("bogus", None),
        ("ws bogus", None),
        ("ws write extra", None),
        ("WS", None),
        ("w", None),
    ];

    #[test]
    fn find_topics() {
        for &(topic, want) in TOPICS {
            assert_eq!(find(topic).map(|d| d.name), want, "topic {topic:?}");
        }
    }

    #[test]
    fn overview_lists_every_command_and_target() {
        let text = help_text(None).expect("overview");
        assert_eq!(help_text(Some("  ")), Ok(text.clone()));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), COMMANDS.len() + 3);
        for (line, def) in lines.iter().zip(COMMANDS) {
            assert!(line.starts_with(def.usage), "{line:?}");
            assert!(line.ends_with(def.summary), "{line:?}");
        }
        assert_eq!(lines[COMMANDS.len()], TARGET_HELP);
        assert_eq!(lines[COMMANDS.len() + 1], DRY_RUN_HELP);
        assert_eq!(
            lines[1],
            "ws register NAME           (from a page) let the page's element NAME take writes to NAME"
        );
    }

    #[test]
    fn details_of_ws_write() {
        let text = help_text(Some("write")).expect("known topic");
        let want = format!(
            "ws write - show text in the registered element of the target pages\n\
             usage: ws write TARGET \"text\"\n\
             \n\
             {}\n\
             {TARGET_HELP}\n\
             options:\n\
             \x20 --wait              return once every target page confirmed it (exit 1 at the timeout)\n\
             \x20 --timeout DURATION  how long to wait, e.g. 500ms, 5s or 2m (default 5s, at most 1h)\n\
             \x20 --dry-run           print the pages it would reach and do nothing\n\
             \x20 --retain            also keep it for pages that register the NAME later (TARGET a NAME)\n\
             \x20 --ttl DURATION      with --retain: forget it after this long, e.g. 90s, 20m, 2h or 7d\n\
             \n\
             example: ws write status \"VPN up\"",
            WS_WRITE.help
        );
        assert_eq!(text, want);
        assert_eq!(help_text(Some("ws write")), Ok(want));
    }

    #[test]
    fn details_of_ws_point_to_its_subcommands() {
        let text = help_text(Some("ws")).expect("known topic");
        assert!(text.starts_with("ws - list current WebSocket connections\nusage: ws\n"));
        assert!(!text.contains(TARGET_HELP));
        assert!(text.ends_with(
            "\nsee also: ws register, ws write, ws exec, ws close, ws retained, ws forget,\n   \
             ws visibility, ws call, ws read, ws wait, ws who"
        ));
    }

    #[test]
    fn unknown_topic_lists_known_ones() {
        assert_eq!(
            help_text(Some("bogus")).map_err(|e| e.to_string()),
            Err(
                "help: unknown topic 'bogus'; known topics: ws, ws register, ws write, \
                 ws exec, ws close, ws retained, ws forget, ws visibility, ws call, ws read, \
                 ws wait, ws who, set notify, run, help"
                    .to_string()
            )
        );
    }

    #[test]
    fn subcommand_phrases() {
        assert_eq!(
            subcommands("ws"),
            "register, write, exec, close, retained, forget, visibility, call, read, wait or who"
        );
        assert_eq!(subcommands("set"), "notify");
        assert_eq!(subcommands("help"), "");
    }
}
