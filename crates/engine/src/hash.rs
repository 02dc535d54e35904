//! Hashing for the engine: a deterministic state digest and a fast map hasher.
//!
//! `StateHasher` is FNV-1a over a canonical walk of a machine's state; the
//! machines feed it in a fixed order (sorted keys, never a `HashMap`'s
//! iteration order), so two replicas with equal state give equal digests on
//! any host. `FastBuildHasher` keys the engine's `HashMap`s by integer ids:
//! ids are assigned by the exchange, not chosen by clients, so a
//! multiplicative hash is enough and much cheaper than SipHash.
//!
//! `IdBuildHasher` is for order ids, which the exchange hands out in
//! increasing order: the orders alive at one time have nearby ids. It keeps
//! an id's low bits as they are, so those orders sit in neighbouring buckets
//! of the map (a few warm cache lines instead of one cold line per order),
//! and mixes only the top bits, which hashbrown uses as the in-group tag.

use std::hash::{BuildHasher, Hasher};

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0100_0000_01b3;

/// FNV-1a, 64 bits.
#[derive(Clone, Copy, Debug)]
pub struct StateHasher(u64);

impl Default for StateHasher {
    fn default() -> Self {
        StateHasher(FNV_OFFSET)
    }
}

impl StateHasher {
    pub fn bytes(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(FNV_PRIME);
        }
    }

    pub fn u64(&mut self, value: u64) {
        self.bytes(&value.to_le_bytes());
    }

    pub fn i64(&mut self, value: i64) {
        self.bytes(&value.to_le_bytes());
    }

    pub fn finish(&self) -> u64 {
        self.0
    }
}

/// A multiplicative hasher for integer keys (the Fx constant).
#[derive(Clone, Copy, Debug, Default)]
pub struct FastHasher(u64);

impl Hasher for FastHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = (self.0.rotate_left(5) ^ value).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub struct FastBuildHasher;

impl BuildHasher for FastBuildHasher {
    type Hasher = FastHasher;

    fn build_hasher(&self) -> FastHasher {
        FastHasher::default()
    }
}

/// A `HashMap` keyed by exchange-assigned integers.
pub type FastMap<K, V> = std::collections::HashMap<K, V, FastBuildHasher>;

/// Bits of an id kept as they are; the rest of the hash is mixed.
const ID_LOW_BITS: u32 = 48;
const ID_LOW_MASK: u64 = (1 << ID_LOW_BITS) - 1;

/// The low 48 bits of the id, and a multiplicative mix of it above them.
#[derive(Clone, Copy, Debug, Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64((self.0 << 8) | u64::from(b));
        }
    }

    fn write_u64(&mut self, value: u64) {
        let mixed = value.wrapping_mul(0x517c_c1b7_2722_0a95);
        self.0 = (value & ID_LOW_MASK) | (mixed & !ID_LOW_MASK);
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub struct IdBuildHasher;

impl BuildHasher for IdBuildHasher {
    type Hasher = IdHasher;

    fn build_hasher(&self) -> IdHasher {
        IdHasher::default()
    }
}

/// A `HashMap` keyed by order ids.
pub type IdMap<V> = std::collections::HashMap<crate::order::OrderId, V, IdBuildHasher>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_hash_keeps_low_bits_and_mixes_the_tag() {
        let hash = |id: u64| IdBuildHasher.hash_one(id);
        let tags: std::collections::BTreeSet<u64> = (1..=64).map(|id| hash(id) >> 57).collect();
        for id in [1_u64, 2, 1000, (1 << 40) + 7] {
            assert_eq!(hash(id) & ID_LOW_MASK, id);
        }
        assert!(tags.len() > 32, "the in-group tags of neighbouring ids must differ");
    }

    #[test]
    fn fnv1a_matches_published_vectors() {
        let cases: &[(&[u8], u64)] = &[
            (b"", 0xcbf2_9ce4_8422_2325),
            (b"a", 0xaf63_dc4c_8601_ec8c),
            (b"foobar", 0x8594_4171_f739_67e8),
        ];
        for &(input, expected) in cases {
            let mut h = StateHasher::default();
            h.bytes(input);
            assert_eq!(h.finish(), expected);
        }
    }
}
