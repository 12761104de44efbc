//! The cluster backplane (`serve --redis URL`): daemons that share one
//! connection table through Redis.
//!
//! Nothing per connection is stored in Redis. What is there:
//! - `PREFIX:index`, a counter from which each node takes indexes a block at
//!   a time ([`Blocks`]), keeping a spare block so that opening a
//!   connection never waits on Redis;
//! - `PREFIX:node:ID`, each node's lease, set with a TTL and refreshed every
//!   third of it; a node is live while its lease exists;
//! - `PREFIX:nodes`, the set of node ids that may hold a lease, so that
//!   finding the live nodes needs no key scan (ids whose lease is gone are
//!   removed by whoever notices);
//! - two pub/sub channels per node: `PREFIX:cluster`, where every node hears
//!   requests, and `PREFIX:reply:ID`, where it hears the answers to its own.
//!
//! A command that addresses connections acts on the local hub first, then
//! publishes one request; each other live node acts on its own hub and
//! answers; the requester waits for every live node or the reply timeout
//! and merges what came. A close or write by index that the local hub holds
//! never leaves the node, since indexes are unique across the cluster.
//!
//! Redis going away never takes the node down: local delivery goes on,
//! cluster commands answer with this node's share and say so, and the
//! connections are re-established with backoff, logged to the Monitor.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::bail;
use redis::aio::MultiplexedConnection;
use redis::{Client, RedisError};
use serde::Deserialize;
use tokio::sync::{mpsc, watch, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

mod blocks;
mod fanout;
mod lease;
mod subscriber;
mod verbs;
mod wire;

use blocks::{refill, take_indexes, Blocks};
use lease::{keep_lease, open_commands, refresh_lease};
use subscriber::{listen, open_pubsub};
use wire::{ClusterResponse, ClusterResult, Keys, Op};

use super::memory;
use super::{Answers, Backplane, BoxFuture, Counted, Delivery, Listed, Listing, Outcome, Unknown};
use crate::base::command::Target;
use crate::engine::asks::{Asks, Request};
use crate::engine::hub::{Hub, IndexSource};
use crate::engine::monitor::Monitor;

/// How long connecting to Redis may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one Redis command may take before the connection is deemed
/// broken.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// First and longest wait between reconnection attempts.
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// A node that has reached Redis and taken its first indexes, before its
/// hub exists (the hub needs the indexes, the node needs the hub).
pub(crate) struct Joining {
    client: Client,
    server: String,
    conn: MultiplexedConnection,
    keys: Keys,
    id: Arc<str>,
    lease_value: String,
    config: ClusterConfig,
    blocks: Arc<Blocks>,
    monitor: Monitor,
}

/// Reaches the Redis at `url` and takes this node's first two blocks of
/// indexes. Fails when Redis cannot be reached: a node that starts without
/// it could not give indexes that are unique across the cluster.
pub(crate) async fn connect(
    url: &str,
    config: &ClusterConfig,
    listen: &str,
    monitor: &Monitor,
) -> anyhow::Result<Joining> {
    let client = Client::open(url).map_err(|e| {
        anyhow::anyhow!(
            "invalid --redis URL '{}': {e}; expected redis://HOST[:PORT][/DB]",
            redact(url)
        )
    })?;
    let server = client.get_connection_info().addr().to_string();
    let unreachable = || {
        format!(
            "cannot reach Redis at {server} (--redis): a cluster node needs it to start; \
             start Redis, or run without --redis for a daemon on its own"
        )
    };
    // A Redis error's source repeats its message: show the error alone.
    let failed = |e: RedisError| anyhow::anyhow!("{}: {e}", unreachable());
    let mut conn = open_commands(&client).await.map_err(failed)?;
    let keys = Keys::new(&config.prefix);
    let block = config.index_block;
    let first = take_indexes(&mut conn, &keys, block, 0)
        .await
        .map_err(failed)?;
    let spare = take_indexes(&mut conn, &keys, block, first.end - 1)
        .await
        .map_err(failed)?;
    Ok(Joining {
        client,
        server,
        conn,
        keys,
        id: node_id().into(),
        lease_value: listen.to_string(),
        config: config.clone(),
        blocks: Arc::new(Blocks::new(first, spare)),
        monitor: monitor.clone(),
    })
}

impl Joining {
    /// Where the hub takes its indexes from.
    pub(crate) fn indexes(&self) -> Arc<dyn IndexSource> {
        self.blocks.clone()
    }

    /// Subscribes, takes the lease and starts the background tasks on
    /// `tasks`: the node is then part of the cluster.
    pub(crate) async fn start(
        mut self,
        hub: Hub,
        stop: CancellationToken,
        tasks: &TaskTracker,
    ) -> anyhow::Result<Arc<Cluster>> {
        let server = self.server.clone();
        let unreachable = |e: &dyn std::fmt::Display| {
            anyhow::anyhow!("cannot join the cluster through Redis at {server}: {e}")
        };
        let (sink, stream) = open_pubsub(&self.client, &self.keys, &self.id)
            .await
            .map_err(|e| unreachable(&e))?;
        let lease = Duration::from_secs(self.config.lease_secs);
        refresh_lease(
            &mut self.conn,
            &self.keys,
            &self.id,
            &self.lease_value,
            lease,
        )
        .await
        .map_err(|e| unreachable(&e))?;
        let (connected, _) = watch::channel(true);
        let node = Arc::new(Node {
            reply_channel: self.keys.reply(&self.id),
            id: self.id,
            hub,
            client: self.client,
            server: self.server,
            keys: self.keys,
            lease,
            refresh: lease / 3,
            reply_timeout: Duration::from_millis(self.config.reply_timeout_ms),
            lease_value: self.lease_value,
            block: self.config.index_block,
            conn: Mutex::new(Some(self.conn)),
            broken: Notify::new(),
            connected,
            subscribed: AtomicBool::new(true),
            left: AtomicBool::new(false),
            pending: Mutex::new(HashMap::new()),
            next_request: AtomicU64::new(1),
            blocks: self.blocks,
            monitor: self.monitor,
            asks: Asks::default(),
            watches: Mutex::new(HashMap::new()),
        });
        node.monitor.emit(format_args!(
            "cluster: joined as node {} through Redis at {} (lease {}s, indexes in blocks of {})",
            node.id, node.server, self.config.lease_secs, self.config.index_block
        ));
        tasks.spawn(keep_lease(node.clone(), stop.clone()));
        tasks.spawn(listen(node.clone(), sink, stream, stop.clone()));
        tasks.spawn(refill(node.clone(), stop));
        Ok(Arc::new(Cluster { node }))
    }
}

/// The backplane of a cluster node.
pub(crate) struct Cluster {
    node: Arc<Node>,
}

impl Cluster {
    /// Whether the node is joined now (for `/readyz`): its command
    /// connection to Redis is up and it hears the other nodes.
    pub(crate) fn joined(&self) -> Result<(), String> {
        let node = &self.node;
        if !*node.connected.borrow() {
            return Err(format!("Redis at {} is unreachable", node.server));
        }
        if !node.subscribed.load(Ordering::Relaxed) {
            return Err(format!("not subscribed to Redis at {}", node.server));
        }
        Ok(())
    }

    /// This node's id in the cluster.
    pub(crate) fn node_id(&self) -> &str {
        &self.node.id
    }
}

struct Node {
    id: Arc<str>,
    hub: Hub,
    client: Client,
    /// Redis's address, without credentials, for messages.
    server: String,
    keys: Keys,
    reply_channel: String,
    lease: Duration,
    refresh: Duration,
    reply_timeout: Duration,
    lease_value: String,
    /// Indexes taken at a time.
    block: u64,
    /// The command connection; `None` while Redis is unreachable. Cloned
    /// out before use, never held across an `.await`.
    conn: Mutex<Option<MultiplexedConnection>>,
    /// Wakes the lease keeper when a command found the connection broken.
    broken: Notify,
    /// Whether `conn` is up, for the refill task to wait on.
    connected: watch::Sender<bool>,
    /// Whether the pub/sub connection is subscribed (replies can be heard).
    subscribed: AtomicBool,
    /// Set by `leave`, so that the lease is not taken again.
    left: AtomicBool,
    /// Requests waiting for replies, by request id.
    pending: Mutex<HashMap<u64, mpsc::UnboundedSender<ClusterResponse>>>,
    next_request: AtomicU64,
    blocks: Arc<Blocks>,
    monitor: Monitor,
    /// This node's asks waiting for its pages' answers.
    asks: Asks,
    /// Other nodes' `ws wait`s this node reports to, by requester and
    /// request id.
    watches: Mutex<HashMap<(String, u64), CancellationToken>>,
}

impl Node {
    fn conn(&self) -> Option<MultiplexedConnection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_conn(&self, conn: Option<MultiplexedConnection>) {
        let up = conn.is_some();
        *self.conn.lock().unwrap_or_else(|e| e.into_inner()) = conn;
        self.connected.send_replace(up);
    }

    /// Drops the command connection after an error that means it is gone,
    /// and has the lease keeper reconnect at once.
    fn failed(&self, e: &RedisError) {
        if e.is_unrecoverable_error() || e.is_io_error() || e.is_timeout() {
            self.set_conn(None);
            self.broken.notify_one();
        }
    }

    fn pending(&self) -> MutexGuard<'_, HashMap<u64, mpsc::UnboundedSender<ClusterResponse>>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn watches(&self) -> MutexGuard<'_, HashMap<(String, u64), CancellationToken>> {
        self.watches.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Backplane for Cluster {
    fn hub(&self) -> &Hub {
        &self.node.hub
    }

    fn node(&self) -> Option<Arc<str>> {
        Some(self.node.id.clone())
    }

    fn list(&self) -> BoxFuture<'_, Listing> {
        Box::pin(async move {
            let node = &self.node;
            let mut conns = memory::list(&node.hub, Some(&node.id));
            let g = node.fan_out(Op::List).await;
            for reply in g.answers {
                if let ClusterResult::List { conns: theirs } = reply.answer {
                    let from: Arc<str> = reply.node.into();
                    conns.extend(theirs.into_iter().map(|c| Listed {
                        info: c.into(),
                        node: Some(from.clone()),
                    }));
                }
            }
            conns.sort_by_key(|c| c.info.id);
            Listing {
                conns,
                notes: g.notes,
            }
        })
    }

    fn send<'a>(
        &'a self,
        target: &'a Target,
        msg: &'a Delivery,
    ) -> BoxFuture<'a, Result<Outcome, Unknown>> {
        Box::pin(async move {
            let local = memory::send(&self.node.hub, target, msg);
            let op = Op::Send {
                target: target.into(),
                msg: msg.clone(),
            };
            self.node.act_everywhere(target, local, op).await
        })
    }

    fn close<'a>(&'a self, target: &'a Target) -> BoxFuture<'a, Result<Outcome, Unknown>> {
        Box::pin(async move {
            let local = memory::close(&self.node.hub, target);
            let op = Op::Close {
                target: target.into(),
            };
            self.node.act_everywhere(target, local, op).await
        })
    }

    fn asks(&self) -> &Asks {
        &self.node.asks
    }

    fn ask<'a>(
        &'a self,
        target: &'a Target,
        request: &'a Request,
        timeout: std::time::Duration,
    ) -> BoxFuture<'a, Result<Answers, Unknown>> {
        Box::pin(self.node.ask_everywhere(target, request, timeout))
    }

    fn named<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Counted> {
        Box::pin(self.node.named_everywhere(name))
    }

    fn wait_named<'a>(
        &'a self,
        name: &'a str,
        count: usize,
        timeout: std::time::Duration,
    ) -> BoxFuture<'a, Counted> {
        Box::pin(self.node.wait_everywhere(name, count, timeout))
    }

    fn leave(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let node = &self.node;
            node.left.store(true, Ordering::Release);
            let Some(mut conn) = node.conn() else {
                return;
            };
            let mut pipe = redis::pipe();
            pipe.cmd("DEL")
                .arg(node.keys.lease(&node.id))
                .ignore()
                .cmd("SREM")
                .arg(&node.keys.nodes)
                .arg(&*node.id)
                .ignore();
            // Best effort: if this fails the lease simply expires.
            let _ = tokio::time::timeout(COMMAND_TIMEOUT, pipe.query_async::<()>(&mut conn)).await;
            node.monitor
                .emit(format_args!("cluster: node {} left", node.id));
        })
    }
}

/// A node id: host name, process id and a random part, so that a restarted
/// daemon is a new node and two daemons on one host differ.
fn node_id() -> String {
    let host = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    let host: String = host
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        .take(40)
        .collect();
    let host = if host.is_empty() {
        "pagewire".to_string()
    } else {
        host
    };
    // RandomState is seeded from the OS: a random number without a crate.
    let mut h = RandomState::new().build_hasher();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    h.write_u128(nanos);
    format!(
        "{host}-{}-{:06x}",
        std::process::id(),
        h.finish() & 0xff_ffff
    )
}

/// `url` without its password, for messages.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

// ---- Settings ----

/// Whether the daemon is a node of a cluster: a flag of `pagewire serve`,
/// and the `redis` key of the configuration file.
#[derive(clap::Args, Deserialize, serde::Serialize, Debug, Default, Clone)]
#[serde(default)]
pub(crate) struct RedisSettings {
    /// Join a cluster through this Redis server
    #[arg(long, value_name = "URL", display_order = 11)]
    pub(crate) redis: Option<String>,
}

/// `[cluster]`: how a node takes part in a cluster (`--redis`).
#[derive(clap::Args, serde::Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ClusterConfig {
    /// Prefix of every Redis key and channel: daemons with the same Redis
    /// and prefix form one cluster.
    #[arg(id = "cluster_prefix", long = "cluster-prefix", value_name = "WORD", default_value_t = ClusterConfig::default().prefix, help_heading = "Cluster ([cluster] in the file)")]
    pub(crate) prefix: String,
    /// Seconds a node's lease lives unless refreshed (every third of it); a
    /// node that dies leaves every listing this long after.
    #[arg(id = "cluster_lease_secs", long = "cluster-lease-secs", value_name = "SECS", default_value_t = ClusterConfig::default().lease_secs, help_heading = "Cluster ([cluster] in the file)")]
    pub(crate) lease_secs: u64,
    /// Milliseconds a command waits for the other nodes to answer.
    #[arg(id = "cluster_reply_timeout_ms", long = "cluster-reply-timeout-ms", value_name = "MS", default_value_t = ClusterConfig::default().reply_timeout_ms, help_heading = "Cluster ([cluster] in the file)")]
    pub(crate) reply_timeout_ms: u64,
    /// Indexes a node takes from Redis at a time.
    #[arg(id = "cluster_index_block", long = "cluster-index-block", value_name = "N", default_value_t = ClusterConfig::default().index_block, help_heading = "Cluster ([cluster] in the file)")]
    pub(crate) index_block: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            prefix: "pagewire".into(),
            lease_secs: 10,
            reply_timeout_ms: 1000,
            index_block: 64,
        }
    }
}

impl ClusterConfig {
    /// Checks the ranges of every setting.
    pub(crate) fn check(&self) -> anyhow::Result<()> {
        if self.prefix.is_empty() || self.prefix.contains(char::is_whitespace) {
            bail!("cluster.prefix must be a non-empty word without blanks");
        }
        if !(1..=3600).contains(&self.lease_secs) {
            bail!("cluster.lease_secs must be between 1 and 3600");
        }
        if !(10..=60_000).contains(&self.reply_timeout_ms) {
            bail!("cluster.reply_timeout_ms must be between 10 and 60000");
        }
        if !(1..=1_000_000).contains(&self.index_block) {
            bail!("cluster.index_block must be between 1 and 1000000");
        }
        Ok(())
    }
}

// ---- Messages between nodes (JSON over pub/sub) ----

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_password_in_messages() {
        assert_eq!(redact("redis://:secret@db:6379/0"), "redis://***@db:6379/0");
        assert_eq!(redact("redis://db:6379"), "redis://db:6379");
    }

    #[test]
    fn node_ids_differ() {
        assert_ne!(node_id(), node_id());
    }
}
