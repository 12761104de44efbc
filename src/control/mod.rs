//! The control socket: a local Unix socket that lets the CLI drive the daemon.
//!
//! The wire format is newline-delimited JSON, one message per line:
//!
//! | direction | message | meaning |
//! |---|---|---|
//! | client -> daemon | `{"cmd":"ws write status \"VPN up\""}` | run one command line |
//! | daemon -> client | `{"ok":true,"output":"..."}` | its reply (one per request) |
//! | client -> daemon | `{"monitor":true}` | turn this connection into a Monitor tail |
//! | daemon -> client | `{"line":"..."}` | one Monitor line |
//! | daemon -> client | `{"missed":N}` | the watcher fell behind and N lines were skipped |
//!
//! Many requests may follow each other on one connection (`pagewire console`
//! keeps one open). A malformed request gets an `ok:false` reply and the
//! connection stays usable; a request line longer than [`MAX_REQUEST_LINE`]
//! gets an `ok:false` reply and the connection is closed, because the rest of
//! that line cannot be told apart from the next request. Unknown fields are
//! ignored so that a newer client can talk to an older daemon.
//!
//! [`server`] is the daemon side, [`client`] what the CLI uses. This module
//! holds the wire types, the socket path rules and [`bind`].

pub mod client;
pub mod server;

use std::borrow::Cow;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufRead, AsyncBufReadExt};
use tokio::net::UnixListener;

pub use client::{run_command, watch, Client, ClientError};
pub use server::serve;

/// The longest request line the daemon accepts, in bytes (newline excluded).
pub const MAX_REQUEST_LINE: usize = 128 * 1024;

/// The longest answer line the client accepts, in bytes; a `ws` listing of
/// many connections is far below this, a runaway peer is not.
pub const MAX_ANSWER_LINE: usize = 16 * 1024 * 1024;

/// How many control connections may be open at once (monitor tails included).
pub const MAX_CONNECTIONS: usize = 64;

/// What a client asks for, one per line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// Run this command line.
    Command(String),
    /// Stream Monitor lines on this connection from now on.
    Monitor,
}

/// The JSON shape of a request, before it is checked.
#[derive(Serialize, Deserialize)]
struct RawRequest<'a> {
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    cmd: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    monitor: bool,
}

impl Request {
    /// Parses one request line (without its newline).
    pub fn from_json(bytes: &[u8]) -> Result<Request, String> {
        // serde would also take a struct from an array; only objects are requests.
        if bytes.trim_ascii_start().first() != Some(&b'{') {
            return Err("expected a JSON object".into());
        }
        let raw: RawRequest<'_> = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        match (raw.cmd, raw.monitor) {
            (Some(cmd), false) => Ok(Request::Command(cmd.into_owned())),
            (None, true) => Ok(Request::Monitor),
            (Some(_), true) => Err("a request has either \"cmd\" or \"monitor\", not both".into()),
            (None, false) => {
                Err("expected {\"cmd\":\"COMMAND LINE\"} or {\"monitor\":true}".into())
            }
        }
    }

    /// Renders the request as one line, newline included.
    pub fn to_json_line(&self) -> Vec<u8> {
        let raw = match self {
            Request::Command(cmd) => RawRequest {
                cmd: Some(Cow::Borrowed(cmd)),
                monitor: false,
            },
            Request::Monitor => RawRequest {
                cmd: None,
                monitor: true,
            },
        };
        json_line(&raw)
    }
}

/// What the daemon sends, one per line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Answer {
    /// The reply to one command request.
    Reply {
        /// Whether the command succeeded.
        ok: bool,
        /// Its output, or the one-line error.
        output: String,
    },
    /// One Monitor line (monitor connections only).
    Line {
        /// The rendered line, without a newline.
        line: String,
    },
    /// The watcher fell behind; this many Monitor lines were skipped.
    Missed {
        /// How many lines were skipped.
        missed: u64,
    },
}

impl Answer {
    /// A failed reply produced by the control socket itself.
    pub fn error(output: impl Into<String>) -> Answer {
        Answer::Reply {
            ok: false,
            output: output.into(),
        }
    }

    /// Parses one answer line (without its newline).
    pub fn from_json(bytes: &[u8]) -> Result<Answer, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// Renders the answer as one line, newline included.
    pub fn to_json_line(&self) -> Vec<u8> {
        json_line(self)
    }
}

impl From<crate::exec::Reply> for Answer {
    fn from(reply: crate::exec::Reply) -> Answer {
        Answer::Reply {
            ok: reply.ok,
            output: reply.output,
        }
    }
}

fn json_line(value: &impl Serialize) -> Vec<u8> {
    // Serialising these plain structs of strings, bools and integers cannot
    // fail (no maps with non-string keys, no failing Serialize impls).
    let mut bytes = serde_json::to_vec(value).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

/// How reading one line ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum LineRead {
    /// A line is in the buffer (a last line without newline counts too).
    Line,
    /// The line is longer than the limit; the buffer holds a prefix of it.
    TooLong,
    /// The peer closed the connection before sending anything more.
    Eof,
}

/// Reads one line into `buf` (newline removed), refusing to buffer more
/// than `limit` bytes, so a peer cannot make us hold an endless line.
pub(crate) async fn read_line_limited<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    limit: usize,
) -> io::Result<LineRead> {
    buf.clear();
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(if buf.is_empty() {
                LineRead::Eof
            } else {
                LineRead::Line
            });
        }
        let (chunk, found) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (&available[..i], true),
            None => (available, false),
        };
        if buf.len() + chunk.len() > limit {
            return Ok(LineRead::TooLong);
        }
        buf.extend_from_slice(chunk);
        let used = chunk.len() + usize::from(found);
        reader.consume(used);
        if found {
            return Ok(LineRead::Line);
        }
    }
}

/// Why the control socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// A live daemon answers on the path already.
    #[error("another pagewire daemon is already listening on {}", .path.display())]
    AlreadyRunning {
        /// The control socket path.
        path: PathBuf,
    },
    /// Something that is not a socket is in the way; it is not ours to delete.
    #[error("{} exists and is not a socket; remove it or choose another --control path", .path.display())]
    NotASocket {
        /// The control socket path.
        path: PathBuf,
    },
    /// A socket owned by another user is in the way.
    #[error("{} belongs to another user (uid {owner}); choose another --control path", .path.display())]
    ForeignOwner {
        /// The control socket path.
        path: PathBuf,
        /// The uid owning it.
        owner: u32,
    },
    /// A system call failed.
    #[error("cannot {action} {}: {source}", .path.display())]
    Io {
        /// What was being done, e.g. "bind the control socket".
        action: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

impl ControlError {
    fn io(action: &'static str, path: &Path, source: io::Error) -> ControlError {
        ControlError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Binds the control socket at `path`, ready to hand to [`serve`].
///
/// The parent directory is created (mode 0700) when missing. A socket file
/// left behind by a daemon that crashed is removed; one that a live daemon
/// answers on is an error, as is anything that is not a socket. The socket
/// is made mode 0600: only this user may drive the daemon (and [`serve`]
/// checks the peer's uid as well). Must be called inside a Tokio runtime.
pub fn bind(path: &Path) -> Result<UnixListener, ControlError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(|e| ControlError::io("create the directory", parent, e))?;
        }
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) => clear_stale(path, &meta)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(ControlError::io("inspect", path, e)),
    }
    let listener = UnixListener::bind(path)
        .map_err(|e| ControlError::io("bind the control socket", path, e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| ControlError::io("restrict the permissions of", path, e))?;
    Ok(listener)
}

/// Decides what to do with something already at the socket path.
fn clear_stale(path: &Path, meta: &std::fs::Metadata) -> Result<(), ControlError> {
    if !meta.file_type().is_socket() {
        return Err(ControlError::NotASocket {
            path: path.to_path_buf(),
        });
    }
    if let Some(me) = current_uid() {
        if meta.uid() != me && me != 0 {
            return Err(ControlError::ForeignOwner {
                path: path.to_path_buf(),
                owner: meta.uid(),
            });
        }
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(ControlError::AlreadyRunning {
            path: path.to_path_buf(),
        }),
        // Nobody listens: a daemon died without cleaning up.
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => std::fs::remove_file(path)
            .or_else(|e| match e.kind() {
                io::ErrorKind::NotFound => Ok(()),
                _ => Err(e),
            })
            .map_err(|e| ControlError::io("remove the stale socket", path, e)),
        Err(e) => Err(ControlError::io("probe the existing socket", path, e)),
    }
}

/// Removes the socket file at `path`; a missing file is not an error.
pub fn remove(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Removes the control socket file when dropped (daemon shutdown).
///
/// Create it right after [`bind`]. It remembers which file it guards, so a
/// socket that another daemon has since bound at the same path (after ours
/// was deleted by hand) is left alone.
#[derive(Debug)]
pub struct SocketGuard {
    path: PathBuf,
    identity: Option<FileIdentity>,
}

/// Device, inode and change time: inode numbers alone are reused at once
/// on some file systems when a file is deleted and another created.
type FileIdentity = (u64, u64, i64, i64);

impl SocketGuard {
    /// Guards the socket file now at `path`.
    pub fn new(path: &Path) -> SocketGuard {
        SocketGuard {
            path: path.to_path_buf(),
            identity: file_identity(path),
        }
    }

    /// The guarded path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SocketGuard {
    fn drop(&mut self) {
        if self.identity.is_some() && file_identity(&self.path) == self.identity {
            if let Err(e) = remove(&self.path) {
                tracing::warn!("cannot remove {}: {e}", self.path.display());
            }
        }
    }
}

fn file_identity(path: &Path) -> Option<FileIdentity> {
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino(), m.ctime(), m.ctime_nsec()))
}

/// The control socket path used when `--control` is not given:
/// `$PAGEWIRE_CONTROL` if set, else `$XDG_RUNTIME_DIR/pagewire.sock` if that
/// directory exists, else `/tmp/pagewire-UID.sock`.
pub fn default_path() -> PathBuf {
    default_path_from(
        std::env::var_os("PAGEWIRE_CONTROL"),
        std::env::var_os("XDG_RUNTIME_DIR"),
        current_uid(),
    )
}

fn default_path_from(
    explicit: Option<std::ffi::OsString>,
    runtime_dir: Option<std::ffi::OsString>,
    uid: Option<u32>,
) -> PathBuf {
    if let Some(path) = explicit.filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    if let Some(dir) = runtime_dir.filter(|d| !d.is_empty()).map(PathBuf::from) {
        if dir.is_dir() {
            return dir.join("pagewire.sock");
        }
    }
    match uid {
        Some(uid) => PathBuf::from(format!("/tmp/pagewire-{uid}.sock")),
        None => PathBuf::from("/tmp/pagewire.sock"),
    }
}

/// The uid this process runs as, read without `libc`: on Linux `/proc/self`
/// belongs to the process's user; elsewhere the home directory's owner is
/// the best guess.
pub fn current_uid() -> Option<u32> {
    let meta = std::fs::metadata("/proc/self").ok().or_else(|| {
        let home = std::env::var_os("HOME")?;
        std::fs::metadata(home).ok()
    })?;
    Some(meta.uid())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse() {
        let ok: &[(&str, Request)] = &[
            (r#"{"cmd":"ws"}"#, Request::Command("ws".into())),
            (
                r#"{"cmd":"ws write status \"VPN up\""}"#,
                Request::Command(r#"ws write status "VPN up""#.into()),
            ),
            (r#"{"cmd":""}"#, Request::Command(String::new())),
            (r#"{"monitor":true}"#, Request::Monitor),
            (r#" {"cmd":"ws","id":7} "#, Request::Command("ws".into())),
            (
                r#"{"cmd":"ws","monitor":false}"#,
                Request::Command("ws".into()),
            ),
        ];
        for (line, want) in ok {
            assert_eq!(
                Request::from_json(line.as_bytes()).as_ref(),
                Ok(want),
                "{line}"
            );
        }
        let bad = [
            "",
            "ws write status x",
            "{}",
            r#"{"monitor":false}"#,
            r#"{"cmd":"ws","monitor":true}"#,
            r#"{"cmd":7}"#,
            r#"["ws"]"#,
            "{\"cmd\":\"\u{0}",
        ];
        for line in bad {
            assert!(Request::from_json(line.as_bytes()).is_err(), "{line:?}");
        }
        assert!(Request::from_json(b"{\"cmd\":\"\xff\"}").is_err());
    }

    #[test]
    fn requests_serialize() {
        let cases = [
            (Request::Command("ws".into()), "{\"cmd\":\"ws\"}\n"),
            (
                Request::Command("ws write s \"a\\b\"\n".into()),
                "{\"cmd\":\"ws write s \\\"a\\\\b\\\"\\n\"}\n",
            ),
            (Request::Monitor, "{\"monitor\":true}\n"),
        ];
        for (request, want) in cases {
            let line = request.to_json_line();
            assert_eq!(String::from_utf8_lossy(&line), want);
            let back = Request::from_json(&line[..line.len() - 1]);
            assert_eq!(back, Ok(request));
        }
    }

    #[test]
    fn answers_round_trip() {
        let cases = [
            (
                Answer::Reply {
                    ok: true,
                    output: "1 connection".into(),
                },
                r#"{"ok":true,"output":"1 connection"}"#,
            ),
            (Answer::error("no"), r#"{"ok":false,"output":"no"}"#),
            (
                Answer::Line {
                    line: "12:00:00.000 opened #1".into(),
                },
                r#"{"line":"12:00:00.000 opened #1"}"#,
            ),
            (Answer::Missed { missed: 3 }, r#"{"missed":3}"#),
        ];
        for (answer, want) in cases {
            let line = answer.to_json_line();
            assert_eq!(String::from_utf8_lossy(&line), format!("{want}\n"));
            assert_eq!(Answer::from_json(want.as_bytes()).ok(), Some(answer));
        }
        assert!(Answer::from_json(br#"{"what":1}"#).is_err());
    }

    #[tokio::test]
    async fn lines_are_limited() {
        let mut input: &[u8] = b"abc\n\ndefgh\r\nxyz";
        let mut buf = Vec::new();
        let mut got = Vec::new();
        loop {
            match read_line_limited(&mut input, &mut buf, 5).await {
                Ok(LineRead::Line) => got.push(String::from_utf8_lossy(&buf).into_owned()),
                Ok(other) => {
                    got.push(format!("{other:?}"));
                    break;
                }
                Err(e) => panic!("{e}"),
            }
        }
        // "defgh\r" is six bytes: one over the limit.
        assert_eq!(got, ["abc", "", "TooLong"]);

        let mut input: &[u8] = b"12345\nxyz";
        let mut got = Vec::new();
        while let Ok(LineRead::Line) = read_line_limited(&mut input, &mut buf, 5).await {
            got.push(String::from_utf8_lossy(&buf).into_owned());
        }
        assert_eq!(got, ["12345", "xyz"]);
    }

    #[test]
    fn default_path_rules() {
        let tmp = std::env::temp_dir();
        let cases = [
            (
                Some("/x/ctl.sock"),
                Some(tmp.as_os_str()),
                Some(1000),
                "/x/ctl.sock".into(),
            ),
            (
                Some(""),
                Some(tmp.as_os_str()),
                Some(1000),
                tmp.join("pagewire.sock"),
            ),
            (
                None,
                Some(tmp.as_os_str()),
                Some(1000),
                tmp.join("pagewire.sock"),
            ),
            (
                None,
                Some("/nonexistent/run".as_ref()),
                Some(1000),
                "/tmp/pagewire-1000.sock".into(),
            ),
            (None, None, Some(7), "/tmp/pagewire-7.sock".into()),
            (None, None, None, PathBuf::from("/tmp/pagewire.sock")),
        ];
        for (explicit, runtime, uid, want) in cases {
            let got = default_path_from(explicit.map(Into::into), runtime.map(Into::into), uid);
            assert_eq!(got, want);
        }
    }

    #[tokio::test]
    async fn bind_creates_parent_and_restricts_mode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("run/sub/ctl.sock");
        let listener = bind(&path).expect("bind");
        let meta = std::fs::metadata(&path).expect("socket exists");
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let parent = std::fs::metadata(dir.path().join("run/sub")).expect("parent");
        assert_eq!(parent.permissions().mode() & 0o777, 0o700);
        drop(listener);
    }

    #[tokio::test]
    async fn bind_refuses_a_live_socket_and_replaces_a_stale_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ctl.sock");
        let live = bind(&path).expect("first bind");
        match bind(&path) {
            Err(e @ ControlError::AlreadyRunning { .. }) => {
                assert_eq!(
                    e.to_string(),
                    format!(
                        "another pagewire daemon is already listening on {}",
                        path.display()
                    )
                );
            }
            other => panic!("expected AlreadyRunning, got {other:?}"),
        }
        drop(live);
        // The file outlives the listener, as after a crash.
        assert!(path.exists());
        let again = bind(&path).expect("stale socket replaced");
        drop(again);
    }

    #[tokio::test]
    async fn bind_leaves_other_files_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notes.txt");
        std::fs::write(&path, "keep me").expect("write");
        assert!(matches!(bind(&path), Err(ControlError::NotASocket { .. })));
        assert_eq!(
            std::fs::read_to_string(&path).ok().as_deref(),
            Some("keep me")
        );
    }

    #[tokio::test]
    async fn guard_removes_only_its_own_socket() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ctl.sock");
        let listener = bind(&path).expect("bind");
        let guard = SocketGuard::new(&path);
        drop(guard);
        assert!(!path.exists());
        drop(listener);

        let first = bind(&path).expect("bind");
        let guard = SocketGuard::new(&path);
        drop(first);
        std::fs::remove_file(&path).expect("remove by hand");
        let second = bind(&path).expect("bind again");
        drop(guard);
        assert!(path.exists(), "a newer daemon's socket must survive");
        drop(second);
        assert!(remove(&path).is_ok());
        assert!(remove(&path).is_ok(), "removing twice is fine");
    }
}
