//! Background jobs: work that must not slow the request path (history
//! exports, the daily statistics), queued by priority, run by workers,
//! retried with backoff and, after `jobs_attempts_max` attempts, kept as a
//! dead letter with its last error until an operator re-queues it.
//!
//! Two queues with one interface ([`Queue`]):
//!
//! - **Redis Streams** ([`streams`], with `--redis`): one stream per
//!   priority, read through one consumer group by every worker of every
//!   instance (and by `tradsys worker` processes); a job is acknowledged
//!   when done, reclaimed (`XAUTOCLAIM`) from a worker that held it longer
//!   than `jobs_visibility_timeout_ms`, delayed for its retry in a sorted
//!   set, and moved to the dead-letter stream by one Lua script, so a job
//!   is never both retried and dead, or lost between the two.
//! - **A local journal** ([`local`], without Redis): each shard keeps its
//!   own bounded queue in memory and appends every change to
//!   `shard-<n>/jobs.log`, synced before the change is acknowledged; at
//!   start the log is replayed, and a job that was running when the
//!   process stopped runs again.
//!
//! A job runs at least once: a worker that dies after doing the work but
//! before acknowledging it leaves the job to run again. Every job kind is
//! written to be repeated safely (an export writes its file again).

pub(crate) mod local;
pub(crate) mod streams;
#[cfg(test)]
mod tests;
pub(crate) mod webhook;
pub(crate) mod worker;

use serde::{Deserialize, Serialize};

/// Which queue a job waits in: high is drained before normal, normal
/// before low.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Priority {
    High,
    Normal,
    Low,
}

impl Priority {
    pub(crate) const ALL: [Priority; 3] = [Priority::High, Priority::Normal, Priority::Low];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// What a job does; its handler reads `payload`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum JobKind {
    /// A user's trade history as a CSV file.
    Export,
    /// The history store's daily statistics, refreshed.
    DailyReport,
    /// An account's waiting webhook events, delivered in order.
    Webhook,
}

/// One job, as it travels through a queue (JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Job {
    /// Stable over retries and re-queues.
    pub(crate) id: String,
    pub(crate) kind: JobKind,
    pub(crate) priority: Priority,
    /// The handler's input, JSON.
    pub(crate) payload: String,
    /// Attempts that failed so far.
    pub(crate) attempts: u32,
    pub(crate) enqueued_ms: u64,
}

/// A job a worker holds: acknowledge it or fail it through the queue it
/// came from.
#[derive(Debug)]
pub(crate) struct Claimed {
    pub(crate) job: Job,
    /// Where the queue keeps it (a stream entry; a local sequence).
    pub(crate) receipt: String,
}

/// A job that failed `jobs_attempts_max` times.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DeadLetter {
    /// The dead letter's own id (to re-queue it).
    pub(crate) id: String,
    pub(crate) job: Job,
    pub(crate) error: String,
    pub(crate) failed_ms: u64,
}

/// What a queue holds now, for /metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct QueueStats {
    /// Jobs waiting, per priority.
    pub(crate) waiting: [u64; 3],
    /// Jobs a worker holds.
    pub(crate) running: u64,
    /// Age of the oldest job not done (waiting or running), ms.
    pub(crate) oldest_age_ms: u64,
    /// Jobs waiting for their retry.
    pub(crate) delayed: u64,
    pub(crate) dead: u64,
}

/// Why a queue refused or failed a call.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum QueueError {
    /// The queue holds `jobs_queue_max` jobs.
    #[error("the job queue is full ({0} jobs)")]
    Full(u64),
    /// Redis or the local journal failed.
    #[error("the job queue is unavailable: {0}")]
    Unavailable(String),
}

/// The retry delay after `attempts` failed attempts: exponential from
/// `base_ms`, at most `max_ms`, with up to a quarter of jitter taken off
/// so that jobs failed together do not retry together.
pub(crate) fn backoff_ms(attempts: u32, base_ms: u64, max_ms: u64, jitter: u64) -> u64 {
    let doublings = attempts.saturating_sub(1).min(32);
    let full = base_ms.saturating_mul(1 << doublings).min(max_ms);
    full - jitter % (full / 4 + 1)
}

/// A queue of either kind.
pub(crate) enum Queue {
    Redis(streams::Streams),
    Local(local::LocalQueue),
}

impl Queue {
    /// Adds `job` (its `attempts` 0); acknowledged once kept.
    pub(crate) async fn enqueue(&self, job: &Job) -> Result<(), QueueError> {
        match self {
            Queue::Redis(q) => q.enqueue(job).await,
            Queue::Local(q) => q.enqueue(job).await,
        }
    }

    /// The next job by priority, if any is due; held by this worker until
    /// acknowledged or failed.
    pub(crate) async fn claim(&self) -> Result<Option<Claimed>, QueueError> {
        match self {
            Queue::Redis(q) => q.claim().await,
            Queue::Local(q) => q.claim().await,
        }
    }

    /// The job is done.
    pub(crate) async fn ack(&self, claimed: &Claimed) -> Result<(), QueueError> {
        match self {
            Queue::Redis(q) => q.ack(claimed).await,
            Queue::Local(q) => q.ack(claimed).await,
        }
    }

    /// The attempt failed with `error`: the job runs again after
    /// `delay_ms`, or, at `attempts_max` attempts, becomes a dead letter.
    pub(crate) async fn fail(
        &self,
        claimed: &Claimed,
        error: &str,
        delay_ms: u64,
        attempts_max: u32,
    ) -> Result<bool, QueueError> {
        match self {
            Queue::Redis(q) => q.fail(claimed, error, delay_ms, attempts_max).await,
            Queue::Local(q) => q.fail(claimed, error, delay_ms, attempts_max).await,
        }
    }

    /// Jobs other workers held past the visibility timeout, now this
    /// worker's (Redis; the local queue reclaims at start).
    pub(crate) async fn reclaim(&self) -> Result<Vec<Claimed>, QueueError> {
        match self {
            Queue::Redis(q) => q.reclaim().await,
            Queue::Local(_) => Ok(Vec::new()),
        }
    }

    /// Up to `count` dead letters, oldest first.
    pub(crate) async fn dead_letters(&self, count: usize) -> Result<Vec<DeadLetter>, QueueError> {
        match self {
            Queue::Redis(q) => q.dead_letters(count).await,
            Queue::Local(q) => Ok(q.dead_letters(count)),
        }
    }

    /// Puts dead letter `id` back in its queue with no attempts; false
    /// when there is no such dead letter.
    pub(crate) async fn requeue(&self, id: &str) -> Result<bool, QueueError> {
        match self {
            Queue::Redis(q) => q.requeue(id).await,
            Queue::Local(q) => q.requeue(id).await,
        }
    }

    /// Adds `event` to `user`'s events, delivered in order by one job at a
    /// time: `job` is queued when the account had none waiting.
    pub(crate) async fn push_event(&self, user: u64, event: &str, job: &Job) -> Result<(), QueueError> {
        self.push_events(&[(user, event.to_string(), job.clone())]).await
    }

    /// [`Queue::push_event`] for many events at once, in order: one round
    /// trip to Redis, or one synced write of the log. All or none.
    pub(crate) async fn push_events(&self, events: &[(u64, String, Job)]) -> Result<(), QueueError> {
        match self {
            Queue::Redis(q) => q.push_events(events).await,
            Queue::Local(q) => q.push_events(events).await,
        }
    }

    /// `user`'s oldest waiting event.
    pub(crate) async fn head_event(&self, user: u64) -> Result<Option<String>, QueueError> {
        match self {
            Queue::Redis(q) => q.head_event(user).await,
            Queue::Local(q) => Ok(q.head_event(user)),
        }
    }

    /// `user`'s oldest event is delivered, or is the dead letter `dead`
    /// (its job and error): it goes, and `next` is queued when more wait.
    pub(crate) async fn next_event(&self, user: u64, next: &Job, dead: Option<(&Job, &str)>) -> Result<(), QueueError> {
        match self {
            Queue::Redis(q) => q.next_event(user, next, dead).await,
            Queue::Local(q) => q.next_event(user, next, dead).await,
        }
    }

    pub(crate) async fn stats(&self) -> Result<QueueStats, QueueError> {
        match self {
            Queue::Redis(q) => q.stats().await,
            Queue::Local(q) => Ok(q.stats()),
        }
    }
}
