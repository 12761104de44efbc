//! An echo server on pagewire's own WebSocket transport, for conformance
//! suites such as Autobahn|Testsuite (see `scripts/autobahn.sh`).
//!
//! ```text
//! cargo run --release --example autobahn-echo -- 127.0.0.1:9001
//! ```
//!
//! After the opening handshake (checked by `base::codec::handshake`, the module the
//! daemon uses) each connection is driven by `doors::page::driver::drive`, the task
//! that serves pages, with its frame parser, message assembler, outbox and
//! vectored writer. Only what a message means differs: `EchoHandler` sends
//! every text and binary message back. permessage-deflate is negotiated
//! as the daemon does (`base::codec::deflate`), so the suite's 12.* and 13.*
//! cases run the daemon's compression and inflation. The limits are raised for the suite,
//! which sends messages of up to 16 MiB; the daemon's stay at 64 KiB (and
//! its budget for incomplete frames at 32 MiB, its time to finish one at
//! 10 s).

use std::borrow::Cow;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use pagewire::base::codec::Limits;
use pagewire::base::codec::{deflate, handshake};
use pagewire::doors::page::budget::PartialBudget;
use pagewire::doors::page::driver::{self, Action, ConnLimits, EchoHandler, MessageHandler};
use pagewire::doors::page::socket::SharedTcp;
use pagewire::engine::hub::{Hub, HubLimits, OutboxLimits};
use pagewire::engine::monitor::Monitor;

/// Largest frame and message accepted: four times the suite's largest.
const MAX_MESSAGE: usize = 64 << 20;
/// Bytes of incomplete frames held at once, all connections together.
const PARTIAL_BUDGET: usize = 1 << 30;
/// How long one message may take to arrive: the suite sends some 16 MiB
/// messages in small pieces.
const PARTIAL_TIMEOUT: Duration = Duration::from_secs(120);
/// Largest request head read before the upgrade.
const MAX_HEAD: usize = 16 * 1024;
/// How long a client may take to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9001".to_owned());
    let listener = TcpListener::bind(&addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let hub = Hub::new(
        HubLimits {
            // An echo of the largest message must fit in the outgoing queue.
            outbox: OutboxLimits {
                max_bytes: 4 * MAX_MESSAGE,
                max_frames: 1 << 16,
            },
            ..HubLimits::default()
        },
        Monitor::new(),
    );
    let limits = ConnLimits {
        frames: Limits {
            max_frame: MAX_MESSAGE,
            max_message: MAX_MESSAGE,
        },
        // The suite runs a few cases at once, each with a message of up to
        // 16 MiB arriving in many reads (and, fragmented, held twice).
        partial_budget: PartialBudget::leak(PARTIAL_BUDGET),
        partial_timeout: PARTIAL_TIMEOUT,
        ..ConnLimits::default()
    }
    .leak();
    println!("listening on {}", listener.local_addr()?);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            // Out of descriptors and the like: wait, do not exit.
            Err(e) => {
                eprintln!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let hub = hub.clone();
        tokio::spawn(async move {
            if let Err(e) = serve(stream, peer, hub, limits).await {
                eprintln!("{peer}: {e:#}");
            }
        });
    }
}

/// Answers one client's opening handshake, then echoes until it closes.
async fn serve(
    mut stream: TcpStream,
    peer: SocketAddr,
    hub: Hub,
    limits: &'static ConnLimits,
) -> anyhow::Result<()> {
    stream.set_nodelay(true)?;
    let (head, pre) = tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut stream))
        .await
        .context("request head timed out")??;
    let request = Request::parse(&head).context("malformed request head")?;
    if let Err(e) = handshake::validate_request(
        request.method,
        request.header("sec-websocket-version").as_deref(),
        request.header("sec-websocket-key").as_deref(),
        request.header("upgrade").as_deref(),
        request.header("connection").as_deref(),
    ) {
        let status = e.status();
        let extra = if status == 426 {
            format!(
                "Sec-WebSocket-Version: {}\r\n",
                handshake::SUPPORTED_VERSION
            )
        } else {
            String::new()
        };
        let body = format!("{e}\n");
        let response = format!(
            "HTTP/1.1 {status} {}\r\n{extra}Content-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            if status == 426 { "Upgrade Required" } else { "Bad Request" },
            body.len(),
        );
        stream.write_all(response.as_bytes()).await?;
        return Ok(());
    }
    let accept = handshake::accept_key(&request.header("sec-websocket-key").unwrap_or_default());
    let agreed = request
        .header("sec-websocket-extensions")
        .and_then(|offers| deflate::negotiate(&offers));
    let extensions = agreed
        .as_ref()
        .map(|a| format!("Sec-WebSocket-Extensions: {}\r\n", a.response))
        .unwrap_or_default();
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n{extensions}Server: pagewire-autobahn-echo\r\n\r\n"
    );
    stream.write_all(response.as_bytes()).await?;
    let conn = hub.open(peer, request.target)?;
    hub.set_deflate(&conn, agreed.map_or(0, |a| a.server_window_bits));
    // As for a page: replies may go straight to the socket.
    let stream = SharedTcp::attach(stream, &conn);
    let window_bits = conn.deflate_bits();
    driver::drive(stream, pre, conn, hub, Echo { window_bits }, limits).await;
    Ok(())
}

/// [`EchoHandler`], compressing every message once permessage-deflate was
/// negotiated (`window_bits` is then not 0). The daemon leaves short or
/// incompressible messages plain, as the extension allows; the suite's
/// runner (kosoku, a Python 3 port) fails its 12.* cases when a text echo
/// comes back plain in a compressed session (it hashes the text without
/// encoding it), so the harness compresses them all, with the daemon's
/// compressor.
struct Echo {
    window_bits: u8,
}

impl MessageHandler for Echo {
    fn on_text(&mut self, text: Cow<'_, str>) -> Action {
        match self.compressed(true, text.as_bytes()) {
            Some(frame) => Action::Send(frame),
            None => EchoHandler.on_text(text),
        }
    }

    fn on_binary(&mut self, data: Cow<'_, [u8]>) -> Action {
        match self.compressed(false, &data) {
            Some(frame) => Action::Send(frame),
            None => EchoHandler.on_binary(data),
        }
    }
}

impl Echo {
    fn compressed(&self, text: bool, payload: &[u8]) -> Option<Bytes> {
        (self.window_bits != 0)
            .then(|| deflate::encode_compressed(text, payload, self.window_bits))
            .flatten()
    }
}

/// Reads up to the blank line that ends the request head. Returns the head
/// and whatever the client sent after it (the first frames, perhaps).
async fn read_head(stream: &mut TcpStream) -> anyhow::Result<(String, Bytes)> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        anyhow::ensure!(n > 0, "connection closed during the handshake");
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = Bytes::copy_from_slice(buf.get(end + 4..).unwrap_or_default());
            buf.truncate(end);
            return Ok((String::from_utf8(buf)?, rest));
        }
        anyhow::ensure!(buf.len() <= MAX_HEAD, "request head over {MAX_HEAD} bytes");
    }
}

/// The parts of an HTTP/1.1 request head the handshake needs.
struct Request<'a> {
    method: &'a str,
    target: &'a str,
    headers: Vec<(&'a str, &'a str)>,
}

impl<'a> Request<'a> {
    fn parse(head: &'a str) -> Option<Request<'a>> {
        let mut lines = head.split("\r\n");
        let mut start = lines.next()?.split(' ');
        let (method, target, version) = (start.next()?, start.next()?, start.next()?);
        if !version.starts_with("HTTP/1.") || start.next().is_some() {
            return None;
        }
        let mut headers = Vec::new();
        for line in lines {
            let (name, value) = line.split_once(':')?;
            headers.push((name.trim(), value.trim()));
        }
        Some(Request {
            method,
            target,
            headers,
        })
    }

    /// A header's value, the values of a repeated header joined with commas
    /// as HTTP allows for list headers; `None` when absent.
    fn header(&self, name: &str) -> Option<String> {
        let values: Vec<&str> = self
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
            .collect();
        (!values.is_empty()).then(|| values.join(", "))
    }
}
