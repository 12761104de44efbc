//! pw-writeloop: the reference peer "minimal pre-encoded write() loop".
//!
//! The smallest server with the interface the benchmark drives: `GET /ws`
//! upgrades to a WebSocket that gets a `hello` frame and may send
//! `ws register NAME`; `POST /api/command` (keep-alive) runs
//! `ws write TARGET "text"`, which encodes the JSON `write` frame once and
//! `write()`s those same bytes to every target socket. One thread, one epoll
//! loop (mio, edge-triggered), one shared read buffer; an idle connection
//! owns no buffer at all. It marks what this machine can do, so it carries
//! no framework: no tasks, no channels, no per-connection copies.
//!
//! It is correct enough for the load client and refuses what it does not
//! handle (fragmented messages, chunked bodies) instead of guessing.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;

use anyhow::Context as _;
use clap::Parser;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use pagewire_bench::command::{json_string, tokenize};
use pagewire_bench::frame::{self, OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT};

/// Token of the listening socket; connections use their slot number.
const LISTENER: Token = Token(usize::MAX);
/// Largest request head (request line and headers).
const MAX_HEAD: usize = 8 * 1024;
/// Largest `POST /api/command` body.
const MAX_BODY: usize = 64 * 1024;
/// Largest frame payload a page may send.
const MAX_FRAME: usize = 64 * 1024;
/// Most bytes queued for one socket that is not reading; past it the
/// connection is dropped as a slow consumer.
const MAX_QUEUED: usize = 1024 * 1024;
/// Most names one page may register.
const MAX_NAMES: usize = 16;
/// Size of the one read buffer all connections share.
const SCRATCH: usize = 64 * 1024;

#[derive(Parser, Debug)]
#[command(about = "Minimal pre-encoded write() loop with pagewire's benchmark interface")]
struct Args {
    /// Address to listen on (port 0 picks one; the ready line prints it).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Accepted for interface compatibility with `pagewire serve`; unused.
    #[arg(long)]
    control: Option<String>,
}

/// What a connection speaks now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Http,
    WebSocket,
}

struct Conn {
    sock: TcpStream,
    mode: Mode,
    /// The page's index (0 while HTTP).
    index: u64,
    /// Received bytes not yet forming a whole request or frame; empty (and
    /// unallocated) while idle.
    input: Vec<u8>,
    /// Bytes the kernel has not accepted yet; empty (and unallocated) while
    /// the socket keeps up.
    output: Vec<u8>,
    /// Names this page registered.
    names: Vec<Box<str>>,
    /// Close once `output` is flushed.
    closing: bool,
}

struct Server {
    poll: Poll,
    listener: TcpListener,
    /// Connections by slot (= token); `None` for a free slot.
    conns: Vec<Option<Conn>>,
    /// Slots free for reuse.
    free: Vec<usize>,
    /// Slots freed during the current batch of events, reusable after it (so
    /// a stale event in the batch cannot hit a new connection).
    freed: Vec<usize>,
    /// Registered name -> slots of the pages that registered it.
    names: HashMap<Box<str>, Vec<usize>>,
    next_index: u64,
    scratch: Vec<u8>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let _ = pagewire_bench::sys::raise_nofile_limit();
    let listener =
        TcpListener::bind(args.listen).with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr()?;
    let mut server = Server::new(listener)?;
    println!(
        "pagewire listening on http://{addr} (control socket {})",
        args.control.as_deref().unwrap_or("none")
    );
    std::io::stdout().flush()?;
    server.run()
}

impl Server {
    fn new(mut listener: TcpListener) -> anyhow::Result<Self> {
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        Ok(Server {
            poll,
            listener,
            conns: Vec::new(),
            free: Vec::new(),
            freed: Vec::new(),
            names: HashMap::new(),
            next_index: 1,
            scratch: vec![0; SCRATCH],
        })
    }

    fn run(&mut self) -> anyhow::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            if let Err(e) = self.poll.poll(&mut events, None) {
                if e.kind() == ErrorKind::Interrupted {
                    continue;
                }
                return Err(e.into());
            }
            for event in events.iter() {
                if event.token() == LISTENER {
                    self.accept_all();
                    continue;
                }
                let slot = event.token().0;
                if event.is_writable() {
                    self.flush(slot);
                }
                if event.is_readable() || event.is_read_closed() || event.is_error() {
                    self.read_all(slot);
                }
            }
            self.free.append(&mut self.freed);
        }
    }

    fn accept_all(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((mut sock, _peer)) => {
                    let _ = sock.set_nodelay(true);
                    let slot = self.free.pop().unwrap_or(self.conns.len());
                    // Both interests once, edge-triggered: no re-registration
                    // when a socket's queue fills or drains.
                    let interest = Interest::READABLE | Interest::WRITABLE;
                    if self
                        .poll
                        .registry()
                        .register(&mut sock, Token(slot), interest)
                        .is_err()
                    {
                        self.free.push(slot);
                        continue;
                    }
                    let conn = Conn {
                        sock,
                        mode: Mode::Http,
                        index: 0,
                        input: Vec::new(),
                        output: Vec::new(),
                        names: Vec::new(),
                        closing: false,
                    };
                    if slot == self.conns.len() {
                        self.conns.push(Some(conn));
                    } else {
                        self.conns[slot] = Some(conn);
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                // Out of descriptors or a connection reset before accept:
                // try again on the next readiness event.
                Err(_) => return,
            }
        }
    }

    /// Read until the socket would block, handling whole requests and
    /// frames as they complete.
    fn read_all(&mut self, slot: usize) {
        loop {
            let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
                return;
            };
            match conn.sock.read(&mut self.scratch) {
                Ok(0) => return self.close(slot),
                Ok(n) => {
                    conn.input.extend_from_slice(&self.scratch[..n]);
                    self.handle_input(slot);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return self.close(slot),
            }
        }
    }

    fn handle_input(&mut self, slot: usize) {
        let Some(conn) = self.conn(slot) else { return };
        let mut input = std::mem::take(&mut conn.input);
        let mut used = 0;
        loop {
            let Some(conn) = self.conn(slot) else { return };
            if conn.closing {
                return;
            }
            let step = match conn.mode {
                Mode::Http => self.http_step(slot, &input[used..]),
                Mode::WebSocket => self.ws_step(slot, &mut input[used..]),
            };
            match step {
                Some(0) | None => break,
                Some(n) => used += n,
            }
        }
        input.drain(..used);
        if let Some(conn) = self.conn(slot) {
            // Keep a partial request or frame; an idle connection keeps none.
            conn.input = if input.is_empty() { Vec::new() } else { input };
        }
    }

    fn conn(&mut self, slot: usize) -> Option<&mut Conn> {
        self.conns.get_mut(slot).and_then(Option::as_mut)
    }

    /// Handle one HTTP request at the start of `buf`; returns the bytes it
    /// used, `Some(0)` when more are needed, `None` when the connection is
    /// gone or done.
    fn http_step(&mut self, slot: usize, buf: &[u8]) -> Option<usize> {
        let Some(head_len) = find(buf, b"\r\n\r\n").map(|i| i + 4) else {
            if buf.len() > MAX_HEAD {
                self.reply_and_close(slot, "431 Request Header Fields Too Large");
                return None;
            }
            return Some(0);
        };
        let Some(req) = Request::parse(&buf[..head_len]) else {
            self.reply_and_close(slot, "400 Bad Request");
            return None;
        };
        if req.chunked {
            self.reply_and_close(slot, "411 Length Required");
            return None;
        }
        if req.content_length > MAX_BODY {
            self.reply_and_close(slot, "413 Content Too Large");
            return None;
        }
        let total = head_len + req.content_length;
        if buf.len() < total {
            return Some(0);
        }
        let body = &buf[head_len..total];
        match (req.method, req.path) {
            ("GET", "/ws") => {
                let Some(key) = req.ws_key.filter(|_| req.upgrade) else {
                    self.reply_and_close(slot, "400 Bad Request");
                    return None;
                };
                self.upgrade(slot, key);
            }
            ("POST", "/api/command") => {
                let line = String::from_utf8_lossy(body);
                let (ok, output) = self.operator_command(line.trim());
                let mut json = String::with_capacity(output.len() + 32);
                json.push_str(if ok {
                    "{\"ok\":true,\"output\":"
                } else {
                    "{\"ok\":false,\"output\":"
                });
                json_string(&output, &mut json);
                json.push('}');
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{}\r\n{json}",
                    json.len(),
                    if req.close { "connection: close\r\n" } else { "" }
                );
                self.send(slot, response.as_bytes());
                if req.close {
                    self.finish(slot);
                    return None;
                }
            }
            _ => {
                let response = "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n";
                self.send(slot, response.as_bytes());
            }
        }
        Some(total)
    }

    fn upgrade(&mut self, slot: usize, key: &str) {
        let index = self.next_index;
        self.next_index += 1;
        let mut out = format!(
            "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: {}\r\n\r\n",
            frame::accept_key(key)
        )
        .into_bytes();
        let hello = format!("{{\"type\":\"hello\",\"index\":{index},\"version\":1}}");
        frame::encode(OP_TEXT, hello.as_bytes(), None, &mut out);
        if let Some(conn) = self.conn(slot) {
            conn.mode = Mode::WebSocket;
            conn.index = index;
        }
        self.send(slot, &out);
    }

    /// Handle one frame at the start of `buf` (unmasking it in place);
    /// returns the bytes used like `http_step`.
    fn ws_step(&mut self, slot: usize, buf: &mut [u8]) -> Option<usize> {
        let header = match frame::parse_header(buf, MAX_FRAME) {
            Ok(Some(h)) => h,
            Ok(None) => return Some(0),
            Err(frame::FrameError::TooBig(_)) => {
                self.close_with(slot, 1009, "message too big");
                return None;
            }
            Err(_) => {
                self.close_with(slot, 1002, "protocol error");
                return None;
            }
        };
        if buf.len() < header.frame_len() {
            return Some(0);
        }
        let Some(mask) = header.mask else {
            self.close_with(slot, 1002, "client frames must be masked");
            return None;
        };
        let payload = &mut buf[header.header_len..header.frame_len()];
        frame::apply_mask(payload, mask);
        match header.opcode {
            OP_TEXT if header.fin => {
                let Ok(line) = std::str::from_utf8(payload) else {
                    self.close_with(slot, 1007, "invalid UTF-8");
                    return None;
                };
                let reply = self.page_command(slot, line.trim());
                let mut out = Vec::with_capacity(reply.len() + 4);
                frame::encode(OP_TEXT, reply.as_bytes(), None, &mut out);
                self.send(slot, &out);
            }
            OP_TEXT | OP_CONT => {
                self.close_with(slot, 1003, "fragmented messages are not accepted");
                return None;
            }
            OP_BINARY => {
                self.close_with(slot, 1003, "binary frames are not accepted");
                return None;
            }
            OP_PING => {
                let mut out = Vec::with_capacity(payload.len() + 2);
                frame::encode(OP_PONG, payload, None, &mut out);
                self.send(slot, &out);
            }
            OP_PONG => {}
            OP_CLOSE => {
                let mut out = Vec::with_capacity(payload.len() + 2);
                frame::encode(OP_CLOSE, payload, None, &mut out);
                self.send(slot, &out);
                self.finish(slot);
                return None;
            }
            _ => {
                self.close_with(slot, 1002, "protocol error");
                return None;
            }
        }
        Some(header.frame_len())
    }

    /// A command line from a page: only `ws register NAME`. Returns the
    /// JSON frame text to answer with.
    fn page_command(&mut self, slot: usize, line: &str) -> String {
        let tokens = match tokenize(line) {
            Ok(t) => t,
            Err(e) => return error_frame(&e),
        };
        let words: Vec<&str> = tokens.iter().map(String::as_str).collect();
        let ["ws", "register", name] = words.as_slice() else {
            return error_frame("pages may only use 'ws register NAME'");
        };
        let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
            return error_frame("connection gone");
        };
        if !conn.names.iter().any(|n| &**n == *name) {
            if conn.names.len() >= MAX_NAMES {
                return error_frame("too many names");
            }
            conn.names.push((*name).into());
            self.names.entry((*name).into()).or_default().push(slot);
        }
        let mut out = String::from("{\"type\":\"reply\",\"ok\":true,\"output\":");
        json_string(
            &format!("registered {name} on connection {}", conn.index),
            &mut out,
        );
        out.push('}');
        out
    }

    /// A command line from `POST /api/command`: `ws write TARGET "text"`.
    fn operator_command(&mut self, line: &str) -> (bool, String) {
        let tokens = match tokenize(line) {
            Ok(t) => t,
            Err(e) => return (false, e),
        };
        let words: Vec<&str> = tokens.iter().map(String::as_str).collect();
        let ["ws", "write", target, text] = words.as_slice() else {
            return (false, "expected: ws write TARGET \"text\"".to_string());
        };
        let by_name = target.parse::<u64>().is_err() && *target != "*";
        let targets: Vec<usize> = if *target == "*" {
            self.websocket_slots().collect()
        } else if let Ok(index) = target.parse::<u64>() {
            let found: Vec<usize> = self
                .websocket_slots()
                .filter(|&s| self.conns[s].as_ref().is_some_and(|c| c.index == index))
                .collect();
            if found.is_empty() {
                return (false, format!("no connection with index {index}"));
            }
            found
        } else {
            self.names.get(*target).cloned().unwrap_or_default()
        };
        // Encode once; every target gets the same bytes.
        let mut json = String::with_capacity(text.len() + 48);
        json.push_str("{\"type\":\"write\",");
        if by_name {
            json.push_str("\"name\":");
            json_string(target, &mut json);
            json.push(',');
        }
        json.push_str("\"text\":");
        json_string(text, &mut json);
        json.push('}');
        let mut bytes = Vec::with_capacity(json.len() + 10);
        frame::encode(OP_TEXT, json.as_bytes(), None, &mut bytes);
        let mut sent = 0usize;
        for slot in targets {
            if self.send(slot, &bytes) {
                sent += 1;
            }
        }
        if sent == 0 {
            println!("{text}");
            return (
                true,
                "no WebSocket matched; printed on the console".to_string(),
            );
        }
        (true, format!("sent to {sent} connections"))
    }

    fn websocket_slots(&self) -> impl Iterator<Item = usize> + '_ {
        self.conns
            .iter()
            .enumerate()
            .filter(|(_, c)| c.as_ref().is_some_and(|c| c.mode == Mode::WebSocket))
            .map(|(s, _)| s)
    }

    /// Write `bytes` to the socket now, or queue what it did not take.
    /// Returns false when the connection is (now) gone.
    fn send(&mut self, slot: usize, bytes: &[u8]) -> bool {
        let Some(conn) = self.conn(slot) else {
            return false;
        };
        if conn.closing {
            return false;
        }
        if !conn.output.is_empty() {
            if conn.output.len() + bytes.len() > MAX_QUEUED {
                self.close(slot);
                return false;
            }
            conn.output.extend_from_slice(bytes);
            return true;
        }
        let mut done = 0;
        while done < bytes.len() {
            match conn.sock.write(&bytes[done..]) {
                Ok(n) => done += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.close(slot);
                    return false;
                }
            }
        }
        if done < bytes.len() {
            conn.output.extend_from_slice(&bytes[done..]);
        }
        true
    }

    /// Write queued bytes the socket has room for now.
    fn flush(&mut self, slot: usize) {
        let Some(conn) = self.conn(slot) else { return };
        let mut done = 0;
        while done < conn.output.len() {
            match conn.sock.write(&conn.output[done..]) {
                Ok(n) => done += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return self.close(slot),
            }
        }
        conn.output.drain(..done);
        if conn.output.is_empty() {
            conn.output = Vec::new();
            if conn.closing {
                self.close(slot);
            }
        }
    }

    /// Close once everything queued is written.
    fn finish(&mut self, slot: usize) {
        let Some(conn) = self.conn(slot) else { return };
        conn.closing = true;
        if conn.output.is_empty() {
            self.close(slot);
        }
    }

    fn close_with(&mut self, slot: usize, code: u16, reason: &str) {
        let mut out = Vec::new();
        frame::encode(
            OP_CLOSE,
            &frame::close_payload(code, reason),
            None,
            &mut out,
        );
        self.send(slot, &out);
        self.finish(slot);
    }

    fn reply_and_close(&mut self, slot: usize, status: &str) {
        let response =
            format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        self.send(slot, response.as_bytes());
        self.finish(slot);
    }

    fn close(&mut self, slot: usize) {
        let Some(mut conn) = self.conns.get_mut(slot).and_then(Option::take) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut conn.sock);
        for name in &conn.names {
            if let Some(slots) = self.names.get_mut(name) {
                slots.retain(|&s| s != slot);
                if slots.is_empty() {
                    self.names.remove(name);
                }
            }
        }
        self.freed.push(slot);
    }
}

fn error_frame(message: &str) -> String {
    let mut out = String::from("{\"type\":\"error\",\"message\":");
    json_string(message, &mut out);
    out.push('}');
    out
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The parts of a request head this server looks at.
struct Request<'a> {
    method: &'a str,
    path: &'a str,
    content_length: usize,
    chunked: bool,
    upgrade: bool,
    close: bool,
    ws_key: Option<&'a str>,
}

impl<'a> Request<'a> {
    fn parse(head: &'a [u8]) -> Option<Self> {
        let head = std::str::from_utf8(head).ok()?;
        let mut lines = head.split("\r\n");
        let mut first = lines.next()?.split(' ');
        let method = first.next()?;
        let target = first.next()?;
        let version = first.next()?;
        if !version.starts_with("HTTP/1.") {
            return None;
        }
        let path = target.split('?').next()?;
        let mut req = Request {
            method,
            path,
            content_length: 0,
            chunked: false,
            upgrade: false,
            close: version == "HTTP/1.0",
            ws_key: None,
        };
        for line in lines.take_while(|l| !l.is_empty()) {
            let (name, value) = line.split_once(':')?;
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                req.content_length = value.parse().ok()?;
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                req.chunked = true;
            } else if name.eq_ignore_ascii_case("upgrade") {
                req.upgrade = value.eq_ignore_ascii_case("websocket");
            } else if name.eq_ignore_ascii_case("connection") {
                let lower = value.to_ascii_lowercase();
                if lower.contains("close") {
                    req.close = true;
                } else if lower.contains("keep-alive") {
                    req.close = false;
                }
            } else if name.eq_ignore_ascii_case("sec-websocket-key") {
                req.ws_key = Some(value);
            }
        }
        Some(req)
    }
}
