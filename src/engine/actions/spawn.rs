//! Starting a run: the keeper process, the program it starts, and the
//! sweep of what a keeper that died outright left to the daemon.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io;
use std::os::fd::OwnedFd;
use std::process::Stdio;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::process::Child;

use super::keeper::{self, children_of, Report};
use super::{lock, shown, ActionConfig, ActionError, Inner};
use crate::engine::hub::Hub;

/// The keeper is this very binary, started again (see [`keeper`]). Through
/// /proc it is the file the daemon runs, even if the path it was started
/// from now holds another version.
pub(super) const KEEPER_EXE: &str = "/proc/self/exe";

/// How long a keeper may take to start the program and say so.
pub(super) const KEEPER_START_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the `done` of a killed run waits for its keeper to have killed
/// and reaped everything; SIGKILL cannot be ignored, so this only matters
/// for a process stuck in the kernel or not the daemon's to kill.
pub(super) const REAP_TIMEOUT: Duration = Duration::from_secs(5);

/// Pause between two rounds of a [`sweep`].
pub(super) const SWEEP_ROUND: Duration = Duration::from_millis(5);

/// Makes the daemon a child subreaper, once: what is left of a run whose
/// keeper died comes to the daemon, to be swept, rather than to init.
pub(super) fn become_subreaper(hub: &Hub) {
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

/// Why a keeper did not get the program running.
pub(super) enum SpawnError {
    /// The keeper itself could not be started or failed; why, as a phrase
    /// after "its keeper process".
    Keeper(String),
    /// The keeper could not start the program: what the system said.
    Program(io::Error),
}

impl SpawnError {
    /// The error a door shows, for action `name` of `config`.
    pub(super) fn for_action(self, name: &str, config: &ActionConfig) -> ActionError {
        match self {
            SpawnError::Keeper(why) => ActionError::Keeper {
                name: name.to_string(),
                why,
            },
            SpawnError::Program(error) => ActionError::Spawn {
                name: name.to_string(),
                program: config.program.clone(),
                error,
            },
        }
    }
}

/// One run's keeper and the daemon's end of its socket.
pub(super) struct RunProcess {
    pub(super) keeper: Child,
    /// The keeper's process id, while it is in [`Inner::keepers`].
    pub(super) keeper_pid: Option<u32>,
    /// The program's process id.
    pub(super) pid: u32,
    pub(super) reports: Lines<BufReader<OwnedReadHalf>>,
    /// Dropping this closes the daemon's end: the keeper then kills what is
    /// left of the run (see [`keeper`]).
    pub(super) end_run: Option<OwnedWriteHalf>,
    pub(super) inner: Arc<Inner>,
}

impl RunProcess {
    /// Starts a keeper for `config`'s program with the page's `args` and
    /// the environment `env`, and waits until the program runs.
    pub(super) async fn spawn(
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
    pub(super) async fn end(&mut self, patience: Duration) -> bool {
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
pub(super) async fn sweep(inner: &Arc<Inner>) {
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
