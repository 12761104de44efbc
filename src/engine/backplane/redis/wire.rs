//! What the nodes of a cluster say to each other (JSON over pub/sub), what
//! they keep in Redis (the rows of their connection tables), and the names
//! of their keys and channels.

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
pub(super) const WIRE_VERSION: u32 = 2;

/// Names of the keys and channels, from the configured prefix.
#[derive(Clone, Debug)]
pub(super) struct Keys {
    /// The index counter.
    pub(super) index: String,
    /// The set of node ids that may hold a lease.
    pub(super) nodes: String,
    /// The epoch record: which Redis run the cluster's data lives in.
    pub(super) epoch: String,
    /// The channel Monitor lines travel on while someone tails the cluster.
    pub(super) monitor: String,
    /// The retained values: a hash of store key to record.
    pub(super) retained: String,
    pub(super) prefix: String,
}

impl Keys {
    pub(super) fn new(prefix: &str) -> Self {
        Keys {
            index: format!("{prefix}:index"),
            nodes: format!("{prefix}:nodes"),
            epoch: format!("{prefix}:epoch"),
            monitor: format!("{prefix}:monitor"),
            retained: format!("{prefix}:retained"),
            prefix: prefix.to_string(),
        }
    }

    /// The node's lease.
    pub(super) fn lease(&self, node: &str) -> String {
        format!("{}:node:{node}", self.prefix)
    }

    /// The channel the node hears requests on.
    pub(super) fn requests(&self, node: &str) -> String {
        format!("{}:req:{node}", self.prefix)
    }

    /// The channel the node hears the replies to its own requests on.
    pub(super) fn reply(&self, node: &str) -> String {
        format!("{}:reply:{node}", self.prefix)
    }

    /// The node's connection table: a sorted set of rows, scored by index.
    pub(super) fn conns(&self, node: &str) -> String {
        format!("{}:conns:{node}", self.prefix)
    }

    /// The names registered on the node's connections (a set).
    pub(super) fn names(&self, node: &str) -> String {
        format!("{}:names:{node}", self.prefix)
    }

    /// The index blocks the node took: a sorted set of `START-END` members
    /// scored by START.
    pub(super) fn blocks(&self, node: &str) -> String {
        format!("{}:blocks:{node}", self.prefix)
    }
}

/// A request from one node to another.
#[derive(Serialize, Deserialize, Debug)]
pub(super) struct ClusterRequest {
    pub(super) v: u32,
    pub(super) id: u64,
    pub(super) from: String,
    /// Redis time (ms) after which the request must not be acted on: the
    /// requester has answered without it by then.
    pub(super) deadline: u64,
    /// Redis time (ms) when it was sent, for the pub/sub lag.
    pub(super) sent: u64,
    pub(super) op: Op,
}

#[derive(Serialize, Deserialize, Debug)]
#[serde(tag = "op", rename_all = "lowercase")]
pub(super) enum Op {
    Send {
        target: WireTarget,
        msg: Delivery,
    },
    Close {
        target: WireTarget,
    },
    /// Publish Monitor lines on the monitor channel until this Redis time.
    Tail {
        until: u64,
    },
    /// Ask the pages `target` selects and answer with what they said
    /// within `timeout_ms`, and never after the request's deadline (`ws
    /// call`, `ws read`, `--wait`).
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
    /// until `timeout_ms` (or the request's deadline) passed or an
    /// `Unwatch` of this request came (`ws wait`).
    Watch {
        name: String,
        timeout_ms: u64,
    },
    /// The requester of watch `id` has what it waited for.
    Unwatch {
        id: u64,
    },
    /// Apply a change to the retained values (already made in Redis) to
    /// this node's copy.
    /// (The change is the retained values' own, opaque here.)
    Retain {
        change: serde_json::Value,
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

impl From<WireTarget> for Target {
    fn from(t: WireTarget) -> Self {
        match t {
            WireTarget::Index(i) => Target::Index(i),
            WireTarget::Name(n) => Target::Name(n),
            WireTarget::All => Target::All,
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
    Done {
        reached: usize,
        dropped: usize,
    },
    NoIndex,
    Tailing,
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

/// One Monitor line of a node, on the monitor channel.
#[derive(Serialize, Deserialize, Debug)]
pub(super) struct MonitorLine {
    pub(super) node: String,
    pub(super) line: String,
}

/// One row of a node's connection table in Redis. `opened` is Redis time,
/// so that any node can show the age; the traffic counters are as of the
/// node's last refresh of the row.
#[derive(Serialize, Deserialize, Debug, PartialEq, Eq)]
pub(super) struct Row {
    pub(super) id: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) names: Vec<String>,
    pub(super) remote: SocketAddr,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub(super) page: String,
    pub(super) opened: u64,
    /// Redis time the page last sent anything (0 from older nodes).
    #[serde(default)]
    pub(super) seen: u64,
    /// What the page reported of its visibility (`visible`, `hidden`,
    /// `frozen`); absent when nothing was, or from older nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) vis: Option<String>,
    pub(super) mi: u64,
    pub(super) bi: u64,
    pub(super) mo: u64,
    pub(super) bo: u64,
}

impl Row {
    /// The row of `c`, with its opening time on the Redis clock `now`.
    pub(super) fn new(c: ConnInfo, now: u64) -> Row {
        let age = u64::try_from(c.age.as_millis()).unwrap_or(u64::MAX);
        Row {
            id: c.id,
            names: c.names,
            remote: c.remote,
            page: c.page,
            opened: now.saturating_sub(age),
            seen: now.saturating_sub(u64::try_from(c.idle.as_millis()).unwrap_or(u64::MAX)),
            vis: c.visibility.map(|v| v.word().to_string()),
            mi: c.msgs_in,
            bi: c.bytes_in,
            mo: c.msgs_out,
            bo: c.bytes_out,
        }
    }

    /// The connection, its age reckoned at Redis time `now`.
    pub(super) fn info(self, now: u64) -> ConnInfo {
        ConnInfo {
            id: self.id,
            names: self.names,
            remote: self.remote,
            page: self.page,
            age: Duration::from_millis(now.saturating_sub(self.opened)),
            idle: Duration::from_millis(now.saturating_sub(self.seen.max(self.opened))),
            visibility: self
                .vis
                .as_deref()
                .and_then(crate::base::command::Visibility::from_word),
            msgs_in: self.mi,
            bytes_in: self.bi,
            msgs_out: self.mo,
            bytes_out: self.bo,
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
            deadline: 1_000,
            sent: 900,
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
        assert_eq!(back.deadline, 1_000);
        assert!(serde_json::from_str::<ClusterRequest>("{\"v\":2}").is_err());

        let ask = ClusterRequest {
            v: WIRE_VERSION,
            id: 8,
            from: "a".into(),
            deadline: 7_000,
            sent: 1_000,
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
            r#"{"v":2,"id":8,"from":"a","deadline":7000,"sent":1000,"op":{"op":"ask","target":"all","request":{"kind":"call","func":"f","arg":"x"},"timeout_ms":5000}}"#
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

    #[test]
    fn rows_keep_the_age_on_the_redis_clock() {
        let info = ConnInfo {
            id: 9,
            names: vec!["status".into()],
            remote: "127.0.0.1:4000".parse().expect("address"),
            page: "/".into(),
            age: Duration::from_secs(5),
            idle: Duration::from_secs(2),
            visibility: Some(crate::base::command::Visibility::Hidden),
            msgs_in: 1,
            bytes_in: 2,
            msgs_out: 3,
            bytes_out: 4,
        };
        let row = Row::new(info, 100_000);
        assert_eq!((row.opened, row.seen), (95_000, 98_000));
        let json = serde_json::to_string(&row).expect("encodes");
        let back: Row = serde_json::from_str(&json).expect("decodes");
        assert_eq!(back, row);
        let info = back.info(101_000);
        assert_eq!(info.age, Duration::from_secs(6));
        assert_eq!(info.idle, Duration::from_secs(3));
        assert_eq!(
            info.visibility,
            Some(crate::base::command::Visibility::Hidden)
        );
    }

    #[test]
    fn rows_of_older_nodes_read_as_never_reported() {
        let json =
            r#"{"id":1,"remote":"127.0.0.1:4000","opened":95000,"mi":0,"bi":0,"mo":0,"bo":0}"#;
        let info = serde_json::from_str::<Row>(json)
            .expect("decodes")
            .info(101_000);
        assert_eq!((info.idle, info.visibility), (Duration::from_secs(6), None));
    }
}
