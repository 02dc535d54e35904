//! The shipped cluster map (shards/cluster.toml) on three hosts of the
//! test's own: network namespaces at 10.77.0.1, .2 and .3 (the map's
//! addresses) joined by a bridge at 10.77.0.254, where a Redis, a
//! PostgreSQL and the nginx front `tradsys cluster nginx` writes for the
//! map listen (`common::netns`). Users of each instance trade on its
//! markets through the front with exact fills and balances, every
//! instance answers for every user, an order across instances is refused
//! naming the market's instance, and `kill -9` of one instance leaves its
//! users' requests elsewhere with -1007 until it restarts with everything
//! acknowledged.

mod common;

use common::account::{admin, create_user_on, signed, User};
use common::netns::{Hosts, BRIDGE_IP, NETWORK};
use common::{Client, Front, Server, ADMIN_TOKEN, LIMITS_OFF};
use serde_json::{json, Value};
use std::net::SocketAddr;
use tradsys_pgtest::PgServer;
use tradsys_redistest::RedisServer;

const MAP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/shards/cluster.toml");
const MARKETS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/shards/markets.toml");
const IDS: [&str; 3] = ["a", "b", "c"];
const WAIT: std::time::Duration = std::time::Duration::from_secs(20);
const DEPOSITS: [(&str, &str); 5] = [
    ("USDT", "100000"),
    ("BTC", "10"),
    ("ETH", "100"),
    ("EUR", "1000"),
    ("USD", "1000"),
];

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

    // An order of a's user on b's market is refused, naming b.
    let query = "symbol=ETHUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=50";
    assert_eq!(
        request(front.addr, &users[0][0], "POST", "/api/v3/order", query),
        (
            503,
            json!({"code": -1008, "msg": "Market ETHUSDT is served by instance b at 10.77.0.2:8080; send the request there."})
        )
    );

    // kill -9 of b: its users are out of reach from a until it is back,
    // with everything it acknowledged.
    let before = balances(apis[1], &users[1][0]);
    servers[1].kill9();
    let timed_out = (
        503,
        json!({"code": -1007, "msg": "Timeout waiting for response from backend server. Send status unknown; execution status unknown."}),
    );
    assert_eq!(request(apis[0], &users[1][0], "GET", "/api/v3/account", ""), timed_out);
    servers[1] = instance(&hosts, 1, &dirs[1], &redis_url, &pg_url);
    assert_eq!(balances(apis[0], &users[1][0]), before);
    assert_eq!(balances(front.addr, &users[1][0]), before);

    drop(front);
    drop(servers);
    for dir in dirs {
        let _ = std::fs::remove_dir_all(dir);
    }
    Ok(())
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address").port()
}
