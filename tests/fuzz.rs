//! Fuzzing with proptest (cargo-fuzz needs a nightly toolchain, which this project does not
//! use): the journal reader and writer's recovery scan and the journal body decoder fed arbitrary and structured-but-wrong input. Properties: no panic, and for
//! the journal, what is read back is always a prefix of what was written, or a named error.
//!
//! Short in CI; `LEDGERD_TORTURE_LONG=1` multiplies the cases (RELIABILITY.md has the counts).

use std::path::Path;

use ledgerd::journal::{Journal, JournalConfig, JournalReader};
use proptest::prelude::*;

fn cases(short: u32) -> u32 {
    if std::env::var_os("LEDGERD_TORTURE_LONG").is_some() {
        short * 50
    } else {
        short
    }
}

const SEGMENT: u64 = 1 << 20;
const RECORDS: u64 = 40;

fn body(seq: u64) -> Vec<u8> {
    (0..(seq as usize * 37) % 300).map(|i| (seq as usize * 31 + i * 7) as u8 | 1).collect()
}

/// A clean journal of `RECORDS` small records in one 1 MiB segment (damage across segments is
/// covered by tests/journal.rs and tests/faults.rs).
fn write_journal(dir: &Path) {
    let mut config = JournalConfig::new(dir);
    config.segment_size = SEGMENT;
    let (mut j, _) = Journal::open(config).unwrap();
    for _ in 0..RECORDS {
        let seq = j.last_sequence() + 1;
        j.append(&body(seq)).unwrap();
    }
    j.flush().unwrap();
}

/// Reads every record the reader yields; each must be the one written, in order.
fn check_prefix(dir: &Path) -> Result<u64, TestCaseError> {
    let reader = match JournalReader::open(dir) {
        Ok(r) => r,
        Err(_) => return Ok(0),
    };
    let _ = reader.verify();
    let mut it = reader.records(1, None);
    let mut seen = 0;
    while let Some(rec) = it.next_record() {
        let Ok(rec) = rec else { break };
        seen += 1;
        prop_assert_eq!(rec.seq, seen);
        prop_assert_eq!(rec.body, &body(rec.seq)[..]);
    }
    Ok(seen)
}

#[derive(Clone, Debug)]
enum Damage {
    /// Overwrite bytes at an offset (inside the records area or the header).
    Write { offset: u64, bytes: Vec<u8> },
    /// Flip one bit.
    Flip { offset: u64, bit: u8 },
    /// Cut the file.
    Truncate { len: u64 },
    /// A record header that lies about its body length.
    LyingLength { record: u64, len: u32 },
}

fn damage() -> impl Strategy<Value = Damage> {
    let span = 64 + RECORDS * 400;
    prop_oneof![
        (0..span, proptest::collection::vec(any::<u8>(), 1..64))
            .prop_map(|(offset, bytes)| Damage::Write { offset, bytes }),
        (0..span, 0u8..8).prop_map(|(offset, bit)| Damage::Flip { offset, bit }),
        (0..span).prop_map(|len| Damage::Truncate { len }),
        (1..RECORDS, any::<u32>()).prop_map(|(record, len)| Damage::LyingLength { record, len }),
    ]
}

fn apply(dir: &Path, damage: &Damage) {
    use std::os::unix::fs::FileExt;
    let path = dir.join("journal").join(format!("{:020}.seg", 0));
    let file = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
    match damage {
        Damage::Write { offset, bytes } => file.write_all_at(bytes, *offset).unwrap(),
        Damage::Flip { offset, bit } => {
            let mut b = [0u8];
            if file.read_exact_at(&mut b, *offset).is_err() {
                return;
            }
            file.write_all_at(&[b[0] ^ (1 << bit)], *offset).unwrap();
        }
        Damage::Truncate { len } => file.set_len(*len).unwrap(),
        Damage::LyingLength { record, len } => {
            // Walk to the record: 64-byte segment header, then 64 + padded body per record.
            let mut offset = 64u64;
            for seq in 1..=*record {
                if seq == *record {
                    file.write_all_at(&len.to_le_bytes(), offset + 24).unwrap();
                }
                offset += 64 + (body(seq).len() as u64).next_multiple_of(16);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(150)))]

    /// Damaged journals: the reader yields only records that were written, in order; opening
    /// for writing either refuses with a named error or keeps a prefix and appends after it.
    #[test]
    fn damaged_journal_reads_a_prefix_or_refuses(damages in proptest::collection::vec(damage(), 1..4)) {
        let dir = tempfile::tempdir().unwrap();
        write_journal(dir.path());
        for d in &damages {
            apply(dir.path(), d);
        }
        check_prefix(dir.path())?;
        let mut config = JournalConfig::new(dir.path());
        config.segment_size = SEGMENT;
        match Journal::open(config) {
            Ok((mut j, report)) => {
                let last = j.last_sequence();
                prop_assert!(last <= RECORDS);
                prop_assert_eq!(report.last_sequence, last);
                // The writer goes on after what it kept, and the result reads back whole.
                let seq = j.append(&body(last + 1)).unwrap();
                prop_assert_eq!(seq, last + 1);
                j.flush().unwrap();
                drop(j);
                prop_assert_eq!(check_prefix(dir.path())?, last + 1);
            }
            Err(e) => {
                let text = e.to_string();
                prop_assert!(text.contains("journal"), "unnamed error: {}", text);
            }
        }
    }

    /// Arbitrary bytes as a journal record body (an rkyv `Event`): validated, never trusted.
    #[test]
    fn event_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let mut aligned = rkyv::util::AlignedVec::<16>::new();
        aligned.extend_from_slice(&bytes);
        let _ = ledgerd::event::access(&aligned);
    }
}
