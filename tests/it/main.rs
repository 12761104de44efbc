//! pagewire's integration tests: one binary, one module per area. Each test
//! starts the real daemon on port 0 and talks to it like a user would.

mod actions;
mod cli;
mod cluster;
mod http;
mod page;
mod reliability;
mod secure;
mod support;
mod terminal;
mod ws;
