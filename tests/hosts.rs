//! The shipped cluster map (shards/cluster.toml) on three hosts of the
//! test's own: network namespaces at 10.77.0.1, .2 and .3 (the map's
//! addresses) joined by a bridge at 10.77.0.254, where a Redis, a
//! PostgreSQL and the nginx front `tradsys cluster nginx` writes for the
//! map listen (`common::netns`). Users of each instance trade on its
//! markets through the front with exact fills and balances, every
//! instance answers for every user, users of each instance trade on the
//! markets of the others, and through faults (Redis stopped for 10 s, one
//! host cut off the network for 10 s, `kill -9` of one instance
//! mid-trading and its restart) every request is answered within its
//! timeout, nothing acknowledged is lost, every trade is applied on both
//! sides and the cluster's audit is whole; a subscriber on one instance to
//! a market of another gets every trade in order across the restart of
//! the third.

mod common;

use common::account::{admin, create_user_on, signed, User};
use common::netns::{Hosts, BRIDGE_IP, NETWORK};
use common::ws::Ws;
use common::{Client, Front, Server, ADMIN_TOKEN, LIMITS_OFF};
use serde_json::{json, Value};
use std::net::SocketAddr;
use tradsys_pgtest::PgServer;
use tradsys_redistest::RedisServer;

const MAP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/shards/cluster.toml");
const MARKETS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/shards/markets.toml");
const IDS: [&str; 3] = ["a", "b", "c"];
const WAIT: std::time::Duration = std::time::Duration::from_secs(20);
const DEPOSITS: [(&str, &str); 5] = common::account::DEPOSITS_EVERY_ASSET;

fn answer(r: common::Response) -> (u16, Value) {
    let body = serde_json::from_str(&r.body_text()).unwrap_or_else(|_| panic!("{} {}", r.status, r.body_text()));
    (r.status, body)
}

/// A signed request of `user` at `addr`.
fn request(addr: SocketAddr, user: &User, method: &str, path: &str, query: &str) -> (u16, Value) {
    answer(signed(&mut Client::connect(addr), user, method, path, query))
}

/// The user's balances (free, locked) at `addr`, as text.
fn balances(addr: SocketAddr, user: &User) -> (u16, Value) {
    let (status, body) = request(addr, user, "GET", "/api/v3/account", "");
    (status, body["balances"].clone())
}

fn balance(rows: &Value, asset: &str) -> (String, String) {
    let row = rows
        .as_array()
        .and_then(|r| r.iter().find(|b| b["asset"] == asset))
        .unwrap_or_else(|| panic!("{asset} in {rows}"));
    (
        row["free"].as_str().unwrap_or("").to_string(),
        row["locked"].as_str().unwrap_or("").to_string(),
    )
}

/// Instance `i` of the shipped map in host `i`, on the data directory `dir`.
fn instance(hosts: &Hosts, i: usize, dir: &std::path::Path, redis: &str, pg: &str) -> Server {
    let host = Hosts::address(i);
    let (listen, admin_listen) = (format!("{host}:8080"), format!("{host}:9090"));
    let mut args = vec![
        "--cluster",
        MAP,
        "--instance",
        IDS[i],
        "--listen",
        &listen,
        "--admin-listen",
        &admin_listen,
        "--admin-token",
        ADMIN_TOKEN,
        "--redis",
        redis,
        "--postgres",
        pg,
        "--link-call-timeout-ms",
        "1000",
    ];
    args.extend(LIMITS_OFF);
    Server::start_in_netns(&hosts.names[i], dir, 1, &args)
}

#[test]
fn three_hosts_serve_one_exchange_behind_the_front() -> Result<(), String> {
    let hosts = Hosts::create(3)?;
    let redis = RedisServer::start_also_on(BRIDGE_IP);
    let pg = PgServer::start_also_on(BRIDGE_IP, NETWORK);
    let (redis_url, pg_url) = (redis.url_on(BRIDGE_IP), pg.url_on(BRIDGE_IP));
    let dirs: Vec<_> = (0..3).map(|_| common::temp_data_dir()).collect();
    let mut servers: Vec<Server> = (0..3)
        .map(|i| instance(&hosts, i, &dirs[i], &redis_url, &pg_url))
        .collect();
    let apis: Vec<SocketAddr> = servers.iter().map(|s| s.addr).collect();
    assert_eq!(apis[1].to_string(), "10.77.0.2:8080");

    // Every instance sees the other two through the links once its
    // connections to Redis are up.
    let view = || admin(servers[0].admin.expect("admin"), "GET", "/admin/v1/cluster", None);
    let all_ready = |(status, view): (u16, Value)| {
        let ready: Vec<_> = view["instances"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|i| i["ready"].clone())
            .collect();
        status == 200 && ready == [json!(true), json!(true), json!(true)]
    };
    assert!(common::eventually(WAIT, || all_ready(view())), "{:?}", view());

    // Two users on each instance, made through its admin API.
    let users: Vec<Vec<User>> = servers
        .iter()
        .map(|s| {
            (0..2)
                .map(|n| create_user_on(s.admin.expect("admin"), &format!("u{n}"), &DEPOSITS, "HMAC_SHA256"))
                .collect()
        })
        .collect();
    let front_addr: SocketAddr = format!("{BRIDGE_IP}:{}", free_port())
        .parse()
        .map_err(|e| format!("{e}"))?;
    let front = Front::start(MAP, MARKETS, front_addr);

    // Each instance's users trade on one of its markets through the front:
    // a buy rests, a sell of the same quantity fills it exactly.
    let trades = [
        ("BTCUSDT", "0.5", "100"),
        ("ETHUSDT", "2", "50"),
        ("ETHBTC", "3", "0.05"),
    ];
    for (i, (symbol, qty, price)) in trades.iter().enumerate() {
        let order = |user: &User, side: &str| {
            let query = format!("symbol={symbol}&side={side}&type=LIMIT&timeInForce=GTC&quantity={qty}&price={price}");
            request(front.addr, user, "POST", "/api/v3/order", &query)
        };
        let (status, buy) = order(&users[i][0], "BUY");
        assert_eq!((status, &buy["status"]), (200, &json!("NEW")), "{buy}");
        let (status, sell) = order(&users[i][1], "SELL");
        assert_eq!(
            (status, &sell["status"], &sell["executedQty"]),
            (200, &json!("FILLED"), &sell["origQty"]),
            "{sell}"
        );
    }
    // Exact balances: a's buyer paid 50 USDT for 0.5 BTC less 0.1% of it in
    // fees; b's 100 USDT for 2 ETH; c's 0.15 BTC for 3 ETH.
    let expected = [
        (0, "BTC", "10.49950000"),
        (0, "USDT", "99950.00000000"),
        (1, "ETH", "101.99800000"),
        (1, "USDT", "99900.00000000"),
        (2, "ETH", "102.99700000"),
        (2, "BTC", "9.85000000"),
    ];
    for (i, asset, free) in expected {
        for at in [front.addr, apis[i], apis[(i + 1) % 3]] {
            let (status, rows) = balances(at, &users[i][0]);
            assert_eq!(
                (status, balance(&rows, asset)),
                (200, (free.to_string(), "0.00000000".to_string())),
                "{asset} of {} at {at}",
                IDS[i]
            );
        }
    }

    // Users of every instance trade on the markets of the others: a's
    // user buys on b's market from c's user, b's on c's from a's, c's on
    // a's from b's, each entering through its own instance.
    let cross = [
        ("ETHUSDT", "1", "40"),
        ("ETHBTC", "1", "0.04"),
        ("BTCUSDT", "0.1", "90"),
    ];
    for (i, (symbol, qty, price)) in cross.iter().enumerate() {
        let (buyer, seller) = (&users[i][0], &users[(i + 2) % 3][1]);
        let query =
            |side: &str| format!("symbol={symbol}&side={side}&type=LIMIT&timeInForce=GTC&quantity={qty}&price={price}");
        let (status, buy) = request(apis[i], buyer, "POST", "/api/v3/order", &query("BUY"));
        assert_eq!((status, &buy["status"]), (200, &json!("NEW")), "{buy}");
        let (status, sell) = request(apis[(i + 2) % 3], seller, "POST", "/api/v3/order", &query("SELL"));
        assert_eq!((status, &sell["status"]), (200, &json!("FILLED")), "{sell}");
    }
    assert!(common::eventually(WAIT, || unacknowledged(&servers) == 0.0));
    // a's buyer paid 40 USDT more for 1 ETH less 0.1%; c's seller (of
    // BTCUSDT's 0.1 BTC at 90... to b's buyer) got 9 USDT less 0.1%.
    assert_eq!(
        balance(&balances(apis[1], &users[0][0]).1, "ETH"),
        ("100.99900000".to_string(), "0.00000000".to_string())
    );
    assert_eq!(
        balance(&balances(apis[0], &users[0][0]).1, "USDT"),
        ("99910.00000000".to_string(), "0.00000000".to_string())
    );
    assert_whole(&servers);

    // Faults while a's and c's users trade on b's market: each request is
    // answered (acknowledged, or -1007/-1008) within its timeout, and once
    // the fault is over every acknowledged order is there, each trade is
    // applied on both sides and the cluster's funds are whole.
    let mut ops = 0;
    let mut trade_through = |fault: &mut dyn FnMut(bool)| {
        let (mut answers, mut unknown) = (Vec::new(), 0);
        let mut order = || {
            // The buy rests, the sell fills it: a's user against c's.
            let (at, user, side) = match ops % 2 {
                0 => (apis[0], &users[0][1], "BUY"),
                _ => (apis[2], &users[2][0], "SELL"),
            };
            ops += 1;
            let query = format!("symbol=ETHUSDT&side={side}&type=LIMIT&timeInForce=GTC&quantity=0.2&price=45");
            let sent = std::time::Instant::now();
            let (status, body) = request(at, user, "POST", "/api/v3/order", &query);
            assert!(
                sent.elapsed() < std::time::Duration::from_secs(3),
                "{status} {body} after {:?}",
                sent.elapsed()
            );
            match status {
                200 => answers.push(body["orderId"].as_u64().expect("orderId")),
                503 => {
                    assert!(body["code"] == -1007 || body["code"] == -1008, "{body}");
                    unknown += 1;
                }
                other => panic!("{other} {body}"),
            }
        };
        // 20 orders before, orders through 10 s of the fault (at most
        // 200), 20 after.
        (0..20).for_each(|_| order());
        fault(true);
        let started = std::time::Instant::now();
        for _ in 0..200 {
            if started.elapsed() >= std::time::Duration::from_secs(10) {
                break;
            }
            order();
        }
        fault(false);
        (0..20).for_each(|_| order());
        assert!(unknown > 0, "the fault refused or timed out no order");
        answers
    };
    let mut redis = redis;
    let acknowledged = trade_through(&mut |on| match on {
        true => redis.kill9(),
        false => redis.start_again(),
    });
    let settled =
        |acknowledged: usize| after_fault(&servers, (apis[0], &users[0][1]), (apis[2], &users[2][0]), acknowledged);
    settled(acknowledged.len());
    let acknowledged = trade_through(&mut |on| hosts.set_link(1, !on).expect("the link"));
    settled(acknowledged.len());

    // kill -9 of b mid-trading, and its restart: b's users are out of
    // reach from a until it is back, with everything it acknowledged, and a
    // subscriber on a to c's market gets every trade in order throughout.
    let timed_out = (
        503,
        json!({"code": -1007, "msg": "Timeout waiting for response from backend server. Send status unknown; execution status unknown."}),
    );
    let before = balances(apis[1], &users[1][0]);
    let ethbtc_trade = || {
        let order = |user: &User, side: &str| {
            let query = format!("symbol=ETHBTC&side={side}&type=LIMIT&timeInForce=GTC&quantity=1&price=0.05");
            request(apis[2], user, "POST", "/api/v3/order", &query)
        };
        let (status, buy) = order(&users[2][1], "BUY");
        assert_eq!((status, &buy["status"]), (200, &json!("NEW")), "{buy}");
        let (status, sell) = order(&users[2][0], "SELL");
        assert_eq!((status, &sell["status"]), (200, &json!("FILLED")), "{sell}");
    };
    let mut subscriber = Ws::connect(apis[0], "/ws/ethbtc@trade");
    let first = subscriber
        .first_text_after(100, ethbtc_trade)
        .and_then(|text| serde_json::from_slice::<Value>(&text).ok());
    let Some(first) = first else {
        return Err("no trade of c's market reached a's subscriber".into());
    };
    let mut market = Client::connect(apis[2]);
    market.send("GET /api/v3/trades?symbol=ETHBTC&limit=1 HTTP/1.1\r\nHost: t\r\n\r\n");
    let (status, last) = answer(market.response());
    assert_eq!(status, 200, "{last}");
    let last_before = last[0]["id"].as_u64().expect("a trade id");
    let acknowledged = trade_through(&mut |on| {
        if on {
            servers[1].kill9();
            assert_eq!(request(apis[0], &users[1][0], "GET", "/api/v3/account", ""), timed_out);
            (0..3).for_each(|_| ethbtc_trade());
        } else {
            (0..3).for_each(|_| ethbtc_trade());
            servers[1] = instance(&hosts, 1, &dirs[1], &redis_url, &pg_url);
            (0..3).for_each(|_| ethbtc_trade());
        }
    });
    after_fault(
        &servers,
        (apis[0], &users[0][1]),
        (apis[2], &users[2][0]),
        acknowledged.len(),
    );
    assert_eq!(balances(apis[0], &users[1][0]), before);
    assert_eq!(balances(front.addr, &users[1][0]), before);
    // Every trade since the last one before the kill, in order, none
    // missing: 9 of them.
    let mut event = first;
    while event["t"].as_u64().is_some_and(|t| t < last_before) {
        event = subscriber.json();
    }
    assert_eq!(event["t"], json!(last_before), "{event}");
    for n in 1..=9 {
        let event = subscriber.json();
        assert_eq!(
            (&event["e"], &event["s"], &event["t"], &event["p"], &event["q"]),
            (
                &json!("trade"),
                &json!("ETHBTC"),
                &json!(last_before + n),
                &json!("0.05000000"),
                &json!("1.00000000")
            ),
            "{event}"
        );
    }
    assert_whole(&servers);

    drop(front);
    drop(servers);
    drop(dirs);
    Ok(())
}

/// Engine messages waiting for an acknowledgement, over every instance.
fn unacknowledged(servers: &[Server]) -> f64 {
    servers
        .iter()
        .map(|s| {
            let metrics = s.metrics();
            IDS.iter()
                .filter_map(|peer| metrics.value("tradsys_link_outbox", &[("shard", "0"), ("peer", peer)]))
                .sum::<f64>()
        })
        .sum()
}

/// Each instance's audit is whole with what fills moved in, and those
/// moves sum to zero per asset over the cluster: no trade is applied on
/// one side only. The cluster's audit, asked of any instance, says so with
/// the same sums.
fn assert_whole(servers: &[Server]) {
    const FIELDS: [&str; 6] = ["deposits", "withdrawals", "free", "locked", "fees", "settledIn"];
    let mut sums: std::collections::BTreeMap<String, [i128; 6]> = Default::default();
    for server in servers {
        let (status, audit) = admin(server.admin.expect("admin"), "GET", "/admin/v1/audit", None);
        assert_eq!((status, &audit["ok"]), (200, &json!(true)), "{audit}");
        for asset in audit["assets"].as_array().expect("assets") {
            let sum = sums
                .entry(asset["asset"].as_str().unwrap_or("").to_string())
                .or_default();
            for (total, field) in sum.iter_mut().zip(FIELDS) {
                *total += units(asset[field].as_str().expect(field));
            }
        }
    }
    assert!(sums.values().all(|sum| sum[5] == 0), "{sums:?}");
    let instances: Vec<Value> = IDS
        .iter()
        .map(|id| json!({"id": id, "ok": true, "inFlight": 0}))
        .collect();
    for server in servers {
        let (status, cluster) = admin(server.admin.expect("admin"), "GET", "/admin/v1/cluster/audit", None);
        assert_eq!(
            (status, &cluster["ok"], &cluster["inFlight"], &cluster["instances"]),
            (200, &json!(true), &json!(0), &json!(instances)),
            "{cluster}"
        );
        for asset in cluster["assets"].as_array().expect("assets") {
            let name = asset["asset"].as_str().unwrap_or("");
            let fields: Vec<i128> = FIELDS.iter().map(|f| units(asset[f].as_str().expect(f))).collect();
            assert_eq!(Some(fields.as_slice()), sums.get(name).map(|s| s.as_slice()), "{name}");
        }
        assert_eq!(cluster["assets"].as_array().map(Vec::len), Some(sums.len()));
    }
}

/// After a fault: nothing left unacknowledged, every order the buyer's
/// instance acknowledged is known there, what the buyer bought on b's
/// market is what the seller sold, and the funds are whole.
fn after_fault(
    servers: &[Server],
    (buyer_at, buyer): (SocketAddr, &User),
    (seller_at, seller): (SocketAddr, &User),
    acked: usize,
) {
    assert!(
        common::eventually(WAIT, || unacknowledged(servers) == 0.0),
        "still unacknowledged"
    );
    let executed = |at, user| {
        let (status, orders) = request(at, user, "GET", "/api/v3/allOrders", "symbol=ETHUSDT");
        assert_eq!(status, 200, "{orders}");
        let orders = orders.as_array().cloned().unwrap_or_default();
        let sum: i128 = orders
            .iter()
            .map(|o| units(o["executedQty"].as_str().expect("executedQty")))
            .sum();
        (orders.len(), sum)
    };
    let (bought_orders, bought) = executed(buyer_at, buyer);
    let (sold_orders, sold) = executed(seller_at, seller);
    assert!(
        bought_orders + sold_orders >= acked,
        "{bought_orders} + {sold_orders} orders < {acked} acknowledged"
    );
    assert_eq!(bought, sold, "units bought and sold");
    assert_whole(servers);
}

/// A decimal as integer units of 10^-8, its sign kept.
fn units(text: &str) -> i128 {
    let (sign, digits) = text.strip_prefix('-').map_or((1, text), |d| (-1, d));
    sign * i128::from(tradsys_engine::num::Amount::parse(digits).expect("a decimal").0)
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address").port()
}
