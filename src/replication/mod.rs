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
//! The replica does no I/O and reads no clock: its host (the simulation in
//! `tests/cluster_sim.rs`, later the daemon) persists what [`Replica::ready`] hands it, sends
//! the messages, and passes timestamps in. Its log storage is raft-rs's `MemStorage`, which the
//! host keeps across a crash as the replica's disk.

use std::collections::VecDeque;

use raft::prelude::{ConfState, Entry, EntryType, Message};
use raft::storage::MemStorage;
use raft::{Config, RawNode, StateRole, Storage};

use crate::event::{self, Event};
use crate::state_machine::StateMachine;
use crate::types::{Account, CreateResult, Transfer};

/// What a client asks of the ledger through a replica.
#[derive(Clone, Debug)]
pub enum Request {
    CreateAccounts(Vec<Account>),
    CreateTransfers(Vec<Transfer>),
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
}

/// The election timeout of replica `id`, in ticks: fixed per replica (raft-rs draws it from a
/// thread-local generator otherwise), and different between replicas so that elections
/// seldom split.
fn election_ticks(id: u64) -> usize {
    10 + 3 * id as usize
}

pub struct Replica {
    id: u64,
    raw: RawNode<MemStorage>,
    state: StateMachine,
    /// Highest log index whose entry the state holds.
    applied: u64,
    /// Highest committed log index whose entry the state holds.
    committed: u64,
    /// Entries this leader applied before they committed, with the term it proposed them in.
    speculative: VecDeque<(u64, u64)>,
    waiting: VecDeque<Waiting>,
    results: Vec<CreateResult>,
    event: Event,
    encoded: rkyv::util::AlignedVec<16>,
    rebuilds: u64,
}

impl Replica {
    /// A replica of a new group of `voters` (ids from 1), with an empty log.
    pub fn initial_storage(voters: &[u64]) -> MemStorage {
        MemStorage::new_with_conf_state(ConfState::from((voters.to_vec(), vec![])))
    }

    /// Starts (or restarts, after a crash) replica `id` on `storage`, its disk: the state is
    /// rebuilt from the committed entries there.
    pub fn start(id: u64, storage: MemStorage) -> Replica {
        assert!(id >= 1, "replica ids start at 1");
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
            ..Default::default()
        };
        config.validate().expect("replica configuration");
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let raw = RawNode::new(&config, storage, &logger).expect("raft node on its storage");
        let replica = Replica {
            id,
            raw,
            state: StateMachine::new(),
            applied: 0,
            committed: 0,
            speculative: VecDeque::new(),
            waiting: VecDeque::new(),
            results: Vec::new(),
            event: Event::default(),
            encoded: rkyv::util::AlignedVec::new(),
            rebuilds: 0,
        };
        let first = replica.raw.store().first_index().expect("first index");
        assert_eq!(first, 1, "compacted logs need snapshots, which are not supported yet");
        replica
    }

    pub fn id(&self) -> u64 {
        self.id
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

    /// Highest log index committed and applied to the state.
    pub fn commit_index(&self) -> u64 {
        self.committed
    }

    /// Highest index in this replica's log (committed or not).
    pub fn last_index(&self) -> u64 {
        self.raw.raft.raft_log.last_index()
    }

    /// Times the state was rebuilt from committed entries after a speculation was undone.
    pub fn rebuilds(&self) -> u64 {
        self.rebuilds
    }

    pub fn leader_hint(&self) -> Option<u64> {
        let leader = self.raw.raft.leader_id;
        (leader != raft::INVALID_ID).then_some(leader)
    }

    /// A leader whose state holds its whole log, all entries before its term committed.
    pub fn serving(&self) -> bool {
        let raft = &self.raw.raft;
        raft.state == StateRole::Leader
            && self.applied == raft.raft_log.last_index()
            && self.committed == raft.raft_log.committed
            && raft.raft_log.term(self.committed).ok() == Some(raft.term)
    }

    pub fn tick(&mut self) {
        self.raw.tick();
    }

    pub fn step(&mut self, message: Message) {
        // Messages from an older configuration or a stale peer are refused by raft-rs and
        // change nothing: dropping them is what the network could have done.
        let _ = self.raw.step(message);
    }

    /// Decides `request` at `now_ns` and proposes its event; the reply comes out of a later
    /// [`Replica::ready`] once the entry commits.
    pub fn submit(&mut self, now_ns: u64, token: u64, request: &Request) -> Result<(), NotLeader> {
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
        }
        let results = self.results.clone();
        self.propose_event(token, results);
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
                self.waiting.push_back(Waiting { index, term, token, results });
            }
            return;
        }
        event::encode(&self.event, &mut self.encoded);
        let before = self.raw.raft.raft_log.last_index();
        if self.raw.propose(Vec::new(), self.encoded.to_vec()).is_err() {
            // The state already holds the event: undo it.
            self.rebuild();
            if token != 0 {
                self.waiting.push_back(Waiting { index: u64::MAX, term, token, results });
                self.release_all_retry();
            }
            return;
        }
        let index = self.raw.raft.raft_log.last_index();
        assert_eq!(index, before + 1, "one proposal, one entry");
        assert_eq!(self.applied, before, "a serving leader's state holds its whole log");
        self.applied = index;
        self.speculative.push_back((index, term));
        if token != 0 {
            self.waiting.push_back(Waiting { index, term, token, results });
        }
    }

    /// Hands the host what raft-rs is ready with: it persists entries and hard state into
    /// the storage (the replica's disk) here, applies committed entries, and returns the
    /// messages to send and the replies to release.
    pub fn ready(&mut self) -> Output {
        let mut out = Output::default();
        if !self.raw.has_ready() {
            self.undo_stale_speculation();
            self.release(&mut out);
            return out;
        }
        let store = self.raw.store().clone();
        let mut ready = self.raw.ready();
        out.messages.extend(ready.take_messages());
        assert!(ready.snapshot().data.is_empty(), "snapshots are not supported yet");
        let committed = ready.take_committed_entries();
        self.apply_committed(&committed);
        store.wl().append(ready.entries()).expect("append to the log");
        if let Some(hs) = ready.hs() {
            store.wl().set_hardstate(hs.clone());
        }
        out.messages.extend(ready.take_persisted_messages());
        let mut light = self.raw.advance(ready);
        if let Some(commit) = light.commit_index() {
            store.wl().mut_hard_state().set_commit(commit);
        }
        out.messages.extend(light.take_messages());
        let committed = light.take_committed_entries();
        self.apply_committed(&committed);
        self.raw.advance_apply();
        self.undo_stale_speculation();
        self.release(&mut out);
        out
    }

    fn apply_committed(&mut self, entries: &[Entry]) {
        for entry in entries {
            assert_eq!(entry.get_entry_type(), EntryType::EntryNormal, "no membership changes yet");
            let index = entry.index;
            assert_eq!(index, self.committed + 1, "committed entries arrive in order");
            if index <= self.applied {
                // The state holds an entry at this index: this leader's own, if the term is
                // the one it proposed in (equal index and term mean equal entries).
                let ours = self.speculative.front() == Some(&(index, entry.term));
                if ours {
                    self.speculative.pop_front();
                    self.committed = index;
                    continue;
                }
                self.rebuild();
                assert_eq!(self.applied, index - 1);
            }
            self.apply_entry(entry);
            self.committed = index;
            self.applied = index;
        }
    }

    fn apply_entry(&mut self, entry: &Entry) {
        if entry.data.is_empty() {
            return;
        }
        // Entry data is a plain Vec; the archive wants 16-byte alignment.
        self.encoded.clear();
        self.encoded.extend_from_slice(&entry.data);
        let archived = event::access(&self.encoded).expect("a committed entry is an event");
        self.state.apply_event(archived).expect("a committed event applies");
    }

    /// A leader that lost its role or term while proposals were uncommitted drops them.
    fn undo_stale_speculation(&mut self) {
        let Some(&(_, term)) = self.speculative.front() else {
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
        self.state = StateMachine::new();
        let store = self.raw.store().clone();
        let entries = if self.committed == 0 {
            Vec::new()
        } else {
            store
                .entries(1, self.committed + 1, u64::MAX, raft::GetEntriesContext::empty(false))
                .expect("committed entries are in the log")
        };
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
        while let Some(w) = self.waiting.front() {
            if w.index == u64::MAX {
                let w = self.waiting.pop_front().expect("front");
                out.replies.push((w.token, Reply::Retry));
                continue;
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
