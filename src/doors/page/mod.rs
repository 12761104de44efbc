//! The page door: the task that drives one page's upgraded connection, and
//! the socket it shares with the hub.

pub mod budget;
pub mod driver;
pub mod socket;
