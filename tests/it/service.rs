//! Running pagewire as a service: the base path, forwarding headers from
//! trusted proxies (and from anyone else), where settings come from,
//! `check-config`, `--print-config`, the JSON log, readiness, systemd's
//! notifications and the shell completions.

use std::net::{IpAddr, SocketAddr};
use std::os::unix::net::UnixDatagram;

use reqwest::StatusCode;
use serde_json::Value;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::page::{listing, Page};
use crate::support::{command, run_cli, Daemon, Process, TIMEOUT};

/// An HTTP client from `source` (any 127.x.y.z works on Linux), not
/// following redirects.
fn client_from(source: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .local_address(source.parse::<IpAddr>().expect("address"))
        .build()
        .expect("an HTTP client")
}

async fn get(
    client: &reqwest::Client,
    url: String,
    headers: &[(&str, &str)],
) -> (StatusCode, String) {
    let mut req = client.get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("GET");
    let status = resp.status();
    let location = resp
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = resp.text().await.expect("body");
    (status, location.unwrap_or(body))
}

#[tokio::test]
async fn everything_is_served_under_the_base_path() {
    let d = Daemon::start(&["--base-path", "/status/"]);
    let ready = d.wait_for_stdout(|l| l.starts_with("pagewire listening on "));
    assert!(
        ready.contains(&format!("http://{}/status/ (", d.addr)),
        "{ready}"
    );
    let c = client_from("127.0.0.1");
    for (path, status, has) in [
        ("/status/", 200, "Open WebSocket"),
        ("/status/index.html", 200, "src=\"ws.js\""),
        ("/status/ws.js", 200, "function pageClient"),
        ("/status/demo.js", 200, "api/command"),
        ("/status/healthz", 200, "ok"),
        ("/status/readyz", 200, "listening: ok"),
        ("/status/metrics", 200, "pagewire_"),
        ("/status/shell?cmd=help", 200, "ws write"),
        ("/status/admin", 200, "src=\"admin/admin.js\""),
        ("/status/admin/admin.js", 200, "admin/ws"),
        ("/status/admin/", 308, "../admin"),
        ("/admin", 404, "not found"),
        ("/status", 308, "/status/"),
        ("/status?x=1", 308, "/status/?x=1"),
        ("/", 404, "not found"),
        ("/ws.js", 404, "not found"),
        ("/healthz", 404, "not found"),
        ("/statusx/ws.js", 404, "not found"),
    ] {
        let (got, body) = get(&c, d.url(path), &[]).await;
        assert_eq!(got.as_u16(), status, "{path}: {body}");
        assert!(body.contains(has), "{path}: {body}");
    }
    // A page's WebSocket, and every door's command, under the prefix.
    let mut page = Page::open_at(&d, "/status/ws").await;
    page.send("ws register status").await;
    assert_eq!(page.recv().await["type"], "reply");
    d.cli(&["ws", "write", "status", "through the base path"])
        .assert_exit_code(0)
        .assert_stdout_contains("sent to 1 connection");
    assert_eq!(page.recv().await["text"], "through the base path");
    let answer: Value = c
        .post(d.url("/status/api/command"))
        .body("ws write status again")
        .send()
        .await
        .expect("POST")
        .json()
        .await
        .expect("JSON");
    assert_eq!(answer["ok"], true, "{answer}");
    assert_eq!(page.recv().await["text"], "again");
    // Nothing answers at /ws outside the prefix.
    let outside = Page::open_with_origin(&d, Some(&format!("http://{}", d.addr))).await;
    assert!(outside.is_err(), "a WebSocket at /ws outside the base path");
}

/// Opens a WebSocket from 127.0.0.1 with extra request headers.
async fn ws_with(
    d: &Daemon,
    headers: &[(&'static str, &str)],
) -> Result<Page, tokio_tungstenite::tungstenite::Error> {
    let mut req = format!("ws://{}/ws?page=/proxied.html", d.addr)
        .into_client_request()
        .expect("request");
    for (k, v) in headers {
        req.headers_mut()
            .insert(*k, HeaderValue::from_str(v).expect("header"));
    }
    let (ws, _) = tokio_tungstenite::connect_async(req).await?;
    Ok(Page::from_stream(ws).await)
}

#[tokio::test]
async fn only_a_trusted_proxy_may_name_the_client_and_its_scheme() {
    let d = Daemon::start(&[
        "--access",
        "private",
        "--trusted-proxy",
        "127.0.0.1/32",
        "--limits-max-connections-per-ip",
        "1",
    ]);
    let proxy = client_from("127.0.0.1");
    let stranger = client_from("127.0.0.2");
    let public = [("x-forwarded-for", "203.0.113.9")];
    let private = [("x-forwarded-for", "192.168.1.5")];
    // The access mode judges the client the proxy names...
    let (status, _) = get(&proxy, d.url("/healthz"), &public).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let forwarded = [("forwarded", "for=203.0.113.9;proto=https")];
    let (status, _) = get(&proxy, d.url("/healthz"), &forwarded).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = get(&proxy, d.url("/healthz"), &private).await;
    assert_eq!(status, StatusCode::OK);
    // ...and anyone else's headers are not believed.
    let (status, _) = get(&stranger, d.url("/healthz"), &public).await;
    assert_eq!(status, StatusCode::OK);
    d.wait_for_stdout(|l| l.contains("refused 203.0.113.9:0: address not admitted"));

    // Operator rights without a token are a loopback client's: not the
    // private client behind the proxy, and not a request that names a
    // forwarded client nobody vouches for.
    let post = |c: &reqwest::Client, headers: &[(&'static str, &'static str)]| {
        let mut req = c.post(d.url("/api/command")).body("ws close");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send()
    };
    let as_private = post(&proxy, &[("x-forwarded-for", "192.168.1.5")])
        .await
        .expect("POST");
    assert_eq!(as_private.status(), StatusCode::UNAUTHORIZED);
    let unproven = post(&stranger, &[("x-forwarded-for", "127.0.0.1")])
        .await
        .expect("POST");
    assert_eq!(unproven.status(), StatusCode::UNAUTHORIZED);
    let local = post(&proxy, &[]).await.expect("POST");
    assert_eq!(local.status(), StatusCode::OK);
    // The admin console, the same: only the loopback client itself.
    for (who, client, headers, want) in [
        ("loopback", &proxy, &[][..], StatusCode::OK),
        (
            "a private client via the proxy",
            &proxy,
            &private[..],
            StatusCode::FORBIDDEN,
        ),
        (
            "a request naming a client unproven",
            &stranger,
            &[("x-forwarded-for", "127.0.0.1")][..],
            StatusCode::FORBIDDEN,
        ),
    ] {
        let (status, body) = get(client, d.url("/admin"), headers).await;
        assert_eq!(status, want, "{who}: {body}");
    }

    // WebSockets: the listing and the per-address limit see the clients.
    let origin = format!("http://{}", d.addr);
    let a = ws_with(
        &d,
        &[("x-forwarded-for", "192.168.1.5"), ("origin", &origin)],
    )
    .await
    .expect("first client");
    let b = ws_with(
        &d,
        &[("x-forwarded-for", "192.168.1.6"), ("origin", &origin)],
    )
    .await
    .expect("second client, another address");
    let again = ws_with(
        &d,
        &[("x-forwarded-for", "192.168.1.5"), ("origin", &origin)],
    )
    .await;
    assert!(
        again.is_err(),
        "a second WebSocket from 192.168.1.5 is over its limit"
    );
    let lines = listing(&d);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("{} ", a.index)) && l.contains("remote=192.168.1.5:0")),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("remote=192.168.1.6:0")),
        "{lines:?}"
    );
    drop((a, b));

    // The scheme: a page served over https by the proxy shows an https
    // Origin, which is this daemon's own only when the proxy says so.
    let https_origin = format!("https://{}", d.addr);
    let through_tls = ws_with(
        &d,
        &[
            ("x-forwarded-for", "192.168.1.7"),
            ("x-forwarded-proto", "https"),
            ("origin", &https_origin),
        ],
    )
    .await;
    assert!(through_tls.is_ok(), "{:?}", through_tls.err());
    let (status, body) = get(
        &stranger,
        d.url("/shell?cmd=ws"),
        &[("x-forwarded-proto", "https"), ("origin", &https_origin)],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("cross-site"), "{body}");
}

/// `pagewire serve ARGS --print-config` with `env`, and what it printed.
fn print_config(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut cmd = command(["serve"]);
    cmd.args(args).arg("--print-config");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = Process::spawn(cmd).wait_exit();
    out.assert_exit_code(0);
    out.stdout
}

/// The value of `key` in the TOML text `text` (the first one).
fn value_of(text: &str, key: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key} = ")))
        .unwrap_or_else(|| panic!("no {key} in\n{text}"))
        .to_owned()
}

#[test]
fn settings_come_from_flags_then_the_environment_then_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("pagewire.toml");
    std::fs::write(
        &file,
        "access = \"private\"\nlisten = \"127.0.0.1:7001\"\n[limits]\nmax_connections = 10\n\
         [heartbeat]\ninterval_secs = 11\ntimeout_secs = 40\n",
    )
    .expect("write");
    let file = file.to_str().expect("path");
    let env = [
        ("PAGEWIRE_LIMITS_MAX_CONNECTIONS", "20"),
        ("PAGEWIRE_ACCESS", "public"),
        ("PAGEWIRE_ALLOW", "10.0.0.0/8,192.168.0.0/16"),
    ];
    let all = print_config(&["--config", file, "--limits-max-connections", "30"], &env);
    assert_eq!(value_of(&all, "max_connections"), "30", "the flag wins");
    assert_eq!(
        value_of(&all, "access"),
        "\"public\"",
        "then the environment"
    );
    assert_eq!(
        value_of(&all, "listen"),
        "\"127.0.0.1:7001\"",
        "then the file"
    );
    assert_eq!(value_of(&all, "interval_secs"), "11");
    assert_eq!(value_of(&all, "timeout_secs"), "40");
    assert_eq!(
        value_of(&all, "allow"),
        "[\"10.0.0.0/8\", \"192.168.0.0/16\"]"
    );
    let env_file = print_config(&["--config", file], &env);
    assert_eq!(value_of(&env_file, "max_connections"), "20");
    let file_only = print_config(&["--config", file], &[]);
    assert_eq!(value_of(&file_only, "max_connections"), "10");
    assert_eq!(value_of(&file_only, "access"), "\"private\"");
    // PAGEWIRE_CONFIG names the file; nothing at all gives the defaults.
    let by_env = print_config(&[], &[("PAGEWIRE_CONFIG", file)]);
    assert_eq!(value_of(&by_env, "max_connections"), "10");
    let defaults = print_config(&[], &[]);
    assert_eq!(value_of(&defaults, "max_connections"), "18000");
    assert_eq!(value_of(&defaults, "listen"), "\"127.0.0.1:8080\"");
    assert_eq!(value_of(&defaults, "interval_secs"), "30");
    // A bad value from the environment is refused like a bad flag.
    let mut cmd = command(["serve", "--print-config"]);
    cmd.env("PAGEWIRE_LIMITS_MAX_CONNECTIONS", "many");
    Process::spawn(cmd)
        .wait_exit()
        .assert_exit_code(2)
        .assert_stderr_contains("--limits-max-connections");
}

#[test]
fn print_config_hides_the_token_and_reads_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let shown = print_config(&["--token", "s3cret-flag"], &[]);
    assert!(!shown.contains("s3cret"), "{shown}");
    assert_eq!(value_of(&shown, "token"), "\"(hidden)\"");
    let shown = print_config(&[], &[("PAGEWIRE_TOKEN", "s3cret-env")]);
    assert!(!shown.contains("s3cret"), "{shown}");
    let shown = print_config(&["--redis", "redis://:pa55word@127.0.0.1:1"], &[]);
    assert!(!shown.contains("pa55word"), "{shown}");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "s3cret-file\n").expect("write");
    let shown = print_config(&["--token-file", token_file.to_str().expect("path")], &[]);
    assert!(!shown.contains("s3cret"), "{shown}");
    assert!(shown.contains("token_file = "), "{shown}");
    // What it prints is a configuration file check-config accepts.
    let printed = dir.path().join("printed.toml");
    std::fs::write(&printed, &shown).expect("write");
    run_cli(&["check-config", printed.to_str().expect("path")]).assert_exit_code(0);
}

#[tokio::test]
async fn a_token_file_is_the_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "from-a-file\n").expect("write");
    let d = Daemon::start(&["--token-file", token_file.to_str().expect("path")]);
    let c = client_from("127.0.0.1");
    let send = |token: Option<&str>| {
        let mut req = c.post(d.url("/api/command")).body("ws close");
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };
    assert_eq!(
        send(Some("from-a-file")).await.expect("POST").status(),
        StatusCode::OK
    );
    assert_eq!(
        send(None).await.expect("POST").status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        send(Some("wrong")).await.expect("POST").status(),
        StatusCode::UNAUTHORIZED
    );
}

#[test]
fn check_config_names_each_error_with_its_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path.to_str().expect("path").to_owned()
    };
    let good = write(
        "good.toml",
        "listen = \"127.0.0.1:8080\"\naccess = \"private\"\nbase_path = \"/status\"\n\
         trusted_proxies = [\"127.0.0.1/32\"]\nlog_format = \"json\"\n[limits]\nmax_connections = 100\n\
         [actions.up]\nprogram = \"uptime\"\n",
    );
    run_cli(&["check-config", &good])
        .assert_exit_code(0)
        .assert_stdout_contains(&format!("{good}: ok"));
    let bad = write(
        "bad.toml",
        "# a comment\nlisten = \"127.0.0.1:8080\"\nbogus = 1\n[limits]\nmax_connections = \"many\"\n\
         [heartbeat]\nnope = 2\n",
    );
    let out = run_cli(&["check-config", &bad]);
    out.assert_exit_code(1)
        .assert_stderr_contains(&format!("{bad}:3: unknown field `bogus`"))
        .assert_stderr_contains(&format!(
            "{bad}:5: invalid type: string \"many\", expected usize"
        ))
        .assert_stderr_contains(&format!("{bad}:7: unknown field `nope`"));
    let semantic = write(
        "acl.toml",
        "listen = \"127.0.0.1:8080\"\naccess = \"acl\"\n[heartbeat]\ninterval_secs = 0\n",
    );
    run_cli(&["check-config", &semantic])
        .assert_exit_code(1)
        .assert_stderr_contains(&format!("{semantic}:2: access mode acl needs"));
    let heartbeat = write("hb.toml", "[heartbeat]\ninterval_secs = 0\n");
    run_cli(&["check-config", &heartbeat])
        .assert_exit_code(1)
        .assert_stderr_contains(&format!(
            "{heartbeat}:2: heartbeat: interval_secs must be positive"
        ));
    let syntax = write("syntax.toml", "listen = \"127.0.0.1:8080\"\n\naccess = \n");
    run_cli(&["check-config", &syntax])
        .assert_exit_code(1)
        .assert_stderr_contains(&format!("{syntax}:3: "));
    run_cli(&["check-config", "/nonexistent/pagewire.toml"])
        .assert_exit_code(1)
        .assert_stderr_contains("/nonexistent/pagewire.toml: cannot read it");
}

#[tokio::test]
async fn json_log_lines_parse() {
    let dir = tempfile::tempdir().expect("tempdir");
    let control = dir.path().join("ctl.sock");
    let process = Daemon::builder()
        .control(&control)
        .args(&["--log-format", "json"])
        .spawn();
    let ready = process.wait_for_stdout(|l| l.contains("\"event\":\"listening\""));
    let ready: Value = serde_json::from_str(&ready).expect("the ready line is JSON");
    let url = ready["fields"]["url"].as_str().expect("url").to_owned();
    let addr: SocketAddr = url.trim_start_matches("http://").parse().expect("address");
    let mut req = format!("ws://{addr}/ws?page=/json.html")
        .into_client_request()
        .expect("request");
    req.headers_mut().insert(
        "origin",
        HeaderValue::from_str(&format!("http://{addr}")).expect("origin"),
    );
    let (ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("upgrade");
    let mut page = Page::from_stream(ws).await;
    page.send("ws register status").await;
    page.recv().await;
    let ctl = control.to_str().expect("path");
    Process::spawn(command([
        "--control",
        ctl,
        "ws",
        "write",
        "status",
        "a \u{1b}[2J b",
    ]))
    .wait_exit()
    .assert_exit_code(0);
    Process::spawn(command(["--control", ctl, "ws", "bogus"]))
        .wait_exit()
        .assert_exit_code(1);
    process.wait_for_stdout(|l| l.contains("\"result\":\"error\""));
    // The text of a write that reached no page is printed on the console:
    // as a JSON line too.
    Process::spawn(command([
        "--control",
        ctl,
        "ws",
        "write",
        "nobody",
        "unreached \u{1b}[2J text",
    ]))
    .wait_exit();
    process.wait_for_stdout(|l| l.contains("unreached"));
    let lines = process.stdout_lines();
    let mut events = Vec::new();
    for line in &lines {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        for key in ["time", "level", "event", "node", "message", "fields"] {
            assert!(v.get(key).is_some(), "no {key} in {line}");
        }
        assert!(v["fields"].is_object(), "{line}");
        events.push(v);
    }
    let find = |name: &str| {
        events
            .iter()
            .find(|v| v["event"] == name)
            .unwrap_or_else(|| panic!("no {name} in {lines:#?}"))
    };
    assert_eq!(find("ws.opened")["fields"]["index"], page.index);
    assert_eq!(find("ws.registered")["fields"]["name"], "status");
    let write = events
        .iter()
        .find(|v| v["event"] == "command" && v["fields"]["result"] == "ok")
        .expect("the write");
    assert_eq!(write["fields"]["door"], "control");
    assert_eq!(write["level"], "info");
    let bogus = events
        .iter()
        .find(|v| v["event"] == "command" && v["fields"]["result"] == "error")
        .expect("the error");
    assert_eq!(bogus["level"], "warn");
    assert!(find("listening")["time"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
}

#[test]
fn systemd_hears_ready_watchdog_and_stopping() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).expect("bind");
    socket.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    let d = Daemon::builder()
        .env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", "200000")
        .start();
    let mut buf = [0u8; 256];
    let mut next = || {
        let n = socket.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    assert_eq!(next(), "READY=1");
    assert_eq!(next(), "WATCHDOG=1");
    d.stop().assert_exit_code(0);
    let mut seen = next();
    while seen == "WATCHDOG=1" {
        seen = next();
    }
    assert_eq!(seen, "STOPPING=1");
}

#[test]
fn completions_load_in_bash_and_are_made_for_zsh_and_fish() {
    let script = format!(
        "source <('{}' completions bash) && complete -p pagewire",
        crate::support::bin()
    );
    let out = std::process::Command::new("bash")
        .args(["-c", &script])
        .output()
        .expect("bash");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.is_empty(), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("-F _pagewire pagewire"));
    for shell in ["zsh", "fish"] {
        let out = run_cli(&["completions", shell]);
        out.assert_exit_code(0)
            .assert_stdout_contains("check-config");
    }
    run_cli(&["completions", "tcsh-or-so"]).assert_exit_code(2);
}

#[test]
fn the_ws_cli_lists_its_subcommands() {
    let out = run_cli(&["ws", "--help"]);
    out.assert_exit_code(0)
        .assert_stdout_contains("ws write TARGET \"text\"")
        .assert_stdout_contains("ws close [TARGET]");
}
