//! A shard's links to the other instances of its cluster, through Redis
//! Streams on the Redis every instance of a cluster shares (`--redis`).
//!
//! Streams (`<i>` an instance id, `<s>` a shard index):
//!
//! - `tradsys:link:<i>:requests`: requests for instance `i`, read by every
//!   shard of `i` as a consumer of the group `tradsys`, so that each entry
//!   goes to one shard, which runs it as a request of its own connections
//!   (`api::link::answer_carried`: it routes to the owning shard).
//! - `tradsys:link:<i>:<s>:replies`: answers for shard `s` of instance
//!   `i`, read by that shard alone (the same group, one consumer).
//!
//! Engine messages between instances (`trading::remote`: an order of a
//! user here on a market there, and its fills, outcomes and cancels) go
//! to the replies stream of shard 0 of the receiving instance, which
//! applies them and passes each to the shard it is for. They are exactly
//! once: each carries its sender's shard and number (field `engine`:
//! the number, then the message), the receiver journals the last number
//! it applied per sending shard, and answers, once that is durable, with
//! an entry `acked` on the sender's replies stream (or, to a sender's
//! engine shard, as an `acked` field on the first engine entry going
//! there anyway: one write and one wake-up fewer); the sender keeps each
//! message in its outbox until then and sends again from the oldest when
//! no acknowledgement came for `RESEND_AFTER_MS`. A message leaves only
//! once the records that made it are durable here.
//!
//! An entry holds `from` (the sender's instance id), `shard` (its shard),
//! `call` (`<nonce>:<n>`: the sender shard's start and its n-th call, so
//! that an answer meant for an earlier start is dropped), `deadline` (ms
//! since the epoch: the sender answers its client with a timeout then)
//! and `request` or `reply` (`api::link`'s bytes).
//!
//! **At most once.** Entries are read with `NOACK`: a request is never
//! delivered twice, so a crash of the owner while it runs one leaves the
//! outcome unknown, and the client is told so with Binance's -1007
//! ("execution status unknown"), exactly as when its own connection to
//! the owner would have broken. A request read after its deadline is
//! dropped unanswered; its client already has its -1007.
//!
//! Each shard reads with a Redis connection of its own, blocking for at
//! most `READ_BLOCK_MS`; it sends on the shard's client, pipelined with
//! the rest of its commands.
//!
//! **Bounds:** `link_calls_in_flight_max` requests out per shard (more
//! are refused at once) and as many carried here running at once (more
//! are answered 503 -1008); each stream holds about
//! `link_stream_entries_max` entries (`XADD MAXLEN ~`); one read takes at
//! most `READ_COUNT_MAX` entries.

use crate::api::host::Host;
use crate::api::link::{
    answer_carried, decode_carried, decode_reply, encode_carried, encode_reply, Carried, LinkError,
};
use crate::api::request::RestReply;
use crate::cluster::Place;
use crate::metrics::{latency_histogram, LatencyBuckets, LinkCounters};
use crate::oneshot;
use crate::redis::{Redis, RedisLimits, RedisTarget, Reply};
use crate::server::mesh::{Call, ShardMsg, StreamMsg};
use crate::server::publish;
use crate::server::shard::Shard;
use crate::trading::msg::EngineMsg;
use crate::trading::remote::Arrival;
use hdrhistogram::Histogram;
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

/// How long one read waits in Redis for entries.
const READ_BLOCK_MS: u64 = 500;
/// Entries one read takes.
const READ_COUNT_MAX: usize = 64;
/// Pause after a failed read before the next, growing to the most.
const RETRY_MS: u64 = 50;
const RETRY_MS_MAX: u64 = 1_000;
/// Slowest round trip the histogram tells apart.
const ROUND_TRIP_MAX_NS: u64 = 60_000_000_000;
/// The consumer group on every link stream.
const GROUP: &str = "tradsys";
/// Market data events waiting for the publisher task, per shard.
const MD_QUEUE_MAX: usize = 65_536;
/// Events the publisher sends in one pipelined write, and a market data
/// read takes.
const MD_BATCH_MAX: usize = 256;
/// Engine messages sent to one instance in one pipelined write.
const ENGINE_BATCH_MAX: usize = 1_024;
/// Engine messages packed into one stream entry at most.
const ENGINE_PACK_MAX: usize = 64;
/// An outbox with nothing acknowledged for this long is sent again from
/// its oldest message.
const RESEND_AFTER_MS: u64 = 1_000;
/// How often the engine sender looks for what to send again.
const RESEND_CHECK_MS: u64 = 200;
/// The shard that receives every engine message from other instances.
pub(crate) const ENGINE_SHARD: usize = 0;

/// The link settings of the configuration.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LinkLimits {
    pub(crate) call_timeout_ms: u64,
    pub(crate) calls_in_flight_max: usize,
    pub(crate) stream_entries_max: usize,
    pub(crate) stream_lease_ms: u64,
}

/// One peer's figures (see `metrics::LinkCounters`).
#[derive(Default)]
struct PeerStats {
    counters: LinkCounters,
    round_trip_ns: Option<Histogram<u64>>,
}

/// A shard's links: what it carries to the other instances, and what it
/// runs for them.
pub(crate) struct Link {
    place: Arc<Place>,
    shard: usize,
    redis: Redis,
    limits: LinkLimits,
    /// This shard's start: answers carrying another are for an earlier one.
    nonce: u64,
    next_call: Cell<u64>,
    waiting: RefCell<HashMap<u64, oneshot::Sender<RestReply>>>,
    /// Requests of other instances running here.
    running: Cell<usize>,
    peers: RefCell<Vec<PeerStats>>,
    /// Market data events for other instances (stream name, payload, and
    /// the one instance it is for, if only one), waiting for the
    /// publisher task; at most `MD_QUEUE_MAX`.
    md: RefCell<VecDeque<(String, String, Option<usize>)>>,
    md_waker: Cell<Option<Waker>>,
    /// Market data events for other instances dropped: the queue was full,
    /// or Redis did not take them.
    md_dropped: Cell<u64>,
    /// Per instance: the last engine message handed to Redis, and when the
    /// outbox last moved (an acknowledgement, or a send after none was
    /// waiting for one), for `RESEND_AFTER_MS`.
    engine_sent: RefCell<Vec<u64>>,
    engine_moved_ms: RefCell<Vec<u64>>,
    /// Wakes the engine sender: the shard produced messages for other
    /// instances.
    engine_signal: Signal,
    /// On the engine shard: per (instance, its shard), the last message
    /// applied here that the sender has not been told of yet.
    acks_due: RefCell<std::collections::BTreeMap<(usize, usize), u64>>,
    acks_signal: Signal,
}

/// A wake-up for one waiting task: raised any number of times, taken once.
#[derive(Default)]
struct Signal {
    raised: Cell<bool>,
    waker: Cell<Option<Waker>>,
}

impl Signal {
    fn raise(&self) {
        self.raised.set(true);
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    /// Resolves once raised (at once if it was), or after `ms` when given.
    async fn wait(&self, ms: Option<u64>) {
        let raised = std::future::poll_fn(|cx| {
            if self.raised.replace(false) {
                return Poll::Ready(());
            }
            self.waker.set(Some(cx.waker().clone()));
            Poll::Pending
        });
        match ms {
            Some(ms) => futures_lite::future::or(raised, glommio::timer::sleep(Duration::from_millis(ms))).await,
            None => raised.await,
        }
    }
}

fn requests_key(instance: &str) -> String {
    format!("tradsys:link:{instance}:requests")
}

fn replies_key(instance: &str, shard: usize) -> String {
    format!("tradsys:link:{instance}:{shard}:replies")
}

/// The market data instance `instance` publishes for the others.
fn md_key(instance: &str) -> String {
    format!("tradsys:link:{instance}:md")
}

impl Link {
    pub(crate) fn new(place: Arc<Place>, shard: usize, redis: Redis, limits: LinkLimits) -> Link {
        let peers = place.map.instances.iter().map(|_| PeerStats::default()).collect();
        let instances = place.map.instances.len();
        Link {
            place,
            shard,
            redis,
            limits,
            nonce: crate::clock::now_micros() ^ ((shard as u64) << 56),
            next_call: Cell::new(0),
            waiting: RefCell::new(HashMap::new()),
            running: Cell::new(0),
            peers: RefCell::new(peers),
            md: RefCell::new(VecDeque::new()),
            md_waker: Cell::new(None),
            md_dropped: Cell::new(0),
            engine_sent: RefCell::new(vec![0; instances]),
            engine_moved_ms: RefCell::new(vec![0; instances]),
            engine_signal: Signal::default(),
            acks_due: RefCell::new(Default::default()),
            acks_signal: Signal::default(),
        }
    }

    pub(crate) fn call_timeout_ms(&self) -> u64 {
        self.limits.call_timeout_ms
    }

    /// How long another instance's stream subscription lasts unrenewed.
    pub(crate) fn stream_lease_ms(&self) -> u64 {
        self.limits.stream_lease_ms
    }

    /// The shard produced engine messages for other instances.
    pub(crate) fn engine_produced(&self) {
        self.engine_signal.raise();
    }

    /// Queues an event of a stream other instances subscribe to, for the
    /// publisher task; dropped (and counted) when the queue is full, which
    /// a depth subscriber sees as a gap in `U`/`u`.
    pub(crate) fn publish_md(&self, name: String, payload: String) {
        self.queue_md((name, payload, None));
    }

    /// Queues one entry for the publisher task, or drops and counts it
    /// when the queue is full.
    fn queue_md(&self, entry: (String, String, Option<usize>)) {
        let mut md = self.md.borrow_mut();
        if md.len() >= MD_QUEUE_MAX {
            self.md_dropped.set(self.md_dropped.get() + 1);
            return;
        }
        md.push_back(entry);
        if let Some(waker) = self.md_waker.take() {
            waker.wake();
        }
    }

    /// Tells instance `peer` that its subscription to stream `name` lapsed
    /// here (it was not renewed in time): it ends its streams of this
    /// instance's markets rather than serve them with a gap.
    pub(crate) fn publish_lapse(&self, name: String, peer: usize) {
        self.queue_md((name, String::new(), Some(peer)));
    }

    /// Asks instance `owner` to publish stream `name` for this instance
    /// (`on`), or to stop.
    pub(crate) fn subscribe_remote(self: &Rc<Self>, owner: usize, name: String, on: bool) {
        let link = self.clone();
        glommio::spawn_local(async move {
            let key = requests_key(&link.place.map.instances[owner].id);
            let entry = Outgoing {
                shard: link.shard,
                call: "0:0",
                deadline_ms: crate::clock::now_ms() + link.limits.call_timeout_ms,
                field: if on { "subscribe" } else { "unsubscribe" },
                body: name.as_bytes(),
                acked: None,
            };
            let _ = link.add(&key, entry).await;
        })
        .detach();
    }

    /// The acknowledgement due to `peer`'s engine shard, taken to go
    /// with this shard's engine messages to it (`run_engine_sender`).
    fn take_ack(&self, peer: usize) -> Option<u64> {
        self.acks_due.borrow_mut().remove(&(peer, ENGINE_SHARD))
    }

    fn me(&self) -> &str {
        &self.place.instance().id
    }

    /// Carries `request` to instance `instance` and waits for its answer,
    /// at most `link_call_timeout_ms`.
    pub(crate) async fn call(&self, instance: usize, request: &Carried) -> Result<RestReply, LinkError> {
        if self.waiting.borrow().len() >= self.limits.calls_in_flight_max {
            self.peers.borrow_mut()[instance].counters.unreachable += 1;
            return Err(LinkError::Unreachable);
        }
        let call = self.next_call.get();
        self.next_call.set(call + 1);
        let (tx, rx) = oneshot::channel();
        self.waiting.borrow_mut().insert(call, tx);
        let body = encode_carried(request);
        let sent_at = Instant::now();
        let deadline_ms = crate::clock::now_ms() + self.limits.call_timeout_ms;
        let key = requests_key(&self.place.map.instances[instance].id);
        let entry = Outgoing {
            shard: self.shard,
            call: &format!("{}:{call}", self.nonce),
            deadline_ms,
            field: "request",
            body: &body,
            acked: None,
        };
        let sent = self.add(&key, entry).await;
        if !sent {
            self.waiting.borrow_mut().remove(&call);
            self.peers.borrow_mut()[instance].counters.unreachable += 1;
            return Err(LinkError::Unreachable);
        }
        {
            let mut peers = self.peers.borrow_mut();
            peers[instance].counters.sent += 1;
            peers[instance].counters.sent_bytes += body.len() as u64;
        }
        let timeout = Duration::from_millis(self.limits.call_timeout_ms).saturating_sub(sent_at.elapsed());
        let answer = futures_lite::future::or(rx, async {
            glommio::timer::sleep(timeout).await;
            None
        })
        .await;
        self.waiting.borrow_mut().remove(&call);
        let mut peers = self.peers.borrow_mut();
        let peer = &mut peers[instance];
        match answer {
            Some(reply) => {
                let ns = sent_at.elapsed().as_nanos() as u64;
                let histogram = peer
                    .round_trip_ns
                    .get_or_insert_with(|| latency_histogram(ROUND_TRIP_MAX_NS));
                let _ = histogram.record(ns.clamp(1, ROUND_TRIP_MAX_NS));
                peer.counters.round_trip.sum_ns += ns;
                Ok(reply)
            }
            None => {
                peer.counters.timeouts += 1;
                Err(LinkError::Timeout)
            }
        }
    }

    /// Adds `entry` to `key` (trimmed to about `link_stream_entries_max`);
    /// whether Redis took it.
    async fn add(&self, key: &str, entry: Outgoing<'_>) -> bool {
        self.add_all(key, &[entry]).await == 1
    }

    /// Adds `entries` to `key` in one pipelined write; how many Redis
    /// took, counted from the first (the rest are not relied on).
    async fn add_all(&self, key: &str, entries: &[Outgoing<'_>]) -> usize {
        let max = self.limits.stream_entries_max.to_string();
        let numbers: Vec<(String, String)> = entries
            .iter()
            .map(|e| (e.shard.to_string(), e.deadline_ms.to_string()))
            .collect();
        let commands: Vec<Vec<&[u8]>> = entries
            .iter()
            .zip(&numbers)
            .map(|(entry, numbers)| {
                let mut words = xadd_head(key, &max).to_vec();
                words.extend(fields(self.me(), entry, numbers));
                words
            })
            .collect();
        let refs: Vec<&[&[u8]]> = commands.iter().map(|c| c.as_slice()).collect();
        let replies = match refs.as_slice() {
            [one] => vec![self.redis.call(one).await],
            _ => self.redis.pipeline(&refs).await,
        };
        replies.iter().take_while(|r| matches!(r, Ok(Reply::Bulk(_)))).count()
    }

    /// The figures of each link, by the peer's id (this instance left out);
    /// `outbox` tells how many engine messages for an instance wait for
    /// its acknowledgement.
    pub(crate) fn counters(&self, outbox: impl Fn(usize) -> usize) -> Vec<(String, LinkCounters)> {
        let peers = self.peers.borrow();
        self.place
            .map
            .instances
            .iter()
            .zip(peers.iter())
            .enumerate()
            .filter(|(i, _)| *i != self.place.me)
            .map(|(i, (instance, peer))| {
                let mut counters = peer.counters;
                counters.outbox = outbox(i) as u64;
                if let Some(h) = &peer.round_trip_ns {
                    counters.round_trip = LatencyBuckets::of(h, counters.round_trip.sum_ns);
                }
                (instance.id.clone(), counters)
            })
            .collect()
    }

    /// Market data events for other instances dropped so far.
    pub(crate) fn md_dropped(&self) -> u64 {
        self.md_dropped.get()
    }

    fn peer_index(&self, id: &str) -> Option<usize> {
        self.place.map.instances.iter().position(|i| i.id == id)
    }
}

/// The words of an `XADD` to `key` that keeps about `max` entries, up to
/// its fields.
fn xadd_head<'a>(key: &'a str, max: &'a str) -> [&'a [u8]; 6] {
    [b"XADD", key.as_bytes(), b"MAXLEN", b"~", max.as_bytes(), b"*"]
}

/// One entry to add to a link stream: the shard it names (the sender's,
/// or for a reply the shard it answers), its call, deadline, and the
/// field carrying its body.
struct Outgoing<'a> {
    shard: usize,
    call: &'a str,
    deadline_ms: u64,
    field: &'a str,
    body: &'a [u8],
    /// An acknowledgement carried along (`acked`), when the entry goes to
    /// the stream it is for.
    acked: Option<&'a str>,
}

/// The fields of `entry` from instance `me`, as names and values;
/// `numbers` are its shard and deadline, written out.
fn fields<'a>(me: &'a str, entry: &'a Outgoing<'_>, numbers: &'a (String, String)) -> Vec<&'a [u8]> {
    let (shard, deadline) = numbers;
    let mut words = vec![
        b"from".as_slice(),
        me.as_bytes(),
        b"shard",
        shard.as_bytes(),
        b"call",
        entry.call.as_bytes(),
        b"deadline",
        deadline.as_bytes(),
        entry.field.as_bytes(),
        entry.body,
    ];
    if let Some(seq) = entry.acked {
        words.extend([b"acked".as_slice(), seq.as_bytes()]);
    }
    words
}

/// One entry of a link stream, its fields read.
struct Entry<'a> {
    /// The id's milliseconds (Redis's clock when it took the entry).
    added_ms: u64,
    from: &'a str,
    shard: usize,
    call: &'a str,
    deadline_ms: u64,
    request: Option<&'a [u8]>,
    reply: Option<&'a [u8]>,
    /// A stream another instance subscribes to (true) or leaves.
    subscription: Option<(&'a str, bool)>,
    /// An engine message: its number, then the message.
    engine: Option<&'a [u8]>,
    /// The receiver applied the sender shard's engine messages up to this.
    acked: Option<u64>,
}

fn entry(item: &Reply) -> Option<Entry<'_>> {
    let Reply::Array(parts) = item else { return None };
    let [Reply::Bulk(id), Reply::Array(fields)] = parts.as_slice() else {
        return None;
    };
    let added_ms = std::str::from_utf8(id).ok()?.split('-').next()?.parse().ok()?;
    let mut e = Entry {
        added_ms,
        from: "",
        shard: 0,
        call: "",
        deadline_ms: 0,
        request: None,
        reply: None,
        subscription: None,
        engine: None,
        acked: None,
    };
    for pair in fields.chunks(2) {
        let [Reply::Bulk(name), Reply::Bulk(value)] = pair else {
            return None;
        };
        let text = || std::str::from_utf8(value).ok();
        match name.as_slice() {
            b"from" => e.from = text()?,
            b"shard" => e.shard = text()?.parse().ok()?,
            b"call" => e.call = text()?,
            b"deadline" => e.deadline_ms = text()?.parse().ok()?,
            b"request" => e.request = Some(value),
            b"reply" => e.reply = Some(value),
            b"subscribe" => e.subscription = Some((text()?, true)),
            b"unsubscribe" => e.subscription = Some((text()?, false)),
            b"engine" => e.engine = Some(value),
            b"acked" => e.acked = Some(text()?.parse().ok()?),
            _ => {}
        }
    }
    Some(e)
}

/// A Redis connection of a reader's own: a blocked read holds it, so its
/// commands may take `READ_BLOCK_MS` longer than others.
fn blocking_client(link: &Link, target: RedisTarget, limits: RedisLimits, seed_shift: u32) -> Redis {
    let limits = RedisLimits {
        command_timeout_ms: limits.command_timeout_ms + READ_BLOCK_MS,
        ..limits
    };
    let seed = crate::clock::now_micros() ^ ((link.shard as u64 + 1) << seed_shift);
    Redis::start(target, limits, seed)
}

/// Reads the shard's two streams until the shard stops.
pub(crate) async fn run_reader(shard: Rc<Shard>, link: Rc<Link>, target: RedisTarget, limits: RedisLimits) {
    let redis = blocking_client(&link, target, limits, 44);
    let requests = requests_key(link.me());
    let replies = replies_key(link.me(), link.shard);
    let consumer = link.shard.to_string();
    let block = READ_BLOCK_MS.to_string();
    let count = READ_COUNT_MAX.to_string();
    let mut groups = false;
    let mut retry_ms = RETRY_MS;
    while !shard.draining.get() {
        if !groups {
            groups = make_groups(&redis, &[&requests, &replies]).await;
        }
        let words: [&[u8]; 14] = [
            b"XREADGROUP",
            b"GROUP",
            GROUP.as_bytes(),
            consumer.as_bytes(),
            b"COUNT",
            count.as_bytes(),
            b"BLOCK",
            block.as_bytes(),
            b"NOACK",
            b"STREAMS",
            requests.as_bytes(),
            replies.as_bytes(),
            b">",
            b">",
        ];
        match redis.call(&words).await {
            Ok(Reply::Array(streams)) => {
                retry_ms = RETRY_MS;
                for stream in &streams {
                    on_stream(&shard, &link, stream);
                }
            }
            Ok(Reply::Nil) => retry_ms = RETRY_MS,
            // NOGROUP after Redis lost its data, or no connection: make
            // the groups again after a pause.
            _ => {
                groups = false;
                glommio::timer::sleep(Duration::from_millis(retry_ms)).await;
                retry_ms = (retry_ms * 2).min(RETRY_MS_MAX);
            }
        }
    }
    redis.close();
}

/// Creates the consumer group on each stream (and the stream), keeping
/// one that exists (and where it stands); whether all are there.
async fn make_groups(redis: &Redis, keys: &[&str]) -> bool {
    let mut all = true;
    for key in keys {
        let words: [&[u8]; 6] = [
            b"XGROUP",
            b"CREATE",
            key.as_bytes(),
            GROUP.as_bytes(),
            // From the stream's start: entries added before this reader
            // first ran are read (those past their deadline then dropped).
            b"0",
            b"MKSTREAM",
        ];
        all &= match redis.call(&words).await {
            Ok(Reply::Status(_)) => true,
            Ok(Reply::Error(e)) => e.starts_with("BUSYGROUP"),
            _ => false,
        };
    }
    all
}

fn on_stream(shard: &Rc<Shard>, link: &Rc<Link>, stream: &Reply) {
    let Reply::Array(parts) = stream else { return };
    let [_, Reply::Array(items)] = parts.as_slice() else {
        return;
    };
    let now_ms = crate::clock::now_ms();
    for item in items {
        let Some(e) = entry(item) else { continue };
        let Some(peer) = link.peer_index(e.from) else {
            continue;
        };
        link.peers.borrow_mut()[peer].counters.lag_ms = now_ms.saturating_sub(e.added_ms);
        if let Some(bytes) = e.reply {
            on_reply(link, e.call, bytes);
        } else if let Some(bytes) = e.request {
            on_request(shard, link, peer, &e, bytes, now_ms);
        } else if let Some((name, on)) = e.subscription {
            on_subscription(shard, peer, name, on);
        } else if let Some(bytes) = e.engine {
            on_engine(shard, link, peer, e.shard, bytes);
        }
        // Alone, or carried by engine messages going the same way.
        if let Some(seq) = e.acked {
            on_acked(shard, link, peer, seq, now_ms);
        }
    }
}

/// Engine messages from shard `from_shard` of instance `peer`, as one
/// entry packs them: each applied if it is the next, and acknowledged
/// (again, for a redelivery) once durable.
fn on_engine(shard: &Rc<Shard>, link: &Link, peer: usize, from_shard: usize, bytes: &[u8]) {
    let mut rest = bytes;
    let (mut received, mut duplicates) = (0, 0);
    while !rest.is_empty() {
        let Some((seq, msg, after)) = decode_engine(rest) else {
            link.peers.borrow_mut()[peer].counters.undecodable += 1;
            break;
        };
        rest = after;
        let arrival = shard
            .trading_mut()
            .receive_remote(peer as u32, from_shard as u32, seq, msg);
        received += 1;
        duplicates += u64::from(arrival == Arrival::Duplicate);
    }
    shard.flush_engine();
    {
        let mut peers = link.peers.borrow_mut();
        let counters = &mut peers[peer].counters;
        counters.engine_received += received;
        counters.received_bytes += bytes.len() as u64;
        counters.duplicates += duplicates;
    }
    let applied = shard.trading().remote_links().received(peer as u32, from_shard as u32);
    if applied > 0 {
        link.acks_due.borrow_mut().insert((peer, from_shard), applied);
        link.acks_signal.raise();
    }
}

/// Instance `peer` applied this shard's engine messages up to `seq`.
fn on_acked(shard: &Rc<Shard>, link: &Link, peer: usize, seq: u64, now_ms: u64) {
    let progress = shard.trading_mut().remote_acked(peer as u32, seq);
    shard.flush_engine();
    if progress {
        link.engine_moved_ms.borrow_mut()[peer] = now_ms;
    }
}

/// Appends an engine message as a link entry carries it: its length (4
/// bytes, little-endian), its number (8 bytes, little-endian), then the
/// message (rkyv). An entry packs up to `ENGINE_PACK_MAX` of them, so a
/// burst of messages costs Redis a few entries rather than one each.
fn encode_engine(out: &mut Vec<u8>, seq: u64, msg: &EngineMsg) {
    match rkyv::to_bytes::<rkyv::rancor::Error>(msg) {
        Ok(bytes) => {
            out.extend_from_slice(&((8 + bytes.len()) as u32).to_le_bytes());
            out.extend_from_slice(&seq.to_le_bytes());
            out.extend_from_slice(&bytes);
        }
        // Engine messages hold only plain values: encoding cannot fail.
        Err(e) => unreachable!("encoding an engine message failed: {e}"),
    }
}

/// The first message of a pack, validated, and what follows it; `None`
/// if it is not one.
fn decode_engine(bytes: &[u8]) -> Option<(u64, EngineMsg, &[u8])> {
    let (len, rest) = bytes.split_first_chunk::<4>()?;
    let len = u32::from_le_bytes(*len) as usize;
    if len < 8 || len > rest.len() {
        return None;
    }
    let (one, after) = rest.split_at(len);
    let (seq, msg) = one.split_first_chunk::<8>()?;
    let mut aligned = rkyv::util::AlignedVec::<16>::new();
    aligned.extend_from_slice(msg);
    let msg = rkyv::from_bytes::<EngineMsg, rkyv::rancor::Error>(&aligned).ok()?;
    Some((u64::from_le_bytes(*seq), msg, after))
}

/// Sends this shard's engine messages to the other instances once what
/// made them is durable, and sends again what stays unacknowledged,
/// until the shard stops.
pub(crate) async fn run_engine_sender(shard: Rc<Shard>, link: Rc<Link>) {
    let peers: Vec<usize> = (0..link.place.map.instances.len())
        .filter(|i| *i != link.place.me)
        .collect();
    while !shard.draining.get() {
        link.engine_signal.wait(Some(RESEND_CHECK_MS)).await;
        // Everything numbered so far was produced before this settle's
        // flush, so it is durable once the settle resolves.
        let produced: Vec<u64> = {
            let trading = shard.trading();
            peers.iter().map(|&p| trading.remote_links().sent_seq(p)).collect()
        };
        if peers.iter().all(|&p| shard.trading().remote_links().outbox_len(p) == 0) {
            continue;
        }
        // Acknowledgements for a peer's engine shard ride on the messages
        // going to it (taken before the settle, so durable after it).
        let carried: Vec<Option<u64>> = peers
            .iter()
            .zip(&produced)
            .map(|(&p, &upto)| {
                (upto > link.engine_sent.borrow()[p])
                    .then(|| link.take_ack(p))
                    .flatten()
            })
            .collect();
        shard.settle().await;
        for ((&peer, &upto), acked) in peers.iter().zip(&produced).zip(carried) {
            send_engine(&shard, &link, peer, upto, acked).await;
        }
    }
}

/// Sends instance `peer` the messages of its outbox numbered up to `upto`
/// that it was not sent yet, or all of them again when it has not
/// acknowledged any for `RESEND_AFTER_MS`.
async fn send_engine(shard: &Shard, link: &Link, peer: usize, upto: u64, acked: Option<u64>) {
    let now_ms = crate::clock::now_ms();
    let sent = link.engine_sent.borrow()[peer];
    let (batch, resend) = 'pack: {
        let trading = shard.trading();
        let links = trading.remote_links();
        let Some(&(oldest, _)) = links.outbox(peer).next() else {
            break 'pack (Vec::new(), false);
        };
        let waiting = sent >= oldest;
        let resend = waiting && now_ms.saturating_sub(link.engine_moved_ms.borrow()[peer]) >= RESEND_AFTER_MS;
        if !waiting {
            link.engine_moved_ms.borrow_mut()[peer] = now_ms;
        }
        let from = if resend { oldest } else { sent + 1 };
        // Packs of consecutive messages: (the last number in it, how many,
        // the entry's bytes).
        let mut batch: Vec<(u64, u64, Vec<u8>)> = Vec::new();
        for (seq, msg) in links
            .outbox(peer)
            .filter(|(seq, _)| *seq >= from && *seq <= upto)
            .take(ENGINE_BATCH_MAX)
        {
            match batch.last_mut() {
                Some((last, count, bytes)) if (*count as usize) < ENGINE_PACK_MAX => {
                    encode_engine(bytes, *seq, msg);
                    (*last, *count) = (*seq, *count + 1);
                }
                _ => {
                    let mut bytes = Vec::new();
                    encode_engine(&mut bytes, *seq, msg);
                    batch.push((*seq, 1, bytes));
                }
            }
        }
        (batch, resend)
    };
    if batch.is_empty() {
        if let Some(seq) = acked {
            send_ack(link, peer, ENGINE_SHARD, seq).await;
        }
        return;
    }
    let acked = acked.map(|seq| seq.to_string());
    let entries: Vec<Outgoing<'_>> = batch
        .iter()
        .enumerate()
        .map(|(i, (_, _, body))| Outgoing {
            shard: link.shard,
            call: "0:0",
            deadline_ms: 0,
            field: "engine",
            body,
            acked: acked.as_deref().filter(|_| i == 0),
        })
        .collect();
    let key = replies_key(&link.place.map.instances[peer].id, ENGINE_SHARD);
    let taken = link.add_all(&key, &entries).await;
    if resend {
        link.engine_moved_ms.borrow_mut()[peer] = now_ms;
    }
    let mut peers = link.peers.borrow_mut();
    let counters = &mut peers[peer].counters;
    let messages: u64 = batch[..taken].iter().map(|(_, count, _)| count).sum();
    counters.engine_sent += messages;
    counters.sent_bytes += batch[..taken].iter().map(|(_, _, b)| b.len() as u64).sum::<u64>();
    if resend {
        counters.redelivered += messages;
    }
    if taken < batch.len() {
        counters.unreachable += 1;
    }
    if let Some((last, _, _)) = batch[..taken].last() {
        let mut engine_sent = link.engine_sent.borrow_mut();
        engine_sent[peer] = engine_sent[peer].max(*last);
    }
}

/// On the engine shard: tells each sending shard, once durable here, how
/// far its engine messages are applied, until the shard stops.
pub(crate) async fn run_acker(shard: Rc<Shard>, link: Rc<Link>) {
    while !shard.draining.get() {
        link.acks_signal.wait(None).await;
        let due = std::mem::take(&mut *link.acks_due.borrow_mut());
        if due.is_empty() {
            continue;
        }
        shard.settle().await;
        for ((peer, to_shard), seq) in due {
            send_ack(&link, peer, to_shard, seq).await;
        }
    }
}

/// Tells shard `to_shard` of instance `peer` that its engine messages are
/// applied here up to `seq`. A lost acknowledgement costs a redelivery,
/// acknowledged again.
async fn send_ack(link: &Link, peer: usize, to_shard: usize, seq: u64) {
    let seq = seq.to_string();
    let entry = Outgoing {
        shard: to_shard,
        call: "0:0",
        deadline_ms: 0,
        field: "acked",
        body: seq.as_bytes(),
        acked: None,
    };
    let _ = link
        .add(&replies_key(&link.place.map.instances[peer].id, to_shard), entry)
        .await;
}

fn on_reply(link: &Link, call: &str, bytes: &[u8]) {
    let Some((nonce, n)) = call.split_once(':') else { return };
    if nonce.parse() != Ok(link.nonce) {
        return;
    }
    let (Ok(n), Ok(reply)) = (n.parse::<u64>(), decode_reply(bytes)) else {
        return;
    };
    if let Some(waiter) = link.waiting.borrow_mut().remove(&n) {
        waiter.send(reply);
    }
}

fn on_request(shard: &Rc<Shard>, link: &Rc<Link>, peer: usize, e: &Entry<'_>, bytes: &[u8], now_ms: u64) {
    if e.deadline_ms < now_ms {
        link.peers.borrow_mut()[peer].counters.expired += 1;
        return;
    }
    {
        let mut peers = link.peers.borrow_mut();
        peers[peer].counters.received += 1;
        peers[peer].counters.received_bytes += bytes.len() as u64;
    }
    let to = replies_key(e.from, e.shard);
    let call = e.call.to_string();
    let (from_shard, deadline_ms) = (e.shard, e.deadline_ms);
    let decoded = decode_carried(bytes);
    let busy = link.running.get() >= link.limits.calls_in_flight_max;
    let (shard, link) = (shard.clone(), link.clone());
    link.running.set(link.running.get() + 1);
    glommio::spawn_local(async move {
        let reply = match decoded {
            _ if busy => RestReply::error(&crate::api::overloaded()),
            Ok(request) => answer_carried(&*shard, &request).await,
            Err(e) => RestReply::error(&crate::http::HttpError::new(
                400,
                crate::binance::ILLEGAL_CHARS,
                e.to_string(),
            )),
        };
        link.running.set(link.running.get() - 1);
        let body = encode_reply(&reply);
        // The caller times out if this is lost.
        let entry = Outgoing {
            shard: from_shard,
            call: &call,
            deadline_ms,
            field: "reply",
            body: &body,
            acked: None,
        };
        let _ = link.add(&to, entry).await;
    })
    .detach();
}

/// Another instance subscribes to, or leaves, a stream of a market this
/// instance owns: the market's shard counts it as pseudo-shard
/// `REMOTE_SHARDS + peer`.
fn on_subscription(shard: &Rc<Shard>, peer: usize, name: &str, on: bool) {
    let Some(key) = crate::streams::StreamKey::parse(name, &shard.trading()) else {
        return;
    };
    let remote = publish::REMOTE_SHARDS + peer;
    if key.is_all_markets() {
        // Every shard sends its own markets' part of the stream.
        for owner in 0..shard.mesh.shards() {
            subscribe_owner(shard, key, owner, remote, on);
        }
        return;
    }
    if shard.trading().market_elsewhere(key.market).is_some() {
        return;
    }
    let owner = shard.trading().market_shard(key.market) as usize;
    subscribe_owner(shard, key, owner, remote, on);
}

/// Counts (or stops counting) instance pseudo-shard `remote` among the
/// subscribers of `key` on shard `owner`.
fn subscribe_owner(shard: &Rc<Shard>, key: crate::streams::StreamKey, owner: usize, remote: usize, on: bool) {
    match (on, owner == shard.index) {
        (true, true) => publish::attach_stream(shard, key, remote),
        (false, true) => publish::remove_shard(shard, key, remote),
        (true, false) => {
            let shard = shard.clone();
            glommio::spawn_local(async move {
                let _ = shard.call_peer(owner, Call::Subscribe { key, shard: remote }).await;
            })
            .detach();
        }
        (false, false) => {
            let msg = StreamMsg::Unsubscribe { key, shard: remote };
            let _ = shard.mesh.send(owner, ShardMsg::Stream(msg));
        }
    }
}

/// Sends the market data events other instances subscribe to, in order,
/// a pipelined batch at a time, until the shard stops.
pub(crate) async fn run_md_publisher(shard: Rc<Shard>, link: Rc<Link>) {
    let key = md_key(link.me());
    let max = link.limits.stream_entries_max.to_string();
    while !shard.draining.get() {
        let batch: Vec<(String, String, Option<usize>)> = std::future::poll_fn(|cx| {
            let mut md = link.md.borrow_mut();
            if md.is_empty() {
                link.md_waker.set(Some(cx.waker().clone()));
                return Poll::Pending;
            }
            let n = md.len().min(MD_BATCH_MAX);
            Poll::Ready(md.drain(..n).collect())
        })
        .await;
        let commands: Vec<Vec<&[u8]>> = batch
            .iter()
            .map(|(name, payload, to)| {
                let mut words: Vec<&[u8]> = xadd_head(&key, &max).to_vec();
                words.extend([b"stream".as_slice(), name.as_bytes()]);
                match to {
                    // A lapse: for one instance only.
                    Some(peer) => words.extend([b"lapsed".as_slice(), link.place.map.instances[*peer].id.as_bytes()]),
                    None => words.extend([b"data".as_slice(), payload.as_bytes()]),
                }
                words
            })
            .collect();
        let refs: Vec<&[&[u8]]> = commands.iter().map(|c| c.as_slice()).collect();
        let sent = link.redis.pipeline(&refs).await;
        let failed = sent.iter().filter(|r| !matches!(r, Ok(Reply::Bulk(_)))).count();
        link.md_dropped.set(link.md_dropped.get() + failed as u64);
    }
}

/// On the relay shard: reads the market data every other instance
/// publishes and relays what this instance's connections subscribe to.
/// When the reads fail (Redis does not answer), the streams of other
/// instances' markets end on every shard with a last event saying so:
/// what would come next could not be trusted to follow what came before.
pub(crate) async fn run_md_reader(shard: Rc<Shard>, link: Rc<Link>, target: RedisTarget, limits: RedisLimits) {
    let redis = blocking_client(&link, target, limits, 40);
    let peers: Vec<usize> = (0..link.place.map.instances.len())
        .filter(|i| *i != link.place.me)
        .collect();
    let keys: Vec<String> = peers.iter().map(|&p| md_key(&link.place.map.instances[p].id)).collect();
    // From the newest entry on ("$"), and again after each failure:
    // a Redis that came back may have lost the streams.
    let mut ids: Vec<String> = keys.iter().map(|_| "$".to_string()).collect();
    let (block, count) = (READ_BLOCK_MS.to_string(), MD_BATCH_MAX.to_string());
    let mut retry_ms = RETRY_MS;
    let mut up = true;
    while !shard.draining.get() {
        let mut words: Vec<&[u8]> = vec![
            b"XREAD",
            b"COUNT",
            count.as_bytes(),
            b"BLOCK",
            block.as_bytes(),
            b"STREAMS",
        ];
        words.extend(keys.iter().map(|k| k.as_bytes()));
        words.extend(ids.iter().map(|id| id.as_bytes()));
        match redis.call(&words).await {
            Ok(Reply::Array(streams)) => {
                up = true;
                retry_ms = RETRY_MS;
                for stream in &streams {
                    on_md_stream(&shard, &link, (&keys, &peers), &mut ids, stream);
                }
            }
            Ok(Reply::Nil) => {
                up = true;
                retry_ms = RETRY_MS;
            }
            _ => {
                if up {
                    close_remote_streams_everywhere(&shard, "the link to the market's instance is down");
                }
                up = false;
                ids.iter_mut().for_each(|id| *id = "$".to_string());
                glommio::timer::sleep(Duration::from_millis(retry_ms)).await;
                retry_ms = (retry_ms * 2).min(RETRY_MS_MAX);
            }
        }
    }
    redis.close();
}

/// Ends the streams of other instances' markets on every shard of this
/// instance, each subscriber told `reason`.
fn close_remote_streams_everywhere(shard: &Shard, reason: &str) {
    let before = std::time::Instant::now();
    for to in 0..shard.mesh.shards() {
        if to == shard.index {
            publish::close_remote_streams(shard, reason, before);
        } else {
            let msg = StreamMsg::CloseRemote {
                reason: reason.to_string(),
                before,
            };
            let _ = shard.mesh.send(to, ShardMsg::Stream(msg));
        }
    }
}

/// The entries of one market data stream: `keys[i]` is `peers[i]`'s.
fn on_md_stream(
    shard: &Rc<Shard>,
    link: &Link,
    (keys, peers): (&[String], &[usize]),
    ids: &mut [String],
    stream: &Reply,
) {
    let Reply::Array(parts) = stream else { return };
    let [Reply::Bulk(name), Reply::Array(items)] = parts.as_slice() else {
        return;
    };
    let Some(at) = keys.iter().position(|k| k.as_bytes() == name.as_slice()) else {
        return;
    };
    let now_ms = crate::clock::now_ms();
    for item in items {
        let Reply::Array(entry) = item else { continue };
        let [Reply::Bulk(id), Reply::Array(fields)] = entry.as_slice() else {
            continue;
        };
        let Ok(id) = std::str::from_utf8(id) else { continue };
        ids[at] = id.to_string();
        let (mut stream_name, mut data, mut lapsed) = (None, None, None);
        for pair in fields.chunks(2) {
            if let [Reply::Bulk(field), Reply::Bulk(value)] = pair {
                match field.as_slice() {
                    b"stream" => stream_name = std::str::from_utf8(value).ok(),
                    b"data" => data = String::from_utf8(value.clone()).ok(),
                    b"lapsed" => lapsed = Some(value.as_slice()),
                    _ => {}
                }
            }
        }
        if let Some(to) = lapsed {
            if to == link.me().as_bytes() {
                close_remote_streams_everywhere(shard, "the subscription to the market's instance lapsed");
                // Whoever subscribes from now on is not closed: ask again
                // at once rather than leave them a lease-third without
                // events.
                publish::renew_remote_subscriptions(shard);
            }
            continue;
        }
        if let (Some(stream_name), Some(data)) = (stream_name, data) {
            let added_ms: u64 = id.split('-').next().and_then(|ms| ms.parse().ok()).unwrap_or(now_ms);
            link.peers.borrow_mut()[peers[at]].counters.lag_ms = now_ms.saturating_sub(added_ms);
            publish::publish_relayed(shard, stream_name, data);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trading::remote::tests::cancel;

    /// Every message of a pack, in order; `None` at the first that does
    /// not decode.
    fn unpack(mut bytes: &[u8]) -> Option<Vec<(u64, EngineMsg)>> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let (seq, msg, rest) = decode_engine(bytes)?;
            out.push((seq, msg));
            bytes = rest;
        }
        Some(out)
    }

    #[test]
    fn an_acknowledgement_rides_on_an_engine_entry_and_reads_back_with_it() {
        let mut pack = Vec::new();
        encode_engine(&mut pack, 9, &cancel(90));
        let outgoing = Outgoing {
            shard: 1,
            call: "0:0",
            deadline_ms: 0,
            field: "engine",
            body: &pack,
            acked: Some("41"),
        };
        let numbers = (outgoing.shard.to_string(), outgoing.deadline_ms.to_string());
        // As XREADGROUP hands an entry back: its id, then its fields.
        let item = |written: &Outgoing<'_>| {
            let words = fields("b", written, &numbers);
            Reply::Array(vec![
                Reply::Bulk(b"1765000000000-0".to_vec()),
                Reply::Array(words.iter().map(|w| Reply::Bulk(w.to_vec())).collect()),
            ])
        };
        let carried = item(&outgoing);
        let read = entry(&carried).expect("an entry");
        assert_eq!(
            (read.added_ms, read.from, read.shard, read.engine, read.acked),
            (1_765_000_000_000, "b", 1, Some(pack.as_slice()), Some(41))
        );
        let alone = Outgoing {
            acked: None,
            ..outgoing
        };
        assert_eq!(entry(&item(&alone)).map(|e| e.acked), Some(None));
    }

    #[test]
    fn a_pack_of_engine_messages_reads_back_in_order_and_a_cut_one_does_not() {
        let mut pack = Vec::new();
        for seq in [5, 6, 7] {
            encode_engine(&mut pack, seq, &cancel(seq * 10));
        }
        let read = unpack(&pack).map(|all| {
            all.into_iter()
                .map(|(seq, msg)| (seq, format!("{msg:?}")))
                .collect::<Vec<_>>()
        });
        let expected: Vec<(u64, String)> = [5, 6, 7].map(|seq| (seq, format!("{:?}", cancel(seq * 10)))).into();
        assert_eq!(read, Some(expected));
        // Cut anywhere inside its last message, the pack yields the first
        // two and then stops.
        let last_starts = {
            let mut first_two = Vec::new();
            encode_engine(&mut first_two, 5, &cancel(50));
            encode_engine(&mut first_two, 6, &cancel(60));
            first_two.len()
        };
        for cut in last_starts + 1..pack.len() {
            assert!(unpack(&pack[..cut]).is_none(), "cut at {cut}");
            assert_eq!(
                decode_engine(&pack[..cut]).map(|(seq, _, _)| seq),
                Some(5),
                "cut at {cut}"
            );
        }
        // A length shorter than a number, or past the end, is refused.
        assert!(decode_engine(&[4, 0, 0, 0, 1, 2, 3, 4]).is_none());
        assert!(decode_engine(&[255, 255, 255, 255, 0]).is_none());
    }
}
