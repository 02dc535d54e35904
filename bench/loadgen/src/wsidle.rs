//! `ws-idle`: memory of idle subscribed WebSocket connections.
//!
//! Opens `conns` connections to `/ws/<stream>` (each subscribed to one
//! stream through its path), keeps them open answering the server's pings,
//! and weighs them twice: after `settle_s` and after `hold_s` (past the
//! server's first ping round, 20 s). Figures are differences against a
//! measurement taken just before the first connection (and, as the
//! "marginal" cost, between half and all of the connections):
//! - the server's RSS growth per connection (its user-space memory: the
//!   connection task, its queue and registry entries, and glommio's share);
//! - kernel TCP buffer memory (`/proc/net/sockstat` TCP `mem`, pages) and
//!   slab growth (`/proc/meminfo` Slab), both for the whole machine, so on
//!   loopback they count the client's socket of each connection as well.
//!
//! The requested stream is probed first; if the server does not serve it
//! (for instance `@ticker` on a server that predates it), `fallback` is
//! measured instead and the output says so.
//!
//! With `wsapi` users, the connections go to the WebSocket API
//! (`/ws-api/v3`) instead, connection `i` for user `i mod users`, and each
//! makes one user data subscription, the idle session of a client that
//! follows its account, in one of two forms:
//! - signed (the default): `userDataStream.subscribe.signature`
//!   (HMAC-signed, which Binance allows for any key type);
//! - logged on (`logon`): `session.logon` with the user's Ed25519 key (the
//!   only kind that can log on), then `userDataStream.subscribe` without
//!   parameters, on the session's key. The session then also holds its
//!   logged-on key.
//!
//! Every answer must be 200 before the connection counts as open.

use std::thread;
use std::time::{Duration, Instant};

use crate::orders::{now_ms, ws_logon_request, ws_session_subscribe_request, ws_subscribe_request, RECV_WINDOW_MS_MAX};
use crate::procfs;
use crate::users::User;
use crate::wsapi;
use crate::wsclient::{self, Conn, Epoll, Gone};

/// Connections one run may open: the file limit here is 20,000 per
/// process, and the client needs one fd per connection plus a few.
pub const CONNS_MAX: u64 = 19_000;
/// Seconds a run may hold its connections.
pub const HOLD_S_MAX: u64 = 600;
/// The `stream` that asks for connections to `/ws` with no subscription.
pub const NO_STREAM: &str = "-";
/// Bytes read from a socket at once.
const READ_SCRATCH_BYTES: usize = 64 * 1024;
/// Connections opened between two looks at the open ones.
const OPEN_POLL_EVERY_COUNT: usize = 1000;
/// Ready fds one epoll_wait returns at most.
const EPOLL_EVENTS_MAX: usize = 1024;
/// How long a batch of WebSocket API connections may take to have all its
/// subscriptions answered.
const SUBSCRIBE_TIMEOUT_MS: u64 = 30_000;

pub struct Settings {
    pub target: String,
    pub server_pid: u32,
    pub conns: usize,
    pub stream: String,
    pub fallback: Option<String>,
    pub settle_s: u64,
    pub hold_s: u64,
    /// Some: WebSocket API connections, each subscribed to one of these
    /// users' data streams; `stream` and `fallback` are then unused.
    pub wsapi: Option<Vec<User>>,
    /// WebSocket API: the URL's `returnRateLimits`.
    pub return_rate_limits: bool,
    /// WebSocket API: each session logs on (`session.logon`, the users'
    /// Ed25519 keys) and subscribes with `userDataStream.subscribe`.
    pub logon: bool,
}

/// Machine and server memory at one moment.
#[derive(Clone, Copy)]
struct Sample {
    rss: Option<u64>,
    tcp_inuse: Option<u64>,
    tcp_mem_pages: Option<u64>,
    slab: Option<u64>,
}

fn sample(pid: u32) -> Sample {
    let tcp = procfs::tcp_sockstat();
    Sample {
        rss: procfs::rss_bytes(pid),
        tcp_inuse: tcp.map(|t| t.0),
        tcp_mem_pages: tcp.map(|t| t.1),
        slab: procfs::slab_bytes(),
    }
}

pub fn run(s: &Settings) -> Result<String, String> {
    let (path, mut text) = if let Some(users) = &s.wsapi {
        let path = wsapi::path(s.return_rate_limits).to_string();
        let distinct = users.len().min(s.conns);
        let form = if s.logon {
            "session.logon (Ed25519) then one userDataStream.subscribe"
        } else {
            "one userDataStream.subscribe.signature (HMAC)"
        };
        let text = format!("connections measured: {path}, each with {form} (connection i for user i mod {distinct})\n");
        (path, text)
    } else if s.stream == NO_STREAM {
        (
            "/ws".to_string(),
            "stream measured: none (/ws without a subscription)\n".to_string(),
        )
    } else {
        let stream = choose_stream(s)?;
        let text = format!("stream measured: {stream} (requested {})\n", s.stream);
        (format!("/ws/{stream}"), text)
    };
    // The probe's connection is gone; let the server settle before weighing.
    thread::sleep(Duration::from_secs(1));
    let before = sample(s.server_pid);
    let opened = Instant::now();
    // Half first, weighed, then the rest: the second half's growth is the
    // marginal cost, free of whatever the first connections set up once.
    let half = s.conns / 2;
    let epoll = Epoll::new().map_err(|e| e.to_string())?;
    let mut tally = Tally::default();
    let mut conns = Vec::with_capacity(s.conns);
    let open = |count: usize, conns: &mut Vec<Conn>, tally: &mut Tally| match &s.wsapi {
        Some(users) => open_subscribed(&s.target, &path, users, s.logon, count, &epoll, conns, tally),
        None => open_polled(&s.target, &path, count, &epoll, conns, tally),
    };
    open(half, &mut conns, &mut tally)?;
    hold(&epoll, &mut conns, Duration::from_secs(1), &mut tally)?;
    let at_half = sample(s.server_pid);
    open(s.conns - half, &mut conns, &mut tally)?;
    text.push_str(&format!(
        "opened {} connections in {:.2} s (a 1 s pause after the first {half})\n",
        conns.len(),
        opened.elapsed().as_secs_f64()
    ));
    hold(&epoll, &mut conns, Duration::from_secs(s.settle_s), &mut tally)?;
    let settled = sample(s.server_pid);
    let marginal = |a: Option<u64>, b: Option<u64>| -> String {
        a.zip(b).map_or("n/a".to_string(), |(a, b)| {
            format!("{:.0}", (b as f64 - a as f64) / (s.conns - half) as f64)
        })
    };
    text.push_str(&format!(
        "marginal, from {half} to {} connections: server RSS {} bytes/connection, Slab {} bytes/connection \
         (both ends)\n",
        s.conns,
        marginal(at_half.rss, settled.rss),
        marginal(at_half.slab, settled.slab)
    ));
    hold(
        &epoll,
        &mut conns,
        Duration::from_secs(s.hold_s.saturating_sub(s.settle_s)),
        &mut tally,
    )?;
    let held = sample(s.server_pid);
    if s.wsapi.is_some() {
        text.push_str(&format!(
            "{}: {} answered 200, {} refused{}\n",
            if s.logon {
                "answers to session.logon and userDataStream.subscribe"
            } else {
                "subscriptions"
            },
            tally.answers_ok,
            tally.answers_refused,
            tally
                .first_refused
                .as_deref()
                .map(|r| format!(" (first: {r})"))
                .unwrap_or_default()
        ));
    }
    text.push_str(&report(s, &before, &settled, &format!("after {} s", s.settle_s), false));
    text.push_str(&report(s, &before, &held, &format!("after {} s", s.hold_s), true));
    text.push_str(&format!(
        "during the hold: {} text frames received, {} connections closed by the server{}\n",
        tally.texts,
        tally.gone,
        tally
            .first_gone
            .as_deref()
            .map(|g| format!(" (first: {g})"))
            .unwrap_or_default()
    ));
    Ok(text)
}

/// The stream to measure: the requested one if served, else the fallback.
fn choose_stream(s: &Settings) -> Result<String, String> {
    let served = |name: &str| wsclient::probe(&s.target, &format!("/ws/{name}")).map_err(|e| e.to_string());
    let status = served(&s.stream)?;
    if status == 101 {
        return Ok(s.stream.clone());
    }
    match &s.fallback {
        Some(fallback) if served(fallback)? == 101 => Ok(fallback.clone()),
        Some(fallback) => Err(format!("neither {} ({status}) nor {fallback} is served", s.stream)),
        None => Err(format!("{} is not served ({status})", s.stream)),
    }
}

/// What the held connections saw.
#[derive(Default)]
pub struct Tally {
    /// Text frames other than WebSocket API answers (stream events).
    pub texts: u64,
    pub gone: u64,
    pub first_gone: Option<String>,
    /// WebSocket API answers with status 200, and with any other.
    pub answers_ok: u64,
    pub answers_refused: u64,
    pub first_refused: Option<String>,
}

impl Tally {
    fn count_text(&mut self, text: &[u8]) {
        match wsapi::answer_head(text) {
            Some((_, 200)) => self.answers_ok += 1,
            Some(_) => {
                self.answers_refused += 1;
                self.first_refused
                    .get_or_insert_with(|| String::from_utf8_lossy(text).into_owned());
            }
            None => self.texts += 1,
        }
    }
}

/// Opens `count` more WebSocket API connections as [`open_polled`] does,
/// and has each make one user data subscription, batch by batch: with
/// `logon`, `session.logon` then, once the batch is logged on,
/// `userDataStream.subscribe`; else `userDataStream.subscribe.signature`.
/// A step whose answers have not all come within `SUBSCRIBE_TIMEOUT_MS`,
/// or any refused request, ends the run with an error.
#[allow(clippy::too_many_arguments)]
fn open_subscribed(
    target: &str,
    path: &str,
    users: &[User],
    logon: bool,
    count: usize,
    epoll: &Epoll,
    conns: &mut Vec<Conn>,
    tally: &mut Tally,
) -> Result<(), String> {
    let goal = conns.len() + count;
    while conns.len() < goal {
        let first = conns.len();
        let batch = (goal - first).min(OPEN_POLL_EVERY_COUNT);
        open_polled(target, path, batch, epoll, conns, tally)?;
        if logon {
            ask(epoll, conns, first, tally, "session.logon", |i| {
                let user = &users[i % users.len()];
                let key = user
                    .ed25519
                    .as_ref()
                    .ok_or_else(|| format!("user {} has no Ed25519 key for session.logon", user.id))?;
                Ok(ws_logon_request(key, i as u64, now_ms(), RECV_WINDOW_MS_MAX))
            })?;
            ask(epoll, conns, first, tally, "userDataStream.subscribe", |i| {
                Ok(ws_session_subscribe_request(i as u64))
            })?;
        } else {
            ask(epoll, conns, first, tally, "userDataStream.subscribe.signature", |i| {
                let user = &users[i % users.len()];
                Ok(ws_subscribe_request(user, i as u64, now_ms(), RECV_WINDOW_MS_MAX))
            })?;
        }
    }
    Ok(())
}

/// Sends connection `i`'s `request(i)` on every connection from `first`
/// on, and waits until each has answered 200; `what` names the request in
/// errors. Waits at most `SUBSCRIBE_TIMEOUT_MS`.
fn ask(
    epoll: &Epoll,
    conns: &mut [Conn],
    first: usize,
    tally: &mut Tally,
    what: &str,
    request: impl Fn(usize) -> Result<String, String>,
) -> Result<(), String> {
    let asked = (conns.len() - first) as u64;
    let answered_before = tally.answers_ok + tally.answers_refused;
    let answered = |tally: &Tally| tally.answers_ok + tally.answers_refused - answered_before;
    let mut frame = Vec::with_capacity(512);
    for (i, conn) in conns.iter_mut().enumerate().skip(first) {
        let text = request(i).map_err(|e| format!("connection {i}: {e}"))?;
        frame.clear();
        wsclient::push_text_frame(&mut frame, text.as_bytes());
        wsclient::write_all(&mut conn.stream, &frame).map_err(|e| format!("connection {i}: {what}: {e}"))?;
    }
    let deadline = Instant::now() + Duration::from_millis(SUBSCRIBE_TIMEOUT_MS);
    while answered(tally) < asked && Instant::now() < deadline {
        hold(epoll, conns, Duration::from_millis(10), tally)?;
    }
    if let Some(refused) = &tally.first_refused {
        return Err(format!("a {what} was refused: {refused}"));
    }
    if answered(tally) < asked {
        return Err(format!(
            "{} of {asked} {what} requests answered within {SUBSCRIBE_TIMEOUT_MS} ms",
            answered(tally)
        ));
    }
    Ok(())
}

/// Opens `count` more connections in batches, answering the server's
/// pings on those already open in between: on a loaded machine opening
/// 18,000 can take longer than the server's 60 s pong timeout.
pub fn open_polled(
    target: &str,
    path: &str,
    count: usize,
    epoll: &Epoll,
    conns: &mut Vec<Conn>,
    tally: &mut Tally,
) -> Result<(), String> {
    let goal = conns.len() + count;
    while conns.len() < goal {
        let batch = (goal - conns.len()).min(OPEN_POLL_EVERY_COUNT);
        for c in wsclient::open_many(target, path, batch).map_err(|e| e.to_string())? {
            epoll.add(&c.stream, conns.len() as u64).map_err(|e| e.to_string())?;
            conns.push(c);
        }
        hold(epoll, conns, Duration::ZERO, tally)?;
    }
    Ok(())
}

/// Keeps the connections open for `span` (at least one look at every
/// ready socket), answering pings.
fn hold(epoll: &Epoll, conns: &mut [Conn], span: Duration, tally: &mut Tally) -> Result<(), String> {
    let end = Instant::now() + span;
    let mut events = wsclient::events(EPOLL_EVENTS_MAX);
    let mut tokens = Vec::with_capacity(EPOLL_EVENTS_MAX);
    let mut scratch = vec![0u8; READ_SCRATCH_BYTES];
    loop {
        let left = end.saturating_duration_since(Instant::now());
        let timeout_ms = left.as_millis().min(1000) as i32;
        epoll
            .wait(&mut events, &mut tokens, timeout_ms)
            .map_err(|e| e.to_string())?;
        for &token in &tokens {
            let conn = &mut conns[token as usize];
            match conn.read_frames(&mut scratch, |text| tally.count_text(text)) {
                Ok(_) => {}
                Err(gone) => {
                    epoll.remove(&conn.stream);
                    tally.gone += 1;
                    tally.first_gone.get_or_insert_with(|| describe(&gone));
                }
            }
        }
        // A full event list may leave ready sockets behind (pings to
        // thousands of connections arrive together): look again.
        if left.is_zero() && tokens.len() < EPOLL_EVENTS_MAX {
            return Ok(());
        }
    }
}

pub fn describe(gone: &Gone) -> String {
    match gone {
        Gone::Closed(Some(code), reason) => format!("close frame {code} {reason:?}"),
        Gone::Closed(None, _) => "close frame without code".to_string(),
        Gone::Eof(why) => format!("no close frame: {why}"),
    }
}

fn report(s: &Settings, before: &Sample, with: &Sample, when: &str, result: bool) -> String {
    let n = s.conns as f64;
    let per = |a: Option<u64>, b: Option<u64>, scale: u64| -> Option<f64> {
        Some((b? as f64 - a? as f64) * scale as f64 / n)
    };
    let page = procfs::page_bytes();
    let rss = per(before.rss, with.rss, 1);
    let tcp = per(before.tcp_mem_pages, with.tcp_mem_pages, page);
    let slab = per(before.slab, with.slab, 1);
    let show = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.0}"));
    let mib = |v: Option<u64>| v.map_or("n/a".to_string(), |v| format!("{:.1} MiB", v as f64 / 1048576.0));
    let mut text = format!(
        "{when}: server RSS {} -> {} = {} bytes/connection; TCP sockets in use {} -> {}; \
         sockstat TCP mem {} -> {} pages = {} bytes/connection (both ends); Slab {} -> {} = {} bytes/connection \
         (both ends)\n",
        mib(before.rss),
        mib(with.rss),
        show(rss),
        before.tcp_inuse.map_or("n/a".to_string(), |v| v.to_string()),
        with.tcp_inuse.map_or("n/a".to_string(), |v| v.to_string()),
        before.tcp_mem_pages.map_or("n/a".to_string(), |v| v.to_string()),
        with.tcp_mem_pages.map_or("n/a".to_string(), |v| v.to_string()),
        show(tcp),
        mib(before.slab),
        mib(with.slab),
        show(slab),
    );
    if result {
        // Projection: server user space as measured; of the kernel's share,
        // half of the machine-wide growth is the server's socket.
        let million = 1_000_000.0 / 1073741824.0;
        let user = rss.unwrap_or(0.0) * million;
        let kernel = (tcp.unwrap_or(0.0) + slab.unwrap_or(0.0)) / 2.0 * million;
        text.push_str(&format!(
            "projection for 1,000,000 connections: server user space {user:.2} GiB, server-side kernel \
             (half of TCP mem + Slab growth) {kernel:.2} GiB\n"
        ));
        text.push_str(&format!(
            "RESULT conns={} rss_per_conn={} tcp_mem_per_conn={} slab_per_conn={} proj_user_gib={user:.2} \
             proj_kernel_gib={kernel:.2} kind={}\n",
            s.conns,
            show(rss),
            show(tcp),
            show(slab),
            match (&s.wsapi, s.stream.as_str()) {
                (Some(_), _) if s.logon => "wsapi-logon",
                (Some(_), _) => "wsapi",
                (None, NO_STREAM) => "bare",
                (None, _) => "stream",
            }
        ));
    }
    text
}
