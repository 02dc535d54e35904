//! The cache's second level: values shared by every shard of every
//! instance through Redis (the first level, and the waiting of a shard's
//! own requests for one fill, are `cache`'s).
//!
//! A value lives at `<namespace>:cache:<name>:<version>` with a time to
//! live, and carries the wall-clock time it expires (8 bytes, little
//! endian, before the value), so that a first level filled from it
//! expires with it. A missing value is filled by one instance: a shard
//! that misses takes `<key>:lock` (`SET NX PX lock_ms`); the holder
//! computes and stores the value, the others look for it every `poll_ms`,
//! at most `polls_max` times, then compute it themselves rather than fail.
//! The lock is never released, only left to expire: a holder that dies
//! costs the others at most `lock_ms` of polling.
//!
//! Redis not answering (an error, the breaker open) is never a failure of
//! the caller: the value is computed locally and simply not shared.
//! Invalidations are published on `<namespace>:cache:invalidate` as
//! `<name> <version>` (see `subscriber`).
//!
//! **Bounds:** values over `value_bytes_max` are not stored in Redis.

use super::{Redis, Reply};
use crate::metrics::CacheLevelCounters;
use std::cell::RefCell;
use std::future::Future;
use std::time::Duration;

/// How the second level waits and what it stores.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct L2Config {
    pub(crate) value_bytes_max: usize,
    pub(crate) lock_ms: u64,
    pub(crate) poll_ms: u64,
    pub(crate) polls_max: u32,
    pub(crate) namespace: String,
}

/// A value and the wall-clock time it expires.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Stored {
    pub(crate) value: Vec<u8>,
    pub(crate) expires_ms: u64,
}

enum Lookup {
    Hit(Stored),
    Miss,
    /// Redis did not answer.
    Unavailable,
}

/// One shard's second level.
pub(crate) struct L2 {
    redis: Redis,
    config: L2Config,
    counters: RefCell<CacheLevelCounters>,
}

impl L2 {
    pub(crate) fn new(redis: Redis, config: L2Config) -> L2 {
        L2 {
            redis,
            config,
            counters: RefCell::new(CacheLevelCounters::default()),
        }
    }

    /// The channel invalidations travel on.
    pub(crate) fn channel(namespace: &str) -> String {
        format!("{namespace}:cache:invalidate")
    }

    pub(crate) fn counters(&self) -> CacheLevelCounters {
        *self.counters.borrow()
    }

    /// `name` at `version` from Redis, or computed by `fill` (here, or by
    /// the instance that holds the fill lock); stored in Redis for
    /// `ttl_ms` when this shard computed it and holds the lock. Only
    /// `fill`'s own error is returned.
    pub(crate) async fn get_or_fill<E, Fut>(
        &self,
        name: &str,
        version: u64,
        ttl_ms: u64,
        fill: impl FnOnce() -> Fut,
    ) -> Result<Stored, E>
    where
        Fut: Future<Output = Result<Vec<u8>, E>>,
    {
        let key = format!("{}:cache:{name}:{version}", self.config.namespace);
        match self.get(&key).await {
            Lookup::Hit(stored) => {
                self.counters.borrow_mut().hits += 1;
                return Ok(stored);
            }
            Lookup::Miss => self.counters.borrow_mut().misses += 1,
            Lookup::Unavailable => return computed(fill, ttl_ms).await,
        }
        let lock = format!("{key}:lock");
        let lock_ms = self.config.lock_ms.to_string();
        let words: [&[u8]; 6] = [b"SET", lock.as_bytes(), b"1", b"NX", b"PX", lock_ms.as_bytes()];
        match self.redis.call(&words).await {
            Ok(Reply::Status(_)) => {
                let stored = computed(fill, ttl_ms).await?;
                self.store(&key, &stored, ttl_ms).await;
                Ok(stored)
            }
            Ok(Reply::Nil) => {
                for _ in 0..self.config.polls_max {
                    glommio::timer::sleep(Duration::from_millis(self.config.poll_ms)).await;
                    match self.get(&key).await {
                        Lookup::Hit(stored) => {
                            self.counters.borrow_mut().hits += 1;
                            return Ok(stored);
                        }
                        Lookup::Miss => {}
                        Lookup::Unavailable => break,
                    }
                }
                computed(fill, ttl_ms).await
            }
            Ok(_) | Err(_) => computed(fill, ttl_ms).await,
        }
    }

    /// Tells every instance that `version` of `name` is current; false
    /// when Redis did not take it.
    pub(crate) async fn publish(&self, name: &str, version: u64) -> bool {
        let channel = L2::channel(&self.config.namespace);
        let message = format!("{name} {version}");
        let published = matches!(
            self.redis
                .call(&[b"PUBLISH", channel.as_bytes(), message.as_bytes()])
                .await,
            Ok(Reply::Integer(_))
        );
        if published {
            self.counters.borrow_mut().invalidations += 1;
        }
        published
    }

    async fn get(&self, key: &str) -> Lookup {
        match self.redis.call(&[b"GET", key.as_bytes()]).await {
            Ok(Reply::Bulk(bytes)) => match decode(bytes, crate::clock::now_ms()) {
                Some(stored) => Lookup::Hit(stored),
                None => Lookup::Miss,
            },
            Ok(Reply::Nil) => Lookup::Miss,
            Ok(_) | Err(_) => Lookup::Unavailable,
        }
    }

    async fn store(&self, key: &str, stored: &Stored, ttl_ms: u64) {
        if stored.value.len() > self.config.value_bytes_max {
            return;
        }
        let mut bytes = Vec::with_capacity(8 + stored.value.len());
        bytes.extend_from_slice(&stored.expires_ms.to_le_bytes());
        bytes.extend_from_slice(&stored.value);
        let ttl = ttl_ms.to_string();
        let words: [&[u8]; 5] = [b"SET", key.as_bytes(), &bytes, b"PX", ttl.as_bytes()];
        if let Ok(Reply::Status(_)) = self.redis.call(&words).await {
            self.counters.borrow_mut().fills += 1;
        }
    }
}

/// `fill`'s value, to expire `ttl_ms` from now.
async fn computed<E, Fut>(fill: impl FnOnce() -> Fut, ttl_ms: u64) -> Result<Stored, E>
where
    Fut: Future<Output = Result<Vec<u8>, E>>,
{
    let value = fill().await?;
    Ok(Stored {
        value,
        expires_ms: crate::clock::now_ms().saturating_add(ttl_ms),
    })
}

/// A stored value, unless malformed or already expired by this clock.
fn decode(mut bytes: Vec<u8>, now_ms: u64) -> Option<Stored> {
    let head: [u8; 8] = bytes.get(..8)?.try_into().ok()?;
    let expires_ms = u64::from_le_bytes(head);
    if expires_ms <= now_ms {
        return None;
    }
    bytes.drain(..8);
    Some(Stored {
        value: bytes,
        expires_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redis::tests::{limits, on_executor};
    use crate::redis::{parse_url, Redis};
    use std::cell::Cell;
    use std::rc::Rc;
    use tradsys_redistest::RedisServer;

    fn config() -> L2Config {
        L2Config {
            value_bytes_max: 1024,
            lock_ms: 2_000,
            poll_ms: 2,
            polls_max: 1_000,
            namespace: "t".to_string(),
        }
    }

    #[test]
    fn stored_values_carry_their_expiry() {
        let mut bytes = 1_000u64.to_le_bytes().to_vec();
        bytes.extend_from_slice(b"v");
        let stored = Stored {
            value: b"v".to_vec(),
            expires_ms: 1_000,
        };
        assert_eq!(decode(bytes.clone(), 999), Some(stored));
        assert_eq!(decode(bytes, 1_000), None);
        assert_eq!(decode(b"short".to_vec(), 0), None);
    }

    /// Two shards (two clients) miss one key at once: the lock holder
    /// fills, the other waits for its value; Redis then serves both.
    #[test]
    fn one_instance_fills_a_missing_value_and_the_others_read_it() {
        let server = RedisServer::start();
        let url = server.url();
        on_executor(move || async move {
            let target = parse_url(&url).expect("url");
            let a = L2::new(Redis::start(target.clone(), limits(), 1), config());
            let b = L2::new(Redis::start(target, limits(), 2), config());
            let fills = Rc::new(Cell::new(0));
            // The filler yields to the executor a few times, so the other
            // shard looks for the value while it is being computed.
            let fill = || {
                let fills = fills.clone();
                async move {
                    fills.set(fills.get() + 1);
                    for _ in 0..5 {
                        glommio::timer::sleep(Duration::from_millis(1)).await;
                    }
                    Ok::<_, ()>(b"value".to_vec())
                }
            };
            let (x, y) =
                futures_lite::future::zip(a.get_or_fill("k", 7, 60_000, fill), b.get_or_fill("k", 7, 60_000, fill))
                    .await;
            assert_eq!(x.expect("a").value, b"value");
            assert_eq!(y.expect("b").value, b"value");
            assert_eq!(fills.get(), 1);
            let (ca, cb) = (a.counters(), b.counters());
            assert_eq!(
                (ca.misses + cb.misses, ca.fills + cb.fills, ca.hits + cb.hits),
                (2, 1, 1)
            );
            // Another version is another key.
            let z = a.get_or_fill("k", 8, 60_000, fill).await.expect("a");
            assert_eq!((z.value.as_slice(), fills.get()), (&b"value"[..], 2));
            assert!(a.publish("k", 8).await);
            assert_eq!(a.counters().invalidations, 1);
            a.redis.close();
            b.redis.close();
        });
        let ttl: i64 = server.command(&["PTTL", "t:cache:k:7"])[1..]
            .trim()
            .parse()
            .expect("a number");
        assert!((1..=60_000).contains(&ttl), "PTTL {ttl}");
    }

    #[test]
    fn without_redis_the_value_is_computed_locally() {
        let mut server = RedisServer::start();
        let url = server.url();
        server.kill9();
        on_executor(move || async move {
            let l2 = L2::new(Redis::start(parse_url(&url).expect("url"), limits(), 1), config());
            for _ in 0..10 {
                let stored = l2
                    .get_or_fill("k", 1, 1_000, || async { Ok::<_, ()>(b"v".to_vec()) })
                    .await;
                assert_eq!(stored.expect("computed").value, b"v");
            }
            // The fill's own error still reaches the caller.
            let failed = l2
                .get_or_fill("k", 1, 1_000, || async { Err::<Vec<u8>, _>("no") })
                .await;
            assert_eq!(failed, Err("no"));
            assert_eq!(l2.counters(), CacheLevelCounters::default());
            l2.redis.close();
        });
    }
}
