//! One shard's history store: its engine (a SQLite file worked on by the
//! executor's blocking thread, or the shard's own PostgreSQL connections
//! and read replicas), and the rules every call follows.
//!
//! Every call has a timeout (`history_call_timeout_ms`) and goes through
//! the shard's circuit breaker; failed reads retry with exponential
//! backoff and full jitter (the writer retries its batch for as long as it
//! takes, see `server::history`). An open breaker refuses at once, so a
//! store that is down costs a read one error and never a hang. Every call
//! is counted and timed by statement kind for /metrics.
//!
//! A blocking SQLite call never runs on the shard's executor thread:
//! writes run on the shard's writer thread in the idle scheduling class
//! (`sqlite_writer`), reads on the executor's blocking thread at a lower
//! priority than the shard, each with its own connection (a bulkhead:
//! history never slows order entry).

use super::backlog::Backlog;
use super::postgres::PgStore;
use super::rows::Row;
use super::sqlite::SqliteStore;
use super::sqlite_writer::{Done, Job, SqliteWriter};
use super::{
    fold_candle, merge_candles, tape_trade, Batch, CandleParts, CandlesQuery, HistoryStore, OrderRow, OrdersQuery,
    Progress, StoreError, TradeRow, TradesQuery, TransferRow, TransfersQuery, HISTORY_FILE,
};
use crate::config::{HistoryConfig, HistoryEngine};
use crate::marketdata::Candle;
use crate::metrics::{latency_histogram, HistoryCounters, LatencyBuckets, HISTORY_KINDS};
use crate::resilience::{Backoff, Breaker};
use glommio::sync::Semaphore;
use hdrhistogram::Histogram;
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The longest call the latency histograms tell apart.
const CALL_NS_MAX: u64 = 600_000_000_000;
/// The nice value of the blocking thread SQLite calls run on: below the
/// shard's, so that the kernel gives the shard the core first.
const BLOCKING_NICE: i32 = 10;

/// Store reads a candle query makes at most while the backlog moves
/// under it (each read after the first follows a batch that was written
/// or rows that were dropped meanwhile).
pub const CANDLE_READS_MAX: usize = 3;
/// Why a candle query gave up.
pub const BACKLOG_MOVING: &str = "the history backlog moved under every read of older candles";

/// What a history call is, for its latency histogram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Write = 0,
    Order = 1,
    Orders = 2,
    Trades = 3,
    Export = 4,
    Transfers = 5,
}

/// One order asked for by id or by client order id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OrderKey {
    Id(u64),
    Client(String),
}

/// `OrdersQuery` with its text owned, to cross to another thread.
#[derive(Clone, Debug)]
pub struct OwnedOrdersQuery {
    pub user: u64,
    pub symbol: String,
    pub from_id: Option<u64>,
    pub start_ms: Option<u64>,
    pub end_ms: Option<u64>,
    pub limit: usize,
}

impl OwnedOrdersQuery {
    pub fn borrowed(&self) -> OrdersQuery<'_> {
        OrdersQuery {
            user: self.user,
            symbol: &self.symbol,
            from_id: self.from_id,
            start_ms: self.start_ms,
            end_ms: self.end_ms,
            limit: self.limit,
        }
    }
}

/// `TradesQuery` with its text owned.
#[derive(Clone, Debug)]
pub struct OwnedTradesQuery {
    pub user: u64,
    pub symbol: String,
    pub order_id: Option<u64>,
    pub from_id: Option<u64>,
    pub start_ms: Option<u64>,
    pub end_ms: Option<u64>,
    pub limit: usize,
}

impl OwnedTradesQuery {
    pub fn borrowed(&self) -> TradesQuery<'_> {
        TradesQuery {
            user: self.user,
            symbol: &self.symbol,
            order_id: self.order_id,
            from_id: self.from_id,
            start_ms: self.start_ms,
            end_ms: self.end_ms,
            limit: self.limit,
        }
    }
}

/// The shard's PostgreSQL connections: at most `size`, made when needed,
/// dropped after a failure (the next call connects again).
struct Pool {
    url: String,
    idle: RefCell<Vec<PgStore>>,
    open: Cell<usize>,
    waiting: Cell<usize>,
    permits: Semaphore,
    replicas: ReplicaSet,
    /// Where the connections' tasks run: the shard's history queue.
    queue: Cell<Option<glommio::TaskQueueHandle>>,
    /// The primary's WAL position after this shard's newest batch: what a
    /// replica must have replayed before it may answer this shard's reads.
    written_position: Cell<u64>,
}

/// The SQLite engine: reads on the executor's blocking thread, writes on
/// the shard's idle-priority writer thread, each with its own connection.
struct Sqlite {
    reader: Arc<Mutex<SqliteStore>>,
    writer: SqliteWriter,
}

enum Engine {
    Sqlite(Box<Sqlite>),
    /// Boxed: the pool is large and there is one engine per shard.
    Postgres(Box<Pool>),
}

/// Call counts and latencies, for /metrics.
struct Figures {
    counters: HistoryCounters,
    latency_ns: Vec<Histogram<u64>>,
}

/// A shard's history store.
pub struct ShardStore {
    shard: u32,
    engine: Engine,
    breaker: RefCell<Breaker>,
    timeout: Duration,
    retries: u32,
    backoff: (u64, u64),
    figures: RefCell<Figures>,
    jitter: Cell<u64>,
    /// Rows made but not yet in the store (see `backlog`).
    backlog: RefCell<Backlog>,
    /// The data directory, where an export finds another shard's SQLite
    /// file (see `export`).
    data_dir: std::path::PathBuf,
}

/// Months of PostgreSQL partitions kept made ahead of this one.
pub const PARTITIONS_AHEAD_MONTHS: u32 = 3;

/// The SQLite file of `shard` in `data_dir`.
pub fn sqlite_path(data_dir: &Path, shard: u32) -> std::path::PathBuf {
    crate::durability::snapshot::shard_dir(data_dir, shard).join(HISTORY_FILE)
}

impl ShardStore {
    /// The store of `shard` as configured; `None` when the store is off.
    /// PostgreSQL connects on first use, so a database that is down at
    /// start does not keep the shard from trading.
    pub fn open(
        config: &HistoryConfig,
        data_dir: &Path,
        shard: u32,
        generation: u64,
    ) -> Result<Option<ShardStore>, StoreError> {
        let engine = match &config.engine {
            HistoryEngine::Off => return Ok(None),
            HistoryEngine::Sqlite => {
                let path = sqlite_path(data_dir, shard);
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| StoreError::Engine(format!("{}: {e}", dir.display())))?;
                }
                // The writer first: it creates the file (WAL mode) that
                // the reader then opens.
                let writer = SqliteWriter::start(path.clone(), format!("history-{shard}"))?;
                Engine::Sqlite(Box::new(Sqlite {
                    reader: Arc::new(Mutex::new(SqliteStore::open(&path)?)),
                    writer,
                }))
            }
            HistoryEngine::Postgres(url) => Engine::Postgres(Box::new(Pool {
                url: url.clone(),
                idle: RefCell::new(Vec::new()),
                open: Cell::new(0),
                waiting: Cell::new(0),
                permits: Semaphore::new(config.connections_per_shard as u64),
                replicas: ReplicaSet::new(config.replicas.clone()),
                written_position: Cell::new(0),
                queue: Cell::new(None),
            })),
        };
        let breaker = Breaker::new(config.breaker.config());
        let mut counters = HistoryCounters {
            engine: match engine {
                Engine::Sqlite(_) => 1,
                Engine::Postgres(_) => 2,
            },
            replicas: config.replicas.len(),
            ..HistoryCounters::default()
        };
        counters.replica_lag_bytes = [u64::MAX; crate::metrics::HISTORY_REPLICAS_MAX];
        Ok(Some(ShardStore {
            shard,
            engine,
            breaker: RefCell::new(breaker),
            timeout: Duration::from_millis(config.call_timeout_ms),
            retries: config.retries,
            backoff: (config.backoff_base_ms, config.backoff_max_ms),
            figures: RefCell::new(Figures {
                counters,
                latency_ns: HISTORY_KINDS.iter().map(|_| latency_histogram(CALL_NS_MAX)).collect(),
            }),
            jitter: Cell::new(0x9e37_79b9_7f4a_7c15 ^ (u64::from(shard) + 1)),
            backlog: RefCell::new(Backlog::new(shard, generation, config.backlog_bytes_max)),
            data_dir: data_dir.to_path_buf(),
        }))
    }

    pub fn shard(&self) -> u32 {
        self.shard
    }

    /// The schema version this build brings its engine to.
    pub fn schema_version(&self) -> u32 {
        let migrations = match self.engine {
            Engine::Sqlite(_) => super::sqlite::MIGRATIONS,
            Engine::Postgres(_) => super::postgres::MIGRATIONS,
        };
        migrations.last().map_or(0, |(v, _)| *v)
    }

    /// This shard's figures now.
    pub fn counters(&self) -> HistoryCounters {
        let mut figures = self.figures.borrow_mut();
        let Figures { counters, latency_ns } = &mut *figures;
        for (buckets, h) in counters.latency.iter_mut().zip(latency_ns.iter()) {
            *buckets = LatencyBuckets::of(h, buckets.sum_ns);
        }
        let breaker = self.breaker.borrow();
        figures.counters.breaker_state = breaker.state().gauge();
        figures.counters.breaker_transitions = breaker.transitions();
        if let Engine::Postgres(pool) = &self.engine {
            figures.counters.connections_open = pool.open.get() as u64;
            figures.counters.connections_busy = (pool.open.get() - pool.idle.borrow().len()) as u64;
            figures.counters.connections_waiting = pool.waiting.get() as u64;
        }
        figures.counters
    }

    /// Lets the writer and the shard update the backlog figures.
    pub fn with_counters(&self, update: impl FnOnce(&mut HistoryCounters)) {
        update(&mut self.figures.borrow_mut().counters);
    }

    /// Keeps the rows of the records up to `lsn` (epoch `epoch`) for the
    /// writer; past the backlog's limit they are dropped (and written at
    /// the next start-up from the journal).
    pub fn keep(&self, lsn: u64, epoch: u64, rows: Vec<Row>, now_ms: u64) {
        let count = rows.len() as u64;
        let mut backlog = self.backlog.borrow_mut();
        let was_over = backlog.overflowed();
        if !backlog.push(lsn, epoch, rows, now_ms) {
            if !was_over {
                eprintln!(
                    "WARNING: shard {}: history backlog over history_backlog_bytes_max ({} bytes waiting); \
                     trading goes on, the journal keeps the records and the writer reads them back once \
                     it has written the rest",
                    self.shard,
                    backlog.bytes()
                );
            }
            self.figures.borrow_mut().counters.rows_dropped += count;
        }
    }

    pub fn backlog(&self) -> std::cell::RefMut<'_, Backlog> {
        self.backlog.borrow_mut()
    }

    /// The backlog's figures into the counters, for /metrics.
    pub fn count_backlog(&self, now_ms: u64) {
        let backlog = self.backlog.borrow();
        let mut figures = self.figures.borrow_mut();
        let c = &mut figures.counters;
        c.backlog_rows = backlog.rows() as u64;
        c.backlog_bytes = backlog.bytes() as u64;
        c.backlog_age_ms = backlog.age_ms(now_ms);
        c.backlog_over = u64::from(backlog.overflowed());
    }

    /// Every order of the query's user and market that the store and the
    /// backlog hold in its window, each in its newest state, in order id
    /// order. The backlog is read first: a batch written while the store
    /// answers is then in one of the two, and a duplicate is dropped.
    pub async fn orders_with_backlog(&self, query: &OwnedOrdersQuery) -> Result<Vec<OrderRow>, StoreError> {
        let waiting = {
            let backlog = self.readable_backlog()?;
            backlog.orders(query.user, &query.symbol, |o| {
                o.order_id >= query.from_id.unwrap_or(0)
                    && o.time_ms >= query.start_ms.unwrap_or(0)
                    && o.time_ms <= query.end_ms.unwrap_or(u64::MAX)
            })
        };
        let stored = self.orders(query).await?;
        Ok(merge_by_key(stored, waiting, |o| o.order_id))
    }

    /// `orders_with_backlog` for trades.
    pub async fn trades_with_backlog(&self, query: &OwnedTradesQuery) -> Result<Vec<TradeRow>, StoreError> {
        let waiting = {
            let backlog = self.readable_backlog()?;
            backlog.trades(query.user, &query.symbol, |t| {
                t.trade_id >= query.from_id.unwrap_or(0)
                    && query.order_id.is_none_or(|id| t.order_id == id)
                    && t.time_ms >= query.start_ms.unwrap_or(0)
                    && t.time_ms <= query.end_ms.unwrap_or(u64::MAX)
            })
        };
        let stored = self.trades(query).await?;
        Ok(merge_by_key(stored, waiting, |t| t.trade_id))
    }

    /// The deposits or withdrawals the query selects from the store and
    /// the backlog, newest first, each once. The backlog is read first, as
    /// for orders.
    pub async fn transfers_with_backlog(&self, query: &TransfersQuery) -> Result<Vec<TransferRow>, StoreError> {
        let waiting = self.readable_backlog()?.transfers(query)?;
        let mut all = self.transfers(query).await?;
        all.extend(waiting);
        all.sort_by(TransferRow::newest_first);
        all.dedup_by_key(|t| t.id);
        all.truncate(query.rows_max());
        Ok(all)
    }

    /// One order from the backlog or the store.
    pub async fn order_with_backlog(
        &self,
        user: u64,
        symbol: &str,
        key: &OrderKey,
    ) -> Result<Option<OrderRow>, StoreError> {
        let waiting = {
            let backlog = self.readable_backlog()?;
            let mut found = backlog.orders(user, symbol, |o| match key {
                OrderKey::Id(id) => o.order_id == *id,
                OrderKey::Client(c) => o.client_order_id == *c,
            });
            found.pop()
        };
        if waiting.is_some() {
            return Ok(waiting);
        }
        self.order(user, symbol, key).await
    }

    /// Whether the engine holds every shard's rows (PostgreSQL), so that
    /// one read covers a market; otherwise each shard's file holds its
    /// own users' rows.
    pub fn holds_every_shard(&self) -> bool {
        self.is_postgres()
    }

    /// The market's candles the engine holds for `query`, with the
    /// progress of `shards` from the same read.
    pub async fn candles(&self, query: &CandlesQuery, shards: &[u32]) -> Result<CandleParts, StoreError> {
        self.read(Kind::Trades, || async {
            let (query, shards) = (query.clone(), shards.to_vec());
            match &self.engine {
                Engine::Sqlite(sqlite) => {
                    blocking(&sqlite.reader, move |s| {
                        futures_lite::future::block_on(s.candles(&query, &shards))
                    })
                    .await
                }
                Engine::Postgres(pool) => {
                    let (query, shards) = (&query, &shards);
                    pool.read(|mut c| async move { (c.candles(query, shards).await, c) })
                        .await
                }
            }
        })
        .await
    }

    /// The time of the market's first trade the engine holds, if any.
    pub async fn first_trade_ms(&self, symbol: &str) -> Result<Option<u64>, StoreError> {
        self.read(Kind::Trades, || async {
            let symbol = symbol.to_string();
            match &self.engine {
                Engine::Sqlite(sqlite) => {
                    blocking(&sqlite.reader, move |s| {
                        futures_lite::future::block_on(s.first_trade_ms(&symbol))
                    })
                    .await
                }
                Engine::Postgres(pool) => {
                    let symbol = &symbol;
                    pool.read(|mut c| async move { (c.first_trade_ms(symbol).await, c) })
                        .await
                }
            }
        })
        .await
    }

    /// The earliest time of this shard's waiting rows of the market's
    /// trades.
    pub fn backlog_first_trade_ms(&self, symbol: &str) -> Option<u64> {
        self.backlog.borrow().first_buyer_trade_ms(symbol)
    }

    /// Adds this shard's waiting rows of `query` that a store read which
    /// saw this shard at `after` lacks to `into`; false when the backlog
    /// moved past that read (written or dropped rows): read again.
    pub fn backlog_candles(
        &self,
        query: &CandlesQuery,
        after: Option<Progress>,
        into: &mut BTreeMap<u64, Candle>,
    ) -> bool {
        let mut parts = BTreeMap::new();
        let range = (query.from_ms, query.to_ms);
        let whole = self
            .backlog
            .borrow()
            .buyer_trades_after(&query.symbol, range, after, |row| {
                fold_candle(query.interval, &tape_trade(row), &mut parts)
            });
        if whole {
            merge_candles(into, parts.into_values());
        }
        whole
    }

    /// This shard's own candles of `query` (an engine that holds one
    /// shard's rows): its store's and its backlog's, each trade once.
    pub async fn own_candles(&self, query: &CandlesQuery) -> Result<Vec<Candle>, StoreError> {
        for _ in 0..CANDLE_READS_MAX {
            let parts = self.candles(query, &[self.shard]).await?;
            let after = parts.progress.first().and_then(|(_, progress)| *progress);
            let mut candles = BTreeMap::new();
            merge_candles(&mut candles, parts.candles);
            if self.backlog_candles(query, after, &mut candles) {
                return Ok(candles.into_values().collect());
            }
        }
        Err(StoreError::Engine(BACKLOG_MOVING.into()))
    }

    /// The backlog, when it holds every row the store lacks.
    fn readable_backlog(&self) -> Result<std::cell::Ref<'_, Backlog>, StoreError> {
        let backlog = self.backlog.borrow();
        if backlog.overflowed() {
            return Err(StoreError::Engine(
                "the history backlog went over its limit; older history is back after the next start-up".into(),
            ));
        }
        Ok(backlog)
    }

    /// Where an export of `owner`'s history reads: the owner's SQLite file
    /// (read-only, beside its writer), or the one PostgreSQL database.
    pub(super) fn export_source(&self, owner: u32) -> super::export::Source {
        match &self.engine {
            Engine::Sqlite(_) => super::export::Source::Sqlite(sqlite_path(&self.data_dir, owner)),
            Engine::Postgres(pool) => super::export::Source::Postgres(pool.url.clone(), pool.queue.get()),
        }
    }

    /// Whether the engine is PostgreSQL (whose server may share the
    /// machine's cores with the shards).
    pub fn is_postgres(&self) -> bool {
        matches!(self.engine, Engine::Postgres(_))
    }

    /// Runs the tasks of the connections made from now on in `queue` (the
    /// shard's low-share history queue: PostgreSQL's socket work is the
    /// store's, not order entry's).
    pub fn set_task_queue(&self, queue: glommio::TaskQueueHandle) {
        if let Engine::Postgres(pool) = &self.engine {
            pool.queue.set(Some(queue));
        }
    }

    /// Brings the schema to this build's version; returns the version found.
    pub async fn migrate(&self) -> Result<u32, StoreError> {
        self.call_limited(Kind::Write, self.write_timeout(), || async {
            match &self.engine {
                Engine::Sqlite(sqlite) => match sqlite.writer.run(Job::Migrate, self.timeout).await? {
                    Done::Migrated(found) => Ok(found),
                    _ => Err(mismatch()),
                },
                Engine::Postgres(pool) => pool.with(|mut c| async move { (c.migrate().await, c) }).await,
            }
        })
        .await
    }

    /// Where this shard's history stands in the store.
    pub async fn progress(&self) -> Result<Option<Progress>, StoreError> {
        let shard = self.shard;
        self.call_limited(Kind::Write, self.write_timeout(), || async move {
            match &self.engine {
                Engine::Sqlite(sqlite) => match sqlite.writer.run(Job::Progress(shard), self.timeout).await? {
                    Done::Progress(progress) => Ok(progress),
                    _ => Err(mismatch()),
                },
                Engine::Postgres(pool) => pool.with(|mut c| async move { (c.progress(shard).await, c) }).await,
            }
        })
        .await
    }

    /// Writes one batch (once: a batch the store has is skipped). One
    /// attempt; the writer decides when to try again.
    pub async fn write(&self, batch: &Arc<Batch>) -> Result<bool, StoreError> {
        let result = self
            .call_limited(Kind::Write, self.write_timeout(), || async {
                match &self.engine {
                    Engine::Sqlite(sqlite) => match sqlite.writer.run(Job::Write(batch.clone()), self.timeout).await? {
                        Done::Written(applied) => Ok(applied),
                        _ => Err(mismatch()),
                    },
                    Engine::Postgres(pool) => {
                        let written = pool
                            .with(|mut c| async move {
                                let result = c.write(batch).await.map(|applied| (applied, c.last_write_position()));
                                (result, c)
                            })
                            .await?;
                        pool.written_position.set(pool.written_position.get().max(written.1));
                        Ok(written.0)
                    }
                }
            })
            .await;
        let mut figures = self.figures.borrow_mut();
        match result {
            Ok(true) => {
                figures.counters.batches_written += 1;
                figures.counters.rows_written += batch.rows.len() as u64;
            }
            Ok(false) => figures.counters.batches_skipped += 1,
            Err(_) => {}
        }
        result
    }

    /// One order of `user` in `symbol`.
    pub async fn order(&self, user: u64, symbol: &str, key: &OrderKey) -> Result<Option<OrderRow>, StoreError> {
        self.read(Kind::Order, || async {
            let symbol = symbol.to_string();
            let key = key.clone();
            match &self.engine {
                Engine::Sqlite(sqlite) => {
                    blocking(&sqlite.reader, move |s| {
                        futures_lite::future::block_on(find_order(s, user, &symbol, &key))
                    })
                    .await
                }
                Engine::Postgres(pool) => {
                    let (symbol, key) = (&symbol, &key);
                    pool.read(|mut c| async move { (find_order(&mut c, user, symbol, key).await, c) })
                        .await
                }
            }
        })
        .await
    }

    pub async fn orders(&self, query: &OwnedOrdersQuery) -> Result<Vec<OrderRow>, StoreError> {
        self.read(Kind::Orders, || async {
            let query = query.clone();
            match &self.engine {
                Engine::Sqlite(sqlite) => {
                    blocking(&sqlite.reader, move |s| {
                        futures_lite::future::block_on(s.orders(&query.borrowed()))
                    })
                    .await
                }
                Engine::Postgres(pool) => {
                    let query = &query;
                    pool.read(|mut c| async move { (c.orders(&query.borrowed()).await, c) })
                        .await
                }
            }
        })
        .await
    }

    pub async fn trades(&self, query: &OwnedTradesQuery) -> Result<Vec<TradeRow>, StoreError> {
        self.read(Kind::Trades, || async {
            let query = query.clone();
            match &self.engine {
                Engine::Sqlite(sqlite) => {
                    blocking(&sqlite.reader, move |s| {
                        futures_lite::future::block_on(s.trades(&query.borrowed()))
                    })
                    .await
                }
                Engine::Postgres(pool) => {
                    let query = &query;
                    pool.read(|mut c| async move { (c.trades(&query.borrowed()).await, c) })
                        .await
                }
            }
        })
        .await
    }

    pub async fn transfers(&self, query: &TransfersQuery) -> Result<Vec<TransferRow>, StoreError> {
        self.read(Kind::Transfers, || async {
            let query = query.clone();
            match &self.engine {
                Engine::Sqlite(sqlite) => {
                    blocking(&sqlite.reader, move |s| {
                        futures_lite::future::block_on(s.transfers(&query))
                    })
                    .await
                }
                Engine::Postgres(pool) => {
                    let query = &query;
                    pool.read(|mut c| async move { (c.transfers(query).await, c) }).await
                }
            }
        })
        .await
    }

    /// PostgreSQL upkeep: partitions `months` ahead of `now_ms` and the
    /// statistics views. Nothing for SQLite.
    pub async fn upkeep(&self, now_ms: u64, months: u32) -> Result<(), StoreError> {
        let Engine::Postgres(pool) = &self.engine else {
            return Ok(());
        };
        self.call(Kind::Write, || async {
            pool.with(|mut c| async move {
                let result = async {
                    c.ensure_partitions(now_ms, months).await?;
                    c.refresh_statistics().await
                }
                .await;
                (result, c)
            })
            .await
        })
        .await
    }

    /// Asks every replica how far it has replayed, for /metrics.
    pub async fn refresh_replica_lag(&self) {
        let Engine::Postgres(pool) = &self.engine else { return };
        if pool.replicas.urls.is_empty() {
            return;
        }
        pool.replicas.refresh().await;
        let lags = pool.replicas.lag_bytes(pool.written_position.get());
        let mut figures = self.figures.borrow_mut();
        for (slot, lag) in figures.counters.replica_lag_bytes.iter_mut().zip(lags) {
            *slot = lag.unwrap_or(u64::MAX);
        }
    }

    /// A read: retried with backoff while the breaker lets it through.
    async fn read<T, F, Fut>(&self, kind: Kind, op: F) -> Result<T, StoreError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let mut backoff = Backoff::new(self.backoff.0, self.backoff.1);
        let mut attempt = 0;
        loop {
            let result = self.call(kind, &op).await;
            match result {
                Err(StoreError::Unavailable) => return result,
                Err(_) if attempt < self.retries => {
                    attempt += 1;
                    self.figures.borrow_mut().counters.retries += 1;
                    let delay = backoff.next_delay_ms(self.next_random());
                    glommio::timer::sleep(Duration::from_millis(delay)).await;
                }
                _ => return result,
            }
        }
    }

    /// One call: through the breaker, with the timeout, counted.
    pub(super) async fn call<T, F, Fut>(&self, kind: Kind, op: F) -> Result<T, StoreError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        self.call_limited(kind, Some(self.timeout), op).await
    }

    /// The time limit of a write call: none here for SQLite, whose writer
    /// thread times the job itself from when it starts (waiting for a
    /// spare core is not a failure of the database).
    fn write_timeout(&self) -> Option<Duration> {
        match self.engine {
            Engine::Sqlite(_) => None,
            Engine::Postgres(_) => Some(self.timeout),
        }
    }

    /// `call` with the time limit `limit` (`None`: the operation keeps its
    /// own).
    async fn call_limited<T, F, Fut>(&self, kind: Kind, limit: Option<Duration>, op: F) -> Result<T, StoreError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        if !self.breaker.borrow_mut().allow(crate::clock::now_ms()) {
            self.figures.borrow_mut().counters.breaker_rejections += 1;
            return Err(StoreError::Unavailable);
        }
        let started = Instant::now();
        let result = match limit {
            Some(limit) => match glommio::timer::timeout(limit, async { Ok(op().await) }).await {
                Ok(result) => result,
                Err(_) => Err(StoreError::Timeout(limit.as_millis() as u64)),
            },
            None => op().await,
        };
        let elapsed_ns = started.elapsed().as_nanos() as u64;
        // A store out of disk space still answers: its reads keep working
        // while the writer waits for room (the rows wait in the backlog),
        // so a full disk is not a failure the breaker counts.
        let answered = matches!(result, Ok(_) | Err(StoreError::Full(_)));
        self.breaker.borrow_mut().record(crate::clock::now_ms(), answered);
        let mut figures = self.figures.borrow_mut();
        let slot = kind as usize;
        figures.latency_ns[slot].saturating_record(elapsed_ns.clamp(1, CALL_NS_MAX));
        figures.counters.latency[slot].sum_ns += elapsed_ns;
        if let Err(e) = &result {
            figures.counters.errors += 1;
            if matches!(e, StoreError::Timeout(_)) {
                figures.counters.timeouts += 1;
            }
        }
        result
    }

    /// A retry delay's random number.
    fn next_random(&self) -> u64 {
        let mut state = self.jitter.get();
        let x = crate::resilience::xorshift(&mut state);
        self.jitter.set(state);
        x
    }
}

/// `stored` and `waiting` (each in key order) as one list in key order;
/// for a key in both, the waiting (newer) row wins.
fn merge_by_key<T>(stored: Vec<T>, waiting: Vec<T>, key: impl Fn(&T) -> u64) -> Vec<T> {
    if waiting.is_empty() {
        return stored;
    }
    let mut all: Vec<T> = stored
        .into_iter()
        .filter(|s| waiting.binary_search_by_key(&key(s), &key).is_err())
        .collect();
    all.extend(waiting);
    all.sort_by_key(&key);
    all
}

fn mismatch() -> StoreError {
    StoreError::Engine("the SQLite writer answered another kind of job".into())
}

/// The order by id or by client order id, in any engine.
async fn find_order(
    store: &mut impl HistoryStore,
    user: u64,
    symbol: &str,
    key: &OrderKey,
) -> Result<Option<OrderRow>, StoreError> {
    match key {
        OrderKey::Id(id) => store.order(user, symbol, *id).await,
        OrderKey::Client(client) => store.order_by_client_id(user, symbol, client).await,
    }
}

/// Runs `work` on the SQLite store on the executor's blocking thread.
async fn blocking<T: Send + 'static>(
    store: &Arc<Mutex<SqliteStore>>,
    work: impl FnOnce(&mut SqliteStore) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let store = store.clone();
    let (done, result) = crate::oneshot::channel();
    // The blocking call's future must run to its end: glommio's blocking
    // thread panics when the future that waits for it is gone. So a task
    // of its own awaits it, and a caller that times out drops only `result`.
    glommio::spawn_local(async move {
        let outcome = glommio::executor()
            .spawn_blocking(move || {
                lower_priority_once();
                let mut guard = store
                    .lock()
                    .map_err(|_| StoreError::Engine("the SQLite store's lock is poisoned".into()))?;
                work(&mut guard)
            })
            .await;
        done.send(outcome);
    })
    .detach();
    result.await.unwrap_or_else(|| {
        Err(StoreError::Engine(
            "the SQLite call's task ended without an answer".into(),
        ))
    })
}

thread_local! {
    static LOWERED: Cell<bool> = const { Cell::new(false) };
}

/// Gives the calling (blocking) thread a lower CPU priority, once.
pub(super) fn lower_priority_once() {
    LOWERED.with(|lowered| {
        if !lowered.get() {
            lowered.set(true);
            // SAFETY: gettid has no preconditions; setpriority changes only
            // this thread's nice value.
            unsafe {
                let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
                libc::setpriority(libc::PRIO_PROCESS, tid, BLOCKING_NICE);
            }
        }
    });
}

impl Pool {
    /// Runs `work` on a connection of the primary. The connection goes
    /// back to the pool after a success and is dropped after a failure
    /// (or a timeout, which drops this future and the connection with it).
    async fn with<T, F, Fut>(&self, work: F) -> Result<T, StoreError>
    where
        F: FnOnce(PgStore) -> Fut,
        Fut: Future<Output = (Result<T, StoreError>, PgStore)>,
    {
        self.waiting.set(self.waiting.get() + 1);
        let permit = self.permits.acquire_permit(1).await;
        self.waiting.set(self.waiting.get() - 1);
        let _permit = permit.map_err(|e| StoreError::Engine(format!("connection pool: {e}")))?;
        let idle = self.idle.borrow_mut().pop();
        let conn = match idle {
            Some(conn) => conn,
            None => {
                let conn = PgStore::connect_on(&self.url, self.queue.get()).await?;
                self.open.set(self.open.get() + 1);
                conn
            }
        };
        let open = OpenGuard(&self.open);
        let (result, conn) = work(conn).await;
        if result.is_ok() {
            self.idle.borrow_mut().push(conn);
            std::mem::forget(open);
        }
        result
    }

    /// A read: on a replica that has replayed this shard's newest batch,
    /// else on the primary.
    async fn read<T, F, Fut>(&self, work: F) -> Result<T, StoreError>
    where
        F: Fn(PgStore) -> Fut,
        Fut: Future<Output = (Result<T, StoreError>, PgStore)>,
    {
        if let Some((index, conn)) = self.replicas.take_reader(self.written_position.get()).await {
            let (result, conn) = work(conn).await;
            if result.is_ok() {
                self.replicas.put_back(index, conn);
                return result;
            }
            self.replicas.put_back_failed(index);
        }
        self.with(work).await
    }
}

/// One read replica's connection.
enum Replica {
    Idle(PgStore),
    /// A read or a position check has it.
    Busy,
    /// Not connected; the next position check tries again.
    Down,
}

/// The shard's read replicas, each with one connection, chosen
/// round-robin among those that have replayed far enough (see
/// `postgres::pick_replica`).
pub(super) struct ReplicaSet {
    urls: Vec<String>,
    slots: RefCell<Vec<Replica>>,
    /// Each replica's replay position (WAL bytes) when last asked.
    positions: RefCell<Vec<Option<u64>>>,
    next: Cell<usize>,
}

impl ReplicaSet {
    pub(super) fn new(urls: Vec<String>) -> ReplicaSet {
        let n = urls.len();
        ReplicaSet {
            urls,
            slots: RefCell::new((0..n).map(|_| Replica::Down).collect()),
            positions: RefCell::new(vec![None; n]),
            next: Cell::new(0),
        }
    }

    /// Asks every replica not in use how far it has replayed, connecting
    /// those that are down.
    async fn refresh(&self) {
        for i in 0..self.urls.len() {
            let slot = std::mem::replace(&mut self.slots.borrow_mut()[i], Replica::Busy);
            let conn = match slot {
                Replica::Idle(conn) => Some(conn),
                Replica::Down => PgStore::connect(&self.urls[i]).await.ok(),
                Replica::Busy => {
                    self.slots.borrow_mut()[i] = Replica::Busy;
                    continue;
                }
            };
            let (position, slot) = match conn {
                Some(conn) => match conn.replay_position().await {
                    Ok(position) => (position, Replica::Idle(conn)),
                    Err(_) => (None, Replica::Down),
                },
                None => (None, Replica::Down),
            };
            self.positions.borrow_mut()[i] = position;
            self.slots.borrow_mut()[i] = slot;
        }
    }

    /// A replica's connection that has replayed at least `required`.
    pub(super) async fn take_reader(&self, required: u64) -> Option<(usize, PgStore)> {
        if self.urls.is_empty() {
            return None;
        }
        self.refresh().await;
        let chosen = {
            let slots = self.slots.borrow();
            let positions: Vec<Option<u64>> = self
                .positions
                .borrow()
                .iter()
                .zip(slots.iter())
                .map(|(p, s)| if matches!(s, Replica::Idle(_)) { *p } else { None })
                .collect();
            super::postgres::pick_replica(self.next.get(), &positions, required)?
        };
        self.next.set((chosen + 1) % self.urls.len());
        let slot = std::mem::replace(&mut self.slots.borrow_mut()[chosen], Replica::Busy);
        match slot {
            Replica::Idle(conn) => Some((chosen, conn)),
            other => {
                self.slots.borrow_mut()[chosen] = other;
                None
            }
        }
    }

    pub(super) fn put_back(&self, index: usize, conn: PgStore) {
        self.slots.borrow_mut()[index] = Replica::Idle(conn);
    }

    fn put_back_failed(&self, index: usize) {
        self.slots.borrow_mut()[index] = Replica::Down;
    }

    /// Bytes each replica is behind `primary`, `None` when unknown.
    pub(super) fn lag_bytes(&self, primary: u64) -> Vec<Option<u64>> {
        self.positions
            .borrow()
            .iter()
            .map(|p| p.map(|p| primary.saturating_sub(p)))
            .collect()
    }
}

/// Counts a connection down unless forgotten (the connection went back).
struct OpenGuard<'a>(&'a Cell<usize>);

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}
