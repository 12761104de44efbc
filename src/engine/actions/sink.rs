//! Where a run's output goes, and how it keeps to the room its pages' queues
//! have: [`Flow`], [`Pacer`], [`Sink`].

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;

use crate::base::command::Target;
use crate::base::protocol::ServerFrame;
use crate::engine::hub::{Hub, OutboxLimits};

/// How long output sent to other connections (`run --to`) waits for room
/// in their queues before it is sent anyway; see [`Pacer`].
pub(crate) const ROOM_PATIENCE: Duration = Duration::from_secs(5);

/// Output frames of a run (or of all the runs of one page) that are queued
/// for pages but not yet written to all of them.
///
/// Each frame is sent as [`Bytes`] that own a share of this account
/// ([`Flow::carry`]); the outbox drops a frame once it is written (or when
/// the page goes away), and that credits the account and, when it is low
/// again, wakes a run waiting for room. Nothing is added to the outbox or
/// to a broadcast: plain frames carry no account.
pub(crate) struct Flow {
    bytes: AtomicUsize,
    frames: AtomicUsize,
    /// At most this much is queued; beyond it the run waits ...
    max_bytes: usize,
    max_frames: usize,
    /// ... until no more than this is queued.
    low_bytes: usize,
    low_frames: usize,
    /// A run waits for [`Flow::room`].
    waiting: AtomicBool,
    room: Notify,
}

impl Flow {
    /// An account that lets a page's outgoing queue (of `limits`) be half
    /// full of run output at most, and waits for a quarter.
    pub(crate) fn new(limits: OutboxLimits) -> Arc<Flow> {
        let max_bytes = (limits.max_bytes / 2).max(1);
        let max_frames = (limits.max_frames / 2).max(1);
        Arc::new(Flow {
            bytes: AtomicUsize::new(0),
            frames: AtomicUsize::new(0),
            max_bytes,
            max_frames,
            low_bytes: max_bytes / 2,
            low_frames: max_frames / 2,
            waiting: AtomicBool::new(false),
            room: Notify::new(),
        })
    }

    /// Whether another frame may be queued now.
    pub(crate) fn has_room(&self) -> bool {
        self.bytes.load(Ordering::SeqCst) < self.max_bytes
            && self.frames.load(Ordering::SeqCst) < self.max_frames
    }

    pub(super) fn is_low(&self) -> bool {
        self.bytes.load(Ordering::SeqCst) <= self.low_bytes
            && self.frames.load(Ordering::SeqCst) <= self.low_frames
    }

    /// `frame`, counted until the last page it is queued for lets it go.
    pub(crate) fn carry(self: &Arc<Self>, frame: Bytes) -> Bytes {
        self.bytes.fetch_add(frame.len(), Ordering::SeqCst);
        self.frames.fetch_add(1, Ordering::SeqCst);
        Bytes::from_owner(Carried {
            frame,
            flow: self.clone(),
        })
    }

    /// Waits until what is queued is low again.
    pub(crate) async fn room(&self) {
        loop {
            let notified = self.room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // Set before looking, so that a frame written after the look
            // sees it and wakes us (both sides are SeqCst).
            self.waiting.store(true, Ordering::SeqCst);
            if self.is_low() {
                return;
            }
            notified.await;
        }
    }
}

/// A frame's share of a [`Flow`]; see [`Flow::carry`].
pub(super) struct Carried {
    pub(super) frame: Bytes,
    pub(super) flow: Arc<Flow>,
}

impl AsRef<[u8]> for Carried {
    fn as_ref(&self) -> &[u8] {
        &self.frame
    }
}

impl Drop for Carried {
    fn drop(&mut self) {
        let flow = &self.flow;
        flow.bytes.fetch_sub(self.frame.len(), Ordering::SeqCst);
        flow.frames.fetch_sub(1, Ordering::SeqCst);
        if flow.waiting.load(Ordering::SeqCst) && flow.is_low() {
            flow.waiting.store(false, Ordering::SeqCst);
            flow.room.notify_waiters();
        }
    }
}

/// How a run's output keeps to its [`Flow`].
///
/// Output to the page that started the run waits as long as it takes (the
/// run's timeout and the page's departure still apply). Output to other
/// connections (`run --to`) waits at most `patience` for a queue that does
/// not drain; then it is sent regardless until the flow is low again, so
/// that one page that stopped reading is closed as a slow consumer, as a
/// broadcast would close it, instead of stalling the run for everyone.
pub(super) struct Pacer {
    pub(super) flow: Arc<Flow>,
    pub(super) patience: Option<Duration>,
    /// Patience ran out: send without waiting until the flow is low.
    pub(super) overrun: bool,
}

impl Pacer {
    pub(super) fn new(flow: Arc<Flow>, patience: Option<Duration>) -> Self {
        Pacer {
            flow,
            patience,
            overrun: false,
        }
    }

    /// Whether a frame may be sent now.
    pub(super) fn ready(&mut self) -> bool {
        if self.overrun && self.flow.is_low() {
            self.overrun = false;
        }
        self.overrun || self.flow.has_room()
    }

    /// Waits for room, or for the patience to run out.
    pub(super) async fn wait(&mut self) {
        match self.patience {
            None => self.flow.room().await,
            Some(patience) => {
                if tokio::time::timeout(patience, self.flow.room())
                    .await
                    .is_err()
                {
                    self.overrun = true;
                }
            }
        }
    }
}

/// Where one run's frames go.
pub(super) struct Sink {
    pub(super) hub: Hub,
    /// The connections that get frames; None for the Monitor only.
    pub(super) target: Option<Target>,
    /// The element named in frames (when the target is a name).
    pub(super) name: Option<String>,
    /// The page whose going away ends the run.
    pub(super) bound: Option<u64>,
    pub(super) action: String,
    pub(super) run: u64,
    pub(super) flow: Arc<Flow>,
    /// Where the run's tail is kept for late joiners.
    pub(super) actions: Weak<super::Inner>,
}

/// What [`Sink::send`] does with the run's tail, under the delivery turn.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum TailStep {
    /// An output line: keep it for late joiners.
    Record,
    /// The run's end: late joiners get nothing any more.
    End,
}

impl Sink {
    /// Delivers `frame` and records it in (or ends) the run's tail at the
    /// same point of the delivery order; false when the page the run is
    /// bound to is gone for good.
    pub(super) fn send(&self, frame: &ServerFrame<'_>, step: TailStep) -> bool {
        let Some(target) = &self.target else {
            return true;
        };
        let bytes = frame.encode();
        let tail = || {
            if let Some(actions) = self.actions.upgrade() {
                match step {
                    TailStep::Record => actions.record_line(self.run, &bytes),
                    TailStep::End => actions.end_tail(self.run),
                }
            }
        };
        let delivered = self
            .hub
            .deliver_after(target, &self.flow.carry(bytes.clone()), tail);
        match (self.bound, delivered) {
            (None, _) => true,
            (Some(_), Ok(d)) if d.reached > 0 => true,
            // Not queued: closed, closing, or dropped and waiting to come
            // back (the output is kept for it meanwhile).
            (Some(_), _) => self.is_live(),
        }
    }

    /// Records one output line in the Monitor, as it is read.
    pub(super) fn monitor(&self, stream: &str, text: &str) {
        self.hub.monitor().emit(format_args!(
            "action {}[{}] {stream}: {text}",
            self.action, self.run
        ));
    }

    /// Passes on one output line; false when the bound page is gone.
    pub(super) fn line(&self, stream: &str, text: &str) -> bool {
        let line = ServerFrame::Line {
            name: self.name.as_deref(),
            action: &self.action,
            stream,
            text,
        };
        self.send(&line, TailStep::Record)
    }

    /// Whether the page the run is bound to is live, or may still come
    /// back.
    pub(super) fn is_live(&self) -> bool {
        self.bound.map_or(true, |id| self.hub.is_live_or_parked(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering::Relaxed;

    #[tokio::test]
    async fn a_flow_holds_back_at_half_and_wakes_at_a_quarter() {
        let flow = Flow::new(OutboxLimits {
            max_bytes: 400,
            max_frames: 1000,
        });
        let mut queued = Vec::new();
        while flow.has_room() {
            queued.push(flow.carry(Bytes::from(vec![b'x'; 50])));
        }
        // Half of 400 bytes, in frames of 50.
        assert_eq!(queued.len(), 4);
        let waiter = tokio::spawn({
            let flow = flow.clone();
            async move { flow.room().await }
        });
        // One written: 150 bytes are still queued, more than a quarter.
        queued.pop();
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        // Another written to one page, but still queued for a second one.
        let second_page = queued.pop().expect("frame");
        let first_page = second_page.clone();
        drop(first_page);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        assert!(!flow.is_low());
        drop(second_page);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .expect("waiter");
        assert!(flow.has_room() && flow.is_low());
    }

    #[test]
    fn a_broadcast_frame_is_not_counted() {
        let flow = Flow::new(OutboxLimits::default());
        let carried = flow.carry(Bytes::from_static(b"line"));
        assert_eq!(&carried[..], b"line");
        assert_eq!(flow.frames.load(Relaxed), 1);
        let slice = carried.slice(2..);
        drop(carried);
        // A frame written in part still counts until the rest goes.
        assert_eq!(flow.frames.load(Relaxed), 1);
        drop(slice);
        assert_eq!(
            (flow.frames.load(Relaxed), flow.bytes.load(Relaxed)),
            (0, 0)
        );
    }
}
