//! Engine benchmark: the book alone, and accounts + book through the
//! driver, each also with 20 % of the operations amendments (amend keep
//! priority) of the newest order placed, and with 20 % of the operations
//! iceberg orders (two in five of the mix's GTC limit orders show a
//! quarter of their quantity at a time), and with 20 % of the operations
//! order lists or icebergs (one in five of the mix's GTC limit orders is
//! an OCO pair instead, and one in five an iceberg).
//!
//! Run: `cargo bench -p tradsys-engine` (from crates/engine). Each scenario
//! runs a warm-up pass (to reach steady state), a throughput pass with no
//! per-operation timing, and a latency pass that reads `Instant` around each
//! operation (so each latency includes one clock read, ~20 ns here). A
//! counting global allocator reports allocations per operation during the
//! throughput pass. The process pins itself to one core when it can.
//!
//! Throughput is printed twice: per wall-clock second, and per second of
//! CPU time the benchmark thread actually ran (`CLOCK_THREAD_CPUTIME_ID`).
//! On a machine whose cores other work shares, the wall-clock figure falls
//! with the share the scheduler gives this thread; the CPU-time figure
//! measures the engine on one core.
//!
//! The ratios of the book's mixes to the book alone are printed twice:
//! from the passes above, one scenario after another, and from an
//! interleaved pass that runs each mix and the book alone in turns (100
//! rounds of 100,000 operations each, CPU time read per round), so that
//! the machine's drift between passes falls on both sides. On a shared
//! virtual machine the first moved by ±8 points from run to run, the
//! second by about one.
//!
//! `cargo bench -p tradsys-engine --bench engine -- NAME…` runs only the
//! scenarios whose names contain one of the words (`interleaved` selects
//! the interleaved pass), for profiling one of them.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use hdrhistogram::Histogram;
use tradsys_engine::account::{AccountEvent, AmendRequest, OrderRef};
use tradsys_engine::book::{Book, BookCapacity};
use tradsys_engine::driver::{Exchange, Output};
use tradsys_engine::market::{parse_markets, MarketSpec};
use tradsys_engine::msg::{AmendOrder, PlaceOrder, ToAccount, ToBook};
use tradsys_engine::num::{Amount, Price, Qty};
use tradsys_engine::order::{ClientOrderId, ListKind, ListRequest, TimeInForce};
use tradsys_engine::order::{MarketId, OrderQty, OrderRequest, OrderType, Side, StpMode};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const WARMUP_OPS_COUNT: u64 = 1_000_000;
const THROUGHPUT_OPS_COUNT: u64 = 5_000_000;
const LATENCY_OPS_COUNT: u64 = 2_000_000;
/// The scenarios' names, as printed and as `cargo bench -- NAME` selects.
const BOOK: &str = "book alone";
const BOOK_AMENDING: &str = "book, 20% amendments";
const DRIVER: &str = "accounts+book driver";
const DRIVER_AMENDING: &str = "driver, 20% amendments";
const BOOK_ICEBERGS: &str = "book, 20% icebergs";
const DRIVER_ICEBERGS: &str = "driver, 20% icebergs";
const BOOK_LISTS: &str = "book, 20% lists+icebergs";
const DRIVER_LISTS: &str = "driver, 20% lists+icebergs";
/// The book's mixes against the book alone, in turns.
const INTERLEAVED: &str = "interleaved";

const USERS_COUNT: u64 = 1000;
const RECENT_IDS_COUNT: usize = 4096;
const MID_TICKS: i64 = 3_000_000;

/// xorshift64*: deterministic and about a nanosecond per draw.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One operation of the mix: 50 % limit orders within 20 ticks of the mid,
/// 30 % cancels of a recent order, 20 % IOC orders crossing the spread.
#[derive(Clone, Copy)]
enum Op {
    Limit { side: Side, price: Price, qty: Qty },
    Cancel { order_id: u64 },
    Cross { side: Side, price: Price, qty: Qty },
}

struct Mix {
    rng: Rng,
    tick: i64,
    step: i64,
    next_id: u64,
    recent: Vec<u64>,
}

impl Mix {
    fn new(spec: &MarketSpec) -> Mix {
        Mix {
            rng: Rng(0x9e37_79b9_7f4a_7c15),
            tick: spec.tick_size.0,
            step: spec.step_size.0,
            next_id: 1,
            recent: Vec::with_capacity(RECENT_IDS_COUNT),
        }
    }

    fn next(&mut self) -> (Op, u64, u64) {
        let roll = self.rng.below(100);
        let side = if self.rng.below(2) == 0 { Side::Buy } else { Side::Sell };
        let user = 1 + self.rng.below(USERS_COUNT);
        let id = self.next_id;
        self.next_id += 1;
        let op = if roll < 50 {
            let offset = 1 + self.rng.below(20) as i64;
            let ticks = match side {
                Side::Buy => MID_TICKS - offset,
                Side::Sell => MID_TICKS + offset,
            };
            let qty = Qty(self.step * (1 + self.rng.below(10) as i64) * 100);
            if self.recent.len() < RECENT_IDS_COUNT {
                self.recent.push(id);
            } else {
                let slot = self.rng.below(RECENT_IDS_COUNT as u64) as usize;
                self.recent[slot] = id;
            }
            Op::Limit {
                side,
                price: Price(ticks * self.tick),
                qty,
            }
        } else if roll < 80 && !self.recent.is_empty() {
            let slot = self.rng.below(self.recent.len() as u64) as usize;
            Op::Cancel {
                order_id: self.recent[slot],
            }
        } else {
            let ticks = match side {
                Side::Buy => MID_TICKS + 25,
                Side::Sell => MID_TICKS - 25,
            };
            let qty = Qty(self.step * (1 + self.rng.below(40) as i64) * 100);
            Op::Cross {
                side,
                price: Price(ticks * self.tick),
                qty,
            }
        };
        (op, id, user)
    }
}

fn book_message(op: Op, order_id: u64, user: u64) -> ToBook {
    let market = MarketId(0);
    let place = |side, price: Price, qty, tif| {
        ToBook::Place(PlaceOrder {
            market,
            order_id,
            user,
            side,
            kind: OrderType::Limit,
            time_in_force: tif,
            price,
            stop_price: Price::ZERO,
            qty,
            quote: Amount(i64::MAX),
            by_quote: false,
            stp: StpMode::None,
            time_ms: order_id,
            iceberg_qty: Qty::ZERO,
            trailing_delta: 0,
            oco_partner: 0,
            oco_first: false,
        })
    };
    match op {
        Op::Limit { side, price, qty } => place(side, price, qty, TimeInForce::Gtc),
        Op::Cross { side, price, qty } => place(side, price, qty, TimeInForce::Ioc),
        Op::Cancel { order_id: target } => ToBook::Cancel {
            market,
            order_id: target,
            user,
            time_ms: order_id,
        },
    }
}

struct Report {
    name: &'static str,
    ops_per_s: u128,
    ops_per_cpu_s: u128,
    /// Allocations per million operations, kept integral.
    allocations_per_mop: u64,
    histogram: Histogram<u64>,
    /// What else the scenario reports.
    note: String,
}

impl Report {
    fn print(&self) {
        let h = &self.histogram;
        println!(
            "{:<22} {:>12} ops/s  {:>12} ops/cpu-s  p50 {:>5} ns  p99 {:>5} ns  p99.9 {:>6} ns  max {:>8} ns  allocations per million ops {}",
            self.name,
            self.ops_per_s,
            self.ops_per_cpu_s,
            h.value_at_quantile(0.50),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            h.max(),
            self.allocations_per_mop,
        );
        if !self.note.is_empty() {
            println!("{:<22} {}", "", self.note);
        }
    }
}

/// Warm-up, untimed throughput pass, then per-operation latency pass.
fn measure(name: &'static str, mut step: impl FnMut()) -> Report {
    for _ in 0..WARMUP_OPS_COUNT {
        step();
    }
    let allocations_before = ALLOCATIONS.load(Ordering::Relaxed);
    let cpu_start = thread_cpu_ns();
    let start = Instant::now();
    for _ in 0..THROUGHPUT_OPS_COUNT {
        step();
    }
    let elapsed = start.elapsed();
    let cpu_elapsed = thread_cpu_ns() - cpu_start;
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - allocations_before;
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 1_000_000_000, 3).unwrap();
    for _ in 0..LATENCY_OPS_COUNT {
        let t = Instant::now();
        step();
        let ns = t.elapsed().as_nanos() as u64;
        histogram.record(ns.max(1)).unwrap();
    }
    Report {
        name,
        ops_per_s: u128::from(THROUGHPUT_OPS_COUNT) * 1_000_000_000 / elapsed.as_nanos().max(1),
        ops_per_cpu_s: u128::from(THROUGHPUT_OPS_COUNT) * 1_000_000_000 / cpu_elapsed.max(1),
        allocations_per_mop: allocations * 1_000_000 / THROUGHPUT_OPS_COUNT,
        histogram,
        note: String::new(),
    }
}

/// A mix of operations on one book, kept as state so that a pass can
/// run it alone ([`measure`]) or in turns with another ([`interleaved`]).
trait BookMix {
    fn step(&mut self);
    /// What the mix reports besides its speed.
    fn note(&self) -> String;
}

/// What every book mix keeps: the book, the generator, the answers of
/// the last operation, and the operations and trades so far.
struct BookRun {
    book: Book,
    mix: Mix,
    out: Vec<ToAccount>,
    ops: u64,
    trades: u64,
}

impl BookRun {
    fn new(spec: &MarketSpec) -> BookRun {
        BookRun {
            book: Book::new(MarketId(0), spec, BookCapacity::default()),
            mix: Mix::new(spec),
            out: Vec::with_capacity(1024),
            ops: 0,
            trades: 0,
        }
    }

    /// The next operation of the mix, with the answers cleared.
    fn next(&mut self) -> (Op, u64, u64) {
        self.ops += 1;
        self.out.clear();
        self.mix.next()
    }

    fn handle(&mut self, message: ToBook) {
        self.book.handle(message, &mut self.out);
        self.trades += count_fills(&self.out);
    }

    /// Trades per thousand operations: the work a mix asks of the book
    /// besides resting and cancelling.
    fn trades_note(&self) -> String {
        format!("trades per 1000 ops {}", self.trades * 1000 / self.ops.max(1))
    }
}

/// The book alone: the mix as it is.
struct BookAlone(BookRun);

impl BookMix for BookAlone {
    fn step(&mut self) {
        let (op, id, user) = self.0.next();
        self.0.handle(book_message(op, id, user));
    }

    fn note(&self) -> String {
        self.0.trades_note()
    }
}

/// A report of `mix` run alone.
fn bench_book_mix(name: &'static str, mix: &mut impl BookMix) -> Report {
    let mut report = measure(name, || mix.step());
    report.note = mix.note();
    report
}

fn count_fills(out: &[ToAccount]) -> u64 {
    out.iter().filter(|m| matches!(m, ToAccount::Fill(_))).count() as u64
}

/// The book alone with 20 % of the operations replaced by amendments
/// (`ToBook::Amend`) of the newest order placed, one lot smaller.
fn bench_book_amending(spec: &MarketSpec) -> Report {
    let mut book = Book::new(MarketId(0), spec, BookCapacity::default());
    let mut mix = Mix::new(spec);
    let mut out: Vec<ToAccount> = Vec::with_capacity(1024);
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut placed: VecDeque<(u64, u64, Side, Price)> = VecDeque::with_capacity(RECENT_IDS_COUNT);
    let lot = Qty(spec.step_size.0 * 100);
    measure(BOOK_AMENDING, || {
        let (op, id, user) = mix.next();
        out.clear();
        if rng.below(100) < 20 {
            if let Some((order_id, user, side, price)) = placed.pop_back() {
                let amend = AmendOrder {
                    market: MarketId(0),
                    order_id,
                    user,
                    side,
                    price,
                    reduce_by: lot,
                    quote: Amount(i64::MAX),
                    time_ms: id,
                };
                book.handle(ToBook::Amend(amend), &mut out);
                return;
            }
        }
        if let Op::Limit { side, price, .. } = op {
            if placed.len() == RECENT_IDS_COUNT {
                placed.pop_front();
            }
            placed.push_back((id, user, side, price));
        }
        book.handle(book_message(op, id, user), &mut out);
    })
}

/// Two in five of the mix's GTC limit orders (20 % of all operations) are
/// icebergs showing a quarter of their quantity.
const ICEBERG_LIMITS_PERCENT: u64 = 40;

/// The book with 20 % of the operations iceberg orders.
struct BookIcebergs {
    run: BookRun,
    rng: Rng,
}

impl BookIcebergs {
    fn new(spec: &MarketSpec) -> BookIcebergs {
        BookIcebergs {
            run: BookRun::new(spec),
            rng: Rng(0x2545_f491_4f6c_dd1d),
        }
    }
}

impl BookMix for BookIcebergs {
    fn step(&mut self) {
        let (op, id, user) = self.run.next();
        let mut message = book_message(op, id, user);
        if let ToBook::Place(order) = &mut message {
            if order.time_in_force == TimeInForce::Gtc && self.rng.below(100) < ICEBERG_LIMITS_PERCENT {
                order.iceberg_qty = Qty(order.qty.0 / 4);
            }
        }
        self.run.handle(message);
    }

    fn note(&self) -> String {
        self.run.trades_note()
    }
}

/// In the lists-and-icebergs mixes, the share of the GTC limit orders
/// (half of all operations) placed as OCO pairs, and as icebergs: 10 %
/// of all operations each.
const LIST_LIMITS_PERCENT: u64 = 20;
const LIST_ICEBERG_LIMITS_PERCENT: u64 = 20;
/// How far from the mid an OCO's stop waits: beyond every price the mix
/// trades at, so it leaves the book with its LIMIT_MAKER.
const OCO_STOP_TICKS: i64 = 100;
/// The second order of an OCO pair takes its first's id plus this (ids
/// stay unique and within the 48 bits the id hash keeps).
const OCO_SECOND_ID: u64 = 1 << 40;

/// The pair an OCO operation places for a GTC limit order of the mix: a
/// LIMIT_MAKER where the limit order would rest, and a stop loss of the
/// same side and quantity `OCO_STOP_TICKS` from the mid on the other side.
/// `(above, below)`.
fn oco_pair(side: Side, price: Price, qty: Qty, tick: i64, spread: u64) -> (OrderRequest, OrderRequest) {
    let maker = OrderRequest {
        market: MarketId(0),
        side,
        kind: OrderType::LimitMaker,
        time_in_force: None,
        price: Some(price),
        qty: OrderQty::Base(qty),
        stop_price: None,
        client_order_id: None,
        stp: StpMode::None,
        iceberg_qty: None,
        trailing_delta: None,
    };
    // Up to twice as far, so that the stops do not all share one price.
    let away = OCO_STOP_TICKS + (spread % OCO_STOP_TICKS as u64) as i64;
    let stop_ticks = match side {
        Side::Sell => MID_TICKS - away,
        Side::Buy => MID_TICKS + away,
    };
    let stop = OrderRequest {
        kind: OrderType::StopLoss,
        price: None,
        stop_price: Some(Price(stop_ticks * tick)),
        ..maker
    };
    match side {
        Side::Sell => (maker, stop),
        Side::Buy => (stop, maker),
    }
}

/// The book with 20 % of the operations OCO pairs or icebergs.
struct BookLists {
    run: BookRun,
    rng: Rng,
    tick: i64,
    pairs: u64,
    pairs_placed: u64,
}

impl BookLists {
    fn new(spec: &MarketSpec) -> BookLists {
        BookLists {
            run: BookRun::new(spec),
            rng: Rng(0x2545_f491_4f6c_dd1d),
            tick: spec.tick_size.0,
            pairs: 0,
            pairs_placed: 0,
        }
    }

    /// The pair `oco_pair` describes, built from a GTC limit order's own
    /// message.
    fn place_pair(&mut self, order: &PlaceOrder) {
        let away = OCO_STOP_TICKS + self.rng.below(OCO_STOP_TICKS as u64) as i64;
        let stop_ticks = match order.side {
            Side::Sell => MID_TICKS - away,
            Side::Buy => MID_TICKS + away,
        };
        let maker = PlaceOrder {
            kind: OrderType::LimitMaker,
            ..*order
        };
        let stop = PlaceOrder {
            kind: OrderType::StopLoss,
            price: Price::ZERO,
            stop_price: Price(stop_ticks * self.tick),
            ..*order
        };
        let (mut first, mut second) = match order.side {
            Side::Sell => (maker, stop),
            Side::Buy => (stop, maker),
        };
        (first.order_id, second.order_id) = (order.order_id, order.order_id + OCO_SECOND_ID);
        (first.oco_partner, first.oco_first) = (second.order_id, true);
        second.oco_partner = first.order_id;
        self.run.handle(ToBook::Place(first));
        self.run.handle(ToBook::Place(second));
        self.pairs += 1;
        let ok = |m: &ToAccount| matches!(m, ToAccount::Placed { reject: None, .. });
        self.pairs_placed += u64::from(self.run.out.iter().any(ok));
    }
}

impl BookMix for BookLists {
    fn step(&mut self) {
        let (op, id, user) = self.run.next();
        let mut message = book_message(op, id, user);
        if let ToBook::Place(order) = &mut message {
            if order.time_in_force == TimeInForce::Gtc {
                let roll = self.rng.below(100);
                if roll < LIST_LIMITS_PERCENT {
                    let order = *order;
                    return self.place_pair(&order);
                }
                if roll < LIST_LIMITS_PERCENT + LIST_ICEBERG_LIMITS_PERCENT {
                    order.iceberg_qty = Qty(order.qty.0 / 4);
                }
            }
        }
        self.run.handle(message);
    }

    fn note(&self) -> String {
        format!(
            "{}; OCO pairs placed {}% of {}",
            self.run.trades_note(),
            (self.pairs_placed * 100).checked_div(self.pairs).unwrap_or(0),
            self.pairs
        )
    }
}

/// Rounds of [`INTERLEAVED_OPS_COUNT`] operations of each mix in turn.
const INTERLEAVED_ROUNDS: usize = 100;
const INTERLEAVED_OPS_COUNT: u64 = 100_000;

/// `other`'s speed as a share of `base`'s, run in turns: each round runs
/// both for the same number of operations and reads each one's CPU time,
/// so a slower or faster stretch of the machine falls on both. The share
/// over all rounds, and the median, lowest and highest of the rounds'.
fn interleaved(base: &mut impl BookMix, other: &mut impl BookMix) -> String {
    for _ in 0..WARMUP_OPS_COUNT {
        base.step();
        other.step();
    }
    let (mut base_ns, mut other_ns) = (0u128, 0u128);
    let mut shares = Vec::with_capacity(INTERLEAVED_ROUNDS);
    for _ in 0..INTERLEAVED_ROUNDS {
        let start = thread_cpu_ns();
        for _ in 0..INTERLEAVED_OPS_COUNT {
            base.step();
        }
        let middle = thread_cpu_ns();
        for _ in 0..INTERLEAVED_OPS_COUNT {
            other.step();
        }
        let end = thread_cpu_ns();
        base_ns += middle - start;
        other_ns += end - middle;
        shares.push((middle - start) as f64 / (end - middle).max(1) as f64);
    }
    shares.sort_by(f64::total_cmp);
    format!(
        "{:.1}% (rounds: median {:.1}%, lowest {:.1}%, highest {:.1}%)",
        base_ns as f64 * 100.0 / other_ns.max(1) as f64,
        shares[shares.len() / 2] * 100.0,
        shares[0] * 100.0,
        shares[shares.len() - 1] * 100.0,
    )
}

/// A list client id made from `id` without allocating.
fn list_client_id(id: u64) -> ClientOrderId {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut n = id;
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let text = std::str::from_utf8(&digits[at..]).unwrap_or("0");
    ClientOrderId::new(text).unwrap()
}

/// The driver with 20 % of the operations OCO lists or icebergs.
fn bench_exchange_lists(specs: &[MarketSpec]) -> Report {
    let spec = &specs[0];
    let mut exchange = funded_exchange(specs);
    let mut mix = Mix::new(spec);
    let mut out = Output::with_capacity(1024);
    let market = MarketId(0);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut lists, mut lists_placed) = (0u64, 0u64);
    let tick = spec.tick_size.0;
    let mut report = measure(DRIVER_LISTS, || {
        let (op, id, user) = mix.next();
        out.clear();
        let _ = match op {
            Op::Limit { side, price, qty } => {
                let roll = rng.below(100);
                if roll < LIST_LIMITS_PERCENT {
                    let (above, below) = oco_pair(side, price, qty, tick, rng.next());
                    let list = ListRequest {
                        kind: ListKind::Oco,
                        list_client_order_id: list_client_id(id),
                        orders: [above, below, below],
                    };
                    let ids = [id, id + OCO_SECOND_ID, 0];
                    let placed = exchange.place_list(user, &list, ids, id, &mut out);
                    lists += 1;
                    let ok = |e: &AccountEvent| matches!(e, AccountEvent::ListPlaced { result: Ok(_), .. });
                    lists_placed += u64::from(placed.is_ok() && out.events.iter().any(ok));
                    placed
                } else {
                    let iceberg = roll < LIST_LIMITS_PERCENT + LIST_ICEBERG_LIMITS_PERCENT;
                    exchange.place(
                        user,
                        &limit_request(side, price, qty, TimeInForce::Gtc, iceberg),
                        id,
                        id,
                        &mut out,
                    )
                }
            }
            Op::Cross { side, price, qty } => exchange.place(
                user,
                &limit_request(side, price, qty, TimeInForce::Ioc, false),
                id,
                id,
                &mut out,
            ),
            Op::Cancel { order_id } => exchange
                .cancel(user, market, OrderRef::Id(order_id), id, &mut out)
                .map(|_| ()),
        };
    });
    let percent = (lists_placed * 100).checked_div(lists).unwrap_or(0);
    report.note = format!("OCO lists placed {percent}% of {lists} sent");
    report
}

/// A limit order of the driver's mixes on the first market; an iceberg
/// shows a quarter of its quantity.
fn limit_request(side: Side, price: Price, qty: Qty, tif: TimeInForce, iceberg: bool) -> OrderRequest {
    OrderRequest {
        market: MarketId(0),
        side,
        kind: OrderType::Limit,
        time_in_force: Some(tif),
        price: Some(price),
        qty: OrderQty::Base(qty),
        stop_price: None,
        client_order_id: None,
        stp: StpMode::None,
        iceberg_qty: iceberg.then_some(Qty(qty.0 / 4)),
        trailing_delta: None,
    }
}

/// The first market on two account machines, every user rich in both of
/// its assets.
fn funded_exchange(specs: &[MarketSpec]) -> Exchange {
    let spec = &specs[0];
    let mut exchange = Exchange::new(&specs[..1], 2, BookCapacity::default());
    let base = exchange.asset_id(&spec.base_asset).unwrap();
    let quote = exchange.asset_id(&spec.quote_asset).unwrap();
    for user in 1..=USERS_COUNT {
        exchange.deposit(user, base, Amount(1 << 60)).unwrap();
        exchange.deposit(user, quote, Amount(1 << 60)).unwrap();
    }
    exchange
}

fn bench_exchange(specs: &[MarketSpec]) -> Report {
    bench_exchange_with(specs, DRIVER, 0, 0)
}

/// The driver's mix with `amend_percent` of the operations replaced by
/// amendments (amend keep priority) of a recent order down to the
/// smallest size the mix places, and `iceberg_percent` of its GTC limit
/// orders icebergs showing a quarter of their quantity.
fn bench_exchange_with(specs: &[MarketSpec], name: &'static str, amend_percent: u64, iceberg_percent: u64) -> Report {
    let spec = &specs[0];
    let mut exchange = funded_exchange(specs);
    let mut mix = Mix::new(spec);
    let mut out = Output::with_capacity(1024);
    let market = MarketId(0);
    let mut amend_rng = Rng(0x2545_f491_4f6c_dd1d);
    let smallest = Qty(spec.step_size.0 * 100);
    // Recent GTC orders with their users not amended yet, for the
    // amendments; and how many amendments were tried and applied.
    let mut placed: VecDeque<(u64, u64)> = VecDeque::with_capacity(RECENT_IDS_COUNT);
    let (mut tried, mut applied) = (0u64, 0u64);
    let mut iceberg_rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut icebergs, mut icebergs_placed) = (0u64, 0u64);
    let mut report = measure(name, || {
        let (op, id, user) = mix.next();
        out.clear();
        if amend_percent > 0 && amend_rng.below(100) < amend_percent {
            // The newest: the one most likely still resting in this
            // fast-turning book.
            let Some((target, owner)) = placed.pop_back() else {
                return;
            };
            let request = AmendRequest {
                market,
                target: OrderRef::Id(target),
                new_qty: smallest,
                new_client_order_id: None,
            };
            let sent = exchange.amend(owner, &request, id, &mut out);
            tried += 1;
            let ok = |e: &AccountEvent| matches!(e, AccountEvent::Amended { result: Ok(_), .. });
            applied += u64::from(sent.is_ok() && out.events.iter().any(ok));
            return;
        }
        if let Op::Limit { .. } = op {
            if placed.len() == RECENT_IDS_COUNT {
                placed.pop_front();
            }
            placed.push_back((id, user));
        }
        let _ = match op {
            Op::Limit { side, price, qty } => {
                let iceberg = iceberg_percent > 0 && iceberg_rng.below(100) < iceberg_percent;
                let placed = exchange.place(
                    user,
                    &limit_request(side, price, qty, TimeInForce::Gtc, iceberg),
                    id,
                    id,
                    &mut out,
                );
                icebergs += u64::from(iceberg);
                icebergs_placed += u64::from(iceberg && placed.is_ok());
                placed
            }
            Op::Cross { side, price, qty } => exchange.place(
                user,
                &limit_request(side, price, qty, TimeInForce::Ioc, false),
                id,
                id,
                &mut out,
            ),
            Op::Cancel { order_id } => exchange
                .cancel(user, market, OrderRef::Id(order_id), id, &mut out)
                .map(|_| ()),
        };
    });
    if let Some(percent) = (applied * 100).checked_div(tried) {
        report.note = format!("amendments applied {percent}% of {tried} tried");
    }
    if let Some(percent) = (icebergs_placed * 100).checked_div(icebergs) {
        report.note = format!("icebergs accepted {percent}% of {icebergs} sent");
    }
    report
}

/// CPU time this thread has run, in nanoseconds.
fn thread_cpu_ns() -> u128 {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // Cannot fail for this clock id on Linux; a zero reading would only
    // make the CPU-time figure absurd, never the wall-clock one.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    t.tv_sec as u128 * 1_000_000_000 + t.tv_nsec as u128
}

fn pin_to_one_core() -> Option<usize> {
    // The last core allowed, so the first stays free for the system.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return None;
        }
        let core = (0..libc::CPU_SETSIZE as usize)
            .rev()
            .find(|&c| libc::CPU_ISSET(c, &set))?;
        let mut one: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut one);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &one) != 0 {
            return None;
        }
        Some(core)
    }
}

fn main() {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .unwrap_or("model name: unknown");
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("nproc: {nproc}");
    println!("{model}");
    match pin_to_one_core() {
        Some(core) => println!("pinned to core {core}"),
        None => println!("not pinned"),
    }
    let specs = parse_markets(include_str!("../../../shards/markets.toml")).unwrap();
    println!(
        "mix: 50% GTC limit within 20 ticks of mid, 30% cancel of a recent order, 20% IOC crossing 25 ticks; {USERS_COUNT} users; warm-up {WARMUP_OPS_COUNT}, throughput {THROUGHPUT_OPS_COUNT}, latency {LATENCY_OPS_COUNT} ops"
    );
    // `cargo bench --bench engine -- NAME…` runs only the scenarios whose
    // names contain one of the words (for profiling one of them).
    let only: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let mut reports: Vec<Report> = Vec::new();
    let mut run = |name: &'static str, scenario: &mut dyn FnMut() -> Report| {
        if only.is_empty() || only.iter().any(|word| name.contains(word.as_str())) {
            let report = scenario();
            report.print();
            reports.push(report);
        }
    };
    let (mut alone, mut icebergs, mut lists) = (
        BookAlone(BookRun::new(&specs[0])),
        BookIcebergs::new(&specs[0]),
        BookLists::new(&specs[0]),
    );
    run(BOOK, &mut || bench_book_mix(BOOK, &mut alone));
    run(BOOK_AMENDING, &mut || bench_book_amending(&specs[0]));
    run(DRIVER, &mut || bench_exchange(&specs));
    run(DRIVER_AMENDING, &mut || {
        bench_exchange_with(&specs, DRIVER_AMENDING, 20, 0)
    });
    run(BOOK_ICEBERGS, &mut || bench_book_mix(BOOK_ICEBERGS, &mut icebergs));
    run(DRIVER_ICEBERGS, &mut || {
        bench_exchange_with(&specs, DRIVER_ICEBERGS, 0, ICEBERG_LIMITS_PERCENT)
    });
    run(BOOK_LISTS, &mut || bench_book_mix(BOOK_LISTS, &mut lists));
    run(DRIVER_LISTS, &mut || bench_exchange_lists(&specs));
    let ratio = |a: &str, b: &str| {
        let per_cpu_s = |name: &str| reports.iter().find(|r| r.name == name).map(|r| r.ops_per_cpu_s);
        match (per_cpu_s(a), per_cpu_s(b)) {
            (Some(a), Some(b)) => format!("{}%", a * 100 / b.max(1)),
            _ => "not run".to_string(),
        }
    };
    println!(
        "ratios per CPU-second: book with 20% amendments / book alone {}, driver / book alone {}, driver with 20% amendments / driver {}",
        ratio(BOOK_AMENDING, BOOK),
        ratio(DRIVER, BOOK),
        ratio(DRIVER_AMENDING, DRIVER),
    );
    println!(
        "ratios per CPU-second: book with 20% icebergs / book alone {}, driver with 20% icebergs / driver {}",
        ratio(BOOK_ICEBERGS, BOOK),
        ratio(DRIVER_ICEBERGS, DRIVER),
    );
    println!(
        "ratios per CPU-second: book with 20% lists+icebergs / book alone {}, driver with 20% lists+icebergs / driver {}",
        ratio(BOOK_LISTS, BOOK),
        ratio(DRIVER_LISTS, DRIVER),
    );
    if only.is_empty() || only.iter().any(|word| INTERLEAVED.contains(word.as_str())) {
        // The target, measured in turns so that the machine's
        // drift between passes does not decide it.
        println!(
            "interleaved, {INTERLEAVED_ROUNDS} rounds of {INTERLEAVED_OPS_COUNT} ops each: book with 20% icebergs / book alone {}",
            interleaved(&mut alone, &mut icebergs)
        );
        println!(
            "interleaved, {INTERLEAVED_ROUNDS} rounds of {INTERLEAVED_OPS_COUNT} ops each: book with 20% lists+icebergs / book alone {}",
            interleaved(&mut alone, &mut lists)
        );
    }
}
