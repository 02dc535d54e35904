//! A bounded, machine-wide ring of records (finished orders, trades) in
//! which each user's records are chained newest to oldest.
//!
//! Per-user rings put every append on a cold cache line somewhere in
//! megabytes of history (one ring per user); this ring appends at one
//! moving point, so writes stream through memory and the hardware
//! prefetcher keeps them cheap. A user keeps only the sequence number of
//! their newest record (`Chain`); each record carries the sequence number of
//! the same user's previous one. A record is overwritten after `capacity`
//! further appends, so a user's history is the newest `per_user_max` of
//! their records that the ring still holds. The ring is allocated once, up
//! front: appending never allocates.
//!
//! **Invariant:** `records[seq % capacity].seq == seq` exactly when record
//! `seq` is still held; a walk stops at the first record that is not.

/// No record: the end of a chain.
const NONE: u64 = u64::MAX;

/// The newest record of one user, or none.
#[derive(Clone, Copy, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Chain(u64);

impl Chain {
    pub const EMPTY: Chain = Chain(NONE);
}

#[derive(Clone, Copy, Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct Entry<T> {
    seq: u64,
    prev: u64,
    item: T,
}

/// `PER_USER_MAX` is how many records of one user a walk returns.
#[derive(Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct History<T, const PER_USER_MAX: usize> {
    records: Vec<Entry<T>>,
    capacity: usize,
    next_seq: u64,
}

impl<T: Copy, const PER_USER_MAX: usize> History<T, PER_USER_MAX> {
    /// `capacity` must be a power of two, so that a slot is a mask of the
    /// sequence number rather than a division.
    pub fn new(capacity: usize) -> History<T, PER_USER_MAX> {
        assert!(capacity.is_power_of_two() && PER_USER_MAX > 0);
        History {
            records: Vec::with_capacity(capacity),
            capacity,
            next_seq: 0,
        }
    }

    /// Appends `item` as the newest record of the user whose chain this is.
    pub fn push(&mut self, chain: &mut Chain, item: T) {
        let seq = self.next_seq;
        let entry = Entry {
            seq,
            prev: chain.0,
            item,
        };
        let slot = self.slot(seq);
        if slot == self.records.len() {
            self.records.push(entry);
        } else {
            self.records[slot] = entry;
        }
        assert!(self.records.len() <= self.capacity);
        chain.0 = seq;
        self.next_seq += 1;
    }

    /// Allocates the whole ring again after a restore from a snapshot,
    /// which holds only the records written so far.
    pub fn reserve_up_front(&mut self) {
        crate::snapshot::reserve_total(&mut self.records, self.capacity);
    }

    fn slot(&self, seq: u64) -> usize {
        (seq & (self.capacity as u64 - 1)) as usize
    }

    fn get(&self, seq: u64) -> Option<&Entry<T>> {
        if seq == NONE {
            return None;
        }
        let entry = self.records.get(self.slot(seq))?;
        (entry.seq == seq).then_some(entry)
    }

    /// The user's records, newest first, at most `PER_USER_MAX`.
    pub fn newest_first(&self, chain: Chain) -> impl Iterator<Item = &T> + '_ {
        let mut at = chain.0;
        let mut left = PER_USER_MAX;
        std::iter::from_fn(move || {
            if left == 0 {
                return None;
            }
            let entry = self.get(at)?;
            left -= 1;
            at = entry.prev;
            Some(&entry.item)
        })
    }

    /// The user's records, oldest first, at most `PER_USER_MAX`; the walk
    /// back is remembered on the stack, so this does not allocate.
    pub fn oldest_first(&self, chain: Chain) -> impl Iterator<Item = &T> + '_ {
        self.oldest_first_seq(chain).map(|(_, item)| item)
    }

    /// `oldest_first` with each record's sequence number: the order in
    /// which the ring received the records of all its users.
    pub fn oldest_first_seq(&self, chain: Chain) -> impl Iterator<Item = (u64, &T)> + '_ {
        let mut seqs = [NONE; PER_USER_MAX];
        let mut count = 0;
        let mut at = chain.0;
        while count < PER_USER_MAX {
            let Some(entry) = self.get(at) else { break };
            seqs[count] = at;
            count += 1;
            at = entry.prev;
        }
        (0..count)
            .rev()
            .filter_map(move |i| self.get(seqs[i]).map(|e| (e.seq, &e.item)))
    }

    /// Records the ring holds at most before it overwrites the oldest.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Whether the ring is one this build makes, with at least
    /// `capacity_min` records (a merge of machines makes larger rings):
    /// a power-of-two capacity, every record in its slot, none newer than
    /// `next_seq`, as many as were appended up to the capacity. Safe on
    /// any content, so a ring restored from a snapshot is checked before
    /// anything walks it.
    pub fn verify(&self, capacity_min: usize) -> Result<(), String> {
        let filled = self.next_seq.min(self.capacity as u64);
        let shaped = self.capacity.is_power_of_two() && self.capacity >= capacity_min;
        if !shaped || self.records.len() as u64 != filled {
            return Err(format!(
                "a history ring of {} records with capacity {} after {} appends (at least {capacity_min})",
                self.records.len(),
                self.capacity,
                self.next_seq
            ));
        }
        let misplaced = self
            .records
            .iter()
            .enumerate()
            .find(|(slot, e)| e.seq >= self.next_seq || self.slot(e.seq) != *slot);
        match misplaced {
            Some((slot, e)) => Err(format!("history record {} in slot {slot}", e.seq)),
            None => Ok(()),
        }
    }

    /// Checks that the part of a user's chain a walk can see runs strictly
    /// back in time; O(`PER_USER_MAX`).
    pub fn verify_chain(&self, chain: Chain) -> Result<(), String> {
        let mut at = chain.0;
        if at != NONE && at >= self.next_seq {
            return Err(format!("a history chain starts at {at}, past the newest record"));
        }
        for _ in 0..PER_USER_MAX {
            let Some(entry) = self.get(at) else { break };
            if entry.prev != NONE && entry.prev >= entry.seq {
                return Err(format!("history record {} links forward to {}", entry.seq, entry.prev));
            }
            at = entry.prev;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chains_keep_each_users_newest_records_within_the_ring() {
        let mut history: History<u32, 3> = History::new(8);
        let (mut a, mut b) = (Chain::EMPTY, Chain::EMPTY);
        for i in 0..5 {
            history.push(&mut a, i);
        }
        history.push(&mut b, 100);
        let newest_a: Vec<u32> = history.newest_first(a).copied().collect();
        assert_eq!(newest_a, vec![4, 3, 2], "capped per user");
        for i in 0..7 {
            history.push(&mut b, 101 + i);
        }
        // 13 records so far in a ring of 8: all of a's have been overwritten.
        assert_eq!(history.newest_first(a).count(), 0);
        let newest_b: Vec<u32> = history.newest_first(b).copied().collect();
        assert_eq!(newest_b, vec![107, 106, 105]);
        let oldest_b: Vec<u32> = history.oldest_first(b).copied().collect();
        assert_eq!(oldest_b, vec![105, 106, 107]);
        assert_eq!(history.newest_first(Chain::EMPTY).count(), 0);
        assert_eq!(history.verify(8), Ok(()));
        assert_eq!(history.verify_chain(a), Ok(()));
        assert_eq!(history.verify_chain(b), Ok(()));
    }
}
