//! Redis as tradsys's optional dependency: every shard holds its own
//! connection (AUTH and SELECT from `--redis URL`), checks it with PING while idle,
//! shows it in /metrics, survives the server's loss and reconnects when it
//! returns, while the API keeps answering. The server is a real
//! `redis-server` of the test's own.

mod common;

use common::account::{create_user, now_ms, signed};
use common::ws::upgrade_request;
use common::{eventually, Server, ADMIN_TOKEN};
use std::time::Duration;
use tradsys_redistest::RedisServer;

const WAIT: Duration = Duration::from_secs(20);

/// The value of a per-shard Redis metric on each of `shards` shards.
fn per_shard(server: &Server, name: &str, shards: usize) -> Vec<f64> {
    let metrics = server.metrics();
    (0..shards)
        .map(|shard| metrics.value(name, &[("shard", &shard.to_string())]).unwrap_or(-1.0))
        .collect()
}

#[test]
fn every_shard_connects_notices_a_lost_server_and_reconnects() {
    let mut redis = RedisServer::start_with_password("tradsys-test");
    let url = format!("{}/1", redis.url());
    let server = Server::start(
        2,
        &[
            "--admin-token",
            ADMIN_TOKEN,
            "--redis",
            &url,
            "--redis-heartbeat-ms",
            "50",
        ],
    );
    assert_eq!(per_shard(&server, "tradsys_redis_configured", 2), vec![1.0, 1.0]);
    assert!(
        eventually(WAIT, || per_shard(&server, "tradsys_redis_connected", 2)
            == vec![1.0, 1.0]),
        "{:?}",
        per_shard(&server, "tradsys_redis_connected", 2)
    );
    // The heartbeats (PING every 50 ms) went out and none failed.
    assert!(
        eventually(WAIT, || per_shard(&server, "tradsys_redis_commands_total", 2)
            .iter()
            .all(|&n| n >= 3.0)),
        "no heartbeats"
    );
    assert_eq!(per_shard(&server, "tradsys_redis_failures_total", 2), vec![0.0, 0.0]);
    assert_eq!(per_shard(&server, "tradsys_redis_connects_total", 2), vec![1.0, 1.0]);
    // Every shard authenticated and selected database 1: two clients, and
    // each shard's cache invalidation subscriber (`sub=1`).
    let clients = redis.command(&["CLIENT", "LIST"]);
    assert_eq!(clients.matches(" db=1 ").count(), 4, "{clients}");
    assert_eq!(clients.matches(" db=1 sub=1 ").count(), 2, "{clients}");

    redis.kill9();
    assert!(
        eventually(WAIT, || per_shard(&server, "tradsys_redis_connected", 2)
            == vec![0.0, 0.0]),
        "the shards never noticed the lost server"
    );
    assert!(
        eventually(WAIT, || per_shard(&server, "tradsys_redis_reconnects_total", 2)
            .iter()
            .all(|&n| n >= 1.0)),
        "no reconnect attempts"
    );
    // Redis is optional: the API answers while it is gone.
    assert_eq!(server.get("/ready").status, 200);
    assert_eq!(server.get("/api/v3/ping").status, 200);

    redis.start_again();
    assert!(
        eventually(WAIT, || per_shard(&server, "tradsys_redis_connected", 2)
            == vec![1.0, 1.0]),
        "the shards never reconnected"
    );
    assert_eq!(per_shard(&server, "tradsys_redis_connects_total", 2), vec![2.0, 2.0]);
}

#[test]
fn a_bad_redis_url_is_refused_at_start() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tradsys"))
        .args(["--redis", "http://127.0.0.1:6379"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).expect("utf8");
    assert_eq!(
        stderr,
        "tradsys: invalid configuration: redis: http://127.0.0.1:6379: a Redis URL starts with redis://\n"
    );
}

/// Sends `count` keep-alive `GET /api/v3/ping` (weight 1) to each server in
/// turn from 127.0.0.1; returns how many were admitted and the last
/// admitted response's `X-MBX-USED-WEIGHT-1M`.
fn pings(servers: &[&Server], count: usize) -> (usize, u32) {
    let mut clients: Vec<_> = servers.iter().map(|s| s.connect()).collect();
    let n = clients.len();
    let (mut admitted, mut used) = (0, 0);
    for i in 0..count {
        let client = &mut clients[i % n];
        client.send("GET /api/v3/ping HTTP/1.1\r\nHost: x\r\n\r\n");
        let response = client.response();
        match response.status {
            200 => {
                admitted += 1;
                used = response
                    .header("x-mbx-used-weight-1m")
                    .and_then(|v| v.parse().ok())
                    .expect("the weight header");
            }
            429 => assert_eq!(response.error().0, -1003),
            other => panic!("status {other}: {}", response.body_text()),
        }
    }
    (admitted, used)
}

/// Two instances on one Redis admit one budget per IP, not one each:
/// 1,500 requests of weight 1 against a limit of 1,000 per minute, spread
/// over both, admit 1,000 ± 5% (leases paid for in Redis never admit more
/// than the budget; unspent leases and the refill while the test runs move
/// it a little). While Redis is gone, each falls back to its own share.
#[test]
fn two_instances_share_one_weight_budget_per_ip() {
    let mut redis = RedisServer::start();
    let url = redis.url();
    let args = [
        "--admin-token",
        ADMIN_TOKEN,
        "--redis",
        &url,
        "--cluster-instances",
        "2",
        "--request-weight-per-minute-max",
        "1000",
        // Hundreds of refusals on purpose: no ban.
        "--ip-ban-refusals-per-minute-max",
        "100000",
    ];
    let (a, b) = (Server::start(2, &args), Server::start(2, &args));
    let started = std::time::Instant::now();
    let (admitted, used) = pings(&[&a, &b], 1_500);
    // The budget refills one unit every 60 ms while the test runs: never
    // more than that over 1,000, and at most 5% under it.
    let refilled = started.elapsed().as_millis() as usize / 60 + 1;
    assert!(
        (950..=1_000 + refilled).contains(&admitted),
        "admitted {admitted} of a shared 1,000 (+{refilled} refilled)"
    );
    // The header shows the shared count, not one instance's half.
    assert!((900..=1_050).contains(&used), "X-MBX-USED-WEIGHT-1M {used}");
    let fallbacks = |s: &Server| {
        per_shard(s, "tradsys_redis_limit_fallbacks_total", 2)
            .iter()
            .sum::<f64>()
    };
    assert_eq!((fallbacks(&a), fallbacks(&b)), (0.0, 0.0));

    // Redis gone: every request is still answered, by the local limits
    // (1,000 / 2 instances per shard), and counted as a fallback. A
    // refusal Redis gave just before stays in force on each shard for up
    // to a lease's time (a second); after it, 20 in a row are admitted.
    redis.kill9();
    assert!(eventually(WAIT, || pings(&[&a], 20).0 == 20));
    assert!(fallbacks(&a) >= 20.0, "{}", fallbacks(&a));
}

/// An IP banned on one instance is banned on every instance that shares
/// its Redis: the ban lives there, and the other instance's first request
/// for the IP learns of it. The level that sets the next ban's length is
/// shared too.
#[test]
fn an_ip_banned_on_one_instance_is_banned_on_every_instance() {
    let redis = RedisServer::start();
    let url = redis.url();
    let args = [
        "--admin-token",
        ADMIN_TOKEN,
        "--redis",
        &url,
        "--request-weight-per-minute-max",
        "10",
        "--ip-ban-refusals-per-minute-max",
        "5",
    ];
    let (a, b) = (Server::start(1, &args), Server::start(1, &args));
    let mut client = a.connect();
    let before = now_ms();
    let (statuses, banned) = common::pings_until_banned(&mut client, 40);
    // The shared budget of 10 (no lease is smaller than a request), then
    // refusals until the strikes of one minute pass 5, then the ban (a new
    // minute of strikes in between can add up to 5 more refusals).
    let refusals = statuses.iter().filter(|&&s| s == 429).count();
    assert_eq!(statuses[..10], [200; 10], "{statuses:?}");
    assert!((6..=11).contains(&refusals), "{statuses:?}");
    assert_eq!(statuses.len(), 10 + refusals + 1, "{statuses:?}");
    common::assert_first_ban(&banned.expect("banned"), before);
    assert_eq!(redis.command(&["GET", "tradsys:banlevel:127.0.0.1"]), "$1\r\n1\r\n");

    // The other instance never saw this IP: it learns of the ban from Redis.
    let response = b.get("/api/v3/ping");
    assert_eq!((response.status, response.error().0), (418, -1003));
    let retry: u64 = response
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("seconds");
    assert!((1..=120).contains(&retry), "{retry}");
    let metric = |s: &Server, name: &str| s.metrics().value(name, &[("shard", "0")]);
    assert_eq!(metric(&a, "tradsys_ip_bans_total"), Some(1.0));
    assert_eq!(metric(&b, "tradsys_ip_bans_total"), Some(0.0));
    assert_eq!(metric(&b, "tradsys_banned_requests_total"), Some(1.0));
}

/// A user's ORDERS counts are shared by two instances on one Redis (the
/// same user on both, as in a cluster): a day's limit of 6 admits 6
/// orders over both, the headers count both, and an order that fills
/// gives its unit back (Binance counts unfilled orders).
#[test]
fn two_instances_share_a_users_order_count_and_fills_give_it_back() {
    let redis = RedisServer::start();
    let url = redis.url();
    let args = [
        "--admin-token",
        ADMIN_TOKEN,
        "--demo-user",
        "false",
        "--redis",
        &url,
        "--orders-per-day-max",
        "6",
    ];
    // One shard each: user ids are then given in the same order on both.
    let (a, b) = (Server::start(1, &args), Server::start(1, &args));
    let (bob_a, bob_b) = (
        create_user(&a, "bob", &[("USDT", "100000")]),
        create_user(&b, "bob", &[("USDT", "100000")]),
    );
    assert_eq!(bob_a.id, bob_b.id, "the same user on both instances");
    let alice = create_user(&a, "alice", &[("BTC", "1")]);
    let (mut on_a, mut on_b) = (a.connect(), b.connect());
    let buy = "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.001&price=10000";
    let mut place = |i: usize| {
        let r = if i % 2 == 0 {
            signed(&mut on_a, &bob_a, "POST", "/api/v3/order", buy)
        } else {
            signed(&mut on_b, &bob_b, "POST", "/api/v3/order", buy)
        };
        (r.status, r.header("x-mbx-order-count-1d").map(str::to_string))
    };
    for i in 0..4 {
        assert_eq!(place(i), (200, Some((i + 1).to_string())), "order {i}");
    }
    // Alice's sell fills bob's first order on A: it no longer counts.
    let mut alice_c = a.connect();
    let sell = "symbol=BTCUSDT&side=SELL&type=LIMIT&timeInForce=GTC&quantity=0.001&price=10000";
    let r = signed(&mut alice_c, &alice, "POST", "/api/v3/order", sell);
    assert_eq!((r.status, r.json()["status"].as_str()), (200, Some("FILLED")));
    let day_count = |c: &mut common::Client, user: &common::account::User| {
        let r = signed(c, user, "GET", "/api/v3/rateLimit/order", "");
        r.json()[1]["count"].as_u64()
    };
    let mut reader = b.connect();
    assert!(
        eventually(WAIT, || day_count(&mut reader, &bob_b) == Some(3)),
        "the fill's unit never came back: {:?}",
        day_count(&mut reader, &bob_b)
    );
    for i in 4..7 {
        assert_eq!(place(i), (200, Some(i.to_string())), "order {i}");
    }
    let r = signed(&mut on_a, &bob_a, "POST", "/api/v3/order", buy);
    assert_eq!(
        (r.status, r.error()),
        (
            429,
            (
                -1015,
                "Too many new orders; current limit is 6 orders per 1 DAY.".to_string()
            )
        )
    );
    let r = signed(&mut on_b, &bob_b, "POST", "/api/v3/order", buy);
    assert_eq!((r.status, r.error().0), (429, -1015));
}

/// WebSocket API connection attempts are counted over every instance.
#[test]
fn two_instances_share_an_ips_connection_attempts() {
    let redis = RedisServer::start();
    let url = redis.url();
    let args = ["--redis", &url, "--ws-api-connection-attempts-per-5m-max", "4"];
    let (a, b) = (Server::start(2, &args), Server::start(2, &args));
    let attempt = |server: &Server| {
        let mut c = server.connect();
        c.send(&upgrade_request("GET", "/ws-api/v3", "dGhlIHNhbXBsZSBub25jZQ==", "13"));
        c
    };
    let mut open = Vec::new();
    for i in 0..4 {
        let server = if i % 2 == 0 { &a } else { &b };
        let mut c = attempt(server);
        assert_eq!(c.head_response().status, 101, "attempt {i}");
        open.push(c);
    }
    for server in [&a, &b] {
        let response = attempt(server).response();
        assert_eq!(
            (response.status, response.error()),
            (
                429,
                (
                    -1034,
                    "Too many connection attempts from IP; current limit is 4 per '5 MINUTE'.".to_string()
                )
            )
        );
    }
}
