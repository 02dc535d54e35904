//! Global epochs: when a response may leave (Silo, SOSP 2013).
//!
//! Time is cut into epochs of `journal_commit_us`. Every journal record
//! carries the epoch it was written in; an engine message carries its
//! sender's epoch and the receiver journals it in that epoch or a later
//! one, so epochs never run backwards along cause and effect. Each shard
//! publishes its *durable epoch*: every record it wrote in that epoch or
//! before is synced, and a seal saying so is in its journal. The global
//! durable epoch is the minimum over shards. A response that depends on
//! records up to epoch `e` leaves once the global durable epoch reaches
//! `e`; recovery replays every shard up to the minimum sealed epoch found on
//! disk, which is a consistent cut: nothing in it depends on a record
//! outside it.
//!
//! The durable epochs are the one piece of state shards share: one atomic
//! word each, written only by its shard's committer and read by the others'
//! committers and the snapshot thread — never on a request path.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The clock and the durable epochs of all shards.
#[derive(Debug)]
pub struct Epochs {
    origin: Instant,
    epoch_us: u64,
    durable: Box<[AtomicU64]>,
    /// The highest epoch a response waits for; shards with nothing of
    /// their own to write still seal up to it.
    wanted: AtomicU64,
    /// Records each shard has appended, for the snapshot thread.
    appended: Box<[AtomicU64]>,
}

impl Epochs {
    pub fn new(shards: usize, epoch: Duration) -> Epochs {
        assert!(shards > 0 && !epoch.is_zero());
        Epochs {
            origin: Instant::now(),
            epoch_us: epoch.as_micros() as u64,
            durable: (0..shards).map(|_| AtomicU64::new(0)).collect(),
            wanted: AtomicU64::new(0),
            appended: (0..shards).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// The epoch of the clock now; epoch 1 starts at start-up.
    pub fn clock(&self) -> u64 {
        self.origin.elapsed().as_micros() as u64 / self.epoch_us + 1
    }

    pub fn durable(&self, shard: usize) -> u64 {
        self.durable[shard].load(Ordering::Acquire)
    }

    /// Publishes that `shard` has synced every record up to `epoch`.
    pub fn publish(&self, shard: usize, epoch: u64) {
        let previous = self.durable[shard].swap(epoch, Ordering::AcqRel);
        assert!(
            previous <= epoch,
            "shard {shard} durable epoch went back from {previous} to {epoch}"
        );
    }

    /// The epoch up to which every shard has synced everything.
    pub fn global_durable(&self) -> u64 {
        self.durable
            .iter()
            .map(|d| d.load(Ordering::Acquire))
            .min()
            .unwrap_or(0)
    }

    pub fn want(&self, epoch: u64) {
        self.wanted.fetch_max(epoch, Ordering::AcqRel);
    }

    pub fn wanted(&self) -> u64 {
        self.wanted.load(Ordering::Acquire)
    }

    pub fn note_appended(&self, shard: usize, records: u64) {
        self.appended[shard].fetch_add(records, Ordering::Relaxed);
    }

    /// Records appended by all shards since start-up.
    pub fn appended(&self) -> u64 {
        self.appended.iter().map(|a| a.load(Ordering::Relaxed)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn global_durable_is_the_minimum() {
        let epochs = Epochs::new(3, Duration::from_millis(1));
        epochs.publish(0, 5);
        epochs.publish(1, 7);
        assert_eq!(epochs.global_durable(), 0);
        epochs.publish(2, 6);
        assert_eq!(epochs.global_durable(), 5);
        epochs.want(9);
        epochs.want(4);
        assert_eq!(epochs.wanted(), 9);
    }

    #[test]
    #[should_panic(expected = "went back")]
    fn durable_epochs_never_go_back() {
        let epochs = Epochs::new(1, Duration::from_millis(1));
        epochs.publish(0, 5);
        epochs.publish(0, 4);
    }
}
