//! Indexes unique across the cluster: blocks taken from a Redis counter,
//! with a spare so that opening a connection never waits on Redis.

use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard};

use redis::aio::MultiplexedConnection;
use redis::RedisError;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::wire::Keys;
use super::{Node, BACKOFF_MAX, BACKOFF_MIN};
use crate::base::backoff::Backoff;
use crate::engine::hub::IndexSource;

/// Raises the index counter to at least the node's highest index (so that a
/// Redis that lost its data cannot hand out an index again), then takes a
/// block. Run as one script so no other node's INCRBY can come between.
pub(super) const TAKE_INDEXES: &str = "\
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
local floor = tonumber(ARGV[2])
if cur < floor then redis.call('SET', KEYS[1], floor) end
return redis.call('INCRBY', KEYS[1], ARGV[1])";

/// The indexes a node hands out: the block in use and a spare, refilled
/// from Redis by a background task whenever the spare is taken.
pub(crate) struct Blocks {
    state: Mutex<BlockState>,
    /// Wakes the refill task when the spare has been taken.
    low: Notify,
}

pub(super) struct BlockState {
    pub(super) current: Range<u64>,
    pub(super) spare: Option<Range<u64>>,
    /// The highest index this node was ever given.
    pub(super) highest: u64,
}

impl Blocks {
    pub(super) fn new(current: Range<u64>, spare: Range<u64>) -> Self {
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

    pub(super) fn state(&self) -> MutexGuard<'_, BlockState> {
        // The state is a pair of ranges updated in single assignments; a
        // poisoned lock still guards a consistent value.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn needs_spare(&self) -> bool {
        self.state().spare.is_none()
    }

    pub(super) fn highest(&self) -> u64 {
        self.state().highest
    }

    pub(super) fn add(&self, block: Range<u64>) {
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

/// Takes a new spare block whenever the last one was put in use.
pub(super) async fn refill(node: Arc<Node>, stop: CancellationToken) {
    let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
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
                if !node
                    .retry("take indexes from", &e, &mut backoff, &stop)
                    .await
                {
                    return;
                }
            }
        }
    }
}

/// Takes `block` indexes (none, to only raise the counter to `floor`).
pub(super) async fn take_indexes(
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
}
