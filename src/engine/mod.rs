//! The engine: the hub, the Monitor, the backplane, the actions and the
//! executor. It imports leaves and nothing of the doors.

pub mod actions;
pub mod backplane;
pub mod exec;
pub mod hub;
pub mod monitor;
