//! The job queue without Redis: one per shard, in memory, every change
//! appended to the shard's `jobs.log` and synced (`fdatasync`, on the
//! executor's blocking thread) before it is acknowledged, so that nothing
//! acknowledged is lost across a restart.
//!
//! The log is JSON lines, one change each: `{"add":job}`,
//! `{"done":id}`, `{"retry":job,"due_ms":ms}` (the job's attempts counted),
//! `{"dead":letter}`, `{"requeue":letter id,"job":job}`, and for webhook
//! events `{"push_event":{user,event,job}}` and
//! `{"next_event":{user,next,dead}}` (an event and the job it needs, or
//! the job of the next one, in one line each). Opening replays
//! it; a job that was running when the process stopped (added, never done)
//! waits again. A line cut by a crash in the middle of its append is the
//! last one and was never acknowledged: replay stops there and the log is
//! rewritten. Once the log is larger than [`COMPACT_BYTES_MIN`] and
//! four times what it describes, it is rewritten as the jobs it holds
//! (written beside, synced, renamed over).
//!
//! **Bounds:** `jobs_queue_max` jobs (waiting, running and delayed);
//! `jobs_dead_max` dead letters (the oldest go first).

use super::{Claimed, DeadLetter, Job, QueueError, QueueStats};
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Logs smaller than this are never compacted.
pub(crate) const COMPACT_BYTES_MIN: u64 = 1 << 20;
pub(crate) const LOG_FILE: &str = "jobs.log";

/// One change, as a line of the log.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Change {
    Add(Job),
    Done(String),
    Retry {
        retry: Job,
        due_ms: u64,
    },
    Dead(DeadLetter),
    Requeue {
        requeue: String,
        job: Job,
    },
    /// A webhook event in line for `user`, and the job that delivers it
    /// when the account had none waiting.
    PushEvent {
        user: u64,
        event: String,
        job: Option<Job>,
    },
    /// `user`'s oldest event went (delivered, or the dead letter), and the
    /// next one's job when more wait.
    NextEvent {
        user: u64,
        next: Option<Job>,
        dead: Option<DeadLetter>,
    },
}

#[derive(Default)]
struct State {
    ready: [VecDeque<Job>; 3],
    running: HashMap<String, Job>,
    /// By when due, then by the order they failed in.
    delayed: BTreeMap<(u64, u64), Job>,
    dead: VecDeque<DeadLetter>,
    /// Webhook events waiting, per account, oldest first.
    events: HashMap<u64, VecDeque<String>>,
    events_total: usize,
    seq: u64,
    log_bytes: u64,
}

impl State {
    fn jobs(&self) -> usize {
        self.ready.iter().map(VecDeque::len).sum::<usize>() + self.running.len() + self.delayed.len()
    }

    /// Takes job `id` out of wherever it waits or runs.
    fn remove(&mut self, id: &str) -> Option<Job> {
        if let Some(job) = self.running.remove(id) {
            return Some(job);
        }
        for ready in &mut self.ready {
            if let Some(at) = ready.iter().position(|j| j.id == id) {
                return ready.remove(at);
            }
        }
        let key = self.delayed.iter().find(|(_, j)| j.id == id).map(|(k, _)| *k)?;
        self.delayed.remove(&key)
    }

    fn apply(&mut self, change: Change, dead_max: usize) {
        match change {
            Change::Add(job) => self.ready[job.priority.index()].push_back(job),
            Change::Done(id) => {
                self.remove(&id);
            }
            Change::Retry { retry, due_ms } => {
                self.remove(&retry.id);
                self.seq += 1;
                self.delayed.insert((due_ms, self.seq), retry);
            }
            Change::Dead(letter) => {
                self.remove(&letter.job.id);
                if self.dead.len() >= dead_max {
                    self.dead.pop_front();
                }
                self.dead.push_back(letter);
            }
            Change::Requeue { requeue, job } => {
                self.dead.retain(|d| d.id != requeue);
                self.ready[job.priority.index()].push_back(job);
            }
            Change::PushEvent { user, event, job } => {
                self.events.entry(user).or_default().push_back(event);
                self.events_total += 1;
                if let Some(job) = job {
                    self.ready[job.priority.index()].push_back(job);
                }
            }
            Change::NextEvent { user, next, dead } => {
                if let Some(events) = self.events.get_mut(&user) {
                    if events.pop_front().is_some() {
                        self.events_total -= 1;
                    }
                    if events.is_empty() {
                        self.events.remove(&user);
                    }
                }
                if let Some(letter) = dead {
                    if self.dead.len() >= dead_max {
                        self.dead.pop_front();
                    }
                    self.dead.push_back(letter);
                }
                if let Some(job) = next {
                    self.ready[job.priority.index()].push_back(job);
                }
            }
        }
    }

    /// The changes that make this state from nothing (for compaction).
    fn as_changes(&self) -> Vec<Change> {
        let mut changes: Vec<Change> = self.dead.iter().cloned().map(Change::Dead).collect();
        // A dead letter's own line also removes its job: the job lines
        // come after, so they are not removed.
        for ready in &self.ready {
            changes.extend(ready.iter().cloned().map(Change::Add));
        }
        changes.extend(self.running.values().cloned().map(Change::Add));
        for (&(due_ms, _), job) in &self.delayed {
            changes.push(Change::Retry {
                retry: job.clone(),
                due_ms,
            });
        }
        for (&user, events) in &self.events {
            changes.extend(events.iter().map(|event| Change::PushEvent {
                user,
                event: event.clone(),
                job: None,
            }));
        }
        changes
    }
}

/// One shard's queue.
pub(crate) struct LocalQueue {
    state: RefCell<State>,
    file: Arc<Mutex<std::fs::File>>,
    path: PathBuf,
    queue_max: usize,
    dead_max: usize,
}

fn io_error(path: &Path, e: impl std::fmt::Display) -> QueueError {
    QueueError::Unavailable(format!("{}: {e}", path.display()))
}

fn line(change: &Change) -> Result<Vec<u8>, QueueError> {
    let mut line = serde_json::to_vec(change).map_err(|e| QueueError::Unavailable(e.to_string()))?;
    line.push(b'\n');
    Ok(line)
}

impl LocalQueue {
    /// Opens (or creates) the queue logged in `dir/jobs.log`, replaying
    /// the log. Blocking: call it before the shard serves.
    pub(crate) fn open(dir: &Path, limits: &crate::config::JobsConfig) -> Result<LocalQueue, QueueError> {
        std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
        let path = dir.join(LOG_FILE);
        let dead_max = limits.dead_max as usize;
        let mut state = State::default();
        let text = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io_error(&path, e)),
        };
        for raw in text.split(|&b| b == b'\n').filter(|raw| !raw.is_empty()) {
            match serde_json::from_slice::<Change>(raw) {
                Ok(change) => state.apply(change, dead_max),
                // Cut by a crash mid-append: never acknowledged, and the
                // last line (the rewrite below drops it).
                Err(_) => break,
            }
        }
        // Running is never logged: a job that was running when the process
        // stopped was replayed as waiting, and runs again.
        Ok(LocalQueue {
            file: Arc::new(Mutex::new(Self::rewrite(&path, &state)?)),
            state: RefCell::new(state),
            path,
            queue_max: limits.queue_max as usize,
            dead_max,
        })
    }

    /// Writes `state` as a fresh log beside `path`, syncs it and renames it
    /// over; returns the new log, open for appends.
    fn rewrite(path: &Path, state: &State) -> Result<std::fs::File, QueueError> {
        let fresh = path.with_extension("log.new");
        let mut bytes = Vec::new();
        for change in state.as_changes() {
            bytes.extend(line(&change)?);
        }
        let mut file = std::fs::File::create(&fresh).map_err(|e| io_error(&fresh, e))?;
        file.write_all(&bytes).map_err(|e| io_error(&fresh, e))?;
        file.sync_data().map_err(|e| io_error(&fresh, e))?;
        std::fs::rename(&fresh, path).map_err(|e| io_error(path, e))?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io_error(dir, e))?;
        }
        std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| io_error(path, e))
    }

    /// Appends `change` and syncs it, on the blocking thread; then applies
    /// it here.
    async fn log(&self, change: Change) -> Result<(), QueueError> {
        self.log_all(vec![change]).await
    }

    /// Appends `changes` in one write and one sync; then applies them here.
    async fn log_all(&self, changes: Vec<Change>) -> Result<(), QueueError> {
        let mut bytes = Vec::new();
        for change in &changes {
            bytes.extend(line(change)?);
        }
        let written = bytes.len() as u64;
        let file = self.file.clone();
        let path = self.path.clone();
        glommio::executor()
            .spawn_blocking(move || -> Result<(), QueueError> {
                let mut file = file.lock().map_err(|_| io_error(&path, "the log's lock is poisoned"))?;
                file.write_all(&bytes).map_err(|e| io_error(&path, e))?;
                file.sync_data().map_err(|e| io_error(&path, e))
            })
            .await?;
        let compact = {
            let mut state = self.state.borrow_mut();
            for change in changes {
                state.apply(change, self.dead_max);
            }
            state.log_bytes += written;
            let described = (state.jobs() + state.dead.len()) as u64 * 512;
            state.log_bytes > COMPACT_BYTES_MIN && state.log_bytes > 4 * described
        };
        if compact {
            self.compact().await?;
        }
        Ok(())
    }

    async fn compact(&self) -> Result<(), QueueError> {
        let path = self.path.clone();
        let changes = self.state.borrow().as_changes();
        let mut bytes = Vec::new();
        for change in &changes {
            bytes.extend(line(change)?);
        }
        let size = bytes.len() as u64;
        let file = self.file.clone();
        glommio::executor()
            .spawn_blocking(move || -> Result<(), QueueError> {
                let mut file = file.lock().map_err(|_| io_error(&path, "the log's lock is poisoned"))?;
                let fresh = path.with_extension("log.new");
                let mut new = std::fs::File::create(&fresh).map_err(|e| io_error(&fresh, e))?;
                new.write_all(&bytes).map_err(|e| io_error(&fresh, e))?;
                new.sync_data().map_err(|e| io_error(&fresh, e))?;
                std::fs::rename(&fresh, &path).map_err(|e| io_error(&path, e))?;
                if let Some(dir) = path.parent() {
                    std::fs::File::open(dir)
                        .and_then(|d| d.sync_all())
                        .map_err(|e| io_error(dir, e))?;
                }
                *file = std::fs::OpenOptions::new()
                    .append(true)
                    .open(&path)
                    .map_err(|e| io_error(&path, e))?;
                Ok(())
            })
            .await?;
        self.state.borrow_mut().log_bytes = size;
        Ok(())
    }

    pub(crate) async fn enqueue(&self, job: &Job) -> Result<(), QueueError> {
        if self.state.borrow().jobs() >= self.queue_max {
            return Err(QueueError::Full(self.queue_max as u64));
        }
        self.log(Change::Add(job.clone())).await
    }

    pub(crate) async fn claim(&self) -> Result<Option<Claimed>, QueueError> {
        let mut state = self.state.borrow_mut();
        let now_ms = crate::clock::now_ms();
        // Due retries wait in their queue again (in memory: the log's
        // retry line already says when they are due).
        while let Some(entry) = state.delayed.first_entry() {
            if entry.key().0 > now_ms {
                break;
            }
            let job = entry.remove();
            state.ready[job.priority.index()].push_back(job);
        }
        let Some(job) = state.ready.iter_mut().find_map(VecDeque::pop_front) else {
            return Ok(None);
        };
        state.running.insert(job.id.clone(), job.clone());
        Ok(Some(Claimed {
            receipt: job.id.clone(),
            job,
        }))
    }

    pub(crate) async fn ack(&self, claimed: &Claimed) -> Result<(), QueueError> {
        self.log(Change::Done(claimed.job.id.clone())).await
    }

    pub(crate) async fn fail(
        &self,
        claimed: &Claimed,
        error: &str,
        delay_ms: u64,
        attempts_max: u32,
    ) -> Result<bool, QueueError> {
        let mut job = claimed.job.clone();
        job.attempts += 1;
        let now_ms = crate::clock::now_ms();
        if job.attempts >= attempts_max {
            let letter = DeadLetter {
                id: format!("{}-{}", now_ms, job.id),
                job,
                error: error.to_string(),
                failed_ms: now_ms,
            };
            self.log(Change::Dead(letter)).await?;
            return Ok(true);
        }
        self.log(Change::Retry {
            retry: job,
            due_ms: now_ms + delay_ms,
        })
        .await?;
        Ok(false)
    }

    pub(crate) async fn push_events(&self, events: &[(u64, String, Job)]) -> Result<(), QueueError> {
        let changes = {
            let state = self.state.borrow();
            if state.events_total + events.len() > self.queue_max {
                return Err(QueueError::Full(self.queue_max as u64));
            }
            let mut first: HashMap<u64, bool> = HashMap::new();
            events
                .iter()
                .map(|(user, event, job)| {
                    let empty = first.entry(*user).or_insert_with(|| !state.events.contains_key(user));
                    let job = std::mem::replace(empty, false).then(|| job.clone());
                    Change::PushEvent {
                        user: *user,
                        event: event.clone(),
                        job,
                    }
                })
                .collect()
        };
        self.log_all(changes).await
    }

    pub(crate) fn head_event(&self, user: u64) -> Option<String> {
        self.state.borrow().events.get(&user).and_then(|e| e.front().cloned())
    }

    pub(crate) async fn next_event(&self, user: u64, next: &Job, dead: Option<(&Job, &str)>) -> Result<(), QueueError> {
        let more = self.state.borrow().events.get(&user).is_some_and(|e| e.len() > 1);
        let now_ms = crate::clock::now_ms();
        let dead = dead.map(|(job, error)| DeadLetter {
            id: format!("{now_ms}-{}", job.id),
            job: job.clone(),
            error: error.to_string(),
            failed_ms: now_ms,
        });
        self.log(Change::NextEvent {
            user,
            next: more.then(|| next.clone()),
            dead,
        })
        .await
    }

    pub(crate) fn dead_letters(&self, count: usize) -> Vec<DeadLetter> {
        self.state.borrow().dead.iter().take(count).cloned().collect()
    }

    pub(crate) async fn requeue(&self, id: &str) -> Result<bool, QueueError> {
        let letter = self.state.borrow().dead.iter().find(|d| d.id == id).cloned();
        let Some(letter) = letter else { return Ok(false) };
        let mut job = letter.job;
        job.attempts = 0;
        self.log(Change::Requeue {
            requeue: letter.id,
            job,
        })
        .await?;
        Ok(true)
    }

    pub(crate) fn stats(&self) -> QueueStats {
        let state = self.state.borrow();
        let now_ms = crate::clock::now_ms();
        let oldest = state
            .ready
            .iter()
            .flatten()
            .chain(state.running.values())
            .chain(state.delayed.values())
            .map(|j| j.enqueued_ms)
            .min();
        QueueStats {
            waiting: [
                state.ready[0].len() as u64,
                state.ready[1].len() as u64,
                state.ready[2].len() as u64,
            ],
            running: state.running.len() as u64,
            oldest_age_ms: oldest.map_or(0, |t| now_ms.saturating_sub(t)),
            delayed: state.delayed.len() as u64,
            dead: state.dead.len() as u64,
        }
    }
}
