//! Restart = the newest valid snapshot + a replay of the journal records after it.
//!
//! A snapshot is trusted only when the journal still holds the record it was taken at, with
//! the same checksum: a snapshot from another journal, or one past a journal that was cut
//! back, is skipped like a damaged one. With no usable snapshot the whole journal is
//! replayed. Snapshots are built outside the daemon ([`build_snapshot`], run in a child
//! process or by `ledger-replay snapshot`) from the durable journal alone, so the business
//! thread never stops for one.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::event;
use crate::journal::{
    segment_path, FaultPlan, FlushMode, Journal, JournalConfig, JournalError, JournalReader,
};
use crate::snapshot;
use crate::state_machine::StateMachine;

/// What recovery needs to know about the data directory.
#[derive(Clone, Debug)]
pub struct RecoveryConfig {
    pub data_dir: PathBuf,
    pub segment_size_bytes: u64,
    pub flush_mode: FlushMode,
    /// The operator's confirmation of a repair: the last sequence to keep, as the plan
    /// ([`repair_plan`]) names it. Off by default: the daemon refuses to start and names the
    /// damage. A torn tail of unacknowledged records, what a crash leaves, is always cut.
    pub discard_after: Option<u64>,
    /// Test fault injection, handed to every journal recovery opens.
    pub fault: Option<Arc<FaultPlan>>,
    /// The snapshot builder evicts from memory what the disk index held up to this event
    /// timestamp when the daemon started it (0: nothing), so that snapshots hold the hot
    /// state only (see `state_machine::evict`).
    pub evict_through_ns: u64,
}

impl RecoveryConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        let journal = JournalConfig::new(data_dir.into());
        RecoveryConfig {
            data_dir: journal.dir.clone(),
            segment_size_bytes: journal.segment_size,
            flush_mode: journal.flush_mode,
            discard_after: None,
            fault: None,
            evict_through_ns: 0,
        }
    }

    /// The journal settings recovery opens the journal with.
    pub fn journal_config(&self) -> JournalConfig {
        let mut config = JournalConfig::new(self.data_dir.clone());
        config.segment_size = self.segment_size_bytes;
        config.flush_mode = self.flush_mode;
        config.repair = true;
        config.discard_after = self.discard_after;
        config.fault = self.fault.clone();
        config
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("journal record {sequence} does not apply: {reason}")]
    Replay { sequence: u64, reason: String },
    #[error("snapshot I/O: {0}")]
    Snapshot(#[from] std::io::Error),
    /// The data directory is not a ledger and not empty, or a snapshot is beyond the journal.
    #[error("{0}")]
    Refused(String),
}

/// How a recovery went, for logs, metrics and tools.
#[derive(Debug, Default)]
pub struct RecoveryReport {
    /// The sequence of the snapshot the state started from, if one was usable.
    pub snapshot_sequence: Option<u64>,
    /// Snapshots passed over, newest first, with the reason.
    pub skipped_snapshots: Vec<(PathBuf, String)>,
    /// Records replayed after the snapshot.
    pub replayed_records: u64,
    /// Changes (accounts, transfers, limits, expiries) in the replayed records.
    pub replayed_events: u64,
    /// Bytes of torn or zero-filled tail the journal cut on open.
    pub truncated_bytes: u64,
    /// Opening (and scanning) the journal.
    pub journal_open: Duration,
    /// Finding, checking and loading the snapshot into a state machine.
    pub snapshot_load: Duration,
    /// Replaying the records after the snapshot.
    pub replay: Duration,
    pub elapsed: Duration,
}

/// A recovered daemon state, ready to serve.
pub struct Recovered {
    pub state: StateMachine,
    pub journal: Journal,
    pub report: RecoveryReport,
}

/// Opens the journal for writing (cutting a torn tail) and rebuilds the
/// state from the newest usable snapshot plus the records after it.
pub fn recover(config: &RecoveryConfig) -> Result<Recovered, RecoveryError> {
    let started = Instant::now();
    check_data_dir(&config.data_dir)?;
    let (journal, open) = Journal::open(config.journal_config())?;
    let last = journal.last_sequence();
    if open.repair.is_none() && config.discard_after == Some(last) {
        // The journal needed nothing; the confirmed repair sets aside snapshots beyond it.
        let moved = discard_snapshots_after(&config.data_dir, last)?;
        if moved > 0 {
            tracing::error!(
                kept_through = last,
                discarded_snapshots = moved,
                "repair: set aside snapshots beyond the journal's end as the operator confirmed"
            );
        }
    }
    if let Some(plan) = &open.repair {
        let moved = discard_snapshots_after(&config.data_dir, plan.keep_through)?;
        tracing::error!(
            kept_through = plan.keep_through,
            discarded_records = plan.discarded_records(),
            acknowledged_discarded = plan.acknowledged_discarded(),
            zeroed_bytes = plan.zero.as_ref().map_or(0, |z| z.2),
            removed_segments = plan.remove_segments.len(),
            discarded_snapshots = moved,
            "repair: discarded journal records as the operator confirmed:\n{plan}"
        );
    } else if let Some((segment, offset)) = &open.torn_tail {
        tracing::error!(
            segment = %segment.display(),
            offset,
            cut_bytes = open.truncated_bytes,
            kept_through = open.last_sequence,
            acknowledged_through = open.acknowledged_sequence,
            reason = open.tail_reason.as_deref().unwrap_or(""),
            "cut: a torn write of records that were never acknowledged"
        );
    }
    if let Some((sequence, path)) = snapshot::list_snapshots(&config.data_dir)?
        .into_iter()
        .find(|(sequence, path)| *sequence > last && snapshot::load(path).is_ok())
    {
        return Err(RecoveryError::Refused(format!(
            "snapshot {} is at sequence {sequence}, beyond the journal's end (last record \
             {last}): journal records {}..={sequence} are missing (acknowledged: a snapshot is \
             only taken of durable records). Put the missing journal back, or run with \
             --repair true to see what a repair would discard",
            path.display(),
            last + 1
        )));
    }
    let mut report = RecoveryReport { truncated_bytes: open.truncated_bytes, ..Default::default() };
    report.journal_open = started.elapsed();
    let (state, from) =
        newest_snapshot_state(&config.data_dir, last, |seq| journal.checksum_of(seq), &mut report);
    report.snapshot_load = started.elapsed() - report.journal_open;
    for (path, reason) in &report.skipped_snapshots {
        tracing::error!(snapshot = %path.display(), %reason, "skip: snapshot not used");
    }
    let state = replay_into(state, &config.data_dir, from, last, 0, &mut report, &mut |_| {})?;
    report.elapsed = started.elapsed();
    report.replay = report.elapsed - report.journal_open - report.snapshot_load;
    Ok(Recovered { state, journal, report })
}

/// Entries a new ledger may find in its data directory: the daemon's lock and an empty (or
/// half-created) journal directory, which `Journal::open` judges.
const FRESH_ENTRIES: [&str; 2] = ["LOCK", crate::journal::JOURNAL_DIR];

/// A data directory without a superblock must be empty (a new ledger): anything else there
/// (snapshots, files) means history that this directory no longer holds, and is refused,
/// naming what was found.
pub fn check_data_dir(data_dir: &Path) -> Result<(), RecoveryError> {
    if crate::journal::superblock::superblock_path(data_dir).exists() {
        return Ok(());
    }
    let mut found: Vec<String> = match std::fs::read_dir(data_dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| !FRESH_ENTRIES.contains(&name.as_str()))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(RecoveryError::Snapshot(e)),
    };
    if found.is_empty() {
        return Ok(());
    }
    found.sort();
    if let Some((segment, version)) = crate::journal::older_format_segment(data_dir) {
        return Err(RecoveryError::Refused(format!(
            "{} holds a journal of format version {version} ({}), written by an older ledgerd; \
             this ledgerd writes version {} and does not convert it. Keep serving this \
             directory with the ledgerd that wrote it, or start this version on a new, empty \
             data directory",
            data_dir.display(),
            segment.display(),
            crate::journal::format::FORMAT_VERSION
        )));
    }
    let snapshots = snapshot::list_snapshots(data_dir).unwrap_or_default();
    let what = if snapshots.is_empty() {
        String::new()
    } else {
        format!(
            " ({} snapshots up to sequence {}: this ledger had history, and its journal and \
             superblock are gone)",
            snapshots.len(),
            snapshots[0].0
        )
    };
    let shown: Vec<&str> = found.iter().take(8).map(String::as_str).collect();
    Err(RecoveryError::Refused(format!(
        "{} is not empty but holds no ledger (no superblock): found {}{}{what}. A new ledger is \
         created only in an absent or empty directory; if this is a ledger whose journal or \
         superblock moved, put them back; otherwise choose another --data-dir",
        data_dir.display(),
        shown.join(", "),
        if found.len() > shown.len() {
            format!(" and {} more", found.len() - shown.len())
        } else {
            String::new()
        },
    )))
}

/// Renames snapshots beyond `sequence` to `*.snap.discarded` (kept for the operator, never
/// loaded) after a repair cut the journal before them; returns how many.
fn discard_snapshots_after(data_dir: &Path, sequence: u64) -> Result<usize, RecoveryError> {
    let mut moved = 0;
    for (seq, path) in snapshot::list_snapshots(data_dir)? {
        if seq > sequence {
            let mut aside = path.clone().into_os_string();
            aside.push(".discarded");
            std::fs::rename(&path, &aside)?;
            moved += 1;
        }
    }
    if moved > 0 {
        std::fs::File::open(data_dir.join(snapshot::SNAPSHOT_DIR))?.sync_all()?;
    }
    Ok(moved)
}

/// What `ledgerd --repair true` prints: the journal's repair plan plus the snapshots it
/// would set aside, and the command that confirms it. `Ok(None)` when nothing needs repair.
pub fn repair_plan(
    data_dir: &Path,
) -> Result<Option<(crate::journal::RepairPlan, String)>, String> {
    let reader = JournalReader::open(data_dir).map_err(|e| e.to_string())?;
    let plan = match reader.repair_plan()? {
        Some(plan) => plan,
        None => {
            // The journal opens; a snapshot beyond its end is repaired by setting it aside.
            let last = reader.verify().last_sequence;
            let beyond = snapshot::list_snapshots(data_dir)
                .unwrap_or_default()
                .into_iter()
                .any(|(seq, _)| seq > last);
            if !beyond {
                return Ok(None);
            }
            crate::journal::RepairPlan {
                problem: "snapshots beyond the journal's end".into(),
                first_sequence: reader.verify().first_sequence,
                keep_through: last,
                discard_through: last,
                acknowledged_through: last,
                zero: None,
                remove_segments: Vec::new(),
            }
        }
    };
    let mut text = plan.to_string();
    for (seq, path) in snapshot::list_snapshots(data_dir).unwrap_or_default() {
        if seq > plan.keep_through {
            text.push_str(&format!(
                "set aside: snapshot {} (sequence {seq}) -> *.discarded\n",
                path.display()
            ));
        }
    }
    text.push_str(&format!(
        "to do it: ledgerd --data-dir {} --repair true --repair-discard-after {}\n",
        data_dir.display(),
        plan.keep_through
    ));
    Ok(Some((plan, text)))
}

/// Zeroes every journal record after `sequence` and makes that durable: what a journal
/// failure leaves in the page cache past the last acknowledged record must never come back
/// (its requests were answered `journal_unavailable`, "nothing was applied"), and after a
/// failed flush the page cache is not trusted to reach the disk either. Later segments are
/// removed. Returns the number of records discarded. The journal must not be open for writing
/// (the caller holds the data directory's lock).
pub fn discard_after(data_dir: &Path, sequence: u64) -> Result<u64, RecoveryError> {
    let reader = JournalReader::open(data_dir)?;
    let journal_dir = reader.journal_dir().to_path_buf();
    // (segment, first offset, end offset) of the records to discard in their first segment.
    let mut cut: Option<(u64, u64, u64)> = None;
    let mut discarded = 0u64;
    {
        let mut records = reader.records(sequence + 1, None);
        while let Some(Ok(record)) = records.next_record() {
            if record.seq <= sequence {
                continue;
            }
            let end = record.offset + 64 + (record.body.len() as u64).next_multiple_of(16);
            match &mut cut {
                None => cut = Some((record.segment, record.offset, end)),
                Some((segment, _, last_end)) if *segment == record.segment => *last_end = end,
                Some(_) => {}
            }
            discarded += 1;
        }
    }
    let segments = reader.segment_count();
    drop(reader);
    let Some((segment, from, to)) = cut else { return Ok(0) };
    let path = segment_path(&journal_dir, segment);
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| RecoveryError::Journal(JournalError::Io { path, source })
    };
    let file = OpenOptions::new().write(true).open(&path).map_err(io(&path))?;
    let zeros = vec![0u8; usize::try_from(to - from).expect("a segment fits in memory")];
    file.write_all_at(&zeros, from).map_err(io(&path))?;
    file.sync_data().map_err(io(&path))?;
    let mut removed = false;
    for index in segment + 1..segment + 1 + segments as u64 {
        let later = segment_path(&journal_dir, index);
        if later.exists() {
            std::fs::remove_file(&later).map_err(io(&later))?;
            removed = true;
        }
    }
    if removed {
        std::fs::File::open(&journal_dir)
            .and_then(|dir| dir.sync_all())
            .map_err(io(&journal_dir))?;
    }
    Ok(discarded)
}

/// Rebuilds the state read-only (no lock, no repair): what `ledger-replay` and the snapshot
/// builder use while a daemon may be running. `up_to` stops at that sequence.
pub fn rebuild(
    data_dir: &Path,
    up_to: Option<u64>,
    use_snapshots: bool,
    progress: &mut dyn FnMut(u64),
) -> Result<(StateMachine, u64, RecoveryReport), RecoveryError> {
    rebuild_evicting(data_dir, up_to, use_snapshots, 0, progress)
}

/// [`rebuild`], evicting from memory while it replays what is at or before
/// `evict_through_ns` (see `state_machine::evict`): the state hash and counts are the same,
/// memory holds the hot state. `u64::MAX` keeps only what deciding needs (replay never looks
/// anything else up), for tools that replay a long journal.
pub fn rebuild_evicting(
    data_dir: &Path,
    up_to: Option<u64>,
    use_snapshots: bool,
    evict_through_ns: u64,
    progress: &mut dyn FnMut(u64),
) -> Result<(StateMachine, u64, RecoveryReport), RecoveryError> {
    let started = Instant::now();
    let reader = JournalReader::open(data_dir)?;
    let verified = reader.verify();
    let mut last = verified.last_sequence;
    if let Some(limit) = up_to {
        last = last.min(limit);
    }
    let mut report = RecoveryReport::default();
    let (state, from) = if use_snapshots {
        newest_snapshot_state(data_dir, last, |seq| record_checksum(&reader, seq), &mut report)
    } else {
        (StateMachine::new(), 1)
    };
    let state = replay_into(state, data_dir, from, last, evict_through_ns, &mut report, progress)?;
    report.elapsed = started.elapsed();
    Ok((state, last, report))
}

/// Where [`build_snapshot`] put its image.
#[derive(Debug)]
pub struct SnapshotWritten {
    pub sequence: u64,
    pub path: PathBuf,
}

/// Builds a snapshot at `up_to` (default: the journal's last record) from the newest older
/// snapshot plus the journal, writes it atomically and keeps the newest `keep` snapshots.
/// Returns `None` when the journal is empty.
pub fn build_snapshot(
    config: &RecoveryConfig,
    up_to: Option<u64>,
    keep: usize,
) -> Result<Option<SnapshotWritten>, RecoveryError> {
    let (mut state, sequence, _) =
        rebuild_evicting(&config.data_dir, up_to, true, config.evict_through_ns, &mut |_| {})?;
    if sequence == 0 {
        return Ok(None);
    }
    if config.evict_through_ns > 0 {
        // Replay evicts a bounded amount per record; here, before the image, everything the
        // index holds goes: a snapshot at the same sequence as the one it started from (the
        // index has caught up since) holds less than that one.
        state.evict(config.evict_through_ns, usize::MAX);
    }
    let reader = JournalReader::open(&config.data_dir)?;
    let checksum = record_checksum(&reader, sequence).ok_or(RecoveryError::Replay {
        sequence,
        reason: "the record vanished while the snapshot was being built".into(),
    })?;
    // Streamed to the file part by part: the process holds the state, not also its image.
    let path = snapshot::write_snapshot_streamed(&config.data_dir, sequence, checksum, |w| {
        state.write_image_to(w)
    })?;
    snapshot::prune(&config.data_dir, keep.max(1))?;
    Ok(Some(SnapshotWritten { sequence, path }))
}

fn record_checksum(reader: &JournalReader, sequence: u64) -> Option<RecordChecksum> {
    let mut records = reader.records(sequence, Some(sequence));
    match records.next_record() {
        Some(Ok(record)) if record.seq == sequence => Some(record.checksum),
        _ => None,
    }
}

/// A record's checksum, as snapshots store it to prove which journal they belong to.
type RecordChecksum = u128;

/// The newest snapshot at or below `last` whose record checksum matches the journal and whose
/// image loads; the state it holds and the first sequence still to replay.
pub fn newest_snapshot_state(
    data_dir: &Path,
    last: u64,
    checksum_of: impl Fn(u64) -> Option<RecordChecksum>,
    report: &mut RecoveryReport,
) -> (StateMachine, u64) {
    let mut state = None;
    let (loaded, skipped) = snapshot::load_newest(data_dir, |snap| {
        if snap.sequence > last {
            return false;
        }
        if checksum_of(snap.sequence) != Some(snap.record_checksum) {
            return false;
        }
        match StateMachine::from_image(&snap.body) {
            Ok(machine) => {
                state = Some(machine);
                true
            }
            Err(_) => false,
        }
    });
    report.skipped_snapshots =
        skipped.into_iter().map(|(path, error)| (path, error.to_string())).collect();
    match (loaded, state) {
        (Some(snap), Some(machine)) => {
            report.snapshot_sequence = Some(snap.sequence);
            (machine, snap.sequence + 1)
        }
        _ => (StateMachine::new(), 1),
    }
}

/// Applies records `from..=last` to `state`.
fn replay_into(
    mut state: StateMachine,
    data_dir: &Path,
    from: u64,
    last: u64,
    evict_through_ns: u64,
    report: &mut RecoveryReport,
    progress: &mut dyn FnMut(u64),
) -> Result<StateMachine, RecoveryError> {
    if from > last {
        return Ok(state);
    }
    let reader = JournalReader::open(data_dir)?;
    let mut records = reader.records(from, Some(last));
    let mut expected = from;
    let mut previous: Option<u128> = None;
    while let Some(record) = records.next_record() {
        let record = record?;
        if record.seq != expected {
            return Err(RecoveryError::Replay {
                sequence: expected,
                reason: "missing record".into(),
            });
        }
        // The reader verified the chain; replay relies on it, so it is asserted here too.
        if let Some(previous) = previous {
            assert_eq!(record.chain, previous, "replay: record {} breaks the chain", record.seq);
        }
        previous = Some(record.checksum);
        if record.body.is_empty() {
            // A replica's entry without an event (a new leader's first): nothing to apply.
            expected += 1;
            continue;
        }
        let archived = event::access(record.body)
            .map_err(|e| RecoveryError::Replay { sequence: record.seq, reason: e.to_string() })?;
        state
            .apply_event(archived)
            .map_err(|e| RecoveryError::Replay { sequence: record.seq, reason: e.to_string() })?;
        if evict_through_ns > 0 {
            // Bounded per record, and more than a record creates: memory stays at the hot
            // state plus what is newer than `evict_through_ns`.
            let budget = 2 * (archived.transfers.len() + archived.failed.len()) + 64;
            state.evict(evict_through_ns.min(archived.timestamp.to_native()), budget);
        }
        report.replayed_records += 1;
        report.replayed_events += archived.changes() as u64;
        if report.replayed_records.is_multiple_of(65_536) {
            progress(record.seq);
        }
        expected += 1;
    }
    if expected != last + 1 {
        return Err(RecoveryError::Replay {
            sequence: expected,
            reason: "journal ends early".into(),
        });
    }
    progress(last);
    Ok(state)
}
