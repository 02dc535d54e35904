//! The two-level cache a shard holds for answers that are costly to
//! compute and the same for everyone: an L1 of its own ([`l1`]) and, with
//! `--redis`, an L2 in Redis shared by every shard of every instance
//! (`redis::cache`). Without Redis the L1 works alone.
//!
//! A value is named and versioned: a reader asks for the version it
//! knows to be current, so a changed value is a new key and never read
//! stale through the version. What a version cannot see is bounded by the
//! value's time to live.
//!
//! **Stampede control.** One fill per key per shard: the first request
//! that misses fills (through L2, which lets one instance compute), the
//! others for the same key wait for it, at most `WAITERS_PER_KEY_MAX`
//! (more compute alone). A fill that fails hands its error to its waiters;
//! one that is dropped (its request went away) wakes them, and one of
//! them fills instead.
//!
//! **Invalidation.** The owner of a changed value calls
//! [`Cache::invalidate`] with the new version: its own L1 drops the old
//! one and Redis carries `<name> <version>` to every shard's subscriber
//! (`redis::subscriber`), whose [`Cache::on_event`] drops older versions
//! from its L1. A subscription that was lost may have missed messages, so
//! the L1 is emptied when it is back.
//!
//! Redis not answering never fails a request: the value is computed here.

pub(crate) mod l1;

use crate::config::CacheConfig;
use crate::http::HttpError;
use crate::metrics::CacheCounters;
use crate::oneshot;
use crate::redis::cache::L2;
use crate::redis::subscriber::Event;
use l1::L1;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::rc::Rc;

/// Requests that wait for one fill of a key on a shard; more compute
/// alone rather than wait.
pub(crate) const WAITERS_PER_KEY_MAX: usize = 4096;
/// Times a waiter whose filler went away tries again before it fills
/// alone.
const HANDOVERS_MAX: usize = 3;

/// What a waiter gets: the value, the fill's error, or `None` when the
/// filler went away.
type Filled = Result<Rc<[u8]>, HttpError>;

/// How a request takes part in a fill.
enum Role {
    Fill,
    Wait(oneshot::Receiver<Filled>),
    Alone,
}

/// One shard's two-level cache.
pub(crate) struct Cache {
    l1: RefCell<L1>,
    l2: Option<L2>,
    /// Fills in progress, by key, with their waiters.
    flights: RefCell<HashMap<String, Vec<oneshot::Sender<Filled>>>>,
    subscribed: Cell<bool>,
    ever_subscribed: Cell<bool>,
    ttl_ms: u64,
    ticker_ttl_ms: u64,
    history_ttl_ms: u64,
}

impl Cache {
    pub(crate) fn new(config: &CacheConfig, l2: Option<L2>) -> Cache {
        Cache {
            l1: RefCell::new(L1::new(config.l1_entries_max, config.l1_bytes_max)),
            l2,
            flights: RefCell::new(HashMap::new()),
            subscribed: Cell::new(false),
            ever_subscribed: Cell::new(false),
            ttl_ms: config.ttl_ms,
            ticker_ttl_ms: config.ticker_ttl_ms,
            history_ttl_ms: config.history_ttl_ms,
        }
    }

    /// The lifetime of values that change only with their version.
    pub(crate) fn ttl_ms(&self) -> u64 {
        self.ttl_ms
    }

    /// The lifetime of history that never changes (myTrades pages, older
    /// klines).
    pub(crate) fn history_ttl_ms(&self) -> u64 {
        self.history_ttl_ms
    }

    /// The lifetime of the 24 h statistics of every market.
    pub(crate) fn ticker_ttl_ms(&self) -> u64 {
        self.ticker_ttl_ms
    }

    /// `name` at `version`: from L1, or from L2, or computed by `fill`
    /// (once per shard however many ask at once) and kept for `ttl_ms`.
    pub(crate) async fn get_or_fill<Fut>(
        &self,
        name: &str,
        version: u64,
        ttl_ms: u64,
        fill: impl FnOnce() -> Fut,
    ) -> Result<Rc<[u8]>, HttpError>
    where
        Fut: Future<Output = Result<Vec<u8>, HttpError>>,
    {
        if let Some(value) = self.l1.borrow_mut().get(name, version, crate::clock::now_ms()) {
            return Ok(value);
        }
        let key = format!("{name} {version}");
        let mut handovers = 0;
        loop {
            match self.role(&key, handovers) {
                Role::Wait(filled) => match filled.await {
                    Some(filled) => return filled,
                    // The filler went away: look again, maybe fill.
                    None => handovers += 1,
                },
                Role::Alone => return self.fill_levels(name, version, ttl_ms, fill).await,
                Role::Fill => {
                    let flight = Flight { cache: self, key: &key };
                    let filled = self.fill_levels(name, version, ttl_ms, fill).await;
                    for waiter in flight.land() {
                        waiter.send(filled.clone());
                    }
                    return filled;
                }
            }
            if let Some(value) = self.l1.borrow_mut().get(name, version, crate::clock::now_ms()) {
                return Ok(value);
            }
        }
    }

    /// Whether this request fills `key`, waits for a fill or computes alone.
    fn role(&self, key: &str, handovers: usize) -> Role {
        if handovers >= HANDOVERS_MAX {
            return Role::Alone;
        }
        let mut flights = self.flights.borrow_mut();
        match flights.get_mut(key) {
            None => {
                flights.insert(key.to_string(), Vec::new());
                Role::Fill
            }
            Some(waiters) if waiters.len() < WAITERS_PER_KEY_MAX => {
                let (sender, receiver) = oneshot::channel();
                waiters.push(sender);
                Role::Wait(receiver)
            }
            Some(_) => Role::Alone,
        }
    }

    async fn fill_levels<Fut>(
        &self,
        name: &str,
        version: u64,
        ttl_ms: u64,
        fill: impl FnOnce() -> Fut,
    ) -> Result<Rc<[u8]>, HttpError>
    where
        Fut: Future<Output = Result<Vec<u8>, HttpError>>,
    {
        let (value, expires_ms) = match &self.l2 {
            Some(l2) => {
                let stored = l2.get_or_fill(name, version, ttl_ms, fill).await?;
                (stored.value, stored.expires_ms)
            }
            None => (fill().await?, crate::clock::now_ms().saturating_add(ttl_ms)),
        };
        let value: Rc<[u8]> = Rc::from(value);
        self.l1.borrow_mut().put(name, version, value.clone(), expires_ms);
        Ok(value)
    }

    /// The owner changed `name`: `version` is current. This shard's L1
    /// drops the old one at once; every other shard's, through Redis.
    pub(crate) async fn invalidate(&self, name: &str, version: u64) {
        self.l1.borrow_mut().invalidate(name, version);
        if let Some(l2) = &self.l2 {
            l2.publish(name, version).await;
        }
    }

    /// What the shard's invalidation subscriber heard.
    pub(crate) fn on_event(&self, event: Event<'_>) {
        match event {
            Event::Subscribed => {
                // Messages published since the last subscription was lost
                // are gone: what L1 holds may be stale.
                if self.ever_subscribed.replace(true) {
                    self.l1.borrow_mut().clear();
                }
                self.subscribed.set(true);
            }
            // L1 keeps serving meanwhile (within its TTL).
            Event::Lost => self.subscribed.set(false),
            Event::Message(message) => {
                if let Some((name, version)) = parse_invalidation(message) {
                    self.l1.borrow_mut().invalidate(name, version);
                }
            }
        }
    }

    pub(crate) fn counters(&self) -> CacheCounters {
        let l1 = self.l1.borrow();
        CacheCounters {
            l1: l1.counters(),
            l2: self.l2.as_ref().map(L2::counters).unwrap_or_default(),
            l1_entries: l1.len() as u64,
            l1_bytes: l1.bytes() as u64,
            subscribed: u64::from(self.subscribed.get()),
        }
    }
}

/// `<name> <version>`.
fn parse_invalidation(message: &[u8]) -> Option<(&str, u64)> {
    let text = std::str::from_utf8(message).ok()?;
    let (name, version) = text.rsplit_once(' ')?;
    Some((name, version.parse().ok()?))
}

/// A fill in progress; dropped before it lands (its request went away),
/// it wakes its waiters empty-handed.
struct Flight<'a> {
    cache: &'a Cache,
    key: &'a str,
}

impl Flight<'_> {
    /// The fill is done: its waiters, to be handed its outcome.
    fn land(self) -> Vec<oneshot::Sender<Filled>> {
        let waiters = self.cache.flights.borrow_mut().remove(self.key).unwrap_or_default();
        std::mem::forget(self);
        waiters
    }
}

impl Drop for Flight<'_> {
    fn drop(&mut self) {
        // Dropping the senders wakes the waiters with `None`.
        self.cache.flights.borrow_mut().remove(self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::binance;
    use crate::metrics::CacheLevelCounters;
    use std::pin::Pin;
    use std::task::Poll;

    fn config() -> CacheConfig {
        CacheConfig {
            l1_entries_max: 16,
            l1_bytes_max: 1 << 20,
            ttl_ms: 60_000,
            ticker_ttl_ms: 1_000,
            history_ttl_ms: 60_000,
            l2_value_bytes_max: 1 << 10,
            l2_lock_ms: 500,
            l2_poll_ms: 5,
            l2_polls_max: 20,
            namespace: "t".to_string(),
        }
    }

    type Task<'a, T = Filled> = Pin<Box<dyn Future<Output = T> + 'a>>;

    /// Runs `tasks` together on this thread (no executor: the cache needs
    /// none) until every one is done; their outputs in order.
    fn join_all<T>(tasks: Vec<Task<'_, T>>) -> Vec<T> {
        let mut tasks: Vec<Option<Task<'_, T>>> = tasks.into_iter().map(Some).collect();
        let mut outputs: Vec<Option<T>> = tasks.iter().map(|_| None).collect();
        futures_lite::future::block_on(futures_lite::future::poll_fn(|cx| {
            let mut pending = false;
            for (slot, output) in tasks.iter_mut().zip(outputs.iter_mut()) {
                if let Some(task) = slot {
                    match task.as_mut().poll(cx) {
                        Poll::Ready(value) => {
                            *output = Some(value);
                            *slot = None;
                        }
                        Poll::Pending => pending = true,
                    }
                }
            }
            if pending {
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        }));
        outputs.into_iter().flatten().collect()
    }

    fn pending_once<T>(task: &mut Task<'_, T>) -> bool {
        futures_lite::future::block_on(futures_lite::future::poll_once(task)).is_none()
    }

    /// A fill that counts itself and yields several times before it
    /// answers, so that every request arrives while it runs.
    async fn slow_fill(fills: &Cell<u32>, value: &'static [u8]) -> Result<Vec<u8>, HttpError> {
        fills.set(fills.get() + 1);
        for _ in 0..10 {
            futures_lite::future::yield_now().await;
        }
        Ok(value.to_vec())
    }

    #[test]
    fn a_stampede_of_1000_requests_on_a_cold_key_fills_once() {
        let cache = Cache::new(&config(), None);
        let fills = Cell::new(0);
        let tasks: Vec<Task<'_>> = (0..1_000)
            .map(|_| Box::pin(cache.get_or_fill("k", 1, 60_000, || slow_fill(&fills, b"v"))) as Task<'_>)
            .collect();
        for value in join_all(tasks) {
            assert_eq!(value.map(|v| v.to_vec()), Ok(b"v".to_vec()));
        }
        assert_eq!(fills.get(), 1);
        let counters = cache.counters();
        assert_eq!(
            counters.l1,
            CacheLevelCounters {
                hits: 0,
                misses: 1_000,
                fills: 1,
                evictions: 0,
                invalidations: 0
            }
        );
        assert_eq!((counters.l1_entries, counters.l2), (1, CacheLevelCounters::default()));
        // Now warm: a hit, no fill.
        let again = futures_lite::future::block_on(cache.get_or_fill("k", 1, 60_000, || slow_fill(&fills, b"x")));
        assert_eq!(again.map(|v| v.to_vec()), Ok(b"v".to_vec()));
        assert_eq!((fills.get(), cache.counters().l1.hits), (1, 1));
    }

    #[test]
    fn a_failed_fill_reaches_its_waiters_and_is_not_kept() {
        let cache = Cache::new(&config(), None);
        let fills = Cell::new(0);
        let failing = || async {
            slow_fill(&fills, b"").await?;
            Err(HttpError::new(503, binance::DISCONNECTED, "down"))
        };
        let tasks: Vec<Task<'_>> = (0..10)
            .map(|_| Box::pin(cache.get_or_fill("k", 1, 60_000, failing)) as Task<'_>)
            .collect();
        for value in join_all(tasks) {
            assert_eq!(value.map_err(|e| e.code), Err(binance::DISCONNECTED));
        }
        assert_eq!(
            (fills.get(), cache.counters().l1.fills, cache.counters().l1_entries),
            (1, 0, 0)
        );
    }

    #[test]
    fn a_dropped_fill_wakes_its_waiters_and_one_of_them_fills() {
        let cache = Cache::new(&config(), None);
        let fills = Cell::new(0);
        let mut never: Task<'_> =
            Box::pin(cache.get_or_fill("k", 1, 60_000, std::future::pending::<Result<Vec<u8>, HttpError>>));
        assert!(pending_once(&mut never));
        let mut waiters: Vec<Task<'_>> = (0..10)
            .map(|_| Box::pin(cache.get_or_fill("k", 1, 60_000, || slow_fill(&fills, b"v"))) as Task<'_>)
            .collect();
        for waiter in &mut waiters {
            assert!(pending_once(waiter));
        }
        drop(never);
        for value in join_all(waiters) {
            assert_eq!(value.map(|v| v.to_vec()), Ok(b"v".to_vec()));
        }
        assert_eq!(fills.get(), 1);
    }

    #[test]
    fn an_invalidation_drops_older_versions_and_a_subscription_regained_empties_l1() {
        futures_lite::future::block_on(async {
            let cache = Cache::new(&config(), None);
            let fill = |v: &'static [u8]| async move { Ok(v.to_vec()) };
            cache.get_or_fill("a", 1, 60_000, || fill(b"a1")).await.map(|_| ()).ok();
            cache.get_or_fill("b", 1, 60_000, || fill(b"b1")).await.map(|_| ()).ok();
            cache.on_event(Event::Subscribed);
            assert_eq!(cache.counters().l1_entries, 2, "the first subscription clears nothing");
            cache.on_event(Event::Message(b"a 2"));
            cache.on_event(Event::Message(b"b 1"));
            cache.on_event(Event::Message(b"garbage"));
            let counters = cache.counters();
            assert_eq!(
                (counters.l1.invalidations, counters.l1_entries, counters.subscribed),
                (1, 1, 1)
            );
            // Lost: L1 keeps serving; subscribed again: it starts over.
            cache.on_event(Event::Lost);
            assert_eq!((cache.counters().l1_entries, cache.counters().subscribed), (1, 0));
            cache.on_event(Event::Subscribed);
            let counters = cache.counters();
            assert_eq!(
                (counters.l1.invalidations, counters.l1_entries, counters.subscribed),
                (2, 0, 1)
            );
            // The owner's own L1 drops the old version at once.
            cache.get_or_fill("b", 1, 60_000, || fill(b"b1")).await.map(|_| ()).ok();
            cache.invalidate("b", 2).await;
            assert_eq!((cache.counters().l1.invalidations, cache.counters().l1_entries), (3, 0));
        });
    }

    #[test]
    fn invalidations_parse() {
        assert_eq!(parse_invalidation(b"exchangeInfo:1f 42"), Some(("exchangeInfo:1f", 42)));
        assert_eq!(parse_invalidation(b"x"), None);
        assert_eq!(parse_invalidation(b"x y"), None);
        assert_eq!(parse_invalidation(b"\xff 1"), None);
    }
}
