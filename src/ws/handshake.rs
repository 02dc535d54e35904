//! The WebSocket opening handshake (RFC 6455 §4.2) without I/O: given the
//! method and the handshake headers of a parsed HTTP/1.1 request, decide
//! whether it asks for an upgrade and answer it.
//!
//! The HTTP layer fills an [`UpgradeRequest`] while it walks the headers
//! and calls [`negotiate`]. A request without `Upgrade: websocket` is plain
//! HTTP (`Ok(None)`) and is routed as usual; which paths accept an upgrade
//! (`/ws/<stream>`, `/stream`) is the API layer's decision, not this
//! module's. Neither an extension nor a subprotocol is ever accepted.
//!
//! Errors are Binance-style `{"code":-1000,"msg":..}` bodies: every failed
//! handshake uses -1000 (UNKNOWN), the code tradsys gives malformed HTTP,
//! with status 405 for a method other than GET and 400 for bad headers.
//! A wrong version also carries `Sec-WebSocket-Version: 13` (§4.4) so the
//! client can retry with a version we speak.

use crate::binance;
#[cfg(test)]
use crate::http;
use crate::http::{HttpError, Method, UpgradeRequest};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use sha1::{Digest, Sha1};

/// The GUID that RFC 6455 §1.3 appends to the key before hashing.
const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// The only protocol version RFC 6455 defines.
const VERSION: &[u8] = b"13";
/// §4.1: the key is the base64 of a 16-byte nonce.
const KEY_NONCE_BYTES: usize = 16;
/// Base64 of 16 bytes is 24 characters; a longer value cannot be a key.
const KEY_BYTES_MAX: usize = 24;

impl<'a> UpgradeRequest<'a> {
    #[cfg(test)]
    pub(crate) fn new(method: Method) -> UpgradeRequest<'a> {
        UpgradeRequest {
            method,
            upgrade: None,
            connection: None,
            key: None,
            version: None,
        }
    }

    /// Records `name: value` if it is one of the handshake headers, so the
    /// HTTP layer can pass every header through in one loop.
    #[cfg(test)]
    pub(crate) fn header(&mut self, name: &str, value: &'a [u8]) {
        if name.eq_ignore_ascii_case("upgrade") {
            self.upgrade = Some(value);
        } else if name.eq_ignore_ascii_case("connection") {
            // A client may split Connection over several lines; keep the
            // one that names the upgrade.
            if !self.connection.is_some_and(|v| has_token(v, b"upgrade")) {
                self.connection = Some(value);
            }
        } else if name.eq_ignore_ascii_case("sec-websocket-key") {
            self.key = Some(value);
        } else if name.eq_ignore_ascii_case("sec-websocket-version") {
            self.version = Some(value);
        }
    }
}

/// A handshake that succeeded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Accept {
    /// The `Sec-WebSocket-Accept` value.
    pub(crate) accept: String,
}

impl Accept {
    /// Appends the `101 Switching Protocols` response.
    pub(crate) fn encode_response(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ",
        );
        out.extend_from_slice(self.accept.as_bytes());
        out.extend_from_slice(b"\r\n\r\n");
    }
}

/// Why an upgrade was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HandshakeError {
    MethodNotGet,
    ConnectionNotUpgrade,
    KeyMissing,
    KeyMalformed,
    VersionUnsupported,
}

impl HandshakeError {
    pub(crate) fn http_error(self) -> HttpError {
        let (status, msg) = match self {
            HandshakeError::MethodNotGet => (405, "A WebSocket upgrade must use GET."),
            HandshakeError::ConnectionNotUpgrade => (400, "A WebSocket upgrade needs 'Connection: Upgrade'."),
            HandshakeError::KeyMissing => (400, "Missing Sec-WebSocket-Key."),
            HandshakeError::KeyMalformed => (400, "Sec-WebSocket-Key must be the base64 of 16 bytes."),
            HandshakeError::VersionUnsupported => (400, "Unsupported Sec-WebSocket-Version; use 13."),
        };
        HttpError::new(status, binance::UNKNOWN, msg)
    }

    /// The headers the error response must carry besides the body's.
    pub(crate) fn headers(self) -> &'static [&'static str] {
        match self {
            HandshakeError::MethodNotGet => &["Allow: GET"],
            HandshakeError::VersionUnsupported => &["Sec-WebSocket-Version: 13"],
            _ => &[],
        }
    }

    /// Appends the full error response.
    #[cfg(test)]
    pub(crate) fn encode_response(self, out: &mut Vec<u8>) {
        http::encode_error(out, &self.http_error(), self.headers(), false);
    }
}

/// `Ok(None)`: not an upgrade request. `Ok(Some(accept))`: switch protocols.
pub(crate) fn negotiate(request: &UpgradeRequest) -> Result<Option<Accept>, HandshakeError> {
    if !request.upgrade.is_some_and(|v| has_token(v, b"websocket")) {
        return Ok(None);
    }
    if request.method != Method::Get {
        return Err(HandshakeError::MethodNotGet);
    }
    if !request.connection.is_some_and(|v| has_token(v, b"upgrade")) {
        return Err(HandshakeError::ConnectionNotUpgrade);
    }
    if request.version.map(<[u8]>::trim_ascii) != Some(VERSION) {
        return Err(HandshakeError::VersionUnsupported);
    }
    let key = request.key.ok_or(HandshakeError::KeyMissing)?.trim_ascii();
    check_key(key)?;
    Ok(Some(Accept {
        accept: accept_value(key),
    }))
}

fn check_key(key: &[u8]) -> Result<(), HandshakeError> {
    if key.len() != KEY_BYTES_MAX {
        return Err(HandshakeError::KeyMalformed);
    }
    let mut nonce = [0u8; KEY_BYTES_MAX];
    match BASE64.decode_slice(key, &mut nonce) {
        Ok(KEY_NONCE_BYTES) => Ok(()),
        _ => Err(HandshakeError::KeyMalformed),
    }
}

/// base64(SHA-1(key ‖ GUID)), RFC 6455 §4.2.2.
pub(crate) fn accept_value(key: &[u8]) -> String {
    let mut sha1 = Sha1::new();
    sha1.update(key);
    sha1.update(ACCEPT_GUID);
    BASE64.encode(sha1.finalize())
}

/// Whether the comma-separated header `value` lists `token` (any case).
fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    const RFC_KEY: &[u8] = b"dGhlIHNhbXBsZSBub25jZQ==";

    fn valid() -> UpgradeRequest<'static> {
        UpgradeRequest {
            method: Method::Get,
            upgrade: Some(b"websocket"),
            connection: Some(b"Upgrade"),
            key: Some(RFC_KEY),
            version: Some(b"13"),
        }
    }

    /// The value RFC 6455 §1.3 derives, step by step, for its sample key.
    const RFC_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

    #[test]
    fn rfc_example_accept() {
        assert_eq!(accept_value(RFC_KEY), RFC_ACCEPT);
        let accept = negotiate(&valid()).unwrap().unwrap();
        let mut out = Vec::new();
        accept.encode_response(&mut out);
        assert_eq!(
            out,
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
        );
    }

    #[test]
    fn header_loop_fills_the_request() {
        let headers: &[(&str, &[u8])] = &[
            ("Host", b"x"),
            ("UPGRADE", b"WebSocket"),
            ("Connection", b"keep-alive"),
            ("connection", b"Upgrade"),
            ("Connection", b"close"),
            ("Sec-WebSocket-Key", b" dGhlIHNhbXBsZSBub25jZQ== "),
            ("Sec-WebSocket-Version", b"13"),
        ];
        let mut request = UpgradeRequest::new(Method::Get);
        for (name, value) in headers {
            request.header(name, value);
        }
        assert_eq!(request.connection, Some(&b"Upgrade"[..]));
        let accept = negotiate(&request).unwrap().unwrap();
        assert_eq!(accept.accept, RFC_ACCEPT);
    }

    #[test]
    fn outcomes() {
        type Case = (fn(&mut UpgradeRequest<'static>), Result<bool, HandshakeError>);
        let table: &[Case] = &[
            (|_| {}, Ok(true)),
            (|r| r.upgrade = None, Ok(false)),
            (|r| r.upgrade = Some(b"h2c"), Ok(false)),
            (|r| r.upgrade = Some(b"foo, websocket"), Ok(true)),
            (|r| r.connection = Some(b"keep-alive, Upgrade"), Ok(true)),
            (|r| r.method = Method::Post, Err(HandshakeError::MethodNotGet)),
            (|r| r.method = Method::Head, Err(HandshakeError::MethodNotGet)),
            (|r| r.connection = None, Err(HandshakeError::ConnectionNotUpgrade)),
            (
                |r| r.connection = Some(b"keep-alive"),
                Err(HandshakeError::ConnectionNotUpgrade),
            ),
            (|r| r.key = None, Err(HandshakeError::KeyMissing)),
            (|r| r.key = Some(b""), Err(HandshakeError::KeyMalformed)),
            // 15 and 17 bytes of nonce, and not base64 at all.
            (
                |r| r.key = Some(b"AAAAAAAAAAAAAAAAAAAA"),
                Err(HandshakeError::KeyMalformed),
            ),
            (
                |r| r.key = Some(b"AAAAAAAAAAAAAAAAAAAAAAA="),
                Err(HandshakeError::KeyMalformed),
            ),
            (
                |r| r.key = Some(b"dGhlIHNhbXBsZSBub25jZQ!!"),
                Err(HandshakeError::KeyMalformed),
            ),
            (
                |r| r.key = Some(b"dGhlIHNhbXBsZSBub25jZQ==AAAA"),
                Err(HandshakeError::KeyMalformed),
            ),
            (|r| r.version = None, Err(HandshakeError::VersionUnsupported)),
            (|r| r.version = Some(b"8"), Err(HandshakeError::VersionUnsupported)),
            (|r| r.version = Some(b"13, 8"), Err(HandshakeError::VersionUnsupported)),
        ];
        for (i, (edit, expected)) in table.iter().enumerate() {
            let mut request = valid();
            edit(&mut request);
            let outcome = negotiate(&request).map(|a| a.is_some());
            assert_eq!(outcome, *expected, "case {i}: {request:?}");
        }
    }

    #[test]
    fn error_responses() {
        let body = |code: i32, msg: &str| format!("{{\"code\":{code},\"msg\":\"{msg}\"}}");
        let table = [
            (
                HandshakeError::MethodNotGet,
                "405 Method Not Allowed",
                "Allow: GET\r\n",
                body(-1000, "A WebSocket upgrade must use GET."),
            ),
            (
                HandshakeError::VersionUnsupported,
                "400 Bad Request",
                "Sec-WebSocket-Version: 13\r\n",
                body(-1000, "Unsupported Sec-WebSocket-Version; use 13."),
            ),
            (
                HandshakeError::KeyMalformed,
                "400 Bad Request",
                "",
                body(-1000, "Sec-WebSocket-Key must be the base64 of 16 bytes."),
            ),
        ];
        for (error, status, extra, body) in table {
            let mut out = Vec::new();
            error.encode_response(&mut out);
            let expected = format!(
                "HTTP/1.1 {status}\r\nContent-Type: application/json;charset=UTF-8\r\nContent-Length: {}\r\n{extra}\r\n{body}",
                body.len()
            );
            assert_eq!(String::from_utf8(out).unwrap(), expected);
        }
    }
}
