//! Minimal RFC 6455 framing: parse a frame header, encode a frame, compute
//! `Sec-WebSocket-Accept`.

use base64::Engine as _;
use sha1::{Digest, Sha1};

/// Opcode of a continuation frame.
pub const OP_CONT: u8 = 0x0;
/// Opcode of a text frame.
pub const OP_TEXT: u8 = 0x1;
/// Opcode of a binary frame.
pub const OP_BINARY: u8 = 0x2;
/// Opcode of a close frame.
pub const OP_CLOSE: u8 = 0x8;
/// Opcode of a ping frame.
pub const OP_PING: u8 = 0x9;
/// Opcode of a pong frame.
pub const OP_PONG: u8 = 0xA;

const ACCEPT_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The `Sec-WebSocket-Accept` value for a client's `Sec-WebSocket-Key`.
pub fn accept_key(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.trim().as_bytes());
    sha.update(ACCEPT_GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

/// A base64 `Sec-WebSocket-Key` made from 16 bytes of `seed`-derived noise.
pub fn client_key(seed: u64) -> String {
    let mut rng = XorShift::new(seed);
    let mut raw = [0u8; 16];
    raw[..8].copy_from_slice(&rng.next().to_le_bytes());
    raw[8..].copy_from_slice(&rng.next().to_le_bytes());
    base64::engine::general_purpose::STANDARD.encode(raw)
}

/// A tiny xorshift generator for masks and keys (not for secrets: the
/// benchmark only needs the bytes to vary).
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    /// A generator from any seed (zero is remapped).
    pub fn new(seed: u64) -> Self {
        XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next 64 bits.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

/// A parsed frame header; the payload follows at `header_len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Final fragment of a message.
    pub fin: bool,
    /// The opcode (low four bits of the first byte).
    pub opcode: u8,
    /// The masking key, when the frame is masked.
    pub mask: Option<[u8; 4]>,
    /// Bytes of header before the payload.
    pub header_len: usize,
    /// Bytes of payload.
    pub payload_len: usize,
}

impl Header {
    /// Header plus payload.
    pub fn frame_len(&self) -> usize {
        self.header_len + self.payload_len
    }
}

/// Why a frame was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// RSV bits set without an extension that defines them.
    Reserved,
    /// An opcode RFC 6455 does not define.
    UnknownOpcode(u8),
    /// A control frame longer than 125 bytes or fragmented.
    BadControl,
    /// A payload longer than the caller allows.
    TooBig(u64),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Reserved => write!(f, "reserved bits set"),
            FrameError::UnknownOpcode(op) => write!(f, "unknown opcode {op:#x}"),
            FrameError::BadControl => write!(f, "control frame fragmented or over 125 bytes"),
            FrameError::TooBig(n) => write!(f, "frame payload of {n} bytes is over the limit"),
        }
    }
}

impl std::error::Error for FrameError {}

/// Parse the header at the start of `buf`. `Ok(None)` means more bytes are
/// needed for the header (the payload may still be incomplete on `Ok(Some)`:
/// compare `frame_len()` with the bytes at hand).
pub fn parse_header(buf: &[u8], max_payload: usize) -> Result<Option<Header>, FrameError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let b0 = buf[0];
    let b1 = buf[1];
    if b0 & 0x70 != 0 {
        return Err(FrameError::Reserved);
    }
    let fin = b0 & 0x80 != 0;
    let opcode = b0 & 0x0F;
    match opcode {
        OP_CONT | OP_TEXT | OP_BINARY => {}
        OP_CLOSE | OP_PING | OP_PONG => {
            if !fin || (b1 & 0x7F) > 125 {
                return Err(FrameError::BadControl);
            }
        }
        other => return Err(FrameError::UnknownOpcode(other)),
    }
    let masked = b1 & 0x80 != 0;
    let (len, mut pos) = match b1 & 0x7F {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4)
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            (u64::from_be_bytes(b), 10)
        }
        n => (u64::from(n), 2),
    };
    if len > max_payload as u64 {
        return Err(FrameError::TooBig(len));
    }
    let mask = if masked {
        if buf.len() < pos + 4 {
            return Ok(None);
        }
        let m = [buf[pos], buf[pos + 1], buf[pos + 2], buf[pos + 3]];
        pos += 4;
        Some(m)
    } else {
        None
    };
    Ok(Some(Header {
        fin,
        opcode,
        mask,
        header_len: pos,
        // `len` is at most `max_payload`, a usize.
        payload_len: len as usize,
    }))
}

/// XOR `data` with `mask` in place (masking and unmasking are the same).
pub fn apply_mask(data: &mut [u8], mask: [u8; 4]) {
    for (i, b) in data.iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

/// Append one final frame of `opcode` carrying `payload` to `out`, masked
/// with `mask` when given (clients must mask, servers must not).
pub fn encode(opcode: u8, payload: &[u8], mask: Option<[u8; 4]>, out: &mut Vec<u8>) {
    out.push(0x80 | (opcode & 0x0F));
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    let len = payload.len();
    if len < 126 {
        out.push(mask_bit | len as u8);
    } else if len <= usize::from(u16::MAX) {
        out.push(mask_bit | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(mask_bit | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    match mask {
        Some(m) => {
            out.extend_from_slice(&m);
            let start = out.len();
            out.extend_from_slice(payload);
            apply_mask(&mut out[start..], m);
        }
        None => out.extend_from_slice(payload),
    }
}

/// A close frame payload: the code, then the reason.
pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason.as_bytes());
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_matches_rfc_example() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn encode_then_parse_roundtrips_all_length_forms() {
        for len in [0usize, 5, 125, 126, 1000, 65535, 65536, 70000] {
            for mask in [None, Some([1, 2, 3, 4])] {
                let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
                let mut out = Vec::new();
                encode(OP_TEXT, &payload, mask, &mut out);
                let h = parse_header(&out, 1 << 20).unwrap().unwrap();
                assert_eq!(h.opcode, OP_TEXT);
                assert!(h.fin);
                assert_eq!(h.mask, mask);
                assert_eq!(h.payload_len, len);
                assert_eq!(h.frame_len(), out.len());
                let mut body = out[h.header_len..].to_vec();
                if let Some(m) = h.mask {
                    apply_mask(&mut body, m);
                }
                assert_eq!(body, payload);
            }
        }
    }

    #[test]
    fn incomplete_headers_ask_for_more() {
        let mut out = Vec::new();
        encode(OP_TEXT, &[7u8; 300], Some([9, 9, 9, 9]), &mut out);
        for cut in 0..8 {
            assert_eq!(parse_header(&out[..cut], 1 << 20), Ok(None), "cut {cut}");
        }
    }

    #[test]
    fn hostile_headers_are_refused() {
        assert_eq!(parse_header(&[0xC1, 0], 10), Err(FrameError::Reserved));
        assert_eq!(
            parse_header(&[0x83, 0], 10),
            Err(FrameError::UnknownOpcode(3))
        );
        assert_eq!(parse_header(&[0x09, 0], 10), Err(FrameError::BadControl));
        assert_eq!(parse_header(&[0x89, 126], 10), Err(FrameError::BadControl));
        assert_eq!(
            parse_header(
                &[0x81, 127, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF],
                10
            ),
            Err(FrameError::TooBig(u64::MAX))
        );
    }
}
