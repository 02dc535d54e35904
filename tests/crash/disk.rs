//! A small disk of the harness's own for the disk-full cycles: a tmpfs
//! mounted on a chain's directory, filled to the last byte by a ballast
//! file while the server trades, and given its room back before the
//! restart. Mounting needs root (as tests/durability.rs's full-disk tests
//! do); the test machines run as root.

use std::io::Write;
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

/// A mounted tmpfs, unmounted (and its mount point removed) when dropped.
pub struct Disk {
    pub path: PathBuf,
}

fn as_root(program: &str) -> Command {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return Command::new(program);
    }
    let mut command = Command::new("sudo");
    command.args(["-n", program]);
    command
}

impl Disk {
    pub fn mount(path: &Path) -> Result<Disk, String> {
        std::fs::create_dir_all(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let status = as_root("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={DISK_BYTES}"), "tmpfs"])
            .arg(path)
            .status()
            .map_err(|e| format!("mount: {e}"))?;
        if !status.success() {
            return Err(format!("mount tmpfs on {}: {status} (needs root)", path.display()));
        }
        Ok(Disk {
            path: path.to_path_buf(),
        })
    }

    fn ballast(&self) -> PathBuf {
        self.path.join("ballast")
    }

    /// Takes every byte left on the disk.
    pub fn fill(&self) -> Result<(), String> {
        let mut file = std::fs::File::create(self.ballast()).map_err(|e| format!("ballast: {e}"))?;
        let chunk = vec![1u8; 64 << 10];
        while file.write_all(&chunk).is_ok() {}
        // What is left is smaller than a chunk: take it byte by byte.
        while file.write_all(&[1]).is_ok() {}
        Ok(())
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
        let _ = Command::new("cp").arg("-a").arg(&self.path).arg(to).status();
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        let _ = as_root("umount").arg(&self.path).status();
        let _ = std::fs::remove_dir(&self.path);
    }
}
