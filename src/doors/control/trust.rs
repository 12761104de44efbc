//! Whose control socket may be used: the rule the CLI applies before it
//! connects, and the daemon before it binds.
//!
//! A control socket carries the operator's commands, so the CLI must know
//! that the daemon behind it is its user's own: a socket another user put
//! in its path (in a shared directory such as `/tmp`, or in a directory
//! that user owns and can swap files in) would collect every command, and
//! could answer anything. The rule, for a socket at `DIR/NAME`:
//!
//! - `DIR/NAME` itself is looked at with `lstat`: a symbolic link is
//!   refused (links are not followed), and the socket must belong to this
//!   user. Root gets no exception: root's CLI refuses another user's
//!   socket like anyone else's.
//! - `DIR` is resolved through symbolic links once, and every directory
//!   from it up to `/` must belong to this user or to root (root can
//!   replace any file anyway), and must not be writable by its group or by
//!   others unless it has the sticky bit (as `/tmp` has: then only a
//!   file's owner, the directory's owner and root may remove or rename a
//!   file in it, so our own socket there stays ours).
//! - The CLI then connects to the socket's name in the resolved directory,
//!   so that a link on the way re-pointed after the check changes nothing.
//!
//! Together: nobody but this user and root can have created, replaced or
//! renamed anything between `/` and the socket. What this cannot see:
//! write access granted by ACLs, and a user who can write to a directory
//! through a group they share with us (group-writable directories are
//! refused for that reason).
//!
//! One exception, for the Debian package's service: the daemon the unit
//! runs as the system user `pagewire` keeps its socket in its runtime
//! directory `/run/pagewire/`, and operators in the group `pagewire` may
//! use it. For a socket directly in that directory, and for a user (root
//! included) who is in the service user's group, [`Trust::for_socket`]
//! also trusts the service user as the socket's and the directory's
//! owner; the checks themselves stay as they are. The daemon, running as
//! the service user there, makes the socket mode 0660 and serves the
//! group's members ([`service_group_member`]).

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Mode bits that let a directory's group or everyone create, remove and
/// rename entries in it.
const WRITABLE_BY_OTHERS: u32 = 0o022;
/// The sticky bit: only an entry's owner (or the directory's, or root) may
/// remove or rename it.
const STICKY: u32 = 0o1000;

/// The uid this process acts as: the effective uid, which is what owns
/// the files it creates and what a daemon's `SO_PEERCRED` sees.
pub(crate) fn current_uid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// The Debian package's service user, whose group's members may use its
/// control socket.
pub(crate) const SERVICE_USER: &str = "pagewire";

/// The service's runtime directory (systemd's `RuntimeDirectory=`), where
/// its control socket is.
pub(crate) const SERVICE_DIR: &str = "/run/pagewire";

/// Whose sockets and directories this process trusts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Trust {
    me: u32,
    /// The service user, trusted too (see the module docs).
    service: Option<u32>,
}

impl Trust {
    /// The rule for the user this process runs as.
    pub(crate) fn current() -> Trust {
        Trust::for_uid(current_uid())
    }

    /// The rule for user `me`.
    pub(crate) fn for_uid(me: u32) -> Trust {
        Trust { me, service: None }
    }

    /// The rule for the socket at `path`: [`Trust::current`], and the
    /// service user too when `path` is in [`SERVICE_DIR`] and this process
    /// is in the service user's group (root too needs to be).
    pub(crate) fn for_socket(path: &Path) -> Trust {
        let trust = Trust::current();
        if parent_dir(path) != Path::new(SERVICE_DIR) {
            return trust;
        }
        match service_user() {
            Some((uid, gid)) if uid != trust.me && in_group(gid) => trust.with_service(uid),
            _ => trust,
        }
    }

    /// This rule, trusting the service user `uid` as well.
    pub(crate) fn with_service(self, uid: u32) -> Trust {
        Trust {
            service: Some(uid),
            ..self
        }
    }

    /// The uid the rule is for.
    pub(crate) fn uid(&self) -> u32 {
        self.me
    }

    /// Whether a control socket owned by `owner` may be talked to.
    pub(crate) fn allows_socket_owner(&self, owner: u32) -> bool {
        owner == self.me || Some(owner) == self.service
    }

    /// Whether a directory owned by `owner` may hold (or lead to) our
    /// control socket.
    pub(crate) fn allows_dir_owner(&self, owner: u32) -> bool {
        owner == self.me || owner == 0 || Some(owner) == self.service
    }
}

/// The service user's uid and its group's gid, if the system has it.
pub(crate) fn service_user() -> Option<(u32, u32)> {
    let user = nix::unistd::User::from_name(SERVICE_USER).ok()??;
    Some((user.uid.as_raw(), user.gid.as_raw()))
}

/// Whether this process is in group `gid` (its effective or a
/// supplementary group).
fn in_group(gid: u32) -> bool {
    nix::unistd::getegid().as_raw() == gid
        || nix::unistd::getgroups().is_ok_and(|groups| groups.iter().any(|g| g.as_raw() == gid))
}

/// Whether user `uid` (a peer of the daemon's socket) is a member of
/// group `gid`: its primary group, or listed in the group.
pub(crate) fn service_group_member(uid: u32, gid: u32) -> bool {
    let Ok(Some(user)) = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) else {
        return false;
    };
    if user.gid.as_raw() == gid {
        return true;
    }
    let Ok(Some(group)) = nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid)) else {
        return false;
    };
    group.mem.contains(&user.name)
}

/// Why a control socket, or the way to it, is not to be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Untrusted {
    /// The path names a symbolic link, which is not followed.
    #[error("it is a symbolic link (give the socket's own path)")]
    Symlink,
    /// The socket (or whatever is at its path) belongs to another user.
    #[error("it belongs to uid {owner}, not to this user (uid {me})")]
    ForeignOwner {
        /// Its owner.
        owner: u32,
        /// This process's uid.
        me: u32,
    },
    /// A directory on the way belongs to another user.
    #[error("{} belongs to uid {owner}", describe_dir(.dir, *.immediate))]
    ForeignDir {
        /// The directory.
        dir: PathBuf,
        /// Whether it is the socket's own directory (else one above it).
        immediate: bool,
        /// Its owner.
        owner: u32,
    },
    /// A directory on the way may be written by other users.
    #[error("{} is writable by other users (mode {mode:04o})", describe_dir(.dir, *.immediate))]
    SharedDir {
        /// The directory.
        dir: PathBuf,
        /// Whether it is the socket's own directory (else one above it).
        immediate: bool,
        /// Its permission bits.
        mode: u32,
    },
    /// Something on the way is not a directory.
    #[error("{} is not a directory", .0.display())]
    NotADirectory(PathBuf),
    /// The path has no file name (`/`, `..`).
    #[error("it does not name a file")]
    NoFileName,
    /// A file or directory on the way could not be inspected.
    #[error("cannot inspect {}: {source}", .path.display())]
    Inspect {
        /// What could not be inspected.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

fn describe_dir(dir: &Path, immediate: bool) -> String {
    if immediate {
        format!("its directory {}", dir.display())
    } else {
        format!("the directory {} above it", dir.display())
    }
}

impl Untrusted {
    /// Whether another user is in the way (rather than this user's own
    /// mistake or a failed system call): a daemon then leaves it alone and
    /// uses another socket.
    pub(crate) fn is_foreign(&self) -> bool {
        matches!(
            self,
            Untrusted::ForeignOwner { .. }
                | Untrusted::ForeignDir { .. }
                | Untrusted::SharedDir { .. }
        )
    }
}

/// The socket's directory as given: `.` for a bare name.
pub(crate) fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// Resolves the directory of `path` and checks it and every directory
/// above it. Returns the path of the socket in the resolved directory,
/// which is what should be connected to or bound; `Ok(None)` when the
/// directory does not exist.
pub(crate) fn check_dirs(path: &Path, trust: Trust) -> Result<Option<PathBuf>, Untrusted> {
    let name = path.file_name().ok_or(Untrusted::NoFileName)?;
    let given = parent_dir(path);
    check_links(given, trust)?;
    let dir = match std::fs::canonicalize(given) {
        Ok(dir) => dir,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(Untrusted::Inspect {
                path: given.to_path_buf(),
                source,
            })
        }
    };
    for (depth, ancestor) in dir.ancestors().enumerate() {
        check_dir(ancestor, depth == 0, trust)?;
    }
    Ok(Some(dir.join(name)))
}

/// Refuses a symbolic link on the way to `dir` (as written) that another
/// user made: it points wherever they like, and where the kernel protects
/// links in sticky directories it would not even be followed.
fn check_links(dir: &Path, trust: Trust) -> Result<(), Untrusted> {
    let absolute = std::path::absolute(dir).map_err(|source| Untrusted::Inspect {
        path: dir.to_path_buf(),
        source,
    })?;
    for (depth, ancestor) in absolute.ancestors().enumerate() {
        match std::fs::symlink_metadata(ancestor) {
            Ok(meta) if meta.file_type().is_symlink() && !trust.allows_dir_owner(meta.uid()) => {
                return Err(Untrusted::ForeignDir {
                    dir: ancestor.to_path_buf(),
                    immediate: depth == 0,
                    owner: meta.uid(),
                })
            }
            // Missing parts and other errors are for canonicalize to report.
            _ => {}
        }
    }
    Ok(())
}

fn check_dir(dir: &Path, immediate: bool, trust: Trust) -> Result<(), Untrusted> {
    let meta = std::fs::symlink_metadata(dir).map_err(|source| Untrusted::Inspect {
        path: dir.to_path_buf(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(Untrusted::NotADirectory(dir.to_path_buf()));
    }
    if !trust.allows_dir_owner(meta.uid()) {
        return Err(Untrusted::ForeignDir {
            dir: dir.to_path_buf(),
            immediate,
            owner: meta.uid(),
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & WRITABLE_BY_OTHERS != 0 && mode & STICKY == 0 {
        return Err(Untrusted::SharedDir {
            dir: dir.to_path_buf(),
            immediate,
            mode,
        });
    }
    Ok(())
}

/// What the CLI may connect to at `path`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Reachable {
    /// Nothing is there (no file, or no directory).
    Missing,
    /// A file that is this user's and is not a socket: no daemon there.
    NotASocket,
    /// This user's socket, to connect to at this path.
    Socket(PathBuf),
}

/// Checks a control socket before connecting to it: the file at `path`
/// itself (not followed if it is a link), then its directories. Another
/// user's socket is refused before its directory is looked at, so the
/// message names what matters most. When nothing is at `path`, a
/// directory on the way that is another user's is still reported.
pub(crate) fn check_socket(path: &Path, trust: Trust) -> Result<Reachable, Untrusted> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // Nothing to connect to; but a directory someone else planted
            // on the way (their /tmp/pagewire-UID) is worth saying.
            return match check_dirs(path, trust) {
                Err(why) if why.is_foreign() => Err(why),
                _ => Ok(Reachable::Missing),
            };
        }
        Err(source) => {
            return Err(Untrusted::Inspect {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    if meta.file_type().is_symlink() {
        return Err(Untrusted::Symlink);
    }
    if !trust.allows_socket_owner(meta.uid()) {
        return Err(Untrusted::ForeignOwner {
            owner: meta.uid(),
            me: trust.uid(),
        });
    }
    let Some(target) = check_dirs(path, trust)? else {
        return Ok(Reachable::Missing);
    };
    if !meta.file_type().is_socket() {
        return Ok(Reachable::NotASocket);
    }
    Ok(Reachable::Socket(target))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// These tests change owners with chown, as root (CI runs them as root).
    const NOBODY: u32 = 65534;

    fn mkdir(path: &Path, mode: u32, owner: u32) {
        std::fs::create_dir(path).expect("mkdir");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        std::os::unix::fs::chown(path, Some(owner), Some(owner)).expect("chown (run as root)");
    }

    fn socket(path: &Path, owner: u32) -> std::os::unix::net::UnixListener {
        let listener = std::os::unix::net::UnixListener::bind(path).expect("bind");
        std::os::unix::fs::chown(path, Some(owner), Some(owner)).expect("chown (run as root)");
        listener
    }

    #[test]
    fn owners_and_modes() {
        let me = current_uid();
        assert_eq!(me, 0, "these tests run as root");
        let trust = Trust::current();
        let tmp = tempfile::tempdir().expect("tempdir");
        let base = std::fs::canonicalize(tmp.path()).expect("canonical");

        // Our socket in our private directory (under sticky /tmp).
        let mine = base.join("mine.sock");
        let _l1 = socket(&mine, me);
        assert_eq!(
            check_socket(&mine, trust).ok(),
            Some(Reachable::Socket(mine.clone()))
        );

        // Another user's socket, even where we trust the directory.
        let theirs = base.join("theirs.sock");
        let _l2 = socket(&theirs, NOBODY);
        assert!(matches!(
            check_socket(&theirs, trust),
            Err(Untrusted::ForeignOwner {
                owner: NOBODY,
                me: 0
            })
        ));

        // Our socket in another user's directory, or in one above it.
        let foreign = base.join("foreign");
        mkdir(&foreign, 0o755, NOBODY);
        let inside = foreign.join("ctl.sock");
        let _l3 = socket(&inside, me);
        match check_socket(&inside, trust) {
            Err(
                e @ Untrusted::ForeignDir {
                    immediate: true,
                    owner: NOBODY,
                    ..
                },
            ) => {
                assert_eq!(
                    e.to_string(),
                    format!("its directory {} belongs to uid 65534", foreign.display())
                );
                assert!(e.is_foreign());
            }
            other => panic!("{other:?}"),
        }
        let deeper = foreign.join("sub");
        mkdir(&deeper, 0o700, me);
        let below = deeper.join("ctl.sock");
        let _l4 = socket(&below, me);
        match check_socket(&below, trust) {
            Err(
                e @ Untrusted::ForeignDir {
                    immediate: false, ..
                },
            ) => assert_eq!(
                e.to_string(),
                format!(
                    "the directory {} above it belongs to uid 65534",
                    foreign.display()
                )
            ),
            other => panic!("{other:?}"),
        }

        // Writable by others: refused, unless sticky.
        for (name, mode, ok) in [
            ("open", 0o777, false),
            ("group", 0o770, false),
            ("sticky", 0o1777, true),
            ("plain", 0o755, true),
        ] {
            let dir = base.join(name);
            mkdir(&dir, mode, me);
            let path = dir.join("ctl.sock");
            let _l = socket(&path, me);
            let got = check_socket(&path, trust);
            assert_eq!(got.is_ok(), ok, "{name}: {got:?}");
        }

        // A link to our own socket is not followed.
        let link = base.join("link.sock");
        std::os::unix::fs::symlink(&mine, &link).expect("symlink");
        assert!(matches!(
            check_socket(&link, trust),
            Err(Untrusted::Symlink)
        ));

        // A linked directory is resolved, and the socket is reached
        // through the resolved path.
        let linked = base.join("linked");
        std::os::unix::fs::symlink(&base, &linked).expect("symlink");
        assert_eq!(
            check_socket(&linked.join("mine.sock"), trust).ok(),
            Some(Reachable::Socket(mine.clone()))
        );

        // A link to our own directory, made by another user, is refused.
        let planted = base.join("planted");
        std::os::unix::fs::symlink(&base, &planted).expect("symlink");
        std::os::unix::fs::lchown(&planted, Some(NOBODY), Some(NOBODY)).expect("lchown");
        assert!(matches!(
            check_socket(&planted.join("mine.sock"), trust),
            Err(Untrusted::ForeignDir {
                immediate: true,
                owner: NOBODY,
                ..
            })
        ));

        // Nothing there; a file that is not a socket.
        assert_eq!(
            check_socket(&base.join("none.sock"), trust).ok(),
            Some(Reachable::Missing)
        );
        assert_eq!(
            check_socket(&base.join("no/dir.sock"), trust).ok(),
            Some(Reachable::Missing)
        );
        let file = base.join("file");
        std::fs::write(&file, "x").expect("write");
        assert_eq!(check_socket(&file, trust).ok(), Some(Reachable::NotASocket));
    }

    #[test]
    fn the_rule_is_per_user() {
        let alice = Trust::for_uid(1000);
        assert!(alice.allows_socket_owner(1000));
        assert!(!alice.allows_socket_owner(0), "not even root's socket");
        assert!(!alice.allows_socket_owner(1001));
        assert!(alice.allows_dir_owner(0) && alice.allows_dir_owner(1000));
        assert!(!alice.allows_dir_owner(1001));
        let root = Trust::for_uid(0);
        assert!(!root.allows_socket_owner(65534));
        assert!(!root.allows_dir_owner(65534));
    }

    #[test]
    fn the_service_user_is_trusted_only_when_added() {
        let operator = Trust::for_uid(1000).with_service(999);
        assert!(operator.allows_socket_owner(999) && operator.allows_dir_owner(999));
        assert!(operator.allows_socket_owner(1000));
        assert!(!operator.allows_socket_owner(1001) && !operator.allows_dir_owner(1001));
        let plain = Trust::for_uid(1000);
        assert!(!plain.allows_socket_owner(999) && !plain.allows_dir_owner(999));
        // Only for a socket directly in the service's runtime directory.
        let elsewhere = Path::new("/tmp/pagewire-0/pagewire.sock");
        assert_eq!(Trust::for_socket(elsewhere), Trust::current());
        let nested = Path::new("/run/pagewire/sub/pagewire.sock");
        assert_eq!(Trust::for_socket(nested), Trust::current());
    }
}
