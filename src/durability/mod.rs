//! Durability: every acknowledged change survives `kill -9` and power loss.
//!
//! Each shard journals its inputs (`record`) to its own journal
//! (`journal`), group-committed with fdatasync (`commit`). Responses leave
//! only when the global durable epoch covers what they depend on
//! (`epoch`). A background thread (`snapshotter`) takes snapshot sets
//! (`recovery`, `snapshot`) so that old journal segments can go; start-up recovers
//! from the newest set plus the journals and begins a new generation.

pub mod commit;
pub mod epoch;
pub mod image;
pub mod recovery;
pub mod snapshot;
pub mod snapshotter;
