//! `set notify NAME`: the Monitor's lines written to element NAME of every
//! page. Kept apart from the Monitor: the hub reports to the Monitor, and
//! this reads the Monitor and delivers through the hub.

use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use crate::base::command::Target;
use crate::base::protocol::ServerFrame;
use crate::engine::hub::Hub;
use crate::engine::monitor::Monitor;

/// While `set notify NAME` is on, sends every Monitor line to element NAME
/// of every page (`ws write * ` with a name, encoded once per line).
pub(crate) async fn notify_pages(
    monitor: Monitor,
    hub: Hub,
    target: watch::Receiver<Option<String>>,
    stop: CancellationToken,
) {
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
                ack: None,
            };
            let _ = hub.deliver(&Target::All, &frame.encode());
        }
    }
}
