//! Fills a history store with one user's trades, fast, for the export
//! benchmark (`bench/export.sh`): the rows go in as the server's writer
//! writes them (`HistoryStore::write`, batches of `BATCH_ROWS_MAX` rows
//! with their progress), so the server reads them as its own.
//!
//! `cargo bench --bench export -- --user U --rows N (--data-dir DIR --shards S | --postgres URL)`
//!
//! SQLite: into the owner's file, `DIR/shard-<owner_of(U, S)>/history.sqlite`,
//! which must exist (the server made it) and must not be in use by a
//! running server. PostgreSQL: into the database at URL (the monthly
//! partitions of the rows' times are made first). The batches carry the
//! progress of a shard number no server uses (`FILL_SHARD`), so a server
//! started on the data afterwards keeps its own progress.

use std::path::PathBuf;
use std::time::Instant;
use tradsys::store::postgres::PgStore;
use tradsys::store::rows::{Row, TradeRow};
use tradsys::store::sqlite::SqliteStore;
use tradsys::store::{Batch, HistoryStore, Progress, BATCH_ROWS_MAX};

/// The progress row the fill writes: no server has this many shards.
const FILL_SHARD: u32 = 100_000;
/// The first trade id; the trades of the benchmark are numbered from it.
const FIRST_TRADE_ID: u64 = 1;

struct Args {
    user: u64,
    rows: u64,
    data_dir: Option<PathBuf>,
    shards: u32,
    postgres: Option<String>,
}

fn usage() -> ! {
    eprintln!("usage: export --user U --rows N (--data-dir DIR --shards S | --postgres URL)");
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut args = Args {
        user: 0,
        rows: 1_000_000,
        data_dir: None,
        shards: 0,
        postgres: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        // `cargo bench` passes --bench to every bench binary.
        if flag == "--bench" {
            continue;
        }
        let value = it.next().unwrap_or_else(|| usage());
        let number = |v: &str| v.parse::<u64>().unwrap_or_else(|_| usage());
        match flag.as_str() {
            "--user" => args.user = number(&value),
            "--rows" => args.rows = number(&value),
            "--data-dir" => args.data_dir = Some(PathBuf::from(value)),
            "--shards" => args.shards = number(&value) as u32,
            "--postgres" => args.postgres = Some(value),
            _ => usage(),
        }
    }
    if args.user == 0 || (args.data_dir.is_some() == args.postgres.is_some()) {
        usage();
    }
    args
}

/// The user's trades `from..to`: one side each, trade `id` at
/// `start_ms + id`.
fn trades(user: u64, from: u64, to: u64, start_ms: u64) -> Vec<Row> {
    (from..to)
        .map(|id| {
            Row::Trade(TradeRow {
                user,
                symbol: "BTCUSDT".into(),
                trade_id: id,
                order_id: id / 2 + 1,
                price: 3_000_000_000_000 + (id % 1000) as i64 * 1_000_000,
                qty: 1_000_000,
                quote_qty: 30_000_000_000 + (id % 1000) as i64 * 10_000,
                commission: 1_000,
                commission_asset: "BTC".into(),
                is_buyer: id % 2 == 0,
                is_maker: id % 2 == 1,
                time_ms: start_ms + id,
            })
        })
        .collect()
}

/// The fill, batch by batch: a batch's rows are made only when it is
/// written, so the fill holds one batch.
async fn fill<S: HistoryStore>(store: &mut S, user: u64, rows: u64, start_ms: u64) -> f64 {
    let started = Instant::now();
    let batch_rows = BATCH_ROWS_MAX as u64;
    let end = FIRST_TRADE_ID + rows;
    let mut from = FIRST_TRADE_ID;
    let mut lsn = 1;
    while from < end {
        let to = (from + batch_rows).min(end);
        let batch = Batch {
            shard: FILL_SHARD,
            progress: Progress { generation: 1, lsn },
            rows: trades(user, from, to, start_ms),
        };
        assert!(store.write(&batch).await.expect("a batch"), "a new batch");
        from = to;
        lsn += 1;
    }
    started.elapsed().as_secs_f64()
}

fn main() {
    let args = parse_args();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock")
        .as_millis() as u64;
    // The rows end an hour ago, one per millisecond.
    let start_ms = now_ms - 3_600_000 - args.rows;
    let (engine, seconds) = match (&args.data_dir, &args.postgres) {
        (Some(dir), _) => {
            let owner = tradsys_engine::account::owner_of(args.user, args.shards);
            let path = tradsys::store::shard::sqlite_path(dir, owner);
            assert!(
                path.exists(),
                "{} does not exist: start the server on {} once",
                path.display(),
                dir.display()
            );
            let mut store = SqliteStore::open(&path).expect("SQLite");
            let seconds = futures_lite::future::block_on(async {
                store.migrate().await.expect("migrate");
                fill(&mut store, args.user, args.rows, start_ms).await
            });
            (format!("SQLite {}", path.display()), seconds)
        }
        (None, Some(url)) => {
            let url = url.clone();
            let (user, rows) = (args.user, args.rows);
            let seconds = glommio::LocalExecutorBuilder::default()
                .spawn(move || async move {
                    let mut store = PgStore::connect(&url).await.expect("PostgreSQL");
                    store.migrate().await.expect("migrate");
                    store.ensure_partitions(start_ms, 2).await.expect("partitions");
                    let seconds = fill(&mut store, user, rows, start_ms).await;
                    store.execute_analyze().await;
                    seconds
                })
                .expect("an executor")
                .join()
                .expect("the fill");
            ("PostgreSQL".to_string(), seconds)
        }
        (None, None) => usage(),
    };
    println!(
        "filled {} trades of user {} into {engine} in {seconds:.1} s ({:.0} rows/s)",
        args.rows,
        args.user,
        args.rows as f64 / seconds
    );
}
