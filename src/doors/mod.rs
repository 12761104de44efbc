//! The doors: the console, the control socket, HTTP and each page's
//! WebSocket. Each imports leaves and the engine, and no other door.

pub mod console;
pub mod control;
pub mod http;
pub mod page;
