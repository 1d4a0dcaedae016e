//! The cold index: finished history on disk, derived from the journal.
//!
//! Owns `DATA/index/`: a fjall store (`DATA/index/store/`) and the saved id filters
//! (`DATA/index/filter`). It holds what the business thread need not keep in memory: transfers
//! with their state, per-account transfer lists, balance history rows of `history` accounts and
//! remembered failed ids. It is maintained off the business thread by [`Indexer`] from durable
//! journal records, and read from any thread. The journal stays the only source of truth: the
//! index can be deleted at any time and is rebuilt from it.
//!
//! It must not: write the journal, decide anything the state machine decides (it copies the
//! outcomes that journal events carry), or claim in its watermark a record whose changes are not
//! all visible, before or after a crash (the watermark is a key of the same atomic write as those
//! changes: see "Crash consistency" below).
//!
//! One fjall keyspace, `index`; the first key byte says what a key is (integers big-endian, so
//! byte order is numeric order and each kind is one contiguous key range):
//! - `0` meta: `0 ‖ "version"` → u32, `0 ‖ "watermark"` → 4 × u64 (sequence, transfers, failed
//!   ids, timestamp).
//! - `1` transfers: `1 ‖ id` → 128 record bytes ([`Transfer::to_bytes`]) + 1 [`TransferState`]
//!   byte.
//! - `2` account transfers: `2 ‖ account id ‖ timestamp` → transfer id + 1 side byte (1 debit,
//!   2 credit).
//! - `3` balances: `3 ‖ account id ‖ timestamp` → 128 [`AccountBalance`] bytes + 1 side byte.
//! - `4` accounts: `4 ‖ id` → flags (u16), `history` accounts only.
//! - `5` failed: `5 ‖ id` → result code (u32).
//!
//! Crash consistency. A batch of records is written as one unit that carries its watermark:
//! either a fjall write batch (through fjall's journal, into the memtable) or, for a large
//! batch, one sorted run ingested directly as a table (no journal, no memtable: see
//! [`ColdConfig::ingest_transfers_min`]). Units survive a crash (SIGKILL or power loss) as a
//! prefix of the order they were written in, and the newest surviving unit's watermark is the
//! one read back (it has the highest fjall sequence number), so the watermark never claims a
//! record whose changes were lost:
//! - a write batch is atomic in fjall's journal, and journal recovery keeps a prefix of the
//!   batches written after the newest table;
//! - an ingestion first flushes the memtable (every earlier write batch) to a table, fsynced and
//!   registered in an fsynced version, then writes and fsyncs its own table and registers it in
//!   the next version with a higher sequence number: it survives only with everything before it;
//! - a single keyspace is what makes this hold: fjall flushes keyspaces independently, and an
//!   ingestion is per keyspace, so data and watermark in different keyspaces could be persisted
//!   in either order.

mod filter;
mod indexer;
#[cfg(test)]
mod tests;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use fjall::{Database, Keyspace, KeyspaceCreateOptions};

use crate::event::{ArchivedBalancePair, ArchivedBalances, ArchivedEvent};
use crate::journal::JournalFollower;
use crate::state_machine::{FilterScan, TransferState};
use crate::types::{Account, AccountBalance, AccountFilter, AccountFlags, Transfer, TransferFlags};

use filter::IdFilter;
pub use indexer::Indexer;

/// Name of the index directory inside the data directory.
pub const INDEX_DIR: &str = "index";
const STORE_DIR: &str = "store";
const FILTER_FILE: &str = "filter";

/// Most bytes of fjall journal kept before memtables are flushed (fjall's minimum).
const JOURNALING_BYTES_MAX: u64 = 64 << 20;

/// Version of the index layout, in the meta key `version`: an index of another version is
/// rebuilt. 1: a keyspace per kind of entry; 2: one keyspace, the kind in the first key byte.
pub const FORMAT_VERSION: u32 = 2;

/// The one keyspace of the store.
const KEYSPACE: &str = "index";

/// First key byte: what the key is.
const KIND_META: u8 = 0;
const KIND_TRANSFER: u8 = 1;
const KIND_ACCOUNT_TRANSFER: u8 = 2;
const KIND_BALANCE: u8 = 3;
const KIND_ACCOUNT: u8 = 4;
const KIND_FAILED: u8 = 5;

const META_VERSION: &[u8] = b"\x00version";
const META_WATERMARK: &[u8] = b"\x00watermark";
const _: () = assert!(META_VERSION[0] == KIND_META && META_WATERMARK[0] == KIND_META);

/// Most tables in fjall's level 0 before an ingestion waits for compaction to merge them: a
/// point read looks at every one of them (through its bloom filter) and a page read merges them.
const L0_TABLES_MAX: usize = 24;
/// Longest wait for compaction before ingesting anyway.
const L0_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(2);

/// Bytes of a `transfers` value: the record and its state.
const TRANSFER_VALUE_SIZE: usize = Transfer::SIZE + 1;
/// Bytes of an `account_transfers` value: the transfer id and the side.
const ACCOUNT_TRANSFER_VALUE_SIZE: usize = 16 + 1;
/// Bytes of a `balances` value: the row and the side.
const BALANCE_VALUE_SIZE: usize = AccountBalance::SIZE + 1;
/// Bytes of a kind ‖ id key.
const ID_KEY_SIZE: usize = 1 + 16;
/// Bytes of a kind ‖ account ‖ timestamp key.
const ACCOUNT_KEY_SIZE: usize = 1 + 16 + 8;

/// Side byte: the account was the debit account of the transfer.
pub const SIDE_DEBIT: u8 = 1;
/// Side byte: the account was the credit account of the transfer.
pub const SIDE_CREDIT: u8 = 2;

/// How far the index goes: everything of journal records `1..=sequence`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Watermark {
    /// Last journal sequence fully indexed.
    pub sequence: u64,
    /// Transfers created in records `1..=sequence`: the next transfer's creation number.
    pub transfers: u64,
    /// Failed ids remembered in records `1..=sequence`.
    pub failed: u64,
    /// The timestamp of record `sequence`'s event (0 for none): every record of the ledger up
    /// to this timestamp is in the index, which is what eviction from memory goes by.
    pub timestamp: u64,
}

const WATERMARK_SIZE: usize = 32;

impl Watermark {
    fn encode(&self) -> [u8; WATERMARK_SIZE] {
        let mut b = [0u8; WATERMARK_SIZE];
        b[0..8].copy_from_slice(&self.sequence.to_be_bytes());
        b[8..16].copy_from_slice(&self.transfers.to_be_bytes());
        b[16..24].copy_from_slice(&self.failed.to_be_bytes());
        b[24..32].copy_from_slice(&self.timestamp.to_be_bytes());
        b
    }

    fn decode(b: &[u8]) -> Option<Watermark> {
        let b: &[u8; WATERMARK_SIZE] = b.try_into().ok()?;
        let be = |at: usize| u64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"));
        Some(Watermark { sequence: be(0), transfers: be(8), failed: be(16), timestamp: be(24) })
    }
}

/// Sizes of the index.
#[derive(Clone, Debug)]
pub struct ColdConfig {
    /// Transfers the id filter is sized for (about 1% false positives up to this many).
    pub transfers_max: u64,
    /// Failed ids the failed-id filter is sized for.
    pub failed_ids_max: u64,
    /// fjall block cache.
    pub cache_bytes: u64,
    /// fjall background threads (flushes and compactions).
    pub worker_threads: usize,
    /// Largest memtable before it is flushed to a table.
    pub memtable_bytes: u64,
    /// A batch creating at least this many transfers is written as one table (fjall's bulk
    /// ingestion: no journal, no memtable, but fsyncs of its own); smaller ones go through
    /// fjall's journal and memtable. 0 ingests every batch.
    pub ingest_transfers_min: usize,
}

impl Default for ColdConfig {
    fn default() -> Self {
        ColdConfig {
            transfers_max: 1 << 20,
            failed_ids_max: 1 << 16,
            cache_bytes: 64 << 20,
            worker_threads: 1,
            memtable_bytes: 16 << 20,
            ingest_transfers_min: 4 << 10,
        }
    }
}

/// Errors of the index.
#[derive(Debug, thiserror::Error)]
pub enum ColdError {
    #[error("cold index store: {0}")]
    Store(#[from] fjall::Error),
    #[error("cold index I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The index holds something it cannot have written, or misses what it must hold.
    #[error("cold index: {0}")]
    Corrupt(String),
    /// Records must be applied in journal order, each once.
    #[error("cold index: record {found} applied where record {expected} was expected")]
    Sequence { expected: u64, found: u64 },
    #[error("cold index: reading the journal: {0}")]
    Journal(#[from] crate::journal::JournalError),
}

/// What only the writer touches.
struct Writer {
    /// Ids of `history` accounts (persisted as `accounts` keys).
    history: foldhash::HashSet<u128>,
    /// The writes of the batch being built, kept between batches for their capacity.
    writes: Writes,
}

/// Writes of one batch, each kind sorted by key at commit.
#[derive(Default)]
struct Writes {
    /// Transfers whose state may still change in this batch (created pending here, or
    /// posted, voided or expired here), written at commit: a key is written once per batch.
    staged: foldhash::HashMap<u128, [u8; TRANSFER_VALUE_SIZE]>,
    transfers: Vec<(u128, [u8; TRANSFER_VALUE_SIZE])>,
    account_transfers: Vec<(AccountKey, [u8; ACCOUNT_TRANSFER_VALUE_SIZE])>,
    balances: Vec<(AccountKey, [u8; BALANCE_VALUE_SIZE])>,
    accounts: Vec<(u128, u16)>,
    failed: Vec<(u128, u32)>,
}

impl Writes {
    fn clear(&mut self) {
        self.staged.clear();
        self.transfers.clear();
        self.account_transfers.clear();
        self.balances.clear();
        self.accounts.clear();
        self.failed.clear();
    }
}

/// Account id and timestamp, in key order.
type AccountKey = (u128, u64);

struct Inner {
    dir: PathBuf,
    db: Database,
    ks: Keyspace,
    ingest_transfers_min: usize,
    /// What is indexed and visible to reads; moves only after a batch commits.
    watermark: Mutex<Watermark>,
    transfer_filter: IdFilter,
    failed_filter: IdFilter,
    writer: Mutex<Writer>,
    /// One save of the filter file at a time (they share its temporary file).
    filter_save: Mutex<()>,
    /// The watermark sequence the filter file covers (0: no usable file); behind the
    /// watermark, an open after a crash reads the journal records in between.
    filter_saved: AtomicU64,
}

/// The index: cheap to clone, shared by the indexer and any number of readers.
#[derive(Clone)]
pub struct ColdIndex {
    inner: Arc<Inner>,
}

const _: fn() = || {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<ColdIndex>();
};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks leaves plain data in a consistent state.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ColdIndex {
    /// Opens (or creates) `data_dir/index`. A damaged or unreadable index, or one of another
    /// version, is removed and started empty (watermark 0): the indexer rebuilds it from the
    /// journal. The id filters are loaded from their file and brought up to the watermark from
    /// the journal, or rebuilt from the index keys when the file is missing or damaged.
    pub fn open(data_dir: &Path, config: &ColdConfig) -> Result<ColdIndex, ColdError> {
        let dir = data_dir.join(INDEX_DIR);
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ColdError::Io { path, source }
        };
        crate::journal::private_dir(&dir).map_err(io(&dir))?;
        let started = std::time::Instant::now();
        let opened = match open_store(&dir, config) {
            Ok(opened) => opened,
            Err(reason) => {
                tracing::warn!(
                    index = %dir.display(),
                    "cold index unusable ({reason}): removing it; it is rebuilt from the journal"
                );
                fs::remove_dir_all(&dir).map_err(io(&dir))?;
                crate::journal::private_dir(&dir).map_err(io(&dir))?;
                open_store(&dir, config).map_err(|reason| {
                    ColdError::Corrupt(format!("a new index in {} fails: {reason}", dir.display()))
                })?
            }
        };
        let (db, ks, watermark, history) = opened;
        let store_ms = started.elapsed().as_millis() as u64;
        let filter_path = dir.join(FILTER_FILE);
        let (transfer_filter, failed_filter, filter_saved) = match load_filters(
            &filter_path,
            data_dir,
            config,
            watermark,
        ) {
            Ok(filters) => filters,
            Err(reason) => {
                if watermark.sequence > 0 {
                    tracing::warn!(
                        filter = %filter_path.display(),
                        "cold index filter unusable ({reason}): rebuilding it from the index keys"
                    );
                }
                let (transfers, failed) = rebuild_filters(&ks, config)?;
                (transfers, failed, 0)
            }
        };
        tracing::info!(
            sequence = watermark.sequence,
            store_ms,
            filter_ms = started.elapsed().as_millis() as u64 - store_ms,
            "cold index opened"
        );
        Ok(ColdIndex {
            inner: Arc::new(Inner {
                dir,
                db,
                ks,
                ingest_transfers_min: config.ingest_transfers_min,
                watermark: Mutex::new(watermark),
                transfer_filter,
                failed_filter,
                writer: Mutex::new(Writer { history, writes: Writes::default() }),
                filter_save: Mutex::new(()),
                filter_saved: AtomicU64::new(filter_saved),
            }),
        })
    }

    /// What is indexed and visible to reads.
    pub fn watermark(&self) -> Watermark {
        *lock(&self.inner.watermark)
    }

    /// Applies one journal record (the next one: `seq == watermark().sequence + 1`).
    pub fn apply(&self, seq: u64, event: &ArchivedEvent) -> Result<(), ColdError> {
        let mut batch = self.batch();
        batch.add(seq, event)?;
        batch.commit().map(|_| ())
    }

    /// A batch of records applied together: one atomic write (module docs, "Crash
    /// consistency"), one watermark move. Holds the writer lock until it is committed or
    /// dropped (dropping discards it).
    pub fn batch(&self) -> ColdBatch<'_> {
        let mut writer = lock(&self.inner.writer);
        // A batch dropped without a commit leaves its writes behind.
        writer.writes.clear();
        let watermark = self.watermark();
        ColdBatch { index: self, writer, watermark, records: 0, transfers: 0, broken: false }
    }

    /// The transfer and its state, if indexed.
    pub fn transfer(&self, id: u128) -> Result<Option<(Transfer, TransferState)>, ColdError> {
        let Some(value) = self.inner.ks.get(id_key(KIND_TRANSFER, id))? else {
            return Ok(None);
        };
        decode_transfer(id, &value).map(Some)
    }

    /// The result code a failed id was remembered with, if indexed.
    pub fn failed(&self, id: u128) -> Result<Option<u32>, ColdError> {
        let Some(value) = self.inner.ks.get(id_key(KIND_FAILED, id))? else {
            return Ok(None);
        };
        let code: [u8; 4] = (*value).try_into().map_err(|_| {
            ColdError::Corrupt(format!("failed id {id}: value of {} bytes", value.len()))
        })?;
        Ok(Some(u32::from_be_bytes(code)))
    }

    /// False only when transfer `id` is certainly not in the index (no disk access).
    pub fn may_contain_transfer(&self, id: u128) -> bool {
        self.inner.transfer_filter.contains(id)
    }

    /// False only when failed id `id` is certainly not in the index (no disk access).
    pub fn may_contain_failed(&self, id: u128) -> bool {
        self.inner.failed_filter.contains(id)
    }

    /// As [`crate::state_machine::StateMachine::get_account_transfers`], from the index.
    pub fn account_transfers(
        &self,
        filter: &AccountFilter,
        out: &mut Vec<Transfer>,
    ) -> Result<(), ColdError> {
        out.clear();
        let Some(scan) = FilterScan::of(filter) else {
            return Ok(());
        };
        let (lo, hi) = scan.keys(KIND_ACCOUNT_TRANSFER, filter.account_id);
        let range = self.inner.ks.range(lo..=hi);
        let mut visit = |guard: fjall::Guard| -> Result<bool, ColdError> {
            let (key, value) = guard.into_inner()?;
            let value: &[u8; ACCOUNT_TRANSFER_VALUE_SIZE] = (*value).try_into().map_err(|_| {
                ColdError::Corrupt(format!(
                    "account transfer {key:?}: value of {} bytes",
                    value.len()
                ))
            })?;
            if !scan.wants(value[16]) {
                return Ok(true);
            }
            let id = u128::from_be_bytes(value[..16].try_into().expect("16 bytes"));
            let (t, _) = self.transfer(id)?.ok_or_else(|| {
                ColdError::Corrupt(format!("account list names transfer {id}, which is missing"))
            })?;
            out.push(t);
            Ok(out.len() < scan.limit)
        };
        walk(range, scan.reversed, &mut visit)
    }

    /// As [`crate::state_machine::StateMachine::get_account_balances`], from the index.
    pub fn account_balances(
        &self,
        filter: &AccountFilter,
        out: &mut Vec<AccountBalance>,
    ) -> Result<(), ColdError> {
        out.clear();
        let Some(scan) = FilterScan::of(filter) else {
            return Ok(());
        };
        let (lo, hi) = scan.keys(KIND_BALANCE, filter.account_id);
        let range = self.inner.ks.range(lo..=hi);
        let mut visit = |guard: fjall::Guard| -> Result<bool, ColdError> {
            let (key, value) = guard.into_inner()?;
            if value.len() != BALANCE_VALUE_SIZE {
                return Err(ColdError::Corrupt(format!(
                    "balance row {key:?}: value of {} bytes",
                    value.len()
                )));
            }
            if scan.wants(value[AccountBalance::SIZE]) {
                out.push(AccountBalance::read_from(&value[..AccountBalance::SIZE]));
            }
            Ok(out.len() < scan.limit)
        };
        walk(range, scan.reversed, &mut visit)
    }

    /// Saves the id filters with the watermark they cover (see `filter`), so that the next
    /// open does not rebuild them. Called by the indexer.
    pub fn save_filter(&self) -> Result<(), ColdError> {
        let _one_at_a_time = lock(&self.inner.filter_save);
        // Ids are inserted before the watermark moves: the bits read after this read of the
        // watermark hold every id it covers.
        let watermark = self.watermark();
        let path = self.inner.dir.join(FILTER_FILE);
        filter::save(&path, watermark, &self.inner.transfer_filter, &self.inner.failed_filter)
            .map_err(|source| ColdError::Io { path, source })?;
        self.inner.filter_saved.store(watermark.sequence, Ordering::Release);
        Ok(())
    }

    /// The filter file is older than the watermark: an open after a crash would read the
    /// journal records in between (see [`ColdIndex::save_filter`]).
    pub fn filter_file_behind(&self) -> bool {
        self.inner.filter_saved.load(Ordering::Acquire) < self.watermark().sequence
    }

    /// fjall's background work in progress: memtables waiting to be flushed and compactions
    /// running (for benchmarks and metrics: reads are slower while it runs).
    pub fn background_work(&self) -> (usize, usize) {
        (self.inner.db.outstanding_flushes(), self.inner.db.active_compactions())
    }

    /// The index directory (`DATA/index`).
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }
}

/// Visits the entries of a key range in the filter's order until `visit` says stop.
fn walk<G>(
    range: impl DoubleEndedIterator<Item = G>,
    reversed: bool,
    visit: &mut dyn FnMut(G) -> Result<bool, ColdError>,
) -> Result<(), ColdError> {
    if reversed {
        for guard in range.rev() {
            if !visit(guard)? {
                break;
            }
        }
    } else {
        for guard in range {
            if !visit(guard)? {
                break;
            }
        }
    }
    Ok(())
}

/// The index's side of a validated filter (the state machine's rules, [`FilterScan`]).
trait ScanKeys {
    /// The first and last keys of the account's range of entries of `kind`.
    fn keys(&self, kind: u8, account: u128) -> ([u8; ACCOUNT_KEY_SIZE], [u8; ACCOUNT_KEY_SIZE]);
    /// Whether an entry on `side` is wanted.
    fn wants(&self, side: u8) -> bool;
}

impl ScanKeys for FilterScan {
    fn keys(&self, kind: u8, account: u128) -> ([u8; ACCOUNT_KEY_SIZE], [u8; ACCOUNT_KEY_SIZE]) {
        (account_key(kind, (account, self.min)), account_key(kind, (account, self.max)))
    }

    fn wants(&self, side: u8) -> bool {
        (self.debits && side == SIDE_DEBIT) || (self.credits && side == SIDE_CREDIT)
    }
}

fn account_key(kind: u8, (account, timestamp): AccountKey) -> [u8; ACCOUNT_KEY_SIZE] {
    let mut k = [0u8; ACCOUNT_KEY_SIZE];
    k[0] = kind;
    k[1..17].copy_from_slice(&account.to_be_bytes());
    k[17..].copy_from_slice(&timestamp.to_be_bytes());
    k
}

fn id_key(kind: u8, id: u128) -> [u8; ID_KEY_SIZE] {
    let mut k = [0u8; ID_KEY_SIZE];
    k[0] = kind;
    k[1..].copy_from_slice(&id.to_be_bytes());
    k
}

/// The id of a kind ‖ id key.
fn key_id(key: &[u8]) -> Option<u128> {
    let id: [u8; 16] = key.get(1..)?.try_into().ok()?;
    Some(u128::from_be_bytes(id))
}

fn decode_transfer(id: u128, value: &[u8]) -> Result<(Transfer, TransferState), ColdError> {
    if value.len() != TRANSFER_VALUE_SIZE {
        return Err(ColdError::Corrupt(format!("transfer {id}: value of {} bytes", value.len())));
    }
    let state = TransferState::from_u8(value[Transfer::SIZE]).ok_or_else(|| {
        ColdError::Corrupt(format!("transfer {id}: unknown state {}", value[Transfer::SIZE]))
    })?;
    let t = Transfer::read_from(&value[..Transfer::SIZE]);
    if t.id != id {
        return Err(ColdError::Corrupt(format!("transfer key {id} holds transfer {}", t.id)));
    }
    Ok((t, state))
}

fn transfer_value(t: &Transfer, state: TransferState) -> [u8; TRANSFER_VALUE_SIZE] {
    let mut v = [0u8; TRANSFER_VALUE_SIZE];
    t.write_to(&mut v[..Transfer::SIZE]);
    v[Transfer::SIZE] = state as u8;
    v
}

fn balance_value(b: &ArchivedBalances, timestamp: u64, side: u8) -> [u8; BALANCE_VALUE_SIZE] {
    let row = AccountBalance {
        debits_pending: b.debits_pending.to_native(),
        debits_posted: b.debits_posted.to_native(),
        credits_pending: b.credits_pending.to_native(),
        credits_posted: b.credits_posted.to_native(),
        timestamp,
        reserved: [0; 56],
    };
    let mut v = [0u8; BALANCE_VALUE_SIZE];
    row.write_to(&mut v[..AccountBalance::SIZE]);
    v[AccountBalance::SIZE] = side;
    v
}

type Opened = (Database, Keyspace, Watermark, foldhash::HashSet<u128>);

/// Opens the store and checks its version and watermark; `Err` says why it is unusable.
fn open_store(dir: &Path, config: &ColdConfig) -> Result<Opened, String> {
    let db = Database::builder(dir.join(STORE_DIR))
        .cache_size(config.cache_bytes)
        .worker_threads(config.worker_threads.max(1))
        // What a restart after a crash replays into memtables before the index opens: the
        // smallest fjall allows (flushes come sooner, restarts are quicker).
        .max_journaling_size(JOURNALING_BYTES_MAX)
        .open()
        .map_err(|e| format!("opening the store: {e}"))?;
    let ks = db
        .keyspace(KEYSPACE, || {
            KeyspaceCreateOptions::default().max_memtable_size(config.memtable_bytes)
        })
        .map_err(|e| format!("opening keyspace {KEYSPACE}: {e}"))?;
    // Version 1 had a keyspace per kind of entry and its version in one of them.
    if let Some(other) = db.list_keyspace_names().iter().find(|name| &***name != KEYSPACE) {
        return Err(format!("keyspace {other:?} of an older layout"));
    }
    let read = |key: &[u8]| ks.get(key).map_err(|e| format!("reading meta: {e}"));
    let watermark = match (read(META_VERSION)?, read(META_WATERMARK)?) {
        (None, None) => {
            // A new index: nothing may be in it yet.
            for kind in [KIND_TRANSFER, KIND_FAILED] {
                if ks.prefix([kind]).next().is_some() {
                    return Err(format!("keys of kind {kind} but no version in meta"));
                }
            }
            let mut batch = db.batch();
            batch.insert(&ks, META_VERSION, FORMAT_VERSION.to_be_bytes().as_slice());
            batch.insert(&ks, META_WATERMARK, Watermark::default().encode().as_slice());
            batch.commit().map_err(|e| format!("writing meta: {e}"))?;
            Watermark::default()
        }
        (Some(version), Some(watermark)) => {
            let version = <[u8; 4]>::try_from(&*version).ok().map(u32::from_be_bytes);
            if version != Some(FORMAT_VERSION) {
                return Err(format!(
                    "format version {version:?}, this ledgerd writes {FORMAT_VERSION}"
                ));
            }
            Watermark::decode(&watermark).ok_or("a watermark of the wrong size")?
        }
        _ => return Err("meta holds a version or a watermark but not both".into()),
    };
    let mut history = foldhash::HashSet::default();
    for guard in ks.prefix([KIND_ACCOUNT]) {
        let (key, _) = guard.into_inner().map_err(|e| format!("reading accounts: {e}"))?;
        history.insert(key_id(&key).ok_or("an account key of the wrong size")?);
    }
    Ok((db, ks, watermark, history))
}

/// The saved filters, brought up to `watermark` with the ids of the journal records after the
/// watermark they were saved at, and the sequence the file covers. `Err` when there is no
/// usable file or the journal cannot fill the gap.
fn load_filters(
    path: &Path,
    data_dir: &Path,
    config: &ColdConfig,
    watermark: Watermark,
) -> Result<(IdFilter, IdFilter, u64), String> {
    if watermark.sequence == 0 {
        // Nothing indexed: empty filters, whatever an old file says.
        return Ok((
            IdFilter::with_capacity(config.transfers_max),
            IdFilter::with_capacity(config.failed_ids_max),
            0,
        ));
    }
    let (saved, transfers, failed) =
        filter::load(path, config.transfers_max, config.failed_ids_max)?;
    // A filter saved past the watermark (the store lost its last unsynced batches in a crash)
    // holds more ids than needed: only false positives, which are allowed.
    let mut seq = saved.sequence;
    if seq < watermark.sequence {
        let mut follower = JournalFollower::open(data_dir, seq + 1)
            .map_err(|e| format!("reading the journal after the filter: {e}"))?;
        while let Some(record) = follower.next_record(watermark.sequence) {
            let record =
                record.map_err(|e| format!("reading the journal after the filter: {e}"))?;
            if record.body.is_empty() {
                continue;
            }
            let event = crate::event::access(record.body).unwrap_or_else(|e| {
                panic!("journal record {} passed its checksum but does not decode: {e}", record.seq)
            });
            for t in event.transfers.iter() {
                transfers.insert(t.id.to_native());
            }
            for f in event.failed.iter() {
                failed.insert(f.id.to_native());
            }
            seq = record.seq;
        }
        if seq != watermark.sequence {
            return Err(format!(
                "the journal ends at record {seq}, before the index watermark {}",
                watermark.sequence
            ));
        }
    }
    Ok((transfers, failed, saved.sequence))
}

/// Filters with every transfer and failed id key of the store.
fn rebuild_filters(ks: &Keyspace, config: &ColdConfig) -> Result<(IdFilter, IdFilter), ColdError> {
    let fill = |kind: u8, filter: &IdFilter| -> Result<(), ColdError> {
        for guard in ks.prefix([kind]) {
            let key = guard.key()?;
            let id = key_id(&key)
                .ok_or_else(|| ColdError::Corrupt(format!("id key of {} bytes", key.len())))?;
            filter.insert(id);
        }
        Ok(())
    };
    let transfers = IdFilter::with_capacity(config.transfers_max);
    let failed = IdFilter::with_capacity(config.failed_ids_max);
    fill(KIND_TRANSFER, &transfers)?;
    fill(KIND_FAILED, &failed)?;
    Ok((transfers, failed))
}

/// Records being applied as one atomic write; see [`ColdIndex::batch`].
pub struct ColdBatch<'a> {
    index: &'a ColdIndex,
    writer: MutexGuard<'a, Writer>,
    /// The watermark once this batch commits.
    watermark: Watermark,
    records: usize,
    transfers: usize,
    /// An `add` failed part way: the batch holds part of a record and must not be committed.
    broken: bool,
}

impl ColdBatch<'_> {
    /// Records added.
    pub fn records(&self) -> usize {
        self.records
    }

    /// Transfers created by the records added.
    pub fn transfers(&self) -> usize {
        self.transfers
    }

    /// The value of an indexed transfer, from this batch or the store.
    fn load(&self, id: u128) -> Result<[u8; TRANSFER_VALUE_SIZE], ColdError> {
        if let Some(v) = self.writer.writes.staged.get(&id) {
            return Ok(*v);
        }
        let value = self.index.inner.ks.get(id_key(KIND_TRANSFER, id))?.ok_or_else(|| {
            ColdError::Corrupt(format!("pending transfer {id} is not in the index"))
        })?;
        decode_transfer(id, &value)?;
        Ok((*value).try_into().expect("length checked by decode_transfer"))
    }

    /// Sets the state of pending transfer `id`; returns the transfer.
    fn finish_pending(&mut self, id: u128, state: TransferState) -> Result<Transfer, ColdError> {
        let mut value = self.load(id)?;
        if value[Transfer::SIZE] != TransferState::Pending as u8 {
            return Err(ColdError::Corrupt(format!(
                "transfer {id} is finished twice (state {} then {state:?})",
                value[Transfer::SIZE]
            )));
        }
        value[Transfer::SIZE] = state as u8;
        self.writer.writes.staged.insert(id, value);
        Ok(Transfer::read_from(&value[..Transfer::SIZE]))
    }

    fn balance_rows(&mut self, t: &Transfer, timestamp: u64, pair: &ArchivedBalancePair) {
        let writer = &mut *self.writer;
        for (account, balances, side) in [
            (t.debit_account_id, &pair.debit, SIDE_DEBIT),
            (t.credit_account_id, &pair.credit, SIDE_CREDIT),
        ] {
            if writer.history.contains(&account) {
                let value = balance_value(balances, timestamp, side);
                writer.writes.balances.push(((account, timestamp), value));
            }
        }
    }

    /// Adds journal record `seq` (the one after the last added or indexed), in the order
    /// replay applies an event: expired, accounts, transfers, failed ids.
    /// After an error the batch can only be dropped: [`ColdBatch::commit`] refuses it.
    pub fn add(&mut self, seq: u64, event: &ArchivedEvent) -> Result<(), ColdError> {
        if self.broken {
            return Err(ColdError::Corrupt("a batch is used after an error".into()));
        }
        self.broken = true;
        self.add_record(seq, event)?;
        self.broken = false;
        Ok(())
    }

    /// Adds record `seq` that carries no event (a replica's entry with an empty body): the
    /// watermark moves past it.
    pub fn add_empty(&mut self, seq: u64) -> Result<(), ColdError> {
        let expected = self.watermark.sequence + 1;
        if seq != expected {
            return Err(ColdError::Sequence { expected, found: seq });
        }
        self.watermark.sequence = seq;
        self.records += 1;
        Ok(())
    }

    fn add_record(&mut self, seq: u64, event: &ArchivedEvent) -> Result<(), ColdError> {
        let expected = self.watermark.sequence + 1;
        if seq != expected {
            return Err(ColdError::Sequence { expected, found: seq });
        }
        let index: &ColdIndex = self.index;
        let inner = &index.inner;
        for expiry in event.expired.iter() {
            let p = self.finish_pending(expiry.pending_id.to_native(), TransferState::Expired)?;
            self.balance_rows(&p, expiry.timestamp.to_native(), &expiry.balances);
        }
        for a in event.accounts.iter() {
            let a = Account::from(a);
            if a.has(AccountFlags::HISTORY) {
                self.writer.history.insert(a.id);
                self.writer.writes.accounts.push((a.id, a.flags));
            }
        }
        if event.transfers.len() != event.transfer_balances.len() {
            return Err(ColdError::Corrupt(format!(
                "record {seq}: {} transfers but {} balance pairs",
                event.transfers.len(),
                event.transfer_balances.len()
            )));
        }
        for (t, pair) in event.transfers.iter().zip(event.transfer_balances.iter()) {
            let t = Transfer::from(t);
            let post = t.has(TransferFlags::POST_PENDING_TRANSFER);
            if post || t.has(TransferFlags::VOID_PENDING_TRANSFER) {
                let state = if post { TransferState::Posted } else { TransferState::Voided };
                self.finish_pending(t.pending_id, state)?;
            }
            let writes = &mut self.writer.writes;
            if t.has(TransferFlags::PENDING) {
                writes.staged.insert(t.id, transfer_value(&t, TransferState::Pending));
            } else {
                writes.transfers.push((t.id, transfer_value(&t, TransferState::Final)));
            }
            for (account, side) in
                [(t.debit_account_id, SIDE_DEBIT), (t.credit_account_id, SIDE_CREDIT)]
            {
                let mut value = [0u8; ACCOUNT_TRANSFER_VALUE_SIZE];
                value[..16].copy_from_slice(&t.id.to_be_bytes());
                value[16] = side;
                writes.account_transfers.push(((account, t.timestamp), value));
            }
            self.balance_rows(&t, t.timestamp, pair);
            // Before the watermark moves: a visible transfer is always in the filter.
            inner.transfer_filter.insert(t.id);
            self.watermark.transfers += 1;
            self.transfers += 1;
        }
        for f in event.failed.iter() {
            let id = f.id.to_native();
            self.writer.writes.failed.push((id, f.code.to_native()));
            inner.failed_filter.insert(id);
            self.watermark.failed += 1;
        }
        self.watermark.sequence = seq;
        self.watermark.timestamp = event.timestamp.to_native();
        self.records += 1;
        Ok(())
    }

    /// Writes the batch and its watermark atomically, then makes them visible through
    /// [`ColdIndex::watermark`]. Returns the new watermark.
    pub fn commit(mut self) -> Result<Watermark, ColdError> {
        if self.broken {
            return Err(ColdError::Corrupt("a batch is committed after an error".into()));
        }
        if self.records == 0 {
            return Ok(self.watermark);
        }
        let index: &ColdIndex = self.index;
        let inner = &index.inner;
        let ks = &inner.ks;
        let watermark = self.watermark;
        let writes = &mut self.writer.writes;
        writes.sort();
        if self.transfers >= inner.ingest_transfers_min {
            wait_for_compaction(ks);
            let mut ingestion = ks.start_ingestion()?;
            writes.write(&watermark, &mut |key, value| ingestion.write(key, value))?;
            ingestion.finish()?;
        } else {
            let mut batch = inner.db.batch();
            writes.write(&watermark, &mut |key, value| {
                batch.insert(ks, key, value);
                Ok(())
            })?;
            batch.commit()?;
        }
        writes.clear();
        let mut visible = lock(&inner.watermark);
        assert_eq!(
            visible.sequence + self.records as u64,
            self.watermark.sequence,
            "one writer at a time moves the watermark"
        );
        *visible = self.watermark;
        Ok(self.watermark)
    }
}

/// Waits (a bounded time) while fjall's level 0 holds more than [`L0_TABLES_MAX`] tables:
/// ingestion skips fjall's own write stall, so this keeps reads from slowing without bound
/// when compaction falls behind.
fn wait_for_compaction(ks: &Keyspace) {
    let started = std::time::Instant::now();
    while ks.l0_table_count() > L0_TABLES_MAX && started.elapsed() < L0_WAIT_MAX {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// Where [`Writes::write`] puts a key and its value: a write batch or an ingestion.
type Put<'a> = dyn FnMut(&[u8], &[u8]) -> Result<(), fjall::Error> + 'a;

impl Writes {
    /// Sorts each kind by key (unstable sorts: [`Writes::write`] refuses two different values
    /// of one key, so the order among equal keys does not matter).
    fn sort(&mut self) {
        self.transfers.extend(self.staged.drain());
        self.transfers.sort_unstable_by_key(|(id, _)| *id);
        self.account_transfers.sort_unstable_by_key(|(key, _)| *key);
        self.balances.sort_unstable_by_key(|(key, _)| *key);
        self.accounts.sort_unstable_by_key(|(id, _)| *id);
        self.failed.sort_unstable_by_key(|(id, _)| *id);
    }

    /// Puts the watermark and every write in ascending key order (what an ingestion requires;
    /// fjall's memtables are skip lists, and sorted inserts keep their search paths in cache),
    /// each key once.
    fn write(&self, watermark: &Watermark, put: &mut Put<'_>) -> Result<(), ColdError> {
        put(META_WATERMARK, watermark.encode().as_slice())?;
        each_once("transfer", &self.transfers, |id, value| {
            put(&id_key(KIND_TRANSFER, *id), value)
        })?;
        each_once("account transfer", &self.account_transfers, |key, value| {
            put(&account_key(KIND_ACCOUNT_TRANSFER, *key), value)
        })?;
        each_once("balance row", &self.balances, |key, value| {
            put(&account_key(KIND_BALANCE, *key), value)
        })?;
        each_once("history account", &self.accounts, |id, flags| {
            put(&id_key(KIND_ACCOUNT, *id), flags.to_be_bytes().as_slice())
        })?;
        each_once("failed id", &self.failed, |id, code| {
            put(&id_key(KIND_FAILED, *id), code.to_be_bytes().as_slice())
        })?;
        Ok(())
    }
}

/// Calls `f` once per key of a list sorted by key: an entry equal to the one before it is
/// skipped, and two different values of one key are an error (journal events never give one).
fn each_once<K: PartialEq + std::fmt::Debug, V: PartialEq>(
    what: &str,
    list: &[(K, V)],
    mut f: impl FnMut(&K, &V) -> Result<(), fjall::Error>,
) -> Result<(), ColdError> {
    let mut prior: Option<&(K, V)> = None;
    for entry in list {
        if let Some(prior) = prior.filter(|prior| prior.0 == entry.0) {
            if prior.1 != entry.1 {
                return Err(ColdError::Corrupt(format!(
                    "{what} {:?} written twice with different values in one batch",
                    entry.0
                )));
            }
            continue;
        }
        f(&entry.0, &entry.1)?;
        prior = Some(entry);
    }
    Ok(())
}
