//! Recovery scan: walks segments in order and decides where the valid journal ends.
//!
//! Shared by `Journal::open` (which then cuts a torn tail) and `JournalReader::verify` (which only
//! reports). The rule (journal-format.md §5): the journal is the longest prefix of records with
//! valid framing, checksum, consecutive sequence numbers and an unbroken chain. Whatever follows
//! is a *torn tail* if no valid record with a higher sequence number appears anywhere after it,
//! and *corruption* otherwise. Then what the journal must hold is compared with what it holds:
//! the superblock (first and newest segment, the ledger id, a durable sequence) and the
//! durability slots (the newest sequence a flush or seal recorded as durable). A journal that
//! ends before a claimed sequence lost acknowledged records: that is never a torn tail.

use super::format::{
    parse_record, DurableSlot, SegmentHeader, Slot, RECORDS_OFFSET, RECORD_ALIGN,
    RECORD_HEADER_SIZE, RECORD_MAGIC,
};
use super::superblock::Superblock;

/// One segment file as the scan sees it.
pub(crate) struct SegView<'a> {
    pub index: u64,
    pub bytes: &'a [u8],
}

/// Where and why the valid prefix ends, when something other than zeros follows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Damage {
    /// Position in the segment list of the segment holding the damage.
    pub seg: usize,
    /// Offset of the first byte that is not part of the valid prefix.
    pub offset: usize,
    pub reason: String,
    /// One past the last non-zero byte of that segment (what a repair must zero).
    pub nonzero_end: usize,
    /// A valid record found after the damage: (segment position, offset, sequence).
    pub valid_after: Option<(usize, usize, u64)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Tail {
    /// The valid prefix is followed only by zeros.
    Clean,
    /// Damaged or partial bytes after the valid prefix; `valid_after` tells torn from corrupt.
    Damaged(Damage),
    /// The segment files themselves do not fit together (missing, reordered, bad header).
    Broken { seg: usize, offset: usize, reason: String },
    /// The journal ends (cleanly or at damage) before a sequence that was recorded as
    /// durable: acknowledged records are missing or damaged. `seg`/`offset` is where the
    /// valid prefix ends.
    Lost { seg: usize, offset: usize, reason: String },
    /// Segment files the superblock names are absent (or the directory holds none at all),
    /// or a segment belongs to another ledger: nothing positional to point at.
    Missing { reason: String, repairable: bool },
}

/// The newest durable claim found: a sequence and its record's checksum, and where it came
/// from (for messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Claim {
    pub sequence: u64,
    pub checksum: u128,
    pub source: String,
}

#[derive(Debug)]
pub(crate) struct Scan {
    pub records: u64,
    /// Sequence number of the first record the first segment holds.
    pub first_sequence: u64,
    pub last_sequence: u64,
    /// Checksum of the record `last_sequence` (the segment's `chain_in` if there is none).
    pub last_checksum: u128,
    /// Decoded headers of the segments up to and including `end_seg`.
    pub headers: Vec<SegmentHeader>,
    /// Segment position and offset just past the last valid record.
    pub end_seg: usize,
    pub end_offset: usize,
    pub tail: Tail,
    /// What the superblock and the durability slots say must be there.
    pub claim: Claim,
    /// Newest durability slot of the last segment (its counter continues from there).
    pub active_slot: Option<DurableSlot>,
}

/// Scans `segs` and judges them against the superblock (when there is one).
pub(crate) fn scan(segs: &[SegView<'_>], sb: Option<&Superblock>) -> Scan {
    let ledger_id = sb.map(|sb| sb.ledger_id);
    let mut s = scan_prefix(segs, ledger_id);
    let (claim, active_slot) = claims(segs, ledger_id);
    s.claim = claim;
    s.active_slot = active_slot;
    judge(&mut s, segs, sb);
    s
}

/// What every segment with a valid header records as durable: its newest durability slot,
/// and for a segment after the first its header (a segment is created only once its
/// predecessor is durable, so `first_sequence - 1` was durable). Also the newest slot of the
/// last segment.
fn claims(segs: &[SegView<'_>], ledger_id: Option<u128>) -> (Claim, Option<DurableSlot>) {
    let mut claim = Claim { sequence: 0, checksum: 0, source: "nothing".into() };
    let mut active = None;
    for (i, seg) in segs.iter().enumerate() {
        let Ok(header) = SegmentHeader::decode(seg.bytes) else { continue };
        if header.index != seg.index || ledger_id.is_some_and(|id| id != header.ledger_id) {
            continue;
        }
        let slot = DurableSlot::newest(seg.bytes, seg.index);
        if i + 1 == segs.len() {
            active = slot;
        }
        let implied = (i > 0 && header.first_sequence > 1)
            .then(|| (header.first_sequence - 1, header.chain_in, "the header"));
        let slotted = slot.map(|sl| (sl.sequence, sl.checksum, "a durability slot"));
        for (sequence, checksum, what) in [implied, slotted].into_iter().flatten() {
            if sequence > claim.sequence {
                let source = format!("{what} of segment {}", seg.index);
                claim = Claim { sequence, checksum, source };
            }
        }
    }
    (claim, active)
}

/// Compares the prefix found with what the superblock and the slots claim.
fn judge(s: &mut Scan, segs: &[SegView<'_>], sb: Option<&Superblock>) {
    if let Some(sb) = sb {
        if s.claim.sequence < sb.durable_sequence {
            s.claim = Claim {
                sequence: sb.durable_sequence,
                checksum: sb.durable_checksum,
                source: "the superblock".into(),
            };
        }
        let Some(first) = segs.first() else {
            s.tail = Tail::Missing {
                reason: format!(
                    "the journal has no segment files, but the superblock says it holds segments \
                     {}..={} (records from sequence {}): the journal directory was removed, \
                     moved or emptied",
                    sb.first_segment_index, sb.last_segment_index, sb.first_sequence
                ),
                repairable: false,
            };
            return;
        };
        if first.index != sb.first_segment_index {
            let reason = if first.index > sb.first_segment_index {
                format!(
                    "the oldest segment {} (records from sequence {}) is missing: the journal \
                     now starts at segment {}",
                    sb.first_segment_index, sb.first_sequence, first.index
                )
            } else {
                format!(
                    "segment {} is older than the journal's first segment {} (left from \
                     another journal?)",
                    first.index, sb.first_segment_index
                )
            };
            s.tail = Tail::Missing { reason, repairable: false };
            return;
        }
        if let Some(h) = s.headers.first() {
            if h.first_sequence != sb.first_sequence || h.chain_in != sb.first_chain_in {
                s.tail = Tail::Missing {
                    reason: format!(
                        "segment {} starts at sequence {} but the superblock says the journal \
                         starts at {} (replaced by another journal's segment?)",
                        first.index, h.first_sequence, sb.first_sequence
                    ),
                    repairable: false,
                };
                return;
            }
        }
        let last = segs.last().expect("not empty").index;
        if last < sb.last_segment_index && !matches!(s.tail, Tail::Broken { .. }) {
            let missing = if last + 1 == sb.last_segment_index {
                format!("segment {} is", sb.last_segment_index)
            } else {
                format!("segments {}..={} are", last + 1, sb.last_segment_index)
            };
            s.tail = Tail::Missing {
                reason: format!(
                    "{missing} missing: the superblock records that the journal reached segment \
                     {}, and the newest segment present is {last} (its records were \
                     acknowledged)",
                    sb.last_segment_index
                ),
                repairable: true,
            };
            return;
        }
    }
    if matches!(s.tail, Tail::Broken { .. }) {
        return;
    }
    let claim = s.claim.clone();
    if claim.sequence > s.last_sequence {
        let at = match &s.tail {
            Tail::Damaged(d) => format!("damaged record ({})", d.reason),
            _ => "the end of the data".to_string(),
        };
        let (seg, offset) = match &s.tail {
            Tail::Damaged(d) => (d.seg, d.offset),
            _ => (s.end_seg, s.end_offset),
        };
        s.tail = Tail::Lost {
            seg,
            offset,
            reason: format!(
                "acknowledged records are missing: the journal ends at sequence {} with a {at}, \
                 but {} records that records up to sequence {} were durable (damage to \
                 acknowledged records, not a torn write)",
                s.last_sequence, claim.source, claim.sequence
            ),
        };
        return;
    }
    if claim.sequence >= s.first_sequence && claim.sequence > 0 {
        // The claimed record is in the prefix: it must be the same record.
        let found = checksum_in_prefix(segs, s, claim.sequence);
        if found != Some(claim.checksum) {
            s.tail = Tail::Lost {
                seg: s.end_seg,
                offset: s.end_offset,
                reason: format!(
                    "record {} is not the one {} recorded as durable (checksum {:#034x}, found \
                     {}): the journal was replaced or rewritten",
                    claim.sequence,
                    claim.source,
                    claim.checksum,
                    found.map_or("none".to_string(), |c| format!("{c:#034x}"))
                ),
            };
        }
    }
}

/// Checksum of record `seq` of the valid prefix (which must hold it).
fn checksum_in_prefix(segs: &[SegView<'_>], s: &Scan, seq: u64) -> Option<u128> {
    if seq == s.last_sequence {
        return Some(s.last_checksum);
    }
    let pos = s.headers.iter().rposition(|h| h.first_sequence <= seq)?;
    let h = &s.headers[pos];
    if seq + 1 == h.first_sequence {
        return Some(h.chain_in);
    }
    let bytes = segs[pos].bytes;
    let mut off = RECORDS_OFFSET;
    loop {
        match parse_record(bytes, off) {
            Slot::Valid(r) if r.sequence == seq => return Some(r.checksum),
            Slot::Valid(r) if r.sequence < seq => off += r.size(),
            _ => return None,
        }
    }
}

/// The longest valid prefix of records, and what follows it.
fn scan_prefix(segs: &[SegView<'_>], ledger_id: Option<u128>) -> Scan {
    let mut s = Scan {
        records: 0,
        first_sequence: 1,
        last_sequence: 0,
        last_checksum: 0,
        headers: Vec::with_capacity(segs.len()),
        end_seg: 0,
        end_offset: RECORDS_OFFSET,
        tail: Tail::Clean,
        claim: Claim { sequence: 0, checksum: 0, source: "nothing".into() },
        active_slot: None,
    };
    for (i, seg) in segs.iter().enumerate() {
        let broken = |reason: String| Tail::Broken { seg: i, offset: 0, reason };
        let header = match SegmentHeader::decode(seg.bytes) {
            Ok(h) => h,
            Err(reason) => {
                s.tail = broken(reason);
                return s;
            }
        };
        if i > 0 && seg.index != segs[i - 1].index + 1 {
            s.tail = broken(format!(
                "segment {} is missing (found segment {} after segment {})",
                segs[i - 1].index + 1,
                seg.index,
                segs[i - 1].index
            ));
            return s;
        }
        if let Some(id) = ledger_id {
            if header.ledger_id != id {
                s.tail = broken(format!(
                    "segment belongs to ledger {:032x}, not to this data directory's ledger \
                     {id:032x}",
                    header.ledger_id
                ));
                return s;
            }
        }
        if header.index != seg.index {
            s.tail = broken(format!(
                "header names segment {} but the file name says {} (renamed or reordered)",
                header.index, seg.index
            ));
            return s;
        }
        if i == 0 {
            if header.first_sequence == 0 {
                s.tail = broken("first sequence is 0 (sequences start at 1)".into());
                return s;
            }
            s.first_sequence = header.first_sequence;
            s.last_sequence = header.first_sequence - 1;
            s.last_checksum = header.chain_in;
        } else if header.first_sequence != s.last_sequence + 1 || header.chain_in != s.last_checksum
        {
            s.tail = broken(format!(
                "segment starts at sequence {} with chain {:#034x}, but the previous segment ends \
                 at sequence {} with checksum {:#034x}",
                header.first_sequence, header.chain_in, s.last_sequence, s.last_checksum
            ));
            return s;
        }
        s.headers.push(header);
        s.end_seg = i;
        let bytes = seg.bytes;
        let mut off = RECORDS_OFFSET;
        let damage: Option<String> = loop {
            match parse_record(bytes, off) {
                Slot::Zero => break None,
                Slot::Damaged(reason) => break Some(reason),
                Slot::Valid(h) => {
                    if h.sequence != s.last_sequence + 1 {
                        break Some(format!(
                            "record has sequence {} where {} was expected",
                            h.sequence,
                            s.last_sequence + 1
                        ));
                    }
                    if h.chain != s.last_checksum {
                        break Some(format!(
                            "record {} chain {:#034x} does not match the previous record's \
                             checksum {:#034x}",
                            h.sequence, h.chain, s.last_checksum
                        ));
                    }
                    s.records += 1;
                    s.last_sequence = h.sequence;
                    s.last_checksum = h.checksum;
                    off += h.size();
                }
            }
        };
        s.end_offset = off;
        let is_last = i + 1 == segs.len();
        // A valid record later in this segment means the prefix ended early: corruption.
        // Only bytes before the last non-zero one can hold a record, so probe just that part.
        // (A file cut shorter than its records' start has nothing live.)
        let live = &bytes[..nonzero_end(bytes, off).max(off).min(bytes.len())];
        let mut valid_after =
            probe(live, off + RECORD_ALIGN, s.last_sequence).map(|(o, q)| (i, o, q));
        if damage.is_none() && valid_after.is_none() && !is_last {
            continue; // normal roll-over: the rest of this segment is unused
        }
        if valid_after.is_none() && damage.is_some() {
            valid_after = segs[i + 1..].iter().enumerate().find_map(|(j, later)| {
                probe(later.bytes, RECORDS_OFFSET, s.last_sequence).map(|(o, q)| (i + 1 + j, o, q))
            });
        }
        let nonzero_end = nonzero_end(bytes, off);
        if valid_after.is_none() && damage.is_none() && nonzero_end == off {
            return s; // clean end: only zeros follow
        }
        let reason = match damage {
            Some(r) => r,
            None if valid_after.is_some() => "zeroed record".to_string(),
            None if nonzero_end > off => {
                "zero record header followed by non-zero bytes (partly written record)".to_string()
            }
            None => return s, // clean end
        };
        s.tail = Tail::Damaged(Damage { seg: i, offset: off, reason, nonzero_end, valid_after });
        return s;
    }
    s
}

/// First valid record (framing and checksum) at or after `from` with a sequence above `after`.
pub(crate) fn probe(bytes: &[u8], from: usize, after: u64) -> Option<(usize, u64)> {
    let mut p = from.next_multiple_of(RECORD_ALIGN);
    while p + RECORD_HEADER_SIZE <= bytes.len() {
        if bytes[p + 16..p + 20] == RECORD_MAGIC {
            if let Slot::Valid(h) = parse_record(bytes, p) {
                if h.sequence > after {
                    return Some((p, h.sequence));
                }
            }
        }
        p += RECORD_ALIGN;
    }
    None
}

/// One past the last non-zero byte at or after `from` (or `from` if all are zero).
///
/// Runs over the unused rest of a 64 MiB segment on every open, so it tests whole blocks with a
/// branch-free OR (vectorised) and looks at single bytes only in the last non-zero block.
pub(crate) fn nonzero_end(bytes: &[u8], from: usize) -> usize {
    const BLOCK: usize = 4096;
    let tail = bytes.get(from..).unwrap_or(&[]);
    let mut end = tail.len();
    while end > 0 {
        let start = end.saturating_sub(BLOCK);
        let block = &tail[start..end];
        if block.iter().fold(0u8, |acc, &b| acc | b) != 0 {
            let p = block.iter().rposition(|&b| b != 0).expect("a non-zero byte");
            return from + start + p + 1;
        }
        end = start;
    }
    from
}
