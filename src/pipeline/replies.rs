//! Replies travel from the business thread to a network thread as encoded frames.
//!
//! The business thread fills a local [`ReplyBatch`] per network thread during a batch, and
//! after the flush appends it to that thread's shared [`ReplySink`] under one lock, then
//! wakes the thread's `mio::Waker` (queue first, then wake: wakes coalesce). The network
//! thread swaps the shared batch with its own empty one, so both sides keep their buffers'
//! capacity and nothing is allocated per reply once warm.

use std::sync::Mutex;

/// Encoded reply frames and, for each, the connection it belongs to.
#[derive(Default)]
pub struct ReplyBatch {
    pub frames: Vec<u8>,
    pub entries: Vec<ReplyEntry>,
}

/// One reply frame inside a [`ReplyBatch`].
#[derive(Clone, Copy, Debug)]
pub struct ReplyEntry {
    pub conn: u64,
    /// Length of the frame in `frames` (frames are stored back to back, in order).
    pub len: u32,
}

impl ReplyBatch {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn clear(&mut self) {
        self.frames.clear();
        self.entries.clear();
    }

    /// Moves every frame of `other` to the end of `self`, leaving `other` empty.
    pub fn append(&mut self, other: &mut ReplyBatch) {
        if self.is_empty() {
            std::mem::swap(self, other);
        } else {
            self.frames.extend_from_slice(&other.frames);
            self.entries.extend_from_slice(&other.entries);
        }
        other.clear();
    }

    /// Iterates `(conn, frame bytes)` in order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &[u8])> {
        let mut offset = 0usize;
        self.entries.iter().map(move |e| {
            let frame = &self.frames[offset..offset + e.len as usize];
            offset += e.len as usize;
            (e.conn, frame)
        })
    }
}

/// The queue of one network thread, and how to wake it.
pub struct ReplySink {
    pub queue: Mutex<ReplyBatch>,
    pub waker: mio::Waker,
}

impl ReplySink {
    pub fn new(waker: mio::Waker) -> Self {
        ReplySink { queue: Mutex::new(ReplyBatch::default()), waker }
    }

    /// Hands `batch` over (leaving it empty) and wakes the network thread.
    pub fn deliver(&self, batch: &mut ReplyBatch) {
        if batch.is_empty() {
            return;
        }
        self.queue.lock().expect("reply queue lock").append(batch);
        // A failed wake means the network thread is gone (shutdown); its replies go nowhere.
        let _ = self.waker.wake();
    }

    /// Takes everything queued, swapping with `into` (which must be empty).
    pub fn take(&self, into: &mut ReplyBatch) {
        debug_assert!(into.is_empty());
        std::mem::swap(&mut *self.queue.lock().expect("reply queue lock"), into);
    }
}
