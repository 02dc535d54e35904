//! `ws-fanout`: many subscribers of one trade stream while trades are made,
//! for delivered messages per second, completeness and latency.
//!
//! Set-up: `subscribers` connections to `/ws/btcusdt@trade`, then a few
//! large resting SELLs by the first user (the makers). Producers: taker
//! BUYs (LIMIT IOC at the makers' price) by the other users, sent at a
//! constant `rate` over `producers` keep-alive connections; each taker
//! takes one maker and makes exactly one trade, which the server sends to
//! every subscriber.
//!
//! Completeness: the takers' responses carry their trade ids; every
//! subscriber must receive every id from the first to the last, each once
//! and in order. Gaps, repeats and closures are counted per subscriber.
//!
//! Latency: taker `k` carries quantity `TAKER_QTY_UNITS + (k mod SLOTS) ·
//! STEP`, and the instant just before its request is written is stored in
//! slot `k mod SLOTS`. A subscriber maps a trade's quantity back to its
//! slot and records (instant of the read that brought the frame − that
//! send instant). The figure is therefore an upper bound on trade-to-
//! subscriber latency that includes the REST order path (request parsing,
//! signature, risk, matching); the REST round trip of the same takers is
//! recorded alongside so that it can be subtracted.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::http::Client;
use crate::orders::{now_ms, sign_into};
use crate::procfs;
use crate::users::User;
use crate::wsclient::{self, Conn, Epoll, Gone};
use crate::wsidle::{describe, open_polled, Tally};

/// Subscribers one run may open (see `wsidle::CONNS_MAX`).
pub const SUBSCRIBERS_MAX: u64 = 19_000;
/// Trades per second a run may ask for.
pub const RATE_PER_S_MAX: u64 = 100_000;
/// Measured seconds a run may last.
pub const DURATION_S_MAX: u64 = 600;
/// Producer connections a run may use.
pub const PRODUCERS_MAX: u64 = 64;
/// Receiver threads a run may use.
pub const THREADS_MAX: u64 = 64;

/// The market the benchmark trades: its stream, symbol and the makers'
/// price (a string, as sent).
pub const STREAM: &str = "btcusdt@trade";
const SYMBOL: &str = "BTCUSDT";
const PRICE: &str = "50000.00";
/// One maker's quantity, 1e-8 BTC: 150 BTC, a notional of 7.5 M USDT,
/// under the market's 9 M maximum.
const MAKER_QTY_UNITS: u64 = 150 * 100_000_000;
/// The smallest taker quantity, 1e-8 BTC (0.001 BTC: 50 USDT, above the
/// 5 USDT minimum notional).
const TAKER_QTY_UNITS: u64 = 100_000;
/// Taker quantities step by the market's lot step (0.00001 BTC).
const TAKER_STEP_UNITS: u64 = 1_000;
/// Send-time slots: a slot is reused after this many takers, which at
/// 1,000 trades/s is 10 s, far beyond any latency that is not an overload.
const SLOTS: u64 = 10_000;
/// Latencies above this are clamped, ns.
const LATENCY_NS_MAX: u64 = 60_000_000_000;
/// Time the threads get before the common start.
const START_DELAY_MS: u64 = 300;
/// Time after the scheduled end a lagging producer may still send.
const PRODUCE_OVERRUN_MS_MAX: u64 = 5_000;
/// A drain ends once no frame arrived for this long.
const DRAIN_QUIET_MS: u64 = 1_000;
const READ_SCRATCH_BYTES: usize = 256 * 1024;
const EPOLL_EVENTS_MAX: usize = 1024;
const FORM: &str = "application/x-www-form-urlencoded";

pub struct Settings {
    pub target: String,
    pub subscribers: usize,
    pub rate_per_s: u64,
    pub duration_s: u64,
    pub warmup_s: u64,
    pub producers: usize,
    pub threads: usize,
    pub server_pid: Option<u32>,
    /// Receivers poll without sleeping (epoll_wait with a zero timeout):
    /// on loopback, waking a sleeping receiver is work the server's send
    /// pays for (the wake-up runs in the sender's system call).
    pub spin: bool,
    pub drain_s: u64,
    pub recv_window_ms: u64,
}

/// State shared by producers and receivers.
struct Shared {
    base: Instant,
    /// Send instant of the taker in each slot, ns since `base` (0: none).
    slots: Vec<AtomicU64>,
    /// Takers sent before this (ns since `base`) are warm-up.
    measure_from_ns: u64,
    trade_id_min: AtomicU64,
    trade_id_max: AtomicU64,
    /// Takers answered 200, all producers.
    takers_done: AtomicU64,
    /// Text frames received, per receiver thread.
    received: Vec<AtomicU64>,
    stop: AtomicBool,
}

/// What one receiver thread saw.
struct Seen {
    subs: Vec<SubStats>,
    latency_ns: Histogram<u64>,
    unmatched: u64,
}

#[derive(Default)]
struct SubStats {
    first: Option<u64>,
    last: u64,
    count: u64,
    missing: u64,
    disorder: u64,
    gone: Option<Gone>,
}

/// What the producers saw.
struct Produced {
    rest_us: Histogram<u64>,
    sent: u64,
    /// Takers due but not sent: the producer was still behind at the
    /// hard end.
    abandoned: u64,
    filled: u64,
    trades: u64,
    first_problem: Option<String>,
}

pub fn run(s: &Settings, users: &[User]) -> Result<String, String> {
    let opened = Instant::now();
    // Opened with pings answered in between (see `wsidle::open_polled`);
    // the epoll is only for that and goes before the receivers take over.
    let mut conns = Vec::with_capacity(s.subscribers);
    let mut tally = Tally::default();
    open_polled(
        &s.target,
        &format!("/ws/{STREAM}"),
        s.subscribers,
        &Epoll::new().map_err(|e| e.to_string())?,
        &mut conns,
        &mut tally,
    )?;
    if tally.gone > 0 {
        return Err(format!(
            "{} subscribers closed while opening (first: {})",
            tally.gone,
            tally.first_gone.unwrap_or_default()
        ));
    }
    let mut text = format!(
        "subscribers: {} on {STREAM}, opened in {:.2} s\n",
        conns.len(),
        opened.elapsed().as_secs_f64()
    );
    let makers = place_makers(s, &users[0])?;
    text.push_str(&format!("makers: {makers} SELLs of 150 BTC at {PRICE} placed\n"));
    let base = Instant::now();
    let start = base + Duration::from_millis(START_DELAY_MS);
    let shared = Arc::new(Shared {
        base,
        slots: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
        measure_from_ns: (start - base + Duration::from_secs(s.warmup_s)).as_nanos() as u64,
        trade_id_min: AtomicU64::new(u64::MAX),
        trade_id_max: AtomicU64::new(0),
        takers_done: AtomicU64::new(0),
        received: (0..s.threads).map(|_| AtomicU64::new(0)).collect(),
        stop: AtomicBool::new(false),
    });
    let receivers = spawn_receivers(conns, s.threads, s.spin, &shared);
    let producers = spawn_producers(s, users, &shared, start);
    let window = measure_window(s, &shared, start);
    let mut produced = Produced::new();
    for h in producers {
        produced.merge(h.join().map_err(|_| "a producer thread panicked".to_string())?);
    }
    let drained = drain(s, &shared);
    shared.stop.store(true, Ordering::Relaxed);
    let mut seen = Vec::new();
    for h in receivers {
        seen.push(h.join().map_err(|_| "a receiver thread panicked".to_string())??);
    }
    text.push_str(&summarize(s, &shared, &window, &produced, &seen, drained));
    Ok(text)
}

/// Places enough resting SELLs for the whole run; returns how many.
fn place_makers(s: &Settings, maker: &User) -> Result<u64, String> {
    let takers = s.rate_per_s * (s.warmup_s + s.duration_s) + s.rate_per_s;
    let largest = TAKER_QTY_UNITS + (SLOTS - 1) * TAKER_STEP_UNITS;
    let count = (takers * largest).div_ceil(MAKER_QTY_UNITS) + 1;
    let mut client = Client::connect(&s.target).map_err(|e| format!("connect {}: {e}", s.target))?;
    for _ in 0..count {
        let mut body = format!(
            "symbol={SYMBOL}&side=SELL&type=LIMIT&timeInForce=GTC&quantity={}&price={PRICE}&recvWindow={}\
             &timestamp={}",
            decimal(MAKER_QTY_UNITS),
            s.recv_window_ms,
            now_ms()
        );
        sign_into(&mut body, &maker.secret);
        let key = [("X-MBX-APIKEY", maker.api_key.as_str())];
        let resp = client
            .request("POST", "/api/v3/order", &key, body.as_bytes(), FORM)
            .map_err(|e| format!("maker order: {e}"))?;
        if resp.status != 200 {
            return Err(format!(
                "maker order: status {}: {}",
                resp.status,
                String::from_utf8_lossy(&resp.body)
            ));
        }
    }
    Ok(count)
}

/// 1e-8 units as a decimal with eight places.
fn decimal(units: u64) -> String {
    format!("{}.{:08}", units / 100_000_000, units % 100_000_000)
}

type ReceiverHandle = thread::JoinHandle<Result<Seen, String>>;

fn spawn_receivers(conns: Vec<Conn>, threads: usize, spin: bool, shared: &Arc<Shared>) -> Vec<ReceiverHandle> {
    let mut groups: Vec<Vec<Conn>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, c) in conns.into_iter().enumerate() {
        groups[i % threads].push(c);
    }
    groups
        .into_iter()
        .enumerate()
        .map(|(t, group)| {
            let shared = Arc::clone(shared);
            thread::spawn(move || receive(t, group, spin, &shared))
        })
        .collect()
}

/// One receiver thread: reads its connections until told to stop.
fn receive(t: usize, mut conns: Vec<Conn>, spin: bool, shared: &Shared) -> Result<Seen, String> {
    let epoll = Epoll::new().map_err(|e| e.to_string())?;
    for (i, c) in conns.iter().enumerate() {
        epoll.add(&c.stream, i as u64).map_err(|e| e.to_string())?;
    }
    let mut subs: Vec<SubStats> = (0..conns.len()).map(|_| SubStats::default()).collect();
    let mut seen = Seen {
        subs: Vec::new(),
        latency_ns: Histogram::new_with_bounds(1, LATENCY_NS_MAX, 3).map_err(|e| e.to_string())?,
        unmatched: 0,
    };
    let mut events = wsclient::events(EPOLL_EVENTS_MAX);
    let mut tokens = Vec::with_capacity(EPOLL_EVENTS_MAX);
    let mut scratch = vec![0u8; READ_SCRATCH_BYTES];
    while !shared.stop.load(Ordering::Relaxed) {
        let timeout_ms = if spin { 0 } else { 100 };
        epoll
            .wait(&mut events, &mut tokens, timeout_ms)
            .map_err(|e| e.to_string())?;
        for &token in &tokens {
            let i = token as usize;
            // One clock read per socket read: the frames it brings were
            // all received by then.
            let now_ns = shared.base.elapsed().as_nanos() as u64;
            let sub = &mut subs[i];
            let hist = &mut seen.latency_ns;
            let unmatched = &mut seen.unmatched;
            let result = conns[i].read_frames(&mut scratch, |frame| {
                on_trade(frame, sub, shared, now_ns, hist, unmatched);
            });
            match result {
                Ok(n) => {
                    shared.received[t].fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(gone) => {
                    epoll.remove(&conns[i].stream);
                    sub.gone = Some(gone);
                }
            }
        }
    }
    seen.subs = subs;
    Ok(seen)
}

fn on_trade(
    frame: &[u8],
    sub: &mut SubStats,
    shared: &Shared,
    now_ns: u64,
    hist: &mut Histogram<u64>,
    unmatched: &mut u64,
) {
    let Some(id) = field_uint(frame, b"\"t\":") else {
        return;
    };
    sub.count += 1;
    match sub.first {
        None => sub.first = Some(id),
        Some(_) if id == sub.last + 1 => {}
        Some(_) if id > sub.last => sub.missing += id - sub.last - 1,
        Some(_) => sub.disorder += 1,
    }
    sub.last = sub.last.max(id);
    let slot = field_units(frame, b"\"q\":\"").and_then(|q| {
        let step = q.checked_sub(TAKER_QTY_UNITS)?;
        (step % TAKER_STEP_UNITS == 0 && step / TAKER_STEP_UNITS < SLOTS).then_some(step / TAKER_STEP_UNITS)
    });
    let sent = slot.map_or(0, |slot| shared.slots[slot as usize].load(Ordering::Relaxed));
    if sent == 0 || sent > now_ns {
        *unmatched += 1;
    } else if sent >= shared.measure_from_ns {
        let _ = hist.record((now_ns - sent).clamp(1, LATENCY_NS_MAX));
    }
}

/// The unsigned integer after `key` in `text`.
fn field_uint(text: &[u8], key: &[u8]) -> Option<u64> {
    let at = find(text, key)? + key.len();
    let digits = text[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return None;
    }
    text[at..at + digits]
        .iter()
        .try_fold(0u64, |v, b| v.checked_mul(10)?.checked_add(u64::from(b - b'0')))
}

/// The decimal string after `key`, in 1e-8 units.
fn field_units(text: &[u8], key: &[u8]) -> Option<u64> {
    let at = find(text, key)? + key.len();
    let (mut units, mut decimals, mut dot) = (0u64, 0u32, false);
    for &b in &text[at..] {
        match b {
            b'0'..=b'9' => {
                units = units.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
                decimals += u32::from(dot);
            }
            b'.' if !dot => dot = true,
            _ => break,
        }
    }
    if decimals > 8 {
        return None;
    }
    units.checked_mul(10u64.pow(8 - decimals))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn spawn_producers(
    s: &Settings,
    users: &[User],
    shared: &Arc<Shared>,
    start: Instant,
) -> Vec<thread::JoinHandle<Produced>> {
    let takers: Arc<Vec<User>> = Arc::new(users[1..].to_vec());
    let barrier = Arc::new(Barrier::new(s.producers));
    (0..s.producers)
        .map(|c| {
            let (shared, takers, barrier) = (Arc::clone(shared), Arc::clone(&takers), Arc::clone(&barrier));
            let plan = Schedule {
                target: s.target.clone(),
                c: c as u64,
                conns: s.producers as u64,
                rate: s.rate_per_s,
                start,
                end: start + Duration::from_secs(s.warmup_s + s.duration_s),
                recv_window_ms: s.recv_window_ms,
            };
            thread::spawn(move || {
                let taker = &takers[c % takers.len()];
                let client = Client::connect(&plan.target);
                barrier.wait();
                match client {
                    Ok(mut client) => produce(&mut client, &plan, taker, &shared),
                    Err(e) => Produced::failed(format!("connect {}: {e}", plan.target)),
                }
            })
        })
        .collect()
}

/// When producer `c` of `conns` sends: its `i`-th taker is due at
/// `start + (c + i·conns) / rate`.
struct Schedule {
    target: String,
    c: u64,
    conns: u64,
    rate: u64,
    start: Instant,
    end: Instant,
    recv_window_ms: u64,
}

fn produce(client: &mut Client, plan: &Schedule, taker: &User, shared: &Shared) -> Produced {
    let mut out = Produced::new();
    let key = [("X-MBX-APIKEY", taker.api_key.as_str())];
    let hard_end = plan.end + Duration::from_millis(PRODUCE_OVERRUN_MS_MAX);
    for i in 0.. {
        let k = plan.c + i * plan.conns;
        let due = plan.start + Duration::from_nanos((k as u128 * 1_000_000_000 / plan.rate as u128) as u64);
        if due >= plan.end {
            break;
        }
        if Instant::now() >= hard_end {
            // A server this far behind is overloaded; the rest is not sent.
            out.abandoned = (plan.end - due).as_nanos() as u64 * plan.rate / plan.conns / 1_000_000_000 + 1;
            break;
        }
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            thread::sleep(wait);
        }
        let slot = k % SLOTS;
        let mut body = format!(
            "symbol={SYMBOL}&side=BUY&type=LIMIT&timeInForce=IOC&quantity={}&price={PRICE}\
             &newOrderRespType=FULL&recvWindow={}&timestamp={}",
            decimal(TAKER_QTY_UNITS + slot * TAKER_STEP_UNITS),
            plan.recv_window_ms,
            now_ms()
        );
        sign_into(&mut body, &taker.secret);
        let sent = Instant::now();
        let sent_ns = (sent - shared.base).as_nanos() as u64;
        shared.slots[slot as usize].store(sent_ns, Ordering::Relaxed);
        let result = client.request("POST", "/api/v3/order", &key, body.as_bytes(), FORM);
        let rtt_us = sent.elapsed().as_micros() as u64;
        out.sent += 1;
        match result {
            Ok(resp) if resp.status == 200 => {
                if sent_ns >= shared.measure_from_ns {
                    let _ = out.rest_us.record(rtt_us.clamp(1, LATENCY_NS_MAX / 1000));
                }
                out.note_fills(&resp.body, shared);
                shared.takers_done.fetch_add(1, Ordering::Relaxed);
            }
            Ok(resp) => {
                out.first_problem
                    .get_or_insert_with(|| format!("status {}: {}", resp.status, String::from_utf8_lossy(&resp.body)));
            }
            Err(e) => {
                out.first_problem.get_or_insert_with(|| format!("request failed: {e}"));
                match Client::connect(&plan.target) {
                    Ok(fresh) => *client = fresh,
                    Err(_) => thread::sleep(Duration::from_millis(100)),
                }
            }
        }
    }
    out
}

impl Produced {
    fn new() -> Produced {
        Produced {
            rest_us: Histogram::new_with_bounds(1, LATENCY_NS_MAX / 1000, 3).expect("histogram bounds are valid"),
            sent: 0,
            abandoned: 0,
            filled: 0,
            trades: 0,
            first_problem: None,
        }
    }

    fn failed(problem: String) -> Produced {
        let mut p = Produced::new();
        p.first_problem = Some(problem);
        p
    }

    /// Records the trade ids of a FULL order response.
    fn note_fills(&mut self, body: &[u8], shared: &Shared) {
        if find(body, b"\"status\":\"FILLED\"").is_some() {
            self.filled += 1;
        }
        let mut rest = body;
        while let Some(at) = find(rest, b"\"tradeId\":") {
            rest = &rest[at..];
            if let Some(id) = field_uint(rest, b"\"tradeId\":") {
                self.trades += 1;
                shared.trade_id_min.fetch_min(id, Ordering::Relaxed);
                shared.trade_id_max.fetch_max(id, Ordering::Relaxed);
            }
            rest = &rest[1..];
        }
    }

    fn merge(&mut self, other: Produced) {
        let _ = self.rest_us.add(&other.rest_us);
        self.sent += other.sent;
        self.abandoned += other.abandoned;
        self.filled += other.filled;
        self.trades += other.trades;
        if self.first_problem.is_none() {
            self.first_problem = other.first_problem;
        }
    }
}

/// Counters at the start and end of the measured window.
struct Window {
    seconds: f64,
    delivered: u64,
    takers: u64,
    server_ticks: Option<u64>,
    own_ticks: Option<u64>,
}

fn received(shared: &Shared) -> u64 {
    shared.received.iter().map(|r| r.load(Ordering::Relaxed)).sum()
}

fn measure_window(s: &Settings, shared: &Shared, start: Instant) -> Window {
    let from = start + Duration::from_secs(s.warmup_s);
    let to = from + Duration::from_secs(s.duration_s);
    sleep_until(from);
    let k0 = shared.takers_done.load(Ordering::Relaxed);
    let (r0, t0, o0, i0) = (
        received(shared),
        s.server_pid.and_then(procfs::cpu_ticks),
        procfs::own_cpu_ticks(),
        Instant::now(),
    );
    sleep_until(to);
    let (r1, t1, o1) = (
        received(shared),
        s.server_pid.and_then(procfs::cpu_ticks),
        procfs::own_cpu_ticks(),
    );
    Window {
        seconds: i0.elapsed().as_secs_f64(),
        delivered: r1 - r0,
        takers: shared.takers_done.load(Ordering::Relaxed) - k0,
        server_ticks: t1.zip(t0).map(|(b, a)| b - a),
        own_ticks: o1.zip(o0).map(|(b, a)| b - a),
    }
}

fn sleep_until(t: Instant) {
    if let Some(wait) = t.checked_duration_since(Instant::now()) {
        thread::sleep(wait);
    }
}

/// Waits until no frame arrived for `DRAIN_QUIET_MS` (or `drain_s`
/// passed); returns the seconds it took.
fn drain(s: &Settings, shared: &Shared) -> f64 {
    let began = Instant::now();
    let mut last = received(shared);
    while began.elapsed() < Duration::from_secs(s.drain_s) {
        thread::sleep(Duration::from_millis(DRAIN_QUIET_MS));
        let now = received(shared);
        if now == last {
            break;
        }
        last = now;
    }
    began.elapsed().as_secs_f64()
}

fn summarize(s: &Settings, shared: &Shared, w: &Window, p: &Produced, seen: &[Seen], drained: f64) -> String {
    let hz = procfs::ticks_per_s() as f64;
    let rate = w.delivered as f64 / w.seconds;
    let server_cpu_s = w.server_ticks.map(|t| t as f64 / hz);
    let own_cpu_s = w.own_ticks.map(|t| t as f64 / hz);
    let per_cpu = server_cpu_s.map_or("n/a".to_string(), |c| format!("{:.0}", w.delivered as f64 / c));
    let cores = |c: Option<f64>| c.map_or("n/a".to_string(), |c| format!("{:.2}", c / w.seconds));
    let mut text = format!(
        "producers: {} connections, intended {} trades/s for {} s after {} s warm-up; takers sent {} (not sent, \
         the server being {} s behind: {}), filled {}, trades {}\n",
        s.producers,
        s.rate_per_s,
        s.duration_s,
        s.warmup_s,
        p.sent,
        PRODUCE_OVERRUN_MS_MAX / 1000,
        p.abandoned,
        p.filled,
        p.trades
    );
    if let Some(problem) = &p.first_problem {
        text.push_str(&format!("first producer problem: {problem}\n"));
    }
    text.push_str(&format!(
        "in the window: {} takers answered = {:.0} trades/s\n",
        w.takers,
        w.takers as f64 / w.seconds
    ));
    text.push_str(&format!(
        "delivered: {} trade messages in {:.2} s = {rate:.0}/s; server CPU {} cores, {per_cpu} messages per \
         server CPU-second; client CPU {} cores ({} receiver threads{}); drain {drained:.1} s\n",
        w.delivered,
        w.seconds,
        cores(server_cpu_s),
        cores(own_cpu_s),
        s.threads,
        if s.spin { ", spinning" } else { "" }
    ));
    let check = completeness(shared, seen);
    text.push_str(&check.text);
    let mut lat = Histogram::<u64>::new_with_bounds(1, LATENCY_NS_MAX, 3).expect("histogram bounds are valid");
    let mut unmatched = 0;
    for part in seen {
        let _ = lat.add(&part.latency_ns);
        unmatched += part.unmatched;
    }
    let us = |ns: u64| ns as f64 / 1000.0;
    let q = |p: f64| us(lat.value_at_quantile(p));
    text.push_str(&format!(
        "taker send -> subscriber receipt, µs (upper bound, includes the REST order path): p50 {:.0} p90 {:.0} \
         p99 {:.0} p99.9 {:.0} max {:.0} (n {}, unmatched {unmatched})\n",
        q(0.5),
        q(0.9),
        q(0.99),
        q(0.999),
        us(lat.max()),
        lat.len()
    ));
    let r = &p.rest_us;
    text.push_str(&format!(
        "REST taker order round trip alone, µs: p50 {} p90 {} p99 {} p99.9 {} max {} (n {})\n",
        r.value_at_quantile(0.5),
        r.value_at_quantile(0.9),
        r.value_at_quantile(0.99),
        r.value_at_quantile(0.999),
        r.max(),
        r.len()
    ));
    text.push_str(&format!(
        "RESULT subs={} rate={} delivered_per_s={rate:.0} per_server_cpu_s={per_cpu} server_cores={} \
         client_cores={} complete={} gaps={} closed={} lat_p50_us={:.0} lat_p99_us={:.0} rest_p50_us={} \
         rest_p99_us={}\n",
        s.subscribers,
        s.rate_per_s,
        cores(server_cpu_s),
        cores(own_cpu_s),
        check.complete,
        check.with_gaps,
        check.closed,
        q(0.5),
        q(0.99),
        r.value_at_quantile(0.5),
        r.value_at_quantile(0.99)
    ));
    text
}

struct Check {
    text: String,
    complete: u64,
    with_gaps: u64,
    closed: u64,
}

/// Every subscriber against the trade ids the producers were told.
fn completeness(shared: &Shared, seen: &[Seen]) -> Check {
    let (min, max) = (
        shared.trade_id_min.load(Ordering::Relaxed),
        shared.trade_id_max.load(Ordering::Relaxed),
    );
    if min > max {
        return Check {
            text: "completeness: no trades were made\n".to_string(),
            complete: 0,
            with_gaps: 0,
            closed: 0,
        };
    }
    let expected = max - min + 1;
    let (mut complete, mut with_gaps, mut closed, mut short, mut missing, mut disorder) = (0, 0, 0, 0, 0, 0);
    let mut first_gone = None;
    for sub in seen.iter().flat_map(|s| &s.subs) {
        let whole = sub.first == Some(min) && sub.last == max && sub.count == expected && sub.missing == 0;
        complete += u64::from(whole && sub.gone.is_none() && sub.disorder == 0);
        with_gaps += u64::from(sub.missing > 0 || sub.disorder > 0);
        short += u64::from(!whole);
        missing += sub.missing;
        disorder += sub.disorder;
        if let Some(g) = &sub.gone {
            closed += 1;
            first_gone.get_or_insert_with(|| describe(g));
        }
    }
    let text = format!(
        "completeness: trade ids {min}..={max} ({expected}); subscribers with every id in order {complete}, \
         short of some {short}, with gaps {with_gaps} ({missing} ids missing in between, {disorder} out of \
         order), closed {closed}{}\n",
        first_gone.map(|g| format!(" (first: {g})")).unwrap_or_default()
    );
    Check {
        text,
        complete,
        with_gaps,
        closed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRADE: &[u8] = br#"{"e":"trade","E":1,"s":"BTCUSDT","t":12345,"p":"50000.00000000","q":"0.00123000","T":1,"m":false,"M":true}"#;

    #[test]
    fn trade_fields_parse_exactly() {
        assert_eq!(field_uint(TRADE, b"\"t\":"), Some(12345));
        assert_eq!(field_units(TRADE, b"\"q\":\""), Some(123_000));
        assert_eq!(field_units(TRADE, b"\"p\":\""), Some(5_000_000_000_000));
        assert_eq!(field_uint(TRADE, b"\"x\":"), None);
    }

    #[test]
    fn taker_quantities_print_with_eight_places() {
        assert_eq!(decimal(TAKER_QTY_UNITS), "0.00100000");
        assert_eq!(decimal(MAKER_QTY_UNITS), "150.00000000");
    }
}
