//! Memory held for frames that have not fully arrived is bounded for the
//! whole daemon (`[limits] max_partial_bytes`), and a frame once started
//! must be finished in time (`[limits] partial_timeout_secs`).
//!
//! The clients here speak raw RFC 6455 over TCP, because a WebSocket
//! library only ever sends whole frames.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::page::Page;
use crate::support::{Daemon, TIMEOUT};

/// A daemon started with `config` as its configuration file.
fn with_config(config: &str) -> (Daemon, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("pagewire.toml");
    std::fs::write(&path, config).expect("write config");
    let d = Daemon::start(&["--config", path.to_str().expect("utf-8 path")]);
    (d, dir)
}

/// A masked client frame: first byte `b0`, a header declaring `declared`
/// payload bytes, then `payload` (which may be shorter: a frame cut off).
/// The masking key is zero, so the payload goes out as it is.
fn frame(b0: u8, declared: usize, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![b0];
    match declared {
        0..=125 => out.push(0x80 | declared as u8),
        126..=65535 => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(declared as u16).to_be_bytes());
        }
        _ => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(declared as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(payload);
    out
}

/// A command line padded with blanks to `len` bytes.
fn padded(line: &str, len: usize) -> Vec<u8> {
    let mut bytes = line.as_bytes().to_vec();
    bytes.resize(len, b' ');
    bytes
}

/// A WebSocket client that writes raw bytes and reads server frames.
struct RawClient {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl RawClient {
    /// Connects, upgrades, and reads the `hello` frame.
    async fn open(d: &Daemon) -> RawClient {
        let mut stream = TcpStream::connect(d.addr).await.expect("connect");
        let request = format!(
            "GET /ws HTTP/1.1\r\nHost: {0}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             Origin: http://{0}\r\n\r\n",
            d.addr
        );
        stream.write_all(request.as_bytes()).await.expect("upgrade");
        let mut client = RawClient {
            stream,
            buf: Vec::new(),
        };
        let head = loop {
            if let Some(end) = client.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&client.buf[..end]).into_owned();
                client.buf.drain(..end + 4);
                break head;
            }
            assert!(client.fill().await, "closed during the upgrade");
        };
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        let (opcode, hello) = client.next_frame().await.expect("hello");
        assert_eq!(opcode, 0x1);
        assert!(String::from_utf8_lossy(&hello).contains("\"hello\""));
        client
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("send");
    }

    /// Reads more; false at the end of the stream.
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout(TIMEOUT, self.stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => false,
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(_) => panic!("nothing from the daemon within {TIMEOUT:?}"),
        }
    }

    /// The next server frame (opcode and payload), `None` at the end.
    async fn next_frame(&mut self) -> Option<(u8, Vec<u8>)> {
        loop {
            if self.buf.len() >= 2 {
                let (len, start) = match self.buf[1] & 0x7F {
                    126 if self.buf.len() >= 4 => (
                        usize::from(u16::from_be_bytes([self.buf[2], self.buf[3]])),
                        4,
                    ),
                    127 if self.buf.len() >= 10 => {
                        let mut n = [0u8; 8];
                        n.copy_from_slice(&self.buf[2..10]);
                        (usize::try_from(u64::from_be_bytes(n)).expect("length"), 10)
                    }
                    126 | 127 => (usize::MAX, 0),
                    n => (usize::from(n), 2),
                };
                if start > 0 && self.buf.len() >= start + len {
                    let opcode = self.buf[0] & 0x0F;
                    let payload = self.buf[start..start + len].to_vec();
                    self.buf.drain(..start + len);
                    return Some((opcode, payload));
                }
            }
            if !self.fill().await {
                return None;
            }
        }
    }

    /// The next text frame that is not a Monitor line or a ping.
    async fn next_text(&mut self) -> String {
        loop {
            match self.next_frame().await {
                Some((0x1, text)) => return String::from_utf8_lossy(&text).into_owned(),
                Some((0x8, close)) => panic!("closed: {}", describe_close(&close)),
                Some(_) => continue,
                None => panic!("the connection ended"),
            }
        }
    }

    /// Returns once the daemon has taken (and charged) everything this
    /// client sent before. A pong can go out while the read that held its
    /// ping is still being handled; a second ping, sent after the first
    /// pong, is read only after that.
    async fn sync(&mut self) {
        for _ in 0..2 {
            self.send(&frame(0x89, 4, b"sync")).await;
            assert_eq!(self.next_frame().await, Some((0xA, b"sync".to_vec())));
        }
    }

    /// Reads up to the close frame and returns its code and reason.
    async fn closed(&mut self) -> (u16, String) {
        loop {
            match self.next_frame().await {
                Some((0x8, close)) => {
                    let code = u16::from_be_bytes([close[0], close[1]]);
                    return (code, String::from_utf8_lossy(&close[2..]).into_owned());
                }
                Some(_) => continue,
                None => panic!("the connection ended without a close frame"),
            }
        }
    }
}

fn describe_close(close: &[u8]) -> String {
    match close {
        [hi, lo, reason @ ..] => format!(
            "{} {}",
            u16::from_be_bytes([*hi, *lo]),
            String::from_utf8_lossy(reason)
        ),
        _ => "no code".into(),
    }
}

/// The close that refuses a client over the budget.
const OVER_BUDGET: (u16, &str) = (1013, "too much unfinished input; try again later");

/// The close for a frame not finished in time.
const TOO_SLOW: (u16, &str) = (1008, "message not completed in time");

#[tokio::test]
async fn a_client_over_the_partial_frame_budget_is_closed_and_the_others_keep_working() {
    let (d, _dir) = with_config("[limits]\nmax_partial_bytes = 100000\n");
    let mut good = Page::with_names(&d, &["status"]).await;
    let line = padded("ws register big", 65_000);

    // a holds 60,000 bytes: the first fragment of a 65,000-byte command
    // line, taken by the daemon before b sends anything.
    let mut a = RawClient::open(&d).await;
    a.send(&frame(0x01, 60_000, &line[..60_000])).await;
    a.sync().await;

    // b stops 60,000 bytes into a frame of the same line: both do not fit.
    let mut b = RawClient::open(&d).await;
    b.send(&frame(0x81, line.len(), &line[..60_000])).await;
    let (code, reason) = b.closed().await;
    assert_eq!((code, reason.as_str()), OVER_BUDGET);
    d.wait_for_stdout(|l| l.contains(&format!("{} (close 1013)", OVER_BUDGET.1)));

    // a finishes its message and is answered.
    a.send(&frame(0x80, 5_000, &line[60_000..])).await;
    let reply = a.next_text().await;
    assert!(reply.contains("\"type\":\"reply\""), "{reply}");

    // Pages that send whole commands were never affected.
    d.cli(&["ws", "write", "status", "still here"])
        .assert_exit_code(0);
    assert_eq!(good.recv().await["text"], "still here");

    // What the refused and the finished messages held was given back: a
    // new client may hold as much again, and finish.
    let mut c = RawClient::open(&d).await;
    c.send(&frame(0x01, 60_000, &line[..60_000])).await;
    c.sync().await;
    c.send(&frame(0x80, 5_000, &line[60_000..])).await;
    let reply = c.next_text().await;
    assert!(reply.contains("\"type\":\"reply\""), "{reply}");
}

#[tokio::test]
async fn a_client_stalled_mid_frame_is_closed_after_the_timeout() {
    let (d, _dir) = with_config("[limits]\npartial_timeout_secs = 1\n");
    let mut good = Page::with_names(&d, &["status"]).await;
    let started = Instant::now();

    // Half of a frame, then nothing.
    let mut half = RawClient::open(&d).await;
    let line = padded("ws register slow", 1000);
    half.send(&frame(0x81, line.len(), &line[..500])).await;
    // A whole first fragment of a message whose end never comes.
    let mut fragment = RawClient::open(&d).await;
    fragment.send(&frame(0x01, 6, b"ws reg")).await;

    for client in [&mut half, &mut fragment] {
        let (code, reason) = client.closed().await;
        assert_eq!((code, reason.as_str()), TOO_SLOW);
    }
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "closed before the timeout: {:?}",
        started.elapsed()
    );
    d.wait_for_stdout(|l| l.contains("message not completed in time (close 1008)"));

    // A page that sends whole frames is not affected.
    d.cli(&["ws", "write", "status", "still here"])
        .assert_exit_code(0);
    assert_eq!(good.recv().await["text"], "still here");
}
