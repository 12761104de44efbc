//! RFC 6455 frame codec for the server side, with no I/O.
//!
//! Client frames are parsed from the front of the connection's read buffer
//! and unmasked in place, so a payload is never copied just to be read. A
//! [`MessageAssembler`] turns frames into messages; only a fragmented message
//! needs an owned accumulator, so an idle connection holds no buffer here.
//! Server frames are unmasked and encoded into one [`Bytes`](bytes::Bytes), which a
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

pub mod deflate;
mod frame;
pub mod handshake;
mod message;
mod utf8;

pub use frame::*;
pub use message::*;

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
    /// RSV1-3 set, but no extension was negotiated (or RSV1 where
    /// permessage-deflate does not allow it: on a control frame or a
    /// continuation).
    #[error("{}", self.reason())]
    ReservedBits,
    /// A compressed message that does not inflate (permessage-deflate).
    #[error("{}", self.reason())]
    BadCompressedData,
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
            ProtocolError::BadCompressedData => "invalid compressed data",
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

#[cfg(test)]
mod tests;
