//! The per-IP request limits (REQUEST_WEIGHT per minute, RAW_REQUESTS per
//! 5 minutes) shared by every shard of every instance through Redis
//! ([`super::gcra`]), with per-shard leases so that not every request waits
//! for Redis.
//!
//! A shard that must admit `weight` for an IP spends it from its lease for
//! that IP when the lease holds enough; otherwise it asks Redis for a new
//! lease of `lease_permille` of the limit (at least what the request
//! needs), paid for in the shared budget before any of it is spent. So the
//! shared count never admits more than the limit while Redis answers
//! (over-admission: none); what a lease holds unspent when it lapses
//! (after `LEASE_MS`) is lost, so an IP may get up to one lease per shard
//! per instance less than the limit in a window (under-admission bound:
//! `shards × instances × lease`). A request refused by the weight limit
//! still counts as a raw request, as on Binance.
//!
//! Redis unavailable (breaker open, no connection, a timeout): the caller
//! falls back to its local limiter, whose limits are divided by
//! `cluster_instances`.
//!
//! A refusal is remembered for the IP until the budget would fit (at most
//! `LEASE_MS`), so a client that keeps going past its limit is refused
//! without a round trip to Redis each time.
//!
//! **Bounds:** at most `keys_max` leases per shard; when full, lapsed ones
//! are dropped first, and a new lease that still does not fit is spent at
//! once rather than kept.

use super::gcra::{Gcra, Limit};
use super::Redis;
use crate::binance;
use crate::limits::{Exceeded, RateLimitConfig, Usage};
use crate::oneshot;
use std::cell::RefCell;
use std::collections::HashMap;
use std::net::IpAddr;

/// How long a lease may be spent from before it lapses.
pub(crate) const LEASE_MS: u64 = 1_000;
/// Renewals a request waits for before it renews alongside.
const RENEWAL_WAITS_MAX: usize = 4;
const MINUTE_MS: u64 = 60_000;
const FIVE_MINUTES_MS: u64 = 300_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kind {
    Weight1m,
    Raw5m,
}

#[derive(Clone, Copy, Debug)]
struct Lease {
    left: u32,
    /// The shared count when the lease was granted (its units included).
    used: u32,
    until_ms: u64,
    /// Redis refused this IP until then: refuse here without asking again
    /// (a client hammering past its limit costs Redis nothing).
    refused_until_ms: u64,
}

/// What the shared limits decided.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Shared {
    Admitted(Usage),
    Refused(Exceeded),
    /// Redis did not answer: use the local limits.
    Unavailable,
}

enum Taken {
    /// Admitted; the shared count after it.
    Ok(u32),
    Refused {
        retry_after_ms: u64,
        used: u32,
    },
    Unavailable,
}

/// One shard's leases.
pub(crate) struct SharedLimiter {
    config: RateLimitConfig,
    gcra: Gcra,
    leases: RefCell<HashMap<(Kind, IpAddr), Lease>>,
    /// Keys whose lease is being renewed, with the tasks waiting for it.
    renewing: RefCell<HashMap<(Kind, IpAddr), Waiters>>,
    lease_permille: u32,
    keys_max: usize,
}

impl SharedLimiter {
    pub(crate) fn new(config: RateLimitConfig, lease_permille: u32) -> SharedLimiter {
        SharedLimiter {
            keys_max: config.limiter_keys_max,
            config,
            gcra: Gcra::default(),
            leases: RefCell::new(HashMap::new()),
            renewing: RefCell::new(HashMap::new()),
            lease_permille,
        }
    }

    /// Counts one request of `weight` from `ip` against the shared limits.
    pub(crate) async fn admit(&self, redis: &Redis, ip: IpAddr, weight: u32, now_ms: u64) -> Shared {
        let config = &self.config;
        let raw = Limit {
            limit: config.raw_requests_per_5m_max,
            period_ms: FIVE_MINUTES_MS,
        };
        let weight_limit = Limit {
            limit: config.request_weight_per_minute_max,
            period_ms: MINUTE_MS,
        };
        match self.take(redis, Kind::Raw5m, ip, 1, raw, now_ms).await {
            Taken::Ok(_) => {}
            Taken::Refused { retry_after_ms, .. } => {
                let msg = format!(
                    "Too many requests; current limit is {} requests per 5 MINUTE.",
                    raw.limit
                );
                return Shared::Refused(exceeded(retry_after_ms, msg, 0));
            }
            Taken::Unavailable => return Shared::Unavailable,
        }
        match self.take(redis, Kind::Weight1m, ip, weight, weight_limit, now_ms).await {
            Taken::Ok(used) => Shared::Admitted(Usage {
                used_weight_1m: used,
                order_count_10s: None,
                order_count_1d: None,
            }),
            Taken::Refused { retry_after_ms, used } => {
                let msg = format!(
                    "Too much request weight used; current limit is {} request weight per 1 MINUTE. \
                     Please use WebSocket Streams for live updates to avoid polling the API.",
                    weight_limit.limit
                );
                Shared::Refused(exceeded(retry_after_ms, msg, used))
            }
            Taken::Unavailable => Shared::Unavailable,
        }
    }

    /// Spends `units` of `limit` for `ip`: from the lease, or from a new
    /// one.
    async fn take(&self, redis: &Redis, kind: Kind, ip: IpAddr, units: u32, limit: Limit, now_ms: u64) -> Taken {
        let key = (kind, ip);
        let mut now_ms = now_ms;
        let mut waits = 0;
        // One renewal per key at a time: the others wait for it and spend
        // from the lease it brings (a lapse would otherwise send every
        // request in flight to Redis for a lease of its own).
        let (have, _renewal) = loop {
            let have = {
                let mut leases = self.leases.borrow_mut();
                match leases.get_mut(&key) {
                    Some(lease) if lease.until_ms > now_ms && lease.left >= units => {
                        lease.left -= units;
                        return Taken::Ok(lease.used - lease.left);
                    }
                    Some(lease) if lease.refused_until_ms > now_ms => {
                        return Taken::Refused {
                            retry_after_ms: lease.refused_until_ms - now_ms,
                            used: lease.used,
                        };
                    }
                    Some(lease) if lease.until_ms > now_ms => lease.left,
                    _ => 0,
                }
            };
            let wait = {
                let mut renewing = self.renewing.borrow_mut();
                match renewing.get_mut(&key) {
                    Some(waiters) if waits < RENEWAL_WAITS_MAX => {
                        let (sender, receiver) = oneshot::channel();
                        waiters.push(sender);
                        Some(receiver)
                    }
                    // Waited long enough: renew alongside.
                    Some(_) => break (have, None),
                    None => {
                        renewing.insert(key, Vec::new());
                        None
                    }
                }
            };
            match wait {
                Some(receiver) => {
                    receiver.await;
                    waits += 1;
                    now_ms = crate::clock::now_ms();
                }
                None => break (have, Some(Renewal { limiter: self, key })),
            }
        };
        let need = units - have;
        let lease_units = (u64::from(limit.limit) * u64::from(self.lease_permille) / 1000) as u32;
        let key = match kind {
            Kind::Weight1m => format!("tradsys:rl:weight1m:{ip}"),
            Kind::Raw5m => format!("tradsys:rl:raw5m:{ip}"),
        };
        let grant = match self.gcra.take(redis, &key, limit, need.max(lease_units), need).await {
            Ok(grant) => grant,
            Err(_) => return Taken::Unavailable,
        };
        let mut leases = self.leases.borrow_mut();
        if grant.granted < need {
            // Remembered for at most a lease's time: a smaller request may
            // fit sooner than this one.
            let refused_until_ms = now_ms + grant.retry_after_ms.min(LEASE_MS);
            if room(&mut leases, (kind, ip), self.keys_max, now_ms) {
                let lease = leases.entry((kind, ip)).or_insert(Lease {
                    left: 0,
                    used: grant.used,
                    until_ms: now_ms,
                    refused_until_ms,
                });
                lease.used = grant.used;
                lease.refused_until_ms = refused_until_ms;
            }
            return Taken::Refused {
                retry_after_ms: grant.retry_after_ms,
                used: grant.used,
            };
        }
        // Another task of this shard may have renewed meanwhile: what its
        // lease holds is added, not lost.
        let before = match leases.get(&(kind, ip)) {
            Some(lease) if lease.until_ms > now_ms => lease.left,
            _ => 0,
        };
        let left = (before + grant.granted).saturating_sub(units);
        let lease = Lease {
            left,
            used: grant.used.max(left),
            until_ms: now_ms + LEASE_MS,
            refused_until_ms: 0,
        };
        if room(&mut leases, (kind, ip), self.keys_max, now_ms) {
            leases.insert((kind, ip), lease);
        }
        Taken::Ok(lease.used - lease.left)
    }

    /// Leases held now (for /metrics).
    pub(crate) fn leases(&self) -> usize {
        self.leases.borrow().len()
    }
}

/// Tasks waiting for a key's renewal.
type Waiters = Vec<oneshot::Sender<()>>;

/// A renewal in flight for a key: when it ends, however it ends, the
/// tasks waiting for it go on.
struct Renewal<'a> {
    limiter: &'a SharedLimiter,
    key: (Kind, IpAddr),
}

impl Drop for Renewal<'_> {
    fn drop(&mut self) {
        let waiters = self.limiter.renewing.borrow_mut().remove(&self.key).unwrap_or_default();
        for waiter in waiters {
            waiter.send(());
        }
    }
}

/// Whether `key` has (or can be given) a place among at most `keys_max`
/// leases; lapsed ones make room first.
fn room(leases: &mut HashMap<(Kind, IpAddr), Lease>, key: (Kind, IpAddr), keys_max: usize, now_ms: u64) -> bool {
    if leases.len() >= keys_max && !leases.contains_key(&key) {
        leases.retain(|_, l| l.until_ms > now_ms || l.refused_until_ms > now_ms);
    }
    leases.len() < keys_max || leases.contains_key(&key)
}

fn exceeded(retry_after_ms: u64, msg: String, used_weight_1m: u32) -> Exceeded {
    Exceeded {
        retry_after_s: u32::try_from(retry_after_ms.div_ceil(1000).max(1)).unwrap_or(u32::MAX),
        code: binance::TOO_MANY_REQUESTS,
        msg,
        used_weight_1m,
    }
}
