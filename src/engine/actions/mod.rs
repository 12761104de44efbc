//! Actions: the programs named in the configuration that `run NAME` starts.
//!
//! A run is one program, started directly (never through a shell) under a
//! keeper process of its own ([`keeper`]): every process the program
//! starts, however it detaches, stays in the keeper's subtree, and the
//! keeper exits only once all of them are gone. The program's standard
//! output and error are read line by line as they come: each line becomes a
//! `line` frame for the pages the output goes to and a Monitor line, and
//! the end becomes a `done` frame with the exit status. A run ends when the
//! program has exited and its output is closed, or is killed (everything
//! in it) when it outlives its timeout, when the page that started it goes
//! away, or when the daemon stops. Its place among the running actions is
//! given back only when its keeper has exited, that is when no process of
//! the run is left.
//!
//! The program's environment is built, not inherited ([`environment`]),
//! and its output waits for room in its pages' outgoing queues ([`Flow`]):
//! a program that writes faster than its page reads is held back (its pipe
//! fills up and it blocks), instead of getting its page closed as a slow
//! consumer.
//!
//! The daemon starts no child process but keepers. It is a child subreaper
//! too: should a keeper die before its run (killed from outside), what is
//! left of the run becomes the daemon's, and is killed and reaped
//! ([`sweep`]).

pub mod keeper;

use std::collections::{BTreeMap, HashMap, HashSet};
#[cfg(test)]
use std::ffi::OsStr;
use std::ffi::OsString;
use std::fmt;
use std::io;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};

use anyhow::bail;
use bytes::Bytes;
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader, Lines};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::process::Child;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::base::command::{quote, Target};
use crate::base::door::Door;
use crate::base::protocol::ServerFrame;
use crate::engine::hub::{Hub, OutboxLimits, TargetError};
use keeper::Report;

/// Most runs at once unless `[limits] max_running_actions` says otherwise.
pub(crate) const DEFAULT_MAX_RUNNING: usize = 8;

/// How long a run may take unless its `timeout_secs` says otherwise.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Longest output line passed on, in bytes; the rest of a longer line is
/// dropped and [`CUT_MARK`] ends what is kept.
pub(crate) const MAX_LINE_BYTES: usize = 4096;

/// Ends a line that was cut at [`MAX_LINE_BYTES`].
pub(crate) const CUT_MARK: &str = "…";

/// Variables of the daemon's environment every program gets (when the
/// daemon has them), besides those that start with [`INHERITED_PREFIX`].
pub(crate) const INHERITED_ENV: [&str; 7] =
    ["PATH", "HOME", "USER", "LOGNAME", "LANG", "TZ", "TMPDIR"];

/// The locale's variables (`LC_ALL`, `LC_TIME`, ...) are passed on too.
pub(crate) const INHERITED_PREFIX: &str = "LC_";

/// How long output sent to other connections (`run --to`) waits for room
/// in their queues before it is sent anyway; see [`Pacer`].
pub(crate) const ROOM_PATIENCE: Duration = Duration::from_secs(5);

/// The keeper is this very binary, started again (see [`keeper`]). Through
/// /proc it is the file the daemon runs, even if the path it was started
/// from now holds another version.
const KEEPER_EXE: &str = "/proc/self/exe";

/// How long a keeper may take to start the program and say so.
const KEEPER_START_TIMEOUT: Duration = Duration::from_secs(10);

/// How often a run started by a page checks that the page is still there
/// while the program is silent (each output line checks too).
const LIVENESS_INTERVAL: Duration = Duration::from_millis(500);

/// How long the `done` of a killed run waits for its keeper to have killed
/// and reaped everything; SIGKILL cannot be ignored, so this only matters
/// for a process stuck in the kernel or not the daemon's to kill.
const REAP_TIMEOUT: Duration = Duration::from_secs(5);

/// Pause between two rounds of a [`sweep`].
const SWEEP_ROUND: Duration = Duration::from_millis(5);

/// The longest piece of user input quoted in an error.
const SHOWN_CHARS: usize = 40;

/// At most this many configured names are listed in an error.
const LISTED_NAMES: usize = 20;

/// `[actions.NAME]`: a program a page may run with `run NAME`.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub(crate) struct ActionConfig {
    /// The program (a path, or a name looked up in PATH).
    pub(crate) program: String,
    /// Its arguments, before any the page passes.
    #[serde(default)]
    pub(crate) args: Vec<String>,
    /// Working directory.
    pub(crate) cwd: Option<PathBuf>,
    /// Environment variables set for the program, besides the few it
    /// always gets (see `actions::environment`).
    #[serde(default)]
    pub(crate) env: BTreeMap<String, String>,
    /// Variables of the daemon's own environment passed on to the program
    /// as they are (by default it gets only PATH, HOME, the locale and a
    /// few more).
    #[serde(default)]
    pub(crate) inherit_env: Vec<String>,
    /// Seconds before it is killed (default 60).
    pub(crate) timeout_secs: Option<u64>,
    /// Whether `run NAME ARG...` may append arguments (default false). The
    /// name says who it is mostly about: with it, a page chooses arguments.
    #[serde(default)]
    pub(crate) page_args: bool,
    /// Whether those arguments may start with `-` (default false), so that
    /// a page cannot pass options the program would act on.
    #[serde(default)]
    pub(crate) page_dash_args: bool,
}

impl ActionConfig {
    /// Checks one `[actions.NAME]` table: its name and its settings.
    pub(crate) fn check(&self, name: &str) -> anyhow::Result<()> {
        crate::base::command::valid_name(name).map_err(|e| anyhow::anyhow!("actions: {e}"))?;
        if name.starts_with('-') {
            // `run -x` reads as an option, so such an action could never run.
            bail!("actions: invalid name '{name}': an action's name does not start with '-'");
        }
        if self.program.is_empty() {
            bail!("actions.{name}: program must not be empty");
        }
        if self.timeout_secs == Some(0) {
            bail!("actions.{name}: timeout_secs must be positive");
        }
        if self.page_dash_args && !self.page_args {
            bail!("actions.{name}: page_dash_args = true needs page_args = true");
        }
        for var in &self.inherit_env {
            if var.is_empty() || var.contains(['=', '\0']) {
                bail!("actions.{name}: inherit_env: {var:?} is not a variable name");
            }
            if var == "PAGEWIRE_TOKEN" {
                bail!(
                    "actions.{name}: inherit_env may not name PAGEWIRE_TOKEN: the operator's \
                     token stays with the daemon"
                );
            }
        }
        Ok(())
    }
}

/// Where a run's output goes, besides the Monitor (which gets every line).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Output {
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
pub(crate) struct Requester {
    /// The door the `run` came through.
    pub(crate) door: Door,
    /// Where the output goes.
    pub(crate) output: Output,
}

/// Why a run was not started. The text is the one-line error every door
/// shows.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ActionError {
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
    /// An argument that looks like an option, for an action that does not
    /// take them.
    #[error(
        "run: action '{name}' takes no argument that starts with '-' (got '{arg}'; \
         its configuration would need page_dash_args = true); nothing was run"
    )]
    DashArgument {
        /// The action.
        name: String,
        /// The first such argument, shortened and escaped for display.
        arg: String,
    },
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
    /// The keeper process could not be started, or failed.
    #[error("run: cannot start action '{name}': its keeper process {why}")]
    Keeper {
        /// The action.
        name: String,
        /// What went wrong.
        why: String,
    },
    /// The daemon is stopping and starts nothing new.
    #[error("run: the daemon is shutting down")]
    ShuttingDown,
}

/// A snapshot of one run, for the `ws` listing.
#[derive(Clone, Debug)]
pub(crate) struct RunningAction {
    /// The run's number (unique while the daemon runs).
    pub(crate) run: u64,
    /// The action's name.
    pub(crate) action: String,
    /// The program's process id, once it started.
    pub(crate) pid: Option<u32>,
    /// The door that started it.
    pub(crate) door: Door,
    /// Where its output goes.
    pub(crate) output: Output,
    /// Time since it started.
    pub(crate) age: Duration,
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
    /// Process ids of the live keepers: the daemon's only children. Held
    /// while a keeper is started and while a [`sweep`] looks for other
    /// children, so that a sweep never mistakes a new keeper for a stray.
    keepers: Mutex<HashSet<u32>>,
    /// The output flow of each page that runs actions, shared by its runs.
    flows: Mutex<HashMap<u64, Weak<Flow>>>,
    started: AtomicU64,
    finished: AtomicU64,
    refused: AtomicU64,
    stop: CancellationToken,
    tasks: TaskTracker,
}

/// Locks `m`; every update under these locks is one insert or remove, so a
/// poisoned lock still guards a consistent value.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Inner {
    fn running(&self) -> MutexGuard<'_, BTreeMap<u64, Entry>> {
        lock(&self.running)
    }

    /// The flow of page `id`'s runs, made if none is live.
    fn page_flow(&self, id: u64, limits: OutboxLimits) -> Arc<Flow> {
        let mut flows = lock(&self.flows);
        if let Some(flow) = flows.get(&id).and_then(Weak::upgrade) {
            return flow;
        }
        flows.retain(|_, f| f.strong_count() > 0);
        let flow = Flow::new(limits);
        flows.insert(id, Arc::downgrade(&flow));
        flow
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

/// The environment of action `name`'s program, run number `run`, started
/// by page `page` (if a page): from the daemon's environment `daemon`, only
/// [`INHERITED_ENV`], the `LC_*` variables and those the action's
/// `inherit_env` names; then the action's `env`; then `PAGEWIRE_ACTION`,
/// `PAGEWIRE_RUN` and `PAGEWIRE_CONNECTION`. Later entries win.
pub(crate) fn environment(
    config: &ActionConfig,
    name: &str,
    run: u64,
    page: Option<u64>,
    daemon: impl IntoIterator<Item = (OsString, OsString)>,
) -> BTreeMap<OsString, OsString> {
    let mut env: BTreeMap<OsString, OsString> = daemon
        .into_iter()
        .filter(|(key, _)| {
            let key = key.to_string_lossy();
            INHERITED_ENV.contains(&key.as_ref())
                || key.starts_with(INHERITED_PREFIX)
                || config.inherit_env.iter().any(|v| *v == key)
        })
        .collect();
    for (key, value) in &config.env {
        env.insert(key.into(), value.into());
    }
    env.insert("PAGEWIRE_ACTION".into(), name.into());
    env.insert("PAGEWIRE_RUN".into(), run.to_string().into());
    if let Some(id) = page {
        env.insert("PAGEWIRE_CONNECTION".into(), id.to_string().into());
    }
    env
}

/// Refuses arguments the action does not take: any without `page_args`,
/// and with it, any that starts with `-` without `page_dash_args`.
fn check_arguments(name: &str, config: &ActionConfig, args: &[String]) -> Result<(), ActionError> {
    if args.is_empty() {
        return Ok(());
    }
    if !config.page_args {
        return Err(ActionError::NoArguments(name.to_string()));
    }
    if !config.page_dash_args {
        if let Some(arg) = args.iter().find(|a| a.starts_with('-')) {
            return Err(ActionError::DashArgument {
                name: name.to_string(),
                arg: shown(arg),
            });
        }
    }
    Ok(())
}

/// Makes the daemon a child subreaper, once: what is left of a run whose
/// keeper died comes to the daemon, to be swept, rather than to init.
fn become_subreaper(hub: &Hub) {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
            hub.monitor().emit(format_args!(
                "actions: cannot become a child subreaper ({e}); the processes of a run \
                 whose keeper is killed from outside would be left to init"
            ));
        }
    });
}

impl Actions {
    /// Actions from the configuration, with at most `max_running` runs at
    /// once (at least one).
    pub(crate) fn new(configs: BTreeMap<String, ActionConfig>, max_running: usize) -> Self {
        Actions {
            inner: Arc::new(Inner {
                configs,
                max_running: max_running.max(1),
                next_run: AtomicU64::new(1),
                running: Mutex::new(BTreeMap::new()),
                keepers: Mutex::new(HashSet::new()),
                flows: Mutex::new(HashMap::new()),
                started: AtomicU64::new(0),
                finished: AtomicU64::new(0),
                refused: AtomicU64::new(0),
                stop: CancellationToken::new(),
                tasks: TaskTracker::new(),
            }),
        }
    }

    /// Runs in progress (a run is in progress until its last process is
    /// gone).
    pub(crate) fn running_count(&self) -> usize {
        self.inner.running().len()
    }

    /// Runs started since the daemon started.
    pub(crate) fn started_total(&self) -> u64 {
        self.inner.started.load(Relaxed)
    }

    /// Runs ended since the daemon started.
    pub(crate) fn finished_total(&self) -> u64 {
        self.inner.finished.load(Relaxed)
    }

    /// Runs refused because the cap was reached.
    pub(crate) fn refused_total(&self) -> u64 {
        self.inner.refused.load(Relaxed)
    }

    /// A snapshot of the runs in progress, oldest first.
    pub(crate) fn running(&self) -> Vec<RunningAction> {
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
    /// `requester`, and returns the reply text once the program runs; the
    /// output follows through `hub` as the program writes it.
    pub(crate) async fn start(
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
        check_arguments(name, config, &args)?;
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

        become_subreaper(hub);
        let page = match requester.output {
            Output::Page(id) => Some(id),
            _ => None,
        };
        let env = environment(config, name, run, page, std::env::vars_os());
        let mut process = match RunProcess::spawn(inner, config, &args, env).await {
            Ok(process) => process,
            Err(e) => {
                let e = match e {
                    SpawnError::Keeper(why) => ActionError::Keeper {
                        name: name.to_string(),
                        why,
                    },
                    SpawnError::Program(error) => ActionError::Spawn {
                        name: name.to_string(),
                        program: config.program.clone(),
                        error,
                    },
                };
                hub.monitor().emit(format_args!(
                    "action {name}[{run}] failed to start for {}: {e}",
                    requester.door
                ));
                return Err(e);
            }
        };
        let pid = process.pid;
        if let Some(entry) = inner.running().get_mut(&run) {
            entry.pid = Some(pid);
        }
        inner.started.fetch_add(1, Relaxed);

        let argv: Vec<String> = std::iter::once(config.program.clone())
            .chain(config.args.iter().cloned())
            .chain(args)
            .collect();
        let whereto = match &requester.output {
            Output::Page(id) => format!("connection {id}"),
            Output::To(Target::Index(id)) => format!("connection {id}"),
            Output::To(Target::Name(n)) => format!("connections named '{n}'"),
            Output::To(Target::All) => "every connection".to_string(),
            Output::Monitor => "the Monitor only".to_string(),
        };
        hub.monitor().emit(format_args!(
            "action {name}[{run}] started by {} (pid {pid}): {}; output to {whereto}",
            requester.door,
            quote(&argv)
        ));
        let reply = match &requester.output {
            Output::Page(_) => {
                format!("started action '{name}' (run {run}, pid {pid}); its output follows here")
            }
            Output::Monitor => format!(
                "started action '{name}' (run {run}, pid {pid}); its output goes to the \
                 Monitor only ('run --to TARGET {name}' sends it to pages)"
            ),
            Output::To(_) => {
                format!("started action '{name}' (run {run}, pid {pid}); output to {whereto}")
            }
        };

        let timeout = config
            .timeout_secs
            .map_or(DEFAULT_TIMEOUT, Duration::from_secs);
        let limits = hub.limits().outbox;
        let (target, bound, pacer) = match requester.output {
            Output::Page(id) => (
                Some(Target::Index(id)),
                Some(id),
                Pacer::new(inner.page_flow(id, limits), None),
            ),
            Output::To(t) => (
                Some(t),
                None,
                Pacer::new(Flow::new(limits), Some(ROOM_PATIENCE)),
            ),
            Output::Monitor => (None, None, Pacer::new(Flow::new(limits), None)),
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
            flow: pacer.flow.clone(),
        };
        let out = process.keeper.stdout.take();
        let err = process.keeper.stderr.take();
        let ctx = RunCtx {
            sink,
            pacer,
            timeout,
            started: Instant::now(),
            stop: inner.stop.clone(),
        };
        inner.tasks.spawn(supervise(process, out, err, ctx, slot));
        Ok(reply)
    }

    /// Kills every run (each page is told why) and waits up to `grace` for
    /// them to finish reporting. Nothing new starts afterwards.
    pub(crate) async fn shutdown(&self, grace: Duration) {
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
    crate::base::text::shown(s, SHOWN_CHARS).to_string()
}

/// Why a keeper did not get the program running.
enum SpawnError {
    /// The keeper itself could not be started or failed; why, as a phrase
    /// after "its keeper process".
    Keeper(String),
    /// The keeper could not start the program: what the system said.
    Program(io::Error),
}

/// One run's keeper and the daemon's end of its socket.
struct RunProcess {
    keeper: Child,
    /// The keeper's process id, while it is in [`Inner::keepers`].
    keeper_pid: Option<u32>,
    /// The program's process id.
    pid: u32,
    reports: Lines<BufReader<OwnedReadHalf>>,
    /// Dropping this closes the daemon's end: the keeper then kills what is
    /// left of the run (see [`keeper`]).
    end_run: Option<OwnedWriteHalf>,
    inner: Arc<Inner>,
}

impl RunProcess {
    /// Starts a keeper for `config`'s program with the page's `args` and
    /// the environment `env`, and waits until the program runs.
    async fn spawn(
        inner: &Arc<Inner>,
        config: &ActionConfig,
        args: &[String],
        env: BTreeMap<OsString, OsString>,
    ) -> Result<RunProcess, SpawnError> {
        let keeper_error = |what: &str, e: io::Error| SpawnError::Keeper(format!("{what}: {e}"));
        let (ours, theirs) = std::os::unix::net::UnixStream::pair()
            .map_err(|e| keeper_error("cannot get a socket pair", e))?;
        ours.set_nonblocking(true)
            .map_err(|e| keeper_error("cannot set up its socket", e))?;
        let ours = tokio::net::UnixStream::from_std(ours)
            .map_err(|e| keeper_error("cannot set up its socket", e))?;
        let mut cmd = tokio::process::Command::new(KEEPER_EXE);
        cmd.arg0(keeper::ARG0)
            .arg(&config.program)
            .args(&config.args)
            .args(args)
            .env_clear()
            .envs(env)
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // A group of its own: the console's Ctrl-C is the daemon's
            // business, not the run's.
            .process_group(0);
        if let Some(cwd) = &config.cwd {
            cmd.current_dir(cwd);
        }
        let spawned = {
            let mut keepers = lock(&inner.keepers);
            cmd.spawn().inspect(|child| {
                keepers.extend(child.id());
            })
        };
        // The keeper's end of the socket must be the keeper's alone, so
        // that its exit closes it.
        drop(cmd);
        let keeper = match spawned {
            Ok(keeper) => keeper,
            // The keeper starts in the program's working directory.
            Err(e) => match &config.cwd {
                Some(cwd) if !cwd.is_dir() => {
                    return Err(SpawnError::Program(io::Error::new(
                        e.kind(),
                        format!("cannot use working directory {}: {e}", cwd.display()),
                    )))
                }
                _ => return Err(keeper_error(&format!("cannot start ({KEEPER_EXE})"), e)),
            },
        };
        let (reports, end_run) = ours.into_split();
        let mut process = RunProcess {
            keeper_pid: keeper.id(),
            keeper,
            pid: 0,
            reports: BufReader::new(reports).lines(),
            end_run: Some(end_run),
            inner: inner.clone(),
        };
        let first = tokio::time::timeout(KEEPER_START_TIMEOUT, process.reports.next_line()).await;
        let failure = match first {
            Ok(Ok(Some(line))) => match Report::parse(&line) {
                Some(Report::Started(pid)) => {
                    process.pid = pid;
                    return Ok(process);
                }
                Some(Report::Failed(why)) => SpawnError::Program(io::Error::other(why)),
                _ => SpawnError::Keeper(format!("said {:?}", shown(&line))),
            },
            Ok(Ok(None) | Err(_)) => SpawnError::Keeper("ended without starting it".into()),
            Err(_) => SpawnError::Keeper(format!(
                "did not start it within {}s",
                KEEPER_START_TIMEOUT.as_secs()
            )),
        };
        process.end(REAP_TIMEOUT).await;
        Err(failure)
    }

    /// Asks the keeper to end the run and waits up to `patience` for it to
    /// exit, that is for the run's last process to be gone. Returns whether
    /// it did. A keeper that ended abnormally may have left processes of
    /// the run to the daemon: they are swept.
    async fn end(&mut self, patience: Duration) -> bool {
        self.end_run = None;
        let Some(pid) = self.keeper_pid else {
            return true;
        };
        match tokio::time::timeout(patience, self.keeper.wait()).await {
            Err(_) => false,
            Ok(status) => {
                lock(&self.inner.keepers).remove(&pid);
                self.keeper_pid = None;
                // The keeper exits by itself only with no child left, or
                // having started none. Killed, or failing, it may have left
                // some to the daemon.
                let clean = [Some(0), Some(keeper::CANNOT_START)];
                if !status.is_ok_and(|s| clean.contains(&s.code())) {
                    sweep(&self.inner).await;
                }
                true
            }
        }
    }
}

/// Kills and reaps the daemon's children that are not keepers: processes
/// of runs whose keeper died before them, re-parented to the daemon (a
/// subreaper). Each round kills the strays found; their own children then
/// become the daemon's, and the next round gets them. Gives up after
/// [`REAP_TIMEOUT`] on strays it cannot kill.
async fn sweep(inner: &Arc<Inner>) {
    let inner = inner.clone();
    let _ = tokio::task::spawn_blocking(move || {
        use nix::sys::signal::{kill, Signal};
        use nix::sys::wait::{waitpid, WaitPidFlag};
        use nix::unistd::Pid;
        let me = std::process::id();
        let deadline = Instant::now() + REAP_TIMEOUT;
        loop {
            let strays: Vec<Pid> = {
                let keepers = lock(&inner.keepers);
                children_of(me)
                    .into_iter()
                    .filter(|pid| !keepers.contains(pid))
                    .filter_map(|pid| i32::try_from(pid).ok().map(Pid::from_raw))
                    .collect()
            };
            if strays.is_empty() || Instant::now() > deadline {
                return;
            }
            for pid in &strays {
                let _ = kill(*pid, Signal::SIGKILL);
            }
            std::thread::sleep(SWEEP_ROUND);
            // Only these pids, never -1: the keepers are tokio's to reap.
            for pid in strays {
                let _ = waitpid(pid, Some(WaitPidFlag::WNOHANG | WaitPidFlag::__WALL));
            }
        }
    })
    .await;
}

/// Process ids whose parent is process `parent`, zombies included.
fn children_of(parent: u32) -> Vec<u32> {
    // Each thread's list of children, when the kernel keeps them
    // (CONFIG_PROC_CHILDREN): a few small files instead of all of /proc.
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{parent}/task")) {
        let mut found = Vec::new();
        let mut listed = true;
        for task in tasks.flatten() {
            match std::fs::read_to_string(task.path().join("children")) {
                Ok(text) => found.extend(
                    text.split_whitespace()
                        .filter_map(|p| p.parse::<u32>().ok()),
                ),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    listed = false;
                    break;
                }
                // A thread that just ended.
                Err(_) => {}
            }
        }
        if listed {
            return found;
        }
    }
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| parent_of(*pid) == Some(parent))
        .collect()
}

/// The parent of process `pid`, from /proc/PID/stat.
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "PID (COMMAND) STATE PPID ...": the command may hold anything.
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Output frames of a run (or of all the runs of one page) that are queued
/// for pages but not yet written to all of them.
///
/// Each frame is sent as [`Bytes`] that own a share of this account
/// ([`Flow::carry`]); the outbox drops a frame once it is written (or when
/// the page goes away), and that credits the account and, when it is low
/// again, wakes a run waiting for room. Nothing is added to the outbox or
/// to a broadcast: plain frames carry no account.
pub(crate) struct Flow {
    bytes: AtomicUsize,
    frames: AtomicUsize,
    /// At most this much is queued; beyond it the run waits ...
    max_bytes: usize,
    max_frames: usize,
    /// ... until no more than this is queued.
    low_bytes: usize,
    low_frames: usize,
    /// A run waits for [`Flow::room`].
    waiting: AtomicBool,
    room: Notify,
}

impl Flow {
    /// An account that lets a page's outgoing queue (of `limits`) be half
    /// full of run output at most, and waits for a quarter.
    pub(crate) fn new(limits: OutboxLimits) -> Arc<Flow> {
        let max_bytes = (limits.max_bytes / 2).max(1);
        let max_frames = (limits.max_frames / 2).max(1);
        Arc::new(Flow {
            bytes: AtomicUsize::new(0),
            frames: AtomicUsize::new(0),
            max_bytes,
            max_frames,
            low_bytes: max_bytes / 2,
            low_frames: max_frames / 2,
            waiting: AtomicBool::new(false),
            room: Notify::new(),
        })
    }

    /// Whether another frame may be queued now.
    pub(crate) fn has_room(&self) -> bool {
        self.bytes.load(Ordering::SeqCst) < self.max_bytes
            && self.frames.load(Ordering::SeqCst) < self.max_frames
    }

    fn is_low(&self) -> bool {
        self.bytes.load(Ordering::SeqCst) <= self.low_bytes
            && self.frames.load(Ordering::SeqCst) <= self.low_frames
    }

    /// `frame`, counted until the last page it is queued for lets it go.
    pub(crate) fn carry(self: &Arc<Self>, frame: Bytes) -> Bytes {
        self.bytes.fetch_add(frame.len(), Ordering::SeqCst);
        self.frames.fetch_add(1, Ordering::SeqCst);
        Bytes::from_owner(Carried {
            frame,
            flow: self.clone(),
        })
    }

    /// Waits until what is queued is low again.
    pub(crate) async fn room(&self) {
        loop {
            let notified = self.room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // Set before looking, so that a frame written after the look
            // sees it and wakes us (both sides are SeqCst).
            self.waiting.store(true, Ordering::SeqCst);
            if self.is_low() {
                return;
            }
            notified.await;
        }
    }
}

/// A frame's share of a [`Flow`]; see [`Flow::carry`].
struct Carried {
    frame: Bytes,
    flow: Arc<Flow>,
}

impl AsRef<[u8]> for Carried {
    fn as_ref(&self) -> &[u8] {
        &self.frame
    }
}

impl Drop for Carried {
    fn drop(&mut self) {
        let flow = &self.flow;
        flow.bytes.fetch_sub(self.frame.len(), Ordering::SeqCst);
        flow.frames.fetch_sub(1, Ordering::SeqCst);
        if flow.waiting.load(Ordering::SeqCst) && flow.is_low() {
            flow.waiting.store(false, Ordering::SeqCst);
            flow.room.notify_waiters();
        }
    }
}

/// How a run's output keeps to its [`Flow`].
///
/// Output to the page that started the run waits as long as it takes (the
/// run's timeout and the page's departure still apply). Output to other
/// connections (`run --to`) waits at most `patience` for a queue that does
/// not drain; then it is sent regardless until the flow is low again, so
/// that one page that stopped reading is closed as a slow consumer, as a
/// broadcast would close it, instead of stalling the run for everyone.
struct Pacer {
    flow: Arc<Flow>,
    patience: Option<Duration>,
    /// Patience ran out: send without waiting until the flow is low.
    overrun: bool,
}

impl Pacer {
    fn new(flow: Arc<Flow>, patience: Option<Duration>) -> Self {
        Pacer {
            flow,
            patience,
            overrun: false,
        }
    }

    /// Whether a frame may be sent now.
    fn ready(&mut self) -> bool {
        if self.overrun && self.flow.is_low() {
            self.overrun = false;
        }
        self.overrun || self.flow.has_room()
    }

    /// Waits for room, or for the patience to run out.
    async fn wait(&mut self) {
        match self.patience {
            None => self.flow.room().await,
            Some(patience) => {
                if tokio::time::timeout(patience, self.flow.room())
                    .await
                    .is_err()
                {
                    self.overrun = true;
                }
            }
        }
    }
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
    flow: Arc<Flow>,
}

impl Sink {
    /// Delivers `frame`; false when the page the run is bound to is gone.
    fn send(&self, frame: &ServerFrame<'_>) -> bool {
        let Some(target) = &self.target else {
            return true;
        };
        let delivered = self.hub.deliver(target, &self.flow.carry(frame.encode()));
        match (self.bound, delivered) {
            (None, _) => true,
            // Not queued: closed or closing. Nobody is left to read the
            // output.
            (Some(_), Ok(d)) => d.reached > 0,
            (Some(_), Err(_)) => false,
        }
    }

    /// Records one output line in the Monitor, as it is read.
    fn monitor(&self, stream: &str, text: &str) {
        self.hub.monitor().emit(format_args!(
            "action {}[{}] {stream}: {text}",
            self.action, self.run
        ));
    }

    /// Passes on one output line; false when the bound page is gone.
    fn line(&self, stream: &str, text: &str) -> bool {
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
    pacer: Pacer,
    timeout: Duration,
    started: Instant,
    stop: CancellationToken,
}

/// How a run ended.
enum End {
    Exited(ExitStatus),
    Lost,
    Timeout,
    PageGone,
    Shutdown,
}

/// Streams a run's output, enforces its limits, ends it, and reports.
async fn supervise(
    mut process: RunProcess,
    stdout: Option<tokio::process::ChildStdout>,
    stderr: Option<tokio::process::ChildStderr>,
    ctx: RunCtx,
    slot: Slot,
) {
    let RunCtx {
        sink,
        mut pacer,
        timeout,
        started,
        stop,
    } = ctx;
    let mut out = LineReader::new(stdout);
    let mut err = LineReader::new(stderr);
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut tick = tokio::time::interval(LIVENESS_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A line read but not yet sent: reading stops until there is room, so
    // the program's pipe fills and the program waits.
    let mut held: Option<(&'static str, String)> = None;
    let mut status: Option<ExitStatus> = None;
    let mut reports_open = true;
    let end = loop {
        if held.is_none() && out.done && err.done {
            if let Some(status) = status {
                break End::Exited(status);
            }
        }
        if !reports_open && status.is_none() {
            // The keeper is gone without a word about the program.
            break End::Lost;
        }
        // Biased, limits first: a program that never stops writing must
        // still meet its timeout and its page's departure.
        tokio::select! {
            biased;
            _ = stop.cancelled() => break End::Shutdown,
            _ = &mut deadline => break End::Timeout,
            _ = tick.tick(), if sink.bound.is_some() => {
                if !sink.is_live() {
                    break End::PageGone;
                }
            }
            _ = pacer.wait(), if held.is_some() => {}
            line = out.next_line(), if held.is_none() && !out.done => {
                if let Some(text) = line {
                    sink.monitor("stdout", &text);
                    held = Some(("stdout", text));
                }
            }
            line = err.next_line(), if held.is_none() && !err.done => {
                if let Some(text) = line {
                    sink.monitor("stderr", &text);
                    held = Some(("stderr", text));
                }
            }
            report = process.reports.next_line(), if reports_open => match report {
                Ok(Some(line)) => {
                    status = Report::parse(&line).and_then(|r| r.status()).or(status);
                }
                Ok(None) | Err(_) => reports_open = false,
            },
        }
        if held.is_some() && pacer.ready() {
            if let Some((stream, text)) = held.take() {
                if !sink.line(stream, &text) {
                    break End::PageGone;
                }
            }
        }
    };
    drop((out, err));
    let (status, mut message) = match end {
        End::Exited(status) => describe(status),
        End::Lost => (
            None,
            "lost track of the program: its keeper ended".to_string(),
        ),
        End::Timeout => (None, format!("killed after {}s timeout", timeout.as_secs())),
        End::PageGone => (None, "killed: its page went away".to_string()),
        End::Shutdown => (None, "killed: the daemon is shutting down".to_string()),
    };
    // Whatever the run left behind, the keeper kills now.
    let gone = process.end(REAP_TIMEOUT).await;
    slot.inner.finished.fetch_add(1, Relaxed);
    let mut slot = Some(slot);
    if gone {
        // Free before `done` goes out, so that a page may start the next
        // run as soon as it reads it.
        drop(slot.take());
    } else {
        message.push_str("; some of its processes could not be killed yet");
    }
    sink.hub.monitor().emit(format_args!(
        "action {}[{}] done: {message} after {:.1}s",
        sink.action,
        sink.run,
        started.elapsed().as_secs_f64()
    ));
    sink.send(&ServerFrame::Done {
        name: sink.name.as_deref(),
        action: &sink.action,
        status,
        message: &message,
    });
    if slot.is_some() {
        // The place stays taken for as long as a process of the run lives.
        while !process.end(REAP_TIMEOUT).await {}
        sink.hub.monitor().emit(format_args!(
            "action {}[{}]: its last process is gone",
            sink.action, sink.run
        ));
    }
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
    //! What needs no program to run. Runs themselves need the keeper, which
    //! is the `pagewire` binary: tests/it/actions.rs and
    //! tests/it/action_guards.rs start them.

    use super::*;
    use crate::engine::hub::HubLimits;
    use crate::engine::monitor::Monitor;

    fn action(program: &str, args: &[&str]) -> ActionConfig {
        ActionConfig {
            program: program.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            cwd: None,
            env: BTreeMap::new(),
            inherit_env: Vec::new(),
            timeout_secs: None,
            page_args: false,
            page_dash_args: false,
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

    #[tokio::test]
    async fn unknown_names_list_the_configured_ones() {
        let (none, hub) = setup(&[], 8);
        let e = none
            .start("x", vec![], operator(), &hub)
            .await
            .expect_err("unknown");
        assert_eq!(
            e.to_string(),
            "run: no action named 'x' is configured; none are configured \
             ([actions.NAME] in the configuration file)"
        );
        let (some, hub) = setup(&[("b", action("true", &[])), ("a", action("true", &[]))], 8);
        let e = some
            .start("sh\u{7}", vec!["-c".into()], operator(), &hub)
            .await
            .expect_err("unknown");
        assert_eq!(
            e.to_string(),
            "run: no action named 'sh\\u{7}' is configured; configured: a, b"
        );
    }

    #[test]
    fn arguments_need_page_args_and_dashes_page_dash_args() {
        let mut echo = action("echo", &["fixed"]);
        let args = |list: &[&str]| list.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        assert!(check_arguments("echo", &echo, &[]).is_ok());
        let e = check_arguments("echo", &echo, &args(&["; rm -rf /"])).expect_err("refused");
        assert!(e.to_string().contains("takes no arguments"), "{e}");

        echo.page_args = true;
        assert!(check_arguments("echo", &echo, &args(&["a; b", "$HOME", "x-y", ""])).is_ok());
        let e = check_arguments("echo", &echo, &args(&["ok", "--output=/etc/passwd", "-n"]))
            .expect_err("refused");
        assert_eq!(
            e.to_string(),
            "run: action 'echo' takes no argument that starts with '-' (got \
             '--output=/etc/passwd'; its configuration would need page_dash_args = true); \
             nothing was run"
        );
        assert!(check_arguments("echo", &echo, &args(&["-"])).is_err());

        echo.page_dash_args = true;
        assert!(check_arguments("echo", &echo, &args(&["-n", "--", "-"])).is_ok());
    }

    #[tokio::test]
    async fn refused_arguments_take_no_place() {
        let (actions, hub) = setup(&[("echo", action("echo", &[]))], 1);
        let e = actions
            .start("echo", vec!["-x".into()], operator(), &hub)
            .await
            .expect_err("refused");
        assert!(matches!(e, ActionError::NoArguments(_)), "{e}");
        assert_eq!((actions.started_total(), actions.running_count()), (0, 0));
    }

    #[test]
    fn the_environment_is_built_not_inherited() {
        let daemon = [
            ("PATH", "/usr/bin:/bin"),
            ("HOME", "/home/pw"),
            ("LANG", "C.UTF-8"),
            ("LC_TIME", "C"),
            ("PAGEWIRE_TOKEN", "tok"),
            ("AWS_SECRET_ACCESS_KEY", "aws"),
            ("SECRET_KEY", "sk"),
            ("PAGEWIRE_RUN", "forged"),
        ]
        .map(|(k, v)| (OsString::from(k), OsString::from(v)));
        let mut config = action("env", &[]);
        let env = environment(&config, "env", 7, Some(3), daemon.clone());
        let shown: Vec<String> = env
            .iter()
            .map(|(k, v)| format!("{}={}", k.to_string_lossy(), v.to_string_lossy()))
            .collect();
        assert_eq!(
            shown,
            [
                "HOME=/home/pw",
                "LANG=C.UTF-8",
                "LC_TIME=C",
                "PAGEWIRE_ACTION=env",
                "PAGEWIRE_CONNECTION=3",
                "PAGEWIRE_RUN=7",
                "PATH=/usr/bin:/bin",
            ]
        );

        config.inherit_env = vec!["SECRET_KEY".into(), "NOT_SET".into()];
        config.env = [("DEPLOY_ENV".to_string(), "staging".to_string())].into();
        let env = environment(&config, "env", 8, None, daemon);
        assert_eq!(env.get(OsStr::new("SECRET_KEY")), Some(&"sk".into()));
        assert_eq!(env.get(OsStr::new("DEPLOY_ENV")), Some(&"staging".into()));
        assert!(!env.contains_key(OsStr::new("NOT_SET")));
        assert!(!env.contains_key(OsStr::new("PAGEWIRE_TOKEN")));
        assert!(!env.contains_key(OsStr::new("AWS_SECRET_ACCESS_KEY")));
        assert!(!env.contains_key(OsStr::new("PAGEWIRE_CONNECTION")));
    }

    #[tokio::test]
    async fn a_missing_page_is_an_error() {
        let (actions, hub) = setup(&[("t", action("true", &[]))], 8);
        let page = Requester {
            door: Door::Page(9),
            output: Output::Page(9),
        };
        let e = actions
            .start("t", vec![], page, &hub)
            .await
            .expect_err("gone");
        assert_eq!(
            e.to_string(),
            "run: no connection with index 9; 'ws' lists the current ones"
        );
        assert_eq!(actions.running_count(), 0);
    }

    #[tokio::test]
    async fn a_flow_holds_back_at_half_and_wakes_at_a_quarter() {
        let flow = Flow::new(OutboxLimits {
            max_bytes: 400,
            max_frames: 1000,
        });
        let mut queued = Vec::new();
        while flow.has_room() {
            queued.push(flow.carry(Bytes::from(vec![b'x'; 50])));
        }
        // Half of 400 bytes, in frames of 50.
        assert_eq!(queued.len(), 4);
        let waiter = tokio::spawn({
            let flow = flow.clone();
            async move { flow.room().await }
        });
        // One written: 150 bytes are still queued, more than a quarter.
        queued.pop();
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        // Another written to one page, but still queued for a second one.
        let second_page = queued.pop().expect("frame");
        let first_page = second_page.clone();
        drop(first_page);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        assert!(!flow.is_low());
        drop(second_page);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .expect("waiter");
        assert!(flow.has_room() && flow.is_low());
    }

    #[test]
    fn a_broadcast_frame_is_not_counted() {
        let flow = Flow::new(OutboxLimits::default());
        let carried = flow.carry(Bytes::from_static(b"line"));
        assert_eq!(&carried[..], b"line");
        assert_eq!(flow.frames.load(Relaxed), 1);
        let slice = carried.slice(2..);
        drop(carried);
        // A frame written in part still counts until the rest goes.
        assert_eq!(flow.frames.load(Relaxed), 1);
        drop(slice);
        assert_eq!(
            (flow.frames.load(Relaxed), flow.bytes.load(Relaxed)),
            (0, 0)
        );
    }

    #[test]
    fn children_are_found_in_proc() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep");
        let found = children_of(std::process::id());
        let _ = child.kill();
        let _ = child.wait();
        assert!(found.contains(&child.id()), "{found:?}");
        assert_eq!(parent_of(child.id()), None);
        assert_eq!(
            parent_of(std::process::id()),
            Some(std::os::unix::process::parent_id())
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
