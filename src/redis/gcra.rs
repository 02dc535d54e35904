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
//! [`take`] asks for up to `want` units and accepts no fewer than `min`:
//! a shard leases several units at once and spends them locally, so that
//! not every request waits for Redis (the lease is paid for in Redis before
//! any of it is spent: leasing never admits more than the limit). The
//! script is loaded once (`SCRIPT LOAD`) and run with `EVALSHA`; a Redis
//! that lost it (`NOSCRIPT`, after a restart or `SCRIPT FLUSH`) gets it
//! again and the call is retried once.

use super::{Redis, RedisError, Reply};
use std::cell::RefCell;

/// `KEYS[1]`: the limit's key. `ARGV`: emission interval (µs per unit),
/// tolerance (µs, one period), units wanted, fewest units accepted.
/// Returns `{granted, retry_after_us, used_units}`: `used_units` is what
/// the budget holds spent after the grant (the shared count the headers
/// show), `retry_after_us` when `min` units will fit if none were granted.
const SCRIPT: &str = r"
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
  return {0, retry, math.ceil((tat - now) / interval)}
end
local new_tat = tat + free * interval
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
return {free, 0, math.ceil((new_tat - now) / interval)}
";

/// What a [`take`] got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Grant {
    /// Units granted: 0, or between `min` and `want`.
    pub(crate) granted: u32,
    /// Units of the budget spent after this grant, over every instance.
    pub(crate) used: u32,
    /// With nothing granted: when `min` units will fit, in milliseconds.
    pub(crate) retry_after_ms: u64,
}

/// One limit: `limit` units per `period_ms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Limit {
    pub(crate) limit: u32,
    pub(crate) period_ms: u64,
}

/// The script's SHA once loaded; one per shard.
#[derive(Default)]
pub(crate) struct Gcra {
    sha: RefCell<Option<String>>,
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
        // Whole microseconds: a limit of more units than the period has
        // microseconds (a benchmark's raised limits) refills one unit per
        // microsecond and keeps its whole count as the burst, so it is
        // never stricter than asked.
        let interval_us = (limit.period_ms * 1000 / u64::from(limit.limit.max(1))).max(1);
        let tolerance_us = interval_us * u64::from(limit.limit.max(1));
        let args = [
            interval_us.to_string(),
            tolerance_us.to_string(),
            want.to_string(),
            min.min(want).to_string(),
        ];
        for attempt in 0..2 {
            // Not matched on the borrow itself: it would live across the load.
            let cached = self.sha.borrow().clone();
            let sha = match cached {
                Some(sha) => sha,
                None => self.load(redis).await?,
            };
            let reply = redis
                .call(&[
                    b"EVALSHA",
                    sha.as_bytes(),
                    b"1",
                    key.as_bytes(),
                    args[0].as_bytes(),
                    args[1].as_bytes(),
                    args[2].as_bytes(),
                    args[3].as_bytes(),
                ])
                .await?;
            match reply {
                Reply::Error(e) if e.starts_with("NOSCRIPT") && attempt == 0 => {
                    self.sha.borrow_mut().take();
                }
                reply => return grant_of(&reply),
            }
        }
        Err(RedisError::Protocol("the limit script could not be loaded".to_string()))
    }

    async fn load(&self, redis: &Redis) -> Result<String, RedisError> {
        match redis.call(&[b"SCRIPT", b"LOAD", SCRIPT.as_bytes()]).await? {
            Reply::Bulk(sha) => {
                let sha = String::from_utf8_lossy(&sha).into_owned();
                *self.sha.borrow_mut() = Some(sha.clone());
                Ok(sha)
            }
            other => Err(RedisError::Protocol(format!("SCRIPT LOAD answered {other:?}"))),
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
    let (granted, retry_us, used) = (number(0)?, number(1)?, number(2)?);
    Ok(Grant {
        granted: u32::try_from(granted).map_err(|_| bad())?,
        used: u32::try_from(used.max(0)).unwrap_or(u32::MAX),
        retry_after_ms: u64::try_from(retry_us.max(0)).unwrap_or(0).div_ceil(1000),
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
}
