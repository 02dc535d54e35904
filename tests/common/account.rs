//! Users and signed requests for the integration tests: the admin API
//! creates a user with a key and deposits, and requests are signed as
//! Binance clients sign them.

use super::{Client, Response, Server, ADMIN_TOKEN};
use serde_json::{json, Value};
use std::net::SocketAddr;

/// A user with an API key, as the admin API created it.
#[derive(Clone)]
pub struct User {
    pub id: u64,
    pub key: String,
    pub secret: String,
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
pub fn create_user(server: &Server, name: &str, deposits: &[(&str, &str)]) -> User {
    let addr = server.admin.expect("admin API on");
    let (_, user) = admin(addr, "POST", "/admin/v1/users", Some(json!({"name": name})));
    let id = user["userId"].as_u64().expect("userId");
    let scopes = json!({"scopes": ["READ", "TRADE", "USER_STREAM"]});
    let (_, key) = admin(addr, "POST", &format!("/admin/v1/users/{id}/keys"), Some(scopes));
    for (asset, amount) in deposits {
        let (status, _) = admin(
            addr,
            "POST",
            &format!("/admin/v1/users/{id}/deposits"),
            Some(json!({"asset": asset, "amount": amount})),
        );
        assert_eq!(status, 200);
    }
    User {
        id,
        key: key["apiKey"].as_str().expect("apiKey").to_string(),
        secret: key["secretKey"].as_str().expect("secretKey").to_string(),
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A signed request; `query` without timestamp and signature.
pub fn signed(c: &mut Client, user: &User, method: &str, path: &str, query: &str) -> Response {
    let query = format!(
        "{query}{}timestamp={}",
        if query.is_empty() { "" } else { "&" },
        now_ms()
    );
    let signature = tradsys::auth::sign(user.secret.as_bytes(), query.as_bytes());
    c.send(&format!(
        "{method} {path}?{query}&signature={signature} HTTP/1.1\r\nX-MBX-APIKEY: {}\r\n\r\n",
        user.key
    ));
    c.response()
}
