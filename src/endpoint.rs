//! The REST endpoints tradsys serves, as Binance names them: one per method
//! and path, with the security type that decides how a request is
//! authenticated. A vocabulary only: weights are in `api::weights`, the
//! handlers in `api`.

use crate::auth::Scope;
use crate::http::Method;

/// Binance's endpoint security types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Security {
    None,
    Trade,
    UserData,
    UserStream,
}

impl Security {
    /// The key scope the endpoint needs, if it needs a key.
    pub(crate) fn scope(self) -> Option<Scope> {
        match self {
            Security::None => None,
            Security::Trade => Some(Scope::Trade),
            Security::UserData => Some(Scope::Read),
            Security::UserStream => Some(Scope::UserStream),
        }
    }

    /// TRADE and USER_DATA requests carry `timestamp` and `signature`.
    pub(crate) fn signed(self) -> bool {
        matches!(self, Security::Trade | Security::UserData)
    }
}

/// The REST endpoints tradsys serves, one per method and path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Endpoint {
    Ping,
    Time,
    ExchangeInfo,
    Depth,
    Trades,
    HistoricalTrades,
    AggTrades,
    Klines,
    UiKlines,
    AvgPrice,
    Ticker24hr,
    TickerPrice,
    TickerBookTicker,
    TickerRolling,
    TickerTradingDay,
    OrderNew,
    OrderQuery,
    OrderCancel,
    OrderTest,
    OrderCancelReplace,
    OrderAmend,
    OrderAmendments,
    /// tradsys's dead-man's switch, in Binance's futures form.
    CountdownCancelAll,
    /// tradsys's market maker protection, in Binance's options form.
    MmpSet,
    MmpQuery,
    MmpReset,
    MmpDelete,
    OpenOrders,
    OpenOrdersCancel,
    AllOrders,
    OrderListOco,
    OrderListOto,
    OrderListOtoco,
    /// The deprecated `POST /api/v3/order/oco`, which clients still send.
    OrderOco,
    OrderListCancel,
    OrderListQuery,
    AllOrderList,
    OpenOrderList,
    Account,
    MyTrades,
    RateLimitOrder,
    UserDataStreamStart,
    UserDataStreamKeepalive,
    UserDataStreamClose,
    // The wallet: what ccxt's status, currencies, fees and transfer
    // history calls read (see `api::wallet` and `api::transfers`), and the
    // wallet operations tradsys refuses.
    SystemStatus,
    CapitalConfig,
    TradeFee,
    AccountCommission,
    DepositHistory,
    WithdrawHistory,
    DepositAddress,
    WithdrawApply,
    // tradsys's own, outside Binance's paths: trade history exports run
    // as background jobs (see `api::jobs`).
    ExportCreate,
    ExportStatus,
    ExportDownload,
}

impl Endpoint {
    pub(crate) const ALL: [Endpoint; 55] = [
        Endpoint::Ping,
        Endpoint::Time,
        Endpoint::ExchangeInfo,
        Endpoint::Depth,
        Endpoint::Trades,
        Endpoint::HistoricalTrades,
        Endpoint::AggTrades,
        Endpoint::Klines,
        Endpoint::UiKlines,
        Endpoint::AvgPrice,
        Endpoint::Ticker24hr,
        Endpoint::TickerPrice,
        Endpoint::TickerBookTicker,
        Endpoint::TickerRolling,
        Endpoint::TickerTradingDay,
        Endpoint::OrderNew,
        Endpoint::OrderQuery,
        Endpoint::OrderCancel,
        Endpoint::OrderTest,
        Endpoint::OrderCancelReplace,
        Endpoint::OrderAmend,
        Endpoint::OrderAmendments,
        Endpoint::CountdownCancelAll,
        Endpoint::MmpSet,
        Endpoint::MmpQuery,
        Endpoint::MmpReset,
        Endpoint::MmpDelete,
        Endpoint::OpenOrders,
        Endpoint::OpenOrdersCancel,
        Endpoint::AllOrders,
        Endpoint::OrderListOco,
        Endpoint::OrderListOto,
        Endpoint::OrderListOtoco,
        Endpoint::OrderOco,
        Endpoint::OrderListCancel,
        Endpoint::OrderListQuery,
        Endpoint::AllOrderList,
        Endpoint::OpenOrderList,
        Endpoint::Account,
        Endpoint::MyTrades,
        Endpoint::RateLimitOrder,
        Endpoint::UserDataStreamStart,
        Endpoint::UserDataStreamKeepalive,
        Endpoint::UserDataStreamClose,
        Endpoint::SystemStatus,
        Endpoint::CapitalConfig,
        Endpoint::TradeFee,
        Endpoint::AccountCommission,
        Endpoint::DepositHistory,
        Endpoint::WithdrawHistory,
        Endpoint::DepositAddress,
        Endpoint::WithdrawApply,
        Endpoint::ExportCreate,
        Endpoint::ExportStatus,
        Endpoint::ExportDownload,
    ];

    /// Whether the endpoint may change state (journal records): every one
    /// that is not a GET.
    pub(crate) fn changes_state(self) -> bool {
        self.route().0 != Method::Get
    }

    /// The method and path that name this endpoint.
    pub(crate) fn route(self) -> (Method, &'static str) {
        use Endpoint::*;
        use Method::{Delete, Get, Post, Put};
        match self {
            Ping => (Get, "/api/v3/ping"),
            Time => (Get, "/api/v3/time"),
            ExchangeInfo => (Get, "/api/v3/exchangeInfo"),
            Depth => (Get, "/api/v3/depth"),
            Trades => (Get, "/api/v3/trades"),
            HistoricalTrades => (Get, "/api/v3/historicalTrades"),
            AggTrades => (Get, "/api/v3/aggTrades"),
            Klines => (Get, "/api/v3/klines"),
            UiKlines => (Get, "/api/v3/uiKlines"),
            AvgPrice => (Get, "/api/v3/avgPrice"),
            Ticker24hr => (Get, "/api/v3/ticker/24hr"),
            TickerPrice => (Get, "/api/v3/ticker/price"),
            TickerBookTicker => (Get, "/api/v3/ticker/bookTicker"),
            TickerRolling => (Get, "/api/v3/ticker"),
            TickerTradingDay => (Get, "/api/v3/ticker/tradingDay"),
            OrderNew => (Post, "/api/v3/order"),
            OrderQuery => (Get, "/api/v3/order"),
            OrderCancel => (Delete, "/api/v3/order"),
            OrderTest => (Post, "/api/v3/order/test"),
            OrderCancelReplace => (Post, "/api/v3/order/cancelReplace"),
            OrderAmend => (Put, "/api/v3/order/amend/keepPriority"),
            OrderAmendments => (Get, "/api/v3/order/amendments"),
            CountdownCancelAll => (Post, "/api/v3/countdownCancelAll"),
            MmpSet => (Post, "/api/v3/mmpSet"),
            MmpQuery => (Get, "/api/v3/mmp"),
            MmpReset => (Post, "/api/v3/mmpReset"),
            MmpDelete => (Delete, "/api/v3/mmp"),
            OpenOrders => (Get, "/api/v3/openOrders"),
            OpenOrdersCancel => (Delete, "/api/v3/openOrders"),
            AllOrders => (Get, "/api/v3/allOrders"),
            OrderListOco => (Post, "/api/v3/orderList/oco"),
            OrderListOto => (Post, "/api/v3/orderList/oto"),
            OrderListOtoco => (Post, "/api/v3/orderList/otoco"),
            OrderOco => (Post, "/api/v3/order/oco"),
            OrderListCancel => (Delete, "/api/v3/orderList"),
            OrderListQuery => (Get, "/api/v3/orderList"),
            AllOrderList => (Get, "/api/v3/allOrderList"),
            OpenOrderList => (Get, "/api/v3/openOrderList"),
            Account => (Get, "/api/v3/account"),
            MyTrades => (Get, "/api/v3/myTrades"),
            RateLimitOrder => (Get, "/api/v3/rateLimit/order"),
            UserDataStreamStart => (Post, "/api/v3/userDataStream"),
            UserDataStreamKeepalive => (Put, "/api/v3/userDataStream"),
            UserDataStreamClose => (Delete, "/api/v3/userDataStream"),
            SystemStatus => (Get, "/sapi/v1/system/status"),
            CapitalConfig => (Get, "/sapi/v1/capital/config/getall"),
            TradeFee => (Get, "/sapi/v1/asset/tradeFee"),
            AccountCommission => (Get, "/api/v3/account/commission"),
            DepositHistory => (Get, "/sapi/v1/capital/deposit/hisrec"),
            WithdrawHistory => (Get, "/sapi/v1/capital/withdraw/history"),
            DepositAddress => (Get, "/sapi/v1/capital/deposit/address"),
            WithdrawApply => (Post, "/sapi/v1/capital/withdraw/apply"),
            ExportCreate => (Post, "/tradsys/v1/export"),
            ExportStatus => (Get, "/tradsys/v1/export"),
            ExportDownload => (Get, "/tradsys/v1/export/download"),
        }
    }

    /// The endpoint for a request; HEAD finds the GET endpoint. `None` for
    /// an unknown path or a method the path does not serve.
    pub(crate) fn from_request(method: Method, path: &[u8]) -> Option<Endpoint> {
        let method = if method == Method::Head { Method::Get } else { method };
        Endpoint::ALL
            .into_iter()
            .find(|e| e.route() == (method, bytes_as_str(path)))
    }

    pub(crate) fn security(self) -> Security {
        use Endpoint::*;
        match self {
            OrderNew | OrderCancel | OrderTest | OrderCancelReplace | OrderAmend | OpenOrdersCancel
            | CountdownCancelAll | MmpSet | MmpReset | MmpDelete | OrderListOco | OrderListOto | OrderListOtoco
            | OrderOco | OrderListCancel => Security::Trade,
            OrderQuery | OrderAmendments | OpenOrders | AllOrders | Account | MyTrades | RateLimitOrder | MmpQuery
            | OrderListQuery | AllOrderList | OpenOrderList => Security::UserData,
            UserDataStreamStart | UserDataStreamKeepalive | UserDataStreamClose => Security::UserStream,
            CapitalConfig | TradeFee | AccountCommission | DepositHistory | WithdrawHistory | DepositAddress
            | WithdrawApply => Security::UserData,
            ExportCreate | ExportStatus | ExportDownload => Security::UserData,
            _ => Security::None,
        }
    }

    /// Whether a request counts against the unfilled ORDERS limits (those
    /// that place an order; a test order places none).
    pub(crate) fn is_order(self) -> bool {
        matches!(
            self,
            Endpoint::OrderNew
                | Endpoint::OrderCancelReplace
                | Endpoint::OrderListOco
                | Endpoint::OrderListOto
                | Endpoint::OrderListOtoco
                | Endpoint::OrderOco
        )
    }
}

fn bytes_as_str(path: &[u8]) -> &str {
    std::str::from_utf8(path).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_requests_to_endpoints() {
        for endpoint in Endpoint::ALL {
            let (method, path) = endpoint.route();
            assert_eq!(Endpoint::from_request(method, path.as_bytes()), Some(endpoint));
        }
        let table: &[(Method, &str, Option<Endpoint>)] = &[
            (Method::Head, "/api/v3/depth", Some(Endpoint::Depth)),
            (Method::Put, "/api/v3/order", None),
            (Method::Get, "/api/v3/order/test", None),
            (Method::Get, "/api/v3/nope", None),
            (Method::Get, "/API/V3/PING", None),
            (Method::Head, "/sapi/v1/system/status", Some(Endpoint::SystemStatus)),
            (Method::Get, "/sapi/v1/capital/withdraw/apply", None),
            (Method::Post, "/sapi/v1/capital/deposit/hisrec", None),
            (Method::Get, "/sapi/v2/capital/config/getall", None),
        ];
        for (method, path, expected) in table {
            assert_eq!(
                Endpoint::from_request(*method, path.as_bytes()),
                *expected,
                "{method:?} {path}"
            );
        }
    }

    #[test]
    fn endpoint_security_and_order_counting() {
        use Endpoint::*;
        let table: &[(Endpoint, Option<Scope>, bool, bool)] = &[
            (Ping, None, false, false),
            (Depth, None, false, false),
            (OrderNew, Some(Scope::Trade), true, true),
            (OrderTest, Some(Scope::Trade), true, false),
            (OrderCancelReplace, Some(Scope::Trade), true, true),
            (OrderCancel, Some(Scope::Trade), true, false),
            (OrderAmend, Some(Scope::Trade), true, false),
            (OrderAmendments, Some(Scope::Read), true, false),
            (CountdownCancelAll, Some(Scope::Trade), true, false),
            (MmpSet, Some(Scope::Trade), true, false),
            (MmpQuery, Some(Scope::Read), true, false),
            (OpenOrdersCancel, Some(Scope::Trade), true, false),
            (OrderListOco, Some(Scope::Trade), true, true),
            (OrderListOtoco, Some(Scope::Trade), true, true),
            (OrderOco, Some(Scope::Trade), true, true),
            (OrderListCancel, Some(Scope::Trade), true, false),
            (OrderListQuery, Some(Scope::Read), true, false),
            (AllOrderList, Some(Scope::Read), true, false),
            (OpenOrderList, Some(Scope::Read), true, false),
            (OrderQuery, Some(Scope::Read), true, false),
            (Account, Some(Scope::Read), true, false),
            (MyTrades, Some(Scope::Read), true, false),
            (UserDataStreamStart, Some(Scope::UserStream), false, false),
            (UserDataStreamClose, Some(Scope::UserStream), false, false),
            (SystemStatus, None, false, false),
            (CapitalConfig, Some(Scope::Read), true, false),
            (TradeFee, Some(Scope::Read), true, false),
            (AccountCommission, Some(Scope::Read), true, false),
            (DepositHistory, Some(Scope::Read), true, false),
            (WithdrawHistory, Some(Scope::Read), true, false),
            (DepositAddress, Some(Scope::Read), true, false),
            (WithdrawApply, Some(Scope::Read), true, false),
            (ExportCreate, Some(Scope::Read), true, false),
            (ExportStatus, Some(Scope::Read), true, false),
            (ExportDownload, Some(Scope::Read), true, false),
        ];
        for &(endpoint, scope, signed, is_order) in table {
            let security = endpoint.security();
            assert_eq!(
                (security.scope(), security.signed(), endpoint.is_order()),
                (scope, signed, is_order),
                "{endpoint:?}"
            );
        }
    }
}
