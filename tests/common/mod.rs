//! Shared pieces of the integration tests: a tradsys process on a free
//! loopback port, a raw HTTP/1.1 client, and a strict Prometheus parser.

#![allow(dead_code)]

pub mod account;
pub mod netns;
pub mod prom;
pub mod tmpfs;
pub mod ws;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running `tradsys serve` on 127.0.0.1 with a port the kernel chose.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    /// The admin API's address, when started with an admin token.
    pub admin: Option<SocketAddr>,
    /// The demo user's (API key, secret) as printed at start.
    pub demo: Option<(String, String)>,
    pub data_dir: std::path::PathBuf,
    /// The line recovery printed at start, if it recovered anything.
    pub recovered: Option<String>,
    /// Whether dropping the server deletes `data_dir` (not when the test
    /// gave it, to start another server on it).
    /// Removed when the server is dropped, after the process is killed.
    owned_dir: Option<TempDir>,
    /// Everything the server printed (stdout and stderr), and the threads
    /// that collect it.
    logs: Arc<Mutex<String>>,
    collectors: Vec<std::thread::JoinHandle<()>>,
}

/// Every secret a test was given (API secrets, the admin token): no
/// server may print one (checked when a `Server` is dropped).
static SECRETS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Adds `secret` to what no server may print.
pub fn note_secret(secret: &str) {
    let mut secrets = SECRETS.lock().unwrap_or_else(|e| e.into_inner());
    if !secrets.iter().any(|s| s == secret) {
        secrets.push(secret.to_string());
    }
}

/// Copies `from` line by line into `logs` (and stderr lines to the test's
/// stderr, where a failing test shows them).
fn collect(from: impl Read + Send + 'static, logs: Arc<Mutex<String>>, echo: bool) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines() {
            let Ok(line) = line else { break };
            if echo {
                eprintln!("{line}");
            }
            let mut logs = logs.lock().unwrap_or_else(|e| e.into_inner());
            logs.push_str(&line);
            logs.push('\n');
        }
    })
}

/// The admin token tests use.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// Flags that lift the order and request limits out of a test's way.
pub const LIMITS_OFF: [&str; 8] = [
    "--orders-per-10s-max",
    "1000000",
    "--orders-per-day-max",
    "100000000",
    "--request-weight-per-minute-max",
    "100000000",
    "--raw-requests-per-5m-max",
    "100000000",
];

impl Server {
    /// Starts tradsys with `args` and waits for every shard's start-up line.
    pub fn start(shards: usize, args: &[&str]) -> Server {
        let dir = temp_data_dir();
        let mut server = Server::start_in(&dir, shards, args);
        server.owned_dir = Some(dir);
        server
    }

    /// Starts tradsys on `data_dir`, which outlives the server.
    pub fn start_in(data_dir: &std::path::Path, shards: usize, args: &[&str]) -> Server {
        Server::start_in_env(data_dir, shards, args, &[])
    }

    /// [`Server::start_in`] with `env` added to the process's environment
    /// (the `TRADSYS_TEST_*` fault hooks).
    pub fn start_in_env(data_dir: &std::path::Path, shards: usize, args: &[&str], env: &[(&str, &str)]) -> Server {
        Server::start_with(Command::new(env!("CARGO_BIN_EXE_tradsys")), data_dir, shards, args, env)
    }

    /// [`Server::start_in`] inside network namespace `netns` (see
    /// `common::netns`): `ip netns exec` execs tradsys, so the child is
    /// tradsys itself.
    pub fn start_in_netns(netns: &str, data_dir: &std::path::Path, shards: usize, args: &[&str]) -> Server {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", netns, env!("CARGO_BIN_EXE_tradsys")]);
        Server::start_with(command, data_dir, shards, args, &[])
    }

    fn start_with(
        mut command: Command,
        data_dir: &std::path::Path,
        shards: usize,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Server {
        let data_dir = data_dir.to_path_buf();
        let markets = concat!(env!("CARGO_MANIFEST_DIR"), "/shards/markets.toml");
        let mut child = command
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--shards",
                &shards.to_string(),
                "--markets",
                markets,
            ])
            .args(["--admin-listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(&data_dir)
            .args(args)
            .args(shedding_off(args))
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tradsys starts");
        if let Some(at) = args.iter().position(|a| *a == "--admin-token") {
            if let Some(token) = args.get(at + 1) {
                note_secret(token);
            }
        }
        let logs = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("piped stderr");
        let collectors = vec![collect(stderr, logs.clone(), true)];
        // Built before reading, so that a failed start still kills the child.
        let mut server = Server {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin: None,
            demo: None,
            data_dir,
            owned_dir: None,
            recovered: None,
            logs,
            collectors,
        };
        let stdout = server.child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let wants_admin = args.contains(&"--admin-token");
        let mut listening = 0;
        while listening < shards || (wants_admin && server.admin.is_none()) {
            let line = lines.next().expect("a start-up line").expect("utf-8 output");
            {
                let mut logs = server.logs.lock().unwrap_or_else(|e| e.into_inner());
                logs.push_str(&line);
                logs.push('\n');
            }
            let words: Vec<&str> = line.split(' ').collect();
            match words.as_slice() {
                ["shard", _, "core", _, "listening", addr] => {
                    server.addr = addr.parse().expect("an address");
                    listening += 1;
                }
                ["admin", "listening", addr] => server.admin = Some(addr.parse().expect("an address")),
                ["demo", "user", _, "apiKey", key, "secretKey", "in", path] => {
                    let file = std::fs::read_to_string(path).expect("the demo user's file");
                    let demo: serde_json::Value = serde_json::from_str(&file).expect("JSON");
                    assert_eq!(demo["apiKey"], *key);
                    let secret = demo["secretKey"].as_str().expect("secretKey").to_string();
                    note_secret(&secret);
                    server.demo = Some((key.to_string(), secret));
                }
                ["admin", "API", "off:", ..] => {}
                ["recovered", ..] => server.recovered = Some(line.clone()),
                ["history", "store:", ..] => {}
                ["cluster:", ..] => {}
                _ => panic!("unexpected start-up line {line:?}"),
            }
        }
        // Keep draining stdout so the server never blocks on a full pipe.
        let logs = server.logs.clone();
        server.collectors.push(std::thread::spawn(move || {
            for line in lines {
                let Ok(line) = line else { break };
                let mut logs = logs.lock().unwrap_or_else(|e| e.into_inner());
                logs.push_str(&line);
                logs.push('\n');
            }
        }));
        server
    }

    pub fn connect(&self) -> Client {
        Client::connect(self.addr)
    }

    /// One request on a fresh connection.
    pub fn get(&self, target: &str) -> Response {
        let mut c = self.connect();
        c.send(&format!("GET {target} HTTP/1.1\r\nHost: t\r\n\r\n"));
        c.response()
    }

    pub fn metrics(&self) -> prom::Exposition {
        self.try_metrics().expect("a /metrics response")
    }

    /// `/metrics`, or `None` if the server closed the connection (it may be
    /// refusing connections over its limit).
    pub fn try_metrics(&self) -> Option<prom::Exposition> {
        let mut c = self.connect();
        c.send("GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n");
        let response = c.try_response()?;
        assert_eq!(response.status, 200);
        Some(prom::parse(&response.body_text()).expect("strict Prometheus text"))
    }

    /// Kills the server with SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("the killed server's status");
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        signal(&self.child, libc_sigterm());
        wait_exit(&mut self.child, Duration::from_secs(20)).expect("tradsys exits after SIGTERM")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.owned_dir = None;
        // The pipes are closed: the collectors end.
        for collector in self.collectors.drain(..) {
            let _ = collector.join();
        }
        if std::thread::panicking() {
            return;
        }
        let logs = self.logs.lock().unwrap_or_else(|e| e.into_inner());
        let secrets = SECRETS.lock().unwrap_or_else(|e| e.into_inner());
        let leaked: Vec<&String> = secrets.iter().filter(|s| logs.contains(s.as_str())).collect();
        assert!(
            leaked.is_empty(),
            "the server printed a secret ({} of them)",
            leaked.len()
        );
    }
}

impl Server {
    /// Everything the server printed so far.
    pub fn logs(&self) -> String {
        self.logs.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Load shedding (`overload`) is off unless a test sets its limit: a
/// test of something else must not see a 503 because its own burst made
/// the shard busy for a few milliseconds. tests/overload.rs tests shedding.
fn shedding_off(args: &[&str]) -> &'static [&'static str] {
    if args.contains(&"--overload-order-wait-ms-max") {
        &[]
    } else {
        &["--overload-order-wait-ms-max", "0"]
    }
}

/// A directory no other test uses (not created), removed when dropped:
/// a journal preallocates its segments, so every directory a test leaves
/// behind costs the machine about 130 MB.
pub struct TempDir {
    path: std::path::PathBuf,
}

impl TempDir {
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// The path, no longer removed on drop (its new owner removes it).
    pub fn into_path(self) -> std::path::PathBuf {
        let this = std::mem::ManuallyDrop::new(self);
        this.path.clone()
    }
}

impl std::ops::Deref for TempDir {
    type Target = std::path::Path;

    fn deref(&self) -> &std::path::Path {
        &self.path
    }
}

impl AsRef<std::path::Path> for TempDir {
    fn as_ref(&self) -> &std::path::Path {
        &self.path
    }
}

impl AsRef<std::ffi::OsStr> for TempDir {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.path.as_os_str()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A [`TempDir`] under the system's temporary directory.
pub fn temp_data_dir() -> TempDir {
    temp_dir_in(&std::env::temp_dir())
}

/// A [`TempDir`] under `base`.
pub fn temp_dir_in(base: &std::path::Path) -> TempDir {
    let path = base.join(format!("tradsys-test-{}-{}", std::process::id(), unique()));
    // A directory of this name can only be left by an earlier test process
    // that had the same pid and was killed before it cleaned up; its
    // journal and snapshots must not become this test's state.
    let _ = std::fs::remove_dir_all(&path);
    TempDir { path }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

fn libc_sigterm() -> &'static str {
    "TERM"
}

pub fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

pub fn wait_exit(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

/// Polls `condition` until it holds or `limit` passes.
/// `n` free ports below the kernel's ephemeral range, for servers a test
/// names in advance (a cluster map): a port from that range, free when
/// asked, may be taken by any outgoing connection or port-0 listener
/// before the server binds it, or while the server is down for a restart.
/// Tests of one binary run at once: each starts at its own offset.
pub fn free_ports(n: usize) -> Vec<u16> {
    static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let low: u16 = range
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(32768);
    let offset = NEXT.fetch_add(64, std::sync::atomic::Ordering::SeqCst);
    let start = 10_000 + (std::process::id() % 256) as u16 * 64 + offset;
    let ports: Vec<u16> = (start..low)
        .filter(|&port| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok())
        .take(n)
        .collect();
    assert_eq!(ports.len(), n, "free ports below the ephemeral range");
    ports
}

pub fn eventually(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

/// A parsed HTTP/1.1 response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn body_text(&self) -> String {
        String::from_utf8(self.body.clone()).expect("utf-8 body")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    /// The Binance error as (code, msg).
    pub fn error(&self) -> (i64, String) {
        let v = self.json();
        (
            v["code"].as_i64().expect("code"),
            v["msg"].as_str().expect("msg").to_string(),
        )
    }
}

/// A blocking HTTP/1.1 client over one connection.
pub struct Client {
    pub stream: TcpStream,
    buffered: Vec<u8>,
}

impl Client {
    /// A connection, or `None` when nothing listens at `addr` (yet).
    pub fn try_connect(addr: SocketAddr) -> Option<Client> {
        let stream = TcpStream::connect(addr).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
        stream.set_nodelay(true).expect("nodelay");
        Some(Client {
            stream,
            buffered: Vec::new(),
        })
    }

    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
        stream.set_nodelay(true).expect("nodelay");
        Client {
            stream,
            buffered: Vec::new(),
        }
    }

    pub fn send(&mut self, raw: &str) {
        self.send_bytes(raw.as_bytes());
    }

    pub fn send_bytes(&mut self, raw: &[u8]) {
        self.stream.write_all(raw).expect("write");
    }

    /// Reads more bytes; `false` on EOF or reset.
    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 65536];
        match self.stream.read(&mut chunk) {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buffered.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// `true` when the server closed the connection (EOF or reset) before
    /// sending anything more.
    pub fn closed(&mut self) -> bool {
        self.buffered.is_empty() && !self.fill()
    }

    pub fn response(&mut self) -> Response {
        self.try_response().expect("a response before the connection closed")
    }

    /// The next response, or `None` if the connection closed first.
    pub fn try_response(&mut self) -> Option<Response> {
        self.read_response(true)
    }

    /// The next response to a HEAD request: its head only, whatever its
    /// Content-Length says.
    pub fn head_response(&mut self) -> Response {
        self.read_response(false)
            .expect("a response before the connection closed")
    }

    fn read_response(&mut self, with_body: bool) -> Option<Response> {
        let head_end = loop {
            if let Some(end) = find(&self.buffered, b"\r\n\r\n") {
                break end;
            }
            if !self.fill() {
                return None;
            }
        };
        let head = String::from_utf8(self.buffered[..head_end].to_vec()).expect("ascii head");
        let mut lines = head.split("\r\n");
        let status_line = lines.next().expect("status line");
        let status = status_line
            .split(' ')
            .nth(1)
            .expect("status")
            .parse()
            .expect("numeric status");
        let headers: Vec<(String, String)> = lines
            .map(|l| {
                let (n, v) = l.split_once(':').expect("header");
                (n.trim().to_string(), v.trim().to_string())
            })
            .collect();
        let length: usize = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .map(|(_, v)| v.parse().expect("numeric length"))
            .unwrap_or(0);
        let total = head_end + 4 + if with_body { length } else { 0 };
        while self.buffered.len() < total {
            if !self.fill() {
                return None;
            }
        }
        let body = self.buffered[head_end + 4..total].to_vec();
        self.buffered.drain(..total);
        Some(Response { status, headers, body })
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Pings from one connection until a 418 or `max` requests; returns the
/// statuses in order and the 418 response.
pub fn pings_until_banned(c: &mut Client, max: usize) -> (Vec<u16>, Option<Response>) {
    let mut statuses = Vec::new();
    for _ in 0..max {
        c.send("GET /api/v3/ping HTTP/1.1\r\n\r\n");
        let r = c.response();
        statuses.push(r.status);
        if r.status == 418 {
            return (statuses, Some(r));
        }
    }
    (statuses, None)
}

/// Checks a ban's 418: Binance's code and message, and a ban of 2 minutes
/// from `before_ms` (the ban starts between then and now).
pub fn assert_first_ban(r: &Response, before_ms: u64) {
    let (code, msg) = r.error();
    assert_eq!(code, -1003);
    let until: u64 = msg
        .strip_prefix("Way too much request weight used; IP banned until ")
        .and_then(|rest| rest.strip_suffix(". Please use WebSocket Streams for live updates to avoid bans."))
        .and_then(|until| until.parse().ok())
        .unwrap_or_else(|| panic!("{msg}"));
    assert!(
        (before_ms + 120_000..=account::now_ms() + 120_000).contains(&until),
        "{until}"
    );
    let retry: u64 = r.header("retry-after").expect("Retry-After").parse().unwrap();
    assert!((119..=120).contains(&retry), "{retry}");
}

/// An nginx.conf in `dir` around `include` (a file to include in its http
/// block), with its pid, error log and temporary files in `dir`: what
/// `nginx -t -p <dir>/ -c <conf>` checks and `nginx -p ... -c ... -g
/// "daemon off;"` runs, touching nothing outside `dir`.
pub fn nginx_conf(dir: &std::path::Path, include: &std::path::Path) -> std::path::PathBuf {
    let conf = dir.join("nginx.conf");
    let temp: String = ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"]
        .iter()
        .map(|what| format!("  {what}_temp_path {}/{what};\n", dir.display()))
        .collect();
    let text = format!(
        "worker_processes 1;\npid {dir}/nginx.pid;\nerror_log {dir}/error.log;\nevents {{}}\nhttp {{\n  access_log off;\n{temp}  include {};\n}}\n",
        include.display(),
        dir = dir.display(),
    );
    std::fs::write(&conf, text).expect("the nginx.conf written");
    conf
}

/// nginx running the front `tradsys cluster nginx` writes for a map,
/// listening on `addr`; stopped by its pid when dropped.
pub struct Front {
    child: Child,
    pub addr: SocketAddr,
    dir: TempDir,
}

impl Front {
    pub fn start(map: &str, markets: &str, addr: SocketAddr) -> Front {
        let dir = temp_data_dir();
        std::fs::create_dir_all(&dir).expect("the front's directory");
        let out = Command::new(env!("CARGO_BIN_EXE_tradsys"))
            .args(["cluster", "nginx", "--cluster", map, "--markets", markets, "--listen"])
            .arg(addr.to_string())
            .output()
            .expect("tradsys runs");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        std::fs::write(dir.join("front.conf"), &out.stdout).expect("the front written");
        let conf = nginx_conf(&dir, &dir.join("front.conf"));
        let child = Command::new("nginx")
            .arg("-p")
            .arg(format!("{}/", dir.display()))
            .arg("-c")
            .arg(&conf)
            .args(["-g", "daemon off;"])
            .spawn()
            .expect("nginx runs (tests/run.sh installs it)");
        let front = Front { child, addr, dir };
        assert!(
            eventually(Duration::from_secs(20), || TcpStream::connect(addr).is_ok()),
            "nginx did not listen on {addr}"
        );
        front
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        // TERM: the master stops its workers before it exits.
        signal(&self.child, "TERM");
        let _ = self.child.wait();
    }
}
