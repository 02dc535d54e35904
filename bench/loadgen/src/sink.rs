//! `webhook-sink`: a webhook receiver for bench/webhooks.sh. It accepts
//! HTTP/1.1 POSTs on 127.0.0.1 (a thread per connection, keep-alive),
//! answers each `200` with no body, and once it has `expect` requests
//! prints how many came and the seconds from the first to the last.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Connections the sink serves at once at most.
const CONNECTIONS_MAX: u64 = 4096;

struct Counts {
    received: AtomicU64,
    first: Mutex<Option<Instant>>,
    last: Mutex<Option<Instant>>,
    connections: AtomicU64,
}

/// Listens on `port` (0: any; the port is printed) until `expect` requests
/// came, then reports.
pub fn run(port: u16, expect: u64) -> Result<(), String> {
    let listener = TcpListener::bind(("127.0.0.1", port)).map_err(|e| format!("bind: {e}"))?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    println!("listening {port}");
    let counts = Arc::new(Counts {
        received: AtomicU64::new(0),
        first: Mutex::new(None),
        last: Mutex::new(None),
        connections: AtomicU64::new(0),
    });
    let watcher = counts.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            if watcher.connections.fetch_add(1, Ordering::Relaxed) >= CONNECTIONS_MAX {
                watcher.connections.fetch_sub(1, Ordering::Relaxed);
                continue;
            }
            let counts = watcher.clone();
            std::thread::spawn(move || {
                serve(stream, &counts);
                counts.connections.fetch_sub(1, Ordering::Relaxed);
            });
        }
    });
    while counts.received.load(Ordering::Relaxed) < expect {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let first = counts.first.lock().map_err(|_| "lock")?.ok_or("no request")?;
    let last = counts.last.lock().map_err(|_| "lock")?.ok_or("no request")?;
    let seconds = last.duration_since(first).as_secs_f64();
    let received = counts.received.load(Ordering::Relaxed);
    println!(
        "received {received} in {seconds:.3} s: {:.0} per second",
        received as f64 / seconds.max(1e-9)
    );
    Ok(())
}

fn serve(mut stream: TcpStream, counts: &Counts) {
    let mut buf = Vec::with_capacity(8192);
    let mut chunk = [0u8; 16384];
    loop {
        let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|at| at + 4) else {
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + length {
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.drain(..head_end + length);
        let now = Instant::now();
        if let Ok(mut first) = counts.first.lock() {
            first.get_or_insert(now);
        }
        if let Ok(mut last) = counts.last.lock() {
            *last = Some(now);
        }
        counts.received.fetch_add(1, Ordering::Relaxed);
        if stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            .is_err()
        {
            return;
        }
    }
}
