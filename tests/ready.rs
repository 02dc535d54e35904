//! Readiness means every shard: once /ready has said 200 on one
//! connection, no connection, whichever shard the kernel gives it, may be
//! told the service is starting. And a start is refused, with one line,
//! on a data directory or an address another process holds.
//!
//! Regression test for a 2-shard server on a busy machine: /ready was
//! answered from the accepting shard's own state, so a client saw 200 and
//! then `503 {"code":-1016,"msg":"Service starting; try again shortly."}`
//! from the other shard. Here shard 1 starts 1.5 s late through the
//! test-only `TRADSYS_TEST_SHARD_START_DELAY_MS` hook.

mod common;

use common::{Client, Response};
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How late shard 1 installs its state.
const DELAY_MS: u64 = 1500;
/// Connections opened after the first 200, spread over both shards.
const CONNECTIONS_AFTER_READY: usize = 200;
/// How long the test waits for the server to become ready at all.
const READY_WITHIN: Duration = Duration::from_secs(60);

/// A server child that is killed when the test ends, however it ends.
struct Child2(Child);

impl Drop for Child2 {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback port that was free a moment ago: the server must be reached
/// before it prints its start-up lines, so the port is chosen here.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address").port()
}

fn get(addr: SocketAddr, target: &str) -> Option<Response> {
    let mut client = Client::try_connect(addr)?;
    client.send(&format!("GET {target} HTTP/1.1\r\nHost: t\r\n\r\n"));
    client.try_response()
}

#[test]
fn no_connection_is_told_starting_after_ready_said_200() {
    let data_dir = common::temp_data_dir();
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let markets = concat!(env!("CARGO_MANIFEST_DIR"), "/shards/markets.toml");
    let child = Command::new(env!("CARGO_BIN_EXE_tradsys"))
        .args([
            "serve",
            "--listen",
            &addr.to_string(),
            "--shards",
            "2",
            "--markets",
            markets,
        ])
        .arg("--data-dir")
        .arg(&data_dir)
        .env("TRADSYS_TEST_SHARD_START_DELAY_MS", format!("1:{DELAY_MS}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("tradsys starts");
    let mut child = Child2(child);
    let stdout = child.0.stdout.take().expect("piped stdout");
    let lines = std::thread::spawn(move || BufReader::new(stdout).lines().map_while(Result::ok).collect::<Vec<_>>());

    // Before every shard is ready, /ready is 503 -1016 on every shard.
    let deadline = Instant::now() + READY_WITHIN;
    let mut starting = 0;
    loop {
        assert!(Instant::now() < deadline, "not ready within {READY_WITHIN:?}");
        let Some(response) = get(addr, "/ready") else {
            // Not listening yet: the process is still binding.
            std::thread::sleep(Duration::from_millis(5));
            continue;
        };
        if response.status == 200 {
            assert_eq!(response.body_text(), r#"{"status":"ready"}"#);
            break;
        }
        assert_eq!(response.status, 503, "{}", response.body_text());
        assert_eq!(response.error(), (-1016, "Service starting.".to_string()));
        starting += 1;
    }
    assert!(
        starting > 0,
        "the late shard never showed: the test did not exercise the window"
    );

    // From the first 200 on, every connection is served on either shard.
    for i in 0..CONNECTIONS_AFTER_READY {
        let target = if i % 2 == 0 { "/ready" } else { "/api/v3/ping" };
        let response = get(addr, target).unwrap_or_else(|| panic!("connection {i} got no answer"));
        assert_eq!(
            response.status,
            200,
            "connection {i} ({target}) after /ready said 200: {}",
            response.body_text()
        );
    }
    let metrics = get(addr, "/metrics").expect("/metrics");
    let text = metrics.body_text();
    let accepted: Vec<u64> = text
        .lines()
        .filter(|l| l.starts_with("tradsys_connections_accepted_total{"))
        .map(|l| l.rsplit(' ').next().and_then(|v| v.parse().ok()).expect("a count"))
        .collect();
    assert_eq!(accepted.len(), 2, "{text}");
    assert!(
        accepted.iter().all(|&n| n > 0),
        "both shards served connections: {accepted:?}"
    );

    common::signal(&child.0, "TERM");
    let status = common::wait_exit(&mut child.0, Duration::from_secs(20)).expect("exits after SIGTERM");
    assert!(status.success(), "{status:?}");
    let lines = lines.join().expect("the stdout reader");
    let listening = lines.iter().filter(|l| l.starts_with("shard ")).count();
    assert_eq!(listening, 2, "{lines:?}");
}

/// `tradsys serve` with `shards` shards on `listen` and `data_dir` (and
/// `env`), until it stops by itself: exit code and standard error.
fn serve_until_it_stops(
    listen: &str,
    shards: usize,
    data_dir: &std::path::Path,
    env: &[(&str, &str)],
) -> (Option<i32>, String) {
    let markets = concat!(env!("CARGO_MANIFEST_DIR"), "/shards/markets.toml");
    let shards = shards.to_string();
    let mut child = Child2(
        Command::new(env!("CARGO_BIN_EXE_tradsys"))
            .args([
                "serve",
                "--listen",
                listen,
                "--shards",
                &shards,
                "--markets",
                markets,
                "--data-dir",
            ])
            .arg(data_dir)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tradsys starts"),
    );
    let stderr = child.0.stderr.take().expect("piped stderr");
    let status = common::wait_exit(&mut child.0, Duration::from_secs(30)).expect("stopped within 30 s");
    let mut text = String::new();
    std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut text).expect("utf-8 stderr");
    (status.code(), text)
}

#[test]
fn a_second_process_on_a_held_data_directory_or_address_is_refused() {
    let mut first = common::Server::start(1, &[]);
    let pid = first.child.id();
    let dir = first.data_dir.clone();
    // The same data directory on another port: exit 2, naming the holder.
    let (code, stderr) = serve_until_it_stops("127.0.0.1:0", 1, &dir, &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(
        stderr,
        format!(
            "tradsys: data directory {} is in use by process {pid}: one process per data directory\n",
            dir.display()
        )
    );
    // Another data directory on the first one's address: refused too,
    // instead of joining its listening group.
    let other = common::temp_data_dir();
    let (code, stderr) = serve_until_it_stops(&first.addr.to_string(), 1, &other, &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(
        stderr,
        format!(
            "tradsys: listen: {} is in use by another process; a second instance would split its clients (stop it first)\n",
            first.addr
        )
    );
    let _ = std::fs::remove_dir_all(&other);
    // The first process never noticed.
    let ready = get(first.addr, "/ready").expect("an answer");
    assert_eq!(ready.status, 200);
    // `kill -9` leaves no lock behind: the next process owns the directory.
    first.kill9();
    let second = common::Server::start_in(&dir, 1, &[]);
    assert_eq!(get(second.addr, "/ready").expect("an answer").status, 200);
    drop(second);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A shard that panics stops the process (exit 70, after the panic's
/// message): before, the other shards went on serving without it and the
/// process never stopped, not even on SIGTERM, since the drain waits for
/// every shard. Shard 1 panics on purpose through the test-only
/// `TRADSYS_TEST_PANIC_SHARD` hook.
#[test]
fn a_panicking_shard_stops_the_process() {
    let dir = common::temp_data_dir();
    let (code, stderr) = serve_until_it_stops("127.0.0.1:0", 2, &dir, &[("TRADSYS_TEST_PANIC_SHARD", "1")]);
    assert_eq!(code, Some(70), "{stderr}");
    assert!(
        stderr.contains("TRADSYS_TEST_PANIC_SHARD: this shard panics on purpose"),
        "{stderr}"
    );
    assert!(
        stderr.ends_with("tradsys: a thread panicked; stopping (the journal holds everything acknowledged)\n"),
        "{stderr}"
    );
}
