//! Reading a journal back, and the cuts recovery makes to it.
//!
//! Everything here is synchronous `std::fs`: it runs at start-up before any
//! executor, and on the snapshot thread. A scan reads one whole segment at a
//! time into a buffer it reuses, and hands out records borrowing from it.
//!
//! **Invariant:** a scan that returns `Ok` has checked the CRC and lsn of
//! every frame it passed, from the first segment on; what it reports in
//! [`Tail::torn`] is a damaged end of the last segment with nothing valid
//! after it, and anything else damaged is [`JournalError::Corrupt`].
//! The snapshot thread reads a journal the writer is still appending to: it
//! must stop (break) at an lsn it knows is committed, because the bytes of a
//! commit in flight may look torn.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use super::frame::{self, Frame, Kind};
use super::{parse_segment_name, JournalError, JOURNAL_HEADER_BYTES};

/// One record as a scan sees it; the payload borrows the scan's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    pub lsn: u64,
    pub epoch: u64,
    pub payload: &'a [u8],
}

/// Where a scan ended, and what a writer continuing the journal needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tail {
    /// The lsn the next record gets.
    pub next_lsn: u64,
    /// The largest seal epoch seen: every record of an epoch up to it is in
    /// the journal.
    pub sealed_epoch: u64,
    /// The epoch of the last record seen (0 when there is none).
    pub last_epoch: u64,
    /// The last segment, where writing continues; `None` for no journal.
    pub segment: Option<PathBuf>,
    /// Byte offset in `segment` just past the last valid frame.
    pub end_offset: u64,
    /// A torn end of the last segment: its file and the offset of the first
    /// bad byte (equal to `end_offset`). [`truncate`] zeroes it.
    pub torn: Option<(PathBuf, u64)>,
}

impl Tail {
    /// The tail of a journal that has no segment yet.
    pub fn empty() -> Tail {
        Tail {
            next_lsn: 1,
            sealed_epoch: 0,
            last_epoch: 0,
            segment: None,
            end_offset: 0,
            torn: None,
        }
    }

    fn apply(&mut self, frame: &Frame<'_>) {
        match frame.kind {
            Kind::Record => {
                self.next_lsn += 1;
                self.last_epoch = frame.epoch;
            }
            Kind::Seal => self.sealed_epoch = self.sealed_epoch.max(frame.epoch),
        }
    }
}

/// Visits every record with `lsn >= from_lsn` in order, checking every frame
/// of the journal, and returns where the journal ends. If `f` breaks, the
/// scan stops there and the tail describes the journal up to that record.
/// A missing directory is an empty journal.
pub fn scan(
    dir: &Path,
    from_lsn: u64,
    mut f: impl FnMut(RecordRef<'_>) -> ControlFlow<()>,
) -> Result<Tail, JournalError> {
    walk(dir, |_, _, frame| {
        if frame.kind == Kind::Record && frame.lsn >= from_lsn {
            return f(RecordRef {
                lsn: frame.lsn,
                epoch: frame.epoch,
                payload: frame.payload,
            });
        }
        ControlFlow::Continue(())
    })
}

/// Zeroes a torn tail reported by [`scan`] and makes that durable, so the
/// journal can be reopened for writing. Does nothing when nothing is torn.
pub fn truncate(tail: &Tail) -> Result<(), JournalError> {
    match &tail.torn {
        Some((path, offset)) => zero_from(path, *offset),
        None => Ok(()),
    }
}

/// Drops every record with lsn `>= lsn` (and the seals after them): recovery
/// cuts the records beyond the global durable epoch. Later segments are
/// deleted newest first, so a crash in between leaves a consistent prefix.
pub fn truncate_at(dir: &Path, lsn: u64) -> Result<(), JournalError> {
    let mut cut: Option<(PathBuf, u64)> = None;
    walk(dir, |path, offset, frame| {
        if frame.kind == Kind::Record && frame.lsn >= lsn {
            cut = Some((path.to_path_buf(), offset));
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    })?;
    let Some((cut_path, offset)) = cut else {
        return Ok(());
    };
    for (_, path) in segments(dir)?.iter().rev().take_while(|(_, path)| *path != cut_path) {
        std::fs::remove_file(path).map_err(JournalError::io("removing", path))?;
    }
    sync_dir(dir)?;
    zero_from(&cut_path, offset)
}

/// Deletes the segments whose records all have lsn `< lsn` (they are covered
/// by a snapshot), oldest first. The last segment is never deleted. Returns
/// how many were deleted.
pub fn delete_segments_before(dir: &Path, lsn: u64) -> Result<usize, JournalError> {
    let segments = segments(dir)?;
    let mut deleted = 0;
    for pair in segments.windows(2) {
        let ((_, path), (next_first_lsn, _)) = (&pair[0], &pair[1]);
        if *next_first_lsn > lsn {
            break;
        }
        std::fs::remove_file(path).map_err(JournalError::io("removing", path))?;
        deleted += 1;
    }
    if deleted > 0 {
        sync_dir(dir)?;
    }
    Ok(deleted)
}

/// The segments of `dir` by first lsn, oldest first; other files are ignored.
pub(super) fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, JournalError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(JournalError::io("listing", dir)(e)),
    };
    let mut segments = Vec::new();
    for entry in entries {
        let entry = entry.map_err(JournalError::io("listing", dir))?;
        if let Some(first_lsn) = entry.file_name().to_str().and_then(parse_segment_name) {
            segments.push((first_lsn, entry.path()));
        }
    }
    segments.sort();
    Ok(segments)
}

pub(super) fn sync_dir(dir: &Path) -> Result<(), JournalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(JournalError::io("syncing", dir))
}

/// Where the journal ends and the highest seal in it, reading only its
/// last segment (or the last ones, back to a segment with a seal): what
/// recovery needs to choose its cut before replaying. Segments before it
/// are checked by the replay's [`scan`].
pub fn scan_tail(dir: &Path) -> Result<Tail, JournalError> {
    let segments = segments(dir)?;
    for start in (0..segments.len()).rev() {
        let tail = walk_segments(&segments[start..], |_, _, _| ControlFlow::Continue(()))?;
        if tail.sealed_epoch > 0 || start == 0 {
            return Ok(tail);
        }
    }
    Ok(Tail::empty())
}

/// Every frame of the journal in order with its segment and offset.
pub(super) fn walk(dir: &Path, f: impl FnMut(&Path, u64, &Frame<'_>) -> ControlFlow<()>) -> Result<Tail, JournalError> {
    walk_segments(&segments(dir)?, f)
}

/// Checks the bytes of one segment as [`scan`] checks a journal's last
/// segment starting at `first_lsn`, visiting each valid record; for tests
/// and fuzzing, which have bytes rather than files.
pub fn scan_segment_bytes(
    bytes: &[u8],
    first_lsn: u64,
    mut f: impl FnMut(RecordRef<'_>) -> ControlFlow<()>,
) -> Result<Tail, JournalError> {
    let path = Path::new("segment");
    let mut tail = Tail::empty();
    tail.next_lsn = first_lsn;
    tail.segment = Some(path.to_path_buf());
    let segment = Segment {
        path,
        bytes,
        last: true,
    };
    let _stopped_early = walk_segment(segment, &mut tail, &mut |_, _, frame| {
        if frame.kind != Kind::Record {
            return ControlFlow::Continue(());
        }
        f(RecordRef {
            lsn: frame.lsn,
            epoch: frame.epoch,
            payload: frame.payload,
        })
    })?;
    Ok(tail)
}

/// Every frame of `segments` (consecutive, oldest first) in order.
fn walk_segments(
    segments: &[(u64, PathBuf)],
    mut f: impl FnMut(&Path, u64, &Frame<'_>) -> ControlFlow<()>,
) -> Result<Tail, JournalError> {
    let mut tail = Tail::empty();
    if let Some((first_lsn, _)) = segments.first() {
        tail.next_lsn = *first_lsn;
    }
    let mut buf = Vec::new();
    for (i, (first_lsn, path)) in segments.iter().enumerate() {
        if *first_lsn != tail.next_lsn {
            let reason = format!("segment starts at lsn {first_lsn}, expected lsn {}", tail.next_lsn);
            return Err(JournalError::Corrupt {
                file: path.clone(),
                offset: 0,
                reason,
            });
        }
        read_whole(path, &mut buf)?;
        tail.segment = Some(path.clone());
        tail.end_offset = 0;
        let last = i + 1 == segments.len();
        if walk_segment(
            Segment {
                path,
                bytes: &buf,
                last,
            },
            &mut tail,
            &mut f,
        )?
        .is_break()
        {
            break;
        }
    }
    Ok(tail)
}

struct Segment<'a> {
    path: &'a Path,
    bytes: &'a [u8],
    last: bool,
}

fn walk_segment(
    segment: Segment<'_>,
    tail: &mut Tail,
    f: &mut impl FnMut(&Path, u64, &Frame<'_>) -> ControlFlow<()>,
) -> Result<ControlFlow<()>, JournalError> {
    let mut pos = 0;
    loop {
        let rest = &segment.bytes[pos..];
        if matches!(frame::length_word(rest), None | Some(0)) {
            return end_of_data(&segment, pos, tail).map(|()| ControlFlow::Continue(()));
        }
        let frame = match frame::decode(rest) {
            Ok(frame) if frame.lsn == tail.next_lsn => frame,
            Ok(_) => return bad_frame(&segment, pos, tail, "frame lsn does not follow").map(ControlFlow::Continue),
            Err(bad) => return bad_frame(&segment, pos, tail, bad.reason()).map(ControlFlow::Continue),
        };
        tail.apply(&frame);
        pos += frame.len();
        tail.end_offset = pos as u64;
        if f(segment.path, (pos - frame.len()) as u64, &frame).is_break() {
            return Ok(ControlFlow::Break(()));
        }
    }
}

/// A zero length word (or the end of the file) at `pos`: the data ends here,
/// unless something other than zeros follows.
fn end_of_data(segment: &Segment<'_>, pos: usize, tail: &mut Tail) -> Result<(), JournalError> {
    if segment.bytes[pos..].iter().all(|&b| b == 0) {
        return Ok(());
    }
    bad_frame(segment, pos, tail, "non-zero bytes after the end of data").map(|_| ())
}

/// A bad frame at `pos` is a torn tail when it is in the last segment and
/// nothing valid follows the first seal after it; otherwise the journal is
/// corrupt. Every commit ends with a seal and the next commit starts only
/// after it is synced: a frame after that seal proves the damaged commit was
/// complete on disk, while the blocks of the last, interrupted commit (its
/// own seal included) may reach the disk in any order.
fn bad_frame(segment: &Segment<'_>, pos: usize, tail: &mut Tail, reason: &str) -> Result<(), JournalError> {
    let corrupt = |reason: String| JournalError::Corrupt {
        file: segment.path.to_path_buf(),
        offset: pos as u64,
        reason,
    };
    if !segment.last {
        return Err(corrupt(format!("{reason} (in a sealed segment)")));
    }
    if let Some(valid) = later_commit_after(segment.bytes, pos + 1) {
        return Err(corrupt(format!(
            "{reason}, and a later commit follows at byte offset {valid}"
        )));
    }
    tail.torn = Some((segment.path.to_path_buf(), pos as u64));
    Ok(())
}

/// The offset of a valid frame after the first valid seal at or after
/// `from`: the start of a commit that followed the one holding `from`.
fn later_commit_after(bytes: &[u8], from: usize) -> Option<usize> {
    let seal = valid_seal_after(bytes, from)?;
    valid_frame_after(bytes, seal + JOURNAL_HEADER_BYTES)
}

/// The offset of the first frame at or after `from` that decodes. Headers
/// that cannot be a frame are skipped before paying for a checksum.
fn valid_frame_after(bytes: &[u8], from: usize) -> Option<usize> {
    let last_start = bytes.len().checked_sub(JOURNAL_HEADER_BYTES)?;
    (from..=last_start).find(|&at| {
        let rest = &bytes[at..];
        let plausible = matches!(frame::length_word(rest), Some(len) if len as usize >= JOURNAL_HEADER_BYTES
            && len as usize <= rest.len())
            && matches!(rest[24], 1 | 2);
        plausible && frame::decode(rest).is_ok()
    })
}

/// The offset of the first seal frame at or after `from` that decodes.
/// Headers that cannot be a seal are skipped before paying for a checksum.
fn valid_seal_after(bytes: &[u8], from: usize) -> Option<usize> {
    let last_start = bytes.len().checked_sub(JOURNAL_HEADER_BYTES)?;
    (from..=last_start).find(|&at| {
        let rest = &bytes[at..];
        let plausible = frame::length_word(rest) == Some(JOURNAL_HEADER_BYTES as u32) && rest[24] == Kind::Seal as u8;
        plausible && frame::decode(rest).is_ok_and(|f| f.kind == Kind::Seal)
    })
}

fn read_whole(path: &Path, buf: &mut Vec<u8>) -> Result<(), JournalError> {
    buf.clear();
    File::open(path)
        .and_then(|mut file| file.read_to_end(buf))
        .map_err(JournalError::io("reading", path))?;
    Ok(())
}

/// Zeroes `path` from `offset` to its end (keeping its size) and syncs it.
fn zero_from(path: &Path, offset: u64) -> Result<(), JournalError> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(JournalError::io("opening", path))?;
    let len = file.metadata().map_err(JournalError::io("reading", path))?.len();
    file.set_len(offset)
        .and_then(|()| file.set_len(len.max(offset)))
        .and_then(|()| file.sync_all())
        .map_err(JournalError::io("truncating", path))
}
