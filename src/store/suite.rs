//! The test suite every engine of the history store must pass, written
//! against `HistoryStore` only: exact rows after a scripted session,
//! exactly-once batches, list queries against a naive reference, and ten
//! thousand orders of one user all reachable.
//!
//! Each engine runs it from its own tests (SQLite below; PostgreSQL where
//! a test server is started).

use super::postgres::PgStore;
use super::rows::KeyRow;
use super::rows::{
    LedgerCause, LedgerRow, OrderRow, Row, TradeRow, TransferId, TransferRow, UserRow, ACCOUNT_EXTERNAL, ACCOUNT_FEES,
};
use super::shard::ReplicaSet;
use super::sqlite::SqliteStore;
use super::{Batch, HistoryStore, OrdersQuery, Progress, StoreError, TradesQuery, TransfersQuery, Window};
use futures_lite::future::block_on;

fn order(user: u64, symbol: &str, order_id: u64, status: &str, executed: i64, time_ms: u64) -> OrderRow {
    OrderRow {
        user,
        symbol: symbol.to_string(),
        order_id,
        client_order_id: format!("c{order_id}"),
        price: 3_000_000_000_000,
        orig_qty: 200_000_000,
        orig_quote_qty: 0,
        executed_qty: executed,
        cummulative_quote_qty: executed * 30_000,
        status: status.to_string(),
        time_in_force: "GTC".to_string(),
        order_type: "LIMIT".to_string(),
        side: "BUY".to_string(),
        stop_price: 0,
        time_ms,
        update_time_ms: time_ms + executed as u64 / 100_000_000,
        stp_mode: "NONE".to_string(),
        iceberg_qty: 0,
        trailing_delta: 0,
        order_list_id: 0,
    }
}

fn trade(user: u64, symbol: &str, trade_id: u64, order_id: u64, is_buyer: bool, time_ms: u64) -> TradeRow {
    TradeRow {
        user,
        symbol: symbol.to_string(),
        trade_id,
        order_id,
        price: 3_000_000_000_000,
        qty: 100_000_000,
        quote_qty: 3_000_000_000_000,
        commission: 100_000,
        commission_asset: if is_buyer { "BTC" } else { "USDT" }.to_string(),
        is_buyer,
        is_maker: !is_buyer,
        time_ms,
    }
}

fn ledger(account: u64, asset: &str, delta: i64, cause: LedgerCause, reference: u64) -> LedgerRow {
    LedgerRow {
        account,
        asset: asset.to_string(),
        delta,
        cause,
        reference,
        time_ms: 1_000,
    }
}

fn batch(shard: u32, generation: u64, lsn: u64, rows: Vec<Row>) -> Batch {
    Batch {
        shard,
        progress: Progress { generation, lsn },
        rows,
    }
}

/// A deposit, an order that fills in two trades, the trades' ledger
/// entries: every row reads back exactly as written, in its latest state.
pub(super) async fn scripted_session(store: &mut impl HistoryStore) {
    assert_eq!(store.migrate().await.expect("migrate"), 0);
    assert_eq!(store.progress(0).await.expect("progress"), None);
    let first = batch(
        0,
        1,
        3,
        vec![
            Row::User(UserRow {
                user: 2,
                name: "alice".into(),
                created_ms: 500,
            }),
            Row::Key(KeyRow {
                api_key: "000000000002abc".into(),
                user: 2,
                scopes: "READ,TRADE".into(),
                revoked: false,
                changed_ms: 600,
            }),
            Row::Ledger(ledger(
                ACCOUNT_EXTERNAL,
                "USDT",
                -10_000_000_000_000,
                LedgerCause::Deposit,
                1,
            )),
            Row::Ledger(ledger(2, "USDT", 10_000_000_000_000, LedgerCause::Deposit, 1)),
            Row::Order(order(2, "BTCUSDT", 10, "NEW", 0, 1_000)),
        ],
    );
    assert!(store.write(&first).await.expect("first batch"));
    let second = batch(
        0,
        1,
        7,
        vec![
            Row::Order(order(2, "BTCUSDT", 10, "PARTIALLY_FILLED", 100_000_000, 1_000)),
            Row::Trade(trade(2, "BTCUSDT", 1, 10, true, 1_001)),
            Row::Ledger(ledger(2, "BTC", 100_000_000, LedgerCause::Trade, 1)),
            Row::Ledger(ledger(2, "USDT", -3_000_000_000_000, LedgerCause::Trade, 1)),
            Row::Ledger(ledger(2, "BTC", -100_000, LedgerCause::Fee, 1)),
            Row::Ledger(ledger(ACCOUNT_FEES, "BTC", 100_000, LedgerCause::Fee, 1)),
            Row::Order(order(2, "BTCUSDT", 10, "FILLED", 200_000_000, 1_000)),
            Row::Trade(trade(2, "BTCUSDT", 2, 10, true, 1_002)),
        ],
    );
    assert!(store.write(&second).await.expect("second batch"));
    assert_eq!(
        store.progress(0).await.expect("progress"),
        Some(Progress { generation: 1, lsn: 7 })
    );
    let stored = store.order(2, "BTCUSDT", 10).await.expect("query").expect("the order");
    assert_eq!(stored, order(2, "BTCUSDT", 10, "FILLED", 200_000_000, 1_000));
    assert_eq!(
        store.order(3, "BTCUSDT", 10).await.expect("query"),
        None,
        "another user's order"
    );
    assert_eq!(
        store.order(2, "ETHBTC", 10).await.expect("query"),
        None,
        "another market"
    );
    let by_client = store.order_by_client_id(2, "BTCUSDT", "c10").await.expect("query");
    assert_eq!(by_client.map(|o| o.order_id), Some(10));
    let trades = store
        .trades(&TradesQuery {
            user: 2,
            symbol: "BTCUSDT",
            order_id: Some(10),
            from_id: None,
            start_ms: None,
            end_ms: None,
            limit: 500,
        })
        .await
        .expect("trades");
    assert_eq!(
        trades,
        vec![
            trade(2, "BTCUSDT", 1, 10, true, 1_001),
            trade(2, "BTCUSDT", 2, 10, true, 1_002)
        ]
    );
    let entries = store.ledger(2).await.expect("ledger");
    let deltas: Vec<(&str, i64, LedgerCause)> = entries.iter().map(|l| (l.asset.as_str(), l.delta, l.cause)).collect();
    assert_eq!(
        deltas,
        vec![
            ("USDT", 10_000_000_000_000, LedgerCause::Deposit),
            ("BTC", 100_000_000, LedgerCause::Trade),
            ("USDT", -3_000_000_000_000, LedgerCause::Trade),
            ("BTC", -100_000, LedgerCause::Fee),
        ]
    );
    assert_eq!(store.ledger(ACCOUNT_FEES).await.expect("fees")[0].delta, 100_000);
    let version = store.migrate().await.expect("migrate again");
    assert!(version >= 1, "the first migrate applied the schema: found {version}");
    assert_eq!(
        store.migrate().await.expect("once more"),
        version,
        "migrations are idempotent"
    );
}

/// A batch at or behind the stored progress changes nothing; a later
/// generation is ahead of every lsn of an earlier one; shards are
/// independent.
pub(super) async fn batches_apply_exactly_once(store: &mut impl HistoryStore) {
    store.migrate().await.expect("migrate");
    let trades = |id| vec![Row::Trade(trade(2, "BTCUSDT", id, 10, true, 1_000 + id))];
    assert!(store.write(&batch(0, 1, 5, trades(1))).await.expect("write"));
    assert!(
        !store.write(&batch(0, 1, 5, trades(1))).await.expect("replay"),
        "the same batch again"
    );
    assert!(
        !store.write(&batch(0, 1, 4, trades(9))).await.expect("older"),
        "a batch behind"
    );
    assert!(
        store.write(&batch(1, 1, 2, trades(3))).await.expect("shard 1"),
        "another shard's own progress"
    );
    assert!(store.write(&batch(0, 2, 1, trades(2))).await.expect("new generation"));
    assert_eq!(
        store.progress(0).await.expect("progress"),
        Some(Progress { generation: 2, lsn: 1 })
    );
    assert_eq!(
        store.progress(1).await.expect("progress"),
        Some(Progress { generation: 1, lsn: 2 })
    );
    let all = store.trades(&trades_query(2, "BTCUSDT", 1000)).await.expect("trades");
    let ids: Vec<u64> = all.iter().map(|t| t.trade_id).collect();
    assert_eq!(ids, vec![1, 2, 3], "no duplicate, nothing from the skipped batch");
    // A row that collides inside an applied batch fails it whole.
    let collide = batch(
        0,
        2,
        2,
        vec![
            Row::Trade(trade(2, "BTCUSDT", 50, 10, true, 1_050)),
            Row::Trade(trade(2, "BTCUSDT", 50, 10, true, 1_050)),
        ],
    );
    assert!(matches!(store.write(&collide).await, Err(StoreError::Engine(_))));
    let after = store.trades(&trades_query(2, "BTCUSDT", 1000)).await.expect("trades");
    assert_eq!(after.len(), 3, "a failed batch leaves no row");
    assert_eq!(
        store.progress(0).await.expect("progress"),
        Some(Progress { generation: 2, lsn: 1 })
    );
}

fn trades_query(user: u64, symbol: &str, limit: usize) -> TradesQuery<'_> {
    TradesQuery {
        user,
        symbol,
        order_id: None,
        from_id: None,
        start_ms: None,
        end_ms: None,
        limit,
    }
}

/// A deterministic stream of numbers for the random sessions.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % below
    }
}

/// The naive reference of the list queries: filter, order by id, window.
fn reference<T: Clone>(
    rows: &[T],
    id: impl Fn(&T) -> u64,
    keep: impl Fn(&T) -> bool,
    window: Window,
    limit: usize,
) -> Vec<T> {
    let mut kept: Vec<T> = rows.iter().filter(|r| keep(r)).cloned().collect();
    kept.sort_by_key(&id);
    let limit = limit.clamp(1, super::QUERY_ROWS_MAX);
    match window {
        Window::Oldest => kept.truncate(limit),
        Window::Newest => {
            let skip = kept.len().saturating_sub(limit);
            kept.drain(..skip);
        }
    }
    kept
}

/// Random orders and trades of three users in two markets, then hundreds
/// of random `allOrders` and `myTrades` queries, each equal to the naive
/// reference.
pub(super) async fn list_queries_match_the_reference(store: &mut impl HistoryStore) {
    store.migrate().await.expect("migrate");
    let mut rng = Lcg(0x5eed);
    let symbols = ["BTCUSDT", "ETHBTC"];
    let mut orders = Vec::new();
    let mut trades = Vec::new();
    for lsn in 1..=40u64 {
        let mut rows = Vec::new();
        for _ in 0..25 {
            let user = 2 + rng.next(3);
            let symbol = symbols[rng.next(2) as usize];
            let id = orders.len() as u64 + 1;
            let time_ms = 10_000 + id * 7 + rng.next(5);
            let o = order(user, symbol, id, "NEW", 0, time_ms);
            rows.push(Row::Order(o.clone()));
            orders.push(o);
            let t = trade(user, symbol, id, id, rng.next(2) == 0, time_ms + 1);
            rows.push(Row::Trade(t.clone()));
            trades.push(t);
        }
        assert!(store.write(&batch(0, 1, lsn, rows)).await.expect("write"));
    }
    for _ in 0..300 {
        let user = 2 + rng.next(3);
        let symbol = symbols[rng.next(2) as usize];
        let from_id = (rng.next(3) == 0).then(|| rng.next(1_100));
        let start_ms = (rng.next(3) == 0).then(|| 10_000 + rng.next(7_000));
        let end_ms = (rng.next(3) == 0).then(|| 10_000 + rng.next(8_000));
        let limit = [1, 7, 50, 500, 1000, 5000][rng.next(6) as usize];
        let q = OrdersQuery {
            user,
            symbol,
            from_id,
            start_ms,
            end_ms,
            limit,
        };
        let keep = |o: &OrderRow| {
            o.user == user
                && o.symbol == symbol
                && o.order_id >= from_id.unwrap_or(0)
                && o.time_ms >= start_ms.unwrap_or(0)
                && o.time_ms <= end_ms.unwrap_or(u64::MAX)
        };
        let expected = reference(&orders, |o| o.order_id, keep, q.window(), limit);
        assert_eq!(store.orders(&q).await.expect("orders"), expected, "{q:?}");
        let order_id = (rng.next(4) == 0).then(|| 1 + rng.next(1_000));
        let tq = TradesQuery {
            user,
            symbol,
            order_id,
            from_id,
            start_ms,
            end_ms,
            limit,
        };
        let keep = |t: &TradeRow| {
            t.user == user
                && t.symbol == symbol
                && order_id.is_none_or(|o| t.order_id == o)
                && t.trade_id >= from_id.unwrap_or(0)
                && t.time_ms >= start_ms.unwrap_or(0)
                && t.time_ms <= end_ms.unwrap_or(u64::MAX)
        };
        let expected = reference(&trades, |t| t.trade_id, keep, tq.window(), limit);
        assert_eq!(store.trades(&tq).await.expect("trades"), expected, "{tq:?}");
    }
}

/// Ten thousand orders of one user: paging with `orderId` reaches every
/// one, once, in order.
pub(super) async fn ten_thousand_orders_are_all_queryable(store: &mut impl HistoryStore) {
    const ORDERS: u64 = 10_000;
    store.migrate().await.expect("migrate");
    for chunk in 0..ORDERS / 1_000 {
        let rows = (1..=1_000)
            .map(|i| {
                let id = chunk * 1_000 + i;
                Row::Order(order(7, "BTCUSDT", id, "CANCELED", 0, 5_000 + id))
            })
            .collect();
        assert!(store.write(&batch(3, 1, chunk + 1, rows)).await.expect("write"));
    }
    let mut seen = Vec::new();
    let mut next = Some(1);
    while let Some(from_id) = next {
        let page = store
            .orders(&OrdersQuery {
                user: 7,
                symbol: "BTCUSDT",
                from_id: Some(from_id),
                start_ms: None,
                end_ms: None,
                limit: 1000,
            })
            .await
            .expect("a page");
        next = page.last().filter(|_| page.len() == 1000).map(|o| o.order_id + 1);
        seen.extend(page.into_iter().map(|o| o.order_id));
    }
    assert_eq!(seen, (1..=ORDERS).collect::<Vec<_>>());
    let newest = store
        .orders(&OrdersQuery {
            user: 7,
            symbol: "BTCUSDT",
            from_id: None,
            start_ms: None,
            end_ms: None,
            limit: 3,
        })
        .await
        .expect("newest");
    let ids: Vec<u64> = newest.iter().map(|o| o.order_id).collect();
    assert_eq!(ids, vec![ORDERS - 2, ORDERS - 1, ORDERS]);
}

/// An iceberg order's `icebergQty` reads back exactly through every query
/// the order endpoints make (by id, by client id, the list) and the
/// conversion to the engine's view they answer from, after a second batch
/// updated the order's row; a plain order's stays zero.
pub(super) async fn an_iceberg_order_keeps_its_iceberg_qty(store: &mut impl HistoryStore) {
    // 12.34567891: whole units and every one of the eight decimals, so
    // that a lost digit or a wrong scale shows.
    const ICEBERG_QTY: i64 = 1_234_567_891;
    let iceberg = |status: &str, executed: i64| {
        let mut o = order(2, "BTCUSDT", 21, status, executed, 2_000);
        o.orig_qty = 5_000_000_000;
        o.iceberg_qty = ICEBERG_QTY;
        o
    };
    let views = special_order_reads_back(store, 21, iceberg).await;
    let read: Vec<_> = views.iter().map(|v| v.iceberg_qty).collect();
    let (iceberg_qty, zero) = (tradsys_engine::num::Qty(ICEBERG_QTY), tradsys_engine::num::Qty::ZERO);
    assert_eq!(read, vec![iceberg_qty, iceberg_qty, iceberg_qty, zero]);
}

/// A trailing stop's `trailingDelta` reads back exactly, as the plain
/// count of basis points it is (no scaling), the same way; an order that
/// does not trail reads 0.
pub(super) async fn a_trailing_stop_keeps_its_trailing_delta(store: &mut impl HistoryStore) {
    // 250 basis points: inside Binance's 10..=2000, and a value that a
    // scaling by 10⁻⁸ either way would turn into something else.
    const TRAILING_DELTA: u32 = 250;
    let trailing = |status: &str, executed: i64| {
        let mut o = order(2, "BTCUSDT", 31, status, executed, 3_000);
        o.order_type = "STOP_LOSS_LIMIT".to_string();
        o.side = "SELL".to_string();
        o.stop_price = 2_900_000_000_000;
        o.trailing_delta = i64::from(TRAILING_DELTA);
        o
    };
    let views = special_order_reads_back(store, 31, trailing).await;
    let read: Vec<_> = views.iter().map(|v| v.trailing_delta).collect();
    assert_eq!(read, vec![TRAILING_DELTA, TRAILING_DELTA, TRAILING_DELTA, 0]);
}

/// A leg of an order list (OCO, OTO, OTOCO) keeps its `orderListId`
/// exactly, the same way; an order of no list reads 0 (which the API
/// reports as -1). A list id past `i64::MAX`, which the column cannot
/// hold, fails the batch as corrupt, and nothing of it is written.
pub(super) async fn an_order_of_a_list_keeps_its_order_list_id(store: &mut impl HistoryStore) {
    // Past u32::MAX, so that a 32-bit column or cast on the way would
    // show.
    const ORDER_LIST_ID: u64 = (1 << 32) + 41;
    let leg = |status: &str, executed: i64| {
        let mut o = order(2, "BTCUSDT", 41, status, executed, 4_000);
        o.order_type = "LIMIT_MAKER".to_string();
        o.side = "SELL".to_string();
        o.order_list_id = ORDER_LIST_ID;
        o
    };
    let views = special_order_reads_back(store, 41, leg).await;
    let read: Vec<_> = views.iter().map(|v| v.order_list_id).collect();
    assert_eq!(read, vec![ORDER_LIST_ID, ORDER_LIST_ID, ORDER_LIST_ID, 0]);

    let mut too_large = order(2, "BTCUSDT", 43, "NEW", 0, 4_002);
    too_large.order_list_id = i64::MAX as u64 + 1;
    let refused = batch(0, 1, 3, vec![Row::Order(too_large)]);
    assert!(matches!(store.write(&refused).await, Err(StoreError::Corrupt(_))));
    assert_eq!(
        store.progress(0).await.expect("progress"),
        Some(Progress { generation: 1, lsn: 2 })
    );
    assert_eq!(store.order(2, "BTCUSDT", 43).await.expect("query"), None);
}

/// Writes order `id` as `special` makes it (NEW, then PARTIALLY_FILLED
/// through the upsert of its row) next to a plain order `id + 1`, reads
/// them back by id, by client id and as the list, asserts the rows are
/// exactly what was written, and returns the engine's views of the three
/// reads of the special order and of the plain one.
async fn special_order_reads_back(
    store: &mut impl HistoryStore,
    id: u64,
    special: impl Fn(&str, i64) -> OrderRow,
) -> Vec<tradsys_engine::order::OrderView> {
    store.migrate().await.expect("migrate");
    let plain = order(2, "BTCUSDT", id + 1, "NEW", 0, special("NEW", 0).time_ms + 1);
    let first = vec![Row::Order(special("NEW", 0)), Row::Order(plain.clone())];
    assert!(store.write(&batch(0, 1, 1, first)).await.expect("write"));
    let second = vec![Row::Order(special("PARTIALLY_FILLED", 100_000_000))];
    assert!(store.write(&batch(0, 1, 2, second)).await.expect("write"));
    let expected = special("PARTIALLY_FILLED", 100_000_000);
    let by_id = store.order(2, "BTCUSDT", id).await.expect("query").expect("the order");
    assert_eq!(by_id, expected);
    let by_client = store
        .order_by_client_id(2, "BTCUSDT", &format!("c{id}"))
        .await
        .expect("query")
        .expect("the order by its client id");
    assert_eq!(by_client, expected);
    let listed = store
        .orders(&OrdersQuery {
            user: 2,
            symbol: "BTCUSDT",
            from_id: None,
            start_ms: None,
            end_ms: None,
            limit: 10,
        })
        .await
        .expect("orders");
    assert_eq!(listed, vec![expected, plain]);
    let market = tradsys_engine::order::MarketId(0);
    [&by_id, &by_client, &listed[0], &listed[1]]
        .into_iter()
        .map(|row| super::convert::order_view(row, market).expect("a view"))
        .collect()
}

/// The insert of an order as a version 3 schema has it (no
/// `iceberg_qty`), `price` and `orig_qty` written as the engine stores
/// money: `order(2, "BTCUSDT", order_id, "CANCELED", 0, time_ms)`.
fn version_3_order_sql(order_id: u64, time_ms: u64, price: &str, orig_qty: &str) -> String {
    format!(
        "INSERT INTO orders (order_id, user_id, symbol, client_order_id, price, orig_qty, orig_quote_qty,
            executed_qty, cummulative_quote_qty, status, time_in_force, order_type, side, stop_price, time_ms,
            update_time_ms, stp_mode)
         VALUES ({order_id}, 2, 'BTCUSDT', 'c{order_id}', {price}, {orig_qty}, 0, 0, 0, 'CANCELED', 'GTC', 'LIMIT',
            'BUY', 0, {time_ms}, {time_ms}, 'NONE')"
    )
}

/// The insert of an order as a version 4 schema has it (no
/// `trailing_delta`), money written as the engine stores it: `order(2,
/// "BTCUSDT", order_id, "CANCELED", 0, time_ms)` with `iceberg_qty`, to
/// show that the migration keeps the columns before it as they were.
fn version_4_order_sql(order_id: u64, time_ms: u64, price: &str, orig_qty: &str, iceberg_qty: &str) -> String {
    format!(
        "INSERT INTO orders (order_id, user_id, symbol, client_order_id, price, orig_qty, orig_quote_qty,
            executed_qty, cummulative_quote_qty, status, time_in_force, order_type, side, stop_price, time_ms,
            update_time_ms, stp_mode, iceberg_qty)
         VALUES ({order_id}, 2, 'BTCUSDT', 'c{order_id}', {price}, {orig_qty}, 0, 0, 0, 'CANCELED', 'GTC', 'LIMIT',
            'BUY', 0, {time_ms}, {time_ms}, 'NONE', {iceberg_qty})"
    )
}

/// The order `version_4_order_sql` writes, as it reads back.
fn version_4_order(order_id: u64, time_ms: u64, iceberg_qty: i64) -> OrderRow {
    let mut o = order(2, "BTCUSDT", order_id, "CANCELED", 0, time_ms);
    o.iceberg_qty = iceberg_qty;
    o
}

/// The insert of an order as a version 5 schema has it (no
/// `order_list_id`), money written as the engine stores it: `order(2,
/// "BTCUSDT", order_id, "CANCELED", 0, time_ms)` with `iceberg_qty` and
/// `trailing_delta`, to show that the migration keeps the columns before
/// it as they were.
fn version_5_order_sql(
    order_id: u64,
    time_ms: u64,
    price: &str,
    orig_qty: &str,
    iceberg_qty: &str,
    trailing_delta: u32,
) -> String {
    format!(
        "INSERT INTO orders (order_id, user_id, symbol, client_order_id, price, orig_qty, orig_quote_qty,
            executed_qty, cummulative_quote_qty, status, time_in_force, order_type, side, stop_price, time_ms,
            update_time_ms, stp_mode, iceberg_qty, trailing_delta)
         VALUES ({order_id}, 2, 'BTCUSDT', 'c{order_id}', {price}, {orig_qty}, 0, 0, 0, 'CANCELED', 'GTC', 'LIMIT',
            'BUY', 0, {time_ms}, {time_ms}, 'NONE', {iceberg_qty}, {trailing_delta})"
    )
}

/// The order `version_5_order_sql` writes, as it reads back.
fn version_5_order(order_id: u64, time_ms: u64, iceberg_qty: i64, trailing_delta: u32) -> OrderRow {
    let mut o = version_4_order(order_id, time_ms, iceberg_qty);
    o.trailing_delta = i64::from(trailing_delta);
    o
}

/// A user's side and the outside world's side of one transfer.
fn transfer_entries(user: u64, asset: &str, delta: i64, reference: u64, time_ms: u64) -> [Row; 2] {
    let cause = if delta > 0 {
        LedgerCause::Deposit
    } else {
        LedgerCause::Withdrawal
    };
    let entry = |account, delta| {
        Row::Ledger(LedgerRow {
            account,
            asset: asset.to_string(),
            delta,
            cause,
            reference,
            time_ms,
        })
    };
    [entry(ACCOUNT_EXTERNAL, -delta), entry(user, delta)]
}

fn transfer(shard: u32, generation: u64, lsn: u64, asset: &str, amount: i64, time_ms: u64) -> TransferRow {
    TransferRow {
        id: TransferId { shard, generation, lsn },
        asset: asset.to_string(),
        amount,
        time_ms,
    }
}

/// Deposits and withdrawals of two users over two shards and two
/// generations, among trades and fees: each query selects exactly its
/// user's transfers of its kind, asset, window and ids, newest first (the
/// id breaks ties of time), the newest `limit`.
pub(super) async fn transfers_are_selected_newest_first(store: &mut impl HistoryStore) {
    store.migrate().await.expect("migrate");
    let mut first = Vec::new();
    first.extend(transfer_entries(2, "USDT", 500_000_000_000, 3, 1_000));
    first.extend(transfer_entries(2, "BTC", 100_000_000, 4, 1_000));
    first.extend(transfer_entries(3, "BTC", 700_000_000, 5, 1_100));
    first.push(Row::Ledger(ledger(2, "BTC", 50_000_000, LedgerCause::Trade, 9)));
    first.push(Row::Ledger(ledger(2, "BTC", -5_000, LedgerCause::Fee, 9)));
    first.extend(transfer_entries(2, "USDT", -20_000_000_000, 6, 2_000));
    assert!(store.write(&batch(0, 1, 6, first)).await.expect("shard 0"));
    let mut second = Vec::new();
    second.extend(transfer_entries(2, "ETH", 3_000_000_000, 3, 1_000));
    second.extend(transfer_entries(2, "BTC", -25_000_000, 8, 3_000));
    assert!(store.write(&batch(1, 1, 8, second)).await.expect("shard 1"));
    let third = transfer_entries(2, "USDT", 10_000_000_000, 2, 4_000).to_vec();
    assert!(store.write(&batch(0, 2, 2, third)).await.expect("generation 2"));

    let query = |cause, asset: Option<&str>, start_ms, end_ms, limit| TransfersQuery {
        user: 2,
        cause,
        asset: asset.map(str::to_string),
        start_ms,
        end_ms,
        ids: None,
        limit,
    };
    let deposits = query(LedgerCause::Deposit, None, 0, u64::MAX, 1000);
    let withdrawals = query(LedgerCause::Withdrawal, None, 0, u64::MAX, 1000);
    let table: Vec<(TransfersQuery, Vec<TransferRow>)> = vec![
        (
            deposits.clone(),
            vec![
                transfer(0, 2, 2, "USDT", 10_000_000_000, 4_000),
                transfer(1, 1, 3, "ETH", 3_000_000_000, 1_000),
                transfer(0, 1, 4, "BTC", 100_000_000, 1_000),
                transfer(0, 1, 3, "USDT", 500_000_000_000, 1_000),
            ],
        ),
        (
            withdrawals.clone(),
            vec![
                transfer(1, 1, 8, "BTC", 25_000_000, 3_000),
                transfer(0, 1, 6, "USDT", 20_000_000_000, 2_000),
            ],
        ),
        (
            query(LedgerCause::Deposit, Some("USDT"), 0, u64::MAX, 1000),
            vec![
                transfer(0, 2, 2, "USDT", 10_000_000_000, 4_000),
                transfer(0, 1, 3, "USDT", 500_000_000_000, 1_000),
            ],
        ),
        (
            query(LedgerCause::Deposit, None, 1_000, 3_999, 1000),
            vec![
                transfer(1, 1, 3, "ETH", 3_000_000_000, 1_000),
                transfer(0, 1, 4, "BTC", 100_000_000, 1_000),
                transfer(0, 1, 3, "USDT", 500_000_000_000, 1_000),
            ],
        ),
        (
            query(LedgerCause::Deposit, None, 0, u64::MAX, 2),
            vec![
                transfer(0, 2, 2, "USDT", 10_000_000_000, 4_000),
                transfer(1, 1, 3, "ETH", 3_000_000_000, 1_000),
            ],
        ),
        (query(LedgerCause::Deposit, Some("EUR"), 0, u64::MAX, 1000), vec![]),
        (query(LedgerCause::Withdrawal, None, 3_001, u64::MAX, 1000), vec![]),
        (
            TransfersQuery {
                ids: Some(vec![
                    TransferId {
                        shard: 0,
                        generation: 1,
                        lsn: 3,
                    },
                    TransferId {
                        shard: 0,
                        generation: 2,
                        lsn: 3,
                    },
                ]),
                ..deposits.clone()
            },
            vec![transfer(0, 1, 3, "USDT", 500_000_000_000, 1_000)],
        ),
        (
            TransfersQuery {
                ids: Some(Vec::new()),
                ..deposits.clone()
            },
            vec![],
        ),
        (
            TransfersQuery {
                user: 3,
                ..deposits.clone()
            },
            vec![transfer(0, 1, 5, "BTC", 700_000_000, 1_100)],
        ),
        (
            TransfersQuery {
                user: ACCOUNT_FEES,
                ..withdrawals.clone()
            },
            vec![],
        ),
    ];
    for (query, expected) in table {
        assert_eq!(store.transfers(&query).await.expect("transfers"), expected, "{query:?}");
    }
}

/// Candles from the buyer's rows of 600 trades written by two shards
/// equal the candles memory makes of the same trades, for every interval
/// and window; the progress comes back from the same read.
pub(super) async fn candles_match_the_ring(store: &mut impl HistoryStore) {
    use crate::marketdata::{Interval, MarketData, MarketDataLimits, TapeTrade};
    store.migrate().await.expect("migrate");
    let start_ms = 1_767_225_000_000;
    let mut memory = MarketData::new(MarketDataLimits::DEFAULT);
    let mut rows: [Vec<Row>; 2] = [Vec::new(), Vec::new()];
    for id in 1..=600u64 {
        let price = 3_000_000_000_000 + (id * 7_919 % 211) as i64 * 100_000_000;
        let qty = 10_000_000 * (id % 7 + 1) as i64;
        let quote_qty = (i128::from(price) * i128::from(qty) / 100_000_000) as i64;
        let time_ms = start_ms + id * 9_301;
        let buyer_is_maker = id % 3 == 0;
        memory.record(&TapeTrade {
            id,
            price: tradsys_engine::num::Price(price),
            qty: tradsys_engine::num::Qty(qty),
            quote_qty: tradsys_engine::num::Amount(quote_qty),
            time_ms,
            is_buyer_maker: buyer_is_maker,
            taker_order: id,
        });
        // Buyer and seller live on either shard; other markets' rows are
        // there too.
        for (user, is_buyer) in [(id % 5, true), (id % 3 + 10, false)] {
            let mut row = trade(user, "BTCUSDT", id, id, is_buyer, time_ms);
            (row.price, row.qty, row.quote_qty) = (price, qty, quote_qty);
            row.is_maker = if is_buyer { buyer_is_maker } else { !buyer_is_maker };
            rows[(user % 2) as usize].push(Row::Trade(row));
        }
        let mut other = trade(1, "ETHUSDT", id, id, true, time_ms);
        other.price = 1;
        rows[0].push(Row::Trade(other));
    }
    let [first, second] = rows;
    assert!(store.write(&batch(0, 3, 40, first)).await.expect("write"));
    assert!(store.write(&batch(1, 2, 9, second)).await.expect("write"));
    let end_ms = start_ms + 601 * 9_301;
    for interval in [
        Interval::S1,
        Interval::M1,
        Interval::M15,
        Interval::H1,
        Interval::D1,
        Interval::W1,
        Interval::Mo1,
    ] {
        // Windows from one candle's open to another's: every trade, a
        // middle stretch, and the candle of the last trade alone.
        let after = |time_ms: u64| interval.nth_open_ms(interval.candle_number(time_ms) + 1);
        let windows = [
            (interval.open_time_ms(start_ms), after(end_ms)),
            (
                interval.open_time_ms(start_ms + 1_000_000),
                interval.open_time_ms(start_ms + 3_000_000),
            ),
            (interval.open_time_ms(end_ms - 9_301), after(end_ms - 9_301)),
        ];
        for (from_ms, to_ms) in windows {
            let query = super::CandlesQuery {
                symbol: "BTCUSDT".to_string(),
                interval,
                from_ms,
                to_ms,
            };
            let parts = store.candles(&query, &[1, 0, 7]).await.expect("candles");
            let mut merged = std::collections::BTreeMap::new();
            super::merge_candles(&mut merged, parts.candles);
            let got: Vec<_> = merged.into_values().collect();
            let expected = if to_ms > from_ms {
                memory.klines(interval, Some(from_ms), Some(to_ms - 1), 1000)
            } else {
                Vec::new()
            };
            assert_eq!(got, expected, "{interval:?} {from_ms}..{to_ms}");
            assert_eq!(
                parts.progress,
                [
                    (1, Some(Progress { generation: 2, lsn: 9 })),
                    (0, Some(Progress { generation: 3, lsn: 40 })),
                    (7, None)
                ]
            );
        }
    }
    // Another market's candles are its own.
    let query = super::CandlesQuery {
        symbol: "ETHUSDT".to_string(),
        interval: Interval::D1,
        from_ms: Interval::D1.open_time_ms(start_ms),
        to_ms: Interval::D1.nth_open_ms(Interval::D1.candle_number(end_ms) + 1),
    };
    assert_eq!(
        store.first_trade_ms("BTCUSDT").await.expect("first"),
        Some(start_ms + 9_301)
    );
    assert_eq!(store.first_trade_ms("BNBUSDT").await.expect("first"), None);
    let eth = store.candles(&query, &[]).await.expect("candles");
    assert_eq!(eth.candles.iter().map(|c| c.trade_count).sum::<u64>(), 600);
    assert!(eth.candles.iter().all(|c| c.high.0 == 1));
}

#[test]
fn sqlite_candles_match_the_ring() {
    block_on(candles_match_the_ring(&mut SqliteStore::in_memory().expect("sqlite")));
}

#[test]
fn sqlite_scripted_session() {
    block_on(scripted_session(&mut SqliteStore::in_memory().expect("sqlite")));
}

#[test]
fn sqlite_batches_apply_exactly_once() {
    block_on(batches_apply_exactly_once(
        &mut SqliteStore::in_memory().expect("sqlite"),
    ));
}

#[test]
fn sqlite_list_queries_match_the_reference() {
    block_on(list_queries_match_the_reference(
        &mut SqliteStore::in_memory().expect("sqlite"),
    ));
}

#[test]
fn sqlite_transfers_are_selected_newest_first() {
    block_on(transfers_are_selected_newest_first(
        &mut SqliteStore::in_memory().expect("sqlite"),
    ));
}

#[test]
fn sqlite_an_iceberg_order_keeps_its_iceberg_qty() {
    block_on(an_iceberg_order_keeps_its_iceberg_qty(
        &mut SqliteStore::in_memory().expect("sqlite"),
    ));
}

#[test]
fn sqlite_a_trailing_stop_keeps_its_trailing_delta() {
    block_on(a_trailing_stop_keeps_its_trailing_delta(
        &mut SqliteStore::in_memory().expect("sqlite"),
    ));
}

#[test]
fn sqlite_an_order_of_a_list_keeps_its_order_list_id() {
    block_on(an_order_of_a_list_keeps_its_order_list_id(
        &mut SqliteStore::in_memory().expect("sqlite"),
    ));
}

#[test]
fn sqlite_ten_thousand_orders_are_all_queryable() {
    block_on(ten_thousand_orders_are_all_queryable(
        &mut SqliteStore::in_memory().expect("sqlite"),
    ));
}

/// What was written survives closing and reopening the file, and the
/// schema is not applied twice.
#[test]
fn sqlite_file_keeps_rows_and_progress_across_reopen() {
    block_on(file_keeps_rows_and_progress_across_reopen());
}

async fn file_keeps_rows_and_progress_across_reopen() {
    let dir = std::env::temp_dir().join(format!("tradsys-store-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temp dir");
    let path = dir.join(super::sqlite::HISTORY_FILE);
    {
        let mut store = SqliteStore::open(&path).expect("open");
        assert_eq!(store.migrate().await.expect("migrate"), 0);
        let rows = vec![Row::Order(order(2, "BTCUSDT", 1, "NEW", 0, 1_000))];
        assert!(store.write(&batch(0, 1, 1, rows)).await.expect("write"));
    }
    let mut store = SqliteStore::open(&path).expect("reopen");
    assert_eq!(store.migrate().await.expect("migrate"), 6);
    assert_eq!(
        store.progress(0).await.expect("progress"),
        Some(Progress { generation: 1, lsn: 1 })
    );
    assert!(store.order(2, "BTCUSDT", 1).await.expect("query").is_some());
    drop(store);
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

/// A database written by a newer build is refused, not misread.
#[test]
fn sqlite_refuses_a_newer_schema() {
    block_on(refuses_a_newer_schema());
}

async fn refuses_a_newer_schema() {
    let mut store = SqliteStore::in_memory().expect("sqlite");
    store.migrate().await.expect("migrate");
    store.set_version_for_test(99);
    assert!(matches!(
        store.migrate().await,
        Err(StoreError::SchemaTooNew { found: 99, known: 6 })
    ));
}

/// A file at schema version 3 with an order in it migrates through
/// version 4 (to the current version), and the order reads back as the
/// plain order it was: the new column's default, icebergQty 0.
#[test]
fn sqlite_orders_stored_before_version_4_read_as_plain_orders() {
    let dir = std::env::temp_dir().join(format!("tradsys-store-v3-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temp dir");
    let path = dir.join(super::sqlite::HISTORY_FILE);
    {
        let conn = rusqlite::Connection::open(&path).expect("open");
        for (version, sql) in super::sqlite::MIGRATIONS.iter().filter(|(v, _)| *v <= 3) {
            conn.execute_batch(sql).expect("an older migration");
            conn.pragma_update(None, "user_version", version).expect("the version");
        }
        conn.execute_batch(&version_3_order_sql(5, 1_000, "3000000000000", "200000000"))
            .expect("an order of version 3");
    }
    block_on(async {
        let mut store = SqliteStore::open(&path).expect("reopen");
        assert_eq!(store.migrate().await.expect("migrate"), 3);
        assert_eq!(store.migrate().await.expect("migrate again"), 6);
        let stored = store.order(2, "BTCUSDT", 5).await.expect("query");
        assert_eq!(stored, Some(order(2, "BTCUSDT", 5, "CANCELED", 0, 1_000)));
    });
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

/// A file at schema version 4 with orders in it migrates through version
/// 5 (to the current version),
/// and the orders read back as they were, an iceberg still an iceberg,
/// and as orders that do not trail: the new column's default,
/// trailingDelta 0, also in the engine's view the endpoints answer from.
#[test]
fn sqlite_orders_stored_before_version_5_read_as_orders_that_do_not_trail() {
    let dir = std::env::temp_dir().join(format!("tradsys-store-v4-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temp dir");
    let path = dir.join(super::sqlite::HISTORY_FILE);
    let stored_before = [(5, 1_000, 0), (6, 1_001, 10_000_000)];
    {
        let conn = rusqlite::Connection::open(&path).expect("open");
        for (version, sql) in super::sqlite::MIGRATIONS.iter().filter(|(v, _)| *v <= 4) {
            conn.execute_batch(sql).expect("an older migration");
            conn.pragma_update(None, "user_version", version).expect("the version");
        }
        for (order_id, time_ms, iceberg_qty) in stored_before {
            let sql = version_4_order_sql(
                order_id,
                time_ms,
                "3000000000000",
                "200000000",
                &iceberg_qty.to_string(),
            );
            conn.execute_batch(&sql).expect("an order of version 4");
        }
    }
    block_on(async {
        let mut store = SqliteStore::open(&path).expect("reopen");
        assert_eq!(store.migrate().await.expect("migrate"), 4);
        assert_eq!(store.migrate().await.expect("migrate again"), 6);
        for (order_id, time_ms, iceberg_qty) in stored_before {
            let stored = store.order(2, "BTCUSDT", order_id).await.expect("query");
            assert_eq!(stored, Some(version_4_order(order_id, time_ms, iceberg_qty)));
            let market = tradsys_engine::order::MarketId(0);
            let view = stored.and_then(|row| super::convert::order_view(&row, market));
            assert_eq!(view.map(|v| v.trailing_delta), Some(0));
        }
    });
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

/// A file at schema version 5 with orders in it migrates to version 6,
/// and the orders read back as they were, an iceberg still an iceberg
/// and a trailing stop still trailing, and as orders of no list: the new
/// column's default, orderListId 0, also in the engine's view the
/// endpoints answer from.
#[test]
fn sqlite_orders_stored_before_version_6_read_as_orders_of_no_list() {
    let dir = std::env::temp_dir().join(format!("tradsys-store-v5-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temp dir");
    let path = dir.join(super::sqlite::HISTORY_FILE);
    let stored_before = [(5, 1_000, 0, 0), (6, 1_001, 10_000_000, 250)];
    {
        let conn = rusqlite::Connection::open(&path).expect("open");
        for (version, sql) in super::sqlite::MIGRATIONS.iter().filter(|(v, _)| *v <= 5) {
            conn.execute_batch(sql).expect("an older migration");
            conn.pragma_update(None, "user_version", version).expect("the version");
        }
        for (order_id, time_ms, iceberg_qty, trailing_delta) in stored_before {
            let sql = version_5_order_sql(
                order_id,
                time_ms,
                "3000000000000",
                "200000000",
                &iceberg_qty.to_string(),
                trailing_delta,
            );
            conn.execute_batch(&sql).expect("an order of version 5");
        }
    }
    block_on(async {
        let mut store = SqliteStore::open(&path).expect("reopen");
        assert_eq!(store.migrate().await.expect("migrate"), 5);
        assert_eq!(store.migrate().await.expect("migrate again"), 6);
        for (order_id, time_ms, iceberg_qty, trailing_delta) in stored_before {
            let stored = store.order(2, "BTCUSDT", order_id).await.expect("query");
            assert_eq!(
                stored,
                Some(version_5_order(order_id, time_ms, iceberg_qty, trailing_delta))
            );
            let market = tradsys_engine::order::MarketId(0);
            let view = stored.and_then(|row| super::convert::order_view(&row, market));
            assert_eq!(view.map(|v| v.order_list_id), Some(0));
        }
    });
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

/// Runs `test` on a glommio executor against a fresh database of `server`.
fn on_postgres<F, Fut>(server: &tradsys_pgtest::PgServer, database: &str, test: F)
where
    F: FnOnce(PgStore) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    server.psql(&format!("CREATE DATABASE {database}"));
    let url = format!(
        "host=127.0.0.1 port={} user={} dbname={database}",
        server.port(),
        tradsys_pgtest::SUPERUSER
    );
    glommio::LocalExecutorBuilder::default()
        .spawn(move || async move {
            let store = PgStore::connect(&url).await.expect("a PostgreSQL connection");
            test(store).await;
        })
        .expect("an executor")
        .join()
        .expect("the test's executor");
}

/// The shared suite on a real PostgreSQL server of the test's own.
#[test]
fn postgres_passes_the_suite() {
    let server = tradsys_pgtest::PgServer::start();
    on_postgres(
        &server,
        "scripted",
        |mut s| async move { scripted_session(&mut s).await },
    );
    on_postgres(&server, "once", |mut s| async move {
        batches_apply_exactly_once(&mut s).await
    });
    on_postgres(&server, "lists", |mut s| async move {
        list_queries_match_the_reference(&mut s).await
    });
    on_postgres(&server, "many", |mut s| async move {
        ten_thousand_orders_are_all_queryable(&mut s).await
    });
    on_postgres(&server, "transfers", |mut s| async move {
        transfers_are_selected_newest_first(&mut s).await
    });
    on_postgres(&server, "candles", |mut s| async move {
        candles_match_the_ring(&mut s).await
    });
    on_postgres(&server, "iceberg", |mut s| async move {
        an_iceberg_order_keeps_its_iceberg_qty(&mut s).await
    });
    on_postgres(&server, "trailing_stop", |mut s| async move {
        a_trailing_stop_keeps_its_trailing_delta(&mut s).await
    });
    on_postgres(&server, "order_list", |mut s| async move {
        an_order_of_a_list_keeps_its_order_list_id(&mut s).await
    });
}

/// A database at schema version 3 with orders in the default partition
/// and in a monthly one migrates through version 4 (to the current
/// version): the orders read back as
/// the plain orders they were (icebergQty 0), and the new column reaches
/// the partitions made before the migration and those made after.
#[test]
fn postgres_orders_stored_before_version_4_read_as_plain_orders() {
    const DEC_1_2026_MS: u64 = 1_796_083_200_000;
    const DEC_15_2026_MS: u64 = 1_797_292_800_000;
    let server = tradsys_pgtest::PgServer::start();
    on_postgres(&server, "before_iceberg", |mut s| async move {
        s.execute_for_test("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY)")
            .await;
        for (version, sql) in super::postgres::MIGRATIONS.iter().filter(|(v, _)| *v <= 3) {
            s.execute_for_test(sql).await;
            s.execute_for_test(&format!("INSERT INTO schema_migrations (version) VALUES ({version})"))
                .await;
        }
        assert_eq!(s.ensure_partitions(DEC_1_2026_MS, 1).await.expect("partitions"), 3);
        for (order_id, time_ms) in [(5, 1_000), (6, DEC_15_2026_MS)] {
            s.execute_for_test(&version_3_order_sql(order_id, time_ms, "30000.00000000", "2.00000000"))
                .await;
        }
        assert_eq!(s.migrate().await.expect("migrate"), 3);
        assert_eq!(s.migrate().await.expect("migrate again"), 6);
        for (order_id, time_ms) in [(5, 1_000), (6, DEC_15_2026_MS)] {
            let stored = s.order(2, "BTCUSDT", order_id).await.expect("query");
            assert_eq!(stored, Some(order(2, "BTCUSDT", order_id, "CANCELED", 0, time_ms)));
        }
        // New icebergs in the month partitioned before the migration and
        // in one made after it.
        let iceberg = |o: &mut OrderRow| o.iceberg_qty = 10_000_001;
        new_orders_read_back_in_old_and_new_partitions(&mut s, iceberg).await;
    });
    assert_eq!(
        server.psql_in(
            "before_iceberg",
            "SELECT tableoid::regclass, iceberg_qty FROM orders ORDER BY order_id"
        ),
        "orders_default|0.00000000\norders_202612|0.00000000\norders_202612|0.10000001\norders_202701|0.10000001"
    );
}

/// Orders 7 (December 2026, a month partitioned before the migration)
/// and 8 (January 2027, partitioned after it), each as `shape` makes it,
/// are written and read back exactly.
async fn new_orders_read_back_in_old_and_new_partitions(s: &mut PgStore, shape: impl Fn(&mut OrderRow)) {
    const DEC_1_2026_MS: u64 = 1_796_083_200_000;
    const DEC_15_2026_MS: u64 = 1_797_292_800_000;
    const JAN_15_2027_MS: u64 = 1_799_971_200_000;
    assert_eq!(s.ensure_partitions(DEC_1_2026_MS, 2).await.expect("partitions"), 3);
    let mut rows = Vec::new();
    for (order_id, time_ms) in [(7, DEC_15_2026_MS), (8, JAN_15_2027_MS)] {
        let mut o = order(2, "BTCUSDT", order_id, "NEW", 0, time_ms);
        shape(&mut o);
        rows.push(Row::Order(o));
    }
    assert!(s.write(&batch(0, 1, 1, rows.clone())).await.expect("write"));
    for row in rows {
        let Row::Order(o) = row else { continue };
        let stored = s.order(2, "BTCUSDT", o.order_id).await.expect("query");
        assert_eq!(stored, Some(o));
    }
}

/// A database at schema version 4 with orders in the default partition
/// and in a monthly one migrates through version 5 (to the current
/// version): the orders read back as
/// they were, an iceberg still an iceberg, and as orders that do not
/// trail (trailingDelta 0, also in the engine's view), and the new column
/// reaches the partitions made before the migration and those made after.
#[test]
fn postgres_orders_stored_before_version_5_read_as_orders_that_do_not_trail() {
    const DEC_1_2026_MS: u64 = 1_796_083_200_000;
    const DEC_15_2026_MS: u64 = 1_797_292_800_000;
    let server = tradsys_pgtest::PgServer::start();
    on_postgres(&server, "before_trailing", |mut s| async move {
        s.execute_for_test("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY)")
            .await;
        for (version, sql) in super::postgres::MIGRATIONS.iter().filter(|(v, _)| *v <= 4) {
            s.execute_for_test(sql).await;
            s.execute_for_test(&format!("INSERT INTO schema_migrations (version) VALUES ({version})"))
                .await;
        }
        assert_eq!(s.ensure_partitions(DEC_1_2026_MS, 1).await.expect("partitions"), 3);
        // Each order's iceberg quantity as the NUMERIC it is stored as and
        // as the units it reads back as.
        let stored_before = [(5, 1_000, "0", 0), (6, DEC_15_2026_MS, "0.10000000", 10_000_000)];
        for (order_id, time_ms, iceberg, _) in stored_before {
            s.execute_for_test(&version_4_order_sql(
                order_id,
                time_ms,
                "30000.00000000",
                "2.00000000",
                iceberg,
            ))
            .await;
        }
        assert_eq!(s.migrate().await.expect("migrate"), 4);
        assert_eq!(s.migrate().await.expect("migrate again"), 6);
        let market = tradsys_engine::order::MarketId(0);
        for (order_id, time_ms, _, iceberg_qty) in stored_before {
            let stored = s.order(2, "BTCUSDT", order_id).await.expect("query");
            assert_eq!(stored, Some(version_4_order(order_id, time_ms, iceberg_qty)));
            let view = stored.and_then(|row| super::convert::order_view(&row, market));
            assert_eq!(view.map(|v| v.trailing_delta), Some(0));
        }
        // New trailing stops in the month partitioned before the
        // migration and in one made after it.
        let trailing = |o: &mut OrderRow| {
            o.order_type = "STOP_LOSS_LIMIT".to_string();
            o.trailing_delta = 250;
        };
        new_orders_read_back_in_old_and_new_partitions(&mut s, trailing).await;
    });
    // The column is the plain count, not money scaled to NUMERIC.
    assert_eq!(
        server.psql_in(
            "before_trailing",
            "SELECT tableoid::regclass, trailing_delta FROM orders ORDER BY order_id"
        ),
        "orders_default|0\norders_202612|0\norders_202612|250\norders_202701|250"
    );
}

/// A database at schema version 5 with orders in the default partition
/// and in a monthly one migrates to version 6: the orders read back as
/// they were, an iceberg still an iceberg and a trailing stop still
/// trailing, and as orders of no list (orderListId 0, also in the
/// engine's view), and the new column reaches the partitions made before
/// the migration and those made after.
#[test]
fn postgres_orders_stored_before_version_6_read_as_orders_of_no_list() {
    const DEC_1_2026_MS: u64 = 1_796_083_200_000;
    const DEC_15_2026_MS: u64 = 1_797_292_800_000;
    let server = tradsys_pgtest::PgServer::start();
    on_postgres(&server, "before_order_lists", |mut s| async move {
        s.execute_for_test("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY)")
            .await;
        for (version, sql) in super::postgres::MIGRATIONS.iter().filter(|(v, _)| *v <= 5) {
            s.execute_for_test(sql).await;
            s.execute_for_test(&format!("INSERT INTO schema_migrations (version) VALUES ({version})"))
                .await;
        }
        assert_eq!(s.ensure_partitions(DEC_1_2026_MS, 1).await.expect("partitions"), 3);
        // Each order's iceberg quantity as the NUMERIC it is stored as and
        // as the units it reads back as, and its trailing delta.
        let stored_before = [
            (5, 1_000, "0", 0, 0),
            (6, DEC_15_2026_MS, "0.10000000", 10_000_000, 250),
        ];
        for (order_id, time_ms, iceberg, _, trailing_delta) in stored_before {
            s.execute_for_test(&version_5_order_sql(
                order_id,
                time_ms,
                "30000.00000000",
                "2.00000000",
                iceberg,
                trailing_delta,
            ))
            .await;
        }
        assert_eq!(s.migrate().await.expect("migrate"), 5);
        assert_eq!(s.migrate().await.expect("migrate again"), 6);
        let market = tradsys_engine::order::MarketId(0);
        for (order_id, time_ms, _, iceberg_qty, trailing_delta) in stored_before {
            let stored = s.order(2, "BTCUSDT", order_id).await.expect("query");
            assert_eq!(
                stored,
                Some(version_5_order(order_id, time_ms, iceberg_qty, trailing_delta))
            );
            let view = stored.and_then(|row| super::convert::order_view(&row, market));
            assert_eq!(view.map(|v| v.order_list_id), Some(0));
        }
        // New legs of a list in the month partitioned before the
        // migration and in one made after it; the list id is past
        // u32::MAX, which only a BIGINT holds.
        let leg = |o: &mut OrderRow| {
            o.order_type = "LIMIT_MAKER".to_string();
            o.order_list_id = 5_000_000_007;
        };
        new_orders_read_back_in_old_and_new_partitions(&mut s, leg).await;
    });
    assert_eq!(
        server.psql_in(
            "before_order_lists",
            "SELECT tableoid::regclass, order_list_id FROM orders ORDER BY order_id"
        ),
        "orders_default|0\norders_202612|0\norders_202612|5000000007\norders_202701|5000000007"
    );
}

/// Monthly partitions are created ahead, once, and rows land in the month
/// of their time; money is NUMERIC with the exact decimals written.
#[test]
fn postgres_partitions_by_month_and_keeps_money_exact() {
    const DEC_15_2026_MS: u64 = 1_797_292_800_000;
    const DEC_1_2026_MS: u64 = 1_796_083_200_000;
    let server = tradsys_pgtest::PgServer::start();
    on_postgres(&server, "parts", |mut s| async move {
        s.migrate().await.expect("migrate");
        assert_eq!(s.ensure_partitions(DEC_1_2026_MS, 3).await.expect("partitions"), 9);
        assert_eq!(s.ensure_partitions(DEC_1_2026_MS, 3).await.expect("again"), 0);
        let mut t = trade(2, "BTCUSDT", 77, 5, true, DEC_15_2026_MS);
        t.price = 3_000_050_000_001;
        assert!(s
            .write(&batch(0, 1, 1, vec![Row::Trade(t.clone())]))
            .await
            .expect("write"));
        let back = s.trades(&trades_query(2, "BTCUSDT", 10)).await.expect("trades");
        assert_eq!(back, vec![t]);
    });
    assert_eq!(
        server.psql_in(
            "parts",
            "SELECT tableoid::regclass, price FROM trades WHERE trade_id = 77"
        ),
        "trades_202612|30000.50000001"
    );
}

/// The statistics views count each trade once, per market and per user,
/// by day and over the last 24 hours, refreshed while readable.
#[test]
fn postgres_statistics_views_add_up() {
    const DAY_MS: u64 = 86_400_000;
    let now_ms = crate::clock::now_ms();
    let today = now_ms / DAY_MS * DAY_MS;
    let server = tradsys_pgtest::PgServer::start();
    on_postgres(&server, "stats", move |mut s| async move {
        s.migrate().await.expect("migrate");
        let mut rows = Vec::new();
        // Trade 1, two days ago; trades 2 and 3 a second ago (at one
        // instant, so that they share a day whenever the test runs). User 2
        // buys, user 3 sells; each trade has both sides.
        for (id, time_ms, qty) in [
            (1, today - 2 * DAY_MS + 5, 1),
            (2, now_ms - 1_000, 2),
            (3, now_ms - 1_000, 3),
        ] {
            for (user, is_buyer) in [(2, true), (3, false)] {
                let mut t = trade(user, "BTCUSDT", id, id, is_buyer, time_ms);
                t.qty = qty * 100_000_000;
                t.quote_qty = qty * 3_000_000_000_000;
                t.price = 3_000_000_000_000 + id as i64 * 100_000_000;
                rows.push(Row::Trade(t));
            }
        }
        assert!(s.write(&batch(0, 1, 1, rows)).await.expect("write"));
        s.refresh_statistics().await.expect("refresh");
        s.refresh_statistics().await.expect("refresh again, concurrently");
    });
    let day = |ms: u64| ms / DAY_MS * DAY_MS;
    assert_eq!(
        server.psql_in(
            "stats",
            "SELECT day_ms, trades, volume, quote_volume, high, low, first_trade_id, last_trade_id
             FROM market_daily_stats ORDER BY day_ms"
        ),
        format!(
            "{}|1|1.00000000|30000.00000000|30001.00000000|30001.00000000|1|1\n{}|2|5.00000000|150000.00000000|30003.00000000|30002.00000000|2|3",
            day(today - 2 * DAY_MS),
            day(now_ms - 1_000),
        )
    );
    assert_eq!(
        server.psql_in(
            "stats",
            "SELECT user_id, trades, bought, sold FROM user_daily_stats ORDER BY day_ms, user_id"
        ),
        "2|1|1.00000000|0\n3|1|0|1.00000000\n2|2|5.00000000|0\n3|2|0|5.00000000"
    );
    assert_eq!(
        server.psql_in("stats", "SELECT symbol, trades, volume FROM market_24h_stats"),
        "BTCUSDT|2|5.00000000"
    );
    assert_eq!(
        server.psql_in(
            "stats",
            "SELECT user_id, trades, volume FROM user_24h_stats ORDER BY user_id"
        ),
        "2|2|5.00000000\n3|2|5.00000000"
    );
}

/// Waits (bounded) until `replica` has replayed to `position`.
async fn replayed(replica: &PgStore, position: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while replica.replay_position().await.expect("replay position").unwrap_or(0) < position {
        assert!(
            std::time::Instant::now() < deadline,
            "the replica never replayed {position}"
        );
        glommio::timer::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// A read after a write by the same user never misses it, whatever the
/// replica's lag: with replay paused on the replica, the primary answers;
/// once the replica has caught up, it answers.
#[test]
fn postgres_reads_go_to_replicas_only_when_they_have_the_write() {
    let primary = tradsys_pgtest::PgServer::start();
    primary.psql("CREATE DATABASE replicated");
    let replica = primary.start_replica();
    let (primary_port, replica_port) = (primary.port(), replica.port());
    let url = |port: u16| {
        format!(
            "host=127.0.0.1 port={port} user={} dbname=replicated",
            tradsys_pgtest::SUPERUSER
        )
    };
    let (primary_url, replica_url) = (url(primary_port), url(replica_port));
    glommio::LocalExecutorBuilder::default()
        .spawn(move || async move {
            let mut store = PgStore::connect(&primary_url).await.expect("primary");
            store.migrate().await.expect("migrate");
            let replicas = ReplicaSet::new(vec![replica_url]);
            let query = |id| OrdersQuery {
                user: 2,
                symbol: "BTCUSDT",
                from_id: Some(id),
                start_ms: None,
                end_ms: None,
                limit: 10,
            };
            let first = vec![Row::Order(order(2, "BTCUSDT", 1, "NEW", 0, 1_000))];
            assert!(store.write(&batch(0, 1, 1, first)).await.expect("write"));
            let seen = store.last_write_position();
            let (i, replica) = replicas.take_reader(0).await.expect("a replica");
            replayed(&replica, seen).await;
            replicas.put_back(i, replica);
            let (i, mut reader) = replicas.take_reader(seen).await.expect("the replica has the write");
            assert_eq!(reader.orders(&query(1)).await.expect("read").len(), 1);
            // Replay paused: the next write is not on the replica.
            reader.execute_for_test("SELECT pg_wal_replay_pause()").await;
            replicas.put_back(i, reader);
            let second = vec![Row::Order(order(2, "BTCUSDT", 2, "NEW", 0, 1_001))];
            assert!(store.write(&batch(0, 1, 2, second)).await.expect("write"));
            let seen = store.last_write_position();
            assert!(
                replicas.take_reader(seen).await.is_none(),
                "a paused replica is never read for the new write"
            );
            assert_eq!(
                store.orders(&query(2)).await.expect("primary read").len(),
                1,
                "the primary has it"
            );
            let (i, mut behind) = replicas.take_reader(0).await.expect("the replica, for any older read");
            assert_eq!(
                behind.orders(&query(2)).await.expect("stale read").len(),
                0,
                "the replica lags"
            );
            assert!(replicas.lag_bytes(seen)[0].is_some_and(|lag| lag > 0));
            behind.execute_for_test("SELECT pg_wal_replay_resume()").await;
            replayed(&behind, seen).await;
            replicas.put_back(i, behind);
            let (_, mut caught_up) = replicas.take_reader(seen).await.expect("the replica caught up");
            assert_eq!(caught_up.orders(&query(2)).await.expect("read").len(), 1);
            assert_eq!(replicas.lag_bytes(seen), vec![Some(0)]);
        })
        .expect("an executor")
        .join()
        .expect("the test's executor");
    drop(replica);
    drop(primary);
}
