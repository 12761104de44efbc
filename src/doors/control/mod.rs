//! The control socket: a local Unix socket that lets the CLI drive the daemon.
//!
//! The wire format is newline-delimited JSON, one message per line:
//!
//! | direction | message | meaning |
//! |---|---|---|
//! | client -> daemon | `{"cmd":"ws write status \"VPN up\""}` | run one command line |
//! | daemon -> client | `{"ok":true,"output":"..."}` | its reply (one per request) |
//! | client -> daemon | `{"monitor":true}` | turn this connection into a Monitor tail |
//! | daemon -> client | `{"line":"..."}` | one Monitor line |
//! | daemon -> client | `{"missed":N}` | the watcher fell behind and N lines were skipped |
//!
//! Many requests may follow each other on one connection (`pagewire console`
//! keeps one open). A malformed request gets an `ok:false` reply and the
//! connection stays usable; a request line longer than [`MAX_REQUEST_LINE`]
//! gets an `ok:false` reply and the connection is closed, because the rest of
//! that line cannot be told apart from the next request. Unknown fields are
//! ignored so that a newer client can talk to an older daemon.
//!
//! [`server`] is the daemon side, [`client`] what the CLI uses, [`trust`]
//! the rule for whose socket may be used. This module holds the wire
//! types ([`wire`]), where the socket is and [`bind`] ([`socket`]), and
//! the flag that names it.
//!
//! Where the socket is: `--control PATH` (or `$PAGEWIRE_CONTROL`), else
//! `$XDG_RUNTIME_DIR/pagewire.sock`, else, for root,
//! `/run/pagewire/pagewire.sock`, and for any other user
//! `/tmp/pagewire-UID/pagewire.sock`. The daemon creates the directory
//! (mode 0700) when it is missing. If another user's file or directory is
//! in the way (someone made `/tmp/pagewire-UID` first, or left a socket at
//! the path), the daemon leaves it alone, binds in a new private directory
//! instead and says so in the Monitor, and the CLI refuses the planted one.

pub(crate) mod client;
pub(crate) mod server;
mod socket;
pub(crate) mod trust;
mod wire;

use std::path::PathBuf;

pub(crate) use client::{run_command, watch, Client, ClientError};
pub(crate) use server::serve;
pub(crate) use socket::{bind, client_default_path, default_path, serves_group};
pub(crate) use wire::{lines, ControlAnswer, ControlRequest, MAX_ANSWER_LINE, MAX_REQUEST_LINE};

/// Where the control socket is: a flag of `pagewire serve` (and of the CLI),
/// and the `control` key of the configuration file.
#[derive(clap::Args, serde::Deserialize, serde::Serialize, Debug, Default, Clone)]
#[serde(default)]
pub(crate) struct ControlSettings {
    /// The control socket for the CLI [default: $XDG_RUNTIME_DIR/pagewire.sock,
    /// else /run/pagewire/pagewire.sock for root, /tmp/pagewire-UID/pagewire.sock
    /// for other users]
    #[arg(
        id = "control",
        long = "control",
        value_name = "PATH",
        env = "PAGEWIRE_CONTROL",
        display_order = 4
    )]
    #[serde(rename = "control")]
    pub(crate) path: Option<PathBuf>,
}

impl ControlSettings {
    /// The path given, or the default one ([`default_path`]).
    pub(crate) fn path(&self) -> PathBuf {
        self.path.clone().unwrap_or_else(default_path)
    }
}

/// How many control connections may be open at once (monitor tails included).
pub(crate) const MAX_CONNECTIONS: usize = 64;
