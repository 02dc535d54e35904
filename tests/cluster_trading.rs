//! Three instances on loopback (a Redis and a PostgreSQL of the test's
//! own) trade as one exchange: users of every instance place and cancel
//! orders on the markets of every instance, each request entering through
//! any instance, and every answer, every balance and the funds audit
//! gathered from all three match the engine run alone on the same
//! operations (`driver::Exchange`, one machine). Then an instance is
//! killed (`kill -9`) while orders cross to its markets, and restarted:
//! every acknowledged order is there exactly once, no trade is half
//! applied, and the cluster's funds are whole.

mod common;

use common::account::{admin, create_user, signed, User};
use common::ws::Ws;
use common::{Server, ADMIN_TOKEN, LIMITS_OFF};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;
use tradsys_engine::account::{AccountEvent, OrderRef};
use tradsys_engine::book::BookCapacity;
use tradsys_engine::driver::{Exchange, Output};
use tradsys_engine::market::{parse_markets, MarketSpec};
use tradsys_engine::num::{Amount, Price, Qty};
use tradsys_engine::order::{MarketId, OrderQty, OrderRequest, OrderStatus, OrderType, Side, StpMode, TimeInForce};
use tradsys_engine::EngineError;
use tradsys_pgtest::PgServer;
use tradsys_redistest::RedisServer;

const MARKETS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/shards/markets.toml");
const WAIT: Duration = Duration::from_secs(30);
/// Enough of every asset that long runs (`TRADSYS_CLUSTER_OPS`) do not
/// run the traders dry.
const DEPOSITS: [(&str, &str); 5] = [
    ("USDT", "10000000"),
    ("BTC", "10000"),
    ("ETH", "100000"),
    ("EUR", "1000000"),
    ("USD", "1000000"),
];
/// Each market's prices: a middle and a tick the orders step by, and a
/// quantity step; orders land within five steps of the middle.
const PRICES: [(&str, &str, &str, &str); 4] = [
    ("BTCUSDT", "1000", "0.5", "0.01"),
    ("ETHUSDT", "50", "0.25", "0.2"),
    ("ETHBTC", "0.05", "0.001", "0.1"),
    ("EURUSD", "1.1", "0.01", "10"),
];

/// SplitMix64: the operations' only randomness, from a fixed seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % n
    }
}

struct Cluster {
    servers: Vec<Server>,
    args: Vec<Vec<String>>,
    dirs: Vec<common::TempDir>,
}

impl Cluster {
    fn start(redis: &RedisServer, pg: &PgServer, map: &str, apis: &[String]) -> Cluster {
        let ids = ["a", "b", "c"];
        let args: Vec<Vec<String>> = ids
            .iter()
            .zip(apis)
            .map(|(id, api)| {
                let mut args: Vec<String> = [
                    "--admin-token",
                    ADMIN_TOKEN,
                    "--redis",
                    &redis.url(),
                    "--postgres",
                    &pg.url(),
                    "--cluster",
                    map,
                    "--instance",
                    id,
                    "--listen",
                    api,
                    "--link-call-timeout-ms",
                    "3000",
                ]
                .iter()
                .map(|s| s.to_string())
                .collect();
                args.extend(LIMITS_OFF.iter().map(|s| s.to_string()));
                args
            })
            .collect();
        let dirs: Vec<_> = ids.iter().map(|_| common::temp_data_dir()).collect();
        let servers = (0..3).map(|i| Cluster::serve(&dirs[i], &args[i])).collect();
        Cluster { servers, args, dirs }
    }

    fn serve(dir: &std::path::Path, args: &[String]) -> Server {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Server::start_in(dir, 2, &args)
    }

    fn restart(&mut self, i: usize) {
        self.servers[i] = Cluster::serve(&self.dirs[i], &self.args[i]);
    }

    /// Engine messages still waiting for an acknowledgement, over every
    /// instance and link.
    fn unacknowledged(&self) -> f64 {
        self.servers
            .iter()
            .map(|s| {
                let metrics = s.metrics();
                let mut sum = 0.0;
                for shard in ["0", "1"] {
                    for peer in ["a", "b", "c"] {
                        sum += metrics
                            .value("tradsys_link_outbox", &[("shard", shard), ("peer", peer)])
                            .unwrap_or(0.0);
                    }
                }
                sum
            })
            .sum()
    }

    /// Per asset: what fills moved into each instance, summed, and
    /// whether each instance is whole with them.
    fn audit(&self) -> (BTreeMap<String, i128>, Vec<bool>) {
        let mut settled = BTreeMap::new();
        let mut whole = Vec::new();
        for server in &self.servers {
            let (status, audit) = admin(server.admin.expect("admin"), "GET", "/admin/v1/audit", None);
            assert_eq!(status, 200, "{audit}");
            whole.push(audit["ok"] == true);
            for asset in audit["assets"].as_array().expect("assets") {
                let name = asset["asset"].as_str().expect("asset").to_string();
                let text = asset["settledIn"].as_str().expect("settledIn");
                let (sign, digits) = text.strip_prefix('-').map_or((1, text), |d| (-1, d));
                let units = Amount::parse(digits).expect("a decimal");
                *settled.entry(name).or_insert(0) += sign * i128::from(units.0);
            }
        }
        (settled, whole)
    }
}

/// The same operations on the engine alone.
struct Reference {
    exchange: Exchange,
    specs: Vec<MarketSpec>,
    out: Output,
}

impl Reference {
    fn new(users: &[User]) -> Reference {
        let text = std::fs::read_to_string(MARKETS).expect("the markets file");
        let specs = parse_markets(&text).expect("the markets");
        let mut reference = Reference {
            exchange: Exchange::new(&specs, 1, BookCapacity::default()),
            specs,
            out: Output::default(),
        };
        users.iter().for_each(|user| reference.fund(user));
        reference
    }

    /// `DEPOSITS` for a user the cluster funded so.
    fn fund(&mut self, user: &User) {
        for (asset, amount) in DEPOSITS {
            let asset = self.exchange.asset_id(asset).expect("an asset");
            let amount = Amount::parse(amount).expect("an amount");
            self.exchange.deposit(user.id, asset, amount).expect("a deposit");
        }
    }

    fn market(&self, symbol: &str) -> MarketId {
        MarketId(self.specs.iter().position(|s| s.symbol == symbol).expect("a market") as u16)
    }

    /// Places the order the cluster numbered `order_id`; its status and
    /// executed quantity.
    fn place(&mut self, user: u64, order_id: u64, request: &OrderRequest) -> (OrderStatus, Qty) {
        self.try_place(user, order_id, request)
            .expect("the reference takes the order")
    }

    /// `place`, or the refusal.
    fn try_place(
        &mut self,
        user: u64,
        order_id: u64,
        request: &OrderRequest,
    ) -> Result<(OrderStatus, Qty), EngineError> {
        self.out.clear();
        self.exchange.place(user, request, order_id, 0, &mut self.out)?;
        let placed = self.out.events.iter().find_map(|e| match e {
            AccountEvent::Placed { order_id: id, result } if *id == order_id => Some(*result),
            _ => None,
        });
        let view = placed.expect("an outcome")?;
        Ok((view.status, view.executed_qty))
    }

    /// Cancels an order; `None` when it is no longer open.
    fn cancel(&mut self, user: u64, market: MarketId, order_id: u64) -> Option<(OrderStatus, Qty)> {
        self.out.clear();
        self.exchange
            .cancel(user, market, OrderRef::Id(order_id), 0, &mut self.out)
            .ok()?;
        let canceled = self.out.events.iter().find_map(|e| match e {
            AccountEvent::Canceled { order_id: id, result } if *id == order_id => Some(*result),
            _ => None,
        });
        let view = canceled.expect("an outcome").expect("canceled");
        Some((view.status, view.executed_qty))
    }
}

fn status_of(text: &str) -> OrderStatus {
    OrderStatus::parse(text).unwrap_or_else(|| panic!("status {text}"))
}

/// A GTC LIMIT order as the API parses it.
fn limit(market: MarketId, side: Side, price: &str, qty: &str) -> OrderRequest {
    OrderRequest {
        market,
        side,
        kind: OrderType::Limit,
        time_in_force: Some(TimeInForce::Gtc),
        price: Some(Price::parse(price).expect("a price")),
        qty: OrderQty::Base(Qty::parse(qty).expect("a quantity")),
        stop_price: None,
        client_order_id: None,
        stp: StpMode::None,
        iceberg_qty: None,
        trailing_delta: None,
    }
}

/// A decimal `units` steps of `step` away from `middle`.
fn stepped(middle: &str, step: &str, units: i64) -> String {
    let value = Price::parse(middle).expect("a price").0 + units * Price::parse(step).expect("a step").0;
    let whole = value / 100_000_000;
    let frac = value % 100_000_000;
    format!("{whole}.{frac:08}")
}

#[test]
fn users_of_every_instance_trade_on_markets_of_every_instance() {
    let (redis, pg) = (RedisServer::start(), PgServer::start());
    let apis: Vec<String> = common::free_ports(3).iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let dir = common::temp_data_dir();
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let map_path = dir.join("cluster.toml");
    let map_text = format!(
        "[[instance]]\nid = \"a\"\napi = \"{}\"\nlink = \"127.0.0.1:9111\"\nslots = [\"0-5460\"]\nmarkets = [\"BTCUSDT\"]\n\n\
         [[instance]]\nid = \"b\"\napi = \"{}\"\nlink = \"127.0.0.1:9112\"\nslots = [\"5461-10922\"]\nmarkets = [\"ETHUSDT\", \"ETHBTC\"]\n\n\
         [[instance]]\nid = \"c\"\napi = \"{}\"\nlink = \"127.0.0.1:9113\"\nslots = [\"10923-16383\"]\nmarkets = [\"EURUSD\"]\n",
        apis[0], apis[1], apis[2]
    );
    std::fs::write(&map_path, &map_text).expect("the map written");
    let mut cluster = Cluster::start(&redis, &pg, map_path.to_str().expect("a UTF-8 path"), &apis);
    // Two users on each instance; the demo user is left out.
    let users: Vec<(usize, User)> = (0..3)
        .flat_map(|i| (0..2).map(move |n| (i, n)))
        .map(|(i, n)| (i, create_user(&cluster.servers[i], &format!("u{i}{n}"), &DEPOSITS)))
        .collect();
    let mut reference = Reference::new(&users.iter().map(|(_, u)| u.clone()).collect::<Vec<_>>());
    // TRADSYS_SEED and TRADSYS_CLUSTER_OPS make longer runs than the
    // test command's (the operations before and after the kill).
    let env = |name: &str, default: u64| std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    let mut rng = Rng(env("TRADSYS_SEED", 20261207));
    let ops = env("TRADSYS_CLUSTER_OPS", 210) as usize;
    // Orders resting, by user: (market, order id).
    let mut open: Vec<Vec<(MarketId, u64)>> = vec![Vec::new(); users.len()];
    let mut crossed = 0;
    let mut operate = |cluster: &Cluster, rng: &mut Rng, reference: &mut Reference, count: usize| {
        for _ in 0..count {
            let u = rng.below(users.len() as u64) as usize;
            let (home, user) = (&users[u].0, &users[u].1);
            let entry = &cluster.servers[rng.below(3) as usize];
            if rng.below(5) == 0 && !open[u].is_empty() {
                let at = rng.below(open[u].len() as u64) as usize;
                let (market, order_id) = open[u].remove(at);
                let symbol = &reference.specs[usize::from(market.0)].symbol;
                let query = format!("symbol={symbol}&orderId={order_id}");
                let r = signed(&mut entry.connect(), user, "DELETE", "/api/v3/order", &query);
                let want = reference.cancel(user.id, market, order_id);
                let body: Value = r.json();
                let Some(want) = want else {
                    // Filled since: the cluster says so too.
                    assert_eq!((r.status, &body["code"]), (400, &serde_json::json!(-2011)), "{body}");
                    continue;
                };
                assert_eq!(r.status, 200, "{body}");
                let got = (
                    status_of(body["status"].as_str().expect("status")),
                    Qty::parse(body["executedQty"].as_str().expect("executedQty")).expect("a quantity"),
                );
                assert_eq!(got, want, "cancel {query}: {body}");
                continue;
            }
            let (symbol, middle, tick, step) = PRICES[rng.below(4) as usize];
            let side = if rng.below(2) == 0 { Side::Buy } else { Side::Sell };
            let price = stepped(middle, tick, rng.below(11) as i64 - 5);
            let qty = stepped("0", step, 1 + rng.below(4) as i64);
            let market = reference.market(symbol);
            let side_text = if side == Side::Buy { "BUY" } else { "SELL" };
            let query =
                format!("symbol={symbol}&side={side_text}&type=LIMIT&timeInForce=GTC&quantity={qty}&price={price}");
            let mut r = signed(&mut entry.connect(), user, "POST", "/api/v3/order", &query);
            let mut body: Value = r.json();
            if r.status == 400 && (body["code"] == -1013 || body["code"] == -2010) {
                // The fills of this user's resting orders by others' orders
                // reach its instance after those orders' answers: a refusal
                // for funds or open orders may be that. Asked again once
                // nothing is on its way, the answer is the reference's.
                assert!(
                    common::eventually(WAIT, || cluster.unacknowledged() == 0.0),
                    "engine messages still unacknowledged"
                );
                r = signed(&mut entry.connect(), user, "POST", "/api/v3/order", &query);
                body = r.json();
            }
            let request = limit(market, side, &price, &qty);
            if r.status != 200 {
                // Refused (funds, MAX_NUM_ORDERS): the reference refuses it
                // the same way, before any id is used.
                let refused = reference.try_place(user.id, u64::MAX, &request);
                let want = refused
                    .err()
                    .map(|e| (400, serde_json::json!({"code": e.code(), "msg": e.msg()})));
                assert_eq!(Some((r.status, body)), want, "order {query} of user {}", user.id);
                continue;
            }
            let order_id = body["orderId"].as_u64().expect("orderId");
            let want = reference.place(user.id, order_id, &request);
            let got = (
                status_of(body["status"].as_str().expect("status")),
                Qty::parse(body["executedQty"].as_str().expect("executedQty")).expect("a quantity"),
            );
            assert_eq!(got, want, "order {query} of user {}: {body}", user.id);
            if !want.0.is_final() {
                open[u].push((market, order_id));
            }
            let market_home = ["BTCUSDT", "ETHUSDT|ETHBTC", "EURUSD"]
                .iter()
                .position(|m| m.split('|').any(|s| s == symbol));
            if market_home != Some(*home) {
                crossed += 1;
            }
        }
    };
    operate(&cluster, &mut rng, &mut reference, ops * 5 / 7);

    // Every balance, read from its user's instance, is the reference's.
    let check_balances = |cluster: &Cluster, reference: &Reference| {
        assert!(
            common::eventually(WAIT, || cluster.unacknowledged() == 0.0),
            "engine messages still unacknowledged"
        );
        for (home, user) in &users {
            let r = signed(
                &mut cluster.servers[*home].connect(),
                user,
                "GET",
                "/api/v3/account",
                "",
            );
            let body: Value = r.json();
            assert_eq!(r.status, 200, "{body}");
            for balance in body["balances"].as_array().expect("balances") {
                let asset = reference
                    .exchange
                    .asset_id(balance["asset"].as_str().expect("asset"))
                    .expect("an asset");
                let want = reference.exchange.account(user.id).balance(user.id, asset);
                let free = Amount::parse(balance["free"].as_str().expect("free")).expect("a decimal");
                let locked = Amount::parse(balance["locked"].as_str().expect("locked")).expect("a decimal");
                assert_eq!((free, locked), (want.free, want.locked), "user {} {balance}", user.id);
            }
        }
        let (settled, whole) = cluster.audit();
        assert_eq!(whole, [true, true, true]);
        assert!(settled.values().all(|&n| n == 0), "{settled:?}");
        assert!(settled.len() == 5, "{settled:?}");
    };
    check_balances(&cluster, &reference);

    // A subscriber on a to c's market: relayed from c through the links.
    // Each trade below answers with its fills' trade ids.
    // Two traders of their own, so that no earlier order is in their way.
    let c_pair = (
        create_user(&cluster.servers[2], "stream-buyer", &DEPOSITS),
        create_user(&cluster.servers[2], "stream-seller", &DEPOSITS),
    );
    reference.fund(&c_pair.0);
    reference.fund(&c_pair.1);
    let c_pair = (&c_pair.0, &c_pair.1);
    let c_addr = cluster.servers[2].addr;
    // The orders, for the reference once the subscriber has its trades.
    let c_orders = std::cell::RefCell::new(Vec::new());
    let eurusd_trade = |price: &str| -> Vec<u64> {
        let mut ids = Vec::new();
        for (user, side) in [(c_pair.0, Side::Buy), (c_pair.1, Side::Sell)] {
            let side_text = if side == Side::Buy { "BUY" } else { "SELL" };
            let query = format!("symbol=EURUSD&side={side_text}&type=LIMIT&timeInForce=GTC&quantity=10&price={price}");
            let r = signed(
                &mut common::Client::connect(c_addr),
                user,
                "POST",
                "/api/v3/order",
                &query,
            );
            assert_eq!(r.status, 200, "{}", r.body_text());
            let body: Value = r.json();
            ids.extend(
                body["fills"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|f| f["tradeId"].as_u64()),
            );
            c_orders.borrow_mut().push((user.id, side, price.to_string(), body));
        }
        ids
    };
    let mut subscriber = Ws::connect(cluster.servers[0].addr, "/ws/eurusd@trade");
    let live = subscriber.first_text_after(100, || {
        eurusd_trade("1.2");
    });
    assert!(live.is_some(), "no trade of c's market reached a");
    let mut expected = eurusd_trade("1.2");

    // b, the instance of two markets, dies with orders of the others'
    // users crossing to it, and comes back: what was acknowledged is
    // there once, and the rest of the operations run on.
    // Two users of a's of their own, whom earlier operations cannot have
    // filled up to MAX_NUM_ORDERS on b's market.
    let a_pair = [
        create_user(&cluster.servers[0], "crossing-0", &DEPOSITS),
        create_user(&cluster.servers[0], "crossing-1", &DEPOSITS),
    ];
    a_pair.iter().for_each(|user| reference.fund(user));
    let killed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (twenty_done, kill_now) = std::sync::mpsc::channel::<()>();
    let killer = {
        let (pid, killed) = (cluster.servers[1].child.id(), killed.clone());
        std::thread::spawn(move || {
            kill_now.recv().expect("the go");
            let status = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status()
                .expect("kill runs");
            assert!(status.success());
            killed.store(true, std::sync::atomic::Ordering::SeqCst);
        })
    };
    // Orders until two after the kill (each of those waits for its
    // timeout); the kill comes once 20 are answered.
    let mut during: Vec<(u16, Value)> = Vec::new();
    let mut after_kill = 0;
    while after_kill < 2 && during.len() < 100 {
        if during.len() == 20 {
            twenty_done.send(()).expect("the killer waits");
        }
        if killed.load(std::sync::atomic::Ordering::SeqCst) {
            after_kill += 1;
        }
        let n = during.len();
        let user = &a_pair[n % 2];
        let query = format!("symbol=ETHUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.2&price=40.{n:02}");
        let r = signed(&mut cluster.servers[0].connect(), user, "POST", "/api/v3/order", &query);
        during.push((r.status, r.json()));
    }
    killer.join().expect("the killer");
    let _ = cluster.servers[1].child.wait();
    expected.extend(eurusd_trade("1.21"));
    cluster.restart(1);
    expected.extend(eurusd_trade("1.22"));
    // a's subscriber got every trade of c's market in order, b's restart
    // in between, with no gap from the first expected on.
    assert!(expected.len() >= 3, "{expected:?}");
    let mut relayed: Vec<u64> = Vec::new();
    while relayed.last() != expected.last() {
        let event = subscriber.json();
        let id = event["t"].as_u64().expect("a trade id");
        if id >= expected[0] {
            relayed.push(id);
        }
    }
    assert_eq!(
        relayed,
        (expected[0]..=expected[expected.len() - 1]).collect::<Vec<_>>()
    );
    assert_eq!(relayed, expected);
    for (user, side, price, body) in c_orders.take() {
        let order_id = body["orderId"].as_u64().expect("orderId");
        let got = (
            status_of(body["status"].as_str().expect("status")),
            Qty::parse(body["executedQty"].as_str().expect("executedQty")).expect("a quantity"),
        );
        let request = limit(reference.market("EURUSD"), side, &price, "10");
        assert_eq!(reference.place(user, order_id, &request), got, "{body}");
    }
    // Every order a's users placed: acknowledged ones as placed, the
    // others (-1007: the outcome unknown) placed once as well, since the
    // order reached a's journal before its answer could not come.
    let mut acknowledged = 0;
    for (n, (status, body)) in during.iter().enumerate() {
        match status {
            200 => {
                acknowledged += 1;
                assert_eq!(body["status"], "NEW", "order {n}: {body}");
            }
            503 => assert_eq!(body["code"], -1007, "order {n}: {body}"),
            other => panic!("order {n}: {other}: {body}"),
        }
    }
    assert!(
        acknowledged >= 20 && acknowledged < during.len(),
        "{acknowledged} of {} orders acknowledged",
        during.len()
    );
    assert!(
        common::eventually(WAIT, || cluster.unacknowledged() == 0.0),
        "engine messages still unacknowledged after the restart"
    );
    // The book on b holds every one of those orders, once: the
    // acknowledged ones and those whose outcome a could not tell (a had
    // journaled them, and its outbox delivered them to b once back).
    let depth: Value = cluster.servers[1].get("/api/v3/depth?symbol=ETHUSDT&limit=100").json();
    let levels: BTreeMap<String, String> = depth["bids"]
        .as_array()
        .expect("bids")
        .iter()
        .map(|level| {
            (
                level[0].as_str().unwrap_or("").to_string(),
                level[1].as_str().unwrap_or("").to_string(),
            )
        })
        .filter(|(price, _)| price.starts_with("40."))
        .collect();
    let want: BTreeMap<String, String> = (0..during.len())
        .map(|n| (format!("40.{n:02}000000"), "0.20000000".to_string()))
        .collect();
    assert_eq!(levels, want, "{during:?}");
    // The reference takes them as they are open for their users.
    for n in 0..during.len() {
        let price = format!("40.{n:02}000000");
        let user = &a_pair[n % 2];
        let r = signed(
            &mut cluster.servers[0].connect(),
            user,
            "GET",
            "/api/v3/openOrders",
            "symbol=ETHUSDT",
        );
        let orders: Value = r.json();
        let order = orders
            .as_array()
            .expect("open orders")
            .iter()
            .find(|o| o["price"] == price.as_str())
            .unwrap_or_else(|| panic!("the order at {price} is on the book but not open for its user: {orders}"));
        if during[n].0 == 200 {
            assert_eq!(order["orderId"], during[n].1["orderId"], "{order}");
        }
        let request = limit(reference.market("ETHUSDT"), Side::Buy, &price, "0.2");
        let order_id = order["orderId"].as_u64().expect("orderId");
        assert_eq!(
            reference.place(user.id, order_id, &request),
            (OrderStatus::New, Qty::ZERO)
        );
    }
    check_balances(&cluster, &reference);
    operate(&cluster, &mut rng, &mut reference, ops - ops * 5 / 7);
    check_balances(&cluster, &reference);

    // A halt on the market's instance holds for the others' users too:
    // a, which does not know of it, sends the order; c's book rejects it
    // and a unlocks the funds.
    let (status, halt) = admin(
        cluster.servers[2].admin.expect("admin"),
        "POST",
        "/admin/v1/markets/EURUSD/halt",
        None,
    );
    assert_eq!(status, 200, "{halt}");
    let query = "symbol=EURUSD&side=BUY&type=LIMIT&timeInForce=GTC&quantity=10&price=1.1";
    let r = signed(
        &mut cluster.servers[0].connect(),
        &a_pair[0],
        "POST",
        "/api/v3/order",
        query,
    );
    assert_eq!(
        (r.status, r.json()),
        (400, serde_json::json!({"code": -2010, "msg": "Market is closed."}))
    );
    check_balances(&cluster, &reference);
    assert!(crossed > 100, "only {crossed} orders crossed instances");
    drop(cluster);
}
