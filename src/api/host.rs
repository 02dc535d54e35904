//! What the API layer needs of the shard it runs on.
//!
//! The handlers in `api` are written against [`Host`], not against the
//! server's shard type: they read and change the shard's own state through
//! it, and reach other shards only with [`Host::call`]. The server's
//! `Shard` is the one implementation; the indirection costs nothing (the
//! handlers are generic and compiled for it) and keeps the dependency
//! pointing down, from `server` to `api`.

use crate::api::exchange_info::ExchangeInfo;
use crate::api::peer::{CallError, PeerCall, PeerReply};
use crate::http::HttpLimits;
use crate::limits::{Refusal, Usage};
use crate::marketdata::MarketData;
use crate::metrics::{Metrics, Snapshot};
use crate::store::shard::ShardStore;
use crate::trading::Trading;
use std::cell::{Ref, RefMut};
use std::net::IpAddr;
use tradsys_engine::order::{ClientOrderId, UserId};

pub(crate) trait Host {
    /// This shard's index.
    fn index(&self) -> usize;
    /// How many shards the process runs.
    fn shards(&self) -> usize;
    /// Every shard of the process has its state (see `server::start`).
    fn is_ready(&self) -> bool;
    fn is_draining(&self) -> bool;
    /// Whether the journal's disk is full: work that changes state is
    /// refused until space returns.
    fn journal_full(&self) -> bool;
    /// Whether a request of `priority` may start while the shard is this
    /// busy (see `overload`); a refusal is counted.
    fn admits(&self, priority: crate::overload::Priority) -> bool;
    fn http_limits(&self) -> &HttpLimits;
    fn exchange_info(&self) -> &ExchangeInfo;
    /// The shard's two-level cache.
    fn cache(&self) -> &crate::cache::Cache;
    fn trading(&self) -> Ref<'_, Trading>;
    fn trading_mut(&self) -> RefMut<'_, Trading>;
    /// Trades, candles and tickers of the markets this shard owns, by
    /// market index.
    fn market_data(&self) -> Ref<'_, Vec<Option<MarketData>>>;
    fn metrics_mut(&self) -> RefMut<'_, Metrics>;
    /// This shard's metrics now.
    fn metrics_snapshot(&self) -> Snapshot;
    /// Counts a request's weight against its client IP, or refuses it.
    /// With Redis the count is shared by every instance (and may wait for
    /// Redis); without it, it is this shard's.
    async fn admit_request(&self, ip: IpAddr, weight: u32, now_ms: u64) -> Result<Usage, Refusal>;
    /// Counts an order of `user` (owned here), or refuses it. With Redis
    /// the counts are shared by every instance (and may wait for Redis).
    async fn admit_order(&self, user: UserId, now_ms: u64) -> Result<Usage, Refusal>;
    /// A request from `ip` failed authentication (see `limits::Bans`).
    async fn auth_failed(&self, ip: IpAddr, now_ms: u64);
    /// `user`'s ORDERS counts (10 s, day), counting nothing.
    async fn order_counts(&self, user: UserId, now_ms: u64) -> (u32, u32);
    /// On the user's shard: one more user data stream of `user` on shard
    /// `to`, unless the user holds the most allowed; `to` then gets the
    /// user's events.
    fn attach_user_stream(&self, user: UserId, to: usize) -> bool;
    /// A client order id for an order sent without one.
    fn next_client_order_id(&self) -> ClientOrderId;
    /// Hands what the last change to `trading` produced to the journal, the
    /// streams and the other shards. Call it after every change.
    fn flush_engine(&self);
    /// Resolves once everything this shard changed so far is durable on
    /// every shard: await it before a response leaves.
    async fn settle(&self);
    /// The shard's history store; `None` when it is off.
    fn history(&self) -> Option<&ShardStore>;
    /// The webhooks of this shard's users.
    fn webhooks(&self) -> RefMut<'_, crate::api::webhooks::Webhooks>;
    /// The background jobs' settings.
    fn jobs_config(&self) -> &crate::config::JobsConfig;
    /// This shard's job queue (Redis's, or the shard's own).
    fn jobs(&self) -> Option<&crate::jobs::Queue>;
    /// A job id no other job of any instance has.
    fn new_job_id(&self) -> String;
    /// The exports of each user (owned here) that may still wait or run.
    fn open_exports(&self) -> RefMut<'_, std::collections::HashMap<UserId, Vec<String>>>;
    /// Sends `call` to shard `to` and waits for its answer.
    async fn call(&self, to: usize, call: PeerCall) -> Result<PeerReply, CallError>;
    /// Resolves after `link_call_timeout_ms`; never without links. An
    /// outcome that depends on another instance is awaited no longer.
    async fn link_timeout(&self);
    /// Carries `request` to instance `instance` of the cluster (see
    /// `api::link`) and waits for its answer.
    async fn call_instance(
        &self,
        instance: usize,
        request: crate::api::link::Carried,
    ) -> Result<crate::api::request::RestReply, crate::api::link::LinkError>;
}
