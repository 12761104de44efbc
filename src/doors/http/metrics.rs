//! `GET /metrics` in the Prometheus text format (version 0.0.4).
//!
//! Written here rather than with `prometheus-client`, which writes the
//! OpenMetrics format: its `# TYPE` and `# HELP` lines name a counter
//! without its `_total`, it ends with `# EOF` and it answers with another
//! content type, where the names, types and labels below (and what scrapes
//! and tests match, e.g. `# TYPE pagewire_connections_opened_total
//! counter`) stay as they are. A table and one writer are all it takes.

use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use super::{Front, Shared};
use crate::base::door::Door;

/// Whether a metric goes up and down or only up.
#[derive(Clone, Copy)]
enum Kind {
    Gauge,
    Counter,
}

/// One metric without labels: name, kind, help, and where its value is.
type Metric = (&'static str, Kind, &'static str, fn(&Front) -> u64);

/// Every metric without labels, in the order they are written.
#[rustfmt::skip]
const METRICS: &[Metric] = &[
    ("pagewire_connections", Kind::Gauge, "Live WebSocket connections.",
        |f| f.engine.hub.len() as u64),
    ("pagewire_names", Kind::Gauge, "Distinct registered names.",
        |f| f.engine.hub.name_count() as u64),
    ("pagewire_connections_opened_total", Kind::Counter, "WebSocket connections accepted.",
        |f| f.engine.hub.counters().opened.load(Relaxed)),
    ("pagewire_connections_closed_total", Kind::Counter, "WebSocket connections gone.",
        |f| f.engine.hub.counters().closed.load(Relaxed)),
    ("pagewire_slow_consumer_disconnects_total", Kind::Counter,
        "Connections closed because their outgoing queue overflowed.",
        |f| f.engine.hub.counters().slow_consumers.load(Relaxed)),
    ("pagewire_connections_refused_total", Kind::Counter,
        "WebSocket upgrades refused by a connection limit.",
        |f| f.engine.hub.counters().refused.load(Relaxed)),
    ("pagewire_http_refused_total", Kind::Counter,
        "HTTP requests refused by the access mode or for a host not served.",
        |f| f.server.refused_requests.load(Relaxed)),
    ("pagewire_tcp_connections", Kind::Gauge, "Open TCP connections, HTTP and WebSocket alike.",
        |f| f.server.open.load(Relaxed) as u64),
    ("pagewire_tcp_refused_total", Kind::Counter,
        "TCP connections refused at accept by a connection limit.",
        |f| f.server.refused.load(Relaxed)),
    ("pagewire_tls_handshake_failures_total", Kind::Counter,
        "TLS handshakes that failed or timed out.",
        |f| f.server.tls_failures.load(Relaxed)),
    ("pagewire_messages_in_total", Kind::Counter, "Messages received from pages.",
        |f| f.engine.hub.counters().msgs_in.load(Relaxed)),
    ("pagewire_bytes_in_total", Kind::Counter, "Payload bytes received from pages.",
        |f| f.engine.hub.counters().bytes_in.load(Relaxed)),
    ("pagewire_frames_out_total", Kind::Counter, "Frames written to pages.",
        |f| f.engine.hub.counters().msgs_out.load(Relaxed)),
    ("pagewire_bytes_out_total", Kind::Counter, "Bytes written to pages.",
        |f| f.engine.hub.counters().bytes_out.load(Relaxed)),
    ("pagewire_asks_in_flight", Kind::Gauge,
        "Calls, reads and confirmations waiting for pages' answers.",
        |f| f.engine.asks.in_flight() as u64),
    ("pagewire_actions_running", Kind::Gauge, "Actions running now.",
        |f| f.engine.actions.running_count() as u64),
    ("pagewire_actions_started_total", Kind::Counter, "Actions started.",
        |f| f.engine.actions.started_total()),
    ("pagewire_actions_finished_total", Kind::Counter, "Actions ended (exited or killed).",
        |f| f.engine.actions.finished_total()),
    ("pagewire_actions_refused_total", Kind::Counter,
        "Runs refused because max_running_actions were running.",
        |f| f.engine.actions.refused_total()),
];

/// The `# HELP` and `# TYPE` lines of a metric.
fn header(out: &mut String, name: &str, kind: Kind, help: &str) {
    let kind = match kind {
        Kind::Gauge => "gauge",
        Kind::Counter => "counter",
    };
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// `[metrics]` in the configuration file.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, Default)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct MetricsSettings {
    /// Registered names whose pages `/metrics` counts, one gauge each: only
    /// these, so that pages cannot add series (cardinality).
    pub(crate) names: Vec<String>,
}

impl MetricsSettings {
    /// The names, each checked against the name rule.
    pub(crate) fn names(&self) -> anyhow::Result<Vec<String>> {
        for name in &self.names {
            crate::base::command::valid_name(name)
                .map_err(|e| anyhow::anyhow!("metrics.names: {e}"))?;
        }
        Ok(self.names.clone())
    }
}

/// The whole page.
fn render(front: &Front) -> String {
    let mut out = String::new();
    for (name, kind, help, value) in METRICS {
        header(&mut out, name, *kind, help);
        let _ = writeln!(out, "{name} {}", value(front));
    }
    for m in front.engine.backplane.metrics() {
        let kind = if m.counter {
            Kind::Counter
        } else {
            Kind::Gauge
        };
        header(&mut out, m.name, kind, m.help);
        let _ = writeln!(out, "{} {}", m.name, m.value);
    }
    if !front.metric_names.is_empty() {
        let metric = "pagewire_named_connections";
        header(
            &mut out,
            metric,
            Kind::Gauge,
            "Live connections on this node that registered the name, for the names [metrics] names lists.",
        );
        for name in &front.metric_names {
            // A name holds no quote or backslash (the name rule).
            let n = front.engine.hub.named(name);
            let _ = writeln!(out, "{metric}{{name=\"{name}\"}} {n}");
        }
    }
    let name = "pagewire_commands_total";
    header(
        &mut out,
        name,
        Kind::Counter,
        "Command lines run, by door and result.",
    );
    for (door, ok, n) in front.engine.exec.counters().snapshot() {
        debug_assert!(Door::LABELS.contains(&door));
        let result = if ok { "ok" } else { "error" };
        let _ = writeln!(out, "{name}{{door=\"{door}\",result=\"{result}\"}} {n}");
    }
    out
}

pub(super) async fn metrics(State(front): State<Shared>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        render(&front),
    )
}
