//! pagewire's integration tests: one binary, one module per area. Each test
//! starts the real daemon on port 0 and talks to it like a user would.

mod action_guards;
mod actions;
mod admin;
mod cli;
mod cluster;
mod control_owner;
mod frames_budget;
mod guard;
mod http;
mod memory;
mod package;
mod page;
mod reliability;
mod remember;
mod secure;
mod service;
mod support;
mod terminal;
mod verbs;
mod ws;
