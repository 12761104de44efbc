//! The `ws` command from every angle, against the real daemon with real
//! WebSocket clients and the real CLI.

use tokio_tungstenite::tungstenite::Message;

use crate::page::{listing, wait_for_count, Page};
use crate::support::Daemon;

#[tokio::test]
async fn write_by_index_name_and_star() {
    let d = Daemon::start::<&str>(&[]);
    let mut a = Page::with_names(&d, &["status"]).await;
    let mut b = Page::with_names(&d, &["clock"]).await;

    let out = d.cli(&["ws", "write", "status", "VPN up"]);
    out.assert_exit_code(0)
        .assert_stdout_contains("sent to 1 connection");
    let f = a.recv().await;
    assert_eq!(
        (f["type"].as_str(), f["name"].as_str(), f["text"].as_str()),
        (Some("write"), Some("status"), Some("VPN up"))
    );

    d.cli(&["ws", "write", &b.index.to_string(), "by index"])
        .assert_exit_code(0);
    let f = b.recv().await;
    assert_eq!(f["text"], "by index");
    assert!(
        f.get("name").is_none(),
        "a write by index names no element: {f}"
    );

    d.cli(&["ws", "write", "*", "<b>all</b>"])
        .assert_exit_code(0)
        .assert_stdout_contains("sent to 2 connections");
    assert_eq!(a.recv().await["text"], "<b>all</b>");
    assert_eq!(b.recv().await["text"], "<b>all</b>");
}

#[tokio::test]
async fn one_name_on_three_connections_and_two_names_on_one() {
    let d = Daemon::start::<&str>(&[]);
    let mut tabs = Vec::new();
    for _ in 0..3 {
        tabs.push(Page::with_names(&d, &["status"]).await);
    }
    let mut two = Page::with_names(&d, &["left", "right"]).await;

    d.cli(&["ws", "write", "status", "x"])
        .assert_stdout_contains("sent to 3 connections");
    for t in &mut tabs {
        assert_eq!(t.recv().await["text"], "x");
    }
    d.cli(&["ws", "write", "right", "R"])
        .assert_stdout_contains("sent to 1 connection");
    d.cli(&["ws", "write", "left", "L"])
        .assert_stdout_contains("sent to 1 connection");
    let r = two.recv().await;
    assert_eq!(
        (r["name"].as_str(), r["text"].as_str()),
        (Some("right"), Some("R"))
    );
    let l = two.recv().await;
    assert_eq!(
        (l["name"].as_str(), l["text"].as_str()),
        (Some("left"), Some("L"))
    );
}

#[tokio::test]
async fn exec_sends_function_and_argument() {
    let d = Daemon::start::<&str>(&[]);
    let mut p = Page::with_names(&d, &["status"]).await;
    d.cli(&["ws", "exec", "status", "setLevel", "42"])
        .assert_exit_code(0)
        .assert_stdout_contains("sent to 1 connection");
    let f = p.recv().await;
    assert_eq!(
        (f["type"].as_str(), f["func"].as_str(), f["arg"].as_str()),
        (Some("exec"), Some("setLevel"), Some("42"))
    );
}

#[tokio::test]
async fn close_one_then_all() {
    let d = Daemon::start::<&str>(&[]);
    let a = Page::with_names(&d, &["a"]).await;
    let b = Page::with_names(&d, &["b"]).await;
    let c = Page::with_names(&d, &["c"]).await;
    d.cli(&["ws", "close", &a.index.to_string()])
        .assert_exit_code(0)
        .assert_stdout_contains("closed 1 connection");
    let closed = a.closed().await;
    assert_eq!(closed.code, Some(1000));
    assert_eq!(closed.reason, "closed by operator");
    assert_eq!(listing(&d).len(), 2);

    d.cli(&["ws", "close"])
        .assert_exit_code(0)
        .assert_stdout_contains("closed 2 connections");
    assert_eq!(b.closed().await.code, Some(1000));
    assert_eq!(c.closed().await.code, Some(1000));
    wait_for_count(&d, 0).await;
    d.cli(&["ws"])
        .assert_stdout_contains("no WebSocket connections");
}

#[tokio::test]
async fn listing_shows_every_field() {
    let d = Daemon::start::<&str>(&[]);
    let mut p = Page::with_names(&d, &["status", "clock"]).await;
    d.cli(&["ws", "write", "status", "hello"]);
    p.recv().await;
    let lines = listing(&d);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let line = &lines[0];
    assert!(line.starts_with(&format!("{} ", p.index)), "{line}");
    for want in [
        "names=status,clock",
        "remote=127.0.0.1:",
        "age=",
        "in=2msg/",
        "out=",
        "page=http://",
    ] {
        assert!(line.contains(want), "{want} missing in {line}");
    }
    assert!(line.ends_with("/test.html"), "{line}");
}

#[tokio::test]
async fn indexes_are_never_reused() {
    let d = Daemon::start::<&str>(&[]);
    let a = Page::open(&d).await;
    let first = a.index;
    a.close().await;
    wait_for_count(&d, 0).await;
    let b = Page::open(&d).await;
    assert!(b.index > first, "new index {} after {}", b.index, first);
    // The stale index is an error, not the new page.
    let out = d.cli(&["ws", "write", &first.to_string(), "stale"]);
    out.assert_exit_code(1)
        .assert_stderr_contains(&format!("no connection with index {first}"));
}

#[tokio::test]
async fn write_with_nobody_listening_goes_to_the_console() {
    let d = Daemon::start::<&str>(&[]);
    let out = d.cli(&["ws", "write", "status", "console text 123"]);
    out.assert_exit_code(0)
        .assert_stdout_contains("printed on the console");
    d.wait_for_stdout(|l| l == "console text 123");

    // With a page connected but not under that name, the same.
    let _p = Page::with_names(&d, &["other"]).await;
    let out = d.cli(&["ws", "write", "status", "second text"]);
    out.assert_exit_code(0)
        .assert_stdout_contains("no connection named 'status'");
    d.wait_for_stdout(|l| l == "second text");
}

#[tokio::test]
async fn a_page_may_only_register() {
    let d = Daemon::start::<&str>(&[]);
    let mut victim = Page::with_names(&d, &["status"]).await;
    let mut attacker = Page::open(&d).await;
    attacker.send("ws write status \"pwned\"").await;
    let e = attacker.recv().await;
    assert_eq!(e["type"], "error", "{e}");
    assert!(
        e["message"].as_str().unwrap_or("").contains("operator"),
        "{e}"
    );
    for line in ["ws close", "ws", "set notify status", "ws exec * alert 1"] {
        attacker.send(line).await;
        assert_eq!(attacker.recv().await["type"], "error", "{line}");
    }
    // The victim got nothing: the next thing it sees is the operator's write.
    d.cli(&["ws", "write", "status", "operator"]);
    assert_eq!(victim.recv().await["text"], "operator");
    wait_for_count(&d, 2).await;
}

#[tokio::test]
async fn register_from_a_non_page_door_is_an_error() {
    let d = Daemon::start::<&str>(&[]);
    d.cli(&["ws", "register", "status"])
        .assert_exit_code(1)
        .assert_stderr_contains("only a page can register");
}

#[tokio::test]
async fn bad_commands_are_one_line_errors() {
    let d = Daemon::start::<&str>(&[]);
    for (args, want) in [
        (&["ws", "bogus"][..], "unknown subcommand"),
        (&["ws", "write", "status"][..], "missing TEXT"),
        (&["ws", "write", "0", "x"][..], "positive"),
        (
            &["ws", "write", "99999999999999999999999", "x"][..],
            "too large",
        ),
        (
            &["ws", "close", "4242"][..],
            "no connection with index 4242",
        ),
    ] {
        let out = d.cli(args);
        out.assert_exit_code(1).assert_stderr_contains(want);
        assert_eq!(
            out.stderr.trim().lines().count(),
            1,
            "{args:?}: {}",
            out.stderr
        );
    }
    // A word the CLI does not know is the CLI's usage error (2), not the
    // daemon's (1).
    d.cli(&["frobnicate"]).assert_exit_code(2);
}

#[tokio::test]
async fn hostile_frames_get_their_close_codes_and_others_are_unharmed() {
    let d = Daemon::start::<&str>(&[]);
    let mut good = Page::with_names(&d, &["status"]).await;

    let mut p = Page::open(&d).await;
    p.send_raw(Message::binary(vec![1u8, 2, 3])).await;
    assert_eq!(p.closed().await.code, Some(1003));

    let mut p = Page::open(&d).await;
    p.send_raw(Message::text("x".repeat(70 * 1024))).await;
    assert_eq!(p.closed().await.code, Some(1009));

    d.cli(&["ws", "write", "status", "still here"])
        .assert_exit_code(0);
    assert_eq!(good.recv().await["text"], "still here");
    wait_for_count(&d, 1).await;
}

#[tokio::test]
async fn invalid_utf8_closes_with_1007() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let d = Daemon::start::<&str>(&[]);
    let mut s = tokio::net::TcpStream::connect(d.addr)
        .await
        .expect("connect");
    let req = format!(
        "GET /ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        d.addr
    );
    s.write_all(req.as_bytes()).await.expect("write");
    // A masked text frame holding 0xff (never valid UTF-8), mask 0.
    s.write_all(&[0x81, 0x81, 0, 0, 0, 0, 0xff])
        .await
        .expect("write");
    let mut got = Vec::new();
    let _ = tokio::time::timeout(crate::support::TIMEOUT, s.read_to_end(&mut got)).await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 101"), "{text}");
    // The close frame: 0x88, length, then the code 1007 (0x03ef).
    let close = got
        .windows(4)
        .position(|w| w[0] == 0x88 && w[2] == 0x03 && w[3] == 0xef);
    assert!(close.is_some(), "no close 1007 in {got:?}");
}

#[tokio::test]
async fn foreign_origin_cannot_open_a_websocket() {
    let d = Daemon::start::<&str>(&[]);
    let err = Page::open_with_origin(&d, Some("http://evil.example"))
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("403"), "{err}");
    // No Origin at all (a script, not a browser) is fine.
    Page::open_with_origin(&d, None)
        .await
        .expect("no origin accepted");
    d.wait_for_stdout(|l| l.contains("refused WebSocket") && l.contains("evil.example"));
}

#[tokio::test]
async fn notify_sends_monitor_lines_to_pages_until_off() {
    let d = Daemon::start::<&str>(&[]);
    let mut p = Page::with_names(&d, &["status"]).await;
    d.cli(&["set", "notify", "status"])
        .assert_exit_code(0)
        .assert_stdout_contains("notify on");
    // The next Monitor event: another page opening.
    let other = Page::open(&d).await;
    let opened = format!("ws {} opened", other.index);
    loop {
        let f = p.recv_type("write").await;
        assert_eq!(f["name"], "status", "{f}");
        if f["text"].as_str().unwrap_or("").contains(&opened) {
            break;
        }
    }
    d.cli(&["set", "notify", "off"])
        .assert_exit_code(0)
        .assert_stdout_contains("notify off");
    let ghost = Page::open(&d).await;
    let ghost_opened = format!("ws {} opened", ghost.index);
    d.cli(&["ws", "write", "status", "END"]).assert_exit_code(0);
    loop {
        let f = p.recv_type("write").await;
        let text = f["text"].as_str().unwrap_or("").to_string();
        assert!(!text.contains(&ghost_opened), "notify still on: {text}");
        if text == "END" {
            break;
        }
    }
}
