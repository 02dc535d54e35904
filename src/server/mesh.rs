//! Cross-shard messages over glommio's channel mesh.
//!
//! One full mesh of bounded channels connects every pair of shards. Nothing
//! on a shard ever awaits a send into it directly: every message goes into
//! a per-peer outbox (a local queue) that a forwarder task drains into the
//! mesh. Receive loops therefore never block on a full channel, which rules
//! out the deadlock where two shards each wait to send to the other. The
//! outboxes are bounded by admission: a shard whose outboxes hold more than
//! `mesh_outbox_messages_max` refuses new work with 503 (see `admission`).
//!
//! Messages between one pair of shards arrive in the order they were sent;
//! the engine relies on it (a book's fills reach an account machine before
//! the order's final state). Only plain `Send` data crosses: no
//! serialization, no shared state. Peer ids equal shard indexes because
//! shards join in index order (checked at start-up).

use crate::api::peer::{CallError, PeerCall, PeerReply};
use crate::oneshot;
use crate::streams::{StreamEvent, StreamKey, UserAttach, UserEvent};
use crate::trading::msg::EngineMsg;
use glommio::channels::channel_mesh::{Full, MeshBuilder, Receivers, Senders};
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use tradsys_engine::order::UserId;

/// What one shard asks of another and waits for.
#[derive(Debug)]
pub(crate) enum Call {
    /// A request of the API layer (see `api::peer`).
    Api(PeerCall),
    /// The caller's shard has its first local subscriber of `key`, a
    /// stream of a market the callee owns: send it the stream's events.
    /// Answered once the callee sends them, so a client told "subscribed"
    /// misses nothing that happens after.
    Subscribe { key: StreamKey, shard: usize },
    /// A user data stream connection on `shard` with listen key `key` of a
    /// user the callee owns: validate the key, count the connection
    /// against the user's cap and send the user's events.
    UserStream { key: String, shard: usize },
}

/// Answers to `Call`s.
#[derive(Debug)]
pub(crate) enum Reply {
    Api(PeerReply),
    Subscribed,
    /// The listen key's user, or why the connection is refused.
    UserStream(UserAttach),
    /// The callee had too many calls in flight and did not run this one.
    Overloaded,
}

/// Everything that travels between shards.
#[derive(Debug)]
pub(crate) enum ShardMsg {
    /// `epoch` (here and in `Reply`) is the sender's journal epoch: the
    /// receiver's records after it may depend on the sender's records up to
    /// it, so the receiver raises its own epoch to it (see
    /// `durability::epoch`).
    Call {
        id: u64,
        epoch: u64,
        call: Call,
    },
    Reply {
        id: u64,
        epoch: u64,
        reply: Reply,
    },
    /// The `seq`-th engine message on this link, sent in `epoch` (see
    /// `durability`): the receiver journals it in that epoch or a later one.
    Engine {
        epoch: u64,
        seq: u64,
        msg: EngineMsg,
    },
    /// Responses on the sender wait for the receiver to seal `epoch`
    /// (see `durability::epoch`).
    SealWanted {
        epoch: u64,
    },
    /// The receiver's durable epoch now covers what the sender asked for.
    Durable,
    /// Stream fan-out: subscriptions ending, and events for subscribers.
    Stream(StreamMsg),
}

/// One-way stream traffic between a market's shard and the shards that
/// hold its subscribers.
#[derive(Debug)]
pub(crate) enum StreamMsg {
    /// The sender's shard lost its last local subscriber of `key`.
    Unsubscribe { key: StreamKey, shard: usize },
    /// One event, sent once to each shard with subscribers.
    Event(Box<StreamEvent>),
    /// The sender's shard closed one stream connection of `user`.
    UserUnsubscribe { user: UserId, shard: usize },
    /// The links to other instances are down: end the streams of their
    /// markets subscribed before `before` (see
    /// `publish::close_remote_streams`).
    CloseRemote { reason: String, before: std::time::Instant },
    /// One event of a user (an order change, a transfer, a listen key
    /// closing), sent once to each shard holding the user's stream
    /// connections, with the time it was published.
    User(Box<UserEvent>, u64),
}

/// The mesh before shards join; cloned into every shard.
#[derive(Clone)]
pub(crate) struct MeshBuilders {
    mesh: MeshBuilder<ShardMsg, Full>,
}

impl MeshBuilders {
    pub(crate) fn new(shards: usize, channel_capacity: usize) -> MeshBuilders {
        MeshBuilders {
            mesh: MeshBuilder::full(shards, channel_capacity),
        }
    }

    /// Joins the mesh (returns once every shard has joined) and starts one
    /// forwarder task per peer.
    pub(crate) async fn join(self, shard: usize) -> Result<(Mesh, Receivers<ShardMsg>), String> {
        let (senders, receivers) = self.mesh.join().await.map_err(|_| "joining the mesh failed")?;
        if senders.peer_id() != shard {
            return Err(format!(
                "shard {shard} joined the mesh as peer {}: shards must start in index order",
                senders.peer_id()
            ));
        }
        let shards = senders.nr_consumers();
        let senders = Rc::new(senders);
        let mut outboxes = Vec::with_capacity(shards);
        let mut forwarders = Vec::with_capacity(shards);
        for peer in 0..shards {
            if peer == shard {
                outboxes.push(None);
                continue;
            }
            let (tx, rx) = local_channel::new_unbounded();
            outboxes.push(Some(tx));
            forwarders.push(glommio::spawn_local(forward(senders.clone(), peer, rx)));
        }
        let mesh = Mesh {
            shard,
            shards,
            epoch: Rc::new(Cell::new(1)),
            outboxes,
            pending: RefCell::new(HashMap::new()),
            next_id: Cell::new(0),
            forwarders: RefCell::new(forwarders),
            senders,
        };
        Ok((mesh, receivers))
    }
}

async fn forward(senders: Rc<Senders<ShardMsg>>, peer: usize, outbox: LocalReceiver<ShardMsg>) {
    while let Some(msg) = outbox.recv().await {
        if senders.send_to(peer, msg).await.is_err() {
            return;
        }
    }
}

/// One shard's end of the mesh. `!Send`: it lives on its shard.
pub(crate) struct Mesh {
    shard: usize,
    shards: usize,
    /// This shard's journal epoch, shared with its `ShardLog`: calls carry
    /// it.
    epoch: Rc<Cell<u64>>,
    outboxes: Vec<Option<LocalSender<ShardMsg>>>,
    pending: RefCell<HashMap<u64, oneshot::Sender<Reply>>>,
    next_id: Cell<u64>,
    forwarders: RefCell<Vec<glommio::Task<()>>>,
    senders: Rc<Senders<ShardMsg>>,
}

impl Mesh {
    pub(crate) fn shards(&self) -> usize {
        self.shards
    }

    /// The cell holding this shard's journal epoch.
    pub(crate) fn epoch_cell(&self) -> Rc<Cell<u64>> {
        self.epoch.clone()
    }

    /// Messages waiting in this shard's outboxes.
    pub(crate) fn queued(&self) -> usize {
        self.outboxes.iter().flatten().map(LocalSender::len).sum()
    }

    /// Queues `msg` for shard `to`; never waits.
    pub(crate) fn send(&self, to: usize, msg: ShardMsg) -> Result<(), CallError> {
        assert!(
            to != self.shard && to < self.shards,
            "mesh send from shard {} to {to}",
            self.shard
        );
        let outbox = self.outboxes[to].as_ref().ok_or(CallError::PeerGone(to))?;
        outbox.try_send(msg).map_err(|_| CallError::PeerGone(to))
    }

    /// Sends `call` to shard `to` and waits for its reply.
    pub(crate) async fn call(&self, to: usize, call: Call) -> Result<Reply, CallError> {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let (tx, rx) = oneshot::channel();
        self.pending.borrow_mut().insert(id, tx);
        let epoch = self.epoch.get();
        if let Err(e) = self.send(to, ShardMsg::Call { id, epoch, call }) {
            self.pending.borrow_mut().remove(&id);
            return Err(e);
        }
        match rx.await {
            Some(Reply::Overloaded) => Err(CallError::Overloaded(to)),
            Some(reply) => Ok(reply),
            None => Err(CallError::PeerGone(to)),
        }
    }

    /// Completes the call waiting for reply `id`; a reply nobody waits for
    /// any more (its caller was dropped) is discarded.
    pub(crate) fn complete(&self, id: u64, reply: Reply) {
        let waiter = self.pending.borrow_mut().remove(&id);
        if let Some(tx) = waiter {
            tx.send(reply);
        }
    }

    /// Stops the forwarders and closes the mesh so that peers' receive loops
    /// end; callers still waiting see `PeerGone`.
    pub(crate) async fn close(&self) {
        let forwarders: Vec<_> = self.forwarders.borrow_mut().drain(..).collect();
        for task in forwarders {
            task.cancel().await;
        }
        self.pending.borrow_mut().clear();
        self.senders.close();
    }
}
