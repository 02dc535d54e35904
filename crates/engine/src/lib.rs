//! The tradsys trading core.
//!
//! Deterministic state machines with no I/O: they take inputs (orders, the
//! time, ids) and return outputs (fills, events). They never read a clock, a
//! socket or a file, so the same code runs on a shard, in a replay and in a
//! single-threaded test. See docs/engine.md for the codemap.

pub mod account;
pub mod book;
pub mod driver;
pub mod error;
pub mod hash;
pub mod history;
pub mod market;
pub mod msg;
pub mod num;
pub mod order;
pub mod snapshot;

pub use error::{AmendReason, EngineError, ListReason};
