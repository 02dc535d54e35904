//! The live side of durability on one shard: journaling the records its
//! `Trading` produced, the group-commit task, and holding responses until
//! what they depend on is durable everywhere (see `epoch`).

use super::epoch::Epochs;
use super::record::{self, Record};
use crate::config::{DurabilityConfig, DurabilityMode};
use crate::journal::Writer;
use std::cell::{Cell, OnceCell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};

/// Responses one shard may hold back waiting for durability.
pub const DURABLE_WAITERS_PER_SHARD_MAX: usize = 1 << 16;

/// One shard's journal and durability state.
pub struct ShardLog {
    shard: usize,
    config: DurabilityConfig,
    epochs: Arc<Epochs>,
    /// Set once recovery is done; never with `--durability none`.
    writer: OnceCell<Rc<Writer>>,
    /// The highest epoch seen on an incoming engine message: records are
    /// never written in an epoch below what caused them.
    floor: Cell<u64>,
    /// The epoch of the newest record: a response given now depends on it.
    last: Cell<u64>,
    encoded: RefCell<rkyv::util::AlignedVec>,
    waiters: RefCell<Vec<(u64, Waker)>>,
}

impl ShardLog {
    pub fn new(shard: usize, config: DurabilityConfig, epochs: Arc<Epochs>) -> ShardLog {
        ShardLog {
            shard,
            config,
            epochs,
            writer: OnceCell::new(),
            floor: Cell::new(0),
            last: Cell::new(0),
            encoded: RefCell::new(rkyv::util::AlignedVec::new()),
            waiters: RefCell::new(Vec::new()),
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
        self.epochs.clock().max(self.floor.get())
    }

    /// Notes the epoch of an incoming engine message before it is run.
    pub fn observe(&self, epoch: u64) {
        self.floor.set(self.floor.get().max(epoch));
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
        let mut encoded = self.encoded.borrow_mut();
        self.epochs.note_appended(self.shard, records.len() as u64);
        for record in records.drain(..) {
            record::encode(&record, &mut encoded);
            writer.append(epoch, &encoded);
        }
        self.last.set(epoch);
        epoch
    }

    /// Whether the journal can take more work now: a disk slower than the
    /// load makes the shard refuse work instead of buffering without bound.
    pub fn has_room(&self) -> bool {
        let pending = self.writer.get().map_or(0, |w| w.pending_bytes());
        pending <= self.config.commit_bytes_max.saturating_mul(4)
            && self.waiters.borrow().len() < DURABLE_WAITERS_PER_SHARD_MAX
    }

    /// Resolves once every record this shard has written so far — and so
    /// everything they depend on, on any shard — is durable. At once with
    /// `batch` and `none`.
    pub async fn settle(&self) {
        if self.config.mode != DurabilityMode::Fsync {
            return;
        }
        let target = self.last.get();
        if self.epochs.global_durable() >= target {
            return;
        }
        self.epochs.want(target);
        std::future::poll_fn(|cx| {
            if self.epochs.global_durable() >= target {
                return Poll::Ready(());
            }
            self.waiters.borrow_mut().push((target, cx.waker().clone()));
            Poll::Pending
        })
        .await
    }

    /// The group commit loop: every `commit_interval` it seals the epochs
    /// that are over, writes what was appended and syncs it (`fsync`), or
    /// does so every `batch_sync` (`batch`). It then wakes the responses
    /// the global durable epoch now covers. A journal that cannot be
    /// written stops the process: nothing could be acknowledged any more.
    pub async fn run_committer(self: Rc<Self>) {
        let Some(writer) = self.writer.get().cloned() else {
            return;
        };
        let interval = match self.config.mode {
            DurabilityMode::Batch => self.config.batch_sync,
            _ => self.config.commit_interval,
        };
        loop {
            glommio::timer::sleep(interval).await;
            let sealed = self.epoch() - 1;
            let mine = self.epochs.durable(self.shard);
            let wanted = self.epochs.wanted() > mine;
            if sealed > mine && (writer.pending_bytes() > 0 || wanted) {
                if let Err(e) = writer.commit(sealed, true).await {
                    eprintln!(
                        "shard {}: journal: {e}; stopping: nothing can be made durable",
                        self.shard
                    );
                    std::process::exit(74);
                }
                self.epochs.publish(self.shard, sealed);
            }
            self.wake_settled();
        }
    }

    fn wake_settled(&self) {
        let durable = self.epochs.global_durable();
        let mut waiters = self.waiters.borrow_mut();
        if waiters.is_empty() {
            return;
        }
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
