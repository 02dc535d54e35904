//! JSON of the market-data endpoints computed from trades.
use crate::http::{HttpError, Params};
use crate::json::JsonWriter;
use crate::limits::Endpoint;
use crate::shard::Shard;
use tradsys_engine::order::MarketId;

pub fn write(
    _shard: &Shard,
    _endpoint: Endpoint,
    _market: MarketId,
    _params: &Params,
    _now_ms: u64,
    _w: &mut JsonWriter,
) -> Result<(), HttpError> {
    Err(HttpError::new(503, -1001, "Market data is not available."))
}
