//! One shard's trading state and its inputs: the engine host (`host`), the
//! records it journals (`record`), the engine messages it exchanges with
//! other shards (`msg`) and the numbered links to other instances
//! (`remote`).

mod host;
pub mod msg;
pub mod record;
pub mod remote;

pub use host::*;
