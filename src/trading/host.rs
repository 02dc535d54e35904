//! One shard's trading state: the account machine of the users it owns, the
//! books of the markets it owns, and the routing of engine messages between
//! them and other shards.
//!
//! This is `driver::Exchange` spread over cores: messages for machines on
//! this shard are run here at once, in order, until nothing is left;
//! messages for machines on other shards are appended to `outgoing`, which
//! the caller hands to the mesh. When a request's user and market live on
//! the shard that received it, an order completes without any message.
//! In a cluster, messages for a user or market of another instance go to
//! the numbered links of `remote` (`Output::remote`), and messages from
//! other instances come in through `receive_remote` on one shard, which
//! passes each on to the shard it is for.
//!
//! Callers wait for an order's outcome through a waiter registered before
//! the order is placed; the account machine's events complete it.
//!
//! **Invariant:** `Trading` does no I/O and knows neither JSON nor the
//! executor: time, ids and randomness are inputs.

use crate::auth::{key_for, KeyMaterial, KeyRecord, KeyStore, KeyType, Scopes, KEY_USER_DIGITS};
use crate::cluster::Place;
use crate::oneshot;
use crate::trading::msg::EngineMsg;
use crate::trading::record::{CancelReplaceRecord, ListRecord, PublicKeyRecord, Record};
use crate::trading::remote::{Arrival, RemoteImage, RemoteLinks, OUTBOX_HARD_MAX, OUTBOX_PER_INSTANCE_MAX};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use tradsys_engine::account::{
    asset_names, owner_of, AccountEvent, Accounts, AmendRequest, Amendment, Balance, ListRef, MmpConfig,
    NewOrderResult, OrderRef,
};
use tradsys_engine::book::{Book, BookCapacity};
use tradsys_engine::hash::FastMap;
use tradsys_engine::market::MarketSpec;
use tradsys_engine::msg::{ToAccount, ToBook};
use tradsys_engine::num::{Amount, Price, Qty};
use tradsys_engine::order::{
    AssetId, CancelReplaceMode, ClientOrderId, ListRequest, MarketId, OrderId, OrderListView, OrderRequest,
    OrderStatus, OrderView, Side, UserId, UserTrade,
};
use tradsys_engine::EngineError;

/// Users one shard keeps (admin-created; each holds balances and history).
pub const USERS_PER_SHARD_MAX: usize = 1 << 20;
/// User-data-stream listen keys one shard keeps.
pub const LISTEN_KEYS_PER_SHARD_MAX: usize = 1 << 16;
/// Listen keys one user may hold at once.
pub const LISTEN_KEYS_PER_USER_MAX: usize = 8;
/// How long a listen key lives without a keepalive, unless configured
/// otherwise (`listen_key_ttl_ms`).
pub const LISTEN_KEY_TTL_MS: u64 = 60 * 60 * 1000;
/// Operations waiting for the engine on one shard.
pub const WAITERS_PER_SHARD_MAX: usize = 1 << 16;
/// The demo user's id; admin-created users start above it.
pub const DEMO_USER_ID: UserId = 1;

/// Which shard owns each market: the one pinned in markets.toml, else a
/// stable hash of the symbol.
pub fn market_shards(specs: &[MarketSpec], shards: u32) -> Vec<u32> {
    specs
        .iter()
        .map(|spec| match spec.shard {
            Some(pinned) => pinned,
            None => (fnv1a(spec.symbol.as_bytes()) % u64::from(shards)) as u32,
        })
        .collect()
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// What a placed order came to: its state after matching, and the fills it
/// took as the taker, in order.
#[derive(Debug)]
pub struct PlaceOutcome {
    pub result: Result<OrderView, EngineError>,
    pub fills: Vec<UserTrade>,
}

/// What a cancel-replace came to.
#[derive(Debug)]
pub struct ReplaceOutcome {
    pub cancel: Result<OrderView, EngineError>,
    pub new: NewOrderResult,
    pub fills: Vec<UserTrade>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum WaitKey {
    Place(OrderId),
    Cancel(OrderId),
    CancelAll(UserId, MarketId),
    Replace(OrderId),
    Amend(OrderId),
    PlaceList(OrderId),
    CancelList(OrderId),
}

/// What an order list operation came to: the list, or why it was refused.
pub type ListOutcome = Result<OrderListView, EngineError>;

/// What an amendment came to: the order as amended and the amendment.
pub type AmendOutcome = Result<(OrderView, Amendment), EngineError>;

enum Waiter {
    Place(Vec<UserTrade>, oneshot::Sender<PlaceOutcome>),
    Cancel(oneshot::Sender<Result<OrderView, EngineError>>),
    CancelAll(usize, Vec<OrderView>, oneshot::Sender<Vec<OrderView>>),
    Replace(Vec<UserTrade>, oneshot::Sender<ReplaceOutcome>),
    Amend(oneshot::Sender<AmendOutcome>),
    List(oneshot::Sender<ListOutcome>),
}

/// WebSocket API sessions of one shard's users that may hold
/// cancel-on-disconnect guards at once.
pub const GUARDS_PER_SHARD_MAX: usize = 65_536;

/// Instances a cluster may have (`cluster::INSTANCES_MAX`).
const INSTANCES: usize = crate::cluster::INSTANCES_MAX;

/// Where an engine message goes: a shard of this instance, or another
/// instance of the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dest {
    Shard(u32),
    Instance(u32),
}

/// Why an operation could not start.
#[derive(Debug, thiserror::Error)]
pub enum TradingError {
    #[error("{0}")]
    Engine(#[from] EngineError),
    #[error("Too many operations in flight; try again.")]
    Busy,
    #[error("Market is closed.")]
    Halted,
    #[error("unknown user {0}")]
    UnknownUser(UserId),
    #[error("user limit reached")]
    UsersFull,
    #[error("Unknown asset.")]
    UnknownAsset,
    /// Another instance has not acknowledged what this shard sent it for
    /// so long that its outbox is full (see `remote`).
    #[error("instance {0} has not acknowledged this shard's messages")]
    Unacknowledged(usize),
}

/// Per-asset totals of one shard, for the audit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AssetTotals {
    pub deposits: i128,
    pub withdrawals: i128,
    pub free: i128,
    pub locked: i128,
    pub fees: i128,
    /// Net amount fills moved into this shard's users from other shards.
    pub settled_in: i128,
}

/// Orders by where their user and market live, for /metrics.
#[derive(Clone, Copy, Debug, Default)]
pub struct OrderCounters {
    /// The market lived on the user's shard: no engine message left it.
    pub local: u64,
    /// The market lived on another shard.
    pub cross_shard: u64,
}

/// A change of one user's order, for the user's data streams: the order's
/// state, the trade that caused it (if one did), and the user's balances of
/// the market's two assets after it.
#[derive(Clone, Debug)]
pub struct UserUpdate {
    pub user: UserId,
    pub view: OrderView,
    pub trade: Option<UserTrade>,
    pub balances: [(AssetId, Balance); 2],
    /// For a cancel: the client id the cancel request carried (Binance's
    /// `c` of a CANCELED report; the order's own id goes to `C`).
    pub cancel_client_id: Option<ClientOrderId>,
    /// The `NEW` report of an order that traded or expired on arrival: for
    /// the user data stream only, since the store gets the order's real
    /// state next.
    pub announcement: bool,
    /// For an amendment that left the order resting: the client id the
    /// order had before (Binance's `C` of a REPLACED report).
    pub amended_from: Option<ClientOrderId>,
}

/// An order list began or ended, with its orders' client ids (the
/// `listStatus` event names them, and the shards that send it to the
/// user's connections do not hold the orders).
#[derive(Clone, Copy, Debug)]
pub struct ListUpdate {
    pub view: OrderListView,
    pub client_order_ids: [Option<ClientOrderId>; 3],
}

/// A user's market maker protection fired at `time_ms`: their orders in
/// `market` are being canceled and new ones refused until
/// `frozen_until_ms` (`u64::MAX`: until reset).
#[derive(Clone, Copy, Debug)]
pub struct MmpEvent {
    pub user: UserId,
    pub market: MarketId,
    pub time_ms: u64,
    pub frozen_until_ms: u64,
}

/// A deposit or withdrawal of one user, for `balanceUpdate`: the signed
/// change and the asset's balance after it.
#[derive(Clone, Copy, Debug)]
pub struct BalanceUpdate {
    pub user: UserId,
    pub asset: AssetId,
    pub delta: Amount,
    pub balance: Balance,
}

/// The durable state of one shard's `Trading` (see `into_image`).
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct TradingImage {
    pub shard: u32,
    pub shards: u32,
    pub accounts: Accounts,
    pub books: Vec<Option<Book>>,
    pub halted: Vec<bool>,
    pub users: Vec<(UserId, String)>,
    pub keys: Vec<KeyImage>,
    pub transfers: Vec<(i128, i128)>,
    pub next_order_seq: u64,
    pub next_user_seq: u64,
    pub sent_seq: Vec<u64>,
    pub received_seq: Vec<u64>,
    /// The links to other instances: unlike the mesh's, they go on across
    /// generations.
    pub remote: RemoteImage,
    /// The dead-man's switches of this shard's users: (user, market,
    /// deadline ms).
    pub countdowns: Vec<(UserId, MarketId, u64)>,
    /// The cancel-on-disconnect guards of this shard's users: (user,
    /// session, markets).
    pub guards: Vec<(UserId, u64, Vec<MarketId>)>,
}

/// One API key in a snapshot.
#[derive(Clone, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct KeyImage {
    pub key: String,
    pub user: UserId,
    pub key_type: KeyType,
    /// The HMAC secret or the public key (`KeyMaterial::to_stored`).
    pub material: Vec<u8>,
    pub scopes: u8,
    pub revoked: bool,
}

struct ListenKey {
    user: UserId,
    expires_ms: u64,
}

/// What operations on one shard's `Trading` produced for the rest of the
/// shard, in order. The shard takes it after every operation
/// (`Trading::swap_output`) and hands each part on: records to the
/// journal, engine messages to the mesh, trades, depth changes and user
/// events to the streams, first fills to the order limiter.
#[derive(Default)]
pub struct Output {
    /// The inputs that changed this shard's state, in order; the shard
    /// journals them (see `durability`) before anything they caused leaves.
    pub records: Vec<Record>,
    /// Engine messages for other shards with their link sequence numbers.
    pub outgoing: Vec<(u32, u64, EngineMsg)>,
    /// Engine messages for other instances (their index in the map) with
    /// their link sequence numbers; they are in the outbox too, and leave
    /// once the records above are durable.
    pub remote: Vec<(u32, u64, EngineMsg)>,
    /// Trades of the books on this shard, for market data.
    pub trades: Vec<tradsys_engine::msg::Fill>,
    /// Prices where orders came to the books on this shard, for depth
    /// diffs (a level may appear and go between two diffs).
    pub touched_levels: Vec<(MarketId, Side, Price)>,
    /// Order changes of the users on this shard, for user data streams.
    pub user_updates: Vec<UserUpdate>,
    /// Deposits and withdrawals of the users on this shard, for
    /// `balanceUpdate`.
    pub balance_updates: Vec<BalanceUpdate>,
    /// Market maker protections of this shard's users that fired.
    pub mmp_events: Vec<MmpEvent>,
    /// Order lists of this shard's users that began or ended, for
    /// `listStatus`.
    pub list_updates: Vec<ListUpdate>,
    /// Users whose order traded for the first time; the order limiter
    /// takes them off its counts.
    pub first_fills: Vec<UserId>,
    /// Listen keys that expired or were closed, with their users, for
    /// `listenKeyExpired`.
    pub closed_listen_keys: Vec<(UserId, String)>,
}

impl Output {
    /// Empties every part, keeping the capacity for the next operation.
    pub fn clear(&mut self) {
        self.records.clear();
        self.outgoing.clear();
        self.remote.clear();
        self.trades.clear();
        self.touched_levels.clear();
        self.user_updates.clear();
        self.balance_updates.clear();
        self.mmp_events.clear();
        self.list_updates.clear();
        self.first_fills.clear();
        self.closed_listen_keys.clear();
    }
}

pub struct Trading {
    /// What operations produced for the rest of the shard; see `Output`.
    out: Output,
    shard: u32,
    shards: u32,
    specs: Vec<MarketSpec>,
    symbols: HashMap<String, MarketId>,
    market_shard: Vec<u32>,
    accounts: Accounts,
    books: Vec<Option<Book>>,
    halted: Vec<bool>,
    users: BTreeMap<UserId, String>,
    keys: KeyStore,
    listen_keys: HashMap<String, ListenKey>,
    listen_key_ttl_ms: u64,
    /// The client ids of cancel requests in flight, by order.
    cancel_client_ids: FastMap<OrderId, ClientOrderId>,
    /// A MARKET order by quote amount learns whether it is FILLED only
    /// when the book reports it placed, after its last trade: that
    /// trade's update waits here so that one report carries both.
    held_taker_update: Option<UserUpdate>,
    /// Orders still being placed whose `NEW` report went out ahead of
    /// their first trade or expiry (bounded by the waiters).
    announced: std::collections::HashSet<OrderId, tradsys_engine::hash::FastBuildHasher>,
    transfers: Vec<(i128, i128)>,
    waiters: FastMap<WaitKey, Waiter>,
    queue: VecDeque<EngineMsg>,
    to_book: Vec<ToBook>,
    to_account: Vec<ToAccount>,
    events: Vec<AccountEvent>,
    /// The trade event just before its order's update.
    pending_trade: Option<UserTrade>,
    next_order_seq: u64,
    next_user_seq: u64,
    pub orders: OrderCounters,
    /// False while replaying the journal: no waiters, no records.
    live: bool,
    /// Engine messages sent to / received from each shard so far: the
    /// sequence numbers of the links, so recovery can tell which messages
    /// were still in flight at a crash.
    sent_seq: Vec<u64>,
    received_seq: Vec<u64>,
    /// The numbered links to the other instances of the cluster.
    remote: RemoteLinks,
    /// Dead-man's switches (countdownCancelAll): the deadline of each
    /// (user, market) that has one, and the same ordered by deadline.
    countdowns: BTreeMap<(UserId, MarketId), u64>,
    countdowns_due: std::collections::BTreeSet<(u64, UserId, MarketId)>,
    /// Cancel on disconnect: the markets each WebSocket API session of a
    /// user guards, by (user, session).
    guards: BTreeMap<(UserId, u64), Vec<MarketId>>,
    /// In a cluster, this instance's place (`cluster::process_place`, the
    /// same for every `Trading` of the process, replayed ones too): it
    /// hands out only user ids whose slot it owns.
    place: Option<Arc<Place>>,
}

impl Trading {
    /// Exchanges the output gathered so far for `spare`, which must be
    /// empty: the caller drains what it gets and passes it back cleared
    /// next time, so no buffer is ever reallocated.
    pub fn swap_output(&mut self, spare: &mut Output) {
        assert!(
            spare.records.is_empty() && spare.outgoing.is_empty() && spare.remote.is_empty(),
            "a spare output must be empty"
        );
        std::mem::swap(&mut self.out, spare);
    }

    pub fn new(shard: u32, shards: u32, specs: Vec<MarketSpec>, book_capacity: BookCapacity) -> Trading {
        let market_shard = market_shards(&specs, shards);
        let books = specs
            .iter()
            .enumerate()
            .map(|(i, spec)| (market_shard[i] == shard).then(|| Book::new(MarketId(i as u16), spec, book_capacity)))
            .collect();
        let accounts = Accounts::new(shard, shards, &specs);
        let assets = accounts.asset_names().len();
        Trading {
            shard,
            shards,
            symbols: specs
                .iter()
                .enumerate()
                .map(|(i, s)| (s.symbol.clone(), MarketId(i as u16)))
                .collect(),
            halted: vec![false; specs.len()],
            market_shard,
            accounts,
            books,
            users: BTreeMap::new(),
            keys: KeyStore::default(),
            listen_keys: HashMap::new(),
            listen_key_ttl_ms: LISTEN_KEY_TTL_MS,
            cancel_client_ids: FastMap::default(),
            held_taker_update: None,
            announced: Default::default(),
            transfers: vec![(0, 0); assets],
            waiters: FastMap::default(),
            queue: VecDeque::new(),
            to_book: Vec::new(),
            to_account: Vec::new(),
            events: Vec::new(),
            pending_trade: None,
            next_order_seq: 0,
            next_user_seq: 0,
            orders: OrderCounters::default(),
            live: true,
            out: Output::default(),
            sent_seq: vec![0; shards as usize],
            received_seq: vec![0; shards as usize],
            remote: RemoteLinks::default(),
            countdowns: BTreeMap::new(),
            countdowns_due: std::collections::BTreeSet::new(),
            guards: BTreeMap::new(),
            specs,
            place: crate::cluster::process_place(),
        }
    }

    /// This instance's place in its cluster, if it is one's.
    pub fn cluster_place(&self) -> Option<&Place> {
        self.place.as_deref()
    }

    /// The instance that owns `user` (its index in the map, and itself)
    /// when it is not this one.
    pub fn user_elsewhere(&self, user: UserId) -> Option<(usize, &crate::cluster::Instance)> {
        let place = self.place.as_deref()?;
        let owner = place.map.user_instance(user);
        (owner != place.me).then(|| (owner, &place.map.instances[owner]))
    }

    /// Whether `user` belongs to this instance (always, outside a cluster).
    fn user_here(place: Option<&Place>, user: UserId) -> bool {
        place.is_none_or(|p| p.map.user_instance(user) == p.me)
    }

    /// The numbered links to the other instances.
    pub fn remote_links(&self) -> &RemoteLinks {
        &self.remote
    }

    /// The instance that owns `market` when it is not this one.
    pub fn market_elsewhere(&self, market: MarketId) -> Option<(usize, &crate::cluster::Instance)> {
        let place = self.place.as_deref()?;
        let owner = place.map.market_instance(usize::from(market.0));
        (owner != place.me).then(|| (owner, &place.map.instances[owner]))
    }

    /// A new key of a user of this shard, in a cluster of several
    /// instances with this instance named in it for the front's routing
    /// (`auth::with_instance_hint`).
    fn hinted(&self, key: String) -> String {
        match self.place.as_deref() {
            Some(place) if place.map.instances.len() > 1 => crate::auth::with_instance_hint(key, place.me),
            _ => key,
        }
    }

    pub fn specs(&self) -> &[MarketSpec] {
        &self.specs
    }

    pub fn market(&self, symbol: &str) -> Option<MarketId> {
        self.symbols.get(symbol).copied()
    }

    pub fn spec(&self, market: MarketId) -> &MarketSpec {
        &self.specs[usize::from(market.0)]
    }

    /// The shard that owns `market`.
    pub fn market_shard(&self, market: MarketId) -> u32 {
        self.market_shard[usize::from(market.0)]
    }

    /// The shard that owns `user`.
    pub fn user_shard(&self, user: UserId) -> u32 {
        owner_of(user, self.shards)
    }

    pub fn book(&self, market: MarketId) -> Option<&Book> {
        self.books[usize::from(market.0)].as_ref()
    }

    pub fn accounts(&self) -> &Accounts {
        &self.accounts
    }

    pub fn is_halted(&self, market: MarketId) -> bool {
        self.halted[usize::from(market.0)]
    }

    pub fn asset_name(&self, asset: AssetId) -> &str {
        &self.accounts.asset_names()[usize::from(asset.0)]
    }

    /// The price a MARKET order of `side` would meet first, else the last
    /// price; `None` when there is neither. Only for markets on this shard.
    pub fn reference_price(&self, market: MarketId, side: Side) -> Option<Price> {
        self.book(market)?.reference_price(side)
    }

    /// A fresh order id. In a cluster, instance `i` takes only sequence
    /// numbers equal to `i` modulo `cluster::INSTANCES_MAX`: ids stay
    /// unique over the cluster (an order of one instance's user may rest
    /// in the book of another's market) while each instance keeps its
    /// place in the map, whatever the number of instances.
    fn next_order_id(&mut self) -> OrderId {
        self.next_order_seq += 1;
        if let Some(place) = &self.place {
            let (m, me) = (crate::cluster::INSTANCES_MAX as u64, place.me as u64);
            self.next_order_seq += (me + m - self.next_order_seq % m) % m;
        }
        self.next_order_seq * u64::from(self.shards) + u64::from(self.shard)
    }

    /// Refuses work a live shard has no room to wait for. Runs before an
    /// operation is recorded, because waiters are not replayed.
    fn check_room(&self, key: Option<WaitKey>) -> Result<(), TradingError> {
        let taken = key.is_some_and(|key| self.waiters.contains_key(&key));
        if self.live && (taken || self.waiters.len() >= WAITERS_PER_SHARD_MAX) {
            return Err(TradingError::Busy);
        }
        Ok(())
    }

    fn wait(&mut self, key: WaitKey, waiter: Waiter) {
        let previous = self.waiters.insert(key, waiter);
        assert!(previous.is_none(), "two waiters for {key:?}");
    }

    /// Keeps an input for the journal (live shards only).
    fn record(&mut self, record: Record) {
        if self.live {
            self.out.records.push(record);
        }
    }

    /// Places an order for `user` (owned here). The receiver resolves once
    /// the book has matched it.
    pub fn place(
        &mut self,
        user: UserId,
        request: &OrderRequest,
        reference: Option<Price>,
        now_ms: u64,
    ) -> Result<(OrderId, oneshot::Receiver<PlaceOutcome>), TradingError> {
        self.check_room(None)?;
        self.record(Record::Place {
            user,
            request: *request,
            reference,
            now_ms,
        });
        let (tx, rx) = oneshot::channel();
        let order_id = self.place_core(user, request, reference, now_ms, Some(tx))?;
        Ok((order_id, rx))
    }

    fn place_core(
        &mut self,
        user: UserId,
        request: &OrderRequest,
        reference: Option<Price>,
        now_ms: u64,
        tx: Option<oneshot::Sender<PlaceOutcome>>,
    ) -> Result<OrderId, TradingError> {
        let order_id = self.start_order(user, request.market)?;
        if let Some(tx) = tx {
            self.wait(WaitKey::Place(order_id), Waiter::Place(Vec::new(), tx));
        }
        self.to_book.clear();
        let placed = self
            .accounts
            .place(user, request, order_id, reference, now_ms, &mut self.to_book);
        if let Err(e) = placed {
            self.waiters.remove(&WaitKey::Place(order_id));
            return Err(e.into());
        }
        self.count_order(request.market);
        self.after_account_call();
        Ok(order_id)
    }

    /// The id of a new order of `user` in `market`, if the market is open.
    fn start_order(&mut self, user: UserId, market: MarketId) -> Result<OrderId, TradingError> {
        self.check_open(user, market)?;
        self.check_links(market)?;
        Ok(self.next_order_id())
    }

    /// Refuses an order whose messages would join an outbox that is full:
    /// the market's instance has not acknowledged this shard's messages,
    /// or (over the hard bound) some instance has not, and an order on a
    /// market here could fill one of its users' orders.
    fn check_links(&self, market: MarketId) -> Result<(), TradingError> {
        if let Some((instance, _)) = self.market_elsewhere(market) {
            if self.remote.outbox_len(instance) >= OUTBOX_PER_INSTANCE_MAX {
                return Err(TradingError::Unacknowledged(instance));
            }
        } else if self.market_shard(market) == self.shard && self.remote.outbox_len_max() >= OUTBOX_HARD_MAX {
            let full = (0..INSTANCES).find(|&i| self.remote.outbox_len(i) >= OUTBOX_HARD_MAX);
            return Err(TradingError::Unacknowledged(full.unwrap_or(0)));
        }
        Ok(())
    }

    fn check_open(&self, user: UserId, market: MarketId) -> Result<(), TradingError> {
        assert!(
            self.accounts.owns(user),
            "user {user} is not owned by shard {}",
            self.shard
        );
        if self.is_halted(market) {
            return Err(TradingError::Halted);
        }
        Ok(())
    }

    fn count_order(&mut self, market: MarketId) {
        if self.market_shard(market) == self.shard {
            self.orders.local += 1;
        } else {
            self.orders.cross_shard += 1;
        }
    }

    /// Cancels one order; resolves with its final state.
    pub fn cancel(
        &mut self,
        user: UserId,
        market: MarketId,
        target: OrderRef,
        now_ms: u64,
    ) -> Result<oneshot::Receiver<Result<OrderView, EngineError>>, TradingError> {
        let order_id = self.accounts.order(user, market, target)?.order_id;
        self.cancel_order(user, market, target, order_id, now_ms)
    }

    /// `cancel` of an order already looked up.
    fn cancel_order(
        &mut self,
        user: UserId,
        market: MarketId,
        target: OrderRef,
        order_id: OrderId,
        now_ms: u64,
    ) -> Result<oneshot::Receiver<Result<OrderView, EngineError>>, TradingError> {
        self.check_room(Some(WaitKey::Cancel(order_id)))?;
        self.record(Record::Cancel {
            user,
            market,
            target,
            now_ms,
        });
        let (tx, rx) = oneshot::channel();
        self.cancel_core(user, market, target, now_ms, Some((order_id, tx)))?;
        Ok(rx)
    }

    /// The cancel itself; `waiter` (live shards) names the order and takes
    /// its outcome.
    fn cancel_core(
        &mut self,
        user: UserId,
        market: MarketId,
        target: OrderRef,
        now_ms: u64,
        waiter: Option<(OrderId, oneshot::Sender<Result<OrderView, EngineError>>)>,
    ) -> Result<(), TradingError> {
        let waiter = waiter.map(|(order_id, tx)| (WaitKey::Cancel(order_id), Waiter::Cancel(tx)));
        self.send_with_waiter(waiter, |accounts, out| {
            accounts.cancel(user, market, target, now_ms, out)
        })
    }

    /// Runs an account machine call that sends work to books, `waiter`
    /// (live shards) registered first and dropped again if the call is
    /// refused.
    fn send_with_waiter<T>(
        &mut self,
        waiter: Option<(WaitKey, Waiter)>,
        call: impl FnOnce(&mut Accounts, &mut Vec<ToBook>) -> Result<T, EngineError>,
    ) -> Result<(), TradingError> {
        let key = waiter.map(|(key, waiter)| {
            self.wait(key, waiter);
            key
        });
        self.to_book.clear();
        if let Err(e) = call(&mut self.accounts, &mut self.to_book) {
            if let Some(key) = key {
                self.waiters.remove(&key);
            }
            return Err(e.into());
        }
        self.after_account_call();
        Ok(())
    }

    /// [`Trading::cancel`] by a request that carries its own client id,
    /// which the order's CANCELED report shows as `c`.
    pub fn cancel_with_id(
        &mut self,
        user: UserId,
        market: MarketId,
        target: OrderRef,
        cancel_id: ClientOrderId,
        now_ms: u64,
    ) -> Result<oneshot::Receiver<Result<OrderView, EngineError>>, TradingError> {
        // Noted first: a local cancel completes inside `cancel`.
        let order_id = self.accounts.order(user, market, target)?.order_id;
        self.cancel_client_ids.insert(order_id, cancel_id);
        let canceled = self.cancel_order(user, market, target, order_id, now_ms);
        if canceled.is_err() {
            self.cancel_client_ids.remove(&order_id);
        }
        canceled
    }

    /// Cancels all of `user`'s open orders in `market`; resolves with their
    /// final states (empty when there were none).
    pub fn cancel_all(
        &mut self,
        user: UserId,
        market: MarketId,
        now_ms: u64,
    ) -> Result<oneshot::Receiver<Vec<OrderView>>, TradingError> {
        self.check_room(Some(WaitKey::CancelAll(user, market)))?;
        self.record(Record::CancelAll { user, market, now_ms });
        let (tx, rx) = oneshot::channel();
        self.cancel_all_core(user, market, now_ms, Some(tx));
        Ok(rx)
    }

    fn cancel_all_core(
        &mut self,
        user: UserId,
        market: MarketId,
        now_ms: u64,
        tx: Option<oneshot::Sender<Vec<OrderView>>>,
    ) {
        self.to_book.clear();
        let count = self.accounts.cancel_all(user, market, now_ms, &mut self.to_book);
        match tx {
            Some(tx) if count == 0 => tx.send(Vec::new()),
            Some(tx) => self.wait(
                WaitKey::CancelAll(user, market),
                Waiter::CancelAll(count, Vec::with_capacity(count), tx),
            ),
            None => {}
        }
        if count > 0 {
            self.after_account_call();
        }
    }

    /// Places an order list (OCO, OTO, OTOCO) for `user`; the receiver
    /// resolves once the book has answered for the orders placed at once.
    /// The list's id (its first order's) is returned with it.
    pub fn place_list(
        &mut self,
        user: UserId,
        request: &ListRequest,
        reference: Option<Price>,
        now_ms: u64,
    ) -> Result<(OrderId, oneshot::Receiver<ListOutcome>), TradingError> {
        self.check_room(None)?;
        self.record(Record::PlaceList(Box::new(ListRecord {
            user,
            request: *request,
            reference,
            now_ms,
        })));
        let (tx, rx) = oneshot::channel();
        let list_id = self.place_list_core(user, request, reference, now_ms, Some(tx))?;
        Ok((list_id, rx))
    }

    fn place_list_core(
        &mut self,
        user: UserId,
        request: &ListRequest,
        reference: Option<Price>,
        now_ms: u64,
        tx: Option<oneshot::Sender<ListOutcome>>,
    ) -> Result<OrderId, TradingError> {
        let market = request.orders[0].market;
        let first = self.start_order(user, market)?;
        let mut ids = [first, 0, 0];
        for id in ids.iter_mut().take(request.kind.legs()).skip(1) {
            *id = self.next_order_id();
        }
        let waiter = tx.map(|tx| (WaitKey::PlaceList(first), Waiter::List(tx)));
        self.send_with_waiter(waiter, |accounts, out| {
            accounts.place_list(user, request, ids, reference, now_ms, out)
        })?;
        for _ in 0..request.kind.legs() {
            self.count_order(market);
        }
        Ok(first)
    }

    /// Cancels every open order of an order list; resolves with the list,
    /// done.
    pub fn cancel_list(
        &mut self,
        user: UserId,
        market: MarketId,
        target: ListRef,
        now_ms: u64,
    ) -> Result<oneshot::Receiver<ListOutcome>, TradingError> {
        let list = self
            .accounts
            .order_list(user, target)
            .map_err(|_| EngineError::UnknownOrder)?;
        if list.market != market || list.order_status != tradsys_engine::order::ListOrderStatus::Executing {
            return Err(EngineError::UnknownOrder.into());
        }
        self.check_room(Some(WaitKey::CancelList(list.order_list_id)))?;
        self.record(Record::CancelList {
            user,
            market,
            target,
            now_ms,
        });
        let (tx, rx) = oneshot::channel();
        self.cancel_list_core(user, market, target, now_ms, Some((list.order_list_id, tx)))?;
        Ok(rx)
    }

    fn cancel_list_core(
        &mut self,
        user: UserId,
        market: MarketId,
        target: ListRef,
        now_ms: u64,
        waiter: Option<(OrderId, oneshot::Sender<ListOutcome>)>,
    ) -> Result<(), TradingError> {
        let key = waiter.map(|(list, tx)| {
            self.wait(WaitKey::CancelList(list), Waiter::List(tx));
            WaitKey::CancelList(list)
        });
        self.to_book.clear();
        self.events.clear();
        let canceled = self
            .accounts
            .cancel_list(user, market, target, now_ms, &mut self.to_book, &mut self.events);
        if let Err(e) = canceled {
            if let Some(key) = key {
                self.waiters.remove(&key);
            }
            return Err(e.into());
        }
        self.route_books();
        self.take_events();
        self.run();
        Ok(())
    }

    /// `user`'s order list, open or recently done.
    pub fn order_list(&self, user: UserId, target: ListRef) -> Result<OrderListView, EngineError> {
        self.accounts.order_list(user, target)
    }

    /// Reduces an order's quantity where it rests (amend keep priority)
    /// and, if asked, renames it; resolves once its book has applied it.
    /// A halted market takes amendments, as it takes cancels: both only
    /// take risk off.
    pub fn amend(
        &mut self,
        user: UserId,
        request: AmendRequest,
        now_ms: u64,
    ) -> Result<oneshot::Receiver<AmendOutcome>, TradingError> {
        let unknown = EngineError::AmendRejected(tradsys_engine::AmendReason::UnknownOrder);
        let order_id = self
            .accounts
            .order(user, request.market, request.target)
            .map_err(|_| unknown)?
            .order_id;
        self.check_room(Some(WaitKey::Amend(order_id)))?;
        self.record(Record::Amend { user, request, now_ms });
        let (tx, rx) = oneshot::channel();
        self.amend_core(user, &request, now_ms, Some((order_id, tx)))?;
        Ok(rx)
    }

    fn amend_core(
        &mut self,
        user: UserId,
        request: &AmendRequest,
        now_ms: u64,
        waiter: Option<(OrderId, oneshot::Sender<AmendOutcome>)>,
    ) -> Result<(), TradingError> {
        let waiter = waiter.map(|(order_id, tx)| (WaitKey::Amend(order_id), Waiter::Amend(tx)));
        self.send_with_waiter(waiter, |accounts, out| accounts.amend(user, request, now_ms, out))
    }

    /// The amendments of `user`'s order `order_id` still remembered,
    /// oldest first.
    pub fn amendments(&self, user: UserId, order_id: OrderId) -> Vec<Amendment> {
        self.accounts.amendments(user, order_id)
    }

    /// Sets `user`'s dead-man's switch on `market`: unless set again, every
    /// open order of theirs there is canceled `countdown_ms` from `now_ms`;
    /// 0 turns it off. The deadline is journaled, so it survives a restart
    /// and fires at its time after one (at once if it passed meanwhile).
    pub fn set_countdown(&mut self, user: UserId, market: MarketId, countdown_ms: u64, now_ms: u64) {
        let deadline_ms = match countdown_ms {
            0 => 0,
            ms => now_ms.saturating_add(ms),
        };
        self.record(Record::Countdown {
            user,
            market,
            deadline_ms,
        });
        self.countdown_core(user, market, deadline_ms);
    }

    fn countdown_core(&mut self, user: UserId, market: MarketId, deadline_ms: u64) {
        if let Some(before) = self.countdowns.remove(&(user, market)) {
            self.countdowns_due.remove(&(before, user, market));
        }
        if deadline_ms > 0 {
            self.countdowns.insert((user, market), deadline_ms);
            self.countdowns_due.insert((deadline_ms, user, market));
        }
    }

    /// The deadline of `user`'s switch on `market`, if one is set.
    pub fn countdown(&self, user: UserId, market: MarketId) -> Option<u64> {
        self.countdowns.get(&(user, market)).copied()
    }

    /// Fires every switch whose deadline is `now_ms` or earlier: the
    /// user's orders on its market are canceled. How many fired.
    pub fn fire_countdowns(&mut self, now_ms: u64) -> usize {
        let mut fired = 0;
        while let Some(&(deadline_ms, user, market)) = self.countdowns_due.first() {
            if deadline_ms > now_ms {
                break;
            }
            self.record(Record::CountdownFired { user, market, now_ms });
            self.countdown_fired_core(user, market, now_ms);
            fired += 1;
        }
        fired
    }

    fn countdown_fired_core(&mut self, user: UserId, market: MarketId, now_ms: u64) {
        self.countdown_core(user, market, 0);
        self.cancel_all_core(user, market, now_ms, None);
    }

    /// Sets (or, with `None`, removes) `user`'s market maker protection in
    /// `market` (see `Accounts::set_mmp`).
    pub fn set_mmp(&mut self, user: UserId, market: MarketId, config: Option<MmpConfig>) {
        self.record(Record::MmpSet { user, market, config });
        self.accounts.set_mmp(user, market, config);
    }

    /// Ends `user`'s protection freeze in `market`.
    pub fn reset_mmp(&mut self, user: UserId, market: MarketId) {
        self.record(Record::MmpReset { user, market });
        self.accounts.reset_mmp(user, market);
    }

    /// Guards `markets` of `user` for session `session`: when the session
    /// ends ([`Trading::release_guard`]) or does not survive a restart,
    /// the user's orders on them are canceled. No markets turns it off.
    /// At most `GUARDS_PER_SHARD_MAX` sessions of this shard's users hold
    /// guards.
    pub fn arm_guard(&mut self, user: UserId, session: u64, markets: Vec<MarketId>) -> Result<(), TradingError> {
        let known = self.guards.contains_key(&(user, session));
        if !known && !markets.is_empty() && self.guards.len() >= GUARDS_PER_SHARD_MAX {
            return Err(TradingError::Busy);
        }
        self.record(Record::GuardArm {
            user,
            session,
            markets: markets.clone(),
        });
        self.guard_core(user, session, markets);
        Ok(())
    }

    fn guard_core(&mut self, user: UserId, session: u64, markets: Vec<MarketId>) {
        if markets.is_empty() {
            self.guards.remove(&(user, session));
        } else {
            self.guards.insert((user, session), markets);
        }
    }

    /// Session `session` of `user` ended: the orders on the markets it
    /// guarded are canceled. Whether it guarded any.
    pub fn release_guard(&mut self, user: UserId, session: u64, now_ms: u64) -> bool {
        if !self.guards.contains_key(&(user, session)) {
            return false;
        }
        self.record(Record::GuardRelease { user, session, now_ms });
        self.release_core(user, session, now_ms);
        true
    }

    fn release_core(&mut self, user: UserId, session: u64, now_ms: u64) {
        for market in self.guards.remove(&(user, session)).unwrap_or_default() {
            self.cancel_all_core(user, market, now_ms, None);
        }
    }

    /// The (user, session) of every guard: at start-up, those of sessions
    /// that did not survive the restart.
    pub fn guard_sessions(&self) -> Vec<(UserId, u64)> {
        self.guards.keys().copied().collect()
    }

    /// Cancels `target` and places `request` as Binance's cancelReplace.
    #[allow(clippy::too_many_arguments)]
    pub fn cancel_replace(
        &mut self,
        user: UserId,
        target: OrderRef,
        mode: CancelReplaceMode,
        request: &OrderRequest,
        reference: Option<Price>,
        now_ms: u64,
    ) -> Result<(OrderId, oneshot::Receiver<ReplaceOutcome>), TradingError> {
        self.check_room(None)?;
        if self.live {
            self.out
                .records
                .push(Record::CancelReplace(Box::new(CancelReplaceRecord {
                    user,
                    target,
                    mode,
                    request: *request,
                    reference,
                    now_ms,
                })));
        }
        let (tx, rx) = oneshot::channel();
        let order_id = self.cancel_replace_core(user, target, mode, request, reference, now_ms, Some(tx))?;
        Ok((order_id, rx))
    }

    #[allow(clippy::too_many_arguments)]
    fn cancel_replace_core(
        &mut self,
        user: UserId,
        target: OrderRef,
        mode: CancelReplaceMode,
        request: &OrderRequest,
        reference: Option<Price>,
        now_ms: u64,
        tx: Option<oneshot::Sender<ReplaceOutcome>>,
    ) -> Result<OrderId, TradingError> {
        let order_id = self.start_order(user, request.market)?;
        if let Some(tx) = tx {
            self.wait(WaitKey::Replace(order_id), Waiter::Replace(Vec::new(), tx));
        }
        self.to_book.clear();
        self.events.clear();
        self.accounts.cancel_replace(
            user,
            target,
            mode,
            request,
            order_id,
            reference,
            now_ms,
            &mut self.to_book,
            &mut self.events,
        );
        self.count_order(request.market);
        self.take_events();
        self.after_account_call();
        Ok(order_id)
    }

    /// Re-runs one journaled input on a shard that is not live (recovery
    /// and snapshots): the same code as the live call, without waiters.
    pub fn apply(&mut self, record: &Record) {
        assert!(!self.live, "records are applied only to a replaying shard");
        // Outcomes are ignored: a refusal now was a refusal then.
        let _ = match record {
            Record::Place {
                user,
                request,
                reference,
                now_ms,
            } => self.place_core(*user, request, *reference, *now_ms, None).map(drop),
            Record::Cancel {
                user,
                market,
                target,
                now_ms,
            } => self.cancel_core(*user, *market, *target, *now_ms, None),
            Record::CancelAll { user, market, now_ms } => {
                self.cancel_all_core(*user, *market, *now_ms, None);
                Ok(())
            }
            Record::CancelReplace(r) => self
                .cancel_replace_core(r.user, r.target, r.mode, &r.request, r.reference, r.now_ms, None)
                .map(drop),
            Record::Receive { from, seq, msg } => {
                self.receive(*from, *seq, *msg);
                Ok(())
            }
            Record::Halt { market, halted } => {
                self.halt(*market, *halted);
                Ok(())
            }
            Record::ReceiveRemote {
                instance,
                shard,
                seq,
                msg,
            } => {
                self.receive_remote(*instance, *shard, *seq, *msg);
                Ok(())
            }
            Record::RemoteAcked { instance, seq } => {
                self.remote_acked(*instance, *seq);
                Ok(())
            }
            Record::Amend { user, request, now_ms } => self.amend_core(*user, request, *now_ms, None),
            Record::PlaceList(r) => self
                .place_list_core(r.user, &r.request, r.reference, r.now_ms, None)
                .map(drop),
            Record::CancelList {
                user,
                market,
                target,
                now_ms,
            } => self.cancel_list_core(*user, *market, *target, *now_ms, None),
            Record::Countdown {
                user,
                market,
                deadline_ms,
            } => {
                self.countdown_core(*user, *market, *deadline_ms);
                Ok(())
            }
            Record::CountdownFired { user, market, now_ms } => {
                self.countdown_fired_core(*user, *market, *now_ms);
                Ok(())
            }
            Record::GuardArm { user, session, markets } => {
                self.guard_core(*user, *session, markets.clone());
                Ok(())
            }
            Record::GuardRelease { user, session, now_ms } => {
                self.release_core(*user, *session, *now_ms);
                Ok(())
            }
            Record::MmpSet { user, market, config } => {
                self.accounts.set_mmp(*user, *market, *config);
                Ok(())
            }
            Record::MmpReset { user, market } => {
                self.accounts.reset_mmp(*user, *market);
                Ok(())
            }
            Record::AllocateUser => {
                // Recorded only when an id was found: found again.
                let _ = self.allocate_user_id();
                Ok(())
            }
            Record::CreateUser { user, name } => self.create_user(*user, name),
            Record::CreateKey { user, scopes, entropy } => {
                self.create_key(*user, Scopes::from_bits(*scopes), entropy).map(drop)
            }
            Record::RevokeKey { key } => {
                self.revoke_key(key);
                Ok(())
            }
            Record::Transfer {
                user,
                asset,
                amount,
                deposit,
            } => self.transfer(*user, asset, *amount, *deposit),
            Record::CreatePublicKey(r) => {
                // The record after it is read: `create_public_key` checked
                // that this form reads back before journaling it.
                let material = match KeyMaterial::from_stored(r.key_type, &r.public_key) {
                    Ok(material) => material,
                    Err(e) => panic!("journaled {} key of user {} unreadable: {e}", r.key_type, r.user),
                };
                self.create_public_key(r.user, Scopes::from_bits(r.scopes), material, &r.entropy)
                    .map(drop)
            }
        };
    }

    /// Routes what the account machine just sent and runs local work.
    fn after_account_call(&mut self) {
        self.route_books();
        self.run();
    }

    fn route_books(&mut self) {
        for i in 0..self.to_book.len() {
            let msg = self.to_book[i];
            self.route_book(msg);
        }
        self.to_book.clear();
    }

    fn route_book(&mut self, msg: ToBook) {
        match self.market_elsewhere(msg.market()) {
            Some((instance, _)) => self.deliver_remote(instance as u32, EngineMsg::Book(msg)),
            None => self.deliver(self.market_shard(msg.market()), EngineMsg::Book(msg)),
        }
    }

    /// Where the account machine of `user` is: a shard here, or another
    /// instance.
    fn account_of(&self, user: UserId) -> Dest {
        match self.user_elsewhere(user) {
            Some((instance, _)) => Dest::Instance(instance as u32),
            None => Dest::Shard(owner_of(user, self.shards)),
        }
    }

    fn send(&mut self, dest: Dest, msg: EngineMsg) {
        match dest {
            Dest::Shard(shard) => self.deliver(shard, msg),
            Dest::Instance(instance) => self.deliver_remote(instance, msg),
        }
    }

    fn deliver_remote(&mut self, instance: u32, msg: EngineMsg) {
        let seq = self.remote.push(instance, msg);
        self.out.remote.push((instance, seq, msg));
    }

    fn deliver(&mut self, owner: u32, msg: EngineMsg) {
        if owner == self.shard {
            self.queue.push_back(msg);
        } else {
            let seq = &mut self.sent_seq[owner as usize];
            *seq += 1;
            self.out.outgoing.push((owner, *seq, msg));
        }
    }

    /// Takes the `seq`-th engine message from shard `from` and runs it to
    /// quiescence. Links deliver in order, so `seq` is always the next one.
    pub fn receive(&mut self, from: u32, seq: u64, msg: EngineMsg) {
        let expected = self.received_seq[from as usize] + 1;
        assert_eq!(
            seq, expected,
            "shard {} got message {seq} from shard {from}",
            self.shard
        );
        self.record(Record::Receive { from, seq, msg });
        self.received_seq[from as usize] = seq;
        self.queue.push_back(msg);
        self.run();
    }

    /// Takes the `seq`-th engine message from shard `shard` of instance
    /// `instance` (see `remote`): the next one is journaled and passed on
    /// to the shard it is for (this one, or through the mesh); any other is
    /// dropped.
    pub fn receive_remote(&mut self, instance: u32, shard: u32, seq: u64, msg: EngineMsg) -> Arrival {
        let arrival = self.remote.arrival(instance, shard, seq);
        if arrival != Arrival::Applied {
            return arrival;
        }
        self.record(Record::ReceiveRemote {
            instance,
            shard,
            seq,
            msg,
        });
        self.remote.accept(instance, shard, seq);
        match msg {
            EngineMsg::Book(msg) => self.route_book(msg),
            // The sender sent one copy to each instance with a user of it.
            EngineMsg::Account(msg) => self.route_account_here(msg),
        }
        self.run();
        arrival
    }

    /// Instance `instance` applied this shard's messages up to `seq`.
    /// Whether that emptied any of the outbox.
    pub fn remote_acked(&mut self, instance: u32, seq: u64) -> bool {
        let progress = self.remote.acknowledged(instance, seq);
        if progress {
            self.record(Record::RemoteAcked { instance, seq });
        }
        progress
    }

    /// Stops or resumes trading in `market` on this shard.
    pub fn halt(&mut self, market: MarketId, halted: bool) {
        self.record(Record::Halt { market, halted });
        self.halted[usize::from(market.0)] = halted;
    }

    fn run(&mut self) {
        while let Some(msg) = self.queue.pop_front() {
            match msg {
                EngineMsg::Book(msg) => self.on_book(msg),
                EngineMsg::Account(msg) => self.on_account(msg),
            }
        }
    }

    fn on_book(&mut self, msg: ToBook) {
        let market = usize::from(msg.market().0);
        if let ToBook::Place(place) = &msg {
            // Orders are refused on a halted market where they enter; one
            // that reaches the book anyway (on its way at the halt, or from
            // another instance, which does not know of the halt) is
            // rejected here and its funds unlocked.
            if self.halted[market] {
                self.route_account(ToAccount::Placed {
                    order_id: place.order_id,
                    user: place.user,
                    status: OrderStatus::Rejected,
                    reject: Some(EngineError::MarketClosed),
                    time_ms: place.time_ms,
                });
                return;
            }
        }
        let book = self.books[market].as_mut();
        let book =
            book.unwrap_or_else(|| panic!("shard {} got a message for market {market} it does not own", self.shard));
        self.to_account.clear();
        if let ToBook::Place(place) = &msg {
            if place.price != Price::ZERO {
                self.out.touched_levels.push((place.market, place.side, place.price));
            }
        }
        book.handle(msg, &mut self.to_account);
        for i in 0..self.to_account.len() {
            let msg = self.to_account[i];
            if let ToAccount::Fill(fill) = msg {
                self.out.trades.push(fill);
            }
            self.route_account(msg);
        }
    }

    /// A fill goes to the taker's owner and, if different, to the maker's;
    /// each settles its own user's side (as `driver::Exchange` does).
    fn route_account(&mut self, msg: ToAccount) {
        let owner = self.account_of(msg.user());
        self.send(owner, EngineMsg::Account(msg));
        if let ToAccount::Fill(fill) = msg {
            let maker_owner = self.account_of(fill.maker_user);
            if maker_owner != owner {
                self.send(maker_owner, EngineMsg::Account(msg));
            }
        }
    }

    /// `route_account` for a message from another instance: only to the
    /// users of this one.
    fn route_account_here(&mut self, msg: ToAccount) {
        let mut owners = [None, None];
        if Self::user_here(self.place.as_deref(), msg.user()) {
            owners[0] = Some(owner_of(msg.user(), self.shards));
        }
        if let ToAccount::Fill(fill) = msg {
            if Self::user_here(self.place.as_deref(), fill.maker_user) {
                owners[1] = Some(owner_of(fill.maker_user, self.shards)).filter(|&o| Some(o) != owners[0]);
            }
        }
        for owner in owners.into_iter().flatten() {
            self.deliver(owner, EngineMsg::Account(msg));
        }
    }

    fn on_account(&mut self, msg: ToAccount) {
        self.to_book.clear();
        self.events.clear();
        let place = self.place.as_deref();
        self.accounts
            .handle_for(msg, &mut self.to_book, &mut self.events, |user| {
                Self::user_here(place, user)
            });
        self.route_books();
        self.take_events();
    }

    fn take_events(&mut self) {
        let mut events = std::mem::take(&mut self.events);
        for event in events.drain(..) {
            self.on_event(event);
        }
        self.events = events;
    }

    fn on_event(&mut self, event: AccountEvent) {
        match event {
            AccountEvent::Trade { trade, .. } => {
                self.pending_trade = Some(trade);
                for key in [WaitKey::Place(trade.order_id), WaitKey::Replace(trade.order_id)] {
                    match self.waiters.get_mut(&key) {
                        Some(Waiter::Place(fills, _)) | Some(Waiter::Replace(fills, _)) if !trade.is_maker => {
                            fills.push(trade)
                        }
                        _ => {}
                    }
                }
            }
            AccountEvent::Placed { order_id, result } => {
                self.announced.remove(&order_id);
                if let Some(Waiter::Place(fills, tx)) = self.waiters.remove(&WaitKey::Place(order_id)) {
                    tx.send(PlaceOutcome { result, fills });
                }
            }
            AccountEvent::Canceled { order_id, result } => self.on_canceled(order_id, result),
            AccountEvent::CancelReplaced { order_id, cancel, new } => {
                self.announced.remove(&order_id);
                self.on_replaced(order_id, cancel, new)
            }
            AccountEvent::OrderUpdate(view) => self.on_order_update(view),
            AccountEvent::Amended { order_id, result } => self.on_amended(order_id, result),
            AccountEvent::ListPlaced { order_list_id, result } => {
                if let Ok(view) = &result {
                    for id in view.order_ids() {
                        self.announced.remove(id);
                    }
                }
                if let Some(Waiter::List(tx)) = self.waiters.remove(&WaitKey::PlaceList(order_list_id)) {
                    tx.send(result);
                }
            }
            AccountEvent::ListCanceled { order_list_id, result } => {
                if let Some(Waiter::List(tx)) = self.waiters.remove(&WaitKey::CancelList(order_list_id)) {
                    tx.send(result);
                }
            }
            AccountEvent::ListStatus(view) => {
                let mut client_order_ids = [None; 3];
                for (client, &id) in client_order_ids.iter_mut().zip(view.order_ids()) {
                    let order = self.accounts.order(view.user, view.market, OrderRef::Id(id));
                    *client = order.ok().and_then(|o| o.client_order_id);
                }
                self.out.list_updates.push(ListUpdate { view, client_order_ids });
            }
            AccountEvent::MmpTriggered {
                user,
                market,
                time_ms,
                frozen_until_ms,
            } => self.out.mmp_events.push(MmpEvent {
                user,
                market,
                time_ms,
                frozen_until_ms,
            }),
        }
    }

    /// An amendment's outcome: a REPLACED report when the order still
    /// rests (one that expired was reported EXPIRED already).
    fn on_amended(&mut self, order_id: OrderId, result: AmendOutcome) {
        if let Ok((view, amendment)) = &result {
            if !view.status.is_final() {
                let empty = ClientOrderId::new("");
                self.out.user_updates.push(UserUpdate {
                    user: view.user,
                    view: *view,
                    trade: None,
                    balances: self.market_balances(view),
                    cancel_client_id: None,
                    announcement: false,
                    amended_from: amendment.orig_client_order_id.or(empty),
                });
            }
        }
        if let Some(Waiter::Amend(tx)) = self.waiters.remove(&WaitKey::Amend(order_id)) {
            tx.send(result);
        }
    }

    fn on_order_update(&mut self, mut view: OrderView) {
        let trade = self.pending_trade.take().filter(|t| t.order_id == view.order_id);
        self.announce_arrival(&view);
        // An order's first fill takes it off its user's unfilled-order count
        // (Binance's ORDERS limit counts orders that have not traded).
        if trade.is_some_and(|t| t.qty == view.executed_qty) {
            self.out.first_fills.push(view.user);
        }
        let held = self.held_taker_update.take_if(|h| h.view.order_id == view.order_id);
        if let Some(held) = held {
            // The held trade's order is final now: FILLED goes into that
            // trade's report; EXPIRED follows it as Binance reports it.
            if view.status == OrderStatus::Filled {
                let balances = self.market_balances(&view);
                self.out.user_updates.push(UserUpdate { view, balances, ..held });
                return;
            }
            self.out.user_updates.push(held);
        }
        // The account machine marks an order FILLED in a second update after
        // its last trade; Binance reports both in one executionReport.
        match trade {
            None if view.status == OrderStatus::Filled => return,
            // A taker that traded part and rests the rest: its trades were
            // reported; resting is no news (Binance sends nothing more).
            None if view.status == OrderStatus::PartiallyFilled => return,
            Some(_) if view.orig_qty.0 > 0 && view.executed_qty >= view.orig_qty => view.status = OrderStatus::Filled,
            _ => {}
        }
        let cancel_client_id = match view.status {
            OrderStatus::Canceled => self.cancel_client_ids.remove(&view.order_id),
            _ => None,
        };
        let update = UserUpdate {
            user: view.user,
            view,
            trade,
            balances: self.market_balances(&view),
            cancel_client_id,
            announcement: false,
            amended_from: None,
        };
        // A taker by quote amount is the only order whose last trade does
        // not say whether it filled; its placement follows at once.
        let by_quote_taker = trade.is_some_and(|t| !t.is_maker) && view.orig_quote_qty.0 > 0;
        if by_quote_taker && view.status == OrderStatus::PartiallyFilled {
            if let Some(previous) = self.held_taker_update.replace(update) {
                self.out.user_updates.push(previous);
            }
            return;
        }
        self.out.user_updates.push(update);
    }

    /// Binance reports every accepted order `NEW` before anything else. An
    /// order that trades or expires on arrival (its placement still waits
    /// here) reaches this shard first as that trade or expiry, so its `NEW`
    /// report is sent ahead of it, once.
    fn announce_arrival(&mut self, view: &OrderView) {
        let placing = self.waiters.contains_key(&WaitKey::Place(view.order_id))
            || self.waiters.contains_key(&WaitKey::Replace(view.order_id))
            || (view.order_list_id != 0 && self.waiters.contains_key(&WaitKey::PlaceList(view.order_list_id)));
        let accepted = matches!(view.status, OrderStatus::New | OrderStatus::PendingNew);
        if !placing || accepted || !self.announced.insert(view.order_id) {
            return;
        }
        let accepted = OrderView {
            status: OrderStatus::New,
            executed_qty: Qty::ZERO,
            cummulative_quote_qty: Amount::ZERO,
            ..*view
        };
        self.out.user_updates.push(UserUpdate {
            user: view.user,
            view: accepted,
            trade: None,
            balances: self.market_balances(view),
            cancel_client_id: None,
            announcement: true,
            amended_from: None,
        });
    }

    /// The user's balances of `view`'s market's base and quote assets.
    fn market_balances(&self, view: &OrderView) -> [(AssetId, Balance); 2] {
        let spec = &self.specs[usize::from(view.market.0)];
        let base = self.accounts.asset_id(&spec.base_asset).unwrap_or(AssetId(0));
        let quote = self.accounts.asset_id(&spec.quote_asset).unwrap_or(AssetId(0));
        [
            (base, self.accounts.balance(view.user, base)),
            (quote, self.accounts.balance(view.user, quote)),
        ]
    }

    fn on_canceled(&mut self, order_id: OrderId, result: Result<OrderView, EngineError>) {
        // A cancel that came too late leaves no report to carry its id.
        self.cancel_client_ids.remove(&order_id);
        if let Some(Waiter::Cancel(tx)) = self.waiters.remove(&WaitKey::Cancel(order_id)) {
            tx.send(result);
            return;
        }
        let Ok(view) = result else { return };
        let key = WaitKey::CancelAll(view.user, view.market);
        let done = match self.waiters.get_mut(&key) {
            Some(Waiter::CancelAll(remaining, views, _)) => {
                views.push(view);
                *remaining -= 1;
                *remaining == 0
            }
            _ => false,
        };
        if done {
            if let Some(Waiter::CancelAll(_, views, tx)) = self.waiters.remove(&key) {
                tx.send(views);
            }
        }
    }

    fn on_replaced(&mut self, order_id: OrderId, cancel: Result<OrderView, EngineError>, new: NewOrderResult) {
        if let Some(Waiter::Replace(fills, tx)) = self.waiters.remove(&WaitKey::Replace(order_id)) {
            tx.send(ReplaceOutcome { cancel, new, fills });
        }
    }

    // ---- users, keys, transfers (the admin API's state) ----

    /// A fresh user id owned by any shard: ids allocated here never collide
    /// with another shard's, nor, in a cluster, with another instance's
    /// (the id's slot is this instance's: about one id in `SLOTS / owned`
    /// qualifies). `None`, recording nothing, on an instance that owns no
    /// slot (it serves markets only), where the search would never end.
    pub fn allocate_user_id(&mut self) -> Option<UserId> {
        if self.place.as_ref().is_some_and(|place| place.slots_owned() == 0) {
            return None;
        }
        self.record(Record::AllocateUser);
        loop {
            self.next_user_seq += 1;
            let user = DEMO_USER_ID + self.next_user_seq * u64::from(self.shards) + u64::from(self.shard);
            if self.place.as_ref().is_none_or(|place| place.owns_user(user)) {
                return Some(user);
            }
        }
    }

    pub fn create_user(&mut self, user: UserId, name: &str) -> Result<(), TradingError> {
        self.record(Record::CreateUser {
            user,
            name: name.to_string(),
        });
        if self.users.len() >= USERS_PER_SHARD_MAX {
            return Err(TradingError::UsersFull);
        }
        assert!(self.accounts.owns(user));
        self.users.insert(user, name.to_string());
        Ok(())
    }

    pub fn user_name(&self, user: UserId) -> Option<&str> {
        self.users.get(&user).map(String::as_str)
    }

    pub fn user_ids(&self) -> impl Iterator<Item = (&UserId, &String)> {
        self.users.iter()
    }

    /// Balances of every asset, in asset order (zero for untouched ones).
    pub fn balances(&self, user: UserId) -> Vec<(AssetId, Balance)> {
        let assets = self.accounts.asset_names().len();
        (0..assets)
            .map(|a| {
                let asset = AssetId(a as u16);
                (asset, self.accounts.balance(user, asset))
            })
            .collect()
    }

    pub fn create_key(
        &mut self,
        user: UserId,
        scopes: Scopes,
        entropy: &[u8; 128],
    ) -> Result<(String, String), TradingError> {
        if self.live {
            self.out.records.push(Record::CreateKey {
                user,
                scopes: scopes.bits(),
                entropy: Box::new(*entropy),
            });
        }
        if !self.users.contains_key(&user) {
            return Err(TradingError::UnknownUser(user));
        }
        let key = self.hinted(key_for(user, &entropy[..64], 64));
        let secret = key_for(0, &entropy[64..], 64 + KEY_USER_DIGITS)[KEY_USER_DIGITS..].to_string();
        let record = KeyRecord {
            user_id: user,
            material: KeyMaterial::Hmac { secret: secret.clone() },
            scopes,
            revoked: false,
        };
        self.keys.insert(key.clone(), record).map_err(|_| TradingError::Busy)?;
        Ok((key, secret))
    }

    /// Adds an Ed25519 or RSA key of `user` verified by `material`, the
    /// public key the user gave; returns the API key, made from `entropy`.
    pub(crate) fn create_public_key(
        &mut self,
        user: UserId,
        scopes: Scopes,
        material: KeyMaterial,
        entropy: &[u8; 64],
    ) -> Result<String, TradingError> {
        let key_type = material.key_type();
        assert!(key_type != KeyType::HmacSha256, "HMAC keys are made by create_key");
        if self.live {
            let public_key = material.to_stored();
            // The record before it is written: replay must read back this
            // very key (and `apply` asserts that it reads one).
            assert!(
                KeyMaterial::from_stored(key_type, &public_key).as_ref() == Ok(&material),
                "a {key_type} key of user {user} does not read back from its journal form"
            );
            self.out.records.push(Record::CreatePublicKey(Box::new(PublicKeyRecord {
                user,
                scopes: scopes.bits(),
                key_type,
                public_key,
                entropy: *entropy,
            })));
        }
        if !self.users.contains_key(&user) {
            return Err(TradingError::UnknownUser(user));
        }
        let key = self.hinted(key_for(user, entropy, 64));
        let record = KeyRecord {
            user_id: user,
            material,
            scopes,
            revoked: false,
        };
        self.keys.insert(key.clone(), record).map_err(|_| TradingError::Busy)?;
        Ok(key)
    }

    pub fn revoke_key(&mut self, key: &str) -> bool {
        self.record(Record::RevokeKey { key: key.to_string() });
        self.keys.revoke(key)
    }

    pub fn keys(&self) -> &KeyStore {
        &self.keys
    }

    pub fn transfer(&mut self, user: UserId, asset: &str, amount: Amount, deposit: bool) -> Result<(), TradingError> {
        self.record(Record::Transfer {
            user,
            asset: asset.to_string(),
            amount,
            deposit,
        });
        if !self.users.contains_key(&user) {
            return Err(TradingError::UnknownUser(user));
        }
        let asset = self.accounts.asset_id(asset).ok_or(TradingError::UnknownAsset)?;
        let totals = &mut self.transfers[usize::from(asset.0)];
        if deposit {
            self.accounts.deposit(user, asset, amount)?;
            totals.0 += i128::from(amount.0);
        } else {
            self.accounts.withdraw(user, asset, amount)?;
            totals.1 += i128::from(amount.0);
        }
        self.out.balance_updates.push(BalanceUpdate {
            user,
            asset,
            delta: if deposit { amount } else { Amount(-amount.0) },
            balance: self.accounts.balance(user, asset),
        });
        Ok(())
    }

    /// This shard's share of the audit, per asset in asset order.
    pub fn asset_totals(&self) -> Vec<AssetTotals> {
        let names = self.accounts.asset_names().len();
        (0..names)
            .map(|a| {
                let asset = AssetId(a as u16);
                let (free, locked) = self.users.keys().fold((0i128, 0i128), |(f, l), &user| {
                    let b = self.accounts.balance(user, asset);
                    (f + i128::from(b.free.0), l + i128::from(b.locked.0))
                });
                AssetTotals {
                    deposits: self.transfers[a].0,
                    withdrawals: self.transfers[a].1,
                    free,
                    locked,
                    fees: i128::from(self.accounts.fees(asset).0),
                    settled_in: self.accounts.settled_in(asset),
                }
            })
            .collect()
    }

    // ---- listen keys (user data streams) ----

    /// Sets how long listen keys live without a keepalive (start-up).
    pub fn set_listen_key_ttl_ms(&mut self, ttl_ms: u64) {
        self.listen_key_ttl_ms = ttl_ms;
    }

    pub fn listen_key_create(&mut self, user: UserId, entropy: &[u8; 64], now_ms: u64) -> Result<String, TradingError> {
        self.expire_listen_keys(now_ms);
        let held = self.listen_keys.values().filter(|k| k.user == user).count();
        if held >= LISTEN_KEYS_PER_USER_MAX || self.listen_keys.len() >= LISTEN_KEYS_PER_SHARD_MAX {
            return Err(TradingError::Busy);
        }
        let key = self.hinted(key_for(user, entropy, 60));
        let expires_ms = now_ms + self.listen_key_ttl_ms;
        self.listen_keys.insert(key.clone(), ListenKey { user, expires_ms });
        Ok(key)
    }

    /// The user of a live listen key.
    pub fn listen_key_user(&self, key: &str, now_ms: u64) -> Option<UserId> {
        self.listen_keys
            .get(key)
            .filter(|k| k.expires_ms > now_ms)
            .map(|k| k.user)
    }

    /// Extends (`keep`) or deletes a listen key of `user`; false if unknown.
    pub fn listen_key_touch(&mut self, user: UserId, key: &str, keep: bool, now_ms: u64) -> bool {
        match self.listen_keys.get_mut(key) {
            Some(k) if k.user == user && k.expires_ms > now_ms => {
                if keep {
                    k.expires_ms = now_ms + self.listen_key_ttl_ms;
                } else {
                    self.listen_keys.remove(key);
                    self.out.closed_listen_keys.push((user, key.to_string()));
                }
                true
            }
            _ => false,
        }
    }

    /// A shard that replays records instead of serving (see `apply`).
    pub fn replaying(shard: u32, shards: u32, specs: Vec<MarketSpec>) -> Trading {
        let mut trading = Trading::new(shard, shards, specs, BookCapacity::default());
        trading.live = false;
        trading
    }

    /// Whether this shard serves requests (and journals its inputs).
    pub fn set_live(&mut self, live: bool) {
        self.live = live;
    }

    /// The engine messages received so far from shard `from`.
    pub fn received_seq(&self, from: u32) -> u64 {
        self.received_seq[from as usize]
    }

    /// The durable state of this shard, for a snapshot. Waiters, listen
    /// keys and counters for metrics are left behind: they do not survive
    /// a restart.
    pub fn into_image(self) -> TradingImage {
        let keys = self
            .keys
            .entries()
            .into_iter()
            .map(|(key, r)| KeyImage {
                key: key.clone(),
                user: r.user_id,
                key_type: r.key_type(),
                material: r.material.to_stored(),
                scopes: r.scopes.bits(),
                revoked: r.revoked,
            })
            .collect();
        TradingImage {
            shard: self.shard,
            shards: self.shards,
            accounts: self.accounts,
            books: self.books,
            halted: self.halted,
            users: self.users.into_iter().collect(),
            keys,
            transfers: self.transfers,
            next_order_seq: self.next_order_seq,
            next_user_seq: self.next_user_seq,
            sent_seq: self.sent_seq,
            received_seq: self.received_seq,
            remote: self.remote.to_image(),
            countdowns: self.countdowns.iter().map(|(&(u, m), &d)| (u, m, d)).collect(),
            guards: self.guards.into_iter().map(|((u, s), m)| (u, s, m)).collect(),
        }
    }

    /// A shard with the state of `image`; `specs` must be the markets the
    /// image was taken with.
    pub fn from_image(image: TradingImage, specs: Vec<MarketSpec>) -> Result<Trading, String> {
        let names: Vec<&str> = specs.iter().map(|s| s.symbol.as_str()).collect();
        if image.books.len() != specs.len() || image.accounts.asset_names() != asset_names(&specs).as_slice() {
            return Err(format!(
                "the markets in the configuration ({}) differ from those in the data directory",
                names.join(",")
            ));
        }
        check_image_shape(&image, &specs)?;
        let mut trading = Trading::new(image.shard, image.shards, specs, BookCapacity::default());
        trading.accounts = image.accounts;
        trading.books = image.books;
        trading.halted = image.halted;
        trading.users = image.users.into_iter().collect();
        for k in image.keys {
            let material = KeyMaterial::from_stored(k.key_type, &k.material)
                .map_err(|e| format!("snapshot key store: a key of user {}: {e}", k.user))?;
            let record = KeyRecord {
                user_id: k.user,
                material,
                scopes: Scopes::from_bits(k.scopes),
                revoked: k.revoked,
            };
            trading
                .keys
                .insert(k.key, record)
                .map_err(|e| format!("snapshot key store: {e}"))?;
        }
        trading.transfers = image.transfers;
        trading.next_order_seq = image.next_order_seq;
        trading.next_user_seq = image.next_user_seq;
        trading.sent_seq = image.sent_seq;
        trading.received_seq = image.received_seq;
        trading.remote = RemoteLinks::from_image(image.remote)?;
        for (user, market, deadline_ms) in image.countdowns {
            if usize::from(market.0) >= trading.specs.len() || deadline_ms == 0 || !trading.accounts.owns(user) {
                return Err(format!(
                    "snapshot of shard {}: a countdown of user {user} on market {} that cannot be",
                    trading.shard, market.0
                ));
            }
            trading.countdown_core(user, market, deadline_ms);
        }
        for (user, session, markets) in image.guards {
            let fits = !markets.is_empty()
                && markets.iter().all(|m| usize::from(m.0) < trading.specs.len())
                && trading.accounts.owns(user);
            if !fits {
                return Err(format!(
                    "snapshot of shard {}: a guard of user {user} that cannot be",
                    trading.shard
                ));
            }
            trading.guard_core(user, session, markets);
        }
        // The checksum proved the bytes are the ones written; this proves
        // they are a state the engine makes.
        trading
            .verify()
            .map_err(|e| format!("snapshot of shard {}: not a consistent state: {e}", trading.shard))?;
        Ok(trading)
    }

    /// A hash of the durable state (what `into_image` keeps, except the
    /// link sequence numbers, which restart with every generation): two
    /// shards with equal hashes hold the same users, balances, orders,
    /// history, books, keys and halts.
    pub fn state_hash(&self) -> u64 {
        let mut h = tradsys_engine::hash::StateHasher::default();
        h.u64(self.accounts.state_hash());
        for book in self.books.iter().flatten() {
            h.u64(book.state_hash());
        }
        for &halted in &self.halted {
            h.u64(u64::from(halted));
        }
        for (id, name) in &self.users {
            h.u64(*id);
            h.bytes(name.as_bytes());
        }
        for (key, record) in self.keys.entries() {
            h.bytes(key.as_bytes());
            h.u64(record.user_id);
            h.bytes(record.key_type().name().as_bytes());
            h.bytes(&record.material.to_stored());
            h.u64(u64::from(record.scopes.bits()));
            h.u64(u64::from(record.revoked));
        }
        for (deposits, withdrawals) in &self.transfers {
            h.bytes(&deposits.to_le_bytes());
            h.bytes(&withdrawals.to_le_bytes());
        }
        h.u64(self.next_order_seq);
        h.u64(self.next_user_seq);
        for (&(user, market), &deadline_ms) in &self.countdowns {
            h.u64(user);
            h.u64(u64::from(market.0));
            h.u64(deadline_ms);
        }
        for (&(user, session), markets) in &self.guards {
            h.u64(user);
            h.u64(session);
            markets.iter().for_each(|m| h.u64(u64::from(m.0)));
        }
        h.finish()
    }

    /// Drops the listen keys that expired by `now_ms`, noting them in
    /// `closed_listen_keys`.
    pub fn expire_listen_keys(&mut self, now_ms: u64) {
        let closed = &mut self.out.closed_listen_keys;
        self.listen_keys.retain(|key, k| {
            let live = k.expires_ms > now_ms;
            if !live {
                closed.push((k.user, key.clone()));
            }
            live
        });
    }

    pub fn check_invariants(&self) {
        if let Err(e) = self.verify() {
            panic!("shard {}: {e}", self.shard);
        }
    }

    /// The engine's invariants over the shard's accounts and books (see
    /// `Accounts::verify`, `Book::verify`): conservation, locks equal to
    /// what the open orders hold, books sorted, summed and never crossed,
    /// each book the one of its market. Safe on any content: a restored
    /// image must pass before it is trusted.
    pub fn verify(&self) -> Result<(), String> {
        self.accounts.verify().map_err(|e| format!("accounts: {e}"))?;
        for (market, book) in self.books.iter().enumerate() {
            let Some(book) = book else { continue };
            if usize::from(book.market().0) != market {
                return Err(format!(
                    "the book of market {} is in the place of {market}",
                    book.market().0
                ));
            }
            book.verify().map_err(|e| format!("book of market {market}: {e}"))?;
        }
        Ok(())
    }
}
/// Refuses an image whose shape does not fit its shard: the indexes
/// `Trading` takes from it (shard, markets, assets, links) must be in
/// range, and books present exactly for the markets the shard owns. The
/// checksum already refused corruption; this refuses an image made for
/// another layout before anything indexes with it.
fn check_image_shape(image: &TradingImage, specs: &[MarketSpec]) -> Result<(), String> {
    let shards = image.shards as usize;
    if image.shard >= image.shards {
        return Err(format!("snapshot of shard {} of {}", image.shard, image.shards));
    }
    // Ownership questions (countdowns, guards) are answered by the account
    // machine before the image is verified whole: it must be this shard's.
    if image.accounts.shard_of() != (image.shard, image.shards) {
        let (shard, of) = image.accounts.shard_of();
        return Err(format!(
            "snapshot of shard {} of {} holds the accounts of shard {shard} of {of}",
            image.shard, image.shards
        ));
    }
    let owned = market_shards(specs, image.shards);
    let books_fit = image
        .books
        .iter()
        .zip(&owned)
        .all(|(book, &owner)| book.is_some() == (owner == image.shard));
    let assets = asset_names(specs).len();
    if !books_fit
        || image.halted.len() != specs.len()
        || image.transfers.len() != assets
        || image.sent_seq.len() != shards
        || image.received_seq.len() != shards
    {
        return Err(format!(
            "snapshot of shard {} does not fit {} markets, {assets} assets and {shards} shards",
            image.shard,
            specs.len()
        ));
    }
    Ok(())
}
