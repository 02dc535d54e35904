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
    // Every shard authenticated and selected database 1: two clients.
    let clients = redis.command(&["CLIENT", "LIST"]);
    assert_eq!(clients.matches(" db=1 ").count(), 2, "{clients}");

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
