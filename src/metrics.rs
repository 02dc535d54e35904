//! Per-shard metrics and their Prometheus text rendering.
//!
//! Each shard owns one `Metrics` and updates it without synchronisation.
//! `/metrics` asks every shard over the mesh for a `Snapshot` (plain data,
//! `Send`) and renders them together with a `shard` label, so any shard can
//! answer for all. Latency is recorded in nanoseconds in an hdrhistogram per
//! route and exported as a Prometheus histogram with fixed buckets.

use crate::compress::Outcome;
use crate::endpoint::Endpoint;
use hdrhistogram::Histogram;
use std::fmt::Write;

/// Routes as metric labels; `Malformed` is a request that never got routed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Route {
    Health,
    Ready,
    Metrics,
    NotFound,
    Malformed,
    Admin,
    /// A Binance REST endpoint.
    Api(Endpoint),
}

/// Routes that are not REST endpoints, in index order.
const FIXED_ROUTES: [Route; 6] = [
    Route::Health,
    Route::Ready,
    Route::Metrics,
    Route::NotFound,
    Route::Malformed,
    Route::Admin,
];
const ROUTES_COUNT: usize = FIXED_ROUTES.len() + Endpoint::ALL.len();

impl Route {
    /// Every route, in index order.
    pub(crate) fn all() -> impl Iterator<Item = Route> {
        FIXED_ROUTES
            .into_iter()
            .chain(Endpoint::ALL.into_iter().map(Route::Api))
    }

    pub(crate) fn label(self) -> String {
        match self {
            Route::Health => "health".into(),
            Route::Ready => "ready".into(),
            Route::Metrics => "metrics".into(),
            Route::NotFound => "not_found".into(),
            Route::Malformed => "malformed".into(),
            Route::Admin => "admin".into(),
            Route::Api(endpoint) => {
                let (method, path) = endpoint.route();
                format!("{} {path}", format!("{method:?}").to_uppercase())
            }
        }
    }

    fn index(self) -> usize {
        match self {
            Route::Api(endpoint) => FIXED_ROUTES.len() + Endpoint::ALL.iter().position(|e| *e == endpoint).unwrap_or(0),
            fixed => FIXED_ROUTES.iter().position(|r| *r == fixed).unwrap_or(0),
        }
    }
}

/// Upper bounds of the exported latency buckets, in seconds.
pub(crate) const LATENCY_BUCKETS_SECONDS: [f64; 16] = [
    0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05,
    0.1, 1.0, 10.0,
];
/// The largest latency a histogram records; longer ones are clamped.
const LATENCY_NS_MAX: u64 = 60_000_000_000;
/// Distinct statuses counted per route; more are folded into the last slot.
const STATUSES_PER_ROUTE_MAX: usize = 16;

struct RouteMetrics {
    statuses: Vec<(u16, u64)>,
    latency_ns: Histogram<u64>,
    latency_sum_ns: u64,
}

impl RouteMetrics {
    fn new() -> RouteMetrics {
        RouteMetrics {
            statuses: Vec::with_capacity(STATUSES_PER_ROUTE_MAX),
            // Two significant digits: quantiles within 1 % at about 20 KiB.
            latency_ns: latency_histogram(LATENCY_NS_MAX),
            latency_sum_ns: 0,
        }
    }
}

/// A latency histogram of 1 ns to `max_ns` with two significant digits
/// (quantiles within 1 %).
pub(crate) fn latency_histogram(max_ns: u64) -> Histogram<u64> {
    assert!(max_ns >= 2, "a latency histogram needs a range");
    // Bounds low = 1 < high and 2 significant digits are always accepted.
    Histogram::new_with_bounds(1, max_ns, 2).unwrap_or_else(|e| unreachable!("histogram bounds 1..{max_ns}: {e}"))
}

/// One shard's counters and gauges, as plain data.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Counters {
    pub(crate) connections_open: u64,
    pub(crate) connections_accepted: u64,
    pub(crate) connections_refused: u64,
    pub(crate) bytes_received: u64,
    pub(crate) bytes_sent: u64,
    /// Connections closed because the client took no bytes for the write
    /// timeout.
    pub(crate) write_timeouts: u64,
    /// Connections answered 408 and closed because a request's head and
    /// body did not arrive within the header timeout.
    pub(crate) header_timeouts: u64,
    pub(crate) mesh_sent: u64,
    pub(crate) mesh_received: u64,
    pub(crate) orders_local: u64,
    pub(crate) orders_cross_shard: u64,
    pub(crate) mesh_outbox: u64,
    pub(crate) rate_limited: u64,
    pub(crate) ip_bans: u64,
    pub(crate) banned_requests: u64,
    pub(crate) ip_banned: u64,
    /// The shard's wait for CPU now, µs (see `overload`).
    pub(crate) overload_wait_us: u64,
    /// Requests shed by priority (`overload::Priority` order).
    pub(crate) overload_shed: [u64; 4],
    pub(crate) ws_open: u64,
    pub(crate) ws_slow_closed: u64,
    pub(crate) ws_frames_sent: u64,
    pub(crate) journal: JournalCounters,
    pub(crate) history: HistoryCounters,
    pub(crate) compression: CompressionCounters,
    pub(crate) redis: RedisCounters,
    pub(crate) jobs: JobsCounters,
    pub(crate) cache: CacheCounters,
    /// Webhook events dropped: the outbox to the job queue was full, or the
    /// queue refused them (full).
    pub(crate) webhook_events_dropped: u64,
}

/// One shard's background jobs (see `jobs`): what its worker did, and
/// what its queue holds (with Redis the queue is shared: shard 0 shows
/// it, the others show 0).
#[derive(Clone, Copy, Debug, Default)]
pub struct JobsCounters {
    pub runs: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub dead_lettered: u64,
    pub reclaimed: u64,
    pub queue_errors: u64,
    /// Waiting, by priority: high, normal, low.
    pub waiting: [u64; 3],
    pub running: u64,
    pub oldest_age_ms: u64,
    pub delayed: u64,
    pub dead: u64,
}

/// What one level of the cache did (see `cache`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheLevelCounters {
    pub hits: u64,
    pub misses: u64,
    /// Values this shard computed and stored in the level.
    pub fills: u64,
    /// Entries dropped for room (L1); Redis evicts L2 values on its own,
    /// unseen, so L2's stays 0.
    pub evictions: u64,
    /// L1: entries dropped because an invalidation named a newer version.
    /// L2: invalidations this shard published through Redis.
    pub invalidations: u64,
}

/// One shard's two-level cache (see `cache`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheCounters {
    pub l1: CacheLevelCounters,
    pub l2: CacheLevelCounters,
    pub l1_entries: u64,
    pub l1_bytes: u64,
    /// 1 while the shard's invalidation subscriber is subscribed.
    pub subscribed: u64,
}

/// One shard's Redis client (see `redis`); all zero without `--redis`.
#[derive(Clone, Copy, Debug, Default)]
pub struct RedisCounters {
    /// 1 when the shard has a Redis client.
    pub configured: u64,
    pub connected: u64,
    pub commands: u64,
    /// Socket writes: commands per write is the pipelining.
    pub writes: u64,
    pub failures: u64,
    pub timeouts: u64,
    pub refused_breaker: u64,
    pub refused_queue: u64,
    pub connects: u64,
    pub reconnects: u64,
    pub in_flight: u64,
    /// 0 closed, 1 open, 2 half-open.
    pub breaker_state: u64,
    pub breaker_transitions: u64,
    pub latency: LatencyBuckets,
    /// Requests whose limits were decided locally because Redis did not
    /// answer.
    pub limit_fallbacks: u64,
    /// Shared-limit leases the shard holds.
    pub limit_leases: u64,
}

/// One shard's response compression (see `compress`).
#[derive(Clone, Copy, Debug, Default)]
pub struct CompressionCounters {
    /// Responses sent gzipped.
    pub responses: u64,
    /// Body bytes of those responses before and after gzip.
    pub input_bytes: u64,
    pub output_bytes: u64,
    /// Responses sent as they were, though the client asked for gzip,
    /// because the shard's budget was spent.
    pub over_budget: u64,
}

impl CompressionCounters {
    /// Counts what became of one response body.
    pub(crate) fn count(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Gzip {
                input_bytes,
                output_bytes,
            } => {
                self.responses += 1;
                self.input_bytes += input_bytes as u64;
                self.output_bytes += output_bytes as u64;
            }
            Outcome::OverBudget => self.over_budget += 1,
            Outcome::Small | Outcome::NotAccepted | Outcome::Incompressible => {}
        }
    }
}

/// Statement kinds of the history store, as metric labels.
pub const HISTORY_KINDS: [&str; 6] = ["write", "order", "orders", "trades", "export", "transfers"];
/// Read replicas whose lag /metrics shows.
pub const HISTORY_REPLICAS_MAX: usize = 8;

/// One statement kind's latency as a Prometheus histogram: cumulative
/// counts at or under each of `LATENCY_BUCKETS_SECONDS`, the count and
/// the sum in nanoseconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct LatencyBuckets {
    pub buckets: [u64; LATENCY_BUCKETS_SECONDS.len()],
    pub count: u64,
    pub sum_ns: u64,
}

impl LatencyBuckets {
    /// The buckets of `histogram` (nanoseconds), with the sum kept apart.
    pub fn of(histogram: &Histogram<u64>, sum_ns: u64) -> LatencyBuckets {
        LatencyBuckets {
            buckets: LATENCY_BUCKETS_SECONDS.map(|le| histogram.count_between(0, (le * 1e9) as u64)),
            count: histogram.len(),
            sum_ns,
        }
    }
}

/// One shard's history store figures (see `store::shard`).
#[derive(Clone, Copy, Debug, Default)]
pub struct HistoryCounters {
    /// 0: no store, 1: SQLite, 2: PostgreSQL.
    pub engine: u64,
    pub connections_open: u64,
    pub connections_busy: u64,
    pub connections_waiting: u64,
    pub rows_written: u64,
    pub batches_written: u64,
    /// Batches the store already had (after a restart).
    pub batches_skipped: u64,
    pub errors: u64,
    pub timeouts: u64,
    pub retries: u64,
    pub backlog_rows: u64,
    pub backlog_bytes: u64,
    /// Journal records whose rows are not in the store yet.
    pub backlog_records: u64,
    pub backlog_age_ms: u64,
    /// 1 while rows dropped past `history_backlog_bytes_max` wait in the
    /// journal for the catch-up.
    pub backlog_over: u64,
    pub rows_dropped: u64,
    /// 0 closed, 1 open, 2 half-open.
    pub breaker_state: u64,
    pub breaker_transitions: u64,
    pub breaker_rejections: u64,
    /// Exports streaming now (see `store::export`), at most
    /// `EXPORTS_PER_SHARD_MAX`.
    pub exports_active: u64,
    /// Rows streamed by exports.
    pub rows_exported: u64,
    pub latency: [LatencyBuckets; HISTORY_KINDS.len()],
    pub replicas: usize,
    /// Bytes each replica is behind the primary; `u64::MAX`: unknown.
    pub replica_lag_bytes: [u64; HISTORY_REPLICAS_MAX],
}

/// One shard's journal figures (see `durability::commit`).
#[derive(Clone, Copy, Debug, Default)]
pub struct JournalCounters {
    pub commits: u64,
    pub records: u64,
    /// Bytes of frames (header and record) appended.
    pub frame_bytes: u64,
    /// Bytes written to disk, including rewritten partial blocks.
    pub write_bytes: u64,
    pub durable_epoch: u64,
    /// Commit latency (write and fdatasync) quantiles, in nanoseconds.
    pub commit_p50_ns: u64,
    pub commit_p99_ns: u64,
    pub commit_max_ns: u64,
    pub commit_sum_ns: u64,
}

/// One shard's live metrics.
pub(crate) struct Metrics {
    routes: Vec<RouteMetrics>,
    counters: Counters,
}

impl std::ops::Deref for Metrics {
    type Target = Counters;

    fn deref(&self) -> &Counters {
        &self.counters
    }
}

impl std::ops::DerefMut for Metrics {
    fn deref_mut(&mut self) -> &mut Counters {
        &mut self.counters
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            routes: (0..ROUTES_COUNT).map(|_| RouteMetrics::new()).collect(),
            counters: Counters::default(),
        }
    }
}

impl Metrics {
    /// Counts one answered request.
    pub(crate) fn record(&mut self, route: Route, status: u16, latency_ns: u64) {
        let r = &mut self.routes[route.index()];
        let slot = r.statuses.iter().position(|(s, _)| *s == status);
        match slot {
            Some(i) => r.statuses[i].1 += 1,
            None if r.statuses.len() < STATUSES_PER_ROUTE_MAX => r.statuses.push((status, 1)),
            None => r.statuses[STATUSES_PER_ROUTE_MAX - 1].1 += 1,
        }
        r.latency_ns.saturating_record(latency_ns.clamp(1, LATENCY_NS_MAX));
        r.latency_sum_ns = r.latency_sum_ns.saturating_add(latency_ns);
    }

    /// A copy of the figures, small enough to send to another shard.
    pub(crate) fn snapshot(&self, shard: usize) -> Snapshot {
        let routes = Route::all()
            .zip(&self.routes)
            .filter(|(_, r)| !r.latency_ns.is_empty())
            .map(|(route, r)| RouteSnapshot {
                route,
                statuses: r.statuses.clone(),
                buckets: LATENCY_BUCKETS_SECONDS.map(|le| {
                    let le_ns = (le * 1e9) as u64;
                    r.latency_ns.count_between(0, le_ns)
                }),
                count: r.latency_ns.len(),
                sum_ns: r.latency_sum_ns,
            })
            .collect();
        Snapshot {
            shard,
            routes,
            counters: self.counters,
            links: Vec::new(),
            link_md_dropped: 0,
        }
    }
}

/// One shard's link to another instance of the cluster (see
/// `server::link`): requests it carried there and requests it answered
/// from there.
#[derive(Clone, Copy, Debug, Default)]
pub struct LinkCounters {
    /// Requests carried to the peer, and the bytes of their messages.
    pub sent: u64,
    pub sent_bytes: u64,
    /// Requests of the peer answered here, and their bytes.
    pub received: u64,
    pub received_bytes: u64,
    /// Requests that could not be sent (the engine did not take them, or
    /// too many were out), and sent requests whose answer did not come in
    /// time.
    pub unreachable: u64,
    pub timeouts: u64,
    /// Requests of the peer dropped unanswered because their deadline had
    /// passed when they were read (the peer had answered its client).
    pub expired: u64,
    /// How long the last message read from the peer waited in the engine, ms.
    pub lag_ms: u64,
    /// Engine messages sent to the peer (again included) and received
    /// from it (duplicates included); of those, sent again because the
    /// peer had not acknowledged them in time, and received a second
    /// time and dropped; and link entries that could not be read.
    pub engine_sent: u64,
    pub engine_received: u64,
    pub redelivered: u64,
    pub duplicates: u64,
    pub undecodable: u64,
    /// Engine messages for the peer waiting for its acknowledgement.
    pub outbox: u64,
    /// From a carried request's send to its answer.
    pub round_trip: LatencyBuckets,
}

/// A shard's figures at one instant.
#[derive(Clone, Debug)]
pub(crate) struct Snapshot {
    pub(crate) shard: usize,
    pub(crate) routes: Vec<RouteSnapshot>,
    pub(crate) counters: Counters,
    /// Each link to another instance, by the peer's id.
    pub(crate) links: Vec<(String, LinkCounters)>,
    /// Market data events for other instances this shard dropped (see
    /// `server::link`).
    pub(crate) link_md_dropped: u64,
}

#[derive(Clone, Debug)]
pub(crate) struct RouteSnapshot {
    pub(crate) route: Route,
    pub(crate) statuses: Vec<(u16, u64)>,
    /// Cumulative counts ≤ each of `LATENCY_BUCKETS_SECONDS`.
    pub(crate) buckets: [u64; LATENCY_BUCKETS_SECONDS.len()],
    pub(crate) count: u64,
    pub(crate) sum_ns: u64,
}

/// Renders all shards' snapshots as Prometheus text format 0.0.4.
pub(crate) fn render(snapshots: &[Snapshot]) -> String {
    let mut out = String::with_capacity(16 * 1024);
    render_requests(&mut out, snapshots);
    render_latency(&mut out, snapshots);
    render_per_shard(&mut out, &PER_SHARD, snapshots);
    render_per_shard(&mut out, &COMPRESSION, snapshots);
    render_journal(&mut out, snapshots);
    render_history(&mut out, snapshots);
    render_redis(&mut out, snapshots);
    render_jobs(&mut out, snapshots);
    render_cache(&mut out, snapshots);
    render_links(&mut out, snapshots);
    out
}

/// The links to the other instances of a cluster, by shard and peer.
fn render_links(out: &mut String, snapshots: &[Snapshot]) {
    type LinkFamily = (&'static str, &'static str, &'static str, fn(&LinkCounters) -> u64);
    let links: [LinkFamily; 14] = [
        (
            "tradsys_link_sent_total",
            "counter",
            "Requests carried to another instance.",
            |l| l.sent,
        ),
        (
            "tradsys_link_sent_bytes_total",
            "counter",
            "Bytes of the requests carried to another instance.",
            |l| l.sent_bytes,
        ),
        (
            "tradsys_link_received_total",
            "counter",
            "Requests of another instance answered here.",
            |l| l.received,
        ),
        (
            "tradsys_link_received_bytes_total",
            "counter",
            "Bytes of the requests of another instance answered here.",
            |l| l.received_bytes,
        ),
        (
            "tradsys_link_unreachable_total",
            "counter",
            "Requests for another instance that could not be sent.",
            |l| l.unreachable,
        ),
        (
            "tradsys_link_timeouts_total",
            "counter",
            "Requests carried to another instance whose answer did not come in time.",
            |l| l.timeouts,
        ),
        (
            "tradsys_link_expired_total",
            "counter",
            "Requests of another instance dropped because their deadline had passed.",
            |l| l.expired,
        ),
        (
            "tradsys_link_lag_ms",
            "gauge",
            "How long the last message from another instance waited in the engine, ms.",
            |l| l.lag_ms,
        ),
        (
            "tradsys_link_engine_sent_total",
            "counter",
            "Engine messages sent to another instance, redeliveries included.",
            |l| l.engine_sent,
        ),
        (
            "tradsys_link_engine_received_total",
            "counter",
            "Engine messages received from another instance, duplicates included.",
            |l| l.engine_received,
        ),
        (
            "tradsys_link_redeliveries_total",
            "counter",
            "Engine messages sent again because another instance had not acknowledged them in time.",
            |l| l.redelivered,
        ),
        (
            "tradsys_link_duplicates_total",
            "counter",
            "Engine messages received a second time and dropped.",
            |l| l.duplicates,
        ),
        (
            "tradsys_link_undecodable_total",
            "counter",
            "Link entries from another instance that could not be read.",
            |l| l.undecodable,
        ),
        (
            "tradsys_link_outbox",
            "gauge",
            "Engine messages for another instance waiting for its acknowledgement.",
            |l| l.outbox,
        ),
    ];
    for (name, kind, help, value) in links {
        family(out, name, kind, help);
        for s in snapshots {
            for (peer, l) in &s.links {
                let _ = writeln!(out, "{name}{{shard=\"{}\",peer=\"{peer}\"}} {}", s.shard, value(l));
            }
        }
    }
    let name = "tradsys_link_md_dropped_total";
    family(
        out,
        name,
        "counter",
        "Market data events for other instances dropped: the shard's queue was full, or Redis did not take them.",
    );
    for s in snapshots.iter().filter(|s| !s.links.is_empty()) {
        let _ = writeln!(out, "{name}{{shard=\"{}\"}} {}", s.shard, s.link_md_dropped);
    }
    let name = "tradsys_link_round_trip_seconds";
    family(
        out,
        name,
        "histogram",
        "From a carried request's send to its answer from the other instance.",
    );
    for s in snapshots {
        for (peer, l) in &s.links {
            let labels = format!("shard=\"{}\",peer=\"{peer}\"", s.shard);
            write_buckets(out, name, &labels, &l.round_trip);
        }
    }
}

/// Requests by shard, route and status.
fn render_requests(out: &mut String, snapshots: &[Snapshot]) {
    family(
        out,
        "tradsys_http_requests_total",
        "counter",
        "HTTP requests answered, by route and status.",
    );
    for s in snapshots {
        for r in &s.routes {
            for (status, count) in &r.statuses {
                let _ = writeln!(
                    out,
                    "tradsys_http_requests_total{{shard=\"{}\",route=\"{}\",status=\"{status}\"}} {count}",
                    s.shard,
                    r.route.label()
                );
            }
        }
    }
}

/// The latency histogram of every route on every shard.
fn render_latency(out: &mut String, snapshots: &[Snapshot]) {
    family(
        out,
        "tradsys_http_request_duration_seconds",
        "histogram",
        "Time from a request's parsed head to its queued response.",
    );
    for s in snapshots {
        for r in &s.routes {
            let labels = format!("shard=\"{}\",route=\"{}\"", s.shard, r.route.label());
            for (le, count) in LATENCY_BUCKETS_SECONDS.iter().zip(r.buckets) {
                let _ = writeln!(
                    out,
                    "tradsys_http_request_duration_seconds_bucket{{{labels},le=\"{le}\"}} {count}"
                );
            }
            let _ = writeln!(
                out,
                "tradsys_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                r.count
            );
            let _ = writeln!(
                out,
                "tradsys_http_request_duration_seconds_sum{{{labels}}} {}",
                r.sum_ns as f64 / 1e9
            );
            let _ = writeln!(
                out,
                "tradsys_http_request_duration_seconds_count{{{labels}}} {}",
                r.count
            );
        }
    }
}

/// The plain per-shard families: name, type, help, and the figure.
const PER_SHARD: [ShardFamily; 24] = [
    ("tradsys_connections_open", "gauge", "Open client connections.", |s| {
        s.counters.connections_open
    }),
    (
        "tradsys_connections_accepted_total",
        "counter",
        "Client connections accepted.",
        |s| s.counters.connections_accepted,
    ),
    (
        "tradsys_connections_refused_total",
        "counter",
        "Client connections closed at once because the shard was full or draining.",
        |s| s.counters.connections_refused,
    ),
    (
        "tradsys_http_bytes_received_total",
        "counter",
        "Bytes read from clients.",
        |s| s.counters.bytes_received,
    ),
    (
        "tradsys_http_bytes_sent_total",
        "counter",
        "Bytes written to clients.",
        |s| s.counters.bytes_sent,
    ),
    (
        "tradsys_http_header_timeouts_total",
        "counter",
        "HTTP connections answered 408 and closed because a request did not arrive within http_header_timeout_ms.",
        |s| s.counters.header_timeouts,
    ),
    (
        "tradsys_http_write_timeouts_total",
        "counter",
        "HTTP connections closed because the client took no bytes for http_write_timeout_ms.",
        |s| s.counters.write_timeouts,
    ),
    (
        "tradsys_mesh_messages_sent_total",
        "counter",
        "Messages sent to other shards.",
        |s| s.counters.mesh_sent,
    ),
    (
        "tradsys_mesh_messages_received_total",
        "counter",
        "Messages received from other shards.",
        |s| s.counters.mesh_received,
    ),
    (
        "tradsys_orders_local_total",
        "counter",
        "Orders whose market lives on the user's shard: no engine message left the shard.",
        |s| s.counters.orders_local,
    ),
    (
        "tradsys_orders_cross_shard_total",
        "counter",
        "Orders whose market lives on another shard than the user's.",
        |s| s.counters.orders_cross_shard,
    ),
    (
        "tradsys_mesh_outbox_messages",
        "gauge",
        "Messages waiting to enter the mesh.",
        |s| s.counters.mesh_outbox,
    ),
    (
        "tradsys_rate_limited_total",
        "counter",
        "Requests refused with 429 by a request or order limit.",
        |s| s.counters.rate_limited,
    ),
    (
        "tradsys_ip_bans_total",
        "counter",
        "IPs banned (418) for going on past 429.",
        |s| s.counters.ip_bans,
    ),
    (
        "tradsys_banned_requests_total",
        "counter",
        "Requests refused with 418 while their IP was banned.",
        |s| s.counters.banned_requests,
    ),
    ("tradsys_ip_banned", "gauge", "IPs banned now.", |s| {
        s.counters.ip_banned
    }),
    (
        "tradsys_overload_wait_us",
        "gauge",
        "How long work waits for the shard's CPU now, microseconds (the overload probe).",
        |s| s.counters.overload_wait_us,
    ),
    (
        "tradsys_overload_shed_trading_total",
        "counter",
        "Order entry and trading reads refused with 503 -1008 because the shard waited past overload_order_wait_ms_max.",
        |s| s.counters.overload_shed[0],
    ),
    (
        "tradsys_overload_shed_market_data_total",
        "counter",
        "Market data requests refused with 503 -1008 because the shard waited past 3/4 of overload_order_wait_ms_max.",
        |s| s.counters.overload_shed[1],
    ),
    (
        "tradsys_overload_shed_history_total",
        "counter",
        "History requests refused with 503 -1008 because the shard waited past 1/2 of overload_order_wait_ms_max.",
        |s| s.counters.overload_shed[2],
    ),
    (
        "tradsys_overload_shed_ops_total",
        "counter",
        "Admin API requests refused with 503 -1008 because the shard waited past 1/4 of overload_order_wait_ms_max.",
        |s| s.counters.overload_shed[3],
    ),
    (
        "tradsys_ws_connections_open",
        "gauge",
        "Open WebSocket connections.",
        |s| s.counters.ws_open,
    ),
    (
        "tradsys_ws_slow_consumers_closed_total",
        "counter",
        "WebSocket connections closed with 1008 because their outbound queue overflowed.",
        |s| s.counters.ws_slow_closed,
    ),
    (
        "tradsys_ws_frames_sent_total",
        "counter",
        "WebSocket frames written to clients.",
        |s| s.counters.ws_frames_sent,
    ),
];

/// Response compression; the ratio is output over input bytes.
const COMPRESSION: [ShardFamily; 4] = [
    (
        "tradsys_http_compressed_responses_total",
        "counter",
        "Responses sent gzipped.",
        |s| s.counters.compression.responses,
    ),
    (
        "tradsys_http_compression_input_bytes_total",
        "counter",
        "Body bytes of the gzipped responses before compression.",
        |s| s.counters.compression.input_bytes,
    ),
    (
        "tradsys_http_compression_output_bytes_total",
        "counter",
        "Body bytes of the gzipped responses after compression.",
        |s| s.counters.compression.output_bytes,
    ),
    (
        "tradsys_http_compression_over_budget_total",
        "counter",
        "Responses sent uncompressed, though the client asked for gzip, because the shard's compression budget (http_compress_input_bytes_per_second_max) was spent.",
        |s| s.counters.compression.over_budget,
    ),
];

fn render_journal(out: &mut String, snapshots: &[Snapshot]) {
    let journal: [ShardFamily; 5] = [
        (
            "tradsys_journal_commits_total",
            "counter",
            "Group commits written.",
            |s| s.counters.journal.commits,
        ),
        (
            "tradsys_journal_records_total",
            "counter",
            "Journal records appended.",
            |s| s.counters.journal.records,
        ),
        (
            "tradsys_journal_frame_bytes_total",
            "counter",
            "Bytes of journal frames appended.",
            |s| s.counters.journal.frame_bytes,
        ),
        (
            "tradsys_journal_write_bytes_total",
            "counter",
            "Bytes written to journal segments, rewritten partial blocks included.",
            |s| s.counters.journal.write_bytes,
        ),
        (
            "tradsys_journal_durable_epoch",
            "gauge",
            "The epoch up to which this shard's journal is synced.",
            |s| s.counters.journal.durable_epoch,
        ),
    ];
    render_per_shard(out, &journal, snapshots);
    let name = "tradsys_journal_commit_duration_seconds";
    family(out, name, "summary", "Time to write and sync one group commit.");
    for s in snapshots {
        let j = &s.counters.journal;
        for (quantile, ns) in [
            ("0.5", j.commit_p50_ns),
            ("0.99", j.commit_p99_ns),
            ("1", j.commit_max_ns),
        ] {
            let _ = writeln!(
                out,
                "{name}{{shard=\"{}\",quantile=\"{quantile}\"}} {}",
                s.shard,
                ns as f64 / 1e9
            );
        }
        let _ = writeln!(
            out,
            "{name}_sum{{shard=\"{}\"}} {}",
            s.shard,
            j.commit_sum_ns as f64 / 1e9
        );
        let _ = writeln!(out, "{name}_count{{shard=\"{}\"}} {}", s.shard, j.commits);
    }
}

fn render_history(out: &mut String, snapshots: &[Snapshot]) {
    let history: [ShardFamily; 21] = [
        (
            "tradsys_history_engine",
            "gauge",
            "History store engine: 0 none, 1 SQLite, 2 PostgreSQL.",
            |s| s.counters.history.engine,
        ),
        (
            "tradsys_history_connections_open",
            "gauge",
            "Open connections to the history store.",
            |s| s.counters.history.connections_open,
        ),
        (
            "tradsys_history_connections_busy",
            "gauge",
            "History store connections in use.",
            |s| s.counters.history.connections_busy,
        ),
        (
            "tradsys_history_connections_waiting",
            "gauge",
            "Calls waiting for a history store connection.",
            |s| s.counters.history.connections_waiting,
        ),
        (
            "tradsys_history_rows_written_total",
            "counter",
            "Rows written to the history store.",
            |s| s.counters.history.rows_written,
        ),
        (
            "tradsys_history_exports_active",
            "gauge",
            "History exports streaming now.",
            |s| s.counters.history.exports_active,
        ),
        (
            "tradsys_history_export_rows_total",
            "counter",
            "Rows streamed by history exports.",
            |s| s.counters.history.rows_exported,
        ),
        (
            "tradsys_history_batches_written_total",
            "counter",
            "Batches written to the history store.",
            |s| s.counters.history.batches_written,
        ),
        (
            "tradsys_history_batches_skipped_total",
            "counter",
            "Batches the history store already had.",
            |s| s.counters.history.batches_skipped,
        ),
        (
            "tradsys_history_errors_total",
            "counter",
            "History store calls that failed (timeouts included).",
            |s| s.counters.history.errors,
        ),
        (
            "tradsys_history_timeouts_total",
            "counter",
            "History store calls that timed out.",
            |s| s.counters.history.timeouts,
        ),
        (
            "tradsys_history_retries_total",
            "counter",
            "History store calls retried after a failure.",
            |s| s.counters.history.retries,
        ),
        (
            "tradsys_history_backlog_rows",
            "gauge",
            "Rows waiting for the history store.",
            |s| s.counters.history.backlog_rows,
        ),
        (
            "tradsys_history_backlog_bytes",
            "gauge",
            "Bytes of rows waiting for the history store.",
            |s| s.counters.history.backlog_bytes,
        ),
        (
            "tradsys_history_backlog_records",
            "gauge",
            "Journal records whose rows are not in the history store yet.",
            |s| s.counters.history.backlog_records,
        ),
        (
            "tradsys_history_backlog_seconds",
            "gauge",
            "Age of the oldest rows waiting for the history store.",
            |s| s.counters.history.backlog_age_ms / 1000,
        ),
        (
            "tradsys_history_backlog_over_max",
            "gauge",
            "1 while rows dropped past history_backlog_bytes_max wait in the journal for the catch-up.",
            |s| s.counters.history.backlog_over,
        ),
        (
            "tradsys_history_rows_dropped_total",
            "counter",
            "Rows not kept for room; the journal keeps their records.",
            |s| s.counters.history.rows_dropped,
        ),
        (
            "tradsys_history_breaker_state",
            "gauge",
            "History store breaker: 0 closed, 1 open, 2 half-open.",
            |s| s.counters.history.breaker_state,
        ),
        (
            "tradsys_history_breaker_transitions_total",
            "counter",
            "History store breaker state changes.",
            |s| s.counters.history.breaker_transitions,
        ),
        (
            "tradsys_history_breaker_rejections_total",
            "counter",
            "History store calls refused by the open breaker.",
            |s| s.counters.history.breaker_rejections,
        ),
    ];
    render_per_shard(out, &history, snapshots);
    let name = "tradsys_history_query_duration_seconds";
    family(out, name, "histogram", "History store call latency by statement kind.");
    for s in snapshots {
        for (kind, l) in HISTORY_KINDS.iter().zip(&s.counters.history.latency) {
            let labels = format!("shard=\"{}\",kind=\"{kind}\"", s.shard);
            write_buckets(out, name, &labels, l);
        }
    }
    let name = "tradsys_history_replica_lag_bytes";
    family(
        out,
        name,
        "gauge",
        "WAL bytes a read replica is behind the primary (-1: not answering).",
    );
    for s in snapshots {
        let h = &s.counters.history;
        for (i, lag) in h.replica_lag_bytes.iter().take(h.replicas).enumerate() {
            let value = if *lag == u64::MAX { -1 } else { *lag as i64 };
            let _ = writeln!(out, "{name}{{shard=\"{}\",replica=\"{i}\"}} {value}", s.shard);
        }
    }
}

fn render_redis(out: &mut String, snapshots: &[Snapshot]) {
    let redis: [ShardFamily; 15] = [
        (
            "tradsys_redis_limit_fallbacks_total",
            "counter",
            "Requests whose rate limits were decided locally because Redis did not answer.",
            |s| s.counters.redis.limit_fallbacks,
        ),
        (
            "tradsys_redis_limit_leases",
            "gauge",
            "Leases of shared rate-limit budget the shard holds.",
            |s| s.counters.redis.limit_leases,
        ),
        (
            "tradsys_redis_configured",
            "gauge",
            "1 when the shard has a Redis client (--redis).",
            |s| s.counters.redis.configured,
        ),
        (
            "tradsys_redis_connected",
            "gauge",
            "1 while the shard's Redis connection is up.",
            |s| s.counters.redis.connected,
        ),
        (
            "tradsys_redis_commands_total",
            "counter",
            "Redis commands written.",
            |s| s.counters.redis.commands,
        ),
        (
            "tradsys_redis_writes_total",
            "counter",
            "Socket writes carrying Redis commands (commands per write: the pipelining).",
            |s| s.counters.redis.writes,
        ),
        (
            "tradsys_redis_failures_total",
            "counter",
            "Redis commands that got no reply (connection lost, timeout, protocol error).",
            |s| s.counters.redis.failures,
        ),
        (
            "tradsys_redis_timeouts_total",
            "counter",
            "Batches of Redis commands that timed out.",
            |s| s.counters.redis.timeouts,
        ),
        (
            "tradsys_redis_refused_breaker_total",
            "counter",
            "Redis commands refused by the open breaker.",
            |s| s.counters.redis.refused_breaker,
        ),
        (
            "tradsys_redis_refused_queue_total",
            "counter",
            "Redis commands refused because the shard's queue was full.",
            |s| s.counters.redis.refused_queue,
        ),
        (
            "tradsys_redis_connects_total",
            "counter",
            "Redis connections established.",
            |s| s.counters.redis.connects,
        ),
        (
            "tradsys_redis_reconnects_total",
            "counter",
            "Redis connection attempts after a lost or failed connection.",
            |s| s.counters.redis.reconnects,
        ),
        (
            "tradsys_redis_in_flight",
            "gauge",
            "Redis commands written and not yet answered.",
            |s| s.counters.redis.in_flight,
        ),
        (
            "tradsys_redis_breaker_state",
            "gauge",
            "Redis breaker: 0 closed, 1 open, 2 half-open.",
            |s| s.counters.redis.breaker_state,
        ),
        (
            "tradsys_redis_breaker_transitions_total",
            "counter",
            "Redis breaker state changes.",
            |s| s.counters.redis.breaker_transitions,
        ),
    ];
    render_per_shard(out, &redis, snapshots);
    let name = "tradsys_redis_command_duration_seconds";
    family(
        out,
        name,
        "histogram",
        "Redis command latency, from queued to its reply.",
    );
    for s in snapshots {
        let l = &s.counters.redis.latency;
        let labels = format!("shard=\"{}\"", s.shard);
        write_buckets(out, name, &labels, l);
    }
}

fn render_jobs(out: &mut String, snapshots: &[Snapshot]) {
    let jobs: [ShardFamily; 11] = [
        (
            "tradsys_webhook_events_dropped_total",
            "counter",
            "Webhook events dropped because the way to the job queue was full.",
            |s| s.counters.webhook_events_dropped,
        ),
        (
            "tradsys_jobs_runs_total",
            "counter",
            "Job attempts this shard's worker started.",
            |s| s.counters.jobs.runs,
        ),
        (
            "tradsys_jobs_succeeded_total",
            "counter",
            "Jobs this shard's worker finished.",
            |s| s.counters.jobs.succeeded,
        ),
        (
            "tradsys_jobs_failed_total",
            "counter",
            "Job attempts that failed (retried or dead-lettered).",
            |s| s.counters.jobs.failed,
        ),
        (
            "tradsys_jobs_dead_lettered_total",
            "counter",
            "Jobs this shard's worker moved to the dead letters.",
            |s| s.counters.jobs.dead_lettered,
        ),
        (
            "tradsys_jobs_reclaimed_total",
            "counter",
            "Jobs taken over from a worker that held them past the visibility timeout.",
            |s| s.counters.jobs.reclaimed,
        ),
        (
            "tradsys_jobs_queue_errors_total",
            "counter",
            "Calls to the job queue that failed (Redis or the local log).",
            |s| s.counters.jobs.queue_errors,
        ),
        ("tradsys_jobs_running", "gauge", "Jobs a worker holds.", |s| {
            s.counters.jobs.running
        }),
        (
            "tradsys_jobs_oldest_age_seconds",
            "gauge",
            "Age of the oldest job not done, whole seconds.",
            |s| s.counters.jobs.oldest_age_ms / 1000,
        ),
        ("tradsys_jobs_delayed", "gauge", "Jobs waiting for their retry.", |s| {
            s.counters.jobs.delayed
        }),
        ("tradsys_jobs_dead", "gauge", "Dead letters kept.", |s| {
            s.counters.jobs.dead
        }),
    ];
    render_per_shard(out, &jobs, snapshots);
    let name = "tradsys_jobs_waiting";
    family(out, name, "gauge", "Jobs waiting to run, by priority.");
    for s in snapshots {
        for (priority, count) in ["high", "normal", "low"].iter().zip(s.counters.jobs.waiting) {
            let _ = writeln!(out, "{name}{{shard=\"{}\",priority=\"{priority}\"}} {count}", s.shard);
        }
    }
}

/// The cache's counters, per shard and level.
fn render_cache(out: &mut String, snapshots: &[Snapshot]) {
    type Level = fn(&CacheLevelCounters) -> u64;
    let levels: [(&str, &str, Level); 5] = [
        (
            "tradsys_cache_hits_total",
            "Cache lookups answered by the level.",
            |l| l.hits,
        ),
        (
            "tradsys_cache_misses_total",
            "Cache lookups the level could not answer.",
            |l| l.misses,
        ),
        (
            "tradsys_cache_fills_total",
            "Values this shard computed and stored in the level.",
            |l| l.fills,
        ),
        (
            "tradsys_cache_evictions_total",
            "Entries dropped for room (L2: Redis evicts on its own, not counted).",
            |l| l.evictions,
        ),
        (
            "tradsys_cache_invalidations_total",
            "L1: entries dropped by an invalidation; L2: invalidations published.",
            |l| l.invalidations,
        ),
    ];
    for (name, help, value) in levels {
        family(out, name, "counter", help);
        for s in snapshots {
            let c = &s.counters.cache;
            for (level, counters) in [("l1", &c.l1), ("l2", &c.l2)] {
                let _ = writeln!(
                    out,
                    "{name}{{shard=\"{}\",level=\"{level}\"}} {}",
                    s.shard,
                    value(counters)
                );
            }
        }
    }
    let gauges: [ShardFamily; 3] = [
        (
            "tradsys_cache_entries",
            "gauge",
            "Entries in the shard's L1 cache.",
            |s| s.counters.cache.l1_entries,
        ),
        (
            "tradsys_cache_bytes",
            "gauge",
            "Bytes the shard's L1 cache holds (values, keys and a fixed overhead per entry).",
            |s| s.counters.cache.l1_bytes,
        ),
        (
            "tradsys_cache_invalidation_subscribed",
            "gauge",
            "1 while the shard listens for cache invalidations through Redis.",
            |s| s.counters.cache.subscribed,
        ),
    ];
    render_per_shard(out, &gauges, snapshots);
}

/// One series per shard for each of `families`.
fn render_per_shard(out: &mut String, families: &[ShardFamily], snapshots: &[Snapshot]) {
    for (name, kind, help, value) in families {
        family(out, name, kind, help);
        for s in snapshots {
            let _ = writeln!(out, "{name}{{shard=\"{}\"}} {}", s.shard, value(s));
        }
    }
}

/// One series of a latency histogram: its cumulative buckets, `+Inf`, the
/// sum in seconds and the count.
fn write_buckets(out: &mut String, name: &str, labels: &str, l: &LatencyBuckets) {
    for (le, count) in LATENCY_BUCKETS_SECONDS.iter().zip(l.buckets) {
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {count}");
    }
    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", l.count);
    let _ = writeln!(out, "{name}_sum{{{labels}}} {}", l.sum_ns as f64 / 1e9);
    let _ = writeln!(out, "{name}_count{{{labels}}} {}", l.count);
}

/// A per-shard metric: name, type, help, and how to read it from a snapshot.
type ShardFamily = (&'static str, &'static str, &'static str, fn(&Snapshot) -> u64);

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let mut m = Metrics::default();
        m.record(Route::Api(Endpoint::Ping), 200, 3_000);
        m.record(Route::Api(Endpoint::Ping), 200, 40_000);
        m.record(Route::Api(Endpoint::Ping), 404, 2_000_000_000);
        let s = m.snapshot(1);
        let ping = &s.routes[0];
        assert_eq!(ping.statuses, vec![(200, 2), (404, 1)]);
        assert_eq!(ping.buckets[0], 1);
        assert_eq!(ping.buckets[3], 2);
        assert_eq!(ping.buckets[LATENCY_BUCKETS_SECONDS.len() - 1], 3);
        assert_eq!(ping.count, 3);
        assert_eq!(ping.sum_ns, 2_000_043_000);
        let text = render(&[s]);
        assert!(text.contains("tradsys_http_requests_total{shard=\"1\",route=\"GET /api/v3/ping\",status=\"404\"} 1\n"));
        assert!(text.contains(
            "tradsys_http_request_duration_seconds_bucket{shard=\"1\",route=\"GET /api/v3/ping\",le=\"+Inf\"} 3\n"
        ));
        assert!(text
            .contains("tradsys_http_request_duration_seconds_sum{shard=\"1\",route=\"GET /api/v3/ping\"} 2.000043\n"));
    }

    #[test]
    fn compression_counts_each_outcome() {
        let mut m = Metrics::default();
        let outcomes = [
            Outcome::Small,
            Outcome::NotAccepted,
            Outcome::Incompressible,
            Outcome::OverBudget,
            Outcome::Gzip {
                input_bytes: 4651,
                output_bytes: 730,
            },
            Outcome::Gzip {
                input_bytes: 2000,
                output_bytes: 500,
            },
        ];
        for outcome in outcomes {
            m.compression.count(outcome);
        }
        let text = render(&[m.snapshot(0)]);
        for line in [
            "tradsys_http_compressed_responses_total{shard=\"0\"} 2\n",
            "tradsys_http_compression_input_bytes_total{shard=\"0\"} 6651\n",
            "tradsys_http_compression_output_bytes_total{shard=\"0\"} 1230\n",
            "tradsys_http_compression_over_budget_total{shard=\"0\"} 1\n",
            "# TYPE tradsys_http_compression_over_budget_total counter\n",
        ] {
            assert!(text.contains(line), "{line}");
        }
    }
}
