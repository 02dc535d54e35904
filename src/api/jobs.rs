//! The background jobs' work and the user endpoints that start it.
//!
//! **Trade history exports** (outside Binance's paths, signed like
//! USER_DATA):
//!
//! - `POST /tradsys/v1/export` (`startTime`, `endTime`, optional
//!   `symbol`): queues an export of the user's trades and answers
//!   `{"exportId","status":"PENDING"}` at once. At most
//!   `exports_per_user_max` exports of a user wait or run at once (more:
//!   429 -1003).
//! - `GET /tradsys/v1/export` (`exportId`): its status, PENDING, RUNNING,
//!   DONE (with `rows` and `bytes`) or FAILED (with `error`).
//! - `GET /tradsys/v1/export/download` (`exportId`): the CSV, streamed from
//!   the file the job wrote, once DONE.
//!
//! An export is a status file `<export_dir>/<id>.json` written when it is
//! asked for, and the job that reads the history store page by page
//! (`store::export`) into `<id>.csv` (written beside, synced, renamed),
//! then marks the status DONE. The status file is the record: a job whose
//! status file is gone (expired) has nothing to do, and a repeated job
//! (its worker died after the work) writes the same file again. Files
//! older than `export_ttl_ms` are removed by [`sweep`].
//!
//! **Daily reports**: the history store's statistics views, refreshed by
//! a job that shard 0 queues every `history_statistics_interval_s`.

use crate::api::export::{render, Format, TRADES_CSV_HEADER};
use crate::api::host::Host;
use crate::api::params::{bad_symbol, u64_param};
use crate::api::peer::{PeerCall, PeerReply};
use crate::api::request::RestReply;
use crate::binance;
use crate::config::JobsConfig;
use crate::http::{HttpError, Params};
use crate::jobs::worker::{Finished, Handler};
use crate::jobs::{Job, JobKind, Priority, QueueError};
use crate::json::JsonWriter;
use crate::store::export::{Cursor, ExportQuery, Table};
use crate::store::shard::ShardStore;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use tradsys_engine::order::UserId;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub(crate) enum ExportState {
    Pending,
    Running,
    Done,
    Failed,
}

impl ExportState {
    fn name(self) -> &'static str {
        match self {
            ExportState::Pending => "PENDING",
            ExportState::Running => "RUNNING",
            ExportState::Done => "DONE",
            ExportState::Failed => "FAILED",
        }
    }
}

/// An export's record, as its status file holds it and the status
/// endpoint shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ExportStatus {
    pub(crate) export_id: String,
    pub(crate) status: ExportState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) symbol: Option<String>,
    pub(crate) start_time: Option<u64>,
    pub(crate) end_time: Option<u64>,
    pub(crate) created_time: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) finished_time: Option<u64>,
    pub(crate) rows: u64,
    pub(crate) bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
    /// Whose trades, and the shard that owns them (not shown; the status
    /// file keeps them beside).
    #[serde(skip_serializing, default)]
    pub(crate) user_id: UserId,
    #[serde(skip_serializing, default)]
    pub(crate) owner: u32,
}

/// What the status file holds: the status and the fields it hides.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StatusFile {
    #[serde(flatten)]
    status: ExportStatus,
    user_id: UserId,
    owner: u32,
}

fn status_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.json"))
}

pub(crate) fn csv_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.csv"))
}

/// An export id names a file: letters and digits only.
fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn read_status(dir: &Path, id: &str) -> Result<Option<ExportStatus>, String> {
    let text = match std::fs::read(status_path(dir, id)) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", status_path(dir, id).display())),
    };
    let file: StatusFile = serde_json::from_slice(&text).map_err(|e| format!("export {id}: {e}"))?;
    Ok(Some(ExportStatus {
        user_id: file.user_id,
        owner: file.owner,
        ..file.status
    }))
}

/// Writes `status` beside its file, synced, and renames it over.
fn write_status(dir: &Path, status: &ExportStatus) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let file = StatusFile {
        status: status.clone(),
        user_id: status.user_id,
        owner: status.owner,
    };
    let bytes = serde_json::to_vec(&file).map_err(|e| e.to_string())?;
    let path = status_path(dir, &status.export_id);
    let fresh = path.with_extension("json.new");
    let mut out = std::fs::File::create(&fresh).map_err(|e| format!("{}: {e}", fresh.display()))?;
    out.write_all(&bytes)
        .and_then(|()| out.sync_data())
        .map_err(|e| format!("{}: {e}", fresh.display()))?;
    std::fs::rename(&fresh, &path).map_err(|e| format!("{}: {e}", path.display()))
}

fn unknown_export() -> HttpError {
    HttpError::new(400, binance::NO_SUCH_ORDER, "Unknown export.")
}

fn export_id_param<'p>(params: &'p Params<'_>) -> Result<&'p str, HttpError> {
    match params.get("exportId") {
        None | Some("") => Err(HttpError::new(
            400,
            binance::MANDATORY_PARAM_EMPTY_OR_MALFORMED,
            "Mandatory parameter 'exportId' was not sent, was empty/null, or malformed.",
        )),
        Some(id) if valid_id(id) => Ok(id),
        Some(_) => Err(unknown_export()),
    }
}

/// The user's export `id`, or -2013 when there is none (another user's
/// export is none either).
fn own_export(dir: &Path, id: &str, user: UserId) -> Result<ExportStatus, HttpError> {
    match read_status(dir, id) {
        Ok(Some(status)) if status.user_id == user => Ok(status),
        Ok(_) => Err(unknown_export()),
        Err(e) => Err(HttpError::new(
            500,
            binance::UNKNOWN,
            format!("Export status unreadable: {e}"),
        )),
    }
}

/// `POST /tradsys/v1/export`.
pub(crate) async fn create(
    shard: &impl Host,
    params: &Params<'_>,
    user: UserId,
    now_ms: u64,
) -> Result<Vec<u8>, HttpError> {
    if shard.history().is_none() {
        return Err(HttpError::new(
            404,
            binance::UNSUPPORTED_OPERATION,
            "Exports read the history store, which is off on this server (history = off).",
        ));
    }
    let symbol = match params.get("symbol") {
        None | Some("") => None,
        Some(symbol) if shard.trading().market(symbol).is_some() => Some(symbol.to_string()),
        Some(_) => return Err(bad_symbol()),
    };
    let start_time = u64_param(params, "startTime")?;
    let end_time = u64_param(params, "endTime")?;
    if let (Some(start), Some(end)) = (start_time, end_time) {
        if start > end {
            return Err(HttpError::new(
                400,
                binance::OPTIONAL_PARAMS_BAD_COMBO,
                "startTime must not be after endTime.",
            ));
        }
    }
    let config = shard.jobs_config();
    let dir = &config.export_dir;
    // The user's exports that still wait or run.
    // A user whose exports all ended leaves the map: it holds only users
    // with exports waiting or running.
    let open = {
        let mut open = shard.open_exports();
        let count = open.get_mut(&user).map_or(0, |ids| {
            ids.retain(|id| {
                matches!(
                    read_status(dir, id),
                    Ok(Some(ExportStatus {
                        status: ExportState::Pending | ExportState::Running,
                        ..
                    }))
                )
            });
            ids.len()
        });
        if count == 0 {
            open.remove(&user);
        }
        count
    };
    if open >= config.exports_per_user_max as usize {
        return Err(HttpError::new(
            429,
            binance::TOO_MANY_REQUESTS,
            format!(
                "Too many exports in progress; at most {} per user. Try again when one is done.",
                config.exports_per_user_max
            ),
        ));
    }
    let id = shard.new_job_id();
    let status = ExportStatus {
        export_id: id.clone(),
        status: ExportState::Pending,
        symbol,
        start_time,
        end_time,
        created_time: now_ms,
        finished_time: None,
        rows: 0,
        bytes: 0,
        error: None,
        user_id: user,
        owner: shard.trading().user_shard(user),
    };
    write_status(dir, &status).map_err(|e| HttpError::new(500, binance::UNKNOWN, format!("Export not queued: {e}")))?;
    let job = Job {
        id: id.clone(),
        kind: JobKind::Export,
        priority: Priority::Normal,
        payload: id.clone(),
        attempts: 0,
        enqueued_ms: now_ms,
    };
    let queued = match shard.jobs() {
        Some(queue) => queue.enqueue(&job).await,
        None => Err(QueueError::Unavailable("no job queue on this server".into())),
    };
    if let Err(e) = queued {
        let _ = std::fs::remove_file(status_path(dir, &id));
        return Err(queue_error(e));
    }
    shard.open_exports().entry(user).or_default().push(id.clone());
    let mut w = JsonWriter::with_capacity(96);
    w.begin_object()
        .field_str("exportId", &id)
        .field_str("status", "PENDING")
        .end_object();
    Ok(w.into_bytes())
}

fn queue_error(e: QueueError) -> HttpError {
    match e {
        QueueError::Full(_) => HttpError::new(503, binance::SERVER_BUSY, format!("{e}; try again later.")),
        QueueError::Unavailable(_) => HttpError::new(503, binance::DISCONNECTED, format!("{e}; try again later.")),
    }
}

/// `GET /tradsys/v1/export`.
pub(crate) fn status(shard: &impl Host, params: &Params<'_>, user: UserId) -> Result<Vec<u8>, HttpError> {
    let id = export_id_param(params)?;
    let status = own_export(&shard.jobs_config().export_dir, id, user)?;
    serde_json::to_vec(&status).map_err(|e| HttpError::new(500, binance::UNKNOWN, e.to_string()))
}

/// `GET /tradsys/v1/export/download`: the CSV file's path, for the
/// connection's shard to stream.
pub(crate) fn download(shard: &impl Host, params: &Params<'_>, user: UserId) -> Result<Vec<u8>, HttpError> {
    let id = export_id_param(params)?;
    let dir = &shard.jobs_config().export_dir;
    let status = own_export(dir, id, user)?;
    if status.status != ExportState::Done {
        return Err(HttpError::new(
            400,
            binance::OPTIONAL_PARAMS_BAD_COMBO,
            format!("Export {id} is not done; its status is {}.", status.status.name()),
        ));
    }
    Ok(csv_path(dir, id).into_os_string().into_encoded_bytes())
}

/// Runs the jobs of a worker: with the history store it reads exports
/// from, the export directory, the queue (webhook events wait there) and
/// the worker's connections to webhook receivers.
pub(crate) struct Runner<'a> {
    pub(crate) store: Option<&'a ShardStore>,
    pub(crate) config: &'a JobsConfig,
    pub(crate) queue: &'a crate::jobs::Queue,
    pub(crate) pool: crate::jobs::webhook::Pool,
}

impl Handler for Runner<'_> {
    async fn run(&self, job: &Job) -> Result<Finished, String> {
        match job.kind {
            JobKind::Export => self.export(job).await.map(|()| Finished::Done),
            JobKind::DailyReport => {
                let store = self.store.ok_or("no history store here")?;
                store
                    .upkeep(crate::clock::now_ms(), crate::store::shard::PARTITIONS_AHEAD_MONTHS + 1)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(Finished::Done)
            }
            JobKind::Webhook => {
                let config = self.config;
                crate::jobs::webhook::run(
                    self.queue,
                    &self.pool,
                    job,
                    config.attempts_max,
                    config.webhook_timeout_ms,
                )
                .await
            }
        }
    }
}

impl Runner<'_> {
    async fn export(&self, job: &Job) -> Result<(), String> {
        let dir = &self.config.export_dir;
        let id = job.payload.as_str();
        if !valid_id(id) {
            return Err(format!("not an export id: {id:?}"));
        }
        let Some(mut status) = read_status(dir, id)? else {
            // Expired and swept before it ran: nothing to do.
            return Ok(());
        };
        if status.status == ExportState::Done {
            return Ok(());
        }
        status.status = ExportState::Running;
        write_status(dir, &status)?;
        match self.write_csv(&mut status).await {
            Ok(()) => {
                status.status = ExportState::Done;
                status.error = None;
                status.finished_time = Some(crate::clock::now_ms());
                write_status(dir, &status)
            }
            Err(error) => {
                // The last attempt: the export failed for good.
                if job.attempts + 1 >= self.config.attempts_max {
                    status.status = ExportState::Failed;
                    status.error = Some(error.clone());
                    status.finished_time = Some(crate::clock::now_ms());
                    write_status(dir, &status)?;
                }
                Err(error)
            }
        }
    }

    /// Writes the export's CSV beside its place, synced, and renames it
    /// there; counts its rows and bytes into `status`.
    async fn write_csv(&self, status: &mut ExportStatus) -> Result<(), String> {
        let store = self.store.ok_or("no history store here")?;
        let dir = &self.config.export_dir;
        let path = csv_path(dir, &status.export_id);
        let part = path.with_extension("csv.part");
        let query = ExportQuery {
            user: status.user_id,
            symbol: status.symbol.clone(),
            start_ms: status.start_time,
            end_ms: status.end_time,
        };
        let mut cursor = Cursor::open(store, status.owner, Table::Trades, query)
            .await
            .map_err(|e| e.to_string())?;
        let mut out = std::fs::File::create(&part).map_err(|e| format!("{}: {e}", part.display()))?;
        let io = |e: std::io::Error| format!("{}: {e}", part.display());
        out.write_all(TRADES_CSV_HEADER.as_bytes()).map_err(io)?;
        let (mut rows, mut bytes) = (0, TRADES_CSV_HEADER.len() as u64);
        let mut chunk = JsonWriter::with_capacity(1 << 16);
        while let Some(page) = cursor.next_page().await.map_err(|e| e.to_string())? {
            chunk.buf.clear();
            render(&mut chunk, Format::Csv, &page);
            out.write_all(chunk.buf.as_bytes()).map_err(io)?;
            rows += page.len() as u64;
            bytes += chunk.buf.len() as u64;
        }
        out.sync_data().map_err(io)?;
        std::fs::rename(&part, &path).map_err(|e| format!("{}: {e}", path.display()))?;
        status.rows = rows;
        status.bytes = bytes;
        Ok(())
    }
}

/// Removes exports finished more than `ttl_ms` ago (their status and
/// file) and files left half-written by a process that stopped.
pub(crate) fn sweep(dir: &Path, ttl_ms: u64, now_ms: u64) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(id) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".json"))
        else {
            continue;
        };
        let expired = match read_status(dir, id) {
            Ok(Some(status)) => status.finished_time.is_some_and(|t| t + ttl_ms <= now_ms),
            _ => false,
        };
        if expired {
            let _ = std::fs::remove_file(csv_path(dir, id));
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// What the admin API asks of a shard's job queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum JobsCall {
    /// The queue's figures and up to [`DEAD_LETTERS_LISTED_MAX`] dead
    /// letters.
    Show,
    /// Re-queues a dead letter; 404 when the queue has no such letter.
    Requeue(String),
}

/// Dead letters one admin listing shows per queue.
pub(crate) const DEAD_LETTERS_LISTED_MAX: usize = 1000;

/// Runs `call` on this shard's queue.
pub(crate) async fn run_local(shard: &impl Host, call: JobsCall) -> RestReply {
    let Some(queue) = shard.jobs() else {
        return RestReply::error(&HttpError::new(
            503,
            binance::DISCONNECTED,
            "No job queue on this shard.",
        ));
    };
    let result = match call {
        JobsCall::Show => show(queue, shard.index()).await,
        JobsCall::Requeue(id) => match queue.requeue(&id).await {
            Ok(true) => Ok(b"{\"requeued\":true}".to_vec()),
            Ok(false) => Err(HttpError::new(
                404,
                binance::UNSUPPORTED_OPERATION,
                "Unknown dead letter.",
            )),
            Err(e) => Err(queue_error(e)),
        },
    };
    match result {
        Ok(body) => RestReply::json(body),
        Err(e) => RestReply::error(&e),
    }
}

/// One queue as the admin API shows it.
async fn show(queue: &crate::jobs::Queue, shard: usize) -> Result<Vec<u8>, HttpError> {
    let stats = queue.stats().await.map_err(queue_error)?;
    let dead = queue.dead_letters(DEAD_LETTERS_LISTED_MAX).await.map_err(queue_error)?;
    let mut w = JsonWriter::with_capacity(256 + dead.len() * 256);
    w.begin_object().field_uint("shard", shard as u64).field_str(
        "queue",
        match queue {
            crate::jobs::Queue::Redis(_) => "redis",
            crate::jobs::Queue::Local(_) => "local",
        },
    );
    w.key("waiting").begin_object();
    for (priority, count) in Priority::ALL.iter().zip(stats.waiting) {
        w.field_uint(priority.name(), count);
    }
    w.end_object()
        .field_uint("running", stats.running)
        .field_uint("delayed", stats.delayed)
        .field_uint("dead", stats.dead)
        .field_uint("oldestAgeMs", stats.oldest_age_ms);
    w.key("deadLetters").begin_array();
    for letter in &dead {
        w.begin_object()
            .field_str("id", &letter.id)
            .field_str("jobId", &letter.job.id)
            .field_str(
                "kind",
                match letter.job.kind {
                    JobKind::Export => "export",
                    JobKind::DailyReport => "daily_report",
                    JobKind::Webhook => "webhook",
                },
            )
            .field_str("priority", letter.job.priority.name())
            .field_uint("attempts", u64::from(letter.job.attempts))
            .field_str("error", &letter.error)
            .field_uint("failedTime", letter.failed_ms)
            .field_uint("enqueuedTime", letter.job.enqueued_ms)
            .end_object();
    }
    w.end_array().end_object();
    Ok(w.into_bytes())
}

/// The shards whose queues the admin API reads: with Redis one queue is
/// every shard's (this one reads it), without it each shard has its own.
fn queue_shards(shard: &impl Host) -> Vec<usize> {
    match shard.jobs() {
        Some(crate::jobs::Queue::Local(_)) => (0..shard.shards()).collect(),
        _ => vec![shard.index()],
    }
}

async fn on_shard(shard: &impl Host, to: usize, call: JobsCall) -> RestReply {
    if to == shard.index() {
        return run_local(shard, call).await;
    }
    match shard.call(to, PeerCall::Jobs(call)).await {
        Ok(PeerReply::Jobs(reply)) => *reply,
        _ => RestReply::error(&HttpError::new(503, binance::DISCONNECTED, binance::MSG_INTERNAL)),
    }
}

/// `GET /admin/v1/jobs`: each queue's figures and dead letters, as a
/// JSON array (one entry with Redis, one per shard without).
pub(crate) async fn admin_jobs(shard: &impl Host) -> RestReply {
    let mut body = b"[".to_vec();
    for (i, to) in queue_shards(shard).into_iter().enumerate() {
        let reply = on_shard(shard, to, JobsCall::Show).await;
        if reply.status != 200 {
            return reply;
        }
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(&reply.body);
    }
    body.push(b']');
    RestReply::json(body)
}

/// `POST /admin/v1/jobs/dead/{id}/requeue`: the dead letter runs again,
/// from no attempts.
pub(crate) async fn admin_requeue(shard: &impl Host, id: &str) -> Result<RestReply, HttpError> {
    if id.is_empty() || id.len() > 128 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(HttpError::new(
            404,
            binance::UNSUPPORTED_OPERATION,
            "Unknown dead letter.",
        ));
    }
    let mut last = None;
    for to in queue_shards(shard) {
        let reply = on_shard(shard, to, JobsCall::Requeue(id.to_string())).await;
        if reply.status != 404 {
            return Ok(reply);
        }
        last = Some(reply);
    }
    Ok(last.unwrap_or_else(|| {
        RestReply::error(&HttpError::new(
            404,
            binance::UNSUPPORTED_OPERATION,
            "Unknown dead letter.",
        ))
    }))
}
