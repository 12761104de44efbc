//! pw-partial: how much memory a daemon holds for frames that never finish.
//!
//! Opens N WebSocket clients to a pagewire daemon, spread over source
//! addresses 127.0.0.1..127.0.0.K, then sends each the header and the first
//! `--send` bytes of a masked text frame that declares `--frame` bytes, and
//! stops there, as a client that stalls mid-frame would. It reads the
//! daemon's resident memory (VmRSS) and its peak (VmHWM) from
//! /proc/PID/status before connecting, once every client is connected, and
//! `--settle` seconds after the partial frames were sent; then it counts the
//! clients the daemon closed, by close code and reason.
//!
//! ```text
//! pagewire serve --listen 127.0.0.1:8080 &
//! pw-partial --server 127.0.0.1:8080 --pid $! --clients 2000
//! ```
//!
//! Prints a human summary on stderr and one JSON line on stdout.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Parser;
use pagewire_bench::frame::{self, OP_CLOSE, OP_TEXT};
use pagewire_bench::sys;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::{sleep, timeout};

#[derive(Parser, Debug, Clone)]
#[command(about = "Stall N WebSocket clients mid-frame and report the daemon's memory")]
struct Args {
    /// Daemon address (HTTP and WebSocket).
    #[arg(long, default_value = "127.0.0.1:8080")]
    server: SocketAddr,
    /// Daemon process id, to read its memory from /proc.
    #[arg(long)]
    pid: u32,
    /// WebSocket clients to open.
    #[arg(long, default_value_t = 2000)]
    clients: usize,
    /// Payload length the frame header declares.
    #[arg(long, default_value_t = 65536)]
    frame: usize,
    /// Payload bytes actually sent (fewer than --frame: the frame stalls).
    #[arg(long, default_value_t = 65000)]
    send: usize,
    /// Source addresses 127.0.0.1..127.0.0.K to spread clients over.
    #[arg(long, default_value_t = 8)]
    sources: u8,
    /// Connection setups in flight at once.
    #[arg(long, default_value_t = 128)]
    concurrency: usize,
    /// Seconds to wait after connecting and after sending before reading
    /// the daemon's memory.
    #[arg(long, default_value_t = 2.0)]
    settle: f64,
}

/// What one run measured; memory in KiB.
#[derive(Debug, Default, Serialize)]
struct Report {
    clients: usize,
    connected: usize,
    frame_bytes: usize,
    sent_bytes: usize,
    rss_start_kib: u64,
    hwm_start_kib: u64,
    rss_connected_kib: u64,
    rss_stalled_kib: u64,
    hwm_stalled_kib: u64,
    /// RSS growth from connected to stalled, per connected client, bytes.
    held_per_client: f64,
    /// Clients the daemon closed, by "code reason" ("eof" without a close frame).
    closed: BTreeMap<String, usize>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.sources == 0 {
        bail!("--sources must be at least 1");
    }
    if args.send >= args.frame {
        bail!("--send must be smaller than --frame, or the frame completes");
    }
    sys::raise_nofile_limit().context("raising the open-file limit")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    let report = local.block_on(&rt, run(args))?;
    println!("{}", serde_json::to_string(&report)?);
    eprintln!(
        "{} of {} clients stalled {} bytes into a {}-byte frame: daemon RSS {} KiB at start \
         (peak {}), {} KiB connected, {} KiB stalled (peak {}): {:.0} bytes per client; closed: {:?}",
        report.connected,
        report.clients,
        report.sent_bytes,
        report.frame_bytes,
        report.rss_start_kib,
        report.hwm_start_kib,
        report.rss_connected_kib,
        report.rss_stalled_kib,
        report.hwm_stalled_kib,
        report.held_per_client,
        report.closed,
    );
    // Exit without closing thousands of sockets one by one.
    std::process::exit(0);
}

fn memory(pid: u32) -> anyhow::Result<(u64, u64)> {
    let rss = sys::rss_kib(pid).with_context(|| format!("reading /proc/{pid}/status"))?;
    Ok((rss, sys::hwm_kib(pid).unwrap_or(0)))
}

async fn run(args: Args) -> anyhow::Result<Report> {
    let (rss_start, hwm_start) = memory(args.pid)?;
    let gate = Rc::new(Semaphore::new(args.concurrency.max(1)));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(args.clients);
    for i in 0..args.clients {
        let gate = Rc::clone(&gate);
        let args = args.clone();
        tasks.push(tokio::task::spawn_local(async move {
            let _permit = gate.acquire().await.ok()?;
            match timeout(Duration::from_secs(30), open(i, &args)).await {
                Ok(Ok(client)) => Some(client),
                Ok(Err(e)) => {
                    eprintln!("client {i}: {e:#}");
                    None
                }
                Err(_) => {
                    eprintln!("client {i}: timed out connecting");
                    None
                }
            }
        }));
    }
    let mut clients = Vec::with_capacity(args.clients);
    for task in tasks {
        if let Ok(Some(client)) = task.await {
            clients.push(client);
        }
    }
    eprintln!(
        "{} clients connected in {:.1}s",
        clients.len(),
        started.elapsed().as_secs_f64()
    );
    sleep(Duration::from_secs_f64(args.settle)).await;
    let (rss_connected, _) = memory(args.pid)?;

    // The header of a frame of --frame bytes and the first --send of them.
    let mask = [0x5a, 0xa5, 0x3c, 0xc3];
    let mut stall = header_for(args.frame, mask);
    let start = stall.len();
    stall.resize(start + args.send, b'x');
    frame::apply_mask(&mut stall[start..], mask);
    for client in &mut clients {
        // A daemon that already closed this client makes the write fail;
        // that is counted below from what the client reads.
        let _ = client.stream.write_all(&stall).await;
    }
    sleep(Duration::from_secs_f64(args.settle)).await;
    let (rss_stalled, hwm_stalled) = memory(args.pid)?;

    let mut closed = BTreeMap::new();
    for client in &mut clients {
        if let Some(how) = client.closed_how() {
            *closed.entry(how).or_insert(0) += 1;
        }
    }
    let connected = clients.len();
    Ok(Report {
        clients: args.clients,
        connected,
        frame_bytes: args.frame,
        sent_bytes: args.send,
        rss_start_kib: rss_start,
        hwm_start_kib: hwm_start,
        rss_connected_kib: rss_connected,
        rss_stalled_kib: rss_stalled,
        hwm_stalled_kib: hwm_stalled,
        held_per_client: (rss_stalled as f64 - rss_connected as f64) * 1024.0
            / connected.max(1) as f64,
        closed,
    })
}

/// A masked frame header declaring a text payload of `len` bytes.
fn header_for(len: usize, mask: [u8; 4]) -> Vec<u8> {
    let mut header = vec![0x80 | OP_TEXT];
    if len < 126 {
        header.push(0x80 | len as u8);
    } else if let Ok(short) = u16::try_from(len) {
        header.push(0x80 | 126);
        header.extend_from_slice(&short.to_be_bytes());
    } else {
        header.push(0x80 | 127);
        header.extend_from_slice(&(len as u64).to_be_bytes());
    }
    header.extend_from_slice(&mask);
    header
}

/// One upgraded client and what it has read past the 101 response.
struct Client {
    stream: TcpStream,
    read: Vec<u8>,
}

impl Client {
    /// Reads what has arrived without waiting, and says how the daemon
    /// closed this client: "CODE reason", "eof", or `None` if still open.
    fn closed_how(&mut self) -> Option<String> {
        let mut chunk = [0u8; 4096];
        let mut eof = false;
        loop {
            match self.stream.try_read(&mut chunk) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => self.read.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    eof = true;
                    break;
                }
            }
        }
        let mut pos = 0;
        while let Ok(Some(h)) = frame::parse_header(&self.read[pos..], 1 << 20) {
            if pos + h.frame_len() > self.read.len() {
                break;
            }
            let payload = &self.read[pos + h.header_len..pos + h.frame_len()];
            if h.opcode == OP_CLOSE {
                let code = payload
                    .get(..2)
                    .map_or(0, |c| u16::from_be_bytes([c[0], c[1]]));
                let reason = String::from_utf8_lossy(payload.get(2..).unwrap_or_default());
                return Some(format!("{code} {reason}"));
            }
            pos += h.frame_len();
        }
        eof.then(|| "eof".to_owned())
    }
}

/// Connects from 127.0.0.(1 + i mod K) and upgrades to a WebSocket.
async fn open(i: usize, args: &Args) -> anyhow::Result<Client> {
    let source = Ipv4Addr::new(127, 0, 0, 1 + (i % usize::from(args.sources)) as u8);
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((source, 0)))?;
    socket.set_zero_linger()?;
    let mut stream = socket
        .connect(args.server)
        .await
        .with_context(|| format!("connecting from {source}"))?;
    stream.set_nodelay(true)?;
    let key = frame::client_key(i as u64 + 1);
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {0}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nOrigin: http://{0}\r\n\r\n",
        args.server
    );
    stream.write_all(request.as_bytes()).await?;
    let mut read = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection closed during the upgrade");
        }
        read.extend_from_slice(&chunk[..n]);
        if let Some(end) = read.windows(4).position(|w| w == b"\r\n\r\n") {
            let status = String::from_utf8_lossy(&read[..end]);
            if !status.starts_with("HTTP/1.1 101") {
                bail!(
                    "upgrade refused: {}",
                    status.lines().next().unwrap_or_default()
                );
            }
            read.drain(..end + 4);
            return Ok(Client { stream, read });
        }
        if read.len() > 16 * 1024 {
            bail!("upgrade response head too long");
        }
    }
}
