//! The events a market's or user's shard sends to subscribed shards, and
//! their Binance JSON.

use super::*;
use crate::json::JsonWriter;
use crate::marketdata::{AggTrade, Candle, Interval, Ticker24h};
use crate::trading::{BalanceUpdate, Trading, UserUpdate};
use tradsys_engine::msg::Fill;
use tradsys_engine::num::{Price, Qty};
use tradsys_engine::order::{ClientOrderId, MarketId, OrderStatus, UserId};

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
    /// An event of a market another instance of the cluster owns, as that
    /// instance rendered it (its Binance payload), relayed here.
    Relayed {
        key: StreamKey,
        payload: String,
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
            StreamEvent::Relayed { key, .. } => return *key,
        };
        StreamKey { market, kind }
    }

    /// The event's Binance payload.
    pub(crate) fn write(&self, trading: &Trading, w: &mut JsonWriter) {
        let symbol = |market: MarketId| trading.spec(market).symbol.as_str();
        match self {
            StreamEvent::Relayed { payload, .. } => {
                w.raw(payload);
            }
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
    /// The user's market maker protection fired: mmpTriggered.
    Mmp(crate::trading::MmpEvent),
    /// An order list began or ended: listStatus.
    List(crate::trading::ListUpdate),
}

impl UserEvent {
    pub(crate) fn user(&self) -> UserId {
        match self {
            UserEvent::Order(update) => update.user,
            UserEvent::Balance(update) => update.user,
            UserEvent::KeyClosed { user, .. } => *user,
            UserEvent::Mmp(event) => event.user,
            UserEvent::List(update) => update.view.user,
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

/// Binance's execution type for an order in `status`, after `trade`.
pub(super) fn execution_type(status: OrderStatus, traded: bool) -> &'static str {
    match status {
        _ if traded => "TRADE",
        OrderStatus::New | OrderStatus::PendingNew => "NEW",
        OrderStatus::Canceled => "CANCELED",
        OrderStatus::Rejected => "REJECTED",
        OrderStatus::Expired | OrderStatus::ExpiredInMatch => "EXPIRED",
        _ => "TRADE",
    }
}

/// Binance's `executionReport`, every field it sends for a spot order.
pub(super) fn write_execution_report(update: &UserUpdate, time_ms: u64, trading: &Trading, w: &mut JsonWriter) {
    let view = &update.view;
    let spec = trading.spec(view.market);
    let own_id = view.client_order_id.as_ref().map(ClientOrderId::as_str).unwrap_or("");
    // Binance: a CANCELED report carries the cancel request's id as `c`
    // and the order's own as `C`.
    let canceled = view.status == OrderStatus::Canceled && update.trade.is_none();
    // An amendment's REPLACED report: the order's new id as `c`, the
    // one it had before as `C`.
    let (client_id, orig_client_id) = match (canceled, &update.cancel_client_id, &update.amended_from) {
        (true, Some(cancel_id), _) => (cancel_id.as_str(), own_id),
        (true, None, _) => (own_id, own_id),
        (false, _, Some(before)) => (own_id, before.as_str()),
        (false, _, None) => (own_id, ""),
    };
    let execution = match update.amended_from {
        Some(_) => "REPLACED",
        None => execution_type(view.status, update.trade.is_some()),
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
        .field_decimal("F", view.iceberg_qty.0)
        .field_int("g", list_id(view.order_list_id))
        .field_str("C", orig_client_id)
        .field_str("x", execution)
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
        .field_str("V", view.stp.as_str());
    // Binance's conditional field, for trailing stops only.
    if view.trailing_delta > 0 {
        w.field_uint("d", u64::from(view.trailing_delta));
    }
    w.end_object();
}

/// tradsys's `mmpTriggered`: the protection of the user in market `s`
/// fired at `T`; new orders there are refused until `frozenUntil` (-1:
/// until reset).
pub(super) fn mmp_payload(event: &crate::trading::MmpEvent, time_ms: u64, trading: &Trading) -> Vec<u8> {
    let mut w = JsonWriter::with_capacity(128);
    w.begin_object()
        .field_str("e", "mmpTriggered")
        .field_uint("E", time_ms)
        .field_str("s", &trading.spec(event.market).symbol)
        .field_uint("T", event.time_ms);
    match event.frozen_until_ms {
        u64::MAX => w.field_int("frozenUntil", -1),
        until => w.field_uint("frozenUntil", until),
    };
    w.end_object();
    w.into_bytes()
}

/// Binance's `orderListId`: -1 for an order of no list.
pub(crate) fn list_id(order_list_id: u64) -> i64 {
    match order_list_id {
        0 => -1,
        id => i64::try_from(id).unwrap_or(i64::MAX),
    }
}

/// Binance's `listStatus` event.
pub(super) fn list_status_payload(update: &crate::trading::ListUpdate, time_ms: u64, trading: &Trading) -> Vec<u8> {
    let view = &update.view;
    let symbol = &trading.spec(view.market).symbol;
    let mut w = JsonWriter::with_capacity(384);
    w.begin_object()
        .field_str("e", "listStatus")
        .field_uint("E", time_ms)
        .field_str("s", symbol)
        .field_uint("g", view.order_list_id)
        .field_str("c", view.kind.contingency().as_str())
        .field_str("l", view.status_type.as_str())
        .field_str("L", view.order_status.as_str())
        .field_str("r", "NONE")
        .field_str("C", view.list_client_order_id.as_str())
        .field_uint("T", view.update_time_ms);
    w.key("O").begin_array();
    for (&id, client) in view.order_ids().iter().zip(&update.client_order_ids) {
        w.begin_object()
            .field_str("s", symbol)
            .field_uint("i", id)
            .field_str("c", client.as_ref().map_or("", ClientOrderId::as_str))
            .end_object();
    }
    w.end_array().end_object();
    w.into_bytes()
}

/// Binance's `outboundAccountPosition` for the assets an event moved.
pub(super) fn account_position_payload(
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
