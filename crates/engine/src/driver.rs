//! A single-threaded wiring of many account machines and many books.
//!
//! `Exchange` owns one `Accounts` per (simulated) user shard and one `Book`
//! per market and moves messages between them until nothing is left, as the
//! shards would over channels but on one thread. Book work runs in FIFO
//! order, batch by batch: the batch being run, then the work it caused. A
//! book's answers are handed to their account machines at once, in the
//! order the book produced them, so no answer is copied into a queue. Only
//! a cancel answer can cause new book work (the second half of a
//! cancel-replace), and that work runs after what is already waiting.
//! Tests, benchmarks and replays use it; the server wires the same machines
//! over its mesh instead. A fill is delivered to the machine owning the
//! taker and, when different, to the one owning the maker.
//!
//! The caller passes the time and the order ids; the exchange reads neither
//! a clock nor any other outside state. Outputs go into a reused `Output`.

use crate::account::{owner_of, AccountEvent, Accounts, AmendRequest, ListRef, MmpConfig, OrderRef};
use crate::book::{Book, BookCapacity};
use crate::market::MarketSpec;
use crate::msg::{Fill, ToAccount, ToBook};
use crate::num::{Amount, Price};
use crate::order::{AssetId, CancelReplaceMode, ListRequest, MarketId, OrderId, OrderRequest, Side, UserId};
use crate::EngineError;

/// Messages one operation may leave in flight before the queue grows.
pub const QUEUE_MESSAGES_RESERVED_COUNT: usize = 4096;

/// What operations produced; the caller clears it between operations.
#[derive(Debug, Default)]
pub struct Output {
    pub events: Vec<AccountEvent>,
    pub fills: Vec<Fill>,
}

impl Output {
    pub fn with_capacity(count: usize) -> Output {
        Output {
            events: Vec::with_capacity(count),
            fills: Vec::with_capacity(count),
        }
    }

    pub fn clear(&mut self) {
        self.events.clear();
        self.fills.clear();
    }
}

/// Account machines and books wired by a queue.
#[derive(Debug)]
pub struct Exchange {
    pub accounts: Vec<Accounts>,
    pub books: Vec<Book>,
    /// The batch of book work being run; new work collects in `to_book`.
    batch: Vec<ToBook>,
    to_book: Vec<ToBook>,
    to_account: Vec<ToAccount>,
}

impl Exchange {
    pub fn new(specs: &[MarketSpec], shards: u32, capacity: BookCapacity) -> Exchange {
        assert!(shards > 0 && !specs.is_empty());
        let books = specs
            .iter()
            .enumerate()
            .map(|(i, spec)| Book::new(MarketId(i as u16), spec, capacity))
            .collect();
        Exchange {
            accounts: (0..shards).map(|s| Accounts::new(s, shards, specs)).collect(),
            books,
            batch: Vec::with_capacity(QUEUE_MESSAGES_RESERVED_COUNT),
            to_book: Vec::with_capacity(QUEUE_MESSAGES_RESERVED_COUNT),
            to_account: Vec::with_capacity(QUEUE_MESSAGES_RESERVED_COUNT),
        }
    }

    /// An exchange around machines restored from snapshots (or
    /// repartitioned): `accounts[s]` must be machine `s` of
    /// `accounts.len()`, and `books[m]` the book of market `m`.
    pub fn from_parts(accounts: Vec<Accounts>, books: Vec<Book>) -> Exchange {
        let shards = accounts.len() as u32;
        assert!(shards > 0 && !books.is_empty());
        for (shard, machine) in accounts.iter().enumerate() {
            assert_eq!(
                machine.shard_of(),
                (shard as u32, shards),
                "account machine out of place"
            );
        }
        for (market, book) in books.iter().enumerate() {
            assert_eq!(usize::from(book.market().0), market, "book out of place");
        }
        Exchange {
            accounts,
            books,
            batch: Vec::with_capacity(QUEUE_MESSAGES_RESERVED_COUNT),
            to_book: Vec::with_capacity(QUEUE_MESSAGES_RESERVED_COUNT),
            to_account: Vec::with_capacity(QUEUE_MESSAGES_RESERVED_COUNT),
        }
    }

    fn shard(&self, user: UserId) -> usize {
        owner_of(user, self.accounts.len() as u32) as usize
    }

    pub fn account(&self, user: UserId) -> &Accounts {
        &self.accounts[self.shard(user)]
    }

    pub fn asset_id(&self, name: &str) -> Option<AssetId> {
        self.accounts[0].asset_id(name)
    }

    pub fn deposit(&mut self, user: UserId, asset: AssetId, amount: Amount) -> Result<(), EngineError> {
        let shard = self.shard(user);
        self.accounts[shard].deposit(user, asset, amount)
    }

    pub fn withdraw(&mut self, user: UserId, asset: AssetId, amount: Amount) -> Result<(), EngineError> {
        let shard = self.shard(user);
        self.accounts[shard].withdraw(user, asset, amount)
    }

    /// The price a market order of `side` is sized against: the best
    /// opposite price, else the last trade price.
    pub fn reference_price(&self, market: MarketId, side: Side) -> Option<Price> {
        self.books[usize::from(market.0)].reference_price(side)
    }

    /// Places an order and runs every message it causes. A synchronous
    /// refusal is returned; the outcome otherwise is an
    /// `AccountEvent::Placed` in `out`.
    pub fn place(
        &mut self,
        user: UserId,
        request: &OrderRequest,
        order_id: OrderId,
        time_ms: u64,
        out: &mut Output,
    ) -> Result<(), EngineError> {
        let reference = self.reference_price(request.market, request.side);
        let shard = self.shard(user);
        self.to_book.clear();
        let placed = self.accounts[shard].place(user, request, order_id, reference, time_ms, &mut self.to_book);
        self.run(out);
        placed
    }

    /// Places an order list (see `Accounts::place_list`); the outcome is
    /// an `AccountEvent::ListPlaced` in `out`.
    pub fn place_list(
        &mut self,
        user: UserId,
        request: &ListRequest,
        ids: [OrderId; 3],
        time_ms: u64,
        out: &mut Output,
    ) -> Result<(), EngineError> {
        let first = &request.orders[0];
        let reference = self.reference_price(first.market, first.side);
        let shard = self.shard(user);
        self.to_book.clear();
        let placed = self.accounts[shard].place_list(user, request, ids, reference, time_ms, &mut self.to_book);
        self.run(out);
        placed
    }

    /// Cancels an order list; the outcome is an
    /// `AccountEvent::ListCanceled` in `out`.
    pub fn cancel_list(
        &mut self,
        user: UserId,
        market: MarketId,
        target: ListRef,
        time_ms: u64,
        out: &mut Output,
    ) -> Result<u64, EngineError> {
        let shard = self.shard(user);
        self.to_book.clear();
        let sent = self.accounts[shard].cancel_list(user, market, target, time_ms, &mut self.to_book, &mut out.events);
        self.run(out);
        sent
    }

    pub fn cancel(
        &mut self,
        user: UserId,
        market: MarketId,
        target: OrderRef,
        time_ms: u64,
        out: &mut Output,
    ) -> Result<OrderId, EngineError> {
        let shard = self.shard(user);
        self.to_book.clear();
        let sent = self.accounts[shard].cancel(user, market, target, time_ms, &mut self.to_book);
        self.run(out);
        sent
    }

    /// Amends an order's quantity (see `Accounts::amend`); the outcome is
    /// an `AccountEvent::Amended` in `out`.
    pub fn amend(
        &mut self,
        user: UserId,
        request: &AmendRequest,
        time_ms: u64,
        out: &mut Output,
    ) -> Result<OrderId, EngineError> {
        let shard = self.shard(user);
        self.to_book.clear();
        let sent = self.accounts[shard].amend(user, request, time_ms, &mut self.to_book);
        self.run(out);
        sent
    }

    /// Sets or removes `user`'s market maker protection in `market`.
    pub fn set_mmp(&mut self, user: UserId, market: MarketId, config: Option<MmpConfig>) {
        let shard = self.shard(user);
        self.accounts[shard].set_mmp(user, market, config);
    }

    /// Ends `user`'s protection freeze in `market`.
    pub fn reset_mmp(&mut self, user: UserId, market: MarketId) {
        let shard = self.shard(user);
        self.accounts[shard].reset_mmp(user, market);
    }

    pub fn cancel_all(&mut self, user: UserId, market: MarketId, time_ms: u64, out: &mut Output) -> usize {
        let shard = self.shard(user);
        self.to_book.clear();
        let count = self.accounts[shard].cancel_all(user, market, time_ms, &mut self.to_book);
        self.run(out);
        count
    }

    #[allow(clippy::too_many_arguments)]
    pub fn cancel_replace(
        &mut self,
        user: UserId,
        target: OrderRef,
        mode: CancelReplaceMode,
        request: &OrderRequest,
        new_order_id: OrderId,
        time_ms: u64,
        out: &mut Output,
    ) {
        let reference = self.reference_price(request.market, request.side);
        let shard = self.shard(user);
        self.to_book.clear();
        self.accounts[shard].cancel_replace(
            user,
            target,
            mode,
            request,
            new_order_id,
            reference,
            time_ms,
            &mut self.to_book,
            &mut out.events,
        );
        self.run(out);
    }

    /// Runs book work until none is left, delivering each answer as the
    /// book produces it.
    fn run(&mut self, out: &mut Output) {
        while !self.to_book.is_empty() {
            // Both Vecs keep their capacity across the swap: no allocation.
            std::mem::swap(&mut self.batch, &mut self.to_book);
            for b in 0..self.batch.len() {
                let msg = self.batch[b];
                self.to_account.clear();
                self.books[usize::from(msg.market().0)].handle(msg, &mut self.to_account);
                for i in 0..self.to_account.len() {
                    let msg = self.to_account[i];
                    self.deliver(msg, out);
                }
            }
            self.batch.clear();
        }
    }

    /// Hands one book answer to the machine owning its user and, for a fill
    /// whose maker lives elsewhere, to the maker's machine too.
    fn deliver(&mut self, msg: ToAccount, out: &mut Output) {
        let shards = self.accounts.len() as u32;
        let owner = owner_of(msg.user(), shards) as usize;
        self.accounts[owner].handle(msg, &mut self.to_book, &mut out.events);
        if let ToAccount::Fill(fill) = msg {
            out.fills.push(fill);
            let maker_owner = owner_of(fill.maker_user, shards) as usize;
            if maker_owner != owner {
                self.accounts[maker_owner].handle(msg, &mut self.to_book, &mut out.events);
            }
        }
    }

    /// Every machine's invariants, plus: fills moved as much of each asset
    /// out of machines as into them.
    pub fn check_invariants(&self) {
        for accounts in &self.accounts {
            accounts.check_invariants();
        }
        self.check_money_invariants();
    }

    /// The books, and conservation and locks on every account machine
    /// without their history rings (`Accounts::check_money_invariants`).
    pub fn check_money_invariants(&self) {
        for book in &self.books {
            book.check_invariants();
        }
        for accounts in &self.accounts {
            accounts.check_money_invariants();
        }
        let assets = self.accounts[0].asset_names().len();
        for asset in 0..assets {
            let net: i128 = self.accounts.iter().map(|a| a.settled_in(AssetId(asset as u16))).sum();
            assert_eq!(net, 0, "asset {asset} settled unevenly across machines");
        }
    }

    /// Σ free + locked of all users plus fees, per asset, over all machines.
    pub fn total_held(&self, asset: AssetId) -> i128 {
        self.accounts
            .iter()
            .map(|a| i128::from(a.fees(asset).0) + a.held(asset))
            .sum()
    }

    pub fn state_hash(&self) -> u64 {
        let mut h = crate::hash::StateHasher::default();
        for a in &self.accounts {
            h.u64(a.state_hash());
        }
        for b in &self.books {
            h.u64(b.state_hash());
        }
        h.finish()
    }
}
