//! Moving users between account machines when the number of shards changes
//! (recovery from a snapshot taken with another shard count).
//!
//! `repartition` takes the complete, quiescent set of machines and returns
//! `shards` new ones in which every user lives on `owner_of(user, shards)`
//! with everything a query can see: balances, open orders (their locks,
//! clientOrderIds and per-market order), the finished orders, trades and
//! amendments that their history walks return, and the order-id index.
//!
//! History: each new machine's rings receive, per kind, the records the old
//! machines' walks could see, merged across old machines by time (each old
//! machine's records stay in the order its ring received them, so each
//! user's stay in theirs). A ring keeps its usual capacity unless the
//! records to carry over need more; then it grows to the next power of two,
//! so that no query loses a record.
//!
//! Ledgers: fees (the machines' fee accounts) and all deposits and
//! withdrawals are carried by machine 0; each machine's `settled_in` is
//! then set so that its conservation invariant holds. Because the old set
//! conserved every asset, the new `settled_in`s sum to zero, and the global
//! sums of deposits, withdrawals, fees and Σ free + locked are unchanged
//! (asserted).
//!
//! **Invariant:** no message is in flight to or from the machines: no
//! cancel-replace or amendment waits on a book (asserted), and the caller has delivered
//! every book answer. The books are untouched: they know users and order
//! ids, not machines.

use super::lists::ORDER_LISTS_CLOSED_PER_MACHINE_MAX;
use super::{owner_of, Accounts, Amendment, Chain, History, Ledger, Open, User, NIL};
use super::{AMENDS_PER_MACHINE_MAX, ORDERS_CLOSED_PER_MACHINE_MAX, TRADES_PER_MACHINE_MAX};
use crate::order::{AssetId, OrderListView, OrderView, UserTrade};

/// One history record on its way to a new machine: the user's index in
/// that machine and the record.
type Moving<T> = (u32, T);
/// Record lists, one per machine.
type ByMachine<T> = Vec<Vec<Moving<T>>>;

/// Rebuilds `machines` (machine `s` of `machines.len()` at index `s`) as
/// `shards` machines; see the module documentation.
pub fn repartition(machines: Vec<Accounts>, shards: u32) -> Vec<Accounts> {
    assert!(shards > 0, "repartition to no machines");
    check_complete(&machines);
    let Some(first) = machines.first() else {
        unreachable!("check_complete refuses an empty set")
    };
    let mut target: Vec<Accounts> = (0..shards).map(|s| Accounts::new(s, shards, &first.specs)).collect();
    let mut closed: Vec<ByMachine<OrderView>> = vec![Vec::new(); target.len()];
    let mut trades: Vec<ByMachine<UserTrade>> = vec![Vec::new(); target.len()];
    let mut amends: Vec<ByMachine<Amendment>> = vec![Vec::new(); target.len()];
    let mut lists: Vec<ByMachine<OrderListView>> = vec![Vec::new(); target.len()];
    for machine in &machines {
        let moved = move_users(machine, &mut target, shards);
        for (shard, records) in moved.closed.into_iter().enumerate() {
            closed[shard].push(records);
        }
        for (shard, records) in moved.trades.into_iter().enumerate() {
            trades[shard].push(records);
        }
        for (shard, records) in moved.amends.into_iter().enumerate() {
            amends[shard].push(records);
        }
        for (shard, records) in moved.lists.into_iter().enumerate() {
            lists[shard].push(records);
        }
    }
    let histories = closed.into_iter().zip(trades).zip(amends).zip(lists);
    for (machine, (((closed, trades), amends), lists)) in target.iter_mut().zip(histories) {
        let closed = merge_by_time(closed, |v| v.update_time_ms);
        machine.closed = replay(closed, ORDERS_CLOSED_PER_MACHINE_MAX, &mut machine.users, |u| {
            &mut u.closed
        });
        let trades = merge_by_time(trades, |t| t.time_ms);
        machine.trades = replay(trades, TRADES_PER_MACHINE_MAX, &mut machine.users, |u| &mut u.trades);
        let amends = merge_by_time(amends, |a| a.time_ms);
        machine.amends = replay(amends, AMENDS_PER_MACHINE_MAX, &mut machine.users, |u| &mut u.amends);
        let lists = merge_by_time(lists, |l| l.update_time_ms);
        machine.closed_lists = replay(lists, ORDER_LISTS_CLOSED_PER_MACHINE_MAX, &mut machine.users, |u| {
            &mut u.lists
        });
    }
    spread_ledgers(&machines, &mut target);
    for machine in &target {
        machine.check_invariants();
    }
    check_conserved(&machines, &target);
    target
}

/// The machines form one complete set, share their markets and have
/// nothing in flight.
fn check_complete(machines: &[Accounts]) {
    assert!(!machines.is_empty(), "no account machines to repartition");
    let shards = machines.len() as u32;
    for (shard, machine) in machines.iter().enumerate() {
        assert_eq!(
            (machine.shard, machine.shards),
            (shard as u32, shards),
            "machine out of place"
        );
        assert!(
            machine.replaces.is_empty(),
            "a cancel-replace is in flight on machine {shard}"
        );
        assert!(
            machine.amends_pending.is_empty(),
            "an amendment is in flight on machine {shard}"
        );
        assert!(machine.specs == machines[0].specs && machine.assets == machines[0].assets);
        machine.check_invariants();
    }
}

/// Moves every user of `machine` (balances, open orders) to its new owner
/// in `target` and returns, per new machine, the user's visible history
/// records in the order `machine`'s rings received them.
fn move_users(machine: &Accounts, target: &mut [Accounts], shards: u32) -> Moved {
    let mut closed: Vec<Vec<(u64, Moving<OrderView>)>> = vec![Vec::new(); target.len()];
    let mut trades: Vec<Vec<(u64, Moving<UserTrade>)>> = vec![Vec::new(); target.len()];
    let mut amends: Vec<Vec<(u64, Moving<Amendment>)>> = vec![Vec::new(); target.len()];
    let mut lists: Vec<Vec<(u64, Moving<OrderListView>)>> = vec![Vec::new(); target.len()];
    for user in &machine.users {
        let shard = owner_of(user.id, shards) as usize;
        let index = move_user(machine, user, &mut target[shard]);
        let records = machine.closed.oldest_first_seq(user.closed);
        closed[shard].extend(records.map(|(seq, view)| (seq, (index, *view))));
        let records = machine.trades.oldest_first_seq(user.trades);
        trades[shard].extend(records.map(|(seq, trade)| (seq, (index, *trade))));
        let records = machine.amends.oldest_first_seq(user.amends);
        amends[shard].extend(records.map(|(seq, amend)| (seq, (index, *amend))));
        let records = machine.closed_lists.oldest_first_seq(user.lists);
        lists[shard].extend(records.map(|(seq, list)| (seq, (index, *list))));
    }
    for (&id, &state) in &machine.lists {
        target[owner_of(state.view.user, shards) as usize]
            .lists
            .insert(id, state);
    }
    for (&(user, market), &state) in &machine.mmp {
        target[owner_of(user, shards) as usize]
            .mmp
            .insert((user, market), state);
    }
    Moved {
        closed: closed.into_iter().map(in_ring_order).collect(),
        trades: trades.into_iter().map(in_ring_order).collect(),
        amends: amends.into_iter().map(in_ring_order).collect(),
        lists: lists.into_iter().map(in_ring_order).collect(),
    }
}

/// One old machine's history records, per new machine.
struct Moved {
    closed: ByMachine<OrderView>,
    trades: ByMachine<UserTrade>,
    amends: ByMachine<Amendment>,
    lists: ByMachine<OrderListView>,
}

/// Records by the sequence number their old ring gave them.
fn in_ring_order<T>(mut records: Vec<(u64, Moving<T>)>) -> Vec<Moving<T>> {
    records.sort_unstable_by_key(|&(seq, _)| seq);
    records.into_iter().map(|(_, record)| record).collect()
}

/// Creates `user` on `to` with its balances and open orders (in each
/// market oldest first); returns its index there.
fn move_user(from: &Accounts, user: &User, to: &mut Accounts) -> u32 {
    assert!(
        !to.user_index.contains_key(&user.id),
        "user {} on two machines",
        user.id
    );
    let index = to.user_slot(user.id);
    to.users[index as usize].balances.clone_from(&user.balances);
    for list in &user.open {
        let mut at = list.head;
        while at != NIL {
            let open = from.slots[at as usize];
            to.insert_open(Open {
                user: index,
                prev: NIL,
                next: NIL,
                ..open
            });
            at = open.next;
        }
    }
    index
}

/// Merges record sequences into one, oldest `time` first, keeping each
/// sequence's own order (ties go to the earlier sequence). There are as
/// many sequences as old machines, so a scan of their heads is enough.
fn merge_by_time<T: Copy>(sources: Vec<Vec<Moving<T>>>, time: impl Fn(&T) -> u64) -> Vec<Moving<T>> {
    let total = sources.iter().map(Vec::len).sum();
    let mut merged = Vec::with_capacity(total);
    let mut heads = vec![0_usize; sources.len()];
    while merged.len() < total {
        let mut pick: Option<(u64, usize)> = None;
        for (source, records) in sources.iter().enumerate() {
            let Some(record) = records.get(heads[source]) else {
                continue;
            };
            let at = time(&record.1);
            if pick.is_none_or(|(best, _)| at < best) {
                pick = Some((at, source));
            }
        }
        let Some((_, source)) = pick else {
            unreachable!("records are left while every source is empty")
        };
        merged.push(sources[source][heads[source]]);
        heads[source] += 1;
    }
    merged
}

/// A new ring holding `records` in order, each chained to its user: of
/// the `usual` capacity, or larger when the records need it.
fn replay<T: Copy, const PER_USER_MAX: usize>(
    records: Vec<Moving<T>>,
    usual: usize,
    users: &mut [User],
    chain: impl Fn(&mut User) -> &mut Chain,
) -> History<T, PER_USER_MAX> {
    let mut history = History::new(usual.max(records.len().next_power_of_two()));
    for (user, record) in records {
        history.push(chain(&mut users[user as usize]), record);
    }
    history
}

/// Fees, deposits and withdrawals go to machine 0; each machine's
/// `settled_in` balances its own books.
fn spread_ledgers(old: &[Accounts], target: &mut [Accounts]) {
    let assets = old[0].assets.len();
    for asset in 0..assets {
        let mut total = Ledger::default();
        for machine in old {
            let ledger = &machine.ledger[asset];
            total.deposits += ledger.deposits;
            total.withdrawals += ledger.withdrawals;
            total.fees = total.fees.checked_add(ledger.fees).unwrap_or(i64::MAX);
            assert!(total.fees < i64::MAX, "fees in asset {asset} overflow one machine");
        }
        for (shard, machine) in target.iter_mut().enumerate() {
            let held = machine.held(AssetId(asset as u16));
            let ledger = &mut machine.ledger[asset];
            if shard == 0 {
                *ledger = Ledger { settled_in: 0, ..total };
            }
            ledger.settled_in = held + i128::from(ledger.fees) - ledger.deposits + ledger.withdrawals;
        }
    }
}

/// Per asset, the sums of deposits, withdrawals, fees and Σ free + locked
/// over all machines are what they were, and fills' net moves sum to zero.
fn check_conserved(old: &[Accounts], new: &[Accounts]) {
    type Sums = (i128, i128, i128, i128, i128);
    let sums = |machines: &[Accounts], asset: usize| -> Sums {
        let mut sums: Sums = (0, 0, 0, 0, 0);
        for machine in machines {
            let ledger = &machine.ledger[asset];
            sums.0 += ledger.deposits;
            sums.1 += ledger.withdrawals;
            sums.2 += i128::from(ledger.fees);
            sums.3 += machine.held(AssetId(asset as u16));
            sums.4 += ledger.settled_in;
        }
        sums
    };
    for asset in 0..old[0].assets.len() {
        let (before, after) = (sums(old, asset), sums(new, asset));
        assert_eq!(before, after, "asset {asset} not conserved by the repartition");
        assert_eq!(after.4, 0, "asset {asset} settled unevenly");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner_index(machines: &[Accounts], user: crate::order::UserId) -> Option<usize> {
        machines.iter().position(|m| m.user_index.contains_key(&user))
    }

    #[test]
    fn merge_keeps_each_source_in_order_and_interleaves_by_time() {
        let sources = vec![vec![(0, 5_u64), (1, 1), (0, 9)], vec![(2, 3), (3, 7)]];
        let merged = merge_by_time(sources, |&t| t);
        assert_eq!(merged, vec![(2, 3), (0, 5), (1, 1), (3, 7), (0, 9)]);
    }

    #[test]
    fn users_land_on_their_owner() {
        let specs = crate::market::parse_markets(include_str!("../../../../shards/markets.toml")).unwrap();
        let mut machines: Vec<Accounts> = (0..3).map(|s| Accounts::new(s, 3, &specs)).collect();
        for user in 1..=40_u64 {
            let shard = owner_of(user, 3) as usize;
            machines[shard]
                .deposit(user, AssetId(1), crate::num::Amount(user as i64))
                .unwrap();
        }
        let moved = repartition(machines, 5);
        for user in 1..=40_u64 {
            assert_eq!(owner_index(&moved, user), Some(owner_of(user, 5) as usize));
            let balance = moved[owner_of(user, 5) as usize].balance(user, AssetId(1));
            assert_eq!(balance.free.0, user as i64);
        }
    }
}
