//! The frame parser and message assembler on any byte stream a client may
//! send: parsing the whole stream at once, and parsing it as it arrives in
//! pieces (keeping an incomplete frame, checking its text early, as the
//! connection task does), give the same messages and the same error; the
//! only difference allowed is that bad UTF-8 is found before its frame is
//! complete.
//!
//! Input: byte 0 sets the frame limit, byte 1 the message limit, byte 2 the
//! size of the pieces; the rest is the stream.
#![no_main]

use std::borrow::Cow;

use libfuzzer_sys::fuzz_target;
use pagewire::base::codec::{
    next_frame, Arriving, CloseFrame, Limits, Message, MessageAssembler, ProtocolError,
};

/// What the assembler made of one frame, owned.
#[derive(Debug, PartialEq, Eq)]
enum Event {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<(u16, String)>),
    Fragment,
}

impl Event {
    fn of(message: Option<Message<'_>>) -> Event {
        match message {
            None => Event::Fragment,
            Some(Message::Text(t)) => Event::Text(t.into_owned()),
            Some(Message::Binary(b)) => Event::Binary(b.into_owned()),
            Some(Message::Ping(p)) => Event::Ping(p.to_vec()),
            Some(Message::Pong(p)) => Event::Pong(p.to_vec()),
            Some(Message::Close(c)) => {
                Event::Close(c.map(|CloseFrame { code, reason }| (code, reason.to_owned())))
            }
        }
    }
}

/// Events in order, then how the stream ended: `Ok` with the bytes left
/// unparsed (an incomplete frame), or the error, and whether it was found
/// early (in a frame still arriving).
type Outcome = (Vec<Event>, Result<usize, (ProtocolError, bool)>);

/// Data messages keep to the message limit; control frames have their own
/// limit of 125 bytes, whatever the message limit.
fn check_message(message: &Option<Message<'_>>, limits: &Limits) {
    let (len, max) = match message {
        Some(Message::Text(Cow::Borrowed(t))) => (t.len(), limits.max_message),
        Some(Message::Text(Cow::Owned(t))) => (t.len(), limits.max_message),
        Some(Message::Binary(b)) => (b.len(), limits.max_message),
        Some(Message::Ping(p) | Message::Pong(p)) => (p.len(), 125),
        Some(Message::Close(_)) | None => return,
    };
    assert!(len <= max, "a {len}-byte message passed the limit of {max}");
}

/// Parses frames from the front of `buf`; returns the bytes used, or the
/// error.
fn parse_all(
    buf: &mut [u8],
    limits: &Limits,
    assembler: &mut MessageAssembler,
    events: &mut Vec<Event>,
) -> Result<usize, ProtocolError> {
    let mut used = 0;
    let len = buf.len();
    while let Some((frame, n)) = next_frame(&mut buf[used..], limits)? {
        assert!(n > 0 && used + n <= len, "frame of {n} bytes");
        let message = assembler.push(frame)?;
        check_message(&message, limits);
        events.push(Event::of(message));
        used += n;
    }
    Ok(used)
}

fn whole(stream: &[u8], limits: &Limits) -> Outcome {
    let mut buf = stream.to_vec();
    let mut assembler = MessageAssembler::new(limits);
    let mut events = Vec::new();
    let end = parse_all(&mut buf, limits, &mut assembler, &mut events)
        .map(|used| stream.len() - used)
        .map_err(|e| (e, false));
    (events, end)
}

fn in_pieces(stream: &[u8], limits: &Limits, piece: usize) -> Outcome {
    let mut assembler = MessageAssembler::new(limits);
    let mut events = Vec::new();
    let mut carry: Vec<u8> = Vec::new();
    let mut arriving = Arriving::default();
    for fresh in stream.chunks(piece) {
        carry.extend_from_slice(fresh);
        let used = match parse_all(&mut carry, limits, &mut assembler, &mut events) {
            Ok(used) => used,
            Err(e) => return (events, Err((e, false))),
        };
        if used > 0 {
            carry.drain(..used);
            arriving = Arriving::default();
        }
        let before = carry.clone();
        let early = assembler.check_arriving(&carry, &mut arriving);
        assert_eq!(before, carry, "check_arriving changed the buffer");
        if let Err(e) = early {
            return (events, Err((e, true)));
        }
    }
    (events, Ok(carry.len()))
}

fuzz_target!(|data: &[u8]| {
    let [frame, message, piece, stream @ ..] = data else {
        return;
    };
    let limits = Limits {
        max_frame: usize::from(*frame) * 8,
        max_message: usize::from(*message) * 16,
    };
    let piece = usize::from(*piece) + 1;
    let (all_events, all_end) = whole(stream, &limits);
    let (events, end) = in_pieces(stream, &limits, piece);
    match end {
        Err((ProtocolError::InvalidUtf8, true)) => {
            // Found early: the whole parse saw the same frames before it,
            // and then either the same verdict, a size limit checked before
            // the text, or a frame cut off by the end of the stream.
            assert!(
                all_events.starts_with(&events),
                "{events:?} vs {all_events:?}"
            );
            assert_eq!(all_events.len(), events.len(), "events after the bad text");
            assert!(
                matches!(
                    all_end,
                    Ok(left) if left > 0
                ) || matches!(
                    all_end,
                    Err((ProtocolError::InvalidUtf8 | ProtocolError::TooBig, false))
                ),
                "ended with {all_end:?}"
            );
        }
        Err((_, true)) => panic!("check_arriving reported {end:?}"),
        _ => {
            assert_eq!(events, all_events);
            assert_eq!(end, all_end);
        }
    }
});
