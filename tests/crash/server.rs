//! A tradsys process owned by the crash harness: started on free loopback
//! ports with a given data directory, killed with SIGKILL by its PID, and
//! restarted on the same directory.
//!
//! Both output streams go to files in the data directory
//! (`tradsys-<n>.stdout`, `tradsys-<n>.stderr`, one pair per start), so a
//! failed run leaves the server's own account of it next to its journal.
//! Every wait is bounded.

use crate::http::{Conn, ADMIN_TOKEN};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Shards every harness server runs.
pub const SHARDS: usize = 2;
/// The longest a start may take until every shard listens: a few hundred
/// milliseconds on a quiet machine, but a shard starved of its core by
/// other work has been seen to take minutes.
const START_TIMEOUT_MS: u64 = 120_000;
/// The longest recovery may take until `/ready` answers 200.
const READY_TIMEOUT_MS: u64 = 120_000;
/// The load-shedding limit's flag.
pub const OVERLOAD_FLAG: &str = "--overload-order-wait-ms-max";
/// How often start-up output and `/ready` are polled.
const POLL_MS: u64 = 5;

/// How the server is started.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Pass `--durability fsync`; off only for a tree without durability.
    pub durability_flag: bool,
}

/// Why a start did not produce a ready server.
#[derive(Debug)]
pub enum StartError {
    /// The process ended; its status and the text it wrote.
    Exited { status: ExitStatus, output: String },
    /// A bounded wait ran out or the output made no sense.
    Failed(String),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Exited { status, output } => write!(f, "tradsys exited ({status}):\n{output}"),
            StartError::Failed(problem) => write!(f, "{problem}"),
        }
    }
}

/// A running, ready tradsys.
pub struct Server {
    child: Child,
    pub api: SocketAddr,
    pub admin: SocketAddr,
    pub stdout_path: PathBuf,
    pub stderr_path: PathBuf,
}

impl Server {
    /// Starts tradsys on `data_dir` and waits until `/ready` answers 200.
    /// `start_no` numbers the log files of this start.
    pub fn start(data_dir: &Path, start_no: u32, options: Options) -> Result<Server, StartError> {
        Server::start_on(data_dir, data_dir, start_no, options, &[])
    }

    /// `start` with the log files in `log_dir` (a data directory on a disk
    /// the harness fills keeps its logs elsewhere) and `extra` arguments.
    pub fn start_on(
        data_dir: &Path,
        log_dir: &Path,
        start_no: u32,
        options: Options,
        extra: &[&str],
    ) -> Result<Server, StartError> {
        for dir in [data_dir, log_dir] {
            std::fs::create_dir_all(dir).map_err(|e| StartError::Failed(format!("{}: {e}", dir.display())))?;
        }
        let stdout_path = log_dir.join(format!("tradsys-{start_no}.stdout"));
        let stderr_path = log_dir.join(format!("tradsys-{start_no}.stderr"));
        let file = |path: &Path| std::fs::File::create(path).map_err(|e| StartError::Failed(e.to_string()));
        let markets = concat!(env!("CARGO_MANIFEST_DIR"), "/shards/markets.toml");
        let mut command = Command::new(env!("CARGO_BIN_EXE_tradsys"));
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .args(["--shards", &SHARDS.to_string(), "--markets", markets])
            .args(["--admin-token", ADMIN_TOKEN, "--demo-user", "false"])
            // The harness measures durability, not rate limits.
            .args(["--orders-per-10s-max", "100000000", "--orders-per-day-max", "100000000"])
            .args(["--request-weight-per-minute-max", "100000000"])
            .args(["--raw-requests-per-5m-max", "100000000"])
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra);
        // Nor load shedding (tests/overload.rs): every request runs, unless
        // `extra` (an overload cycle) sets its own limit.
        if !extra.contains(&OVERLOAD_FLAG) {
            command.args([OVERLOAD_FLAG, "0"]);
        }
        if options.durability_flag {
            command.args(["--durability", "fsync"]);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::from(file(&stdout_path)?))
            .stderr(Stdio::from(file(&stderr_path)?))
            .spawn()
            .map_err(|e| StartError::Failed(format!("spawn tradsys: {e}")))?;
        let mut server = Server {
            child,
            api: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            stdout_path,
            stderr_path,
        };
        server.await_listening()?;
        server.await_ready()?;
        Ok(server)
    }

    /// Everything the server wrote to stdout and stderr so far.
    pub fn output(&self) -> String {
        read_output(&self.stdout_path, &self.stderr_path)
    }

    fn exited(&mut self) -> Result<(), StartError> {
        match self.child.try_wait() {
            Ok(Some(status)) => Err(StartError::Exited {
                status,
                output: self.output(),
            }),
            Ok(None) => Ok(()),
            Err(e) => Err(StartError::Failed(format!("try_wait: {e}"))),
        }
    }

    /// Reads the start-up lines until every shard and the admin API listen.
    /// Lines it does not know (recovery progress, warnings) are skipped.
    fn await_listening(&mut self) -> Result<(), StartError> {
        let deadline = Instant::now() + Duration::from_millis(START_TIMEOUT_MS);
        loop {
            let text = std::fs::read_to_string(&self.stdout_path).unwrap_or_default();
            let (mut listening, mut admin) = (0, None);
            for line in text.lines() {
                let words: Vec<&str> = line.split(' ').collect();
                match words.as_slice() {
                    ["shard", _, "core", _, "listening", addr] => {
                        self.api = addr
                            .parse()
                            .map_err(|_| StartError::Failed(format!("bad line {line:?}")))?;
                        listening += 1;
                    }
                    ["admin", "listening", addr] => admin = addr.parse().ok(),
                    _ => {}
                }
            }
            if let (true, Some(admin)) = (listening >= SHARDS, admin) {
                self.admin = admin;
                return Ok(());
            }
            self.exited()?;
            if Instant::now() > deadline {
                return Err(StartError::Failed(format!(
                    "no start-up lines after {START_TIMEOUT_MS} ms:\n{}",
                    self.output()
                )));
            }
            std::thread::sleep(Duration::from_millis(POLL_MS));
        }
    }

    /// Polls `/ready` until it answers 200 (503 while recovering).
    fn await_ready(&mut self) -> Result<(), StartError> {
        let deadline = Instant::now() + Duration::from_millis(READY_TIMEOUT_MS);
        loop {
            let ready = Conn::open(self.api)
                .and_then(|mut c| c.request(b"GET /ready HTTP/1.1\r\nHost: t\r\n\r\n"))
                .map(|r| r.status == 200);
            if let Ok(true) = ready {
                return Ok(());
            }
            self.exited()?;
            if Instant::now() > deadline {
                return Err(StartError::Failed(format!(
                    "/ready not 200 after {READY_TIMEOUT_MS} ms"
                )));
            }
            std::thread::sleep(Duration::from_millis(POLL_MS));
        }
    }

    /// SIGKILL by PID, then reaps the process.
    pub fn kill9(mut self) {
        self.kill_now();
    }

    fn kill_now(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let pid = self.child.id() as libc::pid_t;
            // SAFETY: kill(2) with a PID this process spawned and has not reaped.
            let rc = unsafe { libc::kill(pid, libc::SIGKILL) };
            assert_eq!(rc, 0, "kill -9 {pid}");
        }
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill_now();
    }
}

/// Both log files of one start, labelled.
pub fn read_output(stdout: &Path, stderr: &Path) -> String {
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    format!(
        "--- {} ---\n{}--- {} ---\n{}",
        stdout.display(),
        read(stdout),
        stderr.display(),
        read(stderr)
    )
}
