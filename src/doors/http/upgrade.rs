//! `GET /ws`: checks the handshake, the Origin and the connection limits,
//! answers 101, and hands the connection to the page door.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;

use super::forwarded::Seen;
use super::server::ConnSlot;
use super::Shared;
use crate::base::codec::{deflate, handshake};
use crate::base::door::Upgrade;
use crate::base::hold::HoldWrites;

/// Longest page description kept for the listing.
const MAX_PAGE_LEN: usize = 512;

pub(super) fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

pub(super) fn refuse(status: StatusCode, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{message}\n"),
    )
        .into_response()
}

/// The raw value of query parameter `key` of the request.
fn query_param<'a>(req: &'a Request, key: &str) -> Option<&'a str> {
    req.uri()
        .query()?
        .split('&')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

/// The resume token a page presents in `?resume=`: letters, digits, `.`,
/// `-` and `_` only, and short; anything else is no token at all.
fn resume_of(req: &Request) -> Option<String> {
    let token = query_param(req, "resume")?;
    let plain = token
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    (plain && !token.is_empty() && token.len() <= 64).then(|| token.to_string())
}

/// The page a connection came from: its Origin, plus the path ws.js sends
/// in `?page=`. Kept to visible ASCII so the listing stays one line.
fn page_of(req: &Request) -> String {
    let origin = header_str(req.headers(), header::ORIGIN).unwrap_or("");
    let path = query_param(req, "page").unwrap_or("");
    let decoded = percent_encoding::percent_decode_str(path).decode_utf8_lossy();
    let mut page: String = format!("{origin}{decoded}")
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .collect();
    if page.len() > MAX_PAGE_LEN {
        page.truncate(MAX_PAGE_LEN);
    }
    page
}

pub(super) async fn upgrade(
    State(front): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(seen): Extension<Seen>,
    mut req: Request,
) -> Response {
    let hub = front.engine.hub.clone();
    let headers = req.headers();
    if let Some(resp) = bad_handshake(headers, req.method()) {
        return resp;
    }
    if let Err(why) = front.origins.check(headers, seen.scheme) {
        hub.monitor().emit_summarised(
            "refused WebSocket: cross-site",
            format_args!("refused WebSocket from {peer}: {why}"),
        );
        return refuse(StatusCode::FORBIDDEN, &why);
    }
    if let Err(e) = hub.admit(peer.ip()) {
        hub.monitor().emit_summarised(
            format_args!("refused WebSocket: {}", e.kind()),
            format_args!("refused WebSocket from {peer}: {e}"),
        );
        return refuse(StatusCode::SERVICE_UNAVAILABLE, &e.to_string());
    }
    let accept =
        handshake::accept_key(header_str(headers, header::SEC_WEBSOCKET_KEY).unwrap_or(""));
    let deflate = front
        .compression
        .then(|| extension_offers(headers))
        .flatten()
        .and_then(|offers| deflate::negotiate(&offers));
    let page = page_of(&req);
    let resume = resume_of(&req);
    let on_upgrade = hyper::upgrade::on(&mut req);
    // The connection's place in the accept limits stays taken for as long
    // as the WebSocket lives, not just until the HTTP exchange ends.
    let slot = req.extensions_mut().remove::<ConnSlot>();
    // A plain TCP connection keeps the 101 back, for the page's task to
    // send with its hello frame: one segment instead of two.
    if let Some(hold) = req.extensions_mut().remove::<HoldWrites>() {
        hold.hold();
    }
    (front.pages)(Upgrade {
        pending: on_upgrade,
        peer,
        page,
        resume,
        deflate_bits: deflate.as_ref().map_or(0, |d| d.server_window_bits),
        keep: slot.map(ConnSlot::shared),
    });
    let mut resp = switching(&accept);
    if let Some(v) = deflate.and_then(|d| HeaderValue::from_str(&d.response).ok()) {
        resp.headers_mut()
            .insert(header::SEC_WEBSOCKET_EXTENSIONS, v);
    }
    resp
}

/// Every `Sec-WebSocket-Extensions` header of the request, joined with
/// commas as HTTP allows for a list header; `None` without one.
fn extension_offers(headers: &HeaderMap) -> Option<String> {
    let mut values = headers
        .get_all(header::SEC_WEBSOCKET_EXTENSIONS)
        .iter()
        .filter_map(|v| v.to_str().ok());
    let first = values.next()?.to_owned();
    Some(values.fold(first, |all, v| all + ", " + v))
}

/// Checks a WebSocket handshake request: the answer saying why it is not
/// one, or None.
pub(super) fn bad_handshake(headers: &HeaderMap, method: &Method) -> Option<Response> {
    if let Err(e) = handshake::validate_request(
        method.as_str(),
        header_str(headers, header::SEC_WEBSOCKET_VERSION),
        header_str(headers, header::SEC_WEBSOCKET_KEY),
        header_str(headers, header::UPGRADE),
        header_str(headers, header::CONNECTION),
    ) {
        let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
        let mut resp = refuse(status, &e.to_string());
        if status == StatusCode::UPGRADE_REQUIRED {
            resp.headers_mut().insert(
                header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static(handshake::SUPPORTED_VERSION),
            );
        }
        return Some(resp);
    }
    None
}

/// The 101 answer to a checked handshake.
pub(super) fn switching(accept: &str) -> Response {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    if let Ok(v) = HeaderValue::from_str(accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    resp
}
