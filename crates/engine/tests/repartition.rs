//! Repartition: random operations on three account machines, then the users
//! moved to 1, 2 and 5 machines. Every per-user query the server answers
//! (balances, open orders, an order by id or clientOrderId, allOrders and
//! myTrades with their filters and limits) must give the same result before
//! and after; invariants and conservation must hold; and the repartitioned
//! exchange must then answer further random operations exactly as the
//! original three machines do.

mod common;

use common::ops::Driver;
use common::{limit, specs};
use tradsys_engine::account::{repartition, Accounts, Balance, OrderRef};
use tradsys_engine::book::{Book, BookCapacity};
use tradsys_engine::driver::{Exchange, Output};
use tradsys_engine::num::{Amount, UNIT};
use tradsys_engine::order::{AssetId, ClientOrderId, MarketId, OrderView, Side, TimeInForce, UserTrade};
use tradsys_engine::EngineError;

const USERS_COUNT: u64 = 40;

fn capacity() -> BookCapacity {
    BookCapacity {
        orders_max: 4096,
        levels_max: 256,
    }
}

/// A copy of every machine, through their snapshots.
fn copy(exchange: &Exchange) -> (Vec<Accounts>, Vec<Book>) {
    let accounts = exchange.accounts.iter().map(|a| {
        let bytes = a.to_snapshot_bytes().unwrap();
        Accounts::from_snapshot_bytes(&bytes).unwrap()
    });
    let books = exchange.books.iter().map(|b| {
        let bytes = b.to_snapshot_bytes().unwrap();
        Book::from_snapshot_bytes(&bytes).unwrap()
    });
    (accounts.collect(), books.collect())
}

/// allOrders as the server pages it: orderId ≥ from, time within
/// [start, end], sorted by id, the last `limit`.
fn page_orders(mut views: Vec<OrderView>, from: u64, start: u64, end: u64, limit: usize) -> Vec<OrderView> {
    views.retain(|v| v.order_id >= from && v.time_ms >= start && v.time_ms <= end);
    views.sort_by_key(|v| v.order_id);
    let skip = views.len().saturating_sub(limit);
    views.split_off(skip)
}

/// myTrades as the server pages it: market, orderId, fromId, time window,
/// the last `limit`.
fn page_trades(trades: &[UserTrade], market: MarketId, order: Option<u64>, from: u64, limit: usize) -> Vec<UserTrade> {
    let mut kept: Vec<UserTrade> = trades
        .iter()
        .filter(|t| t.market == market && t.trade_id >= from && order.is_none_or(|id| t.order_id == id))
        .copied()
        .collect();
    let skip = kept.len().saturating_sub(limit);
    kept.split_off(skip)
}

/// Everything the server can ask an account machine about one user.
#[derive(Debug, PartialEq, Eq)]
struct UserView {
    balances: Option<Vec<Balance>>,
    balance: Vec<Balance>,
    open: Vec<Vec<OrderView>>,
    all: Vec<Vec<OrderView>>,
    by_id: Vec<Result<OrderView, EngineError>>,
    by_client: Vec<Result<OrderView, EngineError>>,
    trades: Vec<UserTrade>,
    pages: Vec<Vec<OrderView>>,
    trade_pages: Vec<Vec<UserTrade>>,
}

fn user_view(exchange: &Exchange, user: u64) -> UserView {
    let machine = exchange.account(user);
    let assets = machine.asset_names().len();
    let markets: Vec<MarketId> = (0..exchange.books.len()).map(|m| MarketId(m as u16)).collect();
    let mut view = UserView {
        balances: machine.balances(user).map(<[Balance]>::to_vec),
        balance: (0..assets).map(|a| machine.balance(user, AssetId(a as u16))).collect(),
        open: Vec::new(),
        all: Vec::new(),
        by_id: Vec::new(),
        by_client: Vec::new(),
        trades: machine.trades(user).copied().collect(),
        pages: Vec::new(),
        trade_pages: Vec::new(),
    };
    for &market in &markets {
        let mut open = Vec::new();
        machine.open_orders(user, market, &mut open);
        view.open.push(open);
        let all = machine.all_orders(user, market);
        for v in &all {
            view.by_id.push(machine.order(user, market, OrderRef::Id(v.order_id)));
        }
        view.by_id.push(machine.order(user, market, OrderRef::Id(u64::MAX)));
        for c in 0..7 {
            let client = ClientOrderId::new(&format!("c{c}")).unwrap();
            view.by_client
                .push(machine.order(user, market, OrderRef::Client(client)));
        }
        let middle = all.get(all.len() / 2).map_or(0, |v| v.order_id);
        let time = all.get(all.len() / 3).map_or(0, |v| v.time_ms);
        for (from, start, end, limit) in [
            (0, 0, u64::MAX, 500),
            (middle, 0, u64::MAX, 5),
            (0, time, time + 500, 1),
        ] {
            view.pages.push(page_orders(all.clone(), from, start, end, limit));
        }
        let some_order = view.trades.first().map(|t| t.order_id);
        let from = view.trades.get(view.trades.len() / 2).map_or(0, |t| t.trade_id);
        for (order, from, limit) in [(None, 0, 500), (some_order, 0, 500), (None, from, 3)] {
            view.trade_pages
                .push(page_trades(&view.trades, market, order, from, limit));
        }
        view.all.push(all);
    }
    view
}

/// Per asset: Σdeposits − Σwithdrawals over the machines equals Σ free +
/// locked + fees, and fills' net moves sum to zero.
fn assert_conserved(exchange: &Exchange) {
    exchange.check_invariants();
    for asset in 0..exchange.accounts[0].asset_names().len() {
        let asset = AssetId(asset as u16);
        let settled: i128 = exchange.accounts.iter().map(|a| a.settled_in(asset)).sum();
        assert_eq!(settled, 0);
        assert!(exchange.total_held(asset) >= 0);
    }
}

fn run(seed: u64, ops: u32, ops_after: u32) {
    let specs = specs();
    let mut original = Exchange::new(&specs, 3, capacity());
    let mut driver = Driver::new(seed, &specs);
    driver.gen.users = USERS_COUNT;
    let mut out = Output::with_capacity(256);
    for _ in 0..ops {
        driver.step(&mut original, &mut out);
    }
    let resting: usize = original.books.iter().map(Book::open_orders_count).sum();
    assert!(resting > 10, "the repartition must move open orders: {resting}");
    let before: Vec<UserView> = (1..=USERS_COUNT).map(|u| user_view(&original, u)).collect();
    let held: Vec<i128> = (0..3).map(|a| original.total_held(AssetId(a))).collect();
    for shards in [1, 2, 5, 3] {
        let (accounts, books) = copy(&original);
        let mut moved = Exchange::from_parts(repartition(accounts, shards), books);
        assert_eq!(moved.accounts.len(), shards as usize);
        assert_conserved(&moved);
        for user in 1..=USERS_COUNT {
            let on = moved.accounts.iter().filter(|a| a.balances(user).is_some()).count();
            assert!(on <= 1, "user {user} on {on} machines");
            let after = user_view(&moved, user);
            assert_eq!(
                after,
                before[user as usize - 1],
                "user {user} after repartition to {shards}"
            );
        }
        let held_after: Vec<i128> = (0..3).map(|a| moved.total_held(AssetId(a))).collect();
        assert_eq!(held_after, held, "Σ free + locked + fees per asset");

        let (accounts, books) = copy(&original);
        let mut reference = Exchange::from_parts(accounts, books);
        let mut replay = driver.clone();
        let mut again = driver.clone();
        let mut out_moved = Output::with_capacity(256);
        for i in 0..ops_after {
            let want = replay.step(&mut reference, &mut out);
            let got = again.step(&mut moved, &mut out_moved);
            assert_eq!(got, want, "seed {seed}: step {i} after repartition to {shards}");
            assert_conserved(&moved);
        }
        assert_eq!(
            (1..=USERS_COUNT).map(|u| user_view(&moved, u)).collect::<Vec<_>>(),
            (1..=USERS_COUNT).map(|u| user_view(&reference, u)).collect::<Vec<_>>()
        );
    }
}

#[test]
fn repartitioned_machines_answer_every_query_and_every_later_operation_alike() {
    run(41, 12_000, 3_000);
}

#[test]
fn repartition_with_another_seed() {
    run(42, 8_000, 2_000);
}

/// More history than one machine's rings hold, merged onto one machine:
/// the rings grow so that every user keeps every record a query saw.
#[test]
fn history_larger_than_one_ring_survives_a_merge() {
    const USERS: u64 = 900;
    const ROUNDS: u64 = 50;
    let specs = specs();
    let mut exchange = Exchange::new(&specs, 3, capacity());
    let (btc, usdt) = (AssetId(0), AssetId(1));
    for user in 1..=USERS {
        exchange.deposit(user, btc, Amount(1_000 * UNIT)).unwrap();
        exchange.deposit(user, usdt, Amount(1_000_000 * UNIT)).unwrap();
    }
    let mut out = Output::default();
    let mut id = 0;
    for _ in 0..ROUNDS {
        for seller in 1..=USERS {
            let buyer = seller % USERS + 1;
            for (user, side) in [(seller, Side::Sell), (buyer, Side::Buy)] {
                id += 1;
                out.clear();
                let request = limit(0, side, "100", "0.01", TimeInForce::Gtc);
                exchange.place(user, &request, id, id, &mut out).unwrap();
            }
        }
    }
    let before: Vec<UserView> = (1..=USERS).map(|u| user_view(&exchange, u)).collect();
    assert!(before.iter().all(|v| v.trades.len() == 100 && v.all[0].len() == 100));
    let (accounts, books) = copy(&exchange);
    let merged = Exchange::from_parts(repartition(accounts, 1), books);
    assert_conserved(&merged);
    for user in 1..=USERS {
        assert_eq!(user_view(&merged, user), before[user as usize - 1], "user {user}");
    }
}

#[test]
#[should_panic(expected = "a cancel-replace is in flight")]
fn repartition_refuses_a_cancel_replace_in_flight() {
    let specs = specs();
    let mut machines: Vec<Accounts> = (0..2).map(|s| Accounts::new(s, 2, &specs)).collect();
    let user = (1..).find(|&u| tradsys_engine::account::owner_of(u, 2) == 0).unwrap();
    machines[0].deposit(user, AssetId(1), Amount(1_000 * UNIT)).unwrap();
    let (mut to_book, mut events) = (Vec::new(), Vec::new());
    let request = limit(0, Side::Buy, "100", "1", TimeInForce::Gtc);
    machines[0].place(user, &request, 1, None, 1, &mut to_book).unwrap();
    let mode = tradsys_engine::order::CancelReplaceMode::AllowFailure;
    machines[0].cancel_replace(
        user,
        OrderRef::Id(1),
        mode,
        &request,
        2,
        None,
        2,
        &mut to_book,
        &mut events,
    );
    repartition(machines, 1);
}
