//! The whole history over HTTP, on both engines of the history store:
//! every order ever acknowledged stays queryable (GET order, allOrders,
//! myTrades, page by page across the memory/store seam, against the
//! orders the test placed), the store holds exactly one row per order and
//! per trade side, and both survive `kill -9` of tradsys and of
//! PostgreSQL. Every PostgreSQL is the test's own (`tradsys_pgtest`).

mod common;

use common::account::{create_user, signed, User};
use common::{eventually, temp_data_dir, Client, Server, ADMIN_TOKEN};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;
use tradsys_pgtest::PgServer;

fn start_in(dir: &Path, shards: usize, extra: &[&str]) -> Server {
    let mut args = vec![
        "--admin-token",
        ADMIN_TOKEN,
        "--demo-user",
        "false",
        "--orders-per-10s-max",
        "1000000",
        "--request-weight-per-minute-max",
        "100000000",
        "--raw-requests-per-5m-max",
        "100000000",
    ];
    args.extend_from_slice(extra);
    Server::start_in(dir, shards, &args)
}

const FUNDS: [(&str, &str); 3] = [("BTC", "1000"), ("USDT", "100000000"), ("ETH", "1000")];

fn order(c: &mut Client, user: &User, side: &str, qty: &str, price: &str) -> Value {
    let q = format!("symbol=BTCUSDT&side={side}&type=LIMIT&timeInForce=GTC&quantity={qty}&price={price}");
    let r = signed(c, user, "POST", "/api/v3/order", &q);
    assert_eq!(r.status, 200, "{}", r.body_text());
    r.json()
}

/// `count` resting orders of `user`, each canceled at once; their ids.
fn place_and_cancel(server: &Server, user: &User, count: usize) -> Vec<u64> {
    let mut c = server.connect();
    let mut ids = Vec::with_capacity(count);
    for i in 0..count {
        let placed = order(&mut c, user, "BUY", "0.001", &format!("{}", 20_000 + i % 50));
        let id = placed["orderId"].as_u64().expect("orderId");
        let q = format!("symbol=BTCUSDT&orderId={id}");
        let r = signed(&mut c, user, "DELETE", "/api/v3/order", &q);
        assert_eq!(r.status, 200, "{}", r.body_text());
        ids.push(id);
    }
    ids
}

/// `rounds` trades between a seller and a buyer; the seller's order ids.
fn trade(server: &Server, seller: &User, buyer: &User, rounds: usize) -> Vec<u64> {
    let mut c = server.connect();
    (0..rounds)
        .map(|i| {
            let price = format!("{}", 30_000 + i % 7);
            let sold = order(&mut c, seller, "SELL", "0.01", &price);
            let bought = order(&mut c, buyer, "BUY", "0.01", &price);
            assert_eq!(bought["status"], "FILLED", "{bought}");
            sold["orderId"].as_u64().expect("orderId")
        })
        .collect()
}

/// Every order of `user` in BTCUSDT, page by page from order id 0 with
/// `limit`: each id once, in order.
fn all_order_ids(c: &mut Client, user: &User, limit: usize) -> Vec<u64> {
    let mut ids: Vec<u64> = Vec::new();
    let mut from = 0;
    loop {
        let q = format!("symbol=BTCUSDT&orderId={from}&limit={limit}");
        let r = signed(c, user, "GET", "/api/v3/allOrders", &q);
        assert_eq!(r.status, 200, "{}", r.body_text());
        let page: Vec<u64> = r
            .json()
            .as_array()
            .expect("allOrders array")
            .iter()
            .map(|o| o["orderId"].as_u64().expect("orderId"))
            .collect();
        ids.extend(&page);
        if page.len() < limit {
            return ids;
        }
        from = page[page.len() - 1] + 1;
    }
}

/// Every trade id of `user` in BTCUSDT, page by page with `fromId`.
fn all_trade_ids(c: &mut Client, user: &User, limit: usize) -> Vec<u64> {
    let mut ids: Vec<u64> = Vec::new();
    let mut from = 0;
    loop {
        let q = format!("symbol=BTCUSDT&fromId={from}&limit={limit}");
        let r = signed(c, user, "GET", "/api/v3/myTrades", &q);
        assert_eq!(r.status, 200, "{}", r.body_text());
        let page: Vec<u64> = r
            .json()
            .as_array()
            .expect("myTrades array")
            .iter()
            .map(|t| t["id"].as_u64().expect("id"))
            .collect();
        ids.extend(&page);
        if page.len() < limit {
            return ids;
        }
        from = page[page.len() - 1] + 1;
    }
}

fn query_order(c: &mut Client, user: &User, id: u64) -> Value {
    let r = signed(c, user, "GET", "/api/v3/order", &format!("symbol=BTCUSDT&orderId={id}"));
    assert_eq!(r.status, 200, "order {id}: {}", r.body_text());
    r.json()
}

/// The checks every engine passes after a busy session: the first orders
/// are still there, every page holds what the test placed, once.
fn check_whole_history(server: &Server, user: &User, placed: &[u64], seller: &User, sold: &[u64]) {
    let mut c = server.connect();
    let first = query_order(&mut c, user, placed[0]);
    assert_eq!(first["status"], "CANCELED");
    assert_eq!(first["origQty"], "0.00100000");
    assert_eq!(first["price"], "20000.00000000");
    // Newest without a start: the last 500, oldest first.
    let r = signed(&mut c, user, "GET", "/api/v3/allOrders", "symbol=BTCUSDT");
    let newest: Vec<u64> = r.json().as_array().unwrap().iter().map(|o| o["orderId"].as_u64().unwrap()).collect();
    let expected = placed[placed.len() - 500.min(placed.len())..].to_vec();
    assert_eq!(
        (newest.len(), newest.first(), newest.last()),
        (expected.len(), expected.first(), expected.last())
    );
    assert_eq!(newest, expected);
    for limit in [7, 1000] {
        assert_eq!(all_order_ids(&mut c, user, limit), placed, "allOrders pages of {limit}");
    }
    let trades = all_trade_ids(&mut c, seller, 13);
    assert_eq!(trades.len(), sold.len());
    let mut unique = trades.clone();
    unique.dedup();
    assert_eq!(unique, trades, "trade ids once each, in order");
    // The trades of the first order, found by orderId.
    let q = format!("symbol=BTCUSDT&orderId={}", sold[0]);
    let r = signed(&mut c, seller, "GET", "/api/v3/myTrades", &q).json();
    assert_eq!(r.as_array().unwrap().len(), 1, "{r}");
    assert_eq!(r[0]["qty"], "0.01000000");
    assert_eq!(r[0]["isBuyer"], false);
}

fn metric(server: &Server, name: &str) -> f64 {
    let metrics = server.metrics();
    (0..8)
        .filter_map(|shard| metrics.value(name, &[("shard", &shard.to_string())]))
        .sum()
}

/// Waits until every shard's backlog is empty.
fn drained(server: &Server, limit: Duration) -> bool {
    eventually(limit, || metric(server, "tradsys_history_backlog_rows") == 0.0)
}

#[test]
fn sqlite_keeps_every_order_and_trade_queryable() {
    let server = start_in(&temp_data_dir(), 2, &["--durability", "batch"]);
    let user = create_user(&server, "busy", &FUNDS);
    let seller = create_user(&server, "seller", &FUNDS);
    let buyer = create_user(&server, "buyer", &FUNDS);
    let placed = place_and_cancel(&server, &user, 1200);
    let sold = trade(&server, &seller, &buyer, 150);
    check_whole_history(&server, &user, &placed, &seller, &sold);
    assert!(drained(&server, Duration::from_secs(30)));
    // And once the store has everything, the same answers.
    check_whole_history(&server, &user, &placed, &seller, &sold);
    // Exactly one row per order and per trade side in the shards' files.
    let mut orders = 0;
    let mut trades = 0;
    for shard in 0..2 {
        let path = server.data_dir.join(format!("shard-{shard}/history.sqlite"));
        let db = rusqlite::Connection::open(&path).expect("history file");
        let count = |sql: &str| db.query_row(sql, [], |r| r.get::<_, i64>(0)).expect(sql);
        orders += count("SELECT count(*) FROM orders");
        trades += count("SELECT count(*) FROM trades");
    }
    assert_eq!(orders, 1200 + 300);
    assert_eq!(trades, 300);
    assert_eq!(metric(&server, "tradsys_history_engine"), 2.0);
}

#[test]
fn postgres_keeps_every_order_and_trade_queryable() {
    let pg = PgServer::start();
    let url = pg.url();
    let server = start_in(&temp_data_dir(), 2, &["--durability", "batch", "--postgres", &url]);
    let user = create_user(&server, "busy", &FUNDS);
    let seller = create_user(&server, "seller", &FUNDS);
    let buyer = create_user(&server, "buyer", &FUNDS);
    let placed = place_and_cancel(&server, &user, 1200);
    let sold = trade(&server, &seller, &buyer, 150);
    check_whole_history(&server, &user, &placed, &seller, &sold);
    assert!(drained(&server, Duration::from_secs(30)));
    check_whole_history(&server, &user, &placed, &seller, &sold);
    let count = |sql: &str| pg.psql(sql).trim().to_string();
    assert_eq!(count("SELECT count(*) FROM orders"), "1500");
    assert_eq!(count("SELECT count(*) FROM trades"), "300");
    assert_eq!(count("SELECT count(*) FROM users"), "3");
    // The ledger balances: per asset, every trade's entries sum to zero.
    assert_eq!(
        count("SELECT count(*) FROM (SELECT asset, reference FROM ledger WHERE cause IN ('TRADE','FEE') GROUP BY asset, reference HAVING sum(delta) <> 0) x"),
        "0"
    );
    assert_eq!(metric(&server, "tradsys_history_engine"), 4.0);
}
