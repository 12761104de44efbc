//! Where the daemon's control socket is, and binding it safely: a private
//! directory when another user's file is in the way, a stale socket of
//! ours replaced, and the file removed at shutdown.

use std::hash::{BuildHasher, Hasher};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::UnixListener;

use super::trust;

/// Why the control socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ControlError {
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
    /// The path cannot hold a control socket (not another user's doing:
    /// that is worked around, see [`bind`]).
    #[error("cannot use {} for the control socket: {why}", .path.display())]
    Unusable {
        /// The control socket path.
        path: PathBuf,
        /// What is wrong with it.
        why: trust::Untrusted,
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

/// The daemon's control socket, as [`bind`] set it up.
#[derive(Debug)]
pub(crate) struct Bound {
    /// The listener to hand to [`super::serve`] (taken from here to do so); `None`
    /// when the daemon serves without a control socket (see [`bind`]).
    pub(crate) listener: Option<UnixListener>,
    /// The socket's path; `None` without a control socket.
    pub(crate) path: Option<PathBuf>,
    /// What was found in the way, and what was done instead: a line for
    /// the Monitor.
    pub(crate) notice: Option<String>,
    /// A directory made for this daemon alone, removed with the socket.
    private_dir: Option<PathBuf>,
}

impl Bound {
    /// A guard that removes the socket (and a private directory made for
    /// it) at shutdown; `None` without a socket.
    pub(crate) fn guard(&self) -> Option<SocketGuard> {
        let mut guard = SocketGuard::new(self.path.as_deref()?);
        guard.dir = self.private_dir.clone();
        Some(guard)
    }

    /// How the ready line names it: `control socket PATH`, or
    /// `no control socket`.
    pub(crate) fn describe(&self) -> String {
        match &self.path {
            Some(path) => format!("control socket {}", path.display()),
            None => "no control socket".to_owned(),
        }
    }
}

/// Why binding at one path did not work.
enum Refused {
    /// Another user's file or directory is in the way: left alone.
    Foreign(trust::Untrusted),
    /// Anything else: the daemon does not start.
    Error(ControlError),
}

impl From<ControlError> for Refused {
    fn from(e: ControlError) -> Refused {
        Refused::Error(e)
    }
}

/// Binds the control socket at `path`, ready to hand to [`super::serve`].
///
/// The parent directory is created (mode 0700) when missing. It, and every
/// directory above it, must pass the [`trust`] rule. A socket file left
/// behind by a daemon of ours that crashed is removed; one that a live
/// daemon answers on is an error, as is a file of ours that is not a
/// socket. The socket is made mode 0600: only this user may drive the
/// daemon (and [`super::serve`] checks the peer's uid as well).
///
/// When another user's file is at the path, or a directory on the way
/// belongs to another user or is writable by others, nothing there is
/// touched or connected to: the socket goes into a new private directory
/// (`pagewire-UID-RANDOM`, mode 0700, in `$XDG_RUNTIME_DIR`, `/run` for
/// root, or the temporary directory), and [`Bound::notice`] says what was
/// found and where the socket is. If even that fails the daemon serves
/// without a control socket, and the notice says so. Must be called inside
/// a Tokio runtime.
pub(crate) fn bind(path: &Path) -> Result<Bound, ControlError> {
    let trust = trust::Trust::current();
    let why = match bind_at(path, trust) {
        Ok((listener, path)) => {
            return Ok(Bound {
                listener: Some(listener),
                path: Some(path),
                notice: None,
                private_dir: None,
            })
        }
        Err(Refused::Error(e)) => return Err(e),
        Err(Refused::Foreign(why)) => why,
    };
    let found = format!("control: not using {}: {why}; left alone", path.display());
    Ok(match bind_private(trust) {
        Ok((listener, socket)) => {
            let shown = socket.display();
            Bound {
                notice: Some(format!(
                    "{found}. The control socket is {shown} instead: \
                     use `pagewire --control {shown} ...` or PAGEWIRE_CONTROL={shown}"
                )),
                listener: Some(listener),
                private_dir: socket.parent().map(Path::to_path_buf),
                path: Some(socket),
            }
        }
        Err(e) => Bound {
            notice: Some(format!(
                "{found}. No other control socket either ({e}): serving without one; \
                 send commands on the console or with POST /api/command"
            )),
            listener: None,
            path: None,
            private_dir: None,
        },
    })
}

/// Binds at `path` if nothing of another user's is in the way; returns the
/// listener and the path bound (in the resolved directory).
fn bind_at(path: &Path, trust: trust::Trust) -> Result<(UnixListener, PathBuf), Refused> {
    let dir = trust::parent_dir(path);
    // `exists` follows links: a dangling one fails the creation below.
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| ControlError::io("create the directory", dir, e))?;
    }
    let target = match trust::check_dirs(path, trust) {
        Ok(Some(target)) => target,
        Ok(None) => {
            let gone = io::Error::from(io::ErrorKind::NotFound);
            return Err(ControlError::io("find the directory", dir, gone).into());
        }
        Err(why) if why.is_foreign() => return Err(Refused::Foreign(why)),
        Err(trust::Untrusted::Inspect { path, source }) => {
            return Err(ControlError::io("inspect", &path, source).into())
        }
        Err(why) => {
            return Err(ControlError::Unusable {
                path: path.to_path_buf(),
                why,
            }
            .into())
        }
    };
    match std::fs::symlink_metadata(&target) {
        Ok(meta) if !trust.allows_socket_owner(meta.uid()) => {
            return Err(Refused::Foreign(trust::Untrusted::ForeignOwner {
                owner: meta.uid(),
                me: trust.uid(),
            }))
        }
        Ok(meta) => clear_stale(&target, &meta)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(ControlError::io("inspect", &target, e).into()),
    }
    let listener = UnixListener::bind(&target).map_err(|e| {
        // Someone else's file may have appeared since it was looked at (in
        // a sticky directory such as /tmp): that is worked around too.
        match std::fs::symlink_metadata(&target) {
            Ok(meta)
                if e.kind() == io::ErrorKind::AddrInUse
                    && !trust.allows_socket_owner(meta.uid()) =>
            {
                Refused::Foreign(trust::Untrusted::ForeignOwner {
                    owner: meta.uid(),
                    me: trust.uid(),
                })
            }
            _ => ControlError::io("bind the control socket", &target, e).into(),
        }
    })?;
    // The service's socket is its group's too (see `trust`).
    let mode = match serves_group(&target) {
        Some(_) => 0o660,
        None => 0o600,
    };
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode))
        .map_err(|e| ControlError::io("restrict the permissions of", &target, e))?;
    Ok((listener, target))
}

/// The group whose members the daemon serves too, when it runs as the
/// package's service user with its socket at `path` in the service's
/// runtime directory; `None` otherwise (only its own user, and root).
pub(crate) fn serves_group(path: &Path) -> Option<u32> {
    if trust::parent_dir(path) != Path::new(trust::SERVICE_DIR) {
        return None;
    }
    let (uid, gid) = trust::service_user()?;
    (uid == trust::current_uid()).then_some(gid)
}

/// How many fresh names to try for a private directory before giving up.
const PRIVATE_DIR_ATTEMPTS: usize = 16;

/// Binds in a directory made now, with a name no one can have taken
/// first: `mkdir` fails on an existing name, so what is made is ours.
fn bind_private(trust: trust::Trust) -> Result<(UnixListener, PathBuf), ControlError> {
    let base = private_base(trust.uid());
    for _ in 0..PRIVATE_DIR_ATTEMPTS {
        let dir = base.join(format!("pagewire-{}-{:08x}", trust.uid(), random_u32()));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(ControlError::io("create a private directory in", &base, e)),
        }
        let bound = bind_at(&dir.join("pagewire.sock"), trust);
        return bound.map_err(|refused| {
            // Leave nothing behind in a place we could not use.
            let _ = std::fs::remove_dir(&dir);
            match refused {
                Refused::Error(e) => e,
                Refused::Foreign(why) => ControlError::Unusable { path: dir, why },
            }
        });
    }
    Err(ControlError::io(
        "create a private directory in",
        &base,
        io::Error::from(io::ErrorKind::AlreadyExists),
    ))
}

/// Where a private directory for the socket goes: the user's runtime
/// directory, `/run` for root, else the temporary directory.
fn private_base(uid: u32) -> PathBuf {
    match own_runtime_dir(std::env::var_os("XDG_RUNTIME_DIR"), uid) {
        Some(dir) => dir,
        None if uid == 0 => PathBuf::from("/run"),
        None => std::env::temp_dir(),
    }
}

/// `$XDG_RUNTIME_DIR` if it is a directory of user `uid`'s, as the XDG
/// specification requires; one of another user's (kept by `sudo`, say) is
/// not used.
fn own_runtime_dir(runtime_dir: Option<std::ffi::OsString>, uid: u32) -> Option<PathBuf> {
    let dir = PathBuf::from(runtime_dir.filter(|d| !d.is_empty())?);
    let meta = std::fs::metadata(&dir).ok()?;
    (meta.is_dir() && meta.uid() == uid).then_some(dir)
}

/// 32 random bits: `RandomState` is seeded from the operating system.
fn random_u32() -> u32 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    // Truncation keeps the low bits, which are as random as the rest.
    hasher.finish() as u32
}

/// Decides what to do with a file of ours already at the socket path.
fn clear_stale(path: &Path, meta: &std::fs::Metadata) -> Result<(), ControlError> {
    if !meta.file_type().is_socket() {
        return Err(ControlError::NotASocket {
            path: path.to_path_buf(),
        });
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
pub(crate) fn remove(path: &Path) -> io::Result<()> {
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
pub(crate) struct SocketGuard {
    path: PathBuf,
    identity: Option<FileIdentity>,
    /// A directory made for this socket alone, removed after it if empty.
    dir: Option<PathBuf>,
}

/// Device, inode and change time: inode numbers alone are reused at once
/// on some file systems when a file is deleted and another created.
pub(super) type FileIdentity = (u64, u64, i64, i64);

impl SocketGuard {
    /// Guards the socket file now at `path`.
    pub(crate) fn new(path: &Path) -> SocketGuard {
        SocketGuard {
            path: path.to_path_buf(),
            identity: file_identity(path),
            dir: None,
        }
    }
}

impl Drop for SocketGuard {
    fn drop(&mut self) {
        if self.identity.is_some() && file_identity(&self.path) == self.identity {
            if let Err(e) = remove(&self.path) {
                tracing::warn!("cannot remove {}: {e}", self.path.display());
            }
        }
        if let Some(dir) = &self.dir {
            // Fails, as it should, if anything else is in it now.
            let _ = std::fs::remove_dir(dir);
        }
    }
}

pub(super) fn file_identity(path: &Path) -> Option<FileIdentity> {
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino(), m.ctime(), m.ctime_nsec()))
}

/// The control socket the CLI uses when `--control` is not given: its
/// user's own ([`default_path`]) when a socket is there, else the
/// service's (`/run/pagewire/pagewire.sock`) when this user is in the
/// service user's group and that socket exists, else its own again (for
/// the error to name).
pub(crate) fn client_default_path() -> PathBuf {
    let own = default_path();
    let service = Path::new(trust::SERVICE_DIR).join("pagewire.sock");
    let exists = |p: &Path| std::fs::symlink_metadata(p).is_ok();
    if !exists(&own)
        && exists(&service)
        && trust::Trust::for_socket(&service) != trust::Trust::current()
    {
        return service;
    }
    own
}

/// The control socket path used when `--control` is not given:
/// `$PAGEWIRE_CONTROL` if set, else `$XDG_RUNTIME_DIR/pagewire.sock` if that
/// directory exists and is this user's, else `/run/pagewire/pagewire.sock` for root
/// and the package's service user, and
/// `/tmp/pagewire-UID/pagewire.sock` for other users: never a socket
/// directly in a directory others can write to.
pub(crate) fn default_path() -> PathBuf {
    default_path_from(
        std::env::var_os("PAGEWIRE_CONTROL"),
        std::env::var_os("XDG_RUNTIME_DIR"),
        trust::current_uid(),
    )
}

fn default_path_from(
    explicit: Option<std::ffi::OsString>,
    runtime_dir: Option<std::ffi::OsString>,
    uid: u32,
) -> PathBuf {
    if let Some(path) = explicit.filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    if let Some(dir) = own_runtime_dir(runtime_dir, uid) {
        return dir.join("pagewire.sock");
    }
    if uid == 0 || trust::service_user().is_some_and(|(service, _)| service == uid) {
        PathBuf::from("/run/pagewire/pagewire.sock")
    } else {
        PathBuf::from(format!("/tmp/pagewire-{uid}/pagewire.sock"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_path_rules() {
        // A runtime directory of root's (the tests run as root).
        let run = tempfile::tempdir().expect("tempdir");
        let run = run.path();
        let cases = [
            (
                Some("/x/ctl.sock"),
                Some(run.as_os_str()),
                1000,
                "/x/ctl.sock".into(),
            ),
            (
                Some(""),
                Some(run.as_os_str()),
                0,
                run.join("pagewire.sock"),
            ),
            (None, Some(run.as_os_str()), 0, run.join("pagewire.sock")),
            // Another user's runtime directory is not used.
            (
                None,
                Some(run.as_os_str()),
                1000,
                "/tmp/pagewire-1000/pagewire.sock".into(),
            ),
            (
                None,
                Some("/nonexistent/run".as_ref()),
                1000,
                "/tmp/pagewire-1000/pagewire.sock".into(),
            ),
            (None, None, 7, "/tmp/pagewire-7/pagewire.sock".into()),
            (None, None, 0, PathBuf::from("/run/pagewire/pagewire.sock")),
            (
                None,
                Some("".as_ref()),
                0,
                PathBuf::from("/run/pagewire/pagewire.sock"),
            ),
        ];
        for (explicit, runtime, uid, want) in cases {
            let got = default_path_from(explicit.map(Into::into), runtime.map(Into::into), uid);
            assert_eq!(got, want, "{explicit:?} {runtime:?} {uid}");
        }
    }

    #[tokio::test]
    async fn bind_creates_parent_and_restricts_mode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("run/sub/ctl.sock");
        let bound = bind(&path).expect("bind");
        assert_eq!(
            (bound.path.as_deref(), bound.notice.as_deref()),
            (Some(path.as_path()), None)
        );
        let meta = std::fs::metadata(&path).expect("socket exists");
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let parent = std::fs::metadata(dir.path().join("run/sub")).expect("parent");
        assert_eq!(parent.permissions().mode() & 0o777, 0o700);
        drop(bound);
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

    #[tokio::test]
    async fn bind_works_around_another_users_socket() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ctl.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).expect("bind"));
        // Needs root, as the tests run in CI.
        std::os::unix::fs::chown(&path, Some(65534), Some(65534)).expect("chown");
        let bound = bind(&path).expect("bound elsewhere");
        assert!(bound.listener.is_some());
        let used = bound.path.clone().expect("a socket");
        assert_ne!(used, path);
        let notice = bound.notice.clone().unwrap_or_default();
        assert!(
            notice.starts_with(&format!(
                "control: not using {}: it belongs to uid 65534, not to this user (uid 0); left alone.",
                path.display()
            )),
            "{notice}"
        );
        assert!(notice.contains(&used.display().to_string()), "{notice}");
        let private = used.parent().expect("a directory").to_path_buf();
        let meta = std::fs::symlink_metadata(&private).expect("private directory");
        assert_eq!((meta.uid(), meta.mode() & 0o7777), (0, 0o700));
        assert_eq!(
            std::fs::symlink_metadata(&path).map(|m| m.uid()).ok(),
            Some(65534)
        );

        let guard = bound.guard();
        drop(bound);
        drop(guard);
        assert!(
            !private.exists(),
            "the private directory goes with the socket"
        );
    }
}
