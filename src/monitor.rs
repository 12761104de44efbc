//! The Monitor: the daemon's own event log, fanned out to every watcher.
//!
//! Events are rendered to one line once, when emitted; the console, each
//! `pagewire monitor` client and (with `set notify`) the pages all receive
//! the same `Arc<str>`. Watchers read from a bounded broadcast ring, so a
//! slow watcher misses lines (and is told how many) instead of slowing the
//! daemon.

use std::fmt;
use std::sync::Arc;

use tokio::sync::broadcast;

/// How many rendered lines a watcher may fall behind before it misses some.
pub const MONITOR_BACKLOG: usize = 1024;

/// A cheap-to-clone handle on the event stream.
#[derive(Clone)]
pub struct Monitor {
    tx: broadcast::Sender<Arc<str>>,
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
        Monitor { tx }
    }

    /// Renders `event` to a line and hands it to every current watcher.
    pub fn emit(&self, event: impl fmt::Display) {
        let now = time::OffsetDateTime::now_utc();
        let stamp = now
            .format(time::macros::format_description!(
                "[hour]:[minute]:[second].[subsecond digits:3]"
            ))
            .unwrap_or_default();
        let line: Arc<str> = format!("{stamp} {event}").into();
        // No watcher is not an error: the event is simply not seen.
        let _ = self.tx.send(line);
    }

    /// A new watcher, seeing every line emitted from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<str>> {
        self.tx.subscribe()
    }
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
