//! Retained values in a cluster: they live in Redis, in the hash
//! `PREFIX:retained` (store key to record, as in the state directory), and
//! every node holds a copy that pages registering on it are replayed from.
//!
//! A `--retain` on any node is stored in Redis before the command answers
//! ([`RedisStore`]), then every other live node is told to update its copy
//! ([`Op::Retain`]) before the value is delivered; `ws forget` likewise. A
//! node loads the whole hash when it joins, and again when Redis began a
//! new epoch (restarted, or restored).

use std::future::Future;
use std::sync::{Arc, LazyLock};

use redis::{RedisError, Script};
use tokio::runtime::Handle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::wire::{ClusterResult, Op};
use super::{scripts, Node};
use crate::base::text;
use crate::engine::backplane::{Records, SharedRetained};

static FORGET: LazyLock<Script> = LazyLock::new(|| Script::new(scripts::FORGET_RETAINED));
static DROP_EXPIRED: LazyLock<Script> = LazyLock::new(|| Script::new(scripts::DROP_EXPIRED));

/// The retained values' store on a cluster node: the hash in Redis. Its
/// calls block (the retained values run them off the async workers) on
/// the node's connection, each bounded by the reply timeout.
pub(crate) struct RedisStore {
    node: Arc<Node>,
    handle: Handle,
}

impl RedisStore {
    fn run<T>(&self, f: impl Future<Output = Result<T, RedisError>>) -> Result<T, String> {
        let node = &self.node;
        match self
            .handle
            .block_on(tokio::time::timeout(node.reply_timeout, f))
        {
            Ok(Ok(v)) => {
                node.stats.round_trip();
                Ok(v)
            }
            Ok(Err(e)) => {
                node.stats.error();
                node.failed(&e);
                Err(format!("Redis at {} failed: {e}", node.server))
            }
            Err(_) => Err(format!(
                "Redis at {} did not answer within {}",
                node.server,
                text::duration(node.reply_timeout)
            )),
        }
    }

    fn conn(&self) -> Result<redis::aio::MultiplexedConnection, String> {
        self.node
            .conn()
            .ok_or_else(|| format!("Redis at {} is unreachable", self.node.server))
    }
}

impl RedisStore {
    /// Keeps one record under `key`.
    pub(crate) fn put(&self, key: &str, record: &[u8]) -> Result<(), String> {
        let mut conn = self.conn()?;
        let hash = &self.node.keys.retained;
        self.run(async move {
            redis::cmd("HSET")
                .arg(hash)
                .arg(key)
                .arg(record)
                .query_async::<()>(&mut conn)
                .await
        })
    }

    /// Drops the records of `name`; how many went.
    pub(crate) fn forget(&self, name: &str) -> Result<usize, String> {
        let mut conn = self.conn()?;
        let hash = &self.node.keys.retained;
        self.run(async move {
            FORGET
                .key(hash)
                .arg(format!("{name}\0"))
                .invoke_async::<usize>(&mut conn)
                .await
        })
    }

    /// Drops the records of `keys` that have expired by `now_ms` (Unix
    /// ms), and only those.
    pub(crate) fn drop_expired(&self, keys: &[String], now_ms: u64) -> Result<(), String> {
        let mut conn = self.conn()?;
        let hash = &self.node.keys.retained;
        self.run(async move {
            DROP_EXPIRED
                .key(hash)
                .arg(now_ms)
                .arg(keys)
                .invoke_async::<()>(&mut conn)
                .await
        })
    }

    /// Every record, by key.
    pub(crate) fn records(&self) -> Result<Records, String> {
        let mut conn = self.conn()?;
        let hash = &self.node.keys.retained;
        self.run(async move {
            redis::cmd("HGETALL")
                .arg(hash)
                .query_async::<Records>(&mut conn)
                .await
        })
    }
}

impl Node {
    /// Loads every retained value from Redis into `retained`, which keeps
    /// them there from now on; problems go to the Monitor. False when
    /// Redis could not be read (the copy is left as it was).
    pub(super) async fn load_retained(self: &Arc<Self>, retained: &dyn SharedRetained) -> bool {
        let store = Arc::new(RedisStore {
            node: self.clone(),
            handle: Handle::current(),
        });
        let read = {
            let store = store.clone();
            tokio::task::spawn_blocking(move || store.records())
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r)
        };
        let loaded = match read {
            Ok(loaded) => loaded,
            Err(e) => {
                self.monitor.emit(format_args!(
                    "cluster: could not load the retained values: {e}; they are loaded again \
                     when Redis is back"
                ));
                return false;
            }
        };
        for problem in retained.load(store, loaded).await {
            self.monitor.emit(format_args!("cluster: {problem}"));
        }
        self.monitor.emit(format_args!(
            "cluster: {} retained in Redis",
            retained.len()
        ));
        true
    }

    /// Applies another node's change to this node's copy.
    pub(super) fn apply_retained(&self, change: &serde_json::Value) -> ClusterResult {
        if let Some(problem) = self.retained.get().and_then(|r| r.apply(change)) {
            self.monitor.emit(format_args!("cluster: {problem}"));
        }
        ClusterResult::Done {
            reached: 0,
            dropped: 0,
        }
    }

    /// Tells every other live node (not only those holding the name: a
    /// page may register it anywhere later) to apply `change`, and waits
    /// for them within the reply timeout; returns the notes on those that
    /// did not.
    pub(super) async fn share_retained(&self, change: serde_json::Value) -> Vec<String> {
        let until = Instant::now() + self.reply_timeout;
        match self.route_until("list", "", until).await {
            Ok((conn, route)) => {
                let mut notes = self.route_notes(&route);
                let nodes = route.peers.iter().map(|p| p.id.clone()).collect();
                let op = Op::Retain { change };
                let mut g = self
                    .request(conn, nodes, op, until, self.reply_timeout)
                    .await;
                notes.append(&mut g.notes);
                notes
            }
            Err(note) => vec![note],
        }
    }
}

/// Loads the retained values again whenever Redis began a new epoch (or
/// the first load failed: then until it succeeds), so that every node's copy is what Redis holds.
pub(super) async fn keep_retained(node: Arc<Node>, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = node.retained_reload.notified() => {}
        }
        let Some(retained) = node.retained.get() else {
            continue;
        };
        let mut backoff = node.backoff();
        while !node.load_retained(retained.as_ref()).await {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(backoff.next()) => {}
            }
        }
    }
}
