//! Server-to-page frames: the JSON protocol of docs/PROTOCOL.md as serde
//! types. Each frame is encoded once into the bytes of a WebSocket text
//! frame, which are then shared by every connection it goes to.

use bytes::Bytes;
use serde::Serialize;

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
        /// The token that brings the page back to this index when it
        /// reconnects (`/ws?resume=TOKEN`).
        #[serde(skip_serializing_if = "Option::is_none")]
        resume: Option<&'a str>,
        /// True when the page came back to an index it had.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        resumed: bool,
    },
    /// The answer to the page's last command line.
    Reply {
        /// Always true (failures are `error`).
        ok: bool,
        /// The command's output.
        output: &'a str,
    },
    /// The page's last command line was refused or failed.
    Error {
        /// The one-line error.
        message: &'a str,
    },
    /// Put `text` into element `name` (or the page's first element).
    Write {
        /// The element, when addressed by name.
        #[serde(skip_serializing_if = "Option::is_none")]
        name: Option<&'a str>,
        /// Plain text, never HTML.
        text: &'a str,
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
                    resume: None,
                    resumed: false,
                },
                r#"{"type":"hello","index":7,"version":1}"#,
            ),
            (
                ServerFrame::Hello {
                    index: 7,
                    version: 1,
                    resume: Some("7.abc"),
                    resumed: true,
                },
                r#"{"type":"hello","index":7,"version":1,"resume":"7.abc","resumed":true}"#,
            ),
            (
                ServerFrame::Write {
                    name: Some("status"),
                    text: "VPN up",
                },
                r#"{"type":"write","name":"status","text":"VPN up"}"#,
            ),
            (
                ServerFrame::Write {
                    name: None,
                    text: "<b>x</b>",
                },
                r#"{"type":"write","text":"<b>x</b>"}"#,
            ),
            (
                ServerFrame::Exec {
                    name: Some("s"),
                    func: "f",
                    arg: "4\"2",
                },
                r#"{"type":"exec","name":"s","func":"f","arg":"4\"2"}"#,
            ),
            (
                ServerFrame::Error { message: "no" },
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
}
