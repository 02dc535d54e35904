//! One shard's registry of subscribers: local connections per stream and
//! per user, and, for the markets and users this shard owns, the shards
//! subscribed to each; and the state periodic streams are computed from.

use super::*;
use crate::json::JsonWriter;
use crate::marketdata::{Candle, Interval, MarketData};
use crate::trading::Trading;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::time::Instant;
use tradsys_engine::num::{Price, Qty};
use tradsys_engine::order::{MarketId, Side, UserId};

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

/// A user data stream connection: its queue and how its events are framed.
type UserConnection = (Rc<Outbound>, Delivery);

/// How a connection receives a user's events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// A stream connection opened with this listen key: the bare event, or
    /// wrapped with the key on a combined stream.
    ListenKey(Rc<str>),
    /// A WebSocket API subscription:
    /// `{"subscriptionId":n,"event":{..}}`.
    Subscription(u32),
}

/// One shard's subscribers: local connections per stream and, for the
/// markets this shard owns, the shards subscribed to each stream.
#[derive(Default)]
pub(crate) struct Registry {
    /// Local connections per stream, each with when it subscribed (a
    /// close of the streams that went stale spares those that came after).
    local: HashMap<StreamKey, Vec<(Rc<Outbound>, Instant)>>,
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
    /// Other instances' subscriptions among `shards` (their
    /// pseudo-shards), with when each was last renewed, ms.
    leases: HashMap<(StreamKey, usize), u64>,
}

impl Registry {
    /// Adds a local subscriber; true when it is the shard's first for `key`.
    pub(crate) fn subscribe_local(&mut self, key: StreamKey, out: &Rc<Outbound>) -> bool {
        let subscribers = self.local.entry(key).or_default();
        if subscribers.iter().any(|(s, _)| Rc::ptr_eq(s, out)) {
            return false;
        }
        subscribers.push((out.clone(), Instant::now()));
        subscribers.len() == 1
    }

    /// Removes a local subscriber; true when it was the shard's last.
    pub(crate) fn unsubscribe_local(&mut self, key: StreamKey, out: &Rc<Outbound>) -> bool {
        let Some(subscribers) = self.local.get_mut(&key) else {
            return false;
        };
        let before = subscribers.len();
        subscribers.retain(|(s, _)| !Rc::ptr_eq(s, out));
        let removed = subscribers.len() < before;
        if subscribers.is_empty() {
            self.local.remove(&key);
        }
        removed && !self.local.contains_key(&key)
    }

    /// On the market's shard: `shard` wants `key`. Returns true when the
    /// stream had no subscribed shard before.
    /// Adds `shard` to `key`'s subscribers; whether it is the first (a
    /// shard already there, as when another instance renews its lease,
    /// is not).
    pub(crate) fn add_shard(&mut self, key: StreamKey, shard: usize) -> bool {
        let shards = self.shards.entry(key).or_default();
        if shards.contains(&shard) {
            return false;
        }
        shards.push(shard);
        shards.len() == 1
    }

    /// Notes that `shard` (another instance's pseudo-shard) renewed its
    /// subscription to `key` at `now_ms`.
    pub(crate) fn renew_lease(&mut self, key: StreamKey, shard: usize, now_ms: u64) {
        self.leases.insert((key, shard), now_ms);
    }

    /// The subscriptions of other instances not renewed since `before_ms`.
    pub(crate) fn expired_leases(&self, before_ms: u64) -> Vec<(StreamKey, usize)> {
        self.leases
            .iter()
            .filter(|(_, &renewed)| renewed < before_ms)
            .map(|(&lease, _)| lease)
            .collect()
    }

    pub(crate) fn remove_shard(&mut self, key: StreamKey, shard: usize) {
        self.leases.remove(&(key, shard));
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

    /// Adds a local user-stream connection of `user`.
    pub(crate) fn subscribe_user_local(&mut self, user: UserId, delivery: Delivery, out: &Rc<Outbound>) {
        let outs = self.user_local.entry(user).or_default();
        // Most users hold one connection: room for one, not four (an idle
        // session's bytes are a target, docs/performance.md).
        if outs.is_empty() {
            outs.reserve_exact(1);
        }
        outs.push((out.clone(), delivery));
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
            None => {
                // Most users' connections are on one shard.
                if shards.is_empty() {
                    shards.reserve_exact(1);
                }
                shards.push((shard, 1));
            }
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
            UserEvent::KeyClosed { key, .. } => return close_user_key(outs, key, time_ms),
            UserEvent::Mmp(mmp) => return push_user_single(outs, &mmp_payload(mmp, time_ms, trading)),
            UserEvent::List(update) => return push_user_single(outs, &list_status_payload(update, time_ms, trading)),
            event => match user_event_payloads(event, time_ms, trading) {
                Some(payloads) => payloads,
                None => return 0,
            },
        };
        // Raw frames are shared by every `/ws` connection; a combined one
        // (`/stream?streams=<listenKey>`) gets them wrapped with its key.
        let raw = [frame_of(&payloads[0]), frame_of(&payloads[1])];
        let mut overflowed = 0;
        for (out, delivery) in outs {
            let frames = match delivery {
                Delivery::ListenKey(_) if !out.is_combined() => raw.clone(),
                Delivery::ListenKey(key) => [combined_frame(key, &payloads[0]), combined_frame(key, &payloads[1])],
                Delivery::Subscription(id) => [
                    subscription_frame(*id, &payloads[0]),
                    subscription_frame(*id, &payloads[1]),
                ],
            };
            let pushes = frames.map(|frame| out.push(frame));
            if pushes.contains(&Push::Overflowed) {
                overflowed += 1;
            }
        }
        overflowed
    }

    /// Sends `payload` as the last frame of every local subscriber of
    /// `key` that subscribed by `before` (their connections close
    /// after it). Returns the queues that overflowed with it.
    pub(crate) fn close_local(&self, key: StreamKey, payload: &[u8], trading: &Trading, before: Instant) -> usize {
        let Some(subscribers) = self.local.get(&key) else {
            return 0;
        };
        let raw = frame_of(payload);
        let mut overflowed = 0;
        for (out, _) in subscribers.iter().filter(|(_, since)| *since <= before) {
            let frame = match out.is_combined() {
                false => raw.clone(),
                true => combined_frame(&key.name(trading), payload),
            };
            if out.push_last(frame) == Push::Overflowed {
                overflowed += 1;
            }
        }
        overflowed
    }

    /// The keys this shard has local subscribers of.
    pub(crate) fn local_keys(&self) -> Vec<StreamKey> {
        self.local.keys().copied().collect()
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
        for (out, _) in subscribers {
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

/// Sends `listenKeyExpired` as the last frame of the connections of `key`.
pub(super) fn close_user_key(outs: &[UserConnection], key: &str, time_ms: u64) -> usize {
    let mut w = JsonWriter::with_capacity(128);
    w.begin_object()
        .field_str("e", "listenKeyExpired")
        .field_uint("E", time_ms)
        .field_str("listenKey", key)
        .end_object();
    let payload = w.into_bytes();
    let raw = frame_of(&payload);
    let mut overflowed = 0;
    let of_key = outs
        .iter()
        .filter(|(_, d)| matches!(d, Delivery::ListenKey(k) if &**k == key));
    for (out, _) in of_key {
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

/// Levels of `new` whose quantity differs from `old`, and with quantity 0
/// the levels of `old` and the `touched` prices that `new` lacks.
pub(super) fn changed_levels(old: &[Level], new: &[Level], touched: &HashSet<Price>) -> Vec<Level> {
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

/// The two payloads a user event sends (an executionReport or
/// balanceUpdate, then the outboundAccountPosition); `None` for a closed
/// listen key.
pub(crate) fn user_event_payloads(event: &UserEvent, time_ms: u64, trading: &Trading) -> Option<[Vec<u8>; 2]> {
    match event {
        UserEvent::Order(update) => {
            let mut w = JsonWriter::with_capacity(768);
            write_execution_report(update, time_ms, trading, &mut w);
            let position = account_position_payload(&update.balances, update.view.update_time_ms, time_ms, trading);
            Some([w.into_bytes(), position])
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
            Some([w.into_bytes(), position])
        }
        UserEvent::KeyClosed { .. } | UserEvent::Mmp(_) | UserEvent::List(_) => None,
    }
}

/// Queues one payload for every user-stream connection in `outs`;
/// returns the queues that overflowed.
fn push_user_single(outs: &[UserConnection], payload: &[u8]) -> usize {
    let raw = frame_of(payload);
    let mut overflowed = 0;
    for (out, delivery) in outs {
        let frame = match delivery {
            Delivery::ListenKey(_) if !out.is_combined() => raw.clone(),
            Delivery::ListenKey(key) => combined_frame(key, payload),
            Delivery::Subscription(id) => subscription_frame(*id, payload),
        };
        if out.push(frame) == Push::Overflowed {
            overflowed += 1;
        }
    }
    overflowed
}
