//! Iceberg orders through the API: the answers and the user data stream
//! carry `icebergQty`, the depth shows only the visible part, a taker
//! meets it part by part, and all of it survives a crash.

mod common;

use common::account::{create_user, listen_key, signed};
use common::ws::Ws;
use common::{Client, Server, ADMIN_TOKEN};
use serde_json::{json, Value};

fn bids(server: &Server) -> Value {
    server.get("/api/v3/depth?symbol=BTCUSDT&limit=5").json()["bids"].clone()
}

#[test]
fn an_iceberg_shows_its_parts_one_at_a_time_and_survives_a_crash() {
    let data_dir = common::temp_data_dir();
    let args = ["--admin-token", ADMIN_TOKEN];
    let mut server = Server::start_in(&data_dir, 2, &args);
    let maker = create_user(&server, "iceberg-maker", &[("USDT", "100000")]);
    let taker = create_user(&server, "iceberg-taker", &[("BTC", "10")]);
    let mut c = server.connect();
    let key = listen_key(&mut c, &maker);
    let mut stream = Ws::connect(server.addr, &format!("/ws/{key}"));

    let placed = signed(
        &mut c,
        &maker,
        "POST",
        "/api/v3/order",
        "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=30000&icebergQty=0.2\
         &newOrderRespType=RESULT",
    );
    assert_eq!(placed.status, 200, "{}", placed.body_text());
    let placed = placed.json();
    let id = placed["orderId"].as_u64().expect("orderId");
    assert_eq!(
        (&placed["status"], &placed["origQty"], &placed["icebergQty"]),
        (&json!("NEW"), &json!("1.00000000"), &json!("0.20000000"))
    );
    // All of it is locked; 0.2 of it shows.
    assert_eq!(bids(&server), json!([["30000.00000000", "0.20000000"]]));
    let report = stream.json();
    assert_eq!(
        (&report["e"], &report["x"], &report["q"], &report["F"]),
        (
            &json!("executionReport"),
            &json!("NEW"),
            &json!("1.00000000"),
            &json!("0.20000000")
        )
    );

    // A sell of 0.3 takes the visible 0.2, then 0.1 of the next part.
    let sell = signed(
        &mut c,
        &taker,
        "POST",
        "/api/v3/order",
        "symbol=BTCUSDT&side=SELL&type=LIMIT&timeInForce=GTC&quantity=0.3&price=30000",
    )
    .json();
    let fills: Vec<&Value> = sell["fills"]
        .as_array()
        .expect("fills")
        .iter()
        .map(|f| &f["qty"])
        .collect();
    assert_eq!(fills, [&json!("0.20000000"), &json!("0.10000000")]);
    assert_eq!(bids(&server), json!([["30000.00000000", "0.10000000"]]));
    let order_query = format!("symbol=BTCUSDT&orderId={id}");
    let state = |c: &mut Client| {
        let v = signed(c, &maker, "GET", "/api/v3/order", &order_query).json();
        (v["status"].clone(), v["executedQty"].clone(), v["icebergQty"].clone())
    };
    let partly = (json!("PARTIALLY_FILLED"), json!("0.30000000"), json!("0.20000000"));
    assert_eq!(state(&mut c), partly);

    // After a crash the book shows the same part of the same order.
    drop(stream);
    server.kill9();
    let server = Server::start_in(&data_dir, 2, &args);
    let mut c = server.connect();
    assert_eq!(bids(&server), json!([["30000.00000000", "0.10000000"]]));
    assert_eq!(state(&mut c), partly);
    let open = signed(&mut c, &maker, "GET", "/api/v3/openOrders", "symbol=BTCUSDT").json();
    assert_eq!(open[0]["icebergQty"], json!("0.20000000"));

    // The rest fills part by part: 0.1, then 0.2 three times.
    let sell = signed(
        &mut c,
        &taker,
        "POST",
        "/api/v3/order",
        "symbol=BTCUSDT&side=SELL&type=LIMIT&timeInForce=GTC&quantity=0.7&price=30000",
    )
    .json();
    let fills: Vec<&str> = sell["fills"]
        .as_array()
        .expect("fills")
        .iter()
        .map(|f| f["qty"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(fills, ["0.10000000", "0.20000000", "0.20000000", "0.20000000"]);
    assert_eq!(bids(&server), json!([]));
    assert_eq!(state(&mut c).0, json!("FILLED"));
    drop(server);
}
