//! A blocking HTTP/1.1 keep-alive client for the crash harness.
//!
//! Unlike the tests' `common::Client`, it never panics when the server
//! goes away: a request whose response did not arrive in full is `Lost`,
//! which is exactly what the harness must record for a request in flight
//! at the moment of a `kill -9`. Every read and connect is bounded.

use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// The longest a request may wait for its response.
pub const RESPONSE_TIMEOUT_MS: u64 = 10_000;
/// The longest a connect may take on loopback.
const CONNECT_TIMEOUT_MS: u64 = 2_000;

/// The admin token every harness server is started with.
pub const ADMIN_TOKEN: &str = "crash-admin-token-0123456789";

/// The response did not arrive in full: the request may or may not have
/// been carried out.
#[derive(Debug)]
pub struct Lost(pub String);

/// A complete response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Result<Value, String> {
        serde_json::from_slice(&self.body).map_err(|e| format!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }

    /// The Binance error code of a non-200 answer.
    pub fn code(&self) -> Option<i64> {
        self.json().ok()?["code"].as_i64()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One keep-alive connection.
pub struct Conn {
    stream: TcpStream,
    buffered: Vec<u8>,
}

impl Conn {
    pub fn open(addr: SocketAddr) -> Result<Conn, Lost> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_millis(CONNECT_TIMEOUT_MS))
            .map_err(|e| Lost(format!("connect {addr}: {e}")))?;
        stream
            .set_read_timeout(Some(Duration::from_millis(RESPONSE_TIMEOUT_MS)))
            .map_err(|e| Lost(e.to_string()))?;
        stream
            .set_write_timeout(Some(Duration::from_millis(RESPONSE_TIMEOUT_MS)))
            .map_err(|e| Lost(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        Ok(Conn {
            stream,
            buffered: Vec::new(),
        })
    }

    /// A second handle on the socket, to shut it down from elsewhere.
    pub fn socket(&self) -> Option<TcpStream> {
        self.stream.try_clone().ok()
    }

    /// Sends one raw request and reads its response.
    pub fn request(&mut self, raw: &[u8]) -> Result<Reply, Lost> {
        self.send(raw)?;
        self.response()
    }

    /// Sends raw bytes (one request or several, pipelined) without
    /// waiting; `response` reads the answers in order.
    pub fn send(&mut self, raw: &[u8]) -> Result<(), Lost> {
        self.stream.write_all(raw).map_err(|e| Lost(format!("write: {e}")))
    }

    fn fill(&mut self) -> Result<(), Lost> {
        let mut chunk = [0u8; 65536];
        match self.stream.read(&mut chunk) {
            Ok(0) => Err(Lost("connection closed".into())),
            Ok(n) => {
                self.buffered.extend_from_slice(&chunk[..n]);
                Ok(())
            }
            Err(e) => Err(Lost(format!("read: {e}"))),
        }
    }

    /// Reads the next response.
    pub fn response(&mut self) -> Result<Reply, Lost> {
        let head_end = loop {
            if let Some(end) = find(&self.buffered, b"\r\n\r\n") {
                break end;
            }
            self.fill()?;
        };
        let head = String::from_utf8_lossy(&self.buffered[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| Lost(format!("bad status line in {head:?}")))?;
        let length: usize = lines
            .filter_map(|l| l.split_once(':'))
            .find(|(n, _)| n.trim().eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.trim().parse().ok())
            .unwrap_or(0);
        let total = head_end + 4 + length;
        while self.buffered.len() < total {
            self.fill()?;
        }
        let body = self.buffered[head_end + 4..total].to_vec();
        self.buffered.drain(..total);
        Ok(Reply { status, body })
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A user's API key as the admin API created it.
#[derive(Clone, Debug)]
pub struct Key {
    pub user_id: u64,
    pub key: String,
    pub secret: String,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A signed request; `query` without timestamp and signature.
pub fn signed(conn: &mut Conn, key: &Key, method: &str, path: &str, query: &str) -> Result<Reply, Lost> {
    let separator = if query.is_empty() { "" } else { "&" };
    // The longest window: a loaded machine must not turn a request into -1021.
    let query = format!(
        "{query}{separator}recvWindow={}&timestamp={}",
        tradsys::auth::RECV_WINDOW_MS_MAX,
        now_ms()
    );
    let signature = tradsys::auth::sign(key.secret.as_bytes(), query.as_bytes());
    let raw = format!(
        "{method} {path}?{query}&signature={signature} HTTP/1.1\r\nHost: t\r\nX-MBX-APIKEY: {}\r\n\r\n",
        key.key
    );
    conn.request(raw.as_bytes())
}

/// An admin API request with the harness's token.
pub fn admin(conn: &mut Conn, method: &str, path: &str, body: Option<&Value>) -> Result<Reply, Lost> {
    let body = body.map(Value::to_string).unwrap_or_default();
    let raw = format!(
        "{method} {path} HTTP/1.1\r\nHost: t\r\nX-Admin-Token: {ADMIN_TOKEN}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    conn.request(raw.as_bytes())
}

/// An admin request that must succeed with 200; the JSON body.
pub fn admin_ok(conn: &mut Conn, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
    until_run(&format!("{method} {path}"), || admin(conn, method, path, body))
}

/// A signed request that must succeed with 200; the JSON body.
pub fn signed_ok(conn: &mut Conn, key: &Key, method: &str, path: &str, query: &str) -> Result<Value, String> {
    until_run(&format!("{method} {path}?{query}"), || {
        signed(conn, key, method, path, query)
    })
}

/// How often, and how far apart, a request a busy server refused before
/// running it (503 -1008, with `Retry-After`) is sent again.
const BUSY_RETRIES: u32 = 200;
const BUSY_RETRY_MS: u64 = 25;

/// The JSON body of a 200 from `send` (see `unless_busy`).
fn until_run(what: &str, send: impl FnMut() -> Result<Reply, Lost>) -> Result<Value, String> {
    let reply = unless_busy(what, send)?;
    match reply.status {
        200 => reply.json(),
        status => Err(format!("{what}: {status} {}", reply.text())),
    }
}

/// The first answer to `send` that is not a refusal before running (503
/// -1008, with `Retry-After`), sent again after each: an overload cycle's
/// server, shedding at its low limit, may refuse the checks' requests
/// too, and a refusal ran nothing, so sending again is safe for any of
/// them.
pub fn unless_busy(what: &str, mut send: impl FnMut() -> Result<Reply, Lost>) -> Result<Reply, String> {
    for _ in 0..BUSY_RETRIES {
        let reply = send().map_err(|e| format!("{what}: lost: {}", e.0))?;
        if reply.status != 503 || reply.code() != Some(crate::model::SERVER_BUSY) {
            return Ok(reply);
        }
        std::thread::sleep(Duration::from_millis(BUSY_RETRY_MS));
    }
    Err(format!("{what}: refused as busy {BUSY_RETRIES} times"))
}

/// A decimal string from a JSON field as 10⁻⁸ units.
pub fn units(v: &Value, field: &str) -> Result<i64, String> {
    let text = v[field].as_str().ok_or_else(|| format!("{field} missing in {v}"))?;
    tradsys_engine::num::parse_units(text).map_err(|e| format!("{field} {text:?}: {e}"))
}

/// 10⁻⁸ units as a decimal string.
pub fn decimal(units: i64) -> String {
    if units < 0 {
        return format!("-{}", tradsys_engine::num::units_to_string(-units));
    }
    tradsys_engine::num::units_to_string(units)
}
