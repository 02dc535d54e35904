//! The journal's fault seam: tests make its file I/O fail on purpose,
//! through the process's start-up (`TRADSYS_TEST_FAIL_SYNC_AFTER=<n>`,
//! see `config`), to check what the server does when a disk lies.
//!
//! Off unless asked for: one atomic load per fdatasync.

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
    SYNCS_LEFT
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| match left {
            u64::MAX => Some(u64::MAX),
            0 => None,
            left => Some(left - 1),
        })
        .is_ok()
}
