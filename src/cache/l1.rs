//! A shard's first cache level: values by name, each at one version, with
//! a time to live, bounded in entries and bytes, least recently used
//! dropped first.
//!
//! A name holds one version at a time. A lookup names the version it
//! wants; an entry at another version is stale and goes. So a changed
//! value is a new version, never an overwrite that a reader could miss,
//! and an invalidation only has to say which version is current.
//!
//! No I/O and no clock: the time is an input. Single-threaded, like the
//! rest of a shard's state.

use crate::metrics::CacheLevelCounters;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

/// What an entry costs besides its name and value: the map slots, the
/// recency index and the entry itself, rounded up.
pub(crate) const ENTRY_OVERHEAD_BYTES: usize = 128;

struct Entry {
    version: u64,
    value: Rc<[u8]>,
    expires_ms: u64,
    /// Its place in `recency`.
    used: u64,
}

/// The first level.
pub(crate) struct L1 {
    entries_max: usize,
    bytes_max: usize,
    entries: HashMap<Rc<str>, Entry>,
    /// Names by last use, oldest first.
    recency: BTreeMap<u64, Rc<str>>,
    clock: u64,
    bytes: usize,
    counters: CacheLevelCounters,
}

impl L1 {
    pub(crate) fn new(entries_max: usize, bytes_max: usize) -> L1 {
        assert!(entries_max > 0 && bytes_max > 0, "an L1 holds something");
        L1 {
            entries_max,
            bytes_max,
            entries: HashMap::new(),
            recency: BTreeMap::new(),
            clock: 0,
            bytes: 0,
            counters: CacheLevelCounters::default(),
        }
    }

    /// The value of `name` at `version`, unless absent, of another version
    /// or expired (which drops it). Counts a hit or a miss.
    pub(crate) fn get(&mut self, name: &str, version: u64, now_ms: u64) -> Option<Rc<[u8]>> {
        let fresh = match self.entries.get(name) {
            Some(entry) => entry.version == version && now_ms < entry.expires_ms,
            None => {
                self.counters.misses += 1;
                return None;
            }
        };
        if !fresh {
            self.remove(name);
            self.counters.misses += 1;
            return None;
        }
        self.clock += 1;
        let clock = self.clock;
        let entry = self.entries.get_mut(name)?;
        let name = self.recency.remove(&entry.used)?;
        entry.used = clock;
        self.recency.insert(clock, name);
        self.counters.hits += 1;
        Some(entry.value.clone())
    }

    /// Stores `value` as `name` at `version` until `expires_ms`, dropping
    /// the least recently used entries for room. A value that could never
    /// fit is not stored. Counts a fill.
    pub(crate) fn put(&mut self, name: &str, version: u64, value: Rc<[u8]>, expires_ms: u64) {
        self.remove(name);
        let needed = cost(name, &value);
        if needed > self.bytes_max {
            return;
        }
        while self.entries.len() >= self.entries_max || self.bytes + needed > self.bytes_max {
            let Some((_, oldest)) = self.recency.pop_first() else {
                break;
            };
            if let Some(entry) = self.entries.remove(&oldest) {
                self.bytes -= cost(&oldest, &entry.value);
                self.counters.evictions += 1;
            }
        }
        self.clock += 1;
        let name: Rc<str> = Rc::from(name);
        self.recency.insert(self.clock, name.clone());
        self.bytes += needed;
        self.entries.insert(
            name,
            Entry {
                version,
                value,
                expires_ms,
                used: self.clock,
            },
        );
        self.counters.fills += 1;
        self.check();
    }

    /// `version` is now current for `name`: an entry at another version
    /// goes. Returns whether one went (and counts it).
    pub(crate) fn invalidate(&mut self, name: &str, version: u64) -> bool {
        let stale = self.entries.get(name).is_some_and(|e| e.version != version);
        if stale {
            self.remove(name);
            self.counters.invalidations += 1;
        }
        stale
    }

    /// Drops every entry (counted as invalidations): after invalidations
    /// may have been missed.
    pub(crate) fn clear(&mut self) {
        self.counters.invalidations += self.entries.len() as u64;
        self.entries.clear();
        self.recency.clear();
        self.bytes = 0;
    }

    pub(crate) fn counters(&self) -> CacheLevelCounters {
        self.counters
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    fn remove(&mut self, name: &str) {
        if let Some(entry) = self.entries.remove(name) {
            self.recency.remove(&entry.used);
            self.bytes -= cost(name, &entry.value);
        }
    }

    fn check(&self) {
        assert!(
            self.entries.len() <= self.entries_max && self.bytes <= self.bytes_max,
            "L1 over its bounds"
        );
        debug_assert_eq!(self.entries.len(), self.recency.len());
    }
}

fn cost(name: &str, value: &[u8]) -> usize {
    name.len() + value.len() + ENTRY_OVERHEAD_BYTES
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(n: usize) -> Rc<[u8]> {
        Rc::from(vec![b'x'; n])
    }

    #[test]
    fn a_value_is_found_at_its_version_until_it_expires() {
        let mut l1 = L1::new(8, 1 << 20);
        assert_eq!(l1.get("a", 1, 0), None);
        l1.put("a", 1, Rc::from(&b"one"[..]), 100);
        assert_eq!(l1.get("a", 1, 99).as_deref(), Some(&b"one"[..]));
        // Another version is a miss and drops the stale entry.
        assert_eq!(l1.get("a", 2, 50), None);
        assert_eq!(l1.len(), 0);
        l1.put("a", 2, Rc::from(&b"two"[..]), 100);
        assert_eq!(l1.get("a", 2, 100), None, "expired at 100");
        assert_eq!(
            l1.counters(),
            CacheLevelCounters {
                hits: 1,
                misses: 3,
                fills: 2,
                evictions: 0,
                invalidations: 0
            }
        );
        assert_eq!((l1.len(), l1.bytes()), (0, 0));
    }

    #[test]
    fn the_least_recently_used_goes_first_by_entries_and_by_bytes() {
        let mut l1 = L1::new(3, 1 << 20);
        for name in ["a", "b", "c"] {
            l1.put(name, 0, value(10), u64::MAX);
        }
        // "a" used: "b" is now the oldest.
        assert!(l1.get("a", 0, 0).is_some());
        l1.put("d", 0, value(10), u64::MAX);
        assert!(l1.get("b", 0, 0).is_none());
        for name in ["a", "c", "d"] {
            assert!(l1.get(name, 0, 0).is_some(), "{name}");
        }
        assert_eq!(l1.counters().evictions, 1);

        // Bytes: room for two entries of 100 bytes, not three.
        let per = 1 + 100 + ENTRY_OVERHEAD_BYTES;
        let mut l1 = L1::new(100, 2 * per + 10);
        for name in ["a", "b", "c"] {
            l1.put(name, 0, value(100), u64::MAX);
        }
        assert_eq!((l1.len(), l1.bytes(), l1.counters().evictions), (2, 2 * per, 1));
        assert!(l1.get("a", 0, 0).is_none());
        // A value larger than the whole level is never stored.
        l1.put("big", 0, value(3 * per), u64::MAX);
        assert!(l1.get("big", 0, 0).is_none());
        assert_eq!(l1.len(), 2);
    }

    #[test]
    fn an_invalidation_drops_only_other_versions() {
        let mut l1 = L1::new(8, 1 << 20);
        l1.put("a", 1, value(1), u64::MAX);
        assert!(!l1.invalidate("a", 1), "the current version stays");
        assert!(!l1.invalidate("missing", 1));
        assert!(l1.invalidate("a", 2));
        assert!(l1.get("a", 1, 0).is_none());
        l1.put("a", 2, value(1), u64::MAX);
        l1.put("b", 2, value(1), u64::MAX);
        l1.clear();
        assert_eq!((l1.len(), l1.bytes(), l1.counters().invalidations), (0, 0, 3));
    }
}
