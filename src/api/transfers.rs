//! A user's deposit and withdrawal history (`/sapi/v1/capital/deposit/hisrec`,
//! `/sapi/v1/capital/withdraw/history`), read from the ledger the history
//! store keeps, on the user's shard.
//!
//! Every transfer here is an admin API deposit or withdrawal: booked at
//! once, final, off any blockchain. Its fields say so the way Binance says
//! it of its own off-chain transfers: `transferType` 1, `txId`
//! `Internal transfer <id>`, the coins list's one network
//! (`wallet::NETWORK`), status success (deposit 1, withdrawal 6). The
//! ledger keeps the amount, the asset, the time and the journal position
//! (the id) of a transfer and nothing else: no address, no fee (none is
//! charged), no client id, so those fields are empty or zero.
//!
//! Binance's filters apply: `coin`, `status`, `startTime`/`endTime` (by
//! default the last 90 days; a longer span is -1127), `offset`, `limit`
//! (default and maximum 1000), deposits' `txId`, withdrawals' `idList` and
//! `withdrawOrderId` (whose span is 7 days; no transfer here has one).
//! Lists are newest first. Memory holds no transfer: without the store
//! there is no history to read (-1020), and while it does not answer, -1001.

use crate::api::host::Host;
use crate::api::params::{limit_param, malformed, u64_param};
use crate::api::wallet::NETWORK;
use crate::binance;
use crate::http::{HttpError, Params};
use crate::json::JsonWriter;
use crate::store::rows::LedgerCause;
use crate::store::{StoreError, TransferId, TransferRow, TransfersQuery, TRANSFER_QUERY_ROWS_MAX};
use tradsys_engine::order::UserId;

/// Rows a list returns by default and at most (Binance's figures).
const LIMIT_DEFAULT: usize = 1000;
const LIMIT_MAX: usize = 1000;
/// The largest `offset`: Binance names none; this bounds the rows one
/// request reads from the store.
const OFFSET_MAX: usize = 10_000;
const _: () = assert!(OFFSET_MAX + LIMIT_MAX <= TRANSFER_QUERY_ROWS_MAX);
/// The longest span between `startTime` and `endTime`, and the default
/// window back from now (Binance's 90 days; 7 with `withdrawOrderId`).
const SPAN_MAX_MS: u64 = 90 * DAY_MS;
const SPAN_WITH_ORDER_ID_MAX_MS: u64 = 7 * DAY_MS;
const DAY_MS: u64 = 86_400_000;
/// Ids one `idList` may name (Binance's figure).
const ID_LIST_MAX: usize = 50;
/// How Binance's `txId` names an off-chain transfer.
const TX_ID_PREFIX: &str = "Internal transfer ";
/// Binance's statuses of a credited deposit and a completed withdrawal.
const DEPOSIT_SUCCESS: i64 = 1;
const WITHDRAWAL_COMPLETED: i64 = 6;

/// -1001 while the store does not answer.
const MSG_STORE_UNAVAILABLE: &str =
    "History store unavailable: deposits and withdrawals cannot be read now; order entry and balances work. Please try again.";
/// -1020 without a store.
const MSG_STORE_OFF: &str = "This operation is not supported: deposit and withdrawal history is read from the history store, which is off on this server (history = off).";

/// What one request asks for, checked.
struct Request {
    query: TransfersQuery,
    offset: usize,
    limit: usize,
    /// `includeSource=true`: deposits carry `sourceAddress`.
    with_source: bool,
    /// A filter no transfer here passes (another status, a
    /// `withdrawOrderId`): the answer is `[]` without reading the store.
    none_match: bool,
}

/// GET /sapi/v1/capital/deposit/hisrec.
pub(crate) async fn deposits(
    shard: &impl Host,
    params: &Params<'_>,
    user: UserId,
    now_ms: u64,
) -> Result<Vec<u8>, HttpError> {
    let request = deposit_request(params, user, now_ms)?;
    let rows = read(shard, &request).await?;
    let mut w = JsonWriter::with_capacity(400 * rows.len() + 2);
    w.begin_array();
    for row in rows {
        write_deposit(&mut w, row, request.with_source);
    }
    w.end_array();
    Ok(w.into_bytes())
}

/// GET /sapi/v1/capital/withdraw/history.
pub(crate) async fn withdrawals(
    shard: &impl Host,
    params: &Params<'_>,
    user: UserId,
    now_ms: u64,
) -> Result<Vec<u8>, HttpError> {
    let request = withdraw_request(params, user, now_ms)?;
    let rows = read(shard, &request).await?;
    let mut w = JsonWriter::with_capacity(400 * rows.len() + 2);
    w.begin_array();
    for row in rows {
        write_withdrawal(&mut w, row);
    }
    w.end_array();
    Ok(w.into_bytes())
}

/// What one list takes that the other does not.
struct Kind {
    cause: LedgerCause,
    /// The status every transfer of this kind has.
    status: i64,
    /// The longest window.
    span_ms: u64,
    /// Only these transfers (`txId`, `idList`).
    ids: Option<Vec<TransferId>>,
    with_source: bool,
    /// A filter no transfer here passes (`withdrawOrderId`).
    none_match: bool,
}

fn deposit_request(params: &Params<'_>, user: UserId, now_ms: u64) -> Result<Request, HttpError> {
    // A txId that is not one of ours names no transfer: an empty list.
    let ids = params.get("txId").filter(|t| !t.is_empty()).map(|tx_id| {
        let id = tx_id.strip_prefix(TX_ID_PREFIX).and_then(TransferId::parse);
        id.into_iter().collect()
    });
    let with_source = match params.get("includeSource") {
        None | Some("") | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(malformed("includeSource")),
    };
    let kind = Kind {
        cause: LedgerCause::Deposit,
        status: DEPOSIT_SUCCESS,
        span_ms: SPAN_MAX_MS,
        ids,
        with_source,
        none_match: false,
    };
    request(params, user, now_ms, kind)
}

fn withdraw_request(params: &Params<'_>, user: UserId, now_ms: u64) -> Result<Request, HttpError> {
    let order_id = params.get("withdrawOrderId").filter(|id| !id.is_empty());
    let ids = match params.get("idList").filter(|list| !list.is_empty()) {
        Some(list) => Some(id_list(list)?),
        None => None,
    };
    let kind = Kind {
        cause: LedgerCause::Withdrawal,
        status: WITHDRAWAL_COMPLETED,
        span_ms: match order_id {
            Some(_) => SPAN_WITH_ORDER_ID_MAX_MS,
            None => SPAN_MAX_MS,
        },
        ids,
        with_source: false,
        none_match: order_id.is_some(),
    };
    request(params, user, now_ms, kind)
}

/// The request with what both lists take: the window, `coin`, `status`,
/// `offset` and `limit`.
fn request(params: &Params<'_>, user: UserId, now_ms: u64, kind: Kind) -> Result<Request, HttpError> {
    let (start_ms, end_ms) = window(params, now_ms, kind.span_ms)?;
    let status = status_param(params)?;
    let offset = match u64_param(params, "offset")? {
        None => 0,
        Some(n) if n <= OFFSET_MAX as u64 => n as usize,
        Some(_) => {
            return Err(HttpError::new(
                400,
                binance::ILLEGAL_CHARS,
                format!("Illegal characters found in parameter 'offset'; legal range is '0 to {OFFSET_MAX}'."),
            ))
        }
    };
    let limit = limit_param(params, LIMIT_DEFAULT, LIMIT_MAX)?;
    let none_match = kind.none_match
        || start_ms > end_ms
        || status.is_some_and(|s| s != kind.status)
        || kind.ids.as_ref().is_some_and(Vec::is_empty);
    Ok(Request {
        query: TransfersQuery {
            user,
            cause: kind.cause,
            asset: params.get("coin").filter(|c| !c.is_empty()).map(str::to_string),
            start_ms,
            end_ms,
            ids: kind.ids,
            limit: offset + limit,
        },
        offset,
        limit,
        with_source: kind.with_source,
        none_match,
    })
}

/// `startTime` and `endTime`, by default the `span_ms` up to now; a span
/// longer than `span_ms` is -1127.
fn window(params: &Params<'_>, now_ms: u64, span_ms: u64) -> Result<(u64, u64), HttpError> {
    let start_ms = u64_param(params, "startTime")?.unwrap_or(now_ms.saturating_sub(span_ms));
    let end_ms = u64_param(params, "endTime")?.unwrap_or(now_ms);
    if end_ms.saturating_sub(start_ms) > span_ms {
        return Err(HttpError::new(
            400,
            binance::MORE_THAN_XX_HOURS,
            format!("More than {} hours between startTime and endTime.", span_ms / 3_600_000),
        ));
    }
    Ok((start_ms, end_ms))
}

fn status_param(params: &Params<'_>) -> Result<Option<i64>, HttpError> {
    match params.get("status") {
        None | Some("") => Ok(None),
        Some(text) => text.parse().map(Some).map_err(|_| malformed("status")),
    }
}

/// The ids of `idList`, comma-separated; text that is no id here names
/// no transfer.
fn id_list(list: &str) -> Result<Vec<TransferId>, HttpError> {
    let entries: Vec<&str> = list.split(',').map(str::trim).collect();
    if entries.len() > ID_LIST_MAX {
        return Err(HttpError::new(
            400,
            binance::ILLEGAL_CHARS,
            format!("Illegal characters found in parameter 'idList'; legal range is '1 to {ID_LIST_MAX} ids'."),
        ));
    }
    Ok(entries.into_iter().filter_map(TransferId::parse).collect())
}

/// The page the request asks for, from the store and the rows not yet
/// written.
async fn read(shard: &impl Host, request: &Request) -> Result<Vec<TransferRow>, HttpError> {
    let Some(store) = shard.history() else {
        return Err(HttpError::new(400, binance::UNSUPPORTED_OPERATION, MSG_STORE_OFF));
    };
    if request.none_match {
        return Ok(Vec::new());
    }
    let rows = store
        .transfers_with_backlog(&request.query)
        .await
        .map_err(store_error)?;
    Ok(rows.into_iter().skip(request.offset).take(request.limit).collect())
}

fn store_error(e: StoreError) -> HttpError {
    match e {
        StoreError::Corrupt(problem) => HttpError::new(500, binance::DISCONNECTED, format!("History store: {problem}")),
        _ => HttpError::new(503, binance::DISCONNECTED, MSG_STORE_UNAVAILABLE),
    }
}

fn write_deposit(w: &mut JsonWriter, row: TransferRow, with_source: bool) {
    let id = row.id.to_string();
    w.begin_object()
        .field_str("id", &id)
        .field_decimal("amount", row.amount);
    w.field_str("coin", &row.asset)
        .field_str("network", NETWORK)
        .field_int("status", DEPOSIT_SUCCESS);
    w.field_str("address", "").field_str("addressTag", "");
    w.field_str("txId", &format!("{TX_ID_PREFIX}{id}"));
    w.field_uint("insertTime", row.time_ms)
        .field_uint("completeTime", row.time_ms);
    w.field_int("transferType", 1).field_str("confirmTimes", "0/0");
    w.field_int("unlockConfirm", 0)
        .field_int("walletType", 0)
        .field_int("travelRuleStatus", 0);
    if with_source {
        w.field_str("sourceAddress", "");
    }
    w.end_object();
}

fn write_withdrawal(w: &mut JsonWriter, row: TransferRow) {
    let id = row.id.to_string();
    let time = utc_datetime(row.time_ms);
    w.begin_object()
        .field_str("id", &id)
        .field_decimal("amount", row.amount);
    w.field_decimal("transactionFee", 0)
        .field_str("coin", &row.asset)
        .field_int("status", WITHDRAWAL_COMPLETED);
    w.field_str("address", "")
        .field_str("txId", &format!("{TX_ID_PREFIX}{id}"));
    w.field_str("applyTime", &time)
        .field_str("network", NETWORK)
        .field_int("transferType", 1);
    w.field_str("info", "")
        .field_int("confirmNo", 0)
        .field_int("walletType", 0);
    w.field_str("txKey", "").field_str("completeTime", &time).end_object();
}

/// `time_ms` as Binance writes withdrawal times: `YYYY-MM-DD HH:MM:SS`, UTC.
fn utc_datetime(time_ms: u64) -> String {
    let (year, month, day) = crate::marketdata::civil_from_days(time_ms / DAY_MS);
    let second_of_day = time_ms % DAY_MS / 1000;
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn withdrawal_times_are_utc_as_binance_writes_them() {
        let table = [
            (0, "1970-01-01 00:00:00"),
            (1_570_878_722_999, "2019-10-12 11:12:02"),
            (1_709_164_800_000, "2024-02-29 00:00:00"),
            (4_102_444_799_000, "2099-12-31 23:59:59"),
        ];
        for (time_ms, expected) in table {
            assert_eq!(utc_datetime(time_ms), expected, "{time_ms}");
        }
    }

    /// A query, the span it may have, and the window or the error.
    type WindowCase<'a> = (&'a [u8], u64, Result<(u64, u64), (i32, &'a str)>);

    #[test]
    fn windows_default_to_the_span_before_now_and_refuse_longer_ones() {
        const NOW: u64 = 200 * DAY_MS;
        let table: &[WindowCase] = &[
            (b"", SPAN_MAX_MS, Ok((110 * DAY_MS, NOW))),
            (
                b"startTime=5",
                SPAN_MAX_MS,
                Err((-1127, "More than 2160 hours between startTime and endTime.")),
            ),
            (b"startTime=5&endTime=7776000005", SPAN_MAX_MS, Ok((5, 7_776_000_005))),
            (
                b"startTime=5&endTime=7776000006",
                SPAN_MAX_MS,
                Err((-1127, "More than 2160 hours between startTime and endTime.")),
            ),
            (b"endTime=1000", SPAN_MAX_MS, Ok((110 * DAY_MS, 1000))),
            (b"startTime=9&endTime=3", SPAN_MAX_MS, Ok((9, 3))),
            (b"", SPAN_WITH_ORDER_ID_MAX_MS, Ok((193 * DAY_MS, NOW))),
            (
                b"startTime=0&endTime=604800001",
                SPAN_WITH_ORDER_ID_MAX_MS,
                Err((-1127, "More than 168 hours between startTime and endTime.")),
            ),
            (
                b"startTime=x",
                SPAN_MAX_MS,
                Err((-1100, "Illegal characters found in parameter 'startTime'.")),
            ),
        ];
        for (query, span_ms, expected) in table {
            let params = Params::parse(query, None, 16).expect("parameters");
            let got = window(&params, NOW, *span_ms).map_err(|e| (e.code, e.msg.to_string()));
            let expected = expected.map_err(|(code, msg)| (code, msg.to_string()));
            assert_eq!(got, expected, "{}", String::from_utf8_lossy(query));
        }
    }

    #[test]
    fn id_lists_name_at_most_fifty_transfers() {
        let id = |lsn| TransferId {
            shard: 1,
            generation: 2,
            lsn,
        };
        assert_eq!(id_list("1-2-3, 1-2-4,nonsense").unwrap(), vec![id(3), id(4)]);
        let fifty = vec!["1-2-3"; 50].join(",");
        assert_eq!(id_list(&fifty).unwrap().len(), 50);
        let error = id_list(&format!("{fifty},1-2-3")).unwrap_err();
        assert_eq!(
            (error.code, error.msg.as_str()),
            (
                -1100,
                "Illegal characters found in parameter 'idList'; legal range is '1 to 50 ids'."
            )
        );
    }
}
