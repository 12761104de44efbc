//! Telling systemd how the daemon is doing (`Type=notify`): `READY=1`
//! once it serves, `STOPPING=1` when it stops, and `WATCHDOG=1` every half
//! of `WatchdogSec=` while its runtime schedules tasks. One datagram to
//! `$NOTIFY_SOCKET` each (sd_notify(3)); without that variable (not
//! started by systemd) nothing is sent.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Where systemd listens, if it asked to be told.
#[derive(Clone, Debug)]
pub(crate) struct Notifier {
    socket: Option<NotifySocket>,
}

#[derive(Clone, Debug)]
enum NotifySocket {
    Path(PathBuf),
    /// Linux's abstract namespace (`@name`).
    Abstract(Vec<u8>),
}

impl Notifier {
    /// From `$NOTIFY_SOCKET` (actions never inherit it: their environment
    /// is built from a short list).
    pub(crate) fn from_env() -> Notifier {
        let socket = std::env::var_os("NOTIFY_SOCKET").and_then(|value| {
            let bytes = value.as_encoded_bytes();
            match bytes.first() {
                Some(b'@') => Some(NotifySocket::Abstract(bytes[1..].to_vec())),
                Some(b'/') => Some(NotifySocket::Path(PathBuf::from(&value))),
                _ => None,
            }
        });
        Notifier { socket }
    }

    /// Sends `state` (e.g. `READY=1`); failures are not the daemon's
    /// business: systemd will time out and say so.
    pub(crate) fn notify(&self, state: &str) {
        let Some(socket) = &self.socket else {
            return;
        };
        let Ok(datagram) = UnixDatagram::unbound() else {
            return;
        };
        let _ = match socket {
            NotifySocket::Path(path) => datagram.send_to(state.as_bytes(), path),
            NotifySocket::Abstract(name) => {
                abstract_addr(name).and_then(|addr| datagram.send_to_addr(state.as_bytes(), &addr))
            }
        };
    }

    /// Pings the watchdog every half of `$WATCHDOG_USEC` until `stop`, when
    /// systemd asked for it (and asked this process: `$WATCHDOG_PID`).
    pub(crate) fn watchdog(&self, stop: CancellationToken) {
        let Some(interval) = watchdog_interval() else {
            return;
        };
        if self.socket.is_none() {
            return;
        }
        let notifier = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval / 2);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => notifier.notify("WATCHDOG=1"),
                }
            }
        });
    }
}

fn abstract_addr(name: &[u8]) -> std::io::Result<std::os::unix::net::SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    std::os::unix::net::SocketAddr::from_abstract_name(name)
}

fn watchdog_interval() -> Option<Duration> {
    if let Some(pid) = std::env::var_os("WATCHDOG_PID") {
        if pid.to_str()?.parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}
