//! The journal: preallocated, memory-mapped segment files of checksummed, chained records.
//!
//! Owns `DATA/journal/`. Knows bytes and sequence numbers, never accounts: a record body is an
//! opaque byte string (in practice an rkyv archive of `Event`) that starts 16-byte aligned in the
//! map, so it can be read zero-copy. `journal-format.md` at the repository root describes every
//! byte; `format` implements it, `scan` decides where the valid journal ends, `reader` is the
//! lock-free read-only view for tools and recovery.
//!
//! Durability: `append` only copies into the map; `flush` makes everything appended durable
//! (group commit) with `fdatasync` or `msync`. After any I/O error the journal is poisoned: it
//! refuses appends and flushes until it is reopened, which rescans what is on disk.

mod fault;
pub mod format;
mod reader;
mod scan;
mod segment;

use std::cell::Cell;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::{MmapMut, MmapOptions};

pub use fault::FaultPlan;
pub use reader::{End, JournalReader, Problem, Record, Records, VerifyReport};
pub use segment::segment_path;

use format::{
    encode_record, encode_record_header, le_u32, record_size, SegmentHeader, RECORD_HEADER_SIZE,
    SEGMENT_HEADER_SIZE, SEGMENT_SIZE_MIN,
};
use scan::{SegView, Tail};
use segment::JOURNAL_DIR;

// The pipeline moves the journal into the business thread.
const _: fn() = || {
    fn assert_send<T: Send>() {}
    assert_send::<Journal>();
    assert_send::<JournalReader>();
};

/// Default segment size: 64 MiB.
pub const SEGMENT_SIZE_DEFAULT: u64 = 64 << 20;
/// Default largest record body: 16 MiB (a full request of 8190 transfers is about 1.6 MiB).
pub const BODY_MAX_DEFAULT: u32 = 16 << 20;

/// Records of at least this many bytes are written with `pwritev` instead of through the map.
const PWRITE_MIN: usize = 64 << 10;

/// How `flush` makes appended records durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FlushMode {
    /// `fdatasync(2)` on the active segment. The default: it measured faster than `msync` for
    /// small batches on preallocated files (see journal-format.md §8).
    #[default]
    Fdatasync,
    /// `msync(MS_SYNC)` on the dirty page range of the map.
    Msync,
}

/// Where and how to open the journal.
#[derive(Debug, Clone)]
pub struct JournalConfig {
    /// The data directory; segments live in `dir/journal/`.
    pub dir: PathBuf,
    /// Size new segment files are preallocated to.
    pub segment_size: u64,
    /// Largest accepted body; also bounded by what fits in one segment.
    pub body_max: u32,
    pub flush_mode: FlushMode,
    /// Cut a torn or zero-filled tail on open (true), or only report it and refuse appends.
    pub repair: bool,
    /// Also cut at a damaged record that valid records follow, discarding them. For operators
    /// only: never set by default, because it throws away records that may have been
    /// acknowledged.
    pub truncate_corrupt: bool,
    /// Test fault injection.
    pub fault: Option<Arc<FaultPlan>>,
}

impl JournalConfig {
    /// Defaults: 64 MiB segments, 16 MiB bodies, the default flush mode, repair on.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        JournalConfig {
            dir: dir.into(),
            segment_size: SEGMENT_SIZE_DEFAULT,
            body_max: BODY_MAX_DEFAULT,
            flush_mode: FlushMode::default(),
            repair: true,
            truncate_corrupt: false,
            fault: None,
        }
    }
}

/// What `Journal::open` found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenReport {
    /// Sequence of the first record in the journal (1 unless older segments were removed).
    pub first_sequence: u64,
    /// Last valid record (0 if the journal is empty).
    pub last_sequence: u64,
    /// Checksum of the last valid record (0 if the journal is empty).
    pub last_checksum: u128,
    /// Valid records found.
    pub records: u64,
    /// Segment files in use after the open.
    pub segments: usize,
    /// Bytes zeroed in the segment where the tail was cut plus bytes of segment files removed
    /// after it. 0 when nothing was cut (also when `repair` is off).
    pub truncated_bytes: u64,
    /// Segment and offset where a torn (or, with `truncate_corrupt`, corrupt) tail starts.
    pub torn_tail: Option<(PathBuf, u64)>,
    /// Why the tail was considered torn.
    pub tail_reason: Option<String>,
    /// Whether the tail was cut (false when `repair` is off: appends are then refused).
    pub repaired: bool,
}

/// Errors of the journal. Display names the segment and offset where it applies.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("journal segment {segment}, offset {offset}: {reason}")]
    Corrupt { segment: PathBuf, offset: u64, reason: String },
    #[error("journal {path} is locked by another process or handle")]
    Locked { path: PathBuf },
    #[error("journal is poisoned by an earlier I/O error; reopen it to continue")]
    Poisoned,
    #[error("record body of {len} bytes exceeds the limit of {max} bytes")]
    BodyTooLarge { len: usize, max: usize },
    #[error(
        "journal segment {segment}, offset {offset}: torn tail not cut (repair is off); \
         appends are refused"
    )]
    TailNotRepaired { segment: PathBuf, offset: u64 },
    #[error("invalid journal configuration: {0}")]
    Config(String),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> JournalError + '_ {
    move |source| JournalError::Io { path: path.to_path_buf(), source }
}

/// Drops a shared file map's pages from the process's page tables (`MADV_DONTNEED`). The data
/// stays in the page cache (dirty pages stay dirty), and the next read maps it back. Advisory:
/// a failure changes nothing, so it is ignored.
fn release_pages(map: &MmapMut) {
    // SAFETY: for a shared file mapping, MADV_DONTNEED only unmaps pages; their contents are
    // those of the file, so nothing any reference can observe changes.
    let _ = unsafe { map.unchecked_advise(memmap2::UncheckedAdvice::DontNeed) };
}

struct Segment {
    index: u64,
    first_sequence: u64,
    path: PathBuf,
    file: File,
    map: MmapMut,
}

/// Cache of the last record located by `read`/`checksum_of`, so sequential reads are O(1).
#[derive(Clone, Copy, Default)]
struct Cursor {
    seg: usize,
    offset: usize,
    sequence: u64,
}

/// The writable journal. One per data directory (enforced by `flock`).
pub struct Journal {
    config: JournalConfig,
    journal_dir: PathBuf,
    _lock: File,
    /// All segments in order; the last one is active.
    segments: Vec<Segment>,
    /// Offset in the active segment where the next record goes.
    write_offset: usize,
    /// Start of the bytes of the active segment not yet flushed.
    dirty_from: usize,
    last_sequence: u64,
    last_checksum: u128,
    durable_sequence: u64,
    first_sequence: u64,
    poisoned: bool,
    unrepaired: Option<(PathBuf, u64)>,
    cursor: Cell<Cursor>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("dir", &self.journal_dir)
            .field("segments", &self.segments.len())
            .field("last_sequence", &self.last_sequence)
            .field("durable_sequence", &self.durable_sequence)
            .field("poisoned", &self.poisoned)
            .finish()
    }
}

impl Journal {
    /// Opens (creating if needed) the journal in `config.dir/journal`, takes the lock, scans
    /// every segment and cuts a torn or zero-filled tail. Refuses with `Corrupt` when a damaged
    /// record is followed by valid ones, or a segment is missing or out of order.
    pub fn open(config: JournalConfig) -> Result<(Journal, OpenReport), JournalError> {
        let record_min = (SEGMENT_HEADER_SIZE + record_size(0)) as u64;
        if config.segment_size < SEGMENT_SIZE_MIN || config.segment_size > u64::from(u32::MAX) * 4 {
            return Err(JournalError::Config(format!(
                "segment_size {} outside {SEGMENT_SIZE_MIN} ..= 16 GiB",
                config.segment_size
            )));
        }
        if config.segment_size <= record_min {
            return Err(JournalError::Config("segment_size too small".into()));
        }
        let journal_dir = config.dir.join(JOURNAL_DIR);
        let created = !journal_dir.exists();
        fs::create_dir_all(&journal_dir).map_err(io_err(&journal_dir))?;
        if created {
            segment::fsync_dir(&config.dir).map_err(io_err(&config.dir))?;
        }
        let (lock_path, lock) = segment::lock(&journal_dir).map_err(|e| {
            if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                JournalError::Locked { path: journal_dir.join(segment::LOCK_FILE) }
            } else {
                JournalError::Io { path: journal_dir.join(segment::LOCK_FILE), source: e }
            }
        })?;
        debug_assert!(lock_path.ends_with(segment::LOCK_FILE));
        segment::remove_temp_files(&journal_dir).map_err(io_err(&journal_dir))?;

        let mut segments = Vec::new();
        for (index, path) in segment::list_segments(&journal_dir).map_err(io_err(&journal_dir))? {
            let file =
                OpenOptions::new().read(true).write(true).open(&path).map_err(io_err(&path))?;
            // SAFETY: the segment files are private to this process while it holds the lock;
            // nothing truncates them while mapped.
            let map = unsafe { MmapMut::map_mut(&file) }.map_err(io_err(&path))?;
            segments.push(Segment { index, first_sequence: 0, path, file, map });
        }

        let views: Vec<SegView<'_>> =
            segments.iter().map(|s| SegView { index: s.index, bytes: &s.map }).collect();
        let found = scan::scan(&views);
        drop(views);

        let mut report = OpenReport {
            first_sequence: found.first_sequence,
            last_sequence: found.last_sequence,
            last_checksum: found.last_checksum,
            records: found.records,
            segments: 0,
            truncated_bytes: 0,
            torn_tail: None,
            tail_reason: None,
            repaired: false,
        };
        let mut unrepaired = None;
        match &found.tail {
            Tail::Clean => {}
            Tail::Broken { seg, offset, reason } => {
                return Err(JournalError::Corrupt {
                    segment: segments[*seg].path.clone(),
                    offset: *offset as u64,
                    reason: reason.clone(),
                });
            }
            Tail::Damaged(d) => {
                let path = segments[d.seg].path.clone();
                if let Some((vseg, voff, vseq)) = d.valid_after {
                    if !config.truncate_corrupt {
                        return Err(JournalError::Corrupt {
                            segment: path,
                            offset: d.offset as u64,
                            reason: format!(
                                "{}; a valid record (sequence {vseq}) follows at {}, offset {voff}",
                                d.reason,
                                segments[vseg].path.display()
                            ),
                        });
                    }
                }
                report.torn_tail = Some((path.clone(), d.offset as u64));
                report.tail_reason = Some(d.reason.clone());
                if config.repair || config.truncate_corrupt {
                    let seg = &mut segments[d.seg];
                    seg.map[d.offset..d.nonzero_end].fill(0);
                    seg.map
                        .flush_range(d.offset, d.nonzero_end - d.offset)
                        .map_err(io_err(&path))?;
                    report.truncated_bytes = (d.nonzero_end - d.offset) as u64;
                    for later in segments.drain(d.seg + 1..) {
                        report.truncated_bytes += later.map.len() as u64;
                        fs::remove_file(&later.path).map_err(io_err(&later.path))?;
                    }
                    segment::fsync_dir(&journal_dir).map_err(io_err(&journal_dir))?;
                    report.repaired = true;
                } else {
                    unrepaired = Some((path, d.offset as u64));
                }
            }
        }
        // Segments past the end of the valid data (only when not repaired) stay mapped for
        // reads but are never written; trim the list to what the scan accepted.
        segments.truncate(found.end_seg + 1);
        for (seg, header) in segments.iter_mut().zip(&found.headers) {
            seg.first_sequence = header.first_sequence;
        }
        // The scan read every segment through its map; let those pages go from this process's
        // resident set (they stay in the page cache, and reads map them again on demand).
        for seg in &segments {
            release_pages(&seg.map);
        }

        let mut journal = Journal {
            journal_dir,
            _lock: lock,
            segments,
            write_offset: found.end_offset,
            dirty_from: found.end_offset,
            last_sequence: found.last_sequence,
            last_checksum: found.last_checksum,
            durable_sequence: found.last_sequence,
            first_sequence: found.first_sequence,
            poisoned: false,
            unrepaired,
            cursor: Cell::new(Cursor::default()),
            config,
        };
        if journal.segments.is_empty() {
            journal.create_segment(0).map_err(|e| journal.poison(e))?;
        } else if journal.unrepaired.is_none() {
            journal.restore_active_length()?;
        }
        report.segments = journal.segments.len();
        Ok((journal, report))
    }

    /// Appends one record and returns its sequence number (the first is 1). Copies `body` into
    /// the map; nothing is durable until `flush`.
    pub fn append(&mut self, body: &[u8]) -> Result<u64, JournalError> {
        if self.poisoned {
            return Err(JournalError::Poisoned);
        }
        if let Some((segment, offset)) = &self.unrepaired {
            return Err(JournalError::TailNotRepaired {
                segment: segment.clone(),
                offset: *offset,
            });
        }
        let max = self.body_limit();
        if body.len() > max {
            return Err(JournalError::BodyTooLarge { len: body.len(), max });
        }
        if let Some(fault) = &self.config.fault {
            if let Err(e) = fault.on_append() {
                let path = self.active().path.clone();
                return Err(self.poison(JournalError::Io { path, source: e }));
            }
        }
        let size = record_size(body.len());
        if self.write_offset + size > self.active().map.len() {
            self.roll()?;
        }
        let sequence = self.last_sequence + 1;
        let off = self.write_offset;
        let chain = self.last_checksum;
        let seg = self.segments.last_mut().expect("an active segment");
        debug_assert_eq!((seg.map.as_ptr() as usize + off + RECORD_HEADER_SIZE) % 16, 0);
        let checksum = if size < PWRITE_MIN {
            // Small records: a copy into the map is cheaper than a syscall.
            encode_record(&mut seg.map[off..off + size], sequence, chain, body)
        } else {
            // Large records go to the file with one pwritev (header, body, padding): no
            // first-write page faults, and the pages never count towards this process's
            // resident set. Reads through the map see the same page cache.
            let mut head = [0u8; RECORD_HEADER_SIZE];
            let checksum = encode_record_header(&mut head, sequence, chain, body);
            let pad = &[0u8; format::RECORD_ALIGN][..size - RECORD_HEADER_SIZE - body.len()];
            if let Err(source) = segment::write_all_at3(&seg.file, &head, body, pad, off as u64) {
                let path = seg.path.clone();
                return Err(self.poison(JournalError::Io { path, source }));
            }
            checksum
        };
        self.write_offset = off + size;
        self.last_sequence = sequence;
        self.last_checksum = checksum;
        Ok(sequence)
    }

    /// Makes every appended record durable (one syscall for the whole batch). Returns at once
    /// when nothing is pending.
    pub fn flush(&mut self) -> Result<(), JournalError> {
        if self.poisoned {
            return Err(JournalError::Poisoned);
        }
        if self.durable_sequence == self.last_sequence {
            return Ok(());
        }
        self.flush_active()
    }

    /// Sequence of the last appended record (0 if none).
    pub fn last_sequence(&self) -> u64 {
        self.last_sequence
    }

    /// Sequence of the last durable record.
    pub fn durable_sequence(&self) -> u64 {
        self.durable_sequence
    }

    /// Sequence of the first record the journal holds (the one after an empty journal's 0).
    pub fn first_sequence(&self) -> u64 {
        self.first_sequence
    }

    /// Whether an I/O error has stopped the journal (reopen to continue).
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// Checksum of record `seq` (appended, not necessarily durable), which is also the chain
    /// value of record `seq + 1`. `first_sequence() - 1` gives the chain value the journal
    /// starts from (0 for a journal starting at 1).
    pub fn checksum_of(&self, seq: u64) -> Option<u128> {
        if seq == self.last_sequence {
            return Some(self.last_checksum);
        }
        if seq + 1 == self.first_sequence {
            return self.segments.first().map(|_| self.chain_in_of_first());
        }
        let (seg, off) = self.locate(seq, self.last_sequence)?;
        let m = &self.segments[seg].map;
        Some(format::le_u128(&m[off..off + 16]))
    }

    /// Body of durable record `seq`, 16-byte aligned, zero-copy. `None` outside
    /// `first_sequence()..=durable_sequence()`.
    pub fn read(&self, seq: u64) -> Option<&[u8]> {
        let (seg, off) = self.locate(seq, self.durable_sequence)?;
        let m = &self.segments[seg].map;
        let len = le_u32(&m[off + 24..off + 28]) as usize;
        Some(&m[off + RECORD_HEADER_SIZE..off + RECORD_HEADER_SIZE + len])
    }

    /// Durable records from `from` on, in order, zero-copy (bodies as in [`Journal::read`]).
    pub fn records_from(&self, from: u64) -> impl Iterator<Item = (u64, &[u8])> + '_ {
        let from = from.max(self.first_sequence);
        (from..=self.durable_sequence).map_while(move |seq| self.read(seq).map(|b| (seq, b)))
    }

    /// Path of the journal directory (`DIR/journal`).
    pub fn journal_dir(&self) -> &Path {
        &self.journal_dir
    }

    fn chain_in_of_first(&self) -> u128 {
        let m = &self.segments[0].map;
        SegmentHeader::decode(m).map(|h| h.chain_in).unwrap_or(0)
    }

    fn active(&self) -> &Segment {
        self.segments.last().expect("an active segment")
    }

    fn body_limit(&self) -> usize {
        let seg_room = self.config.segment_size as usize - SEGMENT_HEADER_SIZE - RECORD_HEADER_SIZE;
        (self.config.body_max as usize).min(seg_room)
    }

    fn poison(&mut self, e: JournalError) -> JournalError {
        self.poisoned = true;
        e
    }

    fn flush_active(&mut self) -> Result<(), JournalError> {
        if let Some(fault) = &self.config.fault {
            if let Err(e) = fault.on_flush() {
                let path = self.active().path.clone();
                return Err(self.poison(JournalError::Io { path, source: e }));
            }
        }
        let (from, to) = (self.dirty_from, self.write_offset);
        let seg = self.segments.last().expect("an active segment");
        let result = match self.config.flush_mode {
            FlushMode::Fdatasync => seg.file.sync_data(),
            FlushMode::Msync => seg.map.flush_range(from, to - from),
        };
        if let Err(e) = result {
            let path = seg.path.clone();
            return Err(self.poison(JournalError::Io { path, source: e }));
        }
        self.durable_sequence = self.last_sequence;
        self.dirty_from = to;
        Ok(())
    }

    /// Seals the active segment (flushing it) and starts the next one.
    fn roll(&mut self) -> Result<(), JournalError> {
        if self.durable_sequence != self.last_sequence {
            self.flush_active()?;
        }
        let next = self.active().index + 1;
        self.create_segment(next).map_err(|e| self.poison(e))?;
        // Pages of the sealed segment that reads mapped in leave the resident set.
        let sealed = self.segments.len() - 2;
        release_pages(&self.segments[sealed].map);
        Ok(())
    }

    fn create_segment(&mut self, index: u64) -> Result<(), JournalError> {
        let header = SegmentHeader {
            index,
            first_sequence: self.last_sequence + 1,
            segment_size: self.config.segment_size,
            chain_in: self.last_checksum,
        };
        let path = segment_path(&self.journal_dir, index);
        let (path, file) =
            segment::create_segment(&self.journal_dir, &header).map_err(io_err(&path))?;
        // SAFETY: as in `open`; the file is fully allocated. Records are written with pwritev,
        // so the map is only read: no populate, its pages come in when a read needs them.
        let map = unsafe { MmapOptions::new().map_mut(&file) }.map_err(io_err(&path))?;
        self.segments.push(Segment {
            index,
            first_sequence: header.first_sequence,
            path,
            file,
            map,
        });
        self.write_offset = SEGMENT_HEADER_SIZE;
        self.dirty_from = SEGMENT_HEADER_SIZE;
        Ok(())
    }

    /// A last segment shorter than its header says (cut by hand or by a crash of a tool) is
    /// preallocated back to full length, so appends never touch memory past EOF.
    fn restore_active_length(&mut self) -> Result<(), JournalError> {
        let seg = self.segments.last_mut().expect("an active segment");
        let header = SegmentHeader::decode(&seg.map).map_err(|reason| JournalError::Corrupt {
            segment: seg.path.clone(),
            offset: 0,
            reason,
        })?;
        if seg.map.len() as u64 >= header.segment_size {
            return Ok(());
        }
        segment::preallocate(&seg.file, header.segment_size).map_err(io_err(&seg.path))?;
        seg.file.sync_all().map_err(io_err(&seg.path))?;
        // SAFETY: as in `open`.
        seg.map = unsafe { MmapMut::map_mut(&seg.file) }.map_err(io_err(&seg.path))?;
        Ok(())
    }

    /// Segment position and offset of record `seq` if `first_sequence <= seq <= limit`.
    fn locate(&self, seq: u64, limit: u64) -> Option<(usize, usize)> {
        if seq < self.first_sequence || seq > limit {
            return None;
        }
        let seg = self.segments.partition_point(|s| s.first_sequence <= seq).checked_sub(1)?;
        let c = self.cursor.get();
        let (mut off, mut at) = if c.seg == seg && c.sequence != 0 && c.sequence <= seq {
            (c.offset, c.sequence)
        } else {
            (SEGMENT_HEADER_SIZE, self.segments[seg].first_sequence)
        };
        let m = &self.segments[seg].map;
        while at < seq {
            let len = le_u32(&m[off + 24..off + 28]) as usize;
            off += record_size(len);
            at += 1;
        }
        debug_assert_eq!(format::le_u64(&m[off + 32..off + 40]), seq);
        self.cursor.set(Cursor { seg, offset: off, sequence: seq });
        Some((seg, off))
    }
}
