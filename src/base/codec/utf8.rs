//! UTF-8 checked piece by piece, as a text message arrives in fragments.

use super::ProtocolError;

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
