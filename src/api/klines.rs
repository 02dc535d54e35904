//! `klines` and `uiKlines`, on the market's shard: the candles memory
//! keeps, and older ones rebuilt from the history store.
//!
//! Memory keeps the newest `klines_kept_per_interval_max` candles of each
//! interval (`marketdata`). Once an interval's ring is full, its oldest
//! kept candle opens at `kept_from`, and a window reaching before that is
//! answered, for the part before it, from the buyer's rows of the
//! market's trades in the history store (every trade has exactly one).
//!
//! * **Chunks.** The store is read in chunks of [`CHUNK_CANDLES`] candles
//!   aligned on the interval's candle numbers. A chunk's candles before
//!   `kept_from` are closed and never change, so they are cached in L1
//!   and L2 (`cache`) under `klines:<symbol>:<interval>:<chunk>:<upto>`
//!   for `cache_history_ttl_ms`: the same for every client and instance.
//! * **Every trade once.** An engine that holds every shard's rows
//!   (PostgreSQL) is read once on this shard, and each shard adds the rows
//!   its backlog holds past the progress that read saw; with one file per
//!   shard (SQLite), each shard reads its own file and adds its backlog
//!   the same way (`ShardStore::own_candles`). Parts merge into candles
//!   by trade id (`Candle::merge`), exactly as memory makes them.
//! * **Bounds.** With `startTime`, the walk starts at the later of it and
//!   the market's first stored trade; without, it walks back from
//!   `endTime` (or `kept_from`). Either way it reads at most
//!   [`CHUNKS_PER_REQUEST_MAX`] chunks, so a window spanning more than
//!   that many candles' time without trades answers fewer than `limit`
//!   candles (ask again from the last one).
//! * **Without a store** memory answers alone, as before. A store that
//!   cannot be read gets -1001, as the other history endpoints do.

use crate::api::host::Host;
use crate::api::params::{limit_param, mandatory, u64_param};
use crate::api::peer::{PeerCall, PeerReply};
use crate::api::request::unavailable;
use crate::binance;
use crate::http::{HttpError, Params};
use crate::json::JsonWriter;
use crate::marketdata::{Candle, Interval, QUERY_ROWS_DEFAULT, QUERY_ROWS_MAX};
use crate::store::shard::{BACKLOG_MOVING, CANDLE_READS_MAX};
use crate::store::{merge_candles, CandlesQuery, Progress, StoreError};
use std::collections::BTreeMap;
use tradsys_engine::num::{Amount, Price, Qty};
use tradsys_engine::order::MarketId;

/// Candles one chunk of the store spans.
pub(crate) const CHUNK_CANDLES: u64 = 1_000;
/// Chunks one request reads at most.
pub(crate) const CHUNKS_PER_REQUEST_MAX: u64 = 16;

/// -1001 when older candles cannot be read now.
const MSG_STORE_UNAVAILABLE: &str =
    "History store unavailable: klines older than memory keeps cannot be read now. Please try again.";

/// What one shard adds to a candle query, on the market shard's behalf.
#[derive(Clone, Debug)]
pub(crate) enum CandleSource {
    /// Its own file and its backlog (an engine of one shard's rows).
    Own,
    /// Its backlog's rows past the store read that saw it at this
    /// position (an engine of every shard's rows).
    BacklogAfter(Option<Progress>),
}

/// A shard's part of a candle query: `None` when its backlog moved past
/// the store read (read again).
pub(crate) type CandlesReply = Result<Option<Vec<Candle>>, HttpError>;

/// A klines request's window.
struct Window {
    interval: Interval,
    start: Option<u64>,
    end: Option<u64>,
    limit: usize,
}

fn window(params: &Params<'_>) -> Result<Window, HttpError> {
    let interval = Interval::parse(mandatory(params, "interval")?)
        .map_err(|_| HttpError::new(400, binance::BAD_INTERVAL, "Invalid interval."))?;
    if params
        .get("timeZone")
        .is_some_and(|tz| !matches!(tz, "0" | "+0" | "0:00" | "+00:00" | "00:00"))
    {
        return Err(HttpError::new(
            400,
            binance::ILLEGAL_CHARS,
            "Illegal characters found in parameter 'timeZone'; only UTC (0) is served.",
        ));
    }
    Ok(Window {
        interval,
        start: u64_param(params, "startTime")?,
        end: u64_param(params, "endTime")?,
        limit: limit_param(params, QUERY_ROWS_DEFAULT, QUERY_ROWS_MAX)?,
    })
}

/// GET /api/v3/klines and uiKlines for `market`, owned by this shard.
pub(crate) async fn answer(shard: &impl Host, market: MarketId, params: &Params<'_>) -> Result<Vec<u8>, HttpError> {
    let w = window(params)?;
    // Memory's part, taken before any wait: the rings move meanwhile.
    let (kept_from, memory, memory_from_kept) = {
        let data = shard.market_data();
        let data = data[usize::from(market.0)].as_ref().ok_or_else(unavailable)?;
        let kept_from = data.klines_kept_from(w.interval);
        let memory = data.klines(w.interval, w.start, w.end, w.limit);
        let from_kept = kept_from.map(|t| data.klines(w.interval, Some(t), w.end, w.limit));
        (kept_from, memory, from_kept.unwrap_or_default())
    };
    let candles = match (kept_from, shard.history()) {
        (Some(kept_from), Some(_)) => {
            let older = Older {
                shard,
                market,
                interval: w.interval,
                kept_from,
            };
            older.window(&w, memory, memory_from_kept).await?
        }
        _ => memory,
    };
    Ok(render(&candles))
}

/// The candles of one market and interval that memory no longer keeps.
struct Older<'a, H> {
    shard: &'a H,
    market: MarketId,
    interval: Interval,
    kept_from: u64,
}

impl<H: Host> Older<'_, H> {
    /// `w`'s candles: the store's before `kept_from`, then memory's.
    async fn window(
        &self,
        w: &Window,
        memory: Vec<Candle>,
        memory_from_kept: Vec<Candle>,
    ) -> Result<Vec<Candle>, HttpError> {
        let end = w.end.unwrap_or(u64::MAX);
        // Candles open before `stop` come from the store.
        let stop = self.kept_from.min(end.saturating_add(1));
        match w.start {
            Some(start) if start >= self.kept_from => Ok(memory),
            Some(start) => {
                let (mut candles, whole) = self.oldest_from(start, stop, w.limit).await?;
                if whole && end >= self.kept_from {
                    let room = w.limit - candles.len();
                    candles.extend(memory_from_kept.into_iter().take(room));
                }
                Ok(candles)
            }
            // Memory holds at least `limit` candles when its ring is full,
            // unless `endTime` cuts them.
            None if memory.len() >= w.limit => Ok(memory),
            None => {
                let mut candles = self.newest_before(stop, w.limit - memory.len()).await?;
                candles.extend(memory);
                Ok(candles)
            }
        }
    }

    /// The oldest `limit` candles opened in `[start, stop)`, and whether
    /// the walk reached `stop` (a full answer, or the chunk bound not hit).
    async fn oldest_from(&self, start: u64, stop: u64, limit: usize) -> Result<(Vec<Candle>, bool), HttpError> {
        let Some(first) = self.first_trade_ms().await? else {
            return Ok((Vec::new(), true));
        };
        let mut candles = Vec::new();
        let mut chunk = self.chunk_of(start.max(first));
        for _ in 0..CHUNKS_PER_REQUEST_MAX {
            if self.chunk_open(chunk) >= stop || candles.len() >= limit {
                candles.truncate(limit);
                return Ok((candles, true));
            }
            let part = self.chunk(chunk).await?;
            candles.extend(
                part.into_iter()
                    .filter(|c| c.open_time_ms >= start && c.open_time_ms < stop),
            );
            chunk += 1;
        }
        let whole = self.chunk_open(chunk) >= stop || candles.len() >= limit;
        candles.truncate(limit);
        Ok((candles, whole))
    }

    /// The newest `limit` candles opened before `stop`, oldest first.
    async fn newest_before(&self, stop: u64, limit: usize) -> Result<Vec<Candle>, HttpError> {
        let Some(first) = self.first_trade_ms().await? else {
            return Ok(Vec::new());
        };
        let mut newest_first: Vec<Candle> = Vec::new();
        let Some(mut chunk) = stop.checked_sub(1).map(|t| self.chunk_of(t)) else {
            return Ok(Vec::new());
        };
        for _ in 0..CHUNKS_PER_REQUEST_MAX {
            let part = self.chunk(chunk).await?;
            newest_first.extend(part.into_iter().rev().filter(|c| c.open_time_ms < stop));
            if newest_first.len() >= limit || self.chunk_open(chunk) <= first || chunk == 0 {
                break;
            }
            chunk -= 1;
        }
        newest_first.truncate(limit);
        newest_first.reverse();
        Ok(newest_first)
    }

    fn chunk_of(&self, time_ms: u64) -> u64 {
        self.interval.candle_number(time_ms) / CHUNK_CANDLES
    }

    fn chunk_open(&self, chunk: u64) -> u64 {
        self.interval.nth_open_ms(chunk.saturating_mul(CHUNK_CANDLES))
    }

    fn symbol(&self) -> String {
        self.shard.trading().spec(self.market).symbol.clone()
    }

    /// The store's candles of `chunk` before `kept_from`, from the cache.
    async fn chunk(&self, chunk: u64) -> Result<Vec<Candle>, HttpError> {
        let from_ms = self.chunk_open(chunk);
        let to_ms = self.chunk_open(chunk + 1).min(self.kept_from);
        if from_ms >= to_ms {
            return Ok(Vec::new());
        }
        let query = CandlesQuery {
            symbol: self.symbol(),
            interval: self.interval,
            from_ms,
            to_ms,
        };
        let name = format!("klines:{}:{}:{chunk}:{to_ms}", query.symbol, self.interval.as_str());
        let cache = self.shard.cache();
        let bytes = cache
            .get_or_fill(&name, 0, cache.history_ttl_ms(), || async {
                Ok(encode(&gather(self.shard, &query).await?))
            })
            .await?;
        decode(&bytes).ok_or_else(|| store_error(StoreError::Corrupt(format!("cached candles {name}"))))
    }

    /// The market's first stored trade's time, from the cache (for
    /// `cache_ttl_ms`: a market whose trades have not reached the store
    /// yet is looked at again after that).
    async fn first_trade_ms(&self) -> Result<Option<u64>, HttpError> {
        let symbol = self.symbol();
        let name = format!("klinesFirst:{symbol}");
        let cache = self.shard.cache();
        let bytes = cache
            .get_or_fill(&name, 0, cache.ttl_ms(), || async {
                let first = first_trade(self.shard, &symbol).await?;
                Ok(first.unwrap_or(u64::MAX).to_le_bytes().to_vec())
            })
            .await?;
        let first = <[u8; 8]>::try_from(&bytes[..])
            .map(u64::from_le_bytes)
            .map_err(|_| store_error(StoreError::Corrupt(format!("cached {name}"))))?;
        Ok((first != u64::MAX).then_some(first))
    }
}

/// The candles of `query` from every shard's rows, each trade once.
async fn gather(shard: &impl Host, query: &CandlesQuery) -> Result<Vec<Candle>, HttpError> {
    let store = shard.history().ok_or_else(|| store_error(StoreError::Unavailable))?;
    let me = shard.index();
    let mut merged = BTreeMap::new();
    if !store.holds_every_shard() {
        for peer in 0..shard.shards() {
            let part = if peer == me {
                Some(store.own_candles(query).await.map_err(store_error)?)
            } else {
                ask(shard, peer, query, CandleSource::Own).await?
            };
            let part = part.ok_or_else(|| store_error(StoreError::Engine(BACKLOG_MOVING.into())))?;
            merge_candles(&mut merged, part);
        }
        return Ok(merged.into_values().collect());
    }
    let shards: Vec<u32> = (0..shard.shards() as u32).collect();
    'read: for _ in 0..CANDLE_READS_MAX {
        let parts = store.candles(query, &shards).await.map_err(store_error)?;
        merged.clear();
        merge_candles(&mut merged, parts.candles);
        for (peer, after) in parts.progress {
            let peer = peer as usize;
            let whole = if peer == me {
                store.backlog_candles(query, after, &mut merged)
            } else {
                match ask(shard, peer, query, CandleSource::BacklogAfter(after)).await? {
                    Some(part) => {
                        merge_candles(&mut merged, part);
                        true
                    }
                    None => false,
                }
            };
            if !whole {
                continue 'read;
            }
        }
        return Ok(merged.into_values().collect());
    }
    Err(store_error(StoreError::Engine(BACKLOG_MOVING.into())))
}

/// The market's first trade's time over every shard's rows.
async fn first_trade(shard: &impl Host, symbol: &str) -> Result<Option<u64>, HttpError> {
    let store = shard.history().ok_or_else(|| store_error(StoreError::Unavailable))?;
    let every = store.holds_every_shard();
    let mut first = None;
    for peer in 0..shard.shards() {
        let found = if peer == shard.index() {
            local_first_trade(shard, symbol, true).await?
        } else {
            let call = PeerCall::FirstTrade {
                symbol: symbol.to_string(),
                store: !every,
            };
            match shard.call(peer, call).await {
                Ok(PeerReply::FirstTrade(found)) => found?,
                Ok(_) | Err(_) => return Err(unavailable()),
            }
        };
        first = earlier(first, found);
    }
    Ok(first)
}

/// This shard's part of `first_trade`: its backlog's, then (`store`) its
/// store's. The backlog is read first: a row written meanwhile is then
/// in one of the two.
pub(crate) async fn local_first_trade(shard: &impl Host, symbol: &str, store: bool) -> Result<Option<u64>, HttpError> {
    let history = shard.history().ok_or_else(|| store_error(StoreError::Unavailable))?;
    let waiting = history.backlog_first_trade_ms(symbol);
    let stored = match store {
        true => history.first_trade_ms(symbol).await.map_err(store_error)?,
        false => None,
    };
    Ok(earlier(waiting, stored))
}

/// The earlier of two times either of which may be unknown.
fn earlier(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Asks `peer` for its part of `query`.
async fn ask(shard: &impl Host, peer: usize, query: &CandlesQuery, source: CandleSource) -> CandlesReply {
    let call = PeerCall::Candles {
        query: query.clone(),
        source,
    };
    match shard.call(peer, call).await {
        Ok(PeerReply::Candles(reply)) => reply,
        Ok(_) | Err(_) => Err(unavailable()),
    }
}

/// Runs another shard's `PeerCall::Candles` here.
pub(crate) async fn local_candles(shard: &impl Host, query: &CandlesQuery, source: CandleSource) -> CandlesReply {
    let store = shard.history().ok_or_else(|| store_error(StoreError::Unavailable))?;
    match source {
        CandleSource::Own => store.own_candles(query).await.map(Some).map_err(store_error),
        CandleSource::BacklogAfter(after) => {
            let mut part = BTreeMap::new();
            Ok(store
                .backlog_candles(query, after, &mut part)
                .then(|| part.into_values().collect()))
        }
    }
}

fn store_error(e: StoreError) -> HttpError {
    match e {
        StoreError::Corrupt(problem) => HttpError::new(500, binance::DISCONNECTED, format!("History store: {problem}")),
        _ => HttpError::new(503, binance::DISCONNECTED, MSG_STORE_UNAVAILABLE),
    }
}

/// Bytes per candle in the cache: thirteen 8-byte little-endian fields.
const CANDLE_BYTES: usize = 13 * 8;

fn encode(candles: &[Candle]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(candles.len() * CANDLE_BYTES);
    for c in candles {
        let fields = [
            c.open_time_ms,
            c.open.0 as u64,
            c.high.0 as u64,
            c.low.0 as u64,
            c.close.0 as u64,
            c.volume.0 as u64,
            c.close_time_ms,
            c.quote_volume.0 as u64,
            c.trade_count,
            c.taker_buy_base_volume.0 as u64,
            c.taker_buy_quote_volume.0 as u64,
            c.first_trade_id,
            c.last_trade_id,
        ];
        for field in fields {
            bytes.extend_from_slice(&field.to_le_bytes());
        }
    }
    bytes
}

fn decode(bytes: &[u8]) -> Option<Vec<Candle>> {
    if bytes.len() % CANDLE_BYTES != 0 {
        return None;
    }
    let candles = bytes
        .chunks_exact(CANDLE_BYTES)
        .map(|chunk| {
            let f = |i: usize| {
                let mut word = [0; 8];
                word.copy_from_slice(&chunk[i * 8..i * 8 + 8]);
                u64::from_le_bytes(word)
            };
            let signed = |i: usize| f(i) as i64;
            Candle {
                open_time_ms: f(0),
                open: Price(signed(1)),
                high: Price(signed(2)),
                low: Price(signed(3)),
                close: Price(signed(4)),
                volume: Qty(signed(5)),
                close_time_ms: f(6),
                quote_volume: Amount(signed(7)),
                trade_count: f(8),
                taker_buy_base_volume: Qty(signed(9)),
                taker_buy_quote_volume: Amount(signed(10)),
                first_trade_id: f(11),
                last_trade_id: f(12),
            }
        })
        .collect();
    Some(candles)
}

fn render(candles: &[Candle]) -> Vec<u8> {
    let mut w = JsonWriter::with_capacity(160 * candles.len() + 2);
    w.begin_array();
    for c in candles {
        w.begin_array()
            .uint(c.open_time_ms)
            .decimal(c.open.0)
            .decimal(c.high.0)
            .decimal(c.low.0);
        w.decimal(c.close.0)
            .decimal(c.volume.0)
            .uint(c.close_time_ms)
            .decimal(c.quote_volume.0);
        w.uint(c.trade_count)
            .decimal(c.taker_buy_base_volume.0)
            .decimal(c.taker_buy_quote_volume.0)
            .str("0");
        w.end_array();
    }
    w.end_array();
    w.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candles_come_back_from_the_cache_as_they_went_in() {
        let candle = Candle {
            open_time_ms: 1_767_225_600_000,
            open: Price(3_000_000_000_000),
            high: Price(3_100_000_000_000),
            low: Price(2_900_000_000_000),
            close: Price(3_050_000_000_000),
            volume: Qty(i64::MAX),
            close_time_ms: 1_767_225_659_999,
            quote_volume: Amount(1),
            trade_count: 7,
            taker_buy_base_volume: Qty(3),
            taker_buy_quote_volume: Amount(4),
            first_trade_id: 11,
            last_trade_id: 17,
        };
        let other = Candle {
            open_time_ms: 1_767_225_660_000,
            ..candle
        };
        let bytes = encode(&[candle, other]);
        assert_eq!(bytes.len(), 2 * CANDLE_BYTES);
        assert_eq!(decode(&bytes), Some(vec![candle, other]));
        assert_eq!(decode(&bytes[1..]), None);
        assert_eq!(decode(&[]), Some(vec![]));
    }
}
