//! Placeholder console output until the line editor lands.

use std::io::Write as _;
use std::sync::Arc;

use crate::exec::Executor;
use crate::monitor::Monitor;
use tokio_util::sync::CancellationToken;

/// Prints lines on the daemon's standard output.
#[derive(Clone, Default)]
pub struct ConsoleOut {
    _p: Arc<()>,
}

impl ConsoleOut {
    /// A printer on stdout.
    pub fn new() -> Self {
        Self::default()
    }
    /// Prints one line.
    pub fn print(&self, line: &str) {
        let mut o = std::io::stdout().lock();
        let _ = writeln!(o, "{line}");
        let _ = o.flush();
    }
    /// Flushes.
    pub fn flush(&self) {}
}

/// Prints Monitor lines.
pub async fn print_monitor(monitor: Monitor, out: ConsoleOut, stop: CancellationToken) {
    let mut rx = monitor.subscribe();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            l = rx.recv() => match l {
                Ok(l) => out.print(&l),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => out.print(&format!("(missed {n} monitor lines)")),
                Err(_) => return,
            }
        }
    }
}

/// Starts the console when stdin is a terminal.
pub fn spawn_console(_exec: Executor, _out: ConsoleOut, _stop: CancellationToken) {}
