//! pw-load: the load client of the pagewire benchmark.
//!
//! Opens N WebSocket clients to a server with pagewire's interface, spread
//! over source addresses 127.0.0.1..127.0.0.k (each socket is bound before it
//! connects, so k addresses give k ephemeral port ranges), registers a name
//! on each, then runs one scenario:
//!
//! - `burst`: M broadcasts, each sent when the previous one reached every
//!   client;
//! - `sustained`: R broadcasts/s for T seconds on a fixed schedule; latency
//!   is measured from each broadcast's *scheduled* time, so a server that
//!   falls behind is charged for the wait (no coordinated omission);
//! - `saturate`: sustained steps at rising rates on the same connections,
//!   then a bisection, to find the highest rate at which every broadcast
//!   reaches every client within `--deadline-ms`;
//! - `idle`: connect, register and measure the server's memory;
//! - `commands`: `POST /api/command` throughput on keep-alive connections;
//! - `call`: M `ws call * benchAnswer` commands, each sent when the
//!   previous one returned: the time from sending one to its HTTP reply,
//!   which comes once every client answered (each client answers every
//!   `call` frame at once with a `result`).
//!
//! Broadcasts are `POST /api/command` requests (`ws write NAME "payload"`)
//! on a keep-alive connection of this process, so the send time and every
//! arrival are read from one monotonic clock. The payload also carries the
//! wall-clock send time for people reading a capture.
//!
//! One thread (tokio current_thread): run it pinned to its own core. Each
//! client is a task with a socket and a small read buffer, and framing is
//! done by hand (client frames masked as RFC 6455 requires).
//!
//! Prints one JSON line (the `Record`) on stdout and a human line on stderr.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context as _};
use clap::{Parser, ValueEnum};
use pagewire_bench::command::quote;
use pagewire_bench::frame::{self, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT};
use pagewire_bench::report::{percentile, Record};
use pagewire_bench::sys;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{Notify, Semaphore};
use tokio::time::{sleep, sleep_until, timeout};

/// Largest frame a client accepts from the server.
const MAX_FRAME: usize = 1 << 20;
/// Initial read buffer of a client; grows only for a larger frame.
const CLIENT_BUF: usize = 2048;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    Burst,
    Sustained,
    Saturate,
    Idle,
    Commands,
    Call,
    Close,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Burst => "burst",
            Scenario::Sustained => "sustained",
            Scenario::Saturate => "saturate",
            Scenario::Idle => "idle",
            Scenario::Commands => "commands",
            Scenario::Call => "call",
            Scenario::Close => "close",
        }
    }
}

#[derive(Parser, Debug, Clone)]
#[command(about = "Load client for pagewire's fan-out benchmark")]
struct Args {
    /// Server address (HTTP and WebSocket).
    #[arg(long, default_value = "127.0.0.1:8080")]
    server: SocketAddr,
    /// Spread the WebSocket clients over these servers (client i goes to
    /// the (i mod n)th) instead of `--server`; broadcasts still go to
    /// `--server`. For a cluster: clients on every node, commands to one.
    #[arg(long, value_delimiter = ',')]
    spread: Vec<SocketAddr>,
    /// Server process id, to read its resident memory from /proc.
    #[arg(long)]
    pid: Option<u32>,
    /// What to run.
    #[arg(long, value_enum, default_value = "burst")]
    scenario: Scenario,
    /// WebSocket clients to open.
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    /// Broadcasts in a burst; calls in the call scenario.
    #[arg(long, default_value_t = 50)]
    broadcasts: u64,
    /// Broadcasts per second (sustained; the first step of saturate).
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
    /// Seconds of sustained load (per step for saturate).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Saturate: a rate passes when every broadcast reached every client
    /// within this many milliseconds of its scheduled time.
    #[arg(long, default_value_t = 500.0)]
    deadline_ms: f64,
    /// Saturate: highest rate to try.
    #[arg(long, default_value_t = 2000.0)]
    max_rate: f64,
    /// Payload text length in bytes (at least 40).
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// Pad the payload with JSON-like records (a dashboard's status:
    /// names, numbers, flags; without quotes, so the text needs no
    /// escaping) instead of one repeated letter, which would compress
    /// unrealistically well.
    #[arg(long)]
    json: bool,
    /// Offer permessage-deflate (as Chromium does) and require the server
    /// to accept it; compressed frames are inflated before they are
    /// checked.
    #[arg(long)]
    deflate: bool,
    /// Name every client registers.
    #[arg(long, default_value = "bench")]
    name: String,
    /// Source addresses 127.0.0.1..127.0.0.K to spread clients over
    /// (pagewire admits an eighth of its connections from one address by
    /// default: 16 keep 18,000 clients well under that).
    #[arg(long, default_value_t = 16)]
    sources: u8,
    /// Connection setups in flight at once.
    #[arg(long, default_value_t = 128)]
    concurrency: usize,
    /// Seconds to wait for stragglers of a broadcast before counting them
    /// lost.
    #[arg(long, default_value_t = 5.0)]
    drain_timeout: f64,
    /// Seconds allowed for all clients to connect and register.
    #[arg(long, default_value_t = 120.0)]
    connect_timeout: f64,
    /// Seconds to wait after all registered before reading the server's RSS.
    #[arg(long, default_value_t = 1.0)]
    settle: f64,
    /// Commands scenario: total requests, and keep-alive connections.
    #[arg(long, default_value_t = 50_000)]
    requests: u64,
    /// Commands scenario: keep-alive connections sending requests.
    #[arg(long, default_value_t = 4)]
    http_connections: usize,
    /// Bearer token for /api/command, when the server wants one.
    #[arg(long, env = "PAGEWIRE_TOKEN")]
    token: Option<String>,
    /// Server label written into the record.
    #[arg(long, default_value = "server")]
    label: String,
    /// Exit with status 1 unless every client registered and every
    /// broadcast reached every client intact.
    #[arg(long)]
    require_all: bool,
}

/// One broadcast as the client sees it.
#[derive(Debug, Clone)]
struct Seq {
    /// Send time (burst) or scheduled time (sustained), ns since start.
    base_ns: u64,
    /// The exact text sent.
    text: Box<str>,
    /// Clients that received it.
    received: u32,
    /// Latest arrival, ns since start.
    last_ns: u64,
}

/// State shared by every task of this thread.
struct Shared {
    start: Instant,
    /// Broadcasts by sequence number.
    seqs: RefCell<Vec<Seq>>,
    /// Per-delivery latency in microseconds, for the current measurement.
    latencies_us: RefCell<Vec<u32>>,
    /// Registered clients: the count each broadcast must reach.
    registered: Cell<u32>,
    /// Clients that failed to connect or register.
    failed: Cell<u32>,
    delivered: Cell<u64>,
    corrupt: Cell<u64>,
    closed_by_server: Cell<u64>,
    /// Broadcasts that reached every client.
    completed: Cell<u64>,
    /// Woken when a broadcast completes.
    progress: Notify,
    /// Woken when a client finishes setup (either way).
    setup: Notify,
    /// Bytes read from the wire after registration, all clients.
    wire_bytes: Cell<u64>,
    /// Compressed payloads seen and what they inflate to: a broadcast
    /// reaches every client in the same bytes, so it is inflated once here
    /// and later copies are compared byte for byte (the load client would
    /// otherwise spend more CPU inflating than the server compressing).
    inflated: RefCell<HashMap<Vec<u8>, Rc<[u8]>>>,
}

impl Shared {
    fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    fn ns_of(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.start).as_nanos() as u64
    }

    /// What a compressed message's payload inflates to; `None` if it does
    /// not inflate.
    fn inflate(&self, compressed: &[u8]) -> Option<Rc<[u8]>> {
        if let Some(done) = self.inflated.borrow().get(compressed) {
            return Some(done.clone());
        }
        let mut input = compressed.to_vec();
        input.extend_from_slice(&[0, 0, 0xff, 0xff]);
        let mut d = flate2::Decompress::new(false);
        let mut out = Vec::with_capacity(MAX_FRAME);
        d.decompress_vec(&input, &mut out, flate2::FlushDecompress::Sync)
            .ok()?;
        let out: Rc<[u8]> = out.into();
        let mut cache = self.inflated.borrow_mut();
        // Bounded: a burst has few broadcasts in flight at once.
        if cache.len() > 1024 {
            cache.clear();
        }
        cache.insert(compressed.to_vec(), out.clone());
        Some(out)
    }

    /// Record a text frame's payload that arrived at `now_ns` on a client
    /// whose previous sequence number was `last_seq`.
    fn on_text(&self, payload: &[u8], now_ns: u64, last_seq: &mut Option<u64>) {
        let Some(text) = write_text(payload) else {
            return; // a reply, hello or other frame type
        };
        let Some(seq) = parse_seq(text) else {
            return; // not a benchmark payload (e.g. the commands scenario)
        };
        let mut seqs = self.seqs.borrow_mut();
        let in_order = last_seq.is_none_or(|last| seq > last);
        let Some(s) = seqs.get_mut(seq as usize) else {
            self.corrupt.set(self.corrupt.get() + 1);
            return;
        };
        if !in_order || s.text.as_bytes() != text {
            self.corrupt.set(self.corrupt.get() + 1);
            return;
        }
        *last_seq = Some(seq);
        s.received += 1;
        s.last_ns = s.last_ns.max(now_ns);
        self.delivered.set(self.delivered.get() + 1);
        let lat_us = now_ns.saturating_sub(s.base_ns) / 1000;
        self.latencies_us
            .borrow_mut()
            .push(u32::try_from(lat_us).unwrap_or(u32::MAX));
        if s.received == self.registered.get() {
            self.completed.set(self.completed.get() + 1);
            self.progress.notify_one();
        }
    }

    /// Wait until `count` broadcasts are complete or `deadline` passes.
    async fn wait_completed(&self, count: u64, deadline: tokio::time::Instant) -> bool {
        while self.completed.get() < count {
            if timeout_at(deadline, self.progress.notified())
                .await
                .is_err()
            {
                return self.completed.get() >= count;
            }
        }
        true
    }
}

async fn timeout_at<F: std::future::Future>(
    deadline: tokio::time::Instant,
    f: F,
) -> Result<F::Output, tokio::time::error::Elapsed> {
    tokio::time::timeout_at(deadline, f).await
}

/// The `text` of a `{"type":"write",...,"text":"..."}` frame, when it is one
/// and the text has no escapes (benchmark payloads never do).
fn write_text(payload: &[u8]) -> Option<&[u8]> {
    find(payload, b"\"type\":\"write\"")?;
    let start = find(payload, b"\"text\":\"")? + 8;
    let len = payload[start..].iter().position(|&b| b == b'"')?;
    Some(&payload[start..start + len])
}

/// The id of a `{"type":"call",...,"id":N,...}` frame, when it is one.
fn call_id(payload: &[u8]) -> Option<u64> {
    find(payload, b"\"type\":\"call\"")?;
    let start = find(payload, b"\"id\":")? + 5;
    let digits = &payload[start..];
    let end = digits
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(digits.len());
    std::str::from_utf8(&digits[..end]).ok()?.parse().ok()
}

/// The sequence number of a benchmark payload `seq=N t=... pad`.
fn parse_seq(text: &[u8]) -> Option<u64> {
    let digits = text.strip_prefix(b"seq=")?;
    let end = digits.iter().position(|b| !b.is_ascii_digit())?;
    std::str::from_utf8(&digits[..end]).ok()?.parse().ok()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The benchmark payload for `seq`: its number, the wall-clock send time in
/// microseconds, padded to `len` bytes with `x`, or with JSON-like
/// records when `json`.
fn payload_text(seq: u64, len: usize, json: bool) -> String {
    let wall_us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    let mut s = format!("seq={seq} t={wall_us} ");
    if json {
        s.push('[');
        let mut i = 0u64;
        while s.len() < len {
            // Numbers that vary like a real status's do.
            let load = (seq * 7919 + i * 104_729) % 1000;
            let up = load % 5 != 0;
            s.push_str(&format!(
                "{{host:node-{i},region:eu-west-{},up:{up},load:0.{load:03},conns:{}}},",
                i % 3,
                (load * 37) % 5000
            ));
            i += 1;
        }
    }
    while s.len() < len {
        s.push('x');
    }
    s.truncate(len);
    s
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.payload < 40 {
        bail!("--payload must be at least 40 bytes");
    }
    if args.sources == 0 {
        bail!("--sources must be at least 1");
    }
    sys::raise_nofile_limit().context("raising the open-file limit")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    let record = local.block_on(&rt, run(args.clone()))?;
    println!("{}", serde_json::to_string(&record)?);
    eprintln!("{}", record.human());
    let clean = record.registered == record.clients
        && record.lost == 0
        && record.corrupt == 0
        && record.http_errors == 0
        && record.closed_by_server == 0;
    // Exit without dropping 18k sockets one by one; they are reset (linger
    // 0) by the kernel as the process ends.
    std::process::exit(if args.require_all && !clean { 1 } else { 0 });
}

async fn run(args: Args) -> anyhow::Result<Record> {
    let shared = Rc::new(Shared {
        start: Instant::now(),
        seqs: RefCell::new(Vec::new()),
        latencies_us: RefCell::new(Vec::new()),
        registered: Cell::new(0),
        failed: Cell::new(0),
        delivered: Cell::new(0),
        corrupt: Cell::new(0),
        closed_by_server: Cell::new(0),
        completed: Cell::new(0),
        progress: Notify::new(),
        setup: Notify::new(),
        wire_bytes: Cell::new(0),
        inflated: RefCell::new(HashMap::new()),
    });
    let mut rec = Record {
        server: args.label.clone(),
        scenario: args.scenario.name().to_string(),
        clients: args.clients as u64,
        ..Record::default()
    };
    rec.rss_before_kib = args.pid.and_then(sys::rss_kib);
    let cpu_start = CpuSample::take(args.pid);

    // Connect, upgrade and register every client.
    let cfg = Rc::new(args.clone());
    let gate = Rc::new(Semaphore::new(args.concurrency.max(1)));
    let t_connect = Instant::now();
    for i in 0..args.clients {
        tokio::task::spawn_local(client(i, cfg.clone(), shared.clone(), gate.clone()));
    }
    let connect_deadline =
        tokio::time::Instant::now() + Duration::from_secs_f64(args.connect_timeout);
    while ((shared.registered.get() + shared.failed.get()) as usize) < args.clients {
        if timeout_at(connect_deadline, shared.setup.notified())
            .await
            .is_err()
        {
            break;
        }
    }
    rec.connect_ms = t_connect.elapsed().as_secs_f64() * 1e3;
    rec.registered = u64::from(shared.registered.get());
    rec.connect_failures = args.clients as u64 - rec.registered;
    if rec.registered == 0 && args.clients > 0 {
        bail!("no client could connect and register to {}", args.server);
    }
    if args.pid.is_some() {
        sleep(Duration::from_secs_f64(args.settle)).await;
        rec.rss_after_kib = args.pid.and_then(sys::rss_kib);
        if let (Some(b), Some(a)) = (rec.rss_before_kib, rec.rss_after_kib) {
            if rec.registered > 0 {
                rec.bytes_per_conn = Some((a as f64 - b as f64) * 1024.0 / rec.registered as f64);
            }
        }
    }

    match args.scenario {
        Scenario::Idle => {}
        Scenario::Burst => burst(&args, &shared, &mut rec).await?,
        Scenario::Sustained => {
            let from = 0;
            sustained(&args, &shared, args.rate, args.duration, &mut rec).await?;
            summarize(&shared, from, &mut rec, None);
        }
        Scenario::Saturate => saturate(&args, &shared, &mut rec).await?,
        Scenario::Commands => commands(&args, &mut rec).await?,
        Scenario::Call => calls(&args, &shared, &mut rec).await?,
        Scenario::Close => close_all(&args, &shared, &mut rec).await?,
    }
    rec.corrupt = shared.corrupt.get();
    if args.scenario != Scenario::Close {
        rec.closed_by_server = shared.closed_by_server.get();
    }
    rec.wall_ms = shared.start.elapsed().as_secs_f64() * 1e3;
    CpuSample::take(args.pid).since(&cpu_start, &mut rec);
    Ok(rec)
}

/// CPU counters of the server, this process and the machine.
struct CpuSample {
    server: Option<f64>,
    client: Option<f64>,
    machine: Option<f64>,
}

impl CpuSample {
    fn take(server_pid: Option<u32>) -> Self {
        CpuSample {
            server: server_pid.and_then(sys::cpu_ms),
            client: sys::cpu_ms(std::process::id()),
            machine: sys::machine_busy_ms(),
        }
    }

    fn since(&self, start: &CpuSample, rec: &mut Record) {
        let delta = |a: Option<f64>, b: Option<f64>| Some(a? - b?);
        rec.server_cpu_ms = delta(self.server, start.server);
        rec.client_cpu_ms = delta(self.client, start.client);
        if let (Some(m), Some(s), Some(c)) = (
            delta(self.machine, start.machine),
            rec.server_cpu_ms,
            rec.client_cpu_ms,
        ) {
            rec.other_cpu_ms = Some((m - s - c).max(0.0));
        }
    }
}

/// Broadcasts one after another, each when the previous reached everyone.
async fn burst(args: &Args, shared: &Shared, rec: &mut Record) -> anyhow::Result<()> {
    let mut http = Http::connect(args.server, args.token.clone()).await?;
    let drain = Duration::from_secs_f64(args.drain_timeout);
    let first_ns = shared.now_ns();
    for seq in 0..args.broadcasts {
        let text = payload_text(seq, args.payload, args.json);
        let line = format!("ws write {} {}", args.name, quote(&text));
        shared.seqs.borrow_mut().push(Seq {
            base_ns: shared.now_ns(),
            text: text.into(),
            received: 0,
            last_ns: 0,
        });
        match http.command(&line).await {
            Ok(true) => {}
            Ok(false) | Err(_) => rec.http_errors += 1,
        }
        let deadline = tokio::time::Instant::now() + drain;
        shared.wait_completed(seq + 1, deadline).await;
    }
    summarize(shared, 0, rec, Some(first_ns));
    Ok(())
}

/// `rate` broadcasts/s for `duration` s on a fixed schedule, then a drain.
async fn sustained(
    args: &Args,
    shared: &Shared,
    rate: f64,
    duration: f64,
    rec: &mut Record,
) -> anyhow::Result<()> {
    let mut http = Http::connect(args.server, args.token.clone()).await?;
    let count = (rate * duration).round().max(1.0) as u64;
    let from = shared.seqs.borrow().len() as u64;
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    for i in 0..count {
        let scheduled = start + Duration::from_secs_f64(i as f64 / rate);
        sleep_until(scheduled).await;
        let seq = from + i;
        let text = payload_text(seq, args.payload, args.json);
        let line = format!("ws write {} {}", args.name, quote(&text));
        shared.seqs.borrow_mut().push(Seq {
            base_ns: shared.ns_of(scheduled.into_std()),
            text: text.into(),
            received: 0,
            last_ns: 0,
        });
        match http.command(&line).await {
            Ok(true) => {}
            Ok(false) | Err(_) => rec.http_errors += 1,
        }
    }
    let end = start + Duration::from_secs_f64(count as f64 / rate);
    let deadline =
        end.max(tokio::time::Instant::now()) + Duration::from_secs_f64(args.drain_timeout);
    shared.wait_completed(from + count, deadline).await;
    rec.rate = Some(rate);
    rec.broadcasts += count;
    Ok(())
}

/// Rising sustained steps, then bisection: the highest rate at which every
/// broadcast reached every client within the deadline.
async fn saturate(args: &Args, shared: &Shared, rec: &mut Record) -> anyhow::Result<()> {
    let mut good: Option<(f64, Record)> = None;
    let mut bad: Option<f64> = None;
    let mut rate = args.rate;
    let mut steps = 0;
    let passes = |r: &Record| {
        r.lost == 0
            && r.http_errors == 0
            && r.fanout_p99_ms.is_some()
            && fanout_max_ms(shared, r) <= args.deadline_ms
    };
    while steps < 24 {
        steps += 1;
        let mut step = rec.clone();
        step.broadcasts = 0;
        let from = shared.seqs.borrow().len() as u64;
        shared.latencies_us.borrow_mut().clear();
        sustained(args, shared, rate, args.duration, &mut step).await?;
        summarize(shared, from, &mut step, None);
        step.rate = Some(rate);
        let ok = passes(&step);
        eprintln!(
            "  saturate step {steps}: {rate:.1}/s -> {} (lost {}, fan-out p99 {:?} ms, max {:.1} ms)",
            if ok { "keeps up" } else { "falls behind" },
            step.lost,
            step.fanout_p99_ms,
            fanout_max_ms(shared, &step)
        );
        if ok {
            good = Some((rate, step));
        } else {
            bad = Some(bad.map_or(rate, |b: f64| b.min(rate)));
            // Let the server drain before the next step.
            sleep(Duration::from_secs(1)).await;
        }
        let lo = good.as_ref().map(|(r, _)| *r);
        rate = match (lo, bad) {
            (Some(lo), None) if lo * 1.5 <= args.max_rate => lo * 1.5,
            (Some(_), None) => break,
            (None, Some(hi)) if hi / 2.0 >= 1.0 => hi / 2.0,
            (None, _) => break,
            (Some(lo), Some(hi)) => {
                if hi / lo <= 1.06 {
                    break;
                }
                (lo * hi).sqrt()
            }
        };
    }
    match good {
        Some((rate, step)) => {
            *rec = Record {
                connect_ms: rec.connect_ms,
                rss_before_kib: rec.rss_before_kib,
                rss_after_kib: rec.rss_after_kib,
                bytes_per_conn: rec.bytes_per_conn,
                ..step
            };
            rec.rate = Some(rate);
        }
        None => rec.rate = Some(0.0),
    }
    Ok(())
}

/// Largest fan-out time among the broadcasts summarized in `r`.
fn fanout_max_ms(shared: &Shared, r: &Record) -> f64 {
    let seqs = shared.seqs.borrow();
    let from = seqs.len().saturating_sub(r.broadcasts as usize);
    seqs[from..]
        .iter()
        .map(|s| {
            if s.received >= shared.registered.get() {
                s.last_ns.saturating_sub(s.base_ns) as f64 / 1e6
            } else {
                f64::INFINITY
            }
        })
        .fold(0.0, f64::max)
}

/// Fill the delivery statistics of broadcasts `from..` into `rec`.
fn summarize(shared: &Shared, from: u64, rec: &mut Record, first_send_ns: Option<u64>) {
    let seqs = shared.seqs.borrow();
    let seqs = &seqs[from as usize..];
    let target = u64::from(shared.registered.get());
    rec.broadcasts = seqs.len() as u64;
    rec.expected = rec.broadcasts * target;
    rec.delivered = seqs.iter().map(|s| u64::from(s.received)).sum();
    rec.lost = rec.expected.saturating_sub(rec.delivered);
    let mut fanout: Vec<f64> = seqs
        .iter()
        .map(|s| {
            if u64::from(s.received) >= target {
                s.last_ns.saturating_sub(s.base_ns) as f64 / 1e6
            } else {
                f64::INFINITY
            }
        })
        .collect();
    fanout.sort_by(f64::total_cmp);
    let finite = |v: Option<f64>| v.filter(|x| x.is_finite());
    rec.fanout_p50_ms = finite(percentile(&fanout, 50.0));
    rec.fanout_p99_ms = finite(percentile(&fanout, 99.0));
    let mut lat = shared.latencies_us.borrow_mut();
    lat.sort_unstable();
    let lat_ms: Vec<f64> = lat.iter().map(|&us| f64::from(us) / 1e3).collect();
    rec.latency_p50_ms = percentile(&lat_ms, 50.0);
    rec.latency_p99_ms = percentile(&lat_ms, 99.0);
    rec.latency_max_ms = lat_ms.last().copied();
    let first = first_send_ns.or_else(|| seqs.first().map(|s| s.base_ns));
    let last = seqs.iter().map(|s| s.last_ns).max();
    if let (Some(first), Some(last)) = (first, last) {
        if last > first {
            rec.msgs_per_s = Some(rec.delivered as f64 / ((last - first) as f64 / 1e9));
        }
    }
    if rec.delivered > 0 {
        rec.wire_bytes_per_delivery = Some(shared.wire_bytes.get() as f64 / rec.delivered as f64);
    }
}

/// `POST /api/command` throughput: `--requests` writes to one registered
/// client over `--http-connections` keep-alive connections.
async fn commands(args: &Args, rec: &mut Record) -> anyhow::Result<()> {
    let conns = args.http_connections.max(1);
    let per_conn = args.requests / conns as u64;
    let errors = Rc::new(Cell::new(0u64));
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let mut http = Http::connect(args.server, args.token.clone()).await?;
        let errors = errors.clone();
        let line = format!("ws write {} \"cmd\"", args.name);
        tasks.push(tokio::task::spawn_local(async move {
            for _ in 0..per_conn {
                if !matches!(http.command(&line).await, Ok(true)) {
                    errors.set(errors.get() + 1);
                }
            }
        }));
    }
    for task in tasks {
        task.await?;
    }
    let secs = t.elapsed().as_secs_f64();
    rec.http_errors = errors.get();
    rec.commands_per_s = Some((per_conn * conns as u64) as f64 / secs);
    Ok(())
}

/// `ws call * benchAnswer`, `--broadcasts` times, each when the
/// previous one returned: the time to each HTTP reply (which comes when
/// every client answered or the call's timeout passed), and the answers.
async fn calls(args: &Args, shared: &Shared, rec: &mut Record) -> anyhow::Result<()> {
    let mut http = Http::connect(args.server, args.token.clone()).await?;
    let line = "ws call --timeout 30s * benchAnswer";
    let mut times_ms = Vec::new();
    let started = Instant::now();
    for _ in 0..args.broadcasts {
        let t = Instant::now();
        match http.request(line).await {
            Ok((200, body)) => {
                let answered = body
                    .get("results")
                    .and_then(|r| r.as_array())
                    .map_or(0, |r| {
                        r.iter()
                            .filter(|a| a.get("ok") == Some(&serde_json::Value::Bool(true)))
                            .count()
                    });
                rec.delivered += answered as u64;
            }
            Ok(_) | Err(_) => rec.http_errors += 1,
        }
        times_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let secs = started.elapsed().as_secs_f64();
    rec.broadcasts = args.broadcasts;
    rec.expected = args.broadcasts * u64::from(shared.registered.get());
    rec.lost = rec.expected.saturating_sub(rec.delivered);
    times_ms.sort_by(f64::total_cmp);
    rec.fanout_p50_ms = percentile(&times_ms, 50.0);
    rec.fanout_p99_ms = percentile(&times_ms, 99.0);
    rec.latency_max_ms = times_ms.last().copied();
    if secs > 0.0 {
        rec.msgs_per_s = Some(rec.delivered as f64 / secs);
    }
    Ok(())
}

/// One `ws close *` to every registered client: the time to the command's
/// reply (`fanout_p50_ms`) and to the last client's close frame
/// (`latency_max_ms`); close frames received are the deliveries.
async fn close_all(args: &Args, shared: &Shared, rec: &mut Record) -> anyhow::Result<()> {
    let mut http = Http::connect(args.server, args.token.clone()).await?;
    let expected = u64::from(shared.registered.get());
    let started = Instant::now();
    match http.request("ws close *").await {
        Ok((200, _)) => {}
        Ok(_) | Err(_) => rec.http_errors += 1,
    }
    rec.fanout_p50_ms = Some(started.elapsed().as_secs_f64() * 1e3);
    let deadline = started + Duration::from_secs_f64(args.drain_timeout);
    // Polled: each client returns on its close frame and wakes no one.
    while shared.closed_by_server.get() < expected && Instant::now() < deadline {
        sleep(Duration::from_millis(1)).await;
    }
    rec.latency_max_ms = Some(started.elapsed().as_secs_f64() * 1e3);
    rec.broadcasts = 1;
    rec.expected = expected;
    rec.delivered = shared.closed_by_server.get().min(expected);
    rec.lost = expected - rec.delivered;
    Ok(())
}

/// One WebSocket client: connect, upgrade, register, then count arrivals
/// (and answer `call` frames) until the server closes the connection.
async fn client(i: usize, cfg: Rc<Args>, shared: Rc<Shared>, gate: Rc<Semaphore>) {
    let setup = async {
        let _permit = gate.acquire().await.map_err(|e| anyhow!(e))?;
        timeout(Duration::from_secs_f64(cfg.connect_timeout), open(i, &cfg))
            .await
            .map_err(|_| anyhow!("timed out"))?
    };
    let (mut stream, mut buf, mut len) = match setup.await {
        Ok(v) => v,
        Err(e) => {
            if shared.failed.get() < 3 {
                eprintln!("client {i}: {e:#}");
            }
            shared.failed.set(shared.failed.get() + 1);
            shared.setup.notify_one();
            return;
        }
    };
    shared.registered.set(shared.registered.get() + 1);
    shared.setup.notify_one();

    let mut last_seq = None;
    loop {
        // Handle every whole frame at hand, then read more.
        let mut pos = 0;
        let now_ns = shared.now_ns();
        loop {
            // RSV1 (permessage-deflate) is taken off before the header is
            // parsed, and put back if the frame is not all here yet.
            let compressed = cfg.deflate && pos < len && buf[pos] & 0x40 != 0;
            if compressed {
                buf[pos] &= !0x40;
            }
            let header = match frame::parse_header(&buf[pos..len], MAX_FRAME) {
                Ok(Some(h)) if pos + h.frame_len() <= len => h,
                Ok(Some(h)) => {
                    if compressed {
                        buf[pos] |= 0x40;
                    }
                    if h.frame_len() > buf.len() {
                        buf.resize(h.frame_len(), 0);
                    }
                    break;
                }
                Ok(None) => {
                    if compressed {
                        buf[pos] |= 0x40;
                    }
                    break;
                }
                Err(_) => {
                    shared.corrupt.set(shared.corrupt.get() + 1);
                    shared
                        .closed_by_server
                        .set(shared.closed_by_server.get() + 1);
                    return;
                }
            };
            let payload = &buf[pos + header.header_len..pos + header.frame_len()];
            match header.opcode {
                OP_TEXT if header.fin && compressed => match shared.inflate(payload) {
                    Some(text) => shared.on_text(&text, now_ns, &mut last_seq),
                    None => shared.corrupt.set(shared.corrupt.get() + 1),
                },
                OP_TEXT if header.fin => match call_id(payload) {
                    Some(id) => {
                        let answer = format!("{{\"type\":\"result\",\"id\":{id},\"value\":{i}}}");
                        let mut out = Vec::with_capacity(answer.len() + 8);
                        frame::encode(OP_TEXT, answer.as_bytes(), Some(mask_for(i)), &mut out);
                        if stream.write_all(&out).await.is_err() {
                            shared
                                .closed_by_server
                                .set(shared.closed_by_server.get() + 1);
                            return;
                        }
                    }
                    None => shared.on_text(payload, now_ns, &mut last_seq),
                },
                OP_TEXT | OP_CONT => {} // fragmented: not a benchmark payload
                OP_PING => {
                    let mut pong = Vec::with_capacity(payload.len() + 6);
                    frame::encode(OP_PONG, payload, Some(mask_for(i)), &mut pong);
                    if stream.write_all(&pong).await.is_err() {
                        shared
                            .closed_by_server
                            .set(shared.closed_by_server.get() + 1);
                        return;
                    }
                }
                OP_CLOSE => {
                    shared
                        .closed_by_server
                        .set(shared.closed_by_server.get() + 1);
                    return;
                }
                _ => {}
            }
            pos += header.frame_len();
        }
        buf.copy_within(pos..len, 0);
        len -= pos;
        match stream.read(&mut buf[len..]).await {
            Ok(0) | Err(_) => {
                shared
                    .closed_by_server
                    .set(shared.closed_by_server.get() + 1);
                return;
            }
            Ok(n) => {
                len += n;
                shared.wire_bytes.set(shared.wire_bytes.get() + n as u64);
            }
        }
    }
}

fn mask_for(i: usize) -> [u8; 4] {
    let m = frame::XorShift::new(i as u64 + 1).next();
    (m as u32).to_le_bytes()
}

/// Connect from source address 127.0.0.(1 + i mod k), upgrade, send
/// `ws register NAME` and wait for the reply. Returns the stream and the
/// bytes already read past the reply.
async fn open(i: usize, cfg: &Args) -> anyhow::Result<(TcpStream, Vec<u8>, usize)> {
    let source = Ipv4Addr::new(127, 0, 0, 1 + (i % usize::from(cfg.sources)) as u8);
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((source, 0)))?;
    // Reset rather than linger in TIME_WAIT when the run ends, so repeated
    // runs do not exhaust the source ports.
    socket.set_zero_linger()?;
    let server = if cfg.spread.is_empty() {
        cfg.server
    } else {
        cfg.spread[i % cfg.spread.len()]
    };
    let mut stream = socket
        .connect(server)
        .await
        .with_context(|| format!("connecting from {source} to {server}"))?;
    stream.set_nodelay(true)?;
    let key = frame::client_key(i as u64 + 1);
    let offer = if cfg.deflate {
        "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
    } else {
        ""
    };
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {0}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nOrigin: http://{0}\r\n{offer}\r\n",
        server
    );
    let mut register = Vec::new();
    frame::encode(
        OP_TEXT,
        format!("ws register {}", cfg.name).as_bytes(),
        Some(mask_for(i)),
        &mut register,
    );
    stream.write_all(request.as_bytes()).await?;

    let mut buf = vec![0u8; CLIENT_BUF];
    let mut len = 0;
    let head_len = loop {
        if let Some(p) = find(&buf[..len], b"\r\n\r\n") {
            break p + 4;
        }
        if len == buf.len() {
            bail!("upgrade response head too long");
        }
        let n = stream.read(&mut buf[len..]).await?;
        if n == 0 {
            bail!("connection closed during the upgrade");
        }
        len += n;
    };
    let head = String::from_utf8_lossy(&buf[..head_len]).into_owned();
    let status = head.lines().next().unwrap_or("");
    if !status.starts_with("HTTP/1.1 101") {
        bail!("upgrade refused: {status}");
    }
    let expect = frame::accept_key(&key);
    let accept_ok = head.lines().any(|l| {
        l.split_once(':').is_some_and(|(n, v)| {
            n.eq_ignore_ascii_case("sec-websocket-accept") && v.trim() == expect
        })
    });
    if !accept_ok {
        bail!("wrong or missing Sec-WebSocket-Accept");
    }
    let deflate_ok = head.lines().any(|l| {
        l.split_once(':').is_some_and(|(n, v)| {
            n.eq_ignore_ascii_case("sec-websocket-extensions")
                && v.trim_start().starts_with("permessage-deflate")
        })
    });
    if cfg.deflate && !deflate_ok {
        bail!("the server declined permessage-deflate");
    }
    buf.copy_within(head_len..len, 0);
    len -= head_len;
    stream.write_all(&register).await?;

    // Read frames until the reply to the registration.
    loop {
        let mut pos = 0;
        while let Some(h) = frame::parse_header(&buf[pos..len], MAX_FRAME)? {
            if pos + h.frame_len() > len {
                if h.frame_len() > buf.len() {
                    buf.resize(h.frame_len(), 0);
                }
                break;
            }
            let payload = &buf[pos + h.header_len..pos + h.frame_len()];
            pos += h.frame_len();
            match h.opcode {
                OP_CLOSE => bail!("closed by the server during registration"),
                OP_TEXT => {
                    if find(payload, b"\"type\":\"reply\"").is_some() {
                        if find(payload, b"\"ok\":true").is_none() {
                            bail!("register refused: {}", String::from_utf8_lossy(payload));
                        }
                        buf.copy_within(pos..len, 0);
                        len -= pos;
                        return Ok((stream, buf, len));
                    }
                    if find(payload, b"\"type\":\"error\"").is_some() {
                        bail!("register refused: {}", String::from_utf8_lossy(payload));
                    }
                }
                _ => {}
            }
        }
        buf.copy_within(pos..len, 0);
        len -= pos;
        let n = stream.read(&mut buf[len..]).await?;
        if n == 0 {
            bail!("connection closed before the register reply");
        }
        len += n;
    }
}

/// A keep-alive HTTP/1.1 client for `POST /api/command`.
struct Http {
    addr: SocketAddr,
    token: Option<String>,
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Http {
    async fn connect(addr: SocketAddr, token: Option<String>) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr} for commands"))?;
        stream.set_nodelay(true)?;
        Ok(Http {
            addr,
            token,
            stream,
            buf: Vec::with_capacity(4096),
        })
    }

    /// Run one command line; true when the server answered `"ok": true`.
    async fn command(&mut self, line: &str) -> anyhow::Result<bool> {
        let (status, v) = self.request(line).await?;
        Ok(status == 200 && v.get("ok") == Some(&serde_json::Value::Bool(true)))
    }

    /// Run one command line: the status and the JSON body (`null` when
    /// the status is not 200).
    async fn request(&mut self, line: &str) -> anyhow::Result<(u16, serde_json::Value)> {
        let auth = self
            .token
            .as_ref()
            .map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        let request = format!(
            "POST /api/command HTTP/1.1\r\nHost: {}\r\nContent-Type: text/plain\r\n{auth}Content-Length: {}\r\n\r\n{line}",
            self.addr,
            line.len()
        );
        self.stream.write_all(request.as_bytes()).await?;
        let (status, body, close) = self.read_response().await?;
        if close {
            self.stream = TcpStream::connect(self.addr).await?;
            self.stream.set_nodelay(true)?;
            self.buf.clear();
        }
        if status != 200 {
            return Ok((status, serde_json::Value::Null));
        }
        let v: serde_json::Value = serde_json::from_slice(&body).context("command reply")?;
        Ok((status, v))
    }

    async fn fill(&mut self) -> anyhow::Result<()> {
        let mut chunk = [0u8; 4096];
        let n = self.stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("server closed the command connection");
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    /// Status, body, and whether the server will close the connection.
    async fn read_response(&mut self) -> anyhow::Result<(u16, Vec<u8>, bool)> {
        let head_len = loop {
            if let Some(p) = find(&self.buf, b"\r\n\r\n") {
                break p + 4;
            }
            if self.buf.len() > 64 * 1024 {
                bail!("response head too long");
            }
            self.fill().await?;
        };
        let head = String::from_utf8_lossy(&self.buf[..head_len]).into_owned();
        let mut lines = head.split("\r\n");
        let status: u16 = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow!("bad status line"))?;
        let mut length = None;
        let mut chunked = false;
        let mut close = false;
        for l in lines {
            if let Some((n, v)) = l.split_once(':') {
                let v = v.trim();
                if n.eq_ignore_ascii_case("content-length") {
                    length = v.parse::<usize>().ok();
                } else if n.eq_ignore_ascii_case("transfer-encoding") {
                    chunked = v.eq_ignore_ascii_case("chunked");
                } else if n.eq_ignore_ascii_case("connection") {
                    close = v.eq_ignore_ascii_case("close");
                }
            }
        }
        self.buf.drain(..head_len);
        let body = if chunked {
            self.read_chunked().await?
        } else {
            let length = length.unwrap_or(0);
            while self.buf.len() < length {
                self.fill().await?;
            }
            self.buf.drain(..length).collect()
        };
        Ok((status, body, close))
    }

    async fn read_chunked(&mut self) -> anyhow::Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(p) = find(&self.buf, b"\r\n") {
                    break p;
                }
                self.fill().await?;
            };
            let size_text = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .context("chunk size")?;
            self.buf.drain(..line_end + 2);
            while self.buf.len() < size + 2 {
                self.fill().await?;
            }
            body.extend(self.buf.drain(..size));
            self.buf.drain(..2);
            if size == 0 {
                return Ok(body);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_is_exact_length_and_parses() {
        let t = payload_text(1234, 64, false);
        assert_eq!(t.len(), 64);
        assert_eq!(parse_seq(t.as_bytes()), Some(1234));
        assert_eq!(parse_seq(b"cmd"), None);
    }

    #[test]
    fn call_id_is_found() {
        let f = br#"{"type":"call","name":"bench","func":"f","arg":"","id":42}"#;
        assert_eq!(call_id(f), Some(42));
        assert_eq!(call_id(br#"{"type":"write","text":"\"id\":1"}"#), None);
    }

    #[test]
    fn write_text_is_found() {
        let f = br#"{"type":"write","name":"bench","text":"seq=3 t=9 xx"}"#;
        assert_eq!(write_text(f), Some(&b"seq=3 t=9 xx"[..]));
        assert_eq!(
            write_text(br#"{"type":"reply","ok":true,"output":"x"}"#),
            None
        );
    }
}
