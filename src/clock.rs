//! The wall clock, read in one place: Binance reports time in milliseconds
//! since the Unix epoch. Layers below the server take the time as an input;
//! the server and the API layer read it here.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, as Binance reports time.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Microseconds since the Unix epoch.
pub(crate) fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}
