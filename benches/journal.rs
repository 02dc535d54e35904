//! Journal benchmark: scan rate over millions of small records, and commit
//! latency of small fdatasynced batches on the disk under the directory.
//!
//! `cargo bench --bench journal` (directory: `JOURNAL_BENCH_DIR`, default the
//! system temp dir; record count: `JOURNAL_BENCH_RECORDS`, default 5,000,000).

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Instant;

use glommio::LocalExecutorBuilder;
use hdrhistogram::Histogram;
use tradsys::journal::{self, Tail, Writer, JOURNAL_SEGMENT_BYTES_DEFAULT};

const RECORD_BYTES: usize = 80;
const FILL_BATCH_RECORDS: u64 = 10_000;
const LATENCY_BATCH_RECORDS: u64 = 100;
const LATENCY_COMMITS: u64 = 2_000;
const SCAN_RUNS: usize = 3;

fn main() {
    let base = std::env::var_os("JOURNAL_BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    let records: u64 = std::env::var("JOURNAL_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000_000);
    let dir = base.join(format!("tradsys-journal-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "journal bench in {} ({} records of {RECORD_BYTES} bytes)",
        dir.display(),
        records
    );

    let scan_dir = dir.join("scan");
    let fill = executor(move || fill(scan_dir, records));
    println!(
        "fill: {:.0} records/s written (commits of {FILL_BATCH_RECORDS}, unsynced)",
        records as f64 / fill
    );
    for run in 1..=SCAN_RUNS {
        scan_once(&dir.join("scan"), records, run);
    }

    let latency_dir = dir.join("latency");
    let latency = executor(move || commit_latency(latency_dir));
    println!(
        "commit of {LATENCY_BATCH_RECORDS} records + fdatasync, {LATENCY_COMMITS} commits: p50 {} us, p99 {} us, \
         p99.9 {} us, max {} us",
        latency.value_at_quantile(0.5),
        latency.value_at_quantile(0.99),
        latency.value_at_quantile(0.999),
        latency.max()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn executor<F, Fut, T>(f: F) -> T
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T> + 'static,
    T: Send + 'static,
{
    LocalExecutorBuilder::default()
        .spawn(f)
        .expect("executor")
        .join()
        .expect("bench")
}

async fn fill(dir: PathBuf, records: u64) -> f64 {
    let writer = Writer::open(&dir, &Tail::empty(), JOURNAL_SEGMENT_BYTES_DEFAULT)
        .await
        .expect("open");
    let payload = [0x42u8; RECORD_BYTES];
    let start = Instant::now();
    let mut epoch = 1;
    while writer.next_lsn() <= records {
        let batch = FILL_BATCH_RECORDS.min(records + 1 - writer.next_lsn());
        for _ in 0..batch {
            writer.append(epoch, &payload);
        }
        writer.commit(epoch, false).await.expect("commit");
        epoch += 1;
    }
    writer.commit(epoch - 1, true).await.expect("sync");
    start.elapsed().as_secs_f64()
}

fn scan_once(dir: &Path, records: u64, run: usize) {
    let start = Instant::now();
    let (mut count, mut bytes) = (0u64, 0u64);
    let tail = journal::scan(dir, 1, |r| {
        count += 1;
        bytes += r.payload.len() as u64;
        ControlFlow::Continue(())
    })
    .expect("scan");
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(
        (count, tail.next_lsn, bytes),
        (records, records + 1, records * RECORD_BYTES as u64)
    );
    println!(
        "scan run {run}: {count} records in {:.3} s = {:.2} M records/s ({:.0} MB/s of payload)",
        secs,
        count as f64 / secs / 1e6,
        bytes as f64 / secs / 1e6
    );
}

async fn commit_latency(dir: PathBuf) -> Histogram<u64> {
    let writer = Writer::open(&dir, &Tail::empty(), JOURNAL_SEGMENT_BYTES_DEFAULT)
        .await
        .expect("open");
    let payload = [0x17u8; RECORD_BYTES];
    let mut histogram = Histogram::new_with_bounds(1, 60_000_000, 3).expect("bounds");
    for epoch in 1..=LATENCY_COMMITS {
        for _ in 0..LATENCY_BATCH_RECORDS {
            writer.append(epoch, &payload);
        }
        let start = Instant::now();
        writer.commit(epoch, true).await.expect("commit");
        histogram
            .record(start.elapsed().as_micros().max(1) as u64)
            .expect("in bounds");
    }
    histogram
}
