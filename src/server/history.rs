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
use crate::store::backlog::WRITER_BATCH_ROWS;
use crate::store::convert::rows_of;
use crate::store::rows::Row;
use crate::store::shard::ShardStore;
use crate::store::{Batch, Progress, StoreError, BATCH_ROWS_MAX};
use crate::trading::record::Record;
use crate::trading::{Output, Trading};
use glommio::{Latency, Shares};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tradsys_engine::market::MarketSpec;

/// How often an idle writer looks for durable rows.
const WRITER_IDLE_MS: u64 = 5;
/// The writer's share of the CPU against order entry's 1000: it gets a
/// core mostly when order entry leaves it idle.
const WRITER_SHARES: usize = 10;
/// PostgreSQL batches wait while less than this share (per thousand) of
/// the machine's CPU went unused over the last `SPARE_WINDOW_MS` (see
/// `SpareCpu`). The backlog absorbs the wait (and past its limit the
/// journal).
const PG_SPARE_CPU_MIN_PERMILLE: u64 = 300;
/// The window the machine's unused CPU is measured over.
const SPARE_WINDOW_MS: u64 = 200;
/// The longest a PostgreSQL batch waits for unused CPU: under a load that
/// never leaves any, the store still gets a batch this often.
const PG_WAIT_FOR_SPARE_CPU_MAX_MS: u64 = 2000;
/// First and longest pause after a failed batch.
const WRITER_BACKOFF_MS: (u64, u64) = (10, 2000);
/// How soon a failed upkeep (partitions, statistics) is tried again.
const UPKEEP_RETRY_MS: u64 = 10_000;
/// The shortest pause between two start-up attempts to reach the store
/// (each one logs a line).
const START_UP_RETRY_MIN_MS: u64 = 100;
/// How long start-up waits for the store before it gives up and exits:
/// nothing is lost (the old generation's journal stays until its rows are
/// in the store), and an operator or a test sees the store's error instead
/// of a server that never starts.
const START_UP_WAIT_MAX_MS: u64 = 300_000;
/// How often replica lag is measured for /metrics.
const REPLICA_LAG_INTERVAL_MS: u64 = 1000;
/// Failed-write warnings are printed at most this often.
const WRITE_WARNING_INTERVAL_MS: u64 = 5000;

/// What a shard's writer needs to read its own journal back.
pub(crate) struct WriterContext {
    pub(crate) data_dir: PathBuf,
    pub(crate) generation: u64,
    pub(crate) markets: Vec<MarketSpec>,
    pub(crate) epochs: Arc<Epochs>,
}

/// Starts the shard's writer (and on shard 0 the upkeep timer) on a task
/// queue of its own with a lower share than order entry.
pub(crate) fn start(shard: &Rc<Shard>, store: Rc<ShardStore>, context: WriterContext) {
    let queue = glommio::executor().create_task_queue(Shares::Static(WRITER_SHARES), Latency::NotImportant, "history");
    store.set_task_queue(queue);
    let upkeep = run_upkeep(store.clone(), shard.index == 0);
    let writer = run_writer(shard.clone(), store, context);
    if glommio::spawn_local_into(writer, queue).map(|t| t.detach()).is_err() {
        eprintln!("shard {}: cannot start the history writer", shard.index);
    }
    if glommio::spawn_local_into(upkeep, queue).map(|t| t.detach()).is_err() {
        eprintln!("shard {}: cannot start the history upkeep", shard.index);
    }
}

/// Where the writer's next batch comes from.
enum Next {
    Batch(Arc<Batch>, Source),
    /// Nothing to write now.
    Idle,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Source {
    Backlog,
    Journal,
}

/// Writes the shard's durable rows, oldest first, a batch at a time; a
/// failed batch is tried again after a backoff with full jitter, for as
/// long as it takes. Trading never waits for it. After the backlog
/// overflowed, the rows it dropped are read back from the journal.
async fn run_writer(shard: Rc<Shard>, store: Rc<ShardStore>, context: WriterContext) {
    let index = shard.index;
    let epochs = context.epochs.clone();
    let mut backoff = Backoff::new(WRITER_BACKOFF_MS.0, WRITER_BACKOFF_MS.1);
    let mut migrated = false;
    let mut warned_ms = 0;
    let mut random = 0x2545_f491_4f6c_dd1d_u64 ^ index as u64;
    let mut catch_up: Option<CatchUp> = None;
    // The newest record whose rows are all in the store.
    let mut absorbed_lsn = 0;
    let mut spare = SpareCpu::new();
    loop {
        let now_ms = crate::clock::now_ms();
        epochs.set_absorbed(index, store.backlog().absorbed_epoch(shard.log.epoch()));
        store.count_backlog(now_ms);
        if catch_up.is_none() && store.backlog().groups() == 0 && !store.backlog().overflowed() {
            absorbed_lsn = shard.log.last_lsn();
        }
        let behind = shard.log.last_lsn().saturating_sub(absorbed_lsn);
        store.with_counters(|c| c.backlog_records = behind);
        let needs_catch_up = store.backlog().needs_catch_up();
        let next = if !migrated {
            None
        } else if store.is_postgres() && spare.should_wait(now_ms) {
            Some(Next::Idle)
        } else if let Some(c) = catch_up.as_mut() {
            match c.next(&context, index as u32) {
                Ok(Some(next)) => Some(next),
                Ok(None) => {
                    store.backlog().caught_up();
                    eprintln!(
                        "shard {index}: history caught up from the journal through record {}",
                        c.upto
                    );
                    catch_up = None;
                    Some(Next::Idle)
                }
                Err(e) => {
                    eprintln!("WARNING: shard {index}: history catch-up: {e}; trying again");
                    c.restart();
                    glommio::timer::sleep(Duration::from_millis(WRITER_BACKOFF_MS.1)).await;
                    Some(Next::Idle)
                }
            }
        } else if let Some(after) = needs_catch_up {
            // Rows of new records are kept again from the newest journaled
            // one on; those before come from the journal.
            let upto = shard.log.last_lsn();
            store.backlog().resume_after(upto);
            eprintln!(
                "shard {index}: history backlog overflowed: reading records {} to {upto} back from the journal",
                after + 1
            );
            catch_up = Some(CatchUp::new(after, upto, shard.log.last_record_epoch()));
            Some(Next::Idle)
        } else {
            Some(match store.backlog().next_batch(epochs.global_durable()) {
                Some(batch) => Next::Batch(batch, Source::Backlog),
                None => Next::Idle,
            })
        };
        let outcome = match &next {
            Some(Next::Batch(batch, source)) => store.write(batch).await.map(|_| Some(*source)),
            Some(Next::Idle) => Ok(None),
            None => store.migrate().await.map(|_| {
                migrated = true;
                None
            }),
        };
        let written = next;
        match outcome {
            Ok(Some(source)) => {
                if let Some(Next::Batch(batch, _)) = &written {
                    absorbed_lsn = absorbed_lsn.max(batch.progress.lsn);
                }
                match source {
                    Source::Backlog => store.backlog().written(),
                    Source::Journal => {
                        if let Some(c) = catch_up.as_mut() {
                            c.written();
                        }
                    }
                }
                backoff.reset();
            }
            Ok(None) => {
                if migrated {
                    glommio::timer::sleep(Duration::from_millis(WRITER_IDLE_MS)).await;
                }
            }
            Err(e) => {
                if now_ms >= warned_ms + WRITE_WARNING_INTERVAL_MS {
                    warned_ms = now_ms;
                    eprintln!("WARNING: shard {index}: history writer: {e}; retrying (trading goes on)");
                }
                let delay = backoff.next_delay_ms(crate::resilience::xorshift(&mut random));
                glommio::timer::sleep(Duration::from_millis(delay)).await;
            }
        }
    }
}

/// How much of the machine's CPU went unused lately, per thousand, over
/// windows of `SPARE_WINDOW_MS` (`/proc/stat`: idle and iowait against
/// all). PostgreSQL's writer waits while there is next to none: the
/// SQLite writer takes only idle CPU by its scheduling class, but the
/// inserts of a PostgreSQL on the same machine run in its own processes at
/// normal priority and would take the cores order entry needs. With
/// PostgreSQL on a host of its own the shards still spare the COPY
/// encoding. Where `/proc/stat` cannot be read, all CPU counts as unused.
struct SpareCpu {
    since: std::time::Instant,
    ticks: Option<CpuTicks>,
    permille: u64,
    /// Since when the writer has been waiting for unused CPU.
    waiting_since_ms: Option<u64>,
}

#[derive(Clone, Copy)]
struct CpuTicks {
    unused: u64,
    all: u64,
}

impl SpareCpu {
    fn new() -> SpareCpu {
        SpareCpu {
            since: std::time::Instant::now(),
            ticks: cpu_ticks(),
            permille: 1000,
            waiting_since_ms: None,
        }
    }

    /// Whether the next batch should wait: while next to no CPU goes
    /// unused, for at most `PG_WAIT_FOR_SPARE_CPU_MAX_MS` at a time.
    fn should_wait(&mut self, now_ms: u64) -> bool {
        let spare = self.permille();
        waits_for_spare_cpu(spare, &mut self.waiting_since_ms, now_ms)
    }

    /// The share of the last full window.
    fn permille(&mut self) -> u64 {
        if self.since.elapsed() >= Duration::from_millis(SPARE_WINDOW_MS) {
            // One read of a small procfs file: microseconds.
            let now = cpu_ticks();
            self.permille = match (self.ticks, now) {
                (Some(before), Some(now)) => spare_permille(before, now),
                _ => 1000,
            };
            self.ticks = now;
            self.since = std::time::Instant::now();
        }
        self.permille
    }
}

fn waits_for_spare_cpu(spare_permille: u64, waiting_since_ms: &mut Option<u64>, now_ms: u64) -> bool {
    if spare_permille >= PG_SPARE_CPU_MIN_PERMILLE {
        *waiting_since_ms = None;
        return false;
    }
    let since = *waiting_since_ms.get_or_insert(now_ms);
    if now_ms < since + PG_WAIT_FOR_SPARE_CPU_MAX_MS {
        return true;
    }
    // This batch goes; the next one waits again.
    *waiting_since_ms = None;
    false
}

fn cpu_ticks() -> Option<CpuTicks> {
    parse_cpu_ticks(&std::fs::read_to_string("/proc/stat").ok()?)
}

/// The first line of `/proc/stat`: `cpu user nice system idle iowait irq
/// softirq steal ...` in ticks (guest time is already in user).
fn parse_cpu_ticks(stat: &str) -> Option<CpuTicks> {
    let line = stat.lines().next()?;
    let mut fields = line.split_ascii_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    let ticks: Vec<u64> = fields.take(8).map(str::parse).collect::<Result<_, _>>().ok()?;
    if ticks.len() < 8 {
        return None;
    }
    Some(CpuTicks {
        unused: ticks[3] + ticks[4],
        all: ticks.iter().sum(),
    })
}

fn spare_permille(before: CpuTicks, now: CpuTicks) -> u64 {
    let all = now.all.saturating_sub(before.all);
    if all == 0 {
        return 1000;
    }
    now.unused.saturating_sub(before.unused) * 1000 / all
}

/// Groups of rows a catch-up's replay may have ready for the writer.
const CATCH_UP_GROUPS_QUEUED_MAX: usize = 4096;

/// What the replay thread hands the writer.
enum Replayed {
    Group(u64, Vec<Row>),
    Finished(Result<u64, String>),
}

/// Reading the rows of records `after + 1 ..= upto` back from the journal,
/// on a thread of its own at idle priority, a bounded queue of groups at a
/// time.
struct CatchUp {
    after: u64,
    upto: u64,
    /// The epoch of record `upto` at the latest: the replay starts once it
    /// is durable.
    epoch: u64,
    groups: Option<Receiver<Replayed>>,
    /// The batch being written, until it is.
    pending: Option<Arc<Batch>>,
    /// A group that did not fit the previous batch.
    carry: Option<(u64, Vec<Row>)>,
    /// The last position written.
    written_lsn: u64,
    finished: bool,
}

impl CatchUp {
    fn new(after: u64, upto: u64, epoch: u64) -> CatchUp {
        CatchUp {
            after,
            upto,
            epoch,
            groups: None,
            pending: None,
            carry: None,
            written_lsn: after,
            finished: false,
        }
    }

    /// Starts over from the last position written (after a failed replay).
    fn restart(&mut self) {
        self.groups = None;
        self.carry = None;
        self.finished = false;
        self.after = self.written_lsn;
    }

    fn written(&mut self) {
        if let Some(batch) = self.pending.take() {
            self.written_lsn = batch.progress.lsn;
        }
    }

    /// The next batch to write, `Idle` while the replay works, or `None`
    /// when every row is written.
    fn next(&mut self, context: &WriterContext, shard: u32) -> Result<Option<Next>, String> {
        if let Some(batch) = &self.pending {
            return Ok(Some(Next::Batch(batch.clone(), Source::Journal)));
        }
        let Some(groups) = &self.groups else {
            if context.epochs.global_durable() < self.epoch {
                return Ok(Some(Next::Idle));
            }
            self.groups = Some(self.start_replay(context, shard)?);
            return Ok(Some(Next::Idle));
        };
        let mut rows = Vec::new();
        let mut last = None;
        if let Some((lsn, carried)) = self.carry.take() {
            rows = carried;
            last = Some(lsn);
        }
        while rows.len() < WRITER_BATCH_ROWS {
            match groups.try_recv() {
                Ok(Replayed::Group(lsn, group)) => {
                    if !rows.is_empty() && rows.len() + group.len() > WRITER_BATCH_ROWS {
                        self.carry = Some((lsn, group));
                        break;
                    }
                    rows.extend(group);
                    last = Some(lsn);
                }
                Ok(Replayed::Finished(Ok(_))) => self.finished = true,
                Ok(Replayed::Finished(Err(e))) => return Err(e),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    if !self.finished {
                        return Err("the replay thread ended early".into());
                    }
                    break;
                }
            }
        }
        match last {
            Some(lsn) => {
                let batch = Arc::new(Batch {
                    shard,
                    progress: Progress {
                        generation: context.generation,
                        lsn,
                    },
                    rows,
                });
                self.pending = Some(batch.clone());
                Ok(Some(Next::Batch(batch, Source::Journal)))
            }
            None if self.finished && self.carry.is_none() => Ok(None),
            None => Ok(Some(Next::Idle)),
        }
    }

    fn start_replay(&self, context: &WriterContext, shard: u32) -> Result<Receiver<Replayed>, String> {
        let (send, receive) = std::sync::mpsc::sync_channel(CATCH_UP_GROUPS_QUEUED_MAX);
        let (data_dir, generation, markets) = (context.data_dir.clone(), context.generation, context.markets.clone());
        let (after, upto) = (self.after, self.upto);
        std::thread::Builder::new()
            .name(format!("history-replay-{shard}"))
            .spawn(move || {
                crate::store::sqlite_writer::idle_priority("history replay thread");
                let tap = Box::new(StreamTap {
                    after,
                    send: send.clone(),
                });
                let result =
                    crate::durability::recovery::replay_rows(&data_dir, generation, shard, &markets, after, upto, tap);
                let _ = send.send(Replayed::Finished(result.map_err(|e| e.to_string())));
            })
            .map_err(|e| format!("cannot start the replay thread: {e}"))?;
        Ok(receive)
    }
}

/// Sends the rows of the records after `after` to the writer, waiting
/// while its queue is full.
struct StreamTap {
    after: u64,
    send: SyncSender<Replayed>,
}

impl Tap for StreamTap {
    fn applied(&mut self, lsn: u64, record: Option<&Record>, trading: &Trading, out: &Output) {
        if let Some(rows) = rows_after(self.after, lsn, record, trading, out) {
            // A writer that went away ends the replay's use; nothing to do.
            let _ = self.send.send(Replayed::Group(lsn, rows));
        }
    }
}

/// The rows a replayed input made, for an input after `after` that made
/// any (what both recovery taps keep).
fn rows_after(after: u64, lsn: u64, record: Option<&Record>, trading: &Trading, out: &Output) -> Option<Vec<Row>> {
    if lsn <= after {
        return None;
    }
    let mut rows = Vec::new();
    rows_of(trading, record, out, crate::clock::now_ms(), lsn, &mut rows);
    (!rows.is_empty()).then_some(rows)
}

/// PostgreSQL upkeep: shard 0 makes partitions ahead and refreshes the
/// statistics views once at start (before rows need this month's
/// partition), then leaves it to the daily report job (`server::jobs`);
/// every shard measures its replicas' lag.
async fn run_upkeep(store: Rc<ShardStore>, leader: bool) {
    let mut upkeep_pending = leader;
    let mut next_upkeep_ms = 0;
    loop {
        let now_ms = crate::clock::now_ms();
        if upkeep_pending && now_ms >= next_upkeep_ms {
            // This month and the ones ahead.
            match store
                .upkeep(now_ms, crate::store::shard::PARTITIONS_AHEAD_MONTHS + 1)
                .await
            {
                Ok(()) => upkeep_pending = false,
                // Soon again: the store may be back by then.
                Err(_) => next_upkeep_ms = now_ms + UPKEEP_RETRY_MS,
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
        if let Some(rows) = rows_after(self.after, lsn, record, trading, out) {
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
                retry_at_start_up("bring its schema up to date", || store.migrate()).await?;
                progress.push(retry_at_start_up("read its progress", || store.progress()).await?);
            }
            Ok::<_, String>(progress)
        })??;
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
    /// before the old generation goes (its journal is the only other copy);
    /// waits for the store up to `START_UP_WAIT_MAX_MS`.
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
                    retry_at_start_up("write the recovered history", || store.write(&batch)).await?;
                }
            }
            Ok::<_, String>(())
        })??;
        Ok(rows_total)
    }
}

/// Retries `call` with backoff until it succeeds, saying why it waits,
/// for at most `START_UP_WAIT_MAX_MS`.
async fn retry_at_start_up<T, F, Fut>(what: &str, call: F) -> Result<T, String>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let mut backoff = Backoff::new(WRITER_BACKOFF_MS.0, WRITER_BACKOFF_MS.1);
    let mut random = 0x1234_5678_9abc_def1_u64;
    let started = std::time::Instant::now();
    loop {
        match call().await {
            Ok(value) => return Ok(value),
            Err(e) if started.elapsed() >= Duration::from_millis(START_UP_WAIT_MAX_MS) => {
                return Err(format!(
                    "history store: cannot {what}: {e}; gave up after {} s (the journal keeps every \
                     record: start again once the store answers)",
                    START_UP_WAIT_MAX_MS / 1000
                ))
            }
            Err(e) => {
                eprintln!("WARNING: history store: cannot {what}: {e}; start-up waits for it");
                let delay = backoff
                    .next_delay_ms(crate::resilience::xorshift(&mut random))
                    .max(START_UP_RETRY_MIN_MS);
                glommio::timer::sleep(Duration::from_millis(delay)).await;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unused_cpu_is_idle_and_iowait_against_all() {
        let before = parse_cpu_ticks("cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3\n").expect("a cpu line");
        let now = parse_cpu_ticks("cpu  170 0 80 880 50 0 0 0 0 0\n").expect("a cpu line");
        assert_eq!((before.unused, before.all), (850, 1000));
        // 180 ticks passed, 80 of them unused.
        assert_eq!(spare_permille(before, now), 444);
        assert_eq!(
            spare_permille(now, now),
            1000,
            "no time passed: nothing known to be busy"
        );
        assert!(parse_cpu_ticks("cpu0 1 2 3 4 5 6 7 8\n").is_none());
        assert!(parse_cpu_ticks("cpu  1 2 3\n").is_none());
    }

    #[test]
    fn a_busy_machine_delays_batches_a_bounded_time() {
        let mut since = None;
        assert!(!waits_for_spare_cpu(PG_SPARE_CPU_MIN_PERMILLE, &mut since, 0));
        assert!(waits_for_spare_cpu(40, &mut since, 1_000));
        assert!(waits_for_spare_cpu(
            40,
            &mut since,
            1_000 + PG_WAIT_FOR_SPARE_CPU_MAX_MS - 1
        ));
        // Waited long enough: this batch goes, the next waits again.
        assert!(!waits_for_spare_cpu(
            40,
            &mut since,
            1_000 + PG_WAIT_FOR_SPARE_CPU_MAX_MS
        ));
        assert!(waits_for_spare_cpu(40, &mut since, 3_500));
        // Spare CPU again: batches go at once.
        assert!(!waits_for_spare_cpu(500, &mut since, 3_600));
        assert_eq!(since, None);
    }
}
