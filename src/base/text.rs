//! Text on its way to a terminal or the Monitor, with control characters
//! escaped.
//!
//! Whatever a page, a client or an action sends may end up on the
//! operator's terminal: in a Monitor line, a `ws` listing, a reply the CLI
//! prints. There it must show as text, never act: no escape sequence that
//! clears the screen or retitles the window, no carriage return or newline
//! that starts a line of its own (a forged Monitor line), no bidi override
//! that makes a line read backwards, no invisible character that makes two
//! names look alike. [`escape`] is the one function that makes text safe to
//! print; every place that prints uses it (or [`escape_lines`] for output
//! that is meant to be several lines).
//!
//! Escaped are:
//! - control characters (Unicode category Cc): C0 including `\n`, `\r`
//!   and `\t`, DEL, and C1 (U+0080 to U+009F, which some terminals obey
//!   like ESC sequences);
//! - format characters (category Cf): bidi controls (U+202A to U+202E,
//!   U+2066 to U+2069, U+200E, U+200F, U+061C), zero-width characters
//!   (U+200B to U+200D, U+2060, U+FEFF), invisible operators, tag
//!   characters and the rest;
//! - the line and paragraph separators U+2028 and U+2029;
//! - a few characters that draw nothing at all (the Hangul fillers,
//!   U+034F, the Khmer and Mongolian invisible vowels and selectors).
//!
//! `\n`, `\r` and `\t` are shown as such, everything else as `\u{hex}`, the
//! way Rust writes them. A backslash is left as it is, so escaping is
//! idempotent: text escaped by the daemon and again by the CLI reads the
//! same. The price is that a page can send the six characters `\u{1b}`
//! and they look like an escaped ESC; that is text, and does nothing.
//! Variation selectors (which pick the emoji form of `✔`) are left alone:
//! they attach to the character before them and cannot move or hide text.
//!
//! This module is a leaf: it imports nothing of the daemon.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

/// Whether `c` is shown escaped rather than printed (see the module docs).
pub(crate) fn needs_escape(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_control();
    }
    c.is_control() || is_invisible(c)
}

/// Format characters (Unicode 15.1 category Cf), the line and paragraph
/// separators, and characters that draw nothing.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00ad}'
            | '\u{034f}'
            | '\u{0600}'..='\u{0605}'
            | '\u{061c}'
            | '\u{06dd}'
            | '\u{070f}'
            | '\u{0890}'..='\u{0891}'
            | '\u{08e2}'
            | '\u{115f}'..='\u{1160}'
            | '\u{17b4}'..='\u{17b5}'
            | '\u{180b}'..='\u{180f}'
            | '\u{200b}'..='\u{200f}'
            | '\u{2028}'..='\u{202e}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206f}'
            | '\u{3164}'
            | '\u{feff}'
            | '\u{ffa0}'
            | '\u{fff9}'..='\u{fffb}'
            | '\u{110bd}'
            | '\u{110cd}'
            | '\u{13430}'..='\u{1343f}'
            | '\u{1bca0}'..='\u{1bca3}'
            | '\u{1d173}'..='\u{1d17a}'
            | '\u{e0001}'
            | '\u{e0020}'..='\u{e007f}'
    )
}

/// `s` as one line that is safe to print: every character of
/// [`needs_escape`] escaped, newlines included. Borrows `s` when there is
/// nothing to escape, which printable ASCII tells at a glance.
pub fn escape(s: &str) -> Cow<'_, str> {
    escape_with(s, false)
}

/// Like [`escape`], but a `\n` stays a line break: for output that is
/// meant to be several lines (a `ws` listing, help). Each line is safe to
/// print; a `\r` before a `\n` is escaped like any other.
pub(crate) fn escape_lines(s: &str) -> Cow<'_, str> {
    escape_with(s, true)
}

/// Escapes `s[from..]` in place, as [`escape`] does; nothing is copied
/// when there is nothing to escape.
pub(crate) fn escape_tail(s: &mut String, from: usize) {
    let escaped = match escape(&s[from..]) {
        Cow::Owned(escaped) => escaped,
        Cow::Borrowed(_) => return,
    };
    s.truncate(from);
    s.push_str(&escaped);
}

fn escape_with(s: &str, keep_newlines: bool) -> Cow<'_, str> {
    let plain = |b: u8| (b' '..=b'~').contains(&b) || (keep_newlines && b == b'\n');
    // The fast path, and the common case: printable ASCII only, checked
    // 16 bytes at a time (a fold the compiler turns into vector compares).
    let bytes = s.as_bytes();
    let mut chunks = bytes.chunks_exact(16);
    let mut checked = 0;
    for chunk in &mut chunks {
        if chunk.iter().fold(false, |odd, &b| odd | !plain(b)) {
            break;
        }
        checked += 16;
    }
    let Some(first) = bytes[checked..].iter().position(|&b| !plain(b)) else {
        return Cow::Borrowed(s);
    };
    let first = checked + first;
    let kept = |c: char| keep_newlines && c == '\n';
    let rest = &s[first..];
    let Some(at) = rest.find(|c: char| needs_escape(c) && !kept(c)) else {
        return Cow::Borrowed(s);
    };
    let at = first + at;
    let mut out = String::with_capacity(s.len() + 16);
    out.push_str(&s[..at]);
    for c in s[at..].chars() {
        if needs_escape(c) && !kept(c) {
            // Writing to a String cannot fail.
            let _ = write_escaped(&mut out, c);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Writes the escaped form of `c`: `\n`, `\r`, `\t` or `\u{hex}`.
fn write_escaped(out: &mut impl fmt::Write, c: char) -> fmt::Result {
    match c {
        '\n' => out.write_str("\\n"),
        '\r' => out.write_str("\\r"),
        '\t' => out.write_str("\\t"),
        _ => write!(out, "\\u{{{:x}}}", u32::from(c)),
    }
}

/// Shows a `&str` escaped as by [`escape`], for `format!` and `write!`
/// without an intermediate `String`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Escaped<'a>(pub(crate) &'a str);

/// Shows input inside a one-line message (an error, a Monitor line):
/// escaped as by [`escape`] and cut after `max_chars` characters, with
/// `...` when it was cut, so that a 64 KiB header or token cannot make a
/// 64 KiB line.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Shown<'a> {
    text: &'a str,
    max_chars: usize,
}

/// `text` for a one-line message, at most `max_chars` characters of it.
pub(crate) fn shown(text: &str, max_chars: usize) -> Shown<'_> {
    Shown { text, max_chars }
}

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.text.char_indices().nth(self.max_chars) {
            Some((end, _)) => write!(f, "{}...", Escaped(&self.text[..end])),
            None => write!(f, "{}", Escaped(self.text)),
        }
    }
}

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(at) = rest.find(needs_escape) {
            f.write_str(&rest[..at])?;
            let mut chars = rest[at..].chars();
            if let Some(c) = chars.next() {
                write_escaped(f, c)?;
            }
            rest = chars.as_str();
        }
        f.write_str(rest)
    }
}

/// A wait or timeout as a person writes it: `1s`, `1.5s` or `250ms`.
///
/// Written here rather than with `humantime`, whose `1s 500ms` and `1m 5s`
/// would change what the Monitor and the listings say (and what tests and
/// scripts match on).
pub(crate) fn duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else if ms > 1000 {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        format!("{ms}ms")
    }
}

/// An age in the `ws` listing: `5s`, `1m05s`, `2h02m`, always short.
pub(crate) fn age(age: Duration) -> String {
    let s = age.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One line per case: the input, then how it is shown.
    const CASES: &[(&str, &str)] = &[
        ("plain text: 1 + 1 = 2 ~", "plain text: 1 + 1 = 2 ~"),
        ("", ""),
        ("a\nb", r"a\nb"),
        ("a\r\nb", r"a\r\nb"),
        ("tab\there", r"tab\there"),
        ("nul\0", r"nul\u{0}"),
        (
            "\u{1b}[2J\u{1b}]0;title\u{7}",
            r"\u{1b}[2J\u{1b}]0;title\u{7}",
        ),
        ("del\u{7f}", r"del\u{7f}"),
        (
            "c1 \u{80} \u{85} \u{9b}31m \u{9f}",
            r"c1 \u{80} \u{85} \u{9b}31m \u{9f}",
        ),
        (
            "\u{202a}\u{202b}\u{202c}\u{202d}\u{202e}",
            r"\u{202a}\u{202b}\u{202c}\u{202d}\u{202e}",
        ),
        (
            "\u{2066}\u{2067}\u{2068}\u{2069}",
            r"\u{2066}\u{2067}\u{2068}\u{2069}",
        ),
        ("\u{200e}\u{200f}\u{61c}", r"\u{200e}\u{200f}\u{61c}"),
        (
            "a\u{200b}b\u{200c}c\u{200d}d\u{2060}e\u{feff}",
            r"a\u{200b}b\u{200c}c\u{200d}d\u{2060}e\u{feff}",
        ),
        ("line\u{2028}para\u{2029}", r"line\u{2028}para\u{2029}"),
        ("soft\u{ad}hyphen", r"soft\u{ad}hyphen"),
        ("tag\u{e0041}\u{e007f}", r"tag\u{e0041}\u{e007f}"),
        ("filler\u{3164}\u{115f}", r"filler\u{3164}\u{115f}"),
        // Visible text stays as it is, whatever its script.
        (
            "héllo wörld ✓ ✔\u{fe0f} статус 状态 مرحبا",
            "héllo wörld ✓ ✔\u{fe0f} статус 状态 مرحبا",
        ),
        ("no\u{a0}break", "no\u{a0}break"),
        // A backslash is text: escaping twice changes nothing.
        (r"\u{1b} and \n", r"\u{1b} and \n"),
    ];

    #[test]
    fn what_is_escaped_and_how() {
        for &(input, want) in CASES {
            assert_eq!(escape(input), want, "{input:?}");
            assert_eq!(Escaped(input).to_string(), want, "{input:?}");
        }
    }

    #[test]
    fn escaping_is_idempotent() {
        for &(input, _) in CASES {
            let once = escape(input).into_owned();
            assert_eq!(escape(&once), once.as_str(), "{input:?}");
            assert!(matches!(escape(&once), Cow::Borrowed(_)), "{input:?}");
        }
    }

    #[test]
    fn escaped_text_holds_nothing_to_escape() {
        let all: String = (0..=0x3000u32)
            .chain(0xe0000..=0xe0080)
            .filter_map(char::from_u32)
            .collect();
        let shown = escape(&all);
        assert!(!shown.chars().any(needs_escape));
        assert!(!shown.chars().any(char::is_control));
    }

    #[test]
    fn plain_text_is_borrowed() {
        assert!(matches!(
            escape("ws 7 opened from 127.0.0.1:5000"),
            Cow::Borrowed(_)
        ));
        assert!(matches!(escape("статус ✓"), Cow::Borrowed(_)));
        assert!(matches!(escape_lines("a\nb"), Cow::Borrowed(_)));
        assert!(matches!(escape("a\nb"), Cow::Owned(_)));
    }

    #[test]
    fn a_tail_is_escaped_in_place() {
        let mut s = String::from("12:00 a\nb");
        escape_tail(&mut s, 6);
        assert_eq!(s, "12:00 a\\nb");
        let mut plain = String::from("plain");
        escape_tail(&mut plain, 0);
        assert_eq!(plain, "plain");
    }

    #[test]
    fn lines_keep_their_breaks_and_lose_the_rest() {
        assert_eq!(escape_lines("1 a\n2 b\n"), "1 a\n2 b\n");
        assert_eq!(
            escape_lines("1 a\u{1b}[2J\r\n2 b\u{202e}"),
            "1 a\\u{1b}[2J\\r\n2 b\\u{202e}"
        );
    }

    #[test]
    fn durations_and_ages_read_naturally() {
        assert_eq!(duration(Duration::from_millis(1000)), "1s");
        assert_eq!(duration(Duration::from_millis(250)), "250ms");
        assert_eq!(age(Duration::from_secs(5)), "5s");
        assert_eq!(age(Duration::from_secs(65)), "1m05s");
        assert_eq!(age(Duration::from_secs(7322)), "2h02m");
    }
}
