//! One stop signal for the whole daemon: SIGINT or SIGTERM (or the console
//! ending) cancels one token that every long-running task watches.

use anyhow::Context as _;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

/// A token cancelled on the first SIGINT or SIGTERM. The handlers are
/// installed before this returns, so a signal sent right after the daemon
/// says it is ready stops it cleanly instead of killing it.
pub(crate) fn on_signals(
    monitor: crate::engine::monitor::Monitor,
) -> anyhow::Result<CancellationToken> {
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot catch SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot catch SIGTERM")?;
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = t.cancelled() => return,
            _ = interrupt.recv() => "SIGINT",
            _ = terminate.recv() => "SIGTERM",
        };
        monitor.emit(format_args!("{name} received, stopping"));
        t.cancel();
    });
    Ok(token)
}
