//! The doors: the console, the control socket, HTTP and each page's
//! WebSocket. Each imports leaves and the engine, and no other door.

pub(crate) mod console;
pub(crate) mod control;
pub(crate) mod http;
pub mod page;
