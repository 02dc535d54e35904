//! The history store on the running server: each shard's writer task, the
//! rows recovery makes for what the store had not taken before a crash,
//! `tradsys migrate`, and the store's upkeep timers.
//!
//! A shard makes the rows of its records when it journals them (see
//! `Shard::flush_engine`) and keeps them in its backlog; the writer, on a
//! task queue with a lower share than order entry, writes the oldest
//! durable ones in batches and tells the snapshot thread how far the
//! store has absorbed the journal, so that no snapshot deletes records
//! whose rows the store lacks. After a crash, recovery replays those
//! records again and the start-up writes their rows before the old
//! generation goes (`write_recovered`).

use crate::config::{Config, HistoryEngine};
use crate::durability::epoch::Epochs;
use crate::durability::image::Tap;
use crate::resilience::Backoff;
use crate::server::shard::Shard;
use crate::store::convert::rows_of;
use crate::store::rows::Row;
use crate::store::shard::ShardStore;
use crate::store::{Batch, Progress, StoreError, BATCH_ROWS_MAX};
use crate::trading::record::Record;
use crate::trading::{Output, Trading};
use glommio::{Latency, Shares};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often an idle writer looks for durable rows.
const WRITER_IDLE_MS: u64 = 5;
/// The writer's share of the CPU against order entry's 1000.
const WRITER_SHARES: usize = 100;
/// First and longest pause after a failed batch.
const WRITER_BACKOFF_MS: (u64, u64) = (10, 2000);
/// Months of partitions PostgreSQL keeps made ahead.
const PARTITIONS_AHEAD_MONTHS: u32 = 3;
/// How often replica lag is measured for /metrics.
const REPLICA_LAG_INTERVAL_MS: u64 = 1000;
/// Failed-write warnings are printed at most this often.
const WRITE_WARNING_INTERVAL_MS: u64 = 5000;

/// Starts the shard's writer (and on shard 0 the upkeep timer) on a task
/// queue of its own with a lower share than order entry.
pub(crate) fn start(shard: &Rc<Shard>, store: Rc<ShardStore>, epochs: Arc<Epochs>, statistics_interval_s: u64) {
    let queue = glommio::executor().create_task_queue(Shares::Static(WRITER_SHARES), Latency::NotImportant, "history");
    let writer = run_writer(shard.clone(), store.clone(), epochs);
    if glommio::spawn_local_into(writer, queue).map(|t| t.detach()).is_err() {
        eprintln!("shard {}: cannot start the history writer", shard.index);
    }
    let upkeep = run_upkeep(store, shard.index == 0, statistics_interval_s);
    if glommio::spawn_local_into(upkeep, queue).map(|t| t.detach()).is_err() {
        eprintln!("shard {}: cannot start the history upkeep", shard.index);
    }
}

/// Writes the shard's durable rows, oldest first, a batch at a time; a
/// failed batch is tried again after a backoff with full jitter, for as
/// long as it takes. Trading never waits for it.
async fn run_writer(shard: Rc<Shard>, store: Rc<ShardStore>, epochs: Arc<Epochs>) {
    let index = shard.index;
    let mut backoff = Backoff::new(WRITER_BACKOFF_MS.0, WRITER_BACKOFF_MS.1);
    let mut migrated = false;
    let mut warned_ms = 0;
    let mut random = 0x2545_f491_4f6c_dd1d_u64 ^ index as u64;
    loop {
        let now_ms = crate::clock::now_ms();
        epochs.set_absorbed(index, store.backlog().absorbed_epoch(shard.log.epoch()));
        store.count_backlog(now_ms);
        let batch = if migrated {
            store.backlog().next_batch(epochs.global_durable())
        } else {
            None
        };
        let outcome = match batch {
            Some(batch) => store.write(&batch).await.map(|_| true),
            None if migrated => Ok(false),
            None => store.migrate().await.map(|_| {
                migrated = true;
                true
            }),
        };
        match outcome {
            Ok(true) => {
                if migrated {
                    store.backlog().written();
                }
                backoff.reset();
            }
            Ok(false) => glommio::timer::sleep(Duration::from_millis(WRITER_IDLE_MS)).await,
            Err(e) => {
                if now_ms >= warned_ms + WRITE_WARNING_INTERVAL_MS {
                    warned_ms = now_ms;
                    eprintln!("WARNING: shard {index}: history writer: {e}; retrying (trading goes on)");
                }
                random ^= random << 13;
                random ^= random >> 7;
                random ^= random << 17;
                let delay = backoff.next_delay_ms(random);
                glommio::timer::sleep(Duration::from_millis(delay)).await;
            }
        }
    }
}

/// PostgreSQL upkeep: shard 0 makes partitions ahead and refreshes the
/// statistics views; every shard measures its replicas' lag.
async fn run_upkeep(store: Rc<ShardStore>, leader: bool, statistics_interval_s: u64) {
    let mut next_upkeep_ms = 0;
    loop {
        let now_ms = crate::clock::now_ms();
        if leader && now_ms >= next_upkeep_ms {
            match store.upkeep(now_ms, PARTITIONS_AHEAD_MONTHS).await {
                Ok(()) => next_upkeep_ms = now_ms + statistics_interval_s * 1000,
                // Soon again: the store may be back by then.
                Err(_) => next_upkeep_ms = now_ms + REPLICA_LAG_INTERVAL_MS * 10,
            }
        }
        store.refresh_replica_lag().await;
        glommio::timer::sleep(Duration::from_millis(REPLICA_LAG_INTERVAL_MS)).await;
    }
}

/// Rows one shard's replay made, per record, for records the store does
/// not have yet.
#[derive(Default)]
pub(crate) struct Recovered {
    pub(crate) groups: Vec<(u64, Vec<Row>)>,
}

/// Collects the rows of the records after `after` (see `durability::image::Tap`).
struct RowTap {
    after: u64,
    sink: Arc<Mutex<Recovered>>,
}

impl Tap for RowTap {
    fn applied(&mut self, lsn: u64, record: Option<&Record>, trading: &Trading, out: &Output) {
        if lsn <= self.after {
            return;
        }
        let mut rows = Vec::new();
        rows_of(trading, record, out, crate::clock::now_ms(), lsn, &mut rows);
        if !rows.is_empty() {
            if let Ok(mut sink) = self.sink.lock() {
                sink.groups.push((lsn, rows));
            }
        }
    }
}

/// What start-up needs of the store before recovery: each old shard's
/// progress, and a place for the rows recovery makes.
pub(crate) struct RecoveryTaps {
    progress: Vec<Option<Progress>>,
    sinks: Vec<Arc<Mutex<Recovered>>>,
}

impl RecoveryTaps {
    /// Reads the progress of the `shards` shards the data directory was
    /// written with.
    pub(crate) fn new(config: &Config, shards: u32) -> Result<RecoveryTaps, String> {
        let progress = on_temporary_executor(config, shards, |stores| async move {
            let mut progress = Vec::with_capacity(stores.len());
            for store in &stores {
                retry_until_done("bring its schema up to date", || store.migrate()).await;
                progress.push(retry_until_done("read its progress", || store.progress()).await);
            }
            progress
        })?;
        Ok(RecoveryTaps {
            progress,
            sinks: (0..shards)
                .map(|_| Arc::new(Mutex::new(Recovered::default())))
                .collect(),
        })
    }

    /// The tap of old shard `shard` of `generation`.
    pub(crate) fn tap(&self, generation: u64, shard: u32) -> Box<dyn Tap> {
        let after = match self.progress.get(shard as usize).copied().flatten() {
            Some(p) if p.generation == generation => p.lsn,
            Some(p) if p.generation > generation => u64::MAX,
            _ => 0,
        };
        let sink = self.sinks.get(shard as usize).cloned().unwrap_or_default();
        Box::new(RowTap { after, sink })
    }

    /// Writes what the taps collected, shard by shard in record order,
    /// before the old generation goes; waits for the store as long as it
    /// takes (its journal is the only other copy).
    pub(crate) fn write_recovered(&self, config: &Config, generation: u64) -> Result<u64, String> {
        let mut batches: Vec<Vec<Batch>> = Vec::new();
        let mut rows_total = 0;
        for (shard, sink) in self.sinks.iter().enumerate() {
            let recovered = std::mem::take(&mut *sink.lock().map_err(|_| "a recovery tap panicked")?);
            let mut shard_batches = Vec::new();
            let mut current = Batch {
                shard: shard as u32,
                progress: Progress { generation, lsn: 0 },
                rows: Vec::new(),
            };
            for (lsn, rows) in recovered.groups {
                if !current.rows.is_empty() && current.rows.len() + rows.len() > BATCH_ROWS_MAX {
                    let next = Batch {
                        shard: shard as u32,
                        progress: Progress { generation, lsn: 0 },
                        rows: Vec::new(),
                    };
                    shard_batches.push(std::mem::replace(&mut current, next));
                }
                rows_total += rows.len() as u64;
                current.rows.extend(rows);
                current.progress.lsn = lsn;
            }
            if !current.rows.is_empty() {
                shard_batches.push(current);
            }
            batches.push(shard_batches);
        }
        if rows_total == 0 {
            return Ok(0);
        }
        let shards = self.sinks.len() as u32;
        on_temporary_executor(config, shards, |stores| async move {
            for (store, shard_batches) in stores.iter().zip(batches) {
                for batch in shard_batches {
                    let batch = Arc::new(batch);
                    retry_until_done("write the recovered history", || store.write(&batch)).await;
                }
            }
        })?;
        Ok(rows_total)
    }
}

/// Retries `call` with backoff until it succeeds, saying why it waits.
async fn retry_until_done<T, F, Fut>(what: &str, call: F) -> T
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let mut backoff = Backoff::new(WRITER_BACKOFF_MS.0, WRITER_BACKOFF_MS.1);
    let mut random = 0x1234_5678_9abc_def1_u64;
    loop {
        match call().await {
            Ok(value) => return value,
            Err(e) => {
                eprintln!("WARNING: history store: cannot {what}: {e}; start-up waits for it");
                random ^= random << 13;
                random ^= random >> 7;
                random ^= random << 17;
                glommio::timer::sleep(Duration::from_millis(backoff.next_delay_ms(random).max(100))).await;
            }
        }
    }
}

/// Runs `work` with the stores of `shards` shards on an executor of the
/// main thread (start-up and `tradsys migrate`, before the shards serve).
fn on_temporary_executor<T, F, Fut>(config: &Config, shards: u32, work: F) -> Result<T, String>
where
    F: FnOnce(Vec<ShardStore>) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let executor = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(super::process::SHARD_IO_MEMORY_BYTES)
        .make()
        .map_err(|e| format!("history store: cannot start an executor: {e}"))?;
    executor.run(async move {
        let mut stores = Vec::with_capacity(shards as usize);
        for shard in 0..shards {
            // The generation is not used: these stores write whole batches.
            match ShardStore::open(&config.history, &config.data_dir, shard, 0) {
                Ok(Some(store)) => stores.push(store),
                Ok(None) => return Err("the history store is off".to_string()),
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(work(stores).await)
    })
}

/// Refuses a store that already holds another data directory's history:
/// a new data directory starts its positions over, and the store would
/// take its rows for ones it has.
pub(crate) fn check_unused(config: &Config) -> Result<(), String> {
    let shards = config.shards as u32;
    let used = on_temporary_executor(config, shards, |stores| async move {
        for store in &stores {
            if let Some(p) = store.progress().await.map_err(|e| e.to_string())? {
                return Ok(Some((store.shard(), p)));
            }
        }
        Ok::<_, String>(None)
    })??;
    match used {
        None => Ok(()),
        Some((shard, p)) => Err(format!(
            "history store: it already holds the history of another data directory (shard {shard} at \
             generation {} record {}); give a new data directory its own database, or start with that \
             data directory",
            p.generation, p.lsn
        )),
    }
}

/// `tradsys migrate`: brings every store the configuration names to this
/// build's schema and says what it found.
pub fn migrate(config: &Config) -> Result<String, String> {
    let shards = match &config.history.engine {
        HistoryEngine::Off => return Err("the history store is off (--history off)".into()),
        HistoryEngine::Sqlite => config.shards as u32,
        HistoryEngine::Postgres(_) => 1,
    };
    on_temporary_executor(config, shards, |stores| async move {
        let mut lines = Vec::new();
        for store in &stores {
            let found = store.migrate().await.map_err(|e| e.to_string())?;
            lines.push(format!(
                "history store shard {}: schema version {found} -> {}",
                store.shard(),
                store.schema_version()
            ));
        }
        Ok(lines.join("\n"))
    })?
}
