//! The HTTP doors: `/api/command`, `/shell`, static files, health and
//! metrics, with and without a token, from this site and from another.

use std::os::unix::fs::symlink;

use reqwest::StatusCode;
use serde_json::Value;

use crate::page::Page;
use crate::support::Daemon;

async fn post(d: &Daemon, body: &str, headers: &[(&str, &str)]) -> (StatusCode, Value) {
    let mut req = reqwest::Client::new()
        .post(d.url("/api/command"))
        .body(body.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status();
    (status, resp.json().await.expect("JSON answer"))
}

#[tokio::test]
async fn api_command_runs_commands_locally_without_a_token() {
    let d = Daemon::start::<&str>(&[]);
    let mut p = Page::with_names(&d, &["status"]).await;
    let (status, v) = post(&d, "ws write status \"over http\"", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(
        v,
        serde_json::json!({"ok": true, "output": "sent to 1 connection"})
    );
    assert_eq!(p.recv().await["text"], "over http");

    let (status, v) = post(
        &d,
        r#"{"cmd": "ws write status json"}"#,
        &[("content-type", "application/json")],
    )
    .await;
    assert_eq!((status, v["ok"].as_bool()), (StatusCode::OK, Some(true)));
    assert_eq!(p.recv().await["text"], "json");

    // `curl -d '{"cmd": ...}'` labels its body a form: JSON all the same.
    let (status, v) = post(
        &d,
        r#" {"cmd": "ws write status sniffed"}"#,
        &[("content-type", "application/x-www-form-urlencoded")],
    )
    .await;
    assert_eq!(
        (status, v["ok"].as_bool()),
        (StatusCode::OK, Some(true)),
        "{v}"
    );
    assert_eq!(p.recv().await["text"], "sniffed");

    // A proxy's own login (nginx `auth_basic`) is not an attempt at a
    // token the daemon does not have.
    let (status, v) = post(
        &d,
        "ws write status behind-a-login",
        &[("authorization", "Basic eDp5")],
    )
    .await;
    assert_eq!(
        (status, v["ok"].as_bool()),
        (StatusCode::OK, Some(true)),
        "{v}"
    );
    assert_eq!(p.recv().await["text"], "behind-a-login");

    let (status, v) = post(&d, "ws write", &[]).await;
    assert_eq!(status, 400);
    assert_eq!(v["ok"], false);
    assert!(
        v["output"].as_str().unwrap_or("").contains("missing"),
        "{v}"
    );
}

#[tokio::test]
async fn a_configured_token_is_required() {
    let d = Daemon::builder().args(&["--token", "s3cret"]).start();
    let mut p = Page::with_names(&d, &["status"]).await;
    let (status, v) = post(&d, "ws write status nope", &[]).await;
    assert_eq!(status, 401, "{v}");
    assert_eq!(v["ok"], false);
    // Nor does a dry run list the pages without the token.
    let (status, v) = post(&d, "run --dry-run --to * x", &[]).await;
    assert_eq!(status, 401, "{v}");
    let output = v["output"].as_str().unwrap_or("");
    assert!(output.contains("'ws who' lists"), "{v}");
    assert!(!output.contains("names=status"), "{v}");
    let (status, _) = post(
        &d,
        "ws write status nope",
        &[("authorization", "Bearer wrong")],
    )
    .await;
    assert_eq!(status, 401);
    let (status, v) = post(
        &d,
        "ws write status yes",
        &[("authorization", "Bearer s3cret")],
    )
    .await;
    assert_eq!((status, v["ok"].as_bool()), (StatusCode::OK, Some(true)));
    // The first thing the page sees is the authorised write.
    assert_eq!(p.recv().await["text"], "yes");
    // The token never appears in what the daemon prints.
    assert!(!d.process().stdout_lines().join("\n").contains("s3cret"));
}

#[tokio::test]
async fn token_from_the_environment() {
    let d = Daemon::builder().env("PAGEWIRE_TOKEN", "envtok").start();
    let (status, _) = post(&d, "ws", &[]).await;
    assert_eq!(status, 401);
    let (status, _) = post(&d, "ws", &[("authorization", "Bearer envtok")]).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn cross_site_requests_are_refused() {
    let d = Daemon::start::<&str>(&[]);
    let (status, v) = post(&d, "ws close", &[("origin", "http://evil.example")]).await;
    assert_eq!(status, 403, "{v}");
    let (status, _) = post(&d, "ws close", &[("sec-fetch-site", "cross-site")]).await;
    assert_eq!(status, 403);
    let own = format!("http://{}", d.addr);
    let (status, _) = post(
        &d,
        "ws",
        &[("origin", &own), ("sec-fetch-site", "same-origin")],
    )
    .await;
    assert_eq!(status, 200);
    let resp = reqwest::Client::new()
        .get(d.url("/shell?cmd=ws"))
        .header("origin", "http://evil.example")
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 403);
}

#[tokio::test]
async fn shell_answers_plain_text() {
    let d = Daemon::start::<&str>(&[]);
    let resp = reqwest::get(d.url("/shell?cmd=help%20ws%20write"))
        .await
        .expect("request");
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap_or("")
        .starts_with("text/plain"));
    assert!(resp.text().await.expect("body").contains("ws write TARGET"));
    let resp = reqwest::get(d.url("/shell?cmd=nonsense"))
        .await
        .expect("request");
    assert_eq!(resp.status(), 400);
}

#[tokio::test]
async fn demo_site_ws_js_health_and_metrics() {
    let d = Daemon::start::<&str>(&[]);
    let index = reqwest::get(d.url("/")).await.expect("request");
    assert_eq!(index.status(), 200);
    assert!(index.text().await.expect("body").contains("ws.js"));
    let js = reqwest::get(d.url("/ws.js")).await.expect("request");
    assert!(js.headers()["content-type"]
        .to_str()
        .unwrap_or("")
        .contains("javascript"));
    let etag = js.headers()["etag"].to_str().expect("etag").to_string();
    let again = reqwest::Client::new()
        .get(d.url("/ws.js"))
        .header("if-none-match", &etag)
        .send()
        .await
        .expect("request");
    assert_eq!(again.status(), 304);
    assert_eq!(
        reqwest::get(d.url("/healthz"))
            .await
            .expect("request")
            .status(),
        200
    );
    let _p = Page::with_names(&d, &["status"]).await;
    let m = reqwest::get(d.url("/metrics"))
        .await
        .expect("request")
        .text()
        .await
        .expect("body");
    assert!(m.contains("pagewire_connections 1"), "{m}");
    assert!(m.contains("pagewire_names 1"), "{m}");
    assert!(
        m.contains("pagewire_commands_total{door=\"page\",result=\"ok\"} 1"),
        "{m}"
    );
}

#[tokio::test]
async fn nothing_outside_the_web_root_is_served() {
    let outside = tempfile::tempdir().expect("tempdir");
    std::fs::write(outside.path().join("secret.txt"), "TOP SECRET").expect("write");
    let root = tempfile::tempdir().expect("tempdir");
    std::fs::write(root.path().join("hello.txt"), "hello file").expect("write");
    symlink(
        outside.path().join("secret.txt"),
        root.path().join("link.txt"),
    )
    .expect("symlink");
    symlink(outside.path(), root.path().join("dir")).expect("symlink");
    let d = Daemon::start(&["--root", root.path().to_str().expect("utf-8 path")]);

    let ok = reqwest::get(d.url("/hello.txt")).await.expect("request");
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.text().await.expect("body"), "hello file");

    let secret_name = outside
        .path()
        .file_name()
        .and_then(|n| n.to_str())
        .expect("name");
    for path in [
        "/link.txt".to_string(),
        "/dir/secret.txt".to_string(),
        format!("/../{secret_name}/secret.txt"),
        format!("/%2e%2e/{secret_name}/secret.txt"),
        format!("/..%2f{secret_name}%2fsecret.txt"),
        format!("/%2e%2e%2f{secret_name}%2fsecret.txt"),
    ] {
        // Send the path raw: an HTTP client would normalise the dots away.
        let body = raw_get(&d, &path).await;
        assert!(!body.contains("TOP SECRET"), "{path} leaked: {body}");
        assert!(body.starts_with("HTTP/1.1 4"), "{path}: {body}");
    }
    // ws.js stays built in when the root has none.
    assert_eq!(
        reqwest::get(d.url("/ws.js"))
            .await
            .expect("request")
            .status(),
        200
    );
}

async fn raw_get(d: &Daemon, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(d.addr)
        .await
        .expect("connect");
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        d.addr
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(crate::support::TIMEOUT, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}
