//! The keeper: the process between the daemon and an action's program,
//! one per run, that makes "every process the run started" a set the
//! kernel keeps for us.
//!
//! The daemon starts its own binary again as the keeper (`/proc/self/exe`
//! with [`ARG0`] as its name; `main` hands over to [`main_if_keeper`]). The
//! keeper marks itself a *child subreaper* (`PR_SET_CHILD_SUBREAPER`) and
//! starts the program. From then on every process the program starts, and
//! everything those start, stays in the keeper's subtree however it
//! detaches: a process whose parent dies (a double fork, `setsid -f`,
//! `( cmd & )`, `nohup cmd &`) is re-parented to the keeper, not to init,
//! and `setsid` or a new process group changes nothing about parents. The
//! keeper reaps all of them and exits only when it has no child left, so:
//!
//! - the keeper has exited ⇔ no process of the run is left;
//! - to end a run, kill the keeper's children until it has none: a killed
//!   process's own children become the keeper's, and the next round gets
//!   them.
//!
//! Talking to the daemon: the keeper's standard input is one end of a Unix
//! socket pair. It writes one [`Report`] line when the program started (or
//! could not start) and one when the program exited. When the daemon's end
//! closes — the daemon ends the run, or the daemon itself is gone, even by
//! SIGKILL — the keeper kills everything left of the run and exits. The
//! program's standard output and error are the daemon's pipes, which the
//! keeper passes on and lets go of.

use std::ffi::OsString;
use std::io::{self, BufRead as _, BufReader, Write as _};
use std::os::fd::AsFd as _;
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt as _;
use std::process::{Command, ExitCode, ExitStatus, Stdio};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;

/// The name (`argv[0]`) the keeper runs under; `ps` shows it followed by
/// the program and its arguments.
pub(crate) const ARG0: &str = "pagewire-action-keeper";

/// Exit code of a keeper that could not start the program (it has no
/// child then).
pub(crate) const CANNOT_START: i32 = 127;

/// Exit code of a keeper that could not do its own job.
const KEEPER_FAILED: u8 = 70;

/// Pause between two rounds of killing a run's processes: long enough
/// for the kernel to re-parent the children of those just killed.
const KILL_ROUND: Duration = Duration::from_millis(5);

/// What the keeper tells the daemon, one line each.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Report {
    /// The program runs, with this process id.
    Started(u32),
    /// The program could not be started; what the system said.
    Failed(String),
    /// The program exited with this code.
    Exited(i32),
    /// The program was ended by this signal.
    Signaled(i32),
}

impl Report {
    /// The line sent for this report, without its newline.
    pub(crate) fn to_line(&self) -> String {
        match self {
            Report::Started(pid) => format!("started {pid}"),
            Report::Failed(why) => format!("failed {}", why.replace('\n', " ")),
            Report::Exited(code) => format!("exited {code}"),
            Report::Signaled(sig) => format!("signaled {sig}"),
        }
    }

    /// Reads a line sent by [`Report::to_line`].
    pub(crate) fn parse(line: &str) -> Option<Report> {
        let (word, rest) = line.split_once(' ')?;
        match word {
            "started" => rest.parse().ok().map(Report::Started),
            "failed" => Some(Report::Failed(rest.to_string())),
            "exited" => rest.parse().ok().map(Report::Exited),
            "signaled" => rest.parse().ok().map(Report::Signaled),
            _ => None,
        }
    }

    /// The program's end as an [`ExitStatus`], for the `done` frame.
    pub(crate) fn status(&self) -> Option<ExitStatus> {
        match self {
            Report::Exited(code) => Some(ExitStatus::from_raw((code & 0xff) << 8)),
            Report::Signaled(sig) => Some(ExitStatus::from_raw(sig & 0x7f)),
            _ => None,
        }
    }
}

/// Runs the keeper and returns its exit code if this process was started
/// as one (see the module doc); `None` otherwise, straight away.
pub fn main_if_keeper() -> Option<ExitCode> {
    let mut argv = std::env::args_os();
    if argv.next().as_deref() != Some(ARG0.as_ref()) {
        return None;
    }
    let Some(program) = argv.next() else {
        return Some(ExitCode::from(KEEPER_FAILED));
    };
    Some(keep(program, argv.collect()))
}

fn keep(program: OsString, args: Vec<OsString>) -> ExitCode {
    let Ok(daemon) = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .map(UnixStream::from)
    else {
        return ExitCode::from(KEEPER_FAILED);
    };
    let report = |r: Report| {
        // The daemon may be gone; the keeper's work goes on regardless.
        let _ = (&daemon).write_all(format!("{}\n", r.to_line()).as_bytes());
    };
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        report(Report::Failed(format!("cannot become a subreaper: {e}")));
        return ExitCode::from(KEEPER_FAILED);
    }
    let child = Command::new(&program)
        .args(&args)
        .stdin(Stdio::null())
        .spawn();
    let pid = match child {
        Ok(child) => child.id(),
        Err(e) => {
            report(Report::Failed(e.to_string()));
            return ExitCode::from(CANNOT_START as u8);
        }
    };
    report(Report::Started(pid));
    // The program has the output pipes now: the daemon must see their end
    // when the run's last process lets go of them, not when the keeper does.
    if let Ok(null) = std::fs::File::open("/dev/null") {
        let _ = nix::unistd::dup2_stdout(&null);
        let _ = nix::unistd::dup2_stderr(&null);
    }
    match daemon.try_clone() {
        Ok(watch) => {
            std::thread::spawn(move || {
                wait_for_the_end(watch);
                kill_the_rest();
            });
        }
        // Without a way to hear the daemon, the run cannot be ended early;
        // say so by ending it now rather than leaving it beyond control.
        Err(_) => {
            std::thread::spawn(kill_the_rest);
        }
    }
    loop {
        // __WALL: a child made by clone() with another exit signal counts too.
        match waitpid(None::<Pid>, Some(WaitPidFlag::__WALL)) {
            Ok(status) => {
                let Some(done) = status.pid() else { continue };
                if u32::try_from(done.as_raw()).ok() != Some(pid) {
                    // One of the run's other processes; nothing to tell.
                    continue;
                }
                match status {
                    nix::sys::wait::WaitStatus::Exited(_, code) => report(Report::Exited(code)),
                    nix::sys::wait::WaitStatus::Signaled(_, sig, _) => {
                        report(Report::Signaled(sig as i32))
                    }
                    _ => {}
                }
            }
            Err(Errno::EINTR) => {}
            // No child left: the whole run is over.
            Err(Errno::ECHILD) => return ExitCode::SUCCESS,
            Err(_) => return ExitCode::from(KEEPER_FAILED),
        }
    }
}

/// Returns when the daemon's end of the socket closes (it sends nothing
/// else).
fn wait_for_the_end(daemon: UnixStream) {
    let mut lines = BufReader::new(daemon);
    let mut line = String::new();
    loop {
        line.clear();
        match lines.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Kills the keeper's children, round after round, until the main thread
/// has reaped the last of them and exits the process.
fn kill_the_rest() {
    let me = std::process::id();
    loop {
        for pid in children_of(me) {
            if let Ok(pid) = i32::try_from(pid) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        std::thread::sleep(KILL_ROUND);
    }
}

/// Process ids whose parent is process `parent`, zombies included.
pub(super) fn children_of(parent: u32) -> Vec<u32> {
    // Each thread's list of children, when the kernel keeps them
    // (CONFIG_PROC_CHILDREN): a few small files instead of all of /proc.
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{parent}/task")) {
        let mut found = Vec::new();
        let mut listed = true;
        for task in tasks.flatten() {
            match std::fs::read_to_string(task.path().join("children")) {
                Ok(text) => found.extend(
                    text.split_whitespace()
                        .filter_map(|p| p.parse::<u32>().ok()),
                ),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    listed = false;
                    break;
                }
                // A thread that just ended.
                Err(_) => {}
            }
        }
        if listed {
            return found;
        }
    }
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| parent_of(*pid) == Some(parent))
        .collect()
}

/// The parent of process `pid`, from /proc/PID/stat.
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "PID (COMMAND) STATE PPID ...": the command may hold anything.
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_read_back_as_written() {
        for r in [
            Report::Started(4242),
            Report::Failed("No such file or directory (os error 2)".into()),
            Report::Exited(3),
            Report::Signaled(9),
        ] {
            assert_eq!(Report::parse(&r.to_line()), Some(r));
        }
        assert_eq!(Report::parse("started x"), None);
        assert_eq!(Report::parse("bogus 1"), None);
        assert_eq!(Report::parse(""), None);
        assert_eq!(
            Report::Failed("two\nlines".into()).to_line(),
            "failed two lines"
        );
    }

    #[test]
    fn statuses_are_those_of_the_program() {
        let exited = Report::Exited(3).status().expect("status");
        assert_eq!(exited.code(), Some(3));
        let killed = Report::Signaled(9).status().expect("status");
        assert_eq!((killed.code(), killed.signal()), (None, Some(9)));
        assert!(Report::Started(1).status().is_none());
    }

    #[test]
    fn children_are_found_in_proc() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep");
        let found = children_of(std::process::id());
        let _ = child.kill();
        let _ = child.wait();
        assert!(found.contains(&child.id()), "{found:?}");
        assert_eq!(parent_of(child.id()), None);
        assert_eq!(
            parent_of(std::process::id()),
            Some(std::os::unix::process::parent_id())
        );
    }
}
