//! `run --api ws`: the crossing pairs of `run`, sent as `order.place` over
//! the WebSocket API (`/ws-api/v3`), one connection per user, as a trading
//! client that keeps one session per account would.
//!
//! Order `n` of the run (pair `n / 2`, SELL then BUY) is due at the same
//! intended time as in REST mode, `start + n / rate`, and goes out on its
//! user's connection; its latency is taken from that intended time, so a
//! stall is charged to every order that should have gone out meanwhile.
//! Requests are pipelined: a connection carries up to `window` requests
//! whose answers have not come back, and answers are matched to requests
//! by `id` (the order's number `n`, unique in the run).
//!
//! The two users of a pair are on two connections, so users are grouped
//! into the components of the "trades with" relation over one period of
//! the plan (with as many users on each shard, user `i` of one shard
//! always trades with user `i` of the other), and a thread owns every
//! connection of the components dealt to it. Each component sends its own
//! pairs in the run's order: when the next order's connection is full, that
//! component waits for an answer (and the wait counts in the order's
//! latency) while the others go on. The SELL and BUY of a pair are thus
//! never further apart than one window; whichever arrives first rests and
//! the other takes it.
//!
//! Requests take one of two forms:
//! - signed (the default): each request carries `apiKey` and is signed
//!   just before it is sent, with the current time: HMAC-SHA256 over every
//!   parameter but `signature`, sorted by name
//!   (`orders::ws_order_request`);
//! - logged on (`logon`): right after the connections open, before the
//!   common start, each sends `session.logon` with its user's Ed25519 key
//!   (`orders::ws_logon_request`) and waits, at most `LOGON_TIMEOUT_MS`,
//!   for a 200 answer; any other answer, or none, is an error of the run
//!   that names the user. Its orders then go without `apiKey` and
//!   `signature`, still with `timestamp` and `recvWindow`
//!   (`orders::ws_session_order_request`): the server authorizes them with
//!   the session's key, with no signature to check.
//!
//! A connection that fails has its unanswered requests counted as failed
//! and is opened (and logged on) again once; if that fails too, its later
//! orders count as failed without being sent.

use std::collections::{HashMap, VecDeque};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use crate::orders::{now_ms, ws_logon_request, ws_order_request, ws_session_order_request, Plan};
use crate::run::{Rate, Settings, Tally};
use crate::users::User;
use crate::wsclient::{self, Conn};

/// Threads the connections may be shared among.
pub const THREADS_MAX: usize = 64;
/// Requests in flight on one connection at most, whatever is asked.
pub const WINDOW_MAX: usize = 1024;
/// Requests in flight on one connection unless asked otherwise.
pub const WINDOW_DEFAULT: usize = 8;
/// Connections (users) one run may open: one fd each, well below the
/// process's file limit.
pub const CONNECTIONS_MAX: usize = 4096;
/// Bytes read from a socket at once.
const READ_SCRATCH_BYTES: usize = 64 * 1024;
/// Longest sleep between two looks at the clock when nothing is due.
const IDLE_WAIT_MS: u64 = 100;
/// Time the threads get to connect before the common start.
const START_DELAY_MS: u64 = 500;
/// How long a connection's `session.logon` may take to be answered.
const LOGON_TIMEOUT_MS: u64 = 10_000;

/// The URL path of the WebSocket API, with the `returnRateLimits` choice.
pub fn path(return_rate_limits: bool) -> &'static str {
    if return_rate_limits {
        "/ws-api/v3"
    } else {
        "/ws-api/v3?returnRateLimits=false"
    }
}

/// A request sent and not yet answered.
struct Pending {
    id: u64,
    intended: Instant,
    measured: bool,
}

/// One user's connection.
struct Link {
    user: usize,
    conn: Option<Conn>,
    in_flight: VecDeque<Pending>,
    /// Frames to write before the next wait.
    out: Vec<u8>,
}

/// What every thread reads: the users and who sends whose orders.
struct Shared {
    users: Vec<User>,
    deal: Deal,
}

/// Users grouped by whom they trade with, and the groups dealt to threads.
struct Deal {
    /// The component of each user (index in `users`).
    component_of: Vec<usize>,
    /// The thread of each component.
    thread_of: Vec<usize>,
    /// The pairs `k` in `0..period` whose users are in each component.
    pairs: Vec<Vec<u64>>,
    period: u64,
    /// Threads that own at least one component.
    threads: usize,
}

/// Runs the load; returns the merged tally, the common start and the
/// errors of threads that could not open their connections.
pub fn run(settings: &Settings, users: &[User]) -> (Tally, Instant, Vec<String>) {
    let index_of: HashMap<u64, usize> = users.iter().enumerate().map(|(i, u)| (u.id, i)).collect();
    let deal = deal(users, &index_of, settings.threads);
    let threads = deal.threads;
    let shared = Arc::new(Shared {
        users: users.to_vec(),
        deal,
    });
    let barrier = Arc::new(Barrier::new(threads + 1));
    let start_cell = Arc::new(OnceLock::<Instant>::new());
    // With logon, set by a thread whose sessions could not be opened or
    // logged on: then no thread sends, since the run would not measure
    // what was asked.
    let logon_failed = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::with_capacity(threads);
    for t in 0..threads {
        let (shared, barrier, start_cell) = (Arc::clone(&shared), Arc::clone(&barrier), Arc::clone(&start_cell));
        let logon_failed = Arc::clone(&logon_failed);
        let job = Job {
            target: settings.target.clone(),
            path: path(settings.return_rate_limits),
            rate: settings.rate,
            warmup: Duration::from_secs(settings.warmup_s),
            duration: Duration::from_secs(settings.duration_s),
            overrun: settings.overrun(),
            recv_window_ms: settings.recv_window_ms,
            window: settings.window,
            thread: t,
            logon: settings.logon,
        };
        handles.push(thread::spawn(move || {
            let links = job.connect(&shared);
            if job.logon && links.is_err() {
                logon_failed.store(true, Ordering::Relaxed);
            }
            barrier.wait();
            let start = *start_cell.get().expect("start time is set before the barrier opens");
            let mut links = links?;
            if logon_failed.load(Ordering::Relaxed) {
                return Err(format!(
                    "thread {t} did not send: another thread's sessions could not be opened or logged on"
                ));
            }
            Ok(job.send(&shared, &mut links, start))
        }));
    }
    let start = Instant::now() + Duration::from_millis(START_DELAY_MS);
    start_cell.set(start).expect("start time is set once");
    barrier.wait();
    let mut total = Tally::new();
    let mut errors = Vec::new();
    for h in handles {
        match h.join() {
            Ok(Ok(t)) => total.merge(t),
            Ok(Err(e)) => errors.push(e),
            Err(_) => errors.push("a sender thread panicked".to_string()),
        }
    }
    (total, start, errors)
}

/// Groups users into the components of "trades with" over one period of
/// the plan and deals the components round-robin to at most `threads`
/// threads, in order of their smallest member.
fn deal(users: &[User], index_of: &HashMap<u64, usize>, threads: usize) -> Deal {
    let plan = Plan::new(users);
    let period = plan.period();
    let mut parent: Vec<usize> = (0..users.len()).collect();
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    let seller = |k: u64| index_of[&plan.pair(k)[0].user.id];
    for k in 0..period {
        let [sell, buy] = plan.pair(k);
        let (a, b) = (index_of[&sell.user.id], index_of[&buy.user.id]);
        let (ra, rb) = (root(&mut parent, a), root(&mut parent, b));
        if ra != rb {
            parent[ra.max(rb)] = ra.min(rb);
        }
    }
    let mut dense: HashMap<usize, usize> = HashMap::new();
    let component_of: Vec<usize> = (0..users.len())
        .map(|i| {
            let r = root(&mut parent, i);
            let next = dense.len();
            *dense.entry(r).or_insert(next)
        })
        .collect();
    let components = dense.len();
    let mut pairs = vec![Vec::new(); components];
    for k in 0..period {
        pairs[component_of[seller(k)]].push(k);
    }
    Deal {
        thread_of: (0..components).map(|c| c % threads).collect(),
        threads: components.min(threads),
        component_of,
        pairs,
        period,
    }
}

/// Where one component is in its own sequence of pairs.
struct Cursor {
    component: usize,
    /// How many whole periods are behind it.
    round: u64,
    /// Index in the component's pairs of one period.
    at: usize,
    /// 0: the pair's SELL is next, 1: its BUY.
    half: usize,
    done: bool,
}

impl Cursor {
    fn k(&self, deal: &Deal) -> u64 {
        self.round * deal.period + deal.pairs[self.component][self.at]
    }

    fn advance(&mut self, deal: &Deal) {
        if self.half == 0 {
            self.half = 1;
            return;
        }
        self.half = 0;
        self.at += 1;
        if self.at == deal.pairs[self.component].len() {
            self.at = 0;
            self.round += 1;
        }
    }
}

/// One sender thread's settings.
struct Job {
    target: String,
    path: &'static str,
    rate: Rate,
    warmup: Duration,
    duration: Duration,
    overrun: Duration,
    recv_window_ms: u64,
    window: usize,
    thread: usize,
    /// Log each connection on with `session.logon` and send orders in the
    /// logged-on form.
    logon: bool,
}

impl Job {
    /// Opens the connections of this thread's users (and logs them on).
    fn connect(&self, shared: &Shared) -> Result<Vec<Link>, String> {
        let deal = &shared.deal;
        let mine: Vec<usize> = (0..shared.users.len())
            .filter(|&i| deal.thread_of[deal.component_of[i]] == self.thread)
            .collect();
        let conns = wsclient::open_many(&self.target, self.path, mine.len())
            .map_err(|e| format!("open {}{}: {e}", self.target, self.path))?;
        let mut links: Vec<Link> = mine
            .into_iter()
            .zip(conns)
            .map(|(user, conn)| Link {
                user,
                conn: Some(conn),
                in_flight: VecDeque::with_capacity(self.window),
                out: Vec::with_capacity(4096),
            })
            .collect();
        if self.logon {
            self.log_on(&shared.users, &mut links)?;
        }
        Ok(links)
    }

    /// Logs the links' connections on: sends every `session.logon` (its
    /// user's Ed25519 key, `id` the user's index), then reads until each
    /// has its answer. An answer other than 200 for the user's key, a lost
    /// connection, or no answer within `LOGON_TIMEOUT_MS` is an error that
    /// names the user.
    fn log_on(&self, users: &[User], links: &mut [Link]) -> Result<(), String> {
        let mut frame = Vec::with_capacity(512);
        let mut waiting = Vec::with_capacity(links.len());
        for (l, link) in links.iter_mut().enumerate() {
            let user = &users[link.user];
            let Some(conn) = link.conn.as_mut() else {
                continue;
            };
            let key = user
                .ed25519
                .as_ref()
                .ok_or_else(|| format!("session.logon of user {}: the user has no Ed25519 key", user.id))?;
            let request = ws_logon_request(key, link.user as u64, now_ms(), self.recv_window_ms);
            frame.clear();
            wsclient::push_text_frame(&mut frame, request.as_bytes());
            wsclient::write_all(&mut conn.stream, &frame)
                .map_err(|e| format!("session.logon of user {}: write: {e}", user.id))?;
            waiting.push(l);
        }
        let deadline = Instant::now() + Duration::from_millis(LOGON_TIMEOUT_MS);
        let mut scratch = vec![0u8; READ_SCRATCH_BYTES];
        let mut fds: Vec<libc::pollfd> = Vec::with_capacity(waiting.len());
        while let Some(&first) = waiting.first() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "session.logon of user {} not answered within {LOGON_TIMEOUT_MS} ms ({} sessions waiting)",
                    users[links[first].user].id,
                    waiting.len()
                ));
            }
            fds.clear();
            for &l in &waiting {
                if let Some(conn) = &links[l].conn {
                    fds.push(libc::pollfd {
                        fd: conn.stream.as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    });
                }
            }
            // SAFETY: `fds` is valid for its length during the call.
            let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, left.as_millis() as i32) };
            if rc <= 0 {
                continue;
            }
            let mut answered = Vec::new();
            for (i, fd) in fds.iter().enumerate() {
                if fd.revents == 0 {
                    continue;
                }
                let link = &mut links[waiting[i]];
                let user = &users[link.user];
                let Some(conn) = link.conn.as_mut() else {
                    continue;
                };
                let mut verdict = None;
                conn.read_frames(&mut scratch, |text| {
                    verdict.get_or_insert_with(|| logon_verdict(text, link.user as u64, user));
                })
                .map_err(|gone| {
                    format!(
                        "session.logon of user {}: connection lost: {}",
                        user.id,
                        crate::wsidle::describe(&gone)
                    )
                })?;
                match verdict {
                    Some(Ok(())) => answered.push(waiting[i]),
                    Some(Err(why)) => return Err(format!("session.logon of user {}: {why}", user.id)),
                    None => {}
                }
            }
            waiting.retain(|l| !answered.contains(l));
        }
        Ok(())
    }

    /// Sends this thread's orders on schedule and reads the answers until
    /// every order of the run is answered or the hard end has come.
    fn send(&self, shared: &Shared, links: &mut [Link], start: Instant) -> Tally {
        let plan = Plan::new(&shared.users);
        let deal = &shared.deal;
        let link_of: HashMap<u64, usize> = links
            .iter()
            .enumerate()
            .map(|(l, link)| (shared.users[link.user].id, l))
            .collect();
        let mut cursors: Vec<Cursor> = (0..deal.pairs.len())
            .filter(|&c| deal.thread_of[c] == self.thread && !deal.pairs[c].is_empty())
            .map(|component| Cursor {
                component,
                round: 0,
                at: 0,
                half: 0,
                done: false,
            })
            .collect();
        let hard_end = start + self.warmup + self.duration + self.overrun;
        let mut tally = Tally::new();
        let mut scratch = vec![0u8; READ_SCRATCH_BYTES];
        let mut fds: Vec<libc::pollfd> = Vec::with_capacity(links.len());
        let mut fd_links: Vec<usize> = Vec::with_capacity(links.len());
        loop {
            let mut wake_at = Instant::now() + Duration::from_millis(IDLE_WAIT_MS);
            for cursor in cursors.iter_mut().filter(|c| !c.done) {
                if let Some(at) = self.send_due(cursor, deal, &plan, links, &link_of, start, &mut tally) {
                    wake_at = wake_at.min(at);
                }
            }
            for link in links.iter_mut() {
                self.flush(shared, link, &mut tally);
            }
            let sending = cursors.iter().any(|c| !c.done);
            let now = Instant::now();
            if !sending && links.iter().all(|l| l.in_flight.is_empty()) {
                break;
            }
            if now >= hard_end {
                let left: usize = links.iter().map(|l| l.in_flight.len()).sum();
                tally.abandoned += left as u64;
                if sending {
                    tally.first_problem.get_or_insert_with(|| {
                        format!("thread {} was still behind schedule at the hard end", self.thread)
                    });
                }
                break;
            }
            let timeout = wake_at.min(hard_end).saturating_duration_since(now);
            self.wait(links, &mut fds, &mut fd_links, timeout);
            for (i, fd) in fds.iter().enumerate() {
                if fd.revents != 0 {
                    self.read(shared, &mut links[fd_links[i]], &mut scratch, &mut tally);
                }
            }
        }
        tally
    }

    /// Queues the component's orders that are due, while their connections
    /// have room. Returns when the next one falls due, if it is not due yet.
    #[allow(clippy::too_many_arguments)]
    fn send_due(
        &self,
        cursor: &mut Cursor,
        deal: &Deal,
        plan: &Plan,
        links: &mut [Link],
        link_of: &HashMap<u64, usize>,
        start: Instant,
        tally: &mut Tally,
    ) -> Option<Instant> {
        let measure_from = start + self.warmup;
        let end = start + self.warmup + self.duration;
        loop {
            let now = Instant::now();
            let k = cursor.k(deal);
            let n = 2 * k + cursor.half as u64;
            let intended = match self.rate.offset(n) {
                Some(offset) => start + offset,
                None => now.max(start),
            };
            // Stop only between pairs, so that no SELL is left without its
            // BUY.
            if cursor.half == 0 && intended >= end {
                cursor.done = true;
                return None;
            }
            if intended > now {
                return Some(intended);
            }
            let order = plan.pair(k)[cursor.half];
            let link = &mut links[link_of[&order.user.id]];
            if link.in_flight.len() >= self.window {
                return None;
            }
            let measured = intended >= measure_from;
            if link.conn.is_some() {
                let text = if self.logon {
                    ws_session_order_request(&order, n, now_ms(), self.recv_window_ms)
                } else {
                    ws_order_request(&order, n, now_ms(), self.recv_window_ms)
                };
                wsclient::push_text_frame(&mut link.out, text.as_bytes());
                link.in_flight.push_back(Pending {
                    id: n,
                    intended,
                    measured,
                });
            } else if measured {
                tally.failed += 1;
            }
            cursor.advance(deal);
        }
    }

    /// Writes what `link` has queued; a failed write fails the link.
    fn flush(&self, shared: &Shared, link: &mut Link, tally: &mut Tally) {
        if link.out.is_empty() {
            return;
        }
        let Some(conn) = link.conn.as_mut() else {
            link.out.clear();
            return;
        };
        let result = wsclient::write_all(&mut conn.stream, &link.out);
        link.out.clear();
        if let Err(e) = result {
            self.fail(shared, link, &format!("write: {e}"), tally);
        }
    }

    /// Waits until a connection has input or `timeout` has passed.
    fn wait(&self, links: &[Link], fds: &mut Vec<libc::pollfd>, fd_links: &mut Vec<usize>, timeout: Duration) {
        fds.clear();
        fd_links.clear();
        for (l, link) in links.iter().enumerate() {
            if let Some(conn) = &link.conn {
                fds.push(libc::pollfd {
                    fd: conn.stream.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                });
                fd_links.push(l);
            }
        }
        let ts = libc::timespec {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        // SAFETY: `fds` is valid for its length and `ts` outlives the call;
        // ppoll (not poll) because its timeout has nanosecond resolution,
        // which a schedule of microseconds needs.
        let rc = unsafe { libc::ppoll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, &ts, std::ptr::null()) };
        if rc <= 0 {
            for fd in fds.iter_mut() {
                fd.revents = 0;
            }
        }
    }

    /// Reads what one connection holds and counts the answers in it.
    fn read(&self, shared: &Shared, link: &mut Link, scratch: &mut [u8], tally: &mut Tally) {
        let Link { conn, in_flight, .. } = &mut *link;
        let Some(conn) = conn.as_mut() else {
            return;
        };
        let result = conn.read_frames(scratch, |text| answer(in_flight, text, tally));
        if let Err(gone) = result {
            let why = crate::wsidle::describe(&gone);
            self.fail(shared, link, &why, tally);
        }
    }

    /// Counts the link's unanswered requests as failed and opens it (and
    /// logs it on) again; a link that cannot be reopened stays closed.
    fn fail(&self, shared: &Shared, link: &mut Link, why: &str, tally: &mut Tally) {
        for pending in link.in_flight.drain(..) {
            if pending.measured {
                tally.failed += 1;
            }
        }
        link.out.clear();
        tally
            .first_problem
            .get_or_insert_with(|| format!("connection of user index {} lost: {why}", link.user));
        link.conn = wsclient::open_many(&self.target, self.path, 1)
            .ok()
            .and_then(|mut conns| conns.pop());
        if self.logon && link.conn.is_some() {
            if let Err(e) = self.log_on(&shared.users, std::slice::from_mut(link)) {
                link.conn = None;
                tally.first_problem.get_or_insert(e);
            }
        }
    }
}

/// Whether `text` is the 200 answer to `session.logon` request `id` for
/// `user`'s Ed25519 key; `Err` says what it is instead.
fn logon_verdict(text: &[u8], id: u64, user: &User) -> Result<(), String> {
    let shown = || String::from_utf8_lossy(text).into_owned();
    match answer_head(text) {
        Some((answer_id, 200)) if answer_id == id => {}
        Some(_) => return Err(format!("answered {}", shown())),
        None => return Err(format!("unexpected frame {}", shown())),
    }
    let v: serde_json::Value = serde_json::from_slice(text).map_err(|e| format!("{e}: {}", shown()))?;
    let expected = user.ed25519.as_ref().map(|k| k.api_key.as_str());
    if v["result"]["apiKey"].as_str() != expected {
        return Err(format!("logged on with another key: {}", shown()));
    }
    Ok(())
}

/// Matches one answer to its request and counts it if it was measured.
fn answer(in_flight: &mut VecDeque<Pending>, text: &[u8], tally: &mut Tally) {
    let done = Instant::now();
    let Some((id, status)) = answer_head(text) else {
        tally
            .first_problem
            .get_or_insert_with(|| format!("unexpected frame: {}", String::from_utf8_lossy(text)));
        return;
    };
    // Answers come in request order, so the match is almost always first.
    let Some(pending) = in_flight
        .iter()
        .position(|p| p.id == id)
        .and_then(|i| in_flight.remove(i))
    else {
        tally
            .first_problem
            .get_or_insert_with(|| format!("answer to no request in flight: id {id}"));
        return;
    };
    if pending.measured {
        if status != 200 {
            tally
                .first_problem
                .get_or_insert_with(|| format!("status {status}: {}", String::from_utf8_lossy(text)));
        }
        tally.answer(pending.intended, done, status == 200, text);
    }
}

/// The `id` and `status` of an answer. tradsys writes them first, in that
/// order, so a prefix read is tried before parsing the JSON.
pub fn answer_head(text: &[u8]) -> Option<(u64, u16)> {
    fn number(text: &[u8]) -> Option<(u64, &[u8])> {
        let digits = text.iter().take_while(|b| b.is_ascii_digit()).count();
        let value = std::str::from_utf8(&text[..digits]).ok()?.parse().ok()?;
        Some((value, &text[digits..]))
    }
    let fast = || {
        let (id, rest) = number(text.strip_prefix(b"{\"id\":")?)?;
        let (status, _) = number(rest.strip_prefix(b",\"status\":")?)?;
        Some((id, u16::try_from(status).ok()?))
    };
    fast().or_else(|| {
        // Stream events carry no status: not worth parsing.
        if !text.windows(b"\"status\"".len()).any(|w| w == b"\"status\"") {
            return None;
        }
        let v: serde_json::Value = serde_json::from_slice(text).ok()?;
        Some((v["id"].as_u64()?, u16::try_from(v["status"].as_u64()?).ok()?))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answer_head_reads_id_and_status_in_either_layout() {
        let table: &[(&str, Option<(u64, u16)>)] = &[
            (r#"{"id":17,"status":200,"result":{}}"#, Some((17, 200))),
            (
                r#"{"id":0,"status":400,"error":{"code":-1102,"msg":"m"}}"#,
                Some((0, 400)),
            ),
            (r#"{"status":429,"id":5,"error":{}}"#, Some((5, 429))),
            (r#"{"id":null,"status":400,"error":{}}"#, None),
            (r#"{"id":"a","status":200}"#, None),
            ("not json", None),
        ];
        for (text, expected) in table {
            assert_eq!(answer_head(text.as_bytes()), *expected, "{text}");
        }
    }

    #[test]
    fn logon_verdict_wants_200_for_the_request_and_the_users_key() {
        let user = User {
            id: 1,
            shard: 0,
            api_key: "HMAC".to_string(),
            secret: String::new(),
            ed25519: Some(crate::users::Ed25519Key {
                api_key: "ED".to_string(),
                signing: ed25519_dalek::SigningKey::from_bytes(&[7; 32]),
            }),
        };
        let ok = r#"{"id":3,"status":200,"result":{"apiKey":"ED","authorizedSince":1,"connectedSince":1}}"#;
        assert_eq!(logon_verdict(ok.as_bytes(), 3, &user), Ok(()));
        assert!(
            logon_verdict(ok.as_bytes(), 4, &user).is_err(),
            "another request's answer"
        );
        let other_key = r#"{"id":3,"status":200,"result":{"apiKey":"HMAC"}}"#;
        assert!(logon_verdict(other_key.as_bytes(), 3, &user).is_err());
        let refused =
            r#"{"id":3,"status":401,"error":{"code":-1022,"msg":"Signature for this request is not valid."}}"#;
        let why = logon_verdict(refused.as_bytes(), 3, &user).expect_err("refused");
        assert!(why.contains("-1022"), "{why}");
    }

    fn users(per_shard: u64) -> Vec<User> {
        (0..2 * per_shard)
            .map(|i| User {
                id: 100 + i,
                shard: (i % 2) as u32,
                api_key: String::new(),
                secret: String::new(),
                ed25519: None,
            })
            .collect()
    }

    #[test]
    fn both_users_of_every_pair_are_on_one_thread() {
        for (per_shard, threads) in [(16, 2), (16, 3), (3, 2), (5, 64), (1, 2)] {
            let users = users(per_shard);
            let index_of: HashMap<u64, usize> = users.iter().enumerate().map(|(i, u)| (u.id, i)).collect();
            let deal = deal(&users, &index_of, threads);
            assert!((1..=threads).contains(&deal.threads), "{per_shard} {threads}");
            assert!(
                deal.thread_of.iter().all(|&t| t < deal.threads),
                "{per_shard} {threads}"
            );
            let plan = Plan::new(&users);
            for k in 0..2 * deal.period {
                let [sell, buy] = plan.pair(k);
                let (a, b) = (index_of[&sell.user.id], index_of[&buy.user.id]);
                assert_eq!(
                    deal.component_of[a], deal.component_of[b],
                    "pair {k} with {per_shard} users per shard on {threads} threads"
                );
            }
            // Every pair of a period belongs to exactly one component.
            let listed: usize = deal.pairs.iter().map(Vec::len).sum();
            assert_eq!(listed as u64, deal.period);
        }
        // Equal groups pair user i of one shard with user i of the other:
        // 16 components of two, so two threads get 8 each.
        let users = users(16);
        let index_of: HashMap<u64, usize> = users.iter().enumerate().map(|(i, u)| (u.id, i)).collect();
        let deal = deal(&users, &index_of, 2);
        assert_eq!((deal.pairs.len(), deal.threads), (16, 2));
        assert_eq!(deal.thread_of.iter().filter(|&&t| t == 0).count(), 8);
    }

    #[test]
    fn a_cursor_walks_its_component_pairs_in_order_over_periods() {
        let users = users(3);
        let index_of: HashMap<u64, usize> = users.iter().enumerate().map(|(i, u)| (u.id, i)).collect();
        let deal = deal(&users, &index_of, 2);
        let plan = Plan::new(&users);
        let component = deal.component_of[0];
        let mut cursor = Cursor {
            component,
            round: 0,
            at: 0,
            half: 0,
            done: false,
        };
        let mut expected =
            (0..3 * deal.period).filter(|&k| deal.component_of[index_of[&plan.pair(k)[0].user.id]] == component);
        for _ in 0..2 * deal.pairs[component].len() + 3 {
            let k = cursor.k(&deal);
            assert_eq!(Some(k), expected.next());
            assert_eq!(cursor.half, 0);
            cursor.advance(&deal);
            assert_eq!((cursor.k(&deal), cursor.half), (k, 1));
            cursor.advance(&deal);
        }
    }
}
