//! tradsys: a thread-per-core trading server speaking the Binance Spot v3
//! conventions. See docs/ARCHITECTURE.md for the codemap.

pub mod api;
pub mod binance;
pub mod auth;
pub mod config;
pub mod durability;
pub mod http;
pub mod journal;
pub mod json;
pub mod limits;
pub mod marketdata;
pub mod metrics;
pub mod oneshot;
pub mod server;
pub mod streams;
pub mod trading;
pub mod ws;
