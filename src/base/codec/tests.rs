//! The codec's tests: RFC examples, every refusal with its close code,
//! message assembly, the UTF-8 validator, and arbitrary input.

use std::borrow::Cow;

use super::frame::encode_header;
use super::utf8::Utf8Validator;
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
            compressed: false,
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
            compressed: false,
            opcode,
            payload,
        };
        assert_eq!(assembler.push(frame), Ok(None));
    }
    let last = Frame {
        fin: true,
        compressed: false,
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
        compressed: false,
        opcode: OpCode::Binary,
        payload: b"x",
    };
    assert_eq!(assembler.push(start), Ok(None));
    assert!(assembler.in_progress());
    let again = Frame {
        fin: true,
        compressed: false,
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
            compressed: false,
            opcode,
            payload,
        };
        assert_eq!(assembler.push(frame), Err(expected), "{opcode:?}");
    }
}

#[test]
fn close_payloads() {
    let ok_codes: [u16; 16] = [
        1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000,
        4999,
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
        0x00, 0x41, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC1, 0xC2, 0xDF, 0xE0, 0xE1,
        0xEC, 0xED, 0xEE, 0xEF, 0xF0, 0xF1, 0xF3, 0xF4, 0xF5, 0xFF,
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
