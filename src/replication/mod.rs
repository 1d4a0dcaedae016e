//! Replication: the ledger's events as the log of a Raft group (raft-rs), applied in the same
//! order on every replica.
//!
//! A [`Replica`] joins one `RawNode` to one [`StateMachine`]. The leader decides a request on
//! its state, which already holds every entry of its log (committed, or proposed by itself
//! since it became leader), and proposes the resulting event; the request's reply is released
//! only once that entry is committed (held durably by a majority). Followers apply committed
//! events through the replay path ([`StateMachine::apply_event`]): no re-validation, so every
//! replica reaches the same state and the same state hash.
//!
//! Speculation and its undoing: a leader's state runs ahead of the commit index. If it stops
//! being leader (or its term changes) while proposals are uncommitted, or a committed entry
//! at an index it proposed carries another term, the state is rebuilt from the committed
//! entries alone and the waiting replies are answered [`Reply::Retry`]: their entries may
//! still commit under the next leader, so a client retries with the same ids and idempotency
//! answers `exists` for whatever did.
//!
//! A new leader serves writes only once an entry of its own term is committed and applied
//! (raft-rs proposes an empty one on election): everything earlier in its log is then committed
//! and in its state, so it decides on exactly what every later leader will hold.
//!
//! The log does not grow without bound: once `log_entries_max` committed entries are in it,
//! a replica with no speculation takes a snapshot (the state machine's image, as in snapshot
//! files) at its commit index and drops all but the last `log_entries_kept` entries before it.
//! A replica too far behind for the leader's log receives the snapshot and restores it.
//!
//! The replica does no I/O and reads no clock: its host (the simulation in
//! `tests/cluster_sim.rs`, later the daemon) sends the messages and passes timestamps in. Its
//! storage (a [`ReplicaStorage`]; [`LogStore`] keeps raft-rs's `MemStorage` and the newest
//! snapshot in memory) is written inside [`Replica::ready`], and the host keeps it across a
//! crash as the replica's disk.

use std::collections::VecDeque;
use std::sync::{Arc, RwLock};

use raft::prelude::{ConfState, Entry, EntryType, HardState, Message, MessageType, Snapshot};
use raft::storage::MemStorage;
use raft::{
    Config, GetEntriesContext, RaftState, RawNode, SnapshotStatus, StateRole, Storage, StorageError,
};

mod journal_log;
pub mod node;
pub mod transport;

pub use journal_log::{JournalLog, RAFT_STATE_FILE};

use crate::event::{self, Event};
use crate::state_machine::StateMachine;
use crate::types::{Account, AccountLimit, CreateResult, Transfer};

/// What a replica needs of its disk beyond raft-rs's read side ([`Storage`]). Everything a
/// method writes is durable when it returns.
pub trait ReplicaStorage: Storage + Clone {
    /// The state of the newest snapshot and its index (an empty ledger at 0 when there is
    /// none); never beyond the commit index this storage holds.
    fn newest_state(&self) -> (StateMachine, u64);
    /// Appends `entries`, first dropping the log from `entries[0].index` on where it holds
    /// entries there (they were never committed), then records `hard_state` if given.
    fn persist(&self, entries: &[Entry], hard_state: Option<&HardState>) -> raft::Result<()>;
    /// Records a newer commit index (it may be lost in a crash: raft learns it again).
    fn set_commit(&self, commit: u64);
    /// A snapshot received from the leader replaces the whole log.
    fn install(&self, snapshot: Snapshot) -> raft::Result<()>;
    /// Whether the log may be cut behind snapshots ([`ReplicaStorage::compact`]).
    fn compacts(&self) -> bool;
    /// Keeps `snapshot` as the newest and drops the log before `cut`.
    fn compact(&self, snapshot: Snapshot, cut: u64) -> raft::Result<()>;
}

/// The replica's disk in memory: the Raft log and hard state (raft-rs's `MemStorage`), and
/// the newest snapshot with its image. What the simulation keeps across a crash.
#[derive(Clone)]
pub struct LogStore {
    log: MemStorage,
    snapshot: Arc<RwLock<Snapshot>>,
}

impl LogStore {
    /// The storage of a new group of `voters` (ids from 1), with an empty log.
    pub fn new(voters: &[u64]) -> LogStore {
        LogStore {
            log: MemStorage::new_with_conf_state(ConfState::from((voters.to_vec(), vec![]))),
            snapshot: Arc::new(RwLock::new(Snapshot::default())),
        }
    }

    fn set_snapshot(&self, snapshot: Snapshot) {
        *self.snapshot.write().expect("snapshot lock") = snapshot;
    }

    /// The newest snapshot (index 0 and no data when there is none).
    fn newest_snapshot(&self) -> Snapshot {
        self.snapshot.read().expect("snapshot lock").clone()
    }
}

impl ReplicaStorage for LogStore {
    fn newest_state(&self) -> (StateMachine, u64) {
        let snapshot = self.newest_snapshot();
        (restore(&snapshot), snapshot.get_metadata().index)
    }

    fn persist(&self, entries: &[Entry], hard_state: Option<&HardState>) -> raft::Result<()> {
        let mut core = self.log.wl();
        core.append(entries)?;
        if let Some(hs) = hard_state {
            core.set_hardstate(hs.clone());
        }
        Ok(())
    }

    fn set_commit(&self, commit: u64) {
        self.log.wl().mut_hard_state().set_commit(commit);
    }

    fn compacts(&self) -> bool {
        true
    }

    /// Drops the entries before `cut`, keeping the term of the one before it (raft-rs's
    /// `MemStorage` learns it only from a snapshot's metadata, which also clears the log, so
    /// the entries from `cut` on are put back).
    fn compact(&self, snapshot: Snapshot, cut: u64) -> raft::Result<()> {
        self.set_snapshot(snapshot);
        let first = self.log.first_index()?;
        let last = self.log.last_index()?;
        assert!(cut > first && cut <= last + 1, "cut {cut} outside {first}..={last}");
        let rest = self.log.entries(cut, last + 1, u64::MAX, GetEntriesContext::empty(false))?;
        let RaftState { hard_state, conf_state } = self.log.initial_state()?;
        let mut marker = Snapshot::default();
        marker.mut_metadata().index = cut - 1;
        marker.mut_metadata().term = self.log.term(cut - 1)?;
        marker.mut_metadata().set_conf_state(conf_state);
        let mut core = self.log.wl();
        core.apply_snapshot(marker)?;
        core.append(&rest)?;
        core.set_hardstate(hard_state);
        Ok(())
    }

    fn install(&self, snapshot: Snapshot) -> raft::Result<()> {
        let hard_state: HardState = self.log.initial_state()?.hard_state;
        let mut core = self.log.wl();
        core.apply_snapshot(snapshot.clone())?;
        let commit = core.hard_state().commit;
        let mut merged = hard_state;
        merged.commit = merged.commit.max(commit);
        merged.term = merged.term.max(core.hard_state().term);
        core.set_hardstate(merged);
        drop(core);
        self.set_snapshot(snapshot);
        Ok(())
    }
}

impl Storage for LogStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        self.log.initial_state()
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        // MemStorage indexes its first entry even for an empty range, which a log compacted
        // up to its last entry does not have.
        if low == high && low >= self.log.first_index()? {
            return Ok(Vec::new());
        }
        self.log.entries(low, high, max_size, context)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        self.log.term(idx)
    }

    fn first_index(&self) -> raft::Result<u64> {
        self.log.first_index()
    }

    fn last_index(&self) -> raft::Result<u64> {
        self.log.last_index()
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let snapshot = self.newest_snapshot();
        if snapshot.get_metadata().index < request_index.max(1) {
            return Err(raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable));
        }
        Ok(snapshot)
    }
}

/// When the log is compacted.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Committed entries in the log that trigger a snapshot and a compaction.
    pub log_entries_max: u64,
    /// Entries kept before the snapshot's index, for replicas slightly behind.
    pub log_entries_kept: u64,
}

impl Default for Options {
    fn default() -> Options {
        Options { log_entries_max: 100_000, log_entries_kept: 10_000 }
    }
}

/// A write a client asks of the ledger through a replica.
#[derive(Clone, Copy, Debug)]
pub enum Request<'a> {
    CreateAccounts(&'a [Account]),
    CreateTransfers(&'a [Transfer]),
    SetAccountLimits(&'a [AccountLimit]),
}

/// An answer for the host to deliver to the client that sent request `token`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// Committed: the per-event results (failures only, as on the wire).
    Done(Vec<CreateResult>),
    /// This replica stopped leading before the request's entry was known to commit: its
    /// outcome is unknown, and retrying it with the same ids is safe.
    Retry,
}

/// A request refused before it was decided: this replica is not a serving leader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotLeader {
    /// The replica this one believes leads, if any.
    pub leader_hint: Option<u64>,
}

/// What the host must do after a step, in this order: persist `entries` and `hard_state`,
/// then send `messages` (raft-rs's persisted messages are already among them, after the
/// persistence this struct asks for).
#[derive(Default)]
pub struct Output {
    pub messages: Vec<Message>,
    pub replies: Vec<(u64, Reply)>,
}

struct Waiting {
    index: u64,
    term: u64,
    token: u64,
    results: Vec<CreateResult>,
    /// A read: the read-index round (see [`Replica::read`]) that must confirm this replica
    /// still led after the read was made, and the term it led in; 0 for a write.
    read_round: u64,
    read_term: u64,
}

impl Waiting {
    fn write(index: u64, term: u64, token: u64, results: Vec<CreateResult>) -> Waiting {
        Waiting { index, term, token, results, read_round: 0, read_term: 0 }
    }
}

/// The election timeout of replica `id`, in ticks: fixed per replica (raft-rs draws it from a
/// thread-local generator otherwise), and different between replicas so that elections
/// seldom split.
fn election_ticks(id: u64) -> usize {
    10 + 3 * id as usize
}

pub struct Replica<S: ReplicaStorage = LogStore> {
    id: u64,
    options: Options,
    raw: RawNode<S>,
    state: StateMachine,
    /// Highest log index whose entry the state holds.
    applied: u64,
    /// Highest committed log index whose entry the state holds.
    committed: u64,
    /// Entries this leader applied before they committed: index, the term it proposed them
    /// in, and the changes each holds.
    speculative: VecDeque<(u64, u64, u64)>,
    /// Changes (accounts, transfers, limits, expiries) of the entries committed since start.
    changes_committed: u64,
    /// The snapshot index the state started from (0: from an empty ledger).
    started_from: u64,
    waiting: VecDeque<Waiting>,
    results: Vec<CreateResult>,
    event: Event,
    encoded: rkyv::util::AlignedVec<16>,
    rebuilds: u64,
    snapshots_taken: u64,
    snapshots_installed: u64,
    /// The read-index round that reads made since the last one asked for join (0: none
    /// asked yet), and the newest round a quorum confirmed.
    read_round_next: u64,
    read_round_asked: u64,
    read_round_confirmed: u64,
    lost_entries_seen: u64,
}

impl<S: ReplicaStorage> Replica<S> {
    /// Starts (or restarts, after a crash) replica `id` on `storage`, its disk: the state is
    /// the newest snapshot's image, then the committed entries after it.
    pub fn start(id: u64, storage: S, options: Options) -> Replica<S> {
        assert!(id >= 1, "replica ids start at 1");
        assert!(options.log_entries_kept < options.log_entries_max);
        let (state, snapshot_index) = storage.newest_state();
        let ticks = election_ticks(id);
        let config = Config {
            id,
            election_tick: ticks,
            min_election_tick: ticks,
            max_election_tick: ticks + 1,
            heartbeat_tick: 3,
            max_size_per_msg: 4 << 20,
            max_inflight_msgs: 256,
            check_quorum: true,
            pre_vote: true,
            applied: snapshot_index,
            ..Default::default()
        };
        config.validate().expect("replica configuration");
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let raw = RawNode::new(&config, storage, &logger).expect("raft node on its storage");
        Replica {
            id,
            options,
            raw,
            state,
            applied: snapshot_index,
            committed: snapshot_index,
            speculative: VecDeque::new(),
            changes_committed: 0,
            started_from: snapshot_index,
            waiting: VecDeque::new(),
            results: Vec::new(),
            event: Event::default(),
            encoded: rkyv::util::AlignedVec::new(),
            rebuilds: 0,
            snapshots_taken: 0,
            snapshots_installed: 0,
            read_round_next: 1,
            read_round_asked: 0,
            read_round_confirmed: 0,
            lost_entries_seen: 0,
        }
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    /// The replica's disk, for reading.
    pub fn storage(&self) -> &S {
        self.raw.store()
    }

    pub fn state(&self) -> &StateMachine {
        &self.state
    }

    pub fn term(&self) -> u64 {
        self.raw.raft.term
    }

    pub fn role(&self) -> StateRole {
        self.raw.raft.state
    }

    /// Highest log index whose entry the state holds (a leader's may not be committed yet).
    pub fn applied_index(&self) -> u64 {
        self.applied
    }

    /// Highest log index committed and applied to the state.
    pub fn commit_index(&self) -> u64 {
        self.committed
    }

    /// Snapshots this replica took of its own state, and received from a leader.
    pub fn snapshots(&self) -> (u64, u64) {
        (self.snapshots_taken, self.snapshots_installed)
    }

    /// Highest index in this replica's log (committed or not).
    pub fn last_index(&self) -> u64 {
        self.raw.raft.raft_log.last_index()
    }

    /// The index of the snapshot the state started from (0: an empty ledger, the whole log
    /// applied).
    pub fn started_from(&self) -> u64 {
        self.started_from
    }

    /// Changes (accounts, transfers, limits, expiries) in the entries committed and applied
    /// since this replica started.
    pub fn changes_committed(&self) -> u64 {
        self.changes_committed
    }

    /// Times the state was rebuilt from committed entries after a speculation was undone.
    pub fn rebuilds(&self) -> u64 {
        self.rebuilds
    }

    pub fn leader_hint(&self) -> Option<u64> {
        let leader = self.raw.raft.leader_id;
        (leader != raft::INVALID_ID).then_some(leader)
    }

    /// A leader whose state holds its whole log, with an entry of its own term committed and
    /// applied (so every entry before its term is committed too). raft-rs may know of later
    /// commits that the next [`Replica::ready`] applies: they are this leader's own entries,
    /// already in its state.
    pub fn serving(&self) -> bool {
        let raft = &self.raw.raft;
        raft.state == StateRole::Leader
            && self.applied == raft.raft_log.last_index()
            && self.committed <= raft.raft_log.committed
            && raft.raft_log.term(self.committed).ok() == Some(raft.term)
    }

    pub fn tick(&mut self) {
        self.raw.tick();
    }

    /// The transport tells the leader whether a snapshot it sent reached `to`: until it
    /// does, raft-rs sends that follower nothing more. A lost snapshot is sent again.
    pub fn snapshot_sent(&mut self, to: u64, delivered: bool) {
        let status = if delivered { SnapshotStatus::Finish } else { SnapshotStatus::Failure };
        self.raw.report_snapshot(to, status);
    }

    pub fn step(&mut self, mut message: Message) {
        if message.get_msg_type() == MessageType::MsgHeartbeat {
            let log = &self.raw.raft.raft_log;
            if message.commit > log.last_index() {
                // The leader believes this replica holds entries it does not: its data
                // directory was replaced (an empty or older one). raft-rs would take that for
                // a bug and stop; the commit is ignored instead, and the next append the
                // leader sends is refused and walks it back to where the logs agree.
                message.commit = log.committed;
                self.lost_entries_seen += 1;
            }
        }
        // Messages from an older configuration or a stale peer are refused by raft-rs and
        // change nothing: dropping them is what the network could have done.
        let _ = self.raw.step(message);
    }

    /// Heartbeats that named a commit past this replica's log (its data was replaced).
    pub fn lost_entries_seen(&self) -> u64 {
        self.lost_entries_seen
    }

    /// Decides `request` at `now_ns` and proposes its event; the reply comes out of a later
    /// [`Replica::ready`] once the entry commits.
    pub fn submit(&mut self, now_ns: u64, token: u64, request: Request) -> Result<(), NotLeader> {
        self.undo_stale_speculation();
        if !self.serving() {
            return Err(NotLeader { leader_hint: self.leader_hint() });
        }
        self.event.clear();
        match request {
            Request::CreateAccounts(accounts) => {
                self.state.create_accounts(now_ns, accounts, &mut self.results, &mut self.event)
            }
            Request::CreateTransfers(transfers) => {
                self.state.create_transfers(now_ns, transfers, &mut self.results, &mut self.event)
            }
            Request::SetAccountLimits(limits) => {
                self.state.set_account_limits(now_ns, limits, &mut self.results, &mut self.event)
            }
        }
        let results = self.results.clone();
        self.propose_event(token, results);
        Ok(())
    }

    /// Registers a read the host has just answered from [`Replica::state`], as request
    /// `token`: its reply is released (as [`Reply::Done`] with no results) once a quorum has
    /// confirmed that this replica still led after the read (a read-index round, asked in the
    /// next [`Replica::ready`] for every read made since the last round) and every entry the
    /// state held when it was read has committed. The read is therefore linearizable: it saw
    /// every write acknowledged before it was made, and nothing that could be undone.
    pub fn read(&mut self, token: u64) -> Result<(), NotLeader> {
        self.undo_stale_speculation();
        if !self.serving() {
            return Err(NotLeader { leader_hint: self.leader_hint() });
        }
        let index = self.applied;
        let term = self.raw.raft.raft_log.term(index).expect("term of the last applied entry");
        self.waiting.push_back(Waiting {
            index,
            term,
            token,
            results: Vec::new(),
            read_round: self.read_round_next,
            read_term: self.raw.raft.term,
        });
        Ok(())
    }

    /// Voids the pending transfers whose timeout passed at `now_ns` (a serving leader only).
    pub fn expire(&mut self, now_ns: u64) {
        self.undo_stale_speculation();
        if !self.serving() {
            return;
        }
        self.state.expire(now_ns, &mut self.event);
        if !self.event.is_empty() {
            self.propose_event(0, Vec::new());
        }
    }

    fn propose_event(&mut self, token: u64, results: Vec<CreateResult>) {
        let term = self.raw.raft.term;
        if self.event.is_empty() {
            // Nothing to log; the answer read the state up to the last entry, so it waits for
            // that entry to commit.
            let index = self.raw.raft.raft_log.last_index();
            if token != 0 {
                let term = self.raw.raft.raft_log.term(index).expect("term of the last entry");
                self.waiting.push_back(Waiting::write(index, term, token, results));
            }
            return;
        }
        event::encode(&self.event, &mut self.encoded);
        let before = self.raw.raft.raft_log.last_index();
        if self.raw.propose(Vec::new(), self.encoded.to_vec()).is_err() {
            // The state already holds the event: undo it.
            self.rebuild();
            if token != 0 {
                self.waiting.push_back(Waiting::write(u64::MAX, term, token, results));
                self.release_all_retry();
            }
            return;
        }
        let index = self.raw.raft.raft_log.last_index();
        assert_eq!(index, before + 1, "one proposal, one entry");
        assert_eq!(self.applied, before, "a serving leader's state holds its whole log");
        self.applied = index;
        self.speculative.push_back((index, term, self.event.changes() as u64));
        if token != 0 {
            self.waiting.push_back(Waiting::write(index, term, token, results));
        }
    }

    /// Hands the host what raft-rs is ready with: it persists entries and hard state into
    /// the storage (the replica's disk) here, applies committed entries, and returns the
    /// messages to send and the replies to release.
    pub fn ready(&mut self) -> Output {
        let mut messages = Vec::new();
        let replies = self.ready_sending(&mut |m| messages.push(m));
        Output { messages, replies }
    }

    /// [`Replica::ready`], handing each message to `send` as soon as it may leave: a leader's
    /// appends go out before it persists the same entries itself (the followers' flushes and
    /// its own run at once; an entry counts for the leader's quorum only once its own flush
    /// is done), every other message after the persistence it depends on.
    pub fn ready_sending(&mut self, send: &mut dyn FnMut(Message)) -> Vec<(u64, Reply)> {
        let mut out = Output::default();
        if self.read_round_next > self.read_round_asked
            && self.waiting.iter().any(|w| w.read_round == self.read_round_next)
        {
            self.read_round_asked = self.read_round_next;
            self.read_round_next += 1;
            self.raw.read_index(self.read_round_asked.to_le_bytes().to_vec());
        }
        if !self.raw.has_ready() {
            self.undo_stale_speculation();
            self.release(&mut out);
            return out.replies;
        }
        let store = self.raw.store().clone();
        let mut ready = self.raw.ready();
        for state in ready.take_read_states() {
            let round = u64::from_le_bytes(
                state.request_ctx.as_slice().try_into().expect("a read round is 8 bytes"),
            );
            self.read_round_confirmed = self.read_round_confirmed.max(round);
        }
        for message in ready.take_messages() {
            send(message);
        }
        if ready.snapshot().get_metadata().index != 0 {
            self.install(ready.snapshot().clone());
        }
        store
            .persist(ready.entries(), ready.hs())
            .expect("persist the log (a replica that cannot write its journal stops)");
        // A follower's acknowledgement leaves before it applies what was committed: the
        // leader's commit does not wait for a follower's state machine.
        for message in ready.take_persisted_messages() {
            send(message);
        }
        let committed = ready.take_committed_entries();
        self.apply_committed(&committed);
        let mut light = self.raw.advance(ready);
        if let Some(commit) = light.commit_index() {
            store.set_commit(commit);
        }
        for message in light.take_messages() {
            send(message);
        }
        let committed = light.take_committed_entries();
        self.apply_committed(&committed);
        self.raw.advance_apply();
        self.undo_stale_speculation();
        self.release(&mut out);
        self.maybe_compact();
        out.replies
    }

    /// A follower behind the leader's log takes the leader's snapshot as its state.
    fn install(&mut self, snapshot: Snapshot) {
        let index = snapshot.get_metadata().index;
        assert!(index > self.committed, "a snapshot behind what this replica committed");
        assert!(self.speculative.is_empty(), "a leader does not receive snapshots");
        self.raw.store().install(snapshot.clone()).expect("install a snapshot");
        self.state = restore(&snapshot);
        self.committed = index;
        self.applied = index;
        self.snapshots_installed += 1;
        self.release_all_retry();
    }

    /// Takes a snapshot at the commit index and drops the log before it (but the last
    /// `log_entries_kept` entries), when the state is exactly the committed one.
    fn maybe_compact(&mut self) {
        let store = self.raw.store().clone();
        let first = store.first_index().expect("first index");
        if !store.compacts()
            || !self.speculative.is_empty()
            || self.applied != self.committed
            || self.committed < first + self.options.log_entries_max
        {
            return;
        }
        let mut image = rkyv::util::AlignedVec::<16>::new();
        self.state.write_image(&mut image);
        let mut snapshot = Snapshot { data: image.to_vec().into(), ..Default::default() };
        let meta = snapshot.mut_metadata();
        meta.index = self.committed;
        meta.term = store.term(self.committed).expect("term of the commit index");
        meta.set_conf_state(store.initial_state().expect("raft state").conf_state);
        let cut = self.committed + 1 - self.options.log_entries_kept;
        store.compact(snapshot, cut).expect("compact the log");
        self.snapshots_taken += 1;
    }

    fn apply_committed(&mut self, entries: &[Entry]) {
        for entry in entries {
            assert_eq!(entry.get_entry_type(), EntryType::EntryNormal, "no membership changes yet");
            let index = entry.index;
            assert_eq!(index, self.committed + 1, "committed entries arrive in order");
            if index <= self.applied {
                // The state holds an entry at this index: this leader's own, if the term is
                // the one it proposed in (equal index and term mean equal entries).
                let ours = self.speculative.front().filter(|s| (s.0, s.1) == (index, entry.term));
                if let Some(&(_, _, changes)) = ours {
                    self.speculative.pop_front();
                    self.committed = index;
                    self.changes_committed += changes;
                    continue;
                }
                self.rebuild();
                assert_eq!(self.applied, index - 1);
            }
            self.changes_committed += self.apply_entry(entry);
            self.committed = index;
            self.applied = index;
        }
    }

    /// Applies one entry's event; returns the changes it held.
    fn apply_entry(&mut self, entry: &Entry) -> u64 {
        if entry.data.is_empty() {
            return 0;
        }
        // Entry data is a plain Vec; the archive wants 16-byte alignment.
        self.encoded.clear();
        self.encoded.extend_from_slice(&entry.data);
        let archived = event::access(&self.encoded).expect("a committed entry is an event");
        self.state.apply_event(archived).expect("a committed event applies");
        archived.changes() as u64
    }

    /// A leader that lost its role or term while proposals were uncommitted drops them.
    fn undo_stale_speculation(&mut self) {
        let Some(&(_, term, _)) = self.speculative.front() else {
            return;
        };
        if self.raw.raft.state != StateRole::Leader || self.raw.raft.term != term {
            self.rebuild();
        }
    }

    /// The state of the committed entries alone.
    fn rebuild(&mut self) {
        self.rebuilds += 1;
        self.speculative.clear();
        let store = self.raw.store().clone();
        let (state, snapshot_index) = store.newest_state();
        let from = snapshot_index + 1;
        assert!(from <= self.committed + 1, "a snapshot beyond the commit index");
        self.state = state;
        let entries = store
            .entries(from, self.committed + 1, u64::MAX, GetEntriesContext::empty(false))
            .expect("committed entries after the snapshot are in the log");
        for entry in &entries {
            self.apply_entry(entry);
        }
        self.applied = self.committed;
        self.release_all_retry();
    }

    fn release_all_retry(&mut self) {
        for w in self.waiting.iter_mut() {
            w.index = u64::MAX;
        }
    }

    fn release(&mut self, out: &mut Output) {
        let (role, term) = (self.raw.raft.state, self.raw.raft.term);
        while let Some(w) = self.waiting.front() {
            let unconfirmed = w.read_round > self.read_round_confirmed;
            // raft-rs forgets the read-index rounds of a leader that lost its role.
            let lost = unconfirmed && (role != StateRole::Leader || term != w.read_term);
            if w.index == u64::MAX || lost {
                let w = self.waiting.pop_front().expect("front");
                out.replies.push((w.token, Reply::Retry));
                continue;
            }
            if unconfirmed {
                break;
            }
            if w.index > self.committed {
                break;
            }
            let w = self.waiting.pop_front().expect("front");
            let term = self.raw.raft.raft_log.term(w.index).ok();
            if term == Some(w.term) {
                out.replies.push((w.token, Reply::Done(w.results)));
            } else {
                out.replies.push((w.token, Reply::Retry));
            }
        }
    }
}

/// The state a snapshot holds (an empty ledger for no snapshot).
fn restore(snapshot: &Snapshot) -> StateMachine {
    if snapshot.get_metadata().index == 0 {
        return StateMachine::new();
    }
    let mut image = rkyv::util::AlignedVec::<16>::new();
    image.extend_from_slice(&snapshot.data);
    StateMachine::from_image(&image).expect("a snapshot holds a valid image")
}
