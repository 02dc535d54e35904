//! The WebSocket API (`/ws-api/v3`) as Binance frames it: one JSON request
//! per text frame, `{"id", "method", "params"}`, one response per request,
//! `{"id", "status", "result" | "error", "rateLimits"}`.
//!
//! A method with a REST twin is not implemented twice: [`translate`] turns
//! its parameters into the twin's query string, and the connection runs it
//! through the same code as REST (`api::run_endpoint`). What differs is how
//! a signed request proves its sender: the signature covers the parameters
//! sorted by name (Binance's rule for this API), or the session logged on
//! with `session.logon`. The session and user-data methods, which have no
//! REST twin, are answered by the connection (`server::wsapi`); this module
//! holds their vocabulary and what they run on the user's shard
//! ([`authorize`]).
//!
//! **Invariant:** every request gets exactly one response with its `id`,
//! even when the frame is not JSON (`id` null then).

use crate::api::host::Host;
use crate::auth::{self, AuthRequest, KeyType, Scope, SignedPart};
use crate::binance;
use crate::endpoint::Endpoint;
use crate::http::{HttpError, Params};
use crate::limits::RateLimits;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use tradsys_engine::order::UserId;

/// Weight of the session and user-data methods, as Binance counts them.
pub(crate) const SESSION_METHOD_WEIGHT: u32 = 2;
/// Weight of opening a WebSocket API connection, counted on the upgrade.
pub(crate) const CONNECT_WEIGHT: u32 = 2;

/// What a method name asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WsMethod {
    /// A method with a REST twin.
    Rest(Endpoint),
    SessionLogon,
    SessionStatus,
    SessionLogout,
    Subscribe,
    SubscribeSignature,
    Unsubscribe,
    Subscriptions,
    /// `session.cancelOnDisconnect` (tradsys): the session's user's orders
    /// on the markets named are canceled when the session ends.
    CancelOnDisconnect,
    /// `userDataStream.start/ping/stop`: retired by Binance on 2026-02-20.
    Retired,
}

/// Method names and what they run. Binance lets a name carry its version
/// (`v3/order.place`); [`method`] strips it.
const METHODS: &[(&str, WsMethod)] = &[
    ("ping", WsMethod::Rest(Endpoint::Ping)),
    ("time", WsMethod::Rest(Endpoint::Time)),
    ("exchangeInfo", WsMethod::Rest(Endpoint::ExchangeInfo)),
    ("depth", WsMethod::Rest(Endpoint::Depth)),
    ("trades.recent", WsMethod::Rest(Endpoint::Trades)),
    ("trades.historical", WsMethod::Rest(Endpoint::HistoricalTrades)),
    ("trades.aggregate", WsMethod::Rest(Endpoint::AggTrades)),
    ("klines", WsMethod::Rest(Endpoint::Klines)),
    ("uiKlines", WsMethod::Rest(Endpoint::UiKlines)),
    ("avgPrice", WsMethod::Rest(Endpoint::AvgPrice)),
    ("ticker.24hr", WsMethod::Rest(Endpoint::Ticker24hr)),
    ("ticker.price", WsMethod::Rest(Endpoint::TickerPrice)),
    ("ticker.book", WsMethod::Rest(Endpoint::TickerBookTicker)),
    ("ticker", WsMethod::Rest(Endpoint::TickerRolling)),
    ("ticker.tradingDay", WsMethod::Rest(Endpoint::TickerTradingDay)),
    ("order.place", WsMethod::Rest(Endpoint::OrderNew)),
    ("order.test", WsMethod::Rest(Endpoint::OrderTest)),
    ("order.status", WsMethod::Rest(Endpoint::OrderQuery)),
    ("order.cancel", WsMethod::Rest(Endpoint::OrderCancel)),
    ("order.cancelReplace", WsMethod::Rest(Endpoint::OrderCancelReplace)),
    ("order.amend.keepPriority", WsMethod::Rest(Endpoint::OrderAmend)),
    ("order.amendments", WsMethod::Rest(Endpoint::OrderAmendments)),
    (
        "openOrders.countdownCancelAll",
        WsMethod::Rest(Endpoint::CountdownCancelAll),
    ),
    ("mmp.set", WsMethod::Rest(Endpoint::MmpSet)),
    ("mmp.status", WsMethod::Rest(Endpoint::MmpQuery)),
    ("mmp.reset", WsMethod::Rest(Endpoint::MmpReset)),
    ("mmp.delete", WsMethod::Rest(Endpoint::MmpDelete)),
    ("openOrders.status", WsMethod::Rest(Endpoint::OpenOrders)),
    ("openOrders.cancelAll", WsMethod::Rest(Endpoint::OpenOrdersCancel)),
    ("account.status", WsMethod::Rest(Endpoint::Account)),
    ("account.rateLimits.orders", WsMethod::Rest(Endpoint::RateLimitOrder)),
    ("allOrders", WsMethod::Rest(Endpoint::AllOrders)),
    ("orderList.place", WsMethod::Rest(Endpoint::OrderOco)),
    ("orderList.place.oco", WsMethod::Rest(Endpoint::OrderListOco)),
    ("orderList.place.oto", WsMethod::Rest(Endpoint::OrderListOto)),
    ("orderList.place.otoco", WsMethod::Rest(Endpoint::OrderListOtoco)),
    ("orderList.cancel", WsMethod::Rest(Endpoint::OrderListCancel)),
    ("orderList.status", WsMethod::Rest(Endpoint::OrderListQuery)),
    ("allOrderLists", WsMethod::Rest(Endpoint::AllOrderList)),
    ("openOrderLists.status", WsMethod::Rest(Endpoint::OpenOrderList)),
    ("myTrades", WsMethod::Rest(Endpoint::MyTrades)),
    ("session.logon", WsMethod::SessionLogon),
    ("session.status", WsMethod::SessionStatus),
    ("session.logout", WsMethod::SessionLogout),
    ("userDataStream.subscribe", WsMethod::Subscribe),
    ("userDataStream.subscribe.signature", WsMethod::SubscribeSignature),
    ("userDataStream.unsubscribe", WsMethod::Unsubscribe),
    ("session.subscriptions", WsMethod::Subscriptions),
    ("session.cancelOnDisconnect", WsMethod::CancelOnDisconnect),
    ("userDataStream.start", WsMethod::Retired),
    ("userDataStream.ping", WsMethod::Retired),
    ("userDataStream.stop", WsMethod::Retired),
];

/// The method a request names, if tradsys serves it.
pub(crate) fn method(name: &str) -> Option<WsMethod> {
    let name = name.strip_prefix("v3/").unwrap_or(name);
    METHODS.iter().find(|(n, _)| *n == name).map(|&(_, m)| m)
}

/// One request frame, decoded. Everything borrows the frame's text.
#[derive(Debug)]
pub(crate) struct WsRequest<'a> {
    /// The request's `id` as JSON, exactly as sent, to echo back.
    pub(crate) id: &'a str,
    pub(crate) method: WsMethod,
    /// Each parameter's JSON text exactly as sent (a signature covers the
    /// values as the client wrote them: `5e-05` stays `5e-05`), sorted by
    /// name; of a name sent twice, the last value counts.
    pub(crate) params: Vec<(Cow<'a, str>, &'a RawValue)>,
}

/// A frame that is not a request this API serves: the `id` to answer with
/// (`null` when it could not be read) and the error.
#[derive(Debug)]
pub(crate) struct Rejected<'a> {
    pub(crate) id: &'a str,
    pub(crate) error: HttpError,
}

/// A frame's fields; anything else in it is ignored, as Binance does.
#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(default, borrow)]
    id: Option<&'a RawValue>,
    #[serde(default, borrow)]
    method: Option<&'a RawValue>,
    #[serde(default, borrow)]
    params: Option<&'a RawValue>,
}

/// Decodes a request frame. `id` must be an integer, a string or null, as
/// Binance allows; `params`, when present, an object.
pub(crate) fn parse(text: &str) -> Result<WsRequest<'_>, Rejected<'_>> {
    let invalid = || Rejected {
        id: "null",
        error: HttpError::new(400, binance::INVALID_JSON, "Invalid JSON Request"),
    };
    // serde would also read a struct from an array; a request is an object.
    if !text.trim_start().starts_with('{') {
        return Err(invalid());
    }
    let frame: Frame = serde_json::from_str(text).map_err(|_| invalid())?;
    let id = match frame.id.map(RawValue::get) {
        None => "null",
        Some(raw) if raw.starts_with('"') || raw.parse::<i64>().is_ok() || raw.parse::<u64>().is_ok() => raw,
        Some(_) => {
            return Err(Rejected {
                id: "null",
                error: HttpError::from(auth::AuthError::Mandatory("id")),
            })
        }
    };
    let Some(name) = frame.method.and_then(|raw| json_str(raw.get())) else {
        return Err(Rejected {
            id,
            error: HttpError::from(auth::AuthError::Mandatory("method")),
        });
    };
    let Some(method) = method(&name) else {
        let error = HttpError::new(400, binance::UNSUPPORTED_OPERATION, format!("Unknown method '{name}'."));
        return Err(Rejected { id, error });
    };
    let params = match frame.params.map(RawValue::get) {
        None => Vec::new(),
        Some(raw) => {
            serde_json::from_str::<ParamList>(raw)
                .map_err(|_| Rejected {
                    id,
                    error: HttpError::new(
                        400,
                        binance::INVALID_JSON,
                        "JSON sent for parameter 'params' is not valid",
                    ),
                })?
                .0
        }
    };
    Ok(WsRequest { id, method, params })
}

/// The value of a JSON string (`raw` is the string's JSON text, quotes
/// included), borrowed unless it holds escapes; `None` if `raw` is not a
/// string.
fn json_str(raw: &str) -> Option<Cow<'_, str>> {
    let inner = raw.strip_prefix('"')?.strip_suffix('"')?;
    if !inner.contains('\\') {
        // JSON text that was parsed already: without a backslash, what is
        // between the quotes is the value itself.
        return Some(Cow::Borrowed(inner));
    }
    serde_json::from_str::<String>(raw).ok().map(Cow::Owned)
}

/// `params`: an object read into name-sorted pairs that borrow the frame.
struct ParamList<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de: 'a, 'a> Deserialize<'de> for ParamList<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ParamListVisitor(std::marker::PhantomData))
    }
}

struct ParamListVisitor<'a>(std::marker::PhantomData<&'a ()>);

impl<'de: 'a, 'a> serde::de::Visitor<'de> for ParamListVisitor<'a> {
    type Value = ParamList<'a>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an object of parameters")
    }

    fn visit_map<M: serde::de::MapAccess<'de>>(self, mut map: M) -> Result<ParamList<'a>, M::Error> {
        let mut pairs: Vec<(Cow<'a, str>, &'a RawValue)> = Vec::with_capacity(map.size_hint().unwrap_or(16));
        while let Some((Name(name), value)) = map.next_entry::<Name<'a>, &'a RawValue>()? {
            pairs.push((name, value));
        }
        // Stable: of equal names the one sent last ends up last, and wins.
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        let mut deduped: Vec<(Cow<'a, str>, &'a RawValue)> = Vec::with_capacity(pairs.len());
        for pair in pairs {
            match deduped.last_mut() {
                Some(last) if last.0 == pair.0 => *last = pair,
                _ => deduped.push(pair),
            }
        }
        Ok(ParamList(deduped))
    }
}

/// A parameter name, borrowed from the frame unless it holds escapes.
struct Name<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Name<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(NameVisitor(std::marker::PhantomData))
    }
}

struct NameVisitor<'a>(std::marker::PhantomData<&'a ()>);

impl<'de: 'a, 'a> serde::de::Visitor<'de> for NameVisitor<'a> {
    type Value = Name<'a>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a parameter name")
    }

    fn visit_borrowed_str<E: serde::de::Error>(self, name: &'de str) -> Result<Name<'a>, E> {
        Ok(Name(Cow::Borrowed(name)))
    }

    fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<Name<'a>, E> {
        Ok(Name(Cow::Owned(name.to_owned())))
    }
}

/// A request's parameters as its REST twin and its signature see them.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Translated<'a> {
    /// The REST query string (percent-encoded, in name order), without
    /// `apiKey`, `signature` and `returnRateLimits`: what travels when the
    /// request runs on another shard.
    pub(crate) query: Vec<u8>,
    /// The same parameters decoded, as the REST twin reads them.
    pub(crate) pairs: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    /// What the signature covers: every parameter but `signature`, sorted
    /// by name, `name=value` joined with `&`, values as sent.
    pub(crate) payload: Vec<u8>,
    pub(crate) api_key: Option<Cow<'a, str>>,
    pub(crate) signature: Option<Cow<'a, str>>,
    /// `returnRateLimits`, when the request sets it.
    pub(crate) return_rate_limits: Option<bool>,
}

impl Translated<'_> {
    /// The REST twin's parameters, borrowed.
    pub(crate) fn params(&self) -> Params<'_> {
        Params::from_pairs(
            self.pairs
                .iter()
                .map(|(name, value)| (Cow::Borrowed(&**name), Cow::Borrowed(&**value)))
                .collect(),
        )
    }
}

/// Turns a request's parameters into its REST twin's. Values are strings,
/// numbers or booleans (Binance's DECIMAL parameters come as strings, INT
/// and LONG as numbers); an array (`symbols`) becomes its JSON text, as
/// REST takes it; `null` counts as not sent. `params_count_max` bounds them
/// as it bounds a query string.
pub(crate) fn translate<'a>(
    params: &[(Cow<'a, str>, &'a RawValue)],
    params_count_max: usize,
) -> Result<Translated<'a>, HttpError> {
    if params.len() > params_count_max {
        return Err(HttpError::new(
            400,
            binance::TOO_MANY_PARAMETERS,
            format!("Too many parameters; maximum is {params_count_max}."),
        ));
    }
    let mut out = Translated {
        pairs: Vec::with_capacity(params.len()),
        query: Vec::with_capacity(256),
        payload: Vec::with_capacity(256),
        ..Translated::default()
    };
    // `params` is sorted by name: the payload is written as it goes.
    for (name, value) in params {
        let raw = value.get();
        let text: Cow<'a, str> = match raw.as_bytes().first() {
            Some(b'n') => continue,
            Some(b'"') => json_str(raw).ok_or_else(|| not_json(name))?,
            Some(b'{') => return Err(not_json(name)),
            // Numbers, booleans and arrays: the text as sent.
            _ => Cow::Borrowed(raw),
        };
        match &**name {
            "signature" => {
                out.signature = Some(text);
                continue;
            }
            "apiKey" => out.api_key = Some(text.clone()),
            "returnRateLimits" => match raw {
                "true" | "false" => out.return_rate_limits = Some(raw == "true"),
                _ => {
                    let msg = "Illegal characters found in parameter 'returnRateLimits'; legal range is 'true, false'.";
                    return Err(HttpError::new(400, binance::ILLEGAL_CHARS, msg));
                }
            },
            _ => {
                if !out.query.is_empty() {
                    out.query.push(b'&');
                }
                percent_encode(name.as_bytes(), &mut out.query);
                out.query.push(b'=');
                percent_encode(text.as_bytes(), &mut out.query);
                out.pairs.push((name.clone(), text.clone()));
            }
        }
        if !out.payload.is_empty() {
            out.payload.push(b'&');
        }
        out.payload.extend_from_slice(name.as_bytes());
        out.payload.push(b'=');
        out.payload.extend_from_slice(text.as_bytes());
    }
    Ok(out)
}

fn not_json(name: &str) -> HttpError {
    HttpError::new(
        400,
        binance::INVALID_JSON,
        format!("JSON sent for parameter '{name}' is not valid"),
    )
}

/// Escapes everything but RFC 3986's unreserved characters, so that
/// `Params::parse` gives back exactly `raw`.
fn percent_encode(raw: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in raw {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 0x0f)]]);
        }
    }
}

/// The counters one request touched, for `rateLimits`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) weight_1m: Option<u32>,
    pub(crate) orders_10s: Option<u32>,
    pub(crate) orders_1d: Option<u32>,
}

impl Counts {
    /// Reads the ORDERS counts from the rate-limit headers the user's shard
    /// put on its reply (they crossed the mesh as headers, like REST's).
    pub(crate) fn add_order_headers(&mut self, headers: &[String]) {
        for header in headers {
            let Some((name, value)) = header.split_once(": ") else {
                continue;
            };
            let value = value.trim().parse().ok();
            if name == binance::HEADER_ORDER_COUNT_10S {
                self.orders_10s = value;
            } else if name == binance::HEADER_ORDER_COUNT_1D {
                self.orders_1d = value;
            }
        }
    }
}

/// The `Retry-After` seconds of a refused request, if it carries one.
pub(crate) fn retry_after_s(headers: &[String]) -> Option<u64> {
    headers
        .iter()
        .find_map(|h| h.strip_prefix("Retry-After: "))
        .and_then(|s| s.trim().parse().ok())
}

/// Appends one response's JSON to `out`. `body` is the REST twin's body:
/// the result on success, Binance's `{"code","msg"}` error object otherwise
/// (`status` ≥ 400). A 429 or 418 error carries `data` with the time to
/// retry, as Binance sends it.
pub(crate) fn render(
    out: &mut Vec<u8>,
    id: &str,
    status: u16,
    body: &[u8],
    counts: Option<&Counts>,
    limits: &RateLimits,
    retry_after_ms: Option<(u64, u64)>,
) {
    out.reserve(body.len() + 256);
    out.extend_from_slice(b"{\"id\":");
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(b",\"status\":");
    out.extend_from_slice(itoa::Buffer::new().format(status).as_bytes());
    if status < 400 {
        out.extend_from_slice(b",\"result\":");
        out.extend_from_slice(body);
    } else {
        out.extend_from_slice(b",\"error\":");
        match retry_after_ms {
            // `{"code":..,"msg":..}` gains `"data":{..}` before its brace.
            Some((server_time_ms, retry_after_ms)) if body.ends_with(b"}") => {
                out.extend_from_slice(&body[..body.len() - 1]);
                out.extend_from_slice(b",\"data\":{\"serverTime\":");
                out.extend_from_slice(itoa::Buffer::new().format(server_time_ms).as_bytes());
                out.extend_from_slice(b",\"retryAfter\":");
                out.extend_from_slice(itoa::Buffer::new().format(retry_after_ms).as_bytes());
                out.extend_from_slice(b"}}");
            }
            _ => out.extend_from_slice(body),
        }
    }
    if let Some(counts) = counts {
        out.extend_from_slice(b",\"rateLimits\":");
        write_rate_limits(out, counts, limits);
    }
    out.push(b'}');
}

/// Binance's order: ORDERS (10 s, day), then REQUEST_WEIGHT.
fn write_rate_limits(out: &mut Vec<u8>, counts: &Counts, limits: &RateLimits) {
    let entries = [
        ("ORDERS", "SECOND", 10, limits.orders_per_10s_max, counts.orders_10s),
        ("ORDERS", "DAY", 1, limits.orders_per_day_max, counts.orders_1d),
        (
            "REQUEST_WEIGHT",
            "MINUTE",
            1,
            limits.request_weight_per_minute_max,
            counts.weight_1m,
        ),
    ];
    out.push(b'[');
    let mut first = true;
    for (kind, interval, interval_num, limit, count) in entries {
        let Some(count) = count else { continue };
        if !first {
            out.push(b',');
        }
        first = false;
        // The names are fixed identifiers: nothing to escape.
        let mut number = itoa::Buffer::new();
        out.extend_from_slice(b"{\"rateLimitType\":\"");
        out.extend_from_slice(kind.as_bytes());
        out.extend_from_slice(b"\",\"interval\":\"");
        out.extend_from_slice(interval.as_bytes());
        out.extend_from_slice(b"\",\"intervalNum\":");
        out.extend_from_slice(number.format(interval_num).as_bytes());
        out.extend_from_slice(b",\"limit\":");
        out.extend_from_slice(number.format(limit).as_bytes());
        out.extend_from_slice(b",\"count\":");
        out.extend_from_slice(number.format(count).as_bytes());
        out.push(b'}');
    }
    out.push(b']');
}

/// What `session.logon` and the user data subscriptions ask of the user's
/// shard: check the key (and the signature), and for a subscription count
/// it against the user's cap and route the user's events to the socket's
/// shard.
#[derive(Clone, Debug)]
pub(crate) struct Authorize {
    pub(crate) api_key: String,
    pub(crate) proof: AuthorizeProof,
    pub(crate) now_ms: u64,
    pub(crate) scope: Scope,
    /// `Some(shard)` to start sending the user's events to that shard.
    pub(crate) attach_to: Option<usize>,
    /// `session.logon` takes Ed25519 keys only, as on Binance.
    pub(crate) ed25519_only: bool,
}

/// How an [`Authorize`] proves the key's holder sent it.
#[derive(Clone, Debug)]
pub(crate) enum AuthorizeProof {
    /// Signed like any SIGNED request of this API.
    Signed {
        payload: Vec<u8>,
        signature: Option<String>,
        timestamp: Option<String>,
        recv_window: Option<String>,
    },
    /// The key the session logged on with (`userDataStream.subscribe`).
    Session,
}

/// Who the key belongs to, once the user's shard accepted it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Grant {
    pub(crate) user: UserId,
    pub(crate) api_key: String,
}

/// Runs [`Authorize`] on the user's shard.
pub(crate) fn authorize(shard: &impl Host, request: &Authorize) -> Result<Grant, HttpError> {
    let (signed, needs_signature) = match &request.proof {
        AuthorizeProof::Signed {
            payload,
            signature,
            timestamp,
            recv_window,
        } => (
            AuthRequest {
                api_key: Some(request.api_key.as_bytes()),
                signed: SignedPart::Payload {
                    payload,
                    signature: signature.as_deref(),
                },
                timestamp: timestamp.as_deref(),
                recv_window: recv_window.as_deref(),
            },
            true,
        ),
        // The session's logon checked the key's signature; a USER_STREAM
        // method then needs the key alone, as on Binance.
        AuthorizeProof::Session => (
            AuthRequest {
                api_key: Some(request.api_key.as_bytes()),
                signed: SignedPart::Session,
                timestamp: None,
                recv_window: None,
            },
            false,
        ),
    };
    let context = auth::authenticate(
        shard.trading().keys(),
        &signed,
        request.scope,
        needs_signature,
        request.now_ms,
    )
    .map_err(HttpError::from)?;
    if request.ed25519_only && context.key_type != KeyType::Ed25519 {
        return Err(HttpError::new(
            400,
            binance::UNSUPPORTED_OPERATION,
            "Only Ed25519 API keys are supported for session.logon.",
        ));
    }
    if let Some(to) = request.attach_to {
        if !shard.attach_user_stream(context.user_id, to) {
            return Err(HttpError::new(
                429,
                binance::TOO_MANY_REQUESTS,
                "Too many user data streams for this account; close some and retry.",
            ));
        }
    }
    Ok(Grant {
        user: context.user_id,
        api_key: context.key,
    })
}

/// Runs [`Authorize`] on the shard of this instance that holds `user`.
pub(crate) async fn authorize_on_shard(
    shard: &impl Host,
    user: UserId,
    request: Authorize,
) -> Result<Grant, HttpError> {
    use crate::api::peer::{PeerCall, PeerReply};
    let owner = shard.trading().user_shard(user) as usize;
    if owner == shard.index() {
        return authorize(shard, &request);
    }
    match shard.call(owner, PeerCall::Authorize(Box::new(request))).await {
        Ok(PeerReply::Authorize(result)) => result,
        _ => Err(crate::api::request::unavailable()),
    }
}

/// Runs a `session.logon` another instance carried here for a user of
/// this one: the user's shard checks the key and signature, as for a logon
/// on this instance. The answer is the grant as JSON, `{"userId":
/// ...,"apiKey":"..."}`, or the refusal; nothing is attached (the user's
/// events are made here and are not relayed).
pub(crate) async fn answer_carried_logon(shard: &impl Host, request: Authorize) -> crate::api::request::RestReply {
    use crate::api::request::RestReply;
    if !shard.is_ready() {
        return RestReply::error(&crate::api::starting());
    }
    let request = Authorize {
        attach_to: None,
        ..request
    };
    let granted = async {
        let user =
            auth::user_of_key(request.api_key.as_bytes()).ok_or(HttpError::from(auth::AuthError::ApiKeyRejected))?;
        if let Some((_, instance)) = shard.trading().user_elsewhere(user) {
            // The instances' maps disagree: answer rather than bounce.
            return Err(crate::api::request::elsewhere(&format!("User {user}"), instance));
        }
        authorize_on_shard(shard, user, request).await
    };
    match granted.await {
        Ok(grant) => {
            let mut w = crate::json::JsonWriter::default();
            w.begin_object()
                .field_uint("userId", grant.user)
                .field_str("apiKey", &grant.api_key)
                .end_object();
            RestReply::json(w.into_bytes())
        }
        Err(e) => RestReply::error(&e),
    }
}

/// The grant (or refusal) another instance answered to a carried
/// `session.logon`.
pub(crate) fn carried_grant(reply: &crate::api::request::RestReply) -> Result<Grant, HttpError> {
    let body: serde_json::Value =
        serde_json::from_slice(&reply.body).map_err(|_| crate::api::request::unavailable())?;
    if reply.status != 200 {
        let code = body["code"].as_i64().and_then(|c| i32::try_from(c).ok());
        return match (code, body["msg"].as_str()) {
            (Some(code), Some(msg)) => Err(HttpError::new(reply.status, code, msg)),
            _ => Err(crate::api::request::unavailable()),
        };
    }
    match (body["userId"].as_u64(), body["apiKey"].as_str()) {
        (Some(user), Some(api_key)) => Ok(Grant {
            user,
            api_key: api_key.to_string(),
        }),
        _ => Err(crate::api::request::unavailable()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_names_with_and_without_version() {
        let table: &[(&str, Option<WsMethod>)] = &[
            ("order.place", Some(WsMethod::Rest(Endpoint::OrderNew))),
            ("v3/order.place", Some(WsMethod::Rest(Endpoint::OrderNew))),
            ("session.logon", Some(WsMethod::SessionLogon)),
            ("userDataStream.start", Some(WsMethod::Retired)),
            ("v1/order.place", None),
            ("ORDER.PLACE", None),
            ("", None),
        ];
        for (name, expected) in table {
            assert_eq!(method(name), *expected, "{name}");
        }
    }

    #[test]
    fn parse_rejects_with_the_id_it_could_read() {
        let table: &[(&str, &str, i32)] = &[
            ("not json", "null", binance::INVALID_JSON),
            ("[1,2]", "null", binance::INVALID_JSON),
            (
                r#"{"id":1.5,"method":"ping"}"#,
                "null",
                binance::MANDATORY_PARAM_EMPTY_OR_MALFORMED,
            ),
            (
                r#"{"id":{},"method":"ping"}"#,
                "null",
                binance::MANDATORY_PARAM_EMPTY_OR_MALFORMED,
            ),
            (r#"{"id":7}"#, "7", binance::MANDATORY_PARAM_EMPTY_OR_MALFORMED),
            (r#"{"id":"a","method":"nope"}"#, "\"a\"", binance::UNSUPPORTED_OPERATION),
            (r#"{"id":-3,"method":"ping","params":[1]}"#, "-3", binance::INVALID_JSON),
        ];
        for (text, id, code) in table {
            let rejected = parse(text).expect_err(text);
            assert_eq!((rejected.id, rejected.error.code), (*id, *code), "{text}");
        }
        let ok = parse(r#"{"id":null,"method":"v3/time"}"#).expect("time");
        assert_eq!(
            (ok.id, ok.method, ok.params.len()),
            ("null", WsMethod::Rest(Endpoint::Time), 0)
        );
    }

    #[test]
    fn translate_builds_the_rest_query_and_the_sorted_payload() {
        let request = parse(
            r#"{"id":1,"method":"order.place","params":{"symbol":"BTCUSDT","side":"SELL","type":"LIMIT",
            "timeInForce":"GTC","quantity":"0.01000000","price":"52000.00","newClientOrderId":"a/b:c",
            "timestamp":1655716096498,"apiKey":"KEY","returnRateLimits":false,"signature":"abc","note":null}}"#,
        )
        .expect("request");
        let t = translate(&request.params, 100).expect("translated");
        assert_eq!(
            String::from_utf8(t.query.clone()).expect("utf8"),
            "newClientOrderId=a%2Fb%3Ac&price=52000.00&quantity=0.01000000&side=SELL&symbol=BTCUSDT\
             &timeInForce=GTC&timestamp=1655716096498&type=LIMIT"
        );
        assert_eq!(
            String::from_utf8(t.payload.clone()).expect("utf8"),
            "apiKey=KEY&newClientOrderId=a/b:c&price=52000.00&quantity=0.01000000&returnRateLimits=false\
             &side=SELL&symbol=BTCUSDT&timeInForce=GTC&timestamp=1655716096498&type=LIMIT"
        );
        assert_eq!(
            (t.api_key.as_deref(), t.signature.as_deref(), t.return_rate_limits),
            (Some("KEY"), Some("abc"), Some(false))
        );
        let params = t.params();
        assert_eq!(
            (params.len(), params.get("newClientOrderId"), params.get("apiKey")),
            (8, Some("a/b:c"), None)
        );
    }

    #[test]
    fn names_and_values_are_unescaped_sorted_and_the_last_of_a_name_wins() {
        let request =
            parse(r#"{"id":"a\"b","method":"time","params":{"b":"2","a\u0041":"x\ny","b":"3"}}"#).expect("request");
        assert_eq!(request.id, r#""a\"b""#);
        let names: Vec<(&str, &str)> = request.params.iter().map(|(n, v)| (&**n, v.get())).collect();
        assert_eq!(names, vec![("aA", r#""x\ny""#), ("b", r#""3""#)]);
        let t = translate(&request.params, 10).expect("translated");
        let pairs: Vec<(&str, &str)> = t.pairs.iter().map(|(n, v)| (&**n, &**v)).collect();
        assert_eq!(pairs, vec![("aA", "x\ny"), ("b", "3")]);
        assert_eq!(t.query, b"aA=x%0Ay&b=3".to_vec());
        assert_eq!(t.payload, b"aA=x\ny&b=3".to_vec());
    }

    #[test]
    fn numbers_are_signed_as_sent() {
        let request = parse(r#"{"id":1,"method":"order.place","params":{"quantity":5e-05,"price": 1.50 ,"x":true}}"#)
            .expect("request");
        let t = translate(&request.params, 10).expect("translated");
        assert_eq!(
            String::from_utf8(t.payload.clone()).expect("utf8"),
            "price=1.50&quantity=5e-05&x=true"
        );
        assert_eq!(
            String::from_utf8(t.query).expect("utf8"),
            "price=1.50&quantity=5e-05&x=true"
        );
    }

    #[test]
    fn translate_refuses_objects_and_too_many_parameters() {
        let request = parse(r#"{"id":1,"method":"depth","params":{"symbol":{"a":1}}}"#).expect("request");
        assert_eq!(
            translate(&request.params, 10).map_err(|e| e.code),
            Err(binance::INVALID_JSON)
        );
        let request = parse(r#"{"id":1,"method":"depth","params":{"a":1,"b":2,"c":3}}"#).expect("request");
        assert_eq!(
            translate(&request.params, 2).map_err(|e| e.code),
            Err(binance::TOO_MANY_PARAMETERS)
        );
        let request = parse(r#"{"id":1,"method":"time","params":{"returnRateLimits":"no"}}"#).expect("request");
        assert_eq!(
            translate(&request.params, 2).map_err(|e| e.code),
            Err(binance::ILLEGAL_CHARS)
        );
        let request = parse(r#"{"id":1,"method":"ticker.price","params":{"symbols":["A","B"]}}"#).expect("request");
        let t = translate(&request.params, 2).expect("translated");
        assert_eq!(t.query, b"symbols=%5B%22A%22%2C%22B%22%5D".to_vec());
    }

    #[test]
    fn render_frames_results_errors_and_rate_limits() {
        let limits = RateLimits {
            request_weight_per_minute_max: 6000,
            orders_per_10s_max: 100,
            orders_per_day_max: 200_000,
            raw_requests_per_5m_max: 61_000,
        };
        let counts = Counts {
            weight_1m: Some(3),
            orders_10s: Some(1),
            orders_1d: Some(2),
        };
        let rendered = |id: &str, status: u16, body: &[u8], counts: Option<&Counts>, retry: Option<(u64, u64)>| {
            let mut out = Vec::new();
            render(&mut out, id, status, body, counts, &limits, retry);
            String::from_utf8(out).expect("utf8")
        };
        assert_eq!(
            rendered("1", 200, b"{}", Some(&counts), None),
            r#"{"id":1,"status":200,"result":{},"rateLimits":[{"rateLimitType":"ORDERS","interval":"SECOND","intervalNum":10,"limit":100,"count":1},{"rateLimitType":"ORDERS","interval":"DAY","intervalNum":1,"limit":200000,"count":2},{"rateLimitType":"REQUEST_WEIGHT","interval":"MINUTE","intervalNum":1,"limit":6000,"count":3}]}"#
        );
        assert_eq!(
            rendered("\"x\"", 400, br#"{"code":-1102,"msg":"m"}"#, None, None),
            r#"{"id":"x","status":400,"error":{"code":-1102,"msg":"m"}}"#
        );
        assert_eq!(
            rendered("null", 429, br#"{"code":-1003,"msg":"m"}"#, None, Some((10, 2000))),
            r#"{"id":null,"status":429,"error":{"code":-1003,"msg":"m","data":{"serverTime":10,"retryAfter":2000}}}"#
        );
    }

    #[test]
    fn order_counts_come_from_the_reply_headers() {
        let mut counts = Counts::default();
        counts.add_order_headers(&[
            "X-MBX-ORDER-COUNT-10S: 4".to_string(),
            "X-MBX-ORDER-COUNT-1D: 9".to_string(),
            "Retry-After: 3".to_string(),
        ]);
        assert_eq!((counts.orders_10s, counts.orders_1d), (Some(4), Some(9)));
        assert_eq!(retry_after_s(&["Retry-After: 3".to_string()]), Some(3));
    }
}
