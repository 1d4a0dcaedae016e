//! The business-logic thread: consumes the ring, applies, journals, flushes, replies.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use disruptor::Polling;
use rkyv::util::AlignedVec;

use super::reads::Scratch;
use super::resolve::Resolutions;
use super::{Doorbell, ReplyBatch, ReplyEntry, ReplySink, Slot, SlotKind, SlotPoller};
use super::{BATCH_EVENTS_MAX, BATCH_REQUESTS_MAX};
use crate::event::{self, Event};
use crate::journal::Journal;
use crate::metrics::Metrics;
use crate::protocol::{self, Operation, Status};
use crate::recovery::{self, RecoveryConfig};
use crate::state_machine::{Capacity, StateMachine};
use crate::types::{CreateResult, Transfer};

/// How long the idle business thread spins before it parks.
const IDLE_SPIN_DEFAULT: Duration = Duration::from_micros(20);
/// Longest park: a missed wake-up (which the doorbell prevents) would cost at most this.
const IDLE_PARK_MAX: Duration = Duration::from_millis(50);
/// After a journal failure, writes are refused without touching the journal for this long:
/// each failure costs a rebuild from disk, which a stream of writes to a full disk must not
/// repeat for every request.
const WRITE_RETRY_BACKOFF: Duration = Duration::from_millis(50);
/// A failure that repeats (a full disk, a journal that cannot be reopened) is logged when it
/// starts, then at most once per this interval with the count of failures in between.
const REPEAT_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// How long the business thread must have been idle before it seals the journal (records the
/// last flush as durable, one `fdatasync` off the request path): a request arriving sooner
/// is not delayed by a seal.
const SEAL_IDLE_DELAY: Duration = Duration::from_millis(1);

/// Logs a repeating error the first time and then once per `REPEAT_LOG_INTERVAL`, with the
/// number of occurrences since the last line: a failing disk costs a few lines, not one per
/// retry.
#[derive(Default)]
struct Repeating {
    last_logged: Option<Instant>,
    since_logged: u64,
}

impl Repeating {
    /// `Some(occurrences since the last line)` when this occurrence should be logged.
    fn occur(&mut self) -> Option<u64> {
        self.since_logged += 1;
        let due = self.last_logged.is_none_or(|at| at.elapsed() >= REPEAT_LOG_INTERVAL);
        if !due {
            return None;
        }
        self.last_logged = Some(Instant::now());
        Some(std::mem::take(&mut self.since_logged))
    }

    fn reset(&mut self) {
        *self = Repeating::default();
    }
}

/// Settings of the business thread.
#[derive(Clone, Debug)]
pub struct BusinessConfig {
    /// How to rebuild the state from disk after a journal error.
    pub recovery: RecoveryConfig,
    /// Core to pin the thread to; `None` leaves it unpinned.
    pub pin_core: Option<usize>,
    /// Never park when idle (for dedicated cores): lowest latency, one core always busy.
    pub busy_spin: bool,
    /// Where the business thread publishes its next expiry deadline (ns; `u64::MAX` for
    /// none), so that the timer publishes ticks only when one is due.
    pub next_expiry_ns: Arc<std::sync::atomic::AtomicU64>,
    /// Check the whole state after every batch (`--verify`): slow; tests and long runs.
    pub verify: bool,
    /// Most records of each kind; create requests that could pass them get `ledger_full`.
    pub capacity: Capacity,
}

/// Records evicted from memory before each slot, at least (more for large requests: see
/// [`Business::resolved`]).
const EVICT_PER_SLOT_MIN: usize = 64;

/// What the business thread shares with the resolve stage and the indexer when history lives
/// in the disk index.
pub struct ColdStage {
    /// What the resolve stage found for each slot.
    pub resolutions: Arc<Resolutions>,
    /// The journal's durable sequence, published after every flush: the indexer reads no
    /// further.
    pub durable: Arc<std::sync::atomic::AtomicU64>,
    /// The index itself, for the change-event feed's rare reads of evicted transfers.
    pub index: crate::cold::ColdIndex,
}

/// Where a buffered reply goes, kept until the flush so that a journal error can turn it
/// into an error reply.
#[derive(Clone, Copy)]
struct PendingReply {
    net: u16,
    operation: u16,
    conn: u64,
    request_id: u64,
    /// Already turned into `journal_unavailable` by an earlier failure in this batch.
    failed: bool,
}

/// The state owned by the business thread.
pub struct Business {
    config: BusinessConfig,
    state: StateMachine,
    /// `None` while degraded: the journal failed and could not be reopened yet.
    journal: Option<Journal>,
    metrics: Arc<Metrics>,
    sinks: Vec<Arc<ReplySink>>,
    /// Replies of the current batch, per network thread, released after the flush.
    outs: Vec<ReplyBatch>,
    pending: Vec<PendingReply>,
    /// Something was appended since the last flush.
    unflushed: bool,
    /// Last journal sequence whose replies were released (flushed and answered). After a
    /// journal failure everything past it is discarded before the state is rebuilt.
    committed_sequence: u64,
    /// Set by a journal failure: discard records after this sequence before rebuilding.
    discard_after: Option<u64>,
    /// Writes are refused without trying the journal until then (after a failure).
    write_retry_at: Option<Instant>,
    /// Journal failures since the last successful write (the first is logged as an error,
    /// the others only counted, so that a full disk does not flood the log).
    failures_in_a_row: u64,
    /// Throttles "journal write failed again" and "journal still unavailable".
    failing_log: Repeating,
    unavailable_log: Repeating,
    /// Highest journal sequence appended in the current batch: its replies leave only once
    /// the journal's durable sequence covers it (asserted).
    batch_sequence_max: u64,
    events_since_flush: usize,
    // Scratch buffers reused across requests: the hot path does not allocate once warm.
    event: Event,
    encoded: AlignedVec<16>,
    results: Vec<CreateResult>,
    scratch: Scratch,
    body: Vec<u8>,
    /// History in the disk index: the resolve stage's results and the slots consumed so far.
    cold: Option<ColdStage>,
    ordinal: u64,
}

impl Business {
    pub fn new(
        config: BusinessConfig,
        state: StateMachine,
        journal: Journal,
        metrics: Arc<Metrics>,
        sinks: Vec<Arc<ReplySink>>,
    ) -> Self {
        let committed_sequence = journal.last_sequence();
        metrics.journal_sequence.store(committed_sequence, Relaxed);
        metrics.transfers_in_memory.store(state.in_memory().0, Relaxed);
        let outs = sinks.iter().map(|_| ReplyBatch::default()).collect();
        Business {
            config,
            state,
            journal: Some(journal),
            metrics,
            sinks,
            outs,
            pending: Vec::new(),
            unflushed: false,
            committed_sequence,
            discard_after: None,
            write_retry_at: None,
            failures_in_a_row: 0,
            failing_log: Repeating::default(),
            unavailable_log: Repeating::default(),
            batch_sequence_max: 0,
            events_since_flush: 0,
            event: Event::default(),
            encoded: AlignedVec::new(),
            results: Vec::new(),
            scratch: Scratch::default(),
            body: Vec::new(),
            cold: None,
            ordinal: 0,
        }
    }

    /// Takes history from the disk index: slots come through the resolve stage, and records
    /// the index holds are evicted from memory.
    pub fn with_cold_stage(mut self, stage: ColdStage) -> Self {
        if let Some(journal) = &self.journal {
            stage.durable.store(journal.durable_sequence(), std::sync::atomic::Ordering::Release);
        }
        self.cold = Some(stage);
        self
    }

    /// With a cold stage: evicts what the index held when slot `slot` was resolved and hands
    /// the state machine what was found; false if the slot could not be resolved.
    fn resolved(&mut self, slot: &Slot) -> bool {
        let Some(cold) = &self.cold else {
            return true;
        };
        let cell = cold.resolutions.cell(self.ordinal);
        assert_eq!(
            cell.ordinal, self.ordinal,
            "the resolve stage and the business thread agree on slots"
        );
        self.ordinal += 1;
        if cell.unresolved {
            return false;
        }
        // Keep up with what a request can create, whatever its size.
        let budget = EVICT_PER_SLOT_MIN + 2 * (slot.body.len() / Transfer::SIZE);
        let evicted = self.state.evict(cell.watermark_ns, budget);
        if evicted > 0 {
            self.metrics.evicted_records.fetch_add(evicted as u64, Relaxed);
            self.metrics.transfers_in_memory.store(self.state.in_memory().0, Relaxed);
        }
        cell.fill(self.state.cold_hits());
        true
    }

    /// Consumes the ring until every producer is gone and the ring is drained.
    pub fn run(mut self, mut poller: impl SlotPoller, doorbell: Arc<Doorbell>) {
        doorbell.enter_business_thread(self.config.pin_core);
        loop {
            let idle = match poller.take_each(BATCH_REQUESTS_MAX, &mut |slot| {
                self.handle(slot);
                if self.events_since_flush >= BATCH_EVENTS_MAX {
                    self.commit();
                }
            }) {
                Ok(handled) => {
                    self.metrics.ring_consumed.fetch_add(handled, Relaxed);
                    self.metrics.batch_requests.observe(handled);
                    self.commit();
                    false
                }
                Err(Polling::NoEvents) => true,
                Err(Polling::Shutdown) => break,
            };
            if idle {
                self.idle(&poller, &doorbell);
            }
        }
        self.commit();
        self.seal();
        tracing::info!(
            sequence = self.metrics.journal_sequence.load(Relaxed),
            "business thread stopped"
        );
    }

    /// Records in the journal that its last flush is durable (one `fdatasync`, no request
    /// waiting): closes the window in which a damaged record of the last flush would be taken
    /// for a torn write (journal-format.md §5). A failure is a journal failure.
    fn seal(&mut self) {
        let Some(journal) = self.journal.as_mut() else { return };
        if !journal.seal_pending() {
            return;
        }
        if let Err(error) = journal.seal() {
            self.journal_failed(&error);
            // No reply is pending: release nothing, rebuild on the next tick.
        }
    }

    fn idle(&mut self, poller: &impl SlotPoller, doorbell: &Doorbell) {
        let spin_until = Instant::now() + IDLE_SPIN_DEFAULT;
        let seal_at = Instant::now() + SEAL_IDLE_DELAY;
        let mut seal_pending = self.journal.as_ref().is_some_and(|j| j.seal_pending());
        loop {
            if poller.has_available() {
                return;
            }
            if self.config.busy_spin {
                // A spinning thread never parks: it seals after the same idle delay.
                if seal_pending && Instant::now() >= seal_at {
                    self.seal();
                    seal_pending = false;
                }
                std::hint::spin_loop();
                continue;
            }
            if Instant::now() >= spin_until {
                break;
            }
            std::hint::spin_loop();
        }
        doorbell.set_sleeping(true);
        if !poller.has_available() {
            std::thread::park_timeout(if seal_pending { SEAL_IDLE_DELAY } else { IDLE_PARK_MAX });
        }
        doorbell.set_sleeping(false);
        if seal_pending && !poller.has_available() {
            self.seal();
        }
    }

    fn handle(&mut self, slot: &Slot) {
        if let Some(fault) = &self.config.recovery.fault {
            // Test-only (`--fault-file` line `panic`): proves that a bug in the business
            // thread takes the whole process down instead of leaving clients waiting.
            if fault.panic_requested() {
                panic!("injected panic in the business thread (test-only fault file)");
            }
        }
        if !self.resolved(slot) {
            // The disk index could not be read: nothing is decided without it.
            if matches!(slot.kind, SlotKind::Request | SlotKind::Reject) {
                self.body.clear();
                self.reply(slot, Status::JournalUnavailable);
            }
            return;
        }
        match slot.kind {
            SlotKind::Request => self.request(slot),
            SlotKind::Reject => {
                self.body.clear();
                let status = Status::from_u16(slot.status).unwrap_or(Status::InternalError);
                self.reply(slot, status);
            }
            SlotKind::Tick => self.tick(),
            SlotKind::Empty => {}
        }
    }

    fn tick(&mut self) {
        if self.journal.is_none() {
            self.rebuild();
            return;
        }
        if self.metrics.writes_failing.load(Relaxed) == 1 && !self.write_backoff() {
            self.probe();
        }
        let due = self.state.next_expiry_ns().is_some_and(|deadline| deadline <= now_ns());
        if !due || self.write_backoff() {
            return;
        }
        self.state.expire(now_ns(), &mut self.event);
        let expired = self.event.expired.len() as u64;
        if self.journal_event().is_ok() {
            self.metrics.expired_transfers.fetch_add(expired, Relaxed);
        }
    }

    fn request(&mut self, slot: &Slot) {
        let Some(operation) = Operation::from_u16(slot.operation) else {
            // The network layer validates operations before publishing.
            self.reply(slot, Status::InternalError);
            return;
        };
        if self.journal.is_none() || (is_write(operation) && self.write_backoff()) {
            self.body.clear();
            self.reply(slot, Status::JournalUnavailable);
            return;
        }
        self.body.clear();
        let status = match self.execute(operation, &slot.body) {
            Ok(()) => Status::Ok,
            Err(status) => {
                self.body.clear();
                status
            }
        };
        self.reply(slot, status);
    }

    /// Runs one request, leaving the reply body in `self.body`.
    fn execute(&mut self, operation: Operation, body: &[u8]) -> Result<(), Status> {
        let now = now_ns();
        match operation {
            Operation::CreateAccounts => {
                Scratch::decode(body, &mut self.scratch.accounts);
                if !self.state.accounts_fit(&self.config.capacity, self.scratch.accounts.len()) {
                    return Err(Status::LedgerFull);
                }
                self.state.create_accounts(
                    now,
                    &self.scratch.accounts,
                    &mut self.results,
                    &mut self.event,
                );
                self.metrics.events(0, self.scratch.accounts.len(), &self.results);
                self.events_since_flush += self.scratch.accounts.len();
                self.journal_event()?;
                encode_results(&self.results, &mut self.body);
            }
            Operation::CreateTransfers => {
                Scratch::decode(body, &mut self.scratch.transfers);
                if !self.state.transfers_fit(&self.config.capacity, self.scratch.transfers.len()) {
                    // With history on disk the limit is on memory: the index is behind and
                    // catches up by itself, so the client retries later.
                    return Err(if self.cold.is_some() {
                        Status::Busy
                    } else {
                        Status::LedgerFull
                    });
                }
                self.state.create_transfers(
                    now,
                    &self.scratch.transfers,
                    &mut self.results,
                    &mut self.event,
                );
                self.metrics.events(1, self.scratch.transfers.len(), &self.results);
                self.events_since_flush += self.scratch.transfers.len();
                self.journal_event()?;
                encode_results(&self.results, &mut self.body);
            }
            Operation::SetAccountLimits => {
                Scratch::decode(body, &mut self.scratch.limits);
                self.state.set_account_limits(
                    now,
                    &self.scratch.limits,
                    &mut self.results,
                    &mut self.event,
                );
                self.metrics.events(2, self.scratch.limits.len(), &self.results);
                self.events_since_flush += self.scratch.limits.len();
                self.journal_event()?;
                encode_results(&self.results, &mut self.body);
            }
            read @ (Operation::LookupAccounts
            | Operation::LookupTransfers
            | Operation::LookupAccountLimits
            | Operation::GetAccountTransfers
            | Operation::GetAccountBalances) => {
                super::reads::answer(&self.state, read, body, &mut self.scratch, &mut self.body);
            }
            Operation::ChangeEvents => {
                let request =
                    protocol::ChangeEventsRequest::decode(body).map_err(|_| Status::InvalidBody)?;
                // The feed is read from durable records: end the group commit here so that
                // changes made earlier in this batch are included.
                self.commit();
                let journal = self.journal.as_ref().ok_or(Status::JournalUnavailable)?;
                // With history on disk, an old expiry's pending transfer is read from the
                // index: a rare disk read on this thread, like the old journal pages the feed
                // reads anyway.
                let index = self.cold.as_ref().map(|c| &c.index);
                let evicted = |id: u128| -> Option<Transfer> {
                    let found = index?.transfer(id).unwrap_or_else(|e| {
                        tracing::error!(error = %e, "reading an expired transfer from the cold index");
                        None
                    });
                    found.map(|(t, _)| t)
                };
                crate::change_events::collect(
                    journal,
                    journal.durable_sequence(),
                    &self.state,
                    &evicted,
                    &request,
                    &mut self.body,
                )?;
            }
            Operation::Status => {
                let counts = self.state.counts();
                let journal = self.journal.as_ref().expect("not degraded");
                let reply = protocol::StatusReply {
                    sequence: journal.last_sequence(),
                    state_hash: self.state.state_hash(),
                    accounts: counts.accounts,
                    transfers: counts.transfers,
                    pending_transfers: counts.pending,
                    failed_ids: counts.failed_ids,
                    account_limits: counts.account_limits,
                    clock_ns: self.state.clock_ns(),
                    snapshot_sequence: self.metrics.snapshot_sequence.load(Relaxed),
                    uptime_ns: self.metrics.started.elapsed().as_nanos() as u64,
                    connections: self.metrics.connections_open.load(Relaxed) as u32,
                    role: protocol::ReplicaRole::Standalone,
                    replica: 0,
                    term: 0,
                    commit: 0,
                    leader: protocol::LEADER_UNKNOWN,
                };
                reply.encode(&mut self.body);
            }
            Operation::Hello => return Err(Status::InternalError),
        }
        Ok(())
    }

    /// Journals `self.event` if it holds any change. On failure every unflushed reply
    /// (including the current one) becomes `journal_unavailable` and the state is rebuilt.
    fn journal_event(&mut self) -> Result<(), Status> {
        if self.event.is_empty() {
            return Ok(());
        }
        event::encode(&self.event, &mut self.encoded);
        let journal = self.journal.as_mut().expect("not degraded");
        match journal.append(&self.encoded) {
            Ok(sequence) => {
                assert!(sequence > self.batch_sequence_max, "journal sequences go backwards");
                self.batch_sequence_max = sequence;
                self.unflushed = true;
                self.metrics.journal_events.fetch_add(self.event.changes() as u64, Relaxed);
                Ok(())
            }
            Err(error) => {
                self.journal_failed(&error);
                Err(Status::JournalUnavailable)
            }
        }
    }

    /// Buffers the reply to `slot` until the batch is durable.
    fn reply(&mut self, slot: &Slot, status: Status) {
        self.metrics.request(slot.operation, status);
        let out = &mut self.outs[slot.net as usize];
        let start = out.frames.len();
        protocol::encode_frame(
            &mut out.frames,
            slot.operation,
            status,
            slot.request_id,
            &self.body,
        );
        let len = (out.frames.len() - start) as u32;
        out.entries.push(ReplyEntry { conn: slot.conn, len });
        self.pending.push(PendingReply {
            net: slot.net,
            operation: slot.operation,
            conn: slot.conn,
            request_id: slot.request_id,
            failed: status == Status::JournalUnavailable,
        });
    }

    /// Whether writes are still refused after a recent journal failure.
    fn write_backoff(&mut self) -> bool {
        match self.write_retry_at {
            Some(at) if Instant::now() < at => true,
            Some(_) => {
                self.write_retry_at = None;
                false
            }
            None => false,
        }
    }

    /// Ends a group commit: one flush, then the batch's replies go out.
    fn commit(&mut self) {
        if self.unflushed {
            let started = Instant::now();
            let result = self.journal.as_mut().expect("unflushed implies a journal").flush();
            self.metrics.flush_us.observe(started.elapsed().as_micros() as u64);
            self.unflushed = false;
            match result {
                Ok(()) => {
                    let journal = self.journal.as_ref().expect("flushed a journal");
                    let sequence = journal.last_sequence();
                    // Nothing acknowledged is lost: every record of this batch is durable
                    // before any of its replies is released below.
                    assert!(
                        journal.durable_sequence() == sequence
                            && sequence >= self.batch_sequence_max,
                        "replies released before the journal covered them: durable {} last {} \
                         batch max {}",
                        journal.durable_sequence(),
                        sequence,
                        self.batch_sequence_max
                    );
                    self.metrics.journal_sequence.store(sequence, Relaxed);
                    self.metrics.transfers_in_memory.store(self.state.in_memory().0, Relaxed);
                    self.committed_sequence = sequence;
                    if let Some(cold) = &self.cold {
                        cold.durable.store(sequence, std::sync::atomic::Ordering::Release);
                    }
                    self.writes_succeed();
                }
                Err(error) => self.journal_failed(&error),
            }
        }
        if self.config.verify {
            if let Err(problem) = self.state.verify() {
                panic!("state verification failed after a batch: {problem}");
            }
        }
        self.batch_sequence_max = 0;
        self.events_since_flush = 0;
        self.pending.clear();
        let next = self.state.next_expiry_ns().unwrap_or(u64::MAX);
        self.config.next_expiry_ns.store(next, Relaxed);
        for (out, sink) in self.outs.iter_mut().zip(&self.sinks) {
            sink.deliver(out);
        }
    }

    /// Turns every buffered reply into `journal_unavailable`, drops the journal (its page
    /// cache is no longer trusted) and rebuilds the state from disk.
    fn journal_failed(&mut self, error: &dyn std::fmt::Display) {
        if self.failures_in_a_row == 0 {
            tracing::error!(%error, "journal write failed; answering journal_unavailable and rebuilding from disk (further failures are counted in ledgerd_journal_errors_total and logged every 10 s until a write succeeds)");
            self.failing_log.reset();
            self.failing_log.occur();
        } else if let Some(failures) = self.failing_log.occur() {
            tracing::error!(%error, failures, "journal writes still failing; every write is answered journal_unavailable");
        }
        self.metrics.write_failed(error);
        self.failures_in_a_row += 1;
        self.write_retry_at = Some(Instant::now() + WRITE_RETRY_BACKOFF);
        self.metrics.journal_errors.fetch_add(1, Relaxed);
        // Records appended after the last commit may sit in the page cache (or even on disk,
        // flushed by a roll-over): their requests are answered `journal_unavailable`, which
        // promises that nothing was applied, so they must go before the rebuild reads them.
        self.discard_after = Some(self.committed_sequence);
        self.journal = None;
        self.unflushed = false;
        self.event.clear();
        for out in &mut self.outs {
            out.clear();
        }
        // Every reply buffered in this batch is rewritten, including those an earlier failure
        // in the same batch already rewrote: `pending` keeps them all until the commit.
        let mut pending = std::mem::take(&mut self.pending);
        for p in &mut pending {
            let out = &mut self.outs[p.net as usize];
            let start = out.frames.len();
            protocol::encode_frame(
                &mut out.frames,
                p.operation,
                Status::JournalUnavailable,
                p.request_id,
                &[],
            );
            out.entries.push(ReplyEntry { conn: p.conn, len: (out.frames.len() - start) as u32 });
            if !p.failed {
                self.metrics.request(p.operation, Status::JournalUnavailable);
                p.failed = true;
            }
        }
        self.pending = pending;
        self.rebuild();
    }

    /// Reopens the journal and rebuilds the state from what is durable.
    fn rebuild(&mut self) {
        self.metrics.degraded.store(1, Relaxed);
        if let Some(sequence) = self.discard_after {
            match recovery::discard_after(&self.config.recovery.data_dir, sequence) {
                Ok(discarded) => {
                    if discarded > 0 {
                        tracing::error!(
                            after = sequence,
                            discarded,
                            "cut: discarded journal records after the last acknowledged one \
                             (their requests were answered journal_unavailable)"
                        );
                    }
                    self.discard_after = None;
                }
                Err(error) => {
                    tracing::error!(%error, "could not discard unacknowledged records; retrying on the next tick");
                    return;
                }
            }
        }
        match recovery::recover(&self.config.recovery) {
            Ok(recovered) => {
                tracing::warn!(
                    sequence = recovered.journal.last_sequence(),
                    "state rebuilt from disk; serving reads, writes again after the backoff"
                );
                self.unavailable_log.reset();
                self.metrics.journal_sequence.store(recovered.journal.last_sequence(), Relaxed);
                self.metrics.transfers_in_memory.store(recovered.state.in_memory().0, Relaxed);
                self.committed_sequence = recovered.journal.last_sequence();
                self.state = recovered.state;
                self.journal = Some(recovered.journal);
                self.metrics.degraded.store(0, Relaxed);
            }
            Err(error) => {
                if let Some(attempts) = self.unavailable_log.occur() {
                    tracing::error!(%error, attempts, "journal still unavailable; retrying every tick");
                }
                self.metrics.write_failed(&error);
                self.journal = None;
            }
        }
    }

    /// A write went through: health and logs say so once.
    fn writes_succeed(&mut self) {
        if self.failures_in_a_row > 0 {
            tracing::warn!(failures = self.failures_in_a_row, "journal writes succeed again");
            self.failures_in_a_row = 0;
            self.failing_log.reset();
            self.unavailable_log.reset();
        }
        self.metrics.writes_ok();
    }

    /// While writes are failing and nobody writes, checks whether the journal could take a
    /// write again (`Journal::probe`), so readiness comes back without a client's write.
    fn probe(&mut self) {
        let Some(journal) = self.journal.as_mut() else { return };
        match journal.probe() {
            Ok(()) => self.writes_succeed(),
            Err(error) => {
                self.write_retry_at = Some(Instant::now() + WRITE_RETRY_BACKOFF);
                self.metrics.write_failed(&error);
                if journal.is_poisoned() {
                    self.journal_failed(&error);
                }
            }
        }
    }
}

/// Operations that append to the journal.
pub fn is_write(operation: Operation) -> bool {
    matches!(
        operation,
        Operation::CreateAccounts | Operation::CreateTransfers | Operation::SetAccountLimits
    )
}

/// Nanoseconds since the Unix epoch from the wall clock (the state machine keeps its own
/// clock strictly increasing on top of it).
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn encode_results(results: &[CreateResult], body: &mut Vec<u8>) {
    body.clear();
    for r in results {
        body.extend_from_slice(&r.index.to_le_bytes());
        body.extend_from_slice(&(r.result as u32).to_le_bytes());
    }
}
