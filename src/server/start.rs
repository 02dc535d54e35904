//! One shard's life: joining the mesh, answering /health and /ready (503)
//! while recovery runs, installing the recovered state, opening the
//! journal, the demo user, waiting until every shard of the process is
//! ready, serving, and the drain.
//!
//! **Invariant:** the process is ready only when every shard has its
//! state. Each shard counts itself into the one `Readiness` once it has
//! installed its state and started its tasks; every shard answers /ready,
//! and lets requests through, only once the count is complete, and prints
//! its start-up line only then. So a client that saw `200` from /ready on
//! one connection never gets "Service starting" on the next, whichever
//! shard the kernel gives it.

use crate::api::exchange_info::ExchangeInfo;
use crate::api::host::Host;
use crate::compress::Compressor;
use crate::config::{Config, DurabilityMode};
use crate::durability::commit::ShardLog;
use crate::durability::epoch::Epochs;
use crate::durability::image::{market_data_for, ShardImage};
use crate::durability::snapshot;
use crate::journal;
use crate::limits::{ConnectionAttempts, LocalLimiter};
use crate::marketdata::MarketData;
use crate::metrics::Metrics;
use crate::server::conn::{self, Listener};
use crate::server::mesh::{Mesh, MeshBuilders, ShardMsg};
use crate::server::shard::Shard;
use crate::server::{dispatch, history, publish};
use crate::store::shard::ShardStore;
use crate::streams::Registry;
use crate::trading::{Output, Trading, DEMO_USER_ID};
use glommio::net::{TcpListener, UnixStream};
use glommio::sync::{Gate, Semaphore};
use glommio::Task;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::FromRawFd;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tradsys_engine::book::BookCapacity;
use tradsys_engine::market::MarketSpec;

/// How often a starting shard looks whether recovery handed it its state,
/// and whether every other shard is ready.
const START_POLL_INTERVAL_MS: u64 = 5;
/// How long an accept loop backs off after the kernel refused an accept
/// (out of file descriptors or memory).
const ACCEPT_BACKOFF_MS: u64 = 10;

/// How many shards of the process are ready: the one fact every shard's
/// /ready answers from. Written once per shard at start, read by a shard
/// only until it has seen every shard ready.
pub(crate) struct Readiness {
    shards: usize,
    ready: AtomicUsize,
}

impl Readiness {
    pub(crate) fn new(shards: usize) -> Readiness {
        Readiness {
            shards,
            ready: AtomicUsize::new(0),
        }
    }

    fn shard_ready(&self) {
        let before = self.ready.fetch_add(1, Ordering::AcqRel);
        assert!(before < self.shards, "more shards ready than started");
    }

    /// Every shard has its state and serves.
    pub(crate) fn all_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) == self.shards
    }
}

/// What a shard starts with once recovery is done.
pub(crate) struct ShardStart {
    /// `None` with `--durability none`: an empty state.
    pub(crate) image: Option<ShardImage>,
    pub(crate) generation: u64,
    /// The data directory was empty: the demo user may be created.
    pub(crate) fresh: bool,
}

/// Everything the main thread hands a shard's executor.
pub(crate) struct ShardSetup {
    pub(crate) start: std::sync::mpsc::Receiver<ShardStart>,
    pub(crate) epochs: Arc<Epochs>,
    pub(crate) readiness: Arc<Readiness>,
    pub(crate) index: usize,
    pub(crate) cpu: usize,
    pub(crate) listener_fd: i32,
    pub(crate) admin_fd: Option<i32>,
    pub(crate) control_fd: i32,
    pub(crate) builders: MeshBuilders,
    pub(crate) config: Config,
    pub(crate) markets: Vec<MarketSpec>,
}

/// The tasks that accept connections, and where they listen.
struct Accepting {
    tasks: Vec<Task<()>>,
    address: SocketAddr,
    /// Printed by shard 0 only.
    admin_address: Option<SocketAddr>,
}

/// Runs shard `setup.index` until the supervisor asks for a drain and the
/// drain is done.
pub(crate) async fn run_shard(setup: ShardSetup) -> Result<(), String> {
    // SAFETY: the fd was created for this shard and handed over whole.
    let mut control = unsafe { UnixStream::from_raw_fd(setup.control_fd) };
    let (mesh, receivers) = setup.builders.clone().join(setup.index).await?;
    let log = Rc::new(ShardLog::new(
        setup.index,
        setup.config.durability,
        setup.epochs.clone(),
        mesh.epoch_cell(),
    ));
    let shard = Rc::new(new_shard(&setup, mesh, log));
    let connections = Gate::new();
    // Until the shard has its state it answers /health and /ready (503)
    // and refuses everything else; engine messages wait in the mesh.
    let accepting = start_accepting(&shard, &setup, &connections)?;
    let start = wait_for_start(&setup.start).await?;
    delay_for_test(&setup).await;
    install(&shard, &setup, start.image)?;
    // Taken before anything can run on this shard: no session survived
    // the restart, so every guard recovered is released below, and only
    // those (a session opened meanwhile has an id of its own).
    let stale_guards = shard.trading().guard_sessions();
    open_journal(&shard, &setup, start.generation).await?;
    release_stale_guards(&shard, &stale_guards);
    open_history(&shard, &setup, start.generation)?;
    let webhooks_dir = snapshot::shard_dir(&setup.config.data_dir, setup.index as u32);
    *shard.webhooks.borrow_mut() = crate::api::webhooks::Webhooks::open(&webhooks_dir)?;
    let queue = crate::server::jobs::queue(&setup.config, shard.redis.as_ref(), setup.index)?;
    if shard.jobs.set(Rc::new(queue)).is_err() {
        return Err("the job queue is opened once".into());
    }
    crate::server::jobs::start(&shard);
    if setup.config.demo_user && start.fresh {
        create_demo_user(&shard, &setup.config)?;
        shard.flush_engine();
    }
    let mut background = dispatch::spawn_receivers(&shard, receivers);
    background.push(glommio::spawn_local(stream_ticks(shard.clone())));
    background.push(glommio::spawn_local(countdown_ticks(shard.clone())));
    if let (Some(link), Some((target, limits))) = (&shard.link, redis_target(&setup.config)) {
        use crate::server::link;
        let reader = link::run_reader(shard.clone(), link.clone(), target.clone(), limits);
        background.push(glommio::spawn_local(reader));
        background.push(glommio::spawn_local(link::run_md_publisher(
            shard.clone(),
            link.clone(),
        )));
        background.push(glommio::spawn_local(link::run_engine_sender(
            shard.clone(),
            link.clone(),
        )));
        if shard.index == link::ENGINE_SHARD {
            background.push(glommio::spawn_local(link::run_acker(shard.clone(), link.clone())));
        }
        if shard.index == crate::server::publish::RELAY_SHARD {
            background.push(glommio::spawn_local(link::run_md_reader(
                shard.clone(),
                link.clone(),
                target,
                limits,
            )));
        }
    }
    if shard.overload.is_on() {
        background.push(glommio::spawn_local(probe_overload(shard.clone())));
    }
    setup.readiness.shard_ready();
    if setup.config.test_panic_shard == Some(setup.index) {
        background.push(glommio::spawn_local(async {
            glommio::timer::sleep(Duration::from_millis(TEST_PANIC_AFTER_MS)).await;
            panic!("TRADSYS_TEST_PANIC_SHARD: this shard panics on purpose");
        }));
    }
    let drain_asked = futures_lite::future::or(
        async {
            wait_until_all_ready(&shard).await;
            false
        },
        async {
            wait_for_drain(&mut control).await;
            true
        },
    )
    .await;
    if !drain_asked {
        crate::api::warm_cache(&*shard).await;
        // Tests and scripts wait for these lines: print them once ready
        // (and the cache warm).
        if let Some(address) = accepting.admin_address {
            println!("admin listening {address}");
        }
        println!(
            "shard {} core {} listening {}",
            setup.index, setup.cpu, accepting.address
        );
        wait_for_drain(&mut control).await;
    }
    drain(&shard, &setup, accepting.tasks, connections, background).await;
    Ok(())
}

/// Starts the accept loops of the API listener and, when configured, the
/// admin listener.
fn start_accepting(shard: &Rc<Shard>, setup: &ShardSetup, connections: &Gate) -> Result<Accepting, String> {
    // SAFETY: the fds were created for this shard and handed over whole.
    let listener = unsafe { TcpListener::from_raw_fd(setup.listener_fd) };
    let admin = setup.admin_fd.map(|fd| unsafe { TcpListener::from_raw_fd(fd) });
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    let mut admin_address = None;
    let mut tasks = vec![glommio::spawn_local(accept_loop(
        shard.clone(),
        listener,
        connections.clone(),
        Listener::Api,
    ))];
    if let Some(admin) = admin {
        if setup.index == 0 {
            admin_address = Some(admin.local_addr().map_err(|e| e.to_string())?);
        }
        tasks.push(glommio::spawn_local(accept_loop(
            shard.clone(),
            admin,
            connections.clone(),
            Listener::Admin,
        )));
    }
    Ok(Accepting {
        tasks,
        address,
        admin_address,
    })
}

/// With `TRADSYS_TEST_SHARD_START_DELAY_MS=<shard>:<ms>` in the
/// environment, that shard waits this long before installing its state: a
/// test-only hook that makes one shard start late, as on a busy machine.
async fn delay_for_test(setup: &ShardSetup) {
    if let Some((shard, delay_ms)) = setup.config.test_shard_start_delay {
        if shard == setup.index {
            glommio::timer::sleep(Duration::from_millis(delay_ms)).await;
        }
    }
}

/// Waits until every shard of the process is ready, then marks this one
/// ready for good.
async fn wait_until_all_ready(shard: &Shard) {
    while !shard.is_ready() {
        glommio::timer::sleep(Duration::from_millis(START_POLL_INTERVAL_MS)).await;
    }
}

/// Stops accepting, lets open connections finish (at most
/// `shutdown_timeout_ms`), then leaves the mesh.
async fn drain(
    shard: &Shard,
    setup: &ShardSetup,
    accepting: Vec<Task<()>>,
    connections: Gate,
    background: Vec<Task<()>>,
) {
    shard.draining.set(true);
    shard.drain.close();
    // Dropping the accept tasks closes the listeners: new connections go to
    // shards still listening, or are refused by the kernel.
    for task in accepting {
        task.cancel().await;
    }
    let deadline = Duration::from_millis(setup.config.shutdown_timeout_ms);
    let finished = futures_lite::future::or(
        async {
            let _ = connections.close().await;
            true
        },
        async {
            glommio::timer::sleep(deadline).await;
            false
        },
    )
    .await;
    if !finished {
        eprintln!(
            "shard {}: connections still open after {deadline:?}; closing them",
            setup.index
        );
    }
    shard.mesh.close().await;
    if let Some(subscriber) = &shard.cache_subscriber {
        subscriber.close();
    }
    if let Some(redis) = &shard.redis {
        redis.close();
    }
    for task in background {
        task.cancel().await;
    }
}

/// Measures the shard's wait for CPU until cancelled (see `overload`):
/// every `PROBE_INTERVAL_MS` it yields to the back of the run queue and
/// times how long the tasks ahead of it take.
async fn probe_overload(shard: Rc<Shard>) {
    loop {
        glommio::timer::sleep(Duration::from_millis(crate::overload::PROBE_INTERVAL_MS)).await;
        let yielded = Instant::now();
        futures_lite::future::yield_now().await;
        shard.overload.record(yielded.elapsed());
    }
}

fn new_shard(setup: &ShardSetup, mesh: Mesh, log: Rc<ShardLog>) -> Shard {
    let config = &setup.config;
    let limits = &config.rate_limits;
    let mut trading = Trading::new(
        setup.index as u32,
        config.shards as u32,
        setup.markets.clone(),
        BookCapacity::default(),
    );
    trading.set_listen_key_ttl_ms(config.ws.listen_key_ttl_ms);
    let mut market_data = market_data_for(&trading, setup.index as u32);
    keep_klines(&mut market_data, config.klines_kept_per_interval_max);
    let redis = redis_client(config, setup.index);
    let cache = Rc::new(crate::cache::Cache::new(
        &config.cache,
        redis
            .clone()
            .map(|redis| crate::redis::cache::L2::new(redis, l2_config(config))),
    ));
    Shard {
        index: setup.index,
        http: config.http,
        connections_max: config.connections_per_shard_max,
        overload: crate::overload::Overload::new(
            config.overload_order_wait_ms_max,
            config.test_overload_wait_us.unwrap_or(0),
        ),
        metrics: RefCell::new(Metrics::default()),
        mesh,
        exchange_info: ExchangeInfo::new(&setup.markets, &limits.rate_limits()),
        ready: Cell::new(false),
        readiness: setup.readiness.clone(),
        draining: Cell::new(false),
        drain: Semaphore::new(0),
        pool: RefCell::new(Vec::new()),
        compressor: RefCell::new(Compressor::new(config.compress)),
        trading: RefCell::new(trading),
        output: RefCell::new(Output::default()),
        market_data: RefCell::new(market_data),
        request_limiter: RefCell::new(LocalLimiter::new(&local_request_limits(config))),
        order_limiter: RefCell::new(LocalLimiter::new(&local_request_limits(config))),
        jobs: std::cell::OnceCell::new(),
        jobs_config: config.jobs.clone(),
        job_counters: RefCell::default(),
        job_stats: Cell::default(),
        job_seq: Cell::new(crate::clock::now_micros()),
        open_exports: RefCell::default(),
        webhooks: RefCell::new(crate::api::webhooks::Webhooks::empty(&snapshot::shard_dir(
            &config.data_dir,
            setup.index as u32,
        ))),
        webhook_outbox: RefCell::default(),
        webhook_signal: Semaphore::new(0),
        statistics_interval_s: config.history.statistics_interval_s,
        bans: RefCell::new(crate::limits::Bans::new(
            limits.ip_ban_refusals_per_minute_max,
            limits.ip_ban_auth_failures_per_minute_max,
            limits.limiter_keys_max,
        )),
        // Generated client order ids stay unique across restarts: the
        // sequence starts at the start-up time in microseconds.
        client_order_seq: Cell::new(crate::clock::now_micros()),
        calls_in_flight: Cell::new(0),
        outbox_max: config.mesh_outbox_messages_max,
        admin_token: config.admin_token.clone(),
        streams: RefCell::new(Registry::default()),
        ws: config.ws,
        ws_per_ip: RefCell::new(HashMap::new()),
        ws_api_attempts: RefCell::new(ConnectionAttempts::new(
            local_share(config, config.ws.api_connection_attempts_per_5m_max),
            limits.limiter_keys_max,
        )),
        log,
        history: std::cell::OnceCell::new(),
        shared_limits: config.redis.url.as_ref().map(|_| {
            crate::redis::limiter::SharedLimiter::new(
                limits.clone(),
                config.ws.api_connection_attempts_per_5m_max,
                config.redis.limit_lease_permille,
            )
        }),
        cache_subscriber: cache_subscriber(config, setup.index, &cache),
        cache,
        link: link(config, setup.index, redis.as_ref()),
        redis,
    }
}

/// The shard's links to the other instances of its cluster, when it is
/// one of several (which then share a Redis).
fn link(
    config: &crate::config::Config,
    shard: usize,
    redis: Option<&crate::redis::Redis>,
) -> Option<Rc<crate::server::link::Link>> {
    let place = config.place.as_ref().filter(|p| p.map.instances.len() > 1)?;
    let limits = crate::server::link::LinkLimits {
        call_timeout_ms: config.link_call_timeout_ms,
        calls_in_flight_max: config.link_calls_in_flight_max,
        stream_entries_max: config.link_stream_entries_max,
        stream_lease_ms: config.link_stream_lease_ms,
    };
    Some(Rc::new(crate::server::link::Link::new(
        place.clone(),
        shard,
        redis?.clone(),
        limits,
    )))
}

/// The limits a shard counts itself: the configured ones, or with Redis
/// (which then counts them for every instance) its fallback while Redis
/// does not answer, the configured ones divided by `cluster_instances`.
fn local_request_limits(config: &crate::config::Config) -> crate::limits::RateLimitConfig {
    let limits = config.rate_limits.clone();
    crate::limits::RateLimitConfig {
        request_weight_per_minute_max: local_share(config, limits.request_weight_per_minute_max),
        raw_requests_per_5m_max: local_share(config, limits.raw_requests_per_5m_max),
        orders_per_10s_max: local_share(config, limits.orders_per_10s_max),
        orders_per_day_max: local_share(config, limits.orders_per_day_max),
        ..limits
    }
}

/// One instance's share of a limit shared through Redis, counted locally
/// while Redis does not answer; the whole limit without Redis.
fn local_share(config: &crate::config::Config, limit: u32) -> u32 {
    if config.redis.url.is_none() {
        return limit;
    }
    (limit / config.redis.cluster_instances).max(1)
}

/// The shard's Redis client, connecting in the background, with `--redis`.
fn redis_client(config: &crate::config::Config, shard: usize) -> Option<crate::redis::Redis> {
    let (target, limits) = redis_target(config)?;
    // Each shard's reconnect jitter differs.
    let seed = crate::clock::now_micros() ^ ((shard as u64 + 1) << 48);
    Some(crate::redis::Redis::start(target, limits, seed))
}

fn l2_config(config: &crate::config::Config) -> crate::redis::cache::L2Config {
    let cache = &config.cache;
    crate::redis::cache::L2Config {
        value_bytes_max: cache.l2_value_bytes_max,
        lock_ms: cache.l2_lock_ms,
        poll_ms: cache.l2_poll_ms,
        polls_max: cache.l2_polls_max,
        namespace: cache.namespace.clone(),
    }
}

/// The shard's second Redis connection, subscribed to the cache's
/// invalidations, with `--redis`.
fn cache_subscriber(
    config: &crate::config::Config,
    shard: usize,
    cache: &Rc<crate::cache::Cache>,
) -> Option<crate::redis::subscriber::Subscriber> {
    let (target, limits) = redis_target(config)?;
    let seed = crate::clock::now_micros() ^ ((shard as u64 + 1) << 40);
    let channel = crate::redis::cache::L2::channel(&config.cache.namespace);
    let cache = cache.clone();
    let on_event = Box::new(move |event: crate::redis::subscriber::Event<'_>| cache.on_event(event));
    Some(crate::redis::subscriber::Subscriber::start(
        target, limits, channel, seed, on_event,
    ))
}

/// Where `--redis` points and how its connections behave.
fn redis_target(config: &crate::config::Config) -> Option<(crate::redis::RedisTarget, crate::redis::RedisLimits)> {
    let url = config.redis.url.as_deref()?;
    // The URL was checked with the configuration.
    let target = crate::redis::parse_url(url).ok()?;
    Some((target, redis_limits(config)))
}

/// The Redis client's bounds and timings from the configuration.
pub(crate) fn redis_limits(config: &crate::config::Config) -> crate::redis::RedisLimits {
    let redis = &config.redis;
    crate::redis::RedisLimits {
        connect_timeout_ms: redis.connect_timeout_ms,
        command_timeout_ms: redis.command_timeout_ms,
        heartbeat_ms: redis.heartbeat_ms,
        queue_commands_max: redis.queue_commands_max,
        pipeline_commands_max: redis.pipeline_commands_max,
        reply_bytes_max: redis.reply_bytes_max,
        backoff_base_ms: redis.backoff_base_ms,
        backoff_max_ms: redis.backoff_max_ms,
        breaker: redis.breaker.config(),
    }
}

/// Funds the demo user gets at start, so the README's example can trade.
const DEMO_DEPOSITS: [(&str, &str); 5] = [
    ("BTC", "10"),
    ("ETH", "100"),
    ("USDT", "100000"),
    ("USD", "100000"),
    ("EUR", "100000"),
];

/// Creates the demo user on the shard that owns it (in a cluster, only on
/// the instance that owns its slot) and prints its key.
/// Where the demo user's key and secret are written: the secret never
/// goes to a log.
pub const DEMO_USER_FILE: &str = "demo-user.json";

fn create_demo_user(shard: &Shard, config: &Config) -> Result<(), String> {
    let data_dir = &config.data_dir;
    let mut trading = shard.trading_mut();
    let elsewhere = config.place.as_ref().is_some_and(|p| !p.owns_user(DEMO_USER_ID));
    if elsewhere || trading.user_shard(DEMO_USER_ID) as usize != shard.index {
        return Ok(());
    }
    trading.create_user(DEMO_USER_ID, "demo").map_err(|e| e.to_string())?;
    for (asset, amount) in DEMO_DEPOSITS {
        if trading.accounts().asset_id(asset).is_none() {
            continue;
        }
        let units = tradsys_engine::num::parse_units(amount).map_err(|e| e.to_string())?;
        trading
            .transfer(DEMO_USER_ID, asset, tradsys_engine::num::Amount(units), true)
            .map_err(|e| e.to_string())?;
    }
    let mut entropy = [0u8; 128];
    crate::auth::random_bytes(&mut entropy);
    let (key, secret) = trading
        .create_key(DEMO_USER_ID, crate::auth::Scopes::ALL, &entropy)
        .map_err(|e| e.to_string())?;
    let path = data_dir.join(DEMO_USER_FILE);
    let json = serde_json::json!({"userId": DEMO_USER_ID, "apiKey": key, "secretKey": secret});
    write_private(&path, format!("{json}\n").as_bytes()).map_err(|e| format!("{}: {e}", path.display()))?;
    println!("demo user {DEMO_USER_ID} apiKey {key} secretKey in {}", path.display());
    Ok(())
}

/// Writes `bytes` to a new file at `path` that only this user may read.
fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Opens the shard's journal in its generation's directory and starts the
/// committer; nothing with `--durability none`.
async fn open_journal(shard: &Rc<Shard>, setup: &ShardSetup, generation: u64) -> Result<(), String> {
    let durability = &setup.config.durability;
    if durability.mode == DurabilityMode::None {
        return Ok(());
    }
    let dir = snapshot::generation_dir(&setup.config.data_dir, setup.index as u32, generation);
    let tail = journal::scan(&dir, 1, |_| std::ops::ControlFlow::Continue(())).map_err(|e| e.to_string())?;
    let writer = journal::Writer::open_with(&dir, &tail, durability.segment_bytes, durability.direct_io)
        .await
        .map_err(|e| e.to_string())?;
    shard.log.set_writer(Rc::new(writer));
    glommio::spawn_local(run_committer(shard.clone())).detach();
    Ok(())
}

/// Opens the shard's history store and starts its writer; nothing when
/// the store is off.
fn open_history(shard: &Rc<Shard>, setup: &ShardSetup, generation: u64) -> Result<(), String> {
    let config = &setup.config;
    let store = ShardStore::open(&config.history, &config.data_dir, setup.index as u32, generation)
        .map_err(|e| e.to_string())?;
    let Some(store) = store else { return Ok(()) };
    let store = Rc::new(store);
    if shard.history.set(store.clone()).is_err() {
        return Err("the history store is opened once".into());
    }
    let context = history::WriterContext {
        data_dir: config.data_dir.clone(),
        generation,
        markets: setup.markets.clone(),
        epochs: setup.epochs.clone(),
    };
    history::start(shard, store, context);
    Ok(())
}

/// The shard's group commit loop (see `durability::commit`).
///
/// A disk without room for the journal's next segment stops nothing: the
/// journal still has the rest of its current segment, work that changes
/// state is refused (`ShardLog::journal_full`) and the committer looks
/// for space every `SPACE_RETRY_MS` until it is back. Any other journal
/// error (a failed write or fdatasync above all: what reached the disk is
/// unknown, and a failed fdatasync cannot be retried) stops the process,
/// since nothing could be acknowledged any more.
async fn run_committer(shard: Rc<Shard>) {
    let stop = |e: journal::JournalError| -> ! {
        eprintln!(
            "shard {}: journal: {e}; stopping: nothing can be made durable",
            shard.index
        );
        std::process::exit(74);
    };
    loop {
        match shard.log.batch_interval() {
            Some(interval) => {
                glommio::timer::sleep(interval).await;
                shard.log.batch_due();
            }
            None if shard.log.space_low() => {
                let retry = Duration::from_millis(SPACE_RETRY_MS);
                let _ = glommio::timer::timeout(retry, async {
                    shard.log.work().await;
                    Ok(())
                })
                .await;
            }
            None => shard.log.work().await,
        }
        match shard.log.commit().await {
            Ok(()) => {}
            // The batch waits, whole, for the next attempt.
            Err(e) if e.is_no_space() => glommio::timer::sleep(Duration::from_millis(SPACE_RETRY_MS)).await,
            Err(e) => stop(e),
        }
        match shard.log.tend_journal().await {
            Ok(Some(true)) => eprintln!(
                "shard {}: journal: no space left on the device for the next segment; orders and other changes are refused until space returns",
                shard.index
            ),
            Ok(Some(false)) => println!("shard {}: journal: disk space is back; changes are accepted again", shard.index),
            Ok(None) => {}
            Err(e) => stop(e),
        }
        for peer in shard.log.take_satisfied() {
            let _ = shard.mesh.send(peer, ShardMsg::Durable);
        }
        shard.log.wake_settled();
    }
}

/// How long after it is ready a shard named by `TRADSYS_TEST_PANIC_SHARD`
/// panics.
const TEST_PANIC_AFTER_MS: u64 = 200;

/// How often a journal without disk space for its next segment looks
/// for it again.
const SPACE_RETRY_MS: u64 = 500;

/// Waits for the main thread's recovery to hand this shard its state.
async fn wait_for_start(start: &std::sync::mpsc::Receiver<ShardStart>) -> Result<ShardStart, String> {
    loop {
        match start.try_recv() {
            Ok(start) => return Ok(start),
            Err(std::sync::mpsc::TryRecvError::Empty) => {
                glommio::timer::sleep(Duration::from_millis(START_POLL_INTERVAL_MS)).await
            }
            Err(std::sync::mpsc::TryRecvError::Disconnected) => return Err("recovery did not finish".into()),
        }
    }
}

/// Sizes every market's kline rings as configured.
fn keep_klines(market_data: &mut [Option<MarketData>], klines_kept: usize) {
    for data in market_data.iter_mut().flatten() {
        data.keep_klines(klines_kept);
    }
}

/// Puts a recovered state in place of the empty one the shard started with.
fn install(shard: &Shard, setup: &ShardSetup, image: Option<ShardImage>) -> Result<(), String> {
    let Some(image) = image else { return Ok(()) };
    assert_eq!(image.trading.shard as usize, setup.index, "a shard got another's state");
    let mut market_data = image.market_data;
    keep_klines(&mut market_data, setup.config.klines_kept_per_interval_max);
    let mut trading = Trading::from_image(image.trading, setup.markets.clone())?;
    trading.set_listen_key_ttl_ms(setup.config.ws.listen_key_ttl_ms);
    *shard.trading.borrow_mut() = trading;
    *shard.market_data.borrow_mut() = market_data;
    Ok(())
}

/// Drives the periodic streams of this shard's markets.
async fn stream_ticks(shard: Rc<Shard>) {
    let mut tick = 0u64;
    loop {
        glommio::timer::sleep(Duration::from_millis(publish::STREAM_TICK_MS)).await;
        tick += 1;
        publish::periodic(&shard, tick, crate::clock::now_ms());
    }
}

/// Cancels the orders the WebSocket API sessions that did not survive the
/// restart guarded (cancel on disconnect).
fn release_stale_guards(shard: &Shard, stale: &[(tradsys_engine::order::UserId, u64)]) {
    if stale.is_empty() {
        return;
    }
    let now_ms = crate::clock::now_ms();
    for &(user, session) in stale {
        shard.trading_mut().release_guard(user, session, now_ms);
    }
    shard.flush_engine();
}

/// How often a shard looks for dead-man's switches that ran out.
const COUNTDOWN_TICK_MS: u64 = 10;

/// Fires the dead-man's switches of this shard's users when they run out
/// (within `COUNTDOWN_TICK_MS`); a look costs one comparison while none is
/// due.
async fn countdown_ticks(shard: Rc<Shard>) {
    loop {
        glommio::timer::sleep(Duration::from_millis(COUNTDOWN_TICK_MS)).await;
        if shard.draining.get() {
            continue;
        }
        if shard.trading_mut().fire_countdowns(crate::clock::now_ms()) > 0 {
            shard.flush_engine();
        }
    }
}

async fn wait_for_drain(control: &mut UnixStream) {
    let mut byte = [0u8; 1];
    // Any outcome (a byte, EOF, an error) means the supervisor wants a drain.
    let _ = futures_lite::AsyncReadExt::read(control, &mut byte).await;
}

async fn accept_loop(shard: Rc<Shard>, listener: TcpListener, connections: Gate, kind: Listener) {
    loop {
        let stream = match listener.accept().await {
            Ok(stream) => stream,
            Err(e) => {
                // Out of file descriptors or memory: back off instead of
                // spinning, and let open connections finish.
                eprintln!("shard {}: accept failed: {e}", shard.index);
                glommio::timer::sleep(Duration::from_millis(ACCEPT_BACKOFF_MS)).await;
                continue;
            }
        };
        let open = shard.metrics().connections_open as usize;
        if open >= shard.connections_max {
            shard.metrics_mut().connections_refused += 1;
            drop(stream);
            continue;
        }
        {
            let mut m = shard.metrics_mut();
            m.connections_accepted += 1;
            m.connections_open += 1;
        }
        let shard = shard.clone();
        let spawned = connections.spawn(async move {
            conn::serve(&shard, stream, kind).await;
            shard.metrics_mut().connections_open -= 1;
        });
        match spawned {
            Ok(task) => task.detach(),
            Err(_) => return,
        };
    }
}
