//! pagewire: serve web pages and keep a live, addressable WebSocket to each.
//!
//! The folders are the layers, lowest first (docs/ARCHITECTURE.md; the
//! rule is kept by `cargo test --lib layers`):
//!
//! - [`base`]: the leaves, which import nothing of the daemon: the command
//!   language, the WebSocket codec, the page protocol, what the doors share
//!   (`Door`, `Reply`), terminal-safe text, standard output.
//! - [`engine`]: the hub (connections, names, delivery), the Monitor, the
//!   backplane (one node or a cluster), the actions, and the executor that
//!   runs a command line from a door and returns a `Reply`. It imports no
//!   door.
//! - [`doors`]: the console, the control socket, HTTP and each page's
//!   WebSocket; each imports the engine, none another door.
//! - [`app`]: the command line, the configuration, and `serve`, which wires
//!   the engine and the doors together.
//!
//! The binary, the fuzz targets and the examples use the few items that are
//! `pub`; everything else is `pub(crate)`, so that the compiler reports
//! what nothing uses.

#![warn(unreachable_pub)]
// The docs link freely to crate-private items: they are for whoever works
// on pagewire (`cargo doc --document-private-items`).
#![allow(rustdoc::private_intra_doc_links)]

pub mod app;
pub mod base;
pub mod doors;
pub mod engine;

#[cfg(test)]
mod layers;
#[cfg(test)]
mod testutil;
