//! History store write-behind benchmark: rows per second into PostgreSQL
//! as the store writes them (binary COPY batches with their progress, one
//! transaction each) against the pattern of one `INSERT` per row over one
//! connection, on the same server in the same run; and the SQLite engine's
//! batches for reference.
//!
//! `cargo bench --bench store` (rows: `STORE_BENCH_ROWS`, default 200,000
//! batched and a tenth of that one by one; batch size:
//! `STORE_BENCH_BATCH_ROWS`, default 10,000). The PostgreSQL server is the
//! benchmark's own (`tradsys-pgtest`), on 127.0.0.1, with the server's
//! default durability (fsync on, synchronous commit).

use std::time::Instant;
use tokio_util::compat::FuturesAsyncReadCompatExt;
use tradsys::store::postgres::PgStore;
use tradsys::store::rows::{Row, TradeRow};
use tradsys::store::sqlite::SqliteStore;
use tradsys::store::{Batch, HistoryStore, Progress};

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

/// Batches of `batch_rows` trades numbered from `first`, as the writer
/// would hand them to an engine.
fn batches(first: u64, rows: u64, batch_rows: u64) -> Vec<Batch> {
    (0..rows.div_ceil(batch_rows))
        .map(|b| {
            let start = first + b * batch_rows;
            let end = (start + batch_rows).min(first + rows);
            Batch {
                shard: 0,
                progress: Progress {
                    generation: 1,
                    lsn: b + 1,
                },
                rows: (start..end).map(|id| Row::Trade(trade(id))).collect(),
            }
        })
        .collect()
}

async fn batched<S: HistoryStore>(store: &mut S, batches: &[Batch]) -> f64 {
    let started = Instant::now();
    for batch in batches {
        assert!(store.write(batch).await.expect("a batch"), "every batch is new");
    }
    let rows: usize = batches.iter().map(|b| b.rows.len()).sum();
    rows as f64 / started.elapsed().as_secs_f64()
}

/// One INSERT per row, each its own transaction, over one connection.
async fn one_insert_per_row(url: &str, first: u64, rows: u64) -> f64 {
    let config: tokio_postgres::Config = url.parse().expect("a URL");
    let stream = glommio::net::TcpStream::connect(format!("127.0.0.1:{}", config.get_ports()[0]))
        .await
        .expect("connect");
    let (client, connection) = config
        .connect_raw(stream.compat(), tokio_postgres::NoTls)
        .await
        .expect("a connection");
    glommio::spawn_local(async move {
        let _ = connection.await;
    })
    .detach();
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
    let batch_rows = env_number("STORE_BENCH_BATCH_ROWS", 10_000);
    let single_rows = (rows / 10).max(1);
    let server = tradsys_pgtest::PgServer::start();
    server.psql("CREATE DATABASE bench");
    let url = format!(
        "host=127.0.0.1 port={} user={} dbname=bench",
        server.port(),
        tradsys_pgtest::SUPERUSER
    );
    println!("store bench: {rows} rows in batches of {batch_rows}, {single_rows} rows one INSERT each");
    let (copy_rate, insert_rate) = glommio::LocalExecutorBuilder::default()
        .spawn(move || async move {
            let mut store = PgStore::connect(&url).await.expect("PostgreSQL");
            store.migrate().await.expect("migrate");
            store.ensure_partitions(1_797_000_000_000, 2).await.expect("partitions");
            let insert_rate = one_insert_per_row(&url, 0, single_rows).await;
            let copy_rate = batched(&mut store, &batches(single_rows, rows, batch_rows)).await;
            (copy_rate, insert_rate)
        })
        .expect("an executor")
        .join()
        .expect("the benchmark");
    let dir = std::env::temp_dir().join(format!("tradsys-store-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a directory");
    let sqlite_rate = futures_lite::future::block_on(async {
        let mut store = SqliteStore::open(&dir.join("history.sqlite")).expect("SQLite");
        store.migrate().await.expect("migrate");
        batched(&mut store, &batches(0, rows, batch_rows)).await
    });
    let _ = std::fs::remove_dir_all(&dir);
    println!("postgres one INSERT per row: {insert_rate:.0} rows/s");
    println!("postgres COPY batches:       {copy_rate:.0} rows/s");
    println!("ratio COPY / INSERT:         {:.1}", copy_rate / insert_rate);
    println!("sqlite batches:              {sqlite_rate:.0} rows/s");
}
