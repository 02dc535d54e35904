//! The cluster map: `tradsys cluster check` on the shipped map, one clear
//! line (exit code 2) for a map or a start that cannot work, and two
//! instances on loopback (with a Redis and a PostgreSQL of the test's own)
//! that hand out only their own ids, answer requests about each other's
//! users and markets through the links (Redis Streams), tell a client
//! when the owner did not answer in time or cannot be reached, and name
//! the owner of what the links do not carry yet. Trading across
//! instances is tests/cluster_trading.rs's.

mod common;

use common::account::{admin, create_user, create_user_with, now_ms, signed, User};
use common::ws::Ws;
use common::{Client, Server, ADMIN_TOKEN, LIMITS_OFF};
use serde_json::{json, Value};
use std::process::Command;
use std::time::Duration;
use tradsys::cluster::ClusterMap;
use tradsys_pgtest::PgServer;
use tradsys_redistest::RedisServer;

const MARKETS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/shards/markets.toml");
const MAP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/shards/cluster.toml");

fn check(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tradsys"))
        .args(["cluster", "check"])
        .args(args)
        .output()
        .expect("tradsys runs");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

#[test]
fn the_shipped_map_is_valid_and_says_who_owns_what() {
    let (code, stdout, stderr) = check(&["--cluster", MAP, "--markets", MARKETS]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stdout, include_str!("fixtures/cluster-check.txt"));
}

#[test]
fn a_map_with_an_unowned_slot_is_refused_with_one_line() {
    let dir = std::env::temp_dir().join(format!("tradsys-cluster-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let map = dir.join("cluster.toml");
    let text = std::fs::read_to_string(MAP).expect("the shipped map");
    std::fs::write(&map, text.replace("\"10923-16383\"", "\"10923-16382\"")).expect("the map written");
    let (code, stdout, stderr) = check(&[&format!("--cluster={}", map.display()), "--markets", MARKETS]);
    assert_eq!(code, Some(2));
    assert_eq!(stdout, "");
    assert_eq!(
        stderr,
        format!(
            "tradsys: invalid configuration: {}: cluster map: slot 16383 is owned by no instance\n",
            map.display()
        )
    );
    let (code, _, stderr) = check(&["--clusters", MAP]);
    assert_eq!(code, Some(2));
    assert_eq!(
        stderr,
        "tradsys: invalid configuration: unknown option --clusters (see --help)\n"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn serve(args: &[&str]) -> (Option<i32>, String, String) {
    let data_dir = common::temp_data_dir();
    let out = Command::new(env!("CARGO_BIN_EXE_tradsys"))
        .args(["serve", "--markets", MARKETS, "--listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(&data_dir)
        .args(args)
        .output()
        .expect("tradsys runs");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let made_data_dir = data_dir.exists();
    let _ = std::fs::remove_dir_all(&data_dir);
    assert!(!made_data_dir, "a refused start made its data directory");
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

#[test]
fn a_start_the_map_cannot_serve_is_refused_with_one_line() {
    let refusal = |problem: &str| {
        (
            Some(2),
            String::new(),
            format!("tradsys: invalid configuration: {problem}\n"),
        )
    };
    let map = format!("cluster: {MAP}: cluster map:");
    let table: [(&[&str], String); 5] = [
        (
            &["--cluster", MAP, "--instance", "a"],
            format!("{map} 3 instances need --redis (rate limits shared by every instance) and --postgres (one history for every instance)"),
        ),
        (
            &["--cluster", MAP, "--instance", "a", "--redis", "redis://127.0.0.1:1"],
            format!("{map} 3 instances need --postgres (one history for every instance)"),
        ),
        (
            &["--cluster", MAP, "--instance", "z"],
            format!("{map} no instance \"z\"; it names a, b, c"),
        ),
        (&["--instance", "a"], "instance: needs --cluster".to_string()),
        (
            &["--cluster", MAP],
            "cluster: needs --instance, the id of this instance in the map".to_string(),
        ),
    ];
    for (args, problem) in table {
        assert_eq!(serve(args), refusal(&problem), "{args:?}");
    }
}

const WAIT: Duration = Duration::from_secs(20);

/// A WebSocket upgrade request for `path`.
fn upgrade(path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// `{"code":-1008,"msg":...}` with 503, naming the instance to ask.
fn elsewhere(what: &str, id: &str, api: &str) -> (u16, Value) {
    (
        503,
        json!({"code": -1008, "msg": format!("{what} is served by instance {id} at {api}; send the request there.")}),
    )
}

fn answer(r: common::Response) -> (u16, Value) {
    let body = serde_json::from_str(&r.body_text()).unwrap_or_else(|_| panic!("{} {}", r.status, r.body_text()));
    (r.status, body)
}

/// A LIMIT order of `user` through `server`.
fn order(server: &Server, user: &User, symbol: &str, side: &str, (qty, price): (&str, &str)) -> (u16, Value) {
    let query = format!("symbol={symbol}&side={side}&type=LIMIT&timeInForce=GTC&quantity={qty}&price={price}");
    answer(signed(&mut server.connect(), user, "POST", "/api/v3/order", &query))
}

#[test]
fn instances_answer_for_each_other_through_the_links() {
    let (redis, pg) = (RedisServer::start(), PgServer::start());
    let (redis_url, pg_url) = (redis.url(), pg.url());
    let apis: Vec<String> = common::free_ports(4).iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let dir = common::temp_data_dir();
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let map_path = dir.join("cluster.toml");
    let map_text = format!(
        "[[instance]]\nid = \"a\"\napi = \"{}\"\nlink = \"127.0.0.1:9101\"\nslots = [\"0-8191\"]\nmarkets = [\"BTCUSDT\", \"ETHBTC\"]\n\n\
         [[instance]]\nid = \"b\"\napi = \"{}\"\nlink = \"127.0.0.1:9102\"\nslots = [\"8192-16383\"]\nmarkets = [\"ETHUSDT\", \"EURUSD\"]\n\n\
         [[instance]]\nid = \"c\"\napi = \"{}\"\nlink = \"127.0.0.1:9103\"\nslots = []\n",
        apis[0], apis[1], apis[2]
    );
    std::fs::write(&map_path, &map_text).expect("the map written");
    let map = map_path.to_str().expect("a UTF-8 path");
    let start = |id: &str, api: &str| {
        let mut args = vec![
            "--admin-token",
            ADMIN_TOKEN,
            "--redis",
            &redis_url,
            "--postgres",
            &pg_url,
            "--cluster",
            map,
            "--instance",
            id,
            "--listen",
            api,
            "--link-call-timeout-ms",
            "1000",
            "--link-stream-lease-ms",
            "5000",
        ];
        args.extend(LIMITS_OFF);
        Server::start(2, &args)
    };
    // c owns no user slot and no market: it only answers for the others.
    let (a, b, mut c) = (start("a", &apis[0]), start("b", &apis[1]), start("c", &apis[2]));
    for (server, line) in [
        (
            &a,
            format!(
                "cluster: instance a api {} link 127.0.0.1:9101: 8192 slots, markets BTCUSDT,ETHBTC of 3",
                apis[0]
            ),
        ),
        (
            &b,
            format!(
                "cluster: instance b api {} link 127.0.0.1:9102: 8192 slots, markets ETHUSDT,EURUSD of 3",
                apis[1]
            ),
        ),
        (
            &c,
            format!(
                "cluster: instance c api {} link 127.0.0.1:9103: 0 slots, markets none of 3",
                apis[2]
            ),
        ),
    ] {
        assert_eq!(
            server
                .logs()
                .lines()
                .filter(|l| l.starts_with("cluster:"))
                .collect::<Vec<_>>(),
            [line]
        );
    }

    // The demo user lives on the instance that owns its slot, only there.
    let demo_on_a = ClusterMap::user_slot(1) <= 8191;
    assert_eq!(
        (a.demo.is_some(), b.demo.is_some(), c.demo.is_some()),
        (demo_on_a, !demo_on_a, false)
    );
    // An instance without user slots makes no user (its id search would
    // never end).
    assert_eq!(
        admin(
            c.admin.expect("admin"),
            "POST",
            "/admin/v1/users",
            Some(json!({"name": "x"}))
        ),
        (
            400,
            json!({"code": -1020, "msg": "This instance owns no user slots in the cluster map; create users on an instance that owns some."})
        )
    );

    // Each instance hands out only ids whose slot it owns.
    let users = |server: &Server, n: usize| -> Vec<User> {
        (0..n)
            .map(|i| {
                create_user(
                    server,
                    &format!("u{i}"),
                    &[
                        ("USDT", "100000"),
                        ("BTC", "10"),
                        ("ETH", "100"),
                        ("EUR", "1000"),
                        ("USD", "1000"),
                    ],
                )
            })
            .collect()
    };
    let (on_a, on_b) = (users(&a, 12), users(&b, 12));
    let slots = |us: &[User]| us.iter().map(|u| ClusterMap::user_slot(u.id)).collect::<Vec<_>>();
    assert!(slots(&on_a).iter().all(|&s| s <= 8191), "{:?}", slots(&on_a));
    assert!(slots(&on_b).iter().all(|&s| s >= 8192), "{:?}", slots(&on_b));

    // A user's requests and a market's are carried to the instance that
    // owns them and answered through the one the client reached.
    let (ua, ub) = (&on_a[0], &on_b[0]);
    // The account without its updateTime, the request's own time.
    let account = |server: &Server, user: &User| {
        let (status, mut body) = answer(signed(&mut server.connect(), user, "GET", "/api/v3/account", ""));
        if let Some(fields) = body.as_object_mut() {
            fields.remove("updateTime");
        }
        (status, body)
    };
    let links = |server: &Server, name: &str, peer: &str| -> f64 {
        let metrics = server.metrics();
        (0..2)
            .filter_map(|shard| metrics.value(name, &[("shard", &shard.to_string()), ("peer", peer)]))
            .sum()
    };
    // The link counters now: the checks below count what comes after.
    let counted = |from: &Server, to: &Server, from_id: &str, to_id: &str| {
        [
            links(from, "tradsys_link_sent_total", to_id),
            links(to, "tradsys_link_received_total", from_id),
        ]
    };
    let (b_to_a, a_to_b) = (counted(&b, &a, "b", "a"), counted(&a, &b, "a", "b"));
    let (ua_home, ub_home) = (account(&a, ua), account(&b, ub));
    assert_eq!(ua_home.0, 200, "{}", ua_home.1);
    assert_eq!(account(&b, ua), ua_home);
    assert_eq!(account(&a, ub), ub_home);
    let (status, placed) = order(&b, ua, "BTCUSDT", "BUY", ("1", "100"));
    assert_eq!((status, &placed["status"]), (200, &json!("NEW")), "{placed}");
    let open = answer(signed(
        &mut a.connect(),
        ua,
        "GET",
        "/api/v3/openOrders",
        "symbol=BTCUSDT",
    ));
    assert_eq!(open.1[0]["orderId"], placed["orderId"], "{}", open.1);
    let cancel = format!("symbol=BTCUSDT&orderId={}", placed["orderId"]);
    let canceled = answer(signed(&mut b.connect(), ua, "DELETE", "/api/v3/order", &cancel));
    assert_eq!(
        (canceled.0, &canceled.1["status"]),
        (200, &json!("CANCELED")),
        "{}",
        canceled.1
    );
    assert_eq!(
        answer(b.get("/api/v3/depth?symbol=BTCUSDT")),
        answer(a.get("/api/v3/depth?symbol=BTCUSDT"))
    );
    // 4 requests went from b to a, 1 from a to b; each side counted them.
    assert_eq!(counted(&b, &a, "b", "a"), b_to_a.map(|n| n + 4.0));
    assert_eq!(counted(&a, &b, "a", "b"), a_to_b.map(|n| n + 1.0));

    // The front (`tradsys cluster nginx`) sends each request to the
    // instance that owns what it names, so none is carried: keys name
    // their instance after the user id's 12 digits.
    assert_eq!((&ua.key[12..14], &ub.key[12..14]), ("00", "01"));
    let front = common::Front::start(map, MARKETS, apis[3].parse().expect("an address"));
    let carried = || {
        [
            links(&a, "tradsys_link_sent_total", "b"),
            links(&b, "tradsys_link_sent_total", "a"),
        ]
    };
    let before = carried();
    let via_front = |user: &User| {
        let (status, mut body) = answer(signed(
            &mut Client::connect(front.addr),
            user,
            "GET",
            "/api/v3/account",
            "",
        ));
        if let Some(fields) = body.as_object_mut() {
            fields.remove("updateTime");
        }
        (status, body)
    };
    assert_eq!(via_front(ua), ua_home);
    assert_eq!(via_front(ub), ub_home);
    let depth = |addr, symbol: &str| {
        let mut c = Client::connect(addr);
        c.send(&format!(
            "GET /api/v3/depth?symbol={symbol} HTTP/1.1\r\nHost: t\r\n\r\n"
        ));
        answer(c.response())
    };
    assert_eq!(depth(front.addr, "BTCUSDT"), depth(a.addr, "BTCUSDT"));
    assert_eq!(depth(front.addr, "ETHUSDT"), depth(b.addr, "ETHUSDT"));
    let mut ws = Client::connect(front.addr);
    ws.send(&upgrade("/ws/btcusdt@trade"));
    assert_eq!(ws.head_response().status, 101, "a stream of a's market reaches a");
    drop(ws);
    assert_eq!(carried(), before);
    drop(front);

    // Admin calls about another instance's user are carried to it as
    // well: a deposit through a and a withdrawal through c (which owns no
    // user) change b's user on b, and each answer is b's.
    let admin_of = |server: &Server| server.admin.expect("admin");
    let user_path = format!("/admin/v1/users/{}", ub.id);
    let on_owner = admin(admin_of(&b), "GET", &user_path, None);
    assert_eq!(on_owner.0, 200, "{on_owner:?}");
    assert_eq!(admin(admin_of(&a), "GET", &user_path, None), on_owner);
    let eur = |answer: &(u16, Value)| -> Value {
        let rows = answer.1["balances"].as_array().cloned().unwrap_or_default();
        let row = rows.iter().find(|r| r["asset"] == "EUR").cloned().unwrap_or_default();
        json!([answer.0, row["free"]])
    };
    let transfer = |server: &Server, kind: &str| {
        let path = format!("{user_path}/{kind}");
        admin(
            admin_of(server),
            "POST",
            &path,
            Some(json!({"asset": "EUR", "amount": "5"})),
        )
    };
    assert_eq!(eur(&transfer(&a, "deposits")), json!([200, "1005.00000000"]));
    assert_eq!(
        eur(&admin(admin_of(&b), "GET", &user_path, None)),
        json!([200, "1005.00000000"])
    );
    assert_eq!(eur(&transfer(&c, "withdrawals")), json!([200, "1000.00000000"]));
    assert_eq!(admin(admin_of(&c), "GET", &user_path, None), on_owner);
    // A WebSocket API session on a of b's user: b checks the logon, and
    // the session's requests are carried to b as the session's.
    let ed = create_user_with(&b, "ed-on-b", &[("USD", "1000")], "ED25519");
    let signed_params = |user: &User, mut params: serde_json::Map<String, Value>| {
        params.insert("apiKey".into(), json!(user.key));
        params.insert("timestamp".into(), json!(now_ms()));
        let mut pairs: Vec<String> = params
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().map_or_else(|| v.to_string(), str::to_owned)))
            .collect();
        pairs.sort();
        let signature = user.signer.sign_bare(pairs.join("&").as_bytes());
        params.insert("signature".into(), json!(signature));
        Value::Object(params)
    };
    let mut session = Ws::connect(a.addr, "/ws-api/v3");
    let mut forged = signed_params(&ed, Default::default());
    forged["signature"] = json!(signed_params(&on_b[1], Default::default())["signature"]);
    let refused = session.call(json!({"id": 1, "method": "session.logon", "params": forged}));
    assert_eq!(
        (&refused["status"], &refused["error"]["code"]),
        (&json!(400), &json!(-1022)),
        "{refused}"
    );
    let logon =
        session.call(json!({"id": 2, "method": "session.logon", "params": signed_params(&ed, Default::default())}));
    assert_eq!(
        (&logon["status"], &logon["result"]["apiKey"]),
        (&json!(200), &json!(ed.key)),
        "{logon}"
    );
    let status = session.call(json!({"id": 3, "method": "account.status", "params": {"timestamp": now_ms()}}));
    assert_eq!(
        (&status["status"], &status["result"]["uid"]),
        (&json!(200), &json!(ed.id)),
        "{status}"
    );
    let placed = session.call(json!({"id": 4, "method": "order.place", "params": {
        "symbol": "EURUSD", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
        "quantity": "10", "price": "0.5", "timestamp": now_ms()}}));
    assert_eq!(
        (&placed["status"], &placed["result"]["status"]),
        (&json!(200), &json!("NEW")),
        "{placed}"
    );
    let (status, open) = answer(signed(
        &mut b.connect(),
        &ed,
        "GET",
        "/api/v3/openOrders",
        "symbol=EURUSD",
    ));
    assert_eq!(
        (status, &open[0]["orderId"], &open[0]["origQty"]),
        (200, &placed["result"]["orderId"], &json!("10.00000000"))
    );
    let subscribe = session.call(json!({"id": 5, "method": "userDataStream.subscribe"}));
    assert_eq!(
        (&subscribe["status"], &subscribe["error"]),
        (
            &json!(503),
            &json!({"code": -1008, "msg": format!("User {} is served by instance b at {}; send the request there.", ed.id, apis[1])})
        ),
        "{subscribe}"
    );
    drop(session);
    // What links do not carry is refused, naming the owner: a user data
    // stream of b's user on a (its events are made on b).
    let key = common::account::listen_key(&mut b.connect(), ub);
    let mut stream = Client::connect(a.addr);
    stream.send(&upgrade(&format!("/ws/{key}")));
    assert_eq!(
        answer(stream.response()),
        elsewhere(&format!("User {}", ub.id), "b", &apis[1])
    );
    // Answers over every market join each instance's part, in the
    // markets file's order, the same on either instance.
    let symbols = |body: &Value| -> Vec<String> {
        body.as_array()
            .into_iter()
            .flatten()
            .map(|t| t["symbol"].as_str().unwrap_or("").to_string())
            .collect()
    };
    let (status, all) = answer(a.get("/api/v3/ticker/24hr"));
    assert_eq!(
        (status, symbols(&all)),
        (
            200,
            vec![
                "BTCUSDT".to_string(),
                "ETHUSDT".into(),
                "ETHBTC".into(),
                "EURUSD".into()
            ]
        )
    );
    for path in [
        "/api/v3/ticker/price",
        "/api/v3/ticker/bookTicker",
        "/api/v3/ticker/price?symbols=%5B%22EURUSD%22,%22BTCUSDT%22%5D",
    ] {
        let on_a = answer(a.get(path));
        assert_eq!(on_a.0, 200, "{path}: {}", on_a.1);
        assert_eq!(answer(b.get(path)), on_a, "{path}");
    }
    assert_eq!(
        symbols(&answer(b.get("/api/v3/ticker/price?symbols=%5B%22EURUSD%22,%22BTCUSDT%22%5D")).1),
        ["EURUSD", "BTCUSDT"]
    );
    // An order of a's user on b's market goes to b's book through the
    // engine messages between them (tests/cluster_trading.rs trades so).
    let (status, across) = order(&a, ua, "ETHUSDT", "BUY", ("1", "2000"));
    assert_eq!((status, &across["status"]), (200, &json!("NEW")), "{across}");
    let cancel = format!("symbol=ETHUSDT&orderId={}", across["orderId"]);
    let canceled = answer(signed(&mut a.connect(), ua, "DELETE", "/api/v3/order", &cancel));
    assert_eq!(
        (canceled.0, &canceled.1["status"]),
        (200, &json!("CANCELED")),
        "{}",
        canceled.1
    );
    // A stream of every market on c, which owns none: each instance sends
    // its markets' part, and c's subscriber gets a's and b's tickers.
    let mut every = Ws::connect(c.addr, "/ws/!miniTicker@arr");
    every
        .stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("a read timeout");
    let mut symbols_seen = std::collections::BTreeSet::new();
    for _ in 0..100 {
        for (server, users, symbol, at) in [
            (&a, &on_a, "BTCUSDT", ("0.05", "100")),
            (&b, &on_b, "EURUSD", ("10", "1.1")),
        ] {
            let (status, buy) = order(server, &users[5], symbol, "BUY", at);
            assert_eq!(status, 200, "{buy}");
            let (status, sell) = order(server, &users[6], symbol, "SELL", at);
            assert_eq!((status, &sell["status"]), (200, &json!("FILLED")), "{sell}");
        }
        while let Some((opcode, payload)) = every.frame() {
            if opcode == 0x1 {
                let tickers: Value = serde_json::from_slice(&payload).expect("JSON");
                for ticker in tickers.as_array().expect("an array of tickers") {
                    assert_eq!(ticker["e"], "24hrMiniTicker", "{ticker}");
                    symbols_seen.insert(ticker["s"].as_str().unwrap_or("").to_string());
                }
            }
        }
        if symbols_seen.len() == 2 {
            break;
        }
    }
    assert_eq!(
        symbols_seen.into_iter().collect::<Vec<_>>(),
        ["BTCUSDT", "EURUSD"],
        "c's stream of every market did not carry both instances' markets"
    );
    drop(every);
    // A halt of a's market through b is a's halt; c resumes it.
    let halt = |server: &Server, action: &str| {
        let path = format!("/admin/v1/markets/BTCUSDT/{action}");
        admin(admin_of(server), "POST", &path, None)
    };
    assert_eq!(halt(&b, "halt"), (200, json!({"symbol": "BTCUSDT", "halted": true})));
    assert_eq!(
        order(&a, &on_a[3], "BTCUSDT", "BUY", ("0.05", "100")),
        (400, json!({"code": -2010, "msg": "Market is closed."}))
    );
    assert_eq!(halt(&c, "resume"), (200, json!({"symbol": "BTCUSDT", "halted": false})));

    // A stream of a's market on b is relayed from a: once b's subscription
    // has reached a, b's subscribers get the very events a's get, and a
    // depth stream's updates follow each other without a gap.
    let mut at_owner = Ws::connect(a.addr, "/ws/btcusdt@trade");
    let mut relayed = Ws::connect(b.addr, "/stream?streams=btcusdt@trade/btcusdt@depth@100ms");
    let trade = |price: &str| {
        let (status, buy) = order(&a, &on_a[3], "BTCUSDT", "BUY", ("0.05", price));
        assert_eq!(status, 200, "{buy}");
        let (status, sell) = order(&a, &on_a[4], "BTCUSDT", "SELL", ("0.05", price));
        assert_eq!((status, &sell["status"]), (200, &json!("FILLED")), "{sell}");
    };
    let mut first = relayed
        .first_text_after(100, || trade("100"))
        .map(|payload| serde_json::from_slice::<Value>(&payload).expect("JSON"));
    assert!(first.is_some(), "no event of a's market reached b");
    // Drain to a trade a's subscriber also saw, then compare the next ones.
    let mut trades_on_b = Vec::new();
    let mut depth_ids: Vec<(u64, u64)> = Vec::new();
    let take = |message: Value, trades: &mut Vec<Value>, depth: &mut Vec<(u64, u64)>| match message["stream"].as_str() {
        Some("btcusdt@trade") => trades.push(message["data"].clone()),
        Some("btcusdt@depth@100ms") => depth.push((
            message["data"]["U"].as_u64().expect("U"),
            message["data"]["u"].as_u64().expect("u"),
        )),
        other => panic!("a message of {other:?}"),
    };
    take(first.take().expect("the first event"), &mut trades_on_b, &mut depth_ids);
    // Each trade touches its price level: one trade event and, within the
    // next 100 ms, one depth update.
    for price in ["101", "102", "103"] {
        let depth_before = depth_ids.len();
        trade(price);
        let traded = |t: &Vec<Value>| t.iter().any(|t| t["p"] == format!("{price}.00000000"));
        while !traded(&trades_on_b) || depth_ids.len() == depth_before {
            take(relayed.json(), &mut trades_on_b, &mut depth_ids);
        }
    }
    let last_on_b = trades_on_b.last().cloned().expect("a trade");
    let mut on_owner = at_owner.json();
    while on_owner["t"] != last_on_b["t"] {
        on_owner = at_owner.json();
    }
    assert_eq!(on_owner, last_on_b);
    for pair in depth_ids.windows(2) {
        assert_eq!(pair[1].0, pair[0].1 + 1, "depth updates {depth_ids:?}");
    }
    drop(at_owner);

    // The cluster as b sees it: both instances, a answering through the link.
    let view = |server: &Server| {
        let (status, mut body) = admin(server.admin.expect("admin"), "GET", "/admin/v1/cluster", None);
        assert_eq!(status, 200, "{body}");
        for i in [0, 2] {
            let other = &mut body["instances"][i];
            assert!(other["pingMicros"].is_u64() && other["linkLagMs"].is_u64(), "{other}");
            for field in ["pingMicros", "linkLagMs"] {
                other.as_object_mut().map(|o| o.remove(field));
            }
        }
        body
    };
    let instance = |id: &str, api: &str, link: &str, (slots, markets): (u64, &[&str]), me: bool, ready: bool| json!({"id": id, "api": api, "link": link, "slots": slots, "markets": markets, "self": me, "ready": ready});
    let both = |a_ready: bool| {
        json!({"cluster": true, "instances": [
            instance("a", &apis[0], "127.0.0.1:9101", (8192, &["BTCUSDT", "ETHBTC"]), false, a_ready),
            instance("b", &apis[1], "127.0.0.1:9102", (8192, &["ETHUSDT", "EURUSD"]), true, true),
            instance("c", &apis[2], "127.0.0.1:9103", (0, &[]), false, true),
        ]})
    };
    assert_eq!(view(&b), both(true));

    // An owner that does not answer in time: the client is told the
    // outcome is unknown, the cluster view says it is not ready, and the
    // owner, back, drops the two stale requests.
    common::signal(&a.child, "STOP");
    let timed_out = account(&b, ua);
    let stopped_view = view(&b);
    common::signal(&a.child, "CONT");
    assert_eq!(stopped_view, both(false));
    assert_eq!(
        timed_out,
        (
            503,
            json!({"code": -1007, "msg": "Timeout waiting for response from backend server. Send status unknown; execution status unknown."})
        )
    );
    assert!(
        common::eventually(WAIT, || links(&a, "tradsys_link_expired_total", "b") == 2.0),
        "the stale request was not dropped"
    );
    assert_eq!(account(&b, ua), ua_home);

    // Without the engine the request cannot leave: refused at once, and
    // carried again once Redis is back.
    let mut redis = redis;
    redis.kill9();
    // The relayed stream ends, saying why, rather than go quiet.
    let mut last = relayed.json();
    while last["data"]["e"] != "streamClosed" {
        last = relayed.json();
    }
    assert_eq!(
        (&last["data"]["s"], &last["data"]["reason"]),
        (&json!("BTCUSDT"), &json!("the link to the market's instance is down"))
    );
    let what = format!("User {}", ua.id);
    let unreachable = (
        503,
        json!({"code": -1008, "msg": format!("{what} is served by instance a at {}, which this instance cannot reach now; send the request there.", apis[0])}),
    );
    assert_eq!(account(&b, ua), unreachable);
    // The cluster's audit needs every instance's part: refused whole.
    assert_eq!(
        admin(admin_of(&b), "GET", "/admin/v1/cluster/audit", None),
        (
            503,
            json!({"code": -1008, "msg": format!("Instance a's audit is served by instance a at {}, which this instance cannot reach now; send the request there.", apis[0])})
        )
    );
    redis.start_again();
    assert!(
        common::eventually(WAIT, || account(&b, ua) == ua_home),
        "{:?}",
        account(&b, ua)
    );

    // Local trading works, and order ids carry the instance: a's sequence
    // numbers are 0 modulo 64, b's 1 (two shards: id = seq * 2 + shard).
    let trade = |server: &Server, users: &[User], symbol: &str, at: (&str, &str), want: u64| {
        let (status, buy) = order(server, &users[1], symbol, "BUY", at);
        assert_eq!(status, 200, "{buy}");
        let (status, sell) = order(server, &users[2], symbol, "SELL", at);
        assert_eq!((status, &sell["status"]), (200, &json!("FILLED")), "{sell}");
        for placed in [buy, sell] {
            assert_eq!(placed["orderId"].as_u64().map(|id| id / 2 % 64), Some(want), "{placed}");
        }
    };
    trade(&a, &on_a, "ETHBTC", ("1", "0.05"), 0);
    trade(&b, &on_b, "EURUSD", ("10", "1.1"), 1);

    // One PostgreSQL, a schema per instance.
    assert_eq!(
        pg.psql("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'tradsys%' ORDER BY 1"),
        "tradsys_a\ntradsys_b\ntradsys_c"
    );

    // A subscription of another instance is a lease (5 s here): c
    // subscribes to a's ETHBTC trades, which a then publishes to its
    // market data stream in Redis.
    let md_len = || redis.command(&["XLEN", "tradsys:link:a:md"]);
    // Traders rich enough for as many trades as the waits take.
    let traders = [
        create_user(&a, "lease-buyer", &[("BTC", "1000000")]),
        create_user(&a, "lease-seller", &[("ETH", "1000000")]),
    ];
    let ethbtc_trade = || {
        let (status, buy) = order(&a, &traders[0], "ETHBTC", "BUY", ("1", "0.05"));
        assert_eq!(status, 200, "{buy}");
        let (status, sell) = order(&a, &traders[1], "ETHBTC", "SELL", ("1", "0.05"));
        assert_eq!((status, &sell["status"]), (200, &json!("FILLED")), "{sell}");
    };
    let subscribe_on_c = |c: &Server| {
        let mut on_c = Ws::connect(c.addr, "/ws/ethbtc@trade");
        let first = on_c
            .first_text_after(100, ethbtc_trade)
            .map(|text| String::from_utf8_lossy(&text).into_owned());
        // A trade, not the close of a stream that lapsed before it.
        assert!(
            first.as_deref().is_some_and(|t| t.contains(r#""e":"trade""#)),
            "a's trades did not reach c: {first:?}"
        );
        on_c
    };
    // Whether a trade's event reaches a's market data stream within 1 s.
    let published = || {
        let before = md_len();
        ethbtc_trade();
        common::eventually(Duration::from_secs(1), || md_len() != before)
    };
    // Stopped past its lease, c cannot renew: a stops publishing for it
    // and tells it so, and c, running again, ends the stream saying why
    // rather than serve it with a gap.
    let mut on_c = subscribe_on_c(&c);
    assert!(published(), "a did not publish for c");
    common::signal(&c.child, "STOP");
    let lapsed = common::eventually(WAIT, || !published());
    common::signal(&c.child, "CONT");
    assert!(lapsed, "a still publishes for c, which stopped renewing");
    let mut last = on_c.json();
    while last["e"] != "streamClosed" {
        last = on_c.json();
    }
    assert_eq!(
        (&last["s"], &last["reason"]),
        (
            &json!("ETHBTC"),
            &json!("the subscription to the market's instance lapsed")
        )
    );
    drop(on_c);
    // Killed with its subscriber connected, c never unsubscribes; its
    // lease runs out.
    let on_c = subscribe_on_c(&c);
    assert!(published(), "a did not publish for c");
    c.kill9();
    drop(on_c);
    assert!(
        common::eventually(WAIT, || !published()),
        "a still publishes for c, which is gone"
    );
    drop((a, b, c));
}

#[test]
fn without_a_map_the_cluster_view_is_one_instance() {
    let server = Server::start(1, &["--admin-token", ADMIN_TOKEN]);
    let view = admin(server.admin.expect("admin"), "GET", "/admin/v1/cluster", None);
    assert_eq!(view, (200, json!({"cluster": false, "ready": true})));
    // The cluster's audit is then this process's own.
    let (status, audit) = admin(server.admin.expect("admin"), "GET", "/admin/v1/audit", None);
    assert_eq!(status, 200, "{audit}");
    let (status, whole) = admin(server.admin.expect("admin"), "GET", "/admin/v1/cluster/audit", None);
    let mut expected = audit.clone();
    expected["cluster"] = json!(false);
    expected["inFlight"] = json!(0);
    assert_eq!((status, whole), (200, expected));
}
