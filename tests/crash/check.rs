//! The checks a recovered (or live, at rest) state must pass against the
//! acknowledged history. Each returns the first mismatch with what the
//! history requires and what the server reported.

use crate::http::decimal;
use crate::model::MARKETS;
use crate::model::{is_final, is_open, CancelState, ListCancel, ListKind, ListPlaced, Model, Placed, TransferState};
use crate::snapshot::{SeenList, SeenOrder, SeenTrade, Snapshot, UserState};
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
    check_lists(model, snapshot)?;
    check_books(model, snapshot)?;
    check_trades(model, snapshot)?;
    check_conservation(model, snapshot)?;
    let resolved = check_balances(model, snapshot)?;
    check_locks(model, snapshot)?;
    Ok(resolved)
}

/// (1) Orders. Every acknowledged order is present, with its id, side,
/// type, price, stop price, quantity, `icebergQty` and whether it is in a
/// list, and its state equal to the acknowledged one or later in the only
/// allowed direction (NEW → PARTIALLY_FILLED → FILLED or CANCELED, and
/// for an order of a list also PENDING_NEW → NEW and → EXPIRED; executed
/// quantity never shrinking; a final state never changes). An
/// acknowledged cancel shows CANCELED with the executed quantity it
/// reported; an order nobody (verifiably) canceled is not CANCELED (for
/// the orders of lists, `check_lists`). A refused order, or an
/// unanswered one that an earlier recovery showed never happened, does
/// not exist. `GET /api/v3/order` by client order id agrees with
/// `allOrders`, and no order exists that no client sent.
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
                if !may_follow(&facts.status, facts.executed, facts.quote, order.list.is_some(), o)
                    || facts.order_id != o.order_id =>
            {
                return Err(mismatch("orders", subject("state went back"), facts, o.facts()));
            }
            _ => {}
        }
        if let Some(o) = seen {
            check_static_fields(order, o).map_err(|(e, a)| mismatch("orders", subject("fields"), e, a))?;
            if order.list.is_none() {
                check_cancel(&order.cancel, o).map_err(|e| mismatch("orders", subject("cancel"), e, o.facts()))?;
            }
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
/// quote) for a GTC limit or a market order, or an order of a list
/// (`in_list`): a pending order waits PENDING_NEW, and an OCO order
/// expires when its partner trades or fires, a fired stop loss when the
/// book has too little for it, a pending order when its working order
/// ends otherwise than filled.
fn may_follow(status: &str, executed: i64, quote: i64, in_list: bool, new: &SeenOrder) -> bool {
    if is_final(status) {
        return new.status == status && new.executed == executed && new.quote == quote;
    }
    let forward = new.executed >= executed && new.quote >= quote;
    let allowed = match new.status.as_str() {
        "PENDING_NEW" => status == "PENDING_NEW" && new.executed == 0,
        "NEW" => (status == "NEW" || status == "PENDING_NEW") && new.executed == 0,
        "PARTIALLY_FILLED" | "FILLED" | "CANCELED" => true,
        "EXPIRED" => in_list,
        _ => false,
    };
    forward && allowed
}

fn check_static_fields(order: &crate::model::Order, o: &SeenOrder) -> Result<(), (String, String)> {
    let expected = (
        order.side.name(),
        order.kind.name(),
        order.price,
        order.stop,
        order.qty,
        order.iceberg,
        order.list.is_some(),
    );
    let actual = (
        o.side.as_str(),
        o.kind.as_str(),
        o.price,
        o.stop,
        o.orig_qty,
        o.iceberg,
        o.order_list_id >= 0,
    );
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

/// (1b) Order lists: none half-done. Every acknowledged list is present in
/// `allOrderList`, and `GET /api/v3/orderList` agrees, with its
/// `orderListId` (its first order's id), `contingencyType`, list client
/// id and orders (ids and client ids, in order); each of its orders
/// exists with that `orderListId`. Its status agrees with its orders:
/// ALL_DONE exactly when every order is final, else EXECUTING. An OCO
/// never has one order open while the other has traded or is final (a
/// half-canceled pair). An OTO's pending order is PENDING_NEW exactly
/// while its working order is open, has traded only if the working
/// order filled, and ended CANCELED or EXPIRED untraded if the working
/// order ended otherwise. An acknowledged list cancel left every order
/// final as it answered; with no cancel (verifiably) sent, no order is
/// CANCELED; a cancel refused with -2011 found the list done. A list
/// whose placement went unanswered exists whole or not at all; a refused
/// list, or one an earlier recovery showed never happened, does not
/// exist; and no list exists that no client sent.
pub fn check_lists(model: &Model, snapshot: &Snapshot) -> Result<(), Mismatch> {
    for list in &model.lists {
        let state = &snapshot.users[list.user];
        let seen = state.list(&list.client_id);
        let looked_up = state.list_lookups.get(&list.client_id).and_then(Option::as_ref);
        let subject = |what: &str| {
            let kind = list.kind.name();
            format!("{kind} list {} (user {}): {what}", list.client_id, list.user)
        };
        if seen != looked_up {
            return Err(mismatch(
                "lists",
                subject("GET orderList vs allOrderList"),
                seen,
                looked_up,
            ));
        }
        let orders: Vec<Option<&SeenOrder>> = list.orders.iter().map(|c| state.order(list.market, c)).collect();
        let Some(seen) = seen else {
            match &list.placed {
                ListPlaced::Known(facts) => {
                    return Err(mismatch("lists", subject("acknowledged"), facts, "absent"));
                }
                _ if orders.iter().any(Option::is_some) => {
                    return Err(mismatch(
                        "lists",
                        subject("half placed: orders without their list"),
                        "absent",
                        orders,
                    ));
                }
                _ => continue,
            }
        };
        match &list.placed {
            ListPlaced::Refused(code) => {
                return Err(mismatch(
                    "lists",
                    subject(&format!("refused with {code}")),
                    "absent",
                    seen,
                ));
            }
            ListPlaced::Absent => {
                return Err(mismatch("lists", subject("absent after a recovery"), "absent", seen));
            }
            ListPlaced::Known(facts) if *facts != seen.facts() => {
                return Err(mismatch("lists", subject("ids"), facts, seen.facts()));
            }
            _ => {}
        }
        let client_ids: Vec<&str> = seen.orders.iter().map(|(_, c)| c.as_str()).collect();
        let expected = (
            list.kind.name(),
            list.market,
            list.orders.iter().map(String::as_str).collect(),
        );
        let actual = (seen.contingency.as_str(), seen.market, client_ids);
        let first_id = seen.orders.first().map(|(id, _)| *id);
        if expected != actual || first_id != Some(seen.list_id) {
            return Err(mismatch("lists", subject("type, market and orders"), expected, seen));
        }
        let mut legs = Vec::new();
        for ((id, client_id), o) in seen.orders.iter().zip(&orders) {
            match o {
                Some(o) if o.order_id == *id && o.order_list_id == seen.list_id as i64 => legs.push(*o),
                _ => {
                    let what = format!("order {client_id} (id {id}) and its orderListId");
                    return Err(mismatch("lists", subject(&what), (id, seen.list_id), o));
                }
            }
        }
        check_list_state(list.kind, seen, &legs).map_err(|(what, e)| mismatch("lists", subject(what), e, &legs))?;
        check_list_cancel(&list.cancel, &legs).map_err(|e| mismatch("lists", subject("cancel"), e, &legs))?;
    }
    for (user, state) in snapshot.users.iter().enumerate() {
        for l in &state.lists {
            let known = model.list(&l.client_id);
            if known.is_none_or(|k| k.user != user || k.market != l.market) {
                return Err(mismatch(
                    "lists",
                    format!("user {user}: a list no client sent"),
                    "absent",
                    l,
                ));
            }
        }
        for o in state.orders.iter().filter(|o| o.order_list_id >= 0) {
            if !state.lists.iter().any(|l| l.list_id as i64 == o.order_list_id) {
                let subject = format!("user {user}: order {} of a list allOrderList lacks", o.client_id);
                return Err(mismatch("lists", subject, "a list", o));
            }
        }
    }
    Ok(())
}

/// The rules of the list's kind for its orders, then its status against
/// theirs; the rule broken and what it expects.
fn check_list_state(kind: ListKind, seen: &SeenList, legs: &[&SeenOrder]) -> Result<(), (&'static str, String)> {
    let [a, b] = legs else {
        return Err(("orders", "2 orders".into()));
    };
    match kind {
        ListKind::Oco => {
            // When one trades or fires the other leaves the book EXPIRED,
            // untraded; a cancel takes both.
            if a.executed > 0 && b.executed > 0 {
                return Err(("OCO half done", "at most one order traded".into()));
            }
            match (is_final(&a.status), is_final(&b.status)) {
                (false, false) if a.executed > 0 || b.executed > 0 => {
                    return Err(("OCO half done", "the other order final once one traded".into()));
                }
                (true, false) | (false, true) => {
                    let (gone, open) = if is_final(&a.status) { (a, b) } else { (b, a) };
                    // Traded, or a stop-limit that fired and rests
                    // (`check_books` finds it on the book).
                    let moved = open.executed > 0 || open.kind == "STOP_LOSS_LIMIT";
                    if !moved || gone.status != "EXPIRED" || gone.executed != 0 {
                        let expected = format!("{} final, or traded or fired with the other EXPIRED", open.client_id);
                        return Err(("OCO half done", expected));
                    }
                }
                _ => {}
            }
        }
        ListKind::Oto => {
            let (working, pending) = (a, b);
            let waiting = pending.status == "PENDING_NEW";
            if waiting != is_open(&working.status) {
                return Err((
                    "OTO pending order",
                    "PENDING_NEW exactly while the working order is open".into(),
                ));
            }
            if pending.executed > 0 && working.status != "FILLED" {
                return Err(("OTO pending order", "traded only after the working order filled".into()));
            }
            let ended = matches!(working.status.as_str(), "CANCELED" | "EXPIRED");
            if ended && !(matches!(pending.status.as_str(), "CANCELED" | "EXPIRED") && pending.executed == 0) {
                return Err((
                    "OTO pending order",
                    "CANCELED or EXPIRED untraded with its working order".into(),
                ));
            }
        }
    }
    let done = legs.iter().all(|o| is_final(&o.status));
    let expected = match done {
        true => ("ALL_DONE", "ALL_DONE"),
        false => ("EXEC_STARTED", "EXECUTING"),
    };
    if (seen.status_type.as_str(), seen.order_status.as_str()) != expected {
        return Err(("status vs its orders", format!("{expected:?}, not {seen:?}")));
    }
    Ok(())
}

fn check_list_cancel(cancel: &ListCancel, legs: &[&SeenOrder]) -> Result<(), String> {
    let canceled = legs.iter().any(|o| o.status == "CANCELED");
    let state: Vec<(String, String, i64)> = legs
        .iter()
        .map(|o| (o.client_id.clone(), o.status.clone(), o.executed))
        .collect();
    match cancel {
        ListCancel::Done(answered) if *answered != state => Err(format!("as the cancel answered: {answered:?}")),
        ListCancel::None if canceled => Err("no order CANCELED: no cancel took effect".into()),
        // -2011: the list was done already, and not by a cancel.
        ListCancel::Refused if canceled || legs.iter().any(|o| !is_final(&o.status)) => {
            Err("final, none CANCELED (cancel refused)".into())
        }
        _ => Ok(()),
    }
}

/// (1c) Books. Each market's `depth` is exactly what the open orders
/// that rest there make: per side and price, the remaining quantity of
/// each LIMIT and LIMIT_MAKER (an iceberg's visible part:
/// `icebergQty` or what is left if less), and of each STOP_LOSS_LIMIT of
/// an OCO that fired (its partner is final: `check_lists`); neither a
/// held stop nor a pending order rests.
pub fn check_books(model: &Model, snapshot: &Snapshot) -> Result<(), Mismatch> {
    for (market, book) in snapshot.books.iter().enumerate() {
        let mut expected: [BTreeMap<i64, i64>; 2] = [BTreeMap::new(), BTreeMap::new()];
        for state in &snapshot.users {
            for o in state.orders.iter().filter(|o| o.market == market && is_open(&o.status)) {
                let rests = match o.kind.as_str() {
                    "LIMIT" | "LIMIT_MAKER" => true,
                    "STOP_LOSS_LIMIT" => !open_pair(model, state, o),
                    _ => false,
                };
                if !rests {
                    continue;
                }
                let remaining = o.orig_qty - o.executed;
                let visible = if o.iceberg > 0 {
                    o.iceberg.min(remaining)
                } else {
                    remaining
                };
                let side = usize::from(o.side == "SELL");
                *expected[side].entry(o.price).or_default() += visible;
            }
        }
        for (side, (name, levels)) in [("bids", &book.bids), ("asks", &book.asks)].into_iter().enumerate() {
            let actual: BTreeMap<i64, i64> = levels.iter().copied().collect();
            if actual != expected[side] || actual.len() != levels.len() {
                let subject = format!("{} {name} vs the open orders", MARKETS[market].symbol);
                return Err(mismatch("books", subject, &expected[side], levels));
            }
        }
    }
    Ok(())
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
/// asset is exactly what their open orders need: a buy with a price its
/// remaining quantity at its price (rounded up), a STOP_LOSS buy its
/// quantity at its stop price plus the market protection, a sell its
/// remaining quantity; a pending order nothing; the two open orders of an
/// OCO pair once, the larger of the two.
pub fn check_locks(model: &Model, snapshot: &Snapshot) -> Result<(), Mismatch> {
    for (user, state) in snapshot.users.iter().enumerate() {
        let mut needed: BTreeMap<&str, i64> = state.balances.keys().map(|a| (a.as_str(), 0)).collect();
        // Per OCO with both orders open: its asset and the larger lock.
        let mut pairs: BTreeMap<i64, (&str, i64)> = BTreeMap::new();
        for o in state.orders.iter().filter(|o| is_open(&o.status)) {
            let m = &MARKETS[o.market];
            let remaining = o.orig_qty - o.executed;
            let asset = if o.side == "BUY" { m.quote } else { m.base };
            let amount = match (o.side.as_str(), o.kind.as_str()) {
                ("BUY", "LIMIT" | "LIMIT_MAKER" | "STOP_LOSS_LIMIT") => notional_ceil(o.price, remaining),
                ("BUY", "STOP_LOSS") => protected(notional_ceil(o.stop, remaining)),
                ("SELL", _) => remaining,
                _ => {
                    return Err(mismatch(
                        "locks",
                        format!("user {user}: open order"),
                        "an order the harness sends",
                        o,
                    ))
                }
            };
            if open_pair(model, state, o) {
                let pair = pairs.entry(o.order_list_id).or_insert((asset, 0));
                pair.1 = pair.1.max(amount);
                continue;
            }
            *needed.entry(asset).or_default() += amount;
        }
        for (asset, amount) in pairs.into_values() {
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

/// Whether `o` is an order of an OCO whose other order is open too.
fn open_pair(model: &Model, state: &UserState, o: &SeenOrder) -> bool {
    let list = model.order(&o.client_id).and_then(|order| order.list);
    let Some(list) = list.map(|i| &model.lists[i]) else {
        return false;
    };
    list.kind == ListKind::Oco
        && list
            .orders
            .iter()
            .filter(|c| **c != o.client_id)
            .all(|c| state.order(list.market, c).is_some_and(|other| is_open(&other.status)))
}

/// A market buy's lock over its notional: `MARKET_PROTECTION`, rounded up.
fn protected(notional: i64) -> i64 {
    let rate = i128::from(tradsys_engine::account::MARKET_PROTECTION.0);
    let wide = i128::from(notional) * (100_000_000 + rate);
    i64::try_from((wide + 99_999_999) / 100_000_000).unwrap_or(i64::MAX)
}

fn notional_ceil(price: i64, qty: i64) -> i64 {
    let product = i128::from(price) * i128::from(qty);
    let units = (product + 99_999_999) / 100_000_000;
    i64::try_from(units).unwrap_or(i64::MAX)
}

/// (6) At rest, recovery reproduces the state exactly: the same balances,
/// orders (with their times), trades, order lists and audit as read
/// before the kill.
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
        if let Some((x, y)) = first_difference(&b.lists, &a.lists) {
            return Err(mismatch("identical", subject("order lists"), x, y));
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
