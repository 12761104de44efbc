//! The node's share of the cluster's connection table, kept in Redis: one
//! row per page in `PREFIX:conns:ID` (a sorted set scored by index) and
//! the names its pages registered in `PREFIX:names:ID`, both expiring with
//! the node's lease.
//!
//! The hub only records which connections changed ([`Dirty`]); one task
//! writes them in pipelined batches, so that opening a page never waits on
//! Redis and a thousand pages opening at once cost a few round trips.
//! Traffic counters are written again every `table_refresh_secs`, for the
//! rows whose counters moved. After Redis lost its data (or this node's
//! lease expired) the whole table is written again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use redis::aio::MultiplexedConnection;
use redis::RedisError;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::wire::Row;
use super::Node;
use crate::engine::hub::{ConnInfo, ConnObserver};

/// Rows written per pipeline.
const BATCH: usize = 1000;

/// Connections whose rows must be written, as the hub reports them.
#[derive(Default)]
pub(super) struct Dirty {
    ids: Mutex<Vec<u64>>,
    wake: Notify,
    /// Write the whole table again.
    all: AtomicBool,
}

impl ConnObserver for Dirty {
    fn changed(&self, id: u64) {
        self.ids.lock().unwrap_or_else(|e| e.into_inner()).push(id);
    }

    fn wake(&self) {
        self.wake.notify_one();
    }
}

impl Dirty {
    /// Has the writer write the whole table again.
    pub(super) fn resync(&self) {
        self.all.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    fn take(&self) -> Vec<u64> {
        let mut ids = std::mem::take(&mut *self.ids.lock().unwrap_or_else(|e| e.into_inner()));
        ids.sort_unstable();
        ids.dedup();
        ids
    }
}

/// What the writer last wrote for one connection.
struct Written {
    names: Vec<String>,
    traffic: (u64, u64),
}

/// What this node has written to Redis, to know what to take back.
#[derive(Default)]
struct Mirror {
    rows: HashMap<u64, Written>,
    names: HashMap<String, usize>,
}

/// The writer task: writes what changed as it changes, the traffic every
/// `table_refresh`, everything after a resync.
pub(super) async fn write_table(node: Arc<Node>, stop: CancellationToken) {
    let mut mirror = Mirror::default();
    let mut tick = tokio::time::interval(node.table_refresh);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Removals do not wake the writer: they are written at the next wake
    // or within this long.
    let mut sweep = tokio::time::interval(std::time::Duration::from_millis(100));
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut connected = node.connected.subscribe();
    let mut traffic = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = node.table.wake.notified() => {}
            _ = sweep.tick() => {}
            _ = tick.tick() => traffic = true,
        }
        let Some(mut conn) = node.conn() else {
            node.table.all.store(true, Ordering::Release);
            tokio::select! {
                _ = stop.cancelled() => return,
                changed = connected.changed() => if changed.is_err() { return },
            }
            continue;
        };
        let written = if node.table.all.swap(false, Ordering::AcqRel) {
            node.table.take();
            mirror = Mirror::default();
            write_all(&node, &mut conn, &mut mirror).await
        } else {
            let mut ids = node.table.take();
            if std::mem::take(&mut traffic) {
                ids.extend(moved(&node, &mirror));
                ids.sort_unstable();
                ids.dedup();
            }
            write_ids(&node, &mut conn, &mut mirror, &ids).await
        };
        if let Err(e) = written {
            node.failed(&e);
            node.stats.error();
            // What Redis holds is unknown now: write it all when back.
            node.table.all.store(true, Ordering::Release);
        }
    }
}

/// Live connections whose traffic moved since their row was written.
fn moved(node: &Node, mirror: &Mirror) -> Vec<u64> {
    node.hub
        .list()
        .into_iter()
        .filter(|c| {
            mirror
                .rows
                .get(&c.id)
                .is_some_and(|w| w.traffic != (c.msgs_in, c.msgs_out))
        })
        .map(|c| c.id)
        .collect()
}

/// Replaces the node's keys with its whole table.
async fn write_all(
    node: &Node,
    conn: &mut MultiplexedConnection,
    mirror: &mut Mirror,
) -> Result<(), RedisError> {
    let (conns, names) = (node.keys.conns(&node.id), node.keys.names(&node.id));
    redis::pipe()
        .del(&conns)
        .ignore()
        .del(&names)
        .ignore()
        .query_async::<()>(conn)
        .await?;
    node.stats.round_trip();
    let all = node.hub.list();
    for chunk in all.chunks(BATCH) {
        let ids: Vec<u64> = chunk.iter().map(|c| c.id).collect();
        write_ids(node, conn, mirror, &ids).await?;
    }
    Ok(())
}

/// Writes the rows of `ids` (removing those no longer live) in batches.
async fn write_ids(
    node: &Node,
    conn: &mut MultiplexedConnection,
    mirror: &mut Mirror,
    ids: &[u64],
) -> Result<(), RedisError> {
    for chunk in ids.chunks(BATCH) {
        let live = node.hub.infos(chunk);
        let now = node.clock.now_ms();
        let mut pipe = redis::pipe();
        let mut live = live.into_iter().peekable();
        for &id in chunk {
            let info = live.next_if(|c| c.id == id);
            stage(node, &mut pipe, mirror, id, info, now);
        }
        if pipe.is_empty() {
            continue;
        }
        let ms = u64::try_from(node.lease.as_millis()).unwrap_or(u64::MAX);
        pipe.pexpire(node.keys.conns(&node.id), ms as i64)
            .ignore()
            .pexpire(node.keys.names(&node.id), ms as i64)
            .ignore();
        pipe.query_async::<()>(conn).await?;
        node.stats.round_trip();
    }
    Ok(())
}

/// Adds to `pipe` what makes Redis hold the row of `id` as `info` (or no
/// row), and the names that follow.
fn stage(
    node: &Node,
    pipe: &mut redis::Pipeline,
    mirror: &mut Mirror,
    id: u64,
    info: Option<ConnInfo>,
    now: u64,
) {
    let conns = node.keys.conns(&node.id);
    let names_key = node.keys.names(&node.id);
    let old = mirror.rows.remove(&id);
    let old_names = old.as_ref().map(|w| w.names.clone()).unwrap_or_default();
    if old.is_some() || info.is_some() {
        pipe.zrembyscore(&conns, id, id).ignore();
    }
    let new_names = match info {
        Some(info) => {
            let traffic = (info.msgs_in, info.msgs_out);
            let names = info.names.clone();
            let row = Row::new(info, now);
            if let Ok(json) = serde_json::to_string(&row) {
                pipe.zadd(&conns, json, id).ignore();
            }
            mirror.rows.insert(
                id,
                Written {
                    names: names.clone(),
                    traffic,
                },
            );
            names
        }
        None => Vec::new(),
    };
    for name in new_names.iter().filter(|n| !old_names.contains(n)) {
        let count = mirror.names.entry(name.clone()).or_default();
        *count += 1;
        if *count == 1 {
            pipe.sadd(&names_key, name).ignore();
        }
    }
    for name in old_names.iter().filter(|n| !new_names.contains(n)) {
        if let Some(count) = mirror.names.get_mut(name) {
            *count -= 1;
            if *count == 0 {
                mirror.names.remove(name);
                pipe.srem(&names_key, name).ignore();
            }
        }
    }
}
