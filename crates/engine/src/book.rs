//! The order book of one market: price-time priority matching, resting
//! orders, held stop orders, the last trade price.
//!
//! The book owns no money. It receives orders whose funds an account machine
//! has already locked (`msg::PlaceOrder` carries the budget) and answers with
//! `msg::ToAccount` messages pushed into a caller-provided `Vec`.
//!
//! Layout, chosen so that steady-state operations do not allocate: resting
//! orders live in a slab (`Vec<Node>` with a free list) and form one intrusive
//! doubly-linked FIFO per price level; levels live in their own slab; each
//! side keeps a `Vec` of (key, level) sorted so that the best level is last,
//! which makes the best price O(1) and puts the busy end of the book at the
//! cheap end of the `Vec`. Cancel by order id is a hash lookup and an unlink,
//! O(1); only emptying a level costs a binary search and a short move. Held
//! stops sit in two `StopLadder`s sorted so that the next to fire is last,
//! so checking them after a trade reads only the stops it triggers.
//!
//! An iceberg order (`PlaceOrder::iceberg_qty` above zero) rests with only
//! its visible part (`Node::shown`, at most the iceberg quantity) counted in
//! its level's quantity, which is what depth shows; the rest is the level's
//! `hidden`. A taker meets the visible part only; when it is used up and
//! some of the order is left, the order shows a new part and goes to the
//! back of its level's queue (it loses time priority, as on Binance).
//!
//! A trailing stop (`PlaceOrder::trailing_delta` above zero) is held apart,
//! in arrival order, with the best price it has seen since it began
//! tracking: the highest for a sell, the lowest for a buy. It begins at
//! once (from the last price) without a stop price, else at the first
//! trade that meets its stop price; from then on each trade moves its
//! best price and is checked against it, and a trade `trailingDelta` basis
//! points worse than the best marks it fired. Fired stops run, with the
//! others, oldest first once the order that moved the price is done.
//! Every trade reads the trailing stops (at most
//! `TRAILING_STOPS_PER_BOOK_MAX`), none when there are none.
//!
//! **Invariant:** at rest the book is never crossed (best bid < best ask).
//! **Invariant:** a level's quantity is the sum of its orders' visible
//! parts, and its hidden quantity the sum of the rest of their remainders.
//! Called by the market's shard (and by `driver::Exchange` in tests).

use crate::hash::{IdBuildHasher, IdMap, StateHasher};
use crate::market::MarketSpec;
use crate::msg::{AmendOrder, Fill, PlaceOrder, ToAccount, ToBook};
use crate::num::{notional_ceil, notional_floor, qty_within, Amount, Price, Qty, BIPS};
use crate::order::{MarketId, OrderId, OrderStatus, OrderType, Side, StpMode};
use crate::order::{TimeInForce, TradeId, UserId};
use crate::snapshot::{self, SnapshotError};
use crate::EngineError;
use rkyv::util::AlignedVec;
use std::collections::hash_map::Entry;

/// Depth levels a snapshot may ask for (Binance's largest `limit`).
pub const DEPTH_LEVELS_MAX: usize = 5000;

/// Held stops per direction a book reserves room for up front.
const STOPS_RESERVED_COUNT: usize = 1024;
/// Trailing stops one book holds; every trade reads them all, so this
/// bounds what a trade costs. A trailing stop beyond it is rejected.
pub const TRAILING_STOPS_PER_BOOK_MAX: usize = 1024;
/// First orders of OCO pairs waiting in a book for their partners. A pair
/// is sent as two consecutive messages on one link, so at most one per
/// sending shard and instance waits at a time.
pub const OCO_WAITING_MAX: usize = 1024;

const NIL: u32 = u32::MAX;
const UNBOUNDED: i64 = i64::MAX;

/// How much a book reserves up front; beyond it the book still works but
/// its `Vec`s grow, which allocates.
#[derive(Clone, Copy, Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct BookCapacity {
    pub orders_max: usize,
    pub levels_max: usize,
}

impl Default for BookCapacity {
    fn default() -> Self {
        BookCapacity {
            orders_max: 1 << 16,
            levels_max: 1 << 12,
        }
    }
}

#[derive(Clone, Copy, Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct Node {
    order_id: OrderId,
    user: UserId,
    price: Price,
    /// What is left of the order, visible or not.
    qty: Qty,
    /// The part a taker can meet: `qty` for a plain order, at most `peak`
    /// for an iceberg.
    shown: Qty,
    /// The iceberg quantity; zero for a plain order.
    peak: Qty,
    side: Side,
    /// The held partner of an order of an OCO pair (0 for any other
    /// order): whichever leaves the book first takes the other with it.
    partner: OrderId,
    level: u32,
    prev: u32,
    next: u32,
}

#[derive(Clone, Copy, Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct Level {
    price: Price,
    /// The visible quantity (what depth shows).
    qty: Qty,
    /// What icebergs at this price hold beyond their visible parts.
    hidden: Qty,
    count: u32,
    head: u32,
    tail: u32,
}

/// One side's levels, sorted by key ascending so the best level is last.
/// The key is the price for bids and the negated price for asks.
#[derive(Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct Ladder {
    side: Side,
    levels: Vec<(i64, u32)>,
}

impl Ladder {
    fn key(&self, price: Price) -> i64 {
        match self.side {
            Side::Buy => price.0,
            Side::Sell => -price.0,
        }
    }

    fn best(&self) -> Option<u32> {
        self.levels.last().map(|&(_, level)| level)
    }

    fn find(&self, price: Price) -> Result<usize, usize> {
        let key = self.key(price);
        self.levels.binary_search_by(|&(k, _)| k.cmp(&key))
    }
}

/// A held stop order and its arrival number (older fires first).
#[derive(Clone, Copy, Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct HeldStop {
    seq: u64,
    order: PlaceOrder,
}

/// Held stops that fire in one direction, sorted so that the next to fire
/// is last: an upward stop fires when the last price is ≥ its stop price,
/// so they are sorted by stop price descending; a downward stop fires when
/// the last price is ≤ it, so ascending. Within one stop price the oldest
/// is last. The stops a last price triggers are thus a suffix, and after a
/// trade only that suffix (usually empty) and one more stop are read.
#[derive(Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct StopLadder {
    upward: bool,
    stops: Vec<HeldStop>,
    /// Where the next stop fires, as a bound on the last price signed for
    /// this ladder ([`StopLadder::signed`]); `i64::MAX` when it is empty.
    /// Every taker checks it, so the check reads no stop and takes no
    /// branch on whether there is one.
    fires_at: i64,
}

impl StopLadder {
    fn new(upward: bool) -> StopLadder {
        StopLadder {
            upward,
            stops: Vec::with_capacity(STOPS_RESERVED_COUNT),
            fires_at: i64::MAX,
        }
    }

    /// A price turned so that a stop fires when the last price's signed
    /// value reaches its own: as it is for upward stops, negated for
    /// downward ones (prices are positive, so negation cannot overflow).
    fn signed(&self, price: Price) -> i64 {
        if self.upward {
            price.0
        } else {
            -price.0
        }
    }

    fn next_fires_at(&self) -> i64 {
        self.stops.last().map_or(i64::MAX, |s| self.signed(s.order.stop_price))
    }

    /// Whether `last` triggers a stop of this ladder.
    fn may_fire(&self, last: Price) -> bool {
        self.signed(last) >= self.fires_at
    }

    fn remove(&mut self, position: usize) -> HeldStop {
        let stop = self.stops.remove(position);
        self.fires_at = self.next_fires_at();
        stop
    }

    fn key(&self, stop_price: Price, seq: u64) -> (i64, u64) {
        let price = if self.upward { -stop_price.0 } else { stop_price.0 };
        (price, u64::MAX - seq)
    }

    fn key_of(&self, stop: &HeldStop) -> (i64, u64) {
        self.key(stop.order.stop_price, stop.seq)
    }

    fn position(&self, stop_price: Price, seq: u64) -> Result<usize, usize> {
        let key = self.key(stop_price, seq);
        self.stops.binary_search_by(|s| self.key_of(s).cmp(&key))
    }

    fn insert(&mut self, stop: HeldStop) {
        match self.position(stop.order.stop_price, stop.seq) {
            Ok(_) => unreachable!("stop arrival numbers are unique"),
            Err(position) => self.stops.insert(position, stop),
        }
        self.fires_at = self.next_fires_at();
    }

    /// The oldest stop `last` triggers: its position and arrival number.
    fn oldest_triggered(&self, last: Price) -> Option<(usize, u64)> {
        let triggered = self.stops.iter().enumerate().rev();
        let mut triggered = triggered.take_while(|(_, s)| triggered_at(self.upward, s.order.stop_price, last));
        let first = triggered.next()?;
        let oldest = triggered.fold(first, |a, b| if b.1.seq < a.1.seq { b } else { a });
        Some((oldest.0, oldest.1.seq))
    }
}

/// Where a held stop is: its direction, stop price, arrival number and
/// user, and whether it is a trailing stop (then it is found by its
/// arrival number among the trailing stops).
#[derive(Clone, Copy, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct StopPlace {
    upward: bool,
    stop_price: Price,
    seq: u64,
    user: UserId,
    trailing: bool,
}

/// A held trailing stop: its arrival number, the order, the best price
/// since it began tracking (`None` until it begins) and whether a trade
/// has fired it.
#[derive(Clone, Copy, Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct TrailingStop {
    seq: u64,
    order: PlaceOrder,
    best: Option<Price>,
    fired: bool,
}

impl TrailingStop {
    /// Moves the stop along with a trade at `price`.
    fn track(&mut self, price: Price) {
        if self.fired {
            return;
        }
        let order = &self.order;
        let sell = order.side == Side::Sell;
        let best = match self.best {
            None => {
                let upward = order.kind.triggers_upward(order.side);
                let starts = order.stop_price.0 == 0 || triggered_at(upward, order.stop_price, price);
                // The trade that starts the tracking sets the best price.
                self.best = starts.then_some(price);
                return;
            }
            Some(best) if sell => best.max(price),
            Some(best) => best.min(price),
        };
        self.best = Some(best);
        self.fired = trailed_past(sell, best, price, order.trailing_delta);
    }
}

/// Whether `price` is `delta` basis points worse than `best`: below it for
/// a sell, above it for a buy.
fn trailed_past(sell: bool, best: Price, price: Price, delta: u32) -> bool {
    let (best, price, delta) = (i128::from(best.0), i128::from(price.0), i128::from(delta));
    let bips = i128::from(BIPS);
    if sell {
        price * bips <= best * (bips - delta)
    } else {
        price * bips >= best * (bips + delta)
    }
}

/// Where a held stop to fire is.
#[derive(Clone, Copy)]
enum Held {
    Up(usize),
    Down(usize),
    Trailing(usize),
}

/// Why matching stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Exit {
    QtyDone,
    BudgetDone,
    NoLiquidity,
    PriceLimit,
    SelfTrade,
}

/// A market's book machine.
#[derive(Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Book {
    market: MarketId,
    /// What `new` reserved, reserved again after a restore.
    capacity: BookCapacity,
    step: Qty,
    nodes: Vec<Node>,
    nodes_free: Vec<u32>,
    levels: Vec<Level>,
    levels_free: Vec<u32>,
    bids: Ladder,
    asks: Ladder,
    #[rkyv(with = rkyv::with::AsVec)]
    index: IdMap<u32>,
    stops_up: StopLadder,
    stops_down: StopLadder,
    #[rkyv(with = rkyv::with::AsVec)]
    stop_index: IdMap<StopPlace>,
    /// Trailing stops in arrival order.
    trailing: Vec<TrailingStop>,
    /// First orders of OCO pairs whose partners have not arrived yet.
    oco_waiting: Vec<PlaceOrder>,
    next_stop_seq: u64,
    last_price: Option<Price>,
    update_id: u64,
    next_trade_id: TradeId,
}

impl Book {
    pub fn new(market: MarketId, spec: &MarketSpec, capacity: BookCapacity) -> Book {
        // Every fill's notional then fits an i64: the book never overflows.
        assert!(notional_ceil(spec.max_price, spec.max_qty).is_some());
        Book {
            market,
            capacity,
            step: spec.step_size,
            nodes: Vec::with_capacity(capacity.orders_max),
            nodes_free: Vec::with_capacity(capacity.orders_max),
            levels: Vec::with_capacity(capacity.levels_max),
            levels_free: Vec::with_capacity(capacity.levels_max),
            bids: Ladder {
                side: Side::Buy,
                levels: Vec::with_capacity(capacity.levels_max),
            },
            asks: Ladder {
                side: Side::Sell,
                levels: Vec::with_capacity(capacity.levels_max),
            },
            index: IdMap::with_capacity_and_hasher(capacity.orders_max, IdBuildHasher),
            stops_up: StopLadder::new(true),
            stops_down: StopLadder::new(false),
            stop_index: IdMap::with_capacity_and_hasher(STOPS_RESERVED_COUNT, IdBuildHasher),
            trailing: Vec::with_capacity(TRAILING_STOPS_PER_BOOK_MAX),
            oco_waiting: Vec::with_capacity(OCO_WAITING_MAX),
            next_stop_seq: 0,
            last_price: None,
            update_id: 0,
            next_trade_id: 1,
        }
    }

    pub fn market(&self) -> MarketId {
        self.market
    }

    /// The book as a snapshot (an rkyv archive of the whole state).
    pub fn to_snapshot_bytes(&self) -> Result<AlignedVec, SnapshotError> {
        snapshot::encode(self)
    }

    /// A book back from `to_snapshot_bytes`: validated, with its room
    /// reserved again, its invariants checked.
    pub fn from_snapshot_bytes(bytes: &[u8]) -> Result<Book, SnapshotError> {
        let mut book: Book = snapshot::decode(bytes)?;
        book.verify().map_err(SnapshotError::Inconsistent)?;
        book.reserve_up_front();
        Ok(book)
    }

    fn reserve_up_front(&mut self) {
        let BookCapacity { orders_max, levels_max } = self.capacity;
        snapshot::reserve_total(&mut self.nodes, orders_max);
        snapshot::reserve_total(&mut self.nodes_free, orders_max);
        snapshot::reserve_total(&mut self.levels, levels_max);
        snapshot::reserve_total(&mut self.levels_free, levels_max);
        snapshot::reserve_total(&mut self.bids.levels, levels_max);
        snapshot::reserve_total(&mut self.asks.levels, levels_max);
        snapshot::reserve_total_map(&mut self.index, orders_max);
        snapshot::reserve_total(&mut self.stops_up.stops, STOPS_RESERVED_COUNT);
        snapshot::reserve_total(&mut self.stops_down.stops, STOPS_RESERVED_COUNT);
        snapshot::reserve_total_map(&mut self.stop_index, STOPS_RESERVED_COUNT);
        snapshot::reserve_total(&mut self.trailing, TRAILING_STOPS_PER_BOOK_MAX);
        snapshot::reserve_total(&mut self.oco_waiting, OCO_WAITING_MAX);
    }

    /// Applies one message; answers go to `out` (not cleared).
    pub fn handle(&mut self, msg: ToBook, out: &mut Vec<ToAccount>) {
        assert_eq!(msg.market(), self.market);
        match msg {
            ToBook::Place(order) => self.place(order, out),
            ToBook::Cancel {
                order_id,
                user,
                time_ms,
                ..
            } => {
                let result = self.cancel(order_id, user);
                // The partner's answer first: its account machine passes
                // the pair's lock on to the order still open, which then
                // unlocks it, so a cancel-replace's new order finds the
                // funds free.
                if let Ok(Some(partner)) = result {
                    self.drop_partner(partner, OrderStatus::Canceled, time_ms, out);
                }
                out.push(ToAccount::Canceled {
                    order_id,
                    user,
                    result: result.map(drop),
                    time_ms,
                });
            }
            ToBook::Amend(amend) => {
                let result = self.amend(&amend);
                out.push(ToAccount::Amended {
                    order_id: amend.order_id,
                    user: amend.user,
                    result,
                    time_ms: amend.time_ms,
                });
            }
        }
        assert!(!self.is_crossed(), "book at rest must not be crossed");
    }

    fn place(&mut self, order: PlaceOrder, out: &mut Vec<ToAccount>) {
        if order.oco_partner != 0 {
            return self.place_oco(order, out);
        }
        if let Some(reason) = self.refusal(&order) {
            out.push(placed(&order, OrderStatus::Rejected, Some(reason)));
            return;
        }
        if order.kind.is_stop() {
            self.hold(&order);
            out.push(placed(&order, OrderStatus::New, None));
            return;
        }
        let status = self.execute(&order, out);
        out.push(placed(&order, status, None));
        self.run_stops(out);
    }

    /// Why the book refuses `order` as it stands, if it does.
    fn refusal(&self, order: &PlaceOrder) -> Option<EngineError> {
        if order.kind.is_stop() && order.trailing_delta > 0 {
            let full = self.trailing.len() >= TRAILING_STOPS_PER_BOOK_MAX;
            full.then_some(EngineError::TrailingStopsFull)
        } else if order.kind.is_stop() {
            self.would_trigger(order).then_some(EngineError::WouldTrigger)
        } else if order.kind == OrderType::LimitMaker {
            self.crosses_best(order.side, order.price)
                .then_some(EngineError::WouldMatch)
        } else {
            None
        }
    }

    /// One order of an OCO pair: the first waits for its partner; with
    /// both here, both go on the book (neither trades on arrival: one is a
    /// LIMIT_MAKER or a stop, the other a stop) or, if the book refuses
    /// either, neither does and both are rejected for that reason.
    fn place_oco(&mut self, order: PlaceOrder, out: &mut Vec<ToAccount>) {
        if order.oco_first {
            assert!(self.oco_waiting.len() < OCO_WAITING_MAX, "too many OCO orders waiting");
            self.oco_waiting.push(order);
            return;
        }
        let Some(at) = self.oco_waiting.iter().position(|o| o.order_id == order.oco_partner) else {
            unreachable!("OCO order {} came before its partner", order.order_id)
        };
        let mut first = self.oco_waiting.swap_remove(at);
        assert_eq!(first.oco_partner, order.order_id);
        first.oco_first = false;
        let both = [&first, &order];
        let refused = both
            .into_iter()
            .find_map(|o| self.refusal(o).or_else(|| self.oco_refusal(o)));
        if let Some(reason) = refused {
            // The pair must straddle the last price (Binance's words).
            let reason = match reason {
                EngineError::WouldMatch | EngineError::WouldTrigger => {
                    EngineError::ListRejected(crate::ListReason::PriceRelationship)
                }
                other => other,
            };
            for o in both {
                out.push(placed(o, OrderStatus::Rejected, Some(reason)));
            }
            return;
        }
        for leg in both {
            if leg.kind.is_stop() {
                self.hold(leg);
            } else {
                assert_eq!(leg.kind, OrderType::LimitMaker);
                self.rest(leg, leg.qty);
            }
        }
        for o in both {
            out.push(placed(o, OrderStatus::New, None));
        }
    }

    /// What an OCO pair asks of its LIMIT_MAKER beyond what a plain one
    /// asks: to be on its side of the last price (a sell above it, a buy
    /// below it), as Binance's price rule for a pair says.
    fn oco_refusal(&self, order: &PlaceOrder) -> Option<EngineError> {
        let last = self.last_price?;
        let beyond = match order.side {
            Side::Sell => order.price > last,
            Side::Buy => order.price < last,
        };
        (order.kind == OrderType::LimitMaker && !beyond).then_some(EngineError::WouldMatch)
    }

    /// An order of an OCO pair left the book: its partner `partner`
    /// leaves too, `status` (EXPIRED when the first traded or fired,
    /// CANCELED with a cancel, reported as the cancel's answer).
    fn drop_partner(&mut self, partner: OrderId, status: OrderStatus, time_ms: u64, out: &mut Vec<ToAccount>) {
        // The partner of a resting order is always held: look there first.
        let user = if let Some(place) = self.stop_index.remove(&partner) {
            self.unhold_at(place).user
        } else if let Some(index) = self.index.remove(&partner) {
            let user = self.nodes[index as usize].user;
            self.free_node(index);
            self.update_id += 1;
            user
        } else {
            unreachable!("the partner {partner} of an OCO order is not on the book")
        };
        out.push(match status {
            OrderStatus::Canceled => ToAccount::Canceled {
                order_id: partner,
                user,
                result: Ok(()),
                time_ms,
            },
            status => ToAccount::Done {
                order_id: partner,
                user,
                status,
                time_ms,
            },
        });
    }

    /// Matches `order` as a taker and rests what a GTC limit leaves.
    fn execute(&mut self, order: &PlaceOrder, out: &mut Vec<ToAccount>) -> OrderStatus {
        let limit = order.kind.has_price();
        if limit && order.time_in_force == TimeInForce::Fok && !self.fok_fillable(order) {
            return OrderStatus::Expired;
        }
        let mut qty_left = order.qty;
        let mut quote_left = order.quote;
        let exit = self.match_taker(order, &mut qty_left, &mut quote_left, out);
        let filled = qty_left != order.qty;
        match exit {
            Exit::SelfTrade => OrderStatus::ExpiredInMatch,
            Exit::QtyDone if order.by_quote && quote_left.0 > 0 => OrderStatus::Expired,
            Exit::QtyDone => OrderStatus::Filled,
            Exit::BudgetDone if order.by_quote => OrderStatus::Filled,
            Exit::BudgetDone => OrderStatus::Expired,
            Exit::NoLiquidity | Exit::PriceLimit => {
                if !limit || order.time_in_force != TimeInForce::Gtc {
                    return OrderStatus::Expired;
                }
                self.rest(order, qty_left);
                if filled {
                    OrderStatus::PartiallyFilled
                } else {
                    OrderStatus::New
                }
            }
        }
    }

    fn match_taker(
        &mut self,
        order: &PlaceOrder,
        qty_left: &mut Qty,
        quote_left: &mut Amount,
        out: &mut Vec<ToAccount>,
    ) -> Exit {
        let limit = order.kind.has_price();
        // A limit buy's lock covers its whole quantity at its limit price,
        // so only market orders are ever stopped by their budget.
        let budgeted = !limit && quote_left.0 != UNBOUNDED;
        loop {
            if qty_left.0 == 0 {
                return Exit::QtyDone;
            }
            // A spent budget is done even if the book ran out with it.
            if budgeted && quote_left.0 == 0 {
                return Exit::BudgetDone;
            }
            let Some(level) = self.ladder(order.side.opposite()).best() else {
                return Exit::NoLiquidity;
            };
            let level = self.levels[level as usize];
            if limit && !crosses(order.side, order.price, level.price) {
                return Exit::PriceLimit;
            }
            let maker_index = level.head;
            let maker = self.nodes[maker_index as usize];
            if maker.user == order.user && order.stp != StpMode::None {
                if order.stp != StpMode::ExpireTaker {
                    self.remove(maker_index);
                    self.update_id += 1;
                    out.push(done(&maker, OrderStatus::ExpiredInMatch, order.time_ms));
                    if maker.partner != 0 {
                        self.drop_partner(maker.partner, OrderStatus::Expired, order.time_ms, out);
                    }
                }
                if order.stp == StpMode::ExpireMaker {
                    continue;
                }
                return Exit::SelfTrade;
            }
            let mut qty = maker.shown.min(*qty_left);
            if budgeted {
                qty = qty.min(qty_within(level.price, *quote_left, self.step));
                if qty.0 == 0 {
                    return Exit::BudgetDone;
                }
            }
            let quote = self.trade(order, maker_index, qty, out);
            qty_left.0 -= qty.0;
            if quote_left.0 != UNBOUNDED {
                quote_left.0 -= quote.0;
                assert!(quote_left.0 >= 0, "a taker spent beyond its budget");
            }
        }
    }

    fn trade(&mut self, order: &PlaceOrder, maker_index: u32, qty: Qty, out: &mut Vec<ToAccount>) -> Amount {
        let maker = self.nodes[maker_index as usize];
        let price = maker.price;
        let quote = match notional_floor(price, qty) {
            Some(quote) => quote,
            None => unreachable!("market spec bounds every notional"),
        };
        let fill = Fill {
            market: self.market,
            trade_id: self.next_trade_id,
            price,
            qty,
            quote_qty: quote,
            taker_order: order.order_id,
            taker_user: order.user,
            taker_side: order.side,
            maker_order: maker.order_id,
            maker_user: maker.user,
            time_ms: order.time_ms,
        };
        self.next_trade_id += 1;
        self.update_id += 1;
        self.last_price = Some(price);
        for stop in &mut self.trailing {
            stop.track(price);
        }
        out.push(ToAccount::Fill(fill));
        // A trade of one order of an OCO pair takes the other off.
        if maker.partner != 0 {
            self.nodes[maker_index as usize].partner = 0;
            self.drop_partner(maker.partner, OrderStatus::Expired, order.time_ms, out);
        }
        let node = &mut self.nodes[maker_index as usize];
        node.qty.0 -= qty.0;
        node.shown.0 -= qty.0;
        let (left, shown) = (node.qty, node.shown);
        self.levels[maker.level as usize].qty.0 -= qty.0;
        if left.0 == 0 {
            self.remove(maker_index);
            out.push(done(&maker, OrderStatus::Filled, order.time_ms));
        } else if shown.0 == 0 {
            self.refresh(maker_index);
        }
        quote
    }

    /// An iceberg whose visible part was used up shows its next part and
    /// moves to the back of its level's queue.
    fn refresh(&mut self, index: u32) {
        let node = self.nodes[index as usize];
        assert!(node.peak.0 > 0 && node.shown.0 == 0 && node.qty.0 > 0);
        let shown = node.peak.min(node.qty);
        self.nodes[index as usize].shown = shown;
        let level = &mut self.levels[node.level as usize];
        level.qty.0 += shown.0;
        level.hidden.0 -= shown.0;
        // Alone or last at its price (the usual case when a taker sweeps
        // an iceberg), it is at the back already.
        if level.tail != index {
            self.unlink(index);
            self.append(node.level, index);
        }
    }

    fn fok_fillable(&self, order: &PlaceOrder) -> bool {
        let mut available: i64 = 0;
        let ladder = self.ladder(order.side.opposite());
        for &(_, level) in ladder.levels.iter().rev() {
            let level = &self.levels[level as usize];
            if !crosses(order.side, order.price, level.price) {
                break;
            }
            available = available.saturating_add(level.qty.0).saturating_add(level.hidden.0);
            if available >= order.qty.0 {
                return true;
            }
        }
        false
    }

    fn rest(&mut self, order: &PlaceOrder, qty: Qty) {
        assert!(qty.0 > 0 && order.price.0 > 0 && order.iceberg_qty.0 >= 0);
        let level = self.level_for(order.side, order.price);
        let peak = order.iceberg_qty;
        let shown = if peak.0 > 0 { peak.min(qty) } else { qty };
        let node = Node {
            order_id: order.order_id,
            user: order.user,
            price: order.price,
            qty,
            shown,
            peak,
            side: order.side,
            partner: order.oco_partner,
            level,
            prev: NIL,
            next: NIL,
        };
        let index = match self.nodes_free.pop() {
            Some(index) => {
                self.nodes[index as usize] = node;
                index
            }
            None => {
                self.nodes.push(node);
                (self.nodes.len() - 1) as u32
            }
        };
        let lv = &mut self.levels[level as usize];
        lv.count += 1;
        lv.qty.0 += shown.0;
        lv.hidden.0 += qty.0 - shown.0;
        self.append(level, index);
        let previous = self.index.insert(order.order_id, index);
        assert!(previous.is_none(), "order id {} reused", order.order_id);
        self.update_id += 1;
    }

    /// Links node `index` at the back of `level`'s queue.
    fn append(&mut self, level: u32, index: u32) {
        let tail = self.levels[level as usize].tail;
        let node = &mut self.nodes[index as usize];
        node.prev = tail;
        node.next = NIL;
        match tail {
            NIL => self.levels[level as usize].head = index,
            tail => self.nodes[tail as usize].next = index,
        }
        self.levels[level as usize].tail = index;
    }

    /// Takes node `index` out of its level's queue (counts unchanged).
    fn unlink(&mut self, index: u32) {
        let node = self.nodes[index as usize];
        if node.prev != NIL {
            self.nodes[node.prev as usize].next = node.next;
        }
        if node.next != NIL {
            self.nodes[node.next as usize].prev = node.prev;
        }
        let level = &mut self.levels[node.level as usize];
        if level.head == index {
            level.head = node.next;
        }
        if level.tail == index {
            level.tail = node.prev;
        }
    }

    fn level_for(&mut self, side: Side, price: Price) -> u32 {
        let position = match self.ladder(side).find(price) {
            Ok(position) => return self.ladder(side).levels[position].1,
            Err(position) => position,
        };
        let level = Level {
            price,
            qty: Qty::ZERO,
            hidden: Qty::ZERO,
            count: 0,
            head: NIL,
            tail: NIL,
        };
        let index = match self.levels_free.pop() {
            Some(index) => {
                self.levels[index as usize] = level;
                index
            }
            None => {
                self.levels.push(level);
                (self.levels.len() - 1) as u32
            }
        };
        let ladder = self.ladder_mut(side);
        let key = ladder.key(price);
        ladder.levels.insert(position, (key, index));
        index
    }

    /// Unlinks a resting order and frees its slot (and its level if empty).
    fn remove(&mut self, index: u32) {
        self.index.remove(&self.nodes[index as usize].order_id);
        self.free_node(index);
    }

    /// [`Book::remove`] of an order already out of the index.
    fn free_node(&mut self, index: u32) {
        let node = self.nodes[index as usize];
        self.unlink(index);
        let level = &mut self.levels[node.level as usize];
        level.count -= 1;
        level.qty.0 -= node.shown.0;
        level.hidden.0 -= node.qty.0 - node.shown.0;
        let empty = level.count == 0;
        self.nodes_free.push(index);
        if empty {
            let ladder = self.ladder_mut(node.side);
            // Takers empty the best level, which is last.
            if ladder.best() == Some(node.level) {
                ladder.levels.pop();
            } else {
                match ladder.find(node.price) {
                    Ok(position) => {
                        ladder.levels.remove(position);
                    }
                    Err(_) => unreachable!("a resting order's level is on its ladder"),
                }
            }
            self.levels_free.push(node.level);
        }
    }

    /// Takes a resting or held order off; its OCO partner, if it has
    /// one on the book (the caller takes that off too).
    fn cancel(&mut self, order_id: OrderId, user: UserId) -> Result<Option<OrderId>, EngineError> {
        if let Entry::Occupied(entry) = self.index.entry(order_id) {
            let index = *entry.get();
            let node = self.nodes[index as usize];
            if node.user != user {
                return Err(EngineError::UnknownOrder);
            }
            entry.remove();
            self.free_node(index);
            self.update_id += 1;
            return Ok((node.partner != 0).then_some(node.partner));
        }
        match self.stop_index.entry(order_id) {
            Entry::Occupied(entry) if entry.get().user == user => {
                let place = entry.remove();
                let order = self.unhold_at(place);
                Ok((order.oco_partner != 0).then_some(order.oco_partner))
            }
            _ => Err(EngineError::UnknownOrder),
        }
    }

    /// A trailing stop's position among the trailing stops.
    fn trailing_position(&self, seq: u64) -> usize {
        match self.trailing.binary_search_by_key(&seq, |t| t.seq) {
            Ok(position) => position,
            Err(_) => unreachable!("an indexed trailing stop is held"),
        }
    }

    /// Shrinks an order where it is: a resting order keeps its place in
    /// its level's queue, a held stop its place among the stops. An
    /// iceberg loses hidden quantity first; its visible part shrinks only
    /// when less than it is left. Whether anything of it is left (`false`:
    /// it left the book).
    fn amend(&mut self, amend: &AmendOrder) -> Result<bool, EngineError> {
        if let Some(&index) = self.index.get(&amend.order_id) {
            let node = self.nodes[index as usize];
            if node.user != amend.user {
                return Err(EngineError::UnknownOrder);
            }
            self.update_id += 1;
            if node.qty <= amend.reduce_by {
                self.remove(index);
                return Ok(false);
            }
            let qty = Qty(node.qty.0 - amend.reduce_by.0);
            let shown = node.shown.min(qty);
            let slot = &mut self.nodes[index as usize];
            (slot.qty, slot.shown) = (qty, shown);
            let level = &mut self.levels[node.level as usize];
            level.qty.0 -= node.shown.0 - shown.0;
            level.hidden.0 -= (node.qty.0 - node.shown.0) - (qty.0 - shown.0);
            return Ok(true);
        }
        let place = match self.stop_index.get(&amend.order_id) {
            Some(&place) if place.user == amend.user => place,
            _ => return Err(EngineError::UnknownOrder),
        };
        let order = if place.trailing {
            let position = self.trailing_position(place.seq);
            &mut self.trailing[position].order
        } else {
            let ladder = self.stop_ladder_mut(place.upward);
            let Ok(position) = ladder.position(place.stop_price, place.seq) else {
                unreachable!("an indexed stop is on its ladder")
            };
            &mut ladder.stops[position].order
        };
        if order.qty <= amend.reduce_by {
            self.unhold(amend.order_id);
            return Ok(false);
        }
        order.qty.0 -= amend.reduce_by.0;
        order.quote = order.quote.min(amend.quote);
        Ok(true)
    }

    fn stop_ladder_mut(&mut self, upward: bool) -> &mut StopLadder {
        if upward {
            &mut self.stops_up
        } else {
            &mut self.stops_down
        }
    }

    fn hold(&mut self, order: &PlaceOrder) {
        let upward = order.kind.triggers_upward(order.side);
        let seq = self.next_stop_seq;
        self.next_stop_seq += 1;
        let trailing = order.trailing_delta > 0;
        let place = StopPlace {
            upward,
            stop_price: order.stop_price,
            seq,
            user: order.user,
            trailing,
        };
        let previous = self.stop_index.insert(order.order_id, place);
        assert!(previous.is_none(), "order id {} reused", order.order_id);
        if trailing {
            self.hold_trailing(seq, *order);
        } else {
            self.stop_ladder_mut(upward).insert(HeldStop { seq, order: *order });
        }
    }

    /// A trailing stop begins tracking from the last price when it has no
    /// stop price or the last price already meets it; else at the first
    /// trade that meets it (or, with no trade yet, the first trade).
    fn hold_trailing(&mut self, seq: u64, order: PlaceOrder) {
        assert!(self.trailing.len() < TRAILING_STOPS_PER_BOOK_MAX);
        let upward = order.kind.triggers_upward(order.side);
        let best = self
            .last_price
            .filter(|&last| order.stop_price.0 == 0 || triggered_at(upward, order.stop_price, last));
        self.trailing.push(TrailingStop {
            seq,
            order,
            best,
            fired: false,
        });
    }

    /// Takes a held stop out of its ladder (or the trailing stops) and the
    /// index.
    fn unhold(&mut self, order_id: OrderId) -> PlaceOrder {
        let Some(place) = self.stop_index.remove(&order_id) else {
            unreachable!("unheld an unknown stop {order_id}")
        };
        self.unhold_at(place)
    }

    /// Takes the held stop at `place`, already out of the index, out of
    /// its ladder (or the trailing stops).
    fn unhold_at(&mut self, place: StopPlace) -> PlaceOrder {
        if place.trailing {
            let position = self.trailing_position(place.seq);
            return self.trailing.remove(position).order;
        }
        let ladder = self.stop_ladder_mut(place.upward);
        match ladder.position(place.stop_price, place.seq) {
            Ok(position) => ladder.remove(position).order,
            Err(_) => unreachable!("an indexed stop is on its ladder"),
        }
    }

    fn would_trigger(&self, order: &PlaceOrder) -> bool {
        match self.last_price {
            Some(last) => triggered(order, last),
            None => false,
        }
    }

    /// Fires held stops, oldest first, until none is triggered; each firing
    /// may move the last price and so fire others.
    fn run_stops(&mut self, out: &mut Vec<ToAccount>) {
        while self.stops_may_fire() {
            let Some(mut order) = self.next_fired() else {
                break;
            };
            self.stop_index.remove(&order.order_id);
            // A fired order of an OCO pair takes the other off first, and
            // what it leaves resting is a pair no more.
            if order.oco_partner != 0 {
                self.drop_partner(order.oco_partner, OrderStatus::Expired, order.time_ms, out);
                order.oco_partner = 0;
            }
            let status = self.execute(&order, out);
            if status.is_final() {
                out.push(ToAccount::Done {
                    order_id: order.order_id,
                    user: order.user,
                    status,
                    time_ms: order.time_ms,
                });
            }
        }
    }

    /// Whether the last price triggers the next stop of either ladder or a
    /// trade fired a trailing stop: the check every taker pays, so it
    /// reads no stop.
    #[inline]
    fn stops_may_fire(&self) -> bool {
        let Some(last) = self.last_price else {
            return false;
        };
        // `|`: both are read anyway, and neither is a branch to predict.
        (self.stops_up.may_fire(last) | self.stops_down.may_fire(last)) || self.trailing.iter().any(|t| t.fired)
    }

    /// Takes out the oldest held stop the last price triggers or a trade
    /// fired, if any.
    fn next_fired(&mut self) -> Option<PlaceOrder> {
        let last = self.last_price?;
        let up = self
            .stops_up
            .oldest_triggered(last)
            .map(|(at, seq)| (seq, Held::Up(at)));
        let down = self
            .stops_down
            .oldest_triggered(last)
            .map(|(at, seq)| (seq, Held::Down(at)));
        let trailing = self.trailing.iter().position(|t| t.fired);
        let trailing = trailing.map(|at| (self.trailing[at].seq, Held::Trailing(at)));
        let oldest = [up, down, trailing].into_iter().flatten().min_by_key(|&(seq, _)| seq)?;
        let order = match oldest.1 {
            Held::Up(at) => self.stops_up.remove(at).order,
            Held::Down(at) => self.stops_down.remove(at).order,
            Held::Trailing(at) => self.trailing.remove(at).order,
        };
        Some(order)
    }

    fn ladder(&self, side: Side) -> &Ladder {
        match side {
            Side::Buy => &self.bids,
            Side::Sell => &self.asks,
        }
    }

    fn ladder_mut(&mut self, side: Side) -> &mut Ladder {
        match side {
            Side::Buy => &mut self.bids,
            Side::Sell => &mut self.asks,
        }
    }

    fn crosses_best(&self, side: Side, price: Price) -> bool {
        match self.best(side.opposite()) {
            Some((best, _)) => crosses(side, price, best),
            None => false,
        }
    }

    fn is_crossed(&self) -> bool {
        match (self.best_bid(), self.best_ask()) {
            (Some((bid, _)), Some((ask, _))) => bid >= ask,
            _ => false,
        }
    }

    fn best(&self, side: Side) -> Option<(Price, Qty)> {
        let level = &self.levels[self.ladder(side).best()? as usize];
        Some((level.price, level.qty))
    }

    /// Best bid price and its total quantity, O(1).
    pub fn best_bid(&self) -> Option<(Price, Qty)> {
        self.best(Side::Buy)
    }

    /// Best ask price and its total quantity, O(1).
    pub fn best_ask(&self) -> Option<(Price, Qty)> {
        self.best(Side::Sell)
    }

    /// The price a MARKET order of `side` would meet first (the best
    /// opposite price), else the last trade price; `None` when there is
    /// neither. Sizes the lock of a MARKET buy by quantity.
    pub fn reference_price(&self, side: Side) -> Option<Price> {
        let best = match side {
            Side::Buy => self.best_ask(),
            Side::Sell => self.best_bid(),
        };
        best.map(|(price, _)| price).or(self.last_price())
    }

    pub fn last_price(&self) -> Option<Price> {
        self.last_price
    }

    /// Increases with every change to the resting orders (lastUpdateId).
    pub fn update_id(&self) -> u64 {
        self.update_id
    }

    /// The top `levels` of each side, best first, into reused vectors;
    /// returns the update id the snapshot reflects.
    pub fn depth(&self, levels: usize, bids: &mut Vec<(Price, Qty)>, asks: &mut Vec<(Price, Qty)>) -> u64 {
        let levels = levels.min(DEPTH_LEVELS_MAX);
        for (ladder, out) in [(&self.bids, bids), (&self.asks, asks)] {
            out.clear();
            let top = ladder.levels.iter().rev().take(levels);
            out.extend(top.map(|&(_, l)| (self.levels[l as usize].price, self.levels[l as usize].qty)));
        }
        self.update_id
    }

    /// How many trades the book has made.
    pub fn trades_count(&self) -> u64 {
        self.next_trade_id - 1
    }

    /// Resting orders plus held stops.
    pub fn open_orders_count(&self) -> usize {
        self.index.len() + self.stop_index.len()
    }

    /// Whether `order_id` rests or is held here.
    pub fn contains(&self, order_id: OrderId) -> bool {
        self.index.contains_key(&order_id) || self.stop_index.contains_key(&order_id)
    }

    /// Remaining quantity of a resting order (None for held stops).
    pub fn resting_qty(&self, order_id: OrderId) -> Option<Qty> {
        let &index = self.index.get(&order_id)?;
        Some(self.nodes[index as usize].qty)
    }

    /// A digest of the whole state, walking the ladders best first.
    pub fn state_hash(&self) -> u64 {
        let mut h = StateHasher::default();
        h.u64(u64::from(self.market.0));
        for ladder in [&self.bids, &self.asks] {
            h.u64(ladder.levels.len() as u64);
            for &(_, level) in ladder.levels.iter().rev() {
                let level = &self.levels[level as usize];
                h.i64(level.price.0);
                h.i64(level.qty.0);
                let mut at = level.head;
                while at != NIL {
                    let node = &self.nodes[at as usize];
                    h.u64(node.order_id);
                    h.u64(node.user);
                    h.i64(node.qty.0);
                    h.i64(node.shown.0);
                    h.u64(node.partner);
                    at = node.next;
                }
            }
        }
        for stop in self.stops_up.stops.iter().chain(&self.stops_down.stops) {
            h.u64(stop.order.order_id);
            h.u64(stop.order.user);
            h.i64(stop.order.stop_price.0);
        }
        for stop in &self.trailing {
            h.u64(stop.order.order_id);
            h.u64(stop.order.user);
            h.i64(stop.best.map_or(-1, |p| p.0));
        }
        for waiting in &self.oco_waiting {
            h.u64(waiting.order_id);
        }
        h.i64(self.last_price.map_or(-1, |p| p.0));
        h.u64(self.update_id);
        h.u64(self.next_trade_id);
        h.finish()
    }

    /// Full structural check, O(orders); tests call it after every operation.
    pub fn check_invariants(&self) {
        if let Err(e) = self.verify() {
            panic!("book of market {}: {e}", self.market.0);
        }
    }

    /// The invariants as an error: both ladders sorted, every level's
    /// orders linked, priced and summed as the level says, every node and
    /// level used once or listed free once, the index naming each resting
    /// order, the book not crossed, the held stops sorted, indexed and not
    /// yet due. Safe on any content (each index is checked before use and
    /// each walk is bounded), so a book restored from a snapshot whose
    /// checksum holds is still refused when it is not one this engine
    /// makes.
    pub fn verify(&self) -> Result<(), String> {
        if (self.bids.side, self.asks.side) != (Side::Buy, Side::Sell)
            || !self.stops_up.upward
            || self.stops_down.upward
        {
            return Err("a ladder on the wrong side".into());
        }
        let mut nodes_used = vec![false; self.nodes.len()];
        // Resting orders of OCO pairs and their partners.
        let mut paired: Vec<(OrderId, OrderId)> = Vec::new();
        let mut levels_used = vec![false; self.levels.len()];
        for ladder in [&self.bids, &self.asks] {
            if !ladder.levels.windows(2).all(|w| w[0].0 < w[1].0) {
                return Err(format!("the {:?} ladder is out of order", ladder.side));
            }
            for &(key, level_index) in &ladder.levels {
                let level = self
                    .levels
                    .get(level_index as usize)
                    .filter(|_| !std::mem::replace(&mut levels_used[level_index as usize], true))
                    .ok_or_else(|| format!("level {level_index} is out of range or listed twice"))?;
                if level.price.0 <= 0 || key != ladder.key(level.price) {
                    return Err(format!(
                        "level {level_index} at price {} under key {key}",
                        level.price.0
                    ));
                }
                let (mut qty, mut hidden, mut count, mut at, mut prev) = (0_i128, 0_i128, 0_u32, level.head, NIL);
                while at != NIL {
                    let node = self
                        .nodes
                        .get(at as usize)
                        .filter(|_| !std::mem::replace(&mut nodes_used[at as usize], true))
                        .ok_or_else(|| format!("level {level_index} links node {at}, out of range or taken"))?;
                    let shown_fits = match node.peak.0 {
                        0 => node.shown == node.qty,
                        peak => peak > 0 && node.shown.0 <= peak,
                    };
                    let fits = node.qty.0 > 0
                        && node.shown.0 > 0
                        && node.shown <= node.qty
                        && shown_fits
                        && node.price == level.price
                        && node.side == ladder.side
                        && node.level == level_index
                        && node.prev == prev
                        && self.index.get(&node.order_id) == Some(&at);
                    if !fits {
                        return Err(format!("order {} does not fit level {level_index}", node.order_id));
                    }
                    if node.partner != 0 {
                        paired.push((node.order_id, node.partner));
                    }
                    qty += i128::from(node.shown.0);
                    hidden += i128::from(node.qty.0 - node.shown.0);
                    count += 1;
                    prev = at;
                    at = node.next;
                }
                let sums = qty == i128::from(level.qty.0) && hidden == i128::from(level.hidden.0);
                if level.tail != prev || count == 0 || count != level.count || !sums {
                    return Err(format!("level {level_index}'s tail, count or quantity is wrong"));
                }
            }
        }
        let resting = nodes_used.iter().filter(|&&u| u).count();
        if resting != self.index.len() {
            return Err(format!("{} orders indexed, {resting} resting", self.index.len()));
        }
        verify_free_list("node", &mut nodes_used, &self.nodes_free)?;
        verify_free_list("level", &mut levels_used, &self.levels_free)?;
        if self.is_crossed() {
            return Err("the book is crossed".into());
        }
        let mut held = 0;
        for ladder in [&self.stops_up, &self.stops_down] {
            for stop in &ladder.stops {
                let order = &stop.order;
                let place = StopPlace {
                    upward: ladder.upward,
                    stop_price: order.stop_price,
                    seq: stop.seq,
                    user: order.user,
                    trailing: false,
                };
                let fits = order.stop_price.0 > 0
                    && order.trailing_delta == 0
                    && ladder.upward == order.kind.triggers_upward(order.side)
                    && self.stop_index.get(&order.order_id) == Some(&place)
                    && self.last_price.is_none_or(|last| !triggered(order, last));
                if !fits {
                    return Err(format!("held stop {} does not fit its ladder", order.order_id));
                }
                held += 1;
            }
            if !ladder
                .stops
                .windows(2)
                .all(|w| ladder.key_of(&w[0]) < ladder.key_of(&w[1]))
            {
                return Err("a stop ladder is out of order".into());
            }
            // After the stop prices are known to be positive.
            if ladder.fires_at != ladder.next_fires_at() {
                return Err("a stop ladder's next stop is not where it says".into());
            }
        }
        held += self.verify_trailing()?;
        if held != self.stop_index.len() {
            return Err(format!("{} stops indexed, {held} held", self.stop_index.len()));
        }
        self.verify_partners(&paired)
    }

    /// Every OCO pair on the book is whole: a resting order of a pair
    /// names a held partner that names it back, and a held order of a
    /// pair names a partner on the book (named back when it rests);
    /// every waiting first order is one, waits once and is not on it.
    fn verify_partners(&self, paired: &[(OrderId, OrderId)]) -> Result<(), String> {
        let on_book = |id: &OrderId| self.index.contains_key(id) || self.stop_index.contains_key(id);
        let held = self
            .stops_up
            .stops
            .iter()
            .chain(&self.stops_down.stops)
            .map(|s| &s.order);
        let held: Vec<&PlaceOrder> = held.chain(self.trailing.iter().map(|t| &t.order)).collect();
        let partner_of: std::collections::HashMap<OrderId, OrderId> =
            held.iter().map(|o| (o.order_id, o.oco_partner)).collect();
        let held_partner = |id: &OrderId| partner_of.get(id).copied();
        let resting_partner = |id: &OrderId| self.index.get(id).map(|&at| self.nodes[at as usize].partner);
        for &(order, partner) in paired {
            if held_partner(&partner) != Some(order) {
                return Err(format!("OCO order {order} and its partner {partner} do not fit"));
            }
        }
        for order in &held {
            let partner = order.oco_partner;
            let named_back = match resting_partner(&partner) {
                Some(named) => named == order.order_id,
                None => held_partner(&partner) == Some(order.order_id),
            };
            if partner != 0 && !named_back {
                return Err(format!("held OCO order {} has no partner {partner}", order.order_id));
            }
        }
        if self.oco_waiting.len() > OCO_WAITING_MAX {
            return Err(format!("{} OCO orders waiting", self.oco_waiting.len()));
        }
        for (i, waiting) in self.oco_waiting.iter().enumerate() {
            let twice = self.oco_waiting[..i].iter().any(|w| w.order_id == waiting.order_id);
            if !waiting.oco_first || waiting.oco_partner == 0 || twice || on_book(&waiting.order_id) {
                return Err(format!("waiting OCO order {} does not fit", waiting.order_id));
            }
        }
        Ok(())
    }

    /// The trailing stops: in arrival order, indexed, within their bound,
    /// none fired at rest, and none whose best price the last price has
    /// already trailed past. Returns how many there are.
    fn verify_trailing(&self) -> Result<usize, String> {
        if self.trailing.len() > TRAILING_STOPS_PER_BOOK_MAX || !self.trailing.windows(2).all(|w| w[0].seq < w[1].seq) {
            return Err("the trailing stops are out of order or too many".into());
        }
        for stop in &self.trailing {
            let order = &stop.order;
            let place = StopPlace {
                upward: order.kind.triggers_upward(order.side),
                stop_price: order.stop_price,
                seq: stop.seq,
                user: order.user,
                trailing: true,
            };
            let due = match (stop.best, self.last_price) {
                (Some(best), Some(last)) => trailed_past(order.side == Side::Sell, best, last, order.trailing_delta),
                _ => false,
            };
            let fits = order.kind.is_stop()
                && order.trailing_delta > 0
                && i64::from(order.trailing_delta) < BIPS
                && !stop.fired
                && !due
                && self.stop_index.get(&order.order_id) == Some(&place);
            if !fits {
                return Err(format!("trailing stop {} does not fit", order.order_id));
            }
        }
        Ok(self.trailing.len())
    }
}

/// Marks each of `free` (slots of a node or level arena) in `used`:
/// each must be in range and not used, and then every slot must be one
/// or the other.
fn verify_free_list(what: &str, used: &mut [bool], free: &[u32]) -> Result<(), String> {
    for &slot in free {
        match used.get_mut(slot as usize) {
            Some(taken) if !*taken => *taken = true,
            _ => return Err(format!("free {what} {slot} is taken or out of range")),
        }
    }
    match used.iter().all(|&u| u) {
        true => Ok(()),
        false => Err(format!("a {what} is neither used nor free")),
    }
}

fn crosses(taker: Side, limit: Price, level: Price) -> bool {
    match taker {
        Side::Buy => level <= limit,
        Side::Sell => level >= limit,
    }
}

fn triggered(order: &PlaceOrder, last: Price) -> bool {
    triggered_at(order.kind.triggers_upward(order.side), order.stop_price, last)
}

fn triggered_at(upward: bool, stop_price: Price, last: Price) -> bool {
    if upward {
        last >= stop_price
    } else {
        last <= stop_price
    }
}

/// The book's answer to a `Place`.
fn placed(order: &PlaceOrder, status: OrderStatus, reject: Option<EngineError>) -> ToAccount {
    ToAccount::Placed {
        order_id: order.order_id,
        user: order.user,
        status,
        reject,
        time_ms: order.time_ms,
    }
}

fn done(node: &Node, status: OrderStatus, time_ms: u64) -> ToAccount {
    ToAccount::Done {
        order_id: node.order_id,
        user: node.user,
        status,
        time_ms,
    }
}
