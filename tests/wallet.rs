//! The wallet endpoints over HTTP: the system status (and maintenance
//! while the server drains), the coins list with a user's balances, trade
//! fees and commission rates from the markets file, deposit and withdrawal
//! history read back from the ledger after known transfers and trades
//! (before and after the store took the rows, and across a restart), the
//! operations tradsys refuses, and Binance's codes for bad requests.

mod common;

use common::account::{admin, create_user, now_ms, signed, User};
use common::{eventually, temp_data_dir, Client, Server, ADMIN_TOKEN};
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

const DEPOSITS: &str = "/sapi/v1/capital/deposit/hisrec";
const WITHDRAWALS: &str = "/sapi/v1/capital/withdraw/history";
/// Binance's 90 days, the longest span of a transfer history query.
const SPAN_MAX_MS: u64 = 7_776_000_000;

fn start_in(dir: &Path, shards: usize, extra: &[&str]) -> Server {
    let mut args = vec!["--admin-token", ADMIN_TOKEN, "--demo-user", "false"];
    args.extend_from_slice(extra);
    Server::start_in(dir, shards, &args)
}

fn start(shards: usize, extra: &[&str]) -> Server {
    let mut args = vec!["--admin-token", ADMIN_TOKEN, "--demo-user", "false"];
    args.extend_from_slice(extra);
    Server::start(shards, &args)
}

fn ok(c: &mut Client, user: &User, method: &str, path: &str, query: &str) -> Value {
    let r = signed(c, user, method, path, query);
    assert_eq!(r.status, 200, "{method} {path}?{query}: {}", r.body_text());
    r.json()
}

/// An admin deposit (`deposit`) or withdrawal of `user`, with the times
/// just before and just after it.
fn transfer(server: &Server, user: &User, asset: &str, amount: &str, deposit: bool) -> (u64, u64) {
    let kind = if deposit { "deposits" } else { "withdrawals" };
    let before = now_ms();
    let (status, body) = admin(
        server.admin.expect("admin API"),
        "POST",
        &format!("/admin/v1/users/{}/{kind}", user.id),
        Some(json!({"asset": asset, "amount": amount})),
    );
    assert_eq!(status, 200, "{body}");
    (before, now_ms())
}

fn order(c: &mut Client, user: &User, side: &str, qty: &str, price: &str) -> Value {
    let q = format!("symbol=BTCUSDT&side={side}&type=LIMIT&timeInForce=GTC&quantity={qty}&price={price}");
    ok(c, user, "POST", "/api/v3/order", &q)
}

fn metric(server: &Server, name: &str) -> f64 {
    let metrics = server.metrics();
    (0..4)
        .filter_map(|shard| metrics.value(name, &[("shard", &shard.to_string())]))
        .sum()
}

/// Every shard's history backlog is written.
fn drained(server: &Server) -> bool {
    eventually(Duration::from_secs(30), || {
        metric(server, "tradsys_history_backlog_rows") == 0.0
    })
}

// ---- a naive UTC calendar, the reference for Binance's withdrawal times ----

fn is_leap(year: u64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) of `time_ms`, counted a year and a month
/// at a time.
fn utc(time_ms: u64) -> String {
    let mut days = time_ms / 86_400_000;
    let mut year = 1970;
    loop {
        let in_year = if is_leap(year) { 366 } else { 365 };
        if days < in_year {
            break;
        }
        days -= in_year;
        year += 1;
    }
    let lengths = [
        31,
        if is_leap(year) { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    let mut month = 0;
    while days >= lengths[month] {
        days -= lengths[month];
        month += 1;
    }
    let seconds = time_ms % 86_400_000 / 1000;
    format!(
        "{year:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        month + 1,
        days + 1,
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    )
}

#[test]
fn the_reference_calendar_agrees_with_known_dates() {
    assert_eq!(utc(0), "1970-01-01 00:00:00");
    assert_eq!(utc(1_570_878_722_000), "2019-10-12 11:12:02");
    assert_eq!(utc(1_709_208_000_000), "2024-02-29 12:00:00");
}

// ---- status ----

#[test]
fn system_status_is_normal_and_says_maintenance_while_draining() {
    let mut server = start(1, &[]);
    let r = server.get("/sapi/v1/system/status");
    assert_eq!(
        (r.status, r.body_text()),
        (200, r#"{"status":0,"msg":"normal"}"#.to_string())
    );
    assert!(r.header("x-mbx-used-weight-1m").is_some());
    // A request in flight when the drain starts is answered, as the
    // server then is: in maintenance.
    let mut idle = server.connect();
    idle.send("GET /api/v3/ping HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(idle.response().status, 200);
    let mut in_flight = server.connect();
    let partial = "GET /sapi/v1/system/status HTTP/1.1\r\nHost: t\r\n";
    in_flight.send(partial);
    let received = |s: &Server| {
        s.metrics()
            .value("tradsys_http_bytes_received_total", &[("shard", "0")])
            .expect("bytes received")
    };
    let expected = received(&server) + partial.len() as f64;
    assert!(eventually(Duration::from_secs(10), || received(&server) >= expected));
    common::signal(&server.child, "TERM");
    assert!(idle.closed(), "the drain closes idle connections");
    in_flight.send("\r\n");
    let r = in_flight.response();
    assert_eq!(
        (r.status, r.body_text()),
        (200, r#"{"status":1,"msg":"system maintenance"}"#.to_string())
    );
    let status = common::wait_exit(&mut server.child, Duration::from_secs(15)).expect("exits");
    assert_eq!(status.code(), Some(0));
}

// ---- coins, fees, commission ----

fn network(coin: &str) -> Value {
    json!({
        "network": "ADMIN",
        "coin": coin,
        "withdrawIntegerMultiple": "0.00000001",
        "isDefault": true,
        "depositEnable": false,
        "withdrawEnable": false,
        "depositDesc": "Deposits are credited by the exchange operator through the admin API; there is no blockchain and no deposit address.",
        "withdrawDesc": "Withdrawals are made by the exchange operator through the admin API; POST /sapi/v1/capital/withdraw/apply is not supported.",
        "specialTips": "",
        "specialWithdrawTips": "",
        "name": "Admin API transfer (no blockchain)",
        "resetAddressStatus": false,
        "addressRegex": "",
        "memoRegex": "",
        "withdrawFee": "0.00000000",
        "withdrawMin": "0.00000001",
        "withdrawMax": "92233720368.54775807",
        "withdrawInternalMin": "0.00000001",
        "depositDust": "0.00000001",
        "minConfirm": 0,
        "unLockConfirm": 0,
        "sameAddress": false,
        "withdrawTag": false,
        "estimatedArrivalTime": 0,
        "busy": false,
        "contractAddressUrl": "",
        "contractAddress": "",
    })
}

fn coin(name: &str, free: &str, locked: &str) -> Value {
    json!({
        "coin": name,
        "depositAllEnable": false,
        "withdrawAllEnable": false,
        "name": name,
        "free": free,
        "locked": locked,
        "freeze": "0.00000000",
        "withdrawing": "0.00000000",
        "ipoing": "0.00000000",
        "ipoable": "0.00000000",
        "storage": "0.00000000",
        "isLegalMoney": false,
        "trading": true,
        "networkList": [network(name)],
    })
}

#[test]
fn coins_list_every_asset_with_the_users_balances() {
    let server = start(2, &[]);
    let alice = create_user(&server, "alice", &[("USDT", "1000"), ("BTC", "1.5")]);
    let mut c = server.connect();
    // Locks 200 USDT.
    order(&mut c, &alice, "BUY", "0.01", "20000");
    let coins = ok(&mut c, &alice, "GET", "/sapi/v1/capital/config/getall", "");
    assert_eq!(
        coins,
        json!([
            coin("BTC", "1.50000000", "0.00000000"),
            coin("USDT", "800.00000000", "200.00000000"),
            coin("ETH", "0.00000000", "0.00000000"),
            coin("EUR", "0.00000000", "0.00000000"),
            coin("USD", "0.00000000", "0.00000000"),
        ])
    );
    // The same balances as the account endpoint's.
    let account = ok(&mut c, &alice, "GET", "/api/v3/account", "");
    let from_coins: Vec<Value> = coins
        .as_array()
        .unwrap()
        .iter()
        .map(|c| json!({"asset": c["coin"], "free": c["free"], "locked": c["locked"]}))
        .collect();
    assert_eq!(account["balances"], Value::Array(from_coins));
}

#[test]
fn trade_fees_and_commission_rates_come_from_the_markets() {
    let server = start(2, &[]);
    let alice = create_user(&server, "alice", &[]);
    let mut c = server.connect();
    let fee = |symbol: &str, rate: &str| json!({"symbol": symbol, "makerCommission": rate, "takerCommission": rate});
    assert_eq!(
        ok(&mut c, &alice, "GET", "/sapi/v1/asset/tradeFee", ""),
        json!([
            fee("BTCUSDT", "0.00100000"),
            fee("ETHUSDT", "0.00100000"),
            fee("ETHBTC", "0.00100000"),
            fee("EURUSD", "0.00050000"),
        ])
    );
    assert_eq!(
        ok(&mut c, &alice, "GET", "/sapi/v1/asset/tradeFee", "symbol=EURUSD"),
        json!([fee("EURUSD", "0.00050000")])
    );
    let rates = |maker: &str, taker: &str| json!({"maker": maker, "taker": taker, "buyer": "0.00000000", "seller": "0.00000000"});
    let zero = "0.00000000";
    let table = [("BTCUSDT", "0.00100000"), ("EURUSD", "0.00050000")];
    for (symbol, rate) in table {
        assert_eq!(
            ok(
                &mut c,
                &alice,
                "GET",
                "/api/v3/account/commission",
                &format!("symbol={symbol}")
            ),
            json!({
                "symbol": symbol,
                "standardCommission": rates(rate, rate),
                "specialCommission": rates(zero, zero),
                "taxCommission": rates(zero, zero),
                "discount": {
                    "enabledForAccount": false,
                    "enabledForSymbol": false,
                    "discountAsset": "BNB",
                    "discount": zero,
                },
            })
        );
    }
}

// ---- deposit and withdrawal history ----

/// The transfers one test made, as the history must show them.
struct Made {
    /// (coin, amount, before, after), oldest first.
    deposits: Vec<(&'static str, &'static str, u64, u64)>,
    withdrawals: Vec<(&'static str, &'static str, u64, u64)>,
}

/// Alice's transfers around a trade: deposits of 1000 USDT and 2 BTC (at
/// creation), a withdrawal of 250 USDT, a trade of 0.5 BTC with bob, a
/// deposit of 0.25 BTC and a withdrawal of 0.1 BTC.
fn transfers_around_a_trade(server: &Server) -> (User, Made) {
    let before = now_ms();
    let alice = create_user(server, "alice", &[("USDT", "1000"), ("BTC", "2")]);
    let created = now_ms();
    let bob = create_user(server, "bob", &[("USDT", "100000")]);
    let w1 = transfer(server, &alice, "USDT", "250", false);
    let mut c = server.connect();
    order(&mut c, &alice, "SELL", "0.5", "30000");
    let bought = order(&mut c, &bob, "BUY", "0.5", "30000");
    assert_eq!(bought["status"], "FILLED");
    let d3 = transfer(server, &alice, "BTC", "0.25", true);
    let w2 = transfer(server, &alice, "BTC", "0.1", false);
    let made = Made {
        deposits: vec![
            ("USDT", "1000.00000000", before, created),
            ("BTC", "2.00000000", before, created),
            ("BTC", "0.25000000", d3.0, d3.1),
        ],
        withdrawals: vec![("USDT", "250.00000000", w1.0, w1.1), ("BTC", "0.10000000", w2.0, w2.1)],
    };
    (alice, made)
}

/// `<shard>-<generation>-<position>`, as numbers.
fn id_parts(id: &Value) -> (u64, u64, u64) {
    let text = id.as_str().expect("an id string");
    let parts: Vec<u64> = text.split('-').map(|p| p.parse().expect("a number")).collect();
    assert_eq!(parts.len(), 3, "{text}");
    (parts[0], parts[1], parts[2])
}

/// Checks `deposits` against what was made (newest first) field by field,
/// and returns the ids' parts oldest first.
fn check_deposits(deposits: &Value, made: &Made) -> Vec<(u64, u64, u64)> {
    let list = deposits.as_array().expect("a list");
    assert_eq!(list.len(), made.deposits.len(), "{deposits}");
    let mut ids = Vec::new();
    for (d, &(coin, amount, before, after)) in list.iter().rev().zip(&made.deposits) {
        let time = d["insertTime"].as_u64().expect("insertTime");
        assert!((before..=after).contains(&time), "{d}: not within {before}..={after}");
        let id = d["id"].as_str().expect("id");
        assert_eq!(
            d,
            &json!({
                "id": id,
                "amount": amount,
                "coin": coin,
                "network": "ADMIN",
                "status": 1,
                "address": "",
                "addressTag": "",
                "txId": format!("Internal transfer {id}"),
                "insertTime": time,
                "completeTime": time,
                "transferType": 1,
                "confirmTimes": "0/0",
                "unlockConfirm": 0,
                "walletType": 0,
                "travelRuleStatus": 0,
            })
        );
        ids.push(id_parts(&d["id"]));
    }
    ids
}

fn check_withdrawals(withdrawals: &Value, made: &Made) -> Vec<(u64, u64, u64)> {
    let list = withdrawals.as_array().expect("a list");
    assert_eq!(list.len(), made.withdrawals.len(), "{withdrawals}");
    let mut ids = Vec::new();
    for (w, &(coin, amount, before, after)) in list.iter().rev().zip(&made.withdrawals) {
        let time = w["applyTime"].as_str().expect("applyTime");
        assert!(
            (utc(before).as_str()..=utc(after).as_str()).contains(&time),
            "{w}: not within {before}..={after}"
        );
        let id = w["id"].as_str().expect("id");
        assert_eq!(
            w,
            &json!({
                "id": id,
                "amount": amount,
                "transactionFee": "0.00000000",
                "coin": coin,
                "status": 6,
                "address": "",
                "txId": format!("Internal transfer {id}"),
                "applyTime": time,
                "network": "ADMIN",
                "transferType": 1,
                "info": "",
                "confirmNo": 0,
                "walletType": 0,
                "txKey": "",
                "completeTime": time,
            })
        );
        ids.push(id_parts(&w["id"]));
    }
    ids
}

/// The selection of `list` a filter keeps, in the list's order.
fn only(list: &Value, keep: impl Fn(&Value) -> bool) -> Value {
    Value::Array(list.as_array().unwrap().iter().filter(|v| keep(v)).cloned().collect())
}

fn page(list: &Value, offset: usize, limit: usize) -> Value {
    Value::Array(
        list.as_array()
            .unwrap()
            .iter()
            .skip(offset)
            .take(limit)
            .cloned()
            .collect(),
    )
}

#[test]
fn deposits_and_withdrawals_read_back_from_the_ledger() {
    let server = start(2, &[]);
    let (alice, made) = transfers_around_a_trade(&server);
    let mut c = server.connect();
    // Right away (the rows may still wait for the store), then once the
    // store has every row: the same lists.
    let deposits = ok(&mut c, &alice, "GET", DEPOSITS, "");
    let withdrawals = ok(&mut c, &alice, "GET", WITHDRAWALS, "");
    assert!(drained(&server));
    assert_eq!(ok(&mut c, &alice, "GET", DEPOSITS, ""), deposits);
    assert_eq!(ok(&mut c, &alice, "GET", WITHDRAWALS, ""), withdrawals);

    let deposit_ids = check_deposits(&deposits, &made);
    let withdrawal_ids = check_withdrawals(&withdrawals, &made);
    // One shard and generation; positions in the order the transfers were
    // made: deposits 1 and 2, withdrawal 1, deposit 3, withdrawal 2.
    let order = [
        deposit_ids[0],
        deposit_ids[1],
        withdrawal_ids[0],
        deposit_ids[2],
        withdrawal_ids[1],
    ];
    assert!(
        order.iter().all(|&(s, g, _)| (s, g) == (order[0].0, order[0].1)),
        "{order:?}"
    );
    assert!(order.windows(2).all(|w| w[0].2 < w[1].2), "{order:?}");

    let deposit = |i: usize| &deposits[made.deposits.len() - 1 - i];
    let time = |v: &Value| v["insertTime"].as_u64().unwrap();
    let first_time = time(deposit(0));
    let last_time = time(deposit(2));
    let tx_id = deposit(1)["txId"].as_str().unwrap().to_string();
    let tx_query = format!("txId={}", tx_id.replace(' ', "%20"));
    let ccxt_window = format!("startTime={first_time}&endTime={}", first_time + SPAN_MAX_MS);
    let deposit_table: Vec<(String, Value)> = vec![
        ("coin=BTC".into(), only(&deposits, |d| d["coin"] == "BTC")),
        ("coin=ETH".into(), json!([])),
        ("coin=NOPE".into(), json!([])),
        ("status=1".into(), deposits.clone()),
        ("status=0".into(), json!([])),
        ("limit=1".into(), page(&deposits, 0, 1)),
        ("offset=1&limit=1".into(), page(&deposits, 1, 1)),
        ("offset=2".into(), page(&deposits, 2, 1000)),
        ("offset=3".into(), json!([])),
        ("limit=5000".into(), deposits.clone()),
        (tx_query, json!([deposit(1)])),
        ("txId=Internal%20transfer%209-9-9".into(), json!([])),
        ("txId=0xabc".into(), json!([])),
        (ccxt_window, deposits.clone()),
        (
            format!("startTime={last_time}"),
            only(&deposits, |d| time(d) >= last_time),
        ),
        (
            format!("startTime={first_time}&endTime={first_time}"),
            only(&deposits, |d| time(d) == first_time),
        ),
        (format!("endTime={}", first_time - 1), json!([])),
        (format!("startTime={}&endTime={first_time}", last_time + 1), json!([])),
    ];
    for (query, expected) in deposit_table {
        assert_eq!(ok(&mut c, &alice, "GET", DEPOSITS, &query), expected, "{query}");
    }
    let with_source = ok(&mut c, &alice, "GET", DEPOSITS, "includeSource=true");
    let mut expected = deposits.clone();
    for d in expected.as_array_mut().unwrap() {
        d["sourceAddress"] = json!("");
    }
    assert_eq!(with_source, expected);

    let ids: Vec<String> = withdrawals
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["id"].as_str().unwrap().to_string())
        .collect();
    let withdraw_table: Vec<(String, Value)> = vec![
        ("coin=USDT".into(), only(&withdrawals, |w| w["coin"] == "USDT")),
        ("status=6".into(), withdrawals.clone()),
        ("status=4".into(), json!([])),
        ("limit=1".into(), page(&withdrawals, 0, 1)),
        ("offset=1".into(), page(&withdrawals, 1, 1)),
        (format!("idList={}", ids[1]), page(&withdrawals, 1, 1)),
        (format!("idList={},{}", ids[1], ids[0]), withdrawals.clone()),
        (format!("idList={},9-9-9,nonsense", ids[0]), page(&withdrawals, 0, 1)),
        ("withdrawOrderId=mine".into(), json!([])),
        ("withdrawOrderId=mine&status=6".into(), json!([])),
    ];
    for (query, expected) in withdraw_table {
        assert_eq!(ok(&mut c, &alice, "GET", WITHDRAWALS, &query), expected, "{query}");
    }

    // Another user sees none of them; bob's deposit is his only transfer.
    let bob = create_user(&server, "bob2", &[]);
    assert_eq!(ok(&mut c, &bob, "GET", DEPOSITS, ""), json!([]));
    assert_eq!(ok(&mut c, &bob, "GET", WITHDRAWALS, ""), json!([]));
}

#[test]
fn transfer_history_keeps_its_ids_and_times_across_a_restart() {
    let dir = temp_data_dir();
    let mut server = start_in(&dir, 2, &[]);
    let (alice, made) = transfers_around_a_trade(&server);
    let mut c = server.connect();
    assert!(drained(&server));
    let deposits = ok(&mut c, &alice, "GET", DEPOSITS, "");
    let withdrawals = ok(&mut c, &alice, "GET", WITHDRAWALS, "");
    check_deposits(&deposits, &made);
    drop(c);
    assert_eq!(server.terminate().code(), Some(0));

    let server = start_in(&dir, 2, &[]);
    let mut c = server.connect();
    assert_eq!(ok(&mut c, &alice, "GET", DEPOSITS, ""), deposits);
    assert_eq!(ok(&mut c, &alice, "GET", WITHDRAWALS, ""), withdrawals);
    // A transfer of the new generation gets a new id, newest first.
    let again = transfer(&server, &alice, "USDT", "5", true);
    let now = ok(&mut c, &alice, "GET", DEPOSITS, "");
    assert_eq!(now.as_array().unwrap().len(), 4);
    assert_eq!(now.as_array().unwrap()[1..], deposits.as_array().unwrap()[..]);
    let time = now[0]["insertTime"].as_u64().unwrap();
    assert!((again.0..=again.1).contains(&time));
    let (shard, generation, _) = id_parts(&now[0]["id"]);
    let (old_shard, old_generation, _) = id_parts(&deposits[0]["id"]);
    assert_eq!(shard, old_shard);
    assert!(generation > old_generation, "{now}");
    drop(server);
}

// ---- errors and refusals ----

#[test]
fn wallet_requests_get_binance_codes() {
    let server = start(2, &[]);
    let alice = create_user(&server, "alice", &[("USDT", "10")]);
    let mut c = server.connect();
    let now = now_ms();
    let refused_address = "This operation is not supported: tradsys has no blockchain and no deposit addresses; the exchange operator credits deposits through the admin API.";
    let refused_withdraw =
        "This operation is not supported: withdrawals are made by the exchange operator through the admin API, not by clients.";
    let table: Vec<(&str, &str, String, u16, i64, String)> = vec![
        (
            "GET",
            DEPOSITS,
            format!("startTime={}&endTime={}", now - SPAN_MAX_MS - 1, now),
            400,
            -1127,
            "More than 2160 hours between startTime and endTime.".into(),
        ),
        (
            "GET",
            DEPOSITS,
            format!("startTime={}", now - SPAN_MAX_MS - 60_000),
            400,
            -1127,
            "More than 2160 hours between startTime and endTime.".into(),
        ),
        (
            "GET",
            WITHDRAWALS,
            "startTime=0&endTime=7776000001".into(),
            400,
            -1127,
            "More than 2160 hours between startTime and endTime.".into(),
        ),
        (
            "GET",
            WITHDRAWALS,
            "withdrawOrderId=x&startTime=0&endTime=604800001".into(),
            400,
            -1127,
            "More than 168 hours between startTime and endTime.".into(),
        ),
        (
            "GET",
            DEPOSITS,
            "offset=10001".into(),
            400,
            -1100,
            "Illegal characters found in parameter 'offset'; legal range is '0 to 10000'.".into(),
        ),
        (
            "GET",
            WITHDRAWALS,
            "offset=-1".into(),
            400,
            -1100,
            "Illegal characters found in parameter 'offset'.".into(),
        ),
        (
            "GET",
            DEPOSITS,
            "limit=0".into(),
            400,
            -1100,
            "Illegal characters found in parameter 'limit'.".into(),
        ),
        (
            "GET",
            DEPOSITS,
            "status=ok".into(),
            400,
            -1100,
            "Illegal characters found in parameter 'status'.".into(),
        ),
        (
            "GET",
            DEPOSITS,
            "startTime=soon".into(),
            400,
            -1100,
            "Illegal characters found in parameter 'startTime'.".into(),
        ),
        (
            "GET",
            DEPOSITS,
            "includeSource=maybe".into(),
            400,
            -1100,
            "Illegal characters found in parameter 'includeSource'.".into(),
        ),
        (
            "GET",
            WITHDRAWALS,
            format!("idList={}", vec!["0-1-1"; 51].join(",")),
            400,
            -1100,
            "Illegal characters found in parameter 'idList'; legal range is '1 to 50 ids'.".into(),
        ),
        (
            "GET",
            "/api/v3/account/commission",
            "".into(),
            400,
            -1102,
            "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.".into(),
        ),
        (
            "GET",
            "/api/v3/account/commission",
            "symbol=NOPE".into(),
            400,
            -1121,
            "Invalid symbol.".into(),
        ),
        (
            "GET",
            "/sapi/v1/asset/tradeFee",
            "symbol=NOPE".into(),
            400,
            -1121,
            "Invalid symbol.".into(),
        ),
        (
            "GET",
            "/sapi/v1/capital/deposit/address",
            "coin=USDT".into(),
            400,
            -1020,
            refused_address.into(),
        ),
        (
            "POST",
            "/sapi/v1/capital/withdraw/apply",
            "coin=USDT&address=0xabc&amount=1".into(),
            400,
            -1020,
            refused_withdraw.into(),
        ),
    ];
    for (method, path, query, status, code, msg) in table {
        let r = signed(&mut c, &alice, method, path, &query);
        assert_eq!((r.status, r.error()), (status, (code, msg)), "{method} {path}?{query}");
    }

    // Signed endpoints: no signature, a wrong one, no key, a key without READ.
    let wallet_paths = [
        ("GET", "/sapi/v1/capital/config/getall"),
        ("GET", "/sapi/v1/asset/tradeFee"),
        ("GET", "/api/v3/account/commission"),
        ("GET", DEPOSITS),
        ("GET", WITHDRAWALS),
        ("GET", "/sapi/v1/capital/deposit/address"),
        ("POST", "/sapi/v1/capital/withdraw/apply"),
    ];
    let (_, key) = admin(
        server.admin.expect("admin API"),
        "POST",
        &format!("/admin/v1/users/{}/keys", alice.id),
        Some(json!({"scopes": ["TRADE"]})),
    );
    let trade_only = User {
        id: alice.id,
        key: key["apiKey"].as_str().expect("apiKey").to_string(),
        signer: common::account::Signer::Hmac(key["secretKey"].as_str().expect("secretKey").to_string()),
    };
    for (method, path) in wallet_paths {
        let unsigned = format!(
            "{method} {path}?symbol=BTCUSDT&timestamp={} HTTP/1.1\r\nX-MBX-APIKEY: {}\r\n\r\n",
            now_ms(),
            alice.key
        );
        c.send(&unsigned);
        let r = c.response();
        assert_eq!(
            (r.status, r.error()),
            (
                400,
                (
                    -1102,
                    "Mandatory parameter 'signature' was not sent, was empty/null, or malformed.".to_string()
                )
            ),
            "{method} {path}"
        );
        let forged = User {
            signer: common::account::Signer::Hmac("not-the-secret".into()),
            ..alice.clone()
        };
        let r = signed(&mut c, &forged, method, path, "symbol=BTCUSDT");
        assert_eq!(
            (r.status, r.error()),
            (400, (-1022, "Signature for this request is not valid.".to_string())),
            "{method} {path}"
        );
        c.send(&format!("{method} {path}?symbol=BTCUSDT HTTP/1.1\r\n\r\n"));
        let r = c.response();
        assert_eq!(
            (r.status, r.error()),
            (401, (-2014, "API-key format invalid.".to_string())),
            "{method} {path}"
        );
        let r = signed(&mut c, &trade_only, method, path, "symbol=BTCUSDT");
        assert_eq!(
            (r.status, r.error()),
            (
                401,
                (-2015, "Invalid API-key, IP, or permissions for action.".to_string())
            ),
            "{method} {path}"
        );
    }

    // Paths: another method, and wallet paths tradsys does not serve.
    let r = server.get("/sapi/v1/capital/withdraw/apply");
    assert_eq!(
        (r.status, r.error(), r.header("allow")),
        (405, (-1020, "Method not allowed; use POST.".to_string()), Some("POST"))
    );
    for path in ["/sapi/v1/margin/allPairs", "/sapi/v1/fiat/orders"] {
        let r = server.get(path);
        assert_eq!(
            (r.status, r.error()),
            (404, (-1020, format!("Unknown path {path}."))),
            "{path}"
        );
    }
}

#[test]
fn transfer_history_needs_the_history_store() {
    let server = start(1, &["--history", "off"]);
    let alice = create_user(&server, "alice", &[("USDT", "10")]);
    let mut c = server.connect();
    let msg = "This operation is not supported: deposit and withdrawal history is read from the history store, which is off on this server (history = off).";
    for path in [DEPOSITS, WITHDRAWALS] {
        let r = signed(&mut c, &alice, "GET", path, "");
        assert_eq!((r.status, r.error()), (400, (-1020, msg.to_string())), "{path}");
    }
    // The rest of the wallet does not need it.
    let coins = ok(&mut c, &alice, "GET", "/sapi/v1/capital/config/getall", "");
    assert_eq!(coins[1]["free"], "10.00000000");
}

/// The wallet endpoints count Binance's weights (withdraw history as
/// deposit history: see docs/API.md).
#[test]
fn wallet_requests_count_their_weight() {
    let server = start(1, &[]);
    let alice = create_user(&server, "alice", &[]);
    let mut c = server.connect();
    let table: &[(&str, &str, &str, u64)] = &[
        ("GET", "/sapi/v1/system/status", "", 1),
        ("GET", "/sapi/v1/capital/config/getall", "", 10),
        ("GET", "/sapi/v1/asset/tradeFee", "", 1),
        ("GET", "/api/v3/account/commission", "symbol=BTCUSDT", 20),
        ("GET", DEPOSITS, "", 1),
        ("GET", WITHDRAWALS, "", 1),
        ("GET", "/sapi/v1/capital/deposit/address", "", 10),
        ("POST", "/sapi/v1/capital/withdraw/apply", "", 900),
    ];
    let mut used = 0;
    for &(method, path, query, weight) in table {
        let r = if path == "/sapi/v1/system/status" {
            c.send(&format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n"));
            c.response()
        } else {
            signed(&mut c, &alice, method, path, query)
        };
        let now: u64 = r
            .header("x-mbx-used-weight-1m")
            .expect("the weight header")
            .parse()
            .expect("a number");
        // The minute may have turned between two requests.
        assert!(now == used + weight || now == weight, "{path}: {now} after {used}");
        used = now;
    }
}
