//! pagewire: serve web pages and keep a live, addressable WebSocket to each.

pub mod app;
pub mod base;
pub mod doors;
pub mod engine;

#[cfg(test)]
mod layers;
#[cfg(test)]
mod testutil;
