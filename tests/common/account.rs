//! Users and signed requests for the integration tests: the admin API
//! creates a user with a key (HMAC, or Ed25519 or RSA with a fixed test key
//! from tests/fixtures/keys) and deposits, and requests are signed as
//! Binance clients sign them.

use super::{Client, Response, Server, ADMIN_TOKEN};
use base64::Engine;
use serde_json::{json, Value};
use std::net::SocketAddr;

/// A user with an API key, as the admin API created it.
#[derive(Clone)]
pub struct User {
    pub id: u64,
    pub key: String,
    pub signer: Signer,
}

/// What signs a user's requests: the secret the server made for an HMAC
/// key, or the private half of a fixture key whose public half the server
/// holds.
#[derive(Clone)]
pub enum Signer {
    Hmac(String),
    Ed25519(ed25519_dalek::SigningKey),
    Rsa(rsa::pkcs1v15::SigningKey<sha2::Sha256>),
}

/// A PEM file of tests/fixtures/keys.
pub fn fixture_pem(file: &str) -> String {
    let path = format!("{}/tests/fixtures/keys/{file}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The fixture key pair the tests use for `key_type` (ED25519 or RSA), as
/// the name of its private PEM file; its public key is `<name>.pub.pem`.
pub fn fixture_name(key_type: &str) -> &'static str {
    match key_type {
        "ED25519" => "ed25519",
        "RSA" => "rsa2048",
        other => panic!("no fixture key of type {other}"),
    }
}

impl Signer {
    /// The signer of the fixture private key `name` (e.g. `ed25519-other`)
    /// of `key_type` (ED25519 or RSA).
    pub fn fixture(key_type: &str, name: &str) -> Signer {
        use ed25519_dalek::pkcs8::DecodePrivateKey;
        let private = fixture_pem(&format!("{name}.pem"));
        match key_type {
            "ED25519" => Signer::Ed25519(ed25519_dalek::SigningKey::from_pkcs8_pem(&private).expect("Ed25519 PEM")),
            _ => {
                let key = rsa::RsaPrivateKey::from_pkcs8_pem(&private).expect("RSA PEM");
                Signer::Rsa(rsa::pkcs1v15::SigningKey::new(key))
            }
        }
    }

    /// The `signature` parameter's value for `payload`, URL-encoded as
    /// binance-connector sends it: hex for HMAC, base64 with `+`, `/` and
    /// `=` as %2B, %2F and %3D otherwise.
    pub fn sign(&self, payload: &[u8]) -> String {
        self.sign_bare(payload)
            .replace('+', "%2B")
            .replace('/', "%2F")
            .replace('=', "%3D")
    }

    /// The signature as a JSON parameter carries it (the WebSocket API):
    /// base64 left as it is.
    pub fn sign_bare(&self, payload: &[u8]) -> String {
        use rsa::signature::{SignatureEncoding, Signer as _};
        let base64 = base64::engine::general_purpose::STANDARD;
        match self {
            Signer::Hmac(secret) => tradsys::auth::sign(secret.as_bytes(), payload),
            Signer::Ed25519(key) => base64.encode(key.sign(payload).to_bytes()),
            Signer::Rsa(key) => base64.encode(key.sign(payload).to_bytes()),
        }
    }
}

/// One admin request; the status and the JSON body.
pub fn admin(addr: SocketAddr, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut c = Client::connect(addr);
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    c.send(&format!(
        "{method} {path} HTTP/1.1\r\nX-Admin-Token: {ADMIN_TOKEN}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ));
    let r = c.response();
    (r.status, r.json())
}

/// A new user with a READ, TRADE and USER_STREAM key and `deposits`.
/// Some of every asset of the shipped markets.
pub const DEPOSITS_EVERY_ASSET: [(&str, &str); 5] = [
    ("USDT", "100000"),
    ("BTC", "10"),
    ("ETH", "100"),
    ("EUR", "1000"),
    ("USD", "1000"),
];

pub fn create_user(server: &Server, name: &str, deposits: &[(&str, &str)]) -> User {
    create_user_with(server, name, deposits, "HMAC_SHA256")
}

/// [`create_user`] with a key of `key_type`: HMAC_SHA256, or ED25519 or
/// RSA with the fixture key's public half.
pub fn create_user_with(server: &Server, name: &str, deposits: &[(&str, &str)], key_type: &str) -> User {
    create_user_on(server.admin.expect("admin API on"), name, deposits, key_type)
}

/// [`create_user_with`] through the admin API at `addr`.
pub fn create_user_on(addr: SocketAddr, name: &str, deposits: &[(&str, &str)], key_type: &str) -> User {
    let (_, user) = admin(addr, "POST", "/admin/v1/users", Some(json!({"name": name})));
    let id = user["userId"].as_u64().expect("userId");
    let scopes = ["READ", "TRADE", "USER_STREAM"];
    let body = match key_type {
        "HMAC_SHA256" => json!({"scopes": scopes}),
        _ => {
            let public_key = fixture_pem(&format!("{}.pub.pem", fixture_name(key_type)));
            json!({"scopes": scopes, "type": key_type, "publicKey": public_key})
        }
    };
    let (status, key) = admin(addr, "POST", &format!("/admin/v1/users/{id}/keys"), Some(body));
    assert_eq!(
        (status, &key["type"], &key["scopes"]),
        (200, &json!(key_type), &json!(scopes))
    );
    let signer = match key_type {
        "HMAC_SHA256" => {
            let secret = key["secretKey"].as_str().expect("secretKey");
            super::note_secret(secret);
            Signer::Hmac(secret.to_string())
        }
        _ => {
            assert_eq!(key.get("secretKey"), None, "a {key_type} key has no secret");
            Signer::fixture(key_type, fixture_name(key_type))
        }
    };
    for (asset, amount) in deposits {
        deposit(addr, id, asset, amount);
    }
    User {
        id,
        key: key["apiKey"].as_str().expect("apiKey").to_string(),
        signer,
    }
}

/// Deposits `amount` of `asset` to `user` through the admin API at `addr`.
pub fn deposit(addr: SocketAddr, user: u64, asset: &str, amount: &str) {
    let (status, body) = admin(
        addr,
        "POST",
        &format!("/admin/v1/users/{user}/deposits"),
        Some(json!({"asset": asset, "amount": amount})),
    );
    assert_eq!(status, 200, "{body}");
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A new user data stream's listen key for `user` (POST
/// /api/v3/userDataStream).
pub fn listen_key(c: &mut Client, user: &User) -> String {
    c.send(&format!(
        "POST /api/v3/userDataStream HTTP/1.1\r\nHost: t\r\nX-MBX-APIKEY: {}\r\n\r\n",
        user.key
    ));
    let r = c.response();
    assert_eq!(r.status, 200, "{}", r.body_text());
    r.json()["listenKey"].as_str().expect("listenKey").to_string()
}

/// A signed request; `query` without timestamp and signature.
pub fn signed(c: &mut Client, user: &User, method: &str, path: &str, query: &str) -> Response {
    c.send(&signed_request(user, method, path, query));
    c.response()
}

/// A signed request of `user`, timestamped now, as it goes on the wire.
pub fn signed_request(user: &User, method: &str, path: &str, query: &str) -> String {
    let query = format!(
        "{query}{}timestamp={}",
        if query.is_empty() { "" } else { "&" },
        now_ms()
    );
    let signature = user.signer.sign(query.as_bytes());
    format!(
        "{method} {path}?{query}&signature={signature} HTTP/1.1\r\nHost: t\r\nX-MBX-APIKEY: {}\r\n\r\n",
        user.key
    )
}

/// The header of a trades CSV export.
pub const TRADES_HEADER: &str =
    "user,symbol,trade_id,order_id,price,qty,quote_qty,commission,commission_asset,is_buyer,is_maker,time_ms";

/// A trade as a line of a CSV export, from myTrades' JSON.
pub fn trade_csv(user: u64, t: &Value) -> String {
    format!(
        "{user},{},{},{},{},{},{},{},{},{},{},{}",
        t["symbol"].as_str().unwrap(),
        t["id"],
        t["orderId"],
        t["price"].as_str().unwrap(),
        t["qty"].as_str().unwrap(),
        t["quoteQty"].as_str().unwrap(),
        t["commission"].as_str().unwrap(),
        t["commissionAsset"].as_str().unwrap(),
        t["isBuyer"],
        t["isMaker"],
        t["time"],
    )
}
