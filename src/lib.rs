//! pagewire: serve web pages and keep a live, addressable WebSocket to each.

#![warn(unreachable_pub)]

//!
//! The binary, the fuzz targets and the examples use the few items that are
//! `pub`; everything else is `pub(crate)`, so that the compiler reports
//! what nothing uses.

pub mod app;
pub mod base;
pub mod doors;
pub mod engine;

#[cfg(test)]
mod layers;
#[cfg(test)]
mod testutil;
