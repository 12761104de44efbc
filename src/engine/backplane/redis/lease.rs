//! The node's lease and its command connection, kept up with backoff; and
//! what a node does when it finds that Redis began a new epoch.
//!
//! Every refresh is one script ([`scripts::announce`]): it renews the
//! lease, lifts the index counter above every index the node holds
//! (including its unused blocks), re-records the node's blocks, and reads
//! the epoch and Redis's clock. The backoff between reconnections is capped
//! at half a refresh period and each attempt at half of one, so a live node
//! announces itself again well within one lease of Redis coming back: that
//! is what the fence of a new epoch waits for.

use std::sync::atomic::Ordering;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, RedisError, Script};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{scripts, Node};
use crate::base::command::Target;
use crate::engine::hub::CloseReason;

static ANNOUNCE: LazyLock<Script> = LazyLock::new(|| Script::new(&scripts::announce()));

/// How a page is closed whose index another page may have been given
/// while this node was cut off from Redis: 1012 (service restart), which
/// ws.js answers by reconnecting, so the page gets a fresh index.
const INDEX_REUSED: CloseReason = CloseReason {
    code: 1012,
    reason: "index may have been reused: reconnect",
};

/// What one announcement found.
pub(super) struct Announced {
    pub(super) run_id: String,
    pub(super) since: u64,
    pub(super) now: u64,
    /// Whether the lease still existed (it expires if the node was cut off
    /// or stopped for longer than a lease).
    pub(super) had_lease: bool,
    /// The counter when the epoch's first block was handed out (-1: none
    /// yet).
    pub(super) floor: i64,
}

/// Keeps the lease alive and the command connection up: announces every
/// third of the lease, reconnects at once and then with capped backoff
/// when Redis goes away.
pub(super) async fn keep_lease(node: Arc<Node>, stop: CancellationToken) {
    let mut backoff = node.backoff();
    let mut lost = false;
    loop {
        if node.left.load(Ordering::Acquire) {
            return;
        }
        let mut conn = match node.conn() {
            Some(c) => c,
            None => match open_commands(&node.client, node.refresh).await {
                Ok(c) => {
                    node.set_conn(Some(c.clone()));
                    c
                }
                Err(e) => {
                    lost = true;
                    if !node.retry("reach", &e, &mut backoff, &stop).await {
                        return;
                    }
                    continue;
                }
            },
        };
        match announce(&node, &mut conn).await {
            Ok(a) => {
                node.stats.round_trip();
                if lost {
                    lost = false;
                    node.monitor.emit(format_args!(
                        "cluster: Redis at {} is back; node {} announced itself again",
                        node.server, node.id
                    ));
                    // What it held may be gone with Redis's data, or not:
                    // write the table again either way.
                    node.table.resync();
                }
                node.announced(&a);
                backoff.reset();
            }
            Err(e) => {
                node.stats.error();
                if !lost {
                    node.monitor.emit(format_args!(
                        "cluster: lost Redis at {}: {e}; reconnecting",
                        node.server
                    ));
                }
                lost = true;
                node.set_conn(None);
                // The first reconnection is at once: a restarted Redis is
                // often back already.
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

/// Opens the command connection; each attempt and each command is bounded
/// by half of `refresh` (at most 3 s and 2 s).
pub(super) async fn open_commands(
    client: &Client,
    refresh: Duration,
) -> Result<MultiplexedConnection, RedisError> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some((refresh / 2).min(Duration::from_secs(3))))
        .set_response_timeout(Some((refresh / 2).min(Duration::from_secs(2))));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

/// Runs the announcement script for `node`.
pub(super) async fn announce(
    node: &Node,
    conn: &mut MultiplexedConnection,
) -> Result<Announced, RedisError> {
    let keys = &node.keys;
    let id = &*node.id;
    let ms = u64::try_from(node.lease.as_millis()).unwrap_or(u64::MAX);
    let [current, spare] = node.blocks.held();
    let lowest = node
        .hub
        .lowest_index()
        .unwrap_or(u64::MAX)
        .min(node.blocks.next_unused());
    let keep_from = lowest.saturating_sub(node.block - 1);
    let sent = Instant::now();
    let (run_id, since, now, had, floor): (String, u64, u64, i64, i64) = ANNOUNCE
        .key(&keys.epoch)
        .key(&keys.index)
        .key(keys.lease(id))
        .key(&keys.nodes)
        .key(keys.conns(id))
        .key(keys.names(id))
        .key(keys.blocks(id))
        .arg(id)
        .arg(&node.lease_value)
        .arg(ms)
        .arg(node.blocks.highest())
        .arg(current)
        .arg(spare)
        .arg(keep_from)
        .invoke_async(conn)
        .await?;
    node.clock.set(sent, now);
    Ok(Announced {
        run_id,
        since,
        now,
        had_lease: had == 1,
        floor,
    })
}

impl Node {
    /// Acts on what an announcement found: a new epoch, or a lease that
    /// had expired.
    pub(super) fn announced(&self, a: &Announced) {
        *self.last_announce.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(std::time::Instant::now());
        let previous = self
            .epoch
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .replace(a.run_id.clone());
        let lease_ms = u64::try_from(self.lease.as_millis()).unwrap_or(u64::MAX);
        match previous {
            Some(before) if before != a.run_id => {
                self.monitor.emit(format_args!(
                    "cluster: Redis at {} lost or replaced its data (new run {}): node {} \
                     lifted the index counter above its indexes and writes its table again",
                    self.server, a.run_id, self.id
                ));
                self.table.resync();
                self.retained_reload.notify_one();
                if a.now >= a.since + lease_ms && a.floor >= 0 {
                    // The fence ended before this node could announce
                    // itself: blocks above the floor went to others.
                    self.give_up_indexes_above(a.floor.unsigned_abs());
                }
            }
            Some(_) if !a.had_lease => {
                self.monitor.emit(format_args!(
                    "cluster: node {}'s lease had expired (cut off or stopped for longer \
                     than {}); it announced itself again",
                    self.id,
                    crate::base::text::duration(self.lease)
                ));
                self.table.resync();
            }
            _ => {}
        }
    }

    /// Closes the local pages whose index is above `floor` and discards
    /// the blocks held: after a new epoch whose fence ended without this
    /// node, other nodes may have been given those indexes. The pages
    /// reconnect and get fresh ones.
    fn give_up_indexes_above(&self, floor: u64) {
        let mut closed = 0;
        for id in self.hub.indexes_above(floor) {
            if self.hub.close(&Target::Index(id), INDEX_REUSED).is_ok() {
                closed += 1;
            }
        }
        self.blocks.discard();
        self.monitor.emit(format_args!(
            "cluster: node {} came back after the new epoch's fence: closed {closed} pages \
             whose index (above {floor}) another node may hold now, and took new blocks",
            self.id
        ));
    }
}
