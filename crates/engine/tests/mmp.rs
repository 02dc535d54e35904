//! Market maker protection by table: fills within the window add up; past
//! the quantity or the delta limit every order of the user in the market
//! is canceled and new ones are refused while frozen; a new window starts
//! after the window; a reset thaws.

mod common;

use common::{limit, q, Fixture, MAKER, TAKER};
use tradsys_engine::account::{AccountEvent, MmpConfig};
use tradsys_engine::order::{MarketId, OrderRequest, OrderStatus};
use tradsys_engine::order::{Side, TimeInForce};
use tradsys_engine::EngineError;

use Side::{Buy, Sell};
use TimeInForce::Gtc;

const BTCUSDT: MarketId = MarketId(0);

impl Fixture {
    /// Places an order at time `time`; its id, or the refusal.
    fn place(&mut self, user: u64, request: &OrderRequest, time: u64) -> Result<u64, EngineError> {
        let id = self.next_id;
        self.next_id += 1;
        self.out.clear();
        self.exchange.place(user, request, id, time, &mut self.out)?;
        self.exchange.check_invariants();
        Ok(id)
    }

    /// The protection events and the cancels the last operation caused.
    fn fired(&self) -> (Vec<(u64, u64)>, Vec<u64>) {
        let mut fired = Vec::new();
        let mut canceled = Vec::new();
        for event in &self.out.events {
            match event {
                AccountEvent::MmpTriggered {
                    user, frozen_until_ms, ..
                } => fired.push((*user, *frozen_until_ms)),
                AccountEvent::Canceled { order_id, result }
                    if result.is_ok_and(|v| v.status == OrderStatus::Canceled) =>
                {
                    canceled.push(*order_id)
                }
                _ => {}
            }
        }
        (fired, canceled)
    }
}

fn protect(f: &mut Fixture, user: u64, qty: &str, delta: &str) {
    let config = MmpConfig {
        window_ms: 100,
        frozen_ms: 1_000,
        qty_limit: q(qty),
        delta_limit: q(delta),
    };
    f.exchange.set_mmp(user, BTCUSDT, Some(config));
}

#[test]
fn fills_past_the_quantity_limit_cancel_everything_and_freeze() {
    let mut f = Fixture::new();
    protect(&mut f, MAKER, "1.5", "100");
    let bids: Vec<u64> = ["100", "99", "98"]
        .iter()
        .map(|price| f.place(MAKER, &limit(0, Buy, price, "1", Gtc), 10).expect("placed"))
        .collect();
    let ask = f.place(MAKER, &limit(0, Sell, "200", "1", Gtc), 10).expect("placed");
    // 1 then 1 more: the second fill takes the window past 1.5.
    f.place(TAKER, &limit(0, Sell, "99", "2", Gtc), 20).expect("placed");
    let (fired, canceled) = f.fired();
    assert_eq!(fired, [(MAKER, 1_020)]);
    // The bid at 98 and the ask were resting; those filled were not.
    assert_eq!(canceled, [bids[2], ask]);
    assert_eq!(f.exchange.books[0].open_orders_count(), 0);
    let refused = f.place(MAKER, &limit(0, Buy, "90", "1", Gtc), 500);
    assert_eq!(refused, Err(EngineError::MmpFrozen));
    assert_eq!(
        (EngineError::MmpFrozen.code(), EngineError::MmpFrozen.msg()),
        (
            -2010,
            "Market maker protection is frozen for this symbol; new orders are refused until it thaws or is reset."
        )
    );
    // Another market and another user are untouched; the freeze thaws.
    assert!(f.place(MAKER, &limit(1, Buy, "100", "1", Gtc), 500).is_ok());
    assert!(f.place(TAKER, &limit(0, Buy, "90", "1", Gtc), 500).is_ok());
    assert!(f.place(MAKER, &limit(0, Buy, "90", "1", Gtc), 1_020).is_ok());
}

#[test]
fn the_delta_limit_counts_buys_against_sells() {
    let mut f = Fixture::new();
    protect(&mut f, MAKER, "100", "1.5");
    // Bought 1, sold 1: delta 0, no matter the quantity.
    f.place(MAKER, &limit(0, Buy, "100", "1", Gtc), 10).expect("placed");
    f.place(TAKER, &limit(0, Sell, "100", "1", Gtc), 11).expect("placed");
    f.place(MAKER, &limit(0, Sell, "101", "1", Gtc), 12).expect("placed");
    f.place(TAKER, &limit(0, Buy, "101", "1", Gtc), 13).expect("placed");
    assert_eq!(f.fired().0, []);
    // Bought 2 in a row: delta 2 > 1.5.
    f.place(MAKER, &limit(0, Buy, "100", "2", Gtc), 14).expect("placed");
    f.place(TAKER, &limit(0, Sell, "100", "1", Gtc), 15).expect("placed");
    assert_eq!(f.fired().0, []);
    f.place(TAKER, &limit(0, Sell, "100", "1", Gtc), 16).expect("placed");
    assert_eq!(f.fired().0, [(MAKER, 1_016)]);
}

#[test]
fn a_new_window_starts_after_the_window_and_a_reset_thaws() {
    let mut f = Fixture::new();
    protect(&mut f, MAKER, "1.5", "100");
    f.place(MAKER, &limit(0, Buy, "100", "5", Gtc), 10).expect("placed");
    f.place(TAKER, &limit(0, Sell, "100", "1", Gtc), 20).expect("placed");
    // 100 ms later: a new window, 1 again.
    f.place(TAKER, &limit(0, Sell, "100", "1", Gtc), 120).expect("placed");
    assert_eq!(f.fired().0, []);
    f.place(TAKER, &limit(0, Sell, "100", "1", Gtc), 130).expect("placed");
    assert_eq!(f.fired().0, [(MAKER, 1_130)]);
    assert_eq!(
        f.place(MAKER, &limit(0, Buy, "90", "1", Gtc), 140),
        Err(EngineError::MmpFrozen)
    );
    f.exchange.reset_mmp(MAKER, BTCUSDT);
    assert!(f.place(MAKER, &limit(0, Buy, "90", "1", Gtc), 140).is_ok());
    let state = f.exchange.account(MAKER).mmp(MAKER, BTCUSDT).expect("a protection");
    assert_eq!((state.frozen_until_ms, state.qty, state.window_start_ms), (0, 0, None));
    f.exchange.set_mmp(MAKER, BTCUSDT, None);
    assert_eq!(f.exchange.account(MAKER).mmp(MAKER, BTCUSDT), None);
}
