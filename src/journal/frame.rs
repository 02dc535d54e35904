//! The journal frame: one record or seal, self-describing and checksummed.
//!
//! Layout, all integers little-endian:
//! `[len u32][crc32c u32][lsn u64][epoch u64][kind u8][payload]`.
//! `len` counts the whole frame (header and payload), so a zero length word
//! can never start a frame and marks the end of data in a zero-filled segment.
//! The CRC32C covers every byte after the crc field, so a frame that decodes
//! has an intact length, lsn, epoch, kind and payload.
//!
//! **Invariant:** a frame that [`decode`] accepts satisfies [`Frame::assert_valid`],
//! and so does every frame [`encode`] writes; both sides assert it.

use super::{JOURNAL_FRAME_BYTES_MAX, JOURNAL_HEADER_BYTES, JOURNAL_RECORD_BYTES_MAX};

/// What a frame says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// An opaque payload encoded by the caller; consumes one lsn.
    Record = 1,
    /// No payload. Every record of an epoch up to the seal's epoch is in the
    /// journal before it. Its lsn is the lsn the next record will get.
    Seal = 2,
}

impl Kind {
    fn from_byte(b: u8) -> Option<Kind> {
        match b {
            1 => Some(Kind::Record),
            2 => Some(Kind::Seal),
            _ => None,
        }
    }
}

/// A decoded frame borrowing its payload from the read buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    pub kind: Kind,
    pub lsn: u64,
    pub epoch: u64,
    pub payload: &'a [u8],
}

impl Frame<'_> {
    /// Bytes the frame occupies on disk.
    pub fn len(&self) -> usize {
        JOURNAL_HEADER_BYTES + self.payload.len()
    }

    /// The structural rules every frame obeys on disk; a failure here is a
    /// bug in this module, not a bad disk (the CRC catches those first).
    pub fn assert_valid(&self) {
        assert!(self.lsn >= 1, "journal frame with lsn 0");
        assert!(
            self.payload.len() <= JOURNAL_RECORD_BYTES_MAX,
            "journal record too large"
        );
        if self.kind == Kind::Seal {
            assert!(self.payload.is_empty(), "journal seal with a payload");
        }
    }
}

/// Why bytes did not decode as a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bad {
    /// Fewer bytes than a header, or than the length word claims.
    Short,
    /// Length word below the header size or above the frame maximum.
    Length,
    /// The checksum does not match.
    Crc,
    /// A kind byte this version does not know, or a seal with a payload.
    Kind,
}

impl Bad {
    pub fn reason(self) -> &'static str {
        match self {
            Bad::Short => "frame runs past the end of the file",
            Bad::Length => "frame length out of range",
            Bad::Crc => "frame checksum mismatch",
            Bad::Kind => "unknown frame kind",
        }
    }
}

/// Appends one frame to `out`.
pub fn encode(out: &mut Vec<u8>, kind: Kind, lsn: u64, epoch: u64, payload: &[u8]) {
    let frame = Frame {
        kind,
        lsn,
        epoch,
        payload,
    };
    frame.assert_valid();
    let start = out.len();
    let len = u32::try_from(frame.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&lsn.to_le_bytes());
    out.extend_from_slice(&epoch.to_le_bytes());
    out.push(kind as u8);
    out.extend_from_slice(payload);
    let crc = crc32c::crc32c(&out[start + 8..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// The length word at the start of `buf`, if there are four bytes.
pub fn length_word(buf: &[u8]) -> Option<u32> {
    buf.get(..4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// Decodes the frame at the start of `buf` (which may hold more after it).
pub fn decode(buf: &[u8]) -> Result<Frame<'_>, Bad> {
    if buf.len() < JOURNAL_HEADER_BYTES {
        return Err(Bad::Short);
    }
    let len = length_word(buf).ok_or(Bad::Short)? as usize;
    if !(JOURNAL_HEADER_BYTES..=JOURNAL_FRAME_BYTES_MAX).contains(&len) {
        return Err(Bad::Length);
    }
    if buf.len() < len {
        return Err(Bad::Short);
    }
    let word = |at: usize| u64::from_le_bytes(buf[at..at + 8].try_into().unwrap_or([0; 8]));
    let crc = u32::from_le_bytes(buf[4..8].try_into().unwrap_or([0; 4]));
    if crc32c::crc32c(&buf[8..len]) != crc {
        return Err(Bad::Crc);
    }
    let kind = Kind::from_byte(buf[24]).ok_or(Bad::Kind)?;
    let frame = Frame {
        kind,
        lsn: word(8),
        epoch: word(16),
        payload: &buf[JOURNAL_HEADER_BYTES..len],
    };
    if frame.lsn == 0 || (kind == Kind::Seal && !frame.payload.is_empty()) {
        return Err(Bad::Kind);
    }
    frame.assert_valid();
    Ok(frame)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_the_documented_layout() {
        let mut out = Vec::new();
        encode(&mut out, Kind::Record, 7, 3, b"abc");
        assert_eq!(out.len(), 28);
        assert_eq!(&out[0..4], &28u32.to_le_bytes());
        assert_eq!(&out[4..8], &crc32c::crc32c(&out[8..]).to_le_bytes());
        assert_eq!(&out[8..16], &7u64.to_le_bytes());
        assert_eq!(&out[16..24], &3u64.to_le_bytes());
        assert_eq!(out[24], 1);
        assert_eq!(&out[25..], b"abc");
        let frame = decode(&out).unwrap();
        assert_eq!(
            frame,
            Frame {
                kind: Kind::Record,
                lsn: 7,
                epoch: 3,
                payload: b"abc"
            }
        );
    }

    #[test]
    fn rejects_damaged_frames() {
        let mut good = Vec::new();
        encode(&mut good, Kind::Seal, 9, 4, b"");
        let cases: &[(usize, u8, Bad)] = &[(0, 0, Bad::Length), (0, 0xff, Bad::Short), (5, 1, Bad::Crc)];
        for &(at, value, want) in cases {
            let mut bytes = good.clone();
            bytes[at] = value;
            bytes.extend_from_slice(&[0; 8]);
            assert_eq!(decode(&bytes), Err(want), "byte {at} = {value}");
        }
        assert_eq!(decode(&good[..10]), Err(Bad::Short));
        let mut unknown = good.clone();
        unknown[24] = 9;
        let crc = crc32c::crc32c(&unknown[8..]);
        unknown[4..8].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(decode(&unknown), Err(Bad::Kind));
    }
}
