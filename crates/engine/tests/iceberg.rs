//! Iceberg orders, by table: only the visible part is in the depth, a
//! taker meets the visible part only, each refresh goes to the back of its
//! level's queue, fill-or-kill counts the hidden part, an amendment takes
//! hidden quantity first, and every refusal comes with Binance's code and
//! message. Balances are whole-unit strings in the test markets (BTCUSDT:
//! maker 0.1 %, taker 0.2 %).

mod common;

use common::{limit, p, q, Fixture, MAKER, TAKER, THIRD as OTHER};
use tradsys_engine::account::{AmendRequest, OrderRef, ICEBERG_ORDERS_PER_USER_MARKET_MAX};
use tradsys_engine::order::{MarketId, OrderQty, OrderRequest, OrderStatus, OrderType, Side, TimeInForce};

use Side::{Buy, Sell};
use TimeInForce::{Fok, Gtc, Ioc};

const BTCUSDT: MarketId = MarketId(0);

fn iceberg(side: Side, price: &str, qty: &str, visible: &str) -> OrderRequest {
    OrderRequest {
        iceberg_qty: Some(q(visible)),
        ..limit(0, side, price, qty, Gtc)
    }
}

impl Fixture {
    fn depth(&self) -> (Levels, Levels) {
        let (mut bids, mut asks) = (Vec::new(), Vec::new());
        self.exchange.books[0].depth(10, &mut bids, &mut asks);
        let text = |levels: Vec<(tradsys_engine::num::Price, tradsys_engine::num::Qty)>| {
            levels
                .into_iter()
                .map(|(price, qty)| (price.to_string(), qty.to_string()))
                .collect()
        };
        (text(bids), text(asks))
    }

    fn status(&self, user: u64, id: u64) -> (OrderStatus, String, String) {
        let view = self.exchange.account(user).order(user, BTCUSDT, OrderRef::Id(id));
        let view = view.unwrap_or_else(|e| panic!("order {id}: {e}"));
        (view.status, view.executed_qty.to_string(), view.iceberg_qty.to_string())
    }
}

/// Depth levels as (price, quantity) strings, best first.
type Levels = Vec<(String, String)>;

fn s(text: &str) -> String {
    text.to_string()
}

fn level(price: &str, qty: &str) -> (String, String) {
    (s(price), s(qty))
}

#[test]
fn only_the_visible_part_is_in_the_depth() {
    let mut f = Fixture::new();
    let buy = f.accept(MAKER, &iceberg(Buy, "100", "1", "0.2"));
    f.accept(TAKER, &limit(0, Buy, "100", "0.5", Gtc));
    f.accept(TAKER, &iceberg(Sell, "120", "2", "0.25"));
    assert_eq!(
        f.depth(),
        (
            vec![level("100.00000000", "0.70000000")],
            vec![level("120.00000000", "0.25000000")]
        )
    );
    // The whole order is locked, not its visible part.
    assert_eq!(f.balance(MAKER, "USDT"), (s("99900.00000000"), s("100.00000000")));
    assert_eq!(f.balance(TAKER, "BTC"), (s("8.00000000"), s("2.00000000")));
    assert_eq!(
        f.status(MAKER, buy),
        (OrderStatus::New, s("0.00000000"), s("0.20000000"))
    );
}

/// The iceberg shows 0.3 ahead of a plain order of 0.5. A sell of 1 takes
/// the visible 0.3, then the plain order (the refreshed part went behind
/// it), then 0.2 of the refreshed part.
#[test]
fn a_refreshed_part_goes_to_the_back_of_its_level() {
    let mut f = Fixture::with_third();
    let ice = f.accept(MAKER, &iceberg(Buy, "100", "1", "0.3"));
    let plain = f.accept(OTHER, &limit(0, Buy, "100", "0.5", Gtc));
    f.accept(TAKER, &limit(0, Sell, "100", "1", Gtc));
    assert_eq!(
        f.maker_fills(),
        [(ice, s("0.30000000")), (plain, s("0.50000000")), (ice, s("0.20000000"))]
    );
    assert_eq!(f.depth().0, [level("100.00000000", "0.10000000")]);
    assert_eq!(
        f.status(MAKER, ice),
        (OrderStatus::PartiallyFilled, s("0.50000000"), s("0.30000000"))
    );
    // The rest: 0.1 visible, then a part of 0.3, then the last 0.1.
    f.accept(TAKER, &limit(0, Sell, "100", "0.5", Gtc));
    assert_eq!(
        f.maker_fills(),
        [(ice, s("0.10000000")), (ice, s("0.30000000")), (ice, s("0.10000000"))]
    );
    assert_eq!(f.depth().0, []);
    assert_eq!(
        f.status(MAKER, ice),
        (OrderStatus::Filled, s("1.00000000"), s("0.30000000"))
    );
    // 1 BTC bought at 100, less the maker's 0.1 %.
    assert_eq!(f.balance(MAKER, "USDT"), (s("99900.00000000"), s("0.00000000")));
    assert_eq!(f.balance(MAKER, "BTC"), (s("10.99900000"), s("0.00000000")));
    assert_eq!(f.balance(TAKER, "USDT"), (s("100149.70000000"), s("0.00000000")));
}

#[test]
fn a_taker_iceberg_rests_what_is_left_as_an_iceberg() {
    let mut f = Fixture::new();
    let ask = f.accept(MAKER, &limit(0, Sell, "100", "0.2", Gtc));
    let ice = f.accept(TAKER, &iceberg(Buy, "100", "1", "0.3"));
    assert_eq!(f.maker_fills(), [(ask, s("0.20000000"))]);
    assert_eq!(f.depth(), (vec![level("100.00000000", "0.30000000")], vec![]));
    assert_eq!(
        f.status(TAKER, ice),
        (OrderStatus::PartiallyFilled, s("0.20000000"), s("0.30000000"))
    );
}

#[test]
fn fill_or_kill_counts_the_hidden_quantity() {
    let mut f = Fixture::new();
    let ice = f.accept(MAKER, &iceberg(Sell, "100", "1", "0.1"));
    // 0.1 is visible, 1 is there: a FOK buy of 0.8 fills, part by part.
    let fok = f.accept(TAKER, &limit(0, Buy, "100", "0.8", Fok));
    assert_eq!(f.maker_fills(), vec![(ice, s("0.10000000")); 8]);
    assert_eq!(f.status(TAKER, fok).0, OrderStatus::Filled);
    // 0.2 is left: a FOK of 0.3 expires and takes nothing.
    let fok = f.accept(TAKER, &limit(0, Buy, "100", "0.3", Fok));
    assert_eq!(
        (f.maker_fills(), f.status(TAKER, fok).0),
        (vec![], OrderStatus::Expired)
    );
    assert_eq!(f.depth().1, [level("100.00000000", "0.10000000")]);
}

#[test]
fn an_amended_iceberg_loses_hidden_quantity_first() {
    let mut f = Fixture::new();
    let ice = f.accept(MAKER, &iceberg(Buy, "100", "1", "0.3"));
    for (new_qty, visible, locked) in [
        ("0.5", "0.30000000", "50.00000000"),
        ("0.2", "0.20000000", "20.00000000"),
    ] {
        f.out.clear();
        let request = AmendRequest {
            market: BTCUSDT,
            target: OrderRef::Id(ice),
            new_qty: q(new_qty),
            new_client_order_id: None,
        };
        f.exchange.amend(MAKER, &request, 10, &mut f.out).expect("amended");
        f.exchange.check_invariants();
        assert_eq!(f.depth().0, [level("100.00000000", visible)], "to {new_qty}");
        assert_eq!(f.balance(MAKER, "USDT").1, s(locked), "to {new_qty}");
    }
}

#[test]
fn a_fired_stop_limit_rests_as_an_iceberg() {
    let mut f = Fixture::new();
    // A trade at 100 sets the last price.
    f.accept(MAKER, &limit(0, Sell, "100", "0.1", Gtc));
    f.accept(TAKER, &limit(0, Buy, "100", "0.1", Gtc));
    let mut stop = iceberg(Sell, "90", "1", "0.25");
    stop.kind = OrderType::StopLossLimit;
    stop.stop_price = Some(p("95"));
    let stop = f.accept(MAKER, &stop);
    assert_eq!(f.depth(), (vec![], vec![]));
    // A trade at 95 fires it; it rests above the bids, showing 0.25.
    f.accept(TAKER, &limit(0, Buy, "95", "0.1", Gtc));
    f.accept(MAKER, &limit(0, Sell, "95", "0.1", Gtc));
    assert_eq!(f.depth(), (vec![], vec![level("90.00000000", "0.25000000")]));
    assert_eq!(
        f.status(MAKER, stop),
        (OrderStatus::New, s("0.00000000"), s("0.25000000"))
    );
}

/// Each refusal with Binance's code and message; the order is not placed
/// and nothing is locked.
#[test]
fn refusals_carry_binance_codes() {
    let market = OrderRequest {
        kind: OrderType::Market,
        price: None,
        time_in_force: None,
        ..iceberg(Buy, "100", "1", "0.2")
    };
    let table: [(&str, OrderRequest, i32, &str); 6] = [
        (
            "a market order",
            market,
            -1106,
            "Parameter 'icebergQty' sent when not required.",
        ),
        (
            "immediate or cancel",
            OrderRequest {
                time_in_force: Some(Ioc),
                ..iceberg(Buy, "100", "1", "0.2")
            },
            -2010,
            "Unsupported order combination",
        ),
        (
            "as large as the order",
            iceberg(Buy, "100", "1", "1"),
            -2010,
            "IcebergQty exceeds QTY.",
        ),
        (
            "off the step size",
            iceberg(Buy, "100", "1", "0.0005"),
            -1013,
            "Filter failure: LOT_SIZE",
        ),
        (
            "eleven parts",
            iceberg(Buy, "100", "1", "0.099"),
            -1013,
            "Filter failure: ICEBERG_PARTS",
        ),
        (
            "a maker-only order of eleven parts",
            OrderRequest {
                kind: OrderType::LimitMaker,
                time_in_force: None,
                ..iceberg(Buy, "100", "1", "0.09")
            },
            -1013,
            "Filter failure: ICEBERG_PARTS",
        ),
    ];
    for (name, request, code, msg) in table {
        let mut f = Fixture::new();
        let refused = f.submit(MAKER, &request).map_err(|e| (e.code(), e.msg()));
        assert_eq!(refused, Err((code, msg)), "{name}");
        assert_eq!(f.balance(MAKER, "USDT").1, s("0.00000000"), "{name}");
    }
    // Ten parts is the most: accepted.
    let mut f = Fixture::new();
    f.accept(MAKER, &iceberg(Buy, "100", "1", "0.1"));
    assert_eq!(f.depth().0, [level("100.00000000", "0.10000000")]);
}

#[test]
fn a_user_may_have_so_many_icebergs_open_in_a_market() {
    let mut f = Fixture::new();
    let small = iceberg(Buy, "100", "0.02", "0.01");
    for _ in 0..ICEBERG_ORDERS_PER_USER_MARKET_MAX {
        f.accept(MAKER, &small);
    }
    let refused = f.submit(MAKER, &small).map_err(|e| (e.code(), e.msg()));
    assert_eq!(refused, Err((-1013, "Filter failure: MAX_NUM_ICEBERG_ORDERS")));
    // A plain order still goes, and so do icebergs in another market.
    f.accept(MAKER, &limit(0, Buy, "100", "0.02", Gtc));
    let eth = OrderRequest {
        qty: OrderQty::Base(q("0.2")),
        iceberg_qty: Some(q("0.1")),
        ..limit(1, Buy, "100", "0.2", Gtc)
    };
    f.accept(MAKER, &eth);
}
