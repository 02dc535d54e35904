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

fn args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["--admin-token", ADMIN_TOKEN, "--demo-user", "false"];
    args.extend_from_slice(&common::LIMITS_OFF);
    args.extend_from_slice(extra);
    args
}

fn start_in(dir: &Path, shards: usize, extra: &[&str]) -> Server {
    Server::start_in(dir, shards, &args(extra))
}

/// A server on a data directory of its own, removed with it.
fn start_fresh(shards: usize, extra: &[&str]) -> Server {
    Server::start(shards, &args(extra))
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

/// Every id of `user`'s rows in BTCUSDT from `path` (`allOrders` with
/// `orderId`, `myTrades` with `fromId`), page by page from id 0 with
/// `limit`: each id once, in order.
fn all_ids(c: &mut Client, user: &User, path: &str, from: &str, id: &str, limit: usize) -> Vec<u64> {
    let mut ids: Vec<u64> = Vec::new();
    let mut next = 0;
    loop {
        let q = format!("symbol=BTCUSDT&{from}={next}&limit={limit}");
        let r = signed(c, user, "GET", path, &q);
        assert_eq!(r.status, 200, "{}", r.body_text());
        let page: Vec<u64> = r
            .json()
            .as_array()
            .expect("an array")
            .iter()
            .map(|row| row[id].as_u64().expect("an id"))
            .collect();
        ids.extend(&page);
        if page.len() < limit {
            return ids;
        }
        next = page[page.len() - 1] + 1;
    }
}

fn all_order_ids(c: &mut Client, user: &User, limit: usize) -> Vec<u64> {
    all_ids(c, user, "/api/v3/allOrders", "orderId", "orderId", limit)
}

fn all_trade_ids(c: &mut Client, user: &User, limit: usize) -> Vec<u64> {
    all_ids(c, user, "/api/v3/myTrades", "fromId", "id", limit)
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
    let newest: Vec<u64> = r
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["orderId"].as_u64().unwrap())
        .collect();
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

/// Waits until every shard's backlog is empty and nothing dropped for
/// room still waits in the journal.
fn drained(server: &Server, limit: Duration) -> bool {
    eventually(limit, || {
        metric(server, "tradsys_history_backlog_rows") == 0.0
            && metric(server, "tradsys_history_backlog_over_max") == 0.0
    })
}

#[test]
fn sqlite_keeps_every_order_and_trade_queryable() {
    let server = start_fresh(2, &["--durability", "batch"]);
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
    // Every batch is timed, by statement kind, as a histogram.
    let metrics = server.metrics();
    let batches: f64 = (0..2)
        .filter_map(|shard| {
            let labels = [("shard", shard.to_string()), ("kind", "write".to_string())];
            let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
            metrics.value("tradsys_history_query_duration_seconds_count", &labels)
        })
        .sum();
    assert!(batches >= metric(&server, "tradsys_history_batches_written_total"));
    assert_eq!(
        metrics
            .types
            .get("tradsys_history_query_duration_seconds")
            .map(String::as_str),
        Some("histogram")
    );
}

#[test]
fn postgres_keeps_every_order_and_trade_queryable() {
    let pg = PgServer::start();
    let url = pg.url();
    let server = start_fresh(2, &["--durability", "batch", "--postgres", &url]);
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
    // Shard 0 made the partitions of this month and the next three.
    let month = |ahead: u64| {
        let days = common::account::now_ms() / 86_400_000;
        let (y, m) = civil_month(days);
        let total = y * 12 + (m - 1) + ahead;
        format!("trades_{}{:02}", total / 12, total % 12 + 1)
    };
    for ahead in 0..4 {
        let sql = format!("SELECT count(*) FROM pg_class WHERE relname = '{}'", month(ahead));
        assert_eq!(count(&sql), "1", "{}", month(ahead));
    }
}

/// The (year, month) of a day since the Unix epoch (Howard Hinnant's
/// civil-from-days).
fn civil_month(days: u64) -> (u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m)
}

#[test]
fn a_new_data_directory_refuses_a_database_with_another_history() {
    let pg = PgServer::start();
    let url = pg.url();
    let mut server = start_fresh(1, &["--postgres", &url]);
    let user = create_user(&server, "first", &FUNDS);
    place_and_cancel(&server, &user, 3);
    assert!(drained(&server, Duration::from_secs(30)));
    server.terminate();
    let dir = temp_data_dir();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tradsys"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--shards",
            "1",
            "--postgres",
            &url,
            "--data-dir",
        ])
        .arg(&dir)
        .args(["--markets", concat!(env!("CARGO_MANIFEST_DIR"), "/shards/markets.toml")])
        .output()
        .expect("tradsys runs");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("it already holds the history of another data directory (shard 0 at generation 1"),
        "{stderr}"
    );
}

/// Orders the load thread places per second at most (each canceled at
/// once): a steady flow, the same on a fast build and a slow one.
const LOAD_ORDERS_PER_S: u64 = 1000;

/// Places orders one after another, at most `LOAD_ORDERS_PER_S`, until
/// `stop`; returns the ids of those acknowledged and the refusals.
fn order_load(
    server_addr: std::net::SocketAddr,
    user: User,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<(Vec<u64>, Vec<String>)> {
    std::thread::spawn(move || {
        let mut c = Client::connect(server_addr);
        let mut ids = Vec::new();
        let mut errors = Vec::new();
        let mut i = 0u64;
        let started = std::time::Instant::now();
        while !stop.load(std::sync::atomic::Ordering::Acquire) {
            // Pacing, not waiting for anything: order i goes at i ms.
            let due = started + Duration::from_micros(i * 1_000_000 / LOAD_ORDERS_PER_S);
            if let Some(ahead) = due.checked_duration_since(std::time::Instant::now()) {
                std::thread::sleep(ahead);
            }
            let q = format!(
                "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.001&price={}",
                20_000 + i % 100
            );
            let r = signed(&mut c, &user, "POST", "/api/v3/order", &q);
            if r.status == 200 {
                let id = r.json()["orderId"].as_u64().expect("orderId");
                let q = format!("symbol=BTCUSDT&orderId={id}");
                let canceled = signed(&mut c, &user, "DELETE", "/api/v3/order", &q);
                if canceled.status != 200 {
                    errors.push(canceled.body_text());
                }
                ids.push(id);
            } else {
                errors.push(r.body_text());
            }
            i += 1;
        }
        (ids, errors)
    })
}

#[test]
fn postgres_down_for_20_s_under_load_loses_nothing() {
    let mut pg = PgServer::start();
    let url = pg.url();
    let server = start_fresh(
        2,
        &[
            "--durability",
            "batch",
            "--postgres",
            &url,
            "--history-call-timeout-ms",
            "1000",
        ],
    );
    let user = create_user(&server, "steady", &FUNDS);
    let early = place_and_cancel(&server, &user, 150);
    assert!(drained(&server, Duration::from_secs(30)));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = order_load(
        server.addr,
        User {
            id: user.id,
            key: user.key.clone(),
            signer: user.signer.clone(),
        },
        stop.clone(),
    );
    assert!(eventually(Duration::from_secs(10), || metric(
        &server,
        "tradsys_history_rows_written_total"
    ) > 400.0));
    pg.kill9();
    let outage = std::time::Instant::now();
    // While the store is down: the backlog grows, older history answers a
    // clear error at once, a recent order is still found, the breaker opens.
    assert!(eventually(Duration::from_secs(10), || metric(
        &server,
        "tradsys_history_backlog_rows"
    ) > 100.0));
    let mut c = server.connect();
    let q = format!("symbol=BTCUSDT&orderId={}", early[0]);
    let asked = std::time::Instant::now();
    let old = signed(&mut c, &user, "GET", "/api/v3/order", &q);
    assert_eq!(old.status, 503, "{}", old.body_text());
    assert_eq!(old.error().0, -1001);
    assert!(
        old.error().1.starts_with("History store unavailable"),
        "{}",
        old.body_text()
    );
    assert!(asked.elapsed() < Duration::from_secs(10));
    let r = signed(
        &mut c,
        &user,
        "GET",
        "/api/v3/allOrders",
        "symbol=BTCUSDT&orderId=0&limit=10",
    );
    assert_eq!((r.status, r.error().0), (503, -1001));
    assert!(eventually(Duration::from_secs(10), || metric(
        &server,
        "tradsys_history_breaker_transitions_total"
    ) > 0.0));
    while outage.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(200));
    }
    let backlog = metric(&server, "tradsys_history_backlog_rows");
    assert!(backlog > 1000.0, "backlog {backlog}");
    pg.start_again();
    let restarted = std::time::Instant::now();
    stop.store(true, std::sync::atomic::Ordering::Release);
    let (ids, errors) = load.join().expect("load thread");
    assert_eq!(
        (errors.len(), errors.first()),
        (0, None),
        "order entry errors while the store was down"
    );
    assert!(
        drained(&server, Duration::from_secs(30)),
        "backlog drained within 30 s of the restart"
    );
    println!(
        "{} orders during the outage; backlog peaked over {backlog} rows; drained {:.1} s after the restart",
        ids.len(),
        restarted.elapsed().as_secs_f64()
    );
    let count = |sql: &str| pg.psql(sql).trim().to_string();
    let orders = (early.len() + ids.len()).to_string();
    assert_eq!(count("SELECT count(*) FROM orders"), orders);
    assert_eq!(count("SELECT count(*) FROM orders WHERE status = 'CANCELED'"), orders);
    // Every order: one NEW and one CANCELED event, never twice.
    assert_eq!(
        count("SELECT count(*) FROM order_events"),
        (2 * (early.len() + ids.len())).to_string()
    );
    assert_eq!(
        count("SELECT count(*) FROM (SELECT order_id, status FROM order_events GROUP BY 1, 2 HAVING count(*) > 1) x"),
        "0"
    );
    check_all_orders(&server, &user, &early, &ids);
}

/// allOrders pages hold `early` then `later`, each id once.
fn check_all_orders(server: &Server, user: &User, early: &[u64], later: &[u64]) {
    let mut c = server.connect();
    let mut expected = early.to_vec();
    expected.extend(later);
    assert_eq!(all_order_ids(&mut c, user, 1000), expected);
}

/// `kill -9` of tradsys while rows wait for the store, again and again:
/// after the last restart the store has every acknowledged order and every
/// trade side exactly once, and the ledger of every trade balances.
/// The trades' ledger, summed per (asset, reference) over every shard:
/// how many sums are not zero.
const UNBALANCED_TRADES: &str = "SELECT asset, reference, sum(delta) FROM ledger WHERE cause IN ('TRADE', 'FEE') \
     GROUP BY asset, reference";

fn crash_cycles(
    extra: &[&str],
    cycles: usize,
    count: impl Fn(&Server, &str) -> i64,
    unbalanced: impl Fn(&Server) -> usize,
) {
    let dir = temp_data_dir();
    let mut args = vec!["--durability", "fsync"];
    args.extend_from_slice(extra);
    let mut server = start_in(&dir, 2, &args);
    let seller = create_user(&server, "seller", &FUNDS);
    let buyer = create_user(&server, "buyer", &FUNDS);
    let mut acknowledged = 0;
    let mut traded = 0;
    for cycle in 0..cycles {
        let mut c = server.connect();
        for i in 0..20 {
            let price = format!("{}", 30_000 + (cycle * 20 + i) % 13);
            order(&mut c, &seller, "SELL", "0.01", &price);
            let bought = order(&mut c, &buyer, "BUY", "0.01", &price);
            assert_eq!(bought["status"], "FILLED");
            acknowledged += 2;
            traded += 1;
        }
        // No wait: rows of the last orders are still on their way.
        server.kill9();
        server = start_in(&dir, 2, &args);
    }
    assert!(drained(&server, Duration::from_secs(60)));
    assert_eq!(count(&server, "SELECT count(*) FROM orders"), acknowledged);
    assert_eq!(count(&server, "SELECT count(*) FROM trades"), 2 * traded);
    assert_eq!(
        count(&server, "SELECT count(*) FROM order_events WHERE status = 'NEW'"),
        acknowledged / 2,
        "one NEW event per resting sell order"
    );
    assert_eq!(
        count(&server, "SELECT count(*) FROM ledger WHERE cause = 'TRADE'"),
        4 * traded,
        "each trade side: what it paid and what it got, once"
    );
    assert_eq!(unbalanced(&server), 0, "every trade's ledger sums to zero per asset");
    drop(server);
}

/// `UNBALANCED_TRADES` over the shards' SQLite files: the two sides of a
/// trade are in the files of their users' shards.
fn sqlite_unbalanced(server: &Server) -> usize {
    let mut sums: std::collections::HashMap<(String, i64), i64> = std::collections::HashMap::new();
    for shard in 0..2 {
        let path = server.data_dir.join(format!("shard-{shard}/history.sqlite"));
        let db = rusqlite::Connection::open(&path).expect("history file");
        let mut statement = db.prepare(UNBALANCED_TRADES).expect("ledger query");
        let rows = statement
            .query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
            })
            .expect("ledger rows");
        for row in rows {
            let (asset, reference, sum) = row.expect("a ledger row");
            *sums.entry((asset, reference)).or_default() += sum;
        }
    }
    sums.values().filter(|sum| **sum != 0).count()
}

/// The sum of `sql` (a count) over the shards' SQLite files.
fn sqlite_count(server: &Server, sql: &str) -> i64 {
    (0..2)
        .map(|shard| {
            let path = server.data_dir.join(format!("shard-{shard}/history.sqlite"));
            let db = rusqlite::Connection::open(&path).expect("history file");
            db.query_row(sql, [], |r| r.get::<_, i64>(0)).expect(sql)
        })
        .sum()
}

#[test]
fn sqlite_survives_kill_9_during_write_behind() {
    crash_cycles(&[], 20, sqlite_count, sqlite_unbalanced);
}

#[test]
fn postgres_survives_kill_9_of_tradsys_during_write_behind() {
    let pg = PgServer::start();
    let url = pg.url();
    let count = |sql: &str| -> i64 { pg.psql(sql).trim().parse().expect("a count") };
    crash_cycles(
        &["--postgres", &url],
        20,
        |_, sql| count(sql),
        |_| {
            count(&format!(
                "SELECT count(*) FROM ({UNBALANCED_TRADES} HAVING sum(delta) <> 0) x"
            )) as usize
        },
    );
}

#[test]
fn a_read_after_a_write_sees_it_whatever_the_replica_lag() {
    let pg = PgServer::start();
    let replica = pg.start_replica();
    let (url, replica_url) = (pg.url(), replica.url());
    let server = start_fresh(
        2,
        &[
            "--durability",
            "batch",
            "--postgres",
            &url,
            "--postgres-replica",
            &replica_url,
        ],
    );
    let user = create_user(&server, "reader", &FUNDS);
    let first = place_and_cancel(&server, &user, 120);
    assert!(drained(&server, Duration::from_secs(30)));
    assert_eq!(replica.psql("SELECT pg_is_in_recovery()").trim(), "t");
    // The replica replays the first orders (streaming takes its time on a
    // busy machine), then stops replaying.
    assert!(eventually(Duration::from_secs(30), || {
        replica.psql("SELECT count(*) FROM orders").trim() == "120"
    }));
    replica.psql("SELECT pg_wal_replay_pause()");
    let later = place_and_cancel(&server, &user, 120);
    assert!(drained(&server, Duration::from_secs(30)));
    // The replica has not replayed the later orders: reads must not miss them.
    let on_replica = replica.psql("SELECT count(*) FROM orders");
    assert_eq!(on_replica.trim(), "120");
    let lag = |shard: &str| {
        let labels = [("shard", shard), ("replica", "0")];
        server
            .metrics()
            .value("tradsys_history_replica_lag_bytes", &labels)
            .unwrap_or(0.0)
    };
    assert!(eventually(Duration::from_secs(10), || lag("0") > 0.0 || lag("1") > 0.0));
    check_all_orders(&server, &user, &first, &later);
    let mut c = server.connect();
    assert_eq!(query_order(&mut c, &user, later[0])["status"], "CANCELED");
    replica.psql("SELECT pg_wal_replay_resume()");
    assert!(eventually(Duration::from_secs(30), || replica
        .psql("SELECT count(*) FROM orders")
        .trim()
        == "240"));
    check_all_orders(&server, &user, &first, &later);
}

/// Past `history_backlog_bytes_max` (PostgreSQL down, orders going on)
/// the shard keeps trading and drops rows from memory; once PostgreSQL is
/// back, the rows come back from the journal, though snapshots ran all
/// along: every order is in the store exactly once.
#[test]
fn an_overflowed_backlog_is_caught_up_from_the_journal() {
    let mut pg = PgServer::start();
    let url = pg.url();
    let server = start_fresh(
        2,
        &[
            "--durability",
            "batch",
            "--postgres",
            &url,
            "--history-backlog-bytes-max",
            "65536",
            "--history-call-timeout-ms",
            "1000",
            "--snapshot-records",
            "1000",
            "--snapshot-interval-s",
            "1",
        ],
    );
    let user = create_user(&server, "overflow", &FUNDS);
    let early = place_and_cancel(&server, &user, 50);
    assert!(drained(&server, Duration::from_secs(30)));
    pg.kill9();
    let during = place_and_cancel(&server, &user, 1500);
    assert!(metric(&server, "tradsys_history_backlog_over_max") >= 1.0);
    assert!(metric(&server, "tradsys_history_rows_dropped_total") > 0.0);
    // Reads that need the store say so; order entry went on (above).
    let mut c = server.connect();
    let r = signed(
        &mut c,
        &user,
        "GET",
        "/api/v3/allOrders",
        "symbol=BTCUSDT&orderId=0&limit=10",
    );
    assert_eq!((r.status, r.error().0), (503, -1001), "{}", r.body_text());
    pg.start_again();
    assert!(
        eventually(Duration::from_secs(60), || {
            metric(&server, "tradsys_history_backlog_over_max") == 0.0
                && metric(&server, "tradsys_history_backlog_rows") == 0.0
        }),
        "caught up"
    );
    let later = place_and_cancel(&server, &user, 20);
    assert!(drained(&server, Duration::from_secs(30)));
    let mut all = during.clone();
    all.extend(&later);
    check_all_orders(&server, &user, &early, &all);
    let count = |sql: &str| pg.psql(sql).trim().to_string();
    let orders = (early.len() + during.len() + later.len()).to_string();
    assert_eq!(count("SELECT count(*) FROM orders WHERE status = 'CANCELED'"), orders);
    assert_eq!(
        count("SELECT count(*) FROM order_events"),
        (2 * (early.len() + during.len() + later.len())).to_string()
    );
}

/// A decimal of the API ("30000.00000000") in units of 10⁻⁸.
fn units(text: &str) -> i64 {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let fraction = format!("{fraction:0<8}");
    whole.parse::<i64>().expect("whole") * 100_000_000 + fraction[..8].parse::<i64>().expect("fraction")
}

fn decimal(units: i64) -> String {
    format!("{}.{:08}", units / 100_000_000, units % 100_000_000)
}

/// The 1s klines of the market's tape (`/api/v3/trades`), as the API
/// prints them: what memory made before its ring dropped them.
fn one_second_klines(server: &Server) -> Vec<Value> {
    let r = server.get("/api/v3/trades?symbol=BTCUSDT&limit=1000");
    assert_eq!(r.status, 200, "{}", r.body_text());
    let mut candles: Vec<(u64, [i64; 9])> = Vec::new();
    for t in r.json().as_array().expect("trades") {
        let time = t["time"].as_u64().expect("time");
        let (price, qty, quote) = (
            units(t["price"].as_str().expect("price")),
            units(t["qty"].as_str().expect("qty")),
            units(t["quoteQty"].as_str().expect("quoteQty")),
        );
        let taker_buy = !t["isBuyerMaker"].as_bool().expect("isBuyerMaker");
        let open_time = time - time % 1000;
        match candles.last_mut() {
            Some((open, c)) if *open == open_time => {
                c[1] = c[1].max(price);
                c[2] = c[2].min(price);
                c[3] = price;
                c[4] += qty;
                c[5] += quote;
                c[6] += 1;
                c[7] += if taker_buy { qty } else { 0 };
                c[8] += if taker_buy { quote } else { 0 };
            }
            _ => {
                let (base, quote_taken) = if taker_buy { (qty, quote) } else { (0, 0) };
                candles.push((
                    open_time,
                    [price, price, price, price, qty, quote, 1, base, quote_taken],
                ));
            }
        }
    }
    candles
        .into_iter()
        .map(|(open, c)| {
            serde_json::json!([
                open,
                decimal(c[0]),
                decimal(c[1]),
                decimal(c[2]),
                decimal(c[3]),
                decimal(c[4]),
                open + 999,
                decimal(c[5]),
                c[6],
                decimal(c[7]),
                decimal(c[8]),
                "0"
            ])
        })
        .collect()
}

fn klines(server: &Server, path: &str, query: &str) -> Vec<Value> {
    let r = server.get(&format!("{path}?symbol=BTCUSDT&interval=1s&{query}"));
    assert_eq!(r.status, 200, "{query}: {}", r.body_text());
    r.json().as_array().expect("klines").clone()
}

/// Trades in seven different seconds by users on both shards, with
/// memory keeping three candles per interval: every window of 1s klines
/// equals the candles of the tape, the older part rebuilt from the store
/// (backlog and engine alike), and a second read of the older part comes
/// from the cache.
fn older_klines_come_from_the_store(server: &Server) {
    let users: Vec<User> = (0..4).map(|i| create_user(server, &format!("k{i}"), &FUNDS)).collect();
    let mut c = server.connect();
    for second in 0..7 {
        // Into a second of its own.
        let now = common::account::now_ms();
        std::thread::sleep(Duration::from_millis(1_005 - now % 1_000));
        for (round, price) in [(0, 30_000 + second * 10), (1, 29_990 + second * 7), (2, 30_005)] {
            let (seller, buyer) = (&users[(second + round) % 4], &users[(second + round + 1) % 4]);
            let qty = format!("0.0{}", round + 1);
            let (maker, taker, taker_side) = if round % 2 == 0 {
                (seller, buyer, "BUY")
            } else {
                (buyer, seller, "SELL")
            };
            let maker_side = if taker_side == "BUY" { "SELL" } else { "BUY" };
            order(&mut c, maker, maker_side, &qty, &price.to_string());
            let taken = order(&mut c, taker, taker_side, &qty, &price.to_string());
            assert_eq!(taken["status"], "FILLED", "{taken}");
        }
    }
    let expected = one_second_klines(server);
    assert!(expected.len() >= 7, "{expected:?}");
    let n = expected.len();
    let open = |i: usize| expected[i][0].as_u64().expect("open time");
    // Memory alone holds the newest three.
    assert_eq!(klines(server, "/api/v3/klines", "limit=3"), expected[n - 3..]);
    let fills = || {
        let metrics = server.metrics();
        (0..2)
            .filter_map(|shard| {
                let shard = shard.to_string();
                metrics.value("tradsys_cache_fills_total", &[("shard", &shard), ("level", "l1")])
            })
            .sum::<f64>()
    };
    let before = fills();
    assert_eq!(klines(server, "/api/v3/klines", "limit=1000"), expected);
    let filled = fills();
    assert!(filled > before, "{before} {filled}");
    // The same window again: the older part from the cache.
    assert_eq!(klines(server, "/api/v3/uiKlines", "limit=1000"), expected);
    assert_eq!(fills(), filled);
    assert_eq!(klines(server, "/api/v3/klines", "startTime=0&limit=2"), expected[..2]);
    let middle = format!("startTime={}&endTime={}", open(1), open(n - 2));
    assert_eq!(klines(server, "/api/v3/klines", &middle), expected[1..n - 1]);
    let before_end = format!("endTime={}&limit=2", open(2));
    assert_eq!(klines(server, "/api/v3/klines", &before_end), expected[1..3]);
    let empty = format!("startTime={}&endTime={}", open(0) - 5_000, open(0) - 1);
    assert_eq!(klines(server, "/api/v3/klines", &empty), Vec::<Value>::new());
}

/// After a restart (rings recovered, caches empty), the same klines
/// from the store alone.
fn after_restart(mut server: Server, dir: &Path, extra: &[&str]) {
    let expected = one_second_klines(&server);
    assert!(drained(&server, Duration::from_secs(30)));
    assert!(server.terminate().success());
    drop(server);
    let server = start_in(dir, 2, extra);
    assert_eq!(klines(&server, "/api/v3/klines", "limit=1000"), expected);
    assert_eq!(
        klines(&server, "/api/v3/klines", "limit=3"),
        expected[expected.len() - 3..]
    );
}

#[test]
fn sqlite_rebuilds_older_klines_from_the_store() {
    let extra = ["--klines-kept-per-interval-max", "3"];
    let dir = temp_data_dir();
    let server = start_in(&dir, 2, &extra);
    older_klines_come_from_the_store(&server);
    after_restart(server, &dir, &extra);
}

#[test]
fn postgres_rebuilds_older_klines_from_the_store() {
    let pg = PgServer::start();
    let url = pg.url();
    let extra = ["--klines-kept-per-interval-max", "3", "--postgres", &url];
    let dir = temp_data_dir();
    let server = start_in(&dir, 2, &extra);
    older_klines_come_from_the_store(&server);
    after_restart(server, &dir, &extra);
}

/// A cache counter of level L1 summed over two shards.
fn l1(server: &Server, name: &str) -> f64 {
    let metrics = server.metrics();
    (0..2)
        .filter_map(|shard| metrics.value(name, &[("shard", &shard.to_string()), ("level", "l1")]))
        .sum()
}

/// A myTrades page is read from the store once and then from the cache,
/// until the user's next trade in the market names a new set of trades;
/// every answer equals the one without a cache.
#[test]
fn my_trades_pages_come_from_the_cache_until_the_next_trade() {
    let server = start_fresh(2, &[]);
    let seller = create_user(&server, "seller", &FUNDS);
    let buyer = create_user(&server, "buyer", &FUNDS);
    trade(&server, &seller, &buyer, 5);
    let mut c = server.connect();
    let page = |c: &mut Client, query: &str| {
        let r = signed(c, &buyer, "GET", "/api/v3/myTrades", &format!("symbol=BTCUSDT&{query}"));
        assert_eq!(r.status, 200, "{}", r.body_text());
        r.json()
    };
    let (hits, fills) = (
        l1(&server, "tradsys_cache_hits_total"),
        l1(&server, "tradsys_cache_fills_total"),
    );
    let newest = page(&mut c, "limit=3");
    let ids = |page: &Value| -> Vec<u64> {
        page.as_array()
            .expect("a page")
            .iter()
            .map(|t| t["id"].as_u64().expect("id"))
            .collect()
    };
    assert_eq!(ids(&newest), [3, 4, 5]);
    assert_eq!(l1(&server, "tradsys_cache_fills_total"), fills + 1.0);
    // The same page again: from L1.
    assert_eq!(page(&mut c, "limit=3"), newest);
    assert_eq!(l1(&server, "tradsys_cache_hits_total"), hits + 1.0);
    assert_eq!(l1(&server, "tradsys_cache_fills_total"), fills + 1.0);
    let oldest = page(&mut c, "fromId=0&limit=2");
    assert_eq!(ids(&oldest), [1, 2]);
    // A new trade: the newest page is read again and shows it.
    trade(&server, &seller, &buyer, 1);
    assert_eq!(ids(&page(&mut c, "limit=3")), [4, 5, 6]);
    assert_eq!(l1(&server, "tradsys_cache_fills_total"), fills + 3.0);
    assert_eq!(page(&mut c, "fromId=0&limit=2"), oldest);
    assert_eq!(l1(&server, "tradsys_cache_hits_total"), hits + 1.0);
}
