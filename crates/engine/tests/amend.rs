//! Amend keep priority, by table: an order shrinks where it rests and keeps
//! its place in the queue at every position, unlocks exactly what it no
//! longer needs, and every refusal comes with Binance's code and message.
//! Balances are whole-unit strings in the test markets (BTCUSDT: maker
//! 0.1 %, taker 0.2 %).

mod common;

use common::{client, limit, p, q, Fixture, MAKER, TAKER};
use tradsys_engine::account::{AccountEvent, AmendRequest, Amendment, OrderRef, AMENDS_PER_ORDER_MAX};
use tradsys_engine::num::Qty;
use tradsys_engine::order::{ClientOrderId, MarketId, OrderStatus, OrderType, OrderView, Side, TimeInForce};
use tradsys_engine::{AmendReason, EngineError};

use OrderStatus::*;
use Side::{Buy, Sell};
use TimeInForce::Gtc;

const BTCUSDT: MarketId = MarketId(0);

impl Fixture {
    /// Amends order `id` of `user`; the amended order and its amendment.
    fn amend(
        &mut self,
        user: u64,
        id: u64,
        new_qty: &str,
        new_client: Option<ClientOrderId>,
    ) -> Result<(OrderView, Amendment), EngineError> {
        self.out.clear();
        let time = self.next_id;
        self.next_id += 1;
        let request = AmendRequest {
            market: BTCUSDT,
            target: OrderRef::Id(id),
            new_qty: q(new_qty),
            new_client_order_id: new_client,
        };
        self.exchange.amend(user, &request, time, &mut self.out)?;
        self.exchange.check_invariants();
        let answer = self.out.events.iter().find_map(|e| match e {
            AccountEvent::Amended { order_id, result } if *order_id == id => Some(*result),
            _ => None,
        });
        answer.unwrap_or_else(|| panic!("no answer to the amendment of {id}"))
    }
}

fn amended(result: Result<(OrderView, Amendment), EngineError>) -> (OrderStatus, String, String) {
    match result {
        Ok((view, _)) => (view.status, view.orig_qty.to_string(), view.executed_qty.to_string()),
        Err(e) => panic!("amendment refused: {e}"),
    }
}

fn s(text: &str) -> String {
    text.to_string()
}

/// Three bids of one level; the one at `position` shrinks from 2 to 1.
/// A sell of 3.5 then fills them in their old order: the amended one
/// kept its place.
#[test]
fn an_amended_order_keeps_its_place_at_every_position() {
    let table: [(usize, [&str; 3]); 3] = [
        (0, ["1.00000000", "2.00000000", "0.50000000"]),
        (1, ["2.00000000", "1.00000000", "0.50000000"]),
        (2, ["2.00000000", "1.50000000", ""]),
    ];
    for (position, filled) in table {
        let mut f = Fixture::new();
        let ids: Vec<u64> = (0..3)
            .map(|_| f.accept(MAKER, &limit(0, Buy, "100", "2", Gtc)))
            .collect();
        assert_eq!(
            amended(f.amend(MAKER, ids[position], "1", None)),
            (New, s("1.00000000"), s("0.00000000")),
            "position {position}"
        );
        f.accept(TAKER, &limit(0, Sell, "100", "3.5", Gtc));
        let want: Vec<(u64, String)> = ids
            .iter()
            .zip(filled)
            .filter(|(_, qty)| !qty.is_empty())
            .map(|(&id, qty)| (id, s(qty)))
            .collect();
        assert_eq!(f.maker_fills(), want, "position {position}");
    }
}

#[test]
fn an_amendment_unlocks_what_the_smaller_order_no_longer_needs() {
    let mut f = Fixture::new();
    let buy = f.accept(MAKER, &limit(0, Buy, "100", "2", Gtc));
    assert_eq!(f.balance(MAKER, "USDT"), (s("99800.00000000"), s("200.00000000")));
    let (view, amendment) = f.amend(MAKER, buy, "0.5", client("smaller")).expect("amended");
    assert_eq!(f.balance(MAKER, "USDT"), (s("99950.00000000"), s("50.00000000")));
    assert_eq!((view.orig_qty, view.client_order_id), (q("0.5"), client("smaller")));
    assert_eq!(
        (amendment.orig_qty, amendment.new_qty, amendment.new_client_order_id),
        (q("2"), q("0.5"), client("smaller"))
    );
    let sell = f.accept(MAKER, &limit(0, Sell, "200", "3", Gtc));
    f.amend(MAKER, sell, "1", None).expect("amended");
    assert_eq!(f.balance(MAKER, "BTC"), (s("9.00000000"), s("1.00000000")));
    // The book shows the smaller orders.
    let mut bids = Vec::new();
    let mut asks = Vec::new();
    f.exchange.books[0].depth(5, &mut bids, &mut asks);
    assert_eq!((bids, asks), (vec![(p("100"), q("0.5"))], vec![(p("200"), q("1"))]));
}

#[test]
fn a_partly_filled_order_shrinks_or_expires() {
    let mut f = Fixture::new();
    let buy = f.accept(MAKER, &limit(0, Buy, "100", "3", Gtc));
    f.accept(TAKER, &limit(0, Sell, "100", "1", Gtc));
    assert_eq!(
        amended(f.amend(MAKER, buy, "2", None)),
        (PartiallyFilled, s("2.00000000"), s("1.00000000"))
    );
    assert_eq!(f.balance(MAKER, "USDT").1, s("100.00000000"));
    // Down to what it executed: nothing is left to rest.
    assert_eq!(
        amended(f.amend(MAKER, buy, "1", None)),
        (Expired, s("1.00000000"), s("1.00000000"))
    );
    assert_eq!(f.balance(MAKER, "USDT"), (s("99900.00000000"), s("0.00000000")));
    assert_eq!(
        f.amend(MAKER, buy, "0.5", None).map(drop),
        Err(EngineError::AmendRejected(AmendReason::UnknownOrder))
    );
    assert_eq!(f.exchange.books[0].open_orders_count(), 0);
}

#[test]
fn held_stops_shrink_with_their_budget() {
    let mut f = Fixture::new();
    // A trade sets the last price at 100.
    f.accept(MAKER, &limit(0, Sell, "100", "0.1", Gtc));
    f.accept(TAKER, &limit(0, Buy, "100", "0.1", Gtc));
    let mut stop_buy = limit(0, Buy, "100", "2", Gtc);
    stop_buy.kind = OrderType::StopLoss;
    stop_buy.price = None;
    stop_buy.time_in_force = None;
    stop_buy.stop_price = Some(p("150"));
    let stop = f.accept(TAKER, &stop_buy);
    // 2 at the stop price 150 with 5 % protection: 315.
    assert_eq!(f.balance(TAKER, "USDT").1, s("315.00000000"));
    assert_eq!(
        amended(f.amend(TAKER, stop, "1", None)),
        (New, s("1.00000000"), s("0.00000000"))
    );
    assert_eq!(f.balance(TAKER, "USDT").1, s("157.50000000"));
    // Fired by a trade at 150, it buys only the amended quantity.
    let ask = f.accept(MAKER, &limit(0, Sell, "150", "3", Gtc));
    f.accept(TAKER, &limit(0, Buy, "150", "0.5", Gtc));
    assert_eq!(f.maker_fills(), [(ask, s("0.50000000")), (ask, s("1.00000000"))]);
    assert_eq!(f.balance(TAKER, "USDT").1, s("0.00000000"));
}

#[test]
fn refusals_carry_binance_codes_and_leave_the_order_alone() {
    let mut f = Fixture::new();
    let buy = f.accept(MAKER, &limit(0, Buy, "100", "2", Gtc));
    let other = f.accept(MAKER, &{
        let mut r = limit(0, Buy, "90", "1", Gtc);
        r.client_order_id = client("taken");
        r
    });
    let rejected = |reason| Err(EngineError::AmendRejected(reason));
    type Case = (
        &'static str,
        u64,
        u64,
        &'static str,
        Option<ClientOrderId>,
        Result<(), EngineError>,
    );
    let table: [Case; 7] = [
        ("larger", MAKER, buy, "3", None, rejected(AmendReason::QtyIncrease)),
        ("the same", MAKER, buy, "2", None, rejected(AmendReason::NoChange)),
        ("unknown", MAKER, 999, "1", None, rejected(AmendReason::UnknownOrder)),
        ("off step", MAKER, buy, "1.0001", None, Err(EngineError::LotSize)),
        (
            "below min notional",
            MAKER,
            buy,
            "0.001",
            None,
            Err(EngineError::Notional),
        ),
        (
            "a taken client id",
            MAKER,
            buy,
            "1",
            client("taken"),
            rejected(AmendReason::Duplicate),
        ),
        (
            "another user's",
            TAKER,
            other,
            "0.5",
            None,
            rejected(AmendReason::UnknownOrder),
        ),
    ];
    for (name, user, id, new_qty, new_client, want) in table {
        assert_eq!(f.amend(user, id, new_qty, new_client).map(drop), want, "{name}");
    }
    assert_eq!(f.balance(MAKER, "USDT"), (s("99710.00000000"), s("290.00000000")));
    for (code, msg) in [
        (
            EngineError::AmendRejected(AmendReason::QtyIncrease),
            "Order amend (quantity increase) is not supported.",
        ),
        (
            EngineError::AmendRejected(AmendReason::NoChange),
            "The requested action would change no state; rejecting",
        ),
        (
            EngineError::AmendRejected(AmendReason::TooMany),
            "Filter failure: MAX_NUM_ORDER_AMENDS",
        ),
    ] {
        assert_eq!((code.code(), code.msg()), (-2038, msg));
    }
}

#[test]
fn an_order_takes_ten_amendments_and_lists_them() {
    let mut f = Fixture::new();
    let buy = f.accept(MAKER, &limit(0, Buy, "100", "20", Gtc));
    for n in 0..AMENDS_PER_ORDER_MAX {
        let qty = format!("{}", 19 - u32::from(n));
        let name = ClientOrderId::new(&format!("amend-{n}"));
        f.amend(MAKER, buy, &qty, name).expect("amended");
    }
    assert_eq!(
        f.amend(MAKER, buy, "1", None).map(drop),
        Err(EngineError::AmendRejected(AmendReason::TooMany))
    );
    let list = f.exchange.account(MAKER).amendments(MAKER, buy);
    assert_eq!(list.len(), 10);
    let first = list[0];
    assert_eq!(
        (
            first.orig_qty,
            first.new_qty,
            first.orig_client_order_id,
            first.new_client_order_id
        ),
        (q("20"), q("19"), None, client("amend-0"))
    );
    assert_eq!(list[9].new_qty, Qty(q("10").0));
    assert_eq!(list[9].orig_client_order_id, client("amend-8"));
    let ids: Vec<u64> = list.iter().map(|a| a.execution_id).collect();
    assert_eq!(ids, (1..=10).map(|n| buy * 16 + n).collect::<Vec<u64>>());
}
