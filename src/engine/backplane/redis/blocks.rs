//! Indexes unique across the cluster: blocks taken from a Redis counter,
//! with a spare so that opening a connection never waits on Redis.

use std::ops::Range;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{RedisError, Script};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::wire::Keys;
use super::{scripts, Node};
use crate::base::backoff::sleep_or_stop;
use crate::engine::hub::IndexSource;

static TAKE: LazyLock<Script> = LazyLock::new(|| Script::new(&scripts::take()));

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

    /// The blocks held (in use and spare), as `START-END`, for the lease.
    pub(super) fn held(&self) -> [String; 2] {
        let s = self.state();
        let show = |r: &Range<u64>| {
            if r.is_empty() {
                String::new()
            } else {
                format!("{}-{}", r.start, r.end - 1)
            }
        };
        [
            show(&s.current),
            s.spare.as_ref().map(show).unwrap_or_default(),
        ]
    }

    /// The first index not handed out yet of the block in use.
    pub(super) fn next_unused(&self) -> u64 {
        self.state().current.start
    }

    /// Forgets the blocks held: their indexes may have been handed out
    /// again (see [`super::lease`]). New ones are taken.
    pub(super) fn discard(&self) {
        let mut s = self.state();
        s.current = 0..0;
        s.spare = None;
        drop(s);
        self.low.notify_one();
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

/// Takes a new block whenever the spare was put in use (or both were
/// discarded).
pub(super) async fn refill(node: Arc<Node>, stop: CancellationToken) {
    let mut backoff = node.backoff();
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
        match take_indexes(&mut conn, &node.keys, &node.id, node.block, node.lease).await {
            Ok(Taken::Block(range)) => {
                node.stats.round_trip();
                node.blocks.add(range);
                backoff.reset();
            }
            Ok(Taken::Fenced(wait)) => {
                node.stats.round_trip();
                node.monitor.emit_summarised(
                    "cluster: index blocks fenced",
                    format_args!(
                        "cluster: Redis at {} began a new epoch (restarted or restored): no index \
                         block is handed out for {} more, while live nodes announce theirs",
                        node.server,
                        crate::base::text::duration(wait)
                    ),
                );
                if !sleep_or_stop(wait, &stop).await {
                    return;
                }
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

/// What asking for a block gave.
pub(super) enum Taken {
    /// These indexes, this node's alone.
    Block(Range<u64>),
    /// None: Redis began a new epoch less than a lease ago; ask again after
    /// this long.
    Fenced(Duration),
}

/// Takes `block` indexes for `node`, recording the block as its own.
pub(super) async fn take_indexes(
    conn: &mut MultiplexedConnection,
    keys: &Keys,
    node: &str,
    block: u64,
    lease: Duration,
) -> Result<Taken, RedisError> {
    let ms = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX);
    let (last, wait): (u64, u64) = TAKE
        .key(&keys.epoch)
        .key(&keys.index)
        .key(keys.blocks(node))
        .arg(block)
        .arg(ms)
        .invoke_async(conn)
        .await?;
    if last == 0 {
        // A little past the end of the fence, so the next try is not early.
        return Ok(Taken::Fenced(Duration::from_millis(wait + 5)));
    }
    // The counter holds the last index taken; indexes start at 1.
    Ok(Taken::Block(last.saturating_sub(block) + 1..last + 1))
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
        assert_eq!(b.held(), ["21-21".to_string(), String::new()]);
        b.discard();
        assert_eq!(b.next_index(), None);
        assert_eq!(b.highest(), 21, "what was held stays the floor");
    }
}
