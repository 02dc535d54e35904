//! Differential test: random operations against the engine (accounts and
//! books wired by the driver, over several account machines) and against a
//! naive reference written for obviousness (one `Vec` of orders, linear
//! scans, one balance table). Every response, every fill and the final
//! balances must agree, and every invariant must hold after every operation.
//!
//! Order lists (OCO, OTO, OTOCO) are in the mix: one operation in twenty
//! places one, and list cancels, cancels, amendments and cancel-replaces
//! aim at their orders too. The reference keeps a list as the ids of its
//! orders and follows the rules docs/engine.md states, one step at a time
//! in the order the engine's messages run (a FIFO of book work: the
//! pending orders a filled working order sends, the cancels a fired
//! protection sends, a cancel-replace's new order).
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

use std::collections::{BTreeMap, VecDeque};

use common::ops::{Gen, Op};
use common::specs;
use tradsys_engine::account::{AccountEvent, ListRef, MmpConfig, NewOrderResult, OrderRef};
use tradsys_engine::book::BookCapacity;
use tradsys_engine::driver::{Exchange, Output};
use tradsys_engine::market::MarketSpec;
use tradsys_engine::msg::Fill;
use tradsys_engine::num::{Amount, UNIT};
use tradsys_engine::order::{AssetId, CancelReplaceMode, ClientOrderId, ListKind, ListOrderStatus, ListRequest};
use tradsys_engine::order::{ListStatusType, OrderListView, OrderQty};
use tradsys_engine::order::{OrderRequest, OrderStatus, OrderType, Side, StpMode, TimeInForce};
use tradsys_engine::EngineError;

const OPS_DEFAULT_COUNT: u64 = 1_000_000;
const OPEN_MAX: usize = 200;
const ICEBERGS_OPEN_MAX: usize = 100;
const STOPS_OPEN_MAX: usize = 100;
const LISTS_OPEN_MAX: usize = 100;
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
    /// The list it is an order of (zero for none), its OCO partner (zero
    /// for none) and whether it is the second of its pair.
    list: u64,
    partner: u64,
    second: bool,
    /// PENDING_NEW: a pending order of an OTO or OTOCO, on no book,
    /// locking nothing.
    pending: bool,
    /// Locked and sent to its book, not there yet.
    sent: bool,
}

impl RefOrder {
    /// Resting or held in its book.
    fn on_book(&self) -> bool {
        !self.pending && !self.sent
    }

    /// Resting in its book: a taker meets it.
    fn resting(&self) -> bool {
        self.on_book() && !self.held
    }
}

/// An open order list: who, where, what it is and its orders' ids.
#[derive(Clone, Debug)]
struct RefList {
    user: u64,
    market: usize,
    kind: ListKind,
    client: ClientOrderId,
    legs: Vec<u64>,
    requests: Vec<OrderRequest>,
    /// A cancel of the whole list is under way: the pending orders end
    /// CANCELED whatever ends the working order, and the list's end
    /// answers the cancel.
    canceling: bool,
}

/// Book work waiting its turn, first in first out.
#[derive(Clone, Debug)]
enum Work {
    /// The cancels a fired protection sent, and every order it meant to
    /// end (those not pending when it fired).
    Cancels { ids: Vec<u64>, meant: Vec<u64> },
    /// A list's pending orders, locked, on their way to their book.
    Pending(u64),
    /// A cancel-replace's new order, checked and locked, with its cancel's
    /// outcome.
    Replace(RefOrder, Summary),
}

/// A cancel-replace waiting for its cancel's answer: its user, mode, new
/// order and id, and the reference price read when it came.
#[derive(Clone, Copy, Debug)]
struct Replacing {
    target: u64,
    user: u64,
    mode: CancelReplaceMode,
    request: OrderRequest,
    id: u64,
    read: Option<i64>,
}

/// What an order locks and may spend.
#[derive(Clone, Copy, Debug)]
struct Plan {
    qty_left: i64,
    quote_left: i64,
    by_quote: bool,
    lock_asset: usize,
    lock: i64,
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

/// What a caller learns about a list: its status and its orders' (id,
/// status, executed, quote) once the operation is done.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ListSummary {
    status: (ListStatusType, ListOrderStatus),
    legs: Vec<(u64, OrderStatus, i64, i64)>,
}

impl ListSummary {
    /// The list's status and its orders' ids; their state is read once
    /// the operation is done (`fill_legs`).
    fn of(status: (ListStatusType, ListOrderStatus), ids: &[u64]) -> ListSummary {
        ListSummary {
            status,
            legs: ids.iter().map(|&id| (id, OrderStatus::PendingNew, 0, 0)).collect(),
        }
    }
}

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
    statuses: BTreeMap<String, u64>,
    /// The time of the operation being run.
    now: u64,
    mmp: BTreeMap<(u64, usize), RefMmp>,
    /// Open order lists by id.
    lists: BTreeMap<u64, RefList>,
    /// Book work the operation caused, in the order it was sent.
    queue: VecDeque<Work>,
    /// The operation's answers after its synchronous one, in order.
    answers: Vec<Answer>,
    /// Final (status, executed, quote) of the orders of open lists, and
    /// the lists done during the operation (their orders are forgotten
    /// once its answers are read).
    finished: BTreeMap<u64, (OrderStatus, i64, i64)>,
    done_lists: Vec<Vec<u64>>,
    /// The cancel-replace of the operation, until its cancel is answered.
    replacing: Option<Replacing>,
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
            if o.market != market || o.side == taker_side || !o.resting() {
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
                .filter(|o| o.market == market && o.side == side && o.resting());
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
            if o.market != market || !o.held || !o.on_book() || o.trailing == 0 || o.fired {
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
                *self.statuses.entry("trailing fired".to_string()).or_insert(0) += 1;
            }
        }
    }

    fn count(&mut self, what: &str) {
        *self.statuses.entry(what.to_string()).or_insert(0) += 1;
    }

    /// What an order locks and may spend, sized against `read` (the best
    /// opposite price or last price its account machine read; a list's
    /// pending orders, the working order's price).
    fn plan(&self, r: &OrderRequest, read: Option<i64>) -> Result<Plan, i32> {
        let market = usize::from(r.market.0);
        let (base, quote) = self.base_quote(market);
        let step = self.specs[market].step_size.0 as i128;
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
        Ok(Plan {
            qty_left,
            quote_left,
            by_quote,
            lock_asset,
            lock,
        })
    }

    /// A new order as its account machine holds it, locking `plan`'s
    /// amount.
    fn new_order(&self, user: u64, r: &OrderRequest, id: u64, plan: Plan) -> RefOrder {
        RefOrder {
            id,
            user,
            market: usize::from(r.market.0),
            side: r.side,
            kind: r.kind,
            tif: r.time_in_force.unwrap_or(TimeInForce::Gtc),
            price: r.price.map_or(0, |p| p.0),
            stop: r.stop_price.map_or(0, |p| p.0),
            client: r.client_order_id,
            stp: r.stp,
            qty_left: plan.qty_left,
            quote_left: plan.quote_left,
            by_quote: plan.by_quote,
            lock_asset: plan.lock_asset,
            locked: plan.lock,
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
            list: 0,
            partner: 0,
            second: false,
            pending: false,
            sent: false,
        }
    }

    fn frozen(&self, user: u64, market: usize) -> bool {
        let frozen = self.mmp.get(&(user, market));
        frozen.is_some_and(|m| self.now < m.frozen_until)
    }

    /// The account machine's part of a new order: checks, limits and its
    /// lock; the order, locked, on its way to its book.
    fn admit(&mut self, user: u64, r: &OrderRequest, id: u64, read: Option<i64>) -> Result<RefOrder, i32> {
        self.validate(r)?;
        let market = usize::from(r.market.0);
        if self.frozen(user, market) {
            return Err(-2010);
        }
        let plan = self.plan(r, read)?;
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
        if *self.free_mut(user, plan.lock_asset) < plan.lock {
            return Err(-2010);
        }
        *self.free_mut(user, plan.lock_asset) -= plan.lock;
        *self.locked_mut(user, plan.lock_asset) += plan.lock;
        self.clock += 1;
        Ok(self.new_order(user, r, id, plan))
    }

    /// A new order (POST order): the synchronous answer; the book's is
    /// among `answers`.
    fn place(&mut self, user: u64, r: &OrderRequest, id: u64, read: Option<i64>) -> Result<(), i32> {
        let mut o = self.admit(user, r, id, read)?;
        match self.book_take(&mut o) {
            None => {
                self.unlock(&o);
                self.answers.push(Answer::Order(id, Err(-2010)));
            }
            Some(status) => {
                self.answers.push(Answer::Order(id, Ok((status, o.executed, o.cumm))));
                self.land(o, status);
            }
        }
        Ok(())
    }

    /// Whether the book refuses an order as it stands: a stop the last
    /// price triggers already, a LIMIT_MAKER that would take.
    fn refused(&self, o: &RefOrder) -> bool {
        if o.kind.is_stop() && o.trailing > 0 {
            false
        } else if o.kind.is_stop() {
            self.last[o.market].is_some_and(|last| Self::triggers(o, last))
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
        }
    }

    /// Whether the book refuses an order of an OCO pair: as any order,
    /// and a LIMIT_MAKER not on its side of the last price (the pair must
    /// straddle it: a sell above, a buy below).
    fn refused_in_pair(&self, o: &RefOrder) -> bool {
        let beyond = |last: i64| match o.side {
            Side::Sell => o.price > last,
            Side::Buy => o.price < last,
        };
        let misplaced = o.kind == OrderType::LimitMaker && self.last[o.market].is_some_and(|last| !beyond(last));
        self.refused(o) || misplaced
    }

    /// The book takes one order (not a pair): `None` if it refuses it,
    /// else its status once it has matched (a stop is held, NEW). The
    /// caller answers, then `land`s it.
    fn book_take(&mut self, o: &mut RefOrder) -> Option<OrderStatus> {
        if self.refused(o) {
            return None;
        }
        if o.kind.is_stop() {
            if o.trailing > 0 {
                o.best = self.last[o.market].filter(|&last| o.stop == 0 || Self::triggers(o, last));
            }
            return Some(OrderStatus::New);
        }
        let status = self.execute(o);
        self.count(status.as_str());
        Some(status)
    }

    /// After `book_take`: the order rests (or is held) or is done; then
    /// the stops its trades triggered fire.
    fn land(&mut self, o: RefOrder, status: OrderStatus) {
        let (market, stop, time) = (o.market, o.kind.is_stop(), o.time);
        if status.is_final() {
            self.close(o, status, time);
        } else {
            self.orders.push(o);
        }
        if !stop {
            self.fire_stops(market);
        }
    }

    fn unlock(&mut self, o: &RefOrder) {
        *self.locked_mut(o.user, o.lock_asset) -= o.locked;
        *self.free_mut(o.user, o.lock_asset) += o.locked;
    }

    fn at(&self, id: u64) -> Option<usize> {
        self.orders.iter().position(|o| o.id == id)
    }

    /// `o`'s OCO partner, if it is on the book: it leaves with `o`.
    fn partner_on_book(&self, o: &RefOrder) -> Option<u64> {
        let partner = self.orders.iter().find(|p| o.partner != 0 && p.id == o.partner)?;
        partner.on_book().then_some(partner.id)
    }

    /// Before an order of an OCO pair spends: the pair's one lock is
    /// wherever it was, it moves to the order spending.
    fn take_pair_lock(&mut self, o: &mut RefOrder) {
        if o.partner == 0 {
            return;
        }
        if let Some(p) = self.orders.iter_mut().find(|p| p.id == o.partner) {
            o.locked += p.locked;
            p.locked = 0;
        }
    }

    /// An order is done (the book's part is over): what it locks goes
    /// back, or to its OCO partner if that one may still spend it; an
    /// order of a list may end or send the list's other orders, and the
    /// list ends with its last order. `when` is the time the fill that
    /// completed a working order carries.
    fn close(&mut self, o: RefOrder, status: OrderStatus, when: u64) {
        assert!(status.is_final());
        let heir = self
            .orders
            .iter()
            .position(|p| o.partner != 0 && p.id == o.partner && !p.pending);
        match heir {
            Some(p) => self.orders[p].locked += o.locked,
            None => self.unlock(&o),
        }
        if o.list == 0 {
            return;
        }
        self.finished.insert(o.id, (status, o.executed, o.cumm));
        let list = self.lists[&o.list].clone();
        if list.kind != ListKind::Oco && o.id == list.legs[0] {
            let pending: Vec<u64> = list.legs[1..]
                .iter()
                .copied()
                .filter(|&id| self.orders.iter().any(|p| p.id == id && p.pending))
                .collect();
            let frozen = self
                .mmp
                .get(&(list.user, o.market))
                .is_some_and(|m| when < m.frozen_until);
            if status == OrderStatus::Filled && pending.len() + 1 == list.legs.len() && !list.canceling && !frozen {
                self.send_pending(o.list, when);
            } else {
                let end = if list.canceling || status == OrderStatus::Canceled {
                    OrderStatus::Canceled
                } else {
                    OrderStatus::Expired
                };
                self.end_pending(&pending, end, when);
            }
        }
        self.complete(o.list);
    }

    /// Pending orders that will never reach a book end `end`; canceled
    /// ones are answered as canceled.
    fn end_pending(&mut self, pending: &[u64], end: OrderStatus, when: u64) {
        for &id in pending {
            let Some(i) = self.orders.iter().position(|p| p.id == id && p.pending) else {
                continue;
            };
            let p = self.orders.remove(i);
            self.close(p, end, when);
            if end == OrderStatus::Canceled {
                self.answer_cancel(id, Ok((OrderStatus::Canceled, 0, 0)));
            }
        }
    }

    /// The working order of an OTO or OTOCO filled: its pending orders
    /// lock (one lock for a pair, sized against the working order's price
    /// where a MARKET order needs one) and go to their book; if the funds
    /// do not cover them, they expire.
    fn send_pending(&mut self, list_id: u64, when: u64) {
        let list = self.lists[&list_id].clone();
        self.count("list working order FILLED");
        let read = list.requests[0].price.map(|p| p.0);
        let plans: Result<Vec<Plan>, i32> = list.requests[1..].iter().map(|r| self.plan(r, read)).collect();
        let covered = plans.ok().filter(|plans| {
            let amount = plans.iter().map(|p| p.lock).max().unwrap_or(0);
            *self.free_mut(list.user, plans[0].lock_asset) >= amount
        });
        let Some(plans) = covered else {
            self.count("list pending orders EXPIRED (funds)");
            self.end_pending(&list.legs[1..], OrderStatus::Expired, when);
            return;
        };
        let amount = plans.iter().map(|p| p.lock).max().unwrap_or(0);
        *self.free_mut(list.user, plans[0].lock_asset) -= amount;
        *self.locked_mut(list.user, plans[0].lock_asset) += amount;
        for (k, (id, plan)) in list.legs[1..].iter().zip(&plans).enumerate() {
            let Some(i) = self.at(*id) else {
                unreachable!("pending order {id} is open")
            };
            let o = &mut self.orders[i];
            o.pending = false;
            o.sent = true;
            o.qty_left = plan.qty_left;
            o.quote_left = plan.quote_left;
            o.by_quote = plan.by_quote;
            o.lock_asset = plan.lock_asset;
            o.locked = if k == 0 { amount } else { 0 };
            o.time = when;
        }
        self.queue.push_back(Work::Pending(list_id));
    }

    /// The pending orders of a list reach their book: one alone is
    /// placed as any order (EXPIRED if the book refuses it); a pair goes
    /// on whole or, refused, both orders expire.
    fn land_pending(&mut self, list_id: u64) {
        let list = self.lists[&list_id].clone();
        let sent = &list.legs[1..];
        if let [id] = sent {
            let Some(i) = self.at(*id) else {
                unreachable!("sent order {id} is open")
            };
            let mut o = self.orders.remove(i);
            o.sent = false;
            self.clock += 1;
            o.rested_at = self.clock;
            match self.book_take(&mut o) {
                None => {
                    self.count("list pending order refused by its book");
                    let time = o.time;
                    self.close(o, OrderStatus::Expired, time);
                }
                Some(status) => {
                    self.count("list pending order placed");
                    self.land(o, status);
                }
            }
            return;
        }
        let pair: Vec<RefOrder> = sent.iter().map(|id| self.orders[self.at(*id).unwrap()]).collect();
        if pair.iter().any(|o| self.refused_in_pair(o)) {
            self.count("list pending pair refused by its book");
            for id in sent {
                let o = self.orders.remove(self.at(*id).unwrap());
                self.close(o, OrderStatus::Expired, o.time);
            }
            return;
        }
        self.count("list pending pair placed");
        for id in sent {
            let i = self.at(*id).unwrap();
            self.orders[i].sent = false;
            self.enter_pair_order(i);
        }
    }

    /// One order of an OCO pair goes on its book: a stop is held, a
    /// LIMIT_MAKER rests without trading.
    fn enter_pair_order(&mut self, i: usize) {
        self.clock += 1;
        let last = self.last[self.orders[i].market];
        let o = &mut self.orders[i];
        o.rested_at = self.clock;
        if o.kind.is_stop() {
            if o.trailing > 0 {
                o.best = last.filter(|&last| o.stop == 0 || Self::triggers(o, last));
            }
        } else {
            o.shown = o.peak.min(o.qty_left);
        }
    }

    /// The list is done when none of its orders is open: it closes, and
    /// answers its cancel if one is under way.
    fn complete(&mut self, list_id: u64) {
        let Some(list) = self.lists.get(&list_id) else {
            return;
        };
        if list.legs.iter().any(|&id| self.at(id).is_some()) {
            return;
        }
        let list = self.lists.remove(&list_id).unwrap();
        self.count("list ALL_DONE");
        let filled = list.legs.iter().any(|id| self.finished[id].0 == OrderStatus::Filled);
        if filled {
            self.count("list ALL_DONE with a FILLED order");
        }
        if list.canceling {
            self.count("list canceled (answered)");
            let status = (ListStatusType::AllDone, ListOrderStatus::AllDone);
            self.answers
                .push(Answer::ListCanceled(list_id, Ok(ListSummary::of(status, &list.legs))));
        }
        self.done_lists.push(list.legs);
    }

    /// Binance's rules for an OCO pair `[above, below]`.
    fn oco_shape(above: &OrderRequest, below: &OrderRequest) -> Result<(), i32> {
        let contingent = |k: OrderType| k == OrderType::LimitMaker || k.is_stop();
        if !contingent(above.kind) || !contingent(below.kind) {
            return Err(-1158);
        }
        if above.kind == OrderType::LimitMaker && below.kind == OrderType::LimitMaker {
            return Err(-1168);
        }
        if above.side != below.side || above.qty != below.qty || matches!(above.qty, OrderQty::Quote(_)) {
            return Err(-1158);
        }
        // Where each type belongs, and the code when it is not there.
        for (r, is_above) in [(above, true), (below, false)] {
            let code = match (r.side, is_above, r.kind) {
                (Side::Sell, false, OrderType::LimitMaker) => -1166,
                (Side::Sell, false, OrderType::TakeProfit | OrderType::TakeProfitLimit) => -1199,
                (Side::Sell, true, OrderType::StopLoss | OrderType::StopLossLimit) => -1197,
                (Side::Buy, true, OrderType::LimitMaker) => -1165,
                (Side::Buy, true, OrderType::TakeProfit | OrderType::TakeProfitLimit) => -1198,
                (Side::Buy, false, OrderType::StopLoss | OrderType::StopLossLimit) => -1196,
                _ => 0,
            };
            if code != 0 {
                return Err(code);
            }
        }
        let level = |r: &OrderRequest| match r.kind {
            OrderType::LimitMaker => r.price,
            _ => r.stop_price,
        };
        if let (Some(high), Some(low)) = (level(above), level(below)) {
            if high.0 <= low.0 {
                return Err(-2010);
            }
        }
        Ok(())
    }

    fn list_shape(request: &ListRequest) -> Result<(), i32> {
        let o = &request.orders;
        match request.kind {
            ListKind::Oco => Self::oco_shape(&o[0], &o[1]),
            ListKind::Oto | ListKind::Otoco => {
                if !matches!(o[0].kind, OrderType::Limit | OrderType::LimitMaker) {
                    return Err(-2010);
                }
                let pending = &o[1..request.kind.legs()];
                if pending.iter().any(|r| matches!(r.qty, OrderQty::Quote(_))) {
                    return Err(-2010);
                }
                if request.kind == ListKind::Otoco {
                    return Self::oco_shape(&o[1], &o[2]);
                }
                Ok(())
            }
        }
    }

    /// A new order list: the synchronous answer; the list's is among
    /// `answers`.
    fn place_list(&mut self, user: u64, request: &ListRequest, ids: [u64; 3], read: Option<i64>) -> Result<(), i32> {
        let kind = request.kind;
        let requests = &request.orders[..kind.legs()];
        let market = usize::from(requests[0].market.0);
        for r in requests {
            self.validate(r)?;
        }
        Self::list_shape(request)?;
        if self.frozen(user, market) {
            return Err(-2010);
        }
        for (i, r) in requests.iter().enumerate() {
            let Some(client) = r.client_order_id else {
                continue;
            };
            let twice = requests[..i].iter().any(|o| o.client_order_id == Some(client));
            let taken = self
                .orders
                .iter()
                .any(|o| o.user == user && o.market == market && o.client == Some(client));
            if twice || taken {
                return Err(-2010);
            }
        }
        let lists: Vec<&RefList> = self
            .lists
            .values()
            .filter(|l| l.user == user && l.market == market)
            .collect();
        if lists.iter().any(|l| l.client == request.list_client_order_id) {
            return Err(-2010);
        }
        let lists_open = lists.len();
        let open: Vec<&RefOrder> = self
            .orders
            .iter()
            .filter(|o| o.user == user && o.market == market)
            .collect();
        let stops = |k: &OrderType| k.is_stop();
        if open.len() + requests.len() > OPEN_MAX {
            return Err(-1013);
        }
        let stops_open = open.iter().filter(|o| stops(&o.kind)).count();
        if stops_open + requests.iter().filter(|r| stops(&r.kind)).count() > STOPS_OPEN_MAX {
            return Err(-1013);
        }
        let icebergs_open = open.iter().filter(|o| o.peak > 0).count();
        if icebergs_open + requests.iter().filter(|r| r.iceberg_qty.is_some()).count() > ICEBERGS_OPEN_MAX {
            return Err(-1013);
        }
        if lists_open >= LISTS_OPEN_MAX {
            return Err(-1013);
        }
        // The orders placed at once lock; an OCO pair locks the larger of
        // its two amounts, once.
        let working = if kind == ListKind::Oco { 2 } else { 1 };
        let plans: Vec<Plan> = requests[..working]
            .iter()
            .map(|r| self.plan(r, read))
            .collect::<Result<_, _>>()?;
        let asset = plans[0].lock_asset;
        let amount = plans.iter().map(|p| p.lock).max().unwrap_or(0);
        if *self.free_mut(user, asset) < amount {
            return Err(-2010);
        }
        *self.free_mut(user, asset) -= amount;
        *self.locked_mut(user, asset) += amount;
        let list_id = ids[0];
        let pair = match kind {
            ListKind::Oco => Some((0, 1)),
            ListKind::Otoco => Some((1, 2)),
            ListKind::Oto => None,
        };
        let mut orders: Vec<RefOrder> = Vec::new();
        for (i, r) in requests.iter().enumerate() {
            let plan = match plans.get(i) {
                Some(plan) => *plan,
                // Pending: nothing locked yet, sized when it is sent.
                None => Plan {
                    qty_left: match r.qty {
                        OrderQty::Base(qty) => qty.0,
                        OrderQty::Quote(_) => unreachable!("refused by the shape"),
                    },
                    quote_left: i64::MAX,
                    by_quote: false,
                    lock_asset: match r.side {
                        Side::Buy => self.base_quote(market).1,
                        Side::Sell => self.base_quote(market).0,
                    },
                    lock: 0,
                },
            };
            let mut o = self.new_order(user, r, ids[i], plan);
            o.locked = if i == 0 { amount } else { 0 };
            o.list = list_id;
            o.pending = i >= working;
            if let Some((a, b)) = pair {
                if i == a || i == b {
                    o.partner = if i == a { ids[b] } else { ids[a] };
                    o.second = i == b;
                }
            }
            orders.push(o);
        }
        self.lists.insert(
            list_id,
            RefList {
                user,
                market,
                kind,
                client: request.list_client_order_id,
                legs: ids[..requests.len()].to_vec(),
                requests: requests.to_vec(),
                canceling: false,
            },
        );
        let started = (ListStatusType::ExecStarted, ListOrderStatus::Executing);
        let legs = &ids[..requests.len()];
        let refuse = |this: &mut Reference| {
            this.lists.remove(&list_id);
            this.orders.retain(|o| o.list != list_id);
            *this.locked_mut(user, asset) -= amount;
            *this.free_mut(user, asset) += amount;
            this.answers.push(Answer::ListPlaced(list_id, Err(-2010)));
            this.count("list refused by its book");
        };
        if kind == ListKind::Oco {
            if orders.iter().any(|o| self.refused_in_pair(o)) {
                refuse(self);
                return Ok(());
            }
            for o in orders {
                self.orders.push(o);
                let i = self.orders.len() - 1;
                self.enter_pair_order(i);
            }
            self.count("list placed: OCO");
            self.answers
                .push(Answer::ListPlaced(list_id, Ok(ListSummary::of(started, legs))));
            return Ok(());
        }
        // The pending orders are open (for the account machine) while the
        // working order matches.
        let mut working = orders.remove(0);
        self.orders.extend(orders);
        match self.book_take(&mut working) {
            None => refuse(self),
            Some(status) => {
                self.count(if kind == ListKind::Oto {
                    "list placed: OTO"
                } else {
                    "list placed: OTOCO"
                });
                self.answers
                    .push(Answer::ListPlaced(list_id, Ok(ListSummary::of(started, legs))));
                self.land(working, status);
            }
        }
        Ok(())
    }

    /// Held stops the last price (or a trade, for a trailing stop) has
    /// triggered fire one at a time, the one held longest first; a fired
    /// order of an OCO pair takes its partner off the book (EXPIRED)
    /// before it trades.
    fn fire_stops(&mut self, market: usize) {
        loop {
            let Some(last) = self.last[market] else {
                return;
            };
            let fired = self
                .orders
                .iter()
                .filter(|s| {
                    let due = if s.trailing > 0 {
                        s.fired
                    } else {
                        Self::triggers(s, last)
                    };
                    s.market == market && s.held && s.on_book() && due
                })
                .min_by_key(|s| s.rested_at)
                .map(|s| s.id);
            let Some(id) = fired else { return };
            if let Some(partner) = self.partner_on_book(&self.orders[self.at(id).unwrap()]) {
                let p = self.orders.remove(self.at(partner).unwrap());
                self.close(p, OrderStatus::Expired, p.time);
            }
            let mut o = self.orders.remove(self.at(id).unwrap());
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
                self.close(o, status, o.time);
            } else {
                self.orders.push(o);
            }
        }
    }

    /// Whether a cancel of all of a user's orders sends a cancel for `o`:
    /// not for a pending order (it ends with its working order), nor for
    /// the second order of an OCO pair whose first is open (the book
    /// takes it off with the first). `taker` is open too: the order
    /// matching, which its account machine holds open until it is done.
    fn sends_cancel(&self, o: &RefOrder, _taker: Option<&RefOrder>) -> bool {
        !o.pending
    }

    /// A cancel-all (or a protection firing) cancels the lists whose
    /// pending orders it meets: they end CANCELED with their working
    /// orders.
    fn cancel_pending_lists(&mut self, open: &[RefOrder]) {
        for o in open.iter().filter(|o| o.pending) {
            if let Some(list) = self.lists.get_mut(&o.list) {
                list.canceling = true;
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
                .filter(|m| m.market == t.market && m.side != t.side && m.resting() && crosses(t, m.price))
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
                    // The maker expires, and its OCO partner with it.
                    let m = self.orders.remove(mi);
                    let partner = self.partner_on_book(&m);
                    self.close(m, OrderStatus::ExpiredInMatch, t.time);
                    if let Some(partner) = partner {
                        let p = self.orders.remove(self.at(partner).unwrap());
                        self.close(p, OrderStatus::Expired, t.time);
                    }
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
            self.take_pair_lock(t);
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
            self.take_pair_lock(&mut maker);
            self.settle(&mut maker, qty, value, true, base, quote, s.maker_commission.0);
            self.orders[mi] = maker;
            for (user, side) in [(t.user, t.side), (m.user, m.side)] {
                if self.count_mmp(user, t.market, side, qty, t.time) {
                    self.protection_fired(user, t);
                }
            }
            // A trade of one order of an OCO pair takes the other off.
            if let Some(partner) = self.partner_on_book(&maker) {
                let p = self.orders.remove(self.at(partner).unwrap());
                self.close(p, OrderStatus::Expired, t.time);
            }
            if maker.qty_left == 0 {
                let maker = self.orders.remove(self.at(maker.id).unwrap());
                self.close(maker, OrderStatus::Filled, t.time);
            }
        }
    }

    /// A protection fired for `user` during `taker`'s match: cancels for
    /// what their account machine holds open in the market at that
    /// moment (the resting and held orders, those on their way, pending
    /// ones, the taker until its outcome), sent after the work already
    /// waiting.
    fn protection_fired(&mut self, user: u64, taker: &RefOrder) {
        let mut open: Vec<RefOrder> = self
            .orders
            .iter()
            .filter(|o| o.user == user && o.market == taker.market)
            .copied()
            .collect();
        if taker.user == user {
            open.push(*taker);
        }
        open.sort_by_key(|o| o.id);
        open.dedup_by_key(|o| o.id);
        self.cancel_pending_lists(&open);
        let ids = open
            .iter()
            .filter(|o| self.sends_cancel(o, Some(taker)))
            .map(|o| o.id)
            .collect();
        let meant = open.iter().filter(|o| !o.pending).map(|o| o.id).collect();
        self.queue.push_back(Work::Cancels { ids, meant });
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
        if o.list != 0 {
            return Err(-2038);
        }
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
            self.unlock(&o);
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

    /// The book gets a cancel for order `id`: unknown there (-2011), or
    /// the order leaves CANCELED and its OCO partner with it, each
    /// answered once its account machine has closed it.
    fn cancel_message(&mut self, id: u64) {
        let Some(i) = self.orders.iter().position(|o| o.id == id && o.on_book()) else {
            self.answer_cancel(id, Err(-2011));
            return;
        };
        let partner = self.partner_on_book(&self.orders[i]);
        if let Some(partner) = partner {
            self.cancel_partner(partner);
        }
        let i = self.orders.iter().position(|o| o.id == id).unwrap();
        let o = self.orders.remove(i);
        self.close(o, OrderStatus::Canceled, self.now);
        self.answer_cancel(id, Ok((OrderStatus::Canceled, o.executed, o.cumm)));
    }

    /// The OCO partner the book took off with a cancel, answered before
    /// the order canceled (its lock passes to that order, which unlocks
    /// it).
    fn cancel_partner(&mut self, partner: u64) {
        let p = self.orders.remove(self.at(partner).unwrap());
        self.close(p, OrderStatus::Canceled, self.now);
        self.answer_cancel(partner, Ok((OrderStatus::Canceled, p.executed, p.cumm)));
    }

    /// A cancel of order `id` is answered: as a cancel, or as the cancel
    /// half of the cancel-replace waiting for it, which goes on.
    fn answer_cancel(&mut self, id: u64, summary: Summary) {
        match self.replacing {
            Some(r) if r.target == id => {
                self.replacing = None;
                self.replace_continue(summary, r);
            }
            _ => self.answers.push(Answer::Order(id, summary)),
        }
    }

    /// DELETE order. A pending order of a list is on no book: the cancel
    /// goes to the list's working order, and the list is being canceled.
    fn cancel(&mut self, user: u64, market: usize, target: OrderRef) -> Result<(), i32> {
        let i = self.find(user, market, target).ok_or(-2011)?;
        self.cancel_order_message(self.orders[i]);
        Ok(())
    }

    /// The cancel an order's book gets: its own, or for a pending order of
    /// a list (on no book) its list's working order's, the list then being
    /// canceled.
    fn cancel_order_message(&mut self, o: RefOrder) {
        if o.pending {
            let list = self.lists.get_mut(&o.list).unwrap();
            list.canceling = true;
            let working = list.legs[0];
            self.cancel_message(working);
        } else {
            self.cancel_message(o.id);
        }
    }

    /// DELETE openOrders: a cancel for each open order (oldest first)
    /// but those that leave with another (`sends_cancel`).
    fn cancel_all(&mut self, user: u64, market: usize) {
        let mut open: Vec<RefOrder> = self
            .orders
            .iter()
            .filter(|o| o.user == user && o.market == market)
            .copied()
            .collect();
        open.sort_by_key(|o| o.id);
        self.cancel_pending_lists(&open);
        let ids: Vec<u64> = open
            .iter()
            .filter(|o| self.sends_cancel(o, None))
            .map(|o| o.id)
            .collect();
        for id in ids {
            self.cancel_message(id);
        }
    }

    /// DELETE orderList: the list is being canceled; a cancel for each of
    /// its open orders but those that leave with another.
    fn cancel_list(&mut self, user: u64, market: usize, target: ListRef) -> Result<(), i32> {
        let found = self.lists.iter().find(|(id, l)| {
            l.user == user
                && l.market == market
                && match target {
                    ListRef::Id(wanted) => **id == wanted,
                    ListRef::Client(client) => l.client == client,
                }
        });
        let (&list_id, _) = found.ok_or(-2011)?;
        let list = self.lists.get_mut(&list_id).unwrap();
        list.canceling = true;
        let legs = list.legs.clone();
        let ids: Vec<u64> = legs
            .iter()
            .filter_map(|&id| self.at(id))
            .filter(|&i| self.sends_cancel(&self.orders[i], None))
            .map(|i| self.orders[i].id)
            .collect();
        for id in ids {
            self.cancel_message(id);
        }
        self.complete(list_id);
        Ok(())
    }

    /// order/cancelReplace: the cancel (of a pending order: through its
    /// list's working order, as `cancel`), then, once it is answered and
    /// unless it failed under STOP_ON_FAILURE, the new order, checked and
    /// locked then (with the orders still open then: the canceled order's
    /// OCO partner, a list's other pending orders), sized against `read`
    /// (the reference price before the cancel).
    #[allow(clippy::too_many_arguments)]
    fn cancel_replace(
        &mut self,
        user: u64,
        target: OrderRef,
        mode: CancelReplaceMode,
        request: &OrderRequest,
        id: u64,
        read: Option<i64>,
    ) {
        let market = usize::from(request.market.0);
        let mut replacing = Replacing {
            target: 0,
            user,
            mode,
            request: *request,
            id,
            read,
        };
        let Some(i) = self.find(user, market, target) else {
            self.replace_continue(Err(-2011), replacing);
            return;
        };
        let o = self.orders[i];
        replacing.target = o.id;
        self.replacing = Some(replacing);
        if o.pending {
            self.count("cancelReplace of a PENDING_NEW order");
        }
        self.cancel_order_message(o);
        assert!(self.replacing.is_none(), "the cancel of order {} was answered", o.id);
    }

    fn replace_continue(&mut self, cancel: Summary, r: Replacing) {
        if cancel.is_err() && r.mode == CancelReplaceMode::StopOnFailure {
            self.answers.push(Answer::Replace(cancel, None));
            return;
        }
        match self.admit(r.user, &r.request, r.id, r.read) {
            Err(code) => self.answers.push(Answer::Replace(cancel, Some(Err(code)))),
            Ok(o) => self.queue.push_back(Work::Replace(o, cancel)),
        }
    }

    /// Runs the book work the operation caused until none is left.
    fn run_queue(&mut self) {
        while let Some(work) = self.queue.pop_front() {
            match work {
                Work::Cancels { ids, meant } => {
                    for id in ids {
                        self.cancel_message(id);
                    }
                    let left: Vec<String> = meant
                        .into_iter()
                        .filter_map(|id| self.orders.iter().find(|o| o.id == id && o.on_book()))
                        .map(|o| {
                            let (id, user, kind, side, list) = (o.id, o.user, o.kind, o.side, o.list);
                            format!(
                                "order {id} of user {user} ({kind:?} {side:?}, list {list}, partner {})",
                                o.partner
                            )
                        })
                        .collect();
                    // A protection that fires cancels all the user's orders
                    // in the market: none may stay on the book. (One did,
                    // once: the second order of an OCO pair whose first the
                    // book had taken off with a trade; seed 7, step 2445 of
                    // `differential_one_account_machine`.)
                    assert!(
                        left.is_empty(),
                        "a protection that fired left orders on the book: {} (at time {})",
                        left.join(", "),
                        self.now
                    );
                }
                Work::Pending(list) => self.land_pending(list),
                Work::Replace(mut o, cancel) => match self.book_take(&mut o) {
                    None => {
                        self.unlock(&o);
                        self.answers.push(Answer::Replace(cancel, Some(Err(-2010))));
                    }
                    Some(status) => {
                        let new = Ok((status, o.executed, o.cumm));
                        self.answers.push(Answer::Replace(cancel, Some(new)));
                        self.land(o, status);
                    }
                },
            }
        }
    }

    /// An order of a list as a caller reads it once the operation is
    /// done: open (PENDING_NEW, NEW or PARTIALLY_FILLED), or how it ended.
    fn leg(&self, id: u64) -> (OrderStatus, i64, i64) {
        if let Some(o) = self.orders.iter().find(|o| o.id == id) {
            let status = if o.pending {
                OrderStatus::PendingNew
            } else if o.executed > 0 {
                OrderStatus::PartiallyFilled
            } else {
                OrderStatus::New
            };
            return (status, o.executed, o.cumm);
        }
        match self.finished.get(&id) {
            Some(&ended) => ended,
            None => panic!("order {id} of a list is neither open nor finished"),
        }
    }

    /// Forgets the orders of the lists done during the operation.
    fn forget_done_lists(&mut self) {
        for legs in std::mem::take(&mut self.done_lists) {
            for id in legs {
                self.finished.remove(&id);
            }
        }
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
/// A list's answer carries its orders' state once the operation is done.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    Sync(Result<(), i32>),
    Order(u64, Summary),
    Replace(Summary, Option<Summary>),
    ListPlaced(u64, Result<ListSummary, i32>),
    ListCanceled(u64, Result<ListSummary, i32>),
}

fn list_summary(result: &Result<OrderListView, EngineError>) -> Result<ListSummary, i32> {
    match result {
        Ok(view) => Ok(ListSummary::of((view.status_type, view.order_status), view.order_ids())),
        Err(e) => Err(e.code()),
    }
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
            AccountEvent::ListPlaced { order_list_id, result } => {
                out.push(Answer::ListPlaced(*order_list_id, list_summary(result)));
            }
            AccountEvent::ListCanceled { order_list_id, result } => {
                out.push(Answer::ListCanceled(*order_list_id, list_summary(result)));
            }
            AccountEvent::OrderUpdate(_)
            | AccountEvent::Trade { .. }
            | AccountEvent::MmpTriggered { .. }
            | AccountEvent::ListStatus(_) => {}
        }
    }
}

/// The engine's orders of open lists as its order updates report them
/// (an order no update named yet is PENDING_NEW); the orders of a list
/// are forgotten once its ALL_DONE status has been read.
#[derive(Default)]
struct EngineLegs {
    legs: BTreeMap<u64, (OrderStatus, i64, i64)>,
    done: Vec<Vec<u64>>,
}

impl EngineLegs {
    fn read(&mut self, events: &[AccountEvent]) {
        for e in events {
            match e {
                AccountEvent::OrderUpdate(v) if v.order_list_id != 0 => {
                    let state = (v.status, v.executed_qty.0, v.cummulative_quote_qty.0);
                    self.legs.insert(v.order_id, state);
                }
                AccountEvent::ListStatus(v) if v.status_type == ListStatusType::AllDone => {
                    self.done.push(v.order_ids().to_vec());
                }
                _ => {}
            }
        }
    }

    fn leg(&self, id: u64) -> (OrderStatus, i64, i64) {
        self.legs.get(&id).copied().unwrap_or((OrderStatus::PendingNew, 0, 0))
    }

    fn forget_done_lists(&mut self) {
        for legs in std::mem::take(&mut self.done) {
            for id in legs {
                self.legs.remove(&id);
            }
        }
    }
}

/// Fills in the orders' state of the lists an operation answered.
fn fill_legs(answers: &mut [Answer], leg: impl Fn(u64) -> (OrderStatus, i64, i64)) {
    for answer in answers {
        if let Answer::ListPlaced(_, Ok(list)) | Answer::ListCanceled(_, Ok(list)) = answer {
            for (id, status, executed, quote) in &mut list.legs {
                (*status, *executed, *quote) = leg(*id);
            }
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
    let mut engine_legs = EngineLegs::default();
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
                let read = reference.reference_price(usize::from(request.market.0), request.side);
                let sync = reference.place(user, &request, id, read);
                want.push(Answer::Sync(sync));
                if sync.is_ok() {
                    generator.recent.push((id, user, request.market));
                }
            }
            Op::PlaceList(user, request) => {
                let ids = [next_id, next_id + 1, next_id + 2];
                next_id += 3;
                let sync = exchange
                    .place_list(user, &request, ids, time, &mut out)
                    .map_err(|e| e.code());
                answers(sync, &out.events, &mut got);
                let first = &request.orders[0];
                let read = reference.reference_price(usize::from(first.market.0), first.side);
                let sync = reference.place_list(user, &request, ids, read);
                want.push(Answer::Sync(sync));
                match sync {
                    Ok(()) => {
                        let placed = reference
                            .answers
                            .iter()
                            .any(|a| matches!(a, Answer::ListPlaced(id, Ok(_)) if *id == ids[0]));
                        if placed {
                            for &id in &ids[..request.kind.legs()] {
                                generator.recent.push((id, user, first.market));
                            }
                            let list = (ids[0], user, first.market, request.list_client_order_id);
                            generator.lists.push(list);
                        }
                    }
                    Err(code) => reference.count(&format!("list refused: {code}")),
                }
            }
            Op::Cancel(user, market, target) => {
                let sync = exchange
                    .cancel(user, market, target, time, &mut out)
                    .map(|_| ())
                    .map_err(|e| e.code());
                answers(sync, &out.events, &mut got);
                want.push(Answer::Sync(reference.cancel(user, usize::from(market.0), target)));
            }
            Op::CancelAll(user, market) => {
                exchange.cancel_all(user, market, time, &mut out);
                answers(Ok(()), &out.events, &mut got);
                want.push(Answer::Sync(Ok(())));
                reference.cancel_all(user, usize::from(market.0));
            }
            Op::CancelList(user, market, target) => {
                let sync = exchange
                    .cancel_list(user, market, target, time, &mut out)
                    .map(|_| ())
                    .map_err(|e| e.code());
                answers(sync, &out.events, &mut got);
                let sync = reference.cancel_list(user, usize::from(market.0), target);
                want.push(Answer::Sync(sync));
                if let Err(code) = sync {
                    reference.count(&format!("list cancel refused: {code}"));
                }
            }
            Op::Replace(user, target, mode, request) => {
                let id = next_id;
                next_id += 1;
                exchange.cancel_replace(user, target, mode, &request, id, time, &mut out);
                answers(Ok(()), &out.events, &mut got);
                want.push(Answer::Sync(Ok(())));
                let read = reference.reference_price(usize::from(request.market.0), request.side);
                reference.cancel_replace(user, target, mode, &request, id, read);
                generator.recent.push((id, user, request.market));
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
        reference.run_queue();
        want.append(&mut reference.answers);
        if generator.recent.len() > 64 {
            generator.recent.drain(..32);
        }
        if generator.lists.len() > 32 {
            generator.lists.drain(..16);
        }
        engine_legs.read(&out.events);
        fill_legs(&mut got, |id| engine_legs.leg(id));
        fill_legs(&mut want, |id| reference.leg(id));
        engine_legs.forget_done_lists();
        reference.forget_done_lists();
        if got != want {
            for e in &out.events {
                if !matches!(e, AccountEvent::Trade { .. }) {
                    eprintln!("event {e:?}");
                }
            }
            eprintln!("book 1 open orders {}", exchange.books[1].open_orders_count());
            for (market, book) in exchange.books.iter().enumerate() {
                book.depth(DEPTH_LEVELS, &mut bids, &mut asks);
                eprintln!(
                    "market {market}: engine last {:?} depth {:?}\n  reference last {:?} depth {:?}",
                    book.last_price(),
                    (levels_of(&bids), levels_of(&asks)),
                    reference.last[market],
                    reference.depth(market)
                );
            }
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
            for user in 1..=generator.users {
                let engine: Vec<u64> = exchange
                    .account(user)
                    .open_order_lists(user)
                    .iter()
                    .map(|v| v.order_list_id)
                    .collect();
                let open = reference.lists.iter().filter(|(_, l)| l.user == user);
                let want: Vec<u64> = open.map(|(id, _)| *id).collect();
                assert_eq!(engine, want, "step {step}: open lists of user {user}");
            }
        }
    }
    let statuses = reference.statuses.clone();
    eprintln!(
        "seed {seed}: {ops} ops, {} fills, {} lists open, final statuses {statuses:#?}",
        reference.fills.len(),
        reference.lists.len(),
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
