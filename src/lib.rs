//! pagewire: serve web pages and keep a live, addressable WebSocket to each.

pub mod command;
pub mod exec;
pub mod monitor;
pub mod ws;
