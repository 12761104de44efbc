//! What the nodes of a cluster say to each other (JSON over pub/sub), and
//! the names of their keys and channels in Redis.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::base::command::Target;
use crate::base::protocol::PageAnswer;
use crate::engine::asks::Request;
use crate::engine::backplane::Delivery;
use crate::engine::hub::ConnInfo;

/// Version of the request and reply messages; a node ignores other
/// versions (and is then reported as not answering).
pub(super) const WIRE_VERSION: u32 = 1;

/// Names of the keys and channels, from the configured prefix.
#[derive(Clone, Debug)]
pub(super) struct Keys {
    pub(super) index: String,
    pub(super) nodes: String,
    pub(super) cluster: String,
    pub(super) prefix: String,
}

impl Keys {
    pub(super) fn new(prefix: &str) -> Self {
        Keys {
            index: format!("{prefix}:index"),
            nodes: format!("{prefix}:nodes"),
            cluster: format!("{prefix}:cluster"),
            prefix: prefix.to_string(),
        }
    }

    pub(super) fn lease(&self, node: &str) -> String {
        format!("{}:node:{node}", self.prefix)
    }

    pub(super) fn reply(&self, node: &str) -> String {
        format!("{}:reply:{node}", self.prefix)
    }
}

#[derive(Serialize, Deserialize, Debug)]
pub(super) struct ClusterRequest {
    pub(super) v: u32,
    pub(super) id: u64,
    pub(super) from: String,
    pub(super) op: Op,
}

#[derive(Serialize, Deserialize, Debug)]
#[serde(tag = "op", rename_all = "lowercase")]
pub(super) enum Op {
    List,
    Send {
        target: WireTarget,
        msg: Delivery,
    },
    Close {
        target: WireTarget,
    },
    /// Ask the pages `target` selects and answer with what they said
    /// within `timeout_ms` (`ws call`, `ws read`, `--wait`).
    Ask {
        target: WireTarget,
        request: Request,
        timeout_ms: u64,
    },
    /// How many pages hold `name` (`/probe`).
    Named {
        name: String,
    },
    /// Answer how many pages hold `name` now, and again at every change,
    /// until `timeout_ms` passed or an `Unwatch` of this request came (`ws
    /// wait`).
    Watch {
        name: String,
        timeout_ms: u64,
    },
    /// The requester of watch `id` has what it waited for.
    Unwatch {
        id: u64,
    },
}

#[derive(Serialize, Deserialize, Debug, Clone)]
#[serde(rename_all = "lowercase")]
pub(super) enum WireTarget {
    Index(u64),
    Name(String),
    All,
}

impl From<&Target> for WireTarget {
    fn from(t: &Target) -> Self {
        match t {
            Target::Index(i) => WireTarget::Index(*i),
            Target::Name(n) => WireTarget::Name(n.clone()),
            Target::All => WireTarget::All,
        }
    }
}

#[derive(Serialize, Deserialize, Debug)]
pub(super) struct ClusterResponse {
    pub(super) v: u32,
    pub(super) id: u64,
    pub(super) node: String,
    /// Connections live on the answering node.
    pub(super) live: usize,
    pub(super) answer: ClusterResult,
}

#[derive(Serialize, Deserialize, Debug)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub(super) enum ClusterResult {
    List {
        conns: Vec<WireConn>,
    },
    Done {
        reached: usize,
        dropped: usize,
    },
    NoIndex,
    /// The answers of this node's pages to an `Ask`.
    Asked {
        answers: Vec<PageAnswer>,
        dropped: usize,
    },
    /// How many of this node's pages hold the name of a `Named` or `Watch`.
    Named {
        count: usize,
    },
}

#[derive(Serialize, Deserialize, Debug)]
pub(super) struct WireConn {
    pub(super) id: u64,
    pub(super) names: Vec<String>,
    pub(super) remote: SocketAddr,
    pub(super) page: String,
    pub(super) age_ms: u64,
    /// Since the page last sent anything; absent from older nodes.
    #[serde(default)]
    pub(super) idle_ms: u64,
    /// What the page reported of its visibility (`visible`, `hidden`,
    /// `frozen`); absent when nothing was, or from older nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) visibility: Option<String>,
    pub(super) msgs_in: u64,
    pub(super) bytes_in: u64,
    pub(super) msgs_out: u64,
    pub(super) bytes_out: u64,
}

impl From<ConnInfo> for WireConn {
    fn from(c: ConnInfo) -> Self {
        WireConn {
            id: c.id,
            names: c.names,
            remote: c.remote,
            page: c.page,
            age_ms: u64::try_from(c.age.as_millis()).unwrap_or(u64::MAX),
            idle_ms: u64::try_from(c.idle.as_millis()).unwrap_or(u64::MAX),
            visibility: c.visibility.map(|v| v.word().to_string()),
            msgs_in: c.msgs_in,
            bytes_in: c.bytes_in,
            msgs_out: c.msgs_out,
            bytes_out: c.bytes_out,
        }
    }
}

impl From<WireTarget> for Target {
    fn from(t: WireTarget) -> Self {
        match t {
            WireTarget::Index(i) => Target::Index(i),
            WireTarget::Name(n) => Target::Name(n),
            WireTarget::All => Target::All,
        }
    }
}

impl From<WireConn> for ConnInfo {
    fn from(c: WireConn) -> Self {
        ConnInfo {
            id: c.id,
            names: c.names,
            remote: c.remote,
            page: c.page,
            age: Duration::from_millis(c.age_ms),
            idle: Duration::from_millis(c.idle_ms),
            visibility: c
                .visibility
                .as_deref()
                .and_then(crate::base::command::Visibility::from_word),
            msgs_in: c.msgs_in,
            bytes_in: c.bytes_in,
            msgs_out: c.msgs_out,
            bytes_out: c.bytes_out,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let req = ClusterRequest {
            v: WIRE_VERSION,
            id: 7,
            from: "a".into(),
            op: Op::Send {
                target: WireTarget::Name("status".into()),
                msg: Delivery::Write {
                    text: "VPN \"up\"".into(),
                },
            },
        };
        let json = serde_json::to_string(&req).expect("encodes");
        let back: ClusterRequest = serde_json::from_str(&json).expect("decodes");
        assert!(matches!(
            back.op,
            Op::Send { target: WireTarget::Name(ref n), msg: Delivery::Write { ref text } }
                if n == "status" && text == "VPN \"up\""
        ));
        assert!(serde_json::from_str::<ClusterRequest>("{\"v\":1}").is_err());

        let ask = ClusterRequest {
            v: WIRE_VERSION,
            id: 8,
            from: "a".into(),
            op: Op::Ask {
                target: WireTarget::All,
                request: Request::Call {
                    func: "f".into(),
                    arg: "x".into(),
                },
                timeout_ms: 5000,
            },
        };
        let json = serde_json::to_string(&ask).expect("encodes");
        assert_eq!(
            json,
            r#"{"v":1,"id":8,"from":"a","op":{"op":"ask","target":"all","request":{"kind":"call","func":"f","arg":"x"},"timeout_ms":5000}}"#
        );
        let reply = ClusterResponse {
            v: WIRE_VERSION,
            id: 8,
            node: "b".into(),
            live: 2,
            answer: ClusterResult::Asked {
                answers: vec![PageAnswer {
                    index: 3,
                    answer: crate::base::protocol::Answer::Value("null".into()),
                }],
                dropped: 0,
            },
        };
        let json = serde_json::to_string(&reply).expect("encodes");
        let back: ClusterResponse = serde_json::from_str(&json).expect("decodes");
        assert!(matches!(
            back.answer,
            ClusterResult::Asked { ref answers, .. } if answers[0].answer == crate::base::protocol::Answer::Value("null".into())
        ));
    }
}
