//! The cold index against the real thing: a random workload through `StateMachine`, its
//! events appended to a real `Journal`, the indexer thread following it; every transfer,
//! failed id and account query of the index is compared with the state machine's.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::event::{self, Event};
use crate::journal::{Journal, JournalConfig};
use crate::state_machine::{StateMachine, NS_PER_S};
use crate::types::{AccountFilterFlags, CreateResult};

/// Longest wait for the indexer to reach a sequence.
const CATCH_UP_DEADLINE: Duration = Duration::from_secs(20);

const ACCOUNTS: u128 = 24;
/// Ids of accounts that never exist: transfers naming them fail and are remembered.
const MISSING_ACCOUNT: u128 = 1_000;

/// A ledger built by a random workload, with what the test knows about it.
struct Ledger {
    dir: tempfile::TempDir,
    journal: Journal,
    sm: StateMachine,
    /// Every transfer created, in creation order.
    transfer_ids: Vec<u128>,
    /// State of each transfer as the events say (the state machine has no public accessor).
    states: BTreeMap<u128, TransferState>,
    /// Remembered failed ids and their codes.
    failed: Vec<(u128, u32)>,
    /// Timestamps seen, for query bounds.
    timestamps: Vec<u64>,
    /// Journal a record without an event after each event, as a replica's journal has them.
    empty_records: bool,
}

impl Ledger {
    fn new(segment_size: u64) -> Ledger {
        let dir = tempfile::tempdir().unwrap();
        let mut config = JournalConfig::new(dir.path());
        config.segment_size = segment_size;
        let (journal, _) = Journal::open(config).unwrap();
        Ledger {
            dir,
            journal,
            sm: StateMachine::new(),
            transfer_ids: Vec::new(),
            states: BTreeMap::new(),
            failed: Vec::new(),
            timestamps: Vec::new(),
            empty_records: false,
        }
    }

    fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Journals the event (if any) and follows it in the test's own model of states.
    fn journal_event(&mut self, ev: &Event, bytes: &mut rkyv::util::AlignedVec<16>) {
        if ev.is_empty() {
            return;
        }
        for x in &ev.expired {
            assert_eq!(
                self.states.insert(x.pending_id, TransferState::Expired),
                Some(TransferState::Pending)
            );
            self.timestamps.push(x.timestamp);
        }
        for t in &ev.transfers {
            if t.has(TransferFlags::POST_PENDING_TRANSFER) {
                self.states.insert(t.pending_id, TransferState::Posted);
            } else if t.has(TransferFlags::VOID_PENDING_TRANSFER) {
                self.states.insert(t.pending_id, TransferState::Voided);
            }
            let state = if t.has(TransferFlags::PENDING) {
                TransferState::Pending
            } else {
                TransferState::Final
            };
            self.states.insert(t.id, state);
            self.transfer_ids.push(t.id);
            self.timestamps.push(t.timestamp);
        }
        self.failed.extend(ev.failed.iter().map(|f| (f.id, f.code)));
        event::encode(ev, bytes);
        self.journal.append(bytes).unwrap();
        if self.empty_records {
            self.journal.append(&[]).unwrap();
        }
    }

    /// Runs `steps` random requests (and expiry sweeps), flushing now and then.
    fn run(&mut self, seed: u64, steps: usize) {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut now = 1_000 * NS_PER_S + self.sm.clock_ns();
        let mut results: Vec<CreateResult> = Vec::new();
        let mut ev = Event::default();
        let mut bytes = rkyv::util::AlignedVec::<16>::new();
        if self.sm.counts().accounts == 0 {
            let accounts: Vec<Account> = (1..=ACCOUNTS)
                .map(|id| {
                    let mut flags = 0;
                    if id % 3 == 0 {
                        flags |= AccountFlags::HISTORY;
                    }
                    if id % 5 == 0 {
                        flags |= AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS;
                    }
                    Account { id, ledger: 1, code: 1, flags, ..Default::default() }
                })
                .collect();
            self.sm.create_accounts(now, &accounts, &mut results, &mut ev);
            assert!(results.is_empty(), "{results:?}");
            self.journal_event(&ev, &mut bytes);
        }
        let mut next_id =
            1_000_000 + self.transfer_ids.len() as u128 * 10 + self.failed.len() as u128 * 10;
        for step in 0..steps {
            now += rng.u64(0..NS_PER_S / 2);
            let mut batch = Vec::new();
            for _ in 0..rng.usize(1..24) {
                next_id += 1;
                let dr = rng.u128(1..=ACCOUNTS);
                let mut cr = rng.u128(1..=ACCOUNTS);
                if cr == dr {
                    cr = cr % ACCOUNTS + 1;
                }
                let base = Transfer {
                    id: next_id,
                    debit_account_id: dr,
                    credit_account_id: cr,
                    amount: rng.u128(1..100),
                    ledger: 1,
                    code: 1,
                    ..Default::default()
                };
                let pendings: Vec<u128> = self
                    .states
                    .iter()
                    .filter(|(_, s)| **s == TransferState::Pending)
                    .map(|(id, _)| *id)
                    .take(8)
                    .collect();
                let t = match rng.u8(0..10) {
                    0..=3 => base,
                    4 | 5 => {
                        Transfer { flags: TransferFlags::PENDING, timeout: rng.u32(0..3), ..base }
                    }
                    6 | 7 if !pendings.is_empty() => {
                        let p =
                            self.sm.transfer_by_id(pendings[rng.usize(..pendings.len())]).copied();
                        let p = p.unwrap();
                        let flags = if rng.bool() {
                            TransferFlags::POST_PENDING_TRANSFER
                        } else {
                            TransferFlags::VOID_PENDING_TRANSFER
                        };
                        let amount = if flags == TransferFlags::POST_PENDING_TRANSFER {
                            rng.u128(1..=p.amount)
                        } else {
                            0
                        };
                        Transfer {
                            id: next_id,
                            pending_id: p.id,
                            amount,
                            flags,
                            ..Default::default()
                        }
                    }
                    8 => Transfer { credit_account_id: MISSING_ACCOUNT + rng.u128(0..3), ..base },
                    // A retry of an id already used (created or failed): no change.
                    _ => Transfer { id: next_id - rng.u128(1..20).min(next_id - 1), ..base },
                };
                batch.push(t);
            }
            self.sm.create_transfers(now, &batch, &mut results, &mut ev);
            self.journal_event(&ev, &mut bytes);
            if step % 4 == 0 {
                self.sm.expire(now, &mut ev);
                self.journal_event(&ev, &mut bytes);
            }
            if rng.u8(0..4) == 0 {
                self.journal.flush().unwrap();
            }
        }
        self.journal.flush().unwrap();
        self.sm.verify().unwrap();
    }
}

/// A running indexer and the counter it reads.
struct Running {
    durable: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    fn start(index: &ColdIndex, data_dir: &Path, durable: u64) -> Running {
        let durable = Arc::new(AtomicU64::new(durable));
        let stop = Arc::new(AtomicBool::new(false));
        let handle = Indexer::spawn(
            index.clone(),
            data_dir.to_path_buf(),
            Arc::clone(&durable),
            Arc::clone(&stop),
        );
        Running { durable, stop, handle: Some(handle) }
    }

    fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        self.handle.take().unwrap().join().expect("the indexer does not panic");
    }
}

fn wait_for(index: &ColdIndex, sequence: u64) {
    let deadline = Instant::now() + CATCH_UP_DEADLINE;
    while index.watermark().sequence < sequence {
        assert!(
            Instant::now() < deadline,
            "indexer at {:?} after {CATCH_UP_DEADLINE:?}, record {sequence} wanted",
            index.watermark()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(index.watermark().sequence, sequence, "never past the durable sequence");
}

fn config() -> ColdConfig {
    // Batches of 32 transfers and more are ingested as tables, smaller ones journaled: the
    // tests see both.
    ColdConfig {
        transfers_max: 50_000,
        failed_ids_max: 10_000,
        ingest_transfers_min: 32,
        ..ColdConfig::default()
    }
}

/// Every transfer, failed id and query of the index equals the state machine's.
fn check(index: &ColdIndex, l: &Ledger) {
    let wm = index.watermark();
    assert_eq!(wm.sequence, l.journal.last_sequence());
    assert_eq!(wm.transfers, l.transfer_ids.len() as u64);
    assert_eq!(wm.failed, l.failed.len() as u64);
    assert_eq!(wm.transfers, l.sm.counts().transfers);
    assert_eq!(wm.failed, l.sm.counts().failed_ids);
    for id in &l.transfer_ids {
        let (t, state) = index.transfer(*id).unwrap().expect("every transfer is indexed");
        assert_eq!(Some(&t), l.sm.transfer_by_id(*id));
        assert_eq!(state, l.states[id], "state of transfer {id}");
        assert!(index.may_contain_transfer(*id));
        assert_eq!(index.failed(*id).unwrap(), None);
    }
    for (id, code) in &l.failed {
        assert_eq!(index.failed(*id).unwrap(), Some(*code));
        assert!(index.may_contain_failed(*id));
        assert_eq!(index.transfer(*id).unwrap(), None);
    }
    assert_eq!(index.transfer(7).unwrap(), None);

    let mut ts = l.timestamps.clone();
    ts.sort_unstable();
    let pick = |q: usize| ts[(ts.len() - 1) * q / 4];
    let bounds = [
        (0, 0),
        (pick(1), 0),
        (0, pick(2)),
        (pick(1), pick(3)),
        (pick(2), pick(2)),
        (pick(3), pick(1)),
    ];
    let sides = [
        AccountFilterFlags::DEBITS,
        AccountFilterFlags::CREDITS,
        AccountFilterFlags::DEBITS | AccountFilterFlags::CREDITS,
    ];
    let (mut sm_t, mut ix_t, mut sm_b, mut ix_b) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut compared = 0usize;
    for account_id in (0..=ACCOUNTS + 1).chain([MISSING_ACCOUNT, u128::MAX]) {
        for (min, max) in bounds {
            for side in sides {
                for reversed in [0, AccountFilterFlags::REVERSED] {
                    for limit in [0u32, 1, 2, 7, 50, u32::MAX] {
                        let f = AccountFilter {
                            account_id,
                            timestamp_min: min,
                            timestamp_max: max,
                            limit,
                            flags: side | reversed,
                            reserved: [0; 24],
                        };
                        l.sm.get_account_transfers(&f, &mut sm_t);
                        index.account_transfers(&f, &mut ix_t).unwrap();
                        assert_eq!(ix_t, sm_t, "account_transfers {f:?}");
                        l.sm.get_account_balances(&f, &mut sm_b);
                        index.account_balances(&f, &mut ix_b).unwrap();
                        assert_eq!(ix_b, sm_b, "account_balances {f:?}");
                        compared += sm_t.len() + sm_b.len();
                    }
                }
            }
        }
    }
    assert!(compared > 1000, "the queries found something ({compared} records)");
    // Invalid filters give nothing.
    let good = AccountFilter {
        account_id: 3,
        limit: 10,
        flags: AccountFilterFlags::DEBITS | AccountFilterFlags::CREDITS,
        ..Default::default()
    };
    index.account_transfers(&good, &mut ix_t).unwrap();
    assert!(!ix_t.is_empty());
    for bad in [
        AccountFilter { flags: 1 << 7, ..good },
        AccountFilter { flags: 0, ..good },
        AccountFilter { reserved: [1; 24], ..good },
    ] {
        index.account_transfers(&bad, &mut ix_t).unwrap();
        index.account_balances(&bad, &mut ix_b).unwrap();
        assert!(ix_t.is_empty() && ix_b.is_empty(), "{bad:?}");
    }
}

fn built(seed: u64, steps: usize) -> Ledger {
    let mut l = Ledger::new(64 << 10);
    l.run(seed, steps);
    assert!(l.journal.last_sequence() > 100);
    assert!(l.states.values().any(|s| *s == TransferState::Expired), "the workload expires");
    assert!(l.states.values().any(|s| *s == TransferState::Posted));
    assert!(l.states.values().any(|s| *s == TransferState::Voided));
    assert!(!l.failed.is_empty());
    l
}

#[test]
fn records_without_an_event_move_the_watermark_and_add_nothing() {
    let mut l = Ledger::new(64 << 10);
    l.empty_records = true;
    l.run(7, 200);
    let last = l.journal.last_sequence();
    assert!(l.journal.read(last).unwrap().is_empty(), "the journal ends with an empty record");
    let filter_path = l.data_dir().join(INDEX_DIR).join(FILTER_FILE);
    let stale = l.data_dir().join("filter.stale");
    {
        let index = ColdIndex::open(l.data_dir(), &config()).unwrap();
        let running = Running::start(&index, l.data_dir(), last / 2);
        wait_for(&index, last / 2);
        index.save_filter().unwrap();
        fs::copy(&filter_path, &stale).unwrap();
        running.durable.store(last, Ordering::Release);
        wait_for(&index, last);
        running.stop();
        check(&index, &l);
    }
    // The filter saved half way catches up through the records without an event.
    fs::copy(&stale, &filter_path).unwrap();
    let index = ColdIndex::open(l.data_dir(), &config()).unwrap();
    assert_eq!(index.watermark().sequence, last);
    check(&index, &l);
}

#[test]
fn index_equals_the_state_machine_while_the_journal_grows() {
    let mut l = Ledger::new(64 << 10);
    l.run(1, 5);
    let index = ColdIndex::open(l.data_dir(), &config()).unwrap();
    let running = Running::start(&index, l.data_dir(), l.journal.durable_sequence());
    // The indexer follows while the workload appends, across segment roll-overs.
    for round in 0..6 {
        l.run(100 + round, 60);
        running.durable.store(l.journal.durable_sequence(), Ordering::Release);
    }
    wait_for(&index, l.journal.last_sequence());
    running.stop();
    assert!(l.states.values().any(|s| *s == TransferState::Expired));
    assert!(l.states.values().any(|s| *s == TransferState::Posted));
    assert!(!l.failed.is_empty());
    check(&index, &l);
}

#[test]
fn restart_continues_from_the_watermark() {
    let l = built(2, 300);
    let last = l.journal.last_sequence();
    let half = last / 2;
    {
        let index = ColdIndex::open(l.data_dir(), &config()).unwrap();
        let running = Running::start(&index, l.data_dir(), half);
        wait_for(&index, half);
        running.stop();
    }
    let index = ColdIndex::open(l.data_dir(), &config()).unwrap();
    assert_eq!(index.watermark().sequence, half);
    let running = Running::start(&index, l.data_dir(), last);
    wait_for(&index, last);
    running.stop();
    check(&index, &l);
}

#[test]
fn a_damaged_index_is_removed_and_rebuilt() {
    let l = built(3, 300);
    let last = l.journal.last_sequence();
    {
        let index = ColdIndex::open(l.data_dir(), &config()).unwrap();
        let running = Running::start(&index, l.data_dir(), last);
        wait_for(&index, last);
        running.stop();
    }
    // Garbage over every file of the store.
    let store = l.data_dir().join(INDEX_DIR).join(STORE_DIR);
    let mut damaged = 0;
    for entry in walk(&store) {
        let len = fs::metadata(&entry).unwrap().len() as usize;
        fs::write(&entry, vec![0xa5; len.max(16)]).unwrap();
        damaged += 1;
    }
    assert!(damaged > 0);
    let index = ColdIndex::open(l.data_dir(), &config()).unwrap();
    assert_eq!(index.watermark(), Watermark::default(), "a damaged index starts empty");
    let running = Running::start(&index, l.data_dir(), last);
    wait_for(&index, last);
    running.stop();
    check(&index, &l);
}

#[test]
fn an_index_of_another_version_is_rebuilt() {
    let l = built(4, 120);
    let last = l.journal.last_sequence();
    {
        let index = ColdIndex::open(l.data_dir(), &config()).unwrap();
        let running = Running::start(&index, l.data_dir(), last);
        wait_for(&index, last);
        running.stop();
        index.inner.ks.insert(META_VERSION, (FORMAT_VERSION + 1).to_be_bytes().as_slice()).unwrap();
    }
    let index = ColdIndex::open(l.data_dir(), &config()).unwrap();
    assert_eq!(index.watermark(), Watermark::default());
    let running = Running::start(&index, l.data_dir(), last);
    wait_for(&index, last);
    running.stop();
    check(&index, &l);
}

#[test]
fn a_missing_or_stale_filter_file_is_rebuilt_or_brought_up_to_date() {
    let l = built(5, 300);
    let last = l.journal.last_sequence();
    let filter_path = l.data_dir().join(INDEX_DIR).join(FILTER_FILE);
    let stale = l.data_dir().join("filter.stale");
    {
        let index = ColdIndex::open(l.data_dir(), &config()).unwrap();
        let running = Running::start(&index, l.data_dir(), last / 3);
        wait_for(&index, last / 3);
        index.save_filter().unwrap();
        fs::copy(&filter_path, &stale).unwrap();
        running.durable.store(last, Ordering::Release);
        wait_for(&index, last);
        running.stop();
    }
    // Saved at a third of the journal: the rest comes from the journal.
    fs::copy(&stale, &filter_path).unwrap();
    let index = ColdIndex::open(l.data_dir(), &config()).unwrap();
    assert_eq!(index.watermark().sequence, last);
    assert!(index.filter_file_behind());
    check(&index, &l);
    // An indexer with nothing to index still brings the file up to the watermark (a crash
    // after a burst must not read the burst again), without being stopped.
    let running = Running::start(&index, l.data_dir(), last);
    let deadline = Instant::now() + CATCH_UP_DEADLINE;
    while index.filter_file_behind() {
        assert!(Instant::now() < deadline, "the idle indexer never saved the filter");
        std::thread::sleep(Duration::from_millis(1));
    }
    let (transfers_max, failed_max) = (config().transfers_max, config().failed_ids_max);
    let (saved, _, _) = filter::load(&filter_path, transfers_max, failed_max).unwrap();
    assert_eq!(saved.sequence, last);
    running.stop();
    drop(index);
    // Missing: rebuilt from the index keys.
    fs::remove_file(&filter_path).unwrap();
    let index = ColdIndex::open(l.data_dir(), &config()).unwrap();
    check(&index, &l);
    drop(index);
    // Damaged: the same.
    let mut bytes = fs::read(&stale).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x10;
    fs::write(&filter_path, bytes).unwrap();
    let index = ColdIndex::open(l.data_dir(), &config()).unwrap();
    check(&index, &l);
}

#[test]
fn records_apply_in_order_only() {
    let mut l = Ledger::new(64 << 10);
    l.run(6, 20);
    let index = ColdIndex::open(l.data_dir(), &config()).unwrap();
    let record = |seq: u64| {
        let mut aligned = rkyv::util::AlignedVec::<16>::new();
        aligned.extend_from_slice(l.journal.read(seq).unwrap());
        aligned
    };
    let (one, two) = (record(1), record(2));
    let (one, two) = (event::access(&one).unwrap(), event::access(&two).unwrap());
    assert!(matches!(index.apply(2, two), Err(ColdError::Sequence { expected: 1, found: 2 })));
    assert_eq!(index.watermark(), Watermark::default());
    index.apply(1, one).unwrap();
    assert!(matches!(index.apply(1, one), Err(ColdError::Sequence { expected: 2, found: 1 })));
    index.apply(2, two).unwrap();
    assert_eq!(index.watermark().sequence, 2);
    // A batch that failed part way is never committed.
    let mut batch = index.batch();
    assert!(batch.add(9, one).is_err());
    assert!(batch.commit().is_err());
    assert_eq!(index.watermark().sequence, 2);
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// Garbage in, or truncation of, any one file of the index: open either starts empty or keeps
/// a consistent prefix (fjall's own recovery), and the indexer then reaches the same result.
#[test]
fn damage_to_any_one_file_ends_in_the_same_index() {
    let l = built(8, 200);
    let last = l.journal.last_sequence();
    {
        let index = ColdIndex::open(l.data_dir(), &config()).unwrap();
        let running = Running::start(&index, l.data_dir(), last);
        wait_for(&index, last);
        running.stop();
    }
    let store = l.data_dir().join(INDEX_DIR);
    let pristine = l.data_dir().join("pristine");
    copy_dir(&store, &pristine);
    let mut cases = 0;
    for file in walk(&pristine) {
        let rel = file.strip_prefix(&pristine).unwrap().to_path_buf();
        for mode in ["garbage", "truncate"] {
            let _ = fs::remove_dir_all(&store);
            copy_dir(&pristine, &store);
            let target = store.join(&rel);
            let len = fs::metadata(&target).unwrap().len() as usize;
            if mode == "garbage" {
                fs::write(&target, vec![0xa5; len.max(16)]).unwrap();
            } else {
                fs::write(&target, &fs::read(&target).unwrap()[..len / 2]).unwrap();
            }
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let index = ColdIndex::open(l.data_dir(), &config()).unwrap();
                let wm = index.watermark().sequence;
                let running = Running::start(&index, l.data_dir(), last);
                wait_for(&index, last);
                running.stop();
                check(&index, &l);
                wm
            }));
            let outcome = outcome.map_err(|_| "panicked");
            eprintln!("{mode} {} ({len} bytes): watermark after open {outcome:?}", rel.display());
            assert!(outcome.is_ok(), "{mode} {}", rel.display());
            cases += 1;
        }
    }
    assert!(cases > 10, "{cases} cases");
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let dest = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_dir(&path, &dest);
        } else {
            fs::copy(&path, &dest).unwrap();
        }
    }
}

/// While the indexer works, a reader that reads the watermark finds every transfer and failed
/// id it covers, in the filter and in the store (creation order = journal order).
#[test]
fn readers_see_everything_under_the_watermark_while_the_indexer_works() {
    let l = built(9, 400);
    let last = l.journal.last_sequence();
    let index = ColdIndex::open(l.data_dir(), &config()).unwrap();
    let reader = {
        let index = index.clone();
        let (transfer_ids, failed) = (l.transfer_ids.clone(), l.failed.clone());
        std::thread::spawn(move || {
            let deadline = Instant::now() + CATCH_UP_DEADLINE;
            let mut rounds = 0u64;
            loop {
                let wm = index.watermark();
                let (t, f) = (wm.transfers as usize, wm.failed as usize);
                // The newest ones (most likely to race) and a stride through the rest.
                let newest = t.saturating_sub(64)..t;
                for i in newest.chain((0..t).step_by(97)) {
                    let id = transfer_ids[i];
                    assert!(index.may_contain_transfer(id), "transfer {id} under {wm:?}");
                    assert!(index.transfer(id).unwrap().is_some(), "transfer {id} under {wm:?}");
                }
                for (id, code) in &failed[f.saturating_sub(64)..f] {
                    assert!(index.may_contain_failed(*id));
                    assert_eq!(index.failed(*id).unwrap(), Some(*code));
                }
                rounds += 1;
                if wm.sequence == last {
                    return rounds;
                }
                assert!(Instant::now() < deadline, "the indexer never reached {last}");
            }
        })
    };
    let running = Running::start(&index, l.data_dir(), last);
    let rounds = reader.join().expect("the reader's checks hold");
    running.stop();
    assert!(rounds > 1, "the reader ran while the indexer worked ({rounds} rounds)");
    check(&index, &l);
}

/// Set in a child process of [`a_killed_indexer_never_leaves_a_watermark_ahead_of_its_data`]:
/// the data directory it indexes until it is killed.
const CRASH_CHILD_DIR: &str = "LEDGERD_COLD_CRASH_CHILD_DIR";
/// The last journal sequence of that directory.
const CRASH_CHILD_LAST: &str = "LEDGERD_COLD_CRASH_CHILD_LAST";

/// Small batches through fjall's journal, larger ones ingested as tables, small memtables:
/// every way a batch reaches the disk, in any order.
fn crash_config() -> ColdConfig {
    ColdConfig { ingest_transfers_min: 64, memtable_bytes: 1 << 20, ..config() }
}

/// Not a test on its own: the child process of the crash test (does nothing without its
/// environment). It moves the durable sequence in random steps, so that batches of every size
/// are written, and indexes until it is killed.
#[test]
fn crash_child_indexes_until_killed() {
    let (Some(dir), Some(last)) =
        (std::env::var_os(CRASH_CHILD_DIR), std::env::var_os(CRASH_CHILD_LAST))
    else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    let last: u64 = last.to_str().and_then(|v| v.parse().ok()).expect("a sequence");
    let index = ColdIndex::open(&dir, &crash_config()).unwrap();
    let mut durable = index.watermark().sequence;
    let running = Running::start(&index, &dir, durable);
    let mut rng = fastrand::Rng::new();
    loop {
        durable = (durable + rng.u64(1..16)).min(last);
        running.durable.store(durable, Ordering::Release);
        std::thread::sleep(Duration::from_micros(rng.u64(0..2_000)));
    }
}

/// SIGKILL at random moments while the indexer writes (journaled batches, ingested tables,
/// memtable flushes): after each, the index opens with a watermark whose every transfer and
/// failed id is readable, and once the indexer finishes, the index equals the state machine
/// (records at or below a watermark are never indexed again, so anything lost under one would
/// stay missing). Fails if a watermark could reach the disk before the data it covers.
#[test]
fn a_killed_indexer_never_leaves_a_watermark_ahead_of_its_data() {
    if std::env::var_os(CRASH_CHILD_DIR).is_some() {
        return;
    }
    let l = built(10, 6_000);
    let last = l.journal.last_sequence();
    let exe = std::env::current_exe().unwrap();
    let mut rng = fastrand::Rng::with_seed(10);
    let mut cut_short = 0;
    for round in 0..10 {
        let mut child = std::process::Command::new(&exe)
            .args(["--exact", "cold::tests::crash_child_indexes_until_killed", "--test-threads=1"])
            .env(CRASH_CHILD_DIR, l.data_dir())
            .env(CRASH_CHILD_LAST, last.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.u64(10..150)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let index = ColdIndex::open(l.data_dir(), &crash_config()).unwrap();
        let wm = index.watermark();
        assert!(wm.sequence <= last, "round {round}: {wm:?}");
        for id in &l.transfer_ids[..wm.transfers as usize] {
            let found = index.transfer(*id).unwrap();
            assert!(found.is_some(), "round {round}: transfer {id} under {wm:?} is missing");
        }
        for (id, code) in &l.failed[..wm.failed as usize] {
            assert_eq!(index.failed(*id).unwrap(), Some(*code), "round {round}: under {wm:?}");
        }
        if wm.sequence < last {
            cut_short += 1;
        }
        eprintln!("round {round}: killed at watermark {wm:?}");
    }
    assert!(cut_short > 0, "every kill came after the indexer had finished");
    let index = ColdIndex::open(l.data_dir(), &crash_config()).unwrap();
    let running = Running::start(&index, l.data_dir(), last);
    wait_for(&index, last);
    running.stop();
    check(&index, &l);
}
