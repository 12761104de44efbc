//! The cluster backplane (`serve --redis URL`): daemons that share one
//! connection table through Redis.
//!
//! What each node keeps in Redis (see `wire::Keys`), every key of a node
//! expiring with its lease:
//! - `PREFIX:node:ID`, its lease, refreshed every third of it, and its id
//!   in the set `PREFIX:nodes` (ids whose lease is gone are removed by
//!   whoever notices);
//! - `PREFIX:conns:ID`, its connection table, one row per page
//!   ([`table`]), and `PREFIX:names:ID`, the names its pages registered;
//! - `PREFIX:blocks:ID`, the index blocks it took and still uses.
//!
//! And for the cluster: `PREFIX:index`, the counter blocks of indexes are
//! taken from ([`blocks`]), and `PREFIX:epoch`, which ties the data to one
//! run of the Redis server so that a restart or a restore is noticed and
//! indexes stay unique ([`scripts`], [`lease`]).
//!
//! `ws` reads the tables ([`listing`]); `ws write`, `exec` and `close`
//! act on the local hub, then go to the nodes that hold a match, each on
//! its own channel, with a deadline ([`fanout`]); so do the verbs that
//! wait for pages (`ws call`, `ws read`, `--wait`, `ws wait`, `/probe`:
//! [`verbs`]); `monitor --cluster` tails every node's Monitor ([`tail`]).
//!
//! Redis going away never takes the node down: local delivery goes on,
//! cluster commands answer with this node's share and say so, and the
//! connections are re-established with backoff, logged to the Monitor.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::bail;
use redis::aio::MultiplexedConnection;
use redis::{Client, RedisError};
use serde::Deserialize;
use tokio::sync::{broadcast, mpsc, watch, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

mod blocks;
mod fanout;
mod lease;
mod listing;
pub(crate) mod retained;
mod scripts;
mod subscriber;
mod table;
mod tail;
mod verbs;
mod wire;

use blocks::{refill, take_indexes, Blocks, Taken};
use lease::{keep_lease, open_commands};
use subscriber::{listen, open_pubsub};
use wire::{ClusterResponse, Keys, Op};

use super::memory;
use super::{
    Answers, Backplane, BackplaneMetric, BoxFuture, ClusterTail, Counted, Delivery, Listed,
    Outcome, SharedRetained, Unknown,
};
use crate::base::backoff::Backoff;
use crate::base::command::Target;
use crate::base::text;
use crate::engine::asks::{Asks, Request};
use crate::engine::hub::{Hub, IndexSource};
use crate::engine::monitor::Monitor;

/// First wait between reconnection attempts; the longest is half a
/// refresh period (see [`Node::backoff`]).
const BACKOFF_MIN: Duration = Duration::from_millis(100);

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

/// The Redis client for `url`: `redis://` or `rediss://` (TLS, checked
/// against the system's roots or `tls_ca`), with `user:password@` for an
/// ACL user.
fn client(url: &str, config: &ClusterConfig) -> anyhow::Result<Client> {
    let invalid = |e: &dyn std::fmt::Display| {
        anyhow::anyhow!(
            "invalid --redis URL '{}': {e}; expected redis://[USER:PASSWORD@]HOST[:PORT][/DB] \
             or rediss://... for TLS",
            redact(url)
        )
    };
    match &config.tls_ca {
        Some(path) => {
            if !url.starts_with("rediss://") {
                bail!("cluster.tls_ca is set but the --redis URL is not rediss:// (TLS)");
            }
            let pem = std::fs::read(path).map_err(|e| {
                anyhow::anyhow!("cannot read cluster.tls_ca {}: {e}", path.display())
            })?;
            let certs = redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem),
            };
            Client::build_with_tls(url, certs).map_err(|e| invalid(&e))
        }
        None => Client::open(url).map_err(|e| invalid(&e)),
    }
}

/// How long a starting node keeps trying a Redis that does not answer in
/// time, before it gives up.
const START_PATIENCE: Duration = Duration::from_secs(10);

/// Reaches the Redis at `url` and takes this node's first two blocks of
/// indexes (waiting out the fence of a new epoch). Fails when Redis cannot
/// be reached: a node that starts without it could not give indexes that
/// are unique across the cluster.
pub(crate) async fn connect(
    url: &str,
    config: &ClusterConfig,
    listen: &str,
    monitor: &Monitor,
) -> anyhow::Result<Joining> {
    let client = client(url, config)?;
    let server = client.get_connection_info().addr().to_string();
    let unreachable = || {
        format!(
            "cannot reach Redis at {server} (--redis): a cluster node needs it to start; \
             start Redis, or run without --redis for a daemon on its own"
        )
    };
    // A Redis error's source repeats its message: show the error alone.
    let failed = |e: RedisError| anyhow::anyhow!("{}: {e}", unreachable());
    let refresh = config.lease() / 3;
    // Each attempt is bounded as a running node's are (half a refresh
    // period); a Redis that is only slow to answer (a loaded machine, a
    // TLS handshake) is tried again for a while, one that refuses is not.
    let patience = tokio::time::Instant::now() + START_PATIENCE;
    let again = |e: &RedisError| e.is_timeout() && tokio::time::Instant::now() < patience;
    let mut conn = loop {
        match open_commands(&client, refresh).await {
            Ok(conn) => break conn,
            Err(e) if again(&e) => continue,
            Err(e) => return Err(failed(e)),
        }
    };
    let keys = Keys::new(&config.prefix);
    let id: Arc<str> = node_id().into();
    let mut taken = Vec::new();
    while taken.len() < 2 {
        let took =
            match take_indexes(&mut conn, &keys, &id, config.index_block, config.lease()).await {
                Err(e) if again(&e) => continue,
                took => took.map_err(failed)?,
            };
        match took {
            Taken::Block(range) => taken.push(range),
            Taken::Fenced(wait) => {
                monitor.emit_summarised(
                    "cluster: index blocks fenced",
                    format_args!(
                        "cluster: Redis at {server} began a new epoch (first start, restart or \
                         restore): waiting {} for live nodes to announce their indexes",
                        text::duration(wait)
                    ),
                );
                tokio::time::sleep(wait).await;
            }
        }
    }
    let spare = taken.pop().expect("two blocks");
    let first = taken.pop().expect("two blocks");
    Ok(Joining {
        client,
        server,
        conn,
        keys,
        id,
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

    /// The node this joining becomes, observing `hub`'s table.
    fn into_node(self, hub: Hub) -> Node {
        let lease = self.config.lease();
        let refresh = lease / 3;
        let (connected, _) = watch::channel(true);
        let table = Arc::new(table::Dirty::default());
        hub.observe(table.clone());
        let (tail, _) = broadcast::channel(crate::engine::monitor::MONITOR_BACKLOG);
        Node {
            reply_channel: self.keys.reply(&self.id),
            request_channel: self.keys.requests(&self.id),
            id: self.id,
            hub,
            client: self.client,
            server: self.server,
            keys: self.keys,
            lease,
            refresh,
            table_refresh: Duration::from_secs(self.config.table_refresh_secs),
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
            clock: Clock::default(),
            epoch: Mutex::new(None),
            last_announce: Mutex::new(None),
            table,
            tail,
            tail_until: AtomicU64::new(0),
            tail_wanted: Notify::new(),
            stats: Stats::default(),
            asks: Asks::default(),
            watches: Mutex::new(HashMap::new()),
            retained: OnceLock::new(),
            retained_reload: Notify::new(),
        }
    }

    /// Subscribes, takes the lease and starts the background tasks on
    /// `tasks`: the node is then part of the cluster.
    pub(crate) async fn start(
        self,
        hub: Hub,
        retained: Arc<dyn SharedRetained>,
        stop: CancellationToken,
        tasks: &TaskTracker,
    ) -> anyhow::Result<Arc<Cluster>> {
        let server = self.server.clone();
        let unreachable = |e: &dyn std::fmt::Display| {
            anyhow::anyhow!("cannot join the cluster through Redis at {server}: {e}")
        };
        let (sink, stream) = open_pubsub(&self.client, &self.keys, &self.id, START_PATIENCE)
            .await
            .map_err(|e| unreachable(&e))?;
        let (lease_secs, index_block) = (self.config.lease_secs, self.config.index_block);
        let node = Arc::new(self.into_node(hub));
        let mut conn = node.conn().expect("the connection just made");
        let announced = lease::announce(&node, &mut conn)
            .await
            .map_err(|e| unreachable(&e))?;
        node.announced(&announced);
        node.table.resync();
        // Loaded after the announcement, so that a value kept by another
        // node since is either in what is read or told to this node (its
        // requests wait in the subscription until `listen` runs).
        if !node.load_retained(retained.as_ref()).await {
            node.retained_reload.notify_one();
        }
        let _ = node.retained.set(retained);
        node.monitor.emit(format_args!(
            "cluster: joined as node {} through Redis at {} (lease {}s, indexes in blocks of {})",
            node.id, node.server, lease_secs, index_block
        ));
        tasks.spawn(keep_lease(node.clone(), stop.clone()));
        tasks.spawn(listen(node.clone(), sink, stream, stop.clone()));
        tasks.spawn(refill(node.clone(), stop.clone()));
        tasks.spawn(table::write_table(node.clone(), stop.clone()));
        tasks.spawn(tail::forward(node.clone(), stop.clone()));
        tasks.spawn(tail::keep_tailing(node.clone(), stop.clone()));
        tasks.spawn(retained::keep_retained(node.clone(), stop));
        Ok(Arc::new(Cluster { node }))
    }
}

/// The backplane of a cluster node.
pub(crate) struct Cluster {
    node: Arc<Node>,
}

impl Cluster {
    /// Whether the node is joined now (for `/readyz`): its connections to
    /// Redis are up, its lease was refreshed within the lease, and it has
    /// not left; the reason why not, otherwise.
    pub(crate) fn joined(&self) -> Result<(), String> {
        let node = &self.node;
        if node.left.load(Ordering::Acquire) {
            return Err("left the cluster".into());
        }
        if node.conn().is_none() || !node.subscribed.load(Ordering::Acquire) {
            return Err(format!("cannot reach Redis at {}", node.server));
        }
        let last = *node.last_announce.lock().unwrap_or_else(|e| e.into_inner());
        match last {
            Some(at) if at.elapsed() < node.lease => Ok(()),
            _ => Err(format!(
                "the lease was not refreshed within {}",
                text::duration(node.lease)
            )),
        }
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
    request_channel: String,
    lease: Duration,
    refresh: Duration,
    table_refresh: Duration,
    reply_timeout: Duration,
    lease_value: String,
    /// Indexes taken at a time.
    block: u64,
    /// The command connection; `None` while Redis is unreachable. Cloned
    /// out before use, never held across an `.await`.
    conn: Mutex<Option<MultiplexedConnection>>,
    /// Wakes the lease keeper when a command found the connection broken.
    broken: Notify,
    /// Whether `conn` is up, for the tasks that wait for it.
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
    /// Redis's clock, as last read.
    clock: Clock,
    /// The Redis run this node last announced itself to.
    epoch: Mutex<Option<String>>,
    /// When the lease was last refreshed.
    last_announce: Mutex<Option<std::time::Instant>>,
    /// Rows to write to the node's table in Redis.
    table: Arc<table::Dirty>,
    /// Lines for this node's cluster tails.
    tail: broadcast::Sender<Arc<str>>,
    /// Redis time until which this node publishes its Monitor lines.
    tail_until: AtomicU64,
    /// A first tailer came: ask the nodes now.
    tail_wanted: Notify,
    stats: Stats,
    /// This node's asks waiting for its pages' answers.
    asks: Asks,
    /// Other nodes' `ws wait`s this node reports to, by requester and
    /// request id.
    watches: Mutex<HashMap<(String, u64), CancellationToken>>,
    /// This node's copy of the retained values, set once it has joined.
    retained: OnceLock<Arc<dyn SharedRetained>>,
    /// Load the retained values from Redis again (a new epoch).
    retained_reload: Notify,
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

    /// The waits between reconnections: capped at half a refresh period,
    /// so that a live node announces itself again well within a lease of
    /// Redis coming back.
    fn backoff(&self) -> Backoff {
        let most = (self.refresh / 2).max(BACKOFF_MIN);
        Backoff::new(BACKOFF_MIN.min(most), most)
    }
}

/// Redis's clock as this node reckons it: the time Redis gave at a known
/// instant, plus what this process's monotonic clock says passed since.
/// Deadlines and ages are on this clock, so nodes need no synchronised
/// clocks of their own; a node stopped (SIGSTOP) keeps counting.
#[derive(Default)]
struct Clock {
    at: Mutex<Option<(std::time::Instant, u64)>>,
}

impl Clock {
    /// Redis said `now` (ms) in answer to a request sent at `sent`.
    fn set(&self, sent: tokio::time::Instant, now: u64) {
        let sent = sent.into_std();
        // Redis read its clock about half way through the round trip.
        let half = sent.elapsed() / 2;
        *self.at.lock().unwrap_or_else(|e| e.into_inner()) = Some((sent + half, now));
    }

    /// Redis's time now, in ms.
    fn now_ms(&self) -> u64 {
        match *self.at.lock().unwrap_or_else(|e| e.into_inner()) {
            Some((at, ms)) => ms + u64::try_from(at.elapsed().as_millis()).unwrap_or(u64::MAX),
            None => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                .unwrap_or_default(),
        }
    }
}

/// The cluster's counters for `/metrics`.
#[derive(Default)]
struct Stats {
    round_trips: AtomicU64,
    errors: AtomicU64,
    nodes: AtomicU64,
    lag_ms: AtomicU64,
    late: AtomicU64,
}

impl Stats {
    fn round_trip(&self) {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
    }

    fn error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    fn nodes_seen(&self, n: usize) {
        self.nodes.store(n as u64, Ordering::Relaxed);
    }

    fn lag(&self, ms: u64) {
        self.lag_ms.store(ms, Ordering::Relaxed);
    }

    fn late(&self) {
        self.late.fetch_add(1, Ordering::Relaxed);
    }
}

impl Backplane for Cluster {
    fn hub(&self) -> &Hub {
        &self.node.hub
    }

    fn node(&self) -> Option<Arc<str>> {
        Some(self.node.id.clone())
    }

    fn list<'a>(&'a self, each: &'a mut (dyn FnMut(Listed) + Send)) -> BoxFuture<'a, Vec<String>> {
        Box::pin(self.node.list_into(each))
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
            pipe.del(node.keys.lease(&node.id))
                .ignore()
                .del(node.keys.conns(&node.id))
                .ignore()
                .del(node.keys.names(&node.id))
                .ignore()
                .del(node.keys.blocks(&node.id))
                .ignore()
                .srem(&node.keys.nodes, &*node.id)
                .ignore();
            // Best effort: if this fails the lease simply expires.
            let _ = tokio::time::timeout(node.refresh, pipe.query_async::<()>(&mut conn)).await;
            node.monitor
                .emit(format_args!("cluster: node {} left", node.id));
        })
    }

    fn metrics(&self) -> Vec<BackplaneMetric> {
        let s = &self.node.stats;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        vec![
            BackplaneMetric {
                name: "pagewire_cluster_redis_round_trips_total",
                counter: true,
                help: "Redis round trips that succeeded (scripts, pipelines, publishes).",
                value: get(&s.round_trips),
            },
            BackplaneMetric {
                name: "pagewire_cluster_redis_errors_total",
                counter: true,
                help: "Redis round trips that failed.",
                value: get(&s.errors),
            },
            BackplaneMetric {
                name: "pagewire_cluster_nodes",
                counter: false,
                help: "Live nodes (this one included) at the last routing or listing.",
                value: get(&s.nodes),
            },
            BackplaneMetric {
                name: "pagewire_cluster_pubsub_lag_milliseconds",
                counter: false,
                help: "Time from sending to reading of the last request from another node.",
                value: get(&s.lag_ms),
            },
            BackplaneMetric {
                name: "pagewire_cluster_requests_dropped_late_total",
                counter: true,
                help: "Requests from other nodes dropped because their deadline had passed.",
                value: get(&s.late),
            },
        ]
    }

    fn share_retained(&self, change: serde_json::Value) -> BoxFuture<'_, Vec<String>> {
        Box::pin(self.node.share_retained(change))
    }

    fn tail(&self) -> Option<BoxFuture<'_, ClusterTail>> {
        Some(Box::pin(async move {
            let lines = self.node.tail.subscribe();
            let hello = self.node.ask_to_tail().await;
            (lines, hello)
        }))
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
    /// Milliseconds a command waits for the other nodes to answer; a node
    /// that gets a request later does not act on it.
    #[arg(id = "cluster_reply_timeout_ms", long = "cluster-reply-timeout-ms", value_name = "MS", default_value_t = ClusterConfig::default().reply_timeout_ms, help_heading = "Cluster ([cluster] in the file)")]
    pub(crate) reply_timeout_ms: u64,
    /// Indexes a node takes from Redis at a time.
    #[arg(id = "cluster_index_block", long = "cluster-index-block", value_name = "N", default_value_t = ClusterConfig::default().index_block, help_heading = "Cluster ([cluster] in the file)")]
    pub(crate) index_block: u64,
    /// Seconds between two writes of the traffic counters of a node's
    /// pages to its table in Redis (how stale `ws` may show them).
    #[arg(id = "cluster_table_refresh_secs", long = "cluster-table-refresh-secs", value_name = "SECS", default_value_t = ClusterConfig::default().table_refresh_secs, help_heading = "Cluster ([cluster] in the file)")]
    pub(crate) table_refresh_secs: u64,
    /// A PEM file of the certificate authorities a `rediss://` server is
    /// checked against, instead of the system's.
    #[arg(
        id = "cluster_tls_ca",
        long = "cluster-tls-ca",
        value_name = "FILE",
        help_heading = "Cluster ([cluster] in the file)"
    )]
    pub(crate) tls_ca: Option<std::path::PathBuf>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            prefix: "pagewire".into(),
            lease_secs: 10,
            reply_timeout_ms: 1000,
            index_block: 64,
            table_refresh_secs: 10,
            tls_ca: None,
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
        if !(1..=3600).contains(&self.table_refresh_secs) {
            bail!("cluster.table_refresh_secs must be between 1 and 3600");
        }
        Ok(())
    }

    /// The lease, as a duration.
    pub(crate) fn lease(&self) -> Duration {
        Duration::from_secs(self.lease_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_password_in_messages() {
        assert_eq!(redact("redis://:secret@db:6379/0"), "redis://***@db:6379/0");
        assert_eq!(redact("redis://db:6379"), "redis://db:6379");
    }

    #[test]
    fn the_clock_counts_on_from_what_redis_said() {
        let clock = Clock::default();
        clock.set(tokio::time::Instant::now(), 1_000_000);
        let now = clock.now_ms();
        assert!((1_000_000..1_001_000).contains(&now), "{now}");
    }

    #[test]
    fn node_ids_differ() {
        assert_ne!(node_id(), node_id());
    }
}
