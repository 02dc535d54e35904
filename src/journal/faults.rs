//! The storage fault seam: tests make the journal's and the snapshots'
//! file I/O fail on purpose, through the process's start-up
//! (`TRADSYS_TEST_FAIL_SYNC_AFTER=<n>`,
//! `TRADSYS_TEST_FAIL_SNAPSHOT_WRITES_AFTER=<n>`, see `config`), to check
//! what the server does when a disk lies or fills up.
//!
//! Off unless asked for: one atomic load per fdatasync or snapshot file.

use std::sync::atomic::{AtomicU64, Ordering};

/// Successful fdatasyncs left before every later one fails; `u64::MAX`:
/// never.
static SYNCS_LEFT: AtomicU64 = AtomicU64::new(u64::MAX);

/// Lets `n` more fdatasyncs of the journal succeed and fails every later
/// one, process-wide.
pub fn fail_syncs_after(n: u64) {
    SYNCS_LEFT.store(n.min(u64::MAX - 1), Ordering::SeqCst);
}

/// Whether the next fdatasync may go to the disk (counting it).
pub(super) fn sync_allowed() -> bool {
    take_one(&SYNCS_LEFT)
}

/// Files the snapshot layer may still write (snapshots and `CURRENT`)
/// before every later one fails as on a full disk; `u64::MAX`: never.
static SNAPSHOT_WRITES_LEFT: AtomicU64 = AtomicU64::new(u64::MAX);

/// Lets `n` more snapshot-layer files (snapshots, `CURRENT`) be written
/// and fails every later one with `ENOSPC`, process-wide.
pub fn fail_snapshot_writes_after(n: u64) {
    SNAPSHOT_WRITES_LEFT.store(n.min(u64::MAX - 1), Ordering::SeqCst);
}

/// Whether the next snapshot file may be written (counting it).
pub(crate) fn snapshot_write_allowed() -> bool {
    take_one(&SNAPSHOT_WRITES_LEFT)
}

fn take_one(left: &AtomicU64) -> bool {
    left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| match left {
        u64::MAX => Some(u64::MAX),
        0 => None,
        left => Some(left - 1),
    })
    .is_ok()
}
