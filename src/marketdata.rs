//! Public market data of one market: the trade tape, aggregate trades,
//! klines for the sixteen Binance intervals, the rolling 24-hour ticker, the
//! 5-minute average price and the last price.
//!
//! A [`MarketData`] lives on the shard that owns its market. The shard calls
//! [`MarketData::record`] with every trade its book produces, in trade-id
//! order, and answers `/api/v3/trades`, `historicalTrades`, `aggTrades`,
//! `klines`, `uiKlines`, `ticker/24hr`, `ticker/price` and `avgPrice` from
//! the queries here. The module does no I/O and reads no clock: the time of
//! a trade and the `now_ms` of a query are inputs. Book-side fields (bid,
//! ask) belong to the book and are left to the caller.
//!
//! **Invariant:** memory is bounded and allocated up front. Every history is
//! a ring sized from [`MarketDataLimits`] when the market is created, so
//! `record` does O(1) work (17 ring updates plus one aggregate update) and
//! never allocates. With the default limits a market holds
//! [`DEFAULT_MEMORY_BYTES_PER_MARKET`] = 2_666_712 bytes (about 2.7 MB):
//!
//! * the newest 10_000 trades (56 bytes each, 560_000 bytes). Binance serves
//!   older trades from a database; tradsys keeps none, so `historicalTrades`
//!   for an older `fromId` is refused with [`QueryError::NotKept`];
//! * the newest 10_000 aggregate trades (56 bytes each, 560_000 bytes);
//! * the newest 1_000 candles of each of the 16 intervals (88 bytes each,
//!   1_408_000 bytes), so 1s klines reach back 1_000 trading seconds and 1M
//!   klines 1_000 trading months;
//! * 1_441 one-minute buckets (96 bytes each, 138_336 bytes) for the
//!   24-hour ticker and the average price.
//!
//! **Invariant:** trade ids strictly increase (the book hands them out);
//! a repeated or older id is a programmer error and panics. Trade times are
//! made non-decreasing: a trade stamped earlier than the previous one is
//! filed at the previous one's time, so every ring stays sorted by time and
//! by id and queries can binary-search.
//!
//! Choices where Binance's documents are silent or where memory is bounded:
//!
//! * Candles exist only for intervals that had trades; an interval without
//!   trades is a gap, not a synthesized flat candle. `uiKlines` returns the
//!   same candles as `klines`.
//! * Interval boundaries are UTC only (`timeZone` 0). Fixed intervals up to
//!   3d are aligned to multiples of their length since the Unix epoch, 1w
//!   candles open on Monday 00:00 UTC and 1M candles on the first of the
//!   month 00:00 UTC.
//! * The 24-hour ticker has one-minute granularity, like Binance's
//!   `/api/v3/ticker`: its window opens at the minute boundary at or before
//!   `now_ms - 24h` and closes at `now_ms`, so it spans up to 59_999 ms more
//!   than 24 hours. The average price uses the same buckets over 5 minutes.
//! * Aggregate ids start at 0 for each market and restart with the process.

use std::mem::size_of;
use tradsys_engine::msg::Fill;
use tradsys_engine::num::{Amount, Price, Qty, UNIT};

/// Trades kept per market unless configured otherwise.
pub const TRADES_KEPT_PER_MARKET_MAX: usize = 10_000;
/// Aggregate trades kept per market unless configured otherwise.
pub const AGG_TRADES_KEPT_PER_MARKET_MAX: usize = 10_000;
/// Candles kept per interval unless configured otherwise.
pub const KLINES_KEPT_PER_INTERVAL_MAX: usize = 1_000;
/// Rows a query returns when the request names no `limit` (Binance: 500).
pub const QUERY_ROWS_DEFAULT: usize = 500;
/// Rows a query returns at most (Binance: 1000); larger limits are capped.
pub const QUERY_ROWS_MAX: usize = 1_000;
/// Longest `aggTrades` time window, inclusive of both ends' difference.
pub const AGG_TRADES_WINDOW_MS_MAX: u64 = HOUR_MS;
/// The rolling ticker's nominal window.
pub const TICKER_WINDOW_MS: u64 = DAY_MS;
/// Minutes `avgPrice` averages over; reported as its `mins`.
pub const AVG_PRICE_MINS: u64 = 5;
/// Minute buckets kept: the ticker window rounded down to a minute spans
/// one bucket more than 24 h of minutes.
pub const MINUTES_KEPT_MAX: usize = (TICKER_WINDOW_MS / MINUTE_MS) as usize + 1;

/// Memory one market holds with the default limits; see the module doc.
pub const DEFAULT_MEMORY_BYTES_PER_MARKET: usize = MarketDataLimits::DEFAULT.memory_bytes();

const _: () = assert!(QUERY_ROWS_DEFAULT <= QUERY_ROWS_MAX);
const _: () = assert!(QUERY_ROWS_MAX <= TRADES_KEPT_PER_MARKET_MAX);
const _: () = assert!(QUERY_ROWS_MAX <= AGG_TRADES_KEPT_PER_MARKET_MAX);
const _: () = assert!(QUERY_ROWS_MAX <= KLINES_KEPT_PER_INTERVAL_MAX);
const _: () = assert!(AVG_PRICE_MINS * MINUTE_MS <= TICKER_WINDOW_MS);

const SECOND_MS: u64 = 1_000;
const MINUTE_MS: u64 = 60 * SECOND_MS;
const HOUR_MS: u64 = 60 * MINUTE_MS;
const DAY_MS: u64 = 24 * HOUR_MS;
const WEEK_MS: u64 = 7 * DAY_MS;
/// The Unix epoch fell on a Thursday; Monday 00:00 is 3 days before it.
const EPOCH_AFTER_MONDAY_MS: u64 = 3 * DAY_MS;

/// Why a query was refused; the server maps each to a Binance error code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// The requested id is older than anything kept in memory.
    #[error("id is older than the oldest kept id {oldest_kept_id}")]
    NotKept { oldest_kept_id: u64 },
    /// `fromId` cannot be combined with `startTime` or `endTime`.
    #[error("combination of optional parameters invalid")]
    CombinationInvalid,
    /// `endTime - startTime` is longer than [`AGG_TRADES_WINDOW_MS_MAX`].
    #[error("time window longer than one hour")]
    WindowTooLong,
}

/// An interval name Binance does not define; the server answers -1120.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("Invalid interval.")]
pub struct IntervalError;

/// Sizes of the rings of one market; fixed when the market is created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MarketDataLimits {
    pub trades_kept_per_market_max: usize,
    pub agg_trades_kept_per_market_max: usize,
    pub klines_kept_per_interval_max: usize,
}

impl MarketDataLimits {
    pub const DEFAULT: MarketDataLimits = MarketDataLimits {
        trades_kept_per_market_max: TRADES_KEPT_PER_MARKET_MAX,
        agg_trades_kept_per_market_max: AGG_TRADES_KEPT_PER_MARKET_MAX,
        klines_kept_per_interval_max: KLINES_KEPT_PER_INTERVAL_MAX,
    };

    /// Bytes a market with these limits holds, rings and struct together.
    pub const fn memory_bytes(&self) -> usize {
        self.trades_kept_per_market_max * size_of::<TapeTrade>()
            + self.agg_trades_kept_per_market_max * size_of::<AggTrade>()
            + Interval::COUNT * self.klines_kept_per_interval_max * size_of::<Candle>()
            + MINUTES_KEPT_MAX * size_of::<MinuteBucket>()
            + size_of::<MarketData>()
    }
}

impl Default for MarketDataLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// One trade as the tape keeps it: the fields Binance's trade lists print
/// plus the taker order, which decides aggregation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TapeTrade {
    pub id: u64,
    pub price: Price,
    pub qty: Qty,
    pub quote_qty: Amount,
    pub time_ms: u64,
    pub is_buyer_maker: bool,
    pub taker_order: u64,
}

impl From<&Fill> for TapeTrade {
    fn from(fill: &Fill) -> Self {
        TapeTrade {
            id: fill.trade_id,
            price: fill.price,
            qty: fill.qty,
            quote_qty: fill.quote_qty,
            time_ms: fill.time_ms,
            is_buyer_maker: fill.is_buyer_maker(),
            taker_order: fill.taker_order,
        }
    }
}

/// Consecutive trades of one taker order at one price and one time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AggTrade {
    pub id: u64,
    pub price: Price,
    pub qty: Qty,
    pub first_trade_id: u64,
    pub last_trade_id: u64,
    pub time_ms: u64,
    pub is_buyer_maker: bool,
}

/// The parameters of `GET /api/v3/aggTrades`, `limit` already defaulted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AggTradesQuery {
    pub from_id: Option<u64>,
    pub start_time_ms: Option<u64>,
    pub end_time_ms: Option<u64>,
    pub limit: usize,
}

/// One kline, in the field order Binance prints it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candle {
    pub open_time_ms: u64,
    pub open: Price,
    pub high: Price,
    pub low: Price,
    pub close: Price,
    pub volume: Qty,
    pub close_time_ms: u64,
    pub quote_volume: Amount,
    pub trade_count: u64,
    pub taker_buy_base_volume: Qty,
    pub taker_buy_quote_volume: Amount,
}

impl Candle {
    fn first(interval: Interval, open_time_ms: u64, trade: &TapeTrade) -> Candle {
        let mut candle = Candle {
            open_time_ms,
            open: trade.price,
            high: trade.price,
            low: trade.price,
            close: trade.price,
            volume: Qty::ZERO,
            close_time_ms: interval.close_time_ms(open_time_ms),
            quote_volume: Amount::ZERO,
            trade_count: 0,
            taker_buy_base_volume: Qty::ZERO,
            taker_buy_quote_volume: Amount::ZERO,
        };
        candle.add(trade);
        candle
    }

    fn add(&mut self, trade: &TapeTrade) {
        self.high = self.high.max(trade.price);
        self.low = self.low.min(trade.price);
        self.close = trade.price;
        self.volume = add_qty(self.volume, trade.qty);
        self.quote_volume = add_amount(self.quote_volume, trade.quote_qty);
        self.trade_count += 1;
        // The buyer is the taker exactly when the buyer is not the maker.
        if !trade.is_buyer_maker {
            self.taker_buy_base_volume = add_qty(self.taker_buy_base_volume, trade.qty);
            self.taker_buy_quote_volume = add_amount(self.taker_buy_quote_volume, trade.quote_qty);
        }
    }
}

// Volumes saturate instead of wrapping: a month of a busy market's quote
// volume can approach i64's 9.2e10 whole units, and a pinned maximum is
// visibly wrong where a wrapped negative would be silently wrong.
fn add_qty(a: Qty, b: Qty) -> Qty {
    Qty(a.0.saturating_add(b.0))
}

fn add_amount(a: Amount, b: Amount) -> Amount {
    Amount(a.0.saturating_add(b.0))
}

/// A Binance kline interval.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Interval {
    S1,
    M1,
    M3,
    M5,
    M15,
    M30,
    H1,
    H2,
    H4,
    H6,
    H8,
    H12,
    D1,
    D3,
    W1,
    Mo1,
}

impl Interval {
    pub const COUNT: usize = 16;
    pub const ALL: [Interval; Interval::COUNT] = [
        Interval::S1,
        Interval::M1,
        Interval::M3,
        Interval::M5,
        Interval::M15,
        Interval::M30,
        Interval::H1,
        Interval::H2,
        Interval::H4,
        Interval::H6,
        Interval::H8,
        Interval::H12,
        Interval::D1,
        Interval::D3,
        Interval::W1,
        Interval::Mo1,
    ];

    /// Parses Binance's interval names; they are case-sensitive ("1m" is a
    /// minute, "1M" a month).
    pub fn parse(text: &str) -> Result<Interval, IntervalError> {
        Interval::ALL
            .into_iter()
            .find(|interval| interval.as_str() == text)
            .ok_or(IntervalError)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Interval::S1 => "1s",
            Interval::M1 => "1m",
            Interval::M3 => "3m",
            Interval::M5 => "5m",
            Interval::M15 => "15m",
            Interval::M30 => "30m",
            Interval::H1 => "1h",
            Interval::H2 => "2h",
            Interval::H4 => "4h",
            Interval::H6 => "6h",
            Interval::H8 => "8h",
            Interval::H12 => "12h",
            Interval::D1 => "1d",
            Interval::D3 => "3d",
            Interval::W1 => "1w",
            Interval::Mo1 => "1M",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// Length of every interval but the month, whose length varies.
    fn fixed_ms(self) -> u64 {
        match self {
            Interval::S1 => SECOND_MS,
            Interval::M1 => MINUTE_MS,
            Interval::M3 => 3 * MINUTE_MS,
            Interval::M5 => 5 * MINUTE_MS,
            Interval::M15 => 15 * MINUTE_MS,
            Interval::M30 => 30 * MINUTE_MS,
            Interval::H1 => HOUR_MS,
            Interval::H2 => 2 * HOUR_MS,
            Interval::H4 => 4 * HOUR_MS,
            Interval::H6 => 6 * HOUR_MS,
            Interval::H8 => 8 * HOUR_MS,
            Interval::H12 => 12 * HOUR_MS,
            Interval::D1 => DAY_MS,
            Interval::D3 => 3 * DAY_MS,
            Interval::W1 => WEEK_MS,
            Interval::Mo1 => 31 * DAY_MS,
        }
    }

    /// Open time of the candle holding `time_ms`.
    pub fn open_time_ms(self, time_ms: u64) -> u64 {
        match self {
            // The first days of 1970 belong to a week that opened before the
            // epoch; they are filed under time 0.
            Interval::W1 => {
                let since_monday = time_ms + EPOCH_AFTER_MONDAY_MS;
                (since_monday - since_monday % WEEK_MS).saturating_sub(EPOCH_AFTER_MONDAY_MS)
            }
            Interval::Mo1 => month_open_ms(time_ms),
            _ => time_ms - time_ms % self.fixed_ms(),
        }
    }

    /// Close time of the candle opened at `open_time_ms`: the last
    /// millisecond before the next candle opens.
    pub fn close_time_ms(self, open_time_ms: u64) -> u64 {
        match self {
            Interval::Mo1 => next_month_open_ms(open_time_ms) - 1,
            Interval::W1 => {
                let since_monday = open_time_ms + EPOCH_AFTER_MONDAY_MS;
                since_monday - since_monday % WEEK_MS + WEEK_MS - EPOCH_AFTER_MONDAY_MS - 1
            }
            _ => open_time_ms + self.fixed_ms() - 1,
        }
    }
}

/// Days since 1970-01-01 to (year, month 1..=12, day 1..=31), proleptic
/// Gregorian. Counts in 400-year eras of 146_097 days from 0000-03-01 so
/// that the leap day is the last day of each counted year.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let shifted = days + 719_468;
    let era = shifted / 146_097;
    let day_of_era = shifted % 146_097;
    let year_of_era = (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = era * 400 + year_of_era + u64::from(month <= 2);
    (year, month, day)
}

/// The inverse of [`civil_from_days`] for dates from 1970 on.
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let year = year - u64::from(month <= 2);
    let era = year / 400;
    let year_of_era = year % 400;
    let month_from_march = if month > 2 { month - 3 } else { month + 9 };
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

fn month_open_ms(time_ms: u64) -> u64 {
    let (year, month, _) = civil_from_days(time_ms / DAY_MS);
    days_from_civil(year, month, 1) * DAY_MS
}

fn next_month_open_ms(time_ms: u64) -> u64 {
    let (year, month, _) = civil_from_days(time_ms / DAY_MS);
    let (year, month) = if month == 12 { (year + 1, 1) } else { (year, month + 1) };
    days_from_civil(year, month, 1) * DAY_MS
}

/// Trades of one UTC minute, folded; the 24-hour ticker and the average
/// price sum these instead of keeping a day of trades.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct MinuteBucket {
    minute: u64,
    open: Price,
    high: Price,
    low: Price,
    close: Price,
    close_qty: Qty,
    volume: Qty,
    quote_volume: Amount,
    count: u64,
    first_id: u64,
    last_id: u64,
    last_time_ms: u64,
}

impl MinuteBucket {
    fn first(trade: &TapeTrade) -> MinuteBucket {
        MinuteBucket {
            minute: trade.time_ms / MINUTE_MS,
            open: trade.price,
            high: trade.price,
            low: trade.price,
            close: trade.price,
            close_qty: trade.qty,
            volume: trade.qty,
            quote_volume: trade.quote_qty,
            count: 1,
            first_id: trade.id,
            last_id: trade.id,
            last_time_ms: trade.time_ms,
        }
    }

    fn add(&mut self, trade: &TapeTrade) {
        self.high = self.high.max(trade.price);
        self.low = self.low.min(trade.price);
        self.close = trade.price;
        self.close_qty = trade.qty;
        self.volume = add_qty(self.volume, trade.qty);
        self.quote_volume = add_amount(self.quote_volume, trade.quote_qty);
        self.count += 1;
        self.last_id = trade.id;
        self.last_time_ms = trade.time_ms;
    }

    /// Folds a later bucket into this one.
    fn merge(&mut self, later: &MinuteBucket) {
        self.high = self.high.max(later.high);
        self.low = self.low.min(later.low);
        self.close = later.close;
        self.close_qty = later.close_qty;
        self.volume = add_qty(self.volume, later.volume);
        self.quote_volume = add_amount(self.quote_volume, later.quote_volume);
        self.count += later.count;
        self.last_id = later.last_id;
        self.last_time_ms = later.last_time_ms;
    }
}

/// `GET /api/v3/ticker/24hr` without the book's bid and ask fields.
/// Prices, quantities and amounts are 10⁻⁸ units; ids are trade ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ticker24h {
    /// `lastPrice - openPrice`; may be negative.
    pub price_change: Price,
    /// `priceChange / openPrice` in thousandths of a percent, rounded half
    /// away from zero; render with [`Ticker24h::price_change_percent`].
    pub price_change_percent_thousandths: i64,
    /// `quoteVolume / volume`, rounded down to 10⁻⁸.
    pub weighted_avg_price: Price,
    /// Price of the last trade before the window; zero if none is known.
    pub prev_close_price: Price,
    pub last_price: Price,
    pub last_qty: Qty,
    pub open_price: Price,
    pub high_price: Price,
    pub low_price: Price,
    pub volume: Qty,
    pub quote_volume: Amount,
    pub open_time_ms: u64,
    pub close_time_ms: u64,
    /// First and last trade id in the window; `None` (Binance prints -1)
    /// when the window has no trades.
    pub first_id: Option<u64>,
    pub last_id: Option<u64>,
    pub count: u64,
}

impl Ticker24h {
    /// `priceChangePercent` as Binance prints it: three decimals, e.g.
    /// "-95.960".
    pub fn price_change_percent(&self) -> String {
        thousandths_to_string(self.price_change_percent_thousandths)
    }
}

/// `GET /api/v3/avgPrice`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AvgPrice {
    pub mins: u64,
    /// Volume-weighted average of the window's trades, rounded down.
    pub price: Price,
    /// Time of the last trade in the window.
    pub close_time_ms: u64,
}

/// Renders a signed count of thousandths with exactly three decimals.
pub fn thousandths_to_string(thousandths: i64) -> String {
    let sign = if thousandths < 0 { "-" } else { "" };
    let magnitude = thousandths.unsigned_abs();
    format!("{sign}{}.{:03}", magnitude / 1_000, magnitude % 1_000)
}

/// `change / open` in thousandths of a percent, rounded half away from zero
/// as Binance's examples are ("-88.889" for -8/9); zero when `open` is zero.
fn percent_thousandths(change: i64, open: i64) -> i64 {
    if open == 0 {
        return 0;
    }
    let numerator = i128::from(change) * 100_000;
    let denominator = i128::from(open);
    let quotient = numerator / denominator;
    let remainder = numerator % denominator;
    let rounded = if 2 * remainder.abs() >= denominator.abs() {
        quotient + numerator.signum() * denominator.signum()
    } else {
        quotient
    };
    clamp_i64(rounded)
}

/// `quote / base` as a price in 10⁻⁸ units, rounded down; zero for no base.
fn weighted_price(quote: Amount, base: Qty) -> Price {
    if base.0 <= 0 {
        return Price::ZERO;
    }
    Price(clamp_i64(i128::from(quote.0) * i128::from(UNIT) / i128::from(base.0)))
}

fn clamp_i64(value: i128) -> i64 {
    i64::try_from(value).unwrap_or(if value < 0 { i64::MIN } else { i64::MAX })
}

/// A fixed-capacity ring, oldest element first. Its storage is allocated
/// once; pushing into a full ring overwrites the oldest element.
#[derive(Debug)]
struct Ring<T> {
    items: Vec<T>,
    /// Index in `items` of the oldest element once the ring is full.
    start: usize,
    capacity: usize,
}

impl<T: Copy> Ring<T> {
    fn with_capacity(capacity: usize) -> Ring<T> {
        assert!(capacity > 0, "a ring needs room for one element");
        Ring {
            items: Vec::with_capacity(capacity),
            start: 0,
            capacity,
        }
    }

    fn len(&self) -> usize {
        self.items.len()
    }

    /// Appends `item`, returning the element it evicted, if any.
    fn push(&mut self, item: T) -> Option<T> {
        if self.items.len() < self.capacity {
            self.items.push(item);
            return None;
        }
        let evicted = std::mem::replace(&mut self.items[self.start], item);
        self.start = (self.start + 1) % self.capacity;
        Some(evicted)
    }

    /// The element `index` places after the oldest.
    fn get(&self, index: usize) -> Option<&T> {
        if index >= self.items.len() {
            return None;
        }
        self.items.get((self.start + index) % self.capacity)
    }

    fn first(&self) -> Option<&T> {
        self.get(0)
    }

    fn last(&self) -> Option<&T> {
        self.get(self.items.len().checked_sub(1)?)
    }

    fn last_mut(&mut self) -> Option<&mut T> {
        let index = self.items.len().checked_sub(1)?;
        self.items.get_mut((self.start + index) % self.capacity)
    }

    /// The number of leading elements satisfying `pred`, which must hold
    /// for a prefix of the ring and fail for the rest.
    fn partition_point(&self, pred: impl Fn(&T) -> bool) -> usize {
        let (mut low, mut high) = (0, self.items.len());
        while low < high {
            let middle = low + (high - low) / 2;
            match self.get(middle) {
                Some(item) if pred(item) => low = middle + 1,
                _ => high = middle,
            }
        }
        low
    }

    /// Elements `from..to`, oldest first, at most `limit` of them.
    fn collect(&self, from: usize, to: usize, limit: usize) -> Vec<T> {
        let to = to.min(from.saturating_add(limit)).min(self.items.len());
        (from..to).filter_map(|index| self.get(index).copied()).collect()
    }

    /// The newest `limit` elements before `to`, oldest first.
    fn collect_newest(&self, to: usize, limit: usize) -> Vec<T> {
        let to = to.min(self.items.len());
        self.collect(to.saturating_sub(limit), to, limit)
    }

    /// Elements from the newest back while `keep` holds, newest first.
    fn iter_back_while<'a>(&'a self, keep: impl Fn(&T) -> bool + 'a) -> impl Iterator<Item = &'a T> + 'a {
        (0..self.items.len())
            .rev()
            .filter_map(move |index| self.get(index))
            .take_while(move |item| keep(item))
    }
}

/// All public market data of one market; see the module doc.
#[derive(Debug)]
pub struct MarketData {
    trades: Ring<TapeTrade>,
    aggs: Ring<AggTrade>,
    /// Taker order of the newest aggregate, which may still grow.
    agg_taker_order: u64,
    next_agg_id: u64,
    klines: [Ring<Candle>; Interval::COUNT],
    minutes: Ring<MinuteBucket>,
    /// Close of the newest minute bucket evicted from `minutes`: the
    /// previous close when every kept bucket is inside the window.
    evicted_close: Option<Price>,
}

impl MarketData {
    /// Allocates every ring of the market; called once, at start-up.
    pub fn new(limits: MarketDataLimits) -> MarketData {
        MarketData {
            trades: Ring::with_capacity(limits.trades_kept_per_market_max),
            aggs: Ring::with_capacity(limits.agg_trades_kept_per_market_max),
            agg_taker_order: 0,
            next_agg_id: 0,
            klines: std::array::from_fn(|_| Ring::with_capacity(limits.klines_kept_per_interval_max)),
            minutes: Ring::with_capacity(MINUTES_KEPT_MAX),
            evicted_close: None,
        }
    }

    /// Files one trade of this market. Ids must strictly increase.
    pub fn record(&mut self, trade: &TapeTrade) {
        let mut trade = *trade;
        if let Some(previous) = self.trades.last() {
            assert!(
                trade.id > previous.id,
                "trade id {} recorded after {}",
                trade.id,
                previous.id
            );
            trade.time_ms = trade.time_ms.max(previous.time_ms);
        }
        self.trades.push(trade);
        self.record_agg(&trade);
        for interval in Interval::ALL {
            record_candle(&mut self.klines[interval.index()], interval, &trade);
        }
        self.record_minute(&trade);
    }

    fn record_agg(&mut self, trade: &TapeTrade) {
        if let Some(agg) = self.aggs.last_mut() {
            if self.agg_taker_order == trade.taker_order
                && agg.price == trade.price
                && agg.time_ms == trade.time_ms
                && agg.is_buyer_maker == trade.is_buyer_maker
            {
                agg.qty = add_qty(agg.qty, trade.qty);
                agg.last_trade_id = trade.id;
                return;
            }
        }
        self.aggs.push(AggTrade {
            id: self.next_agg_id,
            price: trade.price,
            qty: trade.qty,
            first_trade_id: trade.id,
            last_trade_id: trade.id,
            time_ms: trade.time_ms,
            is_buyer_maker: trade.is_buyer_maker,
        });
        self.next_agg_id += 1;
        self.agg_taker_order = trade.taker_order;
    }

    fn record_minute(&mut self, trade: &TapeTrade) {
        let minute = trade.time_ms / MINUTE_MS;
        match self.minutes.last_mut() {
            Some(bucket) if bucket.minute == minute => bucket.add(trade),
            _ => {
                if let Some(evicted) = self.minutes.push(MinuteBucket::first(trade)) {
                    self.evicted_close = Some(evicted.close);
                }
            }
        }
    }

    /// `GET /api/v3/trades`: the newest `limit` trades, oldest first.
    pub fn recent(&self, limit: usize) -> Vec<TapeTrade> {
        self.trades.collect_newest(self.trades.len(), limit.min(QUERY_ROWS_MAX))
    }

    /// `GET /api/v3/historicalTrades` with `fromId`: up to `limit` trades
    /// from id `from_id` on, oldest first. Ids older than the tape are
    /// refused; ids newer than the newest trade give an empty list.
    pub fn from_id(&self, from_id: u64, limit: usize) -> Result<Vec<TapeTrade>, QueryError> {
        let Some(oldest) = self.trades.first() else {
            return Ok(Vec::new());
        };
        if from_id < oldest.id {
            return Err(QueryError::NotKept {
                oldest_kept_id: oldest.id,
            });
        }
        let from = self.trades.partition_point(|trade| trade.id < from_id);
        Ok(self.trades.collect(from, self.trades.len(), limit.min(QUERY_ROWS_MAX)))
    }

    /// `GET /api/v3/aggTrades`. With `from_id`, aggregates from that id on;
    /// with a time, those in `[start, end]` (a missing end is start + 1 h, a
    /// missing start is end - 1 h); with neither, the newest. Oldest first.
    pub fn agg_trades(&self, query: &AggTradesQuery) -> Result<Vec<AggTrade>, QueryError> {
        let limit = query.limit.min(QUERY_ROWS_MAX);
        match (query.from_id, query.start_time_ms, query.end_time_ms) {
            (None, None, None) => Ok(self.aggs.collect_newest(self.aggs.len(), limit)),
            (Some(from_id), None, None) => self.aggs_from_id(from_id, limit),
            (Some(_), _, _) => Err(QueryError::CombinationInvalid),
            (None, start, end) => self.aggs_in_window(start, end, limit),
        }
    }

    fn aggs_from_id(&self, from_id: u64, limit: usize) -> Result<Vec<AggTrade>, QueryError> {
        let Some(oldest) = self.aggs.first() else {
            return Ok(Vec::new());
        };
        if from_id < oldest.id {
            return Err(QueryError::NotKept {
                oldest_kept_id: oldest.id,
            });
        }
        let from = self.aggs.partition_point(|agg| agg.id < from_id);
        Ok(self.aggs.collect(from, self.aggs.len(), limit))
    }

    fn aggs_in_window(&self, start: Option<u64>, end: Option<u64>, limit: usize) -> Result<Vec<AggTrade>, QueryError> {
        let (start, end) = match (start, end) {
            (Some(start), Some(end)) => (start, end),
            (Some(start), None) => (start, start.saturating_add(AGG_TRADES_WINDOW_MS_MAX)),
            (None, Some(end)) => (end.saturating_sub(AGG_TRADES_WINDOW_MS_MAX), end),
            (None, None) => return Ok(Vec::new()),
        };
        if end.saturating_sub(start) > AGG_TRADES_WINDOW_MS_MAX {
            return Err(QueryError::WindowTooLong);
        }
        let from = self.aggs.partition_point(|agg| agg.time_ms < start);
        let to = self.aggs.partition_point(|agg| agg.time_ms <= end);
        Ok(self.aggs.collect(from, to, limit))
    }

    /// `GET /api/v3/klines` and `uiKlines`: candles whose open time lies in
    /// `[start, end]`, oldest first. With a start, the oldest `limit` from
    /// it; otherwise the newest `limit` up to `end` (or up to now).
    pub fn klines(
        &self,
        interval: Interval,
        start_time_ms: Option<u64>,
        end_time_ms: Option<u64>,
        limit: usize,
    ) -> Vec<Candle> {
        let ring = &self.klines[interval.index()];
        let limit = limit.min(QUERY_ROWS_MAX);
        let to = match end_time_ms {
            Some(end) => ring.partition_point(|candle| candle.open_time_ms <= end),
            None => ring.len(),
        };
        match start_time_ms {
            Some(start) => {
                let from = ring.partition_point(|candle| candle.open_time_ms < start);
                ring.collect(from, to, limit)
            }
            None => ring.collect_newest(to, limit),
        }
    }

    /// `GET /api/v3/ticker/price`: the price of the newest trade.
    pub fn last_price(&self) -> Option<Price> {
        self.trades.last().map(|trade| trade.price)
    }

    /// `GET /api/v3/avgPrice` at `now_ms`: the volume-weighted price of the
    /// trades since the minute boundary at or before `now_ms - 5 min`.
    /// `None` when that window has no trades.
    pub fn avg_price(&self, now_ms: u64) -> Option<AvgPrice> {
        let window = self.fold_window(now_ms, AVG_PRICE_MINS * MINUTE_MS)?;
        Some(AvgPrice {
            mins: AVG_PRICE_MINS,
            price: weighted_price(window.quote_volume, window.volume),
            close_time_ms: window.last_time_ms,
        })
    }

    /// `GET /api/v3/ticker/24hr` at `now_ms`; `None` for a market that has
    /// never traded. A market with no trade in the window reports zero
    /// statistics, no ids and its last trade's price and quantity.
    pub fn ticker_24h(&self, now_ms: u64) -> Option<Ticker24h> {
        let last = self.trades.last()?;
        let open_time_ms = window_open_minute(now_ms, TICKER_WINDOW_MS) * MINUTE_MS;
        let prev_close_price = self.close_before(open_time_ms / MINUTE_MS).unwrap_or(Price::ZERO);
        let Some(window) = self.fold_window(now_ms, TICKER_WINDOW_MS) else {
            return Some(quiet_ticker(last, prev_close_price, open_time_ms, now_ms));
        };
        let price_change = window.close.0.saturating_sub(window.open.0);
        Some(Ticker24h {
            price_change: Price(price_change),
            price_change_percent_thousandths: percent_thousandths(price_change, window.open.0),
            weighted_avg_price: weighted_price(window.quote_volume, window.volume),
            prev_close_price,
            last_price: window.close,
            last_qty: window.close_qty,
            open_price: window.open,
            high_price: window.high,
            low_price: window.low,
            volume: window.volume,
            quote_volume: window.quote_volume,
            open_time_ms,
            close_time_ms: now_ms,
            first_id: Some(window.first_id),
            last_id: Some(window.last_id),
            count: window.count,
        })
    }

    /// The minute buckets of the window of `window_ms` ending at `now_ms`,
    /// merged; `None` when none has trades. Buckets after `now_ms`'s minute
    /// are not yet in the window.
    fn fold_window(&self, now_ms: u64, window_ms: u64) -> Option<MinuteBucket> {
        let first_minute = window_open_minute(now_ms, window_ms);
        let last_minute = now_ms / MINUTE_MS;
        let mut in_window = self
            .minutes
            .iter_back_while(move |bucket| bucket.minute >= first_minute)
            .filter(move |bucket| bucket.minute <= last_minute);
        let newest = *in_window.next()?;
        Some(in_window.fold(newest, |later, earlier| {
            let mut merged = *earlier;
            merged.merge(&later);
            merged
        }))
    }

    /// Close of the newest bucket before `minute`, looking past evictions.
    fn close_before(&self, minute: u64) -> Option<Price> {
        let index = self.minutes.partition_point(|bucket| bucket.minute < minute);
        match index.checked_sub(1) {
            Some(index) => self.minutes.get(index).map(|bucket| bucket.close),
            None => self.evicted_close,
        }
    }
}

fn record_candle(ring: &mut Ring<Candle>, interval: Interval, trade: &TapeTrade) {
    let open_time_ms = interval.open_time_ms(trade.time_ms);
    match ring.last_mut() {
        Some(candle) if candle.open_time_ms == open_time_ms => candle.add(trade),
        _ => {
            ring.push(Candle::first(interval, open_time_ms, trade));
        }
    }
}

/// The first minute of a window of `window_ms` that ends at `now_ms`,
/// rounded down to the minute boundary as Binance's rolling ticker is.
fn window_open_minute(now_ms: u64, window_ms: u64) -> u64 {
    now_ms.saturating_sub(window_ms) / MINUTE_MS
}

fn quiet_ticker(last: &TapeTrade, prev_close_price: Price, open_time_ms: u64, now_ms: u64) -> Ticker24h {
    Ticker24h {
        price_change: Price::ZERO,
        price_change_percent_thousandths: 0,
        weighted_avg_price: Price::ZERO,
        prev_close_price,
        last_price: last.price,
        last_qty: last.qty,
        open_price: Price::ZERO,
        high_price: Price::ZERO,
        low_price: Price::ZERO,
        volume: Qty::ZERO,
        quote_volume: Amount::ZERO,
        open_time_ms,
        close_time_ms: now_ms,
        first_id: None,
        last_id: None,
        count: 0,
    }
}
