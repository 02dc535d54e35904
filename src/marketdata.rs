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
//! [`DEFAULT_MEMORY_BYTES_PER_MARKET`] = 2_923_128 bytes (about 2.9 MB):
//!
//! * the newest 10_000 trades (56 bytes each, 560_000 bytes). Binance serves
//!   older trades from a database; tradsys keeps none, so `historicalTrades`
//!   for an older `fromId` is refused with [`QueryError::NotKept`];
//! * the newest 10_000 aggregate trades (56 bytes each, 560_000 bytes);
//! * the newest 1_000 candles of each of the 16 intervals (104 bytes each,
//!   1_664_000 bytes), so 1s klines reach back 1_000 trading seconds and 1M
//!   klines 1_000 trading months;
//! * 1_441 one-minute buckets (96 bytes each, 138_336 bytes) for the
//!   24-hour ticker and the average price;
//! * the `MarketData` struct itself with its ring headers (792 bytes).
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
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
    /// Ids of the candle's first and last trade (the kline stream's `f`
    /// and `L`; REST klines do not show them).
    pub first_trade_id: u64,
    pub last_trade_id: u64,
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
            first_trade_id: trade.id,
            last_trade_id: trade.id,
        };
        candle.add(trade);
        candle
    }

    /// The candle of `interval` holding `trade` alone: a part that
    /// [`Candle::merge`] joins with the parts of the other trades.
    pub fn of_trade(interval: Interval, trade: &TapeTrade) -> Candle {
        Candle::first(interval, interval.open_time_ms(trade.time_ms), trade)
    }

    /// Adds `other`, a part of the same candle holding other trades,
    /// whichever part holds the earlier trades: the open is the first
    /// trade's price and the close the last one's, by trade id. Parts
    /// made from disjoint trades merge to the candle the ring makes.
    pub fn merge(&mut self, other: &Candle) {
        debug_assert_eq!(self.open_time_ms, other.open_time_ms);
        if other.first_trade_id < self.first_trade_id {
            self.open = other.open;
            self.first_trade_id = other.first_trade_id;
        }
        if other.last_trade_id > self.last_trade_id {
            self.close = other.close;
            self.last_trade_id = other.last_trade_id;
        }
        self.high = self.high.max(other.high);
        self.low = self.low.min(other.low);
        self.volume = add_qty(self.volume, other.volume);
        self.quote_volume = add_amount(self.quote_volume, other.quote_volume);
        self.trade_count += other.trade_count;
        self.taker_buy_base_volume = add_qty(self.taker_buy_base_volume, other.taker_buy_base_volume);
        self.taker_buy_quote_volume = add_amount(self.taker_buy_quote_volume, other.taker_buy_quote_volume);
    }

    fn add(&mut self, trade: &TapeTrade) {
        self.high = self.high.max(trade.price);
        self.low = self.low.min(trade.price);
        self.close = trade.price;
        self.volume = add_qty(self.volume, trade.qty);
        self.quote_volume = add_amount(self.quote_volume, trade.quote_qty);
        self.trade_count += 1;
        self.last_trade_id = trade.id;
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

    /// Length of the interval; for the month, whose length varies, the
    /// longest month, which aligns nothing (see [`month_open_ms`]).
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

    /// The number of the candle holding `time_ms`, counting the candle
    /// that holds the epoch as 0; the inverse of [`Interval::nth_open_ms`].
    pub fn candle_number(self, time_ms: u64) -> u64 {
        match self {
            Interval::W1 => time_ms.saturating_add(EPOCH_AFTER_MONDAY_MS) / WEEK_MS,
            Interval::Mo1 => {
                let (year, month, _) = civil_from_days(time_ms / DAY_MS);
                (year - 1970) * 12 + month - 1
            }
            _ => time_ms / self.fixed_ms(),
        }
    }

    /// Open time of candle number `number` (see `candle_number`).
    pub fn nth_open_ms(self, number: u64) -> u64 {
        match self {
            Interval::W1 => number.saturating_mul(WEEK_MS).saturating_sub(EPOCH_AFTER_MONDAY_MS),
            Interval::Mo1 => days_from_civil(1970 + number / 12, number % 12 + 1, 1).saturating_mul(DAY_MS),
            _ => number.saturating_mul(self.fixed_ms()),
        }
    }

    /// Open time of the candle holding `time_ms`.
    pub fn open_time_ms(self, time_ms: u64) -> u64 {
        match self {
            // The first days of 1970 belong to a week that opened before the
            // epoch; they are filed under time 0.
            Interval::W1 => {
                let since_monday = time_ms.saturating_add(EPOCH_AFTER_MONDAY_MS);
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
                let since_monday = open_time_ms.saturating_add(EPOCH_AFTER_MONDAY_MS);
                since_monday - since_monday % WEEK_MS + WEEK_MS - EPOCH_AFTER_MONDAY_MS - 1
            }
            _ => open_time_ms + self.fixed_ms() - 1,
        }
    }
}

/// Days since 1970-01-01 to (year, month 1..=12, day 1..=31), proleptic
/// Gregorian. Counts in 400-year eras of 146_097 days from 0000-03-01 so
/// that the leap day is the last day of each counted year.
pub(crate) fn civil_from_days(days: u64) -> (u64, u64, u64) {
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
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
#[derive(Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
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
#[derive(Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
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

    /// Keeps `klines_kept` candles of each interval from now on (the
    /// operator's `klines_kept_per_interval_max`, applied at every start
    /// to new and recovered markets alike): a smaller ring keeps the
    /// newest candles of the old one. Allocates only when the size
    /// changes.
    pub fn keep_klines(&mut self, klines_kept: usize) {
        for ring in &mut self.klines {
            if ring.capacity != klines_kept {
                let mut resized = Ring::with_capacity(klines_kept);
                for candle in ring.collect_newest(ring.len(), klines_kept) {
                    resized.push(candle);
                }
                *ring = resized;
            }
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

    /// Open time of the oldest candle of `interval` memory keeps, once its
    /// ring is full: older candles may have been dropped (and are rebuilt
    /// from the history store, see `api::klines`). `None` while the ring
    /// still holds every candle the market ever had.
    pub fn klines_kept_from(&self, interval: Interval) -> Option<u64> {
        let ring = &self.klines[interval.index()];
        if ring.len() < ring.capacity {
            return None;
        }
        ring.first().map(|candle| candle.open_time_ms)
    }

    /// The id the next aggregate trade will get.
    pub fn next_agg_id(&self) -> u64 {
        self.next_agg_id
    }

    /// Aggregates from id `from_id` on (at most `limit`), oldest first; for
    /// the aggTrade stream, which sends each aggregate once it is complete.
    pub fn aggs_since(&self, from_id: u64, limit: usize) -> Vec<AggTrade> {
        let from = self.aggs.partition_point(|agg| agg.id < from_id);
        self.aggs.collect(from, self.aggs.len(), limit)
    }

    /// The newest candle of `interval`, if it had a trade.
    pub fn newest_candle(&self, interval: Interval) -> Option<Candle> {
        self.klines[interval.index()].last().copied()
    }

    /// The candle of `interval` opened at `open_time_ms`, if kept.
    pub fn candle_at(&self, interval: Interval, open_time_ms: u64) -> Option<Candle> {
        let ring = &self.klines[interval.index()];
        let index = ring.partition_point(|candle| candle.open_time_ms < open_time_ms);
        ring.get(index).filter(|c| c.open_time_ms == open_time_ms).copied()
    }

    /// The newest `limit` candles of `interval` opened after `after` (all
    /// kept candles for `None`), oldest first.
    pub fn candles_after(&self, interval: Interval, after: Option<u64>, limit: usize) -> Vec<Candle> {
        let ring = &self.klines[interval.index()];
        let from = after.map_or(0, |t| ring.partition_point(|candle| candle.open_time_ms <= t));
        ring.collect(from.max(ring.len().saturating_sub(limit)), ring.len(), limit)
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
        self.ticker_since(window_open_minute(now_ms, TICKER_WINDOW_MS), now_ms)
    }

    /// The statistics of the minutes from `open_minute` (minutes since the
    /// epoch, at most `TICKER_WINDOW_MS` back) to `now_ms`: the rolling
    /// ticker of any window up to a day, and the trading day's. `None` for
    /// a market that has never traded.
    pub fn ticker_since(&self, open_minute: u64, now_ms: u64) -> Option<Ticker24h> {
        let last = self.trades.last()?;
        let open_minute = open_minute.max(window_open_minute(now_ms, TICKER_WINDOW_MS));
        let open_time_ms = open_minute * MINUTE_MS;
        let prev_close_price = self.close_before(open_minute).unwrap_or(Price::ZERO);
        let Some(window) = self.fold_from(open_minute, now_ms) else {
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
        self.fold_from(window_open_minute(now_ms, window_ms), now_ms)
    }

    /// The minute buckets from `first_minute` to `now_ms`'s minute, merged.
    fn fold_from(&self, first_minute: u64, now_ms: u64) -> Option<MinuteBucket> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn price(text: &str) -> Price {
        Price::parse(text).unwrap()
    }

    fn qty(text: &str) -> Qty {
        Qty::parse(text).unwrap()
    }

    /// A trade with its quote quantity computed exactly from price and qty.
    fn trade(id: u64, price: Price, qty: Qty, time_ms: u64, taker_order: u64) -> TapeTrade {
        let quote = i128::from(price.0) * i128::from(qty.0) / i128::from(UNIT);
        TapeTrade {
            id,
            price,
            qty,
            quote_qty: Amount(i64::try_from(quote).unwrap()),
            time_ms,
            is_buyer_maker: false,
            taker_order,
        }
    }

    fn market_with(trades: &[TapeTrade]) -> MarketData {
        let mut market = MarketData::new(MarketDataLimits::default());
        for trade in trades {
            market.record(trade);
        }
        market
    }

    #[test]
    fn default_memory_per_market_is_as_documented() {
        assert_eq!(size_of::<TapeTrade>(), 56);
        assert_eq!(size_of::<AggTrade>(), 56);
        assert_eq!(size_of::<Candle>(), 104);
        assert_eq!(size_of::<MinuteBucket>(), 96);
        assert_eq!(DEFAULT_MEMORY_BYTES_PER_MARKET, 2_923_128);
    }

    #[test]
    fn empty_market_answers_empty() {
        let market = MarketData::new(MarketDataLimits::default());
        assert!(market.recent(500).is_empty());
        assert_eq!(market.from_id(0, 500), Ok(Vec::new()));
        assert_eq!(market.from_id(u64::MAX, 500), Ok(Vec::new()));
        let queries = [
            AggTradesQuery {
                limit: 500,
                ..Default::default()
            },
            AggTradesQuery {
                from_id: Some(7),
                limit: 500,
                ..Default::default()
            },
            AggTradesQuery {
                start_time_ms: Some(1),
                limit: 500,
                ..Default::default()
            },
            AggTradesQuery {
                end_time_ms: Some(1),
                limit: 500,
                ..Default::default()
            },
        ];
        for query in queries {
            assert_eq!(market.agg_trades(&query), Ok(Vec::new()), "{query:?}");
        }
        for interval in Interval::ALL {
            assert!(market.klines(interval, None, None, 1000).is_empty());
            assert!(market.klines(interval, Some(0), Some(u64::MAX), 1000).is_empty());
        }
        assert_eq!(market.last_price(), None);
        assert_eq!(market.avg_price(1_700_000_000_000), None);
        assert_eq!(market.ticker_24h(1_700_000_000_000), None);
        assert_eq!(market.ticker_24h(0), None);
    }

    #[test]
    fn tape_trade_from_fill_keeps_taker_and_side() {
        use tradsys_engine::order::{MarketId, Side};
        let fill = Fill {
            market: MarketId(3),
            trade_id: 41,
            price: price("2.5"),
            qty: qty("4"),
            quote_qty: Amount::parse("10").unwrap(),
            taker_order: 900,
            taker_user: 7,
            taker_side: Side::Sell,
            maker_order: 800,
            maker_user: 8,
            time_ms: 1_234,
        };
        let expected = TapeTrade {
            id: 41,
            price: price("2.5"),
            qty: qty("4"),
            quote_qty: Amount::parse("10").unwrap(),
            time_ms: 1_234,
            is_buyer_maker: true,
            taker_order: 900,
        };
        assert_eq!(TapeTrade::from(&fill), expected);
        let buy = Fill {
            taker_side: Side::Buy,
            ..fill
        };
        assert!(!TapeTrade::from(&buy).is_buyer_maker);
    }

    #[test]
    fn interval_names_parse_exactly() {
        for interval in Interval::ALL {
            assert_eq!(Interval::parse(interval.as_str()), Ok(interval));
        }
        let names: Vec<&str> = Interval::ALL.iter().map(|i| i.as_str()).collect();
        assert_eq!(
            names,
            ["1s", "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w", "1M"]
        );
        for bad in ["", "1S", "1H", "2m", "1mo", "60s", "1y", "1 m", "m1"] {
            assert_eq!(Interval::parse(bad), Err(IntervalError), "{bad:?}");
        }
    }

    #[test]
    fn candle_boundaries_align_in_utc() {
        use Interval::*;
        // 2024-02-29 12:34:56.789 UTC, a Thursday in a leap February.
        let leap_day = 1_709_210_096_789;
        let table: &[(Interval, u64, u64, u64)] = &[
            (S1, leap_day, 1_709_210_096_000, 1_709_210_096_999),
            (M1, leap_day, 1_709_210_040_000, 1_709_210_099_999),
            (M3, leap_day, 1_709_209_980_000, 1_709_210_159_999),
            (M5, leap_day, 1_709_209_800_000, 1_709_210_099_999),
            (M15, leap_day, 1_709_209_800_000, 1_709_210_699_999),
            (M30, leap_day, 1_709_209_800_000, 1_709_211_599_999),
            (H1, leap_day, 1_709_208_000_000, 1_709_211_599_999),
            (H2, leap_day, 1_709_208_000_000, 1_709_215_199_999),
            (H4, leap_day, 1_709_208_000_000, 1_709_222_399_999),
            (H6, leap_day, 1_709_208_000_000, 1_709_229_599_999),
            (H8, leap_day, 1_709_193_600_000, 1_709_222_399_999),
            (H12, leap_day, 1_709_208_000_000, 1_709_251_199_999),
            (D1, leap_day, 1_709_164_800_000, 1_709_251_199_999),
            (D3, leap_day, 1_709_164_800_000, 1_709_423_999_999),
            // Monday 2024-02-26 to Sunday 2024-03-03.
            (W1, leap_day, 1_708_905_600_000, 1_709_510_399_999),
            (W1, 1_709_510_399_999, 1_708_905_600_000, 1_709_510_399_999),
            (W1, 1_709_510_400_000, 1_709_510_400_000, 1_710_115_199_999),
            // The week holding the epoch opened before it; it closes at
            // the end of Sunday 1970-01-04.
            (W1, 0, 0, 345_599_999),
            (W1, 345_600_000, 345_600_000, 950_399_999),
            // February 2024 has 29 days, 2023 28, 2000 29, 2100 28.
            (Mo1, leap_day, 1_706_745_600_000, 1_709_251_199_999),
            (Mo1, 1_676_448_000_000, 1_675_209_600_000, 1_677_628_799_999),
            (Mo1, 950_140_800_000, 949_363_200_000, 951_868_799_999),
            (Mo1, 4_105_900_800_000, 4_105_123_200_000, 4_107_542_399_999),
            // December rolls over into the next year.
            (Mo1, 1_735_689_599_999, 1_733_011_200_000, 1_735_689_599_999),
            (Mo1, 1_735_689_600_000, 1_735_689_600_000, 1_738_367_999_999),
            (Mo1, 0, 0, 2_678_399_999),
        ];
        for &(interval, time, open, close) in table {
            let got_open = interval.open_time_ms(time);
            assert_eq!(got_open, open, "{} at {time}", interval.as_str());
            assert_eq!(
                interval.close_time_ms(got_open),
                close,
                "{} at {time}",
                interval.as_str()
            );
        }
    }

    #[test]
    fn candles_fold_trades_of_their_interval() {
        // 2024-02-29 12:34:00 UTC.
        let minute = 1_709_210_040_000;
        let mut sell = trade(3, price("9.5"), qty("1"), minute + 59_999, 12);
        sell.is_buyer_maker = true;
        let market = market_with(&[
            trade(1, price("10"), qty("2"), minute, 10),
            trade(2, price("11"), qty("1"), minute + 1_000, 11),
            sell,
            trade(4, price("10.25"), qty("4"), minute + 60_000, 13),
        ]);
        let first = Candle {
            open_time_ms: minute,
            open: price("10"),
            high: price("11"),
            low: price("9.5"),
            close: price("9.5"),
            volume: qty("4"),
            close_time_ms: minute + 59_999,
            quote_volume: Amount::parse("40.5").unwrap(),
            trade_count: 3,
            taker_buy_base_volume: qty("3"),
            taker_buy_quote_volume: Amount::parse("31").unwrap(),
            first_trade_id: 1,
            last_trade_id: 3,
        };
        let second = Candle {
            open_time_ms: minute + 60_000,
            open: price("10.25"),
            high: price("10.25"),
            low: price("10.25"),
            close: price("10.25"),
            volume: qty("4"),
            close_time_ms: minute + 119_999,
            quote_volume: Amount::parse("41").unwrap(),
            trade_count: 1,
            taker_buy_base_volume: qty("4"),
            taker_buy_quote_volume: Amount::parse("41").unwrap(),
            first_trade_id: 4,
            last_trade_id: 4,
        };
        assert_eq!(market.klines(Interval::M1, None, None, 500), [first, second]);
        let hour = market.klines(Interval::H1, None, None, 500);
        assert_eq!(hour.len(), 1);
        assert_eq!(
            (hour[0].open_time_ms, hour[0].close_time_ms),
            (1_709_208_000_000, 1_709_211_599_999)
        );
        assert_eq!(
            (hour[0].open, hour[0].close, hour[0].trade_count),
            (price("10"), price("10.25"), 4)
        );
        assert_eq!(market.klines(Interval::S1, None, None, 500).len(), 4);
        // An interval without trades is a gap, not a flat candle.
        let later = market_with(&[
            trade(1, price("1"), qty("1"), minute, 1),
            trade(2, price("2"), qty("1"), minute + 3 * 60_000, 2),
        ]);
        let opens: Vec<u64> = later
            .klines(Interval::M1, None, None, 500)
            .iter()
            .map(|c| c.open_time_ms)
            .collect();
        assert_eq!(opens, [minute, minute + 180_000]);
    }

    #[test]
    fn klines_query_by_time_and_limit() {
        let minute = 60_000;
        let trades: Vec<TapeTrade> = (0..10).map(|i| trade(i, price("1"), qty("1"), i * minute, i)).collect();
        let market = market_with(&trades);
        let opens = |start, end, limit| -> Vec<u64> {
            market
                .klines(Interval::M1, start, end, limit)
                .iter()
                .map(|c| c.open_time_ms / minute)
                .collect()
        };
        type Row = (Option<u64>, Option<u64>, usize, &'static [u64]);
        let table: &[Row] = &[
            (None, None, 3, &[7, 8, 9]),
            (None, None, 500, &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]),
            (Some(2 * minute), None, 3, &[2, 3, 4]),
            (Some(2 * minute + 1), None, 2, &[3, 4]),
            (None, Some(4 * minute), 2, &[3, 4]),
            (None, Some(4 * minute - 1), 2, &[2, 3]),
            (Some(2 * minute), Some(5 * minute), 500, &[2, 3, 4, 5]),
            (Some(5 * minute), Some(2 * minute), 500, &[]),
            (Some(20 * minute), None, 500, &[]),
            (None, None, 0, &[]),
        ];
        for &(start, end, limit, expected) in table {
            assert_eq!(opens(start, end, limit), expected, "{start:?} {end:?} {limit}");
        }
    }

    #[test]
    fn agg_trades_join_one_taker_at_one_price_and_time() {
        // (id, price, time, taker order, buyer is maker) per trade, then the
        // aggregates expected as (agg id, price, qty, first, last, time).
        let trades = [
            (1, "10", 100, 7, false),
            (2, "10", 100, 7, false),
            (3, "10", 100, 7, false),
            (4, "11", 100, 7, false), // new price
            (5, "11", 101, 7, false), // new time
            (6, "11", 101, 8, false), // new taker order
            (7, "11", 101, 9, true),  // new taker order, other side
            (8, "11", 101, 9, true),
            (9, "11", 101, 8, false), // taker 8 again, but not consecutive
        ];
        let expected = [
            (0, "10", "3", 1, 3, 100),
            (1, "11", "1", 4, 4, 100),
            (2, "11", "1", 5, 5, 101),
            (3, "11", "1", 6, 6, 101),
            (4, "11", "2", 7, 8, 101),
            (5, "11", "1", 9, 9, 101),
        ];
        let mut market = MarketData::new(MarketDataLimits::default());
        for (id, text, time, taker, buyer_maker) in trades {
            let mut t = trade(id, price(text), qty("1"), time, taker);
            t.is_buyer_maker = buyer_maker;
            market.record(&t);
        }
        let got = market
            .agg_trades(&AggTradesQuery {
                limit: 500,
                ..Default::default()
            })
            .unwrap();
        let got: Vec<_> = got
            .iter()
            .map(|a| (a.id, a.price, a.qty, a.first_trade_id, a.last_trade_id, a.time_ms))
            .collect();
        let expected: Vec<_> = expected
            .iter()
            .map(|&(id, p, q, first, last, time)| (id, price(p), qty(q), first, last, time))
            .collect();
        assert_eq!(got, expected);
        let flags: Vec<bool> = market
            .agg_trades(&AggTradesQuery {
                limit: 500,
                ..Default::default()
            })
            .unwrap()
            .iter()
            .map(|a| a.is_buyer_maker)
            .collect();
        assert_eq!(flags, [false, false, false, false, true, false]);
    }

    #[test]
    fn agg_trades_query_rules() {
        let trades: Vec<TapeTrade> = (0..10)
            .map(|i| trade(i, price("1"), qty("1"), i * 1_000_000, i))
            .collect();
        let market = market_with(&trades);
        let ids = |from_id, start, end, limit| {
            let query = AggTradesQuery {
                from_id,
                start_time_ms: start,
                end_time_ms: end,
                limit,
            };
            market
                .agg_trades(&query)
                .map(|aggs| aggs.iter().map(|a| a.id).collect::<Vec<u64>>())
        };
        type Row = (
            Option<u64>,
            Option<u64>,
            Option<u64>,
            usize,
            Result<Vec<u64>, QueryError>,
        );
        let table: Vec<Row> = vec![
            (None, None, None, 3, Ok(vec![7, 8, 9])),
            (Some(4), None, None, 3, Ok(vec![4, 5, 6])),
            (Some(8), None, None, 500, Ok(vec![8, 9])),
            (Some(10), None, None, 500, Ok(vec![])),
            (None, Some(2_000_000), Some(4_000_000), 500, Ok(vec![2, 3, 4])),
            (None, Some(2_000_001), Some(4_000_000), 1, Ok(vec![3])),
            // Only a start: one hour from it; only an end: one hour up to it.
            (None, Some(5_000_000), None, 500, Ok(vec![5, 6, 7, 8])),
            (None, None, Some(3_000_000), 500, Ok(vec![0, 1, 2, 3])),
            (None, Some(0), Some(3_600_000), 500, Ok(vec![0, 1, 2, 3])),
            (None, Some(0), Some(3_600_001), 500, Err(QueryError::WindowTooLong)),
            (None, Some(4_000_000), Some(3_000_000), 500, Ok(vec![])),
            (Some(1), Some(0), None, 500, Err(QueryError::CombinationInvalid)),
            (Some(1), None, Some(0), 500, Err(QueryError::CombinationInvalid)),
            (None, None, None, 5_000, Ok((0..10).collect())),
        ];
        for (from_id, start, end, limit, expected) in table {
            assert_eq!(
                ids(from_id, start, end, limit),
                expected,
                "{from_id:?} {start:?} {end:?}"
            );
        }
    }

    #[test]
    fn tape_serves_recent_and_historical_trades() {
        let trades: Vec<TapeTrade> = (100..110).map(|i| trade(i, price("1"), qty("1"), i, i)).collect();
        let market = market_with(&trades);
        let ids = |list: Vec<TapeTrade>| list.iter().map(|t| t.id).collect::<Vec<u64>>();
        assert_eq!(ids(market.recent(3)), [107, 108, 109]);
        assert_eq!(ids(market.recent(0)), Vec::<u64>::new());
        assert_eq!(ids(market.recent(5_000)).len(), 10);
        assert_eq!(market.from_id(105, 2).map(ids), Ok(vec![105, 106]));
        assert_eq!(market.from_id(108, 500).map(ids), Ok(vec![108, 109]));
        assert_eq!(market.from_id(110, 500).map(ids), Ok(vec![]));
        assert_eq!(
            market.from_id(99, 500),
            Err(QueryError::NotKept { oldest_kept_id: 100 })
        );
        assert_eq!(market.last_price(), Some(price("1")));
    }

    #[test]
    fn rings_evict_the_oldest_at_their_limits() {
        let limits = MarketDataLimits {
            trades_kept_per_market_max: 3,
            agg_trades_kept_per_market_max: 2,
            klines_kept_per_interval_max: 2,
        };
        assert_eq!(
            limits.memory_bytes(),
            3 * 56 + 2 * 56 + 16 * 2 * 104 + MINUTES_KEPT_MAX * 96 + size_of::<MarketData>()
        );
        let mut market = MarketData::new(limits);
        for id in 1..=5 {
            market.record(&trade(id, price("1"), qty("1"), id * 60_000, id));
        }
        let trade_ids: Vec<u64> = market.recent(500).iter().map(|t| t.id).collect();
        assert_eq!(trade_ids, [3, 4, 5]);
        assert_eq!(market.from_id(2, 500), Err(QueryError::NotKept { oldest_kept_id: 3 }));
        assert_eq!(market.from_id(3, 500).map(|t| t.len()), Ok(3));
        let agg_ids: Vec<u64> = market
            .agg_trades(&AggTradesQuery {
                limit: 500,
                ..Default::default()
            })
            .unwrap()
            .iter()
            .map(|a| a.id)
            .collect();
        assert_eq!(agg_ids, [3, 4]);
        let query = AggTradesQuery {
            from_id: Some(2),
            limit: 500,
            ..Default::default()
        };
        assert_eq!(
            market.agg_trades(&query),
            Err(QueryError::NotKept { oldest_kept_id: 3 })
        );
        let opens: Vec<u64> = market
            .klines(Interval::M1, None, None, 500)
            .iter()
            .map(|c| c.open_time_ms)
            .collect();
        assert_eq!(opens, [240_000, 300_000]);
        assert_eq!(market.klines(Interval::H1, None, None, 500).len(), 1);
        // The minute ring dropped candles; the hour ring never did.
        assert_eq!(market.klines_kept_from(Interval::M1), Some(240_000));
        assert_eq!(market.klines_kept_from(Interval::H1), None);
        // Resized, a ring keeps its newest candles.
        market.keep_klines(1);
        assert_eq!(market.klines(Interval::M1, None, None, 500)[0].open_time_ms, 300_000);
        assert_eq!(market.klines_kept_from(Interval::M1), Some(300_000));
        assert_eq!(market.klines_kept_from(Interval::H1), Some(0));
        market.keep_klines(3);
        assert_eq!(market.klines(Interval::M1, None, None, 500).len(), 1);
        assert_eq!(market.klines_kept_from(Interval::M1), None);
    }

    #[test]
    fn candle_numbers_count_the_candles_every_interval_opens() {
        let times = [
            0,
            1,
            59_999,
            3 * DAY_MS,
            4 * DAY_MS,
            1_767_225_599_999,
            1_767_225_600_000,
            4_102_444_800_000,
        ];
        for interval in Interval::ALL {
            for time in times {
                let number = interval.candle_number(time);
                assert_eq!(
                    interval.nth_open_ms(number),
                    interval.open_time_ms(time),
                    "{interval:?} {time}"
                );
                let next = interval.nth_open_ms(number + 1);
                assert_eq!(
                    next,
                    interval.close_time_ms(interval.open_time_ms(time)) + 1,
                    "{interval:?} {time}"
                );
                assert_eq!(interval.candle_number(next), number + 1);
            }
        }
        // 2026-01-01 is month 672 and lies in week 2922 (Monday 2025-12-29).
        assert_eq!(Interval::Mo1.candle_number(1_767_225_600_000), 672);
        assert_eq!(Interval::W1.nth_open_ms(2922), 1_766_966_400_000);
    }

    #[test]
    fn candle_parts_merged_in_any_order_equal_the_ring() {
        let mut market = MarketData::new(MarketDataLimits::DEFAULT);
        let trades: Vec<TapeTrade> = (1..=400u64)
            .map(|id| {
                let mut t = trade(
                    id,
                    Price(UNIT + (id * 7_919 % 113) as i64 * 1_000),
                    Qty(UNIT / 10 * (id % 5 + 1) as i64),
                    id * 17_000,
                    id / 3,
                );
                t.is_buyer_maker = id % 3 == 0;
                t
            })
            .collect();
        for t in &trades {
            market.record(t);
        }
        for interval in [Interval::S1, Interval::M1, Interval::M5, Interval::H1, Interval::D1] {
            // Trades in a scrambled order, folded into parts of two
            // "shards" that are then merged.
            let mut parts: [BTreeMap<u64, Candle>; 2] = [BTreeMap::new(), BTreeMap::new()];
            for step in 0..trades.len() {
                let t = &trades[step * 149 % trades.len()];
                let part = Candle::of_trade(interval, t);
                parts[(t.id % 2) as usize]
                    .entry(part.open_time_ms)
                    .and_modify(|c| c.merge(&part))
                    .or_insert(part);
            }
            let [mut merged, other] = parts;
            for part in other.values() {
                merged
                    .entry(part.open_time_ms)
                    .and_modify(|c| c.merge(part))
                    .or_insert(*part);
            }
            let merged: Vec<Candle> = merged.into_values().collect();
            assert_eq!(merged, market.klines(interval, Some(0), None, 1000), "{interval:?}");
        }
    }

    #[test]
    fn ticker_window_rolls_off_old_minutes() {
        let day = DAY_MS;
        let base = 1_700_000_040_000; // a minute boundary
        let market = market_with(&[
            trade(1, price("4"), qty("1"), base, 1),
            trade(2, price("5"), qty("1"), base + 30_000, 2),
            trade(3, price("6"), qty("2"), base + 61_000, 3),
            trade(4, price("3"), qty("1"), base + day + 5_000, 4),
        ]);
        // At base + 1 day + 59.999 s the window opens at base: all trades.
        let all = market.ticker_24h(base + day + 59_999).unwrap();
        assert_eq!((all.first_id, all.last_id, all.count), (Some(1), Some(4), 4));
        assert_eq!(
            (all.open_price, all.high_price, all.low_price),
            (price("4"), price("6"), price("3"))
        );
        assert_eq!(all.open_time_ms, base);
        assert_eq!(all.close_time_ms, base + day + 59_999);
        assert_eq!(all.prev_close_price, Price::ZERO);
        // One minute later the first minute (trades 1 and 2) has rolled off.
        let later = market.ticker_24h(base + day + 60_000).unwrap();
        assert_eq!((later.first_id, later.last_id, later.count), (Some(3), Some(4), 2));
        assert_eq!(later.open_price, price("6"));
        assert_eq!(later.prev_close_price, price("5"));
        assert_eq!(later.volume, qty("3"));
        assert_eq!(later.quote_volume, Amount::parse("15").unwrap());
        assert_eq!((later.last_price, later.last_qty), (price("3"), qty("1")));
        assert_eq!(later.price_change, Price(-300_000_000));
        assert_eq!(later.price_change_percent(), "-50.000");
        assert_eq!(later.weighted_avg_price, price("5"));
        // A day after the last trade nothing is left but the last price.
        let quiet = market.ticker_24h(base + 3 * day).unwrap();
        assert_eq!((quiet.first_id, quiet.last_id, quiet.count), (None, None, 0));
        assert_eq!((quiet.last_price, quiet.last_qty), (price("3"), qty("1")));
        assert_eq!(quiet.prev_close_price, price("3"));
        assert_eq!((quiet.volume, quiet.open_price), (Qty::ZERO, Price::ZERO));
        assert_eq!(quiet.price_change_percent(), "0.000");
    }

    #[test]
    fn ticker_keeps_the_previous_close_past_evicted_minutes() {
        let mut market = MarketData::new(MarketDataLimits::default());
        let minutes = MINUTES_KEPT_MAX as u64 + 10;
        for minute in 0..minutes {
            market.record(&trade(
                minute,
                Price(100 + minute as i64),
                qty("1"),
                minute * MINUTE_MS,
                minute,
            ));
        }
        // The window opens at minute 10, the oldest kept bucket; minute 9
        // was evicted and still gives the previous close.
        let now = (minutes - 1) * MINUTE_MS + 30_000;
        let ticker = market.ticker_24h(now).unwrap();
        assert_eq!(ticker.open_time_ms, 10 * MINUTE_MS);
        assert_eq!(ticker.count, MINUTES_KEPT_MAX as u64);
        assert_eq!(ticker.first_id, Some(10));
        assert_eq!(ticker.prev_close_price, Price(109));
    }

    #[test]
    fn percent_and_weighted_average_strings_are_exact() {
        let minute = 1_700_000_040_000;
        // (trades as (price, qty), priceChangePercent, weightedAvgPrice)
        type Row = (&'static [(&'static str, &'static str)], &'static str, &'static str);
        let table: &[Row] = &[
            // Binance's documented example: -8 on 9, 487 over 187.
            (&[("9", "37.5"), ("1", "149.5")], "-88.889", "2.60427807"),
            (&[("4", "1"), ("3.98", "1")], "-0.500", "3.99000000"),
            (&[("3", "1"), ("4", "2")], "33.333", "3.66666666"),
            (&[("3", "2"), ("2", "1")], "-33.333", "2.66666666"),
            (&[("2", "1"), ("4", "1")], "100.000", "3.00000000"),
            (&[("0.00200000", "1"), ("0.00200001", "1")], "0.001", "0.00200000"),
            (&[("0.00200000", "1"), ("0.00199999", "1")], "-0.001", "0.00199999"),
            (&[("8", "1"), ("8.00000001", "1")], "0.000", "8.00000000"),
            (&[("7", "0.1")], "0.000", "7.00000000"),
        ];
        for &(fills, percent, average) in table {
            let trades: Vec<TapeTrade> = fills
                .iter()
                .enumerate()
                .map(|(i, &(p, q))| trade(i as u64, price(p), qty(q), minute + i as u64, i as u64))
                .collect();
            let ticker = market_with(&trades).ticker_24h(minute + 1_000).unwrap();
            assert_eq!(ticker.price_change_percent(), percent, "{fills:?}");
            assert_eq!(ticker.weighted_avg_price.to_string(), average, "{fills:?}");
        }
    }

    #[test]
    fn percent_rounds_half_away_from_zero() {
        let table = [
            (1, 200_000, 1),
            (-1, 200_000, -1),
            (1, 200_001, 0),
            (-1, 200_001, 0),
            (3, 200_000, 2),
            (-3, 200_000, -2),
            (0, 5, 0),
            (7, 0, 0),
            (i64::MAX, 1, i64::MAX),
        ];
        for (change, open, thousandths) in table {
            assert_eq!(percent_thousandths(change, open), thousandths, "{change}/{open}");
        }
        assert_eq!(thousandths_to_string(-500), "-0.500");
        assert_eq!(thousandths_to_string(95_960), "95.960");
        assert_eq!(thousandths_to_string(0), "0.000");
    }

    #[test]
    fn avg_price_covers_five_minutes_from_the_minute_boundary() {
        let base = 1_700_000_040_000;
        let market = market_with(&[
            trade(1, price("100"), qty("1"), base, 1),
            trade(2, price("10"), qty("1"), base + 60_000, 2),
            trade(3, price("13"), qty("2"), base + 5 * 60_000 + 10, 3),
        ]);
        // Window opens at the minute of now - 5 min: base + 1 min.
        let now = base + 6 * 60_000 + 30_000;
        let expected = AvgPrice {
            mins: 5,
            price: price("12"),
            close_time_ms: base + 300_010,
        };
        assert_eq!(market.avg_price(now), Some(expected));
        let with_first = market.avg_price(base + 5 * 60_000 + 59_999).unwrap();
        assert_eq!(with_first.price, price("34"));
        assert_eq!(market.avg_price(base + 20 * 60_000), None);
        assert_eq!(market.last_price(), Some(price("13")));
    }

    #[test]
    fn earlier_time_is_filed_at_the_latest_time() {
        let market = market_with(&[
            trade(1, price("1"), qty("1"), 120_000, 1),
            trade(2, price("2"), qty("1"), 50_000, 2),
        ]);
        let times: Vec<u64> = market.recent(500).iter().map(|t| t.time_ms).collect();
        assert_eq!(times, [120_000, 120_000]);
        assert_eq!(market.klines(Interval::M1, None, None, 500).len(), 1);
    }

    #[test]
    #[should_panic(expected = "trade id 5 recorded after 5")]
    fn repeated_trade_id_is_a_programmer_error() {
        market_with(&[
            trade(5, price("1"), qty("1"), 0, 1),
            trade(5, price("1"), qty("1"), 0, 1),
        ]);
    }

    /// Month start by walking month lengths from 1970, independent of the
    /// era arithmetic under test.
    fn naive_month(time_ms: u64) -> (u64, u64) {
        let leap = |y: u64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        let (mut start, mut year, mut month) = (0, 1970, 1);
        loop {
            let days = match month {
                2 if leap(year) => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            let end = start + days * DAY_MS;
            if time_ms < end {
                return (start, end - 1);
            }
            start = end;
            (year, month) = if month == 12 { (year + 1, 1) } else { (year, month + 1) };
        }
    }

    fn naive_bounds(interval: Interval, time_ms: u64) -> (u64, u64) {
        match interval {
            Interval::Mo1 => naive_month(time_ms),
            Interval::W1 => {
                // 1970-01-01 was a Thursday: weekday 3 counting from Monday.
                let day = time_ms / DAY_MS;
                let monday = (day + 3) / 7 * 7;
                let open = monday.saturating_sub(3) * DAY_MS;
                (open, (monday + 4) * DAY_MS - 1)
            }
            _ => {
                let length = interval.fixed_ms();
                let open = time_ms / length * length;
                (open, open + length - 1)
            }
        }
    }

    fn naive_candles(interval: Interval, trades: &[TapeTrade]) -> Vec<Candle> {
        let mut groups: BTreeMap<(u64, u64), Vec<&TapeTrade>> = BTreeMap::new();
        for trade in trades {
            groups
                .entry(naive_bounds(interval, trade.time_ms))
                .or_default()
                .push(trade);
        }
        groups
            .into_iter()
            .map(|((open_time_ms, close_time_ms), group)| {
                let taker_buys = || group.iter().filter(|t| !t.is_buyer_maker);
                Candle {
                    open_time_ms,
                    open: group[0].price,
                    high: group.iter().map(|t| t.price).max().unwrap(),
                    low: group.iter().map(|t| t.price).min().unwrap(),
                    close: group[group.len() - 1].price,
                    volume: Qty(group.iter().map(|t| t.qty.0).sum()),
                    close_time_ms,
                    quote_volume: Amount(group.iter().map(|t| t.quote_qty.0).sum()),
                    trade_count: group.len() as u64,
                    taker_buy_base_volume: Qty(taker_buys().map(|t| t.qty.0).sum()),
                    taker_buy_quote_volume: Amount(taker_buys().map(|t| t.quote_qty.0).sum()),
                    first_trade_id: group[0].id,
                    last_trade_id: group[group.len() - 1].id,
                }
            })
            .collect()
    }

    fn trades_strategy() -> impl Strategy<Value = (u64, Vec<(u64, i64, i64, bool)>)> {
        let step = prop_oneof![0..2_000u64, 0..3 * DAY_MS, 0..90 * DAY_MS];
        (
            0..4_200_000_000_000u64,
            prop::collection::vec((step, 1..10_000i64, 1..10_000i64, any::<bool>()), 0..120),
        )
    }

    proptest! {
        #[test]
        fn incremental_candles_equal_naive_candles((start, steps) in trades_strategy()) {
            let kept = 40;
            let mut market = MarketData::new(MarketDataLimits {
                klines_kept_per_interval_max: kept,
                ..MarketDataLimits::default()
            });
            let mut trades = Vec::new();
            let mut time = start;
            for (id, (step, price_units, qty_units, buyer_maker)) in steps.into_iter().enumerate() {
                time += step;
                let mut t = trade(id as u64, Price(price_units), Qty(qty_units), time, id as u64);
                t.is_buyer_maker = buyer_maker;
                market.record(&t);
                trades.push(t);
            }
            for interval in Interval::ALL {
                let naive = naive_candles(interval, &trades);
                let tail = &naive[naive.len().saturating_sub(kept)..];
                prop_assert_eq!(market.klines(interval, None, None, 1_000), tail, "{}", interval.as_str());
            }
        }
    }
}
