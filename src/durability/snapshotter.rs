//! The snapshot thread: takes snapshot sets in the background so that old
//! journal segments can go (see `recovery::take_snapshot`). It runs at the
//! lowest scheduling priority and replays the journals into its own copy
//! of the state, so the shards never stop for it.

use super::epoch::Epochs;
use super::recovery::take_snapshot;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tradsys_engine::market::MarketSpec;

/// Takes snapshot sets in the background (see `durability::recovery`):
/// after `records` journal records or every `interval` while records
/// arrive. It replays the journals into its own copy of the state, so the
/// shards never stop for a snapshot.
pub struct Snapshotter {
    pub data_dir: std::path::PathBuf,
    pub generation: u64,
    pub shards: u32,
    pub markets: Vec<MarketSpec>,
    pub epochs: Arc<Epochs>,
    pub records: u64,
    pub interval_s: u64,
    pub stop: Arc<AtomicBool>,
}

/// How often the snapshot thread checks whether a snapshot is due.
const SNAPSHOT_CHECK_INTERVAL_MS: u64 = 100;

impl Snapshotter {
    /// Runs until `stop` is set; call it on a thread of its own.
    pub fn run(self) {
        // Shards preempt this thread whenever they have work: a snapshot
        // takes spare CPU time only, and never stalls a shard.
        // SAFETY: sched_param is plain data; the call changes only this
        // thread's scheduling policy.
        let idle = unsafe {
            let param = libc::sched_param { sched_priority: 0 };
            libc::sched_setscheduler(0, libc::SCHED_IDLE, &param)
        };
        if idle != 0 {
            eprintln!(
                "WARNING: snapshot thread: cannot lower its priority: {}",
                std::io::Error::last_os_error()
            );
        }
        let mut taken_at = std::time::Instant::now();
        let mut appended_then = 0;
        let mut last_cut = 0;
        while !self.stop.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(SNAPSHOT_CHECK_INTERVAL_MS));
            let appended = self.epochs.appended();
            let new = appended - appended_then;
            if new == 0 || (new < self.records && taken_at.elapsed() < Duration::from_secs(self.interval_s)) {
                continue;
            }
            // Not past what the history store has absorbed: the journal
            // segments a snapshot makes unnecessary are deleted.
            let cut = self.epochs.snapshot_cut();
            if cut <= last_cut {
                continue;
            }
            last_cut = cut;
            match take_snapshot(&self.data_dir, self.generation, self.shards, &self.markets, cut) {
                Ok(Some(stats)) => println!(
                    "snapshot at epoch {cut}: {} records replayed in {:.3} s",
                    stats.records,
                    stats.time.as_secs_f64()
                ),
                Ok(None) => {}
                Err(e) => eprintln!("WARNING: snapshot at epoch {cut} failed (will retry): {e}"),
            }
            taken_at = std::time::Instant::now();
            appended_then = appended;
        }
    }
}
