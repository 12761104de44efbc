//! The console: the daemon's standard output, and a line editor bridged to
//! the async side.
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
//! [`Editor`] runs rustyline on its own thread, because reading a line
//! blocks. Each line typed is sent to the async side as a [`LineRequest`]
//! carrying a reply channel; the editor prints the reply, then prompts
//! again. The same editor serves the daemon's console ([`spawn_console`])
//! and `pagewire console`; only what answers the requests differs.
//!
//! Ending the daemon's console (Ctrl-D, Ctrl-C, `exit` or `quit`) stops the
//! daemon: an interactive `pagewire serve` lives as long as its console, as
//! a foreground program should. Run it with stdin not a terminal (a service,
//! `</dev/null`) to have no console at all. One limit: if the daemon is
//! stopped by a signal while the editor waits for a line, the process ends
//! with the terminal still in the editor's raw mode (rustyline offers no way
//! to interrupt a pending read); `stty sane` or `reset` repairs it.

use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustyline::error::ReadlineError;
use rustyline::{DefaultEditor, ExternalPrinter};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::engine::exec::{Door, Executor, Reply};
use crate::engine::monitor::Monitor;

/// How many lines may wait for a stalled standard output before new ones
/// are dropped (and counted).
pub const CONSOLE_BACKLOG: usize = 4096;

/// The prompt of the daemon's console and of `pagewire console`.
pub const PROMPT: &str = "pagewire> ";

/// How long the editor waits for its reply to be printed before prompting
/// again anyway (the output may be stalled).
const REPLY_PRINT_WAIT: Duration = Duration::from_secs(1);

/// A cheap, clonable handle that prints lines on the daemon's standard
/// output (or wherever [`ConsoleOut::capture`] sends them).
///
/// The executor prints the text of a `ws write` that reached no page with
/// [`ConsoleOut::print`]; it may be called from any thread or task and
/// never blocks.
#[derive(Clone, Debug)]
pub struct ConsoleOut {
    target: Target,
}

#[derive(Clone, Debug)]
enum Target {
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
    pub fn stdout() -> ConsoleOut {
        let (tx, rx) = mpsc::channel(CONSOLE_BACKLOG);
        let dropped = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&dropped);
        let spawned = std::thread::Builder::new()
            .name("pagewire-console-out".into())
            .spawn(move || printer_thread(rx, counter));
        let target = match spawned {
            Ok(_) => Target::Printer { tx, dropped },
            Err(e) => {
                tracing::warn!("cannot start the console printer thread: {e}");
                Target::Direct
            }
        };
        ConsoleOut { target }
    }

    /// A handle whose lines arrive on the returned channel instead of
    /// standard output, each exactly as passed to [`ConsoleOut::print`]
    /// (for tests: what would the console have shown?).
    pub fn capture() -> (ConsoleOut, mpsc::UnboundedReceiver<String>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            ConsoleOut {
                target: Target::Capture(tx),
            },
            rx,
        )
    }

    /// Prints `text` as one or more lines (a final newline is added when
    /// missing). Never blocks; see the module docs for a stalled output.
    pub fn print(&self, text: impl Into<String>) {
        let text = text.into();
        match &self.target {
            Target::Printer { tx, dropped } => match tx.try_send(Msg::Text(text)) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    dropped.fetch_add(1, Ordering::Relaxed);
                }
                // The printer thread is gone; there is nowhere left to print.
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            },
            Target::Direct => write_stdout(&crate::base::text::escape_lines(&text)),
            Target::Capture(tx) => {
                let _ = tx.send(text);
            }
        }
    }

    /// Waits (at most `timeout`) until every line handed over so far has
    /// been written; call it before the process exits.
    pub async fn flush(&self, timeout: Duration) {
        let Target::Printer { tx, .. } = &self.target else {
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
    fn print_and_wait(&self, text: String) {
        let Target::Printer { tx, .. } = &self.target else {
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
    fn use_editor(&self, printer: Box<dyn ExternalPrinter + Send>) {
        if let Target::Printer { tx, .. } = &self.target {
            let _ = tx.blocking_send(Msg::UseEditor(printer));
        }
    }

    /// Routes output straight to standard output again.
    fn use_stdout(&self) {
        if let Target::Printer { tx, .. } = &self.target {
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

/// Where the console keeps its history: `~/.pagewire_history`, shared by
/// the daemon's console and `pagewire console`; `None` without `$HOME`.
pub fn history_path() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|home| !home.is_empty())
        .map(|home| PathBuf::from(home).join(".pagewire_history"))
}

/// How to run the line editor.
#[derive(Clone, Debug)]
pub struct EditorConfig {
    /// The prompt shown before each line.
    pub prompt: String,
    /// The history file, loaded at start and appended to at the end.
    pub history: Option<PathBuf>,
}

impl Default for EditorConfig {
    fn default() -> Self {
        EditorConfig {
            prompt: PROMPT.to_owned(),
            history: history_path(),
        }
    }
}

/// One line typed at the editor, waiting for its reply.
#[derive(Debug)]
pub struct LineRequest {
    /// The line as typed (never blank; never `exit` or `quit`).
    pub line: String,
    reply: oneshot::Sender<Reply>,
}

impl LineRequest {
    /// Sends the reply; the editor prints its output and prompts again.
    pub fn answer(self, reply: Reply) {
        let _ = self.reply.send(reply);
    }
}

/// Why the editor stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EditorEnd {
    /// End of input (Ctrl-D, or the end of piped input).
    Eof,
    /// `exit` or `quit` was typed.
    Exit,
    /// Ctrl-C was pressed at the prompt.
    Interrupted,
    /// The async side stopped answering (dropped the [`Editor`] or a request).
    Closed,
    /// The terminal failed.
    Failed(String),
}

impl EditorEnd {
    /// Whether the user asked to stop (as opposed to a failure).
    pub fn by_user(&self) -> bool {
        matches!(
            self,
            EditorEnd::Eof | EditorEnd::Exit | EditorEnd::Interrupted
        )
    }
}

/// A line editor running on its own thread.
#[derive(Debug)]
pub struct Editor {
    requests: mpsc::Receiver<LineRequest>,
    end: oneshot::Receiver<EditorEnd>,
}

impl Editor {
    /// Starts the editor. Replies and `out`'s other lines are printed above
    /// the prompt. When stdin is not a terminal, lines are read plainly from
    /// it (no prompt, no history).
    pub fn spawn(config: EditorConfig, out: ConsoleOut) -> Editor {
        let (tx, requests) = mpsc::channel(1);
        let (end_tx, end) = oneshot::channel();
        let spawned = std::thread::Builder::new()
            .name("pagewire-console".into())
            .spawn(move || {
                let end = editor_loop(&config, &out, &tx);
                let _ = end_tx.send(end);
            });
        if let Err(e) = spawned {
            // The closure (and with it both senders) was dropped: next()
            // returns None and end() reports Closed; log the reason.
            tracing::warn!("cannot start the console thread: {e}");
        }
        Editor { requests, end }
    }

    /// The next line typed, or `None` once the editor has stopped.
    pub async fn next(&mut self) -> Option<LineRequest> {
        self.requests.recv().await
    }

    /// Why the editor stopped; call after [`Editor::next`] returned `None`.
    pub async fn end(self) -> EditorEnd {
        drop(self.requests);
        self.end.await.unwrap_or(EditorEnd::Closed)
    }
}

/// The editor loop itself, on the editor thread.
fn editor_loop(
    config: &EditorConfig,
    out: &ConsoleOut,
    tx: &mpsc::Sender<LineRequest>,
) -> EditorEnd {
    let interactive = io::stdin().is_terminal();
    let history = config.history.as_ref().filter(|_| interactive);
    let settings = rustyline::Config::builder()
        .auto_add_history(false)
        // A line starting with a blank stays out of the history file.
        .history_ignore_space(true)
        .history_ignore_dups(true)
        .and_then(|b| b.max_history_size(1000))
        .map(|b| b.build())
        .unwrap_or_default();
    let mut rl = match DefaultEditor::with_config(settings) {
        Ok(rl) => rl,
        Err(e) => return EditorEnd::Failed(format!("cannot start the line editor: {e}")),
    };
    if let Some(path) = history {
        // No history file yet is the normal first run.
        let _ = rl.load_history(path);
    }
    let through_editor = match rl.create_external_printer() {
        Ok(printer) => {
            out.use_editor(Box::new(printer));
            true
        }
        // Not a terminal: plain output is right.
        Err(_) => false,
    };
    let end = loop {
        let line = match rl.readline(&config.prompt) {
            Ok(line) => line,
            Err(ReadlineError::Eof) => break EditorEnd::Eof,
            Err(ReadlineError::Interrupted) => break EditorEnd::Interrupted,
            Err(ReadlineError::Signal(_)) => continue,
            Err(e) => break EditorEnd::Failed(e.to_string()),
        };
        let word = line.trim();
        if word.is_empty() {
            continue;
        }
        if history.is_some() {
            let _ = rl.add_history_entry(line.as_str());
        }
        if word == "exit" || word == "quit" {
            break EditorEnd::Exit;
        }
        let (reply_tx, reply_rx) = oneshot::channel();
        let request = LineRequest {
            line,
            reply: reply_tx,
        };
        if tx.blocking_send(request).is_err() {
            break EditorEnd::Closed;
        }
        match reply_rx.blocking_recv() {
            Ok(reply) if reply.output.is_empty() => {}
            Ok(reply) => out.print_and_wait(reply.output),
            Err(_) => break EditorEnd::Closed,
        }
    };
    if through_editor {
        out.use_stdout();
    }
    if let Some(path) = history {
        if let Err(e) = rl.append_history(path) {
            out.print(format!(
                "console: cannot save the history to {}: {e}",
                path.display()
            ));
        }
    }
    end
}

/// Starts the daemon's console when stdin is a terminal; returns `None`
/// (and starts nothing) otherwise.
///
/// Each line runs with [`Door::Console`]. When the user ends the console,
/// `shutdown` is cancelled: the daemon stops with it (see the module docs).
/// When the terminal fails, the console ends and the daemon keeps running.
pub fn spawn_console(
    exec: Executor,
    out: ConsoleOut,
    shutdown: CancellationToken,
) -> Option<JoinHandle<()>> {
    if !io::stdin().is_terminal() {
        return None;
    }
    let mut editor = Editor::spawn(EditorConfig::default(), out.clone());
    Some(tokio::spawn(async move {
        loop {
            let request = tokio::select! {
                // Dropping the editor ends its thread at its next line.
                _ = shutdown.cancelled() => return,
                request = editor.next() => request,
            };
            let Some(request) = request else { break };
            let reply = exec.run_line(&request.line, Door::Console).await;
            request.answer(reply);
        }
        match editor.end().await {
            end if end.by_user() => {
                out.print("console closed; stopping pagewire");
                shutdown.cancel();
            }
            EditorEnd::Failed(e) => {
                out.print(format!("console: {e}; pagewire keeps running without it"));
            }
            _ => {}
        }
    }))
}

/// Prints every Monitor line on the console until `shutdown`. Subscribes
/// before returning, so nothing emitted after this call is missed.
pub fn spawn_monitor_printer(
    monitor: &Monitor,
    out: ConsoleOut,
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
fn add_line(text: &mut String, line: Result<Arc<str>, RecvError>) -> bool {
    if matches!(line, Err(RecvError::Closed)) {
        return false;
    }
    if !text.is_empty() {
        text.push('\n');
    }
    match line {
        Ok(line) => text.push_str(&line),
        Err(RecvError::Lagged(missed)) => {
            text.push_str(&crate::doors::control::client::missed_note(missed));
        }
        Err(RecvError::Closed) => {}
    }
    true
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
    async fn monitor_lines_reach_the_console() {
        let (out, mut lines) = ConsoleOut::capture();
        let monitor = Monitor::new();
        let shutdown = CancellationToken::new();
        let task = spawn_monitor_printer(&monitor, out, shutdown.clone());
        monitor.emit("connection #1 opened");
        let line = lines.recv().await.unwrap_or_default();
        assert!(line.ends_with(" connection #1 opened"), "{line}");
        shutdown.cancel();
        assert!(task.await.is_ok());
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

    #[test]
    fn only_user_endings_stop_the_daemon() {
        assert!(EditorEnd::Eof.by_user());
        assert!(EditorEnd::Exit.by_user());
        assert!(EditorEnd::Interrupted.by_user());
        assert!(!EditorEnd::Closed.by_user());
        assert!(!EditorEnd::Failed("gone".into()).by_user());
    }
}
