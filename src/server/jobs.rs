//! A shard's background jobs: its queue (Redis Streams with `--redis`,
//! else the shard's own journaled queue), its worker on a task queue with
//! a low share, and on shard 0 the schedule (the daily report, the sweep
//! of expired exports). `tradsys worker` runs the same worker without a
//! server (see [`run_worker_process`]).

use crate::api::host::Host;
use crate::api::jobs::{sweep, Runner};
use crate::config::Config;
use crate::jobs::local::LocalQueue;
use crate::jobs::streams::Streams;
use crate::jobs::webhook::Pool;
use crate::jobs::worker::{self, WorkerCounters};
use crate::jobs::{Job, JobKind, Priority, Queue, QueueError, QueueStats};
use crate::redis::Redis;
use crate::server::shard::Shard;
use crate::store::shard::ShardStore;
use glommio::{Latency, Shares};
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The worker's share against order entry's 1000 (the history writer
/// has 10).
const WORKER_SHARES: usize = 5;
/// How often the queue's figures are read for /metrics.
const STATS_INTERVAL_MS: u64 = 1_000;
/// Webhook events handed to the queue in one call at most.
const OUTBOX_BATCH_MAX: usize = 512;
/// How soon an event the queue could not take is offered again.
const OUTBOX_RETRY_MS: u64 = 100;
/// How often expired exports are removed.
const SWEEP_INTERVAL_MS: u64 = 60_000;

/// The queue of a shard: Redis's when there is one, else the shard's own
/// log under `shard-<n>/`.
pub(crate) fn queue(config: &Config, redis: Option<&Redis>, shard: usize) -> Result<Queue, String> {
    match redis {
        Some(redis) => Ok(Queue::Redis(Streams::new(
            redis.clone(),
            consumer_name("tradsys", shard),
            &config.jobs,
        ))),
        None => {
            let dir = crate::durability::snapshot::shard_dir(&config.data_dir, shard as u32);
            LocalQueue::open(&dir, &config.jobs)
                .map(Queue::Local)
                .map_err(|e| format!("background jobs: {e}"))
        }
    }
}

/// A consumer name no other worker of any process has: the host, the
/// process and the shard.
fn consumer_name(what: &str, shard: usize) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("{what}-{}-{}-{shard}", host.trim(), std::process::id())
}

/// Starts the shard's worker, its queue figures and, on shard 0, the
/// schedule.
pub(crate) fn start(shard: &Rc<Shard>) {
    let Some(queue) = shard.jobs.get().cloned() else { return };
    let task_queue =
        glommio::executor().create_task_queue(Shares::Static(WORKER_SHARES), Latency::NotImportant, "jobs");
    let worker = run_worker(shard.clone(), queue.clone());
    let stats = run_stats(shard.clone(), queue.clone());
    let outbox = run_webhook_outbox(shard.clone(), queue.clone());
    let mut tasks = vec![
        glommio::spawn_local_into(stats, task_queue),
        glommio::spawn_local_into(outbox, task_queue),
    ];
    if shard.jobs_config.workers_in_server {
        tasks.push(glommio::spawn_local_into(worker, task_queue));
    }
    if shard.index == 0 {
        tasks.push(glommio::spawn_local_into(
            run_schedule(shard.clone(), queue),
            task_queue,
        ));
    }
    for task in tasks {
        match task {
            Ok(task) => {
                task.detach();
            }
            Err(e) => eprintln!("shard {}: cannot start the background jobs: {e}", shard.index),
        }
    }
}

async fn run_worker(shard: Rc<Shard>, queue: Rc<Queue>) {
    let pool = match Pool::new(shard.jobs_config.webhook_ca_file.as_deref()) {
        Ok(pool) => pool,
        Err(e) => {
            eprintln!("shard {}: no job worker: webhook_ca_file: {e}", shard.index);
            return;
        }
    };
    let runner = Runner {
        store: shard.history.get().map(|store| &**store),
        config: &shard.jobs_config,
        queue: &queue,
        pool,
    };
    worker::run(&queue, &runner, &shard.jobs_config, &shard.job_counters, || {
        shard.is_draining()
    })
    .await;
}

/// Moves the shard's webhook events to the job queue, in order: an event
/// the queue cannot take now (Redis down) waits at the head and is tried
/// again; one the queue refuses (full) is dropped and counted.
async fn run_webhook_outbox(shard: Rc<Shard>, queue: Rc<Queue>) {
    loop {
        if shard.webhook_signal.acquire(1).await.is_err() {
            return;
        }
        loop {
            let batch: Vec<(u64, String, Job)> = {
                let mut outbox = shard.webhook_outbox.borrow_mut();
                let now_ms = crate::clock::now_ms();
                let take = outbox.len().min(OUTBOX_BATCH_MAX);
                outbox
                    .drain(..take)
                    .map(|(user, event)| (user, event, crate::jobs::webhook::job(user, now_ms)))
                    .collect()
            };
            if batch.is_empty() {
                break;
            }
            match queue.push_events(&batch).await {
                Ok(()) => {}
                Err(QueueError::Full(_)) => shard.metrics.borrow_mut().webhook_events_dropped += batch.len() as u64,
                Err(QueueError::Unavailable(_)) => {
                    {
                        let mut outbox = shard.webhook_outbox.borrow_mut();
                        for (user, event, _) in batch.into_iter().rev() {
                            outbox.push_front((user, event));
                        }
                    }
                    shard.job_counters.borrow_mut().queue_errors += 1;
                    if shard.is_draining() {
                        return;
                    }
                    glommio::timer::sleep(Duration::from_millis(OUTBOX_RETRY_MS)).await;
                }
            }
        }
    }
}

/// Reads the queue's figures for /metrics. Redis's queue is one for every
/// shard: only shard 0 shows it.
async fn run_stats(shard: Rc<Shard>, queue: Rc<Queue>) {
    if matches!(*queue, Queue::Redis(_)) && shard.index != 0 {
        return;
    }
    while !shard.is_draining() {
        if let Ok(stats) = queue.stats().await {
            shard.job_stats.set(stats);
        }
        glommio::timer::sleep(Duration::from_millis(STATS_INTERVAL_MS)).await;
    }
}

/// Shard 0's schedule: a daily report job every
/// `history_statistics_interval_s` (one for every instance on one Redis),
/// and the sweep of expired exports.
async fn run_schedule(shard: Rc<Shard>, queue: Rc<Queue>) {
    let interval_ms = shard.statistics_interval_s * 1000;
    // The first report comes from start-up's own upkeep.
    let mut next_report_ms = crate::clock::now_ms() + interval_ms;
    let mut next_sweep_ms = 0;
    while !shard.is_draining() {
        let now_ms = crate::clock::now_ms();
        if shard.history.get().is_some() && now_ms >= next_report_ms {
            if first_of_the_period(shard.redis.as_ref(), interval_ms).await {
                let job = Job {
                    id: shard.next_job_id(),
                    kind: JobKind::DailyReport,
                    priority: Priority::Low,
                    payload: String::new(),
                    attempts: 0,
                    enqueued_ms: now_ms,
                };
                if queue.enqueue(&job).await.is_err() {
                    shard.job_counters.borrow_mut().queue_errors += 1;
                }
            }
            next_report_ms = now_ms + interval_ms;
        }
        if now_ms >= next_sweep_ms {
            let config = &shard.jobs_config;
            let dir = config.export_dir.clone();
            let ttl_ms = config.export_ttl_ms;
            let _ = glommio::executor()
                .spawn_blocking(move || sweep(&dir, ttl_ms, now_ms))
                .await;
            next_sweep_ms = now_ms + SWEEP_INTERVAL_MS;
        }
        glommio::timer::sleep(Duration::from_millis(1_000)).await;
    }
}

/// Whether this instance is the first to schedule the period's report
/// (a key with the period's length in Redis; always without Redis).
async fn first_of_the_period(redis: Option<&Redis>, interval_ms: u64) -> bool {
    let Some(redis) = redis else { return true };
    let ttl = interval_ms.saturating_sub(1_000).max(1).to_string();
    let reply = redis
        .call(&[
            b"SET",
            b"tradsys:jobs:scheduled:daily_report",
            b"1",
            b"NX",
            b"PX",
            ttl.as_bytes(),
        ])
        .await;
    // Redis down: the report is queued anyway (a second refresh is
    // harmless, a missing one is not).
    !matches!(reply, Ok(crate::redis::Reply::Nil))
}

/// `tradsys worker`: runs workers of the Redis queue on `--shards`
/// executors, with the history store of `--data-dir` (or PostgreSQL) to
/// read exports from, until SIGTERM or SIGINT; then each finishes the job
/// it holds and stops.
pub fn run_worker_process(config: Config) -> Result<(), String> {
    let Some(url) = config.redis.url.clone() else {
        return Err("a worker process needs --redis: without it, jobs run inside the server".into());
    };
    let target = crate::redis::parse_url(&url)?;
    let signals = crate::server::process::block_signals().map_err(|e| e.to_string())?;
    let stop = Arc::new(AtomicBool::new(false));
    let running = Arc::new(AtomicUsize::new(config.shards));
    let config = Arc::new(config);
    let mut executors = Vec::new();
    for index in 0..config.shards {
        let (config, target, stop, running) = (config.clone(), target.clone(), stop.clone(), running.clone());
        let executor = glommio::LocalExecutorBuilder::default()
            .name(&format!("worker-{index}"))
            .spawn(move || async move {
                let result = worker_executor(&config, target, index, &stop).await;
                running.fetch_sub(1, Ordering::Relaxed);
                result
            })
            .map_err(|e| e.to_string())?;
        executors.push(executor);
    }
    // Until a signal, or until a worker stopped by itself (it could not
    // start): then the others stop too.
    while running.load(Ordering::Relaxed) == config.shards
        && !crate::server::process::wait_signal(&signals, Duration::from_millis(200))
    {}
    stop.store(true, Ordering::Relaxed);
    for executor in executors {
        executor.join().map_err(|e| e.to_string())??;
    }
    Ok(())
}

async fn worker_executor(
    config: &Config,
    target: crate::redis::RedisTarget,
    index: usize,
    stop: &AtomicBool,
) -> Result<(), String> {
    let seed = crate::clock::now_micros() ^ ((index as u64 + 1) << 48);
    let redis = Redis::start(target, crate::server::start::redis_limits(config), seed);
    let queue = Queue::Redis(Streams::new(
        redis.clone(),
        consumer_name("worker", index),
        &config.jobs,
    ));
    // The store of the shard of the same index: an export reads its
    // owner's rows whichever store opens the cursor.
    let store = ShardStore::open(&config.history, &config.data_dir, index as u32, 0).map_err(|e| e.to_string())?;
    let runner = Runner {
        store: store.as_ref(),
        config: &config.jobs,
        queue: &queue,
        pool: Pool::new(config.jobs.webhook_ca_file.as_deref())?,
    };
    let counters = RefCell::new(WorkerCounters::default());
    println!("worker {index} consuming {}", redacted(config));
    worker::run(&queue, &runner, &config.jobs, &counters, || {
        stop.load(Ordering::Relaxed)
    })
    .await;
    redis.close();
    let done = counters.borrow();
    println!(
        "worker {index} stopped: {} runs, {} done, {} failed, {} dead letters, {} reclaimed",
        done.runs, done.succeeded, done.failed, done.dead_lettered, done.reclaimed
    );
    Ok(())
}

/// The Redis a worker consumes, without its password.
fn redacted(config: &Config) -> String {
    match crate::redis::parse_url(config.redis.url.as_deref().unwrap_or_default()) {
        Ok(target) => format!("redis://{}/{}", target.addr, target.db),
        Err(_) => "redis".into(),
    }
}

/// The figures /metrics shows for the shard's jobs.
pub(crate) fn counters(shard: &Shard) -> crate::metrics::JobsCounters {
    let done: WorkerCounters = *shard.job_counters.borrow();
    let held: QueueStats = shard.job_stats.get();
    crate::metrics::JobsCounters {
        runs: done.runs,
        succeeded: done.succeeded,
        failed: done.failed,
        dead_lettered: done.dead_lettered,
        reclaimed: done.reclaimed,
        queue_errors: done.queue_errors,
        waiting: held.waiting,
        running: held.running,
        oldest_age_ms: held.oldest_age_ms,
        delayed: held.delayed,
        dead: held.dead,
    }
}
