//! The daemon's console: a line editor on the daemon's own terminal whose
//! lines run as [`Door::Console`], and the Monitor printed above it.
//!
//! Ending the daemon's console (Ctrl-D, Ctrl-C, `exit` or `quit`) stops the
//! daemon: an interactive `pagewire serve` lives as long as its console, as
//! a foreground program should. Run it with stdin not a terminal (a service,
//! `</dev/null`) to have no console at all. One limit: if the daemon is
//! stopped by a signal while the editor waits for a line, the process ends
//! with the terminal still in the editor's raw mode (rustyline offers no way
//! to interrupt a pending read); `stty sane` or `reset` repairs it.

mod editor;
mod monitor_printer;

pub(crate) use editor::{Editor, EditorConfig, EditorEnd};
pub(crate) use monitor_printer::{spawn_monitor_printer, LogStyle};

use std::io::{self, IsTerminal};
use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::base::door::{Door, Status};
use crate::engine::Engine;

/// The line the console starts with: the daemon's console is the daemon
/// (see the module docs), which a new user would not guess.
const CONSOLE_BANNER: &str =
    "console: type 'help' for the commands; exit, quit, Ctrl-C or Ctrl-D stops pagewire";

/// What `help` adds on this console.
const CONSOLE_NOTE: &str = "on this console: exit, quit, Ctrl-C or Ctrl-D stops pagewire \
     (use `pagewire console` in another terminal for a console that does not)";

/// Starts the daemon's console when stdin is a terminal; returns `None`
/// (and starts nothing) otherwise.
///
/// Each line runs with [`Door::Console`]. When the user ends the console,
/// `shutdown` is cancelled: the daemon stops with it (see the module docs).
/// When the terminal fails, the console ends and the daemon keeps running.
pub(crate) fn spawn_console(
    engine: Arc<Engine>,
    shutdown: CancellationToken,
) -> Option<JoinHandle<()>> {
    if !io::stdin().is_terminal() {
        return None;
    }
    let out = engine.out.clone();
    out.print(CONSOLE_BANNER);
    let mut editor = Editor::spawn(EditorConfig::default(), out.clone());
    Some(tokio::spawn(async move {
        loop {
            let request = tokio::select! {
                // Dropping the editor ends its thread at its next line.
                _ = shutdown.cancelled() => return,
                request = editor.next() => request,
            };
            let Some(request) = request else { break };
            let mut reply = engine.exec.run_line(&request.line, Door::Console).await;
            if request.line.trim() == "help" && reply.status == Status::Ok {
                reply.output.push('\n');
                reply.output.push_str(CONSOLE_NOTE);
            }
            out.print_console_text(&mut reply);
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
