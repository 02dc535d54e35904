//! Requests carried to another instance of the cluster, and their
//! answers, as bytes: what the server's links (`server::link`) put in the
//! message engine. A request whose user or market another instance owns
//! is sent whole, as the connection's shard admitted it (its weight is
//! counted where the client is connected), and run there as if it had
//! arrived on one of that instance's own connections:
//! [`answer_carried`] routes it to the owning shard and waits until what
//! it changed is durable, as a local request does.
//!
//! Admin requests travel the same way (`Carried::Admin`): an admin call
//! about another instance's user or market, authorized by the admin token
//! where it arrived, runs on the owner's admin routes.
//!
//! The encoding is length-prefixed fields, little-endian, behind a kind
//! byte (1: a Binance API request, 2: an admin request); the endpoint
//! travels as its method and path, so instances of two builds agree on it
//! or refuse it. Decoding checks every length against
//! what is left and refuses trailing bytes: a message is trusted only as
//! far as the instances sharing the engine are.

use crate::api::host::Host;
use crate::api::request::{OwnedCredentials, RestReply, RestRequest};
use crate::api::wsapi::{Authorize, AuthorizeProof};
use crate::api::{market, user_endpoint, Settle};
use crate::endpoint::{Endpoint, Security};
use crate::http::{HttpError, Method};

/// The encoding's version: the first byte of every reply and of a
/// Binance API request.
const VERSION: u8 = 1;
/// The first byte of an admin request.
const ADMIN: u8 = 2;
/// The first byte of a `session.logon` check.
const LOGON: u8 = 3;
/// The longest admin request body carried: the most any listener reads,
/// whatever `http_body_bytes_max` says.
const ADMIN_BODY_MAX: usize = crate::config::HTTP_BODY_BYTES_LIMIT;

/// What one instance carries to another: a request of the Binance API or
/// of the admin API.
#[derive(Debug)]
pub(crate) enum Carried {
    Rest(RestRequest),
    Admin(AdminRequest),
    /// A WebSocket API `session.logon` of the owner's user: its key and
    /// signature, checked there. The session then runs on the instance
    /// the client reached, and its requests are carried as the session's
    /// (`OwnedCredentials::Session`).
    Logon(Box<Authorize>),
}

/// An admin request, authorized where it arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AdminRequest {
    pub(crate) method: Method,
    pub(crate) path: String,
    pub(crate) body: Vec<u8>,
}

/// Why a message could not be read.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("link message: {0}")]
pub(crate) struct DecodeError(&'static str);

/// Why a carried request got no answer from the owning instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LinkError {
    /// The request could not be sent (the engine does not answer, or this
    /// shard has too many requests out on the link).
    Unreachable,
    /// Sent, and no answer came in time: it may have run.
    Timeout,
}

/// The answer to a request another instance owns, or why there is none.
pub(crate) fn carried_error(what: &str, instance: &crate::cluster::Instance, error: LinkError) -> HttpError {
    match error {
        LinkError::Unreachable => HttpError::new(
            503,
            crate::binance::SERVER_BUSY,
            format!(
                "{what} is served by instance {} at {}, which this instance cannot reach now; send the request there.",
                instance.id, instance.api
            ),
        ),
        LinkError::Timeout => unknown_outcome(),
    }
}

/// Binance's -1007: the answer did not come in time, and what was asked
/// may or may not have happened.
pub(crate) fn unknown_outcome() -> HttpError {
    HttpError::new(
        503,
        crate::binance::TIMEOUT,
        "Timeout waiting for response from backend server. Send status unknown; execution status unknown.",
    )
}

/// Carries `req`, about `what` (a user or market of instance `instance`,
/// `owner`), to that instance and returns its answer.
pub(crate) async fn carry(
    shard: &impl Host,
    instance: usize,
    what: &str,
    owner: &crate::cluster::Instance,
    req: crate::api::request::RequestRef<'_>,
) -> RestReply {
    match shard.call_instance(instance, Carried::Rest(req.to_request())).await {
        Ok(reply) => reply,
        Err(e) => RestReply::error(&carried_error(what, owner, e)),
    }
}

/// Runs a request another instance carried here, as a request of one of
/// this instance's connections would run after its admission.
pub(crate) async fn answer_carried(shard: &impl Host, carried: &Carried) -> RestReply {
    let request = match carried {
        Carried::Rest(request) => request,
        Carried::Admin(request) => return crate::api::admin::answer_carried(shard, request).await,
        Carried::Logon(request) => return crate::api::wsapi::answer_carried_logon(shard, (**request).clone()).await,
    };
    let req = request.borrowed();
    // The links' own probe (`GET /admin/v1/cluster`).
    if req.endpoint == Endpoint::Ping {
        return RestReply::json(b"{}".to_vec());
    }
    let params = match req.params(shard) {
        Ok(params) => params,
        Err(e) => return RestReply::error(&e),
    };
    match req.endpoint.security() {
        Security::None => market::endpoint(shard, req, &params).await,
        _ => user_endpoint(shard, req, &params, Settle::Now).await,
    }
}

pub(crate) fn encode_carried(carried: &Carried) -> Vec<u8> {
    match carried {
        Carried::Rest(request) => encode_request(request),
        Carried::Admin(request) => {
            let mut out = Vec::with_capacity(16 + request.path.len() + request.body.len());
            out.push(ADMIN);
            out.push(method_byte(request.method));
            put(&mut out, request.path.as_bytes());
            put(&mut out, &request.body);
            out
        }
        Carried::Logon(request) => encode_logon(request),
    }
}

/// A logon check as carried: the key, the signed payload and its
/// signature, timestamp and recvWindow as the client sent them, the time
/// it arrived, the scope it needs and whether only Ed25519 keys may log
/// on. A check that attaches a user data stream is never carried.
fn encode_logon(request: &Authorize) -> Vec<u8> {
    let mut out = vec![LOGON];
    put(&mut out, request.api_key.as_bytes());
    let AuthorizeProof::Signed {
        payload,
        signature,
        timestamp,
        recv_window,
    } = &request.proof
    else {
        // Only a signed logon is carried (`server::wsapi`); a session's
        // own key proves nothing on another instance.
        out.push(0);
        return out;
    };
    out.push(1);
    put(&mut out, payload);
    for text in [signature, timestamp, recv_window] {
        put_option(&mut out, text.as_deref().map(str::as_bytes));
    }
    out.extend_from_slice(&request.now_ms.to_le_bytes());
    put(&mut out, request.scope.name().as_bytes());
    out.push(u8::from(request.ed25519_only));
    out
}

fn decode_logon(bytes: &[u8]) -> Result<Authorize, DecodeError> {
    let mut r = Reader(bytes);
    let text = |field: &[u8]| String::from_utf8(field.to_vec()).map_err(|_| DecodeError("logon text"));
    let api_key = text(r.field()?)?;
    if r.byte()? != 1 {
        return Err(DecodeError("logon proof"));
    }
    let payload = r.field()?.to_vec();
    let mut optional = || -> Result<Option<String>, DecodeError> { r.option()?.map(text).transpose() };
    let (signature, timestamp, recv_window) = (optional()?, optional()?, optional()?);
    let now_ms = r.u64()?;
    let scope = std::str::from_utf8(r.field()?)
        .ok()
        .and_then(crate::auth::Scope::parse)
        .ok_or(DecodeError("logon scope"))?;
    let ed25519_only = match r.byte()? {
        0 => false,
        1 => true,
        _ => return Err(DecodeError("logon flag")),
    };
    r.end()?;
    Ok(Authorize {
        api_key,
        proof: AuthorizeProof::Signed {
            payload,
            signature,
            timestamp,
            recv_window,
        },
        now_ms,
        scope,
        attach_to: None,
        ed25519_only,
    })
}

pub(crate) fn decode_carried(bytes: &[u8]) -> Result<Carried, DecodeError> {
    match bytes.first() {
        Some(&ADMIN) => {}
        Some(&LOGON) => return decode_logon(&bytes[1..]).map(|l| Carried::Logon(Box::new(l))),
        _ => return decode_request(bytes).map(Carried::Rest),
    }
    let mut r = Reader(&bytes[1..]);
    let method = decode_method(r.byte()?)?;
    let path = std::str::from_utf8(r.field()?).map_err(|_| DecodeError("path"))?;
    if !path.starts_with("/admin/") {
        return Err(DecodeError("admin path"));
    }
    let body = r.field()?;
    if body.len() > ADMIN_BODY_MAX {
        return Err(DecodeError("admin body"));
    }
    r.end()?;
    Ok(Carried::Admin(AdminRequest {
        method,
        path: path.to_string(),
        body: body.to_vec(),
    }))
}

fn encode_request(request: &RestRequest) -> Vec<u8> {
    let (method, path) = request.endpoint.route();
    let mut out = Vec::with_capacity(64 + request.query.len() + request.body.len());
    out.push(VERSION);
    out.push(method_byte(method));
    put(&mut out, path.as_bytes());
    out.push(u8::from(request.form_body));
    out.extend_from_slice(&request.now_ms.to_le_bytes());
    put_option(&mut out, request.api_key.as_deref());
    match &request.credentials {
        OwnedCredentials::Rest => out.push(0),
        OwnedCredentials::Payload { payload, signature } => {
            out.push(1);
            put(&mut out, payload);
            put_option(&mut out, signature.as_deref().map(str::as_bytes));
        }
        OwnedCredentials::Session => out.push(2),
    }
    put(&mut out, &request.query);
    put(&mut out, &request.body);
    out
}

fn decode_request(bytes: &[u8]) -> Result<RestRequest, DecodeError> {
    let mut r = Reader(bytes);
    if r.byte()? != VERSION {
        return Err(DecodeError("unknown version"));
    }
    let method = decode_method(r.byte()?)?;
    let endpoint = Endpoint::from_request(method, r.field()?).ok_or(DecodeError("unknown endpoint"))?;
    let form_body = match r.byte()? {
        0 => false,
        1 => true,
        _ => return Err(DecodeError("form flag")),
    };
    let now_ms = r.u64()?;
    let api_key = r.option()?.map(<[u8]>::to_vec);
    let credentials = match r.byte()? {
        0 => OwnedCredentials::Rest,
        1 => OwnedCredentials::Payload {
            payload: r.field()?.to_vec(),
            signature: match r.option()? {
                Some(s) => Some(String::from_utf8(s.to_vec()).map_err(|_| DecodeError("signature"))?),
                None => None,
            },
        },
        2 => OwnedCredentials::Session,
        _ => return Err(DecodeError("unknown credentials")),
    };
    let query = r.field()?.to_vec();
    let body = r.field()?.to_vec();
    r.end()?;
    Ok(RestRequest {
        endpoint,
        query,
        body,
        form_body,
        api_key,
        credentials,
        now_ms,
    })
}

pub(crate) fn encode_reply(reply: &RestReply) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + reply.body.len());
    out.push(VERSION);
    out.extend_from_slice(&reply.status.to_le_bytes());
    out.extend_from_slice(&(reply.headers.len() as u32).to_le_bytes());
    for header in &reply.headers {
        put(&mut out, header.as_bytes());
    }
    put(&mut out, &reply.body);
    out
}

pub(crate) fn decode_reply(bytes: &[u8]) -> Result<RestReply, DecodeError> {
    let mut r = Reader(bytes);
    if r.byte()? != VERSION {
        return Err(DecodeError("unknown version"));
    }
    let status = u16::from_le_bytes([r.byte()?, r.byte()?]);
    if !(100..=599).contains(&status) {
        return Err(DecodeError("status"));
    }
    let count = r.u32()? as usize;
    // Each header takes at least its length's 4 bytes.
    if count > r.0.len() / 4 {
        return Err(DecodeError("header count"));
    }
    let mut headers = Vec::with_capacity(count);
    for _ in 0..count {
        let header = std::str::from_utf8(r.field()?).map_err(|_| DecodeError("header"))?;
        // A header line carries no line break of its own.
        if header.contains(['\r', '\n']) {
            return Err(DecodeError("header"));
        }
        headers.push(header.to_string());
    }
    let body = r.field()?.to_vec();
    r.end()?;
    Ok(RestReply { status, headers, body })
}

fn decode_method(byte: u8) -> Result<Method, DecodeError> {
    match byte {
        0 => Ok(Method::Get),
        1 => Ok(Method::Post),
        2 => Ok(Method::Put),
        3 => Ok(Method::Delete),
        _ => Err(DecodeError("unknown method")),
    }
}

fn method_byte(method: Method) -> u8 {
    match method {
        Method::Post => 1,
        Method::Put => 2,
        Method::Delete => 3,
        Method::Get | Method::Head | Method::Other => 0,
    }
}

fn put(out: &mut Vec<u8>, field: &[u8]) {
    out.extend_from_slice(&(field.len() as u32).to_le_bytes());
    out.extend_from_slice(field);
}

fn put_option(out: &mut Vec<u8>, field: Option<&[u8]>) {
    match field {
        Some(field) => {
            out.push(1);
            put(out, field);
        }
        None => out.push(0),
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.0.len() {
            return Err(DecodeError("truncated"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn byte(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(b))
    }

    fn field(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    fn option(&mut self) -> Result<Option<&'a [u8]>, DecodeError> {
        match self.byte()? {
            0 => Ok(None),
            1 => Ok(Some(self.field()?)),
            _ => Err(DecodeError("option flag")),
        }
    }

    fn end(&self) -> Result<(), DecodeError> {
        match self.0.is_empty() {
            true => Ok(()),
            false => Err(DecodeError("trailing bytes")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(credentials: OwnedCredentials) -> RestRequest {
        RestRequest {
            endpoint: Endpoint::OrderNew,
            query: b"symbol=BTCUSDT&side=BUY".to_vec(),
            body: vec![0, 255, 10, 13],
            form_body: true,
            api_key: Some(b"12345abcdef".to_vec()),
            credentials,
            now_ms: 1_765_000_000_123,
        }
    }

    fn same(a: &RestRequest, b: &RestRequest) -> bool {
        (a.endpoint, &a.query, &a.body, a.form_body, &a.api_key, a.now_ms)
            == (b.endpoint, &b.query, &b.body, b.form_body, &b.api_key, b.now_ms)
            && format!("{:?}", a.credentials) == format!("{:?}", b.credentials)
    }

    #[test]
    fn requests_and_replies_round_trip() -> Result<(), DecodeError> {
        let payload = OwnedCredentials::Payload {
            payload: b"apiKey=k&symbol=BTCUSDT".to_vec(),
            signature: Some("c2lnbmF0dXJl".into()),
        };
        for credentials in [OwnedCredentials::Rest, payload, OwnedCredentials::Session] {
            let original = request(credentials);
            let decoded = decode_request(&encode_request(&original))?;
            assert!(same(&original, &decoded), "{decoded:?}");
        }
        for endpoint in Endpoint::ALL {
            let original = RestRequest {
                endpoint,
                ..request(OwnedCredentials::Rest)
            };
            assert_eq!(decode_request(&encode_request(&original))?.endpoint, endpoint);
        }
        let reply = RestReply {
            status: 429,
            headers: vec!["Retry-After: 1".into(), "X-MBX-USED-WEIGHT-1M: 7".into()],
            body: br#"{"code":-1003,"msg":"..."}"#.to_vec(),
        };
        let decoded = decode_reply(&encode_reply(&reply))?;
        assert_eq!(
            (decoded.status, &decoded.headers, &decoded.body),
            (429, &reply.headers, &reply.body)
        );
        Ok(())
    }

    #[test]
    fn admin_requests_round_trip_and_only_admin_paths_are_read() -> Result<(), DecodeError> {
        let original = AdminRequest {
            method: Method::Post,
            path: "/admin/v1/users/5/deposits".into(),
            body: br#"{"asset":"USDT","amount":"10"}"#.to_vec(),
        };
        let encoded = encode_carried(&Carried::Admin(original.clone()));
        match decode_carried(&encoded)? {
            Carried::Admin(decoded) => assert_eq!(decoded, original),
            other => panic!("{other:?}"),
        }
        // Cut before its last byte, it is refused (cut to nothing, it is
        // read as an empty Binance API request and refused as that).
        for cut in 0..encoded.len() {
            assert!(decode_carried(&encoded[..cut]).is_err(), "cut at {cut}");
        }
        let elsewhere = AdminRequest {
            path: "/api/v3/order".into(),
            ..original
        };
        assert_eq!(
            decode_carried(&encode_carried(&Carried::Admin(elsewhere))).err(),
            Some(DecodeError("admin path"))
        );
        match decode_carried(&encode_carried(&Carried::Rest(request(OwnedCredentials::Rest))))? {
            Carried::Rest(decoded) => assert!(same(&request(OwnedCredentials::Rest), &decoded)),
            other => panic!("{other:?}"),
        }
        Ok(())
    }

    #[test]
    fn logon_checks_round_trip() -> Result<(), DecodeError> {
        let original = Authorize {
            api_key: "000000000005abc".into(),
            proof: AuthorizeProof::Signed {
                payload: b"apiKey=000000000005abc&timestamp=1765000000123".to_vec(),
                signature: Some("c2ln".into()),
                timestamp: Some("1765000000123".into()),
                recv_window: None,
            },
            now_ms: 1_765_000_000_200,
            scope: crate::auth::Scope::Read,
            attach_to: Some(3),
            ed25519_only: true,
        };
        let encoded = encode_carried(&Carried::Logon(Box::new(original.clone())));
        let Carried::Logon(decoded) = decode_carried(&encoded)? else {
            panic!("not a logon");
        };
        // What is attached is never carried.
        let expected = Authorize {
            attach_to: None,
            ..original
        };
        assert_eq!(format!("{decoded:?}"), format!("{expected:?}"));
        for cut in 1..encoded.len() {
            assert!(decode_carried(&encoded[..cut]).is_err(), "cut at {cut}");
        }
        for at in 0..encoded.len() {
            for bit in 0..8 {
                let mut flipped = encoded.clone();
                flipped[at] ^= 1 << bit;
                let _ = decode_carried(&flipped);
            }
        }
        Ok(())
    }

    #[test]
    fn every_cut_and_every_flipped_byte_is_refused_or_read_without_panic() {
        let encoded = encode_request(&request(OwnedCredentials::Rest));
        for cut in 0..encoded.len() {
            assert_eq!(
                decode_request(&encoded[..cut]).err(),
                Some(DecodeError("truncated")),
                "cut at {cut}"
            );
        }
        let mut longer = encoded.clone();
        longer.push(0);
        assert_eq!(decode_request(&longer).err(), Some(DecodeError("trailing bytes")));
        for at in 0..encoded.len() {
            for bit in 0..8 {
                let mut flipped = encoded.clone();
                flipped[at] ^= 1 << bit;
                let _ = decode_request(&flipped);
            }
        }
        let reply = encode_reply(&RestReply::json(b"{}".to_vec()));
        for cut in 0..reply.len() {
            assert!(decode_reply(&reply[..cut]).is_err(), "cut at {cut}");
        }
        let mut huge_count = vec![VERSION, 200, 0];
        huge_count.extend_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode_reply(&huge_count).err(), Some(DecodeError("header count")));
    }
}
