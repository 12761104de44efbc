//! Slow and silent peers, limits, and churn: the daemon keeps serving
//! everyone else and returns to where it started.

use std::io::Write as _;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

use crate::page::{wait_for_count, Page};
use crate::support::{Daemon, TIMEOUT};

/// A daemon started with `config` as its configuration file.
fn with_config(config: &str) -> (Daemon, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("pagewire.toml");
    std::fs::File::create(&path)
        .and_then(|mut f| f.write_all(config.as_bytes()))
        .expect("write config");
    let d = Daemon::start(&["--config", path.to_str().expect("utf-8 path")]);
    (d, dir)
}

/// The daemon's resident memory in KiB, from /proc.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// The daemon's open file descriptors, from /proc.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("proc fd")
        .count()
}

/// A WebSocket that completes the handshake and then never reads again,
/// with a tiny receive buffer so the daemon's queue for it fills quickly.
async fn stalled_socket(d: &Daemon) -> tokio::net::TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("rcvbuf");
    let mut s = socket.connect(d.addr).await.expect("connect");
    let req = format!(
        "GET /ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        d.addr
    );
    s.write_all(req.as_bytes()).await.expect("handshake");
    // Register a name: a masked text frame, mask 0 (the payload as is).
    let line = b"ws register status";
    let mut frame = vec![0x81, 0x80 | line.len() as u8, 0, 0, 0, 0];
    frame.extend_from_slice(line);
    s.write_all(&frame).await.expect("register");
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_page_is_closed_and_the_others_get_everything() {
    const READERS: usize = 100;
    const MESSAGES: usize = 10_000;
    let (d, _dir) = with_config("[limits]\noutbox_bytes = 262144\n");
    let pid = d.process().id();
    let mut readers = Vec::new();
    for _ in 0..READERS {
        readers.push(Page::with_names(&d, &["status"]).await);
    }
    let stalled = stalled_socket(&d).await;
    wait_for_count(&d, READERS + 1).await;
    let rss_before = rss_kib(pid);

    let counting: Vec<_> = readers
        .into_iter()
        .map(|mut p| {
            tokio::spawn(async move {
                for i in 0..MESSAGES {
                    let f = p.recv_type("write").await;
                    let text = f["text"].as_str().unwrap_or("");
                    assert!(
                        text.starts_with(&format!("{i} ")),
                        "message {i} out of order: {text}"
                    );
                }
                p
            })
        })
        .collect();

    let client = reqwest::Client::new();
    let pad = "x".repeat(1000);
    for i in 0..MESSAGES {
        let resp = client
            .post(d.url("/api/command"))
            .body(format!("ws write status \"{i} {pad}\""))
            .send()
            .await
            .expect("post");
        assert!(resp.status().is_success());
    }
    let mut pages = Vec::new();
    for task in counting {
        pages.push(task.await.expect("every reader got every message in order"));
    }
    d.wait_for_stdout(|l| l.contains("slow consumer"));
    wait_for_count(&d, READERS).await;
    let rss_after = rss_kib(pid);
    eprintln!(
        "stalled page: RSS {rss_before} KiB before, {rss_after} KiB after {MESSAGES} broadcasts"
    );
    // 10,000 messages of 1 KB went out; the stalled page may hold at most
    // its 256 KiB queue, so memory must not have grown by the messages.
    assert!(
        rss_after < rss_before + 32 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
    drop((stalled, pages));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_peer_is_dropped_and_a_live_one_stays() {
    let (d, _dir) = with_config("[heartbeat]\ninterval_secs = 1\ntimeout_secs = 2\n");
    let mut live = Page::with_names(&d, &["live"]).await;
    // A peer that never answers pings: it never reads, never writes.
    let silent = stalled_socket(&d).await;
    wait_for_count(&d, 2).await;
    // The live page reads all along, and so answers every ping.
    let reading = tokio::spawn(async move {
        let f = live.recv_type("write").await;
        (live, f)
    });
    d.wait_for_stdout(|l| l.contains("heartbeat timeout"));
    wait_for_count(&d, 1).await;
    // Several ping intervals later the live page is still there.
    d.cli(&["ws", "write", "live", "still here"])
        .assert_exit_code(0);
    let (_live, f) = reading.await.expect("reader");
    assert_eq!(f["text"], "still here");
    drop(silent);
}

#[tokio::test]
async fn names_per_connection_are_limited() {
    let (d, _dir) = with_config("[limits]\nmax_names_per_connection = 2\n");
    let mut p = Page::with_names(&d, &["a", "b"]).await;
    p.send("ws register c").await;
    let e = p.recv().await;
    assert_eq!(e["type"], "error");
    assert!(
        e["message"]
            .as_str()
            .unwrap_or("")
            .contains("too many names"),
        "{e}"
    );
    // The connection stays usable.
    d.cli(&["ws", "write", "b", "fine"]).assert_exit_code(0);
    assert_eq!(p.recv().await["text"], "fine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_returns_to_the_starting_level() {
    const ROUNDS: usize = 15;
    const PER_ROUND: usize = 200;
    let d = Daemon::start::<&str>(&[]);
    let pid = d.process().id();
    let client = reqwest::Client::new();

    async fn round(d: &Daemon, client: &reqwest::Client, n: usize, tag: usize) {
        let mut pages = Vec::with_capacity(n);
        for _ in 0..n {
            pages.push(Page::with_names(d, &["churn"]).await);
        }
        let resp = client
            .post(d.url("/api/command"))
            .body(format!("ws write churn \"round {tag}\""))
            .send()
            .await
            .expect("post");
        let body = resp.text().await.expect("body");
        assert!(body.contains(&format!("sent to {n} connections")), "{body}");
        for mut p in pages {
            assert_eq!(p.recv_type("write").await["text"], format!("round {tag}"));
            p.close().await;
        }
    }

    // One warm-up round: allocator pools and thread-locals settle.
    round(&d, &client, PER_ROUND, 0).await;
    wait_for_count(&d, 0).await;
    let (fds_before, rss_before) = (open_fds(pid), rss_kib(pid));
    for tag in 1..=ROUNDS {
        round(&d, &client, PER_ROUND, tag).await;
    }
    wait_for_count(&d, 0).await;
    let deadline = Instant::now() + TIMEOUT;
    while open_fds(pid) > fds_before && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (fds_after, rss_after) = (open_fds(pid), rss_kib(pid));
    eprintln!(
        "churn: fds {fds_before} -> {fds_after}, RSS {rss_before} KiB -> {rss_after} KiB after {} connections",
        ROUNDS * PER_ROUND
    );
    assert!(fds_after <= fds_before, "fds {fds_before} -> {fds_after}");
    assert!(
        rss_after < rss_before + 8 * 1024,
        "RSS {rss_before} KiB -> {rss_after} KiB after {} connections",
        ROUNDS * PER_ROUND
    );
    let metrics = d.metrics().await;
    let opened = (ROUNDS + 1) * PER_ROUND;
    assert!(
        metrics.contains(&format!("pagewire_connections_opened_total {opened}")),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!("pagewire_connections_closed_total {opened}")),
        "{metrics}"
    );
}

#[tokio::test]
async fn ping_payloads_are_answered() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let d = Daemon::start::<&str>(&[]);
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", d.addr))
        .await
        .expect("connect");
    ws.send(Message::Ping(b"are you there".to_vec().into()))
        .await
        .expect("ping");
    loop {
        let msg = tokio::time::timeout(TIMEOUT, ws.next())
            .await
            .expect("in time")
            .expect("open")
            .expect("frame");
        if let Message::Pong(p) = msg {
            assert_eq!(&p[..], b"are you there");
            break;
        }
    }
    // Read nothing else: drop closes the socket; the daemon notices.
    drop(ws);
    wait_for_count(&d, 0).await;
    let mut s = tokio::net::TcpStream::connect(d.addr)
        .await
        .expect("connect");
    let req = format!(
        "GET /healthz HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        d.addr
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
}
