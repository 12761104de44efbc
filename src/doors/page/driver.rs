//! One connection after the upgrade: reads messages, writes queued frames,
//! answers pings, and closes cleanly.
//!
//! The task owns no buffer while its peer is idle. Reads go into a scratch
//! buffer that belongs to the worker thread, not the connection; only the
//! bytes of a frame that arrived in part are kept (`carry`), and those of a
//! fragmented message until its last fragment. What is kept grows with what
//! has arrived (at most doubling what is already held), never with what a
//! header announces; it is charged to the daemon's
//! [`super::budget::PartialBudget`], and a connection whose
//! bytes would go over it is closed with 1013. A frame (a fragmented
//! message: all of it) must arrive within `partial_timeout` of its first
//! bytes, or the connection is closed with 1008. Writes take the
//! shared `Bytes` of queued frames and hand them to the socket with one
//! vectored write, without copying them. On a plain TCP socket most frames
//! never pass through the task: the hub writes them itself (a flush, see
//! `hub::outbox`) and leaves the task only what the socket would not take.
//!
//! What a complete message means is up to a [`MessageHandler`]: for a page
//! ([`super::run`]) a text message is a command line for the executor; the
//! conformance harness (`examples/autobahn-echo.rs`) drives the same task
//! with [`EchoHandler`], which sends every message back.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{sleep, Sleep};

use super::budget::{PartialBudget, DEFAULT_BUDGET};
use crate::base::codec::{
    self as frame, Arriving, Limits, Message, MessageAssembler, OpCode, ProtocolError,
};
use crate::engine::hub::queue::{Frames, MAX_IOVECS};
use crate::engine::hub::{CloseReason, Conn, Hub, Next};

/// Limits of one WebSocket connection.
#[derive(Clone, Copy, Debug)]
pub struct ConnLimits {
    /// Frame and message size limits (larger: close 1009).
    pub frames: Limits,
    /// How long a closing connection waits for its peer's close frame (and
    /// for its last frames to drain) before it is dropped.
    pub close_timeout: Duration,
    /// How long a peer has to finish a frame once its first bytes arrived
    /// (a fragmented message: all of it); longer is closed with 1008.
    pub partial_timeout: Duration,
    /// What the bytes of incomplete frames are charged to, shared by every
    /// connection of the daemon; going over it is closed with 1013.
    pub partial_budget: &'static PartialBudget,
}

/// The page connections' share of `[limits]` in the configuration file.
#[derive(clap::Args, serde::Serialize, serde::Deserialize, Debug, Clone)]
#[serde(default)]
pub(crate) struct PageLimits {
    /// Largest frame or message a page may send, in bytes (close 1009).
    #[arg(id = "limits_max_message_bytes", long = "limits-max-message-bytes", value_name = "BYTES", default_value_t = PageLimits::default().max_message_bytes, help_heading = "Limits ([limits] in the file)")]
    pub(crate) max_message_bytes: usize,
    /// Bytes held for frames and messages not fully arrived, all pages
    /// together; the page that would need more is closed with 1013.
    #[arg(id = "limits_max_partial_bytes", long = "limits-max-partial-bytes", value_name = "BYTES", default_value_t = PageLimits::default().max_partial_bytes, help_heading = "Limits ([limits] in the file)")]
    pub(crate) max_partial_bytes: usize,
    /// Seconds a page has to finish a frame (a fragmented message: all of
    /// it) once it started sending it; then it is closed with 1008.
    #[arg(id = "limits_partial_timeout_secs", long = "limits-partial-timeout-secs", value_name = "SECS", default_value_t = PageLimits::default().partial_timeout_secs, help_heading = "Limits ([limits] in the file)")]
    pub(crate) partial_timeout_secs: u64,
}

impl Default for PageLimits {
    fn default() -> Self {
        PageLimits {
            max_message_bytes: Limits::default().max_message,
            max_partial_bytes: super::budget::DEFAULT_MAX_PARTIAL_BYTES,
            partial_timeout_secs: DEFAULT_PARTIAL_TIMEOUT.as_secs(),
        }
    }
}

impl PageLimits {
    /// The limits of each connection; makes the daemon's budget for
    /// incomplete frames, so call it once per daemon.
    pub(crate) fn conn_limits(&self) -> anyhow::Result<ConnLimits> {
        if self.max_message_bytes < 1024 {
            anyhow::bail!("limits.max_message_bytes must be at least 1024");
        }
        if self.max_partial_bytes < self.max_message_bytes {
            anyhow::bail!("limits.max_partial_bytes must be at least max_message_bytes");
        }
        if self.partial_timeout_secs == 0 {
            anyhow::bail!("limits.partial_timeout_secs must be at least 1");
        }
        Ok(ConnLimits {
            frames: Limits {
                max_frame: self.max_message_bytes,
                max_message: self.max_message_bytes,
            },
            partial_timeout: Duration::from_secs(self.partial_timeout_secs),
            // One per daemon start, shared by all its pages.
            partial_budget: PartialBudget::leak(self.max_partial_bytes),
            ..ConnLimits::default()
        })
    }
}

impl ConnLimits {
    /// These limits for as long as the process lives: every connection
    /// refers to them instead of keeping a copy. A daemon makes them once.
    pub fn leak(self) -> &'static ConnLimits {
        Box::leak(Box::new(self))
    }
}

/// Default of [`ConnLimits::partial_timeout`].
pub(crate) const DEFAULT_PARTIAL_TIMEOUT: Duration = Duration::from_secs(10);

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            frames: Limits::default(),
            close_timeout: Duration::from_secs(5),
            partial_timeout: DEFAULT_PARTIAL_TIMEOUT,
            partial_budget: &DEFAULT_BUDGET,
        }
    }
}

/// The close for a connection whose incomplete frame would take the
/// daemon over its budget.
pub(crate) const OVER_BUDGET: CloseReason = CloseReason {
    code: frame::close_code::TRY_AGAIN_LATER,
    reason: "too much unfinished input; try again later",
};

/// The close for a frame (or fragmented message) not finished within
/// [`ConnLimits::partial_timeout`].
pub(crate) const TOO_SLOW: CloseReason = CloseReason {
    code: frame::close_code::POLICY,
    reason: "message not completed in time",
};

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
    /// Queue this encoded frame for the peer, after what is queued already
    /// (so it keeps its place among pongs and other replies).
    Send(Bytes),
    /// Hand this line to [`MessageHandler::run`] once the bytes read so far
    /// have been handled; reading waits until it has run.
    Run(String),
    /// Refuse the message: close the connection with this code and reason.
    Close(CloseReason),
    /// Nothing more: the handler has dealt with the message itself.
    Handled,
}

/// What a connection does with the complete data messages its peer sends.
/// Control frames (ping, pong, close) and every protocol rule are handled
/// by the connection itself.
///
/// `on_text` and `on_binary` are called from inside the read loop, in the
/// order the messages arrived, and must not block.
pub trait MessageHandler: Send + Unpin {
    /// A complete text message (valid UTF-8).
    fn on_text(&mut self, text: Cow<'_, str>) -> Action;

    /// A complete binary message.
    fn on_binary(&mut self, data: Cow<'_, [u8]>) -> Action;

    /// Runs a line that `on_text` or `on_binary` answered with
    /// [`Action::Run`]. Lines run one at a time, in order. The future owns
    /// what it needs, so the connection can keep it apart from itself.
    fn run(&mut self, line: String) -> impl Future<Output = ()> + Send + 'static {
        // Only handlers that return Action::Run need to say what it means.
        drop(line);
        async {}
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

/// The state of one connection's task. Only what every connection needs
/// all the time is kept inline; what an idle page does not need lives in
/// [`Busy`], allocated while it is needed and let go as the page goes idle
/// again (docs/PERFORMANCE.md, "Memory per page").
struct Driver<S, H> {
    io: S,
    conn: Arc<Conn>,
    hub: Hub,
    handler: H,
    limits: &'static ConnLimits,
    assembler: MessageAssembler,
    /// `None` while the connection is idle.
    busy: Option<Box<Busy>>,
    /// Our close frame has been queued (nothing more is read as commands).
    close_sent: bool,
    /// The peer's close frame has arrived.
    close_received: bool,
    /// Read side finished (EOF, error, or peer closed).
    read_done: bool,
}

/// What a connection holds only while something is under way: a frame
/// arriving in parts, frames its socket would not take yet, or its close.
#[derive(Default)]
struct Busy {
    /// An incomplete frame's bytes, kept until the rest arrives.
    carry: Vec<u8>,
    /// Bytes taken from the budget for `carry` and the message assembler.
    charged: usize,
    /// While a frame or fragmented message is incomplete: when it must be
    /// complete.
    partial_deadline: Option<Pin<Box<Sleep>>>,
    /// How much of the text in `carry` has been checked as UTF-8.
    arriving: Arriving,
    /// Frames taken from the outbox and not yet written (the first may be
    /// what is left of one written in part).
    out: Frames,
    /// Only exists while closing: when to give up on a clean close.
    deadline: Option<Pin<Box<Sleep>>>,
    /// Why the connection is ending, once known.
    reason: Option<CloseReason>,
}

impl Busy {
    /// Whether nothing is under way, so the connection can let this go.
    fn is_idle(&self) -> bool {
        self.carry.capacity() == 0
            && self.charged == 0
            && self.partial_deadline.is_none()
            && self.out.is_empty()
            && self.deadline.is_none()
            && self.reason.is_none()
    }
}

/// Serves one upgraded connection until it closes, handing each complete
/// message to `handler`. `conn` must be open in `hub`: frames for the peer
/// (the handler's, pongs, the close) go through its outbox. `pre` holds
/// bytes read past the handshake.
///
/// The returned future is the connection's whole state for as long as it
/// lives, once per page: it is built here, outside any `async fn`, so the
/// arguments are not kept a second time beside the driver made of them.
pub fn drive<S, H>(
    io: S,
    pre: Bytes,
    conn: Arc<Conn>,
    hub: Hub,
    handler: H,
    limits: &'static ConnLimits,
) -> impl Future<Output = ()> + Send
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    H: MessageHandler,
{
    // `pre` may share the HTTP layer's whole read buffer even when it holds
    // no bytes: copy what it holds and let the buffer go now, not when the
    // connection ends.
    let carry = pre.to_vec();
    drop(pre);
    let driver = Driver::new(io, carry, conn, hub, handler, limits);
    Connection {
        driver,
        phase: Phase::Serving,
    }
}

/// The future a connection's task runs: the driver plus where the
/// connection is in its life. Written by hand rather than as an `async fn`
/// because it is the one thing every idle page keeps: an `async fn` would
/// hold the driver twice (as argument and as local) and a timer throughout.
struct Connection<S, H> {
    driver: Driver<S, H>,
    phase: Phase,
}

/// The line the handler is running, and the lines after it.
struct Running {
    line: Pin<Box<dyn Future<Output = ()> + Send>>,
    rest: VecDeque<String>,
    /// The connection ended while the line ran: it is let go once the
    /// line is done, as it would have been had the line been quick.
    ended: Option<CloseReason>,
}

/// Lines a page may send while one of its commands runs, waiting their
/// turn; beyond, its socket is not read until the command is done.
const LINES_WAITING_MAX: usize = 64;

enum Phase {
    /// Reading and writing.
    Serving,
    /// Running the lines the page sent, one at a time, while the socket
    /// is still served: a command may wait for this very page's answer
    /// (`ws call *`, `ws write --wait`), and pings and writes go on.
    /// Boxed: an idle page's future keeps only the pointer's room.
    Running(Box<Running>),
    /// Over: shutting the socket's write side down, for at most a second.
    ShuttingDown(Pin<Box<Sleep>>),
    /// Finished.
    Done,
}

impl<S, H> Future for Connection<S, H>
where
    S: AsyncRead + AsyncWrite + Unpin,
    H: MessageHandler,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let d = &mut this.driver;
        loop {
            match &mut this.phase {
                Phase::Serving => match d.poll_step(cx) {
                    Poll::Pending => {
                        d.shed();
                        return Poll::Pending;
                    }
                    Poll::Ready(Step::Lines(lines)) => {
                        let mut rest = VecDeque::from(lines);
                        if let Some(line) = rest.pop_front() {
                            let line = Box::pin(d.handler.run(line));
                            this.phase = Phase::Running(Box::new(Running {
                                line,
                                rest,
                                ended: None,
                            }));
                        }
                    }
                    Poll::Ready(Step::Done(why)) => {
                        d.hub.gone(&d.conn, &why);
                        this.phase = Phase::ShuttingDown(Box::pin(sleep(Duration::from_secs(1))));
                    }
                },
                Phase::Running(running) => {
                    if running.line.as_mut().poll(cx).is_ready() {
                        if let Some(why) = running.ended.take() {
                            d.hub.gone(&d.conn, &why);
                            this.phase =
                                Phase::ShuttingDown(Box::pin(sleep(Duration::from_secs(1))));
                        } else if let Some(line) = running.rest.pop_front() {
                            running.line = Box::pin(d.handler.run(line));
                        } else {
                            this.phase = Phase::Serving;
                        }
                        continue;
                    }
                    if running.ended.is_some() || running.rest.len() >= LINES_WAITING_MAX {
                        return Poll::Pending;
                    }
                    match d.poll_step(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Step::Lines(lines)) => running.rest.extend(lines),
                        Poll::Ready(Step::Done(why)) => running.ended = Some(why),
                    }
                }
                // Best effort: the peer may already be gone.
                Phase::ShuttingDown(deadline) => {
                    let shut = Pin::new(&mut d.io).poll_shutdown(cx).is_ready();
                    if !shut && deadline.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    this.phase = Phase::Done;
                }
                Phase::Done => return Poll::Ready(()),
            }
        }
    }
}

impl<S, H> Drop for Driver<S, H> {
    fn drop(&mut self) {
        // However the connection ends, deliveries stop writing to its socket
        // before the socket can close, and what it held is given back.
        self.conn.detach_socket();
        if let Some(busy) = &self.busy {
            self.limits.partial_budget.release(busy.charged);
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin, H: MessageHandler> Driver<S, H> {
    fn new(
        io: S,
        carry: Vec<u8>,
        conn: Arc<Conn>,
        hub: Hub,
        handler: H,
        limits: &'static ConnLimits,
    ) -> Self {
        let busy = (!carry.is_empty()).then(|| {
            Box::new(Busy {
                carry,
                ..Busy::default()
            })
        });
        Driver {
            io,
            conn,
            hub,
            handler,
            limits,
            assembler: MessageAssembler::new(&limits.frames),
            busy,
            close_sent: false,
            close_received: false,
            read_done: false,
        }
    }

    /// The state of what is under way, made when first needed.
    fn busy(&mut self) -> &mut Busy {
        self.busy.get_or_insert_with(Box::default)
    }

    /// Lets go of [`Busy`] once nothing is under way any more.
    fn shed(&mut self) {
        if self.busy.as_ref().is_some_and(|b| b.is_idle()) {
            self.busy = None;
        }
    }

    /// Whether no incomplete frame is kept.
    fn carry_is_empty(&self) -> bool {
        self.busy.as_ref().map_or(true, |b| b.carry.is_empty())
    }

    /// Whether no frame taken from the outbox is waiting to be written.
    fn out_is_empty(&self) -> bool {
        self.busy.as_ref().map_or(true, |b| b.out.is_empty())
    }

    fn finish(&mut self, reason: CloseReason) -> Poll<Step> {
        let kept = self.busy.as_mut().and_then(|b| b.reason.take());
        Poll::Ready(Step::Done(kept.unwrap_or(reason)))
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
        self.poll_partial_deadline(cx);
        // Reading may have queued a pong or a close: write it now.
        if let Some(done) = self.poll_write(cx) {
            return done;
        }
        if self.close_sent && self.out_is_empty() && (self.close_received || self.read_done) {
            return self.finish(CloseReason {
                code: 1000,
                reason: "closed",
            });
        }
        if let Some(deadline) = self.busy.as_mut().and_then(|b| b.deadline.as_mut()) {
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
            if self.out_is_empty() {
                match self.conn.next_out(cx.waker()) {
                    Next::Frames(frames) => self.busy().out = frames,
                    Next::Close(reason) => {
                        if self.close_sent {
                            return None;
                        }
                        self.close_sent = true;
                        let close_timeout = self.limits.close_timeout;
                        let busy = self.busy();
                        busy.out
                            .push_back(frame::encode_close(reason.code, reason.reason));
                        busy.reason.get_or_insert(reason);
                        busy.deadline = Some(Box::pin(sleep(close_timeout)));
                    }
                    // `out` gave its memory back as it emptied.
                    Next::Idle => return None,
                }
            }
            // `out` is not empty, so `busy` exists.
            let busy = self.busy.as_mut()?;
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            let (count, _) = busy.out.io_slices(&mut slices);
            // One frame (the common case: one broadcast) is a plain write;
            // several go out in one vectored write.
            let io = Pin::new(&mut self.io);
            let written = match &slices[..count] {
                [one] => io.poll_write(cx, one),
                many => io.poll_write_vectored(cx, many),
            };
            match written {
                Poll::Pending => return None,
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                    return Some(self.finish(CloseReason {
                        code: 1006,
                        reason: "connection lost",
                    }))
                }
                Poll::Ready(Ok(n)) => {
                    let frames = busy.out.consume(n);
                    self.conn.written(frames, n);
                }
            }
        }
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
        if !self.carry_is_empty() {
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
        self.handle_arrived(fresh, lines);
        self.account_partial();
    }

    fn handle_arrived(&mut self, fresh: &mut [u8], lines: &mut Vec<String>) {
        if self.carry_is_empty() {
            // The common case: whole frames straight from the scratch
            // buffer, no copy.
            let used = self.handle_bytes(fresh, lines);
            if let Some(rest) = fresh.get(used..).filter(|r| !r.is_empty()) {
                if self.can_read() {
                    let mut carry = Vec::with_capacity(self.carry_room(rest, 0, 0));
                    carry.extend_from_slice(rest);
                    let busy = self.busy();
                    busy.carry = carry;
                    busy.arriving = Arriving::default();
                    self.check_arriving();
                }
            }
            return;
        }
        let mut carry = std::mem::take(&mut self.busy().carry);
        let room = self.carry_room(&carry, fresh.len(), carry.capacity());
        carry.reserve_exact(room.saturating_sub(carry.len()));
        carry.extend_from_slice(fresh);
        let used = self.handle_bytes(&mut carry, lines);
        if !self.can_read() || used >= carry.len() {
            // Nothing left to keep: give the memory back.
            return;
        }
        if used > 0 {
            carry.drain(..used);
            self.busy().arriving = Arriving::default();
            if carry.capacity() > SCRATCH_LEN && carry.capacity() / 4 > carry.len() {
                // A large frame went through; keep only what the rest needs.
                carry.shrink_to_fit();
            }
        }
        self.busy().carry = carry;
        self.check_arriving();
    }

    /// Brings what this connection has taken from the budget in line with
    /// what it holds for incomplete frames, and starts or stops the clock
    /// that bounds how long it may hold it. A connection that would go over
    /// the budget drops what it holds and is closed.
    fn account_partial(&mut self) {
        let held =
            self.busy.as_ref().map_or(0, |b| b.carry.capacity()) + self.assembler.held_bytes();
        let charged = self.busy.as_ref().map_or(0, |b| b.charged);
        let nothing_started = held == 0 && charged == 0 && !self.assembler.in_progress();
        if nothing_started
            && self
                .busy
                .as_ref()
                .map_or(true, |b| b.partial_deadline.is_none())
        {
            // Nothing held, nothing to give back: the idle page's case.
            return;
        }
        let budget = self.limits.partial_budget;
        if held > charged {
            if !budget.try_charge(held - charged) {
                self.drop_partial();
                self.refuse(OVER_BUDGET);
                return;
            }
        } else {
            budget.release(charged - held);
        }
        let incomplete = !self.carry_is_empty() || self.assembler.in_progress();
        let (close_sent, partial_timeout) = (self.close_sent, self.limits.partial_timeout);
        let busy = self.busy();
        busy.charged = held;
        if !incomplete || close_sent {
            busy.partial_deadline = None;
        } else if busy.partial_deadline.is_none() {
            busy.partial_deadline = Some(Box::pin(sleep(partial_timeout)));
        }
    }

    /// Closes the connection if an incomplete frame has run out of time.
    fn poll_partial_deadline(&mut self, cx: &mut Context<'_>) {
        let expired = self
            .busy
            .as_mut()
            .and_then(|b| b.partial_deadline.as_mut())
            .is_some_and(|deadline| deadline.as_mut().poll(cx).is_ready());
        if expired {
            self.busy().partial_deadline = None;
            self.drop_partial();
            self.refuse(TOO_SLOW);
        }
    }

    /// Drops the bytes of incomplete frames and gives them back to the
    /// budget.
    fn drop_partial(&mut self) {
        self.assembler.reset();
        if let Some(busy) = self.busy.as_mut() {
            busy.carry = Vec::new();
            self.limits.partial_budget.release(busy.charged);
            busy.charged = 0;
        }
    }

    /// Fails the connection as soon as the text of the frame still
    /// arriving in `carry` is proven not to be UTF-8.
    fn check_arriving(&mut self) {
        let Some(busy) = self.busy.as_mut() else {
            return;
        };
        if let Err(e) = self
            .assembler
            .check_arriving(&busy.carry, &mut busy.arriving)
        {
            busy.carry = Vec::new();
            self.fail(e);
        }
    }

    /// Whether frames are still to be read (no close received, no error).
    fn can_read(&self) -> bool {
        !self.close_received && !self.read_done
    }

    /// The capacity to give a buffer that has `capacity` and holds `kept`
    /// (the start of one frame), for `more` bytes: the same if they fit;
    /// else twice the capacity, so that a large frame arriving in many reads
    /// is not copied over and over, but never more than the whole frame
    /// when its header says how long it is (nor than the frame limit), and
    /// at least what must fit. The memory kept thus follows what the peer
    /// has sent (less than twice it), not what a header announced.
    fn carry_room(&self, kept: &[u8], more: usize, capacity: usize) -> usize {
        let have = kept.len().saturating_add(more);
        if have <= capacity {
            return capacity;
        }
        let most = self
            .limits
            .frames
            .max_frame
            .saturating_add(frame::MAX_CLIENT_HEADER_LEN);
        let whole = frame::frame_len(kept).map_or(most, |len| len.min(most));
        capacity.saturating_mul(2).min(whole).max(have)
    }

    /// Parses and handles whole frames from `buf`; returns the bytes used.
    fn handle_bytes(&mut self, buf: &mut [u8], lines: &mut Vec<String>) -> usize {
        let mut used = 0;
        // RSV1 (a compressed message) only with permessage-deflate.
        let deflate = self.conn.deflate_bits() != 0;
        while self.can_read() {
            let Some(rest) = buf.get_mut(used..) else {
                break;
            };
            let parsed =
                frame::next_frame_with(rest, &self.limits.frames, deflate).and_then(|next| {
                    match next {
                        None => Ok(None),
                        Some((f, n)) => self.assembler.push(f).map(|m| Some((m, n))),
                    }
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
            Action::Send(frame) => {
                self.hub.send_to(self.conn.id(), &frame);
            }
            Action::Run(line) => lines.push(line),
            Action::Close(reason) => self.protocol_close(reason),
            Action::Handled => {}
        }
    }

    /// Closes the connection for what it has sent so far (too much held, or
    /// too slow) and stops reading.
    fn refuse(&mut self, reason: CloseReason) {
        self.hub.monitor().emit_summarised(
            format_args!("ws closed: {}", reason.reason),
            format_args!(
                "ws {} closed: {} (close {})",
                self.conn.id(),
                reason.reason,
                reason.code
            ),
        );
        self.close_with(reason);
        self.read_done = true;
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
        self.hub.monitor().emit_summarised(
            format_args!("ws protocol error: {}", reason.reason),
            format_args!(
                "ws {} protocol error: {} (close {})",
                self.conn.id(),
                reason.reason,
                reason.code
            ),
        );
        self.close_with(reason);
    }

    /// Starts closing this connection (it leaves the listing at once).
    fn close_with(&mut self, reason: CloseReason) {
        self.busy().reason.get_or_insert(reason.clone());
        self.hub.close_one(self.conn.id(), reason);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::hub::HubLimits;
    use crate::engine::monitor::Monitor;
    use std::future::poll_fn;
    use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt, DuplexStream};

    const KEY: [u8; 4] = [0x12, 0x34, 0x56, 0x78];

    /// A masked client frame with first byte `b0`.
    fn masked(b0: u8, payload: &[u8]) -> Vec<u8> {
        crate::testutil::masked(KEY, b0, payload)
    }

    /// Reads one (unmasked) server frame: its first byte and payload. A
    /// driver that never answers fails the test instead of hanging it.
    async fn read_frame(io: &mut DuplexStream) -> (u8, Vec<u8>) {
        tokio::time::timeout(Duration::from_secs(10), read_frame_now(io))
            .await
            .expect("no frame within 10 s")
    }

    async fn read_frame_now(io: &mut DuplexStream) -> (u8, Vec<u8>) {
        let mut head = [0u8; 2];
        io.read_exact(&mut head).await.expect("frame header");
        let len = match head[1] & 0x7F {
            126 => u64::from(io.read_u16().await.expect("length")),
            127 => io.read_u64().await.expect("length"),
            n => u64::from(n),
        };
        let mut payload = vec![0; usize::try_from(len).expect("length")];
        io.read_exact(&mut payload).await.expect("payload");
        (head[0], payload)
    }

    /// Reads the server's close frame, returns its code, and checks that
    /// the server then ends the connection.
    async fn read_close(io: &mut DuplexStream) -> u16 {
        let (b0, payload) = read_frame(io).await;
        assert_eq!(b0, 0x88, "expected a close frame");
        let code = u16::from_be_bytes([payload[0], payload[1]]);
        let mut rest = Vec::new();
        io.read_to_end(&mut rest).await.expect("read to the end");
        assert!(rest.is_empty(), "bytes after the close frame");
        code
    }

    fn limits(max: usize) -> &'static ConnLimits {
        ConnLimits {
            frames: Limits {
                max_frame: max,
                max_message: max,
            },
            ..ConnLimits::default()
        }
        .leak()
    }

    /// An echo connection over an in-memory stream whose buffer is small,
    /// so large frames reach the driver in many reads.
    fn echo(pre: &[u8], max: usize) -> (DuplexStream, tokio::task::JoinHandle<()>) {
        let hub = Hub::new(HubLimits::default(), Monitor::new());
        let conn = hub.open(([127, 0, 0, 1], 1).into(), "test").expect("open");
        let (client, server) = duplex(4096);
        let pre = Bytes::copy_from_slice(pre);
        let task = tokio::spawn(drive(server, pre, conn, hub, EchoHandler, limits(max)));
        (client, task)
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 + i / 253) as u8).collect()
    }

    #[tokio::test]
    async fn echoes_messages_and_completes_the_close_handshake() {
        // A text frame and half a binary one arrive with the handshake.
        let big = pattern(200_000);
        let binary = masked(0x82, &big);
        let mut pre = masked(0x81, "héllo".as_bytes());
        pre.extend_from_slice(&binary[..1000]);
        let (mut client, task) = echo(&pre, 1 << 20);
        client.write_all(&binary[1000..]).await.expect("write");
        // A fragmented text message with a ping between its fragments.
        client
            .write_all(&masked(0x01, b"frag"))
            .await
            .expect("write");
        client
            .write_all(&masked(0x89, b"ping!"))
            .await
            .expect("write");
        client
            .write_all(&masked(0x80, b"ments"))
            .await
            .expect("write");

        assert_eq!(read_frame(&mut client).await, (0x81, "héllo".into()));
        assert_eq!(read_frame(&mut client).await, (0x82, big));
        assert_eq!(read_frame(&mut client).await, (0x8A, b"ping!".to_vec()));
        assert_eq!(read_frame(&mut client).await, (0x81, b"fragments".to_vec()));

        client
            .write_all(&masked(0x88, &4001u16.to_be_bytes()))
            .await
            .expect("write");
        // The peer's code is echoed.
        assert_eq!(read_close(&mut client).await, 4001);
        task.await.expect("task");
    }

    #[tokio::test]
    async fn bad_utf8_fails_before_its_frame_is_complete() {
        let (mut client, task) = echo(&[], 1 << 20);
        let frame = masked(0x81, &[b'a', b'b', 0xFF, b'c', b'd', b'e', b'f', b'g']);
        // The header promises 8 bytes; only the first 4 are sent.
        client.write_all(&frame[..6 + 4]).await.expect("write");
        assert_eq!(read_close(&mut client).await, 1007);
        task.await.expect("task");
    }

    #[tokio::test]
    async fn a_frame_over_the_limit_is_refused_from_its_header() {
        let (mut client, task) = echo(&[], 1000);
        let frame = masked(0x82, &[0; 1001]);
        client.write_all(&frame[..8]).await.expect("write");
        assert_eq!(read_close(&mut client).await, 1009);
        task.await.expect("task");
    }

    /// Polls the driver once; true if it is still running.
    async fn step<S, H>(d: &mut Driver<S, H>) -> bool
    where
        S: AsyncRead + AsyncWrite + Unpin,
        H: MessageHandler,
    {
        poll_fn(|cx| Poll::Ready(d.poll_step(cx).is_pending())).await
    }

    #[tokio::test]
    async fn idle_connections_hold_no_buffers() {
        let hub = Hub::new(HubLimits::default(), Monitor::new());
        let conn = hub.open(([127, 0, 0, 1], 1).into(), "test").expect("open");
        let (mut client, server) = duplex(1 << 20);
        let limits = limits(1 << 20);
        let mut d = Driver::new(server, Vec::new(), conn, hub, EchoHandler, limits);

        // Half of a 300 KiB frame: what is kept follows what arrived (at
        // most twice it), not the length the header announced.
        let frame = masked(0x82, &pattern(300_000));
        client.write_all(&frame[..150_000]).await.expect("write");
        assert!(step(&mut d).await);
        let busy = d.busy.as_deref().expect("a frame is arriving");
        assert_eq!(busy.carry.len(), 150_000);
        assert!(
            busy.carry.capacity() <= 2 * 150_000,
            "{}",
            busy.carry.capacity()
        );
        assert!(busy.carry.capacity() < frame.len());
        assert_eq!(busy.charged, busy.carry.capacity(), "charged to the budget");
        assert!(busy.partial_deadline.is_some(), "the clock runs");

        // A few more bytes that fit take no more room.
        let before = busy.carry.capacity();
        client
            .write_all(&frame[150_000..150_010])
            .await
            .expect("write");
        assert!(step(&mut d).await);
        let busy = d.busy.as_deref().expect("a frame is arriving");
        assert_eq!((busy.carry.len(), busy.carry.capacity()), (150_010, before));

        // The rest, and a small frame: echoed, and nothing is kept.
        client.write_all(&frame[150_010..]).await.expect("write");
        client.write_all(&masked(0x81, b"x")).await.expect("write");
        assert!(step(&mut d).await);
        assert!(step(&mut d).await);
        assert!(!d.assembler.in_progress());
        let busy = d.busy.as_deref().expect("made for the frame");
        assert_eq!(busy.carry.capacity(), 0);
        assert!(!busy.out.owns_allocation());
        assert_eq!(busy.charged, 0);
        assert!(busy.partial_deadline.is_none());
        // Idle again: the connection lets go of all of it.
        d.shed();
        assert!(d.busy.is_none());
        let (_, echoed) = read_frame(&mut client).await;
        assert_eq!(echoed.len(), 300_000);
        assert_eq!(read_frame(&mut client).await, (0x81, b"x".to_vec()));
    }

    /// An echo connection with its own budget and partial timeout.
    fn echo_with(
        budget: &'static PartialBudget,
        partial_timeout: Duration,
    ) -> (DuplexStream, tokio::task::JoinHandle<()>, Hub) {
        let hub = Hub::new(HubLimits::default(), Monitor::new());
        let conn = hub.open(([127, 0, 0, 1], 1).into(), "test").expect("open");
        let (client, server) = duplex(1 << 20);
        let limits = ConnLimits {
            partial_budget: budget,
            partial_timeout,
            ..*limits(1 << 20)
        }
        .leak();
        let task = tokio::spawn(drive(
            server,
            Bytes::new(),
            conn,
            hub.clone(),
            EchoHandler,
            limits,
        ));
        (client, task, hub)
    }

    /// Reads the server's close frame: its code and reason.
    async fn read_close_reason(io: &mut DuplexStream) -> (u16, String) {
        let (b0, payload) = read_frame(io).await;
        assert_eq!(b0, 0x88, "expected a close frame");
        let code = u16::from_be_bytes([payload[0], payload[1]]);
        (code, String::from_utf8_lossy(&payload[2..]).into_owned())
    }

    #[tokio::test]
    async fn the_connection_that_would_go_over_the_budget_is_closed() {
        let budget = PartialBudget::leak(100_000);
        let (mut a, task_a, _) = echo_with(budget, Duration::from_secs(60));
        let (mut b, task_b, _) = echo_with(budget, Duration::from_secs(60));
        let frame = masked(0x82, &pattern(65_000));

        a.write_all(&frame[..60_000]).await.expect("write");
        // Nothing comes back for half a frame: watch the budget instead.
        tokio::time::timeout(Duration::from_secs(10), async {
            while budget.held() < 60_000 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .expect("a's bytes are charged");

        b.write_all(&frame[..60_000]).await.expect("write");
        let (code, reason) = read_close_reason(&mut b).await;
        assert_eq!(
            (code, reason.as_str()),
            (OVER_BUDGET.code, OVER_BUDGET.reason)
        );
        drop(b);
        task_b.await.expect("b ends");
        assert!(
            budget.held() >= 60_000 && budget.held() <= 100_000,
            "{}",
            budget.held()
        );

        // a finishes its frame and gets it back.
        a.write_all(&frame[60_000..]).await.expect("write");
        let (b0, echoed) = read_frame(&mut a).await;
        assert_eq!((b0, echoed.len()), (0x82, 65_000));
        drop(a);
        task_a.await.expect("a ends");
        assert_eq!(budget.held(), 0, "everything was given back");
    }

    #[tokio::test]
    async fn a_frame_or_message_not_finished_in_time_is_closed() {
        let budget = PartialBudget::leak(1 << 20);
        let timeout = Duration::from_secs(1);
        // Half a frame; a whole first fragment of a message.
        for start in [
            masked(0x82, &pattern(1000))[..500].to_vec(),
            masked(0x01, b"first"),
        ] {
            let (mut client, task, _) = echo_with(budget, timeout);
            let began = tokio::time::Instant::now();
            client.write_all(&start).await.expect("write");
            let (code, reason) = read_close_reason(&mut client).await;
            assert_eq!((code, reason.as_str()), (TOO_SLOW.code, TOO_SLOW.reason));
            assert!(began.elapsed() >= timeout);
            drop(client);
            task.await.expect("task");
        }
        assert_eq!(budget.held(), 0);
    }

    #[test]
    fn an_idle_connection_is_small() {
        // What every idle page keeps in its task, besides the socket and
        // the hub's record (docs/PERFORMANCE.md, "Memory per page"). A
        // tokio task rounds its size up to a multiple of 128 bytes, with
        // 96 of its own: past 160 here, every page pays 128 bytes more.
        let size =
            std::mem::size_of::<Connection<crate::doors::page::socket::SharedTcp, EchoHandler>>();
        assert!(size <= 88, "{size} bytes");
    }

    #[test]
    fn a_pages_other_blocks_fill_their_size_classes() {
        // jemalloc rounds every block up to its size class (48, 64, 80,
        // 96, 112, 128, 160, 192, 224, 256, ...). In its `Arc`, the hub's
        // record of the page fills the 224-byte class and the shared
        // socket the 64-byte one: a few bytes more and every idle page
        // pays the next class (docs/PERFORMANCE.md, "Memory per page").
        let counts = 2 * std::mem::size_of::<usize>();
        let conn = counts + std::mem::size_of::<crate::engine::hub::Conn>();
        assert!(conn <= 224, "Arc<Conn>: {conn} bytes");
        let socket = counts + std::mem::size_of::<tokio::net::TcpStream>();
        assert!(socket <= 64, "Arc<TcpStream>: {socket} bytes");
    }
}
