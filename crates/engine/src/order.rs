//! Order vocabulary shared by the account and book machines, with Binance's
//! names: sides, types, time in force, self-trade prevention modes, statuses,
//! the request a client sends and the order state a client reads back.
//!
//! Everything here is `Copy` and owns no heap memory, so orders move between
//! shards inside messages without allocating.

use crate::num::{Amount, Price, Qty};

pub type UserId = u64;
pub type OrderId = u64;
pub type TradeId = u64;

/// Index of a market in the markets file order.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct MarketId(pub u16);

/// Index of an asset in the exchange's asset table.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct AssetId(pub u16);

macro_rules! binance_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// Binance's spelling.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            /// Parses Binance's spelling.
            pub fn parse(text: &str) -> Option<$name> {
                match text { $($text => Some($name::$variant),)+ _ => None }
            }
        }
    };
}

binance_enum!(Side { Buy = "BUY", Sell = "SELL" });
binance_enum!(
    OrderType {
        Limit = "LIMIT",
        Market = "MARKET",
        LimitMaker = "LIMIT_MAKER",
        StopLoss = "STOP_LOSS",
        StopLossLimit = "STOP_LOSS_LIMIT",
        TakeProfit = "TAKE_PROFIT",
        TakeProfitLimit = "TAKE_PROFIT_LIMIT",
    }
);
binance_enum!(TimeInForce { Gtc = "GTC", Ioc = "IOC", Fok = "FOK" });
binance_enum!(
    StpMode {
        None = "NONE",
        ExpireTaker = "EXPIRE_TAKER",
        ExpireMaker = "EXPIRE_MAKER",
        ExpireBoth = "EXPIRE_BOTH",
    }
);
binance_enum!(
    OrderStatus {
        New = "NEW",
        PartiallyFilled = "PARTIALLY_FILLED",
        Filled = "FILLED",
        Canceled = "CANCELED",
        Rejected = "REJECTED",
        Expired = "EXPIRED",
        ExpiredInMatch = "EXPIRED_IN_MATCH",
        PendingNew = "PENDING_NEW",
    }
);
binance_enum!(ContingencyType { Oco = "OCO", Oto = "OTO" });
binance_enum!(
    ListStatusType {
        Response = "RESPONSE",
        ExecStarted = "EXEC_STARTED",
        AllDone = "ALL_DONE",
    }
);
binance_enum!(
    ListOrderStatus {
        Executing = "EXECUTING",
        AllDone = "ALL_DONE",
        Reject = "REJECT",
    }
);
binance_enum!(
    CancelReplaceMode {
        StopOnFailure = "STOP_ON_FAILURE",
        AllowFailure = "ALLOW_FAILURE",
    }
);

impl Side {
    pub fn opposite(self) -> Side {
        match self {
            Side::Buy => Side::Sell,
            Side::Sell => Side::Buy,
        }
    }
}

impl OrderType {
    /// Held off the book until the last trade price reaches the stop price.
    pub fn is_stop(self) -> bool {
        matches!(
            self,
            OrderType::StopLoss | OrderType::StopLossLimit | OrderType::TakeProfit | OrderType::TakeProfitLimit
        )
    }

    /// Carries a limit price.
    pub fn has_price(self) -> bool {
        matches!(
            self,
            OrderType::Limit | OrderType::LimitMaker | OrderType::StopLossLimit | OrderType::TakeProfitLimit
        )
    }

    /// Whether a stop of this type fires when the last price is at or above
    /// (true) or at or below (false) the stop price. Binance: a stop-loss buys
    /// on the way up and sells on the way down; a take-profit the reverse.
    pub fn triggers_upward(self, side: Side) -> bool {
        let stop_loss = matches!(self, OrderType::StopLoss | OrderType::StopLossLimit);
        stop_loss == (side == Side::Buy)
    }
}

impl OrderStatus {
    /// The order is finished: nothing rests and nothing stays locked.
    pub fn is_final(self) -> bool {
        !matches!(
            self,
            OrderStatus::New | OrderStatus::PartiallyFilled | OrderStatus::PendingNew
        )
    }
}

/// Binance's longest clientOrderId.
pub const CLIENT_ORDER_ID_BYTES_MAX: usize = 36;

/// A clientOrderId stored inline so that orders stay `Copy`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ClientOrderId {
    len: u8,
    bytes: [u8; CLIENT_ORDER_ID_BYTES_MAX],
}

impl ClientOrderId {
    /// `None` when longer than 36 bytes or not ASCII, as Binance refuses them.
    pub fn new(text: &str) -> Option<ClientOrderId> {
        if text.len() > CLIENT_ORDER_ID_BYTES_MAX || !text.is_ascii() {
            return None;
        }
        let mut bytes = [0; CLIENT_ORDER_ID_BYTES_MAX];
        bytes[..text.len()].copy_from_slice(text.as_bytes());
        Some(ClientOrderId {
            len: text.len() as u8,
            bytes,
        })
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII is ever stored; a length read back from an archive is
        // not trusted to be in range.
        let bytes = self.bytes.get(..usize::from(self.len)).unwrap_or(&[]);
        std::str::from_utf8(bytes).unwrap_or("")
    }
}

impl std::fmt::Debug for ClientOrderId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

/// How much an order asks for: base quantity, or quote amount
/// (`quoteOrderQty`, MARKET orders only).
#[derive(Clone, Copy, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum OrderQty {
    Base(Qty),
    Quote(Amount),
}

/// A new order as the client sent it, after decimal parsing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct OrderRequest {
    pub market: MarketId,
    pub side: Side,
    pub kind: OrderType,
    pub time_in_force: Option<TimeInForce>,
    pub price: Option<Price>,
    pub qty: OrderQty,
    pub stop_price: Option<Price>,
    pub client_order_id: Option<ClientOrderId>,
    pub stp: StpMode,
    /// `icebergQty`: the order rests showing at most this much at a time.
    pub iceberg_qty: Option<Qty>,
    /// `trailingDelta` in basis points: a stop whose trigger trails the
    /// market's best price since it began tracking.
    pub trailing_delta: Option<u32>,
}

/// An order's state as Binance reports it (GET /api/v3/order).
#[derive(Clone, Copy, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct OrderView {
    pub market: MarketId,
    pub order_id: OrderId,
    pub user: UserId,
    pub client_order_id: Option<ClientOrderId>,
    pub price: Price,
    pub orig_qty: Qty,
    /// quoteOrderQty for MARKET orders by quote amount, else zero.
    pub orig_quote_qty: Amount,
    pub executed_qty: Qty,
    pub cummulative_quote_qty: Amount,
    pub status: OrderStatus,
    pub time_in_force: TimeInForce,
    pub kind: OrderType,
    pub side: Side,
    pub stop_price: Price,
    pub time_ms: u64,
    pub update_time_ms: u64,
    pub stp: StpMode,
    /// `icebergQty`; zero for a plain order.
    pub iceberg_qty: Qty,
    /// `trailingDelta` in basis points; zero for an order that does not
    /// trail.
    pub trailing_delta: u32,
    /// The order list the order is a leg of; zero for none (Binance
    /// reports -1).
    pub order_list_id: u64,
}

/// The shape of an order list and the part each of its orders plays.
#[derive(Clone, Copy, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum ListKind {
    /// One-cancels-the-other: `[above, below]`, both working at once.
    Oco,
    /// One-triggers-the-other: `[working, pending]`; the pending order is
    /// placed when the working order has filled completely.
    Oto,
    /// `[working, pending above, pending below]`: the pending pair is an
    /// OCO placed when the working order has filled completely.
    Otoco,
}

impl ListKind {
    /// How many orders a list of this kind has.
    pub fn legs(self) -> usize {
        match self {
            ListKind::Oco | ListKind::Oto => 2,
            ListKind::Otoco => 3,
        }
    }

    /// Binance's `contingencyType` (an OTOCO reports `OTO`).
    pub fn contingency(self) -> ContingencyType {
        match self {
            ListKind::Oco => ContingencyType::Oco,
            ListKind::Oto | ListKind::Otoco => ContingencyType::Oto,
        }
    }

    /// The orders placed on the book at once: both legs of an OCO, only
    /// the working order of the others.
    pub fn working(self) -> usize {
        match self {
            ListKind::Oco => 2,
            ListKind::Oto | ListKind::Otoco => 1,
        }
    }
}

/// A new order list as the client sent it. The orders are in the kind's
/// order (see `ListKind`); those past `kind.legs()` are ignored. All are
/// on the same market.
#[derive(Clone, Copy, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ListRequest {
    pub kind: ListKind,
    pub list_client_order_id: ClientOrderId,
    pub orders: [OrderRequest; 3],
}

/// An order list's state as Binance reports it (GET /api/v3/orderList).
/// Its id is its first order's id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct OrderListView {
    pub order_list_id: u64,
    pub market: MarketId,
    pub user: UserId,
    pub kind: ListKind,
    pub list_client_order_id: ClientOrderId,
    pub status_type: ListStatusType,
    pub order_status: ListOrderStatus,
    /// The orders' ids, in the kind's order; `kind.legs()` of them.
    pub orders: [OrderId; 3],
    pub time_ms: u64,
    pub update_time_ms: u64,
}

impl OrderListView {
    pub fn order_ids(&self) -> &[OrderId] {
        &self.orders[..self.kind.legs()]
    }
}

/// One trade as one of its two users sees it (GET /api/v3/myTrades).
#[derive(Clone, Copy, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct UserTrade {
    pub market: MarketId,
    pub trade_id: TradeId,
    pub order_id: OrderId,
    pub price: Price,
    pub qty: Qty,
    pub quote_qty: Amount,
    pub commission: Amount,
    pub commission_asset: AssetId,
    pub time_ms: u64,
    pub is_buyer: bool,
    pub is_maker: bool,
}
