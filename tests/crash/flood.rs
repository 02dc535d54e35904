//! The overload cycles' flood: many connections, each with pipelined
//! market-data requests in flight, so that both shards' run queues stay
//! long and the server sheds (503 -1008) while the clients trade and when
//! the kill comes. The flood counts the refusals it gets and notes when
//! the last one came, so that a cycle can show it was overloaded at the
//! kill.

use crate::http::Conn;
use crate::model::SERVER_BUSY;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Flood threads; each keeps `CONNECTIONS` connections busy.
const THREADS: usize = 4;
const CONNECTIONS: usize = 64;
/// Requests each connection has in flight at once.
const PIPELINE: usize = 8;
/// A market-data read (shed before order entry, see `overload`).
const REQUEST: &[u8] = b"GET /api/v3/depth?symbol=BTCUSDT&limit=100 HTTP/1.1\r\nHost: t\r\n\r\n";
/// The longest the flood may take to make the server shed at all.
pub const SHEDDING_TIMEOUT_MS: u64 = 30_000;

/// What the flood threads report.
#[derive(Default)]
struct Seen {
    shed: AtomicU64,
    last_shed: Mutex<Option<Instant>>,
}

/// A running flood, stopped (and its threads joined) by `stop`.
pub struct Flood {
    stop: Arc<AtomicBool>,
    seen: Arc<Seen>,
    threads: Vec<JoinHandle<()>>,
}

impl Flood {
    /// Starts the flood and waits until the server sheds some of it.
    pub fn start(api: SocketAddr) -> Result<Flood, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Seen::default());
        let threads = (0..THREADS)
            .map(|_| {
                let (stop, seen) = (stop.clone(), seen.clone());
                std::thread::spawn(move || flood(api, &stop, &seen))
            })
            .collect();
        let flood = Flood { stop, seen, threads };
        let deadline = Instant::now() + Duration::from_millis(SHEDDING_TIMEOUT_MS);
        while flood.shed() == 0 {
            if Instant::now() > deadline {
                let waits = measured_waits(api);
                flood.stop();
                return Err(format!(
                    "the flood was not shed within {SHEDDING_TIMEOUT_MS} ms (the shards' waits: {waits})"
                ));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(flood)
    }

    /// Requests refused with 503 -1008 so far.
    pub fn shed(&self) -> u64 {
        self.seen.shed.load(Ordering::SeqCst)
    }

    /// When the last refusal arrived.
    pub fn last_shed(&self) -> Option<Instant> {
        *self.seen.last_shed.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

/// The `tradsys_overload_wait_us` lines of `/metrics`, for a failure.
fn measured_waits(api: SocketAddr) -> String {
    let reply = Conn::open(api).and_then(|mut c| c.request(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n"));
    match reply {
        Ok(reply) => reply
            .text()
            .lines()
            .filter(|l| l.starts_with("tradsys_overload_wait_us{"))
            .collect::<Vec<_>>()
            .join(", "),
        Err(e) => e.0,
    }
}

/// One flood thread: its connections each get `PIPELINE` requests, then
/// every answer is read, round after round, until told to stop or the
/// server goes away.
fn flood(api: SocketAddr, stop: &AtomicBool, seen: &Seen) {
    let mut conns: Vec<Conn> = (0..CONNECTIONS).filter_map(|_| Conn::open(api).ok()).collect();
    let batch = REQUEST.repeat(PIPELINE);
    while !stop.load(Ordering::SeqCst) && !conns.is_empty() {
        conns.retain_mut(|c| c.send(&batch).is_ok());
        conns.retain_mut(|c| {
            for _ in 0..PIPELINE {
                match c.response() {
                    Ok(reply) if reply.status == 503 && reply.code() == Some(SERVER_BUSY) => {
                        seen.shed.fetch_add(1, Ordering::SeqCst);
                        *seen.last_shed.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
                    }
                    Ok(_) => {}
                    Err(_) => return false,
                }
            }
            true
        });
    }
}
