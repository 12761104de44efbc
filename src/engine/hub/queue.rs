//! [`Frames`]: an ordered queue of encoded frames that allocates nothing
//! while it holds at most one.
//!
//! A fan-out queues one frame on each of thousands of connections and
//! writes it out at once; a plain `VecDeque` would allocate and free its
//! buffer once per connection per broadcast. Here the first frame waits in
//! `head`, and only the frames behind it go to `rest`, which is boxed so
//! that the queue every idle page keeps is two words and a tag, not six.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::Bytes;

/// Most frames handed to one vectored write.
pub(crate) const MAX_IOVECS: usize = 64;

/// Frames waiting to be written, in order.
#[derive(Debug, Default)]
pub(crate) struct Frames {
    /// The first frame; `None` exactly when the queue is empty.
    head: Option<Bytes>,
    /// The frames after it, while there are any. Boxed on purpose: one
    /// word in every idle page's outbox instead of a `VecDeque`'s four.
    #[allow(clippy::box_collection)]
    rest: Option<Box<VecDeque<Bytes>>>,
}

impl Frames {
    /// Adds a frame at the end.
    pub(crate) fn push_back(&mut self, frame: Bytes) {
        if self.head.is_none() {
            self.head = Some(frame);
        } else {
            self.rest
                .get_or_insert_with(Default::default)
                .push_back(frame);
        }
    }

    /// Whether no frame is waiting.
    pub(crate) fn is_empty(&self) -> bool {
        self.head.is_none()
    }

    /// How many frames are waiting.
    pub(crate) fn len(&self) -> usize {
        usize::from(self.head.is_some()) + self.rest.as_ref().map_or(0, |r| r.len())
    }

    /// Whether the queue holds memory of its own (beyond the frames, which
    /// it shares). For tests of the "no buffer while idle" promise.
    #[cfg(test)]
    pub(crate) fn owns_allocation(&self) -> bool {
        self.rest.is_some()
    }

    /// The frames, first to last.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Bytes> {
        self.head
            .iter()
            .chain(self.rest.iter().flat_map(|r| r.iter()))
    }

    /// The frame waiting, if it is the only one: the common case of a
    /// fan-out, written with a plain `send` and no slice array to fill.
    pub(crate) fn only(&self) -> Option<&Bytes> {
        match &self.rest {
            Some(rest) if !rest.is_empty() => None,
            _ => self.head.as_ref(),
        }
    }

    /// Fills `slices` with the first frames; returns how many slices were
    /// filled and how many bytes they hold.
    pub(crate) fn io_slices<'a>(&'a self, slices: &mut [IoSlice<'a>]) -> (usize, usize) {
        let mut count = 0;
        let mut bytes = 0;
        for (slot, frame) in slices.iter_mut().zip(self.iter()) {
            *slot = IoSlice::new(frame);
            count += 1;
            bytes += frame.len();
        }
        (count, bytes)
    }

    /// Drops the first `n` written bytes (the first frame left may have
    /// been written in part); returns how many whole frames went. An
    /// emptied queue gives its memory back.
    pub(crate) fn consume(&mut self, mut n: usize) -> u64 {
        let mut whole = 0;
        while let Some(head) = &mut self.head {
            if n < head.len() {
                if n > 0 {
                    *head = head.slice(n..);
                }
                break;
            }
            n -= head.len();
            self.head = self.rest.as_mut().and_then(|r| r.pop_front());
            whole += 1;
        }
        if self.head.is_none() {
            self.rest = None;
        }
        whole
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(parts: &[&'static str]) -> Frames {
        let mut f = Frames::default();
        for p in parts {
            f.push_back(Bytes::from_static(p.as_bytes()));
        }
        f
    }

    #[test]
    fn consume_drops_whole_frames_and_cuts_the_first_one_left() {
        let mut f = frames(&["abc", "de", "fgh"]);
        assert_eq!(f.len(), 3);
        assert_eq!(f.consume(0), 0);
        assert_eq!(f.consume(4), 1);
        assert_eq!(f.iter().collect::<Vec<_>>(), ["e", "fgh"]);
        assert_eq!(f.consume(4), 2);
        assert!(f.is_empty());
        assert_eq!(f.len(), 0);
    }

    #[test]
    fn one_frame_allocates_nothing_and_order_is_kept() {
        let mut f = frames(&["one"]);
        assert!(!f.owns_allocation());
        f.push_back(Bytes::from_static(b"two"));
        f.push_back(Bytes::from_static(b"three"));
        let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
        assert_eq!(f.io_slices(&mut slices), (3, 11));
        assert_eq!(&*slices[1], b"two");
        assert_eq!(f.consume(11), 3);
        // Emptied: the memory behind the first frame is given back.
        assert!(!f.owns_allocation());
    }

    #[test]
    fn only_is_the_one_frame_waiting_and_nothing_else() {
        let mut f = Frames::default();
        assert!(f.only().is_none());
        f.push_back(Bytes::from_static(b"one"));
        assert_eq!(f.only().map(|b| &b[..]), Some(&b"one"[..]));
        f.push_back(Bytes::from_static(b"two"));
        assert!(f.only().is_none());
        // The first written: one is left, behind an emptied `rest`.
        assert_eq!(f.consume(3), 1);
        assert_eq!(f.only().map(|b| &b[..]), Some(&b"two"[..]));
        assert_eq!(f.consume(1), 0);
        assert_eq!(f.only().map(|b| &b[..]), Some(&b"wo"[..]));
    }
}
