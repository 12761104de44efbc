//! `POST /api/command` (JSON answer) and NAT32-style `/shell` (plain text).
//!
//! Rights: with a token configured, operator commands need
//! `Authorization: Bearer TOKEN`; without one, a loopback client that is
//! not a cross-site page has operator rights. Anyone else has a page's
//! rights (`run` only, since `ws register` needs a WebSocket).

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::access::{is_loopback, Credentials};
use super::{Shared, MAX_BODY_BYTES};
use crate::exec::{Door, Reply};

#[derive(Serialize)]
struct JsonReply<'a> {
    ok: bool,
    output: &'a str,
}

#[derive(Deserialize)]
struct JsonCommand {
    cmd: String,
}

/// A request that is refused before any command runs.
struct Refusal {
    status: StatusCode,
    message: String,
}

/// Decides the door of an HTTP command request, or refuses it.
fn door(front: &Shared, peer: SocketAddr, headers: &HeaderMap) -> Result<Door, Refusal> {
    if let Err(message) = front.origins.check(headers, front.scheme) {
        front
            .exec
            .hub()
            .monitor()
            .emit(format_args!("refused command from {peer}: {message}"));
        return Err(Refusal {
            status: StatusCode::FORBIDDEN,
            message,
        });
    }
    let operator = match front.token.check(headers) {
        Credentials::Valid => true,
        Credentials::Invalid => {
            front.exec.hub().monitor().emit(format_args!(
                "refused command from {peer}: wrong bearer token"
            ));
            return Err(Refusal {
                status: StatusCode::UNAUTHORIZED,
                message: "wrong bearer token".into(),
            });
        }
        Credentials::Missing => !front.token.is_set() && is_loopback(peer.ip()),
    };
    Ok(Door::Http { operator })
}

/// The request body, or why it could not be read: one over
/// [`MAX_BODY_BYTES`] gets 413, and the Monitor records it.
fn body_of(
    front: &Shared,
    peer: SocketAddr,
    body: Result<Bytes, BytesRejection>,
) -> Result<Bytes, Refusal> {
    body.map_err(|e| {
        let status = e.status();
        let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
            format!(
                "command body too large ({} KiB at most)",
                MAX_BODY_BYTES / 1024
            )
        } else {
            e.body_text()
        };
        front
            .exec
            .hub()
            .monitor()
            .emit(format_args!("refused command from {peer}: {message}"));
        Refusal { status, message }
    })
}

fn status_of(reply: &Reply) -> StatusCode {
    match (reply.ok, reply.denied) {
        (true, _) => StatusCode::OK,
        (false, true) => StatusCode::UNAUTHORIZED,
        (false, false) => StatusCode::BAD_REQUEST,
    }
}

/// The command line of a body: JSON `{"cmd": "..."}` when the content type
/// says JSON, the raw text otherwise.
fn command_line(headers: &HeaderMap, body: &Bytes) -> Result<String, String> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    if is_json {
        serde_json::from_slice::<JsonCommand>(body)
            .map(|c| c.cmd)
            .map_err(|e| format!("malformed JSON body: {e}; expected {{\"cmd\": \"...\"}}"))
    } else {
        std::str::from_utf8(body)
            .map(|s| s.trim_end_matches(['\r', '\n']).to_string())
            .map_err(|_| "the command line is not valid UTF-8".to_string())
    }
}

pub(super) async fn api_command(
    State(front): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let json = |status: StatusCode, ok: bool, output: &str| {
        (status, Json(JsonReply { ok, output })).into_response()
    };
    let door = match door(&front, peer, &headers) {
        Ok(d) => d,
        Err(r) => return json(r.status, false, &r.message),
    };
    let body = match body_of(&front, peer, body) {
        Ok(b) => b,
        Err(r) => return json(r.status, false, &r.message),
    };
    let line = match command_line(&headers, &body) {
        Ok(l) => l,
        Err(e) => return json(StatusCode::BAD_REQUEST, false, &e),
    };
    let reply = front.exec.run_line(&line, door).await;
    json(status_of(&reply), reply.ok, &reply.output)
}

pub(super) async fn shell(
    State(front): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let text = |status: StatusCode, output: &str| {
        let mut body = output.to_string();
        body.push('\n');
        (
            status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            body,
        )
            .into_response()
    };
    let door = match door(&front, peer, &headers) {
        Ok(d) => d,
        Err(r) => return text(r.status, &r.message),
    };
    let body = match body_of(&front, peer, body) {
        Ok(b) => b,
        Err(r) => return text(r.status, &r.message),
    };
    let line = match query.get("cmd") {
        Some(cmd) => cmd.clone(),
        None if !body.is_empty() => {
            // A form post (`cmd=...`) or the raw line.
            let form: Option<HashMap<String, String>> = serde_urlencoded_form(&headers, &body);
            match form.and_then(|mut f| f.remove("cmd")) {
                Some(cmd) => cmd,
                None => match command_line(&headers, &body) {
                    Ok(l) => l,
                    Err(e) => return text(StatusCode::BAD_REQUEST, &e),
                },
            }
        }
        None => {
            return text(
                StatusCode::BAD_REQUEST,
                "missing command; usage: /shell?cmd=COMMAND (try cmd=help)",
            )
        }
    };
    let reply = front.exec.run_line(&line, door).await;
    text(status_of(&reply), &reply.output)
}

/// Parses an `application/x-www-form-urlencoded` body, if that is what it is.
fn serde_urlencoded_form(headers: &HeaderMap, body: &Bytes) -> Option<HashMap<String, String>> {
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return None;
    }
    axum::extract::Query::<HashMap<String, String>>::try_from_uri(
        &format!("/?{}", std::str::from_utf8(body).ok()?)
            .parse()
            .ok()?,
    )
    .ok()
    .map(|q| q.0)
}
