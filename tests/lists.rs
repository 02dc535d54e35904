//! Order lists through the API: OCO (new and legacy endpoints), OTO and
//! OTOCO placements with Binance's answers, the `listStatus` events and
//! `g` of the user data stream, the list queries, list and leg cancels,
//! Binance's refusals, and lists surviving `kill -9`.

mod common;

use common::account::{create_user, listen_key, signed, User};
use common::ws::Ws;
use common::{Client, Server, ADMIN_TOKEN};
use serde_json::{json, Value};

/// One trade of 0.01 at `price` between two users, so that the market
/// has a last price.
fn trade_at(c: &mut Client, seller: &User, buyer: &User, price: &str) {
    let query = format!("symbol=BTCUSDT&side=SELL&type=LIMIT&timeInForce=GTC&quantity=0.01&price={price}");
    assert_eq!(signed(c, seller, "POST", "/api/v3/order", &query).status, 200);
    let query = format!("symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=IOC&quantity=0.01&price={price}");
    let bought = signed(c, buyer, "POST", "/api/v3/order", &query).json();
    assert_eq!(bought["status"], "FILLED", "{bought}");
}

fn balance(c: &mut Client, user: &User, asset: &str) -> (String, String) {
    let account = signed(c, user, "GET", "/api/v3/account", "").json();
    let balances = account["balances"].as_array().expect("balances").clone();
    let b = balances.iter().find(|b| b["asset"] == asset).expect("asset");
    (
        b["free"].as_str().unwrap_or("").into(),
        b["locked"].as_str().unwrap_or("").into(),
    )
}

fn pair(free: &str, locked: &str) -> (String, String) {
    (free.into(), locked.into())
}

/// The statuses of a list answer's order reports, in order.
fn statuses(list: &Value) -> Vec<String> {
    let reports = list["orderReports"].as_array().cloned().unwrap_or_default();
    reports
        .iter()
        .map(|r| r["status"].as_str().unwrap_or("").to_string())
        .collect()
}

/// The next event of a type on a user data stream, skipping others.
fn next_event(stream: &mut Ws, kind: &str) -> Value {
    loop {
        let event = stream.json();
        if event["e"] == kind {
            return event;
        }
    }
}

#[test]
fn an_oco_sells_at_its_limit_and_expires_its_stop_and_survives_a_crash() {
    let data_dir = common::temp_data_dir();
    let args = ["--admin-token", ADMIN_TOKEN];
    let mut server = Server::start_in(&data_dir, 2, &args);
    let owner = create_user(&server, "oco-owner", &[("BTC", "1")]);
    let maker = create_user(&server, "oco-maker", &[("BTC", "1")]);
    let taker = create_user(&server, "oco-taker", &[("USDT", "100000")]);
    let mut c = server.connect();
    trade_at(&mut c, &maker, &taker, "30000");
    let key = listen_key(&mut c, &owner);
    let mut stream = Ws::connect(server.addr, &format!("/ws/{key}"));

    let placed = signed(
        &mut c,
        &owner,
        "POST",
        "/api/v3/orderList/oco",
        "symbol=BTCUSDT&side=SELL&quantity=0.5&listClientOrderId=exit-1\
         &aboveType=LIMIT_MAKER&abovePrice=31000&aboveClientOrderId=take\
         &belowType=STOP_LOSS_LIMIT&belowPrice=28900&belowStopPrice=29000&belowTimeInForce=GTC\
         &belowClientOrderId=stop&newOrderRespType=RESULT",
    );
    assert_eq!(placed.status, 200, "{}", placed.body_text());
    let placed = placed.json();
    let list_id = placed["orderListId"].as_u64().expect("orderListId");
    assert_eq!(
        (
            &placed["contingencyType"],
            &placed["listStatusType"],
            &placed["listOrderStatus"]
        ),
        (&json!("OCO"), &json!("EXEC_STARTED"), &json!("EXECUTING"))
    );
    assert_eq!(placed["listClientOrderId"], "exit-1");
    let take_id = placed["orders"][0]["orderId"].as_u64().expect("orderId");
    assert_eq!(take_id, list_id, "a list's id is its first order's");
    let stop_id = placed["orders"][1]["orderId"].as_u64().expect("orderId");
    assert_eq!(placed["orders"][1]["clientOrderId"], "stop");
    let reports = &placed["orderReports"];
    assert_eq!(
        (&reports[0]["type"], &reports[0]["price"], &reports[0]["orderListId"]),
        (&json!("LIMIT_MAKER"), &json!("31000.00000000"), &json!(list_id))
    );
    assert_eq!(
        (
            &reports[1]["type"],
            &reports[1]["stopPrice"],
            &reports[1]["workingTime"]
        ),
        (&json!("STOP_LOSS_LIMIT"), &json!("29000.00000000"), &json!(-1))
    );
    assert_eq!(statuses(&placed), ["NEW", "NEW"]);
    // The pair locks its 0.5 BTC once.
    assert_eq!(balance(&mut c, &owner, "BTC"), pair("0.50000000", "0.50000000"));

    let report = next_event(&mut stream, "executionReport");
    assert_eq!(
        (&report["i"], &report["g"], &report["x"]),
        (&json!(take_id), &json!(list_id), &json!("NEW"))
    );
    let status = next_event(&mut stream, "listStatus");
    assert_eq!(
        (&status["g"], &status["c"], &status["l"], &status["L"], &status["C"]),
        (
            &json!(list_id),
            &json!("OCO"),
            &json!("EXEC_STARTED"),
            &json!("EXECUTING"),
            &json!("exit-1")
        )
    );
    assert_eq!(
        status["O"],
        json!([
            {"s": "BTCUSDT", "i": take_id, "c": "take"},
            {"s": "BTCUSDT", "i": stop_id, "c": "stop"}
        ])
    );
    let open = signed(&mut c, &owner, "GET", "/api/v3/openOrders", "symbol=BTCUSDT").json();
    let lists: Vec<&Value> = open
        .as_array()
        .expect("orders")
        .iter()
        .map(|o| &o["orderListId"])
        .collect();
    assert_eq!(lists, [&json!(list_id), &json!(list_id)]);

    // After a crash the list and its lock are as they were.
    drop(stream);
    server.kill9();
    let server = Server::start_in(&data_dir, 2, &args);
    let mut c = server.connect();
    let query = format!("orderListId={list_id}");
    let list = signed(&mut c, &owner, "GET", "/api/v3/orderList", &query).json();
    assert_eq!(
        (&list["listOrderStatus"], &list["orders"][1]["clientOrderId"]),
        (&json!("EXECUTING"), &json!("stop"))
    );
    let open_lists = signed(&mut c, &owner, "GET", "/api/v3/openOrderList", "").json();
    assert_eq!(open_lists.as_array().map(Vec::len), Some(1));
    assert_eq!(balance(&mut c, &owner, "BTC"), pair("0.50000000", "0.50000000"));
    let key = listen_key(&mut c, &owner);
    let mut stream = Ws::connect(server.addr, &format!("/ws/{key}"));

    // A buy at 31,000 fills the LIMIT_MAKER; the stop expires with it.
    let buy = signed(
        &mut c,
        &taker,
        "POST",
        "/api/v3/order",
        "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=IOC&quantity=0.5&price=31000",
    )
    .json();
    assert_eq!(buy["status"], "FILLED", "{buy}");
    let expired = next_event(&mut stream, "executionReport");
    let filled = next_event(&mut stream, "executionReport");
    let mut reports = [expired, filled];
    reports.sort_by_key(|r| r["i"].as_u64());
    assert_eq!(
        (&reports[0]["i"], &reports[0]["X"], &reports[0]["g"]),
        (&json!(take_id), &json!("FILLED"), &json!(list_id))
    );
    assert_eq!(
        (&reports[1]["i"], &reports[1]["X"]),
        (&json!(stop_id), &json!("EXPIRED"))
    );
    let done = next_event(&mut stream, "listStatus");
    assert_eq!((&done["l"], &done["L"]), (&json!("ALL_DONE"), &json!("ALL_DONE")));
    let list = signed(&mut c, &owner, "GET", "/api/v3/orderList", &query).json();
    assert_eq!(
        (&list["listStatusType"], &list["listOrderStatus"]),
        (&json!("ALL_DONE"), &json!("ALL_DONE"))
    );
    let all = signed(&mut c, &owner, "GET", "/api/v3/allOrderList", "").json();
    assert_eq!(all[0]["orderListId"], json!(list_id));
    assert_eq!(
        signed(&mut c, &owner, "GET", "/api/v3/openOrderList", "").json(),
        json!([])
    );
    // 0.5 × 31,000 = 15,500 less the 0.1 % maker fee.
    assert_eq!(balance(&mut c, &owner, "BTC"), pair("0.50000000", "0.00000000"));
    assert_eq!(balance(&mut c, &owner, "USDT"), pair("15484.50000000", "0.00000000"));
    drop(stream);
    drop(server);
}

#[test]
fn an_oto_waits_pending_and_a_list_cancel_ends_it() {
    let server = Server::start(2, &["--admin-token", ADMIN_TOKEN]);
    let owner = create_user(&server, "oto-owner", &[("USDT", "10000")]);
    let mut c = server.connect();
    let key = listen_key(&mut c, &owner);
    let mut stream = Ws::connect(server.addr, &format!("/ws/{key}"));
    let placed = signed(
        &mut c,
        &owner,
        "POST",
        "/api/v3/orderList/oto",
        "symbol=BTCUSDT&listClientOrderId=ladder\
         &workingType=LIMIT&workingSide=BUY&workingPrice=30000&workingQuantity=0.1&workingTimeInForce=GTC\
         &pendingType=LIMIT_MAKER&pendingSide=SELL&pendingPrice=33000&pendingQuantity=0.1",
    );
    assert_eq!(placed.status, 200, "{}", placed.body_text());
    let placed = placed.json();
    assert_eq!(placed["contingencyType"], "OTO");
    assert_eq!(statuses(&placed), ["NEW", "PENDING_NEW"]);
    assert_eq!(placed["orderReports"][1]["workingTime"], -1);
    // FULL (the default) lists the working order's fills: none.
    assert_eq!(placed["orderReports"][0]["fills"], json!([]));
    assert_eq!(balance(&mut c, &owner, "USDT"), pair("7000.00000000", "3000.00000000"));
    // Both orders are reported accepted: the pending one PENDING_NEW.
    let working = next_event(&mut stream, "executionReport");
    let pending = next_event(&mut stream, "executionReport");
    assert_eq!(
        (&working["x"], &working["X"], &working["o"]),
        (&json!("NEW"), &json!("NEW"), &json!("LIMIT"))
    );
    assert_eq!(
        (&pending["x"], &pending["X"], &pending["o"], &pending["g"]),
        (
            &json!("NEW"),
            &json!("PENDING_NEW"),
            &json!("LIMIT_MAKER"),
            &placed["orderListId"]
        )
    );
    let started = next_event(&mut stream, "listStatus");
    assert_eq!((&started["c"], &started["l"]), (&json!("OTO"), &json!("EXEC_STARTED")));
    let canceled = signed(
        &mut c,
        &owner,
        "DELETE",
        "/api/v3/orderList",
        "symbol=BTCUSDT&listClientOrderId=ladder",
    );
    assert_eq!(canceled.status, 200, "{}", canceled.body_text());
    let canceled = canceled.json();
    assert_eq!(
        (&canceled["listStatusType"], &canceled["listOrderStatus"]),
        (&json!("ALL_DONE"), &json!("ALL_DONE"))
    );
    assert_eq!(statuses(&canceled), ["CANCELED", "CANCELED"]);
    assert_eq!(balance(&mut c, &owner, "USDT"), pair("10000.00000000", "0.00000000"));
    let again = signed(
        &mut c,
        &owner,
        "DELETE",
        "/api/v3/orderList",
        "symbol=BTCUSDT&listClientOrderId=ladder",
    );
    assert_eq!(again.error(), (-2011, "Unknown order sent.".to_string()));
}

#[test]
fn an_otoco_places_its_pair_when_the_working_order_fills_even_across_a_crash() {
    let data_dir = common::temp_data_dir();
    let args = ["--admin-token", ADMIN_TOKEN];
    let mut server = Server::start_in(&data_dir, 2, &args);
    // The pending sell of 0.1 needs more than the 0.1 bought less its fee.
    let owner = create_user(&server, "otoco-owner", &[("USDT", "10000"), ("BTC", "0.001")]);
    let seller = create_user(&server, "otoco-seller", &[("BTC", "1")]);
    let mut c = server.connect();
    let placed = signed(
        &mut c,
        &owner,
        "POST",
        "/api/v3/orderList/otoco",
        "symbol=BTCUSDT&workingType=LIMIT&workingSide=BUY&workingPrice=30000&workingQuantity=0.1\
         &workingTimeInForce=GTC&pendingSide=SELL&pendingQuantity=0.1\
         &pendingAboveType=LIMIT_MAKER&pendingAbovePrice=32000\
         &pendingBelowType=STOP_LOSS&pendingBelowStopPrice=28000",
    );
    assert_eq!(placed.status, 200, "{}", placed.body_text());
    let placed = placed.json();
    let list_id = placed["orderListId"].as_u64().expect("orderListId");
    assert_eq!(statuses(&placed), ["NEW", "PENDING_NEW", "PENDING_NEW"]);
    let sell = signed(
        &mut c,
        &seller,
        "POST",
        "/api/v3/order",
        "symbol=BTCUSDT&side=SELL&type=LIMIT&timeInForce=IOC&quantity=0.1&price=30000",
    )
    .json();
    assert_eq!(sell["status"], "FILLED", "{sell}");
    server.kill9();
    let server = Server::start_in(&data_dir, 2, &args);
    let mut c = server.connect();
    let open = signed(&mut c, &owner, "GET", "/api/v3/openOrders", "symbol=BTCUSDT").json();
    let open: Vec<(Value, Value)> = open
        .as_array()
        .expect("orders")
        .iter()
        .map(|o| (o["type"].clone(), o["status"].clone()))
        .collect();
    assert_eq!(
        open,
        [(json!("LIMIT_MAKER"), json!("NEW")), (json!("STOP_LOSS"), json!("NEW"))]
    );
    let asks = server.get("/api/v3/depth?symbol=BTCUSDT&limit=5").json()["asks"].clone();
    assert_eq!(asks, json!([["32000.00000000", "0.10000000"]]));
    // 0.1 bought less the 0.1 % maker fee; the pair locks its 0.1 once.
    assert_eq!(balance(&mut c, &owner, "BTC"), pair("0.00090000", "0.10000000"));
    let query = format!("symbol=BTCUSDT&orderId={}", list_id + 2);
    let stop = signed(&mut c, &owner, "GET", "/api/v3/order", &query).json();
    let leg = signed(
        &mut c,
        &owner,
        "DELETE",
        "/api/v3/order",
        &format!("symbol=BTCUSDT&orderId={}", stop["orderId"]),
    );
    assert_eq!(leg.status, 200, "{}", leg.body_text());
    let list = signed(
        &mut c,
        &owner,
        "GET",
        "/api/v3/orderList",
        &format!("orderListId={list_id}"),
    )
    .json();
    assert_eq!(list["listOrderStatus"], "ALL_DONE");
    assert_eq!(
        server.get("/api/v3/depth?symbol=BTCUSDT&limit=5").json()["asks"],
        json!([])
    );
    assert_eq!(balance(&mut c, &owner, "BTC"), pair("0.10090000", "0.00000000"));
    drop(server);
}

#[test]
fn the_legacy_oco_endpoint_and_binance_refusals() {
    let server = Server::start(1, &["--admin-token", ADMIN_TOKEN]);
    let owner = create_user(&server, "legacy-owner", &[("USDT", "100000"), ("BTC", "1")]);
    let maker = create_user(&server, "legacy-maker", &[("BTC", "1")]);
    let mut c = server.connect();
    trade_at(&mut c, &maker, &owner, "30000");
    let placed = signed(
        &mut c,
        &owner,
        "POST",
        "/api/v3/order/oco",
        "symbol=BTCUSDT&side=BUY&quantity=0.1&price=29000&stopPrice=31000&stopLimitPrice=31500\
         &stopLimitTimeInForce=GTC&newOrderRespType=RESULT",
    );
    assert_eq!(placed.status, 200, "{}", placed.body_text());
    let placed = placed.json();
    let reports = &placed["orderReports"];
    assert_eq!(
        (&reports[0]["type"], &reports[1]["type"]),
        (&json!("STOP_LOSS_LIMIT"), &json!("LIMIT_MAKER"))
    );
    // One lock for the pair: the larger leg, 0.1 × 31,500.
    let usdt = balance(&mut c, &owner, "USDT");
    assert_eq!(usdt.1, "3150.00000000");

    let refusals = [
        (
            "/api/v3/order/oco",
            "symbol=BTCUSDT&side=SELL&quantity=0.1&price=31000&stopPrice=30500",
            -2010,
            "The relationship of the prices for the orders is not correct.",
        ),
        (
            "/api/v3/orderList/oco",
            "symbol=BTCUSDT&side=SELL&quantity=0.1&aboveType=STOP_LOSS&aboveStopPrice=32000\
             &belowType=LIMIT_MAKER&belowPrice=29000",
            -1197,
            "A stop loss order in a sell OCO must be below.",
        ),
        (
            "/api/v3/orderList/oco",
            "symbol=BTCUSDT&side=SELL&quantity=0.1&aboveType=LIMIT&abovePrice=32000&aboveTimeInForce=GTC\
             &belowType=STOP_LOSS&belowStopPrice=29000",
            -1158,
            "Order type not supported in OCO.",
        ),
        (
            "/api/v3/orderList/oco",
            "symbol=BTCUSDT&side=SELL&quantity=0.1&aboveType=LIMIT_MAKER&abovePrice=32000&aboveStrategyId=7\
             &belowType=STOP_LOSS&belowStopPrice=29000",
            -1106,
            "Parameter 'aboveStrategyId' sent when not required.",
        ),
        (
            "/api/v3/orderList/oto",
            "symbol=BTCUSDT&workingType=MARKET&workingSide=BUY&workingQuantity=0.1\
             &pendingType=LIMIT_MAKER&pendingSide=SELL&pendingPrice=33000&pendingQuantity=0.1",
            -2010,
            "Unsupported order combination",
        ),
        (
            "/api/v3/orderList/oco",
            "symbol=BTCUSDT&side=SELL&quantity=0.1&aboveType=LIMIT_MAKER&abovePrice=32000",
            -1102,
            "Mandatory parameter 'belowType' was not sent, was empty/null, or malformed.",
        ),
    ];
    for (path, query, code, msg) in refusals {
        let refused = signed(&mut c, &owner, "POST", path, query);
        assert_eq!(refused.error(), (code, msg.to_string()), "{path}?{query}");
    }
    assert_eq!(balance(&mut c, &owner, "USDT").1, "3150.00000000");
    assert_eq!(balance(&mut c, &owner, "BTC").1, "0.00000000");
}

/// Every parameter Binance documents for `POST /api/v3/orderList/oco`
/// is honoured (the answer shows it) or refused with Binance's error.
#[test]
fn every_documented_oco_parameter_is_honoured_or_refused() {
    let server = Server::start(1, &["--admin-token", ADMIN_TOKEN]);
    let owner = create_user(&server, "oco-params", &[("BTC", "10")]);
    let mut c = server.connect();
    let base = "symbol=BTCUSDT&side=SELL&quantity=0.01&aboveType=TAKE_PROFIT_LIMIT&abovePrice=45000\
                &aboveStopPrice=44000&aboveTimeInForce=GTC&belowType=STOP_LOSS&belowStopPrice=35000\
                &newOrderRespType=RESULT";
    // (parameter, query, report (or -1 for the list), field, value)
    let honoured: Vec<(&str, String, i64, &str, Value)> = vec![
        (
            "listClientOrderId",
            format!("{base}&listClientOrderId=l-1"),
            -1,
            "listClientOrderId",
            json!("l-1"),
        ),
        (
            "aboveClientOrderId",
            format!("{base}&aboveClientOrderId=a-1"),
            0,
            "clientOrderId",
            json!("a-1"),
        ),
        (
            "belowClientOrderId",
            format!("{base}&belowClientOrderId=b-1"),
            1,
            "clientOrderId",
            json!("b-1"),
        ),
        (
            "abovePrice",
            base.replace("abovePrice=45000", "abovePrice=45001"),
            0,
            "price",
            json!("45001.00000000"),
        ),
        (
            "aboveStopPrice",
            base.replace("=44000", "=44001"),
            0,
            "stopPrice",
            json!("44001.00000000"),
        ),
        ("aboveTimeInForce", base.to_string(), 0, "timeInForce", json!("GTC")),
        (
            "aboveIcebergQty",
            format!("{base}&aboveIcebergQty=0.005"),
            0,
            "icebergQty",
            json!("0.00500000"),
        ),
        (
            "belowTrailingDelta",
            format!("{base}&belowTrailingDelta=150"),
            1,
            "trailingDelta",
            json!(150),
        ),
        (
            "newOrderRespType",
            base.replace("RESULT", "ACK"),
            1,
            "status",
            json!(null),
        ),
        (
            "selfTradePreventionMode",
            format!("{base}&selfTradePreventionMode=EXPIRE_MAKER"),
            0,
            "selfTradePreventionMode",
            json!("EXPIRE_MAKER"),
        ),
        (
            "recvWindow",
            format!("{base}&recvWindow=5000"),
            1,
            "status",
            json!("NEW"),
        ),
    ];
    for (name, query, report, field, value) in honoured {
        let r = signed(&mut c, &owner, "POST", "/api/v3/orderList/oco", &query);
        let body = r.json();
        assert_eq!(r.status, 200, "{name}: {body}");
        let shown = match report {
            -1 => &body[field],
            i => &body["orderReports"][i as usize][field],
        };
        assert_eq!(shown, &value, "{name}: {body}");
        let id = body["orderListId"].as_u64().expect("orderListId");
        let canceled = signed(
            &mut c,
            &owner,
            "DELETE",
            "/api/v3/orderList",
            &format!("symbol=BTCUSDT&orderListId={id}"),
        );
        assert_eq!(canceled.status, 200, "{name}: {}", canceled.body_text());
    }
    for leg in ["above", "below"] {
        for name in [
            "StrategyId",
            "StrategyType",
            "PegPriceType",
            "PegOffsetType",
            "PegOffsetValue",
        ] {
            let query = format!("{base}&{leg}{name}=1000000");
            let r = signed(&mut c, &owner, "POST", "/api/v3/orderList/oco", &query);
            let msg = format!("Parameter '{leg}{name}' sent when not required.");
            assert_eq!(
                (r.status, r.json()),
                (400, json!({"code": -1106, "msg": msg})),
                "{leg}{name}"
            );
        }
    }
    assert_eq!(balance(&mut c, &owner, "BTC"), pair("10.00000000", "0.00000000"));
}
