//! The embedded engine of the history store: SQLite (bundled with the
//! binary), one database file per shard in the shard's data directory
//! (`shard-<i>/history.sqlite`), so shards stay shared-nothing.
//!
//! A connection is not shared: each shard's history thread opens its own.
//! The database runs in WAL mode with `synchronous=FULL`: a batch is on
//! disk when its commit returns, since the writer then lets snapshots
//! delete the journal records it came from.
//!
//! Migrations are embedded and applied in order; `PRAGMA user_version`
//! holds the version reached.

use super::rows::{LedgerCause, LedgerRow, OrderRow, Row, TradeRow, TransferId, TransferRow};
use super::{
    bound, check_batch, clamp_limit, fold_candle, in_list_order, signed, transfer_amount, transfer_ids_condition,
    unsigned, Batch, CandleParts, CandlesQuery, HistoryStore, OrdersQuery, Progress, StoreError, TradesQuery,
    TransfersQuery, Window, TRANSFER_CAUSES,
};
use crate::marketdata::TapeTrade;
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use tradsys_engine::num::{Amount, Price, Qty};

/// The schema versions, each with the SQL that reaches it from the one
/// before.
pub(crate) const MIGRATIONS: &[(u32, &str)] = &[
    (1, include_str!("migrations/sqlite/0001_history.sql")),
    (2, include_str!("migrations/sqlite/0002_fewer_trees.sql")),
    (3, include_str!("migrations/sqlite/0003_transfers.sql")),
    (4, include_str!("migrations/sqlite/0004_iceberg.sql")),
    (5, include_str!("migrations/sqlite/0005_trailing.sql")),
    (6, include_str!("migrations/sqlite/0006_order_lists.sql")),
];
/// How long a statement waits for a lock held by another connection (a
/// reader such as an export) before it fails.
pub(super) const BUSY_TIMEOUT_MS: u64 = 5_000;

/// The name of a shard's database file in its data directory.
pub const HISTORY_FILE: &str = "history.sqlite";
/// Page cache per connection: SQLite's `cache_size`, where a negative
/// number is KiB (64 MiB).
const SQLITE_CACHE_SIZE: i64 = -65_536;

pub struct SqliteStore {
    conn: Connection,
}

fn engine(e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DiskFull) => StoreError::Full(e.to_string()),
        _ => StoreError::Engine(e.to_string()),
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let conn = Connection::open(path).map_err(engine)?;
        Self::configure(conn)
    }

    /// A handle that interrupts this connection's running statement from
    /// another thread (its transaction rolls back).
    pub fn interrupt_handle(&self) -> rusqlite::InterruptHandle {
        self.conn.get_interrupt_handle()
    }

    /// A database in memory, for tests.
    #[cfg(test)]
    pub fn in_memory() -> Result<SqliteStore, StoreError> {
        Self::configure(Connection::open_in_memory().map_err(engine)?)
    }

    fn configure(conn: Connection) -> Result<SqliteStore, StoreError> {
        conn.busy_timeout(std::time::Duration::from_millis(BUSY_TIMEOUT_MS))
            .map_err(engine)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(engine)?;
        // FULL: a batch is on disk when its commit returns. The writer then
        // lets snapshots delete the journal records it came from, so a
        // commit that a power loss could still undo would lose its rows.
        // One sync per batch of up to 65,536 rows costs little.
        conn.pragma_update(None, "synchronous", "FULL").map_err(engine)?;
        conn.pragma_update(None, "foreign_keys", "OFF").map_err(engine)?;
        // The indexes of a busy shard outgrow SQLite's 2 MiB default page
        // cache, and every insert then reads pages back from the kernel.
        conn.pragma_update(None, "cache_size", SQLITE_CACHE_SIZE.to_string().as_str())
            .map_err(engine)?;
        Ok(SqliteStore { conn })
    }

    #[cfg(test)]
    pub fn set_version_for_test(&mut self, version: u32) {
        self.conn
            .pragma_update(None, "user_version", version)
            .expect("set user_version");
    }

    fn version(&self) -> Result<u32, StoreError> {
        self.conn
            .pragma_query_value(None, "user_version", |row| row.get::<_, u32>(0))
            .map_err(engine)
    }

    fn stored_progress(tx: &Transaction, shard: u32) -> Result<Option<Progress>, StoreError> {
        let found = tx
            .query_row(
                "SELECT generation, lsn FROM progress WHERE shard = ?1",
                params![shard],
                |row| Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?)),
            )
            .optional()
            .map_err(engine)?;
        found
            .map(|(generation, lsn)| {
                Ok(Progress {
                    generation: unsigned(generation, "generation")?,
                    lsn: unsigned(lsn, "lsn")?,
                })
            })
            .transpose()
    }
}

/// Writes the rows of one batch inside its transaction. Order events and
/// ledger entries are keyed by (shard, generation, lsn, seq): the batch's
/// position and the row's place in it.
fn write_rows(tx: &Transaction, batch: &Batch) -> Result<(), StoreError> {
    let key = (
        batch.shard,
        signed(batch.progress.generation, "generation")?,
        signed(batch.progress.lsn, "lsn")?,
    );
    // An order changes several times in a busy batch: its row is written
    // once, in its last state (every change still goes to order_events).
    let mut last_state: HashMap<u64, usize> = HashMap::new();
    for (seq, row) in batch.rows.iter().enumerate() {
        if let Row::Order(o) = row {
            last_state.insert(o.order_id, seq);
        }
    }
    for (seq, row) in batch.rows.iter().enumerate() {
        match row {
            Row::User(u) => {
                let user = signed(u.user, "user")?;
                tx.prepare_cached(
                    "INSERT INTO users (user_id, name, created_ms) VALUES (?1, ?2, ?3)
                     ON CONFLICT (user_id) DO UPDATE SET name = excluded.name",
                )
                .and_then(|mut s| s.execute(params![user, u.name, u.created_ms as i64]))
                .map_err(engine)?;
            }
            Row::Key(k) => {
                let user = signed(k.user, "user")?;
                tx.prepare_cached(
                    "INSERT INTO api_keys (api_key, user_id, scopes, revoked, changed_ms) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (api_key) DO UPDATE SET scopes = excluded.scopes,
                        revoked = excluded.revoked, changed_ms = excluded.changed_ms",
                )
                .and_then(|mut s| s.execute(params![k.api_key, user, k.scopes, k.revoked, k.changed_ms as i64]))
                .map_err(engine)?;
            }
            Row::Order(o) => write_order(tx, key, seq, o, last_state.get(&o.order_id) == Some(&seq))?,
            Row::Trade(t) => write_trade(tx, t)?,
            Row::Ledger(l) => write_ledger(tx, key, seq, l)?,
        }
    }
    Ok(())
}

/// One change of an order: its event, and (when `latest`) its row.
fn write_order(
    tx: &Transaction,
    key: (u32, i64, i64),
    seq: usize,
    o: &OrderRow,
    latest: bool,
) -> Result<(), StoreError> {
    let order_id = signed(o.order_id, "order id")?;
    let user = signed(o.user, "user")?;
    // Refused for every change of the order, as PostgreSQL's COPY does,
    // not only for the one that becomes its row.
    let order_list_id = signed(o.order_list_id, "order list id")?;
    if latest {
        upsert_order(tx, order_id, user, order_list_id, o)?;
    }
    tx.prepare_cached(
        "INSERT INTO order_events (shard, generation, lsn, seq, order_id, status, executed_qty,
            cummulative_quote_qty, update_time_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )
    .and_then(|mut s| {
        s.execute(params![
            key.0,
            key.1,
            key.2,
            seq as i64,
            order_id,
            o.status,
            o.executed_qty,
            o.cummulative_quote_qty,
            o.update_time_ms as i64
        ])
    })
    .map_err(engine)?;
    Ok(())
}

fn upsert_order(
    tx: &Transaction,
    order_id: i64,
    user: i64,
    order_list_id: i64,
    o: &OrderRow,
) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO orders (order_id, user_id, symbol, client_order_id, price, orig_qty, orig_quote_qty,
            executed_qty, cummulative_quote_qty, status, time_in_force, order_type, side, stop_price,
            time_ms, update_time_ms, stp_mode, iceberg_qty, trailing_delta, order_list_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20)
         ON CONFLICT (order_id) DO UPDATE SET executed_qty = excluded.executed_qty,
            cummulative_quote_qty = excluded.cummulative_quote_qty, status = excluded.status,
            update_time_ms = excluded.update_time_ms",
    )
    .and_then(|mut s| {
        s.execute(params![
            order_id,
            user,
            o.symbol,
            o.client_order_id,
            o.price,
            o.orig_qty,
            o.orig_quote_qty,
            o.executed_qty,
            o.cummulative_quote_qty,
            o.status,
            o.time_in_force,
            o.order_type,
            o.side,
            o.stop_price,
            o.time_ms as i64,
            o.update_time_ms as i64,
            o.stp_mode,
            o.iceberg_qty,
            o.trailing_delta,
            order_list_id,
        ])
    })
    .map_err(engine)?;
    Ok(())
}

fn write_trade(tx: &Transaction, t: &TradeRow) -> Result<(), StoreError> {
    let (trade_id, user, order_id) = (
        signed(t.trade_id, "trade id")?,
        signed(t.user, "user")?,
        signed(t.order_id, "order id")?,
    );
    tx.prepare_cached(
        "INSERT INTO trades (symbol, trade_id, is_buyer, user_id, order_id, price, qty, quote_qty,
            commission, commission_asset, is_maker, time_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )
    .and_then(|mut s| {
        s.execute(params![
            t.symbol,
            trade_id,
            t.is_buyer,
            user,
            order_id,
            t.price,
            t.qty,
            t.quote_qty,
            t.commission,
            t.commission_asset,
            t.is_maker,
            t.time_ms as i64
        ])
    })
    .map_err(engine)?;
    Ok(())
}

fn write_ledger(tx: &Transaction, key: (u32, i64, i64), seq: usize, l: &LedgerRow) -> Result<(), StoreError> {
    let (account, reference) = (signed(l.account, "account")?, signed(l.reference, "reference")?);
    tx.prepare_cached(
        "INSERT INTO ledger (shard, generation, lsn, seq, account, asset, delta, cause, reference, time_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )
    .and_then(|mut s| {
        s.execute(params![
            key.0,
            key.1,
            key.2,
            seq as i64,
            account,
            l.asset,
            l.delta,
            l.cause.as_str(),
            reference,
            l.time_ms as i64
        ])
    })
    .map_err(engine)?;
    Ok(())
}

/// The transfers query, with its `ids` filter written in.
fn transfers_sql(ids: Option<&[TransferId]>) -> String {
    let ids = transfer_ids_condition(ids);
    format!(
        "SELECT shard, generation, reference, asset, delta, time_ms FROM ledger
         WHERE account = ?1 AND {TRANSFER_CAUSES} AND cause = ?2 AND time_ms >= ?3 AND time_ms <= ?4
         AND (?5 IS NULL OR asset = ?5) {ids}
         ORDER BY time_ms DESC, shard DESC, generation DESC, reference DESC LIMIT ?6"
    )
}

pub(super) const ORDER_COLUMNS: &str = "user_id, symbol, order_id, client_order_id, price, orig_qty, orig_quote_qty,
    executed_qty, cummulative_quote_qty, status, time_in_force, order_type, side, stop_price, time_ms,
    update_time_ms, stp_mode, iceberg_qty, trailing_delta, order_list_id";

pub(super) fn order_row(row: &rusqlite::Row) -> rusqlite::Result<OrderRow> {
    Ok(OrderRow {
        user: row.get::<_, i64>(0)? as u64,
        symbol: row.get(1)?,
        order_id: row.get::<_, i64>(2)? as u64,
        client_order_id: row.get(3)?,
        price: row.get(4)?,
        orig_qty: row.get(5)?,
        orig_quote_qty: row.get(6)?,
        executed_qty: row.get(7)?,
        cummulative_quote_qty: row.get(8)?,
        status: row.get(9)?,
        time_in_force: row.get(10)?,
        order_type: row.get(11)?,
        side: row.get(12)?,
        stop_price: row.get(13)?,
        time_ms: row.get::<_, i64>(14)? as u64,
        update_time_ms: row.get::<_, i64>(15)? as u64,
        stp_mode: row.get(16)?,
        iceberg_qty: row.get(17)?,
        trailing_delta: row.get(18)?,
        order_list_id: row.get::<_, i64>(19)? as u64,
    })
}

pub(super) const TRADE_COLUMNS: &str = "user_id, symbol, trade_id, order_id, price, qty, quote_qty, commission,
    commission_asset, is_buyer, is_maker, time_ms";

pub(super) fn trade_row(row: &rusqlite::Row) -> rusqlite::Result<TradeRow> {
    Ok(TradeRow {
        user: row.get::<_, i64>(0)? as u64,
        symbol: row.get(1)?,
        trade_id: row.get::<_, i64>(2)? as u64,
        order_id: row.get::<_, i64>(3)? as u64,
        price: row.get(4)?,
        qty: row.get(5)?,
        quote_qty: row.get(6)?,
        commission: row.get(7)?,
        commission_asset: row.get(8)?,
        is_buyer: row.get(9)?,
        is_maker: row.get(10)?,
        time_ms: row.get::<_, i64>(11)? as u64,
    })
}

impl HistoryStore for SqliteStore {
    async fn migrate(&mut self) -> Result<u32, StoreError> {
        let found = self.version()?;
        let known = MIGRATIONS.last().map_or(0, |(v, _)| *v);
        if found > known {
            return Err(StoreError::SchemaTooNew { found, known });
        }
        for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > found) {
            let tx = self.conn.transaction().map_err(engine)?;
            tx.execute_batch(sql).map_err(engine)?;
            tx.pragma_update(None, "user_version", version).map_err(engine)?;
            tx.commit().map_err(engine)?;
        }
        Ok(found)
    }

    async fn progress(&mut self, shard: u32) -> Result<Option<Progress>, StoreError> {
        let tx = self.conn.transaction().map_err(engine)?;
        let progress = Self::stored_progress(&tx, shard)?;
        tx.commit().map_err(engine)?;
        Ok(progress)
    }

    async fn write(&mut self, batch: &Batch) -> Result<bool, StoreError> {
        check_batch(batch)?;
        let tx = self.conn.transaction().map_err(engine)?;
        if Self::stored_progress(&tx, batch.shard)?.is_some_and(|p| p >= batch.progress) {
            return Ok(false);
        }
        write_rows(&tx, batch)?;
        tx.execute(
            "INSERT INTO progress (shard, generation, lsn) VALUES (?1, ?2, ?3)
             ON CONFLICT (shard) DO UPDATE SET generation = excluded.generation, lsn = excluded.lsn",
            params![
                batch.shard,
                signed(batch.progress.generation, "generation")?,
                signed(batch.progress.lsn, "lsn")?
            ],
        )
        .map_err(engine)?;
        tx.commit().map_err(engine)?;
        Ok(true)
    }

    async fn order(&mut self, user: u64, symbol: &str, order_id: u64) -> Result<Option<OrderRow>, StoreError> {
        let sql = format!("SELECT {ORDER_COLUMNS} FROM orders WHERE order_id = ?1 AND user_id = ?2 AND symbol = ?3");
        self.conn
            .prepare_cached(&sql)
            .and_then(|mut s| {
                s.query_row(
                    params![
                        signed(order_id, "order id").unwrap_or(-1),
                        signed(user, "user").unwrap_or(-1),
                        symbol
                    ],
                    order_row,
                )
                .optional()
            })
            .map_err(engine)
    }

    async fn order_by_client_id(
        &mut self,
        user: u64,
        symbol: &str,
        client_id: &str,
    ) -> Result<Option<OrderRow>, StoreError> {
        let sql = format!(
            "SELECT {ORDER_COLUMNS} FROM orders WHERE user_id = ?1 AND symbol = ?2 AND client_order_id = ?3
             ORDER BY order_id DESC LIMIT 1"
        );
        self.conn
            .prepare_cached(&sql)
            .and_then(|mut s| {
                s.query_row(
                    params![signed(user, "user").unwrap_or(-1), symbol, client_id],
                    order_row,
                )
                .optional()
            })
            .map_err(engine)
    }

    async fn orders(&mut self, q: &OrdersQuery<'_>) -> Result<Vec<OrderRow>, StoreError> {
        let window = q.window();
        let direction = if window == Window::Oldest { "ASC" } else { "DESC" };
        let sql = format!(
            "SELECT {ORDER_COLUMNS} FROM orders WHERE user_id = ?1 AND symbol = ?2 AND order_id >= ?3
             AND time_ms >= ?4 AND time_ms <= ?5 ORDER BY order_id {direction} LIMIT ?6"
        );
        let rows = self
            .conn
            .prepare_cached(&sql)
            .and_then(|mut s| {
                let rows = s.query_map(
                    params![
                        signed(q.user, "user").unwrap_or(-1),
                        q.symbol,
                        bound(q.from_id, 0),
                        bound(q.start_ms, 0),
                        bound(q.end_ms, i64::MAX),
                        clamp_limit(q.limit) as i64
                    ],
                    order_row,
                )?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(engine)?;
        Ok(in_list_order(rows, window))
    }

    async fn trades(&mut self, q: &TradesQuery<'_>) -> Result<Vec<TradeRow>, StoreError> {
        let window = q.window();
        let direction = if window == Window::Oldest { "ASC" } else { "DESC" };
        let order_filter = if q.order_id.is_some() {
            "AND order_id = ?7"
        } else {
            "AND ?7 = ?7"
        };
        let sql = format!(
            "SELECT {TRADE_COLUMNS} FROM trades WHERE user_id = ?1 AND symbol = ?2 AND trade_id >= ?3
             AND time_ms >= ?4 AND time_ms <= ?5 {order_filter} ORDER BY trade_id {direction}, is_buyer {direction} LIMIT ?6"
        );
        let rows = self
            .conn
            .prepare_cached(&sql)
            .and_then(|mut s| {
                let rows = s.query_map(
                    params![
                        signed(q.user, "user").unwrap_or(-1),
                        q.symbol,
                        bound(q.from_id, 0),
                        bound(q.start_ms, 0),
                        bound(q.end_ms, i64::MAX),
                        clamp_limit(q.limit) as i64,
                        bound(q.order_id, 0)
                    ],
                    trade_row,
                )?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(engine)?;
        Ok(in_list_order(rows, window))
    }

    async fn transfers(&mut self, q: &TransfersQuery) -> Result<Vec<TransferRow>, StoreError> {
        if q.ids.as_ref().is_some_and(Vec::is_empty) {
            return Ok(Vec::new());
        }
        let sql = transfers_sql(q.ids.as_deref());
        let rows = self
            .conn
            .prepare_cached(&sql)
            .and_then(|mut s| {
                let rows = s.query_map(
                    params![
                        signed(q.user, "user").unwrap_or(-1),
                        q.cause.as_str(),
                        bound(Some(q.start_ms), 0),
                        bound(Some(q.end_ms), i64::MAX),
                        q.asset,
                        q.rows_max() as i64
                    ],
                    |row| {
                        Ok((
                            row.get::<_, i64>(0)?,
                            row.get::<_, i64>(1)?,
                            row.get::<_, i64>(2)?,
                            row.get::<_, String>(3)?,
                            row.get::<_, i64>(4)?,
                            row.get::<_, i64>(5)?,
                        ))
                    },
                )?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(engine)?;
        rows.into_iter()
            .map(|(shard, generation, lsn, asset, delta, time_ms)| {
                Ok(TransferRow {
                    id: TransferId {
                        shard: u32::try_from(shard).map_err(|_| StoreError::Corrupt(format!("shard {shard}")))?,
                        generation: unsigned(generation, "generation")?,
                        lsn: unsigned(lsn, "reference")?,
                    },
                    asset,
                    amount: transfer_amount(q.cause, delta)?,
                    time_ms: unsigned(time_ms, "time")?,
                })
            })
            .collect()
    }

    async fn ledger(&mut self, user: u64) -> Result<Vec<LedgerRow>, StoreError> {
        let mut statement = self
            .conn
            .prepare_cached(
                "SELECT account, asset, delta, cause, reference, time_ms FROM ledger WHERE account = ?1
                 ORDER BY shard, generation, lsn, seq",
            )
            .map_err(engine)?;
        let rows = statement
            .query_map(params![signed(user, "account")?], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, i64>(2)?,
                    row.get::<_, String>(3)?,
                    row.get::<_, i64>(4)?,
                    row.get::<_, i64>(5)?,
                ))
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(engine)?;
        rows.into_iter()
            .map(|(account, asset, delta, cause, reference, time_ms)| {
                Ok(LedgerRow {
                    account: unsigned(account, "account")?,
                    asset,
                    delta,
                    cause: LedgerCause::parse(&cause).ok_or_else(|| StoreError::Corrupt(format!("cause {cause}")))?,
                    reference: unsigned(reference, "reference")?,
                    time_ms: unsigned(time_ms, "time")?,
                })
            })
            .collect()
    }

    async fn candles(&mut self, q: &CandlesQuery, shards: &[u32]) -> Result<CandleParts, StoreError> {
        // One read transaction: the rows and the progress are one snapshot.
        let tx = self.conn.transaction().map_err(engine)?;
        let mut progress = Vec::with_capacity(shards.len());
        for &shard in shards {
            progress.push((shard, Self::stored_progress(&tx, shard)?));
        }
        let mut parts = BTreeMap::new();
        {
            // The primary key leads with the user: this reads every trade
            // row of the file once, folding as it goes (the answer is
            // cached, see `api::klines`).
            let mut statement = tx
                .prepare_cached(
                    "SELECT trade_id, price, qty, quote_qty, is_maker, time_ms FROM trades
                     WHERE symbol = ?1 AND is_buyer = 1 AND time_ms >= ?2 AND time_ms < ?3",
                )
                .map_err(engine)?;
            let mut rows = statement
                .query(params![q.symbol, bound(Some(q.from_ms), 0), bound(Some(q.to_ms), 0)])
                .map_err(engine)?;
            while let Some(row) = rows.next().map_err(engine)? {
                let read = |index: usize| row.get::<_, i64>(index).map_err(engine);
                let trade = TapeTrade {
                    id: unsigned(read(0)?, "trade id")?,
                    price: Price(read(1)?),
                    qty: Qty(read(2)?),
                    quote_qty: Amount(read(3)?),
                    is_buyer_maker: read(4)? != 0,
                    time_ms: unsigned(read(5)?, "time")?,
                    taker_order: 0,
                };
                fold_candle(q.interval, &trade, &mut parts);
            }
        }
        tx.commit().map_err(engine)?;
        Ok(CandleParts {
            candles: parts.into_values().collect(),
            progress,
        })
    }

    async fn first_trade_ms(&mut self, symbol: &str) -> Result<Option<u64>, StoreError> {
        // Trade ids and times grow together; the smaller time is taken so
        // that a clock that stepped back moves the start earlier, never
        // later. Like `candles`, a scan of the file.
        let found: Option<i64> = self
            .conn
            .prepare_cached("SELECT min(time_ms) FROM trades WHERE symbol = ?1 AND is_buyer = 1")
            .and_then(|mut s| s.query_row(params![symbol], |row| row.get(0)))
            .map_err(engine)?;
        found.map(|t| unsigned(t, "time")).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wallet history reads the partial index over transfers, not the
    /// user's whole ledger (which holds every trade and fee).
    #[test]
    fn transfers_read_the_partial_index() {
        let mut store = SqliteStore::in_memory().expect("sqlite");
        futures_lite::future::block_on(store.migrate()).expect("migrate");
        let id = TransferId {
            shard: 0,
            generation: 1,
            lsn: 2,
        };
        for ids in [None, Some(&[id][..])] {
            let sql = format!("EXPLAIN QUERY PLAN {}", transfers_sql(ids));
            let mut statement = store.conn.prepare(&sql).expect("the query plan");
            let plan: Vec<String> = statement
                .query_map(params![2, "DEPOSIT", 0, 10, None::<String>, 5], |row| row.get(3))
                .expect("the plan's rows")
                .collect::<rusqlite::Result<_>>()
                .expect("plan text");
            assert!(
                plan.iter().any(|step| step.contains("USING INDEX ledger_transfers")),
                "{plan:?}"
            );
        }
    }
}
