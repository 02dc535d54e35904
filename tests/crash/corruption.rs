//! Damaged journals: a flipped byte inside a segment (with valid records
//! after it) must stop the server with an error naming the segment file
//! and the offset, since silently dropping acknowledged records after it
//! would lose data; a last record cut short (a crash during its write) must
//! be dropped with a truncation warning, and everything before it served.
//!
//! Relies on one property of the journal's layout only: segments
//! (`shard-<i>/journal-*.seg`) are appended to, so a segment's length is
//! where its last record ends.

use crate::check::{check_all, check_identical};
use crate::http::{admin_ok, decimal, Conn};
use crate::model::Model;
use crate::server::{Server, StartError};
use crate::{create_users, traffic_at_rest, verify, Args, Failure};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Operations that fill the journal before it is damaged.
const OPS: usize = 120;
/// A record is at most this long, so the error's offset (where the bad
/// record starts) is at most this far before the flipped byte.
const RECORD_BYTES_MAX: u64 = 1 << 20;
/// The seed of the traffic; the test needs no variety.
const SEED: u64 = 0x0c0ffee;

pub fn run(args: &Args, dir: &Path) -> Result<(), Failure> {
    let fail = |message: String| Failure {
        cycle: None,
        data_dir: dir.to_path_buf(),
        message: format!("corruption: {message}"),
    };
    scenario(args, dir).map_err(fail)
}

fn scenario(args: &Args, dir: &Path) -> Result<(), String> {
    let server = Server::start(dir, 0, args.options).map_err(|e| format!("start: {e}"))?;
    let mut model = Model::default();
    create_users(&mut model, server.admin, "corrupt")?;
    traffic_at_rest(&mut model, &server, SEED, OPS)?;
    let before = verify(&mut model, &server)?;
    let sizes_before = segments(dir)?;
    let mut admin = Conn::open(server.admin).map_err(|e| e.0)?;
    let last = json!({"asset": "USDT", "amount": decimal(123_456_789)});
    let path = format!("/admin/v1/users/{}/deposits", model.users[0].user_id);
    admin_ok(&mut admin, "POST", &path, Some(&last))?;
    let sizes_after = segments(dir)?;
    server.kill9();
    let backup = dir.with_extension("backup");
    copy_dir(dir, &backup)?;
    flipped_byte_is_refused(args, dir, &sizes_after)?;
    std::fs::remove_dir_all(dir).map_err(|e| e.to_string())?;
    copy_dir(&backup, dir)?;
    truncated_record_is_dropped(args, dir, &sizes_before, &sizes_after, &model, &before)
}

/// Flips the byte in the middle of the longest segment and expects the
/// start to fail, naming the file and an offset at or before the byte.
fn flipped_byte_is_refused(args: &Args, dir: &Path, sizes: &BTreeMap<PathBuf, u64>) -> Result<(), String> {
    let (path, len) = sizes
        .iter()
        .max_by_key(|(_, len)| **len)
        .filter(|(_, len)| **len >= 2)
        .ok_or(format!("no journal-*.seg with records under {}", dir.display()))?;
    let offset = len / 2;
    let mut bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    bytes[offset as usize] ^= 0xff;
    std::fs::write(path, &bytes).map_err(|e| e.to_string())?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match Server::start(dir, 1, args.options) {
        Ok(server) => {
            let output = server.output();
            Err(format!("started on {} flipped at {offset}:\n{output}", path.display()))
        }
        Err(StartError::Exited { status, output }) => {
            let names_offset = numbers(&output).any(|n| n <= offset && n + RECORD_BYTES_MAX > offset);
            if status.success() || !output.contains(&name) || !names_offset {
                return Err(format!(
                    "flipped byte at {offset} of {}: expected a non-zero exit naming {name} and an offset \
                     in ({}, {offset}]; got {status}:\n{output}",
                    path.display(),
                    offset.saturating_sub(RECORD_BYTES_MAX)
                ));
            }
            Ok(())
        }
        Err(e) => Err(format!("flipped byte: {e}")),
    }
}

/// Cuts the segment the last deposit went to in the middle of that
/// record (segments are appended to, so the record is what the deposit
/// added); the server must start, warn, and serve the state before it.
fn truncated_record_is_dropped(
    args: &Args,
    dir: &Path,
    sizes_before: &BTreeMap<PathBuf, u64>,
    sizes_after: &BTreeMap<PathBuf, u64>,
    model: &Model,
    before: &crate::snapshot::Snapshot,
) -> Result<(), String> {
    let grown: Vec<(&PathBuf, u64, u64)> = sizes_after
        .iter()
        .map(|(p, &after)| (p, sizes_before.get(p).copied().unwrap_or(0), after))
        .filter(|(_, b, a)| a > b)
        .collect();
    if grown.is_empty() {
        return Err("the last deposit grew no segment (are segments preallocated?)".into());
    }
    // Normally one segment, the user's shard's; should the deposit have
    // written to several, each loses the second half of what it added.
    for (path, old, new) in &grown {
        if new - old < 2 {
            return Err(format!("{}: the last record is {} bytes", path.display(), new - old));
        }
        let cut = old + (new - old) / 2;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| e.to_string())?;
        file.set_len(cut).map_err(|e| e.to_string())?;
    }
    let server = Server::start(dir, 2, args.options).map_err(|e| format!("start after truncation: {e}"))?;
    let output = server.output();
    if !output.to_lowercase().contains("truncat") {
        return Err(format!(
            "no truncation warning after cutting {grown:?} in half:\n{output}"
        ));
    }
    let after = crate::snapshot::read_at_rest(server.api, server.admin, model)?;
    check_all(model, &after).map_err(|m| format!("after truncation: {m}"))?;
    check_identical(before, &after).map_err(|m| format!("after truncation: {m}"))?;
    server.kill9();
    Ok(())
}

/// Every `journal-*.seg` under `dir` with its length.
fn segments(dir: &Path) -> Result<BTreeMap<PathBuf, u64>, String> {
    let mut found = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).map_err(|e| format!("{}: {e}", d.display()))? {
            let entry = entry.map_err(|e| e.to_string())?;
            let meta = entry.metadata().map_err(|e| e.to_string())?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if meta.is_dir() {
                stack.push(entry.path());
            } else if name.starts_with("journal-") && name.ends_with(".seg") {
                found.insert(entry.path(), meta.len());
            }
        }
    }
    Ok(found)
}

fn copy_dir(from: &Path, to: &Path) -> Result<(), String> {
    std::fs::create_dir_all(to).map_err(|e| format!("{}: {e}", to.display()))?;
    for entry in std::fs::read_dir(from).map_err(|e| format!("{}: {e}", from.display()))? {
        let entry = entry.map_err(|e| e.to_string())?;
        let target = to.join(entry.file_name());
        if entry.file_type().map_err(|e| e.to_string())?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target).map_err(|e| format!("{}: {e}", target.display()))?;
        }
    }
    Ok(())
}

/// The decimal numbers in `text`.
fn numbers(text: &str) -> impl Iterator<Item = u64> + '_ {
    text.split(|c: char| !c.is_ascii_digit()).filter_map(|s| s.parse().ok())
}
