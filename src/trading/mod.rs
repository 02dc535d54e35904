//! One shard's trading state and its inputs: the engine host (`host`), the
//! records it journals (`record`), the engine messages it exchanges with
//! other shards (`msg`).

mod host;
pub mod msg;
pub mod record;

pub use host::*;
