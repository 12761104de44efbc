//! The CLI and the control socket, end to end against the real binary.

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use crate::support::{command, run_cli, Daemon, Process, TIMEOUT};

/// A command every executor refuses: no such `set` option.
const REFUSED: &[&str] = &["set", "no-such-setting-anywhere"];

#[test]
fn the_cli_reaches_the_daemon_and_reports_a_refusal() {
    let daemon = Daemon::start::<&str>(&[]);
    let out = daemon.cli(REFUSED);
    out.assert_exit_code(1);
    assert!(out.stdout.is_empty(), "a refusal goes to stderr\n{out}");
    assert!(
        !out.stderr.trim().is_empty(),
        "the refusal is explained\n{out}"
    );
    assert_eq!(out.stderr.lines().count(), 1, "one error line\n{out}");
}

#[test]
fn control_is_accepted_after_the_subcommand_and_from_the_environment() {
    let daemon = Daemon::start::<&str>(&[]);
    let control = daemon.control.to_string_lossy().into_owned();
    run_cli(&[
        "set",
        "--control",
        control.as_str(),
        "no-such-setting-anywhere",
    ])
    .assert_exit_code(1);
    let mut cmd = command(REFUSED);
    cmd.env("PAGEWIRE_CONTROL", &daemon.control);
    Process::spawn(cmd).wait_exit().assert_exit_code(1);
}

#[test]
fn hyphenated_words_are_passed_on() {
    let daemon = Daemon::start::<&str>(&[]);
    let out = daemon.cli(&["ws", "write", "status", "-5"]);
    // Whatever the daemon makes of it, the CLI did not reject it.
    assert!(matches!(out.code, Some(0 | 1)), "{out}");
    assert!(!out.stderr.contains("unexpected argument"), "{out}");
}

#[test]
fn no_daemon_is_exit_2_with_a_clear_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("nobody.sock");
    let path = path.to_string_lossy();
    let out = run_cli(&["--control", &path, "ws"]);
    out.assert_exit_code(2).assert_stderr_contains(&format!(
        "no pagewire daemon answering on {path} (is `pagewire serve` running? use --control PATH)"
    ));
    assert!(out.stdout.is_empty(), "{out}");
    run_cli(&["--control", &path, "monitor"]).assert_exit_code(2);
    run_cli(&["--control", &path, "console"]).assert_exit_code(2);
}

#[test]
fn bad_flags_are_exit_2() {
    let cases: &[&[&str]] = &[
        &[],
        &["--no-such-flag"],
        &["frobnicate"],
        &["serve", "--access", "everyone"],
        &["serve", "--allow", "not-a-cidr"],
        &["serve", "--listen", "nowhere"],
        &["monitor", "extra"],
    ];
    for args in cases {
        let out = run_cli(args);
        out.assert_exit_code(2);
        assert!(!out.stderr.is_empty(), "{out}");
    }
    run_cli(&["--help"]).assert_exit_code(0);
    run_cli(&["--version"]).assert_exit_code(0);
}

#[test]
fn the_token_never_appears_in_help() {
    let mut cmd = command(["serve", "--help"]);
    cmd.env("PAGEWIRE_TOKEN", "s3cret-value");
    let out = Process::spawn(cmd).wait_exit();
    out.assert_exit_code(0)
        .assert_stdout_contains("PAGEWIRE_TOKEN");
    assert!(!out.stdout.contains("s3cret-value"), "{out}");
}

#[test]
fn a_second_daemon_on_the_same_socket_fails_clearly() {
    let first = Daemon::start::<&str>(&[]);
    let out = Daemon::builder()
        .control(&first.control)
        .spawn()
        .wait_exit();
    out.assert_exit_code(1).assert_stderr_contains(&format!(
        "another pagewire daemon is already listening on {}",
        first.control.display()
    ));
    // The first one is unharmed.
    first.cli(REFUSED).assert_exit_code(1);
    assert!(first.control.exists());
}

#[test]
fn a_stale_socket_does_not_stop_a_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ctl.sock");
    drop(std::os::unix::net::UnixListener::bind(&path).expect("bind"));
    assert!(path.exists(), "the socket file outlives its listener");
    let daemon = Daemon::builder().control(&path).start();
    daemon.cli(REFUSED).assert_exit_code(1);
}

#[test]
fn stopping_removes_the_socket() {
    let daemon = Daemon::start::<&str>(&[]);
    let path = daemon.control.clone();
    assert!(path.exists());
    daemon.stop().assert_exit_code(0);
    assert!(!path.exists(), "the control socket is removed on shutdown");
}

#[test]
fn monitor_receives_lines() {
    let daemon = Daemon::start::<&str>(&[]);
    let mut monitor = daemon.cli_spawn(&["monitor"]);
    // Attaching is itself an event, so the first line proves the tail is live.
    monitor.next_stdout(|l| l.ends_with("control: monitor watcher attached"));
    // A second watcher's arrival reaches the first one too.
    let other = daemon.cli_spawn(&["monitor"]);
    other.wait_for_stdout(|l| l.ends_with("monitor watcher attached"));
    monitor.next_stdout(|l| l.ends_with("control: monitor watcher attached"));
    // The daemon's own console shows the same stream.
    daemon.wait_for_stdout(|l| l.ends_with("control: monitor watcher attached"));
}

#[test]
fn monitor_into_a_closed_pipe_is_not_an_error() {
    let daemon = Daemon::start::<&str>(&[]);
    let mut cmd = command([
        std::ffi::OsStr::new("--control"),
        daemon.control.as_os_str(),
    ]);
    cmd.arg("monitor")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn monitor");
    let stdout = child.stdout.take().expect("stdout");
    let mut first = String::new();
    BufReader::new(stdout)
        .read_line(&mut first)
        .expect("first line");
    assert!(first.contains("monitor watcher attached"), "{first:?}");
    // The reader is gone (as with `| head -1`); the next line fails to print.
    // Each new watcher makes a line. More than one may be needed: a process
    // spawned meanwhile by a parallel test holds a copy of the pipe until
    // it execs, and a line written then still finds a reader.
    let deadline = std::time::Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "monitor did not exit");
        let poke = daemon.cli_spawn(&["monitor"]);
        poke.wait_for_stdout(|l| l.contains("monitor watcher attached"));
    };
    let mut stderr = String::new();
    if let Some(mut err) = child.stderr.take() {
        std::io::Read::read_to_string(&mut err, &mut stderr).expect("stderr");
    }
    assert_eq!(status.code(), Some(0), "stderr: {stderr}");
    assert!(stderr.is_empty(), "stderr: {stderr}");
}

#[test]
fn console_runs_piped_lines() {
    let daemon = Daemon::start::<&str>(&[]);
    let mut cmd = command([
        std::ffi::OsStr::new("--control"),
        daemon.control.as_os_str(),
    ]);
    cmd.arg("console");
    let home = tempfile::tempdir().expect("tempdir");
    cmd.env("HOME", home.path());
    let console = Process::spawn_with_input(cmd, "set no-such-setting-anywhere\n\nexit\nws\n");
    let out = console.wait_exit();
    out.assert_exit_code(0);
    // One reply for the one command; `exit` ends it before `ws`.
    assert_eq!(out.stdout.lines().count(), 1, "{out}");
    assert!(
        !home.path().join(".pagewire_history").exists(),
        "piped lines stay out of the history"
    );
}

#[test]
fn the_daemons_console_says_that_exit_stops_the_daemon() {
    let dir = tempfile::tempdir().expect("tempdir");
    let serve = format!(
        "'{}' serve --listen 127.0.0.1:0 --control '{}'",
        crate::support::bin(),
        dir.path().join("ctl.sock").display()
    );
    // `script` gives the daemon a terminal, so it starts its console.
    let mut cmd = std::process::Command::new("script");
    cmd.args(["-qfec", &serve, "/dev/null"])
        .env("HOME", dir.path())
        .env("TERM", "dumb");
    let out = Process::spawn_with_input(cmd, "help\nexit\n").wait_exit();
    out.assert_exit_code(0)
        .assert_stdout_contains(
            "console: type 'help' for the commands; exit, quit, Ctrl-C or Ctrl-D stops pagewire",
        )
        .assert_stdout_contains("on this console: exit, quit, Ctrl-C or Ctrl-D stops pagewire")
        .assert_stdout_contains("console closed; stopping pagewire");
}

#[test]
fn the_daemon_says_when_its_socket_file_is_removed() {
    let daemon = Daemon::start::<&str>(&[]);
    std::fs::remove_file(&daemon.control).expect("remove the socket file");
    let line = daemon.wait_for_stdout(|l| l.contains("was removed or replaced"));
    assert!(
        line.contains(&daemon.control.display().to_string()),
        "{line}"
    );
    // And the CLI, which finds no socket, says no daemon answers there.
    daemon
        .cli(&["ws"])
        .assert_exit_code(2)
        .assert_stderr_contains("no pagewire daemon answering");
}
