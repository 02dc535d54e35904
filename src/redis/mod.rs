//! A Redis client fit for a shard: one connection per shard over a glommio
//! socket, RESP2 through the `redis-protocol` codec, pipelined.
//!
//! Callers queue commands ([`Redis::call`], [`Redis::pipeline`]) and await
//! their replies; one driver task per client owns the socket. It takes
//! everything queued (up to `pipeline_commands_max`), writes it in one
//! write, and reads the replies, which Redis sends in command order, so
//! the n-th reply answers the n-th command. Commands queued by many tasks
//! while a batch is on the wire leave together in the next one.
//!
//! Failing well:
//! - a batch that does not complete within `command_timeout_ms` fails with
//!   [`RedisError::Timeout`] and the connection is dropped (late replies
//!   would answer the wrong commands);
//! - a lost connection fails what it carried, and the driver reconnects
//!   after an exponential backoff with full jitter; while it waits,
//!   commands fail at once ([`RedisError::Disconnected`]) instead of
//!   queueing behind a dead server;
//! - every call goes through the shard's circuit breaker for Redis (the
//!   history store's breaker type): transport failures open it, and an
//!   open breaker refuses calls without touching the socket.
//!
//! A Redis error reply (`-NOSCRIPT ...`) is a [`Reply::Error`], not a
//! failure: the connection is fine and the caller decides.
//!
//! `AUTH` (with a user name when the URL has one) and `SELECT` come from
//! the URL, `redis://[[user]:password@]host:port[/db]`, and run on every
//! new connection before any command.
//!
//! **Bounds:** queued commands (`queue_commands_max`, then
//! [`RedisError::QueueFull`]), commands per write, bytes of replies
//! buffered (`reply_bytes_max`, then the connection is dropped as broken).

pub(crate) mod cache;
pub(crate) mod gcra;
pub(crate) mod limiter;
pub(crate) mod script;
pub(crate) mod subscriber;

use crate::metrics::{latency_histogram, LatencyBuckets, RedisCounters};
use crate::oneshot;
use crate::resilience::{xorshift, Backoff, Breaker, BreakerConfig};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use hdrhistogram::Histogram;
use redis_protocol::resp2::decode::decode;
use redis_protocol::resp2::encode::encode;
use redis_protocol::resp2::types::{OwnedFrame, Resp2Frame};
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

/// Slowest command latency the histogram tells apart.
const LATENCY_MAX_NS: u64 = 60_000_000_000;
/// Bytes read from the socket at once.
const READ_CHUNK_BYTES: usize = 16 * 1024;

/// Where a client connects, from `--redis URL`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RedisTarget {
    /// `host:port`.
    pub(crate) addr: String,
    pub(crate) username: Option<String>,
    pub(crate) password: Option<String>,
    pub(crate) db: u32,
}

/// Reads `redis://[[user]:password@]host[:port][/db]`; the port defaults
/// to 6379, the database to 0.
pub(crate) fn parse_url(url: &str) -> Result<RedisTarget, String> {
    let rest = url
        .strip_prefix("redis://")
        .ok_or_else(|| format!("{url}: a Redis URL starts with redis://"))?;
    let (authority, path) = match rest.split_once('/') {
        Some((authority, path)) => (authority, path),
        None => (rest, ""),
    };
    let (credentials, host_port) = match authority.rsplit_once('@') {
        Some((credentials, host_port)) => (Some(credentials), host_port),
        None => (None, authority),
    };
    let decode = |text: &str| {
        crate::http::percent_decode(text.as_bytes())
            .map(|t| t.into_owned())
            .ok_or_else(|| format!("{url}: bad percent-encoding"))
    };
    let (username, password) = match credentials {
        None => (None, None),
        Some(credentials) => match credentials.split_once(':') {
            Some((user, password)) => {
                let user = (!user.is_empty()).then(|| decode(user)).transpose()?;
                (user, Some(decode(password)?))
            }
            None => (None, Some(decode(credentials)?)),
        },
    };
    if host_port.is_empty() {
        return Err(format!("{url}: no host"));
    }
    let addr = match host_port.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || host_port.starts_with('[') => {
            port.parse::<u16>().map_err(|_| format!("{url}: bad port {port:?}"))?;
            host_port.to_string()
        }
        _ => format!("{host_port}:6379"),
    };
    let db = match path {
        "" => 0,
        db => db.parse().map_err(|_| format!("{url}: bad database {db:?}"))?,
    };
    Ok(RedisTarget {
        addr,
        username,
        password,
        db,
    })
}

/// How a client waits, retries and bounds itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RedisLimits {
    pub(crate) connect_timeout_ms: u64,
    /// A written batch's replies must all arrive within this.
    pub(crate) command_timeout_ms: u64,
    /// An idle connection is checked with `PING` this often, so that a
    /// dead server is noticed before a caller needs it.
    pub(crate) heartbeat_ms: u64,
    pub(crate) queue_commands_max: usize,
    pub(crate) pipeline_commands_max: usize,
    pub(crate) reply_bytes_max: usize,
    pub(crate) backoff_base_ms: u64,
    pub(crate) backoff_max_ms: u64,
    pub(crate) breaker: BreakerConfig,
}

/// One reply, as Redis sent it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Reply {
    Status(String),
    Error(String),
    Integer(i64),
    Bulk(Vec<u8>),
    Nil,
    Array(Vec<Reply>),
}

impl Reply {
    fn of(frame: OwnedFrame) -> Reply {
        match frame {
            OwnedFrame::SimpleString(s) => Reply::Status(String::from_utf8_lossy(&s).into_owned()),
            OwnedFrame::Error(e) => Reply::Error(e.to_string()),
            OwnedFrame::Integer(i) => Reply::Integer(i),
            OwnedFrame::BulkString(b) => Reply::Bulk(b),
            OwnedFrame::Array(items) => Reply::Array(items.into_iter().map(Reply::of).collect()),
            OwnedFrame::Null => Reply::Nil,
        }
    }
}

/// Why a command got no reply.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RedisError {
    #[error("Redis breaker open")]
    BreakerOpen,
    #[error("Redis not connected")]
    Disconnected,
    #[error("Redis command queue full")]
    QueueFull,
    #[error("Redis command timed out")]
    Timeout,
    #[error("Redis connection failed: {0}")]
    Io(String),
    #[error("Redis protocol error: {0}")]
    Protocol(String),
}

/// Counters of one client; /metrics shows them as [`RedisCounters`].
struct Stats {
    commands: u64,
    /// Writes to the socket: commands per write is the pipelining.
    writes: u64,
    failures: u64,
    timeouts: u64,
    refused_breaker: u64,
    refused_queue: u64,
    connects: u64,
    reconnects: u64,
    in_flight: u64,
    latency_ns: Histogram<u64>,
    latency_sum_ns: u64,
}

/// Where the driver stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Link {
    /// Connecting: commands queue and go out once it is up.
    Connecting,
    Up,
    /// Waiting out a backoff: commands fail at once.
    Down,
}

struct Queued {
    command: Vec<u8>,
    queued_at: Instant,
    reply: oneshot::Sender<Result<Reply, RedisError>>,
}

struct Inner {
    target: RedisTarget,
    limits: RedisLimits,
    queue: RefCell<VecDeque<Queued>>,
    driver: Cell<Option<Waker>>,
    link: Cell<Link>,
    closed: Cell<bool>,
    breaker: RefCell<Breaker>,
    stats: RefCell<Stats>,
}

/// A shard's Redis client; clones share the connection.
#[derive(Clone)]
pub(crate) struct Redis {
    inner: Rc<Inner>,
}

impl Redis {
    /// A client whose driver task runs on the current glommio executor;
    /// it connects at once and keeps reconnecting until [`Redis::close`].
    pub(crate) fn start(target: RedisTarget, limits: RedisLimits, seed: u64) -> Redis {
        let inner = Rc::new(Inner {
            target,
            limits,
            queue: RefCell::new(VecDeque::new()),
            driver: Cell::new(None),
            link: Cell::new(Link::Connecting),
            closed: Cell::new(false),
            breaker: RefCell::new(Breaker::new(limits.breaker)),
            stats: RefCell::new(Stats {
                commands: 0,
                writes: 0,
                failures: 0,
                timeouts: 0,
                refused_breaker: 0,
                refused_queue: 0,
                connects: 0,
                reconnects: 0,
                in_flight: 0,
                latency_ns: latency_histogram(LATENCY_MAX_NS),
                latency_sum_ns: 0,
            }),
        });
        glommio::spawn_local(drive(inner.clone(), seed.max(1))).detach();
        let redis = Redis { inner };
        glommio::spawn_local(heartbeat(redis.clone())).detach();
        redis
    }

    /// Runs one command (its words) and returns its reply.
    pub(crate) async fn call(&self, words: &[&[u8]]) -> Result<Reply, RedisError> {
        let receiver = self.enqueue(words)?;
        self.finish(receiver.await)
    }

    /// Runs commands in one go (they leave in one write when the queue
    /// allows) and returns their replies in order.
    pub(crate) async fn pipeline(&self, commands: &[&[&[u8]]]) -> Vec<Result<Reply, RedisError>> {
        let receivers: Vec<_> = commands.iter().map(|words| self.enqueue(words)).collect();
        let mut replies = Vec::with_capacity(receivers.len());
        for receiver in receivers {
            replies.push(match receiver {
                Ok(receiver) => self.finish(receiver.await),
                Err(error) => Err(error),
            });
        }
        replies
    }

    /// The figures /metrics shows.
    pub(crate) fn counters(&self) -> RedisCounters {
        let stats = self.inner.stats.borrow();
        let breaker = self.inner.breaker.borrow();
        RedisCounters {
            configured: 1,
            connected: u64::from(self.inner.link.get() == Link::Up),
            commands: stats.commands,
            writes: stats.writes,
            failures: stats.failures,
            timeouts: stats.timeouts,
            refused_breaker: stats.refused_breaker,
            refused_queue: stats.refused_queue,
            connects: stats.connects,
            reconnects: stats.reconnects,
            in_flight: stats.in_flight,
            breaker_state: breaker.state().gauge(),
            breaker_transitions: breaker.transitions(),
            latency: LatencyBuckets::of(&stats.latency_ns, stats.latency_sum_ns),
            limit_fallbacks: 0,
            limit_leases: 0,
        }
    }

    /// Stops the driver: queued commands fail, the connection closes.
    pub(crate) fn close(&self) {
        self.inner.closed.set(true);
        if let Some(waker) = self.inner.driver.take() {
            waker.wake();
        }
    }

    fn enqueue(&self, words: &[&[u8]]) -> Result<oneshot::Receiver<Result<Reply, RedisError>>, RedisError> {
        let inner = &self.inner;
        if !inner.breaker.borrow_mut().allow(crate::clock::now_ms()) {
            inner.stats.borrow_mut().refused_breaker += 1;
            return Err(RedisError::BreakerOpen);
        }
        let refused = if inner.closed.get() || inner.link.get() == Link::Down {
            Some(RedisError::Disconnected)
        } else if inner.queue.borrow().len() >= inner.limits.queue_commands_max {
            inner.stats.borrow_mut().refused_queue += 1;
            Some(RedisError::QueueFull)
        } else {
            None
        };
        if let Some(error) = refused {
            self.record(Err(&error));
            return Err(error);
        }
        let (sender, receiver) = oneshot::channel();
        inner.queue.borrow_mut().push_back(Queued {
            command: encode_command(words),
            queued_at: Instant::now(),
            reply: sender,
        });
        if let Some(waker) = inner.driver.take() {
            waker.wake();
        }
        Ok(receiver)
    }

    fn finish(&self, reply: Option<Result<Reply, RedisError>>) -> Result<Reply, RedisError> {
        let reply = reply.unwrap_or(Err(RedisError::Disconnected));
        self.record(reply.as_ref().map(|_| ()));
        reply
    }

    /// Feeds the breaker: a reply (error replies included) is a success.
    fn record(&self, outcome: Result<(), &RedisError>) {
        let ok = match outcome {
            Ok(()) => true,
            // Refusals of our own say nothing new about Redis.
            Err(RedisError::BreakerOpen | RedisError::QueueFull) => return,
            Err(_) => false,
        };
        self.inner.breaker.borrow_mut().record(crate::clock::now_ms(), ok);
    }
}

/// A command as RESP: an array of bulk strings.
fn encode_command(words: &[&[u8]]) -> Vec<u8> {
    let frame = OwnedFrame::Array(words.iter().map(|w| OwnedFrame::BulkString(w.to_vec())).collect());
    let mut out = vec![0u8; frame.encode_len(false)];
    match encode(&mut out, &frame, false) {
        Ok(len) => out.truncate(len),
        // The buffer is sized by the codec itself; an array of bulk
        // strings always encodes.
        Err(_) => out.clear(),
    }
    out
}

/// Checks an idle connection with `PING` every `heartbeat_ms`, through
/// [`Redis::call`] like any command: a dead server is noticed (and the
/// breaker told) before a caller needs it, and a half-open breaker gets
/// its probe.
async fn heartbeat(redis: Redis) {
    let every = Duration::from_millis(redis.inner.limits.heartbeat_ms);
    let mut writes = u64::MAX;
    while !redis.inner.closed.get() {
        glommio::timer::sleep(every).await;
        let now = redis.inner.stats.borrow().writes;
        if now == writes && !redis.inner.closed.get() {
            let _ = redis.call(&[b"PING"]).await;
        }
        writes = redis.inner.stats.borrow().writes;
    }
}

/// The driver: connect, serve batches until the connection fails, back
/// off, connect again; until the client is closed.
async fn drive(inner: Rc<Inner>, mut random: u64) {
    let limits = inner.limits;
    let mut backoff = Backoff::new(limits.backoff_base_ms, limits.backoff_max_ms);
    let mut first = true;
    while !inner.closed.get() {
        inner.link.set(Link::Connecting);
        if !first {
            inner.stats.borrow_mut().reconnects += 1;
        }
        first = false;
        let failure = match connect(&inner.target, &inner.limits).await {
            Ok(mut stream) => {
                backoff.reset();
                inner.link.set(Link::Up);
                inner.stats.borrow_mut().connects += 1;
                let failure = serve(&inner, &mut stream).await;
                let _ = stream.close().await;
                failure
            }
            Err(failure) => failure,
        };
        inner.link.set(Link::Down);
        fail_queued(&inner, &failure);
        if inner.closed.get() {
            break;
        }
        let delay = backoff.next_delay_ms(xorshift(&mut random));
        sleep_unless_closed(&inner, Duration::from_millis(delay)).await;
    }
    fail_queued(&inner, &RedisError::Disconnected);
}

/// Opens the socket and runs `AUTH` and `SELECT` when the URL asks.
async fn connect(target: &RedisTarget, limits: &RedisLimits) -> Result<TcpStream, RedisError> {
    let connecting = TcpStream::connect(target.addr.as_str());
    let mut stream = within(limits.connect_timeout_ms, connecting)
        .await?
        .map_err(|e| RedisError::Io(e.to_string()))?;
    let _ = stream.set_nodelay(true);
    let mut hello = Vec::new();
    let mut expected = 0;
    if let Some(password) = &target.password {
        let mut words: Vec<&[u8]> = vec![b"AUTH"];
        if let Some(user) = &target.username {
            words.push(user.as_bytes());
        }
        words.push(password.as_bytes());
        hello.extend_from_slice(&encode_command(&words));
        expected += 1;
    }
    let db = target.db.to_string();
    if target.db != 0 {
        hello.extend_from_slice(&encode_command(&[b"SELECT", db.as_bytes()]));
        expected += 1;
    }
    if expected > 0 {
        let mut read = Vec::new();
        let replies = within(limits.command_timeout_ms, async {
            stream
                .write_all(&hello)
                .await
                .map_err(|e| RedisError::Io(e.to_string()))?;
            read_replies(&mut stream, &mut read, expected, limits.reply_bytes_max).await
        })
        .await??;
        if let Some(Reply::Error(e)) = replies.iter().find(|r| matches!(r, Reply::Error(_))) {
            return Err(RedisError::Protocol(format!("AUTH/SELECT refused: {e}")));
        }
    }
    Ok(stream)
}

/// Writes queued commands in batches and hands out their replies; returns
/// why the connection can no longer be used.
async fn serve(inner: &Inner, stream: &mut TcpStream) -> RedisError {
    let limits = inner.limits;
    let mut write = Vec::new();
    let mut read = Vec::new();
    loop {
        queued(inner).await;
        if inner.closed.get() {
            return RedisError::Disconnected;
        }
        let batch: Vec<Queued> = {
            let mut queue = inner.queue.borrow_mut();
            let n = queue.len().min(limits.pipeline_commands_max);
            queue.drain(..n).collect()
        };
        write.clear();
        for queued in &batch {
            write.extend_from_slice(&queued.command);
        }
        {
            let mut stats = inner.stats.borrow_mut();
            stats.writes += 1;
            stats.commands += batch.len() as u64;
            stats.in_flight = batch.len() as u64;
        }
        let outcome = within(limits.command_timeout_ms, async {
            stream
                .write_all(&write)
                .await
                .map_err(|e| RedisError::Io(e.to_string()))?;
            read_replies(stream, &mut read, batch.len(), limits.reply_bytes_max).await
        })
        .await
        .and_then(|replies| replies);
        inner.stats.borrow_mut().in_flight = 0;
        match outcome {
            Ok(replies) => {
                let now = Instant::now();
                let mut stats = inner.stats.borrow_mut();
                for (queued, reply) in batch.into_iter().zip(replies) {
                    let ns = u64::try_from(now.duration_since(queued.queued_at).as_nanos()).unwrap_or(u64::MAX);
                    let _ = stats.latency_ns.record(ns.clamp(1, LATENCY_MAX_NS));
                    stats.latency_sum_ns = stats.latency_sum_ns.saturating_add(ns);
                    queued.reply.send(Ok(reply));
                }
            }
            Err(error) => {
                {
                    let mut stats = inner.stats.borrow_mut();
                    stats.failures += batch.len() as u64;
                    if error == RedisError::Timeout {
                        stats.timeouts += 1;
                    }
                }
                for queued in batch {
                    queued.reply.send(Err(error.clone()));
                }
                return error;
            }
        }
    }
}

/// Appends what the socket has to `read` (through `chunk`); a socket Redis
/// closed is an error.
pub(crate) async fn read_some(stream: &mut TcpStream, read: &mut Vec<u8>, chunk: &mut [u8]) -> Result<(), RedisError> {
    let n = stream.read(chunk).await.map_err(|e| RedisError::Io(e.to_string()))?;
    if n == 0 {
        return Err(RedisError::Io("connection closed by Redis".to_string()));
    }
    read.extend_from_slice(&chunk[..n]);
    Ok(())
}

/// Reads until `count` whole replies are in; `read` keeps what follows
/// them (nothing, in a healthy exchange).
async fn read_replies(
    stream: &mut TcpStream,
    read: &mut Vec<u8>,
    count: usize,
    bytes_max: usize,
) -> Result<Vec<Reply>, RedisError> {
    let mut replies = Vec::with_capacity(count);
    let mut at = 0;
    let mut chunk = vec![0u8; READ_CHUNK_BYTES];
    while replies.len() < count {
        match decode(&read[at..]) {
            Ok(Some((frame, used))) => {
                replies.push(Reply::of(frame));
                at += used;
                continue;
            }
            Ok(None) => {}
            Err(e) => return Err(RedisError::Protocol(e.to_string())),
        }
        if read.len() - at > bytes_max {
            return Err(RedisError::Protocol(format!("a reply over {bytes_max} bytes")));
        }
        read_some(stream, read, &mut chunk).await?;
    }
    read.drain(..at);
    Ok(replies)
}

/// Resolves once a command is queued or the client is closed.
async fn queued(inner: &Inner) {
    futures_lite::future::poll_fn(|cx| {
        if inner.closed.get() || !inner.queue.borrow().is_empty() {
            return Poll::Ready(());
        }
        inner.driver.set(Some(cx.waker().clone()));
        Poll::Pending
    })
    .await
}

fn fail_queued(inner: &Inner, error: &RedisError) {
    let failed: Vec<Queued> = inner.queue.borrow_mut().drain(..).collect();
    inner.stats.borrow_mut().failures += failed.len() as u64;
    for queued in failed {
        queued.reply.send(Err(error.clone()));
    }
}

async fn sleep_unless_closed(inner: &Inner, delay: Duration) {
    let closed = futures_lite::future::poll_fn(|cx| {
        if inner.closed.get() {
            return Poll::Ready(());
        }
        inner.driver.set(Some(cx.waker().clone()));
        Poll::Pending
    });
    futures_lite::future::or(glommio::timer::sleep(delay), closed).await;
}

/// `work`, or [`RedisError::Timeout`] after `ms`.
async fn within<T>(ms: u64, work: impl std::future::Future<Output = T>) -> Result<T, RedisError> {
    futures_lite::future::or(async { Ok(work.await) }, async {
        glommio::timer::sleep(Duration::from_millis(ms)).await;
        Err(RedisError::Timeout)
    })
    .await
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::resilience::BreakerState;
    use tradsys_redistest::RedisServer;

    #[test]
    fn urls_name_the_address_credentials_and_database() {
        let target = |addr: &str, username: Option<&str>, password: Option<&str>, db: u32| RedisTarget {
            addr: addr.to_string(),
            username: username.map(str::to_string),
            password: password.map(str::to_string),
            db,
        };
        let table: &[(&str, Result<RedisTarget, ()>)] = &[
            ("redis://127.0.0.1:6380", Ok(target("127.0.0.1:6380", None, None, 0))),
            ("redis://localhost", Ok(target("localhost:6379", None, None, 0))),
            (
                "redis://:p%40ss@127.0.0.1:7000/2",
                Ok(target("127.0.0.1:7000", None, Some("p@ss"), 2)),
            ),
            (
                "redis://bob:pw@127.0.0.1:7000/0",
                Ok(target("127.0.0.1:7000", Some("bob"), Some("pw"), 0)),
            ),
            ("redis://[::1]:7000", Ok(target("[::1]:7000", None, None, 0))),
            ("http://127.0.0.1:6379", Err(())),
            ("redis://127.0.0.1:notaport", Err(())),
            ("redis://127.0.0.1:6379/x", Err(())),
            ("redis://", Err(())),
        ];
        for (url, expected) in table {
            assert_eq!(&parse_url(url).map_err(|_| ()), expected, "{url}");
        }
    }

    pub(crate) fn limits() -> RedisLimits {
        RedisLimits {
            connect_timeout_ms: 1_000,
            command_timeout_ms: 1_000,
            // Long: the tests count writes.
            heartbeat_ms: 60_000,
            queue_commands_max: 10_000,
            pipeline_commands_max: 512,
            reply_bytes_max: 1 << 20,
            backoff_base_ms: 10,
            backoff_max_ms: 100,
            breaker: BreakerConfig {
                failures_min: 3,
                failure_ratio_permille: 500,
                window_ms: 10_000,
                open_ms: 200,
                half_open_probes: 1,
            },
        }
    }

    pub(crate) fn on_executor<F, Fut>(test: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + 'static,
    {
        glommio::LocalExecutorBuilder::default()
            .spawn(move || async move { test().await })
            .expect("an executor")
            .join()
            .expect("the test ran to its end");
    }

    /// Waits (bounded) until the client's link is `up` (or down).
    async fn until_connected(redis: &Redis, up: bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while (redis.counters().connected == 1) != up {
            assert!(Instant::now() < deadline, "the client never became connected={up}");
            glommio::timer::sleep(Duration::from_millis(5)).await;
        }
    }

    #[test]
    fn commands_pipeline_authenticate_and_select_the_database() {
        let server = RedisServer::start_with_password("s3cret");
        let url = format!("{}/3", server.url());
        on_executor(move || async move {
            let redis = Redis::start(parse_url(&url).expect("url"), limits(), 7);
            assert_eq!(redis.call(&[b"SET", b"k", b"v"]).await, Ok(Reply::Status("OK".into())));
            // 1,000 INCRs queued at once leave in a few writes, not 1,000.
            let writes_before = redis.counters().writes;
            let incr: &[&[u8]] = &[b"INCR", b"n"];
            let commands = vec![incr; 1_000];
            let replies = redis.pipeline(&commands).await;
            let expected: Vec<Result<Reply, RedisError>> = (1..=1_000).map(|i| Ok(Reply::Integer(i))).collect();
            assert_eq!(replies, expected);
            let writes = redis.counters().writes - writes_before;
            assert!(
                (2..=3).contains(&writes),
                "{writes} writes for 1,000 pipelined commands (512 per write)"
            );
            assert_eq!(redis.call(&[b"GET", b"missing"]).await, Ok(Reply::Nil));
            assert_eq!(
                redis
                    .call(&[b"EVALSHA", b"0000000000000000000000000000000000000000", b"0"])
                    .await,
                Ok(Reply::Error("NOSCRIPT No matching script. Please use EVAL.".into()))
            );
            assert_eq!(
                redis.call(&[b"MGET", b"k", b"missing"]).await,
                Ok(Reply::Array(vec![Reply::Bulk(b"v".to_vec()), Reply::Nil]))
            );
            redis.close();
        });
        // SELECT 3 put the key in database 3, not 0.
        assert_eq!(server.command(&["GET", "k"]), "$-1\r\n");
        assert_eq!(
            server.command(&["EVAL", "redis.call('SELECT', 3) return redis.call('GET', 'k')", "0"]),
            "$1\r\nv\r\n"
        );
    }

    #[test]
    fn a_wrong_password_never_connects() {
        let server = RedisServer::start_with_password("right");
        let url = format!("redis://:wrong@127.0.0.1:{}", server.port());
        on_executor(move || async move {
            let redis = Redis::start(parse_url(&url).expect("url"), limits(), 7);
            let reply = redis.call(&[b"PING"]).await;
            assert!(
                matches!(reply, Err(RedisError::Protocol(ref e)) if e.contains("WRONGPASS")),
                "{reply:?}"
            );
            assert_eq!(redis.counters().connected, 0);
            redis.close();
        });
    }

    #[test]
    fn a_lost_server_fails_fast_opens_the_breaker_and_recovers() {
        let mut server = RedisServer::start();
        let url = server.url();
        let pid = server.pid().expect("running");
        let (to_test, from_test) = std::sync::mpsc::channel::<&'static str>();
        let (to_server, at_server) = std::sync::mpsc::channel::<&'static str>();
        let executor = std::thread::spawn(move || {
            on_executor(move || async move {
                let limits = RedisLimits {
                    heartbeat_ms: 50,
                    ..limits()
                };
                let redis = Redis::start(parse_url(&url).expect("url"), limits, 7);
                assert_eq!(redis.call(&[b"PING"]).await, Ok(Reply::Status("PONG".into())));
                to_server.send("killed?").expect("send");
                // Wait for the test thread to kill the server.
                while from_test.try_recv().is_err() {
                    glommio::timer::sleep(Duration::from_millis(5)).await;
                }
                // Every call now fails with a transport error or a refusal;
                // none hangs, and the breaker opens.
                let mut failures = 0;
                while redis.counters().breaker_state != BreakerState::Open.gauge() {
                    let reply = redis.call(&[b"PING"]).await;
                    assert!(reply.is_err(), "{reply:?}");
                    failures += 1;
                    assert!(failures < 1_000, "the breaker never opened");
                    glommio::timer::sleep(Duration::from_millis(1)).await;
                }
                assert_eq!(redis.call(&[b"PING"]).await, Err(RedisError::BreakerOpen));
                to_server.send("restart").expect("send");
                while from_test.try_recv().is_err() {
                    glommio::timer::sleep(Duration::from_millis(5)).await;
                }
                // Back: the driver reconnects and a probe closes the breaker.
                let deadline = Instant::now() + Duration::from_secs(10);
                loop {
                    if redis.call(&[b"PING"]).await == Ok(Reply::Status("PONG".into())) {
                        break;
                    }
                    assert!(Instant::now() < deadline, "never recovered");
                    glommio::timer::sleep(Duration::from_millis(20)).await;
                }
                until_connected(&redis, true).await;
                let counters = redis.counters();
                assert_eq!(counters.breaker_state, BreakerState::Closed.gauge());
                assert!(counters.reconnects >= 1 && counters.connects >= 2, "{counters:?}");
                redis.close();
            })
        });
        assert_eq!(at_server.recv().expect("the client is up"), "killed?");
        server.kill9();
        assert_ne!(server.pid(), Some(pid));
        to_test.send("killed").expect("send");
        assert_eq!(at_server.recv().expect("the breaker opened"), "restart");
        server.start_again();
        to_test.send("restarted").expect("send");
        executor.join().expect("the client's thread");
    }
}
