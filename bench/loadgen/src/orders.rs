//! The orders the benchmark sends, and how they are signed.
//!
//! Orders come in crossing pairs: a LIMIT GTC SELL and a LIMIT GTC BUY of
//! the same market, price and quantity by two different users, the SELL
//! first. Whatever order the two arrive in, they trade: a BUY that arrives
//! first rests and is taken by the SELL. Within a pair one user lives on
//! shard 0 and the other on shard 1 (when there are two shards), so exactly
//! one of the two orders has its market on another shard than its user:
//! half of all orders are cross-shard, whichever shard owns the market.
//! Buyer and seller swap roles on alternate pairs so that balances stay
//! level however long the benchmark runs.
//!
//! REST requests and the WebSocket API's `order.place` are signed with the
//! user's HMAC-SHA256 key; a WebSocket API session may instead log on once
//! with the user's Ed25519 key (`session.logon`), after which its requests
//! carry no key and no signature.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use ed25519_dalek::Signer as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::users::{Ed25519Key, User};

/// Market, price, quantity: every pair in that market uses exactly these,
/// so any BUY can take any SELL. Each notional is above the market's
/// minimum in shards/markets.toml.
pub const MARKETS: [(&str, &str, &str); 4] = [
    ("BTCUSDT", "50000.00", "0.00100"),
    ("ETHUSDT", "3000.00", "0.0100"),
    ("ETHBTC", "0.05000", "0.0100"),
    ("EURUSD", "1.1000", "10.0"),
];

/// The largest recvWindow tradsys accepts, ms.
pub const RECV_WINDOW_MS_MAX: u64 = 60_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Sell,
    Buy,
}

/// One order of a pair: who sends it, where, and which way.
#[derive(Clone, Copy, Debug)]
pub struct Order<'a> {
    pub user: &'a User,
    pub market: usize,
    pub side: Side,
}

/// Pairs are numbered; pair `k` is fully determined by `k`.
pub struct Plan<'a> {
    groups: Vec<Vec<&'a User>>,
}

impl<'a> Plan<'a> {
    /// Groups users by owning shard. Needs at least two users.
    pub fn new(users: &'a [User]) -> Plan<'a> {
        assert!(users.len() >= 2, "a crossing pair needs two users");
        let shards = users.iter().map(|u| u.shard).max().unwrap_or(0) as usize + 1;
        let mut groups: Vec<Vec<&User>> = vec![Vec::new(); shards];
        for u in users {
            groups[u.shard as usize].push(u);
        }
        groups.retain(|g| !g.is_empty());
        if groups.len() == 1 {
            // One shard: split its users in two halves instead.
            let all = groups.remove(0);
            let (a, b) = all.split_at(all.len() / 2);
            groups = vec![a.to_vec(), b.to_vec()];
        }
        Plan { groups }
    }

    /// A number of pairs after which the users repeat: pairs `k` and
    /// `k + period()` are made by the same two users in the same roles.
    pub fn period(&self) -> u64 {
        let g0 = self.groups[0].len() as u64;
        let g1 = self.groups[1 % self.groups.len()].len() as u64;
        MARKETS.len() as u64 * 2 * g0 * g1
    }

    /// The SELL and the BUY of pair `k`.
    pub fn pair(&self, k: u64) -> [Order<'a>; 2] {
        let market = (k % MARKETS.len() as u64) as usize;
        let j = k / MARKETS.len() as u64;
        let g0 = &self.groups[0];
        let g1 = &self.groups[1 % self.groups.len()];
        let a = g0[(j % g0.len() as u64) as usize];
        let b = g1[(j % g1.len() as u64) as usize];
        let (seller, buyer) = if j % 2 == 0 { (a, b) } else { (b, a) };
        [
            Order {
                user: seller,
                market,
                side: Side::Sell,
            },
            Order {
                user: buyer,
                market,
                side: Side::Buy,
            },
        ]
    }
}

/// Milliseconds since the epoch, as `timestamp` wants it.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The signed form body of `order` (ccxt style: every parameter in the
/// body, the signature last).
pub fn order_body(order: &Order, timestamp_ms: u64, recv_window_ms: u64) -> String {
    let (symbol, price, qty) = MARKETS[order.market];
    let side = side_name(order.side);
    let mut body = String::with_capacity(256);
    let _ = write!(
        body,
        "symbol={symbol}&side={side}&type=LIMIT&timeInForce=GTC&quantity={qty}&price={price}\
         &recvWindow={recv_window_ms}&timestamp={timestamp_ms}"
    );
    sign_into(&mut body, &order.user.secret);
    body
}

/// The signed query string of GET /api/v3/account.
pub fn account_query(timestamp_ms: u64, recv_window_ms: u64, secret: &str) -> String {
    let mut query = format!("recvWindow={recv_window_ms}&timestamp={timestamp_ms}");
    sign_into(&mut query, secret);
    query
}

/// Appends `&signature=<hex HMAC-SHA256 of what is there>`.
pub fn sign_into(payload: &mut String, secret: &str) {
    let tag = hmac_hex(payload, secret);
    payload.push_str("&signature=");
    payload.push_str(&tag);
}

/// Lowercase hex HMAC-SHA256 of `payload` with `secret`, as Binance wants
/// a signature.
pub fn hmac_hex(payload: &str, secret: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC accepts any key length");
    mac.update(payload.as_bytes());
    let mut hex = String::with_capacity(64);
    for b in mac.finalize().into_bytes() {
        let _ = write!(hex, "{b:02x}");
    }
    hex
}

/// The `order.place` request frame of `order` for the WebSocket API, with
/// the same parameters as [`order_body`]. Decimals go as JSON strings and
/// integers as numbers, as Binance's clients send them; the signature
/// covers every parameter, `apiKey` included, sorted by name and rendered
/// as text.
pub fn ws_order_request(order: &Order, id: u64, timestamp_ms: u64, recv_window_ms: u64) -> String {
    let (symbol, price, qty) = MARKETS[order.market];
    let side = side_name(order.side);
    let key = &order.user.api_key;
    // Already in name order: apiKey, price, quantity, recvWindow, side,
    // symbol, timeInForce, timestamp, type.
    let payload = format!(
        "apiKey={key}&price={price}&quantity={qty}&recvWindow={recv_window_ms}&side={side}&symbol={symbol}\
         &timeInForce=GTC&timestamp={timestamp_ms}&type=LIMIT"
    );
    let signature = hmac_hex(&payload, &order.user.secret);
    let mut text = String::with_capacity(512);
    push_order_place(&mut text, order, id, timestamp_ms, recv_window_ms);
    let _ = write!(text, ",\"apiKey\":\"{key}\",\"signature\":\"{signature}\"}}}}");
    text
}

/// The `order.place` request frame of `order` on a session logged on with
/// [`ws_logon_request`]: the parameters of [`ws_order_request`] without
/// `apiKey` and `signature` (the session's key stands for both), still
/// with `timestamp` and `recvWindow`, which the server checks as for a
/// signed request.
pub fn ws_session_order_request(order: &Order, id: u64, timestamp_ms: u64, recv_window_ms: u64) -> String {
    let mut text = String::with_capacity(256);
    push_order_place(&mut text, order, id, timestamp_ms, recv_window_ms);
    text.push_str("}}");
    text
}

/// Appends the head of an `order.place` frame: `id`, `method` and the
/// order's own parameters, leaving `params` (and the frame) open.
fn push_order_place(out: &mut String, order: &Order, id: u64, timestamp_ms: u64, recv_window_ms: u64) {
    let (symbol, price, qty) = MARKETS[order.market];
    let side = side_name(order.side);
    let _ = write!(
        out,
        "{{\"id\":{id},\"method\":\"order.place\",\"params\":{{\"symbol\":\"{symbol}\",\"side\":\"{side}\",\
         \"type\":\"LIMIT\",\"timeInForce\":\"GTC\",\"quantity\":\"{qty}\",\"price\":\"{price}\",\
         \"recvWindow\":{recv_window_ms},\"timestamp\":{timestamp_ms}"
    );
}

fn side_name(side: Side) -> &'static str {
    match side {
        Side::Sell => "SELL",
        Side::Buy => "BUY",
    }
}

/// The `userDataStream.subscribe.signature` request frame of `user`: one
/// user data subscription on the connection, signed with HMAC (allowed for
/// any key type, unlike `session.logon`).
pub fn ws_subscribe_request(user: &User, id: u64, timestamp_ms: u64, recv_window_ms: u64) -> String {
    let key = &user.api_key;
    let payload = format!("apiKey={key}&recvWindow={recv_window_ms}&timestamp={timestamp_ms}");
    let signature = hmac_hex(&payload, &user.secret);
    format!(
        "{{\"id\":{id},\"method\":\"userDataStream.subscribe.signature\",\"params\":{{\"apiKey\":\"{key}\",\
         \"recvWindow\":{recv_window_ms},\"timestamp\":{timestamp_ms},\"signature\":\"{signature}\"}}}}"
    )
}

/// The `session.logon` request frame of `key`: after its 200 answer the
/// connection's signed requests go without `apiKey` and `signature`
/// ([`ws_session_order_request`]). Only an Ed25519 key can log on; the
/// signature is the base64 (standard alphabet, padded) Ed25519 signature
/// over every parameter but `signature`, sorted by name, `name=value`
/// joined with `&`.
pub fn ws_logon_request(key: &Ed25519Key, id: u64, timestamp_ms: u64, recv_window_ms: u64) -> String {
    let api_key = &key.api_key;
    // Already in name order: apiKey, recvWindow, timestamp.
    let payload = format!("apiKey={api_key}&recvWindow={recv_window_ms}&timestamp={timestamp_ms}");
    let signature = BASE64.encode(key.signing.sign(payload.as_bytes()).to_bytes());
    format!(
        "{{\"id\":{id},\"method\":\"session.logon\",\"params\":{{\"apiKey\":\"{api_key}\",\
         \"recvWindow\":{recv_window_ms},\"timestamp\":{timestamp_ms},\"signature\":\"{signature}\"}}}}"
    )
}

/// The `userDataStream.subscribe` request frame: the user data
/// subscription of a session logged on with [`ws_logon_request`], which
/// takes no parameters.
pub fn ws_session_subscribe_request(id: u64) -> String {
    format!("{{\"id\":{id},\"method\":\"userDataStream.subscribe\"}}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_the_published_binance_example() {
        // docs/API.md, "Worked example (shell)".
        let secret = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j";
        let mut q = "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1&recvWindow=5000\
                     &timestamp=1499827319559"
            .to_string();
        sign_into(&mut q, secret);
        assert!(q.ends_with("&signature=c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71"));
    }

    /// The parameters and signature of Binance's published WebSocket API
    /// HMAC example: the payload as `ws_order_request` builds it must sign
    /// to the published signature.
    #[test]
    fn ws_signature_matches_the_published_binance_example() {
        let secret = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j";
        let payload = "apiKey=vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A\
                       &newOrderRespType=ACK&price=52000.00&quantity=0.01000000&recvWindow=100&side=SELL\
                       &symbol=BTCUSDT&timeInForce=GTC&timestamp=1645423376532&type=LIMIT";
        assert_eq!(
            hmac_hex(payload, secret),
            "cc15477742bd704c29492d96c7ead9414dfd8e0ec4a00f947bb5bb454ddbd08a"
        );
    }

    /// What the server signs: every parameter but `signature`, sorted by
    /// name, `name=value` with the values as text.
    fn server_payload(request: &str) -> (String, String) {
        let v: serde_json::Value = serde_json::from_str(request).expect("request is JSON");
        let params = v["params"].as_object().expect("params object");
        let mut pairs: Vec<(String, String)> = params
            .iter()
            .filter(|(name, _)| name.as_str() != "signature")
            .map(|(name, value)| {
                let text = match value {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (name.clone(), text)
            })
            .collect();
        pairs.sort();
        let payload = pairs
            .iter()
            .map(|(n, t)| format!("{n}={t}"))
            .collect::<Vec<_>>()
            .join("&");
        let signature = params["signature"].as_str().expect("signature").to_string();
        (payload, signature)
    }

    #[test]
    fn ws_requests_are_json_signed_over_their_sorted_params() {
        let user = User {
            id: 7,
            shard: 0,
            api_key: "7KEY".to_string(),
            secret: "s3cret".to_string(),
            ed25519: None,
        };
        let order = Order {
            user: &user,
            market: 0,
            side: Side::Buy,
        };
        let request = ws_order_request(&order, 42, 1_700_000_000_000, 5000);
        let v: serde_json::Value = serde_json::from_str(&request).expect("request is JSON");
        assert_eq!(
            (v["id"].as_u64(), v["method"].as_str()),
            (Some(42), Some("order.place"))
        );
        assert_eq!(v["params"]["timestamp"].as_u64(), Some(1_700_000_000_000));
        assert_eq!(v["params"]["price"].as_str(), Some("50000.00"));
        let (payload, signature) = server_payload(&request);
        assert_eq!(
            payload,
            "apiKey=7KEY&price=50000.00&quantity=0.00100&recvWindow=5000&side=BUY&symbol=BTCUSDT\
             &timeInForce=GTC&timestamp=1700000000000&type=LIMIT"
        );
        assert_eq!(signature, hmac_hex(&payload, "s3cret"));

        let request = ws_subscribe_request(&user, 3, 1_700_000_000_000, 60000);
        let (payload, signature) = server_payload(&request);
        assert_eq!(payload, "apiKey=7KEY&recvWindow=60000&timestamp=1700000000000");
        assert_eq!(signature, hmac_hex(&payload, "s3cret"));
    }

    fn ed25519_user() -> User {
        let seed: [u8; 32] = std::array::from_fn(|i| (3 * i + 5) as u8);
        User {
            id: 9,
            shard: 1,
            api_key: "9HMAC".to_string(),
            secret: "s3cret".to_string(),
            ed25519: Some(Ed25519Key {
                api_key: "9ED".to_string(),
                signing: ed25519_dalek::SigningKey::from_bytes(&seed),
            }),
        }
    }

    #[test]
    fn logon_is_ed25519_signed_over_its_sorted_params() {
        let user = ed25519_user();
        let key = user.ed25519.as_ref().expect("the user has an Ed25519 key");
        let request = ws_logon_request(key, 5, 1_700_000_000_000, 5000);
        let v: serde_json::Value = serde_json::from_str(&request).expect("request is JSON");
        assert_eq!(
            (v["id"].as_u64(), v["method"].as_str()),
            (Some(5), Some("session.logon"))
        );
        assert_eq!(v["params"]["recvWindow"].as_u64(), Some(5000));
        let (payload, signature) = server_payload(&request);
        assert_eq!(payload, "apiKey=9ED&recvWindow=5000&timestamp=1700000000000");
        let bytes = BASE64.decode(&signature).expect("the signature is standard base64");
        assert_eq!(BASE64.encode(&bytes), signature, "padded standard alphabet");
        let signature = ed25519_dalek::Signature::from_slice(&bytes).expect("64 signature bytes");
        let verifying = key.signing.verifying_key();
        verifying
            .verify_strict(payload.as_bytes(), &signature)
            .expect("the signature verifies over the exact payload");
        // Not over another payload (say, the params in the frame's order).
        assert!(verifying
            .verify_strict(b"apiKey=9ED&timestamp=1700000000000&recvWindow=5000", &signature)
            .is_err());
    }

    #[test]
    fn session_requests_carry_no_key_and_no_signature() {
        let user = ed25519_user();
        let order = Order {
            user: &user,
            market: 1,
            side: Side::Sell,
        };
        let request = ws_session_order_request(&order, 77, 1_700_000_000_123, 5000);
        let v: serde_json::Value = serde_json::from_str(&request).expect("request is JSON");
        assert_eq!(
            (v["id"].as_u64(), v["method"].as_str()),
            (Some(77), Some("order.place"))
        );
        assert_eq!(
            v["params"],
            serde_json::json!({
                "symbol": "ETHUSDT",
                "side": "SELL",
                "type": "LIMIT",
                "timeInForce": "GTC",
                "quantity": "0.0100",
                "price": "3000.00",
                "recvWindow": 5000,
                "timestamp": 1_700_000_000_123_u64,
            })
        );
        // The signed form has exactly these plus apiKey and signature.
        let signed: serde_json::Value =
            serde_json::from_str(&ws_order_request(&order, 77, 1_700_000_000_123, 5000)).expect("request is JSON");
        let mut stripped = signed["params"].as_object().expect("params object").clone();
        assert_eq!(
            stripped.remove("apiKey").as_ref().and_then(|k| k.as_str()),
            Some("9HMAC")
        );
        assert!(stripped.remove("signature").is_some());
        assert_eq!(serde_json::Value::Object(stripped), v["params"]);

        let subscribe: serde_json::Value =
            serde_json::from_str(&ws_session_subscribe_request(4)).expect("request is JSON");
        assert_eq!(
            subscribe,
            serde_json::json!({ "id": 4, "method": "userDataStream.subscribe" })
        );
    }

    #[test]
    fn every_pair_has_one_cross_shard_order_with_two_shards() {
        let user = |id, shard| User {
            id,
            shard,
            api_key: String::new(),
            secret: String::new(),
            ed25519: None,
        };
        let users = vec![user(1, 0), user(2, 1), user(3, 0), user(4, 1)];
        let plan = Plan::new(&users);
        for k in 0..64 {
            let [sell, buy] = plan.pair(k);
            assert_ne!(sell.user.shard, buy.user.shard);
            assert_eq!(sell.market, buy.market);
            assert_eq!((sell.side, buy.side), (Side::Sell, Side::Buy));
        }
    }
}
