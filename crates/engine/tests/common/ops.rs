//! Random operations for the engine's tests: the generator the differential
//! test checks against its reference, and a `Driver` that feeds the same
//! operations to an `Exchange` alone, for tests that compare two exchanges
//! (a machine and its restored snapshot, or its repartitioned copy).

use tradsys_engine::account::{AccountEvent, AmendRequest, ListRef, MmpConfig, NewOrderResult, OrderRef};
use tradsys_engine::driver::{Exchange, Output};
use tradsys_engine::market::MarketSpec;
use tradsys_engine::msg::Fill;
use tradsys_engine::num::{Amount, Price, Qty};
use tradsys_engine::order::{AssetId, CancelReplaceMode, ClientOrderId, ListKind, ListRequest, MarketId, OrderQty};
use tradsys_engine::order::{OrderListView, OrderRequest, OrderType, Side, StpMode, TimeInForce};
use tradsys_engine::EngineError;

pub const USERS_COUNT: u64 = 6;
/// Orders `Gen::recent` keeps before it drops its older half.
const RECENT_MAX: usize = 64;
/// Lists `Gen::lists` keeps before it drops its older half.
const RECENT_LISTS_MAX: usize = 32;
/// Per hundred operations: order lists placed (one in twenty) and list
/// cancels.
const LIST_PLACE_PERCENT: u64 = 5;
const LIST_CANCEL_PERCENT: u64 = 2;
/// The mid price of each test market in ticks (as `Gen::price` draws
/// around it).
const MID_TICKS: [i64; 3] = [10_000, 2_000, 2_000];

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

/// One operation; `Copy`, so an order list (three requests) makes it
/// large, which a test does not mind.
#[allow(clippy::large_enum_variant)]
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
    /// An order list (OCO, OTO, OTOCO); its orders take three consecutive
    /// ids, the list the first.
    PlaceList(u64, ListRequest),
    CancelList(u64, MarketId, ListRef),
}

#[derive(Clone)]
pub struct Gen {
    pub rng: SplitMix,
    pub specs: Vec<MarketSpec>,
    /// Users are 1..=users.
    pub users: u64,
    /// Recent orders (id, user, market) that cancels and replaces aim at.
    pub recent: Vec<(u64, u64, MarketId)>,
    /// Recent lists (id, user, market, listClientOrderId) that list
    /// cancels aim at.
    pub lists: Vec<(u64, u64, MarketId, ClientOrderId)>,
}

impl Gen {
    fn price(&mut self, market: usize) -> Price {
        let s = &self.specs[market];
        let mid = MID_TICKS[market];
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
        let list_roll = self.rng.below(100);
        if list_roll < LIST_PLACE_PERCENT {
            return Op::PlaceList(user, self.list_request(next_id));
        }
        if list_roll < LIST_PLACE_PERCENT + LIST_CANCEL_PERCENT {
            return self.list_cancel(user, next_id);
        }
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

/// Order lists: OCO pairs of either side straddling a price near the
/// market (so that the book sometimes refuses them, and their orders
/// sometimes trade or fire), OTO and OTOCO lists whose working LIMIT
/// order is near the market (so that it sometimes fills and places the
/// pending orders), and now and then a shape Binance refuses.
impl Gen {
    fn side(&mut self) -> Side {
        if self.rng.chance(50) {
            Side::Buy
        } else {
            Side::Sell
        }
    }

    fn stp(&mut self) -> StpMode {
        let stps = [
            StpMode::None,
            StpMode::ExpireTaker,
            StpMode::ExpireMaker,
            StpMode::ExpireBoth,
        ];
        stps[self.rng.below(4) as usize]
    }

    fn tif(&mut self) -> TimeInForce {
        match self.rng.below(10) {
            0 => TimeInForce::Ioc,
            1 => TimeInForce::Fok,
            _ => TimeInForce::Gtc,
        }
    }

    fn at_ticks(&self, market: usize, ticks: i64) -> Price {
        Price(ticks.max(1) * self.specs[market].tick_size.0)
    }

    /// A market price as a trader may guess it: near the mid.
    fn guess_ticks(&mut self, market: usize) -> i64 {
        MID_TICKS[market] + self.rng.below(21) as i64 - 10
    }

    fn client(&mut self, next_id: u64, percent: u64) -> Option<ClientOrderId> {
        let wanted = self.rng.chance(percent);
        let n = self.rng.below(7);
        wanted
            .then(|| ClientOrderId::new(&format!("c{}", (next_id + n) % 7)))
            .flatten()
    }

    /// An order of a list of type `kind` at `ticks` (its price, or its
    /// stop price and a limit price a few ticks beyond it), sometimes
    /// trailing, an iceberg, or named.
    fn list_order(
        &mut self,
        market: usize,
        side: Side,
        kind: OrderType,
        ticks: i64,
        qty: OrderQty,
        next_id: u64,
    ) -> OrderRequest {
        let mut r = OrderRequest {
            market: MarketId(market as u16),
            side,
            kind,
            time_in_force: None,
            price: None,
            qty,
            stop_price: None,
            client_order_id: self.client(next_id, 8),
            stp: self.stp(),
            iceberg_qty: None,
            trailing_delta: None,
        };
        match kind {
            OrderType::Limit => {
                r.price = Some(self.at_ticks(market, ticks));
                r.time_in_force = Some(self.tif());
            }
            OrderType::LimitMaker => r.price = Some(self.at_ticks(market, ticks)),
            OrderType::Market => {}
            OrderType::StopLoss | OrderType::TakeProfit => r.stop_price = Some(self.at_ticks(market, ticks)),
            OrderType::StopLossLimit | OrderType::TakeProfitLimit => {
                // A sell's limit at or below its stop, a buy's at or above.
                let beyond = self.rng.below(4) as i64;
                let limit = if side == Side::Sell {
                    ticks - beyond
                } else {
                    ticks + beyond
                };
                r.stop_price = Some(self.at_ticks(market, ticks));
                r.price = Some(self.at_ticks(market, limit));
                r.time_in_force = Some(self.tif());
            }
        }
        if kind.is_stop() && self.rng.chance(15) {
            // A few ticks' worth of basis points: it fires within the
            // band the prices move in. Now and then below the filter.
            r.trailing_delta = Some(8 + self.rng.below(150) as u32);
            if self.rng.chance(50) {
                r.stop_price = None;
            }
        }
        if kind.has_price() && self.rng.chance(12) {
            self.make_iceberg(&mut r);
        }
        r
    }

    /// An OCO pair of `side` around `anchor` ticks: a sell takes profit
    /// above (LIMIT_MAKER or take-profit) and stops its loss below; a buy
    /// the reverse. `[above, below]`.
    fn oco_pair(&mut self, market: usize, side: Side, anchor: i64, next_id: u64) -> (OrderRequest, OrderRequest) {
        let qty = OrderQty::Base(self.qty(market));
        let high = anchor + 2 + self.rng.below(12) as i64;
        let low = anchor - 2 - self.rng.below(12) as i64;
        let profit = [
            OrderType::LimitMaker,
            OrderType::LimitMaker,
            OrderType::LimitMaker,
            OrderType::TakeProfit,
            OrderType::TakeProfitLimit,
        ][self.rng.below(5) as usize];
        let loss = [OrderType::StopLoss, OrderType::StopLossLimit][self.rng.below(2) as usize];
        let (above, below) = match side {
            Side::Sell => (profit, loss),
            Side::Buy => (loss, profit),
        };
        let above = self.list_order(market, side, above, high, qty, next_id);
        let below = self.list_order(market, side, below, low, qty, next_id + 1);
        (above, below)
    }

    /// The working order of an OTO or OTOCO: a LIMIT near the market,
    /// sometimes a LIMIT_MAKER, now and then a type Binance refuses.
    fn working_order(&mut self, market: usize, side: Side, next_id: u64) -> OrderRequest {
        let ticks = self.guess_ticks(market);
        let qty = OrderQty::Base(self.qty(market));
        let kind = match self.rng.below(100) {
            0..=84 => OrderType::Limit,
            85..=95 => OrderType::LimitMaker,
            96..=97 => OrderType::Market,
            _ => OrderType::StopLoss,
        };
        self.list_order(market, side, kind, ticks, qty, next_id)
    }

    /// The pending order of an OTO, around the working order's price:
    /// mostly of the other side.
    fn pending_order(&mut self, market: usize, working: &OrderRequest, next_id: u64) -> OrderRequest {
        let side = if self.rng.chance(80) {
            working.side.opposite()
        } else {
            working.side
        };
        let tick = self.specs[market].tick_size.0;
        let anchor = working.price.map_or(MID_TICKS[market], |p| p.0 / tick);
        let ticks = anchor + self.rng.below(17) as i64 - 8;
        let kind = [
            OrderType::Limit,
            OrderType::Limit,
            OrderType::Limit,
            OrderType::LimitMaker,
            OrderType::Market,
            OrderType::StopLoss,
            OrderType::StopLossLimit,
            OrderType::TakeProfit,
            OrderType::TakeProfitLimit,
        ][self.rng.below(9) as usize];
        let mut qty = OrderQty::Base(self.qty(market));
        if self.rng.chance(5) {
            // Often more than the user holds when it is sent: it expires.
            let step = self.specs[market].step_size.0;
            qty = OrderQty::Base(Qty(step * (50_000 + self.rng.below(40_000) as i64)));
        }
        if kind == OrderType::Market && self.rng.chance(10) {
            // quoteOrderQty: refused in a pending order.
            qty = OrderQty::Quote(Amount(
                self.specs[market].min_notional.0 * (1 + self.rng.below(50) as i64),
            ));
        }
        self.list_order(market, side, kind, ticks, qty, next_id)
    }

    /// A new list for one market: half OCO, a quarter each OTO and
    /// OTOCO; the list's client id mostly new, sometimes one of a few
    /// reused names (a second open list of that name is refused).
    fn list_request(&mut self, next_id: u64) -> ListRequest {
        let market = self.rng.below(self.specs.len() as u64) as usize;
        let kind = match self.rng.below(4) {
            0 | 1 => ListKind::Oco,
            2 => ListKind::Oto,
            _ => ListKind::Otoco,
        };
        let name = if self.rng.chance(10) {
            format!("again{}", self.rng.below(3))
        } else {
            format!("list{next_id}")
        };
        let side = self.side();
        let orders = match kind {
            ListKind::Oco => {
                let anchor = self.guess_ticks(market);
                let (above, below) = self.oco_pair(market, side, anchor, next_id);
                [above, below, above]
            }
            ListKind::Oto => {
                let working = self.working_order(market, side, next_id);
                let pending = self.pending_order(market, &working, next_id + 1);
                [working, pending, pending]
            }
            ListKind::Otoco => {
                let working = self.working_order(market, side, next_id);
                let tick = self.specs[market].tick_size.0;
                let anchor = working.price.map_or(MID_TICKS[market], |p| p.0 / tick);
                let pair_side = if self.rng.chance(85) { side.opposite() } else { side };
                let (above, below) = self.oco_pair(market, pair_side, anchor, next_id + 1);
                [working, above, below]
            }
        };
        let mut request = ListRequest {
            kind,
            list_client_order_id: ClientOrderId::new(&name).unwrap_or_else(|| unreachable!("a short name")),
            orders,
        };
        if self.rng.chance(8) {
            self.spoil(&mut request);
        }
        request
    }

    /// Makes a list one Binance refuses, mostly for its shape: an OCO
    /// pair swapped, with a LIMIT or two LIMIT_MAKERs, quantities or sides
    /// that differ, prices that do not straddle; an OTO's pending order
    /// sized by quoteOrderQty.
    fn spoil(&mut self, request: &mut ListRequest) {
        let (a, b) = match request.kind {
            ListKind::Oco => (0, 1),
            ListKind::Otoco => (1, 2),
            ListKind::Oto => {
                let pending = &mut request.orders[1];
                pending.kind = OrderType::Market;
                (pending.price, pending.stop_price, pending.time_in_force) = (None, None, None);
                (pending.iceberg_qty, pending.trailing_delta) = (None, None);
                let market = usize::from(pending.market.0);
                pending.qty = OrderQty::Quote(Amount(self.specs[market].min_notional.0 * 3));
                return;
            }
        };
        let orders = &mut request.orders;
        match self.rng.below(6) {
            0 => orders.swap(a, b),
            1 => {
                let leg = &mut orders[a + self.rng.below(2) as usize];
                leg.kind = OrderType::Limit;
                leg.price = leg.price.or(leg.stop_price);
                leg.stop_price = None;
                leg.trailing_delta = None;
                leg.time_in_force = Some(TimeInForce::Gtc);
            }
            2 => {
                for leg in [a, b] {
                    let leg = &mut orders[leg];
                    leg.kind = OrderType::LimitMaker;
                    leg.price = leg.price.or(leg.stop_price);
                    (leg.stop_price, leg.trailing_delta, leg.time_in_force) = (None, None, None);
                }
            }
            3 => {
                let market = usize::from(orders[b].market.0);
                let step = self.specs[market].step_size.0;
                if let OrderQty::Base(qty) = orders[b].qty {
                    orders[b].qty = OrderQty::Base(Qty(qty.0 + step));
                }
            }
            4 => orders[b].side = orders[b].side.opposite(),
            _ => {
                // The below order's price at or above the above one's.
                let high = orders[a].price.or(orders[a].stop_price);
                match orders[b].kind {
                    OrderType::LimitMaker => orders[b].price = high.or(orders[b].price),
                    _ => orders[b].stop_price = high.or(orders[b].stop_price),
                }
            }
        }
    }

    /// A list cancel: a recent list of the user's, by id or by its client
    /// id, sometimes in another market or one that never was.
    fn list_cancel(&mut self, user: u64, next_id: u64) -> Op {
        let mine: Vec<(u64, u64, MarketId, ClientOrderId)> =
            self.lists.iter().filter(|l| l.1 == user).copied().collect();
        if mine.is_empty() || self.rng.chance(5) {
            let market = MarketId(self.rng.below(self.specs.len() as u64) as u16);
            return Op::CancelList(user, market, ListRef::Id(next_id + 11));
        }
        // Mostly one of the newest: older lists are mostly done.
        let newest = mine.len().saturating_sub(3) as u64;
        let from = if self.rng.chance(70) { newest } else { 0 };
        let at = from + self.rng.below(mine.len() as u64 - from);
        let (id, _, market, client) = mine[at as usize];
        let target = if self.rng.chance(12) {
            ListRef::Client(client)
        } else {
            ListRef::Id(id)
        };
        let market = if self.rng.chance(3) {
            MarketId((market.0 + 1) % self.specs.len() as u16)
        } else {
            market
        };
        Op::CancelList(user, market, target)
    }
}

impl Gen {
    pub fn new(seed: u64, specs: &[MarketSpec]) -> Gen {
        Gen {
            rng: SplitMix(seed),
            specs: specs.to_vec(),
            users: USERS_COUNT,
            recent: Vec::new(),
            lists: Vec::new(),
        }
    }

    /// Remembers a list that now exists (its orders too), as a target for
    /// later cancels.
    pub fn remember_list(&mut self, view: &OrderListView, user: u64) {
        for &id in view.order_ids() {
            self.remember(id, user, view.market);
        }
        self.lists
            .push((view.order_list_id, user, view.market, view.list_client_order_id));
        if self.lists.len() > RECENT_LISTS_MAX {
            self.lists.drain(..RECENT_LISTS_MAX / 2);
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
            Op::PlaceList(user, request) => {
                let ids = [self.next_id, self.next_id + 1, self.next_id + 2];
                self.next_id += 3;
                exchange.place_list(user, &request, ids, time, out)
            }
            Op::CancelList(user, market, target) => exchange.cancel_list(user, market, target, time, out).map(|_| ()),
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
        if let Op::PlaceList(user, _) = op {
            for event in &out.events {
                if let AccountEvent::ListPlaced { result: Ok(view), .. } = event {
                    self.gen.remember_list(view, user);
                }
            }
            return;
        }
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
