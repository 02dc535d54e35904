//! Amend keep priority through the API: an order shrinks where it rests,
//! keeps its place in the queue, unlocks what it no longer needs, is
//! reported REPLACED on the user data stream, lists its amendments, and
//! all of it survives a crash; bad amendments get Binance's -2038.

mod common;

use common::account::{create_user, listen_key, signed, User};
use common::ws::Ws;
use common::{Client, Server, ADMIN_TOKEN};
use serde_json::{json, Value};

fn order(c: &mut Client, user: &User, side: &str, qty: &str, price: &str, client: &str) -> Value {
    let query = format!(
        "symbol=BTCUSDT&side={side}&type=LIMIT&timeInForce=GTC&quantity={qty}&price={price}&newClientOrderId={client}"
    );
    let r = signed(c, user, "POST", "/api/v3/order", &query);
    assert_eq!(r.status, 200, "{}", r.body_text());
    r.json()
}

fn amend(c: &mut Client, user: &User, query: &str) -> (u16, Value) {
    let r = signed(c, user, "PUT", "/api/v3/order/amend/keepPriority", query);
    (r.status, r.json())
}

fn usdt(c: &mut Client, user: &User) -> (String, String) {
    let account = signed(c, user, "GET", "/api/v3/account", "").json();
    let balances = account["balances"].as_array().expect("balances").clone();
    let usdt = balances.iter().find(|b| b["asset"] == "USDT").expect("USDT");
    (
        usdt["free"].as_str().unwrap_or("").to_string(),
        usdt["locked"].as_str().unwrap_or("").to_string(),
    )
}

/// An order's amendments as listed, without their times.
fn amendments(c: &mut Client, user: &User, query: &str) -> Vec<Value> {
    let listed = signed(c, user, "GET", "/api/v3/order/amendments", query).json();
    listed
        .as_array()
        .expect("a list")
        .iter()
        .cloned()
        .map(timeless)
        .collect()
}

/// Drops the fields that carry the time of the request.
fn timeless(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.remove("transactTime");
        if let Some(inner) = o.get_mut("amendedOrder").and_then(Value::as_object_mut) {
            inner.remove("workingTime");
        }
        o.remove("time");
    }
    v
}

#[test]
fn an_amended_order_keeps_its_place_and_survives_a_crash() {
    let data_dir = common::temp_data_dir();
    let args = ["--admin-token", ADMIN_TOKEN];
    let mut server = Server::start_in(&data_dir, 2, &args);
    let maker = create_user(&server, "amend-maker", &[("USDT", "100000")]);
    let taker = create_user(&server, "amend-taker", &[("BTC", "10")]);
    let mut c = server.connect();
    let key = listen_key(&mut c, &maker);
    let mut stream = Ws::connect(server.addr, &format!("/ws/{key}"));

    // Three bids at one price; the middle one shrinks from 1 to 0.4.
    let ids: Vec<u64> = ["first", "middle", "last"]
        .iter()
        .map(|name| {
            order(&mut c, &maker, "BUY", "1", "30000", name)["orderId"]
                .as_u64()
                .expect("orderId")
        })
        .collect();
    assert_eq!(usdt(&mut c, &maker), ("10000.00000000".into(), "90000.00000000".into()));
    let query = format!("symbol=BTCUSDT&orderId={}&newQty=0.4&newClientOrderId=middle-2", ids[1]);
    let (status, body) = amend(&mut c, &maker, &query);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        timeless(body),
        json!({"executionId": ids[1] * 16 + 1, "amendedOrder": {
            "symbol": "BTCUSDT", "orderId": ids[1], "orderListId": -1,
            "origClientOrderId": "middle", "clientOrderId": "middle-2",
            "price": "30000.00000000", "qty": "0.40000000", "executedQty": "0.00000000",
            "preventedQty": "0.00000000", "quoteOrderQty": "0.00000000", "cumulativeQuoteQty": "0.00000000",
            "status": "NEW", "timeInForce": "GTC", "type": "LIMIT", "side": "BUY",
            "selfTradePreventionMode": "NONE"}})
    );
    // 0.6 × 30000 unlocked at once.
    assert_eq!(usdt(&mut c, &maker), ("28000.00000000".into(), "72000.00000000".into()));
    let depth = server.get("/api/v3/depth?symbol=BTCUSDT&limit=5").json();
    assert_eq!(depth["bids"], json!([["30000.00000000", "2.40000000"]]));

    // The user data stream: NEW three times, then the REPLACED report.
    let replaced = loop {
        let event = stream.json();
        if event["e"] == "executionReport" && event["x"] == "REPLACED" {
            break event;
        }
    };
    let fields = ["c", "C", "x", "X", "q", "i", "z"];
    let picked: Vec<&Value> = fields.iter().map(|f| &replaced[f]).collect();
    assert_eq!(
        picked,
        [
            &json!("middle-2"),
            &json!("middle"),
            &json!("REPLACED"),
            &json!("NEW"),
            &json!("0.40000000"),
            &json!(ids[1]),
            &json!("0.00000000")
        ]
    );
    let position = stream.json();
    assert_eq!(position["e"], "outboundAccountPosition");
    assert_eq!(
        position["B"][1],
        json!({"a": "USDT", "f": "28000.00000000", "l": "72000.00000000"})
    );

    // A sell of 1.2 takes the first bid and 0.2 of the middle one, which
    // kept its place ahead of the last.
    let sell = signed(
        &mut c,
        &taker,
        "POST",
        "/api/v3/order",
        "symbol=BTCUSDT&side=SELL&type=LIMIT&timeInForce=GTC&quantity=1.2&price=30000",
    );
    assert_eq!(sell.json()["status"], "FILLED");
    let state = |c: &mut Client, id: u64| {
        let v = signed(
            c,
            &maker,
            "GET",
            "/api/v3/order",
            &format!("symbol=BTCUSDT&orderId={id}"),
        )
        .json();
        (v["status"].clone(), v["origQty"].clone(), v["executedQty"].clone())
    };
    assert_eq!(
        state(&mut c, ids[1]),
        (json!("PARTIALLY_FILLED"), json!("0.40000000"), json!("0.20000000"))
    );
    assert_eq!(
        state(&mut c, ids[2]),
        (json!("NEW"), json!("1.00000000"), json!("0.00000000"))
    );

    // Refusals leave the order as it is.
    let refusals = [
        ("newQty=0.5", -2038, "Order amend (quantity increase) is not supported."),
        (
            "newQty=0.4",
            -2038,
            "The requested action would change no state; rejecting",
        ),
        ("newQty=0.000001", -1013, "Filter failure: LOT_SIZE"),
        ("newQty=0.3&newClientOrderId=last", -2038, "Duplicate order sent."),
        ("newQty=abc", -1100, "Illegal characters found in parameter 'newQty'."),
        (
            "",
            -1102,
            "Mandatory parameter 'newQty' was not sent, was empty/null, or malformed.",
        ),
    ];
    for (extra, code, msg) in refusals {
        let query = format!("symbol=BTCUSDT&orderId={}&{extra}", ids[1]);
        let (status, body) = amend(&mut c, &maker, &query);
        assert_eq!((status, body), (400, json!({"code": code, "msg": msg})), "{extra}");
    }
    let (status, body) = amend(&mut c, &maker, "symbol=BTCUSDT&orderId=999999&newQty=0.1");
    assert_eq!(
        (status, body),
        (400, json!({"code": -2038, "msg": "Unknown order sent."}))
    );
    let (status, body) = amend(&mut c, &taker, &format!("symbol=BTCUSDT&orderId={}&newQty=0.1", ids[2]));
    assert_eq!(
        (status, body),
        (400, json!({"code": -2038, "msg": "Unknown order sent."}))
    );
    assert_eq!(state(&mut c, ids[1]).1, json!("0.40000000"));

    // The list of amendments, then a crash: the amended order, its lock
    // and its amendments are all back.
    let list_query = format!("symbol=BTCUSDT&orderId={}", ids[1]);
    let listed = amendments(&mut c, &maker, &list_query);
    let expected = vec![
        json!({"symbol": "BTCUSDT", "orderId": ids[1], "executionId": ids[1] * 16 + 1,
        "origClientOrderId": "middle", "newClientOrderId": "middle-2", "origQty": "1.00000000", "newQty": "0.40000000"}),
    ];
    assert_eq!(listed, expected);
    let balances_before = usdt(&mut c, &maker);
    drop(stream);
    server.kill9();
    let server = Server::start_in(&data_dir, 2, &args);
    let mut c = server.connect();
    assert_eq!(usdt(&mut c, &maker), balances_before);
    assert_eq!(amendments(&mut c, &maker, &list_query), expected);
    let depth = server.get("/api/v3/depth?symbol=BTCUSDT&limit=5").json();
    assert_eq!(depth["bids"], json!([["30000.00000000", "1.20000000"]]));

    // Down to what it executed: nothing is left, the order expires.
    let (status, body) = amend(&mut c, &maker, &format!("symbol=BTCUSDT&orderId={}&newQty=0.2", ids[1]));
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (
            &body["amendedOrder"]["status"],
            &body["amendedOrder"]["qty"],
            &body["executionId"]
        ),
        (&json!("EXPIRED"), &json!("0.20000000"), &json!(ids[1] * 16 + 2))
    );
    assert_eq!(usdt(&mut c, &maker).1, "30000.00000000");
    drop(server);
}
