//! Messages from other shards: one receive loop per peer. Receive loops
//! never wait on anything but their channel: engine messages run to
//! completion at once, calls run as tasks (at most
//! `MESH_CALLS_IN_FLIGHT_MAX`), replies complete the local waiters.

use crate::api;
use crate::api::host::Host;
use crate::server::mesh::{Call, Reply, ShardMsg, StreamMsg};
use crate::server::publish;
use crate::server::shard::Shard;
use glommio::channels::channel_mesh::Receivers;
use std::rc::Rc;

/// Calls from other shards running here at once; more are answered with
/// `Reply::Overloaded` at once instead of queueing without bound.
const MESH_CALLS_IN_FLIGHT_MAX: usize = 4096;

/// Starts one receive loop per peer. Receive loops never wait on anything
/// but their channel: engine messages run to completion at once, calls run
/// as tasks, replies complete local waiters.
pub(super) fn spawn_receivers(shard: &Rc<Shard>, mut receivers: Receivers<ShardMsg>) -> Vec<glommio::Task<()>> {
    receivers
        .streams()
        .into_iter()
        .map(|(peer, receiver)| {
            let shard = shard.clone();
            glommio::spawn_local(async move {
                while let Some(msg) = receiver.recv().await {
                    shard.metrics_mut().mesh_received += 1;
                    on_message(&shard, peer, msg);
                }
            })
        })
        .collect()
}

fn on_message(shard: &Rc<Shard>, from: usize, msg: ShardMsg) {
    match msg {
        ShardMsg::Reply { id, epoch, reply } => {
            shard.log.observe(epoch);
            shard.mesh.complete(id, reply);
        }
        ShardMsg::SealWanted { epoch } => {
            if shard.log.requested(from, epoch) {
                // A peer that is gone waits for nothing.
                let _ = shard.mesh.send(from, ShardMsg::Durable);
            }
        }
        ShardMsg::Durable => shard.log.wake_settled(),
        ShardMsg::Engine { epoch, seq, msg } => {
            shard.log.observe(epoch);
            shard.trading.borrow_mut().receive(from as u32, seq, msg);
            shard.flush_engine();
        }
        ShardMsg::Stream(StreamMsg::Unsubscribe { key, shard: from }) => publish::remove_shard(shard, key, from),
        ShardMsg::Stream(StreamMsg::CloseRemote { reason, before }) => {
            publish::close_remote_streams(shard, &reason, before)
        }
        ShardMsg::Stream(StreamMsg::Event(event)) => publish::publish_local(shard, &event),
        ShardMsg::Stream(StreamMsg::UserUnsubscribe { user, shard: from }) => {
            shard.streams.borrow_mut().remove_user_connection(user, from);
        }
        ShardMsg::Stream(StreamMsg::User(event, time_ms)) => publish::publish_user_local(shard, &event, time_ms),
        ShardMsg::Call { id, epoch, call } => {
            shard.log.observe(epoch);
            if shard.calls_in_flight.get() >= MESH_CALLS_IN_FLIGHT_MAX {
                let _ = shard.mesh.send(
                    from,
                    ShardMsg::Reply {
                        id,
                        epoch: shard.log.epoch(),
                        reply: Reply::Overloaded,
                    },
                );
                return;
            }
            shard.calls_in_flight.set(shard.calls_in_flight.get() + 1);
            let shard = shard.clone();
            glommio::spawn_local(async move {
                let reply = answer(&shard, call).await;
                shard.calls_in_flight.set(shard.calls_in_flight.get() - 1);
                shard.metrics_mut().mesh_sent += 1;
                // The caller's shard may be shutting down; it then sees PeerGone.
                let epoch = shard.log.epoch();
                let _ = shard.mesh.send(from, ShardMsg::Reply { id, epoch, reply });
            })
            .detach();
        }
    }
}

async fn answer(shard: &Shard, call: Call) -> Reply {
    match call {
        Call::Api(call) => Reply::Api(api::answer(shard, call).await),
        Call::UserStream { key, shard: from } => Reply::UserStream(publish::attach_user(shard, &key, from)),
        Call::Subscribe { key, shard: from } => {
            publish::attach_stream(shard, key, from);
            Reply::Subscribed
        }
    }
}
