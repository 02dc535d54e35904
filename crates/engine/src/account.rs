//! The account machine of one user shard: balances (free and locked per user
//! and asset), the shard's users' orders, their recent trades and the fee
//! account.
//!
//! It validates new orders against the market's filters and the user's
//! limits, locks the funds an order may spend, sends the order to the
//! market's book as `ToBook::Place`, and settles the book's answers
//! (`ToAccount`): fills move funds and charge commission, final statuses
//! unlock what is left. It never reads a clock or makes ids: the caller
//! passes the time and the new order's id.
//!
//! Funds locked by an order: a limit buy locks price × qty rounded up; a
//! MARKET buy by quoteOrderQty locks that amount; a MARKET (or stop-market)
//! buy by quantity locks qty × reference price × (1 + `MARKET_PROTECTION`),
//! rounded up, where the reference is the best ask the caller last saw (the
//! stop price for stops); sells lock their base quantity, and a MARKET sell
//! by quoteOrderQty locks quote ÷ (reference × (1 − `MARKET_PROTECTION`))
//! rounded up to the step. The book never spends beyond the lock; a market
//! order that would is EXPIRED with the rest unfilled.
//!
//! Fees: the commission is charged in the asset received, at the maker or
//! taker rate, rounded up to the unit, into this machine's fee account.
//!
//! **Invariant:** per asset, Σfree + Σlocked + fees = Σdeposits −
//! Σwithdrawals + net settled (what fills moved in from other machines; the
//! net over all machines is zero).
//! **Invariant:** no balance is negative.
//! **Invariant:** a user's locked funds equal what their open orders require.

use crate::hash::{FastBuildHasher, FastMap, IdBuildHasher, IdMap, StateHasher};
use crate::history::{Chain, History};
use crate::market::MarketSpec;
use crate::msg::{AmendOrder, Fill, PlaceOrder, ToAccount, ToBook};
use crate::num::{add_rate_ceil, fee_ceil, notional_ceil, notional_wide, Amount, Price, Qty};
use crate::num::{Rate, BIPS, UNIT};
use crate::order::{AssetId, CancelReplaceMode, ClientOrderId, MarketId, OrderId, OrderQty};
use crate::order::{OrderListView, OrderRequest, OrderStatus, OrderType, OrderView, Side, TimeInForce};
use crate::order::{UserId, UserTrade};
use crate::snapshot::{self, SnapshotError};
use crate::{error, AmendReason, EngineError};
use rkyv::util::AlignedVec;

mod lists;
mod repartition;

pub use lists::{ListRef, ORDER_LISTS_CLOSED_PER_USER_MAX, ORDER_LISTS_PER_USER_MARKET_MAX};
pub use repartition::repartition;

/// Open orders (resting, held or in flight) one user may have in one market.
pub const OPEN_ORDERS_PER_USER_MARKET_MAX: usize = 200;
/// Parts an iceberg order may show itself in, `ceil(quantity /
/// icebergQty)` (Binance's ICEBERG_PARTS filter).
pub const ICEBERG_PARTS_MAX: i64 = 10;
/// Open iceberg orders one user may have in one market (Binance's
/// MAX_NUM_ICEBERG_ORDERS filter).
pub const ICEBERG_ORDERS_PER_USER_MARKET_MAX: usize = 100;
/// Open stop orders (STOP_LOSS, STOP_LOSS_LIMIT, TAKE_PROFIT,
/// TAKE_PROFIT_LIMIT, Binance's "algo" orders) one user may have in one
/// market (Binance's MAX_NUM_ALGO_ORDERS filter).
pub const ALGO_ORDERS_PER_USER_MARKET_MAX: usize = 100;
/// The TRAILING_DELTA filter: `trailingDelta` in basis points, the same
/// range above and below (Binance's usual 10 to 2,000).
pub const TRAILING_DELTA_MIN: u32 = 10;
pub const TRAILING_DELTA_MAX: u32 = 2000;
/// Trades remembered per user for myTrades.
pub const TRADES_PER_USER_MAX: usize = 100;
/// Finished orders remembered per user for order queries.
pub const ORDERS_CLOSED_PER_USER_MAX: usize = 100;
/// Trades one machine remembers over all its users (myTrades); a user's
/// older trades are forgotten once this many newer ones were recorded.
pub const TRADES_PER_MACHINE_MAX: usize = 1 << 16;
/// Finished orders one machine remembers over all its users.
pub const ORDERS_CLOSED_PER_MACHINE_MAX: usize = 1 << 16;
/// Cancel-replace requests one machine may have in flight at once.
pub const REPLACES_PENDING_MAX: usize = 1024;
/// Amendments one order may have (Binance's MAX_NUM_ORDER_AMENDS).
pub const AMENDS_PER_ORDER_MAX: u8 = 10;
/// Amendments remembered per user for order/amendments.
pub const AMENDS_PER_USER_MAX: usize = 100;
/// Amendments one machine remembers over all its users.
pub const AMENDS_PER_MACHINE_MAX: usize = 1 << 14;
/// Amendments one machine may have waiting for their book at once.
pub const AMENDS_PENDING_MAX: usize = 1024;
/// Execution ids per order: room for its amendments.
const EXECUTION_IDS_PER_ORDER: u64 = 16;
/// Price protection for market orders sized against a reference price: 5 %.
pub const MARKET_PROTECTION: Rate = Rate(5_000_000);
/// Orders one machine reserves room for up front.
pub const ORDERS_RESERVED_COUNT: usize = 1 << 16;

const _: () = assert!(MARKET_PROTECTION.0 > 0 && MARKET_PROTECTION.0 < UNIT);
const _: () = assert!(OPEN_ORDERS_PER_USER_MARKET_MAX <= ORDERS_RESERVED_COUNT);
const _: () = assert!(ICEBERG_ORDERS_PER_USER_MARKET_MAX <= OPEN_ORDERS_PER_USER_MARKET_MAX);
const _: () = assert!(ALGO_ORDERS_PER_USER_MARKET_MAX <= OPEN_ORDERS_PER_USER_MARKET_MAX);
const _: () = assert!(ICEBERG_PARTS_MAX >= 2);
const _: () =
    assert!(0 < TRAILING_DELTA_MIN && TRAILING_DELTA_MIN <= TRAILING_DELTA_MAX && (TRAILING_DELTA_MAX as i64) < BIPS);
const _: () = assert!(TRADES_PER_USER_MAX > 0 && ORDERS_CLOSED_PER_USER_MAX > 0);
const _: () = assert!(TRADES_PER_USER_MAX <= TRADES_PER_MACHINE_MAX);
const _: () = assert!(TRADES_PER_MACHINE_MAX.is_power_of_two());
const _: () = assert!(ORDERS_CLOSED_PER_MACHINE_MAX.is_power_of_two());
const _: () = assert!(ORDERS_CLOSED_PER_USER_MAX <= ORDERS_CLOSED_PER_MACHINE_MAX);
const _: () = assert!(AMENDS_PER_USER_MAX > 0 && AMENDS_PER_USER_MAX <= AMENDS_PER_MACHINE_MAX);
const _: () = assert!(AMENDS_PER_MACHINE_MAX.is_power_of_two());
const _: () = assert!((AMENDS_PER_ORDER_MAX as u64) < EXECUTION_IDS_PER_ORDER);

/// The account machine that owns `user` among `shards` machines.
pub fn owner_of(user: UserId, shards: u32) -> u32 {
    assert!(shards > 0);
    let mut z = user.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    let z = z ^ (z >> 31);
    // The same value as `%`; a mask instead of a 64-bit division, which the
    // driver otherwise pays on every fill it routes.
    if shards.is_power_of_two() {
        return (z & u64::from(shards - 1)) as u32;
    }
    (z % u64::from(shards)) as u32
}

/// Asset names in order of first appearance in the markets list.
pub fn asset_names(markets: &[MarketSpec]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for spec in markets {
        for name in [&spec.base_asset, &spec.quote_asset] {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
    }
    names
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Balance {
    pub free: Amount,
    pub locked: Amount,
}

/// How a cancel names its order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum OrderRef {
    Id(OrderId),
    Client(ClientOrderId),
}

/// An amendment as the client asks it: which order of which market, its
/// new quantity and, if it is to change, its new client id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct AmendRequest {
    pub market: MarketId,
    pub target: OrderRef,
    pub new_qty: Qty,
    pub new_client_order_id: Option<ClientOrderId>,
}

/// Binance's newOrderResult of a cancel-replace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum NewOrderResult {
    Success(OrderView),
    Failure(EngineError),
    NotAttempted,
}

/// What the machine tells the server; pushed into a caller-provided `Vec`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum AccountEvent {
    /// The answer to `place`, once the book has matched it.
    Placed {
        order_id: OrderId,
        result: Result<OrderView, EngineError>,
    },
    /// The answer to a cancel the book handled.
    Canceled {
        order_id: OrderId,
        result: Result<OrderView, EngineError>,
    },
    /// The answer to `cancel_replace`; `order_id` is the new order's id
    /// (the one the caller passed as `new_order_id`), so that the caller can
    /// tell concurrent cancel-replaces apart.
    CancelReplaced {
        order_id: OrderId,
        cancel: Result<OrderView, EngineError>,
        new: NewOrderResult,
    },
    /// Any change of an order (for the user data stream).
    OrderUpdate(OrderView),
    /// The answer to `amend`: the order as amended (EXPIRED when nothing
    /// of it was left to rest) and the amendment, or why it was refused.
    Amended {
        order_id: OrderId,
        result: Result<(OrderView, Amendment), EngineError>,
    },
    /// Market maker protection fired for `user` in `market` at `time_ms`:
    /// their orders there are being canceled, and new ones are refused
    /// until `frozen_until_ms`.
    MmpTriggered {
        user: UserId,
        market: MarketId,
        time_ms: u64,
        frozen_until_ms: u64,
    },
    /// A trade of one of this machine's users.
    Trade { user: UserId, trade: UserTrade },
    /// The answer to `place_list`, once the book has answered for the
    /// orders placed at once.
    ListPlaced {
        order_list_id: u64,
        result: Result<OrderListView, EngineError>,
    },
    /// The answer to `cancel_list`: the list, done.
    ListCanceled {
        order_list_id: u64,
        result: Result<OrderListView, EngineError>,
    },
    /// A list began or ended (Binance's `listStatus` event).
    ListStatus(OrderListView),
}

/// One amendment of an order's quantity (GET /api/v3/order/amendments).
#[derive(Clone, Copy, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Amendment {
    pub market: MarketId,
    pub order_id: OrderId,
    /// `order_id × 16 + n` for the order's `n`-th amendment: unique, and
    /// increasing for each order, whichever machine holds it.
    pub execution_id: u64,
    pub orig_client_order_id: Option<ClientOrderId>,
    pub new_client_order_id: Option<ClientOrderId>,
    pub orig_qty: Qty,
    pub new_qty: Qty,
    pub time_ms: u64,
}

/// Market maker protection of one user in one market: fills of the user's
/// orders there within `window_ms` of the window's first fill that add up
/// to more than `qty_limit`, or whose buys minus sells exceed
/// `delta_limit` either way, cancel all the user's orders in the market
/// and refuse new ones for `frozen_ms` (0: until reset).
#[derive(Clone, Copy, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct MmpConfig {
    pub window_ms: u64,
    pub frozen_ms: u64,
    pub qty_limit: Qty,
    pub delta_limit: Qty,
}

/// A protection's configuration and where its window stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct MmpState {
    pub config: MmpConfig,
    /// The window's first fill; none yet: `None`.
    pub window_start_ms: Option<u64>,
    /// Quantity filled in the window, and bought minus sold.
    pub qty: i64,
    pub delta: i64,
    /// New orders are refused before this time (`u64::MAX`: until reset).
    pub frozen_until_ms: u64,
}

/// An amendment sent to its book, waiting for the book's answer.
#[derive(Clone, Copy, Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct PendingAmend {
    order_id: OrderId,
    new_qty: Qty,
    new_client_order_id: Option<ClientOrderId>,
}

#[derive(Clone, Copy, Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct MarketInfo {
    base: AssetId,
    quote: AssetId,
    maker: Rate,
    taker: Rate,
}

/// No slot: the end of an open-order list.
const NIL: u32 = u32::MAX;

/// One user's open orders in one market, oldest first: an intrusive
/// doubly-linked list through the order slots, so that removing any order
/// is O(1) and the list keeps placement order without a scan.
#[derive(Clone, Copy, Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct OpenList {
    head: u32,
    tail: u32,
    len: u32,
}

impl OpenList {
    const EMPTY: OpenList = OpenList {
        head: NIL,
        tail: NIL,
        len: 0,
    };
}

#[derive(Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct User {
    id: UserId,
    balances: Vec<Balance>,
    open: Vec<OpenList>,
    closed: Chain,
    trades: Chain,
    amends: Chain,
    lists: Chain,
}

/// An open order in its slot. `user` is the owner's index in `users`, so
/// settling a fill needs one id lookup and no user lookup.
#[derive(Clone, Copy, Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct Open {
    view: OrderView,
    asset: AssetId,
    locked: Amount,
    by_quote: bool,
    /// Amendments so far (at most `AMENDS_PER_ORDER_MAX`).
    amends: u8,
    user: u32,
    prev: u32,
    next: u32,
}

#[derive(Clone, Copy, Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct Replace {
    user: UserId,
    cancel_order: OrderId,
    mode: CancelReplaceMode,
    request: OrderRequest,
    new_order_id: OrderId,
    reference: Option<Price>,
    cancel: Option<Result<OrderView, EngineError>>,
}

/// Per-asset totals for the conservation check.
#[derive(Clone, Copy, Debug, Default, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct Ledger {
    deposits: i128,
    withdrawals: i128,
    settled_in: i128,
    fees: i64,
}

/// One shard's account machine.
#[derive(Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Accounts {
    shard: u32,
    shards: u32,
    specs: Vec<MarketSpec>,
    markets: Vec<MarketInfo>,
    assets: Vec<String>,
    /// Users in order of first appearance; `user_index` maps ids to them.
    users: Vec<User>,
    #[rkyv(with = rkyv::with::AsVec)]
    user_index: FastMap<UserId, u32>,
    /// Open orders by id: an index into `slots`, whose free entries are
    /// listed in `slots_free`.
    #[rkyv(with = rkyv::with::AsVec)]
    orders: IdMap<u32>,
    slots: Vec<Open>,
    slots_free: Vec<u32>,
    replaces: Vec<Replace>,
    amends_pending: Vec<PendingAmend>,
    ledger: Vec<Ledger>,
    /// Finished orders, trades and amendments of all users, each user's
    /// chained.
    closed: History<OrderView, ORDERS_CLOSED_PER_USER_MAX>,
    trades: History<UserTrade, TRADES_PER_USER_MAX>,
    amends: History<Amendment, AMENDS_PER_USER_MAX>,
    /// Market maker protections, by (user, market).
    #[rkyv(with = rkyv::with::AsVec)]
    mmp: FastMap<(UserId, u16), MmpState>,
    /// Open order lists by id (their first order's).
    #[rkyv(with = rkyv::with::AsVec)]
    lists: IdMap<lists::ListState>,
    /// Finished order lists of all users, each user's chained.
    closed_lists: History<OrderListView, ORDER_LISTS_CLOSED_PER_USER_MAX>,
}

impl Accounts {
    pub fn new(shard: u32, shards: u32, specs: &[MarketSpec]) -> Accounts {
        assert!(shard < shards);
        let assets = asset_names(specs);
        let id = |name: &String| AssetId(assets.iter().position(|a| a == name).unwrap_or(0) as u16);
        let markets = specs
            .iter()
            .map(|s| MarketInfo {
                base: id(&s.base_asset),
                quote: id(&s.quote_asset),
                maker: s.maker_commission,
                taker: s.taker_commission,
            })
            .collect();
        Accounts {
            shard,
            shards,
            specs: specs.to_vec(),
            markets,
            ledger: vec![Ledger::default(); assets.len()],
            assets,
            users: Vec::new(),
            user_index: FastMap::with_hasher(FastBuildHasher),
            orders: IdMap::with_capacity_and_hasher(ORDERS_RESERVED_COUNT, IdBuildHasher),
            slots: Vec::with_capacity(ORDERS_RESERVED_COUNT),
            slots_free: Vec::with_capacity(ORDERS_RESERVED_COUNT),
            replaces: Vec::with_capacity(REPLACES_PENDING_MAX),
            amends_pending: Vec::with_capacity(AMENDS_PENDING_MAX),
            closed: History::new(ORDERS_CLOSED_PER_MACHINE_MAX),
            trades: History::new(TRADES_PER_MACHINE_MAX),
            amends: History::new(AMENDS_PER_MACHINE_MAX),
            mmp: FastMap::with_hasher(FastBuildHasher),
            lists: IdMap::with_capacity_and_hasher(lists::ORDER_LISTS_RESERVED_COUNT, IdBuildHasher),
            closed_lists: History::new(lists::ORDER_LISTS_CLOSED_PER_MACHINE_MAX),
        }
    }

    /// The machine as a snapshot (an rkyv archive of the whole state).
    pub fn to_snapshot_bytes(&self) -> Result<AlignedVec, SnapshotError> {
        snapshot::encode(self)
    }

    /// A machine back from `to_snapshot_bytes`: validated, with its room
    /// reserved again, its invariants checked.
    pub fn from_snapshot_bytes(bytes: &[u8]) -> Result<Accounts, SnapshotError> {
        let mut accounts: Accounts = snapshot::decode(bytes)?;
        accounts.verify().map_err(SnapshotError::Inconsistent)?;
        accounts.reserve_up_front();
        Ok(accounts)
    }

    fn reserve_up_front(&mut self) {
        snapshot::reserve_total_map(&mut self.orders, ORDERS_RESERVED_COUNT);
        snapshot::reserve_total(&mut self.slots, ORDERS_RESERVED_COUNT);
        snapshot::reserve_total(&mut self.slots_free, ORDERS_RESERVED_COUNT);
        snapshot::reserve_total(&mut self.replaces, REPLACES_PENDING_MAX);
        snapshot::reserve_total(&mut self.amends_pending, AMENDS_PENDING_MAX);
        self.closed.reserve_up_front();
        self.trades.reserve_up_front();
        self.amends.reserve_up_front();
        self.closed_lists.reserve_up_front();
        snapshot::reserve_total_map(&mut self.lists, lists::ORDER_LISTS_RESERVED_COUNT);
    }

    /// Which machine this is, and of how many.
    pub fn shard_of(&self) -> (u32, u32) {
        (self.shard, self.shards)
    }

    pub fn owns(&self, user: UserId) -> bool {
        owner_of(user, self.shards) == self.shard
    }

    pub fn asset_names(&self) -> &[String] {
        &self.assets
    }

    pub fn asset_id(&self, name: &str) -> Option<AssetId> {
        let index = self.assets.iter().position(|a| a == name)?;
        Some(AssetId(index as u16))
    }

    /// Base and quote asset of a market.
    pub fn market_assets(&self, market: MarketId) -> (AssetId, AssetId) {
        let info = &self.markets[usize::from(market.0)];
        (info.base, info.quote)
    }

    /// The index of `user`, created empty on first use.
    fn user_slot(&mut self, user: UserId) -> u32 {
        if let Some(&index) = self.user_index.get(&user) {
            return index;
        }
        assert!(self.owns(user), "user {user} lives on another shard");
        let index = self.users.len() as u32;
        self.users.push(User {
            id: user,
            balances: vec![Balance::default(); self.assets.len()],
            open: vec![OpenList::EMPTY; self.markets.len()],
            closed: Chain::EMPTY,
            trades: Chain::EMPTY,
            amends: Chain::EMPTY,
            lists: Chain::EMPTY,
        });
        self.user_index.insert(user, index);
        index
    }

    fn user_mut(&mut self, user: UserId) -> &mut User {
        let index = self.user_slot(user);
        &mut self.users[index as usize]
    }

    fn user(&self, user: UserId) -> Option<&User> {
        let &index = self.user_index.get(&user)?;
        Some(&self.users[index as usize])
    }

    /// The slot of an open order.
    fn open(&self, order_id: OrderId) -> Option<&Open> {
        let &slot = self.orders.get(&order_id)?;
        Some(&self.slots[slot as usize])
    }

    fn open_mut(&mut self, order_id: OrderId) -> Option<&mut Open> {
        let &slot = self.orders.get(&order_id)?;
        Some(&mut self.slots[slot as usize])
    }

    /// Stores a new open order at the tail of its user's list.
    fn insert_open(&mut self, mut open: Open) {
        let market = usize::from(open.view.market.0);
        let list = self.users[open.user as usize].open[market];
        open.prev = list.tail;
        open.next = NIL;
        let slot = match self.slots_free.pop() {
            Some(slot) => {
                self.slots[slot as usize] = open;
                slot
            }
            None => {
                self.slots.push(open);
                (self.slots.len() - 1) as u32
            }
        };
        if list.tail == NIL {
            self.users[open.user as usize].open[market].head = slot;
        } else {
            self.slots[list.tail as usize].next = slot;
        }
        let list = &mut self.users[open.user as usize].open[market];
        list.tail = slot;
        list.len += 1;
        let order_id = open.view.order_id;
        let previous = self.orders.insert(order_id, slot);
        assert!(previous.is_none(), "order id {order_id} reused");
    }

    /// Takes an open order out of the map, its slot and its user's list.
    fn remove_open(&mut self, order_id: OrderId) -> Option<Open> {
        let slot = self.orders.remove(&order_id)?;
        let open = self.slots[slot as usize];
        if open.prev != NIL {
            self.slots[open.prev as usize].next = open.next;
        }
        if open.next != NIL {
            self.slots[open.next as usize].prev = open.prev;
        }
        let list = &mut self.users[open.user as usize].open[usize::from(open.view.market.0)];
        if list.head == slot {
            list.head = open.next;
        }
        if list.tail == slot {
            list.tail = open.prev;
        }
        list.len -= 1;
        self.slots_free.push(slot);
        Some(open)
    }

    /// The open orders of a user in a market, oldest first.
    fn open_list(&self, u: &User, market: MarketId) -> impl Iterator<Item = &Open> + '_ {
        let mut at = u.open.get(usize::from(market.0)).map_or(NIL, |l| l.head);
        std::iter::from_fn(move || {
            if at == NIL {
                return None;
            }
            let open = &self.slots[at as usize];
            at = open.next;
            Some(open)
        })
    }

    pub fn deposit(&mut self, user: UserId, asset: AssetId, amount: Amount) -> Result<(), EngineError> {
        self.check_transfer(asset, amount)?;
        let balance = &mut self.user_mut(user).balances[usize::from(asset.0)];
        balance.free.0 = balance.free.0.checked_add(amount.0).ok_or(EngineError::BadAmount)?;
        self.ledger[usize::from(asset.0)].deposits += i128::from(amount.0);
        Ok(())
    }

    pub fn withdraw(&mut self, user: UserId, asset: AssetId, amount: Amount) -> Result<(), EngineError> {
        self.check_transfer(asset, amount)?;
        let balance = &mut self.user_mut(user).balances[usize::from(asset.0)];
        if balance.free < amount {
            return Err(EngineError::InsufficientBalance);
        }
        balance.free.0 -= amount.0;
        self.ledger[usize::from(asset.0)].withdrawals += i128::from(amount.0);
        Ok(())
    }

    fn check_transfer(&self, asset: AssetId, amount: Amount) -> Result<(), EngineError> {
        if usize::from(asset.0) >= self.assets.len() {
            return Err(EngineError::UnknownAsset);
        }
        if amount.0 <= 0 {
            return Err(EngineError::BadAmount);
        }
        Ok(())
    }

    /// Checks a new order's parameters and the market's filters without
    /// placing it or looking at funds (POST /api/v3/order/test).
    pub fn check_order(&self, request: &OrderRequest) -> Result<(), EngineError> {
        assert!(usize::from(request.market.0) < self.markets.len());
        check_params(request)?;
        check_filters(&self.specs[usize::from(request.market.0)], request)
    }

    /// Validates and locks a new order and sends it to its book. `reference`
    /// is the best ask (buys) or best bid (sells) the caller last saw, or the
    /// last price; only market orders sized against it use it.
    pub fn place(
        &mut self,
        user: UserId,
        request: &OrderRequest,
        order_id: OrderId,
        reference: Option<Price>,
        time_ms: u64,
        out: &mut Vec<ToBook>,
    ) -> Result<(), EngineError> {
        assert!(usize::from(request.market.0) < self.markets.len());
        let spec = &self.specs[usize::from(request.market.0)];
        check_params(request)?;
        check_filters(spec, request)?;
        if self.is_frozen(user, request.market, time_ms) {
            return Err(EngineError::MmpFrozen);
        }
        let order = self.lock_plan(request, order_id, user, reference, time_ms)?;
        let info = self.markets[usize::from(request.market.0)];
        let (asset, amount) = match request.side {
            Side::Buy => (info.quote, order.quote),
            Side::Sell => (info.base, Amount(order.qty.0)),
        };
        if let Some(client) = request.client_order_id {
            if self.find_open(user, request.market, OrderRef::Client(client)).is_some() {
                return Err(EngineError::DuplicateOrder);
            }
        }
        let user_slot = self.user_slot(user);
        let u = &mut self.users[user_slot as usize];
        let open_count = u.open[usize::from(request.market.0)].len as usize;
        if open_count >= OPEN_ORDERS_PER_USER_MARKET_MAX {
            return Err(EngineError::MaxNumOrders);
        }
        // Walks of at most 200 open orders, only for the orders these
        // filters count.
        let u = &self.users[user_slot as usize];
        if request.kind.is_stop() {
            let stops = self.open_list(u, request.market).filter(|o| o.view.kind.is_stop());
            if stops.count() >= ALGO_ORDERS_PER_USER_MARKET_MAX {
                return Err(EngineError::MaxNumAlgoOrders);
            }
        }
        if request.iceberg_qty.is_some() {
            let icebergs = self.open_list(u, request.market).filter(|o| o.view.iceberg_qty.0 > 0);
            if icebergs.count() >= ICEBERG_ORDERS_PER_USER_MARKET_MAX {
                return Err(EngineError::MaxNumIcebergOrders);
            }
        }
        let u = &mut self.users[user_slot as usize];
        let balance = &mut u.balances[usize::from(asset.0)];
        if balance.free < amount {
            return Err(EngineError::InsufficientBalance);
        }
        balance.free.0 -= amount.0;
        balance.locked.0 += amount.0;
        self.insert_open(Open {
            view: new_view(request, user, order_id, time_ms),
            asset,
            locked: amount,
            by_quote: order.by_quote,
            amends: 0,
            user: user_slot,
            prev: NIL,
            next: NIL,
        });
        out.push(ToBook::Place(order));
        Ok(())
    }

    /// What the book receives: the order with the budget it may spend.
    fn lock_plan(
        &self,
        request: &OrderRequest,
        order_id: OrderId,
        user: UserId,
        reference: Option<Price>,
        time_ms: u64,
    ) -> Result<PlaceOrder, EngineError> {
        let spec = &self.specs[usize::from(request.market.0)];
        let unbounded_qty = Qty(i64::MAX);
        let unbounded_quote = Amount(i64::MAX);
        let reference = match (request.kind.is_stop(), request.trailing_delta) {
            (false, _) => reference,
            (true, None) => request.stop_price,
            // A trailing buy fires `trailingDelta` above the lowest price
            // since it began: its lock assumes it begins at its stop price
            // (or the reference, without one) and fires that much above.
            (true, Some(delta)) => request.stop_price.or(reference).map(|p| trailed_up(p, delta)),
        };
        let (qty, quote, by_quote) = match (request.qty, request.side) {
            (OrderQty::Base(qty), Side::Sell) => (qty, unbounded_quote, false),
            (OrderQty::Base(qty), Side::Buy) if request.kind.has_price() => {
                let price = request.price.unwrap_or(Price::ZERO);
                let lock = notional_ceil(price, qty).ok_or(EngineError::ValueTooLarge)?;
                (qty, lock, false)
            }
            (OrderQty::Base(qty), Side::Buy) => (qty, market_buy_lock(qty, reference)?, false),
            (OrderQty::Quote(quote), Side::Buy) => (unbounded_qty, quote, true),
            (OrderQty::Quote(quote), Side::Sell) => (market_sell_lock(quote, reference, spec.step_size)?, quote, true),
        };
        Ok(PlaceOrder {
            market: request.market,
            order_id,
            user,
            side: request.side,
            kind: request.kind,
            time_in_force: request.time_in_force.unwrap_or(TimeInForce::Gtc),
            price: request.price.unwrap_or(Price::ZERO),
            stop_price: request.stop_price.unwrap_or(Price::ZERO),
            qty,
            quote,
            by_quote,
            stp: request.stp,
            time_ms,
            iceberg_qty: request.iceberg_qty.unwrap_or(Qty::ZERO),
            trailing_delta: request.trailing_delta.unwrap_or(0),
            oco_partner: 0,
            oco_first: false,
        })
    }

    /// Finds an open order of `user` in `market`.
    /// By id this is one map lookup; by clientOrderId a walk of the user's
    /// open orders in that market, at most `OPEN_ORDERS_PER_USER_MARKET_MAX`.
    fn find_open(&self, user: UserId, market: MarketId, target: OrderRef) -> Option<OrderId> {
        match target {
            OrderRef::Id(wanted) => {
                let open = self.open(wanted)?;
                (open.view.user == user && open.view.market == market).then_some(wanted)
            }
            OrderRef::Client(client) => {
                let u = self.user(user)?;
                self.open_list(u, market)
                    .find(|o| o.view.client_order_id == Some(client))
                    .map(|o| o.view.order_id)
            }
        }
    }

    /// Asks the book to cancel an open order; the answer comes back as
    /// `AccountEvent::Canceled`. Unknown orders fail here with -2011.
    pub fn cancel(
        &mut self,
        user: UserId,
        market: MarketId,
        target: OrderRef,
        time_ms: u64,
        out: &mut Vec<ToBook>,
    ) -> Result<OrderId, EngineError> {
        let order_id = self.find_open(user, market, target).ok_or(EngineError::UnknownOrder)?;
        // A pending order of a list is on no book: its working order is.
        let on_book = match self.open(order_id) {
            Some(o) if o.view.status == OrderStatus::PendingNew => self.cancel_through_working(order_id),
            _ => Some(order_id),
        };
        out.push(ToBook::Cancel {
            market,
            order_id: on_book.unwrap_or(order_id),
            user,
            time_ms,
        });
        Ok(order_id)
    }

    /// Cancels every open order of `user` in `market`, oldest first; returns
    /// how many `Canceled` answers to expect.
    pub fn cancel_all(&mut self, user: UserId, market: MarketId, time_ms: u64, out: &mut Vec<ToBook>) -> usize {
        let Some(&user_slot) = self.user_index.get(&user) else {
            return 0;
        };
        self.cancel_pending_lists(user_slot, market);
        let u = &self.users[user_slot as usize];
        // Every open order is answered: a pending order with its working
        // order, both orders of an OCO pair by the first cancel (the
        // second is then answered unknown).
        let count = u.open[usize::from(market.0)].len as usize;
        let cancels = self.open_list(u, market).filter(|o| Self::cancels_for(o));
        out.extend(cancels.map(|o| ToBook::Cancel {
            market,
            order_id: o.view.order_id,
            user,
            time_ms,
        }));
        count
    }

    /// Binance's amend keep priority: reduces an open order's quantity to
    /// `new_qty` where it is in its book, keeping its place in the queue,
    /// and renames it `new_client_order_id` (its own id when `None`). The
    /// answer is one `AccountEvent::Amended`, once the book has applied it;
    /// the funds the smaller order no longer needs are unlocked then. An
    /// order amended to its executed quantity or below leaves the book,
    /// EXPIRED. Refused here: an unknown order, a quantity that does not
    /// shrink, a new quantity the market's LOT_SIZE or NOTIONAL filter
    /// refuses, a client id another open order of the user holds, an
    /// order amended `AMENDS_PER_ORDER_MAX` times or with an amendment
    /// still on its way.
    pub fn amend(
        &mut self,
        user: UserId,
        request: &AmendRequest,
        time_ms: u64,
        out: &mut Vec<ToBook>,
    ) -> Result<OrderId, EngineError> {
        let &AmendRequest {
            market,
            target,
            new_qty,
            new_client_order_id,
        } = request;
        let rejected = |reason| Err(EngineError::AmendRejected(reason));
        let Some(order_id) = self.find_open(user, market, target) else {
            return rejected(AmendReason::UnknownOrder);
        };
        let Some(&open) = self.open(order_id) else {
            unreachable!("found order {order_id} is open")
        };
        let view = open.view;
        if view.order_list_id != 0 {
            return Err(EngineError::ListRejected(error::ListReason::LegOfList));
        }
        if self.amends_pending.iter().any(|p| p.order_id == order_id) || self.amends_pending.len() >= AMENDS_PENDING_MAX
        {
            return rejected(AmendReason::InFlight);
        }
        if open.amends >= AMENDS_PER_ORDER_MAX {
            return rejected(AmendReason::TooMany);
        }
        if new_qty > view.orig_qty {
            return rejected(AmendReason::QtyIncrease);
        }
        if new_qty == view.orig_qty {
            return rejected(AmendReason::NoChange);
        }
        check_amended_qty(&self.specs[usize::from(market.0)], &view, new_qty)?;
        if let Some(client) = new_client_order_id {
            let holder = self.find_open(user, market, OrderRef::Client(client));
            if holder.is_some_and(|holder| holder != order_id) {
                return rejected(AmendReason::Duplicate);
            }
        }
        self.amends_pending.push(PendingAmend {
            order_id,
            new_qty,
            new_client_order_id,
        });
        out.push(ToBook::Amend(AmendOrder {
            market,
            order_id,
            user,
            side: view.side,
            price: view.price,
            reduce_by: Qty(view.orig_qty.0 - new_qty.0),
            // A buy's budget is its lock; a sell's stays unbounded.
            quote: match view.side {
                Side::Buy => amended_lock(&open, new_qty),
                Side::Sell => Amount(i64::MAX),
            },
            time_ms,
        }));
        Ok(order_id)
    }

    /// The book applied (or could not find) an amendment.
    fn on_amended(
        &mut self,
        order_id: OrderId,
        result: Result<bool, EngineError>,
        time_ms: u64,
        out: &mut Vec<ToBook>,
        events: &mut Vec<AccountEvent>,
    ) {
        let Some(position) = self.amends_pending.iter().position(|p| p.order_id == order_id) else {
            unreachable!("an answer to an amendment of order {order_id} that was not sent")
        };
        let pending = self.amends_pending.swap_remove(position);
        let rests = match result {
            Ok(rests) => rests,
            // Filled, canceled or expired before the amendment reached it.
            Err(_) => {
                let result = Err(EngineError::AmendRejected(AmendReason::UnknownOrder));
                events.push(AccountEvent::Amended { order_id, result });
                return;
            }
        };
        let Some(open) = self.open_mut(order_id) else {
            unreachable!("the book amended order {order_id}, which is not open")
        };
        let before = open.view;
        // Before the view changes: a trailing market buy's lock is per
        // unit of its quantity before the amendment.
        let lock = amended_lock(open, pending.new_qty);
        open.amends += 1;
        let execution_id = order_id * EXECUTION_IDS_PER_ORDER + u64::from(open.amends);
        open.view.orig_qty = pending.new_qty.max(before.executed_qty);
        open.view.client_order_id = pending.new_client_order_id.or(before.client_order_id);
        open.view.update_time_ms = time_ms;
        let amendment = Amendment {
            market: before.market,
            order_id,
            execution_id,
            orig_client_order_id: before.client_order_id,
            new_client_order_id: open.view.client_order_id,
            orig_qty: before.orig_qty,
            new_qty: pending.new_qty,
            time_ms,
        };
        let user_slot = open.user as usize;
        if !rests {
            let view = self.finish(order_id, OrderStatus::Expired, time_ms, out, events);
            self.amends.push(&mut self.users[user_slot].amends, amendment);
            events.push(AccountEvent::Amended {
                order_id,
                result: Ok((view, amendment)),
            });
            return;
        }
        let freed = Amount(open.locked.0 - lock.0);
        assert!(freed.0 >= 0, "an amendment of order {order_id} would lock more");
        open.locked = lock;
        let (view, asset) = (open.view, open.asset);
        let u = &mut self.users[user_slot];
        let balance = &mut u.balances[usize::from(asset.0)];
        balance.locked.0 -= freed.0;
        balance.free.0 += freed.0;
        self.amends.push(&mut u.amends, amendment);
        events.push(AccountEvent::Amended {
            order_id,
            result: Ok((view, amendment)),
        });
    }

    /// Sets (or, with `None`, removes) `user`'s market maker protection in
    /// `market`; a new configuration starts a new window and ends a
    /// freeze.
    pub fn set_mmp(&mut self, user: UserId, market: MarketId, config: Option<MmpConfig>) {
        assert!(usize::from(market.0) < self.markets.len());
        match config {
            Some(config) => {
                let state = MmpState {
                    config,
                    window_start_ms: None,
                    qty: 0,
                    delta: 0,
                    frozen_until_ms: 0,
                };
                self.mmp.insert((user, market.0), state);
            }
            None => {
                self.mmp.remove(&(user, market.0));
            }
        }
    }

    /// Ends a freeze and starts a new window (Binance's mmpReset).
    pub fn reset_mmp(&mut self, user: UserId, market: MarketId) {
        if let Some(state) = self.mmp.get_mut(&(user, market.0)) {
            *state = MmpState {
                window_start_ms: None,
                qty: 0,
                delta: 0,
                frozen_until_ms: 0,
                ..*state
            };
        }
    }

    /// `user`'s protection in `market`, if set.
    pub fn mmp(&self, user: UserId, market: MarketId) -> Option<MmpState> {
        self.mmp.get(&(user, market.0)).copied()
    }

    fn is_frozen(&self, user: UserId, market: MarketId, time_ms: u64) -> bool {
        !self.mmp.is_empty() && self.mmp(user, market).is_some_and(|m| time_ms < m.frozen_until_ms)
    }

    /// Counts a fill of `user`'s in `market` against their protection and
    /// fires it when a limit is exceeded: every open order of theirs
    /// there is canceled (the cancels go out after the fill's book
    /// operation) and new ones are refused while frozen.
    #[allow(clippy::too_many_arguments)]
    fn count_mmp(
        &mut self,
        user: UserId,
        market: MarketId,
        side: Side,
        qty: Qty,
        time_ms: u64,
        out: &mut Vec<ToBook>,
        events: &mut Vec<AccountEvent>,
    ) {
        let Some(m) = self.mmp.get_mut(&(user, market.0)) else {
            return;
        };
        if time_ms < m.frozen_until_ms {
            return;
        }
        let in_window = m
            .window_start_ms
            .is_some_and(|start| time_ms.saturating_sub(start) < m.config.window_ms);
        if !in_window {
            m.window_start_ms = Some(time_ms);
            m.qty = 0;
            m.delta = 0;
        }
        m.qty = m.qty.saturating_add(qty.0);
        m.delta = match side {
            Side::Buy => m.delta.saturating_add(qty.0),
            Side::Sell => m.delta.saturating_sub(qty.0),
        };
        if m.qty <= m.config.qty_limit.0 && m.delta.saturating_abs() <= m.config.delta_limit.0 {
            return;
        }
        m.frozen_until_ms = match m.config.frozen_ms {
            0 => u64::MAX,
            ms => time_ms.saturating_add(ms),
        };
        m.window_start_ms = None;
        m.qty = 0;
        m.delta = 0;
        let frozen_until_ms = m.frozen_until_ms;
        self.cancel_all(user, market, time_ms, out);
        events.push(AccountEvent::MmpTriggered {
            user,
            market,
            time_ms,
            frozen_until_ms,
        });
    }

    /// The amendments of `user`'s order `order_id` still remembered,
    /// oldest first.
    pub fn amendments(&self, user: UserId, order_id: OrderId) -> Vec<Amendment> {
        let Some(u) = self.user(user) else {
            return Vec::new();
        };
        self.amends
            .oldest_first(u.amends)
            .filter(|a| a.order_id == order_id)
            .copied()
            .collect()
    }

    /// Binance's order/cancelReplace: cancel `target`, then place `request`
    /// as `new_order_id` unless the cancel failed under STOP_ON_FAILURE. The
    /// cancel's unlocked funds are available to the new order. The answer
    /// is one `AccountEvent::CancelReplaced`.
    #[allow(clippy::too_many_arguments)]
    pub fn cancel_replace(
        &mut self,
        user: UserId,
        target: OrderRef,
        mode: CancelReplaceMode,
        request: &OrderRequest,
        new_order_id: OrderId,
        reference: Option<Price>,
        time_ms: u64,
        out: &mut Vec<ToBook>,
        events: &mut Vec<AccountEvent>,
    ) {
        let mut replace = Replace {
            user,
            cancel_order: 0,
            mode,
            request: *request,
            new_order_id,
            reference,
            cancel: None,
        };
        match self.cancel(user, request.market, target, time_ms, out) {
            Ok(order_id) => {
                replace.cancel_order = order_id;
                assert!(self.replaces.len() < REPLACES_PENDING_MAX);
                self.replaces.push(replace);
            }
            Err(e) => {
                replace.cancel = Some(Err(e));
                self.replace_continue(replace, time_ms, out, events);
            }
        }
    }

    /// The cancel half is known: place the new order or answer.
    fn replace_continue(
        &mut self,
        replace: Replace,
        time_ms: u64,
        out: &mut Vec<ToBook>,
        events: &mut Vec<AccountEvent>,
    ) {
        let Some(cancel) = replace.cancel else {
            unreachable!("continued before the cancel answered")
        };
        if cancel.is_err() && replace.mode == CancelReplaceMode::StopOnFailure {
            events.push(AccountEvent::CancelReplaced {
                order_id: replace.new_order_id,
                cancel,
                new: NewOrderResult::NotAttempted,
            });
            return;
        }
        let placed = self.place(
            replace.user,
            &replace.request,
            replace.new_order_id,
            replace.reference,
            time_ms,
            out,
        );
        match placed {
            Ok(()) => {
                assert!(self.replaces.len() < REPLACES_PENDING_MAX);
                self.replaces.push(replace);
            }
            Err(e) => events.push(AccountEvent::CancelReplaced {
                order_id: replace.new_order_id,
                cancel,
                new: NewOrderResult::Failure(e),
            }),
        }
    }

    /// Applies one message from a book.
    pub fn handle(&mut self, msg: ToAccount, out: &mut Vec<ToBook>, events: &mut Vec<AccountEvent>) {
        self.handle_for(msg, out, events, |_| true);
    }

    /// Applies one message from a book to the users this machine owns
    /// among those `here` accepts. Several machines may share one user
    /// hash (the shards of different instances of a cluster): a fill
    /// between a user of this machine and a user of another instance
    /// settles only the first here, however the other's id hashes.
    pub fn handle_for(
        &mut self,
        msg: ToAccount,
        out: &mut Vec<ToBook>,
        events: &mut Vec<AccountEvent>,
        here: impl Fn(UserId) -> bool,
    ) {
        match msg {
            ToAccount::Fill(fill) => self.on_fill(&fill, out, events, here),
            ToAccount::Placed {
                order_id,
                status,
                reject,
                time_ms,
                ..
            } => self.on_placed(order_id, status, reject, time_ms, out, events),
            ToAccount::Done {
                order_id,
                status,
                time_ms,
                ..
            } => {
                self.finish(order_id, status, time_ms, out, events);
            }
            ToAccount::Canceled {
                order_id,
                result,
                time_ms,
                ..
            } => self.on_canceled(order_id, result, time_ms, out, events),
            ToAccount::Amended {
                order_id,
                result,
                time_ms,
                ..
            } => self.on_amended(order_id, result, time_ms, out, events),
        }
    }

    fn on_fill(
        &mut self,
        fill: &Fill,
        out: &mut Vec<ToBook>,
        events: &mut Vec<AccountEvent>,
        here: impl Fn(UserId) -> bool,
    ) {
        let sides = [
            (fill.taker_user, false, fill.taker_side),
            (fill.maker_user, true, fill.taker_side.opposite()),
        ];
        for (user, is_maker, side) in sides {
            if self.owns(user) && here(user) {
                self.settle(fill, is_maker, events);
                if !self.mmp.is_empty() {
                    self.count_mmp(user, fill.market, side, fill.qty, fill.time_ms, out, events);
                }
            }
        }
    }

    /// Moves one side's funds for a fill and charges its commission.
    fn settle(&mut self, fill: &Fill, is_maker: bool, events: &mut Vec<AccountEvent>) {
        let info = self.markets[usize::from(fill.market.0)];
        let (user, order_id, side) = if is_maker {
            (fill.maker_user, fill.maker_order, fill.taker_side.opposite())
        } else {
            (fill.taker_user, fill.taker_order, fill.taker_side)
        };
        let rate = if is_maker { info.maker } else { info.taker };
        let (paid_asset, paid, got_asset, got) = match side {
            Side::Buy => (info.quote, fill.quote_qty, info.base, Amount(fill.qty.0)),
            Side::Sell => (info.base, Amount(fill.qty.0), info.quote, fill.quote_qty),
        };
        let fee = fee_ceil(got, rate);
        let list = self.open(order_id).map_or(0, |o| o.view.order_list_id);
        if list != 0 {
            self.take_pair_lock(order_id, list);
        }
        let Some(order) = self.open_mut(order_id) else {
            unreachable!("fill for unknown order {order_id}")
        };
        assert_eq!(order.asset, paid_asset);
        assert_eq!(order.view.user, user);
        order.locked.0 -= paid.0;
        assert!(order.locked.0 >= 0, "order {order_id} spent beyond its lock");
        order.view.executed_qty.0 += fill.qty.0;
        order.view.cummulative_quote_qty.0 += fill.quote_qty.0;
        order.view.status = OrderStatus::PartiallyFilled;
        order.view.update_time_ms = fill.time_ms;
        let surplus = price_improvement(order);
        order.locked.0 -= surplus.0;
        let (view, user_slot) = (order.view, order.user);
        let u = &mut self.users[user_slot as usize];
        let balance = &mut u.balances[usize::from(paid_asset.0)];
        balance.locked.0 -= paid.0 + surplus.0;
        balance.free.0 += surplus.0;
        assert!(balance.locked.0 >= 0);
        u.balances[usize::from(got_asset.0)].free.0 += got.0 - fee.0;
        let trade = UserTrade {
            market: fill.market,
            trade_id: fill.trade_id,
            order_id,
            price: fill.price,
            qty: fill.qty,
            quote_qty: fill.quote_qty,
            commission: fee,
            commission_asset: got_asset,
            time_ms: fill.time_ms,
            is_buyer: side == Side::Buy,
            is_maker,
        };
        self.trades.push(&mut u.trades, trade);
        self.ledger[usize::from(got_asset.0)].fees += fee.0;
        self.ledger[usize::from(got_asset.0)].settled_in += i128::from(got.0);
        self.ledger[usize::from(paid_asset.0)].settled_in -= i128::from(paid.0);
        events.push(AccountEvent::Trade { user, trade });
        events.push(AccountEvent::OrderUpdate(view));
    }

    fn on_placed(
        &mut self,
        order_id: OrderId,
        status: OrderStatus,
        reject: Option<EngineError>,
        time_ms: u64,
        out: &mut Vec<ToBook>,
        events: &mut Vec<AccountEvent>,
    ) {
        let list = self.open(order_id).map_or(0, |o| o.view.order_list_id);
        if list != 0 {
            return self.on_list_order_placed(list, order_id, status, reject, time_ms, out, events);
        }
        let result = match reject {
            Some(reason) => {
                self.forget(order_id);
                Err(reason)
            }
            None if status.is_final() => Ok(self.finish(order_id, status, time_ms, out, events)),
            None => {
                let Some(order) = self.open_mut(order_id) else {
                    unreachable!("placed unknown order {order_id}")
                };
                order.view.status = status;
                events.push(AccountEvent::OrderUpdate(order.view));
                Ok(order.view)
            }
        };
        let replace = self
            .replaces
            .iter()
            .position(|r| r.new_order_id == order_id && r.cancel.is_some());
        let Some(position) = replace else {
            events.push(AccountEvent::Placed { order_id, result });
            return;
        };
        let replace = self.replaces.swap_remove(position);
        let new = match result {
            Ok(view) => NewOrderResult::Success(view),
            Err(e) => NewOrderResult::Failure(e),
        };
        events.push(AccountEvent::CancelReplaced {
            order_id: replace.new_order_id,
            cancel: replace.cancel.unwrap_or(Err(EngineError::UnknownOrder)),
            new,
        });
    }

    /// `on_placed` for an order of a list: the list answers, not the
    /// order. A list the book refused leaves no order behind; a pending
    /// order the book refused once its turn came EXPIRES.
    #[allow(clippy::too_many_arguments)]
    fn on_list_order_placed(
        &mut self,
        list: u64,
        order_id: OrderId,
        status: OrderStatus,
        reject: Option<EngineError>,
        time_ms: u64,
        out: &mut Vec<ToBook>,
        events: &mut Vec<AccountEvent>,
    ) {
        if reject.is_some() && self.list_running(list) {
            self.finish(order_id, OrderStatus::Expired, time_ms, out, events);
            return;
        }
        if reject.is_none() && !status.is_final() {
            if let Some(order) = self.open_mut(order_id) {
                order.view.status = status;
                let view = order.view;
                events.push(AccountEvent::OrderUpdate(view));
            }
        }
        self.list_order_placed(list, reject, events);
        if reject.is_none() && status.is_final() {
            self.finish(order_id, status, time_ms, out, events);
        }
    }

    fn on_canceled(
        &mut self,
        order_id: OrderId,
        result: Result<(), EngineError>,
        time_ms: u64,
        out: &mut Vec<ToBook>,
        events: &mut Vec<AccountEvent>,
    ) {
        let result = result.map(|()| self.finish(order_id, OrderStatus::Canceled, time_ms, out, events));
        self.answer_cancel(order_id, result, time_ms, out, events);
    }

    /// The outcome of a cancel of `order_id`: a `Canceled` event, or the
    /// next step of the cancel-replace that asked for it.
    fn answer_cancel(
        &mut self,
        order_id: OrderId,
        result: Result<OrderView, EngineError>,
        time_ms: u64,
        out: &mut Vec<ToBook>,
        events: &mut Vec<AccountEvent>,
    ) {
        let replace = self
            .replaces
            .iter()
            .position(|r| r.cancel_order == order_id && r.cancel.is_none());
        let Some(position) = replace else {
            events.push(AccountEvent::Canceled { order_id, result });
            return;
        };
        let mut replace = self.replaces.swap_remove(position);
        replace.cancel = Some(result);
        self.replace_continue(replace, time_ms, out, events);
    }

    /// An order reached a final status: unlock the rest and archive it.
    fn finish(
        &mut self,
        order_id: OrderId,
        status: OrderStatus,
        time_ms: u64,
        out: &mut Vec<ToBook>,
        events: &mut Vec<AccountEvent>,
    ) -> OrderView {
        assert!(status.is_final());
        let Some(mut order) = self.remove_open(order_id) else {
            unreachable!("finished unknown order {order_id}")
        };
        order.view.status = status;
        order.view.update_time_ms = time_ms;
        if order.by_quote {
            order.view.orig_qty = order.view.executed_qty;
        }
        let list = order.view.order_list_id;
        if list != 0 {
            self.pass_pair_lock(&mut order);
        }
        let view = order.view;
        let u = &mut self.users[order.user as usize];
        unlock(u, &order);
        self.closed.push(&mut u.closed, view);
        events.push(AccountEvent::OrderUpdate(view));
        if list != 0 {
            self.list_order_done(list, order_id, status, time_ms, out, events);
        }
        view
    }

    /// A rejected order never existed: unlock and drop it without history.
    fn forget(&mut self, order_id: OrderId) {
        let Some(mut order) = self.remove_open(order_id) else {
            unreachable!("rejected unknown order {order_id}")
        };
        if order.view.order_list_id != 0 {
            self.pass_pair_lock(&mut order);
        }
        unlock(&mut self.users[order.user as usize], &order);
    }

    pub fn balance(&self, user: UserId, asset: AssetId) -> Balance {
        self.user(user)
            .map_or(Balance::default(), |u| u.balances[usize::from(asset.0)])
    }

    /// All balances of a user, indexed by asset id.
    pub fn balances(&self, user: UserId) -> Option<&[Balance]> {
        self.user(user).map(|u| u.balances.as_slice())
    }

    /// Commission collected in `asset` on this machine.
    pub fn fees(&self, asset: AssetId) -> Amount {
        Amount(self.ledger[usize::from(asset.0)].fees)
    }

    /// Open orders of a user in a market, oldest first, into a reused `Vec`.
    pub fn open_orders(&self, user: UserId, market: MarketId, out: &mut Vec<OrderView>) {
        out.clear();
        let Some(u) = self.user(user) else {
            return;
        };
        out.extend(self.open_list(u, market).map(|o| o.view));
    }

    /// Every order of a user in a market that this machine remembers: the
    /// open ones, oldest first, then the finished ones its history still
    /// holds, newest first (GET /api/v3/allOrders). Not on a hot path: it
    /// allocates.
    pub fn all_orders(&self, user: UserId, market: MarketId) -> Vec<OrderView> {
        let mut views = Vec::new();
        self.open_orders(user, market, &mut views);
        if let Some(u) = self.user(user) {
            views.extend(
                self.closed
                    .newest_first(u.closed)
                    .filter(|v| v.market == market)
                    .copied(),
            );
        }
        views
    }

    /// An open or recently finished order, by id or clientOrderId.
    pub fn order(&self, user: UserId, market: MarketId, target: OrderRef) -> Result<OrderView, EngineError> {
        if let Some(id) = self.find_open(user, market, target) {
            if let Some(order) = self.open(id) {
                return Ok(order.view);
            }
        }
        let u = self.user(user).ok_or(EngineError::NoSuchOrder)?;
        let matches = |v: &&OrderView| {
            v.market == market
                && match target {
                    OrderRef::Id(id) => v.order_id == id,
                    OrderRef::Client(c) => v.client_order_id == Some(c),
                }
        };
        self.closed
            .newest_first(u.closed)
            .find(matches)
            .copied()
            .ok_or(EngineError::NoSuchOrder)
    }

    /// The user's recent trades, oldest first.
    pub fn trades(&self, user: UserId) -> impl Iterator<Item = &UserTrade> {
        let chain = self.user(user).map_or(Chain::EMPTY, |u| u.trades);
        self.trades.oldest_first(chain)
    }

    fn sorted_users(&self) -> Vec<&User> {
        let mut users: Vec<&User> = self.users.iter().collect();
        users.sort_unstable_by_key(|u| u.id);
        users
    }

    /// Σ free + locked of `asset` over this machine's users.
    pub fn held(&self, asset: AssetId) -> i128 {
        let index = usize::from(asset.0);
        self.users
            .iter()
            .map(|u| i128::from(u.balances[index].free.0) + i128::from(u.balances[index].locked.0))
            .sum()
    }

    /// Net amount of `asset` fills moved into this machine from others.
    pub fn settled_in(&self, asset: AssetId) -> i128 {
        self.ledger[usize::from(asset.0)].settled_in
    }

    /// A digest of the full state in a canonical order (sorted user ids,
    /// orders in each user's open lists).
    pub fn state_hash(&self) -> u64 {
        let mut h = StateHasher::default();
        h.u64(u64::from(self.shard));
        for u in self.sorted_users() {
            h.u64(u.id);
            for b in &u.balances {
                h.i64(b.free.0);
                h.i64(b.locked.0);
            }
            let markets = (0..self.markets.len()).map(|m| MarketId(m as u16));
            for o in markets.flat_map(|m| self.open_list(u, m)) {
                h.u64(o.view.order_id);
                h.i64(o.locked.0);
                h.i64(o.view.executed_qty.0);
                h.i64(o.view.cummulative_quote_qty.0);
                h.u64(o.view.status as u64);
                h.i64(o.view.orig_qty.0);
                h.u64(u64::from(o.amends));
            }
            h.u64(self.amends.newest_first(u.amends).count() as u64);
            for t in self.trades.oldest_first(u.trades) {
                h.u64(t.trade_id);
                h.i64(t.commission.0);
            }
            h.u64(self.closed.newest_first(u.closed).count() as u64);
        }
        let mut lists: Vec<&lists::ListState> = self.lists.values().collect();
        lists.sort_unstable_by_key(|l| l.view.order_list_id);
        for l in lists {
            l.hash_into(&mut h);
        }
        let mut mmp: Vec<(&(UserId, u16), &MmpState)> = self.mmp.iter().collect();
        mmp.sort_unstable_by_key(|(key, _)| **key);
        for (&(user, market), m) in mmp {
            h.u64(user);
            h.u64(u64::from(market));
            h.u64(m.frozen_until_ms);
            h.i64(m.qty);
            h.i64(m.delta);
        }
        for l in &self.ledger {
            h.i64(l.fees);
            h.bytes(&l.deposits.to_le_bytes());
            h.bytes(&l.withdrawals.to_le_bytes());
            h.bytes(&l.settled_in.to_le_bytes());
        }
        h.finish()
    }

    /// Conservation, non-negative balances and locks matching open orders;
    /// O(users × assets + orders). Tests call it after every operation.
    pub fn check_invariants(&self) {
        if let Err(e) = self.verify() {
            panic!("accounts of shard {}: {e}", self.shard);
        }
    }

    /// Conservation, balances and locks, and the open-order lists they are
    /// summed from, without walking the history rings (which `verify`
    /// reads whole): cheap enough for long randomized runs to assert after
    /// every operation, O(users × assets + open orders).
    pub fn check_money_invariants(&self) {
        if let Err(e) = self.verify_with(false) {
            panic!("accounts of shard {}: {e}", self.shard);
        }
    }

    /// The invariants as an error: conservation per asset, non-negative
    /// balances, locks equal to what the open orders hold, every open
    /// order in exactly one list of its user and market, every slot used
    /// once, every history chain running back in time. Safe on any
    /// content (each index is checked before use and each walk is
    /// bounded), so a machine restored from a snapshot whose checksum
    /// holds is still refused when its content is not a state this
    /// engine makes.
    pub fn verify(&self) -> Result<(), String> {
        self.verify_with(true)
    }

    /// `verify`, with or without the history rings and chains.
    fn verify_with(&self, history: bool) -> Result<(), String> {
        if self.shard >= self.shards {
            return Err(format!("machine {} of {}", self.shard, self.shards));
        }
        let assets = self.assets.len();
        let markets = self.markets.len();
        let asset_ok = |a: AssetId| usize::from(a.0) < assets;
        if self.ledger.len() != assets
            || markets != self.specs.len()
            || !self.markets.iter().all(|m| asset_ok(m.base) && asset_ok(m.quote))
        {
            return Err(format!(
                "{} ledgers and {markets} markets for {assets} assets and {} market specs",
                self.ledger.len(),
                self.specs.len()
            ));
        }
        if history {
            self.closed.verify(ORDERS_CLOSED_PER_MACHINE_MAX)?;
            self.trades.verify(TRADES_PER_MACHINE_MAX)?;
            self.amends.verify(AMENDS_PER_MACHINE_MAX)?;
        }
        self.verify_slots()?;
        self.verify_lists()?;
        if history {
            self.closed_lists.verify(lists::ORDER_LISTS_CLOSED_PER_MACHINE_MAX)?;
        }
        for pending in &self.amends_pending {
            if !self.orders.contains_key(&pending.order_id) {
                return Err(format!("an amendment of order {} that is not open", pending.order_id));
            }
        }
        if let Some((user, _)) = self.mmp.keys().find(|(_, m)| usize::from(*m) >= markets) {
            return Err(format!("a market maker protection of user {user} in no market"));
        }
        if self.user_index.len() != self.users.len() {
            return Err(format!(
                "{} users indexed of {}",
                self.user_index.len(),
                self.users.len()
            ));
        }
        let mut held = vec![0_i128; assets];
        let mut open_count = 0;
        for (index, u) in self.users.iter().enumerate() {
            let user = u.id;
            if self.user_index.get(&user) != Some(&(index as u32)) {
                return Err(format!("user {user} is not indexed at {index}"));
            }
            if u.balances.len() != assets || u.open.len() != markets {
                return Err(format!("user {user}: balances or open-order lists of the wrong length"));
            }
            let mut required = vec![0_i128; assets];
            for (market, list) in u.open.iter().enumerate() {
                let (mut at, mut prev, mut len) = (list.head, NIL, 0);
                while at != NIL {
                    let order = self
                        .slots
                        .get(at as usize)
                        .filter(|_| (len as usize) < self.slots.len())
                        .ok_or_else(|| format!("user {user}: an open-order list leaves the slots at {at}"))?;
                    let view = &order.view;
                    let fits = self.orders.get(&view.order_id) == Some(&at)
                        && (view.user, order.user) == (user, index as u32)
                        && usize::from(view.market.0) == market
                        && order.prev == prev
                        && order.locked.0 >= 0
                        && !view.status.is_final()
                        && asset_ok(order.asset);
                    if !fits {
                        return Err(format!(
                            "user {user}: open order {} does not fit its list",
                            view.order_id
                        ));
                    }
                    required[usize::from(order.asset.0)] += i128::from(order.locked.0);
                    open_count += 1;
                    len += 1;
                    prev = at;
                    at = order.next;
                }
                if (list.tail, list.len) != (prev, len) {
                    return Err(format!("user {user}: an open-order list's tail or length is wrong"));
                }
            }
            if history {
                self.closed.verify_chain(u.closed)?;
                self.trades.verify_chain(u.trades)?;
                self.amends.verify_chain(u.amends)?;
                self.closed_lists.verify_chain(u.lists)?;
            }
            for (asset, b) in u.balances.iter().enumerate() {
                if b.free.0 < 0 || b.locked.0 < 0 {
                    return Err(format!("user {user}: a negative balance of asset {asset}"));
                }
                if i128::from(b.locked.0) != required[asset] {
                    return Err(format!(
                        "user {user}: {} locked of asset {asset} where the open orders hold {}",
                        b.locked.0, required[asset]
                    ));
                }
                held[asset] += i128::from(b.free.0) + i128::from(b.locked.0);
            }
        }
        if open_count != self.orders.len() {
            return Err(format!(
                "{} open orders, {open_count} of them in their users' lists",
                self.orders.len()
            ));
        }
        for (asset, l) in self.ledger.iter().enumerate() {
            let came_in = l
                .deposits
                .checked_sub(l.withdrawals)
                .and_then(|x| x.checked_add(l.settled_in));
            if l.fees < 0 || came_in != Some(held[asset] + i128::from(l.fees)) {
                return Err(format!(
                    "asset {asset} is not conserved: {} held and {} in fees against {:?} that came in",
                    held[asset], l.fees, came_in
                ));
            }
        }
        Ok(())
    }

    /// Every slot holds exactly one open order (the one `orders` names)
    /// or is listed free exactly once.
    fn verify_slots(&self) -> Result<(), String> {
        let mut used = vec![false; self.slots.len()];
        for (id, &slot) in &self.orders {
            let fits = self.slots.get(slot as usize).is_some_and(|o| o.view.order_id == *id);
            if !fits || std::mem::replace(&mut used[slot as usize], true) {
                return Err(format!("order {id} is not in its slot {slot}"));
            }
        }
        for &slot in &self.slots_free {
            match used.get_mut(slot as usize) {
                Some(taken) if !*taken => *taken = true,
                _ => return Err(format!("free slot {slot} is taken or out of range")),
            }
        }
        match used.iter().all(|&u| u) {
            true => Ok(()),
            false => Err("a slot is neither used nor free".into()),
        }
    }
}

/// What `order` needs locked once its quantity is `new_qty`: a sell its
/// remaining base; a limit buy its remaining quantity at its price; a held
/// market stop buy its quantity at its stop price with the protection
/// margin. Never more than it holds now (an order in flight to a book
/// that will not find it keeps what it holds).
fn amended_lock(order: &Open, new_qty: Qty) -> Amount {
    let view = &order.view;
    let remaining = Qty((new_qty.0 - view.executed_qty.0).max(0));
    let needed = match view.side {
        Side::Sell => Some(Amount(remaining.0)),
        Side::Buy if view.kind.has_price() => notional_ceil(view.price, remaining),
        Side::Buy if view.kind.is_stop() && view.trailing_delta == 0 => {
            market_buy_lock(new_qty, Some(view.stop_price)).ok()
        }
        // A trailing market buy locked against a price it may not know
        // any more (the reference when it was placed): it keeps its lock
        // per unit of quantity.
        Side::Buy if view.kind.is_stop() => {
            let per_unit = i128::from(order.locked.0) * i128::from(new_qty.0);
            let lock = (per_unit + i128::from(view.orig_qty.0) - 1) / i128::from(view.orig_qty.0.max(1));
            i64::try_from(lock).ok().map(Amount)
        }
        Side::Buy => None,
    };
    needed.map_or(order.locked, |needed| needed.min(order.locked))
}

/// LOT_SIZE and NOTIONAL for an order's new quantity.
fn check_amended_qty(spec: &MarketSpec, view: &OrderView, new_qty: Qty) -> Result<(), EngineError> {
    let lot_ok = new_qty >= spec.min_qty && new_qty <= spec.max_qty && new_qty.0 % spec.step_size.0 == 0;
    if !lot_ok {
        return Err(EngineError::LotSize);
    }
    let price = match (view.kind.has_price(), view.kind.is_stop()) {
        (true, _) => view.price,
        // A trailing market stop without a stop price has no price to
        // check, as a market order.
        (false, true) if view.stop_price.0 > 0 => view.stop_price,
        (false, _) => return Ok(()),
    };
    let unit = i128::from(UNIT);
    let notional = notional_wide(price, new_qty);
    let within =
        notional >= i128::from(spec.min_notional.0) * unit && notional <= i128::from(spec.max_notional.0) * unit;
    if !within {
        return Err(EngineError::Notional);
    }
    Ok(())
}

/// Returns what an order still holds to its user's free balance.
fn unlock(u: &mut User, order: &Open) {
    let balance = &mut u.balances[usize::from(order.asset.0)];
    balance.locked.0 -= order.locked.0;
    balance.free.0 += order.locked.0;
    assert!(balance.locked.0 >= 0);
}

/// A limit buy filled below its price keeps locked only what its remainder
/// needs at its limit price; the surplus goes back to free.
fn price_improvement(order: &Open) -> Amount {
    let view = &order.view;
    if view.side != Side::Buy || !view.kind.has_price() {
        return Amount::ZERO;
    }
    let remaining = Qty(view.orig_qty.0 - view.executed_qty.0);
    let needed = notional_ceil(view.price, remaining).unwrap_or(Amount(i64::MAX));
    assert!(needed <= order.locked, "a limit buy's lock fell below its needs");
    Amount(order.locked.0 - needed.0)
}

/// `price` raised by `delta` basis points, rounded up to the unit.
fn trailed_up(price: Price, delta: u32) -> Price {
    let bips = i128::from(BIPS);
    let raised = (i128::from(price.0) * (bips + i128::from(delta)) + bips - 1) / bips;
    Price(i64::try_from(raised).unwrap_or(i64::MAX))
}

fn market_buy_lock(qty: Qty, reference: Option<Price>) -> Result<Amount, EngineError> {
    let Some(reference) = reference else {
        return Ok(Amount::ZERO);
    };
    let notional = notional_ceil(reference, qty).ok_or(EngineError::ValueTooLarge)?;
    add_rate_ceil(notional, MARKET_PROTECTION).ok_or(EngineError::ValueTooLarge)
}

fn market_sell_lock(quote: Amount, reference: Option<Price>, step: Qty) -> Result<Qty, EngineError> {
    let Some(reference) = reference else {
        return Ok(Qty::ZERO);
    };
    let unit = i128::from(UNIT);
    let numerator = i128::from(quote.0) * unit * unit;
    let denominator = i128::from(reference.0) * i128::from(UNIT - MARKET_PROTECTION.0);
    let qty = (numerator + denominator - 1) / denominator;
    let step = i128::from(step.0);
    let qty = (qty + step - 1) / step * step;
    i64::try_from(qty).map(Qty).map_err(|_| EngineError::ValueTooLarge)
}

fn new_view(request: &OrderRequest, user: UserId, order_id: OrderId, time_ms: u64) -> OrderView {
    let (orig_qty, orig_quote_qty) = match request.qty {
        OrderQty::Base(qty) => (qty, Amount::ZERO),
        OrderQty::Quote(quote) => (Qty::ZERO, quote),
    };
    OrderView {
        market: request.market,
        order_id,
        user,
        client_order_id: request.client_order_id,
        price: request.price.unwrap_or(Price::ZERO),
        orig_qty,
        orig_quote_qty,
        executed_qty: Qty::ZERO,
        cummulative_quote_qty: Amount::ZERO,
        status: OrderStatus::New,
        time_in_force: request.time_in_force.unwrap_or(TimeInForce::Gtc),
        kind: request.kind,
        side: request.side,
        stop_price: request.stop_price.unwrap_or(Price::ZERO),
        time_ms,
        update_time_ms: time_ms,
        stp: request.stp,
        iceberg_qty: request.iceberg_qty.unwrap_or(Qty::ZERO),
        trailing_delta: request.trailing_delta.unwrap_or(0),
        order_list_id: 0,
    }
}

/// Which parameters each order type takes (Binance's "Unsupported order
/// combination" rules, reported per parameter).
fn check_params(request: &OrderRequest) -> Result<(), EngineError> {
    let kind = request.kind;
    let wants_tif = matches!(
        kind,
        OrderType::Limit | OrderType::StopLossLimit | OrderType::TakeProfitLimit
    );
    let need = |present: bool, wanted: bool, missing, extra| match (present, wanted) {
        (false, true) => Err(EngineError::MandatoryParam(missing)),
        (true, false) => Err(EngineError::ParamNotRequired(extra)),
        _ => Ok(()),
    };
    need(
        request.price.is_some(),
        kind.has_price(),
        error::MISSING_PRICE,
        error::NOT_REQUIRED_PRICE,
    )?;
    need(
        request.time_in_force.is_some(),
        wants_tif,
        error::MISSING_TIME_IN_FORCE,
        error::NOT_REQUIRED_TIME_IN_FORCE,
    )?;
    if request.trailing_delta.is_some() && !kind.is_stop() {
        return Err(EngineError::ParamNotRequired(error::NOT_REQUIRED_TRAILING_DELTA));
    }
    if kind.is_stop() && request.stop_price.is_none() && request.trailing_delta.is_none() {
        return Err(EngineError::MandatoryParam(error::MISSING_STOP_PRICE_OR_TRAILING_DELTA));
    }
    if !kind.is_stop() && request.stop_price.is_some() {
        return Err(EngineError::ParamNotRequired(error::NOT_REQUIRED_STOP_PRICE));
    }
    if matches!(request.qty, OrderQty::Quote(_)) && kind != OrderType::Market {
        return Err(EngineError::ParamNotRequired(error::NOT_REQUIRED_QUOTE_ORDER_QTY));
    }
    match request.iceberg_qty {
        Some(iceberg) => check_iceberg(request, iceberg),
        None => Ok(()),
    }
}

/// An iceberg is a limit order (plain, maker-only or the limit a stop
/// places) that rests good till cancelled, showing less than its quantity.
fn check_iceberg(request: &OrderRequest, iceberg: Qty) -> Result<(), EngineError> {
    if !request.kind.has_price() {
        return Err(EngineError::ParamNotRequired(error::NOT_REQUIRED_ICEBERG_QTY));
    }
    if request.time_in_force.is_some_and(|tif| tif != TimeInForce::Gtc) {
        return Err(EngineError::UnsupportedCombination);
    }
    match request.qty {
        OrderQty::Base(qty) if iceberg < qty => Ok(()),
        _ => Err(EngineError::IcebergQtyExceedsQty),
    }
}

/// LOT_SIZE applies to an iceberg's visible part as to its quantity; the
/// parts it shows itself in are at most ICEBERG_PARTS.
fn check_iceberg_filters(spec: &MarketSpec, qty: Qty, iceberg: Qty) -> Result<(), EngineError> {
    let lot_ok = iceberg.0 > 0 && iceberg >= spec.min_qty && iceberg.0 % spec.step_size.0 == 0;
    if !lot_ok {
        return Err(EngineError::LotSize);
    }
    let parts = (qty.0 + iceberg.0 - 1) / iceberg.0;
    if parts > ICEBERG_PARTS_MAX {
        return Err(EngineError::IcebergParts);
    }
    Ok(())
}

/// PRICE_FILTER, LOT_SIZE (with ICEBERG_PARTS) and NOTIONAL, in Binance's
/// order.
fn check_filters(spec: &MarketSpec, request: &OrderRequest) -> Result<(), EngineError> {
    let price_ok = |p: Price| p >= spec.min_price && p <= spec.max_price && p.0 % spec.tick_size.0 == 0;
    for price in [request.price, request.stop_price].into_iter().flatten() {
        if !price_ok(price) {
            return Err(EngineError::PriceFilter);
        }
    }
    if let Some(delta) = request.trailing_delta {
        if !(TRAILING_DELTA_MIN..=TRAILING_DELTA_MAX).contains(&delta) {
            return Err(EngineError::TrailingDelta);
        }
    }
    let notional = match request.qty {
        OrderQty::Base(qty) => {
            let lot_ok = qty >= spec.min_qty && qty <= spec.max_qty && qty.0 % spec.step_size.0 == 0;
            if !lot_ok {
                return Err(EngineError::LotSize);
            }
            if let Some(iceberg) = request.iceberg_qty {
                check_iceberg_filters(spec, qty, iceberg)?;
            }
            match request.price.or(request.stop_price) {
                Some(price) => notional_wide(price, qty),
                // A market order by quantity has no price to check here;
                // its lock is bounded by the reference price instead.
                None => return Ok(()),
            }
        }
        OrderQty::Quote(quote) => i128::from(quote.0) * i128::from(UNIT),
    };
    let unit = i128::from(UNIT);
    let within =
        notional >= i128::from(spec.min_notional.0) * unit && notional <= i128::from(spec.max_notional.0) * unit;
    if !within {
        return Err(EngineError::Notional);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The mask for power-of-two shard counts must never move a user.
    #[test]
    fn owner_of_matches_the_modulo_for_every_shard_count() {
        let by_modulo = |user: UserId, shards: u32| {
            let mut z = user.wrapping_add(0x9e37_79b9_7f4a_7c15);
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            ((z ^ (z >> 31)) % u64::from(shards)) as u32
        };
        for shards in 1..=17 {
            for user in (0..2000).chain([u64::MAX - 1, u64::MAX]) {
                assert_eq!(owner_of(user, shards), by_modulo(user, shards), "{user} {shards}");
            }
        }
    }
}
