//! Actions: the programs named in the configuration that `run NAME` starts.
//!
//! A run is one child process, started directly (never through a shell) as
//! the leader of a process group of its own. Its standard output and error
//! are read line by line as they come: each line becomes a `line` frame for
//! the pages the output goes to and a Monitor line, and the end becomes a
//! `done` frame with the exit status. A run is killed, its whole process
//! group with it, when it outlives its timeout, when the page that started
//! it goes away, or when the daemon stops.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Child;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::command::{quote, Target};
use crate::config::ActionConfig;
use crate::exec::Door;
use crate::hub::{Hub, TargetError};
use crate::protocol::ServerFrame;

/// Most runs at once unless `[limits] max_running_actions` says otherwise.
pub const DEFAULT_MAX_RUNNING: usize = 8;

/// How long a run may take unless its `timeout_secs` says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Longest output line passed on, in bytes; the rest of a longer line is
/// dropped and [`CUT_MARK`] ends what is kept.
pub const MAX_LINE_BYTES: usize = 4096;

/// Ends a line that was cut at [`MAX_LINE_BYTES`].
pub const CUT_MARK: &str = "…";

/// How often a run started by a page checks that the page is still there
/// while the program is silent (each output line checks too).
const LIVENESS_INTERVAL: Duration = Duration::from_millis(500);

/// How long to wait for a killed program to be reaped; SIGKILL cannot be
/// ignored, so this only matters for a process stuck in the kernel.
const REAP_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest piece of user input quoted in an error.
const SHOWN_CHARS: usize = 40;

/// At most this many configured names are listed in an error.
const LISTED_NAMES: usize = 20;

/// Where a run's output goes, besides the Monitor (which gets every line).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// The page that ran it over its own WebSocket, into its first element
    /// (frames without `name`). The run is killed when this page goes away.
    Page(u64),
    /// The connections chosen with `run --to TARGET`; frames carry `name`
    /// when TARGET is a name.
    To(Target),
    /// Nowhere but the Monitor.
    Monitor,
}

impl fmt::Display for Output {
    /// The short form the `ws` listing shows after `to=`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Output::Page(id) => write!(f, "{id}"),
            Output::To(target) => write!(f, "{target}"),
            Output::Monitor => f.write_str("monitor"),
        }
    }
}

/// Who starts a run and where its output goes. The executor builds it,
/// having decided what the door may ask for.
#[derive(Clone, Debug)]
pub struct Requester {
    /// The door the `run` came through.
    pub door: Door,
    /// Where the output goes.
    pub output: Output,
}

/// Why a run was not started. The text is the one-line error every door
/// shows.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    /// No action of that name is configured.
    #[error("run: no action named '{name}' is configured; {configured}")]
    Unknown {
        /// The name asked for, shortened and escaped for display.
        name: String,
        /// The configured names, as a phrase.
        configured: String,
    },
    /// Arguments for an action that takes none.
    #[error(
        "run: action '{0}' takes no arguments (its configuration would need \
         page_args = true); nothing was run"
    )]
    NoArguments(String),
    /// The cap on concurrent runs is reached.
    #[error(
        "run: {0} actions are running already, the most allowed \
         (limits.max_running_actions); try again when one ends"
    )]
    Busy(usize),
    /// The output's connection is not live.
    #[error("run: {0}")]
    Target(#[from] TargetError),
    /// The program could not be started.
    #[error("run: cannot start action '{name}' (program {program}): {error}")]
    Spawn {
        /// The action.
        name: String,
        /// The program, as configured.
        program: String,
        /// What the system said.
        error: io::Error,
    },
    /// The daemon is stopping and starts nothing new.
    #[error("run: the daemon is shutting down")]
    ShuttingDown,
}

/// A snapshot of one run, for the `ws` listing.
#[derive(Clone, Debug)]
pub struct RunningAction {
    /// The run's number (unique while the daemon runs).
    pub run: u64,
    /// The action's name.
    pub action: String,
    /// The program's process id, once it started.
    pub pid: Option<u32>,
    /// The door that started it.
    pub door: Door,
    /// Where its output goes.
    pub output: Output,
    /// Time since it started.
    pub age: Duration,
}

struct Entry {
    action: String,
    pid: Option<u32>,
    door: Door,
    output: Output,
    started: Instant,
}

struct Inner {
    configs: BTreeMap<String, ActionConfig>,
    max_running: usize,
    next_run: AtomicU64,
    running: Mutex<BTreeMap<u64, Entry>>,
    started: AtomicU64,
    finished: AtomicU64,
    refused: AtomicU64,
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl Inner {
    fn running(&self) -> MutexGuard<'_, BTreeMap<u64, Entry>> {
        // Each update is one insert or remove, so a poisoned lock still
        // guards a consistent map.
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The configured actions and the runs in progress; cheap to clone.
#[derive(Clone)]
pub struct Actions {
    inner: Arc<Inner>,
}

impl Default for Actions {
    /// No action configured.
    fn default() -> Self {
        Actions::new(BTreeMap::new(), DEFAULT_MAX_RUNNING)
    }
}

impl fmt::Debug for Actions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Actions")
            .field("configured", &self.inner.configs.keys().collect::<Vec<_>>())
            .field("running", &self.running_count())
            .finish()
    }
}

/// Holds a place among the running actions; leaving it frees the place,
/// whichever way the run ends.
struct Slot {
    inner: Arc<Inner>,
    run: u64,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.inner.running().remove(&self.run);
    }
}

impl Actions {
    /// Actions from the configuration, with at most `max_running` runs at
    /// once (at least one).
    pub fn new(configs: BTreeMap<String, ActionConfig>, max_running: usize) -> Self {
        Actions {
            inner: Arc::new(Inner {
                configs,
                max_running: max_running.max(1),
                next_run: AtomicU64::new(1),
                running: Mutex::new(BTreeMap::new()),
                started: AtomicU64::new(0),
                finished: AtomicU64::new(0),
                refused: AtomicU64::new(0),
                stop: CancellationToken::new(),
                tasks: TaskTracker::new(),
            }),
        }
    }

    /// Runs in progress.
    pub fn running_count(&self) -> usize {
        self.inner.running().len()
    }

    /// Runs started since the daemon started.
    pub fn started_total(&self) -> u64 {
        self.inner.started.load(Relaxed)
    }

    /// Runs ended since the daemon started.
    pub fn finished_total(&self) -> u64 {
        self.inner.finished.load(Relaxed)
    }

    /// Runs refused because the cap was reached.
    pub fn refused_total(&self) -> u64 {
        self.inner.refused.load(Relaxed)
    }

    /// A snapshot of the runs in progress, oldest first.
    pub fn running(&self) -> Vec<RunningAction> {
        self.inner
            .running()
            .iter()
            .map(|(run, e)| RunningAction {
                run: *run,
                action: e.action.clone(),
                pid: e.pid,
                door: e.door,
                output: e.output.clone(),
                age: e.started.elapsed(),
            })
            .collect()
    }

    /// Starts action `name` with the extra arguments `args` for
    /// `requester`, and returns at once with the reply text; the output
    /// follows through `hub` as the program writes it.
    pub fn start(
        &self,
        name: &str,
        args: Vec<String>,
        requester: Requester,
        hub: &Hub,
    ) -> Result<String, ActionError> {
        let inner = &self.inner;
        let Some(config) = inner.configs.get(name) else {
            return Err(ActionError::Unknown {
                name: shown(name),
                configured: self.configured_phrase(),
            });
        };
        if !args.is_empty() && !config.page_args {
            return Err(ActionError::NoArguments(name.to_string()));
        }
        if inner.stop.is_cancelled() {
            return Err(ActionError::ShuttingDown);
        }
        match &requester.output {
            Output::Page(id) | Output::To(Target::Index(id)) if !hub.is_live(*id) => {
                return Err(TargetError::NoSuchIndex(*id).into());
            }
            _ => {}
        }

        let run = {
            let mut running = inner.running();
            if running.len() >= inner.max_running {
                drop(running);
                inner.refused.fetch_add(1, Relaxed);
                hub.monitor().emit(format_args!(
                    "action {name} refused for {}: {} running already",
                    requester.door, inner.max_running
                ));
                return Err(ActionError::Busy(inner.max_running));
            }
            // Numbered under the lock so that refused runs leave no gaps.
            let run = inner.next_run.fetch_add(1, Relaxed);
            running.insert(
                run,
                Entry {
                    action: name.to_string(),
                    pid: None,
                    door: requester.door,
                    output: requester.output.clone(),
                    started: Instant::now(),
                },
            );
            run
        };
        // From here on, returning early frees the place again.
        let slot = Slot {
            inner: inner.clone(),
            run,
        };

        let mut cmd = tokio::process::Command::new(&config.program);
        cmd.args(&config.args)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            // A group of its own, so that killing the group also ends what
            // the program started (a script's children).
            .process_group(0)
            // The operator's token stays with the daemon.
            .env_remove("PAGEWIRE_TOKEN")
            .envs(&config.env)
            .env("PAGEWIRE_ACTION", name)
            .env("PAGEWIRE_RUN", run.to_string());
        if let Output::Page(id) = requester.output {
            cmd.env("PAGEWIRE_CONNECTION", id.to_string());
        }
        if let Some(cwd) = &config.cwd {
            cmd.current_dir(cwd);
        }
        let mut child = cmd.spawn().map_err(|error| {
            hub.monitor().emit(format_args!(
                "action {name}[{run}] failed to start for {}: {error}",
                requester.door
            ));
            ActionError::Spawn {
                name: name.to_string(),
                program: config.program.clone(),
                error,
            }
        })?;
        let pid = child.id();
        if let Some(entry) = inner.running().get_mut(&run) {
            entry.pid = pid;
        }
        inner.started.fetch_add(1, Relaxed);

        let argv: Vec<String> = std::iter::once(config.program.clone())
            .chain(config.args.iter().cloned())
            .chain(args)
            .collect();
        let pid_text = pid.map_or_else(|| "-".to_string(), |p| p.to_string());
        let whereto = match &requester.output {
            Output::Page(id) => format!("connection {id}"),
            Output::To(Target::Index(id)) => format!("connection {id}"),
            Output::To(Target::Name(n)) => format!("connections named '{n}'"),
            Output::To(Target::All) => "every connection".to_string(),
            Output::Monitor => "the Monitor only".to_string(),
        };
        hub.monitor().emit(format_args!(
            "action {name}[{run}] started by {} (pid {pid_text}): {}; output to {whereto}",
            requester.door,
            quote(&argv)
        ));
        let reply = match &requester.output {
            Output::Page(_) => format!(
                "started action '{name}' (run {run}, pid {pid_text}); its output follows here"
            ),
            Output::Monitor => format!(
                "started action '{name}' (run {run}, pid {pid_text}); its output goes to the \
                 Monitor only ('run --to TARGET {name}' sends it to pages)"
            ),
            Output::To(_) => {
                format!("started action '{name}' (run {run}, pid {pid_text}); output to {whereto}")
            }
        };

        let timeout = config
            .timeout_secs
            .map_or(DEFAULT_TIMEOUT, Duration::from_secs);
        let (target, bound) = match requester.output {
            Output::Page(id) => (Some(Target::Index(id)), Some(id)),
            Output::To(t) => (Some(t), None),
            Output::Monitor => (None, None),
        };
        let sink = Sink {
            hub: hub.clone(),
            name: match &target {
                Some(Target::Name(n)) => Some(n.clone()),
                _ => None,
            },
            target,
            bound,
            action: name.to_string(),
            run,
        };
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let ctx = RunCtx {
            sink,
            pid,
            timeout,
            started: Instant::now(),
            stop: inner.stop.clone(),
        };
        inner
            .tasks
            .spawn(supervise(child, stdout, stderr, ctx, slot));
        Ok(reply)
    }

    /// Kills every run (each page is told why) and waits up to `grace` for
    /// them to finish reporting. Nothing new starts afterwards.
    pub async fn shutdown(&self, grace: Duration) {
        self.inner.stop.cancel();
        self.inner.tasks.close();
        let _ = tokio::time::timeout(grace, self.inner.tasks.wait()).await;
    }

    /// The configured names, as the end of the unknown-action error.
    fn configured_phrase(&self) -> String {
        let configs = &self.inner.configs;
        if configs.is_empty() {
            return "none are configured ([actions.NAME] in the configuration file)".into();
        }
        let mut names: Vec<&str> = configs.keys().map(String::as_str).collect();
        let more = names.len().saturating_sub(LISTED_NAMES);
        names.truncate(LISTED_NAMES);
        let mut phrase = format!("configured: {}", names.join(", "));
        if more > 0 {
            phrase.push_str(&format!(" and {more} more"));
        }
        phrase
    }
}

/// User input as shown in an error: short, one line.
fn shown(s: &str) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i == SHOWN_CHARS {
            out.push_str("...");
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Where one run's frames go.
struct Sink {
    hub: Hub,
    /// The connections that get frames; None for the Monitor only.
    target: Option<Target>,
    /// The element named in frames (when the target is a name).
    name: Option<String>,
    /// The page whose going away ends the run.
    bound: Option<u64>,
    action: String,
    run: u64,
}

impl Sink {
    /// Delivers `frame`; false when the page the run is bound to is gone.
    fn send(&self, frame: &ServerFrame<'_>) -> bool {
        let Some(target) = &self.target else {
            return true;
        };
        let delivered = self.hub.deliver(target, &frame.encode());
        match (self.bound, delivered) {
            (None, _) => true,
            // Not queued: closed, closing, or just dropped as a slow
            // consumer. Either way nobody is left to read the output.
            (Some(_), Ok(d)) => d.reached > 0,
            (Some(_), Err(_)) => false,
        }
    }

    /// Passes on one output line; false when the bound page is gone.
    fn line(&self, stream: &str, text: &str) -> bool {
        self.hub.monitor().emit(format_args!(
            "action {}[{}] {stream}: {text}",
            self.action, self.run
        ));
        self.send(&ServerFrame::Line {
            name: self.name.as_deref(),
            action: &self.action,
            stream,
            text,
        })
    }

    fn is_live(&self) -> bool {
        self.bound.map_or(true, |id| self.hub.is_live(id))
    }
}

/// What one run's supervisor needs besides the process.
struct RunCtx {
    sink: Sink,
    pid: Option<u32>,
    timeout: Duration,
    started: Instant,
    stop: CancellationToken,
}

/// How a run ended.
enum End {
    Exited(ExitStatus),
    Lost(io::Error),
    Timeout,
    PageGone,
    Shutdown,
}

/// Streams a run's output, enforces its limits, and reports its end.
async fn supervise(
    mut child: Child,
    stdout: Option<tokio::process::ChildStdout>,
    stderr: Option<tokio::process::ChildStderr>,
    ctx: RunCtx,
    slot: Slot,
) {
    let sink = &ctx.sink;
    let mut out = LineReader::new(stdout);
    let mut err = LineReader::new(stderr);
    let deadline = tokio::time::sleep(ctx.timeout);
    tokio::pin!(deadline);
    let mut tick = tokio::time::interval(LIVENESS_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let end = loop {
        // Biased, limits first: a program that never stops writing must
        // still meet its timeout and its page's departure.
        tokio::select! {
            biased;
            _ = ctx.stop.cancelled() => break End::Shutdown,
            _ = &mut deadline => break End::Timeout,
            _ = tick.tick(), if sink.bound.is_some() => {
                if !sink.is_live() {
                    break End::PageGone;
                }
            }
            line = out.next_line(), if !out.done => {
                if let Some(text) = line {
                    if !sink.line("stdout", &text) {
                        break End::PageGone;
                    }
                }
            }
            line = err.next_line(), if !err.done => {
                if let Some(text) = line {
                    if !sink.line("stderr", &text) {
                        break End::PageGone;
                    }
                }
            }
            // The run is over once the program has exited and everything
            // it wrote has been read.
            status = child.wait(), if out.done && err.done => break match status {
                Ok(status) => End::Exited(status),
                Err(e) => End::Lost(e),
            },
        }
    };
    drop((out, err));
    let (status, message) = match end {
        End::Exited(status) => describe(status),
        End::Lost(e) => (None, format!("lost track of the program: {e}")),
        killed => {
            kill_group(&mut child, ctx.pid);
            let _ = tokio::time::timeout(REAP_TIMEOUT, child.wait()).await;
            let why = match killed {
                End::Timeout => format!("killed after {}s timeout", ctx.timeout.as_secs()),
                End::PageGone => "killed: its page went away".to_string(),
                _ => "killed: the daemon is shutting down".to_string(),
            };
            (None, why)
        }
    };
    sink.hub.monitor().emit(format_args!(
        "action {}[{}] done: {message} after {:.1}s",
        sink.action,
        sink.run,
        ctx.started.elapsed().as_secs_f64()
    ));
    sink.send(&ServerFrame::Done {
        name: sink.name.as_deref(),
        action: &sink.action,
        status,
        message: &message,
    });
    slot.inner.finished.fetch_add(1, Relaxed);
    drop(slot);
}

/// The `done` frame's status and message for a program that ended by
/// itself.
fn describe(status: ExitStatus) -> (Option<i32>, String) {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(code), _) => (Some(code), format!("exited with {code}")),
        (None, Some(sig)) => (None, format!("killed by signal {sig}")),
        (None, None) => (None, format!("ended: {status}")),
    }
}

/// Kills the program and its process group.
fn kill_group(child: &mut Child, pid: Option<u32>) {
    use nix::sys::signal::{killpg, Signal};
    use nix::unistd::Pid;
    // The program leads its own group (process_group(0)), so its pid is the
    // group's id. It has not been reaped yet, so the id cannot have been
    // reused by an unrelated group.
    if let Some(pgid) = pid.and_then(|p| i32::try_from(p).ok()) {
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
    }
    // In case the group could not be signalled, the program at least.
    let _ = child.start_kill();
}

/// Reads one stream of a program line by line, keeping at most
/// [`MAX_LINE_BYTES`] of a line, whatever the program writes.
struct LineReader<R> {
    reader: Option<BufReader<R>>,
    line: Vec<u8>,
    cut: bool,
    /// The stream has ended (or was never there).
    done: bool,
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    fn new(stream: Option<R>) -> Self {
        LineReader {
            done: stream.is_none(),
            reader: stream.map(BufReader::new),
            line: Vec::new(),
            cut: false,
        }
    }

    /// The next line, without its line ending, or None at the end of the
    /// stream. Cancel-safe: a partial line stays here until the rest comes.
    async fn next_line(&mut self) -> Option<String> {
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
    use crate::hub::HubLimits;
    use crate::monitor::Monitor;

    fn action(program: &str, args: &[&str]) -> ActionConfig {
        ActionConfig {
            program: program.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            cwd: None,
            env: BTreeMap::new(),
            timeout_secs: None,
            page_args: false,
        }
    }

    fn operator() -> Requester {
        Requester {
            door: Door::Control,
            output: Output::Monitor,
        }
    }

    fn setup(configs: &[(&str, ActionConfig)], max: usize) -> (Actions, Hub) {
        let map = configs
            .iter()
            .map(|(n, c)| (n.to_string(), c.clone()))
            .collect();
        let hub = Hub::new(HubLimits::default(), Monitor::new());
        (Actions::new(map, max), hub)
    }

    /// Waits for a Monitor line containing `want`, returning every line
    /// seen up to it.
    async fn monitor_until(
        rx: &mut tokio::sync::broadcast::Receiver<Arc<str>>,
        want: &str,
    ) -> Vec<String> {
        let mut seen = Vec::new();
        let found = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let line = rx.recv().await.expect("monitor open");
                seen.push(line.to_string());
                if line.contains(want) {
                    return;
                }
            }
        })
        .await;
        assert!(found.is_ok(), "no {want:?} in {seen:#?}");
        seen
    }

    #[tokio::test]
    async fn unknown_names_list_the_configured_ones() {
        let (none, hub) = setup(&[], 8);
        let e = none
            .start("x", vec![], operator(), &hub)
            .expect_err("unknown");
        assert_eq!(
            e.to_string(),
            "run: no action named 'x' is configured; none are configured \
             ([actions.NAME] in the configuration file)"
        );
        let (some, hub) = setup(&[("b", action("true", &[])), ("a", action("true", &[]))], 8);
        let e = some
            .start("sh\u{7}", vec!["-c".into()], operator(), &hub)
            .expect_err("unknown");
        assert_eq!(
            e.to_string(),
            "run: no action named 'sh\\u{7}' is configured; configured: a, b"
        );
    }

    #[tokio::test]
    async fn arguments_need_page_args() {
        let mut echo = action("echo", &["fixed"]);
        let (actions, hub) = setup(&[("echo", echo.clone())], 8);
        let e = actions
            .start("echo", vec!["; rm -rf /".into()], operator(), &hub)
            .expect_err("refused");
        assert!(e.to_string().contains("takes no arguments"), "{e}");
        assert_eq!(actions.started_total(), 0);

        echo.page_args = true;
        let (actions, hub) = setup(&[("echo", echo)], 8);
        let mut rx = hub.monitor().subscribe();
        actions
            .start(
                "echo",
                vec!["a; b".into(), "$HOME".into()],
                operator(),
                &hub,
            )
            .expect("started");
        // Passed as arguments, untouched by any shell.
        monitor_until(&mut rx, "stdout: fixed a; b $HOME").await;
        monitor_until(&mut rx, "done: exited with 0").await;
    }

    #[tokio::test]
    async fn output_and_status_reach_the_monitor() {
        let script = "echo out; echo err >&2; printf 'no newline'; exit 3";
        let (actions, hub) = setup(&[("s", action("sh", &["-c", script]))], 8);
        let mut rx = hub.monitor().subscribe();
        let reply = actions.start("s", vec![], operator(), &hub).expect("run");
        assert!(reply.contains("Monitor only"), "{reply}");
        let seen = monitor_until(&mut rx, "action s[1] done: exited with 3").await;
        let joined = seen.join("\n");
        assert!(joined.contains("action s[1] stdout: out"), "{joined}");
        assert!(joined.contains("action s[1] stderr: err"), "{joined}");
        assert!(
            joined.contains("action s[1] stdout: no newline"),
            "{joined}"
        );
        // The place is freed just after the done line.
        tokio::time::timeout(Duration::from_secs(5), async {
            while actions.running_count() > 0 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("slot freed");
        assert_eq!((actions.started_total(), actions.finished_total()), (1, 1));
    }

    #[tokio::test]
    async fn timeout_kills_and_cap_refuses() {
        let mut sleeper = action("sleep", &["30"]);
        sleeper.timeout_secs = Some(1);
        let (actions, hub) = setup(&[("sleep", sleeper)], 1);
        let mut rx = hub.monitor().subscribe();
        actions
            .start("sleep", vec![], operator(), &hub)
            .expect("first");
        let running = actions.running();
        assert_eq!(running.len(), 1);
        assert!(running[0].pid.is_some());
        let e = actions
            .start("sleep", vec![], operator(), &hub)
            .expect_err("cap");
        assert!(matches!(e, ActionError::Busy(1)), "{e}");
        assert_eq!(actions.refused_total(), 1);
        monitor_until(&mut rx, "done: killed after 1s timeout").await;
    }

    #[tokio::test]
    async fn spawn_failure_frees_the_place() {
        let (actions, hub) = setup(&[("nope", action("/nonexistent/program", &[]))], 1);
        let e = actions
            .start("nope", vec![], operator(), &hub)
            .expect_err("no program");
        assert!(
            e.to_string()
                .starts_with("run: cannot start action 'nope' (program /nonexistent/program): "),
            "{e}"
        );
        assert_eq!(actions.running_count(), 0);
    }

    #[tokio::test]
    async fn shutdown_kills_runs() {
        let (actions, hub) = setup(&[("sleep", action("sleep", &["30"]))], 8);
        let mut rx = hub.monitor().subscribe();
        actions
            .start("sleep", vec![], operator(), &hub)
            .expect("run");
        actions.shutdown(Duration::from_secs(5)).await;
        monitor_until(&mut rx, "killed: the daemon is shutting down").await;
        assert!(matches!(
            actions.start("sleep", vec![], operator(), &hub),
            Err(ActionError::ShuttingDown)
        ));
    }

    #[tokio::test]
    async fn a_missing_page_is_an_error() {
        let (actions, hub) = setup(&[("t", action("true", &[]))], 8);
        let page = Requester {
            door: Door::Page(9),
            output: Output::Page(9),
        };
        let e = actions.start("t", vec![], page, &hub).expect_err("gone");
        assert_eq!(
            e.to_string(),
            "run: no connection with index 9; 'ws' lists the current ones"
        );
    }

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
