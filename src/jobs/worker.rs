//! A worker: claims jobs from a [`Queue`] by priority, runs each through
//! its [`Handler`], acknowledges it or fails it (a retry after backoff, or
//! a dead letter), and every half visibility timeout reclaims the jobs of
//! workers that died. A worker runs `jobs_concurrency` jobs at once, on a
//! shard's low-priority task queue or on an executor of `tradsys worker`.

use super::{backoff_ms, Claimed, Job, Queue, QueueError};
use crate::config::JobsConfig;
use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

/// The longest wait of an idle worker between two claims.
const IDLE_POLL_MAX_MS: u64 = 1_000;

/// What a job that ended came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Finished {
    Done,
    /// Its work failed for good and the handler kept it as a dead letter
    /// itself (a webhook event, so that its account's next one goes on).
    DeadLettered,
}

/// Runs jobs of every kind.
pub(crate) trait Handler {
    /// Does `job`'s work; an error is the attempt's failure, kept with the
    /// job (and shown with its dead letter).
    async fn run(&self, job: &Job) -> Result<Finished, String>;
}

/// What one worker did, for /metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct WorkerCounters {
    pub(crate) runs: u64,
    pub(crate) succeeded: u64,
    pub(crate) failed: u64,
    pub(crate) dead_lettered: u64,
    pub(crate) reclaimed: u64,
    pub(crate) queue_errors: u64,
}

/// Runs jobs from `queue` until `stop` says so (checked between jobs):
/// `jobs_concurrency` at once, each lane claiming and running one job at a
/// time; the first lane also reclaims the jobs of dead workers.
pub(crate) async fn run(
    queue: &Queue,
    handler: &impl Handler,
    config: &JobsConfig,
    counters: &RefCell<WorkerCounters>,
    stop: impl Fn() -> bool,
) {
    let stop = &stop;
    let lanes: Vec<_> = (0..config.concurrency.max(1))
        .map(|lane| run_lane(queue, handler, config, counters, stop, lane == 0))
        .collect();
    join_all(lanes).await;
}

/// Polls every future until all are done; their outputs in order.
pub(crate) async fn join_all<T, F: Future<Output = T>>(futures: Vec<F>) -> Vec<T> {
    let mut futures: Vec<Option<Pin<Box<F>>>> = futures.into_iter().map(|f| Some(Box::pin(f))).collect();
    let mut outputs: Vec<Option<T>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (slot, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if let Some(future) = slot {
                match future.as_mut().poll(cx) {
                    Poll::Ready(value) => {
                        *output = Some(value);
                        *slot = None;
                    }
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

async fn run_lane(
    queue: &Queue,
    handler: &impl Handler,
    config: &JobsConfig,
    counters: &RefCell<WorkerCounters>,
    stop: &impl Fn() -> bool,
    reclaims: bool,
) {
    let mut next_reclaim_ms = 0;
    let mut jitter = crate::clock::now_micros() | 1;
    // An idle worker asks less and less often, up to once a second: an
    // idle queue costs Redis a few commands a second per worker, not ten.
    let mut idle_ms = config.poll_ms;
    while !stop() {
        let now_ms = crate::clock::now_ms();
        if reclaims && now_ms >= next_reclaim_ms {
            next_reclaim_ms = now_ms + (config.visibility_timeout_ms / 2).max(1);
            match queue.reclaim().await {
                Ok(reclaimed) => {
                    counters.borrow_mut().reclaimed += reclaimed.len() as u64;
                    for claimed in reclaimed {
                        execute(queue, handler, config, counters, claimed, &mut jitter).await;
                    }
                }
                Err(_) => counters.borrow_mut().queue_errors += 1,
            }
        }
        match queue.claim().await {
            Ok(Some(claimed)) => {
                idle_ms = config.poll_ms;
                execute(queue, handler, config, counters, claimed, &mut jitter).await;
            }
            Ok(None) => {
                glommio::timer::sleep(Duration::from_millis(idle_ms)).await;
                idle_ms = (idle_ms * 2).min(IDLE_POLL_MAX_MS.max(config.poll_ms));
            }
            Err(_) => {
                counters.borrow_mut().queue_errors += 1;
                // The queue's own breaker and reconnects pace this.
                glommio::timer::sleep(Duration::from_millis(config.poll_ms.max(100))).await;
            }
        }
    }
}

/// Runs one claimed job and settles it with the queue.
async fn execute(
    queue: &Queue,
    handler: &impl Handler,
    config: &JobsConfig,
    counters: &RefCell<WorkerCounters>,
    claimed: Claimed,
    jitter: &mut u64,
) {
    counters.borrow_mut().runs += 1;
    if config.test_job_start_delay_ms > 0 {
        glommio::timer::sleep(Duration::from_millis(config.test_job_start_delay_ms)).await;
    }
    let outcome = if claimed.job.attempts >= config.attempts_max {
        // Reclaimed from workers that died with it, as many times as it
        // may be tried: it is not run again.
        Err(format!(
            "its worker stopped while running it {} times",
            claimed.job.attempts
        ))
    } else {
        handler.run(&claimed.job).await
    };
    let settled: Result<(), QueueError> = match outcome {
        Ok(finished) => {
            {
                let mut counted = counters.borrow_mut();
                match finished {
                    Finished::Done => counted.succeeded += 1,
                    Finished::DeadLettered => counted.dead_lettered += 1,
                }
            }
            queue.ack(&claimed).await
        }
        Err(error) => {
            *jitter ^= *jitter << 13;
            *jitter ^= *jitter >> 7;
            *jitter ^= *jitter << 17;
            let delay_ms = backoff_ms(
                claimed.job.attempts + 1,
                config.backoff_base_ms,
                config.backoff_max_ms,
                *jitter,
            );
            counters.borrow_mut().failed += 1;
            queue
                .fail(&claimed, &error, delay_ms, config.attempts_max)
                .await
                .map(|dead| counters.borrow_mut().dead_lettered += u64::from(dead))
        }
    };
    // Not settled: the job stays held and is reclaimed after the
    // visibility timeout (Redis) or at the next start (local).
    if settled.is_err() {
        counters.borrow_mut().queue_errors += 1;
    }
}
