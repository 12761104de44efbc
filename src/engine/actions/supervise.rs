//! One run from start to end: its output streamed, its limits enforced,
//! its end reported.

use std::process::ExitStatus;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use tokio::process::{ChildStderr, ChildStdout};
use tokio_util::sync::CancellationToken;

use super::keeper::Report;
use super::lines::LineReader;
use super::sink::{Pacer, Sink, TailStep};
use super::spawn::{RunProcess, REAP_TIMEOUT};
use super::Slot;
use crate::base::protocol::ServerFrame;

/// How often a run started by a page checks that the page is still there
/// while the program is silent (each output line checks too).
pub(super) const LIVENESS_INTERVAL: Duration = Duration::from_millis(500);

/// What one run's supervisor needs besides the process.
pub(super) struct RunCtx {
    pub(super) sink: Sink,
    pub(super) pacer: Pacer,
    pub(super) timeout: Duration,
    pub(super) started: Instant,
    pub(super) stop: CancellationToken,
}

/// How a run ended.
pub(super) enum End {
    Exited(ExitStatus),
    Lost,
    Timeout,
    PageGone,
    Shutdown,
}

/// Streams a run's output, enforces its limits, ends it, and reports.
pub(super) async fn supervise(
    mut process: RunProcess,
    stdout: Option<tokio::process::ChildStdout>,
    stderr: Option<tokio::process::ChildStderr>,
    ctx: RunCtx,
    slot: Slot,
) {
    let RunCtx {
        sink,
        mut pacer,
        timeout,
        started,
        stop,
    } = ctx;
    let streams = (LineReader::new(stdout), LineReader::new(stderr));
    let limits = (timeout, &stop);
    let end = stream(&mut process, streams, &sink, &mut pacer, limits).await;
    report(process, end, &sink, timeout, started, slot).await;
}

/// Passes the program's output on until the run ends, and says how.
async fn stream(
    process: &mut RunProcess,
    (mut out, mut err): (LineReader<ChildStdout>, LineReader<ChildStderr>),
    sink: &Sink,
    pacer: &mut Pacer,
    (timeout, stop): (Duration, &CancellationToken),
) -> End {
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut tick = tokio::time::interval(LIVENESS_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A line read but not yet sent: reading stops until there is room, so
    // the program's pipe fills and the program waits.
    let mut held: Option<(&'static str, String)> = None;
    let mut status: Option<ExitStatus> = None;
    let mut reports_open = true;
    loop {
        if held.is_none() && out.done && err.done {
            if let Some(status) = status {
                return End::Exited(status);
            }
        }
        if !reports_open && status.is_none() {
            // The keeper is gone without a word about the program.
            return End::Lost;
        }
        // Biased, limits first: a program that never stops writing must
        // still meet its timeout and its page's departure.
        tokio::select! {
            biased;
            _ = stop.cancelled() => return End::Shutdown,
            _ = &mut deadline => return End::Timeout,
            _ = tick.tick(), if sink.bound.is_some() => {
                if !sink.is_live() {
                    return End::PageGone;
                }
            }
            _ = pacer.wait(), if held.is_some() => {}
            line = out.next_line(), if held.is_none() && !out.done => {
                if let Some(text) = line {
                    sink.monitor("stdout", &text);
                    held = Some(("stdout", text));
                }
            }
            line = err.next_line(), if held.is_none() && !err.done => {
                if let Some(text) = line {
                    sink.monitor("stderr", &text);
                    held = Some(("stderr", text));
                }
            }
            report = process.reports.next_line(), if reports_open => match report {
                Ok(Some(line)) => {
                    status = Report::parse(&line).and_then(|r| r.status()).or(status);
                }
                Ok(None) | Err(_) => reports_open = false,
            },
        }
        if held.is_some() && pacer.ready() {
            if let Some((stream, text)) = held.take() {
                if !sink.line(stream, &text) {
                    return End::PageGone;
                }
            }
        }
    }
}

/// Has the keeper end what is left of the run, frees its place (once no
/// process of it is left) and tells the Monitor and the pages how it ended.
async fn report(
    mut process: RunProcess,
    end: End,
    sink: &Sink,
    timeout: Duration,
    started: Instant,
    slot: Slot,
) {
    let (status, mut message) = match end {
        End::Exited(status) => describe(status),
        End::Lost => (
            None,
            "lost track of the program: its keeper ended".to_string(),
        ),
        End::Timeout => (None, format!("killed after {}s timeout", timeout.as_secs())),
        End::PageGone => (None, "killed: its page went away".to_string()),
        End::Shutdown => (None, "killed: the daemon is shutting down".to_string()),
    };
    // Whatever the run left behind, the keeper kills now.
    let gone = process.end(REAP_TIMEOUT).await;
    slot.inner.finished.fetch_add(1, Relaxed);
    let mut slot = Some(slot);
    if gone {
        // Free before `done` goes out, so that a page may start the next
        // run as soon as it reads it.
        drop(slot.take());
    } else {
        message.push_str("; some of its processes could not be killed yet");
    }
    sink.hub.monitor().emit(format_args!(
        "action {}[{}] done: {message} after {:.1}s",
        sink.action,
        sink.run,
        started.elapsed().as_secs_f64()
    ));
    let done = ServerFrame::Done {
        name: sink.name.as_deref(),
        action: &sink.action,
        status,
        message: &message,
    };
    sink.send(&done, TailStep::End);
    if slot.is_some() {
        // The place stays taken for as long as a process of the run lives.
        while !process.end(REAP_TIMEOUT).await {}
        sink.hub.monitor().emit(format_args!(
            "action {}[{}]: its last process is gone",
            sink.action, sink.run
        ));
    }
    drop(slot);
}

/// The `done` frame's status and message for a program that ended by
/// itself.
pub(super) fn describe(status: ExitStatus) -> (Option<i32>, String) {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(code), _) => (Some(code), format!("exited with {code}")),
        (None, Some(sig)) => (None, format!("killed by signal {sig}")),
        (None, None) => (None, format!("ended: {status}")),
    }
}
