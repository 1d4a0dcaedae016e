//! Group commit with the flush overlapped: the business thread applies batch N+1 while the
//! flusher thread makes batch N durable and then releases N's replies.
//!
//! A [`Group`] is the replies of one or more ring batches and the [`FlushJob`] that covers
//! every record they depend on. The business thread *stages* a group at the end of each ring
//! batch; the flusher thread takes the staged group, runs its job, and hands the replies to the
//! network threads. While the flusher is busy, later batches are merged into the staged group,
//! so one flush covers everything that arrived during the previous one (at most one flush in
//! flight and one group waiting; groups are released in order).
//!
//! Invariants:
//! - A group's replies leave only after a flush that covers the group's `sequence` (every
//!   record appended before its last reply) returned successfully: asserted before release.
//! - Groups are released in staging order, so replies keep ring order.
//! - After a failed flush the flusher releases nothing more: the business thread takes the
//!   failed group and the staged one back, answers them `journal_unavailable`, discards what is
//!   not durable and rebuilds (see `Business::journal_failed`).
//!
//! Three groups circulate (the business thread's, the staged one, the flusher's) and are
//! swapped, never dropped, so their buffers are reused: no allocation per batch once warm.

use std::io;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use super::{Doorbell, ReplyBatch, ReplySink, BATCH_EVENTS_MAX};
use crate::journal::{Durable, FlushJob};
use crate::metrics::Metrics;

/// Where a buffered reply goes, kept until the flush so that a journal error can turn it
/// into an error reply.
#[derive(Clone, Copy)]
pub(super) struct PendingReply {
    pub net: u16,
    pub operation: u16,
    pub conn: u64,
    pub request_id: u64,
    /// Already counted as `journal_unavailable` in the metrics.
    pub failed: bool,
}

/// Replies waiting for a flush, and the flush that covers them.
pub(super) struct Group {
    /// Encoded replies per network thread.
    pub outs: Vec<ReplyBatch>,
    /// The same replies in order, to rewrite them after a journal failure.
    pub pending: Vec<PendingReply>,
    /// The flush that covers `sequence`; `None` when an earlier job already does (a group of
    /// reads, or of writes that changed nothing).
    pub job: Option<FlushJob>,
    /// Every record the replies depend on has a sequence at most this.
    pub sequence: u64,
    /// What the journal knew to be durable when the group was staged (a roll-over seals a
    /// segment synchronously, so a group may need no job of its own).
    pub known_durable: Durable,
    /// Create events appended for this group (bounds a group's journal bytes).
    pub events: usize,
}

impl Group {
    pub fn new(nets: usize) -> Self {
        Group {
            outs: (0..nets).map(|_| ReplyBatch::default()).collect(),
            pending: Vec::new(),
            job: None,
            sequence: 0,
            known_durable: Durable::default(),
            events: 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty() && self.job.is_none()
    }

    pub fn clear(&mut self) {
        for out in &mut self.outs {
            out.clear();
        }
        self.pending.clear();
        self.job = None;
        self.sequence = 0;
        self.known_durable = Durable::default();
        self.events = 0;
    }

    /// Moves the replies of `later` behind those of `self` (after a failure: jobs no longer
    /// matter), leaving `later` empty.
    pub fn append_replies(&mut self, later: &mut Group) {
        for (out, more) in self.outs.iter_mut().zip(&mut later.outs) {
            out.append(more);
        }
        self.pending.append(&mut later.pending);
        self.sequence = self.sequence.max(later.sequence);
        later.clear();
    }

    /// Appends `later` (staged after `self`) to `self`, leaving `later` empty.
    fn absorb(&mut self, later: &mut Group) {
        assert!(later.sequence >= self.sequence, "groups are staged in sequence order");
        for (out, more) in self.outs.iter_mut().zip(&mut later.outs) {
            out.append(more);
        }
        self.pending.append(&mut later.pending);
        match (self.job.take(), later.job.take()) {
            (Some(earlier), Some(mut job)) => {
                job.absorb(earlier);
                self.job = Some(job);
            }
            (earlier, job) => self.job = job.or(earlier),
        }
        self.sequence = later.sequence;
        self.known_durable = newer(self.known_durable, later.known_durable);
        self.events += later.events;
        later.clear();
    }
}

/// A flush that failed, and the group it should have released.
pub(super) struct Failure {
    pub group: Group,
    pub segment: u64,
    pub error: io::Error,
}

struct State {
    /// The group waiting for the flusher (empty when none).
    staged: Group,
    /// The flusher is running a job or releasing replies.
    in_flight: bool,
    flusher_waiting: bool,
    business_waiting: bool,
    /// Set by a failed flush; the flusher takes nothing more until the business thread takes it.
    failure: Option<Failure>,
    /// What the flushes made durable so far (the journal learns it in `stage`).
    durable: Durable,
    stop: bool,
}

/// The side both threads share.
pub(super) struct Committer {
    state: Mutex<State>,
    /// The flusher waits here for a staged group.
    work: Condvar,
    /// The business thread waits here for the flusher to take or finish a group.
    progress: Condvar,
    /// `State::durable.sequence`, readable without the lock.
    durable: AtomicU64,
    /// A failure is waiting (cheap check for the business thread's loop).
    failed: AtomicBool,
}

impl Committer {
    pub fn new(nets: usize, durable: Durable) -> Self {
        Committer {
            state: Mutex::new(State {
                staged: Group::new(nets),
                in_flight: false,
                flusher_waiting: false,
                business_waiting: false,
                failure: None,
                durable,
                stop: false,
            }),
            work: Condvar::new(),
            progress: Condvar::new(),
            durable: AtomicU64::new(durable.sequence),
            failed: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("commit state lock")
    }

    /// Highest durable sequence.
    pub fn durable(&self) -> u64 {
        self.durable.load(SeqCst)
    }

    /// A flush failed and its group waits for [`Committer::take_back`].
    pub fn has_failed(&self) -> bool {
        self.failed.load(SeqCst)
    }

    /// What the flushes made durable so far.
    pub fn durable_now(&self) -> Durable {
        self.lock().durable
    }

    /// Hands `group` to the flusher (merged behind a group still waiting), leaving `group`
    /// empty. When the waiting group holds `BATCH_EVENTS_MAX` events or more, waits until the
    /// flusher takes it, so that at most two groups' records are ever unflushed.
    pub fn stage(&self, group: &mut Group) {
        if group.is_empty() {
            return;
        }
        let mut state = self.lock();
        if state.staged.is_empty() {
            std::mem::swap(&mut state.staged, group);
        } else {
            state.staged.absorb(group);
        }
        if state.flusher_waiting {
            self.work.notify_one();
        }
        while state.staged.events >= BATCH_EVENTS_MAX && state.failure.is_none() && !state.stop {
            state.business_waiting = true;
            state = self.progress.wait(state).expect("commit state lock");
            state.business_waiting = false;
        }
    }

    /// Waits until every staged group has been flushed and released, or a flush failed.
    /// Returns whether everything staged is durable.
    pub fn wait_idle(&self) -> bool {
        let mut state = self.lock();
        while state.failure.is_none() && (state.in_flight || !state.staged.is_empty()) {
            state.business_waiting = true;
            state = self.progress.wait(state).expect("commit state lock");
            state.business_waiting = false;
        }
        state.failure.is_none()
    }

    /// After a failure (or before the business thread drops its journal): waits for the flush
    /// in flight, then takes back the failure, if any, and the staged group, in that order. The
    /// flusher is idle and holds nothing when this returns.
    pub fn take_back(&self, failure: &mut Option<Failure>, staged: &mut Group) {
        let mut state = self.lock();
        while state.in_flight {
            state.business_waiting = true;
            state = self.progress.wait(state).expect("commit state lock");
            state.business_waiting = false;
        }
        *failure = state.failure.take();
        std::mem::swap(&mut state.staged, staged);
        self.failed.store(false, SeqCst);
    }

    /// After a rebuild: what the new journal holds is durable.
    pub fn reset_durable(&self, durable: Durable) {
        let mut state = self.lock();
        state.durable = durable;
        self.durable.store(durable.sequence, SeqCst);
    }

    /// Whether nothing is staged or being flushed.
    pub fn is_idle(&self) -> bool {
        let state = self.lock();
        !state.in_flight && state.staged.is_empty()
    }

    /// Asks the flusher to stop once nothing is staged.
    pub fn stop(&self) {
        let mut state = self.lock();
        state.stop = true;
        self.work.notify_one();
        self.progress.notify_all();
    }
}

/// The flusher thread: runs staged groups' jobs and releases their replies.
pub(super) struct Flusher {
    pub committer: Arc<Committer>,
    pub sinks: Vec<Arc<ReplySink>>,
    pub metrics: Arc<Metrics>,
    pub doorbell: Arc<Doorbell>,
}

impl Flusher {
    pub fn run(self) {
        let committer = &*self.committer;
        let mut group = Group::new(self.sinks.len());
        loop {
            {
                let mut state = committer.lock();
                loop {
                    if state.failure.is_none() && !state.staged.is_empty() {
                        std::mem::swap(&mut state.staged, &mut group);
                        state.in_flight = true;
                        if state.business_waiting {
                            // A business thread held back by a full staged group may go on.
                            committer.progress.notify_one();
                        }
                        break;
                    }
                    if state.stop {
                        return;
                    }
                    state.flusher_waiting = true;
                    state = committer.work.wait(state).expect("commit state lock");
                    state.flusher_waiting = false;
                }
            }
            let result = match &group.job {
                Some(job) => {
                    let started = Instant::now();
                    let result = job.run();
                    self.metrics.flush_us.observe(started.elapsed().as_micros() as u64);
                    result.map(|()| job.durable())
                }
                None => Ok(group.known_durable),
            };
            match result {
                Ok(made) => {
                    // Nothing acknowledged is lost: every record a reply depends on is durable
                    // before the reply is released.
                    let durable = newer(newer(committer.durable_now(), made), group.known_durable);
                    assert!(
                        durable.sequence >= group.sequence,
                        "replies depending on sequence {} released with only {} durable",
                        group.sequence,
                        durable.sequence
                    );
                    self.metrics.journal_sequence.store(durable.sequence, Relaxed);
                    {
                        let mut state = committer.lock();
                        state.durable = newer(state.durable, durable);
                        committer.durable.store(state.durable.sequence, SeqCst);
                    }
                    for (out, sink) in group.outs.iter_mut().zip(&self.sinks) {
                        sink.deliver(out);
                    }
                    group.clear();
                    let mut state = committer.lock();
                    state.in_flight = false;
                    if state.business_waiting {
                        committer.progress.notify_one();
                    }
                }
                Err(error) => {
                    let segment = group.job.as_ref().map_or(0, FlushJob::segment);
                    let failed = std::mem::replace(&mut group, Group::new(self.sinks.len()));
                    let mut state = committer.lock();
                    state.failure = Some(Failure { group: failed, segment, error });
                    state.in_flight = false;
                    committer.failed.store(true, SeqCst);
                    committer.progress.notify_one();
                    drop(state);
                    // The business thread may be parked with an empty ring: it must answer the
                    // failed group and rebuild now.
                    self.doorbell.wake();
                }
            }
        }
    }
}

/// The later of two durability facts (sequences only grow; claims only grow).
fn newer(a: Durable, b: Durable) -> Durable {
    let mut out = if b.sequence > a.sequence { b } else { a };
    out.claimed = a.claimed.max(b.claimed);
    out
}
