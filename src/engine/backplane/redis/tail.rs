//! `pagewire monitor --cluster`: every node's Monitor, each line with its
//! node.
//!
//! Nothing goes to Redis while nobody tails: a node publishes its Monitor
//! lines on `PREFIX:monitor` only until the time a `tail` request gave it.
//! A node with tailers sends that request to every live node at once and
//! again every refresh period (so nodes that join later are included, and
//! nodes stop publishing a lease after the last tailer left). Lines of this
//! node go to its tailers directly.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::broadcast;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::wire::{ClusterResult, MonitorLine, Op};
use super::Node;
use crate::base::text::Escaped;

/// Lines published per pipeline at most.
const BATCH: usize = 256;

/// A Monitor line as a cluster tail shows it: the node first. The node id
/// comes from Redis, so it is escaped like any text from elsewhere.
pub(super) fn with_node(node: &str, line: &str) -> Arc<str> {
    format!("[{}] {line}", Escaped(node)).into()
}

/// Forwards this node's Monitor lines: to its own tailers, and to Redis
/// while another node tails the cluster.
pub(super) async fn forward(node: Arc<Node>, stop: CancellationToken) {
    let mut lines = node.monitor.subscribe();
    loop {
        let first = tokio::select! {
            _ = stop.cancelled() => return,
            line = lines.recv() => line,
        };
        let mut batch = match first {
            Ok(line) => vec![line],
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => return,
        };
        while batch.len() < BATCH {
            match lines.try_recv() {
                Ok(line) => batch.push(line),
                Err(_) => break,
            }
        }
        if node.tail.receiver_count() > 0 {
            for line in &batch {
                let _ = node.tail.send(with_node(&node.id, line));
            }
        }
        if node.clock.now_ms() < node.tail_until.load(Ordering::Relaxed) {
            publish(&node, &batch).await;
        }
    }
}

async fn publish(node: &Node, batch: &[Arc<str>]) {
    let Some(mut conn) = node.conn() else {
        return;
    };
    let mut pipe = redis::pipe();
    for line in batch {
        let m = MonitorLine {
            node: node.id.to_string(),
            line: line.to_string(),
        };
        if let Ok(json) = serde_json::to_vec(&m) {
            pipe.cmd("PUBLISH")
                .arg(&node.keys.monitor)
                .arg(json)
                .ignore();
        }
    }
    match pipe.query_async::<()>(&mut conn).await {
        Ok(()) => node.stats.round_trip(),
        Err(e) => {
            node.stats.error();
            node.failed(&e);
        }
    }
}

/// While this node has tailers, asks every live node to publish its
/// Monitor lines, every refresh period.
pub(super) async fn keep_tailing(node: Arc<Node>, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(node.refresh) => {}
            _ = node.tail_wanted.notified() => {}
        }
        if node.tail.receiver_count() > 0 {
            node.ask_to_tail().await;
        }
    }
}

impl Node {
    /// Asks every other live node to publish its Monitor lines for a
    /// lease; says which nodes are tailed.
    pub(super) async fn ask_to_tail(&self) -> String {
        let until = Instant::now() + self.reply_timeout;
        let mut conn = match self.conn_for_cluster() {
            Ok(conn) => conn,
            Err(note) => return format!("cluster monitor: node {} only; {note}", self.id),
        };
        let route = match self.route(&mut conn, "list", "").await {
            Ok(route) => route,
            Err(note) => return format!("cluster monitor: node {} only; {note}", self.id),
        };
        let lease_ms = u64::try_from(self.lease.as_millis()).unwrap_or(u64::MAX);
        let op = Op::Tail {
            until: route.now + lease_ms,
        };
        let nodes = route.peers.iter().map(|p| p.id.clone()).collect();
        let g = self
            .request(conn, nodes, op, until, self.reply_timeout)
            .await;
        let mut tailed = vec![self.id.to_string()];
        tailed.extend(
            g.answers
                .iter()
                .filter(|a| matches!(a.answer, ClusterResult::Tailing))
                .map(|a| a.node.clone()),
        );
        let mut out = format!(
            "cluster monitor: tailing {} node{}: {}",
            tailed.len(),
            if tailed.len() == 1 { "" } else { "s" },
            tailed.join(", ")
        );
        for note in g.notes {
            out.push_str("; ");
            out.push_str(&note);
        }
        out
    }
}
