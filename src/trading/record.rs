//! The journal's records: every input that changes a shard's state.
//!
//! A shard is a deterministic state machine (`Trading` plus the market
//! data its trades feed): given the same inputs in the same order it
//! reaches the same state. So the journal stores inputs, not effects —
//! orders as the client sent them with the time and the reference price
//! they were sized against, engine messages as another shard sent them,
//! and the admin operations with the randomness they used. Replaying a
//! shard's records through `Trading::apply` rebuilds its state exactly.
//!
//! Records are rkyv-encoded; the journal frames them (length, CRC32C,
//! sequence number, epoch). **Invariant:** a record is decoded only after
//! its frame checked out, and decoding validates it again (bytecheck).

use crate::auth::KeyType;
use crate::trading::msg::EngineMsg;
use tradsys_engine::account::{AmendRequest, ListRef, MmpConfig, OrderRef};
use tradsys_engine::num::{Amount, Price};
use tradsys_engine::order::{CancelReplaceMode, ListRequest, MarketId, OrderRequest, UserId};

/// One input of a shard, as journaled.
#[derive(Clone, Debug, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum Record {
    Place {
        user: UserId,
        request: OrderRequest,
        reference: Option<Price>,
        now_ms: u64,
    },
    Cancel {
        user: UserId,
        market: MarketId,
        target: OrderRef,
        now_ms: u64,
    },
    CancelAll {
        user: UserId,
        market: MarketId,
        now_ms: u64,
    },
    /// Boxed: an enum archives at the size of its largest variant, and
    /// this rare one would make every record larger.
    CancelReplace(Box<CancelReplaceRecord>),
    /// The `seq`-th engine message from shard `from`.
    Receive {
        from: u32,
        seq: u64,
        msg: EngineMsg,
    },
    Halt {
        market: MarketId,
        halted: bool,
    },
    AllocateUser,
    CreateUser {
        user: UserId,
        name: String,
    },
    CreateKey {
        user: UserId,
        scopes: u8,
        entropy: Box<[u8; 128]>,
    },
    RevokeKey {
        key: String,
    },
    Transfer {
        user: UserId,
        asset: String,
        amount: Amount,
        deposit: bool,
    },
    /// An Ed25519 or RSA key (`CreateKey` makes HMAC ones). Boxed like
    /// `CancelReplace`: it is rare and its public key long.
    CreatePublicKey(Box<PublicKeyRecord>),
    // New kinds go last: a kind's number is its place, and journals
    // written before it must read the same.
    /// The `seq`-th engine message from shard `shard` of the cluster's
    /// instance `instance` (see `remote`).
    ReceiveRemote {
        instance: u32,
        shard: u32,
        seq: u64,
        msg: EngineMsg,
    },
    /// Instance `instance` applied this shard's messages up to `seq`.
    RemoteAcked {
        instance: u32,
        seq: u64,
    },
    /// An amendment of an order's quantity (amend keep priority), with
    /// the client id the order takes (drawn by the server when the
    /// request named none).
    Amend {
        user: UserId,
        request: AmendRequest,
        now_ms: u64,
    },
    /// A dead-man's switch (countdownCancelAll): `user`'s orders on
    /// `market` are canceled at `deadline_ms` unless set again; 0 turns
    /// it off.
    Countdown {
        user: UserId,
        market: MarketId,
        deadline_ms: u64,
    },
    /// A dead-man's switch ran out at `now_ms`: its orders are canceled.
    CountdownFired {
        user: UserId,
        market: MarketId,
        now_ms: u64,
    },
    /// Cancel on disconnect: when WebSocket API session `session` of
    /// `user` ends, the user's orders on `markets` are canceled; no
    /// markets turns it off.
    GuardArm {
        user: UserId,
        session: u64,
        markets: Vec<MarketId>,
    },
    /// Session `session` of `user` ended at `now_ms` (or did not survive a
    /// restart): its guarded markets' orders are canceled.
    GuardRelease {
        user: UserId,
        session: u64,
        now_ms: u64,
    },
    /// `user`'s market maker protection in `market` set, or removed.
    MmpSet {
        user: UserId,
        market: MarketId,
        config: Option<MmpConfig>,
    },
    /// `user`'s protection freeze in `market` ended by hand.
    MmpReset {
        user: UserId,
        market: MarketId,
    },
    /// An order list (OCO, OTO, OTOCO), with the client ids the server
    /// drew for it. Boxed like `CancelReplace`: three orders.
    PlaceList(Box<ListRecord>),
    /// A cancel of a whole order list.
    CancelList {
        user: UserId,
        market: MarketId,
        target: ListRef,
        now_ms: u64,
    },
}

/// An order list as journaled.
#[derive(Clone, Debug, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ListRecord {
    pub user: UserId,
    pub request: ListRequest,
    pub reference: Option<Price>,
    pub now_ms: u64,
}

/// A public-key API key as journaled: the public key itself, since the
/// user chose it, and the randomness its API key was made from.
#[derive(Clone, Debug, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct PublicKeyRecord {
    pub user: UserId,
    pub scopes: u8,
    pub key_type: KeyType,
    /// SPKI DER, as `KeyMaterial::to_stored` writes it.
    pub public_key: Vec<u8>,
    pub entropy: [u8; 64],
}

/// A cancel-replace as journaled.
#[derive(Clone, Debug, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct CancelReplaceRecord {
    pub user: UserId,
    pub target: OrderRef,
    pub mode: CancelReplaceMode,
    pub request: OrderRequest,
    pub reference: Option<Price>,
    pub now_ms: u64,
}

/// A record that cannot be decoded although its frame checked out.
#[derive(Debug, thiserror::Error)]
#[error("undecodable journal record: {0}")]
pub struct DecodeError(String);

/// Encodes `record` into `out` (cleared first), reusing its capacity.
pub fn encode(record: &Record, out: &mut rkyv::util::AlignedVec) {
    out.clear();
    let taken = std::mem::take(out);
    match rkyv::api::high::to_bytes_in::<_, rkyv::rancor::Error>(record, taken) {
        Ok(bytes) => *out = bytes,
        // Records hold only plain values: encoding cannot fail.
        Err(e) => unreachable!("encoding a journal record failed: {e}"),
    }
}

/// Decodes one record's bytes, validating them first.
pub fn decode(bytes: &[u8]) -> Result<Record, DecodeError> {
    decode_with(bytes, &mut rkyv::util::AlignedVec::new())
}

/// `decode`, copying the bytes into `scratch` (rkyv needs them aligned) so
/// that a replay allocates nothing per record.
pub fn decode_with(bytes: &[u8], scratch: &mut rkyv::util::AlignedVec<16>) -> Result<Record, DecodeError> {
    scratch.clear();
    scratch.extend_from_slice(bytes);
    rkyv::from_bytes::<Record, rkyv::rancor::Error>(scratch).map_err(|e| DecodeError(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tradsys_engine::msg::ToBook;
    use tradsys_engine::num::Qty;
    use tradsys_engine::order::ClientOrderId;

    #[test]
    fn records_survive_encoding() {
        let records = [
            Record::AllocateUser,
            Record::CreateUser {
                user: 7,
                name: "alice".into(),
            },
            Record::CreateKey {
                user: 7,
                scopes: 3,
                entropy: Box::new([9; 128]),
            },
            Record::Transfer {
                user: 7,
                asset: "USDT".into(),
                amount: Amount(123_456_789),
                deposit: true,
            },
            Record::CreatePublicKey(Box::new(PublicKeyRecord {
                user: 7,
                scopes: 1,
                key_type: KeyType::Ed25519,
                public_key: vec![0x30, 0x2a, 0x30, 0x05],
                entropy: [3; 64],
            })),
            Record::Halt {
                market: MarketId(2),
                halted: true,
            },
            Record::ReceiveRemote {
                instance: 2,
                shard: 1,
                seq: 43,
                msg: EngineMsg::Book(ToBook::Cancel {
                    market: MarketId(1),
                    order_id: 98,
                    user: 7,
                    time_ms: 1_700_000_000_000,
                }),
            },
            Record::RemoteAcked { instance: 2, seq: 44 },
            Record::Countdown {
                user: 7,
                market: MarketId(1),
                deadline_ms: 1_700_000_060_000,
            },
            Record::CountdownFired {
                user: 7,
                market: MarketId(1),
                now_ms: 1_700_000_060_001,
            },
            Record::GuardArm {
                user: 7,
                session: 0x1234_5678_9abc_def0,
                markets: vec![MarketId(0), MarketId(2)],
            },
            Record::GuardRelease {
                user: 7,
                session: 0x1234_5678_9abc_def0,
                now_ms: 1_700_000_070_000,
            },
            Record::MmpSet {
                user: 7,
                market: MarketId(1),
                config: Some(MmpConfig {
                    window_ms: 5_000,
                    frozen_ms: 60_000,
                    qty_limit: Qty(1_000_000),
                    delta_limit: Qty(500_000),
                }),
            },
            Record::MmpReset {
                user: 7,
                market: MarketId(1),
            },
            Record::Amend {
                user: 7,
                request: AmendRequest {
                    market: MarketId(1),
                    target: ClientOrderId::new("abcdefghijklmnopqrstuvwxyz0123456789")
                        .map_or(OrderRef::Id(1), OrderRef::Client),
                    new_qty: Qty(5_000),
                    new_client_order_id: ClientOrderId::new("abcdefghijklmnopqrstuvwxyz0123456780"),
                },
                now_ms: 1_700_000_000_000,
            },
            Record::Receive {
                from: 1,
                seq: 42,
                msg: EngineMsg::Book(ToBook::Cancel {
                    market: MarketId(1),
                    order_id: 99,
                    user: 7,
                    time_ms: 1_700_000_000_000,
                }),
            },
        ];
        let mut buf = rkyv::util::AlignedVec::new();
        for record in records {
            encode(&record, &mut buf);
            assert_eq!(decode(&buf).unwrap(), record);
        }
    }

    /// Every record archives at the size of the largest variant: keep it
    /// that of an order or an engine message, not of a rare operation.
    #[test]
    fn records_stay_small() {
        let mut buf = rkyv::util::AlignedVec::new();
        encode(&Record::AllocateUser, &mut buf);
        assert_eq!(buf.len(), 160);
    }

    #[test]
    fn garbage_is_refused() {
        assert!(decode(&[0xff; 7]).is_err());
    }
}
