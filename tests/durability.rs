//! Durability across restarts: what was acknowledged is there after
//! `kill -9`, after a restart with another number of shards, and after
//! snapshots replaced the journal (API keys of every type included, signing
//! as before); the demo user is created once.
//! (The randomized kill cycles are tests/crash.rs.)

mod common;

use common::account::{admin, create_user, create_user_with, signed, Signer, User};
use common::tmpfs::{fill_up, Tmpfs};
use common::{eventually, temp_data_dir, temp_dir_in, Client, Server, ADMIN_TOKEN};
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

fn start_in(dir: &Path, shards: usize, extra: &[&str]) -> Server {
    let mut args = vec!["--admin-token", ADMIN_TOKEN, "--demo-user", "false"];
    args.extend_from_slice(extra);
    Server::start_in(dir, shards, &args)
}

const MARKETS: [&str; 2] = ["BTCUSDT", "ETHBTC"];

/// Everything a user and the public can see, for comparing two servers.
fn state(server: &Server, users: &[User]) -> Value {
    let mut c = server.connect();
    let mut seen = Vec::new();
    for user in users {
        let account = signed(&mut c, user, "GET", "/api/v3/account", "").json();
        let mut markets = Vec::new();
        for symbol in MARKETS {
            let q = format!("symbol={symbol}&limit=1000");
            markets.push(json!({
                "orders": signed(&mut c, user, "GET", "/api/v3/allOrders", &q).json(),
                "trades": signed(&mut c, user, "GET", "/api/v3/myTrades", &q).json(),
            }));
        }
        seen.push(json!({"balances": account["balances"], "markets": markets}));
    }
    for symbol in MARKETS {
        let mut depth = server.get(&format!("/api/v3/depth?symbol={symbol}")).json();
        depth.as_object_mut().expect("depth object").remove("lastUpdateId");
        seen.push(depth);
    }
    let (_, audit) = admin(server.admin.expect("admin API"), "GET", "/admin/v1/audit", None);
    seen.push(audit);
    Value::Array(seen)
}

fn order(c: &mut Client, user: &User, symbol: &str, side: &str, qty: &str, price: &str) -> Value {
    let q = format!("symbol={symbol}&side={side}&type=LIMIT&timeInForce=GTC&quantity={qty}&price={price}");
    let r = signed(c, user, "POST", "/api/v3/order", &q);
    assert_eq!(r.status, 200, "{}", r.body_text());
    r.json()
}

/// Two users trading on a market of each shard: fills, resting orders, a
/// cancel and a withdrawal; then two users with an Ed25519 and an RSA key
/// rest an order each. `state` signs with every user's key, so a key that
/// did not survive shows.
fn trade(server: &Server) -> Vec<User> {
    let funds = [("BTC", "10"), ("USDT", "100000"), ("ETH", "100")];
    let alice = create_user(server, "alice", &funds);
    let bob = create_user(server, "bob", &funds);
    let mut c = server.connect();
    for i in 0..5 {
        let price = format!("{}", 30_000 + i);
        order(&mut c, &alice, "BTCUSDT", "SELL", "0.1", &price);
        order(&mut c, &bob, "BTCUSDT", "BUY", "0.05", &price);
        order(&mut c, &bob, "ETHBTC", "SELL", "1", &format!("0.05{i}"));
    }
    let filled = order(&mut c, &alice, "ETHBTC", "BUY", "2", "0.051");
    assert_eq!(filled["status"], "FILLED");
    let resting = order(&mut c, &alice, "BTCUSDT", "BUY", "0.2", "20000");
    let q = format!("symbol=BTCUSDT&orderId={}", resting["orderId"]);
    assert_eq!(
        signed(&mut c, &alice, "DELETE", "/api/v3/order", &q).json()["status"],
        "CANCELED"
    );
    let path = format!("/admin/v1/users/{}/withdrawals", bob.id);
    let (status, _) = admin(
        server.admin.expect("admin API"),
        "POST",
        &path,
        Some(json!({"asset": "USDT", "amount": "123.45"})),
    );
    assert_eq!(status, 200);
    let carol = create_user_with(server, "carol", &funds, "ED25519");
    let dave = create_user_with(server, "dave", &funds, "RSA");
    assert_eq!(order(&mut c, &carol, "ETHBTC", "BUY", "1", "0.02")["status"], "NEW");
    assert_eq!(order(&mut c, &dave, "BTCUSDT", "SELL", "0.1", "40000")["status"], "NEW");
    vec![alice, bob, carol, dave]
}

fn free(state: &Value, user: usize, asset: &str) -> String {
    let balances = state[user]["balances"].as_array().expect("balances");
    let entry = balances.iter().find(|b| b["asset"] == asset).expect("asset listed");
    entry["free"].as_str().expect("free").to_string()
}

#[test]
fn acknowledged_state_survives_kill_and_a_new_number_of_shards() {
    let dir = temp_data_dir();
    let mut server = start_in(&dir, 2, &[]);
    let users = trade(&server);
    let mut before = state(&server, &users);
    // Bob bought 5 × 0.05 BTC from the best asks (30000, 30000, 30001,
    // 30001, 30002: 7500.20 USDT; taker fee 0.1 % of the BTC), sold 1 ETH at
    // 0.050 and 1 at 0.051 BTC as maker (fee 0.1 % of the BTC) and withdrew
    // 123.45 USDT.
    assert_eq!(free(&before, 1, "BTC"), "10.35064900");
    assert_eq!(free(&before, 1, "USDT"), "92376.35000000");
    // Carol (Ed25519 key) locked 0.02 BTC for her bid, Dave (RSA key) 0.1
    // BTC for his ask; reading it again after each restart signs with
    // their keys.
    assert_eq!(free(&before, 2, "BTC"), "9.98000000");
    assert_eq!(free(&before, 3, "BTC"), "9.90000000");
    server.kill9();
    drop(server);

    for shards in [2, 1, 2] {
        let mut server = start_in(&dir, shards, &[]);
        assert!(server.recovered.is_some(), "no recovery line with {shards} shards");
        assert_eq!(
            state(&server, &users),
            before,
            "state after a restart with {shards} shard(s)"
        );
        // New orders get ids no order had before, on any layout.
        let mut c = server.connect();
        let placed = order(&mut c, &users[0], "ETHBTC", "BUY", "1", "0.01");
        let id = placed["orderId"].as_u64().expect("orderId");
        let known = before.to_string();
        assert!(!known.contains(&format!("\"orderId\":{id},")), "order id {id} reused");
        let cancel = format!("symbol=ETHBTC&orderId={id}");
        assert_eq!(
            signed(&mut c, &users[0], "DELETE", "/api/v3/order", &cancel).status,
            200
        );
        let after = state(&server, &users);
        assert_eq!(after[0]["balances"], before[0]["balances"]);
        before = after;
        server.terminate();
    }
}

fn segments(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn snapshots_replace_the_journal_they_cover() {
    let dir = temp_data_dir();
    // A snapshot is cut no further than the history store has absorbed;
    // the next one comes after 1000 records or `snapshot_interval_s`, and
    // once the orders below stop only the interval can bring it.
    let small = [
        "--snapshot-records",
        "1000",
        "--journal-segment-bytes",
        "131072",
        "--snapshot-interval-s",
        "1",
    ];
    let mut server = start_in(&dir, 2, &small);
    let funds = [("BTC", "100"), ("USDT", "10000000")];
    let alice = create_user(&server, "alice", &funds);
    let bob = create_user(&server, "bob", &funds);
    let mut c = server.connect();
    for i in 0..600 {
        let price = format!("{}", 30_000 + i % 7);
        order(&mut c, &alice, "BTCUSDT", "SELL", "0.01", &price);
        order(&mut c, &bob, "BTCUSDT", "BUY", "0.01", &price);
    }
    let shard0 = dir.join("shard-0").join("gen-1");
    // A snapshot is taken when its file is renamed into place (a `.tmp`
    // is one still being written) and the segments it covers are gone.
    // The snapshot thread runs at SCHED_IDLE: while the other tests of
    // this file keep both cores busy it gets no CPU, so the bound covers
    // their whole run.
    let snapshotted = eventually(Duration::from_secs(60), || {
        let names = segments(&shard0);
        let taken = names
            .iter()
            .any(|n| n.starts_with("snapshot-") && n.ends_with(".snap") && n != "snapshot-00000000000000000000.snap");
        taken && !names.contains(&"journal-00000000000000000001.seg".to_string())
    });
    assert!(
        snapshotted,
        "no snapshot in {}: {:?}",
        shard0.display(),
        segments(&shard0)
    );
    // The first segment is covered by the snapshot and deleted.
    assert!(
        !segments(&shard0).contains(&"journal-00000000000000000001.seg".to_string()),
        "{:?}",
        segments(&shard0)
    );
    let users = vec![alice, bob];
    let before = state(&server, &users);
    // Alice sold 600 × 0.01 BTC; every trade is there (memory holds the
    // newest 100 per user, the history store the others).
    assert_eq!(free(&before, 0, "BTC"), "94.00000000");
    assert_eq!(before[0]["markets"][0]["trades"].as_array().map(Vec::len), Some(600));
    server.kill9();
    drop(server);
    let server = start_in(&dir, 2, &[]);
    let recovered = server.recovered.clone().expect("a recovery line");
    let replayed: u64 = recovered
        .split(' ')
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("a record count");
    assert!(
        replayed < 4000,
        "recovery replayed {replayed} records: the snapshot was not used"
    );
    assert_eq!(state(&server, &users), before);
    drop(server);
}

#[test]
fn the_demo_user_is_created_only_in_an_empty_data_dir() {
    let dir = temp_data_dir();
    let mut first = Server::start_in(&dir, 2, &["--admin-token", ADMIN_TOKEN]);
    let (key, secret) = first.demo.clone().expect("the demo user on an empty data dir");
    let demo = User {
        id: 1,
        key,
        signer: Signer::Hmac(secret),
    };
    let before = signed(&mut first.connect(), &demo, "GET", "/api/v3/account", "").json();
    assert_eq!(free(&json!([before.clone()]), 0, "BTC"), "10.00000000");
    first.kill9();
    drop(first);
    let second = Server::start_in(&dir, 2, &["--admin-token", ADMIN_TOKEN]);
    assert!(second.demo.is_none(), "a second demo user was created");
    let after = signed(&mut second.connect(), &demo, "GET", "/api/v3/account", "").json();
    assert_eq!(after["balances"], before["balances"]);
    drop(second);
}

fn state_hashes(server: &Server) -> Value {
    let (status, body) = admin(server.admin.expect("admin API"), "GET", "/admin/v1/state", None);
    assert_eq!(status, 200);
    body
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("a copy's directory");
    for entry in std::fs::read_dir(from).expect("a directory to copy").flatten() {
        let target = to.join(entry.file_name());
        if entry.file_type().expect("a file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("a copied file");
        }
    }
}

#[test]
fn every_replay_of_the_same_journal_rebuilds_the_same_state_hash() {
    let dir = temp_data_dir();
    let mut server = start_in(&dir, 2, &[]);
    let users = trade(&server);
    let live = state_hashes(&server);
    assert_eq!(live["shards"].as_array().map(Vec::len), Some(2));
    server.kill9();
    drop(server);
    let copy = temp_data_dir();
    copy_dir(&dir, &copy);
    for data in [&dir, &copy, &dir] {
        let mut server = start_in(data, 2, &[]);
        assert_eq!(state_hashes(&server), live, "after recovering {}", data.display());
        server.terminate();
    }
    // The hash sees a change: one more resting order.
    let server = start_in(&dir, 2, &[]);
    order(&mut server.connect(), &users[0], "ETHBTC", "BUY", "1", "0.01");
    assert_ne!(state_hashes(&server), live);
    drop(server);
}

/// Regression: a user id was allocated on the shard that took the admin
/// request but journaled only at that shard's next flush, while the owner
/// acknowledged the new user; after `kill -9` the id was given out again
/// and the next user overwrote the first.
#[test]
fn user_ids_are_not_given_out_twice_across_a_crash() {
    let dir = temp_data_dir();
    let mut server = start_in(&dir, 2, &[]);
    let first: Vec<User> = (0..6)
        .map(|i| create_user(&server, &format!("first{i}"), &[]))
        .collect();
    server.kill9();
    drop(server);
    let server = start_in(&dir, 2, &[]);
    let second: Vec<User> = (0..6)
        .map(|i| create_user(&server, &format!("second{i}"), &[]))
        .collect();
    let mut ids: Vec<u64> = first.iter().chain(&second).map(|u| u.id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 12, "user ids given out twice: {ids:?}");
    for (i, user) in first.iter().enumerate() {
        let (status, details) = admin(
            server.admin.expect("admin API"),
            "GET",
            &format!("/admin/v1/users/{}", user.id),
            None,
        );
        assert_eq!(
            (status, details["name"].as_str()),
            (200, Some(format!("first{i}").as_str()))
        );
    }
    drop(server);
}

/// A shard asked to seal an epoch it had already sealed answered only at
/// its next commit, which might never come: on a fast disk about one in a
/// hundred sequential admin calls on two shards waited forever (until an
/// unrelated call made the peer commit again). Every call must be answered
/// (the client gives up after 20 s; a lost wakeup is forever).
#[test]
fn sequential_calls_on_a_fast_disk_are_all_answered() {
    let shm = Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        temp_dir_in(shm)
    } else {
        temp_data_dir()
    };
    let server = start_in(&dir, 2, &[]);
    let addr = server.admin.expect("admin API");
    let mut ids = std::collections::BTreeSet::new();
    for i in 0..2000 {
        let (status, user) = admin(addr, "POST", "/admin/v1/users", Some(json!({"name": format!("u{i}")})));
        assert_eq!(status, 200, "call {i}: {user}");
        assert!(ids.insert(user["userId"].as_u64().expect("userId")), "call {i}: {user}");
    }
    assert_eq!(ids.len(), 2000);
}

/// A tmpfs of `bytes` of the test's own.
fn tmpfs(bytes: u64) -> Tmpfs {
    Tmpfs::mount_at(&temp_data_dir().into_path(), bytes).expect("a tmpfs (the test machines run as root)")
}

/// The ids of `user`'s open BTCUSDT orders, in id order.
fn open_order_ids(c: &mut Client, user: &User) -> Vec<u64> {
    let r = signed(c, user, "GET", "/api/v3/openOrders", "symbol=BTCUSDT");
    assert_eq!(r.status, 200, "{}", r.body_text());
    let mut ids: Vec<u64> = r
        .json()
        .as_array()
        .expect("orders")
        .iter()
        .map(|o| o["orderId"].as_u64().expect("id"))
        .collect();
    ids.sort_unstable();
    ids
}

/// A LIMIT BUY far below the market, resting: its id, or the refusal.
fn rest_order(c: &mut Client, user: &User, price: u64) -> Result<u64, (u16, Value)> {
    let q = format!("symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.01&price={price}");
    let r = signed(c, user, "POST", "/api/v3/order", &q);
    match r.status {
        200 => Ok(r.json()["orderId"].as_u64().expect("orderId")),
        status => Err((status, r.json())),
    }
}

/// A server on a small disk: 128 KiB segments, no history store, no
/// snapshot while the test runs, limits lifted.
fn full_disk_args() -> Vec<&'static str> {
    let args = [
        "--journal-segment-bytes",
        "131072",
        "--history",
        "off",
        "--snapshot-records",
        "1099511627776",
        "--snapshot-interval-s",
        "86400",
    ];
    [&args[..], &common::LIMITS_OFF[..]].concat()
}

/// The refusal of a change while the journal's disk is full.
fn journal_full() -> Value {
    json!({"code": -1008, "msg": "The server's journal disk is full: orders, cancels and other changes are refused until space returns; reads keep working."})
}

/// The journal's disk fills up under order load: orders, cancels and
/// admin changes are then refused with 503 -1008 while reads keep
/// working; once space returns (the test removes its ballast) orders are
/// taken again by themselves; and after `kill -9` every acknowledged order
/// is there. Before, the first ENOSPC (preparing the next journal
/// segment) stopped the process with exit code 74.
#[test]
fn a_full_disk_refuses_changes_keeps_reads_and_resumes_when_space_returns() {
    let fs = tmpfs(2 << 20);
    let dir = fs.path.join("data");
    let ballast = fs.path.join("ballast");
    std::fs::write(&ballast, vec![1u8; 512 << 10]).expect("ballast");
    let args = full_disk_args();
    let server = start_in(&dir, 2, &args);
    let mut c = server.connect();
    let funds = [("USDT", "100000000")];
    let mut users: Vec<User> = Vec::new();
    let mut acknowledged: Vec<Vec<u64>> = Vec::new();
    let refusal = loop {
        let placed: usize = acknowledged.iter().map(Vec::len).sum();
        assert!(placed < 40_000, "the disk never filled");
        if placed % 150 == 0 {
            users.push(create_user(&server, &format!("u{}", users.len()), &funds));
            acknowledged.push(Vec::new());
        }
        let user = users.len() - 1;
        match rest_order(&mut c, &users[user], 2_000 + (placed % 97) as u64) {
            Ok(id) => acknowledged[user].push(id),
            Err(refusal) => break refusal,
        }
    };
    let expected = journal_full();
    assert_eq!(refusal, (503, expected.clone()));
    // Reads work: every acknowledged order of a user is open.
    for (user, ids) in users.iter().zip(&acknowledged) {
        assert_eq!(&open_order_ids(&mut c, user), ids);
    }
    assert_eq!(server.get("/api/v3/depth?symbol=BTCUSDT&limit=5").status, 200);
    // Cancels and admin changes need the journal too.
    let first = acknowledged[0][0];
    let r = signed(
        &mut c,
        &users[0],
        "DELETE",
        "/api/v3/order",
        &format!("symbol=BTCUSDT&orderId={first}"),
    );
    assert_eq!((r.status, r.json()), (503, expected.clone()));
    let (status, body) = admin(
        server.admin.expect("admin API"),
        "POST",
        "/admin/v1/users",
        Some(json!({"name": "late"})),
    );
    assert_eq!((status, body), (503, expected));
    // Space returns: orders are taken again, without a restart.
    std::fs::remove_file(&ballast).expect("ballast removed");
    let user = users.len() - 1;
    let mut resumed = None;
    assert!(eventually(Duration::from_secs(20), || {
        resumed = rest_order(&mut c, &users[user], 1_999).ok();
        resumed.is_some()
    }));
    acknowledged[user].push(resumed.expect("an order after space returned"));
    acknowledged[user].sort_unstable();
    // Nothing acknowledged was lost. Recovery writes a new generation
    // (snapshots and first segments) before the old one goes: the
    // operator gives the disk room for it.
    let mut server = server;
    server.kill9();
    drop(server);
    fs.resize(16 << 20).expect("a larger tmpfs");
    let server = start_in(&dir, 2, &args);
    let mut c = server.connect();
    for (user, ids) in users.iter().zip(&acknowledged) {
        assert_eq!(&open_order_ids(&mut c, user), ids);
    }
    drop(server);
}

/// A failed fdatasync (injected through `TRADSYS_TEST_FAIL_SYNC_AFTER`):
/// the work it covered is never acknowledged, the process stops with exit
/// code 74 and one clear line (a failed fdatasync cannot be retried: the
/// kernel may have dropped the dirty pages), and after a restart every
/// acknowledged order is there.
#[test]
fn a_failed_fdatasync_acknowledges_nothing_after_it_and_stops() {
    use std::io::BufRead;
    let dir = temp_data_dir();
    let markets = concat!(env!("CARGO_MANIFEST_DIR"), "/shards/markets.toml");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tradsys"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--shards",
            "1",
            "--markets",
            markets,
        ])
        .args([
            "--admin-listen",
            "127.0.0.1:0",
            "--admin-token",
            ADMIN_TOKEN,
            "--demo-user",
            "false",
        ])
        .args(["--history", "off", "--data-dir"])
        .arg(&dir)
        .env("TRADSYS_TEST_FAIL_SYNC_AFTER", "60")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("tradsys starts");
    let mut lines = std::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let (mut api, mut admin_addr) = (None, None);
    while api.is_none() || admin_addr.is_none() {
        let line = lines.next().expect("a start-up line").expect("utf-8");
        let words: Vec<&str> = line.split(' ').collect();
        match words.as_slice() {
            ["shard", _, "core", _, "listening", addr] => api = Some(addr.parse().expect("an address")),
            ["admin", "listening", addr] => admin_addr = Some(addr.parse().expect("an address")),
            _ => {}
        }
    }
    std::thread::spawn(move || for _ in lines {});
    let api: std::net::SocketAddr = api.expect("the API");
    let admin_addr: std::net::SocketAddr = admin_addr.expect("the admin API");
    let user = common::account::create_user_on(admin_addr, "syncer", &[("USDT", "100000000")], "HMAC_SHA256");
    // Orders until the server stops answering; each 200 is acknowledged.
    let mut acknowledged = Vec::new();
    for i in 0..1_000u64 {
        let Some(mut c) = Client::try_connect(api) else { break };
        let q = format!(
            "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.01&price={}",
            2_000 + i % 97
        );
        c.send(&common::account::signed_request(&user, "POST", "/api/v3/order", &q));
        match c.try_response() {
            Some(r) if r.status == 200 => acknowledged.push(r.json()["orderId"].as_u64().expect("orderId")),
            Some(r) => panic!("order {i}: {} {}", r.status, r.body_text()),
            None => break,
        }
    }
    let status = common::wait_exit(&mut child, Duration::from_secs(30)).expect("the server stops");
    assert_eq!(status.code(), Some(74));
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr).expect("utf-8");
    assert!(
        stderr.contains("journal: journal: syncing")
            && stderr.contains("injected by TRADSYS_TEST_FAIL_SYNC_AFTER")
            && stderr.contains("stopping: nothing can be made durable"),
        "{stderr}"
    );
    assert!(
        !acknowledged.is_empty() && acknowledged.len() < 1_000,
        "{}",
        acknowledged.len()
    );
    // Every acknowledged order survived; nothing after the failure was.
    let server = start_in(&dir, 1, &["--history", "off"]);
    let mut c = server.connect();
    let open = open_order_ids(&mut c, &user);
    // The order whose commit failed may be there too (it may have reached
    // the disk), unacknowledged; nothing acknowledged is missing.
    assert!(
        open.len() - acknowledged.len() <= 1,
        "{} open, {} acknowledged",
        open.len(),
        acknowledged.len()
    );
    assert_eq!(&open[..acknowledged.len()], &acknowledged[..]);
    drop(server);
}

/// A snapshot that cannot be written (injected through
/// `TRADSYS_TEST_FAIL_SNAPSHOT_WRITES_AFTER`, failing as a full disk
/// does) costs nothing but the snapshot: trading goes on, the failed file's
/// temporary is removed, the journal it would have replaced is kept, the
/// next attempt is made later, and after `kill -9` recovery replays the
/// journal to every acknowledged order.
#[test]
fn a_failed_snapshot_write_keeps_trading_and_the_journal() {
    let dir = temp_data_dir();
    let args = [
        "--admin-token",
        ADMIN_TOKEN,
        "--demo-user",
        "false",
        "--history",
        "off",
        "--snapshot-records",
        "1000",
        "--snapshot-interval-s",
        "1",
    ];
    // The first two files are the start-up generation's snapshot and
    // CURRENT.
    let hook = [("TRADSYS_TEST_FAIL_SNAPSHOT_WRITES_AFTER", "2")];
    let args = [&args[..], &common::LIMITS_OFF[..]].concat();
    let mut server = Server::start_in_env(&dir, 1, &args, &hook);
    let user = create_user(&server, "snapper", &[("USDT", "100000000")]);
    let mut c = server.connect();
    // 1,100 records, more than a snapshot waits for: 525 orders placed
    // and cancelled, then 50 left open (a symbol takes at most 200).
    let mut acknowledged = Vec::new();
    let mut price = 1_000;
    for i in 0..575 {
        let id = rest_order(&mut c, &user, price).expect("an order is taken");
        price += 1;
        if i < 525 {
            let r = signed(
                &mut c,
                &user,
                "DELETE",
                "/api/v3/order",
                &format!("symbol=BTCUSDT&orderId={id}"),
            );
            assert_eq!(r.status, 200, "{}", r.body_text());
        } else {
            acknowledged.push(id);
        }
    }
    let failed = eventually(Duration::from_secs(60), || {
        let logs = server.logs();
        logs.contains("failed (will retry)") && logs.contains("injected by TRADSYS_TEST_FAIL_SNAPSHOT_WRITES_AFTER")
    });
    assert!(failed, "no failed snapshot in the logs:\n{}", server.logs());
    // Trading is untouched; only the start-up snapshot and the whole
    // journal are on disk, no temporary file.
    acknowledged.push(rest_order(&mut c, &user, price).expect("an order after the failure"));
    let gen = dir.join("shard-0").join("gen-1");
    assert_eq!(
        segments(&gen),
        ["journal-00000000000000000001.seg", "snapshot-00000000000000000000.snap"],
        "{}",
        gen.display()
    );
    assert_eq!(open_order_ids(&mut c, &user), acknowledged);
    server.kill9();
    drop(server);
    let server = start_in(&dir, 1, &["--history", "off"]);
    let mut c = server.connect();
    assert_eq!(open_order_ids(&mut c, &user), acknowledged);
    drop(server);
}

/// The snapshot of a new generation cannot be written at start-up: the
/// start fails with one line naming the file and the cause, the data
/// directory is left as it was, and the next start recovers it.
#[test]
fn a_failed_start_up_snapshot_stops_the_start_and_loses_nothing() {
    let dir = temp_data_dir();
    let server = start_in(&dir, 1, &["--history", "off"]);
    let user = create_user(&server, "starter", &[("USDT", "100000000")]);
    let mut c = server.connect();
    let id = rest_order(&mut c, &user, 1_000).expect("an order is taken");
    drop(c);
    drop(server);
    let markets = concat!(env!("CARGO_MANIFEST_DIR"), "/shards/markets.toml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tradsys"))
        .args(["serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .args(["--shards", "1", "--history", "off", "--markets", markets, "--data-dir"])
        .arg(&dir)
        .env("TRADSYS_TEST_FAIL_SNAPSHOT_WRITES_AFTER", "0")
        .output()
        .expect("tradsys runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(".snap.tmp: no space left on device (injected by TRADSYS_TEST_FAIL_SNAPSHOT_WRITES_AFTER)"),
        "{stderr}"
    );
    let server = start_in(&dir, 1, &["--history", "off"]);
    let mut c = server.connect();
    assert_eq!(open_order_ids(&mut c, &user), [id]);
    drop(server);
}

/// Every file under `dir` whose name ends with `suffix`.
fn files_ending(dir: &Path, suffix: &str) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_ending(&path, suffix));
        } else if path.to_string_lossy().ends_with(suffix) {
            found.push(path);
        }
    }
    found
}

/// A snapshot whose checksum holds but whose state is impossible (a free
/// balance one unit above what the deposits and withdrawals allow, which
/// only something that can already write the data directory can make)
/// stops the start with exit code 1 and the broken invariant. Before, it
/// was trusted and the server ran with money from nowhere.
#[test]
fn a_snapshot_with_an_impossible_balance_stops_the_start() {
    let dir = temp_data_dir();
    let server = start_in(&dir, 1, &["--history", "off"]);
    let user = create_user(&server, "alice", &[("USDT", "50000.00000123")]);
    let path = format!("/admin/v1/users/{}/withdrawals", user.id);
    let body = json!({"asset": "USDT", "amount": "10000"});
    let (status, _) = admin(server.admin.expect("admin API"), "POST", &path, Some(body));
    assert_eq!(status, 200);
    drop(server);
    // The next start writes the state as its new generation's snapshot.
    drop(start_in(&dir, 1, &["--history", "off"]));
    let snapshots = files_ending(&dir, ".snap");
    assert_eq!(snapshots.len(), 1, "{snapshots:?}");
    let mut bytes = std::fs::read(&snapshots[0]).expect("the snapshot");
    let free = 4_000_000_000_123_i64.to_le_bytes();
    let at: Vec<usize> = (0..bytes.len() - 8).filter(|&i| bytes[i..i + 8] == free).collect();
    assert_eq!(at.len(), 1, "the free balance is written once");
    bytes[at[0]..at[0] + 8].copy_from_slice(&4_000_000_000_124_i64.to_le_bytes());
    let end = bytes.len() - 4;
    let crc = crc32c::crc32c(&bytes[..end]);
    bytes[end..].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&snapshots[0], &bytes).expect("the snapshot rewritten");
    let markets = concat!(env!("CARGO_MANIFEST_DIR"), "/shards/markets.toml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tradsys"))
        .args(["serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .args(["--shards", "1", "--history", "off", "--markets", markets, "--data-dir"])
        .arg(&dir)
        .output()
        .expect("tradsys runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let broken = "/shard-0/gen-2: snapshot of shard 0: not a consistent state: accounts: asset 1 is not \
                  conserved: 4000000000124 held and 0 in fees against Some(4000000000123) that came in";
    assert!(stderr.contains(broken), "{stderr}");
}

/// The sum of a metric over its series.
fn metric_sum(server: &Server, name: &str) -> f64 {
    server
        .metrics()
        .samples
        .iter()
        .filter(|s| s.name == name)
        .map(|s| s.value)
        .sum()
}

/// The history store (SQLite, in the data directory) on a full disk: it
/// can no longer write, but it still answers, so `myTrades` and
/// `allOrders` keep working (the rows not yet written come from the
/// backlog) and its failed writes do not open the breaker. Before, they
/// did: every history read was refused with 503 -1001 until space came
/// back.
#[test]
fn a_full_disk_keeps_history_reads_working() {
    let fs = tmpfs(4 << 20);
    let dir = fs.path.join("data");
    let quiet = [
        "--journal-segment-bytes",
        "131072",
        "--snapshot-records",
        "1099511627776",
    ];
    let args = [&quiet[..], &["--snapshot-interval-s", "86400"], &common::LIMITS_OFF[..]].concat();
    let server = start_in(&dir, 1, &args);
    let funds = [("BTC", "10"), ("USDT", "1000000")];
    let alice = create_user(&server, "alice", &funds);
    let bob = create_user(&server, "bob", &funds);
    let mut c = server.connect();
    fill_up(&fs.path.join("ballast")).expect("the ballast");
    // Trades until the writer meets the full disk.
    let mut trades = 0;
    while metric_sum(&server, "tradsys_history_errors_total") == 0.0 {
        assert!(trades < 300, "the history store never failed on the full disk");
        order(&mut c, &alice, "BTCUSDT", "SELL", "0.001", "30000");
        order(&mut c, &bob, "BTCUSDT", "BUY", "0.001", "30000");
        trades += 1;
    }
    // The writer retries its batch: more failures than open the breaker
    // (history_breaker_failures_min, 5).
    assert!(eventually(Duration::from_secs(60), || {
        metric_sum(&server, "tradsys_history_errors_total") >= 6.0
    }));
    let q = "symbol=BTCUSDT&limit=1000";
    let r = signed(&mut c, &alice, "GET", "/api/v3/myTrades", q);
    assert_eq!(r.status, 200, "{}", r.body_text());
    assert_eq!(r.json().as_array().map(Vec::len), Some(trades));
    let r = signed(&mut c, &bob, "GET", "/api/v3/allOrders", q);
    assert_eq!(r.status, 200, "{}", r.body_text());
    let orders = r.json();
    let filled = orders
        .as_array()
        .into_iter()
        .flatten()
        .filter(|o| o["status"] == "FILLED");
    assert_eq!(filled.count(), trades);
    assert_eq!(metric_sum(&server, "tradsys_history_breaker_state"), 0.0);
    assert_eq!(metric_sum(&server, "tradsys_history_breaker_rejections_total"), 0.0);
    drop(server);
}

/// `kill -9` while the journal's disk is full, in cycles: the refusals
/// were exact, a start on the still-full disk stops with exit code 1 and
/// the cause (recovery needs room for a new generation) without touching
/// the data directory, and once room returns the start recovers every
/// acknowledged order; then the disk fills again.
#[test]
fn kill_9_on_a_full_disk_loses_nothing_acknowledged_across_cycles() {
    let fs = tmpfs(4 << 20);
    let dir = fs.path.join("data");
    let args = full_disk_args();
    let funds = [("USDT", "100000000")];
    let expected = journal_full();
    let mut users: Vec<User> = Vec::new();
    let mut acknowledged: Vec<Vec<u64>> = Vec::new();
    let markets = concat!(env!("CARGO_MANIFEST_DIR"), "/shards/markets.toml");
    for cycle in 0..3 {
        let mut server = start_in(&dir, 2, &args);
        let mut c = server.connect();
        for (user, ids) in users.iter().zip(&acknowledged) {
            assert_eq!(&open_order_ids(&mut c, user), ids, "cycle {cycle}: after recovery");
        }
        // Users first: creating one needs the journal too. Each may rest
        // 150 orders (MAX_NUM_ORDERS is 200 per symbol).
        let first = users.len();
        for u in 0..8 {
            users.push(create_user(&server, &format!("c{cycle}u{u}"), &funds));
            acknowledged.push(Vec::new());
        }
        let ballast = fs.path.join("ballast");
        fill_up(&ballast).expect("the ballast");
        let mut refusal = None;
        'placing: for user in first..users.len() {
            for i in 0..150u64 {
                match rest_order(&mut c, &users[user], 2_000 + i) {
                    Ok(id) => acknowledged[user].push(id),
                    Err(refused) => {
                        refusal = Some(refused);
                        break 'placing;
                    }
                }
            }
        }
        assert_eq!(
            refusal,
            Some((503, expected.clone())),
            "cycle {cycle}: the disk never filled"
        );
        server.kill9();
        drop(server);
        // A start on the full disk cannot write the new generation.
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tradsys"))
            .args(["serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .args(["--shards", "2", "--markets", markets, "--data-dir"])
            .arg(&dir)
            .args(&args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("tradsys runs");
        let status = common::wait_exit(&mut child, Duration::from_secs(30));
        if status.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr).expect("utf-8");
        assert_eq!(status.and_then(|s| s.code()), Some(1), "cycle {cycle}: {stderr}");
        assert!(stderr.contains("No space left on device"), "cycle {cycle}: {stderr}");
        std::fs::remove_file(&ballast).expect("ballast removed");
    }
    let server = start_in(&dir, 2, &args);
    let mut c = server.connect();
    for (user, ids) in users.iter().zip(&acknowledged) {
        assert_eq!(&open_order_ids(&mut c, user), ids, "after the last cycle");
    }
    drop(server);
}
