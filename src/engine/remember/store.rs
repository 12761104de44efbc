//! The state directory: what survives a restart of the daemon.
//!
//! Two files:
//! - `state.redb`, a redb database (ACID, every commit fsynced before it
//!   returns): the retained values (table `retained`) and a few settings
//!   of the daemon itself (table `meta`: the index ceiling, the key that
//!   signs resume tokens, when the daemon was last alive);
//! - `index`, one line with the index ceiling, replaced atomically (written
//!   beside, fsynced, renamed): a second copy of what keeps indexes from
//!   ever repeating, so that losing the database does not lose that.
//!
//! Nothing here stops the daemon from serving. A database that cannot be
//! read (torn, corrupt, of another format) is renamed aside
//! (`state.redb.bad-UNIXTIME`), reported, and a fresh one is started; a
//! directory that cannot be used at all (no permission, another daemon
//! holds the database) is reported, and the daemon runs without a store:
//! as a version-1 daemon did, it then remembers nothing across restarts.

// redb's one error type is large; it is only ever made on the way to a
// one-line message, once per command at most, never on a hot path.
#![allow(clippy::result_large_err)]

use std::fs;
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use redb::{Database, ReadableTable as _, TableDefinition};

/// Retained values: key (see `retained::Key`) to record (JSON).
const RETAINED: TableDefinition<&str, &[u8]> = TableDefinition::new("retained");
/// The daemon's own values, by name.
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// The database's file name in the state directory.
pub(crate) const DB_FILE: &str = "state.redb";
/// The index ceiling's own file.
const INDEX_FILE: &str = "index";

/// What the store holds when it is opened.
#[derive(Debug, Default)]
pub(crate) struct Loaded {
    /// Every retained record, by key.
    pub(crate) retained: Vec<(String, Vec<u8>)>,
    /// Every index the previous daemons handed out is below this (0: none
    /// known).
    pub(crate) ceiling: u64,
    /// The key that signs resume tokens, if one was made before.
    pub(crate) resume_key: Option<Vec<u8>>,
    /// When the previous daemon was last known alive (Unix seconds).
    pub(crate) last_alive: Option<u64>,
}

/// The open state directory; `db` is `None` when it could not be used.
pub(crate) struct Store {
    dir: PathBuf,
    db: Option<Database>,
}

/// Why a store operation failed, for the one-line errors of commands.
pub(crate) type StoreError = String;

impl Store {
    /// A store that keeps nothing (tests, and a directory that cannot be
    /// used).
    pub(crate) fn none(dir: PathBuf) -> Store {
        Store { dir, db: None }
    }

    /// Opens (or makes) the state directory `dir` and reads what it holds;
    /// every problem is handed to `report` as one line, and none stops the
    /// daemon.
    pub(crate) fn open(dir: &Path, report: &mut dyn FnMut(String)) -> (Store, Loaded) {
        if let Err(e) = fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
        {
            report(format!(
                "state: cannot make the state directory {}: {e}; retained values and \
                 indexes will not survive a restart (--state-dir)",
                dir.display()
            ));
            return (Store::none(dir.to_path_buf()), Loaded::default());
        }
        let path = dir.join(DB_FILE);
        let mut loaded = Loaded::default();
        let db = match open_and_load(&path, &mut loaded) {
            Ok(db) => Some(db),
            Err(Problem::Unusable(why)) => {
                report(format!(
                    "state: cannot use {}: {why}; retained values and indexes will not \
                     survive a restart",
                    path.display()
                ));
                None
            }
            Err(Problem::Unreadable(why)) => {
                loaded = Loaded::default();
                let aside = set_aside(&path);
                let (what, db) = match &aside {
                    Ok(aside) => {
                        let fresh = open_and_load(&path, &mut loaded).ok();
                        (format!("moved aside to {}", aside.display()), fresh)
                    }
                    Err(e) => (format!("could not be moved aside ({e})"), None),
                };
                let then = if db.is_some() {
                    "starting with no retained values"
                } else {
                    "running without a store"
                };
                report(format!(
                    "state: {} is unreadable ({why}): {what}; {then}",
                    path.display()
                ));
                db
            }
        };
        match read_index_file(&dir.join(INDEX_FILE)) {
            Ok(Some(n)) => loaded.ceiling = loaded.ceiling.max(n),
            Ok(None) => {}
            Err(why) => report(format!(
                "state: {} is unreadable ({why}); the database's copy of the index \
                 ceiling is used",
                dir.join(INDEX_FILE).display()
            )),
        }
        let store = Store {
            dir: dir.to_path_buf(),
            db,
        };
        (store, loaded)
    }

    /// Whether anything is kept across restarts.
    pub(crate) fn is_durable(&self) -> bool {
        self.db.is_some()
    }

    /// The state directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Keeps `value` under `key` in the retained table, durably.
    pub(crate) fn put_retained(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.write(|txn| {
            txn.open_table(RETAINED)?.insert(key, value)?;
            Ok(())
        })
    }

    /// Drops the retained records that `drop` accepts (given the key and
    /// the record), durably; it decides in the same transaction, so that
    /// nothing written between its look and the removal is removed.
    pub(crate) fn remove_retained(
        &self,
        drop: &dyn Fn(&str, &[u8]) -> bool,
    ) -> Result<(), StoreError> {
        self.write(|txn| {
            let mut table = txn.open_table(RETAINED)?;
            let mut gone = Vec::new();
            for entry in table.iter()? {
                let (key, record) = entry?;
                if drop(key.value(), record.value()) {
                    gone.push(key.value().to_string());
                }
            }
            for key in gone {
                table.remove(key.as_str())?;
            }
            Ok(())
        })
    }

    /// Keeps the daemon's value `name`, durably.
    pub(crate) fn put_meta(&self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        self.write(|txn| {
            txn.open_table(META)?.insert(name, value)?;
            Ok(())
        })
    }

    /// Records that no index at or above `ceiling` has been handed out, in
    /// the database and in the index file, both durably.
    pub(crate) fn put_ceiling(&self, ceiling: u64) -> Result<(), StoreError> {
        let Some(_) = &self.db else {
            return Ok(());
        };
        write_index_file(&self.dir.join(INDEX_FILE), ceiling)
            .map_err(|e| format!("cannot write {}: {e}", self.dir.join(INDEX_FILE).display()))?;
        self.put_meta(META_CEILING, &ceiling.to_le_bytes())
    }

    /// Runs `f` in one write transaction and commits it (redb fsyncs before
    /// the commit returns). Without a database, nothing happens.
    fn write(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<(), redb::Error>,
    ) -> Result<(), StoreError> {
        let Some(db) = &self.db else {
            return Ok(());
        };
        let txn = db.begin_write().map_err(|e| e.to_string())?;
        f(&txn).map_err(|e| e.to_string())?;
        txn.commit().map_err(|e| e.to_string())
    }
}

/// `meta` names.
pub(crate) const META_CEILING: &str = "index_ceiling";
pub(crate) const META_RESUME_KEY: &str = "resume_key";
pub(crate) const META_LAST_ALIVE: &str = "last_alive";

/// Why the database could not be opened.
enum Problem {
    /// Not the file's fault: leave it where it is.
    Unusable(String),
    /// The file's fault: set it aside and start afresh.
    Unreadable(String),
}

fn open_and_load(path: &Path, loaded: &mut Loaded) -> Result<Database, Problem> {
    let db = Database::create(path).map_err(|e| match e {
        redb::DatabaseError::DatabaseAlreadyOpen => Problem::Unusable(
            "another pagewire daemon uses this state directory; give each its own \
             --state-dir"
                .into(),
        ),
        redb::DatabaseError::Storage(redb::StorageError::Io(io))
            if io.kind() == io::ErrorKind::PermissionDenied =>
        {
            Problem::Unusable(io.to_string())
        }
        other => Problem::Unreadable(other.to_string()),
    })?;
    load(&db, loaded).map_err(|e| Problem::Unreadable(e.to_string()))?;
    Ok(db)
}

/// Reads every table, making those that do not exist yet (so that reads
/// later never meet a missing table).
fn load(db: &Database, loaded: &mut Loaded) -> Result<(), redb::Error> {
    let txn = db.begin_write()?;
    {
        let retained = txn.open_table(RETAINED)?;
        for entry in retained.iter()? {
            let (key, value) = entry?;
            loaded
                .retained
                .push((key.value().to_string(), value.value().to_vec()));
        }
        let meta = txn.open_table(META)?;
        let u64_of = |bytes: &[u8]| <[u8; 8]>::try_from(bytes).ok().map(u64::from_le_bytes);
        let ceiling = meta.get(META_CEILING)?.and_then(|v| u64_of(v.value()));
        loaded.ceiling = ceiling.unwrap_or(0);
        loaded.resume_key = meta.get(META_RESUME_KEY)?.map(|v| v.value().to_vec());
        let last_alive = meta.get(META_LAST_ALIVE)?.and_then(|v| u64_of(v.value()));
        loaded.last_alive = last_alive;
    }
    txn.commit()?;
    Ok(())
}

/// Renames `path` to `path.bad-UNIXTIME` and returns the new name.
fn set_aside(path: &Path) -> io::Result<PathBuf> {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".bad-{}", unix_now()));
    let aside = PathBuf::from(name);
    fs::rename(path, &aside)?;
    Ok(aside)
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

const INDEX_LINE: &str = "pagewire index ceiling ";

fn read_index_file(path: &Path) -> Result<Option<u64>, String> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    text.trim_end()
        .strip_prefix(INDEX_LINE)
        .and_then(|n| n.parse().ok())
        .map(Some)
        .ok_or_else(|| "not an index ceiling".to_string())
}

fn write_index_file(path: &Path, ceiling: u64) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".new");
    let tmp = PathBuf::from(tmp);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(format!("{INDEX_LINE}{ceiling}\n").as_bytes())?;
    file.sync_all()?;
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path) -> (Store, Loaded, Vec<String>) {
        let mut lines = Vec::new();
        let (store, loaded) = Store::open(dir, &mut |l| lines.push(l));
        (store, loaded, lines)
    }

    #[test]
    fn what_is_written_is_read_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, loaded, lines) = open(dir.path());
        assert!(lines.is_empty(), "{lines:?}");
        assert!(loaded.retained.is_empty() && loaded.ceiling == 0);
        store.put_retained("a\0w", b"one").expect("put");
        store.put_retained("b\0w", b"two").expect("put");
        store.put_ceiling(4096).expect("ceiling");
        store
            .remove_retained(&|k, _| k.starts_with("a\0"))
            .expect("remove");
        drop(store);
        let (_store, loaded, lines) = open(dir.path());
        assert!(lines.is_empty(), "{lines:?}");
        assert_eq!(loaded.retained, vec![("b\0w".to_string(), b"two".to_vec())]);
        assert_eq!(loaded.ceiling, 4096);
    }

    #[test]
    fn a_corrupt_database_is_set_aside_and_the_ceiling_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, _, _) = open(dir.path());
        store.put_ceiling(777).expect("ceiling");
        drop(store);
        fs::write(dir.path().join(DB_FILE), b"this is not a database").expect("spoil");
        let (store, loaded, lines) = open(dir.path());
        assert!(store.is_durable());
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].contains("is unreadable"), "{lines:?}");
        assert!(lines[0].contains("moved aside to "), "{lines:?}");
        assert_eq!(loaded.ceiling, 777, "the index file's copy");
        let aside: Vec<_> = fs::read_dir(dir.path())
            .expect("list")
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(".bad-"))
            .collect();
        assert_eq!(aside.len(), 1);
    }

    #[test]
    fn a_second_daemon_runs_without_a_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (first, _, _) = open(dir.path());
        let (second, _, lines) = open(dir.path());
        assert!(first.is_durable() && !second.is_durable());
        assert!(lines[0].contains("another pagewire daemon"), "{lines:?}");
    }
}
