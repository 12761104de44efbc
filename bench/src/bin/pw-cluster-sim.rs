//! pw-cluster-sim: a cluster of many simulated nodes around one real
//! pagewire daemon, on a real redis-server.
//!
//! Starts its own `redis-server` on a free port, writes the tables of
//! `--nodes` simulated nodes with `--pages` pages each (leases, rows,
//! names, index blocks, exactly as pagewire nodes keep them), answers the
//! requests sent to those nodes (counting which node got what), starts one
//! real `pagewire serve --redis`, and through its `POST /api/command`:
//!
//! - lists the whole cluster (`ws`) and checks every row came, in order;
//!   reports the time and the daemon's peak RSS (VmHWM);
//! - writes by name (on every node, and on one node only), by `*` and by
//!   index, and checks the counts and that each request went only to the
//!   nodes holding a match;
//! - times `ws write INDEX` to a page on a simulated node (p50, p99);
//! - starts a second real daemon with one real WebSocket page and times
//!   `ws write INDEX` to that page through the first daemon (p50, p99),
//!   checking that every write arrived.
//!
//! Prints one human report on stdout; exits 1 if a check failed.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use clap::Parser;
use futures_util::StreamExt as _;
use pagewire_bench::frame;
use pagewire_bench::report::percentile;
use pagewire_bench::sys;
use serde_json::{json, Value};

#[derive(Parser, Debug)]
#[command(about = "Simulated cluster nodes around one real pagewire daemon")]
struct Args {
    /// The pagewire binary.
    #[arg(long)]
    pagewire: String,
    /// Simulated nodes.
    #[arg(long, default_value_t = 20)]
    nodes: u64,
    /// Pages per simulated node.
    #[arg(long, default_value_t = 50_000)]
    pages: u64,
    /// `ws write INDEX` commands timed.
    #[arg(long, default_value_t = 500)]
    writes: usize,
}

const PREFIX: &str = "pagewire";

/// Requests each simulated node got, by kind (`index`, `name`, `all`).
type Heard = Arc<Mutex<HashMap<(u64, String), u64>>>;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(run(args))
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

async fn run(args: Args) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("pw-cluster-sim-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let port = free_port()?;
    let _redis = Killed(
        Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(&dir)
            .stdout(Stdio::null())
            .spawn()
            .context("redis-server")?,
    );
    let url = format!("redis://127.0.0.1:{port}");
    let client = redis::Client::open(url.as_str())?;
    let mut conn = loop {
        if let Ok(c) = client.get_multiplexed_async_connection().await {
            break c;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let started = Instant::now();
    populate(&mut conn, &args).await?;
    println!(
        "wrote {} simulated nodes x {} pages to Redis in {:.1}s ({} MB used)",
        args.nodes,
        args.pages,
        started.elapsed().as_secs_f64(),
        used_memory(&mut conn).await? / 1_000_000
    );
    let heard: Heard = Arc::default();
    // On a thread of its own: the commands below block this one.
    let (subscribed, ready) = std::sync::mpsc::channel();
    {
        let (client, nodes, pages, heard) = (client.clone(), args.nodes, args.pages, heard.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the simulated nodes");
            rt.block_on(respond(client, nodes, pages, heard, subscribed));
        });
    }
    ready
        .recv_timeout(Duration::from_secs(30))
        .context("the simulated nodes did not subscribe")?;

    let config = dir.join("sim.toml");
    std::fs::write(&config, "[cluster]\nlease_secs = 2\n")?;
    let (daemon, addr) = start_daemon(&args.pagewire, &dir, "a", &url, &config)?;
    let pid = daemon.0.id();
    let mut failed = 0;
    let mut check = |ok: bool, what: String| {
        println!("{} {what}", if ok { "ok  " } else { "FAIL" });
        if !ok {
            failed += 1;
        }
    };

    let total = args.nodes * args.pages;
    let rss_before = sys::rss_kib(pid).unwrap_or(0);
    let t = Instant::now();
    let (ok, out) = command(addr, "ws")?;
    let took = t.elapsed();
    let hwm = sys::hwm_kib(pid).unwrap_or(0);
    let mut rows = 0u64;
    let mut last = 0u64;
    let mut ordered = true;
    for line in out.lines() {
        if let Some(index) = line.split(' ').next().and_then(|i| i.parse::<u64>().ok()) {
            ordered &= index > last;
            last = index;
            rows += 1;
        }
    }
    let notes: Vec<&str> = out.lines().filter(|l| l.starts_with("note:")).collect();
    check(
        ok && rows == total && ordered && notes.is_empty(),
        format!(
            "ws listed {rows} of {total} pages in order in {:.2}s ({} MB of text); \
             daemon RSS {} MB before, peak {} MB; notes: {notes:?}",
            took.as_secs_f64(),
            out.len() / 1_000_000,
            rss_before / 1024,
            hwm / 1024
        ),
    );

    let cases = [
        ("ws write screen x", total, "name"),
        (
            "ws write only7 x",
            if args.nodes > 7 { args.pages } else { 0 },
            "name",
        ),
        ("ws write * x", total, "all"),
    ];
    for (line, want, kind) in cases {
        heard.lock().expect("heard").clear();
        let t = Instant::now();
        let (_, out) = command(addr, line)?;
        let took = t.elapsed();
        let asked: Vec<u64> = asked(&heard, kind);
        let want_nodes: Vec<u64> = if line.contains("only7") {
            (7..8).filter(|k| *k < args.nodes).collect()
        } else {
            (0..args.nodes).collect()
        };
        check(
            out.starts_with(&format!("sent to {want} connections")) && asked == want_nodes,
            format!(
                "{line}: {:?} in {:.1}ms; asked nodes {asked:?}",
                out.lines().next().unwrap_or(""),
                took.as_secs_f64() * 1000.0
            ),
        );
    }

    // A page of the third simulated node, by index: only that node.
    let index = 2 * args.pages + 17;
    let line = format!("ws write {index} x");
    heard.lock().expect("heard").clear();
    let mut times = Vec::with_capacity(args.writes);
    let mut all_ok = true;
    for _ in 0..args.writes {
        let t = Instant::now();
        let (ok, out) = command(addr, &line)?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        all_ok &= ok && out.starts_with("sent to 1 connection");
    }
    let asked = asked(&heard, "index");
    times.sort_by(f64::total_cmp);
    check(
        all_ok && asked == vec![2] && heard_count(&heard) == args.writes as u64,
        format!(
            "{line} x{}: p50 {:.2}ms p99 {:.2}ms (HTTP POST /api/command, new TCP connection \
             each); asked nodes {asked:?}",
            args.writes,
            percentile(&times, 50.0).unwrap_or(0.0),
            percentile(&times, 99.0).unwrap_or(0.0)
        ),
    );

    // A real second node with one real page, written to by index through
    // the first daemon and Redis.
    let (_second, second) = start_daemon(&args.pagewire, &dir, "b", &url, &config)?;
    let (index, got) = page(second)?;
    let line = format!("ws write {index} simwrite");
    let mut times = Vec::with_capacity(args.writes);
    let mut all_ok = true;
    for _ in 0..args.writes {
        let t = Instant::now();
        let (ok, out) = command(addr, &line)?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        all_ok &= ok && out.starts_with("sent to 1 connection");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.load(Ordering::Relaxed) < args.writes as u64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let arrived = got.load(Ordering::Relaxed);
    times.sort_by(f64::total_cmp);
    check(
        all_ok && arrived == args.writes as u64,
        format!(
            "{line} to a real page on a second real daemon x{}: p50 {:.2}ms p99 {:.2}ms \
             (HTTP POST /api/command, new TCP connection each); {arrived} arrived",
            args.writes,
            percentile(&times, 50.0).unwrap_or(0.0),
            percentile(&times, 99.0).unwrap_or(0.0)
        ),
    );
    let _ = std::fs::remove_dir_all(&dir);
    if failed > 0 {
        bail!("{failed} checks failed");
    }
    Ok(())
}

/// Writes the simulated nodes' keys as pagewire nodes keep them.
async fn populate(conn: &mut redis::aio::MultiplexedConnection, args: &Args) -> anyhow::Result<()> {
    let lease_ms = 3_600_000u64;
    for k in 0..args.nodes {
        let node = format!("sim-{k}");
        let first = k * args.pages + 1;
        let last = (k + 1) * args.pages;
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(format!("{PREFIX}:node:{node}"))
            .arg("http://simulated")
            .arg("PX")
            .arg(lease_ms)
            .ignore()
            .cmd("SADD")
            .arg(format!("{PREFIX}:nodes"))
            .arg(&node)
            .ignore()
            .cmd("ZADD")
            .arg(format!("{PREFIX}:blocks:{node}"))
            .arg(first)
            .arg(format!("{first}-{last}"))
            .ignore()
            .cmd("SADD")
            .arg(format!("{PREFIX}:names:{node}"))
            .arg("screen")
            .ignore();
        if k == 7 {
            pipe.cmd("SADD")
                .arg(format!("{PREFIX}:names:{node}"))
                .arg("only7")
                .ignore();
        }
        pipe.query_async::<()>(conn).await?;
        let key = format!("{PREFIX}:conns:{node}");
        let mut index = first;
        while index <= last {
            let mut zadd = redis::cmd("ZADD");
            zadd.arg(&key);
            for i in index..=(index + 999).min(last) {
                let names = if k == 7 {
                    json!(["screen", "only7"])
                } else {
                    json!(["screen"])
                };
                let row = json!({
                    "id": i, "names": names, "remote": "10.1.2.3:50412",
                    "page": "/dashboard.html", "opened": 1_700_000_000_000u64,
                    "mi": 3, "bi": 120, "mo": 42, "bo": 2048,
                });
                zadd.arg(i).arg(row.to_string());
            }
            zadd.query_async::<()>(conn).await?;
            index += 1000;
        }
    }
    redis::cmd("SET")
        .arg(format!("{PREFIX}:index"))
        .arg(args.nodes * args.pages + 1000)
        .query_async::<()>(conn)
        .await?;
    Ok(())
}

async fn used_memory(conn: &mut redis::aio::MultiplexedConnection) -> anyhow::Result<u64> {
    let info: String = redis::cmd("INFO").arg("memory").query_async(conn).await?;
    Ok(info
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0))
}

/// Answers the requests sent to the simulated nodes, as a node would.
async fn respond(
    client: redis::Client,
    nodes: u64,
    pages: u64,
    heard: Heard,
    subscribed: std::sync::mpsc::Sender<()>,
) {
    let Ok(mut pubsub) = client.get_async_pubsub().await else {
        return;
    };
    let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
        return;
    };
    for k in 0..nodes {
        if pubsub
            .subscribe(format!("{PREFIX}:req:sim-{k}"))
            .await
            .is_err()
        {
            return;
        }
    }
    let _ = subscribed.send(());
    let mut stream = pubsub.on_message();
    while let Some(msg) = stream.next().await {
        let channel = msg.get_channel_name().to_string();
        let Some(k) = channel
            .rsplit("sim-")
            .next()
            .and_then(|k| k.parse::<u64>().ok())
        else {
            continue;
        };
        let Ok(req) = serde_json::from_slice::<Value>(msg.get_payload_bytes()) else {
            continue;
        };
        // `{"op": {"op": "send"|"close", "target": {"index": N} | {"name": S} | "all", ...}}`
        let target = &req["op"]["target"];
        let (kind, reached) = if let Some(i) = target["index"].as_u64() {
            let mine = (k * pages + 1..=(k + 1) * pages).contains(&i);
            ("index", mine.then_some(1))
        } else if let Some(name) = target["name"].as_str() {
            let hit = name == "screen" || (name == "only7" && k == 7);
            ("name", Some(if hit { pages } else { 0 }))
        } else if target == "all" {
            ("all", Some(pages))
        } else {
            continue;
        };
        *heard
            .lock()
            .expect("heard")
            .entry((k, kind.to_string()))
            .or_default() += 1;
        let answer = match reached {
            Some(n) => json!({"kind": "done", "reached": n, "dropped": 0}),
            None => json!({"kind": "noindex"}),
        };
        let reply = json!({
            "v": 2, "id": req["id"], "node": format!("sim-{k}"),
            "live": pages, "answer": answer,
        });
        let from = req["from"].as_str().unwrap_or_default();
        let _ = redis::cmd("PUBLISH")
            .arg(format!("{PREFIX}:reply:{from}"))
            .arg(reply.to_string())
            .query_async::<i64>(&mut conn)
            .await;
    }
}

fn asked(heard: &Heard, kind: &str) -> Vec<u64> {
    let mut nodes: Vec<u64> = heard
        .lock()
        .expect("heard")
        .keys()
        .filter(|(_, k)| k == kind)
        .map(|(n, _)| *n)
        .collect();
    nodes.sort_unstable();
    nodes
}

fn heard_count(heard: &Heard) -> u64 {
    heard.lock().expect("heard").values().sum()
}

/// Starts `pagewire serve` joined to `url`; returns it and its address.
fn start_daemon(
    pagewire: &str,
    dir: &std::path::Path,
    name: &str,
    url: &str,
    config: &std::path::Path,
) -> anyhow::Result<(Killed, SocketAddr)> {
    let mut daemon = Command::new(pagewire)
        .args(["serve", "--listen", "127.0.0.1:0", "--control"])
        .arg(dir.join(format!("ctl-{name}.sock")))
        .args(["--redis", url, "--config"])
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .context("pagewire")?;
    let stdout = daemon.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
    let daemon = Killed(daemon);
    let addr = ready_addr(stdout)?;
    Ok((daemon, addr))
}

/// Opens one WebSocket page on `addr`; returns its index (from the `hello`
/// frame) and a count of the `simwrite` writes it receives, kept by a
/// thread of its own.
fn page(addr: SocketAddr) -> anyhow::Result<(u64, Arc<AtomicU64>)> {
    let mut s = TcpStream::connect(addr)?;
    let key = frame::client_key(1);
    write!(
        s,
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nOrigin: http://{addr}\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            bail!("the page's connection closed during the upgrade");
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    if !buf.starts_with(b"HTTP/1.1 101") {
        bail!("upgrade refused: {}", String::from_utf8_lossy(&buf[..head]));
    }
    buf.drain(..head);
    let mut frames = Frames { s, buf };
    let hello: Value = serde_json::from_slice(&frames.next_text()?)?;
    let index = hello["index"]
        .as_u64()
        .ok_or_else(|| anyhow!("no index in {hello}"))?;
    let got = Arc::new(AtomicU64::new(0));
    let count = got.clone();
    std::thread::spawn(move || {
        while let Ok(text) = frames.next_text() {
            if text.windows(8).any(|w| w == b"simwrite") {
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    Ok((index, got))
}

/// The frames a page receives, read by hand (the server's are unmasked).
struct Frames {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Frames {
    /// The next text frame's payload; answers pings on the way.
    fn next_text(&mut self) -> anyhow::Result<Vec<u8>> {
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(h) = frame::parse_header(&self.buf, 1 << 20)? {
                if self.buf.len() >= h.frame_len() {
                    let payload = self.buf[h.header_len..h.frame_len()].to_vec();
                    self.buf.drain(..h.frame_len());
                    match h.opcode {
                        frame::OP_TEXT => return Ok(payload),
                        frame::OP_PING => {
                            let mut pong = Vec::new();
                            frame::encode(frame::OP_PONG, &payload, Some([1, 2, 3, 4]), &mut pong);
                            self.s.write_all(&pong)?;
                        }
                        frame::OP_CLOSE => bail!("the server closed the page"),
                        _ => {}
                    }
                    continue;
                }
            }
            let n = self.s.read(&mut chunk)?;
            if n == 0 {
                bail!("the page's connection closed");
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// Waits for the daemon's ready line and returns its address.
fn ready_addr(stdout: std::process::ChildStdout) -> anyhow::Result<SocketAddr> {
    let mut lines = BufReader::new(stdout).lines();
    for line in lines.by_ref() {
        let line = line?;
        if let Some(rest) = line.strip_prefix("pagewire listening on http://") {
            let addr = rest.split(' ').next().unwrap_or_default().parse()?;
            // Keep draining the daemon's stdout so it never blocks.
            std::thread::spawn(move || for _ in lines {});
            return Ok(addr);
        }
    }
    bail!("the daemon ended before it was ready")
}

/// Runs one command line over `POST /api/command`.
fn command(addr: SocketAddr, line: &str) -> anyhow::Result<(bool, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    let body = json!({ "cmd": line }).to_string();
    write!(
        s,
        "POST /api/command HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer)?;
    let at = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("no HTTP head"))?;
    let v: Value = serde_json::from_slice(&answer[at + 4..])?;
    Ok((
        v["ok"].as_bool().unwrap_or(false),
        v["output"].as_str().unwrap_or_default().to_string(),
    ))
}
