//! Request rate limits the Binance way: REQUEST_WEIGHT per minute and
//! RAW_REQUESTS per 5 minutes counted per IP, unfilled ORDERS per 10 seconds
//! and per day counted per account; and the weight of every REST endpoint.
//!
//! Limits sit behind the object-safe [`RateLimiter`] trait so that the shard
//! can use the in-process [`LocalLimiter`] today and a Redis-backed limiter
//! shared by every instance later, unchanged. This module does no I/O and
//! reads no clock: the caller passes `now_ms`. The shard handling a request
//! calls [`RateLimiter::admit`] once for it, after routing (and, for order
//! placements, after authentication, so the account is known) and before the
//! request does any work, so that overload is shed before it costs anything.
//!
//! Windows are fixed and aligned to their interval since the Unix epoch, as
//! Binance's are: the weight count resets on the minute, the daily order
//! count at 00:00 UTC. A 429's `Retry-After` is the time left in the window.
//!
//! **Invariant:** memory is bounded. Each counter map holds at most
//! `limiter_keys_max` keys; counters of past windows are dropped when the
//! window turns, and when a map is full the counter started earliest in the
//! current window makes room. Each admit does O(1) work (amortized over the
//! window for dropping past counters).

use crate::binance;
use crate::auth::Scope;
use crate::http::{HttpError, Method, Params};
use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::IpAddr;



const MINUTE_MS: u64 = 60_000;
const TEN_SECONDS_MS: u64 = 10_000;
const DAY_MS: u64 = 86_400_000;
const FIVE_MINUTES_MS: u64 = 300_000;

/// The limits, as exchangeInfo publishes them (Binance's defaults), and how
/// many keys each counter map may hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// REQUEST_WEIGHT, per IP, per minute.
    pub request_weight_per_minute_max: u32,
    /// Unfilled ORDERS, per account, per 10 seconds.
    pub orders_per_10s_max: u32,
    /// Unfilled ORDERS, per account, per day (UTC).
    pub orders_per_day_max: u32,
    /// RAW_REQUESTS, per IP, per 5 minutes.
    pub raw_requests_per_5m_max: u32,
    /// Keys (IPs or users) each of the four counter maps may hold.
    pub limiter_keys_max: usize,
}

/// Keys per counter map by default: ~64k IPs or users active in one window.
pub const LIMITER_KEYS_MAX_DEFAULT: usize = 65_536;

impl Default for RateLimitConfig {
    fn default() -> RateLimitConfig {
        RateLimitConfig {
            request_weight_per_minute_max: 6_000,
            orders_per_10s_max: 100,
            orders_per_day_max: 200_000,
            raw_requests_per_5m_max: 61_000,
            limiter_keys_max: LIMITER_KEYS_MAX_DEFAULT,
        }
    }
}

impl RateLimitConfig {
    /// The limits as exchangeInfo renders them.
    pub fn rate_limits(&self) -> crate::api::RateLimits {
        crate::api::RateLimits {
            request_weight_per_minute_max: self.request_weight_per_minute_max,
            orders_per_10s_max: self.orders_per_10s_max,
            orders_per_day_max: self.orders_per_day_max,
            raw_requests_per_5m_max: self.raw_requests_per_5m_max,
        }
    }
}

/// Counts after an admitted request, for the response headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage {
    /// `X-MBX-USED-WEIGHT-1M`: this IP's weight in the current minute.
    pub used_weight_1m: u32,
    /// `X-MBX-ORDER-COUNT-10S`, on order placements only.
    pub order_count_10s: Option<u32>,
    /// `X-MBX-ORDER-COUNT-1D`, on order placements only.
    pub order_count_1d: Option<u32>,
}

impl Usage {
    /// The rate-limit headers, each a full `Name: value` line.
    pub fn headers(&self) -> Vec<String> {
        let mut lines = vec![format!("{}: {}", binance::HEADER_USED_WEIGHT_1M, self.used_weight_1m)];
        if let Some(count) = self.order_count_10s {
            lines.push(format!("{}: {count}", binance::HEADER_ORDER_COUNT_10S));
        }
        if let Some(count) = self.order_count_1d {
            lines.push(format!("{}: {count}", binance::HEADER_ORDER_COUNT_1D));
        }
        lines
    }
}

/// A request refused by a limit: HTTP 429 with `Retry-After`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{msg}")]
pub struct Exceeded {
    /// Seconds until the window that is full turns over (at least 1).
    pub retry_after_s: u32,
    /// -1003 for IP limits, -1015 for order limits.
    pub code: i32,
    pub msg: String,
    /// This IP's weight in the current minute, for `X-MBX-USED-WEIGHT-1M`.
    pub used_weight_1m: u32,
}

impl Exceeded {
    pub const STATUS: u16 = 429;

    /// The `Retry-After: N` header line.
    pub fn retry_after_header(&self) -> String {
        format!("Retry-After: {}", self.retry_after_s)
    }
}

impl From<Exceeded> for HttpError {
    fn from(exceeded: Exceeded) -> HttpError {
        HttpError::new(Exceeded::STATUS, exceeded.code, exceeded.msg)
    }
}

/// Admits or refuses requests against the limits. Object-safe and free of
/// any executor, so a limiter shared through Redis can stand in for the
/// local one.
pub trait RateLimiter {
    /// Counts one request of `weight` from `ip`; order placements
    /// (`is_order`) also count against `user`'s ORDERS limits.
    ///
    /// A request refused by an IP limit counts nothing. A request refused by
    /// an order limit still counts its weight, since the API did the work of
    /// reading and authenticating it, but not as an order.
    fn admit(
        &mut self,
        ip: IpAddr,
        user: Option<u64>,
        weight: u32,
        is_order: bool,
        now_ms: u64,
    ) -> Result<Usage, Exceeded>;

    /// Counts one order of `user` against the ORDERS limits only, for a
    /// server that counts request weight per IP in one place and orders per
    /// user in another (the user's shard). No IP is charged.
    fn admit_user_order(&mut self, user: u64, now_ms: u64) -> Result<Usage, Exceeded>;

    /// An order of `user` traded for the first time: Binance's unfilled
    /// order count goes down by one in every ORDERS window.
    fn order_filled(&mut self, user: u64, now_ms: u64);
}

/// Counters for one limit in the current fixed window, one per key.
struct FixedWindow<K> {
    interval_ms: u64,
    limit: u32,
    window_start_ms: u64,
    counts: HashMap<K, u32>,
    /// Keys in the order their counter started in this window; the front is
    /// evicted when the map is full. Always holds exactly the keys of `counts`.
    started: VecDeque<K>,
    keys_max: usize,
}

impl<K: Hash + Eq + Copy> FixedWindow<K> {
    fn new(interval_ms: u64, limit: u32, keys_max: usize) -> FixedWindow<K> {
        assert!(interval_ms > 0 && keys_max > 0);
        FixedWindow {
            interval_ms,
            limit,
            window_start_ms: 0,
            counts: HashMap::new(),
            started: VecDeque::new(),
            keys_max,
        }
    }

    /// Moves to the window holding `now_ms`, dropping every past counter.
    /// A clock that steps back stays in the current window rather than
    /// forgiving what was counted.
    fn roll(&mut self, now_ms: u64) {
        let start = now_ms - now_ms % self.interval_ms;
        if start > self.window_start_ms {
            self.window_start_ms = start;
            self.counts.clear();
            self.started.clear();
        }
    }

    fn used(&self, key: &K) -> u32 {
        self.counts.get(key).copied().unwrap_or(0)
    }

    fn admits(&self, key: &K, amount: u32) -> bool {
        self.used(key).saturating_add(amount) <= self.limit
    }

    fn add(&mut self, key: K, amount: u32) -> u32 {
        if !self.counts.contains_key(&key) {
            self.make_room();
            self.started.push_back(key);
        }
        let count = self.counts.entry(key).or_insert(0);
        *count = count.saturating_add(amount);
        *count
    }

    fn make_room(&mut self) {
        while self.counts.len() >= self.keys_max {
            match self.started.pop_front() {
                Some(oldest) => {
                    self.counts.remove(&oldest);
                }
                None => break,
            }
        }
    }

    fn subtract(&mut self, key: &K, amount: u32) {
        if let Some(count) = self.counts.get_mut(key) {
            *count = count.saturating_sub(amount);
        }
    }

    /// Whole seconds until this window turns over, rounded up, at least 1.
    fn retry_after_s(&self, now_ms: u64) -> u32 {
        let end_ms = self.window_start_ms + self.interval_ms;
        let left_ms = end_ms.saturating_sub(now_ms).min(self.interval_ms);
        u32::try_from(left_ms.div_ceil(1_000).max(1)).unwrap_or(u32::MAX)
    }

    fn len(&self) -> usize {
        self.counts.len()
    }
}

/// The in-process limiter: exact counts for the IPs and users this shard
/// sees. With several shards or instances each counts only its own traffic;
/// the shared limiter closes that gap.
pub struct LocalLimiter {
    weight_1m: FixedWindow<IpAddr>,
    raw_5m: FixedWindow<IpAddr>,
    orders_10s: FixedWindow<u64>,
    orders_1d: FixedWindow<u64>,
}

impl LocalLimiter {
    pub fn new(config: &RateLimitConfig) -> LocalLimiter {
        let keys_max = config.limiter_keys_max;
        LocalLimiter {
            weight_1m: FixedWindow::new(MINUTE_MS, config.request_weight_per_minute_max, keys_max),
            raw_5m: FixedWindow::new(FIVE_MINUTES_MS, config.raw_requests_per_5m_max, keys_max),
            orders_10s: FixedWindow::new(TEN_SECONDS_MS, config.orders_per_10s_max, keys_max),
            orders_1d: FixedWindow::new(DAY_MS, config.orders_per_day_max, keys_max),
        }
    }

    /// Keys held across all counter maps.
    pub fn keys(&self) -> usize {
        self.weight_1m.len() + self.raw_5m.len() + self.orders_10s.len() + self.orders_1d.len()
    }

    fn roll(&mut self, now_ms: u64) {
        self.weight_1m.roll(now_ms);
        self.raw_5m.roll(now_ms);
        self.orders_10s.roll(now_ms);
        self.orders_1d.roll(now_ms);
    }

    fn admit_ip(&mut self, ip: IpAddr, weight: u32, now_ms: u64) -> Result<u32, Exceeded> {
        let used_weight_1m = self.weight_1m.used(&ip);
        if !self.weight_1m.admits(&ip, weight) {
            let msg = format!(
                "Too much request weight used; current limit is {} request weight per 1 MINUTE. \
                 Please use WebSocket Streams for live updates to avoid polling the API.",
                self.weight_1m.limit
            );
            return Err(exceeded(
                &self.weight_1m,
                now_ms,
                binance::TOO_MANY_REQUESTS,
                msg,
                used_weight_1m,
            ));
        }
        if !self.raw_5m.admits(&ip, 1) {
            let msg = format!(
                "Too many requests; current limit is {} requests per 5 MINUTE.",
                self.raw_5m.limit
            );
            return Err(exceeded(
                &self.raw_5m,
                now_ms,
                binance::TOO_MANY_REQUESTS,
                msg,
                used_weight_1m,
            ));
        }
        self.raw_5m.add(ip, 1);
        Ok(self.weight_1m.add(ip, weight))
    }

    fn admit_order(&mut self, user: u64, now_ms: u64, used_weight_1m: u32) -> Result<(u32, u32), Exceeded> {
        for (window, per) in [(&self.orders_10s, "10 SECOND"), (&self.orders_1d, "1 DAY")] {
            if !window.admits(&user, 1) {
                let msg = format!(
                    "Too many new orders; current limit is {} orders per {per}.",
                    window.limit
                );
                return Err(exceeded(window, now_ms, binance::TOO_MANY_ORDERS, msg, used_weight_1m));
            }
        }
        Ok((self.orders_10s.add(user, 1), self.orders_1d.add(user, 1)))
    }
}

fn exceeded<K: Hash + Eq + Copy>(
    window: &FixedWindow<K>,
    now_ms: u64,
    code: i32,
    msg: String,
    used_weight_1m: u32,
) -> Exceeded {
    Exceeded {
        retry_after_s: window.retry_after_s(now_ms),
        code,
        msg,
        used_weight_1m,
    }
}

impl RateLimiter for LocalLimiter {
    fn admit(
        &mut self,
        ip: IpAddr,
        user: Option<u64>,
        weight: u32,
        is_order: bool,
        now_ms: u64,
    ) -> Result<Usage, Exceeded> {
        self.roll(now_ms);
        let used_weight_1m = self.admit_ip(ip, weight, now_ms)?;
        let mut usage = Usage {
            used_weight_1m,
            order_count_10s: None,
            order_count_1d: None,
        };
        // Orders are placed by authenticated users only; without one there
        // is no account to count against.
        if let (true, Some(user)) = (is_order, user) {
            let (count_10s, count_1d) = self.admit_order(user, now_ms, used_weight_1m)?;
            usage.order_count_10s = Some(count_10s);
            usage.order_count_1d = Some(count_1d);
        }
        Ok(usage)
    }

    fn admit_user_order(&mut self, user: u64, now_ms: u64) -> Result<Usage, Exceeded> {
        self.roll(now_ms);
        let (count_10s, count_1d) = self.admit_order(user, now_ms, 0)?;
        Ok(Usage {
            used_weight_1m: 0,
            order_count_10s: Some(count_10s),
            order_count_1d: Some(count_1d),
        })
    }

    fn order_filled(&mut self, user: u64, now_ms: u64) {
        self.roll(now_ms);
        self.orders_10s.subtract(&user, 1);
        self.orders_1d.subtract(&user, 1);
    }
}

/// Binance's endpoint security types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Security {
    None,
    Trade,
    UserData,
    UserStream,
}

impl Security {
    /// The key scope the endpoint needs, if it needs a key.
    pub fn scope(self) -> Option<Scope> {
        match self {
            Security::None => None,
            Security::Trade => Some(Scope::Trade),
            Security::UserData => Some(Scope::Read),
            Security::UserStream => Some(Scope::UserStream),
        }
    }

    /// TRADE and USER_DATA requests carry `timestamp` and `signature`.
    pub fn signed(self) -> bool {
        matches!(self, Security::Trade | Security::UserData)
    }
}

/// The REST endpoints tradsys serves, one per method and path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
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
    OrderNew,
    OrderQuery,
    OrderCancel,
    OrderTest,
    OrderCancelReplace,
    OpenOrders,
    OpenOrdersCancel,
    AllOrders,
    Account,
    MyTrades,
    UserDataStreamStart,
    UserDataStreamKeepalive,
    UserDataStreamClose,
}

impl Endpoint {
    pub const ALL: [Endpoint; 26] = [
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
        Endpoint::OrderNew,
        Endpoint::OrderQuery,
        Endpoint::OrderCancel,
        Endpoint::OrderTest,
        Endpoint::OrderCancelReplace,
        Endpoint::OpenOrders,
        Endpoint::OpenOrdersCancel,
        Endpoint::AllOrders,
        Endpoint::Account,
        Endpoint::MyTrades,
        Endpoint::UserDataStreamStart,
        Endpoint::UserDataStreamKeepalive,
        Endpoint::UserDataStreamClose,
    ];

    /// The method and path that name this endpoint.
    pub fn route(self) -> (Method, &'static str) {
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
            OrderNew => (Post, "/api/v3/order"),
            OrderQuery => (Get, "/api/v3/order"),
            OrderCancel => (Delete, "/api/v3/order"),
            OrderTest => (Post, "/api/v3/order/test"),
            OrderCancelReplace => (Post, "/api/v3/order/cancelReplace"),
            OpenOrders => (Get, "/api/v3/openOrders"),
            OpenOrdersCancel => (Delete, "/api/v3/openOrders"),
            AllOrders => (Get, "/api/v3/allOrders"),
            Account => (Get, "/api/v3/account"),
            MyTrades => (Get, "/api/v3/myTrades"),
            UserDataStreamStart => (Post, "/api/v3/userDataStream"),
            UserDataStreamKeepalive => (Put, "/api/v3/userDataStream"),
            UserDataStreamClose => (Delete, "/api/v3/userDataStream"),
        }
    }

    /// The endpoint for a request; HEAD finds the GET endpoint. `None` for
    /// an unknown path or a method the path does not serve.
    pub fn from_request(method: Method, path: &[u8]) -> Option<Endpoint> {
        let method = if method == Method::Head { Method::Get } else { method };
        Endpoint::ALL
            .into_iter()
            .find(|e| e.route() == (method, bytes_as_str(path)))
    }

    pub fn security(self) -> Security {
        use Endpoint::*;
        match self {
            OrderNew | OrderCancel | OrderTest | OrderCancelReplace | OpenOrdersCancel => Security::Trade,
            OrderQuery | OpenOrders | AllOrders | Account | MyTrades => Security::UserData,
            UserDataStreamStart | UserDataStreamKeepalive | UserDataStreamClose => Security::UserStream,
            _ => Security::None,
        }
    }

    /// Whether a request counts against the unfilled ORDERS limits (those
    /// that place an order; a test order places none).
    pub fn is_order(self) -> bool {
        matches!(self, Endpoint::OrderNew | Endpoint::OrderCancelReplace)
    }
}

fn bytes_as_str(path: &[u8]) -> &str {
    std::str::from_utf8(path).unwrap_or("")
}

/// The parameters a request's weight depends on, as decoded values.
#[derive(Clone, Copy, Debug, Default)]
pub struct WeightParams<'a> {
    pub limit: Option<&'a str>,
    pub symbol: Option<&'a str>,
    /// The JSON array, e.g. `["BTCUSDT","BNBUSDT"]`.
    pub symbols: Option<&'a str>,
    pub order_id: Option<&'a str>,
    pub compute_commission_rates: Option<&'a str>,
}

impl<'a> WeightParams<'a> {
    pub fn from_params(params: &'a Params<'a>) -> WeightParams<'a> {
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

/// Depth's default `limit`, which decides its weight when none is sent.
const DEPTH_LIMIT_DEFAULT: u32 = 100;

/// The REQUEST_WEIGHT of one request, per Binance's published table.
pub fn weight(endpoint: Endpoint, params: &WeightParams) -> u32 {
    use Endpoint::*;
    match endpoint {
        Ping | Time => 1,
        ExchangeInfo => 20,
        Depth => depth_weight(params.limit),
        Trades | HistoricalTrades => 25,
        AggTrades => 4,
        Klines | UiKlines | AvgPrice => 2,
        Ticker24hr => ticker_24hr_weight(params),
        TickerPrice | TickerBookTicker => match params.symbol {
            Some(_) => 2,
            None => 4,
        },
        OrderNew | OrderCancel | OrderCancelReplace | OpenOrdersCancel => 1,
        OrderTest => match params.compute_commission_rates {
            Some("true") => 20,
            _ => 1,
        },
        OrderQuery => 4,
        OpenOrders => match params.symbol {
            Some(_) => 6,
            None => 80,
        },
        AllOrders | Account => 20,
        MyTrades => match params.order_id {
            Some(_) => 5,
            None => 20,
        },
        UserDataStreamStart | UserDataStreamKeepalive | UserDataStreamClose => 2,
    }
}

fn depth_weight(limit: Option<&str>) -> u32 {
    let limit = limit.and_then(|l| l.parse::<u32>().ok()).unwrap_or(DEPTH_LIMIT_DEFAULT);
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
    use std::net::Ipv4Addr;

    const IP_A: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    const IP_B: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
    /// 2023-11-14T22:13:20Z, on a whole minute and a whole 10 seconds.
    const T0: u64 = 1_700_000_040_000;

    fn limiter(weight_max: u32, orders_10s_max: u32, orders_day_max: u32) -> LocalLimiter {
        LocalLimiter::new(&RateLimitConfig {
            request_weight_per_minute_max: weight_max,
            orders_per_10s_max: orders_10s_max,
            orders_per_day_max: orders_day_max,
            ..RateLimitConfig::default()
        })
    }

    #[test]
    fn user_orders_charge_no_ip() {
        // Regression: orders counted with a placeholder IP shared one raw
        // request budget among every user of a shard.
        let mut limits = LocalLimiter::new(&RateLimitConfig {
            raw_requests_per_5m_max: 2,
            orders_per_10s_max: 1,
            ..RateLimitConfig::default()
        });
        for user in 1..=5 {
            let usage = limits.admit_user_order(user, T0).expect("each user's first order");
            assert_eq!((usage.used_weight_1m, usage.order_count_10s), (0, Some(1)));
        }
        let refused = limits.admit_user_order(3, T0).unwrap_err();
        assert_eq!(refused.code, binance::TOO_MANY_ORDERS);
    }

    #[test]
    fn defaults_match_exchange_info() {
        let config = RateLimitConfig::default();
        let published = crate::api::RATE_LIMITS_DEFAULT;
        let ours = config.rate_limits();
        assert_eq!(
            (
                ours.request_weight_per_minute_max,
                ours.orders_per_10s_max,
                ours.orders_per_day_max,
                ours.raw_requests_per_5m_max
            ),
            (
                published.request_weight_per_minute_max,
                published.orders_per_10s_max,
                published.orders_per_day_max,
                published.raw_requests_per_5m_max
            )
        );
        assert_eq!(
            (ours.request_weight_per_minute_max, ours.raw_requests_per_5m_max),
            (6_000, 61_000)
        );
    }

    #[test]
    fn weight_counts_per_minute_and_resets_on_the_minute() {
        assert_eq!(T0 % MINUTE_MS, 0);
        let mut limits = limiter(100, 100, 1000);
        // (ms after T0, ip, weight, expected used weight or (code, Retry-After))
        type Case = (u64, IpAddr, u32, Result<u32, (i32, u32)>);
        let table: &[Case] = &[
            (0, IP_A, 40, Ok(40)),
            (1, IP_A, 60, Ok(100)),
            (2, IP_A, 1, Err((-1003, 60))),
            (2, IP_B, 100, Ok(100)),
            (30_500, IP_A, 1, Err((-1003, 30))),
            (59_001, IP_A, 1, Err((-1003, 1))),
            (59_999, IP_A, 1, Err((-1003, 1))),
            (60_000, IP_A, 1, Ok(1)),
            (60_000, IP_A, 100, Err((-1003, 60))),
            (60_001, IP_A, 99, Ok(100)),
            (60_002, IP_B, 5, Ok(5)),
            (119_999, IP_A, 101, Err((-1003, 1))),
            (180_000, IP_A, 101, Err((-1003, 60))),
            (180_000, IP_A, 100, Ok(100)),
        ];
        for &(at, ip, weight, expected) in table {
            let got = limits.admit(ip, None, weight, false, T0 + at);
            let got = got.map(|u| u.used_weight_1m).map_err(|e| (e.code, e.retry_after_s));
            assert_eq!(got, expected, "at +{at} ms, {ip}, weight {weight}");
        }
    }

    #[test]
    fn refusal_reports_limit_and_current_weight() {
        let mut limits = limiter(10, 100, 1000);
        limits.admit(IP_A, None, 7, false, T0).unwrap();
        let refused = limits.admit(IP_A, None, 4, false, T0 + 15_250).unwrap_err();
        assert_eq!(
            refused,
            Exceeded {
                retry_after_s: 45,
                code: binance::TOO_MANY_REQUESTS,
                msg: "Too much request weight used; current limit is 10 request weight per 1 MINUTE. \
                      Please use WebSocket Streams for live updates to avoid polling the API."
                    .into(),
                used_weight_1m: 7,
            }
        );
        assert_eq!(refused.retry_after_header(), "Retry-After: 45");
        let http: HttpError = refused.into();
        assert_eq!((http.status, http.code), (429, -1003));
        // A refused request counts nothing.
        assert_eq!(
            limits
                .admit(IP_A, None, 3, false, T0 + 15_251)
                .map(|u| u.used_weight_1m),
            Ok(10)
        );
    }

    #[test]
    fn orders_count_per_user_per_10s_and_per_day() {
        let mut limits = limiter(1_000_000, 2, 5);
        // (ms after T0, user, expected (10s count, day count) or (code, Retry-After))
        type Case = (u64, u64, Result<(u32, u32), (i32, u32)>);
        let table: &[Case] = &[
            (0, 1, Ok((1, 1))),
            (1, 1, Ok((2, 2))),
            (2, 1, Err((-1015, 10))),
            (2, 2, Ok((1, 1))),
            (3, 2, Ok((2, 2))),
            (9_999, 1, Err((-1015, 1))),
            (10_000, 1, Ok((1, 3))),
            (10_001, 1, Ok((2, 4))),
            (20_000, 1, Ok((1, 5))),
            (20_001, 1, Err((-1015, day_left_s(T0 + 20_001)))),
            (30_000, 2, Ok((1, 3))),
        ];
        for &(at, user, expected) in table {
            let got = limits.admit(IP_A, Some(user), 1, true, T0 + at);
            let got = got.map(|u| (u.order_count_10s.unwrap(), u.order_count_1d.unwrap()));
            assert_eq!(
                got.map_err(|e| (e.code, e.retry_after_s)),
                expected,
                "at +{at} ms, user {user}"
            );
        }
        let next_day = T0 - T0 % DAY_MS + DAY_MS;
        let usage = limits.admit(IP_A, Some(1), 1, true, next_day).unwrap();
        assert_eq!((usage.order_count_10s, usage.order_count_1d), (Some(1), Some(1)));
    }

    fn day_left_s(now_ms: u64) -> u32 {
        ((DAY_MS - now_ms % DAY_MS).div_ceil(1_000)) as u32
    }

    #[test]
    fn order_refusal_still_counts_weight_but_not_the_order() {
        let mut limits = limiter(100, 1, 100);
        limits.admit(IP_A, Some(1), 1, true, T0).unwrap();
        let refused = limits.admit(IP_A, Some(1), 1, true, T0 + 1).unwrap_err();
        assert_eq!(refused.code, binance::TOO_MANY_ORDERS);
        assert_eq!(
            refused.msg,
            "Too many new orders; current limit is 1 orders per 10 SECOND."
        );
        assert_eq!(refused.used_weight_1m, 2);
        let usage = limits.admit(IP_A, Some(1), 1, false, T0 + 2).unwrap();
        assert_eq!(
            usage,
            Usage {
                used_weight_1m: 3,
                order_count_10s: None,
                order_count_1d: None
            }
        );
        let usage = limits.admit(IP_A, Some(1), 1, true, T0 + 10_000).unwrap();
        assert_eq!((usage.order_count_10s, usage.order_count_1d), (Some(1), Some(2)));
    }

    #[test]
    fn filled_orders_give_back_order_count() {
        let mut limits = limiter(1_000, 2, 100);
        limits.admit(IP_A, Some(1), 1, true, T0).unwrap();
        limits.admit(IP_A, Some(1), 1, true, T0 + 1).unwrap();
        assert!(limits.admit(IP_A, Some(1), 1, true, T0 + 2).is_err());
        limits.order_filled(1, T0 + 3);
        limits.order_filled(2, T0 + 3);
        let usage = limits.admit(IP_A, Some(1), 1, true, T0 + 4).unwrap();
        assert_eq!((usage.order_count_10s, usage.order_count_1d), (Some(2), Some(2)));
    }

    #[test]
    fn raw_requests_limited_per_5_minutes() {
        let mut limits = LocalLimiter::new(&RateLimitConfig {
            raw_requests_per_5m_max: 3,
            ..RateLimitConfig::default()
        });
        let start = T0 - T0 % FIVE_MINUTES_MS;
        for i in 0..3 {
            assert!(limits.admit(IP_A, None, 1, false, start + i).is_ok());
        }
        let refused = limits.admit(IP_A, None, 1, false, start + 120_000).unwrap_err();
        assert_eq!((refused.code, refused.retry_after_s), (binance::TOO_MANY_REQUESTS, 180));
        assert!(limits.admit(IP_B, None, 1, false, start + 120_000).is_ok());
        assert!(limits.admit(IP_A, None, 1, false, start + FIVE_MINUTES_MS).is_ok());
    }

    #[test]
    fn clock_stepping_back_forgives_nothing() {
        let mut limits = limiter(10, 100, 100);
        limits.admit(IP_A, None, 10, false, T0 + 70_000).unwrap();
        let refused = limits.admit(IP_A, None, 1, false, T0 + 10_000).unwrap_err();
        assert_eq!(refused.retry_after_s, 60);
    }

    #[test]
    fn counter_maps_stay_bounded() {
        let keys_max = 4;
        let mut limits = LocalLimiter::new(&RateLimitConfig {
            request_weight_per_minute_max: 10,
            limiter_keys_max: keys_max,
            ..RateLimitConfig::default()
        });
        for i in 0..1000u32 {
            let ip = IpAddr::V4(Ipv4Addr::from(i));
            limits
                .admit(ip, Some(u64::from(i)), 1, true, T0 + u64::from(i))
                .unwrap();
            assert!(limits.weight_1m.len() <= keys_max && limits.orders_1d.len() <= keys_max);
            assert_eq!(limits.weight_1m.started.len(), limits.weight_1m.len());
        }
        assert_eq!(limits.keys(), 4 * keys_max);
        // The newest keys keep their counts; the earliest were evicted.
        let newest = IpAddr::V4(Ipv4Addr::from(999u32));
        assert_eq!(
            limits.admit(newest, None, 1, false, T0 + 1000).unwrap().used_weight_1m,
            2
        );
        let evicted = IpAddr::V4(Ipv4Addr::from(0u32));
        assert_eq!(
            limits.admit(evicted, None, 1, false, T0 + 1000).unwrap().used_weight_1m,
            1
        );
        // A new window drops every past counter.
        limits.admit(IP_A, None, 1, false, T0 + DAY_MS).unwrap();
        assert_eq!(limits.keys(), 2);
    }

    #[test]
    fn limiter_is_usable_as_a_trait_object() {
        let mut boxed: Box<dyn RateLimiter> = Box::new(LocalLimiter::new(&RateLimitConfig::default()));
        let usage = boxed.admit(IP_A, Some(1), 1, true, T0).unwrap();
        assert_eq!(
            usage.headers(),
            [
                "X-MBX-USED-WEIGHT-1M: 1",
                "X-MBX-ORDER-COUNT-10S: 1",
                "X-MBX-ORDER-COUNT-1D: 1"
            ]
        );
        assert_eq!(
            boxed.admit(IP_A, None, 4, false, T0).unwrap().headers(),
            ["X-MBX-USED-WEIGHT-1M: 5"]
        );
    }

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
        ];
        for (endpoint, params, expected) in table {
            assert_eq!(weight(*endpoint, params), *expected, "{endpoint:?} {params:?}");
        }
    }

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
            (OpenOrdersCancel, Some(Scope::Trade), true, false),
            (OrderQuery, Some(Scope::Read), true, false),
            (Account, Some(Scope::Read), true, false),
            (MyTrades, Some(Scope::Read), true, false),
            (UserDataStreamStart, Some(Scope::UserStream), false, false),
            (UserDataStreamClose, Some(Scope::UserStream), false, false),
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
