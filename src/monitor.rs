//! The Monitor: the daemon's own event log, fanned out to every watcher.
//!
//! An event is rendered to one line once, when emitted. Its text is escaped
//! first ([`crate::text::escape`]): nothing a page, a client or an action
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
//! watcher and every page. So every event has a *kind*, and within a
//! window of [`FLOOD_WINDOW`] only the first [`FLOOD_BURST`] events of a
//! kind are shown; the rest are counted, and when the window ends (a timer:
//! the summary comes even if the flood simply stops) one line says
//! `KIND … repeated N times`. While a flood goes on, each further window
//! gives that one summary line and nothing else; a window without any event
//! of the kind ends the flood, and the next one is shown in full again.
//!
//! An event's kind is its line with what varies from one connection to the
//! next masked as `*`: IP addresses, ports, and connection indexes (the
//! number after `ws ` or `page `). So `refused command from
//! 127.0.0.1:50312: wrong bearer token` is of the kind `refused command
//! from *: wrong bearer token`, whatever the client's port. Other numbers
//! are kept: an action's `step 1`, `step 2` are different lines. Where the
//! line holds text a stranger chooses (a command a page sent), the emitter
//! names the kind itself with [`Monitor::emit_as`].
//!
//! Limits: at most [`MAX_KINDS`] kinds are tracked at once (an event of a
//! new kind beyond that is shown, not tracked), and a kind is the first
//! [`MAX_KIND_BYTES`] bytes of its masked line.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::sync::broadcast;
use tokio::time::Instant;

use crate::text;

/// How many rendered lines a watcher may fall behind before it misses some.
pub const MONITOR_BACKLOG: usize = 1024;

/// The window within which events of one kind count as a flood.
pub const FLOOD_WINDOW: Duration = Duration::from_secs(1);

/// How many events of one kind a window shows in full; the rest are
/// summarised. More than one, so that a few pages opening together, or
/// two `pagewire monitor` attaching, are all seen.
pub const FLOOD_BURST: u32 = 3;

/// Most kinds tracked at once.
pub const MAX_KINDS: usize = 1024;

/// Longest kind, in bytes of its masked line.
pub const MAX_KIND_BYTES: usize = 200;

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

thread_local! {
    /// Where an event's kind is written, reused: masking allocates nothing.
    static KIND: RefCell<String> = RefCell::new(String::with_capacity(MAX_KIND_BYTES + 8));
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

    /// Renders `event` to a line and hands it to every current watcher,
    /// unless it is part of a flood (see the module docs). Its kind is its
    /// own line, masked.
    pub fn emit(&self, event: impl fmt::Display) {
        let line = render(event);
        KIND.with(|kind| {
            let mut kind = kind.borrow_mut();
            kind.clear();
            kind_of(&line[STAMP_ROOM.len()..], &mut kind);
            self.publish(&kind, line);
        });
    }

    /// Like [`Monitor::emit`], with the kind named by the caller: for
    /// events whose text a stranger chooses. `kind` is also what the
    /// summary of a flood says, e.g. `page *: ws write -> error`.
    pub fn emit_as(&self, kind: impl fmt::Display, event: impl fmt::Display) {
        let line = render(event);
        KIND.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            scratch.clear();
            let _ = write!(scratch, "{kind}");
            text::escape_tail(&mut scratch, 0);
            truncate_kind(&mut scratch);
            self.publish(&scratch, line);
        });
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

/// Writes the kind of the (escaped) event `text` to `out`: the text with IP
/// addresses, ports and connection indexes masked as `*`, cut at
/// [`MAX_KIND_BYTES`]. Runs on every event, so it looks only at bytes that
/// may start an address or an index, and no further than the cut.
fn kind_of(text: &str, out: &mut String) {
    let b = text.as_bytes();
    let mut copied = 0;
    let mut i = 0;
    loop {
        // Past this, the kind is cut anyway.
        let limit = (copied + MAX_KIND_BYTES + 1)
            .saturating_sub(out.len())
            .min(b.len());
        let Some(next) = b
            .get(i..limit)
            .and_then(|rest| rest.iter().position(|&c| MAY_START[usize::from(c)]))
        else {
            break;
        };
        i += next;
        if i > 0 && IN_WORD[usize::from(b[i - 1])] {
            i += 1;
            continue;
        }
        let masked = match b[i] {
            b'[' => bracketed_address(b, i),
            b'0'..=b'9' => ipv4(b, i)
                .or_else(|| bare_ipv6(b, i))
                .or_else(|| connection_index(b, i)),
            _ => bare_ipv6(b, i),
        };
        match masked {
            Some(end) => {
                out.push_str(&text[copied..i]);
                out.push('*');
                i = end;
                copied = end;
            }
            None => i += 1,
        }
    }
    // The rest, up to just past the cut (so that the cut shows).
    let room = (MAX_KIND_BYTES + 1).saturating_sub(out.len());
    let mut end = copied.saturating_add(room).min(b.len());
    while !text.is_char_boundary(end) {
        end += 1;
    }
    out.push_str(&text[copied..end]);
    truncate_kind(out);
}

/// Bytes that may start an address or an index: digits, hex letters, `[`
/// and `:`.
const MAY_START: [bool; 256] = {
    let mut class = [false; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        class[c] = b.is_ascii_hexdigit() || b == b'[' || b == b':';
        c += 1;
    }
    class
};

/// Bytes after which no address or index starts (inside a word or number).
const IN_WORD: [bool; 256] = {
    let mut class = [false; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        class[c] = b.is_ascii_alphanumeric() || b == b'.';
        c += 1;
    }
    class
};

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

/// The end of a run of ASCII digits starting at `i`.
fn digits_end(b: &[u8], i: usize) -> usize {
    i + b[i..].iter().take_while(|c| c.is_ascii_digit()).count()
}

/// A port after an address ending at `i` (`:5000`): where it ends.
fn port_end(b: &[u8], i: usize) -> usize {
    if b.get(i) == Some(&b':') && b.get(i + 1).is_some_and(u8::is_ascii_digit) {
        digits_end(b, i + 1)
    } else {
        i
    }
}

/// `127.0.0.1` or `127.0.0.1:5000` at `i`: where it ends.
fn ipv4(b: &[u8], i: usize) -> Option<usize> {
    let mut at = i;
    for part in 0..4 {
        if part > 0 {
            if b.get(at) != Some(&b'.') {
                return None;
            }
            at += 1;
        }
        let end = digits_end(b, at);
        if end == at || end - at > 3 {
            return None;
        }
        at = end;
    }
    Some(port_end(b, at))
}

/// `[::1]` or `[2001:db8::1]:5000` at `i`: where it ends.
fn bracketed_address(b: &[u8], i: usize) -> Option<usize> {
    let inner = &b[i + 1..];
    let close = inner.iter().take(48).position(|&c| c == b']')?;
    let address = &inner[..close];
    let plausible = address.iter().filter(|&&c| c == b':').count() >= 2
        && address
            .iter()
            .all(|c| c.is_ascii_hexdigit() || matches!(c, b':' | b'.'));
    plausible.then(|| port_end(b, i + 1 + close + 1))
}

/// A bare IPv6 address (`::1`, `fe80::1`) at `i`: where it ends. Two
/// colons at least and a digit, so that words and times of day are left.
fn bare_ipv6(b: &[u8], i: usize) -> Option<usize> {
    let run = b[i..]
        .iter()
        .take_while(|c| c.is_ascii_hexdigit() || matches!(c, b':' | b'.'))
        .count();
    // Not a trailing colon or full stop: they end the sentence.
    let run = b[i..i + run]
        .iter()
        .rposition(u8::is_ascii_hexdigit)
        .map_or(0, |last| last + 1);
    let address = &b[i..i + run];
    let colons = address.iter().filter(|&&c| c == b':').count();
    let ends_word = !b.get(i + run).is_some_and(u8::is_ascii_alphanumeric);
    (colons >= 2 && ends_word && address.iter().any(u8::is_ascii_digit)).then_some(i + run)
}

/// A connection index at `i`: digits right after the word `ws` or `page`.
fn connection_index(b: &[u8], i: usize) -> Option<usize> {
    let after = |word: &[u8]| {
        i >= word.len()
            && &b[i - word.len()..i] == word
            && (i == word.len() || !b[i - word.len() - 1].is_ascii_alphanumeric())
    };
    if !(after(b"ws ") || after(b"page ")) {
        return None;
    }
    let end = digits_end(b, i);
    (!b.get(end).is_some_and(u8::is_ascii_alphanumeric)).then_some(end)
}

/// While `set notify NAME` is on, sends every Monitor line to element NAME
/// of every page (`ws write * ` with a name, encoded once per line).
pub async fn notify_pages(
    monitor: Monitor,
    hub: crate::hub::Hub,
    target: tokio::sync::watch::Receiver<Option<String>>,
    stop: tokio_util::sync::CancellationToken,
) {
    use crate::command::Target;
    use crate::protocol::ServerFrame;
    let mut lines = monitor.subscribe();
    loop {
        let line = tokio::select! {
            _ = stop.cancelled() => return,
            line = lines.recv() => line,
        };
        let line = match line {
            Ok(line) => line,
            // Pages are told of missed lines no better than by a gap: the
            // console and `pagewire monitor` report the count.
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let name = target.borrow().clone();
        if let Some(name) = name {
            let frame = ServerFrame::Write {
                name: Some(&name),
                text: &line,
            };
            let _ = hub.deliver(&Target::All, &frame.encode());
        }
    }
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

    fn wrong_token(port: u32) -> String {
        format!("refused command from 127.0.0.1:{port}: wrong bearer token")
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
            monitor.emit(wrong_token(40000 + port));
        }
        let burst = drain(&mut rx);
        let want: Vec<String> = (40000..40003).map(wrong_token).collect();
        assert_eq!(burst, want);
        // The flood stops; the timer says how many were held back.
        past_the_window().await;
        assert_eq!(
            drain(&mut rx),
            ["refused command from *: wrong bearer token … repeated 997 times"]
        );
        tokio::time::sleep(10 * FLOOD_WINDOW).await;
        assert_eq!(drain(&mut rx), Vec::<String>::new(), "nothing more");
        // After a quiet window the next one is shown in full again.
        monitor.emit(wrong_token(50000));
        assert_eq!(drain(&mut rx), [wrong_token(50000)]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_flood_that_goes_on_makes_one_line_per_window() {
        let monitor = Monitor::new();
        let mut rx = monitor.subscribe();
        let mut lines = Vec::new();
        // 100 a second for 3.5 seconds.
        for sent in 0..350 {
            monitor.emit(wrong_token(40000 + sent));
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
    async fn kinds_are_counted_apart_and_events_of_other_kinds_pass() {
        let monitor = Monitor::new();
        let mut rx = monitor.subscribe();
        for i in 0..5 {
            monitor.emit(format_args!("ws {i} closed: protocol error (code 1002)"));
            monitor.emit(format_args!("action build[1] stdout: step {i}"));
            monitor.emit_as(
                "page *: ws write -> error",
                format_args!("page {i}: ws write * \"{i}\" -> error: needs operator rights"),
            );
        }
        let mut lines = drain(&mut rx);
        past_the_window().await;
        lines.extend(drain(&mut rx));
        let of = |prefix: &str| -> Vec<&String> {
            lines.iter().filter(|l| l.starts_with(prefix)).collect()
        };
        // Lines that differ in more than an index are all shown.
        assert_eq!(of("action build[1] stdout: step ").len(), 5, "{lines:#?}");
        let closed = of("ws ");
        assert_eq!(closed.len(), 4, "{lines:#?}");
        assert_eq!(
            closed[3],
            "ws * closed: protocol error (code 1002) … repeated 2 times"
        );
        let refused = of("page ");
        assert_eq!(refused.len(), 4, "{lines:#?}");
        assert_eq!(
            refused[0],
            "page 0: ws write * \"0\" -> error: needs operator rights"
        );
        assert_eq!(refused[3], "page *: ws write -> error … repeated 2 times");
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

    #[test]
    fn kinds_mask_addresses_ports_and_indexes() {
        let cases = [
            (
                "refused command from 127.0.0.1:50312: wrong bearer token",
                "refused command from *: wrong bearer token",
            ),
            (
                "refused WebSocket from [::1]:5000: too many connections from ::1 (3 at most)",
                "refused WebSocket from *: too many connections from * (3 at most)",
            ),
            (
                "refused [2001:db8::1]:443: address not admitted (GET /)",
                "refused *: address not admitted (GET /)",
            ),
            (
                "refused connection from 10.1.2.3:9: too many from fe80::1:2",
                "refused connection from *: too many from *",
            ),
            (
                "ws 7 opened from 127.0.0.1:5000 page http://127.0.0.1:8080/x.html",
                "ws * opened from * page http://*/x.html",
            ),
            ("ws 12 registered 'status'", "ws * registered 'status'"),
            (
                "page 7: run build -> ok: started build[3]",
                "page *: run build -> ok: started build[3]",
            ),
            // Other numbers are part of what happened.
            (
                "action build[3] stdout: step 1 of 20",
                "action build[3] stdout: step 1 of 20",
            ),
            ("event 100", "event 100"),
            ("news 5, ws 5x, pages 5", "news 5, ws 5x, pages 5"),
            ("version 1.2.3 at 12:30", "version 1.2.3 at 12:30"),
            ("closed (code 1002)", "closed (code 1002)"),
            ("[brackets] and [a:b]", "[brackets] and [a:b]"),
        ];
        for (line, want) in cases {
            let mut kind = String::new();
            kind_of(line, &mut kind);
            assert_eq!(kind, want, "{line:?}");
        }
        let mut kind = String::new();
        kind_of(&"x".repeat(64 * 1024), &mut kind);
        assert_eq!(kind, format!("{}…", "x".repeat(MAX_KIND_BYTES)));
        let mut kind = String::new();
        kind_of(&format!("ws 1 {}", "é".repeat(400)), &mut kind);
        assert!(kind.starts_with("ws * éé") && kind.ends_with('…'), "{kind}");
        assert!(kind.len() <= MAX_KIND_BYTES + '…'.len_utf8());
    }

    /// What one event costs, escaping and the flood check included,
    /// against the Monitor as it was before both (render, stamp, send).
    /// Run with `cargo test --release --lib monitor::tests::emit_cost --
    /// --ignored --nocapture`; docs/SECURITY.md has the figures.
    #[test]
    #[ignore = "a measurement, not a check"]
    fn emit_cost() {
        use std::time::Instant as Clock;
        const N: usize = 100_000;
        let (tx, _) = broadcast::channel::<Arc<str>>(MONITOR_BACKLOG);
        let mut old_rx = tx.subscribe();
        let old_emit = |e: &str| {
            let now = time::OffsetDateTime::now_utc();
            let stamp = now
                .format(time::macros::format_description!(
                    "[hour]:[minute]:[second].[subsecond digits:3]"
                ))
                .unwrap_or_default();
            let line: Arc<str> = format!("{stamp} {e}").into();
            let _ = tx.send(line);
        };
        // A page opening: the event the Monitor sees most. Each names
        // another page, so each is of a kind of its own and shown in full.
        let opened: Vec<String> = (0..N)
            .map(|i| {
                format!(
                    "ws {i} opened from 127.0.0.1:{} page /p{i}.html",
                    1024 + i % 60000
                )
            })
            .collect();
        let wrong: Vec<String> = (0..N)
            .map(|i| wrong_token(1024 + i as u32 % 60000))
            .collect();
        let ns = |d: Duration| d.as_nanos() as f64 / N as f64;
        let mut best = [f64::MAX; 4];
        for _ in 0..5 {
            let start = Clock::now();
            for e in &opened {
                old_emit(e);
                while old_rx.try_recv().is_ok() {}
            }
            best[0] = best[0].min(ns(start.elapsed()));
            // A new Monitor per round: no kind is left from the last.
            let monitor = Monitor::new();
            let mut rx = monitor.subscribe();
            let start = Clock::now();
            for e in &opened {
                monitor.emit(e);
                while rx.try_recv().is_ok() {}
            }
            best[1] = best[1].min(ns(start.elapsed()));
            let start = Clock::now();
            for e in &wrong {
                monitor.emit(e);
                while rx.try_recv().is_ok() {}
            }
            best[2] = best[2].min(ns(start.elapsed()));
            let start = Clock::now();
            let mut escaped = 0;
            for e in &opened {
                escaped += text::escape(e).len();
            }
            assert!(escaped > 0);
            best[3] = best[3].min(ns(start.elapsed()));
        }
        println!(
            "ns per event, best of 5 rounds of {N}: before {:.0}; now, shown {:.0}; \
             now, held in a flood {:.0}; escaping alone {:.1}",
            best[0], best[1], best[2], best[3]
        );
    }
}
