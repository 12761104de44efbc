//! The WebSocket transport: RFC 6455 frame codec and opening handshake, free of I/O.

pub mod frame;
pub mod handshake;
