//! What every door shares with the engine: where a command line came from
//! ([`Door`]) and what came of it ([`Reply`]), before any door renders it.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::base::protocol::PageAnswer;

/// Where a command line came from; decides what it may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Door {
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
    /// The admin console's socket (`/admin/ws`), opened with operator
    /// rights.
    Admin,
}

impl Door {
    /// Every door's label, in the order of [`Door::slot`].
    pub(crate) const LABELS: [&'static str; 5] = ["console", "control", "http", "page", "admin"];

    /// The door's name, without a page's index: `console`, `control`,
    /// `http`, `page` or `admin`.
    pub(crate) fn label(self) -> &'static str {
        Self::LABELS[self.slot()]
    }

    /// The door's place in [`Door::LABELS`].
    pub(crate) fn slot(self) -> usize {
        match self {
            Door::Console => 0,
            Door::Control => 1,
            Door::Http { .. } => 2,
            Door::Page(_) => 3,
            Door::Admin => 4,
        }
    }

    /// Whether lines from this door run with the operator's rights.
    pub(crate) fn is_operator(self) -> bool {
        match self {
            Door::Console | Door::Control | Door::Admin => true,
            Door::Http { operator } => operator,
            Door::Page(_) => false,
        }
    }
}

impl fmt::Display for Door {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Door::Page(id) => write!(f, "page {id}"),
            other => f.write_str(other.label()),
        }
    }
}

/// How a command line ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Status {
    /// It succeeded.
    Ok,
    /// It was refused or failed: a parse error, an index nobody holds.
    Failed,
    /// It needs rights the door does not have (HTTP answers 401).
    Denied,
    /// It ran, but not every target page did its part: a call that threw
    /// or was not answered, a write not confirmed, a wait that timed out.
    /// The output is the command's result (the CLI prints it on stdout)
    /// and the command fails (exit 1).
    Partial,
}

/// The outcome of one command line, before any door renders it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Reply {
    /// How it ended.
    pub(crate) status: Status,
    /// The output text (no trailing newline), or the one-line error.
    pub(crate) output: String,
    /// Text for this daemon's console (a `ws write` that reached no page):
    /// the door that asked prints it there, escaped already.
    pub(crate) console: Option<String>,
    /// Each target page's answer, for the commands that wait for one
    /// (`ws call`, `ws read`, `--wait`); doors that speak JSON show them.
    pub(crate) results: Option<Vec<PageAnswer>>,
}

impl Reply {
    /// A successful reply.
    pub(crate) fn ok(output: impl Into<String>) -> Self {
        Reply::with(Status::Ok, output.into())
    }

    /// A failed reply.
    pub(crate) fn err(output: impl fmt::Display) -> Self {
        Reply::with(Status::Failed, output.to_string())
    }

    /// A reply refusing the command for lack of rights.
    pub(crate) fn denied(output: impl fmt::Display) -> Self {
        Reply::with(Status::Denied, output.to_string())
    }

    /// The reply of a command that waited for pages: ok when every one of
    /// `results` is, [`Status::Partial`] otherwise (or when `met` is
    /// false: too few pages).
    pub(crate) fn answered(output: String, results: Vec<PageAnswer>, met: bool) -> Self {
        let ok = met && results.iter().all(PageAnswer::is_ok);
        Reply {
            results: Some(results),
            ..Reply::with(if ok { Status::Ok } else { Status::Partial }, output)
        }
    }

    /// A reply of `status` with `output`.
    pub(crate) fn with(status: Status, output: String) -> Self {
        Reply {
            status,
            output,
            console: None,
            results: None,
        }
    }

    /// Whether the command succeeded.
    pub(crate) fn is_ok(&self) -> bool {
        self.status == Status::Ok
    }
}

/// A WebSocket that the HTTP door has accepted (it checked the handshake,
/// the Origin and the limits, and answered 101), handed to the page door
/// that serves it; `serve` joins the two doors.
pub(crate) struct Upgrade {
    /// The connection, once hyper has let go of it.
    pub(crate) pending: hyper::upgrade::OnUpgrade,
    /// The peer's address.
    pub(crate) peer: SocketAddr,
    /// The page it came from, for the listing.
    pub(crate) page: String,
    /// The resume token the page presented (`?resume=`), if any.
    pub(crate) resume: Option<String>,
    /// The server window bits of the permessage-deflate agreed in the
    /// handshake, or 0 without it.
    pub(crate) deflate_bits: u8,
    /// Kept for as long as the WebSocket lives: its place in the accept
    /// loop's connection limits. Shared (an `Arc` the HTTP door already
    /// made), so keeping it costs a page no allocation of its own.
    pub(crate) keep: Option<Arc<dyn Send + Sync>>,
}

/// How the admin socket's caller proves operator rights, as the HTTP door
/// found it at the upgrade.
pub(crate) enum AdminAuth {
    /// Proven already: the bearer token in the upgrade request, or a local
    /// client of a daemon without a token.
    Granted,
    /// A token is configured and the request did not carry it: the first
    /// message must (a browser cannot set headers on a WebSocket). The
    /// check compares in constant time.
    FirstMessage(Box<dyn Fn(&str) -> bool + Send + Sync>),
}

/// An admin console's WebSocket that the HTTP door has accepted (handshake,
/// Origin, rights), handed to the admin door; `serve` joins the two.
pub(crate) struct AdminUpgrade {
    /// The connection, once hyper has let go of it.
    pub(crate) pending: hyper::upgrade::OnUpgrade,
    /// The peer's address.
    pub(crate) peer: SocketAddr,
    /// What is left to prove.
    pub(crate) auth: AdminAuth,
    /// Kept for as long as the WebSocket lives: its place in the accept
    /// loop's connection limits.
    pub(crate) keep: Box<dyn Send>,
}
