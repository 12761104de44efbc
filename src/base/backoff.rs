//! Waits that double between attempts, for every loop that retries: the
//! accept loops and the cluster's reconnections. A crate such as `backon`
//! wraps one future in retries; these loops keep their own state across
//! attempts (a reconnection that succeeds resets the wait, a lost one
//! starts over), which is all this holds.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// The next wait between attempts: `first`, doubled after each failure up
/// to `most`, and `first` again after a success.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Backoff {
    first: Duration,
    most: Duration,
    next: Duration,
}

impl Backoff {
    /// Waits from `first` doubling up to `most` (equal: always the same).
    pub(crate) const fn new(first: Duration, most: Duration) -> Self {
        Backoff {
            first,
            most,
            next: first,
        }
    }

    /// The wait before the next attempt; the one after it is twice as long.
    pub(crate) fn next(&mut self) -> Duration {
        let d = self.next;
        self.next = (d * 2).min(self.most);
        d
    }

    /// An attempt succeeded: the next failure waits `first` again.
    pub(crate) fn reset(&mut self) {
        self.next = self.first;
    }
}

/// Waits `d` unless `stop` comes first; false when stopping.
pub(crate) async fn sleep_or_stop(d: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        _ = stop.cancelled() => false,
        _ = tokio::time::sleep(d) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_most_and_reset() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(250), ms(1000));
        let waits: Vec<_> = (0..4).map(|_| b.next()).collect();
        assert_eq!(waits, [ms(250), ms(500), ms(1000), ms(1000)]);
        b.reset();
        assert_eq!(b.next(), ms(250));
        let mut fixed = Backoff::new(ms(100), ms(100));
        assert_eq!((fixed.next(), fixed.next()), (ms(100), ms(100)));
    }
}
