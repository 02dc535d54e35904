//! Open-loop REST order load from one thread: `--api rest-open`.
//!
//! The thread-per-connection generator (`run`) spends its core on context
//! switches long before it can offer several times what a shard serves.
//! This one drives every connection from one epoll loop: order `n` is due
//! at `start + n / rate`; a due order goes out on any connection that has
//! no request in flight (a client waits for its order's answer before the
//! next, as trading clients do), and its latency counts from when it was
//! due. When every connection is busy, due orders wait in the generator
//! and are charged for that wait: the server is offered the rate whether
//! or not it keeps up. A request unanswered after `RESPONSE_TIMEOUT_MS`
//! counts as failed and its connection is replaced.
//!
//! So that the generator's own work stays far below the server's, the
//! requests are signed before the run (a pool of [`POOL_MAX`], timestamped
//! at the start and reused in turn: pass a `--recv-window` longer than the
//! run) and each costs only its write and read.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use crate::http::RESPONSE_TIMEOUT_MS;
use crate::orders::{now_ms, order_body, Plan};
use crate::run::{Rate, Settings, Tally};
use crate::users::User;

/// Connections one run may open (the open-file limit allows a few more).
pub const CONNECTIONS_MAX: u64 = 16_384;
/// Signed requests made before the run and reused in turn.
const POOL_MAX: u64 = 200_000;
/// Events taken from epoll per wait.
const EVENTS_MAX: usize = 1024;
/// Response bytes one connection buffers at most (an order's answer is
/// well under 1 KiB).
const RESPONSE_BYTES_MAX: usize = 64 * 1024;
/// Longest one wait for answers lasts.
const WAIT_MAX: Duration = Duration::from_millis(10);
/// Time the connections get to open before the common start.
const START_DELAY_MS: u64 = 200;
/// Time after the scheduled end the last answers may take.
const OVERRUN_MS: u64 = RESPONSE_TIMEOUT_MS + 1_000;

struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    /// The intended time of the order in flight and whether it is in the
    /// measured window.
    in_flight: Option<(Instant, bool)>,
    sent_at: Instant,
}

pub fn run(settings: &Settings, users: &[User]) -> (Tally, Instant, Vec<String>) {
    let mut errors = Vec::new();
    let rate = match settings.rate {
        Rate::PerS(rate) => rate,
        Rate::Max => {
            errors.push("--api rest-open needs a rate".to_string());
            return (Tally::new(), Instant::now(), errors);
        }
    };
    // SAFETY: epoll_create1 takes a flag and returns a new descriptor or -1.
    let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if epoll < 0 {
        errors.push(format!("epoll_create1: {}", io::Error::last_os_error()));
        return (Tally::new(), Instant::now(), errors);
    }
    let mut conns: Vec<Conn> = Vec::with_capacity(settings.connections);
    let mut idle: VecDeque<usize> = VecDeque::with_capacity(settings.connections);
    for c in 0..settings.connections {
        match open(&settings.target, epoll, c) {
            Ok(conn) => {
                conns.push(conn);
                idle.push_back(c);
            }
            Err(e) => {
                errors.push(format!("connect {}: {e}", settings.target));
                break;
            }
        }
    }
    let plan = Plan::new(users);
    let total = rate * (settings.warmup_s + settings.duration_s);
    let signed_ms = now_ms();
    let pool: Vec<Vec<u8>> = (0..total.clamp(1, POOL_MAX))
        .map(|k| {
            let order = plan.pair(k / 2)[(k % 2) as usize];
            let body = order_body(&order, signed_ms, settings.recv_window_ms);
            format!(
                "POST /api/v3/order HTTP/1.1\r\nHost: 127.0.0.1\r\nX-MBX-APIKEY: {}\r\nContent-Type: \
                 application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
                order.user.api_key,
                body.len()
            )
            .into_bytes()
        })
        .collect();
    let mut tally = Tally::new();
    let start = Instant::now() + Duration::from_millis(START_DELAY_MS);
    let measure_from = start + Duration::from_secs(settings.warmup_s);
    let hard_end =
        start + Duration::from_secs(settings.warmup_s + settings.duration_s) + Duration::from_millis(OVERRUN_MS);
    let timeout = Duration::from_millis(RESPONSE_TIMEOUT_MS);
    let mut next: u64 = 0;
    let mut in_flight = 0usize;
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; EVENTS_MAX];
    let mut last_sweep = Instant::now();
    while (next < total || in_flight > 0) && Instant::now() < hard_end && !conns.is_empty() {
        let now = Instant::now();
        // Every due order that finds an idle connection goes out now.
        while next < total {
            let due = start + Rate::PerS(rate).offset(next).unwrap_or_default();
            if due > now {
                break;
            }
            let Some(c) = idle.pop_front() else { break };
            let request = &pool[(next % pool.len() as u64) as usize];
            let conn = &mut conns[c];
            // One request in flight and a fresh send buffer: it fits.
            if conn.stream.write_all(request).is_err() {
                if due >= measure_from {
                    tally.failed += 1;
                }
                replace(&mut conns, c, &settings.target, epoll, &mut idle, &mut errors);
                next += 1;
                continue;
            }
            conn.in_flight = Some((due, due >= measure_from));
            conn.sent_at = now;
            in_flight += 1;
            next += 1;
        }
        // Until the next order is due, to the nanosecond: a wait rounded
        // down to whole milliseconds (epoll_wait's) spins through the last
        // one, and at a few thousand orders a second that is always.
        let wait = if next < total && !idle.is_empty() {
            let due = start + Rate::PerS(rate).offset(next).unwrap_or_default();
            due.saturating_duration_since(Instant::now()).min(WAIT_MAX)
        } else {
            WAIT_MAX
        };
        let wait_for = libc::timespec {
            tv_sec: wait.as_secs() as libc::time_t,
            tv_nsec: wait.subsec_nanos().into(),
        };
        // SAFETY: `events` has EVENTS_MAX entries for the kernel to fill;
        // `wait_for` outlives the call; no signal mask is passed.
        let n = unsafe {
            libc::epoll_pwait2(
                epoll,
                events.as_mut_ptr(),
                EVENTS_MAX as i32,
                &wait_for,
                std::ptr::null(),
            )
        };
        let n = if n < 0 { 0 } else { n as usize };
        for event in &events[..n] {
            let c = event.u64 as usize;
            match read_answer(&mut conns[c]) {
                Ok(Some((status, body))) => {
                    if let Some((due, measured)) = conns[c].in_flight.take() {
                        in_flight -= 1;
                        if measured {
                            tally.answer(due, Instant::now(), status == 200, &body);
                        }
                    }
                    idle.push_back(c);
                }
                Ok(None) => {}
                Err(_) => {
                    if let Some((_, measured)) = conns[c].in_flight.take() {
                        in_flight -= 1;
                        if measured {
                            tally.failed += 1;
                        }
                    }
                    replace(&mut conns, c, &settings.target, epoll, &mut idle, &mut errors);
                }
            }
        }
        // Requests unanswered for the timeout fail; their connections go.
        if last_sweep.elapsed() >= Duration::from_millis(100) {
            last_sweep = Instant::now();
            for c in 0..conns.len() {
                if conns[c].in_flight.is_some() && conns[c].sent_at.elapsed() > timeout {
                    if let Some((_, measured)) = conns[c].in_flight.take() {
                        in_flight -= 1;
                        if measured {
                            tally.failed += 1;
                        }
                    }
                    replace(&mut conns, c, &settings.target, epoll, &mut idle, &mut errors);
                }
            }
        }
    }
    tally.abandoned = in_flight as u64 + total.saturating_sub(next);
    // SAFETY: `epoll` is this function's descriptor, closed once.
    unsafe { libc::close(epoll) };
    (tally, start, errors)
}

fn open(target: &str, epoll: i32, c: usize) -> io::Result<Conn> {
    let stream = TcpStream::connect(target)?;
    stream.set_nodelay(true)?;
    stream.set_nonblocking(true)?;
    let mut event = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: c as u64,
    };
    // SAFETY: `event` is valid for the call; the descriptor stays open
    // while it is registered (closing it removes it).
    if unsafe { libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, stream.as_raw_fd(), &mut event) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Conn {
        stream,
        buf: Vec::with_capacity(1024),
        in_flight: None,
        sent_at: Instant::now(),
    })
}

/// Replaces connection `c` by a new one (a failed one cannot go on).
fn replace(
    conns: &mut [Conn],
    c: usize,
    target: &str,
    epoll: i32,
    idle: &mut VecDeque<usize>,
    errors: &mut Vec<String>,
) {
    idle.retain(|&i| i != c);
    match open(target, epoll, c) {
        Ok(conn) => {
            conns[c] = conn;
            idle.push_back(c);
        }
        Err(e) => errors.push(format!("reconnect {target}: {e}")),
    }
}

/// Reads what the connection has; a whole answer gives its status and body.
fn read_answer(conn: &mut Conn) -> io::Result<Option<(u16, Vec<u8>)>> {
    let mut chunk = [0u8; 4096];
    loop {
        match conn.stream.read(&mut chunk) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed")),
            Ok(n) => {
                conn.buf.extend_from_slice(&chunk[..n]);
                if conn.buf.len() > RESPONSE_BYTES_MAX {
                    return Err(io::Error::other("answer too large"));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(&conn.buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(io::Error::other(e.to_string())),
    };
    let status = response.code.unwrap_or(0);
    let body_len = response
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse::<usize>().ok())
        .unwrap_or(0);
    if conn.buf.len() < head_len + body_len {
        return Ok(None);
    }
    let body = conn.buf[head_len..head_len + body_len].to_vec();
    conn.buf.drain(..head_len + body_len);
    Ok(Some((status, body)))
}
