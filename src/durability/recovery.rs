//! Start-up recovery and the snapshots taken while running.
//!
//! Both rebuild shard states the same way: load the newest complete
//! snapshot set of the generation, then replay every shard's journal up to
//! a cut — at start-up the minimum sealed epoch found on disk, for a
//! snapshot the global durable epoch of the running server. Each shard is
//! replayed alone from its own records (its inputs, including the engine
//! messages it received), so a shard's replay does not need the others.
//! Engine messages sent before the cut but journaled by their receiver
//! after it (or never) are "in flight": a snapshot keeps them; recovery
//! delivers them and runs every shard until nothing is left in flight.
//! Recovery then writes the quiet state as the next generation (in the
//! current shard layout, repartitioning users and markets if the number of
//! shards changed) and deletes the old one.

use super::image::{InFlight, ReplayShard, ShardImage, Tap, IN_FLIGHT_KEPT_PER_LINK_MAX};
use super::snapshot::{self, Snapshot, SnapshotError, SnapshotHeader};
use crate::journal::{self, JournalError};
use crate::trading::record;
use crate::trading::{market_shards, DEMO_USER_ID};
use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tradsys_engine::account::{owner_of, Accounts};
use tradsys_engine::market::MarketSpec;

#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error("{0}")]
    Snapshot(#[from] SnapshotError),
    #[error("{0}")]
    Journal(#[from] JournalError),
    #[error("{file}: record {lsn}: {problem}")]
    Record { file: PathBuf, lsn: u64, problem: String },
    #[error("{0}")]
    Layout(String),
}

/// The state to start the shards with.
pub struct Recovered {
    pub generation: u64,
    pub images: Vec<ShardImage>,
    /// Whether there was no state at all (a new data directory).
    pub fresh: bool,
    pub report: RecoveryReport,
}

/// What recovery did, for the start-up log and the benchmark.
#[derive(Clone, Debug, Default)]
pub struct RecoveryReport {
    pub records_replayed: u64,
    pub messages_redelivered: u64,
    pub replay_time: Duration,
    pub total_time: Duration,
    pub shards_before: u32,
    pub cut: u64,
    /// Torn journal tails that were dropped, as warnings.
    pub warnings: Vec<String>,
}

/// Shards rebuilt up to a cut, with what was still in flight there.
struct Replayed {
    shards: Vec<ReplayShard>,
    /// Per sender: messages its receiver had not journaled by the cut.
    in_flight: Vec<Vec<InFlight>>,
    cut: u64,
    /// The newest snapshot set's cut.
    base_cut: u64,
    records: u64,
    warnings: Vec<String>,
}

/// Makes the tap of shard `shard` of generation `generation` (see `Tap`).
pub type TapMaker<'a> = dyn Fn(u64, u32) -> Box<dyn Tap> + Sync + 'a;

/// Recovers the data directory's state for `shards` shards and makes it
/// the first snapshot set of a new generation.
pub fn recover(data_dir: &Path, shards: u32, specs: &[MarketSpec]) -> Result<Recovered, RecoveryError> {
    recover_with(data_dir, shards, specs, None, &mut |_| Ok(()))
}

/// `recover`, handing every input the replay runs to a tap made by `taps`
/// and calling `before_switch` with the taps once the old state is
/// replayed and quiet, before the new generation replaces it: the history
/// store absorbs the old generation's rows there, while its journal still
/// exists.
pub fn recover_with(
    data_dir: &Path,
    shards: u32,
    specs: &[MarketSpec],
    taps: Option<&TapMaker<'_>>,
    before_switch: &mut dyn FnMut(Vec<Box<dyn Tap>>) -> Result<(), String>,
) -> Result<Recovered, RecoveryError> {
    let started = Instant::now();
    std::fs::create_dir_all(data_dir).map_err(|source| SnapshotError::Io {
        path: data_dir.to_path_buf(),
        source,
    })?;
    let mut report = RecoveryReport::default();
    let (images, generation, fresh) = match snapshot::read_current(data_dir)? {
        None => {
            let images = (0..shards)
                .map(|i| ReplayShard::fresh(i, shards, specs.to_vec()).into_image())
                .collect();
            (images, 1, true)
        }
        Some((generation, before)) => {
            let replay_started = Instant::now();
            let mut replayed = replay(data_dir, generation, before, specs, None, taps)?;
            report.records_replayed = replayed.records;
            report.cut = replayed.cut;
            report.shards_before = before;
            report.warnings = std::mem::take(&mut replayed.warnings);
            report.messages_redelivered = quiesce(&mut replayed)?;
            report.replay_time = replay_started.elapsed();
            let tapped = replayed.shards.iter_mut().filter_map(|s| s.tap.take()).collect();
            before_switch(tapped).map_err(RecoveryError::Layout)?;
            let mut images: Vec<ShardImage> = replayed.shards.into_iter().map(ReplayShard::into_image).collect();
            if before != shards {
                images = repartition(images, shards, specs)?;
            }
            for image in &mut images {
                // Nothing is in flight any more: the new generation's links start over.
                image.trading.sent_seq = vec![0; shards as usize];
                image.trading.received_seq = vec![0; shards as usize];
            }
            (images, generation + 1, false)
        }
    };
    start_generation(data_dir, generation, shards, &images)?;
    report.total_time = started.elapsed();
    Ok(Recovered {
        generation,
        images,
        fresh,
        report,
    })
}

/// Writes `images` as generation `generation`, points CURRENT at it and
/// deletes every other generation.
fn start_generation(data_dir: &Path, generation: u64, shards: u32, images: &[ShardImage]) -> Result<(), RecoveryError> {
    for (i, image) in images.iter().enumerate() {
        let dir = snapshot::generation_dir(data_dir, i as u32, generation);
        // A previous attempt at this generation may have left files behind.
        remove_dir(&dir)?;
        let header = SnapshotHeader {
            cut: 0,
            covered_lsn: 0,
            shard: i as u32,
            shards,
        };
        snapshot::write_parts(&dir, header, image, &[])?;
        snapshot::sync_dir(&snapshot::shard_dir(data_dir, i as u32))?;
    }
    snapshot::write_current(data_dir, generation, shards)?;
    let entries = std::fs::read_dir(data_dir).map_err(|source| SnapshotError::Io {
        path: data_dir.to_path_buf(),
        source,
    })?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let Some(index) = name.strip_prefix("shard-").and_then(|i| i.parse::<u32>().ok()) else {
            continue;
        };
        // Only generations go: other files of a shard (its history store)
        // stay, also when the shard itself is gone.
        for old in std::fs::read_dir(entry.path()).into_iter().flatten().flatten() {
            let name = old.file_name().to_string_lossy().to_string();
            if name.starts_with("gen-") && (index >= shards || name != format!("gen-{generation}")) {
                remove_dir(&old.path())?;
            }
        }
    }
    Ok(())
}

fn remove_dir(dir: &Path) -> Result<(), RecoveryError> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(SnapshotError::Io {
            path: dir.to_path_buf(),
            source,
        }
        .into()),
    }
}

/// Loads the newest snapshot set of `generation` that every shard has
/// whole, and replays each shard's journal after it up to `cut` (default:
/// the minimum sealed epoch on disk).
fn replay(
    data_dir: &Path,
    generation: u64,
    shards: u32,
    specs: &[MarketSpec],
    cut: Option<u64>,
    taps: Option<&TapMaker<'_>>,
) -> Result<Replayed, RecoveryError> {
    let dirs: Vec<PathBuf> = (0..shards)
        .map(|i| snapshot::generation_dir(data_dir, i, generation))
        .collect();
    let (base_cut, loaded) = newest_snapshot_set(&dirs, shards)?;
    let covered: Vec<u64> = loaded.iter().map(|(header, _)| header.covered_lsn).collect();
    let mut warnings = Vec::new();
    let cut = match cut {
        Some(cut) => cut,
        None => {
            let mut cut = u64::MAX;
            // Shards are scanned and replayed in parallel, one thread each.
            let tails = in_parallel(&dirs, |_, dir| journal::scan_tail(dir));
            for tail in tails {
                let tail = tail?;
                if let Some((file, offset)) = &tail.torn {
                    warnings.push(format!(
                        "journal {}: torn record at byte {offset} truncated: it and anything after it were never acknowledged",
                        file.display()
                    ));
                }
                cut = cut.min(tail.sealed_epoch.max(base_cut));
            }
            cut
        }
    };
    let mut images: Vec<Option<ShardImage>> = Vec::with_capacity(loaded.len());
    let mut in_flight = Vec::with_capacity(loaded.len());
    for (_, snap) in loaded {
        images.push(Some(snap.image));
        in_flight.push(snap.in_flight);
    }
    let images = std::sync::Mutex::new(images);
    let replayed = in_parallel(&dirs, |i, dir| {
        let image = images.lock().map(|mut all| all[i].take()).ok().flatten();
        let image = image.ok_or_else(|| RecoveryError::Layout(format!("shard {i}: no snapshot image")))?;
        let tap = taps.map(|make| make(generation, i as u32));
        replay_shard(
            dir,
            image,
            covered[i],
            Stop {
                epoch: cut,
                lsn: u64::MAX,
            },
            specs,
            tap,
        )
    });
    let mut replay_shards = Vec::with_capacity(replayed.len());
    let mut records = 0;
    for (i, result) in replayed.into_iter().enumerate() {
        let part = result?;
        records += part.records;
        let mut shard = ReplayShard::from_image(part.image, specs.to_vec()).map_err(RecoveryError::Layout)?;
        shard.last_lsn = part.last_lsn;
        shard.tap = part.tap;
        in_flight[i].extend(part.sent);
        replay_shards.push(shard);
    }
    for (i, messages) in in_flight.iter_mut().enumerate() {
        messages.retain(|m| m.seq > replay_shards[m.to as usize].trading.received_seq(i as u32));
    }
    Ok(Replayed {
        shards: replay_shards,
        in_flight,
        cut,
        base_cut,
        records,
        warnings,
    })
}

/// One shard replayed up to the cut, in a form that can leave its thread.
struct ShardReplay {
    image: ShardImage,
    sent: Vec<InFlight>,
    last_lsn: u64,
    records: u64,
    tap: Option<Box<dyn Tap>>,
}

/// Where a replay stops: before the first record past either bound.
#[derive(Clone, Copy)]
struct Stop {
    epoch: u64,
    lsn: u64,
}

/// Replays the records of `dir` after `covered` up to `stop` into `image`.
fn replay_shard(
    dir: &Path,
    image: ShardImage,
    covered: u64,
    stop: Stop,
    specs: &[MarketSpec],
    tap: Option<Box<dyn Tap>>,
) -> Result<ShardReplay, RecoveryError> {
    let mut shard = ReplayShard::from_image(image, specs.to_vec())
        .map_err(|e| RecoveryError::Layout(format!("{}: {e}", dir.display())))?;
    shard.last_lsn = covered;
    shard.tap = tap;
    let mut records = 0;
    let mut failure = None;
    let mut scratch = rkyv::util::AlignedVec::new();
    journal::scan(dir, covered + 1, |rec| {
        if rec.epoch > stop.epoch || rec.lsn > stop.lsn {
            return ControlFlow::Break(());
        }
        match record::decode_with(rec.payload, &mut scratch) {
            Ok(decoded) => {
                shard.apply(rec.lsn, &decoded);
                records += 1;
                ControlFlow::Continue(())
            }
            Err(e) => {
                failure = Some((rec.lsn, e.to_string()));
                ControlFlow::Break(())
            }
        }
    })?;
    if let Some((lsn, problem)) = failure {
        return Err(RecoveryError::Record {
            file: dir.to_path_buf(),
            lsn,
            problem,
        });
    }
    let last_lsn = shard.last_lsn;
    let sent = shard.take_sent();
    let tap = shard.tap.take();
    Ok(ShardReplay {
        image: shard.into_image(),
        sent,
        last_lsn,
        records,
        tap,
    })
}

/// Runs `work` for every shard directory on its own thread; results in
/// shard order.
fn in_parallel<T: Send>(dirs: &[PathBuf], work: impl Fn(usize, &Path) -> T + Sync) -> Vec<T> {
    std::thread::scope(|scope| {
        let work = &work;
        let handles: Vec<_> = dirs
            .iter()
            .enumerate()
            .map(|(i, dir)| scope.spawn(move || work(i, dir)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
            .collect()
    })
}

/// The newest cut for which every shard has a valid snapshot.
fn newest_snapshot_set(dirs: &[PathBuf], shards: u32) -> Result<(u64, Vec<(SnapshotHeader, Snapshot)>), RecoveryError> {
    let mut candidates = snapshot::cuts(&dirs[0])?;
    for dir in &dirs[1..] {
        let cuts = snapshot::cuts(dir)?;
        candidates.retain(|c| cuts.contains(c));
    }
    let mut last_error = None;
    for &cut in candidates.iter().rev() {
        let loaded: Result<Vec<_>, SnapshotError> = dirs.iter().map(|dir| snapshot::read(dir, cut)).collect();
        match loaded {
            Ok(set)
                if set
                    .iter()
                    .enumerate()
                    .all(|(i, (h, _))| h.shard == i as u32 && h.shards == shards) =>
            {
                return Ok((cut, set));
            }
            Ok(_) => last_error = Some(format!("snapshot set {cut} does not match the layout")),
            Err(e) => last_error = Some(e.to_string()),
        }
    }
    Err(RecoveryError::Layout(format!(
        "{}: no complete snapshot set{}",
        dirs[0].display(),
        last_error
            .map(|e| format!(" (newest problem: {e})"))
            .unwrap_or_default()
    )))
}

/// Delivers every message in flight and what they cause, until nothing is
/// left; returns how many were delivered.
fn quiesce(replayed: &mut Replayed) -> Result<u64, RecoveryError> {
    let mut queue: VecDeque<(u32, InFlight)> = VecDeque::new();
    for (from, messages) in replayed.in_flight.iter_mut().enumerate() {
        queue.extend(messages.drain(..).map(|m| (from as u32, m)));
    }
    let shards = &mut replayed.shards;
    for shard in shards.iter_mut() {
        shard.take_sent();
    }
    let mut delivered = 0;
    while let Some((from, message)) = queue.pop_front() {
        let to = message.to as usize;
        let expected = shards[to].trading.received_seq(from) + 1;
        if message.seq != expected {
            return Err(RecoveryError::Layout(format!(
                "shard {from} to shard {to}: message {} in flight where {expected} was expected \
                 (more than {IN_FLIGHT_KEPT_PER_LINK_MAX} messages in flight on one link)",
                message.seq
            )));
        }
        shards[to].deliver(from, message);
        delivered += 1;
        queue.extend(shards[to].take_sent().into_iter().map(|m| (to as u32, m)));
    }
    Ok(delivered)
}

/// Moves quiet shard states to a layout of `shards` shards: users to
/// `owner_of`, markets to `market_shards`, and order and user ids on from
/// the highest ever given out.
fn repartition(images: Vec<ShardImage>, shards: u32, specs: &[MarketSpec]) -> Result<Vec<ShardImage>, RecoveryError> {
    // Another instance knows each shard's link by the shard's index and
    // the number of its last message: dealt out again, they would clash.
    // (What a shard received is kept: shard 0 receives for all.)
    if images
        .iter()
        .any(|image| image.trading.remote.sent_seq.iter().any(|&n| n > 0))
    {
        return Err(RecoveryError::Layout(format!(
            "this instance exchanged engine messages with other instances of its cluster as {} shards; it must \
             start with {} shards",
            images.len(),
            images.len()
        )));
    }
    let owners = market_shards(specs, shards);
    let mut merged = Merged::of(images, specs.len());
    let accounts: Vec<Accounts> = tradsys_engine::account::repartition(std::mem::take(&mut merged.machines), shards);
    let out = accounts
        .into_iter()
        .enumerate()
        .map(|(i, accounts)| merged.take_part(i as u32, shards, &owners, accounts))
        .collect();
    Ok(out)
}

/// Every shard's state taken together, before it is dealt out again.
struct Merged {
    shards_before: u64,
    books: Vec<Option<tradsys_engine::book::Book>>,
    market_data: Vec<Option<crate::marketdata::MarketData>>,
    machines: Vec<Accounts>,
    users: Vec<(tradsys_engine::order::UserId, String)>,
    keys: Vec<crate::trading::KeyImage>,
    transfers: Vec<(i128, i128)>,
    halted: Vec<bool>,
    order_id_max: u64,
    /// What shard 0 received from other instances (`trading::remote`).
    remote_received: Vec<(u32, u32, u64)>,
    countdowns: Vec<(tradsys_engine::order::UserId, tradsys_engine::order::MarketId, u64)>,
    guards: Vec<(tradsys_engine::order::UserId, u64, Vec<tradsys_engine::order::MarketId>)>,
}

impl Merged {
    fn of(images: Vec<ShardImage>, markets: usize) -> Merged {
        let mut merged = Merged {
            shards_before: images.len() as u64,
            books: (0..markets).map(|_| None).collect(),
            market_data: (0..markets).map(|_| None).collect(),
            machines: Vec::with_capacity(images.len()),
            users: Vec::new(),
            keys: Vec::new(),
            transfers: Vec::new(),
            halted: images[0].trading.halted.clone(),
            order_id_max: 0,
            remote_received: images[0].trading.remote.received.clone(),
            countdowns: Vec::new(),
            guards: Vec::new(),
        };
        for image in images {
            merged.add(image);
        }
        merged
    }

    fn add(&mut self, image: ShardImage) {
        let t = image.trading;
        let order_id = t.next_order_seq * self.shards_before + u64::from(t.shard);
        self.order_id_max = self.order_id_max.max(order_id);
        for (m, book) in t.books.into_iter().enumerate() {
            if book.is_some() {
                self.books[m] = book;
            }
        }
        for (m, data) in image.market_data.into_iter().enumerate() {
            if data.is_some() {
                self.market_data[m] = data;
            }
        }
        if self.transfers.is_empty() {
            self.transfers = vec![(0, 0); t.transfers.len()];
        }
        for (sum, part) in self.transfers.iter_mut().zip(&t.transfers) {
            sum.0 += part.0;
            sum.1 += part.1;
        }
        self.machines.push(t.accounts);
        self.users.extend(t.users);
        self.keys.extend(t.keys);
        self.countdowns.extend(t.countdowns);
        self.guards.extend(t.guards);
    }

    /// Shard `i`'s part: its markets' books and data, its users and keys,
    /// and (on shard 0) the transfer totals; ids continue past every id
    /// any shard gave out.
    fn take_part(&mut self, i: u32, shards: u32, owners: &[u32], accounts: Accounts) -> ShardImage {
        let user_id_max = self.users.iter().map(|(id, _)| *id).max().unwrap_or(DEMO_USER_ID);
        let mine = |m: usize| owners[m] == i;
        let trading = crate::trading::TradingImage {
            shard: i,
            shards,
            accounts,
            books: self
                .books
                .iter_mut()
                .enumerate()
                .map(|(m, b)| if mine(m) { b.take() } else { None })
                .collect(),
            halted: self.halted.clone(),
            users: self
                .users
                .iter()
                .filter(|(u, _)| owner_of(*u, shards) == i)
                .cloned()
                .collect(),
            keys: self
                .keys
                .iter()
                .filter(|k| owner_of(k.user, shards) == i)
                .cloned()
                .collect(),
            transfers: if i == 0 {
                self.transfers.clone()
            } else {
                vec![(0, 0); self.transfers.len()]
            },
            next_order_seq: self.order_id_max / u64::from(shards) + 1,
            next_user_seq: user_id_max.saturating_sub(DEMO_USER_ID) / u64::from(shards) + 1,
            sent_seq: vec![0; shards as usize],
            received_seq: vec![0; shards as usize],
            remote: crate::trading::remote::RemoteImage {
                received: if i == 0 {
                    self.remote_received.clone()
                } else {
                    Vec::new()
                },
                ..Default::default()
            },
            countdowns: self
                .countdowns
                .iter()
                .filter(|(u, _, _)| owner_of(*u, shards) == i)
                .copied()
                .collect(),
            guards: self
                .guards
                .iter()
                .filter(|(u, _, _)| owner_of(*u, shards) == i)
                .cloned()
                .collect(),
        };
        let market_data = self
            .market_data
            .iter_mut()
            .enumerate()
            .map(|(m, d)| if mine(m) { d.take() } else { None })
            .collect();
        ShardImage { trading, market_data }
    }
}

/// Replays shard `shard`'s journal of the running `generation`, from its
/// newest snapshot that covers no record after `after`, through record
/// `upto`, handing every record to `tap` (the history store's catch-up
/// after its backlog overflowed: the rows of records `after + 1 ..= upto`
/// exist only in the journal). The records must be durable. Returns the
/// last record replayed.
pub fn replay_rows(
    data_dir: &Path,
    generation: u64,
    shard: u32,
    specs: &[MarketSpec],
    after: u64,
    upto: u64,
    tap: Box<dyn Tap>,
) -> Result<u64, RecoveryError> {
    let dir = snapshot::generation_dir(data_dir, shard, generation);
    let mut base = None;
    for cut in snapshot::cuts(&dir)?.into_iter().rev() {
        // A snapshot set may be replaced while this runs: a file that went
        // is skipped for an older one.
        let Ok((header, snap)) = snapshot::read(&dir, cut) else {
            continue;
        };
        if header.covered_lsn <= after {
            base = Some((header.covered_lsn, snap.image));
            break;
        }
    }
    let (covered, image) = base.ok_or_else(|| {
        RecoveryError::Layout(format!(
            "{}: no snapshot covers only records up to {after}",
            dir.display()
        ))
    })?;
    let stop = Stop {
        epoch: u64::MAX,
        lsn: upto,
    };
    let part = replay_shard(&dir, image, covered, stop, specs, Some(tap))?;
    if part.last_lsn < upto {
        return Err(RecoveryError::Layout(format!(
            "{}: the journal ends at record {} before {upto}",
            dir.display(),
            part.last_lsn
        )));
    }
    Ok(part.last_lsn)
}

/// What one snapshot set took, for the log and the benchmark.
#[derive(Clone, Copy, Debug, Default)]
pub struct SnapshotStats {
    pub cut: u64,
    pub records: u64,
    pub time: Duration,
}

/// Takes a snapshot set of the running `generation` at `cut` (a global
/// durable epoch), then deletes what it makes unnecessary: older
/// snapshots and journal segments it covers. `None` when the newest set
/// is already at `cut`.
pub fn take_snapshot(
    data_dir: &Path,
    generation: u64,
    shards: u32,
    specs: &[MarketSpec],
    cut: u64,
) -> Result<Option<SnapshotStats>, RecoveryError> {
    let started = Instant::now();
    let replayed = replay(data_dir, generation, shards, specs, Some(cut), None)?;
    if replayed.base_cut >= cut {
        return Ok(None);
    }
    let records = replayed.records;
    let mut covered = Vec::with_capacity(replayed.shards.len());
    for (i, (shard, in_flight)) in replayed.shards.into_iter().zip(replayed.in_flight).enumerate() {
        let dir = snapshot::generation_dir(data_dir, i as u32, generation);
        let header = SnapshotHeader {
            cut,
            covered_lsn: shard.last_lsn,
            shard: i as u32,
            shards,
        };
        covered.push((dir.clone(), shard.last_lsn));
        snapshot::write_parts(&dir, header, &shard.into_image(), &in_flight)?;
    }
    // Only once the whole set is on disk may anything older go.
    for (dir, lsn) in covered {
        snapshot::delete_before(&dir, cut)?;
        journal::delete_segments_before(&dir, lsn + 1)?;
    }
    Ok(Some(SnapshotStats {
        cut,
        records,
        time: started.elapsed(),
    }))
}
