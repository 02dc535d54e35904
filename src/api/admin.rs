//! The admin API (not Binance): users, API keys, deposits and withdrawals,
//! market halts, the funds audit and exports of a user's history
//! (`api::export`), on its own listen address.
//!
//! Every call needs `X-Admin-Token` equal to the configured token; without a
//! token the API is off. Each operation runs on the shard that owns the
//! state: a user's shard for its keys and balances; every shard for lists,
//! halts and the audit, gathered over the mesh.
//!
//! **Invariant:** the audit is `ok` only when, per asset, Σfree + Σlocked +
//! fees = Σdeposits − Σwithdrawals over all shards. Measured while orders
//! are in flight between shards, an asset may be off by funds in transit;
//! at rest it is exact.

use crate::api::export::{self, Export};
use crate::api::host::Host;
use crate::api::link::{AdminRequest, Carried};
use crate::api::peer::{PeerCall, PeerReply};
use crate::api::request::RestReply;
use crate::auth::user_of_key;
use crate::auth::{KeyMaterial, KeyType, Scope, Scopes};
use crate::binance;
use crate::http::{Head, HttpError, Method};
use crate::json::JsonWriter;
use crate::metrics::Route;
use crate::store::export::Table;
use crate::trading::{AssetTotals, TradingError};
use serde::Deserialize;
use tradsys_engine::num::{parse_units, Amount};
use tradsys_engine::order::{MarketId, UserId};

/// An admin operation for the shard that owns its state.
#[derive(Debug)]
pub(crate) enum AdminCall {
    CreateUser {
        user: UserId,
        name: String,
    },
    /// An HMAC key when `public_key` is `None` (the shard makes the
    /// secret), else an Ed25519 or RSA key verified by it.
    CreateKey {
        user: UserId,
        scopes: Scopes,
        public_key: Option<KeyMaterial>,
    },
    RevokeKey {
        key: String,
    },
    Transfer {
        user: UserId,
        asset: String,
        amount: Amount,
        deposit: bool,
    },
    GetUser {
        user: UserId,
    },
    SetWebhook {
        user: UserId,
        url: String,
        secret: String,
    },
    GetWebhook {
        user: UserId,
    },
    DeleteWebhook {
        user: UserId,
    },
    ListUsers,
    Audit,
    /// This shard's `Trading::state_hash`.
    StateHash,
    /// Apply a halt (or resume) on this shard.
    Halt {
        market: MarketId,
        halted: bool,
    },
}

#[derive(Debug)]
pub(crate) enum AdminReply {
    Rest(RestReply),
    Users(Vec<(UserId, String)>),
    /// A shard's sums per asset, and its engine messages not yet
    /// acknowledged by the instances they are for.
    Audit(Vec<AssetTotals>, usize),
    StateHash(u64),
}

/// What the admin listener answers: a whole reply, or an export that the
/// connection streams chunk by chunk (see `api::export`).
pub(crate) enum Answer<'s> {
    Reply(crate::api::Reply),
    Export(Box<Export<'s>>),
}

/// Answers one admin request on this shard's admin listener.
pub(crate) async fn handle<'s>(shard: &'s impl Host, buf: &[u8], head: &Head, token: Option<&str>) -> Answer<'s> {
    if !shard.admits(crate::overload::Priority::Ops) {
        return Answer::Reply(crate::api::shed(Route::Admin));
    }
    let reply = match authorize(shard, buf, head, token) {
        Ok(()) if !shard.is_ready() => RestReply::error(&crate::api::starting()),
        Ok(()) => match export_target(buf, head) {
            Some((id, table)) => match start_export(shard, buf, head, id, table).await {
                Ok(export) => return Answer::Export(Box::new(export)),
                Err(reply) => reply,
            },
            None => route(shard, buf, head).await,
        },
        Err(e) => RestReply::error(&e),
    };
    Answer::Reply(crate::api::Reply::rest(Route::Admin, reply))
}

/// `GET /admin/v1/users/{id}/trades` and `.../orders`: the user id as
/// written and what to export.
fn export_target<'b>(buf: &'b [u8], head: &Head) -> Option<(&'b str, Table)> {
    if head.method != Method::Get {
        return None;
    }
    let path = std::str::from_utf8(&buf[head.path.clone()]).ok()?;
    let rest = path.strip_prefix("/admin/v1/users/")?;
    let (id, what) = rest.split_once('/')?;
    match what {
        "trades" => Some((id, Table::Trades)),
        "orders" => Some((id, Table::Orders)),
        _ => None,
    }
}

/// Checks an export request, the user (on its shard) and the store, and
/// reads the first page: every refusal is a JSON reply, before any byte
/// of the stream. The export reads the store from this shard (a stream
/// cannot cross the mesh): PostgreSQL is one database, and SQLite's
/// owner file is opened read-only beside its writer.
async fn start_export<'s>(
    shard: &'s impl Host,
    buf: &[u8],
    head: &Head,
    id: &str,
    table: Table,
) -> Result<Export<'s>, RestReply> {
    let checked = async {
        let user = export::user_param(id)?;
        let params = crate::api::params(shard, buf, head)?;
        let request = export::request(user, &params, |symbol| shard.trading().market(symbol).is_some())?;
        let owner = user_owner(shard, user)?;
        let Some(store) = shard.history() else {
            return Err(HttpError::new(
                404,
                binance::UNSUPPORTED_OPERATION,
                "History exports read the history store, which is off on this server (history = off).",
            ));
        };
        let known = rest(run_on(shard, owner, AdminCall::GetUser { user }).await?);
        if known.status != 200 {
            return Err(not_found("user"));
        }
        Ok((store, owner, request))
    };
    let (store, owner, request) = checked.await.map_err(|e| RestReply::error(&e))?;
    export::open(store, owner as u32, table, request).await
}

fn authorize(shard: &impl Host, buf: &[u8], head: &Head, token: Option<&str>) -> Result<(), HttpError> {
    let expected = token.ok_or_else(|| HttpError::new(404, binance::UNSUPPORTED_OPERATION, "The admin API is off."))?;
    let given = head.admin_token.clone().map(|r| &buf[r]);
    let _ = shard;
    if given.is_some_and(|g| constant_time_eq(g, expected.as_bytes())) {
        return Ok(());
    }
    Err(HttpError::new(
        401,
        binance::UNAUTHORIZED,
        "You are not authorized to execute this request.",
    ))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn not_found(what: &str) -> HttpError {
    HttpError::new(404, binance::UNSUPPORTED_OPERATION, format!("Unknown {what}."))
}

async fn route(shard: &impl Host, buf: &[u8], head: &Head) -> RestReply {
    let request = AdminRequest {
        method: head.method,
        path: String::from_utf8_lossy(&buf[head.path.clone()]).into_owned(),
        body: buf[head.body.clone()].to_vec(),
    };
    run(shard, &request, Arrival::Client).await
}

/// Where an admin request came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arrival {
    /// This instance's admin listener.
    Client,
    /// Another instance, through the links: never carried on again.
    Carried,
}

/// Runs an admin request another instance carried here (its admin token
/// was checked there): as one of this instance's admin listener would
/// run, except that it is not carried on again.
pub(crate) async fn answer_carried(shard: &impl Host, request: &AdminRequest) -> RestReply {
    if !shard.is_ready() {
        return RestReply::error(&crate::api::starting());
    }
    run(shard, request, Arrival::Carried).await
}

/// The instance that owns what an admin path names (a user, a key's user,
/// a market), when that is another one, with what to call it in errors.
fn owner_elsewhere(shard: &impl Host, parts: &[&str]) -> Option<(usize, crate::cluster::Instance, String)> {
    let trading = shard.trading();
    let (what, (instance, owner)) = match parts {
        ["admin", "v1", "users", id, ..] => {
            let user: UserId = id.parse().ok()?;
            (format!("User {user}"), trading.user_elsewhere(user)?)
        }
        ["admin", "v1", "keys", key] => {
            let user = user_of_key(key.as_bytes())?;
            (format!("User {user}"), trading.user_elsewhere(user)?)
        }
        ["admin", "v1", "markets", symbol, ..] => {
            let market = trading.market(symbol)?;
            (format!("Market {symbol}"), trading.market_elsewhere(market)?)
        }
        _ => return None,
    };
    Some((instance, owner.clone(), what))
}

async fn run(shard: &impl Host, request: &AdminRequest, arrival: Arrival) -> RestReply {
    let parts: Vec<&str> = request.path.trim_start_matches('/').split('/').collect();
    if let Some((instance, owner, what)) = owner_elsewhere(shard, &parts) {
        if arrival == Arrival::Carried {
            // The instances' maps disagree: answer rather than bounce.
            return RestReply::error(&crate::api::request::elsewhere(&what, &owner));
        }
        return match shard.call_instance(instance, Carried::Admin(request.clone())).await {
            Ok(reply) => reply,
            Err(e) => RestReply::error(&crate::api::link::carried_error(&what, &owner, e)),
        };
    }
    if request.method != Method::Get && shard.journal_full() {
        return RestReply::error(&crate::api::journal_full());
    }
    let body = request.body.as_slice();
    let result = match (request.method, parts.as_slice()) {
        (Method::Post, ["admin", "v1", "users"]) => create_user(shard, body).await,
        (Method::Get, ["admin", "v1", "users"]) => list_users(shard).await,
        (Method::Get, ["admin", "v1", "users", id]) => on_user(shard, id, |user| AdminCall::GetUser { user }).await,
        (Method::Post, ["admin", "v1", "users", id, "keys"]) => create_key(shard, id, body).await,
        (Method::Post, ["admin", "v1", "users", id, kind @ ("deposits" | "withdrawals")]) => {
            transfer(shard, id, body, *kind == "deposits").await
        }
        (Method::Delete, ["admin", "v1", "keys", key]) => revoke_key(shard, key).await,
        (Method::Put, ["admin", "v1", "users", id, "webhook"]) => set_webhook(shard, id, body).await,
        (Method::Get, ["admin", "v1", "users", id, "webhook"]) => {
            on_user(shard, id, |user| AdminCall::GetWebhook { user }).await
        }
        (Method::Delete, ["admin", "v1", "users", id, "webhook"]) => {
            on_user(shard, id, |user| AdminCall::DeleteWebhook { user }).await
        }
        (Method::Post, ["admin", "v1", "markets", symbol, action @ ("halt" | "resume")]) => {
            halt(shard, symbol, *action == "halt").await
        }
        (Method::Get, ["admin", "v1", "audit"]) => audit(shard).await,
        (Method::Get, ["admin", "v1", "cluster"]) => Ok(cluster_view(shard).await),
        (Method::Get, ["admin", "v1", "cluster", "audit"]) => cluster_audit(shard).await,
        (Method::Get, ["admin", "v1", "state"]) => state_hashes(shard).await,
        (Method::Get, ["admin", "v1", "jobs"]) => Ok(crate::api::jobs::admin_jobs(shard).await),
        (Method::Post, ["admin", "v1", "jobs", "dead", id, "requeue"]) => {
            crate::api::jobs::admin_requeue(shard, id).await
        }
        _ => Err(not_found("admin path")),
    };
    result.unwrap_or_else(|e| RestReply::error(&e))
}

fn bad_body(problem: impl std::fmt::Display) -> HttpError {
    HttpError::new(
        400,
        binance::MANDATORY_PARAM_EMPTY_OR_MALFORMED,
        format!("Malformed JSON body: {problem}."),
    )
}

fn parse_user(id: &str) -> Result<UserId, HttpError> {
    id.parse().map_err(|_| not_found("user"))
}

/// Runs `call` on the shard that owns the state it names.
async fn run_on(shard: &impl Host, owner: usize, call: AdminCall) -> Result<AdminReply, HttpError> {
    if owner == shard.index() {
        let reply = run_local(shard, call);
        shard.settle().await;
        return Ok(reply);
    }
    match shard.call(owner, PeerCall::Admin(Box::new(call))).await {
        Ok(PeerReply::Admin(reply)) => Ok(*reply),
        _ => Err(HttpError::new(503, binance::DISCONNECTED, binance::MSG_INTERNAL)),
    }
}

fn rest(reply: AdminReply) -> RestReply {
    match reply {
        AdminReply::Rest(r) => r,
        _ => RestReply::error(&HttpError::new(500, binance::UNKNOWN, "Unexpected admin reply.")),
    }
}

/// An admin call on this shard, from this shard or another.
pub(crate) fn run_local(shard: &impl Host, call: AdminCall) -> AdminReply {
    let result = match call {
        AdminCall::CreateUser { user, name } => shard
            .trading_mut()
            .create_user(user, &name)
            .map(|()| user_json(user))
            .map_err(admin_error),
        AdminCall::CreateKey {
            user,
            scopes,
            public_key: None,
        } => {
            let mut entropy = [0u8; 128];
            crate::auth::random_bytes(&mut entropy);
            let created = shard.trading_mut().create_key(user, scopes, &entropy);
            created
                .map(|(key, secret)| key_json(&key, KeyType::HmacSha256, scopes, Some(&secret)))
                .map_err(admin_error)
        }
        AdminCall::CreateKey {
            user,
            scopes,
            public_key: Some(material),
        } => {
            let mut entropy = [0u8; 64];
            crate::auth::random_bytes(&mut entropy);
            let key_type = material.key_type();
            let created = shard.trading_mut().create_public_key(user, scopes, material, &entropy);
            created
                .map(|key| key_json(&key, key_type, scopes, None))
                .map_err(admin_error)
        }
        AdminCall::RevokeKey { key } => match shard.trading_mut().revoke_key(&key) {
            true => Ok(b"{}".to_vec()),
            false => Err(not_found("API key")),
        },
        AdminCall::Transfer {
            user,
            asset,
            amount,
            deposit,
        } => {
            let done = shard.trading_mut().transfer(user, &asset, amount, deposit);
            // Sends the balanceUpdate to the user's data streams.
            shard.flush_engine();
            done.map_err(admin_error).map(|()| balances_json(shard, user))
        }
        AdminCall::GetUser { user } => user_details(shard, user),
        AdminCall::SetWebhook { user, url, secret } => {
            if shard.trading().user_name(user).is_none() {
                Err(not_found("user"))
            } else {
                let hook = crate::api::webhooks::Hook {
                    url: url.clone(),
                    secret: secret.clone(),
                };
                shard
                    .webhooks()
                    .set(user, hook)
                    .map(|()| webhook_json(user, &url, Some(&secret)))
            }
        }
        AdminCall::GetWebhook { user } => match shard.webhooks().get(user) {
            Some(hook) => Ok(webhook_json(user, &hook.url, None)),
            None => Err(not_found("webhook")),
        },
        AdminCall::DeleteWebhook { user } => match shard.webhooks().delete(user) {
            Ok(true) => Ok(b"{}".to_vec()),
            Ok(false) => Err(not_found("webhook")),
            Err(e) => Err(e),
        },
        AdminCall::ListUsers => {
            let users = shard
                .trading()
                .user_ids()
                .map(|(id, name)| (*id, name.clone()))
                .collect();
            return AdminReply::Users(users);
        }
        AdminCall::Audit => {
            let trading = shard.trading();
            return AdminReply::Audit(trading.asset_totals(), trading.remote_links().outbox_total());
        }
        AdminCall::StateHash => return AdminReply::StateHash(shard.trading().state_hash()),
        AdminCall::Halt { market, halted } => {
            shard.trading_mut().halt(market, halted);
            Ok(b"{}".to_vec())
        }
    };
    AdminReply::Rest(match result {
        Ok(body) => RestReply::json(body),
        Err(e) => RestReply::error(&e),
    })
}

fn admin_error(e: TradingError) -> HttpError {
    match e {
        TradingError::UnknownUser(_) => not_found("user"),
        TradingError::UnknownAsset => HttpError::new(400, binance::ILLEGAL_CHARS, "Unknown asset."),
        other => crate::api::request::trading_error(other),
    }
}

fn user_json(user: UserId) -> Vec<u8> {
    let mut w = JsonWriter::default();
    w.begin_object().field_uint("userId", user).end_object();
    w.into_bytes()
}

/// A new key: `secretKey` only for HMAC keys, whose secret the server made;
/// the user of an Ed25519 or RSA key holds its private key already.
fn key_json(key: &str, key_type: KeyType, scopes: Scopes, secret: Option<&str>) -> Vec<u8> {
    let mut w = JsonWriter::default();
    w.begin_object()
        .field_str("apiKey", key)
        .field_str("type", key_type.name())
        .key("scopes")
        .begin_array();
    for scope in Scope::ALL.into_iter().filter(|s| scopes.contains(*s)) {
        w.str(scope.name());
    }
    w.end_array();
    if let Some(secret) = secret {
        w.field_str("secretKey", secret);
    }
    w.end_object();
    w.into_bytes()
}

fn write_balances(shard: &impl Host, user: UserId, w: &mut JsonWriter) {
    let trading = shard.trading();
    w.begin_array();
    for (asset, balance) in trading.balances(user) {
        w.begin_object().field_str("asset", trading.asset_name(asset));
        w.field_decimal("free", balance.free.0)
            .field_decimal("locked", balance.locked.0)
            .end_object();
    }
    w.end_array();
}

fn balances_json(shard: &impl Host, user: UserId) -> Vec<u8> {
    let mut w = JsonWriter::default();
    w.begin_object().field_uint("userId", user).key("balances");
    write_balances(shard, user, &mut w);
    w.end_object();
    w.into_bytes()
}

/// `PUT /admin/v1/users/{id}/webhook`: `{"url": "http://host:port/path"}`;
/// answers the webhook with a new secret (shown once).
async fn set_webhook(shard: &impl Host, id: &str, body: &[u8]) -> Result<RestReply, HttpError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        url: String,
    }
    let body: Body = serde_json::from_slice(body).map_err(bad_body)?;
    crate::jobs::webhook::parse_url(&body.url).map_err(|problem| {
        HttpError::new(
            400,
            binance::MANDATORY_PARAM_EMPTY_OR_MALFORMED,
            format!("Bad webhook URL: {problem}."),
        )
    })?;
    let mut raw = [0u8; 32];
    crate::auth::random_bytes(&mut raw);
    let secret: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    on_user(shard, id, |user| AdminCall::SetWebhook {
        user,
        url: body.url,
        secret,
    })
    .await
}

fn webhook_json(user: UserId, url: &str, secret: Option<&str>) -> Vec<u8> {
    let mut w = JsonWriter::default();
    w.begin_object().field_uint("userId", user).field_str("url", url);
    if let Some(secret) = secret {
        w.field_str("secret", secret);
    }
    w.end_object();
    w.into_bytes()
}

fn user_details(shard: &impl Host, user: UserId) -> Result<Vec<u8>, HttpError> {
    let name = shard
        .trading()
        .user_name(user)
        .map(str::to_string)
        .ok_or_else(|| not_found("user"))?;
    let mut w = JsonWriter::default();
    w.begin_object()
        .field_uint("userId", user)
        .field_str("name", &name)
        .key("balances");
    write_balances(shard, user, &mut w);
    w.end_object();
    Ok(w.into_bytes())
}

/// Names of users are 1 to 64 printable characters.
const USER_NAME_BYTES_MAX: usize = 64;

async fn create_user(shard: &impl Host, body: &[u8]) -> Result<RestReply, HttpError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        name: String,
    }
    let Body { name } = serde_json::from_slice(body).map_err(bad_body)?;
    if name.is_empty() || name.len() > USER_NAME_BYTES_MAX || name.chars().any(char::is_control) {
        return Err(HttpError::new(
            400,
            binance::ILLEGAL_CHARS,
            "name must be 1 to 64 printable characters.",
        ));
    }
    let user = shard.trading_mut().allocate_user_id().ok_or_else(|| {
        HttpError::new(
            400,
            binance::UNSUPPORTED_OPERATION,
            "This instance owns no user slots in the cluster map; create users on an instance that owns some.",
        )
    })?;
    let owner = user_owner(shard, user)?;
    Ok(rest(run_on(shard, owner, AdminCall::CreateUser { user, name }).await?))
}

/// The shard here that owns `user`; another instance's user is refused
/// with the instance to ask.
fn user_owner(shard: &impl Host, user: UserId) -> Result<usize, HttpError> {
    let trading = shard.trading();
    match trading.user_elsewhere(user) {
        Some((_, instance)) => Err(crate::api::request::elsewhere(&format!("User {user}"), instance)),
        None => Ok(trading.user_shard(user) as usize),
    }
}

async fn on_user(shard: &impl Host, id: &str, call: impl FnOnce(UserId) -> AdminCall) -> Result<RestReply, HttpError> {
    let user = parse_user(id)?;
    let owner = user_owner(shard, user)?;
    Ok(rest(run_on(shard, owner, call(user)).await?))
}

/// `POST /admin/v1/users/{id}/keys`: `{"scopes": [...]}`, with `"type"`
/// (`HMAC_SHA256` by default, `ED25519`, `RSA`) and, for the last two, the
/// user's `"publicKey"` as PEM. The key is read here, on the shard that got
/// the request, so that a refusal costs the user's shard nothing.
async fn create_key(shard: &impl Host, id: &str, body: &[u8]) -> Result<RestReply, HttpError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        scopes: Vec<String>,
        #[serde(rename = "type")]
        key_type: Option<String>,
        #[serde(rename = "publicKey")]
        public_key: Option<String>,
    }
    let body: Body = serde_json::from_slice(body).map_err(bad_body)?;
    let mut scopes = Scopes::NONE;
    for name in &body.scopes {
        let scope = Scope::parse(name)
            .ok_or_else(|| HttpError::new(400, binance::ILLEGAL_CHARS, format!("Unknown scope {name:?}.")))?;
        scopes = scopes.with(scope);
    }
    let key_type = match body.key_type.as_deref() {
        None => KeyType::HmacSha256,
        Some(name) => KeyType::parse(name).ok_or_else(|| {
            HttpError::new(
                400,
                binance::ILLEGAL_CHARS,
                format!("Unknown key type {name:?}; use HMAC_SHA256, ED25519 or RSA."),
            )
        })?,
    };
    // An empty publicKey is a missing one, as Binance's -1102 reads.
    let public_key = match (key_type, body.public_key.filter(|pem| !pem.is_empty())) {
        (KeyType::HmacSha256, None) => None,
        (_, Some(pem)) => Some(KeyMaterial::from_public_pem(key_type, &pem)?),
        (_, None) => {
            return Err(HttpError::new(
                400,
                binance::MANDATORY_PARAM_EMPTY_OR_MALFORMED,
                "Mandatory parameter 'publicKey' was not sent, was empty/null, or malformed.",
            ))
        }
    };
    on_user(shard, id, |user| AdminCall::CreateKey {
        user,
        scopes,
        public_key,
    })
    .await
}

async fn revoke_key(shard: &impl Host, key: &str) -> Result<RestReply, HttpError> {
    let user = user_of_key(key.as_bytes()).ok_or_else(|| not_found("API key"))?;
    let owner = user_owner(shard, user)?;
    Ok(rest(
        run_on(shard, owner, AdminCall::RevokeKey { key: key.to_string() }).await?,
    ))
}

async fn transfer(shard: &impl Host, id: &str, body: &[u8], deposit: bool) -> Result<RestReply, HttpError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        asset: String,
        amount: String,
    }
    let Body { asset, amount } = serde_json::from_slice(body).map_err(bad_body)?;
    let units =
        parse_units(&amount).map_err(|e| HttpError::new(400, binance::ILLEGAL_CHARS, format!("amount: {e}.")))?;
    on_user(shard, id, |user| AdminCall::Transfer {
        user,
        asset,
        amount: Amount(units),
        deposit,
    })
    .await
}

async fn gather(shard: &impl Host, call: fn() -> AdminCall) -> Result<Vec<AdminReply>, HttpError> {
    let mut replies = Vec::with_capacity(shard.shards());
    for peer in 0..shard.shards() {
        replies.push(run_on(shard, peer, call()).await?);
    }
    Ok(replies)
}

/// Each shard's state hash: equal hashes mean equal durable state (used to
/// check that recovery rebuilds exactly what the journal says).
async fn state_hashes(shard: &impl Host) -> Result<RestReply, HttpError> {
    let mut w = JsonWriter::default();
    w.begin_object().key("shards").begin_array();
    for (index, reply) in gather(shard, || AdminCall::StateHash).await?.into_iter().enumerate() {
        let AdminReply::StateHash(hash) = reply else { continue };
        w.begin_object()
            .field_uint("shard", index as u64)
            .field_str("stateHash", &format!("{hash:016x}"))
            .end_object();
    }
    w.end_array().end_object();
    Ok(RestReply::json(w.into_bytes()))
}

async fn list_users(shard: &impl Host) -> Result<RestReply, HttpError> {
    let mut users: Vec<(UserId, String)> = Vec::new();
    for reply in gather(shard, || AdminCall::ListUsers).await? {
        if let AdminReply::Users(part) = reply {
            users.extend(part);
        }
    }
    users.sort();
    let mut w = JsonWriter::default();
    w.begin_array();
    for (id, name) in &users {
        w.begin_object()
            .field_uint("userId", *id)
            .field_str("name", name)
            .end_object();
    }
    w.end_array();
    Ok(RestReply::json(w.into_bytes()))
}

/// `GET /admin/v1/cluster`: the instances of the map, what each owns, and
/// for the others whether they answer a ping through the links now (and
/// in how long), with the lag of this shard's link from each. Without a
/// map, this process is the whole exchange: one instance, `"cluster":
/// false`. The pings go out together; each waits `link_call_timeout_ms`
/// at most.
async fn cluster_view(shard: &impl Host) -> RestReply {
    let place = shard.trading().cluster_place().map(|p| {
        let instances: Vec<(crate::cluster::Instance, usize, Vec<String>)> = (0..p.map.instances.len())
            .map(|i| {
                let markets = shard
                    .trading()
                    .specs()
                    .iter()
                    .enumerate()
                    .filter(|(m, _)| p.map.market_instance(*m) == i)
                    .map(|(_, spec)| spec.symbol.clone())
                    .collect();
                (p.map.instances[i].clone(), p.map.slot_count(i), markets)
            })
            .collect();
        (p.me, instances)
    });
    let mut w = JsonWriter::default();
    let Some((me, instances)) = place else {
        w.begin_object()
            .field_bool("cluster", false)
            .field_bool("ready", shard.is_ready())
            .end_object();
        return RestReply::json(w.into_bytes());
    };
    let ping = || crate::api::request::RestRequest::public(crate::endpoint::Endpoint::Ping, Vec::new());
    let probes: Vec<_> = instances
        .iter()
        .enumerate()
        .map(|(i, _)| {
            let request = ping();
            async move {
                if i == me {
                    return None;
                }
                let sent = std::time::Instant::now();
                let answered = shard.call_instance(i, crate::api::link::Carried::Rest(request)).await;
                Some((
                    answered.is_ok_and(|r| r.status == 200),
                    sent.elapsed().as_micros() as u64,
                ))
            }
        })
        .collect();
    let probes = crate::jobs::worker::join_all(probes).await;
    let lags = shard.metrics_snapshot().links;
    w.begin_object()
        .field_bool("cluster", true)
        .key("instances")
        .begin_array();
    for (i, ((instance, slots, markets), probe)) in instances.iter().zip(probes).enumerate() {
        w.begin_object()
            .field_str("id", &instance.id)
            .field_str("api", &instance.api.to_string())
            .field_str("link", &instance.link.to_string())
            .field_uint("slots", *slots as u64)
            .key("markets")
            .begin_array();
        for market in markets {
            w.str(market);
        }
        w.end_array().field_bool("self", i == me);
        match probe {
            None => {
                w.field_bool("ready", shard.is_ready());
            }
            Some((answered, us)) => {
                let lag = lags
                    .iter()
                    .find(|(id, _)| *id == instance.id)
                    .map_or(0, |(_, l)| l.lag_ms);
                w.field_bool("ready", answered)
                    .field_uint("pingMicros", us)
                    .field_uint("linkLagMs", lag);
            }
        }
        w.end_object();
    }
    w.end_array().end_object();
    RestReply::json(w.into_bytes())
}

/// Halts or resumes a market on every shard; answers once all have applied
/// it, so that no order accepted after the answer sees the old state.
async fn halt(shard: &impl Host, symbol: &str, halted: bool) -> Result<RestReply, HttpError> {
    let market = shard
        .trading()
        .market(symbol)
        .ok_or_else(crate::api::params::bad_symbol)?;
    if let Some(refusal) = crate::api::market::remote_market(shard, market) {
        return Err(refusal);
    }
    for peer in 0..shard.shards() {
        run_on(shard, peer, AdminCall::Halt { market, halted }).await?;
    }
    // exchangeInfo shows the halt: its cached list has a new version, and
    // every shard of every instance sharing the cache hears of it.
    let info = shard.exchange_info();
    let version = crate::api::exchange_info::version(&crate::api::exchange_info::halted(shard));
    shard.cache().invalidate(info.cache_name(), version).await;
    let mut w = JsonWriter::default();
    w.begin_object()
        .field_str("symbol", symbol)
        .field_bool("halted", halted)
        .end_object();
    Ok(RestReply::json(w.into_bytes()))
}

/// This instance's sums per asset over its shards, and its engine
/// messages in flight to other instances.
async fn instance_totals(shard: &impl Host) -> Result<(Vec<AssetTotals>, usize), HttpError> {
    let count = shard.trading().accounts().asset_names().len();
    let mut totals = vec![AssetTotals::default(); count];
    let mut in_flight = 0;
    for reply in gather(shard, || AdminCall::Audit).await? {
        let AdminReply::Audit(part, unacknowledged) = reply else {
            continue;
        };
        for (sum, t) in totals.iter_mut().zip(part) {
            add_totals(sum, &t);
        }
        in_flight += unacknowledged;
    }
    Ok((totals, in_flight))
}

fn add_totals(sum: &mut AssetTotals, t: &AssetTotals) {
    sum.deposits += t.deposits;
    sum.withdrawals += t.withdrawals;
    sum.free += t.free;
    sum.locked += t.locked;
    sum.fees += t.fees;
    sum.settled_in += t.settled_in;
}

/// Whether an asset's funds are whole: what users hold and paid in fees is
/// what came in, less what went out, plus what fills moved in from other
/// instances.
fn whole(t: &AssetTotals) -> bool {
    t.free + t.locked + t.fees == t.deposits - t.withdrawals + t.settled_in
}

/// The audit's fields of one asset, in the answer's order.
fn totals_fields(t: &AssetTotals) -> [(&'static str, i128); 6] {
    [
        ("deposits", t.deposits),
        ("withdrawals", t.withdrawals),
        ("free", t.free),
        ("locked", t.locked),
        ("fees", t.fees),
        ("settledIn", t.settled_in),
    ]
}

fn write_assets(w: &mut JsonWriter, names: &[String], totals: &[AssetTotals]) {
    w.key("assets").begin_array();
    for (name, t) in names.iter().zip(totals) {
        w.begin_object().field_str("asset", name);
        for (key, value) in totals_fields(t) {
            w.field_decimal(key, i64::try_from(value).unwrap_or(i64::MAX));
        }
        w.end_object();
    }
    w.end_array();
}

async fn audit(shard: &impl Host) -> Result<RestReply, HttpError> {
    let names: Vec<String> = shard.trading().accounts().asset_names().to_vec();
    let (totals, in_flight) = instance_totals(shard).await?;
    // In a cluster of several instances fills move funds between them:
    // each instance is whole with what fills brought in (`settledIn`),
    // and the cluster is whole when those sum to zero over its instances
    // (`GET /admin/v1/cluster/audit`).
    let clustered = shard
        .trading()
        .cluster_place()
        .is_some_and(|p| p.map.instances.len() > 1);
    let ok = totals.iter().all(|t| whole(t) && (clustered || t.settled_in == 0));
    let mut w = JsonWriter::default();
    w.begin_object().field_bool("ok", ok);
    if clustered {
        w.field_uint("inFlight", in_flight as u64);
    }
    write_assets(&mut w, &names, &totals);
    w.end_object();
    Ok(RestReply::json(w.into_bytes()))
}

/// One instance's audit as another instance answered it.
struct InstanceAudit {
    ok: bool,
    in_flight: u64,
    totals: Vec<AssetTotals>,
}

/// Reads another instance's `GET /admin/v1/audit` answer, its assets in
/// the order of `names` (every instance reads the same markets file).
fn read_audit(body: &[u8], names: &[String]) -> Option<InstanceAudit> {
    let audit: serde_json::Value = serde_json::from_slice(body).ok()?;
    let assets = audit["assets"].as_array()?;
    if assets.len() != names.len() {
        return None;
    }
    let mut totals = Vec::with_capacity(names.len());
    for (asset, name) in assets.iter().zip(names) {
        if asset["asset"].as_str()? != name {
            return None;
        }
        let field = |key: &str| -> Option<i128> {
            let text = asset[key].as_str()?;
            let (sign, digits) = text.strip_prefix('-').map_or((1, text), |d| (-1, d));
            Some(sign * i128::from(parse_units(digits).ok()?))
        };
        totals.push(AssetTotals {
            deposits: field("deposits")?,
            withdrawals: field("withdrawals")?,
            free: field("free")?,
            locked: field("locked")?,
            fees: field("fees")?,
            settled_in: field("settledIn")?,
        });
    }
    Some(InstanceAudit {
        ok: audit["ok"].as_bool()?,
        in_flight: audit["inFlight"].as_u64()?,
        totals,
    })
}

/// `GET /admin/v1/cluster/audit`: every instance's audit, asked of it
/// through the links (together), and their sums per asset. The cluster is
/// whole (`ok`) when every instance is and what fills moved between
/// instances (`settledIn`) sums to zero per asset; while engine messages
/// are in flight (`inFlight` above zero) a fill may be applied on one side
/// only so far, and the sums may differ by it. An instance that cannot be
/// reached fails the whole answer, as it would fail any answer that needs
/// it. Without a map this process is the whole exchange: its audit, with
/// `"cluster": false`.
async fn cluster_audit(shard: &impl Host) -> Result<RestReply, HttpError> {
    let names: Vec<String> = shard.trading().accounts().asset_names().to_vec();
    let place = shard.trading().cluster_place().map(|p| (p.me, p.map.instances.clone()));
    let (totals, in_flight) = instance_totals(shard).await?;
    let here = InstanceAudit {
        ok: totals.iter().all(whole),
        in_flight: in_flight as u64,
        totals,
    };
    let Some((me, instances)) = place else {
        let ok = here.ok && here.totals.iter().all(|t| t.settled_in == 0);
        let mut w = JsonWriter::default();
        w.begin_object()
            .field_bool("cluster", false)
            .field_bool("ok", ok)
            .field_uint("inFlight", 0);
        write_assets(&mut w, &names, &here.totals);
        w.end_object();
        return Ok(RestReply::json(w.into_bytes()));
    };
    let asks: Vec<_> = (0..instances.len())
        .filter(|&i| i != me)
        .map(|i| async move {
            let request = AdminRequest {
                method: Method::Get,
                path: "/admin/v1/audit".to_string(),
                body: Vec::new(),
            };
            (i, shard.call_instance(i, Carried::Admin(request)).await)
        })
        .collect();
    let mut audits: Vec<Option<InstanceAudit>> = (0..instances.len()).map(|_| None).collect();
    for (i, answer) in crate::jobs::worker::join_all(asks).await {
        let what = format!("Instance {}'s audit", instances[i].id);
        let reply = answer.map_err(|e| crate::api::link::carried_error(&what, &instances[i], e))?;
        if reply.status != 200 {
            return Ok(reply);
        }
        let audit = read_audit(&reply.body, &names).ok_or_else(|| {
            HttpError::new(
                500,
                binance::UNKNOWN,
                format!("{what} does not read as one of this build's audits."),
            )
        })?;
        audits[i] = Some(audit);
    }
    audits[me] = Some(here);
    let audits: Vec<InstanceAudit> = audits.into_iter().flatten().collect();
    let mut sums = vec![AssetTotals::default(); names.len()];
    for audit in &audits {
        for (sum, t) in sums.iter_mut().zip(&audit.totals) {
            add_totals(sum, t);
        }
    }
    let ok = audits.iter().all(|a| a.ok) && sums.iter().all(|t| t.settled_in == 0);
    let mut w = JsonWriter::default();
    w.begin_object()
        .field_bool("cluster", true)
        .field_bool("ok", ok)
        .field_uint("inFlight", audits.iter().map(|a| a.in_flight).sum())
        .key("instances")
        .begin_array();
    for (instance, audit) in instances.iter().zip(&audits) {
        w.begin_object()
            .field_str("id", &instance.id)
            .field_bool("ok", audit.ok)
            .field_uint("inFlight", audit.in_flight)
            .end_object();
    }
    w.end_array();
    write_assets(&mut w, &names, &sums);
    w.end_object();
    Ok(RestReply::json(w.into_bytes()))
}
