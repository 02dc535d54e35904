//! The clients: threads that each hold one keep-alive API connection and
//! one admin connection and send random operations for random users until
//! told to stop, the server dies, or their operation count runs out.
//!
//! Operations: GTC limit orders on both sides of a narrow price band (so
//! about half cross and half rest), MARKET orders, order lists (one order
//! request in eight: an OCO straddling the last price or an OTO near the
//! market), orders refused for insufficient balance, cancels of orders
//! and lists this thread saw open, deposits and withdrawals. Each order
//! has a unique `newClientOrderId`, each list a unique
//! `listClientOrderId`. Every request becomes an `Event` with its full
//! answer, or `Lost`.

use crate::http::{admin, decimal, signed, units, Conn, Key, Lost, Reply};
use crate::model::{Event, Kind, Leg, ListKind, Outcome, Side, MARKETS, ORDER_LOTS_MAX};
use serde_json::{json, Value};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Price levels each side may use: ± this many ticks around the market's
/// reference price.
const PRICE_TICKS_MAX: i64 = 5;
/// A transfer moves 1 to this many thousandths of a unit of an asset.
const TRANSFER_MILLIS_MAX: u64 = 1_000;
/// Waiting clients look for the sprint this often.
const THINK_SLICE_US: u64 = 200;
/// Assets deposited and withdrawn while trading.
const TRANSFER_ASSETS: [&str; 3] = ["USDT", "BTC", "ETH"];
/// One order request in this many is an order list.
const LIST_ONE_IN: u64 = 8;
/// An OCO's orders are 1 to this many ticks from the last price; an OTO's
/// pending order as far from its working order's price.
const LIST_TICKS_MAX: u64 = 3;

/// splitmix64: reproducible choices from a seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What all clients of one cycle share.
pub struct Shared {
    pub users: Vec<Key>,
    /// Orders each user may still send (`ORDERS_PER_USER_MAX` over a data
    /// directory's life).
    pub budgets: Vec<AtomicU32>,
    pub stop: AtomicBool,
    /// Set just before the kill: no more waiting between operations, so
    /// that every client is likely to have a request in flight when it
    /// comes, however fast the server answers.
    pub sprint: AtomicBool,
    /// Every client connection, for `abandon`.
    pub sockets: Mutex<Vec<TcpStream>>,
    /// Set by `fill_journal` when the journal refused for want of disk
    /// space.
    pub journal_full: AtomicBool,
}

impl Shared {
    /// Shuts every client connection down, so that each request in flight
    /// goes unanswered while the server carries on: a crash as the clients
    /// see it, with the server's state kept (`--simulate-crash`).
    pub fn abandon(&self) {
        let sockets = self.sockets.lock().unwrap_or_else(|e| e.into_inner());
        for socket in sockets.iter() {
            let _ = socket.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// One client's part of a cycle.
pub struct Plan {
    pub api: SocketAddr,
    pub admin: SocketAddr,
    pub seed: u64,
    pub ops_max: usize,
    /// Each operation waits a random time below this first, so that the
    /// operations spread over the cycle instead of finishing before the kill.
    pub think_max_us: u64,
    /// Prefix of this client's order ids, unique per data directory.
    pub id_prefix: String,
    /// (user, market, client order id) of resting orders this client may cancel.
    pub cancelable: Vec<(usize, usize, String)>,
    /// (user, market, list client id, orderListId) of open lists this
    /// client may cancel.
    pub cancelable_lists: Vec<(usize, usize, String, u64)>,
}

/// Runs one client; returns what it did, in order.
pub fn run(mut plan: Plan, shared: &Shared) -> Vec<Event> {
    let mut rng = Rng(plan.seed);
    let mut events = Vec::new();
    let Ok(mut api) = Conn::open(plan.api) else {
        return events;
    };
    let Ok(mut admin_conn) = Conn::open(plan.admin) else {
        return events;
    };
    {
        let mut sockets = shared.sockets.lock().unwrap_or_else(|e| e.into_inner());
        sockets.extend([api.socket(), admin_conn.socket()].into_iter().flatten());
    }
    for n in 0..plan.ops_max {
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        think(shared, Duration::from_micros(rng.below(plan.think_max_us.max(1))));
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        let user = rng.below(shared.users.len() as u64) as usize;
        let roll = rng.below(100);
        // A list takes two orders of its user's budget.
        let list = roll <= 59 && rng.below(LIST_ONE_IN) == 0;
        let cancelables = plan.cancelable.len() + plan.cancelable_lists.len();
        let event = match roll {
            0..=59 if take_budget(shared, user, if list { 2 } else { 1 }) => {
                let client_id = format!("{}o{n}", plan.id_prefix);
                match (list, rng.below(2)) {
                    (true, 0) => match place_oco(&mut api, shared, &mut rng, user, client_id) {
                        Some(event) => event,
                        // The server went away before the list was sent.
                        None => break,
                    },
                    (true, _) => place_oto(&mut api, shared, &mut rng, user, client_id),
                    (false, _) => {
                        let kind = if roll < 45 { Kind::Limit } else { Kind::Market };
                        place(&mut api, shared, &mut rng, user, kind, client_id)
                    }
                }
            }
            60..=61 => refused(&mut api, shared, user, format!("{}o{n}", plan.id_prefix)),
            62..=81 if cancelables > 0 => {
                let pick = rng.below(cancelables as u64) as usize;
                if pick < plan.cancelable.len() {
                    let (user, market, client_id) = plan.cancelable.swap_remove(pick);
                    cancel(&mut api, shared, user, market, client_id)
                } else {
                    let pick = pick - plan.cancelable.len();
                    let (user, market, client_id, list_id) = plan.cancelable_lists.swap_remove(pick);
                    cancel_list(&mut api, shared, user, market, client_id, list_id)
                }
            }
            _ => transfer(&mut admin_conn, shared, &mut rng, user, roll % 2 == 0),
        };
        match &event {
            Event::Order {
                user,
                market,
                client_id,
                kind: Kind::Limit,
                outcome: Outcome::Answered { status: 200, body },
                ..
            } if matches!(body["status"].as_str(), Some("NEW" | "PARTIALLY_FILLED")) => {
                plan.cancelable.push((*user, *market, client_id.clone()));
            }
            Event::List {
                user,
                market,
                client_id,
                outcome: Outcome::Answered { status: 200, body },
                ..
            } if body["listOrderStatus"].as_str() == Some("EXECUTING") => {
                if let Some(list_id) = body["orderListId"].as_u64() {
                    plan.cancelable_lists.push((*user, *market, client_id.clone(), list_id));
                }
            }
            _ => {}
        }
        let lost = outcome_of(&event).is_lost();
        events.push(event);
        if lost {
            break;
        }
    }
    events
}

/// Waits `time`, or less if the sprint begins.
fn think(shared: &Shared, time: Duration) {
    let until = Instant::now() + time;
    while !shared.sprint.load(Ordering::SeqCst) {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(Duration::from_micros(THINK_SLICE_US)));
    }
}

/// Takes `orders` from `user`'s budget, if it holds that many.
fn take_budget(shared: &Shared, user: usize, orders: u32) -> bool {
    let budget = &shared.budgets[user];
    budget
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| b.checked_sub(orders))
        .is_ok()
}

fn outcome(result: Result<Reply, Lost>) -> Outcome {
    match result {
        Ok(reply) => Outcome::Answered {
            status: reply.status,
            body: reply.json().unwrap_or(Value::Null),
        },
        Err(_) => Outcome::Lost,
    }
}

pub fn outcome_of(event: &Event) -> &Outcome {
    match event {
        Event::Order { outcome, .. }
        | Event::Cancel { outcome, .. }
        | Event::Transfer { outcome, .. }
        | Event::List { outcome, .. }
        | Event::ListCancel { outcome, .. } => outcome,
    }
}

impl Outcome {
    fn is_lost(&self) -> bool {
        matches!(self, Outcome::Lost)
    }
}

fn place(api: &mut Conn, shared: &Shared, rng: &mut Rng, user: usize, kind: Kind, client_id: String) -> Event {
    let market = rng.below(MARKETS.len() as u64) as usize;
    let m = &MARKETS[market];
    let side = if rng.below(2) == 0 { Side::Buy } else { Side::Sell };
    let lots = 1 + rng.below(ORDER_LOTS_MAX as u64) as i64;
    let qty = lots * m.lot_units;
    // One limit order in four of more than one lot is an iceberg showing
    // one lot at a time, so that crashes land between its parts too.
    let iceberg = match kind {
        Kind::Limit if lots > 1 && rng.below(4) == 0 => m.lot_units,
        _ => 0,
    };
    let ticks = rng.below(2 * PRICE_TICKS_MAX as u64 + 1) as i64 - PRICE_TICKS_MAX;
    let price = match kind {
        Kind::Market => 0,
        _ => m.price_units + ticks * m.tick_units,
    };
    let mut query = format!(
        "symbol={}&side={}&type={}&quantity={}&newClientOrderId={client_id}&newOrderRespType=FULL",
        m.symbol,
        side.name(),
        kind.name(),
        decimal(qty)
    );
    if kind == Kind::Limit {
        query.push_str(&format!("&timeInForce=GTC&price={}", decimal(price)));
    }
    if iceberg > 0 {
        query.push_str(&format!("&icebergQty={}", decimal(iceberg)));
    }
    let result = signed(api, &shared.users[user], "POST", "/api/v3/order", &query);
    Event::Order {
        user,
        market,
        client_id,
        side,
        kind,
        price,
        qty,
        iceberg,
        outcome: outcome(result),
    }
}

/// The market's last price as `ticker/price` tells it (the reference price
/// when the market has none yet, or when the read is shed); `None` if the
/// server went away.
fn last_price(api: &mut Conn, market: usize) -> Option<i64> {
    let m = &MARKETS[market];
    let raw = format!(
        "GET /api/v3/ticker/price?symbol={} HTTP/1.1\r\nHost: t\r\n\r\n",
        m.symbol
    );
    let reply = api.request(raw.as_bytes()).ok()?;
    let price = match reply.status {
        200 => reply.json().ok().and_then(|v| units(&v, "price").ok()),
        _ => None,
    };
    Some(price.filter(|&p| p > 0).unwrap_or(m.price_units))
}

/// An OCO of one to `ORDER_LOTS_MAX` lots: a LIMIT_MAKER on the far side
/// of the last price (above it for a sell) and a STOP_LOSS or
/// STOP_LOSS_LIMIT on the other side (a stop-limit's price one tick
/// beyond its stop, or at it), each 1 to `LIST_TICKS_MAX` ticks from the
/// last price. The market may move before the list arrives: the server
/// then refuses it with -2010, a valid answer. `None` if the server went
/// away before the list was sent.
fn place_oco(api: &mut Conn, shared: &Shared, rng: &mut Rng, user: usize, client_id: String) -> Option<Event> {
    let market = rng.below(MARKETS.len() as u64) as usize;
    let m = &MARKETS[market];
    let last = last_price(api, market)?;
    let side = if rng.below(2) == 0 { Side::Buy } else { Side::Sell };
    let qty = (1 + rng.below(ORDER_LOTS_MAX as u64) as i64) * m.lot_units;
    let ticks = |rng: &mut Rng| (1 + rng.below(LIST_TICKS_MAX)) as i64 * m.tick_units;
    // A sell takes profit above and stops its loss below; a buy the reverse.
    let up = if side == Side::Sell { 1 } else { -1 };
    let maker = Leg {
        client_id: format!("{client_id}m"),
        side,
        kind: Kind::LimitMaker,
        price: last + up * ticks(rng),
        stop: 0,
        qty,
    };
    let stop = last - up * ticks(rng);
    let stop_loss = match rng.below(2) {
        0 => Leg {
            client_id: format!("{client_id}s"),
            side,
            kind: Kind::StopLoss,
            price: 0,
            stop,
            qty,
        },
        _ => Leg {
            client_id: format!("{client_id}s"),
            side,
            kind: Kind::StopLossLimit,
            price: stop - up * rng.below(2) as i64 * m.tick_units,
            stop,
            qty,
        },
    };
    let (above, below) = match side {
        Side::Sell => (&maker, &stop_loss),
        Side::Buy => (&stop_loss, &maker),
    };
    let mut query = format!(
        "symbol={}&side={}&quantity={}&listClientOrderId={client_id}",
        m.symbol,
        side.name(),
        decimal(qty)
    );
    for (prefix, leg) in [("above", above), ("below", below)] {
        query.push_str(&leg_params(prefix, leg, false));
    }
    let result = signed(api, &shared.users[user], "POST", "/api/v3/orderList/oco", &query);
    let legs = vec![above.clone(), below.clone()];
    Some(Event::List {
        user,
        market,
        client_id,
        kind: ListKind::Oco,
        legs,
        outcome: outcome(result),
    })
}

/// An OTO of one to `ORDER_LOTS_MAX` lots: a working GTC LIMIT in the
/// price band (so that about half cross at once) and a pending
/// LIMIT_MAKER of the other side 1 to `LIST_TICKS_MAX` ticks beyond it
/// (above a working buy), which the server places when the working order
/// has filled (and expires if it would take then).
fn place_oto(api: &mut Conn, shared: &Shared, rng: &mut Rng, user: usize, client_id: String) -> Event {
    let market = rng.below(MARKETS.len() as u64) as usize;
    let m = &MARKETS[market];
    let side = if rng.below(2) == 0 { Side::Buy } else { Side::Sell };
    let qty = (1 + rng.below(ORDER_LOTS_MAX as u64) as i64) * m.lot_units;
    let ticks = rng.below(2 * PRICE_TICKS_MAX as u64 + 1) as i64 - PRICE_TICKS_MAX;
    let price = m.price_units + ticks * m.tick_units;
    let beyond = (1 + rng.below(LIST_TICKS_MAX)) as i64 * m.tick_units;
    let working = Leg {
        client_id: format!("{client_id}w"),
        side,
        kind: Kind::Limit,
        price,
        stop: 0,
        qty,
    };
    let pending = Leg {
        client_id: format!("{client_id}p"),
        side: match side {
            Side::Buy => Side::Sell,
            Side::Sell => Side::Buy,
        },
        kind: Kind::LimitMaker,
        price: if side == Side::Buy {
            price + beyond
        } else {
            price - beyond
        },
        stop: 0,
        qty,
    };
    let mut query = format!("symbol={}&listClientOrderId={client_id}", m.symbol);
    for (prefix, leg) in [("working", &working), ("pending", &pending)] {
        query.push_str(&leg_params(prefix, leg, true));
    }
    let result = signed(api, &shared.users[user], "POST", "/api/v3/orderList/oto", &query);
    Event::List {
        user,
        market,
        client_id,
        kind: ListKind::Oto,
        legs: vec![working, pending],
        outcome: outcome(result),
    }
}

/// One order's parameters in a list placement, each name prefixed;
/// `own_side_qty` for an OTO's orders, which name their side and quantity.
fn leg_params(prefix: &str, leg: &Leg, own_side_qty: bool) -> String {
    let mut query = format!(
        "&{prefix}Type={}&{prefix}ClientOrderId={}",
        leg.kind.name(),
        leg.client_id
    );
    if own_side_qty {
        query.push_str(&format!(
            "&{prefix}Side={}&{prefix}Quantity={}",
            leg.side.name(),
            decimal(leg.qty)
        ));
    }
    if leg.kind.has_price() {
        query.push_str(&format!("&{prefix}Price={}", decimal(leg.price)));
    }
    if leg.stop > 0 {
        query.push_str(&format!("&{prefix}StopPrice={}", decimal(leg.stop)));
    }
    if matches!(leg.kind, Kind::Limit | Kind::StopLossLimit) {
        query.push_str(&format!("&{prefix}TimeInForce=GTC"));
    }
    query
}

/// A limit buy far beyond any user's funds: refused with -2010, so it must
/// never appear in any state.
fn refused(api: &mut Conn, shared: &Shared, user: usize, client_id: String) -> Event {
    let m = &MARKETS[0];
    let qty = 100 * 100_000_000;
    let query = format!(
        "symbol={}&side=BUY&type=LIMIT&timeInForce=GTC&quantity={}&price={}&newClientOrderId={client_id}",
        m.symbol,
        decimal(qty),
        decimal(m.price_units)
    );
    let result = signed(api, &shared.users[user], "POST", "/api/v3/order", &query);
    Event::Order {
        user,
        market: 0,
        client_id,
        side: Side::Buy,
        kind: Kind::Limit,
        price: m.price_units,
        qty,
        iceberg: 0,
        outcome: outcome(result),
    }
}

fn cancel(api: &mut Conn, shared: &Shared, user: usize, market: usize, client_id: String) -> Event {
    let query = format!("symbol={}&origClientOrderId={client_id}", MARKETS[market].symbol);
    let result = signed(api, &shared.users[user], "DELETE", "/api/v3/order", &query);
    Event::Cancel {
        user,
        market,
        client_id,
        outcome: outcome(result),
    }
}

/// `DELETE /api/v3/orderList` by `orderListId`.
fn cancel_list(api: &mut Conn, shared: &Shared, user: usize, market: usize, client_id: String, list_id: u64) -> Event {
    let query = format!("symbol={}&orderListId={list_id}", MARKETS[market].symbol);
    let result = signed(api, &shared.users[user], "DELETE", "/api/v3/orderList", &query);
    Event::ListCancel {
        user,
        market,
        client_id,
        outcome: outcome(result),
    }
}

fn transfer(admin_conn: &mut Conn, shared: &Shared, rng: &mut Rng, user: usize, deposit: bool) -> Event {
    let asset = TRANSFER_ASSETS[rng.below(TRANSFER_ASSETS.len() as u64) as usize];
    let amount = (1 + rng.below(TRANSFER_MILLIS_MAX)) as i64 * 100_000;
    transfer_of(admin_conn, shared, user, asset, amount, deposit)
}

fn transfer_of(
    admin_conn: &mut Conn,
    shared: &Shared,
    user: usize,
    asset: &'static str,
    amount: i64,
    deposit: bool,
) -> Event {
    let kind = if deposit { "deposits" } else { "withdrawals" };
    let path = format!("/admin/v1/users/{}/{kind}", shared.users[user].user_id);
    let body = json!({"asset": asset, "amount": decimal(amount)});
    let result = admin(admin_conn, "POST", &path, Some(&body));
    Event::Transfer {
        user,
        asset,
        amount,
        deposit,
        outcome: outcome(result),
    }
}

/// The most deposits `fill_journal` makes: far more than the journal of a
/// disk-full cycle (`disk::SEGMENT_BYTES`) holds.
const FILL_DEPOSITS_MAX: usize = 100_000;
/// What each of its deposits moves, in units.
const FILL_DEPOSIT_UNITS: i64 = 100_000;

/// The disk-full cycles' filler: small deposits, round the users, until
/// the clients stop or the server goes away. When the journal, out of disk
/// space for its next segment, refuses one with 503 -1008,
/// `Shared::journal_full` is set and the deposits go on a millisecond
/// apart: should the journal find room again, they use it up.
pub fn fill_journal(admin_addr: SocketAddr, shared: &Shared) -> Vec<Event> {
    let mut events = Vec::new();
    let Ok(mut conn) = Conn::open(admin_addr) else {
        return events;
    };
    if let Some(socket) = conn.socket() {
        shared.sockets.lock().unwrap_or_else(|e| e.into_inner()).push(socket);
    }
    for n in 0..FILL_DEPOSITS_MAX {
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        let event = transfer_of(
            &mut conn,
            shared,
            n % shared.users.len(),
            "USDT",
            FILL_DEPOSIT_UNITS,
            true,
        );
        let outcome = outcome_of(&event);
        let (refused, lost) = (outcome.never_ran(), outcome.is_lost());
        events.push(event);
        if lost {
            break;
        }
        if refused {
            shared.journal_full.store(true, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    events
}
