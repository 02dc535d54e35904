//! Writes a data directory as a 2-shard server would after N orders, for
//! the recovery benchmark (bench/recovery.sh times a real start on it).
//!
//! ```text
//! cargo bench --bench recovery -- --orders 10000000 --dir DIR [--snapshot-records N]
//! ```
//!
//! The orders go through the same `Trading` code as the server: two shards
//! in one thread, engine messages handed from one to the other at once, and
//! every record journaled through `journal::Writer` as a shard does. Each
//! order is a crossing limit order of one of 400 users per shard, on a
//! market of either shard, so about half the orders cross shards and every
//! pair trades. A commit seals an epoch every 1,000 orders. With
//! `--snapshot-records`, snapshot sets are taken as the snapshot thread
//! would (default: none, so that recovery replays everything).

use std::path::PathBuf;
use std::rc::Rc;
use std::time::Instant;
use tradsys::durability::recovery;
use tradsys::durability::snapshot;
use tradsys::journal::{self, Writer};
use tradsys::trading::record::{self, Record};
use tradsys::trading::{Output, Trading};
use tradsys_engine::market::{parse_markets, MarketSpec};
use tradsys_engine::num::{Amount, Price, Qty};
use tradsys_engine::order::{MarketId, OrderQty, OrderRequest, OrderType, Side, StpMode, TimeInForce, UserId};

const SHARDS: u32 = 2;
const USERS_PER_SHARD: usize = 400;
const ORDERS_PER_EPOCH: u64 = 1_000;
const SEGMENT_BYTES: u64 = 64 << 20;

struct Args {
    orders: u64,
    dir: PathBuf,
    snapshot_records: Option<u64>,
}

fn args() -> Args {
    let mut args = Args {
        orders: 1_000_000,
        dir: std::env::temp_dir().join("tradsys-recovery-bench"),
        snapshot_records: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--orders" => args.orders = value().parse().expect("--orders N"),
            "--dir" => args.dir = PathBuf::from(value()),
            "--snapshot-records" => args.snapshot_records = Some(value().parse().expect("--snapshot-records N")),
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    args
}

fn main() {
    let args = args();
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/shards/markets.toml")).expect("markets");
    let specs = parse_markets(&text).expect("markets parse");
    let _ = std::fs::remove_dir_all(&args.dir);
    let started = Instant::now();
    let recovered = recovery::recover(&args.dir, SHARDS, &specs).expect("a fresh data directory");
    let executor = glommio::LocalExecutorBuilder::default().make().expect("an executor");
    let records = executor.run(generate(&args, specs, recovered.images));
    let bytes: u64 = (0..SHARDS)
        .flat_map(|s| std::fs::read_dir(snapshot::generation_dir(&args.dir, s, 1)).expect("gen dir"))
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("journal-"))
        .map(|e| e.metadata().map_or(0, |m| m.len()))
        .sum();
    println!(
        "generated {} orders, {records} records, {:.1} MiB of segments (preallocated) in {:.1} s into {}",
        args.orders,
        bytes as f64 / (1 << 20) as f64,
        started.elapsed().as_secs_f64(),
        args.dir.display()
    );
}

async fn generate(args: &Args, specs: Vec<MarketSpec>, images: Vec<tradsys::durability::image::ShardImage>) -> u64 {
    let mut shards: Vec<Trading> = images
        .into_iter()
        .map(|image| Trading::from_image(image.trading, specs.clone()).expect("a fresh image"))
        .collect();
    let mut writers = Vec::new();
    for s in 0..SHARDS {
        let dir = snapshot::generation_dir(&args.dir, s, 1);
        let tail = journal::scan(&dir, 1, |_| std::ops::ControlFlow::Continue(())).expect("an empty journal");
        writers.push(Rc::new(
            Writer::open_with(&dir, &tail, SEGMENT_BYTES, false)
                .await
                .expect("a writer"),
        ));
    }
    let users = create_users(&mut shards);
    let markets = [market(&specs, "BTCUSDT"), market(&specs, "ETHBTC")];
    let mut epoch = 1;
    let mut encoded = rkyv::util::AlignedVec::new();
    let mut records = 0;
    let mut since_snapshot = 0;
    let mut pending: Vec<Vec<Record>> = (0..SHARDS).map(|_| Vec::new()).collect();
    for i in 0..args.orders {
        let pair = (i / 2) as usize;
        let market = markets[pair % 2];
        let (maker, taker) = (users[pair % users.len()], users[(pair * 7 + 1) % users.len()]);
        let (user, side) = if i % 2 == 0 {
            (maker, Side::Sell)
        } else {
            (taker, Side::Buy)
        };
        let request = limit(market, pair % 2 == 0, side, pair);
        let shard = tradsys_engine::account::owner_of(user, SHARDS) as usize;
        let now_ms = 1_800_000_000_000 + i / 10;
        drop(shards[shard].place(user, &request, None, now_ms));
        deliver(&mut shards, &mut pending);
        for (s, shard_records) in pending.iter_mut().enumerate() {
            for r in shard_records.drain(..) {
                record::encode(&r, &mut encoded);
                writers[s].append(epoch, &encoded);
                records += 1;
                since_snapshot += 1;
            }
        }
        if (i + 1) % ORDERS_PER_EPOCH == 0 || i + 1 == args.orders {
            for writer in &writers {
                writer.commit(epoch, i + 1 == args.orders).await.expect("a commit");
            }
            if args.snapshot_records.is_some_and(|n| since_snapshot >= n) {
                recovery::take_snapshot(&args.dir, 1, SHARDS, &specs, epoch).expect("a snapshot");
                since_snapshot = 0;
            }
            epoch += 1;
        }
    }
    records
}

/// Hands every engine message to its shard until none is left, keeps
/// each shard's records for the journal, and drops what only clients
/// would see.
fn deliver(shards: &mut [Trading], records: &mut [Vec<Record>]) {
    let mut out = Output::default();
    loop {
        let mut moved = false;
        for from in 0..shards.len() {
            shards[from].swap_output(&mut out);
            records[from].append(&mut out.records);
            for (to, seq, msg) in out.outgoing.drain(..) {
                shards[to as usize].receive(from as u32, seq, msg);
                moved = true;
            }
            out.clear();
        }
        if !moved {
            break;
        }
    }
}

fn create_users(shards: &mut [Trading]) -> Vec<UserId> {
    let mut users = Vec::new();
    for trading in shards.iter_mut() {
        for _ in 0..USERS_PER_SHARD {
            users.push(trading.allocate_user_id().expect("a single host allocates every id"));
        }
    }
    for &user in &users {
        let owner = tradsys_engine::account::owner_of(user, SHARDS) as usize;
        let trading = &mut shards[owner];
        trading.create_user(user, "bench").expect("a user");
        for (asset, units) in [("BTC", 1_000_000), ("USDT", 1_000_000_000), ("ETH", 10_000_000)] {
            let amount = Amount(units * 100_000_000);
            trading.transfer(user, asset, amount, true).expect("a deposit");
        }
    }
    users
}

fn market(specs: &[MarketSpec], symbol: &str) -> MarketId {
    MarketId(specs.iter().position(|s| s.symbol == symbol).expect("market") as u16)
}

/// A GTC limit order at a price that walks within a small band, so that
/// each SELL rests and the BUY after it takes it: 0.01 BTC at 30000.00 +
/// up to 0.49 USDT, or 1 ETH at 0.05000 + up to 0.00049 BTC.
fn limit(market: MarketId, btc_usdt: bool, side: Side, pair: usize) -> OrderRequest {
    let step = (pair % 50) as i64;
    let (price, qty) = if btc_usdt {
        ((3_000_000 + step) * 1_000_000, 1_000_000)
    } else {
        ((5_000 + step) * 1_000, 100_000_000)
    };
    OrderRequest {
        market,
        side,
        kind: OrderType::Limit,
        time_in_force: Some(TimeInForce::Gtc),
        price: Some(Price(price)),
        qty: OrderQty::Base(Qty(qty)),
        stop_price: None,
        client_order_id: None,
        stp: StpMode::None,
        iceberg_qty: None,
        trailing_delta: None,
    }
}
