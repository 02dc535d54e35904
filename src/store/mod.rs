//! The history store: every order, trade and balance change a shard's
//! durable records produced, kept for as long as the operator keeps them,
//! behind one interface with two engines (SQLite embedded by default,
//! PostgreSQL as the system of record).
//!
//! The journal stays the source of truth; the store is written behind it
//! and never on the order path. A shard's writer hands the store
//! [`Batch`]es: the rows that the shard's records up to `progress` produced
//! since the previous batch. An engine applies a batch in one transaction
//! together with the shard's progress, and skips a batch its progress
//! already covers, so that a writer that restarts from an older position
//! (after `kill -9` of the server or of the database) writes every row
//! exactly once.
//!
//! Engines run on a thread of their own (SQLite, whose calls block) or on
//! a shard's executor over the shard's own connections (PostgreSQL, whose
//! calls are asynchronous); a blocking call never runs on a shard's
//! executor thread.
//!
//! **Invariant:** money is exact: integers of 10⁻⁸ units here and in
//! SQLite, `NUMERIC` in PostgreSQL; never floating point.
//!
//! **Invariant:** a batch is applied whole or not at all, and at most once
//! per (shard, generation, lsn).

pub mod backlog;
pub mod convert;
pub mod export;
pub mod postgres;
pub mod rows;
pub mod shard;
pub mod sqlite;
pub mod sqlite_writer;
#[cfg(test)]
mod suite;

pub use rows::{LedgerRow, OrderRow, Row, TradeRow, TransferId, TransferRow};
pub use sqlite::HISTORY_FILE;

use crate::marketdata::{Candle, Interval, TapeTrade};
use tradsys_engine::num::{Amount, Price, Qty};

/// Rows one history query returns at most (Binance's `limit` maximum).
pub const QUERY_ROWS_MAX: usize = 1000;
/// Rows one transfers query returns at most: Binance's `limit` maximum
/// past the largest `offset` the wallet history endpoints take.
pub const TRANSFER_QUERY_ROWS_MAX: usize = 11_000;
/// Rows one batch carries at most; a writer splits larger ones.
pub const BATCH_ROWS_MAX: usize = 65_536;

/// How far a shard's history is in the store: every row that the records
/// of journal generation `generation` up to `lsn` produced.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Progress {
    pub generation: u64,
    pub lsn: u64,
}

/// Rows of one shard, in the order their records were journaled, and the
/// position they bring the shard's progress to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    pub shard: u32,
    pub progress: Progress,
    pub rows: Vec<Row>,
}

/// Why a store call failed. Every variant is an operating error: the
/// caller retries (writes) or answers the client with an error (reads).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("history store: {0}")]
    Engine(String),
    #[error("history store: schema version {found} is newer than this build's {known}")]
    SchemaTooNew { found: u32, known: u32 },
    #[error("history store: a batch of {0} rows is over the limit of {BATCH_ROWS_MAX}")]
    BatchTooLarge(usize),
    #[error("history store: corrupt row: {0}")]
    Corrupt(String),
    #[error("history store: no answer within {0} ms")]
    Timeout(u64),
    /// The store's disk is full: it cannot write, but it still answers.
    #[error("history store: no space left: {0}")]
    Full(String),
    #[error("history store unavailable (circuit breaker open)")]
    Unavailable,
}

/// `allOrders`: a user's orders in one market, in order id order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OrdersQuery<'a> {
    pub user: u64,
    pub symbol: &'a str,
    /// Orders with ids from this one on (Binance's `orderId`).
    pub from_id: Option<u64>,
    pub start_ms: Option<u64>,
    pub end_ms: Option<u64>,
    pub limit: usize,
}

/// `myTrades`: a user's trades in one market, in trade id order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TradesQuery<'a> {
    pub user: u64,
    pub symbol: &'a str,
    /// Only the trades of this order (Binance's `orderId`).
    pub order_id: Option<u64>,
    /// Trades with ids from this one on (Binance's `fromId`).
    pub from_id: Option<u64>,
    pub start_ms: Option<u64>,
    pub end_ms: Option<u64>,
    pub limit: usize,
}

/// `deposit/hisrec` and `withdraw/history`: a user's deposits or
/// withdrawals in a time window, the newest `limit` (newest first, see
/// [`TransferRow::newest_first`]). Owned, to cross to another thread.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransfersQuery {
    pub user: u64,
    /// `Deposit` or `Withdrawal`.
    pub cause: rows::LedgerCause,
    pub asset: Option<String>,
    pub start_ms: u64,
    pub end_ms: u64,
    /// Only these transfers, when given (Binance's `txId` and `idList`).
    pub ids: Option<Vec<TransferId>>,
    pub limit: usize,
}

impl TransfersQuery {
    /// Whether the user's ledger entry `entry`, the transfer `id`, is one
    /// the query selects.
    pub fn selects(&self, id: &TransferId, entry: &LedgerRow) -> bool {
        entry.account == self.user
            && entry.cause == self.cause
            && self.asset.as_ref().is_none_or(|a| *a == entry.asset)
            && (self.start_ms..=self.end_ms).contains(&entry.time_ms)
            && self.ids.as_ref().is_none_or(|ids| ids.contains(id))
    }

    /// The rows the query may return: at most [`TRANSFER_QUERY_ROWS_MAX`].
    pub fn rows_max(&self) -> usize {
        self.limit.min(TRANSFER_QUERY_ROWS_MAX)
    }
}

/// Which rows of a list a query selects, the way Binance's history
/// endpoints do: from an id on, or from a start time on, the oldest first;
/// without either, the newest `limit` rows (still oldest first).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Window {
    Oldest,
    Newest,
}

impl OrdersQuery<'_> {
    pub fn window(&self) -> Window {
        if self.from_id.is_some() || self.start_ms.is_some() {
            Window::Oldest
        } else {
            Window::Newest
        }
    }
}

impl TradesQuery<'_> {
    pub fn window(&self) -> Window {
        if self.from_id.is_some() || self.start_ms.is_some() || self.order_id.is_some() {
            Window::Oldest
        } else {
            Window::Newest
        }
    }
}

/// A market's candles of `interval` from the trades with times in
/// `[from_ms, to_ms)`: klines older than memory keeps (`api::klines`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CandlesQuery {
    pub symbol: String,
    pub interval: Interval,
    pub from_ms: u64,
    pub to_ms: u64,
}

/// The candles one engine holds for a [`CandlesQuery`], as parts to merge
/// with the backlogs' (see [`Candle::merge`]), in open time order; and,
/// read in the same transaction, how far each shard whose rows it holds
/// was in the store: that shard's rows after this position are still in
/// its backlog.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CandleParts {
    pub candles: Vec<Candle>,
    pub progress: Vec<(u32, Option<Progress>)>,
}

/// Adds one trade to the parts of `into`.
pub fn fold_candle(interval: Interval, trade: &TapeTrade, into: &mut std::collections::BTreeMap<u64, Candle>) {
    merge_candles(into, [Candle::of_trade(interval, trade)]);
}

/// Merges candle parts into `into` (see [`Candle::merge`]).
pub fn merge_candles(into: &mut std::collections::BTreeMap<u64, Candle>, parts: impl IntoIterator<Item = Candle>) {
    for part in parts {
        into.entry(part.open_time_ms)
            .and_modify(|candle| candle.merge(&part))
            .or_insert(part);
    }
}

/// A buyer's trade row as the tape has it.
pub fn tape_trade(row: &TradeRow) -> TapeTrade {
    TapeTrade {
        id: row.trade_id,
        price: Price(row.price),
        qty: Qty(row.qty),
        quote_qty: Amount(row.quote_qty),
        time_ms: row.time_ms,
        // The buyer's row: the buyer made the trade when it was the maker.
        is_buyer_maker: row.is_maker,
        taker_order: 0,
    }
}

/// One engine of the history store. The futures are not `Send`: an engine
/// lives on one thread (SQLite: its futures finish at once, so the thread
/// that owns it blocks; PostgreSQL: a shard's executor, on the shard's own
/// connections).
// The futures are deliberately not `Send` (see above), which is what this
// lint warns about.
#[allow(async_fn_in_trait)]
pub trait HistoryStore {
    /// Brings the schema to this build's version (idempotent); returns the
    /// version it found.
    async fn migrate(&mut self) -> Result<u32, StoreError>;

    /// Where `shard`'s history stands, `None` before its first batch.
    async fn progress(&mut self, shard: u32) -> Result<Option<Progress>, StoreError>;

    /// Applies `batch` and its progress in one transaction; a batch at or
    /// behind the stored progress is skipped. Returns whether it was
    /// applied.
    async fn write(&mut self, batch: &Batch) -> Result<bool, StoreError>;

    /// One order of `user` in `symbol` by its id, in its latest state.
    async fn order(&mut self, user: u64, symbol: &str, order_id: u64) -> Result<Option<OrderRow>, StoreError>;

    /// One order of `user` in `symbol` by its client order id: the newest
    /// order that carried it.
    async fn order_by_client_id(
        &mut self,
        user: u64,
        symbol: &str,
        client_id: &str,
    ) -> Result<Option<OrderRow>, StoreError>;

    async fn orders(&mut self, query: &OrdersQuery<'_>) -> Result<Vec<OrderRow>, StoreError>;

    async fn trades(&mut self, query: &TradesQuery<'_>) -> Result<Vec<TradeRow>, StoreError>;

    /// The deposits or withdrawals a query selects, newest first.
    async fn transfers(&mut self, query: &TransfersQuery) -> Result<Vec<TransferRow>, StoreError>;

    /// Every ledger entry of `user`, oldest first (for audits and tests).
    async fn ledger(&mut self, user: u64) -> Result<Vec<LedgerRow>, StoreError>;

    /// The market's candles the engine holds for `query`, with the
    /// progress of `shards` read in the same transaction.
    async fn candles(&mut self, query: &CandlesQuery, shards: &[u32]) -> Result<CandleParts, StoreError>;

    /// The time of the market's first trade the engine holds (by trade
    /// id), if any: where older candles start.
    async fn first_trade_ms(&mut self, symbol: &str) -> Result<Option<u64>, StoreError>;
}

/// Checks a batch against the limits every engine shares.
pub fn check_batch(batch: &Batch) -> Result<(), StoreError> {
    if batch.rows.len() > BATCH_ROWS_MAX {
        return Err(StoreError::BatchTooLarge(batch.rows.len()));
    }
    Ok(())
}

/// The rows a query may return: at least one, at most [`QUERY_ROWS_MAX`].
pub fn clamp_limit(limit: usize) -> usize {
    limit.clamp(1, QUERY_ROWS_MAX)
}

/// The condition of the partial index over deposits and withdrawals
/// (schema version 3 of both engines), written verbatim into every query
/// that should use the index: both planners then see that it applies.
pub(crate) const TRANSFER_CAUSES: &str = "cause IN ('DEPOSIT', 'WITHDRAWAL')";

/// The SQL condition that selects `ids` by their ledger columns, for the
/// query's `ids` filter: integers only, so it is written into the text.
pub(crate) fn transfer_ids_condition(ids: Option<&[TransferId]>) -> String {
    let Some(ids) = ids else {
        return String::new();
    };
    let tuples: Vec<String> = ids
        .iter()
        .map(|id| format!("({}, {}, {})", id.shard, id.generation, id.lsn))
        .collect();
    format!("AND (shard, generation, reference) IN (VALUES {})", tuples.join(", "))
}

/// A ledger entry's delta as the amount of a transfer of `cause`: a
/// deposit adds to the user's balance, a withdrawal takes from it.
pub(crate) fn transfer_amount(cause: rows::LedgerCause, delta: i64) -> Result<i64, StoreError> {
    let amount = match cause {
        rows::LedgerCause::Deposit => delta,
        _ => delta.checked_neg().unwrap_or(0),
    };
    if amount <= 0 {
        return Err(StoreError::Corrupt(format!(
            "a {} ledger entry of {delta} units",
            cause.as_str()
        )));
    }
    Ok(amount)
}

/// A u64 id or time as the signed 64-bit integer databases store.
pub(crate) fn signed(value: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::Corrupt(format!("{what} {value} does not fit a signed integer")))
}

/// A stored integer as the u64 it was written from.
pub(crate) fn unsigned(value: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("{what} {value} is negative")))
}

/// An id or time bound of a query, `default` when absent; a value past
/// `i64::MAX` bounds nothing below it.
pub(crate) fn bound(value: Option<u64>, default: i64) -> i64 {
    value.map_or(default, |v| i64::try_from(v).unwrap_or(i64::MAX))
}

/// The newest rows come back newest first; lists are oldest first.
pub(crate) fn in_list_order<T>(mut rows: Vec<T>, window: Window) -> Vec<T> {
    if window == Window::Newest {
        rows.reverse();
    }
    rows
}
