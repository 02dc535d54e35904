//! Random operations for the engine's tests: the generator the differential
//! test checks against its reference, and a `Driver` that feeds the same
//! operations to an `Exchange` alone, for tests that compare two exchanges
//! (a machine and its restored snapshot, or its repartitioned copy).

use tradsys_engine::account::{AccountEvent, AmendRequest, MmpConfig, NewOrderResult, OrderRef};
use tradsys_engine::driver::{Exchange, Output};
use tradsys_engine::market::MarketSpec;
use tradsys_engine::msg::Fill;
use tradsys_engine::num::{Amount, Price, Qty};
use tradsys_engine::order::{AssetId, CancelReplaceMode, ClientOrderId, MarketId, OrderQty};
use tradsys_engine::order::{OrderRequest, OrderType, Side, StpMode, TimeInForce};
use tradsys_engine::EngineError;

pub const USERS_COUNT: u64 = 6;
/// Orders `Gen::recent` keeps before it drops its older half.
const RECENT_MAX: usize = 64;

#[derive(Clone)]
pub struct SplitMix(pub u64);

impl SplitMix {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Deposit(u64, usize, i64),
    Withdraw(u64, usize, i64),
    Place(u64, OrderRequest),
    Cancel(u64, MarketId, OrderRef),
    CancelAll(u64, MarketId),
    Replace(u64, OrderRef, CancelReplaceMode, OrderRequest),
    Amend(u64, AmendRequest),
    /// Market maker protection set (or removed), and reset.
    MmpSet(u64, MarketId, Option<MmpConfig>),
    MmpReset(u64, MarketId),
}

#[derive(Clone)]
pub struct Gen {
    pub rng: SplitMix,
    pub specs: Vec<MarketSpec>,
    /// Users are 1..=users.
    pub users: u64,
    /// Recent orders (id, user, market) that cancels and replaces aim at.
    pub recent: Vec<(u64, u64, MarketId)>,
}

impl Gen {
    fn price(&mut self, market: usize) -> Price {
        let s = &self.specs[market];
        let mid = [10_000, 2_000, 2_000][market];
        let ticks = mid + self.rng.below(21) as i64 - 10;
        let mut price = ticks * s.tick_size.0;
        if self.rng.chance(2) {
            price += 1;
        }
        Price(price)
    }

    fn qty(&mut self, market: usize) -> Qty {
        let s = &self.specs[market];
        let steps = [(1, 300), (1, 100), (1, 300)][market];
        let mut qty = s.step_size.0 * (steps.0 + self.rng.below(steps.1) as i64);
        if self.rng.chance(2) {
            qty += 1;
        }
        if self.rng.chance(1) {
            qty = 0;
        }
        Qty(qty)
    }

    fn request(&mut self, next_id: u64) -> OrderRequest {
        let market = self.rng.below(self.specs.len() as u64) as usize;
        let side = if self.rng.chance(50) { Side::Buy } else { Side::Sell };
        let kinds = [
            OrderType::Limit,
            OrderType::Limit,
            OrderType::Limit,
            OrderType::Market,
            OrderType::LimitMaker,
            OrderType::StopLoss,
            OrderType::StopLossLimit,
            OrderType::TakeProfit,
            OrderType::TakeProfitLimit,
        ];
        let kind = kinds[self.rng.below(kinds.len() as u64) as usize];
        let tifs = [TimeInForce::Gtc, TimeInForce::Gtc, TimeInForce::Ioc, TimeInForce::Fok];
        let stps = [
            StpMode::None,
            StpMode::ExpireTaker,
            StpMode::ExpireMaker,
            StpMode::ExpireBoth,
        ];
        let wants_tif = matches!(
            kind,
            OrderType::Limit | OrderType::StopLossLimit | OrderType::TakeProfitLimit
        );
        let mut r = OrderRequest {
            market: MarketId(market as u16),
            side,
            kind,
            time_in_force: wants_tif.then(|| tifs[self.rng.below(4) as usize]),
            price: kind.has_price().then(|| self.price(market)),
            qty: OrderQty::Base(self.qty(market)),
            stop_price: kind.is_stop().then(|| self.price(market)),
            client_order_id: None,
            stp: stps[self.rng.below(4) as usize],
            iceberg_qty: None,
            trailing_delta: None,
        };
        if kind == OrderType::Market && self.rng.chance(40) {
            let s = &self.specs[market];
            let quote = s.min_notional.0 * (1 + self.rng.below(200) as i64);
            r.qty = OrderQty::Quote(Amount(quote));
        }
        if self.rng.chance(1) {
            r.price = if r.price.is_some() {
                None
            } else {
                Some(self.price(market))
            };
        }
        if self.rng.chance(20) {
            r.client_order_id = ClientOrderId::new(&format!("c{}", next_id % 7));
        }
        if self.rng.chance(if kind.has_price() { 20 } else { 1 }) {
            self.make_iceberg(&mut r);
        }
        if self.rng.chance(if kind.is_stop() { 30 } else { 1 }) {
            // Mostly within the TRAILING_DELTA filter, half of them
            // without a stop price.
            r.trailing_delta = Some(5 + self.rng.below(2100) as u32);
            if self.rng.chance(50) {
                r.stop_price = None;
            }
        }
        r
    }

    /// Shows a part of the order at a time: mostly a valid iceberg, now
    /// and then one of more parts than ICEBERG_PARTS, one as large as the
    /// order, off the step size or not good till cancelled, which are
    /// refused.
    fn make_iceberg(&mut self, r: &mut OrderRequest) {
        let step = self.specs[usize::from(r.market.0)].step_size.0;
        let OrderQty::Base(qty) = r.qty else {
            r.iceberg_qty = Some(Qty(step));
            return;
        };
        let parts = 1 + self.rng.below(12) as i64;
        let mut visible = qty.0 / parts / step * step;
        if self.rng.chance(2) {
            visible += 1;
        }
        r.iceberg_qty = Some(Qty(visible));
        if r.time_in_force.is_some() && self.rng.chance(85) {
            r.time_in_force = Some(TimeInForce::Gtc);
        }
    }

    fn target(&mut self, user: u64) -> Option<(OrderRef, MarketId)> {
        let mine: Vec<&(u64, u64, MarketId)> = self.recent.iter().filter(|r| r.1 == user).collect();
        if mine.is_empty() || self.rng.chance(5) {
            return None;
        }
        let &(id, _, market) = mine[self.rng.below(mine.len() as u64) as usize];
        if self.rng.chance(10) {
            return Some((OrderRef::Client(ClientOrderId::new(&format!("c{}", id % 7))?), market));
        }
        Some((OrderRef::Id(id), market))
    }

    pub fn op(&mut self, next_id: u64) -> Op {
        let user = 1 + self.rng.below(self.users);
        let roll = self.rng.below(100);
        let asset = self.rng.below(3) as usize;
        let amount = (1 + self.rng.below(100_000)) as i64 * [1_000_000, 100_000_000, 1_000_000][asset];
        match roll {
            0..=5 => Op::Deposit(user, asset, amount),
            6..=8 => Op::Withdraw(user, asset, amount / 10),
            9..=68 => Op::Place(user, self.request(next_id)),
            69..=84 => match self.target(user) {
                Some((target, market)) => Op::Cancel(user, market, target),
                None => Op::Cancel(user, MarketId(0), OrderRef::Id(next_id + 5)),
            },
            85..=86 => Op::CancelAll(user, MarketId(self.rng.below(3) as u16)),
            87..=92 => {
                let (target, market) = self.target(user).unwrap_or((OrderRef::Id(next_id + 3), MarketId(0)));
                // Mostly a smaller order; sometimes the same, a larger or
                // an off-step quantity, which are refused.
                let s = &self.specs[usize::from(market.0)];
                let new_qty = Qty(s.step_size.0 * (1 + self.rng.below(150) as i64) + i64::from(self.rng.chance(2)));
                let client = self
                    .rng
                    .chance(15)
                    .then(|| ClientOrderId::new(&format!("c{}", next_id % 7)))
                    .flatten();
                let request = AmendRequest {
                    market,
                    target,
                    new_qty,
                    new_client_order_id: client,
                };
                Op::Amend(user, request)
            }
            93 => {
                let market = MarketId(self.rng.below(self.specs.len() as u64) as u16);
                let step = self.specs[usize::from(market.0)].step_size.0;
                // Limits of several orders' size, and half of the sets
                // removals: a protection fires now and then, not at every
                // fill.
                let config = (!self.rng.chance(50)).then(|| MmpConfig {
                    window_ms: 1 + self.rng.below(40),
                    frozen_ms: if self.rng.chance(5) { 0 } else { 1 + self.rng.below(30) },
                    qty_limit: Qty(step * (300 + self.rng.below(3000) as i64)),
                    delta_limit: Qty(step * (200 + self.rng.below(2000) as i64)),
                });
                Op::MmpSet(user, market, config)
            }
            94 => Op::MmpReset(user, MarketId(self.rng.below(self.specs.len() as u64) as u16)),
            _ => {
                let mut request = self.request(next_id);
                let mode = if self.rng.chance(50) {
                    CancelReplaceMode::StopOnFailure
                } else {
                    CancelReplaceMode::AllowFailure
                };
                let target = match self.target(user) {
                    Some((target, market)) => {
                        if !self.rng.chance(10) {
                            request.market = market;
                            request.price = request.price.map(|_| self.price(usize::from(market.0)));
                            request.stop_price = request.stop_price.map(|_| self.price(usize::from(market.0)));
                            if let OrderQty::Base(_) = request.qty {
                                request.qty = OrderQty::Base(self.qty(usize::from(market.0)));
                            }
                        }
                        target
                    }
                    None => OrderRef::Id(next_id + 7),
                };
                Op::Replace(user, target, mode, request)
            }
        }
    }
}

impl Gen {
    pub fn new(seed: u64, specs: &[MarketSpec]) -> Gen {
        Gen {
            rng: SplitMix(seed),
            specs: specs.to_vec(),
            users: USERS_COUNT,
            recent: Vec::new(),
        }
    }

    /// Remembers an order that now exists, as a target for later cancels.
    pub fn remember(&mut self, id: u64, user: u64, market: MarketId) {
        self.recent.push((id, user, market));
        if self.recent.len() > RECENT_MAX {
            self.recent.drain(..RECENT_MAX / 2);
        }
    }
}

/// What one operation answered: the synchronous result and every event
/// and fill it caused, in order.
#[derive(Debug, PartialEq, Eq)]
pub struct Step {
    pub op: Op,
    pub sync: Result<(), EngineError>,
    pub events: Vec<AccountEvent>,
    pub fills: Vec<Fill>,
}

/// Feeds generated operations to an exchange; cloning it replays the same
/// operations on another exchange.
#[derive(Clone)]
pub struct Driver {
    pub gen: Gen,
    pub next_id: u64,
    pub time_ms: u64,
}

impl Driver {
    pub fn new(seed: u64, specs: &[MarketSpec]) -> Driver {
        Driver {
            gen: Gen::new(seed, specs),
            next_id: 1,
            time_ms: 0,
        }
    }

    /// Generates one operation, runs it and returns what it answered.
    pub fn step(&mut self, exchange: &mut Exchange, out: &mut Output) -> Step {
        let op = self.gen.op(self.next_id);
        self.time_ms += 1;
        let time = self.time_ms;
        out.clear();
        let sync = match op {
            Op::Deposit(user, asset, amount) => exchange.deposit(user, AssetId(asset as u16), Amount(amount)),
            Op::Withdraw(user, asset, amount) => exchange.withdraw(user, AssetId(asset as u16), Amount(amount)),
            Op::Place(user, request) => {
                let id = self.next_id;
                self.next_id += 1;
                exchange.place(user, &request, id, time, out)
            }
            Op::Cancel(user, market, target) => exchange.cancel(user, market, target, time, out).map(|_| ()),
            Op::CancelAll(user, market) => {
                exchange.cancel_all(user, market, time, out);
                Ok(())
            }
            Op::Replace(user, target, mode, request) => {
                let id = self.next_id;
                self.next_id += 1;
                exchange.cancel_replace(user, target, mode, &request, id, time, out);
                Ok(())
            }
            Op::Amend(user, request) => exchange.amend(user, &request, time, out).map(|_| ()),
            Op::MmpSet(user, market, config) => {
                exchange.set_mmp(user, market, config);
                Ok(())
            }
            Op::MmpReset(user, market) => {
                exchange.reset_mmp(user, market);
                Ok(())
            }
        };
        self.remember_placed(op, out);
        Step {
            op,
            sync,
            events: out.events.clone(),
            fills: out.fills.clone(),
        }
    }

    fn remember_placed(&mut self, op: Op, out: &Output) {
        let (user, market) = match op {
            Op::Place(user, request) | Op::Replace(user, _, _, request) => (user, request.market),
            _ => return,
        };
        for event in &out.events {
            match *event {
                AccountEvent::Placed {
                    order_id,
                    result: Ok(_),
                }
                | AccountEvent::CancelReplaced {
                    order_id,
                    new: NewOrderResult::Success(_),
                    ..
                } => self.gen.remember(order_id, user, market),
                _ => {}
            }
        }
    }
}
