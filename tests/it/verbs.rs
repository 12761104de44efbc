//! The verbs that wait for pages (`ws call`, `ws read`, `--wait`, `ws
//! wait`, `/probe`) and those that only look (`ws who`, `--dry-run`),
//! against the real daemon with raw WebSocket pages that answer, or not,
//! as the test tells them.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::page::{listing, Page};
use crate::support::{eventually, until, Daemon, Output, TIMEOUT};

/// Answers the next frame of `kind` (`call`, `read`) on `page` with
/// `fields` added to `{"type":"result","id":ID}`; returns that frame.
pub(crate) async fn answer(page: &mut Page, kind: &str, fields: Value) -> Value {
    let asked = page.recv_type(kind).await;
    let mut result = json!({"type": "result", "id": asked["id"]});
    for (k, v) in fields.as_object().expect("fields") {
        result[k] = v.clone();
    }
    page.send(&result.to_string()).await;
    asked
}

/// The lines of `out`'s stdout.
fn lines(out: &Output) -> Vec<&str> {
    out.stdout.lines().collect()
}

#[tokio::test]
async fn call_prints_each_pages_result_and_fails_for_one_that_never_answers() {
    let d = Daemon::start::<&str>(&[]);
    let mut a = Page::with_names(&d, &["kiosk"]).await;
    let mut b = Page::with_names(&d, &["kiosk"]).await;
    let mut mute = Page::with_names(&d, &["kiosk"]).await;
    let mut other = Page::with_names(&d, &["clock"]).await;

    let cli = d.cli_spawn(&["ws", "call", "--timeout", "2s", "kiosk", "getState", "x y"]);
    let call = answer(&mut a, "call", json!({"value": {"up": true, "n": [1, 2]}})).await;
    assert_eq!(
        (
            call["func"].as_str(),
            call["arg"].as_str(),
            call["name"].as_str()
        ),
        (Some("getState"), Some("x y"), Some("kiosk")),
        "{call}"
    );
    let id = call["id"].clone();
    // The same id went to every target page: one encoding for all.
    let to_b = b.recv_type("call").await;
    assert_eq!(to_b["id"], id);
    assert_eq!(mute.recv_type("call").await["id"], id);
    // Neither a page that was not asked, nor an asked page for another, can
    // answer: `other` is not a target, and `b` answers once.
    other
        .send(&json!({"type": "result", "id": id, "value": "forged"}).to_string())
        .await;
    b.send(&json!({"type": "result", "id": id, "error": "threw: boom\nfake line"}).to_string())
        .await;
    b.send(&json!({"type": "result", "id": id, "value": "second"}).to_string())
        .await;

    let out = cli.wait_exit();
    out.assert_exit_code(1);
    assert_eq!(
        lines(&out),
        [
            format!("{} {{\"n\":[1,2],\"up\":true}}", a.index),
            format!("{} error: threw: boom\\nfake line", b.index),
            format!("{} error: timed out", mute.index),
        ],
        "{out}"
    );
    assert!(out.stderr.is_empty(), "{out}");
    drop(mute);
}

#[tokio::test]
async fn call_over_http_gives_a_json_array_of_results() {
    let d = Daemon::start::<&str>(&[]);
    let mut a = Page::with_names(&d, &["kiosk"]).await;
    let mut b = Page::with_names(&d, &["kiosk"]).await;
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let url = d.url("/api/command");

    let all_answer = async {
        answer(&mut a, "call", json!({"value": 42})).await;
        answer(&mut b, "call", json!({"value": null})).await;
    };
    let request = client.post(&url).body("ws call kiosk version").send();
    let (resp, ()) = tokio::join!(request, all_answer);
    let resp = resp.expect("POST");
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.expect("JSON");
    assert_eq!(body["ok"], true, "{body}");
    assert_eq!(
        body["results"],
        json!([
            {"index": a.index, "ok": true, "value": 42},
            {"index": b.index, "ok": true, "value": null},
        ]),
        "{body}"
    );
    assert_eq!(body["output"], format!("{} 42\n{} null", a.index, b.index));

    // One page that never answers: the command ran, a page failed it.
    let one_answers = answer(&mut a, "call", json!({"error": "no such function"}));
    let request = client
        .post(&url)
        .body("ws call --timeout 300ms kiosk nope")
        .send();
    let (resp, _) = tokio::join!(request, one_answers);
    let resp = resp.expect("POST");
    assert_eq!(resp.status(), 502);
    let body: Value = resp.json().await.expect("JSON");
    assert_eq!(body["ok"], false, "{body}");
    assert_eq!(
        body["results"],
        json!([
            {"index": a.index, "ok": false, "error": "no such function"},
            {"index": b.index, "ok": false, "error": "timed out"},
        ]),
        "{body}"
    );

    // Nobody to ask: an error, with no results.
    let resp = client
        .post(&url)
        .body("ws call nobody f")
        .send()
        .await
        .expect("POST");
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.expect("JSON");
    assert_eq!(
        body["output"], "ws call: no connection named 'nobody'",
        "{body}"
    );
    assert_eq!(body["results"], json!([]), "{body}");
}

#[tokio::test]
async fn call_with_no_target_page_and_an_unknown_index_fail() {
    let d = Daemon::start::<&str>(&[]);
    let out = d.cli(&["ws", "call", "*", "f"]);
    out.assert_exit_code(1)
        .assert_stderr_contains("ws call: no WebSocket connections");
    let _p = Page::with_names(&d, &["kiosk"]).await;
    d.cli(&["ws", "call", "nobody", "f"])
        .assert_exit_code(1)
        .assert_stderr_contains("ws call: no connection named 'nobody'");
    d.cli(&["ws", "call", "99", "f"])
        .assert_exit_code(1)
        .assert_stderr_contains("ws call: no connection with index 99");
}

#[tokio::test]
async fn answers_are_bounded_and_malformed_frames_refused() {
    let d = Daemon::start::<&str>(&[]);
    let mut p = Page::with_names(&d, &["kiosk"]).await;

    let cli = d.cli_spawn(&["ws", "call", "kiosk", "big"]);
    answer(&mut p, "call", json!({"value": "v".repeat(5000)})).await;
    let out = cli.wait_exit();
    out.assert_exit_code(1);
    assert_eq!(
        lines(&out),
        [format!(
            "{} error: result too large (5002 bytes of JSON; at most 4096)",
            p.index
        )]
    );

    // Not JSON: an error frame, and the connection stays.
    p.send("{\"type\":\"result\",").await;
    let e = p.recv_type("error").await;
    assert!(
        e["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("malformed frame: ")),
        "{e}"
    );
    // An unknown type is ignored: later clients may send more.
    p.send(r#"{"type":"visibility","state":"hidden"}"#).await;
    p.send("ws register more").await;
    assert_eq!(p.recv().await["type"], "reply");
}

#[tokio::test]
async fn write_and_exec_wait_for_every_page_to_confirm() {
    let d = Daemon::start::<&str>(&[]);
    let mut a = Page::with_names(&d, &["status"]).await;
    let mut b = Page::with_names(&d, &["status"]).await;

    let cli = d.cli_spawn(&["ws", "write", "--wait", "status", "VPN up"]);
    for p in [&mut a, &mut b] {
        let w = p.recv_type("write").await;
        assert_eq!(w["text"], "VPN up");
        p.send(&json!({"type": "ack", "id": w["ack"]}).to_string())
            .await;
    }
    let out = cli.wait_exit();
    out.assert_exit_code(0);
    assert_eq!(lines(&out), ["sent to 2 connections; all confirmed"]);

    // `b` stays silent: it is named, and the command fails.
    let cli = d.cli_spawn(&[
        "ws",
        "exec",
        "--wait",
        "--timeout",
        "500ms",
        "status",
        "f",
        "1",
    ]);
    let e = a.recv_type("exec").await;
    assert_eq!(
        (e["func"].as_str(), e["arg"].as_str()),
        (Some("f"), Some("1"))
    );
    a.send(&json!({"type": "ack", "id": e["ack"]}).to_string())
        .await;
    assert!(b.recv_type("exec").await["ack"].is_u64());
    let out = cli.wait_exit();
    out.assert_exit_code(1);
    assert_eq!(
        lines(&out),
        [format!(
            "sent to 2 connections; 1 confirmed; not confirmed within 500ms: {} (timed out)",
            b.index
        )],
        "{out}"
    );

    // Without --wait nothing asks for a confirmation.
    d.cli(&["ws", "write", "status", "plain"])
        .assert_exit_code(0);
    let w = a.recv_type("write").await;
    assert!(w.get("ack").is_none(), "{w}");

    // Nobody to confirm: the text goes to the console, and it fails.
    let out = d.cli(&["ws", "write", "--wait", "nobody", "lost"]);
    out.assert_exit_code(1)
        .assert_stderr_contains("ws write: no connection named 'nobody'; printed on the console");
}

#[tokio::test]
async fn read_prints_what_each_page_shows_escaped() {
    let d = Daemon::start::<&str>(&[]);
    let mut a = Page::with_names(&d, &["status"]).await;
    let mut b = Page::with_names(&d, &["status"]).await;

    let cli = d.cli_spawn(&["ws", "read", "status"]);
    let r = answer(&mut a, "read", json!({"value": "VPN up"})).await;
    assert_eq!(r["name"], "status");
    answer(
        &mut b,
        "read",
        json!({"value": format!("line\n2 forged\u{1b}[2J{}", "x".repeat(1200))}),
    )
    .await;
    let out = cli.wait_exit();
    out.assert_exit_code(0);
    let long = format!(
        "{} line\\n2 forged\\u{{1b}}[2J{}…",
        b.index,
        "x".repeat(1000 - "line\n2 forged\u{1b}[2J".chars().count())
    );
    assert_eq!(lines(&out), [format!("{} VPN up", a.index), long], "{out}");

    // An element of its own choosing, by index.
    let cli = d.cli_spawn(&["ws", "read", &a.index.to_string(), "clock"]);
    let r = answer(&mut a, "read", json!({"error": "no element clock"})).await;
    assert_eq!(r["name"], "clock");
    let out = cli.wait_exit();
    out.assert_exit_code(1);
    assert_eq!(
        lines(&out),
        [format!("{} error: no element clock", a.index)]
    );
}

#[tokio::test]
async fn wait_returns_when_enough_pages_registered_and_fails_at_its_timeout() {
    let d = Daemon::start::<&str>(&[]);
    let cli = d.cli_spawn(&["ws", "wait", "kiosk", "--count", "2", "--timeout", "10s"]);
    let _one = Page::with_names(&d, &["kiosk"]).await;
    let _two = Page::with_names(&d, &["kiosk"]).await;
    let out = cli.wait_exit();
    out.assert_exit_code(0);
    assert_eq!(lines(&out), ["2 connections registered 'kiosk'"]);

    let started = Instant::now();
    let out = d.cli(&["ws", "wait", "kiosk", "--count", "3", "--timeout", "300ms"]);
    out.assert_exit_code(1);
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(
        lines(&out),
        ["timed out after 300ms: 2 connections registered 'kiosk', 3 wanted"]
    );
}

#[tokio::test]
async fn probe_answers_200_with_the_count_or_503() {
    let d = Daemon::start::<&str>(&[]);
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let probe = |name: &str| client.get(d.url(&format!("/probe/{name}"))).send();

    let resp = probe("kiosk").await.expect("GET");
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.text().await.expect("body"), "0\n");
    let _a = Page::with_names(&d, &["kiosk"]).await;
    let _b = Page::with_names(&d, &["kiosk"]).await;
    let resp = probe("kiosk").await.expect("GET");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.expect("body"), "2\n");
    let resp = probe("1bad").await.expect("GET");
    assert_eq!(resp.status(), 400);
    // The same Host check as every route.
    let resp = client
        .get(d.url("/probe/kiosk"))
        .header("host", "evil.example")
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.status(), 403);
}

#[tokio::test]
async fn metrics_count_the_configured_names_only() {
    let d = Daemon::builder()
        .config("[metrics]\nnames = [\"kiosk\", \"status\"]\n")
        .start();
    let _a = Page::with_names(&d, &["kiosk", "other"]).await;
    let metrics = d.metrics().await;
    assert!(
        metrics.contains("pagewire_named_connections{name=\"kiosk\"} 1\n"),
        "{metrics}"
    );
    assert!(metrics.contains("pagewire_named_connections{name=\"status\"} 0\n"));
    assert!(!metrics.contains("name=\"other\""));
    assert!(metrics.contains("pagewire_asks_in_flight 0\n"));

    let bad = Daemon::builder()
        .config("[metrics]\nnames = [\"a b\"]\n")
        .spawn()
        .wait_exit();
    bad.assert_exit_code(1)
        .assert_stderr_contains("metrics.names: invalid name 'a b'");
}

#[tokio::test]
async fn who_and_dry_run_list_the_targets_and_send_nothing() {
    let d = Daemon::start::<&str>(&[]);
    let mut p = Page::with_names(&d, &["status"]).await;
    let _other = Page::with_names(&d, &["clock"]).await;

    let out = d.cli(&["ws", "who", "status"]);
    out.assert_exit_code(0);
    let who = lines(&out);
    assert_eq!(who.len(), 1, "{out}");
    assert!(
        who[0].starts_with(&format!("{} names=status ", p.index)),
        "{out}"
    );

    let dry_runs: &[&[&str]] = &[
        &["ws", "write", "--dry-run", "status", "no"],
        &["ws", "write", "--dry-run", "--wait", "status", "no"],
        &["ws", "exec", "--dry-run", "status", "f"],
        &["ws", "call", "--dry-run", "status", "f"],
        &["ws", "read", "--dry-run", "status"],
        &["ws", "close", "--dry-run", "status"],
        &["run", "--dry-run", "--to", "status", "deploy"],
    ];
    for argv in dry_runs {
        let out = d.cli(argv);
        out.assert_exit_code(0);
        let got = lines(&out);
        let what = if argv[0] == "run" {
            "run".to_string()
        } else {
            format!("ws {}", argv[1])
        };
        assert_eq!(
            got[0],
            format!("dry run: {what} would reach 1 connection; nothing was sent"),
            "{out}"
        );
        assert_eq!(got[1..], who[..], "{out}");
    }
    let out = d.cli(&["ws", "close", "--dry-run"]);
    assert!(out
        .stdout
        .starts_with("dry run: ws close would reach 2 connections;"));
    d.cli(&["ws", "who", "nobody"])
        .assert_exit_code(0)
        .assert_stdout_contains("no connection named 'nobody'");
    d.cli(&["ws", "who", "99"])
        .assert_exit_code(1)
        .assert_stderr_contains("no connection with index 99");

    // Nothing was sent: the first frame the page gets is a later write.
    d.cli(&["ws", "write", "status", "later"])
        .assert_exit_code(0);
    let f = p.recv().await;
    assert_eq!(
        (f["type"].as_str(), f["text"].as_str()),
        (Some("write"), Some("later"))
    );
}

#[tokio::test]
async fn a_page_granted_ws_call_gets_the_results_in_its_reply() {
    let d = Daemon::builder()
        .config("[pages]\nallow = [\"ws register\", \"ws call\"]\n")
        .start();
    let mut asker = Page::with_names(&d, &["panel"]).await;
    let mut kiosk = Page::with_names(&d, &["kiosk"]).await;

    asker.send("ws call kiosk getState").await;
    answer(&mut kiosk, "call", json!({"value": [1, "two"]})).await;
    let reply = asker.recv_type("reply").await;
    assert_eq!(
        reply,
        json!({
            "type": "reply",
            "ok": true,
            "output": format!("{} [1,\"two\"]", kiosk.index),
            "results": [{"index": kiosk.index, "ok": true, "value": [1, "two"]}],
        })
    );

    // A page that calls itself among others answers its own call while
    // its command runs: its socket is still read.
    asker.send("ws call --timeout 10s * getState").await;
    answer(&mut kiosk, "call", json!({"value": "kiosk"})).await;
    answer(&mut asker, "call", json!({"value": "panel"})).await;
    let reply = asker.recv_type("reply").await;
    assert_eq!(reply["ok"], true, "{reply}");
    assert_eq!(
        reply["results"],
        json!([
            {"index": asker.index, "ok": true, "value": "panel"},
            {"index": kiosk.index, "ok": true, "value": "kiosk"},
        ]),
        "{reply}"
    );

    // A page that failed it: an `error` frame, with the results too.
    asker.send("ws call kiosk nope").await;
    answer(&mut kiosk, "call", json!({"error": "no such function"})).await;
    let error = asker.recv_type("error").await;
    assert_eq!(
        error["results"],
        json!([{"index": kiosk.index, "ok": false, "error": "no such function"}]),
        "{error}"
    );
}

/// Waits until index `index` is no longer in the `ws` listing.
async fn gone_from_listing(d: &Daemon, index: u64) {
    eventually("the page is gone", TIMEOUT, || {
        !listing(d)
            .iter()
            .any(|l| l.starts_with(&format!("{index} ")))
    })
    .await;
}

#[tokio::test]
async fn wait_sees_a_page_that_comes_back_with_its_name() {
    let d = Daemon::start::<&str>(&[]);
    let page = Page::with_names(&d, &["kiosk"]).await;
    let (index, token) = (page.index, page.resume_token());
    // The network drops (no close frame): the index and its name are
    // parked for the page to come back.
    drop(page);
    gone_from_listing(&d, index).await;

    // Nothing tells when the daemon has started waiting; one that started
    // after the page came back would pass without testing the wake, never
    // fail.
    let started = Instant::now();
    let cli = d.cli_spawn(&["ws", "wait", "kiosk", "--timeout", "20s"]);
    let _ = listing(&d);
    let back = Page::open_resuming(&d, &token).await;
    assert_eq!((back.index, &back.hello["resumed"]), (index, &json!(true)));
    let out = cli.wait_exit();
    out.assert_exit_code(0);
    assert_eq!(lines(&out), ["1 connection registered 'kiosk'"]);
    assert!(started.elapsed() < Duration::from_secs(15), "{out}");
}

#[tokio::test]
async fn an_ask_to_a_page_that_closes_ends_at_once() {
    let d = Daemon::start::<&str>(&[]);

    // The page closes on purpose without answering.
    let mut page = Page::with_names(&d, &["kiosk"]).await;
    let index = page.index;
    let started = Instant::now();
    let cli = d.cli_spawn(&["ws", "call", "--timeout", "60s", "kiosk", "f"]);
    page.recv_type("call").await;
    page.close().await;
    let out = cli.wait_exit();
    out.assert_exit_code(1);
    assert_eq!(
        lines(&out),
        [format!("{index} error: closed before answering")]
    );
    assert!(started.elapsed() < Duration::from_secs(20), "{out}");

    // The network drops and the page comes back to its index: a new
    // connection, which was never asked and is not waited for.
    let mut page = Page::with_names(&d, &["kiosk"]).await;
    let (index, token) = (page.index, page.resume_token());
    let started = Instant::now();
    let cli = d.cli_spawn(&["ws", "call", "--timeout", "60s", "kiosk", "f"]);
    page.recv_type("call").await;
    drop(page);
    gone_from_listing(&d, index).await;
    let back = Page::open_resuming(&d, &token).await;
    assert_eq!(back.index, index);
    let out = cli.wait_exit();
    out.assert_exit_code(1);
    assert_eq!(
        lines(&out),
        [format!("{index} error: closed before answering")]
    );
    assert!(started.elapsed() < Duration::from_secs(20), "{out}");
}

/// A page that never reads, with a small receive buffer: its socket fills
/// after a few frames, and then its queue in the daemon grows.
async fn open_not_reading(d: &Daemon) -> Page {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::http::HeaderValue;
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let stream = socket.connect(d.addr).await.expect("connect");
    let mut req = format!("ws://{}/ws?page=/test.html", d.addr)
        .into_client_request()
        .expect("request");
    let origin = format!("http://{}", d.addr);
    req.headers_mut()
        .insert("origin", HeaderValue::from_str(&origin).expect("origin"));
    let (ws, _) =
        tokio_tungstenite::client_async(req, tokio_tungstenite::MaybeTlsStream::Plain(stream))
            .await
            .expect("upgrade accepted");
    Page::from_stream(ws).await
}

/// The frames the daemon wrote whole to page `index`, from `ws`.
async fn frames_out(d: &Daemon, index: u64) -> u64 {
    let (ok, listing) = d.command("ws").await;
    assert!(ok, "{listing}");
    let row = listing
        .lines()
        .find(|l| l.starts_with(&format!("{index} ")))
        .unwrap_or_else(|| panic!("page {index} listed: {listing}"));
    let out = row.split(" out=").nth(1).expect("out=");
    out.split("msg/")
        .next()
        .expect("msg/")
        .parse()
        .expect("a count")
}

/// Fills the queue of `stalled` (a page that never reads, registered as
/// `kiosk`) with frames of a fifth of `limit` until three of them wait in
/// it: more than two fifths of `limit` queued, at most three.
async fn fill_queue(d: &Daemon, stalled: u64, limit: usize) {
    let chunk = "x".repeat(limit / 5);
    let written = frames_out(d, stalled).await;
    let mut sent = 0;
    loop {
        let (ok, out) = d.command(&format!("ws write {stalled} {chunk}")).await;
        assert!(ok && out.starts_with("sent to 1 connection"), "{out}");
        sent += 1;
        let queued = sent - (frames_out(d, stalled).await - written);
        if queued >= 3 {
            return;
        }
        assert!(sent < 5000, "the stalled page's socket never filled");
    }
}

/// Opens a page that never reads and registers `kiosk` on it. Returns once
/// the daemon counts the two frames the page read (hello and reply): the
/// count goes up after the write returns, so the page may see a frame
/// before the listing does, and [`fill_queue`] needs a settled baseline.
async fn stalled_kiosk(d: &Daemon) -> Page {
    let mut stalled = open_not_reading(d).await;
    stalled.send("ws register kiosk").await;
    assert_eq!(stalled.recv().await["type"], "reply");
    let index = stalled.index;
    until("the hello and the reply counted", TIMEOUT, || async move {
        (frames_out(d, index).await == 2).then_some(())
    })
    .await;
    stalled
}

// Two threads: the reader answers while the CLI blocks this one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_closed_as_a_slow_consumer_fails_the_ask_and_is_named() {
    // Queues of 100,000 bytes: a question of 60,000 fits an empty one, and
    // overflows one where more than 40,000 wait.
    let limit = 100_000;
    let d = Daemon::builder()
        .config(&format!("[limits]\noutbox_bytes = {limit}\n"))
        .start();
    let mut reader = Page::with_names(&d, &["kiosk"]).await;
    let reader_index = reader.index;
    let question = "y".repeat(limit * 3 / 5);

    let stalled = stalled_kiosk(&d).await;
    fill_queue(&d, stalled.index, limit).await;
    let answering = tokio::spawn(async move {
        answer(&mut reader, "call", json!({"value": 1})).await;
        reader
    });
    let out = d.cli(&["ws", "call", "--timeout", "10s", "kiosk", "f", &question]);
    out.assert_exit_code(1);
    assert_eq!(
        lines(&out),
        [
            format!("{reader_index} 1"),
            format!("{} error: closed as a slow consumer", stalled.index),
        ],
        "{out}"
    );
    let mut reader = answering.await.expect("the reader answered");

    // The same for a write that waits for confirmations.
    let stalled = stalled_kiosk(&d).await;
    fill_queue(&d, stalled.index, limit).await;
    let confirming = tokio::spawn(async move {
        let w = reader.recv_type("write").await;
        reader
            .send(&json!({"type": "ack", "id": w["ack"]}).to_string())
            .await;
    });
    let out = d.cli(&[
        "ws",
        "write",
        "--wait",
        "--timeout",
        "10s",
        "kiosk",
        &question,
    ]);
    out.assert_exit_code(1);
    assert_eq!(
        lines(&out),
        [format!(
            "sent to 1 connection (1 closed as slow consumers); 1 confirmed; \
             not confirmed within 10s: {} (closed as a slow consumer)",
            stalled.index
        )],
        "{out}"
    );
    confirming.await.expect("the reader confirmed");
}
