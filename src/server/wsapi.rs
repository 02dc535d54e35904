//! A WebSocket API session (`/ws-api/v3`): what one connection remembers
//! between requests — the key it logged on with, its user data stream
//! subscriptions, whether responses carry `rateLimits` — and the methods
//! that read or change it. Methods with a REST twin run through
//! `api::run_endpoint` like REST requests; `api::wsapi` frames them.
//!
//! The connection (`wsconn`) hands over every whole request of a read and
//! then settles once before their answers leave (`api::Settle::Later`), so
//! that a client sending many orders on one socket waits for one durable
//! commit, not one per order. Answers keep the order of the requests.
//!
//! A subscription's events come from the user's shard to this shard only
//! (the routing the listen-key streams use); ending the session ends its
//! subscriptions, each with `eventStreamTerminated` while the socket can
//! still carry it.

use crate::api::host::Host;
use crate::api::peer::{PeerCall, PeerReply};
use crate::api::request::{Credentials, RestReply};
use crate::api::wsapi::{self, Authorize, Counts, Grant, Translated, WsMethod, WsRequest};
use crate::api::{self, Settle};
use crate::auth::{AuthError, Scope};
use crate::binance;
use crate::endpoint::{Endpoint, Security};
use crate::http::{HttpError, Params};
use crate::json::JsonWriter;
use crate::limits::{RateLimits, Usage};
use crate::server::publish;
use crate::server::shard::Shard;
use crate::streams::{Delivery, Outbound};
use crate::ws;
use std::net::IpAddr;
use std::rc::Rc;
use tradsys_engine::order::UserId;

/// Active user data stream subscriptions one session may hold (Binance's).
pub(crate) const WS_API_SUBSCRIPTIONS_PER_SESSION_MAX: usize = 1_000;
/// Subscription ids one session may use over its life (Binance's).
pub(crate) const WS_API_SUBSCRIPTION_IDS_MAX: u32 = 65_535;

/// What a `/ws-api/v3` URL asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct WsApiOptions {
    /// `returnRateLimits=false` in the URL: responses leave out
    /// `rateLimits` unless a request asks for them.
    pub(crate) return_rate_limits: bool,
}

/// Boxed text, not `String`: an idle session's bytes count (issue target:
/// a logged-on session with a subscription costs at most 512 bytes more
/// than a market stream connection).
struct Logon {
    api_key: Box<str>,
    user: UserId,
    since_ms: u64,
}

#[derive(Clone, Copy)]
struct Subscription {
    id: u32,
    user: UserId,
    /// Started by `userDataStream.subscribe` on the logged-on key: it ends
    /// with `session.logout`.
    logon: bool,
}

/// One connection's session.
pub(crate) struct Session {
    peer: IpAddr,
    connected_since_ms: u64,
    return_rate_limits: bool,
    logon: Option<Logon>,
    subscriptions: Vec<Subscription>,
    ids_used: u32,
    /// `eventStreamTerminated` frames of subscriptions ended by the requests
    /// being answered: they follow the answers, as on Binance.
    trailing: Vec<Rc<[u8]>>,
    /// A request of a user owned here ran without settling: the answers
    /// must wait for durability (`api::Settle::Later`). Requests that ran
    /// on another shard settled there.
    unsettled: bool,
    /// Cancel on disconnect: the user whose orders this session guards
    /// (`session.cancelOnDisconnect`), and the session's random id, under
    /// which the user's shard journals the guard.
    guard: Option<UserId>,
    id: u64,
}

/// What a method answered: HTTP status, body (result or error object) and
/// the counters it touched.
struct Answer {
    status: u16,
    body: Vec<u8>,
    counts: Counts,
    retry_after_s: Option<u64>,
}

impl Answer {
    fn error(error: &HttpError, counts: Counts) -> Answer {
        Answer {
            status: error.status,
            body: crate::http::error_body(error.code, &error.msg).into_bytes(),
            counts,
            retry_after_s: None,
        }
    }

    fn ok(body: Vec<u8>, counts: Counts) -> Answer {
        Answer {
            status: 200,
            body,
            counts,
            retry_after_s: None,
        }
    }

    fn rest(reply: RestReply, counts: Counts) -> Answer {
        let mut counts = counts;
        counts.add_order_headers(&reply.headers);
        Answer {
            status: reply.status,
            retry_after_s: wsapi::retry_after_s(&reply.headers),
            body: reply.body,
            counts,
        }
    }
}

impl Session {
    pub(crate) fn new(peer: IpAddr, options: WsApiOptions) -> Session {
        Session {
            peer,
            connected_since_ms: crate::clock::now_ms(),
            return_rate_limits: options.return_rate_limits,
            logon: None,
            subscriptions: Vec::new(),
            ids_used: 0,
            trailing: Vec::new(),
            unsettled: false,
            guard: None,
            id: 0,
        }
    }

    /// Answers the request frames of one read, in order, appending each
    /// answer's frame to `frames`. The caller settles (see
    /// [`Session::take_unsettled`]) before the frames leave. Consecutive
    /// signed requests of users another shard holds go there in one call.
    pub(crate) async fn answer_all(&mut self, shard: &Shard, out: &Rc<Outbound>, texts: &[&str], frames: &mut Vec<u8>) {
        let limits = shard.exchange_info().limits;
        let count_max = shard.http_limits().params_count_max;
        let prepared: Vec<Prepared> = texts.iter().map(|text| prepare(shard, text, count_max)).collect();
        let mut scratch = Vec::new();
        let mut i = 0;
        while i < prepared.len() {
            let answers = match self.remote_owner(shard, &prepared[i]) {
                Some(owner) => {
                    let mut end = i + 1;
                    while end < prepared.len() && self.remote_owner(shard, &prepared[end]) == Some(owner) {
                        end += 1;
                    }
                    self.run_remote(shard, owner, &prepared[i..end]).await
                }
                None => vec![self.answer_one(shard, out, &prepared[i]).await],
            };
            for answer in answers {
                let Some(request) = prepared.get(i) else { break };
                scratch.clear();
                self.render(&mut scratch, request, answer, &limits);
                ws::encode_text_json(frames, &scratch);
                i += 1;
            }
        }
    }

    /// Renders `answer` to `request` as the response's JSON.
    fn render(&self, out: &mut Vec<u8>, request: &Prepared, answer: Answer, limits: &RateLimits) {
        let now_ms = crate::clock::now_ms();
        let retry = answer.retry_after_s.map(|s| (now_ms, now_ms + s * 1000));
        let show = match request {
            Prepared::Ready { translated, .. } => translated.return_rate_limits.unwrap_or(self.return_rate_limits),
            Prepared::Failed { .. } => false,
        };
        let counts = (show && answer.counts != Counts::default()).then_some(&answer.counts);
        wsapi::render(out, request.id(), answer.status, &answer.body, counts, limits, retry);
    }

    /// One request, run here (or, for a user on another shard, there
    /// through `api::run_endpoint`).
    async fn answer_one(&mut self, shard: &Shard, out: &Rc<Outbound>, request: &Prepared<'_>) -> Answer {
        let (request, t) = match request {
            Prepared::Ready { request, translated } => (request, translated),
            Prepared::Failed { error, .. } => return Answer::error(error, Counts::default()),
        };
        let endpoint = match request.method {
            WsMethod::Rest(endpoint) => endpoint,
            WsMethod::Retired => {
                let msg = "userDataStream.start, .ping and .stop are no longer available; \
                           use userDataStream.subscribe or userDataStream.subscribe.signature.";
                let error = HttpError::new(400, binance::UNSUPPORTED_OPERATION, msg);
                return Answer::error(&error, Counts::default());
            }
            method => return self.session_method(shard, out, method, t).await,
        };
        self.rest_twin(shard, endpoint, t).await
    }

    /// The key a request with a REST twin is signed with, or the session's,
    /// and how the request proves it; `Err` when it needs one and has none.
    fn credentials<'a>(
        &'a self,
        endpoint: Endpoint,
        t: &'a Translated<'_>,
    ) -> Result<(Option<&'a [u8]>, Credentials<'a>), HttpError> {
        if endpoint.security() == Security::None {
            return Ok((None, Credentials::Rest));
        }
        match (&t.api_key, &self.logon) {
            (Some(key), _) => Ok((
                Some(key.as_bytes()),
                Credentials::Payload {
                    payload: &t.payload,
                    signature: t.signature.as_deref(),
                },
            )),
            (None, Some(logon)) => Ok((Some(logon.api_key.as_bytes()), Credentials::Session)),
            (None, None) => Err(HttpError::from(AuthError::Mandatory("apiKey"))),
        }
    }

    /// The shard that holds the user of a signed request with a REST twin,
    /// when that is another shard.
    fn remote_owner(&self, shard: &Shard, request: &Prepared) -> Option<usize> {
        let Prepared::Ready { request, translated } = request else {
            return None;
        };
        let WsMethod::Rest(endpoint) = request.method else {
            return None;
        };
        let (Some(key), _) = self.credentials(endpoint, translated).ok()? else {
            return None;
        };
        let user = crate::auth::user_of_key(key)?;
        // Another instance's user is refused here, by the request's own run.
        if shard.trading().user_elsewhere(user).is_some() {
            return None;
        }
        let owner = shard.trading().user_shard(user) as usize;
        (owner != shard.index).then_some(owner)
    }

    /// Requests that [`Session::remote_owner`] sends to `owner`, in one
    /// call; one answer each, in order.
    async fn run_remote(&mut self, shard: &Shard, owner: usize, requests: &[Prepared<'_>]) -> Vec<Answer> {
        let now_ms = crate::clock::now_ms();
        let mut calls = Vec::with_capacity(requests.len());
        let mut slots = Vec::with_capacity(requests.len());
        for request in requests {
            let call = match request {
                Prepared::Ready { request, translated: t } => match request.method {
                    WsMethod::Rest(endpoint) => self.credentials(endpoint, t).map(|(api_key, credentials)| {
                        (twin_request(endpoint, t, api_key, credentials, now_ms), t.params())
                    }),
                    _ => Err(HttpError::new(400, binance::UNKNOWN, "Unexpected method.")),
                },
                Prepared::Failed { error, .. } => Err(error.clone()),
            };
            slots.push(match call {
                Ok(call) => {
                    calls.push(call);
                    Ok(call_is_session(&calls))
                }
                Err(error) => Err(error),
            });
        }
        let mut replies = api::run_on_owner(shard, owner, &calls, self.peer).await.into_iter();
        drop(calls);
        let mut answers = Vec::with_capacity(slots.len());
        for slot in slots {
            answers.push(match (slot, replies.next()) {
                (Ok(session), Some((reply, usage))) => self.twin_answer(reply, usage, session),
                (Ok(_), None) => Answer::error(&api::request::unavailable(), Counts::default()),
                (Err(error), _) => Answer::error(&error, Counts::default()),
            });
        }
        answers
    }

    /// A method with a REST twin, run as that twin.
    async fn rest_twin(&mut self, shard: &Shard, endpoint: Endpoint, t: &Translated<'_>) -> Answer {
        let now_ms = crate::clock::now_ms();
        let (api_key, credentials) = match self.credentials(endpoint, t) {
            Ok(found) => found,
            Err(error) => return Answer::error(&error, Counts::default()),
        };
        let params = t.params();
        let owner = api_key
            .and_then(crate::auth::user_of_key)
            .map(|user| shard.trading().user_shard(user) as usize);
        let local = owner == Some(shard.index);
        let req = twin_request(endpoint, t, api_key, credentials, now_ms);
        let session = credentials == Credentials::Session;
        let (reply, usage) = api::run_endpoint(shard, req, &params, self.peer, Settle::Later).await;
        self.unsettled |= local;
        let reply = RestReply {
            status: reply.status,
            headers: match reply.headers {
                api::Headers::Owned(headers) => headers,
                api::Headers::Static(headers) => headers.iter().map(|h| h.to_string()).collect(),
            },
            // An order's answer is an owned body: moved, not copied.
            body: match reply.body {
                api::Body::Owned(body) => body,
                api::Body::Static(body) => body.to_vec(),
                // No WebSocket API method answers with a file.
                api::Body::File(_) => Vec::new(),
            },
        };
        self.twin_answer(reply, usage, session)
    }

    /// The answer of a REST twin's reply.
    fn twin_answer(&mut self, reply: RestReply, usage: Option<Usage>, session: bool) -> Answer {
        // A logged-on key that no longer passes ends the logon, as on
        // Binance.
        if session && reply.status == 401 {
            self.logon = None;
        }
        let counts = Counts {
            weight_1m: usage.map(|u| u.used_weight_1m),
            ..Counts::default()
        };
        Answer::rest(reply, counts)
    }

    async fn session_method(
        &mut self,
        shard: &Shard,
        out: &Rc<Outbound>,
        method: WsMethod,
        t: &Translated<'_>,
    ) -> Answer {
        let now_ms = crate::clock::now_ms();
        let counts = match shard
            .admit_request(self.peer, wsapi::SESSION_METHOD_WEIGHT, now_ms)
            .await
        {
            Ok(usage) => Counts {
                weight_1m: Some(usage.used_weight_1m),
                ..Counts::default()
            },
            Err(refusal) => return Answer::rest(api::refused(refusal), Counts::default()),
        };
        let result = match method {
            WsMethod::SessionLogon => self.logon(shard, t, now_ms).await,
            WsMethod::SessionStatus => Ok(self.status_json(now_ms)),
            WsMethod::SessionLogout => {
                self.logout(shard, out);
                Ok(self.status_json(now_ms))
            }
            WsMethod::Subscribe => self.subscribe_logon(shard, out).await,
            WsMethod::SubscribeSignature => self.subscribe_signature(shard, out, t, now_ms).await,
            WsMethod::Unsubscribe => self.unsubscribe(shard, out, t),
            WsMethod::Subscriptions => Ok(self.subscriptions_json()),
            WsMethod::CancelOnDisconnect => self.cancel_on_disconnect(shard, t).await,
            WsMethod::Rest(_) | WsMethod::Retired => Err(HttpError::new(400, binance::UNKNOWN, "Unexpected method.")),
        };
        match result {
            Ok(body) => Answer::ok(body, counts),
            Err(error) => Answer::error(&error, counts),
        }
    }

    async fn logon(&mut self, shard: &Shard, t: &Translated<'_>, now_ms: u64) -> Result<Vec<u8>, HttpError> {
        let grant = authorize(shard, signed_authorize(t, now_ms, Scope::Read, None, true)?, self.peer).await?;
        self.logon = Some(Logon {
            api_key: grant.api_key.into_boxed_str(),
            user: grant.user,
            since_ms: now_ms,
        });
        Ok(self.status_json(now_ms))
    }

    /// `session.logout`: forgets the key and ends the subscription made on
    /// it; signed subscriptions stay.
    fn logout(&mut self, shard: &Shard, out: &Rc<Outbound>) {
        if self.logon.take().is_none() {
            return;
        }
        if let Some(i) = self.subscriptions.iter().position(|s| s.logon) {
            let subscription = self.subscriptions.remove(i);
            self.trailing.push(end_subscription(shard, out, subscription));
        }
    }

    async fn subscribe_logon(&mut self, shard: &Shard, out: &Rc<Outbound>) -> Result<Vec<u8>, HttpError> {
        let Some(logon) = &self.logon else {
            return Err(HttpError::new(
                401,
                binance::UNAUTHORIZED,
                "userDataStream.subscribe needs a session logged on with session.logon.",
            ));
        };
        let request = Authorize {
            api_key: logon.api_key.to_string(),
            proof: wsapi::AuthorizeProof::Session,
            now_ms: crate::clock::now_ms(),
            scope: Scope::UserStream,
            attach_to: Some(shard.index),
            ed25519_only: false,
        };
        self.subscribe(shard, out, logon.user, request, true).await
    }

    async fn subscribe_signature(
        &mut self,
        shard: &Shard,
        out: &Rc<Outbound>,
        t: &Translated<'_>,
        now_ms: u64,
    ) -> Result<Vec<u8>, HttpError> {
        let request = signed_authorize(t, now_ms, Scope::UserStream, Some(shard.index), false)?;
        let user =
            crate::auth::user_of_key(request.api_key.as_bytes()).ok_or(HttpError::from(AuthError::ApiKeyRejected))?;
        self.subscribe(shard, out, user, request, false).await
    }

    /// Checks the session's limits, has the user's shard accept the key
    /// and route the user's events here, then registers the subscription.
    async fn subscribe(
        &mut self,
        shard: &Shard,
        out: &Rc<Outbound>,
        user: UserId,
        request: Authorize,
        logon: bool,
    ) -> Result<Vec<u8>, HttpError> {
        if self.subscriptions.iter().any(|s| s.user == user) {
            // The key and signature are checked first, as for any request:
            // only a request that would have subscribed hears "active".
            let check = Authorize {
                attach_to: None,
                ..request
            };
            authorize(shard, check, self.peer).await?;
            return Err(HttpError::new(
                400,
                binance::SUBSCRIPTION_ACTIVE,
                "User Data Stream subscription already active.",
            ));
        }
        if self.subscriptions.len() >= WS_API_SUBSCRIPTIONS_PER_SESSION_MAX {
            return Err(HttpError::new(
                400,
                binance::TOO_MANY_SUBSCRIPTIONS,
                format!(
                    "Too many subscriptions. Connection may create up to '{WS_API_SUBSCRIPTIONS_PER_SESSION_MAX}' \
                     subscriptions at a time."
                ),
            ));
        }
        if self.ids_used >= WS_API_SUBSCRIPTION_IDS_MAX {
            return Err(HttpError::new(
                400,
                binance::MAXIMUM_SUBSCRIPTION_IDS,
                "Maximum subscription ID reached for this connection.",
            ));
        }
        let grant = authorize(shard, request, self.peer).await?;
        let id = self.ids_used;
        self.ids_used += 1;
        shard
            .streams
            .borrow_mut()
            .subscribe_user_local(grant.user, Delivery::Subscription(id), out);
        // Most sessions hold one subscription: no room for four.
        self.subscriptions.reserve_exact(1);
        self.subscriptions.push(Subscription {
            id,
            user: grant.user,
            logon,
        });
        let mut w = JsonWriter::with_capacity(32);
        w.begin_object()
            .field_uint("subscriptionId", u64::from(id))
            .end_object();
        Ok(w.into_bytes())
    }

    fn unsubscribe(&mut self, shard: &Shard, out: &Rc<Outbound>, t: &Translated<'_>) -> Result<Vec<u8>, HttpError> {
        let params = t.params();
        let ended: Vec<Subscription> = match params.get("subscriptionId") {
            None => std::mem::take(&mut self.subscriptions),
            Some(text) => {
                let id: u32 = text.parse().map_err(|_| {
                    HttpError::new(
                        400,
                        binance::ILLEGAL_CHARS,
                        "Illegal characters found in parameter 'subscriptionId'.",
                    )
                })?;
                let i = self.subscriptions.iter().position(|s| s.id == id).ok_or_else(|| {
                    HttpError::new(
                        400,
                        binance::SUBSCRIPTION_INACTIVE,
                        "User Data Stream subscription not active.",
                    )
                })?;
                vec![self.subscriptions.remove(i)]
            }
        };
        for subscription in ended {
            self.trailing.push(end_subscription(shard, out, subscription));
        }
        Ok(b"{}".to_vec())
    }

    /// `session.cancelOnDisconnect` (tradsys): from now on, when this
    /// session ends (the client closes it, the network drops it, tradsys
    /// stops or crashes), every open order of the logged-on user on
    /// `symbols` is canceled. `symbols=[]` stops it. The user's shard
    /// journals the guard before the answer leaves.
    async fn cancel_on_disconnect(&mut self, shard: &Shard, t: &Translated<'_>) -> Result<Vec<u8>, HttpError> {
        let Some(logon) = &self.logon else {
            return Err(HttpError::new(
                401,
                binance::UNAUTHORIZED,
                "session.cancelOnDisconnect needs a session logged on with session.logon.",
            ));
        };
        let user = logon.user;
        let params = t.params();
        let list = params.get("symbols").ok_or_else(|| {
            HttpError::new(
                400,
                binance::MANDATORY_PARAM_EMPTY_OR_MALFORMED,
                "Mandatory parameter 'symbols' was not sent, was empty/null, or malformed.",
            )
        })?;
        let mut markets = api::params::symbols_markets(&shard.trading(), list)?;
        // Each market once, in the order first named.
        let mut seen = Vec::with_capacity(markets.len());
        markets.retain(|m| {
            let first = !seen.contains(m);
            seen.push(*m);
            first
        });
        if self.guard.is_some_and(|guarded| guarded != user) {
            // A logon as another user: the first user's guard ends with
            // the change, as the session would for them.
            self.release_guard(shard).await;
        }
        if self.id == 0 {
            let mut bytes = [0u8; 8];
            crate::auth::random_bytes(&mut bytes);
            self.id = u64::from_le_bytes(bytes).max(1);
        }
        let on = !markets.is_empty();
        let call = PeerCall::Guard {
            user,
            session: self.id,
            markets: markets.clone(),
        };
        match on_user_shard(shard, user, call).await {
            Some(PeerReply::Guard(result)) => result?,
            _ => return Err(api::request::unavailable()),
        }
        self.guard = on.then_some(user);
        let trading = shard.trading();
        let mut w = JsonWriter::with_capacity(64);
        w.begin_object().key("symbols").begin_array();
        for market in &markets {
            w.str(&trading.spec(*market).symbol);
        }
        w.end_array().end_object();
        Ok(w.into_bytes())
    }

    /// The session ended: its guard's orders are canceled on the user's
    /// shard. Retried a few times; should every try fail (the shard is
    /// stopping), the guard is released when tradsys next starts.
    pub(crate) async fn release_guard(&mut self, shard: &Shard) {
        let Some(user) = self.guard.take() else { return };
        for attempt in 0..GUARD_RELEASE_TRIES {
            let call = PeerCall::GuardRelease { user, session: self.id };
            if let Some(PeerReply::Guard(Ok(()))) = on_user_shard(shard, user, call).await {
                return;
            }
            glommio::timer::sleep(std::time::Duration::from_millis(GUARD_RELEASE_RETRY_MS << attempt)).await;
        }
    }

    /// Whether the answers given since the last call wait for durability
    /// first; resets.
    pub(crate) fn take_unsettled(&mut self) -> bool {
        std::mem::take(&mut self.unsettled)
    }

    /// Frames to send after the answers of this read.
    pub(crate) fn take_trailing(&mut self) -> Vec<Rc<[u8]>> {
        std::mem::take(&mut self.trailing)
    }

    /// The connection is closing: every subscription ends, quietly.
    pub(crate) fn close(&mut self, shard: &Shard, out: &Rc<Outbound>) {
        for subscription in std::mem::take(&mut self.subscriptions) {
            publish::unsubscribe_user(shard, subscription.user, out);
        }
        self.logon = None;
    }

    fn status_json(&self, now_ms: u64) -> Vec<u8> {
        let mut w = JsonWriter::with_capacity(256);
        w.begin_object().key("apiKey");
        match &self.logon {
            Some(logon) => w.str(&logon.api_key).key("authorizedSince").uint(logon.since_ms),
            None => w.null().key("authorizedSince").null(),
        };
        w.field_uint("connectedSince", self.connected_since_ms)
            .field_bool("returnRateLimits", self.return_rate_limits)
            .field_uint("serverTime", now_ms)
            .field_bool("userDataStream", !self.subscriptions.is_empty())
            .end_object();
        w.into_bytes()
    }

    fn subscriptions_json(&self) -> Vec<u8> {
        let mut w = JsonWriter::with_capacity(32 + 24 * self.subscriptions.len());
        w.begin_array();
        for subscription in &self.subscriptions {
            w.begin_object()
                .field_uint("subscriptionId", u64::from(subscription.id))
                .end_object();
        }
        w.end_array();
        w.into_bytes()
    }
}

/// The REST twin's request for a translated WebSocket API request.
fn twin_request<'a>(
    endpoint: Endpoint,
    t: &'a Translated<'_>,
    api_key: Option<&'a [u8]>,
    credentials: Credentials<'a>,
    now_ms: u64,
) -> api::request::RequestRef<'a> {
    api::request::RequestRef {
        endpoint,
        query: &t.query,
        body: &[],
        form_body: false,
        api_key,
        credentials,
        now_ms,
    }
}

/// Whether the last call of `calls` rides on the session's logon.
fn call_is_session(calls: &[(api::request::RequestRef<'_>, Params<'_>)]) -> bool {
    calls
        .last()
        .is_some_and(|(req, _)| req.credentials == Credentials::Session)
}

/// A request frame, decoded and translated, or the error that answers it.
enum Prepared<'a> {
    Ready {
        request: WsRequest<'a>,
        translated: Translated<'a>,
    },
    Failed {
        id: &'a str,
        error: HttpError,
    },
}

impl Prepared<'_> {
    fn id(&self) -> &str {
        match self {
            Prepared::Ready { request, .. } => request.id,
            Prepared::Failed { id, .. } => id,
        }
    }
}

fn prepare<'t>(shard: &Shard, text: &'t str, params_count_max: usize) -> Prepared<'t> {
    let request = match wsapi::parse(text) {
        Ok(request) => request,
        Err(rejected) => {
            return Prepared::Failed {
                id: rejected.id,
                error: rejected.error,
            }
        }
    };
    // Shed before the parameters are read or the signature checked.
    if let WsMethod::Rest(endpoint) = request.method {
        if !shard.admits(crate::overload::Priority::of(endpoint)) {
            return Prepared::Failed {
                id: request.id,
                error: api::overloaded(),
            };
        }
    }
    match wsapi::translate(&request.params, params_count_max) {
        Ok(translated) => Prepared::Ready { request, translated },
        Err(error) => Prepared::Failed { id: request.id, error },
    }
}

/// Stops a subscription's events; returns the `eventStreamTerminated`
/// frame that tells the client, as Binance does on unsubscribe and logout.
fn end_subscription(shard: &Shard, out: &Rc<Outbound>, subscription: Subscription) -> Rc<[u8]> {
    publish::unsubscribe_user(shard, subscription.user, out);
    let mut w = JsonWriter::with_capacity(64);
    w.begin_object()
        .field_str("e", "eventStreamTerminated")
        .field_uint("E", crate::clock::now_ms())
        .end_object();
    crate::streams::subscription_frame(subscription.id, &w.into_bytes())
}

/// Runs `call` on `user`'s shard: here, or over the mesh. `None` when the
/// shard did not answer.
async fn on_user_shard(shard: &Shard, user: UserId, call: PeerCall) -> Option<PeerReply> {
    let owner = shard.trading().user_shard(user) as usize;
    if owner == shard.index {
        return Some(api::answer(shard, call).await);
    }
    shard.call(owner, call).await.ok()
}

/// Tries to release a closed session's guard, waiting
/// `GUARD_RELEASE_RETRY_MS` after the first and twice as long after each
/// next.
const GUARD_RELEASE_TRIES: u32 = 4;
const GUARD_RELEASE_RETRY_MS: u64 = 100;

/// An [`Authorize`] for a request signed like `session.logon`.
fn signed_authorize(
    t: &Translated<'_>,
    now_ms: u64,
    scope: Scope,
    attach_to: Option<usize>,
    ed25519_only: bool,
) -> Result<Authorize, HttpError> {
    let api_key = t
        .api_key
        .as_deref()
        .map(str::to_owned)
        .ok_or_else(|| HttpError::from(AuthError::Mandatory("apiKey")))?;
    let params = t.params();
    Ok(Authorize {
        api_key,
        proof: wsapi::AuthorizeProof::Signed {
            payload: t.payload.clone(),
            signature: t.signature.as_deref().map(str::to_owned),
            timestamp: params.get("timestamp").map(str::to_owned),
            recv_window: params.get("recvWindow").map(str::to_owned),
        },
        now_ms,
        scope,
        attach_to,
        ed25519_only,
    })
}

/// Runs `request` on the shard of the user its key names; a refused key
/// or signature counts towards a ban of `peer`, as on the REST API.
async fn authorize(shard: &Shard, request: Authorize, peer: IpAddr) -> Result<Grant, HttpError> {
    let now_ms = request.now_ms;
    let result = authorize_on_owner(shard, request).await;
    if let Err(e) = &result {
        if binance::AUTH_FAILURES.contains(&e.code) {
            crate::server::admission::auth_failed(shard, peer, now_ms).await;
        }
    }
    result
}

async fn authorize_on_owner(shard: &Shard, request: Authorize) -> Result<Grant, HttpError> {
    let user =
        crate::auth::user_of_key(request.api_key.as_bytes()).ok_or(HttpError::from(AuthError::ApiKeyRejected))?;
    let elsewhere = shard
        .trading()
        .user_elsewhere(user)
        .map(|(i, instance)| (i, instance.clone()));
    if let Some((i, instance)) = elsewhere {
        let what = format!("User {user}");
        // A logon is checked by the user's instance, and the session runs
        // here; a user data subscription is refused, since the user's
        // events are made on that instance.
        let signed = matches!(request.proof, wsapi::AuthorizeProof::Signed { .. });
        if request.attach_to.is_some() || !signed {
            return Err(api::request::elsewhere(&what, &instance));
        }
        let reply = shard
            .call_instance(i, api::link::Carried::Logon(Box::new(request)))
            .await
            .map_err(|e| api::link::carried_error(&what, &instance, e))?;
        return wsapi::carried_grant(&reply);
    }
    wsapi::authorize_on_shard(shard, user, request).await
}
