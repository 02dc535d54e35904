//! A PostgreSQL server of a test's own: `initdb` into a temporary
//! directory, `pg_ctl` on a free loopback port, stopped (and its directory
//! removed) when the handle drops. Nothing already running is assumed and
//! nothing outside loopback is reached.
//!
//! PostgreSQL refuses to run as root, so as root the server runs as the
//! `postgres` user that Debian's packages create (through `runuser`); as
//! any other user it runs as that user. Authentication is `trust` on
//! 127.0.0.1 only. The server binaries come from `pg_config --bindir`, else
//! the newest `/usr/lib/postgresql/<version>/bin`.

use std::net::TcpListener;
use std::os::unix::fs::chown;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

/// A running PostgreSQL server; dropping it stops the server.
pub struct PgServer {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    /// The OS user the server runs as, when it is not the current one.
    run_as: Option<String>,
    /// An address it listens on besides 127.0.0.1, and the clients it
    /// trusts there (a network of the test's own).
    also_on: Option<(std::net::IpAddr, String)>,
    /// The postmaster, a direct child (`setpriv` execs it), so that it is
    /// reaped here and never left a zombie holding its lock files.
    postmaster: Option<Child>,
}

/// The superuser every test connects as.
pub const SUPERUSER: &str = "postgres";
/// The OS user a root test process runs the server as.
const SERVER_OS_USER: &str = "postgres";

impl PgServer {
    /// Starts a fresh server. Panics with the reason when PostgreSQL is not
    /// installed or does not start: a test that needs it cannot go on.
    pub fn start() -> PgServer {
        PgServer::start_on(None)
    }

    /// A fresh server listening on `ip` too, trusting the clients of
    /// `clients` (CIDR) there: a network the test made (network namespaces
    /// joined by a bridge), never a host's.
    pub fn start_also_on(ip: std::net::IpAddr, clients: &str) -> PgServer {
        PgServer::start_on(Some((ip, clients.to_string())))
    }

    fn start_on(also_on: Option<(std::net::IpAddr, String)>) -> PgServer {
        let mut server = PgServer::unstarted();
        server.also_on = also_on;
        let data = server.data_dir();
        server.run(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                SUPERUSER,
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
        );
        if let Some((_, clients)) = &server.also_on {
            let hba = format!("{data}/pg_hba.conf");
            let mut text = std::fs::read_to_string(&hba).expect("pg_hba.conf");
            text.push_str(&format!("host all all {clients} trust\n"));
            std::fs::write(&hba, text).expect("pg_hba.conf written");
        }
        server.start_again();
        server
    }

    /// A streaming replica of this server: a base backup with
    /// `pg_basebackup -R` (which configures it to follow this server) after
    /// a fast checkpoint (a spread one can take minutes), started on a port
    /// of its own. It replays what the primary commits.
    pub fn start_replica(&self) -> PgServer {
        let mut replica = PgServer::unstarted();
        let data = replica.data_dir();
        let port = self.port.to_string();
        replica.run(
            "pg_basebackup",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                SUPERUSER,
                "-D",
                &data,
                "-R",
                "--checkpoint=fast",
                "-X",
                "stream",
                "--no-sync",
            ],
        );
        replica.start_again();
        replica
    }

    /// A server handle with its own directory and port, not started.
    fn unstarted() -> PgServer {
        let bin = server_bindir().unwrap_or_else(|| {
            panic!("PostgreSQL server binaries not found (install Debian's postgresql; ./tests/run.sh does)")
        });
        let dir = std::env::temp_dir().join(format!("tradsys-pg-{}-{}", std::process::id(), unique()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let run_as = is_root().then(|| SERVER_OS_USER.to_string());
        if let Some(user) = &run_as {
            let (uid, gid) = user_ids(user).unwrap_or_else(|| panic!("no OS user {user:?} to run PostgreSQL as"));
            chown(&dir, Some(uid), Some(gid)).expect("chown the server's directory");
        }
        PgServer {
            bin,
            dir,
            port: free_port(),
            run_as,
            also_on: None,
            postmaster: None,
        }
    }

    fn listen_addresses(&self) -> String {
        match &self.also_on {
            Some((ip, _)) => format!("listen_addresses=127.0.0.1,{ip}"),
            None => "listen_addresses=127.0.0.1".to_string(),
        }
    }

    /// A libpq-style connection string for the superuser's database at
    /// `ip` (an address of the test's own network).
    pub fn url_on(&self, ip: std::net::IpAddr) -> String {
        format!("host={ip} port={} user={SUPERUSER} dbname=postgres", self.port)
    }

    /// The port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A libpq-style connection string for the superuser's database.
    pub fn url(&self) -> String {
        format!("host=127.0.0.1 port={} user={SUPERUSER} dbname=postgres", self.port)
    }

    /// The server's own directory (data, socket, log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Runs `sql` with psql in the `postgres` database and returns its
    /// unaligned, tuples-only output.
    pub fn psql(&self, sql: &str) -> String {
        self.psql_in("postgres", sql)
    }

    /// Runs `sql` with psql in `database`.
    pub fn psql_in(&self, database: &str, sql: &str) -> String {
        let port = self.port.to_string();
        let out = self.run(
            "psql",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                SUPERUSER,
                "-d",
                database,
                "-XAtq",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ],
        );
        String::from_utf8_lossy(&out.stdout).trim_end().to_string()
    }

    /// Starts the server again on its data directory (after `kill9` or
    /// `stop`), on the same port, and waits until it accepts connections.
    pub fn start_again(&mut self) {
        assert!(self.postmaster.is_none(), "the server is running");
        let log = std::fs::File::create(self.dir.join("server.log")).expect("the server's log");
        let postgres = self.bin.join("postgres");
        let mut command = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("setpriv");
                c.args([
                    format!("--reuid={user}"),
                    format!("--regid={user}"),
                    "--init-groups".to_string(),
                    "--".to_string(),
                ]);
                c.arg(&postgres);
                c
            }
            None => Command::new(&postgres),
        };
        let child = command
            .args(["-D", &self.data_dir(), "-p", &self.port.to_string(), "-k"])
            .arg(&self.dir)
            .args(["-c", &self.listen_addresses(), "-c", "max_connections=200"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("the log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", postgres.display()));
        self.postmaster = Some(child);
        let port = self.port.to_string();
        let deadline = std::time::Instant::now() + START_WAIT;
        loop {
            let ready = Command::new(self.bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &port])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return;
            }
            if let Some(status) = self.postmaster.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
                panic!("PostgreSQL exited at start ({status}):\n{log}");
            }
            assert!(
                std::time::Instant::now() < deadline,
                "PostgreSQL not ready within {START_WAIT:?}"
            );
            std::thread::sleep(std::time::Duration::from_millis(PROCESS_POLL_MS));
        }
    }

    /// Stops the server cleanly (a fast shutdown: open sessions end).
    pub fn stop(&mut self) {
        self.signal_and_wait(libc::SIGINT);
    }

    /// Kills the postmaster with SIGKILL, as a crash would, and waits until
    /// its backends, which exit once they see it gone, have exited.
    pub fn kill9(&mut self) {
        let Some(pid) = self.postmaster.as_ref().map(|c| c.id() as i32) else {
            return;
        };
        let children = children_of(pid);
        self.signal_and_wait(libc::SIGKILL);
        let deadline = std::time::Instant::now() + PROCESS_EXIT_WAIT;
        while children.iter().any(|p| alive(*p)) {
            assert!(
                std::time::Instant::now() < deadline,
                "server processes outlived kill -9"
            );
            std::thread::sleep(std::time::Duration::from_millis(PROCESS_POLL_MS));
        }
    }

    fn signal_and_wait(&mut self, signal: i32) {
        let Some(mut child) = self.postmaster.take() else {
            return;
        };
        // SAFETY: kill(2) on our own child, which has not been reaped yet.
        unsafe { libc::kill(child.id() as i32, signal) };
        let _ = child.wait();
    }

    fn data_dir(&self) -> String {
        self.dir.join("data").to_string_lossy().into_owned()
    }

    /// Runs one of the server's programs as the server's user; panics with
    /// its output when it fails.
    fn run(&self, program: &str, args: &[&str]) -> Output {
        let path = self.bin.join(program);
        let mut command = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&path);
                c
            }
            None => Command::new(&path),
        };
        let output = command
            .args(args)
            .current_dir(&self.dir)
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", path.display()));
        assert!(
            output.status.success(),
            "{program} {args:?} failed ({}):\n{}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        // An immediate shutdown: nothing of a test's server is worth keeping.
        self.signal_and_wait(libc::SIGQUIT);
        if std::env::var_os("PGTEST_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// How long a starting server may take to accept connections.
const START_WAIT: std::time::Duration = std::time::Duration::from_secs(60);
/// How long the processes of a killed server may take to exit.
const PROCESS_EXIT_WAIT: std::time::Duration = std::time::Duration::from_secs(30);
/// How often `kill9` looks whether they have.
const PROCESS_POLL_MS: u64 = 10;

/// The processes whose parent is `pid`, from /proc.
fn children_of(pid: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|child| {
            let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
            // The parent pid is the second field after the parenthesised name.
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<i32>().ok())
                == Some(pid)
        })
        .collect()
}

/// Whether `pid` still runs (a zombie counts as gone).
fn alive(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    match stat.rsplit_once(')') {
        Some((_, rest)) => rest.split_whitespace().next() != Some("Z"),
        None => false,
    }
}

fn unique() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A loopback port that was free a moment ago.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address").port()
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The uid and gid of `user`, from /etc/passwd.
fn user_ids(user: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.first() == Some(&user) && fields.len() > 3)
            .then(|| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))
            .flatten()
    })
}

/// Where `initdb`, `pg_ctl` and `postgres` are.
fn server_bindir() -> Option<PathBuf> {
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").exists() {
            return Some(dir);
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let version = e.file_name().to_string_lossy().parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_answers_survives_kill9_and_stops() {
        let mut server = PgServer::start();
        assert_eq!(server.psql("SELECT 1 + 1"), "2");
        server.psql("CREATE TABLE t (v integer); INSERT INTO t VALUES (7)");
        server.kill9();
        server.start_again();
        assert_eq!(server.psql("SELECT v FROM t"), "7", "committed rows survive kill -9");
        let dir = server.dir().to_path_buf();
        drop(server);
        assert!(!dir.exists(), "the server's directory is removed");
    }

    #[test]
    fn a_replica_follows_its_primary() {
        let primary = PgServer::start();
        primary.psql("CREATE TABLE t (v integer); INSERT INTO t VALUES (1)");
        let replica = primary.start_replica();
        assert_eq!(replica.psql("SELECT pg_is_in_recovery()"), "t");
        assert_eq!(replica.psql("SELECT v FROM t"), "1", "the base backup has the table");
        primary.psql("INSERT INTO t VALUES (2)");
        let target = primary.psql("SELECT pg_current_wal_lsn()");
        let deadline = std::time::Instant::now() + START_WAIT;
        while replica.psql(&format!("SELECT pg_last_wal_replay_lsn() >= '{target}'")) != "t" {
            assert!(
                std::time::Instant::now() < deadline,
                "the replica never replayed {target}"
            );
            std::thread::sleep(std::time::Duration::from_millis(PROCESS_POLL_MS));
        }
        assert_eq!(replica.psql("SELECT sum(v) FROM t"), "3");
    }
}
