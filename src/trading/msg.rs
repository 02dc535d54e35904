//! The messages the account machines and books of different shards send
//! each other: one-way, ordered per pair of shards, journaled by the
//! receiver (see `durability`).

use tradsys_engine::msg::{ToAccount, ToBook};

/// Engine traffic: one-way, ordered per pair of shards.
#[derive(Clone, Copy, Debug, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum EngineMsg {
    /// For the book of a market the receiver owns.
    Book(ToBook),
    /// For the account machine of a user the receiver owns.
    Account(ToAccount),
}
