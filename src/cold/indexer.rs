//! The indexer thread: follows the journal up to its durable sequence and applies records to
//! the cold index in bounded batches.
//!
//! It reads only records the business thread has published as durable (`durable`), so it
//! never indexes anything a crash could take back. It must not block the business thread: it
//! shares nothing with it but that counter. I/O errors are logged and retried from the
//! index's watermark; a durable record that does not decode is a bug and panics.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{ColdError, ColdIndex};
use crate::journal::JournalFollower;

/// Most transfers in one batch (one atomic write of the index).
pub const BATCH_TRANSFERS_MAX: usize = 64 << 10;
/// Most time spent filling one batch before it is committed. Long enough for a full batch
/// when the indexer is behind (about 15 ms of decoding for 64k transfers here): a large batch
/// is ingested as one table, with a fixed cost of a few fsyncs, so fewer, larger batches keep
/// up better and leave fewer tables for compaction.
pub const BATCH_TIME_MAX: Duration = Duration::from_millis(25);
/// Longest sleep when caught up with the journal.
const IDLE_SLEEP_MAX: Duration = Duration::from_millis(1);
const IDLE_SLEEP_MIN: Duration = Duration::from_micros(50);
/// Longest sleep between retries after an error.
const ERROR_SLEEP_MAX: Duration = Duration::from_millis(100);
/// The filter file (the whole filter: about 1.2 bytes per id of capacity) is rewritten at most
/// once per `FILTER_SAVE_INTERVAL_MIN` when the watermark has moved past it (busy or idle),
/// and when the indexer stops; an open after a crash reads the journal records after it (at
/// most that interval of history) to bring it up to date.
const FILTER_SAVE_INTERVAL_MIN: Duration = Duration::from_secs(5);

/// Spawns and runs the indexer thread.
pub struct Indexer;

impl Indexer {
    /// Starts the thread: it indexes journal records of `data_dir` from the index's watermark
    /// on, never past `durable`, until `stop` is set (then it saves the filter and returns).
    pub fn spawn(
        index: ColdIndex,
        data_dir: PathBuf,
        durable: Arc<AtomicU64>,
        stop: Arc<AtomicBool>,
    ) -> JoinHandle<()> {
        std::thread::Builder::new()
            .name("cold-indexer".into())
            .spawn(move || run(&index, &data_dir, &durable, &stop))
            .expect("spawning the cold indexer thread")
    }
}

fn run(index: &ColdIndex, data_dir: &std::path::Path, durable: &AtomicU64, stop: &AtomicBool) {
    let mut follower: Option<JournalFollower> = None;
    let mut idle = IDLE_SLEEP_MIN;
    let mut error_sleep = IDLE_SLEEP_MAX;
    // The first save happens at once: a crash soon after a start finds a file.
    let mut saved_time =
        Instant::now().checked_sub(FILTER_SAVE_INTERVAL_MIN).unwrap_or_else(Instant::now);
    while !stop.load(Ordering::Acquire) {
        match step(index, data_dir, durable, &mut follower) {
            Ok(0) => {
                error_sleep = IDLE_SLEEP_MAX;
                std::thread::sleep(idle);
                idle = (idle * 2).min(IDLE_SLEEP_MAX);
            }
            Ok(_) => {
                error_sleep = IDLE_SLEEP_MAX;
                idle = IDLE_SLEEP_MIN;
            }
            Err(e) => {
                tracing::error!("cold index: {e}; retrying from the watermark");
                // The follower may be past what was committed: restart it at the watermark.
                follower = None;
                std::thread::sleep(error_sleep);
                error_sleep = (error_sleep * 2).min(ERROR_SLEEP_MAX);
            }
        }
        // Busy or idle alike: an idle indexer saves what the last busy interval added, and
        // one started on a file older than its watermark saves at once.
        if saved_time.elapsed() >= FILTER_SAVE_INTERVAL_MIN && index.filter_file_behind() {
            saved_time = Instant::now();
            if let Err(e) = index.save_filter() {
                tracing::error!("cold index: saving the filter: {e}");
            }
        }
    }
    if index.filter_file_behind() {
        if let Err(e) = index.save_filter() {
            tracing::error!("cold index: saving the filter: {e}");
        }
    }
}

/// Indexes one batch; returns the records indexed (0 when caught up).
fn step(
    index: &ColdIndex,
    data_dir: &std::path::Path,
    durable: &AtomicU64,
    follower: &mut Option<JournalFollower>,
) -> Result<usize, ColdError> {
    let up_to = durable.load(Ordering::Acquire);
    let next = index.watermark().sequence + 1;
    if next > up_to {
        return Ok(0);
    }
    let follower = match follower {
        Some(f) => f,
        None => follower.insert(JournalFollower::open(data_dir, next)?),
    };
    debug_assert_eq!(follower.next_sequence(), next);
    let started = Instant::now();
    let mut batch = index.batch();
    while batch.transfers() < BATCH_TRANSFERS_MAX && started.elapsed() < BATCH_TIME_MAX {
        let Some(record) = follower.next_record(up_to) else {
            break;
        };
        let record = record?;
        if record.body.is_empty() {
            batch.add_empty(record.seq)?;
            continue;
        }
        let event = crate::event::access(record.body).unwrap_or_else(|e| {
            panic!(
                "journal record {} (segment {}, offset {}) passed its checksum but does not \
                 decode as an event: {e}",
                record.seq, record.segment, record.offset
            )
        });
        batch.add(record.seq, event)?;
    }
    let records = batch.records();
    batch.commit()?;
    Ok(records)
}
