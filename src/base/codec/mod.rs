//! RFC 6455 frame codec for the server side, with no I/O.
//!
//! Client frames are parsed from the front of the connection's read buffer
//! and unmasked in place, so a payload is never copied just to be read. A
//! [`MessageAssembler`] turns frames into messages; only a fragmented message
//! needs an owned accumulator, so an idle connection holds no buffer here.
//! Server frames are unmasked and encoded into one [`Bytes`], which a
//! broadcast shares between every connection it goes to.
//!
//! Driving it from a read buffer (with a `BytesMut`, `advance(consumed)`
//! replaces the `start` offset):
//!
//! ```
//! use pagewire::base::codec::{next_frame, Limits, Message, MessageAssembler};
//!
//! // The masked text frame "Hello" of RFC 6455, section 5.7.
//! let mut buf = vec![0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58];
//! let limits = Limits::default();
//! let mut assembler = MessageAssembler::new(&limits);
//! let mut start = 0;
//! while let Some((frame, consumed)) = next_frame(&mut buf[start..], &limits)? {
//!     match assembler.push(frame)? {
//!         Some(Message::Text(text)) => assert_eq!(text, "Hello"),
//!         Some(_) => unreachable!("only a text frame was sent"),
//!         None => {} // a fragment: its bytes are kept by the assembler
//!     }
//!     start += consumed;
//! }
//! assert_eq!(start, buf.len());
//! # Ok::<(), pagewire::base::codec::ProtocolError>(())
//! ```

pub mod handshake;

use std::borrow::Cow;
use std::ops::Range;

use bytes::Bytes;

/// Default largest payload of one frame a client may send.
pub(crate) const DEFAULT_MAX_FRAME: usize = 64 * 1024;
/// Default largest message (all fragments together) a client may send.
pub(crate) const DEFAULT_MAX_MESSAGE: usize = 64 * 1024;
/// Largest payload of a control frame (RFC 6455, section 5.5).
pub(crate) const MAX_CONTROL_PAYLOAD: usize = 125;
/// Largest close reason: a control payload minus the two-byte status code.
pub(crate) const MAX_CLOSE_REASON: usize = MAX_CONTROL_PAYLOAD - 2;
/// Longest header of a server frame: two bytes and a 64-bit length, no mask.
pub(crate) const MAX_HEADER_LEN: usize = 10;
/// Longest header of a client frame: a server header plus the masking key.
pub(crate) const MAX_CLIENT_HEADER_LEN: usize = MAX_HEADER_LEN + 4;

/// A server Ping with no payload, ready to write.
pub(crate) const EMPTY_PING: [u8; 2] = [FIN_BIT | 0x9, 0];

const FIN_BIT: u8 = 0x80;
const RSV_BITS: u8 = 0x70;
const OPCODE_BITS: u8 = 0x0F;
const MASK_BIT: u8 = 0x80;
const LEN_BITS: u8 = 0x7F;
/// 7-bit length values announcing a 16-bit and a 64-bit extended length.
const LEN_16: u8 = 126;
const LEN_64: u8 = 127;

/// Close status codes (RFC 6455, section 7.4.1) that pagewire sends.
pub mod close_code {
    /// The endpoint is going away: server shutdown or page navigation.
    pub(crate) const GOING_AWAY: u16 = 1001;
    /// The peer broke the protocol.
    pub(crate) const PROTOCOL: u16 = 1002;
    /// The peer sent a kind of data the endpoint does not accept.
    pub(crate) const UNSUPPORTED: u16 = 1003;
    /// A message's payload was inconsistent with its type (bad UTF-8).
    pub(crate) const INVALID_PAYLOAD: u16 = 1007;
    /// A message violated the endpoint's policy.
    pub(crate) const POLICY: u16 = 1008;
    /// A frame or message was larger than the endpoint accepts.
    pub(crate) const TOO_BIG: u16 = 1009;
    /// The endpoint is overloaded for now: the peer may try again later.
    pub(crate) const TRY_AGAIN_LATER: u16 = 1013;

    /// Whether `code` may appear in a Close frame received from a peer.
    ///
    /// 1004 is reserved; 1005, 1006 and 1015 only report a condition locally
    /// and must never be sent; 1016-2999 are kept for future RFCs. 1012-1014
    /// are registered with IANA and seen in the wild, so they are accepted.
    /// 3000-3999 belong to libraries and 4000-4999 to applications.
    pub fn is_valid(code: u16) -> bool {
        matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}

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

/// Size limits, checked while parsing so oversized input is refused before
/// it is buffered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest payload of one frame; a larger declared length is refused
    /// from the header alone.
    pub max_frame: usize,
    /// Largest message, all fragments together.
    pub max_message: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame: DEFAULT_MAX_FRAME,
            max_message: DEFAULT_MAX_MESSAGE,
        }
    }
}

/// Why a client's input breaks the protocol; the connection is then closed
/// with [`close_code`](Self::close_code) and [`reason`](Self::reason).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// RSV1-3 set, but no extension was negotiated.
    #[error("{}", self.reason())]
    ReservedBits,
    /// An opcode RFC 6455 reserves (0x3-0x7, 0xB-0xF).
    #[error("{}", self.reason())]
    ReservedOpcode,
    /// A client frame without a mask (RFC 6455, section 5.1).
    #[error("{}", self.reason())]
    UnmaskedFrame,
    /// A control frame without FIN.
    #[error("{}", self.reason())]
    FragmentedControl,
    /// A control frame with more than 125 bytes of payload.
    #[error("{}", self.reason())]
    ControlTooLong,
    /// A 64-bit length with its most significant bit set.
    #[error("{}", self.reason())]
    InvalidLength,
    /// A frame or message over the [`Limits`].
    #[error("{}", self.reason())]
    TooBig,
    /// A continuation frame with no fragmented message in progress.
    #[error("{}", self.reason())]
    UnexpectedContinuation,
    /// A new Text or Binary frame while a fragmented message is unfinished.
    #[error("{}", self.reason())]
    ExpectedContinuation,
    /// A text message or close reason that is not UTF-8.
    #[error("{}", self.reason())]
    InvalidUtf8,
    /// A Close payload of exactly one byte: half a status code.
    #[error("{}", self.reason())]
    CloseTooShort,
    /// A Close status code a peer may not send.
    #[error("{}", self.reason())]
    InvalidCloseCode,
}

impl ProtocolError {
    /// The status code to close the connection with.
    pub(crate) fn close_code(&self) -> u16 {
        match self {
            ProtocolError::TooBig => close_code::TOO_BIG,
            ProtocolError::InvalidUtf8 => close_code::INVALID_PAYLOAD,
            _ => close_code::PROTOCOL,
        }
    }

    /// A short reason for the Close frame (also the `Display` text); always
    /// fits [`MAX_CLOSE_REASON`], and needs no allocation to send.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            ProtocolError::ReservedBits => "reserved bits set",
            ProtocolError::ReservedOpcode => "reserved opcode",
            ProtocolError::UnmaskedFrame => "unmasked client frame",
            ProtocolError::FragmentedControl => "fragmented control frame",
            ProtocolError::ControlTooLong => "control frame too long",
            ProtocolError::InvalidLength => "invalid frame length",
            // The same words for a frame and a message: the page protocol
            // documents one reason for both.
            ProtocolError::TooBig => "message too big",
            ProtocolError::UnexpectedContinuation => "continuation without a message",
            ProtocolError::ExpectedContinuation => "expected a continuation frame",
            ProtocolError::InvalidUtf8 => "invalid UTF-8",
            ProtocolError::CloseTooShort => "one-byte close payload",
            ProtocolError::InvalidCloseCode => "invalid close code",
        }
    }
}

/// A parsed client frame header: where its (now unmasked) payload lies in
/// the buffer it was parsed from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FrameHeader {
    /// Whether this is the last frame of its message.
    pub(crate) fin: bool,
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
pub(crate) fn parse_frame(
    buf: &mut [u8],
    limits: &Limits,
) -> Result<Option<(FrameHeader, usize)>, ProtocolError> {
    let Some(&b0) = buf.first() else {
        return Ok(None);
    };
    if b0 & RSV_BITS != 0 {
        return Err(ProtocolError::ReservedBits);
    }
    let opcode = OpCode::from_bits(b0 & OPCODE_BITS).ok_or(ProtocolError::ReservedOpcode)?;
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
    let Some((header, consumed)) = parse_frame(buf, limits)? else {
        return Ok(None);
    };
    let buf: &'a [u8] = buf;
    // parse_frame has just checked that the payload lies within `buf`.
    let payload = buf.get(header.payload_range()).unwrap_or_default();
    let frame = Frame {
        fin: header.fin,
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
fn header_parts(buf: &[u8]) -> Option<(u64, usize, Option<[u8; 4]>)> {
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

/// A complete message, or a control frame, from the client.
///
/// A message that came in one frame borrows its payload from the read
/// buffer; only a reassembled fragmented message is owned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message<'a> {
    /// A text message, valid UTF-8.
    Text(Cow<'a, str>),
    /// A binary message.
    Binary(Cow<'a, [u8]>),
    /// A Ping; answer with a Pong carrying the same payload.
    Ping(&'a [u8]),
    /// A Pong.
    Pong(&'a [u8]),
    /// A Close, with its status and reason if it had any.
    Close(Option<CloseFrame<'a>>),
}

/// How far [`MessageAssembler::check_arriving`] has got through the text
/// of a frame that is still arriving.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Arriving {
    /// Payload bytes checked so far.
    checked: usize,
    /// The text's validator; `None` before the first call, and for a frame
    /// that is not text.
    utf8: Option<Utf8Validator>,
}

/// Turns client frames into messages: enforces the fragmentation rules and
/// the message limit, and checks text as UTF-8 fragment by fragment.
///
/// Holds no buffer while no fragmented message is in progress, and releases
/// its buffer as soon as the message is complete or an error occurs.
#[derive(Clone, Debug)]
pub struct MessageAssembler {
    max_message: usize,
    partial: Option<Partial>,
}

/// A fragmented message in progress.
#[derive(Clone, Debug)]
struct Partial {
    data: Vec<u8>,
    /// Present for a text message.
    utf8: Option<Utf8Validator>,
}

impl Default for MessageAssembler {
    fn default() -> Self {
        MessageAssembler::new(&Limits::default())
    }
}

impl MessageAssembler {
    /// An assembler enforcing `limits.max_message`.
    pub fn new(limits: &Limits) -> Self {
        MessageAssembler {
            max_message: limits.max_message,
            partial: None,
        }
    }

    /// Whether a fragmented message has started and not yet finished.
    pub(crate) fn in_progress(&self) -> bool {
        self.partial.is_some()
    }

    /// The bytes allocated for the fragmented message in progress.
    pub(crate) fn held_bytes(&self) -> usize {
        self.partial.as_ref().map_or(0, |p| p.data.capacity())
    }

    /// Checks the text that has arrived so far of an incomplete frame at
    /// the start of `buf` (one [`parse_frame`] returned `Ok(None)` for), so
    /// that invalid UTF-8 is refused as soon as it arrives, not once the
    /// whole frame is in: a peer streaming a large bad frame is stopped
    /// early (Autobahn's cases 6.4.3 and 6.4.4 expect it).
    ///
    /// `progress` carries what earlier calls checked of the same frame;
    /// start each frame with `Arriving::default()`. Leaves `buf` as it is
    /// (still masked), so [`parse_frame`] can take the frame when complete.
    /// Frames that are not text, and errors other than bad UTF-8, are left
    /// to [`parse_frame`] and [`push`](Self::push).
    pub fn check_arriving(&self, buf: &[u8], progress: &mut Arriving) -> Result<(), ProtocolError> {
        let Some(&b0) = buf.first() else {
            return Ok(());
        };
        let Some((declared, payload_start, Some(key))) = header_parts(buf) else {
            return Ok(());
        };
        if progress.utf8.is_none() {
            progress.utf8 = match (OpCode::from_bits(b0 & OPCODE_BITS), &self.partial) {
                (Some(OpCode::Text), None) => Some(Utf8Validator::new()),
                (Some(OpCode::Continuation), Some(partial)) => partial.utf8,
                _ => None,
            };
        }
        let Some(utf8) = progress.utf8.as_mut() else {
            return Ok(());
        };
        let declared = usize::try_from(declared).unwrap_or(usize::MAX);
        let end = payload_start.saturating_add(declared).min(buf.len());
        let from = payload_start.saturating_add(progress.checked);
        let arrived = buf.get(from..end).unwrap_or_default();
        // Unmasked a piece at a time in a copy: the buffer stays masked.
        let mut piece = [0u8; 64];
        for chunk in arrived.chunks(piece.len()) {
            let piece = piece.get_mut(..chunk.len()).unwrap_or_default();
            piece.copy_from_slice(chunk);
            // The key as it stands at this byte of the payload.
            let mut at = [0u8; 4];
            for (i, k) in at.iter_mut().enumerate() {
                *k = key[(progress.checked + i) % 4];
            }
            apply_mask(piece, at);
            utf8.feed(piece)?;
            progress.checked += chunk.len();
        }
        Ok(())
    }

    /// Drops any message in progress and its buffer.
    pub(crate) fn reset(&mut self) {
        self.partial = None;
    }

    /// Takes the next frame. Returns a message when the frame completes one
    /// (or is a control frame), `None` when it was a fragment to keep.
    ///
    /// On an error the connection must be closed; the message in progress
    /// is dropped at once, so the error does not hold its memory.
    pub fn push<'a>(&mut self, frame: Frame<'a>) -> Result<Option<Message<'a>>, ProtocolError> {
        let result = self.push_frame(frame);
        if result.is_err() {
            self.partial = None;
        }
        result
    }

    fn push_frame<'a>(&mut self, frame: Frame<'a>) -> Result<Option<Message<'a>>, ProtocolError> {
        let Frame {
            fin,
            opcode,
            payload,
        } = frame;
        match opcode {
            OpCode::Ping => check_control(fin, payload).map(|()| Some(Message::Ping(payload))),
            OpCode::Pong => check_control(fin, payload).map(|()| Some(Message::Pong(payload))),
            OpCode::Close => {
                check_control(fin, payload)?;
                Ok(Some(Message::Close(parse_close(payload)?)))
            }
            OpCode::Text => self.start(true, fin, payload),
            OpCode::Binary => self.start(false, fin, payload),
            OpCode::Continuation => self.resume(fin, payload),
        }
    }

    /// A Text or Binary frame: a whole message, or the first fragment.
    fn start<'a>(
        &mut self,
        text: bool,
        fin: bool,
        payload: &'a [u8],
    ) -> Result<Option<Message<'a>>, ProtocolError> {
        if self.partial.is_some() {
            return Err(ProtocolError::ExpectedContinuation);
        }
        if payload.len() > self.max_message {
            return Err(ProtocolError::TooBig);
        }
        if fin {
            // The common case: hand out the read buffer's bytes, no copy.
            let message = if text {
                let text = std::str::from_utf8(payload).map_err(|_| ProtocolError::InvalidUtf8)?;
                Message::Text(Cow::Borrowed(text))
            } else {
                Message::Binary(Cow::Borrowed(payload))
            };
            return Ok(Some(message));
        }
        let utf8 = if text {
            let mut utf8 = Utf8Validator::new();
            utf8.feed(payload)?;
            Some(utf8)
        } else {
            None
        };
        let mut data = Vec::new();
        append_bounded(&mut data, payload, self.max_message);
        self.partial = Some(Partial { data, utf8 });
        Ok(None)
    }

    /// A Continuation frame: the next fragment of the message in progress.
    fn resume<'a>(
        &mut self,
        fin: bool,
        payload: &'a [u8],
    ) -> Result<Option<Message<'a>>, ProtocolError> {
        // Taken out while it grows: an error below then simply drops it,
        // buffer and all; otherwise it is put back or handed out.
        let Some(mut partial) = self.partial.take() else {
            return Err(ProtocolError::UnexpectedContinuation);
        };
        let total = partial
            .data
            .len()
            .checked_add(payload.len())
            .ok_or(ProtocolError::TooBig)?;
        if total > self.max_message {
            return Err(ProtocolError::TooBig);
        }
        // Checked before the bytes are kept, so bad text fails at the first
        // fragment that proves it bad.
        if let Some(utf8) = partial.utf8.as_mut() {
            utf8.feed(payload)?;
        }
        append_bounded(&mut partial.data, payload, self.max_message);
        if !fin {
            self.partial = Some(partial);
            return Ok(None);
        }
        match partial.utf8 {
            Some(utf8) => {
                utf8.finish()?;
                // Already checked piece by piece; this second pass is what
                // turns the bytes into a String without unsafe code.
                let text =
                    String::from_utf8(partial.data).map_err(|_| ProtocolError::InvalidUtf8)?;
                Ok(Some(Message::Text(Cow::Owned(text))))
            }
            None => Ok(Some(Message::Binary(Cow::Owned(partial.data)))),
        }
    }
}

/// The rules parse_frame enforces on control frames, checked again so that
/// a hand-built [`Frame`] cannot slip past them.
fn check_control(fin: bool, payload: &[u8]) -> Result<(), ProtocolError> {
    if !fin {
        return Err(ProtocolError::FragmentedControl);
    }
    if payload.len() > MAX_CONTROL_PAYLOAD {
        return Err(ProtocolError::ControlTooLong);
    }
    Ok(())
}

/// Appends `more` to `data`, which the caller has checked will not exceed
/// `max`. Grows geometrically like `Vec` does, but never past `max`: the
/// message cannot get longer, so capacity beyond it would only be waste.
fn append_bounded(data: &mut Vec<u8>, more: &[u8], max: usize) {
    let needed = data.len().saturating_add(more.len());
    if needed > data.capacity() {
        let target = needed.max(data.capacity().saturating_mul(2)).min(max);
        data.reserve_exact(target.max(needed).saturating_sub(data.len()));
    }
    data.extend_from_slice(more);
}

/// Checks UTF-8 that arrives in pieces, failing at the first piece whose
/// bytes can no longer be the start of valid UTF-8.
///
/// Between pieces it holds at most three bytes: the beginning of a
/// character split across the boundary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Utf8Validator {
    pending: [u8; 3],
    pending_len: u8,
}

impl Utf8Validator {
    /// A validator at the start of a text.
    pub(crate) fn new() -> Self {
        Utf8Validator::default()
    }

    /// Checks the next piece of the text.
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Result<(), ProtocolError> {
        let mut rest = bytes;
        let held_len = usize::from(self.pending_len);
        if let Some(held) = self.pending.get(..held_len).filter(|h| !h.is_empty()) {
            // Complete the held character first, with exactly as many bytes
            // as its lead byte calls for (std's check of the joined bytes
            // then rejects a bad lead or continuation byte).
            let width: usize = match held.first() {
                Some(0xC0..=0xDF) => 2,
                Some(0xE0..=0xEF) => 3,
                _ => 4,
            };
            let take = rest.len().min(width.saturating_sub(held_len));
            let (head, tail) = rest.split_at(take);
            let mut joined = [0u8; 4];
            for (slot, byte) in joined.iter_mut().zip(held.iter().chain(head)) {
                *slot = *byte;
            }
            let joined = joined.get(..held_len + take).unwrap_or_default();
            match std::str::from_utf8(joined) {
                Ok(_) => self.pending_len = 0,
                Err(e) if e.error_len().is_some() => return Err(ProtocolError::InvalidUtf8),
                // Still short of `width`: `bytes` ran out, so `tail` is
                // empty and the longer prefix is held for the next piece.
                Err(_) => return self.hold(joined),
            }
            rest = tail;
        }
        match std::str::from_utf8(rest) {
            Ok(_) => Ok(()),
            // `error_len() == None` means the bytes stopped in the middle of
            // a character that could still be completed.
            Err(e) if e.error_len().is_none() => {
                self.hold(rest.get(e.valid_up_to()..).unwrap_or_default())
            }
            Err(_) => Err(ProtocolError::InvalidUtf8),
        }
    }

    /// Checks that the text did not end inside a character.
    pub(crate) fn finish(&self) -> Result<(), ProtocolError> {
        if self.pending_len == 0 {
            Ok(())
        } else {
            Err(ProtocolError::InvalidUtf8)
        }
    }

    fn hold(&mut self, unfinished: &[u8]) -> Result<(), ProtocolError> {
        // An unfinished character is at most three bytes; more would mean
        // std reported something other than a truncated character.
        let slot = self
            .pending
            .get_mut(..unfinished.len())
            .ok_or(ProtocolError::InvalidUtf8)?;
        slot.copy_from_slice(unfinished);
        self.pending_len = unfinished.len() as u8;
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::XorShift;

    const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
    const FIN: u8 = 0x80;

    /// A masked client frame with first byte `b0` and the shortest length.
    fn masked(b0: u8, payload: &[u8]) -> Vec<u8> {
        crate::testutil::masked(KEY, b0, payload)
    }

    /// Bytes with no pattern the mask could hide.
    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    fn parse(buf: &mut [u8]) -> Result<Option<(FrameHeader, usize)>, ProtocolError> {
        parse_frame(buf, &Limits::default())
    }

    /// Parses and assembles every frame in `stream`, returning the owned
    /// messages, or the error with the index of the frame that caused it.
    fn run(
        stream: &mut [u8],
        limits: &Limits,
    ) -> Result<Vec<Message<'static>>, (usize, ProtocolError)> {
        let mut assembler = MessageAssembler::new(limits);
        let mut out = Vec::new();
        let mut start = 0;
        let mut index = 0;
        loop {
            let step = next_frame(&mut stream[start..], limits).map_err(|e| (index, e))?;
            let Some((frame, consumed)) = step else { break };
            match assembler.push(frame).map_err(|e| (index, e))? {
                Some(message) => out.push(to_owned(message)),
                None => assert!(assembler.in_progress()),
            }
            start += consumed;
            index += 1;
        }
        assert_eq!(start, stream.len(), "trailing bytes left unparsed");
        Ok(out)
    }

    fn to_owned(message: Message<'_>) -> Message<'static> {
        match message {
            Message::Text(t) => Message::Text(Cow::Owned(t.into_owned())),
            Message::Binary(b) => Message::Binary(Cow::Owned(b.into_owned())),
            Message::Ping(p) => Message::Ping(p.to_vec().leak()),
            Message::Pong(p) => Message::Pong(p.to_vec().leak()),
            Message::Close(c) => Message::Close(c.map(|c| CloseFrame {
                code: c.code,
                reason: c.reason.to_owned().leak(),
            })),
        }
    }

    fn concat(frames: &[Vec<u8>]) -> Vec<u8> {
        frames.concat()
    }

    #[test]
    fn rfc_masked_hello() {
        let mut buf = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        assert_eq!(masked(0x81, b"Hello"), buf);
        let (header, consumed) = parse(&mut buf).expect("valid").expect("complete");
        assert_eq!(
            header,
            FrameHeader {
                fin: true,
                opcode: OpCode::Text,
                payload_start: 6,
                payload_len: 5
            }
        );
        assert_eq!(consumed, 11);
        assert_eq!(&buf[header.payload_range()], b"Hello");
    }

    #[test]
    fn rfc_server_examples_encode_exactly() {
        // RFC 6455, section 5.7: unmasked text, ping, 256 and 65536 bytes.
        assert_eq!(
            &encode_frame(OpCode::Text, b"Hello")[..],
            [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]
        );
        assert_eq!(
            &encode_frame(OpCode::Ping, b"Hello")[..],
            [0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]
        );
        assert_eq!(
            &encode_frame(OpCode::Binary, &[0; 256])[..4],
            [0x82, 0x7E, 0x01, 0x00]
        );
        assert_eq!(
            &encode_frame(OpCode::Binary, &[0; 65536])[..10],
            [0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0]
        );
    }

    #[test]
    fn lengths_round_trip() {
        let limits = Limits {
            max_frame: 1 << 20,
            max_message: 1 << 20,
        };
        // (payload length, header length including the mask key)
        let cases = [
            (0, 6),
            (1, 6),
            (125, 6),
            (126, 8),
            (127, 8),
            (65535, 8),
            (65536, 14),
            (100_000, 14),
        ];
        for (len, header_len) in cases {
            let payload = pattern(len);
            let mut buf = masked(0x82, &payload);
            assert_eq!(buf.len(), header_len + len);
            let (header, consumed) = parse_frame(&mut buf, &limits)
                .expect("valid")
                .expect("complete");
            assert_eq!(
                (header.payload_start, header.payload_len),
                (header_len, len)
            );
            assert_eq!(consumed, buf.len());
            assert_eq!(&buf[header.payload_range()], &payload[..], "length {len}");
        }
    }

    #[test]
    fn non_minimal_lengths_are_accepted() {
        let mut short16 = vec![0x81, 0x80 | 126, 0, 5];
        let mut short64 = vec![0x81, 0x80 | 127, 0, 0, 0, 0, 0, 0, 0, 5];
        for buf in [&mut short16, &mut short64] {
            let at = buf.len() + 4;
            buf.extend_from_slice(&KEY);
            buf.extend_from_slice(b"Hello");
            apply_mask(&mut buf[at..], KEY);
            let (header, consumed) = parse(buf).expect("valid").expect("complete");
            assert_eq!(consumed, buf.len());
            assert_eq!(&buf[header.payload_range()], b"Hello");
        }
    }

    #[test]
    fn incomplete_input_is_left_untouched() {
        let limits = Limits {
            max_frame: 70_000,
            max_message: 70_000,
        };
        for len in [0, 5, 125, 126, 300, 65535, 65536] {
            let frame = masked(0x82, &pattern(len));
            // Every cut of the short frames. Copying every prefix of a 64 KiB
            // frame would be slow in debug builds, so there: the header
            // region, a stride through the payload, and the last bytes.
            let total = frame.len();
            let cuts = (0..total)
                .filter(|&cut| total <= 400 || cut < 40 || cut % 997 == 0 || cut + 40 > total);
            for cut in cuts {
                let mut prefix = frame[..cut].to_vec();
                assert_eq!(
                    parse_frame(&mut prefix, &limits),
                    Ok(None),
                    "length {len}, cut {cut}"
                );
                assert_eq!(
                    prefix,
                    frame[..cut],
                    "length {len}, cut {cut}: bytes changed"
                );
            }
            let mut whole = frame.clone();
            let (_, consumed) = parse_frame(&mut whole, &limits)
                .expect("valid")
                .expect("complete");
            assert_eq!(consumed, frame.len());
        }
    }

    #[test]
    fn following_bytes_are_not_consumed() {
        let mut buf = concat(&[masked(0x81, b"one"), masked(0x82, b"two")]);
        let second = buf[9..].to_vec();
        let (header, consumed) = parse(&mut buf).expect("valid").expect("complete");
        assert_eq!((consumed, &buf[header.payload_range()]), (9, &b"one"[..]));
        assert_eq!(buf[9..], second[..]);
    }

    #[test]
    fn bad_frames_are_refused_with_their_codes() {
        let limits = Limits {
            max_frame: 1000,
            max_message: 1000,
        };
        let mut cases: Vec<(&str, Vec<u8>, ProtocolError)> = vec![
            ("RSV1", vec![0xC1], ProtocolError::ReservedBits),
            ("RSV2", vec![0xA1], ProtocolError::ReservedBits),
            ("RSV3", vec![0x91], ProtocolError::ReservedBits),
            (
                "RSV on ping",
                masked(0x80 | 0x40 | 0x9, b""),
                ProtocolError::ReservedBits,
            ),
            (
                "unmasked",
                vec![0x81, 0x05, b'H'],
                ProtocolError::UnmaskedFrame,
            ),
            (
                "unmasked close",
                vec![0x88, 0x00],
                ProtocolError::UnmaskedFrame,
            ),
            (
                "ping without FIN",
                vec![0x09],
                ProtocolError::FragmentedControl,
            ),
            (
                "close without FIN",
                masked(0x08, b""),
                ProtocolError::FragmentedControl,
            ),
            (
                "pong without FIN",
                masked(0x0A, b""),
                ProtocolError::FragmentedControl,
            ),
            (
                "ping of 126",
                vec![0x89, 0x80 | 126],
                ProtocolError::ControlTooLong,
            ),
            (
                "close of 127",
                vec![0x88, 0x80 | 127],
                ProtocolError::ControlTooLong,
            ),
            (
                "64-bit MSB",
                vec![0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0],
                ProtocolError::InvalidLength,
            ),
            // Refused from the header: no mask key or payload has arrived.
            (
                "16-bit over the limit",
                vec![0x82, 0xFE, 0x03, 0xE9],
                ProtocolError::TooBig,
            ),
            (
                "64-bit over the limit",
                vec![0x82, 0xFF, 0, 0, 0, 0, 0, 0, 0x03, 0xE9],
                ProtocolError::TooBig,
            ),
            (
                "64-bit huge",
                vec![0x82, 0xFF, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF],
                ProtocolError::TooBig,
            ),
        ];
        for bits in (0x3..=0x7).chain(0xB..=0xF) {
            cases.push((
                "reserved opcode",
                vec![FIN | bits],
                ProtocolError::ReservedOpcode,
            ));
        }
        for (name, mut buf, expected) in cases {
            assert_eq!(parse_frame(&mut buf, &limits), Err(expected), "{name}");
        }
        // At the limit exactly is fine.
        let mut at_limit = masked(0x82, &pattern(1000));
        assert!(matches!(parse_frame(&mut at_limit, &limits), Ok(Some(_))));
    }

    #[test]
    fn error_codes_and_reasons() {
        use ProtocolError::*;
        let all = [
            (ReservedBits, 1002),
            (ReservedOpcode, 1002),
            (UnmaskedFrame, 1002),
            (FragmentedControl, 1002),
            (ControlTooLong, 1002),
            (InvalidLength, 1002),
            (TooBig, 1009),
            (UnexpectedContinuation, 1002),
            (ExpectedContinuation, 1002),
            (InvalidUtf8, 1007),
            (CloseTooShort, 1002),
            (InvalidCloseCode, 1002),
        ];
        for (error, code) in all {
            assert_eq!(error.close_code(), code, "{error:?}");
            assert_eq!(error.to_string(), error.reason());
            assert!(!error.reason().is_empty() && error.reason().len() <= MAX_CLOSE_REASON);
        }
        assert_eq!(TooBig.reason(), "message too big");
        assert_eq!(InvalidUtf8.reason(), "invalid UTF-8");
    }

    #[test]
    fn single_frames_are_borrowed() {
        let mut buf = masked(0x81, "grüß".as_bytes());
        let (frame, _) = next_frame(&mut buf, &Limits::default())
            .expect("valid")
            .expect("complete");
        let mut assembler = MessageAssembler::default();
        match assembler.push(frame) {
            Ok(Some(Message::Text(Cow::Borrowed(text)))) => assert_eq!(text, "grüß"),
            other => panic!("expected borrowed text, got {other:?}"),
        }
        let mut buf = masked(0x82, &[0, 255]);
        let (frame, _) = next_frame(&mut buf, &Limits::default())
            .expect("valid")
            .expect("complete");
        match assembler.push(frame) {
            Ok(Some(Message::Binary(Cow::Borrowed(bytes)))) => assert_eq!(bytes, [0, 255]),
            other => panic!("expected borrowed binary, got {other:?}"),
        }
        assert!(!assembler.in_progress());
    }

    fn text(s: &str) -> Message<'static> {
        Message::Text(Cow::Owned(s.to_owned()))
    }

    #[test]
    fn message_sequences() {
        let euro = "€".as_bytes(); // E2 82 AC
        let ping = || masked(0x89, b"hi");
        type Case = (
            &'static str,
            Vec<Vec<u8>>,
            Result<Vec<Message<'static>>, (usize, ProtocolError)>,
        );
        let cases: Vec<Case> = vec![
            (
                "rfc fragmented hello",
                vec![masked(0x01, b"Hel"), masked(0x80, b"lo")],
                Ok(vec![text("Hello")]),
            ),
            (
                "multibyte char split across three fragments",
                vec![
                    masked(0x01, &[b'a', euro[0]]),
                    masked(0x00, &euro[1..2]),
                    masked(0x80, &[euro[2], b'b']),
                ],
                Ok(vec![text("a€b")]),
            ),
            (
                "four-byte char split after its first byte",
                vec![masked(0x01, &[0xF0]), masked(0x80, &[0x9F, 0x98, 0x80])],
                Ok(vec![text("😀")]),
            ),
            (
                "empty fragments",
                vec![masked(0x01, b""), masked(0x00, b""), masked(0x80, b"")],
                Ok(vec![text("")]),
            ),
            (
                "fragmented binary",
                vec![masked(0x02, &[0xFF]), masked(0x80, &[0xFE])],
                Ok(vec![Message::Binary(Cow::Owned(vec![0xFF, 0xFE]))]),
            ),
            (
                "ping, pong and close interleaved in a fragmented message",
                vec![
                    masked(0x01, b"a"),
                    ping(),
                    masked(0x00, b"b"),
                    masked(0x8A, b""),
                    masked(0x80, b"c"),
                    masked(0x88, &[0x03, 0xE8]),
                ],
                Ok(vec![
                    Message::Ping(b"hi"),
                    Message::Pong(b""),
                    text("abc"),
                    Message::Close(Some(CloseFrame {
                        code: 1000,
                        reason: "",
                    })),
                ]),
            ),
            (
                "continuation without a start",
                vec![masked(0x80, b"x")],
                Err((0, ProtocolError::UnexpectedContinuation)),
            ),
            (
                "continuation after a finished message",
                vec![masked(0x81, b"x"), masked(0x00, b"y")],
                Err((1, ProtocolError::UnexpectedContinuation)),
            ),
            (
                "text while text is in progress",
                vec![masked(0x01, b"a"), masked(0x81, b"b")],
                Err((1, ProtocolError::ExpectedContinuation)),
            ),
            (
                "binary while text is in progress",
                vec![masked(0x01, b"a"), ping(), masked(0x02, b"b")],
                Err((2, ProtocolError::ExpectedContinuation)),
            ),
            (
                "invalid UTF-8 in one frame",
                vec![masked(0x81, &[b'a', 0xFF])],
                Err((0, ProtocolError::InvalidUtf8)),
            ),
            (
                // Autobahn 6.4.x: the fragment with the surrogate fails,
                // the following ones are never looked at.
                "fail fast on the first bad fragment",
                vec![
                    masked(0x01, "κόσμε".as_bytes()),
                    masked(0x00, &[0xED, 0xA0, 0x80]),
                    masked(0x80, b"edited"),
                ],
                Err((1, ProtocolError::InvalidUtf8)),
            ),
            (
                "fail fast on a bad continuation of a held lead byte",
                vec![
                    masked(0x01, &[b'a', 0xE2]),
                    masked(0x00, &[0x28]),
                    masked(0x80, b""),
                ],
                Err((1, ProtocolError::InvalidUtf8)),
            ),
            (
                "fail fast on a code point above U+10FFFF",
                vec![
                    masked(0x01, &[0xF4]),
                    masked(0x00, &[0x90]),
                    masked(0x80, &[0x80, 0x80]),
                ],
                Err((1, ProtocolError::InvalidUtf8)),
            ),
            (
                "truncated sequence at FIN",
                vec![masked(0x01, b"a"), masked(0x80, &euro[..2])],
                Err((1, ProtocolError::InvalidUtf8)),
            ),
            (
                "truncated sequence in a single frame",
                vec![masked(0x81, &euro[..2])],
                Err((0, ProtocolError::InvalidUtf8)),
            ),
            (
                "binary is not checked as UTF-8",
                vec![masked(0x02, &euro[..2]), masked(0x80, &[0xFF])],
                Ok(vec![Message::Binary(Cow::Owned(vec![0xE2, 0x82, 0xFF]))]),
            ),
        ];
        for (name, frames, expected) in cases {
            let mut stream = concat(&frames);
            assert_eq!(run(&mut stream, &Limits::default()), expected, "{name}");
        }
    }

    #[test]
    fn message_limit() {
        let limits = Limits {
            max_frame: 100,
            max_message: 10,
        };
        // (frames, length of the one text message or the failing frame)
        type Case = (Vec<Vec<u8>>, Result<usize, (usize, ProtocolError)>);
        let cases: Vec<Case> = vec![
            (vec![masked(0x81, &[b'a'; 10])], Ok(10)),
            (
                vec![masked(0x81, &[b'a'; 11])],
                Err((0, ProtocolError::TooBig)),
            ),
            (
                vec![masked(0x82, &[0; 11])],
                Err((0, ProtocolError::TooBig)),
            ),
            (
                vec![
                    masked(0x01, &[b'a'; 4]),
                    masked(0x00, &[b'a'; 4]),
                    masked(0x80, &[b'a'; 2]),
                ],
                Ok(10),
            ),
            (
                vec![
                    masked(0x01, &[b'a'; 4]),
                    masked(0x00, &[b'a'; 4]),
                    masked(0x80, &[b'a'; 3]),
                ],
                Err((2, ProtocolError::TooBig)),
            ),
            (
                vec![masked(0x02, &[0; 11])],
                Err((0, ProtocolError::TooBig)),
            ),
        ];
        for (frames, expected) in cases {
            let mut stream = concat(&frames);
            let got = run(&mut stream, &limits).map(|messages| match messages.as_slice() {
                [Message::Text(t)] => t.len(),
                other => panic!("unexpected {other:?}"),
            });
            assert_eq!(got, expected);
        }
    }

    #[test]
    fn accumulator_stays_within_the_limit_and_is_released() {
        let limits = Limits {
            max_frame: 100,
            max_message: 10,
        };
        let mut assembler = MessageAssembler::new(&limits);
        for (fin, opcode, payload) in [
            (false, OpCode::Text, &b"abc"[..]),
            (false, OpCode::Continuation, b"def"),
            (false, OpCode::Continuation, b"gh"),
        ] {
            let frame = Frame {
                fin,
                opcode,
                payload,
            };
            assert_eq!(assembler.push(frame), Ok(None));
        }
        let last = Frame {
            fin: true,
            opcode: OpCode::Continuation,
            payload: b"ij",
        };
        match assembler.push(last) {
            Ok(Some(Message::Text(Cow::Owned(text)))) => {
                assert_eq!(text, "abcdefghij");
                assert!(text.capacity() <= 10, "capacity {}", text.capacity());
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(!assembler.in_progress());

        // An error drops the message in progress.
        let start = Frame {
            fin: false,
            opcode: OpCode::Binary,
            payload: b"x",
        };
        assert_eq!(assembler.push(start), Ok(None));
        assert!(assembler.in_progress());
        let again = Frame {
            fin: true,
            opcode: OpCode::Binary,
            payload: b"y",
        };
        assert_eq!(
            assembler.push(again),
            Err(ProtocolError::ExpectedContinuation)
        );
        assert!(!assembler.in_progress());
    }

    #[test]
    fn hand_built_control_frames_are_checked() {
        let mut assembler = MessageAssembler::default();
        let long = [0u8; 126];
        let cases = [
            (
                false,
                OpCode::Ping,
                &b""[..],
                ProtocolError::FragmentedControl,
            ),
            (true, OpCode::Pong, &long[..], ProtocolError::ControlTooLong),
            (
                true,
                OpCode::Close,
                &long[..],
                ProtocolError::ControlTooLong,
            ),
        ];
        for (fin, opcode, payload, expected) in cases {
            let frame = Frame {
                fin,
                opcode,
                payload,
            };
            assert_eq!(assembler.push(frame), Err(expected), "{opcode:?}");
        }
    }

    #[test]
    fn close_payloads() {
        let ok_codes: [u16; 16] = [
            1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999,
            4000, 4999,
        ];
        let bad_codes: [u16; 13] = [
            0, 1, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ];
        for code in ok_codes {
            let payload = code.to_be_bytes();
            assert_eq!(
                parse_close(&payload),
                Ok(Some(CloseFrame { code, reason: "" })),
                "{code}"
            );
        }
        for code in bad_codes {
            let payload = code.to_be_bytes();
            assert_eq!(
                parse_close(&payload),
                Err(ProtocolError::InvalidCloseCode),
                "{code}"
            );
        }
        type Case<'a> = (&'a [u8], Result<Option<CloseFrame<'a>>, ProtocolError>);
        let cases: [Case; 6] = [
            (b"", Ok(None)),
            (&[0x03], Err(ProtocolError::CloseTooShort)),
            (
                &[0x03, 0xE8, b'b', b'y', b'e'],
                Ok(Some(CloseFrame {
                    code: 1000,
                    reason: "bye",
                })),
            ),
            (
                &[0x03, 0xE8, 0xC3, 0xA9],
                Ok(Some(CloseFrame {
                    code: 1000,
                    reason: "é",
                })),
            ),
            (&[0x03, 0xE8, 0xC3], Err(ProtocolError::InvalidUtf8)),
            (
                &[0x03, 0xE8, 0xED, 0xA0, 0x80],
                Err(ProtocolError::InvalidUtf8),
            ),
        ];
        for (payload, expected) in cases {
            assert_eq!(parse_close(payload), expected, "{payload:?}");
        }
        // The same checks apply to a Close frame on the wire.
        let mut stream = masked(0x88, &[0x03, 0xEC]); // 1004
        assert_eq!(
            run(&mut stream, &Limits::default()),
            Err((0, ProtocolError::InvalidCloseCode))
        );
    }

    #[test]
    fn encode_close_truncates_at_a_char_boundary() {
        let ascii = "a".repeat(200);
        // Three-byte chars after one ASCII byte: byte 123 is inside the
        // 41st euro, so the reason stops after the 40th, at byte 121.
        let euros = format!("a{}", "€".repeat(50));
        // Byte 123 ends the 41st euro exactly: all 41 are kept.
        let aligned = "€".repeat(50);
        let cases: [(&str, &str); 6] = [
            ("", ""),
            ("bye", "bye"),
            (&ascii[..123], &ascii[..123]),
            (&ascii, &ascii[..123]),
            (&euros, &euros[..121]),
            (&aligned, &aligned[..123]),
        ];
        for (reason, kept) in cases {
            let frame = encode_close(close_code::GOING_AWAY, reason);
            assert_eq!(frame[0], 0x88);
            assert_eq!(usize::from(frame[1]), 2 + kept.len());
            assert_eq!(frame.len(), 4 + kept.len());
            assert_eq!(
                parse_close(&frame[2..]),
                Ok(Some(CloseFrame {
                    code: 1001,
                    reason: kept
                }))
            );
        }
        let mixed = format!("{}é", "a".repeat(122)); // é straddles byte 123
        assert_eq!(&encode_close(1000, &mixed)[4..], "a".repeat(122).as_bytes());
    }

    #[test]
    fn encode_frame_header_sizes() {
        let cases = [
            (0, vec![0x82, 0]),
            (125, vec![0x82, 125]),
            (126, vec![0x82, 126, 0, 126]),
            (65535, vec![0x82, 126, 0xFF, 0xFF]),
            (65536, vec![0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]),
        ];
        for (len, header) in cases {
            let payload = pattern(len);
            let frame = encode_frame(OpCode::Binary, &payload);
            assert_eq!(frame.len(), header.len() + len);
            assert_eq!(frame[..header.len()], header[..], "length {len}");
            assert_eq!(frame[header.len()..], payload[..]);
            assert_eq!(
                encode_header(true, OpCode::Binary, len).as_bytes(),
                &header[..]
            );
        }
        assert_eq!(encode_header(false, OpCode::Text, 3).as_bytes(), [0x01, 3]);
        assert_eq!(
            encode_header(true, OpCode::Continuation, 3).as_bytes(),
            [0x80, 3]
        );
        // A control payload is cut rather than make an invalid frame.
        assert_eq!(encode_frame(OpCode::Pong, &[1; 200]).len(), 2 + 125);
    }

    #[test]
    fn preencoded_frames() {
        assert_eq!(&empty_ping()[..], [0x89, 0x00]);
        assert_eq!(empty_ping(), encode_frame(OpCode::Ping, b""));
    }

    #[test]
    fn opcodes_round_trip() {
        for bits in 0..=0xFF_u8 {
            match OpCode::from_bits(bits) {
                Some(op) => assert_eq!(op.bits(), bits),
                None => assert!(matches!(bits, 0x3..=0x7 | 0xB..), "{bits:#x}"),
            }
        }
    }

    #[test]
    fn mask_matches_bytewise_xor() {
        for len in 0..40 {
            let original = pattern(len);
            let mut data = original.clone();
            apply_mask(&mut data, KEY);
            for (i, (m, o)) in data.iter().zip(&original).enumerate() {
                assert_eq!(*m, o ^ KEY[i % 4], "length {len}, byte {i}");
            }
            apply_mask(&mut data, KEY);
            assert_eq!(data, original);
        }
    }

    /// Whether std, seeing all of `bytes` at once, finds them to be valid
    /// UTF-8 or a valid beginning of it.
    fn valid_prefix(bytes: &[u8]) -> bool {
        match std::str::from_utf8(bytes) {
            Ok(_) => true,
            Err(e) => e.error_len().is_none(),
        }
    }

    #[test]
    fn utf8_validator_agrees_with_std_at_every_split() {
        // Bytes at the edges of every range in the UTF-8 grammar.
        let alphabet = [
            0x00, 0x41, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC1, 0xC2, 0xDF, 0xE0,
            0xE1, 0xEC, 0xED, 0xEE, 0xEF, 0xF0, 0xF1, 0xF3, 0xF4, 0xF5, 0xFF,
        ];
        let n = alphabet.len();
        let mut seq = Vec::with_capacity(4);
        for len in 1..=4u32 {
            for index in 0..n.pow(len) {
                seq.clear();
                let mut rest = index;
                for _ in 0..len {
                    seq.push(alphabet[rest % n]);
                    rest /= n;
                }
                // Every way to cut `seq` into pieces: bit i set = cut after byte i.
                for cuts in 0..1u32 << (len - 1) {
                    let mut validator = Utf8Validator::new();
                    let mut start = 0;
                    let mut failed = false;
                    for end in 1..=seq.len() {
                        if end == seq.len() || cuts & (1 << (end - 1)) != 0 {
                            let fed = validator.feed(&seq[start..end]).is_ok();
                            assert_eq!(
                                fed,
                                valid_prefix(&seq[..end]),
                                "{seq:x?} cut {cuts:b} at {end}"
                            );
                            start = end;
                            if !fed {
                                failed = true;
                                break;
                            }
                        }
                    }
                    if !failed {
                        let whole = std::str::from_utf8(&seq).is_ok();
                        assert_eq!(validator.finish().is_ok(), whole, "{seq:x?} cut {cuts:b}");
                    }
                }
            }
        }
    }

    #[test]
    fn utf8_validator_byte_by_byte() {
        let text = "aé€😀 κόσμε";
        let mut validator = Utf8Validator::new();
        for byte in text.as_bytes() {
            assert_eq!(validator.feed(std::slice::from_ref(byte)), Ok(()));
        }
        assert_eq!(validator.finish(), Ok(()));
        // Empty pieces change nothing, held bytes or not.
        let mut validator = Utf8Validator::new();
        assert_eq!(validator.feed(&[0xF0, 0x9F]), Ok(()));
        assert_eq!(validator.feed(&[]), Ok(()));
        assert_eq!(validator.finish(), Err(ProtocolError::InvalidUtf8));
        assert_eq!(validator.feed(&[0x98, 0x80, b'z']), Ok(()));
        assert_eq!(validator.finish(), Ok(()));
    }

    #[test]
    fn frame_len_reads_the_header_only() {
        for len in [0, 5, 125, 126, 65535, 65536, 100_000] {
            let frame = masked(0x82, &pattern(len));
            let header = frame.len() - len;
            for cut in 0..header {
                assert_eq!(frame_len(&frame[..cut]), None, "length {len}, cut {cut}");
            }
            assert_eq!(
                frame_len(&frame[..header]),
                Some(frame.len()),
                "length {len}"
            );
        }
        // No mask: no key to count.
        assert_eq!(frame_len(&[0x81, 5]), Some(7));
        // A length that overflows with its header is not a length.
        let mut huge = vec![0x82, 0xFF];
        huge.extend_from_slice(&u64::MAX.to_be_bytes());
        huge.extend_from_slice(&KEY);
        assert_eq!(frame_len(&huge), None);
    }

    #[test]
    fn control_frames_are_not_held_to_the_message_limit() {
        // Control frames have their own limit (125 bytes) whatever the
        // message limit says: a ping must be answered even where messages
        // are kept very small. (Found while fuzzing the `frames` target,
        // whose first version assumed otherwise.)
        let limits = Limits {
            max_frame: 2040,
            max_message: 0,
        };
        let mut stream = concat(&[
            masked(0x8A, &[0xFF; 68]),
            masked(0x89, &[1; 125]),
            masked(0x88, &[0x03, 0xE8]),
        ]);
        let messages = run(&mut stream, &limits).expect("valid");
        assert!(
            matches!(messages[..], [Message::Pong(p), Message::Ping(q), Message::Close(_)]
            if p.len() == 68 && q.len() == 125)
        );
        let mut text = masked(0x81, b"a");
        assert_eq!(run(&mut text, &limits), Err((0, ProtocolError::TooBig)));
    }

    /// Feeds `frame` to `check_arriving` cut into pieces of `step` bytes and
    /// returns the length of the prefix at which it failed, if it did.
    fn arriving_fails_at(assembler: &MessageAssembler, frame: &[u8], step: usize) -> Option<usize> {
        let mut progress = Arriving::default();
        let mut end = 0;
        while end < frame.len() {
            end = (end + step).min(frame.len());
            let before = frame[..end].to_vec();
            let result = assembler.check_arriving(&before, &mut progress);
            assert_eq!(before, frame[..end], "the buffer was changed");
            if result.is_err() {
                assert_eq!(result, Err(ProtocolError::InvalidUtf8));
                return Some(end);
            }
        }
        None
    }

    #[test]
    fn arriving_text_fails_at_the_first_bad_piece() {
        let fresh = MessageAssembler::default();
        let mut bad = "κόσμε".repeat(20).into_bytes();
        let good = bad.clone();
        bad[100] = 0xFF;
        for step in [1, 3, 7, 64, 1000] {
            let frame = masked(0x81, &bad);
            let header = frame.len() - bad.len();
            let failed = arriving_fails_at(&fresh, &frame, step).expect("bad text found");
            // Not before byte 100 arrived, and within the piece that brought it.
            assert!(
                failed > header + 100 && failed <= header + 101 + step,
                "step {step}"
            );
            assert_eq!(arriving_fails_at(&fresh, &masked(0x81, &good), step), None);
            // Binary is not text; a text frame never ends in this check.
            assert_eq!(arriving_fails_at(&fresh, &masked(0x82, &bad), step), None);
            assert_eq!(
                arriving_fails_at(&fresh, &masked(0x81, &good[..1]), step),
                None
            );
        }
        // A continuation carries on from the message's first fragment: a
        // character split between them is accepted, a broken one is not.
        let euro = "€".as_bytes();
        let mut text = MessageAssembler::default();
        let mut first = masked(0x01, &euro[..1]);
        let (frame, _) = next_frame(&mut first, &Limits::default())
            .expect("valid")
            .expect("complete");
        assert_eq!(text.push(frame), Ok(None));
        assert_eq!(arriving_fails_at(&text, &masked(0x80, &euro[1..]), 1), None);
        assert!(arriving_fails_at(&text, &masked(0x80, b"ab"), 1).is_some());
        // ...unless that message is binary.
        let mut binary = MessageAssembler::default();
        let mut first = masked(0x02, &euro[..1]);
        let (frame, _) = next_frame(&mut first, &Limits::default())
            .expect("valid")
            .expect("complete");
        assert_eq!(binary.push(frame), Ok(None));
        assert_eq!(arriving_fails_at(&binary, &masked(0x80, b"ab"), 1), None);
    }

    #[test]
    fn arbitrary_input_never_panics() {
        let limits = Limits {
            max_frame: 300,
            max_message: 600,
        };
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        for _ in 0..20_000 {
            let len = (rng.next() % 64) as usize;
            let mut buf: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            // Bias toward frames that get past the first checks.
            if let Some(b0) = buf.get_mut(0) {
                if rng.next() % 2 == 0 {
                    *b0 &= 0x8F;
                }
            }
            if let Some(b1) = buf.get_mut(1) {
                if rng.next() % 2 == 0 {
                    *b1 |= 0x80;
                }
            }
            let mut assembler = MessageAssembler::new(&limits);
            let mut start = 0;
            while let Ok(Some((frame, consumed))) = next_frame(&mut buf[start..], &limits) {
                assert!(consumed > 0 && start + consumed <= len);
                if assembler.push(frame).is_err() {
                    break;
                }
                start += consumed;
            }
        }
    }
}
