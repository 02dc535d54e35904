//! The per-shard journal: the shard's state changes, in order, on disk.
//!
//! A journal is a directory (`<data-dir>/shard-<i>/`) of segment files named
//! `journal-<first lsn, 20 digits>.seg`, each preallocated to the segment size
//! and zero-filled. Frames (see [`frame`]) follow each other from offset 0; a
//! zero length word ends the data. Records carry a log sequence number (lsn):
//! 1 for the first record of the shard, then consecutive across segments.
//!
//! The shard's [`Writer`] lives on its executor: tasks [`Writer::append`]
//! records into memory, and the shard's committer task calls
//! [`Writer::commit`], which writes the batch and a seal with direct I/O and
//! fdatasyncs it. [`scan`] reads a journal with plain `std::fs` at start-up
//! and from the snapshot thread; [`truncate`], [`truncate_at`] and
//! [`delete_segments_before`] are the recovery and clean-up cuts.
//!
//! **Invariant:** lsns are consecutive from a segment's name to its last frame
//! and from one segment to the next; a seal's lsn is the next record's lsn.
//! **Invariant:** every non-last segment was fdatasynced before the next one
//! was created, so damage there is corruption, never a torn write.
//! **Invariant:** only the last segment may end in a torn frame; a bad frame
//! with a valid frame after it is corruption and stops start-up.

pub mod faults;
mod frame;
mod scan;
mod writer;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

pub use frame::Kind;
pub use scan::{delete_segments_before, scan, scan_segment_bytes, scan_tail, truncate, truncate_at, RecordRef, Tail};
pub use writer::{CommitStats, Writer};

/// The next segment while it is being prepared; scans ignore it.
const JOURNAL_SPARE_NAME: &str = "journal-spare.tmp";

/// Bytes of a frame header: length, crc, lsn, epoch, kind.
pub const JOURNAL_HEADER_BYTES: usize = 4 + 4 + 8 + 8 + 1;
/// Largest record payload; [`Writer::append`] asserts it.
pub const JOURNAL_RECORD_BYTES_MAX: usize = 64 * 1024;
/// Largest frame on disk.
pub const JOURNAL_FRAME_BYTES_MAX: usize = JOURNAL_HEADER_BYTES + JOURNAL_RECORD_BYTES_MAX;
/// Unit of every write: offsets and lengths are multiples of it, which
/// satisfies O_DIRECT on 512-byte and 4 KiB devices alike.
pub const JOURNAL_BLOCK_BYTES: usize = 4096;
/// Segment size when the configuration does not say.
pub const JOURNAL_SEGMENT_BYTES_DEFAULT: u64 = 64 * 1024 * 1024;
/// Smallest segment: a largest record and its seal must fit.
pub const JOURNAL_SEGMENT_BYTES_MIN: u64 = 128 * 1024;
/// Largest segment; keeps a whole segment in the scan buffer affordable.
pub const JOURNAL_SEGMENT_BYTES_MAX: u64 = 1024 * 1024 * 1024;
/// Pending bytes above which a shard should stop admitting work until the
/// committer catches up. The writer does not enforce it: a commit always
/// takes everything pending, or its seal would lie.
pub const JOURNAL_COMMIT_BYTES_MAX: usize = 8 * 1024 * 1024;
/// Largest single write a commit issues (and the DMA buffer it allocates).
pub const JOURNAL_WRITE_BYTES_MAX: usize = 1024 * 1024;

const _: () = assert!(JOURNAL_SEGMENT_BYTES_MIN as usize >= JOURNAL_FRAME_BYTES_MAX + JOURNAL_HEADER_BYTES);
const _: () = assert!(JOURNAL_SEGMENT_BYTES_MIN % JOURNAL_BLOCK_BYTES as u64 == 0);
const _: () = assert!(JOURNAL_WRITE_BYTES_MAX % JOURNAL_BLOCK_BYTES == 0);
const _: () = assert!(JOURNAL_WRITE_BYTES_MAX >= JOURNAL_FRAME_BYTES_MAX + JOURNAL_BLOCK_BYTES);
const _: () = assert!(JOURNAL_COMMIT_BYTES_MAX >= JOURNAL_FRAME_BYTES_MAX);

/// Operating errors of the journal.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal: {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("journal corrupt: {} at byte offset {offset}: {reason}", file.display())]
    Corrupt { file: PathBuf, offset: u64, reason: String },
    #[error("journal: torn tail in {} at byte offset {offset} must be truncated before writing", file.display())]
    NotTruncated { file: PathBuf, offset: u64 },
    #[error("journal: segment size {0} bytes is not a multiple of 4096 in [128 KiB, 1 GiB]")]
    SegmentSize(u64),
    #[error("journal: an earlier commit failed; the journal must be reopened")]
    Failed,
    #[error("journal: no space left on the device for {}", path.display())]
    NoSpace { path: PathBuf },
}

impl JournalError {
    /// Whether the disk (or the user's quota) is full: the work waits for
    /// space instead of stopping the journal.
    pub fn is_no_space(&self) -> bool {
        match self {
            JournalError::NoSpace { .. } => true,
            JournalError::Io { source, .. } => matches!(source.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT)),
            _ => false,
        }
    }

    fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> JournalError {
        let path = path.to_path_buf();
        move |source| JournalError::Io { op, path, source }
    }
}

/// The file name of the segment whose first record has `first_lsn`.
pub fn segment_name(first_lsn: u64) -> String {
    format!("journal-{first_lsn:020}.seg")
}

/// The first lsn named by a segment file name, if it is one.
fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("journal-")?.strip_suffix(".seg")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn check_segment_bytes(segment_bytes: u64) -> Result<(), JournalError> {
    let in_range = (JOURNAL_SEGMENT_BYTES_MIN..=JOURNAL_SEGMENT_BYTES_MAX).contains(&segment_bytes);
    if !in_range || segment_bytes % JOURNAL_BLOCK_BYTES as u64 != 0 {
        return Err(JournalError::SegmentSize(segment_bytes));
    }
    Ok(())
}
