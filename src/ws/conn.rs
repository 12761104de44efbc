//! One page's connection after the upgrade: reads command lines, writes
//! queued frames, answers pings, and closes cleanly.
//!
//! The task owns no buffer while its page is idle. Reads go into a scratch
//! buffer that belongs to the worker thread, not the connection; only the
//! bytes of a frame that arrived in part are kept (`carry`). Writes take the
//! shared `Bytes` of queued frames and hand them to the socket with one
//! vectored write, without copying them.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::{sleep, Sleep};

use super::frame::{self, Limits, Message, MessageAssembler, OpCode};
use crate::exec::{Door, Executor};
use crate::hub::{CloseReason, Conn, Next};
use crate::protocol::{ServerFrame, PROTOCOL_VERSION};

/// Limits of one WebSocket connection.
#[derive(Clone, Copy, Debug)]
pub struct ConnLimits {
    /// Frame and message size limits (larger: close 1009).
    pub frames: Limits,
    /// How long a closing connection waits for its peer's close frame (and
    /// for its last frames to drain) before it is dropped.
    pub close_timeout: Duration,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            frames: Limits::default(),
            close_timeout: Duration::from_secs(5),
        }
    }
}

/// Most frames handed to one vectored write.
const MAX_IOVECS: usize = 64;
/// Reads per wake-up before yielding, so one busy page cannot hold a worker.
const MAX_READS_PER_POLL: usize = 8;

thread_local! {
    /// Read scratch space, one per worker thread, sized for the largest
    /// frame a page may send plus its header.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// What the connection's poll loop asks its async caller to do.
enum Step {
    /// Run these command lines (in order) for the page.
    Lines(Vec<String>),
    /// The connection is over.
    Done(CloseReason),
}

struct Driver<S> {
    io: S,
    conn: Arc<Conn>,
    exec: Executor,
    limits: ConnLimits,
    /// An incomplete frame's bytes, kept until the rest arrives.
    carry: Vec<u8>,
    assembler: MessageAssembler,
    /// Frames taken from the outbox and not yet fully written.
    out: VecDeque<Bytes>,
    /// Bytes of `out.front()` already written.
    out_offset: usize,
    /// Our close frame has been queued (nothing more is read as commands).
    close_sent: bool,
    /// The peer's close frame has arrived.
    close_received: bool,
    /// Read side finished (EOF, error, or peer closed).
    read_done: bool,
    /// Only exists while closing: when to give up on a clean close.
    deadline: Option<Pin<Box<Sleep>>>,
    /// Why the connection is ending, once known.
    reason: Option<CloseReason>,
}

/// Serves one upgraded connection until it closes. `pre` holds bytes the
/// HTTP layer read past the handshake.
pub async fn run<S>(io: S, pre: Bytes, conn: Arc<Conn>, exec: Executor, limits: ConnLimits)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let hello = ServerFrame::Hello {
        index: conn.id(),
        version: PROTOCOL_VERSION,
    };
    exec.hub().send_to(conn.id(), &hello.encode());
    // `pre` may share the HTTP layer's whole read buffer even when it holds
    // no bytes: copy what it holds and let the buffer go now, not when the
    // connection ends.
    let carry = pre.to_vec();
    drop(pre);
    let mut d = Driver {
        io,
        conn: conn.clone(),
        exec: exec.clone(),
        limits,
        carry,
        assembler: MessageAssembler::new(&limits.frames),
        out: VecDeque::new(),
        out_offset: 0,
        close_sent: false,
        close_received: false,
        read_done: false,
        deadline: None,
        reason: None,
    };
    let why = loop {
        match poll_fn(|cx| d.poll_step(cx)).await {
            Step::Lines(lines) => {
                for line in lines {
                    // Boxed so the idle task does not carry the executor's
                    // future in its own state.
                    let reply = Box::pin(exec.run_line(&line, Door::Page(conn.id()))).await;
                    let frame = if reply.ok {
                        ServerFrame::Reply {
                            ok: true,
                            output: &reply.output,
                        }
                    } else {
                        ServerFrame::Error {
                            message: &reply.output,
                        }
                    };
                    exec.hub().send_to(conn.id(), &frame.encode());
                }
            }
            Step::Done(why) => break why,
        }
    };
    exec.hub().gone(&conn, &why);
    // Best effort: the peer may already be gone.
    let _ = tokio::time::timeout(Duration::from_secs(1), d.io.shutdown()).await;
}

impl<S: AsyncRead + AsyncWrite + Unpin> Driver<S> {
    fn finish(&mut self, reason: CloseReason) -> Poll<Step> {
        Poll::Ready(Step::Done(self.reason.take().unwrap_or(reason)))
    }

    fn poll_step(&mut self, cx: &mut Context<'_>) -> Poll<Step> {
        if let Some(done) = self.poll_write(cx) {
            return done;
        }
        let mut lines = Vec::new();
        if let Some(done) = self.poll_read(cx, &mut lines) {
            return done;
        }
        if !lines.is_empty() {
            return Poll::Ready(Step::Lines(lines));
        }
        // Reading may have queued a pong or a close: write it now.
        if let Some(done) = self.poll_write(cx) {
            return done;
        }
        if self.close_sent && self.out.is_empty() && (self.close_received || self.read_done) {
            return self.finish(CloseReason {
                code: 1000,
                reason: "closed",
            });
        }
        if let Some(deadline) = &mut self.deadline {
            if deadline.as_mut().poll(cx).is_ready() {
                return self.finish(CloseReason {
                    code: 1006,
                    reason: "close timed out",
                });
            }
        }
        Poll::Pending
    }

    /// Writes whatever is queued. Returns `Some` when the connection ends.
    fn poll_write(&mut self, cx: &mut Context<'_>) -> Option<Poll<Step>> {
        loop {
            if self.out.is_empty() {
                match self.conn.next_out(cx.waker()) {
                    Next::Frames(frames) => self.out = frames,
                    Next::Close(reason) => {
                        if self.close_sent {
                            return None;
                        }
                        self.close_sent = true;
                        self.out
                            .push_back(frame::encode_close(reason.code, reason.reason));
                        self.reason.get_or_insert(reason);
                        self.deadline = Some(Box::pin(sleep(self.limits.close_timeout)));
                    }
                    Next::Idle => {
                        // Give back the queue's memory while idle.
                        self.out = VecDeque::new();
                        return None;
                    }
                }
            }
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            let mut count = 0;
            for (i, f) in self.out.iter().take(MAX_IOVECS).enumerate() {
                let bytes = if i == 0 {
                    f.get(self.out_offset..).unwrap_or(&[])
                } else {
                    f
                };
                slices[count] = IoSlice::new(bytes);
                count += 1;
            }
            match Pin::new(&mut self.io).poll_write_vectored(cx, &slices[..count]) {
                Poll::Pending => return None,
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                    return Some(self.finish(CloseReason {
                        code: 1006,
                        reason: "connection lost",
                    }))
                }
                Poll::Ready(Ok(n)) => self.advance(n),
            }
        }
    }

    /// Drops the first `n` written bytes from `out`.
    fn advance(&mut self, mut n: usize) {
        let written = n;
        let mut frames = 0;
        while let Some(front) = self.out.front() {
            let left = front.len() - self.out_offset;
            if n < left {
                self.out_offset += n;
                break;
            }
            n -= left;
            self.out_offset = 0;
            self.out.pop_front();
            frames += 1;
        }
        self.conn.written(frames, written);
    }

    /// Reads and handles what the page sent. Returns `Some` when the
    /// connection ends.
    fn poll_read(&mut self, cx: &mut Context<'_>, lines: &mut Vec<String>) -> Option<Poll<Step>> {
        // After the peer's close frame nothing more is read: what follows
        // it means nothing, and buffering it would cost memory.
        if self.read_done || self.close_received {
            return None;
        }
        // Bytes the HTTP layer read past the handshake come first.
        if !self.carry.is_empty() && !self.close_received {
            let mut carry = std::mem::take(&mut self.carry);
            let used = self.handle_bytes(&mut carry, lines);
            carry.drain(..used);
            self.carry = carry;
        }
        for _ in 0..MAX_READS_PER_POLL {
            let read = SCRATCH.with(|scratch| {
                let mut scratch = scratch.borrow_mut();
                let size = self.limits.frames.max_frame + frame::MAX_HEADER_LEN + 4;
                if scratch.len() < size {
                    scratch.resize(size, 0);
                }
                let mut buf = ReadBuf::new(&mut scratch[..]);
                match Pin::new(&mut self.io).poll_read(cx, &mut buf) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(Err(_)) => Poll::Ready(0),
                    Poll::Ready(Ok(())) => {
                        let n = buf.filled().len();
                        if n > 0 {
                            self.take_bytes(&mut scratch[..n], lines);
                        }
                        Poll::Ready(n)
                    }
                }
            });
            match read {
                Poll::Pending => return None,
                Poll::Ready(0) => {
                    self.read_done = true;
                    if !self.close_sent {
                        return Some(self.finish(CloseReason {
                            code: 1006,
                            reason: "connection lost",
                        }));
                    }
                    return None;
                }
                Poll::Ready(_) => {
                    if self.close_received || !lines.is_empty() {
                        return None;
                    }
                }
            }
        }
        // More may be waiting: come back after others had their turn.
        cx.waker().wake_by_ref();
        None
    }

    /// Handles freshly read bytes, keeping an incomplete frame in `carry`.
    fn take_bytes(&mut self, fresh: &mut [u8], lines: &mut Vec<String>) {
        if self.carry.is_empty() {
            let used = self.handle_bytes(fresh, lines);
            if let Some(rest) = fresh.get(used..) {
                self.carry.extend_from_slice(rest);
            }
        } else {
            let mut carry = std::mem::take(&mut self.carry);
            carry.extend_from_slice(fresh);
            let used = carry.len().min(self.handle_bytes(&mut carry, lines));
            carry.drain(..used);
            if carry.is_empty() {
                carry = Vec::new();
            }
            self.carry = carry;
        }
    }

    /// Parses and handles whole frames from `buf`; returns the bytes used.
    fn handle_bytes(&mut self, buf: &mut [u8], lines: &mut Vec<String>) -> usize {
        let mut used = 0;
        while !self.close_received {
            let Some(rest) = buf.get_mut(used..) else {
                break;
            };
            let parsed = frame::next_frame(rest, &self.limits.frames).and_then(|next| match next {
                None => Ok(None),
                Some((f, n)) => self.assembler.push(f).map(|m| Some((m, n))),
            });
            match parsed {
                Ok(None) => break,
                Ok(Some((message, n))) => {
                    used += n;
                    let hub = self.exec.hub();
                    hub.seen(&self.conn);
                    match message {
                        None => {}
                        Some(Message::Text(text)) => {
                            self.conn.received(text.len());
                            if !self.close_sent {
                                lines.push(text.into_owned());
                            }
                        }
                        Some(Message::Binary(_)) => self.protocol_close(CloseReason {
                            code: frame::close_code::UNSUPPORTED,
                            reason: "binary frames are not accepted",
                        }),
                        Some(Message::Ping(payload)) if !self.close_sent => {
                            let pong = frame::encode_frame(OpCode::Pong, payload);
                            hub.send_to(self.conn.id(), &pong);
                        }
                        Some(Message::Ping(_) | Message::Pong(_)) => {}
                        Some(Message::Close(close)) => {
                            self.close_received = true;
                            let code = close.map_or(1000, |c| c.code);
                            // Echo the page's code, as RFC 6455 asks.
                            self.close_with(CloseReason {
                                code: if code == 1005 { 1000 } else { code },
                                reason: "closed by page",
                            });
                        }
                    }
                }
                Err(e) => {
                    self.protocol_close(CloseReason {
                        code: e.close_code(),
                        reason: e.reason(),
                    });
                    // Nothing after a broken frame can be trusted.
                    used = buf.len();
                    self.read_done = true;
                    break;
                }
            }
        }
        used
    }

    fn protocol_close(&mut self, reason: CloseReason) {
        self.exec.hub().monitor().emit(format_args!(
            "ws {} protocol error: {} (close {})",
            self.conn.id(),
            reason.reason,
            reason.code
        ));
        self.close_with(reason);
    }

    /// Starts closing this connection (it leaves the listing at once).
    fn close_with(&mut self, reason: CloseReason) {
        self.reason.get_or_insert(reason.clone());
        self.exec.hub().close_one(self.conn.id(), reason);
    }
}
