//! A small filesystem of a test's own for disk-full faults: a tmpfs
//! mounted (as root: the test machines run as root, elsewhere through
//! `sudo -n`) and unmounted when dropped, and a ballast file that takes
//! every byte left on it. Shared by `tests/durability.rs` and the crash
//! harness (`tests/crash/disk.rs`), which includes this file by path and
//! never panics, so nothing here does.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `program` as root: directly when the tests run as root (CI), else
/// through `sudo -n`.
fn as_root(program: &str) -> Command {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return Command::new(program);
    }
    let mut command = Command::new("sudo");
    command.args(["-n", program]);
    command
}

/// A mounted tmpfs; dropping it unmounts it and removes its mount point.
pub struct Tmpfs {
    pub path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `bytes` on `path` (created if missing).
    pub fn mount_at(path: &Path, bytes: u64) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let status = as_root("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(path)
            .status()
            .map_err(|e| format!("mount: {e}"))?;
        if !status.success() {
            return Err(format!("mount tmpfs on {}: {status} (needs root)", path.display()));
        }
        Ok(Tmpfs {
            path: path.to_path_buf(),
        })
    }

    /// Gives the mounted tmpfs a new size.
    pub fn resize(&self, bytes: u64) -> Result<(), String> {
        let status = as_root("mount")
            .args(["-o", &format!("remount,size={bytes}")])
            .arg(&self.path)
            .status()
            .map_err(|e| format!("mount: {e}"))?;
        match status.success() {
            true => Ok(()),
            false => Err(format!("remount {}: {status}", self.path.display())),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = as_root("umount").arg(&self.path).status();
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Fills the filesystem of `path` to the last byte with a file at `path`,
/// growing the file if it is already there (never truncating it first,
/// which would give room back for a moment).
pub fn fill_up(path: &Path) -> Result<(), String> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let chunk = vec![1u8; 64 << 10];
    while file.write_all(&chunk).is_ok() {}
    // What is left is smaller than a chunk: take it byte by byte.
    while file.write_all(&[1]).is_ok() {}
    Ok(())
}
