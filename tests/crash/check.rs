//! The checks a recovered (or live, at rest) state must pass against the
//! acknowledged history. Each returns the first mismatch with what the
//! history requires and what the server reported.

use crate::http::decimal;
use crate::model::{is_final, CancelState, Model, Placed, TransferState, MARKETS};
use crate::snapshot::{SeenOrder, SeenTrade, Snapshot};
use std::collections::BTreeMap;
use std::fmt::Debug;
use tradsys_engine::account::TRADES_PER_USER_MAX;

/// Unanswered transfers a user may have before trying every subset of
/// them stops being cheap; the harness leaves at most one per client
/// thread per crash.
const UNKNOWN_TRANSFERS_PER_USER_MAX: usize = 12;

/// The first difference found.
#[derive(Debug)]
pub struct Mismatch {
    pub check: &'static str,
    pub subject: String,
    pub expected: String,
    pub actual: String,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "check {}: {}\n  expected: {}\n  actual:   {}",
            self.check, self.subject, self.expected, self.actual
        )
    }
}

fn mismatch(check: &'static str, subject: String, expected: impl Debug, actual: impl Debug) -> Mismatch {
    Mismatch {
        check,
        subject,
        expected: format!("{expected:?}"),
        actual: format!("{actual:?}"),
    }
}

/// Runs every check; on success, how the unanswered transfers were
/// resolved (transfer index → applied), for `Model::absorb`.
pub fn check_all(model: &Model, snapshot: &Snapshot) -> Result<BTreeMap<usize, bool>, Mismatch> {
    check_orders(model, snapshot)?;
    check_trades(model, snapshot)?;
    check_conservation(model, snapshot)?;
    let resolved = check_balances(model, snapshot)?;
    check_locks(snapshot)?;
    Ok(resolved)
}

/// (1) Orders. Every acknowledged order is present, with its id, side,
/// type, price and quantity, and its state equal to the acknowledged one
/// or later in the only allowed direction (NEW → PARTIALLY_FILLED →
/// FILLED or CANCELED, executed quantity never shrinking; a final state
/// never changes). An acknowledged cancel shows CANCELED with the executed
/// quantity it reported; an order nobody (verifiably) canceled is not
/// CANCELED. A refused order, or an unanswered one that an earlier
/// recovery showed never happened, does not exist. `GET /api/v3/order` by
/// client order id agrees with `allOrders`, and no order exists that no
/// client sent.
pub fn check_orders(model: &Model, snapshot: &Snapshot) -> Result<(), Mismatch> {
    for order in &model.orders {
        let state = &snapshot.users[order.user];
        let seen = state.order(order.market, &order.client_id);
        let looked_up = state.lookups.get(&order.client_id).and_then(Option::as_ref);
        let subject = |what: &str| format!("order {} (user {}): {what}", order.client_id, order.user);
        if seen != looked_up {
            return Err(mismatch("orders", subject("GET order vs allOrders"), seen, looked_up));
        }
        match (&order.placed, seen) {
            (Placed::Refused(code), Some(o)) => {
                return Err(mismatch(
                    "orders",
                    subject(&format!("refused with {code}")),
                    "absent",
                    o,
                ));
            }
            (Placed::Absent, Some(o)) => {
                return Err(mismatch("orders", subject("absent after a recovery"), "absent", o));
            }
            (Placed::Known(facts), None) => {
                return Err(mismatch("orders", subject("acknowledged"), facts, "absent"));
            }
            (Placed::Known(facts), Some(o))
                if !may_follow(&facts.status, facts.executed, facts.quote, o) || facts.order_id != o.order_id =>
            {
                return Err(mismatch("orders", subject("state went back"), facts, o.facts()));
            }
            _ => {}
        }
        if let Some(o) = seen {
            check_static_fields(order, o).map_err(|(e, a)| mismatch("orders", subject("fields"), e, a))?;
            check_cancel(&order.cancel, o).map_err(|e| mismatch("orders", subject("cancel"), e, o.facts()))?;
        }
    }
    for (user, state) in snapshot.users.iter().enumerate() {
        for o in &state.orders {
            let known = model.order(&o.client_id);
            if known.is_none_or(|k| k.user != user || k.market != o.market) {
                return Err(mismatch(
                    "orders",
                    format!("user {user}: an order no client sent"),
                    "absent",
                    o,
                ));
            }
        }
    }
    Ok(())
}

/// Whether `new` may follow a state acknowledged as (status, executed,
/// quote) for a GTC limit or a market order.
fn may_follow(status: &str, executed: i64, quote: i64, new: &SeenOrder) -> bool {
    if is_final(status) {
        return new.status == status && new.executed == executed && new.quote == quote;
    }
    let forward = new.executed >= executed && new.quote >= quote;
    let allowed = match new.status.as_str() {
        "NEW" => status == "NEW" && new.executed == 0,
        "PARTIALLY_FILLED" | "FILLED" | "CANCELED" => true,
        _ => false,
    };
    forward && allowed
}

fn check_static_fields(order: &crate::model::Order, o: &SeenOrder) -> Result<(), (String, String)> {
    let expected = (
        order.side.name(),
        order.kind.name(),
        order.price,
        order.qty,
        order.iceberg,
    );
    let actual = (o.side.as_str(), o.kind.as_str(), o.price, o.orig_qty, o.iceberg);
    if expected != actual {
        return Err((format!("{expected:?}"), format!("{actual:?}")));
    }
    Ok(())
}

fn check_cancel(cancel: &CancelState, o: &SeenOrder) -> Result<(), String> {
    let canceled = o.status == "CANCELED";
    match cancel {
        CancelState::Done { executed } if !canceled || o.executed != *executed => {
            Err(format!("CANCELED with executedQty {}", decimal(*executed)))
        }
        CancelState::None if canceled => Err("not CANCELED: no cancel took effect".into()),
        // -2011: the order was no longer open, so it had filled.
        CancelState::Refused if canceled || !is_final(&o.status) => Err("final, not CANCELED (cancel refused)".into()),
        _ => Ok(()),
    }
}

/// (2) Trades. Every trade in any user's `myTrades` has exactly one
/// counterpart (the same market and trade id, the other side and role,
/// equal price, quantity and quote quantity), so both sides were applied
/// or neither; each side belongs to an order of its user on that side;
/// an order's executed and quote quantities are the sums of its trades;
/// every acknowledged fill (and every trade an earlier recovery showed) is
/// present with the same price, quantity and commission.
pub fn check_trades(model: &Model, snapshot: &Snapshot) -> Result<(), Mismatch> {
    let mut sides: BTreeMap<(usize, u64), Vec<(usize, &SeenTrade)>> = BTreeMap::new();
    for (user, state) in snapshot.users.iter().enumerate() {
        if state.trades.len() >= TRADES_PER_USER_MAX {
            return Err(mismatch(
                "trades",
                format!("user {user}: the history bound was reached; the harness sends too much"),
                format!("< {TRADES_PER_USER_MAX}"),
                state.trades.len(),
            ));
        }
        for t in &state.trades {
            sides.entry((t.market, t.id)).or_default().push((user, t));
            check_trade_order(user, t, &state.orders)?;
        }
        check_order_sums(user, state)?;
    }
    for ((market, id), pair) in &sides {
        check_pair(*market, *id, pair)?;
    }
    for (&(market, id, user, order_id), fill) in &model.fills {
        let found = snapshot.users[user]
            .trades
            .iter()
            .find(|t| t.market == market && t.id == id && t.order_id == order_id);
        let actual = found.map(|t| (t.price, t.qty, t.commission, t.commission_asset.as_str()));
        let expected = (fill.price, fill.qty, fill.commission, fill.commission_asset.as_str());
        if actual != Some(expected) {
            let subject = format!(
                "{} trade {id} of order {order_id} (user {user})",
                MARKETS[market].symbol
            );
            return Err(mismatch("trades", subject, expected, actual));
        }
    }
    Ok(())
}

fn check_trade_order(user: usize, t: &SeenTrade, orders: &[SeenOrder]) -> Result<(), Mismatch> {
    let order = orders.iter().find(|o| o.market == t.market && o.order_id == t.order_id);
    let side = if t.is_buyer { "BUY" } else { "SELL" };
    let m = &MARKETS[t.market];
    let asset = if t.is_buyer { m.base } else { m.quote };
    let actual = (order.map(|o| o.side.as_str()), t.commission_asset.as_str());
    if actual != (Some(side), asset) {
        let subject = format!("user {user}: {} trade {} of order {}", m.symbol, t.id, t.order_id);
        return Err(mismatch("trades", subject, (Some(side), asset), actual));
    }
    Ok(())
}

fn check_order_sums(user: usize, state: &crate::snapshot::UserState) -> Result<(), Mismatch> {
    for o in &state.orders {
        let mine = state
            .trades
            .iter()
            .filter(|t| t.market == o.market && t.order_id == o.order_id);
        let sums = mine.fold((0, 0), |(q, v), t| (q + t.qty, v + t.quote_qty));
        if sums != (o.executed, o.quote) {
            let subject = format!("user {user}: order {} executed vs its trades", o.client_id);
            return Err(mismatch("trades", subject, (o.executed, o.quote), sums));
        }
    }
    Ok(())
}

fn check_pair(market: usize, id: u64, pair: &[(usize, &SeenTrade)]) -> Result<(), Mismatch> {
    let subject = format!("{} trade {id}", MARKETS[market].symbol);
    let [(_, a), (_, b)] = pair else {
        let users: Vec<usize> = pair.iter().map(|(u, _)| *u).collect();
        return Err(mismatch("trades", subject + ": sides (users)", "2 sides", users));
    };
    let terms = |t: &SeenTrade| (t.price, t.qty, t.quote_qty, t.time);
    if terms(a) != terms(b) || a.is_buyer == b.is_buyer || a.is_maker == b.is_maker {
        return Err(mismatch("trades", subject + ": the two sides differ", a, b));
    }
    let quote = i128::from(a.price) * i128::from(a.qty);
    if quote != i128::from(a.quote_qty) * 100_000_000 {
        return Err(mismatch(
            "trades",
            subject + ": quoteQty",
            quote / 100_000_000,
            a.quote_qty,
        ));
    }
    Ok(())
}

/// (3) Conservation. The audit is ok; per asset, the users' free and
/// locked sums equal the audit's, and Σ(free + locked) + fees = Σdeposits
/// − Σwithdrawals; the audit's deposits and withdrawals are the
/// acknowledged ones plus some subset of the unanswered ones; the admin
/// API lists exactly the users the harness created.
pub fn check_conservation(model: &Model, snapshot: &Snapshot) -> Result<(), Mismatch> {
    let audit = &snapshot.audit;
    if !audit.ok {
        return Err(mismatch("conservation", "audit".into(), "ok", audit));
    }
    let mut ids: Vec<u64> = model.users.iter().map(|k| k.user_id).collect();
    ids.sort_unstable();
    if ids != snapshot.user_ids {
        return Err(mismatch(
            "conservation",
            "admin user list".into(),
            ids,
            &snapshot.user_ids,
        ));
    }
    for (asset, a) in &audit.assets {
        let held = |pick: fn(&(i64, i64)) -> i64| -> i64 {
            let balances = snapshot.users.iter().filter_map(|u| u.balances.get(asset));
            balances.map(pick).sum()
        };
        let sums = (held(|b| b.0), held(|b| b.1));
        if sums != (a.free, a.locked) || a.free + a.locked + a.fees != a.deposits - a.withdrawals {
            let subject = format!("{asset}: (Σfree, Σlocked) and free + locked + fees = deposits − withdrawals");
            return Err(mismatch("conservation", subject, sums, a));
        }
        for (deposit, total) in [(true, a.deposits), (false, a.withdrawals)] {
            let of = |state: TransferState| {
                let t = model.transfers.iter();
                t.filter(move |t| t.asset == asset && t.deposit == deposit && t.state == state)
                    .map(|t| t.amount)
            };
            let done: i64 = of(TransferState::Done).sum();
            let unknown: Vec<i64> = of(TransferState::Unknown).collect();
            if !subset_sums(&unknown).contains(&(total - done)) {
                let kind = if deposit { "deposits" } else { "withdrawals" };
                let expected = format!("{} plus a subset of {unknown:?}", decimal(done));
                return Err(mismatch(
                    "conservation",
                    format!("{asset} {kind}"),
                    expected,
                    decimal(total),
                ));
            }
        }
    }
    Ok(())
}

fn subset_sums(amounts: &[i64]) -> Vec<i64> {
    let mut sums = vec![0];
    for &a in amounts {
        let more: Vec<i64> = sums.iter().map(|s| s + a).collect();
        sums.extend(more);
    }
    sums
}

/// (4) Balances. Each user's free + locked per asset equals what the
/// recovered history gives: acknowledged deposits minus acknowledged
/// withdrawals, plus a subset of the unanswered ones (every subset is
/// tried), plus each trade in `myTrades` (a buyer gets the base minus its
/// commission and pays the quote; a seller the reverse). Returns the
/// unanswered transfers the balances decided.
pub fn check_balances(model: &Model, snapshot: &Snapshot) -> Result<BTreeMap<usize, bool>, Mismatch> {
    let mut resolved = BTreeMap::new();
    for (user, state) in snapshot.users.iter().enumerate() {
        let mut expected: BTreeMap<String, i64> = state.balances.keys().map(|a| (a.clone(), 0)).collect();
        let mut unknown = Vec::new();
        for (index, t) in model.transfers.iter().enumerate().filter(|(_, t)| t.user == user) {
            let signed = if t.deposit { t.amount } else { -t.amount };
            match t.state {
                TransferState::Done => *expected.entry(t.asset.to_string()).or_default() += signed,
                TransferState::Unknown => unknown.push((index, t.asset, signed)),
                TransferState::NotDone => {}
            }
        }
        for t in &state.trades {
            apply_trade(&mut expected, t);
        }
        let actual: BTreeMap<String, i64> = state.balances.iter().map(|(a, (f, l))| (a.clone(), f + l)).collect();
        if unknown.len() > UNKNOWN_TRANSFERS_PER_USER_MAX {
            return Err(mismatch(
                "balances",
                format!("user {user}: unanswered transfers"),
                UNKNOWN_TRANSFERS_PER_USER_MAX,
                unknown.len(),
            ));
        }
        let fits: Vec<u32> = (0..1u32 << unknown.len())
            .filter(|mask| with_subset(&expected, &unknown, *mask) == actual)
            .collect();
        match fits.as_slice() {
            [] => {
                let subject = format!("user {user}: free + locked (unanswered transfers {unknown:?})");
                return Err(mismatch("balances", subject, show(&expected), show(&actual)));
            }
            [mask] => {
                for (bit, (index, _, _)) in unknown.iter().enumerate() {
                    resolved.insert(*index, mask & (1 << bit) != 0);
                }
            }
            // Several subsets fit: leave them unanswered.
            _ => {}
        }
    }
    Ok(resolved)
}

fn apply_trade(balances: &mut BTreeMap<String, i64>, t: &SeenTrade) {
    let m = &MARKETS[t.market];
    let (base, quote) = if t.is_buyer {
        (t.qty, -t.quote_qty)
    } else {
        (-t.qty, t.quote_qty)
    };
    *balances.entry(m.base.to_string()).or_default() += base;
    *balances.entry(m.quote.to_string()).or_default() += quote;
    *balances.entry(t.commission_asset.clone()).or_default() -= t.commission;
}

fn with_subset(
    expected: &BTreeMap<String, i64>,
    unknown: &[(usize, &'static str, i64)],
    mask: u32,
) -> BTreeMap<String, i64> {
    let mut total = expected.clone();
    for (bit, (_, asset, signed)) in unknown.iter().enumerate() {
        if mask & (1 << bit) != 0 {
            *total.entry(asset.to_string()).or_default() += signed;
        }
    }
    total
}

fn show(balances: &BTreeMap<String, i64>) -> BTreeMap<&str, String> {
    balances.iter().map(|(a, v)| (a.as_str(), decimal(*v))).collect()
}

/// (5) Locks. No balance is negative, and each user's locked amount per
/// asset is exactly what their open orders need: a limit buy its remaining
/// quantity at its price (rounded up), a sell its remaining quantity.
pub fn check_locks(snapshot: &Snapshot) -> Result<(), Mismatch> {
    for (user, state) in snapshot.users.iter().enumerate() {
        let mut needed: BTreeMap<&str, i64> = state.balances.keys().map(|a| (a.as_str(), 0)).collect();
        for o in state.orders.iter().filter(|o| !is_final(&o.status)) {
            let m = &MARKETS[o.market];
            let remaining = o.orig_qty - o.executed;
            let (asset, amount) = match (o.side.as_str(), o.kind.as_str()) {
                ("BUY", "LIMIT") => (m.quote, notional_ceil(o.price, remaining)),
                ("SELL", "LIMIT") => (m.base, remaining),
                _ => {
                    return Err(mismatch(
                        "locks",
                        format!("user {user}: open order"),
                        "a limit order",
                        o,
                    ))
                }
            };
            *needed.entry(asset).or_default() += amount;
        }
        let locked: BTreeMap<&str, i64> = state.balances.iter().map(|(a, b)| (a.as_str(), b.1)).collect();
        let negative = state.balances.values().any(|(free, locked)| *free < 0 || *locked < 0);
        if locked != needed || negative {
            return Err(mismatch(
                "locks",
                format!("user {user}: locked vs open orders (balances {:?})", state.balances),
                needed,
                locked,
            ));
        }
    }
    Ok(())
}

fn notional_ceil(price: i64, qty: i64) -> i64 {
    let product = i128::from(price) * i128::from(qty);
    let units = (product + 99_999_999) / 100_000_000;
    i64::try_from(units).unwrap_or(i64::MAX)
}

/// (6) At rest, recovery reproduces the state exactly: the same balances,
/// orders (with their times), trades and audit as read before the kill.
pub fn check_identical(before: &Snapshot, after: &Snapshot) -> Result<(), Mismatch> {
    for (user, (b, a)) in before.users.iter().zip(&after.users).enumerate() {
        let subject = |what: &str| format!("user {user}: {what}");
        if b.balances != a.balances {
            return Err(mismatch("identical", subject("balances"), &b.balances, &a.balances));
        }
        if let Some((x, y)) = first_difference(&b.orders, &a.orders) {
            return Err(mismatch("identical", subject("orders"), x, y));
        }
        if let Some((x, y)) = first_difference(&b.trades, &a.trades) {
            return Err(mismatch("identical", subject("trades"), x, y));
        }
    }
    if before.audit != after.audit || before.user_ids != after.user_ids {
        let pick = |s: &Snapshot| (s.audit.clone(), s.user_ids.clone());
        return Err(mismatch(
            "identical",
            "audit and users".into(),
            pick(before),
            pick(after),
        ));
    }
    Ok(())
}

fn first_difference<'a, T: PartialEq>(x: &'a [T], y: &'a [T]) -> Option<(Option<&'a T>, Option<&'a T>)> {
    let n = x.len().max(y.len());
    (0..n).map(|i| (x.get(i), y.get(i))).find(|(a, b)| a != b)
}
