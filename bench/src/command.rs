//! The part of the pagewire command language the benchmark speaks:
//! blank-separated tokens, double quotes with `\"` and `\\`, and JSON strings.

/// Split a command line into tokens. A double-quoted string is one token;
/// inside it `\"` and `\\` stand for `"` and `\`.
pub fn tokenize(line: &str) -> Result<Vec<String>, String> {
    let mut tokens = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let Some(&first) = chars.peek() else {
            return Ok(tokens);
        };
        let mut token = String::new();
        if first == '"' {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err("unterminated double quote".to_string()),
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some(c @ ('"' | '\\')) => token.push(c),
                        Some(c) => {
                            token.push('\\');
                            token.push(c);
                        }
                        None => return Err("unterminated double quote".to_string()),
                    },
                    Some(c) => token.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                token.push(c);
                chars.next();
            }
        }
        tokens.push(token);
    }
}

/// Quote `text` as one command-line token.
pub fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// Append `s` to `out` as a JSON string literal, quotes included.
pub fn json_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenize_cases() {
        let ok: &[(&str, &[&str])] = &[
            ("", &[]),
            ("ws", &["ws"]),
            ("  ws   register  bench ", &["ws", "register", "bench"]),
            (r#"ws write bench "a b""#, &["ws", "write", "bench", "a b"]),
            (
                r#"ws write x "q\"uote \\ back""#,
                &["ws", "write", "x", r#"q"uote \ back"#],
            ),
            (r#"ws write x """#, &["ws", "write", "x", ""]),
        ];
        for (line, want) in ok {
            assert_eq!(tokenize(line).unwrap(), *want, "{line}");
        }
        assert!(tokenize(r#"ws write x "open"#).is_err());
    }

    #[test]
    fn quote_roundtrips() {
        for s in ["plain", "two words", r#"a"b\c"#, ""] {
            assert_eq!(tokenize(&quote(s)).unwrap(), vec![s.to_string()]);
        }
    }

    #[test]
    fn json_string_escapes() {
        let mut out = String::new();
        json_string("a\"b\\c\n\u{1}é", &mut out);
        assert_eq!(out, r#""a\"b\\c\n\u0001é""#);
    }
}
