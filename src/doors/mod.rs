//! The doors: the console, the control socket, HTTP, each page's
//! WebSocket and the admin console's. Each imports leaves and the engine,
//! and no other door.

pub(crate) mod admin;
pub(crate) mod console;
pub(crate) mod control;
pub(crate) mod http;
pub mod page;
