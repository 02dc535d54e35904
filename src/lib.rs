//! tradsys: a thread-per-core trading server speaking the Binance Spot v3
//! conventions. See docs/ARCHITECTURE.md for the codemap.

mod api;
pub mod auth;
mod binance;
mod cache;
mod clock;
pub mod cluster;
pub mod compress;
pub mod config;
pub mod durability;
mod endpoint;
#[doc(hidden)]
pub mod fuzz;
pub mod http;
mod jobs;
pub mod journal;
mod json;
pub mod limits;
pub mod marketdata;
pub mod metrics;
pub mod oneshot;
mod overload;
pub mod plan;
mod redis;
mod resilience;
pub mod server;
pub mod store;
mod streams;
pub mod trading;
pub mod ws;
