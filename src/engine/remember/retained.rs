//! Retained values: what `ws write --retain` and `ws exec --retain` keep
//! per name, replayed to every page that registers the name later.
//!
//! Per name: one text (the last retained write) and one call per function
//! (the last retained exec of that function), so that a gauge's `setLevel`
//! and `setColor` are both kept. Each is held with its frame already
//! encoded (a page that registers gets the very bytes a write sends) and
//! written through to the [`RetainedStore`] before the command answers.
//! A page is replayed a name's values in the order they were set.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::base::command::{valid_name, Target};
use crate::base::text;
use crate::engine::backplane::redis::retained::RedisStore;
use crate::engine::backplane::{BoxFuture, Delivery, Records, SharedRetained};

/// Most retained values in all.
pub(crate) const MAX_RETAINED: usize = 10_000;
/// Most retained calls per name.
pub(crate) const MAX_CALLS_PER_NAME: usize = 32;
/// Characters of a value shown by `ws retained`.
const PREVIEW_CHARS: usize = 40;

/// Where retained values are kept: the state directory's database, or (in
/// a cluster) Redis. Calls block; callers run them off the async workers.
pub(crate) trait RetainedStore: Send + Sync {
    /// Keeps one record, durably, before returning.
    fn put(&self, key: &str, record: &[u8]) -> Result<(), String>;
    /// Drops the records of `name`, durably; how many went, when the
    /// store counts them.
    fn forget(&self, name: &str) -> Result<Option<usize>, String>;
    /// Drops the records whose keys are listed (expired ones).
    fn drop_keys(&self, keys: &[String]) -> Result<(), String>;
    /// Every record (key and JSON) when the store is shared with other
    /// daemons (Redis), and so is the truth rather than this daemon's
    /// copy; `None` for a store of this daemon's own.
    fn shared_records(&self) -> Option<Result<Records, String>> {
        None
    }
}

/// A cluster node's values live in Redis.
impl RetainedStore for RedisStore {
    fn put(&self, key: &str, record: &[u8]) -> Result<(), String> {
        RedisStore::put(self, key, record)
    }

    fn forget(&self, name: &str) -> Result<Option<usize>, String> {
        RedisStore::forget(self, name).map(Some)
    }

    fn drop_keys(&self, keys: &[String]) -> Result<(), String> {
        self.drop_expired(keys, now_ms())
    }

    fn shared_records(&self) -> Option<Result<Records, String>> {
        Some(self.records())
    }
}

impl SharedRetained for Retained {
    fn load(&self, store: Arc<RedisStore>, loaded: Records) -> BoxFuture<'_, Vec<String>> {
        Box::pin(self.replace(store, loaded))
    }

    fn apply(&self, change: &serde_json::Value) -> Option<String> {
        // A change this version cannot read is left out; the next load
        // from Redis brings the copy up to date.
        let change = Change::deserialize(change).ok()?;
        Retained::apply(self, change)
    }

    fn len(&self) -> usize {
        Retained::len(self)
    }
}

/// A change to the retained values made on one node of a cluster, which
/// every other node applies to its copy.
#[derive(Serialize, Deserialize, Debug, Clone)]
#[serde(tag = "change", rename_all = "lowercase")]
pub(crate) enum Change {
    /// A value was kept.
    Keep { record: Record },
    /// Everything of `name` was dropped.
    Forget { name: String },
}

impl Change {
    /// As it travels between nodes.
    pub(crate) fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

/// The store of a cluster node before it has joined: nothing can be kept
/// yet.
pub(crate) struct NotJoined;

impl RetainedStore for NotJoined {
    fn put(&self, _: &str, _: &[u8]) -> Result<(), String> {
        Err("the cluster is not joined yet".into())
    }
    fn forget(&self, _: &str) -> Result<Option<usize>, String> {
        Err("the cluster is not joined yet".into())
    }
    fn drop_keys(&self, _: &[String]) -> Result<(), String> {
        Ok(())
    }
}

impl RetainedStore for super::store::Store {
    fn put(&self, key: &str, record: &[u8]) -> Result<(), String> {
        self.put_retained(key, record)
    }

    fn forget(&self, name: &str) -> Result<Option<usize>, String> {
        let prefix = format!("{name}\0");
        self.remove_retained(&|k, _| k.starts_with(&prefix))
            .map(|()| None)
    }

    /// Only those still expired, as Redis's script does: a key kept again
    /// since it was found expired holds a new record.
    fn drop_keys(&self, keys: &[String]) -> Result<(), String> {
        let now = now_ms();
        self.remove_retained(&|k, json| {
            keys.iter().any(|g| g == k)
                && serde_json::from_slice::<Record>(json).is_ok_and(|r| r.expired(now))
        })
    }
}

/// One retained value as stored: what was sent and when it lapses.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    /// The name it is kept for.
    pub(crate) name: String,
    /// What a page gets.
    pub(crate) msg: Delivery,
    /// When it was set, in Unix milliseconds.
    pub(crate) set_ms: u64,
    /// When it expires, in Unix milliseconds; `None` never.
    pub(crate) expires_ms: Option<u64>,
}

impl Record {
    /// The key in the store: the name, then `w` for the text or `x` and
    /// the function for a call (a NUL between, which no name holds).
    pub(crate) fn key(&self) -> String {
        match &self.msg {
            Delivery::Write { .. } => format!("{}\0w", self.name),
            Delivery::Exec { func, .. } => format!("{}\0x\0{func}", self.name),
        }
    }

    fn expired(&self, now_ms: u64) -> bool {
        self.expires_ms.is_some_and(|e| e <= now_ms)
    }
}

/// A record and its frame, encoded once.
struct Held {
    record: Record,
    frame: Bytes,
    /// Order of setting, for the replay.
    seq: u64,
}

#[derive(Default)]
struct Map {
    /// By store key, so that one name's values are next to each other.
    values: BTreeMap<String, Held>,
    next_seq: u64,
}

/// The retained values; cheap to clone.
#[derive(Clone)]
pub(crate) struct Retained {
    map: Arc<Mutex<Map>>,
    /// Where values are kept; on a cluster node, set to Redis when it
    /// joins (and set again, with what Redis holds, at a new epoch).
    store: Arc<Mutex<Arc<dyn RetainedStore>>>,
    /// Retained writes take turns: each is stored, then held, then
    /// delivered, before the next starts, so that the store, the map and
    /// the pages agree on which came last.
    writes: Arc<tokio::sync::Mutex<()>>,
    /// The problems with records already reported, so that a bad record
    /// in Redis is reported once, not at every `ws retained`.
    reported: Arc<Mutex<HashSet<String>>>,
}

/// Unix milliseconds now.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Retained {
    /// Retained values kept in `store`, starting with the `loaded` records
    /// (key and JSON); unreadable, misnamed or expired ones are left out,
    /// and what was wrong with them is returned for the Monitor.
    pub(crate) fn new(
        store: Arc<dyn RetainedStore>,
        loaded: Vec<(String, Vec<u8>)>,
    ) -> (Retained, Vec<String>) {
        let (map, problems) = Map::loaded(loaded);
        let retained = Retained {
            map: Arc::new(Mutex::new(map)),
            store: Arc::new(Mutex::new(store)),
            writes: Arc::default(),
            reported: Arc::default(),
        };
        let problems = retained.first_reports(problems);
        (retained, problems)
    }

    /// Those of `problems` not reported before, now taken as reported.
    fn first_reports(&self, problems: Vec<String>) -> Vec<String> {
        if problems.is_empty() {
            return problems;
        }
        let mut reported = self.reported.lock().unwrap_or_else(|e| e.into_inner());
        // Bounded: past this many, a problem may be reported again.
        if reported.len() >= MAX_RETAINED {
            reported.clear();
        }
        problems
            .into_iter()
            .filter(|p| reported.insert(p.clone()))
            .collect()
    }

    /// Keeps values in `store` from now on, holding the `loaded` records
    /// in place of what was held (a cluster node joining, or finding Redis
    /// restarted); returns what was wrong with the records.
    pub(crate) async fn replace(
        &self,
        store: Arc<dyn RetainedStore>,
        loaded: Vec<(String, Vec<u8>)>,
    ) -> Vec<String> {
        let _turn = self.writes.lock().await;
        let (map, problems) = Map::loaded(loaded);
        *self.map() = map;
        *self.store.lock().unwrap_or_else(|e| e.into_inner()) = store;
        self.first_reports(problems)
    }

    /// Applies a change another node of the cluster made (it is in Redis
    /// already); a record whose name is not a valid name is left out, and
    /// what was wrong is returned for the Monitor (the first time).
    pub(crate) fn apply(&self, change: Change) -> Option<String> {
        match change {
            Change::Keep { record } if valid_name(&record.name).is_err() => {
                let problem = misnamed(&record.key());
                self.first_reports(vec![problem]).pop()
            }
            Change::Keep { record } if !record.expired(now_ms()) => {
                self.map().insert(record);
                None
            }
            Change::Keep { .. } => None,
            Change::Forget { name } => {
                self.map().remove_name(&name);
                None
            }
        }
    }

    fn map(&self) -> MutexGuard<'_, Map> {
        // Every update is one insert or remove.
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn store(&self) -> Arc<dyn RetainedStore> {
        self.store.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Keeps `msg` for `name`, lapsing after `ttl`: stored durably first,
    /// then held. Returns the turn the caller keeps while it delivers, so
    /// that the next retained write comes after, and the record kept (for
    /// the other nodes of a cluster).
    pub(crate) async fn keep(
        &self,
        name: &str,
        msg: &Delivery,
        ttl: Option<Duration>,
    ) -> Result<(tokio::sync::OwnedMutexGuard<()>, Record), String> {
        let turn = self.writes.clone().lock_owned().await;
        let now = now_ms();
        let record = Record {
            name: name.to_string(),
            msg: msg.clone(),
            set_ms: now,
            expires_ms: ttl.map(|t| now.saturating_add(u64::try_from(t.as_millis()).unwrap_or(0))),
        };
        self.check_room(&record)?;
        let key = record.key();
        let json = serde_json::to_vec(&record).map_err(|e| e.to_string())?;
        let store = self.store();
        let stored = tokio::task::spawn_blocking(move || store.put(&key, &json))
            .await
            .map_err(|e| e.to_string())?;
        stored.map_err(|e| format!("could not keep it: {e}"))?;
        self.map().insert(record.clone());
        Ok((turn, record))
    }

    /// Refuses a record that would take the map over its bounds.
    fn check_room(&self, record: &Record) -> Result<(), String> {
        let map = self.map();
        if map.values.contains_key(&record.key()) {
            return Ok(());
        }
        if map.values.len() >= MAX_RETAINED {
            return Err(format!(
                "{MAX_RETAINED} values are retained already, the most kept; 'ws forget' some"
            ));
        }
        if matches!(record.msg, Delivery::Exec { .. }) {
            let calls = map
                .of_name(&record.name)
                .filter(|h| matches!(h.record.msg, Delivery::Exec { .. }))
                .count();
            if calls >= MAX_CALLS_PER_NAME {
                return Err(format!(
                    "'{}' has {MAX_CALLS_PER_NAME} retained calls already, the most kept; \
                     'ws forget {}' drops them",
                    record.name, record.name
                ));
            }
        }
        Ok(())
    }

    /// Drops everything retained for `name`; returns how many values went.
    pub(crate) async fn forget(&self, name: &str) -> Result<usize, String> {
        let _turn = self.writes.lock().await;
        let store = self.store();
        let owned = name.to_string();
        let stored = tokio::task::spawn_blocking(move || store.forget(&owned))
            .await
            .map_err(|e| e.to_string())?;
        let dropped = stored.map_err(|e| format!("could not drop it: {e}"))?;
        let mut map = self.map();
        let held = map.of_name(name).count();
        map.remove_name(name);
        Ok(dropped.map_or(held, |n| n.max(held)))
    }

    /// Drops what has expired, here and in the store; in its turn among
    /// the retained writes, so that a value kept again meanwhile is not
    /// dropped from the store while it stays held.
    pub(crate) async fn purge(&self) {
        let _turn = self.writes.lock().await;
        let now = now_ms();
        let gone: Vec<String> = {
            let mut map = self.map();
            let gone: Vec<String> = map
                .values
                .iter()
                .filter(|(_, h)| h.record.expired(now))
                .map(|(k, _)| k.clone())
                .collect();
            for key in &gone {
                map.values.remove(key);
            }
            gone
        };
        if !gone.is_empty() {
            let store = self.store();
            // Best effort: an expired record left in the store is left out
            // when it is read again.
            let _ = tokio::task::spawn_blocking(move || store.drop_keys(&gone)).await;
        }
    }

    /// The frames a page that registers `name` gets, in the order they
    /// were set.
    pub(crate) fn frames_for(&self, name: &str, out: &mut Vec<Bytes>) {
        let now = now_ms();
        let map = self.map();
        let mut held: Vec<&Held> = map
            .of_name(name)
            .filter(|h| !h.record.expired(now))
            .collect();
        held.sort_by_key(|h| h.seq);
        out.extend(held.into_iter().map(|h| h.frame.clone()));
    }

    /// The `ws retained` listing: one line per value, as the store has
    /// them when it is shared with other daemons (Redis), else as held;
    /// and what was wrong with records left out, not reported before.
    pub(crate) async fn listing(&self) -> Result<(String, Vec<String>), String> {
        let store = self.store();
        let shared = tokio::task::spawn_blocking(move || store.shared_records())
            .await
            .map_err(|e| e.to_string())?;
        match shared {
            None => Ok((
                render(self.map().values.values().map(|h| &h.record)),
                Vec::new(),
            )),
            Some(Err(e)) => Err(format!("could not read them: {e}")),
            Some(Ok(loaded)) => {
                let (mut records, problems) = parse(loaded);
                records.sort_by_key(Record::key);
                Ok((render(records.iter()), self.first_reports(problems)))
            }
        }
    }

    /// How many values are retained now.
    pub(crate) fn len(&self) -> usize {
        self.map().values.len()
    }
}

/// The records of `loaded` (key and JSON), and what was wrong with those
/// that could not be read or whose name is not a valid name (Redis is
/// written by other programs too, and a name is printed in listings).
fn parse(loaded: Vec<(String, Vec<u8>)>) -> (Vec<Record>, Vec<String>) {
    let mut problems = Vec::new();
    let mut records: Vec<Record> = Vec::new();
    for (key, bytes) in loaded {
        match serde_json::from_slice::<Record>(&bytes) {
            Ok(r) if r.key() == key && valid_name(&r.name).is_ok() => records.push(r),
            Ok(r) if r.key() == key => problems.push(misnamed(&key)),
            _ => problems.push(format!(
                "retained value {} is unreadable and was left out",
                shown_key(&key)
            )),
        }
    }
    (records, problems)
}

/// What is wrong with the record under `key`, whose name is not valid.
fn misnamed(key: &str) -> String {
    format!(
        "retained value {} has an invalid name and was left out",
        shown_key(key)
    )
}

/// A store key in a one-line message: NULs as spaces, escaped, cut.
fn shown_key(key: &str) -> String {
    text::shown(&key.replace('\0', " "), PREVIEW_CHARS).to_string()
}

/// The `ws retained` listing of `records`, those expired left out.
fn render<'a>(records: impl Iterator<Item = &'a Record>) -> String {
    let now = now_ms();
    let mut out = String::new();
    for r in records.filter(|r| !r.expired(now)) {
        let age = Duration::from_millis(now.saturating_sub(r.set_ms));
        let expires = match r.expires_ms {
            None => "never".to_string(),
            Some(at) => format!("in {}", text::age(Duration::from_millis(at - now))),
        };
        let (what, value) = match &r.msg {
            Delivery::Write { text } => ("write".to_string(), text.as_str()),
            Delivery::Exec { func, arg } => (format!("exec {}", text::Escaped(func)), arg.as_str()),
        };
        let _ = writeln!(
            out,
            "{} {what} age={} expires={expires} \"{}\"",
            text::Escaped(&r.name),
            text::age(age),
            text::shown(value, PREVIEW_CHARS)
        );
    }
    if out.is_empty() {
        out.push_str("nothing retained ('ws write --retain NAME \"text\"' keeps a text)");
    }
    out.truncate(out.trim_end().len());
    out
}

impl Map {
    /// The `loaded` records (key and JSON) that are readable and not
    /// expired, and what was wrong with the others.
    fn loaded(loaded: Vec<(String, Vec<u8>)>) -> (Map, Vec<String>) {
        let mut map = Map::default();
        let now = now_ms();
        let (mut records, problems) = parse(loaded);
        records.sort_by_key(|r| r.set_ms);
        for record in records.into_iter().filter(|r| !r.expired(now)) {
            map.insert(record);
        }
        (map, problems)
    }

    fn remove_name(&mut self, name: &str) {
        let keys: Vec<String> = self.of_name(name).map(|h| h.record.key()).collect();
        for key in &keys {
            self.values.remove(key);
        }
    }

    fn insert(&mut self, record: Record) {
        let frame = record.msg.encode(&Target::Name(record.name.clone()));
        self.next_seq += 1;
        let held = Held {
            record,
            frame,
            seq: self.next_seq,
        };
        self.values.insert(held.record.key(), held);
    }

    /// The values of `name`: the keys that start with the name and a NUL.
    fn of_name<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a Held> + 'a {
        let prefix = format!("{name}\0");
        self.values
            .range(prefix.clone()..)
            .take_while(move |(k, _)| k.starts_with(&prefix))
            .map(|(_, h)| h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store that keeps nothing.
    struct Nowhere;

    impl RetainedStore for Nowhere {
        fn put(&self, _: &str, _: &[u8]) -> Result<(), String> {
            Ok(())
        }
        fn forget(&self, _: &str) -> Result<Option<usize>, String> {
            Ok(None)
        }
        fn drop_keys(&self, _: &[String]) -> Result<(), String> {
            Ok(())
        }
    }

    fn write(text: &str) -> Delivery {
        Delivery::Write { text: text.into() }
    }

    fn exec(func: &str, arg: &str) -> Delivery {
        Delivery::Exec {
            func: func.into(),
            arg: arg.into(),
        }
    }

    #[tokio::test]
    async fn one_text_and_one_call_per_function_replayed_in_order() {
        let (r, problems) = Retained::new(Arc::new(Nowhere), Vec::new());
        assert!(problems.is_empty());
        for (name, msg) in [
            ("gauge", exec("setLevel", "1")),
            ("gauge", write("old")),
            ("gauge", exec("setColor", "red")),
            ("gauge", exec("setLevel", "42")),
            ("gauge", write("new")),
            ("gauge2", write("other")),
        ] {
            drop(r.keep(name, &msg, None).await.expect("kept"));
        }
        let mut frames = Vec::new();
        r.frames_for("gauge", &mut frames);
        let texts: Vec<String> = frames
            .iter()
            .map(|f| String::from_utf8_lossy(&f[2..]).into_owned())
            .collect();
        assert_eq!(
            texts,
            [
                r#"{"type":"exec","name":"gauge","func":"setColor","arg":"red"}"#,
                r#"{"type":"exec","name":"gauge","func":"setLevel","arg":"42"}"#,
                r#"{"type":"write","name":"gauge","text":"new"}"#,
            ]
        );
        assert_eq!(r.forget("gauge").await, Ok(3));
        let mut frames = Vec::new();
        r.frames_for("gauge", &mut frames);
        assert!(frames.is_empty());
        assert_eq!(r.len(), 1);
    }

    #[tokio::test]
    async fn another_nodes_changes_apply_to_the_copy_as_they_travel() {
        let (r, _) = Retained::new(Arc::new(Nowhere), Vec::new());
        let record = |name: &str, msg: Delivery, expires_ms| Record {
            name: name.into(),
            msg,
            set_ms: now_ms(),
            expires_ms,
        };
        let copy: &dyn SharedRetained = &r;
        for change in [
            Change::Keep {
                record: record("s", write("kept"), None),
            },
            Change::Keep {
                record: record("s", exec("f", "1"), None),
            },
            Change::Keep {
                record: record("old", write("x"), Some(1)),
            },
        ] {
            copy.apply(&change.to_json());
        }
        copy.apply(&serde_json::json!({"change": "unknown"}));
        let mut frames = Vec::new();
        r.frames_for("s", &mut frames);
        assert_eq!(frames.len(), 2);
        assert_eq!(copy.len(), 2, "the expired one is not held");
        copy.apply(&Change::Forget { name: "s".into() }.to_json());
        assert_eq!(copy.len(), 0);
    }

    /// Purging takes expired keys out of the map, then drops them from
    /// the store off the async workers: a value kept again in between
    /// must survive in the store (and so across a restart).
    #[tokio::test]
    async fn a_value_kept_again_while_purged_stays_in_the_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let open = || super::super::store::Store::open(dir.path(), &mut |_| {});
        let (store, _) = open();
        let (r, _) = Retained::new(Arc::new(store), Vec::new());
        let expired = Record {
            name: "s".into(),
            msg: write("old"),
            set_ms: 1,
            expires_ms: Some(2),
        };
        let key = expired.key();
        let json = serde_json::to_vec(&expired).expect("json");
        r.store().put(&key, &json).expect("put");
        r.map().insert(expired);
        // Purge's first step, then a keep of the same key, then purge's
        // second step: the racy order.
        let gone = vec![key.clone()];
        r.map().values.remove(&key);
        drop(r.keep("s", &write("new"), None).await.expect("kept"));
        r.store().drop_keys(&gone).expect("dropped");
        assert_eq!(r.len(), 1);
        drop(r);
        let (_store, loaded) = open();
        let kept: Vec<Record> = loaded
            .retained
            .iter()
            .filter_map(|(_, json)| serde_json::from_slice(json).ok())
            .collect();
        assert_eq!(
            kept.iter().map(|r| &r.msg).collect::<Vec<_>>(),
            [&write("new")],
            "the value kept again is still in the store"
        );
    }

    #[tokio::test]
    async fn a_record_with_an_invalid_name_from_another_node_is_left_out() {
        let (r, _) = Retained::new(Arc::new(Nowhere), Vec::new());
        let copy: &dyn SharedRetained = &r;
        let forged = Change::Keep {
            record: Record {
                name: "s\nforged write".into(),
                msg: write("x"),
                set_ms: now_ms(),
                expires_ms: None,
            },
        };
        let first = copy.apply(&forged.to_json());
        let again = copy.apply(&forged.to_json());
        assert_eq!(copy.len(), 0, "the misnamed record is not held");
        let listed = r.listing().await.expect("listing");
        assert!(!format!("{listed:?}").contains("forged"), "{listed:?}");
        assert_eq!(
            format!("{first:?} {again:?}"),
            r#"Some("retained value s\\nforged write w has an invalid name and was left out") None"#,
            "reported once, escaped"
        );
    }

    #[tokio::test]
    async fn expired_values_are_not_replayed_or_loaded() {
        let (r, _) = Retained::new(Arc::new(Nowhere), Vec::new());
        drop(
            r.keep("s", &write("x"), Some(Duration::from_millis(1)))
                .await
                .expect("kept"),
        );
        std::thread::sleep(Duration::from_millis(5));
        let mut frames = Vec::new();
        r.frames_for("s", &mut frames);
        assert!(frames.is_empty());
        r.purge().await;
        assert_eq!(r.len(), 0);

        let old = Record {
            name: "s".into(),
            msg: write("y"),
            set_ms: 1,
            expires_ms: Some(2),
        };
        let fresh = Record {
            expires_ms: None,
            ..old.clone()
        };
        let loaded = vec![
            (old.key(), serde_json::to_vec(&old).expect("json")),
            ("t\0w".to_string(), b"{not json".to_vec()),
            (
                "s\0w".to_string(),
                serde_json::to_vec(&fresh).expect("json"),
            ),
        ];
        let (r, problems) = Retained::new(Arc::new(Nowhere), loaded);
        assert_eq!(r.len(), 1);
        assert_eq!(problems.len(), 1, "{problems:?}");
    }
}
