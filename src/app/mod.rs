//! The application: the command line, the configuration, and `serve`,
//! which wires the engine and the doors together.

pub mod cli;
pub(crate) mod config;
mod file;
mod manpage;
pub(crate) mod serve;
pub(crate) mod shutdown;
mod systemd;
