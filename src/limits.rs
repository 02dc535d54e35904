//! Request rate limits the Binance way: REQUEST_WEIGHT per minute and
//! RAW_REQUESTS per 5 minutes counted per IP, unfilled ORDERS per 10 seconds
//! and per day counted per account; and the weight of every REST endpoint.
//!
//! Limits sit behind the object-safe [`RateLimiter`] trait so that the shard
//! can use the in-process [`LocalLimiter`] today and a Redis-backed limiter
//! shared by every instance later, unchanged. This module does no I/O and
//! reads no clock: the caller passes `now_ms`. The shard handling a request
//! calls [`RateLimiter::admit`] once for it, after routing (and, for order
//! placements, after authentication, so the account is known) and before the
//! request does any work, so that overload is shed before it costs anything.
//!
//! Windows are fixed and aligned to their interval since the Unix epoch, as
//! Binance's are: the weight count resets on the minute, the daily order
//! count at 00:00 UTC. A 429's `Retry-After` is the time left in the window.
//!
//! **Invariant:** memory is bounded. Each counter map holds at most
//! `limiter_keys_max` keys; counters of past windows are dropped when the
//! window turns, and when a map is full the counter started earliest in the
//! current window makes room. Each admit does O(1) work (amortized over the
//! window for dropping past counters).

use crate::binance;
use crate::http::HttpError;
use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::IpAddr;

const MINUTE_MS: u64 = 60_000;
const TEN_SECONDS_MS: u64 = 10_000;
const DAY_MS: u64 = 86_400_000;
const FIVE_MINUTES_MS: u64 = 300_000;

/// The limits, as exchangeInfo publishes them (Binance's defaults), and how
/// many keys each counter map may hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// REQUEST_WEIGHT, per IP, per minute.
    pub request_weight_per_minute_max: u32,
    /// Unfilled ORDERS, per account, per 10 seconds.
    pub orders_per_10s_max: u32,
    /// Unfilled ORDERS, per account, per day (UTC).
    pub orders_per_day_max: u32,
    /// RAW_REQUESTS, per IP, per 5 minutes.
    pub raw_requests_per_5m_max: u32,
    /// Refusals by an IP limit an IP may get in one minute before it is
    /// banned (418).
    pub ip_ban_refusals_per_minute_max: u32,
    /// Failed authentications (unknown or malformed API key, bad
    /// signature) an IP may have in one minute before it is banned (418).
    pub ip_ban_auth_failures_per_minute_max: u32,
    /// Keys (IPs or users) each of the four counter maps may hold.
    pub limiter_keys_max: usize,
}

/// Keys per counter map by default: ~64k IPs or users active in one window.
pub const LIMITER_KEYS_MAX_DEFAULT: usize = 65_536;

impl Default for RateLimitConfig {
    fn default() -> RateLimitConfig {
        RateLimitConfig {
            request_weight_per_minute_max: 6_000,
            orders_per_10s_max: 100,
            orders_per_day_max: 200_000,
            raw_requests_per_5m_max: 61_000,
            ip_ban_refusals_per_minute_max: 300,
            ip_ban_auth_failures_per_minute_max: 60,
            limiter_keys_max: LIMITER_KEYS_MAX_DEFAULT,
        }
    }
}

impl RateLimitConfig {
    /// The limits as exchangeInfo renders them.
    pub(crate) fn rate_limits(&self) -> RateLimits {
        RateLimits {
            request_weight_per_minute_max: self.request_weight_per_minute_max,
            orders_per_10s_max: self.orders_per_10s_max,
            orders_per_day_max: self.orders_per_day_max,
            raw_requests_per_5m_max: self.raw_requests_per_5m_max,
        }
    }
}

/// Binance's published default request limits, as exchangeInfo shows them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RateLimits {
    pub(crate) request_weight_per_minute_max: u32,
    pub(crate) orders_per_10s_max: u32,
    pub(crate) orders_per_day_max: u32,
    pub(crate) raw_requests_per_5m_max: u32,
}

#[cfg(test)]
pub(crate) const RATE_LIMITS_DEFAULT: RateLimits = RateLimits {
    request_weight_per_minute_max: 6000,
    orders_per_10s_max: 100,
    orders_per_day_max: 200_000,
    raw_requests_per_5m_max: 61_000,
};

/// Counts after an admitted request, for the response headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Usage {
    /// `X-MBX-USED-WEIGHT-1M`: this IP's weight in the current minute.
    pub(crate) used_weight_1m: u32,
    /// `X-MBX-ORDER-COUNT-10S`, on order placements only.
    pub(crate) order_count_10s: Option<u32>,
    /// `X-MBX-ORDER-COUNT-1D`, on order placements only.
    pub(crate) order_count_1d: Option<u32>,
}

impl Usage {
    /// The rate-limit headers, each a full `Name: value` line.
    pub(crate) fn headers(&self) -> Vec<String> {
        let mut lines = vec![format!("{}: {}", binance::HEADER_USED_WEIGHT_1M, self.used_weight_1m)];
        if let Some(count) = self.order_count_10s {
            lines.push(format!("{}: {count}", binance::HEADER_ORDER_COUNT_10S));
        }
        if let Some(count) = self.order_count_1d {
            lines.push(format!("{}: {count}", binance::HEADER_ORDER_COUNT_1D));
        }
        lines
    }

    /// The ORDERS headers only (the user's shard adds them; the weight
    /// header comes from the connection's shard).
    pub(crate) fn order_count_headers(&self) -> Vec<String> {
        let mut lines = self.headers();
        lines.remove(0);
        lines
    }
}

/// A request refused by a limit: HTTP 429 with `Retry-After`, or 418
/// while the IP is banned.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{msg}")]
pub(crate) struct Exceeded {
    /// 429, or 418 for a banned IP.
    pub(crate) status: u16,
    /// Seconds until the window that is full turns over, or the ban ends
    /// (at least 1).
    pub(crate) retry_after_s: u32,
    /// -1003 for IP limits, -1015 for order limits.
    pub(crate) code: i32,
    pub(crate) msg: String,
    /// This IP's weight in the current minute, for `X-MBX-USED-WEIGHT-1M`.
    pub(crate) used_weight_1m: u32,
}

impl Exceeded {
    pub(crate) const STATUS: u16 = 429;
    pub(crate) const BANNED: u16 = 418;

    /// Whether an IP limit refused this (a strike towards a ban); order
    /// limits and bans are not.
    pub(crate) fn is_ip_limit(&self) -> bool {
        self.status == Exceeded::STATUS && self.code == binance::TOO_MANY_REQUESTS
    }

    /// The `Retry-After: N` header line.
    pub(crate) fn retry_after_header(&self) -> String {
        format!("Retry-After: {}", self.retry_after_s)
    }
}

impl From<Exceeded> for HttpError {
    fn from(exceeded: Exceeded) -> HttpError {
        HttpError::new(exceeded.status, exceeded.code, exceeded.msg)
    }
}

/// Why a request was refused before it did any work.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The shard sheds load: its mesh outboxes or its journal are full.
    Busy,
    /// A rate limit: 429 with `Retry-After`.
    Limited(Exceeded),
}

/// Admits or refuses requests against the limits. Object-safe and free of
/// any executor, so a limiter shared through Redis can stand in for the
/// local one.
pub(crate) trait RateLimiter {
    /// Counts one request of `weight` from `ip`; order placements
    /// (`is_order`) also count against `user`'s ORDERS limits.
    ///
    /// A request refused by an IP limit counts nothing. A request refused by
    /// an order limit still counts its weight, since the API did the work of
    /// reading and authenticating it, but not as an order.
    fn admit(
        &mut self,
        ip: IpAddr,
        user: Option<u64>,
        weight: u32,
        is_order: bool,
        now_ms: u64,
    ) -> Result<Usage, Exceeded>;

    /// Counts one order of `user` against the ORDERS limits only, for a
    /// server that counts request weight per IP in one place and orders per
    /// user in another (the user's shard). No IP is charged.
    fn admit_user_order(&mut self, user: u64, now_ms: u64) -> Result<Usage, Exceeded>;

    /// An order of `user` traded for the first time: Binance's unfilled
    /// order count goes down by one in every ORDERS window.
    fn order_filled(&mut self, user: u64, now_ms: u64);

    /// `user`'s ORDERS counts now (10 s, day), counting nothing.
    fn user_order_counts(&mut self, user: u64, now_ms: u64) -> (u32, u32);
}

/// Counters for one limit in the current fixed window, one per key.
struct FixedWindow<K> {
    interval_ms: u64,
    limit: u32,
    window_start_ms: u64,
    counts: HashMap<K, u32>,
    /// Keys in the order their counter started in this window; the front is
    /// evicted when the map is full. Always holds exactly the keys of `counts`.
    started: VecDeque<K>,
    keys_max: usize,
}

impl<K: Hash + Eq + Copy> FixedWindow<K> {
    fn new(interval_ms: u64, limit: u32, keys_max: usize) -> FixedWindow<K> {
        assert!(interval_ms > 0 && keys_max > 0);
        FixedWindow {
            interval_ms,
            limit,
            window_start_ms: 0,
            counts: HashMap::new(),
            started: VecDeque::new(),
            keys_max,
        }
    }

    /// Moves to the window holding `now_ms`, dropping every past counter.
    /// A clock that steps back stays in the current window rather than
    /// forgiving what was counted.
    fn roll(&mut self, now_ms: u64) {
        let start = now_ms - now_ms % self.interval_ms;
        if start > self.window_start_ms {
            self.window_start_ms = start;
            self.counts.clear();
            self.started.clear();
        }
    }

    fn used(&self, key: &K) -> u32 {
        self.counts.get(key).copied().unwrap_or(0)
    }

    fn admits(&self, key: &K, amount: u32) -> bool {
        self.used(key).saturating_add(amount) <= self.limit
    }

    fn add(&mut self, key: K, amount: u32) -> u32 {
        if !self.counts.contains_key(&key) {
            self.make_room();
            self.started.push_back(key);
        }
        let count = self.counts.entry(key).or_insert(0);
        *count = count.saturating_add(amount);
        *count
    }

    fn make_room(&mut self) {
        while self.counts.len() >= self.keys_max {
            match self.started.pop_front() {
                Some(oldest) => {
                    self.counts.remove(&oldest);
                }
                None => break,
            }
        }
    }

    fn subtract(&mut self, key: &K, amount: u32) {
        if let Some(count) = self.counts.get_mut(key) {
            *count = count.saturating_sub(amount);
        }
    }

    /// Whole seconds until this window turns over, rounded up, at least 1.
    fn retry_after_s(&self, now_ms: u64) -> u32 {
        let end_ms = self.window_start_ms + self.interval_ms;
        let left_ms = end_ms.saturating_sub(now_ms).min(self.interval_ms);
        u32::try_from(left_ms.div_ceil(1_000).max(1)).unwrap_or(u32::MAX)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.counts.len()
    }
}

/// WebSocket API connection attempts per IP in fixed 5-minute windows
/// (Binance: 300 per 5 minutes).
pub(crate) struct ConnectionAttempts {
    window: FixedWindow<IpAddr>,
}

impl ConnectionAttempts {
    pub(crate) fn new(attempts_per_5m_max: u32, keys_max: usize) -> ConnectionAttempts {
        ConnectionAttempts {
            window: FixedWindow::new(FIVE_MINUTES_MS, attempts_per_5m_max, keys_max),
        }
    }

    /// Counts one attempt from `ip`, or refuses it with the seconds until
    /// the window turns over.
    pub(crate) fn admit(&mut self, ip: IpAddr, now_ms: u64) -> Result<(), Exceeded> {
        self.window.roll(now_ms);
        if !self.window.admits(&ip, 1) {
            let msg = format!(
                "Too many connection attempts from IP; current limit is {} per '5 MINUTE'.",
                self.window.limit
            );
            return Err(exceeded(&self.window, now_ms, binance::TOO_MANY_CONNECTIONS, msg, 0));
        }
        self.window.add(ip, 1);
        Ok(())
    }
}

/// The in-process limiter: exact counts for the IPs and users this shard
/// sees. With several shards or instances each counts only its own traffic;
/// the shared limiter closes that gap.
pub(crate) struct LocalLimiter {
    weight_1m: FixedWindow<IpAddr>,
    raw_5m: FixedWindow<IpAddr>,
    orders_10s: FixedWindow<u64>,
    orders_1d: FixedWindow<u64>,
}

impl LocalLimiter {
    pub(crate) fn new(config: &RateLimitConfig) -> LocalLimiter {
        let keys_max = config.limiter_keys_max;
        LocalLimiter {
            weight_1m: FixedWindow::new(MINUTE_MS, config.request_weight_per_minute_max, keys_max),
            raw_5m: FixedWindow::new(FIVE_MINUTES_MS, config.raw_requests_per_5m_max, keys_max),
            orders_10s: FixedWindow::new(TEN_SECONDS_MS, config.orders_per_10s_max, keys_max),
            orders_1d: FixedWindow::new(DAY_MS, config.orders_per_day_max, keys_max),
        }
    }

    /// Keys held across all counter maps.
    #[cfg(test)]
    pub(crate) fn keys(&self) -> usize {
        self.weight_1m.len() + self.raw_5m.len() + self.orders_10s.len() + self.orders_1d.len()
    }

    fn roll(&mut self, now_ms: u64) {
        self.weight_1m.roll(now_ms);
        self.raw_5m.roll(now_ms);
        self.orders_10s.roll(now_ms);
        self.orders_1d.roll(now_ms);
    }

    fn admit_ip(&mut self, ip: IpAddr, weight: u32, now_ms: u64) -> Result<u32, Exceeded> {
        let used_weight_1m = self.weight_1m.used(&ip);
        if !self.weight_1m.admits(&ip, weight) {
            let msg = format!(
                "Too much request weight used; current limit is {} request weight per 1 MINUTE. \
                 Please use WebSocket Streams for live updates to avoid polling the API.",
                self.weight_1m.limit
            );
            return Err(exceeded(
                &self.weight_1m,
                now_ms,
                binance::TOO_MANY_REQUESTS,
                msg,
                used_weight_1m,
            ));
        }
        if !self.raw_5m.admits(&ip, 1) {
            let msg = format!(
                "Too many requests; current limit is {} requests per 5 MINUTE.",
                self.raw_5m.limit
            );
            return Err(exceeded(
                &self.raw_5m,
                now_ms,
                binance::TOO_MANY_REQUESTS,
                msg,
                used_weight_1m,
            ));
        }
        self.raw_5m.add(ip, 1);
        Ok(self.weight_1m.add(ip, weight))
    }

    fn admit_order(&mut self, user: u64, now_ms: u64, used_weight_1m: u32) -> Result<(u32, u32), Exceeded> {
        for (window, per) in [(&self.orders_10s, "10 SECOND"), (&self.orders_1d, "1 DAY")] {
            if !window.admits(&user, 1) {
                let msg = format!(
                    "Too many new orders; current limit is {} orders per {per}.",
                    window.limit
                );
                return Err(exceeded(window, now_ms, binance::TOO_MANY_ORDERS, msg, used_weight_1m));
            }
        }
        Ok((self.orders_10s.add(user, 1), self.orders_1d.add(user, 1)))
    }
}

fn exceeded<K: Hash + Eq + Copy>(
    window: &FixedWindow<K>,
    now_ms: u64,
    code: i32,
    msg: String,
    used_weight_1m: u32,
) -> Exceeded {
    Exceeded {
        status: Exceeded::STATUS,
        retry_after_s: window.retry_after_s(now_ms),
        code,
        msg,
        used_weight_1m,
    }
}

impl RateLimiter for LocalLimiter {
    fn admit(
        &mut self,
        ip: IpAddr,
        user: Option<u64>,
        weight: u32,
        is_order: bool,
        now_ms: u64,
    ) -> Result<Usage, Exceeded> {
        self.roll(now_ms);
        let used_weight_1m = self.admit_ip(ip, weight, now_ms)?;
        let mut usage = Usage {
            used_weight_1m,
            order_count_10s: None,
            order_count_1d: None,
        };
        // Orders are placed by authenticated users only; without one there
        // is no account to count against.
        if let (true, Some(user)) = (is_order, user) {
            let (count_10s, count_1d) = self.admit_order(user, now_ms, used_weight_1m)?;
            usage.order_count_10s = Some(count_10s);
            usage.order_count_1d = Some(count_1d);
        }
        Ok(usage)
    }

    fn admit_user_order(&mut self, user: u64, now_ms: u64) -> Result<Usage, Exceeded> {
        self.roll(now_ms);
        let (count_10s, count_1d) = self.admit_order(user, now_ms, 0)?;
        Ok(Usage {
            used_weight_1m: 0,
            order_count_10s: Some(count_10s),
            order_count_1d: Some(count_1d),
        })
    }

    fn order_filled(&mut self, user: u64, now_ms: u64) {
        self.roll(now_ms);
        self.orders_10s.subtract(&user, 1);
        self.orders_1d.subtract(&user, 1);
    }

    fn user_order_counts(&mut self, user: u64, now_ms: u64) -> (u32, u32) {
        self.roll(now_ms);
        (self.orders_10s.used(&user), self.orders_1d.used(&user))
    }
}

/// Bans of IPs that keep going past their limits, as on Binance: an IP
/// refused by an IP limit more than `refusals_per_minute_max` times in one
/// minute (a client that does not back off after 429) is banned, and every
/// request of it gets 418 until the ban ends. The first ban lasts
/// [`BAN_FIRST_MS`]; each further ban within [`BAN_MEMORY_MS`] of the last
/// one lasts twice as long as the one before, up to [`BAN_LONGEST_MS`].
///
/// This type keeps one shard's view and does no I/O: with Redis, the level
/// of the next ban and the ban itself are shared (`redis::limiter`), and a
/// ban decided anywhere is [`Bans::impose`]d here when this shard learns
/// of it.
///
/// An IP that fails authentication (unknown or malformed API key, bad
/// signature) more than `auth_failures_per_minute_max` times in one minute
/// is banned the same way: guessing keys or signatures costs the guesser
/// its access, not the users.
///
/// **Bounds:** at most `keys_max` IPs are counted (per window) and at most
/// `keys_max` banned; when full, bans that ended (and then the one ending
/// first) make room.
pub(crate) struct Bans {
    strikes: FixedWindow<IpAddr>,
    auth_strikes: FixedWindow<IpAddr>,
    banned: HashMap<IpAddr, Ban>,
    keys_max: usize,
}

/// Why an IP earned a ban.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Strike {
    /// Refused by an IP limit (429) once more.
    Refused,
    /// Failed authentication once more.
    AuthFailed,
}

/// The first ban's length: 2 minutes.
pub(crate) const BAN_FIRST_MS: u64 = 120_000;
/// The longest ban: 3 days.
pub(crate) const BAN_LONGEST_MS: u64 = 3 * DAY_MS;
/// How long a ban's level is remembered after it ends.
pub(crate) const BAN_MEMORY_MS: u64 = DAY_MS;

/// An IP's ban: until when, and how many bans in a row led to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Ban {
    pub(crate) until_ms: u64,
    pub(crate) level: u32,
}

/// How long the `level`th ban in a row lasts.
pub(crate) fn ban_ms(level: u32) -> u64 {
    let doublings = level.saturating_sub(1).min(20);
    (BAN_FIRST_MS << doublings).min(BAN_LONGEST_MS)
}

impl Bans {
    pub(crate) fn new(refusals_per_minute_max: u32, auth_failures_per_minute_max: u32, keys_max: usize) -> Bans {
        Bans {
            strikes: FixedWindow::new(MINUTE_MS, refusals_per_minute_max, keys_max),
            auth_strikes: FixedWindow::new(MINUTE_MS, auth_failures_per_minute_max, keys_max),
            banned: HashMap::new(),
            keys_max,
        }
    }

    /// 418 while `ip` is banned.
    pub(crate) fn check(&self, ip: IpAddr, now_ms: u64) -> Result<(), Exceeded> {
        match self.banned.get(&ip) {
            Some(ban) if ban.until_ms > now_ms => Err(banned(ban.until_ms, now_ms)),
            _ => Ok(()),
        }
    }

    /// Counts a `strike` of `ip`; past its limit, the level of the ban it
    /// earns (the caller decides it, shared or here, and
    /// [`Bans::impose`]s it).
    pub(crate) fn strike(&mut self, ip: IpAddr, strike: Strike, now_ms: u64) -> Option<u32> {
        let strikes = match strike {
            Strike::Refused => &mut self.strikes,
            Strike::AuthFailed => &mut self.auth_strikes,
        };
        strikes.roll(now_ms);
        if strikes.admits(&ip, 1) {
            strikes.add(ip, 1);
            return None;
        }
        // Counted from none again: one strike earns the ban, not every
        // strike while it is being decided.
        strikes.subtract(&ip, u32::MAX);
        let level = match self.banned.get(&ip) {
            Some(ban) if ban.until_ms + BAN_MEMORY_MS > now_ms => ban.level + 1,
            _ => 1,
        };
        Some(level)
    }

    /// Bans `ip` until `until_ms` (a longer ban it has stays, and the
    /// higher level).
    pub(crate) fn impose(&mut self, ip: IpAddr, ban: Ban, now_ms: u64) {
        if self.banned.len() >= self.keys_max && !self.banned.contains_key(&ip) {
            self.banned.retain(|_, b| b.until_ms + BAN_MEMORY_MS > now_ms);
            if self.banned.len() >= self.keys_max {
                let first = self.banned.iter().min_by_key(|(_, b)| b.until_ms).map(|(ip, _)| *ip);
                if let Some(first) = first {
                    self.banned.remove(&first);
                }
            }
        }
        let kept = self.banned.entry(ip).or_insert(ban);
        kept.until_ms = kept.until_ms.max(ban.until_ms);
        kept.level = kept.level.max(ban.level);
    }

    /// IPs banned now (for /metrics).
    pub(crate) fn banned_now(&self, now_ms: u64) -> usize {
        self.banned.values().filter(|b| b.until_ms > now_ms).count()
    }
}

/// Binance's 418 for a banned IP.
pub(crate) fn banned(until_ms: u64, now_ms: u64) -> Exceeded {
    let left_ms = until_ms.saturating_sub(now_ms);
    Exceeded {
        status: Exceeded::BANNED,
        retry_after_s: u32::try_from(left_ms.div_ceil(1_000).max(1)).unwrap_or(u32::MAX),
        code: binance::TOO_MANY_REQUESTS,
        msg: format!(
            "Way too much request weight used; IP banned until {until_ms}. \
             Please use WebSocket Streams for live updates to avoid bans."
        ),
        used_weight_1m: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const IP_A: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    const IP_B: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
    /// 2023-11-14T22:13:20Z, on a whole minute and a whole 10 seconds.
    const T0: u64 = 1_700_000_040_000;

    fn limiter(weight_max: u32, orders_10s_max: u32, orders_day_max: u32) -> LocalLimiter {
        LocalLimiter::new(&RateLimitConfig {
            request_weight_per_minute_max: weight_max,
            orders_per_10s_max: orders_10s_max,
            orders_per_day_max: orders_day_max,
            ..RateLimitConfig::default()
        })
    }

    #[test]
    fn connection_attempts_count_per_ip_per_five_minutes() {
        let mut attempts = ConnectionAttempts::new(2, 16);
        let (a, b) = (
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
        );
        let t0 = 1_700_000_200_000;
        assert_eq!(attempts.admit(a, t0), Ok(()));
        assert_eq!(attempts.admit(a, t0 + 1), Ok(()));
        let refused = attempts.admit(a, t0 + 2).expect_err("third attempt");
        assert_eq!(
            (refused.code, refused.retry_after_s, refused.msg.as_str()),
            (
                binance::TOO_MANY_CONNECTIONS,
                200,
                "Too many connection attempts from IP; current limit is 2 per '5 MINUTE'."
            )
        );
        assert_eq!(attempts.admit(b, t0 + 3), Ok(()));
        assert_eq!(attempts.admit(a, t0 + 200_000), Ok(()));
    }

    #[test]
    fn user_orders_charge_no_ip() {
        // Regression: orders counted with a placeholder IP shared one raw
        // request budget among every user of a shard.
        let mut limits = LocalLimiter::new(&RateLimitConfig {
            raw_requests_per_5m_max: 2,
            orders_per_10s_max: 1,
            ..RateLimitConfig::default()
        });
        for user in 1..=5 {
            let usage = limits.admit_user_order(user, T0).expect("each user's first order");
            assert_eq!((usage.used_weight_1m, usage.order_count_10s), (0, Some(1)));
        }
        let refused = limits.admit_user_order(3, T0).unwrap_err();
        assert_eq!(refused.code, binance::TOO_MANY_ORDERS);
    }

    #[test]
    fn defaults_match_exchange_info() {
        let config = RateLimitConfig::default();
        let published = RATE_LIMITS_DEFAULT;
        let ours = config.rate_limits();
        assert_eq!(
            (
                ours.request_weight_per_minute_max,
                ours.orders_per_10s_max,
                ours.orders_per_day_max,
                ours.raw_requests_per_5m_max
            ),
            (
                published.request_weight_per_minute_max,
                published.orders_per_10s_max,
                published.orders_per_day_max,
                published.raw_requests_per_5m_max
            )
        );
        assert_eq!(
            (ours.request_weight_per_minute_max, ours.raw_requests_per_5m_max),
            (6_000, 61_000)
        );
    }

    #[test]
    fn weight_counts_per_minute_and_resets_on_the_minute() {
        assert_eq!(T0 % MINUTE_MS, 0);
        let mut limits = limiter(100, 100, 1000);
        // (ms after T0, ip, weight, expected used weight or (code, Retry-After))
        type Case = (u64, IpAddr, u32, Result<u32, (i32, u32)>);
        let table: &[Case] = &[
            (0, IP_A, 40, Ok(40)),
            (1, IP_A, 60, Ok(100)),
            (2, IP_A, 1, Err((-1003, 60))),
            (2, IP_B, 100, Ok(100)),
            (30_500, IP_A, 1, Err((-1003, 30))),
            (59_001, IP_A, 1, Err((-1003, 1))),
            (59_999, IP_A, 1, Err((-1003, 1))),
            (60_000, IP_A, 1, Ok(1)),
            (60_000, IP_A, 100, Err((-1003, 60))),
            (60_001, IP_A, 99, Ok(100)),
            (60_002, IP_B, 5, Ok(5)),
            (119_999, IP_A, 101, Err((-1003, 1))),
            (180_000, IP_A, 101, Err((-1003, 60))),
            (180_000, IP_A, 100, Ok(100)),
        ];
        for &(at, ip, weight, expected) in table {
            let got = limits.admit(ip, None, weight, false, T0 + at);
            let got = got.map(|u| u.used_weight_1m).map_err(|e| (e.code, e.retry_after_s));
            assert_eq!(got, expected, "at +{at} ms, {ip}, weight {weight}");
        }
    }

    #[test]
    fn refusal_reports_limit_and_current_weight() {
        let mut limits = limiter(10, 100, 1000);
        limits.admit(IP_A, None, 7, false, T0).unwrap();
        let refused = limits.admit(IP_A, None, 4, false, T0 + 15_250).unwrap_err();
        assert_eq!(
            refused,
            Exceeded {
                status: 429,
                retry_after_s: 45,
                code: binance::TOO_MANY_REQUESTS,
                msg: "Too much request weight used; current limit is 10 request weight per 1 MINUTE. \
                      Please use WebSocket Streams for live updates to avoid polling the API."
                    .into(),
                used_weight_1m: 7,
            }
        );
        assert_eq!(refused.retry_after_header(), "Retry-After: 45");
        let http: HttpError = refused.into();
        assert_eq!((http.status, http.code), (429, -1003));
        // A refused request counts nothing.
        assert_eq!(
            limits
                .admit(IP_A, None, 3, false, T0 + 15_251)
                .map(|u| u.used_weight_1m),
            Ok(10)
        );
    }

    #[test]
    fn orders_count_per_user_per_10s_and_per_day() {
        let mut limits = limiter(1_000_000, 2, 5);
        // (ms after T0, user, expected (10s count, day count) or (code, Retry-After))
        type Case = (u64, u64, Result<(u32, u32), (i32, u32)>);
        let table: &[Case] = &[
            (0, 1, Ok((1, 1))),
            (1, 1, Ok((2, 2))),
            (2, 1, Err((-1015, 10))),
            (2, 2, Ok((1, 1))),
            (3, 2, Ok((2, 2))),
            (9_999, 1, Err((-1015, 1))),
            (10_000, 1, Ok((1, 3))),
            (10_001, 1, Ok((2, 4))),
            (20_000, 1, Ok((1, 5))),
            (20_001, 1, Err((-1015, day_left_s(T0 + 20_001)))),
            (30_000, 2, Ok((1, 3))),
        ];
        for &(at, user, expected) in table {
            let got = limits.admit(IP_A, Some(user), 1, true, T0 + at);
            let got = got.map(|u| (u.order_count_10s.unwrap(), u.order_count_1d.unwrap()));
            assert_eq!(
                got.map_err(|e| (e.code, e.retry_after_s)),
                expected,
                "at +{at} ms, user {user}"
            );
        }
        let next_day = T0 - T0 % DAY_MS + DAY_MS;
        let usage = limits.admit(IP_A, Some(1), 1, true, next_day).unwrap();
        assert_eq!((usage.order_count_10s, usage.order_count_1d), (Some(1), Some(1)));
    }

    fn day_left_s(now_ms: u64) -> u32 {
        ((DAY_MS - now_ms % DAY_MS).div_ceil(1_000)) as u32
    }

    #[test]
    fn order_refusal_still_counts_weight_but_not_the_order() {
        let mut limits = limiter(100, 1, 100);
        limits.admit(IP_A, Some(1), 1, true, T0).unwrap();
        let refused = limits.admit(IP_A, Some(1), 1, true, T0 + 1).unwrap_err();
        assert_eq!(refused.code, binance::TOO_MANY_ORDERS);
        assert_eq!(
            refused.msg,
            "Too many new orders; current limit is 1 orders per 10 SECOND."
        );
        assert_eq!(refused.used_weight_1m, 2);
        let usage = limits.admit(IP_A, Some(1), 1, false, T0 + 2).unwrap();
        assert_eq!(
            usage,
            Usage {
                used_weight_1m: 3,
                order_count_10s: None,
                order_count_1d: None
            }
        );
        let usage = limits.admit(IP_A, Some(1), 1, true, T0 + 10_000).unwrap();
        assert_eq!((usage.order_count_10s, usage.order_count_1d), (Some(1), Some(2)));
    }

    #[test]
    fn filled_orders_give_back_order_count() {
        let mut limits = limiter(1_000, 2, 100);
        limits.admit(IP_A, Some(1), 1, true, T0).unwrap();
        limits.admit(IP_A, Some(1), 1, true, T0 + 1).unwrap();
        assert!(limits.admit(IP_A, Some(1), 1, true, T0 + 2).is_err());
        limits.order_filled(1, T0 + 3);
        limits.order_filled(2, T0 + 3);
        let usage = limits.admit(IP_A, Some(1), 1, true, T0 + 4).unwrap();
        assert_eq!((usage.order_count_10s, usage.order_count_1d), (Some(2), Some(2)));
    }

    #[test]
    fn raw_requests_limited_per_5_minutes() {
        let mut limits = LocalLimiter::new(&RateLimitConfig {
            raw_requests_per_5m_max: 3,
            ..RateLimitConfig::default()
        });
        let start = T0 - T0 % FIVE_MINUTES_MS;
        for i in 0..3 {
            assert!(limits.admit(IP_A, None, 1, false, start + i).is_ok());
        }
        let refused = limits.admit(IP_A, None, 1, false, start + 120_000).unwrap_err();
        assert_eq!((refused.code, refused.retry_after_s), (binance::TOO_MANY_REQUESTS, 180));
        assert!(limits.admit(IP_B, None, 1, false, start + 120_000).is_ok());
        assert!(limits.admit(IP_A, None, 1, false, start + FIVE_MINUTES_MS).is_ok());
    }

    #[test]
    fn clock_stepping_back_forgives_nothing() {
        let mut limits = limiter(10, 100, 100);
        limits.admit(IP_A, None, 10, false, T0 + 70_000).unwrap();
        let refused = limits.admit(IP_A, None, 1, false, T0 + 10_000).unwrap_err();
        assert_eq!(refused.retry_after_s, 60);
    }

    #[test]
    fn counter_maps_stay_bounded() {
        let keys_max = 4;
        let mut limits = LocalLimiter::new(&RateLimitConfig {
            request_weight_per_minute_max: 10,
            limiter_keys_max: keys_max,
            ..RateLimitConfig::default()
        });
        for i in 0..1000u32 {
            let ip = IpAddr::V4(Ipv4Addr::from(i));
            limits
                .admit(ip, Some(u64::from(i)), 1, true, T0 + u64::from(i))
                .unwrap();
            assert!(limits.weight_1m.len() <= keys_max && limits.orders_1d.len() <= keys_max);
            assert_eq!(limits.weight_1m.started.len(), limits.weight_1m.len());
        }
        assert_eq!(limits.keys(), 4 * keys_max);
        // The newest keys keep their counts; the earliest were evicted.
        let newest = IpAddr::V4(Ipv4Addr::from(999u32));
        assert_eq!(
            limits.admit(newest, None, 1, false, T0 + 1000).unwrap().used_weight_1m,
            2
        );
        let evicted = IpAddr::V4(Ipv4Addr::from(0u32));
        assert_eq!(
            limits.admit(evicted, None, 1, false, T0 + 1000).unwrap().used_weight_1m,
            1
        );
        // A new window drops every past counter.
        limits.admit(IP_A, None, 1, false, T0 + DAY_MS).unwrap();
        assert_eq!(limits.keys(), 2);
    }

    #[test]
    fn limiter_is_usable_as_a_trait_object() {
        let mut boxed: Box<dyn RateLimiter> = Box::new(LocalLimiter::new(&RateLimitConfig::default()));
        let usage = boxed.admit(IP_A, Some(1), 1, true, T0).unwrap();
        assert_eq!(
            usage.headers(),
            [
                "X-MBX-USED-WEIGHT-1M: 1",
                "X-MBX-ORDER-COUNT-10S: 1",
                "X-MBX-ORDER-COUNT-1D: 1"
            ]
        );
        assert_eq!(
            boxed.admit(IP_A, None, 4, false, T0).unwrap().headers(),
            ["X-MBX-USED-WEIGHT-1M: 5"]
        );
    }
    #[test]
    fn failed_authentications_have_a_limit_of_their_own() {
        let mut bans = Bans::new(3, 2, 16);
        assert_eq!(bans.strike(IP_A, Strike::AuthFailed, T0), None);
        assert_eq!(bans.strike(IP_A, Strike::AuthFailed, T0), None);
        // Refusals count apart.
        assert_eq!(bans.strike(IP_A, Strike::Refused, T0), None);
        assert_eq!(bans.strike(IP_A, Strike::AuthFailed, T0), Some(1));
        // A new minute starts from none.
        assert_eq!(bans.strike(IP_B, Strike::AuthFailed, T0), None);
        assert_eq!(bans.strike(IP_B, Strike::AuthFailed, T0 + 60_000), None);
        assert_eq!(bans.strike(IP_B, Strike::AuthFailed, T0 + 60_000), None);
    }

    #[test]
    fn an_ip_that_keeps_going_past_429_is_banned_longer_each_time() {
        let mut bans = Bans::new(3, 3, 16);
        let banned_until = |bans: &Bans, at: u64| bans.check(IP_A, at).map_err(|e| (e.status, e.code, e.retry_after_s));
        // Three refusals in a minute are allowed; the fourth earns a ban.
        for _ in 0..3 {
            assert_eq!(bans.strike(IP_A, Strike::Refused, T0), None);
        }
        assert_eq!(bans.strike(IP_A, Strike::Refused, T0), Some(1));
        assert_eq!(bans.strike(IP_B, Strike::Refused, T0), None);
        bans.impose(
            IP_A,
            Ban {
                until_ms: T0 + ban_ms(1),
                level: 1,
            },
            T0,
        );
        assert_eq!(banned_until(&bans, T0 + 1), Err((418, -1003, 120)));
        assert_eq!(bans.check(IP_B, T0 + 1), Ok(()));
        assert_eq!(
            bans.check(IP_A, T0 + 500).unwrap_err().msg,
            format!(
                "Way too much request weight used; IP banned until {}. \
                 Please use WebSocket Streams for live updates to avoid bans.",
                T0 + 120_000
            )
        );
        assert_eq!(bans.banned_now(T0 + 1), 1);
        assert_eq!(banned_until(&bans, T0 + 120_000), Ok(()));
        // Back at it within a day: the next ban is twice as long.
        let t1 = T0 + 180_000;
        for _ in 0..3 {
            assert_eq!(bans.strike(IP_A, Strike::Refused, t1), None);
        }
        assert_eq!(bans.strike(IP_A, Strike::Refused, t1), Some(2));
        bans.impose(
            IP_A,
            Ban {
                until_ms: t1 + ban_ms(2),
                level: 2,
            },
            t1,
        );
        assert_eq!(banned_until(&bans, t1), Err((418, -1003, 240)));
        // A day after the last ban ended, the level starts again.
        let t2 = t1 + ban_ms(2) + BAN_MEMORY_MS;
        for _ in 0..3 {
            assert_eq!(bans.strike(IP_A, Strike::Refused, t2), None);
        }
        assert_eq!(bans.strike(IP_A, Strike::Refused, t2), Some(1));
        // Lengths double up to three days.
        let lengths: Vec<u64> = [1, 2, 3, 11, 12, 13, 40].iter().map(|&l| ban_ms(l) / 60_000).collect();
        assert_eq!(lengths, vec![2, 4, 8, 2048, 4096, 4320, 4320]);
    }
}
