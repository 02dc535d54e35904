//! Response compression end to end, on the real binary: gzip only when the
//! request asks for it and the body is at least `http_compress_bytes_min`,
//! the exact identity body once decoded, HEAD's headers, pipelined
//! requests with different encodings, the CPU budget, and the counters in
//! /metrics.

mod common;

use common::account::{create_user, signed};
use common::{prom, Client, Response, Server, ADMIN_TOKEN};
use std::io::Read;

const EXCHANGE_INFO: &str = "/api/v3/exchangeInfo";
/// The budget of the test that spends it: an 8,000-byte bucket refilled at
/// 80 bytes a millisecond (exchangeInfo is about 5,300 bytes).
const SMALL_BUDGET_BYTES_PER_SECOND: &str = "80000";
const SMALL_BUDGET_BURST_BYTES: usize = 8000;

fn gunzip(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(body)
        .read_to_end(&mut out)
        .expect("a gzip body");
    out
}

/// A GET (or HEAD) request, with an `Accept-Encoding` line when given.
fn request(method: &str, target: &str, accept: Option<&str>) -> String {
    let accept = accept.map(|a| format!("Accept-Encoding: {a}\r\n")).unwrap_or_default();
    format!("{method} {target} HTTP/1.1\r\nHost: t\r\n{accept}\r\n")
}

fn get(c: &mut Client, target: &str, accept: Option<&str>) -> Response {
    c.send(&request("GET", target, accept));
    c.response()
}

/// exchangeInfo's body with the digits of its `serverTime` zeroed: the one
/// part that changes from one request to the next.
fn without_server_time(body: &[u8]) -> Vec<u8> {
    let text = String::from_utf8(body.to_vec()).expect("utf-8");
    let key = "\"serverTime\":";
    let start = text.find(key).expect("serverTime") + key.len();
    let digits = text[start..].find(|c: char| !c.is_ascii_digit()).expect("digits end");
    format!("{}{}{}", &text[..start], "0".repeat(digits), &text[start + digits..]).into_bytes()
}

/// How a response went: its Content-Encoding and Vary headers.
type Coding<'a> = (Option<&'a str>, Option<&'a str>);

fn coding(r: &Response) -> Coding<'_> {
    (r.header("content-encoding"), r.header("vary"))
}

const GZIPPED: Coding = (Some("gzip"), Some("Accept-Encoding"));
const AS_IS_VARYING: Coding = (None, Some("Accept-Encoding"));
const AS_IS: Coding = (None, None);

/// The body a response would have had without a content coding.
fn decoded(r: &Response) -> Vec<u8> {
    match r.header("content-encoding") {
        Some("gzip") => gunzip(&r.body),
        None => r.body.clone(),
        Some(other) => panic!("unexpected coding {other}"),
    }
}

/// The compression counters of shard 0: responses, input bytes, output
/// bytes, over budget.
fn counters(m: &prom::Exposition) -> [f64; 4] {
    [
        "tradsys_http_compressed_responses_total",
        "tradsys_http_compression_input_bytes_total",
        "tradsys_http_compression_output_bytes_total",
        "tradsys_http_compression_over_budget_total",
    ]
    .map(|name| {
        assert_eq!(m.types[name], "counter", "{name}");
        m.value(name, &[("shard", "0")]).expect(name)
    })
}

fn delta(before: [f64; 4], after: [f64; 4]) -> [f64; 4] {
    [0, 1, 2, 3].map(|i| after[i] - before[i])
}

#[test]
fn exchange_info_gzipped_decodes_to_the_identity_body() {
    let server = Server::start(1, &[]);
    let mut c = server.connect();
    let plain = get(&mut c, EXCHANGE_INFO, None);
    assert_eq!((plain.status, coding(&plain)), (200, AS_IS_VARYING));
    assert!(plain.body.len() >= 1300, "{} bytes", plain.body.len());
    let gzipped = get(&mut c, EXCHANGE_INFO, Some("gzip"));
    assert_eq!((gzipped.status, coding(&gzipped)), (200, GZIPPED));
    assert_eq!(
        gzipped.header("content-length"),
        Some(gzipped.body.len().to_string().as_str())
    );
    assert!(
        gzipped.body.len() * 4 < plain.body.len(),
        "{} bytes",
        gzipped.body.len()
    );
    assert_eq!(
        without_server_time(&gunzip(&gzipped.body)),
        without_server_time(&plain.body)
    );
    // The other headers are the identity response's.
    assert_eq!(gzipped.header("content-type"), plain.header("content-type"));
    assert!(gzipped.header("x-mbx-used-weight-1m").is_some());
}

#[test]
fn small_bodies_are_never_compressed() {
    let server = Server::start(1, &[]);
    let mut c = server.connect();
    let table: &[(&str, u16, &str)] = &[
        ("/api/v3/ping", 200, "{}"),
        ("/health", 200, "{\"status\":\"ok\"}"),
        ("/api/v3/depth?symbol=BTCUSDT&limit=5000", 200, ""),
        ("/missing", 404, ""),
        ("/api/v3/exchangeInfo?symbol=NOPE", 400, ""),
    ];
    for (target, status, body) in table {
        for accept in ["gzip", "gzip, deflate, br, zstd", "*"] {
            let r = get(&mut c, target, Some(accept));
            assert_eq!((r.status, coding(&r)), (*status, AS_IS), "{target} {accept}");
            if !body.is_empty() {
                assert_eq!(r.body_text(), *body, "{target}");
            }
        }
    }
}

#[test]
fn only_an_accepted_gzip_compresses() {
    let server = Server::start(1, &[]);
    let mut c = server.connect();
    let plain = without_server_time(&get(&mut c, EXCHANGE_INFO, None).body);
    let table: &[(Option<&str>, Coding)] = &[
        (None, AS_IS_VARYING),
        (Some(""), AS_IS_VARYING),
        (Some("identity"), AS_IS_VARYING),
        (Some("gzip;q=0"), AS_IS_VARYING),
        (Some("*;q=0"), AS_IS_VARYING),
        (Some("br, deflate"), AS_IS_VARYING),
        (Some("identity, gzip;q=0.5"), AS_IS_VARYING),
        // Malformed: read as no header, never an error.
        (Some("gzip;q=2"), AS_IS_VARYING),
        (Some("gzip;level=9"), AS_IS_VARYING),
        (Some("gzip, g zip"), AS_IS_VARYING),
        (Some("gzip"), GZIPPED),
        (Some("GZIP"), GZIPPED),
        (Some("x-gzip"), GZIPPED),
        (Some("gzip, deflate, br, zstd"), GZIPPED),
        (Some("*"), GZIPPED),
        (Some("br;q=1, gzip;q=0.1"), GZIPPED),
        (Some("identity;q=0, gzip;q=0.5"), GZIPPED),
        (Some(" gzip ; q=0.5 , identity;q=0.5"), GZIPPED),
    ];
    for (accept, expected) in table {
        let r = get(&mut c, EXCHANGE_INFO, *accept);
        assert_eq!((r.status, coding(&r)), (200, *expected), "{accept:?}");
        assert_eq!(without_server_time(&decoded(&r)), plain, "{accept:?}");
    }
}

#[test]
fn pipelined_requests_keep_their_own_encodings() {
    let server = Server::start(1, &[]);
    let mut c = server.connect();
    let plain = without_server_time(&get(&mut c, EXCHANGE_INFO, None).body);
    let table: &[(&str, Option<&str>, Coding)] = &[
        (EXCHANGE_INFO, Some("gzip"), GZIPPED),
        (EXCHANGE_INFO, None, AS_IS_VARYING),
        ("/api/v3/ping", Some("gzip"), AS_IS),
        (EXCHANGE_INFO, Some("gzip;q=0"), AS_IS_VARYING),
        (EXCHANGE_INFO, Some("x-gzip, identity;q=0.5"), GZIPPED),
        (EXCHANGE_INFO, Some("gzip;q=nope"), AS_IS_VARYING),
        (EXCHANGE_INFO, Some("gzip"), GZIPPED),
    ];
    let batch: String = table
        .iter()
        .map(|(target, accept, _)| request("GET", target, *accept))
        .collect();
    c.send(&batch);
    for (i, (target, accept, expected)) in table.iter().enumerate() {
        let r = c.response();
        assert_eq!((r.status, coding(&r)), (200, *expected), "request {i}: {accept:?}");
        if *target == EXCHANGE_INFO {
            assert_eq!(without_server_time(&decoded(&r)), plain, "request {i}");
        } else {
            assert_eq!(r.body_text(), "{}", "request {i}");
        }
    }
}

#[test]
fn head_answers_the_headers_of_get_without_the_body() {
    let server = Server::start(1, &["--admin-token", ADMIN_TOKEN]);
    let user = create_user(&server, "depth", &[("USDT", "100000")]);
    let mut c = server.connect();
    // Sixty bid levels make a depth body above the threshold that stays
    // the same from one request to the next.
    for i in 0..60 {
        let query = format!(
            "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.001&price={}",
            20_000 + i
        );
        let r = signed(&mut c, &user, "POST", "/api/v3/order", &query);
        assert_eq!(r.status, 200, "{}", r.body_text());
    }
    let depth = "/api/v3/depth?symbol=BTCUSDT&limit=100";
    let plain = get(&mut c, depth, None);
    assert_eq!((plain.status, coding(&plain)), (200, AS_IS_VARYING));
    let gzipped = get(&mut c, depth, Some("gzip"));
    assert_eq!(coding(&gzipped), GZIPPED);
    assert_eq!(gunzip(&gzipped.body), plain.body);
    for (accept, full) in [(Some("gzip"), &gzipped), (None, &plain)] {
        // The ping after HEAD shows that no body came with it.
        c.send(&(request("HEAD", depth, accept) + &request("GET", "/api/v3/ping", None)));
        let head = c.head_response();
        assert_eq!(head.status, 200);
        for name in ["content-length", "content-encoding", "vary", "content-type"] {
            assert_eq!(head.header(name), full.header(name), "{accept:?} {name}");
        }
        assert_eq!(c.response().body_text(), "{}");
    }
}

#[test]
fn metrics_count_compressed_bytes_exactly() {
    let server = Server::start(1, &[]);
    let before = counters(&server.metrics());
    let mut c = server.connect();
    let mut output_bytes = 0;
    let mut input_bytes = 0;
    for _ in 0..3 {
        let r = get(&mut c, EXCHANGE_INFO, Some("gzip"));
        assert_eq!(coding(&r), GZIPPED);
        output_bytes += r.body.len();
        input_bytes += gunzip(&r.body).len();
        // Neither an identity answer nor a small one counts.
        assert_eq!(coding(&get(&mut c, EXCHANGE_INFO, None)), AS_IS_VARYING);
        assert_eq!(coding(&get(&mut c, "/api/v3/ping", Some("gzip"))), AS_IS);
    }
    let after = counters(&server.metrics());
    assert_eq!(
        delta(before, after),
        [3.0, input_bytes as f64, output_bytes as f64, 0.0]
    );
}

#[test]
fn over_budget_responses_go_uncompressed_and_are_counted() {
    let server = Server::start(
        1,
        &[
            "--http-compress-input-bytes-per-second-max",
            SMALL_BUDGET_BYTES_PER_SECOND,
        ],
    );
    let mut c = server.connect();
    let plain = get(&mut c, EXCHANGE_INFO, None);
    // One exchangeInfo fits in the bucket and a second does not until
    // the refill (tens of ms): pipelined, they come microseconds apart.
    let len = plain.body.len();
    assert!(
        len <= SMALL_BUDGET_BURST_BYTES && 2 * len > SMALL_BUDGET_BURST_BYTES,
        "{len}"
    );
    let before = counters(&server.metrics());
    let table = [
        (EXCHANGE_INFO, GZIPPED),
        (EXCHANGE_INFO, AS_IS_VARYING),
        ("/api/v3/ping", AS_IS),
        (EXCHANGE_INFO, AS_IS_VARYING),
    ];
    let batch: String = table
        .iter()
        .map(|(target, _)| request("GET", target, Some("gzip")))
        .collect();
    c.send(&batch);
    let mut output_bytes = 0;
    for (i, (target, expected)) in table.iter().enumerate() {
        let r = c.response();
        assert_eq!((r.status, coding(&r)), (200, *expected), "request {i}");
        if *target == EXCHANGE_INFO {
            assert_eq!(without_server_time(&decoded(&r)), without_server_time(&plain.body));
        }
        if *expected == GZIPPED {
            output_bytes += r.body.len();
        }
    }
    let after = counters(&server.metrics());
    assert_eq!(delta(before, after), [1.0, len as f64, output_bytes as f64, 2.0]);
}

#[test]
fn metrics_are_gzipped_for_prometheus() {
    let server = Server::start(2, &[]);
    let mut c = server.connect();
    let r = get(&mut c, "/metrics", Some("gzip"));
    assert_eq!((r.status, coding(&r)), (200, GZIPPED));
    let text = String::from_utf8(gunzip(&r.body)).expect("utf-8");
    let m = prom::parse(&text).expect("strict Prometheus text");
    for shard in ["0", "1"] {
        assert!(m
            .value("tradsys_http_compression_over_budget_total", &[("shard", shard)])
            .is_some());
    }
}

#[test]
fn compression_off_sends_every_body_as_it_is() {
    let server = Server::start(1, &["--http-compress-input-bytes-per-second-max", "0"]);
    let mut c = server.connect();
    let r = get(&mut c, EXCHANGE_INFO, Some("gzip"));
    assert_eq!((r.status, coding(&r)), (200, AS_IS));
    assert_eq!(counters(&server.metrics()), [0.0; 4]);
}
