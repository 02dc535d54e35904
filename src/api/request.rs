//! A REST request as it travels to the shard that owns its data, the
//! rendered reply that comes back, and how operating errors become
//! Binance's codes.
//!
//! The connection shard either calls the owner's handler directly (same
//! shard, borrowing the request bytes as a [`RequestRef`]) or ships an
//! owned [`RestRequest`] over the mesh and gets a rendered [`RestReply`]
//! back. Either way the JSON is rendered once, where the data lives.

use crate::api::host::Host;
use crate::binance;
use crate::endpoint::Endpoint;
use crate::http::{HttpError, Params};
use crate::trading::TradingError;
use tradsys_engine::EngineError;

/// A request shipped to the owning shard. Plain data, so it can cross.
#[derive(Debug)]
pub(crate) struct RestRequest {
    pub(crate) endpoint: Endpoint,
    pub(crate) query: Vec<u8>,
    pub(crate) body: Vec<u8>,
    pub(crate) form_body: bool,
    pub(crate) api_key: Option<Vec<u8>>,
    pub(crate) credentials: OwnedCredentials,
    pub(crate) now_ms: u64,
}

impl RestRequest {
    /// An unsigned request without a body, as one instance asks another
    /// for its public answers.
    pub(crate) fn public(endpoint: Endpoint, query: Vec<u8>) -> RestRequest {
        RestRequest {
            endpoint,
            query,
            body: Vec::new(),
            form_body: false,
            api_key: None,
            credentials: Default::default(),
            now_ms: crate::clock::now_ms(),
        }
    }

    pub(crate) fn borrowed(&self) -> RequestRef<'_> {
        RequestRef {
            endpoint: self.endpoint,
            query: &self.query,
            body: &self.body,
            form_body: self.form_body,
            api_key: self.api_key.as_deref(),
            credentials: self.credentials.borrowed(),
            now_ms: self.now_ms,
        }
    }
}

/// How a signed request proves who sent it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Credentials<'a> {
    /// REST: `signature` in the query string or the body, over both.
    #[default]
    Rest,
    /// WebSocket API: the payload the connection built from the request's
    /// parameters (sorted by name, `signature` left out) and the signature
    /// sent with them.
    Payload {
        payload: &'a [u8],
        signature: Option<&'a str>,
    },
    /// WebSocket API: a request on a session logged on with `api_key`
    /// (`session.logon` checked its signature); it carries none itself.
    Session,
}

/// [`Credentials`] that can cross to another shard.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) enum OwnedCredentials {
    #[default]
    Rest,
    Payload {
        payload: Vec<u8>,
        signature: Option<String>,
    },
    Session,
}

impl OwnedCredentials {
    fn borrowed(&self) -> Credentials<'_> {
        match self {
            OwnedCredentials::Rest => Credentials::Rest,
            OwnedCredentials::Payload { payload, signature } => Credentials::Payload {
                payload,
                signature: signature.as_deref(),
            },
            OwnedCredentials::Session => Credentials::Session,
        }
    }
}

/// The same request, borrowed from the connection's buffer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RequestRef<'a> {
    pub(crate) endpoint: Endpoint,
    pub(crate) query: &'a [u8],
    pub(crate) body: &'a [u8],
    pub(crate) form_body: bool,
    pub(crate) api_key: Option<&'a [u8]>,
    pub(crate) credentials: Credentials<'a>,
    pub(crate) now_ms: u64,
}

impl<'a> RequestRef<'a> {
    pub(crate) fn to_request(self) -> RestRequest {
        RestRequest {
            endpoint: self.endpoint,
            query: self.query.to_vec(),
            body: self.body.to_vec(),
            form_body: self.form_body,
            api_key: self.api_key.map(<[u8]>::to_vec),
            credentials: match self.credentials {
                Credentials::Rest => OwnedCredentials::Rest,
                Credentials::Payload { payload, signature } => OwnedCredentials::Payload {
                    payload: payload.to_vec(),
                    signature: signature.map(str::to_owned),
                },
                Credentials::Session => OwnedCredentials::Session,
            },
            now_ms: self.now_ms,
        }
    }

    pub(crate) fn params(&self, shard: &impl Host) -> Result<Params<'a>, HttpError> {
        let body = self.form_body.then_some(self.body);
        Params::parse(self.query, body, shard.http_limits().params_count_max)
    }
}

/// A rendered answer: status, extra headers, JSON body.
#[derive(Debug)]
pub(crate) struct RestReply {
    pub(crate) status: u16,
    pub(crate) headers: Vec<String>,
    pub(crate) body: Vec<u8>,
}

impl RestReply {
    pub(crate) fn json(body: Vec<u8>) -> RestReply {
        RestReply {
            status: 200,
            headers: Vec::new(),
            body,
        }
    }

    pub(crate) fn error(error: &HttpError) -> RestReply {
        RestReply {
            status: error.status,
            headers: Vec::new(),
            body: crate::http::error_body(error.code, &error.msg).into_bytes(),
        }
    }
}

pub(crate) fn from_result(result: Result<Vec<u8>, HttpError>) -> RestReply {
    match result {
        Ok(body) => RestReply::json(body),
        Err(e) => RestReply::error(&e),
    }
}

pub(crate) fn engine_error(e: EngineError) -> HttpError {
    HttpError::new(400, e.code(), e.msg())
}

pub(crate) fn trading_error(e: TradingError) -> HttpError {
    match e {
        TradingError::Engine(e) => engine_error(e),
        TradingError::Busy => crate::api::overloaded(),
        TradingError::Halted => HttpError::new(400, binance::NEW_ORDER_REJECTED, "Market is closed."),
        TradingError::UnknownUser(_) => HttpError::new(400, binance::REJECTED_MBX_KEY, binance::MSG_REJECTED_KEY),
        TradingError::UsersFull => HttpError::new(503, binance::SERVER_BUSY, "User limit reached."),
        TradingError::UnknownAsset => HttpError::new(400, binance::ILLEGAL_CHARS, "Unknown asset."),
        TradingError::Unacknowledged(instance) => {
            let place = crate::cluster::process_place();
            let peer = place.as_deref().and_then(|p| p.map.instances.get(instance));
            let (id, api) = peer.map_or(("?", String::new()), |p| (p.id.as_str(), p.api.to_string()));
            HttpError::new(
                503,
                binance::SERVER_BUSY,
                format!(
                    "Instance {id} at {api} has not taken this instance's engine messages for too long; orders that \
                     need it are refused until it does."
                ),
            )
        }
    }
}

/// -1001 when another shard or the engine could not answer.
pub(crate) fn unavailable() -> HttpError {
    HttpError::new(503, binance::DISCONNECTED, binance::MSG_INTERNAL)
}

/// A request for a user or market another instance of the cluster owns:
/// until requests are carried between instances, it is answered by that
/// instance only, and the client is told which one.
pub(crate) fn elsewhere(what: &str, instance: &crate::cluster::Instance) -> HttpError {
    HttpError::new(
        503,
        binance::SERVER_BUSY,
        format!(
            "{what} is served by instance {} at {}; send the request there.",
            instance.id, instance.api
        ),
    )
}
