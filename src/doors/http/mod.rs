//! The HTTP front: the router shared by `serve` and the tests, static files
//! and ws.js, the `/ws` upgrade, the command endpoints, health and metrics.
//!
//! Every request passes the guard first: the client's address (a refused
//! client gets a bare 403; behind a `--trusted-proxy`, the client the proxy
//! names, see [`forwarded`]), the host it names (only the daemon's own:
//! this stops DNS rebinding), the size of the body it announces, and the
//! base path (`--base-path`): the router is built for `/` and the guard
//! takes the prefix off, so every route, present and future, lives under
//! it and nothing is served outside it. Command
//! endpoints and the upgrade then check Origin and Referer so that a page of
//! another site can neither run commands nor open a WebSocket.

pub(crate) mod access;
mod admin;
pub(crate) use admin::SIGNING_IN_MAX as ADMIN_SIGNING_IN_MAX;
pub(crate) mod assets;
mod body;
mod commands;
mod files;
pub(crate) mod forwarded;
pub(crate) mod metrics;
mod probe;
pub(crate) mod server;
pub(crate) mod settings;
mod upgrade;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderValue, StatusCode, Uri, Version};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::base::door::{AdminUpgrade, Upgrade};
use crate::engine::Engine;
use access::{shown, AddressPolicy, OriginPolicy, Token};
use ipnet::IpNet;

/// Largest command body accepted over HTTP.
pub(crate) const MAX_BODY_BYTES: usize = 64 * 1024;

/// Everything the HTTP front needs, shared by all requests.
pub(crate) struct Front {
    /// The engine: the hub, the Monitor, the executor.
    pub(crate) engine: Arc<Engine>,
    /// Which client addresses are served.
    pub(crate) addresses: AddressPolicy,
    /// Cross-site checks.
    pub(crate) origins: OriginPolicy,
    /// The operator token, if any.
    pub(crate) token: Token,
    /// The web root; None serves the built-in demo.
    pub(crate) root: Option<PathBuf>,
    /// Whether dot-files and dot-directories of the web root are served.
    pub(crate) serve_dotfiles: bool,
    /// Whether permessage-deflate is negotiated with pages that offer it.
    pub(crate) compression: bool,
    /// `http` or `https`: how this daemon is reached directly (a trusted
    /// proxy may say another; see [`forwarded::Seen`]).
    pub(crate) scheme: &'static str,
    /// Everything is served under this path (`""` for none, else
    /// `/PREFIX` without a final `/`).
    pub(crate) base_path: String,
    /// Peers whose forwarding headers are believed.
    pub(crate) trusted_proxies: Vec<IpNet>,
    /// Where an accepted WebSocket goes: the page door.
    pub(crate) pages: Box<dyn Fn(Upgrade) + Send + Sync>,
    /// Where an accepted admin console socket goes: the admin door.
    pub(crate) admins: Box<dyn Fn(AdminUpgrade) + Send + Sync>,
    /// Places for admin console sockets that have still to send the
    /// token (see [`ADMIN_SIGNING_IN_MAX`]).
    pub(crate) admin_signing_in: Arc<tokio::sync::Semaphore>,
    /// The accept loop's counters.
    pub(crate) server: Arc<server::ServerStats>,
    /// Names whose pages `/metrics` counts (`[metrics] names`).
    pub(crate) metric_names: Vec<String>,
}

type Shared = Arc<Front>;

/// Builds the router; `main` and the tests use the same one. Routes are
/// written for `/`: the guard, which every request passes before routing,
/// serves them under the base path.
pub(crate) fn app(front: Arc<Front>) -> Router {
    let routes = Router::new()
        .route("/ws", get(upgrade::upgrade))
        .route(commands::API_COMMAND, post(commands::api_command))
        .route("/shell", get(commands::shell).post(commands::shell))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics::metrics))
        .route("/probe/{name}", get(probe::probe))
        .route("/ws.js", get(files::ws_js))
        .route("/admin", get(admin::asset))
        .route("/admin/", get(admin::slash))
        .route("/admin/admin.js", get(admin::asset))
        .route("/admin/admin.css", get(admin::asset))
        .route("/admin/ws", get(admin::upgrade))
        .fallback(files::static_files)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(front.clone());
    // A router with only a fallback: its layer runs before `routes` route.
    Router::new()
        .fallback_service(routes)
        .layer(middleware::from_fn_with_state(front, check_address))
}

/// What a request for a host the daemon does not serve gets, and nothing
/// else: no page, no data.
const HOST_REFUSAL: &str = "this host name is not served here\n";

/// Why a request is refused before any route sees it.
enum Guarded {
    /// The client's address is outside the access mode: a bare 403.
    Address,
    /// A request names a host that is not served (DNS rebinding): 403.
    Host(String),
    /// A malformed request head (HTTP/1.1 without Host, two Hosts): 400.
    BadHost(&'static str),
    /// A body announced larger than any route takes: 413, at once.
    TooLarge(u64),
}

/// Checks that every host a request names is served: its Host header, and
/// the authority of an absolute-form target (which, per RFC 9112, is the
/// one that counts).
fn check_host(front: &Front, req: &Request) -> Result<(), Guarded> {
    let hosts = &front.origins.hosts;
    let mut named = req.headers().get_all(header::HOST).iter();
    match (named.next(), named.next()) {
        (Some(_), Some(_)) => return Err(Guarded::BadHost("more than one Host header")),
        (Some(host), None) => {
            let text = String::from_utf8_lossy(host.as_bytes());
            if !hosts.allows(&text) {
                return Err(Guarded::Host(text.into_owned()));
            }
        }
        // HTTP/1.0 tools may leave Host out; a browser never does, so
        // such a request cannot come from a page on a rebound name.
        (None, None) if req.version() <= Version::HTTP_10 => {}
        (None, _) => return Err(Guarded::BadHost("missing Host header")),
    }
    if let Some(authority) = req.uri().authority() {
        if !hosts.allows(authority.as_str()) {
            return Err(Guarded::Host(authority.as_str().to_owned()));
        }
    }
    Ok(())
}

/// The body length a request announces, when it is more than any route
/// takes.
fn announced_too_large(req: &Request) -> Option<u64> {
    let len: u64 = req
        .headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()?;
    (len > MAX_BODY_BYTES as u64).then_some(len)
}

/// Refuses, before any route runs, clients outside the access mode,
/// requests for hosts that are not served, and bodies announced over the
/// limit; hands the routes the real client (behind a trusted proxy) and a
/// path without the base path; adds the headers every answer carries.
async fn check_address(
    State(front): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut req: Request,
    next: Next,
) -> Response {
    let client = forwarded::client(peer, front.scheme, req.headers(), &front.trusted_proxies);
    let peer = client.addr;
    let guarded = if !front.addresses.admits(peer.ip()) {
        Err(Guarded::Address)
    } else {
        check_host(&front, &req).and_then(|()| match announced_too_large(&req) {
            Some(len) => Err(Guarded::TooLarge(len)),
            None => Ok(()),
        })
    };
    let mut resp = match guarded {
        Ok(()) => match under_base_path(&front.base_path, req.uri()) {
            Based::Inside(uri) => {
                *req.uri_mut() = uri;
                // Every handler sees the client, not the proxy.
                req.extensions_mut().insert(ConnectInfo(peer));
                req.extensions_mut().insert(client.seen);
                next.run(req).await
            }
            Based::Redirect(location) => redirect(&location),
            Based::Outside => plain(StatusCode::NOT_FOUND, "not found\n".to_owned()),
        },
        Err(refusal) => refuse(&front, peer, &req, refusal),
    };
    // Pages of this daemon must not be framed by other sites.
    resp.headers_mut()
        .entry(header::X_FRAME_OPTIONS)
        .or_insert(HeaderValue::from_static("SAMEORIGIN"));
    resp.headers_mut()
        .entry(header::X_CONTENT_TYPE_OPTIONS)
        .or_insert(HeaderValue::from_static("nosniff"));
    resp
}

/// Where a request's path is relative to the base path.
#[derive(Debug, PartialEq, Eq)]
enum Based {
    /// Under it: the target with the prefix taken off.
    Inside(Uri),
    /// The prefix itself without its `/`: redirect there, so that the
    /// page's relative links (`ws.js`) resolve under the prefix.
    Redirect(String),
    /// Anywhere else: nothing is served there.
    Outside,
}

/// Places `uri` relative to `base` (`""`: everything is inside).
fn under_base_path(base: &str, uri: &Uri) -> Based {
    if base.is_empty() {
        return Based::Inside(uri.clone());
    }
    let path = uri.path();
    let Some(rest) = path.strip_prefix(base) else {
        return Based::Outside;
    };
    let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    if rest.is_empty() {
        return Based::Redirect(format!("{base}/{query}"));
    }
    if !rest.starts_with('/') {
        return Based::Outside;
    }
    match format!("{rest}{query}").parse::<Uri>() {
        Ok(inner) => Based::Inside(inner),
        Err(_) => Based::Outside,
    }
}

/// A permanent redirect to `location` (a path of this daemon).
fn redirect(location: &str) -> Response {
    let mut resp = plain(StatusCode::PERMANENT_REDIRECT, format!("see {location}\n"));
    if let Ok(value) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, value);
    }
    resp
}

/// The method, for a Monitor kind: one of a few words, whatever was sent.
fn method_class(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        _ => "other method",
    }
}

/// The route a path falls on, for a Monitor kind: a stranger chooses the
/// path, so a flood of refusals must not become a kind per path.
fn route_class(path: &str) -> &'static str {
    match path {
        "/ws" => "/ws",
        "/api/command" => "/api/command",
        "/shell" => "/shell",
        "/metrics" => "/metrics",
        "/healthz" => "/healthz",
        "/readyz" => "/readyz",
        p if p.starts_with("/probe/") => "/probe",
        "/ws.js" => "/ws.js",
        p if p == "/admin" || p.starts_with("/admin/") => "/admin",
        _ => "files",
    }
}

/// Answers a request the guard refused, and says so in the Monitor.
fn refuse(front: &Front, peer: SocketAddr, req: &Request, refusal: Guarded) -> Response {
    let hub = &front.engine.hub;
    let (method, path) = (req.method(), shown(req.uri().path()));
    let why = match &refusal {
        Guarded::Address => format!(
            "address not admitted by access mode {:?}",
            front.addresses.mode
        ),
        Guarded::Host(host) => format!("host \"{}\" is not served", shown(host)),
        Guarded::BadHost(why) => (*why).to_owned(),
        Guarded::TooLarge(len) => format!(
            "request body too large ({len} bytes announced, {} KiB at most)",
            MAX_BODY_BYTES / 1024
        ),
    };
    if matches!(refusal, Guarded::Address | Guarded::Host(_)) {
        front
            .server
            .refused_requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    let reason = match refusal {
        Guarded::Address => "address",
        Guarded::Host(_) => "host not served",
        Guarded::BadHost(_) => "malformed host",
        Guarded::TooLarge(_) => "body too large",
    };
    hub.monitor().emit_summarised(
        format_args!(
            "refused request: {reason} ({} {})",
            method_class(req.method()),
            route_class(req.uri().path())
        ),
        format_args!("refused {peer}: {why} ({method} {path})"),
    );
    match refusal {
        Guarded::Address => StatusCode::FORBIDDEN.into_response(),
        Guarded::Host(_) => plain(StatusCode::FORBIDDEN, HOST_REFUSAL.to_owned()),
        Guarded::BadHost(why) => plain(StatusCode::BAD_REQUEST, format!("{why}\n")),
        Guarded::TooLarge(_) => {
            let message = format!(
                "request body too large ({} KiB at most)",
                MAX_BODY_BYTES / 1024
            );
            // The body is never read: the connection cannot carry another
            // request after it.
            let mut resp =
                commands::refusal(req.uri().path(), StatusCode::PAYLOAD_TOO_LARGE, &message);
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            resp
        }
    }
}

/// A plain-text answer.
fn plain(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

/// `GET /healthz`: the process answers.
async fn healthz() -> &'static str {
    "ok\n"
}

/// `GET /readyz`: 200 when every readiness check passes, else 503; one
/// line per check either way.
async fn readyz(State(front): State<Shared>) -> Response {
    let (ready, report) = front.engine.readiness.report();
    let status = match ready {
        true => StatusCode::OK,
        false => StatusCode::SERVICE_UNAVAILABLE,
    };
    plain(status, report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_base_path_places_every_path() {
        let uri = |s: &str| s.parse::<Uri>().expect("uri");
        assert_eq!(
            under_base_path("", &uri("/x?y")),
            Based::Inside(uri("/x?y"))
        );
        for (given, want) in [
            ("/status/", Based::Inside(uri("/"))),
            ("/status/ws?page=%2F", Based::Inside(uri("/ws?page=%2F"))),
            ("/status/a/b.html", Based::Inside(uri("/a/b.html"))),
            ("/status", Based::Redirect("/status/".into())),
            ("/status?x=1", Based::Redirect("/status/?x=1".into())),
            ("/statusx/ws", Based::Outside),
            ("/ws", Based::Outside),
            ("/", Based::Outside),
        ] {
            assert_eq!(under_base_path("/status", &uri(given)), want, "{given}");
        }
    }
}
