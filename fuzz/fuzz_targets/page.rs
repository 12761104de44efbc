//! Whatever a page may send, through the real connection task and the
//! executor: the bytes go in over an in-memory stream, in pieces, and the
//! test checks that the task ends, answers with well-formed frames (a
//! close, if any, last), and leaves nothing behind in the hub.
//!
//! Input: byte 0 sets the size of the pieces the stream is written in; the
//! rest is the stream. Seeds use the all-zero mask key, so their payloads
//! are plain text the fuzzer can mutate into other command lines.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tokio::io::{duplex, split, AsyncReadExt, AsyncWriteExt};
use tokio::runtime::{Builder, Runtime};

use pagewire::base::command::COMMANDS;
use pagewire::base::stdout::ConsoleOut;
use pagewire::engine::exec::PageRights;
use pagewire::engine::Engine;
use pagewire::engine::hub::{Hub, HubLimits};
use pagewire::engine::monitor::Monitor;
use pagewire::doors::page::driver::ConnLimits;
use pagewire::doors::page as conn;

/// One runtime for every input. Its clock is paused and jumps ahead
/// whenever every task waits, so timeouts cost no real time and a task
/// that never ends is caught by `HANG` at once.
fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("tokio runtime")
    })
}

/// Longer than any timeout of the connection task.
const HANG: Duration = Duration::from_secs(600);

/// Checks the server's side of the stream: whole, unmasked frames, the
/// first one the hello, and nothing after a close frame.
fn check_output(mut out: &[u8]) {
    let mut first = true;
    while !out.is_empty() {
        assert!(out.len() >= 2, "a cut frame header");
        let (b0, b1) = (out[0], out[1]);
        assert_eq!(b0 & 0x70, 0, "reserved bits set");
        assert_eq!(b1 & 0x80, 0, "a masked server frame");
        let (len, header) = match b1 & 0x7F {
            126 => (usize::from(u16::from_be_bytes([out[2], out[3]])), 4),
            127 => {
                let mut n = [0u8; 8];
                n.copy_from_slice(&out[2..10]);
                (usize::try_from(u64::from_be_bytes(n)).expect("length"), 10)
            }
            n => (usize::from(n), 2),
        };
        assert!(out.len() >= header + len, "a cut frame");
        let payload = &out[header..header + len];
        let opcode = b0 & 0x0F;
        assert!(b0 & 0x80 != 0, "a fragmented server frame");
        if first {
            assert_eq!(opcode, 0x1, "the hello comes first");
            first = false;
        }
        match opcode {
            0x1 => assert!(std::str::from_utf8(payload).is_ok(), "text is not UTF-8"),
            0xA => assert!(len <= 125),
            0x8 => {
                assert!((2..=125).contains(&len), "close of {len} bytes");
                let code = u16::from_be_bytes([payload[0], payload[1]]);
                assert!(
                    pagewire::base::codec::close_code::is_valid(code),
                    "close {code}"
                );
                assert!(std::str::from_utf8(&payload[2..]).is_ok());
                assert_eq!(out.len(), header + len, "frames after the close");
            }
            other => panic!("server sent opcode {other:#x}"),
        }
        out = &out[header + len..];
    }
}

/// One set of limits for every session (connections refer to theirs).
static LIMITS: std::sync::LazyLock<ConnLimits> = std::sync::LazyLock::new(ConnLimits::default);

async fn session(piece: usize, stream: &[u8]) {
    let hub = Hub::new(HubLimits::default(), Monitor::new());
    // Every command a configuration can grant pages, so that all of them
    // are reachable from the stream.
    let rights = PageRights::new(COMMANDS.iter().map(|c| c.name.to_owned()).collect());
    let (console, _printed) = ConsoleOut::capture();
    let engine = Engine::local(hub.clone(), rights, Default::default(), console);
    let conn = conn::open_page(&hub, ([127, 0, 0, 1], 4000).into(), "/fuzz", &[]).expect("open");
    let (client, server) = duplex(16 * 1024);
    let task = tokio::spawn(conn::run(
        server,
        Bytes::new(),
        conn,
        engine,
        &LIMITS,
    ));
    let (mut rd, mut wr) = split(client);
    let writer = async move {
        for chunk in stream.chunks(piece) {
            // The connection may end early (a close, a protocol error).
            if wr.write_all(chunk).await.is_err() {
                return;
            }
            // Let the connection read this piece on its own.
            tokio::task::yield_now().await;
        }
        let _ = wr.shutdown().await;
    };
    let reader = async move {
        let mut out = Vec::new();
        let _ = rd.read_to_end(&mut out).await;
        out
    };
    let (_, out) = tokio::join!(writer, reader);
    task.await.expect("the connection task panicked");
    check_output(&out);
    assert!(hub.is_empty(), "the connection is still listed");
}

fuzz_target!(|data: &[u8]| {
    let Some((&piece, stream)) = data.split_first() else {
        return;
    };
    let piece = usize::from(piece) * 4 + 1;
    runtime().block_on(async {
        tokio::time::timeout(HANG, session(piece, stream))
            .await
            .expect("the connection never ended");
    });
});
