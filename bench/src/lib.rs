//! Shared pieces of the pagewire benchmark.
//!
//! - `frame`: the few parts of RFC 6455 framing that a load client and a
//!   minimal server need (header parsing, encoding, the accept key).
//! - `command`: the command-line tokenizer and a JSON string escaper, enough
//!   for `ws register NAME` and `ws write TARGET "text"`.
//! - `report`: the result record every load run prints, and percentiles.
//! - `sys`: the process file limit and a server's resident memory (now
//!   and at its peak).

pub mod command;
pub mod frame;
pub mod report;
pub mod sys;
