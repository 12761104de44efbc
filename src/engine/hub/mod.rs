//! The hub: the table of live WebSocket connections, their names, and
//! delivery of encoded frames to them.
//!
//! The table sits behind one `std::sync::Mutex` that is never held across an
//! `.await`, nor while frames are queued or written: a delivery copies the
//! list of its targets out and lets go. Tasks to wake are woken after every
//! lock is released, so a delivery never runs another task's code while it
//! holds one. A delivery queues without waking; the writing is done by a
//! flush (see [`outbox`]): for its first few milliseconds by the delivery
//! itself, page by page as it queues, when no flush is under way; for the
//! rest by the hub's flushing task.
//!
//! Indexes come from a counter, or from an [`IndexSource`] such as the
//! cluster's blocks or the state directory's counter, and are never reused,
//! so a stale index cannot reach a newer page. The one exception is the
//! same page coming back: a connection that dropped (anything but a close
//! on purpose) is *parked* with its names for the resume grace period, and
//! a page that proves it is that page (a resume token, checked by the
//! caller) gets the index and names back, unless the index is live.
//!
//! What a page must get before anything newer when it registers a name or
//! comes back (retained values, the tail of an action's output) is asked
//! of a plugged-in [`Replay`] while the delivery turn is held, so that no
//! delivery can come between the replay and the page's place in the table.

mod names;
pub(crate) mod outbox;
pub(crate) mod queue;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{
    AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering::Relaxed,
};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::Waker;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::net::TcpStream;
use tokio::sync::broadcast;

pub(crate) use outbox::Next;
pub use outbox::{CloseReason, OutboxLimits};
use outbox::{Outbox, Pushed};

use crate::base::codec::deflate::Twins;
use crate::base::command::{Target, Visibility};
use crate::engine::monitor::Monitor;
use names::Names;

/// Close code for a page whose outgoing queue overflowed.
pub(crate) const CLOSE_SLOW_CONSUMER: u16 = 4001;

/// The hub's share of `[limits]` in the configuration file.
#[derive(clap::Args, serde::Serialize, serde::Deserialize, Debug, Clone)]
#[serde(default)]
pub(crate) struct HubSettings {
    /// Outgoing queue per connection, in bytes (close 4001 when full).
    #[arg(id = "limits_outbox_bytes", long = "limits-outbox-bytes", value_name = "BYTES", default_value_t = HubSettings::default().outbox_bytes, help_heading = "Limits ([limits] in the file)")]
    pub(crate) outbox_bytes: usize,
    /// Outgoing queue per connection, in frames.
    #[arg(id = "limits_outbox_frames", long = "limits-outbox-frames", value_name = "N", default_value_t = HubSettings::default().outbox_frames, help_heading = "Limits ([limits] in the file)")]
    pub(crate) outbox_frames: usize,
    /// Most WebSocket connections in all.
    #[arg(id = "limits_max_connections", long = "limits-max-connections", value_name = "N", default_value_t = HubSettings::default().max_connections, help_heading = "Limits ([limits] in the file)")]
    pub(crate) max_connections: usize,
    /// Most WebSocket connections from one address; default an eighth of
    /// `max_connections`.
    #[arg(
        id = "limits_max_connections_per_ip",
        long = "limits-max-connections-per-ip",
        value_name = "N",
        help_heading = "Limits ([limits] in the file)"
    )]
    pub(crate) max_connections_per_ip: Option<usize>,
    /// Most names one connection may register.
    #[arg(id = "limits_max_names_per_connection", long = "limits-max-names-per-connection", value_name = "N", default_value_t = HubSettings::default().max_names_per_connection, help_heading = "Limits ([limits] in the file)")]
    pub(crate) max_names_per_connection: usize,
}

/// One address may hold at most this share of the connections (1/8) by
/// default, so that no single client can take most of them.
const PER_IP_SHARE: usize = 8;

impl Default for HubSettings {
    fn default() -> Self {
        let hub = HubLimits::default();
        HubSettings {
            outbox_bytes: hub.outbox.max_bytes,
            outbox_frames: hub.outbox.max_frames,
            max_connections: hub.max_connections,
            max_connections_per_ip: None,
            max_names_per_connection: hub.max_names_per_connection,
        }
    }
}

impl HubSettings {
    /// The limits these settings give.
    pub(crate) fn limits(&self) -> HubLimits {
        HubLimits {
            outbox: OutboxLimits {
                max_bytes: self.outbox_bytes,
                max_frames: self.outbox_frames,
            },
            max_connections: self.max_connections,
            max_connections_per_ip: self
                .max_connections_per_ip
                .unwrap_or((self.max_connections / PER_IP_SHARE).max(1)),
            max_names_per_connection: self.max_names_per_connection,
            resume_grace: DEFAULT_RESUME_GRACE,
        }
    }
}

/// `[heartbeat]`: how the hub pings its pages.
#[derive(clap::Args, serde::Serialize, serde::Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct HeartbeatSettings {
    /// Seconds between pings.
    #[arg(id = "heartbeat_interval_secs", long = "heartbeat-interval-secs", value_name = "SECS", default_value_t = HeartbeatSettings::default().interval_secs, help_heading = "Heartbeat ([heartbeat] in the file)")]
    pub(crate) interval_secs: u64,
    /// Seconds of silence after which a page is dropped.
    #[arg(id = "heartbeat_timeout_secs", long = "heartbeat-timeout-secs", value_name = "SECS", default_value_t = HeartbeatSettings::default().timeout_secs, help_heading = "Heartbeat ([heartbeat] in the file)")]
    pub(crate) timeout_secs: u64,
}

impl Default for HeartbeatSettings {
    fn default() -> Self {
        HeartbeatSettings {
            interval_secs: 30,
            timeout_secs: 75,
        }
    }
}

impl HeartbeatSettings {
    /// The ping interval and the silence after which a page is dropped.
    pub(crate) fn check(&self) -> anyhow::Result<(Duration, Duration)> {
        if self.interval_secs == 0 || self.timeout_secs <= self.interval_secs {
            anyhow::bail!(
                "heartbeat: interval_secs must be positive and timeout_secs larger than it"
            );
        }
        Ok((
            Duration::from_secs(self.interval_secs),
            Duration::from_secs(self.timeout_secs),
        ))
    }
}

/// Limits the hub enforces.
#[derive(Clone, Copy, Debug)]
pub struct HubLimits {
    /// Per-connection outgoing queue.
    pub outbox: OutboxLimits,
    /// Most connections in all.
    pub max_connections: usize,
    /// Most connections from one IP address.
    pub max_connections_per_ip: usize,
    /// Most names one connection may register.
    pub max_names_per_connection: usize,
    /// How long a dropped page's index and names wait for it to come back;
    /// zero parks nothing.
    pub resume_grace: Duration,
}

/// Default of [`HubLimits::resume_grace`]: long enough for a reload, a
/// network hiccup or a daemon restart, short enough that a page that is
/// gone for good is soon forgotten.
pub(crate) const DEFAULT_RESUME_GRACE: Duration = Duration::from_secs(300);

impl Default for HubLimits {
    fn default() -> Self {
        HubLimits {
            outbox: OutboxLimits::default(),
            max_connections: 18_000,
            // The configuration's default: one address gets an eighth.
            max_connections_per_ip: 18_000 / 8,
            max_names_per_connection: 32,
            resume_grace: DEFAULT_RESUME_GRACE,
        }
    }
}

/// What a page sent, counted by the connection's own task. What it was
/// sent is counted by its outbox.
#[derive(Default, Debug)]
pub(crate) struct Stats {
    /// Messages received from the page.
    pub(crate) msgs_in: AtomicU64,
    /// Payload bytes received from the page.
    pub(crate) bytes_in: AtomicU64,
}

/// One live connection, shared by the table and the connection's task.
pub struct Conn {
    id: u64,
    remote: SocketAddr,
    /// Shared by every connection from the same page (see [`Table`]).
    page: Arc<str>,
    /// Milliseconds since the hub started when it opened: half an
    /// `Instant`, and every page keeps one.
    opened_ms: u64,
    /// Seconds since the hub started when the peer last sent anything.
    last_seen: AtomicU32,
    /// What the page last reported of itself ([`Visibility::code`]; 0 for
    /// nothing yet). Beside `last_seen`, in what was padding.
    visibility: AtomicU8,
    /// The window (9-15) this side compresses with if the connection
    /// negotiated permessage-deflate, else 0. In padding too.
    deflate_bits: AtomicU8,
    /// Whether the connection is in the hub's table: cleared when it
    /// leaves, so that the name lists need not be searched ([`Named`]).
    /// Changed and read under the table's lock only.
    listed: AtomicBool,
    /// Traffic counters.
    pub(crate) stats: Stats,
    outbox: Outbox,
    totals: Arc<Counters>,
}

impl Conn {
    /// The connection's index.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// The server window bits of the permessage-deflate the connection
    /// negotiated, or 0 without the extension.
    pub fn deflate_bits(&self) -> u8 {
        self.deflate_bits.load(Relaxed)
    }

    /// Takes what the writer should do next; see [`Next`].
    pub(crate) fn next_out(&self, waker: &Waker) -> Next {
        self.outbox.next(waker)
    }

    /// Records that `n` queued bytes, completing `frames` frames, reached
    /// the socket.
    pub(crate) fn written(&self, frames: u64, n: usize) {
        self.outbox.written(frames, n);
        self.totals.written(frames, n);
    }

    /// Records one message of `n` payload bytes from the page.
    pub(crate) fn received(&self, n: usize) {
        for (mine, all, v) in [
            (&self.stats.msgs_in, &self.totals.msgs_in, 1),
            (&self.stats.bytes_in, &self.totals.bytes_in, n as u64),
        ] {
            mine.fetch_add(v, Relaxed);
            all.fetch_add(v, Relaxed);
        }
    }

    /// Lets deliveries write to `socket` themselves (a flush, see
    /// [`outbox`]) instead of waking the connection's task. The task must
    /// call [`Conn::detach_socket`] before it lets the socket go.
    pub(crate) fn attach_socket(&self, socket: Arc<TcpStream>) {
        self.outbox.attach(socket);
    }

    /// Ends flushes to the socket given to [`Conn::attach_socket`].
    pub(crate) fn detach_socket(&self) {
        self.outbox.detach();
    }

    /// Writes what is queued to the socket, unless the task is writing;
    /// wakes the task for whatever the socket would not take. Returns the
    /// frames and bytes written, for the daemon's totals.
    fn flush(&self) -> (u64, usize) {
        let flushed = self.outbox.flush();
        if let Some(w) = flushed.wake {
            w.wake();
        }
        (flushed.frames, flushed.bytes)
    }
}

/// A snapshot of one connection, for the `ws` listing.
#[derive(Clone, Debug)]
pub(crate) struct ConnInfo {
    /// The index.
    pub(crate) id: u64,
    /// Registered names, in registration order.
    pub(crate) names: Vec<String>,
    /// The peer's address.
    pub(crate) remote: SocketAddr,
    /// The page it came from.
    pub(crate) page: String,
    /// Time since it opened.
    pub(crate) age: Duration,
    /// Time since the page last sent anything (a pong included).
    pub(crate) idle: Duration,
    /// What the page last reported of its visibility, if anything.
    pub(crate) visibility: Option<Visibility>,
    /// Messages in.
    pub(crate) msgs_in: u64,
    /// Bytes in.
    pub(crate) bytes_in: u64,
    /// Messages out.
    pub(crate) msgs_out: u64,
    /// Bytes out.
    pub(crate) bytes_out: u64,
}

/// Daemon-wide counters for `/metrics`.
#[derive(Default, Debug)]
pub(crate) struct Counters {
    /// Connections accepted.
    pub(crate) opened: AtomicU64,
    /// Connections gone.
    pub(crate) closed: AtomicU64,
    /// Connections closed because their queue overflowed.
    pub(crate) slow_consumers: AtomicU64,
    /// WebSocket upgrades refused by a connection limit.
    pub(crate) refused: AtomicU64,
    /// Messages received from pages.
    pub(crate) msgs_in: AtomicU64,
    /// Payload bytes received from pages.
    pub(crate) bytes_in: AtomicU64,
    /// Frames written to pages.
    pub(crate) msgs_out: AtomicU64,
    /// Bytes written to pages.
    pub(crate) bytes_out: AtomicU64,
    /// Frames queued for delivery, one per connection reached.
    pub(crate) frames_delivered: AtomicU64,
}

impl Counters {
    fn written(&self, frames: u64, n: usize) {
        self.msgs_out.fetch_add(frames, Relaxed);
        self.bytes_out.fetch_add(n as u64, Relaxed);
    }
}

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OpenError {
    /// The daemon holds its maximum number of connections.
    #[error("too many connections ({0} at most)")]
    TooMany(usize),
    /// This address holds its maximum number of connections.
    #[error("too many connections from {ip} ({max} at most)")]
    TooManyFromAddress {
        /// The address.
        ip: IpAddr,
        /// The limit.
        max: usize,
    },
    /// The index source has no index to give right now.
    #[error("no connection index available right now; try again shortly")]
    NoIndex,
}

impl OpenError {
    /// The refusal without its figures, for a Monitor kind.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            OpenError::TooMany(_) => "too many connections",
            OpenError::TooManyFromAddress { .. } => "too many connections from one address",
            OpenError::NoIndex => "no connection index available",
        }
    }
}

/// Where connection indexes come from when they must be unique beyond this
/// daemon (a cluster). Asked once per opened connection, so it must answer
/// from memory, without I/O.
pub(crate) trait IndexSource: Send + Sync {
    /// A fresh index, never handed out before anywhere; `None` when none can
    /// be given now (the connection is then refused).
    fn next_index(&self) -> Option<u64>;

    /// Whether an index could be given now, checked before a handshake so
    /// that a page is refused with an answer rather than a dropped socket.
    fn available(&self) -> bool {
        true
    }
}

/// Told which connections opened, changed their names or went, so that a
/// copy of the table can be kept elsewhere (the cluster's table in Redis).
/// `changed` is called under the table lock and must only record; `wake`
/// is called after the lock is released, when a connection opened or
/// registered a name (a removal waits for the observer's own tick).
pub(crate) trait ConnObserver: Send + Sync {
    /// Connection `id` opened, registered a name, or left the table.
    fn changed(&self, id: u64);
    /// Something was recorded that should be acted on soon.
    fn wake(&self);
}

/// The hub's index source: its own counter unless one is plugged in.
enum Indexes {
    Counter(AtomicU64),
    Source(Arc<dyn IndexSource>),
}

/// What a page must be sent before anything newer: asked by the hub while
/// it holds the delivery turn (so it must not deliver, nor take the hub's
/// locks), and appended to `out` in the order the page must get them.
pub(crate) trait Replay: Send + Sync {
    /// For a page that has just registered `name` (not for one that
    /// registers a name it holds already).
    fn registered(&self, name: &str, out: &mut Vec<Bytes>);

    /// For a page that has just opened as index `id`; `resumed` when it
    /// came back to an index it had, before its names are replayed.
    fn opened(&self, id: u64, resumed: bool, out: &mut Vec<Bytes>);

    /// Whether [`Replay::opened`] might give a fresh page anything (asked
    /// without the turn, so that most opens need not take it).
    fn for_fresh_pages(&self) -> bool;
}

/// A dropped page's index, waiting for it to come back.
struct Parked {
    names: Names,
    /// Hub seconds ([`Hub::now_secs`]) until which it may come back.
    until: u32,
}

/// Indexes handed out by the daemon that ran on the same state directory
/// before this one: a page that held one may come back to it within the
/// grace period after this daemon started.
struct Previous {
    /// Every index the previous daemon may have handed out is below this.
    below: u64,
    /// Hub seconds until which they may come back.
    until: u32,
    /// Those that came back already (each only once).
    claimed: HashSet<u64>,
}

/// Why a target could not be resolved.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum TargetError {
    /// No live connection has this index.
    #[error("no connection with index {0}; 'ws' lists the current ones")]
    NoSuchIndex(u64),
}

/// Why a name could not be registered.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum RegisterError {
    /// The connection is gone.
    #[error("connection {0} is closed")]
    Gone(u64),
    /// The connection has registered its maximum number of names.
    #[error("too many names on one connection ({0} at most)")]
    TooManyNames(usize),
}

struct Entry {
    conn: Arc<Conn>,
    names: Names,
}

impl Entry {
    /// A snapshot of the connection, for a listing; `now_ms` is the hub's
    /// clock (see [`Conn`]'s opening time), `now` the same in seconds.
    fn info(&self, now_ms: u64, now: u32) -> ConnInfo {
        let c = &self.conn;
        let (msgs_out, bytes_out) = c.outbox.written_so_far();
        // Whole hub seconds: never shown as longer than the age.
        let idle = now.saturating_sub(c.last_seen.load(Relaxed));
        let age = Duration::from_millis(now_ms.saturating_sub(c.opened_ms));
        ConnInfo {
            id: c.id,
            names: self.names.iter().map(|n| n.to_string()).collect(),
            remote: c.remote,
            page: c.page.to_string(),
            age,
            idle: Duration::from_secs(idle.into()).min(age),
            visibility: Visibility::from_code(c.visibility.load(Relaxed)),
            msgs_in: c.stats.msgs_in.load(Relaxed),
            bytes_in: c.stats.bytes_in.load(Relaxed),
            msgs_out,
            bytes_out,
        }
    }
}

/// The connections that registered one name, first registered first.
///
/// A connection that leaves is not searched for in the list: it is marked
/// as out of the table ([`Conn`]'s `listed`) and counted, and the list
/// drops such connections once they are half of it. Thousands of pages
/// that share a name then leave (a `ws close *`, a network drop) in time
/// linear in their number, where removing each from the list at once
/// would be quadratic, all under the table's lock.
#[derive(Default)]
struct Named {
    /// Connections that registered the name, some perhaps gone since.
    conns: Vec<Arc<Conn>>,
    /// How many of `conns` have left the table.
    left: usize,
}

impl Named {
    /// The connections still in the table.
    fn live(&self) -> impl Iterator<Item = &Arc<Conn>> {
        self.conns.iter().filter(|c| c.listed.load(Relaxed))
    }

    /// How many connections in the table have the name.
    fn len(&self) -> usize {
        self.conns.len() - self.left
    }

    /// Counts one more connection as gone (its `listed` already cleared),
    /// dropping the gone ones once they are half the list. False when no
    /// connection is left.
    fn one_left(&mut self) -> bool {
        self.left += 1;
        if self.left * 2 > self.conns.len() {
            self.conns.retain(|c| c.listed.load(Relaxed));
            self.left = 0;
        }
        !self.conns.is_empty()
    }
}

#[derive(Default)]
struct Table {
    conns: BTreeMap<u64, Entry>,
    /// Each name once: a connection's list of names shares these strings.
    names: HashMap<Arc<str>, Named>,
    per_ip: HashMap<IpAddr, usize>,
    /// Dropped pages within their grace period, by index.
    parked: HashMap<u64, Parked>,
    previous: Option<Previous>,
    observer: Option<Arc<dyn ConnObserver>>,
    /// Each page string once, shared by the connections from that page
    /// (thousands of screens show the same dashboard), with how many
    /// connections in the table have it.
    pages: HashMap<Arc<str>, usize>,
}

impl Table {
    /// Tells the observer, if any, that `id` changed.
    fn changed(&self, id: u64) -> Option<Arc<dyn ConnObserver>> {
        let o = self.observer.as_ref()?;
        o.changed(id);
        Some(o.clone())
    }

    /// The one shared copy of a page string, counted once more.
    fn share_page(&mut self, page: &str) -> Arc<str> {
        let p: Arc<str> = match self.pages.get_key_value(page) {
            Some((p, _)) => p.clone(),
            None => page.into(),
        };
        *self.pages.entry(p.clone()).or_insert(0) += 1;
        p
    }

    /// Adds `conn` to the list of the connections that registered `name`.
    fn add_to_name(&mut self, name: &Arc<str>, conn: &Arc<Conn>) {
        self.names
            .entry(name.clone())
            .or_default()
            .conns
            .push(conn.clone());
    }

    /// Puts a new connection and its names in the table: the inverse of
    /// `remove`.
    fn insert(&mut self, conn: &Arc<Conn>, names: Names) {
        conn.listed.store(true, Relaxed);
        for name in names.iter() {
            self.add_to_name(name, conn);
        }
        *self.per_ip.entry(conn.remote.ip()).or_insert(0) += 1;
        self.conns.insert(
            conn.id,
            Entry {
                conn: conn.clone(),
                names,
            },
        );
    }

    /// Removes a connection and its names; returns its entry if it was here.
    fn remove(&mut self, id: u64) -> Option<Entry> {
        let entry = self.conns.remove(&id)?;
        entry.conn.listed.store(false, Relaxed);
        self.changed(id);
        for name in entry.names.iter() {
            if let Some(named) = self.names.get_mut(name) {
                if !named.one_left() {
                    self.names.remove(name);
                }
            }
        }
        // Counted, not judged by the `Arc`'s count: a closing connection
        // leaves the table before its task lets the string go.
        if let Some(n) = self.pages.get_mut(&entry.conn.page) {
            *n -= 1;
            if *n == 0 {
                self.pages.remove(&entry.conn.page);
            }
        }
        let ip = entry.conn.remote.ip();
        if let Some(n) = self.per_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&ip);
            }
        }
        Some(entry)
    }

    /// Takes back the index `id` for a page coming back to it, with the
    /// names it had (none known for a page of the previous daemon); `None`
    /// when it is live, or not waiting for anyone.
    fn unpark(&mut self, id: u64, now: u32) -> Option<Names> {
        if self.conns.contains_key(&id) {
            return None;
        }
        if let Some(p) = self.parked.remove(&id) {
            return (p.until >= now).then_some(p.names);
        }
        let prev = self.previous.as_mut()?;
        if id < prev.below && prev.until >= now && prev.claimed.insert(id) {
            return Some(Names::default());
        }
        None
    }
}

/// Whether a connection closed with `code` may come back to its index: not
/// after a close on purpose (the page's own 1000, the operator's `ws
/// close`) nor after too many names (4002, which ws.js does not retry).
fn resumable(code: u16) -> bool {
    !matches!(code, 1000 | 4002)
}

struct Shared {
    indexes: Indexes,
    table: Mutex<Table>,
    /// Held while a delivery queues its frame; see [`Hub::deliver`].
    delivering: Mutex<()>,
    /// Connections a delivery left for the flushing task.
    flushes: Mutex<FlushQueue>,
    limits: HubLimits,
    epoch: Instant,
    counters: Arc<Counters>,
    monitor: Monitor,
    /// What pages get first when they register or come back.
    replay: OnceLock<Arc<dyn Replay>>,
    /// Woken when a name is registered, or a connection holding names
    /// leaves: what `ws wait` waits on.
    names_changed: tokio::sync::Notify,
    /// Asks in flight ([`Hub::asking`]): while there is none, a connection
    /// leaving wakes nobody.
    asking: AtomicUsize,
    /// Woken when connections left the table while an ask was in flight:
    /// what an ask waits on besides its answers.
    conns_left: tokio::sync::Notify,
    /// Opened, registered and closed connections, for whoever watches the
    /// table (the admin console); sent only while someone does.
    changes: broadcast::Sender<TableChange>,
    /// Set once any connection negotiated permessage-deflate: until then a
    /// delivery does not look at its targets' extensions at all.
    deflating: AtomicBool,
}

/// A change to the connection table, told to [`Hub::changes`] watchers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TableChange {
    /// A connection opened (its index).
    Opened(u64),
    /// A connection registered a name.
    Registered(u64),
    /// A connection left the table.
    Closed(u64),
}

/// Changes a slow watcher may fall behind by before it misses some (it is
/// then told how many, and reads the table again).
const CHANGES_BACKLOG: usize = 256;

/// An ask in flight, counted by the hub; see [`Hub::asking`].
pub(crate) struct Asking<'a>(&'a Hub);

impl Drop for Asking<'_> {
    fn drop(&mut self) {
        self.0.shared.asking.fetch_sub(1, Relaxed);
    }
}

/// What a delivery did with its frame for one target connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reach {
    /// Queued (or written) for it.
    Queued,
    /// Its queue overflowed: it is being closed as a slow consumer.
    Overflowed,
    /// It was closing already; nothing was queued.
    Closing,
}

/// A cheap-to-clone handle on the connection table.
#[derive(Clone)]
pub struct Hub {
    shared: Arc<Shared>,
}

/// Outcome of a delivery: how many connections got the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Delivered {
    /// Connections the frame was written or queued for.
    pub(crate) reached: usize,
    /// Connections that matched but were closed as slow consumers instead.
    pub(crate) dropped: usize,
}

impl Hub {
    /// An empty hub that numbers connections from 1 with its own counter.
    pub fn new(limits: HubLimits, monitor: Monitor) -> Self {
        Self::with_indexes(limits, monitor, Indexes::Counter(AtomicU64::new(1)))
    }

    /// An empty hub whose indexes come from `source`.
    pub(crate) fn with_index_source(
        limits: HubLimits,
        monitor: Monitor,
        source: Arc<dyn IndexSource>,
    ) -> Self {
        Self::with_indexes(limits, monitor, Indexes::Source(source))
    }

    fn with_indexes(limits: HubLimits, monitor: Monitor, indexes: Indexes) -> Self {
        Hub {
            shared: Arc::new(Shared {
                indexes,
                table: Mutex::new(Table::default()),
                delivering: Mutex::new(()),
                flushes: Mutex::default(),
                limits,
                epoch: Instant::now(),
                counters: Arc::default(),
                monitor,
                replay: OnceLock::new(),
                names_changed: tokio::sync::Notify::new(),
                asking: AtomicUsize::new(0),
                conns_left: tokio::sync::Notify::new(),
                changes: broadcast::channel(CHANGES_BACKLOG).0,
                deflating: AtomicBool::new(false),
            }),
        }
    }

    /// Plugs in what pages get first (once; later calls are ignored).
    pub(crate) fn set_replay(&self, replay: Arc<dyn Replay>) {
        let _ = self.shared.replay.set(replay);
    }

    /// Lets the pages of the previous daemon on the same state directory
    /// (indexes below `below`) come back within `left` from now.
    pub(crate) fn set_previous(&self, below: u64, left: Duration) {
        let until = self
            .now_secs()
            .saturating_add(u32::try_from(left.as_secs()).unwrap_or(u32::MAX));
        self.table().previous = Some(Previous {
            below,
            until,
            claimed: HashSet::new(),
        });
    }

    fn turn(&self) -> MutexGuard<'_, ()> {
        self.shared
            .delivering
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        // Every table update is completed before anything that could panic,
        // so a poisoned lock still guards a consistent table.
        self.shared.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The limits in force.
    pub(crate) fn limits(&self) -> &HubLimits {
        &self.shared.limits
    }

    /// Daemon-wide counters.
    pub(crate) fn counters(&self) -> &Counters {
        &self.shared.counters
    }

    /// The Monitor this hub reports to.
    pub(crate) fn monitor(&self) -> &Monitor {
        &self.shared.monitor
    }

    /// Table changes from now on. Watching costs the hub one channel send
    /// per open, registration and close; nothing per delivered frame.
    pub(crate) fn changes(&self) -> broadcast::Receiver<TableChange> {
        self.shared.changes.subscribe()
    }

    /// Tells the watchers of [`Hub::changes`], if any; called with the table
    /// unlocked, since it may wake them.
    fn changed(&self, change: TableChange) {
        if self.shared.changes.receiver_count() > 0 {
            let _ = self.shared.changes.send(change);
        }
    }

    fn now_secs(&self) -> u32 {
        u32::try_from(self.shared.epoch.elapsed().as_secs()).unwrap_or(u32::MAX)
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.shared.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Checks the connection limits for `ip` before a handshake completes.
    pub(crate) fn admit(&self, ip: IpAddr) -> Result<(), OpenError> {
        if let Indexes::Source(source) = &self.shared.indexes {
            if !source.available() {
                self.shared.counters.refused.fetch_add(1, Relaxed);
                return Err(OpenError::NoIndex);
            }
        }
        let t = self.table();
        self.check_limits(&t, ip)
    }

    fn check_limits(&self, t: &Table, ip: IpAddr) -> Result<(), OpenError> {
        let limits = &self.shared.limits;
        if t.conns.len() >= limits.max_connections {
            return Err(OpenError::TooMany(limits.max_connections));
        }
        if t.per_ip.get(&ip).copied().unwrap_or(0) >= limits.max_connections_per_ip {
            return Err(OpenError::TooManyFromAddress {
                ip,
                max: limits.max_connections_per_ip,
            });
        }
        Ok(())
    }

    /// Adds a connection with a fresh index.
    pub fn open(&self, remote: SocketAddr, page: &str) -> Result<Arc<Conn>, OpenError> {
        self.open_greeted(remote, page, |_, _| None)
    }

    /// [`Hub::open`], with a first frame (made from the new index) queued
    /// before the connection can be found: nothing delivered to it, not
    /// even a Monitor line about its own opening, can overtake it.
    pub(crate) fn open_greeted(
        &self,
        remote: SocketAddr,
        page: &str,
        greeting: impl FnOnce(u64, bool) -> Option<Bytes>,
    ) -> Result<Arc<Conn>, OpenError> {
        self.open_as(remote, page, None, greeting)
    }

    /// [`Hub::open_greeted`] for a page that asks for index `wanted` back
    /// (its resume token, checked by the caller, names it): it gets it with
    /// the names it had when the index is parked (or was the previous
    /// daemon's) and not live, else a fresh one. `greeting` is told which,
    /// and what [`Replay`] has for the page follows it.
    pub(crate) fn open_as(
        &self,
        remote: SocketAddr,
        page: &str,
        wanted: Option<u64>,
        greeting: impl FnOnce(u64, bool) -> Option<Bytes>,
    ) -> Result<Arc<Conn>, OpenError> {
        let from_source = self.index_from_source()?;
        let replay = self.shared.replay.get();
        // The turn orders the replay before any newer delivery; a fresh page
        // with nothing to replay does without it.
        let needs_turn = replay.is_some_and(|r| wanted.is_some() || r.for_fresh_pages());
        let turn = needs_turn.then(|| self.turn());
        let mut t = self.table();
        if let Err(e) = self.check_limits(&t, remote.ip()) {
            self.shared.counters.refused.fetch_add(1, Relaxed);
            return Err(e);
        }
        let now = self.now_secs();
        let (id, names, resumed) = self.take_index(&mut t, wanted, from_source, now);
        let shared_page = t.share_page(page);
        let conn = Arc::new(Conn {
            id,
            remote,
            page: shared_page,
            opened_ms: self.now_ms(),
            last_seen: AtomicU32::new(now),
            visibility: AtomicU8::new(0),
            deflate_bits: AtomicU8::new(0),
            listed: AtomicBool::new(false),
            stats: Stats::default(),
            outbox: Outbox::default(),
            totals: self.shared.counters.clone(),
        });
        if let Some(first) = greeting(id, resumed) {
            // A fresh outbox is empty and open, so this always queues.
            let _ = conn.outbox.push(&first, self.shared.limits.outbox);
        }
        let replayed_names: Vec<Arc<str>> = if turn.is_some() {
            names.iter().cloned().collect()
        } else {
            Vec::new()
        };
        let came_back_named = !names.is_empty();
        t.insert(&conn, names);
        let observer = t.changed(id);
        drop(t);
        // `ws register` of a name the page holds again changes nothing, so
        // those waiting for the name learn it here.
        if came_back_named {
            self.shared.names_changed.notify_waiters();
        }
        if let (Some(turn), Some(replay)) = (turn, replay) {
            let mut frames = Vec::new();
            replay.opened(id, resumed, &mut frames);
            for name in &replayed_names {
                replay.registered(name, &mut frames);
            }
            self.queue_replay(&conn, &frames, turn);
        }
        if let Some(o) = observer {
            o.wake();
        }
        self.shared.counters.opened.fetch_add(1, Relaxed);
        self.announce_open(&conn, resumed, &replayed_names);
        self.changed(TableChange::Opened(id));
        Ok(conn)
    }

    /// The index of a page opening, under the table's lock: `wanted`, with
    /// the names it had, when the page may come back to it; else
    /// `from_source`, or the hub's own counter's next. Returns whether the
    /// page came back, too.
    fn take_index(
        &self,
        t: &mut Table,
        wanted: Option<u64>,
        from_source: u64,
        now: u32,
    ) -> (u64, Names, bool) {
        if let Some((w, names)) = wanted.and_then(|w| t.unpark(w, now).map(|names| (w, names))) {
            return (w, names, true);
        }
        let id = match &self.shared.indexes {
            Indexes::Counter(next) => next.fetch_add(1, Relaxed),
            Indexes::Source(_) => from_source,
        };
        (id, Names::default(), false)
    }

    /// The next index from a plugged-in source, or 0 when the hub counts
    /// its own (taken under the table's lock in `open_as`). The source is
    /// asked before the table is locked, since it may wake its refill task;
    /// an index it gives to a connection refused (or resumed) is simply
    /// never used, which keeps indexes unique.
    fn index_from_source(&self) -> Result<u64, OpenError> {
        match &self.shared.indexes {
            Indexes::Counter(_) => Ok(0),
            Indexes::Source(source) => source.next_index().ok_or_else(|| {
                self.shared.counters.refused.fetch_add(1, Relaxed);
                OpenError::NoIndex
            }),
        }
    }

    /// The Monitor's line for a page that opened, or came back to its index
    /// with `names`.
    fn announce_open(&self, conn: &Conn, resumed: bool, names: &[Arc<str>]) {
        let (id, remote) = (conn.id, conn.remote);
        let page = if conn.page.is_empty() {
            "-"
        } else {
            &conn.page
        };
        if resumed {
            self.monitor().emit(format_args!(
                "ws {id} came back from {remote} page {page}{}",
                NamesNote(names)
            ));
        } else {
            self.monitor()
                .emit(format_args!("ws {id} opened from {remote} page {page}"));
        }
    }

    /// Queues `frames` for `conn`, still under the delivery `turn`; a page
    /// whose queue they overflow is closed as a slow consumer.
    fn queue_replay(&self, conn: &Arc<Conn>, frames: &[Bytes], turn: MutexGuard<'_, ()>) {
        let limits = self.shared.limits.outbox;
        let mut wake = None;
        let mut flush = false;
        let mut overflow = false;
        for frame in frames {
            match conn.outbox.push(frame, limits) {
                Pushed::Queued(w) => wake = wake.or(w),
                Pushed::ToFlush => flush = true,
                // Only a delivery pushes and flushes at once.
                Pushed::Flushed(done) => wake = wake.or(done.wake),
                Pushed::Overflow(w) => {
                    wake = wake.or(w);
                    overflow = true;
                    break;
                }
                Pushed::Closed => break,
            }
        }
        drop(turn);
        if overflow {
            let _ = self.drop_slow(vec![conn.id]);
        }
        if let Some(w) = wake {
            w.wake();
        }
        if flush {
            self.flush(vec![conn.clone()]);
        }
    }

    /// Records that `conn` negotiated permessage-deflate with a server
    /// window of `window_bits` (9-15): deliveries from now on send it the
    /// compressed twin of a frame worth compressing. Frames queued before
    /// (its greeting) go plain, which the extension allows.
    pub fn set_deflate(&self, conn: &Conn, window_bits: u8) {
        conn.deflate_bits.store(window_bits, Relaxed);
        if window_bits != 0 {
            self.shared.deflating.store(true, Relaxed);
        }
    }

    /// Records that the peer of `conn` sent something (for heartbeats).
    pub(crate) fn seen(&self, conn: &Conn) {
        conn.last_seen.store(self.now_secs(), Relaxed);
    }

    /// Registers `name` on connection `id`, and queues for it what the
    /// [`Replay`] has for the name, before any newer delivery. Registering a
    /// name twice is harmless, and replays nothing the second time.
    pub(crate) fn register(&self, id: u64, name: &str) -> Result<(), RegisterError> {
        let max = self.shared.limits.max_names_per_connection;
        let replay = self.shared.replay.get();
        let turn = replay.map(|_| self.turn());
        let mut guard = self.table();
        let t = &mut *guard;
        let Some(entry) = t.conns.get_mut(&id) else {
            return Err(RegisterError::Gone(id));
        };
        if entry.names.iter().any(|n| &**n == name) {
            return Ok(());
        }
        if entry.names.len() >= max {
            return Err(RegisterError::TooManyNames(max));
        }
        // The name's string is the index's own, when others have it too.
        let name: Arc<str> = match t.names.get_key_value(name) {
            Some((shared, _)) => shared.clone(),
            None => name.into(),
        };
        entry.names.push(name.clone());
        let conn = entry.conn.clone();
        t.add_to_name(&name, &conn);
        let observer = t.changed(id);
        drop(guard);
        if let (Some(turn), Some(replay)) = (turn, replay) {
            let mut frames = Vec::new();
            replay.registered(&name, &mut frames);
            self.queue_replay(&conn, &frames, turn);
        }
        if let Some(o) = observer {
            o.wake();
        }
        self.shared.names_changed.notify_waiters();
        self.monitor()
            .emit(format_args!("ws {id} registered '{name}'"));
        self.changed(TableChange::Registered(id));
        Ok(())
    }

    /// Records what page `id` reported of its visibility; false if it is
    /// not live.
    pub(crate) fn set_visibility(&self, id: u64, state: Visibility) -> bool {
        let t = self.table();
        let Some(entry) = t.conns.get(&id) else {
            return false;
        };
        entry.conn.visibility.store(state.code(), Relaxed);
        // A copy of the table elsewhere (the cluster's) shows it soon: a
        // page reports only a change, so this is rare.
        let observer = t.changed(id);
        drop(t);
        if let Some(o) = observer {
            o.wake();
        }
        true
    }

    /// Whether index `id` is live, or parked waiting for its page to come
    /// back.
    pub(crate) fn is_live_or_parked(&self, id: u64) -> bool {
        let t = self.table();
        t.conns.contains_key(&id)
            || t.parked
                .get(&id)
                .is_some_and(|p| p.until >= self.now_secs())
    }

    /// How many live connections registered `name`.
    pub(crate) fn named(&self, name: &str) -> usize {
        self.table().names.get(name).map_or(0, Named::len)
    }

    /// Resolves once a name is registered or a connection holding names
    /// leaves, from the moment it is enabled (`Notified::enable`) or first
    /// polled: count, enable, count again, then await.
    pub(crate) fn names_changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.shared.names_changed.notified()
    }

    /// Wakes those waiting on [`Hub::names_changed`] when `had_names`.
    fn named_left(&self, had_names: bool) {
        if had_names {
            self.shared.names_changed.notify_waiters();
        }
    }

    /// Counts an ask in flight until the guard is dropped: while one is,
    /// connections leaving the table wake [`Hub::conns_left`].
    pub(crate) fn asking(&self) -> Asking<'_> {
        self.shared.asking.fetch_add(1, Relaxed);
        Asking(self)
    }

    /// Resolves once connections left the table while an ask was in
    /// flight, from the moment it is enabled (`Notified::enable`) or first
    /// polled: enable, look with [`Hub::keep_listed`], then await.
    pub(crate) fn conns_left(&self) -> tokio::sync::futures::Notified<'_> {
        self.shared.conns_left.notified()
    }

    /// Wakes the asks in flight, if any, after connections left the
    /// table: one load per departure (or batch of them) otherwise.
    fn left_table(&self) {
        if self.shared.asking.load(Relaxed) > 0 {
            self.shared.conns_left.notify_waiters();
        }
    }

    /// Keeps in `conns` those still in the table, and tells `gone` the
    /// index of each of the others. A connection is itself, not its index:
    /// a page that came back to the index of one of them is another
    /// connection, and is not kept.
    pub(crate) fn keep_listed(&self, conns: &mut Vec<Arc<Conn>>, mut gone: impl FnMut(u64)) {
        // Under the lock that `leave` changes `listed` under, so that a
        // departure is seen however it was told.
        let _t = self.table();
        conns.retain(|c| {
            let listed = c.listed.load(Relaxed);
            if !listed {
                gone(c.id);
            }
            listed
        });
    }

    /// Number of live connections.
    pub(crate) fn len(&self) -> usize {
        self.table().conns.len()
    }

    /// Whether no connection is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether connection `id` is still in the table (not closed or
    /// closing).
    pub(crate) fn is_live(&self, id: u64) -> bool {
        self.table().conns.contains_key(&id)
    }

    /// Number of distinct registered names.
    pub(crate) fn name_count(&self) -> usize {
        self.table().names.len()
    }

    /// A snapshot of every connection, by index.
    pub(crate) fn list(&self) -> Vec<ConnInfo> {
        let now = self.now_secs();
        let t = self.table();
        let now_ms = self.now_ms();
        t.conns.values().map(|e| e.info(now_ms, now)).collect()
    }

    /// Snapshots of the connections `ids` that are live, by index.
    pub(crate) fn infos(&self, ids: &[u64]) -> Vec<ConnInfo> {
        let now = self.now_secs();
        let t = self.table();
        let now_ms = self.now_ms();
        ids.iter()
            .filter_map(|id| t.conns.get(id).map(|e| e.info(now_ms, now)))
            .collect()
    }

    /// The lowest live index.
    pub(crate) fn lowest_index(&self) -> Option<u64> {
        self.table().conns.keys().next().copied()
    }

    /// The live indexes above `floor`.
    pub(crate) fn indexes_above(&self, floor: u64) -> Vec<u64> {
        let t = self.table();
        t.conns
            .range(floor.saturating_add(1)..)
            .map(|(id, _)| *id)
            .collect()
    }

    /// The number of connections and a snapshot of at most `limit` of them,
    /// by index, from the `offset`th on: one page of a large table.
    pub(crate) fn list_page(&self, offset: usize, limit: usize) -> (usize, Vec<ConnInfo>) {
        let now = self.now_secs();
        let t = self.table();
        let now_ms = self.now_ms();
        let rows = t
            .conns
            .values()
            .skip(offset)
            .take(limit)
            .map(|e| e.info(now_ms, now))
            .collect();
        (t.conns.len(), rows)
    }

    /// Has `observer` told of every connection that opens, registers a
    /// name or goes from now on.
    pub(crate) fn observe(&self, observer: Arc<dyn ConnObserver>) {
        self.table().observer = Some(observer);
    }

    /// Runs `f` on every connection `target` selects, under the table lock.
    /// An index that is not live is an error; a name nobody registered
    /// selects nothing.
    fn each_target(
        &self,
        t: &Table,
        target: &Target,
        mut f: impl FnMut(&Arc<Conn>),
    ) -> Result<(), TargetError> {
        match target {
            Target::Index(id) => match t.conns.get(id) {
                Some(e) => f(&e.conn),
                None => return Err(TargetError::NoSuchIndex(*id)),
            },
            Target::Name(name) => {
                for c in t.names.get(name.as_str()).iter().flat_map(|n| n.live()) {
                    f(c)
                }
            }
            Target::All => {
                for e in t.conns.values() {
                    f(&e.conn)
                }
            }
        }
        Ok(())
    }

    /// Queues the same encoded `frame` for every connection `target`
    /// selects. A connection whose queue is full is closed as a slow
    /// consumer instead.
    ///
    /// Connections whose socket the hub may write are flushed here, each
    /// as its frame is pushed ([`Outbox::push_and_flush`]: a frame that
    /// finds nothing queued is sent without being queued), while no flush
    /// is under way and for the first milliseconds of the delivery
    /// ([`FLUSH_HERE_BUDGET`]); the rest after the queueing (see
    /// [`outbox`]): at once for a few, by the flushing task for more, so
    /// the caller is answered without waiting for thousands of writes, and
    /// broadcasts that come faster than the sockets take them go out
    /// together, several frames per write. The task of such a connection
    /// is not woken at all unless its socket is full.
    ///
    /// The table is locked only to find the targets, so that connecting
    /// and registering go on during a large fan-out; the queueing of
    /// deliveries takes turns, so every page gets them in the same order.
    pub(crate) fn deliver(&self, target: &Target, frame: &Bytes) -> Result<Delivered, TargetError> {
        self.deliver_inner(target, frame, || (), |_, _| (), true)
    }

    /// [`Hub::deliver`], running `first` under the delivery turn before the
    /// targets are listed: what it records (a retained value, an output
    /// line for late joiners) is replayed to exactly the pages that the
    /// delivery does not reach.
    pub(crate) fn deliver_after(
        &self,
        target: &Target,
        frame: &Bytes,
        first: impl FnOnce(),
    ) -> Result<Delivered, TargetError> {
        self.deliver_inner(target, frame, first, |_, _| (), true)
    }

    /// [`Hub::deliver`], telling `reached_one` every connection the target
    /// selects and what became of the frame for it ([`Reach`]), before any
    /// of them can be written: a command that waits for each page's
    /// answer knows whom to wait for before an answer can come, and which
    /// pages never got the question. (A broadcast passes a closure that
    /// does nothing, which costs nothing.)
    pub(crate) fn deliver_with(
        &self,
        target: &Target,
        frame: &Bytes,
        reached_one: impl FnMut(&Arc<Conn>, Reach),
    ) -> Result<Delivered, TargetError> {
        // Never flushed while queueing: a page could answer before the
        // caller heard of the next one.
        self.deliver_inner(target, frame, || (), reached_one, false)
    }

    /// [`Hub::deliver_after`] and [`Hub::deliver_with`] in one. With
    /// `flush_here`, each page is flushed as its frame is pushed while the
    /// hub is keeping up (see [`FLUSH_HERE_BUDGET`]).
    fn deliver_inner(
        &self,
        target: &Target,
        frame: &Bytes,
        first: impl FnOnce(),
        mut reached_one: impl FnMut(&Arc<Conn>, Reach),
        flush_here: bool,
    ) -> Result<Delivered, TargetError> {
        let limits = self.shared.limits.outbox;
        let turn = self.turn();
        first();
        let mut targets = Vec::new();
        self.each_target(&self.table(), target, |c| targets.push(c.clone()))?;
        let mut wake = Vec::new();
        let mut to_flush = Vec::new();
        let mut overflowed = Vec::new();
        let mut reached = 0;
        // Compressed at most once per window size, for the first target
        // that negotiated permessage-deflate; every such target gets the
        // same buffer.
        let mut twins = Twins::new(frame);
        let deflate = twins.worth() && self.shared.deflating.load(Relaxed);
        let mut here = FlushHere::start(self, flush_here);
        for c in targets {
            let frame = if deflate {
                twins.for_window(c.deflate_bits())
            } else {
                frame
            };
            let pushed = if here.go_on() {
                c.outbox.push_and_flush(frame, limits)
            } else {
                c.outbox.push(frame, limits)
            };
            match pushed {
                Pushed::Queued(w) => {
                    reached += 1;
                    reached_one(&c, Reach::Queued);
                    wake.extend(w);
                }
                Pushed::ToFlush => {
                    reached += 1;
                    reached_one(&c, Reach::Queued);
                    to_flush.push(c);
                }
                Pushed::Flushed(flushed) => {
                    reached += 1;
                    reached_one(&c, Reach::Queued);
                    here.written(flushed.frames, flushed.bytes);
                    wake.extend(flushed.wake);
                }
                Pushed::Overflow(w) => {
                    reached_one(&c, Reach::Overflowed);
                    overflowed.push(c.id);
                    wake.extend(w);
                }
                Pushed::Closed => reached_one(&c, Reach::Closing),
            }
        }
        drop(turn);
        let mut dropped = 0;
        if !overflowed.is_empty() {
            dropped = self.drop_slow(overflowed);
        }
        for w in wake {
            w.wake();
        }
        self.flush(to_flush);
        let counters = &self.shared.counters;
        here.count(counters);
        counters.frames_delivered.fetch_add(reached as u64, Relaxed);
        Ok(Delivered { reached, dropped })
    }

    /// Takes connections whose queue overflowed out of the table (they come
    /// back like any dropped page) and reports them.
    fn drop_slow(&self, mut overflowed: Vec<u64>) -> usize {
        // The task of an overflowed connection may have ended (and
        // reported itself gone) already: count only those removed here.
        let mut had_names = false;
        {
            let mut t = self.table();
            overflowed.retain(|id| {
                self.leave(&mut t, *id, CLOSE_SLOW_CONSUMER)
                    .inspect(|named| had_names |= named)
                    .is_some()
            });
        }
        self.named_left(had_names);
        if !overflowed.is_empty() {
            self.left_table();
        }
        let counters = &self.shared.counters;
        for id in &overflowed {
            counters.slow_consumers.fetch_add(1, Relaxed);
            counters.closed.fetch_add(1, Relaxed);
            self.monitor().emit(format_args!(
                "ws {id} closed: slow consumer (outgoing queue full, code {CLOSE_SLOW_CONSUMER})"
            ));
        }
        overflowed.len()
    }

    /// Removes connection `id` from the table, closed with `code`, and
    /// parks its index and names if it may come back. `None` if it was
    /// not there, else whether it held names.
    fn leave(&self, t: &mut Table, id: u64, code: u16) -> Option<bool> {
        let entry = t.remove(id)?;
        let named = !entry.names.is_empty();
        let limits = &self.shared.limits;
        let grace = u32::try_from(limits.resume_grace.as_secs()).unwrap_or(u32::MAX);
        // Parked pages are bounded like live ones: beyond that, a dropped
        // page simply gets a fresh index.
        if grace > 0 && resumable(code) && t.parked.len() < limits.max_connections {
            let until = self.now_secs().saturating_add(grace);
            let names = entry.names;
            t.parked.insert(id, Parked { names, until });
        }
        Some(named)
    }

    /// Queues `frame` for one connection, if it is still live.
    pub(crate) fn send_to(&self, id: u64, frame: &Bytes) -> bool {
        matches!(self.deliver(&Target::Index(id), frame), Ok(d) if d.reached == 1)
    }

    /// Starts closing every connection `target` selects: each leaves the
    /// listing at once, gets what was queued for it, then the close frame.
    pub(crate) fn close(&self, target: &Target, reason: CloseReason) -> Result<usize, TargetError> {
        let mut closing = Vec::new();
        let mut t = self.table();
        self.each_target(&t, target, |c| closing.push(c.clone()))?;
        let mut had_names = false;
        for c in &closing {
            if let Some(named) = self.leave(&mut t, c.id, reason.code) {
                had_names |= named;
            }
        }
        drop(t);
        self.named_left(had_names);
        if !closing.is_empty() {
            self.left_table();
        }
        for c in &closing {
            self.closed(c.id, &reason);
            if let Some(Some(w)) = c.outbox.close(reason.clone()) {
                w.wake();
            }
        }
        Ok(closing.len())
    }

    fn closed(&self, id: u64, reason: &CloseReason) {
        self.changed(TableChange::Closed(id));
        self.shared.counters.closed.fetch_add(1, Relaxed);
        self.monitor().emit(format_args!(
            "ws {id} closed: {} (code {})",
            reason.reason, reason.code
        ));
    }

    /// Closes one connection for a reason of its own (a protocol error, too
    /// many names); false if it is no longer live.
    pub(crate) fn close_one(&self, id: u64, reason: CloseReason) -> bool {
        matches!(self.close(&Target::Index(id), reason), Ok(1))
    }

    /// Called by a connection's task when it ends: removes it from the table
    /// if it is still there and tells the Monitor why it went.
    pub(crate) fn gone(&self, conn: &Conn, why: &CloseReason) {
        let removed = self.leave(&mut self.table(), conn.id, why.code);
        if let Some(named) = removed {
            self.named_left(named);
            self.left_table();
            self.closed(conn.id, why);
        }
    }

    /// Pings every connection with the shared `ping` frame, and closes those
    /// whose peer has said nothing for `timeout`. Returns how many were
    /// dropped.
    pub(crate) fn heartbeat(&self, ping: &Bytes, timeout: Duration) -> usize {
        let now = self.now_secs();
        let timeout = u32::try_from(timeout.as_secs()).unwrap_or(u32::MAX);
        let mut dead = Vec::new();
        {
            let mut t = self.table();
            t.parked.retain(|_, p| p.until >= now);
            if t.previous.as_ref().is_some_and(|p| p.until < now) {
                t.previous = None;
            }
            for e in t.conns.values() {
                if now.saturating_sub(e.conn.last_seen.load(Relaxed)) > timeout {
                    dead.push(e.conn.id);
                }
            }
        }
        let reason = CloseReason {
            code: 1001,
            reason: "heartbeat timeout",
        };
        for id in &dead {
            self.close_one(*id, reason.clone());
        }
        // Pinging is a delivery like any other: a page that stopped reading
        // fills its queue with pings too.
        let _ = self.deliver(&Target::All, ping);
        dead.len()
    }
}

/// Names a page came back with, for its Monitor line.
struct NamesNote<'a>(&'a [Arc<str>]);

impl fmt::Display for NamesNote<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, name) in self.0.iter().enumerate() {
            let sep = if i == 0 { " with '" } else { ", '" };
            write!(f, "{sep}{name}'")?;
        }
        Ok(())
    }
}

/// Deliveries to at most this many flushable connections flush them at
/// once (a reply, a pong); larger ones hand them to the flushing task.
const FLUSH_AT_ONCE_MAX: usize = 32;

/// Connections the flushing task writes to between two yields, so that
/// during a large fan-out the worker still reads new requests (and queues
/// the next broadcasts, which then share writes) every fraction of a
/// millisecond.
const FLUSH_CHUNK: usize = 32;

/// How long a delivery may flush each page right after queueing its frame,
/// while no flush is under way, before it leaves the rest to a flush
/// after the queueing (see [`Hub::flush`]).
///
/// Each page is then visited once instead of twice (queue, then flush),
/// which took 1 to 2.5% off the daemon's CPU time per broadcast to 1,000
/// pages in three A/Bs, and sending a frame without queueing it when
/// nothing waits before it another 0.7% (docs/PERFORMANCE.md); and the
/// first page is written before the caller is answered. The bound keeps a
/// large fan-out from holding the worker and the delivery turn for long:
/// the rest goes to the flushing task, and broadcasts that come faster
/// than the sockets take them find that task busy, so they are queued,
/// answered at once, and share writes.
const FLUSH_HERE_BUDGET: Duration = Duration::from_millis(5);

/// Pages visited between two looks at the clock (see [`FLUSH_HERE_BUDGET`]).
const FLUSH_HERE_CLOCK_EVERY: u32 = 32;

/// A delivery's flushing of each page as it queues for it.
struct FlushHere {
    /// Until when it may; `None` once it may not (or never could).
    until: Option<Instant>,
    /// Pages it has let through so far, for the clock's turns.
    visited: u32,
    frames: u64,
    bytes: usize,
}

impl FlushHere {
    /// Allowed unless the delivery must not write (`allowed`) or a flush is
    /// under way: then the hub is behind, and the delivery only queues.
    fn start(hub: &Hub, allowed: bool) -> Self {
        let idle = allowed && !hub.flush_queue().running;
        FlushHere::within(idle.then_some(FLUSH_HERE_BUDGET))
    }

    fn within(budget: Option<Duration>) -> Self {
        FlushHere {
            until: budget.map(|b| Instant::now() + b),
            visited: 0,
            frames: 0,
            bytes: 0,
        }
    }

    /// Whether the next page may still be flushed here.
    fn go_on(&mut self) -> bool {
        let Some(until) = self.until else {
            return false;
        };
        self.visited += 1;
        if self.visited % FLUSH_HERE_CLOCK_EVERY == 0 && Instant::now() >= until {
            self.until = None;
        }
        true
    }

    fn written(&mut self, frames: u64, bytes: usize) {
        self.frames += frames;
        self.bytes += bytes;
    }

    /// Adds what was written here to the daemon's totals.
    fn count(&self, counters: &Counters) {
        if self.bytes > 0 {
            counters.written(self.frames, self.bytes);
        }
    }
}

/// Connections waiting for a flush, in the order their deliveries came.
#[derive(Default)]
struct FlushQueue {
    conns: VecDeque<Arc<Conn>>,
    /// A flushing task is running and will take what is added.
    running: bool,
}

impl Hub {
    /// Flushes `conns`: at once if they are few or there is no runtime
    /// (a test), else through the one flushing task, started if needed.
    fn flush(&self, conns: Vec<Arc<Conn>>) {
        let runtime = match tokio::runtime::Handle::try_current() {
            Ok(runtime) if conns.len() > FLUSH_AT_ONCE_MAX => runtime,
            _ => return self.flush_now(&conns),
        };
        let mut queue = self.flush_queue();
        queue.conns.extend(conns);
        if !queue.running {
            queue.running = true;
            runtime.spawn(self.clone().flushing());
        }
    }

    /// Flushes `conns` here and now, and counts what went out.
    fn flush_now(&self, conns: &[Arc<Conn>]) {
        let (mut frames, mut bytes) = (0, 0);
        for c in conns {
            let (f, b) = c.flush();
            frames += f;
            bytes += b;
        }
        self.shared.counters.written(frames, bytes);
    }

    fn flush_queue(&self) -> MutexGuard<'_, FlushQueue> {
        // Taking from or adding to a queue cannot leave it half-done.
        self.shared
            .flushes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The flushing task: one for all deliveries, so connections are
    /// written in the order their frames came, and it ends when nothing is
    /// left to flush.
    async fn flushing(self) {
        let mut chunk = Vec::with_capacity(FLUSH_CHUNK);
        loop {
            {
                let mut queue = self.flush_queue();
                if queue.conns.is_empty() {
                    queue.running = false;
                    return;
                }
                let n = queue.conns.len().min(FLUSH_CHUNK);
                chunk.extend(queue.conns.drain(..n));
            }
            self.flush_now(&chunk);
            chunk.clear();
            tokio::task::yield_now().await;
        }
    }
}

impl fmt::Debug for Hub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hub")
            .field("connections", &self.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hands out the indexes it holds, then none.
    struct Fixed(Mutex<Vec<u64>>);

    impl IndexSource for Fixed {
        fn next_index(&self) -> Option<u64> {
            self.0.lock().unwrap_or_else(|e| e.into_inner()).pop()
        }

        fn available(&self) -> bool {
            !self.0.lock().unwrap_or_else(|e| e.into_inner()).is_empty()
        }
    }

    #[test]
    fn a_page_string_is_kept_once_and_let_go_with_its_last_connection() {
        let hub = Hub::new(HubLimits::default(), Monitor::new());
        let remote: SocketAddr = "127.0.0.1:1".parse().expect("address");
        let a = hub.open(remote, "/dash").expect("open");
        let b = hub.open(remote, "/dash").expect("open");
        assert!(Arc::ptr_eq(&a.page, &b.page), "one string for both");
        assert_eq!(hub.table().pages.get("/dash"), Some(&2));
        // `a` closes: it leaves the table while its task still holds it.
        let why = CloseReason {
            code: 1000,
            reason: "closed",
        };
        assert!(hub.close_one(a.id(), why.clone()));
        assert_eq!(hub.table().pages.get("/dash"), Some(&1));
        hub.close_one(b.id(), why);
        drop((a, b));
        assert!(
            hub.table().pages.is_empty(),
            "nothing kept for a page no one shows"
        );
    }

    #[test]
    fn pages_leaving_a_shared_name_in_any_order_keep_its_list_right() {
        let hub = Hub::new(HubLimits::default(), Monitor::new());
        let remote: SocketAddr = "127.0.0.1:1".parse().expect("address");
        let conns: Vec<Arc<Conn>> = (0..100)
            .map(|_| hub.open(remote, "/").expect("open"))
            .collect();
        for c in &conns {
            hub.register(c.id(), "status").expect("register");
            if c.id() % 2 == 1 {
                hub.register(c.id(), "odd").expect("register");
            }
        }
        let status = Target::Name("status".into());
        let frame = Bytes::from_static(b"x");
        let why = CloseReason {
            code: 1000,
            reason: "closed",
        };
        // A scattered order: 0, 37, 74, 11, ... (37 and 100 are coprime).
        let order: Vec<usize> = (0..100).map(|i| i * 37 % 100).collect();
        for (gone, &i) in order.iter().enumerate() {
            assert!(hub.close_one(conns[i].id(), why.clone()));
            let live = 100 - gone - 1;
            assert_eq!(hub.named("status"), live);
            let reached = hub.deliver(&status, &frame).map(|d| d.reached);
            assert_eq!(reached, Ok(live), "after closing {}", conns[i].id());
            let odd_live = conns.iter().filter(|c| c.id() % 2 == 1).count()
                - order[..=gone]
                    .iter()
                    .filter(|&&j| conns[j].id() % 2 == 1)
                    .count();
            assert_eq!(hub.named("odd"), odd_live);
            // Gone pages are dropped from the list once they are half of it.
            let held = hub.table().names.get("status").map_or(0, |n| n.conns.len());
            assert!(held <= 2 * live + 1, "{held} held for {live} live");
        }
        assert!(hub.table().names.is_empty(), "no name is left behind");
    }

    #[test]
    fn indexes_come_from_a_plugged_in_source() {
        let source = Arc::new(Fixed(Mutex::new(vec![900, 70])));
        let hub = Hub::with_index_source(HubLimits::default(), Monitor::new(), source);
        let remote: SocketAddr = "127.0.0.1:1".parse().expect("address");
        assert_eq!(hub.open(remote, "").map(|c| c.id()), Ok(70));
        assert_eq!(hub.open(remote, "").map(|c| c.id()), Ok(900));
        assert_eq!(hub.admit(remote.ip()), Err(OpenError::NoIndex));
        assert_eq!(
            hub.open(remote, "").map(|c| c.id()),
            Err(OpenError::NoIndex)
        );
        assert_eq!(hub.len(), 2);
    }

    #[test]
    fn the_default_counter_starts_at_one() {
        let hub = Hub::new(HubLimits::default(), Monitor::new());
        let remote: SocketAddr = "127.0.0.1:1".parse().expect("address");
        assert_eq!(hub.open(remote, "").map(|c| c.id()), Ok(1));
        assert_eq!(hub.open(remote, "").map(|c| c.id()), Ok(2));
    }

    #[test]
    fn watchers_hear_opens_registrations_and_closes_and_read_a_page() {
        let hub = Hub::new(HubLimits::default(), Monitor::new());
        let remote: SocketAddr = "127.0.0.1:1".parse().expect("address");
        let early = hub.open(remote, "").expect("open");
        let mut changes = hub.changes();
        let conn = hub.open(remote, "/p").expect("open");
        hub.register(conn.id(), "status").expect("register");
        hub.gone(
            &early,
            &CloseReason {
                code: 1000,
                reason: "bye",
            },
        );
        assert_eq!(changes.try_recv(), Ok(TableChange::Opened(2)));
        assert_eq!(changes.try_recv(), Ok(TableChange::Registered(2)));
        assert_eq!(changes.try_recv(), Ok(TableChange::Closed(1)));
        assert!(changes.try_recv().is_err());
        for _ in 0..3 {
            hub.open(remote, "").expect("open");
        }
        let (total, rows) = hub.list_page(1, 2);
        assert_eq!(total, 4);
        assert_eq!(rows.iter().map(|r| r.id).collect::<Vec<_>>(), [3, 4]);
        assert_eq!(hub.list_page(0, 1).1[0].names, ["status"]);
    }

    /// `n` pages on `hub`, each with its socket attached for flushes, and
    /// the client ends of those sockets.
    async fn pages_with_sockets(
        hub: &Hub,
        n: usize,
    ) -> (Vec<Arc<Conn>>, Vec<tokio::net::TcpStream>) {
        let remote: SocketAddr = "127.0.0.1:1".parse().expect("address");
        let (mut conns, mut clients) = (Vec::new(), Vec::new());
        for _ in 0..n {
            let (server, client) = crate::testutil::tcp_pair().await;
            let conn = hub.open(remote, "/p").expect("open");
            conn.attach_socket(Arc::new(server));
            conns.push(conn);
            clients.push(client);
        }
        (conns, clients)
    }

    /// Frames written to each page's socket so far.
    fn frames_written(conns: &[Arc<Conn>]) -> Vec<u64> {
        conns.iter().map(|c| c.outbox.written_so_far().0).collect()
    }

    /// Lets the flushing task run until it has ended.
    async fn until_flushed(hub: &Hub) {
        for _ in 0..1000 {
            if !hub.flush_queue().running {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("the flushing task did not end");
    }

    #[tokio::test]
    async fn a_fan_out_while_no_flush_is_under_way_is_written_before_the_delivery_returns() {
        let hub = Hub::new(HubLimits::default(), Monitor::new());
        // More pages than a delivery flushes at once anyway.
        let n = FLUSH_AT_ONCE_MAX * 3;
        let (conns, _clients) = pages_with_sockets(&hub, n).await;
        let d = hub
            .deliver(&Target::All, &Bytes::from_static(b"hi"))
            .expect("deliver");
        assert_eq!(d.reached, n);
        // No await since the delivery: no other task has run.
        assert_eq!(frames_written(&conns), vec![1; n]);
        assert!(!hub.flush_queue().running, "nothing was left for the task");
        assert_eq!(hub.shared.counters.msgs_out.load(Relaxed), n as u64);
    }

    #[tokio::test]
    async fn a_fan_out_while_a_flush_is_under_way_queues_behind_it_and_keeps_the_order() {
        let hub = Hub::new(HubLimits::default(), Monitor::new());
        let n = FLUSH_AT_ONCE_MAX * 3;
        let (conns, mut clients) = pages_with_sockets(&hub, n).await;
        // A `ws call` never writes while it queues: its caller must hear of
        // every page first. Its pages go to the flushing task.
        let asked = hub
            .deliver_with(&Target::All, &Bytes::from_static(b"one "), |_, _| ())
            .expect("deliver");
        assert_eq!(asked.reached, n);
        assert_eq!(frames_written(&conns), vec![0; n]);
        assert!(hub.flush_queue().running);
        // The hub is behind: the next delivery queues behind the flush that
        // is due, and every page gets both frames in order.
        hub.deliver(&Target::All, &Bytes::from_static(b"two"))
            .expect("deliver");
        assert_eq!(frames_written(&conns), vec![0; n]);
        until_flushed(&hub).await;
        assert_eq!(frames_written(&conns), vec![2; n]);
        for client in &mut clients {
            use tokio::io::AsyncReadExt as _;
            let mut got = [0u8; 7];
            client.read_exact(&mut got).await.expect("read");
            assert_eq!(&got, b"one two");
        }
    }

    #[test]
    fn a_delivery_flushes_as_it_queues_only_within_its_budget() {
        // Past its time, a delivery still finishes the pages between two
        // looks at the clock, then queues the rest.
        let mut here = FlushHere::within(Some(Duration::ZERO));
        let allowed = std::iter::from_fn(|| Some(here.go_on()))
            .take(FLUSH_HERE_CLOCK_EVERY as usize * 2)
            .filter(|&go| go)
            .count();
        assert_eq!(allowed, FLUSH_HERE_CLOCK_EVERY as usize);
        let mut unhurried = FlushHere::within(Some(Duration::from_secs(60)));
        assert!((0..1000).all(|_| unhurried.go_on()));
        let mut behind = FlushHere::within(None);
        assert!(!behind.go_on());
    }
}
