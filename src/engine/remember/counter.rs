//! Indexes that never repeat across restarts: handed out from memory, below
//! a ceiling kept in the state directory, which a thread of its own raises
//! a block ahead (the cluster does the same with Redis, see
//! `backplane::redis::blocks`). A daemon that starts again on the same
//! state directory starts at the ceiling, above anything handed out before,
//! however the previous one ended.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::mpsc;
use std::sync::Arc;

use super::store::Store;
use crate::engine::hub::IndexSource;
use crate::engine::monitor::Monitor;

/// Indexes the ceiling is raised by at a time: one fsync per this many
/// new connections.
pub(crate) const BLOCK: u64 = 4096;

/// The hub's indexes when the daemon has a state directory.
pub(crate) struct Counter {
    next: AtomicU64,
    ceiling: AtomicU64,
    asked: AtomicBool,
    raise: mpsc::Sender<()>,
    store: Arc<Store>,
    monitor: Monitor,
}

impl Counter {
    /// Indexes from `start`, the ceiling raised to `start + BLOCK` in
    /// `store` before this returns (it runs before the daemon serves).
    pub(crate) fn start(store: Arc<Store>, start: u64, monitor: Monitor) -> Arc<Counter> {
        let start = start.max(1);
        let ceiling = start.saturating_add(BLOCK);
        if let Err(e) = store.put_ceiling(ceiling) {
            monitor.emit(format_args!(
                "state: cannot record the index ceiling: {e}; indexes may repeat after \
                 a restart"
            ));
        }
        let (raise, asks) = mpsc::channel();
        let counter = Arc::new(Counter {
            next: AtomicU64::new(start),
            ceiling: AtomicU64::new(ceiling),
            asked: AtomicBool::new(false),
            raise,
            store,
            monitor,
        });
        let weak = Arc::downgrade(&counter);
        std::thread::Builder::new()
            .name("pagewire-index".into())
            .spawn(move || {
                // Ends when the counter is gone (its sender with it).
                while asks.recv().is_ok() {
                    let Some(counter) = weak.upgrade() else {
                        return;
                    };
                    let raised = counter.ceiling.load(SeqCst).saturating_add(BLOCK);
                    match counter.store.put_ceiling(raised) {
                        Ok(()) => counter.ceiling.store(raised, SeqCst),
                        Err(e) => counter.monitor.emit(format_args!(
                            "state: cannot raise the index ceiling: {e}; new pages are \
                             refused once the indexes below it are used"
                        )),
                    }
                    counter.asked.store(false, SeqCst);
                }
            })
            .ok();
        counter
    }

    fn ask(&self) {
        if !self.asked.swap(true, SeqCst) {
            let _ = self.raise.send(());
        }
    }
}

impl IndexSource for Counter {
    fn next_index(&self) -> Option<u64> {
        loop {
            let (n, ceiling) = (self.next.load(SeqCst), self.ceiling.load(SeqCst));
            if n >= ceiling {
                self.ask();
                return None;
            }
            if self.next.compare_exchange(n, n + 1, SeqCst, SeqCst).is_ok() {
                if ceiling - n <= BLOCK / 2 {
                    self.ask();
                }
                return Some(n);
            }
        }
    }

    fn available(&self) -> bool {
        self.next.load(SeqCst) < self.ceiling.load(SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restart_starts_above_everything_handed_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        let open = || Arc::new(Store::open(dir.path(), &mut |l| panic!("{l}")).0);
        let store = open();
        let counter = Counter::start(store.clone(), 1, Monitor::new());
        let first: Vec<u64> = (0..3).filter_map(|_| counter.next_index()).collect();
        assert_eq!(first, [1, 2, 3]);
        drop(counter);
        drop(store);
        let (_, loaded) = Store::open(dir.path(), &mut |l| panic!("{l}"));
        assert_eq!(loaded.ceiling, 1 + BLOCK);
        let store = open();
        let counter = Counter::start(store, loaded.ceiling, Monitor::new());
        assert_eq!(counter.next_index(), Some(1 + BLOCK));
    }
}
