//! Operating errors of the engine, each carrying Binance's code and message.
//!
//! These are the answers a client may legitimately cause (bad parameters,
//! filters, funds, unknown orders). Programmer errors are `assert!`s instead.
//! The server turns an `EngineError` into `{"code": .., "msg": ..}` with
//! `code()` and `msg()`; the messages are Binance's wording so that clients
//! which match on them keep working.

use rkyv::rancor::{Fallible, Source};
use rkyv::with::{ArchiveWith, DeserializeWith, SerializeWith};
use rkyv::Place;

/// Why an order, a cancel or a transfer was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum EngineError {
    #[error("{0}")]
    MandatoryParam(#[rkyv(with = ParamMessage)] &'static str),
    #[error("{0}")]
    ParamNotRequired(#[rkyv(with = ParamMessage)] &'static str),
    #[error("Filter failure: PRICE_FILTER")]
    PriceFilter,
    #[error("Filter failure: LOT_SIZE")]
    LotSize,
    #[error("Filter failure: NOTIONAL")]
    Notional,
    #[error("Filter failure: MAX_NUM_ORDERS")]
    MaxNumOrders,
    #[error("Account has insufficient balance for requested action.")]
    InsufficientBalance,
    #[error("Order would immediately match and take.")]
    WouldMatch,
    #[error("Order would trigger immediately.")]
    WouldTrigger,
    #[error("Duplicate order sent.")]
    DuplicateOrder,
    #[error("Price * QTY is zero or less.")]
    ValueTooLarge,
    #[error("Unknown order sent.")]
    UnknownOrder,
    #[error("Order does not exist.")]
    NoSuchOrder,
    #[error("Unknown asset.")]
    UnknownAsset,
    #[error("Amount must be positive.")]
    BadAmount,
    /// The market is halted: its book takes no new order (an order that
    /// was on its way when the halt came, or from another instance of a
    /// cluster, is rejected there).
    #[error("Market is closed.")]
    MarketClosed,
    /// An amendment (amend keep priority) the engine refused: -2038.
    #[error("{}", .0.msg())]
    AmendRejected(AmendReason),
    /// The user's market maker protection fired in this market and is
    /// still frozen: new orders are refused (-2010).
    #[error("Market maker protection is frozen for this symbol; new orders are refused until it thaws or is reset.")]
    MmpFrozen,
    /// An iceberg would show itself in more than `ICEBERG_PARTS` parts.
    #[error("Filter failure: ICEBERG_PARTS")]
    IcebergParts,
    /// The user has `MAX_NUM_ICEBERG_ORDERS` icebergs open in the market.
    #[error("Filter failure: MAX_NUM_ICEBERG_ORDERS")]
    MaxNumIcebergOrders,
    /// `icebergQty` is not below the order's quantity.
    #[error("IcebergQty exceeds QTY.")]
    IcebergQtyExceedsQty,
    /// Parameters each valid alone that Binance refuses together (an
    /// iceberg whose time in force is not GTC).
    #[error("Unsupported order combination")]
    UnsupportedCombination,
    /// `trailingDelta` outside the TRAILING_DELTA filter's range.
    #[error("Filter failure: TRAILING_DELTA")]
    TrailingDelta,
    /// The market's book holds `TRAILING_STOPS_PER_BOOK_MAX` trailing
    /// stops already.
    #[error("Too many trailing stop orders on this symbol; try again later.")]
    TrailingStopsFull,
    /// The user has `MAX_NUM_ALGO_ORDERS` stop orders open in the market.
    #[error("Filter failure: MAX_NUM_ALGO_ORDERS")]
    MaxNumAlgoOrders,
    #[error("{}", .0.msg())]
    ListRejected(ListReason),
}

/// Why an order list was refused as a whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum ListReason {
    OcoOrderType,
    BuyLimitMustBeBelow,
    SellLimitMustBeAbove,
    BothLimit,
    BuyStopLossMustBeAbove,
    SellStopLossMustBeBelow,
    BuyTakeProfitMustBeBelow,
    SellTakeProfitMustBeAbove,
    PriceRelationship,
    WorkingType,
    PendingQuoteQty,
    MaxNumOrderLists,
    DuplicateList,
    LegOfList,
}

impl ListReason {
    pub fn code(&self) -> i32 {
        match self {
            ListReason::OcoOrderType => -1158,
            ListReason::BuyLimitMustBeBelow => -1165,
            ListReason::SellLimitMustBeAbove => -1166,
            ListReason::BothLimit => -1168,
            ListReason::BuyStopLossMustBeAbove => -1196,
            ListReason::SellStopLossMustBeBelow => -1197,
            ListReason::BuyTakeProfitMustBeBelow => -1198,
            ListReason::SellTakeProfitMustBeAbove => -1199,
            ListReason::MaxNumOrderLists => -1013,
            ListReason::LegOfList => -2038,
            ListReason::PriceRelationship
            | ListReason::WorkingType
            | ListReason::PendingQuoteQty
            | ListReason::DuplicateList => -2010,
        }
    }

    pub fn msg(&self) -> &'static str {
        match self {
            ListReason::OcoOrderType => "Order type not supported in OCO.",
            ListReason::BuyLimitMustBeBelow => "A limit order in a buy OCO must be below.",
            ListReason::SellLimitMustBeAbove => "A limit order in a sell OCO must be above.",
            ListReason::BothLimit => "At least one OCO order must be contingent.",
            ListReason::BuyStopLossMustBeAbove => "A stop loss order in a buy OCO must be above.",
            ListReason::SellStopLossMustBeBelow => "A stop loss order in a sell OCO must be below.",
            ListReason::BuyTakeProfitMustBeBelow => "A take profit order in a buy OCO must be below.",
            ListReason::SellTakeProfitMustBeAbove => "A take profit order in a sell OCO must be above.",
            ListReason::PriceRelationship => "The relationship of the prices for the orders is not correct.",
            ListReason::WorkingType => "Unsupported order combination",
            ListReason::PendingQuoteQty => "Unsupported order combination",
            ListReason::MaxNumOrderLists => "Filter failure: MAX_NUM_ORDER_LISTS",
            ListReason::DuplicateList => "Duplicate order sent.",
            ListReason::LegOfList => "Order amend is not supported for orders of an order list.",
        }
    }
}

/// Why an amendment was refused; each is Binance's -2038 with its message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum AmendReason {
    /// No such open order of the user (or it finished first).
    UnknownOrder,
    /// `newQty` above the order's quantity.
    QtyIncrease,
    /// `newQty` equal to the order's quantity.
    NoChange,
    /// The order was amended `MAX_NUM_ORDER_AMENDS` times already.
    TooMany,
    /// `newClientOrderId` names another open order of the user.
    Duplicate,
    /// The order's previous amendment has not reached its book yet.
    InFlight,
}

impl AmendReason {
    pub fn msg(&self) -> &'static str {
        match self {
            AmendReason::UnknownOrder => "Unknown order sent.",
            AmendReason::QtyIncrease => "Order amend (quantity increase) is not supported.",
            AmendReason::NoChange => "The requested action would change no state; rejecting",
            AmendReason::TooMany => "Filter failure: MAX_NUM_ORDER_AMENDS",
            AmendReason::Duplicate => "Duplicate order sent.",
            AmendReason::InFlight => "The order's previous amendment is still in progress; try again.",
        }
    }
}

impl EngineError {
    /// Binance's numeric error code.
    pub fn code(&self) -> i32 {
        match self {
            EngineError::MandatoryParam(_) => -1102,
            EngineError::ParamNotRequired(_) => -1106,
            EngineError::PriceFilter
            | EngineError::LotSize
            | EngineError::Notional
            | EngineError::MaxNumOrders
            | EngineError::IcebergParts
            | EngineError::MaxNumIcebergOrders
            | EngineError::MaxNumAlgoOrders
            | EngineError::TrailingDelta => -1013,
            EngineError::InsufficientBalance
            | EngineError::WouldMatch
            | EngineError::WouldTrigger
            | EngineError::DuplicateOrder
            | EngineError::ValueTooLarge
            | EngineError::MarketClosed
            | EngineError::MmpFrozen
            | EngineError::IcebergQtyExceedsQty
            | EngineError::UnsupportedCombination
            | EngineError::TrailingStopsFull => -2010,
            EngineError::UnknownOrder => -2011,
            EngineError::NoSuchOrder => -2013,
            EngineError::UnknownAsset | EngineError::BadAmount => -1100,
            EngineError::AmendRejected(_) => -2038,
            EngineError::ListRejected(reason) => reason.code(),
        }
    }

    /// Binance's message, verbatim.
    pub fn msg(&self) -> &'static str {
        match self {
            EngineError::MandatoryParam(m) | EngineError::ParamNotRequired(m) => m,
            EngineError::PriceFilter => "Filter failure: PRICE_FILTER",
            EngineError::LotSize => "Filter failure: LOT_SIZE",
            EngineError::Notional => "Filter failure: NOTIONAL",
            EngineError::MaxNumOrders => "Filter failure: MAX_NUM_ORDERS",
            EngineError::InsufficientBalance => "Account has insufficient balance for requested action.",
            EngineError::WouldMatch => "Order would immediately match and take.",
            EngineError::WouldTrigger => "Order would trigger immediately.",
            EngineError::DuplicateOrder => "Duplicate order sent.",
            EngineError::ValueTooLarge => "Price * QTY is zero or less.",
            EngineError::UnknownOrder => "Unknown order sent.",
            EngineError::NoSuchOrder => "Order does not exist.",
            EngineError::UnknownAsset => "Unknown asset.",
            EngineError::BadAmount => "Amount must be positive.",
            EngineError::MarketClosed => "Market is closed.",
            EngineError::AmendRejected(reason) => reason.msg(),
            EngineError::MmpFrozen => {
                "Market maker protection is frozen for this symbol; new orders are refused until it thaws or is reset."
            }
            EngineError::IcebergParts => "Filter failure: ICEBERG_PARTS",
            EngineError::MaxNumIcebergOrders => "Filter failure: MAX_NUM_ICEBERG_ORDERS",
            EngineError::IcebergQtyExceedsQty => "IcebergQty exceeds QTY.",
            EngineError::UnsupportedCombination => "Unsupported order combination",
            EngineError::TrailingDelta => "Filter failure: TRAILING_DELTA",
            EngineError::TrailingStopsFull => "Too many trailing stop orders on this symbol; try again later.",
            EngineError::MaxNumAlgoOrders => "Filter failure: MAX_NUM_ALGO_ORDERS",
            EngineError::ListRejected(reason) => reason.msg(),
        }
    }
}

pub const MISSING_PRICE: &str = "Mandatory parameter 'price' was not sent, was empty/null, or malformed.";
pub const MISSING_QUANTITY: &str = "Mandatory parameter 'quantity' was not sent, was empty/null, or malformed.";
pub const MISSING_TIME_IN_FORCE: &str = "Mandatory parameter 'timeInForce' was not sent, was empty/null, or malformed.";
pub const MISSING_STOP_PRICE: &str = "Mandatory parameter 'stopPrice' was not sent, was empty/null, or malformed.";
pub const NOT_REQUIRED_PRICE: &str = "Parameter 'price' sent when not required.";
pub const NOT_REQUIRED_TIME_IN_FORCE: &str = "Parameter 'timeInForce' sent when not required.";
pub const NOT_REQUIRED_STOP_PRICE: &str = "Parameter 'stopPrice' sent when not required.";
pub const NOT_REQUIRED_QUOTE_ORDER_QTY: &str = "Parameter 'quoteOrderQty' sent when not required.";
pub const NOT_REQUIRED_ICEBERG_QTY: &str = "Parameter 'icebergQty' sent when not required.";
pub const NOT_REQUIRED_TRAILING_DELTA: &str = "Parameter 'trailingDelta' sent when not required.";
pub const MISSING_STOP_PRICE_OR_TRAILING_DELTA: &str =
    "Param 'stopPrice' or 'trailingDelta' must be sent, but both were empty/null!";

/// Every message a parameter error may carry, in a fixed order: archives
/// (journal records, snapshots) store a message as its index here, because
/// a `&'static str` cannot be read back from bytes. Append only: a stored
/// index must keep naming the same message.
pub const PARAM_MESSAGES: [&str; 11] = [
    MISSING_PRICE,
    MISSING_QUANTITY,
    MISSING_TIME_IN_FORCE,
    MISSING_STOP_PRICE,
    NOT_REQUIRED_PRICE,
    NOT_REQUIRED_TIME_IN_FORCE,
    NOT_REQUIRED_STOP_PRICE,
    NOT_REQUIRED_QUOTE_ORDER_QTY,
    NOT_REQUIRED_ICEBERG_QTY,
    NOT_REQUIRED_TRAILING_DELTA,
    MISSING_STOP_PRICE_OR_TRAILING_DELTA,
];

/// A parameter message that is not in `PARAM_MESSAGES`, met while archiving
/// or in an archive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("parameter message {0} is not in PARAM_MESSAGES")]
pub struct UnknownParamMessage(u8);

/// The rkyv wrapper that archives a parameter message as its index in
/// `PARAM_MESSAGES` (one byte).
pub struct ParamMessage;

fn param_message_index(message: &str) -> Option<u8> {
    let index = PARAM_MESSAGES.iter().position(|m| *m == message)?;
    u8::try_from(index).ok()
}

impl ArchiveWith<&'static str> for ParamMessage {
    type Archived = u8;
    type Resolver = u8;

    fn resolve_with(_: &&'static str, index: u8, out: Place<u8>) {
        out.write(index);
    }
}

impl<S: Fallible + ?Sized> SerializeWith<&'static str, S> for ParamMessage
where
    S::Error: Source,
{
    fn serialize_with(message: &&'static str, _: &mut S) -> Result<u8, S::Error> {
        param_message_index(message).ok_or_else(|| S::Error::new(UnknownParamMessage(u8::MAX)))
    }
}

impl<D: Fallible + ?Sized> DeserializeWith<u8, &'static str, D> for ParamMessage
where
    D::Error: Source,
{
    fn deserialize_with(index: &u8, _: &mut D) -> Result<&'static str, D::Error> {
        let message = PARAM_MESSAGES.get(usize::from(*index)).copied();
        message.ok_or_else(|| D::Error::new(UnknownParamMessage(*index)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_the_binance_message() {
        let all = [
            EngineError::MandatoryParam(MISSING_PRICE),
            EngineError::PriceFilter,
            EngineError::LotSize,
            EngineError::Notional,
            EngineError::MaxNumOrders,
            EngineError::InsufficientBalance,
            EngineError::WouldMatch,
            EngineError::WouldTrigger,
            EngineError::DuplicateOrder,
            EngineError::UnknownOrder,
            EngineError::NoSuchOrder,
            EngineError::AmendRejected(AmendReason::QtyIncrease),
            EngineError::AmendRejected(AmendReason::TooMany),
            EngineError::MmpFrozen,
            EngineError::IcebergParts,
            EngineError::MaxNumIcebergOrders,
            EngineError::IcebergQtyExceedsQty,
            EngineError::UnsupportedCombination,
            EngineError::TrailingDelta,
            EngineError::TrailingStopsFull,
            EngineError::MaxNumAlgoOrders,
        ];
        for e in all {
            assert_eq!(e.to_string(), e.msg());
            assert!(e.code() < 0);
        }
    }
}
