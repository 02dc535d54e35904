//! The crash harness: trading under load, `kill -9`, restart on the same
//! data directory, and a check of the recovered state against everything
//! the clients were told.
//!
//! One cycle: a server (2 shards, `--durability fsync`, free loopback
//! ports) on a fresh data directory or on the previous cycle's (a chain of
//! 1 to 4 cycles, so recovered state is recovered again); four new users
//! with keys and deposits; four client threads sending orders (one limit
//! order in four of more than one lot an iceberg showing one lot, whose
//! `icebergQty` the checks compare), order lists (one order request in
//! eight an OCO straddling the last price or an OTO near the market, some
//! canceled by `DELETE /api/v3/orderList`, so that kills land between a
//! list's orders; the checks require every list whole: found with its
//! orders, its status agreeing with theirs, an OCO never left with one
//! order open after the other traded or ended, an OTO's pending order
//! PENDING_NEW exactly while its working order is open, and each market's
//! depth what the open orders make), cancels, deposits and withdrawals
//! (`traffic`); after a random 100–800 ms a
//! SIGKILL by PID; a restart, `/ready`, and the checks of `check` against
//! the acknowledged history in `model`. One cycle in four stops the clients
//! first and checks the live server before the kill, and then also that
//! the recovered state is identical to the live one.
//!
//! Every chain runs under one condition, and `--cycles N` runs N cycles
//! of each:
//! - *calm*: as above;
//! - *disk full*: the data directory is on a small tmpfs of its own
//!   (`disk`), filled to the last byte by a ballast file as the clients
//!   start, while a filler thread makes deposits until the journal finds
//!   no room for its next segment and refuses with 503 -1008; the kill
//!   comes during that episode, and the ballast is removed before the
//!   restart;
//! - *overload*: load shedding is on and a flood of pipelined
//!   market-data reads (`flood`) keeps the server shedding (503 -1008)
//!   from before the clients start until the kill.
//!
//! A 503 -1008 is a refusal before anything ran (`model::SERVER_BUSY`):
//! what it refused must have left no trace.
//!
//! ```text
//! cargo test --release --test crash -- [--cycles N] [--seed S] [--only cycles|corruption]
//!                                      [--live-only | --simulate-crash] [--no-durability-flag]
//! ```
//!
//! `TRADSYS_SEED` sets the base seed when `--seed` is absent. Two modes
//! serve a server without recovery, and both skip the corruption test:
//! `--live-only` checks each cycle on the live server before the kill and
//! only requires the restart to come up; `--simulate-crash` replaces the
//! kill by the clients abandoning their requests in flight (their sockets
//! shut down) and keeps the server as the "recovered" one, which exercises
//! the harness's handling of unanswered requests and of chains.
//! Both run calm cycles only. `--no-durability-flag` leaves `--durability` off the server's command
//! line. `--only checker|cycles|corruption` runs one part. On failure the
//! harness prints the seed, the cycle, the kept data directory (with the
//! server's stdout and stderr of every start) and the first mismatch, and
//! exits 1.

#[path = "crash/check.rs"]
mod check;
#[path = "crash/corruption.rs"]
mod corruption;
#[path = "crash/disk.rs"]
mod disk;
#[path = "crash/flood.rs"]
mod flood;
#[path = "crash/http.rs"]
mod http;
#[path = "crash/model.rs"]
mod model;
#[path = "crash/selftest.rs"]
mod selftest;
#[path = "crash/server.rs"]
mod server;
#[path = "crash/snapshot.rs"]
mod snapshot;
// The disk-full cycles' tmpfs; its `resize` is for tests/durability.rs.
#[allow(dead_code)]
#[path = "common/tmpfs.rs"]
mod tmpfs;
#[path = "crash/traffic.rs"]
mod traffic;

use disk::Disk;
use flood::Flood;
use http::{admin_ok, Conn, Key};
use model::{CancelState, ListPlaced, Model, Placed, ORDERS_PER_USER_MAX};
use serde_json::json;
use server::{Options, Server, OVERLOAD_FLAG};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use traffic::{Plan, Rng, Shared};

/// The parts of the harness, in the order they run.
const PARTS: [&str; 3] = ["checker", "cycles", "corruption"];
/// Cycles of each condition when `--cycles` is absent.
const CYCLES_DEFAULT: u32 = 20;
/// The load-shedding limit of the overload cycles' servers, in ms: the
/// flood's market-data reads are shed from 3/4 of it (`overload`).
const OVERLOAD_WAIT_MS: &str = "1";
/// An overload cycle's kill must come within this many milliseconds of a
/// refusal the flood saw.
const SHED_BEFORE_KILL_MS: u64 = 2_000;
/// The longest a disk-full cycle waits for the journal's refusal.
const DISK_FULL_TIMEOUT_MS: u64 = 60_000;

/// What a chain's kills come during (see the module documentation); its
/// value is its place in `CONDITIONS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Condition {
    Calm,
    DiskFull,
    Overload,
}

const CONDITIONS: [Condition; 3] = [Condition::Calm, Condition::DiskFull, Condition::Overload];

impl Condition {
    fn name(self) -> &'static str {
        match self {
            Condition::Calm => "calm",
            Condition::DiskFull => "disk full",
            Condition::Overload => "overload",
        }
    }

    /// The server's arguments beyond the harness's own.
    fn server_args(self) -> &'static [&'static str] {
        match self {
            Condition::Calm => &[],
            Condition::DiskFull => &["--journal-segment-bytes", disk::SEGMENT_BYTES],
            Condition::Overload => &[OVERLOAD_FLAG, OVERLOAD_WAIT_MS],
        }
    }
}
/// Client threads per cycle.
const CLIENTS: usize = 4;
/// New users per cycle.
const USERS_PER_CYCLE: usize = 4;
/// Operations one client may send in a cycle; pacing spreads
/// `OPS_PACED` of them over a little more than the time to the kill.
const OPS_PER_CLIENT_MAX: usize = 90;
const OPS_PACED: u64 = 60;
/// The kill comes this many milliseconds after the clients start, plus a
/// random part below `KILL_SPREAD_MS`.
const KILL_AFTER_MS_MIN: u64 = 100;
const KILL_SPREAD_MS: u64 = 701;
/// The clients stop pacing themselves at the kill time and the kill comes
/// up to this many microseconds later.
const SPRINT_US_MAX: u64 = 3_000;
/// The longest the server may take to close abandoned connections.
const CLOSE_TIMEOUT_MS: u64 = 10_000;
/// Longest chain of cycles on one data directory.
const CHAIN_CYCLES_MAX: u64 = 4;
/// What each new user is given, in units.
const DEPOSITS: [(&str, i64); 3] = [
    ("USDT", 200_000 * 100_000_000),
    ("BTC", 20 * 100_000_000),
    ("ETH", 300 * 100_000_000),
];

/// The command line.
pub struct Args {
    pub cycles: u32,
    pub seed: u64,
    pub live_only: bool,
    pub simulate: bool,
    pub options: Options,
    pub only: Option<String>,
    pub filter: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        cycles: CYCLES_DEFAULT,
        seed: std::env::var("TRADSYS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(seed_from_clock),
        live_only: false,
        simulate: false,
        options: Options { durability_flag: true },
        only: None,
        filter: None,
    };
    let mut words = std::env::args().skip(1);
    while let Some(word) = words.next() {
        let mut value = |name: &str| words.next().ok_or(format!("{name} needs a value"));
        match word.as_str() {
            "--cycles" => args.cycles = value("--cycles")?.parse().map_err(|e| format!("--cycles: {e}"))?,
            "--seed" => args.seed = value("--seed")?.parse().map_err(|e| format!("--seed: {e}"))?,
            "--only" => {
                let part = value("--only")?;
                if !PARTS.contains(&part.as_str()) {
                    return Err(format!("--only: one of {PARTS:?}, not {part:?}"));
                }
                args.only = Some(part);
            }
            "--live-only" => args.live_only = true,
            "--simulate-crash" => args.simulate = true,
            "--no-durability-flag" => args.options.durability_flag = false,
            // libtest's options, passed to every test target by `cargo test -- ...`.
            "--test-threads" | "--color" | "--format" | "--skip" => {
                value(&word)?;
            }
            "--nocapture" | "--show-output" | "--quiet" | "-q" | "--exact" | "--include-ignored" => {}
            "--ignored" => args.only = Some("none".into()),
            "--list" => {
                PARTS.iter().for_each(|p| println!("{p}: test"));
                args.only = Some("none".into());
            }
            w if w.starts_with('-') => return Err(format!("unknown option {w}")),
            filter => args.filter = Some(filter.to_string()),
        }
    }
    Ok(args)
}

fn seed_from_clock() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
}

impl Args {
    /// Whether the part named `name` runs (`--only`, or a libtest-style
    /// name filter).
    fn runs(&self, name: &str) -> bool {
        self.only.as_deref().is_none_or(|o| o == name) && self.filter.as_deref().is_none_or(|f| name.contains(f))
    }
}

/// A failed run: where, and what differed.
pub struct Failure {
    pub cycle: Option<(u32, u64)>,
    pub data_dir: PathBuf,
    pub message: String,
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("crash: {e}");
            return ExitCode::from(2);
        }
    };
    let root = std::env::temp_dir().join(format!("tradsys-crash-{}", std::process::id()));
    let rerun = format!(
        "cargo test --release --test crash -- --seed {} --cycles {}{}{}{}",
        args.seed,
        args.cycles,
        if args.live_only { " --live-only" } else { "" },
        if args.simulate { " --simulate-crash" } else { "" },
        if args.options.durability_flag {
            ""
        } else {
            " --no-durability-flag"
        },
    );
    println!("crash: base seed {} (rerun: {rerun})", args.seed);
    let mut failures = Vec::new();
    if !PARTS.iter().any(|p| args.runs(p)) {
        println!("crash: no part selected, nothing run");
    }
    if args.runs("checker") {
        match selftest::run(&args, &root.join("checker")) {
            Ok(()) => println!("crash: checker ok: every damage was reported by its check"),
            Err(f) => failures.push(f),
        }
    }
    if args.runs("cycles") {
        match run_cycles(&args, &root) {
            Ok(stats) => println!("crash: cycles ok: {stats}"),
            Err(f) => failures.push(f),
        }
    }
    if args.runs("corruption") {
        if args.live_only || args.simulate {
            println!("crash: corruption SKIPPED: --live-only or --simulate-crash (no journal to corrupt)");
        } else {
            match corruption::run(&args, &root.join("corruption")) {
                Ok(()) => println!("crash: corruption ok"),
                Err(f) => failures.push(f),
            }
        }
    }
    for f in &failures {
        eprintln!("crash: FAILED, base seed {}", args.seed);
        if let Some((cycle, seed)) = f.cycle {
            eprintln!("crash: cycle {cycle} (cycle seed {seed})");
        }
        eprintln!("crash: data dir kept: {}", f.data_dir.display());
        eprintln!("crash: {}", f.message);
        eprintln!("crash: rerun: {rerun}");
    }
    if failures.is_empty() {
        let _ = std::fs::remove_dir_all(&root);
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Figures for the summary line.
#[derive(Default)]
struct Stats {
    cycles: u32,
    /// Cycles per condition, in `CONDITIONS` order.
    by_condition: [u32; 3],
    /// 503 -1008 refusals: the journal's (disk full) and the flood's.
    journal_full: usize,
    shed: u64,
    /// The longest time from the flood's last refusal to an overload
    /// cycle's kill.
    shed_gap_max: Duration,
    chains: u32,
    kills_at_rest: u32,
    in_flight: usize,
    orders: usize,
    fills: usize,
    /// Order lists sent, and acknowledged as placed.
    lists: usize,
    lists_placed: usize,
    /// Lists the recovered servers showed, each checked against its
    /// orders (summed over the checks, like the fill sides).
    lists_verified: usize,
    /// List placements in flight at a kill, and those of them the
    /// restarted server showed placed (whole: `check::check_lists`).
    lists_in_flight: usize,
    lists_in_flight_found: usize,
}

impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let [calm, disk_full, overload] = self.by_condition;
        write!(
            f,
            "{} cycles ({calm} calm, {disk_full} killed with the disk full, {overload} killed while \
             shedding load) on {} data dirs ({} killed at rest), {} requests in flight at a kill ({} of \
             them list placements, {} found placed after the restart), {} journal-full and {} overload refusals (the last at most {} ms before a kill), {} orders, \
             {} order lists ({} placed) and {} fill sides verified, {} lists checked against their orders",
            self.cycles,
            self.chains,
            self.kills_at_rest,
            self.in_flight,
            self.lists_in_flight,
            self.lists_in_flight_found,
            self.journal_full,
            self.shed,
            self.shed_gap_max.as_millis(),
            self.orders,
            self.lists,
            self.lists_placed,
            self.fills,
            self.lists_verified
        )
    }
}

/// Cycles on one data directory.
struct Chain {
    number: u32,
    condition: Condition,
    /// The chain's own directory: the server's logs, and the data
    /// directory unless that is on `disk`.
    root: PathBuf,
    dir: PathBuf,
    model: Model,
    server: Option<Server>,
    starts: u32,
    cycles_left: u32,
    /// Declared after `server`, which must be gone before the unmount.
    disk: Option<Disk>,
}

impl Chain {
    fn start(&self, start_no: u32, args: &Args) -> Result<Server, server::StartError> {
        Server::start_on(
            &self.dir,
            &self.root,
            start_no,
            args.options,
            self.condition.server_args(),
        )
    }

    /// A failed chain keeps its data directory where the failure says.
    fn keep(&self) {
        if let Some(disk) = &self.disk {
            disk.keep(&self.root.join("kept"));
        }
    }
}

fn run_cycles(args: &Args, root: &Path) -> Result<Stats, Failure> {
    let mut stats = Stats::default();
    let mut chain: Option<Chain> = None;
    // The harness's own modes check the harness: calm cycles only.
    let mut left = match args.live_only || args.simulate {
        true => [args.cycles, 0, 0],
        false => [args.cycles; 3],
    };
    let mut cycle = 0;
    while left.iter().any(|&n| n > 0) {
        let seed = Rng(args.seed ^ u64::from(cycle).wrapping_mul(0xd1b5_4a32_d192_ed03)).next();
        let mut rng = Rng(seed);
        if chain.as_ref().is_none_or(|c| c.cycles_left == 0) {
            if let Some(done) = chain.take() {
                end_chain(done);
            }
            // The condition with the most cycles to go, so that they mix.
            let pick = (0..CONDITIONS.len()).rev().max_by_key(|&i| left[i]).unwrap_or(0);
            let length = match args.live_only {
                true => 1,
                false => (1 + rng.below(CHAIN_CYCLES_MAX)) as u32,
            };
            let number = stats.chains;
            let root = root.join(format!("chain-{number}"));
            let fail = |message: String| Failure {
                cycle: Some((cycle, seed)),
                data_dir: root.clone(),
                message,
            };
            let condition = CONDITIONS[pick];
            let disk = match condition {
                Condition::DiskFull => Some(Disk::mount(&root.join("disk")).map_err(fail)?),
                _ => None,
            };
            let dir = disk.as_ref().map_or(root.clone(), |d| d.path().join("data"));
            let mut c = Chain {
                number,
                condition,
                root: root.clone(),
                dir,
                model: Model::default(),
                server: None,
                starts: 1,
                cycles_left: length.min(left[pick]),
                disk,
            };
            c.server = Some(c.start(0, args).map_err(|e| fail(format!("start: {e}")))?);
            stats.chains += 1;
            chain = Some(c);
        }
        let Some(c) = chain.as_mut() else {
            unreachable!("a chain was just made")
        };
        if let Err(message) = run_cycle(args, c, cycle, &mut rng, &mut stats) {
            c.keep();
            return Err(Failure {
                cycle: Some((cycle, seed)),
                data_dir: c.root.clone(),
                message,
            });
        }
        let at = c.condition as usize;
        left[at] -= 1;
        c.cycles_left -= 1;
        stats.cycles += 1;
        stats.by_condition[at] += 1;
        cycle += 1;
    }
    if let Some(done) = chain {
        end_chain(done);
    }
    Ok(stats)
}

fn end_chain(mut chain: Chain) {
    if let Some(server) = chain.server.take() {
        server.kill9();
    }
    drop(chain.disk.take());
    let _ = std::fs::remove_dir_all(&chain.root);
}

/// One cycle: users, traffic, kill, restart, checks. The chain's server
/// is running on entry and (unless `--live-only`) on a successful return.
fn run_cycle(args: &Args, c: &mut Chain, cycle: u32, rng: &mut Rng, stats: &mut Stats) -> Result<(), String> {
    let server = c.server.take().ok_or("no server")?;
    create_users(&mut c.model, server.admin, &format!("k{}c{cycle}", c.number))?;
    // An overload cycle's live check would be shed: its kills are all in
    // flight.
    let at_rest = args.live_only || (c.condition != Condition::Overload && rng.below(4) == 0);
    let spec = CycleSpec {
        number: cycle,
        kill_after: Duration::from_millis(KILL_AFTER_MS_MIN + rng.below(KILL_SPREAD_MS)),
        at_rest,
    };
    let orders_before = c.model.orders.len();
    let lists_before = c.model.lists.len();
    let (before, in_flight, running) = traffic_then_kill(args, c, server, &spec, rng, stats)?;
    let orders = c.model.orders.len() - orders_before;
    let lists = &c.model.lists[lists_before..];
    let placed = lists
        .iter()
        .filter(|l| matches!(l.placed, ListPlaced::Known(_)))
        .count();
    let unanswered: Vec<usize> = (lists_before..c.model.lists.len())
        .filter(|&i| matches!(c.model.lists[i].placed, ListPlaced::Unknown))
        .collect();
    let lists = lists.len();
    stats.in_flight += in_flight;
    stats.kills_at_rest += u32::from(at_rest);
    stats.orders += orders;
    stats.lists += lists;
    stats.lists_placed += placed;
    let server = match running {
        Some(server) => server,
        None => {
            // Recovery needs room for a new generation.
            if let Some(disk) = &c.disk {
                disk.free()?;
            }
            let server = c.start(c.starts, args).map_err(|e| format!("restart: {e}"))?;
            c.starts += 1;
            server
        }
    };
    let verified = match (args.live_only, before) {
        (true, before) => {
            server.kill9();
            c.cycles_left = 1;
            before.ok_or("no live check")?
        }
        (false, before) => {
            let after = verify(&mut c.model, &server).map_err(|e| format!("after restart {}: {e}", c.starts - 1))?;
            if let Some(before) = before {
                check::check_identical(&before, &after).map_err(|e| format!("recovered state differs: {e}"))?;
            }
            c.server = Some(server);
            after
        }
    };
    let fills: usize = verified.users.iter().map(|u| u.trades.len()).sum();
    stats.fills += fills;
    stats.lists_verified += verified.users.iter().map(|u| u.lists.len()).sum::<usize>();
    stats.lists_in_flight += unanswered.len();
    stats.lists_in_flight_found += unanswered
        .iter()
        .filter(|&&i| matches!(c.model.lists[i].placed, ListPlaced::Known(_)))
        .count();
    println!(
        "crash: cycle {cycle} ({}): data dir {} start {}, {} after {} ms {}, {orders} orders sent \
         ({lists} lists, {placed} placed), {in_flight} requests in flight, {fills} fill sides checked",
        c.condition.name(),
        c.number,
        c.starts - 1,
        if args.simulate { "requests abandoned" } else { "kill -9" },
        spec.kill_after.as_millis(),
        if at_rest { "at rest" } else { "in flight" },
    );
    Ok(())
}

/// When a cycle's kill comes.
struct CycleSpec {
    number: u32,
    kill_after: Duration,
    /// The clients stop and the live state is checked before the kill.
    at_rest: bool,
}

/// The state the clients of one cycle share.
fn shared_for(model: &Model) -> Shared {
    Shared {
        users: model.users.clone(),
        budgets: model
            .orders_sent
            .iter()
            .map(|sent| AtomicU32::new(ORDERS_PER_USER_MAX - sent))
            .collect(),
        stop: AtomicBool::new(false),
        sprint: AtomicBool::new(false),
        sockets: Mutex::new(Vec::new()),
        journal_full: AtomicBool::new(false),
    }
}

/// Runs the clients, then kills the server: in flight, or after stopping
/// the clients and checking the live state, which is returned with the
/// number of requests left unanswered. With `--simulate-crash` the clients
/// abandon their requests instead and the server, returned, lives on.
///
/// A disk-full cycle fills the disk as the clients start and runs the
/// journal filler beside them; its kill waits until the journal has
/// refused for want of room. An overload cycle's flood runs from before
/// the clients start until after the kill, which must come while it is
/// being shed.
fn traffic_then_kill(
    args: &Args,
    c: &mut Chain,
    server: Server,
    spec: &CycleSpec,
    rng: &mut Rng,
    stats: &mut Stats,
) -> Result<(Option<snapshot::Snapshot>, usize, Option<Server>), String> {
    let shared = shared_for(&c.model);
    let plans = plans(&c.model, &server, spec.number, c.number, rng, spec.kill_after);
    let sprint = Duration::from_micros(rng.below(SPRINT_US_MAX));
    let flood = match c.condition {
        Condition::Overload => Some(Flood::start(server.api)?),
        _ => None,
    };
    if let Some(disk) = &c.disk {
        disk.fill()?;
    }
    let logs = (server.stdout_path.clone(), server.stderr_path.clone());
    let admin_addr = server.admin;
    let (events, server, killed_at, full_at_kill) = std::thread::scope(|scope| {
        let threads: Vec<_> = plans
            .into_iter()
            .map(|plan| scope.spawn(|| traffic::run(plan, &shared)))
            .collect();
        let filler =
            (c.condition == Condition::DiskFull).then(|| scope.spawn(|| traffic::fill_journal(admin_addr, &shared)));
        std::thread::sleep(spec.kill_after);
        let full_at_kill = match (&filler, &c.disk) {
            (Some(filler), Some(disk)) => disk_full_now(&shared, filler, disk, &logs),
            _ => Ok(()),
        };
        shared.sprint.store(true, Ordering::SeqCst);
        std::thread::sleep(sprint);
        shared.stop.store(true, Ordering::SeqCst);
        let server = match (spec.at_rest, args.simulate) {
            (true, _) => Some(server),
            (false, true) => {
                shared.abandon();
                Some(server)
            }
            (false, false) => {
                server.kill9();
                None
            }
        };
        let killed_at = Instant::now();
        let mut events: Vec<_> = threads
            .into_iter()
            .map(|t| t.join().expect("a client thread"))
            .collect();
        events.extend(filler.map(|f| f.join().expect("the filler thread")));
        // The clones would keep the clients' connections open.
        shared.sockets.lock().unwrap_or_else(|e| e.into_inner()).clear();
        (events, server, killed_at, full_at_kill)
    });
    if let Some(flood) = flood {
        let last = flood.last_shed();
        stats.shed += flood.shed();
        flood.stop();
        let since = last.map(|at| killed_at.saturating_duration_since(at));
        match since {
            Some(since) if since <= Duration::from_millis(SHED_BEFORE_KILL_MS) => {
                stats.shed_gap_max = stats.shed_gap_max.max(since);
            }
            _ => {
                return Err(format!(
                    "no refusal of the flood in the {SHED_BEFORE_KILL_MS} ms before the kill (last {since:?} before)"
                ))
            }
        }
    }
    full_at_kill?;
    stats.journal_full += match c.condition {
        Condition::DiskFull => events
            .iter()
            .flatten()
            .filter(|e| traffic::outcome_of(e).never_ran())
            .count(),
        _ => 0,
    };
    let unknown_before = c.model.unknowns();
    for e in events {
        c.model.apply(e)?;
    }
    for (sent, budget) in c.model.orders_sent.iter_mut().zip(&shared.budgets) {
        *sent = ORDERS_PER_USER_MAX - budget.load(Ordering::SeqCst);
    }
    let in_flight = c.model.unknowns() - unknown_before;
    let mut before = None;
    if let (true, Some(server)) = (spec.at_rest, &server) {
        if in_flight > 0 {
            return Err(format!("{in_flight} requests unanswered by a live server"));
        }
        before = Some(verify(&mut c.model, server).map_err(|e| format!("live, before the kill: {e}"))?);
    }
    match (args.simulate, server) {
        (true, Some(server)) => {
            connections_closed(&server)?;
            Ok((before, in_flight, Some(server)))
        }
        (true, None) => Ok((before, in_flight, None)),
        (false, server) => {
            if let Some(server) = server {
                server.kill9();
            }
            Ok((before, in_flight, None))
        }
    }
}

/// Waits until the journal refuses for want of room (the filler saw its
/// 503) and some shard's journal is without it now, topping the ballast up
/// all the while: the server may find room again by itself, for example
/// when the history store gives up a file it was growing. Each shard says
/// so on every change (stderr when room runs out, stdout when it is back).
/// The kill follows within the sprint, with the disk full to the last byte.
fn disk_full_now(
    shared: &Shared,
    filler: &std::thread::ScopedJoinHandle<Vec<model::Event>>,
    disk: &Disk,
    (stdout, stderr): &(PathBuf, PathBuf),
) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_millis(DISK_FULL_TIMEOUT_MS);
    loop {
        disk.fill()?;
        if shared.journal_full.load(Ordering::SeqCst) && journal_without_room(stdout, stderr) {
            return Ok(());
        }
        if filler.is_finished() || Instant::now() > deadline {
            return Err(format!(
                "no shard's journal was without room within {DISK_FULL_TIMEOUT_MS} ms (refused: {})",
                shared.journal_full.load(Ordering::SeqCst)
            ));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn journal_without_room(stdout: &Path, stderr: &Path) -> bool {
    let (out, err) = (read_log(stdout), read_log(stderr));
    let count = |text: &str, shard: usize, what: &str| {
        let prefix = format!("shard {shard}: journal: {what}");
        text.lines().filter(|l| l.starts_with(&prefix)).count()
    };
    (0..server::SHARDS).any(|shard| count(&err, shard, "no space left") > count(&out, shard, "disk space is back"))
}

fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Waits until the server has closed every client connection but the one
/// asking: abandoned requests have then been carried out or dropped, and
/// none can land after the state is read (`--simulate-crash`).
fn connections_closed(server: &Server) -> Result<(), String> {
    let deadline = std::time::Instant::now() + Duration::from_millis(CLOSE_TIMEOUT_MS);
    loop {
        let mut conn = Conn::open(server.api).map_err(|e| e.0)?;
        let reply = conn
            .request(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n")
            .map_err(|e| e.0)?;
        let open: f64 = reply
            .text()
            .lines()
            .filter(|l| l.starts_with("tradsys_connections_open{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        if open <= 1.0 {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(format!(
                "{open} connections still open {CLOSE_TIMEOUT_MS} ms after the clients left"
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The clients' plans: seeds, pacing, and the resting orders each may cancel.
fn plans(model: &Model, server: &Server, cycle: u32, chain: u32, rng: &mut Rng, kill_after: Duration) -> Vec<Plan> {
    // Paced so that the operations would take a little longer than the
    // time to the kill: most kills find requests in flight.
    let think_max_us = kill_after.as_micros() as u64 * 12 / 5 / OPS_PACED;
    let mut plans: Vec<Plan> = (0..CLIENTS)
        .map(|t| Plan {
            api: server.api,
            admin: server.admin,
            seed: rng.next(),
            ops_max: OPS_PER_CLIENT_MAX,
            think_max_us,
            id_prefix: format!("k{chain}c{cycle}t{t}"),
            cancelable: Vec::new(),
            cancelable_lists: Vec::new(),
        })
        .collect();
    let resting = model.orders.iter().filter(|o| {
        let open = matches!(&o.placed, Placed::Known(f) if !model::is_final(&f.status));
        open && o.cancel == CancelState::None && o.kind == model::Kind::Limit && o.list.is_none()
    });
    for (i, o) in resting.enumerate() {
        plans[i % CLIENTS]
            .cancelable
            .push((o.user, o.market, o.client_id.clone()));
    }
    for (i, l) in model.open_lists().enumerate() {
        if let ListPlaced::Known(facts) = &l.placed {
            plans[i % CLIENTS]
                .cancelable_lists
                .push((l.user, l.market, l.client_id.clone(), facts.list_id));
        }
    }
    plans
}

/// Reads the state at rest, checks it against the model and absorbs it.
fn verify(model: &mut Model, server: &Server) -> Result<snapshot::Snapshot, String> {
    let snapshot = snapshot::read_at_rest(server.api, server.admin, model)?;
    let resolved = check::check_all(model, &snapshot).map_err(|m| m.to_string())?;
    model.absorb(&snapshot, &resolved);
    Ok(snapshot)
}

/// Creates users with an API key and the standard deposits.
fn create_users(model: &mut Model, admin: std::net::SocketAddr, prefix: &str) -> Result<(), String> {
    let mut conn = Conn::open(admin).map_err(|e| e.0)?;
    for i in 0..USERS_PER_CYCLE {
        let name = json!({"name": format!("{prefix}u{i}")});
        let user = admin_ok(&mut conn, "POST", "/admin/v1/users", Some(&name))?;
        let id = user["userId"].as_u64().ok_or(format!("userId in {user}"))?;
        let scopes = json!({"scopes": ["READ", "TRADE"]});
        let key = admin_ok(&mut conn, "POST", &format!("/admin/v1/users/{id}/keys"), Some(&scopes))?;
        for (asset, amount) in DEPOSITS {
            let body = json!({"asset": asset, "amount": http::decimal(amount)});
            admin_ok(
                &mut conn,
                "POST",
                &format!("/admin/v1/users/{id}/deposits"),
                Some(&body),
            )?;
        }
        let key = Key {
            user_id: id,
            key: key["apiKey"].as_str().ok_or("apiKey")?.to_string(),
            secret: key["secretKey"].as_str().ok_or("secretKey")?.to_string(),
        };
        model.add_user(key, &DEPOSITS);
    }
    Ok(())
}

/// One client's traffic without pacing or a kill, so every request is
/// answered.
fn traffic_at_rest(model: &mut Model, server: &Server, seed: u64, ops: usize) -> Result<(), String> {
    let shared = shared_for(model);
    let plan = Plan {
        api: server.api,
        admin: server.admin,
        seed,
        ops_max: ops,
        think_max_us: 1,
        id_prefix: format!("r{seed:x}"),
        cancelable: Vec::new(),
        cancelable_lists: Vec::new(),
    };
    let before = model.unknowns();
    model.apply(traffic::run(plan, &shared))?;
    if model.unknowns() > before {
        return Err("a request to a live server went unanswered".into());
    }
    for (sent, budget) in model.orders_sent.iter_mut().zip(&shared.budgets) {
        *sent = ORDERS_PER_USER_MAX - budget.load(Ordering::SeqCst);
    }
    Ok(())
}
