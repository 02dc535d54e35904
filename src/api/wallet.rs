//! The wallet endpoints Binance clients call for an exchange's status, its
//! coins and a user's fees (`/sapi/v1/system/status`,
//! `/sapi/v1/capital/config/getall`, `/sapi/v1/asset/tradeFee`,
//! `/api/v3/account/commission`), and the wallet operations tradsys
//! refuses (deposit addresses, withdrawals). The signed ones run on the
//! user's shard; the status on any.
//!
//! tradsys has no blockchain: funds enter and leave only through the
//! admin API, when the operator deposits or withdraws for a user. The
//! coins list says so the Binance way, and says nothing it cannot stand
//! behind: every coin has one network, [`NETWORK`], on which a client can
//! neither deposit nor withdraw (`depositEnable` and `withdrawEnable`
//! false, with the reason in `depositDesc` and `withdrawDesc`); the
//! transfer history (`api::transfers`) names it as every transfer's
//! network. Binance's fields tradsys has no data for carry their empty or
//! zero value, never an invented one (a coin's `name` is its code,
//! `isLegalMoney` is false: the markets file knows neither).

use crate::api::host::Host;
use crate::api::params::market_param;
use crate::binance;
use crate::endpoint::Endpoint;
use crate::http::{HttpError, Params};
use crate::json::JsonWriter;
use tradsys_engine::order::{MarketId, UserId};

/// The one network of every coin: transfers by the admin API.
pub(crate) const NETWORK: &str = "ADMIN";
/// Its `name`, as Binance names a network for people.
const NETWORK_NAME: &str = "Admin API transfer (no blockchain)";
const DEPOSIT_DESC: &str =
    "Deposits are credited by the exchange operator through the admin API; there is no blockchain and no deposit address.";
const WITHDRAW_DESC: &str =
    "Withdrawals are made by the exchange operator through the admin API; POST /sapi/v1/capital/withdraw/apply is not supported.";
/// The smallest amount tradsys holds, 10⁻⁸: the step of every transfer.
const AMOUNT_UNIT: i64 = 1;
/// The largest amount tradsys can hold (`i64::MAX` units of 10⁻⁸): an
/// admin transfer has no other upper bound.
const AMOUNT_MAX: i64 = i64::MAX;

/// The system status: normal, or maintenance while the server drains
/// (it is shutting down and takes no new connections).
pub(crate) fn system_status(draining: bool) -> &'static [u8] {
    match draining {
        false => br#"{"status":0,"msg":"normal"}"#,
        true => br#"{"status":1,"msg":"system maintenance"}"#,
    }
}

/// GET /sapi/v1/capital/config/getall: every asset of the markets, with
/// the user's balance.
pub(crate) fn coins(shard: &impl Host, user: UserId) -> Result<Vec<u8>, HttpError> {
    let trading = shard.trading();
    let balances = trading.balances(user);
    let mut w = JsonWriter::with_capacity(1024 * balances.len() + 2);
    w.begin_array();
    for (asset, balance) in balances {
        let coin = trading.asset_name(asset);
        w.begin_object()
            .field_str("coin", coin)
            .field_bool("depositAllEnable", false);
        w.field_bool("withdrawAllEnable", false).field_str("name", coin);
        w.field_decimal("free", balance.free.0)
            .field_decimal("locked", balance.locked.0);
        // Nothing is frozen, on its way out, in a token sale or staked:
        // a withdrawal is done when the admin API answers.
        for key in ["freeze", "withdrawing", "ipoing", "ipoable", "storage"] {
            w.field_decimal(key, 0);
        }
        w.field_bool("isLegalMoney", false).field_bool("trading", true);
        w.key("networkList").begin_array();
        write_network(&mut w, coin);
        w.end_array().end_object();
    }
    w.end_array();
    Ok(w.into_bytes())
}

/// The one network entry of `coin`, with Binance's per-network fields.
fn write_network(w: &mut JsonWriter, coin: &str) {
    w.begin_object().field_str("network", NETWORK).field_str("coin", coin);
    w.field_decimal("withdrawIntegerMultiple", AMOUNT_UNIT)
        .field_bool("isDefault", true);
    w.field_bool("depositEnable", false).field_bool("withdrawEnable", false);
    w.field_str("depositDesc", DEPOSIT_DESC)
        .field_str("withdrawDesc", WITHDRAW_DESC);
    w.field_str("specialTips", "")
        .field_str("specialWithdrawTips", "")
        .field_str("name", NETWORK_NAME);
    w.field_bool("resetAddressStatus", false)
        .field_str("addressRegex", "")
        .field_str("memoRegex", "");
    // What an admin withdrawal takes: no fee, any amount from one unit on.
    w.field_decimal("withdrawFee", 0)
        .field_decimal("withdrawMin", AMOUNT_UNIT)
        .field_decimal("withdrawMax", AMOUNT_MAX);
    w.field_decimal("withdrawInternalMin", AMOUNT_UNIT)
        .field_decimal("depositDust", AMOUNT_UNIT);
    // Credited once journaled: no confirmations, no wait.
    w.field_int("minConfirm", 0)
        .field_int("unLockConfirm", 0)
        .field_bool("sameAddress", false);
    w.field_bool("withdrawTag", false)
        .field_int("estimatedArrivalTime", 0)
        .field_bool("busy", false);
    w.field_str("contractAddressUrl", "")
        .field_str("contractAddress", "")
        .end_object();
}

/// GET /sapi/v1/asset/tradeFee: the maker and taker rates of one market
/// (`symbol`) or of all, from the markets file.
pub(crate) fn trade_fees(shard: &impl Host, params: &Params<'_>) -> Result<Vec<u8>, HttpError> {
    let trading = shard.trading();
    let markets: Vec<MarketId> = match params.get("symbol") {
        Some(_) => vec![market_param(shard, params)?],
        None => (0..trading.specs().len()).map(|m| MarketId(m as u16)).collect(),
    };
    let mut w = JsonWriter::with_capacity(96 * markets.len() + 2);
    w.begin_array();
    for market in markets {
        let spec = trading.spec(market);
        w.begin_object().field_str("symbol", &spec.symbol);
        w.field_decimal("makerCommission", spec.maker_commission.0)
            .field_decimal("takerCommission", spec.taker_commission.0);
        w.end_object();
    }
    w.end_array();
    Ok(w.into_bytes())
}

/// GET /api/v3/account/commission: the market's rates as Binance shapes
/// them. tradsys charges the market's maker or taker rate and nothing
/// else: no buyer or seller rate, no special or tax rate, no discount.
pub(crate) fn commission(shard: &impl Host, params: &Params<'_>) -> Result<Vec<u8>, HttpError> {
    let market = market_param(shard, params)?;
    let trading = shard.trading();
    let spec = trading.spec(market);
    let mut w = JsonWriter::with_capacity(512);
    w.begin_object().field_str("symbol", &spec.symbol);
    let rates = [
        ("standardCommission", spec.maker_commission.0, spec.taker_commission.0),
        ("specialCommission", 0, 0),
        ("taxCommission", 0, 0),
    ];
    for (key, maker, taker) in rates {
        w.key(key).begin_object();
        w.field_decimal("maker", maker).field_decimal("taker", taker);
        w.field_decimal("buyer", 0).field_decimal("seller", 0).end_object();
    }
    crate::api::user::write_no_discount(&mut w);
    w.end_object();
    Ok(w.into_bytes())
}

/// The answer to a wallet operation tradsys cannot do truthfully.
pub(crate) fn refused(endpoint: Endpoint) -> HttpError {
    let why = match endpoint {
        Endpoint::DepositAddress => {
            "tradsys has no blockchain and no deposit addresses; the exchange operator credits deposits through the admin API."
        }
        _ => "withdrawals are made by the exchange operator through the admin API, not by clients.",
    };
    HttpError::new(
        400,
        binance::UNSUPPORTED_OPERATION,
        format!("This operation is not supported: {why}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_says_maintenance_while_draining() {
        assert_eq!(system_status(false), br#"{"status":0,"msg":"normal"}"#);
        assert_eq!(system_status(true), br#"{"status":1,"msg":"system maintenance"}"#);
    }
}
