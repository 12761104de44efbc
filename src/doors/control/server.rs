//! The daemon side of the control socket: accept, read requests, run them.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{broadcast, OwnedSemaphorePermit, Semaphore, TryAcquireError};
use tokio_util::codec::AnyDelimiterCodecError;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{lines, ControlAnswer, ControlRequest, MAX_CONNECTIONS, MAX_REQUEST_LINE};
use crate::base::backoff::sleep_or_stop;
use crate::base::door::Door;
use crate::engine::monitor::Monitor;
use crate::engine::Engine;

/// How long to wait before accepting again after `accept` failed (e.g. out
/// of file descriptors), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// How often the daemon looks whether its socket file is still there.
const SOCKET_CHECK: Duration = Duration::from_secs(2);

/// Serves the control socket until `shutdown` is cancelled.
///
/// Commands run with [`Door::Control`], one at a time per connection. After
/// `shutdown`, no connection is accepted, idle connections and Monitor tails
/// are closed, a command already running completes and is answered, and
/// this returns once every connection has ended. Only peers running as the
/// daemon's own user (or root) are served.
///
/// The socket file is looked at now, when this is called (right after the
/// bind), not when the returned future first runs: a file removed in
/// between is still noticed.
pub(crate) fn serve(
    listener: UnixListener,
    engine: Arc<Engine>,
    shutdown: CancellationToken,
) -> impl std::future::Future<Output = ()> {
    let path = listener
        .local_addr()
        .ok()
        .and_then(|a| a.as_pathname().map(std::path::Path::to_path_buf));
    let identity = path.as_deref().and_then(super::socket::file_identity);
    let watched = path.zip(identity);
    serve_watching(listener, engine, shutdown, watched)
}

async fn serve_watching(
    listener: UnixListener,
    engine: Arc<Engine>,
    shutdown: CancellationToken,
    watched: Option<(std::path::PathBuf, super::socket::FileIdentity)>,
) {
    let monitor = engine.monitor.clone();
    let tracker = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let owner = super::trust::current_uid();
    // The service's group, when the daemon runs as the package's service
    // user in its runtime directory.
    let group = listener
        .local_addr()
        .ok()
        .and_then(|a| a.as_pathname().and_then(super::serves_group));
    // Someone may delete the socket file (a tmp cleaner, a careless rm):
    // the daemon still listens, but no CLI can reach it. Say so once.
    let mut check = tokio::time::interval(SOCKET_CHECK);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut gone = false;
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
            _ = check.tick(), if watched.is_some() && !gone => {
                if let Some((path, identity)) = &watched {
                    gone = socket_file_gone(path, *identity, &monitor);
                }
                continue;
            }
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                monitor.emit(format_args!("control: accept failed: {e}"));
                if !sleep_or_stop(ACCEPT_BACKOFF, &shutdown).await {
                    break;
                }
                continue;
            }
        };
        let slot = Arc::clone(&slots).try_acquire_owned();
        let conn = Session {
            engine: engine.clone(),
            monitor: monitor.clone(),
            shutdown: shutdown.clone(),
        };
        tracker.spawn(conn.serve_or_refuse(stream, slot, owner, group));
    }
    tracker.close();
    tracker.wait().await;
}

/// Whether the socket file at `path` is no longer the one bound (its
/// `identity`); says so on the Monitor when it is not.
fn socket_file_gone(
    path: &std::path::Path,
    identity: super::socket::FileIdentity,
    monitor: &Monitor,
) -> bool {
    if super::socket::file_identity(path) == Some(identity) {
        return false;
    }
    monitor.emit(format_args!(
        "control: the socket file {} was removed or replaced; the CLI cannot \
         reach this daemon through it any more (restart the daemon to make a new one)",
        crate::base::text::shown(&path.display().to_string(), 200)
    ));
    true
}

/// Whether the peer runs as `owner` (or as root, who could read the socket
/// anyway), or is a member of the service's `group` when there is one.
/// This backs up the file mode, which a permissive umask could leave open
/// for the instant between bind and chmod.
fn peer_allowed(stream: &UnixStream, owner: u32, group: Option<u32>) -> Result<(), u32> {
    match stream.peer_cred() {
        Ok(cred) if cred.uid() == owner || cred.uid() == 0 => Ok(()),
        Ok(cred)
            if group.is_some_and(|gid| {
                cred.gid() == gid || super::trust::service_group_member(cred.uid(), gid)
            }) =>
        {
            Ok(())
        }
        Ok(cred) => Err(cred.uid()),
        // The file mode still applies; do not lock the owner out because
        // the platform cannot tell.
        Err(_) => Ok(()),
    }
}

async fn refuse(mut stream: UnixStream, message: String) -> io::Result<()> {
    stream
        .write_all(&ControlAnswer::error(message).to_json_line())
        .await?;
    stream.shutdown().await
}

/// One control connection: what it needs from the daemon.
struct Session {
    engine: Arc<Engine>,
    monitor: Monitor,
    shutdown: CancellationToken,
}

impl Session {
    /// Serves an accepted connection, or refuses it when `slot` could not
    /// be had (too many connections) or the peer is another user.
    async fn serve_or_refuse(
        self,
        stream: UnixStream,
        slot: Result<OwnedSemaphorePermit, TryAcquireError>,
        owner: u32,
        group: Option<u32>,
    ) {
        let refusal = match (&slot, peer_allowed(&stream, owner, group)) {
            (Err(_), _) => Some(format!(
                "control: too many connections (limit {MAX_CONNECTIONS})"
            )),
            (_, Err(uid)) => {
                self.monitor.emit_summarised(
                    "control: refused a connection from another user",
                    format_args!("control: refused a connection from uid {uid}"),
                );
                Some("control: permission denied".to_owned())
            }
            (Ok(_), Ok(())) => None,
        };
        let result = match refusal {
            Some(message) => refuse(stream, message).await,
            None => self.run(stream).await,
        };
        if let Err(e) = result {
            // The peer went away mid-answer: nothing to tell anyone.
            tracing::debug!("control connection ended: {e}");
        }
        drop(slot);
    }

    async fn run(self, stream: UnixStream) -> io::Result<()> {
        let (reader, mut writer) = stream.into_split();
        let mut requests = lines(reader, MAX_REQUEST_LINE);
        loop {
            let read = tokio::select! {
                _ = self.shutdown.cancelled() => return Ok(()),
                read = requests.next() => read,
            };
            let buf = match read {
                None => return Ok(()),
                Some(Err(AnyDelimiterCodecError::Io(e))) => return Err(e),
                Some(Err(AnyDelimiterCodecError::MaxChunkLengthExceeded)) => {
                    self.monitor.emit_summarised(
                        "control: request too long",
                        format_args!(
                            "control: request longer than {MAX_REQUEST_LINE} bytes, connection closed"
                        ),
                    );
                    let answer = ControlAnswer::error(format!(
                        "control: request longer than {MAX_REQUEST_LINE} bytes"
                    ));
                    writer.write_all(&answer.to_json_line()).await?;
                    return writer.shutdown().await;
                }
                Some(Ok(line)) => line,
            };
            // A blank line is no request; tolerate it (handy with socat).
            if buf.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let answer = match ControlRequest::from_json(&buf) {
                Ok(ControlRequest::Command(line)) => {
                    let mut reply = self.engine.exec.run_line(&line, Door::Control).await;
                    self.engine.out.print_console_text(&mut reply);
                    ControlAnswer::from(reply)
                }
                Ok(ControlRequest::Monitor) => {
                    // Subscribe first, so the watcher sees its own arrival.
                    let lines = self.monitor.subscribe();
                    self.monitor.emit("control: monitor watcher attached");
                    return self.tail(requests.into_inner(), writer, lines).await;
                }
                Ok(ControlRequest::ClusterMonitor) => {
                    let Some(tail) = self.engine.backplane.tail() else {
                        let answer = ControlAnswer::error(
                            "monitor --cluster: this daemon is not part of a cluster \
                             (serve --redis URL); use 'pagewire monitor'",
                        );
                        writer.write_all(&answer.to_json_line()).await?;
                        return writer.shutdown().await;
                    };
                    let (lines, hello) = tail.await;
                    self.monitor
                        .emit("control: cluster monitor watcher attached");
                    let first = ControlAnswer::Line { line: hello };
                    writer.write_all(&first.to_json_line()).await?;
                    return self.tail(requests.into_inner(), writer, lines).await;
                }
                Err(e) => ControlAnswer::error(format!("control: malformed request: {e}")),
            };
            writer.write_all(&answer.to_json_line()).await?;
        }
    }

    /// Streams `lines` (the Monitor's, or the cluster's) until the peer
    /// leaves or the daemon stops.
    async fn tail(
        self,
        mut reader: OwnedReadHalf,
        mut writer: OwnedWriteHalf,
        mut lines: broadcast::Receiver<Arc<str>>,
    ) -> io::Result<()> {
        let mut scratch = [0u8; 256];
        let result = loop {
            let answer = tokio::select! {
                _ = self.shutdown.cancelled() => break Ok(()),
                // Anything the peer sends now is ignored; its EOF ends the tail.
                read = reader.read(&mut scratch) => match read {
                    Ok(0) | Err(_) => break Ok(()),
                    Ok(_) => continue,
                },
                line = lines.recv() => match line {
                    Ok(line) => ControlAnswer::Line { line: line.to_string() },
                    Err(broadcast::error::RecvError::Lagged(missed)) => ControlAnswer::Missed { missed },
                    Err(broadcast::error::RecvError::Closed) => break Ok(()),
                },
            };
            if let Err(e) = writer.write_all(&answer.to_json_line()).await {
                break Err(e);
            }
        };
        drop(lines);
        self.monitor.emit("control: monitor watcher detached");
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doors::control::{bind, Client, ClientError};
    use tokio::io::{AsyncBufReadExt, BufReader};

    struct Fixture {
        _dir: tempfile::TempDir,
        path: std::path::PathBuf,
        monitor: Monitor,
        shutdown: CancellationToken,
        task: tokio::task::JoinHandle<()>,
    }

    async fn start() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ctl.sock");
        let listener = bind(&path).expect("bind").listener.expect("a listener");
        let monitor = Monitor::new();
        let shutdown = CancellationToken::new();
        let engine = Engine::local(
            crate::engine::hub::Hub::new(Default::default(), monitor.clone()),
            Default::default(),
            crate::engine::actions::Actions::default(),
            crate::base::stdout::ConsoleOut::capture().0,
        );
        let task = tokio::spawn(serve(listener, engine, shutdown.clone()));
        Fixture {
            _dir: dir,
            path,
            monitor,
            shutdown,
            task,
        }
    }

    async fn raw(path: &std::path::Path) -> (BufReader<OwnedReadHalf>, OwnedWriteHalf) {
        let stream = UnixStream::connect(path).await.expect("connect");
        let (r, w) = stream.into_split();
        (BufReader::new(r), w)
    }

    async fn answer(reader: &mut BufReader<OwnedReadHalf>) -> ControlAnswer {
        let mut line = String::new();
        reader.read_line(&mut line).await.expect("read answer");
        ControlAnswer::from_json(line.trim_end().as_bytes()).expect("an answer line")
    }

    #[tokio::test]
    async fn many_requests_on_one_connection() {
        let f = start().await;
        let mut client = Client::connect(&f.path).await.expect("connect");
        for line in ["ws", "help", "ws write status \"VPN up\""] {
            let reply = client.run(line).await.expect("a reply");
            // The reply itself belongs to the executor; the socket only
            // has to carry one reply per request.
            let _ = reply.status;
        }
        f.shutdown.cancel();
        f.task.await.expect("serve ends");
    }

    #[tokio::test]
    async fn malformed_requests_are_answered_and_the_connection_stays() {
        let f = start().await;
        let (mut r, mut w) = raw(&f.path).await;
        w.write_all(b"not json\n\n{\"cmd\":\"ws\"}\n")
            .await
            .expect("write");
        match answer(&mut r).await {
            ControlAnswer::Done {
                ok: false, output, ..
            } => {
                assert!(
                    output.starts_with("control: malformed request: "),
                    "{output}"
                );
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(answer(&mut r).await, ControlAnswer::Done { .. }));
        f.shutdown.cancel();
        f.task.await.expect("serve ends");
    }

    #[tokio::test]
    async fn an_overlong_request_is_refused_and_closed() {
        let f = start().await;
        let (mut r, mut w) = raw(&f.path).await;
        let long = vec![b'x'; MAX_REQUEST_LINE + 10];
        // The daemon may close before all of it is written; that is fine.
        let _ = w.write_all(&long).await;
        assert_eq!(
            answer(&mut r).await,
            ControlAnswer::error(format!(
                "control: request longer than {MAX_REQUEST_LINE} bytes"
            ))
        );
        let mut rest = String::new();
        let n = r.read_line(&mut rest).await.unwrap_or(0);
        assert_eq!(n, 0, "connection closed after the refusal");
        f.shutdown.cancel();
        f.task.await.expect("serve ends");
    }

    #[tokio::test]
    async fn a_lagging_watcher_is_told_what_it_missed() {
        let f = start().await;
        let (mut r, mut w) = raw(&f.path).await;
        w.write_all(b"{\"monitor\":true}\n").await.expect("write");
        match answer(&mut r).await {
            ControlAnswer::Line { line } => assert!(line.ends_with("monitor watcher attached")),
            other => panic!("unexpected {other:?}"),
        }
        // On this single-threaded runtime the server cannot run while we
        // emit, so it falls behind by a known amount.
        let total = crate::engine::monitor::MONITOR_BACKLOG + 100;
        for i in 0..total {
            f.monitor.emit(format_args!("event {i}"));
        }
        assert_eq!(answer(&mut r).await, ControlAnswer::Missed { missed: 100 });
        match answer(&mut r).await {
            ControlAnswer::Line { line } => assert!(line.ends_with(" event 100"), "{line}"),
            other => panic!("unexpected {other:?}"),
        }
        f.shutdown.cancel();
        f.task.await.expect("serve ends");
    }

    #[tokio::test]
    async fn watch_ends_when_the_daemon_stops() {
        let f = start().await;
        let path = f.path.clone();
        let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
        let watcher = tokio::spawn(async move {
            crate::doors::control::watch(&path, false, |line| {
                let _ = seen_tx.send(line.to_owned());
                std::ops::ControlFlow::Continue(())
            })
            .await
        });
        let first = seen.recv().await.unwrap_or_default();
        assert!(first.ends_with("monitor watcher attached"), "{first}");
        f.monitor.emit("hello");
        let next = seen.recv().await.unwrap_or_default();
        assert!(next.ends_with(" hello"), "{next}");
        f.shutdown.cancel();
        let result = watcher.await.expect("watcher task");
        assert!(result.is_ok(), "{result:?}");
        f.task.await.expect("serve ends");
    }

    #[tokio::test]
    async fn no_daemon_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nobody.sock");
        match crate::doors::control::run_command(&path, "ws").await {
            Err(e @ ClientError::NoDaemon { .. }) => assert_eq!(
                e.to_string(),
                format!(
                    "no pagewire daemon answering on {} (is `pagewire serve` running? use --control PATH)",
                    path.display()
                )
            ),
            other => panic!("expected NoDaemon, got {other:?}"),
        }
    }
}
