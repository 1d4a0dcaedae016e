//! The business thread of a cluster member: the ring's requests go through a
//! [`Replica`] whose log is the journal, and Raft's messages travel over the [`Transport`].
//!
//! One loop, on the pinned business thread: drain the messages received from peers into
//! raft-rs, take a batch of requests from the ring (writes are decided on the state and
//! proposed; reads are answered from the state and wait for a read-index round), tick Raft on
//! time, then hand raft-rs's `Ready` to the replica (which appends the batch's entries to the
//! journal with one flush), send its messages and release the replies whose entries a
//! majority holds. Replies leave in ring order: a reply that is known early waits for the
//! ones before it.
//!
//! Nothing leaves before it is committed: a write's reply once its entry is committed (held
//! durably by a majority, each replica after its own flush); a read's once a quorum confirmed
//! this replica still led after the read and everything the read saw is committed. A
//! replica that does not lead answers `not_leader` with the leader it knows of.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant};

use disruptor::Polling;
use raft::prelude::Message;
use raft::StateRole;

use super::transport::Transport;
use super::{JournalLog, Replica, Reply, Request};
use crate::metrics::Metrics;
use crate::pipeline::reads::{self, Scratch};
use crate::pipeline::{is_write, SlotPoller, BATCH_REQUESTS_MAX};
use crate::pipeline::{now_ns, Doorbell, ReplyBatch, ReplyEntry, ReplySink, Slot, SlotKind};
use crate::protocol::{self, NotLeaderReply, Operation, ReplicaRole, Status, StatusReply};
use crate::state_machine::Capacity;

/// Raft's clock: elections time out after 10 + 3 × id ticks, leaders send heartbeats every
/// 3 (see `election_ticks`): with 10 ms, a leader's loss is noticed within 130–190 ms.
pub const TICK_DEFAULT: Duration = Duration::from_millis(10);
/// Raft messages stepped between two looks at the ring.
const MESSAGES_PER_TURN_MAX: usize = 4096;
const IDLE_SPIN: Duration = Duration::from_micros(20);
/// Requests waiting for their entries to commit, at most (then the ring is not read until
/// some are answered: backpressure to the network threads).
const WAITING_MAX: usize = 65_536;
/// At shutdown, how long waiting requests may still commit before they are answered
/// `not_leader` (outcome unknown, safe to retry).
const SHUTDOWN_DRAIN: Duration = Duration::from_millis(500);

/// Settings of a cluster member's business thread.
pub struct NodeConfig {
    pub pin_core: Option<usize>,
    pub capacity: Capacity,
    /// Where the thread publishes its next expiry deadline (as the single daemon does).
    pub next_expiry_ns: Arc<AtomicU64>,
    pub tick: Duration,
    /// Check the whole state after every turn (`--verify`): slow; tests and long runs.
    pub verify: bool,
}

/// A request in ring order, waiting for its answer or for the answers before it.
struct Queued {
    net: u16,
    operation: u16,
    conn: u64,
    request_id: u64,
    /// `None` while the replica has not answered.
    status: Option<Status>,
    body: Vec<u8>,
}

pub struct Node {
    config: NodeConfig,
    replica: Replica<JournalLog>,
    transport: Transport,
    inbox: Receiver<Message>,
    metrics: Arc<Metrics>,
    sinks: Vec<Arc<ReplySink>>,
    outs: Vec<ReplyBatch>,
    queue: VecDeque<Queued>,
    /// The replica token of `queue`'s front (tokens count from 1; 0 means "no reply").
    first_token: u64,
    /// Bodies of released replies, kept for reuse.
    spare: Vec<Vec<u8>>,
    next_tick: Instant,
    /// Role, term and leader when last published, to log changes.
    last_seen: (StateRole, u64, Option<u64>),
    scratch: Scratch,
}

impl Node {
    pub fn new(
        config: NodeConfig,
        replica: Replica<JournalLog>,
        transport: Transport,
        inbox: Receiver<Message>,
        metrics: Arc<Metrics>,
        sinks: Vec<Arc<ReplySink>>,
    ) -> Node {
        let outs = sinks.iter().map(|_| ReplyBatch::default()).collect();
        Node {
            next_tick: Instant::now() + config.tick,
            last_seen: (StateRole::Follower, 0, None),
            config,
            replica,
            transport,
            inbox,
            metrics,
            sinks,
            outs,
            queue: VecDeque::new(),
            first_token: 1,
            spare: Vec::new(),
            scratch: Scratch::default(),
        }
    }

    /// Runs until every producer of the ring is gone and the ring is drained.
    pub fn run(mut self, mut poller: impl SlotPoller, doorbell: Arc<Doorbell>) {
        doorbell.enter_business_thread(self.config.pin_core);
        loop {
            let mut busy = self.step_messages();
            if busy {
                // Commits learned from peers release their replies before the next batch of
                // requests is decided.
                self.pump();
            }
            if self.queue.len() < WAITING_MAX {
                match poller.take_each(BATCH_REQUESTS_MAX, &mut |slot| self.handle(slot)) {
                    Ok(handled) => {
                        self.metrics.ring_consumed.fetch_add(handled, Relaxed);
                        self.metrics.batch_requests.observe(handled);
                        busy = true;
                    }
                    Err(Polling::NoEvents) => {}
                    Err(Polling::Shutdown) => break,
                }
            }
            self.tick_if_due();
            self.pump();
            if self.config.verify && busy {
                if let Err(problem) = self.replica.state().verify() {
                    panic!("state verification failed: {problem}");
                }
            }
            if !busy {
                self.idle(&poller, &doorbell);
            }
        }
        self.drain();
        self.transport.stop();
        tracing::info!(commit = self.replica.commit_index(), "business thread stopped");
    }

    /// Steps the messages peers sent; true if there were any.
    fn step_messages(&mut self) -> bool {
        let mut stepped = 0;
        while stepped < MESSAGES_PER_TURN_MAX {
            let Ok(message) = self.inbox.try_recv() else { break };
            self.replica.step(message);
            stepped += 1;
        }
        stepped > 0
    }

    fn tick_if_due(&mut self) {
        let now = Instant::now();
        if now < self.next_tick {
            return;
        }
        self.replica.tick();
        self.next_tick += self.config.tick;
        if self.next_tick < now {
            // The thread was held up for several ticks: Raft's clock does not catch up in a
            // burst (that would time out elections that are not late).
            self.next_tick = now + self.config.tick;
        }
    }

    fn idle(&mut self, poller: &impl SlotPoller, doorbell: &Doorbell) {
        let spin_until = Instant::now() + IDLE_SPIN;
        while Instant::now() < spin_until {
            if poller.has_available() {
                return;
            }
            std::hint::spin_loop();
        }
        doorbell.set_sleeping(true);
        if !poller.has_available() {
            let wait = self.next_tick.saturating_duration_since(Instant::now());
            std::thread::park_timeout(wait.max(Duration::from_micros(100)));
        }
        doorbell.set_sleeping(false);
    }

    /// At shutdown: lets what is waiting commit for a moment, then answers the rest
    /// `not_leader` (their outcome is unknown; retrying them at the next leader is safe).
    fn drain(&mut self) {
        let until = Instant::now() + SHUTDOWN_DRAIN;
        while !self.queue.is_empty() && Instant::now() < until {
            self.step_messages();
            self.tick_if_due();
            self.pump();
            std::thread::sleep(Duration::from_millis(1));
        }
        let hint = self.leader_position();
        for q in self.queue.iter_mut().filter(|q| q.status.is_none()) {
            q.body.clear();
            NotLeaderReply { leader: hint }.encode(&mut q.body);
            q.status = Some(Status::NotLeader);
        }
        self.release();
    }

    /// Hands raft-rs's `Ready` to the replica, sends its messages, answers what it released.
    fn pump(&mut self) {
        let transport = &self.transport;
        let replies = self.replica.ready_sending(&mut |message| transport.send(&message));
        for (token, reply) in replies {
            let q = &mut self.queue[(token - self.first_token) as usize];
            assert!(q.status.is_none(), "request {token} answered twice");
            let operation = Operation::from_u16(q.operation).expect("a queued operation");
            match reply {
                Reply::Done(results) => {
                    if is_write(operation) {
                        q.body.clear();
                        for r in &results {
                            protocol::encode_create_result(&mut q.body, r);
                        }
                    }
                    q.status = Some(Status::Ok);
                }
                Reply::Retry => {
                    q.body.clear();
                    let leader = leader_position(self.replica.leader_hint());
                    NotLeaderReply { leader }.encode(&mut q.body);
                    q.status = Some(Status::NotLeader);
                }
            }
        }
        self.release();
        self.publish_role();
    }

    /// Moves the answered requests at the front of the queue into the network threads'
    /// batches, in ring order, and hands them over.
    fn release(&mut self) {
        while let Some(q) = self.queue.front() {
            let Some(status) = q.status else { break };
            let mut q = self.queue.pop_front().expect("front");
            self.first_token += 1;
            self.metrics.request(q.operation, status);
            let out = &mut self.outs[q.net as usize];
            let start = out.frames.len();
            protocol::encode_frame(&mut out.frames, q.operation, status, q.request_id, &q.body);
            out.entries.push(ReplyEntry { conn: q.conn, len: (out.frames.len() - start) as u32 });
            q.body.clear();
            self.spare.push(std::mem::take(&mut q.body));
        }
        for (out, sink) in self.outs.iter_mut().zip(&self.sinks) {
            sink.deliver(out);
        }
    }

    fn publish_role(&mut self) {
        let seen = (self.replica.role(), self.replica.term(), self.replica.leader_hint());
        if seen != self.last_seen {
            let (role, term, leader) = seen;
            tracing::info!(
                role = role_of(role).name(),
                term,
                leader = leader.map(|id| id - 1),
                commit = self.replica.commit_index(),
                "replica role changed"
            );
            self.last_seen = seen;
        }
        let m = &self.metrics;
        m.replica_role.store(role_of(self.replica.role()) as u64, Relaxed);
        m.replica_term.store(self.replica.term(), Relaxed);
        m.replica_commit.store(self.replica.commit_index(), Relaxed);
        m.replica_leader.store(self.leader_position() as u64, Relaxed);
        let serves = self.replica.serving()
            || (self.replica.role() == StateRole::Follower && self.replica.leader_hint().is_some());
        m.replica_ready.store(serves as u64, Relaxed);
        let stats = &self.transport.stats;
        m.replica_messages_sent.store(stats.sent.load(Relaxed), Relaxed);
        m.replica_messages_received.store(stats.received.load(Relaxed), Relaxed);
        m.replica_messages_dropped.store(stats.dropped.load(Relaxed), Relaxed);
        m.journal_sequence.store(self.replica.commit_index(), Relaxed);
        m.journal_events.store(self.replica.changes_committed(), Relaxed);
        m.transfers_in_memory.store(self.replica.state().in_memory().0, Relaxed);
        let next = self.replica.state().next_expiry_ns().unwrap_or(u64::MAX);
        self.config.next_expiry_ns.store(next, Relaxed);
    }

    fn leader_position(&self) -> u32 {
        leader_position(self.replica.leader_hint())
    }

    fn handle(&mut self, slot: &Slot) {
        match slot.kind {
            SlotKind::Request => self.request(slot),
            SlotKind::Reject => {
                let status = Status::from_u16(slot.status).unwrap_or(Status::InternalError);
                self.push(slot, Some(status));
            }
            SlotKind::Tick => self.replica.expire(now_ns()),
            SlotKind::Empty => {}
        }
    }

    /// Queues `slot`'s reply (answered now if `status` is given); returns its token.
    fn push(&mut self, slot: &Slot, status: Option<Status>) -> u64 {
        let token = self.first_token + self.queue.len() as u64;
        let body = self.spare.pop().unwrap_or_default();
        self.queue.push_back(Queued {
            net: slot.net,
            operation: slot.operation,
            conn: slot.conn,
            request_id: slot.request_id,
            status,
            body,
        });
        token
    }

    fn body(&mut self, token: u64) -> &mut Vec<u8> {
        &mut self.queue[(token - self.first_token) as usize].body
    }

    /// Answers `token` now with `status` and what is in its body.
    fn answer(&mut self, token: u64, status: Status) {
        let q = &mut self.queue[(token - self.first_token) as usize];
        if status != Status::Ok {
            q.body.clear();
        }
        q.status = Some(status);
    }

    fn not_leader(&mut self, token: u64, hint: Option<u64>) {
        self.answer(token, Status::NotLeader);
        NotLeaderReply { leader: leader_position(hint) }.encode(self.body(token));
    }

    fn request(&mut self, slot: &Slot) {
        let token = self.push(slot, None);
        let Some(operation) = Operation::from_u16(slot.operation) else {
            // The network layer validates operations before publishing.
            return self.answer(token, Status::InternalError);
        };
        let now = now_ns();
        let body = &slot.body;
        let submitted = match operation {
            Operation::CreateAccounts => {
                Scratch::decode(body, &mut self.scratch.accounts);
                if !self
                    .replica
                    .state()
                    .accounts_fit(&self.config.capacity, self.scratch.accounts.len())
                {
                    return self.answer(token, Status::LedgerFull);
                }
                self.replica.submit(now, token, Request::CreateAccounts(&self.scratch.accounts))
            }
            Operation::CreateTransfers => {
                Scratch::decode(body, &mut self.scratch.transfers);
                let state = self.replica.state();
                if !state.transfers_fit(&self.config.capacity, self.scratch.transfers.len()) {
                    return self.answer(token, Status::LedgerFull);
                }
                self.replica.submit(now, token, Request::CreateTransfers(&self.scratch.transfers))
            }
            Operation::SetAccountLimits => {
                Scratch::decode(body, &mut self.scratch.limits);
                self.replica.submit(now, token, Request::SetAccountLimits(&self.scratch.limits))
            }
            Operation::Status => {
                let reply = self.status_reply();
                reply.encode(self.body(token));
                return self.answer(token, Status::Ok);
            }
            Operation::Hello => return self.answer(token, Status::InternalError),
            read => {
                if !self.replica.serving() {
                    return self.not_leader(token, self.replica.leader_hint());
                }
                if let Err(status) = self.read(read, body, token) {
                    return self.answer(token, status);
                }
                self.replica.read(token)
            }
        };
        if let Err(refused) = submitted {
            self.not_leader(token, refused.leader_hint);
        }
    }

    /// Answers a read from the replica's state into `token`'s body.
    fn read(&mut self, operation: Operation, body: &[u8], token: u64) -> Result<(), Status> {
        let mut out = std::mem::take(self.body(token));
        let state = self.replica.state();
        let result = if operation == Operation::ChangeEvents {
            match protocol::ChangeEventsRequest::decode(body) {
                // Committed records only: the ones after the commit index may still be cut.
                Ok(request) => self.replica.storage().with_journal(|journal, commit| {
                    crate::change_events::collect(
                        journal,
                        commit,
                        state,
                        &|_| None,
                        &request,
                        &mut out,
                    )
                }),
                Err(_) => Err(Status::InvalidBody),
            }
        } else {
            reads::answer(state, operation, body, &mut self.scratch, &mut out);
            Ok(())
        };
        *self.body(token) = out;
        result
    }

    fn status_reply(&self) -> StatusReply {
        let state = self.replica.state();
        let counts = state.counts();
        StatusReply {
            sequence: self.replica.applied_index(),
            snapshot_sequence: self.metrics.snapshot_sequence.load(Relaxed),
            state_hash: state.state_hash(),
            accounts: counts.accounts,
            transfers: counts.transfers,
            pending_transfers: counts.pending,
            failed_ids: counts.failed_ids,
            clock_ns: state.clock_ns(),
            account_limits: counts.account_limits,
            uptime_ns: self.metrics.started.elapsed().as_nanos() as u64,
            connections: self.metrics.connections_open.load(Relaxed) as u32,
            role: role_of(self.replica.role()),
            replica: (self.replica.id() - 1) as u8,
            term: self.replica.term(),
            commit: self.replica.commit_index(),
            leader: self.leader_position(),
        }
    }
}

fn role_of(role: StateRole) -> ReplicaRole {
    match role {
        StateRole::Leader => ReplicaRole::Leader,
        StateRole::Candidate | StateRole::PreCandidate => ReplicaRole::Candidate,
        StateRole::Follower => ReplicaRole::Follower,
    }
}

/// A replica id (from 1) as a position in the cluster's address list (from 0).
fn leader_position(id: Option<u64>) -> u32 {
    id.map_or(protocol::LEADER_UNKNOWN, |id| (id - 1) as u32)
}
