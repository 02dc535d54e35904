//! The HTTP server end to end: the real binary on a loopback port.

mod common;

use common::{eventually, Server};
use std::time::Duration;

const PING: &str = "GET /api/v3/ping HTTP/1.1\r\nHost: t\r\n\r\n";

#[test]
fn keep_alive_serves_many_requests_on_one_connection() {
    let server = Server::start(1, &[]);
    let mut c = server.connect();
    for _ in 0..5 {
        c.send(PING);
        let r = c.response();
        assert_eq!((r.status, r.body_text().as_str()), (200, "{}"));
        assert_eq!(r.header("connection"), None);
    }
    c.send("GET /api/v3/ping HTTP/1.1\r\nConnection: close\r\n\r\n");
    let r = c.response();
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.closed());
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let server = Server::start(1, &[]);
    let mut c = server.connect();
    let mut batch = String::new();
    for i in 0..100 {
        if i % 2 == 0 {
            batch.push_str(PING);
        } else {
            batch.push_str(&format!("GET /missing/{i} HTTP/1.1\r\nHost: t\r\n\r\n"));
        }
    }
    c.send(&batch);
    for i in 0..100 {
        let r = c.response();
        if i % 2 == 0 {
            assert_eq!((r.status, r.body_text()), (200, "{}".to_string()), "response {i}");
        } else {
            assert_eq!(r.status, 404, "response {i}");
            assert_eq!(r.error(), (-1020, format!("Unknown path /missing/{i}.")));
        }
    }
}

const EXCHANGE_INFO: &str = "/api/v3/exchangeInfo";
const TICKER_ALL: &str = "/api/v3/ticker/24hr";
const TICKER_ONE: &str = "/api/v3/ticker/24hr?symbol=BTCUSDT";
const PING_TARGET: &str = "/api/v3/ping";

/// A GET request, asking for gzip when `gzip`.
fn get_request(target: &str, gzip: bool) -> String {
    let accept = if gzip { "Accept-Encoding: gzip\r\n" } else { "" };
    format!("GET {target} HTTP/1.1\r\nHost: t\r\n{accept}\r\n")
}

/// A response's body as it would be without a content coding, with the
/// digits of the fields that follow the clock (`serverTime`, `openTime`,
/// `closeTime`) zeroed: the only parts that change between two requests.
fn comparable_body(r: &common::Response, gzip: bool) -> String {
    let body = match r.header("content-encoding") {
        // The shard's compression budget may send a body as it is even
        // when gzip was asked for; it never gzips one that was not.
        Some("gzip") if gzip => {
            let mut out = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&r.body[..]), &mut out).expect("a gzip body");
            out
        }
        None => r.body.clone(),
        Some(other) => panic!("unexpected content coding {other} (gzip asked: {gzip})"),
    };
    let mut text = String::from_utf8(body).expect("utf-8 body");
    for key in ["\"serverTime\":", "\"openTime\":", "\"closeTime\":"] {
        let mut from = 0;
        while let Some(at) = text[from..].find(key) {
            let start = from + at + key.len();
            let digits = text[start..]
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(text.len() - start);
            text.replace_range(start..start + digits, &"0".repeat(digits));
            from = start + digits;
        }
    }
    text
}

/// Which target the i-th request of a batch asks for.
type TargetOf = fn(usize) -> &'static str;
/// Whether the i-th request of a batch asks for gzip.
type GzipOf = fn(usize) -> bool;

#[test]
fn pipelined_requests_with_large_responses_are_all_answered_in_order() {
    // Thousands of requests from one IP: far more weight than the default.
    let server = Server::start(1, &["--request-weight-per-minute-max", "100000000"]);
    let targets = [EXCHANGE_INFO, TICKER_ALL, TICKER_ONE, PING_TARGET];
    // What each request gets when sent alone.
    let mut alone = std::collections::HashMap::new();
    for target in targets {
        for gzip in [false, true] {
            let mut c = server.connect();
            c.send(&get_request(target, gzip));
            let r = c.response();
            assert_eq!(r.status, 200, "{target} alone: {}", String::from_utf8_lossy(&r.body));
            alone.insert((target, gzip), comparable_body(&r, gzip));
        }
    }
    let patterns: [(&str, TargetOf); 5] = [
        ("exchangeInfo", |_| EXCHANGE_INFO),
        ("ticker/24hr", |_| TICKER_ALL),
        ("ticker/24hr?symbol", |_| TICKER_ONE),
        ("exchangeInfo and ping", |i| [EXCHANGE_INFO, PING_TARGET][i % 2]),
        ("all four", |i| {
            [EXCHANGE_INFO, TICKER_ALL, TICKER_ONE, PING_TARGET][i % 4]
        }),
    ];
    let gzips: [(&str, GzipOf); 3] = [
        ("identity", |_| false),
        ("gzip", |_| true),
        ("alternating", |i| i % 2 == 1),
    ];
    // Batch sizes around where the answers to one batch fill a write
    // (64 KiB: 14 exchangeInfo, 34 ticker/24hr), up to 64 requests.
    let sizes = [2, 13, 14, 15, 20, 33, 34, 35, 50, 64];
    for (pattern, target_of) in patterns {
        for (coding, gzip_of) in gzips {
            // One connection for all the batches of a variant: the first
            // batch is read into a fresh buffer, the later ones into the
            // buffer the connection kept.
            let mut c = server.connect();
            for n in sizes {
                let batch: String = (0..n).map(|i| get_request(target_of(i), gzip_of(i))).collect();
                c.send(&batch);
                for i in 0..n {
                    let (target, gzip) = (target_of(i), gzip_of(i));
                    let what = format!("{pattern}, {coding}, batch of {n}: response {i} ({target})");
                    let r = c
                        .try_response()
                        .unwrap_or_else(|| panic!("{what}: the connection closed"));
                    assert_eq!(r.status, 200, "{what}: {}", String::from_utf8_lossy(&r.body));
                    assert_eq!(r.header("connection"), None, "{what}");
                    assert_eq!(comparable_body(&r, gzip), alone[&(target, gzip)], "{what}");
                }
            }
            // Still open, and still in step.
            c.send(PING);
            let r = c.response();
            assert_eq!(
                (r.status, r.body_text().as_str()),
                (200, "{}"),
                "{pattern}, {coding}: a ping after"
            );
        }
    }
}

fn exchange_info_symbols(r: &common::Response) -> Vec<String> {
    assert_eq!(r.status, 200, "{}", r.body_text());
    r.json()["symbols"]
        .as_array()
        .expect("symbols")
        .iter()
        .map(|s| s["symbol"].as_str().expect("symbol").to_string())
        .collect()
}

#[test]
fn parameters_come_from_query_body_or_both_and_the_query_wins() {
    let server = Server::start(1, &[]);
    let mut c = server.connect();
    let form = "Content-Type: application/x-www-form-urlencoded";
    let cases = [
        ("/api/v3/exchangeInfo?symbol=ETHBTC", "", vec!["ETHBTC"]),
        ("/api/v3/exchangeInfo", "symbol=EURUSD", vec!["EURUSD"]),
        ("/api/v3/exchangeInfo?symbol=ETHBTC", "symbol=EURUSD", vec!["ETHBTC"]),
        (
            "/api/v3/exchangeInfo",
            "symbols=%5B%22BTCUSDT%22%2C%22ETHUSDT%22%5D",
            vec!["BTCUSDT", "ETHUSDT"],
        ),
    ];
    for (target, body, expected) in cases {
        c.send(&format!(
            "GET {target} HTTP/1.1\r\n{form}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ));
        assert_eq!(exchange_info_symbols(&c.response()), expected, "{target} {body}");
    }
}

#[test]
fn exchange_info_has_the_fields_binance_clients_read() {
    let server = Server::start(1, &[]);
    let r = server.get("/api/v3/exchangeInfo");
    let v = r.json();
    assert_eq!(v["timezone"], "UTC");
    assert!(v["serverTime"].is_u64());
    assert!(v["rateLimits"].is_array() && v["exchangeFilters"].is_array());
    assert_eq!(exchange_info_symbols(&r), ["BTCUSDT", "ETHUSDT", "ETHBTC", "EURUSD"]);
    let s = &v["symbols"][0];
    let strings = [
        "symbol",
        "status",
        "baseAsset",
        "quoteAsset",
        "defaultSelfTradePreventionMode",
    ];
    let integers = ["baseAssetPrecision", "quotePrecision", "quoteAssetPrecision"];
    let booleans = [
        "icebergAllowed",
        "ocoAllowed",
        "quoteOrderQtyMarketAllowed",
        "isSpotTradingAllowed",
        "isMarginTradingAllowed",
    ];
    let arrays = [
        "orderTypes",
        "permissions",
        "permissionSets",
        "allowedSelfTradePreventionModes",
        "filters",
    ];
    strings.iter().for_each(|f| assert!(s[f].is_string(), "{f}"));
    integers.iter().for_each(|f| assert!(s[f].is_u64(), "{f}"));
    booleans.iter().for_each(|f| assert!(s[f].is_boolean(), "{f}"));
    arrays.iter().for_each(|f| assert!(s[f].is_array(), "{f}"));
    assert_eq!(s["status"], "TRADING");
    assert_eq!(s["baseAsset"], "BTC");
    assert_eq!(s["permissionSets"], serde_json::json!([["SPOT"]]));
    let filters = &s["filters"];
    assert_eq!(
        filters[0],
        serde_json::json!({"filterType":"PRICE_FILTER","minPrice":"0.01000000","maxPrice":"1000000.00000000","tickSize":"0.01000000"})
    );
    assert_eq!(
        filters[1],
        serde_json::json!({"filterType":"LOT_SIZE","minQty":"0.00001000","maxQty":"9000.00000000","stepSize":"0.00001000"})
    );
    assert_eq!(filters[2], serde_json::json!({"filterType":"ICEBERG_PARTS","limit":10}));
    assert_eq!(
        filters[3],
        serde_json::json!({"filterType":"TRAILING_DELTA","minTrailingAboveDelta":10,"maxTrailingAboveDelta":2000,
            "minTrailingBelowDelta":10,"maxTrailingBelowDelta":2000})
    );
    assert_eq!(filters[4]["filterType"], "NOTIONAL");
    assert_eq!(filters[4]["minNotional"], "5.00000000");
    // What tradsys enforces, advertised as Binance names it.
    assert_eq!(
        filters[5],
        serde_json::json!({"filterType":"MAX_NUM_ORDERS","maxNumOrders":200})
    );
    assert_eq!(
        filters[6],
        serde_json::json!({"filterType":"MAX_NUM_ALGO_ORDERS","maxNumAlgoOrders":100})
    );
    assert_eq!(
        filters[7],
        serde_json::json!({"filterType":"MAX_NUM_ICEBERG_ORDERS","maxNumIcebergOrders":100})
    );
    assert_eq!(
        filters[8],
        serde_json::json!({"filterType":"MAX_NUM_ORDER_AMENDS","maxNumOrderAmends":10})
    );
    assert_eq!(
        filters[9],
        serde_json::json!({"filterType":"MAX_NUM_ORDER_LISTS","maxNumOrderLists":100})
    );
    assert_eq!(s["pegInstructionsAllowed"], false);
    for f in [
        "ocoAllowed",
        "otoAllowed",
        "cancelReplaceAllowed",
        "amendAllowed",
        "quoteOrderQtyMarketAllowed",
        "icebergAllowed",
        "allowTrailingStop",
    ] {
        assert_eq!(s[f], true, "{f}");
    }
    let unknown = server.get("/api/v3/exchangeInfo?symbol=NOPE");
    assert_eq!(
        (unknown.status, unknown.error()),
        (400, (-1121, "Invalid symbol.".to_string()))
    );
}

#[test]
fn simple_endpoints() {
    let server = Server::start(1, &[]);
    let cases = [
        ("/health", 200, r#"{"status":"ok"}"#),
        ("/ready", 200, r#"{"status":"ready"}"#),
        ("/api/v3/ping", 200, "{}"),
    ];
    for (target, status, body) in cases {
        let r = server.get(target);
        assert_eq!((r.status, r.body_text().as_str()), (status, body), "{target}");
        assert_eq!(r.header("content-type"), Some("application/json;charset=UTF-8"));
    }
    let time = server.get("/api/v3/time").json();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let server_time = time["serverTime"].as_u64().expect("serverTime");
    assert!(server_time.abs_diff(now) < 60_000, "{server_time} vs {now}");
    let mut c = server.connect();
    c.send("DELETE /api/v3/ping HTTP/1.1\r\n\r\n");
    let r = c.response();
    assert_eq!((r.status, r.header("allow")), (405, Some("GET")));
    assert_eq!(r.error().0, -1020);
}

/// Sends `raw` and expects an error response with `status`, then a close.
fn expect_error_and_close(server: &Server, raw: &[u8], status: u16) {
    let mut c = server.connect();
    c.send_bytes(raw);
    let r = c.response();
    assert_eq!(r.status, status, "{}", r.body_text());
    assert!(r.error().0 < 0);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.closed());
}

#[test]
fn size_limits_and_framing_errors() {
    let server = Server::start(1, &[]);
    let big_head = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(8200));
    expect_error_and_close(&server, big_head.as_bytes(), 431);
    expect_error_and_close(
        &server,
        b"POST /api/v3/ping HTTP/1.1\r\nContent-Length: 65537\r\n\r\n",
        413,
    );
    expect_error_and_close(
        &server,
        b"POST /api/v3/ping HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
        411,
    );
    expect_error_and_close(&server, b"GET /api/v3/ping HTTP/1.1\r\nBroken\r\n\r\n", 400);
    // A body of exactly the limit is accepted.
    let body = "a".repeat(65536);
    let mut c = server.connect();
    c.send(&format!(
        "GET /api/v3/ping HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ));
    assert_eq!(c.response().status, 200);
}

#[test]
fn header_timeout_answers_408_and_idle_timeout_closes() {
    let server = Server::start(1, &["--http-header-timeout-ms", "300", "--http-idle-timeout-ms", "400"]);
    let mut slow = server.connect();
    slow.send("GET /api/v3/ping HTTP/1.1\r\nHost:");
    let r = slow.response();
    assert_eq!((r.status, r.error().0), (408, -1007));
    assert!(slow.closed());
    let mut idle = server.connect();
    idle.send(PING);
    assert_eq!(idle.response().status, 200);
    assert!(
        idle.closed(),
        "an idle keep-alive connection is closed after the idle timeout"
    );
}

#[test]
fn connections_over_the_shard_limit_are_closed_and_counted() {
    let server = Server::start(1, &["--connections-per-shard-max", "2"]);
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut c = server.connect();
        c.send(PING);
        assert_eq!(c.response().status, 200);
        held.push(c);
    }
    let mut refused = server.connect();
    refused.send(PING);
    assert!(
        refused.try_response().is_none(),
        "the third connection is closed at once"
    );
    drop(held.pop());
    // Until the server sees that close, a /metrics connection is refused
    // too, and counted as such.
    let mut refused_metrics = 0.0;
    let mut refused_total = None;
    let m = eventually(Duration::from_secs(10), || match server.try_metrics() {
        Some(m) => {
            refused_total = m.value("tradsys_connections_refused_total", &[("shard", "0")]);
            true
        }
        None => {
            refused_metrics += 1.0;
            false
        }
    });
    assert_eq!(refused_total, Some(1.0 + refused_metrics));
    assert!(m, "/metrics answers once a slot is free");
}

#[test]
fn metrics_are_strict_prometheus_text_and_grow() {
    let server = Server::start(1, &[]);
    let pings = |m: &common::prom::Exposition| {
        m.value(
            "tradsys_http_requests_total",
            &[("shard", "0"), ("route", "GET /api/v3/ping"), ("status", "200")],
        )
        .unwrap_or(0.0)
    };
    let count = |m: &common::prom::Exposition| {
        m.value(
            "tradsys_http_request_duration_seconds_count",
            &[("shard", "0"), ("route", "GET /api/v3/ping")],
        )
        .unwrap_or(0.0)
    };
    let before = server.metrics();
    let mut c = server.connect();
    for _ in 0..3 {
        c.send(PING);
        assert_eq!(c.response().status, 200);
    }
    let after = server.metrics();
    assert_eq!(pings(&after) - pings(&before), 3.0);
    assert_eq!(count(&after) - count(&before), 3.0);
    assert_eq!(after.types["tradsys_http_request_duration_seconds"], "histogram");
    let received = after
        .value("tradsys_http_bytes_received_total", &[("shard", "0")])
        .unwrap();
    assert!(received >= (3 * PING.len()) as f64);
    assert!(after.value("tradsys_connections_open", &[("shard", "0")]).unwrap() >= 1.0);
}

#[test]
fn two_shards_share_the_connections_and_the_metrics() {
    let server = Server::start(2, &[]);
    let mut clients: Vec<_> = (0..64).map(|_| server.connect()).collect();
    for c in &mut clients {
        c.send(PING);
        assert_eq!(c.response().status, 200);
    }
    let m = server.metrics();
    for shard in ["0", "1"] {
        let accepted = m
            .value("tradsys_connections_accepted_total", &[("shard", shard)])
            .unwrap();
        assert!(accepted > 0.0, "shard {shard} accepted no connection");
        assert!(m
            .value("tradsys_mesh_messages_sent_total", &[("shard", shard)])
            .is_some());
    }
    let total: f64 = ["0", "1"]
        .iter()
        .map(|s| m.value("tradsys_connections_accepted_total", &[("shard", s)]).unwrap())
        .sum();
    assert_eq!(total, 65.0, "64 clients and the metrics request");
}

#[test]
fn sigterm_drains_in_flight_requests_and_exits_zero() {
    let mut server = Server::start(1, &[]);
    let mut idle = server.connect();
    idle.send(PING);
    assert_eq!(idle.response().status, 200);
    let mut in_flight = server.connect();
    in_flight.send(PING);
    assert_eq!(in_flight.response().status, 200);
    let partial = "GET /ready HTTP/1.1\r\nHost: t\r\n";
    in_flight.send(partial);
    let received = |s: &Server| {
        s.metrics()
            .value("tradsys_http_bytes_received_total", &[("shard", "0")])
    };
    let base = received(&server).unwrap();
    // Wait until the server has read the partial request, so it is in flight.
    let expected = base + 2.0 * PING.len() as f64 + partial.len() as f64;
    assert!(eventually(Duration::from_secs(10), || {
        let now = received(&server).unwrap();
        now >= expected
    }));
    common::signal(&server.child, "TERM");
    assert!(idle.closed(), "idle connections are closed by the drain");
    in_flight.send("\r\n");
    let r = in_flight.response();
    assert_eq!(
        (r.status, r.error()),
        (503, (-1016, "Service shutting down.".to_string()))
    );
    assert_eq!(r.header("connection"), Some("close"));
    let status = common::wait_exit(&mut server.child, Duration::from_secs(15)).expect("exits");
    assert_eq!(status.code(), Some(0));
}

#[test]
fn invalid_configuration_exits_2_naming_the_key() {
    let cases: [(&[&str], &str); 3] = [
        (
            &["--shards", "0"],
            "tradsys: invalid configuration: shards: must be between 1 and",
        ),
        (
            &["--listen", "x"],
            "tradsys: invalid configuration: listen: must be IP:PORT",
        ),
        (
            &["--markets", "/nonexistent.toml"],
            "tradsys: invalid configuration: markets: /nonexistent.toml",
        ),
    ];
    for (args, expected) in cases {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tradsys"))
            .args(args)
            .output()
            .expect("runs");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.starts_with(expected), "{stderr}");
    }
}

/// A client that keeps sending requests but never reads is closed about
/// `http_write_timeout_ms` after it stopped taking bytes, and counted.
/// Regression test: the kernel's send buffer grew (to megabytes) while
/// such a client kept asking, every response a successful write, and the
/// connection was closed only after about twice the timeout or later
/// (with `--http-socket-send-bytes 0`, the old autotuning, this test sees
/// no close within 3 s).
#[test]
fn a_client_that_never_reads_is_closed_after_the_write_timeout() {
    use std::io::{ErrorKind, Write};
    let server = Server::start(1, &["--http-write-timeout-ms", "1000"]);
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("a socket");
    socket.set_recv_buffer_size(4096).expect("a small receive buffer");
    socket.connect(&server.addr.into()).expect("connects");
    socket.set_nonblocking(true).expect("non-blocking");
    let mut stream: std::net::TcpStream = socket.into();
    let requests = b"GET /api/v3/exchangeInfo HTTP/1.1\r\nHost: t\r\n\r\n".repeat(20);
    let started = std::time::Instant::now();
    let closed_after = loop {
        assert!(started.elapsed() < Duration::from_secs(20), "never closed");
        match stream.write(&requests) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe) => {
                break started.elapsed()
            }
            Err(e) => panic!("{e}"),
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // The buffers fill within a few responses, then 1 s without progress.
    assert!(closed_after >= Duration::from_millis(1000), "{closed_after:?}");
    assert!(closed_after < Duration::from_millis(3000), "{closed_after:?}");
    let metrics = server.metrics();
    assert_eq!(
        metrics.value("tradsys_http_write_timeouts_total", &[("shard", "0")]),
        Some(1.0)
    );
}

/// 200 slowloris connections (a byte of a request head every 250 ms) are
/// each answered 408 and closed at the header timeout, and counted, while
/// a well-behaved client is answered throughout.
#[test]
fn slowloris_connections_are_closed_at_the_header_timeout_and_counted() {
    use std::io::{ErrorKind, Read, Write};
    const SLOW: usize = 200;
    let server = Server::start(1, &["--http-header-timeout-ms", "1000"]);
    let started = std::time::Instant::now();
    let mut conns: Vec<std::net::TcpStream> = (0..SLOW)
        .map(|_| {
            let c = std::net::TcpStream::connect(server.addr).expect("connects");
            c.set_nonblocking(true).expect("non-blocking");
            c
        })
        .collect();
    // A head that never ends.
    let head = b"GET /api/v3/time HTTP/1.1\r\nHost: t\r\nX-Slow: ";
    let mut sent = [0usize; SLOW];
    let mut answers: Vec<Option<(Duration, Vec<u8>)>> = vec![None; SLOW];
    while answers.iter().any(Option::is_none) {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "slow connections still open"
        );
        for (i, c) in conns.iter_mut().enumerate() {
            if answers[i].is_some() {
                continue;
            }
            if sent[i] < head.len() && c.write(&head[sent[i]..sent[i] + 1]).is_ok() {
                sent[i] += 1;
            }
            let mut buf = [0u8; 1024];
            match c.read(&mut buf) {
                Ok(n) => answers[i] = Some((started.elapsed(), buf[..n].to_vec())),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => panic!("slow connection {i}: {e}"),
            }
        }
        // The well-behaved client meanwhile.
        assert_eq!(server.get("/api/v3/time").status, 200);
        std::thread::sleep(Duration::from_millis(250));
    }
    for (i, answer) in answers.iter().enumerate() {
        let (at, bytes) = answer.as_ref().expect("answered");
        assert!(
            bytes.starts_with(b"HTTP/1.1 408 "),
            "connection {i}: {}",
            String::from_utf8_lossy(bytes)
        );
        assert!(
            *at >= Duration::from_millis(1000) && *at < Duration::from_millis(3000),
            "connection {i} at {at:?}"
        );
    }
    let metrics = server.metrics();
    assert_eq!(
        metrics.value("tradsys_http_header_timeouts_total", &[("shard", "0")]),
        Some(SLOW as f64)
    );
}
