//! A replica's Raft log kept in its journal: entry *i* is journal record *i*, the entry's term
//! is the record header's `term` and its data (an event's rkyv bytes, or nothing for the
//! entry a new leader appends) is the record's body. The journal is also the ledger's
//! history, so this log is never compacted; raft-rs never needs a snapshot from it.
//!
//! Snapshot files (the daemon's, in `snapshots/`, taken of committed entries only) shorten a
//! restart and a rebuild: the state starts from the newest one whose record checksum matches
//! the journal, and the committed entries after it are applied. A snapshot proves its entry
//! was committed, so opening raises the commit index to it.
//!
//! The hard state (term, vote, commit) lives in `raft-state` beside the journal: two 64-byte
//! copies written in turn, each with a generation and a checksum, so a torn write loses one
//! copy only. It is written, with one `fdatasync`, whenever the term or the vote changes;
//! a newer commit index alone is kept in memory (after a crash raft learns it again) and
//! becomes the journal's claim limit, so that records past it can still be cut when a new
//! leader replaces them.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use raft::prelude::{ConfState, Entry, EntryType, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, Storage, StorageError};
use xxhash_rust::xxh3::xxh3_64;

use super::ReplicaStorage;
use crate::journal::{Journal, JournalConfig, JournalError};
use crate::recovery::{newest_snapshot_state, RecoveryReport};
use crate::snapshot;
use crate::state_machine::StateMachine;

/// The file beside the journal that holds the hard state.
pub const RAFT_STATE_FILE: &str = "raft-state";
const STATE_MAGIC: [u8; 8] = *b"LDGRHARD";
const STATE_COPY: u64 = 64;
const STATE_BYTES: usize = 48;

/// The Raft log and hard state of a replica, in its data directory.
#[derive(Clone)]
pub struct JournalLog {
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    journal: Journal,
    /// The data directory, where the snapshot files are.
    dir: PathBuf,
    /// The state of the newest snapshot file, loaded on opening, until the replica takes it.
    opened_state: Option<(StateMachine, u64)>,
    state_file: File,
    state_path: PathBuf,
    generation: u64,
    hard_state: HardState,
    conf_state: ConfState,
    /// (first index, term) of each run of entries written in one term, oldest first.
    terms: Vec<(u64, u64)>,
    /// Entries cut since opening, because a new leader replaced them.
    entries_cut: u64,
}

fn store_error(e: impl std::error::Error + Send + Sync + 'static) -> raft::Error {
    raft::Error::Store(StorageError::Other(Box::new(e)))
}

impl JournalLog {
    /// Opens the log of a replica of the group `voters` in the journal `config` names,
    /// creating both on first use.
    pub fn open(config: JournalConfig, voters: &[u64]) -> Result<JournalLog, JournalError> {
        let dir = config.dir.clone();
        let (journal, _report) = Journal::open(config)?;
        let state_path = dir.join(RAFT_STATE_FILE);
        let io = |source| JournalError::Io { path: state_path.clone(), source };
        let state_file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&state_path)
            .map_err(io)?;
        let (generation, hard_state) = read_hard_state(&state_file, &state_path)?;
        let mut inner = Inner {
            journal,
            dir: dir.clone(),
            opened_state: None,
            state_file,
            state_path,
            generation,
            hard_state,
            conf_state: ConfState::from((voters.to_vec(), vec![])),
            terms: Vec::new(),
            entries_cut: 0,
        };
        let (first, last) = (inner.journal.first_sequence(), inner.journal.last_sequence());
        for index in first..=last {
            let term = inner.journal.term_of(index).expect("a record of the journal");
            assert!(term > 0, "record {index} has no term: this is not a replica's journal");
            inner.note_term(index, term);
        }
        let commit = inner.hard_state.commit;
        assert!(commit <= last, "the hard state commits {commit}, past the journal's end {last}");
        inner.journal.limit_claims(commit);
        // Snapshots are taken of entries this replica held durably and saw committed, which
        // are never cut: one beyond the journal's end means the journal lost them.
        let refused = |reason: String| JournalError::Refused { dir: dir.clone(), reason };
        let listed = snapshot::list_snapshots(&dir)
            .map_err(|source| JournalError::Io { path: dir.join("snapshots"), source })?;
        if let Some((sequence, path)) =
            listed.iter().find(|(sequence, path)| *sequence > last && snapshot::load(path).is_ok())
        {
            return Err(refused(format!(
                "snapshot {} is at entry {sequence}, beyond the journal's end ({last}): the \
                 journal lost committed entries. Replace this replica (start it on an empty data \
                 directory: it catches up from the leader)",
                path.display()
            )));
        }
        let mut report = RecoveryReport::default();
        let (state, from) =
            newest_snapshot_state(&dir, last, |seq| inner.journal.checksum_of(seq), &mut report);
        for (path, reason) in &report.skipped_snapshots {
            tracing::error!(snapshot = %path.display(), %reason, "skip: snapshot not used");
        }
        let snapshot_index = from - 1;
        inner.raise_commit(snapshot_index);
        inner.opened_state = Some((state, snapshot_index));
        Ok(JournalLog { inner: Arc::new(Mutex::new(inner)) })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().expect("the log's lock")
    }

    /// Reads the journal (the change-event feed), with the commit index: records after it
    /// may still be cut.
    pub fn with_journal<R>(&self, read: impl FnOnce(&Journal, u64) -> R) -> R {
        let inner = self.lock();
        let commit = inner.hard_state.commit.min(inner.journal.durable_sequence());
        read(&inner.journal, commit)
    }

    /// Entries cut since this log was opened because a new leader replaced them.
    pub fn entries_cut(&self) -> u64 {
        self.lock().entries_cut
    }
}

impl Inner {
    /// A newer commit index: kept in memory, and the journal's claims may now reach it.
    fn raise_commit(&mut self, commit: u64) {
        if commit > self.hard_state.commit {
            self.hard_state.commit = commit;
            self.journal.limit_claims(commit);
        }
    }

    fn note_term(&mut self, index: u64, term: u64) {
        match self.terms.last() {
            Some(&(_, last)) if last == term => {}
            Some(&(_, last)) => {
                assert!(term > last, "entry {index} of term {term} after term {last}");
                self.terms.push((index, term));
            }
            None => self.terms.push((index, term)),
        }
    }

    fn term_at(&self, index: u64) -> u64 {
        let run = self.terms.partition_point(|&(first, _)| first <= index);
        self.terms[run.checked_sub(1).expect("an index inside the log")].1
    }

    fn write_hard_state(&mut self, hs: &HardState) -> Result<(), JournalError> {
        let generation = self.generation + 1;
        let mut copy = [0u8; STATE_BYTES];
        copy[0..8].copy_from_slice(&STATE_MAGIC);
        copy[8..16].copy_from_slice(&generation.to_le_bytes());
        copy[16..24].copy_from_slice(&hs.term.to_le_bytes());
        copy[24..32].copy_from_slice(&hs.vote.to_le_bytes());
        copy[32..40].copy_from_slice(&hs.commit.to_le_bytes());
        let checksum = xxh3_64(&copy[0..40]);
        copy[40..48].copy_from_slice(&checksum.to_le_bytes());
        let io = |source| JournalError::Io { path: self.state_path.clone(), source };
        self.state_file.write_all_at(&copy, (generation % 2) * STATE_COPY).map_err(io)?;
        self.state_file.sync_data().map_err(io)?;
        self.generation = generation;
        Ok(())
    }
}

/// The newest whole copy of the hard state (generation 0 and the default for a new file).
fn read_hard_state(file: &File, path: &Path) -> Result<(u64, HardState), JournalError> {
    let mut best: Option<(u64, HardState)> = None;
    let len = file.metadata().map_err(|source| JournalError::Io { path: path.into(), source })?;
    for copy in 0..2 {
        let mut b = [0u8; STATE_BYTES];
        if len.len() < copy * STATE_COPY + STATE_BYTES as u64 {
            continue;
        }
        file.read_exact_at(&mut b, copy * STATE_COPY)
            .map_err(|source| JournalError::Io { path: path.into(), source })?;
        let word = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"));
        if b[0..8] != STATE_MAGIC || xxh3_64(&b[0..40]) != word(40) {
            continue;
        }
        let hs =
            HardState { term: word(16), vote: word(24), commit: word(32), ..Default::default() };
        if best.as_ref().is_none_or(|(g, _)| word(8) > *g) {
            best = Some((word(8), hs));
        }
    }
    if best.is_none() && len.len() > 0 {
        return Err(JournalError::Refused {
            dir: path.to_path_buf(),
            reason: "no whole copy of the replica's hard state (term and vote): a replica \
                     that forgot its vote could vote twice in a term; restore the file from \
                     a backup or replace this replica"
                .into(),
        });
    }
    Ok(best.unwrap_or_default())
}

impl Storage for JournalLog {
    fn initial_state(&self) -> raft::Result<RaftState> {
        let inner = self.lock();
        Ok(RaftState::new(inner.hard_state.clone(), inner.conf_state.clone()))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let inner = self.lock();
        if low < inner.journal.first_sequence() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        let last = inner.journal.last_sequence();
        assert!(high <= last + 1, "entries up to {high} asked of a log ending at {last}");
        let max_size = max_size.into().unwrap_or(u64::MAX);
        let mut entries = Vec::with_capacity((high - low) as usize);
        let mut size = 0u64;
        for index in low..high {
            let body = inner.journal.read(index).expect("a persisted entry is durable");
            size += body.len() as u64;
            if !entries.is_empty() && size > max_size {
                break;
            }
            entries.push(Entry {
                index,
                term: inner.term_at(index),
                data: body.to_vec().into(),
                ..Default::default()
            });
        }
        Ok(entries)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        let inner = self.lock();
        let first = inner.journal.first_sequence();
        if idx + 1 == first {
            return Ok(0);
        }
        if idx < first {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if idx > inner.journal.last_sequence() {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        Ok(inner.term_at(idx))
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.lock().journal.first_sequence())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.lock().journal.last_sequence())
    }

    fn snapshot(&self, _request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        // Never asked: a log that is never compacted serves every follower from its entries.
        Err(raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable))
    }
}

impl ReplicaStorage for JournalLog {
    /// The state loaded on opening, the first time; later (a rebuild) the newest snapshot
    /// file at or before the commit index whose record checksum matches the journal.
    fn newest_state(&self) -> (StateMachine, u64) {
        let mut inner = self.lock();
        if let Some(opened) = inner.opened_state.take() {
            return opened;
        }
        let limit = inner.hard_state.commit;
        let mut report = RecoveryReport::default();
        let (state, from) = newest_snapshot_state(
            &inner.dir,
            limit,
            |seq| inner.journal.checksum_of(seq),
            &mut report,
        );
        (state, from - 1)
    }

    fn persist(&self, entries: &[Entry], hard_state: Option<&HardState>) -> raft::Result<()> {
        let mut inner = self.lock();
        let inner = &mut *inner;
        // A new term or vote is durable before the entries of that term: a crash in between
        // leaves a log no newer than its term, never entries of a term the replica forgot.
        // The commit index written with it is one the journal already holds.
        if let Some(hs) = hard_state {
            if hs.term != inner.hard_state.term || hs.vote != inner.hard_state.vote {
                let mut written = hs.clone();
                written.commit = hs.commit.min(inner.journal.last_sequence());
                inner.write_hard_state(&written).map_err(store_error)?;
            }
        }
        if let Some(first) = entries.first() {
            let last = inner.journal.last_sequence();
            if first.index <= last {
                // A new leader's entries replace ones this replica never saw committed.
                inner.entries_cut +=
                    inner.journal.cut_after(first.index - 1).map_err(store_error)?;
                let run = inner.terms.partition_point(|&(start, _)| start < first.index);
                inner.terms.truncate(run);
            }
            for entry in entries {
                assert_eq!(entry.get_entry_type(), EntryType::EntryNormal, "no membership changes");
                assert!(entry.context.is_empty(), "entries carry no context");
                let index =
                    inner.journal.append_in_term(&entry.data, entry.term).map_err(store_error)?;
                assert_eq!(index, entry.index, "the log and the journal advance together");
                inner.note_term(index, entry.term);
            }
            inner.journal.flush().map_err(store_error)?;
        }
        if let Some(hs) = hard_state {
            inner.raise_commit(hs.commit);
            inner.hard_state = hs.clone();
        }
        Ok(())
    }

    fn set_commit(&self, commit: u64) {
        self.lock().raise_commit(commit);
    }

    fn install(&self, _snapshot: Snapshot) -> raft::Result<()> {
        unreachable!("no replica compacts a journal log, so none sends a snapshot")
    }

    fn compacts(&self) -> bool {
        false
    }

    fn compact(&self, _snapshot: Snapshot, _cut: u64) -> raft::Result<()> {
        unreachable!("a journal log is the ledger's history and is never compacted")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path) -> JournalLog {
        let mut config = JournalConfig::new(dir);
        config.segment_size = 16 << 10;
        JournalLog::open(config, &[1, 2, 3]).expect("open")
    }

    fn entry(index: u64, term: u64) -> Entry {
        Entry { index, term, data: vec![index as u8; 40].into(), ..Default::default() }
    }

    fn hard_state(term: u64, vote: u64, commit: u64) -> HardState {
        HardState { term, vote, commit, ..Default::default() }
    }

    #[test]
    fn log_and_vote_survive_a_restart_and_a_torn_copy_loses_one_write_only() {
        let tmp = tempfile::tempdir().unwrap();
        {
            let log = open(tmp.path());
            let entries: Vec<Entry> = (1..=5).map(|i| entry(i, 1 + i / 3)).collect();
            log.persist(&entries, Some(&hard_state(2, 3, 0))).unwrap();
            log.persist(&[], Some(&hard_state(2, 3, 4))).unwrap();
            log.persist(&[entry(5, 4), entry(6, 4)], Some(&hard_state(4, 1, 4))).unwrap();
            assert_eq!(log.entries_cut(), 1);
        }
        let log = open(tmp.path());
        let state = log.initial_state().unwrap();
        assert_eq!((state.hard_state.term, state.hard_state.vote), (4, 1));
        let terms: Vec<u64> = (0..=6).map(|i| log.term(i).unwrap()).collect();
        assert_eq!(terms, [0, 1, 1, 2, 2, 4, 4]);
        let read = log.entries(2, 7, None, GetEntriesContext::empty(false)).unwrap();
        assert_eq!(read, (2..=6).map(|i| entry(i, terms[i as usize])).collect::<Vec<_>>());
        assert!(matches!(log.term(7), Err(raft::Error::Store(StorageError::Unavailable))));
        drop(log);
        // Tear the newest copy (generation 2, in copy 0): the one before it is read.
        let path = tmp.path().join(RAFT_STATE_FILE);
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all_at(&[0xff; 8], 16).unwrap();
        let state = open(tmp.path()).initial_state().unwrap();
        assert_eq!((state.hard_state.term, state.hard_state.vote), (2, 3));
        file.write_all_at(&[0xff; 8], STATE_COPY + 16).unwrap();
        let mut config = JournalConfig::new(tmp.path());
        config.segment_size = 16 << 10;
        let refused = JournalLog::open(config, &[1, 2, 3]).err().expect("refused");
        assert!(refused.to_string().contains("hard state"), "{refused}");
    }
}
