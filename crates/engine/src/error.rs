//! Operating errors of the engine, each carrying Binance's code and message.
//!
//! These are the answers a client may legitimately cause (bad parameters,
//! filters, funds, unknown orders). Programmer errors are `assert!`s instead.
//! The server turns an `EngineError` into `{"code": .., "msg": ..}` with
//! `code()` and `msg()`; the messages are Binance's wording so that clients
//! which match on them keep working.

/// Why an order, a cancel or a transfer was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    #[error("{0}")]
    MandatoryParam(&'static str),
    #[error("{0}")]
    ParamNotRequired(&'static str),
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
}

impl EngineError {
    /// Binance's numeric error code.
    pub fn code(&self) -> i32 {
        match self {
            EngineError::MandatoryParam(_) => -1102,
            EngineError::ParamNotRequired(_) => -1106,
            EngineError::PriceFilter | EngineError::LotSize | EngineError::Notional | EngineError::MaxNumOrders => {
                -1013
            }
            EngineError::InsufficientBalance
            | EngineError::WouldMatch
            | EngineError::WouldTrigger
            | EngineError::DuplicateOrder
            | EngineError::ValueTooLarge => -2010,
            EngineError::UnknownOrder => -2011,
            EngineError::NoSuchOrder => -2013,
            EngineError::UnknownAsset | EngineError::BadAmount => -1100,
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
        ];
        for e in all {
            assert_eq!(e.to_string(), e.msg());
            assert!(e.code() < 0);
        }
    }
}
