//! Constant-rate order load with latency measured from the intended send
//! time.
//!
//! Each connection is one thread with one keep-alive socket. Connection `c`
//! of `C` sends its `i`-th request at `start + (c + i·C) / rate`: together
//! the connections send at `rate` requests per second, evenly spaced. A
//! request's latency is taken from that intended time, not from when it was
//! actually written, so a server that stalls is charged for every request
//! that should have gone out meanwhile (the "coordinated omission"
//! correction). Each connection sends the SELL of a pair and then, after
//! its response, the BUY, so pairs arrive in order. Every request is signed
//! just before it is sent, with the current time.
//!
//! The run is bounded: no pair is started after the duration, and a
//! connection that is still behind `RUN_OVERRUN_MS_MAX` after the end stops.
//!
//! `Rate::Max` drops the schedule: each connection sends its next request
//! as soon as it has the answer to the last, so the run measures the most
//! the server answers with this many requests in flight. Latency is then
//! the round trip itself, and the warm-up and the end are wall-clock times.
//!
//! `Api::Ws` sends the same pairs as `order.place` over the WebSocket API
//! instead, one connection per user, each request HMAC-signed or, with
//! `logon`, on sessions logged on once (see `wsapi`); both report through
//! [`Tally`] and [`summarize`], so their figures mean the same thing.

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::http::Client;
use crate::orders::{now_ms, order_body, Plan};
use crate::procfs;
use crate::users::User;
use crate::wsapi;

/// Connections (threads) a run may open.
pub const CONNECTIONS_MAX: usize = 1024;
/// Requests per second a run may ask for.
pub const RATE_PER_S_MAX: u64 = 1_000_000;
/// Measured seconds a run may last (pre-signed requests do not limit the
/// run: every request is signed when sent).
pub const DURATION_S_MAX: u64 = 600;
/// Time after the scheduled end a lagging connection still gets to finish.
const RUN_OVERRUN_MS_MAX: u64 = 10_000;
/// The largest latency the histogram records, µs; larger values are clamped.
const LATENCY_US_MAX: u64 = 60_000_000;
/// Time the threads get to connect before the common start.
const START_DELAY_MS: u64 = 200;

/// Which API the orders go to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    /// `POST /api/v3/order`, one request in flight per connection.
    Rest,
    /// `order.place` on `/ws-api/v3`, one connection per user, pipelined.
    Ws,
    /// `POST /api/v3/order` from one epoll thread over many connections,
    /// open loop (see `openloop`).
    RestOpen,
}

/// How fast orders are sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rate {
    /// Orders per second, evenly spaced, latency from the intended time.
    PerS(u64),
    /// As fast as answers free room for the next request.
    Max,
}

impl Rate {
    /// The offset of order `n` of the whole run from its start, or `None`
    /// when there is no schedule.
    pub fn offset(self, n: u64) -> Option<Duration> {
        match self {
            Rate::PerS(rate) => Some(Duration::from_nanos((n as u128 * 1_000_000_000 / rate as u128) as u64)),
            Rate::Max => None,
        }
    }

    fn describe(self) -> String {
        match self {
            Rate::PerS(rate) => format!("intended {rate} orders/s"),
            Rate::Max => "as fast as answered (no schedule)".to_string(),
        }
    }
}

pub struct Settings {
    pub api: Api,
    pub target: String,
    pub rate: Rate,
    pub duration_s: u64,
    pub warmup_s: u64,
    /// REST: connections (threads). WebSocket API: unused, one per user.
    pub connections: usize,
    pub recv_window_ms: u64,
    /// WebSocket API: threads the connections are shared among.
    pub threads: usize,
    /// WebSocket API: requests in flight on one connection at most.
    pub window: usize,
    /// WebSocket API: whether answers carry `rateLimits` (the URL's
    /// `returnRateLimits`).
    pub return_rate_limits: bool,
    /// WebSocket API: whether each connection logs on with `session.logon`
    /// (the users' Ed25519 keys) and sends its orders without `apiKey` and
    /// `signature`, instead of signing each with HMAC.
    pub logon: bool,
}

impl Settings {
    /// Time after the scheduled end a lagging sender still gets to finish.
    pub fn overrun(&self) -> Duration {
        Duration::from_millis(RUN_OVERRUN_MS_MAX)
    }
}

/// What one connection (or WebSocket API thread) saw in the measured
/// window.
pub struct Tally {
    /// Every answer's latency.
    pub latency_us: Histogram<u64>,
    /// The latency of the orders taken (200) only.
    pub ok_latency_us: Histogram<u64>,
    pub ok: u64,
    pub rejected: u64,
    /// Rejections with -1008: the server shed the request.
    pub shed: u64,
    pub failed: u64,
    pub filled: u64,
    pub first_problem: Option<String>,
    pub last_done: Option<Instant>,
    /// REST: connections that stopped behind schedule. WebSocket API:
    /// requests left unanswered (or unsent while due) at the hard end.
    pub abandoned: u64,
}

pub struct Summary {
    pub text: String,
    /// Senders that could not open (or log on) their connections.
    pub connect_errors: usize,
}

pub fn run(settings: &Settings, users: &[User]) -> Summary {
    let ticks_before = procfs::own_cpu_ticks();
    let (total, start, connect_errors) = match settings.api {
        Api::Rest => run_rest(settings, users),
        Api::Ws => wsapi::run(settings, users),
        Api::RestOpen => crate::openloop::run(settings, users),
    };
    // The generator shares the cores with the server; what it used is part
    // of reading any figure of a two-core run.
    let own_cpu_s = ticks_before
        .zip(procfs::own_cpu_ticks())
        .map(|(a, b)| b.saturating_sub(a) as f64 / procfs::ticks_per_s() as f64);
    summarize(settings, users.len(), &total, start, &connect_errors, own_cpu_s)
}

fn run_rest(settings: &Settings, users: &[User]) -> (Tally, Instant, Vec<String>) {
    let users: Arc<Vec<User>> = Arc::new(users.to_vec());
    let conns = settings.connections;
    let barrier = Arc::new(Barrier::new(conns + 1));
    let start_cell = Arc::new(std::sync::OnceLock::<Instant>::new());
    let mut handles = Vec::with_capacity(conns);
    for c in 0..conns {
        let (users, barrier, start_cell) = (Arc::clone(&users), Arc::clone(&barrier), Arc::clone(&start_cell));
        let target = settings.target.clone();
        let (rate, duration_s, warmup_s, conns_u64, rw) = (
            settings.rate,
            settings.duration_s,
            settings.warmup_s,
            conns as u64,
            settings.recv_window_ms,
        );
        handles.push(thread::spawn(move || {
            let client = Client::connect(&target);
            barrier.wait();
            let start = *start_cell.get().expect("start time is set before the barrier opens");
            let mut client = match client {
                Ok(client) => client,
                Err(e) => return Err(format!("connect {target}: {e}")),
            };
            let plan = Plan::new(&users);
            Ok(connection(
                &mut client,
                &target,
                &plan,
                c as u64,
                conns_u64,
                rate,
                start,
                warmup_s,
                duration_s,
                rw,
            ))
        }));
    }
    let start = Instant::now() + Duration::from_millis(START_DELAY_MS);
    start_cell.set(start).expect("start time is set once");
    barrier.wait();
    let mut total = Tally::new();
    let mut connect_errors = Vec::new();
    for h in handles {
        match h.join() {
            Ok(Ok(t)) => total.merge(t),
            Ok(Err(e)) => connect_errors.push(e),
            Err(_) => connect_errors.push("a connection thread panicked".to_string()),
        }
    }
    (total, start, connect_errors)
}

#[allow(clippy::too_many_arguments)]
fn connection(
    client: &mut Client,
    target: &str,
    plan: &Plan,
    c: u64,
    conns: u64,
    rate: Rate,
    start: Instant,
    warmup_s: u64,
    duration_s: u64,
    recv_window_ms: u64,
) -> Tally {
    let mut tally = Tally::new();
    let measure_from = Duration::from_secs(warmup_s);
    let end = Duration::from_secs(warmup_s + duration_s);
    let hard_end = start + end + Duration::from_millis(RUN_OVERRUN_MS_MAX);
    let mut i: u64 = 0;
    loop {
        // Intended time of request i: (c + i·conns) / rate seconds after
        // start; without a schedule, now (but not before the start).
        let offset = rate
            .offset(c + i * conns)
            .unwrap_or_else(|| Instant::now().saturating_duration_since(start));
        // Stop only between pairs, so that no SELL is left without its BUY.
        if offset >= end && i % 2 == 0 {
            break;
        }
        let intended = start + offset;
        let now = Instant::now();
        if now >= hard_end {
            tally.abandoned += 1;
            break;
        }
        if intended > now {
            thread::sleep(intended - now);
        }
        let pair = plan.pair((i / 2) * conns + c);
        let order = pair[(i % 2) as usize];
        let body = order_body(&order, now_ms(), recv_window_ms);
        let result = client.request(
            "POST",
            "/api/v3/order",
            &[("X-MBX-APIKEY", &order.user.api_key)],
            body.as_bytes(),
            FORM,
        );
        let done = Instant::now();
        let measured = offset >= measure_from;
        match result {
            Ok(resp) if measured => {
                if resp.status != 200 {
                    tally.first_problem.get_or_insert_with(|| {
                        format!("status {}: {}", resp.status, String::from_utf8_lossy(&resp.body))
                    });
                }
                tally.answer(intended, done, resp.status == 200, &resp.body);
            }
            Ok(_) => {}
            Err(e) => {
                if measured {
                    tally.failed += 1;
                }
                tally
                    .first_problem
                    .get_or_insert_with(|| format!("request failed: {e}"));
                // The connection is in an unknown state; start a new one.
                match Client::connect(target) {
                    Ok(fresh) => *client = fresh,
                    Err(_) => thread::sleep(Duration::from_millis(100)),
                }
            }
        }
        i += 1;
    }
    tally
}

const FORM: &str = "application/x-www-form-urlencoded";

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

impl Tally {
    pub fn new() -> Tally {
        Tally {
            latency_us: Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).expect("histogram bounds are valid"),
            ok_latency_us: Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).expect("histogram bounds are valid"),
            ok: 0,
            rejected: 0,
            shed: 0,
            failed: 0,
            filled: 0,
            first_problem: None,
            last_done: None,
            abandoned: 0,
        }
    }

    pub fn merge(&mut self, other: Tally) {
        self.latency_us
            .add(&other.latency_us)
            .expect("histograms have the same bounds");
        self.ok_latency_us
            .add(&other.ok_latency_us)
            .expect("histograms have the same bounds");
        self.ok += other.ok;
        self.rejected += other.rejected;
        self.shed += other.shed;
        self.failed += other.failed;
        self.filled += other.filled;
        self.abandoned += other.abandoned;
        if self.first_problem.is_none() {
            self.first_problem = other.first_problem;
        }
        self.last_done = self.last_done.max(other.last_done);
    }

    /// Counts one answer of the measured window.
    pub fn answer(&mut self, intended: Instant, done: Instant, ok: bool, body: &[u8]) {
        let us = (done - intended).as_micros().min(u128::from(LATENCY_US_MAX)) as u64;
        self.latency_us
            .record(us.max(1))
            .expect("latency is clamped to the histogram's range");
        self.last_done = Some(done);
        if ok {
            self.ok_latency_us
                .record(us.max(1))
                .expect("latency is clamped to the histogram's range");
            self.ok += 1;
            if contains(body, b"\"status\":\"FILLED\"") {
                self.filled += 1;
            }
        } else {
            self.rejected += 1;
            if contains(body, b"\"code\":-1008") {
                self.shed += 1;
            }
            self.first_problem
                .get_or_insert_with(|| String::from_utf8_lossy(body).into_owned());
        }
    }
}

fn summarize(
    settings: &Settings,
    users: usize,
    t: &Tally,
    start: Instant,
    connect_errors: &[String],
    own_cpu_s: Option<f64>,
) -> Summary {
    let measured_from = start + Duration::from_secs(settings.warmup_s);
    let answered = t.ok + t.rejected;
    // Achieved rate: answers in the measured window over the time from the
    // window's start to the last answer (at least the scheduled duration).
    let elapsed = t
        .last_done
        .map(|d| d.saturating_duration_since(measured_from).as_secs_f64())
        .unwrap_or(0.0)
        .max(settings.duration_s as f64);
    let achieved = answered as f64 / elapsed;
    let h = &t.latency_us;
    let q = |p: f64| h.value_at_quantile(p);
    let mut text = String::new();
    let (what, abandoned, api) = match settings.api {
        Api::Rest => (
            format!(
                "POST /api/v3/order crossing pairs to {}, {} connections",
                settings.target, settings.connections
            ),
            "abandoned connections",
            "rest",
        ),
        Api::RestOpen => (
            format!(
                "POST /api/v3/order crossing pairs to {}, {} connections from one epoll thread (open loop)",
                settings.target, settings.connections
            ),
            "orders unanswered or unsent at the end",
            "rest-open",
        ),
        Api::Ws => (
            format!(
                "order.place crossing pairs over {}{}, {users} connections (one per user) on {} threads, \
                 at most {} requests in flight per connection, rateLimits {}, {}",
                settings.target,
                wsapi::path(settings.return_rate_limits),
                settings.threads,
                settings.window,
                if settings.return_rate_limits { "on" } else { "off" },
                if settings.logon {
                    "sessions logged on with session.logon (Ed25519), requests without apiKey and signature"
                } else {
                    "each request HMAC-signed"
                }
            ),
            "abandoned requests",
            if settings.logon { "ws-logon" } else { "ws" },
        ),
    };
    text.push_str(&format!(
        "loadgen run: {what}, {} for {} s after {} s warm-up\n",
        settings.rate.describe(),
        settings.duration_s,
        settings.warmup_s
    ));
    text.push_str(&format!(
        "answers: {answered} (200: {}, other status: {}), failed requests: {}, {abandoned}: {}\n",
        t.ok, t.rejected, t.failed, t.abandoned
    ));
    text.push_str(&format!(
        "filled on arrival: {} of {} (a pair trades when its second order fills: ideally half)\n",
        t.filled, t.ok
    ));
    text.push_str(&format!("achieved: {achieved:.0} orders/s over {elapsed:.2} s\n"));
    let from = match settings.rate {
        Rate::PerS(_) => "intended send time",
        Rate::Max => "send time (no schedule: the round trip)",
    };
    text.push_str(&format!(
        "latency from {from}, µs: p50 {} p90 {} p99 {} p99.9 {} max {} (n {})\n",
        q(0.5),
        q(0.9),
        q(0.99),
        q(0.999),
        h.max(),
        h.len()
    ));
    if let Some(cpu_s) = own_cpu_s {
        text.push_str(&format!(
            "load generator CPU: {cpu_s:.2} s over the whole run (warm-up and connecting included)\n"
        ));
    }
    if let Some(p) = &t.first_problem {
        text.push_str(&format!("first problem: {p}\n"));
    }
    for e in connect_errors {
        text.push_str(&format!("connection error: {e}\n"));
    }
    let ok_q = |p: f64| t.ok_latency_us.value_at_quantile(p);
    text.push_str(&format!(
        "orders taken (200), latency µs: p50 {} p99 {} max {}; refused with -1008 (shed): {}\n",
        ok_q(0.5),
        ok_q(0.99),
        t.ok_latency_us.max(),
        t.shed
    ));
    text.push_str(&format!(
        "RESULT rate={} achieved={achieved:.0} ok={} rejected={} failed={} filled={} p50_us={} p90_us={} \
         p99_us={} p999_us={} max_us={} ok_p50_us={} ok_p99_us={} shed={} api={api}\n",
        match settings.rate {
            Rate::PerS(rate) => rate.to_string(),
            Rate::Max => "max".to_string(),
        },
        t.ok,
        t.rejected,
        t.failed + connect_errors.len() as u64,
        t.filled,
        q(0.5),
        q(0.9),
        q(0.99),
        q(0.999),
        h.max(),
        ok_q(0.5),
        ok_q(0.99),
        t.shed
    ));
    Summary {
        text,
        connect_errors: connect_errors.len(),
    }
}
