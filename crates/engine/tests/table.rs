//! Table tests: each row rests some orders, sends one more and states the
//! exact answer, fills and balances. Balances are whole-unit strings in the
//! test markets (BTCUSDT: maker 0.1 %, taker 0.2 %).

mod common;

use common::{client, limit, p, q, Fixture, MAKER, TAKER};
use tradsys_engine::account::{AccountEvent, NewOrderResult, OrderRef};
use tradsys_engine::account::{ALGO_ORDERS_PER_USER_MARKET_MAX, OPEN_ORDERS_PER_USER_MARKET_MAX};
use tradsys_engine::num::Amount;
use tradsys_engine::order::{CancelReplaceMode, MarketId, OrderQty, OrderRequest, OrderStatus};
use tradsys_engine::order::{OrderType, Side, StpMode, TimeInForce};
use tradsys_engine::EngineError;

use OrderStatus::*;
use Side::{Buy, Sell};
use TimeInForce::{Fok, Gtc, Ioc};

fn a(text: &str) -> Amount {
    Amount::parse(text).unwrap()
}

fn market(side: Side, qty: OrderQty) -> OrderRequest {
    OrderRequest {
        market: MarketId(0),
        side,
        kind: OrderType::Market,
        time_in_force: None,
        price: None,
        qty,
        stop_price: None,
        client_order_id: None,
        stp: StpMode::None,
        iceberg_qty: None,
        trailing_delta: None,
    }
}

fn kind(mut r: OrderRequest, kind: OrderType) -> OrderRequest {
    r.kind = kind;
    if !matches!(
        kind,
        OrderType::Limit | OrderType::StopLossLimit | OrderType::TakeProfitLimit
    ) {
        r.time_in_force = None;
    }
    r
}

fn stop(mut r: OrderRequest, kind: OrderType, stop: &str) -> OrderRequest {
    r.kind = kind;
    r.stop_price = Some(p(stop));
    r
}

fn stp(mut r: OrderRequest, mode: StpMode) -> OrderRequest {
    r.stp = mode;
    r
}

impl Fixture {
    /// Places and returns (status, executed, cummulative quote) or the error.
    fn place(&mut self, user: u64, r: &OrderRequest) -> Result<(OrderStatus, String, String), EngineError> {
        let id = self.next_id;
        self.next_id += 1;
        self.out.clear();
        self.exchange.place(user, r, id, id, &mut self.out)?;
        self.exchange.check_invariants();
        let placed = self.out.events.iter().find_map(|e| match e {
            AccountEvent::Placed { order_id, result } if *order_id == id => Some(*result),
            _ => None,
        });
        let view = placed.unwrap()?;
        Ok((
            view.status,
            view.executed_qty.to_string(),
            view.cummulative_quote_qty.to_string(),
        ))
    }

    fn fills(&self) -> Vec<(String, String)> {
        self.out
            .fills
            .iter()
            .map(|f| (f.price.to_string(), f.qty.to_string()))
            .collect()
    }
}

type Outcome = Result<(OrderStatus, &'static str, &'static str), EngineError>;

struct Row {
    name: &'static str,
    resting: Vec<(u64, OrderRequest)>,
    order: (u64, OrderRequest),
    outcome: Outcome,
    fills: &'static [(&'static str, &'static str)],
    /// (user, asset, free, locked) after the order.
    balances: &'static [(u64, &'static str, &'static str, &'static str)],
}

fn rows() -> Vec<Row> {
    let ask = |price, qty| (MAKER, limit(0, Sell, price, qty, Gtc));
    let bid = |price, qty| (MAKER, limit(0, Buy, price, qty, Gtc));
    let two_asks = vec![ask("100", "1"), ask("101", "1")];
    vec![
        Row {
            name: "limit GTC rests and locks quote at its price",
            resting: vec![],
            order: (TAKER, limit(0, Buy, "100", "2", Gtc)),
            outcome: Ok((New, "0.00000000", "0.00000000")),
            fills: &[],
            balances: &[(TAKER, "USDT", "99800.00000000", "200.00000000")],
        },
        Row {
            name: "limit GTC crosses two levels then rests the rest",
            resting: two_asks.clone(),
            order: (TAKER, limit(0, Buy, "101", "3", Gtc)),
            outcome: Ok((PartiallyFilled, "2.00000000", "201.00000000")),
            fills: &[("100.00000000", "1.00000000"), ("101.00000000", "1.00000000")],
            balances: &[
                (TAKER, "BTC", "11.99600000", "0.00000000"),
                (TAKER, "USDT", "99698.00000000", "101.00000000"),
                (MAKER, "USDT", "100200.79900000", "0.00000000"),
                (MAKER, "BTC", "8.00000000", "0.00000000"),
            ],
        },
        Row {
            name: "limit IOC expires what it cannot fill and unlocks it",
            resting: two_asks.clone(),
            order: (TAKER, limit(0, Buy, "100", "3", Ioc)),
            outcome: Ok((Expired, "1.00000000", "100.00000000")),
            fills: &[("100.00000000", "1.00000000")],
            balances: &[(TAKER, "USDT", "99900.00000000", "0.00000000")],
        },
        Row {
            name: "limit FOK expires untouched when the book is too thin",
            resting: two_asks.clone(),
            order: (TAKER, limit(0, Buy, "101", "3", Fok)),
            outcome: Ok((Expired, "0.00000000", "0.00000000")),
            fills: &[],
            balances: &[(TAKER, "USDT", "100000.00000000", "0.00000000")],
        },
        Row {
            name: "limit FOK fills completely when it can",
            resting: two_asks.clone(),
            order: (TAKER, limit(0, Buy, "101", "2", Fok)),
            outcome: Ok((Filled, "2.00000000", "201.00000000")),
            fills: &[("100.00000000", "1.00000000"), ("101.00000000", "1.00000000")],
            balances: &[(TAKER, "USDT", "99799.00000000", "0.00000000")],
        },
        Row {
            name: "market sell by quantity walks the bids",
            resting: vec![bid("99", "1"), bid("98", "1")],
            order: (TAKER, market(Sell, OrderQty::Base(q("1.5")))),
            outcome: Ok((Filled, "1.50000000", "148.00000000")),
            fills: &[("99.00000000", "1.00000000"), ("98.00000000", "0.50000000")],
            balances: &[
                (TAKER, "USDT", "100147.70400000", "0.00000000"),
                (TAKER, "BTC", "8.50000000", "0.00000000"),
            ],
        },
        Row {
            name: "market buy by quantity with no liquidity expires",
            resting: vec![],
            order: (TAKER, market(Buy, OrderQty::Base(q("1")))),
            outcome: Ok((Expired, "0.00000000", "0.00000000")),
            fills: &[],
            balances: &[(TAKER, "USDT", "100000.00000000", "0.00000000")],
        },
        Row {
            name: "market buy by quantity stops at its 5% protection lock",
            resting: vec![ask("100", "1"), ask("200", "1")],
            order: (TAKER, market(Buy, OrderQty::Base(q("2")))),
            outcome: Ok((Expired, "1.55000000", "210.00000000")),
            fills: &[("100.00000000", "1.00000000"), ("200.00000000", "0.55000000")],
            balances: &[(TAKER, "USDT", "99790.00000000", "0.00000000")],
        },
        Row {
            name: "market buy by quoteOrderQty spends at most the quote",
            resting: two_asks.clone(),
            order: (TAKER, market(Buy, OrderQty::Quote(a("150")))),
            outcome: Ok((Filled, "1.49500000", "149.99500000")),
            fills: &[("100.00000000", "1.00000000"), ("101.00000000", "0.49500000")],
            balances: &[(TAKER, "USDT", "99850.00500000", "0.00000000")],
        },
        Row {
            name: "market buy by quoteOrderQty that spends the quote on the last ask is FILLED",
            resting: two_asks.clone(),
            order: (TAKER, market(Buy, OrderQty::Quote(a("201")))),
            outcome: Ok((Filled, "2.00000000", "201.00000000")),
            fills: &[("100.00000000", "1.00000000"), ("101.00000000", "1.00000000")],
            balances: &[(TAKER, "USDT", "99799.00000000", "0.00000000")],
        },
        Row {
            name: "market buy by quoteOrderQty with quote left when the asks run out expires",
            resting: two_asks.clone(),
            order: (TAKER, market(Buy, OrderQty::Quote(a("202")))),
            outcome: Ok((Expired, "2.00000000", "201.00000000")),
            fills: &[("100.00000000", "1.00000000"), ("101.00000000", "1.00000000")],
            balances: &[(TAKER, "USDT", "99799.00000000", "0.00000000")],
        },
        Row {
            name: "market sell by quoteOrderQty receives about the quote",
            resting: vec![bid("100", "5")],
            order: (TAKER, market(Sell, OrderQty::Quote(a("250")))),
            outcome: Ok((Filled, "2.50000000", "250.00000000")),
            fills: &[("100.00000000", "2.50000000")],
            balances: &[
                (TAKER, "BTC", "7.50000000", "0.00000000"),
                (TAKER, "USDT", "100249.50000000", "0.00000000"),
            ],
        },
        Row {
            name: "LIMIT_MAKER that would cross is rejected, not rested",
            resting: two_asks.clone(),
            order: (TAKER, kind(limit(0, Buy, "100", "1", Gtc), OrderType::LimitMaker)),
            outcome: Err(EngineError::WouldMatch),
            fills: &[],
            balances: &[(TAKER, "USDT", "100000.00000000", "0.00000000")],
        },
        Row {
            name: "LIMIT_MAKER below the ask rests",
            resting: two_asks.clone(),
            order: (TAKER, kind(limit(0, Buy, "99.99", "1", Gtc), OrderType::LimitMaker)),
            outcome: Ok((New, "0.00000000", "0.00000000")),
            fills: &[],
            balances: &[(TAKER, "USDT", "99900.01000000", "99.99000000")],
        },
        Row {
            name: "STP EXPIRE_TAKER expires the taker before a self-trade",
            resting: vec![(TAKER, limit(0, Sell, "100", "1", Gtc)), ask("101", "1")],
            order: (TAKER, stp(limit(0, Buy, "101", "2", Gtc), StpMode::ExpireTaker)),
            outcome: Ok((ExpiredInMatch, "0.00000000", "0.00000000")),
            fills: &[],
            balances: &[
                (TAKER, "USDT", "100000.00000000", "0.00000000"),
                (TAKER, "BTC", "9.00000000", "1.00000000"),
            ],
        },
        Row {
            name: "STP EXPIRE_MAKER expires the resting order and keeps matching",
            resting: vec![(TAKER, limit(0, Sell, "100", "1", Gtc)), ask("101", "1")],
            order: (TAKER, stp(limit(0, Buy, "101", "1", Gtc), StpMode::ExpireMaker)),
            outcome: Ok((Filled, "1.00000000", "101.00000000")),
            fills: &[("101.00000000", "1.00000000")],
            balances: &[(TAKER, "BTC", "10.99800000", "0.00000000")],
        },
        Row {
            name: "STP EXPIRE_BOTH expires both orders",
            resting: vec![(TAKER, limit(0, Sell, "100", "1", Gtc))],
            order: (TAKER, stp(limit(0, Buy, "100", "1", Gtc), StpMode::ExpireBoth)),
            outcome: Ok((ExpiredInMatch, "0.00000000", "0.00000000")),
            fills: &[],
            balances: &[
                (TAKER, "BTC", "10.00000000", "0.00000000"),
                (TAKER, "USDT", "100000.00000000", "0.00000000"),
            ],
        },
        Row {
            name: "STP NONE lets a user trade with itself and pay both fees",
            resting: vec![(TAKER, limit(0, Sell, "100", "1", Gtc))],
            order: (TAKER, limit(0, Buy, "100", "1", Gtc)),
            outcome: Ok((Filled, "1.00000000", "100.00000000")),
            fills: &[("100.00000000", "1.00000000")],
            balances: &[
                (TAKER, "BTC", "9.99800000", "0.00000000"),
                (TAKER, "USDT", "99999.90000000", "0.00000000"),
            ],
        },
        Row {
            name: "STOP_LOSS sell is held until the last price falls to it",
            resting: vec![
                bid("99", "1"),
                bid("95", "2"),
                (
                    MAKER,
                    stop(market(Sell, OrderQty::Base(q("1"))), OrderType::StopLoss, "99"),
                ),
            ],
            order: (TAKER, limit(0, Sell, "99", "1", Gtc)),
            outcome: Ok((Filled, "1.00000000", "99.00000000")),
            fills: &[("99.00000000", "1.00000000"), ("95.00000000", "1.00000000")],
            balances: &[(MAKER, "BTC", "10.99800000", "0.00000000")],
        },
        Row {
            name: "TAKE_PROFIT_LIMIT buy that would trigger immediately is rejected",
            resting: vec![ask("100", "1"), (TAKER, limit(0, Buy, "100", "1", Gtc))],
            order: (
                TAKER,
                stop(limit(0, Buy, "100", "1", Gtc), OrderType::TakeProfitLimit, "100"),
            ),
            outcome: Err(EngineError::WouldTrigger),
            fills: &[],
            balances: &[(TAKER, "USDT", "99900.00000000", "0.00000000")],
        },
        Row {
            name: "price off the tick fails PRICE_FILTER",
            resting: vec![],
            order: (TAKER, limit(0, Buy, "100.001", "1", Gtc)),
            outcome: Err(EngineError::PriceFilter),
            fills: &[],
            balances: &[],
        },
        Row {
            name: "quantity off the step fails LOT_SIZE",
            resting: vec![],
            order: (TAKER, limit(0, Buy, "100", "1.0001", Gtc)),
            outcome: Err(EngineError::LotSize),
            fills: &[],
            balances: &[],
        },
        Row {
            name: "notional under the minimum fails NOTIONAL",
            resting: vec![],
            order: (TAKER, limit(0, Buy, "0.5", "1", Gtc)),
            outcome: Err(EngineError::Notional),
            fills: &[],
            balances: &[],
        },
        Row {
            name: "more than the free balance is refused",
            resting: vec![],
            order: (TAKER, limit(0, Buy, "100000", "1.001", Gtc)),
            outcome: Err(EngineError::InsufficientBalance),
            fills: &[],
            balances: &[(TAKER, "USDT", "100000.00000000", "0.00000000")],
        },
        Row {
            name: "a missing price is a mandatory parameter",
            resting: vec![],
            order: (
                TAKER,
                OrderRequest {
                    price: None,
                    ..limit(0, Buy, "1", "1", Gtc)
                },
            ),
            outcome: Err(EngineError::MandatoryParam(tradsys_engine::error::MISSING_PRICE)),
            fills: &[],
            balances: &[],
        },
    ]
}

#[test]
fn orders_match_their_tables() {
    for row in rows() {
        let mut f = Fixture::new();
        for (user, r) in &row.resting {
            let placed = f.place(*user, r);
            assert!(placed.is_ok(), "{}: resting {placed:?}", row.name);
        }
        let got = f.place(row.order.0, &row.order.1);
        let want = row.outcome.map(|(s, e, c)| (s, e.to_string(), c.to_string()));
        assert_eq!(got, want, "{}", row.name);
        let want_fills: Vec<(String, String)> = row.fills.iter().map(|(p, q)| (p.to_string(), q.to_string())).collect();
        assert_eq!(f.fills(), want_fills, "{}: fills", row.name);
        for (user, asset, free, locked) in row.balances {
            let want = (free.to_string(), locked.to_string());
            assert_eq!(f.balance(*user, asset), want, "{}: user {user} {asset}", row.name);
        }
    }
}

#[test]
fn open_orders_are_bounded_per_user_and_market() {
    let mut f = Fixture::new();
    for _ in 0..OPEN_ORDERS_PER_USER_MARKET_MAX {
        assert!(f.place(TAKER, &limit(0, Buy, "10", "1", Gtc)).is_ok());
    }
    assert_eq!(
        f.place(TAKER, &limit(0, Buy, "10", "1", Gtc)),
        Err(EngineError::MaxNumOrders)
    );
    assert!(
        f.place(TAKER, &limit(1, Buy, "10", "1", Gtc)).is_ok(),
        "another market has its own count"
    );
}

#[test]
fn open_stop_orders_are_bounded_per_user_and_market() {
    let mut f = Fixture::new();
    let stop = |market, kind| OrderRequest {
        kind,
        stop_price: Some(p("20")),
        ..limit(market, Buy, "10", "1", Gtc)
    };
    // Stop-limits and take-profit limits count together; a plain limit
    // order is not a stop.
    for i in 0..ALGO_ORDERS_PER_USER_MARKET_MAX {
        let kind = if i % 2 == 0 {
            OrderType::StopLossLimit
        } else {
            OrderType::TakeProfitLimit
        };
        assert!(f.place(TAKER, &stop(0, kind)).is_ok(), "stop {i}");
    }
    assert_eq!(
        f.place(TAKER, &stop(0, OrderType::StopLossLimit)),
        Err(EngineError::MaxNumAlgoOrders)
    );
    assert!(f.place(TAKER, &limit(0, Buy, "10", "1", Gtc)).is_ok());
    assert!(
        f.place(TAKER, &stop(1, OrderType::StopLossLimit)).is_ok(),
        "another market has its own count"
    );
}

#[test]
fn duplicate_client_order_id_is_refused_while_open() {
    let mut f = Fixture::new();
    let mut r = limit(0, Buy, "10", "1", Gtc);
    r.client_order_id = client("mine");
    assert!(f.place(TAKER, &r).is_ok());
    assert_eq!(f.place(TAKER, &r), Err(EngineError::DuplicateOrder));
}

#[test]
fn cancel_replace_follows_the_mode() {
    type Case = (
        bool,
        CancelReplaceMode,
        &'static str,
        Result<OrderStatus, i32>,
        Option<Result<OrderStatus, i32>>,
    );
    let cases: &[Case] = &[
        (true, CancelReplaceMode::StopOnFailure, "1", Ok(Canceled), Some(Ok(New))),
        (false, CancelReplaceMode::StopOnFailure, "1", Err(-2011), None),
        (false, CancelReplaceMode::AllowFailure, "1", Err(-2011), Some(Ok(New))),
        (
            true,
            CancelReplaceMode::AllowFailure,
            "1.0001",
            Ok(Canceled),
            Some(Err(-1013)),
        ),
    ];
    for &(exists, mode, qty, cancel, new) in cases {
        let mut f = Fixture::new();
        assert!(f.place(TAKER, &limit(0, Buy, "10", "1", Gtc)).is_ok());
        let target = OrderRef::Id(if exists { 1 } else { 99 });
        f.out.clear();
        f.exchange
            .cancel_replace(TAKER, target, mode, &limit(0, Buy, "11", qty, Gtc), 2, 2, &mut f.out);
        f.exchange.check_invariants();
        let answer = f.out.events.iter().find_map(|e| match e {
            AccountEvent::CancelReplaced { cancel, new, .. } => Some((*cancel, *new)),
            _ => None,
        });
        let (got_cancel, got_new) = answer.unwrap();
        assert_eq!(got_cancel.map(|v| v.status).map_err(|e| e.code()), cancel);
        let got_new = match got_new {
            NewOrderResult::Success(v) => Some(Ok(v.status)),
            NewOrderResult::Failure(e) => Some(Err(e.code())),
            NewOrderResult::NotAttempted => None,
        };
        assert_eq!(got_new, new, "{mode:?} exists={exists}");
    }
}

#[test]
fn queries_answer_what_the_server_needs() {
    let mut f = Fixture::new();
    assert!(f.place(MAKER, &limit(0, Sell, "100", "2", Gtc)).is_ok());
    assert!(f.place(TAKER, &limit(0, Buy, "100", "1", Gtc)).is_ok());
    let book = &f.exchange.books[0];
    let (mut bids, mut asks) = (Vec::new(), Vec::new());
    let update_id = book.depth(5, &mut bids, &mut asks);
    assert_eq!(asks, vec![(p("100"), q("1"))]);
    assert!(bids.is_empty() && update_id == 2);
    assert_eq!(book.last_price(), Some(p("100")));
    assert_eq!(book.trades_count(), 1);
    let accounts = f.exchange.account(TAKER);
    let view = accounts.order(TAKER, MarketId(0), OrderRef::Id(2)).unwrap();
    assert_eq!((view.status, view.executed_qty), (Filled, q("1")));
    let trades: Vec<_> = accounts.trades(TAKER).copied().collect();
    assert_eq!(trades.len(), 1);
    assert_eq!(
        (trades[0].commission, trades[0].is_buyer, trades[0].is_maker),
        (a("0.002"), true, false)
    );
    let mut open = Vec::new();
    f.exchange.account(MAKER).open_orders(MAKER, MarketId(0), &mut open);
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].status, PartiallyFilled);
    assert_eq!(
        accounts.order(TAKER, MarketId(0), OrderRef::Id(42)),
        Err(EngineError::NoSuchOrder)
    );
}

#[test]
fn withdrawals_never_exceed_free() {
    let mut f = Fixture::new();
    let usdt = f.exchange.asset_id("USDT").unwrap();
    assert!(f.place(TAKER, &limit(0, Buy, "100", "1", Gtc)).is_ok());
    assert_eq!(
        f.exchange.withdraw(TAKER, usdt, a("99900.00000001")),
        Err(EngineError::InsufficientBalance)
    );
    assert_eq!(f.exchange.withdraw(TAKER, usdt, a("99900")), Ok(()));
    assert_eq!(f.exchange.withdraw(TAKER, usdt, Amount(0)), Err(EngineError::BadAmount));
    f.exchange.check_invariants();
}
