//! Streaming exports of a user's whole history on the admin API
//! (`GET /admin/v1/users/{id}/trades` and `.../orders`), on both engines
//! of the history store: after a scripted session and once the store has
//! every row, both formats hold exactly the rows myTrades and allOrders
//! show (header, count, values), in chunks, on a connection that serves
//! the next request afterwards; the filters select exactly their rows; bad
//! requests get JSON errors before any byte of a stream. Every PostgreSQL
//! is the test's own (`tradsys_pgtest`).

mod common;

use common::account::{create_user, signed, trade_csv, User, TRADES_HEADER};
use common::{eventually, Server, ADMIN_TOKEN};
use serde_json::{Map, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;
use tradsys_pgtest::PgServer;

const FUNDS: [(&str, &str); 3] = [("BTC", "1000"), ("USDT", "100000000"), ("ETH", "1000")];

const ORDERS_HEADER: &str = "user,symbol,order_id,client_order_id,price,orig_qty,executed_qty,\
cummulative_quote_qty,status,time_in_force,type,side,time_ms,update_time_ms";

fn start(extra: &[&str]) -> Server {
    let mut args = vec![
        "--admin-token",
        ADMIN_TOKEN,
        "--demo-user",
        "false",
        "--durability",
        "batch",
        "--orders-per-10s-max",
        "1000000",
        "--request-weight-per-minute-max",
        "100000000",
        "--raw-requests-per-5m-max",
        "100000000",
    ];
    args.extend_from_slice(extra);
    Server::start(2, &args)
}

/// One HTTP response as the admin API sent it, its body de-chunked.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
    /// Chunks the body came in; `None` for a Content-Length body.
    chunks: Option<usize>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("a JSON body")
    }

    /// The Binance error (code, msg).
    fn error(&self) -> (i64, String) {
        let v = self.json();
        (
            v["code"].as_i64().expect("code"),
            v["msg"].as_str().expect("msg").to_string(),
        )
    }

    fn lines(&self) -> Vec<&str> {
        assert!(self.body.is_empty() || self.body.ends_with('\n'), "{:?}", self.body);
        self.body.lines().collect()
    }

    fn ndjson(&self) -> Vec<Value> {
        self.lines()
            .iter()
            .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
            .collect()
    }
}

/// A keep-alive connection to the admin API that reads chunked bodies.
struct Admin {
    reader: BufReader<TcpStream>,
}

impl Admin {
    fn connect(server: &Server) -> Admin {
        let stream = TcpStream::connect(server.admin.expect("admin API on")).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
        Admin {
            reader: BufReader::new(stream),
        }
    }

    fn get(&mut self, target: &str) -> Reply {
        self.send(&format!(
            "GET {target} HTTP/1.1\r\nHost: t\r\nX-Admin-Token: {ADMIN_TOKEN}\r\n\r\n"
        ));
        self.reply()
    }

    fn send(&mut self, raw: &str) {
        self.reader.get_mut().write_all(raw.as_bytes()).expect("write");
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("a line");
        assert!(line.ends_with("\r\n"), "a CRLF line, got {line:?}");
        line.truncate(line.len() - 2);
        line
    }

    fn reply(&mut self) -> Reply {
        let status_line = self.line();
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("a status line, got {status_line:?}"));
        let mut headers = Vec::new();
        loop {
            let line = self.line();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').expect("a header");
            headers.push((name.trim().to_string(), value.trim().to_string()));
        }
        let value = |name: &str| {
            headers
                .iter()
                .find(|(n, _): &&(String, String)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        let mut body = Vec::new();
        let chunks = if value("transfer-encoding").as_deref() == Some("chunked") {
            assert_eq!(value("content-length"), None, "chunked and a length");
            let mut chunks = 0;
            loop {
                let size = usize::from_str_radix(&self.line(), 16).expect("a hex chunk size");
                if size == 0 {
                    assert_eq!(self.line(), "", "no trailers");
                    break;
                }
                let start = body.len();
                body.resize(start + size, 0);
                self.reader.read_exact(&mut body[start..]).expect("the chunk");
                assert_eq!(self.line(), "", "CRLF after the chunk");
                chunks += 1;
            }
            Some(chunks)
        } else {
            let length: usize = value("content-length").expect("a length").parse().expect("numeric");
            body.resize(length, 0);
            self.reader.read_exact(&mut body).expect("the body");
            None
        };
        Reply {
            status,
            headers,
            body: String::from_utf8(body).expect("utf-8"),
            chunks,
        }
    }
}

fn order(c: &mut common::Client, user: &User, symbol: &str, side: &str, qty: &str, price: &str) -> Value {
    let q = format!("symbol={symbol}&side={side}&type=LIMIT&timeInForce=GTC&quantity={qty}&price={price}");
    let r = signed(c, user, "POST", "/api/v3/order", &q);
    assert_eq!(r.status, 200, "{}", r.body_text());
    r.json()
}

/// The session: `trader` places five orders and cancels them, buys from
/// `other` four times in BTCUSDT (taker), rests a buy that `other` fills
/// in part, and sells to `other` three times in ETHUSDT (maker).
fn session(server: &Server, trader: &User, other: &User) {
    let mut c = server.connect();
    for i in 0..5 {
        let placed = order(&mut c, trader, "BTCUSDT", "BUY", "0.001", &format!("{}", 20_000 + i));
        let q = format!("symbol=BTCUSDT&orderId={}", placed["orderId"]);
        let r = signed(&mut c, trader, "DELETE", "/api/v3/order", &q);
        assert_eq!(r.status, 200, "{}", r.body_text());
    }
    for i in 0..4 {
        let price = format!("{}", 30_000 + i);
        order(&mut c, other, "BTCUSDT", "SELL", "0.01", &price);
        let bought = order(&mut c, trader, "BTCUSDT", "BUY", "0.01", &price);
        assert_eq!(bought["status"], "FILLED", "{bought}");
    }
    order(&mut c, trader, "BTCUSDT", "BUY", "0.02", "29000");
    let sold = order(&mut c, other, "BTCUSDT", "SELL", "0.01", "29000");
    assert_eq!(sold["status"], "FILLED", "{sold}");
    for _ in 0..3 {
        order(&mut c, trader, "ETHUSDT", "SELL", "0.5", "2000.5");
        let bought = order(&mut c, other, "ETHUSDT", "BUY", "0.5", "2000.5");
        assert_eq!(bought["status"], "FILLED", "{bought}");
    }
}

fn metric(server: &Server, name: &str) -> f64 {
    let metrics = server.metrics();
    (0..8)
        .filter_map(|shard| metrics.value(name, &[("shard", &shard.to_string())]))
        .sum()
}

/// Waits until every shard's backlog is empty: the store has every row.
fn drained(server: &Server) -> bool {
    eventually(Duration::from_secs(30), || {
        metric(server, "tradsys_history_backlog_rows") == 0.0
    })
}

/// myTrades or allOrders of `user` in `symbol` (at most 1000, oldest first).
fn listed(server: &Server, user: &User, path: &str, symbol: &str) -> Vec<Value> {
    let mut c = server.connect();
    let r = signed(&mut c, user, "GET", path, &format!("symbol={symbol}&limit=1000"));
    assert_eq!(r.status, 200, "{}", r.body_text());
    r.json().as_array().expect("an array").clone()
}

/// `row` as the export writes it: `userId` first, then the row.
fn with_user(user: u64, row: &Value) -> Value {
    let mut object = Map::new();
    object.insert("userId".into(), user.into());
    object.extend(row.as_object().expect("an object").clone());
    Value::Object(object)
}

/// An order as a CSV line, from allOrders' JSON.
fn order_csv(user: u64, o: &Value) -> String {
    let text = |k: &str| o[k].as_str().unwrap().to_string();
    format!(
        "{user},{},{},{},{},{},{},{},{},{},{},{},{},{}",
        text("symbol"),
        o["orderId"],
        text("clientOrderId"),
        text("price"),
        text("origQty"),
        text("executedQty"),
        text("cummulativeQuoteQty"),
        text("status"),
        text("timeInForce"),
        text("type"),
        text("side"),
        o["time"],
        o["updateTime"],
    )
}

/// The checks both engines pass.
fn check_exports(server: &Server) {
    let trader = create_user(server, "exporter", &FUNDS);
    let other = create_user(server, "counterparty", &FUNDS);
    session(server, &trader, &other);
    assert!(drained(server), "the store took every row");
    let id = trader.id;
    let mut trades = listed(server, &trader, "/api/v3/myTrades", "BTCUSDT");
    let eth_trades = listed(server, &trader, "/api/v3/myTrades", "ETHUSDT");
    assert_eq!((trades.len(), eth_trades.len()), (5, 3));
    trades.extend(eth_trades);
    let mut orders = listed(server, &trader, "/api/v3/allOrders", "BTCUSDT");
    let eth_orders = listed(server, &trader, "/api/v3/allOrders", "ETHUSDT");
    assert_eq!((orders.len(), eth_orders.len()), (10, 3));
    orders.extend(eth_orders);

    // NDJSON by default: myTrades' objects with userId, BTCUSDT then
    // ETHUSDT, in id order.
    let mut admin = Admin::connect(server);
    let r = admin.get(&format!("/admin/v1/users/{id}/trades"));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("Content-Type"), Some("application/x-ndjson"));
    assert_eq!(r.header("Transfer-Encoding"), Some("chunked"));
    assert_eq!(
        r.header("Content-Disposition"),
        Some(format!("attachment; filename=\"user-{id}-trades.ndjson\"").as_str())
    );
    assert!(r.chunks.is_some_and(|n| n >= 1), "a chunked body");
    let expected: Vec<Value> = trades.iter().map(|t| with_user(id, t)).collect();
    assert_eq!(r.ndjson(), expected);
    // Known values, written out: the first buy (taker, fee in BTC) and
    // the first ETH sale (maker, fee in USDT).
    let first = &r.ndjson()[0];
    assert_eq!(
        (&first["symbol"], &first["price"], &first["qty"], &first["quoteQty"]),
        (
            &"BTCUSDT".into(),
            &"30000.00000000".into(),
            &"0.01000000".into(),
            &"300.00000000".into()
        )
    );
    assert_eq!(
        (
            &first["commission"],
            &first["commissionAsset"],
            &first["isBuyer"],
            &first["isMaker"]
        ),
        (&"0.00001000".into(), &"BTC".into(), &true.into(), &false.into())
    );
    let eth = &r.ndjson()[5];
    assert_eq!(
        (
            &eth["symbol"],
            &eth["price"],
            &eth["qty"],
            &eth["quoteQty"],
            &eth["commission"]
        ),
        (
            &"ETHUSDT".into(),
            &"2000.50000000".into(),
            &"0.50000000".into(),
            &"1000.25000000".into(),
            &"1.00025000".into()
        )
    );
    assert_eq!((&eth["isBuyer"], &eth["isMaker"]), (&false.into(), &true.into()));

    // The same connection serves the next request: CSV of the trades.
    let r = admin.get(&format!("/admin/v1/users/{id}/trades?format=csv"));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("Content-Type"), Some("text/csv; charset=utf-8"));
    assert!(r.chunks.is_some());
    let lines = r.lines();
    assert_eq!(lines.len(), 1 + 8);
    assert_eq!(lines[0], TRADES_HEADER);
    let expected: Vec<String> = trades.iter().map(|t| trade_csv(id, t)).collect();
    assert_eq!(lines[1..], expected);
    assert_eq!(
        lines[1],
        format!(
            "{id},BTCUSDT,{},{},30000.00000000,0.01000000,300.00000000,0.00001000,BTC,true,false,{}",
            trades[0]["id"], trades[0]["orderId"], trades[0]["time"]
        )
    );

    // Orders, both formats: allOrders' objects, then its CSV columns.
    let r = admin.get(&format!("/admin/v1/users/{id}/orders?format=ndjson"));
    assert_eq!(r.status, 200, "{}", r.body);
    let expected: Vec<Value> = orders.iter().map(|o| with_user(id, o)).collect();
    assert_eq!(r.ndjson(), expected);
    let statuses: Vec<String> = r
        .ndjson()
        .iter()
        .map(|o| o["status"].as_str().unwrap().to_string())
        .collect();
    let expected = [
        ["CANCELED"; 5].as_slice(),
        &["FILLED"; 4],
        &["PARTIALLY_FILLED"],
        &["FILLED"; 3],
    ]
    .concat();
    assert_eq!(statuses, expected);
    let r = admin.get(&format!("/admin/v1/users/{id}/orders?format=csv"));
    assert_eq!(r.status, 200, "{}", r.body);
    let lines = r.lines();
    assert_eq!(lines[0], ORDERS_HEADER);
    let expected: Vec<String> = orders.iter().map(|o| order_csv(id, o)).collect();
    assert_eq!(lines[1..], expected);
    let open = orders
        .iter()
        .find(|o| o["status"] == "PARTIALLY_FILLED")
        .expect("the open order");
    assert_eq!(
        lines[10],
        format!(
            "{id},BTCUSDT,{},{},29000.00000000,0.02000000,0.01000000,290.00000000,PARTIALLY_FILLED,GTC,LIMIT,BUY,{},{}",
            open["orderId"],
            open["clientOrderId"].as_str().unwrap(),
            open["time"],
            open["updateTime"]
        )
    );

    // Filters: one market; a time window, inclusive at both ends.
    let r = admin.get(&format!("/admin/v1/users/{id}/trades?symbol=ETHUSDT&format=csv"));
    let expected: Vec<String> = trades[5..].iter().map(|t| trade_csv(id, t)).collect();
    assert_eq!(r.lines()[1..], expected);
    let (start, end) = (trades[1]["time"].as_u64().unwrap(), trades[3]["time"].as_u64().unwrap());
    let r = admin.get(&format!("/admin/v1/users/{id}/trades?startTime={start}&endTime={end}"));
    let in_window: Vec<Value> = trades
        .iter()
        .filter(|t| (start..=end).contains(&t["time"].as_u64().unwrap()))
        .map(|t| with_user(id, t))
        .collect();
    assert!(in_window.len() >= 3, "at least the 2nd to the 4th trade");
    assert_eq!(r.ndjson(), in_window);
    let r = admin.get(&format!(
        "/admin/v1/users/{id}/orders?symbol=BTCUSDT&endTime={}",
        orders[0]["time"]
    ));
    let up_to_first: Vec<Value> = orders[..10]
        .iter()
        .filter(|o| o["time"].as_u64() <= orders[0]["time"].as_u64())
        .map(|o| with_user(id, o))
        .collect();
    assert_eq!(r.ndjson(), up_to_first);
    let r = admin.get(&format!("/admin/v1/users/{id}/trades?startTime={}", u64::MAX));
    assert_eq!((r.status, r.body.as_str(), r.chunks), (200, "", Some(0)));
    let r = admin.get(&format!(
        "/admin/v1/users/{id}/orders?format=csv&startTime={}",
        u64::MAX
    ));
    assert_eq!(
        (r.body.as_str(), r.chunks),
        (format!("{ORDERS_HEADER}\n").as_str(), Some(1))
    );

    // Another user's export holds only that user's rows.
    let r = admin.get(&format!("/admin/v1/users/{}/trades", other.id));
    let rows = r.ndjson();
    assert_eq!(rows.len(), 8);
    assert!(rows.iter().all(|t| t["userId"] == other.id));

    // Errors come before any stream, as JSON, and the connection goes on.
    let bad = [
        ("/admin/v1/users/abc/trades", 400, -1102),
        (&format!("/admin/v1/users/{id}/trades?format=xml"), 400, -1102),
        (&format!("/admin/v1/users/{id}/orders?symbol=NOPE"), 400, -1121),
        (&format!("/admin/v1/users/{id}/orders?startTime=x"), 400, -1100),
        (
            &format!("/admin/v1/users/{id}/orders?startTime=2&endTime=1"),
            400,
            -1102,
        ),
        ("/admin/v1/users/999999999/trades", 404, -1020),
        (&format!("/admin/v1/users/{id}/ledger"), 404, -1020),
    ];
    for (target, status, code) in bad {
        let r = admin.get(target);
        assert_eq!((r.status, r.error().0), (status, code), "{target}: {}", r.body);
        assert_eq!(r.chunks, None, "{target}");
    }
    admin.send(&format!("GET /admin/v1/users/{id}/trades HTTP/1.1\r\nHost: t\r\n\r\n"));
    let r = admin.reply();
    assert_eq!((r.status, r.error().0), (401, -1002));
    // Still the same connection, after every error: a last export.
    let r = admin.get(&format!("/admin/v1/users/{id}/trades?symbol=BTCUSDT"));
    assert_eq!(r.ndjson().len(), 5);

    // Counted: calls under kind="export", rows, none running now.
    let metrics = server.metrics();
    let calls: f64 = (0..2)
        .filter_map(|shard| {
            metrics.value(
                "tradsys_history_query_duration_seconds_count",
                &[("shard", &shard.to_string()), ("kind", "export")],
            )
        })
        .sum();
    assert_eq!(calls, 2.0 * 11.0, "an open and one page for each of the 11 exports");
    let rows = 8 + 8 + 13 + 13 + 3 + in_window.len() + up_to_first.len() + 8 + 5;
    assert_eq!(metric(server, "tradsys_history_export_rows_total"), rows as f64);
    assert_eq!(metric(server, "tradsys_history_exports_active"), 0.0);
}

#[test]
fn sqlite_exports_every_row_in_both_formats() {
    let server = start(&[]);
    check_exports(&server);
}

#[test]
fn postgres_exports_every_row_in_both_formats() {
    let pg = PgServer::start();
    let url = pg.url();
    let server = start(&["--postgres", &url]);
    check_exports(&server);
}

/// More rows than one page: every row once, in several chunks, pipelined
/// with a request after it on the same connection.
fn check_many_pages(server: &Server) {
    let trader = create_user(server, "many", &FUNDS);
    let mut c = server.connect();
    let mut placed = Vec::new();
    for i in 0..2100 {
        let placed_order = order(
            &mut c,
            &trader,
            "BTCUSDT",
            "BUY",
            "0.001",
            &format!("{}", 20_000 + i % 50),
        );
        let id = placed_order["orderId"].as_u64().unwrap();
        let r = signed(
            &mut c,
            &trader,
            "DELETE",
            "/api/v3/order",
            &format!("symbol=BTCUSDT&orderId={id}"),
        );
        assert_eq!(r.status, 200, "{}", r.body_text());
        placed.push(id);
    }
    assert!(drained(server));
    let mut admin = Admin::connect(server);
    admin.send(&format!(
        "GET /admin/v1/users/{}/orders?format=csv HTTP/1.1\r\nX-Admin-Token: {ADMIN_TOKEN}\r\n\r\n\
         GET /admin/v1/users/{} HTTP/1.1\r\nX-Admin-Token: {ADMIN_TOKEN}\r\n\r\n",
        trader.id, trader.id
    ));
    let r = admin.reply();
    assert_eq!(r.status, 200);
    assert!(r.chunks.is_some_and(|n| n >= 3), "a chunk per page: {:?}", r.chunks);
    let ids: Vec<u64> = r.lines()[1..]
        .iter()
        .map(|l| l.split(',').nth(2).unwrap().parse().unwrap())
        .collect();
    assert_eq!(ids, placed);
    let next = admin.reply();
    assert_eq!(next.status, 200, "{}", next.body);
    assert_eq!(next.json()["userId"], trader.id);
}

#[test]
fn sqlite_exports_span_pages() {
    let server = start(&[]);
    check_many_pages(&server);
}

#[test]
fn postgres_exports_span_pages() {
    let pg = PgServer::start();
    let url = pg.url();
    let server = start(&["--postgres", &url]);
    check_many_pages(&server);
}

#[test]
fn without_a_store_an_export_is_refused() {
    let server = start(&["--history", "off"]);
    let trader = create_user(&server, "nostore", &FUNDS);
    let mut admin = Admin::connect(&server);
    let r = admin.get(&format!("/admin/v1/users/{}/trades", trader.id));
    assert_eq!((r.status, r.error().0), (404, -1020));
    assert!(r.error().1.contains("history store"), "{}", r.body);
}
