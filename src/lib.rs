//! pagewire: serve web pages and keep a live, addressable WebSocket to each.

pub mod actions;
pub mod backplane;
pub mod cli;
pub mod command;
pub mod config;
pub mod console;
pub mod control;
pub mod exec;
pub mod http;
pub mod hub;
pub mod monitor;
pub mod protocol;
pub mod serve;
pub mod shutdown;
pub mod text;
pub mod ws;

#[cfg(test)]
mod testutil;
