//! permessage-deflate (RFC 7692), without a compression context kept per
//! connection: both directions are negotiated with no context takeover, so
//! every message is compressed (and inflated) on its own, with a compressor
//! and an inflater kept per thread and reset for each message.
//!
//! That is what lets a broadcast be compressed once: the compressed frame
//! does not depend on what a page was sent before, so the same bytes go to
//! every page that accepted the extension ([`Twins`]).

use std::cell::RefCell;
use std::fmt::Write as _;

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::frame::{encode_header, header_parts, OpCode, OPCODE_BITS, RSV1};
use super::ProtocolError;

/// The extension's token in `Sec-WebSocket-Extensions`.
pub const EXTENSION: &str = "permessage-deflate";

/// The largest LZ77 window RFC 7692 allows (32 KiB), and the default.
pub(crate) const MAX_WINDOW_BITS: u8 = 15;

/// The smallest window this side compresses with: zlib (and zlib-rs) has
/// no raw deflate with a 256-byte window, so an offer that limits the
/// server to 8 bits is declined.
const MIN_SERVER_WINDOW_BITS: u8 = 9;

/// Payloads shorter than this are sent as they are: the deflate block's
/// own overhead and the time to make it are not worth a few bytes.
pub(crate) const MIN_COMPRESS_LEN: usize = 128;

/// The empty stored block a sync flush ends with; RFC 7692 (7.2.1) has the
/// sender remove it and the receiver put it back.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// What was agreed with one client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Agreed {
    /// The window this side compresses with (9-15).
    pub server_window_bits: u8,
    /// The `Sec-WebSocket-Extensions` value to answer with.
    pub response: String,
}

/// Picks the first permessage-deflate offer in a `Sec-WebSocket-Extensions`
/// value (all such headers joined with commas) that can be honoured, and
/// says how to answer it; `None` declines the extension (the handshake goes
/// on without it).
///
/// The answer always carries `server_no_context_takeover` and
/// `client_no_context_takeover` (RFC 7692, 7.1.1): no connection keeps a
/// compression context. An offer is declined, and the next one tried, when
/// it has an unknown parameter, a parameter twice, a value out of range, or
/// a `server_max_window_bits` below 9.
pub fn negotiate(offers: &str) -> Option<Agreed> {
    split_outside_quotes(offers, ',').find_map(|offer| {
        let mut parts = split_outside_quotes(offer, ';');
        let name = parts.next()?.trim();
        if !name.eq_ignore_ascii_case(EXTENSION) {
            return None;
        }
        accept_offer(parts)
    })
}

/// The answer to one permessage-deflate offer's parameters, or `None` if
/// they cannot be honoured.
fn accept_offer<'a>(params: impl Iterator<Item = &'a str>) -> Option<Agreed> {
    let mut seen = [false; 4];
    let mut server_bits = None;
    for param in params {
        let (key, value) = match param.split_once('=') {
            Some((k, v)) => (k.trim(), Some(unquote(v.trim())?)),
            None => (param.trim(), None),
        };
        let slot = match key.to_ascii_lowercase().as_str() {
            "server_no_context_takeover" => 0,
            "client_no_context_takeover" => 1,
            "server_max_window_bits" => 2,
            "client_max_window_bits" => 3,
            _ => return None,
        };
        if std::mem::replace(&mut seen[slot], true) {
            return None;
        }
        match (slot, value) {
            (0 | 1, None) => {}
            (0 | 1, Some(_)) => return None,
            // A value is required here.
            (2, Some(v)) => server_bits = Some(window_bits(v)?),
            (2, None) => return None,
            // The client may say how far it can go, or nothing: this side
            // inflates with the largest window, so any client window suits.
            (_, Some(v)) => {
                window_bits(v)?;
            }
            (_, None) => {}
        }
    }
    let mut response =
        format!("{EXTENSION}; server_no_context_takeover; client_no_context_takeover");
    let server_window_bits = match server_bits {
        None => MAX_WINDOW_BITS,
        Some(bits) if bits < MIN_SERVER_WINDOW_BITS => return None,
        Some(bits) => {
            // Must be echoed (RFC 7692, 7.1.2.1).
            let _ = write!(response, "; server_max_window_bits={bits}");
            bits
        }
    };
    Some(Agreed {
        server_window_bits,
        response,
    })
}

/// A window size parameter: 8-15 in decimal, no sign nor leading zero.
fn window_bits(value: &str) -> Option<u8> {
    if value.is_empty() || value.starts_with('0') || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let bits: u8 = value.parse().ok()?;
    (8..=MAX_WINDOW_BITS).contains(&bits).then_some(bits)
}

/// A parameter's value without the quotes of a quoted-string (RFC 6455
/// allows either form); `None` for an unterminated or escaped one.
fn unquote(value: &str) -> Option<&str> {
    match value.strip_prefix('"') {
        None => Some(value),
        Some(rest) => {
            let inner = rest.strip_suffix('"')?;
            (!inner.contains(['"', '\\'])).then_some(inner)
        }
    }
}

/// `s` split at `sep`, except where `sep` is inside double quotes.
fn split_outside_quotes(s: &str, sep: char) -> impl Iterator<Item = &str> {
    let mut rest = Some(s);
    std::iter::from_fn(move || {
        let s = rest?;
        let mut quoted = false;
        for (i, c) in s.char_indices() {
            if c == '"' {
                quoted = !quoted;
            } else if c == sep && !quoted {
                rest = s.get(i + c.len_utf8()..);
                return s.get(..i);
            }
        }
        rest = None;
        Some(s)
    })
}

thread_local! {
    /// One compressor per window size used on this thread, reset for
    /// every message (index: window bits - 9).
    static COMPRESSORS: RefCell<[Option<Compress>; 7]> = const { RefCell::new([const { None }; 7]) };
    /// The inflater, reset for every message.
    static INFLATER: RefCell<Option<Decompress>> = const { RefCell::new(None) };
}

/// Whether an encoded server frame could be compressed: a whole Text or
/// Binary message, long enough for compression to pay. Cheap: looks at the
/// header only.
pub(crate) fn worth_compressing(frame: &[u8]) -> bool {
    let Some(&b0) = frame.first() else {
        return false;
    };
    let data = matches!(
        OpCode::from_bits(b0 & OPCODE_BITS),
        Some(OpCode::Text | OpCode::Binary)
    );
    // FIN set, no RSV bit: a whole message nobody has compressed yet.
    data && b0 & 0xF0 == 0x80 && frame.len() >= MIN_COMPRESS_LEN
}

/// The compressed twin of an encoded (unmasked, FIN) server Text or Binary
/// frame: the same message with its payload deflated with a window of
/// `window_bits` and RSV1 set. `None` when the frame is not one to
/// compress ([`worth_compressing`]) or compressing would not make it
/// smaller.
pub(crate) fn compress_frame(frame: &[u8], window_bits: u8) -> Option<Bytes> {
    if !worth_compressing(frame) {
        return None;
    }
    let b0 = *frame.first()?;
    let opcode = OpCode::from_bits(b0 & OPCODE_BITS)?;
    let (declared, payload_start, None) = header_parts(frame)? else {
        return None;
    };
    let payload =
        frame.get(payload_start..payload_start.checked_add(usize::try_from(declared).ok()?)?)?;
    let twin = compress_message(opcode, payload, window_bits)?;
    (twin.len() < frame.len()).then_some(twin)
}

/// A whole server frame carrying `payload` compressed (RSV1 set), however
/// short it is, for a connection that negotiated permessage-deflate with a
/// server window of `window_bits`. The daemon compresses only what pays
/// ([`compress_frame`]); this is for peers that want every message
/// compressed, such as a conformance suite's echo.
pub fn encode_compressed(text: bool, payload: &[u8], window_bits: u8) -> Option<Bytes> {
    let opcode = if text { OpCode::Text } else { OpCode::Binary };
    compress_message(opcode, payload, window_bits)
}

/// `payload` compressed into a FIN data frame with RSV1.
fn compress_message(opcode: OpCode, payload: &[u8], window_bits: u8) -> Option<Bytes> {
    let bits = window_bits.clamp(MIN_SERVER_WINDOW_BITS, MAX_WINDOW_BITS);
    let body = COMPRESSORS.with(|cell| {
        let mut all = cell.borrow_mut();
        let slot = all.get_mut(usize::from(bits - MIN_SERVER_WINDOW_BITS))?;
        let compressor = slot.get_or_insert_with(|| {
            Compress::new_with_window_bits(Compression::default(), false, bits)
        });
        compressor.reset();
        deflate(compressor, payload)
    })?;
    let header = encode_header(true, opcode, body.len());
    let header = header.as_bytes();
    let total = header.len() + body.len();
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(header);
    out.extend_from_slice(&body);
    if let Some(first) = out.first_mut() {
        *first |= RSV1;
    }
    Some(Bytes::from(out))
}

/// `payload` deflated and sync-flushed, without the flush's empty block.
fn deflate(compressor: &mut Compress, payload: &[u8]) -> Option<Vec<u8>> {
    // Room for incompressible input plus the blocks' overhead; grown below
    // in the rare case that is not enough.
    let mut out = Vec::with_capacity(payload.len() + payload.len() / 16 + 64);
    let mut input = payload;
    loop {
        let before = compressor.total_in();
        compressor
            .compress_vec(input, &mut out, FlushCompress::Sync)
            .ok()?;
        let used = usize::try_from(compressor.total_in() - before).ok()?;
        input = input.get(used..)?;
        // Done once all input is taken and the flush fit (room was left).
        if input.is_empty() && out.len() < out.capacity() {
            break;
        }
        out.reserve(out.capacity().max(64));
    }
    if !out.ends_with(&TAIL) {
        return None;
    }
    out.truncate(out.len() - TAIL.len());
    Some(out)
}

/// Inflates one compressed message (its payload, all fragments joined),
/// refusing output beyond `max` bytes as [`ProtocolError::TooBig`], so that a
/// small message cannot expand into a large one (a decompression bomb).
pub(crate) fn inflate_message(compressed: &[u8], max: usize) -> Result<Vec<u8>, ProtocolError> {
    INFLATER.with(|cell| {
        let mut slot = cell.borrow_mut();
        let inflater = slot.get_or_insert_with(|| Decompress::new(false));
        inflater.reset(false);
        // At most one byte over the limit is ever held: that byte is what
        // proves the message too big.
        let cap = max.saturating_add(1);
        let mut out = Vec::with_capacity(compressed.len().saturating_mul(4).max(64).min(cap));
        for part in [compressed, &TAIL[..]] {
            let mut input = part;
            loop {
                if out.len() == out.capacity() {
                    if out.len() >= cap {
                        return Err(ProtocolError::TooBig);
                    }
                    let more = out.capacity().min(cap - out.len());
                    out.reserve_exact(more);
                }
                let (in_before, out_before) = (inflater.total_in(), out.len());
                let status = inflater
                    .decompress_vec(input, &mut out, FlushDecompress::Sync)
                    .map_err(|_| ProtocolError::BadCompressedData)?;
                let used = usize::try_from(inflater.total_in() - in_before).unwrap_or(usize::MAX);
                input = input.get(used..).unwrap_or_default();
                if matches!(status, Status::StreamEnd) {
                    // A final block ends the message: what follows it (the
                    // tail put back above) is not part of it.
                    return finish(out, max);
                }
                let progressed = used > 0 || out.len() > out_before;
                if input.is_empty() && out.len() < out.capacity() {
                    break;
                }
                if !progressed && out.len() < out.capacity() {
                    return Err(ProtocolError::BadCompressedData);
                }
            }
        }
        finish(out, max)
    })
}

fn finish(out: Vec<u8>, max: usize) -> Result<Vec<u8>, ProtocolError> {
    if out.len() > max {
        return Err(ProtocolError::TooBig);
    }
    Ok(out)
}

/// A broadcast frame and its compressed twins, made the first time a
/// target needs one: at most one compression per window size per
/// broadcast (in practice one: browsers do not limit the server's window),
/// whatever the number of pages.
pub(crate) struct Twins<'a> {
    plain: &'a Bytes,
    /// Whether the frame is one to compress at all.
    worth: bool,
    /// Per window size (bits - 9): not made yet, or made (`None` if it
    /// did not pay).
    made: [Option<Option<Bytes>>; 7],
}

impl<'a> Twins<'a> {
    /// Twins of `plain`, none made yet.
    pub(crate) fn new(plain: &'a Bytes) -> Self {
        Twins {
            plain,
            worth: worth_compressing(plain),
            made: Default::default(),
        }
    }

    /// Whether any target could get something else than the plain frame:
    /// when not, the caller need not look at the targets' extensions.
    pub(crate) fn worth(&self) -> bool {
        self.worth
    }

    /// The frame for a page that negotiated a server window of
    /// `window_bits` (0: no extension).
    pub(crate) fn for_window(&mut self, window_bits: u8) -> &Bytes {
        if !self.worth || window_bits == 0 {
            return self.plain;
        }
        let plain = self.plain;
        let index = usize::from(
            window_bits.clamp(MIN_SERVER_WINDOW_BITS, MAX_WINDOW_BITS) - MIN_SERVER_WINDOW_BITS,
        );
        match self.made.get_mut(index) {
            Some(slot) => slot
                .get_or_insert_with(|| compress_frame(plain, window_bits))
                .as_ref()
                .unwrap_or(plain),
            None => plain,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::frame::encode_frame;
    use super::*;

    fn bits(offers: &str) -> Option<u8> {
        negotiate(offers).map(|a| a.server_window_bits)
    }

    #[test]
    fn a_plain_offer_is_accepted_without_context_takeover() {
        let agreed = negotiate("permessage-deflate").expect("accepted");
        assert_eq!(
            agreed.response,
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        );
        assert_eq!(agreed.server_window_bits, 15);
        // What Chromium sends.
        let chromium = negotiate("permessage-deflate; client_max_window_bits").expect("accepted");
        assert_eq!(chromium.response, agreed.response);
    }

    #[test]
    fn server_window_bits_are_echoed_or_the_offer_declined() {
        let agreed = negotiate("permessage-deflate; server_max_window_bits=10").expect("accepted");
        assert_eq!(agreed.server_window_bits, 10);
        assert!(agreed.response.ends_with("; server_max_window_bits=10"));
        assert_eq!(
            bits("permessage-deflate; server_max_window_bits=\"12\""),
            Some(12)
        );
        // 8 cannot be honoured: the next offer is taken.
        assert_eq!(bits("permessage-deflate; server_max_window_bits=8"), None);
        assert_eq!(
            bits("permessage-deflate; server_max_window_bits=8, permessage-deflate"),
            Some(15)
        );
    }

    #[test]
    fn malformed_or_duplicate_parameters_decline_the_offer() {
        for offer in [
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; client_max_window_bits=20",
            "permessage-deflate; client_max_window_bits=",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; client_max_window_bits; client_max_window_bits=9",
            "permessage-deflate; mystery",
            "permessage-deflate; client_max_window_bits=\"9",
            "x-webkit-deflate-frame",
            "",
        ] {
            assert_eq!(negotiate(offer), None, "{offer:?}");
        }
        assert_eq!(
            bits("permessage-deflate; mystery, permessage-deflate; client_max_window_bits=9"),
            Some(15)
        );
        assert_eq!(bits("foo; a=\"x,y\", PerMessage-Deflate"), Some(15));
    }

    fn json(len: usize) -> String {
        let mut s = String::from("{\"items\":[");
        let mut i = 0;
        while s.len() < len {
            let _ = write!(s, "{{\"id\":{i},\"name\":\"item {i}\",\"ok\":true}},");
            i += 1;
        }
        s.push_str("{}]}");
        s
    }

    #[test]
    fn a_compressed_frame_inflates_to_the_message() {
        let text = json(2048);
        let plain = encode_frame(OpCode::Text, text.as_bytes());
        for bits in [9, 12, 15] {
            let twin = compress_frame(&plain, bits).expect("compressed");
            assert_eq!(twin[0], 0x80 | RSV1 | 0x1);
            assert!(
                twin.len() * 10 < plain.len() * 4,
                "{} of {}",
                twin.len(),
                plain.len()
            );
            let (len, start, mask) = header_parts(&twin).expect("header");
            assert!(mask.is_none());
            let body = &twin[start..start + len as usize];
            let back = inflate_message(body, 64 * 1024).expect("inflates");
            assert_eq!(back, text.as_bytes());
        }
    }

    #[test]
    fn small_control_and_compressed_frames_are_left_alone() {
        assert_eq!(
            compress_frame(&encode_frame(OpCode::Text, b"short"), 15),
            None
        );
        let long = vec![b'a'; 500];
        assert_eq!(compress_frame(&encode_frame(OpCode::Ping, &long), 15), None);
        let twin = compress_frame(&encode_frame(OpCode::Text, &long), 15).expect("compressed");
        assert_eq!(compress_frame(&twin, 15), None);
        // Random bytes do not shrink: the plain frame is kept.
        let mut x = 0x1234_5678u32;
        let noise: Vec<u8> = (0..1000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        assert_eq!(
            compress_frame(&encode_frame(OpCode::Binary, &noise), 15),
            None
        );
    }

    #[test]
    fn twins_are_made_once_per_window() {
        let plain = encode_frame(OpCode::Text, json(1000).as_bytes());
        let mut twins = Twins::new(&plain);
        assert!(twins.worth());
        assert_eq!(twins.for_window(0), &plain);
        let first = twins.for_window(15).clone();
        assert_ne!(first, plain);
        // The same buffer, not a second compression.
        assert_eq!(twins.for_window(15).as_ptr(), first.as_ptr());
        assert_ne!(twins.for_window(9).as_ptr(), first.as_ptr());
        let short = encode_frame(OpCode::Text, b"hi");
        let mut twins = Twins::new(&short);
        assert!(!twins.worth());
        assert_eq!(twins.for_window(15), &short);
    }

    #[test]
    fn a_bomb_is_too_big_and_garbage_is_refused() {
        let zeros = vec![0u8; 1 << 20];
        let plain = encode_frame(OpCode::Binary, &zeros);
        let twin = compress_frame(&plain, 15).expect("compressed");
        let (len, start, _) = header_parts(&twin).expect("header");
        let body = &twin[start..start + len as usize];
        assert!(body.len() < 2048);
        assert_eq!(inflate_message(body, 64 * 1024), Err(ProtocolError::TooBig));
        assert_eq!(inflate_message(body, 1 << 20).map(|v| v.len()), Ok(1 << 20));
        assert_eq!(
            inflate_message(&[0xff, 0xff, 0xff, 0xff], 1024),
            Err(ProtocolError::BadCompressedData)
        );
        // The inflater is reset: a good message after a bad one inflates.
        let ok = compress_frame(&encode_frame(OpCode::Text, json(300).as_bytes()), 15).expect("c");
        let (len, start, _) = header_parts(&ok).expect("header");
        assert!(inflate_message(&ok[start..start + len as usize], 1024).is_ok());
        // An empty message compresses to one empty stored block, or to nothing.
        assert_eq!(inflate_message(&[0x00], 10), Ok(Vec::new()));
        assert_eq!(inflate_message(&[], 10), Ok(Vec::new()));
    }
}
