//! What the integration tests share: start the real `pagewire`
//! binary, talk to it, and wait for what it prints.
//!
//! Nothing here sleeps for a fixed time: every wait is for a line or an
//! exit, bounded by [`TIMEOUT`], and a failed wait panics with the command,
//! its exit status and everything it printed so far.
//!
//! - [`Daemon::start`] runs `pagewire serve` on port 0 with its control
//!   socket in a fresh temporary directory and returns once the ready line
//!   is printed; [`Daemon::builder`] adds flags, environment or a chosen
//!   control socket, and can spawn a daemon expected to fail.
//! - [`Daemon::cli`] runs a CLI command against it and returns [`Output`];
//!   [`Daemon::cli_spawn`] starts a long-running one (`monitor`).
//! - [`run_cli`] runs the CLI with exactly the given arguments (no daemon).
//! - [`Process`] is any child whose output is collected line by line; it is
//!   killed when dropped, or on demand with [`Daemon::kill`] (SIGKILL).
//! - [`eventually`] and [`until`] are the one poll loop, for what no line or
//!   frame announces (a process leaving /proc, a listing catching up).

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long any single wait may take before the test fails.
pub const TIMEOUT: Duration = Duration::from_secs(15);

/// The text before the URL in the daemon's ready line.
const READY_PREFIX: &str = "pagewire listening on ";
/// The text between the address and the control socket path.
const READY_CONTROL: &str = " (control socket ";

/// Environment variables that would change the binary's defaults; every
/// process started here runs without them unless a test sets them.
const ISOLATED_ENV: &[&str] = &["PAGEWIRE_CONTROL", "PAGEWIRE_TOKEN", "RUST_LOG"];

/// An HTTP client that talks to the daemon directly (no proxy).
fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("an HTTP client")
}

/// How often [`until`] tries again.
const POLL: Duration = Duration::from_millis(20);

/// Tries `attempt` until it gives a value, every [`POLL`], and panics
/// naming `what` once `deadline` has passed. The only poll loop of these
/// tests: for a condition that no line, frame or exit announces.
pub async fn until<T, F>(what: &str, deadline: Duration, mut attempt: impl FnMut() -> F) -> T
where
    F: std::future::Future<Output = Option<T>>,
{
    let end = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(value) = attempt().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until `condition` holds; see [`until`].
pub async fn eventually(what: &str, deadline: Duration, mut condition: impl FnMut() -> bool) {
    until(what, deadline, || {
        std::future::ready(condition().then_some(()))
    })
    .await
}

/// The `pagewire` binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_pagewire")
}

/// A `pagewire` command with a clean environment and no stdin.
pub fn command<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(bin());
    cmd.args(args).stdin(Stdio::null());
    for var in ISOLATED_ENV {
        cmd.env_remove(var);
    }
    // Never the user's state directory (nor /var/lib/pagewire for root): a
    // daemon started here without a state directory of its own keeps its
    // state in one of this test process. [`Process::spawn`] gives each
    // process one of its own instead, removed after it ends.
    cmd.env("PAGEWIRE_STATE_DIR", shared_state_dir());
    cmd
}

/// The state directory of daemons a test starts without one of their own
/// and not through [`Process::spawn`].
pub fn shared_state_dir() -> PathBuf {
    std::env::temp_dir().join(format!("pagewire-it-state-{}", std::process::id()))
}

/// When `cmd` would keep its state in [`shared_state_dir`], points it at a
/// directory of its own instead, which the process makes itself (so that it
/// is the process's own, whatever user it runs as) and which the returned
/// guard removes: the state of a test's daemons goes with them.
fn own_state_dir(cmd: &mut Command) -> Option<CleanPath> {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let shared = shared_state_dir();
    let uses_shared = cmd
        .get_envs()
        .any(|(key, value)| key == "PAGEWIRE_STATE_DIR" && value == Some(shared.as_os_str()));
    if !uses_shared {
        return None;
    }
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let own = CleanPath::new(format!("{}-{n}", shared.display()));
    cmd.env("PAGEWIRE_STATE_DIR", &own.0);
    Some(own)
}

/// A path a test, or what it starts, may fill: removed, directory or file,
/// with whatever is in it, when made and when dropped.
pub struct CleanPath(pub PathBuf);

impl CleanPath {
    /// `path`, emptied of anything a previous run left there.
    pub fn new(path: impl Into<PathBuf>) -> CleanPath {
        let clean = CleanPath(path.into());
        clean.remove();
        clean
    }

    fn remove(&self) {
        let _ = std::fs::remove_dir_all(&self.0);
        let _ = std::fs::remove_file(&self.0);
    }
}

impl Drop for CleanPath {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Runs the CLI with exactly `args` and waits for it to exit.
pub fn run_cli<S: AsRef<OsStr>>(args: &[S]) -> Output {
    Process::spawn(command(args)).wait_exit()
}

/// What a finished process did.
#[derive(Clone, Debug)]
pub struct Output {
    /// The command line, for messages.
    pub command: String,
    /// Its exit code (`None` if killed by a signal).
    pub code: Option<i32>,
    /// Everything it wrote on stdout.
    pub stdout: String,
    /// Everything it wrote on stderr.
    pub stderr: String,
}

impl Output {
    /// Panics (showing everything) unless the process exited with `code`.
    #[track_caller]
    pub fn assert_exit_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, Some(code), "unexpected exit code\n{self}");
        self
    }

    /// Panics (showing everything) unless stdout contains `needle`.
    #[track_caller]
    pub fn assert_stdout_contains(&self, needle: &str) -> &Self {
        assert!(
            self.stdout.contains(needle),
            "stdout lacks {needle:?}\n{self}"
        );
        self
    }

    /// Panics (showing everything) unless stderr contains `needle`.
    #[track_caller]
    pub fn assert_stderr_contains(&self, needle: &str) -> &Self {
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}\n{self}"
        );
        self
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "command: {}\nexit code: {:?}\n--- stdout ---\n{}--- stderr ---\n{}--- end ---",
            self.command, self.code, self.stdout, self.stderr
        )
    }
}

/// Lines read so far from one output stream of a child.
#[derive(Default)]
struct Stream {
    lines: Vec<String>,
    closed: bool,
}

/// A stream shared between its reader thread and the test.
#[derive(Clone, Default)]
struct Shared(Arc<SharedInner>);

#[derive(Default)]
struct SharedInner {
    stream: Mutex<Stream>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Stream> {
        // A panic in another test thread must not hide this test's output.
        self.0.stream.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for a change, at most `left`.
    fn wait<'a>(&self, guard: MutexGuard<'a, Stream>, left: Duration) -> MutexGuard<'a, Stream> {
        self.0
            .changed
            .wait_timeout(guard, left)
            .map(|(guard, _)| guard)
            .unwrap_or_else(|e| e.into_inner().0)
    }

    fn collect(self, source: impl Read + Send + 'static) {
        std::thread::spawn(move || {
            let mut reader = BufReader::new(source);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf);
                        let line = line.trim_end_matches(['\n', '\r']).to_owned();
                        self.lock().lines.push(line);
                        self.0.changed.notify_all();
                    }
                }
            }
            self.lock().closed = true;
            self.0.changed.notify_all();
        });
    }

    /// Waits for a line after index `from` matching `pred`.
    fn wait_for(
        &self,
        from: usize,
        pred: &dyn Fn(&str) -> bool,
        timeout: Duration,
    ) -> Option<(usize, String)> {
        let deadline = Instant::now() + timeout;
        let mut stream = self.lock();
        let mut next = from;
        loop {
            while next < stream.lines.len() {
                if pred(&stream.lines[next]) {
                    return Some((next, stream.lines[next].clone()));
                }
                next += 1;
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            if stream.closed {
                return None;
            }
            stream = self.wait(stream, left);
        }
    }

    /// Waits until the stream is closed (the child exited), bounded.
    fn wait_closed(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut stream = self.lock();
        while !stream.closed {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return;
            };
            stream = self.wait(stream, left);
        }
    }

    fn text(&self) -> String {
        let stream = self.lock();
        stream.lines.iter().map(|l| format!("{l}\n")).collect()
    }
}

/// A running child whose stdout and stderr are collected line by line.
/// Killed (if still running) when dropped.
pub struct Process {
    child: Child,
    command: String,
    stdout: Shared,
    stderr: Shared,
    /// Lines of stdout already returned by [`Process::next_stdout`].
    consumed: usize,
    /// A temporary directory the process uses, removed after it ends.
    dir: Option<tempfile::TempDir>,
    /// Its state directory, when it would have used the shared one;
    /// removed after it ends.
    _state: Option<CleanPath>,
}

impl Process {
    /// Starts `cmd` with piped stdout and stderr.
    #[track_caller]
    pub fn spawn(mut cmd: Command) -> Process {
        let state = own_state_dir(&mut cmd);
        let command = format!("{cmd:?}");
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {command}: {e}"));
        let stdout = Shared::default();
        let stderr = Shared::default();
        if let Some(out) = child.stdout.take() {
            stdout.clone().collect(out);
        }
        if let Some(err) = child.stderr.take() {
            stderr.clone().collect(err);
        }
        Process {
            child,
            command,
            stdout,
            stderr,
            consumed: 0,
            dir: None,
            _state: state,
        }
    }

    /// Starts `cmd` with `input` on its stdin (then closed), and piped
    /// stdout and stderr.
    #[track_caller]
    pub fn spawn_with_input(mut cmd: Command, input: &str) -> Process {
        cmd.stdin(Stdio::piped());
        let mut process = Process::spawn(cmd);
        if let Some(mut stdin) = process.child.stdin.take() {
            let input = input.to_owned();
            // A thread, so a child that does not read cannot block the test.
            std::thread::spawn(move || {
                let _ = std::io::Write::write_all(&mut stdin, input.as_bytes());
            });
        }
        process
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Waits for a stdout line matching `pred` (searching every line so
    /// far) and returns it; panics with all output after [`TIMEOUT`] or if
    /// the process exits first.
    #[track_caller]
    pub fn wait_for_stdout(&self, pred: impl Fn(&str) -> bool) -> String {
        match self.stdout.wait_for(0, &pred, TIMEOUT) {
            Some((_, line)) => line,
            None => panic!("no matching stdout line\n{}", self.snapshot()),
        }
    }

    /// Like [`Process::wait_for_stdout`], but only among lines after the
    /// last one this returned: for reading a stream in order.
    #[track_caller]
    pub fn next_stdout(&mut self, pred: impl Fn(&str) -> bool) -> String {
        match self.stdout.wait_for(self.consumed, &pred, TIMEOUT) {
            Some((index, line)) => {
                self.consumed = index + 1;
                line
            }
            None => panic!("no matching stdout line\n{}", self.snapshot()),
        }
    }

    /// Every stdout line so far.
    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout.lock().lines.clone()
    }

    /// The output so far, with the command, for failure messages.
    pub fn snapshot(&self) -> Output {
        Output {
            command: self.command.clone(),
            code: None,
            stdout: self.stdout.text(),
            stderr: self.stderr.text(),
        }
    }

    /// Waits (at most [`TIMEOUT`]) for the process to exit by itself and
    /// returns what it did; kills it and panics if it does not.
    #[track_caller]
    pub fn wait_exit(self) -> Output {
        self.wait_exit_within(TIMEOUT)
    }

    /// [`Process::wait_exit`] with a deadline of its own, for long jobs.
    #[track_caller]
    pub fn wait_exit_within(mut self, timeout: Duration) -> Output {
        let status = self.wait_status(timeout);
        let Some(status) = status else {
            let _ = self.child.kill();
            let _ = self.child.wait();
            panic!("did not exit within {timeout:?}\n{}", self.snapshot());
        };
        // The pipes close at exit; wait for the readers to drain them.
        self.stdout.wait_closed(TIMEOUT);
        self.stderr.wait_closed(TIMEOUT);
        Output {
            code: status.code(),
            ..self.snapshot()
        }
    }

    /// Sends SIGTERM (through `kill(1)`, so the tests need no libc) and
    /// waits for the process to exit.
    #[track_caller]
    pub fn terminate(self) -> Output {
        let pid = self.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(
            sent.is_ok_and(|s| s.success()),
            "cannot send SIGTERM\n{}",
            self.snapshot()
        );
        self.wait_exit()
    }

    /// Kills the process with SIGKILL (no chance to clean up, as in a
    /// crash) and returns what it did.
    #[track_caller]
    pub fn kill(mut self) -> Output {
        let _ = self.child.kill();
        self.wait_exit()
    }

    fn wait_status(&mut self, timeout: Duration) -> Option<ExitStatus> {
        // std offers no wait with a deadline; poll the exit at a short,
        // fixed interval until the deadline.
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                _ => return None,
            }
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A running `pagewire serve`, stopped when dropped.
pub struct Daemon {
    /// The HTTP address it reported in its ready line.
    pub addr: SocketAddr,
    /// `http` or `https`, as its ready line said.
    pub scheme: &'static str,
    /// Its control socket.
    pub control: PathBuf,
    /// Always `Some` but in `Drop`, which stops it.
    process: Option<Process>,
    terminate_on_drop: bool,
}

/// How to start a daemon; see [`Daemon::builder`].
#[derive(Default)]
pub struct DaemonBuilder {
    args: Vec<OsString>,
    control: Option<PathBuf>,
    env: Vec<(OsString, OsString)>,
    config: Option<String>,
    terminate_on_drop: bool,
}

impl DaemonBuilder {
    /// Adds one argument after `serve --listen 127.0.0.1:0 --control PATH`.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Adds several arguments.
    pub fn args<S: AsRef<OsStr>>(mut self, args: &[S]) -> Self {
        self.args.extend(args.iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Uses this control socket instead of one in a fresh temporary directory.
    pub fn control(mut self, path: impl Into<PathBuf>) -> Self {
        self.control = Some(path.into());
        self
    }

    /// Sets an environment variable for the daemon.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// Gives the daemon a configuration file with this text, written in its
    /// temporary directory; `@DIR@` in it stands for that directory.
    pub fn config(mut self, text: &str) -> Self {
        self.config = Some(text.to_owned());
        self
    }

    /// Stops the daemon with SIGTERM when it is dropped, as an operator
    /// would, so that it ends its actions' runs itself (SIGKILL only if it
    /// does not stop in time).
    pub fn terminate_on_drop(mut self) -> Self {
        self.terminate_on_drop = true;
        self
    }

    /// Starts the daemon and waits for its ready line; panics with its
    /// output if it does not come.
    #[track_caller]
    pub fn start(self) -> Daemon {
        let terminate_on_drop = self.terminate_on_drop;
        let (mut process, control, dir) = self.launch();
        process.dir = dir;
        let ready = match process
            .stdout
            .wait_for(0, &|l| l.starts_with(READY_PREFIX), TIMEOUT)
        {
            Some((_, line)) => line,
            None => panic!("the daemon did not get ready\n{}", process.snapshot()),
        };
        let url = &ready[READY_PREFIX.len()..];
        let (scheme, rest) = match url.strip_prefix("https://") {
            Some(rest) => ("https", rest),
            None => ("http", url.strip_prefix("http://").unwrap_or(url)),
        };
        // `ADDR`, or `ADDR/PREFIX/` under a base path.
        let addr = rest
            .split(READY_CONTROL)
            .next()
            .and_then(|a| a.split('/').next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("unreadable ready line {ready:?}\n{}", process.snapshot()));
        let want = format!("{READY_CONTROL}{})", control.display());
        assert!(
            ready.ends_with(&want),
            "ready line {ready:?} should end with {want:?}"
        );
        Daemon {
            addr,
            scheme,
            control,
            process: Some(process),
            terminate_on_drop,
        }
    }

    /// Starts the daemon without waiting for it: for daemons expected to
    /// fail, followed by [`Process::wait_exit`].
    #[track_caller]
    pub fn spawn(self) -> Process {
        let (mut process, _, dir) = self.launch();
        process.dir = dir;
        process
    }

    fn launch(self) -> (Process, PathBuf, Option<tempfile::TempDir>) {
        // Every daemon gets a fresh state directory of its own in its
        // temporary directory, unless the test gives one.
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let control = self.control.unwrap_or_else(|| dir.path().join("ctl.sock"));
        let mut cmd = command(["serve", "--listen", "127.0.0.1:0", "--control"]);
        cmd.arg(&control).args(&self.args);
        let own_state = self.args.iter().any(|a| a == "--state-dir")
            || self
                .config
                .as_deref()
                .is_some_and(|c| c.contains("state_dir"));
        if !own_state {
            cmd.arg("--state-dir").arg(dir.path().join("state"));
        }
        if let Some(text) = &self.config {
            let path = dir.path().join("pagewire.toml");
            let text = text.replace("@DIR@", &dir.path().display().to_string());
            std::fs::write(&path, text).unwrap_or_else(|e| panic!("write the config: {e}"));
            cmd.arg("--config").arg(path);
        }
        for (key, value) in &self.env {
            cmd.env(key, value);
        }
        (Process::spawn(cmd), control, Some(dir))
    }
}

impl Daemon {
    /// Starts `pagewire serve --listen 127.0.0.1:0 --control DIR/ctl.sock ARGS`
    /// and waits until it is ready.
    #[track_caller]
    pub fn start<S: AsRef<OsStr>>(args: &[S]) -> Daemon {
        Daemon::builder().args(args).start()
    }

    /// A builder for a daemon with more settings.
    pub fn builder() -> DaemonBuilder {
        DaemonBuilder::default()
    }

    /// `http://ADDR` (or `https://`) followed by `path` (which starts
    /// with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{path}", self.scheme, self.addr)
    }

    /// Runs `pagewire --control SOCKET ARGS` and waits for it to exit.
    #[track_caller]
    pub fn cli<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        self.cli_spawn(args).wait_exit()
    }

    /// Starts `pagewire --control SOCKET ARGS` without waiting (`monitor`).
    #[track_caller]
    pub fn cli_spawn<S: AsRef<OsStr>>(&self, args: &[S]) -> Process {
        let mut cmd = command([OsStr::new("--control"), self.control.as_os_str()]);
        cmd.args(args);
        Process::spawn(cmd)
    }

    /// The daemon's own process (its output so far, waits on it).
    pub fn process(&self) -> &Process {
        self.process.as_ref().expect("the daemon's process")
    }

    fn process_mut(&mut self) -> &mut Process {
        self.process.as_mut().expect("the daemon's process")
    }

    /// Waits for a daemon stdout line matching `pred`; see
    /// [`Process::wait_for_stdout`].
    #[track_caller]
    pub fn wait_for_stdout(&self, pred: impl Fn(&str) -> bool) -> String {
        self.process().wait_for_stdout(pred)
    }

    /// Waits for the next daemon stdout line (after the last this
    /// returned) that contains `want`, without blocking the test's runtime.
    pub async fn next_stdout(&mut self, want: &str) -> String {
        let from = self.process().consumed;
        let stdout = self.process().stdout.clone();
        let want = want.to_owned();
        let found = tokio::task::spawn_blocking(move || {
            stdout.wait_for(from, &|l| l.contains(&want), TIMEOUT)
        })
        .await
        .expect("the wait for a line");
        match found {
            Some((index, line)) => {
                self.process_mut().consumed = index + 1;
                line
            }
            None => panic!("no matching stdout line\n{}", self.process().snapshot()),
        }
    }

    /// The daemon's stdout lines from the next one up to and including the
    /// first that contains `want`.
    pub async fn stdout_until(&mut self, want: &str) -> Vec<String> {
        let from = self.process().consumed;
        self.next_stdout(want).await;
        let to = self.process().consumed;
        self.process().stdout_lines()[from..to].to_vec()
    }

    /// Runs a command line over `POST /api/command` as the operator (from
    /// loopback, with no token configured): whether it succeeded, and its
    /// output.
    pub async fn command(&self, line: &str) -> (bool, String) {
        let answer: serde_json::Value = http_client()
            .post(self.url("/api/command"))
            .body(line.to_string())
            .send()
            .await
            .expect("POST /api/command")
            .json()
            .await
            .expect("a JSON answer");
        (
            answer["ok"].as_bool().expect("ok"),
            answer["output"].as_str().expect("output").to_string(),
        )
    }

    /// `GET /metrics`.
    pub async fn metrics(&self) -> String {
        http_client()
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics text")
    }

    /// The daemon's temporary directory.
    pub fn dir(&self) -> &Path {
        let dir = self.process().dir.as_ref().expect("a temporary directory");
        dir.path()
    }

    /// A file in the daemon's temporary directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir().join(name)
    }

    /// Kills the daemon with SIGKILL, as a crash would, and returns what it
    /// did.
    #[track_caller]
    pub fn kill(mut self) -> Output {
        self.process.take().expect("the daemon's process").kill()
    }

    /// Stops the daemon with SIGTERM and returns what it did.
    #[track_caller]
    pub fn stop(mut self) -> Output {
        self.process
            .take()
            .expect("the daemon's process")
            .terminate()
    }

    /// The path of the control socket, for tests that look at the file.
    pub fn control_path(&self) -> &Path {
        &self.control
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // Without terminate_on_drop the process is killed as it is dropped.
        if let (true, Some(process)) = (self.terminate_on_drop, self.process.take()) {
            if !std::thread::panicking() {
                process.terminate();
            }
        }
    }
}
