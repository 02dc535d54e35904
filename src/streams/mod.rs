//! Market streams without I/O: stream names, the events a market's shard
//! sends, their Binance JSON, and one shard's registry of subscribers.
//!
//! Fan-out runs in two hops. A connection stays on the shard that accepted
//! it and subscribes in that shard's [`Registry`]. When a shard's local
//! count for a stream goes from 0 to 1 it asks the market's shard to send
//! it the stream (`mesh::Call::Subscribe`); from 1 to 0 it says so
//! (`mesh::StreamMsg::Unsubscribe`). The market's shard sends each event
//! once to each subscribed shard as plain data ([`StreamEvent`]), and that
//! shard serialises it once into a frame shared (`Rc<[u8]>`) by every
//! local subscriber's [`Outbound`] queue.
//!
//! **Invariant:** an [`Outbound`] never holds more than its byte bound;
//! a push that would exceed it marks the queue overflowed and empties it,
//! and the connection closes with 1008. One slow reader never slows the
//! publisher or another reader.
//!
//! **Invariant:** depth diffs of a market form one chain per speed: each
//! event's `U` is the previous event's `u` + 1, and `u` is the book's
//! update id (REST depth's `lastUpdateId`) the levels reflect.
//!
//! Periodic streams (depth diffs, partial depth, tickers, klines) are
//! computed on the market's shard by its stream timer, only for streams
//! that have a subscribed shard; with none, a tick does nothing.
//! `!ticker@arr` and `!miniTicker@arr` are streams of every market
//! ([`ALL_MARKETS`]): a subscriber shard subscribes at every shard, and
//! each sends the tickers of its own markets that changed.
//!
//! User data streams are keyed by user: each connection shard keeps its
//! connections with their listen keys, and the user's shard counts the
//! connections per shard, which is how the per-user cap holds over all
//! shards.
//!
//! Callers: `shard` (registry, publishing, stream ticks) and `wsconn` (the
//! connection loop that drains an [`Outbound`]).

use crate::json::JsonWriter;
use crate::marketdata::{AggTrade, Candle, Interval, MarketData, Ticker24h};
use crate::trading::{BalanceUpdate, Trading, UserUpdate};
use crate::ws::text_frame;
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet, VecDeque};
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use tradsys_engine::msg::Fill;
use tradsys_engine::num::{Price, Qty};
use tradsys_engine::order::{ClientOrderId, MarketId, OrderStatus, Side, UserId};

/// Streams one connection may subscribe to (Binance's limit).
pub(crate) const WS_STREAMS_PER_CONNECTION_MAX: usize = 1024;
/// Levels per side a depth diff compares (the deepest REST depth).
pub(crate) const DEPTH_DIFF_LEVELS_MAX: usize = tradsys_engine::book::DEPTH_LEVELS_MAX;
/// Levels per side the partial depth streams may ask for (`@depth<N>`).
pub(crate) const PARTIAL_DEPTH_LEVELS: [u8; 3] = [5, 10, 20];
/// Candles one kline tick sends at most for one stream: a timer that ran
/// late may find several short candles closed since the last tick.
pub(crate) const KLINE_CANDLES_PER_TICK_MAX: usize = 16;
/// The market of the streams that cover every market (`!ticker@arr`).
pub(crate) const ALL_MARKETS: MarketId = MarketId(u16::MAX);
/// Frames a drained queue keeps room for; a queue that grew beyond it
/// gives its memory back, so an idle subscriber stays small.
const OUTBOUND_FRAMES_KEPT_MAX: usize = 16;

/// What a stream carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum StreamKind {
    Trade,
    AggTrade,
    BookTicker,
    /// Depth diffs every 100 ms (`fast`) or every second.
    Depth {
        fast: bool,
    },
    /// The top `levels` of each side every 100 ms (`fast`) or every second.
    PartialDepth {
        levels: u8,
        fast: bool,
    },
    /// The rolling 24 h statistics, every second when they changed.
    Ticker,
    MiniTicker,
    Kline(Interval),
    /// Arrays of the tickers of every market that changed in the last
    /// second; the key's market is [`ALL_MARKETS`].
    AllTickers,
    AllMiniTickers,
}

impl StreamKind {
    fn suffix(self) -> String {
        match self {
            StreamKind::Trade => "trade".into(),
            StreamKind::AggTrade => "aggTrade".into(),
            StreamKind::BookTicker => "bookTicker".into(),
            StreamKind::Depth { fast: false } => "depth".into(),
            StreamKind::Depth { fast: true } => "depth@100ms".into(),
            StreamKind::PartialDepth { levels, fast: false } => format!("depth{levels}"),
            StreamKind::PartialDepth { levels, fast: true } => format!("depth{levels}@100ms"),
            StreamKind::Ticker => "ticker".into(),
            StreamKind::MiniTicker => "miniTicker".into(),
            StreamKind::Kline(interval) => format!("kline_{}", interval.as_str()),
            StreamKind::AllTickers => "!ticker@arr".into(),
            StreamKind::AllMiniTickers => "!miniTicker@arr".into(),
        }
    }

    fn parse_suffix(kind: &str) -> Option<StreamKind> {
        let kind = match kind {
            "trade" => StreamKind::Trade,
            "aggTrade" => StreamKind::AggTrade,
            "bookTicker" => StreamKind::BookTicker,
            "depth" | "depth@1000ms" => StreamKind::Depth { fast: false },
            "depth@100ms" => StreamKind::Depth { fast: true },
            "ticker" => StreamKind::Ticker,
            "miniTicker" => StreamKind::MiniTicker,
            _ => return StreamKind::parse_kline(kind).or_else(|| StreamKind::parse_partial_depth(kind)),
        };
        Some(kind)
    }

    fn parse_kline(kind: &str) -> Option<StreamKind> {
        let interval = kind.strip_prefix("kline_")?;
        Interval::parse(interval).ok().map(StreamKind::Kline)
    }

    fn parse_partial_depth(kind: &str) -> Option<StreamKind> {
        let rest = kind.strip_prefix("depth")?;
        let (levels, fast) = match rest.split_once('@') {
            None => (rest, false),
            Some((levels, "100ms")) => (levels, true),
            Some((levels, "1000ms")) => (levels, false),
            Some(_) => return None,
        };
        let levels: u8 = levels.parse().ok()?;
        PARTIAL_DEPTH_LEVELS
            .contains(&levels)
            .then_some(StreamKind::PartialDepth { levels, fast })
    }
}

/// One stream: a kind of one market.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct StreamKey {
    pub(crate) market: MarketId,
    pub(crate) kind: StreamKind,
}

impl StreamKey {
    /// Parses a Binance stream name such as `btcusdt@trade`,
    /// `btcusdt@kline_1m` or `!ticker@arr`.
    pub(crate) fn parse(name: &str, trading: &Trading) -> Option<StreamKey> {
        let all = match name {
            "!ticker@arr" => Some(StreamKind::AllTickers),
            "!miniTicker@arr" => Some(StreamKind::AllMiniTickers),
            _ => None,
        };
        if let Some(kind) = all {
            return Some(StreamKey {
                market: ALL_MARKETS,
                kind,
            });
        }
        let (symbol, kind) = name.split_once('@')?;
        let kind = StreamKind::parse_suffix(kind)?;
        let market = trading.market(&symbol.to_ascii_uppercase())?;
        Some(StreamKey { market, kind })
    }

    /// True for the streams of every market.
    pub(crate) fn is_all_markets(&self) -> bool {
        self.market == ALL_MARKETS
    }

    /// The stream's canonical name, as combined payloads and
    /// LIST_SUBSCRIPTIONS show it.
    pub(crate) fn name(&self, trading: &Trading) -> String {
        if self.is_all_markets() {
            return self.kind.suffix();
        }
        let symbol = trading.spec(self.market).symbol.to_ascii_lowercase();
        format!("{symbol}@{}", self.kind.suffix())
    }
}

/// A best bid or ask: price and total quantity.
pub(crate) type Level = (Price, Qty);

/// What a market's shard sends to subscribed shards.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum StreamEvent {
    Trade(Fill),
    /// A complete aggregate trade, as REST aggTrades lists it.
    AggTrade {
        market: MarketId,
        agg: AggTrade,
    },
    BookTicker {
        market: MarketId,
        update_id: u64,
        bid: Option<Level>,
        ask: Option<Level>,
    },
    Depth(DepthDiff),
    /// The top `levels` of each side, as REST depth with `limit=levels`.
    PartialDepth {
        market: MarketId,
        levels: u8,
        fast: bool,
        update_id: u64,
        bids: Vec<Level>,
        asks: Vec<Level>,
    },
    Ticker {
        mini: bool,
        time_ms: u64,
        ticker: TickerEntry,
    },
    /// One shard's part of `!ticker@arr` or `!miniTicker@arr`.
    AllTickers {
        mini: bool,
        time_ms: u64,
        tickers: Vec<TickerEntry>,
    },
    Kline {
        market: MarketId,
        interval: Interval,
        candle: Candle,
        closed: bool,
        time_ms: u64,
    },
}

/// One market's rolling 24 h statistics with its best bid and ask.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TickerEntry {
    pub(crate) market: MarketId,
    pub(crate) stats: Ticker24h,
    pub(crate) bid: Level,
    pub(crate) ask: Level,
}

/// Changed levels of a book between two update ids; quantity 0 removes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct DepthDiff {
    pub(crate) market: MarketId,
    pub(crate) fast: bool,
    pub(crate) time_ms: u64,
    pub(crate) first_update_id: u64,
    pub(crate) last_update_id: u64,
    pub(crate) bids: Vec<Level>,
    pub(crate) asks: Vec<Level>,
}

impl StreamEvent {
    pub(crate) fn key(&self) -> StreamKey {
        let (market, kind) = match self {
            StreamEvent::Trade(fill) => (fill.market, StreamKind::Trade),
            StreamEvent::AggTrade { market, .. } => (*market, StreamKind::AggTrade),
            StreamEvent::BookTicker { market, .. } => (*market, StreamKind::BookTicker),
            StreamEvent::Depth(diff) => (diff.market, StreamKind::Depth { fast: diff.fast }),
            StreamEvent::PartialDepth {
                market, levels, fast, ..
            } => (
                *market,
                StreamKind::PartialDepth {
                    levels: *levels,
                    fast: *fast,
                },
            ),
            StreamEvent::Ticker {
                mini: false, ticker, ..
            } => (ticker.market, StreamKind::Ticker),
            StreamEvent::Ticker { mini: true, ticker, .. } => (ticker.market, StreamKind::MiniTicker),
            StreamEvent::AllTickers { mini: false, .. } => (ALL_MARKETS, StreamKind::AllTickers),
            StreamEvent::AllTickers { mini: true, .. } => (ALL_MARKETS, StreamKind::AllMiniTickers),
            StreamEvent::Kline { market, interval, .. } => (*market, StreamKind::Kline(*interval)),
        };
        StreamKey { market, kind }
    }

    /// The event's Binance payload.
    pub(crate) fn write(&self, trading: &Trading, w: &mut JsonWriter) {
        let symbol = |market: MarketId| trading.spec(market).symbol.as_str();
        match self {
            StreamEvent::Trade(fill) => {
                w.begin_object()
                    .field_str("e", "trade")
                    .field_uint("E", fill.time_ms)
                    .field_str("s", symbol(fill.market))
                    .field_uint("t", fill.trade_id)
                    .field_decimal("p", fill.price.0)
                    .field_decimal("q", fill.qty.0)
                    .field_uint("T", fill.time_ms)
                    .field_bool("m", fill.is_buyer_maker())
                    .field_bool("M", true)
                    .end_object();
            }
            StreamEvent::AggTrade { market, agg } => write_agg_trade(symbol(*market), agg, w),
            StreamEvent::BookTicker {
                market,
                update_id,
                bid,
                ask,
            } => {
                let (bid, ask) = (bid.unwrap_or_default(), ask.unwrap_or_default());
                w.begin_object()
                    .field_uint("u", *update_id)
                    .field_str("s", symbol(*market))
                    .field_decimal("b", bid.0 .0)
                    .field_decimal("B", bid.1 .0)
                    .field_decimal("a", ask.0 .0)
                    .field_decimal("A", ask.1 .0)
                    .end_object();
            }
            StreamEvent::Depth(diff) => {
                w.begin_object()
                    .field_str("e", "depthUpdate")
                    .field_uint("E", diff.time_ms)
                    .field_str("s", symbol(diff.market))
                    .field_uint("U", diff.first_update_id)
                    .field_uint("u", diff.last_update_id);
                write_levels(&diff.bids, &diff.asks, ("b", "a"), w);
                w.end_object();
            }
            StreamEvent::PartialDepth {
                update_id, bids, asks, ..
            } => {
                w.begin_object().field_uint("lastUpdateId", *update_id);
                write_levels(bids, asks, ("bids", "asks"), w);
                w.end_object();
            }
            StreamEvent::Ticker { mini, time_ms, ticker } => {
                write_ticker(symbol(ticker.market), *mini, *time_ms, ticker, w)
            }
            StreamEvent::AllTickers { mini, time_ms, tickers } => {
                w.begin_array();
                for ticker in tickers {
                    write_ticker(symbol(ticker.market), *mini, *time_ms, ticker, w);
                }
                w.end_array();
            }
            StreamEvent::Kline {
                market,
                interval,
                candle,
                closed,
                time_ms,
            } => write_kline(symbol(*market), *interval, candle, *closed, *time_ms, w),
        }
    }
}

fn write_levels(bids: &[Level], asks: &[Level], names: (&str, &str), w: &mut JsonWriter) {
    for (name, levels) in [(names.0, bids), (names.1, asks)] {
        w.key(name).begin_array();
        for (price, qty) in levels {
            w.begin_array().decimal(price.0).decimal(qty.0).end_array();
        }
        w.end_array();
    }
}

/// Binance's `aggTrade`; `E` is the aggregate's time, as the trade
/// stream's is the trade's.
fn write_agg_trade(symbol: &str, agg: &AggTrade, w: &mut JsonWriter) {
    w.begin_object()
        .field_str("e", "aggTrade")
        .field_uint("E", agg.time_ms)
        .field_str("s", symbol)
        .field_uint("a", agg.id)
        .field_decimal("p", agg.price.0)
        .field_decimal("q", agg.qty.0)
        .field_uint("f", agg.first_trade_id)
        .field_uint("l", agg.last_trade_id)
        .field_uint("T", agg.time_ms)
        .field_bool("m", agg.is_buyer_maker)
        .field_bool("M", true)
        .end_object();
}

/// Binance's `24hrTicker` or `24hrMiniTicker`, with REST ticker/24hr's
/// figures.
fn write_ticker(symbol: &str, mini: bool, time_ms: u64, ticker: &TickerEntry, w: &mut JsonWriter) {
    let t = &ticker.stats;
    w.begin_object()
        .field_str("e", if mini { "24hrMiniTicker" } else { "24hrTicker" })
        .field_uint("E", time_ms)
        .field_str("s", symbol);
    if mini {
        w.field_decimal("c", t.last_price.0)
            .field_decimal("o", t.open_price.0)
            .field_decimal("h", t.high_price.0)
            .field_decimal("l", t.low_price.0)
            .field_decimal("v", t.volume.0)
            .field_decimal("q", t.quote_volume.0)
            .end_object();
        return;
    }
    w.field_decimal("p", t.price_change.0)
        .field_str("P", &t.price_change_percent())
        .field_decimal("w", t.weighted_avg_price.0)
        .field_decimal("x", t.prev_close_price.0)
        .field_decimal("c", t.last_price.0)
        .field_decimal("Q", t.last_qty.0)
        .field_decimal("b", ticker.bid.0 .0)
        .field_decimal("B", ticker.bid.1 .0)
        .field_decimal("a", ticker.ask.0 .0)
        .field_decimal("A", ticker.ask.1 .0)
        .field_decimal("o", t.open_price.0)
        .field_decimal("h", t.high_price.0)
        .field_decimal("l", t.low_price.0)
        .field_decimal("v", t.volume.0)
        .field_decimal("q", t.quote_volume.0)
        .field_uint("O", t.open_time_ms)
        .field_uint("C", t.close_time_ms)
        .field_int("F", t.first_id.map_or(-1, |id| id as i64))
        .field_int("L", t.last_id.map_or(-1, |id| id as i64))
        .field_uint("n", t.count)
        .end_object();
}

/// Binance's `kline`: the candle REST klines returns, with its first and
/// last trade ids and whether it is closed.
fn write_kline(symbol: &str, interval: Interval, c: &Candle, closed: bool, time_ms: u64, w: &mut JsonWriter) {
    w.begin_object()
        .field_str("e", "kline")
        .field_uint("E", time_ms)
        .field_str("s", symbol);
    w.key("k")
        .begin_object()
        .field_uint("t", c.open_time_ms)
        .field_uint("T", c.close_time_ms)
        .field_str("s", symbol)
        .field_str("i", interval.as_str())
        .field_uint("f", c.first_trade_id)
        .field_uint("L", c.last_trade_id)
        .field_decimal("o", c.open.0)
        .field_decimal("c", c.close.0)
        .field_decimal("h", c.high.0)
        .field_decimal("l", c.low.0)
        .field_decimal("v", c.volume.0)
        .field_uint("n", c.trade_count)
        .field_bool("x", closed)
        .field_decimal("q", c.quote_volume.0)
        .field_decimal("V", c.taker_buy_base_volume.0)
        .field_decimal("Q", c.taker_buy_quote_volume.0)
        .field_str("B", "0")
        .end_object();
    w.end_object();
}

/// What the user's shard sends to the shards holding the user's stream
/// connections. Order changes are the common case and the mesh carries
/// the event boxed, so the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub(crate) enum UserEvent {
    /// An order changed: executionReport, then outboundAccountPosition.
    Order(UserUpdate),
    /// A deposit or withdrawal: balanceUpdate, then outboundAccountPosition.
    Balance(BalanceUpdate),
    /// The listen key expired or was closed: listenKeyExpired to the
    /// connections of that key, which then close.
    KeyClosed { user: UserId, key: String },
}

impl UserEvent {
    pub(crate) fn user(&self) -> UserId {
        match self {
            UserEvent::Order(update) => update.user,
            UserEvent::Balance(update) => update.user,
            UserEvent::KeyClosed { user, .. } => *user,
        }
    }
}

/// What the user's shard says to a new user data stream connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum UserAttach {
    Attached(UserId),
    /// Unknown, closed or expired listen key.
    UnknownKey,
    /// The user holds `ws_user_data_connections_per_user_max` already.
    TooMany,
}

/// The frames of one event: raw for `/ws` connections and, built only if a
/// subscriber wants it, wrapped as `{"stream":..,"data":..}`.
struct Frames {
    raw: Rc<[u8]>,
    combined: Option<Rc<[u8]>>,
}

/// What pushing a frame came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Push {
    Queued,
    /// This push overflowed the queue: the connection must close with 1008.
    Overflowed,
    /// The queue had already overflowed; nothing was queued.
    Dropped,
}

/// One connection's queue of frames to write, bounded in bytes.
pub(crate) struct Outbound {
    frames: RefCell<VecDeque<Rc<[u8]>>>,
    bytes: Cell<usize>,
    bytes_max: usize,
    overflowed: Cell<bool>,
    /// The last frame is queued: the connection closes once it is written.
    finished: Cell<bool>,
    combined: Cell<bool>,
    waker: Cell<Option<Waker>>,
}

impl Outbound {
    pub(crate) fn new(bytes_max: usize, combined: bool) -> Outbound {
        Outbound {
            frames: RefCell::new(VecDeque::new()),
            bytes: Cell::new(0),
            bytes_max,
            overflowed: Cell::new(false),
            finished: Cell::new(false),
            combined: Cell::new(combined),
            waker: Cell::new(None),
        }
    }

    pub(crate) fn is_combined(&self) -> bool {
        self.combined.get()
    }

    pub(crate) fn set_combined(&self, combined: bool) {
        self.combined.set(combined);
    }

    pub(crate) fn is_overflowed(&self) -> bool {
        self.overflowed.get()
    }

    /// True once the last frame is queued (see [`Outbound::push_last`]).
    pub(crate) fn is_finished(&self) -> bool {
        self.finished.get()
    }

    /// Queues the connection's last frame: later pushes are dropped, and
    /// the connection closes normally once the queue is written.
    pub(crate) fn push_last(&self, frame: Rc<[u8]>) -> Push {
        let push = self.push(frame);
        self.finished.set(true);
        self.wake();
        push
    }

    /// Queues `frame`, or marks the queue overflowed and frees it.
    pub(crate) fn push(&self, frame: Rc<[u8]>) -> Push {
        if self.overflowed.get() || self.finished.get() {
            return Push::Dropped;
        }
        let bytes = self.bytes.get() + frame.len();
        if bytes > self.bytes_max {
            self.overflowed.set(true);
            self.bytes.set(0);
            *self.frames.borrow_mut() = VecDeque::new();
            self.wake();
            return Push::Overflowed;
        }
        self.bytes.set(bytes);
        self.frames.borrow_mut().push_back(frame);
        self.wake();
        Push::Queued
    }

    /// The next frame to write.
    pub(crate) fn pop(&self) -> Option<Rc<[u8]>> {
        let mut frames = self.frames.borrow_mut();
        let frame = frames.pop_front()?;
        self.bytes.set(self.bytes.get() - frame.len());
        if frames.is_empty() && frames.capacity() > OUTBOUND_FRAMES_KEPT_MAX {
            *frames = VecDeque::new();
        }
        Some(frame)
    }

    /// Ready when there is a frame to write, the queue overflowed or the
    /// last frame was queued.
    pub(crate) fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.overflowed.get() || self.finished.get() || !self.frames.borrow().is_empty() {
            return Poll::Ready(());
        }
        self.waker.set(Some(cx.waker().clone()));
        Poll::Pending
    }

    fn wake(&self) {
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }
}

/// A market's last depth snapshot at one speed, which the next diff is
/// computed against.
struct DepthState {
    update_id: u64,
    bids: Vec<Level>,
    asks: Vec<Level>,
    /// Prices orders came to since the snapshot: a level there may have
    /// appeared and gone again, and the next diff must say it is gone.
    touched_bids: HashSet<Price>,
    touched_asks: HashSet<Price>,
}

/// What a ticker stream last sent for a market: the figures that change
/// only with trades, the window's roll, or (full tickers) the book's top.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct TickerMark {
    first_id: Option<u64>,
    last_id: Option<u64>,
    count: u64,
    prev_close: Price,
    bid: Level,
    ask: Level,
}

impl TickerMark {
    fn of(entry: &TickerEntry, mini: bool) -> TickerMark {
        let top = if mini {
            (Level::default(), Level::default())
        } else {
            (entry.bid, entry.ask)
        };
        TickerMark {
            first_id: entry.stats.first_id,
            last_id: entry.stats.last_id,
            count: entry.stats.count,
            prev_close: entry.stats.prev_close_price,
            bid: top.0,
            ask: top.1,
        }
    }
}

/// The candle a kline stream last sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct KlineMark {
    open_time_ms: u64,
    /// `None` forces the next tick to send the candle.
    last_trade_id: Option<u64>,
    closed: bool,
}

/// A user data stream connection: its queue and its listen key.
type UserConnection = (Rc<Outbound>, Rc<str>);

/// One shard's subscribers: local connections per stream and, for the
/// markets this shard owns, the shards subscribed to each stream.
#[derive(Default)]
pub(crate) struct Registry {
    local: HashMap<StreamKey, Vec<Rc<Outbound>>>,
    shards: HashMap<StreamKey, Vec<usize>>,
    depth: HashMap<(MarketId, bool), DepthState>,
    book_ticker_ids: HashMap<MarketId, u64>,
    /// Per (market, ticker kind): what that ticker stream last sent.
    tickers: HashMap<(MarketId, StreamKind), TickerMark>,
    klines: HashMap<(MarketId, Interval), KlineMark>,
    /// User data stream connections here, by user, with their listen keys.
    user_local: HashMap<UserId, Vec<UserConnection>>,
    /// For users owned here: the shards holding their stream connections,
    /// with the number of connections on each.
    user_shards: HashMap<UserId, Vec<(usize, usize)>>,
}

impl Registry {
    /// Adds a local subscriber; true when it is the shard's first for `key`.
    pub(crate) fn subscribe_local(&mut self, key: StreamKey, out: &Rc<Outbound>) -> bool {
        let subscribers = self.local.entry(key).or_default();
        if subscribers.iter().any(|s| Rc::ptr_eq(s, out)) {
            return false;
        }
        subscribers.push(out.clone());
        subscribers.len() == 1
    }

    /// Removes a local subscriber; true when it was the shard's last.
    pub(crate) fn unsubscribe_local(&mut self, key: StreamKey, out: &Rc<Outbound>) -> bool {
        let Some(subscribers) = self.local.get_mut(&key) else {
            return false;
        };
        let before = subscribers.len();
        subscribers.retain(|s| !Rc::ptr_eq(s, out));
        let removed = subscribers.len() < before;
        if subscribers.is_empty() {
            self.local.remove(&key);
        }
        removed && !self.local.contains_key(&key)
    }

    /// On the market's shard: `shard` wants `key`. Returns true when the
    /// stream had no subscribed shard before.
    pub(crate) fn add_shard(&mut self, key: StreamKey, shard: usize) -> bool {
        let shards = self.shards.entry(key).or_default();
        if !shards.contains(&shard) {
            shards.push(shard);
        }
        shards.len() == 1
    }

    pub(crate) fn remove_shard(&mut self, key: StreamKey, shard: usize) {
        if let Some(shards) = self.shards.get_mut(&key) {
            shards.retain(|&s| s != shard);
            if shards.is_empty() {
                self.shards.remove(&key);
                self.forget(key);
            }
        }
    }

    fn forget(&mut self, key: StreamKey) {
        match key.kind {
            StreamKind::Depth { fast } => {
                self.depth.remove(&(key.market, fast));
            }
            StreamKind::BookTicker => {
                self.book_ticker_ids.remove(&key.market);
            }
            StreamKind::Ticker | StreamKind::MiniTicker => {
                self.tickers.remove(&(key.market, key.kind));
            }
            StreamKind::AllTickers | StreamKind::AllMiniTickers => {
                self.tickers.retain(|(_, kind), _| *kind != key.kind);
            }
            StreamKind::Kline(interval) => {
                self.klines.remove(&(key.market, interval));
            }
            StreamKind::Trade | StreamKind::AggTrade | StreamKind::PartialDepth { .. } => {}
        }
    }

    /// True when some shard subscribes to `key` (on the market's shard).
    pub(crate) fn has_shards(&self, key: StreamKey) -> bool {
        self.shards.contains_key(&key)
    }

    /// The ticker `entry` for a stream of `kind`, if it differs from what
    /// that stream last sent for the market; remembers it as sent.
    pub(crate) fn ticker_changed(&mut self, kind: StreamKind, entry: &TickerEntry) -> bool {
        let mini = matches!(kind, StreamKind::MiniTicker | StreamKind::AllMiniTickers);
        let mark = TickerMark::of(entry, mini);
        self.tickers.insert((entry.market, kind), mark) != Some(mark)
    }

    /// Starts a kline stream from the candle `newest` (if any) at `now_ms`:
    /// an open candle is sent at the next tick, a closed one never again.
    pub(crate) fn kline_start(&mut self, market: MarketId, interval: Interval, newest: Option<Candle>, now_ms: u64) {
        if let Some(candle) = newest {
            let mark = KlineMark {
                open_time_ms: candle.open_time_ms,
                last_trade_id: None,
                closed: now_ms > candle.close_time_ms,
            };
            self.klines.insert((market, interval), mark);
        }
    }

    /// The kline updates due at `now_ms`, as (candle, closed), oldest
    /// first: the candle last sent if it changed or closed since, then
    /// every newer candle (the newest open unless its time is over).
    pub(crate) fn kline_updates(
        &mut self,
        market: MarketId,
        interval: Interval,
        data: &MarketData,
        now_ms: u64,
    ) -> Vec<(Candle, bool)> {
        let Some(newest) = data.newest_candle(interval) else {
            return Vec::new();
        };
        let mark = self.klines.get(&(market, interval)).copied();
        let mut updates = Vec::new();
        if let Some(mark) = mark.filter(|m| !m.closed) {
            if let Some(candle) = data.candle_at(interval, mark.open_time_ms) {
                let closed = now_ms > candle.close_time_ms || newest.open_time_ms > candle.open_time_ms;
                if closed || mark.last_trade_id != Some(candle.last_trade_id) {
                    updates.push((candle, closed));
                }
            }
        }
        let after = mark.map(|m| m.open_time_ms);
        for candle in data.candles_after(interval, after, KLINE_CANDLES_PER_TICK_MAX) {
            let closed = now_ms > candle.close_time_ms || candle.open_time_ms != newest.open_time_ms;
            updates.push((candle, closed));
        }
        if let Some(&(candle, closed)) = updates.last() {
            let mark = KlineMark {
                open_time_ms: candle.open_time_ms,
                last_trade_id: Some(candle.last_trade_id),
                closed,
            };
            self.klines.insert((market, interval), mark);
        }
        updates
    }

    /// The shards subscribed to `key` (on the market's shard).
    pub(crate) fn shards_of(&self, key: StreamKey) -> &[usize] {
        self.shards.get(&key).map_or(&[], Vec::as_slice)
    }

    /// Streams of `kind`-like streams that have subscribed shards.
    pub(crate) fn subscribed(&self, matches: impl Fn(StreamKind) -> bool) -> Vec<StreamKey> {
        self.shards.keys().filter(|k| matches(k.kind)).copied().collect()
    }

    /// Starts a depth chain from the book as it is now.
    pub(crate) fn depth_start(
        &mut self,
        market: MarketId,
        fast: bool,
        update_id: u64,
        bids: Vec<Level>,
        asks: Vec<Level>,
    ) {
        let state = DepthState {
            update_id,
            bids,
            asks,
            touched_bids: HashSet::new(),
            touched_asks: HashSet::new(),
        };
        self.depth.insert((market, fast), state);
    }

    /// Records prices orders came to, for the depth chains of their markets.
    pub(crate) fn touch_levels(&mut self, touched: &[(MarketId, Side, Price)]) {
        if self.depth.is_empty() {
            return;
        }
        for &(market, side, price) in touched {
            for fast in [false, true] {
                if let Some(state) = self.depth.get_mut(&(market, fast)) {
                    match side {
                        Side::Buy => state.touched_bids.insert(price),
                        Side::Sell => state.touched_asks.insert(price),
                    };
                }
            }
        }
    }

    /// The diff from the last snapshot to `bids`/`asks` at `update_id`, or
    /// `None` when the book has not changed.
    pub(crate) fn depth_diff(
        &mut self,
        market: MarketId,
        fast: bool,
        update_id: u64,
        time_ms: u64,
        bids: Vec<Level>,
        asks: Vec<Level>,
    ) -> Option<DepthDiff> {
        let state = self.depth.get_mut(&(market, fast))?;
        if state.update_id == update_id {
            return None;
        }
        let diff = DepthDiff {
            market,
            fast,
            time_ms,
            first_update_id: state.update_id + 1,
            last_update_id: update_id,
            bids: changed_levels(&state.bids, &bids, &state.touched_bids),
            asks: changed_levels(&state.asks, &asks, &state.touched_asks),
        };
        *state = DepthState {
            update_id,
            bids,
            asks,
            touched_bids: HashSet::new(),
            touched_asks: HashSet::new(),
        };
        Some(diff)
    }

    /// The book ticker to send for `market` at `update_id`, if it changed.
    pub(crate) fn book_ticker_changed(&mut self, market: MarketId, update_id: u64) -> bool {
        let last = self.book_ticker_ids.insert(market, update_id);
        last != Some(update_id)
    }

    /// Adds a local user-stream connection of `user` by listen key `key`.
    pub(crate) fn subscribe_user_local(&mut self, user: UserId, key: &str, out: &Rc<Outbound>) {
        self.user_local
            .entry(user)
            .or_default()
            .push((out.clone(), Rc::from(key)));
    }

    /// Removes a local user-stream connection.
    pub(crate) fn unsubscribe_user_local(&mut self, user: UserId, out: &Rc<Outbound>) {
        let Some(outs) = self.user_local.get_mut(&user) else {
            return;
        };
        outs.retain(|(o, _)| !Rc::ptr_eq(o, out));
        if outs.is_empty() {
            self.user_local.remove(&user);
        }
    }

    /// On the user's shard: one more stream connection of `user` on
    /// `shard`, unless the user holds `max` over all shards already.
    pub(crate) fn add_user_connection(&mut self, user: UserId, shard: usize, max: usize) -> bool {
        let shards = self.user_shards.entry(user).or_default();
        if shards.iter().map(|&(_, n)| n).sum::<usize>() >= max {
            if shards.is_empty() {
                self.user_shards.remove(&user);
            }
            return false;
        }
        match shards.iter_mut().find(|(s, _)| *s == shard) {
            Some((_, n)) => *n += 1,
            None => shards.push((shard, 1)),
        }
        true
    }

    /// On the user's shard: a stream connection of `user` on `shard` closed.
    pub(crate) fn remove_user_connection(&mut self, user: UserId, shard: usize) {
        let Some(shards) = self.user_shards.get_mut(&user) else {
            return;
        };
        if let Some(entry) = shards.iter_mut().find(|(s, _)| *s == shard) {
            entry.1 = entry.1.saturating_sub(1);
        }
        shards.retain(|&(_, n)| n > 0);
        if shards.is_empty() {
            self.user_shards.remove(&user);
        }
    }

    /// The shards holding stream connections of `user` (on its shard).
    pub(crate) fn user_shards_of(&self, user: UserId) -> Vec<usize> {
        self.user_shards
            .get(&user)
            .map_or_else(Vec::new, |shards| shards.iter().map(|&(s, _)| s).collect())
    }

    /// True when users owned here have stream connections anywhere.
    pub(crate) fn has_user_streams(&self) -> bool {
        !self.user_shards.is_empty()
    }

    /// Serialises a user event once and queues it for the user's
    /// connections here. Returns the queues that overflowed.
    pub(crate) fn publish_user_local(&self, event: &UserEvent, time_ms: u64, trading: &Trading) -> usize {
        let Some(outs) = self.user_local.get(&event.user()) else {
            return 0;
        };
        let payloads = match event {
            UserEvent::Order(update) => {
                let mut w = JsonWriter::with_capacity(768);
                write_execution_report(update, time_ms, trading, &mut w);
                let position = account_position_payload(&update.balances, update.view.update_time_ms, time_ms, trading);
                [w.into_bytes(), position]
            }
            UserEvent::Balance(update) => {
                let mut w = JsonWriter::with_capacity(128);
                w.begin_object()
                    .field_str("e", "balanceUpdate")
                    .field_uint("E", time_ms)
                    .field_str("a", trading.asset_name(update.asset))
                    .field_decimal("d", update.delta.0)
                    .field_uint("T", time_ms)
                    .end_object();
                let position = account_position_payload(&[(update.asset, update.balance)], time_ms, time_ms, trading);
                [w.into_bytes(), position]
            }
            UserEvent::KeyClosed { key, .. } => return close_user_key(outs, key, time_ms),
        };
        // Raw frames are shared by every `/ws` connection; a combined one
        // (`/stream?streams=<listenKey>`) gets them wrapped with its key.
        let raw = [frame_of(&payloads[0]), frame_of(&payloads[1])];
        let mut overflowed = 0;
        for (out, key) in outs {
            let frames = match out.is_combined() {
                false => raw.clone(),
                true => [combined_frame(key, &payloads[0]), combined_frame(key, &payloads[1])],
            };
            let pushes = frames.map(|frame| out.push(frame));
            if pushes.contains(&Push::Overflowed) {
                overflowed += 1;
            }
        }
        overflowed
    }

    /// Serialises `event` once and queues it for every local subscriber.
    /// Returns the queues that overflowed with it.
    pub(crate) fn publish_local(&self, event: &StreamEvent, trading: &Trading) -> usize {
        let key = event.key();
        let Some(subscribers) = self.local.get(&key) else {
            return 0;
        };
        let mut w = JsonWriter::with_capacity(256);
        event.write(trading, &mut w);
        let payload = w.into_bytes();
        let mut frames = Frames {
            raw: frame_of(&payload),
            combined: None,
        };
        let mut overflowed = 0;
        for out in subscribers {
            let frame = if out.is_combined() {
                frames
                    .combined
                    .get_or_insert_with(|| combined_frame(&key.name(trading), &payload))
                    .clone()
            } else {
                frames.raw.clone()
            };
            if out.push(frame) == Push::Overflowed {
                overflowed += 1;
            }
        }
        overflowed
    }
}

/// Binance's execution type for an order in `status`, after `trade`.
fn execution_type(status: OrderStatus, traded: bool) -> &'static str {
    match status {
        _ if traded => "TRADE",
        OrderStatus::New => "NEW",
        OrderStatus::Canceled => "CANCELED",
        OrderStatus::Rejected => "REJECTED",
        OrderStatus::Expired | OrderStatus::ExpiredInMatch => "EXPIRED",
        _ => "TRADE",
    }
}

/// Binance's `executionReport`, every field it sends for a spot order.
fn write_execution_report(update: &UserUpdate, time_ms: u64, trading: &Trading, w: &mut JsonWriter) {
    let view = &update.view;
    let spec = trading.spec(view.market);
    let own_id = view.client_order_id.as_ref().map(ClientOrderId::as_str).unwrap_or("");
    // Binance: a CANCELED report carries the cancel request's id as `c`
    // and the order's own as `C`.
    let canceled = view.status == OrderStatus::Canceled && update.trade.is_none();
    let (client_id, orig_client_id) = match (canceled, &update.cancel_client_id) {
        (true, Some(cancel_id)) => (cancel_id.as_str(), own_id),
        (true, None) => (own_id, own_id),
        (false, _) => (own_id, ""),
    };
    let trade = update.trade;
    w.begin_object()
        .field_str("e", "executionReport")
        .field_uint("E", time_ms)
        .field_str("s", &spec.symbol)
        .field_str("c", client_id)
        .field_str("S", view.side.as_str())
        .field_str("o", view.kind.as_str())
        .field_str("f", view.time_in_force.as_str())
        .field_decimal("q", view.orig_qty.0)
        .field_decimal("p", view.price.0)
        .field_decimal("P", view.stop_price.0)
        .field_decimal("F", 0)
        .field_int("g", -1)
        .field_str("C", orig_client_id)
        .field_str("x", execution_type(view.status, trade.is_some()))
        .field_str("X", view.status.as_str())
        .field_str("r", "NONE")
        .field_uint("i", view.order_id)
        .field_decimal("l", trade.map_or(0, |t| t.qty.0))
        .field_decimal("z", view.executed_qty.0)
        .field_decimal("L", trade.map_or(0, |t| t.price.0))
        .field_decimal("n", trade.map_or(0, |t| t.commission.0));
    match trade {
        Some(t) => w.field_str("N", trading.asset_name(t.commission_asset)),
        None => w.key("N").null(),
    };
    w.field_uint("T", view.update_time_ms)
        .field_int("t", trade.map_or(-1, |t| t.trade_id as i64))
        .field_uint("I", view.order_id)
        .field_bool("w", !view.status.is_final())
        .field_bool("m", trade.is_some_and(|t| t.is_maker))
        .field_bool("M", false)
        .field_uint("O", view.time_ms)
        .field_decimal("Z", view.cummulative_quote_qty.0)
        .field_decimal("Y", trade.map_or(0, |t| t.quote_qty.0))
        .field_decimal("Q", view.orig_quote_qty.0)
        .field_uint("W", view.time_ms)
        .field_str("V", view.stp.as_str())
        .end_object();
}

/// Binance's `outboundAccountPosition` for the assets an event moved.
fn account_position_payload(
    balances: &[(tradsys_engine::order::AssetId, tradsys_engine::account::Balance)],
    update_time_ms: u64,
    time_ms: u64,
    trading: &Trading,
) -> Vec<u8> {
    let mut w = JsonWriter::with_capacity(256);
    w.begin_object()
        .field_str("e", "outboundAccountPosition")
        .field_uint("E", time_ms)
        .field_uint("u", update_time_ms);
    w.key("B").begin_array();
    for (asset, balance) in balances {
        w.begin_object()
            .field_str("a", trading.asset_name(*asset))
            .field_decimal("f", balance.free.0)
            .field_decimal("l", balance.locked.0)
            .end_object();
    }
    w.end_array().end_object();
    w.into_bytes()
}

/// Sends `listenKeyExpired` as the last frame of the connections of `key`.
fn close_user_key(outs: &[UserConnection], key: &str, time_ms: u64) -> usize {
    let mut w = JsonWriter::with_capacity(128);
    w.begin_object()
        .field_str("e", "listenKeyExpired")
        .field_uint("E", time_ms)
        .field_str("listenKey", key)
        .end_object();
    let payload = w.into_bytes();
    let raw = frame_of(&payload);
    let mut overflowed = 0;
    for (out, _) in outs.iter().filter(|(_, k)| &**k == key) {
        let frame = match out.is_combined() {
            false => raw.clone(),
            true => combined_frame(key, &payload),
        };
        if out.push_last(frame) == Push::Overflowed {
            overflowed += 1;
        }
    }
    overflowed
}

fn frame_of(payload: &[u8]) -> Rc<[u8]> {
    // JsonWriter output is UTF-8 by construction.
    Rc::from(text_frame(std::str::from_utf8(payload).unwrap_or("{}")))
}

fn combined_frame(name: &str, payload: &[u8]) -> Rc<[u8]> {
    let mut wrapped = Vec::with_capacity(payload.len() + name.len() + 32);
    wrapped.extend_from_slice(b"{\"stream\":\"");
    wrapped.extend_from_slice(name.as_bytes());
    wrapped.extend_from_slice(b"\",\"data\":");
    wrapped.extend_from_slice(payload);
    wrapped.push(b'}');
    frame_of(&wrapped)
}

/// Levels of `new` whose quantity differs from `old`, and with quantity 0
/// the levels of `old` and the `touched` prices that `new` lacks.
fn changed_levels(old: &[Level], new: &[Level], touched: &HashSet<Price>) -> Vec<Level> {
    let before: HashMap<Price, Qty> = old.iter().copied().collect();
    let after: HashMap<Price, Qty> = new.iter().copied().collect();
    let mut changed: Vec<Level> = new
        .iter()
        .filter(|(p, q)| before.get(p) != Some(q) || touched.contains(p))
        .copied()
        .collect();
    changed.extend(
        old.iter()
            .filter(|(p, _)| !after.contains_key(p))
            .map(|&(p, _)| (p, Qty(0))),
    );
    let mut gone: Vec<Price> = touched
        .iter()
        .filter(|p| !after.contains_key(p) && !before.contains_key(p))
        .copied()
        .collect();
    gone.sort_unstable();
    changed.extend(gone.into_iter().map(|p| (p, Qty(0))));
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_levels_reports_new_changed_and_removed_levels() {
        let old = [(Price(100), Qty(5)), (Price(99), Qty(1)), (Price(98), Qty(2))];
        let new = [(Price(101), Qty(3)), (Price(100), Qty(5)), (Price(99), Qty(4))];
        let touched = HashSet::from([Price(97), Price(100)]);
        assert_eq!(
            changed_levels(&old, &new, &touched),
            vec![
                (Price(101), Qty(3)),
                (Price(100), Qty(5)),
                (Price(99), Qty(4)),
                (Price(98), Qty(0)),
                (Price(97), Qty(0))
            ]
        );
    }

    #[test]
    fn outbound_overflow_drops_everything_and_refuses_more() {
        let out = Outbound::new(10, false);
        assert_eq!(out.push(Rc::from(&b"123456"[..])), Push::Queued);
        assert_eq!(out.push(Rc::from(&b"123456"[..])), Push::Overflowed);
        assert!(out.is_overflowed());
        assert_eq!(out.pop(), None);
        assert_eq!(out.push(Rc::from(&b"1"[..])), Push::Dropped);
    }

    fn trading() -> Trading {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/shards/markets.toml")).expect("markets.toml");
        let specs = tradsys_engine::market::parse_markets(&text).expect("markets");
        Trading::new(0, 1, specs, tradsys_engine::book::BookCapacity::default())
    }

    #[test]
    fn stream_names_parse_to_their_canonical_names() {
        let trading = trading();
        let table = [
            ("btcusdt@aggTrade", Some("btcusdt@aggTrade")),
            ("btcusdt@ticker", Some("btcusdt@ticker")),
            ("btcusdt@miniTicker", Some("btcusdt@miniTicker")),
            ("btcusdt@depth5", Some("btcusdt@depth5")),
            ("btcusdt@depth10@1000ms", Some("btcusdt@depth10")),
            ("btcusdt@depth20@100ms", Some("btcusdt@depth20@100ms")),
            ("btcusdt@depth15", None),
            ("btcusdt@depth5@10ms", None),
            ("btcusdt@kline_1m", Some("btcusdt@kline_1m")),
            ("btcusdt@kline_1M", Some("btcusdt@kline_1M")),
            ("btcusdt@kline_2m", None),
            ("!ticker@arr", Some("!ticker@arr")),
            ("!miniTicker@arr", Some("!miniTicker@arr")),
            ("!bookTicker@arr", None),
            ("nosuch@ticker", None),
        ];
        for (name, canonical) in table {
            let key = StreamKey::parse(name, &trading);
            assert_eq!(key.map(|k| k.name(&trading)).as_deref(), canonical, "{name}");
        }
        assert!(StreamKey::parse("!ticker@arr", &trading).is_some_and(|k| k.is_all_markets()));
    }

    fn tape(id: u64, price: i64, time_ms: u64) -> crate::marketdata::TapeTrade {
        crate::marketdata::TapeTrade {
            id,
            price: Price(price),
            qty: Qty(1),
            quote_qty: tradsys_engine::num::Amount(price),
            time_ms,
            is_buyer_maker: false,
            taker_order: id,
        }
    }

    #[test]
    fn kline_updates_send_changes_then_the_close() {
        let (market, interval) = (MarketId(0), Interval::M1);
        let mut data = MarketData::new(crate::marketdata::MarketDataLimits::default());
        let mut registry = Registry::default();
        data.record(&tape(1, 10, 60_000));
        registry.kline_start(market, interval, data.newest_candle(interval), 60_500);
        // (new trade, now, expected (open, last trade id, closed) sent)
        type Row = (Option<(u64, i64, u64)>, u64, &'static [(u64, u64, bool)]);
        let table: [Row; 6] = [
            // The open candle goes out once after the start.
            (None, 61_000, &[(60_000, 1, false)]),
            (None, 62_000, &[]),
            (Some((2, 11, 62_500)), 63_000, &[(60_000, 2, false)]),
            // Its time is over: once more, closed.
            (None, 120_000, &[(60_000, 2, true)]),
            (None, 121_000, &[]),
            // A trade two minutes on: that candle, open.
            (Some((3, 12, 240_100)), 240_200, &[(240_000, 3, false)]),
        ];
        for (trade, now, expected) in table {
            if let Some((id, price, time)) = trade {
                data.record(&tape(id, price, time));
            }
            let sent: Vec<(u64, u64, bool)> = registry
                .kline_updates(market, interval, &data, now)
                .iter()
                .map(|(c, closed)| (c.open_time_ms, c.last_trade_id, *closed))
                .collect();
            assert_eq!(sent, expected, "at {now}");
        }
        // A newer candle closes the one before it at once.
        data.record(&tape(4, 13, 300_000));
        let sent: Vec<(u64, bool)> = registry
            .kline_updates(market, interval, &data, 300_001)
            .iter()
            .map(|(c, closed)| (c.open_time_ms, *closed))
            .collect();
        assert_eq!(sent, [(240_000, true), (300_000, false)]);
    }

    #[test]
    fn user_connections_are_capped_over_all_shards() {
        let mut registry = Registry::default();
        assert!(registry.add_user_connection(7, 0, 3));
        assert!(registry.add_user_connection(7, 1, 3));
        assert!(registry.add_user_connection(7, 1, 3));
        assert!(!registry.add_user_connection(7, 0, 3));
        assert!(registry.add_user_connection(8, 0, 3), "another user has its own count");
        assert_eq!(registry.user_shards_of(7), [0, 1]);
        registry.remove_user_connection(7, 1);
        assert_eq!(registry.user_shards_of(7), [0, 1]);
        assert!(registry.add_user_connection(7, 0, 3));
        registry.remove_user_connection(7, 0);
        registry.remove_user_connection(7, 0);
        registry.remove_user_connection(7, 1);
        assert!(registry.user_shards_of(7).is_empty());
        assert!(registry.has_user_streams(), "user 8 still has one");
    }

    #[test]
    fn a_finished_queue_drops_later_frames_and_is_ready() {
        let out = Outbound::new(100, false);
        assert_eq!(out.push_last(Rc::from(&b"last"[..])), Push::Queued);
        assert_eq!(out.push(Rc::from(&b"more"[..])), Push::Dropped);
        assert!(out.is_finished());
        assert_eq!(out.pop().as_deref(), Some(&b"last"[..]));
        assert_eq!(out.pop(), None);
    }

    #[test]
    fn depth_chain_links_update_ids() {
        let mut registry = Registry::default();
        let market = MarketId(0);
        registry.depth_start(market, true, 7, vec![(Price(10), Qty(1))], vec![]);
        assert_eq!(registry.depth_diff(market, true, 7, 0, vec![], vec![]), None);
        let diff = registry
            .depth_diff(market, true, 9, 5, vec![], vec![(Price(11), Qty(2))])
            .expect("a diff");
        assert_eq!((diff.first_update_id, diff.last_update_id), (8, 9));
        assert_eq!(diff.bids, vec![(Price(10), Qty(0))]);
        assert_eq!(diff.asks, vec![(Price(11), Qty(2))]);
        let next = registry
            .depth_diff(market, true, 12, 6, vec![], vec![])
            .expect("a diff");
        assert_eq!(next.first_update_id, 10);
    }
}
