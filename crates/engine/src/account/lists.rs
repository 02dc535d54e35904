//! Order lists (OCO, OTO, OTOCO) in the account machine.
//!
//! A list is its orders plus a `ListState`: the orders are ordinary open
//! orders (`OrderView::order_list_id` names the list) and the state says
//! how they depend on each other.
//!
//! - **OCO**: both orders go to the book as one pair (`PlaceOrder::
//!   oco_partner`); the book takes one off when the other trades, fires
//!   or is canceled. Both sell (or buy) the same quantity, so they share
//!   one lock: the larger of the two, held by whichever order may still
//!   spend it (it moves to the other one when the first leaves the book
//!   or when the other trades first).
//! - **OTO / OTOCO**: only the working order is placed and locked; the
//!   pending order (or OCO pair) waits here, `PENDING_NEW` with nothing
//!   locked, and is locked and placed when the working order has filled
//!   completely. Any other end of the working order ends them too:
//!   CANCELED with it, else EXPIRED; so does a cancel of a pending order.
//!
//! A list is done (`ALL_DONE`) when all its orders are final; it then
//! moves to the user's finished lists.
//!
//! **Invariant:** every open order with an `order_list_id` belongs to an
//! open list of this machine, and a pending order is locked at zero.

use super::{check_filters, check_params, AccountEvent};
use super::{
    new_view, Accounts, Open, OrderRef, ALGO_ORDERS_PER_USER_MARKET_MAX, ICEBERG_ORDERS_PER_USER_MARKET_MAX, NIL,
    OPEN_ORDERS_PER_USER_MARKET_MAX,
};
use crate::error::ListReason;
use crate::msg::{PlaceOrder, ToBook};
use crate::num::{Amount, Price};
use crate::order::{AssetId, OrderId, OrderListView, OrderQty, OrderRequest, OrderStatus, OrderType, Side, UserId};
use crate::order::{ClientOrderId, ListKind, ListOrderStatus, ListRequest, ListStatusType, MarketId};
use crate::EngineError;

/// Open order lists one user may have in one market (Binance's
/// MAX_NUM_ORDER_LISTS; tradsys's bound).
pub const ORDER_LISTS_PER_USER_MARKET_MAX: usize = 100;
/// Finished lists a user's list history returns.
pub const ORDER_LISTS_CLOSED_PER_USER_MAX: usize = 100;
/// Finished lists one machine's ring holds, over all its users.
pub const ORDER_LISTS_CLOSED_PER_MACHINE_MAX: usize = 1 << 14;
/// Open lists one machine makes room for up front.
pub const ORDER_LISTS_RESERVED_COUNT: usize = 1 << 14;

const _: () = assert!(ORDER_LISTS_CLOSED_PER_MACHINE_MAX.is_power_of_two());
const _: () = assert!(ORDER_LISTS_CLOSED_PER_USER_MAX <= ORDER_LISTS_CLOSED_PER_MACHINE_MAX);

/// How a list operation names its list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum ListRef {
    Id(u64),
    Client(ClientOrderId),
}

/// An open list: what clients read, the requests of orders still pending,
/// how many first answers from the book it still waits for, and whether a
/// cancel of the whole list is on its way.
#[derive(Clone, Copy, Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(super) struct ListState {
    pub(super) view: OrderListView,
    requests: [OrderRequest; 3],
    awaiting: u8,
    reject: Option<EngineError>,
    canceling: bool,
}

impl ListState {
    /// The list's part of `Accounts::state_hash`.
    pub(super) fn hash_into(&self, h: &mut crate::hash::StateHasher) {
        h.u64(self.view.order_list_id);
        h.u64(self.view.status_type as u64);
        h.u64(self.view.order_status as u64);
        h.u64(u64::from(self.awaiting));
        h.u64(u64::from(self.canceling));
        h.u64(self.view.update_time_ms);
    }
}

/// The OCO pair among a list's orders: their places in `orders`.
fn oco_pair(kind: ListKind) -> Option<(usize, usize)> {
    match kind {
        ListKind::Oco => Some((0, 1)),
        ListKind::Otoco => Some((1, 2)),
        ListKind::Oto => None,
    }
}

/// Whether an OCO order type takes profit (a LIMIT_MAKER or take-profit)
/// rather than stopping a loss.
fn takes_profit(kind: OrderType) -> bool {
    matches!(
        kind,
        OrderType::LimitMaker | OrderType::TakeProfit | OrderType::TakeProfitLimit
    )
}

/// The price that puts an OCO order above or below: a LIMIT_MAKER's
/// price, a stop's stop price (none for a trailing stop without one).
fn oco_price(order: &OrderRequest) -> Option<Price> {
    match order.kind {
        OrderType::LimitMaker => order.price,
        _ => order.stop_price,
    }
}

/// Binance's rules for an OCO pair, `above` and `below`, of one side.
fn check_oco(above: &OrderRequest, below: &OrderRequest) -> Result<(), EngineError> {
    let reject = |reason| Err(EngineError::ListRejected(reason));
    let allowed = |k: OrderType| k == OrderType::LimitMaker || k.is_stop();
    if !allowed(above.kind) || !allowed(below.kind) {
        return reject(ListReason::OcoOrderType);
    }
    if above.kind == OrderType::LimitMaker && below.kind == OrderType::LimitMaker {
        return reject(ListReason::BothLimit);
    }
    if above.side != below.side || above.qty != below.qty || !matches!(above.qty, OrderQty::Base(_)) {
        return reject(ListReason::OcoOrderType);
    }
    let buy = above.side == Side::Buy;
    // A sell takes profit above and stops its loss below; a buy the
    // reverse.
    for (order, is_above) in [(above, true), (below, false)] {
        let profit = takes_profit(order.kind);
        if profit != (is_above != buy) {
            let limit = order.kind == OrderType::LimitMaker;
            return reject(match (buy, profit, limit) {
                (true, true, true) => ListReason::BuyLimitMustBeBelow,
                (true, true, false) => ListReason::BuyTakeProfitMustBeBelow,
                (true, false, _) => ListReason::BuyStopLossMustBeAbove,
                (false, true, true) => ListReason::SellLimitMustBeAbove,
                (false, true, false) => ListReason::SellTakeProfitMustBeAbove,
                (false, false, _) => ListReason::SellStopLossMustBeBelow,
            });
        }
    }
    if let (Some(high), Some(low)) = (oco_price(above), oco_price(below)) {
        if high <= low {
            return reject(ListReason::PriceRelationship);
        }
    }
    Ok(())
}

/// Binance's rules for the shape of a list, beyond each order's own.
fn check_shape(request: &ListRequest) -> Result<(), EngineError> {
    let orders = &request.orders;
    match request.kind {
        ListKind::Oco => check_oco(&orders[0], &orders[1]),
        ListKind::Oto | ListKind::Otoco => {
            if !matches!(orders[0].kind, OrderType::Limit | OrderType::LimitMaker) {
                return Err(EngineError::ListRejected(ListReason::WorkingType));
            }
            let pending = &orders[1..request.kind.legs()];
            if pending.iter().any(|o| matches!(o.qty, OrderQty::Quote(_))) {
                return Err(EngineError::ListRejected(ListReason::PendingQuoteQty));
            }
            match request.kind {
                ListKind::Otoco => check_oco(&orders[1], &orders[2]),
                _ => Ok(()),
            }
        }
    }
}

impl Accounts {
    /// Validates and places an order list for `user`: its orders take the
    /// ids `ids` (in the kind's order), the list the first of them. The
    /// answer is one `AccountEvent::ListPlaced` once the book has answered
    /// for what went to it; a list the book refuses is refused whole.
    #[allow(clippy::too_many_arguments)]
    pub fn place_list(
        &mut self,
        user: UserId,
        request: &ListRequest,
        ids: [OrderId; 3],
        reference: Option<Price>,
        time_ms: u64,
        out: &mut Vec<ToBook>,
    ) -> Result<(), EngineError> {
        let kind = request.kind;
        let legs = kind.legs();
        let orders = &request.orders[..legs];
        let market = orders[0].market;
        assert!(usize::from(market.0) < self.markets.len());
        assert!(orders.iter().all(|o| o.market == market), "a list spans markets");
        let spec = &self.specs[usize::from(market.0)];
        for order in orders {
            check_params(order)?;
            check_filters(spec, order)?;
        }
        check_shape(request)?;
        if self.is_frozen(user, market, time_ms) {
            return Err(EngineError::MmpFrozen);
        }
        for (i, order) in orders.iter().enumerate() {
            if let Some(client) = order.client_order_id {
                let twice = orders[..i].iter().any(|o| o.client_order_id == Some(client));
                if twice || self.find_open(user, market, OrderRef::Client(client)).is_some() {
                    return Err(EngineError::DuplicateOrder);
                }
            }
        }
        self.check_list_room(user, market, request)?;
        // Locks: the working orders' (one shared lock for an OCO pair).
        let working = 0..kind.working();
        let (plans, count) = self.plans(&request.orders, &ids, working, user, reference, time_ms)?;
        let plans = &plans[..count];
        let (asset, amount) = self.shared_lock(plans);
        let user_slot = self.user_slot(user);
        let balance = &mut self.users[user_slot as usize].balances[usize::from(asset.0)];
        if balance.free < amount {
            return Err(EngineError::InsufficientBalance);
        }
        balance.free.0 -= amount.0;
        balance.locked.0 += amount.0;
        let list_id = ids[0];
        for (i, order) in orders.iter().enumerate() {
            let mut view = new_view(order, user, ids[i], time_ms);
            view.order_list_id = list_id;
            if i >= kind.working() {
                view.status = OrderStatus::PendingNew;
            }
            self.insert_open(Open {
                view,
                asset: self.lock_asset(market, order.side),
                locked: if i == 0 { amount } else { Amount::ZERO },
                by_quote: false,
                amends: 0,
                user: user_slot,
                prev: NIL,
                next: NIL,
            });
        }
        let mut view = OrderListView {
            order_list_id: list_id,
            market,
            user,
            kind,
            list_client_order_id: request.list_client_order_id,
            status_type: ListStatusType::ExecStarted,
            order_status: ListOrderStatus::Executing,
            orders: [0; 3],
            time_ms,
            update_time_ms: time_ms,
        };
        view.orders[..legs].copy_from_slice(&ids[..legs]);
        self.lists.insert(
            list_id,
            ListState {
                view,
                requests: request.orders,
                awaiting: count as u8,
                reject: None,
                canceling: false,
            },
        );
        send_pair_or_one(plans, out);
        Ok(())
    }

    /// The lock plans of `requests[range]` (one order, or an OCO pair),
    /// in a fixed array: placing a list allocates nothing.
    #[allow(clippy::too_many_arguments)]
    fn plans(
        &self,
        requests: &[OrderRequest; 3],
        ids: &[OrderId; 3],
        range: std::ops::Range<usize>,
        user: UserId,
        reference: Option<Price>,
        time_ms: u64,
    ) -> Result<([PlaceOrder; 2], usize), EngineError> {
        assert!(range.len() <= 2);
        let first = self.lock_plan(&requests[range.start], ids[range.start], user, reference, time_ms)?;
        let mut plans = [first; 2];
        for (slot, i) in range.clone().enumerate().skip(1) {
            plans[slot] = self.lock_plan(&requests[i], ids[i], user, reference, time_ms)?;
        }
        Ok((plans, range.len()))
    }

    /// The asset an order of `side` locks in `market`.
    fn lock_asset(&self, market: MarketId, side: Side) -> AssetId {
        let info = self.markets[usize::from(market.0)];
        match side {
            Side::Buy => info.quote,
            Side::Sell => info.base,
        }
    }

    /// What one order, or an OCO pair of one side, locks: the most either
    /// may spend.
    fn shared_lock(&self, plans: &[PlaceOrder]) -> (AssetId, Amount) {
        let asset = self.lock_asset(plans[0].market, plans[0].side);
        let amount = plans
            .iter()
            .map(|p| match p.side {
                Side::Buy => p.quote,
                Side::Sell => Amount(p.qty.0),
            })
            .max()
            .unwrap_or(Amount::ZERO);
        (asset, amount)
    }

    /// MAX_NUM_ORDERS (a list counts all its orders), MAX_NUM_ALGO_ORDERS,
    /// MAX_NUM_ICEBERG_ORDERS, MAX_NUM_ORDER_LISTS and the list's client
    /// id among the user's open lists in the market: one walk of at most
    /// `OPEN_ORDERS_PER_USER_MARKET_MAX` open orders.
    fn check_list_room(&self, user: UserId, market: MarketId, request: &ListRequest) -> Result<(), EngineError> {
        let orders = &request.orders[..request.kind.legs()];
        let (mut open, mut algo, mut icebergs, mut lists) = (0, 0, 0, 0);
        if let Some(u) = self.user(user) {
            for o in self.open_list(u, market) {
                open += 1;
                algo += usize::from(o.view.kind.is_stop());
                icebergs += usize::from(o.view.iceberg_qty.0 > 0);
                let list = o.view.order_list_id;
                if list != 0 && self.first_open_leg(list) == Some(o.view.order_id) {
                    lists += 1;
                    let state = &self.lists[&list];
                    if state.view.list_client_order_id == request.list_client_order_id {
                        return Err(EngineError::ListRejected(ListReason::DuplicateList));
                    }
                }
            }
        }
        if open + orders.len() > OPEN_ORDERS_PER_USER_MARKET_MAX {
            return Err(EngineError::MaxNumOrders);
        }
        if algo + orders.iter().filter(|o| o.kind.is_stop()).count() > ALGO_ORDERS_PER_USER_MARKET_MAX {
            return Err(EngineError::MaxNumAlgoOrders);
        }
        if icebergs + orders.iter().filter(|o| o.iceberg_qty.is_some()).count() > ICEBERG_ORDERS_PER_USER_MARKET_MAX {
            return Err(EngineError::MaxNumIcebergOrders);
        }
        if lists >= ORDER_LISTS_PER_USER_MARKET_MAX {
            return Err(EngineError::ListRejected(ListReason::MaxNumOrderLists));
        }
        Ok(())
    }

    /// The first of a list's orders that is still open.
    fn first_open_leg(&self, list: u64) -> Option<OrderId> {
        let state = self.lists.get(&list)?;
        state
            .view
            .order_ids()
            .iter()
            .copied()
            .find(|id| self.orders.contains_key(id))
    }

    /// The other order of `order_id`'s OCO pair, if it has one.
    fn oco_partner(&self, list: u64, order_id: OrderId) -> Option<OrderId> {
        let state = self.lists.get(&list)?;
        let (a, b) = oco_pair(state.view.kind)?;
        let ids = state.view.orders;
        match order_id {
            id if id == ids[a] => Some(ids[b]),
            id if id == ids[b] => Some(ids[a]),
            _ => None,
        }
    }

    /// Before an order of an OCO pair spends: the pair's lock moves to it
    /// if its partner holds it.
    pub(super) fn take_pair_lock(&mut self, order_id: OrderId, list: u64) {
        let Some(partner) = self.oco_partner(list, order_id) else {
            return;
        };
        let Some(&from) = self.orders.get(&partner) else {
            return;
        };
        let Some(&to) = self.orders.get(&order_id) else {
            return;
        };
        let moved = std::mem::replace(&mut self.slots[from as usize].locked, Amount::ZERO);
        self.slots[to as usize].locked.0 += moved.0;
    }

    /// An order of a list is leaving: the pair's lock it holds moves to
    /// its partner while that one may still spend it.
    pub(super) fn pass_pair_lock(&mut self, order: &mut Open) {
        let list = order.view.order_list_id;
        let Some(partner) = self.oco_partner(list, order.view.order_id) else {
            return;
        };
        let Some(&to) = self.orders.get(&partner) else {
            return;
        };
        let partner = &mut self.slots[to as usize];
        if partner.view.status != OrderStatus::PendingNew {
            partner.locked.0 += order.locked.0;
            order.locked = Amount::ZERO;
        }
    }

    /// The book's first answer for an order of a list (`on_placed` has
    /// applied it). Whether the order is a list's: then `on_placed` sends
    /// no `Placed` of its own.
    pub(super) fn list_order_placed(&mut self, list: u64, reject: Option<EngineError>, events: &mut Vec<AccountEvent>) {
        let Some(state) = self.lists.get_mut(&list) else {
            return;
        };
        if state.awaiting == 0 {
            return;
        }
        state.awaiting -= 1;
        state.reject = state.reject.or(reject);
        if state.awaiting > 0 {
            return;
        }
        match state.reject {
            Some(reason) => {
                // The book refused the list: nothing of it existed.
                let ids = state.view;
                self.lists.remove(&list);
                for &id in ids.order_ids() {
                    if self.orders.contains_key(&id) {
                        self.forget(id);
                    }
                }
                events.push(AccountEvent::ListPlaced {
                    order_list_id: list,
                    result: Err(reason),
                });
            }
            None => {
                let view = state.view;
                // The pending orders are reported as Binance reports
                // them: accepted, PENDING_NEW.
                for &id in &view.order_ids()[view.kind.working()..] {
                    if let Some(order) = self.open(id).filter(|o| o.view.status == OrderStatus::PendingNew) {
                        events.push(AccountEvent::OrderUpdate(order.view));
                    }
                }
                events.push(AccountEvent::ListStatus(view));
                events.push(AccountEvent::ListPlaced {
                    order_list_id: list,
                    result: Ok(view),
                });
            }
        }
    }

    /// Whether a rejection of this list order ends it as a rejected
    /// order of a running list (a pending order the book refused), rather
    /// than as part of a list refused whole.
    pub(super) fn list_running(&self, list: u64) -> bool {
        self.lists.get(&list).is_some_and(|s| s.awaiting == 0)
    }

    /// An order of a list reached a final status.
    pub(super) fn list_order_done(
        &mut self,
        list: u64,
        order_id: OrderId,
        status: OrderStatus,
        time_ms: u64,
        out: &mut Vec<ToBook>,
        events: &mut Vec<AccountEvent>,
    ) {
        let Some(&state) = self.lists.get(&list) else {
            return;
        };
        let kind = state.view.kind;
        let working = kind != ListKind::Oco && order_id == state.view.orders[0];
        if working {
            let pending = &state.view.orders[1..kind.legs()];
            let waiting = pending.iter().all(|id| self.is_pending(*id));
            // Market maker protection refuses new orders while frozen,
            // pending ones too: they expire.
            let frozen = self.is_frozen(state.view.user, state.view.market, time_ms);
            if status == OrderStatus::Filled && waiting && !state.canceling && !frozen {
                self.place_pending(list, time_ms, out, events);
            } else {
                let end = match status {
                    _ if state.canceling => OrderStatus::Canceled,
                    OrderStatus::Canceled => OrderStatus::Canceled,
                    _ => OrderStatus::Expired,
                };
                self.end_pending(pending, end, time_ms, out, events);
            }
        }
        self.complete_if_done(list, time_ms, events);
    }

    fn is_pending(&self, order_id: OrderId) -> bool {
        self.open(order_id)
            .is_some_and(|o| o.view.status == OrderStatus::PendingNew)
    }

    /// Ends the pending orders of a list that never reached a book.
    fn end_pending(
        &mut self,
        pending: &[OrderId],
        status: OrderStatus,
        time_ms: u64,
        out: &mut Vec<ToBook>,
        events: &mut Vec<AccountEvent>,
    ) {
        for &id in pending {
            if !self.is_pending(id) {
                continue;
            }
            let view = self.finish(id, status, time_ms, out, events);
            if status == OrderStatus::Canceled {
                self.answer_cancel(id, Ok(view), time_ms, out, events);
            }
        }
    }

    /// The working order filled: the pending order (or pair) is locked
    /// and placed. Sized against the working order's price when it is a
    /// MARKET order. One the funds do not cover, or its price no longer
    /// does, EXPIRES (Binance's expiry reason REJECTED).
    fn place_pending(&mut self, list: u64, time_ms: u64, out: &mut Vec<ToBook>, events: &mut Vec<AccountEvent>) {
        let state = self.lists[&list];
        let kind = state.view.kind;
        let user = state.view.user;
        let ids = state.view.orders;
        let reference = Some(state.requests[0].price.unwrap_or(Price::ZERO));
        let pending = 1..kind.legs();
        let plans = self.plans(&state.requests, &ids, pending.clone(), user, reference, time_ms);
        let placed = plans.ok().and_then(|(plans, count)| {
            let (asset, amount) = self.shared_lock(&plans[..count]);
            let slot = self.orders[&ids[1]];
            let user_slot = self.slots[slot as usize].user;
            let balance = &mut self.users[user_slot as usize].balances[usize::from(asset.0)];
            if balance.free < amount {
                return None;
            }
            balance.free.0 -= amount.0;
            balance.locked.0 += amount.0;
            self.slots[slot as usize].locked = amount;
            Some((plans, count))
        });
        let Some((plans, count)) = placed else {
            self.end_pending(&ids[pending], OrderStatus::Expired, time_ms, out, events);
            return;
        };
        let plans = &plans[..count];
        for plan in plans {
            if let Some(open) = self.open_mut(plan.order_id) {
                open.view.status = OrderStatus::New;
                open.view.update_time_ms = time_ms;
                events.push(AccountEvent::OrderUpdate(open.view));
            }
        }
        send_pair_or_one(plans, out);
    }

    /// Moves a list whose orders are all final to the user's finished
    /// lists, ALL_DONE, and answers a cancel of it.
    fn complete_if_done(&mut self, list: u64, time_ms: u64, events: &mut Vec<AccountEvent>) {
        let Some(state) = self.lists.get(&list) else {
            return;
        };
        if state.view.order_ids().iter().any(|id| self.orders.contains_key(id)) {
            return;
        }
        let Some(mut state) = self.lists.remove(&list) else {
            return;
        };
        state.view.status_type = ListStatusType::AllDone;
        state.view.order_status = ListOrderStatus::AllDone;
        state.view.update_time_ms = time_ms;
        let view = state.view;
        let user_slot = self.user_slot(view.user);
        let u = &mut self.users[user_slot as usize];
        self.closed_lists.push(&mut u.lists, view);
        events.push(AccountEvent::ListStatus(view));
        if state.canceling {
            events.push(AccountEvent::ListCanceled {
                order_list_id: list,
                result: Ok(view),
            });
        }
    }

    /// Whether a cancel-all sends a cancel for `order_id`: for every
    /// order on a book, both orders of an OCO pair included (the first
    /// cancel takes the pair off and the second is answered unknown; but
    /// the account machine may not know yet that its book took one of
    /// them off with a trade), and none for a pending order (it ends with
    /// its working order).
    pub(super) fn cancels_for(open: &Open) -> bool {
        open.view.status != OrderStatus::PendingNew
    }

    /// A cancel-all is canceling the pending orders of the user's lists
    /// in `market`: they end CANCELED with their working orders, even one
    /// that fills before its cancel reaches it.
    pub(super) fn cancel_pending_lists(&mut self, user_slot: u32, market: MarketId) {
        let mut at = self.users[user_slot as usize].open[usize::from(market.0)].head;
        while at != NIL {
            let open = &self.slots[at as usize];
            if open.view.status == OrderStatus::PendingNew {
                if let Some(state) = self.lists.get_mut(&open.view.order_list_id) {
                    state.canceling = true;
                }
            }
            at = open.next;
        }
    }

    /// A cancel of a pending order (it is on no book) cancels its list:
    /// the list is marked canceling and the cancel goes to the working
    /// order, whose end then ends the pending orders CANCELED (even if it
    /// filled before the cancel reached it). The working order's id.
    pub(super) fn cancel_through_working(&mut self, order_id: OrderId) -> Option<OrderId> {
        let list = self.open(order_id)?.view.order_list_id;
        let state = self.lists.get_mut(&list)?;
        state.canceling = true;
        Some(state.view.orders[0])
    }

    /// DELETE /api/v3/orderList: cancels every open order of the list;
    /// the answer is one `AccountEvent::ListCanceled` when the list is
    /// done. Unknown lists fail here with -2011.
    pub fn cancel_list(
        &mut self,
        user: UserId,
        market: MarketId,
        target: ListRef,
        time_ms: u64,
        out: &mut Vec<ToBook>,
        events: &mut Vec<AccountEvent>,
    ) -> Result<u64, EngineError> {
        let list = self
            .find_open_list(user, market, target)
            .ok_or(EngineError::UnknownOrder)?;
        let Some(state) = self.lists.get_mut(&list) else {
            unreachable!("found list {list} is open")
        };
        state.canceling = true;
        let view = state.view;
        for &order_id in view.order_ids() {
            if self.open(order_id).is_some_and(Self::cancels_for) {
                out.push(ToBook::Cancel {
                    market,
                    order_id,
                    user,
                    time_ms,
                });
            }
        }
        // A list of pending orders only cannot be: the working order is
        // open while they wait. Done already? Then answer now.
        self.complete_if_done(list, time_ms, events);
        Ok(list)
    }

    fn find_open_list(&self, user: UserId, market: MarketId, target: ListRef) -> Option<u64> {
        match target {
            ListRef::Id(id) => {
                let state = self.lists.get(&id)?;
                (state.view.user == user && state.view.market == market).then_some(id)
            }
            ListRef::Client(client) => {
                let u = self.user(user)?;
                self.open_list(u, market)
                    .map(|o| o.view.order_list_id)
                    .filter(|&l| l != 0)
                    .find(|l| self.lists[l].view.list_client_order_id == client)
            }
        }
    }

    /// An open or recently finished list of `user`, by id or client id.
    pub fn order_list(&self, user: UserId, target: ListRef) -> Result<OrderListView, EngineError> {
        let matches = |v: &OrderListView| {
            v.user == user
                && match target {
                    ListRef::Id(id) => v.order_list_id == id,
                    ListRef::Client(c) => v.list_client_order_id == c,
                }
        };
        if let Some(open) = self.open_order_lists(user).into_iter().find(|v| matches(v)) {
            return Ok(open);
        }
        let u = self.user(user).ok_or(EngineError::NoSuchOrder)?;
        self.closed_lists
            .newest_first(u.lists)
            .find(|v| matches(v))
            .copied()
            .ok_or(EngineError::NoSuchOrder)
    }

    /// `user`'s open lists, oldest first. Not on a hot path: it
    /// allocates and walks the user's open orders.
    pub fn open_order_lists(&self, user: UserId) -> Vec<OrderListView> {
        let Some(u) = self.user(user) else {
            return Vec::new();
        };
        let markets = (0..self.markets.len()).map(|m| MarketId(m as u16));
        let mut views: Vec<OrderListView> = markets
            .flat_map(|m| self.open_list(u, m))
            .map(|o| o.view.order_list_id)
            .filter_map(|l| self.lists.get(&l).map(|s| s.view))
            .collect();
        views.sort_unstable_by_key(|v| v.order_list_id);
        views.dedup_by_key(|v| v.order_list_id);
        views
    }

    /// `user`'s lists this machine remembers: the open ones, then the
    /// finished ones, newest first.
    pub fn all_order_lists(&self, user: UserId) -> Vec<OrderListView> {
        let mut views = self.open_order_lists(user);
        if let Some(u) = self.user(user) {
            views.extend(self.closed_lists.newest_first(u.lists).copied());
        }
        views
    }

    /// The lists' part of `verify`.
    pub(super) fn verify_lists(&self) -> Result<(), String> {
        for (id, state) in &self.lists {
            if state.view.order_list_id != *id || state.view.orders[0] != *id {
                return Err(format!("order list {id} is filed under another id"));
            }
        }
        for &slot in self.orders.values() {
            let open = &self.slots[slot as usize];
            let list = open.view.order_list_id;
            if list == 0 {
                continue;
            }
            let Some(state) = self.lists.get(&list) else {
                return Err(format!("order {} of list {list} that is not open", open.view.order_id));
            };
            let member = state.view.order_ids().contains(&open.view.order_id) && state.view.user == open.view.user;
            let pending_locked = open.view.status == OrderStatus::PendingNew && open.locked.0 != 0;
            if !member || pending_locked {
                return Err(format!("order {} does not fit its list {list}", open.view.order_id));
            }
        }
        Ok(())
    }
}

/// Sends one order, or an OCO pair as two linked `Place`s.
fn send_pair_or_one(plans: &[PlaceOrder], out: &mut Vec<ToBook>) {
    match plans {
        [one] => out.push(ToBook::Place(*one)),
        [first, second] => {
            let mut first = *first;
            let mut second = *second;
            (first.oco_partner, first.oco_first) = (second.order_id, true);
            (second.oco_partner, second.oco_first) = (first.order_id, false);
            out.push(ToBook::Place(first));
            out.push(ToBook::Place(second));
        }
        _ => unreachable!("a list sends one order or a pair"),
    }
}
