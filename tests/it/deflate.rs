//! permessage-deflate (RFC 7692) with pages: negotiated in the handshake
//! without context takeover, a broadcast compressed once (the same bytes to
//! every page that accepted it), compressed messages from a page inflated
//! within the message limit.
//!
//! The clients speak raw RFC 6455 over TCP, so that the frames on the wire
//! (RSV1, the exact bytes) can be compared.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{Daemon, TIMEOUT};

/// What Chromium offers.
const CHROMIUM_OFFER: &str = "permessage-deflate; client_max_window_bits";

/// A raw WebSocket client.
struct Raw {
    s: TcpStream,
    /// Bytes read past what has been handed out.
    buf: Vec<u8>,
    /// The `Sec-WebSocket-Extensions` the server answered, if any.
    extensions: Option<String>,
}

/// One server frame, as it came on the wire.
struct WireFrame {
    bytes: Vec<u8>,
    payload_start: usize,
}

impl WireFrame {
    fn b0(&self) -> u8 {
        self.bytes[0]
    }

    fn payload(&self) -> &[u8] {
        &self.bytes[self.payload_start..]
    }

    /// The message it carries: inflated if RSV1 is set.
    fn text(&self) -> String {
        let data = if self.b0() & 0x40 != 0 {
            inflate(self.payload())
        } else {
            self.payload().to_vec()
        };
        String::from_utf8(data).expect("utf-8")
    }
}

impl Raw {
    /// Upgrades `/ws`, offering `extensions` if given, and reads `hello`.
    async fn open(d: &Daemon, extensions: Option<&str>) -> Raw {
        let mut s = TcpStream::connect(d.addr).await.expect("connect");
        let offer = extensions
            .map(|e| format!("Sec-WebSocket-Extensions: {e}\r\n"))
            .unwrap_or_default();
        let req = format!(
            "GET /ws?page=/raw.html HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{offer}\r\n",
            d.addr
        );
        s.write_all(req.as_bytes()).await.expect("write");
        let mut raw = Raw {
            s,
            buf: Vec::new(),
            extensions: None,
        };
        let end = loop {
            if let Some(end) = raw.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end;
            }
            raw.fill().await;
        };
        let head = String::from_utf8(raw.buf[..end].to_vec()).expect("head");
        raw.buf.drain(..end + 4);
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        raw.extensions = head.lines().find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("sec-websocket-extensions")
                .then(|| value.trim().to_string())
        });
        let hello = raw.frame().await;
        assert_eq!(json(&hello.text())["type"], "hello");
        raw
    }

    async fn fill(&mut self) {
        let mut chunk = [0u8; 8192];
        let n = tokio::time::timeout(TIMEOUT, self.s.read(&mut chunk))
            .await
            .expect("read within the timeout")
            .expect("read");
        assert!(n > 0, "connection closed");
        self.buf.extend_from_slice(&chunk[..n]);
    }

    /// The next server frame.
    async fn frame(&mut self) -> WireFrame {
        loop {
            if self.buf.len() >= 2 {
                let (len, start) = match self.buf[1] & 0x7f {
                    126 if self.buf.len() >= 4 => {
                        (u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize, 4)
                    }
                    127 if self.buf.len() >= 10 => (
                        u64::from_be_bytes(self.buf[2..10].try_into().expect("8 bytes")) as usize,
                        10,
                    ),
                    126 | 127 => (usize::MAX, 0),
                    n => (n as usize, 2),
                };
                if len != usize::MAX && self.buf.len() >= start + len {
                    let bytes: Vec<u8> = self.buf.drain(..start + len).collect();
                    return WireFrame {
                        bytes,
                        payload_start: start,
                    };
                }
            }
            self.fill().await;
        }
    }

    /// The next data frame, skipping pings.
    async fn data(&mut self) -> WireFrame {
        loop {
            let f = self.frame().await;
            if f.b0() & 0x0f != 0x9 {
                return f;
            }
        }
    }

    /// Sends one masked frame (a zero mask: the payload goes as it is).
    async fn send(&mut self, b0: u8, payload: &[u8]) {
        let mut out = vec![b0];
        match payload.len() {
            n @ 0..=125 => out.push(0x80 | n as u8),
            n @ 126..=65535 => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&[0, 0, 0, 0]);
        out.extend_from_slice(payload);
        self.s.write_all(&out).await.expect("send");
    }

    /// Sends a command line, compressed if `compressed`, and reads the
    /// answer.
    async fn command(&mut self, line: &str, compressed: bool) -> Value {
        if compressed {
            self.send(0xC1, &deflate(line.as_bytes())).await;
        } else {
            self.send(0x81, line.as_bytes()).await;
        }
        json(&self.data().await.text())
    }

    /// The close code the server closes with, reading past anything else.
    async fn close_code(&mut self) -> u16 {
        loop {
            let f = self.frame().await;
            if f.b0() & 0x0f == 0x8 {
                let p = f.payload();
                return u16::from_be_bytes([p[0], p[1]]);
            }
        }
    }
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).expect("json")
}

/// A message as a client compresses it: raw deflate, sync-flushed, the
/// flush's empty block removed.
fn deflate(data: &[u8]) -> Vec<u8> {
    let mut c = Compress::new(Compression::default(), false);
    let mut out = Vec::with_capacity(data.len() + 64);
    c.compress_vec(data, &mut out, FlushCompress::Sync)
        .expect("compress");
    assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
    out.truncate(out.len() - 4);
    out
}

fn inflate(data: &[u8]) -> Vec<u8> {
    let mut d = Decompress::new(false);
    let mut input = data.to_vec();
    input.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let mut out = Vec::with_capacity(1 << 20);
    d.decompress_vec(&input, &mut out, FlushDecompress::Sync)
        .expect("inflate");
    out
}

/// A JSON-ish status text of about 2 KiB, as a dashboard would write.
fn status_text() -> String {
    (0..40)
        .map(|i| format!("{{\"host\":\"node-{i}\",\"up\":true,\"load\":0.{i}}}"))
        .collect::<Vec<_>>()
        .join(",")
}

const NEGOTIATED: &str =
    "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

#[tokio::test]
async fn a_broadcast_is_compressed_once_and_the_same_bytes_reach_every_page() {
    let d = Daemon::start::<&str>(&[]);
    let mut a = Raw::open(&d, Some(CHROMIUM_OFFER)).await;
    let mut b = Raw::open(&d, Some("permessage-deflate")).await;
    let mut plain = Raw::open(&d, None).await;
    assert_eq!(a.extensions.as_deref(), Some(NEGOTIATED));
    assert_eq!(b.extensions.as_deref(), Some(NEGOTIATED));
    assert_eq!(plain.extensions, None);
    for p in [&mut a, &mut b, &mut plain] {
        assert_eq!(
            p.command("ws register status", false).await["type"],
            "reply"
        );
    }
    let text = status_text();
    d.cli(&["ws", "write", "status", &text]).assert_exit_code(0);
    let (fa, fb, fp) = (a.data().await, b.data().await, plain.data().await);
    assert_eq!(fa.b0(), 0xC1, "a compressed text frame (FIN, RSV1)");
    assert_eq!(fa.bytes, fb.bytes, "the same compressed bytes to both");
    assert_eq!(fp.b0(), 0x81, "plain to the page without the extension");
    assert_eq!(fa.text(), fp.text());
    assert_eq!(json(&fa.text())["text"], text.as_str());
    assert!(
        fa.bytes.len() * 10 <= fp.bytes.len() * 4,
        "{} compressed bytes for {} plain",
        fa.bytes.len(),
        fp.bytes.len()
    );
    // Short frames are not worth compressing, and go plain to everyone.
    d.cli(&["ws", "write", "status", "ok"]).assert_exit_code(0);
    let short = a.data().await;
    assert_eq!(short.b0(), 0x81);
    assert_eq!(json(&short.text())["text"], "ok");
}

#[tokio::test]
async fn compressed_messages_from_a_page_are_inflated() {
    let d = Daemon::start::<&str>(&[]);
    let mut p = Raw::open(&d, Some(CHROMIUM_OFFER)).await;
    let reply = p.command("ws register status", true).await;
    assert_eq!(reply["type"], "reply", "{reply}");
    // A compressed message in three fragments: RSV1 on the first only.
    let body = deflate(b"ws register other");
    let (one, rest) = body.split_at(body.len() / 3);
    let (two, three) = rest.split_at(rest.len() / 2);
    p.send(0x41, one).await;
    p.send(0x00, two).await;
    p.send(0x80, three).await;
    assert_eq!(json(&p.data().await.text())["type"], "reply");
    let listing = crate::page::listing(&d).join("\n");
    assert!(
        listing.contains("status") && listing.contains("other"),
        "{listing}"
    );
    // And a plain message still works on the same connection.
    assert_eq!(p.command("ws register third", false).await["type"], "reply");
}

#[tokio::test]
async fn a_decompression_bomb_closes_like_an_oversized_message() {
    let d = Daemon::start::<&str>(&[]);
    let mut p = Raw::open(&d, Some("permessage-deflate")).await;
    // 1 MiB of spaces: about a kilobyte compressed, 16 times the limit
    // inflated.
    let bomb = deflate(&vec![b' '; 1 << 20]);
    assert!(bomb.len() < 4096);
    p.send(0xC1, &bomb).await;
    assert_eq!(p.close_code().await, 1009);
}

#[tokio::test]
async fn rsv1_where_the_extension_does_not_allow_it_is_a_protocol_error() {
    let d = Daemon::start::<&str>(&[]);
    // Without the extension.
    let mut plain = Raw::open(&d, None).await;
    plain.send(0xC1, &deflate(b"ws ls")).await;
    assert_eq!(plain.close_code().await, 1002);
    // With it, on a control frame.
    let mut ping = Raw::open(&d, Some("permessage-deflate")).await;
    ping.send(0xC9, b"").await;
    assert_eq!(ping.close_code().await, 1002);
    // With it, on a continuation.
    let mut cont = Raw::open(&d, Some("permessage-deflate")).await;
    cont.send(0x01, b"ws ").await;
    cont.send(0xC0, b"ls").await;
    assert_eq!(cont.close_code().await, 1002);
    // Data that does not inflate.
    let mut garbage = Raw::open(&d, Some("permessage-deflate")).await;
    garbage.send(0xC1, &[0xff, 0xff, 0xff]).await;
    assert_eq!(garbage.close_code().await, 1002);
}

#[tokio::test]
async fn odd_offers_are_honoured_or_declined() {
    let d = Daemon::start::<&str>(&[]);
    let window = format!("{NEGOTIATED}; server_max_window_bits=10");
    let cases: &[(&str, Option<&str>)] = &[
        // A window this side can keep to is echoed.
        (
            "permessage-deflate; server_max_window_bits=10",
            Some(&window),
        ),
        (
            "permessage-deflate; server_max_window_bits=\"10\"",
            Some(&window),
        ),
        // 8 bits cannot be honoured: declined, or the next offer taken.
        ("permessage-deflate; server_max_window_bits=8", None),
        (
            "permessage-deflate; server_max_window_bits=8, permessage-deflate",
            Some(NEGOTIATED),
        ),
        // Malformed or duplicate parameters decline the offer.
        ("permessage-deflate; server_max_window_bits=16", None),
        ("permessage-deflate; server_max_window_bits", None),
        ("permessage-deflate; client_max_window_bits=7", None),
        ("permessage-deflate; client_no_context_takeover=yes", None),
        (
            "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
            None,
        ),
        ("permessage-deflate; x-unknown", None),
        ("x-webkit-deflate-frame", None),
        // Any client window suits: this side inflates with the largest.
        (
            "permessage-deflate; client_max_window_bits=9",
            Some(NEGOTIATED),
        ),
    ];
    for (offer, want) in cases {
        let p = Raw::open(&d, Some(offer)).await;
        assert_eq!(p.extensions.as_deref(), *want, "offer {offer:?}");
    }
    // The page with a 10-bit window gets a twin made for it, which
    // inflates to the same message as the 15-bit one.
    let mut small = Raw::open(&d, Some("permessage-deflate; server_max_window_bits=10")).await;
    let mut big = Raw::open(&d, Some("permessage-deflate")).await;
    for p in [&mut small, &mut big] {
        assert_eq!(
            p.command("ws register status", false).await["type"],
            "reply"
        );
    }
    let text = status_text();
    d.cli(&["ws", "write", "status", &text]).assert_exit_code(0);
    let (fs, fb) = (small.data().await, big.data().await);
    assert_eq!((fs.b0(), fb.b0()), (0xC1, 0xC1));
    assert_eq!(json(&fs.text())["text"], text.as_str());
    assert_eq!(fs.text(), fb.text());
}

#[tokio::test]
async fn compression_can_be_turned_off() {
    let d = Daemon::start(&["--compression=false"]);
    let mut p = Raw::open(&d, Some(CHROMIUM_OFFER)).await;
    assert_eq!(p.extensions, None);
    assert_eq!(
        p.command("ws register status", false).await["type"],
        "reply"
    );
    d.cli(&["ws", "write", "status", &status_text()])
        .assert_exit_code(0);
    assert_eq!(p.data().await.b0(), 0x81);
    // And RSV1 is then a protocol error, as without the extension.
    p.send(0xC1, &deflate(b"ws ls")).await;
    assert_eq!(p.close_code().await, 1002);
}
