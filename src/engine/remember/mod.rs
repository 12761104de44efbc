//! Pages that remember: what the daemon keeps beyond one connection and
//! beyond one run of the daemon.
//!
//! - [`retained`]: the values `--retain` keeps per name, replayed to pages
//!   that register the name later;
//! - [`resume`]: the tokens that let a page come back to its index;
//! - [`counter`]: indexes that never repeat across restarts;
//! - [`store`]: the state directory they are kept in.
//!
//! [`Remember`] is the part the engine holds; `serve` opens it before the
//! hub exists, since the hub's indexes come from it.

pub(crate) mod counter;
pub(crate) mod resume;
pub(crate) mod retained;
pub(crate) mod store;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::engine::monitor::Monitor;
use counter::Counter;
use resume::Tokens;
use retained::Retained;
use store::{unix_now, Store, META_LAST_ALIVE, META_RESUME_KEY};

/// Where the daemon keeps what survives a restart: a flag of `pagewire
/// serve` and the `state_dir` key of the configuration file.
#[derive(clap::Args, Deserialize, serde::Serialize, Debug, Default, Clone)]
#[serde(default)]
pub(crate) struct StateSettings {
    /// Keep retained values and the index counter in this directory
    /// [default: $STATE_DIRECTORY (systemd), else /var/lib/pagewire for
    /// root, else $XDG_STATE_HOME/pagewire or ~/.local/state/pagewire]
    #[arg(long, value_name = "DIR", display_order = 14)]
    pub(crate) state_dir: Option<PathBuf>,
}

impl StateSettings {
    /// The directory given, or the default one; `None` when there is none
    /// (no home directory).
    pub(crate) fn dir(&self) -> Option<PathBuf> {
        self.state_dir.clone().or_else(default_dir)
    }
}

/// The state directory when none is given: the one systemd made for the
/// service (`StateDirectory=`, in `$STATE_DIRECTORY`), else
/// `/var/lib/pagewire` for root, else the user's state directory (XDG).
pub(crate) fn default_dir() -> Option<PathBuf> {
    let absolute = |p: PathBuf| Some(p).filter(|p| p.is_absolute());
    // systemd lists one directory per StateDirectory= entry, with ':'.
    let systemd = std::env::var_os("STATE_DIRECTORY")
        .and_then(|v| std::env::split_paths(&v).next())
        .and_then(absolute);
    if let Some(dir) = systemd {
        return Some(dir);
    }
    if nix::unistd::geteuid().is_root() {
        return Some(PathBuf::from("/var/lib/pagewire"));
    }
    let absolute = |v: std::ffi::OsString| Some(PathBuf::from(v)).filter(|p| p.is_absolute());
    if let Some(state) = std::env::var_os("XDG_STATE_HOME").and_then(absolute) {
        return Some(state.join("pagewire"));
    }
    let home = std::env::var_os("HOME").and_then(absolute)?;
    Some(home.join(".local/state/pagewire"))
}

/// `[state]`: how long pages are remembered.
#[derive(clap::Args, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct StateConfig {
    /// Seconds a dropped page (or every page, after a restart) may come back
    /// to its index and names; 0 turns coming back off.
    #[arg(id = "state_resume_grace_secs", long = "state-resume-grace-secs", value_name = "SECS", default_value_t = StateConfig::default().resume_grace_secs, help_heading = "State ([state] in the file)")]
    pub(crate) resume_grace_secs: u64,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            resume_grace_secs: crate::engine::hub::DEFAULT_RESUME_GRACE.as_secs(),
        }
    }
}

impl StateConfig {
    /// The grace period, checked.
    pub(crate) fn grace(&self) -> anyhow::Result<Duration> {
        if self.resume_grace_secs > 7 * 24 * 3600 {
            anyhow::bail!("state.resume_grace_secs must be at most 604800 (a week)");
        }
        Ok(Duration::from_secs(self.resume_grace_secs))
    }
}

/// What the daemon remembers: retained values, resume tokens, and the
/// state directory behind them.
pub(crate) struct Remember {
    /// The retained values.
    pub(crate) retained: Retained,
    /// Signs and checks resume tokens.
    pub(crate) tokens: Tokens,
    store: Arc<Store>,
    /// Every index handed out before this daemon started is below this.
    ceiling: u64,
    /// When the previous daemon was last known alive (Unix seconds).
    last_alive: Option<u64>,
}

/// How often the daemon records that it is alive, which bounds how late
/// the grace period of its pages starts after a crash.
pub(crate) const ALIVE_EVERY: Duration = Duration::from_secs(10);

impl Remember {
    /// Opens the state directory `dir` (none: nothing is kept) and reads it;
    /// every problem goes to the Monitor and to standard error, and none
    /// stops the daemon. A node of a `cluster` keeps its retained values
    /// in Redis, not here: they start empty and are loaded when the node
    /// joins.
    pub(crate) fn open(dir: Option<&Path>, monitor: &Monitor, cluster: bool) -> Remember {
        let mut report = |line: String| {
            eprintln!("pagewire: {line}");
            monitor.emit(line);
        };
        let (store, loaded) = match dir {
            Some(dir) => Store::open(dir, &mut report),
            None => {
                report(
                    "state: no state directory (no HOME and no --state-dir); retained \
                     values and indexes will not survive a restart"
                        .to_string(),
                );
                (Store::none(PathBuf::new()), store::Loaded::default())
            }
        };
        let store = Arc::new(store);
        let (tokens, fresh_key) = Tokens::new(loaded.resume_key.as_deref());
        if let Some(key) = fresh_key {
            if let Err(e) = store.put_meta(META_RESUME_KEY, &key) {
                report(format!("state: cannot keep the resume key: {e}"));
            }
        }
        let (retained, problems) = if cluster {
            Retained::new(Arc::new(retained::NotJoined), Vec::new())
        } else {
            Retained::new(store.clone(), loaded.retained)
        };
        for problem in problems {
            report(format!("state: {problem}"));
        }
        if store.is_durable() {
            monitor.emit(format_args!(
                "state: {} ({} retained)",
                store.dir().display(),
                retained.len()
            ));
        }
        Remember {
            retained,
            tokens,
            store,
            ceiling: loaded.ceiling,
            last_alive: loaded.last_alive,
        }
    }

    /// Remembers nothing beyond this run: for tests and tools that build an
    /// engine without a daemon.
    pub(crate) fn in_memory() -> Remember {
        let store = Arc::new(Store::none(PathBuf::new()));
        let (tokens, _) = Tokens::new(None);
        let (retained, _) = Retained::new(store.clone(), Vec::new());
        Remember {
            retained,
            tokens,
            store,
            ceiling: 0,
            last_alive: None,
        }
    }

    /// Whether retained values survive a restart.
    pub(crate) fn is_durable(&self) -> bool {
        self.store.is_durable()
    }

    /// The hub's index source, when indexes can be kept from repeating
    /// across restarts: it starts above every index handed out before.
    pub(crate) fn counter(&self, monitor: &Monitor) -> Option<Arc<Counter>> {
        self.store
            .is_durable()
            .then(|| Counter::start(self.store.clone(), self.ceiling, monitor.clone()))
    }

    /// The indexes the previous daemon handed out (all below the returned
    /// bound) and how much of `grace` is left for their pages to come
    /// back, counted from when it was last alive; `None` when it is over.
    pub(crate) fn previous(&self, grace: Duration) -> Option<(u64, Duration)> {
        let since = unix_now().saturating_sub(self.last_alive?);
        let left = grace.checked_sub(Duration::from_secs(since))?;
        (self.ceiling > 0 && !left.is_zero()).then_some((self.ceiling, left))
    }

    /// Records that the daemon is alive now (every [`ALIVE_EVERY`], and at
    /// shutdown).
    pub(crate) async fn alive(&self) {
        let store = self.store.clone();
        let _ = tokio::task::spawn_blocking(move || {
            store.put_meta(META_LAST_ALIVE, &unix_now().to_le_bytes())
        })
        .await;
    }
}
