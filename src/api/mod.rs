//! The API layer: what each request means and what it answers, run on the
//! shard that owns the data.
//!
//! `handle` routes a framed request on the API listener: /health, /ready
//! and /metrics, then the Binance endpoints, whose weight it counts before
//! sending market requests to the market's shard and signed requests to
//! the user's shard (through [`Host::call`] when that is another shard).
//! [`answer`] runs what another shard's API sent here. Everything in this
//! layer is written against [`Host`], the shard it runs on.
//!
//! **Invariant:** the API layer renders every REST and admin body;
//! below it only `http` (error bodies) and `streams` (stream events) write
//! JSON, and the engine never sees it.

pub(crate) mod admin;
pub(crate) mod exchange_info;
pub(crate) mod export;
mod history;
pub(crate) mod host;
pub(crate) mod jobs;
pub(crate) mod klines;
pub(crate) mod link;
mod lists;
pub(crate) mod market;
pub(crate) mod params;
pub(crate) mod peer;
pub(crate) mod request;
mod transfers;
pub(crate) mod user;
mod wallet;
pub(crate) mod webhooks;
pub(crate) mod weights;
pub(crate) mod wsapi;

use crate::api::host::Host;
use crate::api::peer::{CallError, PeerCall, PeerReply};
use crate::api::request::{RequestRef, RestReply};
use crate::binance;
use crate::endpoint::{Endpoint, Security};
use crate::http::{self, Head, HttpError, Method, Params, CONTENT_JSON, CONTENT_PROMETHEUS};
use crate::limits::{Refusal, Usage};
use crate::metrics::{self, Route};
use crate::overload::Priority;
use std::net::IpAddr;

/// What a handler answers.
pub(crate) struct Reply {
    pub(crate) route: Route,
    pub(crate) status: u16,
    pub(crate) content_type: &'static str,
    pub(crate) headers: Headers,
    pub(crate) body: Body,
}

pub(crate) enum Headers {
    Static(&'static [&'static str]),
    Owned(Vec<String>),
}

pub(crate) enum Body {
    Static(&'static [u8]),
    Owned(Vec<u8>),
    /// A file the connection streams (a finished export): the body is its
    /// content, read as it is sent.
    File(std::path::PathBuf),
}

impl Body {
    pub(crate) fn as_bytes(&self) -> &[u8] {
        match self {
            Body::Static(b) => b,
            Body::Owned(b) => b,
            Body::File(_) => &[],
        }
    }
}

impl Reply {
    fn json(route: Route, body: Body) -> Reply {
        Reply {
            route,
            status: 200,
            content_type: CONTENT_JSON,
            headers: Headers::Static(&[]),
            body,
        }
    }

    pub(crate) fn error(route: Route, error: &HttpError) -> Reply {
        Reply {
            route,
            status: error.status,
            content_type: CONTENT_JSON,
            headers: Headers::Static(&[]),
            body: Body::Owned(http::error_body(error.code, &error.msg).into_bytes()),
        }
    }

    pub(crate) fn rest(route: Route, reply: RestReply) -> Reply {
        Reply {
            route,
            status: reply.status,
            content_type: CONTENT_JSON,
            headers: Headers::Owned(reply.headers),
            body: Body::Owned(reply.body),
        }
    }
}

/// Answers one framed request on the API listener.
pub(crate) async fn handle(shard: &impl Host, buf: &[u8], head: &Head, peer: IpAddr) -> Reply {
    let path = &buf[head.path.clone()];
    let fixed = match path {
        b"/health" => Some(Route::Health),
        b"/ready" => Some(Route::Ready),
        b"/metrics" => Some(Route::Metrics),
        _ => None,
    };
    if let Some(route) = fixed {
        if !matches!(head.method, Method::Get | Method::Head) {
            let mut reply = Reply::error(
                route,
                &HttpError::new(405, binance::UNSUPPORTED_OPERATION, "Method not allowed; use GET."),
            );
            reply.headers = Headers::Static(&["Allow: GET, HEAD"]);
            return reply;
        }
        return match route {
            Route::Health => Reply::json(route, Body::Static(b"{\"status\":\"ok\"}")),
            Route::Ready => ready(shard),
            // Never shed, as health checks: a scrape is one request an
            // interval, and an overloaded shard is when it matters most.
            _ => gather_metrics(shard).await,
        };
    }
    if !shard.is_ready() {
        return Reply::error(Route::NotFound, &starting());
    }
    match Endpoint::from_request(head.method, path) {
        // Before the parameters are parsed or the signature checked.
        Some(endpoint) if !shard.admits(Priority::of(endpoint)) => shed(Route::Api(endpoint)),
        Some(endpoint) => rest_endpoint(shard, buf, head, endpoint, peer).await,
        None => unknown_path(path),
    }
}

/// The answer to a request the shard sheds (see `overload`): 503 -1008
/// with `Retry-After`, as Binance sheds load.
/// The body is a constant: a refusal costs no formatting.
pub(crate) fn shed(route: Route) -> Reply {
    Reply {
        route,
        status: 503,
        content_type: CONTENT_JSON,
        headers: Headers::Static(&["Retry-After: 1"]),
        body: Body::Static(SHED_BODY),
    }
}

/// [`overloaded`] as a body.
const SHED_BODY: &[u8] = b"{\"code\":-1008,\"msg\":\"Server is currently overloaded with other requests. Please try again in a few minutes.\"}";

/// 503 -1008: the shard sheds load.
pub(crate) fn overloaded() -> HttpError {
    HttpError::new(503, binance::SERVER_BUSY, binance::MSG_SERVER_BUSY)
}

fn unknown_path(path: &[u8]) -> Reply {
    let known = Endpoint::ALL.iter().filter(|e| e.route().1.as_bytes() == path);
    let allowed: Vec<String> = known.map(|e| format!("{:?}", e.route().0).to_uppercase()).collect();
    if allowed.is_empty() {
        let msg = format!("Unknown path {}.", String::from_utf8_lossy(path));
        return Reply::error(
            Route::NotFound,
            &HttpError::new(404, binance::UNSUPPORTED_OPERATION, msg),
        );
    }
    let msg = format!("Method not allowed; use {}.", allowed.join(" or "));
    let mut reply = Reply::error(
        Route::NotFound,
        &HttpError::new(405, binance::UNSUPPORTED_OPERATION, msg),
    );
    reply.headers = Headers::Owned(vec![format!("Allow: {}", allowed.join(", "))]);
    reply
}

async fn rest_endpoint(shard: &impl Host, buf: &[u8], head: &Head, endpoint: Endpoint, peer: IpAddr) -> Reply {
    let route = Route::Api(endpoint);
    let params = match params(shard, buf, head) {
        Ok(p) => p,
        Err(e) => return Reply::error(route, &e),
    };
    let req = RequestRef {
        endpoint,
        query: &buf[head.query.clone()],
        body: &buf[head.body.clone()],
        form_body: head.form_body,
        api_key: head.api_key.clone().map(|r| &buf[r]),
        credentials: request::Credentials::Rest,
        now_ms: crate::clock::now_ms(),
    };
    let (mut reply, usage) = run_endpoint(shard, req, &params, peer, Settle::Now).await;
    let Some(usage) = usage else {
        return reply;
    };
    let header = format!("{}: {}", binance::HEADER_USED_WEIGHT_1M, usage.used_weight_1m);
    match &mut reply.headers {
        Headers::Owned(headers) => headers.push(header),
        Headers::Static(_) => reply.headers = Headers::Owned(vec![header]),
    }
    reply
}

/// When a request that ran on this shard waits for what it changed to be
/// durable (see `durability`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Settle {
    /// Before it returns: one request, one answer.
    Now,
    /// The caller settles once for a batch of requests before any of their
    /// answers leaves (the WebSocket API answers a frame's worth together).
    Later,
}

/// Runs one request to a Binance endpoint, REST or WebSocket API alike:
/// counts its weight against `peer` (or refuses it), then answers it here
/// or on the shard that owns its data. Returns the counts it was admitted
/// with, `None` when it was refused.
pub(crate) async fn run_endpoint(
    shard: &impl Host,
    req: RequestRef<'_>,
    params: &Params<'_>,
    peer: IpAddr,
    settle: Settle,
) -> (Reply, Option<Usage>) {
    let endpoint = req.endpoint;
    let route = Route::Api(endpoint);
    let weight = weights::weight(endpoint, &weights::WeightParams::from_params(params));
    let usage = match shard.admit_request(peer, weight, req.now_ms).await {
        Ok(usage) => usage,
        Err(refusal) => return (Reply::rest(route, refused(refusal)), None),
    };
    if endpoint.changes_state() && shard.journal_full() {
        return (Reply::rest(route, RestReply::error(&journal_full())), Some(usage));
    }
    let reply = match endpoint {
        Endpoint::Ping => Reply::json(route, Body::Static(b"{}")),
        Endpoint::Time => Reply::json(
            route,
            Body::Owned(format!("{{\"serverTime\":{}}}", req.now_ms).into_bytes()),
        ),
        Endpoint::ExchangeInfo => exchange_info::exchange_info(shard, params).await,
        Endpoint::SystemStatus => Reply::json(route, Body::Static(wallet::system_status(shard.is_draining()))),
        _ if endpoint.security() == Security::None => Reply::rest(route, market::endpoint(shard, req, params).await),
        Endpoint::ExportDownload => {
            let reply = user_endpoint(shard, req, params, settle).await;
            if reply.status != 200 {
                return (Reply::rest(route, reply), Some(usage));
            }
            // The user's shard answered with the file's path (see
            // `api::jobs::download`): this shard streams it.
            let path = std::path::PathBuf::from(String::from_utf8_lossy(&reply.body).into_owned());
            let id = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("export")
                .to_string();
            Reply {
                route,
                status: 200,
                content_type: "text/csv",
                headers: Headers::Owned(vec![format!(
                    "Content-Disposition: attachment; filename=\"trades-{id}.csv\""
                )]),
                body: Body::File(path),
            }
        }
        _ => {
            let reply = user_endpoint(shard, req, params, settle).await;
            if is_auth_failure(&reply) {
                shard.auth_failed(peer, req.now_ms).await;
            }
            Reply::rest(route, reply)
        }
    };
    (reply, Some(usage))
}

/// Whether a reply refused the request's API key or signature: a strike
/// towards a ban of its IP (`limits::Bans`).
fn is_auth_failure(reply: &RestReply) -> bool {
    if reply.status != 400 && reply.status != 401 {
        return false;
    }
    binance::AUTH_FAILURES
        .iter()
        .any(|code| reply.body.starts_with(format!("{{\"code\":{code},").as_bytes()))
}

/// A signed or API-key request: to the shard of the user the key names.
pub(crate) async fn user_endpoint(
    shard: &impl Host,
    req: RequestRef<'_>,
    params: &Params<'_>,
    settle: Settle,
) -> RestReply {
    let malformed = || {
        RestReply::error(&HttpError::new(
            401,
            binance::BAD_API_KEY_FMT,
            "API-key format invalid.",
        ))
    };
    let Some(key) = req.api_key else {
        return malformed();
    };
    let well_formed =
        !key.is_empty() && key.len() <= crate::auth::API_KEY_BYTES_MAX && key.iter().all(u8::is_ascii_graphic);
    if !well_formed {
        return malformed();
    }
    // A well-formed key that names no user was never issued here.
    let Some(user) = crate::auth::user_of_key(key) else {
        return RestReply::error(&HttpError::new(
            401,
            binance::REJECTED_MBX_KEY,
            binance::MSG_REJECTED_KEY,
        ));
    };
    let elsewhere = shard
        .trading()
        .user_elsewhere(user)
        .map(|(i, owner)| (i, owner.clone()));
    if let Some((instance, owner)) = elsewhere {
        let what = format!("User {user}");
        // A finished export is a file on the owner's disk: fetched there.
        if req.endpoint == Endpoint::ExportDownload {
            return RestReply::error(&request::elsewhere(&what, &owner));
        }
        return link::carry(shard, instance, &what, &owner, req).await;
    }
    let owner = shard.trading().user_shard(user) as usize;
    if owner == shard.index() {
        let reply = user::request_parsed(shard, req, params).await;
        if settle == Settle::Now {
            shard.settle().await;
        }
        return reply;
    }
    call_rest(shard, owner, req).await
}

/// Runs `req` on shard `owner` and returns its rendered reply.
pub(crate) async fn call_rest(shard: &impl Host, owner: usize, req: RequestRef<'_>) -> RestReply {
    shard.metrics_mut().mesh_sent += 1;
    match shard.call(owner, PeerCall::Rest(Box::new(req.to_request()))).await {
        Ok(PeerReply::Rest(reply)) => {
            shard.metrics_mut().mesh_received += 1;
            *reply
        }
        Err(CallError::Overloaded(_)) => RestReply::error(&request::trading_error(crate::trading::TradingError::Busy)),
        Ok(_) | Err(_) => RestReply::error(&request::unavailable()),
    }
}

/// Runs signed requests whose users shard `owner` holds, as the WebSocket
/// API hands them over from one read: each is admitted here as
/// [`run_endpoint`] admits it, and the admitted ones travel in one call,
/// run there one after the other in order, and settle there once. One
/// reply per request, in order; the counts it was admitted with, `None`
/// when it was refused.
pub(crate) async fn run_on_owner(
    shard: &impl Host,
    owner: usize,
    requests: &[(RequestRef<'_>, Params<'_>)],
    peer: IpAddr,
) -> Vec<(RestReply, Option<Usage>)> {
    let mut admitted = Vec::with_capacity(requests.len());
    let mut shipped = Vec::with_capacity(requests.len());
    for (req, params) in requests {
        let weight = weights::weight(req.endpoint, &weights::WeightParams::from_params(params));
        admitted.push(match shard.admit_request(peer, weight, req.now_ms).await {
            Ok(usage) => {
                shipped.push(req.to_request());
                Ok(usage)
            }
            Err(refusal) => Err(refused(refusal)),
        });
    }
    let expected = shipped.len();
    let replies = if shipped.is_empty() {
        Vec::new()
    } else {
        shard.metrics_mut().mesh_sent += 1;
        match shard.call(owner, PeerCall::RestBatch(shipped)).await {
            Ok(PeerReply::RestBatch(replies)) if replies.len() == expected => {
                shard.metrics_mut().mesh_received += 1;
                replies
            }
            Err(CallError::Overloaded(_)) => (0..expected)
                .map(|_| RestReply::error(&request::trading_error(crate::trading::TradingError::Busy)))
                .collect(),
            Ok(_) | Err(_) => (0..expected)
                .map(|_| RestReply::error(&request::unavailable()))
                .collect(),
        }
    };
    let mut replies = replies.into_iter();
    admitted
        .into_iter()
        .map(|admission| match admission {
            Ok(usage) => (
                replies
                    .next()
                    .unwrap_or_else(|| RestReply::error(&request::unavailable())),
                Some(usage),
            ),
            Err(refusal) => (refusal, None),
        })
        .collect()
}

/// Puts the full exchangeInfo and the 24 h statistics of every market in
/// the cache (and in Redis), so that the first clients after a start find
/// them there. Run once per shard when every shard is ready; what fails
/// is simply filled by the first request instead.
pub(crate) async fn warm_cache(shard: &impl Host) {
    let _ = exchange_info::all_symbols(shard).await;
    let req = RequestRef {
        endpoint: Endpoint::Ticker24hr,
        query: b"",
        body: b"",
        form_body: false,
        api_key: None,
        credentials: request::Credentials::Rest,
        now_ms: crate::clock::now_ms(),
    };
    // In a cluster of several instances the tickers of every market need
    // the others, which may not be up yet: a start does not wait on them,
    // and the first request fills the cache instead.
    let several = shard
        .trading()
        .cluster_place()
        .is_some_and(|p| p.map.instances.len() > 1);
    if several {
        return;
    }
    if let Ok(params) = Params::parse(b"", None, shard.http_limits().params_count_max) {
        let _ = market::every_ticker(shard, req, &params).await;
    }
}

/// The reply to a request that admission refused: 503 while the shard
/// sheds load, Binance's 429 with `Retry-After` over a rate limit.
pub(crate) fn refused(refusal: Refusal) -> RestReply {
    match refusal {
        Refusal::Busy => RestReply::error(&request::trading_error(crate::trading::TradingError::Busy)),
        Refusal::Limited(exceeded) => {
            let mut reply = RestReply::error(&HttpError::from(exceeded.clone()));
            reply.headers.push(exceeded.retry_after_header());
            reply
        }
    }
}

/// 503 -1008 for work that changes state while the journal's disk is
/// full (see `server::start::run_committer`).
pub(crate) fn journal_full() -> HttpError {
    HttpError::new(503, binance::SERVER_BUSY, binance::MSG_JOURNAL_FULL)
}

/// The answer to everything but /health, /ready and /metrics while the
/// shard is still recovering its state.
pub(crate) fn starting() -> HttpError {
    HttpError::new(
        503,
        binance::SERVICE_SHUTTING_DOWN,
        "Service starting; try again shortly.",
    )
}

fn ready(shard: &impl Host) -> Reply {
    if shard.is_draining() {
        let error = HttpError::new(503, binance::SERVICE_SHUTTING_DOWN, "Service shutting down.");
        return Reply::error(Route::Ready, &error);
    }
    if !shard.is_ready() {
        let error = HttpError::new(503, binance::SERVICE_SHUTTING_DOWN, "Service starting.");
        return Reply::error(Route::Ready, &error);
    }
    Reply::json(Route::Ready, Body::Static(b"{\"status\":\"ready\"}"))
}

async fn gather_metrics(shard: &impl Host) -> Reply {
    let mut snapshots = Vec::with_capacity(shard.shards());
    for peer in 0..shard.shards() {
        if peer == shard.index() {
            snapshots.push(shard.metrics_snapshot());
            continue;
        }
        shard.metrics_mut().mesh_sent += 1;
        match shard.call(peer, PeerCall::Metrics).await {
            Ok(PeerReply::Metrics(snapshot)) => {
                shard.metrics_mut().mesh_received += 1;
                snapshots.push(*snapshot);
            }
            Ok(_) | Err(_) => {
                let error = HttpError::new(
                    503,
                    binance::DISCONNECTED,
                    "Metrics unavailable: a shard did not answer.",
                );
                return Reply::error(Route::Metrics, &error);
            }
        }
    }
    Reply {
        content_type: CONTENT_PROMETHEUS,
        ..Reply::json(Route::Metrics, Body::Owned(metrics::render(&snapshots).into_bytes()))
    }
}

/// Runs a call another shard's API sent here, and settles before the
/// answer leaves (see `durability`).
pub(crate) async fn answer(shard: &impl Host, call: PeerCall) -> PeerReply {
    match call {
        PeerCall::Metrics => PeerReply::Metrics(Box::new(shard.metrics_snapshot())),
        PeerCall::Rest(request) => {
            let req = request.borrowed();
            let reply = match req.endpoint.security() {
                Security::None => market::request(shard, req).await,
                _ => user::request(shard, req).await,
            };
            shard.settle().await;
            PeerReply::Rest(Box::new(reply))
        }
        PeerCall::RestBatch(requests) => {
            let mut replies = Vec::with_capacity(requests.len());
            for request in &requests {
                replies.push(user::request(shard, request.borrowed()).await);
            }
            shard.settle().await;
            PeerReply::RestBatch(replies)
        }
        PeerCall::Admin(call) => {
            let reply = admin::run_local(shard, *call);
            shard.settle().await;
            PeerReply::Admin(Box::new(reply))
        }
        PeerCall::Authorize(request) => PeerReply::Authorize(wsapi::authorize(shard, &request)),
        PeerCall::Jobs(call) => PeerReply::Jobs(Box::new(jobs::run_local(shard, call).await)),
        PeerCall::Candles { query, source } => PeerReply::Candles(klines::local_candles(shard, &query, source).await),
        PeerCall::FirstTrade { symbol, store } => {
            PeerReply::FirstTrade(klines::local_first_trade(shard, &symbol, store).await)
        }
        PeerCall::Reference { market, side } => PeerReply::Reference(shard.trading().reference_price(market, side)),
        PeerCall::Guard { user, session, markets } => {
            let armed = shard.trading_mut().arm_guard(user, session, markets);
            shard.flush_engine();
            shard.settle().await;
            PeerReply::Guard(armed.map_err(request::trading_error))
        }
        PeerCall::GuardRelease { user, session } => {
            shard.trading_mut().release_guard(user, session, crate::clock::now_ms());
            shard.flush_engine();
            shard.settle().await;
            PeerReply::Guard(Ok(()))
        }
        PeerCall::Fragments { request, markets } => {
            let entries = market::local_fragments(shard, request.borrowed(), &markets).unwrap_or_default();
            shard.settle().await;
            PeerReply::Fragments(entries)
        }
    }
}

/// The request's parameters: query string first, then a form body.
pub(crate) fn params<'a>(shard: &impl Host, buf: &'a [u8], head: &Head) -> Result<Params<'a>, HttpError> {
    let body = head.form_body.then(|| &buf[head.body.clone()]);
    Params::parse(&buf[head.query.clone()], body, shard.http_limits().params_count_max)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_shed_body_is_the_overloaded_error() {
        let error = super::overloaded();
        assert_eq!(
            std::str::from_utf8(super::SHED_BODY),
            Ok(crate::http::error_body(error.code, &error.msg).as_str())
        );
    }
}
