//! The signed REST API across shards: bad input gets Binance's codes,
//! limits answer 429, halts stop trading, and random trading across two
//! shards conserves funds.

mod common;

use common::account::{admin, create_user, now_ms, signed, Signer, User};
use common::{Client, Server, ADMIN_TOKEN};
use serde_json::json;

fn start(shards: usize, extra: &[&str]) -> Server {
    let mut args = vec!["--admin-token", ADMIN_TOKEN, "--demo-user", "false"];
    args.extend_from_slice(extra);
    Server::start(shards, &args)
}

#[test]
fn bad_input_gets_binance_codes() {
    let server = start(2, &[]);
    let alice = create_user(&server, "alice", &[("USDT", "1000")]);
    let mut c = server.connect();
    let order = "/api/v3/order";
    let table: &[(&str, &str, &str, u16, i64, &str)] = &[
        (
            "POST",
            order,
            "side=BUY&type=LIMIT&quantity=1&price=1",
            400,
            -1102,
            "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.",
        ),
        (
            "POST",
            order,
            "symbol=NOPE&side=BUY&type=LIMIT&quantity=1&price=1",
            400,
            -1121,
            "Invalid symbol.",
        ),
        (
            "POST",
            order,
            "symbol=BTCUSDT&side=UP&type=LIMIT&quantity=1&price=1",
            400,
            -1117,
            "Invalid side.",
        ),
        (
            "POST",
            order,
            "symbol=BTCUSDT&side=BUY&type=SOON&quantity=1&price=1",
            400,
            -1116,
            "Invalid orderType.",
        ),
        (
            "POST",
            order,
            "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=NOW&quantity=1&price=1",
            400,
            -1115,
            "Invalid timeInForce.",
        ),
        (
            "POST",
            order,
            "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=x&price=1",
            400,
            -1100,
            "Illegal characters found in parameter 'quantity'.",
        ),
        (
            "POST",
            order,
            "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&price=1",
            400,
            -1102,
            "Param 'quantity' or 'quoteOrderQty' must be sent, but both were empty/null!",
        ),
        (
            "POST",
            order,
            "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.001&price=0.001",
            400,
            -1013,
            "Filter failure: PRICE_FILTER",
        ),
        (
            "POST",
            order,
            "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.000001&price=100",
            400,
            -1013,
            "Filter failure: LOT_SIZE",
        ),
        (
            "POST",
            order,
            "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=30000",
            400,
            -2010,
            "Account has insufficient balance for requested action.",
        ),
        // Icebergs under Binance's rules, on orders and their tests.
        (
            "POST",
            order,
            "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=IOC&quantity=0.1&price=1000&icebergQty=0.01",
            400,
            -2010,
            "Unsupported order combination",
        ),
        (
            "POST",
            "/api/v3/order/test",
            "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.1&price=1000&icebergQty=0.001",
            400,
            -1013,
            "Filter failure: ICEBERG_PARTS",
        ),
        (
            "POST",
            order,
            "symbol=BTCUSDT&side=BUY&type=MARKET&quantity=0.1&icebergQty=0.01",
            400,
            -1106,
            "Parameter 'icebergQty' sent when not required.",
        ),
        // Pegged orders are not built: refused, never placed as plain
        // orders (exchangeInfo says so too).
        (
            "POST",
            order,
            "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.1&price=1000&pegPriceType=PRIMARY_PEG",
            400,
            -2010,
            "Pegged orders are not supported for this symbol.",
        ),
        (
            "POST",
            order,
            "symbol=BTCUSDT&side=BUY&type=STOP_LOSS_LIMIT&timeInForce=GTC&quantity=0.1&price=1000&trailingDelta=5",
            400,
            -1013,
            "Filter failure: TRAILING_DELTA",
        ),
        (
            "POST",
            order,
            "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.1&price=1000&trailingDelta=100",
            400,
            -1106,
            "Parameter 'trailingDelta' sent when not required.",
        ),
        (
            "POST",
            order,
            "symbol=BTCUSDT&side=BUY&type=STOP_LOSS&quantity=0.1",
            400,
            -1102,
            "Param 'stopPrice' or 'trailingDelta' must be sent, but both were empty/null!",
        ),
        (
            "GET",
            order,
            "symbol=BTCUSDT&orderId=999",
            400,
            -2013,
            "Order does not exist.",
        ),
        (
            "DELETE",
            order,
            "symbol=BTCUSDT&orderId=999",
            400,
            -2011,
            "Unknown order sent.",
        ),
        (
            "GET",
            order,
            "symbol=BTCUSDT",
            400,
            -1102,
            "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!",
        ),
        (
            "GET",
            "/api/v3/klines",
            "symbol=BTCUSDT&interval=7m",
            400,
            -1120,
            "Invalid interval.",
        ),
        (
            "PUT",
            "/api/v3/userDataStream",
            "listenKey=000000000099nope",
            400,
            -1125,
            "This listenKey does not exist.",
        ),
    ];
    for (method, path, query, status, code, msg) in table {
        let r = signed(&mut c, &alice, method, path, query);
        assert_eq!(
            (r.status, r.error()),
            (*status, (*code, msg.to_string())),
            "{method} {path}?{query}"
        );
    }
    // Nothing in the table placed an order.
    let open = signed(&mut c, &alice, "GET", "/api/v3/openOrders", "symbol=BTCUSDT");
    assert_eq!((open.status, open.body_text()), (200, "[]".to_string()));
    let mut wrong = User {
        id: alice.id,
        key: alice.key.clone(),
        signer: Signer::Hmac("0".repeat(64)),
    };
    let r = signed(&mut c, &wrong, "GET", "/api/v3/account", "");
    assert_eq!((r.status, r.error().0), (400, -1022));
    wrong.key = format!("{:012}unknownkey", 424242);
    let r = signed(&mut c, &wrong, "GET", "/api/v3/account", "");
    assert_eq!((r.status, r.error().0), (401, -2015));
    c.send(&format!(
        "GET /api/v3/account?timestamp=1&signature=00 HTTP/1.1\r\nX-MBX-APIKEY: {}\r\n\r\n",
        alice.key
    ));
    assert_eq!(c.response().error().0, -1021);
    // The key revoked: -2015 from then on.
    let addr = server.admin.unwrap();
    assert_eq!(
        admin(addr, "DELETE", &format!("/admin/v1/keys/{}", alice.key), None).0,
        200
    );
    let r = signed(&mut c, &alice, "GET", "/api/v3/account", "");
    assert_eq!((r.status, r.error().0), (401, -2015));
}

#[test]
fn request_weight_over_the_limit_is_429_with_retry_after() {
    let server = start(1, &["--request-weight-per-minute-max", "25"]);
    let mut c = server.connect();
    let ping = "GET /api/v3/ping HTTP/1.1\r\n\r\n";
    c.send(ping);
    let r = c.response();
    assert_eq!((r.status, r.header("x-mbx-used-weight-1m")), (200, Some("1")));
    c.send("GET /api/v3/exchangeInfo HTTP/1.1\r\n\r\n");
    let r = c.response();
    assert_eq!((r.status, r.header("x-mbx-used-weight-1m")), (200, Some("21")));
    c.send("GET /api/v3/exchangeInfo HTTP/1.1\r\n\r\n");
    let r = c.response();
    assert_eq!((r.status, r.error().0), (429, -1003));
    let retry: u64 = r.header("retry-after").expect("Retry-After").parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
}

#[test]
fn orders_over_the_limit_are_429_and_a_halted_market_refuses_orders() {
    let server = start(1, &["--orders-per-10s-max", "2"]);
    let bob = create_user(&server, "bob", &[("USDT", "100000")]);
    let mut c = server.connect();
    let buy = "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.001&price=10000";
    for expected in ["1", "2"] {
        let r = signed(&mut c, &bob, "POST", "/api/v3/order", buy);
        assert_eq!((r.status, r.header("x-mbx-order-count-10s")), (200, Some(expected)));
    }
    let r = signed(&mut c, &bob, "POST", "/api/v3/order", buy);
    assert_eq!((r.status, r.error().0), (429, -1015));
    let retry: u64 = r.header("retry-after").expect("Retry-After").parse().unwrap();
    assert!((1..=10).contains(&retry), "{retry}");
    let r = signed(&mut c, &bob, "POST", "/api/v3/order/test", buy);
    assert_eq!(
        (r.status, r.body_text().as_str()),
        (200, "{}"),
        "order/test places nothing"
    );
    // An order that trades leaves its user's unfilled-order count, for the
    // maker and for the taker: after a crossing pair each may place two more.
    let dave = create_user(&server, "dave", &[("BTC", "1"), ("USDT", "1000")]);
    let erin = create_user(&server, "erin", &[("USDT", "100000")]);
    let sell = "symbol=BTCUSDT&side=SELL&type=LIMIT&timeInForce=GTC&quantity=0.001&price=20000";
    let cross = "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.001&price=20000";
    assert_eq!(signed(&mut c, &dave, "POST", "/api/v3/order", sell).status, 200);
    let r = signed(&mut c, &erin, "POST", "/api/v3/order", cross);
    assert_eq!((r.status, r.json()["status"].as_str()), (200, Some("FILLED")));
    let resting = "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.001&price=10000";
    for user in [&dave, &erin] {
        for expected in ["1", "2"] {
            let r = signed(&mut c, user, "POST", "/api/v3/order", resting);
            let count = r.header("x-mbx-order-count-10s").map(str::to_string);
            assert_eq!((r.status, count.as_deref()), (200, Some(expected)), "{}", r.body_text());
        }
    }
    let addr = server.admin.unwrap();
    let (status, halted) = admin(addr, "POST", "/admin/v1/markets/ETHUSDT/halt", None);
    assert_eq!((status, halted), (200, json!({"symbol": "ETHUSDT", "halted": true})));
    let server2 = start(2, &[]);
    let carol = create_user(&server2, "carol", &[("USDT", "100000")]);
    let addr2 = server2.admin.unwrap();
    assert_eq!(admin(addr2, "POST", "/admin/v1/markets/ETHUSDT/halt", None).0, 200);
    let mut c2 = server2.connect();
    let eth = "symbol=ETHUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.01&price=2000";
    let r = signed(&mut c2, &carol, "POST", "/api/v3/order", eth);
    assert_eq!((r.status, r.error()), (400, (-2010, "Market is closed.".to_string())));
    assert_eq!(admin(addr2, "POST", "/admin/v1/markets/ETHUSDT/resume", None).0, 200);
    let r = signed(&mut c2, &carol, "POST", "/api/v3/order", eth);
    assert_eq!((r.status, r.json()["status"].as_str()), (200, Some("NEW")));
}

/// splitmix64: a reproducible stream of test choices.
fn next(seed: &mut u64) -> u64 {
    *seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *seed;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[test]
fn random_trading_across_two_shards_conserves_funds() {
    let server = start(2, &[]);
    let deposits = [
        ("USDT", "1000000"),
        ("BTC", "100"),
        ("ETH", "1000"),
        ("EUR", "100000"),
        ("USD", "100000"),
    ];
    let users: Vec<User> = (0..6)
        .map(|i| create_user(&server, &format!("u{i}"), &deposits))
        .collect();
    let markets = [
        ("BTCUSDT", 30000, "0.001"),
        ("ETHUSDT", 2000, "0.01"),
        ("ETHBTC", 0, "0.01"),
        ("EURUSD", 1, "10"),
    ];
    let mut seed: u64 = std::env::var("TRADSYS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261122);
    let start_seed = seed;
    let mut clients: Vec<Client> = (0..3).map(|_| server.connect()).collect();
    let mut filled = 0;
    for i in 0..400 {
        let user = &users[(next(&mut seed) % users.len() as u64) as usize];
        let (symbol, base, qty) = markets[(next(&mut seed) % markets.len() as u64) as usize];
        let side = if next(&mut seed) % 2 == 0 { "BUY" } else { "SELL" };
        let price = match symbol {
            "ETHBTC" => format!("0.06{}", 500 + next(&mut seed) % 20),
            "EURUSD" => format!("1.08{}", 10 + next(&mut seed) % 20),
            _ => (base + (next(&mut seed) % 20) as i64).to_string(),
        };
        let kind = if next(&mut seed) % 5 == 0 { "MARKET" } else { "LIMIT" };
        let query = match kind {
            "MARKET" => format!("symbol={symbol}&side={side}&type=MARKET&quantity={qty}"),
            _ => format!("symbol={symbol}&side={side}&type=LIMIT&timeInForce=GTC&quantity={qty}&price={price}"),
        };
        let c = &mut clients[i % 3];
        let r = signed(c, user, "POST", "/api/v3/order", &query);
        assert_eq!(
            r.status,
            200,
            "seed {start_seed}, order {i}: {query}: {}",
            r.body_text()
        );
        if r.json()["status"] == "FILLED" {
            filled += 1;
        }
        if i % 50 == 49 {
            let r = signed(c, user, "DELETE", "/api/v3/openOrders", &format!("symbol={symbol}"));
            // With nothing open Binance answers -2011.
            let nothing_open = r.status == 400 && r.error().0 == -2011;
            assert!(r.status == 200 || nothing_open, "seed {start_seed}: {}", r.body_text());
        }
    }
    assert!(filled > 20, "seed {start_seed}: only {filled} orders filled");
    let (_, audit) = admin(server.admin.unwrap(), "GET", "/admin/v1/audit", None);
    assert_eq!(audit["ok"], true, "seed {start_seed}: {audit}");
    let m = server.metrics();
    let sum = |name: &str| -> f64 {
        ["0", "1"]
            .iter()
            .map(|s| m.value(name, &[("shard", s)]).unwrap_or(0.0))
            .sum()
    };
    assert_eq!(
        sum("tradsys_orders_local_total") + sum("tradsys_orders_cross_shard_total"),
        400.0
    );
    assert!(sum("tradsys_orders_local_total") > 0.0 && sum("tradsys_orders_cross_shard_total") > 0.0);
    for user in &users {
        let (_, details) = admin(
            server.admin.unwrap(),
            "GET",
            &format!("/admin/v1/users/{}", user.id),
            None,
        );
        for balance in details["balances"].as_array().unwrap() {
            for field in ["free", "locked"] {
                assert!(
                    !balance[field].as_str().unwrap().starts_with('-'),
                    "seed {start_seed}: {details}"
                );
            }
        }
    }
}

/// An IP that keeps going past 429 is banned: Binance's 418 for 2 minutes.
/// Five refusals in a minute are allowed here; the sixth bans.
#[test]
fn an_ip_that_keeps_going_past_429_is_banned_with_418() {
    let server = start(
        1,
        &[
            "--request-weight-per-minute-max",
            "10",
            "--ip-ban-refusals-per-minute-max",
            "5",
        ],
    );
    let mut c = server.connect();
    let before = now_ms();
    let (statuses, banned) = common::pings_until_banned(&mut c, 40);
    // After the last admitted request (a new minute admits again), five
    // refusals, the sixth that bans, and then the ban.
    let last_admitted = statuses.iter().rposition(|&s| s == 200).expect("admitted first");
    assert_eq!(
        statuses[last_admitted + 1..],
        [429, 429, 429, 429, 429, 429, 418],
        "{statuses:?}"
    );
    common::assert_first_ban(&banned.expect("banned"), before);
    // Banned on every path, including a new connection.
    let r = server.get("/api/v3/time");
    assert_eq!((r.status, r.error().0), (418, -1003));
    let metrics = server.metrics();
    assert_eq!(metrics.value("tradsys_ip_bans_total", &[("shard", "0")]), Some(1.0));
    assert_eq!(metrics.value("tradsys_ip_banned", &[("shard", "0")]), Some(1.0));
    assert_eq!(
        metrics.value("tradsys_banned_requests_total", &[("shard", "0")]),
        Some(2.0)
    );
}

/// Guessing API keys or signatures from one IP leads to Binance's 418: an
/// unknown key, a malformed one and a bad signature each count; three in a
/// minute are allowed here, the fourth bans, and the ban holds for every
/// request of the IP, a correctly signed one included.
#[test]
fn an_ip_that_keeps_failing_authentication_is_banned_with_418() {
    let server = start(1, &["--ip-ban-auth-failures-per-minute-max", "3"]);
    let user = create_user(&server, "victim", &[("USDT", "1000")]);
    let mut c = server.connect();
    let before = now_ms();
    let forged = User {
        signer: Signer::Hmac("not-the-secret".into()),
        ..user.clone()
    };
    let unknown = User {
        key: "A".repeat(64),
        ..user.clone()
    };
    let malformed = User {
        key: "bad key".into(),
        ..user.clone()
    };
    let expected = [
        (&forged, 400, -1022),
        (&unknown, 401, -2015),
        (&malformed, 401, -2014),
        (&forged, 400, -1022),
    ];
    for (guess, status, code) in expected {
        let r = signed(&mut c, guess, "GET", "/api/v3/account", "");
        assert_eq!((r.status, r.error().0), (status, code), "{}", r.body_text());
    }
    let r = signed(&mut c, &user, "GET", "/api/v3/account", "");
    assert_eq!(r.status, 418, "{}", r.body_text());
    common::assert_first_ban(&r, before);
    let metrics = server.metrics();
    assert_eq!(metrics.value("tradsys_ip_bans_total", &[("shard", "0")]), Some(1.0));
}

/// Every parameter Binance documents for a new order, a cancel and a
/// cancel-replace is either honoured (the answer shows it) or refused with
/// Binance's error: none is accepted and then silently ignored.
#[test]
fn every_documented_order_parameter_is_honoured_or_refused() {
    let server = start(1, &[]);
    let alice = create_user(&server, "params", &[("USDT", "100000"), ("BTC", "10")]);
    let mut c = server.connect();
    let base = "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.01&price=1000";
    enum Want {
        /// The answer's field equals the value.
        Honoured(&'static str, serde_json::Value),
        Refused(i64, &'static str),
    }
    use Want::{Honoured, Refused};
    let table: Vec<(&str, String, Want)> =
        vec![
        ("timeInForce", base.replace("GTC", "IOC"), Honoured("timeInForce", json!("IOC"))),
        ("quantity", base.replace("0.01", "0.02"), Honoured("origQty", json!("0.02000000"))),
        ("price", base.replace("1000", "1001"), Honoured("price", json!("1001.00000000"))),
        (
            "quoteOrderQty",
            "symbol=BTCUSDT&side=BUY&type=MARKET&quoteOrderQty=10".into(),
            Honoured("origQuoteOrderQty", json!("10.00000000")),
        ),
        ("newClientOrderId", format!("{base}&newClientOrderId=mine-1"), Honoured("clientOrderId", json!("mine-1"))),
        (
            "stopPrice",
            "symbol=BTCUSDT&side=BUY&type=STOP_LOSS_LIMIT&timeInForce=GTC&quantity=0.01&price=1000&stopPrice=200000\
             &newOrderRespType=RESULT"
                .into(),
            Honoured("stopPrice", json!("200000.00000000")),
        ),
        ("newOrderRespType", format!("{base}&newOrderRespType=ACK"), Honoured("status", json!(null))),
        (
            "selfTradePreventionMode",
            format!("{base}&selfTradePreventionMode=EXPIRE_BOTH"),
            Honoured("selfTradePreventionMode", json!("EXPIRE_BOTH")),
        ),
        ("recvWindow", format!("{base}&recvWindow=5000"), Honoured("status", json!("NEW"))),
        ("icebergQty", format!("{base}&icebergQty=0.001"), Honoured("icebergQty", json!("0.00100000"))),
        (
            "trailingDelta",
            "symbol=BTCUSDT&side=SELL&type=STOP_LOSS_LIMIT&timeInForce=GTC&quantity=0.01&price=1000&trailingDelta=100\
             &newOrderRespType=RESULT"
                .into(),
            Honoured("trailingDelta", json!(100)),
        ),
        (
            "pegPriceType",
            format!("{base}&pegPriceType=PRIMARY_PEG"),
            Refused(-2010, "Pegged orders are not supported for this symbol."),
        ),
        (
            "pegOffsetValue",
            format!("{base}&pegOffsetValue=1"),
            Refused(-2010, "Pegged orders are not supported for this symbol."),
        ),
        (
            "pegOffsetType",
            format!("{base}&pegOffsetType=PRICE_LEVEL"),
            Refused(-2010, "Pegged orders are not supported for this symbol."),
        ),
    ];
    let mut table = table;
    let strategy = [
        ("strategyId", "Parameter 'strategyId' sent when not required."),
        ("strategyType", "Parameter 'strategyType' sent when not required."),
    ];
    for (name, msg) in strategy {
        table.push((name, format!("{base}&{name}=1000000"), Refused(-1106, msg)));
    }
    for (name, query, want) in table {
        let r = signed(&mut c, &alice, "POST", "/api/v3/order", &query);
        let body = r.json();
        match want {
            Honoured(field, value) => {
                assert_eq!(r.status, 200, "{name}: {body}");
                assert_eq!(body[field], value, "{name}: {body}");
            }
            Refused(code, msg) => {
                assert_eq!((r.status, body), (400, json!({"code": code, "msg": msg})), "{name}");
            }
        }
    }
    // A cancel and a cancel-replace: what they do not take is refused too,
    // and the order stays.
    let resting = signed(&mut c, &alice, "POST", "/api/v3/order", base).json();
    let id = resting["orderId"].as_u64().expect("orderId");
    let cancel = format!("symbol=BTCUSDT&orderId={id}&cancelRestrictions=ONLY_NEW");
    let r = signed(&mut c, &alice, "DELETE", "/api/v3/order", &cancel);
    assert_eq!(
        (r.status, r.json()),
        (
            400,
            json!({"code": -1106, "msg": "Parameter 'cancelRestrictions' sent when not required."})
        )
    );
    for extra in ["cancelRestrictions=ONLY_NEW", "orderRateLimitExceededMode=CANCEL_ONLY"] {
        let name = extra.split('=').next().unwrap_or("");
        let query = format!("{base}&cancelReplaceMode=STOP_ON_FAILURE&cancelOrderId={id}&{extra}");
        let r = signed(&mut c, &alice, "POST", "/api/v3/order/cancelReplace", &query);
        let msg = format!("Parameter '{name}' sent when not required.");
        assert_eq!(
            (r.status, r.json()),
            (400, json!({"code": -1106, "msg": msg})),
            "{extra}"
        );
    }
    let state = signed(
        &mut c,
        &alice,
        "GET",
        "/api/v3/order",
        &format!("symbol=BTCUSDT&orderId={id}"),
    );
    assert_eq!(state.json()["status"], "NEW");
}
