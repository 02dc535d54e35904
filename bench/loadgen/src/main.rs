//! tradsys-loadgen: the client side of bench/rest.sh and bench/ws.sh.
//!
//! Subcommands:
//! - `setup` creates funded users with keys through the admin API, as many
//!   on each shard, and writes the users file (see `users`): an HMAC key
//!   each, and an Ed25519 key too on request;
//! - `presign` writes signed requests, one a line, for wrk to replay
//!   (bench/rest.lua); they stay valid for recvWindow ms, so the benchmark
//!   writes a fresh set before every round;
//! - `run` sends crossing order pairs at a constant rate and reports
//!   latency from the intended send time, over REST or the WebSocket API,
//!   each request signed or on sessions logged on with `session.logon`
//!   (see `run` and `wsapi`);
//! - `book` prints what is left resting in each benchmark market, to check
//!   that every pair traded;
//! - `plan` prints the share of orders whose market lives on another shard
//!   than their user;
//! - `ws-idle` weighs idle subscribed WebSocket connections, market
//!   streams or WebSocket API sessions with a user data subscription,
//!   signed or on a logged-on session (see `wsidle`);
//! - `ws-fanout` measures delivery, completeness and latency of one trade
//!   stream with many subscribers (see `wsfanout`); both are driven by
//!   bench/ws.sh;
//! - `webhook-sink` receives webhook deliveries and times them (see `sink`,
//!   driven by bench/webhooks.sh).
//!
//! Only 127.0.0.1 targets are accepted: this is a benchmark of one machine.

mod http;
mod openloop;
mod orders;
mod procfs;
mod run;
mod sink;
mod users;
mod wsapi;
mod wsclient;
mod wsfanout;
mod wsidle;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::process::ExitCode;

use orders::{account_query, now_ms, order_body, Plan, MARKETS, RECV_WINDOW_MS_MAX};

/// Requests `presign` writes at most (a few MB of text).
const PRESIGN_COUNT_MAX: u64 = 1_000_000;
/// Users per shard `setup` creates at most: one for every connection an
/// idle run may open, so that each WebSocket API session can be another
/// user's.
const SETUP_USERS_PER_SHARD_MAX: usize = wsidle::CONNS_MAX as usize;
/// Price levels `book` asks for per side (Binance's largest depth limit).
const BOOK_DEPTH_LEVELS_MAX: u32 = 5000;

const USAGE: &str = "\
usage: tradsys-loadgen <command> [--option value]...

  setup    --admin HOST:PORT --token T --shards N --per-shard K --out USERS
           [--fund 0|1 (1)] [--ed25519 0|1 (0)]
           create K funded users with keys on each of N shards (--fund 0:
           keys only, for users that do not trade); every user gets an
           HMAC-SHA256 key, and with --ed25519 1 an Ed25519 key as well
           (private half made here, kept in USERS) for session.logon
  presign  --users USERS --kind account|orders --count N --out FILE
           [--recv-window MS (60000)]
           write N signed requests for bench/rest.lua, timestamped now;
           orders are crossing pairs, SELL line then BUY line
  run      --target HOST:PORT --users USERS --rate PER_S|max --duration S
           [--api rest|ws (rest)] [--connections C (64)] [--warmup S (2)]
           [--recv-window MS (5000)]
           crossing pairs at a constant rate; latency from intended send time;
           `--rate max`: no schedule, as fast as answers come back
           --api rest-open: one thread drives every connection through
           epoll (up to 16384), one order in flight per connection; due
           orders wait for an idle connection and are charged for it
           --api ws: order.place on /ws-api/v3, one connection per user,
           pipelined: [--threads T (2)] [--window K (8)] requests in flight
           per connection at most, [--rate-limits 0|1 (1)] 0: the URL asks
           for answers without rateLimits, [--logon 0|1 (0)] 1: each
           connection first logs on with session.logon (users with Ed25519
           keys), then sends order.place without apiKey and signature
  book     --target HOST:PORT       orders left resting per benchmark market
  plan     --users USERS --shards N [--markets FILE (shards/markets.toml)]
           share of orders whose market is on another shard than the user
  ws-idle  --target HOST:PORT --pid SERVER_PID --conns N --stream NAME
           [--fallback-stream NAME] [--settle-s S (3)] [--hold-s S (25)]
           N idle connections to /ws/NAME (NAME `-`: /ws, no stream);
           server RSS and kernel socket memory per connection
           --wsapi USERS instead of --stream: N connections to /ws-api/v3,
           each with one userDataStream.subscribe.signature (user i mod
           the file's), [--rate-limits 0|1 (1)], [--logon 0|1 (0)] 1: each
           does session.logon (Ed25519 keys) then userDataStream.subscribe
  ws-fanout --target HOST:PORT --users USERS --subscribers N --rate PER_S
           --duration S [--warmup S (2)] [--producers C (2)] [--threads T (1)]
           [--pid SERVER_PID] [--drain-s S (10)] [--recv-window MS (5000)]
           [--spin 0|1 (0)]  1: receivers poll without sleeping
           N subscribers of btcusdt@trade while the first user's resting
           SELLs are taken by the others' IOC BUYs at PER_S trades/s

  webhook-sink --expect N [--port P (0: any, printed)]
           answer webhook POSTs with 200; after N, print the deliveries
           per second from the first to the last

USERS is a file of lines `userId<TAB>shard<TAB>apiKey<TAB>secretKey`, with
`<TAB>ed25519ApiKey<TAB>ed25519SeedHex` after them for users that have an
Ed25519 key (setup --ed25519 1).
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(command) = args.first() else {
        eprint!("{USAGE}");
        return ExitCode::from(2);
    };
    if command == "-h" || command == "--help" {
        print!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let opts = match options(&args[1..]) {
        Ok(opts) => opts,
        Err(e) => return fail(&e),
    };
    let result = match command.as_str() {
        "setup" => setup(&opts),
        "presign" => presign(&opts),
        "run" => run_cmd(&opts),
        "book" => book(&opts),
        "plan" => plan(&opts),
        "ws-idle" => ws_idle(&opts),
        "ws-fanout" => ws_fanout(&opts),
        "webhook-sink" => webhook_sink(&opts),
        other => Err(format!("unknown command {other}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn webhook_sink(opts: &Opts) -> Result<(), String> {
    let port = match opts.0.get("port") {
        Some(p) => p.parse().map_err(|e| format!("--port: {e}"))?,
        None => 0,
    };
    let expect = opts
        .0
        .get("expect")
        .ok_or("--expect is required")?
        .parse()
        .map_err(|e| format!("--expect: {e}"))?;
    sink::run(port, expect)
}

fn fail(msg: &str) -> ExitCode {
    eprintln!("tradsys-loadgen: {msg}");
    eprint!("{USAGE}");
    ExitCode::from(2)
}

struct Opts(BTreeMap<String, String>);

fn options(args: &[String]) -> Result<Opts, String> {
    let mut map = BTreeMap::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let key = arg
            .strip_prefix("--")
            .ok_or_else(|| format!("unexpected argument {arg}"))?;
        let value = it.next().ok_or_else(|| format!("--{key} needs a value"))?;
        map.insert(key.to_string(), value.clone());
    }
    Ok(Opts(map))
}

impl Opts {
    fn str(&self, key: &str) -> Result<&str, String> {
        self.0
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| format!("--{key} is required"))
    }

    fn num(&self, key: &str, default: Option<u64>, max: u64) -> Result<u64, String> {
        let v = match (self.0.get(key), default) {
            (Some(v), _) => v.parse::<u64>().map_err(|_| format!("--{key}: not a number: {v}"))?,
            (None, Some(d)) => d,
            (None, None) => return Err(format!("--{key} is required")),
        };
        if v == 0 || v > max {
            return Err(format!("--{key}: must be between 1 and {max}"));
        }
        Ok(v)
    }

    /// A HOST:PORT on the loopback address.
    fn target(&self, key: &str) -> Result<String, String> {
        let t = self.str(key)?;
        if !t.starts_with("127.0.0.1:") {
            return Err(format!("--{key}: only 127.0.0.1:PORT is allowed, got {t}"));
        }
        Ok(t.to_string())
    }
}

fn setup(o: &Opts) -> Result<(), String> {
    let shards = o.num("shards", None, 256)? as u32;
    let per_shard = o.num("per-shard", None, SETUP_USERS_PER_SHARD_MAX as u64)? as usize;
    let fund = zero_one(o, "fund", true)?;
    let ed25519 = zero_one(o, "ed25519", false)?;
    let users = users::setup(&o.target("admin")?, o.str("token")?, shards, per_shard, fund, ed25519)
        .map_err(|e| e.to_string())?;
    users::write(o.str("out")?, &users).map_err(|e| e.to_string())?;
    eprintln!(
        "setup: {} users ({per_shard} per shard on {shards} shards){}",
        users.len(),
        if ed25519 {
            ", each with an HMAC and an Ed25519 key"
        } else {
            ""
        }
    );
    Ok(())
}

fn read_users(o: &Opts) -> Result<Vec<users::User>, String> {
    let path = o.str("users")?;
    let users = users::read(path).map_err(|e| format!("{path}: {e}"))?;
    if users.len() < 2 {
        return Err(format!("{path}: needs at least two users"));
    }
    Ok(users)
}

/// Lines `METHOD<TAB>PATH<TAB>APIKEY<TAB>BODY` for bench/rest.lua, orders
/// as SELL then BUY of each pair (the script deals whole pairs to threads).
fn presign(o: &Opts) -> Result<(), String> {
    let users = read_users(o)?;
    let count = o.num("count", None, PRESIGN_COUNT_MAX)?;
    let recv_window = o.num("recv-window", Some(RECV_WINDOW_MS_MAX), RECV_WINDOW_MS_MAX)?;
    let ts = now_ms();
    let mut out = String::with_capacity(count as usize * 300);
    match o.str("kind")? {
        "account" => {
            let u = &users[0];
            for i in 0..count {
                // Distinct timestamps (all in the past) make distinct requests.
                let q = account_query(ts - i % 1000, recv_window, &u.secret);
                let _ = writeln!(out, "GET\t/api/v3/account?{q}\t{}\t", u.api_key);
            }
        }
        "orders" => {
            let plan = Plan::new(&users);
            for k in 0..count.div_ceil(2) {
                for order in plan.pair(k) {
                    let body = order_body(&order, ts, recv_window);
                    let _ = writeln!(out, "POST\t/api/v3/order\t{}\t{body}", order.user.api_key);
                }
            }
        }
        other => return Err(format!("--kind: account or orders, not {other}")),
    }
    fs::write(o.str("out")?, out).map_err(|e| e.to_string())
}

fn run_cmd(o: &Opts) -> Result<(), String> {
    let users = read_users(o)?;
    let api = match o.0.get("api").map_or("rest", String::as_str) {
        "rest" => run::Api::Rest,
        "ws" => run::Api::Ws,
        "rest-open" => run::Api::RestOpen,
        other => return Err(format!("--api: rest, rest-open or ws, not {other}")),
    };
    if api == run::Api::Ws && o.0.contains_key("connections") {
        return Err("--connections: the WebSocket API run opens one connection per user".to_string());
    }
    let logon = zero_one(o, "logon", false)?;
    if logon && api != run::Api::Ws {
        return Err("--logon 1: only with --api ws".to_string());
    }
    if logon {
        need_ed25519(o.str("users")?, &users)?;
    }
    let rate = match o.str("rate")? {
        "max" => run::Rate::Max,
        _ => run::Rate::PerS(o.num("rate", None, run::RATE_PER_S_MAX)?),
    };
    let settings = run::Settings {
        api,
        target: o.target("target")?,
        rate,
        duration_s: o.num("duration", None, run::DURATION_S_MAX)?,
        warmup_s: o
            .0
            .get("warmup")
            .map_or(Ok(2), |v| v.parse().map_err(|_| "--warmup: not a number".to_string()))?,
        connections: o.num(
            "connections",
            Some(64),
            if api == run::Api::RestOpen {
                openloop::CONNECTIONS_MAX
            } else {
                run::CONNECTIONS_MAX as u64
            },
        )? as usize,
        recv_window_ms: o.num("recv-window", Some(5000), RECV_WINDOW_MS_MAX)?,
        threads: o.num("threads", Some(2), wsapi::THREADS_MAX as u64)? as usize,
        window: o.num("window", Some(wsapi::WINDOW_DEFAULT as u64), wsapi::WINDOW_MAX as u64)? as usize,
        return_rate_limits: rate_limits(o)?,
        logon,
    };
    if api == run::Api::Ws && users.len() > wsapi::CONNECTIONS_MAX {
        return Err(format!(
            "--users: at most {} users (one connection each) for --api ws",
            wsapi::CONNECTIONS_MAX
        ));
    }
    let summary = run::run(&settings, &users);
    print!("{}", summary.text);
    if settings.logon && summary.connect_errors > 0 {
        // A session that cannot log on is a setup fault, not a measurement.
        return Err("--logon 1: sessions could not log on (see the connection errors above)".to_string());
    }
    Ok(())
}

fn ws_idle(o: &Opts) -> Result<(), String> {
    let wsapi = match o.0.get("wsapi") {
        Some(path) => Some(users::read(path).map_err(|e| format!("{path}: {e}"))?),
        None => None,
    };
    if wsapi.as_ref().is_some_and(Vec::is_empty) {
        return Err("--wsapi: the users file is empty".to_string());
    }
    let logon = zero_one(o, "logon", false)?;
    let conns = o.num("conns", None, wsidle::CONNS_MAX)? as usize;
    match (&wsapi, logon) {
        (None, true) => return Err("--logon 1: only with --wsapi".to_string()),
        (Some(users), true) => need_ed25519(o.str("wsapi")?, &users[..users.len().min(conns)])?,
        _ => {}
    }
    let stream = match (&wsapi, o.0.get("stream")) {
        (None, _) => o.str("stream")?.to_string(),
        (Some(_), None) => String::new(),
        (Some(_), Some(_)) => return Err("--stream and --wsapi: one or the other".to_string()),
    };
    let settings = wsidle::Settings {
        target: o.target("target")?,
        server_pid: o.num("pid", None, u64::from(u32::MAX))? as u32,
        conns,
        stream,
        fallback: o.0.get("fallback-stream").cloned(),
        settle_s: o.num("settle-s", Some(3), wsidle::HOLD_S_MAX)?,
        hold_s: o.num("hold-s", Some(25), wsidle::HOLD_S_MAX)?,
        wsapi,
        return_rate_limits: rate_limits(o)?,
        logon,
    };
    print!("{}", wsidle::run(&settings)?);
    Ok(())
}

/// `--rate-limits 0|1`: whether WebSocket API answers carry `rateLimits`.
fn rate_limits(o: &Opts) -> Result<bool, String> {
    zero_one(o, "rate-limits", true)
}

/// An option `--KEY 0|1`, `default` when absent.
fn zero_one(o: &Opts, key: &str, default: bool) -> Result<bool, String> {
    match o.0.get(key).map(String::as_str) {
        None => Ok(default),
        Some("1") => Ok(true),
        Some("0") => Ok(false),
        Some(other) => Err(format!("--{key}: 0 or 1, not {other}")),
    }
}

/// `--logon 1` signs `session.logon` with each user's Ed25519 key: every
/// user in `users` (read from `path`) must have one.
fn need_ed25519(path: &str, users: &[users::User]) -> Result<(), String> {
    match users.iter().find(|u| u.ed25519.is_none()) {
        Some(u) => Err(format!(
            "--logon 1: user {} in {path} has no Ed25519 key (session.logon takes only those); make the users \
             with `setup --ed25519 1`",
            u.id
        )),
        None => Ok(()),
    }
}

fn ws_fanout(o: &Opts) -> Result<(), String> {
    let users = read_users(o)?;
    let settings = wsfanout::Settings {
        target: o.target("target")?,
        subscribers: o.num("subscribers", None, wsfanout::SUBSCRIBERS_MAX)? as usize,
        rate_per_s: o.num("rate", None, wsfanout::RATE_PER_S_MAX)?,
        duration_s: o.num("duration", None, wsfanout::DURATION_S_MAX)?,
        warmup_s: o
            .0
            .get("warmup")
            .map_or(Ok(2), |v| v.parse().map_err(|_| "--warmup: not a number".to_string()))?,
        producers: o.num("producers", Some(2), wsfanout::PRODUCERS_MAX)? as usize,
        threads: o.num("threads", Some(1), wsfanout::THREADS_MAX)? as usize,
        server_pid: o
            .0
            .get("pid")
            .map(|_| o.num("pid", None, u64::from(u32::MAX)))
            .transpose()?
            .map(|p| p as u32),
        spin: o.0.get("spin").is_some_and(|v| v == "1"),
        drain_s: o.num("drain-s", Some(10), wsfanout::DURATION_S_MAX)?,
        recv_window_ms: o.num("recv-window", Some(5000), RECV_WINDOW_MS_MAX)?,
    };
    print!("{}", wsfanout::run(&settings, &users)?);
    Ok(())
}

fn book(o: &Opts) -> Result<(), String> {
    let target = o.target("target")?;
    let mut client = http::Client::connect(&target).map_err(|e| format!("connect {target}: {e}"))?;
    for (symbol, _, qty) in MARKETS {
        let path = format!("/api/v3/depth?symbol={symbol}&limit={BOOK_DEPTH_LEVELS_MAX}");
        let resp = client.request("GET", &path, &[], b"", "").map_err(|e| e.to_string())?;
        let v: serde_json::Value = serde_json::from_slice(&resp.body).map_err(|e| format!("{path}: {e}"))?;
        // Display only: quantities are summed as floats, then divided by the
        // one order quantity the benchmark uses in this market.
        let per_order: f64 = qty.parse().map_err(|_| "bad quantity in MARKETS".to_string())?;
        let side = |name: &str| -> f64 {
            v[name]
                .as_array()
                .map(|levels| {
                    levels
                        .iter()
                        .filter_map(|l| l[1].as_str()?.parse::<f64>().ok())
                        .sum::<f64>()
                })
                .unwrap_or(0.0)
                / per_order
        };
        println!(
            "book {symbol}: resting bids {:.0} orders, asks {:.0} orders",
            side("bids").abs(),
            side("asks").abs()
        );
    }
    Ok(())
}

fn plan(o: &Opts) -> Result<(), String> {
    let users = read_users(o)?;
    let shards = o.num("shards", None, 256)? as u32;
    let path = o.0.get("markets").map_or("shards/markets.toml", String::as_str);
    let text = fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let specs = tradsys_engine::market::parse_markets(&text).map_err(|e| format!("{path}: {e}"))?;
    let owners = market_shards(&specs, shards);
    let shard_of = |symbol: &str| specs.iter().position(|s| s.symbol == symbol).map(|i| owners[i]);
    for (symbol, _, _) in MARKETS {
        let shard = shard_of(symbol).ok_or_else(|| format!("{symbol} is not in {path}"))?;
        println!("market {symbol} on shard {shard}");
    }
    let plan = Plan::new(&users);
    let (mut cross, mut total) = (0u64, 0u64);
    for k in 0..(MARKETS.len() as u64 * users.len() as u64 * 2) {
        for order in plan.pair(k) {
            total += 1;
            if shard_of(MARKETS[order.market].0) != Some(order.user.shard) {
                cross += 1;
            }
        }
    }
    println!(
        "planned cross-shard share: {cross} of {total} orders ({:.1}%)",
        100.0 * cross as f64 / total as f64
    );
    Ok(())
}

/// Which shard owns each market: a copy of `tradsys::trading::market_shards`
/// (the pinned shard, else FNV-1a of the symbol modulo the shard count).
/// The tool does not depend on the server crate so that it builds and lints
/// on its own; bench/rest.sh checks the resulting share against the
/// server's /metrics counters, which would expose any drift.
fn market_shards(specs: &[tradsys_engine::market::MarketSpec], shards: u32) -> Vec<u32> {
    let fnv1a = |bytes: &[u8]| {
        bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        })
    };
    specs
        .iter()
        .map(|spec| {
            spec.shard
                .unwrap_or_else(|| (fnv1a(spec.symbol.as_bytes()) % u64::from(shards)) as u32)
        })
        .collect()
}
