//! From what a shard's inputs produced to the history store's rows, and
//! back from rows to the engine's views for the history endpoints.
//!
//! The live shard and a replay make rows the same way, from the same
//! parts: the input (`Record`) for users and keys, and the engine's
//! `Output` for orders, trades and balances. So the rows of a record are
//! the same whether the running shard made them or a recovery did after a
//! crash, which is what lets the store take each row exactly once.
//!
//! **Invariant:** every balance change of a user on this shard has its
//! ledger entries, and the entries of one trade side, deposit or
//! withdrawal sum to zero per asset with their counter-entries (the other
//! side of the trade, the fee account, the outside world).

use super::rows::{KeyRow, LedgerCause, LedgerRow, OrderRow, Row, TradeRow, UserRow, ACCOUNT_EXTERNAL, ACCOUNT_FEES};
use crate::auth::{key_for, Scope, Scopes};
use crate::trading::record::Record;
use crate::trading::{Output, Trading};
use tradsys_engine::num::{Amount, Price, Qty};
use tradsys_engine::order::{
    ClientOrderId, MarketId, OrderStatus, OrderType, OrderView, Side, StpMode, TimeInForce, UserTrade,
};

/// Appends to `rows` the rows of `records` and of what they produced
/// (`out`), in the order they happened. `now_ms` dates the rows whose
/// inputs carry no time (users, keys, transfers); `lsn` is the last
/// record's position, the reference of transfers.
pub fn rows_of<'a>(
    trading: &Trading,
    records: impl IntoIterator<Item = &'a Record>,
    out: &Output,
    now_ms: u64,
    lsn: u64,
    rows: &mut Vec<Row>,
) {
    for record in records {
        record_rows(trading, record, now_ms, rows);
    }
    for update in out.user_updates.iter().filter(|u| !u.announcement) {
        let spec = trading.spec(update.view.market);
        rows.push(Row::Order(order_row(&spec.symbol, &update.view)));
        if let Some(trade) = &update.trade {
            trade_rows(trading, update.user, &update.view, trade, rows);
        }
    }
    for transfer in &out.balance_updates {
        let (cause, outside) = if transfer.delta.0 >= 0 {
            (LedgerCause::Deposit, -transfer.delta.0)
        } else {
            (LedgerCause::Withdrawal, -transfer.delta.0)
        };
        let asset = trading.asset_name(transfer.asset).to_string();
        rows.push(Row::Ledger(LedgerRow {
            account: ACCOUNT_EXTERNAL,
            asset: asset.clone(),
            delta: outside,
            cause,
            reference: lsn,
            time_ms: now_ms,
        }));
        rows.push(Row::Ledger(LedgerRow {
            account: transfer.user,
            asset,
            delta: transfer.delta.0,
            cause,
            reference: lsn,
            time_ms: now_ms,
        }));
    }
}

/// Users and API keys (never their secrets).
fn record_rows(trading: &Trading, record: &Record, now_ms: u64, rows: &mut Vec<Row>) {
    match record {
        Record::CreateUser { user, name } => rows.push(Row::User(UserRow {
            user: *user,
            name: name.clone(),
            created_ms: now_ms,
        })),
        Record::CreateKey { user, scopes, entropy } => {
            // The same derivation as `Trading::create_key`; the secret is
            // never derived here.
            let api_key = key_for(*user, &entropy[..64], 64);
            if trading.keys().lookup(api_key.as_bytes()).is_some() {
                rows.push(Row::Key(KeyRow {
                    api_key,
                    user: *user,
                    scopes: scope_names(Scopes::from_bits(*scopes)),
                    revoked: false,
                    changed_ms: now_ms,
                }));
            }
        }
        Record::CreatePublicKey(r) => {
            // The same derivation as `Trading::create_public_key`.
            let api_key = key_for(r.user, &r.entropy, 64);
            if trading.keys().lookup(api_key.as_bytes()).is_some() {
                rows.push(Row::Key(KeyRow {
                    api_key,
                    user: r.user,
                    scopes: scope_names(Scopes::from_bits(r.scopes)),
                    revoked: false,
                    changed_ms: now_ms,
                }));
            }
        }
        Record::RevokeKey { key } => {
            if let Some(held) = trading.keys().lookup(key.as_bytes()) {
                rows.push(Row::Key(KeyRow {
                    api_key: key.clone(),
                    user: held.user_id,
                    scopes: scope_names(held.scopes),
                    revoked: true,
                    changed_ms: now_ms,
                }));
            }
        }
        _ => {}
    }
}

/// `READ,TRADE,USER_STREAM`, in that order.
fn scope_names(scopes: Scopes) -> String {
    let names: Vec<&str> = Scope::ALL
        .into_iter()
        .filter(|s| scopes.contains(*s))
        .map(Scope::name)
        .collect();
    names.join(",")
}

fn order_row(symbol: &str, view: &OrderView) -> OrderRow {
    OrderRow {
        user: view.user,
        symbol: symbol.to_string(),
        order_id: view.order_id,
        client_order_id: view
            .client_order_id
            .as_ref()
            .map(ClientOrderId::as_str)
            .unwrap_or("")
            .to_string(),
        price: view.price.0,
        orig_qty: view.orig_qty.0,
        orig_quote_qty: view.orig_quote_qty.0,
        executed_qty: view.executed_qty.0,
        cummulative_quote_qty: view.cummulative_quote_qty.0,
        status: view.status.as_str().to_string(),
        time_in_force: view.time_in_force.as_str().to_string(),
        order_type: view.kind.as_str().to_string(),
        side: view.side.as_str().to_string(),
        stop_price: view.stop_price.0,
        time_ms: view.time_ms,
        update_time_ms: view.update_time_ms,
        stp_mode: view.stp.as_str().to_string(),
        iceberg_qty: view.iceberg_qty.0,
        trailing_delta: i64::from(view.trailing_delta),
        order_list_id: view.order_list_id,
    }
}

/// One side of one trade: its `myTrades` row and its ledger entries (what
/// the side paid, what it got, and the commission taken from what it got).
fn trade_rows(trading: &Trading, user: u64, view: &OrderView, trade: &UserTrade, rows: &mut Vec<Row>) {
    let spec = trading.spec(trade.market);
    rows.push(Row::Trade(TradeRow {
        user,
        symbol: spec.symbol.clone(),
        trade_id: trade.trade_id,
        order_id: trade.order_id,
        price: trade.price.0,
        qty: trade.qty.0,
        quote_qty: trade.quote_qty.0,
        commission: trade.commission.0,
        commission_asset: trading.asset_name(trade.commission_asset).to_string(),
        is_buyer: trade.is_buyer,
        is_maker: trade.is_maker,
        time_ms: trade.time_ms,
    }));
    let (paid_asset, paid, got_asset, got) = match view.side {
        Side::Buy => (&spec.quote_asset, trade.quote_qty.0, &spec.base_asset, trade.qty.0),
        Side::Sell => (&spec.base_asset, trade.qty.0, &spec.quote_asset, trade.quote_qty.0),
    };
    let entry = |account: u64, asset: &str, delta: i64, cause: LedgerCause| {
        Row::Ledger(LedgerRow {
            account,
            asset: asset.to_string(),
            delta,
            cause,
            reference: trade.trade_id,
            time_ms: trade.time_ms,
        })
    };
    rows.push(entry(user, paid_asset, -paid, LedgerCause::Trade));
    rows.push(entry(user, got_asset, got, LedgerCause::Trade));
    if trade.commission.0 != 0 {
        let fee_asset = trading.asset_name(trade.commission_asset);
        rows.push(entry(user, fee_asset, -trade.commission.0, LedgerCause::Fee));
        rows.push(entry(ACCOUNT_FEES, fee_asset, trade.commission.0, LedgerCause::Fee));
    }
}

/// A stored order as the engine's view, for the endpoints' JSON; `None`
/// when the row names a market or an enum this build does not know, or
/// holds a trailing delta no order can have.
pub fn order_view(row: &OrderRow, market: MarketId) -> Option<OrderView> {
    Some(OrderView {
        market,
        order_id: row.order_id,
        user: row.user,
        client_order_id: ClientOrderId::new(&row.client_order_id),
        price: Price(row.price),
        orig_qty: Qty(row.orig_qty),
        orig_quote_qty: Amount(row.orig_quote_qty),
        executed_qty: Qty(row.executed_qty),
        cummulative_quote_qty: Amount(row.cummulative_quote_qty),
        status: OrderStatus::parse(&row.status)?,
        time_in_force: TimeInForce::parse(&row.time_in_force)?,
        kind: OrderType::parse(&row.order_type)?,
        side: Side::parse(&row.side)?,
        stop_price: Price(row.stop_price),
        time_ms: row.time_ms,
        update_time_ms: row.update_time_ms,
        stp: StpMode::parse(&row.stp_mode)?,
        iceberg_qty: Qty(row.iceberg_qty),
        trailing_delta: u32::try_from(row.trailing_delta).ok()?,
        order_list_id: row.order_list_id,
    })
}

/// A stored trade as the engine's view; `None` for an unknown asset.
pub fn user_trade(trading: &Trading, row: &TradeRow, market: MarketId) -> Option<UserTrade> {
    Some(UserTrade {
        market,
        trade_id: row.trade_id,
        order_id: row.order_id,
        price: Price(row.price),
        qty: Qty(row.qty),
        quote_qty: Amount(row.quote_qty),
        commission: Amount(row.commission),
        commission_asset: trading.accounts().asset_id(&row.commission_asset)?,
        time_ms: row.time_ms,
        is_buyer: row.is_buyer,
        is_maker: row.is_maker,
    })
}

/// The view of a live order as a row (for merging memory with the store).
pub fn row_of_view(trading: &Trading, view: &OrderView) -> OrderRow {
    order_row(&trading.spec(view.market).symbol, view)
}

/// How many bytes `row` holds, roughly: what the backlog counts.
pub fn row_bytes(row: &Row) -> usize {
    let text = match row {
        Row::User(u) => u.name.len(),
        Row::Key(k) => k.api_key.len() + k.scopes.len(),
        Row::Order(o) => {
            o.symbol.len()
                + o.client_order_id.len()
                + o.status.len()
                + o.time_in_force.len()
                + o.order_type.len()
                + o.side.len()
                + o.stp_mode.len()
        }
        Row::Trade(t) => t.symbol.len() + t.commission_asset.len(),
        Row::Ledger(l) => l.asset.len(),
    };
    std::mem::size_of::<Row>() + text
}

#[cfg(test)]
mod tests {
    use super::*;
    use tradsys_engine::order::{OrderQty, OrderRequest};

    fn trading() -> Trading {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/shards/markets.toml")).expect("markets.toml");
        let specs = tradsys_engine::market::parse_markets(&text).expect("markets");
        Trading::new(0, 1, specs, tradsys_engine::book::BookCapacity::default())
    }

    /// What `flush_engine` hands the store after one operation.
    fn rows_after(trading: &mut Trading, now_ms: u64, lsn: u64) -> Vec<Row> {
        let mut out = Output::default();
        trading.swap_output(&mut out);
        let mut rows = Vec::new();
        rows_of(trading, &out.records, &out, now_ms, lsn, &mut rows);
        rows
    }

    fn limit(trading: &Trading, side: Side, qty: i64, price: i64) -> OrderRequest {
        OrderRequest {
            market: trading.market("BTCUSDT").expect("BTCUSDT"),
            side,
            kind: OrderType::Limit,
            time_in_force: Some(TimeInForce::Gtc),
            price: Some(Price(price)),
            qty: OrderQty::Base(Qty(qty)),
            stop_price: None,
            client_order_id: ClientOrderId::new("c1"),
            stp: StpMode::None,
            iceberg_qty: None,
            trailing_delta: None,
        }
    }

    fn ledger(account: u64, asset: &str, delta: i64, cause: LedgerCause, reference: u64, time_ms: u64) -> Row {
        Row::Ledger(LedgerRow {
            account,
            asset: asset.into(),
            delta,
            cause,
            reference,
            time_ms,
        })
    }

    /// A scripted session (users, an HMAC and an Ed25519 key, deposits, a
    /// trade, a revoke) gives exactly these rows, and its ledger balances
    /// per asset.
    #[test]
    fn a_scripted_session_gives_exact_rows() {
        let mut t = trading();
        t.create_user(7, "maker").unwrap();
        t.create_user(8, "taker").unwrap();
        let (key, _) = t.create_key(7, Scopes::from_bits(1 | 2), &[5; 128]).unwrap();
        let pem = include_str!("../../tests/fixtures/keys/ed25519.pub.pem");
        let ed25519 = crate::auth::KeyMaterial::from_public_pem(crate::auth::KeyType::Ed25519, pem).unwrap();
        let public_key = t.create_public_key(8, Scopes::from_bits(1), ed25519, &[6; 64]).unwrap();
        t.transfer(7, "BTC", Amount(100_000_000), true).unwrap();
        t.transfer(8, "USDT", Amount(5_000_000_000_000), true).unwrap();
        let setup = rows_after(&mut t, 1_000, 5);
        assert_eq!(
            setup,
            vec![
                Row::User(UserRow {
                    user: 7,
                    name: "maker".into(),
                    created_ms: 1_000
                }),
                Row::User(UserRow {
                    user: 8,
                    name: "taker".into(),
                    created_ms: 1_000
                }),
                Row::Key(KeyRow {
                    api_key: key.clone(),
                    user: 7,
                    scopes: "READ,TRADE".into(),
                    revoked: false,
                    changed_ms: 1_000
                }),
                Row::Key(KeyRow {
                    api_key: public_key,
                    user: 8,
                    scopes: "READ".into(),
                    revoked: false,
                    changed_ms: 1_000
                }),
                ledger(ACCOUNT_EXTERNAL, "BTC", -100_000_000, LedgerCause::Deposit, 5, 1_000),
                ledger(7, "BTC", 100_000_000, LedgerCause::Deposit, 5, 1_000),
                ledger(
                    ACCOUNT_EXTERNAL,
                    "USDT",
                    -5_000_000_000_000,
                    LedgerCause::Deposit,
                    5,
                    1_000
                ),
                ledger(8, "USDT", 5_000_000_000_000, LedgerCause::Deposit, 5, 1_000),
            ]
        );
        let sell = limit(&t, Side::Sell, 10_000_000, 3_000_000_000_000);
        t.place(7, &sell, None, 2_000).unwrap();
        let placed = rows_after(&mut t, 2_000, 6);
        assert_eq!(placed.len(), 1);
        let Row::Order(resting) = &placed[0] else {
            panic!("{placed:?}")
        };
        assert_eq!(
            (resting.order_id, resting.status.as_str(), resting.executed_qty),
            (resting.order_id, "NEW", 0)
        );
        let buy = limit(&t, Side::Buy, 10_000_000, 3_000_000_000_000);
        t.place(8, &buy, None, 3_000).unwrap();
        let traded = rows_after(&mut t, 3_000, 7);
        let trades: Vec<&TradeRow> = traded
            .iter()
            .filter_map(|r| match r {
                Row::Trade(t) => Some(t),
                _ => None,
            })
            .collect();
        assert_eq!(trades.len(), 2, "{traded:?}");
        let maker = trades.iter().find(|t| t.is_maker).unwrap();
        assert_eq!(
            (
                maker.user,
                maker.qty,
                maker.quote_qty,
                maker.commission,
                maker.commission_asset.as_str()
            ),
            (7, 10_000_000, 300_000_000_000, 300_000_000, "USDT")
        );
        let finished: Vec<(u64, &str)> = traded
            .iter()
            .filter_map(|r| match r {
                Row::Order(o) => Some((o.user, o.status.as_str())),
                _ => None,
            })
            .collect();
        assert_eq!(finished, vec![(8, "FILLED"), (7, "FILLED")]);
        // Per asset, a trade's entries (both sides and the fees) sum to zero.
        for asset in ["BTC", "USDT"] {
            let sum: i64 = traded
                .iter()
                .filter_map(|r| match r {
                    Row::Ledger(l) if l.asset == asset => Some(l.delta),
                    _ => None,
                })
                .sum();
            assert_eq!(sum, 0, "{asset}");
        }
        t.revoke_key(&key);
        assert_eq!(
            rows_after(&mut t, 4_000, 8),
            vec![Row::Key(KeyRow {
                api_key: key,
                user: 7,
                scopes: "READ,TRADE".into(),
                revoked: true,
                changed_ms: 4_000
            })]
        );
    }

    /// A trailing stop's delta goes from the view to the row and back as
    /// the same count of basis points; a stored delta no order can have
    /// (negative, or past u32) gives no view rather than a wrong one.
    #[test]
    fn a_trailing_delta_round_trips_and_a_bad_one_gives_no_view() {
        let row = OrderRow {
            user: 7,
            symbol: "BTCUSDT".into(),
            order_id: 3,
            client_order_id: "c3".into(),
            price: 2_900_000_000_000,
            orig_qty: 100_000_000,
            orig_quote_qty: 0,
            executed_qty: 0,
            cummulative_quote_qty: 0,
            status: "NEW".into(),
            time_in_force: "GTC".into(),
            order_type: "STOP_LOSS_LIMIT".into(),
            side: "SELL".into(),
            stop_price: 2_950_000_000_000,
            time_ms: 1_000,
            update_time_ms: 1_000,
            stp_mode: "NONE".into(),
            iceberg_qty: 0,
            trailing_delta: 250,
            order_list_id: 0,
        };
        let view = order_view(&row, MarketId(0)).expect("a view");
        assert_eq!(view.trailing_delta, 250);
        assert_eq!(order_row("BTCUSDT", &view), row);
        for bad in [-1, i64::from(u32::MAX) + 1] {
            let stored = OrderRow {
                trailing_delta: bad,
                ..row.clone()
            };
            assert_eq!(order_view(&stored, MarketId(0)), None, "{bad}");
        }
    }

    /// A leg of an order list keeps its list's id from the view to the
    /// row and back, the largest id included (the store, not the
    /// conversion, refuses one its column cannot hold); an order of no
    /// list is 0 both ways.
    #[test]
    fn an_order_list_id_round_trips_and_no_list_stays_zero() {
        let row = OrderRow {
            user: 7,
            symbol: "BTCUSDT".into(),
            order_id: 42,
            client_order_id: "leg1".into(),
            price: 3_100_000_000_000,
            orig_qty: 100_000_000,
            orig_quote_qty: 0,
            executed_qty: 0,
            cummulative_quote_qty: 0,
            status: "NEW".into(),
            time_in_force: "GTC".into(),
            order_type: "LIMIT_MAKER".into(),
            side: "SELL".into(),
            stop_price: 0,
            time_ms: 1_000,
            update_time_ms: 1_000,
            stp_mode: "NONE".into(),
            iceberg_qty: 0,
            trailing_delta: 0,
            order_list_id: 41,
        };
        let view = order_view(&row, MarketId(0)).expect("a view");
        assert_eq!(view.order_list_id, 41);
        assert_eq!(order_row("BTCUSDT", &view), row);
        for order_list_id in [0, u64::MAX] {
            let stored = OrderRow {
                order_list_id,
                ..row.clone()
            };
            let view = order_view(&stored, MarketId(0)).expect("a view");
            assert_eq!(view.order_list_id, order_list_id);
            assert_eq!(order_row("BTCUSDT", &view), stored);
        }
    }
}
