//! One shard's state and the ways into it.
//!
//! A `Shard` is the state of one executor: it is `!Send` and only its own
//! tasks touch it; other shards reach it only through the mesh. It owns
//! the engine host (`Trading`), the market data of its markets, the stream
//! registry, the rate limiters, its metrics, its buffer pool and its end
//! of the mesh and of the journal, and its response compressor. What runs on it lives in the modules
//! around this one: `start` (the shard's tasks), `dispatch` (messages from
//! other shards), `publish` (streams), `admission` (limits), `conn` and
//! `wsconn` (clients). The API layer sees it as an `api::host::Host`.

use crate::api::exchange_info::ExchangeInfo;
use crate::api::host::Host;
use crate::api::peer::{CallError, PeerCall, PeerReply};
use crate::compress::Compressor;
use crate::config::WsConfig;
use crate::durability::commit::ShardLog;
use crate::http::HttpError;
use crate::http::HttpLimits;
use crate::limits::{ConnectionAttempts, LocalLimiter, Refusal, Usage};
use crate::marketdata::MarketData;
use crate::metrics::{Metrics, Snapshot};
use crate::server::conn;
use crate::server::mesh::{Call, Mesh, Reply, ShardMsg};
use crate::server::start::Readiness;
use crate::server::{admission, publish};
use crate::store::shard::ShardStore;
use crate::streams::Registry;
use crate::trading::{Output, Trading};
use glommio::sync::Semaphore;
use std::cell::{Cell, Ref, RefCell, RefMut};
use std::collections::HashMap;
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::Arc;
use tradsys_engine::order::{ClientOrderId, UserId};

/// Read/write buffers a shard keeps for reuse: enough for the connections
/// that turn busy at once, few enough not to count against idle memory.
const BUFFER_POOL_MAX: usize = 256;

/// One shard's state, reachable only from its executor.
pub(crate) struct Shard {
    pub(super) index: usize,
    pub(super) http: HttpLimits,
    pub(super) connections_max: usize,
    /// The shard's wait for CPU and what it sheds (see `overload`).
    pub(super) overload: crate::overload::Overload,
    pub(super) metrics: RefCell<Metrics>,
    pub(super) mesh: Mesh,
    pub(super) exchange_info: ExchangeInfo,
    /// Set once every shard of the process has its state; until then
    /// `readiness` is asked.
    pub(super) ready: Cell<bool>,
    pub(super) readiness: Arc<Readiness>,
    pub(super) draining: Cell<bool>,
    /// Never has permits: closing it wakes every connection waiting idle,
    /// which is how a drain reaches them.
    pub(super) drain: Semaphore,
    pub(super) pool: RefCell<Vec<Vec<u8>>>,
    /// gzip for response bodies, with this shard's CPU budget for it.
    pub(super) compressor: RefCell<Compressor>,
    pub(super) trading: RefCell<Trading>,
    /// What `trading` produced, between two `flush_engine`s (see `Output`).
    pub(super) output: RefCell<Output>,
    /// Trades, candles and tickers of the markets this shard owns.
    pub(super) market_data: RefCell<Vec<Option<MarketData>>>,
    /// Request weight and raw requests per client IP, on this shard.
    pub(super) request_limiter: RefCell<LocalLimiter>,
    /// Orders per user; users are counted on their own shard.
    pub(super) order_limiter: RefCell<LocalLimiter>,
    pub(super) client_order_seq: Cell<u64>,
    pub(super) calls_in_flight: Cell<usize>,
    pub(super) outbox_max: usize,
    pub(super) admin_token: Option<String>,
    /// Stream subscribers here, and subscribed shards of markets owned here.
    pub(super) streams: RefCell<Registry>,
    pub(super) ws: WsConfig,
    /// Open WebSocket connections per client IP, on this shard.
    pub(super) ws_per_ip: RefCell<HashMap<IpAddr, usize>>,
    /// WebSocket API connections opened per client IP, on this shard.
    pub(super) ws_api_attempts: RefCell<ConnectionAttempts>,
    /// The journal and the wait for durability (see `durability::commit`).
    pub(super) log: Rc<ShardLog>,
    /// The history store, once the shard has its state; never when off.
    pub(super) history: std::cell::OnceCell<Rc<ShardStore>>,
    /// The shard's Redis client, with `--redis`.
    pub(super) redis: Option<crate::redis::Redis>,
    /// The limits shared through Redis, with `--redis`.
    pub(super) shared_limits: Option<crate::redis::limiter::SharedLimiter>,
    /// IPs banned for going on past 429 (418).
    pub(super) bans: RefCell<crate::limits::Bans>,
    /// The background jobs' queue (Redis's, or this shard's own).
    pub(super) jobs: std::cell::OnceCell<Rc<crate::jobs::Queue>>,
    pub(super) jobs_config: crate::config::JobsConfig,
    pub(super) job_counters: RefCell<crate::jobs::worker::WorkerCounters>,
    pub(super) job_stats: Cell<crate::jobs::QueueStats>,
    /// Job ids: this process's start, the shard, then a sequence.
    pub(super) job_seq: Cell<u64>,
    pub(super) open_exports: RefCell<HashMap<UserId, Vec<String>>>,
    /// The webhooks of this shard's users.
    pub(super) webhooks: RefCell<crate::api::webhooks::Webhooks>,
    /// Webhook events on their way to the job queue, oldest first.
    pub(super) webhook_outbox: RefCell<std::collections::VecDeque<(UserId, String)>>,
    /// Signalled when events join the outbox.
    pub(super) webhook_signal: Semaphore,
    /// How often the daily report runs (the history store's statistics).
    pub(super) statistics_interval_s: u64,
    /// The two-level cache (L2 with `--redis`).
    pub(super) cache: Rc<crate::cache::Cache>,
    /// Cache invalidations from Redis, with `--redis`.
    pub(super) cache_subscriber: Option<crate::redis::subscriber::Subscriber>,
    /// The links to the other instances of the cluster, when there are
    /// some.
    pub(super) link: Option<Rc<crate::server::link::Link>>,
}

impl Shard {
    /// Resolves when the shard starts draining.
    pub(crate) async fn drained(&self) {
        // The semaphore never grants a permit; it only fails once closed.
        let _ = self.drain.acquire(1).await;
    }

    /// A cleared buffer with at least `capacity` bytes, reused if possible.
    pub(crate) fn take_buffer(&self, capacity: usize) -> Vec<u8> {
        match self.pool.borrow_mut().pop() {
            Some(mut buffer) => {
                buffer.reserve(capacity);
                buffer
            }
            None => Vec::with_capacity(capacity),
        }
    }

    /// Returns a buffer for reuse; oversized ones are freed so that one large
    /// request does not pin its memory forever.
    pub(crate) fn give_buffer(&self, mut buffer: Vec<u8>) {
        let mut pool = self.pool.borrow_mut();
        if buffer.capacity() <= conn::BUFFER_BYTES_POOLED_MAX && pool.len() < BUFFER_POOL_MAX {
            buffer.clear();
            pool.push(buffer);
        }
    }

    /// A job id no other job of any instance has: letters and digits, from
    /// this process's id, the shard and a sequence that starts at the
    /// start-up time in microseconds.
    pub(crate) fn next_job_id(&self) -> String {
        let seq = self.job_seq.get() + 1;
        self.job_seq.set(seq);
        format!(
            "{:x}p{:x}s{}n{seq:x}",
            crate::clock::now_ms() / 1000,
            std::process::id(),
            self.index
        )
    }

    pub(crate) fn admin_token(&self) -> Option<&str> {
        self.admin_token.as_deref()
    }

    pub(crate) fn ws_config(&self) -> &WsConfig {
        &self.ws
    }

    pub(crate) fn metrics(&self) -> Ref<'_, Metrics> {
        self.metrics.borrow()
    }

    /// Counts a WebSocket connection from `ip`; false when the IP is at
    /// `ws_connections_per_ip_max` on this shard.
    pub(crate) fn ws_open(&self, ip: IpAddr) -> bool {
        let mut per_ip = self.ws_per_ip.borrow_mut();
        let open = per_ip.entry(ip).or_insert(0);
        if *open >= self.ws.connections_per_ip_max {
            return false;
        }
        *open += 1;
        self.metrics.borrow_mut().ws_open += 1;
        true
    }

    /// Counts a WebSocket API connection from `ip` against the attempts
    /// per 5 minutes and its weight, or refuses it (429, or 418 while the
    /// IP is banned).
    pub(crate) async fn ws_api_admit(&self, ip: IpAddr) -> Result<(), HttpError> {
        let now_ms = crate::clock::now_ms();
        match admission::admit_connection(self, ip, crate::api::wsapi::CONNECT_WEIGHT, now_ms).await {
            Ok(_) => Ok(()),
            Err(Refusal::Limited(exceeded)) => Err(HttpError::from(exceeded)),
            Err(Refusal::Busy) => Err(crate::api::request::trading_error(crate::trading::TradingError::Busy)),
        }
    }

    pub(crate) fn ws_closed(&self, ip: IpAddr) {
        let mut per_ip = self.ws_per_ip.borrow_mut();
        if let Some(open) = per_ip.get_mut(&ip) {
            *open -= 1;
            if *open == 0 {
                per_ip.remove(&ip);
            }
        }
        self.metrics.borrow_mut().ws_open -= 1;
    }

    /// Hands what the last operations on `trading` produced to the rest of
    /// the shard: records to the journal, depth changes, trades and user
    /// events to the streams, first fills to the order limiter, engine
    /// messages to the mesh; then counts them.
    pub(crate) fn flush_engine(&self) {
        let mut out = self.output.borrow_mut();
        self.trading.borrow_mut().swap_output(&mut out);
        let rows = self.history_rows(&out);
        let epoch = self.log.append(&mut out.records);
        if let (Some(store), Some((rows, now_ms))) = (self.history.get(), rows) {
            store.keep(self.log.last_lsn(), epoch, rows, now_ms);
        }
        if !out.touched_levels.is_empty() {
            self.streams.borrow_mut().touch_levels(&out.touched_levels);
        }
        publish::user_events(self, &mut out);
        if !out.trades.is_empty() {
            publish::record_trades(self, &out.trades);
        }
        publish::book_tickers(self);
        if !out.first_fills.is_empty() {
            admission::orders_filled(self, &out.first_fills);
        }
        if !out.remote.is_empty() {
            // The messages wait in the outbox; the link sends them once
            // the records above are durable.
            if let Some(link) = &self.link {
                link.engine_produced();
            }
        }
        let mut sent = 0;
        for (owner, seq, msg) in out.outgoing.drain(..) {
            if self
                .mesh
                .send(owner as usize, ShardMsg::Engine { epoch, seq, msg })
                .is_ok()
            {
                sent += 1;
            }
        }
        out.clear();
        let orders = self.trading.borrow().orders;
        let mut m = self.metrics.borrow_mut();
        m.mesh_sent += sent;
        m.orders_local = orders.local;
        m.orders_cross_shard = orders.cross_shard;
        m.mesh_outbox = self.mesh.queued() as u64;
    }

    /// The history rows of what the engine produced (see
    /// `store::convert`), with the time that dates them; `None` without a
    /// store or without records.
    fn history_rows(&self, out: &Output) -> Option<(Vec<crate::store::Row>, u64)> {
        let store = self.history.get()?;
        // While the backlog drops rows for room, rows are not made at all:
        // the catch-up makes them from the journal, in idle time.
        if out.records.is_empty() || store.backlog().is_dropping() {
            return None;
        }
        let now_ms = crate::clock::now_ms();
        let mut rows = Vec::new();
        let trading = self.trading.borrow();
        // The reference of transfers; the exact position comes with `keep`.
        let next_lsn = self.log.last_lsn() + out.records.len() as u64;
        crate::store::convert::rows_of(&trading, &out.records, out, now_ms, next_lsn, &mut rows);
        Some((rows, now_ms))
    }

    /// Sends `call` to shard `to` and waits for its reply. What this shard
    /// changed so far is journaled first, so the call carries the epoch of
    /// everything the callee's answer may depend on (see `durability`).
    pub(crate) async fn call_peer(&self, to: usize, call: Call) -> Result<Reply, CallError> {
        self.flush_engine();
        self.mesh.call(to, call).await
    }
}

impl Host for Shard {
    fn index(&self) -> usize {
        self.index
    }

    fn shards(&self) -> usize {
        self.mesh.shards()
    }

    fn is_ready(&self) -> bool {
        if self.ready.get() {
            return true;
        }
        let ready = self.readiness.all_ready();
        self.ready.set(ready);
        ready
    }

    fn is_draining(&self) -> bool {
        self.draining.get()
    }

    fn journal_full(&self) -> bool {
        self.log.journal_full()
    }

    fn admits(&self, priority: crate::overload::Priority) -> bool {
        self.overload.admits(priority)
    }

    fn http_limits(&self) -> &HttpLimits {
        &self.http
    }

    fn exchange_info(&self) -> &ExchangeInfo {
        &self.exchange_info
    }

    fn cache(&self) -> &crate::cache::Cache {
        &self.cache
    }

    fn trading(&self) -> Ref<'_, Trading> {
        self.trading.borrow()
    }

    fn trading_mut(&self) -> RefMut<'_, Trading> {
        self.trading.borrow_mut()
    }

    fn market_data(&self) -> Ref<'_, Vec<Option<MarketData>>> {
        self.market_data.borrow()
    }

    fn metrics_mut(&self) -> RefMut<'_, Metrics> {
        self.metrics.borrow_mut()
    }

    /// This shard's metrics now, with the outbox gauge read at this moment.
    fn metrics_snapshot(&self) -> Snapshot {
        let mut metrics = self.metrics.borrow_mut();
        metrics.mesh_outbox = self.mesh.queued() as u64;
        metrics.journal = self.log.counters();
        if let Some(store) = self.history.get() {
            store.count_backlog(crate::clock::now_ms());
            metrics.history = store.counters();
        }
        if let Some(redis) = &self.redis {
            let fallbacks = metrics.redis.limit_fallbacks;
            metrics.redis = redis.counters();
            metrics.redis.limit_fallbacks = fallbacks;
            metrics.redis.limit_leases = self.shared_limits.as_ref().map_or(0, |s| s.leases() as u64);
        }
        metrics.ip_banned = self.bans.borrow().banned_now(crate::clock::now_ms()) as u64;
        metrics.overload_wait_us = self.overload.wait_us();
        metrics.overload_shed = crate::overload::Priority::ALL.map(|p| self.overload.shed(p));
        metrics.jobs = crate::server::jobs::counters(self);
        metrics.cache = self.cache.counters();
        let mut snapshot = metrics.snapshot(self.index);
        if let Some(link) = &self.link {
            let trading = self.trading.borrow();
            snapshot.links = link.counters(|peer| trading.remote_links().outbox_len(peer));
            snapshot.link_md_dropped = link.md_dropped();
        }
        snapshot
    }

    async fn admit_request(&self, ip: IpAddr, weight: u32, now_ms: u64) -> Result<Usage, Refusal> {
        admission::admit_request(self, ip, weight, now_ms).await
    }

    async fn admit_order(&self, user: UserId, now_ms: u64) -> Result<Usage, Refusal> {
        admission::admit_order(self, user, now_ms).await
    }

    async fn auth_failed(&self, ip: IpAddr, now_ms: u64) {
        admission::auth_failed(self, ip, now_ms).await
    }

    async fn order_counts(&self, user: UserId, now_ms: u64) -> (u32, u32) {
        admission::order_counts(self, user, now_ms).await
    }

    fn attach_user_stream(&self, user: UserId, to: usize) -> bool {
        crate::server::publish::attach_user_id(self, user, to)
    }

    /// A client order id for orders sent without one, `tradsys<shard>x<n>`:
    /// unique per shard, built without allocating.
    fn next_client_order_id(&self) -> ClientOrderId {
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

    fn flush_engine(&self) {
        Shard::flush_engine(self);
    }

    /// Resolves once everything this shard has changed so far is durable
    /// on every shard: call it before a response leaves (see `durability`).
    async fn settle(&self) {
        self.flush_engine();
        let Some(target) = self.log.settle_target() else { return };
        for peer in self.log.peers_to_prompt(target) {
            // A peer that is gone cannot seal; the process is stopping.
            let _ = self.mesh.send(peer, ShardMsg::SealWanted { epoch: target });
        }
        self.log.wait(target).await;
    }

    fn history(&self) -> Option<&ShardStore> {
        self.history.get().map(|store| &**store)
    }

    fn jobs_config(&self) -> &crate::config::JobsConfig {
        &self.jobs_config
    }

    fn jobs(&self) -> Option<&crate::jobs::Queue> {
        self.jobs.get().map(|queue| &**queue)
    }

    fn new_job_id(&self) -> String {
        self.next_job_id()
    }

    fn open_exports(&self) -> RefMut<'_, HashMap<UserId, Vec<String>>> {
        self.open_exports.borrow_mut()
    }

    fn webhooks(&self) -> RefMut<'_, crate::api::webhooks::Webhooks> {
        self.webhooks.borrow_mut()
    }

    async fn call(&self, to: usize, call: PeerCall) -> Result<PeerReply, CallError> {
        match self.call_peer(to, Call::Api(call)).await? {
            Reply::Api(reply) => Ok(reply),
            _ => Err(CallError::Mismatch(to)),
        }
    }

    async fn link_timeout(&self) {
        match &self.link {
            Some(link) => glommio::timer::sleep(std::time::Duration::from_millis(link.call_timeout_ms())).await,
            None => std::future::pending().await,
        }
    }

    async fn call_instance(
        &self,
        instance: usize,
        request: crate::api::link::Carried,
    ) -> Result<crate::api::request::RestReply, crate::api::link::LinkError> {
        match &self.link {
            Some(link) => link.call(instance, &request).await,
            None => Err(crate::api::link::LinkError::Unreachable),
        }
    }
}
