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
mod follow;
pub mod format;
mod reader;
mod scan;
mod segment;
pub mod superblock;

use std::cell::Cell;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::{MmapMut, MmapOptions};

pub use fault::FaultPlan;
pub use follow::JournalFollower;
pub use reader::{End, JournalReader, Problem, Record, Records, VerifyReport};
pub use segment::{private_dir, private_file, segment_path, DIR_MODE, FILE_MODE, JOURNAL_DIR};

use format::{
    encode_record, encode_record_header, le_u32, record_size, slot_offset, DurableSlot,
    SegmentHeader, RECORDS_OFFSET, RECORD_HEADER_SIZE, SEGMENT_SIZE_MIN, SLOT_COUNT, SLOT_SIZE,
};
use scan::{Damage, SegView, Tail};
use superblock::Superblock;

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
    /// A torn tail holds only records that were never acknowledged (journal-format.md §5).
    pub repair: bool,
    /// The operator's confirmation of a repair (`ledgerd --repair-discard-after K`): when the
    /// journal refuses to open and its [`RepairPlan`] keeps records up to exactly `K`, discard
    /// everything after `K` and open. Never set by default: it throws away records that were
    /// acknowledged.
    pub discard_after: Option<u64>,
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
            discard_after: None,
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
    /// Segment and offset where a torn (or, with a confirmed repair, corrupt) tail starts.
    pub torn_tail: Option<(PathBuf, u64)>,
    /// Why the tail was considered torn.
    pub tail_reason: Option<String>,
    /// Whether the tail was cut (false when `repair` is off: appends are then refused).
    pub repaired: bool,
    /// The confirmed repair that was carried out, if any.
    pub repair: Option<RepairPlan>,
    /// The newest sequence recorded as durable (acknowledged), and what recorded it.
    pub acknowledged_sequence: u64,
    /// Whether this open created a new ledger (an empty data directory).
    pub created: bool,
}

/// What a repair of a journal that refuses to open would discard: stated to the operator, who
/// confirms it by naming `keep_through` (`--repair-discard-after`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepairPlan {
    /// Why the journal refuses to open.
    pub problem: String,
    /// Records `first_sequence..=keep_through` are kept.
    pub first_sequence: u64,
    pub keep_through: u64,
    /// The highest sequence known to have existed (a record found after the damage, or the
    /// durable claim); `keep_through + 1 ..= discard_through` are discarded.
    pub discard_through: u64,
    /// The newest sequence recorded as durable: discarded records up to it were acknowledged.
    pub acknowledged_through: u64,
    /// Bytes zeroed: (segment, from offset, length).
    pub zero: Option<(PathBuf, u64, u64)>,
    /// Segment files removed.
    pub remove_segments: Vec<PathBuf>,
}

impl RepairPlan {
    /// Records discarded that were known to exist (at least; damage hides the exact count).
    pub fn discarded_records(&self) -> u64 {
        self.discard_through.saturating_sub(self.keep_through)
    }

    /// Acknowledged records discarded.
    pub fn acknowledged_discarded(&self) -> u64 {
        self.acknowledged_through.saturating_sub(self.keep_through)
    }
}

impl std::fmt::Display for RepairPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "problem: {}", self.problem)?;
        writeln!(
            f,
            "keep: records {}..={} ({} records)",
            self.first_sequence,
            self.keep_through,
            (self.keep_through + 1).saturating_sub(self.first_sequence)
        )?;
        if self.discard_through > self.keep_through {
            writeln!(
                f,
                "discard: sequences {}..={} (at least {} records, {} of them acknowledged)",
                self.keep_through + 1,
                self.discard_through,
                self.discarded_records(),
                self.acknowledged_discarded()
            )?;
        } else {
            writeln!(f, "discard: no record, only what no longer fits the journal")?;
        }
        if let Some((segment, offset, len)) = &self.zero {
            writeln!(f, "zero: {} from offset {offset} ({len} bytes)", segment.display())?;
        }
        for segment in &self.remove_segments {
            writeln!(f, "remove: segment file {}", segment.display())?;
        }
        Ok(())
    }
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
    /// The data directory does not hold what the journal must: missing segments or journal
    /// directory, no or a damaged superblock, an older format, another ledger's files.
    #[error("journal in {dir}: {reason}")]
    Refused { dir: PathBuf, reason: String },
    /// `discard_after` does not match what a repair would keep.
    #[error(
        "repair not confirmed: --repair-discard-after {confirmed} does not match the plan, which \
         keeps records up to {plan_keeps}:\n{plan}"
    )]
    RepairMismatch { confirmed: u64, plan_keeps: u64, plan: Box<RepairPlan> },
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
    /// Open only for the active segment (appends, flushes): sealed segments are read through
    /// their maps alone, so the journal holds a constant number of descriptors however long
    /// it grows.
    file: Option<File>,
    map: MmapMut,
}

impl Segment {
    fn file(&self) -> &File {
        self.file.as_ref().expect("the active segment keeps its file open")
    }
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
    /// Checksum of record `durable_sequence`.
    durable_checksum: u128,
    /// The newest sequence recorded as durable on disk (a slot, a segment header or the
    /// superblock): a start refuses a journal that ends before it.
    claimed_sequence: u64,
    /// Counter of the newest durability slot written in the active segment.
    slot_counter: u64,
    /// No claim written names a record past this one ([`Journal::limit_claims`]).
    claim_limit: u64,
    superblock: Superblock,
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
            .field("claimed_sequence", &self.claimed_sequence)
            .field("poisoned", &self.poisoned)
            .finish()
    }
}

/// The superblock of `data_dir`, `None` when there is none; a damaged one refuses.
fn read_superblock(data_dir: &Path) -> Result<Option<Superblock>, JournalError> {
    let path = superblock::superblock_path(data_dir);
    match superblock::read(data_dir).map_err(io_err(&path))? {
        None => Ok(None),
        Some(Ok(sb)) => Ok(Some(sb)),
        Some(Err(reason)) => Err(JournalError::Refused {
            dir: data_dir.to_path_buf(),
            reason: format!(
                "{reason}: the journal cannot be checked against what it must hold; restore \
                 the data directory from a backup"
            ),
        }),
    }
}

impl Journal {
    /// Opens the journal in `config.dir/journal`, takes the lock, scans every segment, checks
    /// them against the superblock and the durability slots, and cuts a torn tail of records
    /// that were never acknowledged. Creates a new ledger (superblock, segment 0) when the
    /// directory holds no journal and no superblock. Refuses (`Corrupt`, `Refused`) when
    /// segments or acknowledged records are missing or damaged, unless `discard_after`
    /// confirms the [`RepairPlan`].
    pub fn open(config: JournalConfig) -> Result<(Journal, OpenReport), JournalError> {
        let record_min = (RECORDS_OFFSET + record_size(0)) as u64;
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
        let found_superblock = read_superblock(&config.dir)?;
        if let Some(sb) = &found_superblock {
            if !journal_dir.is_dir() {
                return Err(JournalError::Refused {
                    dir: config.dir.clone(),
                    reason: format!(
                        "the journal directory {} is missing, but the superblock records a \
                         journal of segments {}..={} (acknowledged records up to sequence {} at \
                         least): it was moved or deleted; put it back (or restore it from a \
                         backup)",
                        journal_dir.display(),
                        sb.first_segment_index,
                        sb.last_segment_index,
                        sb.durable_sequence
                    ),
                });
            }
        }
        let created_dir = segment::private_dir(&journal_dir).map_err(io_err(&journal_dir))?;
        if created_dir {
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
            segments.push(Segment { index, first_sequence: 0, path, file: Some(file), map });
        }
        let mut created = false;
        let sb = match found_superblock {
            Some(sb) => sb,
            None => {
                created = segments.is_empty();
                Self::create_or_adopt(&config, &journal_dir, &mut segments)?
            }
        };

        let views: Vec<SegView<'_>> =
            segments.iter().map(|s| SegView { index: s.index, bytes: &s.map }).collect();
        let mut found = scan::scan(&views, Some(&sb));
        let paths: Vec<PathBuf> = segments.iter().map(|s| s.path.clone()).collect();
        let plan = plan_repair(&found, &views, &paths, &config.dir);
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
            repair: None,
            acknowledged_sequence: found.claim.sequence,
            created,
        };
        let mut sb = sb;
        let mut unrepaired = None;
        match plan {
            Ok(None) => {}
            Ok(Some(plan)) if config.discard_after == Some(plan.keep_through) => {
                Self::execute_repair(&config, &journal_dir, &mut segments, &found, &plan, &mut sb)?;
                found.end_seg = found.end_seg.min(segments.len() - 1);
                found.tail = Tail::Clean;
                found.claim.sequence = plan.keep_through;
                report.torn_tail = plan.zero.as_ref().map(|(p, o, _)| (p.clone(), *o));
                report.truncated_bytes = plan.zero.as_ref().map_or(0, |z| z.2);
                report.repaired = true;
                report.repair = Some(plan);
            }
            Ok(Some(plan)) => {
                if let Some(confirmed) = config.discard_after {
                    return Err(JournalError::RepairMismatch {
                        confirmed,
                        plan_keeps: plan.keep_through,
                        plan: Box::new(plan),
                    });
                }
                return Err(refusal(&found, &paths, &config.dir));
            }
            Err(_) => return Err(refusal(&found, &paths, &config.dir)),
        }
        if let Tail::Damaged(d) = &found.tail {
            // What is left is a torn write of records that were never acknowledged.
            debug_assert!(d.valid_after.is_none() && found.claim.sequence <= found.last_sequence);
            let path = segments[d.seg].path.clone();
            report.torn_tail = Some((path.clone(), d.offset as u64));
            report.tail_reason = Some(d.reason.clone());
            if config.repair {
                let seg = &mut segments[d.seg];
                seg.map[d.offset..d.nonzero_end].fill(0);
                seg.map.flush_range(d.offset, d.nonzero_end - d.offset).map_err(io_err(&path))?;
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
        // Segments past the end of the valid data (only when not repaired) stay mapped for
        // reads but are never written; trim the list to what the scan accepted.
        segments.truncate(found.end_seg + 1);
        for (seg, header) in segments.iter_mut().zip(&found.headers) {
            seg.first_sequence = header.first_sequence;
        }
        // The scan read every segment through its map; let those pages go from this process's
        // resident set (they stay in the page cache, and reads map them again on demand).
        // Only the active segment keeps its descriptor.
        let active = segments.len().saturating_sub(1);
        for (i, seg) in segments.iter_mut().enumerate() {
            release_pages(&seg.map);
            if i != active {
                seg.file = None;
            }
        }
        let slot_counter = if report.repaired && report.repair.is_some() {
            1
        } else {
            found.active_slot.map_or(0, |s| s.counter)
        };
        let claimed_sequence = found.claim.sequence.min(found.last_sequence);

        let mut journal = Journal {
            journal_dir,
            _lock: lock,
            segments,
            write_offset: found.end_offset,
            dirty_from: found.end_offset,
            last_sequence: found.last_sequence,
            last_checksum: found.last_checksum,
            durable_sequence: found.last_sequence,
            durable_checksum: found.last_checksum,
            claimed_sequence,
            slot_counter,
            claim_limit: u64::MAX,
            superblock: sb,
            first_sequence: found.first_sequence,
            poisoned: false,
            unrepaired,
            cursor: Cell::new(Cursor::default()),
            config,
        };
        if journal.unrepaired.is_none() {
            journal.restore_active_length()?;
        }
        let newest = journal.active().index;
        if newest > journal.superblock.last_segment_index {
            // A crash between a segment's creation and the superblock's update: record it now.
            journal.superblock.last_segment_index = newest;
            journal.write_superblock()?;
        }
        report.segments = journal.segments.len();
        // What the scan accepted and what the journal now continues from agree.
        assert_eq!(journal.checksum_of(journal.last_sequence), Some(journal.last_checksum));
        Ok((journal, report))
    }

    /// No superblock: create a new ledger in an empty journal directory, or finish a creation
    /// a crash interrupted (segment 0 exists, with no record); refuse anything else, saying
    /// what was found.
    fn create_or_adopt(
        config: &JournalConfig,
        journal_dir: &Path,
        segments: &mut Vec<Segment>,
    ) -> Result<Superblock, JournalError> {
        let refuse = |reason: String| JournalError::Refused { dir: config.dir.clone(), reason };
        if let Some(old) =
            segments.iter().find(|s| SegmentHeader::version_of(&s.map).is_some_and(|v| v < 2))
        {
            return Err(refuse(format!(
                "{} is a journal segment of format version {} (written by an older ledgerd); \
                 this ledgerd writes version {} and does not convert it. Keep serving this \
                 directory with the ledgerd that wrote it, or start this version on a new, \
                 empty data directory and re-create the accounts there",
                old.path.display(),
                SegmentHeader::version_of(&old.map).unwrap_or(0),
                format::FORMAT_VERSION
            )));
        }
        match segments.as_slice() {
            [] => {
                let ledger_id = superblock::new_ledger_id()
                    .map_err(io_err(&superblock::superblock_path(&config.dir)))?;
                let header = SegmentHeader {
                    index: 0,
                    first_sequence: 1,
                    segment_size: config.segment_size,
                    chain_in: 0,
                    ledger_id,
                };
                let path = segment_path(journal_dir, 0);
                let (path, file) =
                    segment::create_segment(journal_dir, &header).map_err(io_err(&path))?;
                // SAFETY: as in `open`.
                let map = unsafe { MmapMut::map_mut(&file) }.map_err(io_err(&path))?;
                segments.push(Segment { index: 0, first_sequence: 1, path, file: Some(file), map });
                Self::first_superblock(config, ledger_id)
            }
            [only] if only.index == 0 => {
                let header = SegmentHeader::decode(&only.map).map_err(|reason| {
                    refuse(format!("{} has no superblock and {}", only.path.display(), reason))
                })?;
                let view = [SegView { index: 0, bytes: &only.map }];
                let found = scan::scan(&view, None);
                let empty = found.records == 0
                    && found.tail == Tail::Clean
                    && header.first_sequence == 1
                    && DurableSlot::newest(&only.map, 0).is_none();
                if !empty {
                    return Err(refuse(format!(
                        "there is no superblock ({}), but segment {} holds records: the \
                         superblock was deleted, or these segments were copied without it; \
                         restore it from a backup",
                        superblock::superblock_path(&config.dir).display(),
                        only.path.display()
                    )));
                }
                Self::first_superblock(config, header.ledger_id)
            }
            more => Err(refuse(format!(
                "there is no superblock ({}), but the journal directory holds {} segment files \
                 (from {}): the superblock was deleted, or these segments were copied without \
                 it; restore it from a backup",
                superblock::superblock_path(&config.dir).display(),
                more.len(),
                more[0].path.display()
            ))),
        }
    }

    fn first_superblock(
        config: &JournalConfig,
        ledger_id: u128,
    ) -> Result<Superblock, JournalError> {
        let path = superblock::superblock_path(&config.dir);
        superblock::write(&config.dir, &Superblock::new(ledger_id)).map_err(io_err(&path))
    }

    /// Carries out a confirmed repair plan: zero, remove, reset the durable claims to what is
    /// kept, record it in the superblock.
    fn execute_repair(
        config: &JournalConfig,
        journal_dir: &Path,
        segments: &mut Vec<Segment>,
        found: &scan::Scan,
        plan: &RepairPlan,
        sb: &mut Superblock,
    ) -> Result<(), JournalError> {
        let keep_seg = found.end_seg;
        for later in segments.drain(keep_seg + 1..) {
            fs::remove_file(&later.path).map_err(io_err(&later.path))?;
        }
        let seg = segments.last_mut().expect("a kept segment");
        let full = found.headers[keep_seg].segment_size;
        if (seg.map.len() as u64) < full {
            // Cut short by hand: back to full length before writing its slots.
            segment::preallocate(seg.file(), full).map_err(io_err(&seg.path))?;
            // SAFETY: as in `open`.
            seg.map = unsafe { MmapMut::map_mut(seg.file()) }.map_err(io_err(&seg.path))?;
        }
        if let Some((_, from, len)) = &plan.zero {
            let (from, len) = (*from as usize, *len as usize);
            seg.map[from..from + len].fill(0);
        }
        // The slots claim records that are gone now: the kept end is the new claim.
        for i in 0..SLOT_COUNT {
            seg.map[slot_offset(i)..slot_offset(i) + SLOT_SIZE].fill(0);
        }
        if found.last_sequence >= seg.first_sequence.max(found.headers[keep_seg].first_sequence) {
            let slot = DurableSlot {
                segment_index: seg.index,
                counter: 1,
                sequence: found.last_sequence,
                checksum: found.last_checksum,
            };
            seg.map[slot_offset(1)..slot_offset(1) + SLOT_SIZE].copy_from_slice(&slot.encode());
        }
        seg.map.flush().map_err(io_err(&seg.path))?;
        segment::fsync_dir(journal_dir).map_err(io_err(journal_dir))?;
        sb.last_segment_index = seg.index;
        sb.durable_sequence = found.last_sequence;
        sb.durable_checksum = found.last_checksum;
        let path = superblock::superblock_path(&config.dir);
        *sb = superblock::write(&config.dir, sb).map_err(io_err(&path))?;
        Ok(())
    }

    /// Appends one record and returns its sequence number (the first is 1). Copies `body` into
    /// the map; nothing is durable until `flush`.
    pub fn append(&mut self, body: &[u8]) -> Result<u64, JournalError> {
        self.append_in_term(body, 0)
    }

    /// [`Journal::append`] for a replica: the record carries the Raft `term` of its entry,
    /// whose log index is the record's sequence.
    pub fn append_in_term(&mut self, body: &[u8], term: u64) -> Result<u64, JournalError> {
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
            encode_record(&mut seg.map[off..off + size], sequence, term, chain, body)
        } else {
            // Large records go to the file with one pwritev (header, body, padding): no
            // first-write page faults, and the pages never count towards this process's
            // resident set. Reads through the map see the same page cache.
            let mut head = [0u8; RECORD_HEADER_SIZE];
            let checksum = encode_record_header(&mut head, sequence, term, chain, body);
            let pad = &[0u8; format::RECORD_ALIGN][..size - RECORD_HEADER_SIZE - body.len()];
            if let Err(source) = segment::write_all_at3(seg.file(), &head, body, pad, off as u64) {
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
        self.flush_active()?;
        assert_eq!(self.durable_sequence, self.last_sequence, "a flush covers every append");
        Ok(())
    }

    /// Whether the last flush is not yet recorded as durable on disk ([`Journal::seal`]).
    pub fn seal_pending(&self) -> bool {
        !self.poisoned && self.unrepaired.is_none() && {
            let (claim, _) = self.claimable();
            claim > self.claimed_sequence && claim >= self.active().first_sequence
        }
    }

    /// Records in a durability slot that everything flushed so far is durable, and makes that
    /// durable (one `fdatasync` of page 0). Called when idle and at shutdown: afterwards a
    /// damaged last record is told apart from a torn write. Nothing to do when no flush
    /// happened since the last claim.
    pub fn seal(&mut self) -> Result<(), JournalError> {
        if self.poisoned {
            return Err(JournalError::Poisoned);
        }
        if !self.seal_pending() {
            return Ok(());
        }
        if let Some(fault) = &self.config.fault {
            if let Err(e) = fault.on_flush() {
                let path = self.active().path.clone();
                return Err(self.poison(JournalError::Io { path, source: e }));
            }
        }
        let claim = self.claimable();
        self.write_slot(claim.0, claim.1);
        let seg = self.active();
        let result = match self.config.flush_mode {
            FlushMode::Fdatasync => seg.file().sync_data(),
            FlushMode::Msync => seg.map.flush_range(0, RECORDS_OFFSET),
        };
        if let Err(source) = result {
            let path = seg.path.clone();
            return Err(self.poison(JournalError::Io { path, source }));
        }
        self.claimed_sequence = claim.0;
        Ok(())
    }

    /// Checks that the journal could take a write now, without writing a record: injected
    /// faults, an `fdatasync` of the active segment, and room on the file system for the
    /// next segment. For health checks while writes are failing.
    pub fn probe(&mut self) -> Result<(), JournalError> {
        if self.poisoned {
            return Err(JournalError::Poisoned);
        }
        let path = self.active().path.clone();
        if let Some(fault) = &self.config.fault {
            if let Err(e) = fault.on_append().and_then(|()| fault.on_flush()) {
                return Err(self.poison(JournalError::Io { path, source: e }));
            }
        }
        if let Err(source) = self.active().file().sync_data() {
            return Err(self.poison(JournalError::Io { path, source }));
        }
        // SAFETY: statvfs fills the struct it is handed; the path is a valid C string.
        let free = unsafe {
            let dir = std::ffi::CString::new(self.journal_dir.as_os_str().as_encoded_bytes())
                .map_err(|_| JournalError::Config("journal path holds a NUL byte".into()))?;
            let mut st: libc::statvfs = std::mem::zeroed();
            if libc::statvfs(dir.as_ptr(), &mut st) != 0 {
                return Err(JournalError::Io { path, source: io::Error::last_os_error() });
            }
            st.f_bavail.saturating_mul(st.f_frsize)
        };
        if free < self.config.segment_size {
            return Err(JournalError::Io {
                path: self.journal_dir.clone(),
                source: io::Error::from_raw_os_error(libc::ENOSPC),
            });
        }
        Ok(())
    }

    /// The newest sequence recorded as durable on disk.
    pub fn claimed_sequence(&self) -> u64 {
        self.claimed_sequence
    }

    /// The ledger id (from the superblock).
    pub fn ledger_id(&self) -> u128 {
        self.superblock.ledger_id
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

    /// From now on no durability claim (slot, superblock) names a record past `sequence`,
    /// which only grows. A replica sets it to its commit index: records past it are durable
    /// but may still be replaced by a new leader, so a start must not insist on them, and
    /// [`Journal::cut_after`] may remove them. A single replica never calls it: all it
    /// flushes is acknowledged.
    pub fn limit_claims(&mut self, sequence: u64) {
        assert!(
            self.claim_limit == u64::MAX || sequence >= self.claim_limit,
            "the claim limit went back from {} to {sequence}",
            self.claim_limit
        );
        assert!(sequence <= self.last_sequence, "a claim limit past the journal");
        self.claim_limit = sequence;
    }

    /// Removes the records after `sequence`: a replica's entries past its commit index that a
    /// new leader replaced. Durable when it returns. The order makes a crash at any point
    /// leave a journal that opens, holding either the records before the cut or a prefix of
    /// them that still reaches `sequence`: the superblock stops naming later segments first,
    /// then those are removed, then the rest of the cut segment is zeroed.
    pub fn cut_after(&mut self, sequence: u64) -> Result<u64, JournalError> {
        if self.poisoned {
            return Err(JournalError::Poisoned);
        }
        assert!(
            self.claim_limit != u64::MAX && sequence >= self.claim_limit,
            "cut after {sequence}, below the claim limit {}: that record may be acknowledged",
            self.claim_limit
        );
        assert!(sequence + 1 >= self.first_sequence, "cut before the journal's first record");
        if sequence >= self.last_sequence {
            return Ok(0);
        }
        let removed = self.last_sequence - sequence;
        let checksum = self.checksum_of(sequence).expect("the record before the cut");
        let (seg, from) = self.locate(sequence + 1, self.last_sequence).expect("the cut record");
        // Where the cut segment's records end.
        let last_in_seg =
            self.segments.get(seg + 1).map_or(self.last_sequence, |s| s.first_sequence - 1);
        let (_, last_off) = self.locate(last_in_seg, self.last_sequence).expect("the last record");
        let end = {
            let m = &self.segments[seg].map;
            last_off + record_size(le_u32(&m[last_off + 24..last_off + 28]) as usize)
        };
        self.cursor.set(Cursor::default());
        if seg + 1 < self.segments.len() || self.superblock.durable_sequence > sequence {
            self.cut_step()?;
            self.superblock.last_segment_index = self.segments[seg].index;
            if self.superblock.durable_sequence > sequence {
                self.superblock.durable_sequence = sequence;
                self.superblock.durable_checksum = checksum;
            }
            self.write_superblock()?;
        }
        if seg + 1 < self.segments.len() {
            let later: Vec<Segment> = self.segments.drain(seg + 1..).collect();
            for later in later.into_iter().rev() {
                self.cut_step()?;
                self.or_poison(&later.path, fs::remove_file(&later.path))?;
            }
            self.cut_step()?;
            let dir = self.journal_dir.clone();
            self.or_poison(&dir, segment::fsync_dir(&dir))?;
            let path = self.active().path.clone();
            if self.active().file.is_none() {
                let file = OpenOptions::new().read(true).write(true).open(&path);
                let file = self.or_poison(&path, file)?;
                self.segments.last_mut().expect("the cut segment").file = Some(file);
            }
            let active = self.active();
            self.slot_counter =
                DurableSlot::newest(&active.map, active.index).map_or(0, |slot| slot.counter);
        }
        self.cut_step()?;
        let active = self.segments.last_mut().expect("the cut segment");
        active.map[from..end].fill(0);
        let result = match self.config.flush_mode {
            FlushMode::Fdatasync => active.file().sync_data(),
            FlushMode::Msync => active.map.flush_range(from, end - from),
        };
        let path = active.path.clone();
        self.or_poison(&path, result)?;
        self.write_offset = from;
        self.dirty_from = from;
        self.last_sequence = sequence;
        self.last_checksum = checksum;
        self.durable_sequence = sequence;
        self.durable_checksum = checksum;
        self.claimed_sequence = self.claimed_sequence.min(sequence);
        Ok(removed)
    }

    /// Where a test may stop a cut ([`FaultPlan::fail_cut_step`]).
    fn cut_step(&mut self) -> Result<(), JournalError> {
        let Some(fault) = &self.config.fault else { return Ok(()) };
        let result = fault.on_cut_step();
        let dir = self.journal_dir.clone();
        self.or_poison(&dir, result)
    }

    /// `result`, or the journal poisoned by its error on `path`.
    fn or_poison<T>(&mut self, path: &Path, result: io::Result<T>) -> Result<T, JournalError> {
        result.map_err(|source| self.poison(JournalError::Io { path: path.to_path_buf(), source }))
    }

    /// The term record `seq` was appended in (0 outside replication); `None` outside
    /// `first_sequence()..=last_sequence()`.
    pub fn term_of(&self, seq: u64) -> Option<u64> {
        let (seg, off) = self.locate(seq, self.last_sequence)?;
        let m = &self.segments[seg].map;
        Some(format::le_u64(&m[off + 40..off + 48]))
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
        let seg_room = self.config.segment_size as usize - RECORDS_OFFSET - RECORD_HEADER_SIZE;
        (self.config.body_max as usize).min(seg_room)
    }

    fn poison(&mut self, e: JournalError) -> JournalError {
        self.poisoned = true;
        e
    }

    /// Makes the active segment durable. In the same `fdatasync` (no extra system call) a
    /// durability slot records what the *previous* flush made durable: that claim is already
    /// true on disk, so it can never run ahead of the records it names, whatever order the
    /// pages reach the disk in.
    fn flush_active(&mut self) -> Result<(), JournalError> {
        if let Some(fault) = &self.config.fault {
            if let Err(e) = fault.on_flush() {
                let path = self.active().path.clone();
                return Err(self.poison(JournalError::Io { path, source: e }));
            }
        }
        let claim = self.claimable();
        let slot = claim.0 > self.claimed_sequence && claim.0 >= self.active().first_sequence;
        if slot {
            self.write_slot(claim.0, claim.1);
        }
        let (from, to) = (if slot { 0 } else { self.dirty_from }, self.write_offset);
        let seg = self.segments.last().expect("an active segment");
        let result = match self.config.flush_mode {
            FlushMode::Fdatasync => seg.file().sync_data(),
            FlushMode::Msync => seg.map.flush_range(from, to - from),
        };
        if let Err(e) = result {
            let path = seg.path.clone();
            return Err(self.poison(JournalError::Io { path, source: e }));
        }
        if slot {
            self.claimed_sequence = claim.0;
        }
        self.durable_sequence = self.last_sequence;
        self.durable_checksum = self.last_checksum;
        self.dirty_from = to;
        Ok(())
    }

    /// What a claim may name now: the durable end, or the claim limit when that is lower.
    fn claimable(&self) -> (u64, u128) {
        if self.durable_sequence <= self.claim_limit {
            return (self.durable_sequence, self.durable_checksum);
        }
        let checksum =
            self.checksum_of(self.claim_limit).expect("the claim limit is in the journal");
        (self.claim_limit, checksum)
    }

    /// Stores the next durability slot of the active segment into its map (made durable by
    /// the caller's sync). Round-robin over `SLOT_COUNT` sectors: a torn write of one slot
    /// leaves the previous claims.
    fn write_slot(&mut self, sequence: u64, checksum: u128) {
        debug_assert!(sequence <= self.durable_sequence, "a claim never runs ahead of the disk");
        self.slot_counter += 1;
        let seg = self.segments.last_mut().expect("an active segment");
        let slot = DurableSlot {
            segment_index: seg.index,
            counter: self.slot_counter,
            sequence,
            checksum,
        };
        let at = slot_offset(self.slot_counter as usize % SLOT_COUNT);
        seg.map[at..at + SLOT_SIZE].copy_from_slice(&slot.encode());
    }

    fn write_superblock(&mut self) -> Result<(), JournalError> {
        let path = superblock::superblock_path(&self.config.dir);
        match superblock::write(&self.config.dir, &self.superblock) {
            Ok(sb) => {
                self.superblock = sb;
                Ok(())
            }
            Err(source) => Err(self.poison(JournalError::Io { path, source })),
        }
    }

    /// Seals the active segment (flushing it), starts the next one and records it in the
    /// superblock (one `fdatasync` per segment, not per request): from then on a start that
    /// does not find the new segment refuses.
    fn roll(&mut self) -> Result<(), JournalError> {
        if self.durable_sequence != self.last_sequence {
            self.flush_active()?;
        }
        let next = self.active().index + 1;
        self.create_segment(next).map_err(|e| self.poison(e))?;
        // Pages of the sealed segment that reads mapped in leave the resident set, and its
        // descriptor is closed (reads go through the map).
        let sealed = self.segments.len() - 2;
        release_pages(&self.segments[sealed].map);
        self.segments[sealed].file = None;
        // The new segment's header implies every earlier record durable.
        self.claimed_sequence = self.claimed_sequence.max(self.last_sequence);
        self.slot_counter = 0;
        self.superblock.last_segment_index = next;
        let (sequence, checksum) = self.claimable();
        if sequence > self.superblock.durable_sequence {
            self.superblock.durable_sequence = sequence;
            self.superblock.durable_checksum = checksum;
        }
        self.write_superblock()
    }

    fn create_segment(&mut self, index: u64) -> Result<(), JournalError> {
        let header = SegmentHeader {
            index,
            first_sequence: self.last_sequence + 1,
            segment_size: self.config.segment_size,
            chain_in: self.last_checksum,
            ledger_id: self.superblock.ledger_id,
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
            file: Some(file),
            map,
        });
        self.write_offset = RECORDS_OFFSET;
        self.dirty_from = RECORDS_OFFSET;
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
        segment::preallocate(seg.file(), header.segment_size).map_err(io_err(&seg.path))?;
        seg.file().sync_all().map_err(io_err(&seg.path))?;
        // SAFETY: as in `open`.
        seg.map = unsafe { MmapMut::map_mut(seg.file()) }.map_err(io_err(&seg.path))?;
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
            (RECORDS_OFFSET, self.segments[seg].first_sequence)
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

/// The first segment file in `data_dir/journal` written in an older format version, with
/// that version: such a directory is an older ledgerd's, not a damaged one.
pub fn older_format_segment(data_dir: &Path) -> Option<(PathBuf, u16)> {
    use std::io::Read;
    let journal_dir = data_dir.join(JOURNAL_DIR);
    segment::list_segments(&journal_dir).ok()?.into_iter().find_map(|(_, path)| {
        let mut head = [0u8; 16];
        File::open(&path).ok()?.read_exact(&mut head).ok()?;
        let version = SegmentHeader::version_of(&head)?;
        (version < format::FORMAT_VERSION).then_some((path, version))
    })
}

/// The error a journal that refuses to open returns, naming what is wrong and where.
fn refusal(found: &scan::Scan, paths: &[PathBuf], dir: &Path) -> JournalError {
    let at = |seg: usize| paths.get(seg).cloned().unwrap_or_else(|| dir.join(JOURNAL_DIR));
    match &found.tail {
        Tail::Broken { seg, offset, reason } | Tail::Lost { seg, offset, reason } => {
            JournalError::Corrupt {
                segment: at(*seg),
                offset: *offset as u64,
                reason: reason.clone(),
            }
        }
        Tail::Damaged(d) => {
            let reason = match d.valid_after {
                Some((vseg, voff, vseq)) => format!(
                    "{}; a valid record (sequence {vseq}) follows at {}, offset {voff}",
                    d.reason,
                    at(vseg).display()
                ),
                None => d.reason.clone(),
            };
            JournalError::Corrupt { segment: at(d.seg), offset: d.offset as u64, reason }
        }
        Tail::Missing { reason, .. } => {
            JournalError::Refused { dir: dir.to_path_buf(), reason: reason.clone() }
        }
        Tail::Clean => unreachable!("a clean journal is not refused"),
    }
}

/// What a repair would discard for a journal in state `found`: `Ok(None)` when the journal
/// opens without one (clean, or a torn tail of unacknowledged records), `Err` when no repair
/// can help (the start of the history is gone).
pub(crate) fn plan_repair(
    found: &scan::Scan,
    segs: &[SegView<'_>],
    paths: &[PathBuf],
    data_dir: &Path,
) -> Result<Option<RepairPlan>, String> {
    let problem = match &found.tail {
        Tail::Clean => return Ok(None),
        Tail::Damaged(d) if d.valid_after.is_none() => return Ok(None),
        Tail::Missing { reason, repairable: false } => {
            return Err(format!(
                "{reason}; no repair can rebuild history that is not there: restore the data \
                 directory from a backup"
            ))
        }
        Tail::Broken { seg: 0, reason, .. } => {
            return Err(format!(
                "{}: {reason}; the first segment is damaged, so nothing could be kept",
                paths[0].display()
            ))
        }
        _ => refusal(found, paths, data_dir).to_string(),
    };
    let keep = found.end_seg;
    let bytes = segs[keep].bytes;
    let nonzero = scan::nonzero_end(bytes, found.end_offset);
    let zero = (nonzero > found.end_offset).then(|| {
        (paths[keep].clone(), found.end_offset as u64, (nonzero - found.end_offset) as u64)
    });
    let mut discard_through = found.claim.sequence.max(found.last_sequence);
    if let Tail::Damaged(Damage { valid_after: Some((vseg, voff, _)), .. }) = &found.tail {
        // Every valid record after the damage is discarded: name the highest.
        let mut from = (*vseg, *voff);
        while let Some(seg) = segs.get(from.0) {
            match scan::probe(seg.bytes, from.1, discard_through) {
                Some((off, seq)) => {
                    discard_through = seq;
                    from.1 = off + RECORD_HEADER_SIZE;
                }
                None => from = (from.0 + 1, RECORDS_OFFSET),
            }
        }
    }
    Ok(Some(RepairPlan {
        problem,
        first_sequence: found.first_sequence,
        keep_through: found.last_sequence,
        discard_through,
        acknowledged_through: found.claim.sequence,
        zero,
        remove_segments: paths[keep + 1..].to_vec(),
    }))
}
