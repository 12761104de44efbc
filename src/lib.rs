//! pagewire: serve web pages and keep a live, addressable WebSocket to each.

pub mod cli;
pub mod console;
pub mod control;
pub mod exec;
pub mod monitor;
pub mod serve;
