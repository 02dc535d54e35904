//! History store write-behind benchmark: rows per second into PostgreSQL
//! as the store writes them (binary COPY batches with their progress, one
//! transaction each) against the pattern of one `INSERT` per row over one
//! connection, on the same server in the same run; and the SQLite engine's
//! batches for reference.
//!
//! Then `myTrades` latency: one user with `STORE_BENCH_USER_TRADES`
//! (default 1,000,000) trades, and `STORE_BENCH_QUERIES` (default 1,000)
//! queries of 1,000 rows from a random `fromId`, on each engine; and one
//! cold read of a chunk of 1,000 candles (1s and 1m) from every row, as
//! klines older than memory keeps are read.
//!
//! `cargo bench --bench store` (rows: `STORE_BENCH_ROWS`, default 200,000
//! batched and a tenth of that one by one; batch size:
//! `STORE_BENCH_BATCH_ROWS`, default the writer's `WRITER_BATCH_ROWS`;
//! writers: `STORE_BENCH_WRITERS`, default 2, as a 2-shard server has: each
//! on a thread and connection of its own, writing its shard's batches).
//! The PostgreSQL server is the benchmark's own (`tradsys-pgtest`), on
//! 127.0.0.1, with the server's default durability (fsync on, synchronous
//! commit).

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};
use tradsys::marketdata::Interval;
use tradsys::store::backlog::WRITER_BATCH_ROWS;
use tradsys::store::postgres::PgStore;
use tradsys::store::rows::{Row, TradeRow};
use tradsys::store::sqlite::SqliteStore;
use tradsys::store::{Batch, CandlesQuery, HistoryStore, Progress, TradesQuery};

/// The user whose trades the query benchmark reads; the write benchmark's
/// rows belong to users 2..102.
const QUERY_USER: u64 = 1_000;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn trade(id: u64) -> TradeRow {
    TradeRow {
        user: 2 + id % 100,
        symbol: "BTCUSDT".into(),
        trade_id: id,
        order_id: id / 2 + 1,
        price: 3_000_000_000_000 + (id % 1000) as i64,
        qty: 1_000_000,
        quote_qty: 30_000_000_000,
        commission: 1_000,
        commission_asset: "BTC".into(),
        is_buyer: id % 2 == 0,
        is_maker: id % 2 == 1,
        time_ms: 1_797_000_000_000 + id,
    }
}

/// Batches of `batch_rows` trades numbered from `first`, as shard 0's
/// writer would hand them to an engine.
fn batches(first: u64, rows: u64, batch_rows: u64) -> Vec<Batch> {
    shard_batches(0, first, rows, batch_rows)
}

fn shard_batches(shard: u32, first: u64, rows: u64, batch_rows: u64) -> Vec<Batch> {
    (0..rows.div_ceil(batch_rows))
        .map(|b| {
            let start = first + b * batch_rows;
            let end = (start + batch_rows).min(first + rows);
            Batch {
                shard,
                progress: Progress {
                    generation: 1,
                    lsn: b + 1,
                },
                rows: (start..end).map(|id| Row::Trade(trade(id))).collect(),
            }
        })
        .collect()
}

/// `count` trades of `QUERY_USER`, numbered from `first`.
fn user_batches(first: u64, count: u64, batch_rows: u64, first_lsn: u64) -> Vec<Batch> {
    let mut out = batches(first, count, batch_rows);
    for (i, batch) in out.iter_mut().enumerate() {
        batch.progress.lsn = first_lsn + i as u64;
        for row in &mut batch.rows {
            if let Row::Trade(t) = row {
                t.user = QUERY_USER;
            }
        }
    }
    out
}

/// Latency of `queries` myTrades calls (limit 1000, a random fromId among
/// `trades` trade ids from `first`): (p50, p99, max) in microseconds.
async fn query_latency<S: HistoryStore>(store: &mut S, first: u64, trades: u64, queries: u64) -> (u64, u64, u64) {
    let mut histogram = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 2).expect("a histogram");
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    for _ in 0..queries {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let from_id = first + seed % trades.saturating_sub(1000).max(1);
        let query = TradesQuery {
            user: QUERY_USER,
            symbol: "BTCUSDT",
            order_id: None,
            from_id: Some(from_id),
            start_ms: None,
            end_ms: None,
            limit: 1000,
        };
        let started = Instant::now();
        let rows = store.trades(&query).await.expect("myTrades");
        histogram.saturating_record(started.elapsed().as_micros() as u64);
        assert_eq!(rows.len(), 1000, "a full page from {from_id}");
    }
    (
        histogram.value_at_quantile(0.5),
        histogram.value_at_quantile(0.99),
        histogram.max(),
    )
}

/// One cold read of the candles of a chunk of 1,000 candles (klines older
/// than memory keeps, `api::klines`) for 1s and 1m, over every row
/// written: (interval, candles, trades in them, milliseconds).
async fn candle_chunks<S: HistoryStore>(store: &mut S, user_first: u64) -> Vec<(&'static str, usize, u64, u128)> {
    let mut out = Vec::new();
    for interval in [Interval::S1, Interval::M1] {
        let chunk = interval.candle_number(trade(user_first).time_ms) / 1000;
        let query = CandlesQuery {
            symbol: "BTCUSDT".into(),
            interval,
            from_ms: interval.nth_open_ms(chunk * 1000),
            to_ms: interval.nth_open_ms((chunk + 1) * 1000),
        };
        let started = Instant::now();
        let parts = store.candles(&query, &[0]).await.expect("candles");
        let elapsed = started.elapsed().as_millis();
        let trades = parts.candles.iter().map(|c| c.trade_count).sum();
        out.push((interval.as_str(), parts.candles.len(), trades, elapsed));
    }
    out
}

async fn batched<S: HistoryStore>(store: &mut S, batches: &[Batch]) -> f64 {
    let started = Instant::now();
    for batch in batches {
        assert!(store.write(batch).await.expect("a batch"), "every batch is new");
    }
    let rows: usize = batches.iter().map(|b| b.rows.len()).sum();
    rows as f64 / started.elapsed().as_secs_f64()
}

/// Rows per second into PostgreSQL from `writers` writers at once, each
/// on a thread and connection of its own writing `rows / writers` trades
/// of its shard in batches of `batch_rows`, as the shards' writers do.
fn concurrent_copy_rate(url: &str, writers: u32, first: u64, rows: u64, batch_rows: u64) -> f64 {
    let per_writer = rows / u64::from(writers);
    let start = Arc::new(Barrier::new(writers as usize));
    let threads: Vec<_> = (0..writers)
        .map(|shard| {
            let url = url.to_string();
            let start = start.clone();
            let batches = shard_batches(shard, first + u64::from(shard) * per_writer, per_writer, batch_rows);
            glommio::LocalExecutorBuilder::default()
                .spawn(move || async move {
                    let mut store = PgStore::connect(&url).await.expect("PostgreSQL");
                    start.wait();
                    let started = Instant::now();
                    for batch in &batches {
                        assert!(store.write(batch).await.expect("a batch"), "every batch is new");
                    }
                    started.elapsed()
                })
                .expect("an executor")
        })
        .collect();
    let slowest = threads
        .into_iter()
        .map(|t| t.join().expect("a writer"))
        .max()
        .unwrap_or(Duration::ZERO);
    (per_writer * u64::from(writers)) as f64 / slowest.as_secs_f64()
}

/// Runs `work` on a glommio executor of its own and returns what it gives.
fn on_executor<T, F, Fut>(url: &str, work: F) -> T
where
    T: Send + 'static,
    F: FnOnce(String) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T> + 'static,
{
    let url = url.to_string();
    glommio::LocalExecutorBuilder::default()
        .spawn(move || work(url))
        .expect("an executor")
        .join()
        .expect("the benchmark")
}

/// One INSERT per row, each its own transaction, over one connection.
async fn one_insert_per_row(url: &str, first: u64, rows: u64) -> f64 {
    let client = tradsys::store::postgres::connect_client(url)
        .await
        .expect("a connection");
    let insert = client
        .prepare(
            "INSERT INTO trades (symbol, trade_id, is_buyer, user_id, order_id, price, qty, quote_qty, commission,
                commission_asset, is_maker, time_ms)
             VALUES ($1, $2, $3, $4, $5, $6::bigint::numeric / 100000000, $7::bigint::numeric / 100000000,
                $8::bigint::numeric / 100000000, $9::bigint::numeric / 100000000, $10, $11, $12)",
        )
        .await
        .expect("prepare");
    let started = Instant::now();
    for id in first..first + rows {
        let t = trade(id);
        client
            .execute(
                &insert,
                &[
                    &t.symbol,
                    &(t.trade_id as i64),
                    &t.is_buyer,
                    &(t.user as i64),
                    &(t.order_id as i64),
                    &t.price,
                    &t.qty,
                    &t.quote_qty,
                    &t.commission,
                    &t.commission_asset,
                    &t.is_maker,
                    &(t.time_ms as i64),
                ],
            )
            .await
            .expect("an insert");
    }
    rows as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let rows = env_number("STORE_BENCH_ROWS", 200_000);
    let batch_rows = env_number("STORE_BENCH_BATCH_ROWS", WRITER_BATCH_ROWS as u64);
    let writers = env_number("STORE_BENCH_WRITERS", 2).max(1) as u32;
    let single_rows = (rows / 10).max(1);
    let user_trades = env_number("STORE_BENCH_USER_TRADES", 1_000_000);
    let queries = env_number("STORE_BENCH_QUERIES", 1_000);
    let user_first = 10_000_000;
    let server = tradsys_pgtest::PgServer::start();
    server.psql("CREATE DATABASE bench");
    let url = format!(
        "host=127.0.0.1 port={} user={} dbname=bench",
        server.port(),
        tradsys_pgtest::SUPERUSER
    );
    println!(
        "store bench: {rows} rows in batches of {batch_rows} from {writers} writers at once, {single_rows} rows one INSERT each"
    );
    let insert_rate = on_executor(&url, move |url| async move {
        let mut store = PgStore::connect(&url).await.expect("PostgreSQL");
        store.migrate().await.expect("migrate");
        store.ensure_partitions(1_797_000_000_000, 2).await.expect("partitions");
        one_insert_per_row(&url, 0, single_rows).await
    });
    let copy_rate = concurrent_copy_rate(&url, writers, single_rows, rows, batch_rows);
    let pg_latency = on_executor(&url, move |url| async move {
        let mut store = PgStore::connect(&url).await.expect("PostgreSQL");
        batched(&mut store, &user_batches(user_first, user_trades, 50_000, 1_000_000)).await;
        store.execute_analyze().await;
        let latency = query_latency(&mut store, user_first, user_trades, queries).await;
        (latency, candle_chunks(&mut store, user_first).await)
    });
    let (pg_latency, pg_candles) = pg_latency;
    let dir = std::env::temp_dir().join(format!("tradsys-store-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a directory");
    let (sqlite_rate, sqlite_latency) = futures_lite::future::block_on(async {
        let mut store = SqliteStore::open(&dir.join("history.sqlite")).expect("SQLite");
        store.migrate().await.expect("migrate");
        let rate = batched(&mut store, &batches(0, rows, batch_rows)).await;
        let load = user_batches(user_first, user_trades, 50_000, 1_000_000);
        batched(&mut store, &load).await;
        let latency = query_latency(&mut store, user_first, user_trades, queries).await;
        (rate, (latency, candle_chunks(&mut store, user_first).await))
    });
    let (sqlite_latency, sqlite_candles) = sqlite_latency;
    let _ = std::fs::remove_dir_all(&dir);
    println!("postgres one INSERT per row: {insert_rate:.0} rows/s");
    println!("postgres COPY batches:       {copy_rate:.0} rows/s ({writers} writers)");
    println!("ratio COPY / INSERT:         {:.1}", copy_rate / insert_rate);
    println!("sqlite batches:              {sqlite_rate:.0} rows/s (one writer)");
    for (engine, (p50, p99, max)) in [("postgres", pg_latency), ("sqlite", sqlite_latency)] {
        println!(
            "{engine} myTrades, {user_trades} trades of one user, limit 1000 from a random fromId, {queries} queries: p50 {p50} us, p99 {p99} us, max {max} us"
        );
    }
    let total = rows + single_rows + user_trades;
    for (engine, chunks) in [("postgres", pg_candles), ("sqlite", sqlite_candles)] {
        for (interval, candles, trades, ms) in chunks {
            println!(
                "{engine} candles of a {interval} chunk (cold, {total} trade rows stored): {candles} candles of {trades} trades in {ms} ms"
            );
        }
    }
}
