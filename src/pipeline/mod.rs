//! The business-logic pipeline: a multi-producer disruptor ring, one pinned consumer thread
//! that applies every request to the state machine, journals what changed, flushes once per
//! batch (group commit), and only then releases the replies to the network threads.
//!
//! Boundaries:
//! - This module never touches a socket: requests arrive as [`Slot`]s, replies leave as
//!   encoded frames in per-network-thread [`ReplySink`]s, woken through a `mio::Waker`.
//! - No reply, not even a read, leaves before the journal covers every change made before it:
//!   replies are buffered during a batch and released after the flush that ends it.
//! - Replies leave in ring order (per network thread, which is per connection).
//! - A journal error fails every reply of the unflushed batch with `journal_unavailable`,
//!   then the state is rebuilt from what is durable (snapshot + journal) before serving again.

mod business;
pub mod reads;
mod replies;
pub mod resolve;

pub use business::{is_write, now_ns, Business, BusinessConfig, ColdStage};
pub use replies::{ReplyBatch, ReplyEntry, ReplySink};

use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::Thread;

/// Slots in the ring by default (a power of two; each holds one request).
pub const RING_SLOTS_DEFAULT: usize = 256;
/// Most requests handled between two journal flushes: bounds a group commit's latency.
pub const BATCH_REQUESTS_MAX: u64 = 1024;
/// Most create events appended between two flushes (about 8 MiB of journal).
pub const BATCH_EVENTS_MAX: usize = 65_536;

/// What a ring slot carries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SlotKind {
    /// Unused (never published).
    #[default]
    Empty,
    /// A client request: `net`, `conn`, `request_id`, `operation`, `body`.
    Request,
    /// A request the network layer already refused (`status`): answered in order with the
    /// connection's other replies, without touching the state.
    Reject,
    /// A timer tick: expire pending transfers that are due; retry a failed journal.
    Tick,
}

/// One entry of the ring. The body keeps its capacity from one use to the next, so a
/// producer fills it by copying, without allocating once the ring is warm.
#[derive(Default)]
pub struct Slot {
    pub kind: SlotKind,
    /// Index of the network thread that owns the connection.
    pub net: u16,
    pub operation: u16,
    /// The status of a [`SlotKind::Reject`].
    pub status: u16,
    /// Connection identity (slab index and generation) inside that network thread.
    pub conn: u64,
    pub request_id: u64,
    pub body: Vec<u8>,
}

/// A slot body keeps at most this much capacity when a smaller request reuses it.
pub const SLOT_BODY_RETAIN_BYTES: usize = 64 * 1024;

impl Slot {
    /// Fills the slot with a request, reusing the body's allocation.
    pub fn set_request(
        &mut self,
        net: u16,
        conn: u64,
        request_id: u64,
        operation: u16,
        body: &[u8],
    ) {
        self.kind = SlotKind::Request;
        self.net = net;
        self.conn = conn;
        self.request_id = request_id;
        self.operation = operation;
        self.body.clear();
        if self.body.capacity() > SLOT_BODY_RETAIN_BYTES && body.len() < SLOT_BODY_RETAIN_BYTES {
            self.body.shrink_to(SLOT_BODY_RETAIN_BYTES);
        }
        self.body.extend_from_slice(body);
    }

    /// Fills the slot with a refusal of request `request_id` with `status`.
    pub fn set_reject(
        &mut self,
        net: u16,
        conn: u64,
        request_id: u64,
        operation: u16,
        status: u16,
    ) {
        self.kind = SlotKind::Reject;
        self.net = net;
        self.conn = conn;
        self.request_id = request_id;
        self.operation = operation;
        self.status = status;
        self.body.clear();
    }

    pub fn set_tick(&mut self) {
        self.kind = SlotKind::Tick;
        self.body.clear();
    }
}

/// How producers wake the business thread when it sleeps (the disruptor itself only spins).
///
/// The consumer announces `sleeping`, re-checks the ring, then parks; a producer publishes,
/// then looks at `sleeping` and unparks. Both sides use sequentially consistent operations,
/// so at least one of them sees the other and no wake-up is lost.
pub struct Doorbell {
    sleeping: AtomicBool,
    thread: std::sync::OnceLock<Thread>,
}

impl Default for Doorbell {
    fn default() -> Self {
        Self::new()
    }
}

impl Doorbell {
    pub fn new() -> Self {
        Doorbell { sleeping: AtomicBool::new(false), thread: std::sync::OnceLock::new() }
    }

    /// Called by producers after every publish.
    #[inline]
    pub fn ring(&self) {
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.sleeping.load(Ordering::SeqCst) {
            if let Some(thread) = self.thread.get() {
                thread.unpark();
            }
        }
    }

    /// Wakes the consumer unconditionally (shutdown).
    pub fn wake(&self) {
        if let Some(thread) = self.thread.get() {
            thread.unpark();
        }
    }

    /// Called first on the business thread (a single daemon's or a cluster member's): pins it
    /// to `core` if given (a failure is logged; it runs unpinned) and makes it the one the
    /// doorbell wakes.
    pub(crate) fn enter_business_thread(&self, core: Option<usize>) {
        if let Some(core) = core {
            if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
                tracing::warn!(core, "could not pin the business thread; running unpinned");
            }
        }
        self.register_current();
    }

    pub(crate) fn register_current(&self) {
        let _ = self.thread.set(std::thread::current());
    }

    pub(crate) fn set_sleeping(&self, sleeping: bool) {
        self.sleeping.store(sleeping, Ordering::SeqCst);
        std::sync::atomic::fence(Ordering::SeqCst);
    }
}

/// The producer handle type that network threads and the timer use.
pub type Producer = disruptor::MultiProducer<Slot, disruptor::SingleConsumerBarrier>;
/// The consumer side.
pub type Poller = disruptor::EventPoller<Slot, disruptor::MultiProducerBarrier>;

/// The business thread's poller when the resolve stage runs before it.
pub type AfterResolvePoller = disruptor::EventPoller<Slot, disruptor::SingleConsumerBarrier>;

/// Builds the ring: returns the first producer (clone it once per publishing thread) and the
/// poller the business thread consumes.
pub fn build_ring(slots: usize) -> (Producer, Poller) {
    assert!(slots.is_power_of_two() && slots >= 64, "ring slots must be a power of two >= 64");
    let builder = disruptor::build_multi_producer(slots, Slot::default, disruptor::BusySpin);
    let (poller, builder) = builder.new_event_poller();
    (builder.build(), poller)
}

/// Builds the ring with the resolve stage first: the producer, the resolve stage's poller and
/// the business thread's, which sees a slot only after the resolve stage released it.
pub fn build_ring_with_resolve(
    slots: usize,
) -> (Producer, resolve::ResolvePoller, AfterResolvePoller) {
    assert!(slots.is_power_of_two() && slots >= 64, "ring slots must be a power of two >= 64");
    let builder = disruptor::build_multi_producer(slots, Slot::default, disruptor::BusySpin);
    let (resolve, builder) = builder.new_event_poller();
    let (business, builder) = builder.and_then().new_event_poller();
    (builder.build(), resolve, business)
}

/// What the business thread needs of its poller, whichever stage it follows.
pub trait SlotPoller {
    /// Hands at most `limit` available slots to `each`, in order, then releases them; returns
    /// how many.
    fn take_each(
        &mut self,
        limit: u64,
        each: &mut dyn FnMut(&Slot),
    ) -> Result<u64, disruptor::Polling>;
    fn has_available(&self) -> bool;
}

macro_rules! slot_poller {
    ($barrier:ty) => {
        impl SlotPoller for disruptor::EventPoller<Slot, $barrier> {
            fn take_each(
                &mut self,
                limit: u64,
                each: &mut dyn FnMut(&Slot),
            ) -> Result<u64, disruptor::Polling> {
                let mut guard = self.take(limit)?;
                let mut taken = 0u64;
                for slot in &mut guard {
                    each(slot);
                    taken += 1;
                }
                Ok(taken)
            }

            fn has_available(&self) -> bool {
                disruptor::EventPoller::has_available(self)
            }
        }
    };
}

slot_poller!(disruptor::MultiProducerBarrier);
slot_poller!(disruptor::SingleConsumerBarrier);
