//! The admin door: the admin console's WebSocket (`/admin/ws`). The HTTP
//! door checks the handshake, the Origin and what the caller proved, and
//! hands the socket here ([`Admins::accept`]); this door finishes the proof
//! (a token in the first message, when the request could not carry it) and
//! then serves the console: a page of the connection table, sent again when
//! the hub reports a change and, for the traffic counters, on a short
//! interval while anything in the page changed; the Monitor as it happens;
//! and command lines, run with the operator's rights as `Door::Admin`.
//!
//! An operator has a console or two open, not thousands: the socket is
//! served by tokio-tungstenite over hyper's upgraded connection rather than
//! by the page driver, which is built around the hub's outboxes. Nothing
//! here runs per delivered frame; the hub only tells the watchers of its
//! table when a connection opens, registers or closes.
//!
//! docs/PROTOCOL.md ("The admin socket") describes the frames.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{broadcast, mpsc};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::base::door::{AdminAuth, AdminUpgrade, Door, Status};
use crate::engine::backplane::Listed;
use crate::engine::monitor::missed_note;
use crate::engine::Engine;

/// Largest message accepted from a console: a command line and its
/// envelope.
const MAX_MESSAGE: usize = 64 * 1024;
/// How long a console that must send the token has to do so.
const AUTH_DEADLINE: Duration = Duration::from_secs(30);
/// Most rows sent in one table frame.
const MAX_ROWS: usize = 500;
/// Rows in a table frame unless the console asks otherwise.
const DEFAULT_ROWS: usize = 100;
/// Changes arriving this close together are sent as one table frame.
const SETTLE: Duration = Duration::from_millis(50);
/// How often the rows shown are read again for their traffic counters.
const SAMPLE: Duration = Duration::from_secs(1);
/// Command lines one console may have running at once.
const MAX_RUNNING: usize = 8;

/// Close code: the token is missing or wrong.
pub(crate) const CLOSE_UNAUTHORIZED: u16 = 4401;

/// The admin consoles' sockets, and what ends them at shutdown.
pub(crate) struct Admins {
    engine: Arc<Engine>,
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl Admins {
    /// Consoles served by `engine`.
    pub(crate) fn new(engine: Arc<Engine>) -> Self {
        Admins {
            engine,
            stop: CancellationToken::new(),
            tasks: TaskTracker::new(),
        }
    }

    /// Serves a console's socket the HTTP door accepted.
    pub(crate) fn accept(&self, upgrade: AdminUpgrade) {
        let AdminUpgrade {
            pending,
            peer,
            auth,
            keep,
        } = upgrade;
        let engine = self.engine.clone();
        let stop = self.stop.clone();
        self.tasks.spawn(async move {
            let upgraded = match pending.await {
                Ok(u) => u,
                Err(e) => {
                    engine.monitor.emit(format_args!(
                        "admin: WebSocket upgrade from {peer} failed: {e}"
                    ));
                    return;
                }
            };
            // Small buffers: tungstenite's defaults reserve 128 KiB each
            // way for every socket, and a console's messages are small.
            let config = WebSocketConfig::default()
                .max_message_size(Some(MAX_MESSAGE))
                .max_frame_size(Some(MAX_MESSAGE))
                .read_buffer_size(4096)
                .write_buffer_size(0);
            let ws = WebSocketStream::from_raw_socket(
                TokioIo::new(upgraded),
                Role::Server,
                Some(config),
            )
            .await;
            serve(ws, peer, auth, &engine, stop).await;
            drop(keep);
        });
    }

    /// Closes every console (1001) and waits, at most `grace`, for them.
    pub(crate) async fn close_all(&self, grace: Duration) {
        self.stop.cancel();
        self.tasks.close();
        let _ = tokio::time::timeout(grace, self.tasks.wait()).await;
    }
}

/// What a console sends.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Incoming {
    /// The token, when the upgrade could not carry it.
    Auth { token: String },
    /// Which rows to show: `limit` rows from the `offset`th.
    View {
        offset: usize,
        #[serde(default)]
        limit: Option<usize>,
    },
    /// A command line; the reply carries the same `id`.
    Command { id: u64, line: String },
}

/// One row of the table frame.
#[derive(Serialize, PartialEq)]
struct Row<'a> {
    id: u64,
    /// The node holding the connection, in a cluster.
    node: Option<&'a str>,
    names: &'a [String],
    remote: String,
    page: &'a str,
    /// What the page last reported: `visible`, `hidden`, `frozen`, or
    /// nothing when it never said (a client older than the report).
    visibility: Option<&'static str>,
    msgs_in: u64,
    bytes_in: u64,
    msgs_out: u64,
    bytes_out: u64,
}

/// What the daemon sends a console.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Outgoing<'a> {
    /// The socket is open; `auth` says whether a token must come first
    /// (`"token"`) or operator rights are granted (`"granted"`).
    Hello { auth: &'static str },
    /// Rights granted: table, Monitor and commands follow. `node` is this
    /// daemon's id in a cluster (the table lists every node's connections).
    Ready { node: Option<&'a str> },
    /// A page of the connection table. `ages_ms` (one per row) is kept
    /// apart from the rows so that a row compares equal while only its age
    /// grows.
    Table {
        total: usize,
        offset: usize,
        rows: &'a [Row<'a>],
        ages_ms: Vec<u64>,
    },
    /// A Monitor line.
    Monitor { line: &'a str },
    /// The outcome of a command line.
    Reply {
        id: u64,
        ok: bool,
        denied: bool,
        output: &'a str,
    },
}

impl Outgoing<'_> {
    fn message(&self) -> Message {
        // These types always serialize.
        Message::text(serde_json::to_string(self).unwrap_or_default())
    }
}

type Console<S> = WebSocketStream<S>;

/// A console's socket, from the proof of rights to its close.
async fn serve<S>(
    mut ws: Console<S>,
    peer: SocketAddr,
    auth: AdminAuth,
    engine: &Arc<Engine>,
    stop: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let monitor = &engine.monitor;
    let needs_token = matches!(auth, AdminAuth::FirstMessage(_));
    let hello = Outgoing::Hello {
        auth: if needs_token { "token" } else { "granted" },
    };
    if ws.send(hello.message()).await.is_err() {
        return;
    }
    if let AdminAuth::FirstMessage(check) = auth {
        if let Err(why) = proven(&mut ws, &*check).await {
            monitor.emit_summarised(
                "refused admin console: token",
                format_args!("refused admin console from {peer}: {why}"),
            );
            close(&mut ws, CLOSE_UNAUTHORIZED, why).await;
            return;
        }
    }
    monitor.emit(format_args!("admin console opened from {peer}"));
    let why = Session::new(engine).run(&mut ws, &stop).await;
    monitor.emit(format_args!("admin console from {peer} closed: {why}"));
}

/// Waits for the first message to carry the token; the reason when not.
async fn proven<S>(
    ws: &mut Console<S>,
    check: &(dyn Fn(&str) -> bool + Send + Sync),
) -> Result<(), &'static str>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let first = match tokio::time::timeout(AUTH_DEADLINE, ws.next()).await {
        Err(_) => return Err("no token in time"),
        Ok(Some(Ok(Message::Text(text)))) => text,
        Ok(_) => return Err("token needed"),
    };
    match serde_json::from_str::<Incoming>(&first) {
        Ok(Incoming::Auth { token }) if check(&token) => Ok(()),
        Ok(Incoming::Auth { .. }) => Err("wrong token"),
        _ => Err("token needed"),
    }
}

async fn close<S>(ws: &mut Console<S>, code: u16, reason: &'static str)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    };
    let _ = ws.close(Some(frame)).await;
}

/// A console with rights: what it looks at and what it has sent.
struct Session<'e> {
    engine: &'e Arc<Engine>,
    offset: usize,
    limit: usize,
    /// The rows last sent, to send nothing when nothing changed.
    last: Option<(usize, usize, String)>,
}

impl<'e> Session<'e> {
    fn new(engine: &'e Arc<Engine>) -> Self {
        Session {
            engine,
            offset: 0,
            limit: DEFAULT_ROWS,
            last: None,
        }
    }

    /// Serves the console until it closes, or the daemon stops; says why it
    /// ended.
    async fn run<S>(mut self, ws: &mut Console<S>, stop: &CancellationToken) -> &'static str
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let hub = &self.engine.hub;
        // Subscribed before the first table is read, so nothing that
        // happens after it is missed.
        let mut changes = hub.changes();
        let mut lines = self.engine.monitor.subscribe();
        let (replies, mut replied) = mpsc::channel::<(u64, Status, String)>(MAX_RUNNING);
        let node = self.engine.exec.node();
        let ready = Outgoing::Ready {
            node: node.as_deref(),
        };
        if ws.send(ready.message()).await.is_err() {
            return "gone";
        }
        if self.send_table(ws).await.is_err() {
            return "gone";
        }
        let mut sample = tokio::time::interval(SAMPLE);
        sample.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let sent = tokio::select! {
                _ = stop.cancelled() => {
                    let frame = CloseFrame { code: CloseCode::Away, reason: "server shutting down".into() };
                    let _ = ws.close(Some(frame)).await;
                    return "server shutting down";
                }
                incoming = ws.next() => match incoming {
                    Some(Ok(Message::Text(text))) => self.on_text(ws, &text, &replies).await,
                    Some(Ok(Message::Binary(_))) => {
                        close(ws, 1003, "binary messages are not accepted").await;
                        return "binary message";
                    }
                    Some(Ok(_)) => Ok(()),
                    Some(Err(_)) | None => return "closed by the console",
                },
                line = lines.recv() => match line {
                    Ok(line) => ws.send(Outgoing::Monitor { line: &line }.message()).await,
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        let note = missed_note(n);
                        ws.send(Outgoing::Monitor { line: &note }.message()).await
                    }
                    Err(broadcast::error::RecvError::Closed) => return "monitor closed",
                },
                change = changes.recv() => match change {
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {
                        // A burst (a hundred pages reconnecting) is one table
                        // frame, not a hundred.
                        tokio::time::sleep(SETTLE).await;
                        while changes.try_recv().is_ok() {}
                        self.send_table(ws).await
                    }
                    Err(broadcast::error::RecvError::Closed) => return "hub closed",
                },
                _ = sample.tick() => self.send_table(ws).await,
                Some((id, status, output)) = replied.recv() => {
                    let reply = Outgoing::Reply {
                        id,
                        ok: status == Status::Ok,
                        denied: status == Status::Denied,
                        output: &output,
                    };
                    ws.send(reply.message()).await
                }
            };
            if sent.is_err() {
                return "gone";
            }
        }
    }

    /// A text message from the console: a new view, or a command line to
    /// run (its reply comes through `replies`).
    async fn on_text<S>(
        &mut self,
        ws: &mut Console<S>,
        text: &str,
        replies: &mpsc::Sender<(u64, Status, String)>,
    ) -> Result<(), tokio_tungstenite::tungstenite::Error>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        match serde_json::from_str::<Incoming>(text) {
            Ok(Incoming::View { offset, limit }) => {
                self.offset = offset;
                self.limit = limit.unwrap_or(DEFAULT_ROWS).clamp(1, MAX_ROWS);
                self.send_table(ws).await
            }
            Ok(Incoming::Command { id, line }) => match replies.clone().try_reserve_owned() {
                Ok(permit) => {
                    let engine = self.engine.clone();
                    tokio::spawn(async move {
                        let mut reply = engine.exec.run_line(&line, Door::Admin).await;
                        engine.out.print_console_text(&mut reply);
                        permit.send((id, reply.status, reply.output));
                    });
                    Ok(())
                }
                Err(_) => {
                    let busy = "too many commands running on this console; wait for their replies";
                    let reply = Outgoing::Reply {
                        id,
                        ok: false,
                        denied: false,
                        output: busy,
                    };
                    ws.send(reply.message()).await
                }
            },
            Ok(Incoming::Auth { .. }) => Ok(()),
            Err(e) => {
                let why = format!("unreadable message: {e}");
                let reply = Outgoing::Reply {
                    id: 0,
                    ok: false,
                    denied: false,
                    output: &why,
                };
                ws.send(reply.message()).await
            }
        }
    }

    /// How many connections there are, and the ones in view: this daemon's,
    /// or in a cluster every node's (read from the cluster's tables, as
    /// `ws` lists them; what Redis could not give is left out, and the own
    /// node's rows are always there).
    async fn rows_in_view(&self) -> (usize, Vec<Listed>) {
        if self.engine.exec.node().is_none() {
            let (total, infos) = self.engine.hub.list_page(self.offset, self.limit);
            let listed = infos
                .into_iter()
                .map(|info| Listed { info, node: None })
                .collect();
            return (total, listed);
        }
        let (offset, limit) = (self.offset, self.limit);
        let mut total = 0;
        let mut in_view = Vec::new();
        let mut each = |listed: Listed| {
            if total >= offset && in_view.len() < limit {
                in_view.push(listed);
            }
            total += 1;
        };
        let _notes = self.engine.backplane.list(&mut each).await;
        (total, in_view)
    }

    /// Sends the rows in view, unless they are what was sent last.
    async fn send_table<S>(
        &mut self,
        ws: &mut Console<S>,
    ) -> Result<(), tokio_tungstenite::tungstenite::Error>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let (total, listed) = self.rows_in_view().await;
        let rows: Vec<Row<'_>> = listed.iter().map(row).collect();
        let key = serde_json::to_string(&rows).unwrap_or_default();
        let now = (total, self.offset, key);
        if self.last.as_ref() == Some(&now) {
            return Ok(());
        }
        let table = Outgoing::Table {
            total,
            offset: self.offset,
            rows: &rows,
            ages_ms: listed
                .iter()
                .map(|l| u64::try_from(l.info.age.as_millis()).unwrap_or(u64::MAX))
                .collect(),
        };
        let sent = ws.send(table.message()).await;
        self.last = Some(now);
        sent
    }
}

fn row(listed: &Listed) -> Row<'_> {
    let info = &listed.info;
    Row {
        id: info.id,
        node: listed.node.as_deref(),
        names: &info.names,
        remote: info.remote.to_string(),
        page: &info.page,
        visibility: info.visibility.map(|v| v.word()),
        msgs_in: info.msgs_in,
        bytes_in: info.bytes_in,
        msgs_out: info.msgs_out,
        bytes_out: info.bytes_out,
    }
}
