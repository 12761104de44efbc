//! Runs one command line from one door against the hub and returns a Reply.
//!
//! Every door (console, control socket, HTTP, a page's own WebSocket) calls
//! [`Executor::run_line`] and renders the [`Reply`] its own way, so the same
//! line gives the same output everywhere.

/// Where a command line came from; decides what it may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Door {
    /// The interactive console of `pagewire serve`.
    Console,
    /// The local control socket (the CLI, `pagewire console`).
    Control,
    /// `POST /api/command` or `/shell`; `operator` is false when the caller
    /// only has a page's rights (no valid token where one is required).
    Http {
        /// Whether the request carries operator rights.
        operator: bool,
    },
    /// A page, over its own WebSocket (the connection's index).
    Page(u64),
}

/// The outcome of one command line, before any door renders it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// Whether the command succeeded.
    pub ok: bool,
    /// The output text (no trailing newline), or the one-line error.
    pub output: String,
}

/// Runs command lines; cheap to clone, one per door.
#[derive(Clone)]
pub struct Executor {}

impl Executor {
    /// Parses and runs `line` on behalf of `door`.
    pub async fn run_line(&self, line: &str, door: Door) -> Reply {
        let _ = (line, door);
        Reply {
            ok: false,
            output: "not implemented yet".into(),
        }
    }
}
