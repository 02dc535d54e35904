//! tradsys: a thread-per-core trading server speaking the Binance Spot v3
//! conventions. See docs/ARCHITECTURE.md for the codemap.

pub mod api;
pub mod config;
pub mod conn;
pub mod http;
pub mod mesh;
pub mod metrics;
pub mod shard;
