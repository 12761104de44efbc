//! Frames into messages: fragments joined within the message limit,
//! control frames checked, and text checked as UTF-8 while it arrives.

use std::borrow::Cow;

use super::deflate::inflate_message;
use super::frame::{
    apply_mask, header_parts, parse_close, CloseFrame, Frame, OpCode, OPCODE_BITS, RSV1,
};
use super::utf8::Utf8Validator;
use super::{Limits, ProtocolError, MAX_CONTROL_PAYLOAD};

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
    /// Boxed: every connection holds an assembler, and most never see a
    /// fragmented message.
    partial: Option<Box<Partial>>,
}

/// A fragmented message in progress.
#[derive(Clone, Debug)]
struct Partial {
    data: Vec<u8>,
    /// Present for a text message that is not compressed (a compressed
    /// one is checked once inflated).
    utf8: Option<Utf8Validator>,
    /// Whether `data` is a compressed message's payload (permessage-deflate),
    /// and the message text.
    compressed: Option<bool>,
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
    /// the start of `buf` (one [`parse_frame`](super::parse_frame) returned `Ok(None)` for), so
    /// that invalid UTF-8 is refused as soon as it arrives, not once the
    /// whole frame is in: a peer streaming a large bad frame is stopped
    /// early (Autobahn's cases 6.4.3 and 6.4.4 expect it).
    ///
    /// `progress` carries what earlier calls checked of the same frame;
    /// start each frame with `Arriving::default()`. Leaves `buf` as it is
    /// (still masked), so [`parse_frame`](super::parse_frame) can take the frame when complete.
    /// Frames that are not text, and errors other than bad UTF-8, are left
    /// to [`parse_frame`](super::parse_frame) and [`push`](Self::push).
    pub fn check_arriving(&self, buf: &[u8], progress: &mut Arriving) -> Result<(), ProtocolError> {
        let Some(&b0) = buf.first() else {
            return Ok(());
        };
        let Some((declared, payload_start, Some(key))) = header_parts(buf) else {
            return Ok(());
        };
        if progress.utf8.is_none() {
            progress.utf8 = match (OpCode::from_bits(b0 & OPCODE_BITS), &self.partial) {
                // Compressed text is checked once inflated.
                (Some(OpCode::Text), None) if b0 & RSV1 != 0 => None,
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
            compressed,
            opcode,
            payload,
        } = frame;
        if compressed {
            return self.start(opcode == OpCode::Text, true, fin, payload);
        }
        match opcode {
            OpCode::Ping => check_control(fin, payload).map(|()| Some(Message::Ping(payload))),
            OpCode::Pong => check_control(fin, payload).map(|()| Some(Message::Pong(payload))),
            OpCode::Close => {
                check_control(fin, payload)?;
                Ok(Some(Message::Close(parse_close(payload)?)))
            }
            OpCode::Text => self.start(true, false, fin, payload),
            OpCode::Binary => self.start(false, false, fin, payload),
            OpCode::Continuation => self.resume(fin, payload),
        }
    }

    /// A Text or Binary frame: a whole message, or the first fragment.
    ///
    /// A compressed one (RSV1, permessage-deflate) is inflated at once if
    /// it is the only frame, else kept compressed until the last fragment.
    /// The compressed bytes are held to the message limit, and so is what
    /// they inflate to.
    fn start<'a>(
        &mut self,
        text: bool,
        compressed: bool,
        fin: bool,
        payload: &'a [u8],
    ) -> Result<Option<Message<'a>>, ProtocolError> {
        if self.partial.is_some() {
            return Err(ProtocolError::ExpectedContinuation);
        }
        if payload.len() > self.max_message {
            return Err(ProtocolError::TooBig);
        }
        if fin && compressed {
            return self.inflated(text, payload).map(Some);
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
        // Compressed text is checked once inflated.
        let utf8 = if text && !compressed {
            let mut utf8 = Utf8Validator::new();
            utf8.feed(payload)?;
            Some(utf8)
        } else {
            None
        };
        let mut data = Vec::new();
        append_bounded(&mut data, payload, self.max_message);
        self.partial = Some(Box::new(Partial {
            data,
            utf8,
            compressed: compressed.then_some(text),
        }));
        Ok(None)
    }

    /// A whole compressed message, inflated within the message limit.
    fn inflated<'a>(&self, text: bool, compressed: &[u8]) -> Result<Message<'a>, ProtocolError> {
        let data = inflate_message(compressed, self.max_message)?;
        if text {
            let text = String::from_utf8(data).map_err(|_| ProtocolError::InvalidUtf8)?;
            Ok(Message::Text(Cow::Owned(text)))
        } else {
            Ok(Message::Binary(Cow::Owned(data)))
        }
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
        let Partial {
            data,
            utf8,
            compressed,
        } = *partial;
        if let Some(text) = compressed {
            return self.inflated(text, &data).map(Some);
        }
        match utf8 {
            Some(utf8) => {
                utf8.finish()?;
                // Already checked piece by piece; this second pass is what
                // turns the bytes into a String without unsafe code.
                let text = String::from_utf8(data).map_err(|_| ProtocolError::InvalidUtf8)?;
                Ok(Some(Message::Text(Cow::Owned(text))))
            }
            None => Ok(Some(Message::Binary(Cow::Owned(data)))),
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
