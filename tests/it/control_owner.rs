//! Whose control socket the CLI talks to, and where the daemon puts it.
//!
//! These tests run as root (as CI does): they make files that belong to
//! another user with `chown`, and run the real binary as other users. A
//! socket "planted" by another user is a listener run by the test that
//! answers like a daemon and records every connection, so a test can tell
//! a refusal before connecting from one after.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::support::{command, run_cli, CleanPath, Daemon, Process};

/// The `nobody` user: owns what "another user" planted.
const NOBODY: u32 = 65534;

/// What the test sends its own listener to stop it.
const STOP: &str = "stop the planted listener";

/// The text before the control socket path in the daemon's ready line.
const READY_CONTROL: &str = " (control socket ";

/// A Unix socket listener standing in for a daemon: it answers every
/// request with `ok` and `planted`, and records the first line of every
/// connection it gets.
struct Listener {
    path: PathBuf,
    seen: Arc<Mutex<Vec<String>>>,
    thread: Option<JoinHandle<()>>,
}

impl Listener {
    /// Listens on `path`, mode 0777 (anyone may connect, so only the
    /// CLI's own check can keep it away), owned by `owner` if given.
    fn start(path: &Path, owner: Option<u32>) -> Listener {
        let listener = UnixListener::bind(path).expect("bind the listener");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        if let Some(uid) = owner {
            std::os::unix::fs::chown(path, Some(uid), Some(uid)).expect("chown (run as root)");
        }
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&seen);
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let mut line = String::new();
                let mut reader = BufReader::new(&stream);
                let _ = reader.read_line(&mut line);
                if line.trim_end() == STOP {
                    return;
                }
                record
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(line.trim_end().to_owned());
                let _ = (&stream).write_all(b"{\"ok\":true,\"output\":\"planted\"}\n");
            }
        });
        Listener {
            path: path.to_path_buf(),
            seen,
            thread: Some(thread),
        }
    }

    /// Stops the listener and returns the first line of every connection
    /// it had (the test's own stop request excluded).
    fn stop(mut self) -> Vec<String> {
        self.shut();
        std::mem::take(&mut *self.seen.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn shut(&mut self) {
        if let Some(thread) = self.thread.take() {
            // Root may connect whatever the socket's owner and mode.
            if let Ok(mut s) = UnixStream::connect(&self.path) {
                let _ = writeln!(s, "{STOP}");
                let _ = thread.join();
            }
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.shut();
    }
}

/// A directory at `path` with `mode`, owned by `owner`.
fn directory(path: &Path, mode: u32, owner: u32) -> PathBuf {
    std::fs::create_dir(path).expect("mkdir");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    std::os::unix::fs::chown(path, Some(owner), Some(owner)).expect("chown (run as root)");
    path.to_path_buf()
}

/// The control socket path a ready line names.
fn ready_control(ready: &str) -> PathBuf {
    let (_, rest) = ready
        .split_once(READY_CONTROL)
        .unwrap_or_else(|| panic!("no control socket in {ready:?}"));
    PathBuf::from(rest.strip_suffix(')').unwrap_or(rest))
}

fn is_ready(line: &str) -> bool {
    line.starts_with("pagewire listening on ")
}

/// The CLI, with `--control PATH`, on every door that connects.
fn cli_everywhere(path: &Path) -> Vec<crate::support::Output> {
    let path = path.to_str().expect("utf-8 path");
    [
        &["--control", path, "ws", "write", "status", "secret"][..],
        &["--control", path, "monitor"][..],
        &["--control", path, "console"][..],
    ]
    .iter()
    .map(|args| run_cli(args))
    .collect()
}

#[test]
fn the_cli_refuses_a_socket_another_user_planted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("planted.sock");
    let planted = Listener::start(&path, Some(NOBODY));
    for out in cli_everywhere(&path) {
        out.assert_exit_code(2).assert_stderr_contains(&format!(
            "refusing the control socket {}: it belongs to uid {NOBODY}",
            path.display()
        ));
        assert!(out.stdout.is_empty(), "{out}");
    }
    assert_eq!(planted.stop(), Vec::<String>::new(), "the CLI connected");
}

#[test]
fn the_cli_refuses_a_socket_in_another_users_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let theirs = directory(&dir.path().join("theirs"), 0o755, NOBODY);
    // The socket is root's own, but the directory's owner could swap it.
    let path = theirs.join("ctl.sock");
    let listener = Listener::start(&path, None);
    for out in cli_everywhere(&path) {
        out.assert_exit_code(2).assert_stderr_contains(&format!(
            "refusing the control socket {}: its directory {} belongs to uid {NOBODY}",
            path.display(),
            theirs.display()
        ));
    }
    assert_eq!(listener.stop(), Vec::<String>::new(), "the CLI connected");
}

#[test]
fn the_cli_refuses_a_shared_directory_unless_sticky() {
    let dir = tempfile::tempdir().expect("tempdir");
    let shared = directory(&dir.path().join("shared"), 0o777, 0);
    let path = shared.join("ctl.sock");
    let listener = Listener::start(&path, None);
    let out = run_cli(&["--control", path.to_str().expect("utf-8"), "ws"]);
    out.assert_exit_code(2).assert_stderr_contains(&format!(
        "refusing the control socket {}: its directory {} is writable by other users (mode 0777)",
        path.display(),
        shared.display()
    ));
    assert_eq!(listener.stop(), Vec::<String>::new(), "the CLI connected");

    // With the sticky bit (as /tmp has), only the socket's owner may remove
    // or replace it: our own socket there is fine.
    let sticky = directory(&dir.path().join("sticky"), 0o1777, 0);
    let path = sticky.join("ctl.sock");
    let listener = Listener::start(&path, None);
    let out = run_cli(&["--control", path.to_str().expect("utf-8"), "ws"]);
    out.assert_exit_code(0).assert_stdout_contains("planted");
    assert_eq!(listener.stop(), ["{\"cmd\":\"ws\"}"]);
}

#[test]
fn the_cli_does_not_follow_a_symlink_to_a_socket() {
    let dir = tempfile::tempdir().expect("tempdir");
    let real = dir.path().join("real.sock");
    let listener = Listener::start(&real, None);
    let link = dir.path().join("link.sock");
    std::os::unix::fs::symlink(&real, &link).expect("symlink");
    let out = run_cli(&["--control", link.to_str().expect("utf-8"), "ws"]);
    out.assert_exit_code(2).assert_stderr_contains(&format!(
        "refusing the control socket {}: it is a symbolic link",
        link.display()
    ));
    assert_eq!(listener.stop(), Vec::<String>::new(), "the CLI connected");
}

#[test]
fn roots_default_socket_is_in_a_private_directory_under_run() {
    let mut serve = command(["serve", "--listen", "127.0.0.1:0"]);
    serve.env_remove("XDG_RUNTIME_DIR");
    let daemon = Process::spawn(serve);
    let ready = daemon.wait_for_stdout(is_ready);
    let path = ready_control(&ready);
    assert_eq!(path, Path::new("/run/pagewire/pagewire.sock"), "{ready}");
    let dir = std::fs::symlink_metadata("/run/pagewire").expect("/run/pagewire");
    assert!(dir.is_dir());
    assert_eq!((dir.uid(), dir.mode() & 0o7777), (0, 0o700));
    let socket = std::fs::symlink_metadata(&path).expect("socket");
    assert_eq!((socket.uid(), socket.mode() & 0o777), (0, 0o600));

    // The CLI finds it the same way.
    let mut cli = command(["set", "no-such-setting-anywhere"]);
    cli.env_remove("XDG_RUNTIME_DIR");
    let out = Process::spawn(cli).wait_exit();
    out.assert_exit_code(1);
    daemon.terminate().assert_exit_code(0);
    assert!(!path.exists(), "the socket is removed on shutdown");
}

#[test]
fn a_foreign_stale_socket_is_left_alone_and_the_daemon_starts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ctl.sock");
    drop(UnixListener::bind(&path).expect("bind"));
    std::os::unix::fs::chown(&path, Some(NOBODY), Some(NOBODY)).expect("chown (run as root)");

    let daemon = Daemon::builder().control(&path).spawn();
    let ready = daemon.wait_for_stdout(is_ready);
    let found = daemon.wait_for_stdout(|l| l.contains("control:") && l.contains("uid 65534"));
    let used = ready_control(&ready);
    assert_ne!(used, path, "{ready}");
    assert!(
        found.contains(&path.display().to_string()) && found.contains(&used.display().to_string()),
        "the line names what was found and what is used instead: {found}"
    );
    let left = std::fs::symlink_metadata(&path).expect("the foreign socket is still there");
    assert_eq!(left.uid(), NOBODY);

    run_cli(&[
        "--control",
        used.to_str().expect("utf-8"),
        "set",
        "no-such-setting-anywhere",
    ])
    .assert_exit_code(1);
    daemon.terminate().assert_exit_code(0);
    assert!(!used.exists(), "the socket it used is removed on shutdown");
}

#[test]
fn a_foreign_directory_is_left_alone_and_the_daemon_starts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let theirs = directory(&dir.path().join("theirs"), 0o777, NOBODY);
    let path = theirs.join("ctl.sock");

    let daemon = Daemon::builder().control(&path).spawn();
    let ready = daemon.wait_for_stdout(is_ready);
    daemon.wait_for_stdout(|l| {
        l.contains("control:") && l.contains(&theirs.display().to_string()) && l.contains("65534")
    });
    let used = ready_control(&ready);
    assert!(!used.starts_with(&theirs), "{ready}");
    assert!(!path.exists(), "nothing was made in the foreign directory");
    run_cli(&[
        "--control",
        used.to_str().expect("utf-8"),
        "set",
        "no-such-setting-anywhere",
    ])
    .assert_exit_code(1);
    daemon.terminate().assert_exit_code(0);
}

/// `pagewire ARGS` run as user `uid` (one no account on the machine
/// uses) without `XDG_RUNTIME_DIR`.
fn as_user(uid: u32, args: &[&str]) -> std::process::Command {
    let mut cmd = command(args);
    cmd.env_remove("XDG_RUNTIME_DIR")
        .env("HOME", "/")
        .uid(uid)
        .gid(uid);
    cmd
}

/// The default directory of user `uid`, `/tmp/pagewire-UID`: removed
/// before the test and after it.
fn default_dir(uid: u32) -> CleanPath {
    CleanPath::new(format!("/tmp/pagewire-{uid}"))
}

#[test]
fn a_users_default_socket_is_in_a_private_directory_of_theirs() {
    const USER: u32 = 64_701;
    let dir = default_dir(USER);
    let daemon = Process::spawn(as_user(USER, &["serve", "--listen", "127.0.0.1:0"]));
    let ready = daemon.wait_for_stdout(is_ready);
    assert_eq!(
        ready_control(&ready),
        dir.0.join("pagewire.sock"),
        "{ready}"
    );
    let meta = std::fs::symlink_metadata(&dir.0).expect("the directory");
    assert_eq!((meta.uid(), meta.mode() & 0o7777), (USER, 0o700));
    Process::spawn(as_user(USER, &["set", "no-such-setting-anywhere"]))
        .wait_exit()
        .assert_exit_code(1);
    daemon.terminate().assert_exit_code(0);
}

#[test]
fn a_users_default_directory_planted_by_another_user_is_refused() {
    const USER: u32 = 64_702;
    let dir = default_dir(USER);
    let planted_dir = directory(&dir.0, 0o777, NOBODY);
    let path = planted_dir.join("pagewire.sock");
    let planted = Listener::start(&path, Some(NOBODY));

    // The user's CLI does not talk to it...
    let out = Process::spawn(as_user(USER, &["ws", "write", "status", "secret"])).wait_exit();
    out.assert_exit_code(2).assert_stderr_contains(&format!(
        "refusing the control socket {}: it belongs to uid {NOBODY}",
        path.display()
    ));
    // ...and the user's daemon starts elsewhere, saying so.
    let daemon = Process::spawn(as_user(USER, &["serve", "--listen", "127.0.0.1:0"]));
    let ready = daemon.wait_for_stdout(is_ready);
    daemon.wait_for_stdout(|l| l.contains("control:") && l.contains("65534"));
    let used = ready_control(&ready);
    assert!(!used.starts_with(&dir.0), "{ready}");
    let meta = std::fs::symlink_metadata(used.parent().expect("a directory")).expect("dir");
    assert_eq!((meta.uid(), meta.mode() & 0o7777), (USER, 0o700));
    daemon.terminate().assert_exit_code(0);
    assert_eq!(planted.stop(), Vec::<String>::new(), "someone connected");
}

#[test]
fn a_users_default_directory_planted_as_a_link_is_refused() {
    const USER: u32 = 64_703;
    let dir = default_dir(USER);
    // Another user's link to a directory the user cannot write to.
    std::os::unix::fs::symlink("/etc", &dir.0).expect("symlink");
    std::os::unix::fs::lchown(&dir.0, Some(NOBODY), Some(NOBODY)).expect("lchown");

    let out = Process::spawn(as_user(USER, &["ws"])).wait_exit();
    out.assert_exit_code(2).assert_stderr_contains(&format!(
        "refusing the control socket {}: its directory {} belongs to uid {NOBODY}",
        dir.0.join("pagewire.sock").display(),
        dir.0.display()
    ));
    let daemon = Process::spawn(as_user(USER, &["serve", "--listen", "127.0.0.1:0"]));
    let ready = daemon.wait_for_stdout(is_ready);
    daemon.wait_for_stdout(|l| l.contains("control:") && l.contains("65534"));
    assert!(!ready_control(&ready).starts_with(&dir.0), "{ready}");
    daemon.terminate().assert_exit_code(0);
}

#[tokio::test]
async fn a_daemon_with_nowhere_safe_for_its_socket_serves_without_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ctl.sock");
    drop(UnixListener::bind(&path).expect("bind"));
    std::os::unix::fs::chown(&path, Some(NOBODY), Some(NOBODY)).expect("chown (run as root)");
    // Where the daemon would make its own directory instead: writable by
    // everyone, so nothing made in it can be trusted either.
    let runtime = directory(&dir.path().join("runtime"), 0o777, 0);

    let daemon = Daemon::builder()
        .control(&path)
        .env("XDG_RUNTIME_DIR", &runtime)
        .spawn();
    let ready = daemon.wait_for_stdout(is_ready);
    assert!(ready.ends_with(" (no control socket)"), "{ready}");
    let said = daemon.wait_for_stdout(|l| l.contains("serving without one"));
    assert!(said.contains("POST /api/command"), "{said}");
    assert_eq!(
        std::fs::read_dir(&runtime).map(|d| d.count()).ok(),
        Some(0),
        "nothing left behind in {}",
        runtime.display()
    );

    // HTTP still reaches it.
    let url = ready
        .strip_prefix("pagewire listening on ")
        .and_then(|rest| rest.split(' ').next())
        .expect("an address");
    let answer = reqwest::Client::new()
        .post(format!("{url}/api/command"))
        .body("help")
        .send()
        .await
        .expect("POST /api/command");
    assert_eq!(answer.status(), 200);
    daemon.terminate().assert_exit_code(0);
}
