//! WebSocket streams end to end: the upgrade, the stream API's requests,
//! trade events after crossing orders placed over REST, fan-out across
//! shards, and a slow consumer cut off while a fast one keeps every event.
//!
//! The client (`common::ws`) is written over std's TcpStream with the
//! crate's own frame encoder.

mod common;

use common::ws::{filled_buy_report, metric, on_every_shard, upgrade_request, Ws, KEY, WAIT};
use common::{Client, Response, Server, ADMIN_TOKEN};
use serde_json::{json, Value};
use std::io::Read;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tradsys::ws::Opcode;

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_millis() as u64
}

fn request(addr: SocketAddr, method: &str, target: &str, headers: &str, body: &str) -> Response {
    let mut c = Client::connect(addr);
    c.send(&format!(
        "{method} {target} HTTP/1.1\r\nHost: t\r\n{headers}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ));
    c.response()
}

fn admin(server: &Server, method: &str, path: &str, body: Value) -> Value {
    let addr = server.admin.expect("admin API");
    let response = request(
        addr,
        method,
        path,
        &format!("X-Admin-Token: {ADMIN_TOKEN}\r\n"),
        &body.to_string(),
    );
    assert_eq!(response.status, 200, "admin {method} {path}: {}", response.body_text());
    response.json()
}

/// A user with an API key and deposits, as (api key, secret).
fn user(server: &Server, name: &str) -> (String, String) {
    let id = admin(server, "POST", "/admin/v1/users", json!({ "name": name }))["userId"]
        .as_u64()
        .expect("userId");
    let key = admin(
        server,
        "POST",
        &format!("/admin/v1/users/{id}/keys"),
        json!({ "scopes": ["READ", "TRADE", "USER_STREAM"] }),
    );
    for (asset, amount) in [("BTC", "10"), ("USDT", "1000000")] {
        admin(
            server,
            "POST",
            &format!("/admin/v1/users/{id}/deposits"),
            json!({ "asset": asset, "amount": amount }),
        );
    }
    (
        key["apiKey"].as_str().expect("apiKey").to_string(),
        key["secretKey"].as_str().expect("secretKey").to_string(),
    )
}

/// A signed REST order on one keep-alive connection.
fn order(c: &mut Client, who: &(String, String), side: &str, qty: &str, price: &str) -> Value {
    let query = format!(
        "symbol=BTCUSDT&side={side}&type=LIMIT&timeInForce=GTC&quantity={qty}&price={price}\
         &newOrderRespType=FULL&timestamp={}",
        now_ms()
    );
    let signature = tradsys::auth::sign(who.1.as_bytes(), query.as_bytes());
    c.send(&format!(
        "POST /api/v3/order?{query}&signature={signature} HTTP/1.1\r\nHost: t\r\nX-MBX-APIKEY: {}\r\n\r\n",
        who.0
    ));
    let response = c.response();
    assert_eq!(response.status, 200, "order: {}", response.body_text());
    response.json()
}

#[test]
fn upgrade_errors_are_http_answers() {
    let server = Server::start(1, &[]);
    let cases = [
        (upgrade_request("GET", "/ws", "short", "13"), 400),
        (upgrade_request("GET", "/ws", KEY, "8"), 400),
        (upgrade_request("POST", "/ws", KEY, "13"), 405),
        (upgrade_request("GET", "/nowhere", KEY, "13"), 404),
        (
            upgrade_request("GET", "/stream?streams=btcusdt@nothing", KEY, "13"),
            400,
        ),
        (
            upgrade_request("GET", "/stream?streams=btcusdt@trade/nosuchcoin@trade", KEY, "13"),
            400,
        ),
    ];
    for (raw, status) in cases {
        let mut c = server.connect();
        c.send(&raw);
        let response = c.response();
        assert_eq!(response.status, status, "{raw:?}: {}", response.body_text());
        let (code, _) = response.error();
        assert!(code < 0, "a Binance error code: {code}");
        // A refused upgrade leaves an ordinary keep-alive HTTP connection.
        c.send("GET /api/v3/ping HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(c.response().status, 200);
    }
    let mut c = server.connect();
    c.send(&upgrade_request("GET", "/ws", KEY, "8"));
    assert_eq!(c.response().header("Sec-WebSocket-Version"), Some("13"));
}

#[test]
fn stream_requests_get_binance_replies() {
    let server = Server::start(1, &[]);
    let mut ws = Ws::connect(server.addr, "/ws");
    let subscribe = json!({"method": "SUBSCRIBE", "params": ["btcusdt@trade", "btcusdt@depth"], "id": 1});
    assert_eq!(ws.call(subscribe), json!({"result": null, "id": 1}));
    assert_eq!(
        ws.call(json!({"method": "LIST_SUBSCRIPTIONS", "id": 2})),
        json!({"result": ["btcusdt@trade", "btcusdt@depth"], "id": 2})
    );
    assert_eq!(
        ws.call(json!({"method": "UNSUBSCRIBE", "params": ["btcusdt@depth"], "id": 3})),
        json!({"result": null, "id": 3})
    );
    assert_eq!(
        ws.call(json!({"method": "LIST_SUBSCRIPTIONS", "id": 4})),
        json!({"result": ["btcusdt@trade"], "id": 4})
    );
    // Binance allows 5 messages a second; stay under it.
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(
        ws.call(json!({"method": "GET_PROPERTY", "params": ["combined"], "id": 5})),
        json!({"result": false, "id": 5})
    );
    assert_eq!(
        ws.call(json!({"method": "SET_PROPERTY", "params": ["combined", true], "id": 6})),
        json!({"result": null, "id": 6})
    );
    assert_eq!(
        ws.call(json!({"method": "SET_PROPERTY", "params": ["combined", 1], "id": 7}))["error"]["code"],
        json!(1)
    );
    assert_eq!(
        ws.call(json!({"method": "GET_PROPERTY", "params": ["nothing"], "id": 8}))["error"]["code"],
        json!(0)
    );
    assert_eq!(ws.call(json!({"method": "NOPE", "id": 9}))["error"]["code"], json!(2));
    std::thread::sleep(Duration::from_millis(1100));
    ws.send(Opcode::Text, b"{not json");
    assert_eq!(ws.json()["error"]["code"], json!(3));
    ws.send(Opcode::Ping, b"hi");
    assert_eq!(ws.frame(), Some((0xA, b"hi".to_vec())));
    ws.send(Opcode::Close, &1000u16.to_be_bytes());
    let (opcode, payload) = ws.frame().expect("the close echo");
    assert_eq!((opcode, payload), (0x8, 1000u16.to_be_bytes().to_vec()));
}

/// ccxt opens `/ws/<n>` (a connection counter) and then subscribes; as on
/// Binance, `/ws/<anything>` upgrades and subscribes only real streams.
#[test]
fn any_ws_path_upgrades_and_subscribes_only_real_streams() {
    let server = Server::start(1, &[]);
    let mut counter = Ws::connect(server.addr, "/ws/1");
    assert_eq!(
        counter.call(json!({"method": "LIST_SUBSCRIPTIONS", "id": 1})),
        json!({"result": [], "id": 1})
    );
    let subscribe = json!({"method": "SUBSCRIBE", "params": ["btcusdt@trade"], "id": 2});
    assert_eq!(counter.call(subscribe), json!({"result": null, "id": 2}));
    assert_eq!(
        counter.call(json!({"method": "LIST_SUBSCRIPTIONS", "id": 3})),
        json!({"result": ["btcusdt@trade"], "id": 3})
    );
    let mut mixed = Ws::connect(server.addr, "/ws/btcusdt@trade/nosuchcoin@trade/btcusdt@nothing");
    assert_eq!(
        mixed.call(json!({"method": "LIST_SUBSCRIPTIONS", "id": 1})),
        json!({"result": ["btcusdt@trade"], "id": 1})
    );
}

#[test]
fn more_than_five_messages_a_second_close_with_1008() {
    let server = Server::start(1, &[]);
    let mut ws = Ws::connect(server.addr, "/ws");
    for id in 0..6 {
        ws.send_json(json!({"method": "LIST_SUBSCRIPTIONS", "id": id}));
    }
    let mut replies = 0;
    let close = loop {
        match ws.frame().expect("a frame") {
            (0x1, _) => replies += 1,
            (0x8, payload) => break payload,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(replies, 5);
    assert_eq!(close[..2], 1008u16.to_be_bytes());
}

/// Connections to `target` until every shard holds at least one.
#[test]
fn trade_events_reach_subscribers_on_every_shard() {
    let server = Server::start(2, &["--admin-token", ADMIN_TOKEN]);
    let mut conns = on_every_shard(&server, 2, "/ws/btcusdt@trade");
    let mut combined = Ws::connect(server.addr, "/stream?streams=btcusdt@trade/btcusdt@bookTicker");
    let (maker, taker) = (user(&server, "maker"), user(&server, "taker"));
    let mut rest = server.connect();
    order(&mut rest, &maker, "SELL", "0.00100", "30000.00");
    let placed = order(&mut rest, &taker, "BUY", "0.00100", "30000.00");
    let fill = &placed["fills"][0];
    let trade_id = fill["tradeId"].as_u64().expect("tradeId");
    let time = placed["transactTime"].as_u64().expect("transactTime");
    let expected = json!({
        "e": "trade", "E": time, "s": "BTCUSDT", "t": trade_id,
        "p": "30000.00000000", "q": "0.00100000", "T": time, "m": false, "M": true,
    });
    for ws in &mut conns {
        assert_eq!(ws.json(), expected);
    }
    // The maker's order makes the best ask; the trade takes it away.
    let ask = combined.json();
    assert_eq!(ask["stream"], "btcusdt@bookTicker");
    let u = ask["data"]["u"].as_u64().expect("u");
    let ask_data = json!({"u": u, "s": "BTCUSDT", "b": "0.00000000", "B": "0.00000000",
        "a": "30000.00000000", "A": "0.00100000"});
    assert_eq!(ask["data"], ask_data);
    assert_eq!(combined.json(), json!({"stream": "btcusdt@trade", "data": expected}));
    let empty = combined.json();
    assert_eq!(empty["stream"], "btcusdt@bookTicker");
    assert!(empty["data"]["u"].as_u64().expect("u") > u);
    assert_eq!(empty["data"]["a"], "0.00000000");
}

#[test]
fn slow_consumer_is_cut_off_while_a_fast_one_gets_every_event() {
    let server = Server::start(
        1,
        &[
            "--admin-token",
            ADMIN_TOKEN,
            "--ws-outbound-bytes-max",
            "65536",
            "--ws-socket-send-bytes",
            "4096",
            "--orders-per-10s-max",
            "100000",
        ],
    );
    let slow_socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    slow_socket.set_recv_buffer_size(2048).expect("SO_RCVBUF");
    slow_socket.connect(&server.addr.into()).expect("connect");
    let mut slow = Ws::over(slow_socket.into(), "/ws/btcusdt@trade");
    let mut fast = Ws::connect(server.addr, "/ws/btcusdt@trade");
    let makers = [user(&server, "maker-a"), user(&server, "maker-b")];
    let taker = user(&server, "taker");
    let mut rest = server.connect();
    // One round is one burst of 300 trades (about 45 KB of frames), which
    // fits the fast consumer's 64 KiB queue; the slow one falls further
    // behind with every round.
    const PER_MAKER: usize = 150;
    const ROUNDS: usize = 4;
    for round in 0..ROUNDS {
        for maker in &makers {
            for _ in 0..PER_MAKER {
                order(&mut rest, maker, "SELL", "0.00100", "30000.00");
            }
        }
        let placed = order(&mut rest, &taker, "BUY", "0.30000", "30000.00");
        let fills = placed["fills"].as_array().expect("fills");
        assert_eq!(fills.len(), 2 * PER_MAKER);
        let first = fills[0]["tradeId"].as_u64().expect("tradeId");
        for i in 0..fills.len() {
            assert_eq!(
                fast.json()["t"],
                json!(first + i as u64),
                "round {round}, trade {i} in order"
            );
        }
    }
    let cut_off = common::eventually(WAIT, || {
        metric(&server, "tradsys_ws_slow_consumers_closed_total")
            .iter()
            .sum::<f64>()
            >= 1.0
    });
    assert!(cut_off, "the slow consumer was never cut off");
    let close = loop {
        match slow.frame().expect("frames, then a close frame") {
            (0x1, _) => {}
            (0x8, payload) => break payload,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(close[..2], 1008u16.to_be_bytes());
    // The fast consumer is still served.
    assert_eq!(
        fast.call(json!({"method": "LIST_SUBSCRIPTIONS", "id": 1})),
        json!({"result": ["btcusdt@trade"], "id": 1})
    );
}

/// A book side as price → quantity, both as Binance prints them.
type Side = std::collections::BTreeMap<String, String>;

fn side_of(levels: &Value) -> Side {
    levels
        .as_array()
        .expect("levels")
        .iter()
        .map(|l| (l[0].as_str().expect("price").into(), l[1].as_str().expect("qty").into()))
        .collect()
}

fn apply(side: &mut Side, levels: &Value) {
    for (price, qty) in side_of(levels) {
        if qty == "0.00000000" {
            side.remove(&price);
        } else {
            side.insert(price, qty);
        }
    }
}

fn depth_snapshot(server: &Server) -> (u64, Side, Side) {
    let response = server.get("/api/v3/depth?symbol=BTCUSDT&limit=5000");
    assert_eq!(response.status, 200);
    let body = response.json();
    let id = body["lastUpdateId"].as_u64().expect("lastUpdateId");
    (id, side_of(&body["bids"]), side_of(&body["asks"]))
}

/// Binance's procedure for a local order book: buffer the diffs, take a
/// REST snapshot, drop diffs it already covers, apply the rest in order.
#[test]
fn local_book_from_depth_diffs_equals_rest_depth() {
    let server = Server::start(2, &["--admin-token", ADMIN_TOKEN]);
    let mut ws = Ws::connect(server.addr, "/ws/btcusdt@depth@100ms");
    let traders = [user(&server, "a"), user(&server, "b")];
    let mut rest = server.connect();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut random = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let mut place = |count: usize, rest: &mut Client| {
        for _ in 0..count {
            let who = &traders[random(2) as usize];
            let side = if random(2) == 0 { "BUY" } else { "SELL" };
            let price = format!("{}.00", 29_990 + random(21));
            let qty = format!("0.00{}00", 1 + random(5));
            order(rest, who, side, &qty, &price);
        }
    };
    place(20, &mut rest);
    let (first_id, mut bids, mut asks) = depth_snapshot(&server);
    // Several batches, each waited for, so that the book is rebuilt from
    // a chain of diffs rather than one.
    let mut events = Vec::new();
    let (mut last_id, mut final_bids, mut final_asks) = (first_id, Side::new(), Side::new());
    for _ in 0..4 {
        place(20, &mut rest);
        (last_id, final_bids, final_asks) = depth_snapshot(&server);
        while events.last().map_or(0, |e: &Value| e["u"].as_u64().expect("u")) < last_id {
            events.push(ws.json());
        }
    }
    assert!(last_id > first_id, "the orders changed the book");
    assert!(events.len() >= 4, "one diff per batch at least: {}", events.len());
    let mut previous_u: Option<u64> = None;
    let mut applied = 0;
    for event in &events {
        assert_eq!(event["e"], "depthUpdate");
        assert_eq!(event["s"], "BTCUSDT");
        let (first, last) = (event["U"].as_u64().expect("U"), event["u"].as_u64().expect("u"));
        if let Some(previous) = previous_u {
            assert_eq!(first, previous + 1, "diffs form one chain");
        }
        previous_u = Some(last);
        if last <= first_id {
            continue;
        }
        if applied == 0 {
            assert!(first <= first_id + 1, "the first diff applied covers the snapshot");
        }
        apply(&mut bids, &event["b"]);
        apply(&mut asks, &event["a"]);
        applied += 1;
    }
    assert_eq!(previous_u, Some(last_id), "no change after the last snapshot");
    assert_eq!(bids, final_bids);
    assert_eq!(asks, final_asks);
}

fn listen_key(server: &Server, who: &(String, String)) -> String {
    let response = request(
        server.addr,
        "POST",
        "/api/v3/userDataStream",
        &format!("X-MBX-APIKEY: {}\r\n", who.0),
        "",
    );
    assert_eq!(response.status, 200, "{}", response.body_text());
    response.json()["listenKey"].as_str().expect("listenKey").to_string()
}

#[test]
fn user_data_stream_reports_executions_and_balances() {
    let server = Server::start(2, &["--admin-token", ADMIN_TOKEN]);
    let (maker, taker) = (user(&server, "maker"), user(&server, "taker"));
    let mut c = server.connect();
    c.send(&upgrade_request("GET", "/ws/000000000999nosuchkey", KEY, "13"));
    assert_eq!(
        c.response().error(),
        (-1125, "This listenKey does not exist.".to_string())
    );
    let key = listen_key(&server, &taker);
    // Several connections (the per-user cap is 3), so that the user's
    // events cross shards.
    let mut conns: Vec<Ws> = (0..3)
        .map(|_| Ws::connect(server.addr, &format!("/ws/{key}")))
        .collect();
    let mut rest = server.connect();
    order(&mut rest, &maker, "SELL", "0.00100", "30000.00");
    let placed = order(&mut rest, &taker, "BUY", "0.00100", "30000.00");
    for ws in &mut conns {
        let report = loop {
            let message = ws.json();
            if message["e"] == "executionReport" && message["x"] == "TRADE" {
                break message;
            }
        };
        let expected = filled_buy_report(&report, &placed);
        assert_eq!(report, expected);
        let position = ws.json();
        assert_eq!(position["e"], "outboundAccountPosition");
        let balances = position["B"].as_array().expect("B");
        assert_eq!(balances[0]["a"], "BTC");
        assert_eq!(balances[1]["a"], "USDT");
        assert_eq!(balances[1]["f"], "999970.00000000");
    }
}

/// A signed REST request with `query` (timestamp added) on `c`.
fn signed(c: &mut Client, who: &(String, String), method: &str, path: &str, query: &str) -> Response {
    let query = format!("{query}&timestamp={}", now_ms());
    let signature = tradsys::auth::sign(who.1.as_bytes(), query.as_bytes());
    c.send(&format!(
        "{method} {path}?{query}&signature={signature} HTTP/1.1\r\nHost: t\r\nX-MBX-APIKEY: {}\r\n\r\n",
        who.0
    ));
    c.response()
}

/// Reads messages until one satisfies `wanted`; panics after `count`
/// others (or on the read timeout).
fn until(ws: &mut Ws, count: usize, wanted: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..count {
        let message = ws.json();
        if wanted(&message) {
            return message;
        }
    }
    panic!("no wanted message among {count}");
}

/// The data of a combined-stream message of `stream` that satisfies
/// `wanted`.
fn until_stream(ws: &mut Ws, stream: &str, wanted: impl Fn(&Value) -> bool) -> Value {
    until(ws, 500, |m| m["stream"] == stream && wanted(&m["data"]))["data"].clone()
}

#[test]
fn agg_trade_stream_equals_rest_agg_trades() {
    let server = Server::start(2, &["--admin-token", ADMIN_TOKEN]);
    let mut conns = on_every_shard(&server, 2, "/ws/btcusdt@aggTrade");
    let (maker, taker) = (user(&server, "maker"), user(&server, "taker"));
    let mut rest = server.connect();
    // Two makers' worth at one price, taken by one order: one aggregate of
    // two trades. Then one more trade at another price: a second one.
    order(&mut rest, &maker, "SELL", "0.00100", "30000.00");
    order(&mut rest, &maker, "SELL", "0.00200", "30000.00");
    order(&mut rest, &maker, "SELL", "0.00100", "30100.00");
    let first = order(&mut rest, &taker, "BUY", "0.00300", "30000.00");
    let second = order(&mut rest, &taker, "BUY", "0.00100", "30100.00");
    let ids = |placed: &Value| -> Vec<u64> {
        let fills = placed["fills"].as_array().expect("fills");
        fills.iter().map(|f| f["tradeId"].as_u64().expect("tradeId")).collect()
    };
    let (first_ids, second_ids) = (ids(&first), ids(&second));
    assert_eq!(first_ids.len(), 2);
    let rest_aggs = server.get("/api/v3/aggTrades?symbol=BTCUSDT").json();
    let expected = [
        (&first, "30000.00000000", "0.00300000", first_ids[0], first_ids[1]),
        (&second, "30100.00000000", "0.00100000", second_ids[0], second_ids[0]),
    ];
    for (i, (placed, price, qty, f, l)) in expected.into_iter().enumerate() {
        let time = placed["transactTime"].as_u64().expect("transactTime");
        let row = json!({"a": i, "p": price, "q": qty, "f": f, "l": l, "T": time, "m": false, "M": true});
        assert_eq!(rest_aggs[i], row, "REST aggTrades row {i}");
    }
    for ws in &mut conns {
        for (i, row) in rest_aggs.as_array().expect("rows").iter().enumerate() {
            let mut event = json!({"e": "aggTrade", "E": row["T"], "s": "BTCUSDT"});
            for field in ["a", "p", "q", "f", "l", "T", "m", "M"] {
                event[field] = row[field].clone();
            }
            assert_eq!(ws.json(), event, "aggregate {i}");
        }
    }
}

/// Places resting orders and two trades; returns the two takers' answers.
fn two_trades(server: &Server, rest: &mut Client) -> (Value, Value) {
    let (maker, taker) = (user(server, "maker"), user(server, "taker"));
    order(rest, &maker, "SELL", "0.00100", "30000.00");
    let first = order(rest, &taker, "BUY", "0.00100", "30000.00");
    order(rest, &maker, "SELL", "0.00200", "30100.00");
    let second = order(rest, &taker, "BUY", "0.00200", "30100.00");
    order(rest, &maker, "BUY", "0.00100", "29000.00");
    order(rest, &maker, "SELL", "0.00400", "31000.00");
    (first, second)
}

fn trade_id(placed: &Value) -> u64 {
    placed["fills"][0]["tradeId"].as_u64().expect("tradeId")
}

#[test]
fn ticker_streams_report_the_rolling_window() {
    let server = Server::start(2, &["--admin-token", ADMIN_TOKEN]);
    let mut ws = Ws::connect(
        server.addr,
        "/stream?streams=btcusdt@ticker/btcusdt@miniTicker/!ticker@arr/!miniTicker@arr",
    );
    let mut rest = server.connect();
    let (first, second) = two_trades(&server, &mut rest);
    let (first_id, last_id) = (trade_id(&first), trade_id(&second));
    // 30 + 60.2 quote over 0.003 base; +100 on 30000 is 0.333 %.
    let figures = json!({
        "s": "BTCUSDT", "p": "100.00000000", "P": "0.333", "w": "30066.66666666",
        "x": "0.00000000", "c": "30100.00000000", "Q": "0.00200000",
        "b": "29000.00000000", "B": "0.00100000", "a": "31000.00000000", "A": "0.00400000",
        "o": "30000.00000000", "h": "30100.00000000", "l": "30000.00000000",
        "v": "0.00300000", "q": "90.20000000", "F": first_id, "L": last_id, "n": 2,
    });
    let full = |data: &Value| {
        let mut expected = figures.clone();
        let close = data["C"].as_u64().expect("C");
        expected["e"] = json!("24hrTicker");
        expected["E"] = json!(close);
        expected["C"] = json!(close);
        // The window opens at the minute boundary 24 h before.
        expected["O"] = json!((close - 86_400_000) / 60_000 * 60_000);
        expected
    };
    let mini = |data: &Value| {
        let mut expected = json!({"e": "24hrMiniTicker", "E": data["E"]});
        for field in ["s", "c", "o", "h", "l", "v", "q"] {
            expected[field] = figures[field].clone();
        }
        expected
    };
    let done = |data: &Value| data["n"] == 2 && data["b"] == figures["b"] && data["a"] == figures["a"];
    let mini_done = |data: &Value| data["v"] == figures["v"];
    // The four streams share the connection: keep the first message of
    // each that shows the final state.
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..500 {
        if seen.len() == 4 {
            break;
        }
        let message = ws.json();
        let (stream, data) = (message["stream"].as_str().expect("stream"), &message["data"]);
        let wanted = match stream {
            "btcusdt@ticker" => done(data),
            "btcusdt@miniTicker" => mini_done(data),
            "!ticker@arr" => done(&data[0]),
            "!miniTicker@arr" => mini_done(&data[0]),
            other => panic!("unexpected stream {other}"),
        };
        if wanted {
            seen.entry(stream.to_string()).or_insert_with(|| data.clone());
        }
    }
    assert_eq!(seen.len(), 4, "the final state on every stream: {seen:?}");
    let ticker = &seen["btcusdt@ticker"];
    assert_eq!(ticker, &full(ticker));
    let mini_ticker = &seen["btcusdt@miniTicker"];
    assert_eq!(mini_ticker, &mini(mini_ticker));
    // Only BTCUSDT traded: every array holds it alone.
    let all = &seen["!ticker@arr"];
    assert_eq!(all, &json!([full(&all[0])]));
    let all_mini = &seen["!miniTicker@arr"];
    assert_eq!(all_mini, &json!([mini(&all_mini[0])]));
    assert!(ticker["E"].as_u64().expect("E") >= second["transactTime"].as_u64().expect("time"));
}

#[test]
fn partial_depth_equals_rest_depth_with_its_limit() {
    let server = Server::start(2, &["--admin-token", ADMIN_TOKEN]);
    let streams = ["btcusdt@depth5", "btcusdt@depth10@100ms", "btcusdt@depth20@100ms"];
    let mut ws = Ws::connect(server.addr, &format!("/stream?streams={}", streams.join("/")));
    let (bidder, asker) = (user(&server, "bidder"), user(&server, "asker"));
    let mut rest = server.connect();
    for i in 0..22 {
        order(&mut rest, &bidder, "BUY", "0.00100", &format!("{}.00", 29_000 + i));
        order(
            &mut rest,
            &asker,
            "SELL",
            &format!("0.00{}00", 1 + i % 5),
            &format!("{}.00", 31_000 + i),
        );
    }
    for (stream, limit) in streams.into_iter().zip([5, 10, 20]) {
        let depth = server
            .get(&format!("/api/v3/depth?symbol=BTCUSDT&limit={limit}"))
            .json();
        assert_eq!(depth["bids"].as_array().expect("bids").len(), limit);
        assert_eq!(depth["bids"][0][0], "29021.00000000");
        assert_eq!(depth["asks"][0][0], "31000.00000000");
        let id = depth["lastUpdateId"].clone();
        assert_eq!(
            until_stream(&mut ws, stream, |d| d["lastUpdateId"] == id),
            depth,
            "{stream}"
        );
    }
}

/// REST's kline row for the candle opened at `open`, of `interval`.
fn rest_kline(server: &Server, interval: &str, open: u64) -> Value {
    let target = format!("/api/v3/klines?symbol=BTCUSDT&interval={interval}&startTime={open}&limit=1");
    let rows = server.get(&target).json();
    assert_eq!(rows[0][0], json!(open), "{interval} kline at {open}");
    rows[0].clone()
}

/// The stream's kline `k` as REST prints the row, and its (f, L, x).
fn kline_as_row(k: &Value) -> (Value, (u64, u64, bool)) {
    let row = json!([k["t"], k["o"], k["h"], k["l"], k["c"], k["v"], k["T"], k["q"], k["n"], k["V"], k["Q"], k["B"]]);
    let ids = (
        k["f"].as_u64().expect("f"),
        k["L"].as_u64().expect("L"),
        k["x"].as_bool().expect("x"),
    );
    (row, ids)
}

#[test]
fn kline_streams_equal_rest_klines_and_close() {
    let server = Server::start(2, &["--admin-token", ADMIN_TOKEN]);
    let mut ws = Ws::connect(server.addr, "/stream?streams=btcusdt@kline_1m/btcusdt@kline_1s");
    let mut rest = server.connect();
    let (first, second) = two_trades(&server, &mut rest);
    let (first_id, last_id) = (trade_id(&first), trade_id(&second));
    let second_time = second["transactTime"].as_u64().expect("transactTime");
    let open = second_time - second_time % 1000;
    // Both streams share the connection: keep the first message of each
    // that shows what is checked.
    let (mut minute, mut closing) = (None, None);
    for _ in 0..500 {
        if minute.is_some() && closing.is_some() {
            break;
        }
        let message = ws.json();
        let k = &message["data"]["k"];
        match message["stream"].as_str().expect("stream") {
            "btcusdt@kline_1m" if k["L"] == last_id && minute.is_none() => minute = Some(message["data"].clone()),
            "btcusdt@kline_1s" if k["t"] == open && k["x"] == true => closing = Some(message["data"].clone()),
            _ => {}
        }
    }
    // The minute's candle, once it holds the last trade, equals REST's.
    let minute = minute.expect("the minute's kline with the last trade");
    assert_eq!(
        (minute["e"].clone(), minute["s"].clone()),
        (json!("kline"), json!("BTCUSDT"))
    );
    assert_eq!(
        (minute["k"]["s"].clone(), minute["k"]["i"].clone()),
        (json!("BTCUSDT"), json!("1m"))
    );
    let (row, (f, l, closed)) = kline_as_row(&minute["k"]);
    let rest_row = rest_kline(&server, "1m", minute["k"]["t"].as_u64().expect("t"));
    assert_eq!(row, rest_row);
    let both = rest_row[8] == 2;
    assert_eq!((f, l), (if both { first_id } else { last_id }, last_id));
    assert!(!closed || now_ms() > minute["k"]["T"].as_u64().expect("T"));
    // The last trade's second closes within a second: one more update
    // with x true and the final figures.
    let closing = closing.expect("the second's kline closing");
    let (row, (_, l, _)) = kline_as_row(&closing["k"]);
    assert_eq!(row, rest_kline(&server, "1s", open));
    assert_eq!(l, last_id);
    assert!(closing["E"].as_u64().expect("E") > open + 999);
}

fn user_id(who: &(String, String)) -> u64 {
    who.0[..12].parse().expect("the key starts with the user id")
}

#[test]
fn deposits_and_withdrawals_send_balance_updates() {
    let server = Server::start(2, &["--admin-token", ADMIN_TOKEN]);
    let who = user(&server, "saver");
    let key = listen_key(&server, &who);
    let mut conns: Vec<Ws> = (0..3)
        .map(|_| Ws::connect(server.addr, &format!("/ws/{key}")))
        .collect();
    let id = user_id(&who);
    for (kind, amount, delta, free) in [
        ("deposits", "1.5", "1.50000000", "11.50000000"),
        ("withdrawals", "0.25", "-0.25000000", "11.25000000"),
    ] {
        admin(
            &server,
            "POST",
            &format!("/admin/v1/users/{id}/{kind}"),
            json!({ "asset": "BTC", "amount": amount }),
        );
        for ws in &mut conns {
            let update = ws.json();
            let time = update["E"].clone();
            assert_eq!(
                update,
                json!({"e": "balanceUpdate", "E": time, "a": "BTC", "d": delta, "T": time})
            );
            assert_eq!(
                ws.json(),
                json!({"e": "outboundAccountPosition", "E": time, "u": time,
                       "B": [{"a": "BTC", "f": free, "l": "0.00000000"}]})
            );
        }
    }
}

/// The frames after the last event: a close with `code`, then the end.
fn expect_close(ws: &mut Ws, code: u16) {
    let (opcode, payload) = ws.frame().expect("a close frame");
    assert_eq!(opcode, 0x8, "{payload:?}");
    assert_eq!(payload[..2], code.to_be_bytes());
}

#[test]
fn listen_key_expired_after_delete_and_after_its_time() {
    let server = Server::start(2, &["--admin-token", ADMIN_TOKEN, "--listen-key-ttl-ms", "1500"]);
    let who = user(&server, "listener");
    let header = format!("X-MBX-APIKEY: {}\r\n", who.0);
    // Closed by DELETE.
    let closed = listen_key(&server, &who);
    let mut ws = Ws::connect(server.addr, &format!("/ws/{closed}"));
    let target = format!("/api/v3/userDataStream?listenKey={closed}");
    assert_eq!(request(server.addr, "DELETE", &target, &header, "").status, 200);
    let expired = ws.json();
    assert_eq!(
        expired,
        json!({"e": "listenKeyExpired", "E": expired["E"], "listenKey": closed})
    );
    expect_close(&mut ws, 1000);
    // Expired: 1.5 s without a keepalive.
    let created = now_ms();
    let lapsing = listen_key(&server, &who);
    let mut ws = Ws::connect(server.addr, &format!("/ws/{lapsing}"));
    let expired = ws.json();
    assert_eq!(
        expired,
        json!({"e": "listenKeyExpired", "E": expired["E"], "listenKey": lapsing})
    );
    assert!(expired["E"].as_u64().expect("E") >= created + 1500);
    expect_close(&mut ws, 1000);
    for key in [closed, lapsing] {
        let mut c = server.connect();
        c.send(&upgrade_request("GET", &format!("/ws/{key}"), KEY, "13"));
        assert_eq!(c.response().error().0, -1125);
    }
}

#[test]
fn user_data_connections_are_capped_per_user_over_all_shards() {
    let server = Server::start(2, &["--admin-token", ADMIN_TOKEN]);
    let who = user(&server, "many");
    let key = listen_key(&server, &who);
    let mut conns: Vec<Ws> = (0..3)
        .map(|_| Ws::connect(server.addr, &format!("/ws/{key}")))
        .collect();
    // A second key of the same user counts against the same cap.
    let other = listen_key(&server, &who);
    for key in [&key, &other] {
        let mut c = server.connect();
        c.send(&upgrade_request("GET", &format!("/ws/{key}"), KEY, "13"));
        let response = c.response();
        assert_eq!(response.status, 429);
        assert_eq!(
            response.error(),
            (
                -1003,
                "Too many user data stream connections; at most 3 per user.".to_string()
            )
        );
    }
    let mut leaving = conns.pop().expect("a connection");
    leaving.send(Opcode::Close, &1000u16.to_be_bytes());
    expect_close(&mut leaving, 1000);
    // The user's shard counts the closed connection off (a message from
    // the connection's shard); then a new one is accepted.
    let admitted = common::eventually(WAIT, || {
        let mut c = server.connect();
        c.send(&upgrade_request("GET", &format!("/ws/{other}"), KEY, "13"));
        let mut head = [0u8; 12];
        c.stream.read_exact(&mut head).is_ok() && &head == b"HTTP/1.1 101"
    });
    assert!(admitted, "a connection after one closed");
}

#[test]
fn execution_reports_name_the_cancel_and_finish_market_orders_by_quote() {
    let server = Server::start(2, &["--admin-token", ADMIN_TOKEN]);
    let (maker, taker) = (user(&server, "maker"), user(&server, "taker"));
    let key = listen_key(&server, &taker);
    let mut ws = Ws::connect(server.addr, &format!("/ws/{key}"));
    let mut rest = server.connect();
    let placed = signed(
        &mut rest,
        &taker,
        "POST",
        "/api/v3/order",
        "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.00100&price=29000.00\
         &newClientOrderId=myOrder1",
    );
    assert_eq!(placed.status, 200, "{}", placed.body_text());
    let canceled = signed(
        &mut rest,
        &taker,
        "DELETE",
        "/api/v3/order",
        "symbol=BTCUSDT&origClientOrderId=myOrder1&newClientOrderId=myCancel1",
    );
    assert_eq!(canceled.status, 200, "{}", canceled.body_text());
    assert_eq!(canceled.json()["clientOrderId"], "myCancel1");
    let report = until(&mut ws, 10, |m| m["x"] == "CANCELED");
    let order_id = placed.json()["orderId"].clone();
    let created = placed.json()["transactTime"].clone();
    assert_eq!(
        report,
        json!({
            "e": "executionReport", "E": report["E"], "s": "BTCUSDT", "c": "myCancel1", "S": "BUY",
            "o": "LIMIT", "f": "GTC", "q": "0.00100000", "p": "29000.00000000", "P": "0.00000000",
            "F": "0.00000000", "g": -1, "C": "myOrder1", "x": "CANCELED", "X": "CANCELED", "r": "NONE",
            "i": order_id, "l": "0.00000000", "z": "0.00000000", "L": "0.00000000", "n": "0.00000000",
            "N": null, "T": report["T"], "t": -1, "I": order_id, "w": false, "m": false, "M": false,
            "O": created, "Z": "0.00000000", "Y": "0.00000000", "Q": "0.00000000", "W": created, "V": "NONE",
        })
    );
    assert_eq!(until(&mut ws, 1, |_| true)["e"], "outboundAccountPosition");
    // 90 USDT buys two makers' 0.001 and 0.002 at 30000 exactly: FILLED in
    // the last trade's report.
    order(&mut rest, &maker, "SELL", "0.00100", "30000.00");
    order(&mut rest, &maker, "SELL", "0.00200", "30000.00");
    let by_quote = "symbol=BTCUSDT&side=BUY&type=MARKET&quoteOrderQty=90&newOrderRespType=FULL";
    let filled = signed(&mut rest, &taker, "POST", "/api/v3/order", by_quote).json();
    assert_eq!(filled["status"], "FILLED");
    // NEW first, as Binance reports every accepted order, then each trade.
    let reports: Vec<Value> = (0..6)
        .map(|_| ws.json())
        .filter(|m| m["e"] == "executionReport")
        .collect();
    let states: Vec<(&Value, &Value, &Value)> = reports.iter().map(|r| (&r["x"], &r["X"], &r["z"])).collect();
    assert_eq!(
        states,
        [
            (&json!("NEW"), &json!("NEW"), &json!("0.00000000")),
            (&json!("TRADE"), &json!("PARTIALLY_FILLED"), &json!("0.00100000")),
            (&json!("TRADE"), &json!("FILLED"), &json!("0.00300000")),
        ]
    );
    assert_eq!(
        (&reports[2]["Z"], &reports[2]["Q"], &reports[2]["w"]),
        (&json!("90.00000000"), &json!("90.00000000"), &json!(false))
    );
    // Only 0.001 at 30000 for 60 USDT: the trade, then EXPIRED.
    order(&mut rest, &maker, "SELL", "0.00100", "30000.00");
    let by_quote = "symbol=BTCUSDT&side=BUY&type=MARKET&quoteOrderQty=60&newOrderRespType=FULL";
    let expired = signed(&mut rest, &taker, "POST", "/api/v3/order", by_quote).json();
    assert_eq!(expired["status"], "EXPIRED");
    let reports: Vec<Value> = (0..6)
        .map(|_| ws.json())
        .filter(|m| m["e"] == "executionReport")
        .collect();
    let states: Vec<(&Value, &Value)> = reports.iter().map(|r| (&r["x"], &r["X"])).collect();
    assert_eq!(
        states,
        [
            (&json!("NEW"), &json!("NEW")),
            (&json!("TRADE"), &json!("PARTIALLY_FILLED")),
            (&json!("EXPIRED"), &json!("EXPIRED")),
        ]
    );
}

#[test]
fn combined_stream_carries_a_listen_key_with_market_streams() {
    let server = Server::start(2, &["--admin-token", ADMIN_TOKEN]);
    let who = user(&server, "combined");
    let key = listen_key(&server, &who);
    let mut ws = Ws::connect(server.addr, &format!("/stream?streams=btcusdt@trade/{key}"));
    admin(
        &server,
        "POST",
        &format!("/admin/v1/users/{}/deposits", user_id(&who)),
        json!({ "asset": "USDT", "amount": "5" }),
    );
    let update = ws.json();
    let time = update["data"]["E"].clone();
    assert_eq!(
        update,
        json!({"stream": key, "data": {"e": "balanceUpdate", "E": time, "a": "USDT", "d": "5.00000000", "T": time}})
    );
    assert_eq!(ws.json()["data"]["B"][0]["f"], "1000005.00000000");
    let header = format!("X-MBX-APIKEY: {}\r\n", who.0);
    let target = format!("/api/v3/userDataStream?listenKey={key}");
    assert_eq!(request(server.addr, "DELETE", &target, &header, "").status, 200);
    let expired = ws.json();
    assert_eq!(
        expired,
        json!({"stream": key, "data": {"e": "listenKeyExpired", "E": expired["data"]["E"], "listenKey": key}})
    );
    expect_close(&mut ws, 1000);
}
