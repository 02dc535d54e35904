//! The messages between the account machines (one per user shard) and the
//! book machines (one per market).
//!
//! An account machine validates an order, locks the funds it may spend and
//! sends `ToBook::Place` with that budget; the book matches within the budget
//! and answers with `ToAccount` messages: a `Fill` to the owner of each side,
//! one `Placed` for the new order and a `Done` whenever a resting order
//! leaves the book. Every message is a plain `Copy` value with no references
//! or shared pointers, so it can cross CPU cores on a bounded channel.
//! **Invariant:** the book never spends more of an order than the budget in
//! its `Place`: quote for buys, base for sells.

use crate::num::{Amount, Price, Qty};
use crate::order::{MarketId, OrderId, OrderStatus, OrderType, Side, StpMode, TimeInForce};
use crate::order::{TradeId, UserId};
use crate::EngineError;

/// An order with its funds locked, for the market's book.
#[derive(Clone, Copy, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct PlaceOrder {
    pub market: MarketId,
    pub order_id: OrderId,
    pub user: UserId,
    pub side: Side,
    pub kind: OrderType,
    pub time_in_force: TimeInForce,
    /// Limit price; zero for market orders.
    pub price: Price,
    pub stop_price: Price,
    /// Base quantity wanted; for quote-amount orders the base budget (sells)
    /// or `Qty(i64::MAX)` (buys).
    pub qty: Qty,
    /// Quote amount the order may spend (buys) or aims to receive (sells by
    /// quote amount); `Amount(i64::MAX)` when unbounded.
    pub quote: Amount,
    /// The order asks for a quote amount (`quoteOrderQty`).
    pub by_quote: bool,
    pub stp: StpMode,
    pub time_ms: u64,
    /// The visible part of an iceberg order (`icebergQty`); zero for a
    /// plain order.
    pub iceberg_qty: Qty,
    /// A trailing stop's `trailingDelta` in basis points; zero for an
    /// order that does not trail.
    pub trailing_delta: u32,
    /// The other order of an OCO pair; zero for an order on its own. The
    /// pair travels as two `Place`s, the `oco_first` one first: the book
    /// keeps it aside until its partner arrives and then places both or
    /// rejects both, so that no one can trade against half a pair.
    pub oco_partner: OrderId,
    pub oco_first: bool,
}

/// Work for a book machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum ToBook {
    Place(PlaceOrder),
    Cancel {
        market: MarketId,
        order_id: OrderId,
        user: UserId,
        time_ms: u64,
    },
    /// Binance's amend keep priority: the order's quantity shrinks by
    /// `reduce_by` where it is, resting or held; a held buy's budget
    /// becomes `quote` (what its account machine now locks for it).
    /// `side` and `price` name the order's level for depth. Nothing left
    /// to rest takes the order off the book.
    Amend(AmendOrder),
}

/// An order's quantity reduced in place (see `ToBook::Amend`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct AmendOrder {
    pub market: MarketId,
    pub order_id: OrderId,
    pub user: UserId,
    pub side: Side,
    pub price: Price,
    pub reduce_by: Qty,
    pub quote: Amount,
    pub time_ms: u64,
}

impl ToBook {
    pub fn market(&self) -> MarketId {
        match self {
            ToBook::Place(p) => p.market,
            ToBook::Cancel { market, .. } => *market,
            ToBook::Amend(a) => a.market,
        }
    }
}

/// One trade between a taker and a resting maker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Fill {
    pub market: MarketId,
    pub trade_id: TradeId,
    pub price: Price,
    pub qty: Qty,
    pub quote_qty: Amount,
    pub taker_order: OrderId,
    pub taker_user: UserId,
    pub taker_side: Side,
    pub maker_order: OrderId,
    pub maker_user: UserId,
    pub time_ms: u64,
}

impl Fill {
    pub fn is_buyer_maker(&self) -> bool {
        self.taker_side == Side::Sell
    }
}

/// News for the account machine that owns `user`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum ToAccount {
    /// Delivered to the owner of the taker and, if different, of the maker.
    Fill(Fill),
    /// The outcome of a `Place`, after any immediate matching. A final
    /// status means nothing rests; `Rejected` carries the reason.
    Placed {
        order_id: OrderId,
        user: UserId,
        status: OrderStatus,
        reject: Option<EngineError>,
        time_ms: u64,
    },
    /// A resting or held order left the book (filled, canceled by STP,
    /// expired after a stop fired).
    Done {
        order_id: OrderId,
        user: UserId,
        status: OrderStatus,
        time_ms: u64,
    },
    /// The answer to `Cancel`: `Ok` when the order was removed.
    Canceled {
        order_id: OrderId,
        user: UserId,
        result: Result<(), EngineError>,
        time_ms: u64,
    },
    /// The answer to `Amend`: `Ok(true)` when the order still rests (or is
    /// held), `Ok(false)` when nothing of it was left and it left the book.
    Amended {
        order_id: OrderId,
        user: UserId,
        result: Result<bool, EngineError>,
        time_ms: u64,
    },
}

impl ToAccount {
    pub fn user(&self) -> UserId {
        match self {
            ToAccount::Fill(f) => f.taker_user,
            ToAccount::Placed { user, .. }
            | ToAccount::Done { user, .. }
            | ToAccount::Canceled { user, .. }
            | ToAccount::Amended { user, .. } => *user,
        }
    }
}
