//! A connection's bounded queue of encoded frames, shared between the
//! delivering side (any thread) and the connection's own task.
//!
//! Frames are `Bytes`: a broadcast pushes clones of one buffer, never copies.
//! An idle outbox owns no allocation, nor does one with a single frame
//! queued ([`Frames`]).
//!
//! Two writers take frames from here, never at the same time:
//!
//! - a *flush* ([`Outbox::flush`]), when the outbox holds the connection's
//!   socket (plain TCP): a delivery queues its frame without waking the
//!   page's task, and a flush, run soon after for all the pages the
//!   delivery reached, writes what is queued straight to the socket under
//!   this lock, several frames in one vectored write if several are
//!   waiting. Only what the socket does not take (it would block, or took
//!   part) is left for the task, which is woken for it. A delivery may
//!   also push and flush in one step ([`Outbox::push_and_flush`]): then a
//!   frame that finds the queue empty is written without being queued;
//! - the connection's task ([`Outbox::next`]), for TLS and other streams,
//!   and for whatever a flush left. While it holds frames taken from here,
//!   `writing` is set and flushes leave the queue alone.
//!
//! Either way frames reach the peer in push order.

use std::io::IoSlice;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Waker;

use bytes::Bytes;
use tokio::net::TcpStream;

use super::queue::{Frames, MAX_IOVECS};

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
pub(crate) enum Pushed {
    /// Queued for the connection's task; the waker (if the task was parked)
    /// must be woken.
    Queued(Option<Waker>),
    /// Queued for a flush: the caller must see that [`Outbox::flush`] runs.
    ToFlush,
    /// The queue was full: the connection is now closing as a slow consumer.
    Overflow(Option<Waker>),
    /// The connection is already closing; nothing was queued.
    Closed,
    /// Written at once ([`Outbox::push_and_flush`] only): what the socket
    /// did not take is queued for the task, to be woken with the waker.
    Flushed(Flushed),
}

/// What a flush wrote, and the task to wake for what it could not write.
#[derive(Debug, Default)]
pub(crate) struct Flushed {
    /// Whole frames written.
    pub(crate) frames: u64,
    /// Bytes written.
    pub(crate) bytes: usize,
    /// Frames are left that the socket would not take: wake the task.
    pub(crate) wake: Option<Waker>,
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
    frames: Frames,
    /// Set once: frames after it are refused; the writer sends the close
    /// frame after the queue drains (or at once, dropping the queue, when
    /// `discard` says the peer is not reading anyway).
    /// (Boxed: set once in a connection's life, and kept by every page.)
    closing: Option<Box<CloseReason>>,
    discard: bool,
    /// The task holds frames taken from here and is writing them: a flush
    /// must not write past them.
    writing: bool,
    /// The socket, for flushes; `None` for TLS and other streams.
    socket: Option<Arc<TcpStream>>,
    /// A push asked for a flush that has not run yet: later pushes ride on
    /// it, so frames that arrive meanwhile go out in the same write.
    flush_due: bool,
    waker: Option<Waker>,
}

/// The queue itself, and what went through it.
///
/// `repr(C)` keeps the counters beside the lock, on the cache line every
/// write touches anyway: in a fan-out to thousands of pages, one more line
/// per page is a measurable cost.
#[derive(Default)]
#[repr(C)]
pub(crate) struct Outbox {
    /// Bytes queued or taken by the writer but not yet written. Outside the
    /// lock: the writer subtracts after every write without taking it, and
    /// pushes (under the lock) read it to enforce the limit.
    pending_bytes: AtomicUsize,
    /// Frames written to the socket.
    msgs_out: AtomicU64,
    /// Bytes written to the socket (frame headers included).
    bytes_out: AtomicU64,
    state: Mutex<State>,
}

/// What the writer should do next.
pub(crate) enum Next {
    /// Write these frames (the whole queue, taken at once).
    Frames(Frames),
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
    /// [`Pushed`] says who writes it: a flush or the task.
    pub(crate) fn push(&self, frame: &Bytes, limits: OutboxLimits) -> Pushed {
        self.push_locked(&mut self.lock(), frame, limits)
    }

    /// [`Outbox::push`] and, when a flush is what it asks for, that flush,
    /// under one lock. A frame that finds nothing queued and nobody writing
    /// goes to the socket without being queued at all, as a delivery that
    /// keeps up finds most pages: no clone of the frame to keep, no queue
    /// to take it back from.
    pub(crate) fn push_and_flush(&self, frame: &Bytes, limits: OutboxLimits) -> Pushed {
        let mut guard = self.lock();
        let s = &mut *guard;
        if let Some(sent) = self.send_unqueued(s, frame, limits) {
            return Pushed::Flushed(sent);
        }
        match self.push_locked(s, frame, limits) {
            Pushed::ToFlush => Pushed::Flushed(self.flush_locked(s)),
            other => other,
        }
    }

    /// Sends `frame` straight to the socket if it may skip the queue: the
    /// queue is empty, nobody is writing or about to, and [`Outbox::push`]
    /// would have taken it. What the socket does not take is queued for
    /// the task, as a flush leaves it.
    fn send_unqueued(&self, s: &mut State, frame: &Bytes, limits: OutboxLimits) -> Option<Flushed> {
        let may_skip = !s.writing
            && !s.flush_due
            && s.frames.is_empty()
            && s.closing.is_none()
            && self.pending_bytes.load(Ordering::Relaxed) + frame.len() <= limits.max_bytes
            && limits.max_frames > 0;
        if !may_skip {
            return None;
        }
        let socket = socket2::SockRef::from(s.socket.as_deref()?);
        // Would block, or failed: the task finds out which when it writes
        // the frame itself.
        let sent = socket.send(frame).unwrap_or(0);
        if sent == frame.len() {
            self.count_out(1, sent);
            return Some(Flushed {
                frames: 1,
                bytes: sent,
                wake: None,
            });
        }
        let rest = frame.slice(sent..);
        self.pending_bytes.fetch_add(rest.len(), Ordering::Relaxed);
        s.frames.push_back(rest);
        self.count_out(0, sent);
        Some(Flushed {
            frames: 0,
            bytes: sent,
            wake: s.waker.take(),
        })
    }

    fn push_locked(&self, s: &mut State, frame: &Bytes, limits: OutboxLimits) -> Pushed {
        if s.closing.is_some() {
            return Pushed::Closed;
        }
        let pending = self.pending_bytes.load(Ordering::Relaxed);
        if pending + frame.len() > limits.max_bytes || s.frames.len() >= limits.max_frames {
            s.frames = Frames::default();
            s.closing = Some(Box::new(CloseReason {
                code: crate::engine::hub::CLOSE_SLOW_CONSUMER,
                reason: "slow consumer",
            }));
            s.discard = true;
            return Pushed::Overflow(s.waker.take());
        }
        self.pending_bytes.fetch_add(frame.len(), Ordering::Relaxed);
        s.frames.push_back(frame.clone());
        if s.writing || s.flush_due {
            // The task is writing (it asks for more before it parks), or a
            // flush is due and writes this frame too.
            Pushed::Queued(None)
        } else if s.socket.is_some() {
            s.flush_due = true;
            Pushed::ToFlush
        } else {
            Pushed::Queued(s.waker.take())
        }
    }

    /// Writes what is queued to the socket, unless the task is writing or
    /// there is no socket (see the module doc).
    pub(crate) fn flush(&self) -> Flushed {
        self.flush_locked(&mut self.lock())
    }

    fn flush_locked(&self, s: &mut State) -> Flushed {
        let mut done = Flushed::default();
        s.flush_due = false;
        if s.writing || s.frames.is_empty() {
            return done;
        }
        let Some(socket) = s.socket.as_deref() else {
            // Detached since the push: the task writes it, if it still can.
            done.wake = s.waker.take();
            return done;
        };
        // Straight to send(2), not through tokio's `try_write`: its
        // readiness check reads one more cache line per page, a measurable
        // cost when a fan-out touches thousands. A send that would block
        // leaves tokio's readiness stale, which only costs the task one
        // failed write before it waits.
        let socket = socket2::SockRef::from(socket);
        loop {
            // One frame (a fan-out's usual case) needs no slice array: its
            // 64 slots cost more instructions than the rest of the flush.
            let (sent, offered) = if let Some(only) = s.frames.only() {
                (socket.send(only), only.len())
            } else {
                let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
                let (count, offered) = s.frames.io_slices(&mut slices);
                (socket.send_vectored(&slices[..count]), offered)
            };
            // Would block, or failed: the task finds out which when it
            // writes what is left itself.
            let Ok(n) = sent else { break };
            done.bytes += n;
            done.frames += s.frames.consume(n);
            // A short write means the socket is full.
            if n < offered || s.frames.is_empty() {
                break;
            }
        }
        self.written(done.frames, done.bytes);
        if !s.frames.is_empty() {
            done.wake = s.waker.take();
        }
        done
    }

    /// Lets flushes write to `socket` (see the module doc).
    pub(crate) fn attach(&self, socket: Arc<TcpStream>) {
        self.lock().socket = Some(socket);
    }

    /// Ends flushes. The connection's task calls this when it ends, so the
    /// socket closes when the task lets it go and nothing is written after.
    pub(crate) fn detach(&self) {
        self.lock().socket = None;
    }

    /// Starts closing: frames already queued are still written, then the
    /// close frame. Returns the waker to wake, or None if already closing.
    pub(crate) fn close(&self, reason: CloseReason) -> Option<Option<Waker>> {
        let mut s = self.lock();
        if s.closing.is_some() {
            return None;
        }
        s.closing = Some(Box::new(reason));
        Some(s.waker.take())
    }

    /// Whether the connection is closing (refusing new frames).
    #[cfg(test)]
    fn is_closing(&self) -> bool {
        self.lock().closing.is_some()
    }

    /// Called by the writer: take everything queued, or learn that the
    /// queue is empty (then `waker` is stored and woken by the next push).
    pub(crate) fn next(&self, waker: &Waker) -> Next {
        let mut s = self.lock();
        if s.discard {
            s.frames = Frames::default();
        }
        // Asking again means the writer wrote all it took.
        s.writing = !s.frames.is_empty();
        if s.writing {
            return Next::Frames(std::mem::take(&mut s.frames));
        }
        if let Some(reason) = s.closing.as_deref().cloned() {
            return Next::Close(reason);
        }
        match &s.waker {
            Some(w) if w.will_wake(waker) => {}
            _ => s.waker = Some(waker.clone()),
        }
        Next::Idle
    }

    /// Frames and bytes written to the socket so far.
    pub(crate) fn written_so_far(&self) -> (u64, u64) {
        (
            self.msgs_out.load(Ordering::Relaxed),
            self.bytes_out.load(Ordering::Relaxed),
        )
    }

    /// Called by the writer after `n` bytes, completing `frames` frames,
    /// reached the socket.
    pub(crate) fn written(&self, frames: u64, n: usize) {
        self.count_out(frames, n);
        // Bytes written were counted by the push that queued them, except
        // the close frame the writer adds itself: never let it take the
        // count below zero.
        let _ = self
            .pending_bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |p| {
                Some(p.saturating_sub(n))
            });
    }

    /// Counts `frames` and `n` bytes as written to the socket.
    fn count_out(&self, frames: u64, n: usize) {
        self.msgs_out.fetch_add(frames, Ordering::Relaxed);
        self.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
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
            o.push(&Bytes::from_static(b"123456"), l),
            Pushed::Queued(_)
        ));
        assert!(matches!(
            o.push(&Bytes::from_static(b"123456"), l),
            Pushed::Overflow(_)
        ));
        assert!(matches!(
            o.push(&Bytes::from_static(b"1"), l),
            Pushed::Closed
        ));
        assert!(o.is_closing());
    }

    #[test]
    fn overflow_by_frames() {
        let o = Outbox::default();
        let l = limits(1000, 2);
        assert!(matches!(
            o.push(&Bytes::from_static(b"a"), l),
            Pushed::Queued(_)
        ));
        assert!(matches!(
            o.push(&Bytes::from_static(b"b"), l),
            Pushed::Queued(_)
        ));
        assert!(matches!(
            o.push(&Bytes::from_static(b"c"), l),
            Pushed::Overflow(_)
        ));
    }

    #[test]
    fn written_bytes_free_room() {
        let o = Outbox::default();
        let l = limits(10, 100);
        assert!(matches!(
            o.push(&Bytes::from_static(b"123456"), l),
            Pushed::Queued(_)
        ));
        o.written(1, 6);
        assert!(matches!(
            o.push(&Bytes::from_static(b"123456"), l),
            Pushed::Queued(_)
        ));
    }

    #[test]
    fn close_keeps_queued_frames_first() {
        let o = Outbox::default();
        let l = OutboxLimits::default();
        let _ = o.push(&Bytes::from_static(b"x"), l);
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

    /// A connected pair: the server's end (for the outbox) and the client's.
    async fn socket_pair() -> (Arc<TcpStream>, TcpStream) {
        let (server, client) = crate::testutil::tcp_pair().await;
        (Arc::new(server), client)
    }

    #[tokio::test]
    async fn a_flush_writes_all_that_is_queued_without_the_task() {
        use tokio::io::AsyncReadExt as _;
        let (server, mut client) = socket_pair().await;
        let o = Outbox::default();
        let l = OutboxLimits::default();
        o.attach(server);
        // The first push asks for a flush; the next ones ride on it.
        assert!(matches!(
            o.push(&Bytes::from_static(b"one "), l),
            Pushed::ToFlush
        ));
        for part in ["two ", "three"] {
            assert!(matches!(
                o.push(&Bytes::from_static(part.as_bytes()), l),
                Pushed::Queued(None)
            ));
        }
        let flushed = o.flush();
        assert_eq!((flushed.frames, flushed.bytes), (3, 13));
        assert!(flushed.wake.is_none());
        let mut got = [0u8; 13];
        client.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"one two three");
        // Nothing is left for the task, and a second flush has nothing to do.
        let waker = futures_util::task::noop_waker();
        assert!(matches!(o.next(&waker), Next::Idle));
        assert_eq!(o.flush().bytes, 0);
    }

    #[tokio::test]
    async fn a_flush_never_overtakes_frames_the_task_holds() {
        let (server, _client) = socket_pair().await;
        let o = Outbox::default();
        let l = OutboxLimits::default();
        let waker = futures_util::task::noop_waker();
        let _ = o.push(&Bytes::from_static(b"first"), l);
        o.attach(server);
        // The task takes "first" and has not written it yet.
        assert!(matches!(o.next(&waker), Next::Frames(f) if f.len() == 1));
        assert!(matches!(
            o.push(&Bytes::from_static(b"second"), l),
            Pushed::Queued(None)
        ));
        // Nor does a delivery that pushes and flushes at once.
        assert!(matches!(
            o.push_and_flush(&Bytes::from_static(b"more"), l),
            Pushed::Queued(None)
        ));
        assert_eq!(o.flush().bytes, 0);
        assert_eq!(o.written_so_far(), (0, 0));
        assert!(matches!(o.next(&waker), Next::Frames(f) if f.iter().eq(["second", "more"])));
        // All written: the next frame is for a flush again.
        assert!(matches!(o.next(&waker), Next::Idle));
        assert!(matches!(
            o.push(&Bytes::from_static(b"third"), l),
            Pushed::ToFlush
        ));
        assert_eq!(o.flush().frames, 1);
        // Without a socket, the task is woken instead.
        o.detach();
        assert!(matches!(
            o.push(&Bytes::from_static(b"fourth"), l),
            Pushed::Queued(Some(_))
        ));
    }

    /// An outbox on a socket whose client never reads (so its buffers fill
    /// up), with its task parked once (so a flush that leaves frames wakes
    /// it); a large frame, and limits that let such frames pile up.
    async fn outbox_on_a_socket_nobody_reads() -> (Outbox, TcpStream, Bytes, OutboxLimits) {
        let (server, client) = socket_pair().await;
        let o = Outbox::default();
        o.attach(server);
        assert!(matches!(
            o.next(&futures_util::task::noop_waker()),
            Next::Idle
        ));
        let frame = Bytes::from(vec![7u8; 256 * 1024]);
        let limits = OutboxLimits {
            max_bytes: 1 << 30,
            max_frames: 4096,
        };
        (o, client, frame, limits)
    }

    #[tokio::test]
    async fn what_a_full_socket_does_not_take_is_left_for_the_task() {
        let (o, _client, frame, limits) = outbox_on_a_socket_nobody_reads().await;
        let waker = futures_util::task::noop_waker();
        let mut left = None;
        for _ in 0..1000 {
            assert!(matches!(o.push(&frame, limits), Pushed::ToFlush));
            let flushed = o.flush();
            if flushed.wake.is_some() {
                left = Some(flushed);
                break;
            }
            assert_eq!(flushed.bytes, frame.len());
        }
        let flushed = left.expect("the socket filled up");
        assert_eq!(flushed.frames, 0);
        match o.next(&waker) {
            Next::Frames(f) => {
                assert_eq!(f.len(), 1);
                assert!(f
                    .iter()
                    .all(|rest| rest.len() == frame.len() - flushed.bytes));
            }
            _ => panic!("the rest of the frame was not left for the task"),
        }
    }

    #[tokio::test]
    async fn a_frame_that_finds_the_queue_empty_is_written_without_being_queued() {
        use tokio::io::AsyncReadExt as _;
        let (server, mut client) = socket_pair().await;
        let o = Outbox::default();
        let l = OutboxLimits::default();
        o.attach(server);
        match o.push_and_flush(&Bytes::from_static(b"one "), l) {
            Pushed::Flushed(f) => assert_eq!((f.frames, f.bytes, f.wake.is_none()), (1, 4, true)),
            other => panic!("not written at once: {other:?}"),
        }
        assert_eq!(o.written_so_far(), (1, 4));
        assert_eq!(o.pending_bytes.load(Ordering::Relaxed), 0);
        // Nothing was queued: the task has nothing to write.
        let waker = futures_util::task::noop_waker();
        assert!(matches!(o.next(&waker), Next::Idle));
        // Behind a flush that is due, a frame is queued and goes with it.
        assert!(matches!(
            o.push(&Bytes::from_static(b"two "), l),
            Pushed::ToFlush
        ));
        match o.push_and_flush(&Bytes::from_static(b"three"), l) {
            Pushed::Queued(None) => {}
            other => panic!("overtook the flush that is due: {other:?}"),
        }
        assert_eq!(o.flush().frames, 2);
        let mut got = [0u8; 13];
        client.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"one two three");
        // Closing: refused, as by a plain push.
        let _ = o.close(CloseReason {
            code: 1000,
            reason: "bye",
        });
        assert!(matches!(
            o.push_and_flush(&Bytes::from_static(b"four"), l),
            Pushed::Closed
        ));
    }

    #[tokio::test]
    async fn what_a_full_socket_does_not_take_of_an_unqueued_frame_is_left_for_the_task() {
        let (o, _client, frame, limits) = outbox_on_a_socket_nobody_reads().await;
        let waker = futures_util::task::noop_waker();
        let mut sent = 0;
        let left = loop {
            match o.push_and_flush(&frame, limits) {
                Pushed::Flushed(f) if f.wake.is_none() => {
                    assert_eq!(f.bytes, frame.len());
                    sent += f.bytes;
                    assert!(sent < 1 << 30, "the socket never filled up");
                }
                Pushed::Flushed(f) => break f,
                other => panic!("queued with the queue empty: {other:?}"),
            }
        };
        assert_eq!(left.frames, 0);
        let rest = frame.len() - left.bytes;
        assert_eq!(o.pending_bytes.load(Ordering::Relaxed), rest);
        // The next frame is queued behind the rest, and the flush it asks
        // for finds the socket still full: both are the task's, in order.
        let second = match o.push_and_flush(&frame, limits) {
            Pushed::Flushed(f) => f,
            other => panic!("not queued for a flush: {other:?}"),
        };
        assert_eq!((second.frames, second.bytes), (0, 0));
        match o.next(&waker) {
            Next::Frames(f) => {
                let lens: Vec<usize> = f.iter().map(|b| b.len()).collect();
                assert_eq!(lens, [rest, frame.len()]);
            }
            _ => panic!("the rest of the frame was not left for the task"),
        }
    }
}
