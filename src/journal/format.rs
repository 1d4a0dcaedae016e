//! Byte layout of segment headers and records (journal-format.md is the normative text).
//!
//! Pure functions over byte slices: no I/O, no state. Every multi-byte integer is little-endian.

use xxhash_rust::xxh3::{xxh3_128, xxh3_64};

/// Format version written into every segment header, durability slot, record header and the
/// superblock. Version 2 added the superblock, the ledger id and the durability slots.
pub const FORMAT_VERSION: u16 = 2;

/// First 8 bytes of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"LDGRJSEG";
/// Size of the segment header (at offset 0).
pub const SEGMENT_HEADER_SIZE: usize = 128;
/// Where the first record of a segment starts: page 0 holds the header and the durability
/// slots, so slot writes and record writes never share a page.
pub const RECORDS_OFFSET: usize = 4096;
/// Durability slots per segment, each in its own 512-byte sector of page 0 (a torn write of
/// one slot leaves the others whole).
pub const SLOT_COUNT: usize = 4;
/// Bytes of one durability slot.
pub const SLOT_SIZE: usize = 64;
/// Offset of slot `i` (0-based) in the segment.
pub const fn slot_offset(i: usize) -> usize {
    512 * (i + 1)
}
/// First 8 bytes of a durability slot.
pub const SLOT_MAGIC: [u8; 8] = *b"LDGRDURA";

// Segment header fields (offsets in the header).
const SEG_MAGIC: usize = 0;
const SEG_VERSION: usize = 8;
const SEG_HEADER_SIZE: usize = 10;
const SEG_RESERVED: usize = 12;
const SEG_INDEX: usize = 16;
const SEG_FIRST_SEQUENCE: usize = 24;
const SEG_SIZE: usize = 32;
const SEG_CHAIN_IN: usize = 40;
const SEG_LEDGER_ID: usize = 56;
const SEG_RESERVED_2: usize = 72;
const SEG_CHECKSUM: usize = 120;

// Durability slot fields (offsets in the slot).
const SLOT_VERSION: usize = 8;
const SLOT_RESERVED: usize = 10;
const SLOT_SEGMENT_INDEX: usize = 16;
const SLOT_COUNTER: usize = 24;
const SLOT_SEQUENCE: usize = 32;
const SLOT_CHECKSUM_OF_RECORD: usize = 40;
const SLOT_CHECKSUM: usize = 56;

/// Bytes 16..20 of every record header.
pub const RECORD_MAGIC: [u8; 4] = *b"LJRC";
/// Size of the record header; the body starts right after it.
pub const RECORD_HEADER_SIZE: usize = 64;
/// Alignment of every record (and so of every body) within the segment file.
pub const RECORD_ALIGN: usize = 16;

/// Smallest segment accepted: page 0 and one page of records.
pub const SEGMENT_SIZE_MIN: u64 = 8192;

const _: () = assert!(RECORDS_OFFSET.is_multiple_of(RECORD_ALIGN));
const _: () = assert!(RECORD_HEADER_SIZE.is_multiple_of(RECORD_ALIGN));
const _: () = assert!(SEGMENT_HEADER_SIZE <= slot_offset(0));
const _: () = assert!(slot_offset(SLOT_COUNT - 1) + SLOT_SIZE <= RECORDS_OFFSET);
const _: () = assert!(SEGMENT_SIZE_MIN as usize > RECORDS_OFFSET + RECORD_HEADER_SIZE);

/// Bytes a record with a body of `body_len` bytes occupies: header, body, zero padding.
#[inline]
pub const fn record_size(body_len: usize) -> usize {
    RECORD_HEADER_SIZE + ((body_len + RECORD_ALIGN - 1) & !(RECORD_ALIGN - 1))
}

/// The fixed header at offset 0 of every segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Position of the segment in the journal; equals the number in the file name.
    pub index: u64,
    /// Sequence number of the first record this segment holds (or will hold).
    pub first_sequence: u64,
    /// Length the file was preallocated to.
    pub segment_size: u64,
    /// Checksum of record `first_sequence - 1` (0 before the first record of the journal).
    pub chain_in: u128,
    /// The ledger this segment belongs to (the superblock's ledger id).
    pub ledger_id: u128,
}

impl SegmentHeader {
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_SIZE] {
        let mut h = [0u8; SEGMENT_HEADER_SIZE];
        h[SEG_MAGIC..SEG_VERSION].copy_from_slice(&SEGMENT_MAGIC);
        h[SEG_VERSION..SEG_HEADER_SIZE].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        h[SEG_HEADER_SIZE..SEG_RESERVED]
            .copy_from_slice(&(SEGMENT_HEADER_SIZE as u16).to_le_bytes());
        // SEG_RESERVED..SEG_INDEX reserved, zero.
        h[SEG_INDEX..SEG_FIRST_SEQUENCE].copy_from_slice(&self.index.to_le_bytes());
        h[SEG_FIRST_SEQUENCE..SEG_SIZE].copy_from_slice(&self.first_sequence.to_le_bytes());
        h[SEG_SIZE..SEG_CHAIN_IN].copy_from_slice(&self.segment_size.to_le_bytes());
        h[SEG_CHAIN_IN..SEG_LEDGER_ID].copy_from_slice(&self.chain_in.to_le_bytes());
        h[SEG_LEDGER_ID..SEG_RESERVED_2].copy_from_slice(&self.ledger_id.to_le_bytes());
        // SEG_RESERVED_2..SEG_CHECKSUM reserved, zero.
        let sum = xxh3_64(&h[..SEG_CHECKSUM]);
        h[SEG_CHECKSUM..].copy_from_slice(&sum.to_le_bytes());
        h
    }

    /// The format version of a segment file, read without checking anything else: tells a
    /// journal of an older ledgerd from a damaged one.
    pub fn version_of(bytes: &[u8]) -> Option<u16> {
        (bytes.len() >= SEG_HEADER_SIZE && bytes[SEG_MAGIC..SEG_VERSION] == SEGMENT_MAGIC)
            .then(|| le_u16(&bytes[SEG_VERSION..SEG_HEADER_SIZE]))
    }

    pub fn decode(bytes: &[u8]) -> Result<SegmentHeader, String> {
        if bytes.len() < SEGMENT_HEADER_SIZE {
            return Err(format!(
                "segment file is {} bytes, shorter than its {SEGMENT_HEADER_SIZE}-byte header",
                bytes.len()
            ));
        }
        let h = &bytes[..SEGMENT_HEADER_SIZE];
        if h[SEG_MAGIC..SEG_VERSION] != SEGMENT_MAGIC {
            return Err("bad segment magic".into());
        }
        // The version first: a segment of another version has another layout (and another
        // place for its checksum).
        let version = le_u16(&h[SEG_VERSION..SEG_HEADER_SIZE]);
        if version != FORMAT_VERSION {
            return Err(format!(
                "unsupported segment format version {version} (this ledgerd reads version \
                 {FORMAT_VERSION})"
            ));
        }
        let stored = le_u64(&h[SEG_CHECKSUM..]);
        let computed = xxh3_64(&h[..SEG_CHECKSUM]);
        if stored != computed {
            return Err(format!(
                "segment header checksum mismatch (stored {stored:#018x}, computed {computed:#018x})"
            ));
        }
        let header_size = le_u16(&h[SEG_HEADER_SIZE..SEG_RESERVED]);
        if usize::from(header_size) != SEGMENT_HEADER_SIZE
            || h[SEG_RESERVED..SEG_INDEX] != [0; 4]
            || h[SEG_RESERVED_2..SEG_CHECKSUM].iter().any(|&b| b != 0)
        {
            return Err("unsupported segment header layout".into());
        }
        Ok(SegmentHeader {
            index: le_u64(&h[SEG_INDEX..SEG_FIRST_SEQUENCE]),
            first_sequence: le_u64(&h[SEG_FIRST_SEQUENCE..SEG_SIZE]),
            segment_size: le_u64(&h[SEG_SIZE..SEG_CHAIN_IN]),
            chain_in: le_u128(&h[SEG_CHAIN_IN..SEG_LEDGER_ID]),
            ledger_id: le_u128(&h[SEG_LEDGER_ID..SEG_RESERVED_2]),
        })
    }
}

/// A durability slot: "every record up to `sequence`, whose checksum is `checksum`, was
/// durable when this slot was written". Written into page 0 of the active segment by the
/// flush *after* the one that made those records durable (or by a seal when idle), so the
/// claim never runs ahead of the disk; see journal-format.md §2.3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurableSlot {
    pub segment_index: u64,
    /// Write number within the segment (1, 2, ...): the highest valid one is the newest claim.
    pub counter: u64,
    pub sequence: u64,
    pub checksum: u128,
}

impl DurableSlot {
    pub fn encode(&self) -> [u8; SLOT_SIZE] {
        let mut b = [0u8; SLOT_SIZE];
        b[..SLOT_VERSION].copy_from_slice(&SLOT_MAGIC);
        b[SLOT_VERSION..SLOT_RESERVED].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        // SLOT_RESERVED..SLOT_SEGMENT_INDEX reserved, zero.
        b[SLOT_SEGMENT_INDEX..SLOT_COUNTER].copy_from_slice(&self.segment_index.to_le_bytes());
        b[SLOT_COUNTER..SLOT_SEQUENCE].copy_from_slice(&self.counter.to_le_bytes());
        b[SLOT_SEQUENCE..SLOT_CHECKSUM_OF_RECORD].copy_from_slice(&self.sequence.to_le_bytes());
        b[SLOT_CHECKSUM_OF_RECORD..SLOT_CHECKSUM].copy_from_slice(&self.checksum.to_le_bytes());
        let sum = xxh3_64(&b[..SLOT_CHECKSUM]);
        b[SLOT_CHECKSUM..].copy_from_slice(&sum.to_le_bytes());
        b
    }

    /// A slot that is whole and belongs to segment `segment_index`; `None` for an unwritten,
    /// torn or foreign slot (which claims nothing).
    pub fn decode(b: &[u8], segment_index: u64) -> Option<DurableSlot> {
        let b = b.get(..SLOT_SIZE)?;
        if b[..SLOT_VERSION] != SLOT_MAGIC
            || le_u16(&b[SLOT_VERSION..SLOT_RESERVED]) != FORMAT_VERSION
            || b[SLOT_RESERVED..SLOT_SEGMENT_INDEX].iter().any(|&x| x != 0)
            || le_u64(&b[SLOT_CHECKSUM..]) != xxh3_64(&b[..SLOT_CHECKSUM])
        {
            return None;
        }
        let slot = DurableSlot {
            segment_index: le_u64(&b[SLOT_SEGMENT_INDEX..SLOT_COUNTER]),
            counter: le_u64(&b[SLOT_COUNTER..SLOT_SEQUENCE]),
            sequence: le_u64(&b[SLOT_SEQUENCE..SLOT_CHECKSUM_OF_RECORD]),
            checksum: le_u128(&b[SLOT_CHECKSUM_OF_RECORD..SLOT_CHECKSUM]),
        };
        (slot.segment_index == segment_index && slot.counter > 0).then_some(slot)
    }

    /// The newest valid slot of a segment's bytes (highest counter), if any.
    pub fn newest(segment: &[u8], segment_index: u64) -> Option<DurableSlot> {
        (0..SLOT_COUNT)
            .filter_map(|i| {
                let at = slot_offset(i);
                DurableSlot::decode(segment.get(at..at + SLOT_SIZE)?, segment_index)
            })
            .max_by_key(|s| s.counter)
    }
}

/// The decoded header of a record whose checksum has been verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    pub checksum: u128,
    pub body_len: u32,
    pub sequence: u64,
    /// The Raft term the record was written in; 0 in a single replica's journal.
    pub term: u64,
    pub chain: u128,
}

impl RecordHeader {
    /// Bytes the whole record occupies in the segment.
    #[inline]
    pub fn size(&self) -> usize {
        record_size(self.body_len as usize)
    }
}

/// Encodes a record into `dst` (exactly `record_size(body.len())` bytes) and returns its checksum.
///
/// Layout: `[checksum u128][magic 4][version u16][header size u16][body_len u32][reserved u32]
/// [sequence u64][term u64][chain u128][body][zero padding to 16]`. The checksum is xxh3-128
/// over bytes `16 .. 64 + body_len`, one contiguous range. `term` is the Raft term a replica
/// wrote the record in, 0 in a single replica's journal.
#[inline]
pub fn encode_record(dst: &mut [u8], sequence: u64, term: u64, chain: u128, body: &[u8]) -> u128 {
    debug_assert_eq!(dst.len(), record_size(body.len()));
    let (head, rest) = dst.split_at_mut(RECORD_HEADER_SIZE);
    write_header_fields(head, sequence, term, chain, body.len());
    let (body_dst, pad) = rest.split_at_mut(body.len());
    body_dst.copy_from_slice(body);
    pad.fill(0);
    let checksum = xxh3_128(&dst[16..RECORD_HEADER_SIZE + body.len()]);
    dst[0..16].copy_from_slice(&checksum.to_le_bytes());
    checksum
}

/// Encodes a record header (the first `RECORD_HEADER_SIZE` bytes of a record) for `body` and
/// returns the record's checksum, without copying the body: the same bytes and checksum as
/// [`encode_record`], for writers that send header, body and padding to the file separately.
#[inline]
pub fn encode_record_header(
    head: &mut [u8; RECORD_HEADER_SIZE],
    sequence: u64,
    term: u64,
    chain: u128,
    body: &[u8],
) -> u128 {
    write_header_fields(head, sequence, term, chain, body.len());
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(&head[16..RECORD_HEADER_SIZE]);
    hasher.update(body);
    let checksum = hasher.digest128();
    head[0..16].copy_from_slice(&checksum.to_le_bytes());
    checksum
}

/// Writes bytes `16..64` of a record header: everything but the checksum.
#[inline]
fn write_header_fields(head: &mut [u8], sequence: u64, term: u64, chain: u128, body_len: usize) {
    let body_len = u32::try_from(body_len).expect("body length checked by the caller");
    head[16..20].copy_from_slice(&RECORD_MAGIC);
    head[20..22].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    head[22..24].copy_from_slice(&(RECORD_HEADER_SIZE as u16).to_le_bytes());
    head[24..28].copy_from_slice(&body_len.to_le_bytes());
    head[28..32].fill(0);
    head[32..40].copy_from_slice(&sequence.to_le_bytes());
    head[40..48].copy_from_slice(&term.to_le_bytes());
    head[48..64].copy_from_slice(&chain.to_le_bytes());
}

/// What sits at a record offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Slot {
    /// A whole zero header: the end of the written part of the segment.
    Zero,
    /// A record whose framing and checksum are valid (sequence and chain not yet checked).
    Valid(RecordHeader),
    /// Anything else; the reason names the first check that failed.
    Damaged(String),
}

/// Reads the record at `off` of a segment's bytes, verifying framing and checksum.
pub fn parse_record(seg: &[u8], off: usize) -> Slot {
    debug_assert_eq!(off % RECORD_ALIGN, 0);
    let Some(head) = seg.get(off..off + RECORD_HEADER_SIZE) else {
        // Less than a header is left: the end of the segment, unless the file was cut short.
        let rest = seg.get(off..).unwrap_or(&[]);
        return if rest.iter().all(|&b| b == 0) {
            Slot::Zero
        } else {
            Slot::Damaged("record header cut short by the end of the file".into())
        };
    };
    if head.iter().all(|&b| b == 0) {
        return Slot::Zero;
    }
    let h = match parse_header_unverified(head) {
        Ok(h) => h,
        Err(reason) => return Slot::Damaged(reason),
    };
    let end = off + RECORD_HEADER_SIZE + h.body_len as usize;
    if off + h.size() > seg.len() {
        return Slot::Damaged(format!(
            "record of {} bytes runs past the end of the segment ({} bytes)",
            h.size(),
            seg.len()
        ));
    }
    let computed = xxh3_128(&seg[off + 16..end]);
    if computed != h.checksum {
        return Slot::Damaged(format!(
            "record checksum mismatch (stored {:#034x}, computed {computed:#034x})",
            h.checksum
        ));
    }
    Slot::Valid(h)
}

/// Decodes a record header's fields without looking at the body.
pub fn parse_header_unverified(head: &[u8]) -> Result<RecordHeader, String> {
    if head[16..20] != RECORD_MAGIC {
        return Err("bad record magic".into());
    }
    let version = le_u16(&head[20..22]);
    if version != FORMAT_VERSION {
        return Err(format!("unsupported record format version {version}"));
    }
    if usize::from(le_u16(&head[22..24])) != RECORD_HEADER_SIZE || head[28..32] != [0; 4] {
        return Err("unsupported record header layout".into());
    }
    Ok(RecordHeader {
        checksum: le_u128(&head[0..16]),
        body_len: le_u32(&head[24..28]),
        sequence: le_u64(&head[32..40]),
        term: le_u64(&head[40..48]),
        chain: le_u128(&head[48..64]),
    })
}

#[inline]
pub(crate) fn le_u16(b: &[u8]) -> u16 {
    u16::from_le_bytes(b.try_into().expect("2 bytes"))
}
#[inline]
pub(crate) fn le_u32(b: &[u8]) -> u32 {
    u32::from_le_bytes(b.try_into().expect("4 bytes"))
}
#[inline]
pub(crate) fn le_u64(b: &[u8]) -> u64 {
    u64::from_le_bytes(b.try_into().expect("8 bytes"))
}
#[inline]
pub(crate) fn le_u128(b: &[u8]) -> u128 {
    u128::from_le_bytes(b.try_into().expect("16 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trip() {
        let body = b"hello, journal";
        let mut buf = vec![0u8; record_size(body.len())];
        let sum = encode_record(&mut buf, 7, 5, 42, body);
        match parse_record(&buf, 0) {
            Slot::Valid(h) => assert_eq!(
                h,
                RecordHeader { checksum: sum, body_len: 14, sequence: 7, term: 5, chain: 42 }
            ),
            other => panic!("{other:?}"),
        }
        buf[70] ^= 1;
        assert!(matches!(parse_record(&buf, 0), Slot::Damaged(_)));
    }

    #[test]
    fn header_only_encoding_matches_the_whole_record() {
        for len in [0usize, 1, 15, 16, 17, 240, 1000, 5000] {
            let body: Vec<u8> = (0..len).map(|i| (i * 13 + 1) as u8).collect();
            let mut whole = vec![0u8; record_size(len)];
            let sum = encode_record(&mut whole, 9, 3, 77, &body);
            let mut head = [0xffu8; RECORD_HEADER_SIZE];
            assert_eq!(encode_record_header(&mut head, 9, 3, 77, &body), sum);
            assert_eq!(&head[..], &whole[..RECORD_HEADER_SIZE]);
        }
    }

    #[test]
    fn segment_header_round_trip() {
        let h = SegmentHeader {
            index: 3,
            first_sequence: 99,
            segment_size: 8192,
            chain_in: 5,
            ledger_id: 7 << 100,
        };
        assert_eq!(SegmentHeader::decode(&h.encode()), Ok(h));
        assert_eq!(SegmentHeader::version_of(&h.encode()), Some(FORMAT_VERSION));
    }

    #[test]
    fn slot_round_trip_and_newest() {
        let mut page = vec![0u8; RECORDS_OFFSET];
        assert_eq!(DurableSlot::newest(&page, 4), None);
        for counter in 1..=6u64 {
            let slot =
                DurableSlot { segment_index: 4, counter, sequence: counter * 10, checksum: 9 };
            let at = slot_offset(counter as usize % SLOT_COUNT);
            page[at..at + SLOT_SIZE].copy_from_slice(&slot.encode());
            assert_eq!(DurableSlot::newest(&page, 4), Some(slot));
            assert_eq!(DurableSlot::newest(&page, 5), None, "a slot of another segment");
        }
        // A torn newest slot leaves the one before it.
        let at = slot_offset(6 % SLOT_COUNT);
        page[at + 40] ^= 1;
        assert_eq!(DurableSlot::newest(&page, 4).map(|s| s.counter), Some(5));
    }
}
