//! The resolve stage: a consumer of the ring that runs before the business thread and reads
//! from the disk index what each request needs of the history no longer in memory, so that
//! the business thread never waits on the disk.
//!
//! For every slot it notes the index's watermark (the newest event timestamp the index holds,
//! read before any lookup) and then, for a request:
//! - `create_transfers`: each event's id and pending id; `lookup_transfers`: each id. An id
//!   goes to the disk only if the index's in-memory filter says it may be there (almost no new
//!   id does); what is found is kept with its state, and failed ids likewise.
//! - `get_account_transfers` / `get_account_balances`: the filter's first page from the index.
//!
//! The business thread takes slot `k`'s [`Resolution`] from cell `k mod cells` (both stages
//! count the slots they consume; a resolution carries its ordinal, which is asserted) and
//! evicts from memory only what the index held at that slot's watermark (see
//! `state_machine::evict`). So every record it finds missing in memory was in the index when
//! this stage looked, and the answer is exact. A cell is reused only after the business
//! thread released its slot: the ring cannot run a whole lap ahead of its last consumer.
//!
//! A read error is retried a few times; if it persists the slot is marked unresolved and
//! the business thread refuses the request with `journal_unavailable` (storage failed),
//! never guessing that an id is new.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use disruptor::Polling;

use super::{Doorbell, Slot, SlotKind};
use crate::cold::{ColdError, ColdIndex};
use crate::metrics::Metrics;
use crate::protocol::Operation;
use crate::state_machine::{ColdHits, TransferState};
use crate::types::{AccountBalance, AccountFilter, Transfer};

/// Reads of one slot tried this many times before the slot is given up as unresolved.
const READ_ATTEMPTS: u32 = 3;
const READ_RETRY_DELAY: Duration = Duration::from_millis(2);
/// How long the idle stage spins before it parks, and its longest park.
const IDLE_SPIN: Duration = Duration::from_micros(20);
const IDLE_PARK_MAX: Duration = Duration::from_millis(50);
/// Slots taken from the ring at once.
const TAKE_MAX: u64 = 64;

/// What the index holds for one slot.
#[derive(Default)]
pub struct Resolution {
    /// Which slot (counted from 0 by both stages) this is for.
    pub ordinal: u64,
    /// The index held every event up to this timestamp when the lookups ran.
    pub watermark_ns: u64,
    /// The reads failed: the request must not be decided.
    pub unresolved: bool,
    transfers: Vec<(Transfer, TransferState)>,
    failed: Vec<u128>,
    account_transfers: Vec<Transfer>,
    account_balances: Vec<AccountBalance>,
}

impl Resolution {
    fn reset(&mut self, ordinal: u64, watermark_ns: u64) {
        self.ordinal = ordinal;
        self.watermark_ns = watermark_ns;
        self.unresolved = false;
        self.transfers.clear();
        self.failed.clear();
        self.account_transfers.clear();
        self.account_balances.clear();
    }

    /// Hands what was found to the state machine for this request.
    pub fn fill(&self, hits: &mut ColdHits) {
        hits.clear();
        for (t, state) in &self.transfers {
            hits.add_transfer(*t, *state);
        }
        for id in &self.failed {
            hits.add_failed(*id);
        }
        hits.account_transfers.extend_from_slice(&self.account_transfers);
        hits.account_balances.extend_from_slice(&self.account_balances);
    }
}

/// One cell per ring slot, shared by the two stages.
pub struct Resolutions {
    cells: Box<[Mutex<Resolution>]>,
}

impl Resolutions {
    pub fn new(ring_slots: usize) -> Resolutions {
        assert!(ring_slots.is_power_of_two());
        Resolutions { cells: (0..ring_slots).map(|_| Mutex::default()).collect() }
    }

    /// The cell of slot `ordinal`.
    pub fn cell(&self, ordinal: u64) -> MutexGuard<'_, Resolution> {
        let cell = &self.cells[(ordinal as usize) & (self.cells.len() - 1)];
        // Plain data: a panic elsewhere cannot leave it half-written in a way that matters
        // (a panic aborts the process anyway).
        cell.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The first stage's poller: it waits on the producers.
pub type ResolvePoller = disruptor::EventPoller<Slot, disruptor::MultiProducerBarrier>;

/// Runs the stage until the ring shuts down. `doorbell` is this stage's (producers ring it);
/// `next` is the business thread's, rung after every batch of slots.
pub fn run(
    mut poller: ResolvePoller,
    doorbell: Arc<Doorbell>,
    next: Arc<Doorbell>,
    index: ColdIndex,
    resolutions: Arc<Resolutions>,
    metrics: Arc<Metrics>,
) {
    doorbell.register_current();
    let mut ordinal = 0u64;
    let mut scratch = Vec::new();
    loop {
        let taken = match poller.take(TAKE_MAX) {
            Ok(mut guard) => {
                for slot in &mut guard {
                    let mut cell = resolutions.cell(ordinal);
                    resolve(&index, slot, ordinal, &mut cell, &mut scratch, &metrics);
                    ordinal += 1;
                }
                true
            }
            Err(Polling::NoEvents) => false,
            Err(Polling::Shutdown) => break,
        };
        if taken {
            metrics.cold_watermark_sequence.store(index.watermark().sequence, Relaxed);
            next.ring();
        } else {
            idle(&poller, &doorbell);
        }
    }
    // The business thread may be parked waiting for slots this stage released last.
    next.wake();
}

fn idle(poller: &ResolvePoller, doorbell: &Doorbell) {
    let spin_until = std::time::Instant::now() + IDLE_SPIN;
    while std::time::Instant::now() < spin_until {
        if poller.has_available() {
            return;
        }
        std::hint::spin_loop();
    }
    doorbell.set_sleeping(true);
    if !poller.has_available() {
        std::thread::park_timeout(IDLE_PARK_MAX);
    }
    doorbell.set_sleeping(false);
}

fn resolve(
    index: &ColdIndex,
    slot: &Slot,
    ordinal: u64,
    out: &mut Resolution,
    scratch: &mut Vec<u128>,
    metrics: &Metrics,
) {
    for attempt in 1..=READ_ATTEMPTS {
        // The watermark first: what the lookups find is at least what it covers.
        out.reset(ordinal, index.watermark().timestamp);
        match read(index, slot, out, scratch) {
            Ok(()) => return,
            Err(error) => {
                metrics.cold_read_errors.fetch_add(1, Relaxed);
                if attempt == READ_ATTEMPTS {
                    tracing::error!(%error, "cold index reads failed; the request is refused");
                    out.unresolved = true;
                    return;
                }
                std::thread::sleep(READ_RETRY_DELAY);
            }
        }
    }
}

fn read(
    index: &ColdIndex,
    slot: &Slot,
    out: &mut Resolution,
    ids: &mut Vec<u128>,
) -> Result<(), ColdError> {
    if slot.kind != SlotKind::Request {
        return Ok(());
    }
    ids.clear();
    match Operation::from_u16(slot.operation) {
        Some(Operation::CreateTransfers) => {
            for record in slot.body.chunks_exact(Transfer::SIZE) {
                let t = Transfer::read_from(record);
                ids.push(t.id);
                if t.pending_id != 0 {
                    ids.push(t.pending_id);
                }
            }
        }
        Some(Operation::LookupTransfers) => {
            ids.extend(slot.body.chunks_exact(16).map(|b| crate::types::read_u128(b, 0)));
        }
        Some(Operation::GetAccountTransfers) if slot.body.len() >= AccountFilter::SIZE => {
            let filter = AccountFilter::read_from(&slot.body[..AccountFilter::SIZE]);
            index.account_transfers(&filter, &mut out.account_transfers)?;
        }
        Some(Operation::GetAccountBalances) if slot.body.len() >= AccountFilter::SIZE => {
            let filter = AccountFilter::read_from(&slot.body[..AccountFilter::SIZE]);
            index.account_balances(&filter, &mut out.account_balances)?;
        }
        _ => {}
    }
    for &id in ids.iter() {
        if index.may_contain_transfer(id) {
            if let Some(found) = index.transfer(id)? {
                // A retried post or void of the full amount compares against the pending
                // transfer the stored one settled, which the request need not name.
                let settled = found.0.pending_id;
                out.transfers.push(found);
                if settled != 0 {
                    if let Some(pending) = index.transfer(settled)? {
                        out.transfers.push(pending);
                    }
                }
            }
        }
        if index.may_contain_failed(id) && index.failed(id)?.is_some() {
            out.failed.push(id);
        }
    }
    Ok(())
}
