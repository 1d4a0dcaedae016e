//! Fault injection for tests: make the Nth append, flush or step of a cut fail with a chosen
//! errno.
//!
//! Settable at runtime through atomics, so a test can switch faults on and off while a journal
//! (or a daemon holding one) runs. Production code passes no plan and pays one branch.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};

/// One injection site (append or flush).
#[derive(Debug, Default)]
struct Site {
    /// Calls left before the failure; 0 = disarmed.
    countdown: AtomicU64,
    /// Keep failing once triggered, until `clear`.
    sticky: AtomicBool,
    triggered: AtomicBool,
    errno: AtomicI32,
    /// Failures injected so far.
    injected: AtomicU64,
}

impl Site {
    fn arm(&self, nth: u64, errno: i32, sticky: bool) {
        self.errno.store(errno, Ordering::SeqCst);
        self.sticky.store(sticky, Ordering::SeqCst);
        self.triggered.store(false, Ordering::SeqCst);
        self.countdown.store(nth, Ordering::SeqCst);
    }

    fn clear(&self) {
        self.countdown.store(0, Ordering::SeqCst);
        self.triggered.store(false, Ordering::SeqCst);
    }

    fn check(&self) -> io::Result<()> {
        let fail = if self.triggered.load(Ordering::SeqCst) {
            true
        } else {
            let left = self.countdown.load(Ordering::SeqCst);
            if left == 0 {
                return Ok(());
            }
            self.countdown.store(left - 1, Ordering::SeqCst);
            if left == 1 && self.sticky.load(Ordering::SeqCst) {
                self.triggered.store(true, Ordering::SeqCst);
            }
            left == 1
        };
        if !fail {
            return Ok(());
        }
        self.injected.fetch_add(1, Ordering::SeqCst);
        Err(io::Error::from_raw_os_error(self.errno.load(Ordering::SeqCst)))
    }
}

/// A plan of injected I/O failures, shared with the journal through `JournalConfig::fault`.
#[derive(Debug, Default)]
pub struct FaultPlan {
    append: Site,
    flush: Site,
    /// Steps of a replica's cut (`Journal::cut_after`).
    cut: Site,
    /// Not a journal fault: asks the business thread to panic (a bug on demand, to test that
    /// a panic aborts the process).
    panic: AtomicBool,
}

impl FaultPlan {
    /// `ENOSPC`, for `fail_*` calls.
    pub const ENOSPC: i32 = libc::ENOSPC;
    /// `EIO`, for `fail_*` calls.
    pub const EIO: i32 = libc::EIO;

    pub fn new() -> Self {
        Self::default()
    }

    /// The `nth` append from now (1 = the next one) fails with `errno`; later ones succeed.
    pub fn fail_append(&self, nth: u64, errno: i32) {
        self.append.arm(nth, errno, false);
    }

    /// Every append from the `nth` one on fails with `errno`, until [`FaultPlan::clear`].
    pub fn fail_appends_from(&self, nth: u64, errno: i32) {
        self.append.arm(nth, errno, true);
    }

    /// The `nth` flush from now (1 = the next one that has something to write) fails.
    pub fn fail_flush(&self, nth: u64, errno: i32) {
        self.flush.arm(nth, errno, false);
    }

    /// Every flush from the `nth` one on fails with `errno`, until [`FaultPlan::clear`].
    pub fn fail_flushes_from(&self, nth: u64, errno: i32) {
        self.flush.arm(nth, errno, true);
    }

    /// The `nth` step of the next cuts (1 = the first: the superblock; then each segment
    /// removal, the directory sync, the zeroing) fails, as if the process stopped right
    /// before it: the steps before it are on disk, nothing after.
    pub fn fail_cut_step(&self, nth: u64, errno: i32) {
        self.cut.arm(nth, errno, false);
    }

    /// Disarms every fault.
    pub fn clear(&self) {
        self.append.clear();
        self.flush.clear();
        self.cut.clear();
        self.panic.store(false, Ordering::SeqCst);
    }

    /// Makes the business thread panic on the next ring entry it handles.
    pub fn request_panic(&self) {
        self.panic.store(true, Ordering::SeqCst);
    }

    /// Whether [`FaultPlan::request_panic`] was called (and not cleared).
    pub fn panic_requested(&self) -> bool {
        self.panic.load(Ordering::Relaxed)
    }

    /// Failures injected so far (appends, flushes).
    pub fn injected(&self) -> (u64, u64) {
        (self.append.injected.load(Ordering::SeqCst), self.flush.injected.load(Ordering::SeqCst))
    }

    pub(crate) fn on_append(&self) -> io::Result<()> {
        self.append.check()
    }

    pub(crate) fn on_flush(&self) -> io::Result<()> {
        self.flush.check()
    }

    pub(crate) fn on_cut_step(&self) -> io::Result<()> {
        self.cut.check()
    }
}
