//! The WebSocket API (`/ws-api/v3`) end to end: every method with a REST
//! twin answers exactly what the twin answers on the same state, signed
//! requests fail with Binance's codes, orders placed on a socket trade with
//! orders placed over REST, and user data subscriptions get their user's
//! events on whichever shard holds the socket.

mod common;

use common::account::{create_user, create_user_with, now_ms, signed, User};
use common::ws::{filled_buy_report, on_every_shard, Ws, WAIT};
use common::{Server, ADMIN_TOKEN};
use serde_json::{json, Map, Value};
use std::time::Instant;

const API: &str = "/ws-api/v3";
const FUNDS: &[(&str, &str)] = &[("BTC", "10"), ("USDT", "1000000")];

/// `params` signed as Binance's WebSocket API wants: every parameter but
/// `signature`, sorted by name, `name=value` joined with `&`.
fn sign(user: &User, mut params: Map<String, Value>) -> Value {
    params.insert("apiKey".into(), json!(user.key));
    params.entry("timestamp").or_insert(json!(now_ms()));
    let payload = payload(&params);
    let signature = user.signer.sign_bare(payload.as_bytes());
    params.insert("signature".into(), json!(signature));
    Value::Object(params)
}

fn payload(params: &Map<String, Value>) -> String {
    let mut pairs: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| match v {
            Value::String(s) => (k.clone(), s.clone()),
            other => (k.clone(), other.to_string()),
        })
        .collect();
    pairs.sort();
    let pairs: Vec<String> = pairs.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    pairs.join("&")
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

/// Sends a request and returns its response, skipping user data events.
fn call(ws: &mut Ws, id: Value, method: &str, params: Value) -> Value {
    ws.send_json(json!({ "id": id, "method": method, "params": params }));
    let deadline = Instant::now() + WAIT;
    loop {
        assert!(Instant::now() < deadline, "no response to {method}");
        let message = ws.json();
        if message.get("subscriptionId").is_none() {
            assert_eq!(message["id"], id, "responses come back in request order");
            return message;
        }
    }
}

/// The result of a request that must succeed.
fn result(ws: &mut Ws, method: &str, params: Value) -> Value {
    let response = call(ws, json!(method), method, params);
    assert_eq!(response["status"], 200, "{method}: {response}");
    response["result"].clone()
}

fn rest(server: &Server, target: &str) -> Value {
    let response = server.get(target);
    assert_eq!(response.status, 200, "{target}: {}", response.body_text());
    response.json()
}

fn rest_signed(server: &Server, user: &User, method: &str, path: &str, query: &str) -> Value {
    let response = signed(&mut server.connect(), user, method, path, query);
    assert_eq!(response.status, 200, "{path}: {}", response.body_text());
    response.json()
}

/// An account object without `updateTime`, which is the time of the
/// request itself.
/// A user's BTC balance object from `GET /api/v3/account`.
fn btc_balance(server: &Server, user: &User) -> Value {
    let account = rest_signed(server, user, "GET", "/api/v3/account", "");
    let balances = account["balances"].as_array().cloned().unwrap_or_default();
    balances.into_iter().find(|b| b["asset"] == "BTC").expect("BTC")
}

fn without_update_time(mut account: Value) -> Value {
    if let Some(o) = account.as_object_mut() {
        o.remove("updateTime");
    }
    account
}

fn limit_order(user: &User, side: &str, qty: &str, price: &str) -> Value {
    sign(
        user,
        object(json!({
            "symbol": "BTCUSDT", "side": side, "type": "LIMIT", "timeInForce": "GTC",
            "quantity": qty, "price": price, "newOrderRespType": "FULL",
        })),
    )
}

#[test]
fn market_methods_answer_as_their_rest_twins() {
    let server = Server::start(2, &["--admin-token", ADMIN_TOKEN]);
    let (maker, taker) = (create_user(&server, "m", FUNDS), create_user(&server, "t", FUNDS));
    let mut ws = Ws::connect(server.addr, API);
    result(&mut ws, "order.place", limit_order(&maker, "SELL", "0.002", "30000"));
    result(&mut ws, "order.place", limit_order(&taker, "BUY", "0.001", "30000"));
    result(&mut ws, "order.place", limit_order(&maker, "BUY", "0.003", "29000"));
    assert_eq!(result(&mut ws, "ping", json!({})), json!({}));
    let time = result(&mut ws, "time", json!({}))["serverTime"]
        .as_u64()
        .expect("serverTime");
    assert!(time.abs_diff(now_ms()) < 60_000, "serverTime {time}");
    let table: &[(&str, Value, &str)] = &[
        (
            "depth",
            json!({"symbol": "BTCUSDT", "limit": 5}),
            "/api/v3/depth?symbol=BTCUSDT&limit=5",
        ),
        (
            "trades.recent",
            json!({"symbol": "BTCUSDT"}),
            "/api/v3/trades?symbol=BTCUSDT",
        ),
        (
            "trades.historical",
            json!({"symbol": "BTCUSDT", "fromId": 0}),
            "/api/v3/historicalTrades?symbol=BTCUSDT&fromId=0",
        ),
        (
            "trades.aggregate",
            json!({"symbol": "BTCUSDT"}),
            "/api/v3/aggTrades?symbol=BTCUSDT",
        ),
        (
            "klines",
            json!({"symbol": "BTCUSDT", "interval": "1m"}),
            "/api/v3/klines?symbol=BTCUSDT&interval=1m",
        ),
        (
            "uiKlines",
            json!({"symbol": "BTCUSDT", "interval": "1h"}),
            "/api/v3/uiKlines?symbol=BTCUSDT&interval=1h",
        ),
        (
            "ticker.price",
            json!({"symbol": "BTCUSDT"}),
            "/api/v3/ticker/price?symbol=BTCUSDT",
        ),
        (
            "ticker.price",
            json!({"symbols": ["BTCUSDT", "ETHUSDT"]}),
            "/api/v3/ticker/price?symbols=%5B%22BTCUSDT%22,%22ETHUSDT%22%5D",
        ),
        (
            "ticker.book",
            json!({"symbol": "BTCUSDT"}),
            "/api/v3/ticker/bookTicker?symbol=BTCUSDT",
        ),
        (
            "exchangeInfo",
            json!({"symbol": "BTCUSDT"}),
            "/api/v3/exchangeInfo?symbol=BTCUSDT",
        ),
    ];
    for (method, params, target) in table {
        let mut from_ws = result(&mut ws, method, params.clone());
        let mut from_rest = rest(&server, target);
        // The one field that is the time of the request itself.
        for v in [&mut from_ws, &mut from_rest] {
            if let Some(o) = v.as_object_mut() {
                o.remove("serverTime");
            }
        }
        assert_eq!(from_ws, from_rest, "{method} {params}");
    }
    assert_eq!(
        result(&mut ws, "avgPrice", json!({"symbol": "BTCUSDT"}))["price"],
        rest(&server, "/api/v3/avgPrice?symbol=BTCUSDT")["price"]
    );
    let ticker = result(&mut ws, "ticker.24hr", json!({"symbol": "BTCUSDT"}));
    let rest_ticker = rest(&server, "/api/v3/ticker/24hr?symbol=BTCUSDT");
    for field in [
        "lastPrice",
        "volume",
        "quoteVolume",
        "count",
        "firstId",
        "lastId",
        "bidPrice",
        "askPrice",
    ] {
        assert_eq!(ticker[field], rest_ticker[field], "ticker.24hr {field}");
    }
    assert_eq!(
        (ticker["lastPrice"].as_str(), ticker["count"].as_u64()),
        (Some("30000.00000000"), Some(1))
    );
}

#[test]
fn account_methods_answer_as_their_rest_twins() {
    let server = Server::start(2, &["--admin-token", ADMIN_TOKEN]);
    let (maker, taker) = (create_user(&server, "m", FUNDS), create_user(&server, "t", FUNDS));
    let mut ws = Ws::connect(server.addr, API);
    let sell = result(&mut ws, "order.place", limit_order(&maker, "SELL", "0.002", "30000"));
    let buy = result(&mut ws, "order.place", limit_order(&taker, "BUY", "0.001", "30000"));
    assert_eq!(
        (
            buy["status"].as_str(),
            buy["fills"][0]["price"].as_str(),
            buy["fills"][0]["qty"].as_str()
        ),
        (Some("FILLED"), Some("30000.00000000"), Some("0.00100000"))
    );
    let order_id = sell["orderId"].as_u64().expect("orderId");
    let status = result(
        &mut ws,
        "order.status",
        sign(&maker, object(json!({"symbol": "BTCUSDT", "orderId": order_id}))),
    );
    let query = format!("symbol=BTCUSDT&orderId={order_id}");
    assert_eq!(status, rest_signed(&server, &maker, "GET", "/api/v3/order", &query));
    assert_eq!(status["executedQty"], "0.00100000");
    let table: &[(&str, Value, &str, &str)] = &[
        (
            "openOrders.status",
            json!({"symbol": "BTCUSDT"}),
            "/api/v3/openOrders",
            "symbol=BTCUSDT",
        ),
        (
            "allOrders",
            json!({"symbol": "BTCUSDT"}),
            "/api/v3/allOrders",
            "symbol=BTCUSDT",
        ),
        (
            "myTrades",
            json!({"symbol": "BTCUSDT"}),
            "/api/v3/myTrades",
            "symbol=BTCUSDT",
        ),
        ("account.status", json!({}), "/api/v3/account", ""),
        ("account.rateLimits.orders", json!({}), "/api/v3/rateLimit/order", ""),
    ];
    for (method, params, path, query) in table {
        let from_ws = result(&mut ws, method, sign(&maker, object(params.clone())));
        let from_rest = rest_signed(&server, &maker, "GET", path, query);
        assert_eq!(without_update_time(from_ws), without_update_time(from_rest), "{method}");
    }
    let canceled = result(
        &mut ws,
        "openOrders.cancelAll",
        sign(&maker, object(json!({"symbol": "BTCUSDT"}))),
    );
    assert_eq!(
        (canceled[0]["orderId"].as_u64(), canceled[0]["status"].as_str()),
        (Some(order_id), Some("CANCELED"))
    );
    let open = result(&mut ws, "openOrders.status", sign(&maker, object(json!({}))));
    assert_eq!(open, json!([]));
    let rate = result(&mut ws, "account.rateLimits.orders", sign(&taker, object(json!({}))));
    assert_eq!(
        rate,
        json!([
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100, "count": 0},
            {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 200000, "count": 0},
        ]),
        "the taker's order filled at once, so it no longer counts as unfilled"
    );
}

#[test]
fn responses_frame_results_errors_and_rate_limits_like_binance() {
    let server = Server::start(1, &["--admin-token", ADMIN_TOKEN]);
    let user = create_user(&server, "u", FUNDS);
    let mut ws = Ws::connect(server.addr, API);
    // The connection itself cost 2 weight.
    assert_eq!(
        call(&mut ws, json!(1), "ping", json!({})),
        json!({"id": 1, "status": 200, "result": {}, "rateLimits": [
            {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000, "count": 3}
        ]})
    );
    assert_eq!(
        call(&mut ws, json!("a"), "v3/ping", json!({"returnRateLimits": false})),
        json!({"id": "a", "status": 200, "result": {}})
    );
    assert_eq!(call(&mut ws, Value::Null, "ping", json!(null))["id"], Value::Null);
    let placed = call(
        &mut ws,
        json!(2),
        "order.place",
        limit_order(&user, "BUY", "0.001", "20000"),
    );
    assert_eq!(
        placed["rateLimits"],
        json!([
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100, "count": 1},
            {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 200000, "count": 1},
            {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000, "count": 6}
        ])
    );
    let mut quiet = Ws::connect(server.addr, &format!("{API}?returnRateLimits=false"));
    assert_eq!(
        call(&mut quiet, json!(3), "time", json!({}))
            .as_object()
            .map(|o| o.contains_key("rateLimits")),
        Some(false)
    );
    assert_eq!(
        call(&mut quiet, json!(4), "ping", json!({"returnRateLimits": true}))["rateLimits"][0]["count"],
        json!(10)
    );
}

#[test]
fn bad_requests_get_binance_errors_with_their_id() {
    let server = Server::start(1, &["--admin-token", ADMIN_TOKEN]);
    let user = create_user(&server, "u", FUNDS);
    let stranger = User {
        id: 0,
        key: "000000009999abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ".into(),
        signer: user.signer.clone(),
    };
    let mut ws = Ws::connect(server.addr, API);
    let order = || {
        object(
            json!({"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
        "quantity": "0.001", "price": "20000"}),
        )
    };
    let mut bad_signature = object(sign(&user, order()));
    bad_signature.insert("signature".into(), json!("00".repeat(32)));
    let mut no_signature = object(sign(&user, order()));
    no_signature.remove("signature");
    let mut no_key = order();
    no_key.insert("timestamp".into(), json!(now_ms()));
    let mut stale = order();
    stale.insert("timestamp".into(), json!(now_ms() - 120_000));
    let mut wide = order();
    wide.insert("recvWindow".into(), json!(70_000));
    let table: Vec<(&str, Value, u16, i64, &str)> = vec![
        (
            "bad signature",
            Value::Object(bad_signature),
            400,
            -1022,
            "Signature for this request is not valid.",
        ),
        (
            "no signature",
            Value::Object(no_signature),
            400,
            -1102,
            "Mandatory parameter 'signature' was not sent, was empty/null, or malformed.",
        ),
        (
            "no apiKey",
            Value::Object(no_key),
            400,
            -1102,
            "Mandatory parameter 'apiKey' was not sent, was empty/null, or malformed.",
        ),
        (
            "stale timestamp",
            sign(&user, stale),
            400,
            -1021,
            "Timestamp for this request is outside of the recvWindow.",
        ),
        (
            "recvWindow too large",
            sign(&user, wide),
            400,
            -1131,
            "recvWindow must be less than 60000",
        ),
        (
            "unknown key",
            sign(&stranger, order()),
            401,
            -2015,
            "Invalid API-key, IP, or permissions for action.",
        ),
        (
            "bad quantity",
            sign(
                &user,
                object(json!({"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT",
                "timeInForce": "GTC", "quantity": "-1", "price": "20000"})),
            ),
            400,
            -1100,
            "Illegal characters found in parameter 'quantity'.",
        ),
    ];
    for (i, (case, params, status, code, msg)) in table.into_iter().enumerate() {
        let response = call(&mut ws, json!(i), "order.place", params);
        assert_eq!(
            (
                &response["status"],
                &response["error"]["code"],
                &response["error"]["msg"]
            ),
            (&json!(status), &json!(code), &json!(msg)),
            "{case}: {response}"
        );
    }
    let raw: &[(&str, Value)] = &[
        (
            "not json",
            json!({"id": null, "status": 400, "error": {"code": -1135, "msg": "Invalid JSON Request"}}),
        ),
        (
            r#"{"id":5,"method":"order.explode"}"#,
            json!({"id": 5, "status": 400, "error": {"code": -1020, "msg": "Unknown method 'order.explode'."}}),
        ),
        (
            r#"{"id":6}"#,
            json!({"id": 6, "status": 400, "error": {"code": -1102,
                "msg": "Mandatory parameter 'method' was not sent, was empty/null, or malformed."}}),
        ),
        (
            r#"{"id":7,"method":"depth","params":{"symbol":{"x":1}}}"#,
            json!({"id": 7, "status": 400, "error": {"code": -1135,
                "msg": "JSON sent for parameter 'symbol' is not valid"}}),
        ),
        (
            r#"{"id":8,"method":"userDataStream.start"}"#,
            json!({"id": 8, "status": 400, "error": {"code": -1020,
                "msg": "userDataStream.start, .ping and .stop are no longer available; use userDataStream.subscribe \
                        or userDataStream.subscribe.signature."}}),
        ),
        (
            r#"{"id":9,"method":"userDataStream.unsubscribe","params":{"subscriptionId":3}}"#,
            json!({"id": 9, "status": 400, "error": {"code": -2036, "msg": "User Data Stream subscription not active."}}),
        ),
        (
            r#"{"id":10,"method":"userDataStream.subscribe"}"#,
            json!({"id": 10, "status": 401, "error": {"code": -1002,
                "msg": "userDataStream.subscribe needs a session logged on with session.logon."}}),
        ),
    ];
    for (text, expected) in raw {
        ws.send(tradsys::ws::Opcode::Text, text.as_bytes());
        let mut response = ws.json();
        if let Some(o) = response.as_object_mut() {
            o.remove("rateLimits");
        }
        assert_eq!(&response, expected, "{text}");
    }
    // Still serving after all of that.
    assert_eq!(result(&mut ws, "ping", json!({})), json!({}));
}

/// The next event of subscription `id` whose type is `kind`.
fn event(ws: &mut Ws, id: u64, kind: &str) -> Value {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        let message = ws.json();
        if message["subscriptionId"] == id && message["event"]["e"] == kind {
            return message["event"].clone();
        }
    }
    panic!("no {kind} event for subscription {id}");
}

/// Reads user data events until `done` says they are all there; answers
/// to requests are not expected meanwhile.
fn events_until(ws: &mut Ws, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let mut seen = Vec::new();
    let deadline = Instant::now() + WAIT;
    while !done(&seen) {
        assert!(Instant::now() < deadline, "events missing; got {seen:?}");
        let message = ws.json();
        assert!(message.get("subscriptionId").is_some(), "not an event: {message}");
        seen.push(message);
    }
    seen
}

#[test]
fn subscriptions_get_their_users_events_on_every_shard() {
    let server = Server::start(
        2,
        &[
            "--admin-token",
            ADMIN_TOKEN,
            "--ws-user-data-connections-per-user-max",
            "64",
        ],
    );
    let (maker, taker) = (create_user(&server, "m", FUNDS), create_user(&server, "t", FUNDS));
    // Sockets on both shards: one of them is not the taker's shard.
    let mut conns = on_every_shard(&server, 2, API);
    for ws in &mut conns {
        let subscribed = result(ws, "userDataStream.subscribe.signature", sign(&taker, Map::new()));
        assert_eq!(subscribed, json!({"subscriptionId": 0}));
        let again = call(
            ws,
            json!("again"),
            "userDataStream.subscribe.signature",
            sign(&taker, Map::new()),
        );
        assert_eq!(again["error"]["code"], -2035);
        let second = result(ws, "userDataStream.subscribe.signature", sign(&maker, Map::new()));
        assert_eq!(second, json!({"subscriptionId": 1}));
        assert_eq!(
            result(ws, "session.subscriptions", json!({})),
            json!([{"subscriptionId": 0}, {"subscriptionId": 1}])
        );
        assert_eq!(result(ws, "session.status", json!({}))["userDataStream"], true);
    }
    let mut trader = Ws::connect(server.addr, API);
    result(
        &mut trader,
        "order.place",
        limit_order(&maker, "SELL", "0.001", "30000"),
    );
    let placed = result(&mut trader, "order.place", limit_order(&taker, "BUY", "0.001", "30000"));
    for ws in &mut conns {
        // The two users' events come from their own shards, in either order.
        let seen = events_until(ws, |seen| {
            let has = |id: u64, kind: &str, status: &str| {
                seen.iter()
                    .any(|m| m["subscriptionId"] == id && m["event"]["e"] == kind && m["event"]["X"] == status)
            };
            has(0, "executionReport", "FILLED")
                && has(1, "executionReport", "FILLED")
                && seen
                    .iter()
                    .filter(|m| m["subscriptionId"] == 0 && m["event"]["e"] == "outboundAccountPosition")
                    .count()
                    >= 1
        });
        let find = |id: u64, kind: &str| {
            seen.iter()
                .find(|m| {
                    m["subscriptionId"] == id
                        && m["event"]["e"] == kind
                        && (kind != "executionReport" || m["event"]["x"] == "TRADE")
                })
                .map(|m| m["event"].clone())
                .unwrap_or_else(|| panic!("no {kind} for subscription {id}"))
        };
        let report = find(0, "executionReport");
        assert_eq!(report, filled_buy_report(&report, &placed));
        let position = find(0, "outboundAccountPosition");
        assert_eq!(
            position["B"][1],
            json!({"a": "USDT", "f": "999970.00000000", "l": "0.00000000"})
        );
        let maker_fill = find(1, "executionReport");
        assert_eq!(
            (maker_fill["S"].as_str(), maker_fill["X"].as_str()),
            (Some("SELL"), Some("FILLED"))
        );
        // Unsubscribing one ends it with eventStreamTerminated; the other stays.
        let unsubscribed = call(
            ws,
            json!("u"),
            "userDataStream.unsubscribe",
            json!({"subscriptionId": 0}),
        );
        assert_eq!(unsubscribed["result"], json!({}));
        let terminated = event(ws, 0, "eventStreamTerminated");
        assert_eq!(terminated.as_object().map(|o| o.len()), Some(2));
        assert_eq!(
            result(ws, "session.subscriptions", json!({})),
            json!([{"subscriptionId": 1}])
        );
    }
    // The next subscription takes a new id.
    let resubscribed = result(
        &mut conns[0],
        "userDataStream.subscribe.signature",
        sign(&taker, Map::new()),
    );
    assert_eq!(resubscribed, json!({"subscriptionId": 2}));
}

/// Requests sent together are answered together: in order, one answer
/// each, each seeing what the ones before it did, whether the user is on
/// the socket's shard (run there, settled once) or on the other (carried
/// there in one call).
#[test]
fn pipelined_requests_are_answered_in_order_on_every_shard() {
    let server = Server::start(2, &["--admin-token", ADMIN_TOKEN]);
    let user = create_user(&server, "pipe", FUNDS);
    for (n, mut ws) in on_every_shard(&server, 2, API).into_iter().enumerate() {
        let client_id = format!("pipe-{n}");
        let place = sign(
            &user,
            object(json!({
                "symbol": "BTCUSDT", "side": "SELL", "type": "LIMIT", "timeInForce": "GTC",
                "quantity": "0.002", "price": "31000", "newClientOrderId": client_id,
            })),
        );
        let mut forged = object(place.clone());
        forged.insert("newClientOrderId".into(), json!("forged"));
        let by_id = || object(json!({"symbol": "BTCUSDT", "origClientOrderId": client_id}));
        let requests = [
            json!({"id": 1, "method": "order.place", "params": place}).to_string(),
            json!({"id": 2, "method": "order.status", "params": sign(&user, by_id())}).to_string(),
            json!({"id": 3, "method": "order.place", "params": forged}).to_string(),
            "{\"id\":4,\"method\":".to_string(),
            json!({"id": 5, "method": "order.cancel", "params": sign(&user, by_id())}).to_string(),
            json!({"id": 6, "method": "openOrders.status", "params": sign(&user, object(json!({"symbol": "BTCUSDT"})))})
                .to_string(),
            json!({"id": 7, "method": "time"}).to_string(),
        ];
        ws.send_all(&requests);
        let answers: Vec<Value> = (0..requests.len()).map(|_| ws.json()).collect();
        let seen: Vec<(Value, Value)> = answers.iter().map(|a| (a["id"].clone(), a["status"].clone())).collect();
        assert_eq!(
            seen,
            vec![
                (json!(1), json!(200)),
                (json!(2), json!(200)),
                (json!(3), json!(400)),
                (json!(null), json!(400)),
                (json!(5), json!(200)),
                (json!(6), json!(200)),
                (json!(7), json!(200)),
            ],
            "socket {n}: {answers:?}"
        );
        let order_id = &answers[0]["result"]["orderId"];
        assert_eq!(
            (&answers[1]["result"]["orderId"], &answers[1]["result"]["status"]),
            (order_id, &json!("NEW"))
        );
        assert_eq!(
            answers[2]["error"],
            json!({"code": -1022, "msg": "Signature for this request is not valid."})
        );
        assert_eq!(answers[3]["error"]["code"], json!(-1135));
        assert_eq!(
            (&answers[4]["result"]["orderId"], &answers[4]["result"]["status"]),
            (order_id, &json!("CANCELED"))
        );
        assert_eq!(answers[5]["result"], json!([]));
    }
    let account = rest_signed(&server, &user, "GET", "/api/v3/account", "omitZeroBalances=true");
    assert_eq!(
        account["balances"],
        json!([
            {"asset": "BTC", "free": "10.00000000", "locked": "0.00000000"},
            {"asset": "USDT", "free": "1000000.00000000", "locked": "0.00000000"},
        ])
    );
}

#[test]
fn orders_on_a_socket_and_over_rest_see_the_same_fills() {
    let server = Server::start(2, &["--admin-token", ADMIN_TOKEN]);
    let (ws_user, rest_user) = (create_user(&server, "ws", FUNDS), create_user(&server, "rest", FUNDS));
    let mut ws = Ws::connect(server.addr, API);
    let placed = result(&mut ws, "order.place", limit_order(&ws_user, "SELL", "0.004", "31000"));
    let bought = rest_signed(
        &server,
        &rest_user,
        "POST",
        "/api/v3/order",
        "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.003&price=31000&newOrderRespType=FULL",
    );
    assert_eq!(bought["status"], "FILLED");
    let ws_trades = result(
        &mut ws,
        "myTrades",
        sign(&ws_user, object(json!({"symbol": "BTCUSDT"}))),
    );
    let rest_trades = rest_signed(&server, &rest_user, "GET", "/api/v3/myTrades", "symbol=BTCUSDT");
    assert_eq!(
        (ws_trades[0]["id"].clone(), ws_trades[0]["price"].clone()),
        (rest_trades[0]["id"].clone(), json!("31000.00000000"))
    );
    assert_eq!(ws_trades[0]["qty"], rest_trades[0]["qty"]);
    assert_eq!(
        (ws_trades[0]["isBuyer"].as_bool(), rest_trades[0]["isBuyer"].as_bool()),
        (Some(false), Some(true))
    );
    let ws_account = result(&mut ws, "account.status", sign(&ws_user, Map::new()));
    let rest_account = rest_signed(&server, &ws_user, "GET", "/api/v3/account", "");
    assert_eq!(without_update_time(ws_account), without_update_time(rest_account));
    let cancel = result(
        &mut ws,
        "order.cancel",
        sign(
            &ws_user,
            object(json!({"symbol": "BTCUSDT", "orderId": placed["orderId"]})),
        ),
    );
    assert_eq!(
        (cancel["status"].as_str(), cancel["executedQty"].as_str()),
        (Some("CANCELED"), Some("0.00300000"))
    );
}

#[test]
fn ed25519_and_rsa_keys_sign_requests_and_only_ed25519_logs_on() {
    let server = Server::start(2, &["--admin-token", ADMIN_TOKEN]);
    let ed = create_user_with(&server, "ed", FUNDS, "ED25519");
    let rsa = create_user_with(&server, "rsa", FUNDS, "RSA");
    let hmac = create_user(&server, "hmac", FUNDS);
    let mut ws = Ws::connect(server.addr, API);
    // Each key type signs the sorted parameters.
    let sold = result(&mut ws, "order.place", limit_order(&rsa, "SELL", "0.001", "30000"));
    let bought = result(&mut ws, "order.place", limit_order(&ed, "BUY", "0.001", "30000"));
    assert_eq!(
        (sold["status"].as_str(), bought["status"].as_str()),
        (Some("NEW"), Some("FILLED"))
    );
    // Another key pair's signature of the same payload fails.
    let mut forged = object(limit_order(&ed, "BUY", "0.001", "30000"));
    let other = common::account::Signer::fixture("ED25519", "ed25519-other");
    let signature = other.sign_bare(
        payload(&{
            let mut p = forged.clone();
            p.remove("signature");
            p
        })
        .as_bytes(),
    );
    forged.insert("signature".into(), json!(signature));
    let response = call(&mut ws, json!("forged"), "order.place", Value::Object(forged));
    assert_eq!(
        (&response["status"], &response["error"]["code"]),
        (&json!(400), &json!(-1022))
    );

    // session.logon: Ed25519 only, as on Binance.
    for user in [&hmac, &rsa] {
        let refused = call(&mut ws, json!("logon"), "session.logon", sign(user, Map::new()));
        assert_eq!(
            (&refused["status"], &refused["error"]["code"], &refused["error"]["msg"]),
            (
                &json!(400),
                &json!(-1020),
                &json!("Only Ed25519 API keys are supported for session.logon.")
            )
        );
    }
    let before = now_ms();
    let status = result(&mut ws, "session.logon", sign(&ed, Map::new()));
    assert_eq!(status["apiKey"], json!(ed.key));
    assert!(status["authorizedSince"].as_u64().expect("authorizedSince") >= before);
    assert_eq!(
        (status["userDataStream"].as_bool(), status["returnRateLimits"].as_bool()),
        (Some(false), Some(true))
    );
    // Logged on: signed methods need only a timestamp.
    let account = result(&mut ws, "account.status", json!({"timestamp": now_ms()}));
    assert_eq!(account["uid"], json!(ed.id));
    let stale = call(
        &mut ws,
        json!("stale"),
        "account.status",
        json!({"timestamp": now_ms() - 120_000}),
    );
    assert_eq!(stale["error"]["code"], -1021);
    let untimed = call(&mut ws, json!("untimed"), "account.status", json!({}));
    assert_eq!(untimed["error"]["code"], -1102);
    // An explicit apiKey overrides the session's for that request.
    let other_account = result(&mut ws, "account.status", sign(&hmac, Map::new()));
    assert_eq!(other_account["uid"], json!(hmac.id));
    // userDataStream.subscribe on the logged-on key; logout ends it.
    assert_eq!(
        result(&mut ws, "userDataStream.subscribe", json!({})),
        json!({"subscriptionId": 0})
    );
    assert_eq!(
        result(&mut ws, "userDataStream.subscribe.signature", sign(&hmac, Map::new())),
        json!({"subscriptionId": 1})
    );
    let mut trader = Ws::connect(server.addr, API);
    result(&mut trader, "order.place", limit_order(&hmac, "SELL", "0.001", "30500"));
    let placed = result(&mut trader, "order.place", limit_order(&ed, "BUY", "0.001", "30500"));
    // NEW comes first, as for every accepted order; then the trade.
    let accepted = event(&mut ws, 0, "executionReport");
    assert_eq!(
        (accepted["x"].as_str(), accepted["X"].as_str()),
        (Some("NEW"), Some("NEW"))
    );
    let report = event(&mut ws, 0, "executionReport");
    assert_eq!(
        (report["i"].clone(), report["X"].as_str()),
        (placed["orderId"].clone(), Some("FILLED"))
    );
    let logged_out = call(&mut ws, json!("out"), "session.logout", json!({}));
    assert_eq!(
        (
            &logged_out["result"]["apiKey"],
            &logged_out["result"]["authorizedSince"],
            &logged_out["result"]["userDataStream"]
        ),
        (&Value::Null, &Value::Null, &json!(true)),
        "the signed subscription stays"
    );
    assert_eq!(event(&mut ws, 0, "eventStreamTerminated")["e"], "eventStreamTerminated");
    assert_eq!(
        result(&mut ws, "session.subscriptions", json!({})),
        json!([{"subscriptionId": 1}])
    );
    let after = call(
        &mut ws,
        json!("after"),
        "account.status",
        json!({"timestamp": now_ms()}),
    );
    assert_eq!(after["error"]["code"], -1102, "no session key any more: {after}");
    let revoked = call(&mut ws, json!("again"), "session.logon", sign(&ed, Map::new()));
    assert_eq!(revoked["status"], 200);
    let (status, _) = common::account::admin(
        server.admin.expect("admin"),
        "DELETE",
        &format!("/admin/v1/keys/{}", ed.key),
        None,
    );
    assert_eq!(status, 200);
    let refused = call(
        &mut ws,
        json!("revoked"),
        "account.status",
        json!({"timestamp": now_ms()}),
    );
    assert_eq!(
        (&refused["status"], &refused["error"]["code"]),
        (&json!(401), &json!(-2015))
    );
    let status = result(&mut ws, "session.status", json!({}));
    assert_eq!(status["apiKey"], Value::Null, "a revoked key ends the logon");
}

/// Guessing signatures over the WebSocket API bans the IP as over REST:
/// two failed `session.logon`s and a forged `order.place` are allowed,
/// the next failure bans, and the ban then answers every request, on this
/// socket and on a new one.
#[test]
fn failed_logons_and_signatures_ban_the_ip() {
    let server = Server::start(
        1,
        &[
            "--admin-token",
            ADMIN_TOKEN,
            "--ip-ban-auth-failures-per-minute-max",
            "3",
        ],
    );
    let ed = create_user_with(&server, "ed", FUNDS, "ED25519");
    let mut ws = Ws::connect(server.addr, API);
    let forged = || {
        let mut params = object(sign(&ed, Map::new()));
        let other = common::account::Signer::fixture("ED25519", "ed25519-other");
        let signed = payload(&{
            let mut p = params.clone();
            p.remove("signature");
            p
        });
        params.insert("signature".into(), json!(other.sign_bare(signed.as_bytes())));
        Value::Object(params)
    };
    for (i, method) in ["session.logon", "session.logon", "account.status", "session.logon"]
        .iter()
        .enumerate()
    {
        let refused = call(&mut ws, json!(i), method, forged());
        assert_eq!(
            (&refused["status"], &refused["error"]["code"]),
            (&json!(400), &json!(-1022)),
            "{refused}"
        );
    }
    let banned = call(&mut ws, json!("after"), "session.logon", sign(&ed, Map::new()));
    assert_eq!(
        (&banned["status"], &banned["error"]["code"]),
        (&json!(418), &json!(-1003)),
        "{banned}"
    );
    let r = server.get("/api/v3/ping");
    assert_eq!((r.status, r.error().0), (418, -1003));
    let metrics = server.metrics();
    assert_eq!(metrics.value("tradsys_ip_bans_total", &[("shard", "0")]), Some(1.0));
}

#[test]
fn the_websocket_api_amends_as_rest_does() {
    let server = Server::start(1, &["--admin-token", ADMIN_TOKEN]);
    let maker = create_user(&server, "ws-amend", FUNDS);
    let query = "symbol=BTCUSDT&side=SELL&type=LIMIT&timeInForce=GTC&quantity=2&price=40000";
    let placed = rest_signed(&server, &maker, "POST", "/api/v3/order", query);
    let id = placed["orderId"].as_u64().expect("orderId");
    let mut ws = Ws::connect(server.addr, API);
    let params = json!({"symbol": "BTCUSDT", "orderId": id, "newQty": "0.5", "newClientOrderId": "ask-2"});
    let amended = result(&mut ws, "order.amend.keepPriority", sign(&maker, object(params)));
    assert_eq!(
        (
            &amended["executionId"],
            &amended["amendedOrder"]["qty"],
            &amended["amendedOrder"]["clientOrderId"]
        ),
        (&json!(id * 16 + 1), &json!("0.50000000"), &json!("ask-2"))
    );
    let params = json!({"symbol": "BTCUSDT", "orderId": id});
    let listed = result(&mut ws, "order.amendments", sign(&maker, object(params)));
    let over_rest = rest_signed(
        &server,
        &maker,
        "GET",
        "/api/v3/order/amendments",
        &format!("symbol=BTCUSDT&orderId={id}"),
    );
    assert_eq!(listed, over_rest);
    assert_eq!(
        (listed[0]["origQty"].clone(), listed[0]["newQty"].clone()),
        (json!("2.00000000"), json!("0.50000000"))
    );
    let btc = btc_balance(&server, &maker);
    assert_eq!(
        (&btc["free"], &btc["locked"]),
        (&json!("9.50000000"), &json!("0.50000000"))
    );
}

#[test]
fn the_websocket_api_places_and_cancels_order_lists_as_rest_does() {
    let server = Server::start(2, &["--admin-token", ADMIN_TOKEN]);
    let owner = create_user(&server, "ws-lists", FUNDS);
    let mut ws = Ws::connect(server.addr, API);
    let params = json!({
        "symbol": "BTCUSDT", "side": "SELL", "quantity": "0.5", "listClientOrderId": "ws-oco",
        "aboveType": "TAKE_PROFIT", "aboveStopPrice": "45000",
        "belowType": "STOP_LOSS", "belowStopPrice": "35000", "newOrderRespType": "RESULT",
    });
    let placed = result(&mut ws, "orderList.place.oco", sign(&owner, object(params)));
    let list_id = placed["orderListId"].as_u64().expect("orderListId");
    assert_eq!(
        (
            &placed["contingencyType"],
            &placed["listOrderStatus"],
            &placed["listClientOrderId"]
        ),
        (&json!("OCO"), &json!("EXECUTING"), &json!("ws-oco"))
    );
    let params = json!({"orderListId": list_id});
    let status = result(&mut ws, "orderList.status", sign(&owner, object(params)));
    let over_rest = rest_signed(
        &server,
        &owner,
        "GET",
        "/api/v3/orderList",
        &format!("orderListId={list_id}"),
    );
    assert_eq!(status, over_rest);
    let open = result(&mut ws, "openOrderLists.status", sign(&owner, Map::new()));
    assert_eq!(open.as_array().map(Vec::len), Some(1));
    let params = json!({"symbol": "BTCUSDT", "listClientOrderId": "ws-oco"});
    let canceled = result(&mut ws, "orderList.cancel", sign(&owner, object(params)));
    let statuses: Vec<&Value> = canceled["orderReports"]
        .as_array()
        .expect("orderReports")
        .iter()
        .map(|r| &r["status"])
        .collect();
    assert_eq!(statuses, [&json!("CANCELED"), &json!("CANCELED")]);
    let all = result(&mut ws, "allOrderLists", sign(&owner, Map::new()));
    assert_eq!(
        (&all[0]["orderListId"], &all[0]["listOrderStatus"]),
        (&json!(list_id), &json!("ALL_DONE"))
    );
    let btc = btc_balance(&server, &owner);
    assert_eq!(
        (&btc["free"], &btc["locked"]),
        (&json!("10.00000000"), &json!("0.00000000"))
    );
}

/// Cancel on disconnect: a logged-on session guards some markets; when it
/// ends, the user's orders there are canceled, and so after a crash, at
/// start-up, for a session that did not survive it.
#[test]
fn a_guarded_session_cancels_its_markets_orders_when_it_ends() {
    let data_dir = common::temp_data_dir();
    let args = ["--admin-token", ADMIN_TOKEN];
    let mut server = Server::start_in(&data_dir, 2, &args);
    let ed = create_user_with(&server, "guarded", FUNDS, "ED25519");
    let bid = |server: &Server, symbol: &str| {
        let query = format!("symbol={symbol}&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.01&price=1000");
        rest_signed(server, &ed, "POST", "/api/v3/order", &query)["orderId"].clone()
    };
    let open = |server: &Server, symbol: &str| {
        let orders = rest_signed(server, &ed, "GET", "/api/v3/openOrders", &format!("symbol={symbol}"));
        orders.as_array().map_or(0, Vec::len)
    };
    let guard = |ws: &mut Ws, symbols: Value| {
        call(
            ws,
            json!("guard"),
            "session.cancelOnDisconnect",
            json!({"symbols": symbols}),
        )
    };

    let mut ws = Ws::connect(server.addr, API);
    let refused = guard(&mut ws, json!(["BTCUSDT"]));
    assert_eq!(
        (&refused["status"], &refused["error"]),
        (
            &json!(401),
            &json!({"code": -1002, "msg": "session.cancelOnDisconnect needs a session logged on with session.logon."})
        )
    );
    result(&mut ws, "session.logon", sign(&ed, Map::new()));
    let unknown = guard(&mut ws, json!(["NOPE"]));
    assert_eq!(unknown["error"], json!({"code": -1121, "msg": "Invalid symbol."}));
    let missing = call(&mut ws, json!("guard"), "session.cancelOnDisconnect", json!({}));
    assert_eq!(missing["error"]["code"], json!(-1102));

    // Guarding BTCUSDT, then nothing, then ETHUSDT: the last one counts.
    bid(&server, "BTCUSDT");
    bid(&server, "ETHUSDT");
    assert_eq!(
        guard(&mut ws, json!(["BTCUSDT"]))["result"],
        json!({"symbols": ["BTCUSDT"]})
    );
    assert_eq!(guard(&mut ws, json!([]))["result"], json!({"symbols": []}));
    let both = guard(&mut ws, json!(["ETHUSDT", "ETHUSDT"]));
    assert_eq!(both["result"], json!({"symbols": ["ETHUSDT"]}));
    drop(ws);
    assert!(
        common::eventually(WAIT, || open(&server, "ETHUSDT") == 0),
        "the guarded market's order was not canceled"
    );
    assert_eq!(open(&server, "BTCUSDT"), 1);

    // A crash ends every session: at start-up, the guards of those that
    // did not survive it cancel their markets' orders.
    let mut ws = Ws::connect(server.addr, API);
    result(&mut ws, "session.logon", sign(&ed, Map::new()));
    assert_eq!(
        guard(&mut ws, json!(["BTCUSDT"]))["result"],
        json!({"symbols": ["BTCUSDT"]})
    );
    server.kill9();
    drop(ws);
    let server = Server::start_in(&data_dir, 2, &args);
    assert!(
        common::eventually(WAIT, || open(&server, "BTCUSDT") == 0),
        "a guard of a session lost in the crash did not fire"
    );
    drop(server);
}
