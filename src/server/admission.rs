//! Admission: whether a request may start, decided before it does any
//! work, so that overload is shed early and admitted requests keep their
//! latency. A refusal is typed (`limits::Refusal`); the API layer turns it
//! into Binance's reply.
//!
//! With Redis the limits are shared by every instance; while Redis does
//! not answer, the local limits (divided by `cluster_instances`) decide.
//! An IP that keeps going past 429 is banned (418): the ban is decided on
//! the shard that counts the refusals, kept in Redis when there is one,
//! and refused on every shard that learns of it.

use crate::limits::{banned, Ban, Exceeded, RateLimiter, Refusal, Strike, Usage};
use crate::redis::limiter::Shared;
use crate::server::shard::Shard;
use std::net::IpAddr;
use tradsys_engine::order::UserId;

/// Counts a request's weight against its client IP. An overloaded mesh or
/// journal refuses everything (503); a rate limit refuses the IP (429), a
/// ban too (418).
pub(super) async fn admit_request(shard: &Shard, ip: IpAddr, weight: u32, now_ms: u64) -> Result<Usage, Refusal> {
    open_to(shard, ip, now_ms)?;
    count_weight(shard, ip, weight, now_ms).await
}

/// Counts `weight` against `ip`'s limits (after [`open_to`]).
async fn count_weight(shard: &Shard, ip: IpAddr, weight: u32, now_ms: u64) -> Result<Usage, Refusal> {
    if let (Some(redis), Some(shared)) = (&shard.redis, &shard.shared_limits) {
        let decided = shared.admit(redis, ip, weight, now_ms).await;
        if let Some(decided) = shared_decision(shard, ip, decided, now_ms).await {
            return decided;
        }
    }
    let admitted = shard
        .request_limiter
        .borrow_mut()
        .admit(ip, None, weight, false, now_ms);
    match admitted {
        Ok(usage) => Ok(usage),
        Err(exceeded) => Err(refused_ip(shard, ip, exceeded, now_ms).await),
    }
}

/// Counts a WebSocket API connection from `ip`: one attempt against the
/// attempts per 5 minutes, and its weight.
pub(super) async fn admit_connection(shard: &Shard, ip: IpAddr, weight: u32, now_ms: u64) -> Result<Usage, Refusal> {
    open_to(shard, ip, now_ms)?;
    let shared = match (&shard.redis, &shard.shared_limits) {
        (Some(redis), Some(shared)) => {
            let decided = shared.admit_connection(redis, ip, now_ms).await;
            shared_decision(shard, ip, decided, now_ms).await
        }
        _ => None,
    };
    match shared {
        Some(decided) => decided.map(|_| ())?,
        None => {
            let attempt = shard.ws_api_attempts.borrow_mut().admit(ip, now_ms);
            attempt.map_err(|e| limited(shard, e))?;
        }
    }
    count_weight(shard, ip, weight, now_ms).await
}

/// Counts an order of `user` (owned here) against the ORDERS limits.
pub(super) async fn admit_order(shard: &Shard, user: UserId, now_ms: u64) -> Result<Usage, Refusal> {
    if let (Some(redis), Some(shared)) = (&shard.redis, &shard.shared_limits) {
        match shared.admit_order(redis, user, now_ms).await {
            Shared::Admitted(usage) => return Ok(usage),
            Shared::Refused(exceeded) => return Err(limited(shard, exceeded)),
            // Users are not banned; only IPs are.
            Shared::Banned { .. } | Shared::Unavailable => shard.metrics.borrow_mut().redis.limit_fallbacks += 1,
        }
    }
    let admitted = shard.order_limiter.borrow_mut().admit_user_order(user, now_ms);
    admitted.map_err(|e| limited(shard, e))
}

/// `user`'s ORDERS counts (10 s, day): the shared ones with Redis, this
/// shard's while Redis does not answer.
pub(super) async fn order_counts(shard: &Shard, user: UserId, now_ms: u64) -> (u32, u32) {
    if let (Some(redis), Some(shared)) = (&shard.redis, &shard.shared_limits) {
        if let Ok(counts) = shared.order_counts(redis, user).await {
            return counts;
        }
    }
    shard.order_limiter.borrow_mut().user_order_counts(user, now_ms)
}

/// Orders of `users` traded for the first time: Binance's unfilled order
/// counts go down.
pub(super) fn orders_filled(shard: &Shard, users: &[UserId]) {
    let now_ms = crate::clock::now_ms();
    let mut limiter = shard.order_limiter.borrow_mut();
    for &user in users {
        limiter.order_filled(user, now_ms);
    }
    if let (Some(redis), Some(shared)) = (&shard.redis, &shard.shared_limits) {
        shared.orders_filled(redis, users);
    }
}

/// 503 while the shard's mesh outboxes or journal are full; 418 while
/// `ip` is banned.
fn open_to(shard: &Shard, ip: IpAddr, now_ms: u64) -> Result<(), Refusal> {
    if shard.mesh.queued() > shard.outbox_max || !shard.log.has_room() {
        return Err(Refusal::Busy);
    }
    shard.bans.borrow().check(ip, now_ms).map_err(|e| limited(shard, e))
}

/// What the shared limits decided, as the caller's answer; `None` when
/// Redis did not answer and the local limits must decide.
async fn shared_decision(shard: &Shard, ip: IpAddr, decided: Shared, now_ms: u64) -> Option<Result<Usage, Refusal>> {
    match decided {
        Shared::Admitted(usage) => Some(Ok(usage)),
        Shared::Refused(exceeded) => Some(Err(refused_ip(shard, ip, exceeded, now_ms).await)),
        Shared::Banned { left_ms } => {
            let until_ms = now_ms + left_ms;
            // Learnt from Redis: the level stays the one this shard knows.
            let level = 0;
            shard.bans.borrow_mut().impose(ip, Ban { until_ms, level }, now_ms);
            Some(Err(limited(shard, banned(until_ms, now_ms))))
        }
        Shared::Unavailable => {
            shard.metrics.borrow_mut().redis.limit_fallbacks += 1;
            None
        }
    }
}

/// A refusal of `ip` by a limit: one strike towards a ban when it is an IP
/// limit; the strike that passes the limit bans the IP, in Redis when it
/// answers (so that the level grows over every instance), here otherwise.
async fn refused_ip(shard: &Shard, ip: IpAddr, exceeded: Exceeded, now_ms: u64) -> Refusal {
    if !exceeded.is_ip_limit() {
        return limited(shard, exceeded);
    }
    strike(shard, ip, Strike::Refused, now_ms).await;
    limited(shard, exceeded)
}

/// `ip` failed authentication: one strike towards a ban.
pub(super) async fn auth_failed(shard: &Shard, ip: IpAddr, now_ms: u64) {
    strike(shard, ip, Strike::AuthFailed, now_ms).await;
}

/// Counts a strike of `ip`; past its limit, bans it (shared through Redis
/// when there is one).
async fn strike(shard: &Shard, ip: IpAddr, strike: Strike, now_ms: u64) {
    let level = shard.bans.borrow_mut().strike(ip, strike, now_ms);
    if let Some(level) = level {
        let shared = match (&shard.redis, &shard.shared_limits) {
            (Some(redis), Some(shared)) => shared.ban(redis, ip).await.ok(),
            _ => None,
        };
        let ban = match shared {
            Some((ms, level)) => Ban {
                until_ms: now_ms + ms,
                level,
            },
            None => Ban {
                until_ms: now_ms + crate::limits::ban_ms(level),
                level,
            },
        };
        shard.bans.borrow_mut().impose(ip, ban, now_ms);
        shard.metrics.borrow_mut().ip_bans += 1;
        let why = match strike {
            Strike::Refused => "it kept going past 429",
            Strike::AuthFailed => "too many failed authentications",
        };
        eprintln!(
            "shard {}: banned {ip} until {} (ban {} in a row): {why}",
            shard.index, ban.until_ms, ban.level
        );
    }
}

/// Counts a refusal by a limit or a ban.
fn limited(shard: &Shard, exceeded: Exceeded) -> Refusal {
    let mut metrics = shard.metrics.borrow_mut();
    if exceeded.status == Exceeded::BANNED {
        metrics.banned_requests += 1;
    } else {
        metrics.rate_limited += 1;
    }
    Refusal::Limited(exceeded)
}
