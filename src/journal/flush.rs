//! A flush split in two: [`Journal::start_flush`](super::Journal::start_flush) takes what a
//! flush needs (the active segment's file, the dirty range, the sequence it covers, the
//! durability slot it carries) on the appending thread, and [`FlushJob::run`] makes it durable
//! on any thread, while the appending thread goes on appending.
//! [`Journal::mark_durable`](super::Journal::mark_durable) then records the outcome there. The
//! synchronous `Journal::flush` is the three in a row.
//!
//! A job never touches the journal's bookkeeping or its map, only the file (and, for `msync`,
//! the pages of its range), so appends may run concurrently with it: the pages they dirty may
//! or may not be written by the job, which is harmless (they are not covered until a later job
//! says so). A slot written into page 0 while a job syncs may reach the disk torn; a torn slot
//! fails its checksum and the older slots stand (journal-format.md), and the job that wrote it
//! syncs it whole.

use std::fs::File;
use std::io;
use std::sync::Arc;

use super::{FaultPlan, FlushMode};

/// What a successful flush made true on disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Durable {
    /// Every record up to this sequence is durable...
    pub sequence: u64,
    /// ...and this is the checksum of record `sequence`.
    pub checksum: u128,
    /// A durability slot claiming records up to this sequence is durable (0: no slot).
    pub claimed: u64,
}

/// Everything one flush needs, detached from the journal so that another thread can run it.
pub struct FlushJob {
    pub(super) file: Arc<File>,
    pub(super) mode: FlushMode,
    /// Start address (in the active segment's map) and length of the range to `msync`.
    pub(super) msync_addr: usize,
    pub(super) msync_len: usize,
    /// Index of the segment the job flushes.
    pub(super) segment: u64,
    /// True once `run` returns `Ok`.
    pub(super) durable: Durable,
    pub(super) fault: Option<Arc<FaultPlan>>,
}

impl std::fmt::Debug for FlushJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlushJob")
            .field("segment", &self.segment)
            .field("durable", &self.durable)
            .finish()
    }
}

impl FlushJob {
    /// The last sequence this job makes durable.
    pub fn sequence(&self) -> u64 {
        self.durable.sequence
    }

    /// What is true on disk once this job has run.
    pub fn durable(&self) -> Durable {
        self.durable
    }

    /// Index of the segment it flushes (for error messages: `segment_path`).
    pub fn segment(&self) -> u64 {
        self.segment
    }

    /// Makes the job's records durable: one `fdatasync` (or `msync`). Blocks for the disk.
    pub fn run(&self) -> io::Result<()> {
        if let Some(fault) = &self.fault {
            fault.on_flush()?;
        }
        match self.mode {
            FlushMode::Fdatasync => self.file.sync_data(),
            FlushMode::Msync => {
                if self.msync_len == 0 {
                    return Ok(());
                }
                let page = page_size();
                let start = self.msync_addr - self.msync_addr % page;
                let len = self.msync_len + self.msync_addr % page;
                // SAFETY: msync reads no memory of this process; the range lies in the active
                // segment's map, which the journal keeps mapped while jobs run (the pipeline
                // waits for its job before it drops a journal). Were it unmapped, the kernel
                // would answer ENOMEM, a flush error like any other.
                let rc = unsafe { libc::msync(start as *mut libc::c_void, len, libc::MS_SYNC) };
                if rc != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            }
        }
    }

    /// Makes this job (started later) also cover `earlier`, which was never run: an
    /// `fdatasync` of the same file covers it anyway, an `msync` range grows down to it. A job
    /// of an earlier segment needs nothing: a roll-over flushes the sealed segment before the
    /// next one exists.
    pub fn absorb(&mut self, earlier: FlushJob) {
        assert!(earlier.durable.sequence <= self.durable.sequence, "jobs are absorbed in order");
        // The earlier job's slot is in page 0 of the same file: an `fdatasync` writes it, and
        // an `msync` range grows down to it below.
        self.durable.claimed = self.durable.claimed.max(earlier.durable.claimed);
        assert!(earlier.segment <= self.segment, "segments only grow");
        if earlier.segment == self.segment && self.mode == FlushMode::Msync {
            let end = self.msync_addr + self.msync_len;
            self.msync_addr = self.msync_addr.min(earlier.msync_addr);
            self.msync_len = end - self.msync_addr;
        }
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no memory effects.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).ok().filter(|s| s.is_power_of_two()).unwrap_or(4096)
}
