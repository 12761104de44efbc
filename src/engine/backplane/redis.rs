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
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use futures_util::StreamExt as _;
use redis::aio::{MultiplexedConnection, PubSubSink, PubSubStream};
use redis::{AsyncConnectionConfig, Client, RedisError};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::memory;
use super::{Backplane, BoxFuture, Listed, Listing, Message, Outcome, Unknown};
use crate::base::command::Target;
use crate::engine::hub::{ConnInfo, Hub, IndexSource, TargetError};
use crate::engine::monitor::Monitor;

/// Version of the request and reply messages; a node ignores other
/// versions (and is then reported as not answering).
const WIRE_VERSION: u32 = 1;
/// How long connecting to Redis may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one Redis command may take before the connection is deemed
/// broken.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// First and longest wait between reconnection attempts.
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// Raises the index counter to at least the node's highest index (so that a
/// Redis that lost its data cannot hand out an index again), then takes a
/// block. Run as one script so no other node's INCRBY can come between.
const TAKE_INDEXES: &str = "\
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
local floor = tonumber(ARGV[2])
if cur < floor then redis.call('SET', KEYS[1], floor) end
return redis.call('INCRBY', KEYS[1], ARGV[1])";

/// Names of the keys and channels, from the configured prefix.
#[derive(Clone, Debug)]
struct Keys {
    index: String,
    nodes: String,
    cluster: String,
    prefix: String,
}

impl Keys {
    fn new(prefix: &str) -> Self {
        Keys {
            index: format!("{prefix}:index"),
            nodes: format!("{prefix}:nodes"),
            cluster: format!("{prefix}:cluster"),
            prefix: prefix.to_string(),
        }
    }

    fn lease(&self, node: &str) -> String {
        format!("{}:node:{node}", self.prefix)
    }

    fn reply(&self, node: &str) -> String {
        format!("{}:reply:{node}", self.prefix)
    }
}

/// The indexes a node hands out: the block in use and a spare, refilled
/// from Redis by a background task whenever the spare is taken.
pub(crate) struct Blocks {
    state: Mutex<BlockState>,
    /// Wakes the refill task when the spare has been taken.
    low: Notify,
}

struct BlockState {
    current: Range<u64>,
    spare: Option<Range<u64>>,
    /// The highest index this node was ever given.
    highest: u64,
}

impl Blocks {
    fn new(current: Range<u64>, spare: Range<u64>) -> Self {
        let highest = spare.end.max(current.end).saturating_sub(1);
        Blocks {
            state: Mutex::new(BlockState {
                current,
                spare: Some(spare),
                highest,
            }),
            low: Notify::new(),
        }
    }

    fn state(&self) -> MutexGuard<'_, BlockState> {
        // The state is a pair of ranges updated in single assignments; a
        // poisoned lock still guards a consistent value.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn needs_spare(&self) -> bool {
        self.state().spare.is_none()
    }

    fn highest(&self) -> u64 {
        self.state().highest
    }

    fn add(&self, block: Range<u64>) {
        let mut s = self.state();
        s.highest = s.highest.max(block.end.saturating_sub(1));
        if s.current.is_empty() {
            s.current = block;
        } else {
            s.spare = Some(block);
        }
    }
}

impl IndexSource for Blocks {
    fn next_index(&self) -> Option<u64> {
        let mut s = self.state();
        if s.current.is_empty() {
            match s.spare.take() {
                Some(block) => s.current = block,
                None => {
                    drop(s);
                    self.low.notify_one();
                    return None;
                }
            }
        }
        let id = s.current.start;
        s.current.start += 1;
        let refill = s.spare.is_none();
        drop(s);
        if refill {
            self.low.notify_one();
        }
        Some(id)
    }

    fn available(&self) -> bool {
        let s = self.state();
        !s.current.is_empty() || s.spare.is_some()
    }
}

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
    pending: Mutex<HashMap<u64, mpsc::UnboundedSender<Reply>>>,
    next_request: AtomicU64,
    blocks: Arc<Blocks>,
    monitor: Monitor,
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

    fn pending(&self) -> MutexGuard<'_, HashMap<u64, mpsc::UnboundedSender<Reply>>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Handles one pub/sub message: a request from another node, or a
    /// reply to one of ours. Malformed messages are logged and dropped.
    fn on_message(self: &Arc<Self>, msg: &redis::Msg) {
        let channel = msg.get_channel_name();
        let payload = msg.get_payload_bytes();
        if channel == self.keys.cluster {
            let req: Request = match serde_json::from_slice(payload) {
                Ok(r) => r,
                Err(e) => {
                    self.monitor.emit(format_args!(
                        "cluster: ignored a malformed request on {channel}: {e}"
                    ));
                    return;
                }
            };
            if req.v != WIRE_VERSION || *req.from == *self.id {
                return;
            }
            let node = self.clone();
            tokio::spawn(async move { node.answer(req).await });
        } else if channel == self.reply_channel {
            let reply: Reply = match serde_json::from_slice(payload) {
                Ok(r) => r,
                Err(e) => {
                    self.monitor.emit(format_args!(
                        "cluster: ignored a malformed reply on {channel}: {e}"
                    ));
                    return;
                }
            };
            let waiting = self.pending().get(&reply.id).cloned();
            if let Some(tx) = waiting {
                // The requester may have stopped waiting; the reply is late.
                let _ = tx.send(reply);
            }
        }
    }

    /// Runs another node's request on the local hub and publishes the
    /// answer on that node's reply channel.
    async fn answer(&self, req: Request) {
        let answer = self.act(&req.op, &req.from);
        let reply = Reply {
            v: WIRE_VERSION,
            id: req.id,
            node: self.id.to_string(),
            live: self.hub.len(),
            answer,
        };
        let Ok(payload) = serde_json::to_vec(&reply) else {
            return;
        };
        // Without Redis there is no way to answer; the requester reports
        // this node as not answering.
        let Some(mut conn) = self.conn() else {
            return;
        };
        let sent = redis::cmd("PUBLISH")
            .arg(self.keys.reply(&req.from))
            .arg(payload)
            .query_async::<i64>(&mut conn)
            .await;
        if let Err(e) = sent {
            self.failed(&e);
        }
    }

    fn act(&self, op: &Op, from: &str) -> Answer {
        let (what, target, done) = match op {
            Op::List => {
                let conns = self.hub.list().into_iter().map(WireConn::from).collect();
                return Answer::List { conns };
            }
            Op::Send { target, msg } => {
                let t = Target::from(target.clone());
                let what = match msg {
                    Message::Write { .. } => "ws write",
                    Message::Exec { .. } => "ws exec",
                };
                (what, t.clone(), memory::send(&self.hub, &t, msg))
            }
            Op::Close { target } => {
                let t = Target::from(target.clone());
                ("ws close", t.clone(), memory::close(&self.hub, &t))
            }
        };
        match done {
            Ok(o) => {
                // Only nodes whose pages were touched say so; a request by
                // index reaches every node but concerns one.
                if o.reached + o.dropped > 0 {
                    self.monitor.emit(format_args!(
                        "cluster: {what} {target} from node {from} reached {} here",
                        o.reached
                    ));
                }
                Answer::Done {
                    reached: o.reached,
                    dropped: o.dropped,
                }
            }
            Err(TargetError::NoSuchIndex(_)) => Answer::NoIndex,
        }
    }

    /// Asks every other live node to run `op` and gathers their replies,
    /// waiting at most the reply timeout in all.
    async fn fan_out(&self, op: Op) -> Gathered {
        let deadline = tokio::time::Instant::now() + self.reply_timeout;
        let mut g = Gathered::default();
        let conn = self.conn();
        let (Some(mut conn), true) = (conn, self.subscribed.load(Ordering::Acquire)) else {
            g.notes.push(format!(
                "Redis at {} is unreachable: other nodes were not asked",
                self.server
            ));
            return g;
        };
        let members = tokio::time::timeout_at(
            deadline,
            redis::cmd("SMEMBERS")
                .arg(&self.keys.nodes)
                .query_async::<Vec<String>>(&mut conn),
        )
        .await;
        let others: Vec<String> = match self.answered(members) {
            Ok(m) => m.into_iter().filter(|m| **m != *self.id).collect(),
            Err(note) => {
                g.notes.push(note);
                return g;
            }
        };
        if others.is_empty() {
            return g;
        }
        let id = self.next_request.fetch_add(1, Ordering::Relaxed);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let _waiting = Waiting::new(self, id, tx);
        let req = Request {
            v: WIRE_VERSION,
            id,
            from: self.id.to_string(),
            op,
        };
        let Ok(payload) = serde_json::to_vec(&req) else {
            return g;
        };
        let leases: Vec<String> = others.iter().map(|n| self.keys.lease(n)).collect();
        let mut pipe = redis::pipe();
        pipe.cmd("MGET")
            .arg(&leases)
            .cmd("PUBLISH")
            .arg(&self.keys.cluster)
            .arg(payload);
        let published = tokio::time::timeout_at(
            deadline,
            pipe.query_async::<(Vec<Option<String>>, usize)>(&mut conn),
        )
        .await;
        let (held, subscribers) = match self.answered(published) {
            Ok(v) => v,
            Err(note) => {
                g.notes.push(note);
                return g;
            }
        };
        let mut waiting = Vec::new();
        let mut dead = Vec::new();
        for (node, lease) in others.into_iter().zip(held) {
            if lease.is_some() {
                waiting.push(node);
            } else {
                dead.push(node);
            }
        }
        if !dead.is_empty() {
            // The set is only an index of candidates; pruning it is
            // housekeeping that no command needs to wait for.
            let nodes = self.keys.nodes.clone();
            tokio::spawn(async move {
                let _ = redis::cmd("SREM")
                    .arg(nodes)
                    .arg(dead)
                    .query_async::<i64>(&mut conn)
                    .await;
            });
        }
        // PUBLISH counts the connections that heard the request, this
        // node's own among them: once that many others have answered,
        // nobody else can, such as a node that crashed but whose lease has
        // not expired yet.
        let hearers = subscribers.saturating_sub(1);
        let mut heard_all = false;
        while !waiting.is_empty() {
            if g.answers.len() >= hearers {
                heard_all = true;
                break;
            }
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(reply)) => {
                    waiting.retain(|n| *n != reply.node);
                    g.answers.push(reply);
                }
                _ => break,
            }
        }
        for node in waiting {
            g.notes.push(if heard_all {
                format!("node {node} is not listening on Redis (down, or reconnecting)")
            } else {
                format!(
                    "node {node} did not answer within {}",
                    human(self.reply_timeout)
                )
            });
        }
        g
    }

    /// What a Redis round trip of the fan-out gave: its value, or the note
    /// to add when Redis failed (the failure is also recorded) or was slow.
    fn answered<T>(
        &self,
        r: Result<Result<T, RedisError>, tokio::time::error::Elapsed>,
    ) -> Result<T, String> {
        match r {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                self.failed(&e);
                Err(format!(
                    "Redis at {} failed ({e}): other nodes were not asked",
                    self.server
                ))
            }
            Err(_) => Err(format!(
                "Redis at {} did not answer within {}: other nodes were not asked",
                self.server,
                human(self.reply_timeout)
            )),
        }
    }

    /// Sends or closes on the local hub, then on the other nodes unless an
    /// index was found here.
    async fn act_everywhere(
        &self,
        target: &Target,
        local: Result<Outcome, TargetError>,
        op: Op,
    ) -> Result<Outcome, Unknown> {
        let mut out = match local {
            // Indexes are unique across the cluster: no other node has it.
            Ok(o) if matches!(target, Target::Index(_)) => return Ok(o),
            Ok(o) => Some(o),
            Err(_) => None,
        };
        let g = self.fan_out(op).await;
        let mut sum = out.take().unwrap_or_default();
        let mut found = !matches!(target, Target::Index(_));
        for reply in g.answers {
            sum.live += reply.live;
            if let Answer::Done { reached, dropped } = reply.answer {
                sum.reached += reached;
                sum.dropped += dropped;
                found = true;
            }
        }
        sum.notes = g.notes;
        match target {
            Target::Index(i) if !found => Err(Unknown {
                error: TargetError::NoSuchIndex(*i),
                notes: sum.notes,
            }),
            _ => Ok(sum),
        }
    }
}

/// Removes a pending request when its requester stops waiting, however it
/// stops.
struct Waiting<'a> {
    node: &'a Node,
    id: u64,
}

impl<'a> Waiting<'a> {
    fn new(node: &'a Node, id: u64, tx: mpsc::UnboundedSender<Reply>) -> Self {
        node.pending().insert(id, tx);
        Waiting { node, id }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.node.pending().remove(&self.id);
    }
}

#[derive(Default)]
struct Gathered {
    answers: Vec<Reply>,
    notes: Vec<String>,
}

impl Backplane for Cluster {
    fn hub(&self) -> &Hub {
        &self.node.hub
    }

    fn list(&self) -> BoxFuture<'_, Listing> {
        Box::pin(async move {
            let node = &self.node;
            let mut conns = memory::list(&node.hub, Some(&node.id));
            let g = node.fan_out(Op::List).await;
            for reply in g.answers {
                if let Answer::List { conns: theirs } = reply.answer {
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
        msg: &'a Message,
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

/// Keeps the lease alive and the command connection up: refreshes every
/// third of the lease, reconnects with backoff when Redis goes away.
async fn keep_lease(node: Arc<Node>, stop: CancellationToken) {
    let mut backoff = Backoff::default();
    let mut lost = false;
    loop {
        if node.left.load(Ordering::Acquire) {
            return;
        }
        let mut conn = match node.conn() {
            Some(c) => c,
            None => match open_commands(&node.client).await {
                Ok(c) => {
                    node.set_conn(Some(c.clone()));
                    c
                }
                Err(e) => {
                    let wait = backoff.next();
                    node.monitor.emit(format_args!(
                        "cluster: cannot reach Redis at {}: {e}; retrying in {}",
                        node.server,
                        human(wait)
                    ));
                    lost = true;
                    if !sleep_or_stop(wait, &stop).await {
                        return;
                    }
                    continue;
                }
            },
        };
        match refresh_lease(
            &mut conn,
            &node.keys,
            &node.id,
            &node.lease_value,
            node.lease,
        )
        .await
        {
            Ok(()) => {
                if lost {
                    lost = false;
                    node.monitor.emit(format_args!(
                        "cluster: Redis at {} is back; node {} rejoined",
                        node.server, node.id
                    ));
                    // Redis may have restarted empty: lift its counter above
                    // every index this node has used before any is taken.
                    let floor = node.blocks.highest();
                    if let Err(e) = take_indexes(&mut conn, &node.keys, 0, floor).await {
                        node.failed(&e);
                    }
                }
                backoff.reset();
            }
            Err(e) => {
                node.monitor.emit(format_args!(
                    "cluster: lost Redis at {}: {e}; reconnecting",
                    node.server
                ));
                lost = true;
                node.set_conn(None);
                let wait = backoff.next();
                if !sleep_or_stop(wait, &stop).await {
                    return;
                }
                continue;
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(node.refresh) => {}
            _ = node.broken.notified() => {}
        }
    }
}

/// Hears requests and replies on the pub/sub connection; checks it with a
/// PING every third of the lease and resubscribes with backoff when it is
/// lost.
async fn listen(
    node: Arc<Node>,
    mut sink: PubSubSink,
    mut stream: PubSubStream,
    stop: CancellationToken,
) {
    let mut backoff = Backoff::default();
    let mut check = tokio::time::interval(node.refresh);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        node.subscribed.store(true, Ordering::Release);
        let why = loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                msg = stream.next() => match msg {
                    Some(msg) => node.on_message(&msg),
                    None => break "connection closed".to_string(),
                },
                _ = check.tick() => {
                    match tokio::time::timeout(COMMAND_TIMEOUT, sink.ping::<redis::Value>()).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => break e.to_string(),
                        Err(_) => break format!("no answer to PING within {}", human(COMMAND_TIMEOUT)),
                    }
                }
            }
        };
        node.subscribed.store(false, Ordering::Release);
        node.monitor.emit(format_args!(
            "cluster: lost the subscription to Redis at {}: {why}; resubscribing",
            node.server
        ));
        loop {
            match open_pubsub(&node.client, &node.keys, &node.id).await {
                Ok((s, r)) => {
                    (sink, stream) = (s, r);
                    backoff.reset();
                    node.monitor.emit(format_args!(
                        "cluster: subscribed again to Redis at {}",
                        node.server
                    ));
                    break;
                }
                Err(e) => {
                    let wait = backoff.next();
                    node.monitor.emit(format_args!(
                        "cluster: cannot subscribe to Redis at {}: {e}; retrying in {}",
                        node.server,
                        human(wait)
                    ));
                    if !sleep_or_stop(wait, &stop).await {
                        return;
                    }
                }
            }
        }
    }
}

/// Takes a new spare block whenever the last one was put in use.
async fn refill(node: Arc<Node>, stop: CancellationToken) {
    let mut backoff = Backoff::default();
    let mut connected = node.connected.subscribe();
    loop {
        if !node.blocks.needs_spare() {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = node.blocks.low.notified() => continue,
            }
        }
        let Some(mut conn) = node.conn() else {
            // The lease keeper reconnects and logs; wait for it.
            tokio::select! {
                _ = stop.cancelled() => return,
                changed = connected.changed() => if changed.is_err() { return },
            }
            continue;
        };
        match take_indexes(&mut conn, &node.keys, node.block, node.blocks.highest()).await {
            Ok(range) => {
                node.blocks.add(range);
                backoff.reset();
            }
            Err(e) => {
                node.failed(&e);
                let wait = backoff.next();
                node.monitor.emit(format_args!(
                    "cluster: cannot take indexes from Redis at {}: {e}; retrying in {}",
                    node.server,
                    human(wait)
                ));
                if !sleep_or_stop(wait, &stop).await {
                    return;
                }
            }
        }
    }
}

async fn open_commands(client: &Client) -> Result<MultiplexedConnection, RedisError> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(COMMAND_TIMEOUT));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

async fn open_pubsub(
    client: &Client,
    keys: &Keys,
    node: &str,
) -> anyhow::Result<(PubSubSink, PubSubStream)> {
    let pubsub = tokio::time::timeout(CONNECT_TIMEOUT, client.get_async_pubsub())
        .await
        .context("no connection within the timeout")??;
    let (mut sink, stream) = pubsub.split();
    let channels = [keys.cluster.clone(), keys.reply(node)];
    tokio::time::timeout(COMMAND_TIMEOUT, sink.subscribe(&channels[..]))
        .await
        .context("no answer to SUBSCRIBE within the timeout")??;
    Ok((sink, stream))
}

async fn refresh_lease(
    conn: &mut MultiplexedConnection,
    keys: &Keys,
    node: &str,
    value: &str,
    lease: Duration,
) -> Result<(), RedisError> {
    let ms = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX);
    redis::pipe()
        .cmd("SET")
        .arg(keys.lease(node))
        .arg(value)
        .arg("PX")
        .arg(ms)
        .ignore()
        .cmd("SADD")
        .arg(&keys.nodes)
        .arg(node)
        .ignore()
        .query_async::<()>(conn)
        .await
}

/// Takes `block` indexes (none, to only raise the counter to `floor`).
async fn take_indexes(
    conn: &mut MultiplexedConnection,
    keys: &Keys,
    block: u64,
    floor: u64,
) -> Result<Range<u64>, RedisError> {
    let end: u64 = redis::cmd("EVAL")
        .arg(TAKE_INDEXES)
        .arg(1)
        .arg(&keys.index)
        .arg(block)
        .arg(floor)
        .query_async(conn)
        .await?;
    // The counter holds the last index taken; indexes start at 1.
    Ok(end.saturating_sub(block) + 1..end + 1)
}

/// Waits `d` unless `stop` comes first; false when stopping.
async fn sleep_or_stop(d: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        _ = stop.cancelled() => false,
        _ = tokio::time::sleep(d) => true,
    }
}

/// Doubling waits between reconnection attempts, from [`BACKOFF_MIN`] to
/// [`BACKOFF_MAX`].
struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: BACKOFF_MIN }
    }
}

impl Backoff {
    fn next(&mut self) -> Duration {
        let d = self.next;
        self.next = (d * 2).min(BACKOFF_MAX);
        d
    }

    fn reset(&mut self) {
        self.next = BACKOFF_MIN;
    }
}

/// `1s`, `1.5s` or `250ms`.
fn human(d: Duration) -> String {
    let ms = d.as_millis();
    if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else if ms > 1000 {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        format!("{ms}ms")
    }
}

/// A node id: host name, process id and a random part, so that a restarted
/// daemon is a new node and two daemons on one host differ.
fn node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
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
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

// ---- Settings ----

/// `[cluster]`: how a node takes part in a cluster (`--redis`).
#[derive(Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ClusterConfig {
    /// Prefix of every Redis key and channel: daemons with the same Redis
    /// and prefix form one cluster.
    pub(crate) prefix: String,
    /// Seconds a node's lease lives unless refreshed (every third of it); a
    /// node that dies leaves every listing this long after.
    pub(crate) lease_secs: u64,
    /// Milliseconds a command waits for the other nodes to answer.
    pub(crate) reply_timeout_ms: u64,
    /// Indexes a node takes from Redis at a time.
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

#[derive(Serialize, Deserialize, Debug)]
struct Request {
    v: u32,
    id: u64,
    from: String,
    op: Op,
}

#[derive(Serialize, Deserialize, Debug)]
#[serde(tag = "op", rename_all = "lowercase")]
enum Op {
    List,
    Send { target: WireTarget, msg: Message },
    Close { target: WireTarget },
}

#[derive(Serialize, Deserialize, Debug, Clone)]
#[serde(rename_all = "lowercase")]
enum WireTarget {
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
struct Reply {
    v: u32,
    id: u64,
    node: String,
    /// Connections live on the answering node.
    live: usize,
    answer: Answer,
}

#[derive(Serialize, Deserialize, Debug)]
#[serde(tag = "kind", rename_all = "lowercase")]
enum Answer {
    List { conns: Vec<WireConn> },
    Done { reached: usize, dropped: usize },
    NoIndex,
}

#[derive(Serialize, Deserialize, Debug)]
struct WireConn {
    id: u64,
    names: Vec<String>,
    remote: SocketAddr,
    page: String,
    age_ms: u64,
    msgs_in: u64,
    bytes_in: u64,
    msgs_out: u64,
    bytes_out: u64,
}

impl From<ConnInfo> for WireConn {
    fn from(c: ConnInfo) -> Self {
        WireConn {
            id: c.id,
            names: c.names,
            remote: c.remote,
            page: c.page,
            age_ms: u64::try_from(c.age.as_millis()).unwrap_or(u64::MAX),
            msgs_in: c.msgs_in,
            bytes_in: c.bytes_in,
            msgs_out: c.msgs_out,
            bytes_out: c.bytes_out,
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
    fn blocks_hand_out_in_order_and_ask_for_a_spare() {
        let b = Blocks::new(1..3, 10..12);
        assert_eq!(b.highest(), 11);
        assert_eq!(b.next_index(), Some(1));
        assert_eq!(b.next_index(), Some(2));
        assert!(!b.needs_spare());
        // The spare comes into use and a new one is wanted.
        assert_eq!(b.next_index(), Some(10));
        assert!(b.needs_spare());
        assert_eq!(b.next_index(), Some(11));
        assert!(!b.available());
        assert_eq!(b.next_index(), None);
        b.add(20..22);
        assert!(b.available());
        assert_eq!(b.next_index(), Some(20));
        assert_eq!(b.highest(), 21);
    }

    #[test]
    fn messages_round_trip() {
        let req = Request {
            v: WIRE_VERSION,
            id: 7,
            from: "a".into(),
            op: Op::Send {
                target: WireTarget::Name("status".into()),
                msg: Message::Write {
                    text: "VPN \"up\"".into(),
                },
            },
        };
        let json = serde_json::to_string(&req).expect("encodes");
        let back: Request = serde_json::from_str(&json).expect("decodes");
        assert!(matches!(
            back.op,
            Op::Send { target: WireTarget::Name(ref n), msg: Message::Write { ref text } }
                if n == "status" && text == "VPN \"up\""
        ));
        assert!(serde_json::from_str::<Request>("{\"v\":1}").is_err());
    }

    #[test]
    fn urls_lose_their_password_in_messages() {
        assert_eq!(redact("redis://:secret@db:6379/0"), "redis://***@db:6379/0");
        assert_eq!(redact("redis://db:6379"), "redis://db:6379");
        assert_eq!(human(Duration::from_millis(1000)), "1s");
        assert_eq!(human(Duration::from_millis(250)), "250ms");
    }

    #[test]
    fn node_ids_differ() {
        assert_ne!(node_id(), node_id());
    }
}
