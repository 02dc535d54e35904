//! The PostgreSQL engine of the history store: `tokio-postgres` without a
//! tokio runtime, over a glommio socket through `tokio_util::compat`, its
//! connection future spawned on the calling shard's executor. Each shard
//! holds its own connections; no pool crate.
//!
//! A batch goes in with binary `COPY` into temporary staging tables (money
//! as integer units), then one `INSERT .. SELECT` per table that converts
//! units to `NUMERIC` exactly, all in one transaction that first locks the
//! shard's progress row and skips the batch if the progress covers it.
//! `orders`, `trades` and `ledger` are partitioned by month of their time
//! (`history_ensure_partitions`, in the first migration).

use super::rows::{LedgerCause, LedgerRow, OrderRow, Row, TradeRow, TransferId, TransferRow};
use super::{
    bound, check_batch, clamp_limit, in_list_order, signed, transfer_amount, transfer_ids_condition, unsigned, Batch,
    CandleParts, CandlesQuery, HistoryStore, OrdersQuery, Progress, StoreError, TradesQuery, TransfersQuery, Window,
    TRANSFER_CAUSES,
};
use crate::marketdata::Candle;
use std::pin::pin;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::config::Host;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Config, IsolationLevel, NoTls, Transaction};
use tokio_util::compat::FuturesAsyncReadCompatExt;
use tradsys_engine::num::{Amount, Price, Qty};

/// The schema versions, each with the SQL that reaches it from the one
/// before.
pub(crate) const MIGRATIONS: &[(u32, &str)] = &[
    (1, include_str!("migrations/postgres/0001_history.sql")),
    (2, include_str!("migrations/postgres/0002_statistics.sql")),
    (3, include_str!("migrations/postgres/0003_transfers.sql")),
    (4, include_str!("migrations/postgres/0004_iceberg.sql")),
    (5, include_str!("migrations/postgres/0005_trailing.sql")),
    (6, include_str!("migrations/postgres/0006_order_lists.sql")),
];
/// The statistics views, refreshed together.
const STATISTICS_VIEWS: [&str; 4] = [
    "market_daily_stats",
    "user_daily_stats",
    "market_24h_stats",
    "user_24h_stats",
];
/// Units of 10⁻⁸ in one, for converting NUMERIC back to units.
const UNITS: &str = "100000000";
/// One unit, for converting units to NUMERIC: an exact multiplication
/// with scale 8, cheaper than a division.
const UNIT: &str = "0.00000001";

pub struct PgStore {
    client: Client,
    /// Where the server's WAL stood after this connection's last batch
    /// committed: a reader that must see that batch may use a replica only
    /// once the replica has replayed this far.
    last_write_lsn: u64,
}

/// The error as PostgreSQL gave it: its SQLSTATE, message and detail when
/// the server answered (tokio-postgres prints only "db error" for those).
fn engine(e: tokio_postgres::Error) -> StoreError {
    match e.as_db_error() {
        Some(db) if *db.code() == tokio_postgres::error::SqlState::DISK_FULL => {
            StoreError::Full(format!("{} {}", db.code().code(), db.message()))
        }
        Some(db) => StoreError::Engine(format!(
            "{} {}{}",
            db.code().code(),
            db.message(),
            db.detail().map(|d| format!(" ({d})")).unwrap_or_default()
        )),
        None => StoreError::Engine(e.to_string()),
    }
}

/// Creates the first schema of the search path when it does not exist
/// (`current_schema()` is then NULL): a cluster instance's schema (see
/// [`with_search_path`]) is made by its first start.
const CREATE_SEARCH_SCHEMA: &str = "DO $$ BEGIN
IF current_schema() IS NULL THEN
  EXECUTE format('CREATE SCHEMA IF NOT EXISTS %I', trim(split_part(current_setting('search_path'), ',', 1)));
END IF;
END $$";

/// `url` with its connections' search path set to `schema` alone, so that
/// every table tradsys makes and reads is that schema's: the instances of
/// a cluster share one PostgreSQL, each in a schema of its own. `url` is
/// a URI (`postgresql://...`) or libpq's key=value form; one that sets
/// `options` itself is refused.
pub fn with_search_path(url: &str, schema: &str) -> Result<String, String> {
    let config: Config = url.parse().map_err(|e| format!("{e}"))?;
    if config.get_options().is_some() {
        return Err("sets options; an instance of a cluster sets its own search path".into());
    }
    let uri = url.starts_with("postgres://") || url.starts_with("postgresql://");
    Ok(match (uri, url.contains('?')) {
        (true, true) => format!("{url}&options=-c%20search_path%3D{schema}"),
        (true, false) => format!("{url}?options=-c%20search_path%3D{schema}"),
        (false, _) => format!("{url} options='-c search_path={schema}'"),
    })
}

/// A client connected to `url` (libpq key=value form, TCP host) from the
/// current executor, its connection's task spawned there; it runs until
/// the client drops or the server goes away (the next call then fails and
/// the caller reconnects).
pub async fn connect_client(url: &str) -> Result<Client, StoreError> {
    connect_client_on(url, None).await
}

/// `connect_client`, the connection's task spawned into `queue` (the
/// shard's low-share history queue) when given.
pub async fn connect_client_on(url: &str, queue: Option<glommio::TaskQueueHandle>) -> Result<Client, StoreError> {
    let config: Config = url.parse().map_err(engine)?;
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(host)) => host.clone(),
        _ => return Err(StoreError::Engine("the PostgreSQL URL needs a TCP host".into())),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let stream = glommio::net::TcpStream::connect(format!("{host}:{port}"))
        .await
        .map_err(|e| StoreError::Engine(format!("connecting to {host}:{port}: {e}")))?;
    let _ = stream.set_nodelay(true);
    let (client, connection) = config.connect_raw(stream.compat(), NoTls).await.map_err(engine)?;
    let driver = async move {
        let _ = connection.await;
    };
    match queue {
        Some(queue) => {
            glommio::spawn_local_into(driver, queue)
                .map_err(|e| StoreError::Engine(format!("cannot run the connection: {e}")))?
                .detach();
        }
        None => {
            glommio::spawn_local(driver).detach();
        }
    }
    Ok(client)
}

impl PgStore {
    /// Connects to `url` (libpq key=value form, TCP host) from the current
    /// shard's executor; the connection's task runs there until the client
    /// drops.
    pub async fn connect(url: &str) -> Result<PgStore, StoreError> {
        PgStore::connect_on(url, None).await
    }

    /// `connect`, the connection's task in `queue` when given.
    pub async fn connect_on(url: &str, queue: Option<glommio::TaskQueueHandle>) -> Result<PgStore, StoreError> {
        let client = connect_client_on(url, queue).await?;
        Ok(PgStore {
            client,
            last_write_lsn: 0,
        })
    }

    /// Creates the monthly partitions from the month of `from_ms` for
    /// `months` months (those that exist are kept); returns how many tables
    /// it created.
    pub async fn ensure_partitions(&mut self, from_ms: u64, months: u32) -> Result<u32, StoreError> {
        let row = self
            .client
            .query_one(
                "SELECT history_ensure_partitions($1, $2)",
                &[&signed(from_ms, "time")?, &(months as i32)],
            )
            .await
            .map_err(engine)?;
        Ok(row.get::<_, i32>(0) as u32)
    }

    /// Refreshes the statistics views without blocking their readers
    /// (`REFRESH MATERIALIZED VIEW CONCURRENTLY`); the server calls it on
    /// a timer.
    pub async fn refresh_statistics(&mut self) -> Result<(), StoreError> {
        for view in STATISTICS_VIEWS {
            self.client
                .batch_execute(&format!("REFRESH MATERIALIZED VIEW CONCURRENTLY {view}"))
                .await
                .map_err(engine)?;
        }
        Ok(())
    }

    /// The WAL position (bytes) after this connection's last batch.
    pub fn last_write_position(&self) -> u64 {
        self.last_write_lsn
    }

    /// The server's current WAL write position, in bytes.
    pub async fn wal_position(&self) -> Result<u64, StoreError> {
        let row = self
            .client
            .query_one("SELECT (pg_current_wal_lsn() - '0/0')::bigint", &[])
            .await
            .map_err(engine)?;
        unsigned(row.get(0), "WAL position")
    }

    /// How far a replica has replayed the primary's WAL, in bytes; `None`
    /// on a server that is not a replica.
    pub async fn replay_position(&self) -> Result<Option<u64>, StoreError> {
        let row = self
            .client
            .query_one("SELECT (pg_last_wal_replay_lsn() - '0/0')::bigint", &[])
            .await
            .map_err(engine)?;
        row.get::<_, Option<i64>>(0)
            .map(|p| unsigned(p, "replay position"))
            .transpose()
    }

    /// Refreshes the planner's statistics (after a bulk load).
    pub async fn execute_analyze(&self) {
        let _ = self.client.batch_execute("ANALYZE").await;
    }

    /// Runs `sql` as it is (tests drive replicas with it).
    #[cfg(test)]
    pub async fn execute_for_test(&self, sql: &str) {
        self.client.batch_execute(sql).await.expect("test SQL");
    }

    async fn version(&self) -> Result<u32, StoreError> {
        self.client.batch_execute(CREATE_SEARCH_SCHEMA).await.map_err(engine)?;
        self.client
            .batch_execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY)")
            .await
            .map_err(engine)?;
        let row = self
            .client
            .query_one("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", &[])
            .await
            .map_err(engine)?;
        Ok(row.get::<_, i32>(0) as u32)
    }
}

/// A shard's progress row before its first batch, (0, 0); generations
/// start at 1.
const INSERT_PROGRESS: &str =
    "INSERT INTO progress (shard, generation, lsn) VALUES ($1, 0, 0) ON CONFLICT (shard) DO NOTHING";

async fn stored_progress(tx: &Transaction<'_>, shard: u32, lock: bool) -> Result<Option<Progress>, StoreError> {
    let sql = if lock {
        "SELECT generation, lsn FROM progress WHERE shard = $1 FOR UPDATE"
    } else {
        "SELECT generation, lsn FROM progress WHERE shard = $1"
    };
    let row = tx.query_opt(sql, &[&(shard as i32)]).await.map_err(engine)?;
    row.map(|row| {
        Ok(Progress {
            generation: unsigned(row.get(0), "generation")?,
            lsn: unsigned(row.get(1), "lsn")?,
        })
    })
    .transpose()
}

/// The staging tables of one transaction: money as units, the row's place
/// in the batch as `seq`; counts that are not money (`trailing_delta`) and
/// ids (`order_list_id`) as the tables have them.
const STAGING: &str = "
CREATE TEMP TABLE IF NOT EXISTS staging_orders (seq INTEGER, order_id BIGINT, user_id BIGINT, symbol TEXT,
    client_order_id TEXT, price BIGINT, orig_qty BIGINT, orig_quote_qty BIGINT, executed_qty BIGINT,
    cummulative_quote_qty BIGINT, status TEXT, time_in_force TEXT, order_type TEXT, side TEXT, stop_price BIGINT,
    time_ms BIGINT, update_time_ms BIGINT, stp_mode TEXT, iceberg_qty BIGINT,
    trailing_delta INTEGER, order_list_id BIGINT) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS staging_trades (symbol TEXT, trade_id BIGINT, is_buyer BOOLEAN, user_id BIGINT,
    order_id BIGINT, price BIGINT, qty BIGINT, quote_qty BIGINT, commission BIGINT, commission_asset TEXT,
    is_maker BOOLEAN, time_ms BIGINT) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS staging_ledger (seq INTEGER, account BIGINT, asset TEXT, delta BIGINT, cause TEXT,
    reference BIGINT, time_ms BIGINT) ON COMMIT DELETE ROWS;";

const ORDER_TYPES: &[Type] = &[
    Type::INT4,
    Type::INT8,
    Type::INT8,
    Type::TEXT,
    Type::TEXT,
    Type::INT8,
    Type::INT8,
    Type::INT8,
    Type::INT8,
    Type::INT8,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::INT8,
    Type::INT8,
    Type::INT8,
    Type::TEXT,
    Type::INT8,
    Type::INT4,
    Type::INT8,
];
const TRADE_TYPES: &[Type] = &[
    Type::TEXT,
    Type::INT8,
    Type::BOOL,
    Type::INT8,
    Type::INT8,
    Type::INT8,
    Type::INT8,
    Type::INT8,
    Type::INT8,
    Type::TEXT,
    Type::BOOL,
    Type::INT8,
];
const LEDGER_TYPES: &[Type] = &[
    Type::INT4,
    Type::INT8,
    Type::TEXT,
    Type::INT8,
    Type::TEXT,
    Type::INT8,
    Type::INT8,
];

/// COPYs the batch's orders, trades and ledger entries into the staging
/// tables, each value straight from its row (no per-value allocation).
async fn copy_staged(tx: &Transaction<'_>, batch: &Batch) -> Result<(), StoreError> {
    let count = |wanted: fn(&Row) -> bool| batch.rows.iter().filter(|r| wanted(r)).count();
    if count(|r| matches!(r, Row::Order(_))) > 0 {
        let sink = tx
            .copy_in("COPY staging_orders FROM STDIN (FORMAT binary)")
            .await
            .map_err(engine)?;
        let mut writer = pin!(BinaryCopyInWriter::new(sink, ORDER_TYPES));
        for (seq, row) in batch.rows.iter().enumerate() {
            let Row::Order(o) = row else { continue };
            let ids = [
                signed(o.order_id, "order id")?,
                signed(o.user, "user")?,
                signed(o.time_ms, "time")?,
                signed(o.update_time_ms, "time")?,
                signed(o.order_list_id, "order list id")?,
            ];
            // The column is an INTEGER: a delta past its range is refused
            // here, with the row's order id, rather than by the server
            // for the whole COPY.
            let trailing_delta = i32::try_from(o.trailing_delta).map_err(|_| {
                StoreError::Corrupt(format!(
                    "order {}: trailing delta {} does not fit an integer",
                    o.order_id, o.trailing_delta
                ))
            })?;
            let values: [&(dyn ToSql + Sync); 21] = [
                &(seq as i32),
                &ids[0],
                &ids[1],
                &o.symbol,
                &o.client_order_id,
                &o.price,
                &o.orig_qty,
                &o.orig_quote_qty,
                &o.executed_qty,
                &o.cummulative_quote_qty,
                &o.status,
                &o.time_in_force,
                &o.order_type,
                &o.side,
                &o.stop_price,
                &ids[2],
                &ids[3],
                &o.stp_mode,
                &o.iceberg_qty,
                &trailing_delta,
                &ids[4],
            ];
            writer.as_mut().write(&values).await.map_err(engine)?;
        }
        writer.as_mut().finish().await.map_err(engine)?;
    }
    if count(|r| matches!(r, Row::Trade(_))) > 0 {
        let sink = tx
            .copy_in("COPY staging_trades FROM STDIN (FORMAT binary)")
            .await
            .map_err(engine)?;
        let mut writer = pin!(BinaryCopyInWriter::new(sink, TRADE_TYPES));
        for row in &batch.rows {
            let Row::Trade(t) = row else { continue };
            let ids = [
                signed(t.trade_id, "trade id")?,
                signed(t.user, "user")?,
                signed(t.order_id, "order id")?,
                signed(t.time_ms, "time")?,
            ];
            let values: [&(dyn ToSql + Sync); 12] = [
                &t.symbol,
                &ids[0],
                &t.is_buyer,
                &ids[1],
                &ids[2],
                &t.price,
                &t.qty,
                &t.quote_qty,
                &t.commission,
                &t.commission_asset,
                &t.is_maker,
                &ids[3],
            ];
            writer.as_mut().write(&values).await.map_err(engine)?;
        }
        writer.as_mut().finish().await.map_err(engine)?;
    }
    if count(|r| matches!(r, Row::Ledger(_))) > 0 {
        let sink = tx
            .copy_in("COPY staging_ledger FROM STDIN (FORMAT binary)")
            .await
            .map_err(engine)?;
        let mut writer = pin!(BinaryCopyInWriter::new(sink, LEDGER_TYPES));
        for (seq, row) in batch.rows.iter().enumerate() {
            let Row::Ledger(l) = row else { continue };
            let ids = [
                signed(l.account, "account")?,
                signed(l.reference, "reference")?,
                signed(l.time_ms, "time")?,
            ];
            let cause = l.cause.as_str();
            let values: [&(dyn ToSql + Sync); 7] =
                [&(seq as i32), &ids[0], &l.asset, &l.delta, &cause, &ids[1], &ids[2]];
            writer.as_mut().write(&values).await.map_err(engine)?;
        }
        writer.as_mut().finish().await.map_err(engine)?;
    }
    Ok(())
}

/// Users and keys are few: plain upserts.
async fn write_accounts(tx: &Transaction<'_>, batch: &Batch) -> Result<(), StoreError> {
    for row in &batch.rows {
        match row {
            Row::User(u) => {
                tx.execute(
                    "INSERT INTO users (user_id, name, created_ms) VALUES ($1, $2, $3)
                     ON CONFLICT (user_id) DO UPDATE SET name = excluded.name",
                    &[&signed(u.user, "user")?, &u.name, &signed(u.created_ms, "time")?],
                )
                .await
                .map_err(engine)?;
            }
            Row::Key(k) => {
                tx.execute(
                    "INSERT INTO api_keys (api_key, user_id, scopes, revoked, changed_ms) VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (api_key) DO UPDATE SET scopes = excluded.scopes, revoked = excluded.revoked,
                        changed_ms = excluded.changed_ms",
                    &[
                        &k.api_key,
                        &signed(k.user, "user")?,
                        &k.scopes,
                        &k.revoked,
                        &signed(k.changed_ms, "time")?,
                    ],
                )
                .await
                .map_err(engine)?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// Moves the staged rows into the tables: the latest state of each order,
/// every order event, every trade side and ledger entry.
async fn insert_staged(tx: &Transaction<'_>, batch: &Batch) -> Result<(), StoreError> {
    let key: [&(dyn ToSql + Sync); 3] = [
        &(batch.shard as i32),
        &signed(batch.progress.generation, "generation")?,
        &signed(batch.progress.lsn, "lsn")?,
    ];
    let orders = format!(
        "INSERT INTO orders (order_id, user_id, symbol, client_order_id, price, orig_qty, orig_quote_qty,
            executed_qty, cummulative_quote_qty, status, time_in_force, order_type, side, stop_price, time_ms,
            update_time_ms, stp_mode, iceberg_qty, trailing_delta, order_list_id)
         SELECT DISTINCT ON (order_id) order_id, user_id, symbol, client_order_id, price::numeric * {UNIT},
            orig_qty::numeric * {UNIT}, orig_quote_qty::numeric * {UNIT}, executed_qty::numeric * {UNIT},
            cummulative_quote_qty::numeric * {UNIT}, status, time_in_force, order_type, side,
            stop_price::numeric * {UNIT}, time_ms, update_time_ms, stp_mode, iceberg_qty::numeric * {UNIT},
            trailing_delta, order_list_id
         FROM staging_orders ORDER BY order_id, seq DESC
         ON CONFLICT (order_id, time_ms) DO UPDATE SET executed_qty = excluded.executed_qty,
            cummulative_quote_qty = excluded.cummulative_quote_qty, status = excluded.status,
            update_time_ms = excluded.update_time_ms"
    );
    tx.execute(&orders, &[]).await.map_err(engine)?;
    let events = format!(
        "INSERT INTO order_events (shard, generation, lsn, seq, order_id, status, executed_qty,
            cummulative_quote_qty, update_time_ms)
         SELECT $1, $2, $3, seq, order_id, status, executed_qty::numeric * {UNIT},
            cummulative_quote_qty::numeric * {UNIT}, update_time_ms FROM staging_orders"
    );
    tx.execute(&events, &key).await.map_err(engine)?;
    let trades = format!(
        "INSERT INTO trades (symbol, trade_id, is_buyer, user_id, order_id, price, qty, quote_qty, commission,
            commission_asset, is_maker, time_ms)
         SELECT symbol, trade_id, is_buyer, user_id, order_id, price::numeric * {UNIT}, qty::numeric * {UNIT},
            quote_qty::numeric * {UNIT}, commission::numeric * {UNIT}, commission_asset, is_maker, time_ms
         FROM staging_trades"
    );
    tx.execute(&trades, &[]).await.map_err(engine)?;
    let ledger = format!(
        "INSERT INTO ledger (shard, generation, lsn, seq, account, asset, delta, cause, reference, time_ms)
         SELECT $1, $2, $3, seq, account, asset, delta::numeric * {UNIT}, cause, reference, time_ms
         FROM staging_ledger"
    );
    tx.execute(&ledger, &key).await.map_err(engine)?;
    Ok(())
}

/// The columns of an order as `OrderRow` reads them; money comes as
/// NUMERIC and is decoded to units here (`Units`), not on the server, and
/// `trailing_delta`, a count, as the INTEGER it is, and `order_list_id`, an
/// id, as the BIGINT it is.
pub(super) fn order_columns() -> String {
    "user_id, symbol, order_id, client_order_id, price, orig_qty, orig_quote_qty, executed_qty,
     cummulative_quote_qty, status, time_in_force, order_type, side, stop_price, time_ms, update_time_ms, stp_mode,
     iceberg_qty, trailing_delta, order_list_id"
        .to_string()
}

/// Money read from a NUMERIC column, in integer units of 10⁻⁸. Decoding
/// NUMERIC's binary form here costs the server nothing per row.
struct Units(i64);

impl<'a> tokio_postgres::types::FromSql<'a> for Units {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Units, Box<dyn std::error::Error + Sync + Send>> {
        numeric_units(raw)
            .map(Units)
            .ok_or_else(|| "a NUMERIC that is not a whole number of 1e-8 units".into())
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::NUMERIC
    }
}

/// NUMERIC's binary form — digit count, weight, sign, display scale, then
/// base-10000 digits, the first weighing 10000^weight — as units of 10⁻⁸
/// (10⁸ = 10000²); `None` for NaN, infinities, a value finer than 10⁻⁸ or
/// one that does not fit.
fn numeric_units(raw: &[u8]) -> Option<i64> {
    let word = |i: usize| raw.get(2 * i..2 * i + 2).map(|b| i16::from_be_bytes([b[0], b[1]]));
    let (digits, weight, sign) = (word(0)?, word(1)?, word(2)? as u16);
    let negative = match sign {
        0x0000 => false,
        0x4000 => true,
        _ => return None,
    };
    let mut units: i128 = 0;
    for i in 0..digits.max(0) as usize {
        let digit = i128::from(word(4 + i)?);
        let exponent = i32::from(weight) - i as i32 + 2;
        if exponent < 0 {
            if digit != 0 {
                return None;
            }
            continue;
        }
        units = units.checked_add(digit.checked_mul(10_000i128.checked_pow(exponent as u32)?)?)?;
    }
    i64::try_from(if negative { -units } else { units }).ok()
}

pub(super) fn order_row(row: &tokio_postgres::Row) -> Result<OrderRow, StoreError> {
    Ok(OrderRow {
        user: unsigned(row.get(0), "user")?,
        symbol: row.get(1),
        order_id: unsigned(row.get(2), "order id")?,
        client_order_id: row.get(3),
        price: row.get::<_, Units>(4).0,
        orig_qty: row.get::<_, Units>(5).0,
        orig_quote_qty: row.get::<_, Units>(6).0,
        executed_qty: row.get::<_, Units>(7).0,
        cummulative_quote_qty: row.get::<_, Units>(8).0,
        status: row.get(9),
        time_in_force: row.get(10),
        order_type: row.get(11),
        side: row.get(12),
        stop_price: row.get::<_, Units>(13).0,
        time_ms: unsigned(row.get(14), "time")?,
        update_time_ms: unsigned(row.get(15), "time")?,
        stp_mode: row.get(16),
        iceberg_qty: row.get::<_, Units>(17).0,
        trailing_delta: i64::from(row.get::<_, i32>(18)),
        order_list_id: unsigned(row.get(19), "order list id")?,
    })
}

pub(super) fn trade_columns() -> String {
    "user_id, symbol, trade_id, order_id, price, qty, quote_qty, commission, commission_asset, is_buyer, is_maker,
     time_ms"
        .to_string()
}

pub(super) fn trade_row(row: &tokio_postgres::Row) -> Result<TradeRow, StoreError> {
    Ok(TradeRow {
        user: unsigned(row.get(0), "user")?,
        symbol: row.get(1),
        trade_id: unsigned(row.get(2), "trade id")?,
        order_id: unsigned(row.get(3), "order id")?,
        price: row.get::<_, Units>(4).0,
        qty: row.get::<_, Units>(5).0,
        quote_qty: row.get::<_, Units>(6).0,
        commission: row.get::<_, Units>(7).0,
        commission_asset: row.get(8),
        is_buyer: row.get(9),
        is_maker: row.get(10),
        time_ms: unsigned(row.get(11), "time")?,
    })
}

impl HistoryStore for PgStore {
    async fn migrate(&mut self) -> Result<u32, StoreError> {
        let found = self.version().await?;
        let known = MIGRATIONS.last().map_or(0, |(v, _)| *v);
        if found > known {
            return Err(StoreError::SchemaTooNew { found, known });
        }
        for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > found) {
            let tx = self.client.transaction().await.map_err(engine)?;
            tx.batch_execute(sql).await.map_err(engine)?;
            tx.execute(
                "INSERT INTO schema_migrations (version) VALUES ($1)",
                &[&(*version as i32)],
            )
            .await
            .map_err(engine)?;
            tx.commit().await.map_err(engine)?;
        }
        Ok(found)
    }

    async fn progress(&mut self, shard: u32) -> Result<Option<Progress>, StoreError> {
        let tx = self.client.transaction().await.map_err(engine)?;
        // A process killed a moment ago may have sent the COMMIT of its
        // last batch, which its backend still runs: that batch holds the
        // row's lock from its start (`write`), so reading under the lock
        // waits for it. Otherwise start-up read the progress before that
        // batch and made its rows again (a duplicate trade side). The
        // insert waits the same way for a first batch still running.
        tx.execute(INSERT_PROGRESS, &[&(shard as i32)]).await.map_err(engine)?;
        let progress = stored_progress(&tx, shard, true).await?;
        tx.commit().await.map_err(engine)?;
        // (0, 0): the row is there, no batch yet.
        Ok(progress.filter(|p| *p != Progress { generation: 0, lsn: 0 }))
    }

    async fn write(&mut self, batch: &Batch) -> Result<bool, StoreError> {
        check_batch(batch)?;
        let tx = self.client.transaction().await.map_err(engine)?;
        tx.execute(INSERT_PROGRESS, &[&(batch.shard as i32)])
            .await
            .map_err(engine)?;
        let stored = stored_progress(&tx, batch.shard, true).await?;
        if stored.is_some_and(|p| p >= batch.progress) {
            return Ok(false);
        }
        tx.batch_execute(STAGING).await.map_err(engine)?;
        copy_staged(&tx, batch).await?;
        write_accounts(&tx, batch).await?;
        insert_staged(&tx, batch).await?;
        tx.execute(
            "UPDATE progress SET generation = $2, lsn = $3 WHERE shard = $1",
            &[
                &(batch.shard as i32),
                &signed(batch.progress.generation, "generation")?,
                &signed(batch.progress.lsn, "lsn")?,
            ],
        )
        .await
        .map_err(engine)?;
        tx.commit().await.map_err(engine)?;
        self.last_write_lsn = self.wal_position().await?;
        Ok(true)
    }

    async fn order(&mut self, user: u64, symbol: &str, order_id: u64) -> Result<Option<OrderRow>, StoreError> {
        let sql = format!(
            "SELECT {} FROM orders WHERE order_id = $1 AND user_id = $2 AND symbol = $3",
            order_columns()
        );
        let row = self
            .client
            .query_opt(&sql, &[&signed(order_id, "order id")?, &signed(user, "user")?, &symbol])
            .await
            .map_err(engine)?;
        row.as_ref().map(order_row).transpose()
    }

    async fn order_by_client_id(
        &mut self,
        user: u64,
        symbol: &str,
        client_id: &str,
    ) -> Result<Option<OrderRow>, StoreError> {
        let sql = format!(
            "SELECT {} FROM orders WHERE user_id = $1 AND symbol = $2 AND client_order_id = $3
             ORDER BY order_id DESC LIMIT 1",
            order_columns()
        );
        let row = self
            .client
            .query_opt(&sql, &[&signed(user, "user")?, &symbol, &client_id])
            .await
            .map_err(engine)?;
        row.as_ref().map(order_row).transpose()
    }

    async fn orders(&mut self, q: &OrdersQuery<'_>) -> Result<Vec<OrderRow>, StoreError> {
        let window = q.window();
        let direction = if window == Window::Oldest { "ASC" } else { "DESC" };
        let sql = format!(
            "SELECT {} FROM orders WHERE user_id = $1 AND symbol = $2 AND order_id >= $3 AND time_ms >= $4
             AND time_ms <= $5 ORDER BY order_id {direction} LIMIT $6",
            order_columns()
        );
        let rows = self
            .client
            .query(
                &sql,
                &[
                    &signed(q.user, "user")?,
                    &q.symbol,
                    &bound(q.from_id, 0),
                    &bound(q.start_ms, 0),
                    &bound(q.end_ms, i64::MAX),
                    &(clamp_limit(q.limit) as i64),
                ],
            )
            .await
            .map_err(engine)?;
        let rows = rows.iter().map(order_row).collect::<Result<Vec<_>, _>>()?;
        Ok(in_list_order(rows, window))
    }

    async fn trades(&mut self, q: &TradesQuery<'_>) -> Result<Vec<TradeRow>, StoreError> {
        let window = q.window();
        let direction = if window == Window::Oldest { "ASC" } else { "DESC" };
        let sql = format!(
            "SELECT {} FROM trades WHERE user_id = $1 AND symbol = $2 AND trade_id >= $3 AND time_ms >= $4
             AND time_ms <= $5 AND ($7::bigint IS NULL OR order_id = $7)
             ORDER BY trade_id {direction}, is_buyer {direction} LIMIT $6",
            trade_columns()
        );
        let order_id: Option<i64> = q.order_id.map(|o| signed(o, "order id")).transpose()?;
        let rows = self
            .client
            .query(
                &sql,
                &[
                    &signed(q.user, "user")?,
                    &q.symbol,
                    &bound(q.from_id, 0),
                    &bound(q.start_ms, 0),
                    &bound(q.end_ms, i64::MAX),
                    &(clamp_limit(q.limit) as i64),
                    &order_id,
                ],
            )
            .await
            .map_err(engine)?;
        let rows = rows.iter().map(trade_row).collect::<Result<Vec<_>, _>>()?;
        Ok(in_list_order(rows, window))
    }

    async fn transfers(&mut self, q: &TransfersQuery) -> Result<Vec<TransferRow>, StoreError> {
        if q.ids.as_ref().is_some_and(Vec::is_empty) {
            return Ok(Vec::new());
        }
        let ids = transfer_ids_condition(q.ids.as_deref());
        let sql = format!(
            "SELECT shard, generation, reference, asset, (delta * {UNITS})::bigint, time_ms FROM ledger
             WHERE account = $1 AND {TRANSFER_CAUSES} AND cause = $2 AND time_ms >= $3 AND time_ms <= $4
             AND ($5::text IS NULL OR asset = $5) {ids}
             ORDER BY time_ms DESC, shard DESC, generation DESC, reference DESC LIMIT $6"
        );
        let rows = self
            .client
            .query(
                &sql,
                &[
                    &signed(q.user, "user")?,
                    &q.cause.as_str(),
                    &bound(Some(q.start_ms), 0),
                    &bound(Some(q.end_ms), i64::MAX),
                    &q.asset,
                    &(q.rows_max() as i64),
                ],
            )
            .await
            .map_err(engine)?;
        rows.iter()
            .map(|row| {
                let shard: i32 = row.get(0);
                Ok(TransferRow {
                    id: TransferId {
                        shard: u32::try_from(shard).map_err(|_| StoreError::Corrupt(format!("shard {shard}")))?,
                        generation: unsigned(row.get(1), "generation")?,
                        lsn: unsigned(row.get(2), "reference")?,
                    },
                    asset: row.get(3),
                    amount: transfer_amount(q.cause, row.get(4))?,
                    time_ms: unsigned(row.get(5), "time")?,
                })
            })
            .collect()
    }

    async fn ledger(&mut self, user: u64) -> Result<Vec<LedgerRow>, StoreError> {
        let sql = format!(
            "SELECT account, asset, (delta * {UNITS})::bigint, cause, reference, time_ms FROM ledger
             WHERE account = $1 ORDER BY shard, generation, lsn, seq"
        );
        let rows = self
            .client
            .query(&sql, &[&signed(user, "account")?])
            .await
            .map_err(engine)?;
        rows.iter()
            .map(|row| {
                let cause: String = row.get(3);
                Ok(LedgerRow {
                    account: unsigned(row.get(0), "account")?,
                    asset: row.get(1),
                    delta: row.get(2),
                    cause: LedgerCause::parse(&cause).ok_or_else(|| StoreError::Corrupt(format!("cause {cause}")))?,
                    reference: unsigned(row.get(4), "reference")?,
                    time_ms: unsigned(row.get(5), "time")?,
                })
            })
            .collect()
    }

    async fn candles(&mut self, q: &CandlesQuery, shards: &[u32]) -> Result<CandleParts, StoreError> {
        // The open time of every candle the window can hold, for
        // width_bucket: the database needs no calendar.
        let first = q.interval.candle_number(q.from_ms);
        let last = q.interval.candle_number(q.to_ms.saturating_sub(1).max(q.from_ms));
        if last - first >= CANDLES_PER_QUERY_MAX {
            return Err(StoreError::Engine(format!(
                "a candle query over more than {CANDLES_PER_QUERY_MAX} candles"
            )));
        }
        let opens: Vec<i64> = (first..=last)
            .map(|n| signed(q.interval.nth_open_ms(n), "open time"))
            .collect::<Result<_, _>>()?;
        // The largest volume a candle shows: marketdata's sums saturate at
        // i64::MAX units, and so do these.
        let most = "92233720368.54775807";
        let sql = format!(
            "WITH parts AS (
                 SELECT width_bucket(time_ms, $4::bigint[]) AS b, min(trade_id) AS first_id,
                        max(trade_id) AS last_id, max(price) AS high, min(price) AS low, sum(qty) AS volume,
                        sum(quote_qty) AS quote_volume, count(*) AS trades,
                        coalesce(sum(qty) FILTER (WHERE NOT is_maker), 0) AS taker_base,
                        coalesce(sum(quote_qty) FILTER (WHERE NOT is_maker), 0) AS taker_quote
                 FROM trades WHERE symbol = $1 AND is_buyer AND time_ms >= $2 AND time_ms < $3
                 GROUP BY 1)
             SELECT p.b, p.first_id, p.last_id, (o.price * {UNITS})::bigint, (p.high * {UNITS})::bigint,
                    (p.low * {UNITS})::bigint, (c.price * {UNITS})::bigint,
                    (least(p.volume, {most}) * {UNITS})::bigint, (least(p.quote_volume, {most}) * {UNITS})::bigint,
                    p.trades, (least(p.taker_base, {most}) * {UNITS})::bigint,
                    (least(p.taker_quote, {most}) * {UNITS})::bigint
             FROM parts p
             JOIN trades o ON o.symbol = $1 AND o.is_buyer AND o.trade_id = p.first_id
                 AND o.time_ms >= $2 AND o.time_ms < $3
             JOIN trades c ON c.symbol = $1 AND c.is_buyer AND c.trade_id = p.last_id
                 AND c.time_ms >= $2 AND c.time_ms < $3
             ORDER BY p.b"
        );
        // One snapshot for the rows and the progress.
        let tx = self
            .client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(engine)?;
        let mut progress = Vec::with_capacity(shards.len());
        for &shard in shards {
            progress.push((shard, stored_progress(&tx, shard, false).await?));
        }
        let rows = tx
            .query(
                &sql,
                &[&q.symbol, &bound(Some(q.from_ms), 0), &bound(Some(q.to_ms), 0), &opens],
            )
            .await
            .map_err(engine)?;
        tx.commit().await.map_err(engine)?;
        let candles = rows
            .iter()
            .map(|row| {
                let bucket: i32 = row.get(0);
                let open_time_ms = usize::try_from(bucket - 1)
                    .ok()
                    .and_then(|index| opens.get(index))
                    .ok_or_else(|| StoreError::Corrupt(format!("candle bucket {bucket}")))?;
                let open_time_ms = unsigned(*open_time_ms, "open time")?;
                Ok(Candle {
                    open_time_ms,
                    first_trade_id: unsigned(row.get(1), "trade id")?,
                    last_trade_id: unsigned(row.get(2), "trade id")?,
                    open: Price(row.get(3)),
                    high: Price(row.get(4)),
                    low: Price(row.get(5)),
                    close: Price(row.get(6)),
                    volume: Qty(row.get(7)),
                    quote_volume: Amount(row.get(8)),
                    trade_count: unsigned(row.get(9), "trade count")?,
                    taker_buy_base_volume: Qty(row.get(10)),
                    taker_buy_quote_volume: Amount(row.get(11)),
                    close_time_ms: q.interval.close_time_ms(open_time_ms),
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(CandleParts { candles, progress })
    }

    async fn first_trade_ms(&mut self, symbol: &str) -> Result<Option<u64>, StoreError> {
        // The primary key leads with (symbol, trade_id): the first entry
        // of each partition's index.
        let row = self
            .client
            .query_opt(
                "SELECT time_ms FROM trades WHERE symbol = $1 AND is_buyer ORDER BY trade_id LIMIT 1",
                &[&symbol],
            )
            .await
            .map_err(engine)?;
        row.map(|row| unsigned(row.get(0), "time")).transpose()
    }
}

/// Candles one query may span at most (the API asks for chunks of
/// `api::klines::CHUNK_CANDLES`).
const CANDLES_PER_QUERY_MAX: u64 = 10_000;

/// The replica to read from: the first, from `next` on and wrapping, whose
/// replay position is at least `required`.
pub fn pick_replica(next: usize, positions: &[Option<u64>], required: u64) -> Option<usize> {
    let n = positions.len();
    (0..n)
        .map(|i| (next + i) % n)
        .find(|&i| positions[i].is_some_and(|p| p >= required))
}

#[cfg(test)]
mod tests {
    use super::{numeric_units, pick_replica, with_search_path};

    #[test]
    fn a_search_path_joins_either_form_of_url() -> Result<(), String> {
        let options = |url: &str| -> Result<Option<String>, String> {
            let config: tokio_postgres::Config = url.parse().map_err(|e| format!("{url}: {e}"))?;
            Ok(config.get_options().map(str::to_string))
        };
        let want = Some("-c search_path=tradsys_b".to_string());
        for url in [
            "postgresql://u@127.0.0.1:5/db",
            "postgresql://u@127.0.0.1:5/db?connect_timeout=3",
            "host=127.0.0.1 port=5 user=u dbname=db",
        ] {
            assert_eq!(options(&with_search_path(url, "tradsys_b")?)?, want, "{url}");
        }
        assert_eq!(
            with_search_path("postgresql://u@127.0.0.1:5/db?options=-c%20x%3D1", "tradsys_b"),
            Err("sets options; an instance of a cluster sets its own search path".to_string())
        );
        Ok(())
    }

    /// NUMERIC binary forms as PostgreSQL sends them, to units.
    #[test]
    fn numeric_decodes_to_exact_units() {
        let form = |digits: &[i16], weight: i16, sign: u16, scale: i16| {
            let mut raw = Vec::new();
            for word in [digits.len() as i16, weight, sign as i16, scale] {
                raw.extend_from_slice(&word.to_be_bytes());
            }
            for d in digits {
                raw.extend_from_slice(&d.to_be_bytes());
            }
            raw
        };
        type Case<'a> = (&'a [i16], i16, u16, Option<i64>);
        let table: &[Case] = &[
            (&[], 0, 0, Some(0)),                              // 0
            (&[3, 0, 5000, 1], 1, 0, Some(3_000_050_000_001)), // 30000.50000001
            (&[1], -1, 0x4000, Some(-100_000_000 / 10_000)),   // -0.0001
            (&[1], -2, 0, Some(1)),                            // 0.00000001
            (&[1], -3, 0, None),                               // 1e-12: finer than a unit
            (&[9223], 4, 0, None),                             // 9223e16: does not fit
            (&[], 0, 0xC000, None),                            // NaN
        ];
        for &(digits, weight, sign, expected) in table {
            assert_eq!(
                numeric_units(&form(digits, weight, sign, 8)),
                expected,
                "{digits:?} {weight} {sign:#x}"
            );
        }
    }

    #[test]
    fn replicas_are_picked_round_robin_among_those_far_enough() {
        type Case<'a> = (usize, &'a [Option<u64>], u64, Option<usize>);
        let table: &[Case] = &[
            (0, &[Some(10), Some(10)], 5, Some(0)),
            (1, &[Some(10), Some(10)], 5, Some(1)),
            (1, &[Some(10), Some(4)], 5, Some(0)),
            (0, &[Some(4), None], 5, None),
            (0, &[], 5, None),
            (2, &[Some(5), Some(9), Some(9)], 9, Some(2)),
            (0, &[Some(5), Some(9), Some(9)], 9, Some(1)),
        ];
        for &(next, positions, required, expected) in table {
            assert_eq!(
                pick_replica(next, positions, required),
                expected,
                "{next} {positions:?} {required}"
            );
        }
    }
}
