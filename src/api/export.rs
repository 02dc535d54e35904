//! Exports of a user's whole history on the admin API:
//! `GET /admin/v1/users/{id}/trades` and `GET /admin/v1/users/{id}/orders`
//! with `format=csv|ndjson` (NDJSON by default), `symbol`, and
//! `startTime`/`endTime` (ms, inclusive).
//!
//! The body is every matching row the history store holds, streamed in
//! chunks (`Transfer-Encoding: chunked`) a page at a time from the store's
//! cursor (`store::export`), so that an export of millions of rows holds
//! one page in memory. Rows still in the owner's backlog (not yet written)
//! are not in it: an export is everything the store has.
//!
//! Everything that can be refused is refused before the head is sent, as
//! a normal JSON error: bad parameters, an unknown user, no store, a store
//! that cannot be read (the first page is read before the head). A failure
//! after that can only cut the stream (`server::conn` closes the
//! connection without the last chunk, so that no client takes a cut export
//! for a whole one).
//!
//! Money is printed exactly with 8 decimals (`write_units`, as every JSON
//! amount); CSV has a header line, NDJSON one object per line with the
//! names myTrades and allOrders use, plus `userId`.

use crate::api::params::{bad_symbol, u64_param};
use crate::api::request::RestReply;
use crate::binance;
use crate::http::{HttpError, Params};
use crate::json::JsonWriter;
use crate::store::export::{Cursor, ExportError, ExportQuery, Page, Table};
use crate::store::rows::{OrderRow, TradeRow};
use crate::store::shard::ShardStore;
use crate::store::StoreError;
use tradsys_engine::num::write_units;
use tradsys_engine::order::OrderType;

/// The CSV header of a trades export.
pub(crate) const TRADES_CSV_HEADER: &str =
    "user,symbol,trade_id,order_id,price,qty,quote_qty,commission,commission_asset,is_buyer,is_maker,time_ms\n";
/// The CSV header of an orders export.
pub(crate) const ORDERS_CSV_HEADER: &str = "user,symbol,order_id,client_order_id,price,orig_qty,executed_qty,\
cummulative_quote_qty,status,time_in_force,type,side,time_ms,update_time_ms\n";

/// The chunk buffer's first size; a page of wide rows grows it (to about
/// half a megabyte for 1,000 orders), once per export.
const CHUNK_BYTES_INITIAL: usize = 64 * 1024;

/// How the rows are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    Csv,
    Ndjson,
}

impl Format {
    fn content_type(self) -> &'static str {
        match self {
            Format::Csv => "text/csv; charset=utf-8",
            Format::Ndjson => "application/x-ndjson",
        }
    }

    fn extension(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Ndjson => "ndjson",
        }
    }
}

/// What an export request asked for, checked.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Request {
    pub(crate) format: Format,
    pub(crate) query: ExportQuery,
}

/// An export that has started: its cursor and the rendering of its chunks.
pub(crate) struct Export<'a> {
    cursor: Cursor<'a>,
    format: Format,
    table: Table,
    user: u64,
    /// The page read before the head (see the module's comment).
    first: Option<Page>,
    header_pending: bool,
    /// The chunk being rendered: NDJSON lines, or CSV text in its buffer.
    chunk: JsonWriter,
}

/// -1102 for a parameter that is missing or not one of its values.
fn malformed_param(name: &str, expected: &str) -> HttpError {
    HttpError::new(
        400,
        binance::MANDATORY_PARAM_EMPTY_OR_MALFORMED,
        format!("Parameter '{name}' was empty or malformed; {expected}."),
    )
}

/// The user id of the path; -1102 when it is not one.
pub(crate) fn user_param(id: &str) -> Result<u64, HttpError> {
    id.parse()
        .map_err(|_| malformed_param("userId", "the path names a user by its numeric id"))
}

/// Checks an export's parameters. `known_symbol` tells whether a market
/// exists (an unknown one is -1121, as on every endpoint).
pub(crate) fn request(
    user: u64,
    params: &Params<'_>,
    known_symbol: impl Fn(&str) -> bool,
) -> Result<Request, HttpError> {
    let format = match params.get("format") {
        None | Some("ndjson") => Format::Ndjson,
        Some("csv") => Format::Csv,
        Some(_) => return Err(malformed_param("format", "use csv or ndjson")),
    };
    let symbol = match params.get("symbol") {
        None => None,
        Some(symbol) if known_symbol(symbol) => Some(symbol.to_string()),
        Some(_) => return Err(bad_symbol()),
    };
    let start_ms = u64_param(params, "startTime")?;
    let end_ms = u64_param(params, "endTime")?;
    if let (Some(start), Some(end)) = (start_ms, end_ms) {
        if start > end {
            return Err(malformed_param("startTime", "startTime must not be after endTime"));
        }
    }
    Ok(Request {
        format,
        query: ExportQuery {
            user,
            symbol,
            start_ms,
            end_ms,
        },
    })
}

/// Starts the export of `request` from `store` (the user lives on shard
/// `owner`), reading its first page; an error is the reply to send.
pub(crate) async fn open<'a>(
    store: &'a ShardStore,
    owner: u32,
    table: Table,
    request: Request,
) -> Result<Export<'a>, RestReply> {
    let user = request.query.user;
    let mut cursor = match Cursor::open(store, owner, table, request.query).await {
        Ok(cursor) => cursor,
        Err(ExportError::Busy) => {
            let error = HttpError::new(
                503,
                binance::SERVER_BUSY,
                format!("{}; try again when one has finished.", ExportError::Busy),
            );
            let mut reply = RestReply::error(&error);
            reply.headers.push("Retry-After: 1".into());
            return Err(reply);
        }
        Err(ExportError::Store(e)) => return Err(RestReply::error(&store_error(e))),
    };
    let first = cursor
        .next_page()
        .await
        .map_err(|e| RestReply::error(&store_error(e)))?;
    Ok(Export {
        cursor,
        format: request.format,
        table,
        user,
        first,
        header_pending: true,
        chunk: JsonWriter::with_capacity(CHUNK_BYTES_INITIAL),
    })
}

/// A store that cannot be read: -1001 (503) as on the history endpoints;
/// a row that cannot be read: 500.
fn store_error(e: StoreError) -> HttpError {
    match e {
        StoreError::Corrupt(problem) => HttpError::new(500, binance::DISCONNECTED, format!("History store: {problem}")),
        other => HttpError::new(
            503,
            binance::DISCONNECTED,
            format!("History store unavailable: the export cannot be read now ({other}). Please try again."),
        ),
    }
}

impl Export<'_> {
    pub(crate) fn content_type(&self) -> &'static str {
        self.format.content_type()
    }

    /// The headers besides the framing: a file name for clients that save
    /// the body (browsers, `curl -OJ`).
    pub(crate) fn headers(&self) -> [String; 1] {
        let what = match self.table {
            Table::Trades => "trades",
            Table::Orders => "orders",
        };
        [format!(
            "Content-Disposition: attachment; filename=\"user-{}-{what}.{}\"",
            self.user,
            self.format.extension()
        )]
    }

    /// The next chunk of the body (the CSV header goes with the first
    /// rows); `None` once every row has been sent. An error ends the
    /// export.
    pub(crate) async fn next_chunk(&mut self) -> Result<Option<&[u8]>, StoreError> {
        self.chunk.buf.clear();
        if std::mem::take(&mut self.header_pending) && self.format == Format::Csv {
            self.chunk.buf.push_str(match self.table {
                Table::Trades => TRADES_CSV_HEADER,
                Table::Orders => ORDERS_CSV_HEADER,
            });
        }
        let page = match self.first.take() {
            Some(page) => Some(page),
            None => self.cursor.next_page().await?,
        };
        if let Some(page) = page {
            render(&mut self.chunk, self.format, &page);
        }
        Ok((!self.chunk.buf.is_empty()).then_some(self.chunk.buf.as_bytes()))
    }
}

/// Appends the rows of `page` in `format`.
pub(crate) fn render(w: &mut JsonWriter, format: Format, page: &Page) {
    match (format, page) {
        (Format::Ndjson, Page::Trades(rows)) => rows.iter().for_each(|t| trade_json(w, t)),
        (Format::Ndjson, Page::Orders(rows)) => rows.iter().for_each(|o| order_json(w, o)),
        (Format::Csv, Page::Trades(rows)) => rows.iter().for_each(|t| trade_csv(&mut w.buf, t)),
        (Format::Csv, Page::Orders(rows)) => rows.iter().for_each(|o| order_csv(&mut w.buf, o)),
    }
}

/// One trade as myTrades writes it, with `userId`, on a line.
fn trade_json(w: &mut JsonWriter, t: &TradeRow) {
    w.begin_object()
        .field_uint("userId", t.user)
        .field_str("symbol", &t.symbol)
        .field_uint("id", t.trade_id);
    w.field_uint("orderId", t.order_id).field_int("orderListId", -1);
    w.field_decimal("price", t.price)
        .field_decimal("qty", t.qty)
        .field_decimal("quoteQty", t.quote_qty);
    w.field_decimal("commission", t.commission)
        .field_str("commissionAsset", &t.commission_asset);
    w.field_uint("time", t.time_ms)
        .field_bool("isBuyer", t.is_buyer)
        .field_bool("isMaker", t.is_maker);
    w.field_bool("isBestMatch", true).end_object().newline();
}

/// One order as allOrders writes it, with `userId`, on a line.
fn order_json(w: &mut JsonWriter, o: &OrderRow) {
    w.begin_object()
        .field_uint("userId", o.user)
        .field_str("symbol", &o.symbol)
        .field_uint("orderId", o.order_id);
    w.field_int("orderListId", crate::streams::list_id(o.order_list_id))
        .field_str("clientOrderId", &o.client_order_id);
    w.field_decimal("price", o.price)
        .field_decimal("origQty", o.orig_qty)
        .field_decimal("executedQty", o.executed_qty);
    w.field_decimal("origQuoteOrderQty", o.orig_quote_qty)
        .field_decimal("cummulativeQuoteQty", o.cummulative_quote_qty);
    w.field_str("status", &o.status)
        .field_str("timeInForce", &o.time_in_force)
        .field_str("type", &o.order_type)
        .field_str("side", &o.side);
    w.field_decimal("stopPrice", o.stop_price)
        .field_decimal("icebergQty", o.iceberg_qty);
    // As the order object: for trailing stops only.
    if o.trailing_delta > 0 {
        w.field_int("trailingDelta", o.trailing_delta);
    }
    w.field_uint("time", o.time_ms)
        .field_uint("updateTime", o.update_time_ms);
    // As allOrders: a stop order is working once triggered.
    let stop = OrderType::parse(&o.order_type).is_some_and(OrderType::is_stop);
    w.field_bool("isWorking", !stop || o.status != "NEW")
        .field_uint("workingTime", o.time_ms);
    w.field_str("selfTradePreventionMode", &o.stp_mode)
        .end_object()
        .newline();
}

fn trade_csv(out: &mut String, t: &TradeRow) {
    csv_uint(out, t.user);
    csv_text(out, &t.symbol);
    csv_uint(out, t.trade_id);
    csv_uint(out, t.order_id);
    csv_units(out, t.price);
    csv_units(out, t.qty);
    csv_units(out, t.quote_qty);
    csv_units(out, t.commission);
    csv_text(out, &t.commission_asset);
    csv_text(out, if t.is_buyer { "true" } else { "false" });
    csv_text(out, if t.is_maker { "true" } else { "false" });
    out.push_str(itoa::Buffer::new().format(t.time_ms));
    out.push('\n');
}

fn order_csv(out: &mut String, o: &OrderRow) {
    csv_uint(out, o.user);
    csv_text(out, &o.symbol);
    csv_uint(out, o.order_id);
    csv_text(out, &o.client_order_id);
    csv_units(out, o.price);
    csv_units(out, o.orig_qty);
    csv_units(out, o.executed_qty);
    csv_units(out, o.cummulative_quote_qty);
    csv_text(out, &o.status);
    csv_text(out, &o.time_in_force);
    csv_text(out, &o.order_type);
    csv_text(out, &o.side);
    csv_uint(out, o.time_ms);
    out.push_str(itoa::Buffer::new().format(o.update_time_ms));
    out.push('\n');
}

/// A number and its separator.
fn csv_uint(out: &mut String, value: u64) {
    out.push_str(itoa::Buffer::new().format(value));
    out.push(',');
}

/// Money, exact with 8 decimals, and its separator.
fn csv_units(out: &mut String, units: i64) {
    write_units(out, units, 8);
    out.push(',');
}

/// A text field and its separator, quoted (RFC 4180) only when it holds
/// a separator, a quote or a line break. Binance's names and ids never do;
/// the quoting keeps a stray one from shifting the columns.
fn csv_text(out: &mut String, text: &str) {
    if text.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&text.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(text);
    }
    out.push(',');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trade() -> TradeRow {
        TradeRow {
            user: 12,
            symbol: "BTCUSDT".into(),
            trade_id: 7,
            order_id: 40,
            price: 3_000_050_000_000,
            qty: 1_000_000,
            quote_qty: 30_000_500_000,
            commission: -1,
            commission_asset: "BTC".into(),
            is_buyer: true,
            is_maker: false,
            time_ms: 1_700_000_000_123,
        }
    }

    fn order() -> OrderRow {
        OrderRow {
            user: 12,
            symbol: "BTCUSDT".into(),
            order_id: 40,
            client_order_id: "a,\"b\"".into(),
            price: 3_000_050_000_000,
            orig_qty: 2_000_000,
            orig_quote_qty: 0,
            executed_qty: 1_000_000,
            cummulative_quote_qty: 30_000_500_000,
            status: "CANCELED".into(),
            time_in_force: "GTC".into(),
            order_type: "STOP_LOSS_LIMIT".into(),
            side: "BUY".into(),
            stop_price: 2_900_000_000_000,
            time_ms: 1_700_000_000_000,
            update_time_ms: 1_700_000_000_500,
            stp_mode: "EXPIRE_MAKER".into(),
            iceberg_qty: 500_000,
            trailing_delta: 0,
            order_list_id: 0,
        }
    }

    fn rendered(format: Format, page: &Page) -> String {
        let mut w = JsonWriter::default();
        render(&mut w, format, page);
        w.buf
    }

    #[test]
    fn csv_rows_are_exact_and_quoted_only_when_needed() {
        let trades = Page::Trades(vec![trade(), trade()]);
        let line = "12,BTCUSDT,7,40,30000.50000000,0.01000000,300.00500000,-0.00000001,BTC,true,false,1700000000123\n";
        assert_eq!(rendered(Format::Csv, &trades), line.repeat(2));
        assert_eq!(TRADES_CSV_HEADER.split(',').count(), line.split(',').count());
        let orders = Page::Orders(vec![order()]);
        assert_eq!(
            rendered(Format::Csv, &orders),
            "12,BTCUSDT,40,\"a,\"\"b\"\"\",30000.50000000,0.02000000,0.01000000,300.00500000,CANCELED,GTC,\
             STOP_LOSS_LIMIT,BUY,1700000000000,1700000000500\n"
        );
        assert_eq!(ORDERS_CSV_HEADER.split(',').count(), 14);
    }

    #[test]
    fn ndjson_rows_use_binance_names_one_per_line() {
        let text = rendered(Format::Ndjson, &Page::Trades(vec![trade(), trade()]));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(
            lines[0],
            r#"{"userId":12,"symbol":"BTCUSDT","id":7,"orderId":40,"orderListId":-1,"price":"30000.50000000","qty":"0.01000000","quoteQty":"300.00500000","commission":"-0.00000001","commissionAsset":"BTC","time":1700000000123,"isBuyer":true,"isMaker":false,"isBestMatch":true}"#
        );
        assert_eq!(lines[0], lines[1]);
        let text = rendered(Format::Ndjson, &Page::Orders(vec![order()]));
        let value: serde_json::Value = serde_json::from_str(text.trim_end()).expect("one JSON object");
        assert!(text.ends_with("}\n"));
        assert_eq!(value["clientOrderId"], "a,\"b\"");
        assert_eq!(value["origQty"], "0.02000000");
        assert_eq!(value["stopPrice"], "29000.00000000");
        assert_eq!(value["icebergQty"], "0.00500000");
        assert_eq!(value["isWorking"], true);
        assert_eq!(value["updateTime"], 1_700_000_000_500u64);
        assert_eq!(value["selfTradePreventionMode"], "EXPIRE_MAKER");
    }

    #[test]
    fn requests_are_checked_before_anything_is_sent() {
        let known = |s: &str| s == "BTCUSDT";
        let ok = |query: &[u8]| request(5, &Params::parse(query, None, 16).unwrap(), known);
        let r = ok(b"").expect("defaults");
        assert_eq!(r.format, Format::Ndjson);
        assert_eq!(
            r.query,
            ExportQuery {
                user: 5,
                symbol: None,
                start_ms: None,
                end_ms: None
            }
        );
        let r = ok(b"format=csv&symbol=BTCUSDT&startTime=5&endTime=5").expect("all given");
        assert_eq!(
            (r.format, r.query.symbol.as_deref(), r.query.start_ms, r.query.end_ms),
            (Format::Csv, Some("BTCUSDT"), Some(5), Some(5))
        );
        let code = |query: &[u8]| ok(query).map(|_| ()).unwrap_err();
        assert_eq!(code(b"format=xml").code, binance::MANDATORY_PARAM_EMPTY_OR_MALFORMED);
        assert_eq!(code(b"format=").code, binance::MANDATORY_PARAM_EMPTY_OR_MALFORMED);
        assert_eq!(code(b"symbol=NOPE").code, binance::BAD_SYMBOL);
        assert_eq!(code(b"startTime=x").code, binance::ILLEGAL_CHARS);
        assert_eq!(
            code(b"startTime=6&endTime=5").code,
            binance::MANDATORY_PARAM_EMPTY_OR_MALFORMED
        );
        assert_eq!(user_param("12").unwrap(), 12);
        assert_eq!(user_param("x").unwrap_err().status, 400);
        assert_eq!(
            user_param("-1").unwrap_err().code,
            binance::MANDATORY_PARAM_EMPTY_OR_MALFORMED
        );
    }
}
