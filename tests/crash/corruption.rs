//! Damaged journals: a flipped byte inside a segment (with valid records
//! after it) must stop the server with an error naming the segment file
//! and the offset, since silently dropping acknowledged records after it
//! would lose data; a last record cut short (a crash during its write) must
//! be dropped with a truncation warning, and everything before it served.
//!
//! Assumes of the journal's layout only that segments are files named
//! `journal-*.seg` under the data directory and that records are written
//! in order: the bytes a deposit changes are its record, and zero bytes
//! after the data are unwritten space.

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
/// The records of this test (orders, cancels, transfers) are far shorter,
/// so the error's offset (where the bad record starts) is at most this far
/// before the flipped byte.
const RECORD_BYTES_MAX: u64 = 4096;
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
    let segments_before = segments(dir)?;
    let mut admin = Conn::open(server.admin).map_err(|e| e.0)?;
    let last = json!({"asset": "USDT", "amount": decimal(123_456_789)});
    let path = format!("/admin/v1/users/{}/deposits", model.users[0].user_id);
    admin_ok(&mut admin, "POST", &path, Some(&last))?;
    let segments_after = segments(dir)?;
    server.kill9();
    let backup = dir.with_extension("backup");
    copy_dir(dir, &backup)?;
    flipped_byte_is_refused(args, dir, &segments_after)?;
    std::fs::remove_dir_all(dir).map_err(|e| e.to_string())?;
    copy_dir(&backup, dir)?;
    let cuts = last_record(&segments_before, &segments_after)?;
    truncated_record_is_dropped(args, dir, &cuts, &model, &before)
}

/// Where the data of a segment ends: zero bytes after it are taken for
/// space the journal reserved but has not written.
fn data_end(bytes: &[u8]) -> usize {
    bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1)
}

/// Flips the byte in the middle of the largest segment's data and expects
/// the start to fail, naming the file and an offset at or before the byte.
fn flipped_byte_is_refused(args: &Args, dir: &Path, segments: &BTreeMap<PathBuf, Vec<u8>>) -> Result<(), String> {
    let (path, bytes) = segments
        .iter()
        .max_by_key(|(_, bytes)| data_end(bytes))
        .filter(|(_, bytes)| data_end(bytes) >= 2)
        .ok_or(format!("no journal-*.seg with records under {}", dir.display()))?;
    let offset = data_end(bytes) / 2;
    let mut flipped = bytes.clone();
    flipped[offset] ^= 0xff;
    std::fs::write(path, &flipped).map_err(|e| e.to_string())?;
    let offset = offset as u64;
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
            let names_offset = names_offset(&output, &path.display().to_string(), &name, offset);
            if status.success() || !names_offset {
                return Err(format!(
                    "flipped byte at {offset} of {}: expected a non-zero exit and a line naming {name} and \
                     an offset in ({}, {offset}]; got {status}:\n{output}",
                    path.display(),
                    offset.saturating_sub(RECORD_BYTES_MAX)
                ));
            }
            Ok(())
        }
        Err(e) => Err(format!("flipped byte: {e}")),
    }
}

/// Whether a line of `output` names the segment (by `path` or `name`) and
/// an offset at most `RECORD_BYTES_MAX` before `offset`.
fn names_offset(output: &str, path: &str, name: &str, offset: u64) -> bool {
    output.lines().filter(|l| l.contains(name)).any(|l| {
        let rest = l.replace(path, "").replace(name, "");
        let found = numbers(&rest).any(|n| n <= offset && n + RECORD_BYTES_MAX > offset);
        found
    })
}

/// The segments the last deposit wrote to, each with the byte range its
/// record took (from the first byte that changed to the end of the data).
fn last_record(
    before: &BTreeMap<PathBuf, Vec<u8>>,
    after: &BTreeMap<PathBuf, Vec<u8>>,
) -> Result<Vec<(PathBuf, usize, usize)>, String> {
    let mut changed = Vec::new();
    for (path, new) in after {
        let old = before.get(path).map(Vec::as_slice).unwrap_or(&[]);
        let end = data_end(new);
        let first = (0..end).find(|&i| old.get(i) != Some(&new[i]));
        if let Some(first) = first {
            changed.push((path.clone(), first, end));
        }
    }
    if changed.is_empty() {
        return Err("the last deposit changed no segment".into());
    }
    if let Some((path, first, end)) = changed.iter().find(|(_, first, end)| end - first < 2) {
        return Err(format!("{}: the last record is {} bytes", path.display(), end - first));
    }
    Ok(changed)
}

/// Cuts each segment the last deposit wrote to in the middle of that
/// record (normally one, the user's shard's); the server must start, warn
/// about the truncation, and serve exactly the state before the deposit.
fn truncated_record_is_dropped(
    args: &Args,
    dir: &Path,
    cuts: &[(PathBuf, usize, usize)],
    model: &Model,
    before: &crate::snapshot::Snapshot,
) -> Result<(), String> {
    for (path, first, end) in cuts {
        let cut = first + (end - first) / 2;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| e.to_string())?;
        file.set_len(cut as u64).map_err(|e| e.to_string())?;
    }
    let server = Server::start(dir, 2, args.options).map_err(|e| format!("start after truncation: {e}"))?;
    let output = server.output();
    if !output.to_lowercase().contains("truncat") {
        return Err(format!(
            "no truncation warning after cutting {cuts:?} in half:\n{output}"
        ));
    }
    let after = crate::snapshot::read_at_rest(server.api, server.admin, model)?;
    check_all(model, &after).map_err(|m| format!("after truncation: {m}"))?;
    check_identical(before, &after).map_err(|m| format!("after truncation: {m}"))?;
    server.kill9();
    Ok(())
}

/// Every `journal-*.seg` under `dir` with its bytes.
fn segments(dir: &Path) -> Result<BTreeMap<PathBuf, Vec<u8>>, String> {
    let mut found = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).map_err(|e| format!("{}: {e}", d.display()))? {
            let entry = entry.map_err(|e| e.to_string())?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.file_type().map_err(|e| e.to_string())?.is_dir() {
                stack.push(entry.path());
            } else if name.starts_with("journal-") && name.ends_with(".seg") {
                let bytes = std::fs::read(entry.path()).map_err(|e| e.to_string())?;
                found.insert(entry.path(), bytes);
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

/// The numbers in `text`, decimal or `0x` hexadecimal.
fn numbers(text: &str) -> impl Iterator<Item = u64> + '_ {
    text.split(|c: char| !c.is_ascii_alphanumeric())
        .filter_map(|word| match word.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16).ok(),
            None => word.parse().ok(),
        })
}

/// The helpers above on made-up segments and messages, so that their
/// mistakes do not wait for a journal to show.
pub fn helpers_hold() -> Result<(), String> {
    let a = PathBuf::from("/d/shard-0/journal-00000001.seg");
    let b = PathBuf::from("/d/shard-1/journal-00000001.seg");
    let before = BTreeMap::from([(a.clone(), vec![7, 7, 7, 0, 0])]);
    let after = BTreeMap::from([(a.clone(), vec![7, 7, 7, 9, 9, 9, 0]), (b.clone(), vec![5, 5])]);
    let path = "/d/shard-0/journal-00000001.seg";
    let name = "journal-00000001.seg";
    let table = [
        (data_end(&[1, 2, 0, 0]), 2),
        (data_end(&[0, 0]), 0),
        (
            usize::from(names_offset(
                &format!("tradsys: {path}: bad record at offset 4000"),
                path,
                name,
                4010,
            )),
            1,
        ),
        (
            usize::from(names_offset(
                &format!("{path}: crc mismatch at 0xfa0"),
                path,
                name,
                4000,
            )),
            1,
        ),
        (
            usize::from(names_offset(
                &format!("{path}: corrupt\nshard 0 core 0"),
                path,
                name,
                4000,
            )),
            0,
        ),
        (
            usize::from(names_offset(&format!("{path}: offset 9000"), path, name, 4000)),
            0,
        ),
        (
            usize::from(names_offset("journal-00000002.seg: offset 4000", path, name, 4000)),
            0,
        ),
    ];
    for (i, (actual, expected)) in table.into_iter().enumerate() {
        if actual != expected {
            return Err(format!("corruption helper case {i}: expected {expected}, got {actual}"));
        }
    }
    let cuts = last_record(&before, &after)?;
    if cuts != [(a, 3, 6), (b, 0, 2)] {
        return Err(format!("last_record: {cuts:?}"));
    }
    Ok(())
}
