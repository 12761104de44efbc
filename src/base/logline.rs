//! The daemon's log lines in JSON (`--log-format json`): one object per
//! line, for journald and log shippers.
//!
//! Every line has the same keys: `time` (RFC 3339, UTC, milliseconds),
//! `level` (`info`, `warn` or `error`), `event` (a short dotted name such
//! as `ws.opened`), `node` (this daemon: its cluster node id, else the
//! host name), `message` (the text the text format prints) and `fields`
//! (an object of what the event is about; empty when nothing is known).
//! What an event is, for a Monitor line, is decided by
//! `engine::monitor::classify`; this module only writes the line.

use std::sync::{Arc, RwLock};

use serde::Serialize;

/// How the daemon writes its log: the Monitor and its own messages.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, Serialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Lines as a person reads them (the default).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// How the daemon writes its log: a flag of `serve` and a key of the
/// file, read by `serve` and the console's Monitor printer.
#[derive(clap::Args, serde::Deserialize, Serialize, Debug, Default, Clone)]
#[serde(default)]
pub struct LogSettings {
    /// How the Monitor and the daemon's own messages are printed: text, or
    /// json (one object per line, for journald and log shippers)
    #[arg(long, value_enum, value_name = "FORMAT", display_order = 16)]
    pub log_format: Option<LogFormat>,
}

/// How much an event matters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Something happened, as it should.
    Info,
    /// Something was refused, failed or was lost; the daemon goes on.
    Warn,
    /// The daemon cannot go on.
    Error,
}

/// One log line's content, before it is written.
#[derive(Debug, Serialize)]
pub struct Record<'a> {
    /// RFC 3339, UTC.
    pub time: &'a str,
    /// How much it matters.
    pub level: Level,
    /// A short dotted name.
    pub event: &'a str,
    /// This daemon.
    pub node: &'a str,
    /// The text line.
    pub message: &'a str,
    /// What the event is about, by name.
    pub fields: serde_json::Map<String, serde_json::Value>,
}

impl Record<'_> {
    /// The record as one line of JSON (no newline): control characters
    /// are escaped by JSON itself, so a field can never start a line.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| {
            format!("{{\"level\":\"error\",\"event\":\"log.unwritable\",\"message\":\"{e}\"}}")
        })
    }
}

/// This daemon's name in the log: the host name, then its cluster node
/// id once it has joined one. Cheap to clone; set once or twice.
#[derive(Clone, Debug)]
pub struct Node(Arc<RwLock<Arc<str>>>);

impl Default for Node {
    fn default() -> Self {
        let host = nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "pagewire".to_owned());
        Node(Arc::new(RwLock::new(host.into())))
    }
}

impl Node {
    /// The name now.
    pub fn get(&self) -> Arc<str> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Names the daemon `name` from now on.
    pub fn set(&self, name: &str) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = name.into();
    }
}

/// Now, as a `time` value: `2026-01-02T03:04:05.678Z`.
pub fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second(),
        now.millisecond()
    )
}

/// A one-off line of the daemon's own (not a Monitor line), in `format`.
pub fn line(
    format: LogFormat,
    level: Level,
    event: &str,
    node: &str,
    message: &str,
    fields: serde_json::Map<String, serde_json::Value>,
) -> String {
    match format {
        LogFormat::Text => message.to_owned(),
        LogFormat::Json => Record {
            time: &now_rfc3339(),
            level,
            event,
            node,
            message,
            fields,
        }
        .to_json(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_one_line_of_json() {
        let mut fields = serde_json::Map::new();
        fields.insert("url".into(), "http://127.0.0.1:1/".into());
        let text = line(
            LogFormat::Json,
            Level::Info,
            "listening",
            "web1",
            "line one\nline two \u{1b}[2J",
            fields,
        );
        assert!(!text.contains('\n'), "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(v["event"], "listening");
        assert_eq!(v["level"], "info");
        assert_eq!(v["node"], "web1");
        assert_eq!(v["fields"]["url"], "http://127.0.0.1:1/");
        assert_eq!(v["message"], "line one\nline two \u{1b}[2J");
        let time = v["time"].as_str().expect("time");
        assert_eq!(time.len(), "2026-01-02T03:04:05.678Z".len(), "{time}");
        assert!(time.ends_with('Z'));
        assert_eq!(
            line(
                LogFormat::Text,
                Level::Info,
                "x",
                "n",
                "plain",
                Default::default()
            ),
            "plain"
        );
    }
}
