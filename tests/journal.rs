//! Journal: round trips, crash tails, corruption, roll-over, faults, pinned bytes, random runs.

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ledgerd::journal::{
    segment_path, End, FaultPlan, FlushMode, Journal, JournalConfig, JournalError, JournalReader,
};
use proptest::prelude::*;
use xxhash_rust::xxh3::{xxh3_128, xxh3_64};

const SMALL_SEGMENT: u64 = 4096;

fn config(dir: &Path) -> JournalConfig {
    let mut c = JournalConfig::new(dir);
    c.segment_size = SMALL_SEGMENT;
    c
}

fn body(seq: u64, len: usize) -> Vec<u8> {
    (0..len).map(|i| (seq as usize * 31 + i * 7) as u8 | 1).collect()
}

fn journal_dir(dir: &Path) -> PathBuf {
    dir.join("journal")
}

/// Appends `n` records of `len` bytes each (record i has body `body(i, len)`), flushes, closes.
fn write_journal(cfg: JournalConfig, n: u64, len: usize) {
    let (mut j, _) = Journal::open(cfg).unwrap();
    for _ in 0..n {
        let seq = j.last_sequence() + 1;
        assert_eq!(j.append(&body(seq, len)).unwrap(), seq);
    }
    j.flush().unwrap();
}

/// Every record through the reader, checked against `body`.
fn check_all(dir: &Path, n: u64, len: usize) {
    let r = JournalReader::open(dir).unwrap();
    let mut seen = 0;
    let mut it = r.records(1, None);
    while let Some(rec) = it.next_record() {
        let rec = rec.unwrap();
        seen += 1;
        assert_eq!(rec.seq, seen);
        assert_eq!(rec.body, &body(rec.seq, len)[..]);
        assert_eq!(rec.body.as_ptr() as usize % 16, 0, "body of {} not 16-aligned", rec.seq);
    }
    assert_eq!(seen, n);
    let v = r.verify();
    assert_eq!(v.end, End::Clean, "{v:?}");
    assert_eq!(v.records, n);
    assert_eq!(v.last_sequence, n);
}

/// (segment path, offset, total size) of record `seq`.
fn locate(dir: &Path, seq: u64) -> (PathBuf, u64, u64) {
    let r = JournalReader::open(dir).unwrap();
    let rec = r.records(seq, Some(seq)).next().unwrap().unwrap();
    let size = 64 + (rec.body.len() as u64).next_multiple_of(16);
    (r.segment_path(rec.segment).unwrap().to_path_buf(), rec.offset, size)
}

#[test]
fn round_trip_and_reads_while_open() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut j, report) = Journal::open(config(tmp.path())).unwrap();
    assert_eq!((report.last_sequence, report.segments, report.records), (0, 1, 0));
    assert_eq!(j.checksum_of(0), Some(0));
    let lens = [0usize, 1, 15, 16, 17, 200, 1000];
    for (i, &len) in lens.iter().enumerate() {
        assert_eq!(j.append(&body(i as u64 + 1, len)).unwrap(), i as u64 + 1);
    }
    assert_eq!(j.last_sequence(), 7);
    assert_eq!(j.durable_sequence(), 0);
    assert!(j.read(1).is_none(), "not durable yet");
    j.flush().unwrap();
    assert_eq!(j.durable_sequence(), 7);
    for (i, &len) in lens.iter().enumerate() {
        let b = j.read(i as u64 + 1).unwrap();
        assert_eq!(b, &body(i as u64 + 1, len)[..]);
        assert_eq!(b.as_ptr() as usize % 16, 0);
    }
    assert!(j.read(0).is_none() && j.read(8).is_none());
    let from3: Vec<u64> = j.records_from(3).map(|(s, _)| s).collect();
    assert_eq!(from3, vec![3, 4, 5, 6, 7]);
    // Checksums chain: each record's chain is the previous checksum.
    let r = JournalReader::open(tmp.path()).unwrap();
    let recs: Vec<_> = r.records(1, None).map(Result::unwrap).collect();
    assert_eq!(recs.len(), 7);
    let mut prev = 0;
    for rec in &recs {
        assert_eq!(rec.chain, prev);
        assert_eq!(j.checksum_of(rec.seq), Some(rec.checksum));
        prev = rec.checksum;
    }
    let up_to: Vec<u64> = r.records(2, Some(4)).map(|r| r.unwrap().seq).collect();
    assert_eq!(up_to, vec![2, 3, 4]);
    drop(j);
    let (j, report) = Journal::open(config(tmp.path())).unwrap();
    assert_eq!(report.last_sequence, 7);
    assert_eq!(report.torn_tail, None);
    assert_eq!(report.last_checksum, prev);
    assert_eq!(j.checksum_of(7), Some(prev));
}

#[test]
fn msync_mode_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(tmp.path());
    cfg.flush_mode = FlushMode::Msync;
    write_journal(cfg, 40, 100);
    check_all(tmp.path(), 40, 100);
}

#[test]
fn second_opener_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (_j, _) = Journal::open(config(tmp.path())).unwrap();
    let err = Journal::open(config(tmp.path())).unwrap_err();
    assert!(matches!(err, JournalError::Locked { .. }), "{err}");
    assert!(err.to_string().contains("LOCK"), "{err}");
}

#[test]
fn body_limits() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(tmp.path());
    cfg.body_max = 1000;
    let (mut j, _) = Journal::open(cfg).unwrap();
    assert!(matches!(
        j.append(&[1; 1001]),
        Err(JournalError::BodyTooLarge { len: 1001, max: 1000 })
    ));
    j.append(&[1; 1000]).unwrap();
    drop(j);
    // The segment bounds the body even when body_max is larger.
    let (mut j, _) = Journal::open(config(tmp.path())).unwrap();
    let room = SMALL_SEGMENT as usize - 128;
    assert!(matches!(j.append(&vec![1; room + 1]), Err(JournalError::BodyTooLarge { .. })));
    assert_eq!(j.append(&vec![2; room]).unwrap(), 2, "a body filling a whole segment fits");
    assert!(!j.is_poisoned());
}

#[test]
fn torn_tail_cut_at_every_byte_of_the_last_record() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    write_journal(config(&src), 3, 200);
    let (seg, off, size) = locate(&src, 3);
    let pristine = fs::read(&seg).unwrap();
    let work = tmp.path().join("work");
    for cut in off..off + size {
        let _ = fs::remove_dir_all(&work);
        fs::create_dir_all(journal_dir(&work)).unwrap();
        let target = journal_dir(&work).join(seg.file_name().unwrap());
        fs::write(&target, &pristine[..cut as usize]).unwrap();
        let (mut j, report) = Journal::open(config(&work)).unwrap();
        assert_eq!(report.last_sequence, 2, "cut at {cut}");
        if cut > off {
            assert_eq!(report.torn_tail, Some((target.clone(), off)), "cut at {cut}");
            assert!(report.repaired);
        }
        // The file is whole again, and appending continues the sequence and the chain.
        assert_eq!(fs::metadata(&target).unwrap().len(), SMALL_SEGMENT);
        assert_eq!(j.append(&body(3, 200)).unwrap(), 3);
        j.flush().unwrap();
        drop(j);
        if cut == off + 1 || cut == off + size - 1 || cut % 64 == 0 {
            check_all(&work, 3, 200);
        }
    }
}

#[test]
fn zero_filled_tail_is_cut() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    write_journal(config(&src), 4, 300);
    let (seg, off, size) = locate(&src, 4);
    let pristine = fs::read(&seg).unwrap();
    let work = tmp.path().join("work");
    // Every 7th byte of header and body (the padding after the body is zero anyway).
    for zero_from in (off..off + 64 + 300).step_by(7) {
        let _ = fs::remove_dir_all(&work);
        fs::create_dir_all(journal_dir(&work)).unwrap();
        let target = journal_dir(&work).join(seg.file_name().unwrap());
        let mut bytes = pristine.clone();
        bytes[zero_from as usize..].fill(0);
        // Also a record whose header never reached the disk but whose body did.
        if zero_from == off {
            bytes[(off + 64) as usize..(off + size) as usize]
                .copy_from_slice(&pristine[(off + 64) as usize..(off + size) as usize]);
        }
        fs::write(&target, &bytes).unwrap();
        let v = JournalReader::open(&work).unwrap().verify();
        assert!(matches!(v.end, End::Torn { .. }), "zero from {zero_from}: {v:?}");
        assert!(v.is_ok());
        let (j, report) = Journal::open(config(&work)).unwrap();
        assert_eq!(report.last_sequence, 3, "zero from {zero_from}");
        assert_eq!(report.torn_tail.as_ref().map(|t| t.1), Some(off));
        assert!(report.truncated_bytes > 0);
        drop(j);
        check_all(&work, 3, 300);
    }
}

#[test]
fn repair_off_reports_and_refuses_appends() {
    let tmp = tempfile::tempdir().unwrap();
    write_journal(config(tmp.path()), 3, 100);
    let (seg, off, _) = locate(tmp.path(), 3);
    let len = fs::metadata(&seg).unwrap().len();
    let f = OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(off + 70).unwrap();
    drop(f);
    let mut cfg = config(tmp.path());
    cfg.repair = false;
    let (mut j, report) = Journal::open(cfg).unwrap();
    assert_eq!(report.torn_tail, Some((seg.clone(), off)));
    assert!(!report.repaired);
    assert_eq!(report.truncated_bytes, 0);
    assert!(matches!(j.append(b"x"), Err(JournalError::TailNotRepaired { .. })));
    assert_eq!(j.read(2).unwrap(), &body(2, 100)[..]);
    drop(j);
    assert_eq!(fs::metadata(&seg).unwrap().len(), off + 70, "report only: file untouched");
    assert_ne!(len, off + 70);
}

#[test]
fn damaged_middle_record_is_refused_naming_segment_and_offset() {
    let tmp = tempfile::tempdir().unwrap();
    write_journal(config(tmp.path()), 5, 100);
    let (seg, off, _) = locate(tmp.path(), 3);
    let pristine = fs::read(&seg).unwrap();
    // Flip one bit in the body, in the sequence field, in the chain field, in the checksum.
    for at in [off + 64 + 10, off + 32, off + 50, off + 3] {
        let mut bytes = pristine.clone();
        bytes[at as usize] ^= 0x10;
        fs::write(&seg, &bytes).unwrap();
        let err = Journal::open(config(tmp.path())).unwrap_err();
        match &err {
            JournalError::Corrupt { segment, offset, .. } => {
                assert_eq!((segment, *offset), (&seg, off), "flip at {at}");
            }
            other => panic!("flip at {at}: {other}"),
        }
        let text = err.to_string();
        assert!(text.contains(&seg.display().to_string()) && text.contains(&off.to_string()));
        let v = JournalReader::open(tmp.path()).unwrap().verify();
        assert_eq!(v.records, 2);
        assert!(!v.is_ok());
        match &v.end {
            End::Corrupt { segment, offset, .. } => assert_eq!((segment, *offset), (&seg, off)),
            other => panic!("{other:?}"),
        }
        assert!(v.problems.len() >= 2, "{:?}", v.problems);
        // The reader yields 1 and 2, then the error.
        let r = JournalReader::open(tmp.path()).unwrap();
        let got: Vec<_> = r.records(1, None).collect();
        assert_eq!(got.len(), 3);
        assert!(matches!(got[2], Err(JournalError::Corrupt { offset, .. }) if offset == off));
    }
    // A zeroed middle record is corruption too.
    let mut bytes = pristine.clone();
    bytes[off as usize..off as usize + 64].fill(0);
    fs::write(&seg, &bytes).unwrap();
    assert!(matches!(Journal::open(config(tmp.path())), Err(JournalError::Corrupt { .. })));
    // truncate_corrupt cuts there and keeps the prefix.
    let mut cfg = config(tmp.path());
    cfg.truncate_corrupt = true;
    let (_j, report) = Journal::open(cfg).unwrap();
    assert_eq!(report.last_sequence, 2);
    assert_eq!(report.torn_tail, Some((seg.clone(), off)));
}

#[test]
fn roll_over_across_segments() {
    let tmp = tempfile::tempdir().unwrap();
    // About 10 records of 300 bytes per 4 KiB segment.
    let (mut j, _) = Journal::open(config(tmp.path())).unwrap();
    for seq in 1..=100 {
        assert_eq!(j.append(&body(seq, 300)).unwrap(), seq);
        if seq % 7 == 0 {
            j.flush().unwrap();
        }
    }
    j.flush().unwrap();
    for seq in [1, 50, 11, 12, 100, 99] {
        assert_eq!(j.read(seq).unwrap(), &body(seq, 300)[..]);
    }
    let all: Vec<u64> = j.records_from(1).map(|(s, _)| s).collect();
    assert_eq!(all, (1..=100).collect::<Vec<_>>());
    drop(j);
    let (j, report) = Journal::open(config(tmp.path())).unwrap();
    assert!(report.segments >= 9, "{report:?}");
    assert_eq!(report.last_sequence, 100);
    drop(j);
    check_all(tmp.path(), 100, 300);
    let r = JournalReader::open(tmp.path()).unwrap();
    let from: Vec<u64> = r.records(57, Some(61)).map(|r| r.unwrap().seq).collect();
    assert_eq!(from, vec![57, 58, 59, 60, 61]);
    assert!(r.segment_count() >= 9);
}

#[test]
fn reopen_continues_sequence_and_chain() {
    let tmp = tempfile::tempdir().unwrap();
    for round in 1..=4u64 {
        let (mut j, report) = Journal::open(config(tmp.path())).unwrap();
        assert_eq!(report.last_sequence, (round - 1) * 15);
        for _ in 0..15 {
            let seq = j.last_sequence() + 1;
            j.append(&body(seq, 250)).unwrap();
        }
        // Closing without a flush: the page cache keeps the records for the next open.
        if round % 2 == 0 {
            j.flush().unwrap();
        }
    }
    check_all(tmp.path(), 60, 250);
}

fn rolled_journal(dir: &Path) -> Vec<PathBuf> {
    write_journal(config(dir), 60, 300);
    let segs: Vec<PathBuf> =
        (0..).map(|i| segment_path(&journal_dir(dir), i)).take_while(|p| p.exists()).collect();
    assert!(segs.len() >= 5);
    segs
}

#[test]
fn missing_segment_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let segs = rolled_journal(tmp.path());
    fs::remove_file(&segs[2]).unwrap();
    let err = Journal::open(config(tmp.path())).unwrap_err();
    match &err {
        JournalError::Corrupt { segment, reason, .. } => {
            assert_eq!(segment, &segs[3]);
            assert!(reason.contains("missing"), "{reason}");
        }
        other => panic!("{other}"),
    }
    assert!(!JournalReader::open(tmp.path()).unwrap().verify().is_ok());
    // The last segment missing is invisible by construction: it equals a shorter journal.
}

#[test]
fn reordered_segments_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let segs = rolled_journal(tmp.path());
    let swap = journal_dir(tmp.path()).join("swap");
    fs::rename(&segs[1], &swap).unwrap();
    fs::rename(&segs[2], &segs[1]).unwrap();
    fs::rename(&swap, &segs[2]).unwrap();
    let err = Journal::open(config(tmp.path())).unwrap_err();
    assert!(
        matches!(&err, JournalError::Corrupt { segment, offset: 0, .. } if segment == &segs[1]),
        "{err}"
    );
    let r = JournalReader::open(tmp.path()).unwrap();
    assert!(matches!(r.verify().end, End::Corrupt { .. }));
    assert!(r.records(1, None).any(|r| r.is_err()));
}

#[test]
fn first_segment_missing_is_refused_by_chain() {
    let tmp = tempfile::tempdir().unwrap();
    let segs = rolled_journal(tmp.path());
    // Removing segment 0 leaves a journal starting later: allowed (pruned history)...
    fs::remove_file(&segs[0]).unwrap();
    let (j, report) = Journal::open(config(tmp.path())).unwrap();
    assert!(report.first_sequence > 1);
    assert_eq!(j.first_sequence(), report.first_sequence);
    assert!(j.checksum_of(report.first_sequence - 1).is_some());
    drop(j);
    // ...but a gap after it is not.
    fs::remove_file(&segs[3]).unwrap();
    assert!(Journal::open(config(tmp.path())).is_err());
}

#[test]
fn faults_poison_the_journal() {
    let tmp = tempfile::tempdir().unwrap();
    let plan = Arc::new(FaultPlan::new());
    let mut cfg = config(tmp.path());
    cfg.fault = Some(plan.clone());
    let (mut j, _) = Journal::open(cfg.clone()).unwrap();
    for seq in 1..=5 {
        j.append(&body(seq, 100)).unwrap();
    }
    j.flush().unwrap();
    plan.fail_append(2, FaultPlan::ENOSPC);
    j.append(&body(6, 100)).unwrap();
    let err = j.append(&body(7, 100)).unwrap_err();
    match &err {
        JournalError::Io { source, .. } => assert_eq!(source.raw_os_error(), Some(libc_enospc())),
        other => panic!("{other}"),
    }
    assert!(j.is_poisoned());
    assert!(matches!(j.append(b"x"), Err(JournalError::Poisoned)));
    assert!(matches!(j.flush(), Err(JournalError::Poisoned)));
    assert_eq!(j.durable_sequence(), 5);
    assert_eq!(plan.injected(), (1, 0));
    drop(j);

    // Reopen: healthy again.
    let (mut j, report) = Journal::open(cfg.clone()).unwrap();
    assert!(report.last_sequence >= 5);
    let next = j.last_sequence() + 1;
    j.append(&body(next, 100)).unwrap();
    plan.fail_flushes_from(1, FaultPlan::EIO);
    assert!(matches!(j.flush(), Err(JournalError::Io { .. })));
    assert!(j.is_poisoned());
    drop(j);
    let (mut j, _) = Journal::open(cfg.clone()).unwrap();
    let next = j.last_sequence() + 1;
    j.append(&body(next, 100)).unwrap();
    assert!(j.flush().is_err(), "sticky flush fault still on");
    plan.clear();
    drop(j);
    let (mut j, _) = Journal::open(cfg).unwrap();
    let next = j.last_sequence() + 1;
    j.append(&body(next, 100)).unwrap();
    j.flush().unwrap();
    assert_eq!(j.durable_sequence(), next);
}

fn libc_enospc() -> i32 {
    FaultPlan::ENOSPC
}

/// Pins the exact bytes of a small journal: an accidental format change fails here.
#[test]
fn golden_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut j, _) = Journal::open(config(tmp.path())).unwrap();
    j.append(b"").unwrap();
    j.append(b"hello").unwrap();
    j.append(b"0123456789abcdef").unwrap();
    j.flush().unwrap();
    drop(j);
    let seg = fs::read(segment_path(&journal_dir(tmp.path()), 0)).unwrap();
    assert_eq!(seg.len() as u64, SMALL_SEGMENT);
    let used = 64 + 64 + 80 + 80;
    assert!(seg[used..].iter().all(|&b| b == 0));
    // Field positions, independent of the hex below.
    assert_eq!(&seg[0..8], b"LDGRJSEG");
    assert_eq!(&seg[64 + 16..64 + 20], b"LJRC");
    assert_eq!(u64::from_le_bytes(seg[128 + 32..128 + 40].try_into().unwrap()), 2);
    assert_eq!(u32::from_le_bytes(seg[128 + 24..128 + 28].try_into().unwrap()), 5);
    assert_eq!(&seg[128 + 64..128 + 69], b"hello");
    assert_eq!(seg[128 + 48..128 + 64], seg[64..80], "record 2 chains to record 1's checksum");
    // Checksums, recomputed here from the format's definition.
    let le128 = |b: &[u8]| u128::from_le_bytes(b.try_into().unwrap());
    assert_eq!(u64::from_le_bytes(seg[56..64].try_into().unwrap()), xxh3_64(&seg[..56]));
    assert_eq!(le128(&seg[64..80]), xxh3_128(&seg[80..128]));
    assert_eq!(le128(&seg[128..144]), xxh3_128(&seg[144..128 + 64 + 5]));
    assert_eq!(le128(&seg[208..224]), xxh3_128(&seg[224..208 + 64 + 16]));
    let hex: String = seg[..used].iter().map(|b| format!("{b:02x}")).collect();
    let expected = concat!(
        // segment header
        "4c4447524a534547",
        "01004000",
        "00000000",
        "0000000000000000",
        "0100000000000000",
        "0010000000000000",
        "00000000000000000000000000000000",
        "5dbc4df1aa15e530",
        // record 1: empty body
        "4425a484a3cc1f2516d19196ffa10b83",
        "4c4a5243",
        "0100",
        "4000",
        "00000000",
        "00000000",
        "0100000000000000",
        "0000000000000000",
        "00000000000000000000000000000000",
        // record 2: "hello"
        "4e1c442fdf14dc7cae7671fa8df32205",
        "4c4a5243",
        "0100",
        "4000",
        "05000000",
        "00000000",
        "0200000000000000",
        "0000000000000000",
        "4425a484a3cc1f2516d19196ffa10b83",
        "68656c6c6f0000000000000000000000",
        // record 3: 16 bytes
        "d2577badbe838c86e669d14d010340d9",
        "4c4a5243",
        "0100",
        "4000",
        "10000000",
        "00000000",
        "0300000000000000",
        "0000000000000000",
        "4e1c442fdf14dc7cae7671fa8df32205",
        "30313233343536373839616263646566",
    );
    assert_eq!(hex, expected);
}

#[derive(Debug, Clone)]
enum Op {
    Append(usize),
    Flush,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0usize..700).prop_map(Op::Append),
        2 => Just(Op::Flush),
        1 => Just(Op::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn random_append_flush_reopen(ops in proptest::collection::vec(op(), 1..80), msync: bool) {
        let tmp = tempfile::tempdir().unwrap();
        let mut cfg = config(tmp.path());
        cfg.flush_mode = if msync { FlushMode::Msync } else { FlushMode::Fdatasync };
        let mut model: Vec<Vec<u8>> = Vec::new();
        let (mut j, _) = Journal::open(cfg.clone()).unwrap();
        for op in ops {
            match op {
                Op::Append(len) => {
                    let b = body(model.len() as u64 + 1, len);
                    prop_assert_eq!(j.append(&b).unwrap(), model.len() as u64 + 1);
                    model.push(b);
                }
                Op::Flush => {
                    j.flush().unwrap();
                    prop_assert_eq!(j.durable_sequence(), model.len() as u64);
                }
                Op::Reopen => {
                    drop(j);
                    let (j2, report) = Journal::open(cfg.clone()).unwrap();
                    prop_assert_eq!(report.last_sequence, model.len() as u64);
                    prop_assert_eq!(report.torn_tail, None);
                    j = j2;
                }
            }
            prop_assert_eq!(j.last_sequence(), model.len() as u64);
        }
        j.flush().unwrap();
        for (i, b) in model.iter().enumerate() {
            prop_assert_eq!(j.read(i as u64 + 1).unwrap(), &b[..]);
        }
        drop(j);
        let r = JournalReader::open(tmp.path()).unwrap();
        let v = r.verify();
        prop_assert_eq!(v.end, End::Clean);
        prop_assert_eq!(v.records, model.len() as u64);
        let bodies: Vec<Vec<u8>> = r.records(1, None).map(|r| r.unwrap().body.to_vec()).collect();
        prop_assert_eq!(bodies, model);
    }
}
