//! Engine messages between the instances of a cluster: the numbered
//! links a shard keeps to each other instance, exactly once.
//!
//! Inside one process a shard's engine messages travel on the mesh and
//! recovery redelivers those in flight at a crash (see `durability`).
//! Between instances there is no common recovery: each restarts on its
//! own. So every shard numbers the messages it sends to each other
//! instance and keeps each in its **outbox** until that instance says it
//! has applied it durably (an acknowledgement, itself journaled here);
//! the outbox is part of the shard's durable state, rebuilt by a replay
//! and kept in snapshots, and whatever is in it is sent again until it is
//! acknowledged. The receiving instance keeps, per sending (instance,
//! shard), the number of the last message it applied, journaled with the
//! message itself; a message numbered at or below it is a redelivery and
//! is dropped, one above the next is early (an earlier one was lost on
//! the way) and waits for the sender to send again from the gap.
//!
//! **Invariants:** a message leaves only once the records that produced
//! it are durable on its instance (the shard's link waits for that), and
//! is acknowledged only once its receipt is durable on the receiver; so
//! after any crash of either instance or of the engine between them,
//! every message is applied exactly once.

use crate::trading::msg::EngineMsg;
use std::collections::{BTreeMap, VecDeque};

/// Messages a shard keeps unacknowledged for one other instance. Beyond
/// it the shard refuses orders for that instance's markets; fills of that
/// instance's users may still add to it, up to `OUTBOX_HARD_MAX`.
pub const OUTBOX_PER_INSTANCE_MAX: usize = 65_536;
/// Beyond this the shard refuses every order on its own markets too:
/// each could fill a resting order of a user of the unreachable instance.
pub const OUTBOX_HARD_MAX: usize = 2 * OUTBOX_PER_INSTANCE_MAX;

/// What became of a message from another instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arrival {
    /// The next one: applied.
    Applied,
    /// Applied before: dropped.
    Duplicate,
    /// An earlier one is missing: dropped until it is sent again.
    Early,
}

/// The links of one shard to the other instances, in a snapshot.
#[derive(Clone, Debug, Default, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct RemoteImage {
    /// Per instance (its index in the map): the last number sent.
    pub sent_seq: Vec<u64>,
    /// Per instance: the messages sent and not yet acknowledged, oldest
    /// first.
    pub outbox: Vec<Vec<(u64, EngineMsg)>>,
    /// (instance, its shard, the last number applied here).
    pub received: Vec<(u32, u32, u64)>,
}

/// One shard's numbered links to the other instances.
#[derive(Debug, Default)]
pub struct RemoteLinks {
    sent_seq: Vec<u64>,
    outbox: Vec<VecDeque<(u64, EngineMsg)>>,
    received: BTreeMap<(u32, u32), u64>,
}

impl RemoteLinks {
    /// Numbers `msg` for `instance` and keeps it until acknowledged.
    pub fn push(&mut self, instance: u32, msg: EngineMsg) -> u64 {
        let i = instance as usize;
        if self.sent_seq.len() <= i {
            self.sent_seq.resize(i + 1, 0);
            self.outbox.resize_with(i + 1, VecDeque::new);
        }
        self.sent_seq[i] += 1;
        self.outbox[i].push_back((self.sent_seq[i], msg));
        self.sent_seq[i]
    }

    /// `instance` applied everything up to `seq`; whether that is news.
    pub fn acknowledged(&mut self, instance: u32, seq: u64) -> bool {
        let Some(outbox) = self.outbox.get_mut(instance as usize) else {
            return false;
        };
        let mut progress = false;
        while outbox.front().is_some_and(|(n, _)| *n <= seq) {
            outbox.pop_front();
            progress = true;
        }
        progress
    }

    /// Whether the `seq`-th message of (`instance`, `shard`) is the next.
    pub fn arrival(&self, instance: u32, shard: u32, seq: u64) -> Arrival {
        let last = self.received(instance, shard);
        if seq <= last {
            Arrival::Duplicate
        } else if seq == last + 1 {
            Arrival::Applied
        } else {
            Arrival::Early
        }
    }

    pub fn accept(&mut self, instance: u32, shard: u32, seq: u64) {
        self.received.insert((instance, shard), seq);
    }

    /// The last message of (`instance`, `shard`) applied here.
    pub fn received(&self, instance: u32, shard: u32) -> u64 {
        self.received.get(&(instance, shard)).copied().unwrap_or(0)
    }

    /// The unacknowledged messages for `instance`, oldest first.
    pub fn outbox(&self, instance: usize) -> impl Iterator<Item = &(u64, EngineMsg)> {
        self.outbox.get(instance).into_iter().flatten()
    }

    pub fn outbox_len(&self, instance: usize) -> usize {
        self.outbox.get(instance).map_or(0, VecDeque::len)
    }

    /// The unacknowledged messages for every instance.
    pub fn outbox_total(&self) -> usize {
        self.outbox.iter().map(VecDeque::len).sum()
    }

    /// The longest outbox of any instance.
    pub fn outbox_len_max(&self) -> usize {
        self.outbox.iter().map(VecDeque::len).max().unwrap_or(0)
    }

    /// The last number given to a message for `instance`.
    pub fn sent_seq(&self, instance: usize) -> u64 {
        self.sent_seq.get(instance).copied().unwrap_or(0)
    }

    /// Whether this shard ever exchanged a message with another instance.
    pub fn is_empty(&self) -> bool {
        self.sent_seq.iter().all(|&n| n == 0) && self.received.is_empty()
    }

    pub fn to_image(&self) -> RemoteImage {
        RemoteImage {
            sent_seq: self.sent_seq.clone(),
            outbox: self.outbox.iter().map(|o| o.iter().copied().collect()).collect(),
            received: self.received.iter().map(|(&(i, s), &n)| (i, s, n)).collect(),
        }
    }

    /// The links of `image`, or why they cannot be: each outbox must hold
    /// consecutive numbers ending at the last sent.
    pub fn from_image(image: RemoteImage) -> Result<RemoteLinks, String> {
        if image.outbox.len() != image.sent_seq.len() {
            return Err("links: an outbox per instance expected".into());
        }
        for (i, (outbox, &sent)) in image.outbox.iter().zip(&image.sent_seq).enumerate() {
            let numbered = match (sent + 1).checked_sub(outbox.len() as u64) {
                Some(first) if first > 0 => outbox.iter().zip(first..).all(|((n, _), want)| *n == want),
                _ => false,
            };
            if !numbered {
                return Err(format!(
                    "links: the outbox of instance {i} is not numbered up to {sent}"
                ));
            }
        }
        Ok(RemoteLinks {
            sent_seq: image.sent_seq,
            outbox: image.outbox.into_iter().map(VecDeque::from).collect(),
            received: image.received.into_iter().map(|(i, s, n)| ((i, s), n)).collect(),
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use tradsys_engine::msg::ToBook;
    use tradsys_engine::order::MarketId;

    /// A small engine message, for tests of what carries them.
    pub(crate) fn cancel(order_id: u64) -> EngineMsg {
        EngineMsg::Book(ToBook::Cancel {
            market: MarketId(1),
            order_id,
            user: 7,
            time_ms: 1,
        })
    }

    #[test]
    fn an_outbox_keeps_what_is_not_acknowledged() {
        let mut links = RemoteLinks::default();
        assert_eq!(links.push(2, cancel(1)), 1);
        assert_eq!(links.push(2, cancel(2)), 2);
        assert_eq!(links.push(2, cancel(3)), 3);
        assert_eq!(links.push(0, cancel(4)), 1);
        assert!(links.acknowledged(2, 2));
        assert!(!links.acknowledged(2, 2));
        assert_eq!(links.outbox(2).map(|(n, _)| *n).collect::<Vec<_>>(), vec![3]);
        assert_eq!(links.outbox_len(0), 1);
        assert_eq!(links.outbox_len_max(), 1);
        assert!(!links.acknowledged(5, 9));
    }

    #[test]
    fn arrivals_are_applied_once_and_in_order() {
        let mut links = RemoteLinks::default();
        assert_eq!(links.arrival(1, 3, 2), Arrival::Early);
        assert_eq!(links.arrival(1, 3, 1), Arrival::Applied);
        links.accept(1, 3, 1);
        assert_eq!(links.arrival(1, 3, 1), Arrival::Duplicate);
        assert_eq!(links.arrival(1, 3, 2), Arrival::Applied);
        assert_eq!(links.arrival(1, 2, 1), Arrival::Applied);
        assert_eq!(links.received(1, 3), 1);
    }

    #[test]
    fn images_round_trip_and_bad_ones_are_refused() {
        let mut links = RemoteLinks::default();
        links.push(1, cancel(1));
        links.push(1, cancel(2));
        links.acknowledged(1, 1);
        links.accept(0, 1, 9);
        let image = links.to_image();
        let back = RemoteLinks::from_image(image.clone()).map(|l| l.to_image());
        assert_eq!(back, Ok(image.clone()));
        let mut gap = image.clone();
        gap.sent_seq[1] = 5;
        assert_eq!(
            RemoteLinks::from_image(gap).err().as_deref(),
            Some("links: the outbox of instance 1 is not numbered up to 5")
        );
        let mut short = image;
        short.sent_seq.push(0);
        assert!(RemoteLinks::from_image(short).is_err());
    }
}
