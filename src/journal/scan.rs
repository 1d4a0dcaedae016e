//! Recovery scan: walks segments in order and decides where the valid journal ends.
//!
//! Shared by `Journal::open` (which then cuts a torn tail) and `JournalReader::verify` (which only
//! reports). The rule (journal-format.md §5): the journal is the longest prefix of records with
//! valid framing, checksum, consecutive sequence numbers and an unbroken chain. Whatever follows
//! is a *torn tail* if no valid record with a higher sequence number appears anywhere after it,
//! and *corruption* otherwise.

use super::format::{
    parse_record, SegmentHeader, Slot, RECORD_ALIGN, RECORD_HEADER_SIZE, RECORD_MAGIC,
    SEGMENT_HEADER_SIZE,
};

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
}

pub(crate) fn scan(segs: &[SegView<'_>]) -> Scan {
    let mut s = Scan {
        records: 0,
        first_sequence: 1,
        last_sequence: 0,
        last_checksum: 0,
        headers: Vec::with_capacity(segs.len()),
        end_seg: 0,
        end_offset: SEGMENT_HEADER_SIZE,
        tail: Tail::Clean,
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
        let mut off = SEGMENT_HEADER_SIZE;
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
        let live = &bytes[..nonzero_end(bytes, off).max(off)];
        let mut valid_after =
            probe(live, off + RECORD_ALIGN, s.last_sequence).map(|(o, q)| (i, o, q));
        if damage.is_none() && valid_after.is_none() && !is_last {
            continue; // normal roll-over: the rest of this segment is unused
        }
        if valid_after.is_none() && damage.is_some() {
            valid_after = segs[i + 1..].iter().enumerate().find_map(|(j, later)| {
                probe(later.bytes, SEGMENT_HEADER_SIZE, s.last_sequence)
                    .map(|(o, q)| (i + 1 + j, o, q))
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
