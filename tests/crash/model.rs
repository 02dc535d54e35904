//! The acknowledged history: what the clients know happened, what they know
//! did not happen, and what they cannot know (a request sent whose response
//! never arrived).
//!
//! Client threads record `Event`s; `Model::apply` folds them in after the
//! threads are joined. After a recovered state has passed every check,
//! `Model::absorb` turns what was observed into facts as strong as
//! acknowledgements: a later recovery of the same data directory must keep
//! them, and an unanswered request that left no trace is resolved as never
//! having happened.
//!
//! Order lists are kept twice: each of their orders as an `Order` (with
//! `list` naming its list), and the list itself as a `List` (its
//! `orderListId`, `contingencyType`, order ids and client ids, and the one
//! cancel the harness may send for it).
//!
//! **Invariant:** the harness keeps every user below the server's history
//! bounds (`TRADES_PER_USER_MAX`, `ORDERS_CLOSED_PER_USER_MAX`,
//! `ORDER_LISTS_CLOSED_PER_USER_MAX`), so nothing the model expects can
//! have been forgotten by design.

use crate::http::{units, Key};
use crate::snapshot::Snapshot;
use serde_json::Value;
use std::collections::BTreeMap;
use tradsys_engine::account::{ORDERS_CLOSED_PER_USER_MAX, ORDER_LISTS_CLOSED_PER_USER_MAX, TRADES_PER_USER_MAX};

/// A market the harness trades: all quantities are whole lots, so every
/// fill is a whole number of lots and every notional is exact.
pub struct Market {
    pub symbol: &'static str,
    pub base: &'static str,
    pub quote: &'static str,
    pub lot_units: i64,
    pub price_units: i64,
    pub tick_units: i64,
}

/// Two markets, which land on the two shards or share one depending on the
/// symbol hash; users on either shard trade both.
pub const MARKETS: [Market; 2] = [
    Market {
        symbol: "BTCUSDT",
        base: "BTC",
        quote: "USDT",
        lot_units: 100_000,
        price_units: 30_000 * 100_000_000,
        tick_units: 100_000_000,
    },
    Market {
        symbol: "ETHUSDT",
        base: "ETH",
        quote: "USDT",
        lot_units: 1_000_000,
        price_units: 2_000 * 100_000_000,
        tick_units: 10_000_000,
    },
];

/// The largest order, in lots: each fill is at least one lot, so an order
/// makes at most this many trades for its user.
pub const ORDER_LOTS_MAX: i64 = 3;
/// Orders one user may send over the life of a data directory.
pub const ORDERS_PER_USER_MAX: u32 = 30;
const _: () = assert!((ORDERS_PER_USER_MAX as i64) * ORDER_LOTS_MAX < TRADES_PER_USER_MAX as i64);
const _: () = assert!((ORDERS_PER_USER_MAX as usize) < ORDERS_CLOSED_PER_USER_MAX);
// A list takes two orders of the budget.
const _: () = assert!((ORDERS_PER_USER_MAX as usize) / 2 < ORDER_LISTS_CLOSED_PER_USER_MAX);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Buy,
    Sell,
}

impl Side {
    pub fn name(self) -> &'static str {
        match self {
            Side::Buy => "BUY",
            Side::Sell => "SELL",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Limit,
    Market,
    /// The orders of lists only.
    LimitMaker,
    StopLoss,
    StopLossLimit,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Limit => "LIMIT",
            Kind::Market => "MARKET",
            Kind::LimitMaker => "LIMIT_MAKER",
            Kind::StopLoss => "STOP_LOSS",
            Kind::StopLossLimit => "STOP_LOSS_LIMIT",
        }
    }

    /// Whether the order has a limit price.
    pub fn has_price(self) -> bool {
        matches!(self, Kind::Limit | Kind::LimitMaker | Kind::StopLossLimit)
    }
}

/// The two kinds of list the harness sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListKind {
    /// A LIMIT_MAKER and a stop loss of one side, straddling the last
    /// price: `orders` are (above, below).
    Oco,
    /// A working LIMIT and a pending LIMIT_MAKER: `orders` are (working,
    /// pending).
    Oto,
}

impl ListKind {
    /// Its `contingencyType`.
    pub fn name(self) -> &'static str {
        match self {
            ListKind::Oco => "OCO",
            ListKind::Oto => "OTO",
        }
    }
}

/// One order of a list as its client sent it.
#[derive(Clone, Debug)]
pub struct Leg {
    pub client_id: String,
    pub side: Side,
    pub kind: Kind,
    /// Units; 0 for STOP_LOSS.
    pub price: i64,
    /// `stopPrice` in units; 0 but for the stop losses.
    pub stop: i64,
    pub qty: i64,
}

/// What became of one request.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// Sent; the response never arrived in full.
    Lost,
    Answered {
        status: u16,
        body: Value,
    },
}

/// One request a client made, as it saw it.
#[derive(Clone, Debug)]
pub enum Event {
    Order {
        user: usize,
        market: usize,
        client_id: String,
        side: Side,
        kind: Kind,
        /// Units; 0 for MARKET.
        price: i64,
        qty: i64,
        /// `icebergQty` in units; 0 for a plain order.
        iceberg: i64,
        outcome: Outcome,
    },
    Cancel {
        user: usize,
        market: usize,
        client_id: String,
        outcome: Outcome,
    },
    Transfer {
        user: usize,
        asset: &'static str,
        amount: i64,
        deposit: bool,
        outcome: Outcome,
    },
    /// An order list placed with `listClientOrderId` `client_id`.
    List {
        user: usize,
        market: usize,
        client_id: String,
        kind: ListKind,
        legs: Vec<Leg>,
        outcome: Outcome,
    },
    /// `DELETE /api/v3/orderList` of the list `client_id` (by its
    /// `orderListId`).
    ListCancel {
        user: usize,
        market: usize,
        client_id: String,
        outcome: Outcome,
    },
}

/// An order's state as acknowledged or as verified after a recovery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderFacts {
    pub order_id: u64,
    pub status: String,
    pub executed: i64,
    pub quote: i64,
}

/// Binance's -1008: the server refused the request before running it
/// (a shard shedding load, or the journal's disk full), so it must have
/// no effect.
pub const SERVER_BUSY: i64 = -1008;

impl Outcome {
    /// A 503 with -1008: refused before it ran.
    pub fn never_ran(&self) -> bool {
        matches!(self, Outcome::Answered { status: 503, body } if body["code"].as_i64() == Some(SERVER_BUSY))
    }
}

/// Whether an order was placed.
#[derive(Clone, Debug)]
pub enum Placed {
    /// No response: it may or may not exist.
    Unknown,
    /// Refused with this code: it must never exist.
    Refused(i64),
    /// Unanswered, and a verified recovery showed no trace: never existed.
    Absent,
    /// Placed; its state can only move forward from these facts.
    Known(OrderFacts),
}

/// What the one cancel the harness may send for an order did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CancelState {
    /// None sent, or one that verifiably did not happen (refused with
    /// -1008 before it ran, or unanswered and absent after a recovery).
    None,
    /// Sent, no response.
    Unknown,
    /// Acknowledged: the order is CANCELED with this executed quantity.
    Done { executed: i64 },
    /// Refused with -2011: the order was no longer open.
    Refused,
}

#[derive(Clone, Debug)]
pub struct Order {
    pub user: usize,
    pub market: usize,
    pub client_id: String,
    pub side: Side,
    pub kind: Kind,
    pub price: i64,
    /// `stopPrice` in units; 0 but for the stop losses of lists.
    pub stop: i64,
    pub qty: i64,
    pub iceberg: i64,
    pub placed: Placed,
    /// A cancel of this order alone: never sent for an order of a list
    /// (`List::cancel` ends those).
    pub cancel: CancelState,
    /// The list it belongs to: an index into `Model::lists`.
    pub list: Option<usize>,
}

/// A list's identity as acknowledged or as verified after a recovery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListFacts {
    pub list_id: u64,
    /// Its orders' ids, in the list's order.
    pub order_ids: Vec<u64>,
}

/// Whether a list was placed (as `Placed` for an order).
#[derive(Clone, Debug)]
pub enum ListPlaced {
    /// No response: it may or may not exist, but whole or not at all.
    Unknown,
    /// Refused with this code: neither it nor any of its orders exists.
    Refused(i64),
    /// Unanswered, and a verified recovery showed no trace: never existed.
    Absent,
    Known(ListFacts),
}

/// What the one cancel the harness may send for a list did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListCancel {
    /// None sent, or one that verifiably had no effect (refused with -1008
    /// before it ran, or unanswered and no order of the list CANCELED
    /// after a recovery).
    None,
    /// Sent, no response.
    Unknown,
    /// Acknowledged: the list was done, each order in this final state
    /// (client id, status, executed quantity).
    Done(Vec<(String, String, i64)>),
    /// Refused with -2011: the list was done already.
    Refused,
}

/// An order list a client sent.
#[derive(Clone, Debug)]
pub struct List {
    pub user: usize,
    pub market: usize,
    /// `listClientOrderId`.
    pub client_id: String,
    pub kind: ListKind,
    /// Its orders' client ids, in the list's order; each also in
    /// `Model::orders`.
    pub orders: Vec<String>,
    pub placed: ListPlaced,
    pub cancel: ListCancel,
}

/// One side of a trade as its user must see it in `myTrades`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fill {
    pub price: i64,
    pub qty: i64,
    pub commission: i64,
    pub commission_asset: String,
}

/// (market, trade id, user, order id): a self-trade gives its user two
/// records with one trade id, told apart by the order.
pub type FillKey = (usize, u64, usize, u64);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransferState {
    Unknown,
    Done,
    /// Refused, or unanswered and verifiably not applied.
    NotDone,
}

#[derive(Clone, Debug)]
pub struct Transfer {
    pub user: usize,
    pub asset: &'static str,
    pub amount: i64,
    pub deposit: bool,
    pub state: TransferState,
}

/// The acknowledged history of one data directory.
#[derive(Clone, Default)]
pub struct Model {
    pub users: Vec<Key>,
    /// Orders each user has sent (placed or not), against `ORDERS_PER_USER_MAX`.
    pub orders_sent: Vec<u32>,
    pub orders: Vec<Order>,
    /// Index into `orders` by client order id.
    pub by_client_id: BTreeMap<String, usize>,
    pub fills: BTreeMap<FillKey, Fill>,
    pub transfers: Vec<Transfer>,
    pub lists: Vec<List>,
    /// Index into `lists` by list client id.
    pub lists_by_client_id: BTreeMap<String, usize>,
}

/// Statuses after which an order never changes (`PENDING_NEW`, the
/// pending order of an OTO, is not one).
pub fn is_final(status: &str) -> bool {
    !matches!(status, "NEW" | "PARTIALLY_FILLED" | "PENDING_NEW")
}

/// Statuses of an order on a book (or held there, a stop), unlike a
/// pending one or a final one.
pub fn is_open(status: &str) -> bool {
    matches!(status, "NEW" | "PARTIALLY_FILLED")
}

fn facts(body: &Value) -> Result<OrderFacts, String> {
    Ok(OrderFacts {
        order_id: body["orderId"].as_u64().ok_or_else(|| format!("orderId in {body}"))?,
        status: body["status"]
            .as_str()
            .ok_or_else(|| format!("status in {body}"))?
            .to_string(),
        executed: units(body, "executedQty")?,
        quote: units(body, "cummulativeQuoteQty")?,
    })
}

impl Model {
    /// A user created with acknowledged deposits.
    pub fn add_user(&mut self, key: Key, deposits: &[(&'static str, i64)]) {
        let user = self.users.len();
        self.users.push(key);
        self.orders_sent.push(0);
        for &(asset, amount) in deposits {
            self.transfers.push(Transfer {
                user,
                asset,
                amount,
                deposit: true,
                state: TransferState::Done,
            });
        }
    }

    pub fn order(&self, client_id: &str) -> Option<&Order> {
        self.by_client_id.get(client_id).map(|&i| &self.orders[i])
    }

    pub fn list(&self, client_id: &str) -> Option<&List> {
        self.lists_by_client_id.get(client_id).map(|&i| &self.lists[i])
    }

    fn add_order(&mut self, order: Order) {
        let client_id = order.client_id.clone();
        let previous = self.by_client_id.insert(client_id.clone(), self.orders.len());
        assert!(previous.is_none(), "client order id {client_id} used twice");
        self.orders.push(order);
    }

    /// Folds one client's events in, in the order that client made them.
    pub fn apply(&mut self, events: Vec<Event>) -> Result<(), String> {
        for event in events {
            match event {
                Event::Order {
                    user,
                    market,
                    client_id,
                    side,
                    kind,
                    price,
                    qty,
                    iceberg,
                    outcome,
                } => {
                    let placed = match outcome_body(&outcome) {
                        Ok(body) => Placed::Known(self.order_facts(user, market, body)?),
                        Err(placed) => placed,
                    };
                    self.add_order(Order {
                        user,
                        market,
                        client_id,
                        side,
                        kind,
                        price,
                        stop: 0,
                        qty,
                        iceberg,
                        placed,
                        cancel: CancelState::None,
                        list: None,
                    });
                }
                Event::List {
                    user,
                    market,
                    client_id,
                    kind,
                    legs,
                    outcome,
                } => self.apply_list(user, market, client_id, kind, legs, &outcome)?,
                Event::ListCancel {
                    user,
                    market,
                    client_id,
                    outcome,
                } => {
                    let index = self.lists_by_client_id[&client_id];
                    let list = &mut self.lists[index];
                    if (list.user, list.market) != (user, market) {
                        return Err(format!("cancel of list {client_id} for another user or market"));
                    }
                    list.cancel = list_cancel_outcome(&outcome)?;
                }
                Event::Cancel {
                    user,
                    market,
                    client_id,
                    outcome,
                } => {
                    let index = self.by_client_id[&client_id];
                    let order = &mut self.orders[index];
                    if (order.user, order.market) != (user, market) {
                        return Err(format!("cancel of {client_id} for another user or market"));
                    }
                    order.cancel = cancel_outcome(&outcome)?;
                }
                Event::Transfer {
                    user,
                    asset,
                    amount,
                    deposit,
                    outcome,
                } => {
                    let state = match outcome {
                        Outcome::Lost => TransferState::Unknown,
                        _ if outcome.never_ran() => TransferState::NotDone,
                        Outcome::Answered { status, .. } if status >= 500 => TransferState::Unknown,
                        Outcome::Answered { status: 200, .. } => TransferState::Done,
                        Outcome::Answered { .. } => TransferState::NotDone,
                    };
                    self.transfers.push(Transfer {
                        user,
                        asset,
                        amount,
                        deposit,
                        state,
                    });
                }
            }
        }
        Ok(())
    }

    /// A list and its orders, as its placement's answer says.
    fn apply_list(
        &mut self,
        user: usize,
        market: usize,
        client_id: String,
        kind: ListKind,
        legs: Vec<Leg>,
        outcome: &Outcome,
    ) -> Result<(), String> {
        let index = self.lists.len();
        let (placed, reports) = match outcome_body(outcome) {
            Err(Placed::Refused(code)) => (ListPlaced::Refused(code), None),
            Err(_) => (ListPlaced::Unknown, None),
            Ok(body) => {
                let facts = list_facts(body)?;
                let reports = body["orderReports"]
                    .as_array()
                    .ok_or_else(|| format!("orderReports in {body}"))?;
                if reports.len() != legs.len() || facts.order_ids.len() != legs.len() {
                    return Err(format!("list {client_id}: {} orders answered {body}", legs.len()));
                }
                (ListPlaced::Known(facts), Some(reports.clone()))
            }
        };
        for (i, leg) in legs.iter().enumerate() {
            let placed = match (&placed, &reports) {
                (ListPlaced::Refused(code), _) => Placed::Refused(*code),
                (ListPlaced::Known(_), Some(reports)) => {
                    let report = &reports[i];
                    if report["clientOrderId"].as_str() != Some(&leg.client_id) {
                        return Err(format!(
                            "list {client_id}: order {i} is not {}: {report}",
                            leg.client_id
                        ));
                    }
                    Placed::Known(self.order_facts(user, market, report)?)
                }
                _ => Placed::Unknown,
            };
            self.add_order(Order {
                user,
                market,
                client_id: leg.client_id.clone(),
                side: leg.side,
                kind: leg.kind,
                price: leg.price,
                stop: leg.stop,
                qty: leg.qty,
                iceberg: 0,
                placed,
                cancel: CancelState::None,
                list: Some(index),
            });
        }
        let previous = self.lists_by_client_id.insert(client_id.clone(), index);
        assert!(previous.is_none(), "list client order id {client_id} used twice");
        self.lists.push(List {
            user,
            market,
            client_id,
            kind,
            orders: legs.into_iter().map(|l| l.client_id).collect(),
            placed,
            cancel: ListCancel::None,
        });
        Ok(())
    }

    /// An order's acknowledgement, with the taker fills it reported.
    fn order_facts(&mut self, user: usize, market: usize, body: &Value) -> Result<OrderFacts, String> {
        let facts = facts(body)?;
        for fill in body["fills"].as_array().ok_or_else(|| format!("fills in {body}"))? {
            let trade_id = fill["tradeId"].as_u64().ok_or_else(|| format!("tradeId in {fill}"))?;
            let value = Fill {
                price: units(fill, "price")?,
                qty: units(fill, "qty")?,
                commission: units(fill, "commission")?,
                commission_asset: fill["commissionAsset"].as_str().unwrap_or("").to_string(),
            };
            self.fills.insert((market, trade_id, user, facts.order_id), value);
        }
        Ok(facts)
    }

    /// Turns a verified snapshot into facts: see the module documentation.
    /// `transfers` holds, for each unanswered transfer the balances decided,
    /// whether it was applied.
    pub fn absorb(&mut self, snapshot: &Snapshot, transfers: &BTreeMap<usize, bool>) {
        for order in &mut self.orders {
            let seen = snapshot.users[order.user].order(order.market, &order.client_id);
            order.placed = match (&order.placed, seen) {
                (Placed::Unknown | Placed::Known(_), Some(o)) => Placed::Known(o.facts()),
                (Placed::Unknown, None) => Placed::Absent,
                (other, _) => other.clone(),
            };
            if order.cancel == CancelState::Unknown {
                order.cancel = match seen {
                    Some(o) if o.status == "CANCELED" => CancelState::Done { executed: o.executed },
                    Some(o) if is_final(&o.status) => CancelState::Refused,
                    _ => CancelState::None,
                };
            }
        }
        for list in &mut self.lists {
            let state = &snapshot.users[list.user];
            let seen = state.list(&list.client_id);
            list.placed = match (&list.placed, seen) {
                (ListPlaced::Unknown | ListPlaced::Known(_), Some(l)) => ListPlaced::Known(l.facts()),
                (ListPlaced::Unknown, None) => ListPlaced::Absent,
                (other, _) => other.clone(),
            };
            if list.cancel == ListCancel::Unknown {
                let orders: Vec<_> = list.orders.iter().filter_map(|c| state.order(list.market, c)).collect();
                // A cancel that took effect left CANCELED orders; one that
                // came after the list was done, or never, left none.
                list.cancel = match orders.iter().any(|o| o.status == "CANCELED") {
                    true => ListCancel::Done(
                        orders
                            .iter()
                            .map(|o| (o.client_id.clone(), o.status.clone(), o.executed))
                            .collect(),
                    ),
                    false => ListCancel::None,
                };
            }
        }
        for (user, state) in snapshot.users.iter().enumerate() {
            for t in &state.trades {
                let fill = Fill {
                    price: t.price,
                    qty: t.qty,
                    commission: t.commission,
                    commission_asset: t.commission_asset.clone(),
                };
                self.fills.insert((t.market, t.id, user, t.order_id), fill);
            }
        }
        for (&index, &applied) in transfers {
            self.transfers[index].state = if applied {
                TransferState::Done
            } else {
                TransferState::NotDone
            };
        }
    }

    /// Requests still unanswered and unresolved.
    pub fn unknowns(&self) -> usize {
        // An order of a list is unanswered with its list: one request.
        let orders = self
            .orders
            .iter()
            .filter(|o| o.list.is_none() && matches!(o.placed, Placed::Unknown))
            .count();
        let cancels = self.orders.iter().filter(|o| o.cancel == CancelState::Unknown).count();
        let transfers = self
            .transfers
            .iter()
            .filter(|t| t.state == TransferState::Unknown)
            .count();
        let lists = self
            .lists
            .iter()
            .filter(|l| matches!(l.placed, ListPlaced::Unknown))
            .count();
        let list_cancels = self.lists.iter().filter(|l| l.cancel == ListCancel::Unknown).count();
        orders + cancels + transfers + lists + list_cancels
    }

    /// Lists acknowledged as placed whose orders are not all final as far
    /// as the model knows, and that no cancel was sent for.
    pub fn open_lists(&self) -> impl Iterator<Item = &List> {
        self.lists.iter().filter(move |l| {
            let open = l.orders.iter().any(|c| {
                let order = self.order(c);
                matches!(order.map(|o| &o.placed), Some(Placed::Known(f)) if !is_final(&f.status))
            });
            matches!(l.placed, ListPlaced::Known(_)) && open && l.cancel == ListCancel::None
        })
    }
}

/// The body of a 200, or what an answer that is not one says about
/// whether the request took effect (for an order placement).
fn outcome_body(outcome: &Outcome) -> Result<&Value, Placed> {
    match outcome {
        Outcome::Lost => Err(Placed::Unknown),
        _ if outcome.never_ran() => Err(Placed::Refused(SERVER_BUSY)),
        // Any other server error promises nothing either way.
        Outcome::Answered { status, .. } if *status >= 500 => Err(Placed::Unknown),
        Outcome::Answered { status: 200, body } => Ok(body),
        Outcome::Answered { body, .. } => Err(Placed::Refused(body["code"].as_i64().unwrap_or(0))),
    }
}

fn list_facts(body: &Value) -> Result<ListFacts, String> {
    let orders = body["orders"].as_array().ok_or_else(|| format!("orders in {body}"))?;
    Ok(ListFacts {
        list_id: body["orderListId"]
            .as_u64()
            .ok_or_else(|| format!("orderListId in {body}"))?,
        order_ids: orders
            .iter()
            .map(|o| o["orderId"].as_u64().ok_or_else(|| format!("orderId in {o}")))
            .collect::<Result<_, _>>()?,
    })
}

fn list_cancel_outcome(outcome: &Outcome) -> Result<ListCancel, String> {
    match outcome {
        Outcome::Lost => Ok(ListCancel::Unknown),
        _ if outcome.never_ran() => Ok(ListCancel::None),
        Outcome::Answered { status, .. } if *status >= 500 => Ok(ListCancel::Unknown),
        Outcome::Answered { status: 200, body } => {
            let reports = body["orderReports"]
                .as_array()
                .ok_or_else(|| format!("orderReports in {body}"))?;
            let states = reports.iter().map(|r| {
                let client_id = r["origClientOrderId"]
                    .as_str()
                    .ok_or_else(|| format!("origClientOrderId in {r}"))?;
                let status = r["status"].as_str().ok_or_else(|| format!("status in {r}"))?;
                Ok((client_id.to_string(), status.to_string(), units(r, "executedQty")?))
            });
            Ok(ListCancel::Done(states.collect::<Result<_, String>>()?))
        }
        Outcome::Answered { body, .. } if body["code"].as_i64() == Some(-2011) => Ok(ListCancel::Refused),
        Outcome::Answered { status, body } => Err(format!("list cancel answered {status} {body}")),
    }
}

fn cancel_outcome(outcome: &Outcome) -> Result<CancelState, String> {
    match outcome {
        Outcome::Lost => Ok(CancelState::Unknown),
        _ if outcome.never_ran() => Ok(CancelState::None),
        Outcome::Answered { status, .. } if *status >= 500 => Ok(CancelState::Unknown),
        Outcome::Answered { status: 200, body } => Ok(CancelState::Done {
            executed: units(body, "executedQty")?,
        }),
        Outcome::Answered { body, .. } if body["code"].as_i64() == Some(-2011) => Ok(CancelState::Refused),
        Outcome::Answered { status, body } => Err(format!("cancel answered {status} {body}")),
    }
}
