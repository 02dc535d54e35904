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
//! Callers: `shard` (registry, publishing, depth ticks) and `wsconn` (the
//! connection loop that drains an [`Outbound`]).

use crate::json::JsonWriter;
use crate::trading::Trading;
use crate::trading::UserUpdate;
use crate::ws::text_frame;
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet, VecDeque};
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use tradsys_engine::msg::Fill;
use tradsys_engine::num::{Price, Qty};
use tradsys_engine::order::{ClientOrderId, MarketId, OrderStatus, Side, UserId};

/// Streams one connection may subscribe to (Binance's limit).
pub const WS_STREAMS_PER_CONNECTION_MAX: usize = 1024;
/// Levels per side a depth diff compares (the deepest REST depth).
pub const DEPTH_DIFF_LEVELS_MAX: usize = tradsys_engine::book::DEPTH_LEVELS_MAX;
/// Frames a drained queue keeps room for; a queue that grew beyond it
/// gives its memory back, so an idle subscriber stays small.
const OUTBOUND_FRAMES_KEPT_MAX: usize = 16;

/// What a stream carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StreamKind {
    Trade,
    BookTicker,
    /// Depth diffs every 100 ms (`fast`) or every second.
    Depth {
        fast: bool,
    },
}

/// One stream: a kind of one market.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StreamKey {
    pub market: MarketId,
    pub kind: StreamKind,
}

impl StreamKey {
    /// Parses a Binance stream name such as `btcusdt@trade`.
    pub fn parse(name: &str, trading: &Trading) -> Option<StreamKey> {
        let (symbol, kind) = name.split_once('@')?;
        let kind = match kind {
            "trade" => StreamKind::Trade,
            "bookTicker" => StreamKind::BookTicker,
            "depth" | "depth@1000ms" => StreamKind::Depth { fast: false },
            "depth@100ms" => StreamKind::Depth { fast: true },
            _ => return None,
        };
        let market = trading.market(&symbol.to_ascii_uppercase())?;
        Some(StreamKey { market, kind })
    }

    /// The stream's canonical name, as combined payloads and
    /// LIST_SUBSCRIPTIONS show it.
    pub fn name(&self, trading: &Trading) -> String {
        let symbol = trading.spec(self.market).symbol.to_ascii_lowercase();
        let suffix = match self.kind {
            StreamKind::Trade => "trade",
            StreamKind::BookTicker => "bookTicker",
            StreamKind::Depth { fast: false } => "depth",
            StreamKind::Depth { fast: true } => "depth@100ms",
        };
        format!("{symbol}@{suffix}")
    }
}

/// A best bid or ask: price and total quantity.
pub type Level = (Price, Qty);

/// What a market's shard sends to subscribed shards.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamEvent {
    Trade(Fill),
    BookTicker {
        market: MarketId,
        update_id: u64,
        bid: Option<Level>,
        ask: Option<Level>,
    },
    Depth(DepthDiff),
}

/// Changed levels of a book between two update ids; quantity 0 removes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DepthDiff {
    pub market: MarketId,
    pub fast: bool,
    pub time_ms: u64,
    pub first_update_id: u64,
    pub last_update_id: u64,
    pub bids: Vec<Level>,
    pub asks: Vec<Level>,
}

impl StreamEvent {
    pub fn key(&self) -> StreamKey {
        match self {
            StreamEvent::Trade(fill) => StreamKey {
                market: fill.market,
                kind: StreamKind::Trade,
            },
            StreamEvent::BookTicker { market, .. } => StreamKey {
                market: *market,
                kind: StreamKind::BookTicker,
            },
            StreamEvent::Depth(diff) => StreamKey {
                market: diff.market,
                kind: StreamKind::Depth { fast: diff.fast },
            },
        }
    }

    /// The event's Binance payload; `symbol` is the market's, upper case.
    pub fn write(&self, symbol: &str, w: &mut JsonWriter) {
        match self {
            StreamEvent::Trade(fill) => {
                w.begin_object()
                    .field_str("e", "trade")
                    .field_uint("E", fill.time_ms)
                    .field_str("s", symbol)
                    .field_uint("t", fill.trade_id)
                    .field_decimal("p", fill.price.0)
                    .field_decimal("q", fill.qty.0)
                    .field_uint("T", fill.time_ms)
                    .field_bool("m", fill.is_buyer_maker())
                    .field_bool("M", true)
                    .end_object();
            }
            StreamEvent::BookTicker {
                update_id, bid, ask, ..
            } => {
                let (bid, ask) = (bid.unwrap_or_default(), ask.unwrap_or_default());
                w.begin_object()
                    .field_uint("u", *update_id)
                    .field_str("s", symbol)
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
                    .field_str("s", symbol)
                    .field_uint("U", diff.first_update_id)
                    .field_uint("u", diff.last_update_id);
                for (name, levels) in [("b", &diff.bids), ("a", &diff.asks)] {
                    w.key(name).begin_array();
                    for (price, qty) in levels {
                        w.begin_array().decimal(price.0).decimal(qty.0).end_array();
                    }
                    w.end_array();
                }
                w.end_object();
            }
        }
    }
}

/// The frames of one event: raw for `/ws` connections and, built only if a
/// subscriber wants it, wrapped as `{"stream":..,"data":..}`.
struct Frames {
    raw: Rc<[u8]>,
    combined: Option<Rc<[u8]>>,
}

/// What pushing a frame came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Push {
    Queued,
    /// This push overflowed the queue: the connection must close with 1008.
    Overflowed,
    /// The queue had already overflowed; nothing was queued.
    Dropped,
}

/// One connection's queue of frames to write, bounded in bytes.
pub struct Outbound {
    frames: RefCell<VecDeque<Rc<[u8]>>>,
    bytes: Cell<usize>,
    bytes_max: usize,
    overflowed: Cell<bool>,
    combined: Cell<bool>,
    waker: Cell<Option<Waker>>,
}

impl Outbound {
    pub fn new(bytes_max: usize, combined: bool) -> Outbound {
        Outbound {
            frames: RefCell::new(VecDeque::new()),
            bytes: Cell::new(0),
            bytes_max,
            overflowed: Cell::new(false),
            combined: Cell::new(combined),
            waker: Cell::new(None),
        }
    }

    pub fn is_combined(&self) -> bool {
        self.combined.get()
    }

    pub fn set_combined(&self, combined: bool) {
        self.combined.set(combined);
    }

    pub fn is_overflowed(&self) -> bool {
        self.overflowed.get()
    }

    /// Queues `frame`, or marks the queue overflowed and frees it.
    pub fn push(&self, frame: Rc<[u8]>) -> Push {
        if self.overflowed.get() {
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
    pub fn pop(&self) -> Option<Rc<[u8]>> {
        let mut frames = self.frames.borrow_mut();
        let frame = frames.pop_front()?;
        self.bytes.set(self.bytes.get() - frame.len());
        if frames.is_empty() && frames.capacity() > OUTBOUND_FRAMES_KEPT_MAX {
            *frames = VecDeque::new();
        }
        Some(frame)
    }

    /// Ready when there is a frame to write or the queue overflowed.
    pub fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.overflowed.get() || !self.frames.borrow().is_empty() {
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

/// One shard's subscribers: local connections per stream and, for the
/// markets this shard owns, the shards subscribed to each stream.
#[derive(Default)]
pub struct Registry {
    local: HashMap<StreamKey, Vec<Rc<Outbound>>>,
    shards: HashMap<StreamKey, Vec<usize>>,
    depth: HashMap<(MarketId, bool), DepthState>,
    book_ticker_ids: HashMap<MarketId, u64>,
    /// User data stream connections here, by user.
    user_local: HashMap<UserId, Vec<Rc<Outbound>>>,
    /// For users owned here: the shards holding their stream connections.
    user_shards: HashMap<UserId, Vec<usize>>,
}

impl Registry {
    /// Adds a local subscriber; true when it is the shard's first for `key`.
    pub fn subscribe_local(&mut self, key: StreamKey, out: &Rc<Outbound>) -> bool {
        let subscribers = self.local.entry(key).or_default();
        if subscribers.iter().any(|s| Rc::ptr_eq(s, out)) {
            return false;
        }
        subscribers.push(out.clone());
        subscribers.len() == 1
    }

    /// Removes a local subscriber; true when it was the shard's last.
    pub fn unsubscribe_local(&mut self, key: StreamKey, out: &Rc<Outbound>) -> bool {
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
    pub fn add_shard(&mut self, key: StreamKey, shard: usize) -> bool {
        let shards = self.shards.entry(key).or_default();
        if !shards.contains(&shard) {
            shards.push(shard);
        }
        shards.len() == 1
    }

    pub fn remove_shard(&mut self, key: StreamKey, shard: usize) {
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
            StreamKind::Trade => {}
        }
    }

    /// The shards subscribed to `key` (on the market's shard).
    pub fn shards_of(&self, key: StreamKey) -> &[usize] {
        self.shards.get(&key).map_or(&[], Vec::as_slice)
    }

    /// Streams of `kind`-like streams that have subscribed shards.
    pub fn subscribed(&self, matches: impl Fn(StreamKind) -> bool) -> Vec<StreamKey> {
        self.shards.keys().filter(|k| matches(k.kind)).copied().collect()
    }

    /// Starts a depth chain from the book as it is now.
    pub fn depth_start(&mut self, market: MarketId, fast: bool, update_id: u64, bids: Vec<Level>, asks: Vec<Level>) {
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
    pub fn touch_levels(&mut self, touched: &[(MarketId, Side, Price)]) {
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
    pub fn depth_diff(
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
    pub fn book_ticker_changed(&mut self, market: MarketId, update_id: u64) -> bool {
        let last = self.book_ticker_ids.insert(market, update_id);
        last != Some(update_id)
    }

    /// Adds a local user-stream connection; true when it is the shard's
    /// first for `user`.
    pub fn subscribe_user_local(&mut self, user: UserId, out: &Rc<Outbound>) -> bool {
        let outs = self.user_local.entry(user).or_default();
        outs.push(out.clone());
        outs.len() == 1
    }

    /// Removes a user-stream connection; true when it was the shard's last.
    pub fn unsubscribe_user_local(&mut self, user: UserId, out: &Rc<Outbound>) -> bool {
        let Some(outs) = self.user_local.get_mut(&user) else {
            return false;
        };
        outs.retain(|o| !Rc::ptr_eq(o, out));
        if outs.is_empty() {
            self.user_local.remove(&user);
            return true;
        }
        false
    }

    /// On the user's shard: `shard` holds stream connections of `user`.
    pub fn add_user_shard(&mut self, user: UserId, shard: usize) {
        let shards = self.user_shards.entry(user).or_default();
        if !shards.contains(&shard) {
            shards.push(shard);
        }
    }

    pub fn remove_user_shard(&mut self, user: UserId, shard: usize) {
        if let Some(shards) = self.user_shards.get_mut(&user) {
            shards.retain(|&s| s != shard);
            if shards.is_empty() {
                self.user_shards.remove(&user);
            }
        }
    }

    pub fn user_shards_of(&self, user: UserId) -> &[usize] {
        self.user_shards.get(&user).map_or(&[], Vec::as_slice)
    }

    /// Serialises a user's order change once (executionReport, then
    /// outboundAccountPosition) and queues it for the user's connections
    /// here. Returns the queues that overflowed.
    pub fn publish_user_local(&self, update: &UserUpdate, time_ms: u64, trading: &Trading) -> usize {
        let Some(outs) = self.user_local.get(&update.user) else {
            return 0;
        };
        let mut w = JsonWriter::with_capacity(768);
        write_execution_report(update, time_ms, trading, &mut w);
        let report = frame_of(&w.into_bytes());
        let mut w = JsonWriter::with_capacity(256);
        write_account_position(update, time_ms, trading, &mut w);
        let position = frame_of(&w.into_bytes());
        let mut overflowed = 0;
        for out in outs {
            let pushes = [out.push(report.clone()), out.push(position.clone())];
            if pushes.contains(&Push::Overflowed) {
                overflowed += 1;
            }
        }
        overflowed
    }

    /// Serialises `event` once and queues it for every local subscriber.
    /// Returns the queues that overflowed with it.
    pub fn publish_local(&self, event: &StreamEvent, trading: &Trading) -> usize {
        let key = event.key();
        let Some(subscribers) = self.local.get(&key) else {
            return 0;
        };
        let symbol = &trading.spec(key.market).symbol;
        let mut w = JsonWriter::with_capacity(256);
        event.write(symbol, &mut w);
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
    let client_id = view.client_order_id.as_ref().map(ClientOrderId::as_str).unwrap_or("");
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
        .field_str("C", "")
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

/// Binance's `outboundAccountPosition` for the two assets an order moves.
fn write_account_position(update: &UserUpdate, time_ms: u64, trading: &Trading, w: &mut JsonWriter) {
    w.begin_object()
        .field_str("e", "outboundAccountPosition")
        .field_uint("E", time_ms)
        .field_uint("u", update.view.update_time_ms);
    w.key("B").begin_array();
    for (asset, balance) in &update.balances {
        w.begin_object()
            .field_str("a", trading.asset_name(*asset))
            .field_decimal("f", balance.free.0)
            .field_decimal("l", balance.locked.0)
            .end_object();
    }
    w.end_array().end_object();
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
