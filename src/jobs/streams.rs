//! The job queue in Redis Streams, shared by every worker that names the
//! same Redis.
//!
//! Keys: `tradsys:jobs:high`, `:normal` and `:low` (the streams, each with
//! the consumer group `tradsys`), `tradsys:jobs:delayed` (a sorted set of
//! jobs waiting for their retry, scored by when they are due) and
//! `tradsys:jobs:dead` (the dead-letter stream). A stream entry holds one
//! field, `job`, the job's JSON; a dead letter adds `error` and
//! `failed_ms`.
//!
//! - **Enqueue**: `XADD` to the priority's stream, refused when that stream
//!   holds `jobs_queue_max` entries (waiting and running).
//! - **Claim** (one script): due retries move from the sorted set to their
//!   streams, then `XREADGROUP` reads one new entry from high, else normal,
//!   else low. Never `BLOCK`: the connection is the shard's and pipelines
//!   every other command; an idle worker polls every `jobs_poll_ms`.
//! - **Ack**: `XACK` and `XDEL`, so a stream holds only jobs not done.
//! - **Fail** (one script): the job (its attempts counted) goes to the
//!   sorted set, due after its backoff, or at `jobs_attempts_max` to the
//!   dead-letter stream; then `XACK` and `XDEL`. One script, so a job is
//!   never both retried and dead, nor lost between the two.
//! - **Reclaim**: `XAUTOCLAIM` takes entries another consumer has held for
//!   longer than `jobs_visibility_timeout_ms` (a worker that died); each
//!   delivery beyond the first counts as a failed attempt.
//!
//! - **Webhook events** wait in one list per account
//!   (`tradsys:webhooks:<user>`), delivered by one job at a time: pushing
//!   the first event of an empty list queues the job (one script), and the
//!   job, once it delivered the oldest event (or made it a dead letter),
//!   removes it and queues the next job when more wait (one script). So an
//!   account has one job at most, and its events go in order.
//!
//! **Bounds:** `jobs_queue_max` entries per stream and events per account;
//! the dead-letter stream is trimmed to about `jobs_dead_max` (the oldest
//! go first).

use super::{Claimed, DeadLetter, Job, Priority, QueueError, QueueStats};
use crate::redis::script::Script;
use crate::redis::{Redis, RedisError, Reply};

const STREAMS: [&str; 3] = ["tradsys:jobs:high", "tradsys:jobs:normal", "tradsys:jobs:low"];
const DELAYED: &str = "tradsys:jobs:delayed";
const DEAD: &str = "tradsys:jobs:dead";
/// Due retries moved to their streams per claim.
const PROMOTE_MAX: usize = 64;
/// Entries reclaimed per stream per call.
const RECLAIM_MAX: usize = 16;

/// `KEYS[1]`: the stream. `ARGV`: the job's JSON, the stream's bound.
/// Returns the entry id, or false when the stream is full.
const ENQUEUE: &str = r"
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[2]) then return false end
redis.pcall('XGROUP', 'CREATE', KEYS[1], 'tradsys', '0', 'MKSTREAM')
return redis.call('XADD', KEYS[1], '*', 'job', ARGV[1])
";

/// `KEYS`: high, normal, low, delayed. `ARGV`: consumer, retries to move.
/// Returns `{stream index (1-3), entry id, job}` or false.
const CLAIM: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
for _, member in ipairs(due) do
  local priority = cjson.decode(member).priority
  local key = KEYS[1]
  if priority == 'normal' then key = KEYS[2] elseif priority == 'low' then key = KEYS[3] end
  redis.pcall('XGROUP', 'CREATE', key, 'tradsys', '0', 'MKSTREAM')
  redis.call('XADD', key, '*', 'job', member)
  redis.call('ZREM', KEYS[4], member)
end
for i = 1, 3 do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    redis.pcall('XGROUP', 'CREATE', KEYS[i], 'tradsys', '0')
    local got = redis.call('XREADGROUP', 'GROUP', 'tradsys', ARGV[1], 'COUNT', 1, 'STREAMS', KEYS[i], '>')
    if got then
      local entry = got[1][2][1]
      return {i, entry[1], entry[2][2]}
    end
  end
end
return false
";

/// `KEYS[1]`: the stream. `ARGV[1]`: the entry id.
const ACK: &str = r"
redis.call('XACK', KEYS[1], 'tradsys', ARGV[1])
return redis.call('XDEL', KEYS[1], ARGV[1])
";

/// `KEYS`: the stream, delayed, dead. `ARGV`: entry id, the job's JSON
/// with its attempts counted, attempts, attempts allowed, delay (ms),
/// error, dead letters kept. Returns 1 when the job became a dead letter.
const FAIL: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local dead = 0
if tonumber(ARGV[3]) >= tonumber(ARGV[4]) then
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[7], '*', 'job', ARGV[2], 'error', ARGV[6], 'failed_ms', now)
  dead = 1
else
  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[5]), ARGV[2])
end
redis.call('XACK', KEYS[1], 'tradsys', ARGV[1])
redis.call('XDEL', KEYS[1], ARGV[1])
return dead
";

/// `KEYS`: high, normal, low. `ARGV`: consumer, idle time (ms), count.
/// Returns `{stream index, entry id, job, deliveries}` per entry taken.
const RECLAIM: &str = r"
local out = {}
for i = 1, 3 do
  local r = redis.pcall('XAUTOCLAIM', KEYS[i], 'tradsys', ARGV[1], ARGV[2], '0-0', 'COUNT', ARGV[3])
  if type(r) == 'table' and r.err == nil then
    for _, e in ipairs(r[2]) do
      if e[2] then
        local p = redis.call('XPENDING', KEYS[i], 'tradsys', e[1], e[1], 1)
        table.insert(out, {i, e[1], e[2][2], p[1][4]})
      end
    end
  end
end
return out
";

/// `KEYS`: the dead-letter stream, the job's stream. `ARGV`: the dead
/// letter's id, the job's JSON. Returns 1, or 0 when no such dead letter.
const REQUEUE: &str = r"
if redis.call('XDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.pcall('XGROUP', 'CREATE', KEYS[2], 'tradsys', '0', 'MKSTREAM')
redis.call('XADD', KEYS[2], '*', 'job', ARGV[2])
return 1
";

/// `KEYS`: the high stream, then each event's account list. `ARGV`: the
/// most events an account may have waiting, then for each event its body
/// and the job that delivers its account's events. Checks every bound
/// first: all are added, or none (-1).
const PUSH_EVENTS: &str = r"
local max = tonumber(ARGV[1])
local adding = {}
for i = 2, #KEYS do
  adding[KEYS[i]] = (adding[KEYS[i]] or redis.call('LLEN', KEYS[i])) + 1
  if adding[KEYS[i]] > max then return -1 end
end
redis.pcall('XGROUP', 'CREATE', KEYS[1], 'tradsys', '0', 'MKSTREAM')
for i = 2, #KEYS do
  if redis.call('RPUSH', KEYS[i], ARGV[2 * i - 2]) == 1 then
    redis.call('XADD', KEYS[1], '*', 'job', ARGV[2 * i - 1])
  end
end
return #KEYS - 1
";

/// `KEYS`: the account's events, the high stream, the dead letters.
/// `ARGV`: the next job, the dead letter's job ('' when delivered), its
/// error, dead letters kept. The oldest event goes; the next job is queued
/// when more wait. Returns the events still waiting.
const NEXT_EVENT: &str = r"
redis.call('LPOP', KEYS[1])
if ARGV[2] ~= '' then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*', 'job', ARGV[2], 'error', ARGV[3], 'failed_ms', now)
end
local left = redis.call('LLEN', KEYS[1])
if left > 0 then
  redis.pcall('XGROUP', 'CREATE', KEYS[2], 'tradsys', '0', 'MKSTREAM')
  redis.call('XADD', KEYS[2], '*', 'job', ARGV[1])
end
return left
";

/// `KEYS`: high, normal, low, delayed, dead. Returns `{len high, len
/// normal, len low, pending high, pending normal, pending low, oldest age
/// ms, delayed, dead}`.
const STATS: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {0, 0, 0, 0, 0, 0}
local oldest = 0
for i = 1, 3 do
  out[i] = redis.call('XLEN', KEYS[i])
  local p = redis.pcall('XPENDING', KEYS[i], 'tradsys')
  if type(p) == 'table' and p.err == nil then out[i + 3] = p[1] end
  local first = redis.call('XRANGE', KEYS[i], '-', '+', 'COUNT', 1)
  if #first > 0 then
    local ms = tonumber(string.match(first[1][1], '^(%d+)'))
    if now - ms > oldest then oldest = now - ms end
  end
end
return {out[1], out[2], out[3], out[4], out[5], out[6], oldest, redis.call('ZCARD', KEYS[4]), redis.call('XLEN', KEYS[5])}
";

/// One worker's handle on the shared queue.
pub(crate) struct Streams {
    redis: Redis,
    consumer: String,
    queue_max: u64,
    dead_max: u64,
    visibility_timeout_ms: u64,
    enqueue: Script,
    claim: Script,
    ack: Script,
    fail: Script,
    reclaim: Script,
    requeue: Script,
    stats: Script,
    push_events: Script,
    next_event: Script,
}

fn unavailable(e: RedisError) -> QueueError {
    QueueError::Unavailable(e.to_string())
}

fn unexpected(what: &str, reply: &Reply) -> QueueError {
    QueueError::Unavailable(format!("Redis answered {what} with {reply:?}"))
}

fn text(reply: &Reply) -> Option<String> {
    match reply {
        Reply::Bulk(bytes) => String::from_utf8(bytes.clone()).ok(),
        Reply::Status(s) => Some(s.clone()),
        _ => None,
    }
}

fn integer(reply: &Reply) -> Option<i64> {
    match reply {
        Reply::Integer(n) => Some(*n),
        _ => None,
    }
}

fn decode(json: &str) -> Result<Job, QueueError> {
    serde_json::from_str(json).map_err(|e| QueueError::Unavailable(format!("a job that does not read back: {e}")))
}

impl Streams {
    /// `consumer` names this worker in the group (unique per shard and
    /// process).
    pub(crate) fn new(redis: Redis, consumer: String, limits: &crate::config::JobsConfig) -> Streams {
        Streams {
            redis,
            consumer,
            queue_max: limits.queue_max,
            dead_max: limits.dead_max,
            visibility_timeout_ms: limits.visibility_timeout_ms,
            enqueue: Script::new(ENQUEUE),
            claim: Script::new(CLAIM),
            ack: Script::new(ACK),
            fail: Script::new(FAIL),
            reclaim: Script::new(RECLAIM),
            requeue: Script::new(REQUEUE),
            stats: Script::new(STATS),
            push_events: Script::new(PUSH_EVENTS),
            next_event: Script::new(NEXT_EVENT),
        }
    }

    pub(crate) async fn enqueue(&self, job: &Job) -> Result<(), QueueError> {
        let json = serde_json::to_string(job).map_err(|e| QueueError::Unavailable(e.to_string()))?;
        let stream = STREAMS[job.priority.index()];
        let reply = self
            .enqueue
            .run(&self.redis, &[stream], &[json, self.queue_max.to_string()])
            .await
            .map_err(unavailable)?;
        match reply {
            Reply::Bulk(_) => Ok(()),
            Reply::Nil => Err(QueueError::Full(self.queue_max)),
            other => Err(unexpected("XADD", &other)),
        }
    }

    pub(crate) async fn claim(&self) -> Result<Option<Claimed>, QueueError> {
        let keys = [STREAMS[0], STREAMS[1], STREAMS[2], DELAYED];
        let args = [self.consumer.clone(), PROMOTE_MAX.to_string()];
        let reply = self.claim.run(&self.redis, &keys, &args).await.map_err(unavailable)?;
        let items = match &reply {
            Reply::Nil => return Ok(None),
            Reply::Array(items) => items,
            other => return Err(unexpected("the claim", other)),
        };
        match items.as_slice() {
            [index, id, json] => {
                let (Some(index), Some(id), Some(json)) = (integer(index), text(id), text(json)) else {
                    return Err(unexpected("the claim", &reply));
                };
                let job = decode(&json)?;
                Ok(Some(Claimed {
                    receipt: receipt(index, &id),
                    job,
                }))
            }
            _ => Err(unexpected("the claim", &reply)),
        }
    }

    pub(crate) async fn ack(&self, claimed: &Claimed) -> Result<(), QueueError> {
        let (stream, id) = parse_receipt(&claimed.receipt)?;
        self.ack
            .run(&self.redis, &[stream], &[id.to_string()])
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    pub(crate) async fn fail(
        &self,
        claimed: &Claimed,
        error: &str,
        delay_ms: u64,
        attempts_max: u32,
    ) -> Result<bool, QueueError> {
        let (stream, id) = parse_receipt(&claimed.receipt)?;
        let mut job = claimed.job.clone();
        job.attempts += 1;
        let json = serde_json::to_string(&job).map_err(|e| QueueError::Unavailable(e.to_string()))?;
        let args = [
            id.to_string(),
            json,
            job.attempts.to_string(),
            attempts_max.to_string(),
            delay_ms.to_string(),
            error.to_string(),
            self.dead_max.to_string(),
        ];
        let reply = self
            .fail
            .run(&self.redis, &[stream, DELAYED, DEAD], &args)
            .await
            .map_err(unavailable)?;
        match reply {
            Reply::Integer(dead) => Ok(dead == 1),
            other => Err(unexpected("the failure", &other)),
        }
    }

    pub(crate) async fn reclaim(&self) -> Result<Vec<Claimed>, QueueError> {
        let args = [
            self.consumer.clone(),
            self.visibility_timeout_ms.to_string(),
            RECLAIM_MAX.to_string(),
        ];
        let reply = self
            .reclaim
            .run(&self.redis, &STREAMS, &args)
            .await
            .map_err(unavailable)?;
        let Reply::Array(entries) = &reply else {
            return Err(unexpected("XAUTOCLAIM", &reply));
        };
        let mut claimed = Vec::with_capacity(entries.len());
        for entry in entries {
            let Reply::Array(fields) = entry else {
                return Err(unexpected("XAUTOCLAIM", &reply));
            };
            let [index, id, json, deliveries] = fields.as_slice() else {
                return Err(unexpected("XAUTOCLAIM", &reply));
            };
            let (Some(index), Some(id), Some(json), Some(deliveries)) =
                (integer(index), text(id), text(json), integer(deliveries))
            else {
                return Err(unexpected("XAUTOCLAIM", &reply));
            };
            let mut job = decode(&json)?;
            // Each delivery that did not end in an ack or a failure was a
            // worker that died with the job.
            job.attempts += u32::try_from(deliveries.saturating_sub(1)).unwrap_or(u32::MAX);
            claimed.push(Claimed {
                receipt: receipt(index, &id),
                job,
            });
        }
        Ok(claimed)
    }

    pub(crate) async fn dead_letters(&self, count: usize) -> Result<Vec<DeadLetter>, QueueError> {
        let count = count.to_string();
        let reply = self
            .redis
            .call(&[b"XRANGE", DEAD.as_bytes(), b"-", b"+", b"COUNT", count.as_bytes()])
            .await
            .map_err(unavailable)?;
        let Reply::Array(entries) = &reply else {
            return Err(unexpected("XRANGE", &reply));
        };
        entries
            .iter()
            .map(|entry| dead_letter(entry).ok_or_else(|| unexpected("XRANGE", &reply)))
            .collect()
    }

    pub(crate) async fn requeue(&self, id: &str) -> Result<bool, QueueError> {
        let reply = self
            .redis
            .call(&[b"XRANGE", DEAD.as_bytes(), id.as_bytes(), id.as_bytes()])
            .await
            .map_err(unavailable)?;
        let letter = match &reply {
            Reply::Array(entries) => match entries.first() {
                None => return Ok(false),
                Some(entry) => dead_letter(entry).ok_or_else(|| unexpected("XRANGE", &reply))?,
            },
            // Not an entry id at all.
            Reply::Error(_) => return Ok(false),
            other => return Err(unexpected("XRANGE", other)),
        };
        let mut job = letter.job;
        job.attempts = 0;
        let json = serde_json::to_string(&job).map_err(|e| QueueError::Unavailable(e.to_string()))?;
        let reply = self
            .requeue
            .run(
                &self.redis,
                &[DEAD, STREAMS[job.priority.index()]],
                &[id.to_string(), json],
            )
            .await
            .map_err(unavailable)?;
        Ok(reply == Reply::Integer(1))
    }

    pub(crate) async fn push_events(&self, events: &[(u64, String, Job)]) -> Result<(), QueueError> {
        let mut keys = Vec::with_capacity(events.len() + 1);
        keys.push(STREAMS[0].to_string());
        let mut args = Vec::with_capacity(2 * events.len() + 1);
        args.push(self.queue_max.to_string());
        for (user, event, job) in events {
            keys.push(events_key(*user));
            args.push(event.clone());
            args.push(serde_json::to_string(job).map_err(|e| QueueError::Unavailable(e.to_string()))?);
        }
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let reply = self
            .push_events
            .run(&self.redis, &keys, &args)
            .await
            .map_err(unavailable)?;
        match reply {
            Reply::Integer(-1) => Err(QueueError::Full(self.queue_max)),
            Reply::Integer(_) => Ok(()),
            other => Err(unexpected("RPUSH", &other)),
        }
    }

    pub(crate) async fn head_event(&self, user: u64) -> Result<Option<String>, QueueError> {
        let key = events_key(user);
        let reply = self
            .redis
            .call(&[b"LINDEX", key.as_bytes(), b"0"])
            .await
            .map_err(unavailable)?;
        match reply {
            Reply::Nil => Ok(None),
            reply => text(&reply).map(Some).ok_or_else(|| unexpected("LINDEX", &reply)),
        }
    }

    pub(crate) async fn next_event(&self, user: u64, next: &Job, dead: Option<(&Job, &str)>) -> Result<(), QueueError> {
        let encode = |job: &Job| serde_json::to_string(job).map_err(|e| QueueError::Unavailable(e.to_string()));
        let key = events_key(user);
        let (dead_job, error) = match dead {
            Some((job, error)) => (encode(job)?, error.to_string()),
            None => (String::new(), String::new()),
        };
        let args = [encode(next)?, dead_job, error, self.dead_max.to_string()];
        let reply = self
            .next_event
            .run(&self.redis, &[&key, STREAMS[0], DEAD], &args)
            .await
            .map_err(unavailable)?;
        match reply {
            Reply::Integer(_) => Ok(()),
            other => Err(unexpected("LPOP", &other)),
        }
    }

    pub(crate) async fn stats(&self) -> Result<QueueStats, QueueError> {
        let keys = [STREAMS[0], STREAMS[1], STREAMS[2], DELAYED, DEAD];
        let reply = self.stats.run(&self.redis, &keys, &[]).await.map_err(unavailable)?;
        let numbers: Option<Vec<u64>> = match &reply {
            Reply::Array(items) => items.iter().map(|i| integer(i).map(|n| n.max(0) as u64)).collect(),
            _ => None,
        };
        match numbers.as_deref() {
            // A stream holds its waiting and running jobs; the running
            // ones are pending in the group.
            Some(&[high, normal, low, run_high, run_normal, run_low, oldest_age_ms, delayed, dead]) => Ok(QueueStats {
                waiting: [
                    high.saturating_sub(run_high),
                    normal.saturating_sub(run_normal),
                    low.saturating_sub(run_low),
                ],
                running: run_high + run_normal + run_low,
                oldest_age_ms,
                delayed,
                dead,
            }),
            _ => Err(unexpected("the statistics", &reply)),
        }
    }
}

/// The list of `user`'s webhook events waiting.
fn events_key(user: u64) -> String {
    format!("tradsys:webhooks:{user}")
}

/// `high/1700000000000-0`: the stream (by its priority's name) and entry.
fn receipt(index: i64, id: &str) -> String {
    let priority = match index {
        1 => Priority::High,
        2 => Priority::Normal,
        _ => Priority::Low,
    };
    format!("{}/{id}", priority.name())
}

fn parse_receipt(receipt: &str) -> Result<(&'static str, &str), QueueError> {
    let (name, id) = receipt
        .split_once('/')
        .ok_or_else(|| QueueError::Unavailable(format!("not a receipt: {receipt}")))?;
    let stream = Priority::ALL
        .iter()
        .find(|p| p.name() == name)
        .map(|p| STREAMS[p.index()])
        .ok_or_else(|| QueueError::Unavailable(format!("not a receipt: {receipt}")))?;
    Ok((stream, id))
}

/// One entry of the dead-letter stream.
fn dead_letter(entry: &Reply) -> Option<DeadLetter> {
    let Reply::Array(parts) = entry else { return None };
    let [id, Reply::Array(fields)] = parts.as_slice() else {
        return None;
    };
    let mut letter = DeadLetter {
        id: text(id)?,
        job: Job {
            id: String::new(),
            kind: super::JobKind::Export,
            priority: Priority::Low,
            payload: String::new(),
            attempts: 0,
            enqueued_ms: 0,
        },
        error: String::new(),
        failed_ms: 0,
    };
    for pair in fields.chunks(2) {
        let [name, value] = pair else { return None };
        let value = text(value)?;
        match text(name)?.as_str() {
            "job" => letter.job = serde_json::from_str(&value).ok()?,
            "error" => letter.error = value,
            "failed_ms" => letter.failed_ms = value.parse().ok()?,
            _ => {}
        }
    }
    (!letter.job.id.is_empty()).then_some(letter)
}
