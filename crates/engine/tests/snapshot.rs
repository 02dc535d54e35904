//! Snapshots: every machine of an exchange archived with rkyv and read back
//! has the same state hash, and the restored exchange answers the same
//! random operations exactly as the original does (events, fills, hashes).

mod common;

use common::ops::Driver;
use common::{limit, specs};
use tradsys_engine::account::{AccountEvent, Accounts, OrderRef};
use tradsys_engine::book::{Book, BookCapacity};
use tradsys_engine::driver::{Exchange, Output};
use tradsys_engine::msg::{ToAccount, ToBook};
use tradsys_engine::num::{Amount, Price};
use tradsys_engine::order::{AssetId, CancelReplaceMode, MarketId, Side, TimeInForce};
use tradsys_engine::snapshot::SnapshotError;

fn capacity() -> BookCapacity {
    BookCapacity {
        orders_max: 4096,
        levels_max: 256,
    }
}

/// Every machine through its snapshot bytes.
fn restore(exchange: &Exchange) -> Exchange {
    let accounts = exchange.accounts.iter().map(|a| {
        let bytes = a.to_snapshot_bytes().unwrap();
        Accounts::from_snapshot_bytes(&bytes).unwrap()
    });
    let books = exchange.books.iter().map(|b| {
        let bytes = b.to_snapshot_bytes().unwrap();
        Book::from_snapshot_bytes(&bytes).unwrap()
    });
    Exchange::from_parts(accounts.collect(), books.collect())
}

fn assert_same_state(original: &Exchange, restored: &Exchange) {
    for (a, b) in original.accounts.iter().zip(&restored.accounts) {
        assert_eq!(a.state_hash(), b.state_hash(), "account machine {:?}", a.shard_of());
    }
    for (a, b) in original.books.iter().zip(&restored.books) {
        assert_eq!(a.state_hash(), b.state_hash(), "book {:?}", a.market());
        assert_eq!(a.update_id(), b.update_id());
        assert_eq!(a.trades_count(), b.trades_count());
    }
    assert_eq!(original.state_hash(), restored.state_hash());
}

/// Runs `rounds` × `ops` random operations on an exchange and on a copy
/// restored from its snapshots, restoring the copy again after each round
/// (so a restored machine's snapshot is tested too), and compares every
/// answer.
fn run(seed: u64, shards: u32, rounds: u32, ops: u32) {
    let specs = specs();
    let mut original = Exchange::new(&specs, shards, capacity());
    let mut driver = Driver::new(seed, &specs);
    let mut out = Output::with_capacity(256);
    for _ in 0..ops {
        driver.step(&mut original, &mut out);
    }
    let mut restored = restore(&original);
    let mut replay = driver.clone();
    let mut out_restored = Output::with_capacity(256);
    let mut resting_seen = 0;
    for round in 0..rounds {
        assert_same_state(&original, &restored);
        resting_seen += original.books.iter().map(Book::open_orders_count).sum::<usize>();
        restored.check_invariants();
        for i in 0..ops {
            let want = driver.step(&mut original, &mut out);
            let got = replay.step(&mut restored, &mut out_restored);
            assert_eq!(got, want, "seed {seed}, round {round}, step {i} after the restore");
        }
        restored = restore(&restored);
    }
    assert_same_state(&original, &restored);
    let traded: u64 = original.books.iter().map(|b| b.trades_count()).sum();
    assert!(
        resting_seen > 30 && traded > 100,
        "{resting_seen} orders resting at snapshots, {traded} trades"
    );
}

#[test]
fn restored_exchange_with_one_account_machine_answers_like_the_original() {
    run(11, 1, 3, 20_000);
}

#[test]
fn restored_exchange_with_three_account_machines_answers_like_the_original() {
    run(12, 3, 3, 20_000);
}

#[test]
fn restored_exchange_with_five_account_machines_answers_like_the_original() {
    run(13, 5, 2, 30_000);
}

/// The derives are the API: plain `rkyv::to_bytes` / `rkyv::from_bytes`
/// give the machine back too.
#[test]
fn plain_rkyv_round_trip_keeps_the_state() {
    let specs = specs();
    let mut exchange = Exchange::new(&specs, 2, capacity());
    let mut driver = Driver::new(21, &specs);
    let mut out = Output::default();
    for _ in 0..3000 {
        driver.step(&mut exchange, &mut out);
    }
    for machine in &exchange.accounts {
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(machine).unwrap();
        let back = rkyv::from_bytes::<Accounts, rkyv::rancor::Error>(&bytes).unwrap();
        back.check_invariants();
        assert_eq!(back.state_hash(), machine.state_hash());
    }
    for book in &exchange.books {
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(book).unwrap();
        let back = rkyv::from_bytes::<Book, rkyv::rancor::Error>(&bytes).unwrap();
        back.check_invariants();
        assert_eq!(back.state_hash(), book.state_hash());
    }
}

#[test]
fn truncated_snapshots_are_refused() {
    let specs = specs();
    let mut exchange = Exchange::new(&specs, 1, capacity());
    let mut driver = Driver::new(31, &specs);
    let mut out = Output::default();
    for _ in 0..500 {
        driver.step(&mut exchange, &mut out);
    }
    let accounts = exchange.accounts[0].to_snapshot_bytes().unwrap();
    let book = exchange.books[0].to_snapshot_bytes().unwrap();
    for cut in [0, 1, accounts.len() / 2, accounts.len() - 1] {
        let result = Accounts::from_snapshot_bytes(&accounts[..cut]);
        assert!(matches!(result, Err(SnapshotError::Decode(_))), "cut at {cut}");
    }
    for cut in [0, book.len() / 2, book.len() - 1] {
        let result = Book::from_snapshot_bytes(&book[..cut]);
        assert!(matches!(result, Err(SnapshotError::Decode(_))), "cut at {cut}");
    }
}

/// A machine snapshotted while a cancel-replace waits for the book's
/// answer finishes it after the restore exactly as the original does.
#[test]
fn cancel_replace_in_flight_survives_a_snapshot() {
    let specs = specs();
    let mut accounts = Accounts::new(0, 1, &specs);
    let mut book = Book::new(MarketId(0), &specs[0], capacity());
    let usdt = accounts.asset_id("USDT").unwrap();
    assert_eq!(usdt, AssetId(1));
    accounts.deposit(7, usdt, Amount(1_000 * 100_000_000)).unwrap();
    let (mut to_book, mut to_account, mut events) = (Vec::new(), Vec::new(), Vec::new());
    let first = limit(0, Side::Buy, "100", "1", TimeInForce::Gtc);
    accounts.place(7, &first, 1, None, 1, &mut to_book).unwrap();
    for msg in to_book.drain(..) {
        book.handle(msg, &mut to_account);
    }
    for msg in to_account.drain(..) {
        accounts.handle(msg, &mut to_book, &mut events);
    }
    let second = limit(0, Side::Buy, "101", "2", TimeInForce::Gtc);
    let mode = CancelReplaceMode::StopOnFailure;
    accounts.cancel_replace(7, OrderRef::Id(1), mode, &second, 2, None, 2, &mut to_book, &mut events);
    assert!(matches!(to_book[..], [ToBook::Cancel { order_id: 1, .. }]));

    let mut restored_accounts = Accounts::from_snapshot_bytes(&accounts.to_snapshot_bytes().unwrap()).unwrap();
    let mut restored_book = Book::from_snapshot_bytes(&book.to_snapshot_bytes().unwrap()).unwrap();
    let finish = |accounts: &mut Accounts, book: &mut Book, mut to_book: Vec<ToBook>| {
        let (mut to_account, mut events): (Vec<ToAccount>, Vec<AccountEvent>) = (Vec::new(), Vec::new());
        while !to_book.is_empty() {
            for msg in std::mem::take(&mut to_book) {
                book.handle(msg, &mut to_account);
            }
            for msg in to_account.drain(..) {
                accounts.handle(msg, &mut to_book, &mut events);
            }
        }
        accounts.check_invariants();
        events
    };
    let want = finish(&mut accounts, &mut book, to_book.clone());
    let got = finish(&mut restored_accounts, &mut restored_book, to_book);
    assert_eq!(got, want);
    assert!(matches!(
        want.last(),
        Some(AccountEvent::CancelReplaced { order_id: 2, .. })
    ));
    assert_eq!(restored_accounts.state_hash(), accounts.state_hash());
    assert_eq!(restored_book.best_bid().map(|b| b.0), Some(Price(101 * 100_000_000)));
}
