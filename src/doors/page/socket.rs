//! A page's TCP socket, shared between the page's task and the hub.
//!
//! The task reads and writes it as any stream; the hub holds a second
//! handle so that a delivery can write a frame straight to the socket when
//! nothing is queued for it (see `hub::outbox`). That spares a fan-out one
//! task wake-up and poll per page: the delivering thread makes the same
//! `write()` per page that a hand-written loop would.

use std::io::{self, IoSlice};
use std::net::Shutdown;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::engine::hub::Conn;

/// A TCP stream the hub may also write to. Dropping it does not close the
/// socket while the hub still holds it: the connection's task detaches it
/// from the hub when it ends (`Conn::detach_socket`).
pub struct SharedTcp(Arc<TcpStream>);

impl SharedTcp {
    /// Wraps `stream` and lets `conn`'s deliveries write to it directly.
    pub fn attach(stream: TcpStream, conn: &Conn) -> Self {
        let stream = Arc::new(stream);
        conn.attach_socket(stream.clone());
        SharedTcp(stream)
    }
}

/// Runs a non-blocking operation once the socket is ready for it, the way
/// tokio's own stream does: readiness is cleared by a `WouldBlock`, and
/// the loop then waits for the next readiness event.
fn when_ready<T>(
    cx: &mut Context<'_>,
    mut ready: impl FnMut(&mut Context<'_>) -> Poll<io::Result<()>>,
    mut op: impl FnMut() -> io::Result<T>,
) -> Poll<io::Result<T>> {
    loop {
        ready!(ready(cx))?;
        match op() {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            done => return Poll::Ready(done),
        }
    }
}

impl AsyncRead for SharedTcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let s = &self.0;
        let n = ready!(when_ready(
            cx,
            |cx| s.poll_read_ready(cx),
            || s.try_read(buf.initialize_unfilled())
        ))?;
        buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for SharedTcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let s = &self.0;
        when_ready(cx, |cx| s.poll_write_ready(cx), || s.try_write(buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let s = &self.0;
        when_ready(
            cx,
            |cx| s.poll_write_ready(cx),
            || s.try_write_vectored(bufs),
        )
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(socket2::SockRef::from(&*self.0).shutdown(Shutdown::Write))
    }
}
