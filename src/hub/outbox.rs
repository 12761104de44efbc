//! A connection's bounded queue of encoded frames, shared between the
//! delivering side (any thread) and the connection's own task.
//!
//! Frames are `Bytes`: a broadcast pushes clones of one buffer, never copies.
//! An idle outbox owns no allocation (an empty `VecDeque` does not allocate).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::task::Waker;

use bytes::Bytes;

/// Why a connection is being closed, and what its close frame says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloseReason {
    /// The WebSocket close code.
    pub code: u16,
    /// The close reason, short and plain.
    pub reason: &'static str,
}

/// What a push did, so the caller can wake the task and count deliveries.
#[derive(Debug)]
pub enum Pushed {
    /// Queued; the waker (if the task was parked) must be woken.
    Queued(Option<Waker>),
    /// The queue was full: the connection is now closing as a slow consumer.
    Overflow(Option<Waker>),
    /// The connection is already closing; nothing was queued.
    Closed,
}

/// Limits of one outbox.
#[derive(Clone, Copy, Debug)]
pub struct OutboxLimits {
    /// Most bytes queued (frames not yet written to the socket).
    pub max_bytes: usize,
    /// Most frames queued.
    pub max_frames: usize,
}

impl Default for OutboxLimits {
    fn default() -> Self {
        OutboxLimits {
            max_bytes: 1 << 20,
            max_frames: 4096,
        }
    }
}

#[derive(Default)]
struct State {
    frames: VecDeque<Bytes>,
    /// Set once: frames after it are refused; the writer sends the close
    /// frame after the queue drains (or at once, dropping the queue, when
    /// `discard` says the peer is not reading anyway).
    closing: Option<CloseReason>,
    discard: bool,
    waker: Option<Waker>,
}

/// The queue itself.
#[derive(Default)]
pub struct Outbox {
    state: Mutex<State>,
    /// Bytes queued or taken by the writer but not yet written. Outside the
    /// lock: the writer subtracts after every write without taking it, and
    /// pushes (under the lock) read it to enforce the limit.
    pending_bytes: AtomicUsize,
}

/// What the writer should do next.
pub enum Next {
    /// Write these frames (the whole queue, taken at once).
    Frames(VecDeque<Bytes>),
    /// Nothing queued; the connection is closing with this reason.
    Close(CloseReason),
    /// Nothing to do; the task's waker is stored.
    Idle,
}

impl Outbox {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock leaves a consistent queue behind,
        // so a poisoned lock is still safe to use.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `frame` unless that would pass `limits`, in which case the
    /// connection starts closing as a slow consumer and its queue is dropped.
    pub fn push(&self, frame: Bytes, limits: OutboxLimits) -> Pushed {
        let mut s = self.lock();
        if s.closing.is_some() {
            return Pushed::Closed;
        }
        let pending = self.pending_bytes.load(Ordering::Relaxed);
        if pending + frame.len() > limits.max_bytes || s.frames.len() >= limits.max_frames {
            s.frames = VecDeque::new();
            s.closing = Some(CloseReason {
                code: crate::hub::CLOSE_SLOW_CONSUMER,
                reason: "slow consumer",
            });
            s.discard = true;
            return Pushed::Overflow(s.waker.take());
        }
        self.pending_bytes.fetch_add(frame.len(), Ordering::Relaxed);
        s.frames.push_back(frame);
        Pushed::Queued(s.waker.take())
    }

    /// Starts closing: frames already queued are still written, then the
    /// close frame. Returns the waker to wake, or None if already closing.
    pub fn close(&self, reason: CloseReason) -> Option<Option<Waker>> {
        let mut s = self.lock();
        if s.closing.is_some() {
            return None;
        }
        s.closing = Some(reason);
        Some(s.waker.take())
    }

    /// Whether the connection is closing (refusing new frames).
    pub fn is_closing(&self) -> bool {
        self.lock().closing.is_some()
    }

    /// Called by the writer: take everything queued, or learn that the
    /// queue is empty (then `waker` is stored and woken by the next push).
    pub fn next(&self, waker: &Waker) -> Next {
        let mut s = self.lock();
        if s.discard {
            s.frames = VecDeque::new();
        }
        if !s.frames.is_empty() {
            return Next::Frames(std::mem::take(&mut s.frames));
        }
        if let Some(reason) = s.closing.clone() {
            return Next::Close(reason);
        }
        match &s.waker {
            Some(w) if w.will_wake(waker) => {}
            _ => s.waker = Some(waker.clone()),
        }
        Next::Idle
    }

    /// Called by the writer after `n` bytes reached the socket.
    pub fn written(&self, n: usize) {
        // Bytes written were counted by the push that queued them, except
        // the close frame the writer adds itself: never let it take the
        // count below zero.
        let _ = self
            .pending_bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |p| {
                Some(p.saturating_sub(n))
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_bytes: usize, max_frames: usize) -> OutboxLimits {
        OutboxLimits {
            max_bytes,
            max_frames,
        }
    }

    #[test]
    fn overflow_by_bytes_closes_as_slow_consumer() {
        let o = Outbox::default();
        let l = limits(10, 100);
        assert!(matches!(
            o.push(Bytes::from_static(b"123456"), l),
            Pushed::Queued(_)
        ));
        assert!(matches!(
            o.push(Bytes::from_static(b"123456"), l),
            Pushed::Overflow(_)
        ));
        assert!(matches!(
            o.push(Bytes::from_static(b"1"), l),
            Pushed::Closed
        ));
        assert!(o.is_closing());
    }

    #[test]
    fn overflow_by_frames() {
        let o = Outbox::default();
        let l = limits(1000, 2);
        assert!(matches!(
            o.push(Bytes::from_static(b"a"), l),
            Pushed::Queued(_)
        ));
        assert!(matches!(
            o.push(Bytes::from_static(b"b"), l),
            Pushed::Queued(_)
        ));
        assert!(matches!(
            o.push(Bytes::from_static(b"c"), l),
            Pushed::Overflow(_)
        ));
    }

    #[test]
    fn written_bytes_free_room() {
        let o = Outbox::default();
        let l = limits(10, 100);
        assert!(matches!(
            o.push(Bytes::from_static(b"123456"), l),
            Pushed::Queued(_)
        ));
        o.written(6);
        assert!(matches!(
            o.push(Bytes::from_static(b"123456"), l),
            Pushed::Queued(_)
        ));
    }

    #[test]
    fn close_keeps_queued_frames_first() {
        let o = Outbox::default();
        let l = OutboxLimits::default();
        let _ = o.push(Bytes::from_static(b"x"), l);
        assert!(o
            .close(CloseReason {
                code: 1000,
                reason: "bye"
            })
            .is_some());
        assert!(o
            .close(CloseReason {
                code: 1000,
                reason: "bye"
            })
            .is_none());
        let waker = futures_util::task::noop_waker();
        assert!(matches!(o.next(&waker), Next::Frames(f) if f.len() == 1));
        assert!(matches!(o.next(&waker), Next::Close(r) if r.code == 1000));
    }
}
