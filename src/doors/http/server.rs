//! The accept loop that serves the router: TCP, optional TLS (rustls),
//! hyper's HTTP/1.1 connections with upgrades, a handshake timeout, limits
//! on open connections in all and per client address, and graceful
//! shutdown.
//!
//! A plain connection reaches hyper as `TokioIo<TcpStream>`, so that the
//! WebSocket upgrade can take the raw socket back by downcasting (see
//! `upgrade.rs`) and drive it without any wrapper. A TLS connection is a
//! `TokioIo<TlsStream<TcpStream>>` and goes through hyper's generic
//! upgraded type.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{bail, Context as _};
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;

use super::access;
use super::body::DeadlineBody;
use crate::base::backoff::{sleep_or_stop, Backoff};
use crate::base::hold::{HoldWrites, HoldableTcp};
use crate::engine::monitor::Monitor;

/// Largest request head (request line and headers); a larger one gets 431
/// and the connection is closed. Bodies are limited per route instead.
const MAX_REQUEST_HEAD: usize = 64 * 1024;

/// First pause after an accept error that is not about one connection
/// (EMFILE, ENFILE, ENOBUFS, ENOMEM); doubled on each further error.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
/// Longest pause between accept attempts while errors go on.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Refused connections answered (503) at the same time; beyond this they
/// are closed without an answer, so a flood cannot pin sockets and tasks.
const MAX_REFUSING: usize = 64;
/// How long a refused connection is kept to deliver its 503 and read what
/// the client had already sent (closing with unread data would reset the
/// connection and lose the answer).
const REFUSAL_LINGER: Duration = Duration::from_secs(1);

/// How the accept loop serves connections.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ServerOptions {
    /// How long a new client has to complete its TLS handshake and send a
    /// complete request head; also how long an idle keep-alive connection
    /// stays open between requests.
    pub(crate) handshake_timeout: Duration,
    /// Most open TCP connections (HTTP and WebSocket alike) in all.
    pub(crate) max_connections: usize,
    /// Most open TCP connections from one client address.
    pub(crate) max_connections_per_ip: usize,
    /// How long a request body may take to arrive, from the end of its
    /// head.
    pub(crate) body_timeout: Duration,
    /// How long shutdown lets in-flight HTTP requests finish.
    pub(crate) drain_timeout: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            handshake_timeout: Duration::from_secs(10),
            max_connections: 20_000,
            // One address may not take most of the connections.
            max_connections_per_ip: 20_000 / 8,
            body_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(5),
        }
    }
}

/// What the accept loop counts, for `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct ServerStats {
    /// TCP connections open now (HTTP and WebSocket alike).
    pub(crate) open: AtomicUsize,
    /// Connections refused at accept by a connection limit.
    pub(crate) refused: AtomicU64,
    /// TLS handshakes that failed or timed out.
    pub(crate) tls_failures: AtomicU64,
    /// Requests refused by the access mode or for a host not served.
    pub(crate) refused_requests: AtomicU64,
}

/// Loads a PEM certificate chain and private key into a TLS acceptor
/// (rustls with the ring provider; TLS 1.2 and 1.3; ALPN `http/1.1`).
pub(crate) fn tls_acceptor(cert: &Path, key: &Path) -> anyhow::Result<TlsAcceptor> {
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("cannot read TLS certificate {}", cert.display()))?;
    if certs.is_empty() {
        bail!("no certificate found in {}", cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("cannot read TLS private key {}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS setup")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the TLS certificate and key do not make a usable pair")?;
    // Only HTTP/1.1 is served; saying so lets clients skip an h2 attempt.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Serves `app` on `listener` until `stop` is cancelled, then stops
/// accepting, lets in-flight requests finish (at most
/// `options.drain_timeout`) and returns. Upgraded WebSocket connections are
/// not waited for here: their tasks belong to the HTTP front.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<TlsAcceptor>,
    options: ServerOptions,
    stats: Arc<ServerStats>,
    monitor: Monitor,
    stop: CancellationToken,
) {
    let server = Arc::new(Server {
        app,
        tls,
        options,
        http: http1_builder(&options),
        limiter: Arc::new(Limiter {
            max_total: options.max_connections,
            max_per_ip: options.max_connections_per_ip,
            open: Mutex::new(Open::default()),
            stats: stats.clone(),
        }),
        refusing: Arc::new(AtomicUsize::new(0)),
        stats,
        monitor,
        stop,
    });
    let connections = TaskTracker::new();
    let mut backoff = Backoff::new(ACCEPT_BACKOFF_MIN, ACCEPT_BACKOFF_MAX);
    loop {
        let accepted = tokio::select! {
            _ = server.stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(pair) => {
                backoff.reset();
                pair
            }
            // The client gave up before we got to it: nothing to do.
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                // Most likely out of file descriptors. Accepting again at
                // once would spin; waiting lets connections close first.
                let wait = backoff.next();
                server.monitor.emit_summarised(
                    "accept failed",
                    format_args!("accept failed: {e}; retrying in {wait:?}"),
                );
                if !sleep_or_stop(wait, &server.stop).await {
                    break;
                }
                continue;
            }
        };
        server.admit(tcp, peer, &connections);
    }
    // Stop accepting at once: new clients are refused by the kernel instead
    // of waiting in the backlog of a daemon that will not answer them.
    drop(listener);
    connections.close();
    if tokio::time::timeout(server.options.drain_timeout, connections.wait())
        .await
        .is_err()
    {
        server
            .monitor
            .emit("some HTTP requests did not finish before shutdown");
    }
}

/// Errors of `accept` that concern one connection only.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

fn http1_builder(options: &ServerOptions) -> http1::Builder {
    let mut b = http1::Builder::new();
    b.timer(TokioTimer::new())
        // Starts when hyper waits for a request head, on a new connection
        // and again on an idle keep-alive one: a client that connects and
        // sends nothing is dropped after this long.
        .header_read_timeout(options.handshake_timeout)
        .keep_alive(true)
        .max_header_size(MAX_REQUEST_HEAD);
    b
}

/// What every connection task shares.
struct Server {
    app: Router,
    tls: Option<TlsAcceptor>,
    options: ServerOptions,
    http: http1::Builder,
    limiter: Arc<Limiter>,
    refusing: Arc<AtomicUsize>,
    stats: Arc<ServerStats>,
    monitor: Monitor,
    stop: CancellationToken,
}

impl Server {
    /// Serves a new connection within the limits, or answers it with a 503.
    fn admit(self: &Arc<Self>, tcp: TcpStream, peer: SocketAddr, connections: &TaskTracker) {
        let ip = access::canonical(peer.ip());
        match self.limiter.acquire(ip) {
            Ok(slot) => {
                let server = self.clone();
                connections.spawn(async move { server.serve_connection(tcp, peer, slot).await });
            }
            Err(why) => {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                self.monitor.emit_summarised(
                    why.kind(),
                    format_args!("refused connection from {peer}: {why}"),
                );
                self.refuse(tcp, why);
            }
        }
    }

    async fn serve_connection(&self, tcp: TcpStream, peer: SocketAddr, slot: ConnSlot) {
        let Some(acceptor) = &self.tls else {
            let (io, hold) = HoldableTcp::new(tcp);
            return self.drive(TokioIo::new(io), peer, slot, Some(hold)).await;
        };
        let handshake = tokio::select! {
            _ = self.stop.cancelled() => return,
            r = tokio::time::timeout(self.options.handshake_timeout, acceptor.accept(tcp)) => r,
        };
        match handshake {
            Ok(Ok(tls)) => self.drive(TokioIo::new(tls), peer, slot, None).await,
            Ok(Err(e)) => {
                self.stats.tls_failures.fetch_add(1, Ordering::Relaxed);
                // Browsers abort handshakes with certificates they do not
                // trust yet; worth a line, but not one per attempt: one
                // kind, whatever the peer and the error, for the Monitor
                // to summarise.
                self.monitor.emit_summarised(
                    "TLS handshake failed",
                    format_args!("TLS handshake with {peer} failed: {e}"),
                );
            }
            Err(_) => {
                self.stats.tls_failures.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Runs hyper on one connection until it ends, is upgraded, or the
    /// daemon stops (then in-flight requests finish, idle ones close).
    /// `hold` is handed to every request (a plain TCP stream; see
    /// [`crate::base::hold`]).
    async fn drive<S>(
        &self,
        io: TokioIo<S>,
        peer: SocketAddr,
        slot: ConnSlot,
        hold: Option<HoldWrites>,
    ) where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let app = self.app.clone();
        let body_timeout = self.options.body_timeout;
        let service = service_fn(move |req: hyper::Request<Incoming>| {
            let mut req = req.map(|body| DeadlineBody::new(body, body_timeout));
            // What axum's `ConnectInfo` extractor reads, and the slot a
            // WebSocket keeps for as long as it lives.
            req.extensions_mut().insert(ConnectInfo(peer));
            req.extensions_mut().insert(slot.clone());
            if let Some(hold) = &hold {
                req.extensions_mut().insert(hold.clone());
            }
            app.clone().oneshot(req)
        });
        let mut conn = pin!(self.http.serve_connection(io, service).with_upgrades());
        tokio::select! {
            // Errors here are the client's (gone, timed out, malformed) and
            // hyper has already answered what can be answered.
            _ = conn.as_mut() => return,
            _ = self.stop.cancelled() => {}
        }
        conn.as_mut().graceful_shutdown();
        let _ = conn.await;
    }

    /// Answers a connection over a limit with 503 and closes it, in a task
    /// of its own; closes it at once when too many are being answered.
    fn refuse(&self, tcp: TcpStream, why: Refused) {
        let refusing = self.refusing.clone();
        if refusing.fetch_add(1, Ordering::Relaxed) >= MAX_REFUSING {
            refusing.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        let tls = self.tls.clone();
        let handshake_timeout = self.options.handshake_timeout.min(REFUSAL_LINGER * 2);
        tokio::spawn(async move {
            let body = format!("{why}\n");
            let answer = format!(
                "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n\
                 content-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            match tls {
                None => answer_and_close(tcp, answer.as_bytes()).await,
                Some(acceptor) => {
                    if let Ok(Ok(tls)) =
                        tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await
                    {
                        answer_and_close(tls, answer.as_bytes()).await;
                    }
                }
            }
            refusing.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// Writes `answer`, ends the write side, and reads (discarding) whatever
/// the client still sends, for at most [`REFUSAL_LINGER`].
async fn answer_and_close<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, answer: &[u8]) {
    let linger = async {
        s.write_all(answer).await?;
        s.shutdown().await?;
        let mut sink = [0u8; 1024];
        while s.read(&mut sink).await? > 0 {}
        io::Result::Ok(())
    };
    let _ = tokio::time::timeout(REFUSAL_LINGER, linger).await;
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The data behind these locks stays consistent even if a holder
    // panicked (counters and timestamps), so a poisoned lock is used as is.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Why a connection was refused at accept.
#[derive(Clone, Copy, Debug)]
enum Refused {
    /// The daemon holds its maximum number of connections.
    Total(usize),
    /// This address holds its maximum number of connections.
    PerAddress { ip: IpAddr, max: usize },
}

impl Refused {
    /// The Monitor's kind for a flood of these.
    fn kind(self) -> &'static str {
        match self {
            Refused::Total(_) => "refused connection: too many open connections",
            Refused::PerAddress { .. } => "refused connection: too many from one address",
        }
    }
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refused::Total(max) => write!(f, "too many open connections ({max} at most)"),
            Refused::PerAddress { ip, max } => {
                write!(f, "too many open connections from {ip} ({max} at most)")
            }
        }
    }
}

/// Counts open connections, in all and per address.
struct Limiter {
    max_total: usize,
    max_per_ip: usize,
    open: Mutex<Open>,
    stats: Arc<ServerStats>,
}

#[derive(Default)]
struct Open {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

impl Limiter {
    fn acquire(self: &Arc<Self>, ip: IpAddr) -> Result<ConnSlot, Refused> {
        let mut open = lock(&self.open);
        if open.total >= self.max_total {
            return Err(Refused::Total(self.max_total));
        }
        let n = open.per_ip.entry(ip).or_insert(0);
        if *n >= self.max_per_ip {
            return Err(Refused::PerAddress {
                ip,
                max: self.max_per_ip,
            });
        }
        *n += 1;
        open.total += 1;
        self.stats.open.store(open.total, Ordering::Relaxed);
        Ok(ConnSlot(Arc::new(SlotInner {
            limiter: self.clone(),
            ip,
        })))
    }

    fn release(&self, ip: IpAddr) {
        let mut open = lock(&self.open);
        open.total = open.total.saturating_sub(1);
        self.stats.open.store(open.total, Ordering::Relaxed);
        if let Some(n) = open.per_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                open.per_ip.remove(&ip);
            }
        }
    }
}

/// One admitted connection's place in the limits. Every request carries a
/// clone as an extension; the connection task holds one and a WebSocket
/// task keeps one after the upgrade, so the place is given back only when
/// the socket is really closed.
#[derive(Clone)]
pub(crate) struct ConnSlot(Arc<SlotInner>);

impl fmt::Debug for ConnSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConnSlot({})", self.0.ip)
    }
}

impl ConnSlot {
    /// The slot as something to keep: the place is given back when the
    /// last holder lets it go.
    pub(crate) fn shared(self) -> Arc<dyn Send + Sync> {
        self.0
    }
}

struct SlotInner {
    limiter: Arc<Limiter>,
    ip: IpAddr,
}

impl Drop for SlotInner {
    fn drop(&mut self) {
        self.limiter.release(self.ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(total: usize, per_ip: usize) -> Arc<Limiter> {
        Arc::new(Limiter {
            max_total: total,
            max_per_ip: per_ip,
            open: Mutex::new(Open::default()),
            stats: Arc::default(),
        })
    }

    #[test]
    fn limits_count_open_connections_and_release_on_drop() {
        let l = limiter(3, 2);
        let a: IpAddr = [127, 0, 0, 1].into();
        let b: IpAddr = [127, 0, 0, 2].into();
        let a1 = l.acquire(a).expect("first");
        let a2 = l.acquire(a).expect("second");
        assert!(matches!(
            l.acquire(a),
            Err(Refused::PerAddress { max: 2, .. })
        ));
        let b1 = l.acquire(b).expect("other address");
        assert!(matches!(l.acquire(b), Err(Refused::Total(3))));
        // A clone (a WebSocket keeping the slot) holds the place too.
        let kept = a1.clone();
        drop(a1);
        assert!(l.acquire(b).is_err());
        drop(kept);
        let a3 = l.acquire(a).expect("released");
        drop((a2, a3, b1));
        let open = lock(&l.open);
        assert_eq!(open.total, 0);
        assert_eq!(l.stats.open.load(Ordering::Relaxed), 0);
        assert!(open.per_ip.is_empty(), "no entry left for gone addresses");
    }

    #[test]
    fn a_websockets_slot_is_one_small_block() {
        // Every page keeps its slot for as long as it lives: in its `Arc`
        // it fills jemalloc's 48-byte class (docs/PERFORMANCE.md, "Memory
        // per page").
        let size = 2 * std::mem::size_of::<usize>() + std::mem::size_of::<SlotInner>();
        assert!(size <= 48, "{size} bytes");
    }

    #[test]
    fn tls_files_are_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing.pem");
        let err = tls_acceptor(&missing, &missing)
            .err()
            .expect("missing file");
        assert!(format!("{err:#}").contains("missing.pem"), "{err:#}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").expect("write");
        let err = tls_acceptor(&empty, &empty).err().expect("empty file");
        assert!(format!("{err:#}").contains("no certificate"), "{err:#}");
    }
}
