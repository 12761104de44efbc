//! `GET /probe/NAME`: whether a page that registered NAME is connected, for
//! uptime checkers watching a screen. 200 with the count when at least one
//! is (in a cluster: on any node), 503 with 0 otherwise; a name outside
//! the name rule is 400. Read-only, and behind the same address and Host
//! checks as every route.

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use super::Shared;
use crate::base::command::valid_name;

pub(super) async fn probe(State(front): State<Shared>, Path(name): Path<String>) -> Response {
    if let Err(e) = valid_name(&name) {
        return text(StatusCode::BAD_REQUEST, format!("{e}\n"));
    }
    let counted = front.engine.exec.named(&name).await;
    let status = if counted.count > 0 {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut body = format!("{}\n", counted.count);
    for note in &counted.notes {
        body.push_str(&format!("note: {}\n", crate::base::text::Escaped(note)));
    }
    text(status, body)
}

fn text(status: StatusCode, body: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            // A probe is about now: no cache may answer it.
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}
