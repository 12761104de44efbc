//! `/admin`: the admin console's page and its assets, embedded, and the
//! `/admin/ws` upgrade, handed to the admin door.
//!
//! Who may open it: operator rights, decided as for `/api/command`. A page
//! of another site is refused (Origin, Sec-Fetch-Site, Referer), the page
//! and the socket alike. Without a token configured, only a client on this
//! machine (loopback) may have the console; anyone else gets 403. With a
//! token, the page loads (it holds no data) and asks for it; the socket
//! needs it, either as `Authorization: Bearer` on the upgrade (a program)
//! or in its first message (a browser, which cannot set that header on a
//! WebSocket; never in the URL, which lands in logs). A page that merely
//! loaded `/ws.js` has none of this: `/ws` stays the page door.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::access::{is_loopback, Credentials};
use super::assets;
use super::files::embedded;
use super::forwarded::Seen;
use super::server::ConnSlot;
use super::upgrade::{bad_handshake, header_str, refuse, switching};
use super::Shared;
use crate::base::codec::handshake;
use crate::base::door::{AdminAuth, AdminUpgrade};

/// The refusal of a request for the console that may not have it: another
/// site's, or, without a token configured, a client not on this machine.
fn refused(front: &Shared, peer: SocketAddr, req: &Request) -> Option<Response> {
    // The scheme the client used, and whether it named a forwarded client
    // nobody vouches for (`forwarded`): such a request is not local.
    let seen = req.extensions().get::<Seen>().copied().unwrap_or(Seen {
        scheme: front.scheme,
        unproven_forwarding: false,
    });
    if let Err(why) = front.origins.check(req.headers(), seen.scheme) {
        front.engine.monitor.emit_summarised(
            "refused admin console: cross-site",
            format_args!("refused admin console for {peer}: {why}"),
        );
        return Some(refuse(StatusCode::FORBIDDEN, &why));
    }
    if !front.token.is_set() && (!is_loopback(peer.ip()) || seen.unproven_forwarding) {
        front.engine.monitor.emit_summarised(
            "refused admin console: not local",
            format_args!("refused admin console for {peer}: no token configured, not local"),
        );
        return Some(refuse(
            StatusCode::FORBIDDEN,
            "the admin console needs operator rights: configure a token (--token, or token in the configuration) \
             or open it on this machine",
        ));
    }
    None
}

/// `GET /admin`, `/admin/admin.js`, `/admin/admin.css`.
pub(super) async fn asset(
    State(front): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    if let Some(resp) = refused(&front, peer, &req) {
        return resp;
    }
    match assets::ADMIN.iter().find(|a| a.path == req.uri().path()) {
        Some(asset) => embedded(asset, req.headers()),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// `GET /admin/`: the console lives at `/admin`, and its relative links
/// (which keep working under a proxy's path prefix) are made for that.
pub(super) async fn slash() -> Response {
    (
        StatusCode::PERMANENT_REDIRECT,
        [(header::LOCATION, HeaderValue::from_static("../admin"))],
    )
        .into_response()
}

/// Admin console sockets that may wait for their token at once; more get
/// 503 until one of them has sent it or given up.
pub(crate) const SIGNING_IN_MAX: usize = 16;

/// `GET /admin/ws`: the admin console's socket.
pub(super) async fn upgrade(
    State(front): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut req: Request,
) -> Response {
    if let Some(resp) = bad_handshake(req.headers(), req.method()) {
        return resp;
    }
    if let Some(resp) = refused(&front, peer, &req) {
        return resp;
    }
    let auth = match front.token.check(req.headers()) {
        Credentials::Valid => AdminAuth::Granted,
        Credentials::Invalid => {
            front.engine.monitor.emit_summarised(
                "refused admin console: wrong bearer token",
                format_args!("refused admin console for {peer}: wrong bearer token"),
            );
            return refuse(StatusCode::UNAUTHORIZED, "wrong bearer token");
        }
        // `refused` let only a local client through without a token.
        Credentials::Missing if !front.token.is_set() => AdminAuth::Granted,
        Credentials::Missing => {
            // Anyone the access mode admits can open the socket and hold it
            // until the token is due: only a few may wait at once. The
            // place is given back with the check, once the token came.
            let Ok(place) = front.admin_signing_in.clone().try_acquire_owned() else {
                front.engine.monitor.emit_summarised(
                    "refused admin console: too many signing in",
                    format_args!(
                        "refused admin console for {peer}: {SIGNING_IN_MAX} consoles are \
                         waiting to send the token already"
                    ),
                );
                return refuse(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "too many admin consoles are signing in; try again shortly",
                );
            };
            let token = front.token.clone();
            AdminAuth::FirstMessage(Box::new(move |presented| {
                let _place = &place;
                token.matches(presented)
            }))
        }
    };
    let accept =
        handshake::accept_key(header_str(req.headers(), header::SEC_WEBSOCKET_KEY).unwrap_or(""));
    let pending = hyper::upgrade::on(&mut req);
    let slot = req.extensions_mut().remove::<ConnSlot>();
    (front.admins)(AdminUpgrade {
        pending,
        peer,
        auth,
        keep: Box::new(slot),
    });
    switching(&accept)
}
