//! Background jobs as a user and an operator meet them: a trade history
//! export asked for through the signed `/tradsys/v1/export` endpoints runs
//! as a job and equals myTrades row for row; with Redis, a `tradsys
//! worker` killed while it holds a job has it reclaimed and finished by
//! another, and a job that keeps failing ends as a dead letter that the
//! admin API lists and re-queues. Redis is a real `redis-server` of the
//! test's own.

mod common;

use common::account::{admin, create_user, signed, trade_csv, User, TRADES_HEADER};
use common::{eventually, signal, wait_exit, Client, Server, ADMIN_TOKEN};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tradsys_redistest::RedisServer;

const WAIT: Duration = Duration::from_secs(60);
const FUNDS: [(&str, &str); 2] = [("BTC", "1000"), ("USDT", "100000000")];

fn start(extra: &[&str]) -> Server {
    let mut args = vec![
        "--admin-token",
        ADMIN_TOKEN,
        "--demo-user",
        "false",
        "--durability",
        "batch",
        "--orders-per-10s-max",
        "1000000",
        "--orders-per-day-max",
        "1000000",
        "--request-weight-per-minute-max",
        "100000000",
        "--raw-requests-per-5m-max",
        "100000000",
        // 100,000 trades at once: the store catches up from memory.
        "--history-backlog-bytes-max",
        "1073741824",
    ];
    args.extend_from_slice(extra);
    Server::start(2, &args)
}

/// `count` trades of `buyer` (taker) against one resting sell of
/// `seller`, sent pipelined in batches.
fn trades(server: &Server, seller: &User, buyer: &User, count: usize) {
    let mut c = server.connect();
    let total = format!("{}.{:03}", count / 1000, count % 1000);
    let r = signed(
        &mut c,
        seller,
        "POST",
        "/api/v3/order",
        &format!("symbol=BTCUSDT&side=SELL&type=LIMIT&timeInForce=GTC&quantity={total}&price=30000"),
    );
    assert_eq!(r.status, 200, "{}", r.body_text());
    let buy = "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=IOC&quantity=0.001&price=30000";
    let mut left = count;
    while left > 0 {
        let batch = left.min(500);
        let mut requests = String::new();
        for _ in 0..batch {
            let query = format!("{buy}&timestamp={}", common::account::now_ms());
            let signature = buyer.signer.sign(query.as_bytes());
            requests.push_str(&format!(
                "POST /api/v3/order?{query}&signature={signature} HTTP/1.1\r\nX-MBX-APIKEY: {}\r\n\r\n",
                buyer.key
            ));
        }
        c.send(&requests);
        for _ in 0..batch {
            let r = c.response();
            assert_eq!((r.status, r.json()["status"].as_str()), (200, Some("FILLED")));
        }
        left -= batch;
    }
}

/// Every trade of `user` in BTCUSDT, oldest first, read with myTrades.
fn my_trades(server: &Server, user: &User) -> Vec<Value> {
    let mut c = server.connect();
    let mut all: Vec<Value> = Vec::new();
    loop {
        let from = all.last().map_or(0, |t| t["id"].as_u64().expect("id") + 1);
        let r = signed(
            &mut c,
            user,
            "GET",
            "/api/v3/myTrades",
            &format!("symbol=BTCUSDT&fromId={from}&limit=1000"),
        );
        assert_eq!(r.status, 200, "{}", r.body_text());
        let page = r.json().as_array().expect("an array").clone();
        if page.is_empty() {
            return all;
        }
        all.extend(page);
    }
}

/// Waits until every shard's history backlog is written.
fn drained(server: &Server) -> bool {
    eventually(WAIT, || {
        let metrics = server.metrics();
        (0..2).all(|shard| metrics.value("tradsys_history_backlog_rows", &[("shard", &shard.to_string())]) == Some(0.0))
    })
}

fn export_status(c: &mut Client, user: &User, id: &str) -> Value {
    let r = signed(c, user, "GET", "/tradsys/v1/export", &format!("exportId={id}"));
    assert_eq!(r.status, 200, "{}", r.body_text());
    r.json()
}

/// Asks for an export of every trade of `user`; returns its id.
fn create_export(c: &mut Client, user: &User) -> String {
    let r = signed(c, user, "POST", "/tradsys/v1/export", "startTime=0");
    assert_eq!(r.status, 200, "{}", r.body_text());
    let created = r.json();
    assert_eq!(created["status"], "PENDING");
    created["exportId"].as_str().expect("exportId").to_string()
}

fn done(c: &mut Client, user: &User, id: &str) -> Value {
    let mut last = Value::Null;
    let finished = eventually(WAIT, || {
        last = export_status(c, user, id);
        last["status"] == "DONE"
    });
    assert!(finished, "the export never finished: {last}");
    last
}

/// The CSV of a finished export, de-chunked.
fn download(c: &mut Client, user: &User, id: &str) -> String {
    let r = signed(c, user, "GET", "/tradsys/v1/export/download", &format!("exportId={id}"));
    assert_eq!(r.status, 200, "{}", r.body_text());
    assert_eq!(r.header("content-type"), Some("text/csv"));
    r.body_text()
}

#[test]
fn an_export_of_100000_trades_equals_my_trades() {
    let server = start(&[]);
    let (seller, buyer) = (
        create_user(&server, "seller", &FUNDS),
        create_user(&server, "buyer", &FUNDS),
    );
    trades(&server, &seller, &buyer, 100_000);
    assert!(drained(&server), "the store never caught up");
    let expected = my_trades(&server, &buyer);
    assert_eq!(expected.len(), 100_000);

    let mut c = server.connect();
    let id = create_export(&mut c, &buyer);
    let status = done(&mut c, &buyer, &id);
    let csv = download(&mut c, &buyer, &id);
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some(TRADES_HEADER));
    let rows: Vec<&str> = lines.collect();
    let wanted: Vec<String> = expected.iter().map(|t| trade_csv(buyer.id, t)).collect();
    assert_eq!(rows.len(), wanted.len());
    assert!(
        rows.iter().zip(&wanted).all(|(a, b)| a == b),
        "the export differs from myTrades"
    );
    assert_eq!(
        (status["rows"].as_u64(), status["bytes"].as_u64()),
        (Some(100_000), Some(csv.len() as u64))
    );
    assert_eq!(status["startTime"], 0);
    assert!(status["finishedTime"].as_u64() >= status["createdTime"].as_u64());

    // Nobody else's, and nothing unknown.
    let unknown = (400, (-2013, "Unknown export.".to_string()));
    for (user, query) in [
        (&seller, format!("exportId={id}")),
        (&buyer, "exportId=nosuchexport".to_string()),
        (&buyer, "exportId=../../etc".to_string()),
    ] {
        for path in ["/tradsys/v1/export", "/tradsys/v1/export/download"] {
            let r = signed(&mut c, user, "GET", path, &query);
            assert_eq!((r.status, r.error()), unknown, "{path}?{query}");
        }
    }
    let r = signed(&mut c, &buyer, "GET", "/tradsys/v1/export", "");
    assert_eq!((r.status, r.error().0), (400, -1102));
    let r = signed(&mut c, &buyer, "POST", "/tradsys/v1/export", "startTime=5&endTime=4");
    assert_eq!((r.status, r.error().0), (400, -1128));
    let r = signed(&mut c, &buyer, "POST", "/tradsys/v1/export", "symbol=NOPE");
    assert_eq!((r.status, r.error().0), (400, -1121));
    // The job ran on a shard's worker and was acknowledged.
    let metrics = server.metrics();
    let total = |name: &str| -> f64 {
        (0..2)
            .filter_map(|s| metrics.value(name, &[("shard", &s.to_string())]))
            .sum()
    };
    assert_eq!(
        (
            total("tradsys_jobs_succeeded_total"),
            total("tradsys_jobs_failed_total")
        ),
        (1.0, 0.0)
    );
}

/// A `tradsys worker` process, killed when dropped (a failed test leaves
/// none behind).
struct Worker(Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `tradsys worker` process on `redis`, with the server's files.
fn worker(redis: &RedisServer, server: &Server, extra: &[&str], env: &[(&str, &str)]) -> Worker {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tradsys"))
        .args(["worker", "--shards", "1", "--redis", &redis.url()])
        .arg("--data-dir")
        .arg(&server.data_dir)
        .args(["--jobs-visibility-timeout-ms", "1500", "--jobs-poll-ms", "10"])
        .args([
            "--jobs-attempts-max",
            "2",
            "--jobs-backoff-base-ms",
            "10",
            "--jobs-backoff-max-ms",
            "10",
        ])
        .args(extra)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("tradsys worker starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next().expect("a start-up line").expect("utf-8");
    assert_eq!(
        first,
        format!("worker 0 consuming redis://127.0.0.1:{}/0", redis.port())
    );
    // The rest (the summary at exit) is read by `stop`.
    child.stdout = None;
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            println!("{line}");
        }
    });
    Worker(child)
}

/// Stops a worker as an operator would (SIGTERM): it finishes what it
/// holds and exits 0.
fn stop(mut worker: Worker) {
    signal(&worker.0, "TERM");
    assert!(wait_exit(&mut worker.0, WAIT).is_some_and(|s| s.success()));
}

/// The queue as the admin API shows it (one entry: the Redis queue).
fn queue(server: &Server) -> Value {
    let (status, body) = admin(server.admin.expect("admin"), "GET", "/admin/v1/jobs", None);
    assert_eq!(status, 200, "{body}");
    body[0].clone()
}

#[test]
fn a_dead_workers_job_is_reclaimed_and_a_failing_job_becomes_a_dead_letter() {
    let redis = RedisServer::start();
    let url = redis.url();
    let server = start(&["--redis", &url, "--jobs-workers-in-server", "false"]);
    let (seller, buyer) = (
        create_user(&server, "seller", &FUNDS),
        create_user(&server, "buyer", &FUNDS),
    );
    trades(&server, &seller, &buyer, 10);
    assert!(drained(&server));
    let expected: Vec<String> = my_trades(&server, &buyer)
        .iter()
        .map(|t| trade_csv(buyer.id, t))
        .collect();
    let mut c = server.connect();

    // A worker that holds its job for a minute, killed (-9) while it
    // holds it.
    let slow = worker(&redis, &server, &[], &[("TRADSYS_TEST_JOB_START_DELAY_MS", "60000")]);
    let id = create_export(&mut c, &buyer);
    assert!(
        eventually(WAIT, || queue(&server)["running"] == 1),
        "{}",
        queue(&server)
    );
    drop(slow);
    assert_eq!(export_status(&mut c, &buyer, &id)["status"], "PENDING");
    // Another worker takes it over after the visibility timeout.
    let other = worker(&redis, &server, &[], &[]);
    let status = done(&mut c, &buyer, &id);
    assert_eq!(status["rows"], 10);
    let csv = download(&mut c, &buyer, &id);
    assert_eq!(csv, format!("{TRADES_HEADER}\n{}\n", expected.join("\n")));
    stop(other);

    // A worker without the history store fails every export: after two
    // attempts the job is a dead letter, and the export FAILED.
    let broken = worker(&redis, &server, &["--history", "off"], &[]);
    let id = create_export(&mut c, &buyer);
    let mut last = Value::Null;
    assert!(
        eventually(WAIT, || {
            last = export_status(&mut c, &buyer, &id);
            last["status"] == "FAILED"
        }),
        "{last}"
    );
    assert_eq!(last["error"], "no history store here");
    let shown = queue(&server);
    assert_eq!(
        (&shown["queue"], &shown["dead"], &shown["running"]),
        (&"redis".into(), &1.into(), &0.into())
    );
    let letter = &shown["deadLetters"][0];
    assert_eq!(
        (
            &letter["jobId"],
            &letter["kind"],
            &letter["priority"],
            &letter["attempts"],
            &letter["error"]
        ),
        (
            &id.clone().into(),
            &"export".into(),
            &"normal".into(),
            &2.into(),
            &"no history store here".into()
        )
    );
    stop(broken);

    // Re-queued with a worker that can read the store: it runs again and
    // finishes.
    let fixed = worker(&redis, &server, &[], &[]);
    let letter_id = letter["id"].as_str().expect("id").to_string();
    let path = format!("/admin/v1/jobs/dead/{letter_id}/requeue");
    let (status, body) = admin(server.admin.expect("admin"), "POST", &path, None);
    assert_eq!((status, body), (200, serde_json::json!({"requeued": true})));
    let (status, _) = admin(server.admin.expect("admin"), "POST", &path, None);
    assert_eq!(status, 404, "a dead letter is re-queued once");
    let status = done(&mut c, &buyer, &id);
    assert_eq!(status["rows"], 10);
    assert_eq!(queue(&server)["dead"], 0);
    stop(fixed);
}

#[test]
fn a_worker_needs_redis() {
    let out = Command::new(env!("CARGO_BIN_EXE_tradsys"))
        .args(["worker", "--data-dir", "/nonexistent-tradsys-dir"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "tradsys worker: a worker process needs --redis: without it, jobs run inside the server\n"
    );
}

/// One POST a webhook receiver got, and what it answered.
#[derive(Clone, Debug)]
struct Received {
    event_id: String,
    signature: String,
    body: String,
    answered: u16,
}

/// A webhook receiver on a port of its own: it answers 500 while `fail`
/// says so (given how many requests came before), else 200, and keeps
/// every request it got.
struct Receiver {
    port: u16,
    got: std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
    failing: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Receiver {
    fn start(fail_first: usize) -> Receiver {
        Receiver::start_with(fail_first, None)
    }

    /// A receiver that speaks TLS with the fixture certificate for
    /// 127.0.0.1 (signed by tests/fixtures/tls/ca.pem).
    fn start_tls(fail_first: usize) -> Receiver {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tls");
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(format!("{dir}/server.pem"))
            .expect("server.pem")
            .map(|c| c.expect("a certificate"))
            .collect();
        let key = PrivateKeyDer::from_pem_file(format!("{dir}/server.key")).expect("server.key");
        #[allow(deprecated)]
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("the fixture certificate");
        Receiver::start_with(fail_first, Some(std::sync::Arc::new(config)))
    }

    fn start_with(fail_first: usize, tls: Option<std::sync::Arc<rustls::ServerConfig>>) -> Receiver {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Received>::new()));
        let failing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (got_c, failing_c) = (got.clone(), failing.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let (got, failing, tls) = (got_c.clone(), failing_c.clone(), tls.clone());
                std::thread::spawn(move || match tls {
                    None => serve_hooks(stream, &got, &failing, fail_first),
                    Some(config) => {
                        let Ok(conn) = rustls::ServerConnection::new(config) else {
                            return;
                        };
                        serve_hooks(rustls::StreamOwned::new(conn, stream), &got, &failing, fail_first)
                    }
                });
            }
        });
        Receiver { port, got, failing }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    fn https_url(&self) -> String {
        format!("https://127.0.0.1:{}/hook", self.port)
    }

    fn got(&self) -> Vec<Received> {
        self.got.lock().expect("lock").clone()
    }

    fn accepted(&self) -> Vec<Received> {
        self.got().into_iter().filter(|r| r.answered == 200).collect()
    }
}

/// Answers webhook POSTs on one connection (see [`Receiver`]).
fn serve_hooks(
    mut stream: impl std::io::Read + std::io::Write,
    got: &std::sync::Mutex<Vec<Received>>,
    failing: &std::sync::atomic::AtomicBool,
    fail_first: usize,
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let head_end = loop {
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let header = |name: &str| {
            head.lines()
                .find_map(|l| l.split_once(": ").filter(|(n, _)| n.eq_ignore_ascii_case(name)))
                .map(|(_, v)| v.to_string())
                .unwrap_or_default()
        };
        let length: usize = header("content-length").parse().unwrap_or(0);
        while buf.len() < head_end + length {
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body = String::from_utf8_lossy(&buf[head_end..head_end + length]).to_string();
        buf.drain(..head_end + length);
        let mut got = got.lock().expect("lock");
        let fail = got.len() < fail_first || failing.load(std::sync::atomic::Ordering::SeqCst);
        let answered = if fail { 500 } else { 200 };
        got.push(Received {
            event_id: header("x-tradsys-event-id"),
            signature: header("x-tradsys-signature"),
            body,
            answered,
        });
        drop(got);
        let reply = format!("HTTP/1.1 {answered} X\r\nContent-Length: 0\r\n\r\n");
        if stream.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

/// Registers `user`'s webhook; returns its secret.
fn register(server: &Server, user: &User, url: &str) -> String {
    let path = format!("/admin/v1/users/{}/webhook", user.id);
    let (status, body) = admin(
        server.admin.expect("admin"),
        "PUT",
        &path,
        Some(serde_json::json!({"url": url})),
    );
    assert_eq!(
        (status, &body["url"], &body["userId"]),
        (200, &url.into(), &user.id.into()),
        "{body}"
    );
    let secret = body["secret"].as_str().expect("secret");
    common::note_secret(secret);
    secret.to_string()
}

#[test]
fn webhooks_get_every_fill_and_balance_change_once_in_order_after_retries() {
    let server = start(&["--jobs-backoff-base-ms", "10", "--jobs-backoff-max-ms", "40"]);
    let (seller, buyer) = (
        create_user(&server, "seller", &FUNDS),
        create_user(&server, "buyer", &FUNDS),
    );
    let receiver = Receiver::start(3);
    let secret = register(&server, &seller, &receiver.url());
    let (status, shown) = admin(
        server.admin.expect("admin"),
        "GET",
        &format!("/admin/v1/users/{}/webhook", seller.id),
        None,
    );
    assert_eq!(
        (status, shown),
        (200, serde_json::json!({"userId": seller.id, "url": receiver.url()}))
    );
    // A deposit, then three fills of a resting sell (placing it sends nothing).
    common::account::deposit(server.admin.expect("admin"), seller.id, "USDT", "1");
    trades(&server, &seller, &buyer, 3);

    assert!(
        eventually(WAIT, || receiver.accepted().len() >= 8),
        "{:?}",
        receiver.got()
    );
    let got = receiver.got();
    // The first event was refused three times, then taken; every other
    // event once: 11 requests, 8 events, in the order they happened.
    assert_eq!(got.len(), 11, "{got:?}");
    assert!(got[..4].iter().all(|r| r.event_id == got[0].event_id), "{got:?}");
    assert_eq!(
        got.iter().map(|r| r.answered).collect::<Vec<_>>(),
        [500, 500, 500, 200, 200, 200, 200, 200, 200, 200, 200]
    );
    let accepted = receiver.accepted();
    let kinds: Vec<String> = accepted
        .iter()
        .map(|r| {
            let event: Value = serde_json::from_str(&r.body).expect("JSON");
            format!(
                "{}{}",
                event["e"].as_str().expect("e"),
                event["x"].as_str().map(|x| format!(" {x}")).unwrap_or_default()
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "balanceUpdate",
            "outboundAccountPosition",
            "executionReport TRADE",
            "outboundAccountPosition",
            "executionReport TRADE",
            "outboundAccountPosition",
            "executionReport TRADE",
            "outboundAccountPosition"
        ]
    );
    let mut ids: Vec<u64> = accepted
        .iter()
        .map(|r| r.event_id.rsplit('-').next().expect("seq").parse().expect("a number"))
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    ids.dedup();
    assert_eq!(ids.len(), 8);
    for r in &accepted {
        assert_eq!(
            r.signature,
            common::account::Signer::Hmac(secret.clone()).sign(r.body.as_bytes())
        );
        assert!(r.event_id.starts_with(&format!("{}-", seller.id)), "{}", r.event_id);
    }
    // Unregistered: a deposit sends nothing more.
    let path = format!("/admin/v1/users/{}/webhook", seller.id);
    assert_eq!(admin(server.admin.expect("admin"), "DELETE", &path, None).0, 200);
    assert_eq!(admin(server.admin.expect("admin"), "GET", &path, None).0, 404);
    let (status, body) = admin(
        server.admin.expect("admin"),
        "PUT",
        &path,
        Some(serde_json::json!({"url": "ftp://127.0.0.1/hook"})),
    );
    assert_eq!((status, body["code"].as_i64()), (400, Some(-1102)));
}

#[test]
fn a_webhook_that_always_fails_ends_in_the_dead_letters_and_is_requeued() {
    let redis = RedisServer::start();
    let url = redis.url();
    let server = start(&[
        "--redis",
        &url,
        "--jobs-attempts-max",
        "3",
        "--jobs-backoff-base-ms",
        "10",
        "--jobs-backoff-max-ms",
        "10",
    ]);
    let user = create_user(&server, "hooked", &FUNDS);
    let receiver = Receiver::start(0);
    receiver.failing.store(true, std::sync::atomic::Ordering::SeqCst);
    register(&server, &user, &receiver.url());
    common::account::deposit(server.admin.expect("admin"), user.id, "BTC", "1");
    // Two events, three attempts each, then two dead letters.
    assert!(eventually(WAIT, || queue(&server)["dead"] == 2), "{}", queue(&server));
    let got = receiver.got();
    assert_eq!(got.len(), 6, "{got:?}");
    assert!(
        got[..3].iter().all(|r| r.event_id == got[0].event_id)
            && got[3..].iter().all(|r| r.event_id == got[3].event_id)
    );
    let shown = queue(&server);
    let letters = shown["deadLetters"].as_array().expect("letters").clone();
    assert_eq!(letters.len(), 2);
    for letter in &letters {
        assert_eq!(
            (
                &letter["kind"],
                &letter["priority"],
                &letter["attempts"],
                &letter["error"]
            ),
            (
                &"webhook".into(),
                &"high".into(),
                &3.into(),
                &"the receiver answered 500".into()
            )
        );
    }
    // The receiver is back: a re-queued letter is delivered, once.
    receiver.failing.store(false, std::sync::atomic::Ordering::SeqCst);
    let id = letters[0]["id"].as_str().expect("id");
    let (status, _) = admin(
        server.admin.expect("admin"),
        "POST",
        &format!("/admin/v1/jobs/dead/{id}/requeue"),
        None,
    );
    assert_eq!(status, 200);
    assert!(eventually(WAIT, || receiver.accepted().len() == 1));
    assert_eq!(receiver.accepted()[0].event_id, got[0].event_id);
    assert_eq!(queue(&server)["dead"], 1);
}

/// An https webhook: delivered through TLS to a receiver whose certificate
/// chains to `webhook_ca_file`; a server that does not trust it gets a
/// TLS error and keeps the event as a dead letter.
#[test]
fn https_webhooks_check_the_receivers_certificate() {
    let ca = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tls/ca.pem");
    let server = start(&["--webhook-ca-file", ca]);
    let user = create_user(&server, "tls", &FUNDS);
    let receiver = Receiver::start_tls(0);
    let secret = register(&server, &user, &receiver.https_url());
    common::account::deposit(server.admin.expect("admin"), user.id, "BTC", "1");
    assert!(
        eventually(WAIT, || receiver.accepted().len() == 2),
        "{:?}",
        receiver.got()
    );
    for r in receiver.accepted() {
        assert_eq!(
            r.signature,
            common::account::Signer::Hmac(secret.clone()).sign(r.body.as_bytes())
        );
    }

    // The public roots do not hold the test CA: no delivery, a dead letter.
    let untrusting = start(&["--jobs-attempts-max", "1"]);
    let other = create_user(&untrusting, "tls", &FUNDS);
    register(&untrusting, &other, &receiver.https_url());
    common::account::deposit(untrusting.admin.expect("admin"), other.id, "BTC", "1");
    // Without Redis each shard has its own queue: gather their letters.
    let letters = || -> Vec<Value> {
        let (status, body) = admin(untrusting.admin.expect("admin"), "GET", "/admin/v1/jobs", None);
        assert_eq!(status, 200);
        let queues = body.as_array().expect("queues").clone();
        queues
            .iter()
            .flat_map(|q| q["deadLetters"].as_array().expect("letters").clone())
            .collect()
    };
    assert!(eventually(WAIT, || letters().len() == 2), "{:?}", letters());
    let error = letters()[0]["error"].as_str().expect("error").to_string();
    assert!(
        error.starts_with(&format!("TLS with 127.0.0.1:{}: ", receiver.port)),
        "{error}"
    );
    assert_eq!(receiver.accepted().len(), 2);
}
