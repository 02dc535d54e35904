//! Trailing stops, by table: Binance's five scenarios from its trailing
//! stop FAQ (stop-loss and take-profit, buy and sell, with and without a
//! stop price) walked trade by trade, the lock of a trailing market buy,
//! cancels and amendments of held trailing stops, and every refusal with
//! Binance's code and message. Trades are made by the maker and the taker
//! at one price each; the trailing stops belong to a third user.

mod common;

use common::{limit, p, q, Fixture, MAKER, TAKER, THIRD as OWNER};
use tradsys_engine::account::{AmendRequest, OrderRef};
use tradsys_engine::order::{MarketId, OrderRequest, OrderStatus, OrderType, Side, TimeInForce};

use OrderType::{StopLoss, StopLossLimit, TakeProfit, TakeProfitLimit};
use Side::{Buy, Sell};
use TimeInForce::{Gtc, Ioc};

const BTCUSDT: MarketId = MarketId(0);

impl Fixture {
    /// One trade of 0.02 at `price` between the maker and the taker.
    fn trade_at(&mut self, price: &str) {
        self.accept(MAKER, &limit(0, Sell, price, "0.02", Gtc));
        self.accept(TAKER, &limit(0, Buy, price, "0.02", Ioc));
        let traded = self.out.fills.iter().any(|f| f.price == p(price));
        assert!(traded, "a trade at {price}");
    }

    /// Whether order `id` has left the held stops (it fired).
    fn fired(&self, id: u64) -> bool {
        let book = &self.exchange.books[0];
        !book.contains(id) || book.resting_qty(id).is_some()
    }

    fn status(&self, user: u64, id: u64) -> OrderStatus {
        let view = self.exchange.account(user).order(user, BTCUSDT, OrderRef::Id(id));
        view.unwrap_or_else(|e| panic!("order {id}: {e}")).status
    }
}

fn trailing(kind: OrderType, side: Side, stop: Option<&str>, delta: u32, price: &str) -> OrderRequest {
    OrderRequest {
        kind,
        stop_price: stop.map(p),
        trailing_delta: Some(delta),
        ..limit(0, side, price, "0.01", Gtc)
    }
}

/// Binance's trailing stop FAQ, scenarios A to E: the last price is 40,000
/// when the order is placed; each step is a trade and whether the order
/// has fired after it.
#[test]
fn binance_scenarios_fire_where_the_faq_says() {
    type Scenario = (&'static str, OrderRequest, &'static [(&'static str, bool)]);
    let scenarios: [Scenario; 5] = [
        (
            "A: stop-loss limit buy, stop 44,000, 5 %",
            trailing(StopLossLimit, Buy, Some("44000"), 500, "45000"),
            &[
                ("37000", false),
                ("44000", false),
                ("45000", false),
                ("46000", false),
                ("42000", false),
                ("44099.99", false),
                ("44100", true),
            ],
        ),
        (
            "B: stop-loss limit sell, stop 39,000, 10 %",
            trailing(StopLossLimit, Sell, Some("39000"), 1000, "38000"),
            &[
                ("41500", false),
                ("39000", false),
                ("37000", false),
                ("41000", false),
                ("36900.01", false),
                ("36900", true),
            ],
        ),
        (
            "C: take-profit limit buy, stop 38,000, 8.5 %",
            trailing(TakeProfitLimit, Buy, Some("38000"), 850, "38500"),
            &[
                ("42000", false),
                ("38000", false),
                ("37000", false),
                ("39000", false),
                ("38000", false),
                ("40145", true),
            ],
        ),
        (
            "D: take-profit limit sell, stop 42,000, 7.5 %",
            trailing(TakeProfitLimit, Sell, Some("42000"), 750, "41000"),
            &[
                ("41500", false),
                ("39000", false),
                ("42000", false),
                ("45000", false),
                ("44000", false),
                ("46500", false),
                ("43012.50", true),
            ],
        ),
        (
            "E: stop-loss limit sell without a stop price, 7 %",
            trailing(StopLossLimit, Sell, None, 700, "39000"),
            &[
                ("42000", false),
                ("39500", false),
                ("45500", false),
                ("42315.01", false),
                ("42315", true),
            ],
        ),
    ];
    for (name, request, steps) in scenarios {
        let mut f = Fixture::with_third();
        f.trade_at("40000");
        let id = f.accept(OWNER, &request);
        for &(price, fired) in steps {
            f.trade_at(price);
            assert_eq!(f.fired(id), fired, "{name}: after a trade at {price}");
        }
        // Fired into an empty book, the limit order rests.
        assert_eq!(f.status(OWNER, id), OrderStatus::New, "{name}");
    }
}

/// Without a stop price and with no trade yet, the stop tracks from the
/// first trade.
#[test]
fn a_trailing_stop_without_a_last_price_tracks_from_the_first_trade() {
    let mut f = Fixture::with_third();
    let id = f.accept(OWNER, &trailing(StopLoss, Sell, None, 100, "1").with_market());
    f.trade_at("100");
    assert!(!f.fired(id));
    f.trade_at("99.01");
    assert!(!f.fired(id));
    // 1 % below 100; a market sell fires into an empty book and expires.
    f.trade_at("99");
    assert!(f.fired(id));
    assert_eq!(f.status(OWNER, id), OrderStatus::Expired);
    assert_eq!(f.balance(OWNER, "BTC").1, "0.00000000");
}

/// A trailing market buy locks its quantity at its stop price raised by
/// its delta, plus the 5 % protection; without a stop price, at the
/// reference (the best ask, else the last price).
#[test]
fn a_trailing_market_buy_locks_for_its_delta() {
    let mut f = Fixture::with_third();
    f.trade_at("100");
    // 1 × 100 × 1.02 × 1.05 = 107.1
    f.accept(OWNER, &trailing(StopLoss, Buy, None, 200, "1").with_market().qty("1"));
    assert_eq!(f.balance(OWNER, "USDT").1, "107.10000000");
    // 1 × 120 × 1.02 × 1.05 = 128.52, with the first.
    f.accept(
        OWNER,
        &trailing(TakeProfit, Buy, Some("120"), 200, "1").with_market().qty("1"),
    );
    assert_eq!(f.balance(OWNER, "USDT").1, "235.62000000");
}

#[test]
fn held_trailing_stops_cancel_and_shrink() {
    let mut f = Fixture::with_third();
    f.trade_at("100");
    let sell = f.accept(OWNER, &trailing(StopLossLimit, Sell, None, 100, "90").qty("2"));
    let buy = f.accept(OWNER, &trailing(StopLoss, Buy, None, 200, "1").with_market().qty("1"));
    let request = AmendRequest {
        market: BTCUSDT,
        target: OrderRef::Id(buy),
        new_qty: q("0.5"),
        new_client_order_id: None,
    };
    f.out.clear();
    f.exchange.amend(OWNER, &request, 50, &mut f.out).expect("amended");
    f.exchange.check_invariants();
    // Half of 107.1, rounded up.
    assert_eq!(f.balance(OWNER, "USDT").1, "53.55000000");
    f.out.clear();
    f.exchange
        .cancel(OWNER, BTCUSDT, OrderRef::Id(sell), 51, &mut f.out)
        .expect("canceled");
    f.exchange.check_invariants();
    assert_eq!(f.status(OWNER, sell), OrderStatus::Canceled);
    assert_eq!(f.balance(OWNER, "BTC").1, "0.00000000");
    // The amended buy fires 2 % above the lowest price, 100.
    f.trade_at("102");
    assert!(f.fired(buy));
}

/// Each refusal with Binance's code and message; nothing is locked.
#[test]
fn refusals_carry_binance_codes() {
    let table: [(&str, OrderRequest, i32, &str); 5] = [
        (
            "below the filter",
            trailing(StopLossLimit, Sell, None, 9, "90"),
            -1013,
            "Filter failure: TRAILING_DELTA",
        ),
        (
            "above the filter",
            trailing(StopLossLimit, Sell, None, 2001, "90"),
            -1013,
            "Filter failure: TRAILING_DELTA",
        ),
        (
            "on a limit order",
            OrderRequest {
                trailing_delta: Some(100),
                ..limit(0, Sell, "90", "0.01", Gtc)
            },
            -1106,
            "Parameter 'trailingDelta' sent when not required.",
        ),
        (
            "a stop with neither",
            OrderRequest {
                trailing_delta: None,
                ..trailing(StopLossLimit, Sell, None, 100, "90")
            },
            -1102,
            "Param 'stopPrice' or 'trailingDelta' must be sent, but both were empty/null!",
        ),
        (
            "a stop price off the tick",
            trailing(StopLossLimit, Sell, Some("90.001"), 100, "90"),
            -1013,
            "Filter failure: PRICE_FILTER",
        ),
    ];
    for (name, request, code, msg) in table {
        let mut f = Fixture::with_third();
        let refused = f.submit(OWNER, &request).map_err(|e| (e.code(), e.msg()));
        assert_eq!(refused, Err((code, msg)), "{name}");
        assert_eq!(f.balance(OWNER, "BTC").1, "0.00000000", "{name}");
    }
    // The edges of the filter are accepted.
    let mut f = Fixture::with_third();
    for delta in [10, 2000] {
        f.accept(OWNER, &trailing(StopLossLimit, Sell, None, delta, "90").qty("1"));
    }
}

trait Shape {
    fn with_market(self) -> Self;
    fn qty(self, qty: &str) -> Self;
}

impl Shape for OrderRequest {
    /// The market variant of a stop-limit: no price, no time in force.
    fn with_market(self) -> OrderRequest {
        OrderRequest {
            price: None,
            time_in_force: None,
            ..self
        }
    }

    fn qty(self, qty: &str) -> OrderRequest {
        OrderRequest {
            qty: tradsys_engine::order::OrderQty::Base(q(qty)),
            ..self
        }
    }
}
