//! Trailing stops through the API: the answers and the user data stream
//! carry `trailingDelta`, the stop follows the market's trades and fires
//! its delta below the highest one, and what it has tracked survives a
//! crash.

mod common;

use common::account::{create_user, listen_key, signed, User};
use common::ws::Ws;
use common::{Client, Server, ADMIN_TOKEN};
use serde_json::{json, Value};

/// One trade of 0.01 BTC at `price` between `maker` and `taker`.
fn trade_at(c: &mut Client, maker: &User, taker: &User, price: &str) {
    let order = |side: &str, tif: &str| {
        format!("symbol=BTCUSDT&side={side}&type=LIMIT&timeInForce={tif}&quantity=0.01&price={price}")
    };
    let r = signed(c, maker, "POST", "/api/v3/order", &order("SELL", "GTC"));
    assert_eq!(r.status, 200, "{}", r.body_text());
    let r = signed(c, taker, "POST", "/api/v3/order", &order("BUY", "IOC"));
    assert_eq!(r.json()["status"], "FILLED", "a trade at {price}");
}

fn state(c: &mut Client, owner: &User, id: u64) -> (Value, Value) {
    let v = signed(
        c,
        owner,
        "GET",
        "/api/v3/order",
        &format!("symbol=BTCUSDT&orderId={id}"),
    )
    .json();
    (v["status"].clone(), v["trailingDelta"].clone())
}

/// The asks: where a fired stop-limit sell rests.
fn asks(server: &Server) -> Value {
    server.get("/api/v3/depth?symbol=BTCUSDT&limit=5").json()["asks"].clone()
}

#[test]
fn a_trailing_stop_fires_one_percent_below_the_highest_trade_across_a_crash() {
    let data_dir = common::temp_data_dir();
    let args = ["--admin-token", ADMIN_TOKEN];
    let mut server = Server::start_in(&data_dir, 2, &args);
    let maker = create_user(&server, "trailing-maker", &[("BTC", "10")]);
    let taker = create_user(&server, "trailing-taker", &[("USDT", "100000")]);
    let owner = create_user(&server, "trailing-owner", &[("BTC", "1")]);
    let mut c = server.connect();
    let key = listen_key(&mut c, &owner);
    let mut stream = Ws::connect(server.addr, &format!("/ws/{key}"));
    trade_at(&mut c, &maker, &taker, "30000");

    // No stop price: it tracks from the last trade, 30,000.
    let placed = signed(
        &mut c,
        &owner,
        "POST",
        "/api/v3/order",
        "symbol=BTCUSDT&side=SELL&type=STOP_LOSS_LIMIT&timeInForce=GTC&quantity=0.1&price=29000\
         &trailingDelta=100&newOrderRespType=RESULT",
    );
    assert_eq!(placed.status, 200, "{}", placed.body_text());
    let placed = placed.json();
    let id = placed["orderId"].as_u64().expect("orderId");
    assert_eq!(
        (&placed["status"], &placed["trailingDelta"], &placed["stopPrice"]),
        (&json!("NEW"), &json!(100), &json!("0.00000000"))
    );
    let report = stream.json();
    assert_eq!((&report["x"], &report["d"]), (&json!("NEW"), &json!(100)));
    assert_eq!(state(&mut c, &owner, id), (json!("NEW"), json!(100)));

    // Up to 31,000; 30,700 is not 1 % below it.
    trade_at(&mut c, &maker, &taker, "31000");
    trade_at(&mut c, &maker, &taker, "30700");
    assert_eq!(asks(&server), json!([]));

    // A crash: the replay rebuilds the highest price it tracked.
    drop(stream);
    server.kill9();
    let server = Server::start_in(&data_dir, 2, &args);
    let mut c = server.connect();
    assert_eq!(state(&mut c, &owner, id), (json!("NEW"), json!(100)));
    trade_at(&mut c, &maker, &taker, "30690.01");
    assert_eq!(asks(&server), json!([]));
    // 30,690 is 1 % below 31,000: it fires, and its limit sell rests.
    trade_at(&mut c, &maker, &taker, "30690");
    assert_eq!(asks(&server), json!([["29000.00000000", "0.10000000"]]));
    assert_eq!(state(&mut c, &owner, id), (json!("NEW"), json!(100)));
    drop(server);
}
