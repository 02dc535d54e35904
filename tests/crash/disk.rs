//! A small disk of the harness's own for the disk-full cycles: a tmpfs
//! (`tests/common/tmpfs.rs`) mounted on a chain's directory, filled to the
//! last byte by a ballast file while the server trades, and given its room
//! back before the restart.

use crate::tmpfs::{fill_up, Tmpfs};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The tmpfs's size: room for a generation of two shards (snapshots, a
/// segment and a spare each at `SEGMENT_BYTES`) and the history files,
/// small enough that filling it takes a few milliseconds.
pub const DISK_BYTES: u64 = 16 << 20;
/// Journal segments on the small disk: the smallest tradsys allows, so
/// that a cycle's traffic reaches the point where the next one is
/// prepared (half of the current one). `--journal-segment-bytes`.
pub const SEGMENT_BYTES: &str = "131072";

/// A chain's mounted disk, unmounted when dropped.
pub struct Disk {
    tmpfs: Tmpfs,
}

impl Disk {
    pub fn mount(path: &Path) -> Result<Disk, String> {
        Ok(Disk {
            tmpfs: Tmpfs::mount_at(path, DISK_BYTES)?,
        })
    }

    pub fn path(&self) -> &Path {
        &self.tmpfs.path
    }

    fn ballast(&self) -> PathBuf {
        self.path().join("ballast")
    }

    /// Takes every byte left on the disk.
    pub fn fill(&self) -> Result<(), String> {
        fill_up(&self.ballast())
    }

    /// Gives the ballast's room back.
    pub fn free(&self) -> Result<(), String> {
        match std::fs::remove_file(self.ballast()) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(format!("ballast: {e}")),
            _ => Ok(()),
        }
    }

    /// Copies the disk's contents to `to` (a failed run keeps its data).
    pub fn keep(&self, to: &Path) {
        let _ = Command::new("cp").arg("-a").arg(self.path()).arg(to).status();
    }
}
