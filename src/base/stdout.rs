//! The one writer of the process's standard output.
//!
//! [`ConsoleOut`] is the only way pagewire prints on its standard output:
//! Monitor lines, the text of a `ws write` that reached no page, command
//! replies. One printer thread owns the output and writes lines in the order
//! they were handed over, with control characters escaped
//! ([`crate::base::text::escape_lines`]: a line break stays one, nothing else
//! reaches the terminal raw); while a line editor is active, lines go through
//! the editor so they appear above the prompt instead of through it. Handing
//! over a line never blocks: if standard output stalls (a full pipe nobody
//! reads), lines beyond [`CONSOLE_BACKLOG`] are dropped and counted, and the
//! daemon keeps serving.
//!
//! A leaf: every door hands this daemon's console what it has for it (the
//! text of a `ws write` that reached no page), and the daemon's console and
//! `pagewire console` put their line editor in front of it.

use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustyline::ExternalPrinter;
use tokio::sync::{mpsc, oneshot};

use crate::base::door::Reply;

/// How many lines may wait for a stalled standard output before new ones
/// are dropped (and counted).
pub(crate) const CONSOLE_BACKLOG: usize = 4096;

/// How long the editor waits for its reply to be printed before prompting
/// again anyway (the output may be stalled).
const REPLY_PRINT_WAIT: Duration = Duration::from_secs(1);

/// A cheap, clonable handle that prints lines on the daemon's standard
/// output (or wherever [`ConsoleOut::capture`] sends them).
///
/// [`ConsoleOut::print`] may be called from any thread or task and never
/// blocks.
#[derive(Clone)]
pub struct ConsoleOut {
    target: Dest,
    /// How the console text of replies is printed, when not as it is (the
    /// daemon logs JSON): see [`ConsoleOut::with_console_text`].
    console_text: Option<Arc<ConsoleTextFormat>>,
}

/// Turns a reply's console text into what the log format prints.
type ConsoleTextFormat = dyn Fn(&str) -> String + Send + Sync;

impl std::fmt::Debug for ConsoleOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleOut")
            .field("target", &self.target)
            .field("console_text", &self.console_text.is_some())
            .finish()
    }
}

#[derive(Clone, Debug)]
enum Dest {
    /// Lines go to the printer thread.
    Printer {
        tx: mpsc::Sender<Msg>,
        dropped: Arc<AtomicU64>,
    },
    /// The printer thread could not be started: write directly.
    Direct,
    /// Lines go to a channel, for tests.
    Capture(mpsc::UnboundedSender<String>),
}

/// What the printer thread is asked to do, in order.
enum Msg {
    Text(String),
    UseEditor(Box<dyn ExternalPrinter + Send>),
    UseStdout,
    Flush(Ack),
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Msg::Text(text) => f.debug_tuple("Text").field(text).finish(),
            Msg::UseEditor(_) => f.write_str("UseEditor"),
            Msg::UseStdout => f.write_str("UseStdout"),
            Msg::Flush(_) => f.write_str("Flush"),
        }
    }
}

/// Tells a waiter that everything before it was written.
enum Ack {
    Async(oneshot::Sender<()>),
    Blocking(std::sync::mpsc::Sender<()>),
}

impl ConsoleOut {
    /// A handle on standard output, with its own printer thread. Create one
    /// per process and clone it.
    pub(crate) fn stdout() -> ConsoleOut {
        let (tx, rx) = mpsc::channel(CONSOLE_BACKLOG);
        let dropped = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&dropped);
        let spawned = std::thread::Builder::new()
            .name("pagewire-console-out".into())
            .spawn(move || printer_thread(rx, counter));
        let target = match spawned {
            Ok(_) => Dest::Printer { tx, dropped },
            Err(e) => {
                tracing::warn!("cannot start the console printer thread: {e}");
                Dest::Direct
            }
        };
        ConsoleOut {
            target,
            console_text: None,
        }
    }

    /// A handle whose lines arrive on the returned channel instead of
    /// standard output, each exactly as passed to [`ConsoleOut::print`]
    /// (for tests: what would the console have shown?).
    pub fn capture() -> (ConsoleOut, mpsc::UnboundedReceiver<String>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            ConsoleOut {
                target: Dest::Capture(tx),
                console_text: None,
            },
            rx,
        )
    }

    /// Prints `text` as one or more lines (a final newline is added when
    /// missing). Never blocks; see the module docs for a stalled output.
    pub(crate) fn print(&self, text: impl Into<String>) {
        let text = text.into();
        match &self.target {
            Dest::Printer { tx, dropped } => match tx.try_send(Msg::Text(text)) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    dropped.fetch_add(1, Ordering::Relaxed);
                }
                // The printer thread is gone; there is nowhere left to print.
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            },
            Dest::Direct => write_stdout(&crate::base::text::escape_lines(&text)),
            Dest::Capture(tx) => {
                let _ = tx.send(text);
            }
        }
    }

    /// Prints what `reply` has for this daemon's console, if anything (the
    /// text of a `ws write` that reached no page). Every door calls this
    /// with the replies it gets, so that the text is shown whichever door
    /// the command came through.
    pub(crate) fn print_console_text(&self, reply: &mut Reply) {
        if let Some(text) = reply.console.take() {
            match &self.console_text {
                Some(format) => self.print(format(&text)),
                None => self.print(text),
            }
        }
    }

    /// This handle, printing the console text of replies through `format`:
    /// with a log format of one JSON object per line, the text of a `ws
    /// write` that reached no page must be such a line too.
    pub(crate) fn with_console_text(
        mut self,
        format: impl Fn(&str) -> String + Send + Sync + 'static,
    ) -> ConsoleOut {
        self.console_text = Some(Arc::new(format));
        self
    }

    /// Waits (at most `timeout`) until every line handed over so far has
    /// been written; call it before the process exits.
    pub(crate) async fn flush(&self, timeout: Duration) {
        let Dest::Printer { tx, .. } = &self.target else {
            return;
        };
        let (ack, done) = oneshot::channel();
        let _ = tokio::time::timeout(timeout, async move {
            if tx.send(Msg::Flush(Ack::Async(ack))).await.is_ok() {
                let _ = done.await;
            }
        })
        .await;
    }

    /// Prints `text` and waits (a bounded time) until it is written, so the
    /// editor's next prompt comes after it. For the editor thread only.
    pub(crate) fn print_and_wait(&self, text: String) {
        let Dest::Printer { tx, .. } = &self.target else {
            self.print(text);
            return;
        };
        let (ack, done) = std::sync::mpsc::channel();
        if tx.blocking_send(Msg::Text(text)).is_ok()
            && tx.blocking_send(Msg::Flush(Ack::Blocking(ack))).is_ok()
        {
            // Bounded: rustyline's printer may wait for the next prompt to
            // deliver a line that raced with the end of the previous one.
            let _ = done.recv_timeout(REPLY_PRINT_WAIT);
        }
    }

    /// Routes output through a line editor until [`ConsoleOut::use_stdout`].
    pub(crate) fn use_editor(&self, printer: Box<dyn ExternalPrinter + Send>) {
        if let Dest::Printer { tx, .. } = &self.target {
            let _ = tx.blocking_send(Msg::UseEditor(printer));
        }
    }

    /// Routes output straight to standard output again.
    pub(crate) fn use_stdout(&self) {
        if let Dest::Printer { tx, .. } = &self.target {
            let _ = tx.blocking_send(Msg::UseStdout);
        }
    }
}

/// Owns standard output; ends when every [`ConsoleOut`] is gone.
fn printer_thread(mut rx: mpsc::Receiver<Msg>, dropped: Arc<AtomicU64>) {
    let mut editor: Option<Box<dyn ExternalPrinter + Send>> = None;
    while let Some(msg) = rx.blocking_recv() {
        match msg {
            Msg::Text(text) => {
                let lost = dropped.swap(0, Ordering::Relaxed);
                if lost > 0 {
                    emit(
                        &mut editor,
                        format!("(console: {lost} lines dropped, standard output was too slow)"),
                    );
                }
                emit(&mut editor, text);
            }
            Msg::UseEditor(printer) => editor = Some(printer),
            Msg::UseStdout => editor = None,
            Msg::Flush(Ack::Async(ack)) => {
                let _ = ack.send(());
            }
            Msg::Flush(Ack::Blocking(ack)) => {
                let _ = ack.send(());
            }
        }
    }
}

fn emit(editor: &mut Option<Box<dyn ExternalPrinter + Send>>, text: String) {
    // Monitor lines and replies come escaped already (the fast path); this
    // is the last guard before the terminal.
    let mut text = match crate::base::text::escape_lines(&text) {
        std::borrow::Cow::Owned(escaped) => escaped,
        std::borrow::Cow::Borrowed(_) => text,
    };
    if !text.ends_with('\n') {
        text.push('\n');
    }
    if let Some(printer) = editor {
        match printer.print(text) {
            Ok(()) => return,
            // The editor's terminal is gone; plain output is all that is left.
            Err(_) => {
                *editor = None;
                return;
            }
        }
    }
    write_stdout(&text);
}

/// Writes to standard output, ignoring failures: a closed or broken output
/// must not stop the daemon.
fn write_stdout(text: &str) {
    let mut out = io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    if !text.ends_with('\n') {
        let _ = out.write_all(b"\n");
    }
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn capture_sees_lines_in_order() {
        let (out, mut lines) = ConsoleOut::capture();
        let clone = out.clone();
        out.print("one");
        clone.print(String::from("two\nthree"));
        assert_eq!(lines.recv().await.as_deref(), Some("one"));
        assert_eq!(lines.recv().await.as_deref(), Some("two\nthree"));
    }

    #[tokio::test]
    async fn stdout_printer_flushes() {
        // Nothing printed (it would land in the test output); the flush
        // still travels through the printer thread and back.
        let out = ConsoleOut::stdout();
        // Returns once acknowledged, well before the bound.
        tokio::time::timeout(Duration::from_secs(5), out.flush(Duration::from_secs(10)))
            .await
            .expect("flush completes");
    }
}
