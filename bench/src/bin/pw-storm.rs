//! pw-storm: the restart storm of the pagewire benchmark.
//!
//! Starts a pagewire daemon, connects N ws.js-like clients to it (spread
//! over source addresses 127.0.0.1..127.0.0.k, each registering a name),
//! stops the daemon with SIGTERM or SIGKILL, starts a new one on the same
//! port at once, and measures how long it takes every client to be back and
//! registered, counted from the new daemon's `pagewire listening on` line.
//!
//! A client behaves as client/src/ws.js does after a drop: it waits a random
//! time between half the ceiling and the ceiling, the ceiling starting at
//! 250 ms and doubling per consecutive failure up to 10 s; a connection that
//! lived 5 s or more starts the backoff from the beginning again. A failed
//! attempt (refused, reset, an upgrade answered with something other than
//! 101) is a failure like a drop. On open it sends `ws register NAME` again.
//! It keeps the resume token of its last `hello` frame and presents it when
//! it connects again (`/ws?page=...&resume=TOKEN`), as ws.js does with the
//! tab's sessionStorage, and after a `hello` with a token it reports its
//! visibility (`ws visibility visible`) as ws.js does. The two daemons of a
//! run share a state directory, so the new one honours the old one's
//! tokens; the run counts the clients that got their old index back.
//!
//! Two threads of this process matter: the client thread (tokio
//! current_thread, one task per client) and the supervisor (this thread),
//! which starts and signals the daemon and reads its output. Times on both
//! come from one monotonic clock.
//!
//! Prints one JSON line per run on stdout, a human line per run and a
//! markdown table of medians on stderr.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use clap::{Parser, ValueEnum};
use pagewire_bench::frame::{self, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT};
use pagewire_bench::report::{median, percentile};
use pagewire_bench::sys;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;

/// Largest frame a client accepts from the server.
const MAX_FRAME: usize = 1 << 20;
/// Read buffer of a client.
const CLIENT_BUF: usize = 1024;
/// ws.js: MIN_DELAY, MAX_DELAY and STABLE_MS.
const MIN_DELAY_MS: u64 = 250;
const MAX_DELAY_MS: u64 = 10_000;
const STABLE: Duration = Duration::from_millis(5000);

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum Signal {
    Term,
    Kill,
}

impl Signal {
    fn name(self) -> &'static str {
        match self {
            Signal::Term => "SIGTERM",
            Signal::Kill => "SIGKILL",
        }
    }
}

#[derive(Parser, Debug, Clone)]
#[command(about = "Restart storm: N ws.js-like clients, the daemon stopped and started again")]
struct Args {
    /// The pagewire binary.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/release/pagewire"))]
    pagewire: PathBuf,
    /// WebSocket clients.
    #[arg(long, default_value_t = 15_000)]
    clients: usize,
    /// Source addresses 127.0.0.1..127.0.0.K to spread clients over.
    #[arg(long, default_value_t = 16)]
    sources: u8,
    /// Signals to stop the daemon with, comma-separated; each is one run
    /// per repetition.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "term,kill")]
    signals: Vec<Signal>,
    /// Repetitions (the table shows medians).
    #[arg(long, default_value_t = 3)]
    runs: u32,
    /// A client not back within this many seconds of the new daemon
    /// listening is lost.
    #[arg(long, default_value_t = 30.0)]
    bound: f64,
    /// The target: every client back within this many seconds.
    #[arg(long, default_value_t = 5.0)]
    target: f64,
    /// Connection setups in flight at once while the clients first connect
    /// (the storm itself is not gated: every client follows its backoff).
    #[arg(long, default_value_t = 128)]
    concurrency: usize,
    /// Seconds the clients stay connected before the daemon is stopped
    /// (ws.js starts its backoff afresh after a connection of 5 s).
    #[arg(long, default_value_t = 6.0)]
    settle: f64,
    /// Pin the daemon to core 0 with taskset (run this program on core 1).
    #[arg(long)]
    pin: bool,
    /// Directory for the daemons' logs [default: a temporary directory,
    /// removed unless a run fails].
    #[arg(long)]
    log_dir: Option<PathBuf>,
    /// Exit with status 1 unless every client came back within --target
    /// seconds with none refused and none lost (and, when the daemon gives
    /// resume tokens, every one with its old index).
    #[arg(long)]
    require_target: bool,
    /// Further arguments for `pagewire serve`.
    #[arg(last = true)]
    daemon_args: Vec<String>,
}

/// What one run measured; times in ms.
#[derive(Debug, Clone, Default, Serialize)]
struct StormRecord {
    signal: String,
    clients: u64,
    /// The first connect, all clients registered.
    initial_connect_ms: f64,
    /// The signal to the old daemon's exit.
    old_exit_ms: f64,
    /// The signal to the new daemon's ready line.
    down_ms: f64,
    /// From the new daemon's ready line to 50%, 99% and 100% of clients
    /// registered again (100%: only when every client came back).
    back_p50_ms: Option<f64>,
    back_p99_ms: Option<f64>,
    back_all_ms: Option<f64>,
    /// Clients back within the bound.
    back: u64,
    /// Clients not back within the bound.
    lost: u64,
    /// Failed attempts that began after the new daemon's ready line, by
    /// reason (every one of them a refusal by the new daemon or the
    /// kernel in front of it).
    refused: u64,
    refused_by_reason: std::collections::BTreeMap<String, u64>,
    /// Failed attempts begun before the ready line (expected while no
    /// daemon listened: connection refused).
    failed_while_down: u64,
    /// Attempts that succeeded after the ready line: time from connect to
    /// the register reply, p50 and p99.
    setup_p50_ms: Option<f64>,
    setup_p99_ms: Option<f64>,
    /// Kernel counters over the restart (machine-wide: /proc/net/netstat).
    listen_overflows: Option<u64>,
    listen_drops: Option<u64>,
    syn_retrans: Option<u64>,
    /// CPU the new daemon used from its start to the last client back.
    new_daemon_cpu_ms: Option<f64>,
    /// CPU this process (the clients) used from the signal to the last
    /// client back, and that span: a client thread near 100% of it
    /// would delay what it measures.
    client_cpu_ms: Option<f64>,
    storm_ms: f64,
    /// TCP sockets on the daemon's port just after the old daemon exited,
    /// by state (the kernel's: TIME_WAIT, FIN_WAIT2, ...).
    leftover_sockets: std::collections::BTreeMap<String, u64>,
    /// A client's `hello` frame from the new daemon, as sent.
    hello: Option<String>,
    /// Clients back whose `hello` said `resumed` with their old index, and
    /// those that presented a token and got a fresh index instead.
    resumed: u64,
    not_resumed: u64,
    /// `uptime` just before the run.
    uptime: String,
}

/// State the client tasks share with the supervisor.
struct Shared {
    start: Instant,
    /// Set just before the daemon is signalled: registrations from now on
    /// are clients coming back.
    restarting: AtomicBool,
    registered: AtomicU32,
    initial_failed: AtomicU32,
    back: AtomicU32,
    resumed: AtomicU32,
    not_resumed: AtomicU32,
    events: Mutex<Events>,
}

#[derive(Default)]
struct Events {
    /// When each client was registered again, ns since start.
    back_ns: Vec<u64>,
    /// Failed attempts after the restart began: start time and reason.
    failures: Vec<(u64, &'static str)>,
    /// Successful attempts after the restart began: end time, duration.
    setups: Vec<(u64, u64)>,
    hello: Option<String>,
}

impl Shared {
    fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    fn ns_of(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.start).as_nanos() as u64
    }

    fn events(&self) -> std::sync::MutexGuard<'_, Events> {
        self.events.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// ws.js's wait before the next attempt after `failures` consecutive
/// failures, for a uniform `r` in [0, 1): `round(c/2 + r*c/2)` with the
/// ceiling `c = min(10 s, 250 ms * 2^failures)`.
fn retry_delay_ms(failures: u32, r: f64) -> u64 {
    let ceiling = MIN_DELAY_MS
        .saturating_mul(1u64 << failures.min(32))
        .min(MAX_DELAY_MS) as f64;
    (ceiling / 2.0 + r * ceiling / 2.0).round() as u64
}

/// A uniform number in [0, 1) (as Math.random gives).
fn unit(rng: &mut frame::XorShift) -> f64 {
    (rng.next() >> 11) as f64 / (1u64 << 53) as f64
}

fn main() {
    match real_main() {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("pw-storm: {e:#}");
            std::process::exit(2);
        }
    }
}

fn real_main() -> anyhow::Result<i32> {
    let args = Args::parse();
    if args.sources == 0 || args.clients == 0 {
        bail!("--sources and --clients must be at least 1");
    }
    let limit = sys::raise_nofile_limit().context("raising the open-file limit")?;
    if (limit as usize) < args.clients + 64 {
        bail!(
            "{} clients need about {} descriptors here (and as many in the daemon); the limit is {limit}",
            args.clients,
            args.clients + 64
        );
    }
    if !args.pagewire.exists() {
        bail!(
            "{} not found (build it: cargo build --release)",
            args.pagewire.display()
        );
    }
    let (log_dir, scratch) = match &args.log_dir {
        Some(d) => (d.clone(), false),
        None => (
            std::env::temp_dir().join(format!("pw-storm-{}", std::process::id())),
            true,
        ),
    };
    std::fs::create_dir_all(&log_dir)?;
    let mut records = Vec::new();
    let mut failed_runs = 0;
    for rep in 1..=args.runs.max(1) {
        for &signal in &args.signals {
            match run(&args, signal, rep, &log_dir) {
                Ok(rec) => {
                    println!("{}", serde_json::to_string(&rec)?);
                    eprintln!("{}", human(&rec));
                    records.push(rec);
                }
                Err(e) => {
                    failed_runs += 1;
                    eprintln!("pw-storm: {} run {rep}: {e:#}", signal.name());
                }
            }
        }
    }
    eprintln!("\n{}", table(&args, &records));
    let met = failed_runs == 0
        && records.iter().all(|r| {
            r.lost == 0
                && r.refused == 0
                && r.not_resumed == 0
                && r.back_all_ms.is_some_and(|t| t <= args.target * 1e3)
        });
    if scratch && failed_runs == 0 {
        let _ = std::fs::remove_dir_all(&log_dir);
    } else {
        eprintln!("daemon logs: {}", log_dir.display());
    }
    if failed_runs > 0 {
        return Ok(1);
    }
    Ok(if args.require_target && !met { 1 } else { 0 })
}

/// A daemon process and the time its ready line arrived.
struct Daemon {
    child: Child,
    ready: mpsc::Receiver<Instant>,
}

impl Daemon {
    fn start(
        args: &Args,
        listen: SocketAddr,
        control: &Path,
        state: &Path,
        log: &Path,
    ) -> anyhow::Result<Self> {
        let mut argv: Vec<std::ffi::OsString> = Vec::new();
        if args.pin {
            argv.extend(["taskset".into(), "-c".into(), "0".into()]);
        }
        argv.push(args.pagewire.clone().into());
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .arg("serve")
            .arg("--listen")
            .arg(listen.to_string())
            .arg("--control")
            .arg(control)
            .arg("--state-dir")
            .arg(state)
            .args(&args.daemon_args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", args.pagewire.display()))?;
        let file = Arc::new(Mutex::new(std::fs::File::create(log)?));
        let (tx, ready) = mpsc::channel();
        // Both streams are read to the end, so that the daemon never blocks
        // on a full pipe, and the ready line is timed as it arrives.
        if let Some(out) = child.stdout.take() {
            spawn_reader(out, file.clone(), tx.clone());
        }
        if let Some(err) = child.stderr.take() {
            spawn_reader(err, file, tx);
        }
        Ok(Daemon { child, ready })
    }

    fn wait_ready(&mut self, limit: Duration) -> anyhow::Result<Instant> {
        match self.ready.recv_timeout(limit) {
            Ok(t) => Ok(t),
            Err(_) => {
                if let Some(code) = self.child.try_wait()? {
                    bail!("the daemon exited before it was ready ({code})");
                }
                bail!("the daemon was not ready after {limit:?}")
            }
        }
    }

    fn signal(&mut self, signal: Signal) -> anyhow::Result<()> {
        match signal {
            Signal::Kill => self.child.kill()?,
            Signal::Term => {
                let status = Command::new("kill")
                    .args(["-TERM", &self.child.id().to_string()])
                    .status()?;
                if !status.success() {
                    bail!("kill -TERM failed ({status})");
                }
            }
        }
        Ok(())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_reader<R: std::io::Read + Send + 'static>(
    stream: R,
    log: Arc<Mutex<std::fs::File>>,
    ready: mpsc::Sender<Instant>,
) {
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stream);
        let mut line = Vec::new();
        loop {
            line.clear();
            match lines.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let now = Instant::now();
            if line.windows(13).any(|w| w == b"listening on ") {
                let _ = ready.send(now);
            }
            if let Ok(mut f) = log.lock() {
                let _ = f.write_all(&line);
            }
        }
    });
}

/// A free port on 127.0.0.1 (bound and let go: the daemon binds it next).
fn free_port() -> anyhow::Result<u16> {
    Ok(StdListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Kernel TCP counters of interest, from /proc/net/netstat.
#[derive(Debug, Clone, Copy)]
struct Netstat {
    listen_overflows: u64,
    listen_drops: u64,
    syn_retrans: u64,
}

impl Netstat {
    fn read() -> Option<Self> {
        let text = std::fs::read_to_string("/proc/net/netstat").ok()?;
        let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
        let names = lines.next()?.split_whitespace();
        let values = lines.next()?.split_whitespace();
        let mut n = Netstat {
            listen_overflows: 0,
            listen_drops: 0,
            syn_retrans: 0,
        };
        for (name, value) in names.zip(values).skip(1) {
            let v = value.parse().unwrap_or(0);
            match name {
                "ListenOverflows" => n.listen_overflows = v,
                "ListenDrops" => n.listen_drops = v,
                "TCPSynRetrans" => n.syn_retrans = v,
                _ => {}
            }
        }
        Some(n)
    }
}

/// IPv4 TCP sockets whose local port is `port`, by state.
fn sockets_on_port(port: u16) -> std::collections::BTreeMap<String, u64> {
    let mut by_state = std::collections::BTreeMap::new();
    let Ok(text) = std::fs::read_to_string("/proc/net/tcp") else {
        return by_state;
    };
    for line in text.lines().skip(1) {
        let mut fields = line.split_whitespace().skip(1);
        let (Some(local), Some(_remote), Some(state)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let local_port = local
            .rsplit_once(':')
            .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
        if local_port == Some(port) {
            *by_state.entry(tcp_state(state).to_string()).or_default() += 1;
        }
    }
    by_state
}

/// The name of a state in /proc/net/tcp (include/net/tcp_states.h).
fn tcp_state(hex: &str) -> &'static str {
    match hex {
        "01" => "ESTABLISHED",
        "02" => "SYN_SENT",
        "03" => "SYN_RECV",
        "04" => "FIN_WAIT1",
        "05" => "FIN_WAIT2",
        "06" => "TIME_WAIT",
        "07" => "CLOSE",
        "08" => "CLOSE_WAIT",
        "09" => "LAST_ACK",
        "0A" => "LISTEN",
        "0B" => "CLOSING",
        _ => "other",
    }
}

fn uptime() -> String {
    Command::new("uptime")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// One storm: start, connect everyone, signal, restart, wait for everyone.
fn run(args: &Args, signal: Signal, rep: u32, log_dir: &Path) -> anyhow::Result<StormRecord> {
    let port = free_port()?;
    let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let control = log_dir.join(format!("ctl-{rep}-{signal:?}.sock"));
    let _ = std::fs::remove_file(&control);
    let tag = format!("{}-{rep}", signal.name());
    // One state directory for both daemons of the run (the resume key is
    // kept there), none shared with another run.
    let state = log_dir.join(format!("state-{tag}"));
    let _ = std::fs::remove_dir_all(&state);
    let mut rec = StormRecord {
        signal: signal.name().into(),
        clients: args.clients as u64,
        uptime: uptime(),
        ..StormRecord::default()
    };

    let mut old = Daemon::start(
        args,
        listen,
        &control,
        &state,
        &log_dir.join(format!("{tag}-old.log")),
    )?;
    old.wait_ready(Duration::from_secs(15))?;

    let shared = Arc::new(Shared {
        start: Instant::now(),
        restarting: AtomicBool::new(false),
        registered: AtomicU32::new(0),
        initial_failed: AtomicU32::new(0),
        back: AtomicU32::new(0),
        resumed: AtomicU32::new(0),
        not_resumed: AtomicU32::new(0),
        events: Mutex::new(Events::default()),
    });
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let clients = {
        let shared = shared.clone();
        let cfg = args.clone();
        std::thread::spawn(move || client_thread(cfg, listen, shared, stop_rx))
    };
    let stop_clients = move || {
        let _ = stop_tx.send(());
        clients
            .join()
            .map_err(|_| anyhow!("the client thread panicked"))?
    };

    // Everyone connected and registered.
    let t0 = Instant::now();
    let limit = Duration::from_secs(120);
    while (shared.registered.load(Ordering::Relaxed) as usize) < args.clients {
        if t0.elapsed() > limit {
            stop_clients()?;
            bail!(
                "only {} of {} clients registered within {limit:?} ({} attempts failed)",
                shared.registered.load(Ordering::Relaxed),
                args.clients,
                shared.initial_failed.load(Ordering::Relaxed)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    rec.initial_connect_ms = t0.elapsed().as_secs_f64() * 1e3;
    std::thread::sleep(Duration::from_secs_f64(args.settle));

    // The storm.
    let net_before = Netstat::read();
    let client_cpu_start = sys::cpu_ms(std::process::id());
    shared.restarting.store(true, Ordering::SeqCst);
    let t_signal = Instant::now();
    old.signal(signal)?;
    old.child.wait()?;
    let t_exit = Instant::now();
    drop(old);
    rec.leftover_sockets = sockets_on_port(port);
    let mut new = Daemon::start(
        args,
        listen,
        &control,
        &state,
        &log_dir.join(format!("{tag}-new.log")),
    )?;
    let new_pid = new.child.id();
    let cpu_start = sys::cpu_ms(new_pid);
    let t_listen = new.wait_ready(Duration::from_secs(15))?;
    let deadline = t_listen + Duration::from_secs_f64(args.bound);
    while (shared.back.load(Ordering::Relaxed) as usize) < args.clients && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    let cpu_end = sys::cpu_ms(new_pid);
    rec.storm_ms = t_signal.elapsed().as_secs_f64() * 1e3;
    if let (Some(a), Some(b)) = (client_cpu_start, sys::cpu_ms(std::process::id())) {
        rec.client_cpu_ms = Some(b - a);
    }
    let net_after = Netstat::read();
    if let Some(code) = new.child.try_wait()? {
        stop_clients()?;
        bail!("the new daemon exited during the run ({code})");
    }
    stop_clients()?;
    drop(new);
    let _ = std::fs::remove_file(&control);
    let _ = std::fs::remove_dir_all(&state);

    rec.old_exit_ms = (t_exit - t_signal).as_secs_f64() * 1e3;
    rec.down_ms = (t_listen - t_signal).as_secs_f64() * 1e3;
    let listen_ns = shared.ns_of(t_listen);
    let exit_ns = shared.ns_of(t_exit);
    let bound_ns = shared.ns_of(deadline);
    let ev = shared.events();
    let mut back_ms: Vec<f64> = ev
        .back_ns
        .iter()
        .filter(|&&t| t <= bound_ns)
        .map(|&t| (t as f64 - listen_ns as f64) / 1e6)
        .collect();
    back_ms.sort_by(f64::total_cmp);
    if ev.back_ns.iter().any(|&t| t < exit_ns) {
        bail!("a client registered again before the old daemon had exited");
    }
    rec.back = back_ms.len() as u64;
    rec.lost = args.clients as u64 - rec.back;
    // Percentiles of all clients, not of those that came back: a lost
    // client counts as never.
    let of_all = |p: f64| {
        let rank = ((p / 100.0) * args.clients as f64).ceil() as usize;
        back_ms.get(rank.clamp(1, args.clients) - 1).copied()
    };
    rec.back_p50_ms = of_all(50.0);
    rec.back_p99_ms = of_all(99.0);
    rec.back_all_ms = of_all(100.0);
    // By when the attempt began: this thread may see a failure late, and
    // an attempt made before anything listened was refused by the kernel.
    for &(t, reason) in &ev.failures {
        if t >= listen_ns && t <= bound_ns {
            rec.refused += 1;
            *rec.refused_by_reason.entry(reason.into()).or_default() += 1;
        } else if t < listen_ns {
            rec.failed_while_down += 1;
        }
    }
    let mut setups: Vec<f64> = ev
        .setups
        .iter()
        .filter(|(end, _)| *end >= listen_ns)
        .map(|&(_, d)| d as f64 / 1e6)
        .collect();
    setups.sort_by(f64::total_cmp);
    rec.setup_p50_ms = percentile(&setups, 50.0);
    rec.setup_p99_ms = percentile(&setups, 99.0);
    if let (Some(a), Some(b)) = (net_before, net_after) {
        rec.listen_overflows = Some(b.listen_overflows - a.listen_overflows);
        rec.listen_drops = Some(b.listen_drops - a.listen_drops);
        rec.syn_retrans = Some(b.syn_retrans - a.syn_retrans);
    }
    if let (Some(a), Some(b)) = (cpu_start, cpu_end) {
        rec.new_daemon_cpu_ms = Some(b - a);
    }
    rec.hello = ev.hello.clone();
    rec.resumed = u64::from(shared.resumed.load(Ordering::Relaxed));
    rec.not_resumed = u64::from(shared.not_resumed.load(Ordering::Relaxed));
    Ok(rec)
}

fn client_thread(
    cfg: Args,
    server: SocketAddr,
    shared: Arc<Shared>,
    stop: tokio::sync::oneshot::Receiver<()>,
) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let cfg = Rc::new(cfg);
        let gate = Rc::new(Semaphore::new(cfg.concurrency.max(1)));
        for i in 0..cfg.clients {
            tokio::task::spawn_local(client(i, server, cfg.clone(), shared.clone(), gate.clone()));
        }
        let _ = stop.await;
    });
    // Dropping the runtime drops every client's socket (reset: linger 0).
    Ok(())
}

/// One ws.js-like client: connect, register, hold the connection until it
/// drops, wait out the backoff, again.
async fn client(
    i: usize,
    server: SocketAddr,
    cfg: Rc<Args>,
    shared: Arc<Shared>,
    gate: Rc<Semaphore>,
) {
    let mut rng = frame::XorShift::new(i as u64 + 0x5157_0127);
    let mut failures: u32 = 0;
    let mut came_back = false;
    let mut attempt: u64 = 0;
    // The last hello's token and index (ws.js keeps the token per tab).
    let mut token: Option<String> = None;
    let mut index: Option<u64> = None;
    loop {
        attempt += 1;
        let restarting = shared.restarting.load(Ordering::Relaxed);
        // Only the first connects are gated, to set the run up; the storm
        // is every client on its own schedule, as pages are.
        let permit = if restarting {
            None
        } else {
            gate.acquire().await.ok()
        };
        let begun = shared.now_ns();
        let opened = open(i, attempt, server, &cfg, token.as_deref()).await;
        drop(permit);
        let ended = shared.now_ns();
        match opened {
            Ok((mut stream, buf, len, hello)) => {
                let greeting = hello.as_deref().map(Hello::parse).unwrap_or_default();
                if restarting && !came_back && token.is_some() {
                    let old =
                        greeting.resumed && greeting.index.is_some() && greeting.index == index;
                    let counter = if old {
                        &shared.resumed
                    } else {
                        &shared.not_resumed
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                if greeting.resume.is_some() {
                    token = greeting.resume;
                }
                index = greeting.index;
                if !restarting {
                    shared.registered.fetch_add(1, Ordering::Relaxed);
                } else {
                    let mut ev = shared.events();
                    ev.setups.push((ended, ended - begun));
                    if !came_back {
                        came_back = true;
                        ev.back_ns.push(ended);
                        if ev.hello.is_none() {
                            ev.hello = hello;
                        }
                        drop(ev);
                        shared.back.fetch_add(1, Ordering::Relaxed);
                    }
                }
                let since = Instant::now();
                hold(i, &mut stream, buf, len).await;
                if since.elapsed() >= STABLE {
                    failures = 0;
                }
            }
            Err(reason) => {
                if restarting {
                    shared.events().failures.push((begun, reason));
                } else {
                    shared.initial_failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        let delay = retry_delay_ms(failures, unit(&mut rng));
        failures += 1;
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
}

/// What a client keeps of a `hello` frame.
#[derive(Debug, Default, PartialEq)]
struct Hello {
    index: Option<u64>,
    resume: Option<String>,
    resumed: bool,
}

impl Hello {
    fn parse(text: &str) -> Self {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(text) else {
            return Hello::default();
        };
        Hello {
            index: v.get("index").and_then(serde_json::Value::as_u64),
            resume: v
                .get("resume")
                .and_then(serde_json::Value::as_str)
                .map(str::to_string),
            resumed: v.get("resumed") == Some(&serde_json::Value::Bool(true)),
        }
    }
}

/// `text` percent-encoded as `encodeURIComponent` does.
fn uri_component(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn mask_for(i: usize, attempt: u64) -> [u8; 4] {
    let m = frame::XorShift::new(((i as u64) << 20) ^ attempt).next();
    (m as u32).to_le_bytes()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Connect from 127.0.0.(1 + i mod k), upgrade at `/ws?page=/storm` as
/// ws.js does, send `ws register storm` and wait for its reply. Returns the
/// stream, the bytes read past the reply and the `hello` frame; on failure,
/// the reason.
async fn open(
    i: usize,
    attempt: u64,
    server: SocketAddr,
    cfg: &Args,
    token: Option<&str>,
) -> Result<(TcpStream, Vec<u8>, usize, Option<String>), &'static str> {
    let source = Ipv4Addr::new(127, 0, 0, 1 + (i % usize::from(cfg.sources)) as u8);
    let socket = TcpSocket::new_v4().map_err(|_| "socket")?;
    socket
        .bind(SocketAddr::from((source, 0)))
        .map_err(|_| "bind")?;
    socket.set_zero_linger().map_err(|_| "socket")?;
    let mut stream = socket.connect(server).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused",
        std::io::ErrorKind::ConnectionReset => "reset during connect",
        std::io::ErrorKind::TimedOut => "connect timed out",
        _ => "connect failed",
    })?;
    stream.set_nodelay(true).map_err(|_| "socket")?;
    let key = frame::client_key(((i as u64) << 20) ^ attempt);
    let resume = token.map_or(String::new(), |t| format!("&resume={}", uri_component(t)));
    let request = format!(
        "GET /ws?page=/storm{resume} HTTP/1.1\r\nHost: {server}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nOrigin: http://{server}\r\n\r\n"
    );
    let lost = |_| "closed during the upgrade";
    stream.write_all(request.as_bytes()).await.map_err(lost)?;
    let mut buf = vec![0u8; CLIENT_BUF];
    let mut len = 0;
    let head_len = loop {
        if let Some(p) = find(&buf[..len], b"\r\n\r\n") {
            break p + 4;
        }
        if len == buf.len() {
            return Err("upgrade response head too long");
        }
        match stream.read(&mut buf[len..]).await {
            Ok(0) | Err(_) => return Err("closed during the upgrade"),
            Ok(n) => len += n,
        }
    };
    let head = &buf[..head_len];
    if !head.starts_with(b"HTTP/1.1 101") {
        return Err(match head.get(9..12) {
            Some(b"503") => "503 at the upgrade",
            Some(b"429") => "429 at the upgrade",
            Some(b"403") => "403 at the upgrade",
            _ => "upgrade refused",
        });
    }
    let expect = frame::accept_key(&key);
    let head_text = String::from_utf8_lossy(head);
    let accept_ok = head_text.lines().any(|l| {
        l.split_once(':').is_some_and(|(n, v)| {
            n.eq_ignore_ascii_case("sec-websocket-accept") && v.trim() == expect
        })
    });
    if !accept_ok {
        return Err("wrong Sec-WebSocket-Accept");
    }
    buf.copy_within(head_len..len, 0);
    len -= head_len;
    let mut register = Vec::new();
    frame::encode(
        OP_TEXT,
        b"ws register storm",
        Some(mask_for(i, attempt)),
        &mut register,
    );
    stream
        .write_all(&register)
        .await
        .map_err(|_| "closed before the register reply")?;

    let mut hello = None;
    loop {
        let mut pos = 0;
        while let Some(h) =
            frame::parse_header(&buf[pos..len], MAX_FRAME).map_err(|_| "bad frame")?
        {
            if pos + h.frame_len() > len {
                if h.frame_len() > buf.len() {
                    buf.resize(h.frame_len(), 0);
                }
                break;
            }
            let payload = &buf[pos + h.header_len..pos + h.frame_len()];
            pos += h.frame_len();
            match h.opcode {
                OP_CLOSE => return Err("closed before the register reply"),
                OP_TEXT if find(payload, b"\"type\":\"hello\"").is_some() => {
                    // ws.js reports its visibility to a daemon that gives
                    // tokens, right after the hello.
                    if find(payload, b"\"resume\":").is_some() {
                        let mut report = Vec::new();
                        frame::encode(
                            OP_TEXT,
                            b"ws visibility visible",
                            Some(mask_for(i, attempt)),
                            &mut report,
                        );
                        stream
                            .write_all(&report)
                            .await
                            .map_err(|_| "closed before the register reply")?;
                    }
                    hello = Some(String::from_utf8_lossy(payload).into_owned());
                }
                OP_TEXT if find(payload, b"\"type\":\"reply\"").is_some() => {
                    if find(payload, b"\"ok\":true").is_none() {
                        return Err("register refused");
                    }
                    buf.copy_within(pos..len, 0);
                    len -= pos;
                    return Ok((stream, buf, len, hello));
                }
                OP_TEXT if find(payload, b"\"type\":\"error\"").is_some() => {
                    return Err("register refused");
                }
                _ => {}
            }
        }
        buf.copy_within(pos..len, 0);
        len -= pos;
        match stream.read(&mut buf[len..]).await {
            Ok(0) | Err(_) => return Err("closed before the register reply"),
            Ok(n) => len += n,
        }
    }
}

/// Hold an open connection: answer pings, answer a close with a close (as
/// a browser does), return when the connection ends.
async fn hold(i: usize, stream: &mut TcpStream, mut buf: Vec<u8>, mut len: usize) {
    loop {
        let mut pos = 0;
        loop {
            let h = match frame::parse_header(&buf[pos..len], MAX_FRAME) {
                Ok(Some(h)) if pos + h.frame_len() <= len => h,
                Ok(Some(h)) => {
                    if h.frame_len() > buf.len() {
                        buf.resize(h.frame_len(), 0);
                    }
                    break;
                }
                Ok(None) => break,
                Err(_) => return,
            };
            let payload = &buf[pos + h.header_len..pos + h.frame_len()];
            let reply = match h.opcode {
                OP_PING => Some(OP_PONG),
                OP_CLOSE => Some(OP_CLOSE),
                _ => None,
            };
            if let Some(op) = reply {
                let echoed = if op == OP_CLOSE {
                    payload.get(..2).unwrap_or(&[])
                } else {
                    payload
                };
                let mut out = Vec::with_capacity(echoed.len() + 6);
                frame::encode(op, echoed, Some(mask_for(i, 0)), &mut out);
                if stream.write_all(&out).await.is_err() || op == OP_CLOSE {
                    return;
                }
            }
            pos += h.frame_len();
        }
        buf.copy_within(pos..len, 0);
        len -= pos;
        match stream.read(&mut buf[len..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => len += n,
        }
    }
}

fn ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.0}"))
}

fn human(r: &StormRecord) -> String {
    format!(
        "{}: {} clients; down {:.0} ms (old daemon gone after {:.0} ms); back 50% {} ms, 99% {} ms, 100% {} ms after listening; back {} ({} with their old index, {} not), lost {}, refused {} {:?}; setup p50/p99 {}/{} ms; listen overflows {:?}, SYN retransmits {:?}; client CPU {} of {:.0} ms; left on the port {:?}; load: {}",
        r.signal,
        r.clients,
        r.down_ms,
        r.old_exit_ms,
        ms(r.back_p50_ms),
        ms(r.back_p99_ms),
        ms(r.back_all_ms),
        r.back,
        r.resumed,
        r.not_resumed,
        r.lost,
        r.refused,
        r.refused_by_reason,
        ms(r.setup_p50_ms),
        ms(r.setup_p99_ms),
        r.listen_overflows,
        r.syn_retrans,
        ms(r.client_cpu_ms),
        r.storm_ms,
        r.leftover_sockets,
        r.uptime,
    )
}

/// Medians per signal, with each run's value beside them.
fn table(args: &Args, records: &[StormRecord]) -> String {
    type Get = fn(&StormRecord) -> Option<f64>;
    let rows: [(&str, Get); 12] = [
        ("back 50% ms", |r| r.back_p50_ms),
        ("back 99% ms", |r| r.back_p99_ms),
        ("back 100% ms", |r| r.back_all_ms),
        ("refused", |r| Some(r.refused as f64)),
        ("lost", |r| Some(r.lost as f64)),
        ("back with their old index (resume token)", |r| {
            Some(r.resumed as f64)
        }),
        ("signal to new daemon listening ms", |r| Some(r.down_ms)),
        ("failed attempts while down", |r| {
            Some(r.failed_while_down as f64)
        }),
        ("setup p99 ms (after listening)", |r| r.setup_p99_ms),
        ("listen overflows", |r| r.listen_overflows.map(|v| v as f64)),
        ("SYN retransmits", |r| r.syn_retrans.map(|v| v as f64)),
        ("new daemon CPU ms", |r| r.new_daemon_cpu_ms),
    ];
    let mut out = format!(
        "restart storm, {} clients, {} run(s) per signal, lost = not back within {} s\n\n| metric | signal | median | runs |\n|---|---|---:|---|\n",
        args.clients, args.runs, args.bound
    );
    for (label, get) in rows {
        for signal in &args.signals {
            let values: Vec<Option<f64>> = records
                .iter()
                .filter(|r| r.signal == signal.name())
                .map(get)
                .collect();
            let finite: Vec<f64> = values.iter().flatten().copied().collect();
            let med = if finite.len() == values.len() {
                median(&finite)
            } else {
                None // a run without the value (not everyone back): no median
            };
            let runs: Vec<String> = values.iter().map(|v| ms(*v)).collect();
            out.push_str(&format!(
                "| {label} | {} | {} | {} |\n",
                signal.name(),
                ms(med),
                runs.join(" / ")
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_ws_js_schedule() {
        // Ceilings 250, 500, 1000, ... 8000, then 10 s; waits in [c/2, c].
        assert_eq!(retry_delay_ms(0, 0.0), 125);
        assert_eq!(retry_delay_ms(0, 0.999_999), 250);
        assert_eq!(retry_delay_ms(1, 0.5), 375);
        assert_eq!(retry_delay_ms(5, 0.0), 4000);
        assert_eq!(retry_delay_ms(6, 0.0), 5000);
        assert_eq!(retry_delay_ms(40, 0.0), 5000);
        assert_eq!(retry_delay_ms(40, 0.999_999), 10_000);
    }

    #[test]
    fn hello_and_token() {
        let h = Hello::parse(
            r#"{"type":"hello","index":7,"version":1,"resume":"7.q3X-p0_f","resumed":true}"#,
        );
        assert_eq!(h.index, Some(7));
        assert_eq!(h.resume.as_deref(), Some("7.q3X-p0_f"));
        assert!(h.resumed);
        assert_eq!(
            Hello::parse(r#"{"type":"hello","index":3,"version":1}"#).resume,
            None
        );
        assert_eq!(uri_component("7.a+b/c=_-"), "7.a%2Bb%2Fc%3D_-");
    }

    #[test]
    fn unit_is_in_range() {
        let mut rng = frame::XorShift::new(7);
        for _ in 0..10_000 {
            let u = unit(&mut rng);
            assert!((0.0..1.0).contains(&u));
        }
    }

    #[test]
    fn netstat_is_readable() {
        assert!(Netstat::read().is_some());
    }
}
