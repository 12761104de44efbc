//! What one Monitor event costs now (escaped; and a refusal, summarised as
//! part of a flood), against the Monitor as it was before both (render,
//! stamp, send).
//!
//! `cargo run --release --example monitor-cost`; docs/SECURITY.md has the
//! figures.

use std::sync::Arc;
use std::time::Duration;

use pagewire::base::text;
use pagewire::engine::monitor::{Monitor, MONITOR_BACKLOG};
use tokio::sync::broadcast;

fn wrong_token(port: u32) -> String {
    format!("refused command from 127.0.0.1:{port}: wrong bearer token")
}

fn main() {
    use std::time::Instant as Clock;
    const N: usize = 100_000;
    let (tx, _) = broadcast::channel::<Arc<str>>(MONITOR_BACKLOG);
    let mut old_rx = tx.subscribe();
    let old_emit = |e: &str| {
        let now = time::OffsetDateTime::now_utc();
        let stamp = now
            .format(time::macros::format_description!(
                "[hour]:[minute]:[second].[subsecond digits:3]"
            ))
            .unwrap_or_default();
        let line: Arc<str> = format!("{stamp} {e}").into();
        let _ = tx.send(line);
    };
    // A page opening: the event the Monitor sees most. Each names
    // another page, so each is of a kind of its own and shown in full.
    let opened: Vec<String> = (0..N)
        .map(|i| {
            format!(
                "ws {i} opened from 127.0.0.1:{} page /p{i}.html",
                1024 + i % 60000
            )
        })
        .collect();
    let wrong: Vec<String> = (0..N)
        .map(|i| wrong_token(1024 + i as u32 % 60000))
        .collect();
    let ns = |d: Duration| d.as_nanos() as f64 / N as f64;
    let mut best = [f64::MAX; 4];
    for _ in 0..5 {
        let start = Clock::now();
        for e in &opened {
            old_emit(e);
            while old_rx.try_recv().is_ok() {}
        }
        best[0] = best[0].min(ns(start.elapsed()));
        // A new Monitor per round: no kind is left from the last.
        let monitor = Monitor::new();
        let mut rx = monitor.subscribe();
        let start = Clock::now();
        for e in &opened {
            monitor.emit(e);
            while rx.try_recv().is_ok() {}
        }
        best[1] = best[1].min(ns(start.elapsed()));
        let start = Clock::now();
        for e in &wrong {
            monitor.emit_summarised("refused command: wrong bearer token", e);
            while rx.try_recv().is_ok() {}
        }
        best[2] = best[2].min(ns(start.elapsed()));
        let start = Clock::now();
        let mut escaped = 0;
        for e in &opened {
            escaped += text::escape(e).len();
        }
        assert!(escaped > 0);
        best[3] = best[3].min(ns(start.elapsed()));
    }
    println!(
        "ns per event, best of 5 rounds of {N}: before {:.0}; now, shown {:.0}; \
         now, held in a flood {:.0}; escaping alone {:.1}",
        best[0], best[1], best[2], best[3]
    );
}
