//! Writer and scan together on real files: rolls, reopening, torn tails,
//! corruption and the recovery cuts.

use std::future::Future;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

use glommio::LocalExecutorBuilder;

use super::frame::{Frame, Kind};
use super::scan::walk;
use super::*;

const SEGMENT_BYTES: u64 = JOURNAL_SEGMENT_BYTES_MIN;

/// A directory under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("tradsys-journal-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run<F, Fut, T>(f: F) -> T
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
    T: Send + 'static,
{
    LocalExecutorBuilder::default().spawn(f).unwrap().join().unwrap()
}

/// A payload whose length and bytes depend on the lsn.
fn payload(lsn: u64) -> Vec<u8> {
    let len = 8 + (lsn * 37 % 200) as usize;
    (0..len).map(|i| (lsn as usize * 31 + i) as u8).collect()
}

type Records = Vec<(u64, u64, Vec<u8>)>;

fn read_all(dir: &Path, from_lsn: u64) -> Result<(Records, Tail), JournalError> {
    let mut records = Vec::new();
    let tail = scan(dir, from_lsn, |r| {
        records.push((r.lsn, r.epoch, r.payload.to_vec()));
        ControlFlow::Continue(())
    })?;
    Ok((records, tail))
}

/// Writes `commits` batches of `per_commit` records; batch i has epoch i + 1
/// and seals it. Continues whatever journal `dir` holds.
fn write_batches(dir: &Path, commits: u64, per_commit: u64, segment_bytes: u64) -> Vec<CommitStats> {
    let dir = dir.to_path_buf();
    run(move || async move {
        let tail = scan(&dir, u64::MAX, |_| ControlFlow::Continue(())).unwrap();
        let writer = Writer::open(&dir, &tail, segment_bytes).await.unwrap();
        let mut stats = Vec::new();
        for _ in 0..commits {
            let epoch = writer.sealed_epoch() + 1;
            for _ in 0..per_commit {
                writer.append(epoch, &payload(writer.next_lsn()));
            }
            stats.push(writer.commit(epoch, true).await.unwrap());
        }
        stats
    })
}

fn expected(lsns: std::ops::RangeInclusive<u64>, per_commit: u64) -> Records {
    lsns.map(|lsn| (lsn, (lsn - 1) / per_commit + 1, payload(lsn)))
        .collect()
}

/// Every frame with its segment and offset.
fn frames(dir: &Path) -> Vec<(PathBuf, u64, Kind, u64)> {
    let mut out = Vec::new();
    walk(dir, |path, offset, frame: &Frame<'_>| {
        out.push((path.to_path_buf(), offset, frame.kind, frame.lsn));
        ControlFlow::Continue(())
    })
    .unwrap();
    out
}

fn segment_files(dir: &Path) -> Vec<String> {
    // The spare the writer may have been preparing is not a segment.
    let names = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap());
    let mut names: Vec<String> = names.filter(|n| n.ends_with(".seg")).collect();
    names.sort();
    names
}

#[test]
fn round_trips_many_records_across_segment_rolls() {
    let dir = TempDir::new("roll");
    let stats = write_batches(&dir.0, 50, 100, SEGMENT_BYTES);
    let created: u32 = stats.iter().map(|s| s.segments_created).sum();
    assert!(created >= 4, "only {created} rolls");
    assert_eq!(segment_files(&dir.0).len(), created as usize + 1);
    assert_eq!(stats.iter().map(|s| s.records).sum::<u64>(), 5000);
    assert_eq!(stats[49].next_lsn, 5001);
    let (records, tail) = read_all(&dir.0, 1).unwrap();
    assert_eq!(records, expected(1..=5000, 100));
    assert_eq!(
        (tail.next_lsn, tail.sealed_epoch, tail.last_epoch, tail.torn.clone()),
        (5001, 50, 50, None)
    );
    let names = segment_files(&dir.0);
    assert_eq!(names[0], "journal-00000000000000000001.seg");
    assert_eq!(tail.segment, Some(dir.0.join(names.last().unwrap())));
    for name in &names {
        assert_eq!(std::fs::metadata(dir.0.join(name)).unwrap().len(), SEGMENT_BYTES);
    }
    let (later, _) = read_all(&dir.0, 4990).unwrap();
    assert_eq!(later, expected(4990..=5000, 100));
}

#[test]
fn a_largest_record_fits_and_rolls() {
    let dir = TempDir::new("large");
    let path = dir.0.clone();
    let big = vec![0x5a; JOURNAL_RECORD_BYTES_MAX];
    let big2 = big.clone();
    let created = run(move || async move {
        let writer = Writer::open(&path, &Tail::empty(), SEGMENT_BYTES).await.unwrap();
        for _ in 0..3 {
            writer.append(1, &big2);
        }
        writer.commit(1, false).await.unwrap().segments_created
    });
    assert_eq!(created, 2);
    let (records, tail) = read_all(&dir.0, 1).unwrap();
    assert_eq!(records.len(), 3);
    assert!(records.iter().all(|(_, epoch, p)| *epoch == 1 && *p == big));
    assert_eq!((tail.next_lsn, tail.sealed_epoch), (4, 1));
}

#[test]
fn the_page_cache_path_writes_the_same_journal() {
    let dir = TempDir::new("buffered");
    let path = dir.0.clone();
    let (is_direct, created) = run(move || async move {
        let writer = Writer::open_with(&path, &Tail::empty(), SEGMENT_BYTES, false)
            .await
            .unwrap();
        let mut created = 0;
        for epoch in 1..=20 {
            for _ in 0..100 {
                writer.append(epoch, &payload(writer.next_lsn()));
            }
            created += writer.commit(epoch, true).await.unwrap().segments_created;
        }
        (writer.is_direct(), created)
    });
    assert!(!is_direct);
    assert!(created >= 1);
    let (records, tail) = read_all(&dir.0, 1).unwrap();
    assert!(records == expected(1..=2000, 100));
    assert_eq!((tail.next_lsn, tail.sealed_epoch, tail.torn), (2001, 20, None));
}

#[test]
fn reopens_and_continues() {
    let dir = TempDir::new("reopen");
    write_batches(&dir.0, 3, 7, SEGMENT_BYTES);
    write_batches(&dir.0, 2, 5, SEGMENT_BYTES);
    let (records, tail) = read_all(&dir.0, 1).unwrap();
    let mut want = expected(1..=21, 7);
    want.extend((22..=31).map(|lsn| (lsn, (lsn - 22) / 5 + 4, payload(lsn))));
    assert_eq!(records, want);
    assert_eq!((tail.next_lsn, tail.sealed_epoch, tail.last_epoch), (32, 5, 5));
    assert_eq!(segment_files(&dir.0).len(), 1);
}

#[test]
fn appends_during_a_commit_go_to_the_next_batch() {
    let dir = TempDir::new("inflight");
    let path = dir.0.clone();
    let (first, second) = run(move || async move {
        let writer = Rc::new(Writer::open(&path, &Tail::empty(), SEGMENT_BYTES).await.unwrap());
        for lsn in 1..=3 {
            assert_eq!(writer.append(1, &payload(lsn)), lsn);
        }
        let mut commit = Box::pin(writer.commit(1, true));
        let polled = futures_lite::future::poll_once(&mut commit).await;
        assert_eq!(writer.pending_records(), 0);
        for lsn in 4..=5 {
            assert_eq!(writer.append(2, &payload(lsn)), lsn);
        }
        let first = match polled {
            Some(done) => done.unwrap(),
            None => commit.await.unwrap(),
        };
        assert_eq!(writer.pending_records(), 2);
        let second = writer.commit(2, true).await.unwrap();
        (first, second)
    });
    assert_eq!(
        (first.records, first.next_lsn, second.records, second.next_lsn),
        (3, 4, 2, 6)
    );
    let (records, tail) = read_all(&dir.0, 1).unwrap();
    let want: Records = (1..=5)
        .map(|lsn| (lsn, if lsn <= 3 { 1 } else { 2 }, payload(lsn)))
        .collect();
    assert_eq!(records, want);
    assert_eq!(tail.sealed_epoch, 2);
}

#[test]
fn seals_are_written_without_records_and_skipped_when_nothing_is_due() {
    let dir = TempDir::new("seal");
    let path = dir.0.clone();
    let stats = run(move || async move {
        let writer = Writer::open(&path, &Tail::empty(), SEGMENT_BYTES).await.unwrap();
        writer.append(1, b"one");
        let a = writer.commit(1, true).await.unwrap();
        let b = writer.commit(1, true).await.unwrap();
        let c = writer.commit(4, false).await.unwrap();
        // Nothing new, but the unsynced seal of epoch 4 still needs its fdatasync, once.
        let syncs = (
            writer.commit(4, true).await.unwrap(),
            writer.commit(4, true).await.unwrap(),
        );
        assert_eq!((syncs.0.synced, syncs.0.frame_bytes, syncs.1.synced), (true, 0, false));
        (a, b, c)
    });
    let seal = JOURNAL_HEADER_BYTES as u64;
    assert_eq!(
        (stats.0.frame_bytes, stats.1.frame_bytes, stats.2.frame_bytes),
        (seal + 3 + seal, 0, seal)
    );
    assert_eq!((stats.0.write_bytes, stats.2.write_bytes), (4096, 4096));
    let (records, tail) = read_all(&dir.0, 1).unwrap();
    assert_eq!(records, vec![(1, 1, b"one".to_vec())]);
    assert_eq!(
        (tail.next_lsn, tail.sealed_epoch, tail.last_epoch, tail.end_offset),
        (2, 4, 1, 3 * seal + 3)
    );
}

/// Damage to the end of the last segment: the frames before it survive, the
/// damage is reported, and after `truncate` the journal takes new records.
#[test]
fn torn_tails_are_reported_truncated_and_written_over() {
    type Damage = fn(&Path, &[(PathBuf, u64, Kind, u64)], u64);
    // (name, damage, records kept, sealed epoch kept, frame torn or None for the old end)
    let cases: &[(&str, Damage, u64, u64, Option<usize>)] = &[
        (
            "cut in the last record",
            |p, f, _| cut(p, f[20].1 + 30),
            19,
            1,
            Some(20),
        ),
        (
            "flipped byte in the last seal",
            |p, f, _| flip(p, f[21].1 + 10),
            20,
            1,
            Some(21),
        ),
        (
            "garbage after the last frame",
            |p, _, end| write(p, end, &[0xab; 100]),
            20,
            2,
            None,
        ),
        (
            "garbage then zeros",
            |p, _, end| write(p, end, &[0xab, 0, 0, 0, 0, 7]),
            20,
            2,
            None,
        ),
    ];
    for &(name, damage, kept, sealed, torn_frame) in cases {
        let dir = TempDir::new("torn");
        write_batches(&dir.0, 2, 10, SEGMENT_BYTES);
        let frames = frames(&dir.0);
        assert_eq!(frames.len(), 22, "{name}");
        let clean = read_all(&dir.0, 1).unwrap().1;
        let segment = clean.segment.clone().unwrap();
        damage(&segment, &frames, clean.end_offset);

        let (records, tail) = read_all(&dir.0, 1).unwrap();
        assert!(records == expected(1..=kept, 10), "{name}");
        let torn_at = torn_frame.map_or(clean.end_offset, |i| frames[i].1);
        assert_eq!(tail.torn, Some((segment.clone(), torn_at)), "{name}");
        assert_eq!(
            (tail.next_lsn, tail.sealed_epoch, tail.end_offset),
            (kept + 1, sealed, torn_at),
            "{name}"
        );

        truncate(&tail).unwrap();
        let (again, after) = read_all(&dir.0, 1).unwrap();
        assert_eq!((again, after.torn.clone()), (records, None), "{name}");
        write_batches(&dir.0, 1, 4, SEGMENT_BYTES);
        let (records, tail) = read_all(&dir.0, kept + 1).unwrap();
        let want: Records = (kept + 1..=kept + 4)
            .map(|lsn| (lsn, sealed + 1, payload(lsn)))
            .collect();
        assert!(records == want, "{name}");
        assert_eq!(
            (tail.next_lsn, tail.sealed_epoch, tail.torn),
            (kept + 5, sealed + 1, None),
            "{name}"
        );
    }
}

#[test]
fn a_writer_refuses_an_untruncated_torn_tail() {
    let dir = TempDir::new("refuse");
    write_batches(&dir.0, 1, 3, SEGMENT_BYTES);
    let clean = read_all(&dir.0, 1).unwrap().1;
    write(clean.segment.as_ref().unwrap(), clean.end_offset, b"xyz");
    let tail = read_all(&dir.0, 1).unwrap().1;
    let path = dir.0.clone();
    let refused = run(move || async move {
        Writer::open(&path, &tail, SEGMENT_BYTES)
            .await
            .err()
            .map(|e| e.to_string())
    });
    let want = format!(
        "journal: torn tail in {} at byte offset {} must be truncated before writing",
        clean.segment.unwrap().display(),
        clean.end_offset
    );
    assert_eq!(refused, Some(want));
}

#[test]
fn damage_with_valid_frames_after_it_is_corruption_at_its_offset() {
    let dir = TempDir::new("corrupt");
    write_batches(&dir.0, 3, 10, SEGMENT_BYTES);
    let frames = frames(&dir.0);
    let (segment, offset, kind, lsn) = frames[5].clone();
    assert_eq!((kind, lsn), (Kind::Record, 6));
    flip(&segment, offset + 30);
    let err = read_all(&dir.0, 1).unwrap_err();
    match &err {
        JournalError::Corrupt { file, offset: at, .. } => assert_eq!((file, *at), (&segment, offset)),
        other => panic!("not corruption: {other}"),
    }
    let shown = err.to_string();
    assert!(
        shown.starts_with(&format!(
            "journal corrupt: {} at byte offset {offset}: ",
            segment.display()
        )),
        "{shown}"
    );
}

/// A power loss in the middle of the last commit may save its later blocks
/// (its seal included) and not an earlier one: with no commit after that
/// seal, the damage is a torn tail, not corruption.
#[test]
fn damage_inside_the_last_commit_is_a_torn_tail_even_before_its_seal() {
    let dir = TempDir::new("torn-inside");
    write_batches(&dir.0, 3, 10, SEGMENT_BYTES);
    let frames = frames(&dir.0);
    assert_eq!(frames.len(), 33);
    let (segment, offset, kind, lsn) = frames[25].clone();
    assert_eq!((kind, lsn), (Kind::Record, 24));
    assert_eq!(frames[32].2, Kind::Seal);
    flip(&segment, offset + 30);
    let (records, tail) = read_all(&dir.0, 1).unwrap();
    assert!(records == expected(1..=23, 10));
    assert_eq!((tail.torn, tail.sealed_epoch), (Some((segment, offset)), 2));
}

#[test]
fn any_damage_in_an_earlier_segment_is_corruption() {
    let dir = TempDir::new("sealed-segment");
    write_batches(&dir.0, 20, 100, SEGMENT_BYTES);
    let frames = frames(&dir.0);
    let first = frames[0].0.clone();
    let last_in_first = frames.iter().rev().find(|f| f.0 == first).unwrap().clone();
    assert_ne!(Some(&first), read_all(&dir.0, 1).unwrap().1.segment.as_ref());
    flip(&first, last_in_first.1 + 3);
    match read_all(&dir.0, 1).unwrap_err() {
        JournalError::Corrupt { file, offset, .. } => assert_eq!((file, offset), (first, last_in_first.1)),
        other => panic!("not corruption: {other}"),
    }
}

#[test]
fn truncate_at_drops_records_from_an_lsn_on() {
    let dir = TempDir::new("truncate-at");
    write_batches(&dir.0, 20, 100, SEGMENT_BYTES);
    let before = segment_files(&dir.0);
    assert!(before.len() >= 3);
    let frames = frames(&dir.0);
    // A record in the middle of the second segment.
    let second = dir.0.join(&before[1]);
    let in_second: Vec<_> = frames.iter().filter(|f| f.0 == second && f.2 == Kind::Record).collect();
    let cut = in_second[in_second.len() / 2].3;
    truncate_at(&dir.0, cut).unwrap();
    assert_eq!(segment_files(&dir.0), before[..2].to_vec());
    let (records, tail) = read_all(&dir.0, 1).unwrap();
    assert_eq!(records, expected(1..=cut - 1, 100));
    let sealed_before_cut = (cut - 1) / 100;
    assert_eq!(
        (tail.next_lsn, tail.sealed_epoch, tail.torn.clone()),
        (cut, sealed_before_cut, None)
    );
    write_batches(&dir.0, 1, 3, SEGMENT_BYTES);
    let (records, _) = read_all(&dir.0, cut).unwrap();
    let want: Records = (cut..cut + 3)
        .map(|lsn| (lsn, sealed_before_cut + 1, payload(lsn)))
        .collect();
    assert_eq!(records, want);
    truncate_at(&dir.0, 1).unwrap();
    let (records, tail) = read_all(&dir.0, 1).unwrap();
    assert_eq!((records.len(), tail.next_lsn, tail.sealed_epoch), (0, 1, 0));
    assert_eq!(segment_files(&dir.0), before[..1].to_vec());
}

#[test]
fn delete_segments_before_keeps_every_needed_segment_and_the_last() {
    let dir = TempDir::new("delete");
    write_batches(&dir.0, 30, 100, SEGMENT_BYTES);
    let before = segment_files(&dir.0);
    assert!(before.len() >= 4);
    let first_lsn = |name: &String| name[8..28].parse::<u64>().unwrap();
    let third = first_lsn(&before[2]);
    assert_eq!(delete_segments_before(&dir.0, third).unwrap(), 2);
    assert_eq!(segment_files(&dir.0), before[2..].to_vec());
    let (records, tail) = read_all(&dir.0, third).unwrap();
    assert_eq!(records, expected(third..=3000, 100));
    assert_eq!((tail.next_lsn, tail.sealed_epoch), (3001, 30));
    assert_eq!(delete_segments_before(&dir.0, third).unwrap(), 0);
    assert_eq!(delete_segments_before(&dir.0, u64::MAX).unwrap(), before.len() - 3);
    assert_eq!(segment_files(&dir.0), before[before.len() - 1..].to_vec());
    write_batches(&dir.0, 1, 2, SEGMENT_BYTES);
    let (records, tail) = read_all(&dir.0, 3001).unwrap();
    assert_eq!((records.len(), tail.next_lsn), (2, 3003));
}

#[test]
fn an_empty_or_missing_journal_scans_as_empty() {
    let dir = TempDir::new("empty");
    assert_eq!(read_all(&dir.0, 1).unwrap(), (Vec::new(), Tail::empty()));
    let path = dir.0.clone();
    run(move || async move { drop(Writer::open(&path, &Tail::empty(), SEGMENT_BYTES).await.unwrap()) });
    let tail = read_all(&dir.0, 1).unwrap().1;
    assert_eq!((tail.next_lsn, tail.end_offset, tail.torn), (1, 0, None));
    assert_eq!(tail.segment, Some(dir.0.join("journal-00000000000000000001.seg")));
}

fn cut(path: &Path, len: u64) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

fn flip(path: &Path, offset: u64) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[offset as usize] ^= 0x40;
    std::fs::write(path, bytes).unwrap();
}

fn write(path: &Path, offset: u64, data: &[u8]) {
    use std::os::unix::fs::FileExt;
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .write_all_at(data, offset)
        .unwrap();
}

#[test]
fn a_scan_that_breaks_describes_the_journal_up_to_that_record() {
    let dir = TempDir::new("break");
    write_batches(&dir.0, 2, 10, SEGMENT_BYTES);
    let mut seen = Vec::new();
    let tail = scan(&dir.0, 3, |r| {
        seen.push(r.lsn);
        if r.lsn == 12 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .unwrap();
    assert_eq!(seen, (3..=12).collect::<Vec<_>>());
    assert_eq!(
        (tail.next_lsn, tail.sealed_epoch, tail.last_epoch, tail.torn),
        (13, 1, 2, None)
    );
}

#[test]
fn a_missing_segment_in_the_middle_is_corruption() {
    let dir = TempDir::new("gap");
    write_batches(&dir.0, 20, 100, SEGMENT_BYTES);
    let names = segment_files(&dir.0);
    assert!(names.len() >= 3);
    std::fs::remove_file(dir.0.join(&names[1])).unwrap();
    match read_all(&dir.0, 1).unwrap_err() {
        JournalError::Corrupt { file, offset, reason } => {
            assert_eq!((file, offset), (dir.0.join(&names[2]), 0));
            let (second, third) = (&names[1][8..28], &names[2][8..28]);
            let (second, third): (u64, u64) = (second.parse().unwrap(), third.parse().unwrap());
            assert_eq!(reason, format!("segment starts at lsn {third}, expected lsn {second}"));
        }
        other => panic!("not corruption: {other}"),
    }
}
