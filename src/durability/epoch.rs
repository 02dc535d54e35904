//! Global epochs: when a response may leave (Silo, SOSP 2013).
//!
//! Every journal record carries the epoch it was written in. A shard's
//! epoch moves on with each group commit: the commit *seals* the current
//! epoch (every record of it, and of every earlier one, is in the batch or
//! before it) and the shard's next records get the next epoch. An engine
//! message carries its sender's epoch and the receiver raises its own to
//! at least that before running it, so epochs never run backwards along
//! cause and effect. Each shard publishes its *durable epoch*: the highest
//! it has sealed and synced. The global durable epoch is the minimum over
//! shards. A response that depends on records up to epoch `e` leaves once
//! the global durable epoch reaches `e`, asking shards behind it to seal
//! `e` (a shard with nothing to write just writes the seal). Recovery
//! replays every shard up to the minimum sealed epoch found on disk, which
//! is a consistent cut: nothing in it depends on a record outside it.
//!
//! The durable epochs are the one piece of state shards share: one atomic
//! word each, written only by its shard's committer and read by the others
//! and the snapshot thread.

use std::sync::atomic::{AtomicU64, Ordering};

/// The durable epochs of all shards.
#[derive(Debug)]
pub struct Epochs {
    durable: Box<[AtomicU64]>,
    /// Records each shard has appended, for the snapshot thread.
    appended: Box<[AtomicU64]>,
    /// Per shard: every record of this epoch and earlier ones is in the
    /// history store (`u64::MAX` without a store). A snapshot never cuts
    /// past it, so that the journal keeps what the store has not taken.
    absorbed: Box<[AtomicU64]>,
    /// Per shard: its journal found no disk space for its next segment.
    space_low: Box<[std::sync::atomic::AtomicBool]>,
}

impl Epochs {
    pub fn new(shards: usize) -> Epochs {
        assert!(shards > 0);
        Epochs {
            durable: (0..shards).map(|_| AtomicU64::new(0)).collect(),
            appended: (0..shards).map(|_| AtomicU64::new(0)).collect(),
            absorbed: (0..shards).map(|_| AtomicU64::new(u64::MAX)).collect(),
            space_low: (0..shards).map(|_| std::sync::atomic::AtomicBool::new(false)).collect(),
        }
    }

    /// Notes whether `shard`'s journal has room for its next segment.
    pub fn set_space_low(&self, shard: usize, low: bool) {
        self.space_low[shard].store(low, Ordering::Release);
    }

    /// Whether any shard's journal lacks disk space: the shards share
    /// the data directory's filesystem, and work that changes state may
    /// need every shard's journal (a trade is journaled on the market's
    /// shard and on both users').
    pub fn any_space_low(&self) -> bool {
        self.space_low.iter().any(|low| low.load(Ordering::Acquire))
    }

    pub fn shards(&self) -> usize {
        self.durable.len()
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

    /// The highest epoch any shard has synced.
    pub fn max_durable(&self) -> u64 {
        self.durable
            .iter()
            .map(|d| d.load(Ordering::Acquire))
            .max()
            .unwrap_or(0)
    }

    pub fn note_appended(&self, shard: usize, records: u64) {
        self.appended[shard].fetch_add(records, Ordering::Relaxed);
    }

    /// Publishes how far `shard`'s history store has absorbed its records.
    pub fn set_absorbed(&self, shard: usize, epoch: u64) {
        self.absorbed[shard].store(epoch, Ordering::Release);
    }

    /// The newest cut a snapshot may take: globally durable, and absorbed
    /// by every shard's history store.
    pub fn snapshot_cut(&self) -> u64 {
        let absorbed = self
            .absorbed
            .iter()
            .map(|a| a.load(Ordering::Acquire))
            .min()
            .unwrap_or(u64::MAX);
        self.global_durable().min(absorbed)
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
        let epochs = Epochs::new(3);
        epochs.publish(0, 5);
        epochs.publish(1, 7);
        assert_eq!(epochs.global_durable(), 0);
        epochs.publish(2, 6);
        assert_eq!(epochs.global_durable(), 5);
        assert_eq!(epochs.max_durable(), 7);
        epochs.note_appended(1, 4);
        epochs.note_appended(2, 3);
        assert_eq!(epochs.appended(), 7);
        assert_eq!(epochs.snapshot_cut(), 5);
        epochs.set_absorbed(1, 3);
        assert_eq!(epochs.snapshot_cut(), 3);
    }

    #[test]
    #[should_panic(expected = "went back")]
    fn durable_epochs_never_go_back() {
        let epochs = Epochs::new(1);
        epochs.publish(0, 5);
        epochs.publish(0, 4);
    }
}
