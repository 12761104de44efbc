//! Clusters: two or three real daemons sharing one connection table through
//! a real `redis-server` of their own, started on a free port in a
//! temporary directory and stopped when the test ends.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::page::{listing, Page};
use crate::remember::{register, shown};
use crate::support::{eventually, until, Daemon, Output, TIMEOUT};

/// A private `redis-server`, without persistence (but for `SAVE`),
/// killed on drop; optionally TLS-only with an ACL user.
struct Redis {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// Extra flags (TLS, users).
    extra: Vec<String>,
}

impl Redis {
    async fn start() -> Redis {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").expect("a free port");
            l.local_addr().expect("its address").port()
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let mut redis = Redis {
            port,
            dir,
            child: None,
            extra: Vec::new(),
        };
        redis.run().await;
        redis
    }

    /// A server that speaks TLS only (certificate for 127.0.0.1, in
    /// `ca.pem`) and knows the user `alice` with password `s3cret` only.
    async fn start_tls() -> Redis {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").expect("a free port");
            l.local_addr().expect("its address").port()
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let made =
            rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).expect("certificate");
        let cert = dir.path().join("ca.pem");
        let key = dir.path().join("key.pem");
        std::fs::write(&cert, made.cert.pem()).expect("write");
        std::fs::write(&key, made.signing_key.serialize_pem()).expect("write");
        let path = |p: &Path| p.display().to_string();
        let extra = [
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--tls-cert-file",
            &path(&cert),
            "--tls-key-file",
            &path(&key),
            "--tls-ca-cert-file",
            &path(&cert),
            "--tls-auth-clients",
            "no",
            "--user",
            "default",
            "off",
            "--user",
            "alice",
            "on",
            ">s3cret",
            "~*",
            "&*",
            "+@all",
        ];
        let mut redis = Redis {
            port,
            dir,
            child: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        redis.run().await;
        redis
    }

    /// Starts the server (again) on the same port and waits for PONG.
    async fn run(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(self.dir.path())
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start redis-server ({e}); the cluster tests need it: \
                     apt-get install redis-server (scripts/test.sh does)"
                )
            });
        self.child = Some(child);
        if self.extra.is_empty() {
            eventually("redis-server to answer PING", TIMEOUT, || self.pong()).await;
        } else {
            // TLS only: wait for the port to accept.
            eventually("redis-server to listen", TIMEOUT, || {
                TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            })
            .await;
        }
    }

    fn pong(&self) -> bool {
        self.command("PING").is_some_and(|l| l.starts_with("+PONG"))
    }

    /// Sends one inline command and returns the first line of the answer.
    fn command(&self, line: &str) -> Option<String> {
        self.send(format!("{line}\r\n").as_bytes())
    }

    /// Sends one command in RESP, whose arguments may hold any character
    /// (a NUL, a newline), and returns the first line of the answer.
    fn command_args(&self, args: &[&str]) -> Option<String> {
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        self.send(request.as_bytes())
    }

    fn send(&self, request: &[u8]) -> Option<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        s.write_all(request).ok()?;
        let mut answer = String::new();
        BufReader::new(s).read_line(&mut answer).ok()?;
        Some(answer)
    }

    /// Kills the server, as an outage would.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A cluster's configuration file: a short lease so that a dead node
/// vanishes quickly, and small index blocks so that refills happen.
fn config(dir: &Path) -> PathBuf {
    let path = dir.join("cluster.toml");
    std::fs::write(&path, "[cluster]\nlease_secs = 2\nindex_block = 4\n").expect("config");
    path
}

/// One node: a daemon joined to `redis`, and the id it printed.
struct Node {
    d: Daemon,
    id: String,
}

fn node(redis: &Redis) -> Node {
    node_at(&redis.url(), config(redis.dir.path()))
}

fn node_at(url: &str, config: PathBuf) -> Node {
    let d = Daemon::builder()
        .args(&["--redis", url, "--config"])
        .arg(config)
        .start();
    let line = d.wait_for_stdout(|l| l.contains("cluster: joined as node "));
    let id = line
        .split("joined as node ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no node id in {line:?}"))
        .to_string();
    Node { d, id }
}

/// Runs `ws ...` on a node and checks it succeeded.
fn ok(n: &Node, args: &[&str]) -> Output {
    let mut argv = vec!["ws"];
    argv.extend_from_slice(args);
    let out = n.d.cli(&argv);
    out.assert_exit_code(0);
    out
}

/// Polls `ws` on `n` until `pred` holds for its output, bounded by
/// [`TIMEOUT`].
async fn wait_for_listing(n: &Node, pred: impl Fn(&str) -> bool) -> String {
    let listing = || {
        let out = ok(n, &[]).stdout;
        std::future::ready(pred(&out).then_some(out))
    };
    until("the listing to match", TIMEOUT, listing).await
}

#[tokio::test]
async fn indexes_are_unique_and_every_node_lists_every_page() {
    let redis = Redis::start().await;
    let (a, b, c) = (node(&redis), node(&redis), node(&redis));
    let mut pages = Vec::new();
    // More pages than one block of indexes, so that refills happen too.
    for (n, count) in [(&a, 5), (&b, 6), (&c, 2)] {
        for _ in 0..count {
            pages.push((n.id.clone(), Page::open(&n.d).await));
        }
    }
    let mut indexes: Vec<u64> = pages.iter().map(|(_, p)| p.index).collect();
    indexes.sort_unstable();
    indexes.dedup();
    assert_eq!(indexes.len(), pages.len(), "indexes repeat: {indexes:?}");

    for n in [&a, &b, &c] {
        let lines = listing(&n.d);
        assert_eq!(lines.len(), pages.len(), "{lines:?}");
        let listed: Vec<u64> = lines
            .iter()
            .map(|l| {
                l.split(' ')
                    .next()
                    .and_then(|i| i.parse().ok())
                    .expect("index")
            })
            .collect();
        assert_eq!(listed, indexes, "sorted by index on {}", n.id);
        for (owner, page) in &pages {
            let line = lines
                .iter()
                .find(|l| l.starts_with(&format!("{} ", page.index)))
                .expect("listed");
            assert!(line.ends_with(&format!(" node={owner}")), "{line}");
        }
    }
}

#[tokio::test]
async fn write_and_exec_by_name_index_and_star_reach_every_node() {
    let redis = Redis::start().await;
    let (a, b, c) = (node(&redis), node(&redis), node(&redis));
    let mut on_a = Page::with_names(&a.d, &["clock"]).await;
    let mut on_b = Page::with_names(&b.d, &["status"]).await;
    let mut on_c = Page::with_names(&c.d, &["status"]).await;

    ok(&a, &["write", "status", "VPN up"]).assert_stdout_contains("sent to 2 connections");
    for p in [&mut on_b, &mut on_c] {
        let f = p.recv().await;
        assert_eq!(
            (f["name"].as_str(), f["text"].as_str()),
            (Some("status"), Some("VPN up"))
        );
    }

    ok(&a, &["write", &on_c.index.to_string(), "just C"])
        .assert_stdout_contains("sent to 1 connection");
    let f = on_c.recv().await;
    assert_eq!(f["text"], "just C");
    assert!(
        f.get("name").is_none(),
        "a write by index names no element: {f}"
    );

    ok(&b, &["write", "*", "everyone"]).assert_stdout_contains("sent to 3 connections");
    for p in [&mut on_a, &mut on_b, &mut on_c] {
        assert_eq!(p.recv().await["text"], "everyone");
    }

    ok(&c, &["exec", "clock", "tick", "42"]).assert_stdout_contains("sent to 1 connection");
    let f = on_a.recv().await;
    assert_eq!(
        (f["type"].as_str(), f["func"].as_str(), f["arg"].as_str()),
        (Some("exec"), Some("tick"), Some("42"))
    );
    // B and C got nothing more: the next thing they see is this write.
    ok(&a, &["write", "status", "last"]).assert_stdout_contains("sent to 2 connections");
    assert_eq!(on_b.recv().await["text"], "last");
    assert_eq!(on_c.recv().await["text"], "last");
}

#[tokio::test]
async fn close_by_index_and_star_on_other_nodes() {
    let redis = Redis::start().await;
    let (a, b) = (node(&redis), node(&redis));
    let first = Page::with_names(&b.d, &["x"]).await;
    let second = Page::with_names(&b.d, &["y"]).await;
    let mine = Page::with_names(&a.d, &["z"]).await;

    ok(&a, &["close", &first.index.to_string()]).assert_stdout_contains("closed 1 connection");
    let closed = first.closed().await;
    assert_eq!(
        (closed.code, closed.reason.as_str()),
        (Some(1000), "closed by operator")
    );
    wait_for_listing(&a, |out| {
        out.lines().filter(|l| l.contains(" node=")).count() == 2
    })
    .await;

    ok(&a, &["close"]).assert_stdout_contains("closed 2 connections");
    assert_eq!(second.closed().await.code, Some(1000));
    assert_eq!(mine.closed().await.code, Some(1000));
    wait_for_listing(&b, |out| out.starts_with("no WebSocket connections")).await;
}

#[tokio::test]
async fn unknown_index_fails_and_an_unregistered_name_prints_where_it_ran() {
    let redis = Redis::start().await;
    let (a, b) = (node(&redis), node(&redis));
    let _page = Page::with_names(&a.d, &["status"]).await;

    a.d.cli(&["ws", "write", "999999", "x"])
        .assert_exit_code(1)
        .assert_stderr_contains("no connection with index 999999");
    a.d.cli(&["ws", "close", "999999"])
        .assert_exit_code(1)
        .assert_stderr_contains("no connection with index 999999");

    ok(&b, &["write", "nobody", "only on B 123"])
        .assert_stdout_contains("no connection named 'nobody'; printed on the console");
    b.d.wait_for_stdout(|l| l == "only on B 123");
    // A answered B's request before B replied, so it has had its chance.
    assert!(
        !a.d.process()
            .stdout_lines()
            .iter()
            .any(|l| l == "only on B 123"),
        "printed on the wrong console"
    );
}

#[tokio::test]
async fn a_killed_node_vanishes_once_its_lease_expires() {
    let redis = Redis::start().await;
    let (a, b) = (node(&redis), node(&redis));
    let on_b = Page::with_names(&b.d, &["status"]).await;
    let line = format!("{} ", on_b.index);
    wait_for_listing(&a, |out| out.starts_with(&line)).await;

    b.d.kill();
    // Until the lease expires A waits for B and says so; then B is gone
    // without a trace: no connection, no note.
    let out = wait_for_listing(&a, |out| !out.contains(" node=") && !out.contains("note:")).await;
    assert_eq!(out.trim(), "no WebSocket connections", "{out}");
    ok(&a, &["write", "status", "anyone?"])
        .assert_stdout_contains("no WebSocket connections; printed on the console");
}

#[tokio::test]
async fn a_stopped_node_leaves_at_once() {
    let redis = Redis::start().await;
    let (a, b) = (node(&redis), node(&redis));
    let on_b = Page::with_names(&b.d, &["status"]).await;
    let line = format!("{} ", on_b.index);
    wait_for_listing(&a, |out| out.starts_with(&line)).await;
    b.d.stop().assert_exit_code(0);
    // B deleted its lease on the way out: A neither lists nor waits for it.
    let out = ok(&a, &[]);
    assert_eq!(out.stdout.trim(), "no WebSocket connections", "{out}");
}

#[tokio::test]
async fn without_redis_at_start_the_node_refuses_to_start() {
    let redis = Redis::start().await;
    let url = redis.url();
    drop(redis);
    let out = Daemon::builder()
        .args(&["--redis", &url])
        .spawn()
        .wait_exit();
    out.assert_exit_code(1)
        .assert_stderr_contains("cannot reach Redis at 127.0.0.1:")
        .assert_stderr_contains("run without --redis");
}

/// A Redis that is slow to answer while a node starts (stopped for longer
/// than a node waits for one answer, a third of a refresh period) is
/// waited for, not taken for absent.
#[tokio::test]
async fn a_node_starting_while_redis_is_slow_waits_for_it() {
    let redis = Redis::start().await;
    let pid = redis.child.as_ref().expect("redis-server runs").id();
    signal(pid, "-STOP");
    let resume = std::thread::spawn(move || {
        // The stall itself, not a wait for a condition.
        std::thread::sleep(Duration::from_millis(1500));
        signal(pid, "-CONT");
    });
    let a = node(&redis);
    resume.join().expect("redis-server resumed");
    let on_a = Page::open(&a.d).await;
    let row = format!("{} ", on_a.index);
    let here = format!(" node={}", a.id);
    wait_for_listing(&a, |out| {
        out.lines()
            .any(|l| l.starts_with(&row) && l.contains(&here))
    })
    .await;
}

#[tokio::test]
async fn a_redis_outage_keeps_local_delivery_and_heals() {
    let mut redis = Redis::start().await;
    let (a, b) = (node(&redis), node(&redis));
    let mut on_a = Page::with_names(&a.d, &["status"]).await;
    let on_b = Page::with_names(&b.d, &["status"]).await;

    redis.kill();
    a.d.wait_for_stdout(|l| l.contains("cluster: lost"));
    let out = ok(&a, &["write", "status", "still here"]);
    out.assert_stdout_contains("sent to 1 connection")
        .assert_stdout_contains("note: Redis at 127.0.0.1:");
    assert_eq!(on_a.recv().await["text"], "still here");
    // The listing is what is reachable, with the same note.
    let out = ok(&a, &[]);
    out.assert_stdout_contains(&format!("{} ", on_a.index))
        .assert_stdout_contains("note: Redis at");

    // Redis comes back empty; both nodes rejoin and see each other again,
    // and a new page gets an index above every earlier one.
    redis.run().await;
    let both = |out: &str| {
        out.contains(&format!(" node={}", a.id))
            && out.contains(&format!(" node={}", b.id))
            && !out.contains("note:")
    };
    wait_for_listing(&a, both).await;
    wait_for_listing(&b, both).await;
    let newer = Page::open(&b.d).await;
    assert!(
        newer.index > on_a.index.max(on_b.index),
        "index {} reused after Redis lost its data",
        newer.index
    );
}

/// Every index in `pages`, checked to be unique.
fn assert_unique(pages: &[&Page]) {
    let mut indexes: Vec<u64> = pages.iter().map(|p| p.index).collect();
    indexes.sort_unstable();
    let all = indexes.len();
    indexes.dedup();
    assert_eq!(
        indexes.len(),
        all,
        "two live pages share an index: {indexes:?}"
    );
}

/// The reproduction: Redis restarted empty while nodes A and B hold pages,
/// node C started at once. C's pages, and the pages A and B open after,
/// never get an index a live page holds; and every listing meanwhile is
/// whole or says what may be missing.
#[tokio::test]
async fn redis_restarted_empty_never_hands_out_an_index_twice() {
    let mut redis = Redis::start().await;
    let (a, b) = (node(&redis), node(&redis));
    let mut pages = Vec::new();
    for n in [&a, &b, &a, &b, &a] {
        pages.push(Page::open(&n.d).await);
    }
    let before: Vec<String> = pages.iter().map(|p| format!("{} ", p.index)).collect();
    let whole = |out: &str| before.iter().all(|i| out.lines().any(|l| l.starts_with(i)));
    redis.kill();
    redis.run().await;
    let c = node(&redis);
    for n in [&c, &c, &a, &b] {
        pages.push(Page::open(&n.d).await);
    }
    assert_unique(&pages.iter().collect::<Vec<_>>());
    // Until every node is listed again, a listing says so.
    let listing = || {
        let out = ok(&a, &[]).stdout;
        assert!(
            whole(&out) || out.contains("\nnote: ") || out.starts_with("note: "),
            "a partial listing without a note:\n{out}"
        );
        std::future::ready((whole(&out) && !out.contains("note:")).then_some(()))
    };
    until("a whole listing", TIMEOUT, listing).await;
}

/// A Redis restored from an older snapshot holds an older counter: the
/// new epoch is noticed all the same.
#[tokio::test]
async fn redis_restored_from_an_older_snapshot_never_hands_out_an_index_twice() {
    let mut redis = Redis::start().await;
    let (a, b) = (node(&redis), node(&redis));
    let mut pages = vec![Page::open(&a.d).await, Page::open(&b.d).await];
    assert_eq!(redis.command("SAVE").as_deref(), Some("+OK\r\n"));
    // More pages than the blocks the nodes held at the snapshot.
    for n in [&a, &b, &a, &b, &a, &b, &a, &b, &a, &b] {
        pages.push(Page::open(&n.d).await);
    }
    redis.kill();
    redis.run().await;
    let c = node(&redis);
    for n in [&c, &c, &c, &a, &b] {
        pages.push(Page::open(&n.d).await);
    }
    assert_unique(&pages.iter().collect::<Vec<_>>());
}

/// Stops (SIGSTOP) or resumes (SIGCONT) a process.
fn signal(pid: u32, sig: &str) {
    let sent = Command::new("kill").args([sig, &pid.to_string()]).status();
    assert!(sent.is_ok_and(|s| s.success()), "kill {sig} {pid}");
}

/// A node stopped with SIGSTOP costs a command no more than the deadline,
/// and does not apply the command when it resumes after it.
#[tokio::test]
async fn a_stopped_node_costs_no_more_than_the_deadline_and_applies_nothing_late() {
    let redis = Redis::start().await;
    let (a, b) = (node(&redis), node(&redis));
    let mut on_b = Page::with_names(&b.d, &["status"]).await;
    wait_for_listing(&a, |out| out.contains("names=status")).await;
    let pid = b.d.process().id();
    signal(pid, "-STOP");
    let started = std::time::Instant::now();
    let out = ok(&a, &["write", "status", "too late"]);
    let took = started.elapsed();
    signal(pid, "-CONT");
    out.assert_stdout_contains(&format!("note: node {} did not answer within 1s", b.id));
    // The deadline is 1 s (reply_timeout_ms); the CLI itself adds little.
    assert!(took < Duration::from_millis(1800), "waited {took:?}");
    b.d.wait_for_stdout(|l| l.contains("cluster: dropped a request from node"));
    // The next write is the next thing the page sees: nothing came late.
    let out = ok(&a, &["write", "status", "on time"]);
    out.assert_stdout_contains("sent to 1 connection");
    assert_eq!(on_b.recv().await["text"], "on time");
}

/// `ws call` with a stopped node waits no longer than its deadline (its
/// timeout plus the reply timeout), names the node and fails; the node,
/// resumed, drops the ask: its page is never called.
#[tokio::test]
async fn a_stopped_node_costs_a_call_its_deadline_and_its_page_is_not_called_late() {
    use crate::verbs::answer;
    use serde_json::json;

    let redis = Redis::start().await;
    // A lease long enough that B keeps it while stopped.
    let config = redis.dir.path().join("long-lease.toml");
    std::fs::write(&config, "[cluster]\nlease_secs = 4\nindex_block = 4\n").expect("config");
    let (a, b) = (
        node_at(&redis.url(), config.clone()),
        node_at(&redis.url(), config),
    );
    let mut on_a = Page::with_names(&a.d, &["kiosk"]).await;
    let mut on_b = Page::with_names(&b.d, &["kiosk"]).await;
    wait_for_listing(&a, |out| out.matches("names=kiosk").count() == 2).await;
    let pid = b.d.process().id();
    signal(pid, "-STOP");
    let started = std::time::Instant::now();
    let cli =
        a.d.cli_spawn(&["ws", "call", "--timeout", "100ms", "kiosk", "getState"]);
    answer(&mut on_a, "call", json!({"value": 1})).await;
    let out = cli.wait_exit();
    let took = started.elapsed();
    signal(pid, "-CONT");
    out.assert_exit_code(1);
    assert_eq!(
        out.stdout.lines().next(),
        Some(format!("{} 1", on_a.index).as_str()),
        "{out}"
    );
    out.assert_stdout_contains(&format!("note: node {} did not answer within", b.id));
    // 100 ms plus reply_timeout_ms (1 s); the CLI itself adds little.
    assert!(took < Duration::from_millis(1900), "waited {took:?}");
    b.d.wait_for_stdout(|l| l.contains("cluster: dropped a request from node"));
    // The next write is the next thing B's page sees: the call never came.
    ok(&a, &["write", "kiosk", "on time"]).assert_stdout_contains("sent to 2 connections");
    assert_eq!(on_b.recv().await["text"], "on time");
}

/// A write by index goes to the node that holds the index, and no other:
/// only that node's Monitor shows it.
#[tokio::test]
async fn a_write_by_index_goes_to_its_node_only() {
    let redis = Redis::start().await;
    let (a, b, c) = (node(&redis), node(&redis), node(&redis));
    let mut on_b = Page::open(&b.d).await;
    let mut on_c = Page::open(&c.d).await;
    let index = on_b.index.to_string();
    wait_for_listing(&a, |out| {
        out.lines().filter(|l| l.contains(" node=")).count() == 2
    })
    .await;
    ok(&a, &["write", &index, "just B"]).assert_stdout_contains("sent to 1 connection");
    assert_eq!(on_b.recv().await["text"], "just B");
    b.d.wait_for_stdout(|l| l.contains(&format!("cluster: ws write {index} from node {}", a.id)));
    // C hears the broadcast that follows, and never heard the write by index.
    ok(&a, &["write", "*", "all"]).assert_stdout_contains("sent to 2 connections");
    assert_eq!(on_c.recv().await["text"], "all");
    c.d.wait_for_stdout(|l| l.contains("cluster: ws write * from node"));
    let heard: Vec<String> =
        c.d.process()
            .stdout_lines()
            .into_iter()
            .filter(|l| l.contains(&format!("cluster: ws write {index} ")))
            .collect();
    assert!(heard.is_empty(), "node C was asked: {heard:?}");
}

/// `pagewire monitor --cluster` shows the lines of every node, each with
/// its node.
#[tokio::test]
async fn monitor_cluster_tails_every_node() {
    let redis = Redis::start().await;
    let (a, b) = (node(&redis), node(&redis));
    let mut tail = a.d.cli_spawn(&["monitor", "--cluster"]);
    tail.next_stdout(|l| l.starts_with("cluster monitor: tailing 2 nodes"));
    let on_b = Page::open(&b.d).await;
    let line = tail.next_stdout(|l| l.contains(&format!("ws {} opened", on_b.index)));
    assert!(line.starts_with(&format!("[{}] ", b.id)), "{line}");
    let on_a = Page::open(&a.d).await;
    let line = tail.next_stdout(|l| l.contains(&format!("ws {} opened", on_a.index)));
    assert!(line.starts_with(&format!("[{}] ", a.id)), "{line}");
    // Without a cluster it says so.
    let alone = Daemon::start::<&str>(&[]);
    alone
        .cli(&["monitor", "--cluster"])
        .assert_exit_code(2)
        .assert_stderr_contains("not part of a cluster");
}

/// `GET /readyz` of a node: its status and its lines.
async fn readyz(n: &Node) -> (u16, String) {
    let resp = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
        .get(n.d.url("/readyz"))
        .send()
        .await
        .expect("GET /readyz");
    let status = resp.status().as_u16();
    (status, resp.text().await.expect("body"))
}

#[tokio::test]
async fn readyz_says_whether_the_node_is_joined() {
    let mut redis = Redis::start().await;
    let a = node(&redis);
    let (status, body) = readyz(&a).await;
    assert_eq!(
        (status, body.as_str()),
        (200, "listening: ok\ncluster: ok\n")
    );
    redis.kill();
    let body = until("readyz to say the node is not joined", TIMEOUT, || {
        let a = &a;
        async move {
            let (status, body) = readyz(a).await;
            (status == 503).then_some(body)
        }
    })
    .await;
    assert!(body.contains("listening: ok\ncluster: "), "{body}");
    assert!(
        body.contains("Redis at 127.0.0.1:") || body.contains("not subscribed"),
        "{body}"
    );
    // Joined again once Redis is back.
    redis.run().await;
    until("readyz to say ready again", TIMEOUT, || {
        let a = &a;
        async move { (readyz(a).await.0 == 200).then_some(()) }
    })
    .await;
}

/// A cluster over TLS (`rediss://`) with an ACL user and password.
#[tokio::test]
async fn tls_and_an_acl_user() {
    let redis = Redis::start_tls().await;
    let dir = redis.dir.path();
    let config = dir.join("tls.toml");
    let ca = dir.join("ca.pem");
    std::fs::write(
        &config,
        format!(
            "[cluster]\nlease_secs = 2\nindex_block = 4\ntls_ca = \"{}\"\n",
            ca.display()
        ),
    )
    .expect("config");
    let url = format!("rediss://alice:s3cret@127.0.0.1:{}", redis.port);
    let a = node_at(&url, config.clone());
    let b = node_at(&url, config.clone());
    let mut on_b = Page::with_names(&b.d, &["status"]).await;
    wait_for_listing(&a, |out| out.contains("names=status")).await;
    ok(&a, &["write", "status", "over TLS"]).assert_stdout_contains("sent to 1 connection");
    assert_eq!(on_b.recv().await["text"], "over TLS");
    // A wrong password is refused at start, and the password is not shown.
    let wrong = format!("rediss://alice:wrong@127.0.0.1:{}", redis.port);
    let out = Daemon::builder()
        .args(&["--redis", &wrong, "--config"])
        .arg(&config)
        .spawn()
        .wait_exit();
    out.assert_exit_code(1)
        .assert_stderr_contains("cannot reach Redis");
    assert!(!out.stderr.contains("wrong"), "{out}");
}

#[tokio::test]
async fn call_write_wait_and_wait_gather_answers_from_every_node() {
    use crate::verbs::answer;
    use serde_json::json;

    let redis = Redis::start().await;
    let (a, b) = (node(&redis), node(&redis));
    let mut on_a = Page::with_names(&a.d, &["kiosk"]).await;
    let mut on_b = Page::with_names(&b.d, &["kiosk"]).await;
    let mut mute = Page::with_names(&b.d, &["kiosk"]).await;

    // `ws call` from A: A's page, B's page and B's silent page, in index
    // order, each with its own answer.
    let cli =
        a.d.cli_spawn(&["ws", "call", "--timeout", "2s", "kiosk", "getState", "1"]);
    let asked_a = answer(&mut on_a, "call", json!({"value": "from A"})).await;
    let asked_b = answer(&mut on_b, "call", json!({"error": "threw: on B"})).await;
    assert_eq!(
        (asked_b["func"].as_str(), asked_b["arg"].as_str()),
        (Some("getState"), Some("1"))
    );
    assert!(asked_a["id"].is_u64() && asked_b["id"].is_u64());
    mute.recv_type("call").await;
    let out = cli.wait_exit();
    out.assert_exit_code(1);
    let mut want = [
        (on_a.index, "\"from A\"".to_string()),
        (on_b.index, "error: threw: on B".to_string()),
        (mute.index, "error: timed out".to_string()),
    ];
    want.sort();
    let want: Vec<String> = want.iter().map(|(i, l)| format!("{i} {l}")).collect();
    assert_eq!(out.stdout.lines().collect::<Vec<_>>(), want, "{out}");

    // Over HTTP on B, for A's page only: its answer crosses back.
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let request = client
        .post(b.d.url("/api/command"))
        .body(format!("ws call {} version", on_a.index))
        .send();
    let (resp, _) = tokio::join!(
        request,
        answer(&mut on_a, "call", json!({"value": {"v": 2}}))
    );
    let resp = resp.expect("POST");
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.expect("JSON");
    assert_eq!(
        body["results"],
        json!([{"index": on_a.index, "ok": true, "value": {"v": 2}}]),
        "{body}"
    );

    // `ws write --wait` from B: A's page and B's page confirm, the silent
    // one is named.
    let cli = b.d.cli_spawn(&[
        "ws",
        "write",
        "--wait",
        "--timeout",
        "2s",
        "kiosk",
        "shown?",
    ]);
    for p in [&mut on_a, &mut on_b] {
        let w = p.recv_type("write").await;
        assert_eq!(w["text"], "shown?");
        p.send(&json!({"type": "ack", "id": w["ack"]}).to_string())
            .await;
    }
    mute.recv_type("write").await;
    let out = cli.wait_exit();
    out.assert_exit_code(1);
    assert_eq!(
        out.stdout.trim(),
        format!(
            "sent to 3 connections; 2 confirmed; not confirmed within 2s: {} (timed out)",
            mute.index
        ),
        "{out}"
    );

    // `ws wait` on A returns when a page registers on B; `/probe` on A
    // counts B's pages.
    let cli =
        a.d.cli_spawn(&["ws", "wait", "lobby", "--count", "2", "--timeout", "30s"]);
    let _l1 = Page::with_names(&b.d, &["lobby"]).await;
    let _l2 = Page::with_names(&b.d, &["lobby"]).await;
    let out = cli.wait_exit();
    out.assert_exit_code(0);
    assert_eq!(out.stdout.trim(), "2 connections registered 'lobby'");
    let resp = client
        .get(a.d.url("/probe/lobby"))
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.expect("body"), "2\n");

    // `ws who` on B lists A's page too, and sent it nothing.
    let out = ok(&b, &["who", "kiosk"]);
    assert_eq!(out.stdout.lines().count(), 3, "{out}");
    assert!(
        out.stdout.contains(&format!("{} names=kiosk", on_a.index)),
        "{out}"
    );
    ok(&b, &["write", &on_a.index.to_string(), "later"]);
    assert_eq!(on_a.recv().await["text"], "later");
}

#[tokio::test]
async fn the_admin_console_lists_every_node_and_its_commands_reach_the_cluster() {
    let redis = Redis::start().await;
    let (a, b) = (node(&redis), node(&redis));
    let mut on_b = Page::with_names(&b.d, &["status"]).await;
    // B's name is routed to once B wrote it to Redis.
    wait_for_listing(&a, |out| out.contains("names=status")).await;
    let mut console = crate::admin::Console::connect(&a.d, &[])
        .await
        .expect("upgrade");
    console.recv_type("hello").await;
    assert_eq!(
        console.recv().await,
        serde_json::json!({"type": "ready", "node": a.id})
    );
    // The table is the cluster's: B's page is in it, with B's id.
    let table = console.recv_type("table").await;
    assert_eq!(table["total"], 1, "{table}");
    assert_eq!(table["rows"][0]["id"], on_b.index, "{table}");
    assert_eq!(table["rows"][0]["node"], b.id.as_str(), "{table}");
    assert_eq!(table["rows"][0]["names"], serde_json::json!(["status"]));
    // A page on A joins it in index order, named by A's id.
    let on_a = Page::open(&a.d).await;
    let table = console
        .until(|f| f["type"] == "table" && f["total"] == 2)
        .await;
    let nodes: Vec<(u64, String)> = table["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            (
                r["id"].as_u64().expect("id"),
                r["node"].as_str().expect("node").to_owned(),
            )
        })
        .collect();
    let mut want = vec![(on_b.index, b.id.clone()), (on_a.index, a.id.clone())];
    want.sort();
    assert_eq!(nodes, want, "{table}");
    let line = serde_json::json!({"type": "command", "id": 1, "line": "ws write status across"});
    console.send(line).await;
    assert_eq!(on_b.recv_type("write").await["text"], "across");
    assert_eq!(console.recv_type("reply").await["ok"], true);
}

#[tokio::test]
async fn retained_values_live_in_redis_and_every_node_serves_them() {
    let redis = Redis::start().await;
    let (a, b) = (node(&redis), node(&redis));
    // Kept on A with no page anywhere; a page that registers on B after
    // the command answered gets it first, then what is newer.
    ok(&a, &["write", "--retain", "status", "VPN up"])
        .assert_stdout_contains("retained for pages that register 'status'");
    ok(&b, &["exec", "--retain", "gauge", "setLevel", "42"]);
    let mut on_b = Page::open(&b.d).await;
    let frames = register(&mut on_b, "status").await;
    assert_eq!(shown(&frames), ["write:VPN up"], "{frames:?}");
    ok(&a, &["write", "status", "newer"]).assert_stdout_contains("sent to 1 connection");
    assert_eq!(on_b.recv().await["text"], "newer");
    let frames = register(&mut on_b, "gauge").await;
    assert_eq!(shown(&frames), ["exec:setLevel:42"], "{frames:?}");

    // A node started after the writes has them too.
    let c = node(&redis);
    let mut on_c = Page::open(&c.d).await;
    let frames = register(&mut on_c, "status").await;
    assert_eq!(shown(&frames), ["write:VPN up"], "{frames:?}");

    // Every node lists what Redis holds.
    for n in [&a, &b, &c] {
        let out = ok(n, &["retained"]);
        out.assert_stdout_contains("status write age=")
            .assert_stdout_contains("\"VPN up\"")
            .assert_stdout_contains("gauge exec setLevel age=");
    }

    // Forgotten on B: gone from Redis and from every node's copy.
    ok(&b, &["forget", "status"]).assert_stdout_contains("forgot 1 retained value of 'status'");
    for n in [&a, &b, &c] {
        let listed = ok(n, &["retained"]).stdout;
        assert!(!listed.contains("status"), "{listed}");
    }
    nothing_retained_for("status", &[&a, &b, &c]).await;
}

/// Asserts that a page registering `name` on each node is shown nothing.
async fn nothing_retained_for(name: &str, nodes: &[&Node]) {
    for n in nodes {
        let mut page = Page::open(&n.d).await;
        let frames = register(&mut page, name).await;
        assert_eq!(
            shown(&frames),
            Vec::<String>::new(),
            "on {}: {frames:?}",
            n.id
        );
    }
}

#[tokio::test]
async fn a_retained_value_expires_on_every_node() {
    let redis = Redis::start().await;
    let (a, b) = (node(&redis), node(&redis));
    ok(&a, &["write", "--retain", "--ttl", "1s", "status", "brief"])
        .assert_stdout_contains("retained for pages that register 'status' for 1s");
    until("the value to expire on B", TIMEOUT, || {
        let listed = ok(&b, &["retained"]).stdout;
        std::future::ready(listed.contains("nothing retained").then_some(()))
    })
    .await;
    nothing_retained_for("status", &[&a, &b]).await;
    // And Redis drops it: the nodes purge what has expired.
    eventually("Redis to drop the expired value", TIMEOUT, || {
        redis.command("HLEN pagewire:retained").as_deref() == Some(":0\r\n")
    })
    .await;
}

/// Puts a retained text for `name` straight into Redis, as a program
/// other than pagewire (or a bad node) could.
fn put_retained_in_redis(redis: &Redis, name: &str, text: &str) {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis();
    let record = serde_json::json!({
        "name": name,
        "msg": {"kind": "write", "text": text},
        "set_ms": now_ms as u64,
        "expires_ms": null,
    });
    let key = format!("{name}\0w");
    let answer = redis.command_args(&["HSET", "pagewire:retained", &key, &record.to_string()]);
    assert_eq!(answer.as_deref(), Some(":1\r\n"));
}

#[tokio::test]
async fn a_retained_value_with_an_invalid_name_in_redis_is_left_out_and_reported_once() {
    // A name with a newline would forge a line of the listing; one read
    // when the node joins and one found by the listing are both left out,
    // each reported once on the Monitor, escaped.
    let redis = Redis::start().await;
    let forged = |name: &str| format!("{name}\nforged write age=0s expires=never \"pwned\"");
    put_retained_in_redis(&redis, &forged("early"), "x");
    let a = node(&redis);
    a.d.wait_for_stdout(|l| l.contains("early\\nforged") && l.contains("invalid name"));
    put_retained_in_redis(&redis, &forged("late"), "x");
    ok(&a, &["write", "--retain", "status", "fine"]);
    for _ in 0..2 {
        let listed = ok(&a, &["retained"]).stdout;
        assert!(
            listed.lines().all(|l| !l.starts_with("forged")),
            "a forged line:\n{listed}"
        );
        assert_eq!(listed.lines().count(), 1, "{listed}");
        assert!(listed.starts_with("status write"), "{listed}");
    }
    // The listing's Monitor line comes after its report.
    eventually("both listings in the Monitor", TIMEOUT, || {
        let lines = a.d.process().stdout_lines();
        lines
            .iter()
            .filter(|l| l.contains("ws retained -> ok"))
            .count()
            == 2
    })
    .await;
    let lines = a.d.process().stdout_lines();
    for name in ["early", "late"] {
        let reports: Vec<&String> = lines
            .iter()
            .filter(|l| l.contains(&format!("{name}\\nforged")))
            .collect();
        assert_eq!(reports.len(), 1, "{lines:#?}");
        assert!(reports[0].contains("invalid name"), "{reports:?}");
    }
    assert!(lines.iter().all(|l| !l.starts_with("forged")), "{lines:#?}");
}

#[tokio::test]
async fn retained_values_come_back_after_redis_restarts_from_its_snapshot() {
    // Redis restarted (a new epoch): every node loads the values again,
    // here from the snapshot, so a value forgotten since the save is back
    // and one kept since is gone, on every node alike.
    let mut redis = Redis::start().await;
    let (a, b) = (node(&redis), node(&redis));
    ok(&a, &["write", "--retain", "saved", "in the snapshot"]);
    assert_eq!(redis.command("SAVE").as_deref(), Some("+OK\r\n"));
    ok(&a, &["write", "--retain", "later", "not saved"]);
    let mut early = Page::open(&b.d).await;
    let frames = register(&mut early, "later").await;
    assert_eq!(shown(&frames), ["write:not saved"], "{frames:?}");
    redis.kill();
    redis.run().await;
    for n in [&a, &b] {
        // Pages are refused (503) while the new epoch's fence holds the
        // indexes back: those attempts are tried again.
        let origin = format!("http://{}", n.d.addr);
        let frames = until(
            "the node to load the snapshot's values",
            TIMEOUT,
            || async {
                let mut page = Page::open_with_origin(&n.d, Some(&origin)).await.ok()?;
                if !shown(&register(&mut page, "later").await).is_empty() {
                    return None;
                }
                Some(register(&mut page, "saved").await)
            },
        )
        .await;
        assert_eq!(
            shown(&frames),
            ["write:in the snapshot"],
            "on {}: {frames:?}",
            n.id
        );
        ok(n, &["retained"]).assert_stdout_contains("saved write");
    }
}

#[tokio::test]
async fn every_node_lists_what_a_page_reports_of_its_visibility() {
    let redis = Redis::start().await;
    let (a, b) = (node(&redis), node(&redis));
    let mut page = Page::open(&b.d).await;
    let prefix = format!("{} ", page.index);
    wait_for_listing(&a, |l| {
        l.lines()
            .any(|line| line.starts_with(&prefix) && line.contains(" visibility=- "))
    })
    .await;
    page.send("ws visibility hidden").await;
    assert_eq!(page.recv().await["type"], "reply");
    let listing = wait_for_listing(&a, |l| {
        l.lines()
            .any(|line| line.starts_with(&prefix) && line.contains(" visibility=hidden "))
    })
    .await;
    assert!(listing.contains(" idle="), "{listing}");
}
