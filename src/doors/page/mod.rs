//! The page door: each page's own WebSocket. A text message is a command
//! line, run with the page's rights and answered with a `reply` or an
//! `error` frame, or, when it is a JSON object, a protocol frame: a page's
//! answer to a `call`, a `read` or a write it was asked to confirm, handed
//! to the engine's asks at once, from the read loop.
//!
//! The HTTP door accepts the upgrade and hands it here ([`Pages::accept`]);
//! [`driver`] is the task that serves one connection, [`socket`] the TCP
//! stream it shares with the hub, [`budget`] the daemon-wide bound on the
//! bytes of frames still arriving.

pub mod budget;
pub mod driver;
pub mod socket;

use std::borrow::Cow;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::task::TaskTracker;

use crate::base::codec::{close_code, encode_close};
use crate::base::door::{Door, Upgrade};
use crate::base::hold::HoldableTcp;
use crate::base::protocol::{is_page_frame, PageFrame, Results, ServerFrame, PROTOCOL_VERSION};
use crate::engine::hub::{CloseReason, Conn, Hub, OpenError};
use crate::engine::Engine;
use driver::{drive, Action, ConnLimits, MessageHandler};
use socket::SharedTcp;

/// The pages' connections: what serves them, and their tasks, so that
/// shutdown can wait for them.
pub(crate) struct Pages {
    engine: Arc<Engine>,
    limits: &'static ConnLimits,
    /// Every page's task (and the short task before it that waits for the
    /// upgrade).
    pub(crate) tasks: TaskTracker,
}

impl Pages {
    /// Pages served by `engine`, each connection within `limits` (made
    /// once per daemon: every page refers to them).
    pub(crate) fn new(engine: Arc<Engine>, limits: ConnLimits) -> Self {
        Pages {
            engine,
            limits: limits.leak(),
            tasks: TaskTracker::new(),
        }
    }

    /// Serves a WebSocket the HTTP door accepted, once hyper lets go of it.
    pub(crate) fn accept(&self, upgrade: Upgrade) {
        let Upgrade {
            pending,
            peer,
            page,
            resume,
            deflate_bits,
            keep,
        } = upgrade;
        let engine = self.engine.clone();
        let limits = self.limits;
        let tasks = self.tasks.clone();
        self.tasks.spawn(async move {
            let upgraded = match pending.await {
                Ok(u) => u,
                Err(e) => {
                    engine
                        .monitor
                        .emit(format_args!("WebSocket upgrade from {peer} failed: {e}"));
                    return;
                }
            };
            let resume = resume.as_deref();
            let open = |head: &[u8]| {
                let conn = open_logged(&engine, peer, &page, resume, head)?;
                engine.hub.set_deflate(&conn, deflate_bits);
                Ok::<_, OpenError>(conn)
            };
            // The connection gets a task of its own, holding only its own
            // state: this one, with the handshake's leftovers, ends here. A
            // plain TCP stream is driven directly, and deliveries may write
            // to it themselves; anything else (TLS) goes through hyper's
            // upgraded wrapper. The page's task keeps `keep` until it ends.
            match upgraded.downcast::<TokioIo<HoldableTcp>>() {
                Ok(parts) => {
                    let (tcp, response) = parts.io.into_inner().into_parts();
                    let conn = match open(&response) {
                        Ok(conn) => conn,
                        // The 101 was held back: the client gets the 503
                        // an earlier refusal would have got instead.
                        Err(e) => {
                            tasks.spawn(refuse_late(tcp, unavailable(&e)));
                            return;
                        }
                    };
                    let io = SharedTcp::attach(tcp, &conn);
                    tasks.spawn(serve(io, parts.read_buf, conn, engine, limits, keep));
                }
                Err(upgraded) => {
                    let conn = match open(&[]) {
                        Ok(conn) => conn,
                        // The 101 went out already (TLS): close at once.
                        Err(e) => {
                            let close = encode_close(close_code::TRY_AGAIN_LATER, e.kind());
                            tasks.spawn(refuse_late(TokioIo::new(upgraded), close));
                            return;
                        }
                    };
                    let io = TokioIo::new(upgraded);
                    tasks.spawn(serve(io, Bytes::new(), conn, engine, limits, keep));
                }
            }
        });
    }
}

/// The 503 answer to a WebSocket handshake refused for `e`, as the HTTP
/// door words it when it refuses before the upgrade.
fn unavailable(e: &OpenError) -> Bytes {
    let body = format!("{e}\n");
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into()
}

/// Writes `answer` to a client whose page could not be opened after its
/// handshake was accepted (a limit reached in between), then ends the
/// connection; a client that does not read gets a few seconds. A task of
/// its own: in the task that waits for every upgrade, this rare path
/// would make each page's wait larger.
async fn refuse_late(mut io: impl AsyncWrite + Unpin, answer: Bytes) {
    use tokio::io::AsyncWriteExt as _;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        io.write_all(&answer).await?;
        io.shutdown().await
    })
    .await;
}

/// Opens the page's connection ([`open_resumable`]); a refusal (a limit
/// reached since the upgrade was accepted) goes to the Monitor.
fn open_logged(
    engine: &Engine,
    peer: SocketAddr,
    page: &str,
    resume: Option<&str>,
    head: &[u8],
) -> Result<Arc<Conn>, OpenError> {
    open_resumable(engine, peer, page, resume, head).inspect_err(|e| {
        engine.monitor.emit_summarised(
            format_args!("refused WebSocket: {}", e.kind()),
            format_args!("refused WebSocket from {peer}: {e}"),
        );
    })
}

/// pagewire's pages: a text message is a command line, run by the executor
/// with the page's rights and answered with a `reply` or an `error` frame;
/// binary messages are refused with 1003.
struct PageHandler {
    engine: Arc<Engine>,
    id: u64,
    /// What the HTTP door asked to be kept while the page lives.
    _keep: Option<Arc<dyn Send + Sync>>,
}

impl MessageHandler for PageHandler {
    fn on_text(&mut self, text: Cow<'_, str>) -> Action {
        if !is_page_frame(&text) {
            return Action::Run(text.into_owned());
        }
        // An answer is a lookup and an assignment under two short locks:
        // done here, it needs no task and cannot wait behind a command.
        match PageFrame::parse(&text) {
            Ok(frame) => {
                self.engine.asks.answer(self.id, frame);
                Action::Handled
            }
            Err(bad) => {
                self.engine.monitor.emit_summarised(
                    "page: malformed frame",
                    format_args!("ws {}: {bad}", self.id),
                );
                let message = bad.to_string();
                Action::Send(
                    ServerFrame::Error {
                        message: &message,
                        results: None,
                    }
                    .encode(),
                )
            }
        }
    }

    fn on_binary(&mut self, _data: Cow<'_, [u8]>) -> Action {
        Action::Close(CloseReason {
            code: close_code::UNSUPPORTED,
            reason: "binary frames are not accepted",
        })
    }

    fn run(&mut self, line: String) -> impl Future<Output = ()> + Send + 'static {
        let (engine, id) = (self.engine.clone(), self.id);
        async move {
            let mut reply = engine.exec.run_line(&line, Door::Page(id)).await;
            engine.out.print_console_text(&mut reply);
            let results = reply.results.as_deref().map(Results);
            let frame = if reply.is_ok() {
                ServerFrame::Reply {
                    ok: true,
                    output: &reply.output,
                    results,
                }
            } else {
                ServerFrame::Error {
                    message: &reply.output,
                    results,
                }
            };
            engine.hub.send_to(id, &frame.encode());
        }
    }
}

/// Adds a page's connection to the hub with its `hello` frame queued
/// first, so the page learns its index before anything else. `response`
/// is the HTTP 101 response if it was held back to go out in the same
/// write (see `http::hold`), else empty.
pub fn open_page(
    hub: &Hub,
    remote: SocketAddr,
    page: &str,
    response: &[u8],
) -> Result<Arc<Conn>, OpenError> {
    hub.open_greeted(remote, page, |index, _| {
        Some(first_bytes(response, &hello(index, None, false)))
    })
}

/// [`open_page`] for a page that may present a resume token: a valid one
/// brings it back to its index when the hub can give it back, and every
/// page is given the token of the index it gets.
fn open_resumable(
    engine: &Engine,
    remote: SocketAddr,
    page: &str,
    resume: Option<&str>,
    response: &[u8],
) -> Result<Arc<Conn>, OpenError> {
    let tokens = &engine.remember.tokens;
    let wanted = resume.and_then(|t| tokens.check(t));
    engine.hub.open_as(remote, page, wanted, |index, resumed| {
        let token = tokens.issue(index);
        Some(first_bytes(response, &hello(index, Some(&token), resumed)))
    })
}

/// The `hello` frame.
fn hello(index: u64, resume: Option<&str>, resumed: bool) -> Bytes {
    ServerFrame::Hello {
        index,
        version: PROTOCOL_VERSION,
        resume,
        resumed,
    }
    .encode()
}

/// `hello` after the held-back 101 `response`, if any, in one buffer.
fn first_bytes(response: &[u8], hello: &Bytes) -> Bytes {
    if response.is_empty() {
        return hello.clone();
    }
    let mut first = Vec::with_capacity(response.len() + hello.len());
    first.extend_from_slice(response);
    first.extend_from_slice(hello);
    first.into()
}

/// Serves one page's upgraded connection (opened with [`open_page`]) until
/// it closes, running the command lines it sends. `pre` holds bytes the
/// HTTP layer read past the handshake.
pub fn run<S>(
    io: S,
    pre: Bytes,
    conn: Arc<Conn>,
    engine: Arc<Engine>,
    limits: &'static ConnLimits,
) -> impl Future<Output = ()> + Send
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    serve(io, pre, conn, engine, limits, None)
}

/// [`run`], keeping `keep` for as long as the page lives.
fn serve<S>(
    io: S,
    pre: Bytes,
    conn: Arc<Conn>,
    engine: Arc<Engine>,
    limits: &'static ConnLimits,
    keep: Option<Arc<dyn Send + Sync>>,
) -> impl Future<Output = ()> + Send
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let hub = engine.hub.clone();
    let handler = PageHandler {
        engine,
        id: conn.id(),
        _keep: keep,
    };
    drive(io, pre, conn, hub, handler, limits)
}
