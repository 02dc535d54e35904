//! Overload: how long work now waits for this shard's CPU, and which
//! priorities are shed while it waits too long.
//!
//! A shard is one thread running one task per connection. When requests
//! arrive faster than it can answer them, each waits for every ready task
//! ahead of it; that wait is what a client sees grow. A probe measures it
//! every [`PROBE_INTERVAL_MS`]: it yields to the back of the run queue and
//! times how long the tasks ahead of it take. A request whose priority's
//! limit is below the current wait is refused before its parameters are
//! parsed or its signature checked, with 503 -1008 and `Retry-After`, so
//! that a refusal costs a small fraction of an answer and the admitted
//! requests keep their latency. Lower priorities are shed at smaller
//! waits, so order entry is the last to go.

use crate::endpoint::Endpoint;
use std::cell::Cell;
use std::time::Duration;

/// How often the probe measures the wait when the shard is idle.
pub(crate) const PROBE_INTERVAL_MS: u64 = 1;

/// Each probe lowers the recorded wait by this fraction of it (one in N)
/// unless the probe measured more.
const WAIT_DECAY_ONE_IN: u64 = 8;

/// What a request is for, highest priority first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Priority {
    /// Orders, cancels, and the reads a trading client needs to trade
    /// (its open orders, its account, its order's status).
    Trading = 0,
    /// Public market data, stream handshakes, listen keys.
    MarketData = 1,
    /// History: finished orders, trades, exports, transfers.
    History = 2,
    /// The admin API (`/metrics`, like `/health` and `/ready`, is never
    /// shed).
    Ops = 3,
}

impl Priority {
    pub(crate) const ALL: [Priority; 4] = [
        Priority::Trading,
        Priority::MarketData,
        Priority::History,
        Priority::Ops,
    ];

    pub(crate) fn of(endpoint: Endpoint) -> Priority {
        use Endpoint::*;
        match endpoint {
            OrderNew | OrderCancel | OrderTest | OrderCancelReplace | OrderAmend | OpenOrdersCancel | OrderQuery
            | OrderAmendments | CountdownCancelAll | MmpSet | MmpQuery | MmpReset | MmpDelete | OpenOrders
            | Account | RateLimitOrder | OrderListOco | OrderListOto | OrderListOtoco | OrderOco | OrderListCancel
            | OrderListQuery | OpenOrderList => Priority::Trading,
            Ping
            | Time
            | ExchangeInfo
            | Depth
            | Trades
            | AggTrades
            | Klines
            | UiKlines
            | AvgPrice
            | Ticker24hr
            | TickerPrice
            | TickerBookTicker
            | TickerRolling
            | TickerTradingDay
            | UserDataStreamStart
            | UserDataStreamKeepalive
            | UserDataStreamClose
            | SystemStatus
            | CapitalConfig
            | TradeFee
            | AccountCommission => Priority::MarketData,
            HistoricalTrades | AllOrders | AllOrderList | MyTrades | DepositHistory | WithdrawHistory
            | DepositAddress | WithdrawApply | ExportCreate | ExportStatus | ExportDownload => Priority::History,
        }
    }

    /// This priority's share of the order-entry limit, in quarters: ops
    /// go at a quarter of it, history at half, market data at three
    /// quarters, order entry at all of it.
    fn quarters(self) -> u64 {
        4 - self as u64
    }
}

/// The shard's current wait and what it shed.
#[derive(Debug)]
pub(crate) struct Overload {
    /// The wait at which order entry is refused, µs; 0: nothing is shed.
    trading_limit_us: u64,
    /// The wait now: the longest recent probe, decaying by an eighth a
    /// probe, µs.
    wait_us: Cell<u64>,
    /// The least wait recorded, µs: 0, or what a test sets
    /// (`TRADSYS_TEST_OVERLOAD_WAIT_US`) to see every priority shed.
    floor_us: u64,
    shed: [Cell<u64>; 4],
}

impl Overload {
    pub(crate) fn new(trading_limit_ms: u64, floor_us: u64) -> Overload {
        Overload {
            trading_limit_us: trading_limit_ms.saturating_mul(1_000),
            wait_us: Cell::new(floor_us),
            floor_us,
            shed: Default::default(),
        }
    }

    /// Whether a request of `priority` may start now; a refusal is counted.
    pub(crate) fn admits(&self, priority: Priority) -> bool {
        if self.trading_limit_us == 0 || self.wait_us.get() < self.limit_us(priority) {
            return true;
        }
        let shed = &self.shed[priority as usize];
        shed.set(shed.get() + 1);
        false
    }

    fn limit_us(&self, priority: Priority) -> u64 {
        self.trading_limit_us * priority.quarters() / 4
    }

    /// The current wait, µs.
    pub(crate) fn wait_us(&self) -> u64 {
        self.wait_us.get()
    }

    /// Requests of `priority` refused so far.
    pub(crate) fn shed(&self, priority: Priority) -> u64 {
        self.shed[priority as usize].get()
    }

    /// Whether a probe is needed: nothing is shed without a limit.
    pub(crate) fn is_on(&self) -> bool {
        self.trading_limit_us != 0
    }

    /// Takes one measurement (a probe's yield: see `server::start`): a
    /// new maximum counts at once, and the wait
    /// falls by an eighth a probe once the queue drains, so a burst is
    /// shed for a few milliseconds after it and not longer.
    pub(crate) fn record(&self, sample: Duration) {
        let sample_us = u64::try_from(sample.as_micros()).unwrap_or(u64::MAX);
        let decayed = self.wait_us.get() - self.wait_us.get() / WAIT_DECAY_ONE_IN;
        self.wait_us.set(sample_us.max(decayed).max(self.floor_us));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lower_priorities_are_shed_at_smaller_waits() {
        let overload = Overload::new(8, 0);
        overload.record(Duration::from_millis(5));
        let admitted: Vec<bool> = Priority::ALL.iter().map(|&p| overload.admits(p)).collect();
        // Limits: ops 2 ms, history 4 ms, market data 6 ms, trading 8 ms.
        assert_eq!(admitted, [true, true, false, false]);
        assert_eq!(
            Priority::ALL.map(|p| overload.shed(p)),
            [0, 0, 1, 1],
            "each refusal counted under its priority"
        );
        overload.record(Duration::from_millis(9));
        assert!(!overload.admits(Priority::Trading));
    }

    #[test]
    fn the_wait_falls_by_an_eighth_a_probe_and_jumps_to_a_new_maximum() {
        let overload = Overload::new(8, 0);
        overload.record(Duration::from_micros(8_000));
        overload.record(Duration::from_micros(10));
        assert_eq!(overload.wait_us(), 7_000);
        overload.record(Duration::from_micros(10));
        assert_eq!(overload.wait_us(), 6_125);
        overload.record(Duration::from_micros(9_000));
        assert_eq!(overload.wait_us(), 9_000);
    }

    #[test]
    fn a_zero_limit_sheds_nothing() {
        let overload = Overload::new(0, 0);
        overload.record(Duration::from_secs(5));
        assert!(Priority::ALL.iter().all(|&p| overload.admits(p)));
    }
}
