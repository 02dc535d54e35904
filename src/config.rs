//! Configuration: flags > environment (`TRADSYS_*`) > TOML file > default.
//!
//! Every key has one spelling per source, derived from its name:
//! `http_header_bytes_max` is `--http-header-bytes-max`, the environment
//! variable `TRADSYS_HTTP_HEADER_BYTES_MAX` and the TOML key
//! `http_header_bytes_max`. Values are gathered as text from all sources
//! first and then parsed once, so a bad value names its key whatever source
//! it came from. Start-up turns a `ConfigError` into one line and exit 2.

use crate::compress::{self, CompressConfig};
use crate::http::HttpLimits;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Why the configuration was refused; the message names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{key}: {problem}")]
    Invalid { key: String, problem: String },
    #[error("unknown option {0} (see --help)")]
    UnknownFlag(String),
    #[error("config file {path}: {problem}")]
    File { path: String, problem: String },
}

fn invalid(key: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        problem: problem.into(),
    }
}

/// One configuration key: its name and the default as text.
struct Key {
    name: &'static str,
    default: &'static str,
    help: &'static str,
}

/// Every key tradsys reads. The default "" means "computed" (shards) or
/// "unset" (optional keys).
const KEYS: &[Key] = &[
    Key {
        name: "listen",
        default: "127.0.0.1:8080",
        help: "address of the HTTP/WebSocket API",
    },
    Key {
        name: "shards",
        default: "",
        help: "shards (one per core); default: the cores this process may use",
    },
    Key {
        name: "data_dir",
        default: "./data",
        help: "directory for journals and snapshots",
    },
    Key {
        name: "markets",
        default: "shards/markets.toml",
        help: "markets file",
    },
    Key {
        name: "http_header_bytes_max",
        default: "8192",
        help: "request line + headers, bytes (over: 431)",
    },
    Key {
        name: "http_headers_count_max",
        default: "64",
        help: "headers per request (over: 431)",
    },
    Key {
        name: "http_body_bytes_max",
        default: "65536",
        help: "request body, bytes (over: 413)",
    },
    Key {
        name: "http_params_count_max",
        default: "128",
        help: "query + form parameters per request (over: 400)",
    },
    Key {
        name: "http_header_timeout_ms",
        default: "10000",
        help: "time to receive a request's head and body (over: 408 and close)",
    },
    Key {
        name: "http_idle_timeout_ms",
        default: "60000",
        help: "keep-alive idle time before the connection is closed",
    },
    Key {
        name: "http_write_timeout_ms",
        default: "10000",
        help: "time a client may take to accept a response: counted from when it stops taking bytes, then the connection is closed",
    },
    Key {
        name: "http_socket_send_bytes",
        default: "262144",
        help: "kernel send buffer of an HTTP connection, bytes (the kernel doubles it); bounds what a client that stops reading holds before the write timeout starts; 0: the kernel's autotuning",
    },
    Key {
        name: "http_compress_bytes_min",
        default: "1300",
        help: "gzip response bodies of at least this many bytes when the client accepts gzip",
    },
    Key {
        name: "http_compress_input_bytes_per_second_max",
        default: "16777216",
        help:
            "body bytes each shard may gzip per second (bursts of 100 ms of it); past it bodies go uncompressed; 0: off",
    },
    Key {
        name: "http_compress_level",
        default: "1",
        help: "gzip level, 1 (fastest) to 12 (smallest output)",
    },
    Key {
        name: "connections_per_shard_max",
        default: "100000",
        help: "open connections per shard (over: closed at once)",
    },
    Key {
        name: "overload_order_wait_ms_max",
        default: "10",
        help: "wait for a shard's CPU at which order entry is shed with 503 -1008 and Retry-After; market data at 3/4 of it, history at 1/2, the admin API at 1/4 (never /health, /ready, /metrics); 0: nothing is shed",
    },
    Key {
        name: "shutdown_timeout_ms",
        default: "10000",
        help: "time in-flight requests get on SIGTERM/SIGINT",
    },
    Key {
        name: "mesh_channel_capacity",
        default: "1024",
        help: "messages queued between two shards",
    },
    Key {
        name: "mesh_outbox_messages_max",
        default: "65536",
        help: "messages waiting for the mesh before new work is refused with 503",
    },
    Key {
        name: "ws_outbound_bytes_max",
        default: "262144",
        help: "frames queued for one WebSocket client, bytes (over: closed with 1008)",
    },
    Key {
        name: "ws_message_bytes_max",
        default: "65536",
        help: "one message from a WebSocket client, bytes (over: closed with 1009)",
    },
    Key {
        name: "ws_socket_send_bytes",
        default: "0",
        help: "kernel send buffer of a WebSocket connection, bytes; 0: the kernel's autotuning",
    },
    Key {
        name: "ws_connections_per_ip_max",
        default: "300",
        help: "WebSocket connections per client IP on each shard (over: 429)",
    },
    Key {
        name: "ws_user_data_connections_per_user_max",
        default: "3",
        help: "user data stream connections per user over all shards (over: 429, -1003)",
    },
    Key {
        name: "ws_api_messages_per_second_max",
        default: "200",
        help: "requests, pings and pongs per second on one WebSocket API connection (over: closed with 1008)",
    },
    Key {
        name: "ws_api_connection_attempts_per_5m_max",
        default: "300",
        help: "WebSocket API connections opened per client IP in 5 minutes on each shard, or over every instance with --redis (over: 429, -1034)",
    },
    Key {
        name: "listen_key_ttl_ms",
        default: "3600000",
        help: "time a listen key lives without a keepalive (then listenKeyExpired)",
    },
    Key {
        name: "admin_listen",
        default: "127.0.0.1:8081",
        help: "address of the admin API",
    },
    Key {
        name: "admin_token",
        default: "",
        help: "token the admin API requires in X-Admin-Token; empty: admin API off",
    },
    Key {
        name: "request_weight_per_minute_max",
        default: "6000",
        help: "request weight per IP per minute (over: 429, -1003)",
    },
    Key {
        name: "orders_per_10s_max",
        default: "100",
        help: "orders per user per 10 seconds (over: 429, -1015)",
    },
    Key {
        name: "orders_per_day_max",
        default: "200000",
        help: "orders per user per day (over: 429, -1015)",
    },
    Key {
        name: "raw_requests_per_5m_max",
        default: "61000",
        help: "requests per IP per 5 minutes (over: 429, -1003)",
    },
    Key {
        name: "ip_ban_refusals_per_minute_max",
        default: "300",
        help: "429s an IP may get in one minute before it is banned (418, 2 minutes, doubling per repeat up to 3 days)",
    },
    Key {
        name: "ip_ban_auth_failures_per_minute_max",
        default: "60",
        help: "failed authentications (unknown or malformed API key, bad signature) an IP may have in one minute before it is banned (418, as above)",
    },
    Key {
        name: "demo_user",
        default: "true",
        help: "create the demo user with funds and an API key at start",
    },
    Key {
        name: "durability",
        default: "fsync",
        help:
            "fsync: acknowledge only what is on disk; batch: fsync on a timer, acknowledge before it; none: no journal",
    },
    Key {
        name: "journal_commit_bytes_max",
        default: "1048576",
        help: "group commit: the bytes one commit is sized for; more than 4 times this waiting for the disk refuses new requests (503 -1008)",
    },
    Key {
        name: "journal_direct_io",
        default: "false",
        help: "write journal segments with O_DIRECT through direct-I/O (DMA) files (see docs/ARCHITECTURE.md)",
    },
    Key {
        name: "journal_batch_sync_ms",
        default: "50",
        help: "durability batch: how often the journal is synced (the window of loss)",
    },
    Key {
        name: "journal_segment_bytes",
        default: "67108864",
        help: "size of one journal segment file",
    },
    Key {
        name: "snapshot_records",
        default: "1000000",
        help: "a snapshot is taken after this many journal records",
    },
    Key {
        name: "snapshot_interval_s",
        default: "60",
        help: "a snapshot is taken at least this often while records arrive",
    },
    Key {
        name: "history",
        default: "sqlite",
        help: "history store: sqlite (a file per shard in the data directory) or off; --postgres picks PostgreSQL",
    },
    Key {
        name: "postgres",
        default: "",
        help: "PostgreSQL as the history store: a URL (postgresql://user@host:port/db) or key=value string",
    },
    Key {
        name: "postgres_replica",
        default: "",
        help: "a read replica for history reads (repeatable, or comma-separated)",
    },
    Key {
        name: "postgres_connections_per_shard",
        default: "2",
        help: "PostgreSQL connections each shard holds (the writer and readers share them)",
    },
    Key {
        name: "history_backlog_bytes_max",
        default: "67108864",
        help: "rows a shard keeps waiting for the store, bytes; past it trading goes on and the journal keeps them",
    },
    Key {
        name: "history_call_timeout_ms",
        default: "5000",
        help: "time one history store call may take",
    },
    Key {
        name: "history_retries",
        default: "2",
        help: "retries of a failed history read (writes retry until they succeed)",
    },
    Key {
        name: "history_backoff_base_ms",
        default: "20",
        help: "first retry delay of a history store call (exponential, full jitter)",
    },
    Key {
        name: "history_backoff_max_ms",
        default: "2000",
        help: "longest retry delay of a history store call",
    },
    Key {
        name: "history_breaker_failures_min",
        default: "5",
        help: "failures within the window that may open the history store breaker",
    },
    Key {
        name: "history_breaker_failure_ratio_permille",
        default: "500",
        help: "failed calls per thousand within the window that open the breaker",
    },
    Key {
        name: "history_breaker_window_ms",
        default: "10000",
        help: "window the breaker counts calls and failures in",
    },
    Key {
        name: "history_breaker_open_ms",
        default: "1000",
        help: "time an open breaker refuses calls before it lets a probe through",
    },
    Key {
        name: "history_breaker_half_open_probes",
        default: "1",
        help: "probe calls a half-open breaker lets through; that many successes close it",
    },
    Key {
        name: "history_statistics_interval_s",
        default: "300",
        help: "PostgreSQL: how often the statistics views are refreshed (and partitions made ahead)",
    },
    Key {
        name: "redis",
        default: "",
        help: "Redis (redis://[[user]:password@]host:port[/db]), shared by every shard of every instance; unset: everything stays in-process",
    },
    Key {
        name: "cluster",
        default: "",
        help: "the cluster map (shards/cluster.toml) naming the instances that serve one exchange together; unset: this process is the whole exchange",
    },
    Key {
        name: "instance",
        default: "",
        help: "which instance of the --cluster map this process is (its id)",
    },
    Key {
        name: "link_call_timeout_ms",
        default: "5000",
        help: "time a request carried to another instance of the cluster may take; then its client gets 503 -1007 (status unknown)",
    },
    Key {
        name: "link_calls_in_flight_max",
        default: "4096",
        help: "requests each shard may have out on the links to other instances, and may run for them at once",
    },
    Key {
        name: "link_stream_lease_ms",
        default: "30000",
        help: "how long another instance's subscription to a stream here lasts unless renewed (it renews a third of this); one that crashed stops being sent to after this",
    },
    Key {
        name: "link_stream_entries_max",
        default: "100000",
        help: "entries each link stream in Redis keeps (XADD MAXLEN ~)",
    },
    Key {
        name: "cluster_instances",
        default: "1",
        help: "tradsys instances sharing the Redis of --redis (with --cluster: the map's count); while it does not answer each admits its per-IP limits divided by this",
    },
    Key {
        name: "redis_limit_lease_permille",
        default: "10",
        help: "share of a shared limit a shard leases from Redis at once, per thousand (at least what the request needs)",
    },
    Key {
        name: "redis_connect_timeout_ms",
        default: "1000",
        help: "time a shard's Redis connection may take to open (and AUTH/SELECT)",
    },
    Key {
        name: "redis_command_timeout_ms",
        default: "1000",
        help: "time a written batch of Redis commands may take to be answered (then the connection is dropped)",
    },
    Key {
        name: "redis_heartbeat_ms",
        default: "1000",
        help: "an idle Redis connection is checked with PING this often",
    },
    Key {
        name: "redis_queue_commands_max",
        default: "65536",
        help: "Redis commands one shard may have queued (over: refused at once)",
    },
    Key {
        name: "redis_pipeline_commands_max",
        default: "1024",
        help: "Redis commands one write carries at most",
    },
    Key {
        name: "redis_reply_bytes_max",
        default: "16777216",
        help: "bytes of Redis replies one batch may buffer (over: the connection is dropped)",
    },
    Key {
        name: "redis_backoff_base_ms",
        default: "50",
        help: "first delay before reconnecting to Redis (exponential, full jitter)",
    },
    Key {
        name: "redis_backoff_max_ms",
        default: "5000",
        help: "longest delay before reconnecting to Redis",
    },
    Key {
        name: "redis_breaker_failures_min",
        default: "5",
        help: "failed Redis commands within the window that may open the Redis breaker",
    },
    Key {
        name: "redis_breaker_failure_ratio_permille",
        default: "500",
        help: "failed Redis commands per thousand within the window that open the breaker",
    },
    Key {
        name: "redis_breaker_window_ms",
        default: "10000",
        help: "window the Redis breaker counts commands and failures in",
    },
    Key {
        name: "redis_breaker_open_ms",
        default: "1000",
        help: "time an open Redis breaker refuses commands before it lets a probe through",
    },
    Key {
        name: "redis_breaker_half_open_probes",
        default: "1",
        help: "probe commands a half-open Redis breaker lets through; that many successes close it",
    },
    Key {
        name: "jobs_attempts_max",
        default: "5",
        help: "attempts a background job gets; after the last failure it becomes a dead letter",
    },
    Key {
        name: "jobs_visibility_timeout_ms",
        default: "30000",
        help: "time a worker may hold a job before another worker reclaims it (Redis)",
    },
    Key {
        name: "jobs_backoff_base_ms",
        default: "1000",
        help: "delay before a failed job's first retry; it doubles with each attempt",
    },
    Key {
        name: "jobs_backoff_max_ms",
        default: "60000",
        help: "longest delay before a failed job's retry",
    },
    Key {
        name: "jobs_workers_in_server",
        default: "true",
        help: "whether every shard runs a job worker; false: only `tradsys worker` processes run jobs (needs --redis)",
    },
    Key {
        name: "jobs_concurrency",
        default: "16",
        help: "jobs one worker runs at once (webhook deliveries of different accounts overlap)",
    },
    Key {
        name: "webhook_timeout_ms",
        default: "5000",
        help: "time a webhook delivery may take (connect, send, reply) before it counts as failed",
    },
    Key {
        name: "webhook_ca_file",
        default: "",
        help: "PEM certificates that https webhook receivers' certificates must chain to; empty: the public CA roots",
    },
    Key {
        name: "jobs_poll_ms",
        default: "100",
        help: "time a worker waits before it asks an empty queue again; doubles while the queue stays empty, up to 1 s",
    },
    Key {
        name: "jobs_queue_max",
        default: "100000",
        help: "jobs a queue holds (per priority with Redis, per shard without); more are refused",
    },
    Key {
        name: "jobs_dead_max",
        default: "10000",
        help: "dead letters kept (the oldest go first)",
    },
    Key {
        name: "export_dir",
        default: "",
        help: "directory of the trade history exports users ask for; empty: <data-dir>/exports",
    },
    Key {
        name: "exports_per_user_max",
        default: "2",
        help: "exports a user may have waiting or running at once (over: 429, -1003)",
    },
    Key {
        name: "export_ttl_ms",
        default: "86400000",
        help: "time a finished export's file is kept",
    },
    Key {
        name: "cache_l1_entries_max",
        default: "4096",
        help: "entries one shard's L1 cache holds at most (least recently used dropped first)",
    },
    Key {
        name: "cache_l1_bytes_max",
        default: "67108864",
        help: "bytes one shard's L1 cache holds at most (values, keys and a fixed overhead per entry)",
    },
    Key {
        name: "cache_ttl_ms",
        default: "60000",
        help: "lifetime of a cached exchangeInfo in L1 and in Redis (what a missed invalidation can cost)",
    },
    Key {
        name: "cache_ticker_ttl_ms",
        default: "1000",
        help: "lifetime of the cached 24 h statistics of every market (ticker/24hr without symbol): how old an answer may be",
    },
    Key {
        name: "cache_history_ttl_ms",
        default: "3600000",
        help: "lifetime of cached history: myTrades pages and klines older than memory keeps, which never change",
    },
    Key {
        name: "klines_kept_per_interval_max",
        default: "1000",
        help: "candles of each interval memory keeps per market; older klines are rebuilt from the history store",
    },
    Key {
        name: "cache_l2_value_bytes_max",
        default: "1048576",
        help: "largest value the cache stores in Redis (larger ones stay in L1)",
    },
    Key {
        name: "cache_l2_lock_ms",
        default: "500",
        help: "lifetime of the Redis lock a shard takes to fill a missing value, so that one instance computes it",
    },
    Key {
        name: "cache_l2_poll_ms",
        default: "5",
        help: "how often a shard that found the fill lock taken looks for the value",
    },
    Key {
        name: "cache_l2_polls_max",
        default: "20",
        help: "looks for a value another instance is filling before a shard computes it itself",
    },
    Key {
        name: "cache_namespace",
        default: "tradsys",
        help: "prefix of the cache's Redis keys and channel; instances that serve the same markets share one",
    },
    Key {
        name: "shard_spin_us",
        default: "0",
        help: "microseconds an idle shard spins before sleeping (on dedicated cores: fewer wakeups, more CPU)",
    },
];

/// The validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub listen: SocketAddr,
    pub shards: usize,
    /// The CPUs this process may use, in order; shard i runs on cpus[i].
    pub cpus: Vec<usize>,
    pub data_dir: PathBuf,
    pub markets: PathBuf,
    pub http: HttpLimits,
    /// Response compression (see `compress`).
    pub compress: CompressConfig,
    pub connections_per_shard_max: usize,
    /// The wait for a shard's CPU at which order entry is shed, ms (see
    /// `overload`); 0: nothing is shed.
    pub overload_order_wait_ms_max: u64,
    pub shutdown_timeout_ms: u64,
    pub mesh_channel_capacity: usize,
    pub mesh_outbox_messages_max: usize,
    pub admin_listen: SocketAddr,
    /// The admin token; `None` turns the admin API off.
    pub admin_token: Option<String>,
    pub rate_limits: crate::limits::RateLimitConfig,
    pub demo_user: bool,
    /// How long an idle shard spins before it sleeps in the kernel.
    pub shard_spin_us: u64,
    pub ws: WsConfig,
    pub durability: DurabilityConfig,
    pub history: HistoryConfig,
    pub redis: RedisConfig,
    /// With `--cluster`: the map's path and this instance's id.
    pub cluster: Option<(PathBuf, String)>,
    /// This instance's place in the map, read by the binary once the
    /// markets are known (see `cluster::Place`).
    pub place: Option<std::sync::Arc<crate::cluster::Place>>,
    /// The links to the other instances (see `server::link`).
    pub link_call_timeout_ms: u64,
    pub link_calls_in_flight_max: usize,
    pub link_stream_entries_max: usize,
    pub link_stream_lease_ms: u64,
    pub jobs: JobsConfig,
    pub cache: CacheConfig,
    /// A test-only hook, from `TRADSYS_TEST_FAIL_SYNC_AFTER=<n>` (no flag,
    /// no default): the journal's fdatasyncs fail after the first `n`
    /// (`journal::faults`).
    pub test_fail_sync_after: Option<u64>,
    /// A test-only hook, from `TRADSYS_TEST_FAIL_SNAPSHOT_WRITES_AFTER=<n>`:
    /// the snapshot layer's files (snapshots, `CURRENT`) fail as on a full
    /// disk after the first `n`.
    pub test_fail_snapshot_writes_after: Option<u64>,
    /// A test-only hook, from `TRADSYS_TEST_OVERLOAD_WAIT_US=<us>`: the
    /// least wait the overload probe records (see `overload`).
    pub test_overload_wait_us: Option<u64>,
    /// A test-only hook, from `TRADSYS_TEST_PANIC_SHARD=<shard>` (no flag,
    /// no default): that shard panics once it is ready, to test what a
    /// panic does to the process.
    pub test_panic_shard: Option<usize>,
    /// Candles of each interval memory keeps per market (see
    /// `MarketData::keep_klines`).
    pub klines_kept_per_interval_max: usize,
    /// A test-only hook, from `TRADSYS_TEST_SHARD_START_DELAY_MS=<shard>:<ms>`
    /// (no flag, no file key): that shard installs its state this much later.
    pub test_shard_start_delay: Option<(usize, u64)>,
}

/// How shards make their state survive a crash (see `durability`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DurabilityMode {
    /// Responses wait until every record they depend on is synced.
    Fsync,
    /// The journal is synced every `batch_sync_ms`; responses do not wait.
    Batch,
    /// No journal: state lives only in memory.
    None,
}

/// Journal and snapshot settings, each named with its unit last.
#[derive(Clone, Copy, Debug)]
pub struct DurabilityConfig {
    pub mode: DurabilityMode,
    pub commit_bytes_max: usize,
    /// O_DIRECT segments through direct-I/O (DMA) files.
    pub direct_io: bool,
    pub batch_sync_ms: u64,
    pub segment_bytes: u64,
    pub snapshot_records: u64,
    pub snapshot_interval_s: u64,
}

/// Which engine keeps the full history (see `store`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HistoryEngine {
    /// No store: only the recent history kept in memory.
    Off,
    /// A SQLite file per shard in the data directory.
    Sqlite,
    /// PostgreSQL at this URL.
    Postgres(String),
}

/// The history store's settings, each named with its unit last.
#[derive(Clone, Debug)]
pub struct HistoryConfig {
    pub engine: HistoryEngine,
    pub replicas: Vec<String>,
    pub connections_per_shard: usize,
    pub backlog_bytes_max: usize,
    pub call_timeout_ms: u64,
    pub retries: u32,
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    pub breaker: BreakerSettings,
    pub statistics_interval_s: u64,
}

/// A dependency's circuit breaker (`<prefix>_breaker_*`; see
/// `resilience::Breaker`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BreakerSettings {
    pub failures_min: u32,
    pub failure_ratio_permille: u32,
    pub window_ms: u64,
    pub open_ms: u64,
    pub half_open_probes: u32,
}

impl BreakerSettings {
    pub(crate) fn config(&self) -> crate::resilience::BreakerConfig {
        crate::resilience::BreakerConfig {
            failures_min: self.failures_min,
            failure_ratio_permille: self.failure_ratio_permille,
            window_ms: self.window_ms,
            open_ms: self.open_ms,
            half_open_probes: self.half_open_probes,
        }
    }
}

/// The background jobs' settings (see `jobs`).
#[derive(Clone, Debug)]
pub struct JobsConfig {
    pub attempts_max: u32,
    pub visibility_timeout_ms: u64,
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    pub poll_ms: u64,
    pub queue_max: u64,
    pub dead_max: u64,
    pub export_dir: PathBuf,
    pub exports_per_user_max: u32,
    pub export_ttl_ms: u64,
    pub concurrency: usize,
    pub webhook_timeout_ms: u64,
    /// `None`: https receivers are checked against the public CA roots.
    pub webhook_ca_file: Option<PathBuf>,
    /// Whether each shard of the server runs a worker (else only
    /// `tradsys worker` processes run jobs).
    pub workers_in_server: bool,
    /// A test-only hook, from `TRADSYS_TEST_JOB_START_DELAY_MS` (no flag,
    /// no file key): a worker holds each job this long before running it.
    pub test_job_start_delay_ms: u64,
}

/// Redis's settings (see `redis`), each named with its unit last.
#[derive(Clone, Debug)]
pub struct RedisConfig {
    /// `None`: no Redis, everything stays in-process.
    pub url: Option<String>,
    pub cluster_instances: u32,
    pub limit_lease_permille: u32,
    pub connect_timeout_ms: u64,
    pub command_timeout_ms: u64,
    pub heartbeat_ms: u64,
    pub queue_commands_max: usize,
    pub pipeline_commands_max: usize,
    pub reply_bytes_max: usize,
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    pub breaker: BreakerSettings,
}

/// The two-level cache's settings (see `cache`), each named with its unit
/// last.
#[derive(Clone, Debug)]
pub struct CacheConfig {
    pub l1_entries_max: usize,
    pub l1_bytes_max: usize,
    pub ttl_ms: u64,
    pub ticker_ttl_ms: u64,
    pub history_ttl_ms: u64,
    pub l2_value_bytes_max: usize,
    pub l2_lock_ms: u64,
    pub l2_poll_ms: u64,
    pub l2_polls_max: u32,
    pub namespace: String,
}

/// Limits of WebSocket connections, each named with its unit last.
#[derive(Clone, Copy, Debug)]
pub struct WsConfig {
    pub outbound_bytes_max: usize,
    pub message_bytes_max: usize,
    pub connections_per_ip_max: usize,
    pub socket_send_bytes: usize,
    /// User data stream connections one user may hold over all shards.
    pub user_data_connections_per_user_max: usize,
    /// How long a listen key lives after its last POST or PUT.
    pub listen_key_ttl_ms: u64,
    /// Client frames per second on one WebSocket API connection.
    pub api_messages_per_second_max: u32,
    /// WebSocket API connections one IP may open per 5 minutes per shard.
    pub api_connection_attempts_per_5m_max: u32,
}

impl Default for HttpLimits {
    /// The limits with every key at its default.
    fn default() -> HttpLimits {
        let values = KEYS.iter().map(|k| (k.name, k.default.to_string())).collect();
        match build(&values) {
            Ok(config) => config.http,
            Err(e) => unreachable!("the default configuration is valid: {e}"),
        }
    }
}

/// The largest head and body the parser will ever be configured for; they
/// bound the read buffer of a connection.
pub const HTTP_HEADER_BYTES_LIMIT: usize = 1 << 20;
pub const HTTP_BODY_BYTES_LIMIT: usize = 16 << 20;
pub const HTTP_HEADERS_COUNT_LIMIT: usize = 1024;

/// What the command line asked for.
pub enum Command {
    Serve(Box<Config>),
    /// `tradsys migrate`: bring the history store's schema to this build's
    /// version and stop.
    Migrate(Box<Config>),
    /// `tradsys worker`: run background jobs from Redis, without a server.
    Worker(Box<Config>),
    /// `tradsys cluster check`: validate a cluster map against the
    /// markets file, print who owns what, and stop.
    ClusterCheck {
        cluster: PathBuf,
        markets: PathBuf,
    },
    /// `tradsys cluster nginx`: print an nginx front for a cluster map.
    ClusterNginx {
        cluster: PathBuf,
        markets: PathBuf,
        /// nginx's `listen` value.
        listen: String,
    },
    /// `tradsys plan`: the capacity model's report for the figures file.
    Plan {
        figures: PathBuf,
    },
    Help,
    Version,
}

/// The measured figures `tradsys plan` reads by default.
pub const PLAN_FIGURES_DEFAULT: &str = "bench/capacity.toml";

/// `plan [--figures FILE]`.
fn plan_command(args: &[String]) -> Result<Command, ConfigError> {
    match args {
        [] => Ok(Command::Plan {
            figures: PathBuf::from(PLAN_FIGURES_DEFAULT),
        }),
        [flag, value] if flag == "--figures" => Ok(Command::Plan {
            figures: PathBuf::from(value),
        }),
        [flag] if flag == "-h" || flag == "--help" => Ok(Command::Help),
        [flag, ..] => Err(ConfigError::UnknownFlag(flag.clone())),
    }
}

/// The cluster map `tradsys cluster check` reads by default.
pub const CLUSTER_MAP_DEFAULT: &str = "shards/cluster.toml";

/// `cluster check [--cluster FILE] [--markets FILE]` and `cluster nginx
/// [--cluster FILE] [--markets FILE] [--listen ADDR]`.
fn cluster_command(args: &[String]) -> Result<Command, ConfigError> {
    let nginx = match args.first().map(String::as_str) {
        Some("check") => false,
        Some("nginx") => true,
        Some("-h" | "--help") => return Ok(Command::Help),
        Some(other) => {
            return Err(invalid(
                "cluster",
                format!("the subcommand is check or nginx, not {other:?}"),
            ))
        }
        None => return Err(invalid("cluster", "needs a subcommand: check or nginx")),
    };
    let mut cluster = CLUSTER_MAP_DEFAULT.to_string();
    let markets_default = KEYS.iter().find(|k| k.name == "markets").map_or("", |k| k.default);
    let mut markets = markets_default.to_string();
    let mut listen = NGINX_LISTEN_DEFAULT.to_string();
    let mut words = args[1..].iter();
    while let Some(word) = words.next() {
        let (flag, inline) = match word.split_once('=') {
            Some((flag, value)) => (flag, Some(value.to_string())),
            None => (word.as_str(), None),
        };
        let target = match flag {
            "--cluster" => &mut cluster,
            "--markets" => &mut markets,
            "--listen" if nginx => &mut listen,
            _ => return Err(ConfigError::UnknownFlag(word.clone())),
        };
        let value = inline.or_else(|| words.next().cloned());
        *target = value.ok_or_else(|| invalid(&flag[2..], "needs a value"))?;
    }
    let (cluster, markets) = (PathBuf::from(cluster), PathBuf::from(markets));
    Ok(match nginx {
        true => Command::ClusterNginx {
            cluster,
            markets,
            listen,
        },
        false => Command::ClusterCheck { cluster, markets },
    })
}

/// Where the front `tradsys cluster nginx` writes listens by default.
pub const NGINX_LISTEN_DEFAULT: &str = "80";

/// Reads the command line (without the program name) and the environment.
pub fn load(args: &[String], env: &BTreeMap<String, String>) -> Result<Command, ConfigError> {
    let mut args = args;
    let mut migrate = false;
    let mut worker = false;
    match args.first().map(String::as_str) {
        Some("serve") => args = &args[1..],
        Some("migrate") => {
            migrate = true;
            args = &args[1..];
        }
        Some("worker") => {
            worker = true;
            args = &args[1..];
        }
        Some("cluster") => return cluster_command(&args[1..]),
        Some("plan") => return plan_command(&args[1..]),
        _ => {}
    }
    let mut flags = BTreeMap::new();
    let mut config_file = env.get("TRADSYS_CONFIG").cloned();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        match arg.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            _ => {}
        }
        let Some(flag) = arg.strip_prefix("--") else {
            return Err(ConfigError::UnknownFlag(arg.clone()));
        };
        let (name, inline) = match flag.split_once('=') {
            Some((name, value)) => (name.replace('-', "_"), Some(value.to_string())),
            None => (flag.replace('-', "_"), None),
        };
        let value = match inline {
            Some(v) => v,
            None => {
                i += 1;
                args.get(i).cloned().ok_or_else(|| invalid(&name, "needs a value"))?
            }
        };
        if name == "config" {
            config_file = Some(value);
        } else if name == "postgres_replica" {
            // Repeatable: every replica named is used.
            let all: &mut String = flags.entry(name).or_default();
            if !all.is_empty() {
                all.push(',');
            }
            all.push_str(&value);
        } else if KEYS.iter().any(|k| k.name == name) {
            flags.insert(name, value);
        } else {
            return Err(ConfigError::UnknownFlag(arg.clone()));
        }
        i += 1;
    }
    let file = match config_file {
        Some(path) => read_file(&path)?,
        None => BTreeMap::new(),
    };
    let mut values = BTreeMap::new();
    for key in KEYS {
        let env_name = format!("TRADSYS_{}", key.name.to_ascii_uppercase());
        let value = flags
            .remove(key.name)
            .or_else(|| env.get(&env_name).cloned())
            .or_else(|| file.get(key.name).cloned())
            .unwrap_or_else(|| key.default.to_string());
        values.insert(key.name, value);
    }
    let mut config = build(&values)?;
    config.test_shard_start_delay = test_shard_start_delay(env)?;
    if let Some(ms) = test_hook(env, "TRADSYS_TEST_JOB_START_DELAY_MS", "milliseconds")? {
        config.jobs.test_job_start_delay_ms = ms;
    }
    config.test_fail_sync_after = test_hook(env, "TRADSYS_TEST_FAIL_SYNC_AFTER", "a number of fdatasyncs")?;
    config.test_fail_snapshot_writes_after = test_hook(
        env,
        "TRADSYS_TEST_FAIL_SNAPSHOT_WRITES_AFTER",
        "a number of snapshot files",
    )?;
    config.test_panic_shard = test_hook(env, "TRADSYS_TEST_PANIC_SHARD", "a shard index")?;
    config.test_overload_wait_us = test_hook(env, "TRADSYS_TEST_OVERLOAD_WAIT_US", "microseconds")?;
    if migrate {
        return Ok(Command::Migrate(Box::new(config)));
    }
    if worker {
        return Ok(Command::Worker(Box::new(config)));
    }
    Ok(Command::Serve(Box::new(config)))
}

/// The test-only start delay: `<shard>:<ms>`.
/// A test-only number from the environment variable `name`, if set.
fn test_hook<T: std::str::FromStr>(
    env: &BTreeMap<String, String>,
    name: &'static str,
    what: &str,
) -> Result<Option<T>, ConfigError> {
    env.get(name)
        .map(|text| {
            text.parse()
                .map_err(|_| invalid(name, format!("must be {what}, got {text:?}")))
        })
        .transpose()
}

fn test_shard_start_delay(env: &BTreeMap<String, String>) -> Result<Option<(usize, u64)>, ConfigError> {
    const NAME: &str = "TRADSYS_TEST_SHARD_START_DELAY_MS";
    let Some(text) = env.get(NAME) else { return Ok(None) };
    let parsed = text
        .split_once(':')
        .and_then(|(shard, ms)| Some((shard.parse().ok()?, ms.parse().ok()?)));
    parsed
        .map(Some)
        .ok_or_else(|| invalid(NAME, format!("must be <shard>:<milliseconds>, got {text:?}")))
}

/// Reads a TOML file of `key = value` lines into text values.
fn read_file(path: &str) -> Result<BTreeMap<String, String>, ConfigError> {
    let file_error = |problem: String| ConfigError::File {
        path: path.to_string(),
        problem,
    };
    let text = std::fs::read_to_string(path).map_err(|e| file_error(e.to_string()))?;
    let table: toml::Table = toml::from_str(&text).map_err(|e| file_error(e.message().to_string()))?;
    let mut values = BTreeMap::new();
    for (name, value) in table {
        if !KEYS.iter().any(|k| k.name == name) {
            return Err(file_error(format!("unknown key {name}")));
        }
        let text = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            other => {
                return Err(invalid(
                    &name,
                    format!("must be a string or an integer, got {}", other.type_str()),
                ))
            }
        };
        values.insert(name, text);
    }
    Ok(values)
}

/// The text values of every key, read by kind; each error names its key.
struct Values<'a>(&'a BTreeMap<&'static str, String>);

impl Values<'_> {
    fn text(&self, key: &str) -> &str {
        self.0.get(key).map(String::as_str).unwrap_or("")
    }

    fn number(&self, key: &str, min: u64, max: u64) -> Result<u64, ConfigError> {
        number(key, self.text(key), min, max, "")
    }

    /// A time limit in milliseconds, 1 ms to one hour.
    fn ms(&self, key: &str) -> Result<u64, ConfigError> {
        self.number(key, 1, 3_600_000)
    }

    /// A count from 1 to `max`.
    fn count(&self, key: &str, max: usize) -> Result<usize, ConfigError> {
        self.number(key, 1, max as u64).map(|n| n as usize)
    }

    fn path(&self, key: &str) -> Result<PathBuf, ConfigError> {
        match self.text(key) {
            "" => Err(invalid(key, "must not be empty")),
            s => Ok(PathBuf::from(s)),
        }
    }

    fn address(&self, key: &str) -> Result<SocketAddr, ConfigError> {
        let text = self.text(key);
        text.parse()
            .map_err(|_| invalid(key, format!("must be IP:PORT, got {text:?}")))
    }

    fn boolean(&self, key: &str) -> Result<bool, ConfigError> {
        match self.text(key) {
            "true" => Ok(true),
            "false" => Ok(false),
            other => Err(invalid(key, format!("must be true or false, got {other:?}"))),
        }
    }
}

fn build(values: &BTreeMap<&'static str, String>) -> Result<Config, ConfigError> {
    let v = Values(values);
    let cpus = allowed_cpus();
    let shards = match v.text("shards") {
        "" => cpus.len(),
        s => number(
            "shards",
            s,
            1,
            cpus.len() as u64,
            &format!(" (this process may use {} cores)", cpus.len()),
        )? as usize,
    };
    Ok(Config {
        listen: v.address("listen")?,
        shards,
        cpus: cpus[..shards].to_vec(),
        data_dir: v.path("data_dir")?,
        markets: v.path("markets")?,
        http: http_limits(&v)?,
        compress: compress_config(&v)?,
        connections_per_shard_max: v.count("connections_per_shard_max", 10_000_000)?,
        overload_order_wait_ms_max: v.number("overload_order_wait_ms_max", 0, 60_000)?,
        shutdown_timeout_ms: v.ms("shutdown_timeout_ms")?,
        mesh_channel_capacity: v.count("mesh_channel_capacity", 1 << 20)?,
        mesh_outbox_messages_max: v.count("mesh_outbox_messages_max", 1 << 24)?,
        ws: ws_config(&v)?,
        admin_listen: v.address("admin_listen")?,
        admin_token: admin_token(v.text("admin_token"))?,
        rate_limits: rate_limits(&v)?,
        test_shard_start_delay: None,
        durability: durability(&v)?,
        history: history(&v)?,
        redis: redis(&v)?,
        cluster: cluster(&v)?,
        place: None,
        link_call_timeout_ms: v.ms("link_call_timeout_ms")?,
        link_calls_in_flight_max: v.count("link_calls_in_flight_max", 1 << 20)?,
        link_stream_entries_max: v.count("link_stream_entries_max", 1 << 30)?,
        link_stream_lease_ms: v.ms("link_stream_lease_ms")?,
        jobs: jobs(&v)?,
        cache: cache(&v)?,
        klines_kept_per_interval_max: v.count("klines_kept_per_interval_max", 100_000)?,
        test_fail_sync_after: None,
        test_fail_snapshot_writes_after: None,
        test_overload_wait_us: None,
        test_panic_shard: None,
        shard_spin_us: v.number("shard_spin_us", 0, 1_000_000)?,
        demo_user: v.boolean("demo_user")?,
    })
}

fn http_limits(v: &Values) -> Result<HttpLimits, ConfigError> {
    let http = HttpLimits {
        header_bytes_max: v.count("http_header_bytes_max", HTTP_HEADER_BYTES_LIMIT)?,
        headers_count_max: v.count("http_headers_count_max", HTTP_HEADERS_COUNT_LIMIT)?,
        body_bytes_max: v.count("http_body_bytes_max", HTTP_BODY_BYTES_LIMIT)?,
        params_count_max: v.count("http_params_count_max", 4096)?,
        header_timeout_ms: v.ms("http_header_timeout_ms")?,
        idle_timeout_ms: v.ms("http_idle_timeout_ms")?,
        write_timeout_ms: v.ms("http_write_timeout_ms")?,
        socket_send_bytes: v.number("http_socket_send_bytes", 0, 1 << 30)? as usize,
    };
    if http.header_bytes_max < 256 {
        return Err(invalid("http_header_bytes_max", "must be at least 256"));
    }
    Ok(http)
}

fn compress_config(v: &Values) -> Result<CompressConfig, ConfigError> {
    let config = CompressConfig {
        bytes_min: v.count("http_compress_bytes_min", 1 << 30)?,
        input_bytes_per_second_max: v.number("http_compress_input_bytes_per_second_max", 0, 1 << 40)?,
        level: v.number(
            "http_compress_level",
            compress::COMPRESS_LEVEL_MIN.into(),
            compress::COMPRESS_LEVEL_MAX.into(),
        )? as u8,
    };
    let burst = compress::burst_bytes(config.input_bytes_per_second_max);
    if config.input_bytes_per_second_max > 0 && (config.bytes_min as u64) > burst {
        return Err(invalid(
            "http_compress_input_bytes_per_second_max",
            format!(
                "holds {burst} bytes per {} ms burst, less than http_compress_bytes_min ({}): nothing could be compressed",
                compress::COMPRESS_BURST_MS,
                config.bytes_min
            ),
        ));
    }
    Ok(config)
}

fn ws_config(v: &Values) -> Result<WsConfig, ConfigError> {
    Ok(WsConfig {
        outbound_bytes_max: v.count("ws_outbound_bytes_max", 1 << 30)?,
        message_bytes_max: v.count("ws_message_bytes_max", 16 << 20)?,
        connections_per_ip_max: v.count("ws_connections_per_ip_max", 1 << 20)?,
        socket_send_bytes: v.number("ws_socket_send_bytes", 0, 1 << 30)? as usize,
        user_data_connections_per_user_max: v.count("ws_user_data_connections_per_user_max", 1 << 20)?,
        listen_key_ttl_ms: v.number("listen_key_ttl_ms", 1, 24 * 3_600_000)?,
        api_messages_per_second_max: v.number("ws_api_messages_per_second_max", 1, 1 << 30)? as u32,
        api_connection_attempts_per_5m_max: v.number("ws_api_connection_attempts_per_5m_max", 1, 1 << 30)? as u32,
    })
}

fn rate_limits(v: &Values) -> Result<crate::limits::RateLimitConfig, ConfigError> {
    let per = |key: &str| -> Result<u32, ConfigError> { Ok(v.count(key, u32::MAX as usize)? as u32) };
    Ok(crate::limits::RateLimitConfig {
        request_weight_per_minute_max: per("request_weight_per_minute_max")?,
        orders_per_10s_max: per("orders_per_10s_max")?,
        orders_per_day_max: per("orders_per_day_max")?,
        raw_requests_per_5m_max: per("raw_requests_per_5m_max")?,
        ip_ban_refusals_per_minute_max: per("ip_ban_refusals_per_minute_max")?,
        ip_ban_auth_failures_per_minute_max: per("ip_ban_auth_failures_per_minute_max")?,
        ..crate::limits::RateLimitConfig::default()
    })
}

fn history(v: &Values) -> Result<HistoryConfig, ConfigError> {
    let postgres = v.text("postgres");
    let engine = match (v.text("history"), postgres) {
        ("off", "") => HistoryEngine::Off,
        ("sqlite", "") => HistoryEngine::Sqlite,
        ("sqlite", url) => HistoryEngine::Postgres(url.to_string()),
        ("off", _) => return Err(invalid("history", "is off, but --postgres names a store")),
        (other, _) => return Err(invalid("history", format!("must be sqlite or off, got {other:?}"))),
    };
    let replicas: Vec<String> = v
        .text("postgres_replica")
        .split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(str::to_string)
        .collect();
    if !replicas.is_empty() && !matches!(engine, HistoryEngine::Postgres(_)) {
        return Err(invalid("postgres_replica", "needs --postgres"));
    }
    if replicas.len() > crate::metrics::HISTORY_REPLICAS_MAX {
        return Err(invalid(
            "postgres_replica",
            format!("at most {} replicas", crate::metrics::HISTORY_REPLICAS_MAX),
        ));
    }
    let config = HistoryConfig {
        engine,
        replicas,
        connections_per_shard: v.count("postgres_connections_per_shard", 64)?,
        backlog_bytes_max: v.number("history_backlog_bytes_max", 1 << 16, 1 << 40)? as usize,
        call_timeout_ms: v.ms("history_call_timeout_ms")?,
        retries: v.number("history_retries", 0, 100)? as u32,
        backoff_base_ms: v.ms("history_backoff_base_ms")?,
        backoff_max_ms: v.ms("history_backoff_max_ms")?,
        breaker: breaker(v, "history")?,
        statistics_interval_s: v.number("history_statistics_interval_s", 1, 86_400)?,
    };
    if config.backoff_base_ms > config.backoff_max_ms {
        return Err(invalid(
            "history_backoff_base_ms",
            "must not exceed history_backoff_max_ms",
        ));
    }
    Ok(config)
}

/// The `<prefix>_breaker_*` keys.
fn breaker(v: &Values, prefix: &str) -> Result<BreakerSettings, ConfigError> {
    let key = |name: &str| format!("{prefix}_breaker_{name}");
    Ok(BreakerSettings {
        failures_min: v.count(&key("failures_min"), 1 << 20)? as u32,
        failure_ratio_permille: v.number(&key("failure_ratio_permille"), 1, 1000)? as u32,
        window_ms: v.number(&key("window_ms"), 10, 3_600_000)?,
        open_ms: v.ms(&key("open_ms"))?,
        half_open_probes: v.count(&key("half_open_probes"), 1000)? as u32,
    })
}

fn redis(v: &Values) -> Result<RedisConfig, ConfigError> {
    let url = match v.text("redis") {
        "" => None,
        url => {
            crate::redis::parse_url(url).map_err(|problem| invalid("redis", problem))?;
            Some(url.to_string())
        }
    };
    let config = RedisConfig {
        url,
        cluster_instances: v.number("cluster_instances", 1, 1024)? as u32,
        limit_lease_permille: v.number("redis_limit_lease_permille", 1, 1000)? as u32,
        connect_timeout_ms: v.ms("redis_connect_timeout_ms")?,
        command_timeout_ms: v.ms("redis_command_timeout_ms")?,
        heartbeat_ms: v.ms("redis_heartbeat_ms")?,
        queue_commands_max: v.count("redis_queue_commands_max", 1 << 24)?,
        pipeline_commands_max: v.count("redis_pipeline_commands_max", 1 << 16)?,
        reply_bytes_max: v.number("redis_reply_bytes_max", 1 << 12, 1 << 30)? as usize,
        backoff_base_ms: v.ms("redis_backoff_base_ms")?,
        backoff_max_ms: v.ms("redis_backoff_max_ms")?,
        breaker: breaker(v, "redis")?,
    };
    if config.backoff_base_ms > config.backoff_max_ms {
        return Err(invalid("redis_backoff_base_ms", "must not exceed redis_backoff_max_ms"));
    }
    Ok(config)
}

fn jobs(v: &Values) -> Result<JobsConfig, ConfigError> {
    let export_dir = match v.text("export_dir") {
        "" => v.path("data_dir")?.join("exports"),
        dir => PathBuf::from(dir),
    };
    let config = JobsConfig {
        attempts_max: v.number("jobs_attempts_max", 1, 1000)? as u32,
        visibility_timeout_ms: v.ms("jobs_visibility_timeout_ms")?,
        backoff_base_ms: v.ms("jobs_backoff_base_ms")?,
        backoff_max_ms: v.ms("jobs_backoff_max_ms")?,
        poll_ms: v.ms("jobs_poll_ms")?,
        queue_max: v.number("jobs_queue_max", 1, 1 << 32)?,
        dead_max: v.number("jobs_dead_max", 1, 1 << 32)?,
        export_dir,
        exports_per_user_max: v.number("exports_per_user_max", 1, 1000)? as u32,
        export_ttl_ms: v.number("export_ttl_ms", 1, 30 * 86_400_000)?,
        workers_in_server: v.boolean("jobs_workers_in_server")?,
        concurrency: v.count("jobs_concurrency", 1024)?,
        webhook_timeout_ms: v.ms("webhook_timeout_ms")?,
        webhook_ca_file: match v.text("webhook_ca_file") {
            "" => None,
            path => Some(PathBuf::from(path)),
        },
        test_job_start_delay_ms: 0,
    };
    if let Some(path) = &config.webhook_ca_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| invalid("webhook_ca_file", format!("{}: {e}", path.display())))?;
        if !text.contains("-----BEGIN CERTIFICATE-----") {
            return Err(invalid(
                "webhook_ca_file",
                format!("{}: no PEM certificate in it", path.display()),
            ));
        }
    }
    if !config.workers_in_server && v.text("redis").is_empty() {
        return Err(invalid(
            "jobs_workers_in_server",
            "false needs --redis: without it only the server's workers see its jobs",
        ));
    }
    if config.backoff_base_ms > config.backoff_max_ms {
        return Err(invalid("jobs_backoff_base_ms", "must not exceed jobs_backoff_max_ms"));
    }
    Ok(config)
}

fn cluster(v: &Values) -> Result<Option<(PathBuf, String)>, ConfigError> {
    match (v.text("cluster"), v.text("instance")) {
        ("", "") => Ok(None),
        ("", _) => Err(invalid("instance", "needs --cluster")),
        (_, "") => Err(invalid(
            "cluster",
            "needs --instance, the id of this instance in the map",
        )),
        (map, id) => Ok(Some((PathBuf::from(map), id.to_string()))),
    }
}

fn cache(v: &Values) -> Result<CacheConfig, ConfigError> {
    let namespace = v.text("cache_namespace");
    let printable = |c: char| c.is_ascii_graphic() && c != ':';
    if namespace.is_empty() || namespace.len() > 64 || !namespace.chars().all(printable) {
        return Err(invalid(
            "cache_namespace",
            "must be 1 to 64 printable ASCII characters without ':' or spaces",
        ));
    }
    let config = CacheConfig {
        l1_entries_max: v.count("cache_l1_entries_max", 1 << 24)?,
        l1_bytes_max: v.number("cache_l1_bytes_max", 1 << 16, 1 << 40)? as usize,
        ttl_ms: v.number("cache_ttl_ms", 1, 24 * 3_600_000)?,
        ticker_ttl_ms: v.number("cache_ticker_ttl_ms", 1, 3_600_000)?,
        history_ttl_ms: v.number("cache_history_ttl_ms", 1, 7 * 24 * 3_600_000)?,
        l2_value_bytes_max: v.number("cache_l2_value_bytes_max", 1 << 10, 1 << 29)? as usize,
        l2_lock_ms: v.number("cache_l2_lock_ms", 1, 60_000)?,
        l2_poll_ms: v.number("cache_l2_poll_ms", 1, 10_000)?,
        l2_polls_max: v.number("cache_l2_polls_max", 0, 1_000)? as u32,
        namespace: namespace.to_string(),
    };
    // A value read back from Redis must fit what a reply may buffer.
    let reply_bytes_max = v.number("redis_reply_bytes_max", 1 << 12, 1 << 30)? as usize;
    if config.l2_value_bytes_max + 64 > reply_bytes_max {
        return Err(invalid(
            "cache_l2_value_bytes_max",
            "must be at least 64 bytes under redis_reply_bytes_max",
        ));
    }
    Ok(config)
}

fn durability(v: &Values) -> Result<DurabilityConfig, ConfigError> {
    let mode = match v.text("durability") {
        "fsync" => DurabilityMode::Fsync,
        "batch" => DurabilityMode::Batch,
        "none" => DurabilityMode::None,
        other => {
            return Err(invalid(
                "durability",
                format!("must be fsync, batch or none, got {other:?}"),
            ))
        }
    };
    Ok(DurabilityConfig {
        mode,
        commit_bytes_max: v.number(
            "journal_commit_bytes_max",
            4096,
            crate::journal::JOURNAL_COMMIT_BYTES_MAX as u64,
        )? as usize,
        batch_sync_ms: v.ms("journal_batch_sync_ms")?,
        direct_io: v.boolean("journal_direct_io")?,
        segment_bytes: v.number(
            "journal_segment_bytes",
            crate::journal::JOURNAL_SEGMENT_BYTES_MIN,
            crate::journal::JOURNAL_SEGMENT_BYTES_MAX,
        )?,
        snapshot_records: v.number("snapshot_records", 1000, 1 << 40)?,
        snapshot_interval_s: v.number("snapshot_interval_s", 1, 86_400)?,
    })
}

/// Admin tokens are 16 to 256 printable ASCII characters: short ones are
/// guessable, and the token travels in a header.
fn admin_token(text: &str) -> Result<Option<String>, ConfigError> {
    if text.is_empty() {
        return Ok(None);
    }
    let printable = text.bytes().all(|b| b.is_ascii_graphic());
    if !(16..=256).contains(&text.len()) || !printable {
        return Err(invalid("admin_token", "must be 16 to 256 printable ASCII characters"));
    }
    Ok(Some(text.to_string()))
}

fn number(key: &str, text: &str, min: u64, max: u64, note: &str) -> Result<u64, ConfigError> {
    let value: u64 = text
        .parse()
        .map_err(|_| invalid(key, format!("must be a whole number, got {text:?}")))?;
    if value < min || value > max {
        return Err(invalid(
            key,
            format!("must be between {min} and {max}{note}, got {value}"),
        ));
    }
    Ok(value)
}

/// The CPUs in this process's affinity mask, in ascending order.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity writes at most
    // size_of::<cpu_set_t>() bytes into it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return vec![0];
    }
    (0..libc::CPU_SETSIZE as usize)
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect()
}

/// The text of `--help`.
pub fn help() -> String {
    let mut out = String::from(
        "tradsys: a thread-per-core trading server speaking the Binance Spot v3 API\n\n\
         usage: tradsys [serve] [--config FILE] [--KEY VALUE]...\n                tradsys migrate [--config FILE] [--KEY VALUE]...   (history store schema only)\n                tradsys cluster check [--cluster FILE] [--markets FILE]   (validate a cluster map)\n                tradsys cluster nginx [--cluster FILE] [--markets FILE] [--listen ADDR]   (an nginx front for it)\n                tradsys plan [--figures FILE]   (hosts a load needs, from measured figures)\n\n\
         Each KEY may also come from the environment as TRADSYS_KEY or from the\n\
         TOML file as key = value; flags win over the environment, which wins\n\
         over the file.\n\nkeys:\n",
    );
    for key in KEYS {
        let default = if key.default.is_empty() { "-" } else { key.default };
        out.push_str(&format!(
            "  --{:<28} {} (default {})\n",
            key.name.replace('_', "-"),
            key.help,
            default
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve(args: &[&str], env: &[(&str, &str)]) -> Result<Config, String> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        match load(&args, &env) {
            Ok(Command::Serve(c)) => Ok(*c),
            Ok(_) => Err("not serve".into()),
            Err(e) => Err(e.to_string()),
        }
    }

    #[test]
    fn defaults() {
        let c = serve(&[], &[]).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.shards, allowed_cpus().len());
        assert_eq!(c.data_dir, PathBuf::from("./data"));
        assert_eq!(c.http.header_bytes_max, 8192);
        assert_eq!(c.http.body_bytes_max, 65536);
        assert_eq!(c.http.idle_timeout_ms, 60_000);
        // The keys' defaults are the ones the module chose and checked.
        assert_eq!(c.compress, CompressConfig::default());
    }

    #[test]
    fn flag_beats_env_beats_file() {
        let dir = std::env::temp_dir().join(format!("tradsys-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:1\"\nhttp_body_bytes_max = 1000\ndata_dir = \"/f\"\n",
        )
        .unwrap();
        let f = file.to_str().unwrap();
        let env = [("TRADSYS_LISTEN", "127.0.0.1:2"), ("TRADSYS_DATA_DIR", "/e")];
        let c = serve(&["serve", "--config", f, "--listen=127.0.0.1:3"], &env).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:3");
        assert_eq!(c.data_dir, PathBuf::from("/e"));
        assert_eq!(c.http.body_bytes_max, 1000);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn history_engines_and_replicas() {
        let c = serve(&[], &[]).unwrap();
        assert_eq!(c.history.engine, HistoryEngine::Sqlite);
        assert_eq!(c.history.connections_per_shard, 2);
        let c = serve(
            &[
                "--postgres",
                "postgresql://u@127.0.0.1:5/db",
                "--postgres-replica",
                "host=127.0.0.1 port=6",
                "--postgres-replica=host=127.0.0.1 port=7",
            ],
            &[],
        )
        .unwrap();
        assert_eq!(
            c.history.engine,
            HistoryEngine::Postgres("postgresql://u@127.0.0.1:5/db".into())
        );
        assert_eq!(
            c.history.replicas,
            vec!["host=127.0.0.1 port=6", "host=127.0.0.1 port=7"]
        );
        assert_eq!(
            serve(&["--history", "off"], &[]).unwrap().history.engine,
            HistoryEngine::Off
        );
        let migrate: Vec<String> = ["migrate", "--history", "sqlite"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert!(matches!(load(&migrate, &BTreeMap::new()), Ok(Command::Migrate(_))));
    }

    #[test]
    fn bad_values_name_their_key() {
        type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
        let table: &[Case] = &[
            (&["--shards", "0"], &[], "shards: must be between 1 and"),
            (
                &["--listen", "nowhere"],
                &[],
                "listen: must be IP:PORT, got \"nowhere\"",
            ),
            (
                &[],
                &[("TRADSYS_HTTP_IDLE_TIMEOUT_MS", "soon")],
                "http_idle_timeout_ms: must be a whole number, got \"soon\"",
            ),
            (&["--bogus", "1"], &[], "unknown option --bogus (see --help)"),
            (&["--listen"], &[], "listen: needs a value"),
            (
                &["--config", "/nonexistent/x.toml"],
                &[],
                "config file /nonexistent/x.toml: ",
            ),
            (
                &["--history", "redis"],
                &[],
                "history: must be sqlite or off, got \"redis\"",
            ),
            (
                &["--history", "off", "--postgres", "host=127.0.0.1"],
                &[],
                "history: is off, but --postgres names a store",
            ),
            (
                &["--postgres-replica", "host=127.0.0.1"],
                &[],
                "postgres_replica: needs --postgres",
            ),
            (
                &["--history-backoff-base-ms", "10", "--history-backoff-max-ms", "5"],
                &[],
                "history_backoff_base_ms: must not exceed history_backoff_max_ms",
            ),
            (
                &["--http-compress-level", "0"],
                &[],
                "http_compress_level: must be between 1 and 12, got 0",
            ),
            (
                &["--http-compress-bytes-min", "2000", "--http-compress-input-bytes-per-second-max", "19999"],
                &[],
                "http_compress_input_bytes_per_second_max: holds 1999 bytes per 100 ms burst, less than http_compress_bytes_min (2000)",
            ),
        ];
        for (args, env, expected) in table {
            let err = serve(args, env).unwrap_err();
            assert!(err.starts_with(expected), "{args:?}: {err}");
        }
    }
}
