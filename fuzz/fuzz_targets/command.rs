//! Any line a door may hand to the command parser (console, control socket,
//! HTTP, a page's text frame): parsing never panics, errors are one line,
//! and a tokenized line quoted back gives the same tokens and the same
//! command.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pagewire::base::command::{parse, quote, tokenize, MAX_LINE_BYTES};

fuzz_target!(|data: &[u8]| {
    // Every door hands the parser text: bytes that are not UTF-8 are
    // refused before they get this far.
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = parse(line);
    if let Err(e) = &parsed {
        let shown = e.to_string();
        assert!(
            !shown.contains('\n'),
            "a parse error spans lines: {shown:?}"
        );
    }
    match tokenize(line) {
        Ok(tokens) => {
            let again = quote(&tokens);
            // Quoting may lengthen a line that was near the limit.
            if again.len() <= MAX_LINE_BYTES {
                assert_eq!(tokenize(&again).as_ref(), Ok(&tokens), "line {again:?}");
                assert_eq!(parse(&again), parsed, "line {again:?}");
            }
        }
        // The parser tokenizes first, so it reports the same problem.
        Err(e) => assert_eq!(parsed, Err(e)),
    }
});
