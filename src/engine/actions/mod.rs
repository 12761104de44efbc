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
//! The last [`TAIL_LINES`] output frames of each run that goes to pages are
//! kept while it runs: a page that opens or comes back while it runs, or
//! registers the name it goes to, gets them first ([`Actions::tails_for`],
//! asked by the hub under its delivery turn), then the rest as it comes.
//! A run started by a page outlives a drop of its page for as long as the
//! page may come back (the hub's resume grace).
//!
//! The daemon starts no child process but keepers. It is a child subreaper
//! too: should a keeper die before its run (killed from outside), what is
//! left of the run becomes the daemon's, and is killed and reaped
//! ([`spawn::sweep`]).

pub mod keeper;
mod lines;
mod sink;
mod spawn;
mod supervise;

use sink::{Flow, Pacer, Sink, ROOM_PATIENCE};
use spawn::{become_subreaper, RunProcess};
use supervise::{supervise, RunCtx};

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
#[cfg(test)]
use std::ffi::OsStr;
use std::ffi::OsString;
use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use anyhow::bail;
use bytes::Bytes;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::base::command::{quote, Target};
use crate::base::door::Door;
use crate::engine::hub::{Hub, OutboxLimits, TargetError};

/// Output lines of a running action kept for pages that join late.
pub(crate) const TAIL_LINES: usize = 200;

/// Most runs at once unless `[limits] max_running_actions` says otherwise.
pub(crate) const DEFAULT_MAX_RUNNING: usize = 8;

/// How long a run may take unless its `timeout_secs` says otherwise.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Variables of the daemon's environment every program gets (when the
/// daemon has them), besides those that start with [`INHERITED_PREFIX`].
pub(crate) const INHERITED_ENV: [&str; 7] =
    ["PATH", "HOME", "USER", "LOGNAME", "LANG", "TZ", "TMPDIR"];

/// The locale's variables (`LC_ALL`, `LC_TIME`, ...) are passed on too.
pub(crate) const INHERITED_PREFIX: &str = "LC_";

/// The longest piece of user input quoted in an error.
const SHOWN_CHARS: usize = 40;

/// At most this many configured names are listed in an error.
const LISTED_NAMES: usize = 20;

/// `[actions.NAME]`: a program a page may run with `run NAME`.
#[derive(Deserialize, serde::Serialize, Debug, Clone)]
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

/// The actions' share of `[limits]` in the configuration file.
#[derive(clap::Args, serde::Serialize, Deserialize, Debug, Clone)]
#[serde(default)]
pub(crate) struct ActionLimits {
    /// Most actions running at once; `run` is refused beyond it.
    #[arg(id = "limits_max_running_actions", long = "limits-max-running-actions", value_name = "N", default_value_t = ActionLimits::default().max_running_actions, help_heading = "Limits ([limits] in the file)")]
    pub(crate) max_running_actions: usize,
}

impl Default for ActionLimits {
    fn default() -> Self {
        ActionLimits {
            max_running_actions: DEFAULT_MAX_RUNNING,
        }
    }
}

impl ActionLimits {
    /// Checks the limit.
    pub(crate) fn check(&self) -> anyhow::Result<usize> {
        if self.max_running_actions == 0 {
            bail!("limits.max_running_actions must be at least 1");
        }
        Ok(self.max_running_actions)
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
    /// while a keeper is started and while a [`spawn::sweep`] looks for other
    /// children, so that a sweep never mistakes a new keeper for a stray.
    keepers: Mutex<HashSet<u32>>,
    /// The output flow of each page that runs actions, shared by its runs.
    flows: Mutex<HashMap<u64, Weak<Flow>>>,
    /// The last output frames of each running run that goes to pages.
    tails: Mutex<BTreeMap<u64, Tail>>,
    /// Runs in `tails` whose output goes to every page (`run --to *`).
    tails_for_all: AtomicUsize,
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

/// The last output frames of one run, for pages that join it late.
pub(crate) struct Tail {
    /// Where the run's output goes.
    output: Output,
    /// Its last [`TAIL_LINES`] `line` frames.
    frames: VecDeque<Bytes>,
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
                tails: Mutex::new(BTreeMap::new()),
                tails_for_all: AtomicUsize::new(0),
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

    /// The output so far of the runs that page `id` gets when it opens
    /// (`resumed`: comes back to its index) or registers `name`, oldest
    /// run first. Asked by the hub under its delivery turn: lines recorded
    /// before are here, lines after reach the page by delivery.
    pub(crate) fn tails_for(&self, joined: Joined<'_>, out: &mut Vec<Bytes>) {
        let tails = lock(&self.inner.tails);
        for tail in tails.values() {
            let wanted = match (&tail.output, joined) {
                (Output::To(Target::All), Joined::Opened { .. }) => true,
                (
                    Output::Page(i) | Output::To(Target::Index(i)),
                    Joined::Opened { id, resumed },
                ) => resumed && *i == id,
                (Output::To(Target::Name(n)), Joined::Registered(name)) => n == name,
                _ => false,
            };
            if wanted {
                out.extend(tail.frames.iter().cloned());
            }
        }
    }

    /// Whether a fresh page gets a tail when it opens (a run to `*`).
    pub(crate) fn has_tails_for_all(&self) -> bool {
        self.inner.tails_for_all.load(Relaxed) > 0
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
        let config = self.check(name, &args, &requester, hub)?;
        // From here on, returning early frees the place again.
        let slot = self.reserve(name, &requester, hub)?;
        let run = slot.run;
        become_subreaper(hub);
        let page = match requester.output {
            Output::Page(id) => Some(id),
            _ => None,
        };
        let env = environment(config, name, run, page, std::env::vars_os());
        let inner = &self.inner;
        let mut process = match RunProcess::spawn(inner, config, &args, env).await {
            Ok(process) => process,
            Err(e) => {
                let e = e.for_action(name, config);
                // Summarised: a page may ask again as fast as it likes.
                hub.monitor().emit_summarised(
                    format_args!("action {name} failed to start"),
                    format_args!(
                        "action {name}[{run}] failed to start for {}: {e}",
                        requester.door
                    ),
                );
                return Err(e);
            }
        };
        if let Some(entry) = inner.running().get_mut(&run) {
            entry.pid = Some(process.pid);
        }
        inner.started.fetch_add(1, Relaxed);
        let argv: Vec<String> = std::iter::once(config.program.clone())
            .chain(config.args.iter().cloned())
            .chain(args)
            .collect();
        let reply = announce(name, run, process.pid, &argv, &requester, hub);
        let (sink, pacer) = self.output(name, run, requester.output, hub);
        let ctx = RunCtx {
            sink,
            pacer,
            timeout: config
                .timeout_secs
                .map_or(DEFAULT_TIMEOUT, Duration::from_secs),
            started: Instant::now(),
            stop: inner.stop.clone(),
        };
        let out = process.keeper.stdout.take();
        let err = process.keeper.stderr.take();
        inner.tasks.spawn(supervise(process, out, err, ctx, slot));
        Ok(reply)
    }

    /// The configuration of action `name`, if `requester` may run it with
    /// `args` now.
    fn check(
        &self,
        name: &str,
        args: &[String],
        requester: &Requester,
        hub: &Hub,
    ) -> Result<&ActionConfig, ActionError> {
        let inner = &self.inner;
        let Some(config) = inner.configs.get(name) else {
            return Err(ActionError::Unknown {
                name: shown(name),
                configured: self.configured_phrase(),
            });
        };
        check_arguments(name, config, args)?;
        if inner.stop.is_cancelled() {
            return Err(ActionError::ShuttingDown);
        }
        match &requester.output {
            Output::Page(id) | Output::To(Target::Index(id)) if !hub.is_live(*id) => {
                Err(TargetError::NoSuchIndex(*id).into())
            }
            _ => Ok(config),
        }
    }

    /// Takes a place among the running actions, and the run's number.
    fn reserve(&self, name: &str, requester: &Requester, hub: &Hub) -> Result<Slot, ActionError> {
        let inner = &self.inner;
        let mut running = inner.running();
        if running.len() >= inner.max_running {
            drop(running);
            inner.refused.fetch_add(1, Relaxed);
            // Summarised: a page may ask again as fast as it likes.
            hub.monitor().emit_summarised(
                format_args!("action {name} refused: busy"),
                format_args!(
                    "action {name} refused for {}: {} running already",
                    requester.door, inner.max_running
                ),
            );
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
        Ok(Slot {
            inner: inner.clone(),
            run,
        })
    }

    /// Where run `run` of action `name` sends its output, and how it
    /// keeps to the room its pages' queues have.
    fn output(&self, name: &str, run: u64, output: Output, hub: &Hub) -> (Sink, Pacer) {
        let limits = hub.limits().outbox;
        if output != Output::Monitor {
            if output == Output::To(Target::All) {
                self.inner.tails_for_all.fetch_add(1, Relaxed);
            }
            let tail = Tail {
                output: output.clone(),
                frames: VecDeque::new(),
            };
            lock(&self.inner.tails).insert(run, tail);
        }
        let (target, bound, pacer) = match output {
            Output::Page(id) => (
                Some(Target::Index(id)),
                Some(id),
                Pacer::new(self.inner.page_flow(id, limits), None),
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
            actions: Arc::downgrade(&self.inner),
        };
        (sink, pacer)
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

/// Who joined, for [`Actions::tails_for`].
#[derive(Clone, Copy, Debug)]
pub(crate) enum Joined<'a> {
    /// A page opened as index `id`; `resumed` when it came back to it.
    Opened {
        /// The page's index.
        id: u64,
        /// Whether it came back to an index it had.
        resumed: bool,
    },
    /// A page registered this name.
    Registered(&'a str),
}

impl Inner {
    /// Records `frame` as run `run`'s latest output line.
    fn record_line(&self, run: u64, frame: &Bytes) {
        if let Some(tail) = lock(&self.tails).get_mut(&run) {
            if tail.frames.len() >= TAIL_LINES {
                tail.frames.pop_front();
            }
            tail.frames.push_back(frame.clone());
        }
    }

    /// Forgets run `run`'s output: it has ended.
    fn end_tail(&self, run: u64) {
        if let Some(tail) = lock(&self.tails).remove(&run) {
            if tail.output == Output::To(Target::All) {
                self.tails_for_all.fetch_sub(1, Relaxed);
            }
        }
    }
}

/// Says in the Monitor that run `run` of action `name` started (program
/// `argv`, process `pid`) and where its output goes; returns the reply.
fn announce(
    name: &str,
    run: u64,
    pid: u32,
    argv: &[String],
    requester: &Requester,
    hub: &Hub,
) -> String {
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
        quote(argv)
    ));
    match &requester.output {
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
    }
}

/// User input as shown in an error: short, one line.
fn shown(s: &str) -> String {
    crate::base::text::shown(s, SHOWN_CHARS).to_string()
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
}
