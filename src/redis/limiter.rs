//! Binance's limits shared by every shard of every instance through Redis
//! ([`super::gcra`]): REQUEST_WEIGHT per minute and RAW_REQUESTS per 5
//! minutes per IP, WebSocket API connection attempts per 5 minutes per IP,
//! unfilled ORDERS per 10 seconds and per day per user; and the bans of
//! IPs that keep going past 429. Per-shard leases keep Redis off the path
//! of most requests.
//!
//! A shard that must admit `units` for a key spends them from its lease
//! for that key when the lease holds enough; otherwise it asks Redis for a
//! new lease of `lease_permille` of the limit (at least what the request
//! needs), paid for in the shared budget before any of it is spent. So the
//! shared count never admits more than the limit while Redis answers
//! (over-admission: none); what a lease holds unspent when it lapses
//! (after `LEASE_MS`) is lost, so a key may get up to one lease per shard
//! per instance less than the limit in a window (under-admission bound:
//! `shards × instances × lease`). A request refused by the weight limit
//! still counts as a raw request, as on Binance. An order that fills gives
//! its unit back to both ORDERS budgets (Binance counts unfilled orders),
//! from a task of the shard's, off the order's path, gathered for
//! `GIVE_BACK_GATHER_MS` so that a busy user's fills cost Redis one
//! script call per budget rather than one each.
//!
//! Redis unavailable (breaker open, no connection, a timeout): the caller
//! falls back to its local limiter, whose limits are divided by
//! `cluster_instances`.
//!
//! A refusal is remembered for the key until the budget would fit (at most
//! `LEASE_MS`), so a client that keeps going past its limit is refused
//! without a round trip to Redis each time. A ban is kept in Redis beside
//! the IP's budgets: a lease renewal for a banned IP learns of it, so every
//! shard of every instance refuses the IP within `LEASE_MS` of the ban.
//!
//! **Bounds:** at most `keys_max` leases per shard; when full, lapsed ones
//! are dropped first, and a new lease that still does not fit is spent at
//! once rather than kept. At most `keys_max` users wait for their units to
//! be given back; past that, a fill's unit stays counted (stricter, never
//! looser).

use super::gcra::{Gcra, Limit};
use super::{Redis, RedisError};
use crate::binance;
use crate::limits::{Exceeded, RateLimitConfig, Usage};
use crate::oneshot;
use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::rc::Rc;

/// How long a lease may be spent from before it lapses.
pub(crate) const LEASE_MS: u64 = 1_000;
/// How long the units of filled orders gather before they go back to
/// Redis: a user's count stays that much longer higher (stricter).
const GIVE_BACK_GATHER_MS: u64 = 100;
/// Renewals a request waits for before it renews alongside.
const RENEWAL_WAITS_MAX: usize = 4;
const TEN_SECONDS_MS: u64 = 10_000;
const MINUTE_MS: u64 = 60_000;
const FIVE_MINUTES_MS: u64 = 300_000;
const DAY_MS: u64 = 86_400_000;

/// The limits kept in Redis.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kind {
    Weight1m,
    Raw5m,
    Connections5m,
    Orders10s,
    Orders1d,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Weight1m => "weight1m",
            Kind::Raw5m => "raw5m",
            Kind::Connections5m => "connections5m",
            Kind::Orders10s => "orders10s",
            Kind::Orders1d => "orders1d",
        }
    }
}

/// Who a limit counts: a client IP or a user.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Subject {
    Ip(IpAddr),
    User(u64),
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Ip(ip) => write!(f, "{ip}"),
            Subject::User(user) => write!(f, "user{user}"),
        }
    }
}

type Key = (Kind, Subject);

fn redis_key((kind, subject): Key) -> String {
    format!("tradsys:rl:{}:{subject}", kind.name())
}

fn ban_key(ip: IpAddr) -> String {
    format!("tradsys:ban:{ip}")
}

fn ban_level_key(ip: IpAddr) -> String {
    format!("tradsys:banlevel:{ip}")
}

#[derive(Clone, Copy, Debug)]
struct Lease {
    left: u32,
    /// The shared count when the lease was granted (its units included).
    used: u32,
    until_ms: u64,
    /// Redis refused this key until then: refuse here without asking again
    /// (a client hammering past its limit costs Redis nothing).
    refused_until_ms: u64,
}

/// What the shared limits decided.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Shared {
    Admitted(Usage),
    Refused(Exceeded),
    /// The IP is banned for this long (decided by any instance).
    Banned {
        left_ms: u64,
    },
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
    Banned {
        left_ms: u64,
    },
    Unavailable,
}

/// Users whose filled orders' units are on their way back to Redis.
#[derive(Default)]
struct GiveBacks {
    pending: HashMap<u64, u32>,
    running: bool,
}

/// One shard's leases.
pub(crate) struct SharedLimiter {
    config: RateLimitConfig,
    connections_per_5m_max: u32,
    gcra: Rc<Gcra>,
    leases: RefCell<HashMap<Key, Lease>>,
    /// Keys whose lease is being renewed, with the tasks waiting for it.
    renewing: RefCell<HashMap<Key, Waiters>>,
    give_backs: Rc<RefCell<GiveBacks>>,
    lease_permille: u32,
    keys_max: usize,
}

impl SharedLimiter {
    pub(crate) fn new(config: RateLimitConfig, connections_per_5m_max: u32, lease_permille: u32) -> SharedLimiter {
        SharedLimiter {
            keys_max: config.limiter_keys_max,
            config,
            connections_per_5m_max,
            gcra: Rc::new(Gcra::default()),
            leases: RefCell::new(HashMap::new()),
            renewing: RefCell::new(HashMap::new()),
            give_backs: Rc::default(),
            lease_permille,
        }
    }

    fn limit(&self, kind: Kind) -> Limit {
        let config = &self.config;
        let (limit, period_ms) = match kind {
            Kind::Weight1m => (config.request_weight_per_minute_max, MINUTE_MS),
            Kind::Raw5m => (config.raw_requests_per_5m_max, FIVE_MINUTES_MS),
            Kind::Connections5m => (self.connections_per_5m_max, FIVE_MINUTES_MS),
            Kind::Orders10s => (config.orders_per_10s_max, TEN_SECONDS_MS),
            Kind::Orders1d => (config.orders_per_day_max, DAY_MS),
        };
        Limit { limit, period_ms }
    }

    /// Counts one request of `weight` from `ip` against the shared limits.
    pub(crate) async fn admit(&self, redis: &Redis, ip: IpAddr, weight: u32, now_ms: u64) -> Shared {
        let subject = Subject::Ip(ip);
        match self.take(redis, (Kind::Raw5m, subject), 1, now_ms).await {
            Taken::Ok(_) => {}
            Taken::Refused { retry_after_ms, .. } => {
                let msg = format!(
                    "Too many requests; current limit is {} requests per 5 MINUTE.",
                    self.config.raw_requests_per_5m_max
                );
                return Shared::Refused(exceeded(retry_after_ms, binance::TOO_MANY_REQUESTS, msg, 0));
            }
            Taken::Banned { left_ms } => return Shared::Banned { left_ms },
            Taken::Unavailable => return Shared::Unavailable,
        }
        match self.take(redis, (Kind::Weight1m, subject), weight, now_ms).await {
            Taken::Ok(used) => Shared::Admitted(Usage {
                used_weight_1m: used,
                order_count_10s: None,
                order_count_1d: None,
            }),
            Taken::Refused { retry_after_ms, used } => {
                let msg = format!(
                    "Too much request weight used; current limit is {} request weight per 1 MINUTE. \
                     Please use WebSocket Streams for live updates to avoid polling the API.",
                    self.config.request_weight_per_minute_max
                );
                Shared::Refused(exceeded(retry_after_ms, binance::TOO_MANY_REQUESTS, msg, used))
            }
            Taken::Banned { left_ms } => Shared::Banned { left_ms },
            Taken::Unavailable => Shared::Unavailable,
        }
    }

    /// Counts one WebSocket API connection attempt from `ip` (its weight
    /// is the caller's to count with [`SharedLimiter::admit`]).
    pub(crate) async fn admit_connection(&self, redis: &Redis, ip: IpAddr, now_ms: u64) -> Shared {
        match self
            .take(redis, (Kind::Connections5m, Subject::Ip(ip)), 1, now_ms)
            .await
        {
            Taken::Ok(_) => Shared::Admitted(Usage {
                used_weight_1m: 0,
                order_count_10s: None,
                order_count_1d: None,
            }),
            Taken::Refused { retry_after_ms, .. } => {
                let msg = format!(
                    "Too many connection attempts from IP; current limit is {} per '5 MINUTE'.",
                    self.connections_per_5m_max
                );
                Shared::Refused(exceeded(retry_after_ms, binance::TOO_MANY_CONNECTIONS, msg, 0))
            }
            Taken::Banned { left_ms } => Shared::Banned { left_ms },
            Taken::Unavailable => Shared::Unavailable,
        }
    }

    /// Counts one order of `user` against both ORDERS limits.
    pub(crate) async fn admit_order(&self, redis: &Redis, user: u64, now_ms: u64) -> Shared {
        let subject = Subject::User(user);
        let count_10s = match self.take(redis, (Kind::Orders10s, subject), 1, now_ms).await {
            Taken::Ok(used) => used,
            Taken::Refused { retry_after_ms, .. } => return self.orders_refused(Kind::Orders10s, retry_after_ms),
            Taken::Banned { left_ms } => return Shared::Banned { left_ms },
            Taken::Unavailable => return Shared::Unavailable,
        };
        match self.take(redis, (Kind::Orders1d, subject), 1, now_ms).await {
            Taken::Ok(count_1d) => Shared::Admitted(Usage {
                used_weight_1m: 0,
                order_count_10s: Some(count_10s),
                order_count_1d: Some(count_1d),
            }),
            other => {
                // Not placed: its unit of the 10 s budget goes back to the
                // lease it came from.
                self.unspend((Kind::Orders10s, subject), now_ms);
                match other {
                    Taken::Refused { retry_after_ms, .. } => self.orders_refused(Kind::Orders1d, retry_after_ms),
                    Taken::Banned { left_ms } => Shared::Banned { left_ms },
                    Taken::Ok(_) | Taken::Unavailable => Shared::Unavailable,
                }
            }
        }
    }

    fn orders_refused(&self, kind: Kind, retry_after_ms: u64) -> Shared {
        let (limit, per) = match kind {
            Kind::Orders10s => (self.config.orders_per_10s_max, "10 SECOND"),
            _ => (self.config.orders_per_day_max, "1 DAY"),
        };
        let msg = format!("Too many new orders; current limit is {limit} orders per {per}.");
        Shared::Refused(exceeded(retry_after_ms, binance::TOO_MANY_ORDERS, msg, 0))
    }

    /// `user`'s shared ORDERS counts (10 s, day), counting nothing; what
    /// other shards hold leased but unspent is counted as used.
    pub(crate) async fn order_counts(&self, redis: &Redis, user: u64) -> Result<(u32, u32), RedisError> {
        let mut counts = [0; 2];
        for (count, kind) in counts.iter_mut().zip([Kind::Orders10s, Kind::Orders1d]) {
            let key = (kind, Subject::User(user));
            let grant = self.gcra.take(redis, &redis_key(key), self.limit(kind), 0, 0).await?;
            let unspent = self.leases.borrow().get(&key).map_or(0, |l| l.left);
            *count = grant.used.saturating_sub(unspent);
        }
        Ok((counts[0], counts[1]))
    }

    /// Orders of `users` traded for the first time: each gives its unit
    /// back to both ORDERS budgets, from a task of this shard's.
    pub(crate) fn orders_filled(&self, redis: &Redis, users: &[u64]) {
        let mut give_backs = self.give_backs.borrow_mut();
        for &user in users {
            if give_backs.pending.len() < self.keys_max || give_backs.pending.contains_key(&user) {
                *give_backs.pending.entry(user).or_insert(0) += 1;
            }
        }
        if give_backs.running || give_backs.pending.is_empty() {
            return;
        }
        give_backs.running = true;
        drop(give_backs);
        let limits = (self.limit(Kind::Orders10s), self.limit(Kind::Orders1d));
        let task = give_back(self.give_backs.clone(), self.gcra.clone(), redis.clone(), limits);
        glommio::spawn_local(task).detach();
    }

    /// Bans `ip` in Redis: the ban in force (its length and level).
    pub(crate) async fn ban(&self, redis: &Redis, ip: IpAddr) -> Result<(u64, u32), RedisError> {
        self.gcra.ban(redis, &ban_key(ip), &ban_level_key(ip)).await
    }

    /// Spends `units` for `key`: from the lease, or from a new one.
    async fn take(&self, redis: &Redis, key: Key, units: u32, now_ms: u64) -> Taken {
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
        let limit = self.limit(key.0);
        let need = units - have;
        let lease_units = (u64::from(limit.limit) * u64::from(self.lease_permille) / 1000) as u32;
        let ban = match key.1 {
            Subject::Ip(ip) => Some(ban_key(ip)),
            Subject::User(_) => None,
        };
        let taken = self
            .gcra
            .take_unless_banned(
                redis,
                &redis_key(key),
                ban.as_deref(),
                limit,
                need.max(lease_units),
                need,
            )
            .await;
        let grant = match taken {
            Ok(grant) => grant,
            Err(_) => return Taken::Unavailable,
        };
        if grant.banned {
            return Taken::Banned {
                left_ms: grant.retry_after_ms,
            };
        }
        let mut leases = self.leases.borrow_mut();
        if grant.granted < need {
            // Remembered for at most a lease's time: a smaller request may
            // fit sooner than this one.
            let refused_until_ms = now_ms + grant.retry_after_ms.min(LEASE_MS);
            if room(&mut leases, key, self.keys_max, now_ms) {
                let lease = leases.entry(key).or_insert(Lease {
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
        let before = match leases.get(&key) {
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
        if room(&mut leases, key, self.keys_max, now_ms) {
            leases.insert(key, lease);
        }
        Taken::Ok(lease.used - lease.left)
    }

    /// Returns one unit spent for `key` to its lease, if it still runs.
    fn unspend(&self, key: Key, now_ms: u64) {
        if let Some(lease) = self.leases.borrow_mut().get_mut(&key) {
            if lease.until_ms > now_ms {
                lease.left += 1;
            }
        }
    }

    /// Leases held now (for /metrics).
    pub(crate) fn leases(&self) -> usize {
        self.leases.borrow().len()
    }
}

/// Gives the pending units of filled orders back to Redis until none are
/// left. A give-back Redis does not take is dropped: the count stays
/// higher than Binance's (stricter) until the window refills.
async fn give_back(give_backs: Rc<RefCell<GiveBacks>>, gcra: Rc<Gcra>, redis: Redis, limits: (Limit, Limit)) {
    loop {
        // Fills that come close together give their units back in one
        // script call per user and budget, not one per fill.
        glommio::timer::sleep(std::time::Duration::from_millis(GIVE_BACK_GATHER_MS)).await;
        let batch: Vec<(u64, u32)> = {
            let mut give_backs = give_backs.borrow_mut();
            if give_backs.pending.is_empty() {
                give_backs.running = false;
                return;
            }
            give_backs.pending.drain().collect()
        };
        for (user, units) in batch {
            let subject = Subject::User(user);
            for (kind, limit) in [(Kind::Orders10s, limits.0), (Kind::Orders1d, limits.1)] {
                // Dropped on failure (see above).
                let _ = gcra.give_back(&redis, &redis_key((kind, subject)), limit, units).await;
            }
        }
    }
}

/// Tasks waiting for a key's renewal.
type Waiters = Vec<oneshot::Sender<()>>;

/// A renewal in flight for a key: when it ends, however it ends, the
/// tasks waiting for it go on.
struct Renewal<'a> {
    limiter: &'a SharedLimiter,
    key: Key,
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
fn room(leases: &mut HashMap<Key, Lease>, key: Key, keys_max: usize, now_ms: u64) -> bool {
    if leases.len() >= keys_max && !leases.contains_key(&key) {
        leases.retain(|_, l| l.until_ms > now_ms || l.refused_until_ms > now_ms);
    }
    leases.len() < keys_max || leases.contains_key(&key)
}

fn exceeded(retry_after_ms: u64, code: i32, msg: String, used_weight_1m: u32) -> Exceeded {
    Exceeded {
        status: Exceeded::STATUS,
        retry_after_s: u32::try_from(retry_after_ms.div_ceil(1000).max(1)).unwrap_or(u32::MAX),
        code,
        msg,
        used_weight_1m,
    }
}
