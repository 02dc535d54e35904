//! Differential test: random operations against the engine (accounts and
//! books wired by the driver, over several account machines) and against a
//! naive reference written for obviousness (one `Vec` of orders, linear
//! scans, one balance table). Every response, every fill and the final
//! balances must agree, and every invariant must hold after every operation.
//!
//! TRADSYS_SEED picks the seed (printed on failure): a number, or `time`
//! for a new one each run (exploration, outside the README's test
//! command); without it, the fixed `SEED_DEFAULT`, so that the test
//! command is reproducible. TRADSYS_DIFF_OPS sets the total operation
//! count, split over the tests below (default 1,000,000), and
//! TRADSYS_DIFF_FULL_CHECK_EVERY how often the full structural check runs
//! (default: after every operation; conservation and locks are checked
//! after every operation in any case).
//!
//! The seeds `1796588282236273415` and `1796578344058600535` once failed
//! with several account machines (a cancelReplace's new MARKET order was
//! sized against different reference prices here and in the engine);
//! docs/engine.md tells how the reference now reads it.

mod common;

use std::collections::BTreeMap;

use common::ops::{Gen, Op};
use common::specs;
use tradsys_engine::account::{AccountEvent, MmpConfig, NewOrderResult, OrderRef};
use tradsys_engine::book::BookCapacity;
use tradsys_engine::driver::{Exchange, Output};
use tradsys_engine::market::MarketSpec;
use tradsys_engine::msg::Fill;
use tradsys_engine::num::{Amount, UNIT};
use tradsys_engine::order::{AssetId, CancelReplaceMode, ClientOrderId, OrderQty};
use tradsys_engine::order::{OrderRequest, OrderStatus, OrderType, Side, StpMode, TimeInForce};
use tradsys_engine::EngineError;

const OPS_DEFAULT_COUNT: u64 = 1_000_000;
const OPEN_MAX: usize = 200;
const ICEBERGS_OPEN_MAX: usize = 100;
const STOPS_OPEN_MAX: usize = 100;
const ICEBERG_PARTS_MAX: i64 = 10;
const PROTECTION: i128 = 5_000_000;

// ---------------------------------------------------------------- reference

#[derive(Clone, Copy, Debug)]
struct RefOrder {
    id: u64,
    user: u64,
    market: usize,
    side: Side,
    kind: OrderType,
    tif: TimeInForce,
    price: i64,
    stop: i64,
    client: Option<ClientOrderId>,
    stp: StpMode,
    qty_left: i64,
    quote_left: i64,
    by_quote: bool,
    lock_asset: usize,
    locked: i64,
    executed: i64,
    cumm: i64,
    held: bool,
    rested_at: u64,
    /// The iceberg quantity (zero for a plain order) and, while it rests,
    /// its visible part.
    peak: i64,
    shown: i64,
    /// A trailing stop's delta (zero if it does not trail), the best price
    /// since it began tracking, and whether a trade fired it.
    trailing: u32,
    best: Option<i64>,
    fired: bool,
    amends: u8,
    /// The time of the operation that placed it: a fill it takes carries it.
    time: u64,
}

/// Market maker protection of one user in one market, as the reference
/// keeps it.
#[derive(Clone, Copy, Debug)]
struct RefMmp {
    config: MmpConfig,
    start: Option<u64>,
    qty: i64,
    delta: i64,
    frozen_until: u64,
}

/// What a caller learns about one order: status, executed, quote.
type Summary = Result<(OrderStatus, i64, i64), i32>;

#[derive(Default)]
struct Reference {
    specs: Vec<MarketSpec>,
    assets: Vec<String>,
    free: BTreeMap<(u64, usize), i64>,
    locked: BTreeMap<(u64, usize), i64>,
    fees: Vec<i64>,
    orders: Vec<RefOrder>,
    last: Vec<Option<i64>>,
    trade_ids: Vec<u64>,
    fills: Vec<(u64, i64, i64, i64, u64, u64)>,
    clock: u64,
    statuses: BTreeMap<&'static str, u64>,
    /// The time of the operation being run.
    now: u64,
    mmp: BTreeMap<(u64, usize), RefMmp>,
    /// Orders a fired protection cancels once the operation's book work is
    /// done: what was open for that user and market when it fired.
    mmp_cancels: Vec<Vec<u64>>,
    /// The reference price a cancelReplace's new order is sized against:
    /// the one read when the request came, before its cancel (as the
    /// server reads it, on the market's shard, before the operation).
    sized_against: Option<Option<i64>>,
}

/// How often, in operations, and how deep the books' depth is compared.
const DEPTH_EVERY_OPS: u64 = 8;
const DEPTH_LEVELS: usize = 10;

type Levels = Vec<(i64, i64)>;

fn levels_of(levels: &[(tradsys_engine::num::Price, tradsys_engine::num::Qty)]) -> Levels {
    levels.iter().map(|(price, qty)| (price.0, qty.0)).collect()
}

fn ceil_div(a: i128, b: i128) -> i128 {
    (a + b - 1) / b
}

impl Reference {
    fn new(specs: &[MarketSpec]) -> Reference {
        let mut assets: Vec<String> = Vec::new();
        for s in specs {
            for a in [&s.base_asset, &s.quote_asset] {
                if !assets.contains(a) {
                    assets.push(a.clone());
                }
            }
        }
        Reference {
            specs: specs.to_vec(),
            fees: vec![0; assets.len()],
            assets,
            last: vec![None; specs.len()],
            trade_ids: vec![1; specs.len()],
            ..Reference::default()
        }
    }

    fn asset(&self, name: &str) -> usize {
        self.assets.iter().position(|a| a == name).unwrap()
    }

    fn base_quote(&self, market: usize) -> (usize, usize) {
        let s = &self.specs[market];
        (self.asset(&s.base_asset), self.asset(&s.quote_asset))
    }

    fn free_mut(&mut self, user: u64, asset: usize) -> &mut i64 {
        self.free.entry((user, asset)).or_insert(0)
    }

    fn locked_mut(&mut self, user: u64, asset: usize) -> &mut i64 {
        self.locked.entry((user, asset)).or_insert(0)
    }

    fn deposit(&mut self, user: u64, asset: usize, amount: i64) -> Result<(), i32> {
        let free = self.free_mut(user, asset);
        *free = free.checked_add(amount).ok_or(-1100)?;
        Ok(())
    }

    fn withdraw(&mut self, user: u64, asset: usize, amount: i64) -> Result<(), i32> {
        let free = self.free_mut(user, asset);
        if *free < amount {
            return Err(-2010);
        }
        *free -= amount;
        Ok(())
    }

    fn best_maker(&self, market: usize, taker_side: Side) -> Option<usize> {
        let mut best: Option<usize> = None;
        for (i, o) in self.orders.iter().enumerate() {
            if o.market != market || o.side == taker_side || o.held {
                continue;
            }
            let better = match best {
                None => true,
                Some(b) => {
                    let b = &self.orders[b];
                    let price_better = match o.side {
                        Side::Buy => o.price > b.price,
                        Side::Sell => o.price < b.price,
                    };
                    price_better || (o.price == b.price && o.rested_at < b.rested_at)
                }
            };
            if better {
                best = Some(i);
            }
        }
        best
    }

    /// The top levels of each side, best first: what rests at each price,
    /// icebergs counted by their visible part.
    fn depth(&self, market: usize) -> (Levels, Levels) {
        let side = |side: Side| {
            let mut levels: BTreeMap<i64, i64> = BTreeMap::new();
            let resting = self
                .orders
                .iter()
                .filter(|o| o.market == market && o.side == side && !o.held);
            for o in resting {
                *levels.entry(o.price).or_insert(0) += if o.peak > 0 { o.shown } else { o.qty_left };
            }
            let levels: Levels = match side {
                Side::Buy => levels.into_iter().rev().collect(),
                Side::Sell => levels.into_iter().collect(),
            };
            levels.into_iter().take(DEPTH_LEVELS).collect()
        };
        (side(Side::Buy), side(Side::Sell))
    }

    fn reference_price(&self, market: usize, side: Side) -> Option<i64> {
        self.best_maker(market, side)
            .map(|i| self.orders[i].price)
            .or(self.last[market])
    }

    fn validate(&self, r: &OrderRequest) -> Result<(), i32> {
        let kind = r.kind;
        let priced = matches!(
            kind,
            OrderType::Limit | OrderType::LimitMaker | OrderType::StopLossLimit | OrderType::TakeProfitLimit
        );
        let tif = matches!(
            kind,
            OrderType::Limit | OrderType::StopLossLimit | OrderType::TakeProfitLimit
        );
        let stop = kind != OrderType::Limit && kind != OrderType::LimitMaker && kind != OrderType::Market;
        let presence = |present: bool, wanted: bool| match (present, wanted) {
            (false, true) => Err(-1102),
            (true, false) => Err(-1106),
            _ => Ok(()),
        };
        presence(r.price.is_some(), priced)?;
        presence(r.time_in_force.is_some(), tif)?;
        if r.trailing_delta.is_some() && !stop {
            return Err(-1106);
        }
        // A trailing stop needs no stop price.
        presence(r.stop_price.is_some() || r.trailing_delta.is_some(), stop)?;
        if matches!(r.qty, OrderQty::Quote(_)) && kind != OrderType::Market {
            return Err(-1106);
        }
        if let Some(visible) = r.iceberg_qty {
            if !priced {
                return Err(-1106);
            }
            if r.time_in_force.is_some_and(|t| t != TimeInForce::Gtc) {
                return Err(-2010);
            }
            if !matches!(r.qty, OrderQty::Base(qty) if visible.0 < qty.0) {
                return Err(-2010);
            }
        }
        let s = &self.specs[usize::from(r.market.0)];
        for price in [r.price, r.stop_price].into_iter().flatten() {
            if price.0 < s.min_price.0 || price.0 > s.max_price.0 || price.0 % s.tick_size.0 != 0 {
                return Err(-1013);
            }
        }
        if r.trailing_delta.is_some_and(|d| !(10..=2000).contains(&d)) {
            return Err(-1013);
        }
        let notional: i128 = match r.qty {
            OrderQty::Base(qty) => {
                if qty.0 < s.min_qty.0 || qty.0 > s.max_qty.0 || qty.0 % s.step_size.0 != 0 {
                    return Err(-1013);
                }
                if let Some(visible) = r.iceberg_qty {
                    let v = visible.0;
                    if v <= 0 || v < s.min_qty.0 || v % s.step_size.0 != 0 {
                        return Err(-1013);
                    }
                    if (qty.0 + v - 1) / v > ICEBERG_PARTS_MAX {
                        return Err(-1013);
                    }
                }
                match r.price.or(r.stop_price) {
                    Some(price) => price.0 as i128 * qty.0 as i128,
                    None => return Ok(()),
                }
            }
            OrderQty::Quote(quote) => quote.0 as i128 * UNIT as i128,
        };
        let u = UNIT as i128;
        if notional < s.min_notional.0 as i128 * u || notional > s.max_notional.0 as i128 * u {
            return Err(-1013);
        }
        Ok(())
    }

    fn place(&mut self, user: u64, r: &OrderRequest, id: u64) -> Result<Summary, i32> {
        self.validate(r)?;
        let frozen = self.mmp.get(&(user, usize::from(r.market.0)));
        if frozen.is_some_and(|m| self.now < m.frozen_until) {
            return Err(-2010);
        }
        let market = usize::from(r.market.0);
        let (base, quote) = self.base_quote(market);
        let step = self.specs[market].step_size.0 as i128;
        let read = match self.sized_against.take() {
            Some(read) => read,
            None => self.reference_price(market, r.side),
        };
        let reference = match (r.kind.is_stop(), r.trailing_delta) {
            (false, _) => read,
            (true, None) => r.stop_price.map(|p| p.0),
            // A trailing buy may fire its delta above where it begins.
            (true, Some(delta)) => r.stop_price.map(|p| p.0).or(read).map(|price| {
                let raised = ceil_div(price as i128 * (10_000 + delta as i128), 10_000);
                if r.side == Side::Buy {
                    raised as i64
                } else {
                    price
                }
            }),
        };
        let u = UNIT as i128;
        let (qty_left, quote_left, by_quote, lock_asset, lock) = match (r.qty, r.side) {
            (OrderQty::Base(qty), Side::Sell) => (qty.0, i64::MAX, false, base, qty.0),
            (OrderQty::Base(qty), Side::Buy) => {
                let lock = match (r.price, reference) {
                    (Some(price), _) => ceil_div(price.0 as i128 * qty.0 as i128, u),
                    (None, Some(reference)) => {
                        let notional = ceil_div(reference as i128 * qty.0 as i128, u);
                        ceil_div(notional * (u + PROTECTION), u)
                    }
                    (None, None) => 0,
                };
                let lock = i64::try_from(lock).map_err(|_| -2010)?;
                (qty.0, lock, false, quote, lock)
            }
            (OrderQty::Quote(amount), Side::Buy) => (i64::MAX, amount.0, true, quote, amount.0),
            (OrderQty::Quote(amount), Side::Sell) => {
                let base_lock = match reference {
                    Some(reference) => {
                        let wanted = ceil_div(amount.0 as i128 * u * u, reference as i128 * (u - PROTECTION));
                        ceil_div(wanted, step) * step
                    }
                    None => 0,
                };
                let base_lock = i64::try_from(base_lock).map_err(|_| -2010)?;
                (base_lock, amount.0, true, base, base_lock)
            }
        };
        let open: Vec<&RefOrder> = self
            .orders
            .iter()
            .filter(|o| o.user == user && o.market == market)
            .collect();
        if r.client_order_id.is_some() && open.iter().any(|o| o.client == r.client_order_id) {
            return Err(-2010);
        }
        if open.len() >= OPEN_MAX {
            return Err(-1013);
        }
        if r.kind.is_stop() && open.iter().filter(|o| o.kind.is_stop()).count() >= STOPS_OPEN_MAX {
            return Err(-1013);
        }
        if r.iceberg_qty.is_some() && open.iter().filter(|o| o.peak > 0).count() >= ICEBERGS_OPEN_MAX {
            return Err(-1013);
        }
        if *self.free_mut(user, lock_asset) < lock {
            return Err(-2010);
        }
        *self.free_mut(user, lock_asset) -= lock;
        *self.locked_mut(user, lock_asset) += lock;
        self.clock += 1;
        let order = RefOrder {
            id,
            user,
            market,
            side: r.side,
            kind: r.kind,
            tif: r.time_in_force.unwrap_or(TimeInForce::Gtc),
            price: r.price.map_or(0, |p| p.0),
            stop: r.stop_price.map_or(0, |p| p.0),
            client: r.client_order_id,
            stp: r.stp,
            qty_left,
            quote_left,
            by_quote,
            lock_asset,
            locked: lock,
            executed: 0,
            cumm: 0,
            held: r.kind.is_stop(),
            rested_at: self.clock,
            peak: r.iceberg_qty.map_or(0, |v| v.0),
            shown: 0,
            trailing: r.trailing_delta.unwrap_or(0),
            best: None,
            fired: false,
            amends: 0,
            time: self.now,
        };
        Ok(self.submit(order))
    }

    fn triggers(o: &RefOrder, last: i64) -> bool {
        let up = matches!(o.kind, OrderType::StopLoss | OrderType::StopLossLimit) == (o.side == Side::Buy);
        if up {
            last >= o.stop
        } else {
            last <= o.stop
        }
    }

    /// Every held trailing stop of `market` follows a trade at `price`:
    /// it begins tracking at the first trade that meets its stop price
    /// (any trade without one), then keeps the best price and fires when a
    /// trade is its delta worse.
    fn track_trailing(&mut self, market: usize, price: i64) {
        for o in self.orders.iter_mut() {
            if o.market != market || !o.held || o.trailing == 0 || o.fired {
                continue;
            }
            let sell = o.side == Side::Sell;
            let Some(best) = o.best else {
                if o.stop == 0 || Self::triggers(o, price) {
                    o.best = Some(price);
                }
                continue;
            };
            let best = if sell { best.max(price) } else { best.min(price) };
            o.best = Some(best);
            let (best, price, delta) = (best as i128, price as i128, o.trailing as i128);
            o.fired = if sell {
                price * 10_000 <= best * (10_000 - delta)
            } else {
                price * 10_000 >= best * (10_000 + delta)
            };
            if o.fired {
                self.statuses
                    .entry("trailing fired")
                    .and_modify(|n| *n += 1)
                    .or_insert(1);
            }
        }
    }

    fn count(&mut self, what: &'static str) {
        *self.statuses.entry(what).or_insert(0) += 1;
    }

    fn drop_order(&mut self, o: &RefOrder) {
        *self.locked_mut(o.user, o.lock_asset) -= o.locked;
        *self.free_mut(o.user, o.lock_asset) += o.locked;
    }

    fn submit(&mut self, mut o: RefOrder) -> Summary {
        let rejected = if o.kind.is_stop() && o.trailing > 0 {
            false
        } else if o.kind.is_stop() {
            self.last[o.market].is_some_and(|last| Self::triggers(&o, last))
        } else if o.kind == OrderType::LimitMaker {
            self.best_maker(o.market, o.side).is_some_and(|m| {
                let mp = self.orders[m].price;
                if o.side == Side::Buy {
                    mp <= o.price
                } else {
                    mp >= o.price
                }
            })
        } else {
            false
        };
        if rejected {
            self.drop_order(&o);
            return Err(-2010);
        }
        if o.kind.is_stop() {
            if o.trailing > 0 {
                o.best = self.last[o.market].filter(|&last| o.stop == 0 || Self::triggers(&o, last));
            }
            self.orders.push(o);
            return Ok((OrderStatus::New, 0, 0));
        }
        let status = self.execute(&mut o);
        self.count(status.as_str());
        let summary = (status, o.executed, o.cumm);
        if status.is_final() {
            self.drop_order(&o);
        } else {
            self.orders.push(o);
        }
        self.fire_stops(o.market);
        Ok(summary)
    }

    fn fire_stops(&mut self, market: usize) {
        loop {
            let Some(last) = self.last[market] else {
                return;
            };
            let fired = self
                .orders
                .iter()
                .enumerate()
                .filter(|(_, s)| {
                    let due = if s.trailing > 0 {
                        s.fired
                    } else {
                        Self::triggers(s, last)
                    };
                    s.market == market && s.held && due
                })
                .min_by_key(|(_, s)| s.id)
                .map(|(i, _)| i);
            let Some(i) = fired else { return };
            let mut o = self.orders.remove(i);
            o.held = false;
            self.clock += 1;
            o.rested_at = self.clock;
            let status = self.execute(&mut o);
            self.count(if o.kind.has_price() {
                "stop-limit fired"
            } else {
                "stop-market fired"
            });
            if status.is_final() {
                self.drop_order(&o);
            } else {
                self.orders.push(o);
            }
        }
    }

    fn execute(&mut self, t: &mut RefOrder) -> OrderStatus {
        let s = self.specs[t.market].clone();
        let priced = t.kind.has_price();
        let crosses = |t: &RefOrder, price: i64| {
            !priced
                || if t.side == Side::Buy {
                    price <= t.price
                } else {
                    price >= t.price
                }
        };
        if priced && t.tif == TimeInForce::Fok {
            let available: i64 = self
                .orders
                .iter()
                .filter(|m| m.market == t.market && m.side != t.side && !m.held && crosses(t, m.price))
                .map(|m| m.qty_left)
                .sum();
            if available < t.qty_left {
                return OrderStatus::Expired;
            }
        }
        let start_qty = t.qty_left;
        let budgeted = !priced && t.quote_left != i64::MAX;
        let (base, quote) = self.base_quote(t.market);
        loop {
            if t.qty_left == 0 {
                return if t.by_quote && t.quote_left > 0 {
                    OrderStatus::Expired
                } else {
                    OrderStatus::Filled
                };
            }
            if budgeted && t.quote_left == 0 {
                return if t.by_quote {
                    OrderStatus::Filled
                } else {
                    OrderStatus::Expired
                };
            }
            let Some(mi) = self.best_maker(t.market, t.side) else {
                return self.rest_or_expire(t, start_qty);
            };
            let m = self.orders[mi];
            if !crosses(t, m.price) {
                return self.rest_or_expire(t, start_qty);
            }
            if m.user == t.user && t.stp != StpMode::None {
                if t.stp != StpMode::ExpireTaker {
                    let m = self.orders.remove(mi);
                    self.drop_order(&m);
                }
                if t.stp == StpMode::ExpireMaker {
                    continue;
                }
                return OrderStatus::ExpiredInMatch;
            }
            let visible = if m.peak > 0 { m.shown } else { m.qty_left };
            let mut qty = visible.min(t.qty_left);
            if budgeted {
                // Largest step multiple with floor(price × qty / UNIT) ≤ budget.
                let u = UNIT as i128;
                let most = ceil_div((t.quote_left as i128 + 1) * u, m.price as i128) - 1;
                let most = (most / s.step_size.0 as i128 * s.step_size.0 as i128).min(i64::MAX as i128) as i64;
                qty = qty.min(most);
                if qty == 0 {
                    return if t.by_quote {
                        OrderStatus::Filled
                    } else {
                        OrderStatus::Expired
                    };
                }
            }
            let value = (m.price as i128 * qty as i128 / UNIT as i128) as i64;
            let trade_id = self.trade_ids[t.market];
            self.trade_ids[t.market] += 1;
            self.last[t.market] = Some(m.price);
            self.track_trailing(t.market, m.price);
            self.fills.push((trade_id, m.price, qty, value, t.id, m.id));
            t.qty_left -= qty;
            if t.quote_left != i64::MAX {
                t.quote_left -= value;
            }
            t.executed += qty;
            t.cumm += value;
            self.settle(t, qty, value, false, base, quote, s.taker_commission.0);
            let mut maker = m;
            maker.qty_left -= qty;
            if maker.peak > 0 {
                maker.shown -= qty;
                if maker.shown == 0 && maker.qty_left > 0 {
                    // A new part shows, at the back of the queue.
                    maker.shown = maker.peak.min(maker.qty_left);
                    self.count("iceberg refreshed");
                    self.clock += 1;
                    maker.rested_at = self.clock;
                }
            }
            maker.executed += qty;
            maker.cumm += value;
            self.settle(&mut maker, qty, value, true, base, quote, s.maker_commission.0);
            for (user, side) in [(t.user, t.side), (m.user, m.side)] {
                if self.count_mmp(user, t.market, side, qty, t.time) {
                    // Open for the account: the resting and held orders,
                    // this maker, and the taker until its outcome.
                    let mut ids: Vec<u64> = self
                        .orders
                        .iter()
                        .filter(|o| o.user == user && o.market == t.market)
                        .map(|o| o.id)
                        .collect();
                    if t.user == user {
                        ids.push(t.id);
                    }
                    ids.sort_unstable();
                    ids.dedup();
                    self.mmp_cancels.push(ids);
                }
            }
            if maker.qty_left == 0 {
                self.orders.remove(mi);
                self.drop_order(&maker);
            } else {
                self.orders[mi] = maker;
            }
        }
    }

    /// Counts a fill against `user`'s protection in `market`; whether it
    /// fired.
    fn count_mmp(&mut self, user: u64, market: usize, side: Side, qty: i64, time: u64) -> bool {
        let Some(m) = self.mmp.get_mut(&(user, market)) else {
            return false;
        };
        if time < m.frozen_until {
            return false;
        }
        let in_window = m
            .start
            .is_some_and(|start| time.saturating_sub(start) < m.config.window_ms);
        if !in_window {
            m.start = Some(time);
            m.qty = 0;
            m.delta = 0;
        }
        m.qty += qty;
        m.delta += if side == Side::Buy { qty } else { -qty };
        if m.qty <= m.config.qty_limit.0 && m.delta.abs() <= m.config.delta_limit.0 {
            return false;
        }
        m.frozen_until = match m.config.frozen_ms {
            0 => u64::MAX,
            ms => time + ms,
        };
        m.start = None;
        m.qty = 0;
        m.delta = 0;
        self.count("MMP_TRIGGERED");
        true
    }

    /// The cancels of the protections that fired during an operation, in
    /// order: each order's outcome, by id.
    fn run_mmp_cancels(&mut self) -> Vec<(u64, Summary)> {
        let mut answers = Vec::new();
        for ids in std::mem::take(&mut self.mmp_cancels) {
            for id in ids {
                let at = self.orders.iter().position(|o| o.id == id);
                let summary = match at {
                    Some(i) => {
                        let o = self.orders.remove(i);
                        self.drop_order(&o);
                        Ok((OrderStatus::Canceled, o.executed, o.cumm))
                    }
                    None => Err(-2011),
                };
                answers.push((id, summary));
            }
        }
        answers
    }

    #[allow(clippy::too_many_arguments)]
    fn settle(&mut self, o: &mut RefOrder, qty: i64, value: i64, _maker: bool, base: usize, quote: usize, rate: i64) {
        let (paid_asset, paid, got_asset, got) = if o.side == Side::Buy {
            (quote, value, base, qty)
        } else {
            (base, qty, quote, value)
        };
        let fee = ceil_div(got as i128 * rate as i128, UNIT as i128) as i64;
        o.locked -= paid;
        assert!(o.locked >= 0);
        *self.locked_mut(o.user, paid_asset) -= paid;
        if o.side == Side::Buy && o.kind.has_price() {
            // What the remainder needs at the limit price stays locked.
            let needed = ceil_div(o.price as i128 * o.qty_left as i128, UNIT as i128) as i64;
            let surplus = o.locked - needed;
            o.locked -= surplus;
            *self.locked_mut(o.user, paid_asset) -= surplus;
            *self.free_mut(o.user, paid_asset) += surplus;
        }
        *self.free_mut(o.user, got_asset) += got - fee;
        self.fees[got_asset] += fee;
    }

    fn rest_or_expire(&mut self, t: &mut RefOrder, start_qty: i64) -> OrderStatus {
        if !t.kind.has_price() || t.tif != TimeInForce::Gtc {
            return OrderStatus::Expired;
        }
        self.clock += 1;
        t.rested_at = self.clock;
        t.shown = t.peak.min(t.qty_left);
        if t.qty_left == start_qty {
            OrderStatus::New
        } else {
            OrderStatus::PartiallyFilled
        }
    }

    fn find(&self, user: u64, market: usize, target: OrderRef) -> Option<usize> {
        self.orders.iter().position(|o| {
            o.user == user
                && o.market == market
                && match target {
                    OrderRef::Id(id) => o.id == id,
                    OrderRef::Client(c) => o.client == Some(c),
                }
        })
    }

    fn cancel(&mut self, user: u64, market: usize, target: OrderRef) -> Summary {
        let i = self.find(user, market, target).ok_or(-2011)?;
        let o = self.orders.remove(i);
        self.drop_order(&o);
        Ok((OrderStatus::Canceled, o.executed, o.cumm))
    }

    /// Amend keep priority: the order shrinks where it is; nothing left
    /// to rest ends it EXPIRED. The checks run in the engine's order.
    fn amend(
        &mut self,
        user: u64,
        market: usize,
        target: OrderRef,
        new_qty: i64,
        client: Option<ClientOrderId>,
    ) -> Result<Summary, i32> {
        let i = self.find(user, market, target).ok_or(-2038)?;
        let o = self.orders[i];
        let orig = if o.by_quote { 0 } else { o.qty_left + o.executed };
        if o.amends >= 10 || new_qty >= orig {
            return Err(-2038);
        }
        let s = &self.specs[market];
        if new_qty < s.min_qty.0 || new_qty > s.max_qty.0 || new_qty % s.step_size.0 != 0 {
            return Err(-1013);
        }
        let price = match (o.kind.has_price(), o.kind.is_stop()) {
            (true, _) => Some(o.price),
            (false, true) if o.stop > 0 => Some(o.stop),
            _ => None,
        };
        let u = UNIT as i128;
        if let Some(price) = price {
            let notional = price as i128 * new_qty as i128;
            if notional < s.min_notional.0 as i128 * u || notional > s.max_notional.0 as i128 * u {
                return Err(-1013);
            }
        }
        let taken = |other: &RefOrder| other.id != o.id && other.user == user && other.market == market;
        if client.is_some() && self.orders.iter().any(|other| taken(other) && other.client == client) {
            return Err(-2038);
        }
        if new_qty <= o.executed {
            let o = self.orders.remove(i);
            self.drop_order(&o);
            return Ok(Ok((OrderStatus::Expired, o.executed, o.cumm)));
        }
        let left = new_qty - o.executed;
        let needed = match o.side {
            Side::Sell => left as i128,
            Side::Buy if o.kind.has_price() => ceil_div(o.price as i128 * left as i128, u),
            Side::Buy if o.trailing == 0 => {
                ceil_div(ceil_div(o.stop as i128 * new_qty as i128, u) * (u + PROTECTION), u)
            }
            // A trailing market buy keeps its lock per unit.
            Side::Buy => ceil_div(o.locked as i128 * new_qty as i128, orig as i128),
        };
        let lock = (needed as i64).min(o.locked);
        let freed = o.locked - lock;
        *self.locked_mut(user, o.lock_asset) -= freed;
        *self.free_mut(user, o.lock_asset) += freed;
        let o = &mut self.orders[i];
        o.amends += 1;
        o.qty_left = left;
        o.shown = o.shown.min(left);
        o.locked = lock;
        if client.is_some() {
            o.client = client;
        }
        let status = if o.executed > 0 {
            OrderStatus::PartiallyFilled
        } else {
            OrderStatus::New
        };
        Ok(Ok((status, o.executed, o.cumm)))
    }

    fn cancel_all(&mut self, user: u64, market: usize) -> Vec<Summary> {
        let mut ids: Vec<(u64, u64)> = self
            .orders
            .iter()
            .filter(|o| o.user == user && o.market == market)
            .map(|o| (o.id, o.id))
            .collect();
        ids.sort();
        ids.iter()
            .map(|&(id, _)| self.cancel(user, market, OrderRef::Id(id)))
            .collect()
    }
}

// ------------------------------------------------------------ the engine side

fn summary(result: &Result<tradsys_engine::order::OrderView, EngineError>) -> Summary {
    match result {
        Ok(v) => Ok((v.status, v.executed_qty.0, v.cummulative_quote_qty.0)),
        Err(e) => Err(e.code()),
    }
}

/// Responses of one operation, in order, comparable with the reference.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    Sync(Result<(), i32>),
    Order(u64, Summary),
    Replace(Summary, Option<Summary>),
}

fn answers(sync: Result<(), i32>, events: &[AccountEvent], out: &mut Vec<Answer>) {
    out.push(Answer::Sync(sync));
    for e in events {
        match e {
            AccountEvent::Placed { order_id, result } | AccountEvent::Canceled { order_id, result } => {
                out.push(Answer::Order(*order_id, summary(result)));
            }
            AccountEvent::CancelReplaced { cancel, new, .. } => {
                let new = match new {
                    NewOrderResult::Success(v) => Some(summary(&Ok(*v))),
                    NewOrderResult::Failure(e) => Some(Err(e.code())),
                    NewOrderResult::NotAttempted => None,
                };
                out.push(Answer::Replace(summary(cancel), new));
            }
            AccountEvent::Amended { order_id, result } => {
                out.push(Answer::Order(*order_id, summary(&result.map(|(view, _)| view))));
            }
            AccountEvent::OrderUpdate(_)
            | AccountEvent::Trade { .. }
            | AccountEvent::MmpTriggered { .. }
            | AccountEvent::ListPlaced { .. }
            | AccountEvent::ListCanceled { .. }
            | AccountEvent::ListStatus(_) => {}
        }
    }
}

fn fill_key(f: &Fill) -> (u64, i64, i64, i64, u64, u64) {
    (
        f.trade_id,
        f.price.0,
        f.qty.0,
        f.quote_qty.0,
        f.taker_order,
        f.maker_order,
    )
}

fn run(seed: u64, ops: u64, shards: u32) {
    let full_check_every = full_check_every();
    let specs = specs();
    let mut exchange = Exchange::new(
        &specs,
        shards,
        BookCapacity {
            orders_max: 4096,
            levels_max: 256,
        },
    );
    let mut reference = Reference::new(&specs);
    let mut generator = Gen::new(seed, &specs);
    let mut out = Output::with_capacity(256);
    let mut got: Vec<Answer> = Vec::new();
    let mut fills_seen = 0;
    let mut next_id = 1_u64;
    let (mut bids, mut asks) = (Vec::new(), Vec::new());
    for step in 0..ops {
        let op = generator.op(next_id);
        out.clear();
        got.clear();
        let time = step + 1;
        reference.now = time;
        let mut want: Vec<Answer> = Vec::new();
        match op {
            Op::Deposit(user, asset, amount) => {
                let e = exchange
                    .deposit(user, AssetId(asset as u16), Amount(amount))
                    .map_err(|e| e.code());
                answers(e, &[], &mut got);
                want.push(Answer::Sync(reference.deposit(user, asset, amount)));
            }
            Op::Withdraw(user, asset, amount) => {
                let e = exchange
                    .withdraw(user, AssetId(asset as u16), Amount(amount))
                    .map_err(|e| e.code());
                answers(e, &[], &mut got);
                want.push(Answer::Sync(reference.withdraw(user, asset, amount)));
            }
            Op::Place(user, request) => {
                let id = next_id;
                next_id += 1;
                let sync = exchange.place(user, &request, id, time, &mut out).map_err(|e| e.code());
                answers(sync, &out.events, &mut got);
                match reference.place(user, &request, id) {
                    Ok(s) => {
                        want.push(Answer::Sync(Ok(())));
                        want.push(Answer::Order(id, s));
                        generator.recent.push((id, user, request.market));
                    }
                    Err(code) => want.push(Answer::Sync(Err(code))),
                }
                for (id, s) in reference.run_mmp_cancels() {
                    want.push(Answer::Order(id, s));
                }
            }
            Op::Cancel(user, market, target) => {
                let sync = exchange
                    .cancel(user, market, target, time, &mut out)
                    .map(|_| ())
                    .map_err(|e| e.code());
                answers(sync, &out.events, &mut got);
                let id = reference
                    .find(user, usize::from(market.0), target)
                    .map(|i| reference.orders[i].id);
                match reference.cancel(user, usize::from(market.0), target) {
                    Ok(s) => {
                        want.push(Answer::Sync(Ok(())));
                        want.push(Answer::Order(id.unwrap_or(0), Ok(s)));
                    }
                    Err(code) => want.push(Answer::Sync(Err(code))),
                }
            }
            Op::CancelAll(user, market) => {
                exchange.cancel_all(user, market, time, &mut out);
                answers(Ok(()), &out.events, &mut got);
                let mut ids: Vec<u64> = reference
                    .orders
                    .iter()
                    .filter(|o| o.user == user && o.market == usize::from(market.0))
                    .map(|o| o.id)
                    .collect();
                ids.sort();
                want.push(Answer::Sync(Ok(())));
                for (id, s) in ids.iter().zip(reference.cancel_all(user, usize::from(market.0))) {
                    want.push(Answer::Order(*id, s));
                }
            }
            Op::Replace(user, target, mode, request) => {
                let id = next_id;
                next_id += 1;
                exchange.cancel_replace(user, target, mode, &request, id, time, &mut out);
                answers(Ok(()), &out.events, &mut got);
                want.push(Answer::Sync(Ok(())));
                let read = reference.reference_price(usize::from(request.market.0), request.side);
                let cancel = reference.cancel(user, usize::from(request.market.0), target);
                reference.sized_against = Some(read);
                let new = if cancel.is_err() && mode == CancelReplaceMode::StopOnFailure {
                    None
                } else {
                    Some(reference.place(user, &request, id).and_then(|s| s))
                };
                reference.sized_against = None;
                if let Some(Ok(_)) = new {
                    generator.recent.push((id, user, request.market));
                }
                want.push(Answer::Replace(cancel, new));
                for (id, s) in reference.run_mmp_cancels() {
                    want.push(Answer::Order(id, s));
                }
            }
            Op::MmpSet(user, market, config) => {
                exchange.set_mmp(user, market, config);
                answers(Ok(()), &out.events, &mut got);
                want.push(Answer::Sync(Ok(())));
                let key = (user, usize::from(market.0));
                match config {
                    Some(config) => {
                        let state = RefMmp {
                            config,
                            start: None,
                            qty: 0,
                            delta: 0,
                            frozen_until: 0,
                        };
                        reference.mmp.insert(key, state);
                    }
                    None => {
                        reference.mmp.remove(&key);
                    }
                }
            }
            Op::MmpReset(user, market) => {
                exchange.reset_mmp(user, market);
                answers(Ok(()), &out.events, &mut got);
                want.push(Answer::Sync(Ok(())));
                if let Some(m) = reference.mmp.get_mut(&(user, usize::from(market.0))) {
                    m.start = None;
                    m.qty = 0;
                    m.delta = 0;
                    m.frozen_until = 0;
                }
            }
            Op::Amend(user, request) => {
                let sync = exchange
                    .amend(user, &request, time, &mut out)
                    .map(|_| ())
                    .map_err(|e| e.code());
                answers(sync, &out.events, &mut got);
                let (market, target) = (usize::from(request.market.0), request.target);
                let id = reference.find(user, market, target).map(|i| reference.orders[i].id);
                match reference.amend(user, market, target, request.new_qty.0, request.new_client_order_id) {
                    Ok(s) => {
                        want.push(Answer::Sync(Ok(())));
                        want.push(Answer::Order(id.unwrap_or(0), s));
                    }
                    Err(code) => want.push(Answer::Sync(Err(code))),
                }
            }
        }
        if generator.recent.len() > 64 {
            generator.recent.drain(..32);
        }
        assert_eq!(got, want, "step {step}: {op:?}");
        let fills: Vec<_> = out.fills.iter().map(fill_key).collect();
        assert_eq!(fills, reference.fills[fills_seen..], "step {step} fills: {op:?}");
        fills_seen = reference.fills.len();
        if step % full_check_every == 0 {
            exchange.check_invariants();
        } else {
            exchange.check_money_invariants();
        }
        if step % DEPTH_EVERY_OPS == 0 {
            for (market, book) in exchange.books.iter().enumerate() {
                book.depth(DEPTH_LEVELS, &mut bids, &mut asks);
                let engine = (levels_of(&bids), levels_of(&asks));
                assert_eq!(engine, reference.depth(market), "step {step}: depth of market {market}");
            }
        }
    }
    let statuses = reference.statuses.clone();
    eprintln!(
        "seed {seed}: {ops} ops, {} fills, final statuses {statuses:?}",
        reference.fills.len()
    );
    assert!(
        ops < 10_000 || reference.fills.len() as u64 > ops / 100,
        "the mix must trade"
    );
    for ((user, asset), free) in &reference.free {
        let b = exchange.account(*user).balance(*user, AssetId(*asset as u16));
        assert_eq!(b.free.0, *free, "user {user} asset {asset} free");
        assert_eq!(b.locked.0, reference.locked.get(&(*user, *asset)).copied().unwrap_or(0));
    }
    for (asset, fee) in reference.fees.iter().enumerate() {
        let fees: i64 = exchange.accounts.iter().map(|a| a.fees(AssetId(asset as u16)).0).sum();
        assert_eq!(fees, *fee, "fees in asset {asset}");
    }
}

/// How often, in operations, the full structural check runs (the history
/// rings walked whole); the other operations check books, conservation
/// and locks only. Every operation by default; long runs set
/// TRADSYS_DIFF_FULL_CHECK_EVERY (say 1000), which makes them about ten
/// times faster.
fn full_check_every() -> u64 {
    match std::env::var("TRADSYS_DIFF_FULL_CHECK_EVERY") {
        Ok(text) => text
            .parse()
            .ok()
            .filter(|&n| n > 0)
            .unwrap_or_else(|| panic!("TRADSYS_DIFF_FULL_CHECK_EVERY: {text}")),
        Err(_) => 1,
    }
}

/// The seed of the README's test command.
const SEED_DEFAULT: u64 = 20_261_206;

fn seed_and_ops() -> (u64, u64) {
    let seed = match std::env::var("TRADSYS_SEED").ok().as_deref() {
        None => SEED_DEFAULT,
        Some("time") => {
            let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
            t.map_or(1, |d| d.as_nanos() as u64)
        }
        Some(text) => text.parse().expect("TRADSYS_SEED: a number or `time`"),
    };
    let ops = std::env::var("TRADSYS_DIFF_OPS").ok().and_then(|s| s.parse().ok());
    (seed, ops.unwrap_or(OPS_DEFAULT_COUNT))
}

fn run_reported(part: u64, shards: u32) {
    let (seed, ops) = seed_and_ops();
    let seed = seed.wrapping_add(part);
    let result = std::panic::catch_unwind(|| run(seed, ops / 4, shards));
    if let Err(panic) = result {
        eprintln!(
            "differential test failed: TRADSYS_SEED={} (part {part}, {shards} account machines)",
            seed.wrapping_sub(part)
        );
        std::panic::resume_unwind(panic);
    }
}

#[test]
fn differential_one_account_machine() {
    run_reported(0, 1);
}

#[test]
fn differential_two_account_machines() {
    run_reported(1, 2);
}

#[test]
fn differential_three_account_machines() {
    run_reported(2, 3);
}

#[test]
fn differential_five_account_machines() {
    run_reported(3, 5);
}
