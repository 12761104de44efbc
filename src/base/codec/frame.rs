//! RFC 6455 frame headers, both ways: client frames parsed and unmasked in
//! place, server frames encoded into one shareable buffer.

use std::ops::Range;

use bytes::Bytes;

use super::{
    close_code, Limits, ProtocolError, MAX_CLOSE_REASON, MAX_CONTROL_PAYLOAD, MAX_HEADER_LEN,
};

/// A server Ping with no payload, ready to write.
pub(crate) const EMPTY_PING: [u8; 2] = [FIN_BIT | 0x9, 0];

const FIN_BIT: u8 = 0x80;

const RSV_BITS: u8 = 0x70;
/// The RSV1 bit: with permessage-deflate, set on the first frame of a
/// compressed message.
pub(crate) const RSV1: u8 = 0x40;

pub(super) const OPCODE_BITS: u8 = 0x0F;

const MASK_BIT: u8 = 0x80;

const LEN_BITS: u8 = 0x7F;

/// 7-bit length values announcing a 16-bit and a 64-bit extended length.
const LEN_16: u8 = 126;

const LEN_64: u8 = 127;

/// A frame's opcode; the reserved values have no variant, so a parsed frame
/// never carries one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum OpCode {
    /// 0x0: a further fragment of the message in progress.
    Continuation,
    /// 0x1: the first (or only) frame of a UTF-8 text message.
    Text,
    /// 0x2: the first (or only) frame of a binary message.
    Binary,
    /// 0x8: the closing handshake.
    Close,
    /// 0x9: a keepalive the peer must answer with a Pong.
    Ping,
    /// 0xA: the answer to a Ping, or an unsolicited heartbeat.
    Pong,
}

impl OpCode {
    /// The opcode for the low four bits of a frame's first byte, or `None`
    /// for a reserved value.
    pub(crate) fn from_bits(bits: u8) -> Option<OpCode> {
        match bits {
            0x0 => Some(OpCode::Continuation),
            0x1 => Some(OpCode::Text),
            0x2 => Some(OpCode::Binary),
            0x8 => Some(OpCode::Close),
            0x9 => Some(OpCode::Ping),
            0xA => Some(OpCode::Pong),
            _ => None,
        }
    }

    /// The four-bit wire value.
    pub(crate) fn bits(self) -> u8 {
        match self {
            OpCode::Continuation => 0x0,
            OpCode::Text => 0x1,
            OpCode::Binary => 0x2,
            OpCode::Close => 0x8,
            OpCode::Ping => 0x9,
            OpCode::Pong => 0xA,
        }
    }

    /// Whether this is a control opcode (Close, Ping, Pong): such frames are
    /// never fragmented and carry at most 125 bytes.
    pub(crate) fn is_control(self) -> bool {
        matches!(self, OpCode::Close | OpCode::Ping | OpCode::Pong)
    }
}

/// A parsed client frame header: where its (now unmasked) payload lies in
/// the buffer it was parsed from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FrameHeader {
    /// Whether this is the last frame of its message.
    pub(crate) fin: bool,
    /// RSV1 on a connection with permessage-deflate: the message this
    /// frame starts is compressed.
    pub(crate) compressed: bool,
    /// The frame's opcode.
    pub(crate) opcode: OpCode,
    /// Offset of the payload from the start of the frame.
    pub(crate) payload_start: usize,
    /// Length of the payload.
    pub(crate) payload_len: usize,
}

impl FrameHeader {
    /// The payload's range in the buffer the frame was parsed from.
    pub(crate) fn payload_range(&self) -> Range<usize> {
        // Cannot overflow: parse_frame computed this same sum with checked
        // arithmetic before returning the header.
        self.payload_start..self.payload_start.saturating_add(self.payload_len)
    }
}

/// One client frame with its unmasked payload, borrowed from the read buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Whether this is the last frame of its message.
    pub(crate) fin: bool,
    /// Whether the message this frame starts is compressed
    /// (permessage-deflate's RSV1).
    pub(crate) compressed: bool,
    /// The frame's opcode.
    pub(crate) opcode: OpCode,
    /// The unmasked payload.
    pub(crate) payload: &'a [u8],
}

/// Parses one client frame from the start of `buf` and unmasks its payload
/// in place.
///
/// Returns `Ok(None)` when `buf` does not yet hold the whole frame; then
/// nothing in `buf` has changed, and the call is repeated once more bytes
/// have arrived. Otherwise returns the header and the number of bytes the
/// frame takes (header and payload) for the caller to consume. Since the
/// payload is unmasked in place, the same complete frame must not be parsed
/// twice.
///
/// Errors are reported as soon as the bytes that prove them are present: a
/// bad first byte needs nothing more, and a declared length over
/// `limits.max_frame` is refused from the header, before its payload is
/// buffered. Non-minimal length encodings are accepted: RFC 6455 requires
/// senders to use the shortest one, but the length they state is the same.
#[cfg(test)]
pub(crate) fn parse_frame(
    buf: &mut [u8],
    limits: &Limits,
) -> Result<Option<(FrameHeader, usize)>, ProtocolError> {
    parse_frame_with(buf, limits, false)
}

/// [`parse_frame`] on a connection that negotiated permessage-deflate when
/// `deflate` is set: RSV1 is then allowed on the first frame of a data
/// message (and reported in [`FrameHeader::compressed`]), and still refused
/// on control frames and continuations (RFC 7692, 6.1).
pub(crate) fn parse_frame_with(
    buf: &mut [u8],
    limits: &Limits,
    deflate: bool,
) -> Result<Option<(FrameHeader, usize)>, ProtocolError> {
    let Some(&b0) = buf.first() else {
        return Ok(None);
    };
    let allowed = if deflate { RSV1 } else { 0 };
    if b0 & RSV_BITS & !allowed != 0 {
        return Err(ProtocolError::ReservedBits);
    }
    let opcode = OpCode::from_bits(b0 & OPCODE_BITS).ok_or(ProtocolError::ReservedOpcode)?;
    let compressed = b0 & RSV1 != 0;
    if compressed && !matches!(opcode, OpCode::Text | OpCode::Binary) {
        return Err(ProtocolError::ReservedBits);
    }
    let fin = b0 & FIN_BIT != 0;
    if opcode.is_control() && !fin {
        return Err(ProtocolError::FragmentedControl);
    }

    let Some(&b1) = buf.get(1) else {
        return Ok(None);
    };
    if b1 & MASK_BIT == 0 {
        return Err(ProtocolError::UnmaskedFrame);
    }
    let len7 = b1 & LEN_BITS;
    // 126 and 127 announce extended lengths, both over the control limit.
    if opcode.is_control() && usize::from(len7) > MAX_CONTROL_PAYLOAD {
        return Err(ProtocolError::ControlTooLong);
    }

    let (declared, mask_at) = match len7 {
        LEN_16 => {
            let Some(ext) = read_array::<2>(buf, 2) else {
                return Ok(None);
            };
            (u64::from(u16::from_be_bytes(ext)), 4)
        }
        LEN_64 => {
            let Some(ext) = read_array::<8>(buf, 2) else {
                return Ok(None);
            };
            let n = u64::from_be_bytes(ext);
            if n >> 63 != 0 {
                return Err(ProtocolError::InvalidLength);
            }
            (n, 10)
        }
        n => (u64::from(n), 2),
    };
    // A length that does not even fit in memory is simply too big.
    let payload_len = usize::try_from(declared).map_err(|_| ProtocolError::TooBig)?;
    if payload_len > limits.max_frame {
        return Err(ProtocolError::TooBig);
    }

    let Some(key) = read_array::<4>(buf, mask_at) else {
        return Ok(None);
    };
    let payload_start = mask_at + 4;
    let end = payload_start
        .checked_add(payload_len)
        .ok_or(ProtocolError::TooBig)?;
    let Some(payload) = buf.get_mut(payload_start..end) else {
        return Ok(None);
    };
    apply_mask(payload, key);
    let header = FrameHeader {
        fin,
        compressed,
        opcode,
        payload_start,
        payload_len,
    };
    Ok(Some((header, end)))
}

/// [`parse_frame`], with the payload borrowed from `buf` as a [`Frame`].
///
/// The frame keeps `buf` borrowed; consume the returned number of bytes
/// once the frame (and any message borrowing from it) has been handled.
pub fn next_frame<'a>(
    buf: &'a mut [u8],
    limits: &Limits,
) -> Result<Option<(Frame<'a>, usize)>, ProtocolError> {
    next_frame_with(buf, limits, false)
}

/// [`next_frame`] on a connection that negotiated permessage-deflate when
/// `deflate` is set (see [`parse_frame_with`]).
pub fn next_frame_with<'a>(
    buf: &'a mut [u8],
    limits: &Limits,
    deflate: bool,
) -> Result<Option<(Frame<'a>, usize)>, ProtocolError> {
    let Some((header, consumed)) = parse_frame_with(buf, limits, deflate)? else {
        return Ok(None);
    };
    let buf: &'a [u8] = buf;
    // parse_frame has just checked that the payload lies within `buf`.
    let payload = buf.get(header.payload_range()).unwrap_or_default();
    let frame = Frame {
        fin: header.fin,
        compressed: header.compressed,
        opcode: header.opcode,
        payload,
    };
    Ok(Some((frame, consumed)))
}

/// The whole length (header, mask and payload) of the client frame that
/// `buf` starts with, as its header declares it; `None` until the header
/// has arrived.
///
/// Checks nothing: it lets a reader that holds an incomplete frame (one
/// [`parse_frame`] has already let through) reserve room for the rest of it
/// once, instead of growing its buffer again and again.
pub(crate) fn frame_len(buf: &[u8]) -> Option<usize> {
    let (declared, payload_start, _) = header_parts(buf)?;
    usize::try_from(declared).ok()?.checked_add(payload_start)
}

/// The declared payload length, the payload's offset and the masking key
/// (if the mask bit is set) of the frame header at the start of `buf`;
/// `None` until the whole header has arrived. Checks nothing.
pub(super) fn header_parts(buf: &[u8]) -> Option<(u64, usize, Option<[u8; 4]>)> {
    let b1 = *buf.get(1)?;
    let (declared, mask_at) = match b1 & LEN_BITS {
        LEN_16 => (u64::from(u16::from_be_bytes(read_array(buf, 2)?)), 4),
        LEN_64 => (u64::from_be_bytes(read_array(buf, 2)?), 10),
        n => (u64::from(n), 2),
    };
    if b1 & MASK_BIT == 0 {
        return Some((declared, mask_at, None));
    }
    Some((declared, mask_at + 4, Some(read_array(buf, mask_at)?)))
}

/// The `N` bytes of `buf` from `at`, or `None` if they have not all arrived.
fn read_array<const N: usize>(buf: &[u8], at: usize) -> Option<[u8; N]> {
    buf.get(at..at.checked_add(N)?)?.try_into().ok()
}

/// XORs `payload` with a masking key (RFC 6455, section 5.3); applying it
/// twice restores the original, so it both masks and unmasks.
pub(crate) fn apply_mask(payload: &mut [u8], key: [u8; 4]) {
    // Eight bytes at a time: the key repeats every four bytes, so a doubled
    // key lines up with every 8-byte chunk from the start of the payload.
    let [k0, k1, k2, k3] = key;
    let wide = u64::from_ne_bytes([k0, k1, k2, k3, k0, k1, k2, k3]);
    let mut chunks = payload.chunks_exact_mut(8);
    for chunk in &mut chunks {
        if let Ok(word) = <[u8; 8]>::try_from(&*chunk) {
            chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ wide).to_ne_bytes());
        }
    }
    // The remainder starts at a multiple of 8, so at key offset 0.
    for (byte, k) in chunks.into_remainder().iter_mut().zip(key.iter().cycle()) {
        *byte ^= k;
    }
}

/// The body of a Close frame that carried a status code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CloseFrame<'a> {
    /// The status code, one that [`close_code::is_valid`] accepts.
    pub code: u16,
    /// The UTF-8 reason, possibly empty.
    pub reason: &'a str,
}

/// Validates a received Close payload: `None` when it is empty (no status),
/// else its code and reason.
pub(crate) fn parse_close(payload: &[u8]) -> Result<Option<CloseFrame<'_>>, ProtocolError> {
    match payload {
        [] => Ok(None),
        [_] => Err(ProtocolError::CloseTooShort),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !close_code::is_valid(code) {
                return Err(ProtocolError::InvalidCloseCode);
            }
            let reason = std::str::from_utf8(reason).map_err(|_| ProtocolError::InvalidUtf8)?;
            Ok(Some(CloseFrame { code, reason }))
        }
    }
}

/// A server frame header, ready to be written before its payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct EncodedHeader {
    bytes: [u8; MAX_HEADER_LEN],
    len: u8,
}

impl EncodedHeader {
    /// The header's bytes: 2, 4 or 10 of them.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        self.bytes
            .get(..usize::from(self.len))
            .unwrap_or(&self.bytes)
    }
}

/// Encodes the header of a server frame (unmasked, as RFC 6455 requires of
/// a server) with the shortest length encoding.
///
/// Useful to write a large payload after its header without copying it;
/// [`encode_frame`] is simpler otherwise.
pub(crate) fn encode_header(fin: bool, opcode: OpCode, payload_len: usize) -> EncodedHeader {
    let mut bytes = [0u8; MAX_HEADER_LEN];
    let [b0, b1, ext @ ..] = &mut bytes;
    *b0 = if fin { FIN_BIT } else { 0 } | opcode.bits();
    let len = if payload_len <= MAX_CONTROL_PAYLOAD {
        *b1 = payload_len as u8;
        2
    } else if let Ok(short) = u16::try_from(payload_len) {
        *b1 = LEN_16;
        for (slot, byte) in ext.iter_mut().zip(short.to_be_bytes()) {
            *slot = byte;
        }
        4
    } else {
        *b1 = LEN_64;
        // usize is at most 64 bits on every target Rust supports.
        for (slot, byte) in ext.iter_mut().zip((payload_len as u64).to_be_bytes()) {
            *slot = byte;
        }
        10
    };
    EncodedHeader { bytes, len }
}

/// Encodes a whole (FIN) server frame: header and payload in one buffer of
/// exactly the right size, to be shared by every connection it is sent to.
///
/// A control frame's payload is cut to 125 bytes rather than produce a
/// frame the client must reject; use [`encode_close`] for a Close.
pub(crate) fn encode_frame(opcode: OpCode, payload: &[u8]) -> Bytes {
    let payload = if opcode.is_control() {
        payload.get(..MAX_CONTROL_PAYLOAD).unwrap_or(payload)
    } else {
        payload
    };
    let header = encode_header(true, opcode, payload.len());
    let header = header.as_bytes();
    let mut out = Vec::with_capacity(header.len() + payload.len());
    out.extend_from_slice(header);
    out.extend_from_slice(payload);
    // Length equals capacity, so the conversion does not reallocate.
    Bytes::from(out)
}

/// Encodes a server Close frame with a status code and a reason, the reason
/// cut at a character boundary to fit [`MAX_CLOSE_REASON`] bytes.
///
/// `code` should be one a peer may send ([`close_code::is_valid`]); 1005,
/// 1006 and 1015 in particular never go on the wire.
pub(crate) fn encode_close(code: u16, reason: &str) -> Bytes {
    let reason = truncate_at_char_boundary(reason, MAX_CLOSE_REASON);
    let mut payload = Vec::with_capacity(2 + reason.len());
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(reason.as_bytes());
    encode_frame(OpCode::Close, &payload)
}

/// [`EMPTY_PING`] as shareable [`Bytes`], without allocating.
pub(crate) fn empty_ping() -> Bytes {
    Bytes::from_static(&EMPTY_PING)
}

/// The longest prefix of `s` of at most `max` bytes that ends on a
/// character boundary.
fn truncate_at_char_boundary(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    // Terminates: 0 is always a boundary.
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default()
}
