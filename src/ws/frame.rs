//! WebSocket frames (RFC 6455 §5) without I/O: the server-side decoder that
//! checks and unmasks one client frame in place, and the encoder for the
//! unmasked frames a server sends.
//!
//! [`decode`] looks at the start of a buffer the connection owns. It reads
//! the header first, so every protocol error and an oversized length are
//! reported before the payload has arrived; a peer cannot make us buffer a
//! frame we are going to refuse.
//!
//! **Invariant:** [`decode`] writes to the buffer only when it returns a
//! whole frame (it unmasks that frame's payload), so calling it again on a
//! partial frame after more bytes arrive is always safe.
//!
//! Who calls it: [`super::Reader`] for messages, and the encoders from the
//! shard's stream fan-out and the connection loop (pong, close).

#[cfg(test)]
use super::WsLimits;
use super::{CloseCode, CloseReason};
use std::ops::Range;

/// RFC 6455 §5.5: control frames carry at most 125 payload bytes.
pub(crate) const WS_CONTROL_PAYLOAD_BYTES_MAX: usize = 125;
/// A close payload is a 2-byte code followed by the reason.
pub(crate) const WS_CLOSE_REASON_BYTES_MAX: usize = WS_CONTROL_PAYLOAD_BYTES_MAX - 2;

/// Frame opcodes defined by RFC 6455; the reserved ones are protocol errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opcode {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
}

impl Opcode {
    fn from_bits(bits: u8) -> Option<Opcode> {
        match bits {
            0x0 => Some(Opcode::Continuation),
            0x1 => Some(Opcode::Text),
            0x2 => Some(Opcode::Binary),
            0x8 => Some(Opcode::Close),
            0x9 => Some(Opcode::Ping),
            0xA => Some(Opcode::Pong),
            _ => None,
        }
    }

    pub(crate) fn bits(self) -> u8 {
        match self {
            Opcode::Continuation => 0x0,
            Opcode::Text => 0x1,
            Opcode::Binary => 0x2,
            Opcode::Close => 0x8,
            Opcode::Ping => 0x9,
            Opcode::Pong => 0xA,
        }
    }

    /// Control frames may interleave with fragments and are never fragmented.
    pub(crate) fn is_control(self) -> bool {
        matches!(self, Opcode::Close | Opcode::Ping | Opcode::Pong)
    }
}

/// One decoded frame; `payload` indexes the buffer given to [`decode`] and
/// is already unmasked there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Frame {
    pub(crate) fin: bool,
    pub(crate) opcode: Opcode,
    pub(crate) payload: Range<usize>,
}

/// Decodes and unmasks the frame at the start of `buf`.
///
/// `Ok(None)`: the frame is not complete yet and `buf` is untouched.
/// `Ok(Some((frame, consumed)))`: `consumed` is the frame's whole length.
/// A data frame longer than `limits.message_bytes_max` fails as soon as its
/// length is readable; fragments are summed by [`super::Reader`].
#[cfg(test)]
pub(crate) fn decode(buf: &mut [u8], limits: &WsLimits) -> Result<Option<(Frame, usize)>, CloseReason> {
    decode_within(buf, limits.message_bytes_max)
}

/// [`decode`] with the data payload bound given directly, so that the
/// reader can pass what is left of the message budget for a continuation.
pub(super) fn decode_within(buf: &mut [u8], payload_bytes_max: usize) -> Result<Option<(Frame, usize)>, CloseReason> {
    let Some(header) = Header::parse(buf, payload_bytes_max)? else {
        return Ok(None);
    };
    // `payload_len` is at most `payload_bytes_max`, but that may be huge.
    let Some(end) = header.payload_start.checked_add(header.payload_len) else {
        return Err(CloseReason::MessageTooBig);
    };
    if buf.len() < end {
        return Ok(None);
    }
    let payload = header.payload_start..end;
    apply_mask(&mut buf[payload.clone()], header.mask);
    if header.opcode == Opcode::Close {
        parse_close_payload(&buf[payload.clone()])?;
    }
    let frame = Frame {
        fin: header.fin,
        opcode: header.opcode,
        payload,
    };
    Ok(Some((frame, end)))
}

/// A frame header, checked against the server-side rules.
struct Header {
    fin: bool,
    opcode: Opcode,
    mask: [u8; 4],
    payload_start: usize,
    payload_len: usize,
}

impl Header {
    fn parse(buf: &[u8], payload_bytes_max: usize) -> Result<Option<Header>, CloseReason> {
        let [first, second, ..] = *buf else {
            return Ok(None);
        };
        let fin = first & 0x80 != 0;
        // No extension is negotiated, so no reserved bit may be set.
        if first & 0x70 != 0 {
            return Err(CloseReason::ReservedBits);
        }
        let opcode = Opcode::from_bits(first & 0x0F).ok_or(CloseReason::UnknownOpcode)?;
        if second & 0x80 == 0 {
            return Err(CloseReason::Unmasked);
        }
        let short_len = second & 0x7F;
        if opcode.is_control() {
            if !fin {
                return Err(CloseReason::FragmentedControl);
            }
            if usize::from(short_len) > WS_CONTROL_PAYLOAD_BYTES_MAX {
                return Err(CloseReason::ControlTooLong);
            }
        }
        let length_bytes = match short_len {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let mask_start = 2 + length_bytes;
        let Some(length) = buf.get(2..mask_start) else {
            return Ok(None);
        };
        let payload_len = match length_bytes {
            0 => u64::from(short_len),
            _ => length.iter().fold(0u64, |n, &b| n << 8 | u64::from(b)),
        };
        if payload_len >> 63 != 0 {
            return Err(CloseReason::LengthMsb);
        }
        let payload_len = usize::try_from(payload_len).map_err(|_| CloseReason::MessageTooBig)?;
        if !opcode.is_control() && payload_len > payload_bytes_max {
            return Err(CloseReason::MessageTooBig);
        }
        let Some(&[m0, m1, m2, m3]) = buf.get(mask_start..mask_start + 4) else {
            return Ok(None);
        };
        Ok(Some(Header {
            fin,
            opcode,
            mask: [m0, m1, m2, m3],
            payload_start: mask_start + 4,
            payload_len,
        }))
    }
}

/// The status and reason of a close frame's payload; `None` when it is
/// empty (the peer gave no code).
pub(crate) fn parse_close_payload(payload: &[u8]) -> Result<Option<(CloseCode, &str)>, CloseReason> {
    match payload {
        [] => Ok(None),
        [_] => Err(CloseReason::CloseLengthOne),
        [high, low, reason @ ..] => {
            let code = CloseCode(u16::from_be_bytes([*high, *low]));
            if !code.is_valid_on_wire() {
                return Err(CloseReason::InvalidCloseCode);
            }
            let reason = std::str::from_utf8(reason).map_err(|_| CloseReason::InvalidReasonUtf8)?;
            Ok(Some((code, reason)))
        }
    }
}

/// XORs `payload` with `mask` (RFC 6455 §5.3), starting at mask byte 0.
/// Masking and unmasking are the same operation.
pub(crate) fn apply_mask(payload: &mut [u8], mask: [u8; 4]) {
    // A word at a time: payloads of market data run to kilobytes, and eight
    // is a multiple of four, so the remainder starts again at mask byte 0.
    let [m0, m1, m2, m3] = mask;
    let key = u64::from_ne_bytes([m0, m1, m2, m3, m0, m1, m2, m3]);
    let mut words = payload.chunks_exact_mut(8);
    for word in &mut words {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(word);
        word.copy_from_slice(&(u64::from_ne_bytes(bytes) ^ key).to_ne_bytes());
    }
    for (byte, m) in words.into_remainder().iter_mut().zip(mask.iter().cycle()) {
        *byte ^= m;
    }
}

/// Bytes of the header for a payload of `payload_len`.
pub(crate) fn header_bytes(payload_len: usize, masked: bool) -> usize {
    let length_bytes = match payload_len {
        0..=125 => 0,
        126..=0xFFFF => 2,
        _ => 8,
    };
    2 + length_bytes + if masked { 4 } else { 0 }
}

/// Appends one frame. Servers pass `mask: None`; a mask is for tests and
/// any client tradsys may run. Control frames must be final and short; that
/// is the caller's contract, so a breach is a programmer error.
pub fn encode_frame(out: &mut Vec<u8>, fin: bool, opcode: Opcode, mask: Option<[u8; 4]>, payload: &[u8]) {
    assert!(
        !opcode.is_control() || (fin && payload.len() <= WS_CONTROL_PAYLOAD_BYTES_MAX),
        "a control frame must be final and at most 125 bytes"
    );
    out.reserve(header_bytes(payload.len(), mask.is_some()) + payload.len());
    encode_header(out, fin, opcode, mask, payload.len());
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(mask) = mask {
        apply_mask(&mut out[start..], mask);
    }
}

fn encode_header(out: &mut Vec<u8>, fin: bool, opcode: Opcode, mask: Option<[u8; 4]>, payload_len: usize) {
    out.push(if fin { 0x80 } else { 0 } | opcode.bits());
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    match payload_len {
        0..=125 => out.push(mask_bit | payload_len as u8),
        126..=0xFFFF => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(payload_len as u16).to_be_bytes());
        }
        _ => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(payload_len as u64).to_be_bytes());
        }
    }
    if let Some(mask) = mask {
        out.extend_from_slice(&mask);
    }
}

/// Appends an unmasked, final text frame. Text takes `&str` so that a frame
/// we send is valid UTF-8 by construction.
pub(crate) fn encode_text(out: &mut Vec<u8>, payload: &str) {
    encode_frame(out, true, Opcode::Text, None, payload.as_bytes());
}

/// A text frame of JSON tradsys rendered itself (UTF-8 by construction).
pub(crate) fn encode_text_json(out: &mut Vec<u8>, payload: &[u8]) {
    encode_frame(out, true, Opcode::Text, None, payload);
}

#[cfg(test)]
pub(crate) fn encode_binary(out: &mut Vec<u8>, payload: &[u8]) {
    encode_frame(out, true, Opcode::Binary, None, payload);
}

/// Panics if `payload` is over 125 bytes (a programmer error).
pub(crate) fn encode_ping(out: &mut Vec<u8>, payload: &[u8]) {
    encode_frame(out, true, Opcode::Ping, None, payload);
}

/// Panics if `payload` is over 125 bytes; a ping's payload never is.
pub(crate) fn encode_pong(out: &mut Vec<u8>, payload: &[u8]) {
    encode_frame(out, true, Opcode::Pong, None, payload);
}

/// Appends a close frame. The reason is informational, so a long one is cut
/// at a character boundary rather than refused. Codes that must not be
/// sent (1005, 1006, 1015, ...) are a programmer error.
pub(crate) fn encode_close(out: &mut Vec<u8>, code: CloseCode, reason: &str) {
    assert!(code.is_valid_on_wire(), "close code {} must not be sent", code.0);
    let mut end = reason.len().min(WS_CLOSE_REASON_BYTES_MAX);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = [0u8; WS_CONTROL_PAYLOAD_BYTES_MAX];
    payload[..2].copy_from_slice(&code.0.to_be_bytes());
    payload[2..2 + end].copy_from_slice(&reason.as_bytes()[..end]);
    encode_frame(out, true, Opcode::Close, None, &payload[..2 + end]);
}

/// One whole text frame, sized exactly: an event is serialized and framed
/// once per shard and the same bytes are queued to every subscriber.
pub(crate) fn text_frame(payload: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(header_bytes(payload.len(), false) + payload.len());
    encode_text(&mut out, payload);
    out
}

/// One whole binary frame, sized exactly; see [`text_frame`].
#[cfg(test)]
pub(crate) fn binary_frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(header_bytes(payload.len(), false) + payload.len());
    encode_binary(&mut out, payload);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    fn limits() -> WsLimits {
        WsLimits::default()
    }

    fn decode_all(bytes: &[u8]) -> Result<Option<(Frame, usize, Vec<u8>)>, CloseReason> {
        let mut buf = bytes.to_vec();
        let decoded = decode(&mut buf, &limits())?;
        Ok(decoded.map(|(frame, n)| {
            let payload = buf[frame.payload.clone()].to_vec();
            (frame, n, payload)
        }))
    }

    fn masked(fin: bool, opcode: Opcode, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_frame(&mut out, fin, opcode, Some(MASK), payload);
        out
    }

    #[test]
    fn rfc_masked_hello() {
        let bytes = [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58];
        assert_eq!(masked(true, Opcode::Text, b"Hello"), bytes);
        let (frame, n, payload) = decode_all(&bytes).unwrap().unwrap();
        assert_eq!(
            (frame.fin, frame.opcode, frame.payload, n),
            (true, Opcode::Text, 6..11, 11)
        );
        assert_eq!(payload, b"Hello");
    }

    #[test]
    fn rfc_unmasked_examples_encode() {
        let mut out = Vec::new();
        encode_text(&mut out, "Hello");
        assert_eq!(out, [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);

        let mut out = Vec::new();
        encode_frame(&mut out, false, Opcode::Text, None, b"Hel");
        encode_frame(&mut out, true, Opcode::Continuation, None, b"lo");
        assert_eq!(out, [0x01, 0x03, 0x48, 0x65, 0x6c, 0x80, 0x02, 0x6c, 0x6f]);

        let mut out = Vec::new();
        encode_ping(&mut out, b"Hello");
        assert_eq!(out, [0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);

        let mut out = Vec::new();
        encode_frame(&mut out, true, Opcode::Pong, Some(MASK), b"Hello");
        assert_eq!(out, [0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]);
    }

    #[test]
    fn length_classes() {
        // (payload length, expected header of an unmasked binary frame)
        let table: &[(usize, &[u8])] = &[
            (0, &[0x82, 0x00]),
            (125, &[0x82, 0x7d]),
            (126, &[0x82, 0x7e, 0x00, 0x7e]),
            (256, &[0x82, 0x7e, 0x01, 0x00]),
            (65535, &[0x82, 0x7e, 0xff, 0xff]),
            (65536, &[0x82, 0x7f, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00]),
        ];
        for &(len, header) in table {
            let payload = vec![0xa5; len];
            let frame = binary_frame(&payload);
            assert_eq!(&frame[..header.len()], header, "len {len}");
            assert_eq!(frame.len(), header.len() + len);
            assert_eq!(frame.capacity(), frame.len());
            assert_eq!(header_bytes(len, false), header.len());
            let wire = masked(true, Opcode::Binary, &payload);
            let (decoded, n, bytes) = decode_all(&wire).unwrap().unwrap();
            assert_eq!((decoded.payload.start, n), (header.len() + 4, wire.len()));
            assert_eq!(bytes, payload);
        }
    }

    #[test]
    fn mask_matches_bytewise_xor() {
        for len in 0..40 {
            let original: Vec<u8> = (0..len as u8).map(|b| b.wrapping_mul(37)).collect();
            let mut fast = original.clone();
            apply_mask(&mut fast, MASK);
            let slow: Vec<u8> = original.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]).collect();
            assert_eq!(fast, slow, "len {len}");
            apply_mask(&mut fast, MASK);
            assert_eq!(fast, original);
        }
    }

    #[test]
    fn protocol_errors() {
        let close = |payload: &[u8]| masked(true, Opcode::Close, payload);
        let mut too_long_length = vec![0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0];
        too_long_length.extend_from_slice(&MASK);
        let table: Vec<(&str, Vec<u8>, CloseReason, u16)> = vec![
            (
                "unmasked",
                vec![0x81, 0x05, b'H', b'e', b'l', b'l', b'o'],
                CloseReason::Unmasked,
                1002,
            ),
            ("rsv1", vec![0xc1, 0x80, 0, 0, 0, 0], CloseReason::ReservedBits, 1002),
            ("rsv2", vec![0xa1, 0x80, 0, 0, 0, 0], CloseReason::ReservedBits, 1002),
            ("rsv3", vec![0x91, 0x80, 0, 0, 0, 0], CloseReason::ReservedBits, 1002),
            (
                "opcode 3",
                vec![0x83, 0x80, 0, 0, 0, 0],
                CloseReason::UnknownOpcode,
                1002,
            ),
            (
                "opcode 7",
                vec![0x87, 0x80, 0, 0, 0, 0],
                CloseReason::UnknownOpcode,
                1002,
            ),
            (
                "opcode B",
                vec![0x8b, 0x80, 0, 0, 0, 0],
                CloseReason::UnknownOpcode,
                1002,
            ),
            (
                "opcode F",
                vec![0x8f, 0x80, 0, 0, 0, 0],
                CloseReason::UnknownOpcode,
                1002,
            ),
            (
                "ping no fin",
                vec![0x09, 0x80, 0, 0, 0, 0],
                CloseReason::FragmentedControl,
                1002,
            ),
            (
                "close no fin",
                vec![0x08, 0x80, 0, 0, 0, 0],
                CloseReason::FragmentedControl,
                1002,
            ),
            (
                "ping 126",
                vec![0x89, 0xfe, 0x00, 0x7e],
                CloseReason::ControlTooLong,
                1002,
            ),
            ("pong 127", vec![0x8a, 0xff], CloseReason::ControlTooLong, 1002),
            ("length msb", too_long_length, CloseReason::LengthMsb, 1002),
            (
                "65537 bytes",
                vec![0x82, 0xff, 0, 0, 0, 0, 0, 1, 0, 1],
                CloseReason::MessageTooBig,
                1009,
            ),
            ("close 1 byte", close(&[0x03]), CloseReason::CloseLengthOne, 1002),
            (
                "close 999",
                close(&999u16.to_be_bytes()),
                CloseReason::InvalidCloseCode,
                1002,
            ),
            (
                "close 1004",
                close(&1004u16.to_be_bytes()),
                CloseReason::InvalidCloseCode,
                1002,
            ),
            (
                "close 1005",
                close(&1005u16.to_be_bytes()),
                CloseReason::InvalidCloseCode,
                1002,
            ),
            (
                "close 1006",
                close(&1006u16.to_be_bytes()),
                CloseReason::InvalidCloseCode,
                1002,
            ),
            (
                "close 1015",
                close(&1015u16.to_be_bytes()),
                CloseReason::InvalidCloseCode,
                1002,
            ),
            (
                "close 1100",
                close(&1100u16.to_be_bytes()),
                CloseReason::InvalidCloseCode,
                1002,
            ),
            (
                "close 2999",
                close(&2999u16.to_be_bytes()),
                CloseReason::InvalidCloseCode,
                1002,
            ),
            (
                "close 5000",
                close(&5000u16.to_be_bytes()),
                CloseReason::InvalidCloseCode,
                1002,
            ),
            (
                "close reason",
                close(&[0x03, 0xe8, 0xff]),
                CloseReason::InvalidReasonUtf8,
                1007,
            ),
        ];
        for (name, bytes, reason, code) in table {
            assert_eq!(decode_all(&bytes), Err(reason), "{name}");
            assert_eq!(reason.code(), CloseCode(code), "{name}");
        }
    }

    #[test]
    fn too_big_is_known_from_the_header_alone() {
        let mut buf = [0x82, 0xfe, 0x01, 0x00];
        let tight = WsLimits { message_bytes_max: 255 };
        assert_eq!(decode(&mut buf, &tight), Err(CloseReason::MessageTooBig));
        // Control frames are bounded by 125, not by the message limit.
        let mut ping = masked(true, Opcode::Ping, &[7; 100]);
        let small = WsLimits { message_bytes_max: 10 };
        assert!(decode(&mut ping, &small).unwrap().is_some());
    }

    #[test]
    fn valid_close_payloads() {
        type Case = (&'static [u8], Option<(u16, &'static str)>);
        let table: &[Case] = &[
            (b"", None),
            (b"\x03\xe8", Some((1000, ""))),
            (b"\x03\xe9bye", Some((1001, "bye"))),
            (b"\x03\xf4", Some((1012, ""))),
            (b"\x0b\xb8", Some((3000, ""))),
            (b"\x13\x87\xc3\xa9", Some((4999, "é"))),
        ];
        for &(payload, expected) in table {
            let got = parse_close_payload(payload).unwrap();
            assert_eq!(got, expected.map(|(c, r)| (CloseCode(c), r)));
            assert!(decode_all(&masked(true, Opcode::Close, payload)).unwrap().is_some());
        }
    }

    #[test]
    fn partial_frames_wait_and_leave_the_buffer_alone() {
        let wire = masked(true, Opcode::Binary, &[0x11; 300]);
        for cut in 0..wire.len() {
            let mut buf = wire[..cut].to_vec();
            assert_eq!(decode(&mut buf, &limits()), Ok(None), "cut {cut}");
            assert_eq!(buf, wire[..cut], "cut {cut}");
        }
    }

    #[test]
    fn encode_close_truncates_at_a_char_boundary() {
        let mut out = Vec::new();
        encode_close(&mut out, CloseCode::NORMAL, "");
        assert_eq!(out, [0x88, 0x02, 0x03, 0xe8]);
        let long = "é".repeat(100);
        let mut out = Vec::new();
        encode_close(&mut out, CloseCode::GOING_AWAY, &long);
        assert_eq!(out[1] as usize, 2 + 122);
        assert_eq!(&out[2..4], &[0x03, 0xe9]);
        assert!(std::str::from_utf8(&out[4..]).is_ok());
    }

    #[test]
    #[should_panic(expected = "control frame")]
    fn oversized_ping_is_a_programmer_error() {
        encode_ping(&mut Vec::new(), &[0; 126]);
    }

    #[test]
    fn close_codes() {
        let valid = [
            1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 4999,
        ];
        let invalid = [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535];
        assert!(valid.iter().all(|&c| CloseCode(c).is_valid_on_wire()));
        assert!(!invalid.iter().any(|&c| CloseCode(c).is_valid_on_wire()));
    }
}
