//! One connection after the upgrade: reads messages, writes queued frames,
//! answers pings, and closes cleanly.
//!
//! The task owns no buffer while its peer is idle. Reads go into a scratch
//! buffer that belongs to the worker thread, not the connection; only the
//! bytes of a frame that arrived in part are kept (`carry`). Writes take the
//! shared `Bytes` of queued frames and hand them to the socket with one
//! vectored write, without copying them.
//!
//! What a complete message means is up to a [`MessageHandler`]: for a page
//! ([`run`]) a text message is a command line for the executor; the
//! conformance harness (`examples/autobahn-echo.rs`) drives the same task
//! with [`EchoHandler`], which sends every message back.

use std::borrow::Cow;
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

use super::frame::{self, Arriving, Limits, Message, MessageAssembler, OpCode, ProtocolError};
use crate::exec::{Door, Executor};
use crate::hub::{CloseReason, Conn, Hub, Next};
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

/// Size of each worker thread's read scratch buffer. It does not bound what
/// a peer may send: a frame larger than one read grows in `carry`, up to
/// the frame limit, so large limits cost memory only while such a frame is
/// arriving.
const SCRATCH_LEN: usize = 64 * 1024;

thread_local! {
    /// Read scratch space, one per worker thread.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// What the connection does next with a message its peer sent.
#[derive(Debug)]
pub enum Action {
    /// Nothing more.
    Ignore,
    /// Queue this encoded frame for the peer, after what is queued already
    /// (so it keeps its place among pongs and other replies).
    Send(Bytes),
    /// Hand this line to [`MessageHandler::run`] once the bytes read so far
    /// have been handled; reading waits until it has run.
    Run(String),
    /// Refuse the message: close the connection with this code and reason.
    Close(CloseReason),
}

/// What a connection does with the complete data messages its peer sends.
/// Control frames (ping, pong, close) and every protocol rule are handled
/// by the connection itself.
///
/// `on_text` and `on_binary` are called from inside the read loop, in the
/// order the messages arrived, and must not block.
pub trait MessageHandler: Send {
    /// A complete text message (valid UTF-8).
    fn on_text(&mut self, text: Cow<'_, str>) -> Action;

    /// A complete binary message.
    fn on_binary(&mut self, data: Cow<'_, [u8]>) -> Action;

    /// Runs a line that `on_text` or `on_binary` answered with
    /// [`Action::Run`]. Lines run one at a time, in order.
    fn run(&mut self, line: String) -> impl Future<Output = ()> + Send {
        // Only handlers that return Action::Run need to say what it means.
        drop(line);
        async {}
    }
}

/// pagewire's pages: a text message is a command line, run by the executor
/// with the page's rights and answered with a `reply` or an `error` frame;
/// binary messages are refused with 1003.
pub struct PageHandler {
    exec: Executor,
    id: u64,
}

impl MessageHandler for PageHandler {
    fn on_text(&mut self, text: Cow<'_, str>) -> Action {
        Action::Run(text.into_owned())
    }

    fn on_binary(&mut self, _data: Cow<'_, [u8]>) -> Action {
        Action::Close(CloseReason {
            code: frame::close_code::UNSUPPORTED,
            reason: "binary frames are not accepted",
        })
    }

    async fn run(&mut self, line: String) {
        let reply = self.exec.run_line(&line, Door::Page(self.id)).await;
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
        self.exec.hub().send_to(self.id, &frame.encode());
    }
}

/// Sends every text and binary message back to its sender as it came, in
/// one frame. It is what a conformance suite talks to: the transport under
/// test is the very one pages use.
#[derive(Clone, Copy, Debug, Default)]
pub struct EchoHandler;

impl MessageHandler for EchoHandler {
    fn on_text(&mut self, text: Cow<'_, str>) -> Action {
        Action::Send(frame::encode_frame(OpCode::Text, text.as_bytes()))
    }

    fn on_binary(&mut self, data: Cow<'_, [u8]>) -> Action {
        Action::Send(frame::encode_frame(OpCode::Binary, &data))
    }
}

/// What the connection's poll loop asks its async caller to do.
enum Step {
    /// Hand these lines (in order) to the handler's `run`.
    Lines(Vec<String>),
    /// The connection is over.
    Done(CloseReason),
}

struct Driver<S, H> {
    io: S,
    conn: Arc<Conn>,
    hub: Hub,
    handler: H,
    limits: ConnLimits,
    /// An incomplete frame's bytes, kept until the rest arrives.
    carry: Vec<u8>,
    /// How much of the text in `carry` has been checked as UTF-8.
    arriving: Arriving,
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

/// Serves one page's upgraded connection until it closes: greets the page
/// with its index, then runs the command lines it sends. `pre` holds bytes
/// the HTTP layer read past the handshake.
pub async fn run<S>(io: S, pre: Bytes, conn: Arc<Conn>, exec: Executor, limits: ConnLimits)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let hello = ServerFrame::Hello {
        index: conn.id(),
        version: PROTOCOL_VERSION,
    };
    let hub = exec.hub().clone();
    hub.send_to(conn.id(), &hello.encode());
    let handler = PageHandler {
        exec,
        id: conn.id(),
    };
    drive(io, pre, conn, hub, handler, limits).await;
}

/// Serves one upgraded connection until it closes, handing each complete
/// message to `handler`. `conn` must be open in `hub`: frames for the peer
/// (the handler's, pongs, the close) go through its outbox. `pre` holds
/// bytes read past the handshake.
pub async fn drive<S, H>(
    io: S,
    pre: Bytes,
    conn: Arc<Conn>,
    hub: Hub,
    handler: H,
    limits: ConnLimits,
) where
    S: AsyncRead + AsyncWrite + Unpin,
    H: MessageHandler,
{
    let mut d = Driver {
        io,
        conn: conn.clone(),
        hub: hub.clone(),
        handler,
        limits,
        carry: pre.to_vec(),
        arriving: Arriving::default(),
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
                    // Boxed so the idle task does not carry the handler's
                    // future (the executor's, for a page) in its own state.
                    Box::pin(d.handler.run(line)).await;
                }
            }
            Step::Done(why) => break why,
        }
    };
    hub.gone(&conn, &why);
    // Best effort: the peer may already be gone.
    let _ = tokio::time::timeout(Duration::from_secs(1), d.io.shutdown()).await;
}

impl<S: AsyncRead + AsyncWrite + Unpin, H: MessageHandler> Driver<S, H> {
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

    /// Reads and handles what the peer sent. Returns `Some` when the
    /// connection ends.
    fn poll_read(&mut self, cx: &mut Context<'_>, lines: &mut Vec<String>) -> Option<Poll<Step>> {
        // After the peer's close frame nothing more is read: what follows
        // it means nothing, and buffering it would cost memory.
        if self.read_done || self.close_received {
            return None;
        }
        // Bytes the HTTP layer read past the handshake come first.
        if !self.carry.is_empty() {
            self.take_bytes(&mut [], lines);
            if self.close_received || !lines.is_empty() {
                return None;
            }
        }
        for _ in 0..MAX_READS_PER_POLL {
            let read = SCRATCH.with(|scratch| {
                let mut scratch = scratch.borrow_mut();
                if scratch.len() < SCRATCH_LEN {
                    scratch.resize(SCRATCH_LEN, 0);
                }
                let mut buf = ReadBuf::new(&mut scratch[..]);
                match Pin::new(&mut self.io).poll_read(cx, &mut buf) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(Err(_)) => Poll::Ready(0),
                    Poll::Ready(Ok(())) => {
                        let n = buf.filled().len();
                        if let Some(fresh) = scratch.get_mut(..n).filter(|f| !f.is_empty()) {
                            self.take_bytes(fresh, lines);
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
                    if self.close_received || self.read_done || !lines.is_empty() {
                        return None;
                    }
                }
            }
        }
        // More may be waiting: come back after others had their turn.
        cx.waker().wake_by_ref();
        None
    }

    /// Handles freshly read bytes after any kept in `carry`, and keeps what
    /// is left: the start of a frame that has not fully arrived.
    fn take_bytes(&mut self, fresh: &mut [u8], lines: &mut Vec<String>) {
        if self.carry.is_empty() {
            // The common case: whole frames straight from the scratch
            // buffer, no copy.
            let used = self.handle_bytes(fresh, lines);
            if let Some(rest) = fresh.get(used..).filter(|r| !r.is_empty()) {
                if self.can_read() {
                    let mut carry = Vec::with_capacity(self.carry_room(rest, 0));
                    carry.extend_from_slice(rest);
                    self.carry = carry;
                    self.arriving = Arriving::default();
                    self.check_arriving();
                }
            }
            return;
        }
        let mut carry = std::mem::take(&mut self.carry);
        // Room for the rest of the frame at once, so a large frame that
        // arrives in many reads is not copied over and over as it grows.
        carry.reserve_exact(self.carry_room(&carry, fresh.len()) - carry.len());
        carry.extend_from_slice(fresh);
        let used = self.handle_bytes(&mut carry, lines);
        if !self.can_read() || used >= carry.len() {
            // Nothing left to keep: give the memory back.
            return;
        }
        if used > 0 {
            carry.drain(..used);
            self.arriving = Arriving::default();
            if carry.capacity() > SCRATCH_LEN && carry.capacity() / 4 > carry.len() {
                // A large frame went through; keep only what the rest needs.
                carry.shrink_to_fit();
            }
        }
        self.carry = carry;
        self.check_arriving();
    }

    /// Fails the connection as soon as the text of the frame still
    /// arriving in `carry` is proven not to be UTF-8.
    fn check_arriving(&mut self) {
        if let Err(e) = self
            .assembler
            .check_arriving(&self.carry, &mut self.arriving)
        {
            self.carry = Vec::new();
            self.fail(e);
        }
    }

    /// Whether frames are still to be read (no close received, no error).
    fn can_read(&self) -> bool {
        !self.close_received && !self.read_done
    }

    /// The capacity to give a buffer holding `kept` (the start of one frame)
    /// plus `more` bytes: all of that frame, when its header says how long
    /// it is. The frame limit was checked when its header was parsed; it
    /// is applied again so the header alone can never size a buffer.
    fn carry_room(&self, kept: &[u8], more: usize) -> usize {
        let have = kept.len().saturating_add(more);
        let most = self
            .limits
            .frames
            .max_frame
            .saturating_add(frame::MAX_CLIENT_HEADER_LEN);
        frame::frame_len(kept).map_or(have, |len| len.min(most).max(have))
    }

    /// Parses and handles whole frames from `buf`; returns the bytes used.
    fn handle_bytes(&mut self, buf: &mut [u8], lines: &mut Vec<String>) -> usize {
        let mut used = 0;
        while self.can_read() {
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
                    self.hub.seen(&self.conn);
                    if let Some(message) = message {
                        self.on_message(message, lines);
                    }
                }
                Err(e) => {
                    self.fail(e);
                    used = buf.len();
                    break;
                }
            }
        }
        used
    }

    /// Handles one message or control frame.
    fn on_message(&mut self, message: Message<'_>, lines: &mut Vec<String>) {
        // Once our close frame is queued, data and pings mean nothing: the
        // peer is only waiting for the close handshake to complete.
        let open = !self.close_sent;
        match message {
            Message::Text(text) => {
                self.conn.received(text.len());
                if open {
                    let action = self.handler.on_text(text);
                    self.act(action, lines);
                }
            }
            Message::Binary(data) => {
                self.conn.received(data.len());
                if open {
                    let action = self.handler.on_binary(data);
                    self.act(action, lines);
                }
            }
            Message::Ping(payload) if open => {
                let pong = frame::encode_frame(OpCode::Pong, payload);
                self.hub.send_to(self.conn.id(), &pong);
            }
            Message::Ping(_) | Message::Pong(_) => {}
            Message::Close(close) => {
                self.close_received = true;
                let code = close.map_or(1000, |c| c.code);
                // Echo the peer's code, as RFC 6455 asks.
                self.close_with(CloseReason {
                    code: if code == 1005 { 1000 } else { code },
                    reason: "closed by page",
                });
            }
        }
    }

    /// Carries out what the handler decided for a message.
    fn act(&mut self, action: Action, lines: &mut Vec<String>) {
        match action {
            Action::Ignore => {}
            Action::Send(frame) => {
                self.hub.send_to(self.conn.id(), &frame);
            }
            Action::Run(line) => lines.push(line),
            Action::Close(reason) => self.protocol_close(reason),
        }
    }

    /// Closes the connection for a protocol error and stops reading:
    /// nothing after a broken frame can be trusted.
    fn fail(&mut self, e: ProtocolError) {
        self.protocol_close(CloseReason {
            code: e.close_code(),
            reason: e.reason(),
        });
        self.read_done = true;
    }

    fn protocol_close(&mut self, reason: CloseReason) {
        self.hub.monitor().emit(format_args!(
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
        self.hub.close_one(self.conn.id(), reason);
    }
}
