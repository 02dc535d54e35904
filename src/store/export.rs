//! Exports of a user's whole history: every trade or order row the store
//! holds for one user, read a page at a time from a cursor that lives as
//! long as the export, so that memory stays bounded whatever the row
//! count (a page is [`EXPORT_PAGE_ROWS`] rows; the caller writes each page
//! before it asks for the next).
//!
//! A stream cannot cross the mesh, so the shard that holds the client's
//! connection reads the store itself:
//!
//! - **SQLite**: a read-only connection of the export's own to the owner's
//!   file (`shard-<owner>/history.sqlite`; WAL lets a reader run beside the
//!   owner's writer), on the executor's blocking thread. Each page is a
//!   keyset query that starts after the last row of the page before, one
//!   blocking call, so no statement stays open between pages and the
//!   owner's checkpoints are never held back. A row is never repeated or
//!   skipped; rows written while the export runs may or may not be in it.
//! - **PostgreSQL**: a connection of the export's own (not one of the
//!   writer's pool, which a long export would starve), one `REPEATABLE
//!   READ, READ ONLY` transaction, a `NO SCROLL` server-side cursor, and
//!   `FETCH` pages: the export is one consistent snapshot.
//!
//! Rows come grouped by symbol and in id order within a symbol (trade id
//! and side, or order id): the order of the `(user_id, symbol, id)` index
//! both engines keep for myTrades and allOrders, and, within a market,
//! the order of time. `start_ms`/`end_ms` filter on the row's time
//! (inclusive).
//!
//! Every step (opening, each page) is one store call under
//! [`Kind::Export`]: the shard's breaker, `history_call_timeout_ms` and the
//! latency figures. At most [`EXPORTS_PER_SHARD_MAX`] exports run on a
//! shard at once (with PostgreSQL each holds a connection).

use super::rows::{OrderRow, TradeRow};
use super::shard::{lower_priority_once, Kind, ShardStore};
use super::{bound, signed, StoreError};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use std::path::PathBuf;
use std::time::Duration;
use tokio_postgres::{Client, Statement};

/// Rows one page holds at most: what one chunk of the response carries.
pub const EXPORT_PAGE_ROWS: usize = 1000;
/// Exports one shard streams at once; one more is refused (busy).
pub const EXPORTS_PER_SHARD_MAX: u64 = 2;
/// The name of the PostgreSQL cursor (one per connection, which is the
/// export's own).
const PG_CURSOR: &str = "tradsys_export";

/// What an export lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Table {
    Trades,
    Orders,
}

/// Which rows of the user an export lists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportQuery {
    pub user: u64,
    /// One market only; every market without it.
    pub symbol: Option<String>,
    /// Rows from this time on (ms, inclusive).
    pub start_ms: Option<u64>,
    /// Rows up to this time (ms, inclusive).
    pub end_ms: Option<u64>,
}

/// One page of rows, in export order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Page {
    Trades(Vec<TradeRow>),
    Orders(Vec<OrderRow>),
}

impl Page {
    pub fn len(&self) -> usize {
        match self {
            Page::Trades(rows) => rows.len(),
            Page::Orders(rows) => rows.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Where an export reads (see `ShardStore::export_source`).
pub(super) enum Source {
    /// The owner's SQLite file.
    Sqlite(PathBuf),
    /// The PostgreSQL URL, and the task queue its connection runs in.
    Postgres(String, Option<glommio::TaskQueueHandle>),
}

/// Why an export did not start.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{EXPORTS_PER_SHARD_MAX} exports are already running on this shard")]
    Busy,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// An export under way: its cursor and its place in the shard's count of
/// running exports (given back when it drops, however it ends).
pub struct Cursor<'a> {
    store: &'a ShardStore,
    table: Table,
    query: ExportQuery,
    engine: Engine,
    done: bool,
    _slot: Slot<'a>,
}

enum Engine {
    Sqlite {
        /// `None` while a page is read on the blocking thread; stays
        /// `None` if that call was abandoned (timeout), which ends the
        /// export with an error.
        conn: Option<Connection>,
        /// The last row of the previous page; `None` before the first.
        after: Option<Key>,
    },
    Postgres {
        /// The export's own connection: dropping it ends the transaction.
        client: Client,
        fetch: Statement,
    },
}

/// Where a keyset page starts: the key of the last row already read.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Key {
    Trade {
        symbol: String,
        trade_id: i64,
        is_buyer: bool,
    },
    Order {
        symbol: String,
        order_id: i64,
    },
}

/// A place among the shard's running exports.
struct Slot<'a>(&'a ShardStore);

impl<'a> Slot<'a> {
    fn take(store: &'a ShardStore) -> Option<Slot<'a>> {
        let mut taken = false;
        store.with_counters(|c| {
            if c.exports_active < EXPORTS_PER_SHARD_MAX {
                c.exports_active += 1;
                taken = true;
            }
        });
        // Not `then_some(Slot(..))`: a slot made and dropped would give
        // back a place it never took.
        if taken {
            Some(Slot(store))
        } else {
            None
        }
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0
            .with_counters(|c| c.exports_active = c.exports_active.saturating_sub(1));
    }
}

impl<'a> Cursor<'a> {
    /// Starts an export of `owner`'s rows (the shard that owns the user):
    /// connects and, with PostgreSQL, declares the cursor. Fails at once,
    /// before anything is sent, when the store cannot be read.
    pub async fn open(
        store: &'a ShardStore,
        owner: u32,
        table: Table,
        query: ExportQuery,
    ) -> Result<Cursor<'a>, ExportError> {
        let slot = Slot::take(store).ok_or(ExportError::Busy)?;
        let source = store.export_source(owner);
        let wanted = &query;
        let engine = store
            .call(Kind::Export, move || async move {
                match source {
                    Source::Sqlite(path) => {
                        let conn = glommio::executor()
                            .spawn_blocking(move || {
                                lower_priority_once();
                                open_read_only(&path)
                            })
                            .await?;
                        Ok(Engine::Sqlite {
                            conn: Some(conn),
                            after: None,
                        })
                    }
                    Source::Postgres(url, queue) => {
                        let (client, fetch) = declare(&url, queue, table, wanted).await?;
                        Ok(Engine::Postgres { client, fetch })
                    }
                }
            })
            .await?;
        Ok(Cursor {
            store,
            table,
            query,
            engine,
            done: false,
            _slot: slot,
        })
    }

    /// The next page of rows; `None` once every row has been read. After
    /// an error the export is over (a cursor cannot be trusted to resume).
    pub async fn next_page(&mut self) -> Result<Option<Page>, StoreError> {
        if self.done {
            return Ok(None);
        }
        let store = self.store;
        let (table, query) = (self.table, &self.query);
        let engine = &mut self.engine;
        let result = store.call(Kind::Export, || next_page(engine, table, query)).await;
        let page = match result {
            Ok(page) => page,
            Err(e) => {
                self.done = true;
                return Err(e);
            }
        };
        if page.len() < EXPORT_PAGE_ROWS {
            self.done = true;
        }
        let rows = page.len() as u64;
        store.with_counters(|c| c.rows_exported += rows);
        Ok((!page.is_empty()).then_some(page))
    }
}

async fn next_page(engine: &mut Engine, table: Table, query: &ExportQuery) -> Result<Page, StoreError> {
    match engine {
        Engine::Sqlite { conn, after } => {
            let taken = conn.take().ok_or_else(|| {
                StoreError::Engine("the export's SQLite connection was lost when a page timed out".into())
            })?;
            let (query, key) = (query.clone(), after.clone());
            let (taken, page) = glommio::executor()
                .spawn_blocking(move || {
                    lower_priority_once();
                    let page = sqlite_page(&taken, table, &query, key.as_ref());
                    (taken, page)
                })
                .await;
            *conn = Some(taken);
            let page = page?;
            if let Some(last) = last_key(&page)? {
                *after = Some(last);
            }
            Ok(page)
        }
        Engine::Postgres { client, fetch } => {
            let rows = client.query(&*fetch, &[]).await.map_err(pg_error)?;
            Ok(match table {
                Table::Trades => Page::Trades(rows.iter().map(super::postgres::trade_row).collect::<Result<_, _>>()?),
                Table::Orders => Page::Orders(rows.iter().map(super::postgres::order_row).collect::<Result<_, _>>()?),
            })
        }
    }
}

/// The key of a page's last row, where the next page starts.
fn last_key(page: &Page) -> Result<Option<Key>, StoreError> {
    Ok(match page {
        Page::Trades(rows) => match rows.last() {
            Some(t) => Some(Key::Trade {
                symbol: t.symbol.clone(),
                trade_id: signed(t.trade_id, "trade id")?,
                is_buyer: t.is_buyer,
            }),
            None => None,
        },
        Page::Orders(rows) => match rows.last() {
            Some(o) => Some(Key::Order {
                symbol: o.symbol.clone(),
                order_id: signed(o.order_id, "order id")?,
            }),
            None => None,
        },
    })
}

fn sqlite_error(e: rusqlite::Error) -> StoreError {
    StoreError::Engine(e.to_string())
}

fn pg_error(e: tokio_postgres::Error) -> StoreError {
    StoreError::Engine(e.to_string())
}

/// A read-only connection: an export can never write, and opening it
/// creates nothing (a missing file is an error, not an empty database).
fn open_read_only(path: &std::path::Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(|e| StoreError::Engine(format!("{}: {e}", path.display())))?;
    conn.busy_timeout(Duration::from_millis(super::sqlite::BUSY_TIMEOUT_MS))
        .map_err(sqlite_error)?;
    Ok(conn)
}

/// The keyset query of one market's rows, which must seek the `(user_id,
/// symbol, id)` key (the trades' primary key, the orders' index) and never
/// sort: a plan that sorted the user's rows instead would cost every page
/// the whole history (`keyset_pages_seek_the_index_and_never_sort` checks
/// the plans). The time bounds are written `+time_ms` so that the planner
/// can never prefer the `(user_id, symbol, time_ms)` index and a sort, and
/// the orders' `INDEXED BY` rules out a scan of the rowid range. A page
/// seeks one symbol at a time (`symbol = ? AND id > ?`): SQLite does not
/// seek a row value that ends in the rowid (`orders.order_id`), so
/// `(symbol, order_id) > (?, ?)` would rescan the symbol every page.
fn sqlite_sql(table: Table) -> String {
    use super::sqlite::{ORDER_COLUMNS, TRADE_COLUMNS};
    match table {
        Table::Trades => format!(
            "SELECT {TRADE_COLUMNS} FROM trades
             WHERE user_id = ?1 AND symbol = ?2 AND (trade_id, is_buyer) > (?3, ?4) AND +time_ms >= ?5
             AND +time_ms <= ?6 ORDER BY trade_id, is_buyer LIMIT ?7"
        ),
        Table::Orders => format!(
            "SELECT {ORDER_COLUMNS} FROM orders INDEXED BY orders_user_symbol_id
             WHERE user_id = ?1 AND symbol = ?2 AND order_id > ?3 AND +time_ms >= ?4 AND +time_ms <= ?5
             ORDER BY order_id LIMIT ?6"
        ),
    }
}

/// The user's first market after `after` (from the start with `""`), one
/// seek in an index that starts with `(user_id, symbol)`.
fn sqlite_next_symbol_sql(table: Table) -> &'static str {
    match table {
        Table::Trades => {
            "SELECT symbol FROM trades WHERE user_id = ?1 AND symbol > ?2
             ORDER BY symbol LIMIT 1"
        }
        Table::Orders => {
            "SELECT symbol FROM orders INDEXED BY orders_user_symbol_id WHERE user_id = ?1 AND symbol > ?2
             ORDER BY symbol LIMIT 1"
        }
    }
}

/// One page: the rows after `after` (from the start without it), from the
/// market of `after` on into the next ones until the page is full.
fn sqlite_page(conn: &Connection, table: Table, q: &ExportQuery, after: Option<&Key>) -> Result<Page, StoreError> {
    let user = signed(q.user, "user")?;
    let (start, end) = (bound(q.start_ms, 0), bound(q.end_ms, i64::MAX));
    let next_symbol = |after: &str| -> Result<Option<String>, StoreError> {
        if q.symbol.is_some() {
            return Ok(None);
        }
        conn.prepare_cached(sqlite_next_symbol_sql(table))
            .and_then(|mut s| s.query_row(params![user, after], |row| row.get(0)).optional())
            .map_err(sqlite_error)
    };
    // Where the page starts: after the last row read, or before every
    // row of the first market (ids are never negative).
    let (mut symbol, mut id, mut is_buyer) = match after {
        Some(Key::Trade {
            symbol,
            trade_id,
            is_buyer,
        }) => (Some(symbol.clone()), *trade_id, *is_buyer),
        Some(Key::Order { symbol, order_id }) => (Some(symbol.clone()), *order_id, true),
        None => (
            q.symbol.clone().map_or_else(|| next_symbol(""), |s| Ok(Some(s)))?,
            -1,
            true,
        ),
    };
    let mut statement = conn.prepare_cached(&sqlite_sql(table)).map_err(sqlite_error)?;
    let mut page = match table {
        Table::Trades => Page::Trades(Vec::new()),
        Table::Orders => Page::Orders(Vec::new()),
    };
    while let Some(market) = symbol {
        let room = (EXPORT_PAGE_ROWS - page.len()) as i64;
        match &mut page {
            Page::Trades(rows) => statement
                .query_map(
                    params![user, market, id, is_buyer, start, end, room],
                    super::sqlite::trade_row,
                )
                .and_then(|found| found.collect::<rusqlite::Result<Vec<_>>>())
                .map(|found| rows.extend(found)),
            Page::Orders(rows) => statement
                .query_map(params![user, market, id, start, end, room], super::sqlite::order_row)
                .and_then(|found| found.collect::<rusqlite::Result<Vec<_>>>())
                .map(|found| rows.extend(found)),
        }
        .map_err(sqlite_error)?;
        if page.len() >= EXPORT_PAGE_ROWS {
            break;
        }
        symbol = next_symbol(&market)?;
        (id, is_buyer) = (-1, true);
    }
    Ok(page)
}

/// Connects, opens the export's snapshot and declares its cursor; returns
/// the connection and the prepared `FETCH` of one page.
async fn declare(
    url: &str,
    queue: Option<glommio::TaskQueueHandle>,
    table: Table,
    q: &ExportQuery,
) -> Result<(Client, Statement), StoreError> {
    let client = super::postgres::connect_client_on(url, queue).await?;
    client
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .await
        .map_err(pg_error)?;
    let symbol_filter = if q.symbol.is_some() { "AND symbol = $4" } else { "" };
    let (columns, table_name, order) = match table {
        Table::Trades => (super::postgres::trade_columns(), "trades", "symbol, trade_id, is_buyer"),
        Table::Orders => (super::postgres::order_columns(), "orders", "symbol, order_id"),
    };
    let sql = format!(
        "DECLARE {PG_CURSOR} NO SCROLL CURSOR FOR SELECT {columns} FROM {table_name}
         WHERE user_id = $1 AND time_ms >= $2 AND time_ms <= $3 {symbol_filter} ORDER BY {order}"
    );
    let user = signed(q.user, "user")?;
    let (start, end) = (bound(q.start_ms, 0), bound(q.end_ms, i64::MAX));
    match &q.symbol {
        Some(symbol) => client.execute(&sql, &[&user, &start, &end, symbol]).await,
        None => client.execute(&sql, &[&user, &start, &end]).await,
    }
    .map_err(pg_error)?;
    let fetch = client
        .prepare(&format!("FETCH {EXPORT_PAGE_ROWS} FROM {PG_CURSOR}"))
        .await
        .map_err(pg_error)?;
    Ok((client, fetch))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::rows::Row;
    use crate::store::sqlite::SqliteStore;
    use crate::store::{Batch, HistoryStore, Progress};

    fn trade(user: u64, symbol: &str, trade_id: u64, is_buyer: bool, time_ms: u64) -> TradeRow {
        TradeRow {
            user,
            symbol: symbol.into(),
            trade_id,
            order_id: trade_id * 10,
            price: 3_000_000_000_000,
            qty: 1_000_000,
            quote_qty: 30_000_000_000,
            commission: 1_000,
            commission_asset: "BTC".into(),
            is_buyer,
            is_maker: !is_buyer,
            time_ms,
        }
    }

    fn order(user: u64, symbol: &str, order_id: u64, time_ms: u64) -> OrderRow {
        OrderRow {
            user,
            symbol: symbol.into(),
            order_id,
            client_order_id: format!("c{order_id}"),
            price: 3_000_000_000_000,
            orig_qty: 1_000_000,
            orig_quote_qty: 0,
            executed_qty: 0,
            cummulative_quote_qty: 0,
            status: "CANCELED".into(),
            time_in_force: "GTC".into(),
            order_type: "LIMIT".into(),
            side: "BUY".into(),
            stop_price: 0,
            time_ms,
            update_time_ms: time_ms + 1,
            stp_mode: "NONE".into(),
            iceberg_qty: 0,
            trailing_delta: 0,
            order_list_id: 0,
        }
    }

    /// A SQLite file with `rows` written as the writer writes them.
    fn store_with(rows: Vec<Row>) -> (tempdir::Dir, PathBuf) {
        let dir = tempdir::Dir::new();
        let path = dir.0.join("history.sqlite");
        let mut store = SqliteStore::open(&path).expect("open");
        futures_lite::future::block_on(async {
            store.migrate().await.expect("migrate");
            let batch = Batch {
                shard: 0,
                progress: Progress { generation: 1, lsn: 1 },
                rows,
            };
            assert!(store.write(&batch).await.expect("write"));
        });
        (dir, path)
    }

    mod tempdir {
        /// A directory removed when dropped.
        pub struct Dir(pub std::path::PathBuf);

        impl Dir {
            pub fn new() -> Dir {
                use std::sync::atomic::{AtomicU64, Ordering};
                static NEXT: AtomicU64 = AtomicU64::new(0);
                let path = std::env::temp_dir().join(format!(
                    "tradsys-export-test-{}-{}",
                    std::process::id(),
                    NEXT.fetch_add(1, Ordering::Relaxed)
                ));
                std::fs::create_dir_all(&path).expect("a temp dir");
                Dir(path)
            }
        }

        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    /// Every page of an export, read the way the cursor reads them.
    fn all_pages(conn: &Connection, table: Table, q: &ExportQuery) -> Vec<Page> {
        let mut pages = Vec::new();
        let mut after = None;
        loop {
            let page = sqlite_page(conn, table, q, after.as_ref()).expect("a page");
            let full = page.len() == EXPORT_PAGE_ROWS;
            if let Some(key) = last_key(&page).expect("a key") {
                after = Some(key);
            }
            if !page.is_empty() {
                pages.push(page);
            }
            if !full {
                return pages;
            }
        }
    }

    fn trade_keys(pages: &[Page]) -> Vec<(String, u64, bool)> {
        pages
            .iter()
            .flat_map(|p| match p {
                Page::Trades(rows) => rows
                    .iter()
                    .map(|t| (t.symbol.clone(), t.trade_id, t.is_buyer))
                    .collect(),
                Page::Orders(_) => Vec::new(),
            })
            .collect()
    }

    #[test]
    fn keyset_pages_list_every_row_once_in_symbol_and_id_order() {
        // 2,500 trades of user 7 over two markets (self-trades: both
        // sides), trades of another user in between.
        let mut rows = Vec::new();
        for id in 0..1250u64 {
            for symbol in ["ETHUSDT", "BTCUSDT"] {
                rows.push(Row::Trade(trade(7, symbol, id, false, 1000 + id)));
                if id % 5 == 0 {
                    rows.push(Row::Trade(trade(7, symbol, id, true, 1000 + id)));
                } else {
                    rows.push(Row::Trade(trade(8, symbol, id, true, 1000 + id)));
                }
            }
        }
        let (_dir, path) = store_with(rows);
        let conn = open_read_only(&path).expect("read-only");
        let q = ExportQuery {
            user: 7,
            symbol: None,
            start_ms: None,
            end_ms: None,
        };
        let pages = all_pages(&conn, Table::Trades, &q);
        let keys = trade_keys(&pages);
        let mut expected = Vec::new();
        for symbol in ["BTCUSDT", "ETHUSDT"] {
            for id in 0..1250u64 {
                expected.push((symbol.to_string(), id, false));
                if id % 5 == 0 {
                    expected.push((symbol.to_string(), id, true));
                }
            }
        }
        assert_eq!(keys.len(), 3000);
        assert_eq!(keys, expected);
        assert_eq!(pages.len(), 3);
        // One market, a time window (inclusive at both ends).
        let q = ExportQuery {
            user: 7,
            symbol: Some("ETHUSDT".into()),
            start_ms: Some(1010),
            end_ms: Some(1020),
        };
        let keys = trade_keys(&all_pages(&conn, Table::Trades, &q));
        let mut expected = Vec::new();
        for id in 10..=20u64 {
            expected.push(("ETHUSDT".to_string(), id, false));
            if id % 5 == 0 {
                expected.push(("ETHUSDT".to_string(), id, true));
            }
        }
        assert_eq!(keys, expected);
        // Orders: ids are global; 1,100 per market, the user's every
        // third, markets interleaved.
        let mut rows = Vec::new();
        for id in 0..6600u64 {
            let symbol = ["BTCUSDT", "ETHUSDT"][(id % 2) as usize];
            rows.push(Row::Order(order(
                if id % 3 == 0 { 7 } else { 8 },
                symbol,
                id,
                5000 + id,
            )));
        }
        let (_orders_dir, orders_path) = store_with(rows);
        let orders = open_read_only(&orders_path).expect("read-only");
        let order_ids = |q: &ExportQuery| -> Vec<(String, u64)> {
            all_pages(&orders, Table::Orders, q)
                .iter()
                .flat_map(|p| match p {
                    Page::Orders(rows) => rows.iter().map(|o| (o.symbol.clone(), o.order_id)).collect(),
                    Page::Trades(_) => Vec::new(),
                })
                .collect()
        };
        let all = ExportQuery {
            user: 7,
            symbol: None,
            start_ms: None,
            end_ms: None,
        };
        let mut expected: Vec<(String, u64)> = (0..6600u64)
            .filter(|id| id % 3 == 0)
            .map(|id| (["BTCUSDT", "ETHUSDT"][(id % 2) as usize].to_string(), id))
            .collect();
        expected.sort();
        assert_eq!(order_ids(&all), expected);
        let window = ExportQuery {
            user: 7,
            symbol: Some("BTCUSDT".into()),
            start_ms: Some(5000 + 6000),
            end_ms: Some(5000 + 6012),
        };
        let expected: Vec<(String, u64)> = [6000, 6006, 6012]
            .iter()
            .map(|&id| ("BTCUSDT".to_string(), id))
            .collect();
        assert_eq!(order_ids(&window), expected);
        // Nobody's rows: one empty page.
        let q = ExportQuery {
            user: 9,
            symbol: None,
            start_ms: None,
            end_ms: None,
        };
        assert!(all_pages(&conn, Table::Trades, &q).is_empty());
    }

    /// The keyset queries seek in the (user, symbol, id) index and never
    /// sort: a page costs its own rows, not the user's whole history.
    #[test]
    fn keyset_pages_seek_the_index_and_never_sort() {
        let (_dir, path) = store_with(vec![Row::Trade(trade(7, "BTCUSDT", 1, true, 1))]);
        let conn = open_read_only(&path).expect("read-only");
        let plan = |sql: &str| -> String {
            let mut statement = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).expect("plan");
            let values = vec![rusqlite::types::Value::Integer(1); statement.parameter_count()];
            let plan: Vec<String> = statement
                .query_map(rusqlite::params_from_iter(values), |row| row.get::<_, String>(3))
                .and_then(|rows| rows.collect())
                .expect("plan rows");
            plan.join("; ")
        };
        for (table, seek) in [
            (
                Table::Trades,
                "trades USING PRIMARY KEY (user_id=? AND symbol=? AND (trade_id,is_buyer)>(?,?))",
            ),
            (
                Table::Orders,
                "orders USING INDEX orders_user_symbol_id (user_id=? AND symbol=? AND order_id>?)",
            ),
        ] {
            let page = plan(&sqlite_sql(table));
            assert_eq!(page, format!("SEARCH {seek}"));
            let next = plan(sqlite_next_symbol_sql(table));
            assert!(
                next.starts_with("SEARCH") && next.contains("(user_id=? AND symbol>?)"),
                "{next}"
            );
            assert!(!next.contains("TEMP B-TREE"), "{next}");
        }
    }

    /// At most `EXPORTS_PER_SHARD_MAX` at once; an export that ends, however
    /// it ends, gives its place back.
    #[test]
    fn a_shard_runs_a_bounded_number_of_exports() {
        let dir = tempdir::Dir::new();
        let args = vec!["serve".to_string()];
        let Ok(crate::config::Command::Serve(config)) = crate::config::load(&args, &Default::default()) else {
            panic!("the default configuration");
        };
        let store = ShardStore::open(&config.history, &dir.0, 0, 1)
            .expect("a store")
            .expect("SQLite by default");
        let slots: Vec<Slot> = (0..EXPORTS_PER_SHARD_MAX)
            .map(|_| Slot::take(&store).expect("room"))
            .collect();
        assert!(Slot::take(&store).is_none());
        assert_eq!(store.counters().exports_active, EXPORTS_PER_SHARD_MAX);
        drop(slots);
        assert_eq!(store.counters().exports_active, 0);
        let again = Slot::take(&store);
        assert!(again.is_some());
        assert_eq!(store.counters().exports_active, 1);
    }

    #[test]
    fn a_missing_file_is_an_error_not_an_empty_store() {
        let dir = tempdir::Dir::new();
        let path = dir.0.join("history.sqlite");
        assert!(open_read_only(&path).is_err());
        assert!(!path.exists());
    }
}
