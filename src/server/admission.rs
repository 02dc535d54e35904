//! Admission: whether a request may start, decided before it does any
//! work, so that overload is shed early and admitted requests keep their
//! latency. A refusal is typed (`limits::Refusal`); the API layer turns it
//! into Binance's reply.

use crate::limits::{RateLimiter, Refusal, Usage};
use crate::redis::limiter::Shared;
use crate::server::shard::Shard;
use std::net::IpAddr;
use tradsys_engine::order::UserId;

/// Counts a request's weight against its client IP. An overloaded mesh or
/// journal refuses everything (503); a rate limit refuses the IP (429).
/// With Redis the limits are shared by every instance; while Redis does
/// not answer, the local limits (divided by `cluster_instances`) decide.
pub(super) async fn admit_request(shard: &Shard, ip: IpAddr, weight: u32, now_ms: u64) -> Result<Usage, Refusal> {
    if shard.mesh.queued() > shard.outbox_max || !shard.log.has_room() {
        return Err(Refusal::Busy);
    }
    if let (Some(redis), Some(shared)) = (&shard.redis, &shard.shared_limits) {
        match shared.admit(redis, ip, weight, now_ms).await {
            Shared::Admitted(usage) => return Ok(usage),
            Shared::Refused(exceeded) => {
                shard.metrics.borrow_mut().rate_limited += 1;
                return Err(Refusal::Limited(exceeded));
            }
            Shared::Unavailable => shard.metrics.borrow_mut().redis.limit_fallbacks += 1,
        }
    }
    admit_request_local(shard, ip, weight, now_ms)
}

/// [`admit_request`] against this shard's own counts only.
pub(super) fn admit_request_local(shard: &Shard, ip: IpAddr, weight: u32, now_ms: u64) -> Result<Usage, Refusal> {
    if shard.mesh.queued() > shard.outbox_max || !shard.log.has_room() {
        return Err(Refusal::Busy);
    }
    let admitted = shard
        .request_limiter
        .borrow_mut()
        .admit(ip, None, weight, false, now_ms);
    admitted.map_err(|exceeded| {
        shard.metrics.borrow_mut().rate_limited += 1;
        Refusal::Limited(exceeded)
    })
}

/// Counts an order of `user` (owned here) against the ORDERS limits.
pub(super) fn admit_order(shard: &Shard, user: UserId, now_ms: u64) -> Result<Usage, Refusal> {
    let admitted = shard.order_limiter.borrow_mut().admit_user_order(user, now_ms);
    admitted.map_err(|exceeded| {
        shard.metrics.borrow_mut().rate_limited += 1;
        Refusal::Limited(exceeded)
    })
}

/// Orders of `users` traded for the first time: Binance's unfilled order
/// counts go down.
pub(super) fn orders_filled(shard: &Shard, users: &[UserId]) {
    let now_ms = crate::clock::now_ms();
    let mut limiter = shard.order_limiter.borrow_mut();
    for &user in users {
        limiter.order_filled(user, now_ms);
    }
}
