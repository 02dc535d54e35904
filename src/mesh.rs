//! Cross-shard calls over glommio's channel mesh.
//!
//! Two full meshes of bounded channels connect every pair of shards: one for
//! requests, one for responses. Keeping them apart is what rules out
//! deadlock: a shard's response receivers only complete local waiters and
//! never block, so a request handler waiting to send its response always
//! makes progress, however full the request channels are. Request handlers
//! run as tasks, at most `MESH_HANDLERS_MAX` at once per shard, so a flood
//! of requests waits in the bounded channels instead of growing memory.
//!
//! Only plain `Send` data crosses: no serialization, no shared state.
//! Peer ids equal shard indexes because shards join in index order
//! (checked at start-up).

use crate::metrics::Snapshot;
use glommio::channels::channel_mesh::{Full, MeshBuilder, Receivers, Senders};
use glommio::channels::local_channel::{self, LocalSender};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;

/// Requests one shard may make of another.
#[derive(Debug)]
pub enum Request {
    /// This shard's metrics.
    Metrics,
}

/// Answers to `Request`s, variant for variant.
#[derive(Debug)]
pub enum Response {
    Metrics(Box<Snapshot>),
}

/// A message with the id that pairs a response with its request.
#[derive(Debug)]
pub struct Envelope<T> {
    pub id: u64,
    pub body: T,
}

/// Request handlers running at once on one shard.
pub const MESH_HANDLERS_MAX: u64 = 256;

/// The two meshes before shards join; cloned into every shard.
#[derive(Clone)]
pub struct MeshBuilders {
    requests: MeshBuilder<Envelope<Request>, Full>,
    responses: MeshBuilder<Envelope<Response>, Full>,
}

impl MeshBuilders {
    pub fn new(shards: usize, channel_capacity: usize) -> MeshBuilders {
        MeshBuilders {
            requests: MeshBuilder::full(shards, channel_capacity),
            responses: MeshBuilder::full(shards, channel_capacity),
        }
    }

    /// Joins both meshes; returns once every shard has joined.
    pub async fn join(self, shard: usize) -> Result<(Mesh, MeshInbox), String> {
        let (requests, request_rx) = self
            .requests
            .join()
            .await
            .map_err(|_| "joining the request mesh failed")?;
        let (responses, response_rx) = self
            .responses
            .join()
            .await
            .map_err(|_| "joining the response mesh failed")?;
        if requests.peer_id() != shard || responses.peer_id() != shard {
            return Err(format!(
                "shard {shard} joined the mesh as peer {}: shards must start in index order",
                requests.peer_id()
            ));
        }
        let mesh = Mesh {
            shard,
            shards: requests.nr_consumers(),
            requests,
            responses,
            pending: RefCell::new(HashMap::new()),
            next_id: Cell::new(0),
        };
        Ok((
            mesh,
            MeshInbox {
                requests: request_rx,
                responses: response_rx,
            },
        ))
    }
}

/// The receiving halves, consumed by the shard's receive loops.
pub struct MeshInbox {
    pub requests: Receivers<Envelope<Request>>,
    pub responses: Receivers<Envelope<Response>>,
}

/// Why a cross-shard call failed.
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    #[error("shard {0} is gone")]
    PeerGone(usize),
}

/// One shard's end of the meshes. `!Send`: it lives on its shard.
pub struct Mesh {
    shard: usize,
    shards: usize,
    requests: Senders<Envelope<Request>>,
    responses: Senders<Envelope<Response>>,
    pending: RefCell<HashMap<u64, LocalSender<Response>>>,
    next_id: Cell<u64>,
}

impl Mesh {
    pub fn shard(&self) -> usize {
        self.shard
    }

    pub fn shards(&self) -> usize {
        self.shards
    }

    /// Sends `request` to shard `to` and waits for its response.
    pub async fn call(&self, to: usize, request: Request) -> Result<Response, MeshError> {
        assert!(
            to != self.shard && to < self.shards,
            "mesh call from shard {} to {to}",
            self.shard
        );
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let (tx, rx) = local_channel::new_bounded(1);
        self.pending.borrow_mut().insert(id, tx);
        let sent = self.requests.send_to(to, Envelope { id, body: request }).await;
        if sent.is_err() {
            self.pending.borrow_mut().remove(&id);
            return Err(MeshError::PeerGone(to));
        }
        let response = rx.recv().await;
        self.pending.borrow_mut().remove(&id);
        response.ok_or(MeshError::PeerGone(to))
    }

    /// Completes the call waiting for `envelope`; a response nobody waits
    /// for any more (its caller was dropped) is discarded.
    pub fn complete(&self, envelope: Envelope<Response>) {
        let waiter = self.pending.borrow_mut().remove(&envelope.id);
        if let Some(tx) = waiter {
            // The receiver may be gone if the caller was cancelled.
            let _ = tx.try_send(envelope.body);
        }
    }

    /// Sends the response to a request that came from `to`.
    pub async fn respond(&self, to: usize, id: u64, body: Response) -> Result<(), MeshError> {
        self.responses
            .send_to(to, Envelope { id, body })
            .await
            .map_err(|_| MeshError::PeerGone(to))
    }

    /// Closes the sending halves so that peers' receive loops end.
    pub fn close(&self) {
        self.requests.close();
        self.responses.close();
    }
}
