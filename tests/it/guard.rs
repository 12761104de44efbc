//! What keeps a daemon safe to expose over HTTP, against the real daemon:
//! the Host check on every route (DNS rebinding), no side effects from a
//! GET that cannot show where it comes from nor from a foreign Referer,
//! bounded request bodies and a per-address share of the connections, and
//! static files that are regular files outside dot-directories.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::page::Page;
use crate::secure::{
    config_file, connect_from, exchange, lo, own_origin, post_request, read_response,
    upgrade_request, wait_eof, Raw,
};
use crate::support::{until, Daemon, TIMEOUT};

/// Sends `request` as is on a fresh connection and reads the answer.
async fn send(d: &Daemon, request: &str) -> Raw {
    let mut s = TcpStream::connect(d.addr).await.expect("connect");
    exchange(&mut s, request)
        .await
        .unwrap_or_else(|| panic!("no answer to {request:?}"))
}

/// A GET of `path` naming `host`, with extra header lines.
fn get_for(host: &str, path: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{extra}\r\n")
}

/// What a request for a host the daemon does not serve gets, and nothing
/// else.
const HOST_REFUSAL: &str = "this host name is not served here\n";

// ---------------------------------------------------------------------
// The Host check (DNS rebinding)
// ---------------------------------------------------------------------

#[tokio::test]
async fn other_host_names_get_403_on_every_route() {
    let d = Daemon::start::<&str>(&[]);
    let mut page = Page::with_names(&d, &["status"]).await;
    let port = d.addr.port();
    let foreign = [
        format!("evil.test:{port}"),
        "evil.test".to_string(),
        format!("localhost.evil.test:{port}"),
        format!("127.0.0.1.evil.test:{port}"),
        format!("10.0.0.1:{port}"),
        format!("[fe80::1%25eth0]:{port}"),
        format!("[::1%25lo]:{port}"),
        format!("localhost:{port}x"),
        String::new(),
    ];
    for host in &foreign {
        let origin = format!("Origin: http://{host}\r\n");
        let requests = [
            get_for(host, "/", ""),
            get_for(host, "/index.html", ""),
            get_for(host, "/ws.js", ""),
            get_for(host, "/healthz", ""),
            get_for(host, "/metrics", ""),
            get_for(host, "/no-such-page", ""),
            get_for(host, "/shell?cmd=ws", ""),
            get_for(host, "/shell?cmd=ws", "Sec-Fetch-Site: same-origin\r\n"),
            get_for(host, "/shell?cmd=ws%20write%20status%20pwned", ""),
            post_request(host, "/api/command", "", "ws write status pwned"),
            post_request(host, "/api/command", &origin, "ws write status pwned"),
            post_request(host, "/shell", "", "ws write status pwned"),
            upgrade_request(host, ""),
            upgrade_request(host, &origin),
        ];
        for request in &requests {
            let resp = send(&d, request).await;
            assert_eq!(
                (resp.status, resp.body_text().as_str()),
                (403, HOST_REFUSAL),
                "{request}"
            );
        }
    }
    d.wait_for_stdout(|l| {
        l.contains("refused 127.0.0.1:")
            && l.contains("host \"evil.test:")
            && l.contains("not served")
            && l.contains("GET /shell")
    });

    // Names and addresses of this machine's loopback are served, with any
    // port and in any case.
    for host in [
        format!("localhost:{port}"),
        format!("LOCALHOST:{port}"),
        "localhost".to_string(),
        format!("app.localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("127.1.2.3:{port}"),
        format!("[::1]:{port}"),
        "[::1]:1".to_string(),
        format!("[::ffff:127.0.0.1]:{port}"),
    ] {
        let resp = send(&d, &get_for(&host, "/healthz", "")).await;
        assert_eq!(resp.status, 200, "{host}: {}", resp.body_text());
    }

    // None of the refused writes reached the page: the first thing it
    // sees is the one written now.
    d.cli(&["ws", "write", "status", "after"])
        .assert_exit_code(0);
    assert_eq!(page.recv().await["text"], "after");
}

#[tokio::test]
async fn allowed_hosts_and_the_other_access_modes() {
    let d = Daemon::start(&[
        "--allowed-host",
        "pagewire.example",
        "--allowed-host",
        "kiosk.lan:8443",
    ]);
    let port = d.addr.port();
    for (host, want) in [
        (format!("pagewire.example:{port}"), 200),
        ("PageWire.Example".to_string(), 200),
        ("kiosk.lan:8443".to_string(), 200),
        (format!("localhost:{port}"), 200),
        (format!("kiosk.lan:{port}"), 403),
        (format!("sub.pagewire.example:{port}"), 403),
        (format!("evil.test:{port}"), 403),
    ] {
        let resp = send(&d, &get_for(&host, "/healthz", "")).await;
        assert_eq!(resp.status, want, "{host}");
    }
    // A page of an allowed host is of the daemon's own origin.
    let host = format!("pagewire.example:{port}");
    let origin = format!("Origin: http://{host}\r\n");
    let resp = send(&d, &post_request(&host, "/api/command", &origin, "ws")).await;
    assert_eq!(resp.status, 200, "{}", resp.body_text());
    let resp = send(&d, &upgrade_request(&host, &origin)).await;
    assert_eq!(resp.status, 101);

    // The other modes serve any host when none is configured...
    let d = Daemon::start(&["--access", "public"]);
    let host = format!("evil.test:{}", d.addr.port());
    let resp = send(&d, &get_for(&host, "/healthz", "")).await;
    assert_eq!(resp.status, 200);
    // ...and only the configured ones (and loopback) when some are.
    let d = Daemon::start(&["--access", "public", "--allowed-host", "pagewire.example"]);
    let port = d.addr.port();
    for (host, want) in [
        (format!("pagewire.example:{port}"), 200),
        (format!("127.0.0.1:{port}"), 200),
        (format!("evil.test:{port}"), 403),
    ] {
        let resp = send(&d, &get_for(&host, "/healthz", "")).await;
        assert_eq!(resp.status, want, "{host}");
    }

    // The same from the configuration file.
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_file(
        dir.path(),
        "access = \"private\"\nallowed_hosts = [\"cfg.example\"]\n",
    );
    let d = Daemon::start(&["--config", &config]);
    let port = d.addr.port();
    for (host, want) in [
        (format!("cfg.example:{port}"), 200),
        (format!("evil.test:{port}"), 403),
    ] {
        let resp = send(&d, &get_for(&host, "/healthz", "")).await;
        assert_eq!(resp.status, want, "{host}");
    }

    // Something that is not a host name stops the start.
    let out = Daemon::builder()
        .args(&["--allowed-host", "http://pagewire.example/"])
        .spawn()
        .wait_exit();
    out.assert_exit_code(1)
        .assert_stderr_contains("invalid allowed host");
}

#[tokio::test]
async fn requests_without_a_host_or_with_two() {
    let d = Daemon::start::<&str>(&[]);
    // HTTP/1.0 tools may leave Host out; no browser does.
    let resp = send(&d, "GET /healthz HTTP/1.0\r\n\r\n").await;
    assert_eq!(resp.status, 200);
    // HTTP/1.1 requires it (RFC 9112, 3.2).
    let resp = send(&d, "GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n").await;
    assert_eq!(resp.status, 400, "{}", resp.body_text());
    let host = d.addr.to_string();
    let resp = send(
        &d,
        &format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\nHost: evil.test\r\n\r\n"),
    )
    .await;
    assert_eq!(resp.status, 400);
    // A request target in absolute form names the host too.
    let resp = send(
        &d,
        &format!("GET http://evil.test/healthz HTTP/1.1\r\nHost: {host}\r\n\r\n"),
    )
    .await;
    assert_eq!(resp.status, 403);
    let resp = send(
        &d,
        &format!("GET http://{host}/healthz HTTP/1.1\r\nHost: {host}\r\n\r\n"),
    )
    .await;
    assert_eq!(resp.status, 200);
}

// ---------------------------------------------------------------------
// No side effects from requests that cannot show where they come from
// ---------------------------------------------------------------------

/// `GET /shell?cmd=CMD` with the given headers: status and body.
async fn shell_get(d: &Daemon, cmd: &str, headers: &[(&str, &str)]) -> (StatusCode, String) {
    let cmd = percent_encoding::utf8_percent_encode(cmd, percent_encoding::NON_ALPHANUMERIC);
    let mut req = reqwest::Client::new().get(d.url(&format!("/shell?cmd={cmd}")));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("request");
    (resp.status(), resp.text().await.expect("body"))
}

/// A POST of `line` to `path` with the given headers: status and body.
async fn post_line(
    d: &Daemon,
    path: &str,
    line: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, String) {
    let mut req = reqwest::Client::new()
        .post(d.url(path))
        .body(line.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("request");
    (resp.status(), resp.text().await.expect("body"))
}

#[tokio::test]
async fn a_get_that_cannot_show_its_origin_may_only_read() {
    let d = Daemon::start::<&str>(&[]);
    let mut page = Page::with_names(&d, &["status"]).await;
    let own = own_origin(&d);
    let referer = format!("{own}/");
    // No Origin and no Sec-Fetch-Site (an <img> or <script> in an older
    // browser), a navigation from outside the browser (Sec-Fetch-Site:
    // none), and the daemon's own Referer alone prove nothing.
    let unproven: [&[(&str, &str)]; 3] = [
        &[],
        &[("sec-fetch-site", "none")],
        &[("referer", referer.as_str())],
    ];
    for headers in unproven {
        // Reading is allowed.
        let (status, body) = shell_get(&d, "ws", headers).await;
        assert_eq!(status, 200, "{headers:?}: {body}");
        assert!(body.contains("names=status"), "{headers:?}: {body}");
        let (status, body) = shell_get(&d, "help", headers).await;
        assert_eq!(status, 200, "{headers:?}: {body}");
        // Changing anything is not.
        for cmd in [
            "ws write status pwned",
            "ws exec status alert 1",
            "ws close",
            "set notify status",
            "run deploy",
        ] {
            let (status, body) = shell_get(&d, cmd, headers).await;
            assert_eq!(status, 403, "{cmd} with {headers:?}: {body}");
            assert!(body.contains("may only read"), "{cmd}: {body}");
            assert_eq!(body.lines().count(), 1, "one line: {body}");
        }
    }
    // HEAD is a GET without the body.
    let cmd = percent_encoding::utf8_percent_encode(
        "ws write status pwned",
        percent_encoding::NON_ALPHANUMERIC,
    );
    let resp = reqwest::Client::new()
        .head(d.url(&format!("/shell?cmd={cmd}")))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 403);
    d.wait_for_stdout(|l| {
        l.contains("refused command from 127.0.0.1:") && l.contains("may only read")
    });

    // What shows its origin keeps working: a page's same-origin fetch (as
    // the demo page's button makes it), an Origin, and a POST without one
    // (curl, a script).
    let (status, body) = shell_get(
        &d,
        "ws write status one",
        &[("sec-fetch-site", "same-origin")],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(page.recv().await["text"], "one", "nothing came before it");
    let (status, body) = shell_get(&d, "ws write status two", &[("origin", own.as_str())]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(page.recv().await["text"], "two");
    let (status, body) = post_line(&d, "/api/command", "ws write status three", &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(page.recv().await["text"], "three");
    let (status, body) = post_line(&d, "/shell", "ws write status four", &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(page.recv().await["text"], "four");
}

#[tokio::test]
async fn a_foreign_referer_is_refused() {
    let d = Daemon::start(&["--origin", "https://app.example"]);
    let mut page = Page::with_names(&d, &["status"]).await;
    let own = own_origin(&d);
    let host = d.addr.to_string();
    for referer in [
        "http://evil.example/attack.html".to_string(),
        "http://127.0.0.1:1/".to_string(),
        format!("https://{host}/"),
        format!("http://{host}.evil.example/"),
        "not a url".to_string(),
    ] {
        let headers = [("referer", referer.as_str())];
        for path in ["/api/command", "/shell"] {
            let (status, body) = post_line(&d, path, "ws write status pwned", &headers).await;
            assert_eq!(status, 403, "POST {path} with {referer}: {body}");
        }
        // Even reading, and even with a same-origin fetch's header.
        let (status, body) = shell_get(&d, "ws", &headers).await;
        assert_eq!(status, 403, "GET with {referer}: {body}");
        let with_fetch = [
            ("referer", referer.as_str()),
            ("sec-fetch-site", "same-origin"),
        ];
        let (status, body) = shell_get(&d, "ws write status pwned", &with_fetch).await;
        assert_eq!(status, 403, "GET with {referer}: {body}");
        let extra = format!("Origin: {own}\r\nReferer: {referer}\r\n");
        let resp = send(&d, &upgrade_request(&host, &extra)).await;
        assert_eq!(resp.status, 403, "upgrade with {referer}");
    }
    d.wait_for_stdout(|l| {
        l.contains("refused command from 127.0.0.1:") && l.contains("Referer: http://evil.example")
    });
    d.wait_for_stdout(|l| l.contains("refused WebSocket from") && l.contains("Referer"));

    // The daemon's own pages and the configured origin pass.
    for referer in [
        format!("{own}/index.html"),
        "https://app.example/x".to_string(),
    ] {
        let (status, body) = post_line(
            &d,
            "/api/command",
            &format!("ws write status \"from {referer}\""),
            &[("referer", referer.as_str())],
        )
        .await;
        assert_eq!(status, 200, "{referer}: {body}");
        assert_eq!(page.recv().await["text"], format!("from {referer}"));
        let extra = format!("Origin: {own}\r\nReferer: {referer}\r\n");
        let resp = send(&d, &upgrade_request(&host, &extra)).await;
        assert_eq!(resp.status, 101, "upgrade with {referer}");
    }
}

#[tokio::test]
async fn with_a_token_shell_without_it_has_a_page_rights_only() {
    let d = Daemon::start(&["--token", "s3cret"]);
    let mut page = Page::with_names(&d, &["status"]).await;
    let same_origin = [("sec-fetch-site", "same-origin")];
    for cmd in ["ws", "ws write status nope", "ws close"] {
        let (status, body) = shell_get(&d, cmd, &same_origin).await;
        assert_eq!(status, 401, "{cmd}: {body}");
        let (status, body) = shell_get(&d, cmd, &[]).await;
        assert!(
            status == 401 || status == 403,
            "{cmd} without headers: {status} {body}"
        );
    }
    // The token is what gives a GET the operator's rights, headers or not.
    let (status, body) = shell_get(
        &d,
        "ws write status yes",
        &[("authorization", "Bearer s3cret")],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(page.recv().await["text"], "yes");
}

// ---------------------------------------------------------------------
// Bounded requests
// ---------------------------------------------------------------------

/// The head of a POST to `path` announcing `len` bytes of body.
fn post_head(d: &Daemon, path: &str, len: usize, extra: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: text/plain\r\n\
         Content-Length: {len}\r\n{extra}\r\n",
        d.addr
    )
}

/// Asks for `/healthz` until it is answered 200, bounded by [`TIMEOUT`].
async fn until_served(d: &Daemon) {
    until("/healthz to be served", TIMEOUT, || async {
        let mut s = TcpStream::connect(d.addr).await.expect("connect");
        let req = format!(
            "GET /healthz HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            d.addr
        );
        let resp = exchange(&mut s, &req).await;
        resp.is_some_and(|r| r.status == 200).then_some(())
    })
    .await
}

#[tokio::test]
async fn stalled_bodies_are_dropped_and_cannot_lock_out_new_clients() {
    // The body timeout is the handshake timeout unless set on its own.
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_file(
        dir.path(),
        "[limits]\nhandshake_timeout_secs = 1\nmax_tcp_connections = 6\n\
         max_tcp_connections_per_ip = 6\n",
    );
    let d = Daemon::start(&["--config", &config]);

    // Six clients announce a body and never send it: they hold every place.
    let mut stalled = Vec::new();
    for path in [
        "/api/command",
        "/shell",
        "/api/command",
        "/shell",
        "/api/command",
        "/shell",
    ] {
        let mut s = TcpStream::connect(d.addr).await.expect("connect");
        s.write_all(post_head(&d, path, 10, "").as_bytes())
            .await
            .expect("write");
        stalled.push(s);
    }
    let mut refused = TcpStream::connect(d.addr).await.expect("connect");
    let resp = read_response(&mut refused).await.expect("an answer");
    assert_eq!(resp.status, 503, "the places are taken: {resp:?}");

    // The body deadline drops each of them with 408...
    for s in &mut stalled {
        let (_, got) = wait_eof(s).await;
        let got = String::from_utf8_lossy(&got);
        assert!(got.starts_with("HTTP/1.1 408 "), "{got}");
        assert!(got.contains("request body not received within 1s"), "{got}");
    }
    d.wait_for_stdout(|l| {
        l.contains("refused command from 127.0.0.1:") && l.contains("not received within 1s")
    });
    // ...so new clients get in again.
    until_served(&d).await;

    // A body dripped a byte at a time does not move the deadline.
    let mut drip = TcpStream::connect(d.addr).await.expect("connect");
    drip.write_all(post_head(&d, "/api/command", 100, "").as_bytes())
        .await
        .expect("write");
    let start = Instant::now();
    let mut answer = Vec::new();
    while start.elapsed() < TIMEOUT {
        // The pace of the drip is what is tested here, not a wait.
        tokio::time::sleep(Duration::from_millis(200)).await;
        if drip.write_all(b"w").await.is_err() {
            break;
        }
        let mut buf = [0u8; 512];
        match tokio::time::timeout(Duration::from_millis(1), drip.peek(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {
                answer.extend_from_slice(&buf[..n]);
                break;
            }
            Ok(Ok(_)) | Ok(Err(_)) => break,
            Err(_) => {}
        }
    }
    let waited = start.elapsed();
    assert!(
        waited < Duration::from_secs(4),
        "a dripping body kept its connection for {waited:?}"
    );
    assert!(
        String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 408 "),
        "{}",
        String::from_utf8_lossy(&answer)
    );
}

#[tokio::test]
async fn the_body_timeout_is_a_setting_of_its_own() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_file(
        dir.path(),
        "[limits]\nhandshake_timeout_secs = 60\nbody_timeout_secs = 1\n",
    );
    let d = Daemon::start(&["--config", &config]);
    let mut s = TcpStream::connect(d.addr).await.expect("connect");
    s.write_all(post_head(&d, "/api/command", 10, "").as_bytes())
        .await
        .expect("write");
    let (waited, got) = wait_eof(&mut s).await;
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(10),
        "dropped after {waited:?}"
    );
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 408 "), "{got}");
    // A body that comes in time is served as before.
    let mut s = TcpStream::connect(d.addr).await.expect("connect");
    let resp = exchange(
        &mut s,
        &format!("{}ws", post_head(&d, "/api/command", 2, "")),
    )
    .await
    .expect("an answer");
    assert_eq!(resp.status, 200, "{}", resp.body_text());
}

#[tokio::test]
async fn a_body_announced_over_the_limit_gets_413_at_once() {
    // A long handshake timeout, so that no close by timeout can pass for
    // the answer.
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_file(dir.path(), "[limits]\nhandshake_timeout_secs = 60\n");
    let d = Daemon::start(&["--config", &config]);
    for (path, extra) in [
        ("/api/command", ""),
        ("/shell", ""),
        ("/api/command", "Expect: 100-continue\r\n"),
        ("/", ""),
        ("/healthz", ""),
    ] {
        // Only the head: the body is never sent.
        let mut s = TcpStream::connect(d.addr).await.expect("connect");
        let start = Instant::now();
        let resp = exchange(&mut s, &post_head(&d, path, 1_000_000, extra))
            .await
            .expect("an answer");
        assert_eq!(resp.status, 413, "{path} {extra}: {resp:?}");
        assert!(
            resp.body_text().contains("too large"),
            "{}",
            resp.body_text()
        );
        assert_eq!(resp.header("connection"), Some("close"));
        assert!(start.elapsed() < Duration::from_secs(5), "{path}");
        let (_, rest) = wait_eof(&mut s).await;
        assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    }
    d.wait_for_stdout(|l| {
        l.contains("refused 127.0.0.1:")
            && l.contains("request body too large")
            && l.contains("1000000")
    });
    // Bodies within the limit are served as before.
    let resp = send(&d, &format!("{}ws", post_head(&d, "/api/command", 2, ""))).await;
    assert_eq!(resp.status, 200);
}

#[tokio::test]
async fn one_address_cannot_take_most_connections() {
    // Defaults, but for a handshake timeout long enough to open them all.
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_file(dir.path(), "[limits]\nhandshake_timeout_secs = 120\n");
    let d = Daemon::start(&["--config", &config]);
    // The default: an eighth of max_connections (18,000) for WebSockets,
    // plus 64 for plain HTTP: 2,314 open TCP connections per address.
    const PER_ADDRESS: usize = 18_000 / 8 + 64;
    let mut held = Vec::with_capacity(PER_ADDRESS);
    for _ in 0..PER_ADDRESS {
        held.push(connect_from(&d, lo(2)).await);
    }
    let mut over = connect_from(&d, lo(2)).await;
    let resp = read_response(&mut over).await.expect("an answer");
    assert_eq!(resp.status, 503, "{resp:?}");
    assert_eq!(
        resp.body_text(),
        format!("too many open connections from 127.0.0.2 ({PER_ADDRESS} at most)\n")
    );
    // Everyone else is still served.
    let mut other = connect_from(&d, lo(3)).await;
    let resp = exchange(
        &mut other,
        &format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n\r\n", d.addr),
    )
    .await
    .expect("an answer");
    assert_eq!(resp.status, 200);
    drop(held);

    // The WebSocket share follows max_connections when only that is set.
    let config = config_file(dir.path(), "[limits]\nmax_connections = 40\n");
    let d = Daemon::start(&["--config", &config]);
    let origin = own_origin(&d);
    let mut pages = Vec::new();
    for _ in 0..5 {
        pages.push(
            Page::open_from(&d, lo(1), Some(&origin))
                .await
                .expect("page"),
        );
    }
    let err = Page::open_from(&d, lo(1), Some(&origin))
        .await
        .err()
        .expect("a sixth from one address is refused");
    assert!(err.to_string().contains("503"), "{err}");
    d.wait_for_stdout(|l| l.contains("too many connections from 127.0.0.1 (5 at most)"));
    Page::open_from(&d, lo(2), Some(&origin))
        .await
        .expect("another address is admitted");
}

// ---------------------------------------------------------------------
// Static files
// ---------------------------------------------------------------------

/// Writes `text` to `root/rel`, creating directories.
fn write(root: &std::path::Path, rel: &str, text: &str) {
    let path = root.join(rel);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("mkdir");
    }
    std::fs::write(path, text).expect("write");
}

async fn status_of(d: &Daemon, path: &str) -> StatusCode {
    reqwest::get(d.url(path)).await.expect("request").status()
}

#[tokio::test]
async fn dot_files_are_not_served_unless_configured() {
    let root = tempfile::tempdir().expect("tempdir");
    let p = root.path();
    write(p, ".env", "SECRET=1");
    write(p, ".git/config", "[core]");
    write(p, "a/.hidden/x", "hidden");
    write(p, "a/visible.txt", "visible");
    write(p, ".well-known/security.txt", "Contact: x");
    write(p, ".well-known/.private", "private");
    std::os::unix::fs::symlink(".env", p.join("env.txt")).expect("symlink");
    std::os::unix::fs::symlink(".git", p.join("gitdir")).expect("symlink");
    let root_arg = p.to_str().expect("utf-8 path");

    let d = Daemon::start(&["--root", root_arg]);
    for path in [
        "/.env",
        "/%2eenv",
        "/.git/config",
        "/.git/",
        "/a/.hidden/x",
        "/.well-known/.private",
        "/env.txt",
        "/gitdir/config",
    ] {
        assert_eq!(status_of(&d, path).await, 404, "{path}");
    }
    for path in ["/a/visible.txt", "/.well-known/security.txt"] {
        assert_eq!(status_of(&d, path).await, 200, "{path}");
    }

    let d = Daemon::start(&["--root", root_arg, "--serve-dotfiles"]);
    for path in ["/.env", "/.git/config", "/a/.hidden/x", "/env.txt"] {
        assert_eq!(status_of(&d, path).await, 200, "{path}");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_file(dir.path(), "serve_dotfiles = true\n");
    let d = Daemon::start(&["--root", root_arg, "--config", &config]);
    assert_eq!(status_of(&d, "/.env").await, 200);
}

#[tokio::test]
async fn only_regular_files_are_served_and_a_fifo_holds_nothing() {
    let root = tempfile::tempdir().expect("tempdir");
    let p = root.path();
    write(p, "index.html", "<!doctype html>");
    let made = std::process::Command::new("mkfifo")
        .arg(p.join("pipe"))
        .arg(p.join("pipe-dir-index"))
        .status()
        .expect("mkfifo");
    assert!(made.success());
    std::fs::create_dir(p.join("fifo-dir")).expect("mkdir");
    std::fs::rename(p.join("pipe-dir-index"), p.join("fifo-dir/index.html")).expect("rename");
    std::os::unix::fs::symlink("pipe", p.join("pipe-link")).expect("symlink");
    std::os::unix::fs::symlink("/dev/zero", p.join("zero")).expect("symlink");
    let d = Daemon::start(&["--root", p.to_str().expect("utf-8 path")]);

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let mut answers = Vec::new();
    for path in ["/pipe", "/pipe-link", "/fifo-dir/", "/zero", "/index.html"] {
        let answer = match http.get(d.url(path)).send().await {
            Ok(resp) => resp.status().as_u16().to_string(),
            Err(e) => format!("error: {e}"),
        };
        answers.push((path, answer));
    }
    eprintln!("answers: {answers:?}");

    // Shutdown does not wait for anything those requests started.
    let start = Instant::now();
    let out = d.stop();
    let took = start.elapsed();
    out.assert_exit_code(0);
    assert!(took < Duration::from_secs(5), "shutdown took {took:?}");
    assert_eq!(
        answers,
        [
            ("/pipe", "404".to_string()),
            ("/pipe-link", "404".to_string()),
            ("/fifo-dir/", "404".to_string()),
            ("/zero", "404".to_string()),
            ("/index.html", "200".to_string()),
        ]
    );
}

#[tokio::test]
async fn very_long_paths_get_404_never_500() {
    let root = tempfile::tempdir().expect("tempdir");
    write(root.path(), "index.html", "<!doctype html>");
    let d = Daemon::start(&["--root", root.path().to_str().expect("utf-8 path")]);
    for path in [
        format!("/{}", "a".repeat(10_000)),
        format!("/{}", "b".repeat(256)),
        format!("/dir/{}/x.txt", "c".repeat(300)),
        format!("/{}x", "d/".repeat(3_000)),
        format!("/{}", "%41".repeat(3_000)),
    ] {
        let resp = send(&d, &get_for(&d.addr.to_string(), &path, "")).await;
        assert!(
            resp.status == 404 || resp.status == 414,
            "{}...: {} {}",
            &path[..20],
            resp.status,
            resp.body_text()
        );
    }
    // And the daemon goes on.
    assert_eq!(status_of(&d, "/index.html").await, 200);
}

#[tokio::test]
async fn text_files_are_served_with_a_charset() {
    let root = tempfile::tempdir().expect("tempdir");
    let p = root.path();
    write(p, "index.html", "<!doctype html><p>waiting…</p>");
    write(p, "style.css", "body{}");
    write(p, "app.js", "let s = '…';");
    write(p, "notes.txt", "waiting…");
    write(p, "data.json", "{\"s\":\"…\"}");
    write(p, "logo.svg", "<svg xmlns=\"http://www.w3.org/2000/svg\"/>");
    write(p, "feed.xml", "<feed/>");
    std::fs::write(p.join("pic.png"), b"\x89PNG\r\n\x1a\n0000").expect("write");
    let d = Daemon::start(&["--root", p.to_str().expect("utf-8 path")]);
    let http = reqwest::Client::new();
    for (path, want) in [
        ("/", "text/html; charset=utf-8"),
        ("/index.html", "text/html; charset=utf-8"),
        ("/style.css", "text/css; charset=utf-8"),
        ("/app.js", "text/javascript; charset=utf-8"),
        ("/notes.txt", "text/plain; charset=utf-8"),
        ("/data.json", "application/json; charset=utf-8"),
        ("/logo.svg", "image/svg+xml; charset=utf-8"),
        ("/feed.xml", "text/xml; charset=utf-8"),
        ("/pic.png", "image/png"),
    ] {
        let resp = http.get(d.url(path)).send().await.expect("request");
        assert_eq!(resp.status(), 200, "{path}");
        assert_eq!(resp.headers()["content-type"], want, "{path}");
    }
    // A range of a text file says the same.
    let resp = http
        .get(d.url("/notes.txt"))
        .header("range", "bytes=0-6")
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 206);
    assert_eq!(resp.headers()["content-type"], "text/plain; charset=utf-8");
}
