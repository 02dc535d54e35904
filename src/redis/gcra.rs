//! Rate limits shared through Redis: GCRA (the generic cell rate
//! algorithm) kept in one Redis key per limited thing, evaluated by a Lua
//! script so that every shard of every instance that points at the same
//! Redis counts against the same budget.
//!
//! A limit of `limit` units per `period_ms` is a cell every
//! `period_ms / limit` (the emission interval) with a burst tolerance of
//! one period: a full period's budget may be used at once, then it refills
//! one unit per interval. The key holds the theoretical arrival time (TAT)
//! in microseconds of Redis's own clock (`TIME`), so instances whose
//! clocks differ still agree.
//!
//! [`Gcra::take`] asks for up to `want` units and accepts no fewer than
//! `min`: a shard leases several units at once and spends them locally, so
//! that not every request waits for Redis (the lease is paid for in Redis
//! before any of it is spent: leasing never admits more than the limit).
//! [`Gcra::give_back`] returns units (an order that filled no longer
//! counts as unfilled). An IP's ban lives beside its budgets: `take` with
//! a ban key grants nothing while the ban holds, and [`Gcra::ban`] starts
//! one whose length doubles with each ban in a row.
//!
//! The scripts are loaded once (`SCRIPT LOAD`) and run with `EVALSHA`; a
//! Redis that lost them (`NOSCRIPT`, after a restart or `SCRIPT FLUSH`)
//! gets them again and the call is retried once.

use super::script::Script;
use super::{Redis, RedisError, Reply};
use crate::limits::{BAN_FIRST_MS, BAN_LONGEST_MS, BAN_MEMORY_MS};

/// `KEYS[1]`: the limit's key; `KEYS[2]`, when given: the IP's ban. `ARGV`:
/// emission interval (µs per unit), tolerance (µs, one period), units
/// wanted, fewest units accepted. Returns `{granted, retry_after_us,
/// used_units, banned}`: `used_units` is what the budget holds spent after
/// the grant (the shared count the headers show), `retry_after_us` when
/// `min` units will fit if none were granted, or when the ban ends.
const TAKE: &str = r"
if KEYS[2] then
  local ban = redis.call('PTTL', KEYS[2])
  if ban > 0 then return {0, ban * 1000, 0, 1} end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local min = tonumber(ARGV[4])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local free = math.floor((now + tolerance - tat) / interval)
if free > want then free = want end
if free < min then
  local retry = tat + min * interval - tolerance - now
  return {0, retry, math.ceil((tat - now) / interval), 0}
end
local new_tat = tat + free * interval
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
return {free, 0, math.ceil((new_tat - now) / interval), 0}
";

/// `KEYS[1]`: the limit's key. `ARGV`: emission interval (µs), units
/// given back. Moves the TAT back, never before now. Returns 1.
const GIVE_BACK: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
local new_tat = tat - tonumber(ARGV[1]) * tonumber(ARGV[2])
if new_tat <= now then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
end
return 1
";

/// `KEYS[1]`: the IP's ban; `KEYS[2]`: its ban level. `ARGV`: the first
/// ban's length (ms), the longest (ms), how long a level is remembered
/// after its ban ends (ms). Returns `{ban_ms, level}`: the ban now in
/// force (a longer one already there stays).
const BAN: &str = r"
local level = redis.call('INCR', KEYS[2])
local length = tonumber(ARGV[1]) * 2 ^ math.min(level - 1, 20)
if length > tonumber(ARGV[2]) then length = tonumber(ARGV[2]) end
local held = redis.call('PTTL', KEYS[1])
if held > length then length = held end
redis.call('SET', KEYS[1], level, 'PX', length)
redis.call('PEXPIRE', KEYS[2], length + tonumber(ARGV[3]))
return {length, level}
";

/// What a [`Gcra::take`] got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Grant {
    /// Units granted: 0, or between `min` and `want`.
    pub(crate) granted: u32,
    /// Units of the budget spent after this grant, over every instance.
    pub(crate) used: u32,
    /// With nothing granted: when `min` units will fit, or when the ban
    /// ends, in milliseconds.
    pub(crate) retry_after_ms: u64,
    /// The IP is banned: nothing was counted.
    pub(crate) banned: bool,
}

/// One limit: `limit` units per `period_ms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Limit {
    pub(crate) limit: u32,
    pub(crate) period_ms: u64,
}

impl Limit {
    /// Whole microseconds per unit: a limit of more units than the period
    /// has microseconds (a benchmark's raised limits) refills one unit per
    /// microsecond and keeps its whole count as the burst, so it is never
    /// stricter than asked.
    fn interval_us(self) -> u64 {
        (self.period_ms * 1000 / u64::from(self.limit.max(1))).max(1)
    }
}

/// The limit scripts' SHAs once loaded; one set per shard.
pub(crate) struct Gcra {
    take: Script,
    give_back: Script,
    ban: Script,
}

impl Default for Gcra {
    fn default() -> Gcra {
        Gcra {
            take: Script::new(TAKE),
            give_back: Script::new(GIVE_BACK),
            ban: Script::new(BAN),
        }
    }
}

impl Gcra {
    /// Takes between `min` and `want` units of `limit` from the budget in
    /// `key`, or none.
    pub(crate) async fn take(
        &self,
        redis: &Redis,
        key: &str,
        limit: Limit,
        want: u32,
        min: u32,
    ) -> Result<Grant, RedisError> {
        self.take_unless_banned(redis, key, None, limit, want, min).await
    }

    /// [`Gcra::take`], granting nothing while `ban_key` holds a ban.
    pub(crate) async fn take_unless_banned(
        &self,
        redis: &Redis,
        key: &str,
        ban_key: Option<&str>,
        limit: Limit,
        want: u32,
        min: u32,
    ) -> Result<Grant, RedisError> {
        let interval_us = limit.interval_us();
        let tolerance_us = interval_us * u64::from(limit.limit.max(1));
        let args = [
            interval_us.to_string(),
            tolerance_us.to_string(),
            want.to_string(),
            min.min(want).to_string(),
        ];
        let mut keys = vec![key];
        keys.extend(ban_key);
        let reply = self.take.run(redis, &keys, &args).await?;
        grant_of(&reply)
    }

    /// Gives `units` of `limit` back to the budget in `key`.
    pub(crate) async fn give_back(&self, redis: &Redis, key: &str, limit: Limit, units: u32) -> Result<(), RedisError> {
        let args = [limit.interval_us().to_string(), units.to_string()];
        match self.give_back.run(redis, &[key], &args).await? {
            Reply::Integer(1) => Ok(()),
            other => Err(RedisError::Protocol(format!("the give-back script answered {other:?}"))),
        }
    }

    /// Bans an IP (its ban in `ban_key`, its level in `level_key`):
    /// returns the ban in force, its length in milliseconds and level.
    pub(crate) async fn ban(&self, redis: &Redis, ban_key: &str, level_key: &str) -> Result<(u64, u32), RedisError> {
        let args = [
            BAN_FIRST_MS.to_string(),
            BAN_LONGEST_MS.to_string(),
            BAN_MEMORY_MS.to_string(),
        ];
        let reply = self.ban.run(redis, &[ban_key, level_key], &args).await?;
        let bad = || RedisError::Protocol(format!("the ban script answered {reply:?}"));
        match &reply {
            Reply::Array(items) => match items.as_slice() {
                [Reply::Integer(length), Reply::Integer(level)] => Ok((
                    u64::try_from(*length).map_err(|_| bad())?,
                    u32::try_from(*level).map_err(|_| bad())?,
                )),
                _ => Err(bad()),
            },
            _ => Err(bad()),
        }
    }
}

fn grant_of(reply: &Reply) -> Result<Grant, RedisError> {
    let bad = || RedisError::Protocol(format!("the limit script answered {reply:?}"));
    let Reply::Array(items) = reply else { return Err(bad()) };
    let number = |i: usize| match items.get(i) {
        Some(Reply::Integer(n)) => Ok(*n),
        _ => Err(bad()),
    };
    let (granted, retry_us, used, banned) = (number(0)?, number(1)?, number(2)?, number(3)?);
    Ok(Grant {
        granted: u32::try_from(granted).map_err(|_| bad())?,
        used: u32::try_from(used.max(0)).unwrap_or(u32::MAX),
        retry_after_ms: u64::try_from(retry_us.max(0)).unwrap_or(0).div_ceil(1000),
        banned: banned == 1,
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::{limits, on_executor};
    use super::super::{parse_url, Redis};
    use super::*;
    use tradsys_redistest::RedisServer;

    /// One unit refills every 6 s: slow enough that a loaded machine's
    /// delays between calls never refill one mid-test.
    const PER_TEN_MINUTES: Limit = Limit {
        limit: 100,
        period_ms: 600_000,
    };

    #[test]
    fn a_budget_is_shared_by_every_client_and_refused_past_the_limit() {
        let server = RedisServer::start();
        let url = server.url();
        on_executor(move || async move {
            // Two shards (or instances): two clients, one budget.
            let (a, b) = (
                Redis::start(parse_url(&url).expect("url"), limits(), 1),
                Redis::start(parse_url(&url).expect("url"), limits(), 2),
            );
            let (ga, gb) = (Gcra::default(), Gcra::default());
            let mut granted = 0;
            for i in 0..60 {
                let (redis, gcra) = if i % 2 == 0 { (&a, &ga) } else { (&b, &gb) };
                let grant = gcra.take(redis, "rl:ip:1", PER_TEN_MINUTES, 2, 2).await.expect("take");
                assert_eq!(grant.granted % 2, 0, "{grant:?}");
                granted += grant.granted;
            }
            // 100 units, whoever asked: 50 grants of 2, then refusals.
            assert_eq!(granted, 100);
            let refused = gb.take(&b, "rl:ip:1", PER_TEN_MINUTES, 1, 1).await.expect("take");
            assert_eq!((refused.granted, refused.used), (0, 100));
            // One unit refills every 6 s.
            assert!((1..=6_000).contains(&refused.retry_after_ms), "{refused:?}");
            // Another key has its own budget.
            let other = ga.take(&a, "rl:ip:2", PER_TEN_MINUTES, 10, 1).await.expect("take");
            assert_eq!((other.granted, other.used), (10, 10));
            a.close();
            b.close();
        });
    }

    #[test]
    fn a_lease_takes_what_is_left_but_never_less_than_asked() {
        let server = RedisServer::start();
        let url = server.url();
        on_executor(move || async move {
            let redis = Redis::start(parse_url(&url).expect("url"), limits(), 1);
            let gcra = Gcra::default();
            let take = |want, min| gcra.take(&redis, "rl:lease", PER_TEN_MINUTES, want, min);
            assert_eq!(take(95, 1).await.expect("take").granted, 95);
            // 5 left: a lease of 10 gets them, and then nothing is left.
            let rest = take(10, 1).await.expect("take");
            assert_eq!((rest.granted, rest.used), (5, 100));
            assert_eq!(take(10, 1).await.expect("take").granted, 0);
            redis.close();
        });
    }

    #[test]
    fn a_flushed_script_is_loaded_again() {
        let server = RedisServer::start();
        let url = server.url();
        let port = server.port();
        on_executor(move || async move {
            let redis = Redis::start(parse_url(&url).expect("url"), limits(), 1);
            let gcra = Gcra::default();
            assert_eq!(
                gcra.take(&redis, "rl:k", PER_TEN_MINUTES, 1, 1)
                    .await
                    .expect("take")
                    .granted,
                1
            );
            assert_eq!(
                redis.call(&[b"SCRIPT", b"FLUSH"]).await,
                Ok(Reply::Status("OK".into())),
                "port {port}"
            );
            let grant = gcra.take(&redis, "rl:k", PER_TEN_MINUTES, 1, 1).await.expect("take");
            assert_eq!((grant.granted, grant.used), (1, 2));
            redis.close();
        });
    }
    #[test]
    fn units_given_back_fit_again_and_a_ban_refuses_everything() {
        let server = RedisServer::start();
        let url = server.url();
        on_executor(move || async move {
            let redis = Redis::start(parse_url(&url).expect("url"), limits(), 1);
            let gcra = Gcra::default();
            assert_eq!(
                gcra.take(&redis, "rl:o", PER_TEN_MINUTES, 100, 1)
                    .await
                    .expect("take")
                    .granted,
                100
            );
            assert_eq!(
                gcra.take(&redis, "rl:o", PER_TEN_MINUTES, 1, 1)
                    .await
                    .expect("take")
                    .granted,
                0
            );
            gcra.give_back(&redis, "rl:o", PER_TEN_MINUTES, 3)
                .await
                .expect("give back");
            let grant = gcra.take(&redis, "rl:o", PER_TEN_MINUTES, 5, 1).await.expect("take");
            assert_eq!((grant.granted, grant.used), (3, 100));
            // Giving back more than was taken leaves a full budget, no more.
            gcra.give_back(&redis, "rl:o", PER_TEN_MINUTES, 1_000)
                .await
                .expect("give back");
            assert_eq!(
                gcra.take(&redis, "rl:o", PER_TEN_MINUTES, 200, 1)
                    .await
                    .expect("take")
                    .granted,
                100
            );

            // Bans: 2 minutes, then 4; a longer one in force stays.
            let (first, level) = gcra.ban(&redis, "ban:ip", "banlevel:ip").await.expect("ban");
            assert_eq!((first, level), (120_000, 1));
            let (second, level) = gcra.ban(&redis, "ban:ip", "banlevel:ip").await.expect("ban");
            assert_eq!((second, level), (240_000, 2));
            let banned = gcra
                .take_unless_banned(&redis, "rl:ip", Some("ban:ip"), PER_TEN_MINUTES, 1, 1)
                .await
                .expect("take");
            assert!(banned.banned && banned.granted == 0, "{banned:?}");
            assert!((239_000..=240_000).contains(&banned.retry_after_ms), "{banned:?}");
            // Nothing was counted while banned; another IP is not banned.
            let other = gcra
                .take_unless_banned(&redis, "rl:ip2", Some("ban:ip2"), PER_TEN_MINUTES, 1, 1)
                .await
                .expect("take");
            assert_eq!((other.granted, other.banned), (1, false));
            redis.close();
        });
    }
}
