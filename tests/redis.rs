//! Redis as tradsys's optional dependency: every shard holds its own
//! connection (AUTH and SELECT from `--redis URL`), checks it with PING while idle,
//! shows it in /metrics, survives the server's loss and reconnects when it
//! returns, while the API keeps answering. The server is a real
//! `redis-server` of the test's own.

mod common;

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
    // (1,000 / 2 instances per shard), and counted as a fallback.
    redis.kill9();
    let (admitted, _) = pings(&[&a], 20);
    assert_eq!(admitted, 20);
    assert!(fallbacks(&a) >= 20.0, "{}", fallbacks(&a));
}
