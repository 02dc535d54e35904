//! The rows of the history store, as plain data: users, API keys (never
//! their secrets), orders in their latest state, trades (one row per side)
//! and ledger entries (double-entry: every change of a balance has its
//! counter-entry, on another account or on a system account).
//!
//! Money is in integer units of 10⁻⁸, as everywhere in the server.
//! Symbols, assets and enums are stored by their Binance names, so a row
//! means the same thing whatever the markets file says later.

/// One user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct UserRow {
    pub(crate) user: u64,
    pub(crate) name: String,
    pub(crate) created_ms: u64,
}

/// One API key's metadata: never its secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct KeyRow {
    pub(crate) api_key: String,
    pub(crate) user: u64,
    /// Scope names, comma-separated (`READ,TRADE,USER_STREAM`).
    pub(crate) scopes: String,
    pub(crate) revoked: bool,
    pub(crate) changed_ms: u64,
}

/// An order's state after one change: the store keeps the latest as the
/// order's row and every one as an order event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct OrderRow {
    pub(crate) user: u64,
    pub(crate) symbol: String,
    pub(crate) order_id: u64,
    pub(crate) client_order_id: String,
    pub(crate) price: i64,
    pub(crate) orig_qty: i64,
    pub(crate) orig_quote_qty: i64,
    pub(crate) executed_qty: i64,
    pub(crate) cummulative_quote_qty: i64,
    /// Binance's names: `NEW`, `PARTIALLY_FILLED`, `FILLED`, ...
    pub(crate) status: String,
    pub(crate) time_in_force: String,
    pub(crate) order_type: String,
    pub(crate) side: String,
    pub(crate) stop_price: i64,
    pub(crate) time_ms: u64,
    pub(crate) update_time_ms: u64,
    pub(crate) stp_mode: String,
}

/// One side of one trade, as its user sees it (`myTrades`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TradeRow {
    pub(crate) user: u64,
    pub(crate) symbol: String,
    pub(crate) trade_id: u64,
    pub(crate) order_id: u64,
    pub(crate) price: i64,
    pub(crate) qty: i64,
    pub(crate) quote_qty: i64,
    pub(crate) commission: i64,
    pub(crate) commission_asset: String,
    pub(crate) is_buyer: bool,
    pub(crate) is_maker: bool,
    pub(crate) time_ms: u64,
}

/// Why a balance changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LedgerCause {
    Deposit,
    Withdrawal,
    /// A trade's base or quote leg.
    Trade,
    /// A trade's commission.
    Fee,
}

impl LedgerCause {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            LedgerCause::Deposit => "DEPOSIT",
            LedgerCause::Withdrawal => "WITHDRAWAL",
            LedgerCause::Trade => "TRADE",
            LedgerCause::Fee => "FEE",
        }
    }

    pub(crate) fn parse(text: &str) -> Option<LedgerCause> {
        [
            LedgerCause::Deposit,
            LedgerCause::Withdrawal,
            LedgerCause::Trade,
            LedgerCause::Fee,
        ]
        .into_iter()
        .find(|c| c.as_str() == text)
    }
}

/// The system account outside the exchange that deposits come from and
/// withdrawals go to.
pub(crate) const ACCOUNT_EXTERNAL: u64 = 0;
/// The system account commissions go to. Users start at 1 and stay far
/// below it, so neither system account is a user; it fits the signed
/// integers databases store.
pub(crate) const ACCOUNT_FEES: u64 = i64::MAX as u64;

/// One entry of the ledger: `delta` units of `asset` on `account` (a user
/// or a system account). The entries of one cause and reference sum to
/// zero per asset over all shards.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LedgerRow {
    pub(crate) account: u64,
    pub(crate) asset: String,
    pub(crate) delta: i64,
    pub(crate) cause: LedgerCause,
    /// The trade id for trades and fees, the transfer's sequence for
    /// deposits and withdrawals.
    pub(crate) reference: u64,
    pub(crate) time_ms: u64,
}

/// One row of a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Row {
    User(UserRow),
    Key(KeyRow),
    Order(OrderRow),
    Trade(TradeRow),
    Ledger(LedgerRow),
}
