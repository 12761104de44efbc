//! The Monitor: the daemon's own event log, fanned out to every watcher.
//!
//! An event is rendered to one line once, when emitted. Its text is escaped
//! first ([`crate::base::text::escape`]): nothing a page, a client or an action
//! sends can start a Monitor line of its own or reach a terminal as a
//! control sequence, whoever prints the line. The console, each `pagewire
//! monitor` client and (with `set notify`) the pages all receive the same
//! `Arc<str>`. Watchers read from a bounded broadcast ring, so a slow
//! watcher misses lines (and is told how many) instead of slowing the
//! daemon.
//!
//! # Floods
//!
//! Some events a stranger can cause at will: a wrong bearer token, a
//! refused request or WebSocket, a command a page may not run, a protocol
//! error. A thousand of them must not make a thousand lines on every
//! watcher and every page. Their emitters use [`Monitor::emit_summarised`]
//! and name the event's *kind* (`refused command: wrong bearer token`):
//! within a window of [`FLOOD_WINDOW`] only the first [`FLOOD_BURST`]
//! events of a kind are shown; the rest are counted, and when the window
//! ends (a timer: the summary comes even if the flood simply stops) one line
//! says `KIND … repeated N times`. While a flood goes on, each further
//! window gives that one summary line and nothing else; a window without
//! any event of the kind ends the flood, and the next one is shown in full
//! again. Everything else (a page opened, a name registered, an operator's
//! command) goes through [`Monitor::emit`] and is always shown: those are
//! what an operator watches for, and each is bounded by a limit of its own.
//!
//! Limits: at most [`MAX_KINDS`] kinds are tracked at once (an event of a
//! new kind beyond that is shown, not tracked), and a kind is at most
//! [`MAX_KIND_BYTES`] bytes.

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::sync::broadcast;
use tokio::time::Instant;

use crate::base::text;

/// How many rendered lines a watcher may fall behind before it misses some.
pub const MONITOR_BACKLOG: usize = 1024;

/// The window within which events of one kind count as a flood.
pub(crate) const FLOOD_WINDOW: Duration = Duration::from_secs(1);

/// How many events of one kind a window shows in full; the rest are
/// summarised.
pub(crate) const FLOOD_BURST: u32 = 1;

/// Most kinds tracked at once.
pub(crate) const MAX_KINDS: usize = 1024;

/// Longest kind, in bytes.
pub(crate) const MAX_KIND_BYTES: usize = 200;

/// Width of the time stamp that starts every line (`HH:MM:SS.mmm`).
const STAMP_LEN: usize = 12;

/// Where the stamp and the blank after it go, until the line is shown.
const STAMP_ROOM: &str = "             ";
const _: () = assert!(STAMP_ROOM.len() == STAMP_LEN + 1);

/// A cheap-to-clone handle on the event stream.
#[derive(Clone)]
pub struct Monitor {
    inner: Arc<Inner>,
}

struct Inner {
    tx: broadcast::Sender<Arc<str>>,
    floods: Mutex<Floods>,
}

impl Default for Monitor {
    fn default() -> Self {
        Self::new()
    }
}

impl Monitor {
    /// A Monitor with no watchers yet.
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(MONITOR_BACKLOG);
        Monitor {
            inner: Arc::new(Inner {
                tx,
                floods: Mutex::new(Floods::default()),
            }),
        }
    }

    /// Renders `event` to a line and hands it to every current watcher.
    pub fn emit(&self, event: impl fmt::Display) {
        self.send(render(event));
    }

    /// Like [`Monitor::emit`], for an event a stranger can repeat at will:
    /// a flood of events of the same `kind` is summarised (see the module
    /// docs). `kind` is also what the summary says, e.g. `refused command:
    /// wrong bearer token`.
    pub fn emit_summarised(&self, kind: impl fmt::Display, event: impl fmt::Display) {
        let mut kind = kind.to_string();
        text::escape_tail(&mut kind, 0);
        truncate_kind(&mut kind);
        self.publish(&kind, render(event));
    }

    /// Says at once how many events of each kind are being held back, as
    /// the end of their windows would: for shutdown, when no timer is
    /// going to fire any more.
    pub(crate) fn flush_floods(&self) {
        let held = lock(&self.inner.floods).take_held();
        for (kind, held) in held {
            self.send(summary(&kind, held));
        }
    }

    /// A new watcher, seeing every line emitted from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<str>> {
        self.inner.tx.subscribe()
    }

    /// Shows `line` (a stamp's room, a blank, the escaped event), holds it
    /// back as part of a flood, or first says how many of its kind were
    /// held back in a window no timer closed.
    fn publish(&self, kind: &str, line: String) {
        let now = Instant::now();
        let (verdict, overdue) = lock(&self.inner.floods).note(kind, now);
        if let Some(held) = overdue {
            self.send(summary(kind, held));
        }
        match verdict {
            Verdict::Show => self.send(line),
            Verdict::Hold { timer: None } => {}
            Verdict::Hold { timer: Some(at) } => self.arm(kind, at),
        }
    }

    /// Summarises `kind` at `at`, the end of its window.
    fn arm(&self, kind: &str, at: Instant) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime (a plain thread): the next event of the kind
            // after the window brings the summary instead.
            lock(&self.inner.floods).disarm(kind);
            return;
        };
        let monitor: Weak<Inner> = Arc::downgrade(&self.inner);
        let kind = kind.to_owned();
        runtime.spawn(async move {
            tokio::time::sleep_until(at).await;
            if let Some(inner) = monitor.upgrade() {
                let monitor = Monitor { inner };
                let held = lock(&monitor.inner.floods).window_ended(&kind, Instant::now());
                if let Some(held) = held {
                    monitor.send(summary(&kind, held));
                }
            }
        });
    }

    /// Stamps a rendered line and hands it to the watchers.
    fn send(&self, mut line: String) {
        let now = time::OffsetDateTime::now_utc();
        let mut stamp = String::with_capacity(STAMP_LEN);
        let _ = write!(
            stamp,
            "{:02}:{:02}:{:02}.{:03}",
            now.hour(),
            now.minute(),
            now.second(),
            now.millisecond()
        );
        if stamp.len() == STAMP_LEN {
            line.replace_range(..STAMP_LEN, &stamp);
        }
        // No watcher is not an error: the event is simply not seen.
        let _ = self.inner.tx.send(line.into());
    }
}

/// `event` as a line with room for its stamp: `STAMP_LEN` blanks, a blank,
/// then the event's text, escaped.
fn render(event: impl fmt::Display) -> String {
    let mut line = String::with_capacity(96);
    line.push_str(STAMP_ROOM);
    let _ = write!(line, "{event}");
    text::escape_tail(&mut line, STAMP_ROOM.len());
    line
}

/// The line that closes a flood's window.
fn summary(kind: &str, held: u64) -> String {
    let times = if held == 1 { "time" } else { "times" };
    format!("{STAMP_ROOM}{kind} … repeated {held} {times}")
}

fn lock(m: &Mutex<Floods>) -> MutexGuard<'_, Floods> {
    // The tables stay consistent between statements; a panic elsewhere
    // must not silence the Monitor.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What to do with one event.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Show it.
    Show,
    /// Count it; `timer` asks for the window to be closed at that time.
    Hold { timer: Option<Instant> },
}

/// The kinds seen lately and their windows.
#[derive(Default)]
struct Floods {
    kinds: HashMap<Box<str>, Window>,
    /// No sweep of the table before this (it is full of live kinds).
    next_sweep: Option<Instant>,
}

/// One kind's current window.
#[derive(Debug)]
struct Window {
    /// When the window closes.
    end: Instant,
    /// Events shown in full in it.
    shown: u32,
    /// Events held back in it.
    held: u64,
    /// Whether a timer will close it.
    timer: bool,
}

impl Floods {
    /// Decides about one event of `kind` at `now`; also returns the count
    /// of a window that ended with events held and no timer to say so.
    fn note(&mut self, kind: &str, now: Instant) -> (Verdict, Option<u64>) {
        let Some(w) = self.kinds.get_mut(kind) else {
            if self.kinds.len() >= MAX_KINDS && !self.sweep(now) {
                return (Verdict::Show, None);
            }
            self.kinds.insert(kind.into(), Window::opened(now));
            return (Verdict::Show, None);
        };
        let mut overdue = None;
        if now >= w.end {
            if w.held > 0 && !w.timer {
                overdue = Some(std::mem::take(&mut w.held));
                w.flooded(now);
            } else if w.held == 0 {
                *w = Window::opened(now);
                return (Verdict::Show, None);
            }
        }
        if w.shown < FLOOD_BURST {
            w.shown += 1;
            return (Verdict::Show, overdue);
        }
        w.held += 1;
        let timer = (!w.timer).then(|| {
            w.timer = true;
            w.end
        });
        (Verdict::Hold { timer }, overdue)
    }

    /// The timer of `kind`'s window fired at `now`: how many to summarise.
    fn window_ended(&mut self, kind: &str, now: Instant) -> Option<u64> {
        let w = self.kinds.get_mut(kind)?;
        w.timer = false;
        if w.held == 0 {
            return None;
        }
        let held = std::mem::take(&mut w.held);
        w.flooded(now);
        Some(held)
    }

    /// Every kind with events held back, and how many; their windows
    /// count as ended.
    fn take_held(&mut self) -> Vec<(Box<str>, u64)> {
        let mut held = Vec::new();
        for (kind, w) in &mut self.kinds {
            if w.held > 0 {
                held.push((kind.clone(), std::mem::take(&mut w.held)));
            }
        }
        held
    }

    /// No timer could be started for `kind`.
    fn disarm(&mut self, kind: &str) {
        if let Some(w) = self.kinds.get_mut(kind) {
            w.timer = false;
        }
    }

    /// Forgets kinds whose window has passed quietly, at most every
    /// quarter window; true when there is room for a new one.
    fn sweep(&mut self, now: Instant) -> bool {
        if self.next_sweep.is_some_and(|at| now < at) {
            return false;
        }
        self.kinds
            .retain(|_, w| w.held > 0 || w.timer || now < w.end);
        self.next_sweep = Some(now + FLOOD_WINDOW / 4);
        self.kinds.len() < MAX_KINDS
    }
}

impl Window {
    /// A window opened by an event shown in full.
    fn opened(now: Instant) -> Window {
        Window {
            end: now + FLOOD_WINDOW,
            shown: 1,
            held: 0,
            timer: false,
        }
    }

    /// A window after a summary: the flood may go on, so nothing more is
    /// shown in full until a window passes without any event.
    fn flooded(&mut self, now: Instant) {
        self.end = now + FLOOD_WINDOW;
        self.shown = FLOOD_BURST;
    }
}

/// Cuts a kind at [`MAX_KIND_BYTES`] (on a character boundary).
fn truncate_kind(kind: &mut String) {
    if kind.len() > MAX_KIND_BYTES {
        let mut end = MAX_KIND_BYTES;
        while !kind.is_char_boundary(end) {
            end -= 1;
        }
        kind.truncate(end);
        kind.push('…');
    }
}

/// The line shown in place of Monitor lines a slow watcher missed.
pub(crate) fn missed_note(missed: u64) -> String {
    format!("(monitor: {missed} lines missed, the watcher fell behind)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::broadcast::error::TryRecvError;

    /// Every line emitted so far, without its time stamp.
    fn drain(rx: &mut broadcast::Receiver<Arc<str>>) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            match rx.try_recv() {
                Ok(line) => {
                    assert_eq!(line.as_bytes()[STAMP_LEN], b' ', "{line:?}");
                    lines.push(line[STAMP_LEN + 1..].to_owned());
                }
                Err(TryRecvError::Empty) => return lines,
                Err(e) => panic!("{e}"),
            }
        }
    }

    /// Lets the paused clock run past the end of the current window, and
    /// its timer fire.
    async fn past_the_window() {
        tokio::time::sleep(FLOOD_WINDOW + Duration::from_millis(1)).await;
    }

    const WRONG_TOKEN: &str = "refused command: wrong bearer token";

    fn wrong_token(port: u32) -> String {
        format!("refused command from 127.0.0.1:{port}: wrong bearer token")
    }

    fn refuse(monitor: &Monitor, port: u32) {
        monitor.emit_summarised(WRONG_TOKEN, wrong_token(port));
    }

    #[test]
    fn a_newline_in_an_event_cannot_start_a_line() {
        let monitor = Monitor::new();
        let mut rx = monitor.subscribe();
        monitor.emit("page 1: ws write 1 \"\u{1b}[2J\u{202e}x\n12:00:00.000 page 1: forged\"");
        let line = rx.try_recv().expect("one line");
        assert!(!line.contains('\n') && !line.contains('\u{1b}'), "{line:?}");
        assert!(
            line.ends_with(
                r#" page 1: ws write 1 "\u{1b}[2J\u{202e}x\n12:00:00.000 page 1: forged""#
            ),
            "{line:?}"
        );
        assert!(rx.try_recv().is_err(), "one event, one line");
    }

    #[test]
    fn lines_start_with_the_time() {
        let monitor = Monitor::new();
        let mut rx = monitor.subscribe();
        monitor.emit("x");
        let line = rx.try_recv().expect("a line");
        let stamp = line.as_bytes();
        assert_eq!(line.len(), STAMP_LEN + 2, "{line:?}");
        for (i, c) in stamp[..STAMP_LEN].iter().enumerate() {
            match i {
                2 | 5 => assert_eq!(*c, b':', "{line:?}"),
                8 => assert_eq!(*c, b'.', "{line:?}"),
                _ => assert!(c.is_ascii_digit(), "{line:?}"),
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_flood_is_summarised_when_its_window_ends() {
        let monitor = Monitor::new();
        let mut rx = monitor.subscribe();
        for port in 0..1000 {
            refuse(&monitor, 40000 + port);
        }
        assert_eq!(drain(&mut rx), [wrong_token(40000)]);
        // The flood stops; the timer says how many were held back.
        past_the_window().await;
        assert_eq!(
            drain(&mut rx),
            ["refused command: wrong bearer token … repeated 999 times"]
        );
        tokio::time::sleep(10 * FLOOD_WINDOW).await;
        assert_eq!(drain(&mut rx), Vec::<String>::new(), "nothing more");
        // After a quiet window the next one is shown in full again.
        refuse(&monitor, 50000);
        assert_eq!(drain(&mut rx), [wrong_token(50000)]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_flood_that_goes_on_makes_one_line_per_window() {
        let monitor = Monitor::new();
        let mut rx = monitor.subscribe();
        let mut lines = Vec::new();
        // 100 a second for 3.5 seconds.
        for sent in 0..350 {
            refuse(&monitor, 40000 + sent);
            tokio::time::sleep(Duration::from_millis(10)).await;
            lines.extend(drain(&mut rx));
        }
        past_the_window().await;
        lines.extend(drain(&mut rx));
        let summaries: Vec<u64> = lines
            .iter()
            .filter_map(|l| l.split("repeated ").nth(1))
            .filter_map(|n| n.split(' ').next()?.parse().ok())
            .collect();
        let shown = lines.len() - summaries.len();
        assert_eq!(shown, FLOOD_BURST as usize, "{lines:#?}");
        assert_eq!(
            shown as u64 + summaries.iter().sum::<u64>(),
            350,
            "{lines:#?}"
        );
        // One summary per window of the flood, and one for its end.
        assert!((3..=5).contains(&summaries.len()), "{lines:#?}");
    }

    #[tokio::test(start_paused = true)]
    async fn kinds_are_counted_apart_and_plain_events_always_pass() {
        let monitor = Monitor::new();
        let mut rx = monitor.subscribe();
        for i in 0..5 {
            monitor.emit(format_args!("ws {i} opened from 127.0.0.1:{i} page /"));
            monitor.emit_summarised(
                "ws closed: protocol error",
                format_args!("ws {i} closed: protocol error (code 1002)"),
            );
            monitor.emit_summarised(
                "page: ws write -> error",
                format_args!("page {i}: ws write * \"{i}\" -> error: needs operator rights"),
            );
        }
        let mut lines = drain(&mut rx);
        past_the_window().await;
        lines.extend(drain(&mut rx));
        let of = |prefix: &str| -> Vec<&String> {
            lines.iter().filter(|l| l.starts_with(prefix)).collect()
        };
        assert_eq!(of("ws 4 opened").len(), 1, "{lines:#?}");
        assert_eq!(
            lines.iter().filter(|l| l.contains(" opened from ")).count(),
            5,
            "{lines:#?}"
        );
        let closed: Vec<&String> = lines.iter().filter(|l| l.contains("closed")).collect();
        assert_eq!(
            closed,
            [
                "ws 0 closed: protocol error (code 1002)",
                "ws closed: protocol error … repeated 4 times"
            ],
            "{lines:#?}"
        );
        let refused = of("page");
        assert_eq!(
            refused,
            [
                "page 0: ws write * \"0\" -> error: needs operator rights",
                "page: ws write -> error … repeated 4 times"
            ],
            "{lines:#?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_says_what_is_held() {
        let monitor = Monitor::new();
        let mut rx = monitor.subscribe();
        for port in 0..10 {
            refuse(&monitor, port);
        }
        monitor.flush_floods();
        assert_eq!(
            drain(&mut rx),
            [
                wrong_token(0),
                "refused command: wrong bearer token … repeated 9 times".into()
            ]
        );
        past_the_window().await;
        assert_eq!(drain(&mut rx), Vec::<String>::new(), "said once");
    }

    #[test]
    fn one_held_event_is_one_time() {
        assert!(summary("x", 1).ends_with(" x … repeated 1 time"));
        assert!(summary("x", 2).ends_with(" x … repeated 2 times"));
    }

    #[test]
    fn without_a_timer_the_next_event_brings_the_summary() {
        let mut floods = Floods::default();
        let t0 = Instant::now();
        for _ in 0..FLOOD_BURST {
            assert_eq!(floods.note("k", t0), (Verdict::Show, None));
        }
        // No runtime, no timer: publish disarms at once.
        let (verdict, _) = floods.note("k", t0);
        assert_eq!(
            verdict,
            Verdict::Hold {
                timer: Some(t0 + FLOOD_WINDOW)
            }
        );
        floods.disarm("k");
        assert_eq!(floods.note("k", t0).1, None);
        floods.disarm("k");
        // After the window, the held two are reported with the next event,
        // which belongs to the flood still.
        let later = t0 + FLOOD_WINDOW;
        let (verdict, overdue) = floods.note("k", later);
        assert_eq!(overdue, Some(2));
        assert!(matches!(verdict, Verdict::Hold { .. }), "{verdict:?}");
        // A quiet window ends the flood.
        floods.disarm("k");
        assert_eq!(floods.window_ended("k", later), Some(1));
        let quiet = later + 2 * FLOOD_WINDOW;
        assert_eq!(floods.note("k", quiet), (Verdict::Show, None));
    }

    #[test]
    fn the_table_of_kinds_is_bounded() {
        let mut floods = Floods::default();
        let t0 = Instant::now();
        for i in 0..MAX_KINDS {
            floods.note(&format!("kind {i}"), t0);
        }
        // Full of live kinds: a new kind is shown, not tracked.
        assert_eq!(floods.note("one more", t0), (Verdict::Show, None));
        assert_eq!(floods.kinds.len(), MAX_KINDS);
        // Once their windows have passed, they make room.
        let later = t0 + FLOOD_WINDOW;
        assert_eq!(floods.note("one more", later), (Verdict::Show, None));
        assert_eq!(floods.kinds.len(), 1);
    }
}
