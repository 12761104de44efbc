//! pw-bench: runs pagewire and its peers side by side and prints the table.
//!
//! For every repetition, scenario and server (interleaved, so that drift in
//! the machine touches every server alike) it starts a fresh server pinned
//! to core 0, waits for its ready line, runs `pw-load` pinned to core 1,
//! stops the server and keeps the load client's JSON record. At the end it
//! prints a markdown table of medians with ratios against the minimal write
//! loop and the best Node.js `ws` mode. Records go to
//! `results/<time>/runs.jsonl` under the bench directory, the table beside
//! them; `--report FILE` renders a table again from such a file.
//!
//! `--smoke` is the quick check for the test suite: pagewire only, 500
//! clients, 10 broadcasts, one run; it fails unless every client registered
//! and every broadcast reached every client.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context as _};
use clap::Parser;
use pagewire_bench::report::{median, percentile, Record};
use pagewire_bench::sys;
use serde::{Deserialize, Serialize};

#[derive(Parser, Debug)]
#[command(about = "Run pagewire and its peers under the same load and tabulate the results")]
struct Args {
    /// The quick check: pagewire only, 500 clients, 10 broadcasts, one run;
    /// exit status 1 unless everything was delivered.
    #[arg(long)]
    smoke: bool,
    /// Servers to run, comma-separated: writeloop, node-send, node-frame,
    /// pagewire.
    #[arg(long, value_delimiter = ',')]
    servers: Option<Vec<String>>,
    /// Scenarios to run, comma-separated (see --list).
    #[arg(long, value_delimiter = ',')]
    scenarios: Option<Vec<String>>,
    /// Repetitions of each repeated scenario (the table shows medians).
    #[arg(long, default_value_t = 3)]
    runs: u32,
    /// List the scenarios and exit.
    #[arg(long)]
    list: bool,
    /// The benchmark directory (bench/ of the repository).
    #[arg(long, default_value = env!("CARGO_MANIFEST_DIR"))]
    bench_dir: PathBuf,
    /// The pagewire binary [default: BENCH_DIR/../target/release/pagewire].
    #[arg(long)]
    pagewire: Option<PathBuf>,
    /// The pw-load and pw-writeloop binaries' directory [default: this
    /// program's own directory].
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Where to write runs.jsonl and table.md [default:
    /// BENCH_DIR/results/UNIX_TIME].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Render the table from an existing runs.jsonl instead of running.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Do not pin the server and the load client to separate cores.
    #[arg(long)]
    no_pin: bool,
    /// Niceness of the server and the load client, each in a session of
    /// its own (negative needs root; without it they keep the default). A
    /// higher priority keeps other work on a shared machine, such as
    /// compilers, from skewing a run.
    #[arg(long, default_value_t = -10, allow_negative_numbers = true)]
    nice: i32,
    /// Before each run, wait until the machine's other load is below this
    /// percentage of one core ...
    #[arg(long, default_value_t = 15.0)]
    quiet_below: f64,
    /// ... for at most this many seconds (then run anyway and note it).
    #[arg(long, default_value_t = 30.0)]
    quiet_timeout: f64,
    /// Run again (up to this many times) a run during which the rest of the
    /// machine used more than a fifth of a core.
    #[arg(long, default_value_t = 1)]
    retry_noisy: u32,
}

/// A server under test.
#[derive(Debug, Clone)]
struct Server {
    id: &'static str,
    program: PathBuf,
    args: Vec<String>,
}

/// One scenario: the arguments `pw-load` gets, and whether it repeats.
#[derive(Debug, Clone)]
struct Scenario {
    id: &'static str,
    about: &'static str,
    load_args: Vec<String>,
    repeat: bool,
    /// Seconds pw-load may take before it is stopped.
    budget_s: u64,
    /// Runs against these servers only.
    only: Option<&'static [&'static str]>,
    /// Arguments the Node peer gets for this scenario, after its mode.
    node_args: &'static [&'static str],
}

/// A record as stored in runs.jsonl: the load client's record plus where
/// it came from.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Run {
    server_id: String,
    scenario_id: String,
    run: u32,
    /// The load client exited 0 (with `--require-all`: everything arrived).
    clean: bool,
    /// The machine was not quiet before the run (see --quiet-below).
    noisy_start: bool,
    record: Record,
}

impl Run {
    /// Whether other work on the machine may have skewed this run: it was
    /// busy before the run, or used over a fifth of a core during it.
    fn noisy(&self) -> bool {
        self.noisy_start
            || self
                .record
                .other_cpu_ms
                .is_some_and(|o| self.record.wall_ms > 0.0 && o / self.record.wall_ms > 0.2)
    }
}

fn scenarios(smoke: bool) -> Vec<Scenario> {
    let s = |id, about, args: &str, repeat, budget_s| Scenario {
        id,
        about,
        load_args: args.split_whitespace().map(String::from).collect(),
        repeat,
        budget_s,
        only: None,
        node_args: &[],
    };
    if smoke {
        return vec![s(
            "smoke",
            "500 clients, 10 broadcasts, everything must arrive",
            "--scenario burst --clients 500 --broadcasts 10 --connect-timeout 20 --drain-timeout 5 --settle 0.2 --require-all",
            false,
            60,
        )];
    }
    vec![
        s("burst-1k", "1,000 clients, 50 broadcasts back to back", "--scenario burst --clients 1000 --broadcasts 50", true, 120),
        s("burst-5k", "5,000 clients, 50 broadcasts back to back", "--scenario burst --clients 5000 --broadcasts 50", true, 180),
        s("burst-10k", "10,000 clients, 50 broadcasts back to back", "--scenario burst --clients 10000 --broadcasts 50", true, 240),
        s("burst-10k-json", "10,000 clients, 50 broadcasts of a 2 KiB JSON-like text, uncompressed", "--scenario burst --clients 10000 --broadcasts 50 --payload 2048 --json", true, 240),
        Scenario {
            only: Some(&["pagewire", "node-send"]),
            node_args: &["--deflate"],
            ..s("burst-10k-deflate", "burst-10k-json with permessage-deflate offered and accepted (pagewire, and Node ws compressing for each client)", "--scenario burst --clients 10000 --broadcasts 50 --payload 2048 --json --deflate", true, 240)
        },
        s("sustained-5k-20", "5,000 clients, 20 broadcasts/s for 10 s", "--scenario sustained --clients 5000 --rate 20 --duration 10", true, 180),
        s("sustained-5k-100", "5,000 clients, 100 broadcasts/s for 10 s", "--scenario sustained --clients 5000 --rate 100 --duration 10", true, 240),
        s("idle-18k", "18,000 idle registered clients", "--scenario idle --clients 18000 --connect-timeout 180", true, 300),
        Scenario {
            only: Some(&["pagewire", "node-send"]),
            node_args: &["--deflate"],
            ..s("idle-18k-deflate", "idle-18k with permessage-deflate offered and accepted (pagewire and Node ws)", "--scenario idle --clients 18000 --connect-timeout 180 --deflate", true, 300)
        },
        s("commands", "POST /api/command on 4 keep-alive connections, 40,000 requests", "--scenario commands --clients 1 --requests 40000 --http-connections 4", true, 120),
        Scenario {
            only: Some(&["pagewire"]),
            ..s("cli", "`pagewire ws write bench x` as a whole process, 30 times (pagewire only)", "", true, 120)
        },
        Scenario {
            only: Some(&["pagewire"]),
            ..s("call-10k", "10,000 clients that answer, 20 `ws call *` back to back (pagewire only)", "--scenario call --clients 10000 --broadcasts 20", true, 300)
        },
        Scenario {
            only: Some(&["pagewire"]),
            ..s("close-18k", "18,000 registered clients of one name, one `ws close *` (pagewire only)", "--scenario close --clients 18000 --connect-timeout 180", true, 300)
        },
        s("saturate-5k", "5,000 clients: highest rate with every broadcast delivered within 500 ms", "--scenario saturate --clients 5000 --rate 10 --duration 4 --drain-timeout 3 --deadline-ms 500", false, 600),
    ]
}

fn servers(args: &Args, bin_dir: &Path) -> Vec<Server> {
    let node_server = args.bench_dir.join("node").join("server.js");
    let pagewire = args
        .pagewire
        .clone()
        .unwrap_or_else(|| args.bench_dir.join("../target/release/pagewire"));
    vec![
        Server {
            id: "writeloop",
            program: bin_dir.join("pw-writeloop"),
            args: vec![],
        },
        Server {
            id: "node-send",
            program: PathBuf::from("node"),
            args: vec![
                node_server.display().to_string(),
                "--mode".into(),
                "send".into(),
            ],
        },
        Server {
            id: "node-frame",
            program: PathBuf::from("node"),
            args: vec![
                node_server.display().to_string(),
                "--mode".into(),
                "frame".into(),
            ],
        },
        Server {
            id: "pagewire",
            program: pagewire,
            args: vec!["serve".into()],
        },
    ]
}

fn main() {
    match real_main() {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("pw-bench: {e:#}");
            std::process::exit(2);
        }
    }
}

/// Set by SIGINT or SIGTERM: servers and load clients run in sessions of
/// their own and would not get the terminal's signal, so the driver stops
/// them itself (`KillOnDrop`) when it sees this.
static STOP: LazyLock<Arc<AtomicBool>> = LazyLock::new(|| Arc::new(AtomicBool::new(false)));

fn stopping() -> anyhow::Result<()> {
    if STOP.load(Ordering::Relaxed) {
        bail!("interrupted");
    }
    Ok(())
}

fn real_main() -> anyhow::Result<i32> {
    let args = Args::parse();
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // A second signal ends the driver at once.
        signal_hook::flag::register_conditional_shutdown(signal, 130, STOP.clone())
            .and_then(|_| signal_hook::flag::register(signal, STOP.clone()))
            .context("installing signal handlers")?;
    }
    if let Some(path) = &args.report {
        let runs = read_runs(path)?;
        print!("{}", render_table(&runs, None));
        return Ok(0);
    }
    let all_scenarios = scenarios(args.smoke);
    if args.list {
        for s in scenarios(false).iter().chain(scenarios(true).iter()) {
            println!("{:<18} {}", s.id, s.about);
        }
        return Ok(0);
    }
    let _ = sys::raise_nofile_limit();
    let bin_dir = match &args.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()?
            .parent()
            .ok_or_else(|| anyhow!("no directory for this program"))?
            .to_path_buf(),
    };
    let wanted_servers: Vec<String> = match (&args.servers, args.smoke) {
        (Some(list), _) => list.clone(),
        (None, true) => vec!["pagewire".into()],
        (None, false) => ["writeloop", "node-send", "node-frame", "pagewire"]
            .map(String::from)
            .to_vec(),
    };
    let known = servers(&args, &bin_dir);
    let mut chosen = Vec::new();
    for id in &wanted_servers {
        let server = known.iter().find(|s| s.id == id).ok_or_else(|| {
            anyhow!("unknown server {id:?} (writeloop, node-send, node-frame, pagewire)")
        })?;
        chosen.push(server.clone());
    }
    let chosen_scenarios: Vec<Scenario> = match &args.scenarios {
        Some(list) => list
            .iter()
            .map(|id| {
                all_scenarios
                    .iter()
                    .find(|s| s.id == id)
                    .cloned()
                    .ok_or_else(|| anyhow!("unknown scenario {id:?} (see --list)"))
            })
            .collect::<anyhow::Result<_>>()?,
        None => all_scenarios.clone(),
    };

    let stamp = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    // The smoke run keeps nothing unless it fails.
    let scratch_out = args.smoke && args.out.is_none();
    let out = match &args.out {
        Some(dir) => dir.clone(),
        None if args.smoke => {
            std::env::temp_dir().join(format!("pw-bench-smoke-{}", std::process::id()))
        }
        None => args.bench_dir.join("results").join(stamp.to_string()),
    };
    fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let runs_path = out.join("runs.jsonl");
    let mut runs_file = File::create(&runs_path)?;
    let logs = out.join("logs");
    fs::create_dir_all(&logs)?;
    let pin = !args.no_pin && Command::new("taskset").arg("-V").output().is_ok();
    if !pin && !args.no_pin {
        eprintln!("taskset not found: running unpinned");
    }
    let place = Placement {
        pin,
        nice: args.nice,
    };
    let machine = machine_info();
    eprintln!("{}", machine.trim_end());
    eprintln!("results: {}", runs_path.display());

    let mut runs = Vec::new();
    let mut failures = 0;
    let reps = if args.smoke { 1 } else { args.runs.max(1) };
    for rep in 1..=reps {
        for scenario in &chosen_scenarios {
            if !scenario.repeat && rep > 1 {
                continue;
            }
            for server in &chosen {
                if STOP.load(Ordering::Relaxed) {
                    bail!("interrupted");
                }
                if scenario.only.is_some_and(|only| !only.contains(&server.id)) {
                    continue;
                }
                let mut attempt = 0;
                loop {
                    attempt += 1;
                    let noisy_start =
                        !args.smoke && !wait_quiet(args.quiet_below, args.quiet_timeout);
                    eprintln!("== {} / {} / run {rep}", server.id, scenario.id);
                    let (record, status) =
                        match run_one(&bin_dir, &logs, rep, server, scenario, place) {
                            Ok(v) => v,
                            Err(e) => {
                                failures += 1;
                                eprintln!("   failed: {e:#}");
                                break;
                            }
                        };
                    let run = Run {
                        server_id: server.id.to_string(),
                        scenario_id: scenario.id.to_string(),
                        run: rep,
                        clean: status.success(),
                        noisy_start,
                        record,
                    };
                    if !args.smoke && run.noisy() && attempt <= args.retry_noisy {
                        eprintln!("   other load on the machine during the run: running it again");
                        continue;
                    }
                    if !run.clean {
                        failures += 1;
                    }
                    writeln!(runs_file, "{}", serde_json::to_string(&run)?)?;
                    runs.push(run);
                    break;
                }
            }
        }
    }
    let _ = fs::remove_dir_all(temp_dir());
    let table = render_table(&runs, Some(&machine));
    fs::write(out.join("table.md"), &table)?;
    println!("{table}");
    if args.smoke {
        let ok = failures == 0 && !runs.is_empty() && runs.iter().all(|r| r.clean);
        if ok && scratch_out {
            let _ = fs::remove_dir_all(&out);
        }
        eprintln!(
            "smoke: {}",
            if ok {
                "ok".to_string()
            } else {
                format!("FAILED (server logs in {})", out.join("logs").display())
            }
        );
        return Ok(if ok { 0 } else { 1 });
    }
    Ok(if failures == 0 { 0 } else { 1 })
}

/// Start `server`, run one `pw-load` against it, stop the server.
fn run_one(
    bin_dir: &Path,
    logs: &Path,
    rep: u32,
    server: &Server,
    scenario: &Scenario,
    place: Placement,
) -> anyhow::Result<(Record, ExitStatus)> {
    let dir = temp_dir();
    fs::create_dir_all(&dir)?;
    let control = dir.join("ctl.sock");
    let _ = fs::remove_file(&control);
    let log_path = logs.join(format!("{}-{}-{rep}.log", server.id, scenario.id));
    let log = File::create(&log_path)?;
    let mut cmd = place.command("0", &server.program);
    cmd.args(&server.args);
    if server.id.starts_with("node") {
        cmd.args(scenario.node_args);
    }
    cmd.arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--control")
        .arg(&control)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {}", server.program.display()))?;
    place.prioritize(child.id());
    let mut guard = KillOnDrop(child);
    let addr = wait_ready(&mut guard.0, &log_path, Duration::from_secs(15))?;

    if scenario.id == "cli" {
        let record = time_cli(server, &control)?;
        return Ok((record, success_status()?));
    }
    let mut load = place.command("1", &bin_dir.join("pw-load"));
    load.arg("--server")
        .arg(&addr)
        .arg("--pid")
        .arg(guard.0.id().to_string())
        .arg("--label")
        .arg(server.id)
        .args(&scenario.load_args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut load = KillOnDrop(load.spawn().context("starting pw-load")?);
    place.prioritize(load.0.id());
    let status = wait_with_budget(&mut load.0, Duration::from_secs(scenario.budget_s))?;
    let mut stdout = String::new();
    if let Some(mut out) = load.0.stdout.take() {
        use std::io::Read as _;
        out.read_to_string(&mut stdout)?;
    }
    if let Some(code) = guard.0.try_wait()? {
        bail!(
            "{} exited during the run ({code}); log: {}",
            server.id,
            log_path.display()
        );
    }
    drop(guard);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .ok_or_else(|| anyhow!("pw-load printed no record ({status})"))?;
    let record: Record = serde_json::from_str(line).context("parsing pw-load's record")?;
    Ok((record, status))
}

/// Time `pagewire --control PATH ws write bench x`, the one-shot CLI, as a
/// whole process (start, connect to the daemon, run, exit), 30 times.
/// Started directly (no `setsid`/`taskset` in front), so that the time is
/// the CLI's own.
fn time_cli(server: &Server, control: &Path) -> anyhow::Result<Record> {
    const TIMES: usize = 30;
    let mut ms = Vec::with_capacity(TIMES);
    for _ in 0..TIMES {
        stopping()?;
        let mut cmd = Command::new(&server.program);
        cmd.arg("--control")
            .arg(control)
            .args(["ws", "write", "bench", "x"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let t = Instant::now();
        let out = cmd.output().context("running the pagewire CLI")?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
        if !out.status.success() {
            bail!(
                "`pagewire ws write` failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    ms.sort_by(f64::total_cmp);
    Ok(Record {
        server: server.id.to_string(),
        scenario: "cli".to_string(),
        latency_p50_ms: percentile(&ms, 50.0),
        latency_p99_ms: percentile(&ms, 99.0),
        latency_max_ms: ms.last().copied(),
        ..Record::default()
    })
}

/// An exit status meaning success, for runs without a load client.
fn success_status() -> anyhow::Result<ExitStatus> {
    Ok(Command::new("true").status()?)
}

/// Where control sockets go (short: a socket path must fit in 108 bytes).
fn temp_dir() -> PathBuf {
    std::env::temp_dir().join(format!("pw-bench-{}", std::process::id()))
}

/// How the server and the load client are started: pinned to a core and
/// at a priority.
#[derive(Debug, Clone, Copy)]
struct Placement {
    pin: bool,
    nice: i32,
}

impl Placement {
    /// A command running `program` on `core`, in a session of its own (see
    /// `prioritize`).
    fn command(self, core: &str, program: &Path) -> Command {
        let mut argv: Vec<std::ffi::OsString> = vec!["setsid".into()];
        if self.pin {
            argv.extend(["taskset".into(), "-c".into(), core.into()]);
        }
        argv.push(program.into());
        let mut c = Command::new(&argv[0]);
        c.args(&argv[1..]);
        c
    }

    /// Give a started process its priority. With the scheduler's autogroups
    /// (one per session) a process's own niceness only counts against its
    /// session; the session's niceness, in /proc/PID/autogroup, is what
    /// counts against other work on the machine.
    fn prioritize(self, pid: u32) {
        if self.nice == 0 {
            return;
        }
        // `setsid` makes the new session just after the process starts;
        // until then /proc/PID/autogroup is this program's own.
        let start = Instant::now();
        while session_of(pid) != Some(pid) {
            if start.elapsed() > Duration::from_secs(2) {
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let _ = fs::write(format!("/proc/{pid}/autogroup"), self.nice.to_string());
        let _ = Command::new("renice")
            .args(["-n", &self.nice.to_string(), "-p", &pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The session id of process `pid` (field 6 of /proc/PID/stat).
fn session_of(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(3)?.parse().ok()
}

/// A child process that is killed when this value is dropped.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Wait for the `pagewire listening on http://ADDR ...` line in the log.
fn wait_ready(child: &mut Child, log: &Path, limit: Duration) -> anyhow::Result<String> {
    let start = Instant::now();
    loop {
        let text = fs::read_to_string(log).unwrap_or_default();
        if let Some(rest) = text
            .lines()
            .find_map(|l| l.split_once("listening on http://").map(|(_, r)| r))
        {
            let addr = rest.split_whitespace().next().unwrap_or("");
            if !addr.is_empty() {
                return Ok(addr.to_string());
            }
        }
        if let Some(code) = child.try_wait()? {
            bail!(
                "server exited before it was ready ({code}):\n{}",
                tail(&text)
            );
        }
        if start.elapsed() > limit {
            bail!("server not ready after {limit:?}:\n{}", tail(&text));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

fn wait_with_budget(child: &mut Child, budget: Duration) -> anyhow::Result<ExitStatus> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        stopping()?;
        if start.elapsed() > budget {
            let _ = child.kill();
            bail!("pw-load still running after {budget:?}; stopped");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Wait until the machine's load, over half a second, is below `percent` of
/// one core. False when it never was within `timeout_s`.
fn wait_quiet(percent: f64, timeout_s: f64) -> bool {
    let start = Instant::now();
    loop {
        if STOP.load(Ordering::Relaxed) {
            return true;
        }
        let before = sys::machine_busy_ms();
        std::thread::sleep(Duration::from_millis(500));
        let after = sys::machine_busy_ms();
        let busy = match (before, after) {
            (Some(b), Some(a)) => (a - b) / 500.0 * 100.0,
            _ => return true,
        };
        if busy < percent {
            return true;
        }
        if start.elapsed().as_secs_f64() > timeout_s {
            eprintln!("   machine still busy ({busy:.0}% of a core); running anyway");
            return false;
        }
    }
}

fn read_runs(path: &Path) -> anyhow::Result<Vec<Run>> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).context("parsing a run"))
        .collect()
}

fn command_output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "not found".to_string())
}

/// The machine and tool versions, as markdown list lines.
fn machine_info() -> String {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map_or("?".to_string(), |kib| {
            format!("{:.0}", kib / 1024.0 / 1024.0)
        });
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    format!(
        "- date: {}\n- machine: {cores} cores ({cpu}), {mem_gib} GiB, Linux {kernel}\n- rustc: {}\n- node: {}, ws {}\n",
        command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        command_output("rustc", &["--version"]),
        command_output("node", &["--version"]),
        ws_version(),
    )
}

fn ws_version() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("node/node_modules/ws/package.json");
    fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v.get("version").and_then(|v| v.as_str()).map(String::from))
        .unwrap_or_else(|| "not installed".into())
}

/// Whether a larger or a smaller value is better.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Better {
    Higher,
    Lower,
    Neither,
}

/// How a row combines its runs.
#[derive(Clone, Copy)]
enum Combine {
    Median,
    Sum,
}

struct Metric {
    scenario: &'static str,
    label: &'static str,
    better: Better,
    combine: Combine,
    decimals: usize,
    get: fn(&Record) -> Option<f64>,
}

fn metrics() -> Vec<Metric> {
    fn m(
        scenario: &'static str,
        label: &'static str,
        better: Better,
        decimals: usize,
        get: fn(&Record) -> Option<f64>,
    ) -> Metric {
        Metric {
            scenario,
            label,
            better,
            combine: Combine::Median,
            decimals,
            get,
        }
    }
    fn lost(scenario: &'static str) -> Metric {
        Metric {
            scenario,
            label: "lost deliveries (all runs)",
            better: Better::Lower,
            combine: Combine::Sum,
            decimals: 0,
            get: |r| Some(r.lost as f64 + r.corrupt as f64),
        }
    }
    use Better::{Higher, Lower, Neither};
    let mut v = Vec::new();
    for s in ["burst-10k-json", "burst-10k-deflate"] {
        v.push(m(s, "delivered msgs/s", Higher, 0, |r| r.msgs_per_s));
        v.push(m(s, "fan-out p50 ms", Lower, 1, |r| r.fanout_p50_ms));
        v.push(m(s, "wire B/delivery", Lower, 0, |r| {
            r.wire_bytes_per_delivery
        }));
        v.push(m(s, "server CPU ms", Lower, 0, |r| r.server_cpu_ms));
        v.push(lost(s));
    }
    for s in ["smoke", "burst-1k", "burst-5k", "burst-10k"] {
        v.push(m(s, "delivered msgs/s", Higher, 0, |r| r.msgs_per_s));
        v.push(m(s, "fan-out p50 ms", Lower, 1, |r| r.fanout_p50_ms));
        v.push(m(s, "fan-out p99 ms", Lower, 1, |r| r.fanout_p99_ms));
        v.push(m(s, "latency p99 ms", Lower, 1, |r| r.latency_p99_ms));
        v.push(m(s, "connect + register ms", Lower, 0, |r| {
            Some(r.connect_ms)
        }));
        v.push(m(s, "server RSS B/conn", Lower, 0, |r| r.bytes_per_conn));
        v.push(m(s, "server CPU ms", Lower, 0, |r| r.server_cpu_ms));
        v.push(lost(s));
    }
    for s in ["sustained-5k-20", "sustained-5k-100"] {
        v.push(m(s, "latency p50 ms", Lower, 1, |r| r.latency_p50_ms));
        v.push(m(s, "latency p99 ms", Lower, 1, |r| r.latency_p99_ms));
        v.push(m(s, "fan-out p99 ms", Lower, 1, |r| r.fanout_p99_ms));
        v.push(m(s, "server CPU ms", Lower, 0, |r| r.server_cpu_ms));
        v.push(lost(s));
    }
    for s in ["idle-18k", "idle-18k-deflate"] {
        v.push(m(s, "registered", Neither, 0, |r| {
            Some(r.registered as f64)
        }));
        v.push(m(s, "connect + register ms", Lower, 0, |r| {
            Some(r.connect_ms)
        }));
        v.push(m(s, "server RSS B/conn", Lower, 0, |r| r.bytes_per_conn));
        v.push(m(s, "server RSS after, MiB", Lower, 1, |r| {
            r.rss_after_kib.map(|k| k as f64 / 1024.0)
        }));
    }
    v.push(m("commands", "requests/s", Higher, 0, |r| r.commands_per_s));
    v.push(m("call-10k", "`ws call` to reply p50 ms", Lower, 1, |r| {
        r.fanout_p50_ms
    }));
    v.push(m("call-10k", "`ws call` to reply p99 ms", Lower, 1, |r| {
        r.fanout_p99_ms
    }));
    v.push(m("call-10k", "answers/s", Higher, 0, |r| r.msgs_per_s));
    v.push(m("call-10k", "server CPU ms", Lower, 0, |r| {
        r.server_cpu_ms
    }));
    v.push(lost("call-10k"));
    v.push(m("close-18k", "`ws close *` to reply ms", Lower, 1, |r| {
        r.fanout_p50_ms
    }));
    v.push(m(
        "close-18k",
        "to the last close frame ms",
        Lower,
        1,
        |r| r.latency_max_ms,
    ));
    v.push(lost("close-18k"));
    v.push(m(
        "cli",
        "`pagewire ws write` process, median ms",
        Lower,
        1,
        |r| r.latency_p50_ms,
    ));
    v.push(m("saturate-5k", "broadcasts/s kept up", Higher, 1, |r| {
        r.rate
    }));
    v.push(m(
        "saturate-5k",
        "latency p99 ms at that rate",
        Lower,
        1,
        |r| r.latency_p99_ms,
    ));
    v
}

const ORDER: [&str; 4] = ["writeloop", "node-send", "node-frame", "pagewire"];

fn label_of(id: &str) -> &str {
    match id {
        "writeloop" => "write loop",
        "node-send" => "Node ws send()",
        "node-frame" => "Node ws frame once",
        other => other,
    }
}

/// The markdown table: one row per scenario metric, one column per server,
/// then ratios.
fn render_table(runs: &[Run], machine: Option<&str>) -> String {
    // (scenario, server) -> records
    let mut by: BTreeMap<(&str, &str), Vec<&Record>> = BTreeMap::new();
    for r in runs {
        by.entry((r.scenario_id.as_str(), r.server_id.as_str()))
            .or_default()
            .push(&r.record);
    }
    let present: Vec<&str> = ORDER
        .iter()
        .copied()
        .filter(|id| runs.iter().any(|r| r.server_id == *id))
        .collect();
    let value = |scenario: &str, server: &str, m: &Metric| -> Option<f64> {
        let recs = by.get(&(scenario, server))?;
        let vals: Vec<f64> = recs.iter().filter_map(|r| (m.get)(r)).collect();
        match m.combine {
            Combine::Median => median(&vals),
            Combine::Sum if vals.is_empty() => None,
            Combine::Sum => Some(vals.iter().sum()),
        }
    };
    let mut out = String::new();
    if let Some(machine) = machine {
        out.push_str(machine);
        out.push('\n');
    }
    let max_runs = runs.iter().map(|r| r.run).max().unwrap_or(0);
    out.push_str(&format!(
        "Medians of up to {max_runs} runs per cell; ratios are pagewire (or, for the Node row, the faster Node mode) over the other server: above 1 means larger.\n\n"
    ));
    out.push_str("| scenario | metric |");
    for id in &present {
        out.push_str(&format!(" {} |", label_of(id)));
    }
    out.push_str(
        " pagewire ÷ write loop | pagewire ÷ best Node | best Node ÷ write loop |\n|---|---|",
    );
    for _ in &present {
        out.push_str("---:|");
    }
    out.push_str("---:|---:|---:|\n");
    let fmt = |v: Option<f64>, decimals: usize| match v {
        Some(v) if v.is_finite() => group_thousands(v, decimals),
        _ => "—".to_string(),
    };
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b != 0.0 && a.is_finite() && b.is_finite() => {
            format!("{:.2}×", a / b)
        }
        _ => "—".to_string(),
    };
    for m in metrics() {
        if !present.iter().any(|id| by.contains_key(&(m.scenario, *id))) {
            continue;
        }
        out.push_str(&format!("| {} | {} |", m.scenario, m.label));
        for id in &present {
            let cell = if by.contains_key(&(m.scenario, *id)) {
                fmt(value(m.scenario, id, &m), m.decimals)
            } else {
                "not run".to_string()
            };
            out.push_str(&format!(" {cell} |"));
        }
        let pw = value(m.scenario, "pagewire", &m);
        let wl = value(m.scenario, "writeloop", &m);
        let node: Option<f64> = {
            let a = value(m.scenario, "node-send", &m);
            let b = value(m.scenario, "node-frame", &m);
            match (a, b, m.better) {
                (Some(a), Some(b), Better::Higher) => Some(a.max(b)),
                (Some(a), Some(b), _) => Some(a.min(b)),
                (a, b, _) => a.or(b),
            }
        };
        let ratios = matches!(m.combine, Combine::Median) && m.better != Better::Neither;
        if ratios {
            out.push_str(&format!(
                " {} | {} | {} |\n",
                ratio(pw, wl),
                ratio(pw, node),
                ratio(node, wl)
            ));
        } else {
            out.push_str(" | | |\n");
        }
    }
    let noisy = runs.iter().filter(|r| r.noisy()).count();
    if noisy > 0 {
        let mut load: Vec<f64> = runs
            .iter()
            .filter_map(|r| {
                let o = r.record.other_cpu_ms?;
                (r.record.wall_ms > 0.0).then(|| o / r.record.wall_ms * 100.0)
            })
            .collect();
        load.sort_by(f64::total_cmp);
        out.push_str(&format!(
            "\nOther work on the machine: {noisy} of {} runs started busy or had the rest of the machine use over 20% of a core during the run (median {:.0}%, max {:.0}% of a core).\n",
            runs.len(),
            median(&load).unwrap_or(0.0),
            load.last().copied().unwrap_or(0.0),
        ));
    }
    let unclean: Vec<String> = runs
        .iter()
        .filter(|r| !r.clean)
        .map(|r| format!("{}/{}#{}", r.server_id, r.scenario_id, r.run))
        .collect();
    if !unclean.is_empty() {
        out.push_str(&format!(
            "\nRuns whose load client reported a failure: {}\n",
            unclean.join(", ")
        ));
    }
    out
}

fn group_thousands(v: f64, decimals: usize) -> String {
    let s = format!("{v:.decimals$}");
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i.to_string(), format!(".{f}")),
        None => (s.clone(), String::new()),
    };
    let (sign, digits) = match int.strip_prefix('-') {
        Some(d) => ("-", d.to_string()),
        None => ("", int),
    };
    let mut grouped = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    format!("{sign}{grouped}{frac}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands() {
        assert_eq!(group_thousands(168000.4, 0), "168,000");
        assert_eq!(group_thousands(52.25, 1), "52.2");
        assert_eq!(group_thousands(999.0, 0), "999");
        assert_eq!(group_thousands(-1234567.0, 0), "-1,234,567");
    }

    #[test]
    fn table_has_ratios() {
        let rec = |server: &str, mps: f64| Run {
            server_id: server.into(),
            scenario_id: "burst-1k".into(),
            run: 1,
            clean: true,
            noisy_start: false,
            record: Record {
                msgs_per_s: Some(mps),
                ..Record::default()
            },
        };
        let runs = vec![
            rec("writeloop", 200.0),
            rec("node-frame", 100.0),
            rec("pagewire", 190.0),
        ];
        let t = render_table(&runs, None);
        let row = t.lines().find(|l| l.contains("delivered msgs/s")).unwrap();
        assert!(
            row.contains("| 200 | 100 | 190 | 0.95× | 1.90× | 0.50× |"),
            "{row}"
        );
    }
}
