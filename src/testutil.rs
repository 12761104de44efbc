//! Helpers shared by the unit tests: a deterministic generator, masked
//! client frames, and connected sockets.

/// A small xorshift generator, so randomized tests need no extra crate and
/// every run tries the same inputs.
pub(crate) struct XorShift(pub(crate) u64);

impl XorShift {
    /// The next 64 pseudo-random bits.
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number below `n` (`n` is small, so modulo bias does not matter).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// A masked client frame with first byte `b0`, the shortest length
/// encoding, and masking key `key`.
pub(crate) fn masked(key: [u8; 4], b0: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![b0];
    if payload.len() <= 125 {
        out.push(0x80 | payload.len() as u8);
    } else if let Ok(n) = u16::try_from(payload.len()) {
        out.push(0x80 | 126);
        out.extend_from_slice(&n.to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(payload.len() as u64).to_be_bytes());
    }
    out.extend_from_slice(&key);
    let start = out.len();
    out.extend_from_slice(payload);
    crate::base::codec::apply_mask(&mut out[start..], key);
    out
}

/// A connected TCP pair on loopback: the accepted (server) end, then the
/// client's.
pub(crate) async fn tcp_pair() -> (tokio::net::TcpStream, tokio::net::TcpStream) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let (client, accepted) = tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
    (accepted.expect("accept").0, client.expect("connect"))
}
