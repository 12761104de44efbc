//! The leaves: what every other layer uses and that imports nothing of the
//! daemon.

pub(crate) mod backoff;
pub mod codec;
pub mod command;
pub(crate) mod door;
pub(crate) mod hold;
pub mod logline;
pub(crate) mod protocol;
pub mod stdout;
pub mod text;
