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
pub struct UserRow {
    pub user: u64,
    pub name: String,
    pub created_ms: u64,
}

/// One API key's metadata: never its secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRow {
    pub api_key: String,
    pub user: u64,
    /// Scope names, comma-separated (`READ,TRADE,USER_STREAM`).
    pub scopes: String,
    pub revoked: bool,
    pub changed_ms: u64,
}

/// An order's state after one change: the store keeps the latest as the
/// order's row and every one as an order event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderRow {
    pub user: u64,
    pub symbol: String,
    pub order_id: u64,
    pub client_order_id: String,
    pub price: i64,
    pub orig_qty: i64,
    pub orig_quote_qty: i64,
    pub executed_qty: i64,
    pub cummulative_quote_qty: i64,
    /// Binance's names: `NEW`, `PARTIALLY_FILLED`, `FILLED`, ...
    pub status: String,
    pub time_in_force: String,
    pub order_type: String,
    pub side: String,
    pub stop_price: i64,
    pub time_ms: u64,
    pub update_time_ms: u64,
    pub stp_mode: String,
    /// Binance's `icebergQty`: the most the order shows in the book at a
    /// time. Zero for a plain order, which is what rows written before
    /// schema version 4 read as.
    pub iceberg_qty: i64,
    /// Binance's `trailingDelta`, in basis points: how far the trigger of
    /// a trailing stop trails the best price. A plain count, not money,
    /// so it is stored as it is, without the 10⁻⁸ scaling of amounts.
    /// Zero for an order that does not trail, which is what rows written
    /// before schema version 5 read as.
    pub trailing_delta: i64,
    /// Binance's `orderListId`: the order list (OCO, OTO, OTOCO) the
    /// order is a leg of. Zero for an order of no list (the API reports
    /// -1), which is what rows written before schema version 6 read as.
    /// An id like `order_id`: the store refuses one past `i64::MAX`.
    pub order_list_id: u64,
}

/// One side of one trade, as its user sees it (`myTrades`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TradeRow {
    pub user: u64,
    pub symbol: String,
    pub trade_id: u64,
    pub order_id: u64,
    pub price: i64,
    pub qty: i64,
    pub quote_qty: i64,
    pub commission: i64,
    pub commission_asset: String,
    pub is_buyer: bool,
    pub is_maker: bool,
    pub time_ms: u64,
}

/// Why a balance changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LedgerCause {
    Deposit,
    Withdrawal,
    /// A trade's base or quote leg.
    Trade,
    /// A trade's commission.
    Fee,
}

impl LedgerCause {
    pub fn as_str(self) -> &'static str {
        match self {
            LedgerCause::Deposit => "DEPOSIT",
            LedgerCause::Withdrawal => "WITHDRAWAL",
            LedgerCause::Trade => "TRADE",
            LedgerCause::Fee => "FEE",
        }
    }

    pub fn parse(text: &str) -> Option<LedgerCause> {
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
pub const ACCOUNT_EXTERNAL: u64 = 0;
/// The system account commissions go to. Users start at 1 and stay far
/// below it, so neither system account is a user; it fits the signed
/// integers databases store.
pub const ACCOUNT_FEES: u64 = i64::MAX as u64;

/// One entry of the ledger: `delta` units of `asset` on `account` (a user
/// or a system account). The entries of one cause and reference sum to
/// zero per asset over all shards.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerRow {
    pub account: u64,
    pub asset: String,
    pub delta: i64,
    pub cause: LedgerCause,
    /// The trade id for trades and fees, the transfer's sequence for
    /// deposits and withdrawals.
    pub reference: u64,
    pub time_ms: u64,
}

/// Where a deposit or withdrawal sits in the journal: the shard that
/// journaled it, the journal generation and the transfer record's
/// position in it. Unique over the life of a data directory, and the same
/// whether the live shard or a recovery made the transfer's ledger
/// entries, so it is the transfer's id in the API: `<shard>-<generation>-<lsn>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TransferId {
    pub shard: u32,
    pub generation: u64,
    /// The `reference` of the transfer's ledger entries.
    pub lsn: u64,
}

impl TransferId {
    /// The id as the API writes it; `None` for any other text.
    pub fn parse(text: &str) -> Option<TransferId> {
        let mut parts = text.split('-');
        let id = TransferId {
            shard: parts.next()?.parse().ok()?,
            generation: parts.next()?.parse().ok()?,
            lsn: parts.next()?.parse().ok()?,
        };
        parts.next().is_none().then_some(id)
    }
}

impl std::fmt::Display for TransferId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}-{}", self.shard, self.generation, self.lsn)
    }
}

/// One deposit or withdrawal of a user, read from the user's ledger
/// entry: `amount` is positive whichever way the funds went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransferRow {
    pub id: TransferId,
    pub asset: String,
    pub amount: i64,
    pub time_ms: u64,
}

impl TransferRow {
    /// The order of the wallet history lists: newest first, then by id.
    pub fn newest_first(a: &TransferRow, b: &TransferRow) -> std::cmp::Ordering {
        (b.time_ms, b.id).cmp(&(a.time_ms, a.id))
    }
}

/// One row of a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Row {
    User(UserRow),
    Key(KeyRow),
    Order(OrderRow),
    Trade(TradeRow),
    Ledger(LedgerRow),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transfer_ids_read_back_as_written() {
        let id = TransferId {
            shard: 1,
            generation: 12,
            lsn: 3_456,
        };
        assert_eq!(id.to_string(), "1-12-3456");
        assert_eq!(TransferId::parse("1-12-3456"), Some(id));
        for text in [
            "",
            "1-12",
            "1-12-3456-7",
            "a-1-2",
            "1--2",
            "-1-2-3",
            "4294967296-1-2",
            "1-2-3 ",
        ] {
            assert_eq!(TransferId::parse(text), None, "{text:?}");
        }
    }
}
