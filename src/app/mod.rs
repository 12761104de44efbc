//! The application: the command line, the configuration, and `serve`,
//! which wires the engine and the doors together.

pub mod cli;
pub mod config;
pub mod serve;
pub mod shutdown;
