//! A test page: a real WebSocket client (tokio-tungstenite) speaking the
//! page protocol to a running daemon, with waits that time out instead of
//! sleeping.

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::support::{until, Daemon, TIMEOUT};

/// One connected page.
pub struct Page {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// The index the daemon gave it (from `hello`).
    pub index: u64,
    /// The whole `hello` frame.
    pub hello: Value,
}

/// How a connection ended, as the page saw it.
#[derive(Debug, PartialEq, Eq)]
pub struct Closed {
    /// The close code, if a close frame came.
    pub code: Option<u16>,
    /// The close reason.
    pub reason: String,
}

impl Page {
    /// Connects to the daemon's `/ws` with its own Origin, reads `hello`.
    pub async fn open(d: &Daemon) -> Page {
        let origin = format!("http://{}", d.addr);
        Page::open_with_origin(d, Some(&origin))
            .await
            .expect("upgrade accepted")
    }

    /// Connects to `path` (a `/ws` under a base path) with the daemon's
    /// own Origin, reads `hello`.
    pub async fn open_at(d: &Daemon, path: &str) -> Page {
        let mut req = format!("ws://{}{path}?page=/test.html", d.addr)
            .into_client_request()
            .expect("request");
        let origin = format!("http://{}", d.addr);
        req.headers_mut()
            .insert("origin", HeaderValue::from_str(&origin).expect("origin"));
        let (ws, _) = tokio_tungstenite::connect_async(req)
            .await
            .expect("upgrade accepted");
        Page::hello(ws).await
    }

    /// Connects with the given Origin header (or none), reads `hello`.
    pub async fn open_with_origin(
        d: &Daemon,
        origin: Option<&str>,
    ) -> Result<Page, tokio_tungstenite::tungstenite::Error> {
        let mut req = format!("ws://{}/ws?page=/test.html", d.addr)
            .into_client_request()
            .expect("request");
        if let Some(o) = origin {
            req.headers_mut()
                .insert("origin", HeaderValue::from_str(o).expect("origin"));
        }
        let (ws, _) = tokio_tungstenite::connect_async(req).await?;
        Ok(Page::hello(ws).await)
    }

    /// Connects presenting the resume token `token` (`?resume=`), as ws.js
    /// does when it reconnects.
    pub async fn open_resuming(d: &Daemon, token: &str) -> Page {
        let mut req = format!("ws://{}/ws?page=/test.html&resume={token}", d.addr)
            .into_client_request()
            .expect("request");
        let origin = format!("http://{}", d.addr);
        req.headers_mut()
            .insert("origin", HeaderValue::from_str(&origin).expect("origin"));
        let (ws, _) = tokio_tungstenite::connect_async(req)
            .await
            .expect("upgrade accepted");
        Page::hello(ws).await
    }

    /// The resume token its `hello` gave.
    pub fn resume_token(&self) -> String {
        self.hello["resume"]
            .as_str()
            .expect("a resume token in hello")
            .to_string()
    }

    /// Like [`Page::open_with_origin`], from the local address `source`
    /// (any 127.x.y.z works on Linux without configuration), so that tests
    /// can act as several clients.
    pub async fn open_from(
        d: &Daemon,
        source: std::net::IpAddr,
        origin: Option<&str>,
    ) -> Result<Page, tokio_tungstenite::tungstenite::Error> {
        let mut req = format!("ws://{}/ws?page=/test.html", d.addr)
            .into_client_request()
            .expect("request");
        if let Some(o) = origin {
            req.headers_mut()
                .insert("origin", HeaderValue::from_str(o).expect("origin"));
        }
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind(std::net::SocketAddr::new(source, 0))
            .expect("bind the source address");
        let stream = socket.connect(d.addr).await?;
        let (ws, _) = tokio_tungstenite::client_async(req, MaybeTlsStream::Plain(stream)).await?;
        Ok(Page::hello(ws).await)
    }

    /// A page over a WebSocket opened by the test itself; reads `hello`.
    pub async fn from_stream(ws: WebSocketStream<MaybeTlsStream<TcpStream>>) -> Page {
        Page::hello(ws).await
    }

    /// Reads the `hello` frame of a new connection.
    async fn hello(ws: WebSocketStream<MaybeTlsStream<TcpStream>>) -> Page {
        let mut page = Page {
            ws,
            index: 0,
            hello: Value::Null,
        };
        let hello = page.recv().await;
        assert_eq!(hello["type"], "hello", "first frame: {hello}");
        page.index = hello["index"].as_u64().expect("index");
        page.hello = hello;
        page
    }

    /// Opens a page and registers `names`, each confirmed by a reply.
    pub async fn with_names(d: &Daemon, names: &[&str]) -> Page {
        let mut p = Page::open(d).await;
        for n in names {
            p.send(&format!("ws register {n}")).await;
            let r = p.recv().await;
            assert_eq!(r["type"], "reply", "register {n}: {r}");
        }
        p
    }

    /// Sends one command line.
    pub async fn send(&mut self, line: &str) {
        self.ws.send(Message::text(line)).await.expect("send");
    }

    /// Sends a raw message (binary, invalid text, ...).
    pub async fn send_raw(&mut self, msg: Message) {
        let _ = self.ws.send(msg).await;
    }

    /// The next JSON frame; fails the test after [`TIMEOUT`].
    pub async fn recv(&mut self) -> Value {
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

    /// Waits for the next frame of type `kind`, skipping others.
    pub async fn recv_type(&mut self, kind: &str) -> Value {
        loop {
            let v = self.recv().await;
            if v["type"] == kind {
                return v;
            }
        }
    }

    /// Reads frames up to and including the first that `want` accepts.
    pub async fn until(&mut self, want: impl Fn(&Value) -> bool) -> Vec<Value> {
        let mut seen = Vec::new();
        loop {
            let frame = self.recv().await;
            let done = want(&frame);
            seen.push(frame);
            if done {
                return seen;
            }
        }
    }

    /// Leaves as a closing browser tab does: a close frame without a code,
    /// and gone without waiting for the answer.
    pub async fn leave(mut self) {
        self.ws.close(None).await.expect("close");
    }

    /// Reads until the connection ends; returns how.
    pub async fn closed(mut self) -> Closed {
        read_until_closed(&mut self.ws).await
    }

    /// Closes from the page side with 1000.
    pub async fn close(mut self) {
        let _ = self
            .ws
            .close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
                code: CloseCode::Normal,
                reason: "bye".into(),
            }))
            .await;
        while let Ok(Some(Ok(_))) = tokio::time::timeout(TIMEOUT, self.ws.next()).await {}
    }
}

/// Lines of `ws` output that describe connections (they start with an index).
pub fn listing(d: &Daemon) -> Vec<String> {
    let out = d.cli(&["ws"]);
    out.assert_exit_code(0);
    out.stdout
        .lines()
        .filter(|l| l.starts_with(|c: char| c.is_ascii_digit()))
        .map(str::to_string)
        .collect()
}

/// Waits until `ws` lists exactly `n` connections.
pub async fn wait_for_count(d: &Daemon, n: usize) -> Vec<String> {
    let what = format!("{n} connections in the listing");
    until(&what, TIMEOUT, || {
        let l = listing(d);
        std::future::ready((l.len() == n).then_some(l))
    })
    .await
}

/// Reads `ws` until the connection ends; returns how (pages and admin
/// consoles alike).
pub async fn read_until_closed(ws: &mut WebSocketStream<MaybeTlsStream<TcpStream>>) -> Closed {
    loop {
        let next = tokio::time::timeout(TIMEOUT, ws.next())
            .await
            .expect("the connection to end within the timeout");
        match next {
            Some(Ok(Message::Close(frame))) => {
                return Closed {
                    code: frame.as_ref().map(|f| u16::from(f.code)),
                    reason: frame.map(|f| f.reason.to_string()).unwrap_or_default(),
                }
            }
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => {
                return Closed {
                    code: None,
                    reason: String::new(),
                }
            }
        }
    }
}
