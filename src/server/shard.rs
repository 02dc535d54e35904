//! Shards: one glommio executor per core, and everything that runs on it.
//!
//! `run` is the process's skeleton: it binds one SO_REUSEPORT listener per
//! shard in the main thread (so a bad address fails before any executor
//! starts), starts shard i pinned to the i-th allowed CPU, and turns
//! SIGTERM/SIGINT into a drain. A `Shard` is the state of one executor: it
//! is `!Send` and only its own tasks touch it; other shards reach it only
//! through the mesh. This module and `conn` are the only ones that know
//! glommio, so the executor could be swapped without touching the rest.

use crate::binance;
use crate::api::admin;
use crate::api::{ExchangeInfo, RateLimits};
use crate::config::DurabilityMode;
use crate::config::{Config, HttpLimits};
use crate::server::conn::{self, Listener};
use crate::durability::epoch::Epochs;
use crate::durability::image::{market_data_for, ShardImage};
use crate::durability::commit::ShardLog;
use crate::durability::recovery::{self, RecoveryError};
use crate::durability::snapshot;
use crate::http::{HttpError, Params};
use crate::journal;
use crate::json::JsonWriter;
use crate::limits::{LocalLimiter, RateLimiter};
use crate::marketdata::{MarketData, TapeTrade};
use crate::server::mesh::{Call, Mesh, MeshBuilders, MeshError, Reply, ShardMsg, StreamMsg};
use crate::metrics::Metrics;
use crate::api::user::{self as rest, RequestRef, RestReply};
use crate::streams::{
    Outbound, Registry, StreamEvent, StreamKey, StreamKind, TickerEntry, UserAttach, UserEvent, DEPTH_DIFF_LEVELS_MAX,
};
use crate::trading::{Trading, DEMO_USER_ID};
use glommio::channels::channel_mesh::Receivers;
use glommio::net::{TcpListener, UnixStream};
use glommio::sync::{Gate, Semaphore};
use glommio::{LocalExecutorBuilder, Placement};
use std::cell::{Cell, Ref, RefCell, RefMut};
use std::io::Write;
use std::net::IpAddr;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tradsys_engine::book::BookCapacity;
use tradsys_engine::market::MarketSpec;
use tradsys_engine::num::Price;
use tradsys_engine::order::{ClientOrderId, MarketId, Side, UserId};

/// Memory each executor registers with io_uring for storage I/O. Small:
/// network I/O does not use it, and locked memory is scarce (the limit is
/// often 8 MiB per process).
const SHARD_IO_MEMORY_BYTES: usize = 1 << 20;
/// Pending connections the kernel queues per listener.
const LISTEN_BACKLOG: i32 = 4096;
/// Read/write buffers a shard keeps for reuse: enough for the connections
/// that turn busy at once, few enough not to count against idle memory.
const BUFFER_POOL_MAX: usize = 256;

/// Why the server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("listen: cannot bind {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("shard {shard}: {problem}")]
    Shard { shard: usize, problem: String },
    #[error("signals: {0}")]
    Signals(std::io::Error),
    #[error("recovery: {0}")]
    Recovery(#[from] RecoveryError),
}

/// One shard's state, reachable only from its executor.
pub struct Shard {
    index: usize,
    http: HttpLimits,
    connections_max: usize,
    metrics: RefCell<Metrics>,
    mesh: Mesh,
    exchange_info: ExchangeInfo,
    ready: Cell<bool>,
    draining: Cell<bool>,
    /// Never has permits: closing it wakes every connection waiting idle,
    /// which is how a drain reaches them.
    drain: Semaphore,
    pool: RefCell<Vec<Vec<u8>>>,
    trading: RefCell<Trading>,
    /// Trades, candles and tickers of the markets this shard owns.
    market_data: RefCell<Vec<Option<MarketData>>>,
    /// Request weight and raw requests per client IP, on this shard.
    request_limiter: RefCell<LocalLimiter>,
    /// Orders per user; users are counted on their own shard.
    order_limiter: RefCell<LocalLimiter>,
    client_order_seq: Cell<u64>,
    calls_in_flight: Cell<usize>,
    outbox_max: usize,
    admin_token: Option<String>,
    /// Stream subscribers here, and subscribed shards of markets owned here.
    streams: RefCell<Registry>,
    ws: crate::config::WsConfig,
    /// Open WebSocket connections per client IP, on this shard.
    ws_per_ip: RefCell<std::collections::HashMap<IpAddr, usize>>,
    /// The journal and the wait for durability (see `durability::commit`).
    log: Rc<ShardLog>,
}

/// How often the fast (100 ms) periodic streams are computed; the slow
/// (1000 ms) ones, tickers, klines and listen key expiry every
/// `STREAM_SLOW_TICKS` ticks.
const STREAM_TICK: Duration = Duration::from_millis(100);
const STREAM_SLOW_TICKS: u64 = 10;

impl Shard {
    pub fn index(&self) -> usize {
        self.index
    }

    pub fn http_limits(&self) -> &HttpLimits {
        &self.http
    }

    pub fn mesh(&self) -> &Mesh {
        &self.mesh
    }

    pub fn exchange_info(&self) -> &ExchangeInfo {
        &self.exchange_info
    }

    pub fn metrics(&self) -> Ref<'_, Metrics> {
        self.metrics.borrow()
    }

    pub fn metrics_mut(&self) -> RefMut<'_, Metrics> {
        self.metrics.borrow_mut()
    }

    pub fn is_ready(&self) -> bool {
        self.ready.get()
    }

    pub fn is_draining(&self) -> bool {
        self.draining.get()
    }

    /// Resolves when the shard starts draining.
    pub async fn drained(&self) {
        // The semaphore never grants a permit; it only fails once closed.
        let _ = self.drain.acquire(1).await;
    }

    /// A cleared buffer with at least `capacity` bytes, reused if possible.
    pub fn take_buffer(&self, capacity: usize) -> Vec<u8> {
        match self.pool.borrow_mut().pop() {
            Some(mut buffer) => {
                buffer.reserve(capacity);
                buffer
            }
            None => Vec::with_capacity(capacity),
        }
    }

    pub fn trading(&self) -> Ref<'_, Trading> {
        self.trading.borrow()
    }

    pub fn trading_mut(&self) -> RefMut<'_, Trading> {
        self.trading.borrow_mut()
    }

    pub fn market_data(&self) -> Ref<'_, Vec<Option<MarketData>>> {
        self.market_data.borrow()
    }

    /// This shard's metrics now, with the outbox gauge read at this moment.
    pub fn snapshot(&self) -> crate::metrics::Snapshot {
        self.metrics.borrow_mut().mesh_outbox = self.mesh.queued() as u64;
        self.metrics.borrow_mut().journal = self.log.counters();
        self.metrics.borrow().snapshot(self.index)
    }

    pub fn admin_token(&self) -> Option<&str> {
        self.admin_token.as_deref()
    }

    /// Hands the engine messages the last operation produced for other
    /// shards to the mesh, and counts its orders.
    pub fn flush_engine(&self) {
        let mut records = std::mem::take(&mut self.trading.borrow_mut().records);
        let epoch = self.log.append(&mut records);
        self.trading.borrow_mut().records = records;
        let touched = std::mem::take(&mut self.trading.borrow_mut().touched_levels);
        if !touched.is_empty() {
            self.streams.borrow_mut().touch_levels(&touched);
        }
        self.publish_user_events();
        // Taken and put back cleared, so both buffers keep their capacity.
        let mut trades = std::mem::take(&mut self.trading.borrow_mut().trades);
        if !trades.is_empty() {
            self.record_trades(&trades);
            trades.clear();
        }
        self.publish_book_tickers();
        let mut first_fills = std::mem::take(&mut self.trading.borrow_mut().first_fills);
        if !first_fills.is_empty() {
            let now = crate::api::now_ms();
            let mut limiter = self.order_limiter.borrow_mut();
            for user in first_fills.drain(..) {
                limiter.order_filled(user, now);
            }
        }
        self.trading.borrow_mut().first_fills = first_fills;
        let mut outgoing = std::mem::take(&mut self.trading.borrow_mut().outgoing);
        let mut sent = 0;
        for (owner, seq, msg) in outgoing.drain(..) {
            if self
                .mesh
                .send(owner as usize, ShardMsg::Engine { epoch, seq, msg })
                .is_ok()
            {
                sent += 1;
            }
        }
        {
            let mut trading = self.trading.borrow_mut();
            trading.trades = trades;
            trading.outgoing = outgoing;
        }
        let orders = self.trading.borrow().orders;
        let mut m = self.metrics.borrow_mut();
        m.mesh_sent += sent;
        m.orders_local = orders.local;
        m.orders_cross_shard = orders.cross_shard;
        m.mesh_outbox = self.mesh.queued() as u64;
    }

    /// Sends `call` to shard `to` and waits for its reply. What this shard
    /// changed so far is journaled first, so the call carries the epoch of
    /// everything the callee's answer may depend on (see `durability`).
    pub async fn call(&self, to: usize, call: Call) -> Result<Reply, MeshError> {
        self.flush_engine();
        self.mesh.call(to, call).await
    }

    /// Resolves once everything this shard has changed so far is durable
    /// on every shard: call it before a response leaves (see `durability`).
    pub async fn settle(&self) {
        self.flush_engine();
        let Some(target) = self.log.settle_target() else { return };
        for peer in self.log.peers_to_prompt(target) {
            // A peer that is gone cannot seal; the process is stopping.
            let _ = self.mesh.send(peer, ShardMsg::SealWanted { epoch: target });
        }
        self.log.wait(target).await;
    }

    /// Whether the journal keeps up; see `ShardLog::has_room`.
    pub fn journal_has_room(&self) -> bool {
        self.log.has_room()
    }

    /// Files trades of this shard's books in their markets' data and
    /// publishes them, and the aggregates they completed, to the trade and
    /// aggTrade streams. Aggregates are complete after an engine step: a
    /// taker's trades all come from one matching call.
    fn record_trades(&self, trades: &[tradsys_engine::msg::Fill]) {
        let mut agg_from: Vec<(MarketId, u64)> = Vec::new();
        {
            let streams = self.streams.borrow();
            let mut data = self.market_data.borrow_mut();
            for fill in trades {
                let Some(market) = data[usize::from(fill.market.0)].as_mut() else {
                    continue;
                };
                let key = StreamKey {
                    market: fill.market,
                    kind: StreamKind::AggTrade,
                };
                if !agg_from.iter().any(|(m, _)| *m == fill.market) && streams.has_shards(key) {
                    agg_from.push((fill.market, market.next_agg_id()));
                }
                market.record(&TapeTrade::from(fill));
            }
        }
        for fill in trades {
            self.publish(StreamEvent::Trade(*fill));
        }
        for (market, from_id) in agg_from {
            let aggs = self.market_data.borrow()[usize::from(market.0)]
                .as_ref()
                .map(|data| data.aggs_since(from_id, trades.len()))
                .unwrap_or_default();
            for agg in aggs {
                self.publish(StreamEvent::AggTrade { market, agg });
            }
        }
    }

    pub fn ws_config(&self) -> &crate::config::WsConfig {
        &self.ws
    }

    /// Counts a WebSocket connection from `ip`; false when the IP is at
    /// `ws_connections_per_ip_max` on this shard.
    pub fn ws_open(&self, ip: IpAddr) -> bool {
        let mut per_ip = self.ws_per_ip.borrow_mut();
        let open = per_ip.entry(ip).or_insert(0);
        if *open >= self.ws.connections_per_ip_max {
            return false;
        }
        *open += 1;
        self.metrics.borrow_mut().ws_open += 1;
        true
    }

    pub fn ws_closed(&self, ip: IpAddr) {
        let mut per_ip = self.ws_per_ip.borrow_mut();
        if let Some(open) = per_ip.get_mut(&ip) {
            *open -= 1;
            if *open == 0 {
                per_ip.remove(&ip);
            }
        }
        self.metrics.borrow_mut().ws_open -= 1;
    }

    /// Subscribes a local connection's queue to `key`. The shard's first
    /// subscriber asks the market's shard for the stream and waits until
    /// it is sent, so nothing after this returns is missed.
    pub async fn subscribe(&self, key: StreamKey, out: &Rc<Outbound>) -> Result<(), MeshError> {
        if !self.streams.borrow_mut().subscribe_local(key, out) {
            return Ok(());
        }
        for owner in self.stream_owners(key) {
            if owner == self.index {
                self.attach_stream(key, self.index);
                continue;
            }
            if let Err(e) = self.call(owner, Call::Subscribe { key, shard: self.index }).await {
                self.unsubscribe(key, out);
                return Err(e);
            }
        }
        Ok(())
    }

    /// The shards that produce `key`'s events: the market's, or every
    /// shard for the streams of all markets.
    fn stream_owners(&self, key: StreamKey) -> Vec<usize> {
        if key.is_all_markets() {
            return (0..self.mesh.shards()).collect();
        }
        vec![self.trading().market_shard(key.market) as usize]
    }

    /// Drops a local subscription; the shard's last one tells the market's
    /// shard to stop sending the stream here.
    pub fn unsubscribe(&self, key: StreamKey, out: &Rc<Outbound>) {
        if !self.streams.borrow_mut().unsubscribe_local(key, out) {
            return;
        }
        for owner in self.stream_owners(key) {
            if owner == self.index {
                self.streams.borrow_mut().remove_shard(key, self.index);
            } else {
                let msg = StreamMsg::Unsubscribe { key, shard: self.index };
                let _ = self.mesh.send(owner, ShardMsg::Stream(msg));
            }
        }
    }

    /// On the market's shard: starts sending `key` to `shard`. A stream's
    /// first subscriber starts its depth chain or book ticker from now.
    fn attach_stream(&self, key: StreamKey, shard: usize) {
        let first = self.streams.borrow_mut().add_shard(key, shard);
        if !first || key.is_all_markets() {
            return;
        }
        if let StreamKind::Kline(interval) = key.kind {
            let data = self.market_data.borrow();
            let newest = data[usize::from(key.market.0)]
                .as_ref()
                .and_then(|d| d.newest_candle(interval));
            let now = crate::api::now_ms();
            self.streams.borrow_mut().kline_start(key.market, interval, newest, now);
            return;
        }
        let trading = self.trading();
        let Some(book) = trading.book(key.market) else { return };
        let mut streams = self.streams.borrow_mut();
        match key.kind {
            StreamKind::Depth { fast } => {
                let (mut bids, mut asks) = (Vec::new(), Vec::new());
                let update_id = book.depth(DEPTH_DIFF_LEVELS_MAX, &mut bids, &mut asks);
                streams.depth_start(key.market, fast, update_id, bids, asks);
            }
            StreamKind::BookTicker => {
                streams.book_ticker_changed(key.market, book.update_id());
            }
            _ => {}
        }
    }

    /// Sends `event` once to each shard subscribed to its stream.
    fn publish(&self, event: StreamEvent) {
        let shards = self.streams.borrow().shards_of(event.key()).to_vec();
        for shard in shards {
            if shard == self.index {
                self.publish_local(&event);
            } else {
                let msg = StreamMsg::Event(Box::new(event.clone()));
                if self.mesh.send(shard, ShardMsg::Stream(msg)).is_ok() {
                    self.metrics.borrow_mut().mesh_sent += 1;
                }
            }
        }
    }

    /// Subscribes a user data stream connection by its listen key; the
    /// user's shard checks the key and the user's connection cap.
    pub async fn subscribe_user(&self, key: &str, out: &Rc<Outbound>) -> Result<UserAttach, MeshError> {
        let Some(user) = crate::trading::user_of_key(key.as_bytes()) else {
            return Ok(UserAttach::UnknownKey);
        };
        let owner = self.trading().user_shard(user) as usize;
        let attach = if owner == self.index {
            self.attach_user(key, self.index)
        } else {
            let call = Call::UserStream {
                key: key.to_string(),
                shard: self.index,
            };
            match self.call(owner, call).await? {
                Reply::UserStream(attach) => attach,
                _ => return Err(MeshError::PeerGone(owner)),
            }
        };
        // The user's shard counted the connection for the user it found.
        if let UserAttach::Attached(user) = attach {
            self.streams.borrow_mut().subscribe_user_local(user, key, out);
        }
        Ok(attach)
    }

    /// A user data stream connection closed; the user's shard counts it off.
    pub fn unsubscribe_user(&self, user: UserId, out: &Rc<Outbound>) {
        self.streams.borrow_mut().unsubscribe_user_local(user, out);
        let owner = self.trading().user_shard(user) as usize;
        if owner == self.index {
            self.streams.borrow_mut().remove_user_connection(user, self.index);
        } else {
            let msg = StreamMsg::UserUnsubscribe {
                user,
                shard: self.index,
            };
            let _ = self.mesh.send(owner, ShardMsg::Stream(msg));
        }
    }

    /// On the user's shard: a live `key` under the user's connection cap
    /// starts sending its user's events to `shard`.
    fn attach_user(&self, key: &str, shard: usize) -> UserAttach {
        let Some(user) = self.trading().listen_key_user(key, crate::api::now_ms()) else {
            return UserAttach::UnknownKey;
        };
        let max = self.ws.user_data_connections_per_user_max;
        if !self.streams.borrow_mut().add_user_connection(user, shard, max) {
            // Refused with 429 like the other connection limits.
            self.metrics.borrow_mut().rate_limited += 1;
            return UserAttach::TooMany;
        }
        UserAttach::Attached(user)
    }

    /// Sends the order changes and transfers of this shard's users, once
    /// each, to each shard holding the user's stream connections.
    fn publish_user_events(&self) {
        let (updates, balances) = {
            let mut trading = self.trading.borrow_mut();
            if trading.user_updates.is_empty() && trading.balance_updates.is_empty() {
                return;
            }
            (
                std::mem::take(&mut trading.user_updates),
                std::mem::take(&mut trading.balance_updates),
            )
        };
        let now = crate::api::now_ms();
        for update in updates {
            self.publish_user_event(UserEvent::Order(update), now);
        }
        for update in balances {
            self.publish_user_event(UserEvent::Balance(update), now);
        }
    }

    fn publish_user_event(&self, event: UserEvent, time_ms: u64) {
        let shards = self.streams.borrow().user_shards_of(event.user());
        for shard in shards {
            if shard == self.index {
                self.publish_user_local(&event, time_ms);
            } else {
                let msg = StreamMsg::User(Box::new(event.clone()), time_ms);
                if self.mesh.send(shard, ShardMsg::Stream(msg)).is_ok() {
                    self.metrics.borrow_mut().mesh_sent += 1;
                }
            }
        }
    }

    fn publish_user_local(&self, event: &UserEvent, time_ms: u64) {
        let overflowed = self
            .streams
            .borrow()
            .publish_user_local(event, time_ms, &self.trading());
        if overflowed > 0 {
            self.metrics.borrow_mut().ws_slow_closed += overflowed as u64;
        }
    }

    /// Tells the connections of expired and closed listen keys; the sweep
    /// for expiry runs only while users of this shard have connections.
    fn publish_closed_listen_keys(&self, sweep: bool, now_ms: u64) {
        if sweep && self.streams.borrow().has_user_streams() {
            self.trading.borrow_mut().expire_listen_keys(now_ms);
        }
        let closed = std::mem::take(&mut self.trading.borrow_mut().closed_listen_keys);
        for (user, key) in closed {
            self.publish_user_event(UserEvent::KeyClosed { user, key }, now_ms);
        }
    }

    /// Queues `event` for this shard's subscribers; a queue it overflows
    /// counts as a slow consumer (its connection closes with 1008).
    fn publish_local(&self, event: &StreamEvent) {
        let overflowed = self.streams.borrow().publish_local(event, &self.trading());
        if overflowed > 0 {
            self.metrics.borrow_mut().ws_slow_closed += overflowed as u64;
        }
    }

    fn publish_book_tickers(&self) {
        let keys = self.streams.borrow().subscribed(|k| k == StreamKind::BookTicker);
        for key in keys {
            let event = {
                let trading = self.trading();
                let Some(book) = trading.book(key.market) else { continue };
                if !self
                    .streams
                    .borrow_mut()
                    .book_ticker_changed(key.market, book.update_id())
                {
                    continue;
                }
                StreamEvent::BookTicker {
                    market: key.market,
                    update_id: book.update_id(),
                    bid: book.best_bid(),
                    ask: book.best_ask(),
                }
            };
            self.publish(event);
        }
    }

    /// Runs the periodic streams due at tick `tick` of the stream timer:
    /// the 100 ms ones at every tick, the 1000 ms ones at every tenth.
    /// Each costs a look-up when nobody subscribes.
    fn publish_periodic(&self, tick: u64, now_ms: u64) {
        let slow_due = tick % STREAM_SLOW_TICKS == 0;
        self.publish_depth(slow_due, now_ms);
        self.publish_partial_depth(slow_due);
        if slow_due {
            self.publish_tickers(now_ms);
            self.publish_all_tickers(StreamKind::AllTickers, now_ms);
            self.publish_all_tickers(StreamKind::AllMiniTickers, now_ms);
            self.publish_klines(now_ms);
        }
        self.publish_closed_listen_keys(slow_due, now_ms);
    }

    /// Sends the top levels of each subscribed `@depth<N>` stream due.
    fn publish_partial_depth(&self, slow_due: bool) {
        let keys = self
            .streams
            .borrow()
            .subscribed(|k| matches!(k, StreamKind::PartialDepth { fast, .. } if fast || slow_due));
        for key in keys {
            let StreamKind::PartialDepth { levels, fast } = key.kind else {
                continue;
            };
            let event = {
                let trading = self.trading();
                let Some(book) = trading.book(key.market) else { continue };
                let (mut bids, mut asks) = (Vec::new(), Vec::new());
                let update_id = book.depth(usize::from(levels), &mut bids, &mut asks);
                StreamEvent::PartialDepth {
                    market: key.market,
                    levels,
                    fast,
                    update_id,
                    bids,
                    asks,
                }
            };
            self.publish(event);
        }
    }

    /// The 24 h ticker of `market` (owned here) at `now_ms`, with its
    /// book's best bid and ask; `None` for a market that never traded.
    fn ticker_entry(&self, market: MarketId, now_ms: u64) -> Option<TickerEntry> {
        let data = self.market_data.borrow();
        let stats = data[usize::from(market.0)].as_ref()?.ticker_24h(now_ms)?;
        let trading = self.trading();
        let book = trading.book(market)?;
        Some(TickerEntry {
            market,
            stats,
            bid: book.best_bid().unwrap_or_default(),
            ask: book.best_ask().unwrap_or_default(),
        })
    }

    /// Sends each subscribed `@ticker` and `@miniTicker` whose figures
    /// changed since it last sent them.
    fn publish_tickers(&self, now_ms: u64) {
        let keys = self
            .streams
            .borrow()
            .subscribed(|k| matches!(k, StreamKind::Ticker | StreamKind::MiniTicker));
        for key in keys {
            let Some(ticker) = self.ticker_entry(key.market, now_ms) else {
                continue;
            };
            if !self.streams.borrow_mut().ticker_changed(key.kind, &ticker) {
                continue;
            }
            let mini = key.kind == StreamKind::MiniTicker;
            self.publish(StreamEvent::Ticker {
                mini,
                time_ms: now_ms,
                ticker,
            });
        }
    }

    /// This shard's part of `!ticker@arr` or `!miniTicker@arr`: the
    /// tickers of its markets that changed since the last second.
    fn publish_all_tickers(&self, kind: StreamKind, now_ms: u64) {
        let key = StreamKey {
            market: crate::streams::ALL_MARKETS,
            kind,
        };
        if !self.streams.borrow().has_shards(key) {
            return;
        }
        let markets: Vec<MarketId> = {
            let data = self.market_data.borrow();
            (0..data.len())
                .filter(|&m| data[m].is_some())
                .map(|m| MarketId(m as u16))
                .collect()
        };
        let tickers: Vec<TickerEntry> = markets
            .into_iter()
            .filter_map(|market| self.ticker_entry(market, now_ms))
            .filter(|ticker| self.streams.borrow_mut().ticker_changed(kind, ticker))
            .collect();
        if tickers.is_empty() {
            return;
        }
        let mini = kind == StreamKind::AllMiniTickers;
        self.publish(StreamEvent::AllTickers {
            mini,
            time_ms: now_ms,
            tickers,
        });
    }

    /// Sends the kline updates due: a candle that changed since its last
    /// update, and once more, with `x` true, when it closes.
    fn publish_klines(&self, now_ms: u64) {
        let keys = self.streams.borrow().subscribed(|k| matches!(k, StreamKind::Kline(_)));
        for key in keys {
            let StreamKind::Kline(interval) = key.kind else {
                continue;
            };
            let updates = {
                let data = self.market_data.borrow();
                let Some(data) = data[usize::from(key.market.0)].as_ref() else {
                    continue;
                };
                self.streams
                    .borrow_mut()
                    .kline_updates(key.market, interval, data, now_ms)
            };
            for (candle, closed) in updates {
                self.publish(StreamEvent::Kline {
                    market: key.market,
                    interval,
                    candle,
                    closed,
                    time_ms: now_ms,
                });
            }
        }
    }

    /// Computes and sends the depth diffs due.
    fn publish_depth(&self, slow_due: bool, now_ms: u64) {
        let keys = self.streams.borrow().subscribed(|k| {
            k == StreamKind::Depth { fast: true } || (slow_due && k == StreamKind::Depth { fast: false })
        });
        for key in keys {
            let StreamKind::Depth { fast } = key.kind else { continue };
            let diff = {
                let trading = self.trading();
                let Some(book) = trading.book(key.market) else { continue };
                let (mut bids, mut asks) = (Vec::new(), Vec::new());
                let update_id = book.depth(DEPTH_DIFF_LEVELS_MAX, &mut bids, &mut asks);
                self.streams
                    .borrow_mut()
                    .depth_diff(key.market, fast, update_id, now_ms, bids, asks)
            };
            if let Some(diff) = diff {
                self.publish(StreamEvent::Depth(diff));
            }
        }
    }

    /// Counts a request's weight against its client IP. Refused requests
    /// get Binance's 429 with Retry-After; an overloaded mesh gets 503.
    pub fn admit_request(&self, ip: IpAddr, weight: u32, now_ms: u64) -> Result<crate::limits::Usage, RestReply> {
        if self.mesh.queued() > self.outbox_max || !self.log.has_room() {
            return Err(RestReply::error(&rest::trading_error(
                crate::trading::TradingError::Busy,
            )));
        }
        let admitted = self.request_limiter.borrow_mut().admit(ip, None, weight, false, now_ms);
        admitted.map_err(|exceeded| {
            self.metrics.borrow_mut().rate_limited += 1;
            let mut reply = RestReply::error(&HttpError::from(exceeded.clone()));
            reply.headers.push(exceeded.retry_after_header());
            reply
        })
    }

    /// Counts an order of `user` (owned here); returns the order-count
    /// headers.
    pub fn admit_order(&self, user: UserId, now_ms: u64) -> Result<Vec<String>, RestReply> {
        let admitted = self.order_limiter.borrow_mut().admit_user_order(user, now_ms);
        match admitted {
            Ok(usage) => Ok(usage
                .headers()
                .into_iter()
                .filter(|h| h.starts_with("X-MBX-ORDER-COUNT"))
                .collect()),
            Err(exceeded) => {
                self.metrics.borrow_mut().rate_limited += 1;
                let mut reply = RestReply::error(&HttpError::from(exceeded.clone()));
                reply.headers.push(exceeded.retry_after_header());
                Err(reply)
            }
        }
    }

    /// A client order id for orders sent without one, `tradsys<shard>x<n>`:
    /// unique per shard, built without allocating.
    pub fn next_client_order_id(&self) -> ClientOrderId {
        let seq = self.client_order_seq.get() + 1;
        self.client_order_seq.set(seq);
        let mut text = [0u8; 48];
        let mut len = 0;
        let mut push = |part: &[u8]| {
            text[len..len + part.len()].copy_from_slice(part);
            len += part.len();
        };
        push(b"tradsys");
        push(itoa::Buffer::new().format(self.index).as_bytes());
        push(b"x");
        push(itoa::Buffer::new().format(seq).as_bytes());
        let text = std::str::from_utf8(&text[..len]).unwrap_or("tradsys");
        ClientOrderId::new(text).unwrap_or_else(|| unreachable!("{text} fits a client order id"))
    }

    pub async fn reference_price_remote(
        &self,
        owner: usize,
        market: MarketId,
        side: Side,
    ) -> Result<Option<Price>, MeshError> {
        match self.call(owner, Call::Reference { market, side }).await? {
            Reply::Reference(price) => Ok(price),
            _ => Err(MeshError::PeerGone(owner)),
        }
    }

    /// A ticker-style endpoint over several markets: each market's entry is
    /// rendered on its shard, joined here in the order asked.
    pub async fn gather_fragments(&self, req: RequestRef<'_>, markets: Vec<MarketId>) -> RestReply {
        let mut entries: Vec<(MarketId, Vec<u8>)> = Vec::with_capacity(markets.len());
        for peer in 0..self.mesh.shards() {
            let owned: Vec<MarketId> = markets
                .iter()
                .copied()
                .filter(|&m| self.trading().market_shard(m) as usize == peer)
                .collect();
            if owned.is_empty() {
                continue;
            }
            if peer == self.index {
                match self.local_fragments(req, &owned) {
                    Ok(part) => entries.extend(part),
                    Err(e) => return RestReply::error(&e),
                }
                self.settle().await;
                continue;
            }
            let call = Call::Fragments {
                request: Box::new(req.to_owned()),
                markets: owned,
            };
            match self.call(peer, call).await {
                Ok(Reply::Fragments(part)) => entries.extend(part),
                _ => {
                    return RestReply::error(&HttpError::new(
                        503,
                        binance::DISCONNECTED,
                        binance::MSG_INTERNAL,
                    ))
                }
            }
        }
        let mut body = Vec::with_capacity(2 + entries.iter().map(|(_, e)| e.len() + 1).sum::<usize>());
        body.push(b'[');
        for (i, market) in markets.iter().enumerate() {
            if let Some((_, entry)) = entries.iter().find(|(m, _)| m == market) {
                if i > 0 {
                    body.push(b',');
                }
                body.extend_from_slice(entry);
            }
        }
        body.push(b']');
        RestReply::json(body)
    }

    fn local_fragments(
        &self,
        req: RequestRef<'_>,
        markets: &[MarketId],
    ) -> Result<Vec<(MarketId, Vec<u8>)>, HttpError> {
        let params = Params::parse(req.query, None, self.http.params_count_max)?;
        markets
            .iter()
            .map(|&market| {
                let mut w = JsonWriter::with_capacity(512);
                rest::market_fragment(self, req.endpoint, market, &params, req.now_ms, &mut w)?;
                Ok((market, w.into_bytes()))
            })
            .collect()
    }

    /// Returns a buffer for reuse; oversized ones are freed so that one large
    /// request does not pin its memory forever.
    pub fn give_buffer(&self, mut buffer: Vec<u8>) {
        let mut pool = self.pool.borrow_mut();
        if buffer.capacity() <= conn::BUFFER_BYTES_POOLED_MAX && pool.len() < BUFFER_POOL_MAX {
            buffer.clear();
            pool.push(buffer);
        }
    }
}

/// Runs the server until SIGTERM/SIGINT; returns after a clean drain.
pub fn run(config: Config, markets: Vec<MarketSpec>) -> Result<(), ServerError> {
    let listeners = bind_listeners(config.listen, config.shards)?;
    let mut admin_listeners: Vec<Option<socket2::Socket>> = match config.admin_token {
        Some(_) => bind_listeners(config.admin_listen, config.shards)?
            .into_iter()
            .map(Some)
            .collect(),
        None => {
            println!("admin API off: no admin token (set --admin-token or TRADSYS_ADMIN_TOKEN)");
            (0..config.shards).map(|_| None).collect()
        }
    };
    let signals = block_signals().map_err(ServerError::Signals)?;
    let builders = MeshBuilders::new(config.shards, config.mesh_channel_capacity);
    let epochs = Arc::new(Epochs::new(config.shards));
    let mut starts = Vec::with_capacity(config.shards);
    let (exits_tx, exits_rx) = std::sync::mpsc::channel::<(usize, Result<(), String>)>();
    let mut controls = Vec::with_capacity(config.shards);
    let mut handles = Vec::with_capacity(config.shards);
    for (index, listener) in listeners.into_iter().enumerate() {
        let (control, shard_end) = std::os::unix::net::UnixStream::pair().map_err(ServerError::Signals)?;
        shard_end.set_nonblocking(true).map_err(ServerError::Signals)?;
        controls.push(control);
        let cpu = config.cpus[index];
        let (start_tx, start) = std::sync::mpsc::channel();
        starts.push(start_tx);
        let setup = ShardSetup {
            start,
            epochs: epochs.clone(),
            index,
            cpu,
            listener_fd: listener.into_raw_fd(),
            admin_fd: admin_listeners[index].take().map(IntoRawFd::into_raw_fd),
            control_fd: shard_end.into_raw_fd(),
            builders: builders.clone(),
            config: config.clone(),
            markets: markets.clone(),
        };
        let exits = exits_tx.clone();
        let mut builder = LocalExecutorBuilder::new(Placement::Fixed(cpu))
            .name(&format!("shard-{index}"))
            .io_memory(SHARD_IO_MEMORY_BYTES);
        if !config.shard_spin.is_zero() {
            builder = builder.spin_before_park(config.shard_spin);
        }
        let handle = builder
            .spawn(move || async move {
                let result = run_shard(setup).await;
                let _ = exits.send((index, result));
            })
            .map_err(|e| ServerError::Shard {
                shard: index,
                problem: format!("cannot start its executor on core {cpu}: {e}"),
            })?;
        handles.push(handle);
    }
    drop(exits_tx);
    let snapshots = start_shards(&config, &markets, starts, &epochs)?;
    let supervised = supervise(&signals, &mut controls, &exits_rx, config.shards);
    if let Some((stop, thread)) = snapshots {
        stop.store(true, Ordering::Release);
        let _ = thread.join();
    }
    supervised?;
    for handle in handles {
        let _ = handle.join();
    }
    Ok(())
}

/// Recovers the state (while the shards answer /ready with 503), hands
/// each shard its part and starts the snapshot thread.
fn start_shards(
    config: &Config,
    markets: &[MarketSpec],
    starts: Vec<std::sync::mpsc::Sender<ShardStart>>,
    epochs: &Arc<Epochs>,
) -> Result<Option<SnapshotHandle>, ServerError> {
    if config.durability.mode == DurabilityMode::None {
        println!("WARNING: --durability none: nothing is journaled; all state is lost when the process stops");
        for start in starts {
            let _ = start.send(ShardStart {
                image: None,
                generation: 0,
                fresh: true,
            });
        }
        return Ok(None);
    }
    let shards = config.shards as u32;
    let recovered = recovery::recover(&config.data_dir, shards, markets)?;
    let report = &recovered.report;
    for warning in &report.warnings {
        eprintln!("WARNING: {warning}");
    }
    if !recovered.fresh {
        println!(
            "recovered {} records from {} shard(s) up to epoch {} and redelivered {} messages in {:.3} s ({:.3} s with the new snapshots)",
            report.records_replayed,
            report.shards_before,
            report.cut,
            report.messages_redelivered,
            report.replay_time.as_secs_f64(),
            report.total_time.as_secs_f64(),
        );
    }
    let generation = recovered.generation;
    for (start, image) in starts.into_iter().zip(recovered.images) {
        let _ = start.send(ShardStart {
            image: Some(image),
            generation,
            fresh: recovered.fresh,
        });
    }
    let stop = Arc::new(AtomicBool::new(false));
    let snapshots = SnapshotThread {
        data_dir: config.data_dir.clone(),
        generation,
        shards,
        markets: markets.to_vec(),
        epochs: epochs.clone(),
        records: config.durability.snapshot_records,
        interval: config.durability.snapshot_interval,
        stop: stop.clone(),
    };
    let thread = std::thread::Builder::new()
        .name("snapshots".into())
        .spawn(move || snapshots.run())
        .map_err(|e| ServerError::Shard {
            shard: 0,
            problem: format!("cannot start the snapshot thread: {e}"),
        })?;
    Ok(Some((stop, thread)))
}

/// The snapshot thread's stop flag and handle.
type SnapshotHandle = (Arc<AtomicBool>, std::thread::JoinHandle<()>);

/// What a shard starts with once recovery is done.
struct ShardStart {
    /// `None` with `--durability none`: an empty state.
    image: Option<ShardImage>,
    generation: u64,
    /// The data directory was empty: the demo user may be created.
    fresh: bool,
}

/// Takes snapshot sets in the background (see `durability::recovery`):
/// after `records` journal records or every `interval` while records
/// arrive. It replays the journals into its own copy of the state, so the
/// shards never stop for a snapshot.
struct SnapshotThread {
    data_dir: std::path::PathBuf,
    generation: u64,
    shards: u32,
    markets: Vec<MarketSpec>,
    epochs: Arc<Epochs>,
    records: u64,
    interval: Duration,
    stop: Arc<AtomicBool>,
}

/// How often the snapshot thread checks whether a snapshot is due.
const SNAPSHOT_CHECK_INTERVAL: Duration = Duration::from_millis(100);

impl SnapshotThread {
    fn run(self) {
        // Shards preempt this thread whenever they have work: a snapshot
        // takes spare CPU time only, and never stalls a shard.
        // SAFETY: sched_param is plain data; the call changes only this
        // thread's scheduling policy.
        let idle = unsafe {
            let param = libc::sched_param { sched_priority: 0 };
            libc::sched_setscheduler(0, libc::SCHED_IDLE, &param)
        };
        if idle != 0 {
            eprintln!(
                "WARNING: snapshot thread: cannot lower its priority: {}",
                std::io::Error::last_os_error()
            );
        }
        let mut taken_at = std::time::Instant::now();
        let mut appended_then = 0;
        while !self.stop.load(Ordering::Acquire) {
            std::thread::sleep(SNAPSHOT_CHECK_INTERVAL);
            let appended = self.epochs.appended();
            let new = appended - appended_then;
            if new == 0 || (new < self.records && taken_at.elapsed() < self.interval) {
                continue;
            }
            let cut = self.epochs.global_durable();
            match recovery::take_snapshot(&self.data_dir, self.generation, self.shards, &self.markets, cut) {
                Ok(Some(stats)) => println!(
                    "snapshot at epoch {cut}: {} records replayed in {:.3} s",
                    stats.records,
                    stats.time.as_secs_f64()
                ),
                Ok(None) => {}
                Err(e) => eprintln!("WARNING: snapshot at epoch {cut} failed (will retry): {e}"),
            }
            taken_at = std::time::Instant::now();
            appended_then = appended;
        }
    }
}

/// Waits for a signal or a shard's exit. A signal starts the drain on every
/// shard; a second signal is ignored (the drain is already bounded).
fn supervise(
    signals: &libc::sigset_t,
    controls: &mut [std::os::unix::net::UnixStream],
    exits: &std::sync::mpsc::Receiver<(usize, Result<(), String>)>,
    shards: usize,
) -> Result<(), ServerError> {
    let mut exited = 0;
    let mut draining = false;
    while exited < shards {
        if !draining && wait_signal(signals, Duration::from_millis(100)) {
            draining = true;
            for control in controls.iter_mut() {
                // A shard that already ended has closed its end; that is fine.
                let _ = control.write_all(b"d");
            }
        }
        if draining {
            std::thread::sleep(Duration::from_millis(1));
        }
        while let Ok((shard, result)) = exits.try_recv() {
            exited += 1;
            if let Err(problem) = result {
                return Err(ServerError::Shard { shard, problem });
            }
            if !draining {
                return Err(ServerError::Shard {
                    shard,
                    problem: "stopped unexpectedly".into(),
                });
            }
        }
    }
    Ok(())
}

/// Blocks SIGINT and SIGTERM in this thread and every thread it starts, so
/// that only `wait_signal` receives them.
fn block_signals() -> std::io::Result<libc::sigset_t> {
    // SAFETY: sigset_t is plain data initialised by sigemptyset; the calls
    // only read and write the set we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if rc != 0 {
            return Err(std::io::Error::from_raw_os_error(rc));
        }
        Ok(set)
    }
}

fn wait_signal(set: &libc::sigset_t, timeout: Duration) -> bool {
    let spec = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `set` is a valid signal set and `spec` a valid timespec.
    unsafe { libc::sigtimedwait(set, std::ptr::null_mut(), &spec) > 0 }
}

/// Binds one listener per shard on the same address with SO_REUSEPORT. With
/// port 0 the first bind picks the port and the others reuse it.
fn bind_listeners(addr: SocketAddr, shards: usize) -> Result<Vec<socket2::Socket>, ServerError> {
    let mut listeners = Vec::with_capacity(shards);
    let mut addr = addr;
    for _ in 0..shards {
        let bind_error = |source| ServerError::Bind { addr, source };
        let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)
            .map_err(bind_error)?;
        socket.set_reuse_port(true).map_err(bind_error)?;
        socket.set_reuse_address(true).map_err(bind_error)?;
        socket.bind(&addr.into()).map_err(bind_error)?;
        socket.listen(LISTEN_BACKLOG).map_err(bind_error)?;
        if addr.port() == 0 {
            addr = socket
                .local_addr()
                .ok()
                .and_then(|a| a.as_socket())
                .ok_or_else(|| bind_error(std::io::Error::other("no local address")))?;
        }
        listeners.push(socket);
    }
    Ok(listeners)
}

struct ShardSetup {
    start: std::sync::mpsc::Receiver<ShardStart>,
    epochs: Arc<Epochs>,
    index: usize,
    cpu: usize,
    listener_fd: i32,
    admin_fd: Option<i32>,
    control_fd: i32,
    builders: MeshBuilders,
    config: Config,
    markets: Vec<MarketSpec>,
}

/// Fills `buf` from the kernel's random source. Start-up and key creation
/// only; it may block until the kernel's pool is ready, once per boot.
pub fn random_bytes(buf: &mut [u8]) {
    let mut filled = 0;
    while filled < buf.len() {
        // SAFETY: the pointer and length describe the unfilled part of `buf`.
        let n = unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), buf.len() - filled, 0) };
        if n > 0 {
            filled += n as usize;
        } else {
            let error = std::io::Error::last_os_error();
            assert!(
                error.kind() == std::io::ErrorKind::Interrupted,
                "getrandom failed: {error}"
            );
        }
    }
}

fn new_shard(setup: &ShardSetup, mesh: Mesh, log: Rc<ShardLog>) -> Shard {
    let config = &setup.config;
    let limits = &config.rate_limits;
    let rate_limits = RateLimits {
        request_weight_per_minute_max: limits.request_weight_per_minute_max,
        orders_per_10s_max: limits.orders_per_10s_max,
        orders_per_day_max: limits.orders_per_day_max,
        raw_requests_per_5m_max: limits.raw_requests_per_5m_max,
    };
    let mut trading = Trading::new(
        setup.index as u32,
        config.shards as u32,
        setup.markets.clone(),
        BookCapacity::default(),
    );
    trading.set_listen_key_ttl_ms(config.ws.listen_key_ttl_ms);
    let market_data = market_data_for(&trading, setup.index as u32);
    Shard {
        index: setup.index,
        http: config.http,
        connections_max: config.connections_per_shard_max,
        metrics: RefCell::new(Metrics::default()),
        mesh,
        exchange_info: ExchangeInfo::new(&setup.markets, &rate_limits),
        ready: Cell::new(false),
        draining: Cell::new(false),
        drain: Semaphore::new(0),
        pool: RefCell::new(Vec::new()),
        trading: RefCell::new(trading),
        market_data: RefCell::new(market_data),
        request_limiter: RefCell::new(LocalLimiter::new(limits)),
        order_limiter: RefCell::new(LocalLimiter::new(limits)),
        // Generated client order ids stay unique across restarts: the
        // sequence starts at the start-up time in microseconds.
        client_order_seq: Cell::new(start_micros()),
        calls_in_flight: Cell::new(0),
        outbox_max: config.mesh_outbox_messages_max,
        admin_token: config.admin_token.clone(),
        streams: RefCell::new(Registry::default()),
        ws: config.ws,
        ws_per_ip: RefCell::new(std::collections::HashMap::new()),
        log,
    }
}

fn start_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Funds the demo user gets at start, so the README's example can trade.
const DEMO_DEPOSITS: [(&str, &str); 5] = [
    ("BTC", "10"),
    ("ETH", "100"),
    ("USDT", "100000"),
    ("USD", "100000"),
    ("EUR", "100000"),
];

/// Creates the demo user on the shard that owns it and prints its key.
fn create_demo_user(shard: &Shard) -> Result<(), String> {
    let mut trading = shard.trading_mut();
    if trading.user_shard(DEMO_USER_ID) as usize != shard.index {
        return Ok(());
    }
    trading.create_user(DEMO_USER_ID, "demo").map_err(|e| e.to_string())?;
    for (asset, amount) in DEMO_DEPOSITS {
        if trading.accounts().asset_id(asset).is_none() {
            continue;
        }
        let units = tradsys_engine::num::parse_units(amount).map_err(|e| e.to_string())?;
        trading
            .transfer(DEMO_USER_ID, asset, tradsys_engine::num::Amount(units), true)
            .map_err(|e| e.to_string())?;
    }
    let mut entropy = [0u8; 128];
    random_bytes(&mut entropy);
    let (key, secret) = trading
        .create_key(DEMO_USER_ID, crate::auth::Scopes::ALL, &entropy)
        .map_err(|e| e.to_string())?;
    println!("demo user {DEMO_USER_ID} apiKey {key} secretKey {secret}");
    Ok(())
}

async fn run_shard(setup: ShardSetup) -> Result<(), String> {
    // SAFETY: the fds were created for this shard and handed over whole.
    let listener = unsafe { TcpListener::from_raw_fd(setup.listener_fd) };
    let admin = setup.admin_fd.map(|fd| unsafe { TcpListener::from_raw_fd(fd) });
    let control = unsafe { UnixStream::from_raw_fd(setup.control_fd) };
    let (mesh, receivers) = setup.builders.clone().join(setup.index).await?;
    let log = Rc::new(ShardLog::new(
        setup.index,
        setup.config.durability,
        setup.epochs.clone(),
        mesh.epoch_cell(),
    ));
    let shard = Rc::new(new_shard(&setup, mesh, log.clone()));
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    let connections = Gate::new();
    let mut admin_address = None;
    let mut accepting = vec![glommio::spawn_local(accept_loop(
        shard.clone(),
        listener,
        connections.clone(),
        Listener::Api,
    ))];
    if let Some(admin) = admin {
        if setup.index == 0 {
            admin_address = Some(admin.local_addr().map_err(|e| e.to_string())?);
        }
        accepting.push(glommio::spawn_local(accept_loop(
            shard.clone(),
            admin,
            connections.clone(),
            Listener::Admin,
        )));
    }
    // Until the shard has its state it answers /health and /ready (503)
    // and refuses everything else; engine messages wait in the mesh.
    let start = wait_for_start(&setup.start).await?;
    install(&shard, &setup, start.image)?;
    if setup.config.durability.mode != DurabilityMode::None {
        let dir = snapshot::generation_dir(&setup.config.data_dir, setup.index as u32, start.generation);
        let tail = journal::scan(&dir, 1, |_| std::ops::ControlFlow::Continue(())).map_err(|e| e.to_string())?;
        let durability = &setup.config.durability;
        let writer = journal::Writer::open_with(&dir, &tail, durability.segment_bytes, durability.direct_io)
            .await
            .map_err(|e| e.to_string())?;
        log.set_writer(Rc::new(writer));
        glommio::spawn_local(run_committer(shard.clone())).detach();
    }
    if setup.config.demo_user && start.fresh {
        create_demo_user(&shard)?;
        shard.flush_engine();
    }
    let mut receive_loops = spawn_receivers(&shard, receivers);
    receive_loops.push(glommio::spawn_local(stream_ticks(shard.clone())));
    shard.ready.set(true);
    // Tests and scripts wait for these lines: print them once ready.
    if let Some(address) = admin_address {
        println!("admin listening {address}");
    }
    println!("shard {} core {} listening {address}", setup.index, setup.cpu);
    wait_for_drain(control).await;
    shard.draining.set(true);
    shard.drain.close();
    // Dropping the accept tasks closes the listeners: new connections go to
    // shards still listening, or are refused by the kernel.
    for task in accepting {
        task.cancel().await;
    }
    let deadline = setup.config.shutdown_timeout;
    let finished = futures_lite::future::or(
        async {
            let _ = connections.close().await;
            true
        },
        async {
            glommio::timer::sleep(deadline).await;
            false
        },
    )
    .await;
    if !finished {
        eprintln!(
            "shard {}: connections still open after {deadline:?}; closing them",
            setup.index
        );
    }
    shard.mesh().close().await;
    for task in receive_loops {
        task.cancel().await;
    }
    Ok(())
}

/// The shard's group commit loop (see `durability::commit`). A journal that
/// cannot be written stops the process: nothing could be acknowledged.
async fn run_committer(shard: Rc<Shard>) {
    loop {
        shard.log.work().await;
        if let Err(e) = shard.log.commit().await {
            eprintln!(
                "shard {}: journal: {e}; stopping: nothing can be made durable",
                shard.index
            );
            std::process::exit(74);
        }
        for peer in shard.log.take_satisfied() {
            let _ = shard.mesh.send(peer, ShardMsg::Durable);
        }
        shard.log.wake_settled();
    }
}

/// How often a starting shard looks whether recovery handed it its state.
const START_POLL_INTERVAL: Duration = Duration::from_millis(5);

/// Waits for the main thread's recovery to hand this shard its state.
async fn wait_for_start(start: &std::sync::mpsc::Receiver<ShardStart>) -> Result<ShardStart, String> {
    loop {
        match start.try_recv() {
            Ok(start) => return Ok(start),
            Err(std::sync::mpsc::TryRecvError::Empty) => glommio::timer::sleep(START_POLL_INTERVAL).await,
            Err(std::sync::mpsc::TryRecvError::Disconnected) => return Err("recovery did not finish".into()),
        }
    }
}

/// Puts a recovered state in place of the empty one the shard started with.
fn install(shard: &Shard, setup: &ShardSetup, image: Option<ShardImage>) -> Result<(), String> {
    let Some(image) = image else { return Ok(()) };
    assert_eq!(image.trading.shard as usize, setup.index, "a shard got another's state");
    let market_data = image.market_data;
    let mut trading = Trading::from_image(image.trading, setup.markets.clone())?;
    trading.set_listen_key_ttl_ms(setup.config.ws.listen_key_ttl_ms);
    *shard.trading.borrow_mut() = trading;
    *shard.market_data.borrow_mut() = market_data;
    Ok(())
}

/// Drives the periodic streams of this shard's markets, every
/// `STREAM_TICK`.
async fn stream_ticks(shard: Rc<Shard>) {
    let mut tick = 0u64;
    loop {
        glommio::timer::sleep(STREAM_TICK).await;
        tick += 1;
        shard.publish_periodic(tick, crate::api::now_ms());
    }
}

async fn wait_for_drain(mut control: UnixStream) {
    let mut byte = [0u8; 1];
    // Any outcome (a byte, EOF, an error) means the supervisor wants a drain.
    let _ = futures_lite::AsyncReadExt::read(&mut control, &mut byte).await;
}

async fn accept_loop(shard: Rc<Shard>, listener: TcpListener, connections: Gate, kind: Listener) {
    loop {
        let stream = match listener.accept().await {
            Ok(stream) => stream,
            Err(e) => {
                // Out of file descriptors or memory: back off instead of
                // spinning, and let open connections finish.
                eprintln!("shard {}: accept failed: {e}", shard.index);
                glommio::timer::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let open = shard.metrics().connections_open as usize;
        if open >= shard.connections_max {
            shard.metrics_mut().connections_refused += 1;
            drop(stream);
            continue;
        }
        {
            let mut m = shard.metrics_mut();
            m.connections_accepted += 1;
            m.connections_open += 1;
        }
        let shard = shard.clone();
        let spawned = connections.spawn(async move {
            conn::serve(&shard, stream, kind).await;
            shard.metrics_mut().connections_open -= 1;
        });
        match spawned {
            Ok(task) => task.detach(),
            Err(_) => return,
        };
    }
}

/// Calls from other shards running here at once; more are answered with
/// `Reply::Overloaded` at once instead of queueing without bound.
const MESH_CALLS_IN_FLIGHT_MAX: usize = 4096;

/// Starts one receive loop per peer. Receive loops never wait on anything
/// but their channel: engine messages run to completion at once, calls run
/// as tasks, replies complete local waiters.
fn spawn_receivers(shard: &Rc<Shard>, mut receivers: Receivers<ShardMsg>) -> Vec<glommio::Task<()>> {
    receivers
        .streams()
        .into_iter()
        .map(|(peer, receiver)| {
            let shard = shard.clone();
            glommio::spawn_local(async move {
                while let Some(msg) = receiver.recv().await {
                    shard.metrics_mut().mesh_received += 1;
                    on_message(&shard, peer, msg);
                }
            })
        })
        .collect()
}

fn on_message(shard: &Rc<Shard>, from: usize, msg: ShardMsg) {
    match msg {
        ShardMsg::Reply { id, epoch, reply } => {
            shard.log.observe(epoch);
            shard.mesh.complete(id, reply);
        }
        ShardMsg::SealWanted { epoch } => shard.log.requested(from, epoch),
        ShardMsg::Durable => shard.log.wake_settled(),
        ShardMsg::Engine { epoch, seq, msg } => {
            shard.log.observe(epoch);
            shard.trading.borrow_mut().receive(from as u32, seq, msg);
            shard.flush_engine();
        }
        ShardMsg::Stream(StreamMsg::Unsubscribe { key, shard: from }) => {
            shard.streams.borrow_mut().remove_shard(key, from);
        }
        ShardMsg::Stream(StreamMsg::Event(event)) => shard.publish_local(&event),
        ShardMsg::Stream(StreamMsg::UserUnsubscribe { user, shard: from }) => {
            shard.streams.borrow_mut().remove_user_connection(user, from);
        }
        ShardMsg::Stream(StreamMsg::User(event, time_ms)) => shard.publish_user_local(&event, time_ms),
        ShardMsg::Call { id, epoch, call } => {
            shard.log.observe(epoch);
            if shard.calls_in_flight.get() >= MESH_CALLS_IN_FLIGHT_MAX {
                let _ = shard.mesh.send(
                    from,
                    ShardMsg::Reply {
                        id,
                        epoch: shard.log.epoch(),
                        reply: Reply::Overloaded,
                    },
                );
                return;
            }
            shard.calls_in_flight.set(shard.calls_in_flight.get() + 1);
            let shard = shard.clone();
            glommio::spawn_local(async move {
                let reply = answer(&shard, call).await;
                shard.calls_in_flight.set(shard.calls_in_flight.get() - 1);
                shard.metrics_mut().mesh_sent += 1;
                // The caller's shard may be shutting down; it then sees PeerGone.
                let epoch = shard.log.epoch();
                let _ = shard.mesh.send(from, ShardMsg::Reply { id, epoch, reply });
            })
            .detach();
        }
    }
}

async fn answer(shard: &Shard, call: Call) -> Reply {
    match call {
        Call::Metrics => Reply::Metrics(Box::new(shard.snapshot())),
        Call::Rest(request) => {
            let req = request.borrowed();
            let reply = match req.endpoint.security() {
                crate::limits::Security::None => rest::market_request(shard, req),
                _ => rest::user_request(shard, req).await,
            };
            shard.settle().await;
            Reply::Rest(Box::new(reply))
        }
        Call::Admin(call) => {
            let reply = admin::run_local(shard, *call);
            shard.settle().await;
            Reply::Admin(Box::new(reply))
        }
        Call::Reference { market, side } => Reply::Reference(shard.trading().reference_price(market, side)),
        Call::Fragments { request, markets } => {
            let entries = shard.local_fragments(request.borrowed(), &markets).unwrap_or_default();
            shard.settle().await;
            Reply::Fragments(entries)
        }
        Call::UserStream { key, shard: from } => Reply::UserStream(shard.attach_user(&key, from)),
        Call::Subscribe { key, shard: from } => {
            shard.attach_stream(key, from);
            Reply::Subscribed
        }
    }
}
