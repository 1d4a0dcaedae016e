//! Read-only view of a journal for tools and recovery: no lock, nothing written.
//!
//! Every record handed out has had its framing, checksum, sequence and chain verified. A damaged
//! record ends iteration quietly when nothing valid follows it (a torn tail the writer will cut)
//! and is an error otherwise.

use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::format::{
    parse_record, RecordHeader, SegmentHeader, Slot, RECORDS_OFFSET, RECORD_HEADER_SIZE,
};
use super::scan::{self, SegView, Tail};
use super::segment::{list_segments, JOURNAL_DIR};
use super::superblock::{self, Superblock};
use super::JournalError;

struct ReadSegment {
    index: u64,
    path: PathBuf,
    map: Mmap,
    header: Option<SegmentHeader>,
}

/// A read-only journal opened from a data directory.
pub struct JournalReader {
    data_dir: PathBuf,
    journal_dir: PathBuf,
    segments: Vec<ReadSegment>,
    /// The superblock: `None` when there is none, `Some(Err)` when no copy is valid.
    superblock: Option<Result<Superblock, String>>,
}

/// One verified record. `body` is 16-byte aligned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    pub seq: u64,
    /// Index of the segment (the number in its file name).
    pub segment: u64,
    /// Offset of the record header in the segment file.
    pub offset: u64,
    pub checksum: u128,
    /// Checksum of the previous record.
    pub chain: u128,
    /// The Raft term the record was written in (0 outside replication).
    pub term: u64,
    pub body: &'a [u8],
}

impl<'a> Record<'a> {
    /// The record whose verified header `h` is at `offset` of segment `segment`'s bytes.
    pub(super) fn parsed(segment: u64, map: &'a [u8], offset: usize, h: &RecordHeader) -> Self {
        let start = offset + RECORD_HEADER_SIZE;
        Record {
            seq: h.sequence,
            segment,
            offset: offset as u64,
            checksum: h.checksum,
            chain: h.chain,
            term: h.term,
            body: &map[start..start + h.body_len as usize],
        }
    }
}

/// How the journal ends, as `verify` sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// Only zeros after the last record.
    Clean,
    /// Damaged bytes after the last record and no valid record after them: a crash's torn
    /// write, which opening the journal cuts.
    Torn { segment: PathBuf, offset: u64, reason: String },
    /// Damage with valid records after it, or segments that do not fit together.
    Corrupt { segment: PathBuf, offset: u64, reason: String },
}

/// One finding of `verify`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub segment: PathBuf,
    pub offset: u64,
    pub reason: String,
}

/// Result of [`JournalReader::verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Valid records in the prefix.
    pub records: u64,
    pub first_sequence: u64,
    pub last_sequence: u64,
    pub last_checksum: u128,
    pub segments: usize,
    /// The newest sequence the superblock or a durability slot records as durable
    /// (acknowledged): a journal ending before it lost acknowledged records.
    pub acknowledged_sequence: u64,
    pub end: End,
    /// Everything found wrong, in file order (empty when `end` is `Clean`).
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    /// True when the journal would open without refusing (a torn tail is acceptable).
    pub fn is_ok(&self) -> bool {
        !matches!(self.end, End::Corrupt { .. })
    }
}

impl JournalReader {
    /// Maps every segment of `data_dir/journal` read-only. Takes no lock: a running writer may
    /// be appending, in which case its unflushed tail may look torn.
    pub fn open(data_dir: &Path) -> Result<JournalReader, JournalError> {
        let journal_dir = data_dir.join(JOURNAL_DIR);
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| JournalError::Io { path, source }
        };
        let superblock =
            superblock::read(data_dir).map_err(io(&superblock::superblock_path(data_dir)))?;
        let listed = match list_segments(&journal_dir) {
            // A superblock without its journal directory is for `verify` to report.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && superblock.is_some() => {
                Vec::new()
            }
            other => other.map_err(io(&journal_dir))?,
        };
        let mut segments = Vec::new();
        for (index, path) in listed {
            let file = File::open(&path).map_err(io(&path))?;
            // SAFETY: read-only map; a concurrent writer only stores into preallocated space and
            // never truncates, and every byte read is validated before it is trusted.
            let map = unsafe { Mmap::map(&file) }.map_err(io(&path))?;
            let header = SegmentHeader::decode(&map).ok();
            segments.push(ReadSegment { index, path, map, header });
        }
        Ok(JournalReader { data_dir: data_dir.to_path_buf(), journal_dir, segments, superblock })
    }

    /// `DIR/journal`.
    pub fn journal_dir(&self) -> &Path {
        &self.journal_dir
    }

    /// Number of segment files.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Path of the segment with the given index, if present.
    pub fn segment_path(&self, index: u64) -> Option<&Path> {
        self.segments.iter().find(|s| s.index == index).map(|s| s.path.as_path())
    }

    /// What a confirmed repair (`ledgerd --repair true --repair-discard-after K`) would discard:
    /// `Ok(None)` when the journal opens as it is, `Err` when no repair can help.
    pub fn repair_plan(&self) -> Result<Option<super::RepairPlan>, String> {
        if let Some(Err(reason)) = &self.superblock {
            return Err(format!("{reason}: restore the data directory from a backup"));
        }
        let views: Vec<SegView<'_>> =
            self.segments.iter().map(|s| SegView { index: s.index, bytes: &s.map }).collect();
        let sb = self.superblock.as_ref().and_then(|r| r.as_ref().ok());
        let found = scan::scan(&views, sb);
        let paths: Vec<PathBuf> = self.segments.iter().map(|s| s.path.clone()).collect();
        super::plan_repair(&found, &views, &paths, &self.data_dir)
    }

    /// Verified records with `from <= seq <= up_to` (no upper bound when `None`).
    pub fn records(&self, from: u64, up_to: Option<u64>) -> Records<'_> {
        // Start at the last segment that begins at or before `from`.
        let start = self
            .segments
            .iter()
            .rposition(|s| s.header.is_some_and(|h| h.first_sequence <= from))
            .unwrap_or(0);
        let mut r = Records {
            reader: self,
            seg: start,
            offset: RECORDS_OFFSET,
            next_seq: 0,
            chain: 0,
            from,
            up_to: up_to.unwrap_or(u64::MAX),
            done: false,
            error: None,
        };
        match r.enter_segment(start, None) {
            Ok(()) => {}
            Err(None) => r.done = true,
            Err(Some(e)) => r.error = Some(e),
        }
        r
    }

    /// Checks the whole journal: checksums, chain, sequence continuity, segment order.
    /// Also checks the journal against the superblock and the durability slots: missing
    /// segments or journal directory, records that were acknowledged but are missing or
    /// damaged, a missing or damaged superblock.
    pub fn verify(&self) -> VerifyReport {
        let views: Vec<SegView<'_>> =
            self.segments.iter().map(|s| SegView { index: s.index, bytes: &s.map }).collect();
        let sb = match &self.superblock {
            Some(Ok(sb)) => Some(sb),
            _ => None,
        };
        let found = scan::scan(&views, sb);
        let path = |seg: usize| {
            self.segments.get(seg).map_or_else(|| self.journal_dir.clone(), |s| s.path.clone())
        };
        let sb_path = superblock::superblock_path(&self.data_dir);
        let mut problems = Vec::new();
        // A journal without a superblock can only be a new one (no record yet).
        let superblock_problem = match &self.superblock {
            Some(Err(reason)) => Some(reason.clone()),
            None if found.records > 0 || self.segments.len() > 1 => Some(format!(
                "no superblock ({}): what the journal must hold is unknown (deleted, or an older \
                 format)",
                sb_path.display()
            )),
            _ => None,
        };
        let end = match (superblock_problem, found.tail) {
            (Some(reason), _) => {
                problems.push(Problem {
                    segment: sb_path.clone(),
                    offset: 0,
                    reason: reason.clone(),
                });
                End::Corrupt { segment: sb_path, offset: 0, reason }
            }
            (None, Tail::Clean) => End::Clean,
            (None, Tail::Missing { reason, .. }) => {
                let segment = self.journal_dir.clone();
                problems.push(Problem {
                    segment: segment.clone(),
                    offset: 0,
                    reason: reason.clone(),
                });
                End::Corrupt { segment, offset: 0, reason }
            }
            (None, Tail::Lost { seg, offset, reason })
            | (None, Tail::Broken { seg, offset, reason }) => {
                problems.push(Problem { segment: path(seg), offset: offset as u64, reason });
                let p = &problems[0];
                End::Corrupt {
                    segment: p.segment.clone(),
                    offset: p.offset,
                    reason: p.reason.clone(),
                }
            }
            (None, Tail::Damaged(d)) => {
                let (segment, offset) = (path(d.seg), d.offset as u64);
                problems.push(Problem {
                    segment: segment.clone(),
                    offset,
                    reason: d.reason.clone(),
                });
                match d.valid_after {
                    None => End::Torn { segment, offset, reason: d.reason },
                    Some((vseg, voff, vseq)) => {
                        problems.push(Problem {
                            segment: path(vseg),
                            offset: voff as u64,
                            reason: format!("valid record {vseq} after the damage"),
                        });
                        End::Corrupt { segment, offset, reason: d.reason }
                    }
                }
            }
        };
        VerifyReport {
            records: found.records,
            first_sequence: found.first_sequence,
            last_sequence: found.last_sequence,
            last_checksum: found.last_checksum,
            segments: self.segments.len(),
            acknowledged_sequence: found.claim.sequence,
            end,
            problems,
        }
    }
}

/// Iterator over verified records; see [`JournalReader::records`].
pub struct Records<'a> {
    reader: &'a JournalReader,
    seg: usize,
    offset: usize,
    next_seq: u64,
    chain: u128,
    from: u64,
    up_to: u64,
    done: bool,
    /// An error found before the first record, returned by the first call.
    error: Option<JournalError>,
}

impl<'a> Records<'a> {
    /// The next record, `None` at the end (including a torn tail), or one error then `None`.
    pub fn next_record(&mut self) -> Option<Result<Record<'a>, JournalError>> {
        if let Some(e) = self.error.take() {
            self.done = true;
            return Some(Err(e));
        }
        loop {
            if self.done || self.next_seq > self.up_to {
                return None;
            }
            let segs = &self.reader.segments;
            let s = &segs[self.seg];
            match parse_record(&s.map, self.offset) {
                Slot::Valid(h) if h.sequence == self.next_seq && h.chain == self.chain => {
                    let off = self.offset;
                    self.offset += h.size();
                    self.next_seq += 1;
                    self.chain = h.checksum;
                    if h.sequence < self.from {
                        continue;
                    }
                    return Some(Ok(Record::parsed(s.index, &s.map, off, &h)));
                }
                Slot::Zero => {
                    // End of this segment's data: a valid record later in it is corruption.
                    let end = scan::nonzero_end(&s.map, self.offset).max(self.offset);
                    let live = &s.map[..end.min(s.map.len())];
                    if let Some((o, q)) = scan::probe(live, self.offset + 16, self.next_seq - 1) {
                        let reason =
                            format!("zeroed record; valid record {q} follows at offset {o}");
                        return self.fail(self.offset, reason);
                    }
                    if self.seg + 1 >= segs.len() {
                        self.done = true;
                        return None;
                    }
                    let (seq, chain) = (self.next_seq, self.chain);
                    match self.enter_segment(self.seg + 1, Some((seq, chain))) {
                        Ok(()) => continue,
                        Err(Some(e)) => {
                            self.done = true;
                            return Some(Err(e));
                        }
                        Err(None) => {
                            self.done = true;
                            return None;
                        }
                    }
                }
                Slot::Valid(h) => {
                    let reason = format!(
                        "record sequence {} / chain {:#034x} where sequence {} / chain {:#034x} \
                         was expected",
                        h.sequence, h.chain, self.next_seq, self.chain
                    );
                    return self.damaged(reason);
                }
                Slot::Damaged(reason) => return self.damaged(reason),
            }
        }
    }

    /// A damaged record: the end of the journal if nothing valid follows, else corruption.
    fn damaged(&mut self, reason: String) -> Option<Result<Record<'a>, JournalError>> {
        let segs = &self.reader.segments;
        let after = self.next_seq - 1;
        let later = scan::probe(&segs[self.seg].map, self.offset + 16, after).is_some()
            || segs[self.seg + 1..]
                .iter()
                .any(|s| scan::probe(&s.map, RECORDS_OFFSET, after).is_some());
        if later {
            self.fail(self.offset, format!("{reason}; valid records follow"))
        } else {
            self.done = true;
            None
        }
    }

    fn fail(&mut self, offset: usize, reason: String) -> Option<Result<Record<'a>, JournalError>> {
        self.done = true;
        let segment = self.reader.segments[self.seg].path.clone();
        Some(Err(JournalError::Corrupt { segment, offset: offset as u64, reason }))
    }

    /// Moves to segment `seg`, checking it continues `prev` = (next sequence, chain).
    /// `Err(None)` means "no such segment".
    fn enter_segment(
        &mut self,
        seg: usize,
        prev: Option<(u64, u128)>,
    ) -> Result<(), Option<JournalError>> {
        let segs = &self.reader.segments;
        let Some(s) = segs.get(seg) else { return Err(None) };
        let corrupt = |reason: String| {
            Some(JournalError::Corrupt { segment: s.path.clone(), offset: 0, reason })
        };
        let h = match SegmentHeader::decode(&s.map) {
            Ok(h) => h,
            Err(reason) => return Err(corrupt(reason)),
        };
        if h.index != s.index {
            return Err(corrupt(format!(
                "header names segment {} but the file name says {}",
                h.index, s.index
            )));
        }
        if let Some((next_seq, chain)) = prev {
            if segs[seg - 1].index + 1 != s.index {
                return Err(corrupt(format!("segment {} is missing", segs[seg - 1].index + 1)));
            }
            if h.first_sequence != next_seq || h.chain_in != chain {
                return Err(corrupt(format!(
                    "segment starts at sequence {} but the previous one ends before {next_seq}",
                    h.first_sequence
                )));
            }
        }
        self.seg = seg;
        self.offset = RECORDS_OFFSET;
        self.next_seq = h.first_sequence;
        self.chain = h.chain_in;
        Ok(())
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<Record<'a>, JournalError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_record()
    }
}
