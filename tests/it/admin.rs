//! The admin console: `/admin` and its socket `/admin/ws`, who may open
//! them, and what the socket tells and does (docs/PROTOCOL.md, "The admin
//! socket").

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::page::{read_until_closed, Closed, Page};
use crate::support::{Daemon, TIMEOUT};

/// One admin console's socket.
pub(crate) struct Console {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Console {
    /// Connects to `/admin/ws` with `headers` (the daemon's own Origin
    /// unless one is given).
    pub(crate) async fn connect(
        d: &Daemon,
        headers: &[(&str, &str)],
    ) -> Result<Console, tokio_tungstenite::tungstenite::Error> {
        let mut req = format!("ws://{}/admin/ws", d.addr)
            .into_client_request()
            .expect("request");
        let own = format!("http://{}", d.addr);
        req.headers_mut()
            .insert("origin", HeaderValue::from_str(&own).expect("origin"));
        for (k, v) in headers {
            let name = HeaderName::from_bytes(k.as_bytes()).expect("header name");
            req.headers_mut()
                .insert(name, HeaderValue::from_str(v).expect("header"));
        }
        let (ws, _) = tokio_tungstenite::connect_async(req).await?;
        Ok(Console { ws })
    }

    /// Connects as a local operator and reads up to the first table.
    async fn ready(d: &Daemon) -> (Console, Value) {
        let mut c = Console::connect(d, &[]).await.expect("upgrade accepted");
        assert_eq!(c.recv().await, json!({"type": "hello", "auth": "granted"}));
        assert_eq!(c.recv().await, json!({"type": "ready", "node": null}));
        let table = c.recv_type("table").await;
        (c, table)
    }

    pub(crate) async fn send(&mut self, frame: Value) {
        self.ws
            .send(Message::text(frame.to_string()))
            .await
            .expect("send");
    }

    pub(crate) async fn recv(&mut self) -> Value {
        loop {
            let msg = tokio::time::timeout(TIMEOUT, self.ws.next())
                .await
                .expect("a frame within the timeout")
                .expect("connection open")
                .expect("a valid frame");
            match msg {
                Message::Text(t) => return serde_json::from_str(&t).expect("JSON frame"),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("unexpected message {other:?}"),
            }
        }
    }

    pub(crate) async fn recv_type(&mut self, kind: &str) -> Value {
        self.until(|f| f["type"] == kind).await
    }

    /// The first frame `want` accepts, skipping others.
    pub(crate) async fn until(&mut self, want: impl Fn(&Value) -> bool) -> Value {
        loop {
            let frame = self.recv().await;
            if want(&frame) {
                return frame;
            }
        }
    }

    async fn ended(mut self) -> Closed {
        read_until_closed(&mut self.ws).await
    }
}

/// The HTTP status a refused upgrade got.
fn refused_status(result: Result<Console, tokio_tungstenite::tungstenite::Error>) -> u16 {
    match result {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("refused without an HTTP answer: {e}"),
        Ok(_) => panic!("the upgrade was accepted"),
    }
}

fn ids(table: &Value) -> Vec<u64> {
    table["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| r["id"].as_u64().expect("id"))
        .collect()
}

async fn get(d: &Daemon, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = reqwest::Client::new().get(d.url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.expect("request")
}

#[tokio::test]
async fn the_console_page_is_embedded_and_refused_to_other_sites() {
    let d = Daemon::start::<&str>(&[]);
    let page = get(&d, "/admin", &[]).await;
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .expect("CSP")
        .to_string();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe"),
        "{csp}"
    );
    let html = page.text().await.expect("body");
    assert!(html.contains(r#"<script src="admin/admin.js">"#), "{html}");
    for asset in ["/admin/admin.js", "/admin/admin.css"] {
        assert_eq!(get(&d, asset, &[]).await.status(), 200, "{asset}");
    }
    // The demo page's look comes with the console's style.
    let css = get(&d, "/admin/admin.css", &[])
        .await
        .text()
        .await
        .expect("css");
    assert!(css.contains("--accent") && css.contains(".monitor"));

    for headers in [
        [("origin", "http://evil.test")],
        [("sec-fetch-site", "cross-site")],
        [("referer", "http://evil.test/page")],
    ] {
        let resp = get(&d, "/admin", &headers).await;
        assert_eq!(resp.status(), 403, "{headers:?}");
    }
    // The console's socket is refused to another site the same way.
    let other = Console::connect(&d, &[("origin", "http://evil.test")]).await;
    assert_eq!(refused_status(other), 403);
}

#[tokio::test]
async fn the_table_follows_pages_as_they_come_and_go() {
    let d = Daemon::start::<&str>(&[]);
    let (mut c, table) = Console::ready(&d).await;
    assert_eq!((table["total"].as_u64(), ids(&table)), (Some(0), vec![]));

    let mut page = Page::with_names(&d, &["status"]).await;
    // The hello and the registration's reply went out, the registration
    // came in.
    let table = c
        .until(|f| {
            f["type"] == "table"
                && f["rows"][0]["names"] == json!(["status"])
                && f["rows"][0]["msgs_out"] == 2
        })
        .await;
    assert_eq!(ids(&table), [page.index]);
    let row = &table["rows"][0];
    assert_eq!(row["page"], format!("http://{}/test.html", d.addr));
    assert!(row["remote"]
        .as_str()
        .expect("remote")
        .starts_with("127.0.0.1:"));
    assert_eq!(row["msgs_in"], 1);
    assert_eq!(row["node"], Value::Null, "no node outside a cluster");
    assert_eq!(table["ages_ms"].as_array().map(Vec::len), Some(1));

    // Traffic alone changes no row of the table; the sample sees it.
    assert!(d.command("ws write status counted").await.0);
    assert_eq!(page.recv_type("write").await["text"], "counted");
    c.until(|f| f["type"] == "table" && f["rows"][0]["msgs_out"] == 3)
        .await;

    page.leave().await;
    let table = c.until(|f| f["type"] == "table" && f["total"] == 0).await;
    assert_eq!(ids(&table), Vec::<u64>::new());
}

#[tokio::test]
async fn the_table_shows_what_a_page_reports_of_its_visibility() {
    let d = Daemon::start::<&str>(&[]);
    let (mut c, _) = Console::ready(&d).await;
    let mut page = Page::open(&d).await;
    let table = c.until(|f| f["type"] == "table" && f["total"] == 1).await;
    assert_eq!(table["rows"][0]["visibility"], Value::Null);

    page.send("ws visibility hidden").await;
    assert_eq!(page.recv().await["type"], "reply");
    c.until(|f| f["type"] == "table" && f["rows"][0]["visibility"] == "hidden")
        .await;
    page.send("ws visibility visible").await;
    assert_eq!(page.recv().await["type"], "reply");
    c.until(|f| f["type"] == "table" && f["rows"][0]["visibility"] == "visible")
        .await;
}

#[tokio::test]
async fn a_large_table_comes_a_page_at_a_time() {
    let d = Daemon::start::<&str>(&[]);
    let mut pages = Vec::new();
    for _ in 0..5 {
        pages.push(Page::open(&d).await);
    }
    let (mut c, _) = Console::ready(&d).await;
    c.send(json!({"type": "view", "offset": 1, "limit": 2}))
        .await;
    let table = c.until(|f| f["type"] == "table" && f["offset"] == 1).await;
    assert_eq!(table["total"], 5);
    assert_eq!(ids(&table), [pages[1].index, pages[2].index]);
}

#[tokio::test]
async fn commands_run_as_the_admin_door_and_the_monitor_shows_them() {
    let d = Daemon::start::<&str>(&[]);
    let mut page = Page::with_names(&d, &["status"]).await;
    let (mut c, _) = Console::ready(&d).await;
    let line = format!("ws write {} \"from the console\"", page.index);
    c.send(json!({"type": "command", "id": 7, "line": line}))
        .await;
    assert_eq!(page.recv_type("write").await["text"], "from the console");
    // The reply and the Monitor's line about it come by different ways, in
    // either order.
    let (mut reply, mut seen) = (None, None);
    while reply.is_none() || seen.is_none() {
        let f = c.recv().await;
        if f["type"] == "reply" {
            reply = Some(f);
        } else if f["type"] == "monitor"
            && f["line"].as_str().unwrap_or("").contains("admin: ws write")
        {
            seen = Some(f);
        }
    }
    assert_eq!(
        reply,
        Some(
            json!({"type": "reply", "id": 7, "ok": true, "denied": false, "output": "sent to 1 connection"})
        )
    );
    let seen = seen.unwrap_or_default();
    assert!(
        seen["line"]
            .as_str()
            .unwrap_or("")
            .ends_with("-> ok: sent to 1 connection"),
        "{seen}"
    );

    c.send(json!({"type": "command", "id": 8, "line": "ws frobnicate"}))
        .await;
    let reply = c.recv_type("reply").await;
    assert_eq!(
        (reply["id"].as_u64(), reply["ok"].as_bool()),
        (Some(8), Some(false))
    );

    c.send(json!({"type": "nonsense"})).await;
    let reply = c.recv_type("reply").await;
    assert_eq!(reply["ok"], false);
    assert!(
        reply["output"]
            .as_str()
            .unwrap_or("")
            .starts_with("unreadable message"),
        "{reply}"
    );

    let metrics = d.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l == r#"pagewire_commands_total{door="admin",result="ok"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn with_a_token_the_socket_needs_it() {
    let d = Daemon::builder().args(&["--token", "s3cret"]).start();
    // The page loads (it holds no data) and asks for the token.
    assert_eq!(get(&d, "/admin", &[]).await.status(), 200);

    let mut c = Console::connect(&d, &[]).await.expect("upgrade");
    assert_eq!(c.recv().await, json!({"type": "hello", "auth": "token"}));
    c.send(json!({"type": "auth", "token": "guess"})).await;
    assert_eq!(
        c.ended().await,
        Closed {
            code: Some(4401),
            reason: "wrong token".into()
        }
    );

    let mut c = Console::connect(&d, &[]).await.expect("upgrade");
    c.recv().await;
    c.send(json!({"type": "command", "id": 1, "line": "ws close *"}))
        .await;
    assert_eq!(
        c.ended().await,
        Closed {
            code: Some(4401),
            reason: "token needed".into()
        }
    );

    let mut c = Console::connect(&d, &[]).await.expect("upgrade");
    c.recv().await;
    c.send(json!({"type": "auth", "token": "s3cret"})).await;
    assert_eq!(c.recv().await, json!({"type": "ready", "node": null}));

    // A program can send the header instead.
    let mut c = Console::connect(&d, &[("authorization", "Bearer s3cret")])
        .await
        .expect("upgrade");
    assert_eq!(c.recv().await, json!({"type": "hello", "auth": "granted"}));
    let wrong = Console::connect(&d, &[("authorization", "Bearer guess")]).await;
    assert_eq!(refused_status(wrong), 401);

    // The token never appears in what the daemon prints.
    let out = d.process().stdout_lines().join("\n");
    assert!(out.contains("refused admin console"), "{out}");
    assert!(!out.contains("s3cret"));
}

#[tokio::test]
async fn only_a_few_consoles_may_wait_to_send_the_token() {
    // Anyone the access mode admits may open the socket and hold it until
    // the token is due: 16 may wait at once, the next gets 503, and a
    // console that signed in gives its place back.
    let d = Daemon::builder().args(&["--token", "s3cret"]).start();
    let mut waiting = Vec::new();
    for _ in 0..16 {
        let mut c = Console::connect(&d, &[]).await.expect("upgrade");
        assert_eq!(c.recv().await, json!({"type": "hello", "auth": "token"}));
        waiting.push(c);
    }
    let refused = Console::connect(&d, &[]).await;
    assert_eq!(refused_status(refused), 503);
    d.wait_for_stdout(|l| l.contains("consoles are waiting to send the token already"));
    // A program with the header needs no place.
    let mut header = Console::connect(&d, &[("authorization", "Bearer s3cret")])
        .await
        .expect("upgrade");
    assert_eq!(
        header.recv().await,
        json!({"type": "hello", "auth": "granted"})
    );

    let mut first = waiting.remove(0);
    first.send(json!({"type": "auth", "token": "s3cret"})).await;
    assert_eq!(first.recv().await, json!({"type": "ready", "node": null}));
    let mut next = Console::connect(&d, &[])
        .await
        .expect("a place was given back");
    assert_eq!(next.recv().await, json!({"type": "hello", "auth": "token"}));
    next.send(json!({"type": "auth", "token": "s3cret"})).await;
    assert_eq!(next.recv().await, json!({"type": "ready", "node": null}));
}

#[tokio::test]
async fn the_page_door_is_unchanged() {
    let d = Daemon::start::<&str>(&[]);
    let mut page = Page::open(&d).await;
    // A page's socket still has a page's rights only.
    page.send("ws close *").await;
    assert_eq!(page.recv().await["type"], "error");
    // And the admin socket is not a page: it is not in the listing.
    let (_c, _) = Console::ready(&d).await;
    let (ok, listing) = d.command("ws").await;
    assert!(ok);
    assert_eq!(
        listing
            .lines()
            .filter(|l| l.starts_with(|c: char| c.is_ascii_digit()))
            .count(),
        1,
        "{listing}"
    );
}

#[tokio::test]
async fn the_console_hears_the_daemon_stop() {
    let d = Daemon::start::<&str>(&[]);
    let (c, _) = Console::ready(&d).await;
    let stopped = tokio::task::spawn_blocking(move || d.stop());
    assert_eq!(
        c.ended().await,
        Closed {
            code: Some(1001),
            reason: "server shutting down".into()
        }
    );
    let out = stopped.await.expect("stop");
    out.assert_exit_code(0);
}
