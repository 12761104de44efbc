//! The backplane: how the commands that address connections (`ws`, `ws
//! write`, `ws exec`, `ws close`, and the verbs that wait for pages: `ws
//! call`, `ws read`, `--wait`, `ws wait`) reach them.
//!
//! [`Backplane`] is the one interface the executor uses. [`memory::Local`],
//! the default, is this daemon's hub and nothing else. [`redis::Cluster`]
//! (`serve --redis URL`) joins daemons that share one connection table: it
//! acts on the local hub as `Local` does, then asks every other live node to
//! do the same over Redis pub/sub and merges their answers. Registration,
//! heartbeats and `set notify` stay local: a page belongs to one node.

pub(crate) mod memory;
pub(crate) mod redis;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::base::command::Target;
use crate::base::protocol::{PageAnswer, ServerFrame};
use crate::engine::asks::{Asks, Request};
use crate::engine::hub::{CloseReason, ConnInfo, Hub, TargetError};

pub(crate) use memory::Local;

/// Records as read from a store of retained values: key and JSON.
pub(crate) type Records = Vec<(String, Vec<u8>)>;

/// A cluster node's copy of the retained values, as the backplane sees it
/// (the retained values live above it, in `engine::remember`, and
/// implement this).
pub(crate) trait SharedRetained: Send + Sync {
    /// Keeps values in `store` from now on, holding the `loaded` records
    /// in place of what was held; returns what was wrong with them.
    fn load(
        &self,
        store: Arc<redis::retained::RedisStore>,
        loaded: Records,
    ) -> BoxFuture<'_, Vec<String>>;
    /// Applies a change another node made (JSON, as it travelled);
    /// returns what was wrong with it, for the Monitor, if it was left out
    /// (and not reported before).
    fn apply(&self, change: &serde_json::Value) -> Option<String>;
    /// How many values are held.
    fn len(&self) -> usize;
}

/// A boxed future, so that [`Backplane`] can be used as a trait object.
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How `ws close` closes a page, on whichever node it lives.
pub(crate) const OPERATOR_CLOSE: CloseReason = CloseReason {
    code: 1000,
    reason: "closed by operator",
};

/// What `ws write` and `ws exec` send to pages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub(crate) enum Delivery {
    /// Text for the page's element.
    Write {
        /// Plain text, never HTML.
        text: String,
    },
    /// A function call, or `func:arg` shown in the element.
    Exec {
        /// The function's name.
        func: String,
        /// Its one argument.
        arg: String,
    },
}

impl Delivery {
    /// The WebSocket frame for `target`, encoded once: every connection it
    /// reaches on this node shares these bytes.
    pub(crate) fn encode(&self, target: &Target) -> Bytes {
        let name = target_name(target);
        let ack = None;
        match self {
            Delivery::Write { text } => ServerFrame::Write { name, text, ack }.encode(),
            Delivery::Exec { func, arg } => ServerFrame::Exec {
                name,
                func,
                arg,
                ack,
            }
            .encode(),
        }
    }
}

/// The element a frame names: only when the operator addressed pages by
/// name, since a frame for an index or `*` is shared by pages whose first
/// element differs.
fn target_name(target: &Target) -> Option<&str> {
    match target {
        Target::Name(n) => Some(n),
        _ => None,
    }
}

/// One connection in a listing, and the node that holds it.
#[derive(Clone, Debug)]
pub(crate) struct Listed {
    /// The connection.
    pub(crate) info: ConnInfo,
    /// The node holding it; `None` outside a cluster.
    pub(crate) node: Option<Arc<str>>,
}

/// The `ws` listing gathered whole: for tests of its rendering.
#[cfg(test)]
#[derive(Clone, Debug, Default)]
pub(crate) struct Listing {
    /// Connections, sorted by index.
    pub(crate) conns: Vec<Listed>,
    /// What could not be included (a table that could not be read, Redis
    /// down, nodes that may be missing or out of date).
    pub(crate) notes: Vec<String>,
}

/// One of the backplane's own metrics for `/metrics`.
#[derive(Clone, Debug)]
pub(crate) struct BackplaneMetric {
    /// Its name, `pagewire_cluster_...`.
    pub(crate) name: &'static str,
    /// A counter (only goes up), or a gauge.
    pub(crate) counter: bool,
    /// What it counts.
    pub(crate) help: &'static str,
    /// Its value now.
    pub(crate) value: u64,
}

/// A tail of every node's Monitor: the lines, and a first line saying
/// which nodes are tailed.
pub(crate) type ClusterTail = (tokio::sync::broadcast::Receiver<Arc<str>>, String);

/// What a write, exec or close did, summed over every node that answered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Outcome {
    /// Connections the frame was queued for (or that were closed).
    pub(crate) reached: usize,
    /// Connections that matched but were closed as slow consumers instead.
    pub(crate) dropped: usize,
    /// Connections live on the nodes that answered, matched or not: tells
    /// "nobody has that name" from "there is nobody".
    pub(crate) live: usize,
    /// What could not be asked.
    pub(crate) notes: Vec<String>,
}

/// What an ask gathered from every node that answered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Answers {
    /// One answer per page the ask reached, by index.
    pub(crate) answers: Vec<PageAnswer>,
    /// Pages that matched but were closed as slow consumers instead.
    pub(crate) dropped: usize,
    /// Connections live on the nodes that answered (as [`Outcome::live`]).
    pub(crate) live: usize,
    /// Nodes that should have answered and did not (or could not be
    /// asked): their pages are missing from `answers`.
    pub(crate) unanswered: usize,
    /// What could not be asked.
    pub(crate) notes: Vec<String>,
}

/// How many pages hold a name, on every node that answered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counted {
    /// The pages.
    pub(crate) count: usize,
    /// What could not be asked.
    pub(crate) notes: Vec<String>,
}

/// An index that no reachable node holds.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Unknown {
    /// The hub's error for it.
    pub(crate) error: TargetError,
    /// Nodes that could not be asked, which might hold it.
    pub(crate) notes: Vec<String>,
}

impl fmt::Display for Unknown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.error)?;
        // An error stays on one line; the notes say why it may be wrong.
        if !self.notes.is_empty() {
            write!(f, " ({})", self.notes.join("; "))?;
        }
        Ok(())
    }
}

impl From<TargetError> for Unknown {
    fn from(error: TargetError) -> Self {
        Unknown {
            error,
            notes: Vec::new(),
        }
    }
}

/// The connection table the commands act on: this daemon's alone, or a
/// cluster's.
pub(crate) trait Backplane: Send + Sync {
    /// This daemon's own hub.
    fn hub(&self) -> &Hub;

    /// This daemon's node id in a cluster; `None` on its own.
    fn node(&self) -> Option<Arc<str>> {
        None
    }

    /// Hands every reachable connection to `each`, by index, as it is
    /// read (a cluster's listing is never held whole); returns the notes
    /// on what could not be included.
    fn list<'a>(&'a self, each: &'a mut (dyn FnMut(Listed) + Send)) -> BoxFuture<'a, Vec<String>>;

    /// Sends `msg` to every connection `target` selects. An index that no
    /// reachable node holds is an error; a name nobody registered reaches
    /// nothing (`reached == 0`).
    fn send<'a>(
        &'a self,
        target: &'a Target,
        msg: &'a Delivery,
    ) -> BoxFuture<'a, Result<Outcome, Unknown>>;

    /// Closes every connection `target` selects with [`OPERATOR_CLOSE`];
    /// `reached` counts them.
    fn close<'a>(&'a self, target: &'a Target) -> BoxFuture<'a, Result<Outcome, Unknown>>;

    /// This daemon's asks in flight, which its pages' answers go to.
    fn asks(&self) -> &Asks;

    /// Sends `request` to the pages `target` selects, on every node, and
    /// gathers one answer per page until `timeout` (a page that gave none
    /// is `timed out`). An index no reachable node holds is an error.
    fn ask<'a>(
        &'a self,
        target: &'a Target,
        request: &'a Request,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Answers, Unknown>>;

    /// How many pages hold `name` now.
    fn named<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Counted>;

    /// Resolves as soon as at least `count` pages hold `name`, or at
    /// `timeout`, with how many do: woken by registrations, never by
    /// polling.
    fn wait_named<'a>(
        &'a self,
        name: &'a str,
        count: usize,
        timeout: Duration,
    ) -> BoxFuture<'a, Counted>;

    /// Leaves the cluster at shutdown, so other nodes stop waiting for this
    /// one at once instead of when its lease expires.
    fn leave(&self) -> BoxFuture<'_, ()>;

    /// The backplane's own metrics (none on its own).
    fn metrics(&self) -> Vec<BackplaneMetric> {
        Vec::new()
    }

    /// Has the other nodes of a cluster apply `change` (a change of the
    /// retained values, opaque here) to their copies (it is in Redis
    /// already); returns the notes on
    /// the nodes that did not. Nothing to do for a daemon on its own.
    fn share_retained(&self, change: serde_json::Value) -> BoxFuture<'_, Vec<String>> {
        let _ = change;
        Box::pin(std::future::ready(Vec::new()))
    }

    /// A tail of every node's Monitor; `None` outside a cluster.
    fn tail(&self) -> Option<BoxFuture<'_, ClusterTail>> {
        None
    }
}
