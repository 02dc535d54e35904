//! The shard's journal writer: in-memory appends, group commits to disk.
//!
//! [`Writer::append`] only encodes a frame into the pending buffer and hands
//! out its lsn; it never waits. [`Writer::commit`] takes the whole pending
//! buffer (appends made while it waits go to the next batch), adds a seal,
//! writes it with direct I/O and fdatasyncs. Writes are whole 4 KiB blocks at
//! block offsets: the last, partial block is kept in memory and written again,
//! grown, by the next commit (the bytes already durable are rewritten
//! unchanged, so a torn sector still holds them). A segment is zero-filled
//! and synced before it is used, so a commit's fdatasync flushes data and no
//! metadata; the next one is prepared in the background as `journal-spare.tmp`
//! and renamed into place at the roll.
//!
//! **Invariant:** one commit at a time (the shard's committer task); a commit
//! dropped half-way or failed leaves the writer unusable, because what reached
//! the disk is unknown (and a failed fdatasync cannot be retried). The one
//! exception is a batch that needs the next segment when the disk has no
//! room for it: it is refused before any of it is written, and waits whole
//! (`JournalError::NoSpace`, [`Writer::space_low`]).
//! **Invariant:** a record's epoch is above every epoch already sealed, or
//! the seal would lie; `append` asserts it.

use std::cell::{Cell, RefCell};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use glommio::io::{BufferedFile, DmaFile, OpenOptions};
use glommio::{GlommioError, Task};

use super::frame::{self, Kind};
use super::scan::{sync_dir, Tail};
use super::{check_segment_bytes, segment_name, JournalError, JOURNAL_BLOCK_BYTES, JOURNAL_RECORD_BYTES_MAX};
use super::{JOURNAL_HEADER_BYTES, JOURNAL_SPARE_NAME, JOURNAL_WRITE_BYTES_MAX};

/// What one commit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CommitStats {
    /// Records in the batch.
    pub records: u64,
    /// Frame bytes in the batch, its seal included (0 when nothing was due).
    pub frame_bytes: u64,
    /// Bytes handed to the disk: frames, the rewritten partial block, padding.
    pub write_bytes: u64,
    /// The lsn the next record gets; every lower lsn is written.
    pub next_lsn: u64,
    /// Segments created by this commit.
    pub segments_created: u32,
    /// Whether the commit ended with fdatasync.
    pub synced: bool,
}

/// The journal writer of one shard; `!Send`, shared as `Rc<Writer>`.
pub struct Writer {
    dir: PathBuf,
    segment_bytes: u64,
    pending: RefCell<Pending>,
    /// Taken by the running commit, so no borrow is held across an await.
    disk: Cell<Option<Disk>>,
    /// The largest epoch a commit has started to seal.
    sealing_epoch: Cell<u64>,
    /// The largest epoch whose seal is written (and synced, if asked).
    sealed_epoch: Cell<u64>,
    failed: Cell<bool>,
    /// The next segment could not be made for lack of disk space (see
    /// [`Writer::space_low`]).
    space_low: Cell<bool>,
}

struct Pending {
    frames: Vec<u8>,
    records: u64,
    next_lsn: u64,
    /// The previous batch's buffer, kept for its capacity.
    spare: Vec<u8>,
}

impl Writer {
    /// Continues the journal in `dir` after what [`super::scan`] found (a
    /// torn tail must be truncated first); creates the directory and the
    /// first segment for an empty journal. The tail must come from a scan
    /// that ran to the end: writing continues at its offset, over anything
    /// after it.
    pub async fn open(dir: &Path, tail: &Tail, segment_bytes: u64) -> Result<Writer, JournalError> {
        Writer::open_with(dir, tail, segment_bytes, true).await
    }

    /// [`Writer::open`], choosing whether to try O_DIRECT at all: the
    /// server's `journal_direct_io`, and tests that take the page-cache path
    /// on filesystems that would allow O_DIRECT.
    pub async fn open_with(dir: &Path, tail: &Tail, segment_bytes: u64, direct: bool) -> Result<Writer, JournalError> {
        check_segment_bytes(segment_bytes)?;
        if let Some((file, offset)) = &tail.torn {
            return Err(JournalError::NotTruncated {
                file: file.clone(),
                offset: *offset,
            });
        }
        std::fs::create_dir_all(dir).map_err(JournalError::io("creating", dir))?;
        let disk = match &tail.segment {
            Some(path) => Disk::reopen(path, tail.end_offset, segment_bytes, direct).await?,
            None => Disk::create(dir, tail.next_lsn, segment_bytes, direct, Spare::Idle).await?,
        };
        let pending = Pending {
            frames: Vec::new(),
            records: 0,
            next_lsn: tail.next_lsn,
            spare: Vec::new(),
        };
        Ok(Writer {
            dir: dir.to_path_buf(),
            segment_bytes,
            pending: RefCell::new(pending),
            disk: Cell::new(Some(disk)),
            sealing_epoch: Cell::new(tail.sealed_epoch),
            sealed_epoch: Cell::new(tail.sealed_epoch),
            failed: Cell::new(false),
            space_low: Cell::new(false),
        })
    }

    /// Whether the disk had no room for the next segment at the last
    /// attempt. The current segment still takes what is pending (a spare
    /// is prepared once it is half full), so new work should stop here
    /// and resume when this clears: [`Writer::tend_spare`] tries again.
    pub fn space_low(&self) -> bool {
        self.space_low.get()
    }

    /// Looks after the next segment between commits: starts preparing it
    /// once the current one is half full, notes how an attempt ended, and
    /// after one that found no space tries again every
    /// `SPARE_RETRY_MS`. Does nothing while a commit runs. Errors other
    /// than a lack of space poison the writer, as a failed commit does.
    pub async fn tend_spare(&self) -> Result<(), JournalError> {
        if self.failed.get() {
            return Err(JournalError::Failed);
        }
        let Some(mut disk) = self.disk.take() else {
            return Ok(());
        };
        let result = disk.tend_spare(&self.dir, self.segment_bytes).await;
        self.space_low.set(matches!(disk.spare, Spare::NoSpace(_)));
        self.finish(disk, result)
    }

    /// Adds a record to the next batch and returns its lsn. Only copies.
    pub fn append(&self, epoch: u64, payload: &[u8]) -> u64 {
        assert!(
            payload.len() <= JOURNAL_RECORD_BYTES_MAX,
            "journal record of {} bytes",
            payload.len()
        );
        assert!(
            epoch > self.sealing_epoch.get(),
            "journal record of epoch {epoch} after its seal"
        );
        let mut pending = self.pending.borrow_mut();
        let lsn = pending.next_lsn;
        frame::encode(&mut pending.frames, Kind::Record, lsn, epoch, payload);
        pending.next_lsn += 1;
        pending.records += 1;
        lsn
    }

    /// Bytes waiting for the next commit.
    pub fn pending_bytes(&self) -> usize {
        self.pending.borrow().frames.len()
    }

    /// Records waiting for the next commit.
    pub fn pending_records(&self) -> u64 {
        self.pending.borrow().records
    }

    /// The lsn the next appended record gets.
    pub fn next_lsn(&self) -> u64 {
        self.pending.borrow().next_lsn
    }

    /// The largest epoch whose seal a finished commit wrote.
    pub fn sealed_epoch(&self) -> u64 {
        self.sealed_epoch.get()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes every pending record and a seal for `sealed_epoch`, then
    /// fdatasyncs when `sync`. Does nothing when there is no record and the
    /// epoch is already sealed.
    pub async fn commit(&self, sealed_epoch: u64, sync: bool) -> Result<CommitStats, JournalError> {
        if self.failed.get() {
            return Err(JournalError::Failed);
        }
        let disk = self.disk.take();
        assert!(disk.is_some(), "journal commits overlap, or one was dropped half-way");
        let Some(mut disk) = disk else {
            return Err(JournalError::Failed);
        };
        assert!(
            sealed_epoch >= self.sealing_epoch.get(),
            "journal seal epoch goes backwards"
        );
        let (mut batch, records, next_lsn) = self.take_pending();
        if records == 0 && sealed_epoch == self.sealed_epoch.get() {
            self.give_back(batch);
            // An earlier unsynced commit still needs the fdatasync asked for now.
            let synced = sync && disk.unsynced;
            let result = if synced { disk.sync().await } else { Ok(()) };
            return self
                .finish(disk, result.map(|()| (0, 0)))
                .map(|(write_bytes, segments_created)| CommitStats {
                    next_lsn,
                    write_bytes,
                    segments_created,
                    synced,
                    ..CommitStats::default()
                });
        }
        // A batch that will cross into the next segment needs it first:
        // without room for it, nothing of the batch is written and the
        // batch waits, whole, for the next attempt.
        let seal_bytes = JOURNAL_HEADER_BYTES as u64;
        if disk.end() + batch.len() as u64 + seal_bytes > self.segment_bytes {
            if let Err(e) = disk.ensure_spare(&self.dir, self.segment_bytes).await {
                if e.is_no_space() {
                    self.space_low.set(true);
                    self.restore_pending(batch, records);
                    self.disk.set(Some(disk));
                    return Err(e);
                }
                return self.finish(disk, Err(e));
            }
        }
        self.sealing_epoch.set(sealed_epoch);
        frame::encode(&mut batch, Kind::Seal, next_lsn, sealed_epoch, &[]);
        let result = disk.write_batch(&batch, sync, &self.dir, self.segment_bytes).await;
        let frame_bytes = batch.len() as u64;
        self.give_back(batch);
        let (write_bytes, segments_created) = self.finish(disk, result)?;
        self.sealed_epoch.set(sealed_epoch);
        Ok(CommitStats {
            records,
            frame_bytes,
            write_bytes,
            next_lsn,
            segments_created,
            synced: sync,
        })
    }

    /// Puts the disk back after a commit, or poisons the writer if it failed.
    fn finish<T>(&self, disk: Disk, result: Result<T, JournalError>) -> Result<T, JournalError> {
        match result {
            Ok(value) => {
                self.disk.set(Some(disk));
                Ok(value)
            }
            Err(e) => {
                self.failed.set(true);
                Err(e)
            }
        }
    }

    /// Whether the current segment is written with direct I/O.
    #[cfg(test)]
    pub(super) fn is_direct(&self) -> bool {
        let disk = self.disk.take();
        let direct = disk.as_ref().is_some_and(Disk::is_direct);
        self.disk.set(disk);
        direct
    }

    fn take_pending(&self) -> (Vec<u8>, u64, u64) {
        let mut pending = self.pending.borrow_mut();
        let spare = std::mem::take(&mut pending.spare);
        let batch = std::mem::replace(&mut pending.frames, spare);
        let records = std::mem::take(&mut pending.records);
        (batch, records, pending.next_lsn)
    }

    fn give_back(&self, mut batch: Vec<u8>) {
        batch.clear();
        self.pending.borrow_mut().spare = batch;
    }

    /// Puts a batch that could not be written back in front of what was
    /// appended since (its frames have the lower lsns).
    fn restore_pending(&self, mut batch: Vec<u8>, records: u64) {
        let mut pending = self.pending.borrow_mut();
        batch.extend_from_slice(&pending.frames);
        pending.frames = batch;
        pending.records += records;
    }
}

/// How long after an attempt that found no space the next segment is
/// tried again.
const SPARE_RETRY_MS: u64 = 500;

/// The next segment.
enum Spare {
    /// Not started: the current segment is less than half full.
    Idle,
    /// Being created and zero-filled by a task of its own.
    Preparing(Task<Result<(SegmentFile, bool), JournalError>>),
    /// Created, synced and waiting for the roll.
    Ready(SegmentFile, bool),
    /// The last attempt found no space, at this time.
    NoSpace(std::time::Instant),
}

/// The segment being written and the bytes not yet final on disk.
struct Disk {
    file: SegmentFile,
    path: PathBuf,
    /// Block-aligned offset where `out` starts.
    written: u64,
    /// The partial last block followed by the frames of the running commit.
    out: Vec<u8>,
    /// Whether new segments try O_DIRECT (false once the filesystem refused).
    direct: bool,
    /// Whether the segment has writes no fdatasync has covered yet.
    unsynced: bool,
    /// The next segment, created and zero-filled in the background once
    /// this one is half full, so a roll rarely waits for it.
    spare: Spare,
}

impl Disk {
    /// Starts the segment of `first_lsn`, from the spare when one is being
    /// prepared, else preparing it here.
    async fn create(
        dir: &Path,
        first_lsn: u64,
        segment_bytes: u64,
        direct: bool,
        spare: Spare,
    ) -> Result<Disk, JournalError> {
        let path = dir.join(segment_name(first_lsn));
        let spare = match spare {
            Spare::Preparing(task) => Some(task.await?),
            Spare::Ready(file, direct) => Some((file, direct)),
            Spare::Idle | Spare::NoSpace(_) => None,
        };
        let (file, direct) = match spare {
            Some((file, direct)) => {
                let spare_path = dir.join(JOURNAL_SPARE_NAME);
                std::fs::rename(&spare_path, &path).map_err(JournalError::io("renaming", &spare_path))?;
                (file, direct)
            }
            None => prepare_segment(path.clone(), segment_bytes, direct).await?,
        };
        sync_dir(dir)?;
        Ok(Disk {
            file,
            path,
            written: 0,
            out: Vec::new(),
            direct,
            unsynced: false,
            spare: Spare::Idle,
        })
    }

    async fn reopen(path: &Path, end_offset: u64, segment_bytes: u64, direct: bool) -> Result<Disk, JournalError> {
        let mut direct = direct;
        let file = SegmentFile::open(path, false, &mut direct).await?;
        file.pre_allocate(path, segment_bytes).await?;
        file.fdatasync(path).await?;
        let written = align_down(end_offset);
        let mut out = vec![0; (end_offset - written) as usize];
        std::fs::File::open(path)
            .and_then(|f| f.read_exact_at(&mut out, written))
            .map_err(JournalError::io("reading", path))?;
        Ok(Disk {
            file,
            path: path.to_path_buf(),
            written,
            out,
            direct,
            unsynced: false,
            spare: Spare::Idle,
        })
    }

    #[cfg(test)]
    fn is_direct(&self) -> bool {
        matches!(self.file, SegmentFile::Dma(_))
    }

    fn end(&self) -> u64 {
        self.written + self.out.len() as u64
    }

    /// Writes the frames of `batch`, rolling to new segments as they fill.
    /// Returns bytes written and segments created.
    async fn write_batch(
        &mut self,
        batch: &[u8],
        sync: bool,
        dir: &Path,
        segment_bytes: u64,
    ) -> Result<(u64, u32), JournalError> {
        let (mut write_bytes, mut created, mut pos) = (0, 0, 0);
        while pos < batch.len() {
            let frame = frame::decode(&batch[pos..]);
            assert!(frame.is_ok(), "journal frame damaged in memory: {frame:?}");
            let Ok(frame) = frame else {
                return Err(JournalError::Failed);
            };
            if self.end() + frame.len() as u64 > segment_bytes {
                write_bytes += self.flush().await?;
                self.roll(dir, frame.lsn, segment_bytes).await?;
                created += 1;
            }
            self.out.extend_from_slice(&batch[pos..pos + frame.len()]);
            pos += frame.len();
            if self.out.len() >= JOURNAL_WRITE_BYTES_MAX {
                write_bytes += self.flush().await?;
            }
        }
        write_bytes += self.flush().await?;
        if sync {
            self.sync().await?;
        }
        self.tend_spare(dir, segment_bytes).await?;
        Ok((write_bytes, created))
    }

    /// See [`Writer::tend_spare`].
    async fn tend_spare(&mut self, dir: &Path, segment_bytes: u64) -> Result<(), JournalError> {
        if let Spare::Preparing(task) = &mut self.spare {
            if let Some(outcome) = futures_lite::future::poll_once(task).await {
                self.spare = self.settle_spare(dir, outcome)?;
            }
        }
        let due = match self.spare {
            Spare::Idle => self.end() * 2 > segment_bytes,
            Spare::NoSpace(at) => at.elapsed().as_millis() as u64 >= SPARE_RETRY_MS,
            Spare::Preparing(_) | Spare::Ready(..) => false,
        };
        if due {
            let spare = prepare_segment(dir.join(JOURNAL_SPARE_NAME), segment_bytes, self.direct);
            self.spare = Spare::Preparing(glommio::spawn_local(spare));
        }
        Ok(())
    }

    /// Makes sure the next segment exists, waiting for it or making it
    /// here; a lack of space is returned (and remembered), nothing else
    /// changes.
    async fn ensure_spare(&mut self, dir: &Path, segment_bytes: u64) -> Result<(), JournalError> {
        let outcome = match std::mem::replace(&mut self.spare, Spare::Idle) {
            Spare::Ready(file, direct) => Ok((file, direct)),
            Spare::Preparing(task) => task.await,
            // Not again before its time: `tend_spare` tries then.
            Spare::NoSpace(at) if (at.elapsed().as_millis() as u64) < SPARE_RETRY_MS => {
                self.spare = Spare::NoSpace(at);
                return Err(JournalError::NoSpace {
                    path: dir.join(JOURNAL_SPARE_NAME),
                });
            }
            Spare::Idle | Spare::NoSpace(_) => {
                prepare_segment(dir.join(JOURNAL_SPARE_NAME), segment_bytes, self.direct).await
            }
        };
        self.spare = self.settle_spare(dir, outcome)?;
        match self.spare {
            Spare::NoSpace(_) => Err(JournalError::NoSpace {
                path: dir.join(JOURNAL_SPARE_NAME),
            }),
            _ => Ok(()),
        }
    }

    /// What an attempt at the next segment leaves: the segment, or after a
    /// lack of space the time of the attempt (and no half-made file).
    fn settle_spare(
        &self,
        dir: &Path,
        outcome: Result<(SegmentFile, bool), JournalError>,
    ) -> Result<Spare, JournalError> {
        match outcome {
            Ok((file, direct)) => Ok(Spare::Ready(file, direct)),
            Err(e) if e.is_no_space() => {
                let _ = std::fs::remove_file(dir.join(JOURNAL_SPARE_NAME));
                Ok(Spare::NoSpace(std::time::Instant::now()))
            }
            Err(e) => Err(e),
        }
    }

    async fn sync(&mut self) -> Result<(), JournalError> {
        self.file.fdatasync(&self.path).await?;
        self.unsynced = false;
        Ok(())
    }

    /// Writes `out` as whole blocks and keeps its partial last block.
    async fn flush(&mut self) -> Result<u64, JournalError> {
        let padded = align_up(self.out.len() as u64) as usize;
        self.unsynced |= padded > 0;
        let mut at = 0;
        while at < padded {
            let len = JOURNAL_WRITE_BYTES_MAX.min(padded - at);
            let data = &self.out[at..self.out.len().min(at + len)];
            self.file
                .write_at(&self.path, data, len, self.written + at as u64)
                .await?;
            at += len;
        }
        let full = align_down(self.out.len() as u64);
        self.out.drain(..full as usize);
        self.written += full;
        Ok(padded as u64)
    }

    /// Makes the current segment durable and starts the next at `first_lsn`.
    async fn roll(&mut self, dir: &Path, first_lsn: u64, segment_bytes: u64) -> Result<(), JournalError> {
        self.file.fdatasync(&self.path).await?;
        let spare = std::mem::replace(&mut self.spare, Spare::Idle);
        let next = Disk::create(dir, first_lsn, segment_bytes, self.direct, spare).await?;
        let old = std::mem::replace(self, next);
        old.file.close(&old.path).await
    }
}

/// Creates a segment at `path`, zero-filled and synced. Writing the zeros
/// (after fallocate, for contiguous extents) matters: fallocate alone leaves
/// unwritten extents, and converting them makes every commit's fdatasync
/// also commit the filesystem journal (ext4: 5 ms instead of 0.2 ms).
/// Returns whether O_DIRECT is still on.
async fn prepare_segment(path: PathBuf, segment_bytes: u64, direct: bool) -> Result<(SegmentFile, bool), JournalError> {
    let mut direct = direct;
    let file = SegmentFile::open(&path, true, &mut direct).await?;
    file.pre_allocate(&path, segment_bytes).await?;
    let zeros = vec![0; JOURNAL_WRITE_BYTES_MAX];
    let mut at = 0;
    while at < segment_bytes {
        let len = JOURNAL_WRITE_BYTES_MAX.min((segment_bytes - at) as usize);
        file.write_at(&path, &zeros[..len], len, at).await?;
        at += len as u64;
    }
    file.fdatasync(&path).await?;
    Ok((file, direct))
}

/// A segment file: O_DIRECT when the filesystem allows, else buffered.
enum SegmentFile {
    Dma(DmaFile),
    Buffered(BufferedFile),
}

impl SegmentFile {
    async fn open(path: &Path, create: bool, direct: &mut bool) -> Result<SegmentFile, JournalError> {
        let mut options = OpenOptions::new();
        // A segment is only created under a fresh name or as the spare, whose
        // leftover from a crash is worthless.
        options.read(true).write(true).create(create).truncate(create);
        if *direct {
            match options.dma_open(path).await {
                Ok(file) if JOURNAL_BLOCK_BYTES as u64 % file.alignment() == 0 => return Ok(SegmentFile::Dma(file)),
                Ok(file) => drop(file.close().await),
                Err(e) if os_error(&e) != Some(libc::EINVAL) => return Err(glommio_error("opening", path, e)),
                Err(_) => {}
            }
            *direct = false;
            eprintln!(
                "journal: {} refuses O_DIRECT; writing through the page cache",
                path.display()
            );
        }
        let file = options
            .buffered_open(path)
            .await
            .map_err(|e| glommio_error("opening", path, e))?;
        Ok(SegmentFile::Buffered(file))
    }

    /// Writes `data` followed by zeros up to `len` bytes at `pos`.
    async fn write_at(&self, path: &Path, data: &[u8], len: usize, pos: u64) -> Result<(), JournalError> {
        assert!(data.len() <= len && len % JOURNAL_BLOCK_BYTES == 0 && pos % JOURNAL_BLOCK_BYTES as u64 == 0);
        let written = match self {
            SegmentFile::Dma(file) => {
                let mut buf = file.alloc_dma_buffer(len);
                let bytes = buf.as_bytes_mut();
                bytes[..data.len()].copy_from_slice(data);
                bytes[data.len()..].fill(0);
                file.write_at(buf, pos).await
            }
            SegmentFile::Buffered(file) => {
                let mut buf = Vec::with_capacity(len);
                buf.extend_from_slice(data);
                buf.resize(len, 0);
                file.write_at(buf, pos).await
            }
        };
        match written.map_err(|e| glommio_error("writing", path, e))? {
            n if n == len => Ok(()),
            n => Err(JournalError::Io {
                op: "writing",
                path: path.to_path_buf(),
                source: std::io::Error::new(std::io::ErrorKind::WriteZero, format!("short write: {n} of {len}")),
            }),
        }
    }

    async fn fdatasync(&self, path: &Path) -> Result<(), JournalError> {
        if !super::faults::sync_allowed() {
            return Err(JournalError::Io {
                op: "syncing",
                path: path.to_path_buf(),
                source: std::io::Error::other("fdatasync failed (injected by TRADSYS_TEST_FAIL_SYNC_AFTER)"),
            });
        }
        match self {
            SegmentFile::Dma(file) => file.fdatasync().await,
            SegmentFile::Buffered(file) => file.fdatasync().await,
        }
        .map_err(|e| glommio_error("syncing", path, e))
    }

    async fn pre_allocate(&self, path: &Path, bytes: u64) -> Result<(), JournalError> {
        match self {
            SegmentFile::Dma(file) => file.pre_allocate(bytes, false).await,
            SegmentFile::Buffered(file) => file.pre_allocate(bytes, false).await,
        }
        .map_err(|e| glommio_error("preallocating", path, e))
    }

    async fn close(self, path: &Path) -> Result<(), JournalError> {
        match self {
            SegmentFile::Dma(file) => file.close().await,
            SegmentFile::Buffered(file) => file.close().await,
        }
        .map_err(|e| glommio_error("closing", path, e))
    }
}

fn os_error(e: &GlommioError<()>) -> Option<i32> {
    match e {
        GlommioError::IoError(source) | GlommioError::EnhancedIoError { source, .. } => source.raw_os_error(),
        _ => None,
    }
}

fn glommio_error(op: &'static str, path: &Path, e: GlommioError<()>) -> JournalError {
    if matches!(os_error(&e), Some(libc::ENOSPC | libc::EDQUOT)) {
        return JournalError::NoSpace {
            path: path.to_path_buf(),
        };
    }
    JournalError::Io {
        op,
        path: path.to_path_buf(),
        source: e.into(),
    }
}

fn align_down(v: u64) -> u64 {
    v - v % JOURNAL_BLOCK_BYTES as u64
}

fn align_up(v: u64) -> u64 {
    align_down(v + JOURNAL_BLOCK_BYTES as u64 - 1)
}

const _: () = assert!(JOURNAL_HEADER_BYTES < JOURNAL_BLOCK_BYTES);
