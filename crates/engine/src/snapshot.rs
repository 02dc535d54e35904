//! Snapshots of the machines' state as rkyv archives.
//!
//! Every state type of the engine (`book::Book`, `account::Accounts`, the
//! `history::History` rings, `market::MarketSpec`) and every value a journal
//! record embeds (`msg::ToBook`, `msg::ToAccount`, `order::OrderRequest`,
//! `EngineError`, ...) derives rkyv's `Archive`, `Serialize` and
//! `Deserialize`; the derives are the API. A snapshot is
//! `rkyv::to_bytes` of a machine and `rkyv::from_bytes` (validated with
//! bytecheck) gives it back. The maps keyed by ids are archived as vectors
//! of entries (`rkyv::with::AsVec`), so the in-memory maps keep their fast
//! hashers and archiving them does not build a hash table.
//!
//! `encode` and `decode` wrap those two calls with a typed error and accept
//! bytes at any alignment. `Book::from_snapshot_bytes` and
//! `Accounts::from_snapshot_bytes` also give the restored machine back the
//! room it reserves up front (a decoded `Vec` holds exactly its elements, so
//! the first operations after a restore would otherwise allocate) and check
//! its invariants: a snapshot is disk, so it is asserted after reading.
//!
//! **Invariant:** restoring a machine from its snapshot gives the same
//! `state_hash()` and the same answers to every later input.

use rkyv::api::high::{HighDeserializer, HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::util::AlignedVec;
use rkyv::{Archive, Deserialize, Serialize};

/// Alignment `decode` needs its input at; other input is copied once.
const SNAPSHOT_ALIGN_BYTES: usize = 16;

/// Why a snapshot could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot could not be archived: {0}")]
    Encode(rancor::Error),
    #[error("snapshot is not a valid archive: {0}")]
    Decode(rancor::Error),
    #[error("snapshot is not a state this engine makes: {0}")]
    Inconsistent(String),
}

/// Archives `state` (`rkyv::to_bytes`).
pub fn encode<T>(state: &T) -> Result<AlignedVec, SnapshotError>
where
    T: for<'a> Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>,
{
    rkyv::to_bytes::<rancor::Error>(state).map_err(SnapshotError::Encode)
}

/// Validates and deserializes an archive (`rkyv::from_bytes`); `bytes` may
/// sit at any address.
pub fn decode<T>(bytes: &[u8]) -> Result<T, SnapshotError>
where
    T: Archive,
    T::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>> + Deserialize<T, HighDeserializer<rancor::Error>>,
{
    if (bytes.as_ptr() as usize) % SNAPSHOT_ALIGN_BYTES == 0 {
        return rkyv::from_bytes::<T, rancor::Error>(bytes).map_err(SnapshotError::Decode);
    }
    let mut aligned: AlignedVec<SNAPSHOT_ALIGN_BYTES> = AlignedVec::with_capacity(bytes.len());
    aligned.extend_from_slice(bytes);
    rkyv::from_bytes::<T, rancor::Error>(&aligned).map_err(SnapshotError::Decode)
}

/// Grows `items` to hold `total` elements without reallocating.
pub(crate) fn reserve_total<T>(items: &mut Vec<T>, total: usize) {
    items.reserve(total.saturating_sub(items.len()));
}

/// Grows `map` to hold `total` entries without reallocating.
pub(crate) fn reserve_total_map<K, V, S>(map: &mut std::collections::HashMap<K, V, S>, total: usize)
where
    K: Eq + std::hash::Hash,
    S: std::hash::BuildHasher,
{
    map.reserve(total.saturating_sub(map.len()));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{EngineError, PARAM_MESSAGES};
    use crate::msg::ToAccount;

    #[test]
    fn parameter_messages_round_trip_and_unknown_ones_are_refused() {
        for message in PARAM_MESSAGES {
            for error in [
                EngineError::MandatoryParam(message),
                EngineError::ParamNotRequired(message),
            ] {
                let msg = ToAccount::Canceled {
                    order_id: 7,
                    user: 3,
                    result: Err(error),
                    time_ms: 11,
                };
                let bytes = encode(&msg).unwrap();
                assert_eq!(decode::<ToAccount>(&bytes).unwrap(), msg);
            }
        }
        let unknown = EngineError::MandatoryParam("not a known message");
        assert!(matches!(encode(&unknown), Err(SnapshotError::Encode(_))));
        let mut bytes = encode(&EngineError::ParamNotRequired(PARAM_MESSAGES[7])).unwrap();
        assert_eq!(bytes.as_slice(), [1, 7], "the variant's tag, then the message's index");
        bytes[1] = PARAM_MESSAGES.len() as u8;
        assert!(matches!(decode::<EngineError>(&bytes), Err(SnapshotError::Decode(_))));
    }

    #[test]
    fn unaligned_input_is_copied_not_refused() {
        let view = ToAccount::Done {
            order_id: 1,
            user: 2,
            status: crate::order::OrderStatus::Filled,
            time_ms: 3,
        };
        let bytes = encode(&view).unwrap();
        let mut shifted = vec![0_u8; bytes.len() + 1];
        shifted[1..].copy_from_slice(&bytes);
        assert_eq!(decode::<ToAccount>(&shifted[1..]).unwrap(), view);
    }
}
