//! The two queues behave alike: priorities, acknowledgement, retries after
//! backoff, dead letters and re-queueing, each checked against a real
//! `redis-server` and a real log file; then what only one of them does
//! (reclaiming a dead worker's job; replaying the log at start).

use super::local::LocalQueue;
use super::streams::Streams;
use super::{backoff_ms, Claimed, Job, JobKind, Priority, Queue, QueueError, QueueStats};
use crate::config::JobsConfig;
use crate::redis::tests::{limits, on_executor};
use crate::redis::{parse_url, Redis};
use std::time::{Duration, Instant};
use tradsys_redistest::RedisServer;

/// A fresh directory of this test's own (the test removes it).
fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tradsys-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn config(dir: &std::path::Path) -> JobsConfig {
    JobsConfig {
        attempts_max: 3,
        visibility_timeout_ms: 100,
        backoff_base_ms: 1,
        backoff_max_ms: 1,
        poll_ms: 5,
        queue_max: 4,
        dead_max: 2,
        export_dir: dir.join("exports"),
        exports_per_user_max: 2,
        export_ttl_ms: 60_000,
        workers_in_server: true,
        concurrency: 1,
        webhook_timeout_ms: 1_000,
        webhook_ca_file: None,
        test_job_start_delay_ms: 0,
    }
}

fn job(id: &str, priority: Priority) -> Job {
    Job {
        id: id.to_string(),
        kind: JobKind::Export,
        priority,
        payload: format!("{{\"n\":\"{id}\"}}"),
        attempts: 0,
        enqueued_ms: crate::clock::now_ms(),
    }
}

/// Claims until a job comes (a retry waits out its backoff), bounded.
async fn claim_soon(queue: &Queue) -> Claimed {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(claimed) = queue.claim().await.expect("claim") {
            return claimed;
        }
        assert!(Instant::now() < deadline, "no job came");
        glommio::timer::sleep(Duration::from_millis(2)).await;
    }
}

/// What both queues must do.
async fn behaves_as_a_queue(queue: &Queue) {
    assert_eq!(queue.claim().await.expect("claim").map(|c| c.job), None);
    for (id, priority) in [("l", Priority::Low), ("n", Priority::Normal), ("h", Priority::High)] {
        queue.enqueue(&job(id, priority)).await.expect("enqueue");
    }
    let stats = queue.stats().await.expect("stats");
    assert_eq!((stats.waiting, stats.running, stats.dead), ([1, 1, 1], 0, 0));
    // High before normal before low.
    let mut order = Vec::new();
    let mut held = Vec::new();
    for _ in 0..3 {
        let claimed = queue.claim().await.expect("claim").expect("a job");
        order.push(claimed.job.id.clone());
        held.push(claimed);
    }
    assert_eq!(order, ["h", "n", "l"]);
    assert_eq!(queue.stats().await.expect("stats").running, 3);
    for claimed in &held[..2] {
        queue.ack(claimed).await.expect("ack");
    }
    let stats = queue.stats().await.expect("stats");
    assert_eq!(
        QueueStats {
            oldest_age_ms: 0,
            ..stats
        },
        QueueStats {
            waiting: [0, 0, 0],
            running: 1,
            oldest_age_ms: 0,
            delayed: 0,
            dead: 0
        }
    );

    // "l" fails three times: retried with its attempts counted, then dead.
    let mut claimed = held.pop().expect("l");
    for attempt in 1..=3 {
        let dead = queue
            .fail(&claimed, &format!("failure {attempt}"), 1, 3)
            .await
            .expect("fail");
        assert_eq!(dead, attempt == 3, "attempt {attempt}");
        if attempt < 3 {
            claimed = claim_soon(queue).await;
            assert_eq!((claimed.job.id.as_str(), claimed.job.attempts), ("l", attempt));
        }
    }
    assert_eq!(queue.claim().await.expect("claim").map(|c| c.job.id), None);
    let dead = queue.dead_letters(10).await.expect("dead letters");
    assert_eq!(dead.len(), 1);
    assert_eq!((dead[0].job.id.as_str(), dead[0].job.attempts), ("l", 3));
    assert_eq!(dead[0].error, "failure 3");
    assert_eq!(queue.stats().await.expect("stats").dead, 1);
    // Re-queued: it runs again from no attempts, once.
    assert!(!queue.requeue("no-such-letter").await.expect("requeue"));
    assert!(queue.requeue(&dead[0].id).await.expect("requeue"));
    assert!(!queue.requeue(&dead[0].id).await.expect("requeue"), "once");
    let again = queue.claim().await.expect("claim").expect("the re-queued job");
    assert_eq!((again.job.id.as_str(), again.job.attempts), ("l", 0));
    queue.ack(&again).await.expect("ack");
    assert_eq!(queue.dead_letters(10).await.expect("dead letters"), vec![]);

    // Bounded: the fifth job of a queue of four is refused.
    let (bound, priority) = match queue {
        Queue::Redis(_) => (4, Priority::Low),
        Queue::Local(_) => (4, Priority::Normal),
    };
    for i in 0..bound {
        queue.enqueue(&job(&format!("b{i}"), priority)).await.expect("enqueue");
    }
    assert_eq!(queue.enqueue(&job("over", priority)).await, Err(QueueError::Full(4)));
}

/// An account's webhook events: one job at a time, events in order, a
/// dead letter that lets the next event go on.
async fn keeps_an_accounts_events_in_order(queue: &Queue) {
    let job = |n: u64| super::webhook::job(7, n);
    for event in ["e1", "e2", "e3"] {
        queue.push_event(7, event, &job(1)).await.expect("push");
    }
    queue
        .push_event(8, "other", &super::webhook::job(8, 1))
        .await
        .expect("push");
    // One job per account, however many events.
    let first = queue.claim().await.expect("claim").expect("a job");
    let second = queue.claim().await.expect("claim").expect("a job");
    assert_eq!(queue.claim().await.expect("claim").map(|c| c.job.id), None);
    assert_eq!((first.job.payload.as_str(), second.job.payload.as_str()), ("7", "8"));
    assert_eq!(first.job.priority, Priority::High);
    assert_eq!(queue.head_event(7).await.expect("head").as_deref(), Some("e1"));
    queue.next_event(7, &job(2), None).await.expect("next");
    queue.ack(&first).await.expect("ack");
    let again = queue.claim().await.expect("claim").expect("the next job");
    assert_eq!(again.job.id, job(2).id);
    assert_eq!(queue.head_event(7).await.expect("head").as_deref(), Some("e2"));
    // e2 fails for good: a dead letter holding it, and e3 goes on.
    let dead = Job {
        payload: "e2".into(),
        attempts: 3,
        ..again.job.clone()
    };
    queue
        .next_event(7, &job(3), Some((&dead, "the receiver answered 500")))
        .await
        .expect("next");
    queue.ack(&again).await.expect("ack");
    let last = queue.claim().await.expect("claim").expect("the job of e3");
    assert_eq!(queue.head_event(7).await.expect("head").as_deref(), Some("e3"));
    queue.next_event(7, &job(4), None).await.expect("next");
    queue.ack(&last).await.expect("ack");
    // Nothing left for 7: no job was queued after its last event.
    assert_eq!(queue.head_event(7).await.expect("head"), None);
    queue.ack(&second).await.expect("ack");
    assert_eq!(queue.claim().await.expect("claim").map(|c| c.job.id), None);
    let letters = queue.dead_letters(10).await.expect("dead letters");
    assert_eq!(letters.len(), 1);
    assert_eq!(
        (
            letters[0].job.payload.as_str(),
            letters[0].job.attempts,
            letters[0].error.as_str()
        ),
        ("e2", 3, "the receiver answered 500")
    );
}

#[test]
fn both_queues_keep_an_accounts_events_in_order() {
    let server = RedisServer::start();
    let url = server.url();
    let dir = temp_dir("jobs-events");
    on_executor(move || async move {
        let redis = Redis::start(parse_url(&url).expect("url"), limits(), 1);
        let queue = Queue::Redis(Streams::new(redis.clone(), "w1".into(), &config(&dir)));
        keeps_an_accounts_events_in_order(&queue).await;
        redis.close();
        let queue = Queue::Local(LocalQueue::open(&dir, &config(&dir)).expect("open"));
        keeps_an_accounts_events_in_order(&queue).await;
        let _ = std::fs::remove_dir_all(&dir);
    });
}

#[test]
fn the_redis_queue_keeps_priorities_retries_and_dead_letters() {
    let server = RedisServer::start();
    let url = server.url();
    let dir = temp_dir("jobs-redis");
    on_executor(move || async move {
        let redis = Redis::start(parse_url(&url).expect("url"), limits(), 1);
        let queue = Queue::Redis(Streams::new(redis.clone(), "w1".into(), &config(&dir)));
        behaves_as_a_queue(&queue).await;
        redis.close();
    });
}

#[test]
fn the_local_queue_keeps_priorities_retries_and_dead_letters() {
    let dir = temp_dir("jobs-local");
    on_executor(move || async move {
        let queue = Queue::Local(LocalQueue::open(&dir, &config(&dir)).expect("open"));
        behaves_as_a_queue(&queue).await;
        let _ = std::fs::remove_dir_all(&dir);
    });
}

/// A worker that dies holding a job: after the visibility timeout another
/// worker reclaims it, with the lost delivery counted as an attempt.
#[test]
fn a_job_held_by_a_dead_worker_is_reclaimed_by_another() {
    let server = RedisServer::start();
    let url = server.url();
    let dir = temp_dir("jobs-reclaim");
    on_executor(move || async move {
        let redis = Redis::start(parse_url(&url).expect("url"), limits(), 1);
        let (dead, alive) = (
            Queue::Redis(Streams::new(redis.clone(), "dead".into(), &config(&dir))),
            Queue::Redis(Streams::new(redis.clone(), "alive".into(), &config(&dir))),
        );
        dead.enqueue(&job("x", Priority::Normal)).await.expect("enqueue");
        // Before the claim: the job's idle time counts from the claim, so
        // what follows it (the two checks below) must not shorten the
        // wait measured here.
        let started = Instant::now();
        let held = dead.claim().await.expect("claim").expect("x");
        assert_eq!(held.job.attempts, 0);
        // Not yet: the holder may still be working on it.
        assert_eq!(alive.reclaim().await.expect("reclaim").len(), 0);
        assert_eq!(alive.claim().await.expect("claim").map(|c| c.job.id), None);
        let reclaimed = loop {
            let reclaimed = alive.reclaim().await.expect("reclaim");
            if !reclaimed.is_empty() {
                break reclaimed;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "never reclaimed");
            glommio::timer::sleep(Duration::from_millis(10)).await;
        };
        assert!(
            started.elapsed() >= Duration::from_millis(90),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(reclaimed.len(), 1);
        assert_eq!((reclaimed[0].job.id.as_str(), reclaimed[0].job.attempts), ("x", 1));
        alive.ack(&reclaimed[0]).await.expect("ack");
        assert_eq!(alive.stats().await.expect("stats").running, 0);
        redis.close();
    });
}

/// The local queue across a restart: what was acknowledged stays; a job
/// that was running waits again; retries and dead letters keep their
/// attempts and errors.
#[test]
fn the_local_queue_survives_a_restart() {
    let dir = temp_dir("jobs-restart");
    let first = dir.clone();
    on_executor(move || async move {
        let queue = LocalQueue::open(&first, &config(&first)).expect("open");
        let queue = Queue::Local(queue);
        for id in ["a", "b", "c", "d"] {
            queue.enqueue(&job(id, Priority::Normal)).await.expect("enqueue");
        }
        let a = queue.claim().await.expect("claim").expect("a");
        queue.ack(&a).await.expect("ack");
        let b = queue.claim().await.expect("claim").expect("b");
        queue.fail(&b, "once", 60_000, 3).await.expect("fail");
        let c = queue.claim().await.expect("claim").expect("c");
        queue.fail(&c, "for good", 1, 1).await.expect("fail");
        let _running = queue.claim().await.expect("claim").expect("d");
        // The process stops here, with "d" running.
    });
    on_executor(move || async move {
        let queue = Queue::Local(LocalQueue::open(&dir, &config(&dir)).expect("reopen"));
        let stats = queue.stats().await.expect("stats");
        assert_eq!(
            (stats.waiting, stats.running, stats.delayed, stats.dead),
            ([0, 1, 0], 0, 1, 1)
        );
        let d = queue.claim().await.expect("claim").expect("d again");
        assert_eq!((d.job.id.as_str(), d.job.attempts), ("d", 0));
        let dead = queue.dead_letters(10).await.expect("dead letters");
        assert_eq!(
            (dead[0].job.id.as_str(), dead[0].job.attempts, dead[0].error.as_str()),
            ("c", 1, "for good")
        );
        let _ = std::fs::remove_dir_all(&dir);
    });
}

#[test]
fn backoff_doubles_up_to_its_ceiling_less_some_jitter() {
    let delays: Vec<u64> = (1..=8).map(|a| backoff_ms(a, 100, 5_000, 0)).collect();
    assert_eq!(delays, vec![100, 200, 400, 800, 1_600, 3_200, 5_000, 5_000]);
    // Jitter takes off at most a quarter.
    assert_eq!(backoff_ms(3, 100, 5_000, 100), 300);
    assert_eq!(backoff_ms(3, 100, 5_000, 150), 400 - 150 % 101);
    assert!((0..1_000).all(|j| (300..=400).contains(&backoff_ms(3, 100, 5_000, j))));
    assert_eq!(backoff_ms(100, 100, 5_000, 0), 5_000);
}

#[test]
fn a_job_reads_back_as_it_was_written() {
    let job = Job {
        id: "j1".into(),
        kind: JobKind::Export,
        priority: Priority::Normal,
        payload: r#"{"user":1}"#.into(),
        attempts: 2,
        enqueued_ms: 1_700_000_000_000,
    };
    let text = serde_json::to_string(&job).expect("json");
    assert_eq!(
        text,
        r#"{"id":"j1","kind":"export","priority":"normal","payload":"{\"user\":1}","attempts":2,"enqueued_ms":1700000000000}"#
    );
    assert_eq!(serde_json::from_str::<Job>(&text).expect("job"), job);
}
