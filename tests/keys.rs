//! API keys of the three types over the admin API and REST: Ed25519 and RSA
//! keys are created from the user's public key (the answer carries no
//! secret) and trade like HMAC keys; bad keys and bad signatures get exact
//! Binance codes. (Surviving a restart and `kill -9`: tests/durability.rs.)

mod common;

use common::account::{admin, create_user_with, fixture_pem, now_ms, signed, Signer, User};
use common::{Server, ADMIN_TOKEN};
use serde_json::{json, Value};

fn start() -> Server {
    Server::start(2, &["--admin-token", ADMIN_TOKEN, "--demo-user", "false"])
}

/// `POST /admin/v1/users/{user}/keys` with `body`.
fn create_key(server: &Server, user: u64, body: Value) -> (u16, Value) {
    let addr = server.admin.expect("admin API on");
    admin(addr, "POST", &format!("/admin/v1/users/{user}/keys"), Some(body))
}

#[test]
fn ed25519_and_rsa_keys_place_query_and_cancel_orders() {
    let server = start();
    for (key_type, name) in [("ED25519", "carol"), ("RSA", "dave")] {
        let user = create_user_with(&server, name, &[("USDT", "1000")], key_type);
        // The user id's 12 digits, then 52 letters and digits, as for HMAC.
        assert_eq!(user.key.len(), 64, "{key_type}");
        assert!(user.key.starts_with(&format!("{:012}", user.id)), "{key_type}");
        let mut c = server.connect();
        let order = "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.01&price=20000&newClientOrderId=k1";
        let placed = signed(&mut c, &user, "POST", "/api/v3/order", order);
        assert_eq!(placed.status, 200, "{key_type}: {}", placed.body_text());
        let placed = placed.json();
        let (id, time) = (placed["orderId"].clone(), placed["transactTime"].clone());
        let open = |status: &str, time_key: &str| {
            json!({
                "symbol": "BTCUSDT",
                "orderId": id,
                "orderListId": -1,
                "clientOrderId": "k1",
                time_key: time,
                "price": "20000.00000000",
                "origQty": "0.01000000",
                "executedQty": "0.00000000",
                "origQuoteOrderQty": "0.00000000",
                "cummulativeQuoteQty": "0.00000000",
                "status": status,
                "timeInForce": "GTC",
                "type": "LIMIT",
                "side": "BUY",
                "workingTime": time,
                "selfTradePreventionMode": "NONE",
            })
        };
        let mut expected = open("NEW", "transactTime");
        expected["fills"] = json!([]);
        assert_eq!(placed, expected, "{key_type}");
        let query = format!("symbol=BTCUSDT&orderId={id}");
        let queried = signed(&mut c, &user, "GET", "/api/v3/order", &query);
        let mut expected = open("NEW", "time");
        for (k, v) in [
            ("stopPrice", json!("0.00000000")),
            ("icebergQty", json!("0.00000000")),
            ("updateTime", time.clone()),
            ("isWorking", json!(true)),
        ] {
            expected[k] = v;
        }
        assert_eq!((queried.status, queried.json()), (200, expected), "{key_type}");
        let cancel = format!("{query}&newClientOrderId=c1");
        let canceled = signed(&mut c, &user, "DELETE", "/api/v3/order", &cancel);
        assert_eq!(canceled.status, 200, "{key_type}: {}", canceled.body_text());
        let canceled = canceled.json();
        let mut expected = open("CANCELED", "transactTime");
        expected["origClientOrderId"] = json!("k1");
        expected["clientOrderId"] = json!("c1");
        expected["transactTime"] = canceled["transactTime"].clone();
        expected.as_object_mut().map(|o| o.remove("workingTime"));
        assert_eq!(canceled, expected, "{key_type}");
        let account = signed(&mut c, &user, "GET", "/api/v3/account", "").json();
        let usdt = account["balances"]
            .as_array()
            .and_then(|b| b.iter().find(|b| b["asset"] == "USDT"));
        assert_eq!(
            usdt,
            Some(&json!({"asset": "USDT", "free": "1000.00000000", "locked": "0.00000000"})),
            "{key_type}"
        );
    }
}

#[test]
fn bad_keys_get_admin_errors_with_exact_codes() {
    let server = start();
    let addr = server.admin.expect("admin API on");
    let (_, user) = admin(addr, "POST", "/admin/v1/users", Some(json!({"name": "erin"})));
    let id = user["userId"].as_u64().expect("userId");
    let ed25519 = fixture_pem("ed25519.pub.pem");
    let rsa = fixture_pem("rsa2048.pub.pem");
    let table: Vec<(Value, i64, &str)> = vec![
        (
            json!({"scopes": ["READ"], "type": "DSA"}),
            -1100,
            "Unknown key type \"DSA\"; use HMAC_SHA256, ED25519 or RSA.",
        ),
        (
            json!({"scopes": ["READ"], "type": "ED25519"}),
            -1102,
            "Mandatory parameter 'publicKey' was not sent, was empty/null, or malformed.",
        ),
        (
            json!({"scopes": ["READ"], "type": "RSA", "publicKey": ""}),
            -1102,
            "Mandatory parameter 'publicKey' was not sent, was empty/null, or malformed.",
        ),
        (
            json!({"scopes": ["READ"], "publicKey": ed25519}),
            -1106,
            "Parameter 'publicKey' sent when not required.",
        ),
        (
            json!({"scopes": ["READ"], "type": "ED25519", "publicKey": rsa}),
            -1100,
            "publicKey is an RSA key, not an ED25519 key.",
        ),
        (
            json!({"scopes": ["READ"], "type": "RSA", "publicKey": ed25519}),
            -1100,
            "publicKey is an ED25519 key, not an RSA key.",
        ),
        (
            json!({"scopes": ["READ"], "type": "RSA", "publicKey": fixture_pem("rsa2047.pub.pem")}),
            -1100,
            "RSA keys must have 2048 to 4096 bits; this one has 2047.",
        ),
        (
            json!({"scopes": ["READ"], "type": "RSA", "publicKey": fixture_pem("rsa2048.pem")}),
            -1100,
            "publicKey holds a private key; send only the public key (BEGIN PUBLIC KEY).",
        ),
        (
            json!({"scopes": ["READ"], "type": "ED25519", "publicKey": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5"}),
            -1100,
            "publicKey is not a PEM public key (BEGIN PUBLIC KEY, or BEGIN RSA PUBLIC KEY for RSA).",
        ),
        (
            json!({"scopes": ["READ"], "type": "ED25519", "publicKey": 7}),
            -1102,
            "Malformed JSON body: invalid type: integer `7`, expected a string at line 1 column 14.",
        ),
    ];
    for (body, code, msg) in table {
        let (status, answer) = create_key(&server, id, body.clone());
        assert_eq!((status, answer), (400, json!({"code": code, "msg": msg})), "{body}");
    }
    // A good key for a user that does not exist.
    let (status, _) = create_key(
        &server,
        id + 1000,
        json!({"scopes": [], "type": "RSA", "publicKey": rsa}),
    );
    assert_eq!(status, 404);
    // PKCS#1 is read for RSA, and the answer names the type and scopes.
    let pkcs1 = fixture_pem("rsa2048.pkcs1.pub.pem");
    let (status, key) = create_key(
        &server,
        id,
        json!({"scopes": ["TRADE", "READ"], "type": "RSA", "publicKey": pkcs1}),
    );
    let api_key = key["apiKey"].as_str().expect("apiKey").to_string();
    assert_eq!(
        (status, key),
        (
            200,
            json!({"apiKey": api_key, "type": "RSA", "scopes": ["READ", "TRADE"]})
        )
    );
    // HMAC stays the default, and only it answers with a secret.
    let (status, key) = create_key(&server, id, json!({"scopes": ["READ"]}));
    assert_eq!((status, &key["type"]), (200, &json!("HMAC_SHA256")));
    assert_eq!(key["secretKey"].as_str().map(str::len), Some(64));
}

/// `GET /api/v3/account?{query}&signature={signature}`, both as given: the
/// status, and the error code (0 for a 200).
fn send(server: &Server, key: &str, query: &str, signature: &str) -> (u16, i64) {
    let mut c = server.connect();
    c.send(&format!(
        "GET /api/v3/account?{query}&signature={signature} HTTP/1.1\r\nX-MBX-APIKEY: {key}\r\n\r\n"
    ));
    let r = c.response();
    let code = if r.status == 200 { 0 } else { r.error().0 };
    (r.status, code)
}

#[test]
fn bad_signatures_of_public_keys_get_exact_codes() {
    let server = start();
    let users = [("ED25519", "ed25519-other", "frank"), ("RSA", "rsa2048-other", "grace")];
    for (key_type, other, name) in users {
        let user = create_user_with(&server, name, &[], key_type);
        let other = Signer::fixture(key_type, other);
        let query = format!("timestamp={}", now_ms());
        let good = user.signer.sign(query.as_bytes());
        let hex: String = {
            use base64::Engine;
            let raw = good.replace("%2B", "+").replace("%2F", "/").replace("%3D", "=");
            let bytes = base64::engine::general_purpose::STANDARD.decode(raw).expect("base64");
            bytes.iter().map(|b| format!("{b:02x}")).collect()
        };
        let stale = format!("timestamp={}", now_ms() - 60_000);
        let table: &[(&str, &str, &str, (u16, i64))] = &[
            ("good", &query, &good, (200, 0)),
            ("another key's", &query, &other.sign(query.as_bytes()), (400, -1022)),
            ("hex", &query, &hex, (400, -1022)),
            (
                "of another payload",
                &format!("{query}&recvWindow=5000"),
                &good,
                (400, -1022),
            ),
            ("stale", &stale, &user.signer.sign(stale.as_bytes()), (400, -1021)),
            (
                "recvWindow too large",
                &format!("{query}&recvWindow=60001"),
                &user.signer.sign(format!("{query}&recvWindow=60001").as_bytes()),
                (400, -1131),
            ),
        ];
        for (name, query, signature, expected) in table {
            assert_eq!(
                send(&server, &user.key, query, signature),
                *expected,
                "{key_type} {name}"
            );
        }
        // No signature at all.
        let mut c = server.connect();
        c.send(&format!(
            "GET /api/v3/account?{query} HTTP/1.1\r\nX-MBX-APIKEY: {}\r\n\r\n",
            user.key
        ));
        assert_eq!(c.response().error().0, -1102, "{key_type}");
        // A READ key cannot trade, and a revoked key does nothing.
        let pem = fixture_pem(&format!("{}.pub.pem", common::account::fixture_name(key_type)));
        let (_, read_only) = create_key(
            &server,
            user.id,
            json!({"scopes": ["READ"], "type": key_type, "publicKey": pem}),
        );
        let read_only = User {
            id: user.id,
            key: read_only["apiKey"].as_str().expect("apiKey").to_string(),
            signer: user.signer.clone(),
        };
        let mut c = server.connect();
        let order = "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.01&price=20000";
        let r = signed(&mut c, &read_only, "POST", "/api/v3/order", order);
        assert_eq!((r.status, r.error().0), (401, -2015), "{key_type}");
        assert_eq!(signed(&mut c, &read_only, "GET", "/api/v3/account", "").status, 200);
        let addr = server.admin.expect("admin API on");
        let revoke = format!("/admin/v1/keys/{}", user.key);
        assert_eq!(admin(addr, "DELETE", &revoke, None).0, 200);
        let r = signed(&mut c, &user, "GET", "/api/v3/account", "");
        assert_eq!((r.status, r.error().0), (401, -2015), "{key_type}");
    }
}
