//! Prints the Monitor on the daemon's console.

use std::sync::Arc;

use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::base::logline::{LogFormat, Node};
use crate::base::stdout::ConsoleOut;
use crate::engine::events;
use crate::engine::monitor::{self, Monitor};

/// How the printer writes each line: as the Monitor renders it, or as one
/// JSON object naming `node` (`--log-format json`).
#[derive(Clone, Debug, Default)]
pub(crate) struct LogStyle {
    /// Text or JSON.
    pub(crate) format: LogFormat,
    /// This daemon, for JSON lines.
    pub(crate) node: Node,
}

/// Prints every Monitor line on the console until `shutdown`. Subscribes
/// before returning, so nothing emitted after this call is missed.
pub(crate) fn spawn_monitor_printer(
    monitor: &Monitor,
    out: ConsoleOut,
    style: LogStyle,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    let mut lines = monitor.subscribe();
    tokio::spawn(async move {
        loop {
            // Lines first: everything emitted before the stop is printed.
            let line = tokio::select! {
                biased;
                line = lines.recv() => line,
                _ = shutdown.cancelled() => return,
            };
            let mut text = String::new();
            let add_line = |text: &mut String, line| add_line(text, line, &style);
            if !add_line(&mut text, line) {
                return;
            }
            // Lines emitted meanwhile go out with this one: under a burst of
            // events (thousands of pages connecting) the printer thread is
            // woken, and standard output written, once per batch, not per
            // line. Letting the tasks that are ready run first (they are
            // what emits the lines) makes the batch larger.
            tokio::task::yield_now().await;
            while text.len() < PRINT_BATCH {
                match lines.try_recv() {
                    Ok(line) => {
                        add_line(&mut text, Ok(line));
                    }
                    Err(TryRecvError::Lagged(missed)) => {
                        add_line(&mut text, Err(RecvError::Lagged(missed)));
                    }
                    Err(TryRecvError::Empty | TryRecvError::Closed) => break,
                }
            }
            out.print(text);
        }
    })
}

/// Most bytes of Monitor lines handed to the printer at once.
const PRINT_BATCH: usize = 64 * 1024;

/// Appends a Monitor line (or the note of lines missed) to `text`; false
/// when the Monitor is gone.
fn add_line(text: &mut String, line: Result<Arc<str>, RecvError>, style: &LogStyle) -> bool {
    if matches!(line, Err(RecvError::Closed)) {
        return false;
    }
    if !text.is_empty() {
        text.push('\n');
    }
    let json = |line: &str| events::json_line(line, &style.node.get());
    match (line, style.format) {
        (Ok(line), LogFormat::Text) => text.push_str(&line),
        (Ok(line), LogFormat::Json) => text.push_str(&json(&line)),
        (Err(RecvError::Lagged(missed)), LogFormat::Text) => {
            text.push_str(&monitor::missed_note(missed));
        }
        (Err(RecvError::Lagged(missed)), LogFormat::Json) => {
            let note = monitor::missed_note(missed);
            let now = crate::base::logline::now_rfc3339();
            text.push_str(&events::json_record(&now, &note, &style.node.get()));
        }
        (Err(RecvError::Closed), _) => {}
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn monitor_lines_reach_the_console() {
        let (out, mut lines) = ConsoleOut::capture();
        let monitor = Monitor::new();
        let shutdown = CancellationToken::new();
        let task = spawn_monitor_printer(&monitor, out, LogStyle::default(), shutdown.clone());
        monitor.emit("connection #1 opened");
        let line = lines.recv().await.unwrap_or_default();
        assert!(line.ends_with(" connection #1 opened"), "{line}");
        shutdown.cancel();
        assert!(task.await.is_ok());
    }
}
