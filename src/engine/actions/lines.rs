//! A program's output, line by line, bounded whatever the program writes.

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

/// Longest output line passed on, in bytes; the rest of a longer line is
/// dropped and [`CUT_MARK`] ends what is kept.
pub(crate) const MAX_LINE_BYTES: usize = 4096;

/// Ends a line that was cut at [`MAX_LINE_BYTES`].
pub(crate) const CUT_MARK: &str = "…";

/// Reads one stream of a program line by line, keeping at most
/// [`MAX_LINE_BYTES`] of a line, whatever the program writes.
///
/// Not `tokio_util`'s `LinesCodec::new_with_max_length`: it drops a line
/// over the limit with an error and ends at the first bytes that are not
/// UTF-8, where a page must see the start of the long line (cut, with
/// [`CUT_MARK`]) and the rest of a program's output with U+FFFD in place
/// of bad bytes. The control socket, which refuses long lines, uses the
/// codec (`doors::control::lines`).
pub(super) struct LineReader<R> {
    pub(super) reader: Option<BufReader<R>>,
    pub(super) line: Vec<u8>,
    pub(super) cut: bool,
    /// The stream has ended (or was never there).
    pub(super) done: bool,
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    pub(super) fn new(stream: Option<R>) -> Self {
        LineReader {
            done: stream.is_none(),
            reader: stream.map(BufReader::new),
            line: Vec::new(),
            cut: false,
        }
    }

    /// The next line, without its line ending, or None at the end of the
    /// stream. Cancel-safe: a partial line stays here until the rest comes.
    pub(super) async fn next_line(&mut self) -> Option<String> {
        loop {
            let Some(reader) = self.reader.as_mut() else {
                self.done = true;
                return None;
            };
            let buf = match reader.fill_buf().await {
                Ok(buf) => buf,
                // A read error on a pipe ends the stream like EOF does.
                Err(_) => &[],
            };
            if buf.is_empty() {
                self.reader = None;
                self.done = true;
                if self.line.is_empty() && !self.cut {
                    return None;
                }
                return Some(self.take());
            }
            let (chunk, used, complete) = match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (&buf[..i], i + 1, true),
                None => (buf, buf.len(), false),
            };
            let room = MAX_LINE_BYTES.saturating_sub(self.line.len());
            if chunk.len() > room {
                self.line.extend_from_slice(&chunk[..room]);
                self.cut = true;
            } else {
                self.line.extend_from_slice(chunk);
            }
            reader.consume(used);
            if complete {
                return Some(self.take());
            }
        }
    }

    /// The line gathered so far, as text.
    fn take(&mut self) -> String {
        let mut bytes = std::mem::take(&mut self.line);
        let cut = std::mem::take(&mut self.cut);
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
        if cut {
            // Drop a character split by the cut rather than show it as
            // a replacement character.
            if let Err(e) = std::str::from_utf8(&bytes) {
                if e.error_len().is_none() {
                    bytes.truncate(e.valid_up_to());
                }
            }
        }
        let mut text = String::from_utf8_lossy(&bytes).into_owned();
        if cut {
            text.push_str(CUT_MARK);
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn long_lines_are_cut_and_split_characters_dropped() {
        let mut input = vec![b'a'; MAX_LINE_BYTES - 1];
        input.extend_from_slice("é and more\nnext\r\n".as_bytes());
        input.extend_from_slice(b"bad \xff byte");
        let mut r = LineReader::new(Some(&input[..]));
        let first = r.next_line().await.expect("first");
        assert_eq!(
            first,
            format!("{}{CUT_MARK}", "a".repeat(MAX_LINE_BYTES - 1))
        );
        assert_eq!(r.next_line().await.as_deref(), Some("next"));
        assert_eq!(r.next_line().await.as_deref(), Some("bad \u{fffd} byte"));
        assert_eq!(r.next_line().await, None);
        assert!(r.done);
    }
}
