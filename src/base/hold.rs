//! A plain TCP stream under hyper that can hold back what hyper writes.
//!
//! `GET /ws` asks for its 101 response to be held back; the page's task then
//! sends it together with the page's `hello` frame, in one write and one
//! TCP segment instead of two. Each segment costs a trip through the TCP
//! stack (on loopback, for both ends on the sending core), and the second
//! one was about a seventh of the daemon's work per page accepted
//! (docs/PERFORMANCE.md).

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A TCP stream that keeps what is written to it, instead of sending it,
/// once [`HoldWrites::hold`] was called.
pub(crate) struct HoldableTcp {
    tcp: TcpStream,
    hold: Arc<AtomicBool>,
    held: Vec<u8>,
}

/// Asks a [`HoldableTcp`] to hold back everything written from now on.
/// Every request on a plain TCP connection carries one in its extensions.
#[derive(Clone, Debug)]
pub(crate) struct HoldWrites(Arc<AtomicBool>);

impl HoldWrites {
    /// Holds back what is written next: the caller takes it with
    /// [`HoldableTcp::into_parts`] and must write it first.
    pub(crate) fn hold(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl HoldableTcp {
    /// Wraps `tcp`; writes go through until the handle says otherwise.
    pub(crate) fn new(tcp: TcpStream) -> (Self, HoldWrites) {
        let hold = Arc::new(AtomicBool::new(false));
        let io = HoldableTcp {
            tcp,
            hold: hold.clone(),
            held: Vec::new(),
        };
        (io, HoldWrites(hold))
    }

    /// The stream, and the bytes held back, which go out before anything
    /// else.
    pub(crate) fn into_parts(self) -> (TcpStream, Vec<u8>) {
        (self.tcp, self.held)
    }

    fn holding(&self) -> bool {
        self.hold.load(Ordering::Relaxed)
    }
}

impl AsyncRead for HoldableTcp {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for HoldableTcp {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.holding() {
            self.held.extend_from_slice(buf);
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.holding() {
            let mut n = 0;
            for buf in bufs {
                self.held.extend_from_slice(buf);
                n += buf.len();
            }
            return Poll::Ready(Ok(n));
        }
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.holding() {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    #[tokio::test]
    async fn writes_pass_until_held_then_are_kept_in_order() {
        let (server, mut client) = crate::testutil::tcp_pair().await;
        let (mut io, hold) = HoldableTcp::new(server);
        io.write_all(b"sent ").await.expect("write");
        hold.hold();
        io.write_all(b"held ").await.expect("write");
        let n = io
            .write_vectored(&[IoSlice::new(b"and "), IoSlice::new(b"this")])
            .await
            .expect("write");
        assert_eq!(n, 8);
        io.flush().await.expect("flush");
        let (mut tcp, held) = io.into_parts();
        assert_eq!(held, b"held and this");
        tcp.write_all(b"!").await.expect("write");
        let mut got = [0u8; 6];
        client.read_exact(&mut got).await.expect("read");
        // What was held never reached the socket.
        assert_eq!(&got, b"sent !");
    }
}
