//! Order lists (OCO, OTO, OTOCO) by table: each leg outcome with exact
//! statuses and balances (filled, partly filled, triggered, canceled,
//! expired by STP, rejected), the shared lock of an OCO pair, the pending
//! orders of OTO and OTOCO placed when the working order fills, cancels
//! of a list, of a leg and of all open orders, and every refusal with
//! Binance's code and message. Lists belong to a third user; the maker
//! and the taker make the market.

mod common;

use common::{client, limit, p, q, Fixture, MAKER, TAKER, THIRD as OWNER};
use tradsys_engine::account::{AccountEvent, ListRef, OrderRef};
use tradsys_engine::order::{ClientOrderId, ListKind, ListOrderStatus, ListRequest, ListStatusType, MarketId};
use tradsys_engine::order::{OrderListView, OrderRequest, OrderStatus, OrderType, Side, TimeInForce};
use tradsys_engine::EngineError;

use OrderStatus::{Canceled, Expired, Filled, New, PartiallyFilled, PendingNew};
use OrderType::{LimitMaker, StopLoss, StopLossLimit, TakeProfit};
use Side::{Buy, Sell};
use TimeInForce::{Gtc, Ioc};

const BTCUSDT: MarketId = MarketId(0);

fn order(kind: OrderType, side: Side, price: Option<&str>, stop: Option<&str>, qty: &str) -> OrderRequest {
    OrderRequest {
        kind,
        price: price.map(p),
        stop_price: stop.map(p),
        time_in_force: matches!(kind, OrderType::Limit | StopLossLimit | OrderType::TakeProfitLimit).then_some(Gtc),
        ..limit(0, side, "1", qty, Gtc)
    }
}

/// A free and a locked amount as `Fixture::balance` prints them.
fn amounts(free: &str, locked: &str) -> (String, String) {
    let print = |text| tradsys_engine::num::Amount::parse(text).unwrap().to_string();
    (print(free), print(locked))
}

fn list(kind: ListKind, orders: &[OrderRequest]) -> ListRequest {
    let mut all = [orders[0]; 3];
    all[..orders.len()].copy_from_slice(orders);
    ListRequest {
        kind,
        list_client_order_id: ClientOrderId::new("my-list").unwrap(),
        orders: all,
    }
}

impl Fixture {
    /// Sets the last price with one trade of 0.01 between the maker and
    /// the taker.
    fn last_price(&mut self, price: &str) {
        self.accept(MAKER, &limit(0, Sell, price, "0.01", Gtc));
        self.accept(TAKER, &limit(0, Buy, price, "0.01", Ioc));
    }

    /// Places a list for the owner under the next ids; its id, or the
    /// refusal (synchronous, or the book's).
    fn submit_list(&mut self, request: &ListRequest) -> Result<u64, EngineError> {
        let ids = [self.next_id, self.next_id + 1, self.next_id + 2];
        self.next_id += 3;
        self.out.clear();
        self.exchange.place_list(OWNER, request, ids, ids[0], &mut self.out)?;
        self.exchange.check_invariants();
        let placed = self.out.events.iter().find_map(|e| match e {
            AccountEvent::ListPlaced { order_list_id, result } if *order_list_id == ids[0] => Some(*result),
            _ => None,
        });
        match placed {
            Some(Ok(view)) => {
                assert_eq!(view.status_type, ListStatusType::ExecStarted);
                Ok(ids[0])
            }
            Some(Err(e)) => Err(e),
            None => panic!("list {} got no answer", ids[0]),
        }
    }

    fn accept_list(&mut self, request: &ListRequest) -> u64 {
        self.submit_list(request)
            .unwrap_or_else(|e| panic!("list refused: {e}"))
    }

    fn status(&self, id: u64) -> OrderStatus {
        let view = self.exchange.account(OWNER).order(OWNER, BTCUSDT, OrderRef::Id(id));
        view.unwrap_or_else(|e| panic!("order {id}: {e}")).status
    }

    fn statuses(&self, ids: &[u64]) -> Vec<OrderStatus> {
        ids.iter().map(|&id| self.status(id)).collect()
    }

    fn list_view(&self, id: u64) -> OrderListView {
        let view = self.exchange.account(OWNER).order_list(OWNER, ListRef::Id(id));
        view.unwrap_or_else(|e| panic!("list {id}: {e}"))
    }

    /// The answer of the last operation's cancel-replace.
    fn replaced(
        &self,
    ) -> (
        Result<tradsys_engine::order::OrderView, EngineError>,
        tradsys_engine::account::NewOrderResult,
    ) {
        let replaced = self.out.events.iter().find_map(|e| match e {
            AccountEvent::CancelReplaced { cancel, new, .. } => Some((*cancel, *new)),
            _ => None,
        });
        replaced.expect("the cancel-replace is answered")
    }

    fn list_done(&self, id: u64) -> bool {
        let view = self.list_view(id);
        (view.status_type, view.order_status) == (ListStatusType::AllDone, ListOrderStatus::AllDone)
    }
}

/// A sell OCO locks its quantity once; a buy against its LIMIT_MAKER
/// fills it and expires the stop.
#[test]
fn a_sell_oco_locks_once_and_its_limit_maker_filling_expires_the_stop() {
    let mut f = Fixture::with_third();
    f.last_price("30000");
    let above = order(LimitMaker, Sell, Some("31000"), None, "0.5");
    let below = order(StopLoss, Sell, None, Some("29000"), "0.5");
    let id = f.accept_list(&list(ListKind::Oco, &[above, below]));
    assert_eq!(f.balance(OWNER, "BTC"), amounts("9.5", "0.5"));
    assert_eq!(f.statuses(&[id, id + 1]), [New, New]);
    let view = f.list_view(id);
    assert_eq!(view.order_ids(), &[id, id + 1]);
    assert_eq!(view.kind.contingency().as_str(), "OCO");
    let mut depth = (Vec::new(), Vec::new());
    f.exchange.books[0].depth(5, &mut depth.0, &mut depth.1);
    assert_eq!(depth.1, [(p("31000"), q("0.5"))]);

    f.accept(TAKER, &limit(0, Buy, "31000", "0.2", Ioc));
    assert_eq!(f.maker_fills(), [(id, q("0.2").to_string())]);
    assert_eq!(f.statuses(&[id, id + 1]), [PartiallyFilled, Expired]);
    assert!(!f.list_done(id));
    // 0.2 × 31,000 = 6,200 less the 0.1 % maker fee.
    assert_eq!(f.balance(OWNER, "BTC"), amounts("9.5", "0.3"));
    assert_eq!(f.balance(OWNER, "USDT"), amounts("106193.8", "0"));
    f.accept(TAKER, &limit(0, Buy, "31000", "0.3", Ioc));
    assert_eq!(f.statuses(&[id, id + 1]), [Filled, Expired]);
    assert!(f.list_done(id));
    assert_eq!(f.balance(OWNER, "BTC"), amounts("9.5", "0"));
    assert_eq!(f.balance(OWNER, "USDT"), amounts("115484.5", "0"));
    let done = f
        .out
        .events
        .iter()
        .any(|e| matches!(e, AccountEvent::ListStatus(v) if v.order_status == ListOrderStatus::AllDone));
    assert!(done, "a listStatus ALL_DONE event");
}

/// The stop of a sell OCO fires: the LIMIT_MAKER leaves the book,
/// EXPIRED, and the stop sells into the bid with the pair's lock.
#[test]
fn a_sell_oco_whose_stop_fires_expires_its_limit_maker() {
    let mut f = Fixture::with_third();
    f.last_price("30000");
    let above = order(LimitMaker, Sell, Some("31000"), None, "0.5");
    let below = order(StopLossLimit, Sell, Some("28900"), Some("29000"), "0.5");
    let id = f.accept_list(&list(ListKind::Oco, &[above, below]));
    f.accept(MAKER, &limit(0, Buy, "28950", "1", Gtc));
    f.last_price("29000");
    assert_eq!(f.statuses(&[id, id + 1]), [Expired, Filled]);
    assert!(f.list_done(id));
    let mut depth = (Vec::new(), Vec::new());
    f.exchange.books[0].depth(5, &mut depth.0, &mut depth.1);
    assert_eq!(depth.1, Vec::new(), "the LIMIT_MAKER left the asks");
    // 0.5 sold at 28,950 = 14,475 less the 0.2 % taker fee (28.95).
    assert_eq!(f.balance(OWNER, "BTC"), amounts("9.5", "0"));
    assert_eq!(f.balance(OWNER, "USDT"), amounts("114446.05", "0"));
}

/// A buy OCO locks the larger of its legs' needs once; canceling the
/// list cancels both and unlocks it all.
#[test]
fn a_buy_oco_locks_the_larger_leg_and_a_list_cancel_ends_both() {
    let mut f = Fixture::with_third();
    f.last_price("30000");
    // LIMIT_MAKER: 0.1 × 29,000 = 2,900; stop-limit: 0.1 × 31,500 = 3,150.
    let above = order(StopLossLimit, Buy, Some("31500"), Some("31000"), "0.1");
    let below = order(LimitMaker, Buy, Some("29000"), None, "0.1");
    let id = f.accept_list(&list(ListKind::Oco, &[above, below]));
    assert_eq!(f.balance(OWNER, "USDT"), amounts("96850", "3150"));
    f.out.clear();
    f.exchange
        .cancel_list(
            OWNER,
            BTCUSDT,
            ListRef::Client(ClientOrderId::new("my-list").unwrap()),
            99,
            &mut f.out,
        )
        .unwrap();
    f.exchange.check_invariants();
    let answer = f.out.events.iter().find_map(|e| match e {
        AccountEvent::ListCanceled { result, .. } => Some(*result),
        _ => None,
    });
    let view = answer.expect("a cancel answer").expect("canceled");
    assert_eq!(view.order_status, ListOrderStatus::AllDone);
    assert_eq!(f.statuses(&[id, id + 1]), [Canceled, Canceled]);
    assert_eq!(f.balance(OWNER, "USDT"), amounts("100000", "0"));
    assert_eq!(f.exchange.books[0].open_orders_count(), 0);
}

/// Canceling one leg of an OCO cancels the other.
#[test]
fn canceling_one_leg_of_an_oco_cancels_the_list() {
    let mut f = Fixture::with_third();
    f.last_price("30000");
    let above = order(TakeProfit, Sell, None, Some("32000"), "0.5");
    let below = order(StopLoss, Sell, None, Some("29000"), "0.5");
    let id = f.accept_list(&list(ListKind::Oco, &[above, below]));
    assert_eq!(f.balance(OWNER, "BTC"), amounts("9.5", "0.5"));
    f.out.clear();
    f.exchange
        .cancel(OWNER, BTCUSDT, OrderRef::Id(id + 1), 50, &mut f.out)
        .unwrap();
    f.exchange.check_invariants();
    assert_eq!(f.statuses(&[id, id + 1]), [Canceled, Canceled]);
    assert!(f.list_done(id));
    assert_eq!(f.balance(OWNER, "BTC"), amounts("10", "0"));
}

/// A maker's order of an OCO expired by the taker's self-trade
/// prevention takes its partner with it.
#[test]
fn an_oco_leg_expired_by_stp_expires_its_partner() {
    let mut f = Fixture::with_third();
    f.last_price("30000");
    let above = order(LimitMaker, Sell, Some("31000"), None, "0.5");
    let below = order(StopLoss, Sell, None, Some("29000"), "0.5");
    let id = f.accept_list(&list(ListKind::Oco, &[above, below]));
    let taker = OrderRequest {
        stp: tradsys_engine::order::StpMode::ExpireMaker,
        ..limit(0, Buy, "31000", "0.1", Ioc)
    };
    f.accept(OWNER, &taker);
    assert_eq!(f.statuses(&[id, id + 1]), [OrderStatus::ExpiredInMatch, Expired]);
    assert!(f.list_done(id));
    assert_eq!(f.balance(OWNER, "BTC"), amounts("10", "0"));
}

/// The book refuses a pair that does not straddle the last price: both
/// orders are rejected and nothing stays locked.
#[test]
fn an_oco_that_does_not_straddle_the_last_price_is_refused_whole() {
    let mut f = Fixture::with_third();
    f.last_price("30000");
    let above = order(LimitMaker, Sell, Some("31000"), None, "0.5");
    let below = order(StopLoss, Sell, None, Some("30500"), "0.5");
    let refused = f.submit_list(&list(ListKind::Oco, &[above, below])).unwrap_err();
    assert_eq!(
        (refused.code(), refused.msg()),
        (-2010, "The relationship of the prices for the orders is not correct.")
    );
    assert_eq!(f.balance(OWNER, "BTC"), amounts("10", "0"));
    assert_eq!(f.exchange.books[0].open_orders_count(), 0);
    assert!(f.exchange.account(OWNER).open_order_lists(OWNER).is_empty());
    // A LIMIT_MAKER at or under the last price: the pair does not
    // straddle it either, even with no bid it would meet.
    let above = order(LimitMaker, Sell, Some("30000"), None, "0.5");
    let below = order(StopLoss, Sell, None, Some("29000"), "0.5");
    let refused = f.submit_list(&list(ListKind::Oco, &[above, below])).unwrap_err();
    assert_eq!(refused.code(), -2010);
    let above = order(StopLoss, Buy, None, Some("31000"), "0.5");
    let below = order(LimitMaker, Buy, Some("30000"), None, "0.5");
    let refused = f.submit_list(&list(ListKind::Oco, &[above, below])).unwrap_err();
    assert_eq!(
        refused.msg(),
        "The relationship of the prices for the orders is not correct."
    );
    assert_eq!(f.balance(OWNER, "USDT"), amounts("100000", "0"));
}

/// Binance's refusals of an OCO's shape, with their codes and messages.
#[test]
fn oco_shapes_binance_refuses() {
    let mut f = Fixture::with_third();
    f.last_price("30000");
    let lm = |side, price| order(LimitMaker, side, Some(price), None, "0.5");
    let sl = |side, stop| order(StopLoss, side, None, Some(stop), "0.5");
    let tp = |side, stop| order(TakeProfit, side, None, Some(stop), "0.5");
    let cases: [(&str, OrderRequest, OrderRequest, i32, &str); 8] = [
        (
            "limit order",
            limit(0, Sell, "31000", "0.5", Gtc),
            sl(Sell, "29000"),
            -1158,
            "Order type not supported in OCO.",
        ),
        (
            "two LIMIT_MAKERs",
            lm(Sell, "31000"),
            lm(Sell, "30500"),
            -1168,
            "At least one OCO order must be contingent.",
        ),
        (
            "sell limit below",
            sl(Sell, "31000"),
            lm(Sell, "29000"),
            -1197,
            "A stop loss order in a sell OCO must be below.",
        ),
        (
            "sell take profit below",
            sl(Sell, "32000"),
            tp(Sell, "29000"),
            -1197,
            "A stop loss order in a sell OCO must be below.",
        ),
        (
            "buy limit above",
            lm(Buy, "31000"),
            sl(Buy, "29000"),
            -1165,
            "A limit order in a buy OCO must be below.",
        ),
        (
            "buy take profit above",
            tp(Buy, "31000"),
            sl(Buy, "29000"),
            -1198,
            "A take profit order in a buy OCO must be below.",
        ),
        (
            "sell above under below",
            lm(Sell, "29000"),
            sl(Sell, "29500"),
            -2010,
            "The relationship of the prices for the orders is not correct.",
        ),
        (
            "sides differ",
            lm(Sell, "31000"),
            sl(Buy, "29000"),
            -1158,
            "Order type not supported in OCO.",
        ),
    ];
    for (case, above, below, code, msg) in cases {
        let refused = f.submit_list(&list(ListKind::Oco, &[above, below])).unwrap_err();
        assert_eq!((refused.code(), refused.msg()), (code, msg), "{case}");
    }
    assert_eq!(f.balance(OWNER, "BTC"), amounts("10", "0"));
}

/// An OTO's pending order waits, locking nothing, until the working
/// order has filled completely; then it is locked and placed.
#[test]
fn an_oto_places_its_pending_order_when_the_working_order_fills() {
    let mut f = Fixture::with_third();
    let working = limit(0, Buy, "30000", "0.1", Gtc);
    let pending = order(OrderType::Limit, Sell, Some("33000"), None, "0.1");
    let id = f.accept_list(&list(ListKind::Oto, &[working, pending]));
    assert_eq!(f.statuses(&[id, id + 1]), [New, PendingNew]);
    assert_eq!(f.balance(OWNER, "USDT"), amounts("97000", "3000"));
    assert_eq!(f.balance(OWNER, "BTC"), amounts("10", "0"));
    f.accept(MAKER, &limit(0, Sell, "30000", "0.04", Ioc));
    assert_eq!(f.statuses(&[id, id + 1]), [PartiallyFilled, PendingNew]);
    f.accept(MAKER, &limit(0, Sell, "30000", "0.06", Ioc));
    assert_eq!(f.statuses(&[id, id + 1]), [Filled, New]);
    // Bought 0.1 less the 0.1 % maker fee; the pending sell locks 0.1.
    assert_eq!(f.balance(OWNER, "BTC"), amounts("9.9999", "0.1"));
    assert_eq!(f.balance(OWNER, "USDT"), amounts("97000", "0"));
    assert!(!f.list_done(id));
    f.accept(TAKER, &limit(0, Buy, "33000", "0.1", Ioc));
    assert_eq!(f.statuses(&[id, id + 1]), [Filled, Filled]);
    assert!(f.list_done(id));
    assert_eq!(f.balance(OWNER, "USDT"), amounts("100296.7", "0"));
}

/// Canceling an OTO's pending order cancels its working order.
#[test]
fn canceling_a_pending_order_cancels_the_oto() {
    let mut f = Fixture::with_third();
    let working = limit(0, Buy, "30000", "0.1", Gtc);
    let pending = order(StopLoss, Sell, None, Some("29000"), "0.1");
    let id = f.accept_list(&list(ListKind::Oto, &[working, pending]));
    f.out.clear();
    f.exchange
        .cancel(OWNER, BTCUSDT, OrderRef::Id(id + 1), 9, &mut f.out)
        .unwrap();
    f.exchange.check_invariants();
    assert_eq!(f.statuses(&[id, id + 1]), [Canceled, Canceled]);
    assert!(f.list_done(id));
    let answered = f
        .out
        .events
        .iter()
        .any(|e| matches!(e, AccountEvent::Canceled { order_id, result: Ok(_) } if *order_id == id + 1));
    assert!(answered, "the pending order's cancel is answered");
    assert_eq!(f.balance(OWNER, "USDT"), amounts("100000", "0"));
}

/// An OTO whose working order expires expires its pending order.
#[test]
fn an_oto_whose_working_order_expires_expires_the_pending_order() {
    let mut f = Fixture::with_third();
    f.last_price("30000");
    // A LIMIT_MAKER that would take is refused, and the list with it.
    let working = order(LimitMaker, Buy, Some("31000"), None, "0.1");
    let pending = order(OrderType::Limit, Sell, Some("33000"), None, "0.1");
    f.accept(MAKER, &limit(0, Sell, "30500", "1", Gtc));
    let refused = f.submit_list(&list(ListKind::Oto, &[working, pending])).unwrap_err();
    assert_eq!(refused, EngineError::WouldMatch);
    assert_eq!(f.balance(OWNER, "USDT"), amounts("100000", "0"));
    // A working IOC that meets nothing expires, and the pending with it.
    let working = limit(0, Buy, "29000", "0.1", Ioc);
    let id = f.accept_list(&list(ListKind::Oto, &[working, pending]));
    assert_eq!(f.statuses(&[id, id + 1]), [Expired, Expired]);
    assert!(f.list_done(id));
    assert_eq!(f.balance(OWNER, "USDT"), amounts("100000", "0"));
}

/// An OTOCO: the working buy fills, the pending OCO pair goes on the
/// book sharing one lock, its take-profit fills and expires its stop.
#[test]
fn an_otoco_places_its_pair_and_the_pair_cancels_itself() {
    let mut f = Fixture::with_third();
    f.last_price("30000");
    let working = limit(0, Buy, "30000", "0.1", Gtc);
    let above = order(LimitMaker, Sell, Some("32000"), None, "0.1");
    let below = order(StopLossLimit, Sell, Some("27900"), Some("28000"), "0.1");
    let id = f.accept_list(&list(ListKind::Otoco, &[working, above, below]));
    assert_eq!(f.statuses(&[id, id + 1, id + 2]), [New, PendingNew, PendingNew]);
    f.accept(MAKER, &limit(0, Sell, "30000", "0.1", Ioc));
    assert_eq!(f.statuses(&[id, id + 1, id + 2]), [Filled, New, New]);
    assert_eq!(f.balance(OWNER, "BTC"), amounts("9.9999", "0.1"));
    f.accept(TAKER, &limit(0, Buy, "32000", "0.1", Ioc));
    assert_eq!(f.statuses(&[id, id + 1, id + 2]), [Filled, Filled, Expired]);
    assert!(f.list_done(id));
    assert_eq!(f.balance(OWNER, "BTC"), amounts("9.9999", "0"));
    // −3,000 for the buy, +3,200 − 3.2 maker fee for the sell.
    assert_eq!(f.balance(OWNER, "USDT"), amounts("100196.8", "0"));
}

/// DELETE openOrders cancels every order of every list: one answer per
/// open order, pending ones included.
#[test]
fn cancel_all_answers_for_every_order_of_every_list() {
    let mut f = Fixture::with_third();
    f.last_price("30000");
    let oco = f.accept_list(&list(
        ListKind::Oco,
        &[
            order(LimitMaker, Sell, Some("31000"), None, "0.5"),
            order(StopLoss, Sell, None, Some("29000"), "0.5"),
        ],
    ));
    let mut otoco = list(
        ListKind::Otoco,
        &[
            limit(0, Buy, "29500", "0.1", Gtc),
            order(LimitMaker, Sell, Some("32000"), None, "0.1"),
            order(StopLoss, Sell, None, Some("28000"), "0.1"),
        ],
    );
    otoco.list_client_order_id = ClientOrderId::new("second").unwrap();
    let oto = f.accept_list(&otoco);
    let plain = f.accept(OWNER, &limit(0, Buy, "29000", "0.1", Gtc));
    f.out.clear();
    let count = f.exchange.cancel_all(OWNER, BTCUSDT, 77, &mut f.out);
    f.exchange.check_invariants();
    assert_eq!(count, 6);
    let canceled: Vec<u64> = f
        .out
        .events
        .iter()
        .filter_map(|e| match e {
            AccountEvent::Canceled {
                order_id,
                result: Ok(_),
            } => Some(*order_id),
            _ => None,
        })
        .collect();
    assert_eq!(canceled.len(), 6, "{canceled:?}");
    for id in [oco, oco + 1, oto, oto + 1, oto + 2, plain] {
        assert_eq!(f.status(id), Canceled, "order {id}");
    }
    assert!(f.list_done(oco) && f.list_done(oto));
    assert_eq!(f.balance(OWNER, "BTC"), amounts("10", "0"));
    assert_eq!(f.balance(OWNER, "USDT"), amounts("100000", "0"));
}

/// Orders of lists cannot be amended; lists count against
/// MAX_NUM_ORDERS with all their orders; a list's client id is unique
/// among the user's open lists.
#[test]
fn list_limits_and_refusals() {
    let mut f = Fixture::with_third();
    f.last_price("30000");
    let pair = [
        order(LimitMaker, Sell, Some("31000"), None, "0.01"),
        order(StopLoss, Sell, None, Some("29000"), "0.01"),
    ];
    let id = f.accept_list(&list(ListKind::Oco, &pair));
    let again = f.submit_list(&list(ListKind::Oco, &pair)).unwrap_err();
    assert_eq!((again.code(), again.msg()), (-2010, "Duplicate order sent."));
    let amend = tradsys_engine::account::AmendRequest {
        market: BTCUSDT,
        target: OrderRef::Id(id),
        new_qty: q("0.005"),
        new_client_order_id: None,
    };
    f.out.clear();
    let refused = f.exchange.amend(OWNER, &amend, 5, &mut f.out).unwrap_err();
    assert_eq!(refused.code(), -2038);
    let mut named = list(ListKind::Oco, &pair);
    named.orders[0].client_order_id = client("same");
    named.orders[1].client_order_id = client("same");
    named.list_client_order_id = ClientOrderId::new("other").unwrap();
    assert_eq!(f.submit_list(&named).unwrap_err(), EngineError::DuplicateOrder);
    let working = limit(0, Buy, "30000", "0.1", Gtc);
    let bad = OrderRequest {
        qty: tradsys_engine::order::OrderQty::Quote(tradsys_engine::num::Amount::parse("10").unwrap()),
        ..order(OrderType::Market, Sell, None, None, "0.1")
    };
    let mut oto = list(ListKind::Oto, &[working, bad]);
    oto.list_client_order_id = ClientOrderId::new("oto").unwrap();
    assert_eq!(f.submit_list(&oto).unwrap_err().msg(), "Unsupported order combination");
    let mut oto = list(
        ListKind::Oto,
        &[order(StopLoss, Buy, None, Some("31000"), "0.1"), working],
    );
    oto.list_client_order_id = ClientOrderId::new("oto").unwrap();
    assert_eq!(f.submit_list(&oto).unwrap_err().code(), -2010);
}

/// A cancel-replace of a pending order cancels its OTO and places the
/// new order: the replace gets both answers.
#[test]
fn cancel_replace_of_a_pending_order_cancels_the_list_and_places_the_new_order() {
    let mut f = Fixture::with_third();
    let working = limit(0, Buy, "30000", "0.1", Gtc);
    let pending = order(OrderType::Limit, Sell, Some("33000"), None, "0.1");
    let id = f.accept_list(&list(ListKind::Oto, &[working, pending]));
    f.out.clear();
    let new = limit(0, Buy, "29000", "0.1", Gtc);
    let mode = tradsys_engine::order::CancelReplaceMode::StopOnFailure;
    f.exchange
        .cancel_replace(OWNER, OrderRef::Id(id + 1), mode, &new, 500, 9, &mut f.out);
    f.exchange.check_invariants();
    let (cancel, new) = f.replaced();
    assert_eq!(cancel.map(|v| v.status), Ok(Canceled));
    assert!(matches!(new, tradsys_engine::account::NewOrderResult::Success(v) if v.order_id == 500));
    assert_eq!(f.statuses(&[id, id + 1, 500]), [Canceled, Canceled, New]);
    assert!(f.list_done(id));
    assert_eq!(f.balance(OWNER, "USDT"), amounts("97100", "2900"));
}

/// A cancel-replace of one order of an OCO pair cancels the pair and the
/// new order may use everything the pair locked.
#[test]
fn cancel_replace_of_an_oco_order_frees_the_pairs_lock_for_the_new_order() {
    let mut f = Fixture::with_third();
    f.last_price("30000");
    let above = order(LimitMaker, Sell, Some("31000"), None, "10");
    let below = order(StopLoss, Sell, None, Some("29000"), "10");
    let id = f.accept_list(&list(ListKind::Oco, &[above, below]));
    assert_eq!(f.balance(OWNER, "BTC"), amounts("0", "10"));
    f.out.clear();
    let new = limit(0, Sell, "32000", "10", Gtc);
    let mode = tradsys_engine::order::CancelReplaceMode::StopOnFailure;
    f.exchange
        .cancel_replace(OWNER, OrderRef::Id(id), mode, &new, 600, 9, &mut f.out);
    f.exchange.check_invariants();
    let (cancel, new) = f.replaced();
    assert_eq!(cancel.map(|v| v.status), Ok(Canceled));
    assert!(
        matches!(new, tradsys_engine::account::NewOrderResult::Success(v) if v.order_id == 600),
        "{new:?}"
    );
    assert_eq!(f.statuses(&[id, id + 1, 600]), [Canceled, Canceled, New]);
    assert_eq!(f.balance(OWNER, "BTC"), amounts("0", "10"));
}

/// A protection that fires on a trade of an OCO order cancels whatever
/// of the user's orders is still on the book, the traded order included.
#[test]
fn market_maker_protection_fired_by_an_oco_order_cancels_it() {
    let mut f = Fixture::with_third();
    f.last_price("30000");
    let config = tradsys_engine::account::MmpConfig {
        window_ms: 1_000_000,
        frozen_ms: 0,
        qty_limit: q("0.1"),
        delta_limit: q("100"),
    };
    f.exchange.set_mmp(OWNER, BTCUSDT, Some(config));
    let above = order(StopLoss, Buy, None, Some("31000"), "0.5");
    let below = order(LimitMaker, Buy, Some("29000"), None, "0.5");
    let id = f.accept_list(&list(ListKind::Oco, &[above, below]));
    f.accept(TAKER, &limit(0, Sell, "29000", "0.2", Ioc));
    assert_eq!(f.statuses(&[id, id + 1]), [Expired, Canceled]);
    assert_eq!(f.exchange.books[0].open_orders_count(), 0);
    assert!(f.list_done(id));
    // 0.2 bought at 29,000; the rest unlocked.
    assert_eq!(f.balance(OWNER, "USDT"), amounts("94200", "0"));
}
