//! The page door: each page's own WebSocket. A text message is a command
//! line, run with the page's rights and answered with a `reply` or an
//! `error` frame.
//!
//! The HTTP door accepts the upgrade and hands it here ([`Pages::accept`]);
//! [`driver`] is the task that serves one connection, [`socket`] the TCP
//! stream it shares with the hub, [`budget`] the daemon-wide bound on the
//! bytes of frames still arriving.

pub mod budget;
pub mod driver;
pub mod socket;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::FutureExt as _;
use hyper_util::rt::TokioIo;
use tokio_util::task::TaskTracker;

use crate::base::door::Upgrade;
use crate::base::hold::HoldableTcp;
use crate::engine::hub::{Conn, OpenError};
use crate::engine::Engine;
use driver::ConnLimits;
use socket::SharedTcp;

/// The pages' connections: what serves them, and their tasks, so that
/// shutdown can wait for them.
pub(crate) struct Pages {
    engine: Arc<Engine>,
    limits: ConnLimits,
    /// Every page's task (and the short task before it that waits for the
    /// upgrade).
    pub(crate) tasks: TaskTracker,
}

impl Pages {
    /// Pages served by `engine`, each connection within `limits`.
    pub(crate) fn new(engine: Arc<Engine>, limits: ConnLimits) -> Self {
        Pages {
            engine,
            limits,
            tasks: TaskTracker::new(),
        }
    }

    /// Serves a WebSocket the HTTP door accepted, once hyper lets go of it.
    pub(crate) fn accept(&self, upgrade: Upgrade) {
        let Upgrade {
            pending,
            peer,
            page,
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
            let open = |head: &[u8]| open_logged(&engine, peer, &page, head);
            // The connection gets a task of its own, holding only its own
            // state: this one, with the handshake's leftovers, ends here. A
            // plain TCP stream is driven directly, and deliveries may write
            // to it themselves; anything else (TLS) goes through hyper's
            // upgraded wrapper.
            let release = move |()| drop(keep);
            match upgraded.downcast::<TokioIo<HoldableTcp>>() {
                Ok(parts) => {
                    let (tcp, response) = parts.io.into_inner().into_parts();
                    let Ok(conn) = open(&response) else { return };
                    let io = SharedTcp::attach(tcp, &conn);
                    let task = driver::run(io, parts.read_buf, conn, engine, limits);
                    tasks.spawn(task.map(release));
                }
                Err(upgraded) => {
                    let Ok(conn) = open(&[]) else { return };
                    let io = TokioIo::new(upgraded);
                    let task = driver::run(io, Bytes::new(), conn, engine, limits);
                    tasks.spawn(task.map(release));
                }
            }
        });
    }
}

/// Opens the page's connection ([`driver::open_page`]); a refusal (a limit
/// reached since the upgrade was accepted) goes to the Monitor.
fn open_logged(
    engine: &Engine,
    peer: SocketAddr,
    page: &str,
    head: &[u8],
) -> Result<Arc<Conn>, OpenError> {
    driver::open_page(&engine.hub, peer, page, head).inspect_err(|e| {
        engine.monitor.emit_summarised(
            format_args!("refused WebSocket: {}", e.kind()),
            format_args!("refused WebSocket from {peer}: {e}"),
        );
    })
}
