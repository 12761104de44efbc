//! The daemon-wide budget of memory held for frames still arriving.
//!
//! A connection keeps the bytes of a frame that arrived in part (and of a
//! fragmented message until its last fragment); everything that arrives
//! whole in one read is handled straight from the worker thread's scratch
//! buffer and costs nothing here. What connections keep is charged to one
//! [`PartialBudget`] shared by all of them, so that many peers stalling
//! mid-frame cannot together make the daemon hold more than its limit: the
//! connection whose bytes would go over it is closed with 1013 (try again
//! later) instead.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Default limit of the bytes held for incomplete frames, all connections
/// together: 512 frames of the default 64 KiB limit in flight at once.
pub(crate) const DEFAULT_MAX_PARTIAL_BYTES: usize = 32 * 1024 * 1024;

/// The budget the connections of one daemon share.
#[derive(Debug)]
pub struct PartialBudget {
    limit: usize,
    held: AtomicUsize,
}

/// The budget of [`ConnLimits::default`](super::driver::ConnLimits), with the
/// default limit.
pub(crate) static DEFAULT_BUDGET: PartialBudget = PartialBudget::new(DEFAULT_MAX_PARTIAL_BYTES);

impl PartialBudget {
    /// A budget of `limit` bytes, none of them held.
    pub(crate) const fn new(limit: usize) -> PartialBudget {
        PartialBudget {
            limit,
            held: AtomicUsize::new(0),
        }
    }

    /// A budget that lives as long as the process: connection limits hold
    /// a plain reference to it, so they stay `Copy` and cost one pointer
    /// per connection. A daemon makes one at start.
    pub fn leak(limit: usize) -> &'static PartialBudget {
        Box::leak(Box::new(PartialBudget::new(limit)))
    }

    /// The limit, in bytes.
    #[cfg(test)]
    fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes held now, all connections together.
    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// Takes `bytes` from the budget; false (and nothing taken) if that
    /// would go over the limit.
    pub(crate) fn try_charge(&self, bytes: usize) -> bool {
        self.held
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
                held.checked_add(bytes).filter(|&total| total <= self.limit)
            })
            .is_ok()
    }

    /// Gives back `bytes` taken earlier.
    pub(crate) fn release(&self, bytes: usize) {
        // Never below zero, even if a caller gave back more than it took.
        let _ = self
            .held
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
                Some(held.saturating_sub(bytes))
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_up_to_the_limit_and_releases() {
        let budget = PartialBudget::new(100);
        assert!(budget.try_charge(60));
        assert!(!budget.try_charge(41), "over the limit");
        assert_eq!(budget.held(), 60, "a refused charge takes nothing");
        assert!(budget.try_charge(40));
        assert!(!budget.try_charge(1));
        budget.release(100);
        assert_eq!(budget.held(), 0);
        budget.release(5);
        assert_eq!(budget.held(), 0);
        assert!(!budget.try_charge(usize::MAX));
        assert_eq!(PartialBudget::leak(7).limit(), 7);
    }
}
