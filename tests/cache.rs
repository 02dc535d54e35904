//! The two-level cache seen from outside: exchangeInfo and every market's
//! 24 h ticker come from each shard's L1 (warmed at start), with exact
//! counts in /metrics; a cold key under a stampede is filled once; a halt
//! publishes a new exchangeInfo version that reaches every shard of every
//! instance through Redis; and with Redis killed the answers stay the
//! same. Redis is a `redis-server` of the test's own.

mod common;

use common::account::admin;
use common::{eventually, Client, Server, ADMIN_TOKEN};
use serde_json::Value;
use std::time::Duration;
use tradsys_redistest::RedisServer;

const WAIT: Duration = Duration::from_secs(20);

/// A cache counter of one level, per shard.
fn level(server: &Server, name: &str, level: &str, shards: usize) -> Vec<u64> {
    let metrics = server.metrics();
    (0..shards)
        .map(|shard| {
            let labels = [("shard", shard.to_string()), ("level", level.to_string())];
            let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
            metrics.value(name, &labels).map_or(u64::MAX, |v| v as u64)
        })
        .collect()
}

fn gauge(server: &Server, name: &str, shards: usize) -> Vec<u64> {
    let metrics = server.metrics();
    (0..shards)
        .map(|shard| {
            metrics
                .value(name, &[("shard", &shard.to_string())])
                .map_or(u64::MAX, |v| v as u64)
        })
        .collect()
}

/// exchangeInfo without its serverTime, and each market's status.
fn exchange_info(server: &Server) -> (Value, Vec<String>) {
    let response = server.get("/api/v3/exchangeInfo");
    assert_eq!(response.status, 200, "{}", response.body_text());
    let mut body = response.json();
    let statuses = body["symbols"]
        .as_array()
        .expect("symbols")
        .iter()
        .map(|s| s["status"].as_str().expect("status").to_string())
        .collect();
    body.as_object_mut().expect("an object").remove("serverTime");
    (body, statuses)
}

fn ticker(server: &Server) -> Value {
    let response = server.get("/api/v3/ticker/24hr");
    assert_eq!(response.status, 200, "{}", response.body_text());
    response.json()
}

#[test]
fn without_redis_l1_answers_and_a_stampede_on_a_cold_key_fills_once() {
    let server = Server::start(
        1,
        &[
            "--admin-token",
            ADMIN_TOKEN,
            "--cache-ticker-ttl-ms",
            "600000",
            // exchangeInfo weighs 20: room for the stampede.
            "--request-weight-per-minute-max",
            "1000000",
        ],
    );
    let counter = |name: &str| level(&server, name, "l1", 1)[0];
    // Warm at start: exchangeInfo and the tickers, one fill each.
    assert_eq!(counter("tradsys_cache_fills_total"), 2);
    assert_eq!(counter("tradsys_cache_misses_total"), 2);
    assert_eq!(counter("tradsys_cache_hits_total"), 0);
    assert_eq!(gauge(&server, "tradsys_cache_entries", 1), vec![2]);
    assert_eq!(gauge(&server, "tradsys_cache_invalidation_subscribed", 1), vec![0]);
    let (info, statuses) = exchange_info(&server);
    assert!(statuses.iter().all(|s| s == "TRADING"), "{statuses:?}");
    let tickers = ticker(&server);
    for _ in 0..4 {
        assert_eq!(exchange_info(&server).0, info);
        assert_eq!(ticker(&server), tickers);
    }
    assert_eq!(counter("tradsys_cache_hits_total"), 10);
    assert_eq!(counter("tradsys_cache_fills_total"), 2);
    // MINI is a key of its own.
    assert_eq!(server.get("/api/v3/ticker/24hr?type=MINI").status, 200);
    assert_eq!(counter("tradsys_cache_fills_total"), 3);
    assert_eq!(server.get("/api/v3/ticker/24hr?type=BAD").error().0, -1139);

    // A halt makes a new exchangeInfo version: the old entry goes, and
    // 1,000 requests in flight at once (100 clients with 10 connections
    // each, every request sent before any answer is read) fill it once.
    let addr = server.admin.expect("admin");
    assert_eq!(admin(addr, "POST", "/admin/v1/markets/BTCUSDT/halt", None).0, 200);
    assert_eq!(counter("tradsys_cache_invalidations_total"), 1);
    let threads: Vec<_> = (0..100)
        .map(|_| {
            let addr = server.addr;
            std::thread::spawn(move || {
                let mut clients: Vec<Client> = (0..10).map(|_| Client::connect(addr)).collect();
                for client in &mut clients {
                    client.send("GET /api/v3/exchangeInfo HTTP/1.1\r\nHost: x\r\n\r\n");
                }
                clients
                    .iter_mut()
                    .map(|c| c.response())
                    .filter(|r| r.status == 200 && r.body_text().contains("\"status\":\"HALT\""))
                    .count()
            })
        })
        .collect();
    let halted: usize = threads.into_iter().map(|t| t.join().expect("a client")).sum();
    assert_eq!(halted, 1_000);
    assert_eq!(counter("tradsys_cache_fills_total"), 4);
    assert_eq!(
        counter("tradsys_cache_hits_total") + counter("tradsys_cache_misses_total"),
        2 + 10 + 1 + 1_000
    );
    // No Redis, so nothing of L2.
    for name in ["tradsys_cache_hits_total", "tradsys_cache_fills_total"] {
        assert_eq!(level(&server, name, "l2", 1), vec![0]);
    }
}

#[test]
fn an_invalidation_reaches_every_shard_of_every_instance() {
    let redis = RedisServer::start();
    let url = redis.url();
    let args = ["--admin-token", ADMIN_TOKEN, "--redis", &url];
    let (a, b) = (Server::start(2, &args), Server::start(2, &args));
    for server in [&a, &b] {
        assert!(
            eventually(WAIT, || gauge(server, "tradsys_cache_invalidation_subscribed", 2)
                == vec![1, 1]),
            "not subscribed"
        );
        assert_eq!(level(server, "tradsys_cache_invalidations_total", "l1", 2), vec![0, 0]);
    }
    // The instances share L2: of the 4 shards warming exchangeInfo and the
    // tickers, one stored each (only the holder of a key's fill lock
    // stores, and the lock outlives these fills).
    let l2_fills = |s: &Server| level(s, "tradsys_cache_fills_total", "l2", 2).iter().sum::<u64>();
    assert_eq!(l2_fills(&a) + l2_fills(&b), 2);

    let addr = a.admin.expect("admin");
    assert_eq!(admin(addr, "POST", "/admin/v1/markets/ETHBTC/halt", None).0, 200);
    // Every shard's L1 dropped the old version: a's through the halt (one
    // of them directly), b's through Redis.
    for server in [&a, &b] {
        assert!(
            eventually(WAIT, || level(server, "tradsys_cache_invalidations_total", "l1", 2)
                == vec![1, 1]),
            "{:?}",
            level(server, "tradsys_cache_invalidations_total", "l1", 2)
        );
    }
    assert_eq!(
        level(&a, "tradsys_cache_invalidations_total", "l2", 2)
            .iter()
            .sum::<u64>(),
        1,
        "one publication"
    );
    assert_eq!(level(&b, "tradsys_cache_invalidations_total", "l2", 2), vec![0, 0]);
    let (_, statuses) = exchange_info(&a);
    assert_eq!(statuses[..3], ["TRADING", "TRADING", "HALT"]);
    // b's own markets are not halted: it reads its version again.
    let (_, statuses) = exchange_info(&b);
    assert!(statuses.iter().all(|s| s == "TRADING"), "{statuses:?}");
}

/// The tickers without the times that move with the clock when no trade
/// set them.
fn steady(tickers: &Value) -> Value {
    let mut tickers = tickers.clone();
    for t in tickers.as_array_mut().expect("an array") {
        let t = t.as_object_mut().expect("an object");
        t.remove("openTime");
        t.remove("closeTime");
    }
    tickers
}

#[test]
fn with_redis_killed_the_answers_stay_the_same() {
    let mut redis = RedisServer::start();
    let url = redis.url();
    let server = Server::start(
        2,
        &[
            "--admin-token",
            ADMIN_TOKEN,
            "--redis",
            &url,
            "--cache-ticker-ttl-ms",
            "600000",
        ],
    );
    let (info, _) = exchange_info(&server);
    let tickers = steady(&ticker(&server));
    redis.kill9();
    assert!(
        eventually(WAIT, || gauge(&server, "tradsys_redis_connected", 2) == vec![0, 0]),
        "the shards never noticed"
    );
    // Fresh connections, so both shards answer.
    for _ in 0..20 {
        assert_eq!(exchange_info(&server).0, info);
        assert_eq!(steady(&ticker(&server)), tickers);
    }
    // A value nobody cached yet is computed locally, not refused.
    let addr = server.admin.expect("admin");
    assert_eq!(admin(addr, "POST", "/admin/v1/markets/BTCUSDT/halt", None).0, 200);
    for _ in 0..10 {
        let (_, statuses) = exchange_info(&server);
        assert_eq!(statuses[0], "HALT");
    }
    assert_eq!(server.get("/api/v3/ticker/24hr?type=MINI").status, 200);
}
