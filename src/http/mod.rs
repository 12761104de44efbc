//! The HTTP front: the router shared by `serve` and the tests, static files
//! and ws.js, the `/ws` upgrade, the command endpoints, health and metrics.
//!
//! Every request passes the address check first (a refused client gets a
//! bare 403); command endpoints and the upgrade then check Origin so that a
//! page of another site can neither run commands nor open a WebSocket.

pub mod access;
pub mod assets;
mod commands;
mod files;
pub mod hold;
mod metrics;
pub mod server;
mod upgrade;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tokio_util::task::TaskTracker;

use crate::exec::Executor;
use crate::ws::conn::ConnLimits;
use access::{AddressPolicy, OriginPolicy, Token};

/// Largest command body accepted over HTTP.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Everything the HTTP front needs, shared by all requests.
pub struct Front {
    /// Runs command lines.
    pub exec: Executor,
    /// Which client addresses are served.
    pub addresses: AddressPolicy,
    /// Cross-site checks.
    pub origins: OriginPolicy,
    /// The operator token, if any.
    pub token: Token,
    /// The web root; None serves the built-in demo.
    pub root: Option<PathBuf>,
    /// `http` or `https`, for Origin checks.
    pub scheme: &'static str,
    /// Per-connection WebSocket limits.
    pub conn_limits: ConnLimits,
    /// Tracks every WebSocket task so shutdown can wait for them.
    pub tasks: TaskTracker,
    /// The accept loop's counters.
    pub server: Arc<server::ServerStats>,
}

type Shared = Arc<Front>;

/// Builds the router; `main` and the tests use the same one.
pub fn app(front: Arc<Front>) -> Router {
    Router::new()
        .route("/ws", get(upgrade::upgrade))
        .route("/api/command", post(commands::api_command))
        .route("/shell", get(commands::shell).post(commands::shell))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics::metrics))
        .route("/ws.js", get(files::ws_js))
        .fallback(files::static_files)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(front.clone(), check_address))
        .with_state(front)
}

/// Refuses clients outside the access mode before anything else runs.
async fn check_address(
    State(front): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    if !front.addresses.admits(peer.ip()) {
        front
            .exec
            .hub()
            .counters()
            .refused_http
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        front.exec.hub().monitor().emit(format_args!(
            "refused {peer}: address not admitted by access mode {:?} ({} {})",
            front.addresses.mode,
            req.method(),
            req.uri().path()
        ));
        return StatusCode::FORBIDDEN.into_response();
    }
    let mut resp = next.run(req).await;
    // Pages of this daemon must not be framed by other sites.
    resp.headers_mut()
        .entry(header::X_FRAME_OPTIONS)
        .or_insert(HeaderValue::from_static("SAMEORIGIN"));
    resp.headers_mut()
        .entry(header::X_CONTENT_TYPE_OPTIONS)
        .or_insert(HeaderValue::from_static("nosniff"));
    resp
}

async fn healthz() -> &'static str {
    "ok\n"
}
