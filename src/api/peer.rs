//! What the API layer asks of other shards: requests about users and
//! markets they own, their metrics, and the pieces of answers that span
//! shards. Plain `Send` data; the server carries it over the mesh and runs
//! it with [`crate::api::answer`] on the receiving shard.

use crate::api::admin::{AdminCall, AdminReply};
use crate::api::klines::{CandleSource, CandlesReply};
use crate::api::request::{RestReply, RestRequest};
use crate::api::wsapi::{Authorize, Grant};
use crate::http::HttpError;
use crate::metrics::Snapshot;
use crate::store::CandlesQuery;
use tradsys_engine::num::Price;
use tradsys_engine::order::{MarketId, Side, UserId};

/// What one shard's API asks of another and waits for.
#[derive(Debug)]
pub(crate) enum PeerCall {
    /// The callee's metrics.
    Metrics,
    /// A REST request about a user or market the callee owns.
    Rest(Box<RestRequest>),
    /// Signed requests of users the callee owns, from one WebSocket API
    /// read: run in order, settled once.
    RestBatch(Vec<RestRequest>),
    /// An admin operation on state the callee owns.
    Admin(Box<AdminCall>),
    /// The price a MARKET order of `side` would meet first in a market the
    /// callee owns (it sizes the order's lock).
    Reference { market: MarketId, side: Side },
    /// Ticker entries of the callee's markets among `markets`.
    Fragments {
        request: Box<RestRequest>,
        markets: Vec<MarketId>,
    },
    /// A WebSocket API logon or signed subscription of a user the callee
    /// owns (see `api::wsapi::authorize`).
    Authorize(Box<Authorize>),
    /// The callee's job queue, on the admin API's behalf.
    Jobs(crate::api::jobs::JobsCall),
    /// The callee's part of the candles of a market older than memory
    /// keeps (see `api::klines`).
    Candles { query: CandlesQuery, source: CandleSource },
    /// The earliest trade of a market in the callee's backlog and, with
    /// `store`, its store.
    FirstTrade { symbol: String, store: bool },
    /// Cancel on disconnect for a WebSocket API session of a user the
    /// callee owns: guard `markets` (none: stop guarding).
    Guard {
        user: UserId,
        session: u64,
        markets: Vec<MarketId>,
    },
    /// That session ended: cancel the orders on the markets it guarded.
    GuardRelease { user: UserId, session: u64 },
}

/// Answers to [`PeerCall`]s, variant for variant.
#[derive(Debug)]
pub(crate) enum PeerReply {
    Metrics(Box<Snapshot>),
    Rest(Box<RestReply>),
    RestBatch(Vec<RestReply>),
    Admin(Box<AdminReply>),
    Reference(Option<Price>),
    Fragments(Vec<(MarketId, Vec<u8>)>),
    Authorize(Result<Grant, HttpError>),
    Jobs(Box<RestReply>),
    Candles(CandlesReply),
    FirstTrade(Result<Option<u64>, HttpError>),
    Guard(Result<(), HttpError>),
}

/// Why a call to another shard failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CallError {
    #[error("shard {0} is gone")]
    PeerGone(usize),
    #[error("shard {0} is overloaded")]
    Overloaded(usize),
    /// The callee answered with a reply of another kind (a bug).
    #[error("shard {0} answered another call")]
    Mismatch(usize),
}
