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
//! **Invariant:** the harness keeps every user below the server's history
//! bounds (`TRADES_PER_USER_MAX`, `ORDERS_CLOSED_PER_USER_MAX`), so nothing
//! the model expects can have been forgotten by design.

use crate::http::{units, Key};
use crate::snapshot::Snapshot;
use serde_json::Value;
use std::collections::BTreeMap;
use tradsys_engine::account::{ORDERS_CLOSED_PER_USER_MAX, TRADES_PER_USER_MAX};

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
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Limit => "LIMIT",
            Kind::Market => "MARKET",
        }
    }
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
    pub qty: i64,
    pub iceberg: i64,
    pub placed: Placed,
    pub cancel: CancelState,
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
}

/// Statuses after which an order never changes.
pub fn is_final(status: &str) -> bool {
    !matches!(status, "NEW" | "PARTIALLY_FILLED")
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
                    let placed = self.order_outcome(user, market, &outcome)?;
                    let order = Order {
                        user,
                        market,
                        client_id: client_id.clone(),
                        side,
                        kind,
                        price,
                        qty,
                        iceberg,
                        placed,
                        cancel: CancelState::None,
                    };
                    let previous = self.by_client_id.insert(client_id.clone(), self.orders.len());
                    assert!(previous.is_none(), "client order id {client_id} used twice");
                    self.orders.push(order);
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

    /// An order's acknowledgement, with the taker fills it reported.
    fn order_outcome(&mut self, user: usize, market: usize, outcome: &Outcome) -> Result<Placed, String> {
        let body = match outcome {
            Outcome::Lost => return Ok(Placed::Unknown),
            _ if outcome.never_ran() => return Ok(Placed::Refused(SERVER_BUSY)),
            // Any other server error promises nothing either way.
            Outcome::Answered { status, .. } if *status >= 500 => return Ok(Placed::Unknown),
            Outcome::Answered { status: 200, body } => body,
            Outcome::Answered { body, .. } => {
                return Ok(Placed::Refused(body["code"].as_i64().unwrap_or(0)));
            }
        };
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
        Ok(Placed::Known(facts))
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
        let orders = self
            .orders
            .iter()
            .filter(|o| matches!(o.placed, Placed::Unknown))
            .count();
        let cancels = self.orders.iter().filter(|o| o.cancel == CancelState::Unknown).count();
        let transfers = self
            .transfers
            .iter()
            .filter(|t| t.state == TransferState::Unknown)
            .count();
        orders + cancels + transfers
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
