//! `quote` then `tokenize` gives back any argument list a line can carry
//! (what the CLI does with its argv), and reports a problem for the rest.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pagewire::base::command::{parse, quote, tokenize, MAX_LINE_BYTES};

fuzz_target!(|args: Vec<String>| {
    let line = quote(&args);
    let representable =
        line.len() <= MAX_LINE_BYTES && args.iter().all(|a| !a.contains(['\0', '\r', '\n']));
    let back = tokenize(&line);
    if representable {
        assert_eq!(back, Ok(args), "line {line:?}");
    } else {
        assert!(back.is_err(), "line {line:?} was accepted");
    }
    let _ = parse(&line);
});
