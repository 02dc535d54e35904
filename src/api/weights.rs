//! Binance's REQUEST_WEIGHT of every REST endpoint, from the parameters
//! that change it.
//!
//! Binance counts its wallet (`/sapi`) endpoints against limits of their
//! own, per IP and per account; tradsys has one REQUEST_WEIGHT count per
//! IP for every endpoint, and counts each wallet endpoint's Binance weight
//! there, except withdraw history's (see `WITHDRAW_HISTORY_WEIGHT`).

use crate::api::user::DEPTH_LIMIT_DEFAULT;
use crate::endpoint::Endpoint;
use crate::http::Params;

/// `GET /sapi/v1/capital/withdraw/history`. Binance's 18000 is counted
/// against a per-second limit of 180000 of its own (ten calls a second);
/// against tradsys's one per-minute count (6000 by default) it would
/// refuse every call, so it counts as its sibling, deposit history.
const WITHDRAW_HISTORY_WEIGHT: u32 = 1;

/// The parameters a request's weight depends on, as decoded values.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct WeightParams<'a> {
    pub(crate) limit: Option<&'a str>,
    pub(crate) symbol: Option<&'a str>,
    /// The JSON array, e.g. `["BTCUSDT","BNBUSDT"]`.
    pub(crate) symbols: Option<&'a str>,
    pub(crate) order_id: Option<&'a str>,
    pub(crate) compute_commission_rates: Option<&'a str>,
}

impl<'a> WeightParams<'a> {
    pub(crate) fn from_params(params: &'a Params<'a>) -> WeightParams<'a> {
        WeightParams {
            limit: params.get("limit"),
            symbol: params.get("symbol"),
            symbols: params.get("symbols"),
            order_id: params.get("orderId"),
            compute_commission_rates: params.get("computeCommissionRates"),
        }
    }

    /// Entries in `symbols`, counted without parsing (a malformed list is
    /// rejected by the handler; here it only needs a price).
    fn symbols_count(&self) -> Option<usize> {
        let list = self.symbols?.trim().trim_start_matches('[').trim_end_matches(']');
        Some(list.split(',').filter(|s| !s.trim().is_empty()).count())
    }
}

/// The REQUEST_WEIGHT of one request, per Binance's published table.
pub(crate) fn weight(endpoint: Endpoint, params: &WeightParams) -> u32 {
    use Endpoint::*;
    match endpoint {
        Ping | Time => 1,
        ExchangeInfo => 20,
        Depth => depth_weight(params.limit),
        Trades | HistoricalTrades => 25,
        AggTrades => 4,
        Klines | UiKlines | AvgPrice => 2,
        Ticker24hr => ticker_24hr_weight(params),
        // 4 per symbol, at most 200 (Binance's rolling and trading-day
        // tickers).
        TickerRolling | TickerTradingDay => {
            let symbols = params.symbols_count().unwrap_or(1) as u32;
            symbols.saturating_mul(4).clamp(4, 200)
        }
        TickerPrice | TickerBookTicker => match params.symbol {
            Some(_) => 2,
            None => 4,
        },
        OrderNew | OrderCancel | OrderCancelReplace | OpenOrdersCancel => 1,
        OrderListOco | OrderListOto | OrderListOtoco | OrderOco | OrderListCancel => 1,
        OrderListQuery => 4,
        OpenOrderList => 6,
        AllOrderList => 20,
        CountdownCancelAll => 10,
        MmpSet | MmpQuery | MmpReset | MmpDelete => 1,
        OrderTest => match params.compute_commission_rates {
            Some("true") => 20,
            _ => 1,
        },
        OrderQuery | OrderAmend | OrderAmendments => 4,
        OpenOrders => match params.symbol {
            Some(_) => 6,
            None => 80,
        },
        AllOrders | Account => 20,
        RateLimitOrder => 40,
        MyTrades => match params.order_id {
            Some(_) => 5,
            None => 20,
        },
        UserDataStreamStart | UserDataStreamKeepalive | UserDataStreamClose => 2,
        SystemStatus | TradeFee | DepositHistory => 1,
        WithdrawHistory => WITHDRAW_HISTORY_WEIGHT,
        CapitalConfig | DepositAddress => 10,
        AccountCommission => 20,
        WithdrawApply => 900,
        // An export reads the whole history once, off the request path.
        ExportCreate => 100,
        ExportStatus => 1,
        ExportDownload => 10,
    }
}

fn depth_weight(limit: Option<&str>) -> u32 {
    let limit = limit
        .and_then(|l| l.parse::<u32>().ok())
        .unwrap_or(DEPTH_LIMIT_DEFAULT as u32);
    match limit {
        0..=100 => 5,
        101..=500 => 25,
        501..=1000 => 50,
        _ => 250,
    }
}

fn ticker_24hr_weight(params: &WeightParams) -> u32 {
    if params.symbol.is_some() {
        return 2;
    }
    match params.symbols_count() {
        Some(1..=20) => 2,
        Some(21..=100) => 40,
        _ => 80,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_weights_match_binance() {
        let none = WeightParams::default();
        let symbol = WeightParams {
            symbol: Some("BTCUSDT"),
            ..none
        };
        let lists: Vec<String> = (0..=101)
            .map(|n| format!("[{}]", vec!["\"BTCUSDT\""; n].join(",")))
            .collect();
        let with_symbols = |n: usize| WeightParams {
            symbols: Some(lists[n].as_str()),
            ..none
        };
        let limit = |l| WeightParams { limit: Some(l), ..none };
        use Endpoint::*;
        let table: &[(Endpoint, WeightParams, u32)] = &[
            (Ping, none, 1),
            (Time, none, 1),
            (ExchangeInfo, none, 20),
            (ExchangeInfo, symbol, 20),
            (Depth, none, 5),
            (Depth, limit("1"), 5),
            (Depth, limit("100"), 5),
            (Depth, limit("101"), 25),
            (Depth, limit("500"), 25),
            (Depth, limit("501"), 50),
            (Depth, limit("1000"), 50),
            (Depth, limit("1001"), 250),
            (Depth, limit("5000"), 250),
            (Depth, limit("10000"), 250),
            (Trades, none, 25),
            (HistoricalTrades, none, 25),
            (AggTrades, none, 4),
            (Klines, none, 2),
            (UiKlines, none, 2),
            (AvgPrice, symbol, 2),
            (Ticker24hr, symbol, 2),
            (Ticker24hr, none, 80),
            (Ticker24hr, with_symbols(1), 2),
            (Ticker24hr, with_symbols(20), 2),
            (Ticker24hr, with_symbols(21), 40),
            (Ticker24hr, with_symbols(100), 40),
            (Ticker24hr, with_symbols(101), 80),
            (TickerRolling, symbol, 4),
            (TickerRolling, with_symbols(3), 12),
            (TickerTradingDay, with_symbols(50), 200),
            (TickerTradingDay, with_symbols(100), 200),
            (TickerPrice, symbol, 2),
            (TickerPrice, none, 4),
            (TickerPrice, with_symbols(3), 4),
            (TickerBookTicker, symbol, 2),
            (TickerBookTicker, none, 4),
            (TickerBookTicker, with_symbols(3), 4),
            (OrderNew, symbol, 1),
            (OrderQuery, symbol, 4),
            (OrderCancel, symbol, 1),
            (OrderTest, symbol, 1),
            (
                OrderTest,
                WeightParams {
                    compute_commission_rates: Some("false"),
                    ..symbol
                },
                1,
            ),
            (
                OrderTest,
                WeightParams {
                    compute_commission_rates: Some("true"),
                    ..symbol
                },
                20,
            ),
            (OrderCancelReplace, symbol, 1),
            (OpenOrders, symbol, 6),
            (OpenOrders, none, 80),
            (OpenOrdersCancel, symbol, 1),
            (OrderListOco, symbol, 1),
            (OrderOco, symbol, 1),
            (OrderListCancel, symbol, 1),
            (OrderListQuery, none, 4),
            (OpenOrderList, none, 6),
            (AllOrderList, none, 20),
            (AllOrders, symbol, 20),
            (Account, none, 20),
            (MyTrades, symbol, 20),
            (
                MyTrades,
                WeightParams {
                    order_id: Some("12"),
                    ..symbol
                },
                5,
            ),
            (UserDataStreamStart, none, 2),
            (UserDataStreamKeepalive, none, 2),
            (UserDataStreamClose, none, 2),
            (SystemStatus, none, 1),
            (CapitalConfig, none, 10),
            (TradeFee, none, 1),
            (TradeFee, symbol, 1),
            (AccountCommission, symbol, 20),
            (DepositHistory, none, 1),
            (WithdrawHistory, none, 1),
            (DepositAddress, none, 10),
            (WithdrawApply, none, 900),
            (ExportCreate, none, 100),
            (ExportStatus, none, 1),
            (ExportDownload, none, 10),
        ];
        for (endpoint, params, expected) in table {
            assert_eq!(weight(*endpoint, params), *expected, "{endpoint:?} {params:?}");
        }
    }

    /// A weight over the per-minute limit would refuse every call of its
    /// endpoint (withdraw history's Binance weight would).
    #[test]
    fn every_endpoint_fits_the_default_weight_limit() {
        let limit = crate::limits::RateLimitConfig::default().request_weight_per_minute_max;
        for endpoint in Endpoint::ALL {
            let heaviest = WeightParams {
                limit: Some("5000"),
                ..WeightParams::default()
            };
            assert!(weight(endpoint, &heaviest) <= limit, "{endpoint:?}");
        }
    }
}
