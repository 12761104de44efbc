//! The JSON protocol of docs/PROTOCOL.md as serde types: server-to-page
//! frames ([`ServerFrame`]), each encoded once into the bytes of a
//! WebSocket text frame that every connection it goes to shares; the
//! frames a page answers with ([`PageFrame`]: a call's result, a
//! confirmation); and what a page answered, as commands report it
//! ([`PageAnswer`]).
//!
//! A page sends command lines as text frames too. A protocol frame is a
//! JSON object, so it starts with `{`; no command line does (no command
//! starts with `{`), which is how the page door tells them apart
//! ([`is_page_frame`]).

use std::fmt;

use bytes::Bytes;
use serde::ser::SerializeSeq as _;
use serde::{Deserialize, Serialize};

use crate::base::codec::{encode_frame, OpCode};

/// The protocol version announced in `hello`.
pub(crate) const PROTOCOL_VERSION: u32 = 1;

/// One server-to-page message. Field names are part of the public protocol.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "lowercase")]
pub(crate) enum ServerFrame<'a> {
    /// Sent first, once: the connection's index.
    Hello {
        /// The connection's index.
        index: u64,
        /// The protocol version.
        version: u32,
    },
    /// The answer to the page's last command line.
    Reply {
        /// Always true (failures are `error`).
        ok: bool,
        /// The command's output.
        output: &'a str,
        /// Each target page's answer, for `ws call`, `ws read` and
        /// `--wait`.
        #[serde(skip_serializing_if = "Option::is_none")]
        results: Option<Results<'a>>,
    },
    /// The page's last command line was refused or failed.
    Error {
        /// The one-line error (or, when `results` is present, the output
        /// of a command some target page failed).
        message: &'a str,
        /// As for `reply`.
        #[serde(skip_serializing_if = "Option::is_none")]
        results: Option<Results<'a>>,
    },
    /// Put `text` into element `name` (or the page's first element).
    Write {
        /// The element, when addressed by name.
        #[serde(skip_serializing_if = "Option::is_none")]
        name: Option<&'a str>,
        /// Plain text, never HTML.
        text: &'a str,
        /// Confirm with an `ack` frame of this id once the text is shown
        /// (`ws write --wait`).
        #[serde(skip_serializing_if = "Option::is_none")]
        ack: Option<u64>,
    },
    /// Call `func(arg)` when the page defined `func` (never a browser
    /// built-in; see docs/PROTOCOL.md), or show `func:arg`.
    Exec {
        /// The element, when addressed by name.
        #[serde(skip_serializing_if = "Option::is_none")]
        name: Option<&'a str>,
        /// The function's name.
        func: &'a str,
        /// Its one argument.
        arg: &'a str,
        /// Confirm with an `ack` frame of this id once done (`ws exec
        /// --wait`).
        #[serde(skip_serializing_if = "Option::is_none")]
        ack: Option<u64>,
    },
    /// Call `func(arg)` as for `exec` and answer with a `result` frame of
    /// this id: the value (a Promise awaited), or why not.
    Call {
        /// Matches the `result` to this call.
        id: u64,
        /// The element, when addressed by name.
        #[serde(skip_serializing_if = "Option::is_none")]
        name: Option<&'a str>,
        /// The function's name.
        func: &'a str,
        /// Its one argument.
        arg: &'a str,
    },
    /// Answer with a `result` frame of this id holding the text element
    /// `name` (or the page's first element) shows.
    Read {
        /// Matches the `result` to this request.
        id: u64,
        /// The element to read.
        #[serde(skip_serializing_if = "Option::is_none")]
        name: Option<&'a str>,
    },
    /// One output line of a running action.
    Line {
        /// The element, when the output goes to a named element.
        #[serde(skip_serializing_if = "Option::is_none")]
        name: Option<&'a str>,
        /// The action's name.
        action: &'a str,
        /// `stdout` or `stderr`.
        stream: &'a str,
        /// The line, without its newline.
        text: &'a str,
    },
    /// An action ended.
    Done {
        /// The element, when the output goes to a named element.
        #[serde(skip_serializing_if = "Option::is_none")]
        name: Option<&'a str>,
        /// The action's name.
        action: &'a str,
        /// Exit code; None when it was killed.
        status: Option<i32>,
        /// A one-line summary ("exited with 0", "killed after 30s timeout").
        message: &'a str,
    },
}

/// The longest value a page's `result` may hold, as JSON text: a call's
/// answer is for a script to read, and ten thousand pages answering at once
/// must not take the daemon's memory.
pub(crate) const MAX_RESULT_BYTES: usize = 4096;

/// The longest error message of a page's `result` kept, in characters.
pub(crate) const MAX_ERROR_CHARS: usize = 200;

/// What a page answered to a call, a read or a confirmation request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Answer {
    /// A value, as compact JSON text (a read's is a JSON string).
    Value(String),
    /// The page confirmed it applied the frame (`ack`).
    Done,
    /// Why the page gave no value: `no such function`, `threw: ...`,
    /// `timed out`, ...
    Error(String),
}

/// One target page's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PageAnswer {
    /// The page's connection index.
    pub(crate) index: u64,
    /// What it answered.
    pub(crate) answer: Answer,
}

impl PageAnswer {
    /// Whether the page answered without an error.
    pub(crate) fn is_ok(&self) -> bool {
        !matches!(self.answer, Answer::Error(_))
    }
}

/// Pages' answers as the protocol and `/api/command` show them: a JSON
/// array of `{"index": N, "ok": true, "value": ...}` (no `value` for a
/// confirmation) or `{"index": N, "ok": false, "error": "..."}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Results<'a>(pub(crate) &'a [PageAnswer]);

/// One element of [`Results`].
#[derive(Serialize)]
struct ShownAnswer<'a> {
    index: u64,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

impl Serialize for Results<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for a in self.0 {
            let (value, error) = match &a.answer {
                // A value is kept as the JSON text it was checked to be.
                Answer::Value(json) => (serde_json::from_str(json).ok(), None),
                Answer::Done => (None, None),
                Answer::Error(e) => (None, Some(e.as_str())),
            };
            seq.serialize_element(&ShownAnswer {
                index: a.index,
                ok: error.is_none(),
                value,
                error,
            })?;
        }
        seq.end()
    }
}

/// Whether a text message from a page is a protocol frame (a JSON object)
/// rather than a command line: it starts with `{`, which no command does.
pub(crate) fn is_page_frame(text: &str) -> bool {
    text.starts_with('{')
}

/// A frame a page sends back: the answer to a `call` or a `read`, or the
/// confirmation of a `write` or `exec` that asked for one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PageFrame {
    /// `{"type":"result","id":N,"value":...}` or `{..., "error":"..."}`.
    Result {
        /// The id of the `call` or `read`.
        id: u64,
        /// The value, or why there is none (bounded, see
        /// [`MAX_RESULT_BYTES`]).
        answer: Answer,
    },
    /// `{"type":"ack","id":N}`, or with `"error"` when the page could not
    /// apply it (no such element, the function threw).
    Ack {
        /// The `ack` id of the `write` or `exec`.
        id: u64,
        /// Why it was not applied (cut at [`MAX_ERROR_CHARS`]).
        error: Option<String>,
    },
    /// A frame of a type this daemon does not know: ignored, so that later
    /// clients can send more.
    Other,
}

/// The JSON shape of a page's frame.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum RawPageFrame {
    Result {
        id: u64,
        #[serde(default)]
        value: Option<serde_json::Value>,
        #[serde(default)]
        error: Option<String>,
    },
    Ack {
        id: u64,
        #[serde(default)]
        error: Option<String>,
    },
    #[serde(other)]
    Other,
}

/// Why a page's frame was not understood: one line, for an `error` frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BadFrame(String);

impl fmt::Display for BadFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed frame: {}", self.0)
    }
}

impl PageFrame {
    /// Reads a frame a page sent. A value longer than
    /// [`MAX_RESULT_BYTES`] becomes an error answer (the page did answer,
    /// too much), an error message is cut at [`MAX_ERROR_CHARS`].
    pub(crate) fn parse(text: &str) -> Result<PageFrame, BadFrame> {
        let raw: RawPageFrame = serde_json::from_str(text).map_err(|e| BadFrame(e.to_string()))?;
        Ok(match raw {
            RawPageFrame::Result {
                id, error: Some(e), ..
            } => PageFrame::Result {
                id,
                answer: Answer::Error(cut(&e, MAX_ERROR_CHARS)),
            },
            RawPageFrame::Result { id, value, .. } => {
                // Compact and one line, whatever blanks the page sent.
                let json = value.unwrap_or_default().to_string();
                let answer = if json.len() > MAX_RESULT_BYTES {
                    Answer::Error(format!(
                        "result too large ({} bytes of JSON; at most {MAX_RESULT_BYTES})",
                        json.len()
                    ))
                } else {
                    Answer::Value(json)
                };
                PageFrame::Result { id, answer }
            }
            RawPageFrame::Ack { id, error } => PageFrame::Ack {
                id,
                error: error.map(|e| cut(&e, MAX_ERROR_CHARS)),
            },
            RawPageFrame::Other => PageFrame::Other,
        })
    }
}

/// `text` cut after `max` characters, with `…` when it was.
pub(crate) fn cut(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}

impl ServerFrame<'_> {
    /// The JSON text of this frame.
    pub(crate) fn to_json(&self) -> String {
        // Serialising these plain structs cannot fail: every field is a
        // string, integer or bool.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The complete WebSocket text frame, ready to be shared.
    pub(crate) fn encode(&self) -> Bytes {
        encode_frame(OpCode::Text, self.to_json().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_match_the_documented_json() {
        let cases: &[(ServerFrame, &str)] = &[
            (
                ServerFrame::Hello {
                    index: 7,
                    version: 1,
                },
                r#"{"type":"hello","index":7,"version":1}"#,
            ),
            (
                ServerFrame::Write {
                    name: Some("status"),
                    text: "VPN up",
                    ack: None,
                },
                r#"{"type":"write","name":"status","text":"VPN up"}"#,
            ),
            (
                ServerFrame::Write {
                    name: None,
                    text: "<b>x</b>",
                    ack: Some(9),
                },
                r#"{"type":"write","text":"<b>x</b>","ack":9}"#,
            ),
            (
                ServerFrame::Exec {
                    name: Some("s"),
                    func: "f",
                    arg: "4\"2",
                    ack: None,
                },
                r#"{"type":"exec","name":"s","func":"f","arg":"4\"2"}"#,
            ),
            (
                ServerFrame::Call {
                    id: 3,
                    name: None,
                    func: "f",
                    arg: "x",
                },
                r#"{"type":"call","id":3,"func":"f","arg":"x"}"#,
            ),
            (
                ServerFrame::Read {
                    id: 4,
                    name: Some("clock"),
                },
                r#"{"type":"read","id":4,"name":"clock"}"#,
            ),
            (
                ServerFrame::Error {
                    message: "no",
                    results: None,
                },
                r#"{"type":"error","message":"no"}"#,
            ),
            (
                ServerFrame::Done {
                    name: None,
                    action: "a",
                    status: None,
                    message: "killed",
                },
                r#"{"type":"done","action":"a","status":null,"message":"killed"}"#,
            ),
        ];
        for (frame, json) in cases {
            assert_eq!(frame.to_json(), *json);
        }
    }

    #[test]
    fn results_show_values_as_json() {
        let answers = [
            PageAnswer {
                index: 3,
                answer: Answer::Value(r#"{"a":[1,2]}"#.into()),
            },
            PageAnswer {
                index: 4,
                answer: Answer::Done,
            },
            PageAnswer {
                index: 5,
                answer: Answer::Error("timed out".into()),
            },
        ];
        let frame = ServerFrame::Reply {
            ok: true,
            output: "x",
            results: Some(Results(&answers)),
        };
        assert_eq!(
            frame.to_json(),
            r#"{"type":"reply","ok":true,"output":"x","results":[{"index":3,"ok":true,"value":{"a":[1,2]}},{"index":4,"ok":true},{"index":5,"ok":false,"error":"timed out"}]}"#
        );
    }

    #[test]
    fn page_frames_parse_and_are_bounded() {
        let result = |id, answer| Ok(PageFrame::Result { id, answer });
        let value = |s: &str| Answer::Value(s.to_string());
        let cases: Vec<(String, Result<PageFrame, ()>)> = vec![
            (
                r#"{"type":"result","id":1,"value":42}"#.into(),
                result(1, value("42")),
            ),
            (
                r#"{"type":"result","id":1,"value": { "a" : "x\ny" } }"#.into(),
                result(1, value(r#"{"a":"x\ny"}"#)),
            ),
            (
                r#"{"type":"result","id":2}"#.into(),
                result(2, value("null")),
            ),
            (
                r#"{"type":"result","id":2,"value":null}"#.into(),
                result(2, value("null")),
            ),
            (
                r#"{"type":"result","id":2,"error":"threw: x"}"#.into(),
                result(2, Answer::Error("threw: x".into())),
            ),
            (
                r#"{"type":"ack","id":7,"extra":true}"#.into(),
                Ok(PageFrame::Ack { id: 7, error: None }),
            ),
            (
                r#"{"type":"ack","id":7,"error":"no element 'x'"}"#.into(),
                Ok(PageFrame::Ack {
                    id: 7,
                    error: Some("no element 'x'".into()),
                }),
            ),
            (
                r#"{"type":"visibility","state":"hidden"}"#.into(),
                Ok(PageFrame::Other),
            ),
            (r#"{"type":"ack"}"#.into(), Err(())),
            (r#"{"type":"result","id":-1,"value":1}"#.into(), Err(())),
            (r#"{"id":1}"#.into(), Err(())),
            ("{not json".into(), Err(())),
            (
                format!(
                    r#"{{"type":"result","id":1,"error":"{}"}}"#,
                    "e".repeat(500)
                ),
                result(
                    1,
                    Answer::Error(format!("{}…", "e".repeat(MAX_ERROR_CHARS))),
                ),
            ),
            (
                format!(
                    r#"{{"type":"result","id":1,"value":"{}"}}"#,
                    "v".repeat(MAX_RESULT_BYTES)
                ),
                result(
                    1,
                    Answer::Error(format!(
                        "result too large ({} bytes of JSON; at most {MAX_RESULT_BYTES})",
                        MAX_RESULT_BYTES + 2
                    )),
                ),
            ),
        ];
        for (text, want) in cases {
            assert!(is_page_frame(&text), "{text}");
            assert_eq!(PageFrame::parse(&text).map_err(|_| ()), want, "{text}");
        }
        assert!(!is_page_frame("ws register status"));
        assert!(!is_page_frame(" {}"));
    }
}
