//! Random and mutated requests: the parser never panics, and the live
//! server answers each with a well-formed response or a close, while a
//! well-behaved connection beside them is unaffected.

mod common;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use tradsys::http::{parse, HttpLimits, Parsed};

const SEEDS: &[&str] = &[
    "GET /api/v3/ping HTTP/1.1\r\nHost: t\r\n\r\n",
    "GET /api/v3/exchangeInfo?symbol=BTCUSDT HTTP/1.1\r\nHost: t\r\nConnection: keep-alive\r\n\r\n",
    "POST /api/v3/order HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 11\r\n\r\nsymbol=ETHB",
    "GET /metrics HTTP/1.0\r\n\r\n",
];

fn limits() -> HttpLimits {
    HttpLimits::default()
}

/// A valid request with random byte edits: flips, inserts, deletions and a
/// truncation.
fn mutated() -> impl Strategy<Value = Vec<u8>> {
    let edits = prop::collection::vec((any::<u16>(), any::<u8>(), 0u8..3), 0..8);
    (0..SEEDS.len(), edits, any::<u16>()).prop_map(|(seed, edits, cut)| {
        let mut bytes = SEEDS[seed].as_bytes().to_vec();
        for (at, byte, kind) in edits {
            let at = at as usize % (bytes.len() + 1);
            match kind {
                0 if at < bytes.len() => bytes[at] = byte,
                1 => bytes.insert(at, byte),
                _ if at < bytes.len() => {
                    bytes.remove(at);
                }
                _ => {}
            }
        }
        let cut = cut as usize % (bytes.len() + 1);
        if cut > bytes.len() / 2 {
            bytes.truncate(cut);
        }
        bytes
    })
}

fn check(bytes: &[u8]) {
    match parse(bytes, &limits()) {
        Ok(Parsed::Complete(head)) => {
            assert!(head.len <= bytes.len());
            assert!(head.path.end <= head.len && head.query.end <= head.len && head.body.end == head.len);
        }
        Ok(Parsed::Partial { needed_len: Some(head) }) => assert!(head.len > bytes.len()),
        Ok(Parsed::Partial { needed_len: None }) => assert!(bytes.len() <= 8192),
        Err(e) => {
            assert!([400, 411, 413, 431].contains(&e.status), "{e:?}");
            assert!(e.code < 0 && !e.msg.is_empty());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 20_000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        check(&bytes);
    }

    #[test]
    fn mutated_requests_never_panic(bytes in mutated()) {
        check(&bytes);
    }
}

#[test]
fn hostile_requests_do_not_affect_other_connections() {
    let server = common::Server::start(1, &["--http-header-timeout-ms", "200"]);
    let mut good = server.connect();
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    for i in 0..300 {
        let bytes = mutated().new_tree(&mut runner).expect("a value").current();
        let mut hostile = server.connect();
        hostile.send_bytes(&bytes);
        // Either a well-formed response or a close; a partial request
        // ends with 408 once the header timeout passes.
        if let Some(r) = hostile.try_response() {
            assert!((200..600).contains(&r.status), "request {i}");
            if r.status >= 400 {
                assert!(r.error().0 < 0, "request {i}: {}", r.body_text());
            }
        }
        good.send("GET /api/v3/ping HTTP/1.1\r\nHost: t\r\n\r\n");
        let r = good.response();
        assert_eq!(
            (r.status, r.body_text().as_str()),
            (200, "{}"),
            "after hostile request {i}"
        );
    }
}
