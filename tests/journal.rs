//! Journal: round trips, crash tails, corruption, roll-over, faults, pinned bytes, random runs.

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ledgerd::journal::{
    segment_path, End, FaultPlan, FlushMode, Journal, JournalConfig, JournalError, JournalReader,
};
use proptest::prelude::*;
use xxhash_rust::xxh3::{xxh3_128, xxh3_64};

const SMALL_SEGMENT: u64 = 8192;

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

/// Where records start in a segment (page 0 holds the header and the durability slots).
const RECORDS_OFFSET: u64 = 4096;

/// A fresh `work` data directory holding `src`'s superblock and an empty journal directory,
/// ready for a segment to be written into it.
fn fresh_copy(src: &Path, work: &Path) {
    let _ = fs::remove_dir_all(work);
    fs::create_dir_all(journal_dir(work)).unwrap();
    fs::copy(src.join("superblock"), work.join("superblock")).unwrap();
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
fn terms_of_a_replica_journal_survive_restart_and_roll_over() {
    let tmp = tempfile::tempdir().unwrap();
    // Term of record `seq`: runs of records in one term, as a replica's log has them.
    let term = |seq: u64| 1 + seq / 7;
    {
        let (mut j, _) = Journal::open(config(tmp.path())).unwrap();
        for seq in 1..=60 {
            // Bodies of 300 bytes roll over an 8 KiB segment several times; some are empty
            // (a new leader's first entry carries no event).
            let b = if seq % 9 == 0 { Vec::new() } else { body(seq, 300) };
            assert_eq!(j.append_in_term(&b, term(seq)).unwrap(), seq);
        }
        j.append(&body(61, 10)).unwrap();
        j.flush().unwrap();
        assert_eq!(j.term_of(5), Some(term(5)));
        assert_eq!(j.term_of(61), Some(0), "a plain append is term 0");
        assert_eq!(j.term_of(62), None);
        assert_eq!(j.term_of(0), None);
    }
    let (j, _) = Journal::open(config(tmp.path())).unwrap();
    assert!(j.first_sequence() == 1 && j.last_sequence() == 61);
    for seq in 1..=60 {
        assert_eq!(j.term_of(seq), Some(term(seq)), "record {seq}");
    }
    drop(j);
    let r = JournalReader::open(tmp.path()).unwrap();
    assert!(r.segment_count() > 2, "the records span segments");
    let mut it = r.records(1, None);
    let mut seen = 0;
    while let Some(rec) = it.next_record() {
        let rec = rec.unwrap();
        seen += 1;
        let expected = if rec.seq == 61 { 0 } else { term(rec.seq) };
        assert_eq!(rec.term, expected, "record {}", rec.seq);
        assert_eq!(rec.body.is_empty(), rec.seq % 9 == 0);
    }
    assert_eq!(seen, 61);
}

/// Appends records `from..=to` in `term` (bodies of 300 bytes: several per 8 KiB segment).
fn append_terms(j: &mut Journal, from: u64, to: u64, term: u64) {
    for seq in from..=to {
        assert_eq!(j.append_in_term(&body(seq * term, 300), term).unwrap(), seq);
    }
}

#[test]
fn durability_claims_stop_at_the_claim_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(tmp.path());
    cfg.segment_size = 1 << 20;
    {
        let (mut j, _) = Journal::open(cfg.clone()).unwrap();
        j.limit_claims(0);
        append_terms(&mut j, 1, 30, 1);
        j.flush().unwrap();
        j.limit_claims(20);
        append_terms(&mut j, 31, 40, 1);
        j.flush().unwrap();
        j.seal().unwrap();
        assert_eq!(j.claimed_sequence(), 20, "no slot names a record past the limit");
    }
    let (mut j, report) = Journal::open(cfg).unwrap();
    assert_eq!(report.acknowledged_sequence, 20, "a start insists on the limit, no further");
    assert_eq!(report.last_sequence, 40);
    j.limit_claims(20);
    assert_eq!(j.cut_after(20).unwrap(), 20);
}

#[test]
fn a_replica_cuts_records_past_its_claims_and_the_journal_reopens() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let (mut j, _) = Journal::open(config(tmp.path())).unwrap();
        j.limit_claims(0);
        append_terms(&mut j, 1, 60, 1);
        j.flush().unwrap();
        j.limit_claims(20);
        append_terms(&mut j, 61, 64, 1);
        j.flush().unwrap();
        j.seal().unwrap();
    }
    let (mut j, report) = Journal::open(config(tmp.path())).unwrap();
    // Eleven records fill a segment: the newest segment's header implies 55 durable, and a
    // cut below it removes that segment with its claim.
    assert_eq!(report.acknowledged_sequence, 55);
    let segments_before = report.segments;
    j.limit_claims(20);
    // Within the active segment.
    assert_eq!(j.cut_after(62).unwrap(), 2);
    append_terms(&mut j, 63, 66, 2);
    j.flush().unwrap();
    // Across segments: the later ones go.
    assert_eq!(j.cut_after(30).unwrap(), 36);
    assert_eq!(j.last_sequence(), 30);
    assert_eq!(j.term_of(31), None);
    append_terms(&mut j, 31, 40, 3);
    j.flush().unwrap();
    drop(j);
    let (j, report) = Journal::open(config(tmp.path())).unwrap();
    assert!(
        report.segments < segments_before,
        "{} segments, {segments_before} before",
        report.segments
    );
    assert_eq!((report.last_sequence, report.torn_tail.clone()), (40, None));
    for seq in 1..=40 {
        let term = if seq <= 30 { 1 } else { 3 };
        assert_eq!(j.term_of(seq), Some(term), "record {seq}");
        assert_eq!(j.read(seq).unwrap(), &body(seq * term, 300)[..], "record {seq}");
    }
    drop(j);
    let verify = JournalReader::open(tmp.path()).unwrap().verify();
    assert!(verify.is_ok(), "{verify:?}");
}

#[test]
fn a_cut_stopped_at_any_step_leaves_a_journal_that_opens_and_reaches_the_cut() {
    let mut stops = 0;
    for nth in 1..=20u64 {
        let tmp = tempfile::tempdir().unwrap();
        let plan = Arc::new(FaultPlan::new());
        let mut cfg = config(tmp.path());
        cfg.fault = Some(plan.clone());
        let segments_before;
        {
            let (mut j, _) = Journal::open(cfg.clone()).unwrap();
            j.limit_claims(0);
            append_terms(&mut j, 1, 60, 1);
            j.flush().unwrap();
            j.limit_claims(20);
            j.seal().unwrap();
            segments_before = JournalReader::open(tmp.path()).unwrap().segment_count();
            plan.fail_cut_step(nth, FaultPlan::EIO);
            if j.cut_after(30).is_ok() {
                // Every step ran: `nth` is past the last one.
                assert!(stops > 2, "only {stops} steps");
                break;
            }
            stops += 1;
        }
        // The process stopped before step `nth`: what is on disk opens, holds records
        // 1..=30 as they were, and perhaps some of the cut ones.
        plan.clear();
        let (mut j, report) = Journal::open(cfg.clone())
            .unwrap_or_else(|e| panic!("stopped before cut step {nth}: {e}"));
        assert!(report.last_sequence >= 30, "step {nth}: ends at {}", report.last_sequence);
        assert!(report.segments <= segments_before);
        for seq in 1..=30 {
            assert_eq!(j.read(seq).unwrap(), &body(seq, 300)[..], "step {nth}, record {seq}");
        }
        // The replica cuts again after its restart, and this time it completes.
        j.limit_claims(20);
        j.cut_after(30).unwrap();
        append_terms(&mut j, 31, 33, 2);
        j.flush().unwrap();
        drop(j);
        let (j, report) = Journal::open(cfg).unwrap();
        assert_eq!(report.last_sequence, 33, "step {nth}");
        assert_eq!(j.term_of(31), Some(2));
    }
    assert!(stops > 2, "the cut was stopped at {stops} steps");
}

#[test]
#[should_panic(expected = "below the claim limit")]
fn a_cut_below_the_claim_limit_stops_the_process() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut j, _) = Journal::open(config(tmp.path())).unwrap();
    j.limit_claims(0);
    append_terms(&mut j, 1, 10, 1);
    j.flush().unwrap();
    j.limit_claims(8);
    let _ = j.cut_after(7);
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
    let room = (SMALL_SEGMENT - RECORDS_OFFSET) as usize - 64;
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
        fresh_copy(&src, &work);
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
        fresh_copy(&src, &work);
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
    // A confirmed repair cuts there and keeps the prefix; another confirmation is refused.
    let mut cfg = config(tmp.path());
    cfg.discard_after = Some(1);
    assert!(matches!(Journal::open(cfg.clone()), Err(JournalError::RepairMismatch { .. })));
    let plan = JournalReader::open(tmp.path()).unwrap().repair_plan().unwrap().unwrap();
    assert_eq!((plan.keep_through, plan.discard_through), (2, 5), "{plan}");
    cfg.discard_after = Some(2);
    let (_j, report) = Journal::open(cfg).unwrap();
    assert_eq!(report.last_sequence, 2);
    assert_eq!(report.torn_tail, Some((seg.clone(), off)));
    assert_eq!(report.repair, Some(plan));
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
}

#[test]
fn newest_segment_missing_is_refused_by_the_superblock() {
    let tmp = tempfile::tempdir().unwrap();
    let segs = rolled_journal(tmp.path());
    fs::remove_file(segs.last().unwrap()).unwrap();
    let err = Journal::open(config(tmp.path())).unwrap_err();
    let name = format!("segment {} is missing", segs.len() - 1);
    assert!(
        matches!(&err, JournalError::Refused { .. }) && err.to_string().contains(&name),
        "{err}"
    );
    let v = JournalReader::open(tmp.path()).unwrap().verify();
    assert!(!v.is_ok(), "{v:?}");
    // A confirmed repair accepts the loss: it keeps what the remaining segments hold.
    let plan = JournalReader::open(tmp.path()).unwrap().repair_plan().unwrap().unwrap();
    let mut cfg = config(tmp.path());
    cfg.discard_after = Some(plan.keep_through);
    let (j, report) = Journal::open(cfg).unwrap();
    assert_eq!(j.last_sequence(), plan.keep_through);
    assert!(report.repair.is_some());
    drop(j);
    assert!(JournalReader::open(tmp.path()).unwrap().verify().is_ok());
    let (j, _) = Journal::open(config(tmp.path())).unwrap();
    assert_eq!(j.last_sequence(), plan.keep_through);
}

#[test]
fn journal_directory_or_superblock_missing_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    write_journal(config(tmp.path()), 5, 100);
    let moved = tmp.path().join("journal.moved");
    fs::rename(journal_dir(tmp.path()), &moved).unwrap();
    let err = Journal::open(config(tmp.path())).unwrap_err();
    assert!(
        err.to_string().contains("journal directory") && err.to_string().contains("missing"),
        "{err}"
    );
    assert!(!journal_dir(tmp.path()).exists(), "the refusal created nothing");
    assert!(!JournalReader::open(tmp.path()).unwrap().verify().is_ok());
    fs::rename(&moved, journal_dir(tmp.path())).unwrap();
    fs::rename(tmp.path().join("superblock"), tmp.path().join("superblock.moved")).unwrap();
    let err = Journal::open(config(tmp.path())).unwrap_err();
    assert!(err.to_string().contains("no superblock"), "{err}");
    assert!(!JournalReader::open(tmp.path()).unwrap().verify().is_ok());
}

#[test]
fn older_format_is_refused_saying_what_to_do() {
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir_all(journal_dir(tmp.path())).unwrap();
    // A version 1 segment header (magic, version 1).
    let mut seg = vec![0u8; SMALL_SEGMENT as usize];
    seg[..8].copy_from_slice(b"LDGRJSEG");
    seg[8..10].copy_from_slice(&1u16.to_le_bytes());
    fs::write(segment_path(&journal_dir(tmp.path()), 0), &seg).unwrap();
    let err = Journal::open(config(tmp.path())).unwrap_err().to_string();
    assert!(err.contains("format version 1") && err.contains("older ledgerd"), "{err}");
}

/// The durability slots: a flush records what the previous flush made durable, a seal what
/// the last one did; a damaged record covered by a claim is refused, an unclaimed one is cut.
#[test]
fn acknowledged_records_are_told_from_a_torn_write() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut j, _) = Journal::open(config(tmp.path())).unwrap();
    for round in 1..=3u64 {
        j.append(&body(round, 100)).unwrap();
        j.flush().unwrap();
        assert_eq!(j.claimed_sequence(), round - 1, "a flush claims the previous flush");
    }
    assert!(j.seal_pending());
    drop(j);
    // Not sealed: record 3 is in the window, so damage to it reads as a torn write.
    let (seg, off, _) = locate(tmp.path(), 3);
    let pristine = fs::read(&seg).unwrap();
    let mut bytes = pristine.clone();
    bytes[off as usize + 70] ^= 1;
    fs::write(&seg, &bytes).unwrap();
    let v = JournalReader::open(tmp.path()).unwrap().verify();
    assert!(matches!(v.end, End::Torn { .. }) && v.acknowledged_sequence == 2, "{v:?}");
    // Record 2 is claimed: damage to it is refused.
    let (_, off2, _) = locate(tmp.path(), 2);
    let mut bytes = pristine.clone();
    bytes[off2 as usize + 70] ^= 1;
    bytes[off as usize..].fill(0);
    fs::write(&seg, &bytes).unwrap();
    let err = Journal::open(config(tmp.path())).unwrap_err();
    assert!(err.to_string().contains("acknowledged records are missing"), "{err}");
    assert!(!JournalReader::open(tmp.path()).unwrap().verify().is_ok());
    // Sealed: record 3 is claimed too.
    fs::write(&seg, &pristine).unwrap();
    let (mut j, _) = Journal::open(config(tmp.path())).unwrap();
    j.seal().unwrap();
    assert_eq!(j.claimed_sequence(), 3);
    assert!(!j.seal_pending());
    drop(j);
    let sealed = fs::read(&seg).unwrap();
    let mut bytes = sealed.clone();
    bytes[off as usize + 70] ^= 1;
    fs::write(&seg, &bytes).unwrap();
    assert!(Journal::open(config(tmp.path())).is_err());
    // A journal cut short (the file ends before record 3) is refused too.
    let f = OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(off + 10).unwrap();
    drop(f);
    let err = Journal::open(config(tmp.path())).unwrap_err();
    assert!(err.to_string().contains("up to sequence 3"), "{err}");
    // Garbage after the sealed end is a torn write of something never acknowledged: cut.
    let mut bytes = sealed;
    let end = (off + 64 + 112) as usize;
    bytes[end..end + 40].fill(0xab);
    fs::write(&seg, &bytes).unwrap();
    let (j, report) = Journal::open(config(tmp.path())).unwrap();
    assert_eq!((j.last_sequence(), report.torn_tail.map(|t| t.1)), (3, Some(end as u64)));
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
fn first_segment_missing_is_refused_by_the_superblock() {
    let tmp = tempfile::tempdir().unwrap();
    let segs = rolled_journal(tmp.path());
    fs::remove_file(&segs[0]).unwrap();
    let err = Journal::open(config(tmp.path())).unwrap_err();
    assert!(err.to_string().contains("oldest segment 0"), "{err}");
    assert!(!JournalReader::open(tmp.path()).unwrap().verify().is_ok());
    // No repair can rebuild history that is not there.
    assert!(JournalReader::open(tmp.path()).unwrap().repair_plan().is_err());
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
    let ledger_id = j.ledger_id();
    j.append(b"").unwrap();
    j.append(b"hello").unwrap();
    j.append(b"0123456789abcdef").unwrap();
    j.flush().unwrap();
    drop(j);
    let seg = fs::read(segment_path(&journal_dir(tmp.path()), 0)).unwrap();
    assert_eq!(seg.len() as u64, SMALL_SEGMENT);
    let r = RECORDS_OFFSET as usize;
    let used = r + 64 + 80 + 80;
    assert!(seg[used..].iter().all(|&b| b == 0));
    // Page 0: the header, then (one flush, nothing durable before it) no durability slot.
    assert!(seg[128..r].iter().all(|&b| b == 0));
    let le128 = |b: &[u8]| u128::from_le_bytes(b.try_into().unwrap());
    assert_eq!(le128(&seg[56..72]), ledger_id, "the ledger id sits at 56..72");
    assert_eq!(u64::from_le_bytes(seg[120..128].try_into().unwrap()), xxh3_64(&seg[..120]));
    let mut header = seg[..128].to_vec();
    header[56..72].fill(0xee); // the random ledger id
    header[120..128].fill(0xcc); // its checksum
    let hex: String = header.iter().map(|b| format!("{b:02x}")).collect();
    let expected_header = concat!(
        "4c4447524a534547", // magic
        "0200",             // version 2
        "8000",             // header size 128
        "00000000",
        "0000000000000000",                 // segment index
        "0100000000000000",                 // first sequence
        "0020000000000000",                 // segment size 8192
        "00000000000000000000000000000000", // chain in
        "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee", // ledger id
        "000000000000000000000000000000000000000000000000",
        "000000000000000000000000000000000000000000000000",
        "cccccccccccccccc", // header checksum
    );
    assert_eq!(hex, expected_header);
    // Records, from offset 4096: field positions, independent of the hex below.
    assert_eq!(&seg[r + 16..r + 20], b"LJRC");
    assert_eq!(u64::from_le_bytes(seg[r + 64 + 32..r + 64 + 40].try_into().unwrap()), 2);
    assert_eq!(u32::from_le_bytes(seg[r + 64 + 24..r + 64 + 28].try_into().unwrap()), 5);
    assert_eq!(&seg[r + 128..r + 133], b"hello");
    assert_eq!(seg[r + 64 + 48..r + 128], seg[r..r + 16], "record 2 chains to record 1");
    // Checksums, recomputed here from the format's definition.
    assert_eq!(le128(&seg[r..r + 16]), xxh3_128(&seg[r + 16..r + 64]));
    assert_eq!(le128(&seg[r + 64..r + 80]), xxh3_128(&seg[r + 80..r + 64 + 64 + 5]));
    assert_eq!(le128(&seg[r + 144..r + 160]), xxh3_128(&seg[r + 160..r + 144 + 64 + 16]));
    let hex: String = seg[r..used].iter().map(|b| format!("{b:02x}")).collect();
    let expected = concat!(
        // record 1: empty body
        "d55fc739805e34c58629e3abd53ff626",
        "4c4a5243",
        "0200",
        "4000",
        "00000000",
        "00000000",
        "0100000000000000",
        "0000000000000000",
        "00000000000000000000000000000000",
        // record 2: "hello"
        "fc5b01e3d929b300133e83f831e759b5",
        "4c4a5243",
        "0200",
        "4000",
        "05000000",
        "00000000",
        "0200000000000000",
        "0000000000000000",
        "d55fc739805e34c58629e3abd53ff626",
        "68656c6c6f0000000000000000000000",
        // record 3: 16 bytes
        "b9d854eeb0d021a8b6ea6b27c08a82c5",
        "4c4a5243",
        "0200",
        "4000",
        "10000000",
        "00000000",
        "0300000000000000",
        "0000000000000000",
        "fc5b01e3d929b300133e83f831e759b5",
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
