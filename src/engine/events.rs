//! What a Monitor line is about, for the JSON log (`--log-format json`).
//!
//! The Monitor renders each event to one line of text once, as it is
//! emitted (see [`super::monitor`]); the JSON log is made from that line,
//! so that an event is written in one place and costs nothing more in the
//! text format. [`classify`] knows the shapes of the lines the daemon
//! emits and names each event (`ws.opened`, `command`, `refused` …) with
//! what it is about as fields; a line of another shape is `daemon`, its
//! text in `message`. docs/CONFIG.md lists the events.

use serde_json::{Map, Value};

use crate::base::logline::{self, Level, Record};

/// What [`classify`] found in a line.
#[derive(Debug, PartialEq)]
pub(crate) struct Event {
    /// How much it matters.
    pub(crate) level: Level,
    /// Its dotted name.
    pub(crate) name: &'static str,
    /// What it is about.
    pub(crate) fields: Map<String, Value>,
}

impl Event {
    fn new(level: Level, name: &'static str) -> Event {
        Event {
            level,
            name,
            fields: Map::new(),
        }
    }

    fn with(mut self, key: &str, value: impl Into<Value>) -> Event {
        self.fields.insert(key.to_owned(), value.into());
        self
    }

    /// A number when `text` is one, else the text.
    fn with_number(self, key: &str, text: &str) -> Event {
        match text.parse::<u64>() {
            Ok(n) => self.with(key, n),
            Err(_) => self.with(key, text),
        }
    }
}

/// Words that make a line a warning wherever they are.
const TROUBLE: &[&str] = &[
    "refused",
    "failed",
    "cannot",
    "lost",
    "unreachable",
    "ignored",
    "did not",
    "slow consumer",
];

fn troubled(text: &str) -> Level {
    match TROUBLE.iter().any(|w| text.contains(w)) {
        true => Level::Warn,
        false => Level::Info,
    }
}

/// The event a Monitor line's text (without its time stamp) tells of.
pub(crate) fn classify(text: &str) -> Event {
    if let Some(event) = ws_event(text) {
        return event;
    }
    if let Some((kind, times)) = text
        .strip_suffix(" times")
        .or_else(|| text.strip_suffix(" time"))
        .and_then(|t| t.rsplit_once(" … repeated "))
    {
        return Event::new(Level::Warn, "repeated")
            .with("kind", kind)
            .with_number("times", times);
    }
    if let Some(event) = action_event(text) {
        return event;
    }
    if text.starts_with("refused ") {
        return Event::new(Level::Warn, "refused");
    }
    if let Some(event) = command_event(text) {
        return event;
    }
    for (prefix, name) in [
        ("cluster: ", "cluster"),
        ("control: ", "control"),
        ("heartbeat: ", "heartbeat"),
        ("actions: ", "actions"),
    ] {
        if text.starts_with(prefix) {
            return Event::new(troubled(text), name);
        }
    }
    if text.ends_with("received, stopping") || text == "shutting down" {
        return Event::new(Level::Info, "shutdown");
    }
    Event::new(troubled(text), "daemon")
}

/// `ws N opened from ADDR page PAGE`, `ws N registered 'NAME'`,
/// `ws N closed: REASON (code C)`.
fn ws_event(text: &str) -> Option<Event> {
    let rest = text.strip_prefix("ws ")?;
    let (index, rest) = rest.split_once(' ')?;
    let index: u64 = index.parse().ok()?;
    if let Some(rest) = rest.strip_prefix("opened from ") {
        let (remote, page) = rest.split_once(" page ")?;
        return Some(
            Event::new(Level::Info, "ws.opened")
                .with("index", index)
                .with("remote", remote)
                .with("page", page),
        );
    }
    if let Some(name) = rest.strip_prefix("registered ") {
        let name = name.strip_prefix('\'')?.strip_suffix('\'')?;
        return Some(
            Event::new(Level::Info, "ws.registered")
                .with("index", index)
                .with("name", name),
        );
    }
    let reason = rest.strip_prefix("closed: ")?;
    let code = reason
        .rsplit_once("code ")
        .and_then(|(_, c)| c.strip_suffix(')'))
        .and_then(|c| c.parse::<u16>().ok());
    let level = match code {
        Some(1000 | 1001) | None => Level::Info,
        Some(_) => Level::Warn,
    };
    let mut event = Event::new(level, "ws.closed")
        .with("index", index)
        .with("reason", reason);
    if let Some(code) = code {
        event = event.with("code", code);
    }
    Some(event)
}

/// `action NAME[RUN] started …`, `… stdout: …`, `… done: …`, `action NAME
/// refused …`.
fn action_event(text: &str) -> Option<Event> {
    let rest = text.strip_prefix("action ")?;
    let (head, tail) = rest.split_once(' ')?;
    let Some((name, run)) = head.strip_suffix(']').and_then(|h| h.split_once('[')) else {
        let name = head.trim_end_matches(':');
        return Some(Event::new(troubled(tail), "action").with("action", name));
    };
    let what = tail.split([' ', ':']).next().unwrap_or("");
    let (event, level) = match what {
        "started" => ("action.started", Level::Info),
        "stdout" | "stderr" => ("action.output", Level::Info),
        "done" if tail.contains("exited with 0") => ("action.done", Level::Info),
        "done" => ("action.done", Level::Warn),
        "failed" => ("action.failed", Level::Warn),
        _ => ("action", troubled(tail)),
    };
    let mut e = Event::new(level, event)
        .with("action", name)
        .with_number("run", run);
    if event == "action.output" {
        e = e.with("stream", what);
    }
    Some(e)
}

/// `DOOR: LINE -> ok|error: OUTPUT`, the executor's line for a command.
fn command_event(text: &str) -> Option<Event> {
    let (door, rest) = text.split_once(": ")?;
    let known = ["console", "control", "http"].contains(&door)
        || door
            .strip_prefix("page ")
            .is_some_and(|i| i.bytes().all(|b| b.is_ascii_digit()));
    if !known {
        return None;
    }
    let (line, answer) = rest.rsplit_once(" -> ")?;
    let (result, output) = answer.split_once(": ").unwrap_or((answer, ""));
    let level = match result {
        "ok" => Level::Info,
        "error" => Level::Warn,
        _ => return None,
    };
    Some(
        Event::new(level, "command")
            .with("door", door)
            .with("command", line)
            .with("result", result)
            .with("output", output),
    )
}

/// A Monitor line (`HH:MM:SS.mmm TEXT`) as a JSON log line of `node`. Its
/// time is the stamp's, on today's date (yesterday's for a stamp later in
/// the day than now: a line printed just after midnight).
pub(crate) fn json_line(line: &str, node: &str) -> String {
    let (stamp, text) = line.split_once(' ').unwrap_or(("", line));
    let now = logline::now_rfc3339();
    let time = match (stamp.len(), now.get(..10), now.get(11..23)) {
        (12, Some(_), Some(clock)) if stamp > clock => {
            let yesterday = time::OffsetDateTime::now_utc() - time::Duration::days(1);
            format!(
                "{:04}-{:02}-{:02}T{stamp}Z",
                yesterday.year(),
                u8::from(yesterday.month()),
                yesterday.day()
            )
        }
        (12, Some(date), Some(_)) => format!("{date}T{stamp}Z"),
        _ => now,
    };
    json_record(&time, text, node)
}

/// `text`, a Monitor event without a stamp, as a JSON log line of `node`
/// at `time`.
pub(crate) fn json_record(time: &str, text: &str, node: &str) -> String {
    let event = classify(text);
    Record {
        time,
        level: event.level,
        event: event.name,
        node,
        message: text,
        fields: event.fields,
    }
    .to_json()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_daemons_lines_are_named() {
        for (text, name, level, fields) in [
            (
                "ws 7 opened from 127.0.0.1:5000 page http://127.0.0.1:8080/",
                "ws.opened",
                Level::Info,
                r#"{"index":7,"page":"http://127.0.0.1:8080/","remote":"127.0.0.1:5000"}"#,
            ),
            (
                "ws 7 registered 'status'",
                "ws.registered",
                Level::Info,
                r#"{"index":7,"name":"status"}"#,
            ),
            (
                "ws 7 closed: closed by operator (code 1000)",
                "ws.closed",
                Level::Info,
                r#"{"code":1000,"index":7,"reason":"closed by operator (code 1000)"}"#,
            ),
            (
                "ws 8 closed: slow consumer (outgoing queue full, code 4001)",
                "ws.closed",
                Level::Warn,
                r#"{"code":4001,"index":8,"reason":"slow consumer (outgoing queue full, code 4001)"}"#,
            ),
            (
                "control: ws write status \"VPN up\" -> ok: sent to 1 connection",
                "command",
                Level::Info,
                r#"{"command":"ws write status \"VPN up\"","door":"control","output":"sent to 1 connection","result":"ok"}"#,
            ),
            (
                "page 3: ws bogus -> error: ws: unknown subcommand",
                "command",
                Level::Warn,
                r#"{"command":"ws bogus","door":"page 3","output":"ws: unknown subcommand","result":"error"}"#,
            ),
            (
                "refused command: wrong bearer token … repeated 999 times",
                "repeated",
                Level::Warn,
                r#"{"kind":"refused command: wrong bearer token","times":999}"#,
            ),
            (
                "refused 10.0.0.1:0: address not admitted by access mode Local (GET /)",
                "refused",
                Level::Warn,
                "{}",
            ),
            (
                "action deploy[3] stdout: hello",
                "action.output",
                Level::Info,
                r#"{"action":"deploy","run":3,"stream":"stdout"}"#,
            ),
            (
                "action deploy[3] done: exited with 2 after 0.1s",
                "action.done",
                Level::Warn,
                r#"{"action":"deploy","run":3}"#,
            ),
            (
                "cluster: lost Redis at 127.0.0.1:6379: gone; reconnecting",
                "cluster",
                Level::Warn,
                "{}",
            ),
            ("SIGTERM received, stopping", "shutdown", Level::Info, "{}"),
            ("something new", "daemon", Level::Info, "{}"),
        ] {
            let event = classify(text);
            assert_eq!((event.name, event.level), (name, level), "{text}");
            let got = serde_json::to_string(&event.fields).expect("JSON");
            assert_eq!(got, fields, "{text}");
        }
    }

    #[test]
    fn a_monitor_line_becomes_one_json_line() {
        let line = json_line("01:02:03.456 ws 7 registered 'status'", "web1");
        let v: Value = serde_json::from_str(&line).expect("JSON");
        assert_eq!(v["event"], "ws.registered");
        assert_eq!(v["node"], "web1");
        assert_eq!(v["message"], "ws 7 registered 'status'");
        assert!(v["time"]
            .as_str()
            .is_some_and(|t| t.ends_with("T01:02:03.456Z")));
    }
}
