//! `POST /api/command` (JSON answer) and NAT32-style `/shell` (plain text).
//!
//! Rights: with a token configured, operator commands need
//! `Authorization: Bearer TOKEN`; without one, a loopback client that is
//! not a cross-site page has operator rights. Anyone else has a page's
//! rights (`run` only, since `ws register` needs a WebSocket).
//!
//! A GET that cannot show where it comes from (no Origin, no
//! `Sec-Fetch-Site: same-origin`) and has no valid token may only read:
//! an `<img>` or `<script>` tag of another site in an older browser, or a
//! link opened from outside the browser, sends just such a GET.

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::access::{is_loopback, Credentials, Site};
use super::body::BodyTimeout;
use super::forwarded::Seen;
use super::{Front, Shared, MAX_BODY_BYTES};
use crate::base::command;
use crate::base::door::{Door, Reply, Status};
use crate::base::protocol::Results;

/// The path of the JSON command endpoint.
pub(super) const API_COMMAND: &str = "/api/command";

#[derive(Serialize)]
struct JsonAnswer<'a> {
    ok: bool,
    output: &'a str,
    /// Each target page's answer, for the commands that wait for one.
    #[serde(skip_serializing_if = "Option::is_none")]
    results: Option<Results<'a>>,
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

/// Who is asking, as far as an HTTP request shows it.
struct Caller {
    /// The door commands run through (operator rights or a page's).
    door: Door,
    /// Whether it showed it comes from the daemon's own site.
    site: Site,
    /// Whether it carries the valid token.
    token: bool,
}

/// Decides the door of an HTTP command request, or refuses it. A request
/// that names a forwarded client that could not be believed is not the
/// local operator, whatever its peer's address (a proxy on this machine
/// that is not a `--trusted-proxy`).
fn caller(
    front: &Shared,
    peer: SocketAddr,
    seen: Seen,
    headers: &HeaderMap,
) -> Result<Caller, Refusal> {
    let site = match front.origins.check(headers, seen.scheme) {
        Ok(site) => site,
        Err(message) => {
            front.engine.monitor.emit_summarised(
                "refused command: cross-site",
                format_args!("refused command from {peer}: {message}"),
            );
            return Err(Refusal {
                status: StatusCode::FORBIDDEN,
                message,
            });
        }
    };
    let credentials = front.token.check(headers);
    let operator = match credentials {
        Credentials::Valid => true,
        Credentials::Invalid => {
            front.engine.monitor.emit_summarised(
                "refused command: wrong bearer token",
                format_args!("refused command from {peer}: wrong bearer token"),
            );
            return Err(Refusal {
                status: StatusCode::UNAUTHORIZED,
                message: "wrong bearer token".into(),
            });
        }
        Credentials::Missing => {
            !front.token.is_set() && is_loopback(peer.ip()) && !seen.unproven_forwarding
        }
    };
    Ok(Caller {
        door: Door::Http { operator },
        site,
        token: credentials == Credentials::Valid,
    })
}

/// Refuses `line` when `caller` sent it in a GET (or HEAD) that cannot
/// show where it comes from and `line` would change something. A POST
/// keeps its rights: browsers send Origin with every cross-site POST. A
/// line that does not parse is left to the executor, which explains what is
/// wrong with it.
fn refuse_unproven_get(
    front: &Shared,
    peer: SocketAddr,
    method: &Method,
    caller: &Caller,
    line: &str,
) -> Result<(), Refusal> {
    if method == Method::POST || caller.site == Site::SameOrigin || caller.token {
        return Ok(());
    }
    let Ok(cmd) = command::parse(line) else {
        return Ok(());
    };
    if cmd.is_read_only() {
        return Ok(());
    }
    let message = format!(
        "'{}' changes things, and a GET that does not show it comes from this daemon's own \
         page may only read (ws, help); use POST, the bearer token, or the CLI",
        cmd.name()
    );
    front.engine.monitor.emit_summarised(
        "refused command: GET without an Origin",
        format_args!(
            "refused command from {peer}: GET may only read without an Origin ('{}')",
            cmd.name()
        ),
    );
    Err(Refusal {
        status: StatusCode::FORBIDDEN,
        message,
    })
}

/// An answer refusing a request, in the form of the route that was asked:
/// JSON `{"ok": false, "output": ...}` at `/api/command`, plain text
/// elsewhere.
pub(super) fn refusal(path: &str, status: StatusCode, message: &str) -> Response {
    if path == API_COMMAND {
        (
            status,
            Json(JsonAnswer {
                ok: false,
                output: message,
                results: None,
            }),
        )
            .into_response()
    } else {
        plain(status, message)
    }
}

/// A plain-text answer of one or more lines.
fn plain(status: StatusCode, output: &str) -> Response {
    let mut body = output.to_string();
    body.push('\n');
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

/// The request body, or why it could not be read: one over
/// [`MAX_BODY_BYTES`] gets 413, one that did not arrive in time 408, and
/// the Monitor records it.
fn body_of(
    front: &Shared,
    peer: SocketAddr,
    body: Result<Bytes, BytesRejection>,
) -> Result<Bytes, Refusal> {
    body.map_err(|e| {
        let (status, message) = if let Some(timeout) = BodyTimeout::cause_of(&e) {
            (StatusCode::REQUEST_TIMEOUT, timeout.to_string())
        } else if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            (
                e.status(),
                format!(
                    "command body too large ({} KiB at most)",
                    MAX_BODY_BYTES / 1024
                ),
            )
        } else {
            (e.status(), e.body_text())
        };
        front.engine.monitor.emit_summarised(
            format_args!("refused command: body ({status})"),
            format_args!("refused command from {peer}: {message}"),
        );
        Refusal { status, message }
    })
}

fn status_of(reply: &Reply) -> StatusCode {
    match reply.status {
        Status::Ok => StatusCode::OK,
        Status::Denied => StatusCode::UNAUTHORIZED,
        Status::Failed => StatusCode::BAD_REQUEST,
        // The command ran; some page failed it or did not answer: pages are
        // what the daemon is a gateway to.
        Status::Partial => StatusCode::BAD_GATEWAY,
    }
}

/// Runs `line` for the caller; what the reply has for the console goes to
/// this daemon's console.
async fn run_line(front: &Front, line: &str, door: Door) -> Reply {
    let mut reply = front.engine.exec.run_line(line, door).await;
    front.engine.out.print_console_text(&mut reply);
    reply
}

/// The command line of a body: JSON `{"cmd": "..."}` when the content type
/// says JSON or the body starts with `{` (no command does, and `curl -d`
/// labels any body a form), the raw text otherwise.
fn command_line(headers: &HeaderMap, body: &Bytes) -> Result<String, String> {
    let declared_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.trim_start()
                .to_ascii_lowercase()
                .starts_with("application/json")
        });
    let looks_json = body.trim_ascii_start().first() == Some(&b'{');
    if declared_json || looks_json {
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
    Extension(seen): Extension<Seen>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let json = |status: StatusCode, ok: bool, output: &str| {
        let answer = JsonAnswer {
            ok,
            output,
            results: None,
        };
        (status, Json(answer)).into_response()
    };
    let door = match caller(&front, peer, seen, &headers) {
        Ok(c) => c.door,
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
    let reply = run_line(&front, &line, door).await;
    let answer = JsonAnswer {
        ok: reply.is_ok(),
        output: &reply.output,
        results: reply.results.as_deref().map(Results),
    };
    (status_of(&reply), Json(answer)).into_response()
}

pub(super) async fn shell(
    State(front): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(seen): Extension<Seen>,
    method: Method,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let caller = match caller(&front, peer, seen, &headers) {
        Ok(c) => c,
        Err(r) => return plain(r.status, &r.message),
    };
    let body = match body_of(&front, peer, body) {
        Ok(b) => b,
        Err(r) => return plain(r.status, &r.message),
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
                    Err(e) => return plain(StatusCode::BAD_REQUEST, &e),
                },
            }
        }
        None => {
            return plain(
                StatusCode::BAD_REQUEST,
                "missing command; usage: /shell?cmd=COMMAND (try cmd=help)",
            )
        }
    };
    if let Err(r) = refuse_unproven_get(&front, peer, &method, &caller, &line) {
        return plain(r.status, &r.message);
    }
    let reply = run_line(&front, &line, caller.door).await;
    plain(status_of(&reply), &reply.output)
}

/// Parses an `application/x-www-form-urlencoded` body, if that is what it
/// is, with `serde_urlencoded` (what `axum::Form` uses; the body is read
/// already here, and a body that is no form is taken as the raw line).
fn serde_urlencoded_form(headers: &HeaderMap, body: &Bytes) -> Option<HashMap<String, String>> {
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return None;
    }
    serde_urlencoded::from_bytes(body).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::command;

    #[test]
    fn a_form_gives_its_cmd_and_anything_else_is_the_line() {
        let mut form = HeaderMap::new();
        form.insert(
            header::CONTENT_TYPE,
            "application/x-www-form-urlencoded".parse().expect("header"),
        );
        let cmd = |headers: &HeaderMap, body: &'static str| {
            serde_urlencoded_form(headers, &Bytes::from_static(body.as_bytes()))
                .and_then(|mut f| f.remove("cmd"))
        };
        assert_eq!(
            cmd(&form, "cmd=ws+write+status+%22VPN+up%22").as_deref(),
            Some("ws write status \"VPN up\"")
        );
        assert_eq!(cmd(&form, "ws"), None);
        assert_eq!(cmd(&HeaderMap::new(), "cmd=ws"), None);
    }

    #[test]
    fn only_listing_and_help_are_read_only() {
        for line in ["ws", "help", "help ws write", "ws write"] {
            match command::parse(line) {
                Ok(cmd) => assert!(cmd.is_read_only(), "{line}"),
                // Incomplete lines do not parse; the executor answers them.
                Err(_) => assert_eq!(line, "ws write"),
            }
        }
        for line in [
            "ws register status",
            "ws write * hi",
            "ws exec 3 f x",
            "ws close",
            "ws close 3",
            "set notify status",
            "set notify off",
            "run deploy",
            "run --to 3 deploy",
        ] {
            let cmd = command::parse(line).expect(line);
            assert!(!cmd.is_read_only(), "{line}");
        }
    }
}
