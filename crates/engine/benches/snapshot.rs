//! Snapshot benchmark: archive size and encode/decode time of a large state.
//!
//! Run: `cargo bench -p tradsys-engine --bench snapshot`. The state is one
//! market with `RESTING_ORDERS_COUNT` open orders (one book, spread over
//! `ACCOUNT_MACHINES_COUNT` account machines) after enough trades that every
//! machine's history rings are full: 8 machines × (65,536 finished orders +
//! 65,536 trades) = 1,048,576 history entries. Each figure is the fastest of
//! `REPEATS_COUNT` runs. "decode" is `rkyv::from_bytes` (validation and
//! deserialization); "restore" is `from_snapshot_bytes`, which also
//! reserves the machines' room and checks their invariants.

use std::time::{Duration, Instant};

use tradsys_engine::account::{Accounts, ORDERS_CLOSED_PER_MACHINE_MAX, TRADES_PER_MACHINE_MAX};
use tradsys_engine::book::{Book, BookCapacity};
use tradsys_engine::driver::{Exchange, Output};
use tradsys_engine::market::parse_markets;
use tradsys_engine::num::{Amount, Price, Qty, UNIT};
use tradsys_engine::order::{MarketId, OrderQty, OrderRequest, OrderType, Side, StpMode, TimeInForce};

const ACCOUNT_MACHINES_COUNT: u32 = 8;
const USERS_COUNT: u64 = 4000;
const RESTING_ORDERS_COUNT: u64 = 100_000;
/// Trades that fill every machine's rings with room to spare.
const TRADES_COUNT: u64 = 320_000;
const REPEATS_COUNT: u32 = 3;
const MID_TICKS: i64 = 1_000_000;

const MARKET: &str = r#"
[[market]]
symbol = "BTCUSDT"
base_asset = "BTC"
base_asset_precision = 8
quote_asset = "USDT"
quote_asset_precision = 8
tick_size = "0.01"
step_size = "0.00001"
min_price = "0.01"
max_price = "1000000"
min_qty = "0.00001"
max_qty = "9000"
min_notional = "0.00001"
max_notional = "9000000"
maker_commission = "0.001"
taker_commission = "0.001"
"#;

fn order(side: Side, ticks: i64) -> OrderRequest {
    OrderRequest {
        market: MarketId(0),
        side,
        kind: OrderType::Limit,
        time_in_force: Some(TimeInForce::Gtc),
        price: Some(Price(ticks * 1_000_000)),
        qty: OrderQty::Base(Qty(1_000)),
        stop_price: None,
        client_order_id: None,
        stp: StpMode::None,
        iceberg_qty: None,
        trailing_delta: None,
    }
}

fn build() -> Exchange {
    let specs = match parse_markets(MARKET) {
        Ok(specs) => specs,
        Err(e) => panic!("bench market: {e}"),
    };
    let capacity = BookCapacity {
        orders_max: 1 << 17,
        levels_max: 1 << 12,
    };
    let mut exchange = Exchange::new(&specs, ACCOUNT_MACHINES_COUNT, capacity);
    let (btc, usdt) = (exchange.asset_id("BTC").unwrap(), exchange.asset_id("USDT").unwrap());
    for user in 1..=USERS_COUNT {
        exchange.deposit(user, btc, Amount(1_000_000 * UNIT)).unwrap();
        exchange.deposit(user, usdt, Amount(1_000_000_000 * UNIT)).unwrap();
    }
    let mut out = Output::with_capacity(64);
    let mut id = 0;
    let mut place = |exchange: &mut Exchange, user: u64, request: &OrderRequest| {
        id += 1;
        out.clear();
        exchange.place(user, request, id, id, &mut out).unwrap();
    };
    for trade in 0..TRADES_COUNT {
        let seller = 1 + trade % USERS_COUNT;
        let buyer = 1 + (trade * 7 + 3) % USERS_COUNT;
        place(&mut exchange, seller, &order(Side::Sell, MID_TICKS));
        place(&mut exchange, buyer, &order(Side::Buy, MID_TICKS));
    }
    for n in 0..RESTING_ORDERS_COUNT {
        let user = 1 + n % USERS_COUNT;
        let offset = 1 + (n / 2 % 2000) as i64;
        let (side, ticks) = if n % 2 == 0 {
            (Side::Buy, MID_TICKS - offset)
        } else {
            (Side::Sell, MID_TICKS + offset)
        };
        place(&mut exchange, user, &order(side, ticks));
    }
    exchange.check_invariants();
    exchange
}

fn fastest<T>(mut run: impl FnMut() -> T) -> (Duration, T) {
    let mut best = Duration::MAX;
    let mut result = None;
    for _ in 0..REPEATS_COUNT {
        let start = Instant::now();
        let value = run();
        best = best.min(start.elapsed());
        result = Some(value);
    }
    match result {
        Some(value) => (best, value),
        None => unreachable!("REPEATS_COUNT > 0"),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let started = Instant::now();
    let exchange = build();
    let resting = exchange.books[0].open_orders_count();
    println!(
        "state built in {:.1} s: {resting} resting orders, {} account machines, history rings {} + {} per machine",
        started.elapsed().as_secs_f64(),
        ACCOUNT_MACHINES_COUNT,
        ORDERS_CLOSED_PER_MACHINE_MAX,
        TRADES_PER_MACHINE_MAX
    );

    let book = &exchange.books[0];
    let (encode, bytes) = fastest(|| book.to_snapshot_bytes().unwrap());
    let (decode, back) = fastest(|| rkyv::from_bytes::<Book, rkyv::rancor::Error>(&bytes).unwrap());
    assert_eq!(back.state_hash(), book.state_hash());
    let (restore, _) = fastest(|| Book::from_snapshot_bytes(&bytes).unwrap());
    println!(
        "book ({resting} orders): {} bytes, encode {:.1} ms, decode {:.1} ms, restore {:.1} ms",
        bytes.len(),
        ms(encode),
        ms(decode),
        ms(restore)
    );

    let (mut size, mut encode, mut decode, mut restore) = (0, Duration::ZERO, Duration::ZERO, Duration::ZERO);
    for machine in &exchange.accounts {
        let (e, bytes) = fastest(|| machine.to_snapshot_bytes().unwrap());
        let (d, back) = fastest(|| rkyv::from_bytes::<Accounts, rkyv::rancor::Error>(&bytes).unwrap());
        assert_eq!(back.state_hash(), machine.state_hash());
        let (r, _) = fastest(|| Accounts::from_snapshot_bytes(&bytes).unwrap());
        size += bytes.len();
        (encode, decode, restore) = (encode + e, decode + d, restore + r);
    }
    println!(
        "{ACCOUNT_MACHINES_COUNT} account machines ({resting} open orders, {} users, {} history entries): \
         {size} bytes, encode {:.1} ms, decode {:.1} ms, restore {:.1} ms",
        USERS_COUNT,
        ACCOUNT_MACHINES_COUNT as usize * (ORDERS_CLOSED_PER_MACHINE_MAX + TRADES_PER_MACHINE_MAX),
        ms(encode),
        ms(decode),
        ms(restore)
    );
}
