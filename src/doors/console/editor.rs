//! The line editor, on a thread of its own because reading a line blocks.
//!
//! [`Editor`] runs rustyline; each line typed is sent to the async side as
//! a [`LineRequest`] carrying a reply channel; the editor prints the reply,
//! then prompts again. The same editor serves the daemon's console
//! ([`super::spawn_console`]) and `pagewire console`; only what answers the
//! requests differs.

use std::io::{self, IsTerminal};
use std::path::PathBuf;

use rustyline::error::ReadlineError;
use rustyline::DefaultEditor;
use tokio::sync::{mpsc, oneshot};

use crate::base::door::Reply;
use crate::base::stdout::ConsoleOut;

/// The prompt of the daemon's console and of `pagewire console`.
pub(crate) const PROMPT: &str = "pagewire> ";

/// Where the console keeps its history: `~/.pagewire_history`, shared by
/// the daemon's console and `pagewire console`; `None` without `$HOME`.
pub(crate) fn history_path() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|home| !home.is_empty())
        .map(|home| PathBuf::from(home).join(".pagewire_history"))
}

/// How to run the line editor.
#[derive(Clone, Debug)]
pub(crate) struct EditorConfig {
    /// The prompt shown before each line.
    pub(crate) prompt: String,
    /// The history file, loaded at start and appended to at the end.
    pub(crate) history: Option<PathBuf>,
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
pub(crate) struct LineRequest {
    /// The line as typed (never blank; never `exit` or `quit`).
    pub(crate) line: String,
    reply: oneshot::Sender<Reply>,
}

impl LineRequest {
    /// Sends the reply; the editor prints its output and prompts again.
    pub(crate) fn answer(self, reply: Reply) {
        let _ = self.reply.send(reply);
    }
}

/// Why the editor stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum EditorEnd {
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
    pub(crate) fn by_user(&self) -> bool {
        matches!(
            self,
            EditorEnd::Eof | EditorEnd::Exit | EditorEnd::Interrupted
        )
    }
}

/// A line editor running on its own thread.
#[derive(Debug)]
pub(crate) struct Editor {
    requests: mpsc::Receiver<LineRequest>,
    end: oneshot::Receiver<EditorEnd>,
}

impl Editor {
    /// Starts the editor. Replies and `out`'s other lines are printed above
    /// the prompt. When stdin is not a terminal, lines are read plainly from
    /// it (no prompt, no history).
    pub(crate) fn spawn(config: EditorConfig, out: ConsoleOut) -> Editor {
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
    pub(crate) async fn next(&mut self) -> Option<LineRequest> {
        self.requests.recv().await
    }

    /// Why the editor stopped; call after [`Editor::next`] returned `None`.
    pub(crate) async fn end(self) -> EditorEnd {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_user_endings_stop_the_daemon() {
        assert!(EditorEnd::Eof.by_user());
        assert!(EditorEnd::Exit.by_user());
        assert!(EditorEnd::Interrupted.by_user());
        assert!(!EditorEnd::Closed.by_user());
        assert!(!EditorEnd::Failed("gone".into()).by_user());
    }
}
