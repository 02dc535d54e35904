//! The checks must be able to fail: a live state that passes them is
//! damaged in one way at a time, as a broken recovery could damage it, and
//! each damage must be reported by the check meant for it.

use crate::check::{check_all, check_identical, Mismatch};
use crate::model::{CancelState, ListKind, Model, Placed};
use crate::server::Server;
use crate::snapshot::{SeenOrder, Snapshot, UserState};
use crate::{create_users, traffic_at_rest, verify, Args, Failure};
use std::path::Path;

/// Enough traffic that every damage below finds something to damage.
const OPS: usize = 200;
const SEED: u64 = 0x5e1f;

/// One damage: its name, the check that must report it with a word of its
/// subject, and the edit.
type Damage = (&'static str, (&'static str, &'static str), Edit);
type Edit = fn(&mut Model, &mut Snapshot) -> Option<()>;

const DAMAGES: [Damage; 18] = [
    ("an acknowledged order vanishes", ("orders", "acknowledged"), |_, s| {
        let u = s.users.iter_mut().find(|u| !u.orders.is_empty())?;
        let o = u.orders.remove(0);
        u.lookups.insert(o.client_id, None);
        Some(())
    }),
    (
        "a filled order goes back to partially filled",
        ("orders", "went back"),
        |_, s| {
            let o = filled(s)?;
            o.status = "PARTIALLY_FILLED".into();
            let o = o.clone();
            let u = s.users.iter_mut().find(|u| u.lookups.contains_key(&o.client_id))?;
            u.lookups.insert(o.client_id.clone(), Some(o));
            Some(())
        },
    ),
    ("GET order disagrees with allOrders", ("orders", "GET order"), |_, s| {
        let u = s.users.iter_mut().find(|u| !u.orders.is_empty())?;
        let client_id = u.orders[0].client_id.clone();
        u.lookups.get_mut(&client_id)?.as_mut()?.update_time += 1;
        Some(())
    }),
    ("an order no client sent", ("orders", "no client sent"), |_, s| {
        let u = s.users.iter_mut().find(|u| !u.orders.is_empty())?;
        let mut o = u.orders[0].clone();
        o.client_id = "phantom".into();
        u.orders.push(o);
        Some(())
    }),
    ("a refused order exists", ("orders", "refused"), |m, s| {
        let u = s.users.iter().position(|u| !u.orders.is_empty())?;
        let client_id = &s.users[u].orders[0].client_id;
        m.orders[m.by_client_id[client_id]].placed = Placed::Refused(-2010);
        Some(())
    }),
    ("an acknowledged cancel did not happen", ("orders", "cancel"), |m, s| {
        let open = s
            .users
            .iter()
            .flat_map(|u| &u.orders)
            .find(|o| o.status == "NEW" && o.order_list_id < 0)?;
        m.orders[m.by_client_id[&open.client_id]].cancel = CancelState::Done { executed: 0 };
        Some(())
    }),
    (
        "one side of a trade is lost",
        ("trades", "executed vs its trades"),
        |_, s| {
            let u = s.users.iter_mut().find(|u| !u.trades.is_empty())?;
            u.trades.pop();
            Some(())
        },
    ),
    (
        "the two sides of a trade disagree",
        ("trades", "the two sides differ"),
        |_, s| {
            let u = s.users.iter_mut().find(|u| !u.trades.is_empty())?;
            u.trades[0].price += 1;
            Some(())
        },
    ),
    ("the audit fails", ("conservation", "audit"), |_, s| {
        s.audit.ok = false;
        Some(())
    }),
    ("funds move between two users", ("balances", "free + locked"), |_, s| {
        s.users[0].balances.get_mut("USDT")?.0 += 1;
        s.users[1].balances.get_mut("USDT")?.0 -= 1;
        Some(())
    }),
    ("funds leave a lock", ("locks", "locked vs open orders"), |_, s| {
        let u = s.users.iter_mut().find(|u| u.balances.values().any(|b| b.1 > 0))?;
        let (asset, balance) = u.balances.iter_mut().find(|(_, b)| b.1 > 0)?;
        balance.0 += 1;
        balance.1 -= 1;
        let audit = s.audit.assets.get_mut(asset)?;
        audit.free += 1;
        audit.locked -= 1;
        Some(())
    }),
    ("a deposit is applied twice", ("conservation", "deposits"), |m, s| {
        let t = &m.transfers[0];
        let audit = s.audit.assets.get_mut(t.asset)?;
        audit.deposits += t.amount;
        audit.free += t.amount;
        s.users[t.user].balances.get_mut(t.asset)?.0 += t.amount;
        Some(())
    }),
    ("an acknowledged list vanishes", ("lists", "acknowledged"), |_, s| {
        let u = s.users.iter_mut().find(|u| !u.lists.is_empty())?;
        let l = u.lists.remove(0);
        u.list_lookups.insert(l.client_id, None);
        Some(())
    }),
    (
        "a list's status disagrees with its orders",
        ("lists", "status vs its orders"),
        |_, s| {
            let u = s.users.iter_mut().find(|u| !u.lists.is_empty())?;
            let l = &mut u.lists[0];
            l.order_status = match l.order_status.as_str() {
                "ALL_DONE" => "EXECUTING".into(),
                _ => "ALL_DONE".into(),
            };
            let l = l.clone();
            u.list_lookups.insert(l.client_id.clone(), Some(l));
            Some(())
        },
    ),
    (
        "an OCO's order stays open after the other traded",
        ("lists", "OCO half done"),
        |m, s| {
            // As if the expiry of the order that did not trade were lost.
            let (u, client_id) = list_leg(m, s, ListKind::Oco, |a, b| a.executed > 0 && b.status == "EXPIRED")?;
            set_status(m, &mut s.users[u], &client_id, "NEW")
        },
    ),
    (
        "an OTO's pending order is never placed though its working order filled",
        ("lists", "OTO pending order"),
        |m, s| {
            let (u, client_id) = list_leg(m, s, ListKind::Oto, |w, p| {
                w.status == "FILLED" && p.status != "PENDING_NEW"
            })?;
            set_status(m, &mut s.users[u], &client_id, "PENDING_NEW")
        },
    ),
    (
        "an order of a list names another list",
        ("lists", "its orderListId"),
        |_, s| {
            let u = s.users.iter_mut().find(|u| !u.lists.is_empty())?;
            let client_id = u.lists[0].orders[1].1.clone();
            let o = u.orders.iter_mut().find(|o| o.client_id == client_id)?;
            o.order_list_id += 1;
            let o = o.clone();
            u.lookups.insert(client_id, Some(o));
            Some(())
        },
    ),
    ("a book loses an order", ("books", "vs the open orders"), |_, s| {
        let book = s.books.iter_mut().find(|b| !b.bids.is_empty())?;
        book.bids.remove(0);
        Some(())
    }),
];

/// An order of a list of `kind` whose orders (in either order for an OCO,
/// working and pending for an OTO) pass `pick`: its user and the second
/// order's client id.
fn list_leg(
    m: &Model,
    s: &Snapshot,
    kind: ListKind,
    pick: fn(&SeenOrder, &SeenOrder) -> bool,
) -> Option<(usize, String)> {
    m.lists.iter().filter(|l| l.kind == kind).find_map(|l| {
        let state = &s.users[l.user];
        let a = state.order(l.market, &l.orders[0])?;
        let b = state.order(l.market, &l.orders[1])?;
        let pairs = match kind {
            ListKind::Oco => vec![(a, b), (b, a)],
            ListKind::Oto => vec![(a, b)],
        };
        let (_, second) = pairs.into_iter().find(|(x, y)| pick(x, y))?;
        Some((l.user, second.client_id.clone()))
    })
}

/// Sets an order's status in `allOrders` and in its lookup, and makes
/// the model know the order only as unanswered, as after a kill, so that
/// the check of orders lets it be in any state.
fn set_status(m: &mut Model, state: &mut UserState, client_id: &str, status: &str) -> Option<()> {
    let o = state.orders.iter_mut().find(|o| o.client_id == client_id)?;
    o.status = status.into();
    let o = o.clone();
    state.lookups.insert(client_id.to_string(), Some(o));
    m.orders[m.by_client_id[client_id]].placed = Placed::Unknown;
    Some(())
}

fn filled(s: &mut Snapshot) -> Option<&mut crate::snapshot::SeenOrder> {
    s.users
        .iter_mut()
        .flat_map(|u| &mut u.orders)
        .find(|o| o.status == "FILLED" && o.kind == "LIMIT")
}

pub fn run(args: &Args, dir: &Path) -> Result<(), Failure> {
    scenario(args, dir).map_err(|message| Failure {
        cycle: None,
        data_dir: dir.to_path_buf(),
        message: format!("checker: {message}"),
    })
}

fn scenario(args: &Args, dir: &Path) -> Result<(), String> {
    crate::corruption::helpers_hold()?;
    let server = Server::start(dir, 0, args.options).map_err(|e| format!("start: {e}"))?;
    let mut model = Model::default();
    create_users(&mut model, server.admin, "self")?;
    traffic_at_rest(&mut model, &server, SEED, OPS)?;
    let live = verify(&mut model, &server)?;
    server.kill9();
    for (name, check, damage) in DAMAGES {
        let (mut m, mut s) = (model.clone(), live.clone());
        damage(&mut m, &mut s).ok_or(format!("{name}: the traffic left nothing to damage"))?;
        expect(name, check, check_all(&m, &s).map(|_| ()))?;
    }
    let mut later = live.clone();
    let o = filled(&mut later).ok_or("no filled order")?;
    o.update_time += 1;
    expect(
        "an order's time changes",
        ("identical", "orders"),
        check_identical(&live, &later),
    )
}

fn expect(name: &str, (check, about): (&str, &str), result: Result<(), Mismatch>) -> Result<(), String> {
    match result {
        Err(m) if m.check == check && m.subject.contains(about) => Ok(()),
        Err(m) => Err(format!("{name}: expected check {check} to report {about:?}, got {m}")),
        Ok(()) => Err(format!("{name}: no check reported it")),
    }
}
