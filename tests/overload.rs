//! Load shedding by priority (see `overload`): what a busy shard refuses
//! and how. The wait the shard measures is pinned by a test hook
//! (`TRADSYS_TEST_OVERLOAD_WAIT_US`), so that each priority's limit is
//! crossed exactly; bench/overload.sh measures real overload.

mod common;

use common::account::{admin, create_user, signed, User};
use common::{temp_data_dir, Server, ADMIN_TOKEN};
use serde_json::json;

const SHED_BODY: &str =
    r#"{"code":-1008,"msg":"Server is currently overloaded with other requests. Please try again in a few minutes."}"#;

/// A server on `dir` whose measured wait never falls below `wait_us`, with
/// order entry shed at 8 ms (market data at 6, history at 4, the admin API
/// at 2; never /health, /ready and /metrics).
fn start_waiting(dir: &std::path::Path, wait_us: &str) -> Server {
    let args = [
        "--admin-token",
        ADMIN_TOKEN,
        "--demo-user",
        "false",
        "--overload-order-wait-ms-max",
        "8",
    ];
    Server::start_in_env(dir, 1, &args, &[("TRADSYS_TEST_OVERLOAD_WAIT_US", wait_us)])
}

fn assert_shed(r: &common::Response, what: &str) {
    assert_eq!(r.status, 503, "{what}: {}", r.body_text());
    assert_eq!(r.body_text(), SHED_BODY, "{what}");
    assert_eq!(r.header("Retry-After"), Some("1"), "{what}");
}

/// The statuses of a market data read, a history read, an order and an
/// admin read, in that order.
fn statuses(server: &Server, user: &User) -> [u16; 4] {
    let mut c = server.connect();
    let depth = server.get("/api/v3/depth?symbol=BTCUSDT&limit=5").status;
    let history = signed(&mut c, user, "GET", "/api/v3/myTrades", "symbol=BTCUSDT").status;
    let order = signed(
        &mut c,
        user,
        "POST",
        "/api/v3/order",
        "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.01&price=1000",
    )
    .status;
    let admin_addr = server.admin.expect("the admin API");
    let (ops, _) = admin(admin_addr, "GET", "/admin/v1/audit", None);
    [depth, history, order, ops]
}

#[test]
fn a_busy_shard_sheds_the_lowest_priorities_first_before_parsing() {
    let dir = temp_data_dir();
    let server = Server::start_in(&dir, 1, &["--admin-token", ADMIN_TOKEN, "--demo-user", "false"]);
    let user = create_user(&server, "trader", &[("USDT", "100000")]);
    drop(server);

    // 7 ms: only order entry (8 ms) is still taken.
    let server = start_waiting(&dir, "7000");
    assert_eq!(statuses(&server, &user), [503, 503, 200, 503]);
    assert_shed(&server.get("/api/v3/depth?symbol=BTCUSDT&limit=5"), "depth");
    // Shed before its parameters are read: a malformed request is not
    // told what is wrong with it.
    assert_shed(&server.get("/api/v3/depth?symbol=%zz"), "a malformed depth");
    let mut c = server.connect();
    assert_shed(
        &signed(&mut c, &user, "GET", "/api/v3/allOrders", "symbol=BTCUSDT"),
        "allOrders",
    );
    assert_eq!(
        signed(&mut c, &user, "GET", "/api/v3/openOrders", "symbol=BTCUSDT").status,
        200
    );
    // Health checks and scrapes are never shed; admin calls are, with the
    // same body.
    assert_eq!(server.get("/health").status, 200);
    assert_eq!(server.get("/ready").status, 200);
    assert_eq!(server.get("/metrics").status, 200);
    let admin_addr = server.admin.expect("the admin API");
    let (status, body) = admin(admin_addr, "POST", "/admin/v1/users", Some(json!({"name": "late"})));
    assert_eq!((status, body.to_string()), (503, SHED_BODY.to_string()));
    drop(server);

    // 5 ms: market data (6 ms) is taken again, history (4 ms) is not.
    let server = start_waiting(&dir, "5000");
    assert_eq!(statuses(&server, &user), [200, 503, 200, 503]);
    drop(server);

    // 3 ms: only the admin API (2 ms) is shed.
    let server = start_waiting(&dir, "3000");
    assert_eq!(statuses(&server, &user), [200, 200, 200, 503]);
    drop(server);

    // 9 ms: everything but health checks and scrapes is shed, orders
    // too; the scrape counts each refusal under its priority.
    let server = start_waiting(&dir, "9000");
    assert_eq!(statuses(&server, &user), [503, 503, 503, 503]);
    assert_eq!(server.get("/health").status, 200);
    let metrics = server.metrics();
    for family in [
        "tradsys_overload_shed_trading_total",
        "tradsys_overload_shed_market_data_total",
        "tradsys_overload_shed_history_total",
        "tradsys_overload_shed_ops_total",
    ] {
        assert_eq!(metrics.value(family, &[("shard", "0")]), Some(1.0), "{family}");
    }
    drop(server);

    // With shedding off nothing is shed.
    let server = Server::start_in(&dir, 1, &["--admin-token", ADMIN_TOKEN, "--demo-user", "false"]);
    assert_eq!(statuses(&server, &user), [200, 200, 200, 200]);
    drop(server);
}
