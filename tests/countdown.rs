//! The dead-man's switch (`POST /api/v3/countdownCancelAll`): a user's
//! orders on a market are canceled when the countdown runs out, not
//! before; setting it again moves it, 0 turns it off; it is journaled,
//! so it fires at its time after a crash, and at once when it ran out
//! while tradsys was down.

mod common;

use common::account::{create_user, signed, User};
use common::{Client, Server, ADMIN_TOKEN};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// How long a test waits for a countdown past its deadline.
const FIRE_WAIT: Duration = Duration::from_secs(10);

fn bid(c: &mut Client, user: &User, symbol: &str, price: &str) -> u64 {
    let query = format!("symbol={symbol}&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.01&price={price}");
    let r = signed(c, user, "POST", "/api/v3/order", &query);
    assert_eq!(r.status, 200, "{}", r.body_text());
    r.json()["orderId"].as_u64().expect("orderId")
}

fn countdown(c: &mut Client, user: &User, query: &str) -> (u16, Value) {
    let r = signed(c, user, "POST", "/api/v3/countdownCancelAll", query);
    (r.status, r.json())
}

fn status(c: &mut Client, user: &User, symbol: &str, id: u64) -> Value {
    let r = signed(
        c,
        user,
        "GET",
        "/api/v3/order",
        &format!("symbol={symbol}&orderId={id}"),
    );
    r.json()["status"].clone()
}

fn open_count(c: &mut Client, user: &User, symbol: &str) -> usize {
    let r = signed(c, user, "GET", "/api/v3/openOrders", &format!("symbol={symbol}"));
    r.json().as_array().map_or(0, Vec::len)
}

/// Waits until `user` has no open order on `symbol`; how long it took.
fn until_canceled(c: &mut Client, user: &User, symbol: &str, since: Instant) -> Duration {
    let gone = common::eventually(FIRE_WAIT, || open_count(c, user, symbol) == 0);
    assert!(gone, "the countdown on {symbol} never fired");
    since.elapsed()
}

#[test]
fn a_countdown_cancels_the_markets_orders_when_it_runs_out() {
    let server = Server::start(2, &["--admin-token", ADMIN_TOKEN]);
    let user = create_user(&server, "countdown", &[("USDT", "100000")]);
    let mut c = server.connect();
    let btc = [
        bid(&mut c, &user, "BTCUSDT", "20000"),
        bid(&mut c, &user, "BTCUSDT", "20001"),
    ];
    let eth = bid(&mut c, &user, "ETHUSDT", "1000");

    // Bad input first: nothing is set.
    let refusals = [
        (
            "symbol=BTCUSDT",
            -1102,
            "Mandatory parameter 'countdownTime' was not sent, was empty/null, or malformed.",
        ),
        (
            "symbol=BTCUSDT&countdownTime=-5",
            -1100,
            "Illegal characters found in parameter 'countdownTime'.",
        ),
        (
            "symbol=BTCUSDT&countdownTime=86400001",
            -1130,
            "Data sent for parameter 'countdownTime' is not valid.",
        ),
        ("symbol=NOPE&countdownTime=1000", -1121, "Invalid symbol."),
    ];
    for (query, code, msg) in refusals {
        assert_eq!(
            countdown(&mut c, &user, query),
            (400, json!({"code": code, "msg": msg})),
            "{query}"
        );
    }

    // Set and left to run out: BTCUSDT's orders go, ETHUSDT's stay.
    let since = Instant::now();
    let set = countdown(&mut c, &user, "symbol=BTCUSDT&countdownTime=400");
    assert_eq!(set, (200, json!({"symbol": "BTCUSDT", "countdownTime": "400"})));
    let took = until_canceled(&mut c, &user, "BTCUSDT", since);
    assert!(took >= Duration::from_millis(400), "fired after {took:?}");
    for id in btc {
        assert_eq!(status(&mut c, &user, "BTCUSDT", id), "CANCELED");
    }
    assert_eq!(status(&mut c, &user, "ETHUSDT", eth), "NEW");
    let account = signed(&mut c, &user, "GET", "/api/v3/account", "").json();
    let usdt = account["balances"]
        .as_array()
        .and_then(|b| b.iter().find(|b| b["asset"] == "USDT").cloned())
        .expect("USDT");
    // Only the ETHUSDT bid (0.01 × 1000) still holds funds.
    assert_eq!(usdt["locked"], "10.00000000");

    // Set, then turned off: it does not fire. ETHUSDT's countdown, set
    // longer after it, firing shows the BTCUSDT one's time has passed.
    let kept = bid(&mut c, &user, "BTCUSDT", "20000");
    assert_eq!(countdown(&mut c, &user, "symbol=BTCUSDT&countdownTime=300").0, 200);
    let off = countdown(&mut c, &user, "symbol=BTCUSDT&countdownTime=0");
    assert_eq!(off, (200, json!({"symbol": "BTCUSDT", "countdownTime": "0"})));
    let since = Instant::now();
    assert_eq!(countdown(&mut c, &user, "symbol=ETHUSDT&countdownTime=600").0, 200);
    until_canceled(&mut c, &user, "ETHUSDT", since);
    assert_eq!(
        status(&mut c, &user, "BTCUSDT", kept),
        "NEW",
        "a switch turned off fired"
    );
}

#[test]
fn a_countdown_survives_a_crash_and_fires_on_time_after_it() {
    let data_dir = common::temp_data_dir();
    let args = ["--admin-token", ADMIN_TOKEN];
    let mut server = Server::start_in(&data_dir, 2, &args);
    let user = create_user(&server, "countdown-crash", &[("USDT", "100000")]);
    let mut c = server.connect();
    let first = bid(&mut c, &user, "BTCUSDT", "20000");
    let since = Instant::now();
    assert_eq!(countdown(&mut c, &user, "symbol=BTCUSDT&countdownTime=2000").0, 200);
    server.kill9();
    let server = Server::start_in(&data_dir, 2, &args);
    let mut c = server.connect();
    if since.elapsed() < Duration::from_millis(1800) {
        assert_eq!(status(&mut c, &user, "BTCUSDT", first), "NEW", "fired before its time");
    }
    let took = until_canceled(&mut c, &user, "BTCUSDT", since);
    assert!(took >= Duration::from_millis(2000), "fired after {took:?}");
    assert_eq!(status(&mut c, &user, "BTCUSDT", first), "CANCELED");

    // Run out while tradsys is down: it fires as soon as tradsys is back.
    let second = bid(&mut c, &user, "BTCUSDT", "20000");
    let since = Instant::now();
    assert_eq!(countdown(&mut c, &user, "symbol=BTCUSDT&countdownTime=100").0, 200);
    let mut server = server;
    server.kill9();
    while since.elapsed() < Duration::from_millis(150) {
        std::thread::yield_now();
    }
    let server = Server::start_in(&data_dir, 2, &args);
    let mut c = server.connect();
    until_canceled(&mut c, &user, "BTCUSDT", since);
    assert_eq!(status(&mut c, &user, "BTCUSDT", second), "CANCELED");
    drop(server);
}
