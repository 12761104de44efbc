//! The WebSocket transport: RFC 6455 framing and handshake (pure, no I/O),
//! and the task that drives one page's connection.

pub mod budget;
pub mod conn;
pub mod frame;
pub mod handshake;
pub mod socket;
