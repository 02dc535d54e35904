//! Snapshot files and the data directory's layout.
//!
//! ```text
//! <data-dir>/CURRENT                      generation and shard count in use
//! <data-dir>/shard-<i>/gen-<g>/journal-*.seg   the journal (see `journal`)
//! <data-dir>/shard-<i>/gen-<g>/snapshot-<cut>.snap
//! ```
//!
//! Every start-up recovers the state, writes it as the snapshots of a new
//! generation with empty journals, switches CURRENT to it and deletes the
//! old generation; a crash at any point of that leaves CURRENT on a
//! generation that recovers to the same state. Within a generation the
//! snapshot thread adds snapshot sets: one file per shard, all at the same
//! cut (a global durable epoch), each saying which journal records it
//! covers and which engine messages its shard had sent that the receiver
//! had not yet journaled.
//!
//! A snapshot file is `MAGIC`, a header, an rkyv body and a CRC32C of all
//! that; it is written to a temporary name, synced, renamed and its
//! directory synced, so a reader sees a whole file or none.
//! **Invariant:** a snapshot is trusted only after its CRC and rkyv's
//! validation both pass.

use super::image::{InFlight, ShardImage};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

pub(crate) const MAGIC: &[u8; 8] = b"TSNAP001";
const HEADER_BYTES: usize = 8 + 5 * 8;
const CURRENT_FILE: &str = "CURRENT";
const CURRENT_FORMAT: &str = "tradsys-data 1";

/// What one snapshot file holds.
pub struct Snapshot {
    pub image: ShardImage,
    /// Messages of this shard's links still in flight at the cut.
    pub in_flight: Vec<InFlight>,
}

/// Where a snapshot sits in its shard's history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotHeader {
    /// The global durable epoch the snapshot set was cut at.
    pub cut: u64,
    /// The last journal record the snapshot includes (0: none).
    pub covered_lsn: u64,
    pub shard: u32,
    pub shards: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {problem}")]
    Invalid { path: PathBuf, problem: String },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The data directory's generation and shard count; `None` when empty.
pub fn read_current(data_dir: &Path) -> Result<Option<(u64, u32)>, SnapshotError> {
    let path = data_dir.join(CURRENT_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(&path)(e)),
    };
    let invalid = |problem: &str| SnapshotError::Invalid {
        path: path.clone(),
        problem: problem.to_string(),
    };
    let mut lines = text.lines();
    if lines.next() != Some(CURRENT_FORMAT) {
        return Err(invalid("not a tradsys data directory of a known format"));
    }
    let mut field = |name: &str| -> Result<u64, SnapshotError> {
        lines
            .next()
            .and_then(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| invalid(&format!("missing or bad `{}` line", name.trim())))
    };
    let generation = field("generation ")?;
    let shards = field("shards ")?;
    Ok(Some((generation, shards as u32)))
}

/// Points the data directory at `generation` (atomically).
pub fn write_current(data_dir: &Path, generation: u64, shards: u32) -> Result<(), SnapshotError> {
    let text = format!("{CURRENT_FORMAT}\ngeneration {generation}\nshards {shards}\n");
    write_atomically(data_dir, CURRENT_FILE, text.as_bytes())
}

pub fn shard_dir(data_dir: &Path, shard: u32) -> PathBuf {
    data_dir.join(format!("shard-{shard}"))
}

pub fn generation_dir(data_dir: &Path, shard: u32, generation: u64) -> PathBuf {
    shard_dir(data_dir, shard).join(format!("gen-{generation}"))
}

fn file_name(cut: u64) -> String {
    format!("snapshot-{cut:020}.snap")
}

/// Writes one shard's snapshot into `dir` and syncs it. The body is the
/// image's length, the image and the in-flight messages, each rkyv-encoded.
pub fn write_parts(
    dir: &Path,
    header: SnapshotHeader,
    image: &ShardImage,
    in_flight: &[InFlight],
) -> Result<(), SnapshotError> {
    let encode_error = |e: rkyv::rancor::Error| SnapshotError::Invalid {
        path: dir.to_path_buf(),
        problem: format!("cannot encode snapshot: {e}"),
    };
    let image = rkyv::to_bytes::<rkyv::rancor::Error>(image).map_err(encode_error)?;
    let in_flight = rkyv::to_bytes::<rkyv::rancor::Error>(&in_flight.to_vec()).map_err(encode_error)?;
    let body_len = 8 + image.len() + in_flight.len();
    let mut bytes = Vec::with_capacity(HEADER_BYTES + body_len + 4);
    bytes.extend_from_slice(MAGIC);
    for value in [
        header.cut,
        header.covered_lsn,
        u64::from(header.shard),
        u64::from(header.shards),
        body_len as u64,
    ] {
        bytes.extend_from_slice(&value.to_le_bytes());
    }
    bytes.extend_from_slice(&(image.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&image);
    bytes.extend_from_slice(&in_flight);
    let crc = crc32c::crc32c(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    write_atomically(dir, &file_name(header.cut), &bytes)
}

/// Writes `name` in `dir` as temp file, sync, rename, directory sync. A
/// failure removes the temporary file: a full disk gets its room back.
fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), SnapshotError> {
    fs::create_dir_all(dir).map_err(io_error(dir))?;
    let temp = dir.join(format!("{name}.tmp"));
    let written = fs::File::create(&temp).and_then(|mut file| {
        if !crate::journal::faults::snapshot_write_allowed() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                "no space left on device (injected by TRADSYS_TEST_FAIL_SNAPSHOT_WRITES_AFTER)",
            ));
        }
        file.write_all(bytes)?;
        file.sync_all()
    });
    if let Err(e) = written {
        let _ = fs::remove_file(&temp);
        return Err(io_error(&temp)(e));
    }
    let path = dir.join(name);
    fs::rename(&temp, &path).map_err(io_error(&path))?;
    sync_dir(dir)
}

pub fn sync_dir(dir: &Path) -> Result<(), SnapshotError> {
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io_error(dir))
}

/// The cuts of the snapshot files in `dir`, ascending.
pub fn cuts(dir: &Path) -> Result<Vec<u64>, SnapshotError> {
    let mut cuts = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(cuts),
        Err(e) => return Err(io_error(dir)(e)),
    };
    for entry in entries {
        let name = entry.map_err(io_error(dir))?.file_name();
        let name = name.to_string_lossy();
        if let Some(cut) = name
            .strip_prefix("snapshot-")
            .and_then(|n| n.strip_suffix(".snap"))
            .and_then(|n| n.parse().ok())
        {
            cuts.push(cut);
        }
    }
    cuts.sort_unstable();
    Ok(cuts)
}

/// Reads and validates the snapshot of `cut` in `dir`.
pub fn read(dir: &Path, cut: u64) -> Result<(SnapshotHeader, Snapshot), SnapshotError> {
    let path = dir.join(file_name(cut));
    let bytes = fs::read(&path).map_err(io_error(&path))?;
    let (header, snapshot) = decode_file(&bytes).map_err(|problem| SnapshotError::Invalid {
        path: path.clone(),
        problem: problem.into(),
    })?;
    if header.cut != cut {
        return Err(SnapshotError::Invalid {
            path,
            problem: "header does not match the file".into(),
        });
    }
    Ok((header, snapshot))
}

/// Validates a snapshot file's bytes: magic, CRC, header, then rkyv's
/// validation of both archives. Nothing of the body is used unless all of
/// that passes.
pub fn decode_file(bytes: &[u8]) -> Result<(SnapshotHeader, Snapshot), std::borrow::Cow<'static, str>> {
    if bytes.len() < HEADER_BYTES + 4 || &bytes[..8] != MAGIC {
        return Err("not a snapshot file".into());
    }
    let (content, crc) = bytes.split_at(bytes.len() - 4);
    let stored = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    if crc32c::crc32c(content) != stored {
        return Err("checksum mismatch".into());
    }
    let word = |i: usize| {
        let at = 8 + i * 8;
        u64::from_le_bytes(content[at..at + 8].try_into().unwrap_or([0; 8]))
    };
    let header = SnapshotHeader {
        cut: word(0),
        covered_lsn: word(1),
        shard: word(2) as u32,
        shards: word(3) as u32,
    };
    let body = &content[HEADER_BYTES..];
    if word(4) != body.len() as u64 || body.len() < 8 {
        return Err("header does not match the file".into());
    }
    let image_len = u64::from_le_bytes(body[..8].try_into().unwrap_or([0xff; 8]));
    let image_end = usize::try_from(image_len)
        .ok()
        .and_then(|l| l.checked_add(8))
        .filter(|&e| e <= body.len());
    let image_end = image_end.ok_or("image length beyond the file")?;
    let image = decode::<ShardImage>(&body[8..image_end]).map_err(|e| format!("bad image: {e}"))?;
    let in_flight = decode::<Vec<InFlight>>(&body[image_end..]).map_err(|e| format!("bad in-flight list: {e}"))?;
    Ok((header, Snapshot { image, in_flight }))
}

fn decode<T>(bytes: &[u8]) -> Result<T, rkyv::rancor::Error>
where
    T: rkyv::Archive,
    T::Archived: for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'a, rkyv::rancor::Error>>
        + rkyv::Deserialize<T, rkyv::api::high::HighDeserializer<rkyv::rancor::Error>>,
{
    let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(bytes.len());
    aligned.extend_from_slice(bytes);
    rkyv::from_bytes::<T, rkyv::rancor::Error>(&aligned)
}

/// Deletes the snapshots in `dir` older than `cut`.
pub fn delete_before(dir: &Path, cut: u64) -> Result<(), SnapshotError> {
    for old in cuts(dir)?.into_iter().filter(|&c| c < cut) {
        let path = dir.join(file_name(old));
        fs::remove_file(&path).map_err(io_error(&path))?;
    }
    Ok(())
}
