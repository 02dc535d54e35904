//! A Redis server of a test's own: `redis-server` on a free loopback port,
//! without persistence, its working directory a temporary one, stopped
//! (and the directory removed) when the handle drops. Nothing already
//! running is assumed and nothing outside loopback is reached.
//!
//! The server is a direct child of the test process, started with its
//! configuration on the command line, and answers `PING` before
//! [`RedisServer::start`] returns. `kill9` and `start_again` let a test
//! take it away under load and bring it back on the same port.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long a server may take to answer its first `PING`.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running Redis server; dropping it stops the server.
pub struct RedisServer {
    dir: PathBuf,
    port: u16,
    password: Option<String>,
    /// An address it listens on besides 127.0.0.1 (a test's own network).
    also_on: Option<std::net::IpAddr>,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a fresh server. Panics with the reason when Redis is not
    /// installed or does not start: a test that needs it cannot go on.
    pub fn start() -> RedisServer {
        RedisServer::start_with(None)
    }

    /// A fresh server that requires `AUTH password`.
    pub fn start_with_password(password: &str) -> RedisServer {
        RedisServer::start_with(Some(password.to_string()))
    }

    /// A fresh server listening on `ip` too: an address of a network the
    /// test made (network namespaces joined by a bridge), never a host's.
    pub fn start_also_on(ip: std::net::IpAddr) -> RedisServer {
        RedisServer::start_on(None, Some(ip))
    }

    fn start_with(password: Option<String>) -> RedisServer {
        RedisServer::start_on(password, None)
    }

    fn start_on(password: Option<String>, also_on: Option<std::net::IpAddr>) -> RedisServer {
        let dir = std::env::temp_dir().join(format!("tradsys-redis-{}-{}", std::process::id(), unique()));
        std::fs::create_dir_all(&dir).expect("create the server's directory");
        let mut server = RedisServer {
            dir,
            port: free_port(),
            password,
            also_on,
            child: None,
        };
        server.start_again();
        server
    }

    /// Starts the server again on its port (after [`RedisServer::kill9`]);
    /// its data is gone, as a server without persistence loses it.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "the server is running");
        let port = self.port.to_string();
        let dir = self.dir.to_string_lossy().into_owned();
        let bind = match self.also_on {
            Some(ip) => format!("127.0.0.1 {ip}"),
            None => "127.0.0.1".to_string(),
        };
        let mut args = vec![
            "--port",
            &port,
            "--bind",
            &bind,
            "--dir",
            &dir,
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--protected-mode",
            // Protected mode refuses every client not on loopback while no
            // password is set: off only for a network the test made.
            if self.also_on.is_some() { "no" } else { "yes" },
            "--loglevel",
            "warning",
            "--logfile",
            "",
        ];
        if let Some(password) = &self.password {
            args.extend(["--requirepass", password.as_str()]);
        }
        let child = Command::new("redis-server")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("redis-server could not be started (is the redis-server package installed?): {e}")
            });
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        while !self.answers_ping() {
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} did not answer PING",
                self.port
            );
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("redis-server on port {} exited at start: {status}", self.port);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL tradsys's `--redis` takes on the test's own network.
    pub fn url_on(&self, ip: std::net::IpAddr) -> String {
        format!("redis://{ip}:{}", self.port)
    }

    /// The URL tradsys's `--redis` takes.
    pub fn url(&self) -> String {
        match &self.password {
            Some(password) => format!("redis://:{password}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The server's pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends one command (its words) and returns the raw reply's first line
    /// and what follows, for checks in tests (`DBSIZE`, `GET`).
    pub fn command(&self, words: &[&str]) -> String {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to redis-server");
        stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        let mut request = Vec::new();
        if let Some(password) = &self.password {
            request.extend_from_slice(&encode(&["AUTH", password]));
        }
        request.extend_from_slice(&encode(words));
        stream.write_all(&request).expect("write a command");
        let mut reply = Vec::new();
        let mut chunk = [0u8; 4096];
        let wanted = if self.password.is_some() { 2 } else { 1 };
        while complete_replies(&reply) < wanted {
            let n = stream.read(&mut chunk).expect("read a reply");
            assert!(n > 0, "redis-server closed the connection");
            reply.extend_from_slice(&chunk[..n]);
        }
        let text = String::from_utf8_lossy(&reply).into_owned();
        match &self.password {
            // Drop the `+OK` of AUTH.
            Some(_) => text
                .split_once("\r\n")
                .map(|(_, rest)| rest.to_string())
                .unwrap_or(text),
            None => text,
        }
    }

    /// `kill -9` of the server, waited for.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on our own child's pid, which is not reaped
            // until `wait` below, so it cannot have been reused.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGKILL);
            }
            let _ = child.wait();
        }
    }

    fn answers_ping(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
        let mut request = Vec::new();
        if let Some(password) = &self.password {
            request.extend_from_slice(&encode(&["AUTH", password]));
        }
        request.extend_from_slice(&encode(&["PING"]));
        if stream.write_all(&request).is_err() {
            return false;
        }
        let mut reply = [0u8; 64];
        let mut got = Vec::new();
        while let Ok(n) = stream.read(&mut reply) {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&reply[..n]);
            if got.ends_with(b"+PONG\r\n") {
                return true;
            }
            if got.len() > 48 {
                break;
            }
        }
        false
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill9();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A command as RESP: an array of bulk strings.
fn encode(words: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", words.len()).into_bytes();
    for word in words {
        out.extend_from_slice(format!("${}\r\n", word.len()).as_bytes());
        out.extend_from_slice(word.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Whole top-level replies at the start of `buf`, counting only simple
/// replies (`+`, `-`, `:`) and bulk strings: what [`RedisServer::command`]
/// is for.
fn complete_replies(buf: &[u8]) -> usize {
    let mut at = 0;
    let mut count = 0;
    while let Some(end) = find_crlf(&buf[at..]) {
        let line = &buf[at..at + end];
        at += end + 2;
        if line.first() == Some(&b'$') {
            let len: i64 = std::str::from_utf8(&line[1..])
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(-1);
            if len >= 0 {
                let body = len as usize + 2;
                if buf.len() < at + body {
                    return count;
                }
                at += body;
            }
        }
        count += 1;
    }
    count
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

fn unique() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address").port()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_answers_survives_kill9_and_stops() {
        let mut server = RedisServer::start_with_password("secret-pass");
        assert_eq!(server.command(&["SET", "k", "v"]), "+OK\r\n");
        assert_eq!(server.command(&["GET", "k"]), "$1\r\nv\r\n");
        server.kill9();
        server.start_again();
        assert_eq!(server.command(&["GET", "k"]), "$-1\r\n");
        let dir = server.dir().to_path_buf();
        drop(server);
        assert!(!dir.exists());
    }
}
