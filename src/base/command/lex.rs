//! Splitting a command line into tokens, and quoting tokens back into a line.

use std::iter::Peekable;
use std::str::Chars;

use super::{ParseError, MAX_LINE_BYTES};

/// Whether `c` separates tokens. Only space and tab do: other Unicode
/// whitespace is ordinary text, so it can be written to a page unquoted.
fn is_blank(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// Splits `line` into tokens.
///
/// Tokens are separated by blanks (spaces and tabs). A token that starts with
/// a double quote runs to the matching closing quote and may hold blanks or be
/// empty; inside it `\"` stands for `"` and `\\` for `\`, and any other
/// backslash is kept as it is. Outside quotes a backslash is an ordinary
/// character. A line longer than [`MAX_LINE_BYTES`], or holding NUL, CR or
/// LF, is refused.
pub fn tokenize(line: &str) -> Result<Vec<String>, ParseError> {
    if line.len() > MAX_LINE_BYTES {
        return Err(ParseError::TooLong);
    }
    // A line is exactly one line: a newline smuggled into it (from an HTTP
    // body or a page's frame) would forge a second line in every log and in
    // the console's output, and NUL is never meaningful text.
    if let Some(ch) = line.chars().find(|&c| matches!(c, '\0' | '\n' | '\r')) {
        return Err(ParseError::ForbiddenChar { ch });
    }

    let mut tokens = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.next_if(|&c| is_blank(c)).is_some() {}
        match chars.peek() {
            None => return Ok(tokens),
            Some('"') => {
                chars.next();
                tokens.push(quoted_token(&mut chars)?);
            }
            Some(_) => tokens.push(bare_token(&mut chars)?),
        }
    }
}

/// Reads a quoted token whose opening quote was just consumed, up to and
/// including its closing quote.
fn quoted_token(chars: &mut Peekable<Chars<'_>>) -> Result<String, ParseError> {
    let mut token = String::new();
    loop {
        match chars.next() {
            None => return Err(ParseError::UnterminatedQuote),
            Some('"') => break,
            Some('\\') => match chars.next_if(|&c| c == '"' || c == '\\') {
                Some(escaped) => token.push(escaped),
                // Keeping unknown escapes literal lets Windows paths and
                // regular expressions through without doubling every
                // backslash.
                None => token.push('\\'),
            },
            Some(c) => token.push(c),
        }
    }
    // `"a"b` is almost always a typo; refusing it is clearer than guessing
    // whether the user meant one token or two.
    if chars.peek().is_some_and(|&c| !is_blank(c)) {
        return Err(ParseError::TextAfterQuote {
            found: bare_word(chars),
        });
    }
    Ok(token)
}

/// Reads an unquoted token, which ends at a blank or the end of the line.
fn bare_token(chars: &mut Peekable<Chars<'_>>) -> Result<String, ParseError> {
    let token = bare_word(chars);
    // A quote may only open a token: `say"hi there"` would otherwise split
    // in a place nobody expects.
    if token.contains('"') {
        return Err(ParseError::QuoteInsideToken { token });
    }
    Ok(token)
}

/// Consumes characters up to the next blank.
fn bare_word(chars: &mut Peekable<Chars<'_>>) -> String {
    let mut word = String::new();
    while let Some(c) = chars.next_if(|&c| !is_blank(c)) {
        word.push(c);
    }
    word
}

/// Builds a command line from `args` so that [`tokenize`] gives `args` back.
///
/// A token is quoted when it is empty or holds whitespace, a control
/// character, a double quote or a backslash; inside quotes `"` and `\` are
/// escaped. The round trip holds for every `args` that a line can carry at
/// all: tokens without NUL, CR or LF, in a line of at most
/// [`MAX_LINE_BYTES`]; for the others [`tokenize`] reports the problem.
pub fn quote(args: &[String]) -> String {
    let mut line = String::new();
    for (i, arg) in args.iter().enumerate() {
        if i > 0 {
            line.push(' ');
        }
        quote_into(&mut line, arg);
    }
    line
}

/// Appends `arg` to `line`, quoted when it has to be.
fn quote_into(line: &mut String, arg: &str) {
    let needs_quotes = arg.is_empty()
        || arg
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '"' || c == '\\');
    if !needs_quotes {
        line.push_str(arg);
        return;
    }
    line.push('"');
    for c in arg.chars() {
        // Escaping every backslash, not only those before a quote, keeps a
        // trailing backslash from eating the closing quote.
        if c == '"' || c == '\\' {
            line.push('\\');
        }
        line.push(c);
    }
    line.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::XorShift;

    /// One line per case: the input line, then the tokens or the error text.
    const CASES: &[(&str, Result<&[&str], &str>)] = &[
        ("", Ok(&[])),
        ("   \t  ", Ok(&[])),
        ("ws", Ok(&["ws"])),
        ("  ws   write\tstatus\t\tup  ", Ok(&["ws", "write", "status", "up"])),
        (r#"ws write status "VPN up""#, Ok(&["ws", "write", "status", "VPN up"])),
        (r#""""#, Ok(&[""])),
        (r#"a "" b"#, Ok(&["a", "", "b"])),
        (r#""" """#, Ok(&["", ""])),
        (r#""a\"b""#, Ok(&[r#"a"b"#])),
        (r#""a\\b""#, Ok(&[r"a\b"])),
        (r#""a\\""#, Ok(&[r"a\"])),
        (r#""\\\"""#, Ok(&[r#"\""#])),
        (r#""C:\dir\file""#, Ok(&[r"C:\dir\file"])),
        (r#""\n\t\x""#, Ok(&[r"\n\t\x"])),
        (r"a\b c\", Ok(&[r"a\b", r"c\"])),
        (r"\", Ok(&[r"\"])),
        ("\"tab\there\"", Ok(&["tab\there"])),
        ("\"  spaced  \"", Ok(&["  spaced  "])),
        ("héllo \"wörld ✓\"", Ok(&["héllo", "wörld ✓"])),
        ("статус\u{a0}x", Ok(&["статус\u{a0}x"])),
        ("'single quotes' are text", Ok(&["'single", "quotes'", "are", "text"])),
        (r#"""#, Err("unterminated double quote")),
        (r#"ws write x "VPN up"#, Err("unterminated double quote")),
        (r#""ends in escaped quote\""#, Err("unterminated double quote")),
        (r#""ends in backslash\"#, Err("unterminated double quote")),
        (r#""a"b"#, Err("unexpected 'b' after a closing double quote; expected a blank or the end of the line")),
        (r#""a""b" c"#, Err(r#"unexpected '"b"' after a closing double quote; expected a blank or the end of the line"#)),
        (r#"say"hi there""#, Err(r#"double quote inside 'say"hi'; a double quote may only start a token (inside a quoted token write \")"#)),
        (r#"5""#, Err(r#"double quote inside '5"'; a double quote may only start a token (inside a quoted token write \")"#)),
        ("a\0b", Err("line contains a NUL character; a command line is one line of text")),
        ("ws\n", Err("line contains a newline; a command line is one line of text")),
        ("ws\r\nws", Err("line contains a carriage return; a command line is one line of text")),
        ("\"quoted\nnewline\"", Err("line contains a newline; a command line is one line of text")),
    ];

    #[test]
    fn tokenize_cases() {
        let mut failures = Vec::new();
        for &(line, want) in CASES {
            let got = tokenize(line).map_err(|e| e.to_string());
            let want = want
                .map(|tokens| tokens.iter().map(|t| t.to_string()).collect::<Vec<_>>())
                .map_err(str::to_string);
            if got != want {
                failures.push(format!("{line:?}\n   got {got:?}\n  want {want:?}"));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn line_length_limit() {
        let longest = "x".repeat(MAX_LINE_BYTES);
        assert_eq!(tokenize(&longest), Ok(vec![longest.clone()]));
        let too_long = format!("{longest}y");
        assert_eq!(tokenize(&too_long), Err(ParseError::TooLong));
        // The limit counts bytes, not characters.
        let wide = "✓".repeat(MAX_LINE_BYTES / 3 + 1);
        assert_eq!(tokenize(&wide), Err(ParseError::TooLong));
    }

    fn argv(tokens: &[&str]) -> Vec<String> {
        tokens.iter().map(|t| t.to_string()).collect()
    }

    #[test]
    fn quote_output() {
        let cases: &[(&[&str], &str)] = &[
            (&[], ""),
            (&["ws"], "ws"),
            (
                &["ws", "write", "status", "VPN up"],
                r#"ws write status "VPN up""#,
            ),
            (&[""], r#""""#),
            (&[r#"say "hi""#], r#""say \"hi\"""#),
            (&[r"C:\dir\"], r#""C:\\dir\\""#),
            (&["a\tb"], "\"a\tb\""),
            (&["héllo", "wörld ✓"], "héllo \"wörld ✓\""),
            (&["*", "7", "-x", "f(1)"], "* 7 -x f(1)"),
        ];
        for &(args, want) in cases {
            assert_eq!(quote(&argv(args)), want, "quote({args:?})");
        }
    }

    /// Argument vectors chosen to break a careless quoter.
    const TRICKY: &[&[&str]] = &[
        &[],
        &[""],
        &["", ""],
        &["", "a", ""],
        &[" "],
        &["\t"],
        &[" leading", "trailing ", " both "],
        &["\""],
        &["\"\""],
        &["\"quoted\""],
        &["mid\"quote"],
        &["\\"],
        &["\\\\"],
        &["trailing\\"],
        &["\\\""],
        &["\"\\"],
        &["a\\\"b"],
        &["\\n", "\\t", "\\x"],
        &["ws", "write", "*", "héllo wörld ✓"],
        &["ws", "register", "статус"],
        &["日本語 テキスト", "🙂", "e\u{301}"],
        &["nbsp\u{a0}inside", "\u{3000}"],
        &["bell\u{7}", "esc\u{1b}[0m"],
        &["*", "0", "99999999999999999999999"],
        &["'", "''", "`", "$HOME", ";", "&&", "|"],
    ];

    #[test]
    fn quote_round_trips_tricky_argv() {
        for args in TRICKY {
            let args = argv(args);
            let line = quote(&args);
            assert_eq!(tokenize(&line), Ok(args.clone()), "line {line:?}");
        }
    }

    #[test]
    fn quote_round_trips_random_argv() {
        const ALPHABET: &[char] = &[
            'a', 'Z', '0', '*', ' ', ' ', '\t', '"', '"', '\\', '\\', '\'', 'é', '✓', '\u{a0}',
            '\u{7}', '🙂',
        ];
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        for _ in 0..5000 {
            let args: Vec<String> = (0..rng.below(6))
                .map(|_| {
                    (0..rng.below(8))
                        .map(|_| ALPHABET[rng.below(ALPHABET.len())])
                        .collect()
                })
                .collect();
            let line = quote(&args);
            assert_eq!(tokenize(&line), Ok(args.clone()), "line {line:?}");
        }
    }

    #[test]
    fn quote_cannot_carry_line_breaks() {
        // No quoting can put a line break into one line; the caller hears
        // why instead of getting a different command.
        let args = argv(&["ws", "write", "status", "two\nlines"]);
        assert_eq!(
            tokenize(&quote(&args)),
            Err(ParseError::ForbiddenChar { ch: '\n' })
        );
    }
}
