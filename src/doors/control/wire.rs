//! The control socket's wire format: one JSON object per line each way
//! (see the table in the module above), and the bounded line reader.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use tokio::io::AsyncRead;
use tokio_util::codec::{AnyDelimiterCodec, FramedRead};

/// The longest request line the daemon accepts, in bytes (newline excluded).
pub(crate) const MAX_REQUEST_LINE: usize = 128 * 1024;

/// The longest answer line the client accepts, in bytes; a `ws` listing of
/// many connections is far below this, a runaway peer is not.
pub(crate) const MAX_ANSWER_LINE: usize = 16 * 1024 * 1024;

/// What a client asks for, one per line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ControlRequest {
    /// Run this command line.
    Command(String),
    /// Stream Monitor lines on this connection from now on.
    Monitor,
    /// Stream every cluster node's Monitor lines, each with its node.
    ClusterMonitor,
}

/// The JSON shape of a request, before it is checked.
#[derive(Serialize, Deserialize)]
struct RawRequest<'a> {
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    cmd: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    monitor: bool,
    /// With `monitor`: every node of the cluster.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    cluster: bool,
}

impl ControlRequest {
    /// Parses one request line (without its newline).
    pub(crate) fn from_json(bytes: &[u8]) -> Result<ControlRequest, String> {
        // serde would also take a struct from an array; only objects are requests.
        if bytes.trim_ascii_start().first() != Some(&b'{') {
            return Err("expected a JSON object".into());
        }
        let raw: RawRequest<'_> = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        match (raw.cmd, raw.monitor) {
            (Some(_), false) if raw.cluster => Err("\"cluster\" goes with \"monitor\"".into()),
            (Some(cmd), false) => Ok(ControlRequest::Command(cmd.into_owned())),
            (None, true) if raw.cluster => Ok(ControlRequest::ClusterMonitor),
            (None, true) => Ok(ControlRequest::Monitor),
            (Some(_), true) => Err("a request has either \"cmd\" or \"monitor\", not both".into()),
            (None, false) => {
                Err("expected {\"cmd\":\"COMMAND LINE\"} or {\"monitor\":true}".into())
            }
        }
    }

    /// Renders the request as one line, newline included.
    pub(crate) fn to_json_line(&self) -> Vec<u8> {
        let raw = match self {
            ControlRequest::Command(cmd) => RawRequest {
                cmd: Some(Cow::Borrowed(cmd)),
                monitor: false,
                cluster: false,
            },
            ControlRequest::Monitor => RawRequest {
                cmd: None,
                monitor: true,
                cluster: false,
            },
            ControlRequest::ClusterMonitor => RawRequest {
                cmd: None,
                monitor: true,
                cluster: true,
            },
        };
        json_line(&raw)
    }
}

/// What the daemon sends, one per line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub(crate) enum ControlAnswer {
    /// The outcome of one command request.
    Done {
        /// Whether the command succeeded.
        ok: bool,
        /// Its output, or the one-line error.
        output: String,
        /// The command ran but some target page failed it (`ws call`,
        /// `--wait`, ...): `output` is its result all the same, which the
        /// CLI prints on stdout before it exits 1.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        partial: bool,
    },
    /// One Monitor line (monitor connections only).
    Line {
        /// The rendered line, without a newline.
        line: String,
    },
    /// The watcher fell behind; this many Monitor lines were skipped.
    Missed {
        /// How many lines were skipped.
        missed: u64,
    },
}

impl ControlAnswer {
    /// A failed reply produced by the control socket itself.
    pub(crate) fn error(output: impl Into<String>) -> ControlAnswer {
        ControlAnswer::Done {
            ok: false,
            output: output.into(),
            partial: false,
        }
    }

    /// Parses one answer line (without its newline).
    pub(crate) fn from_json(bytes: &[u8]) -> Result<ControlAnswer, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// Renders the answer as one line, newline included.
    pub(crate) fn to_json_line(&self) -> Vec<u8> {
        json_line(self)
    }
}

impl From<crate::base::door::Reply> for ControlAnswer {
    fn from(reply: crate::base::door::Reply) -> ControlAnswer {
        ControlAnswer::Done {
            ok: reply.is_ok(),
            partial: reply.status == crate::base::door::Status::Partial,
            output: reply.output,
        }
    }
}

fn json_line(value: &impl Serialize) -> Vec<u8> {
    // Serialising these plain structs of strings, bools and integers cannot
    // fail (no maps with non-string keys, no failing Serialize impls).
    let mut bytes = serde_json::to_vec(value).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

/// The lines a peer sends, each at most `limit` bytes (newline excluded),
/// read with `tokio_util`'s delimiter codec: a longer line is an error
/// (`MaxChunkLengthExceeded`) before more than `limit` bytes are held, and
/// the peer's last line may lack its newline. Lines are bytes, not text:
/// one that is not UTF-8 is a malformed request like any other, answered,
/// and the connection stays (`LinesCodec` would end it).
pub(crate) fn lines<R: AsyncRead>(reader: R, limit: usize) -> FramedRead<R, AnyDelimiterCodec> {
    let codec = AnyDelimiterCodec::new_with_max_length(b"\n".to_vec(), Vec::new(), limit);
    FramedRead::new(reader, codec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse() {
        let ok: &[(&str, ControlRequest)] = &[
            (r#"{"cmd":"ws"}"#, ControlRequest::Command("ws".into())),
            (
                r#"{"cmd":"ws write status \"VPN up\""}"#,
                ControlRequest::Command(r#"ws write status "VPN up""#.into()),
            ),
            (r#"{"cmd":""}"#, ControlRequest::Command(String::new())),
            (r#"{"monitor":true}"#, ControlRequest::Monitor),
            (
                r#"{"monitor":true,"cluster":true}"#,
                ControlRequest::ClusterMonitor,
            ),
            (
                r#" {"cmd":"ws","id":7} "#,
                ControlRequest::Command("ws".into()),
            ),
            (
                r#"{"cmd":"ws","monitor":false}"#,
                ControlRequest::Command("ws".into()),
            ),
        ];
        for (line, want) in ok {
            assert_eq!(
                ControlRequest::from_json(line.as_bytes()).as_ref(),
                Ok(want),
                "{line}"
            );
        }
        let bad = [
            "",
            "ws write status x",
            "{}",
            r#"{"monitor":false}"#,
            r#"{"cmd":"ws","monitor":true}"#,
            r#"{"cmd":7}"#,
            r#"["ws"]"#,
            "{\"cmd\":\"\u{0}",
        ];
        for line in bad {
            assert!(
                ControlRequest::from_json(line.as_bytes()).is_err(),
                "{line:?}"
            );
        }
        assert!(ControlRequest::from_json(b"{\"cmd\":\"\xff\"}").is_err());
    }

    #[test]
    fn requests_serialize() {
        let cases = [
            (ControlRequest::Command("ws".into()), "{\"cmd\":\"ws\"}\n"),
            (
                ControlRequest::Command("ws write s \"a\\b\"\n".into()),
                "{\"cmd\":\"ws write s \\\"a\\\\b\\\"\\n\"}\n",
            ),
            (ControlRequest::Monitor, "{\"monitor\":true}\n"),
            (
                ControlRequest::ClusterMonitor,
                "{\"monitor\":true,\"cluster\":true}\n",
            ),
        ];
        for (request, want) in cases {
            let line = request.to_json_line();
            assert_eq!(String::from_utf8_lossy(&line), want);
            let back = ControlRequest::from_json(&line[..line.len() - 1]);
            assert_eq!(back, Ok(request));
        }
    }

    #[test]
    fn answers_round_trip() {
        let cases = [
            (
                ControlAnswer::Done {
                    ok: true,
                    output: "1 connection".into(),
                    partial: false,
                },
                r#"{"ok":true,"output":"1 connection"}"#,
            ),
            (
                ControlAnswer::Done {
                    ok: false,
                    output: "3 error: timed out".into(),
                    partial: true,
                },
                r#"{"ok":false,"output":"3 error: timed out","partial":true}"#,
            ),
            (ControlAnswer::error("no"), r#"{"ok":false,"output":"no"}"#),
            (
                ControlAnswer::Line {
                    line: "12:00:00.000 opened #1".into(),
                },
                r#"{"line":"12:00:00.000 opened #1"}"#,
            ),
            (ControlAnswer::Missed { missed: 3 }, r#"{"missed":3}"#),
        ];
        for (answer, want) in cases {
            let line = answer.to_json_line();
            assert_eq!(String::from_utf8_lossy(&line), format!("{want}\n"));
            assert_eq!(ControlAnswer::from_json(want.as_bytes()).ok(), Some(answer));
        }
        assert!(ControlAnswer::from_json(br#"{"what":1}"#).is_err());
    }

    #[tokio::test]
    async fn lines_are_limited() {
        use futures_util::StreamExt as _;
        use tokio_util::codec::AnyDelimiterCodecError::MaxChunkLengthExceeded;
        let input: &[u8] = b"abc\n\ndefgh\r\nxyz";
        let mut read = lines(input, 5);
        let mut got = Vec::new();
        while let Some(line) = read.next().await {
            match line {
                Ok(line) => got.push(String::from_utf8_lossy(&line).into_owned()),
                Err(MaxChunkLengthExceeded) => {
                    got.push("TooLong".into());
                    break;
                }
                Err(e) => panic!("{e}"),
            }
        }
        // "defgh\r" is six bytes: one over the limit.
        assert_eq!(got, ["abc", "", "TooLong"]);

        let input: &[u8] = b"12345\nxyz";
        let mut got = Vec::new();
        let mut read = lines(input, 5);
        while let Some(Ok(line)) = read.next().await {
            got.push(String::from_utf8_lossy(&line).into_owned());
        }
        assert_eq!(got, ["12345", "xyz"]);
    }
}
