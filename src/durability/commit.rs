//! The live side of durability on one shard: journaling the records its
//! `Trading` produced, group commit, and holding responses until what they
//! depend on is durable on every shard (see `epoch`).
//!
//! Group commit needs no timer: the committer writes whatever has been
//! appended as soon as the previous commit is done, so a batch closes at
//! once and grows with the load (everything appended during one fdatasync
//! goes out in the next). A shard with nothing of its own to write still
//! commits when asked to seal an epoch: by its own waiting responses, or by
//! a peer whose responses wait for it (`requested`).

use super::epoch::Epochs;
use crate::config::{DurabilityConfig, DurabilityMode};
use crate::journal::{CommitStats, JournalError, Writer};
use crate::metrics::JournalCounters;
use crate::trading::record::{self, Record};
use hdrhistogram::Histogram;
use std::cell::{Cell, OnceCell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

/// The longest commit the latency histogram tells apart.
const COMMIT_NS_MAX: u64 = 60_000_000_000;
/// Group commits' worth of records (`commit_bytes_max` each) a shard may
/// have waiting for the disk before it refuses new requests with 503.
pub const JOURNAL_PENDING_COMMITS_MAX: usize = 4;
/// Responses one shard may hold back waiting for durability.
pub const DURABLE_WAITERS_PER_SHARD_MAX: usize = 1 << 16;

/// One shard's journal and durability state.
pub struct ShardLog {
    shard: usize,
    config: DurabilityConfig,
    epochs: Arc<Epochs>,
    /// Set once recovery is done; never with `--durability none`.
    writer: OnceCell<Rc<Writer>>,
    /// The epoch records written now belong to (shared with the mesh, whose
    /// calls carry it).
    epoch: Rc<Cell<u64>>,
    /// The epoch of the newest record: a response given now depends on it.
    last: Cell<u64>,
    /// The position of the newest record in the journal (0: none yet).
    last_lsn: Cell<u64>,
    /// The highest epoch this shard has been asked to seal.
    wanted: Cell<u64>,
    /// Per peer: the highest epoch it waits for this shard to seal.
    requesters: RefCell<Vec<u64>>,
    /// Per peer: the highest epoch this shard asked it to seal.
    prompted: RefCell<Vec<u64>>,
    committer: Cell<Option<Waker>>,
    encoded: RefCell<rkyv::util::AlignedVec>,
    waiters: RefCell<Vec<(u64, Waker)>>,
    stats: RefCell<CommitFigures>,
    /// Whether the operator was last told that space is low.
    space_low_told: Cell<bool>,
}

/// Commit counts and latencies, for /metrics.
struct CommitFigures {
    counters: JournalCounters,
    latency_ns: Histogram<u64>,
}

impl ShardLog {
    pub fn new(shard: usize, config: DurabilityConfig, epochs: Arc<Epochs>, epoch: Rc<Cell<u64>>) -> ShardLog {
        let shards = epochs.shards();
        ShardLog {
            shard,
            config,
            epochs,
            writer: OnceCell::new(),
            epoch,
            last: Cell::new(0),
            last_lsn: Cell::new(0),
            wanted: Cell::new(0),
            requesters: RefCell::new(vec![0; shards]),
            prompted: RefCell::new(vec![0; shards]),
            committer: Cell::new(None),
            encoded: RefCell::new(rkyv::util::AlignedVec::new()),
            waiters: RefCell::new(Vec::new()),
            stats: RefCell::new(CommitFigures {
                counters: JournalCounters::default(),
                latency_ns: crate::metrics::latency_histogram(COMMIT_NS_MAX),
            }),
            space_low_told: Cell::new(false),
        }
    }

    /// Starts journaling into `writer` (once, after recovery).
    pub fn set_writer(&self, writer: Rc<Writer>) {
        assert!(
            self.config.mode != DurabilityMode::None,
            "no journal with --durability none"
        );
        assert!(self.writer.set(writer).is_ok(), "the journal writer is set once");
    }

    /// The epoch a record written now belongs to.
    pub fn epoch(&self) -> u64 {
        self.epoch.get()
    }

    /// Notes the epoch of an incoming engine message before it is run.
    pub fn observe(&self, epoch: u64) {
        self.epoch.set(self.epoch.get().max(epoch));
    }

    /// Journals `records` (taken from `Trading`) in the current epoch and
    /// returns it.
    pub fn append(&self, records: &mut Vec<Record>) -> u64 {
        let epoch = self.epoch();
        let Some(writer) = self.writer.get() else {
            records.clear();
            return epoch;
        };
        if records.is_empty() {
            return epoch;
        }
        self.epochs.note_appended(self.shard, records.len() as u64);
        let mut encoded = self.encoded.borrow_mut();
        for record in records.drain(..) {
            record::encode(&record, &mut encoded);
            self.last_lsn.set(writer.append(epoch, &encoded));
        }
        self.last.set(epoch);
        self.kick();
        epoch
    }

    /// The epoch of the newest record appended (0: none yet).
    pub fn last_record_epoch(&self) -> u64 {
        self.last.get()
    }

    /// The position of the newest record appended (0: none yet).
    pub fn last_lsn(&self) -> u64 {
        self.last_lsn.get()
    }

    /// Whether the journal keeps up; a disk slower than the load makes the
    /// shard refuse work instead of buffering without bound.
    pub fn has_room(&self) -> bool {
        let pending = self.writer.get().map_or(0, |w| w.pending_bytes());
        pending <= self.config.commit_bytes_max.saturating_mul(JOURNAL_PENDING_COMMITS_MAX)
            && self.waiters.borrow().len() < DURABLE_WAITERS_PER_SHARD_MAX
    }

    /// The epoch a response given now must wait for, or `None` when it may
    /// leave at once (`batch`, `none`, or already durable).
    pub fn settle_target(&self) -> Option<u64> {
        if self.config.mode != DurabilityMode::Fsync {
            return None;
        }
        let target = self.last.get();
        if self.epochs.global_durable() >= target {
            return None;
        }
        self.want(target);
        Some(target)
    }

    /// The peers that must be asked to seal `target`: those behind it that
    /// were not asked yet.
    pub fn peers_to_prompt(&self, target: u64) -> Vec<usize> {
        let mut prompted = self.prompted.borrow_mut();
        let mut peers = Vec::new();
        for (peer, asked) in prompted.iter_mut().enumerate() {
            if peer != self.shard && self.epochs.durable(peer) < target && *asked < target {
                *asked = target;
                peers.push(peer);
            }
        }
        peers
    }

    /// Resolves once the global durable epoch reaches `target`.
    pub async fn wait(&self, target: u64) {
        std::future::poll_fn(|cx| {
            if self.epochs.global_durable() >= target {
                return Poll::Ready(());
            }
            self.waiters.borrow_mut().push((target, cx.waker().clone()));
            Poll::Pending
        })
        .await
    }

    /// Peer `from` waits for this shard to seal `epoch`. Returns whether
    /// the durable epoch already covers it: the peer must then be told at
    /// once, since no commit may be coming to tell it later (the peer saw
    /// this shard behind before its last commit finished, and asked while
    /// the request was on its way).
    pub fn requested(&self, from: usize, epoch: u64) -> bool {
        if epoch <= self.epochs.durable(self.shard) {
            return true;
        }
        let mut requesters = self.requesters.borrow_mut();
        requesters[from] = requesters[from].max(epoch);
        drop(requesters);
        self.want(epoch);
        false
    }

    /// The peers whose requests this shard's durable epoch now covers;
    /// they are forgotten and should be told.
    pub fn take_satisfied(&self) -> Vec<usize> {
        let durable = self.epochs.durable(self.shard);
        let mut requesters = self.requesters.borrow_mut();
        let mut peers = Vec::new();
        for (peer, asked) in requesters.iter_mut().enumerate() {
            if *asked != 0 && *asked <= durable {
                *asked = 0;
                peers.push(peer);
            }
        }
        peers
    }

    fn want(&self, epoch: u64) {
        if epoch > self.wanted.get() {
            self.wanted.set(epoch);
            self.kick();
        }
    }

    fn kick(&self) {
        if let Some(waker) = self.committer.take() {
            waker.wake();
        }
    }

    /// In `batch` mode, how long the committer sleeps between commits;
    /// `None` in `fsync` mode, where it waits for work instead.
    pub fn batch_interval(&self) -> Option<Duration> {
        (self.config.mode == DurabilityMode::Batch && self.writer.get().is_some())
            .then_some(Duration::from_millis(self.config.batch_sync_ms))
    }

    /// A `batch` tick: every shard seals as far as the furthest one, so
    /// that the recovery cut (the minimum) follows the busiest shard.
    pub fn batch_due(&self) {
        self.want(self.epochs.max_durable());
    }

    /// Waits until there is something to commit (`fsync` mode).
    pub async fn work(&self) {
        let Some(writer) = self.writer.get() else {
            return std::future::pending().await;
        };
        std::future::poll_fn(|cx| {
            if writer.pending_bytes() > 0 || self.wanted.get() > self.epochs.durable(self.shard) {
                return Poll::Ready(());
            }
            self.committer.set(Some(cx.waker().clone()));
            Poll::Pending
        })
        .await
    }

    /// Seals the current epoch (or the one asked for, if later), writes
    /// what was appended and syncs it; records appended meanwhile belong to
    /// the next epoch and the next commit.
    pub async fn commit(&self) -> Result<(), JournalError> {
        let Some(writer) = self.writer.get() else { return Ok(()) };
        let mine = self.epochs.durable(self.shard);
        if writer.pending_bytes() == 0 && self.wanted.get() <= mine {
            return Ok(());
        }
        let sealed = self.epoch.get().max(self.wanted.get());
        self.epoch.set(sealed + 1);
        let started = Instant::now();
        let done = writer.commit(sealed, true).await?;
        self.count(&done, started.elapsed());
        self.epochs.publish(self.shard, sealed);
        Ok(())
    }

    fn count(&self, done: &CommitStats, took: Duration) {
        let mut stats = self.stats.borrow_mut();
        let ns = (took.as_nanos() as u64).clamp(1, COMMIT_NS_MAX);
        stats.latency_ns.saturating_record(ns);
        let c = &mut stats.counters;
        c.commits += 1;
        c.records += done.records;
        c.frame_bytes += done.frame_bytes;
        c.write_bytes += done.write_bytes;
        c.commit_sum_ns += ns;
    }

    /// The journal's figures now.
    pub fn counters(&self) -> JournalCounters {
        let stats = self.stats.borrow();
        let mut c = stats.counters;
        c.durable_epoch = self.epochs.durable(self.shard);
        c.commit_p50_ns = stats.latency_ns.value_at_quantile(0.5);
        c.commit_p99_ns = stats.latency_ns.value_at_quantile(0.99);
        c.commit_max_ns = stats.latency_ns.max();
        c
    }

    /// Whether this shard's journal found no disk space for its next
    /// segment.
    pub fn space_low(&self) -> bool {
        self.writer.get().is_some_and(|w| w.space_low())
    }

    /// Whether any shard's journal lacks disk space: work that changes
    /// state is refused meanwhile.
    pub fn journal_full(&self) -> bool {
        self.epochs.any_space_low()
    }

    /// Looks after the next journal segment between commits (see
    /// `Writer::tend_spare`) and publishes whether space is low. Returns
    /// the new state when it changed.
    pub async fn tend_journal(&self) -> Result<Option<bool>, JournalError> {
        let Some(writer) = self.writer.get() else {
            return Ok(None);
        };
        writer.tend_spare().await?;
        let low = writer.space_low();
        self.epochs.set_space_low(self.shard, low);
        Ok((self.space_low_told.replace(low) != low).then_some(low))
    }

    /// Wakes the responses the global durable epoch now covers.
    pub fn wake_settled(&self) {
        let durable = self.epochs.global_durable();
        let mut waiters = self.waiters.borrow_mut();
        let mut i = 0;
        while i < waiters.len() {
            if waiters[i].0 <= durable {
                waiters.swap_remove(i).1.wake();
            } else {
                i += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fsync_log(shard: usize, epochs: &Arc<Epochs>) -> ShardLog {
        let config = DurabilityConfig {
            mode: DurabilityMode::Fsync,
            commit_bytes_max: 1 << 20,
            direct_io: false,
            batch_sync_ms: 10,
            segment_bytes: 1 << 26,
            snapshot_records: 1000,
            snapshot_interval_s: 60,
        };
        ShardLog::new(shard, config, epochs.clone(), Rc::new(Cell::new(1)))
    }

    #[test]
    fn a_seal_request_already_covered_is_answered_at_once() {
        let epochs = Arc::new(Epochs::new(2));
        let log = fsync_log(1, &epochs);
        epochs.publish(1, 5);
        // Shard 0 saw shard 1 at 4 and asked for 5; the commit that sealed
        // 5 finished before the request arrived, and none follows it.
        assert!(log.requested(0, 5));
        assert!(log.requested(0, 3));
        assert_eq!(log.take_satisfied(), Vec::<usize>::new());
        // A request ahead of the durable epoch waits for the next commit.
        assert!(!log.requested(0, 7));
        assert_eq!(log.take_satisfied(), Vec::<usize>::new());
        epochs.publish(1, 7);
        assert_eq!(log.take_satisfied(), vec![0]);
        assert_eq!(log.take_satisfied(), Vec::<usize>::new());
    }
}
