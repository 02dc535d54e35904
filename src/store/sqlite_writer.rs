//! A shard's SQLite writer: a thread of its own, at `SCHED_IDLE`, that owns
//! the write connection of the shard's history file.
//!
//! The kernel runs an idle-class thread only when no other thread wants
//! the core, so history writes take spare CPU and never any from order
//! entry: under a load that fills the cores the backlog grows instead
//! (bounded, see `backlog`), and it drains as soon as the load drops.
//! Reads use another connection (WAL lets readers and the writer work at
//! once) on the executor's blocking thread, so they never wait behind a
//! write that waits for a core.
//!
//! A job's time limit counts from when the thread starts it, not from
//! when it was queued: waiting for a spare core is not a failure of the
//! database. A job over its limit is interrupted (`sqlite3_interrupt`),
//! which rolls its transaction back.

use super::sqlite::SqliteStore;
use super::{Batch, HistoryStore, Progress, StoreError};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the shard looks whether its job is done.
const POLL_INTERVAL_MS: u64 = 1;

/// What the writer thread does.
pub enum Job {
    Migrate,
    Progress(u32),
    Write(Arc<Batch>),
}

/// What a job gave.
pub enum Done {
    Migrated(u32),
    Progress(Option<Progress>),
    Written(bool),
}

/// The shard's end of its writer thread.
pub struct SqliteWriter {
    jobs: SyncSender<(u64, Job)>,
    done: Receiver<(u64, Result<Done, StoreError>)>,
    /// The id of the job the thread is running, 0 when none.
    running: Arc<AtomicU64>,
    interrupt: rusqlite::InterruptHandle,
    next_id: std::cell::Cell<u64>,
}

impl SqliteWriter {
    /// Opens `path` for writing on a new thread named `name`.
    pub fn start(path: PathBuf, name: String) -> Result<SqliteWriter, StoreError> {
        let (jobs, incoming) = mpsc::sync_channel::<(u64, Job)>(1);
        let (finished, done) = mpsc::channel();
        let (opened, open_result) = mpsc::sync_channel(1);
        let running = Arc::new(AtomicU64::new(0));
        let running_there = running.clone();
        std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                idle_priority("history writer thread");
                let mut store = match SqliteStore::open(&path) {
                    Ok(store) => store,
                    Err(e) => {
                        let _ = opened.send(Err(e));
                        return;
                    }
                };
                if opened.send(Ok(store.interrupt_handle())).is_err() {
                    return;
                }
                for (id, job) in incoming {
                    running_there.store(id, Ordering::Release);
                    let result = run(&mut store, job);
                    running_there.store(0, Ordering::Release);
                    if finished.send((id, result)).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| StoreError::Engine(format!("cannot start the SQLite writer thread: {e}")))?;
        let interrupt = open_result
            .recv()
            .map_err(|_| StoreError::Engine("the SQLite writer thread ended at start".into()))??;
        Ok(SqliteWriter {
            jobs,
            done,
            running,
            interrupt,
            next_id: std::cell::Cell::new(0),
        })
    }

    /// Runs `job`; waits for a spare core as long as it takes, then at
    /// most `limit` for the job itself.
    pub async fn run(&self, job: Job, limit: Duration) -> Result<Done, StoreError> {
        let id = self.next_id.get() + 1;
        self.next_id.set(id);
        // Results of jobs whose caller gave up are still in the channel.
        while let Ok(_stale) = self.done.try_recv() {}
        self.jobs.try_send((id, job)).map_err(|e| match e {
            mpsc::TrySendError::Full(_) => {
                StoreError::Engine("the SQLite writer is still busy with an earlier job".into())
            }
            mpsc::TrySendError::Disconnected(_) => StoreError::Engine("the SQLite writer thread has ended".into()),
        })?;
        let mut started: Option<Instant> = None;
        loop {
            match self.done.try_recv() {
                Ok((done_id, result)) if done_id == id => return result,
                Ok(_) => continue,
                Err(TryRecvError::Disconnected) => {
                    return Err(StoreError::Engine("the SQLite writer thread has ended".into()))
                }
                Err(TryRecvError::Empty) => {}
            }
            if started.is_none() && self.running.load(Ordering::Acquire) == id {
                started = Some(Instant::now());
            }
            if started.is_some_and(|t| t.elapsed() > limit) {
                // Rolls the job's transaction back; its result (an error)
                // arrives and is dropped by the next job.
                self.interrupt.interrupt();
                return Err(StoreError::Timeout(limit.as_millis() as u64));
            }
            glommio::timer::sleep(Duration::from_millis(POLL_INTERVAL_MS)).await;
        }
    }
}

fn run(store: &mut SqliteStore, job: Job) -> Result<Done, StoreError> {
    use futures_lite::future::block_on;
    match job {
        Job::Migrate => block_on(store.migrate()).map(Done::Migrated),
        Job::Progress(shard) => block_on(store.progress(shard)).map(Done::Progress),
        Job::Write(batch) => block_on(store.write(&batch)).map(Done::Written),
    }
}

/// Puts the calling thread (`what`, for the warning) in the idle
/// scheduling class.
pub(crate) fn idle_priority(what: &str) {
    // SAFETY: sched_param is plain data; the call changes only this
    // thread's scheduling policy.
    let rc = unsafe {
        let param = libc::sched_param { sched_priority: 0 };
        libc::sched_setscheduler(0, libc::SCHED_IDLE, &param)
    };
    if rc != 0 {
        eprintln!(
            "WARNING: {what}: cannot lower its priority: {}",
            std::io::Error::last_os_error()
        );
    }
}
