//! How calls to a dependency (PostgreSQL, Redis) fail well: retries with
//! exponential backoff and full jitter, and a circuit breaker per shard
//! per dependency.
//!
//! No I/O, no clock, no randomness of its own: callers pass the time and
//! the random numbers, so every decision can be replayed in a test.
//!
//! The breaker is closed while calls succeed. It opens when, within the
//! last `window_ms`, at least `failures_min` calls failed and failures are
//! at least `failure_ratio_permille` of the calls; while open it refuses
//! every call for `open_ms`. Then it lets `half_open_probes` calls through
//! (half-open): one failure opens it again, that many successes close it.
//!
//! **Invariant:** the window's memory is fixed (`BREAKER_BUCKETS` counters),
//! whatever the call rate.

/// The next number of a xorshift64 sequence kept in `state` (never 0):
/// the random numbers a backoff's jitter needs, no more.
pub(crate) fn xorshift(state: &mut u64) -> u64 {
    let mut x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    x
}

/// Buckets the breaker's window is counted in.
pub(crate) const BREAKER_BUCKETS: usize = 10;

/// Exponential backoff with full jitter: the n-th delay is uniform in
/// `0..=min(max_ms, base_ms · 2ⁿ)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Backoff {
    base_ms: u64,
    max_ms: u64,
    attempt: u32,
}

impl Backoff {
    pub(crate) fn new(base_ms: u64, max_ms: u64) -> Backoff {
        assert!(base_ms > 0 && base_ms <= max_ms, "backoff {base_ms}..{max_ms} ms");
        Backoff {
            base_ms,
            max_ms,
            attempt: 0,
        }
    }

    /// The delay before the next attempt, from a uniform `random` number.
    pub(crate) fn next_delay_ms(&mut self, random: u64) -> u64 {
        let ceiling = self
            .base_ms
            .checked_shl(self.attempt)
            .filter(|c| *c >> self.attempt == self.base_ms)
            .map_or(self.max_ms, |c| c.min(self.max_ms));
        self.attempt = self.attempt.saturating_add(1);
        // A ceiling of u64::MAX takes every random number as it is.
        match ceiling.checked_add(1) {
            Some(span) => random % span,
            None => random,
        }
    }

    /// After a success the next failure starts from the base again.
    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// When a breaker opens and how it recovers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BreakerConfig {
    /// Failures within the window needed to open.
    pub(crate) failures_min: u32,
    /// Failures per thousand calls within the window needed to open.
    pub(crate) failure_ratio_permille: u32,
    pub(crate) window_ms: u64,
    /// How long an open breaker refuses calls before it probes.
    pub(crate) open_ms: u64,
    /// Calls let through half-open; that many successes close it.
    pub(crate) half_open_probes: u32,
}

/// A breaker's state, as /metrics shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    /// The gauge value: 0 closed, 1 open, 2 half-open.
    pub(crate) fn gauge(self) -> u64 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
        }
    }
}

/// Calls and failures in one bucket of the window.
#[derive(Clone, Copy, Debug, Default)]
struct Bucket {
    /// The bucket's index since the epoch (`now_ms / bucket_ms`).
    slot: u64,
    calls: u32,
    failures: u32,
}

#[derive(Clone, Debug)]
pub(crate) struct Breaker {
    config: BreakerConfig,
    state: BreakerState,
    open_until_ms: u64,
    probes_started: u32,
    probes_succeeded: u32,
    buckets: [Bucket; BREAKER_BUCKETS],
    /// State changes so far, for /metrics.
    transitions: u64,
}

impl Breaker {
    pub(crate) fn new(config: BreakerConfig) -> Breaker {
        assert!(
            config.window_ms >= BREAKER_BUCKETS as u64,
            "a breaker window of {} ms",
            config.window_ms
        );
        assert!(config.half_open_probes > 0, "a breaker needs a probe");
        Breaker {
            config,
            state: BreakerState::Closed,
            open_until_ms: 0,
            probes_started: 0,
            probes_succeeded: 0,
            buckets: [Bucket::default(); BREAKER_BUCKETS],
            transitions: 0,
        }
    }

    pub(crate) fn state(&self) -> BreakerState {
        self.state
    }

    pub(crate) fn transitions(&self) -> u64 {
        self.transitions
    }

    /// Whether a call may go out now. An open breaker turns half-open once
    /// `open_ms` have passed; half-open lets `half_open_probes` calls
    /// through.
    pub(crate) fn allow(&mut self, now_ms: u64) -> bool {
        if self.state == BreakerState::Open && now_ms >= self.open_until_ms {
            self.set(BreakerState::HalfOpen);
            self.probes_started = 0;
            self.probes_succeeded = 0;
        }
        match self.state {
            BreakerState::Closed => true,
            BreakerState::Open => false,
            BreakerState::HalfOpen if self.probes_started < self.config.half_open_probes => {
                self.probes_started += 1;
                true
            }
            BreakerState::HalfOpen => false,
        }
    }

    /// Records how an allowed call ended.
    pub(crate) fn record(&mut self, now_ms: u64, ok: bool) {
        match self.state {
            BreakerState::HalfOpen if !ok => self.open(now_ms),
            BreakerState::HalfOpen => {
                self.probes_succeeded += 1;
                if self.probes_succeeded >= self.config.half_open_probes {
                    self.buckets = [Bucket::default(); BREAKER_BUCKETS];
                    self.set(BreakerState::Closed);
                }
            }
            BreakerState::Closed => {
                self.count(now_ms, ok);
                if self.tripped(now_ms) {
                    self.open(now_ms);
                }
            }
            // A call allowed before the breaker opened: it changes nothing.
            BreakerState::Open => {}
        }
    }

    fn open(&mut self, now_ms: u64) {
        self.open_until_ms = now_ms.saturating_add(self.config.open_ms);
        self.set(BreakerState::Open);
    }

    fn set(&mut self, state: BreakerState) {
        if self.state != state {
            self.state = state;
            self.transitions += 1;
        }
    }

    fn bucket_ms(&self) -> u64 {
        self.config.window_ms / BREAKER_BUCKETS as u64
    }

    fn count(&mut self, now_ms: u64, ok: bool) {
        let slot = now_ms / self.bucket_ms();
        let bucket = &mut self.buckets[(slot % BREAKER_BUCKETS as u64) as usize];
        if bucket.slot != slot {
            *bucket = Bucket {
                slot,
                ..Bucket::default()
            };
        }
        bucket.calls += 1;
        bucket.failures += u32::from(!ok);
    }

    /// Calls and failures in the buckets of the window ending now.
    fn totals(&self, now_ms: u64) -> (u64, u64) {
        let now_slot = now_ms / self.bucket_ms();
        let oldest = now_slot.saturating_sub(BREAKER_BUCKETS as u64 - 1);
        self.buckets
            .iter()
            .filter(|b| b.calls > 0 && b.slot >= oldest && b.slot <= now_slot)
            .fold((0, 0), |(c, f), b| (c + u64::from(b.calls), f + u64::from(b.failures)))
    }

    fn tripped(&self, now_ms: u64) -> bool {
        let (calls, failures) = self.totals(now_ms);
        failures >= u64::from(self.config.failures_min)
            && failures * 1000 >= calls * u64::from(self.config.failure_ratio_permille)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_with_full_jitter() {
        let mut backoff = Backoff::new(10, 1_000);
        // With the largest random number each delay is the ceiling itself.
        let ceilings: Vec<u64> = (0..10).map(|_| backoff.next_delay_ms(u64::MAX)).collect();
        let expected: Vec<u64> = [10u64, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000]
            .iter()
            .map(|c| u64::MAX % (c + 1))
            .collect();
        assert_eq!(ceilings, expected);
        backoff.reset();
        assert_eq!(
            backoff.next_delay_ms(7),
            7,
            "after a reset the ceiling is the base again"
        );
        assert_eq!(backoff.next_delay_ms(0), 0, "full jitter reaches zero");
        let mut long = Backoff::new(3, u64::MAX);
        for _ in 0..200 {
            long.next_delay_ms(u64::MAX);
        }
        assert_eq!(long.next_delay_ms(5), 5, "no overflow after many attempts");
    }

    fn config() -> BreakerConfig {
        BreakerConfig {
            failures_min: 3,
            failure_ratio_permille: 500,
            window_ms: 1_000,
            open_ms: 5_000,
            half_open_probes: 2,
        }
    }

    /// (time, call outcome or None for a refused call) → expected state
    /// after, as a table.
    #[test]
    fn breaker_opens_probes_and_closes() {
        let mut b = Breaker::new(config());
        type Step = (u64, Option<bool>, bool, BreakerState);
        // (now, outcome to record if allowed, allowed?, state after)
        let table: &[Step] = &[
            (0, Some(false), true, BreakerState::Closed),
            (10, Some(false), true, BreakerState::Closed),
            (20, Some(true), true, BreakerState::Closed),
            (30, Some(true), true, BreakerState::Closed),
            // 3 failures of 5 calls: ≥ 3 and ≥ 50 %.
            (40, Some(false), true, BreakerState::Open),
            (41, Some(true), false, BreakerState::Open),
            (5_039, Some(true), false, BreakerState::Open),
            // open_ms over: two probes go through, a third does not.
            (5_040, None, true, BreakerState::HalfOpen),
            (5_041, None, true, BreakerState::HalfOpen),
            (5_042, None, false, BreakerState::HalfOpen),
        ];
        for &(now, outcome, allowed, state) in table {
            let got = b.allow(now);
            assert_eq!(got, allowed, "allow at {now}");
            if got {
                if let Some(ok) = outcome {
                    b.record(now, ok);
                }
            }
            assert_eq!(b.state(), state, "state at {now}");
        }
        b.record(5_043, true);
        assert_eq!(b.state(), BreakerState::HalfOpen, "one probe of two succeeded");
        b.record(5_044, true);
        assert_eq!(b.state(), BreakerState::Closed, "both probes succeeded");
        assert_eq!(b.transitions(), 3, "closed → open → half-open → closed");
        assert!(b.allow(5_045), "closed again, with a fresh window");
        b.record(5_045, false);
        assert_eq!(b.state(), BreakerState::Closed, "one failure in a fresh window");
    }

    #[test]
    fn a_failed_probe_opens_again() {
        let mut b = Breaker::new(config());
        for t in 0..3 {
            assert!(b.allow(t));
            b.record(t, false);
        }
        assert_eq!(b.state(), BreakerState::Open);
        assert!(b.allow(5_002));
        b.record(5_002, false);
        assert_eq!(b.state(), BreakerState::Open);
        assert!(!b.allow(10_001), "open again for open_ms from the failed probe");
        assert!(b.allow(10_002));
        assert_eq!(b.state(), BreakerState::HalfOpen);
    }

    #[test]
    fn failures_below_the_ratio_or_outside_the_window_do_not_open() {
        let mut b = Breaker::new(config());
        // 3 failures among 7 calls: 43 %, under 50 %.
        for (t, ok) in [
            (0, false),
            (1, true),
            (2, false),
            (3, true),
            (4, true),
            (5, true),
            (6, false),
        ] {
            assert!(b.allow(t));
            b.record(t, ok);
        }
        assert_eq!(b.state(), BreakerState::Closed);
        // Two failures long ago and two now: only those in the window count.
        let mut b = Breaker::new(config());
        for t in [0, 1, 2_000] {
            b.allow(t);
            b.record(t, false);
        }
        assert_eq!(
            b.state(),
            BreakerState::Closed,
            "the first two failures left the window"
        );
        b.allow(2_001);
        b.record(2_001, false);
        assert_eq!(
            b.state(),
            BreakerState::Closed,
            "2 failures in the window are under failures_min"
        );
        b.allow(2_002);
        b.record(2_002, false);
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[test]
    fn gauge_values() {
        let states = [BreakerState::Closed, BreakerState::Open, BreakerState::HalfOpen];
        assert_eq!(states.map(BreakerState::gauge), [0, 1, 2]);
    }
}
