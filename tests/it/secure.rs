//! Access and security, limits and shutdown, against the real daemon:
//! access modes by source address, cross-site and DNS-rebinding refusals,
//! the token kept out of every output, static files as a real static
//! server serves them and never from outside the root, HTTPS and WSS with a
//! certificate made here, the handshake timeout, connection and body
//! limits, graceful shutdown, and `/metrics`.
//!
//! Several clients are told apart by their source address: any 127.x.y.z
//! is a loopback address on Linux, so a socket bound to 127.0.0.3 before it
//! connects is a client "from 127.0.0.3".

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::symlink;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

use crate::page::{listing, wait_for_count, Page};
use crate::support::{Daemon, TIMEOUT};

/// The loopback address 127.0.0.N.
pub(crate) fn lo(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))
}

/// The daemon's own origin, as its pages send it.
pub(crate) fn own_origin(d: &Daemon) -> String {
    format!("{}://{}", d.scheme, d.addr)
}

/// An HTTP client whose connections come from `source`.
pub(crate) fn client_from(source: IpAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(source)
        .build()
        .expect("client")
}

/// A TCP connection to the daemon from `source`.
pub(crate) async fn connect_from(d: &Daemon, source: IpAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(source, 0))
        .expect("bind the source address");
    tokio::time::timeout(TIMEOUT, socket.connect(d.addr))
        .await
        .expect("connect within the timeout")
        .expect("connect")
}

/// An HTTP response read off a raw connection.
#[derive(Debug)]
pub(crate) struct Raw {
    pub(crate) status: u16,
    pub(crate) head: String,
    pub(crate) body: Vec<u8>,
}

impl Raw {
    pub(crate) fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A header's value (names compared without case).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Reads one response (head, then a `content-length` body or everything up
/// to EOF); `None` when the connection ends before a complete head.
pub(crate) async fn read_response<S: AsyncRead + Unpin>(s: &mut S) -> Option<Raw> {
    let read = async {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut body = buf[head_end..].to_vec();
        let status = head.split(' ').nth(1)?.parse().ok()?;
        let mut raw = Raw {
            status,
            head,
            body: Vec::new(),
        };
        match raw
            .header("content-length")
            .and_then(|v| v.parse::<usize>().ok())
        {
            Some(len) => {
                while body.len() < len {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => body.extend_from_slice(&chunk[..n]),
                    }
                }
                body.truncate(len);
            }
            None if status == 304 || status == 101 || status / 100 == 1 => {}
            None => {
                let _ = s.read_to_end(&mut body).await;
            }
        }
        raw.body = body;
        Some(raw)
    };
    tokio::time::timeout(TIMEOUT, read)
        .await
        .expect("a response within the timeout")
}

/// Sends `request` as is and reads the response.
pub(crate) async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    request: &str,
) -> Option<Raw> {
    s.write_all(request.as_bytes()).await.ok()?;
    read_response(s).await
}

/// A GET of `path` exactly as written (no client normalises it).
pub(crate) fn get(d: &Daemon, path: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {}\r\n{extra}\r\n", d.addr)
}

/// A WebSocket upgrade request for `/ws` with the given Host and headers.
pub(crate) fn upgrade_request(host: &str, extra: &str) -> String {
    format!(
        "GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

/// A POST of `body` to `path` with the given Host and headers.
pub(crate) fn post_request(host: &str, path: &str, extra: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: text/plain\r\n\
         Content-Length: {}\r\n{extra}\r\n{body}",
        body.len()
    )
}

/// Waits until the connection is closed by the daemon; returns how long
/// that took, and what (if anything) it sent first.
pub(crate) async fn wait_eof<S: AsyncRead + Unpin>(s: &mut S) -> (Duration, Vec<u8>) {
    let start = Instant::now();
    let mut got = Vec::new();
    let read = tokio::time::timeout(TIMEOUT, s.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "still open after {TIMEOUT:?}; got {got:?}");
    (start.elapsed(), got)
}

/// Writes a configuration file in `dir` and returns its path.
pub(crate) fn config_file(dir: &Path, text: &str) -> String {
    let path = dir.join("pagewire.toml");
    std::fs::write(&path, text).expect("write config");
    path.to_str().expect("utf-8 path").to_string()
}

// ---------------------------------------------------------------------
// Access modes
// ---------------------------------------------------------------------

#[tokio::test]
async fn acl_refuses_other_addresses_and_admits_the_listed_one() {
    let d = Daemon::start(&["--access", "acl", "--allow", "127.0.0.2/32"]);
    let origin = own_origin(&d);

    // 127.0.0.3 is not in the list: 403 and nothing else, on every path.
    let outsider = client_from(lo(3));
    for path in ["/", "/healthz", "/ws.js", "/metrics"] {
        let resp = outsider.get(d.url(path)).send().await.expect("request");
        assert_eq!(resp.status(), 403, "{path}");
        assert_eq!(resp.text().await.expect("body"), "", "{path}: a bare 403");
    }
    let resp = outsider
        .post(d.url("/api/command"))
        .body("ws close")
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 403);
    d.wait_for_stdout(|l| {
        l.contains("refused 127.0.0.3:") && l.contains("not admitted") && l.contains("GET /")
    });
    let err = Page::open_from(&d, lo(3), Some(&origin))
        .await
        .err()
        .expect("the upgrade is refused");
    assert!(err.to_string().contains("403"), "{err}");
    d.wait_for_stdout(|l| l.contains("refused 127.0.0.3:") && l.contains("GET /ws"));
    // Not even plain loopback is admitted in acl mode without a listing.
    let resp = client_from(lo(1))
        .get(d.url("/"))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 403);

    // 127.0.0.2 is listed: pages, the upgrade, and commands work.
    let insider = client_from(lo(2));
    let resp = insider.get(d.url("/")).send().await.expect("request");
    assert_eq!(resp.status(), 200);
    let mut page = Page::open_from(&d, lo(2), Some(&origin))
        .await
        .expect("admitted");
    page.send("ws register status").await;
    assert_eq!(page.recv().await["type"], "reply");
    d.cli(&["ws", "write", "status", "hello acl"])
        .assert_exit_code(0);
    assert_eq!(page.recv().await["text"], "hello acl");
    let lines = listing(&d);
    assert!(lines[0].contains("remote=127.0.0.2:"), "{lines:?}");
    // The refused attempts never became connections.
    assert_eq!(lines.len(), 1, "{lines:?}");
}

#[tokio::test]
async fn every_mode_but_acl_admits_loopback_clients() {
    for mode in ["local", "private", "public"] {
        let d = Daemon::start(&["--access", mode]);
        for n in [1, 3] {
            let resp = client_from(lo(n))
                .get(d.url("/healthz"))
                .send()
                .await
                .expect("request");
            assert_eq!(resp.status(), 200, "{mode} from 127.0.0.{n}");
        }
        Page::open_from(&d, lo(3), Some(&own_origin(&d)))
            .await
            .unwrap_or_else(|e| panic!("{mode}: upgrade refused: {e}"));
    }
}

// ---------------------------------------------------------------------
// Cross-site requests
// ---------------------------------------------------------------------

#[tokio::test]
async fn same_site_fetches_and_dns_rebinding_are_refused() {
    let d = Daemon::start::<&str>(&[]);
    let host = d.addr.to_string();
    let port = d.addr.port();

    // A page of a sibling site (Sec-Fetch-Site: same-site) is not this
    // daemon's page: no commands, no WebSocket.
    let same_site = "Sec-Fetch-Site: same-site\r\n";
    for request in [
        post_request(&host, "/api/command", same_site, "ws close"),
        post_request(&host, "/shell", same_site, "ws close"),
        get(&d, "/shell?cmd=ws%20close", same_site),
        upgrade_request(&host, same_site),
    ] {
        let mut s = TcpStream::connect(d.addr).await.expect("connect");
        let resp = exchange(&mut s, &request).await.expect("a response");
        assert_eq!(resp.status, 403, "{request}\n{}", resp.body_text());
    }
    d.wait_for_stdout(|l| l.contains("refused command") && l.contains("same-site"));

    // DNS rebinding: evil.example resolves to 127.0.0.1, so the browser
    // sends Host evil.example:PORT with the matching Origin. In local mode
    // only loopback hosts are served at all.
    let evil_host = format!("evil.example:{port}");
    let evil_origin = format!("Origin: http://evil.example:{port}\r\n");
    for request in [
        post_request(&evil_host, "/api/command", &evil_origin, "ws close"),
        post_request(&evil_host, "/shell", &evil_origin, "ws close"),
        upgrade_request(&evil_host, &evil_origin),
    ] {
        let mut s = TcpStream::connect(d.addr).await.expect("connect");
        let resp = exchange(&mut s, &request).await.expect("a response");
        assert_eq!(resp.status, 403, "{request}\n{}", resp.body_text());
    }
    d.wait_for_stdout(|l| {
        l.contains("host \"evil.example:") && l.contains("not served") && l.contains("GET /ws")
    });

    // The same requests from the daemon's real origins pass, so the
    // refusals above are about the origin and nothing else.
    for host in [host.clone(), format!("localhost:{port}")] {
        let origin = format!("Origin: http://{host}\r\nSec-Fetch-Site: same-origin\r\n");
        let mut s = TcpStream::connect(d.addr).await.expect("connect");
        let resp = exchange(&mut s, &post_request(&host, "/api/command", &origin, "ws"))
            .await
            .expect("a response");
        assert_eq!(resp.status, 200, "{host}: {}", resp.body_text());
        let mut s = TcpStream::connect(d.addr).await.expect("connect");
        let resp = exchange(&mut s, &upgrade_request(&host, &origin))
            .await
            .expect("a response");
        assert_eq!(resp.status, 101, "{host}");
    }
}

// ---------------------------------------------------------------------
// The token
// ---------------------------------------------------------------------

#[tokio::test]
async fn the_token_never_appears_in_any_output() {
    const TOKEN: &str = "tok-7f3a9c1e-do-not-print";
    const WRONG: &str = "guess-51b2e0-do-not-print";
    let d = Daemon::builder().args(&["--token", TOKEN]).start();
    let monitor = d.cli_spawn(&["monitor"]);
    // `pagewire monitor` prints nothing until an event: make events until
    // one shows up, so that everything below is seen by it.
    let deadline = Instant::now() + TIMEOUT;
    while !monitor
        .stdout_lines()
        .iter()
        .any(|l| l.contains("control: ws"))
    {
        assert!(Instant::now() < deadline, "{}", monitor.snapshot());
        d.cli(&["ws"]).assert_exit_code(0);
    }
    let mut page = Page::with_names(&d, &["status"]).await;

    let http = reqwest::Client::new();
    for (auth, want) in [
        (format!("Bearer {WRONG}"), StatusCode::UNAUTHORIZED),
        (format!("Bearer {TOKEN}x"), StatusCode::UNAUTHORIZED),
        (format!("Basic {TOKEN}"), StatusCode::UNAUTHORIZED),
        (format!("Bearer {TOKEN}"), StatusCode::OK),
    ] {
        let resp = http
            .post(d.url("/api/command"))
            .header("authorization", &auth)
            .body("ws write status \"authorised\"")
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), want, "{auth}");
        let body = resp.text().await.expect("body");
        assert!(!body.contains(TOKEN) && !body.contains(WRONG), "{body}");
        let resp = http
            .get(d.url("/shell?cmd=ws"))
            .header("authorization", &auth)
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), want, "{auth}");
        let body = resp.text().await.expect("body");
        assert!(!body.contains(TOKEN) && !body.contains(WRONG), "{body}");
    }
    assert_eq!(page.recv().await["text"], "authorised");

    // Everything the daemon said, through every channel, after the last
    // request was answered and recorded.
    d.wait_for_stdout(|l| l.contains("wrong bearer token"));
    d.wait_for_stdout(|l| l.contains("http: ws ->"));
    let ws = d.cli(&["ws"]);
    let metrics = reqwest::get(d.url("/metrics"))
        .await
        .expect("request")
        .text()
        .await
        .expect("body");
    let deadline = Instant::now() + TIMEOUT;
    while !monitor
        .stdout_lines()
        .iter()
        .any(|l| l.contains("http: ws ->"))
    {
        assert!(Instant::now() < deadline, "{}", monitor.snapshot());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let daemon = d.process().snapshot();
    let watched = monitor.snapshot();
    for (what, text) in [
        ("daemon stdout", &daemon.stdout),
        ("daemon stderr", &daemon.stderr),
        ("pagewire monitor", &watched.stdout),
        ("ws listing", &ws.stdout),
        ("metrics", &metrics),
    ] {
        assert!(!text.contains(TOKEN), "{what} shows the token:\n{text}");
        assert!(
            !text.contains(WRONG),
            "{what} shows a presented token:\n{text}"
        );
    }
}

// ---------------------------------------------------------------------
// Static files
// ---------------------------------------------------------------------

/// A web root with one file of each common type.
fn site() -> tempfile::TempDir {
    let root = tempfile::tempdir().expect("tempdir");
    let p = root.path();
    std::fs::write(p.join("index.html"), "<!doctype html><title>t</title>").expect("write");
    std::fs::write(p.join("style.css"), "body { color: red }").expect("write");
    std::fs::write(p.join("app.js"), "console.log(1)").expect("write");
    std::fs::write(
        p.join("logo.svg"),
        "<svg xmlns=\"http://www.w3.org/2000/svg\"/>",
    )
    .expect("write");
    std::fs::write(p.join("pic.png"), b"\x89PNG\r\n\x1a\n0000").expect("write");
    std::fs::write(p.join("digits.txt"), "0123456789").expect("write");
    root
}

#[tokio::test]
async fn static_files_have_types_validators_and_ranges() {
    let root = site();
    let d = Daemon::start(&["--root", root.path().to_str().expect("utf-8 path")]);
    let http = reqwest::Client::new();
    for (path, want) in [
        ("/", "text/html"),
        ("/index.html", "text/html"),
        ("/style.css", "text/css"),
        ("/app.js", "javascript"),
        ("/logo.svg", "image/svg+xml"),
        ("/pic.png", "image/png"),
        ("/digits.txt", "text/plain"),
    ] {
        let resp = http.get(d.url(path)).send().await.expect("request");
        assert_eq!(resp.status(), 200, "{path}");
        let ct = resp.headers()["content-type"].to_str().unwrap_or("");
        assert!(ct.contains(want), "{path}: content-type {ct}, want {want}");
        assert_eq!(resp.headers()["x-content-type-options"], "nosniff");
    }

    // Validators: the same file asked again with either one is 304.
    let resp = http
        .get(d.url("/digits.txt"))
        .send()
        .await
        .expect("request");
    let etag = resp.headers()["etag"].to_str().expect("etag").to_string();
    let modified = resp.headers()["last-modified"]
        .to_str()
        .expect("last-modified")
        .to_string();
    assert_eq!(resp.headers()["accept-ranges"], "bytes");
    for (header, value) in [
        ("if-none-match", etag.as_str()),
        ("if-modified-since", modified.as_str()),
    ] {
        let resp = http
            .get(d.url("/digits.txt"))
            .header(header, value)
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), 304, "{header}: {value}");
        assert_eq!(resp.text().await.expect("body"), "");
    }
    let resp = http
        .get(d.url("/digits.txt"))
        .header("if-none-match", "\"something-else\"")
        .header("if-modified-since", "Thu, 01 Jan 1970 00:00:00 GMT")
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 200);

    // Ranges: exactly the bytes asked for.
    for (range, want, content_range) in [
        ("bytes=2-5", "2345", "bytes 2-5/10"),
        ("bytes=7-", "789", "bytes 7-9/10"),
        ("bytes=-3", "789", "bytes 7-9/10"),
    ] {
        let resp = http
            .get(d.url("/digits.txt"))
            .header("range", range)
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), 206, "{range}");
        assert_eq!(resp.headers()["content-range"], content_range, "{range}");
        assert_eq!(resp.text().await.expect("body"), want, "{range}");
    }
    let resp = http
        .get(d.url("/digits.txt"))
        .header("range", "bytes=20-30")
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 416);
}

#[tokio::test]
async fn no_encoding_or_symlink_reads_outside_the_root() {
    let outside = tempfile::tempdir().expect("tempdir");
    std::fs::write(outside.path().join("secret.txt"), "TOP SECRET").expect("write");
    std::fs::write(outside.path().join("index.html"), "TOP SECRET INDEX").expect("write");
    let root = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(root.path().join("sub")).expect("mkdir");
    std::fs::write(root.path().join("sub/inner.txt"), "inner file").expect("write");
    // A symlinked directory inside the root that points out, one relative
    // link that climbs out, and a link to that link.
    symlink(outside.path(), root.path().join("dir")).expect("symlink");
    let name = outside
        .path()
        .file_name()
        .and_then(|n| n.to_str())
        .expect("name")
        .to_string();
    let root_name = root
        .path()
        .file_name()
        .and_then(|n| n.to_str())
        .expect("name")
        .to_string();
    // root is TMP/root_name, outside is TMP/name.
    symlink(format!("../../{name}"), root.path().join("sub/up")).expect("symlink");
    symlink("sub/up", root.path().join("hop")).expect("symlink");
    let d = Daemon::start(&["--root", root.path().to_str().expect("utf-8 path")]);
    let outside_abs = outside.path().to_str().expect("utf-8 path");

    for path in [
        "/dir/secret.txt".to_string(),
        "/dir/".to_string(),
        "/dir".to_string(),
        "/dir/index.html".to_string(),
        "/dir%2fsecret.txt".to_string(),
        "/sub/up/secret.txt".to_string(),
        "/sub/up/".to_string(),
        "/hop/secret.txt".to_string(),
        format!("/..%2f{name}%2fsecret.txt"),
        format!("/sub/..%2f..%2f{name}%2fsecret.txt"),
        format!("/%2e%2e%5c{name}%5csecret.txt"),
        format!("/..%5c{name}%5csecret.txt"),
        format!("/%2E%2E/{name}/secret.txt"),
        format!("/.%2e/{name}/secret.txt"),
        format!("/%252e%252e/{name}/secret.txt"),
        format!("/%252e%252e%252f{name}%252fsecret.txt"),
        format!("/%c0%ae%c0%ae/{name}/secret.txt"),
        format!("/sub/../../{name}/secret.txt"),
        format!("/../{root_name}/../{name}/secret.txt"),
        format!("/{outside_abs}/secret.txt"),
        format!("/%2f{}/secret.txt", outside_abs.trim_start_matches('/')),
        "/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd".to_string(),
    ] {
        let mut s = TcpStream::connect(d.addr).await.expect("connect");
        let resp = exchange(&mut s, &get(&d, &path, "Connection: close\r\n")).await;
        let Some(resp) = resp else {
            continue; // Closed without an answer: nothing leaked either.
        };
        let body = resp.body_text();
        assert!(
            !body.contains("TOP SECRET") && !body.contains("root:"),
            "{path} leaked: {body}"
        );
        assert!(
            (400..500).contains(&resp.status),
            "{path}: {} {body}",
            resp.status
        );
    }
    // What is inside is served, through a plain path.
    let ok = reqwest::get(d.url("/sub/inner.txt"))
        .await
        .expect("request");
    assert_eq!(ok.text().await.expect("body"), "inner file");
    d.wait_for_stdout(|l| l.contains("resolves outside the web root"));
}

// ---------------------------------------------------------------------
// HTTPS and WSS
// ---------------------------------------------------------------------

/// The next JSON text frame of a WebSocket, skipping pings.
async fn next_json<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut tokio_tungstenite::WebSocketStream<S>,
) -> serde_json::Value {
    loop {
        let msg = tokio::time::timeout(TIMEOUT, ws.next())
            .await
            .expect("a frame within the timeout")
            .expect("connection open")
            .expect("a valid frame");
        if let Message::Text(t) = msg {
            return serde_json::from_str(&t).expect("JSON frame");
        }
    }
}

/// A self-signed certificate for localhost and 127.0.0.1, written as PEM
/// files, and a client configuration that trusts it and nothing else.
struct TestCert {
    dir: tempfile::TempDir,
    client: Arc<rustls::ClientConfig>,
}

impl TestCert {
    fn new() -> TestCert {
        let made = rcgen::generate_simple_self_signed(vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
        ])
        .expect("certificate");
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("cert.pem"), made.cert.pem()).expect("write");
        std::fs::write(dir.path().join("key.pem"), made.signing_key.serialize_pem())
            .expect("write");
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(made.cert.der().clone())
            .expect("trust the test cert");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        TestCert {
            dir,
            client: Arc::new(client),
        }
    }

    fn path(&self, file: &str) -> String {
        self.dir
            .path()
            .join(file)
            .to_str()
            .expect("utf-8 path")
            .to_string()
    }

    /// A TLS connection to `d` that checks the certificate for `name`.
    async fn connect(
        &self,
        d: &Daemon,
        name: &'static str,
    ) -> tokio_rustls::client::TlsStream<TcpStream> {
        let tcp = TcpStream::connect(d.addr).await.expect("connect");
        let name = ServerName::try_from(name).expect("server name");
        tokio::time::timeout(
            TIMEOUT,
            TlsConnector::from(self.client.clone()).connect(name, tcp),
        )
        .await
        .expect("handshake within the timeout")
        .expect("TLS handshake")
    }
}

#[tokio::test]
async fn https_and_wss_with_a_test_certificate() {
    let cert = TestCert::new();
    let config = config_file(cert.dir.path(), "[limits]\nhandshake_timeout_secs = 1\n");
    let d = Daemon::start(&[
        "--tls-cert",
        &cert.path("cert.pem"),
        "--tls-key",
        &cert.path("key.pem"),
        "--config",
        &config,
    ]);
    assert_eq!(d.scheme, "https", "the ready line says https://");
    let port = d.addr.port();

    // HTTPS, by name and by address, with keep-alive.
    let mut tls = cert.connect(&d, "localhost").await;
    for path in ["/healthz", "/ws.js"] {
        let req = format!("GET {path} HTTP/1.1\r\nHost: localhost:{port}\r\n\r\n");
        let resp = exchange(&mut tls, &req).await.expect("a response");
        assert_eq!(resp.status, 200, "{path}");
    }
    let mut tls = cert.connect(&d, "127.0.0.1").await;
    let resp = exchange(&mut tls, &get(&d, "/healthz", ""))
        .await
        .expect("a response");
    assert_eq!((resp.status, resp.body_text().as_str()), (200, "ok\n"));

    // WSS: a page of https://localhost:PORT opens its WebSocket and gets a
    // `ws write`.
    let origin = format!("https://localhost:{port}");
    let mut req = format!("wss://localhost:{port}/ws?page=/secure.html")
        .into_client_request()
        .expect("request");
    req.headers_mut()
        .insert("origin", HeaderValue::from_str(&origin).expect("origin"));
    let tls = cert.connect(&d, "localhost").await;
    let (mut ws, _) = tokio_tungstenite::client_async(req, tls)
        .await
        .expect("wss upgrade");
    assert_eq!(next_json(&mut ws).await["type"], "hello");
    ws.send(Message::text("ws register status"))
        .await
        .expect("send");
    assert_eq!(next_json(&mut ws).await["type"], "reply");
    d.cli(&["ws", "write", "status", "over wss"])
        .assert_exit_code(0)
        .assert_stdout_contains("sent to 1 connection");
    let write = next_json(&mut ws).await;
    assert_eq!(
        (write["type"].as_str(), write["text"].as_str()),
        (Some("write"), Some("over wss"))
    );
    let lines = listing(&d);
    assert!(
        lines[0].contains(&format!("page=https://localhost:{port}/secure.html")),
        "{lines:?}"
    );

    // Over TLS the daemon's origin is https://: the http:// one is foreign.
    let mut tls = cert.connect(&d, "localhost").await;
    let wrong = format!("Origin: http://localhost:{port}\r\n");
    let resp = exchange(
        &mut tls,
        &upgrade_request(&format!("localhost:{port}"), &wrong),
    )
    .await
    .expect("a response");
    assert_eq!(resp.status, 403);

    // Plain HTTP on the TLS port gets no HTTP answer.
    let mut plain = TcpStream::connect(d.addr).await.expect("connect");
    plain
        .write_all(get(&d, "/healthz", "").as_bytes())
        .await
        .expect("write");
    let (_, got) = wait_eof(&mut plain).await;
    assert!(!got.starts_with(b"HTTP/"), "{got:?}");

    // A client that connects and never starts its handshake is dropped
    // after the handshake timeout (1 s here).
    let mut silent = TcpStream::connect(d.addr).await.expect("connect");
    let (waited, got) = wait_eof(&mut silent).await;
    assert!(got.is_empty(), "{got:?}");
    assert!(
        waited >= Duration::from_millis(900),
        "dropped after {waited:?}"
    );
    ws.close(None).await.expect("close");
}

#[tokio::test]
async fn unusable_certificates_stop_the_start_with_a_clear_error() {
    let cert = TestCert::new();
    let other = TestCert::new();
    for (cert_file, key_file, says) in [
        (
            cert.path("cert.pem"),
            other.path("key.pem"),
            "certificate and key",
        ),
        (
            cert.path("missing.pem"),
            cert.path("key.pem"),
            "missing.pem",
        ),
    ] {
        let out = Daemon::builder()
            .args(&["--tls-cert", &cert_file, "--tls-key", &key_file])
            .spawn()
            .wait_exit();
        assert_ne!(out.code, Some(0), "{out}");
        out.assert_stderr_contains(says);
    }
}

// ---------------------------------------------------------------------
// Handshake timeout, connection limits, body limits
// ---------------------------------------------------------------------

#[tokio::test]
async fn clients_that_send_nothing_are_dropped_after_the_handshake_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_file(dir.path(), "[limits]\nhandshake_timeout_secs = 1\n");
    let d = Daemon::start(&["--config", &config]);

    let mut silent = TcpStream::connect(d.addr).await.expect("connect");
    let (waited, got) = wait_eof(&mut silent).await;
    assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
    assert!(
        waited >= Duration::from_millis(900),
        "dropped after {waited:?}"
    );

    // Half a request head is no better.
    let mut slow = TcpStream::connect(d.addr).await.expect("connect");
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    let (waited, got) = wait_eof(&mut slow).await;
    assert!(
        waited >= Duration::from_millis(900),
        "dropped after {waited:?}"
    );
    assert!(!String::from_utf8_lossy(&got).contains(" 200 "));

    // An idle keep-alive connection is closed after the same time, once
    // its request was answered.
    let mut idle = TcpStream::connect(d.addr).await.expect("connect");
    let resp = exchange(&mut idle, &get(&d, "/healthz", ""))
        .await
        .expect("a response");
    assert_eq!(resp.status, 200);
    wait_eof(&mut idle).await;

    // The daemon goes on serving.
    let ok = reqwest::get(d.url("/healthz")).await.expect("request");
    assert_eq!(ok.status(), 200);
}

#[tokio::test]
async fn websocket_limits_in_all_and_per_address() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_file(
        dir.path(),
        "[limits]\nmax_connections = 3\nmax_connections_per_ip = 2\n",
    );
    let d = Daemon::start(&["--config", &config]);
    let origin = own_origin(&d);
    let mut a1 = Page::open_from(&d, lo(1), Some(&origin)).await.expect("a1");
    let _a2 = Page::open_from(&d, lo(1), Some(&origin)).await.expect("a2");
    let err = Page::open_from(&d, lo(1), Some(&origin))
        .await
        .err()
        .expect("a third from 127.0.0.1 is refused");
    assert!(err.to_string().contains("503"), "{err}");
    d.wait_for_stdout(|l| {
        l.contains("refused WebSocket from 127.0.0.1:")
            && l.contains("too many connections from 127.0.0.1 (2 at most)")
    });

    let _b = Page::open_from(&d, lo(2), Some(&origin))
        .await
        .expect("another address is admitted");
    let err = Page::open_from(&d, lo(3), Some(&origin))
        .await
        .err()
        .expect("a fourth in all is refused");
    assert!(err.to_string().contains("503"), "{err}");
    d.wait_for_stdout(|l| {
        l.contains("refused WebSocket from 127.0.0.3:") && l.contains("(3 at most)")
    });

    // The daemon keeps serving the pages it has and plain HTTP.
    d.cli(&["ws", "write", &a1.index.to_string(), "still here"])
        .assert_exit_code(0);
    assert_eq!(a1.recv().await["text"], "still here");
    assert_eq!(wait_for_count(&d, 3).await.len(), 3);
    let ok = reqwest::get(d.url("/healthz")).await.expect("request");
    assert_eq!(ok.status(), 200);
}

#[tokio::test]
async fn every_handshake_past_the_limit_gets_a_503_even_in_a_race() {
    // Many handshakes at once from one address: several pass the first
    // check before any of them has opened its page. Each one over the
    // limit must still get an answer (a 503), never a silent close.
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_file(dir.path(), "[limits]\nmax_connections_per_ip = 2\n");
    let d = Daemon::start(&["--config", &config]);
    let mut socks = Vec::new();
    for _ in 0..40 {
        socks.push(TcpStream::connect(d.addr).await.expect("connect"));
    }
    let request = upgrade_request(&d.addr.to_string(), "");
    for s in &mut socks {
        s.write_all(request.as_bytes()).await.expect("write");
    }
    let mut statuses = Vec::new();
    for s in &mut socks {
        let answer = read_response(s).await;
        statuses.push(answer.map(|r| r.status));
    }
    let upgraded = statuses.iter().filter(|s| **s == Some(101)).count();
    let refused = statuses.iter().filter(|s| **s == Some(503)).count();
    assert_eq!((upgraded, refused), (2, 38), "{statuses:?}");
}

#[tokio::test]
async fn tcp_limits_refuse_at_accept_with_503() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_file(
        dir.path(),
        "[limits]\nmax_tcp_connections = 3\nmax_tcp_connections_per_ip = 2\n\
         handshake_timeout_secs = 60\n",
    );
    let d = Daemon::start(&["--config", &config]);

    // A WebSocket keeps its TCP connection counted after the upgrade.
    let page = Page::open_from(&d, lo(1), Some(&own_origin(&d)))
        .await
        .expect("page");
    let _idle = connect_from(&d, lo(1)).await;
    let mut third = connect_from(&d, lo(1)).await;
    let resp = read_response(&mut third).await.expect("a 503");
    assert_eq!(resp.status, 503, "{resp:?}");
    assert_eq!(
        resp.body_text(),
        "too many open connections from 127.0.0.1 (2 at most)\n"
    );
    d.wait_for_stdout(|l| {
        l.contains("refused connection from 127.0.0.1:")
            && l.contains("too many open connections from 127.0.0.1 (2 at most)")
    });

    // Another address is admitted, up to the limit in all.
    let mut other = connect_from(&d, lo(2)).await;
    let resp = exchange(&mut other, &get(&d, "/healthz", ""))
        .await
        .expect("a response");
    assert_eq!(resp.status, 200);
    let mut fourth = connect_from(&d, lo(3)).await;
    let resp = read_response(&mut fourth).await.expect("a 503");
    assert_eq!(resp.status, 503);
    assert_eq!(resp.body_text(), "too many open connections (3 at most)\n");

    // When the page goes, its place is free again.
    page.close().await;
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let mut s = connect_from(&d, lo(1)).await;
        let resp = exchange(&mut s, &get(&d, "/healthz", "Connection: close\r\n")).await;
        if resp.as_ref().is_some_and(|r| r.status == 200) {
            break;
        }
        assert!(Instant::now() < deadline, "still refused: {resp:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let resp = exchange(&mut other, &get(&d, "/metrics", ""))
        .await
        .expect("a response");
    let metrics = parse_metrics(&resp.body_text());
    assert!(metrics["pagewire_tcp_refused_total"] >= 2.0, "{metrics:?}");
}

#[tokio::test]
async fn command_bodies_over_the_limit_get_413() {
    let d = Daemon::start::<&str>(&[]);
    let mut page = Page::with_names(&d, &["status"]).await;
    let big = format!("ws write status \"{}\"", "x".repeat(100 * 1024));
    let http = reqwest::Client::new();
    let resp = http
        .post(d.url("/api/command"))
        .body(big.clone())
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 413);
    let v: serde_json::Value = resp.json().await.expect("JSON answer");
    assert_eq!(v["ok"], false);
    assert!(
        v["output"].as_str().unwrap_or("").contains("too large"),
        "{v}"
    );
    let resp = http
        .post(d.url("/shell"))
        .body(big)
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 413);
    d.wait_for_stdout(|l| l.contains("refused 127.0.0.1:") && l.contains("too large"));
    // A request head over 64 KiB is refused before any handler runs.
    let mut s = TcpStream::connect(d.addr).await.expect("connect");
    let huge = format!("X-Filler: {}\r\n", "y".repeat(70 * 1024));
    let resp = exchange(&mut s, &get(&d, "/healthz", &huge))
        .await
        .expect("a response");
    assert_eq!(resp.status, 431);
    // Nothing was sent, and the daemon goes on.
    d.cli(&["ws", "write", "status", "small"])
        .assert_exit_code(0);
    assert_eq!(page.recv().await["text"], "small");
}

#[tokio::test]
async fn running_out_of_file_descriptors_is_survived() {
    // The daemon with a small descriptor limit, so that accept fails with
    // EMFILE after a few dozen connections.
    let dir = tempfile::tempdir().expect("tempdir");
    let control = dir.path().join("ctl.sock");
    let mut cmd = std::process::Command::new("sh");
    cmd.args(["-c", "ulimit -n 32 && exec \"$0\" \"$@\""])
        .arg(crate::support::bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--control"])
        .arg(&control)
        .env("PAGEWIRE_STATE_DIR", dir.path().join("state"))
        .stdin(std::process::Stdio::null());
    let daemon = crate::support::Process::spawn(cmd);
    let ready = daemon.wait_for_stdout(|l| l.starts_with("pagewire listening on http://"));
    let addr: SocketAddr = ready["pagewire listening on http://".len()..]
        .split(' ')
        .next()
        .and_then(|a| a.parse().ok())
        .expect("address in the ready line");

    // The kernel completes these handshakes whether or not the daemon can
    // accept them.
    let mut held = Vec::new();
    for _ in 0..40 {
        held.push(TcpStream::connect(addr).await.expect("connect"));
    }
    daemon.wait_for_stdout(|l| l.contains("accept failed") && l.contains("retrying in"));
    drop(held);

    // Once descriptors are free again, it serves as before.
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        let req = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        let resp = exchange(&mut s, &req).await;
        if resp.as_ref().is_some_and(|r| r.status == 200) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not serving again: {resp:?}\n{}",
            daemon.snapshot()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------
// Shutdown
// ---------------------------------------------------------------------

#[tokio::test]
async fn sigterm_closes_pages_with_1001_finishes_requests_and_exits_0() {
    let d = Daemon::start::<&str>(&[]);
    let mut pages = Vec::new();
    for _ in 0..3 {
        pages.push(Page::with_names(&d, &["status"]).await);
    }
    // A request in flight: its handler is waiting for the body, as the
    // `100 Continue` proves.
    let mut inflight = TcpStream::connect(d.addr).await.expect("connect");
    let head = format!(
        "POST /api/command HTTP/1.1\r\nHost: {}\r\nContent-Type: text/plain\r\n\
         Content-Length: 2\r\nExpect: 100-continue\r\n\r\n",
        d.addr
    );
    let cont = exchange(&mut inflight, &head).await.expect("100 Continue");
    assert_eq!(cont.status, 100);

    let pid = d.process().id().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status();
    assert!(sent.is_ok_and(|s| s.success()));
    d.wait_for_stdout(|l| l.contains("shutting down"));
    for p in pages {
        let closed = p.closed().await;
        assert_eq!(
            (closed.code, closed.reason.as_str()),
            (Some(1001), "server shutting down")
        );
    }
    // The request started before the signal is answered.
    let resp = exchange(&mut inflight, "ws").await.expect("an answer");
    assert_eq!(resp.status, 200, "{}", resp.body_text());
    assert!(
        resp.body_text().contains("\"ok\":true"),
        "{}",
        resp.body_text()
    );

    let control = d.control_path().to_path_buf();
    // The daemon may have exited by now; it stays our unreaped child, so
    // the second SIGTERM that stop() sends still finds it.
    let out = d.stop();
    out.assert_exit_code(0);
    assert!(!control.exists(), "the control socket is removed");
    // New clients are refused by the kernel once it is gone.
}

// ---------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------

/// `name{labels} value` lines into a map; comment lines skipped.
pub(crate) fn parse_metrics(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect()
}

#[tokio::test]
async fn metrics_count_connections_traffic_and_commands() {
    let d = Daemon::start::<&str>(&[]);
    let mut page = Page::with_names(&d, &["status"]).await;
    page.send("ws close").await; // a page may not: a page error
    assert_eq!(page.recv().await["type"], "error");
    d.cli(&["ws", "write", "status", "hello"])
        .assert_exit_code(0);
    assert_eq!(page.recv().await["text"], "hello");
    d.cli(&["ws", "close", "999"]).assert_exit_code(1);
    let http = reqwest::Client::new();
    let ok = http
        .post(d.url("/api/command"))
        .body("ws")
        .send()
        .await
        .expect("request");
    assert_eq!(ok.status(), 200);
    let bad = http
        .post(d.url("/api/command"))
        .body("bogus")
        .send()
        .await
        .expect("request");
    assert_eq!(bad.status(), 400);

    let resp = http.get(d.url("/metrics")).send().await.expect("request");
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap_or("")
        .starts_with("text/plain; version=0.0.4"));
    let text = resp.text().await.expect("body");
    let m = parse_metrics(&text);
    let value = |k: &str| {
        *m.get(k)
            .unwrap_or_else(|| panic!("metric {k} missing:\n{text}"))
    };
    assert_eq!(value("pagewire_connections"), 1.0);
    assert_eq!(value("pagewire_names"), 1.0);
    assert!(
        value("pagewire_tcp_connections") >= 2.0,
        "the page and this request"
    );
    assert_eq!(value("pagewire_connections_opened_total"), 1.0);
    assert_eq!(value("pagewire_messages_in_total"), 2.0);
    assert_eq!(
        value("pagewire_bytes_in_total"),
        ("ws register status".len() + "ws close".len()) as f64
    );
    // hello, the register reply, the error, the write.
    assert!(value("pagewire_frames_out_total") >= 4.0, "{text}");
    assert!(value("pagewire_bytes_out_total") > 0.0, "{text}");
    assert_eq!(value("pagewire_slow_consumer_disconnects_total"), 0.0);
    for (door, result, n) in [
        ("page", "ok", 1.0),
        ("page", "error", 1.0),
        ("control", "ok", 1.0),
        ("control", "error", 1.0),
        ("http", "ok", 1.0),
        ("http", "error", 1.0),
    ] {
        assert_eq!(
            value(&format!(
                "pagewire_commands_total{{door=\"{door}\",result=\"{result}\"}}"
            )),
            n,
            "{door} {result}"
        );
    }
    // Every metric says what it is.
    for name in m.keys() {
        let base = name.split('{').next().unwrap_or(name);
        assert!(text.contains(&format!("# TYPE {base} ")), "{base}");
        assert!(text.contains(&format!("# HELP {base} ")), "{base}");
    }
}
