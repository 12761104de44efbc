//! `GET /metrics` in the Prometheus text format.

use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use super::Shared;

fn metric(out: &mut String, name: &str, kind: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
    );
}

pub(super) async fn metrics(State(front): State<Shared>) -> impl IntoResponse {
    let hub = &front.engine.hub;
    let c = hub.counters();
    let mut out = String::new();
    metric(
        &mut out,
        "pagewire_connections",
        "gauge",
        "Live WebSocket connections.",
        hub.len() as u64,
    );
    metric(
        &mut out,
        "pagewire_names",
        "gauge",
        "Distinct registered names.",
        hub.name_count() as u64,
    );
    metric(
        &mut out,
        "pagewire_connections_opened_total",
        "counter",
        "WebSocket connections accepted.",
        c.opened.load(Relaxed),
    );
    metric(
        &mut out,
        "pagewire_connections_closed_total",
        "counter",
        "WebSocket connections gone.",
        c.closed.load(Relaxed),
    );
    metric(
        &mut out,
        "pagewire_slow_consumer_disconnects_total",
        "counter",
        "Connections closed because their outgoing queue overflowed.",
        c.slow_consumers.load(Relaxed),
    );
    metric(
        &mut out,
        "pagewire_connections_refused_total",
        "counter",
        "WebSocket upgrades refused by a connection limit.",
        c.refused.load(Relaxed),
    );
    metric(
        &mut out,
        "pagewire_http_refused_total",
        "counter",
        "HTTP requests refused by the access mode or for a host not served.",
        front.server.refused_requests.load(Relaxed),
    );
    let server = &front.server;
    metric(
        &mut out,
        "pagewire_tcp_connections",
        "gauge",
        "Open TCP connections, HTTP and WebSocket alike.",
        server.open.load(Relaxed) as u64,
    );
    metric(
        &mut out,
        "pagewire_tcp_refused_total",
        "counter",
        "TCP connections refused at accept by a connection limit.",
        server.refused.load(Relaxed),
    );
    metric(
        &mut out,
        "pagewire_tls_handshake_failures_total",
        "counter",
        "TLS handshakes that failed or timed out.",
        server.tls_failures.load(Relaxed),
    );
    metric(
        &mut out,
        "pagewire_messages_in_total",
        "counter",
        "Messages received from pages.",
        c.msgs_in.load(Relaxed),
    );
    metric(
        &mut out,
        "pagewire_bytes_in_total",
        "counter",
        "Payload bytes received from pages.",
        c.bytes_in.load(Relaxed),
    );
    metric(
        &mut out,
        "pagewire_frames_out_total",
        "counter",
        "Frames written to pages.",
        c.msgs_out.load(Relaxed),
    );
    metric(
        &mut out,
        "pagewire_bytes_out_total",
        "counter",
        "Bytes written to pages.",
        c.bytes_out.load(Relaxed),
    );
    let actions = &front.engine.actions;
    metric(
        &mut out,
        "pagewire_actions_running",
        "gauge",
        "Actions running now.",
        actions.running_count() as u64,
    );
    metric(
        &mut out,
        "pagewire_actions_started_total",
        "counter",
        "Actions started.",
        actions.started_total(),
    );
    metric(
        &mut out,
        "pagewire_actions_finished_total",
        "counter",
        "Actions ended (exited or killed).",
        actions.finished_total(),
    );
    metric(
        &mut out,
        "pagewire_actions_refused_total",
        "counter",
        "Runs refused because max_running_actions were running.",
        actions.refused_total(),
    );
    let _ = writeln!(out, "# HELP pagewire_commands_total Command lines run, by door and result.\n# TYPE pagewire_commands_total counter");
    for (door, ok, n) in front.engine.exec.counters().snapshot() {
        let result = if ok { "ok" } else { "error" };
        let _ = writeln!(
            out,
            "pagewire_commands_total{{door=\"{door}\",result=\"{result}\"}} {n}"
        );
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
}
