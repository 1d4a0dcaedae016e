//! Follows a live journal: verified records in sequence order, for a reader in the same
//! process as the writer (the cold index's indexer thread).
//!
//! The writer appends through its own map; the follower maps segment files read-only and reads
//! records only up to a sequence the caller knows is durable, so it never looks at bytes that
//! are still being written. Every record is verified like [`super::JournalReader`] does
//! (framing and checksum by [`parse_record`], then sequence and chain), and each segment's
//! header must continue the previous one. It must not write anything.
//!
//! Bounded: one segment map at a time. Segments are found by file name as the writer creates
//! them (`DIR/journal/{index:020}.seg`), so the directory is listed only when opening.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::format::{parse_record, SegmentHeader, Slot, RECORDS_OFFSET, SEGMENT_HEADER_SIZE};
use super::reader::Record;
use super::segment::{list_segments, segment_path, JOURNAL_DIR};
use super::JournalError;

/// The segment being read.
struct FollowSegment {
    index: u64,
    path: PathBuf,
    map: Mmap,
}

/// Sequential reader of a journal another thread is appending to; see the module docs.
pub struct JournalFollower {
    journal_dir: PathBuf,
    /// `None` until a segment holding `next_seq` exists (a journal with no segment yet).
    segment: Option<FollowSegment>,
    /// Offset of the next record header in `segment`.
    offset: usize,
    /// Sequence of the next record in the journal (records below `from` are skipped).
    next_seq: u64,
    /// Checksum of record `next_seq - 1`.
    chain: u128,
    /// First sequence handed out.
    from: u64,
}

impl JournalFollower {
    /// Positions the follower at `from_seq` (at least 1): the last segment whose first
    /// sequence is at or before it. Records before `from_seq` in that segment are verified and
    /// skipped by `next_record`.
    pub fn open(data_dir: &Path, from_seq: u64) -> Result<JournalFollower, JournalError> {
        assert!(from_seq >= 1, "journal sequences start at 1");
        let journal_dir = data_dir.join(JOURNAL_DIR);
        let mut follower = JournalFollower {
            journal_dir,
            segment: None,
            offset: RECORDS_OFFSET,
            next_seq: 0,
            chain: 0,
            from: from_seq,
        };
        follower.locate()?;
        Ok(follower)
    }

    /// The sequence of the next record `next_record` would hand out.
    pub fn next_sequence(&self) -> u64 {
        self.next_seq.max(self.from)
    }

    /// Lists the journal directory and enters the segment holding `from`. Leaves `segment`
    /// empty when the journal has no segment yet.
    fn locate(&mut self) -> Result<(), JournalError> {
        let listed = match list_segments(&self.journal_dir) {
            Ok(listed) => listed,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => return Err(JournalError::Io { path: self.journal_dir.clone(), source }),
        };
        // Headers are read with one small read each; only the chosen segment is mapped.
        let mut chosen = None;
        for (index, path) in listed {
            let mut head = [0u8; SEGMENT_HEADER_SIZE];
            let file = File::open(&path)
                .map_err(|source| JournalError::Io { path: path.clone(), source })?;
            file.read_exact_at(&mut head, 0)
                .map_err(|source| JournalError::Io { path: path.clone(), source })?;
            let first_sequence = SegmentHeader::decode(&head)
                .map_err(|reason| JournalError::Corrupt {
                    segment: path.clone(),
                    offset: 0,
                    reason,
                })?
                .first_sequence;
            if first_sequence > self.from {
                break;
            }
            chosen = Some((index, path));
        }
        let Some((index, path)) = chosen else {
            return Ok(());
        };
        let segment = map_segment(index, path)?;
        let header = decode_header(&segment)?;
        self.enter(segment, header);
        Ok(())
    }

    fn enter(&mut self, segment: FollowSegment, header: SegmentHeader) {
        self.segment = Some(segment);
        self.offset = RECORDS_OFFSET;
        self.next_seq = header.first_sequence;
        self.chain = header.chain_in;
    }

    /// The next record if its sequence is at most `up_to`; `None` when there is none yet.
    ///
    /// `up_to` must be durable (or at least completely written): bytes of records after it
    /// are never read. After an error the position is unchanged, so a later call retries.
    pub fn next_record(&mut self, up_to: u64) -> Option<Result<Record<'_>, JournalError>> {
        loop {
            if self.next_sequence() > up_to {
                return None;
            }
            if self.segment.is_none() {
                if let Err(e) = self.locate() {
                    return Some(Err(e));
                }
                if self.segment.is_none() {
                    let reason = format!("record {} is durable but no segment holds it", up_to);
                    return Some(Err(self.corrupt(0, reason)));
                }
                continue;
            }
            let s = self.segment.as_ref().expect("checked above");
            match parse_record(&s.map, self.offset) {
                Slot::Valid(h) if h.sequence == self.next_seq && h.chain == self.chain => {
                    let off = self.offset;
                    self.offset += h.size();
                    self.next_seq += 1;
                    self.chain = h.checksum;
                    if h.sequence < self.from {
                        continue;
                    }
                    let s = self.segment.as_ref().expect("checked above");
                    return Some(Ok(Record::parsed(s.index, &s.map, off, &h)));
                }
                Slot::Zero => {
                    // `next_seq` is durable, so the writer rolled over to the next segment.
                    if let Err(e) = self.next_segment() {
                        return Some(Err(e));
                    }
                }
                Slot::Valid(h) => {
                    let reason = format!(
                        "record sequence {} / chain {:#034x} where sequence {} / chain {:#034x} \
                         was expected",
                        h.sequence, h.chain, self.next_seq, self.chain
                    );
                    return Some(Err(self.corrupt(self.offset as u64, reason)));
                }
                Slot::Damaged(reason) => {
                    let reason = format!("durable record {}: {reason}", self.next_seq);
                    return Some(Err(self.corrupt(self.offset as u64, reason)));
                }
            }
        }
    }

    /// Enters the segment after the current one, which must continue it exactly.
    fn next_segment(&mut self) -> Result<(), JournalError> {
        let index = self.segment.as_ref().expect("a current segment").index + 1;
        let path = segment_path(&self.journal_dir, index);
        if !path.exists() {
            let reason = format!(
                "record {} is durable but segment {index} that must hold it is missing",
                self.next_seq
            );
            return Err(JournalError::Corrupt { segment: path, offset: 0, reason });
        }
        let segment = map_segment(index, path)?;
        let header = decode_header(&segment)?;
        if header.first_sequence != self.next_seq || header.chain_in != self.chain {
            let reason = format!(
                "segment starts at sequence {} but the previous one ends before {}",
                header.first_sequence, self.next_seq
            );
            return Err(JournalError::Corrupt { segment: segment.path, offset: 0, reason });
        }
        self.enter(segment, header);
        Ok(())
    }

    fn corrupt(&self, offset: u64, reason: String) -> JournalError {
        let segment =
            self.segment.as_ref().map_or_else(|| self.journal_dir.clone(), |s| s.path.clone());
        JournalError::Corrupt { segment, offset, reason }
    }
}

fn map_segment(index: u64, path: PathBuf) -> Result<FollowSegment, JournalError> {
    let io = |source| JournalError::Io { path: path.clone(), source };
    let file = File::open(&path).map_err(io)?;
    // SAFETY: read-only map of a preallocated segment file; the writer only stores into space
    // it preallocated and never truncates a segment it is writing, and every byte read is
    // validated (checksums) before it is trusted. Bytes past the durable sequence are not read.
    let map = unsafe { Mmap::map(&file) }.map_err(io)?;
    Ok(FollowSegment { index, path, map })
}

fn decode_header(segment: &FollowSegment) -> Result<SegmentHeader, JournalError> {
    let corrupt =
        |reason: String| JournalError::Corrupt { segment: segment.path.clone(), offset: 0, reason };
    let header = SegmentHeader::decode(&segment.map).map_err(corrupt)?;
    if header.index != segment.index {
        return Err(corrupt(format!(
            "header names segment {} but the file name says {}",
            header.index, segment.index
        )));
    }
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{Journal, JournalConfig};

    fn body(seq: u64) -> Vec<u8> {
        // Varied lengths (some larger than a small segment's share) and contents.
        let len = (seq as usize * 37) % 700 + 1;
        (0..len).map(|i| (seq as usize * 31 + i) as u8).collect()
    }

    #[test]
    fn follows_a_live_journal_across_segments() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = JournalConfig::new(dir.path());
        config.segment_size = 16 << 10;
        let (mut journal, _) = Journal::open(config).unwrap();
        let mut follower = JournalFollower::open(dir.path(), 1).unwrap();
        assert!(follower.next_record(journal.durable_sequence()).is_none());
        let total = 400u64;
        let mut seen = 0u64;
        for seq in 1..=total {
            assert_eq!(journal.append(&body(seq)).unwrap(), seq);
            if seq % 7 == 0 {
                journal.flush().unwrap();
            }
            let durable = journal.durable_sequence();
            while let Some(r) = follower.next_record(durable) {
                let r = r.unwrap();
                seen += 1;
                assert_eq!(r.seq, seen);
                assert_eq!(r.body, &body(r.seq)[..]);
            }
            assert_eq!(seen, durable, "every durable record, none beyond");
        }
        journal.flush().unwrap();
        while let Some(r) = follower.next_record(journal.durable_sequence()) {
            let r = r.unwrap();
            seen += 1;
            assert_eq!((r.seq, r.body), (seen, &body(seen)[..]));
        }
        assert_eq!(seen, total);
        assert!(list_segments(&dir.path().join(JOURNAL_DIR)).unwrap().len() > 5);
    }

    #[test]
    fn does_not_return_records_past_up_to() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _) = Journal::open(JournalConfig::new(dir.path())).unwrap();
        for seq in 1..=10 {
            journal.append(&body(seq)).unwrap();
        }
        journal.flush().unwrap();
        let mut follower = JournalFollower::open(dir.path(), 1).unwrap();
        for seq in 1..=4 {
            assert_eq!(follower.next_record(4).unwrap().unwrap().seq, seq);
        }
        assert!(follower.next_record(4).is_none());
        assert_eq!(follower.next_record(5).unwrap().unwrap().seq, 5);
    }

    #[test]
    fn starts_in_the_segment_holding_from_seq() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = JournalConfig::new(dir.path());
        config.segment_size = 16 << 10;
        let (mut journal, _) = Journal::open(config).unwrap();
        for seq in 1..=200 {
            journal.append(&body(seq)).unwrap();
        }
        journal.flush().unwrap();
        for from in [1u64, 2, 57, 150, 200] {
            let mut follower = JournalFollower::open(dir.path(), from).unwrap();
            let mut expected = from;
            while let Some(r) = follower.next_record(200) {
                let r = r.unwrap();
                assert_eq!((r.seq, r.body), (expected, &body(expected)[..]));
                expected += 1;
            }
            assert_eq!(expected, 201);
        }
    }
}
