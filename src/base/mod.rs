//! The leaves: what every other layer uses and that imports nothing of the
//! daemon.

pub mod codec;
pub mod command;
pub mod door;
pub mod hold;
pub mod protocol;
pub mod stdout;
pub mod text;
