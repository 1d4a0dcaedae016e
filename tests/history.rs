//! History on disk (`--cold-index true`): the daemon evicts from memory what the disk index
//! holds, and every answer must stay what a daemon keeping everything in memory gives.
//!
//! Two real daemons get the same requests: one with the cold index (which evicts as soon as
//! the index holds a record, so that idempotency checks, posts and voids, lookups and queries
//! of old records all go through the disk), one without. Their answers are compared with the
//! timestamps blanked (each daemon assigns its own). Then the cold daemon is SIGKILLed and
//! restarted from its hot-only snapshots, and started again with its index deleted (rebuilt
//! from the journal): the answers stay the same, and its state hash equals the replay tool's.

mod common;

use std::time::{Duration, Instant};

use common::{account, transfer, TestDaemon};
use ledgerd::protocol::{ChangeEventKind, ChangeEventsRequest};
use ledgerd::types::{
    AccountBalance, AccountFilter, AccountFilterFlags, AccountFlags, CreateResult, ResultCode,
    Transfer, TransferFlags,
};
use ledgerd_client::Client;

/// Accounts 1..=5 on ledger 1 (1 and 2 keep balance history); 6 may not go below zero.
const ACCOUNTS: u128 = 6;
const WALLET: u128 = 6;

fn cold_daemon(dir: &std::path::Path) -> TestDaemon {
    // A snapshot every 4 records, and whenever the index has taken in 100 more ids than the
    // last one left out of memory.
    let args = ["--snapshot-every-records", "4", "--snapshot-every-events", "100"];
    TestDaemon::start_with(dir, &[&["--cold-index", "true"][..], &args].concat())
}

fn blank(t: &Transfer) -> Transfer {
    Transfer { timestamp: 0, ..*t }
}

fn blank_row(r: &AccountBalance) -> AccountBalance {
    AccountBalance { timestamp: 0, ..*r }
}

/// The requests of the first round: plain transfers, pending ones (some posted or voided,
/// some expiring after a second), and transfers from the wallet that fail transiently.
fn first_round(rng: &mut fastrand::Rng) -> Vec<Vec<Transfer>> {
    let mut batches = Vec::new();
    let plain: Vec<Transfer> = (0..300u128)
        .map(|i| {
            let dr = rng.u128(1..=5);
            let cr = if dr == 5 { 1 } else { dr + 1 };
            Transfer { user_data_64: i as u64, ..transfer(1_000 + i, dr, cr, rng.u128(1..=50)) }
        })
        .collect();
    batches.extend(plain.chunks(37).map(<[Transfer]>::to_vec));
    let pending: Vec<Transfer> = (0..30u128)
        .map(|i| Transfer {
            flags: TransferFlags::PENDING,
            timeout: if i % 5 == 0 { 1 } else { 0 },
            ..transfer(2_000 + i, 1 + i % 4, 2 + i % 4, 10)
        })
        .collect();
    batches.push(pending);
    let settle: Vec<Transfer> = (0..30u128)
        .filter(|i| i % 5 != 0 && i % 3 != 0)
        .map(|i| Transfer {
            id: 3_000 + i,
            pending_id: 2_000 + i,
            flags: if i % 2 == 0 {
                TransferFlags::POST_PENDING_TRANSFER
            } else {
                TransferFlags::VOID_PENDING_TRANSFER
            },
            // Some posts take part of the pending amount.
            amount: if i % 4 == 0 { 4 } else { 0 },
            ..Default::default()
        })
        .collect();
    batches.push(settle);
    let failing: Vec<Transfer> = (0..10u128).map(|i| transfer(4_000 + i, WALLET, 1, 5)).collect();
    batches.push(failing);
    batches
}

/// Sends the same request to both daemons and requires the same answer.
struct Twins {
    cold: Client,
    warm: Client,
}

impl Twins {
    fn transfers(&mut self, batch: &[Transfer]) -> Vec<CreateResult> {
        let cold = self.cold.create_transfers(batch).expect("cold create_transfers");
        let warm = self.warm.create_transfers(batch).expect("warm create_transfers");
        assert_eq!(cold, warm, "create_transfers results differ");
        cold
    }

    fn lookups(&mut self, ids: &[u128]) {
        let cold = self.cold.lookup_transfers(ids).expect("cold lookup");
        let warm = self.warm.lookup_transfers(ids).expect("warm lookup");
        assert_eq!(cold.len(), warm.len(), "lookup_transfers found different transfers");
        for (c, w) in cold.iter().zip(&warm) {
            assert_eq!(blank(c), blank(w), "lookup_transfers");
        }
    }

    fn pages(&mut self) {
        for account_id in 1..=ACCOUNTS {
            for flags in [
                AccountFilterFlags::DEBITS | AccountFilterFlags::CREDITS,
                AccountFilterFlags::DEBITS,
                AccountFilterFlags::CREDITS | AccountFilterFlags::REVERSED,
            ] {
                for limit in [1, 7, 8190] {
                    let filter = AccountFilter {
                        account_id,
                        flags,
                        limit,
                        timestamp_min: 0,
                        timestamp_max: 0,
                        reserved: [0; 24],
                    };
                    let cold = self.cold.get_account_transfers(&filter).expect("cold page");
                    let warm = self.warm.get_account_transfers(&filter).expect("warm page");
                    let cold: Vec<Transfer> = cold.iter().map(blank).collect();
                    let warm: Vec<Transfer> = warm.iter().map(blank).collect();
                    assert_eq!(cold, warm, "get_account_transfers {filter:?}");
                    let cold = self.cold.get_account_balances(&filter).expect("cold rows");
                    let warm = self.warm.get_account_balances(&filter).expect("warm rows");
                    let cold: Vec<AccountBalance> = cold.iter().map(blank_row).collect();
                    let warm: Vec<AccountBalance> = warm.iter().map(blank_row).collect();
                    assert_eq!(cold, warm, "get_account_balances {filter:?}");
                }
            }
        }
    }

    /// Retries of everything old, changed retries, and settlements of settled pendings.
    fn old_ids(&mut self, first: &[Vec<Transfer>]) {
        for batch in first {
            let results = self.transfers(batch);
            assert!(!results.is_empty(), "a retry of an old request applied something new");
        }
        let changed: Vec<Transfer> =
            first[0].iter().map(|t| Transfer { amount: t.amount + 1, ..*t }).collect();
        self.transfers(&changed);
        // Settlements retried for the full amount of another pending transfer: the answer
        // compares against the pending transfer the stored settlement took its amount from.
        let elsewhere: Vec<Transfer> = first
            .iter()
            .flatten()
            .filter(|t| t.pending_id != 0)
            .map(|t| Transfer { amount: 0, pending_id: t.pending_id + 1, ..*t })
            .collect();
        assert!(!elsewhere.is_empty());
        let results = self.transfers(&elsewhere);
        assert!(
            results.iter().any(|r| r.result == ResultCode::ExistsWithDifferentAmount),
            "no partial post was retried for the full amount: {results:?}"
        );
        let again: Vec<Transfer> = (0..30u128)
            .map(|i| Transfer {
                id: 5_000 + i,
                pending_id: 2_000 + i,
                flags: TransferFlags::POST_PENDING_TRANSFER,
                ..Default::default()
            })
            .collect();
        // New ids: each is answered exactly once, then they exist in both daemons.
        self.transfers(&again);
        let ids: Vec<u128> = first.iter().flatten().map(|t| t.id).chain(5_000..5_030).collect();
        self.lookups(&ids);
        self.pages();
        self.expiries_in_the_feed();
    }

    /// The change feed from the start: an expiry's change names the expired pending transfer,
    /// which the cold daemon reads back from the index.
    fn expiries_in_the_feed(&mut self) {
        let expired = |client: &mut Client| -> Vec<Transfer> {
            let mut found = Vec::new();
            let mut request = ChangeEventsRequest { from_sequence: 1, limit: 1_000, from_index: 0 };
            for _ in 0..1_000 {
                let reply = client.change_events(&request).expect("change_events");
                found.extend(
                    reply
                        .events
                        .iter()
                        .filter(|e| e.kind == ChangeEventKind::TransferExpired)
                        .map(|e| blank(&e.transfer)),
                );
                if reply.events.is_empty() {
                    return found;
                }
                request.from_sequence = reply.next_sequence;
                request.from_index = reply.next_index;
            }
            panic!("the change feed did not end");
        };
        let cold = expired(&mut self.cold);
        assert_eq!(cold.len(), 6, "the six pending transfers with a timeout expired");
        assert!(cold.iter().all(|t| (2_000..2_030).contains(&t.id) && t.debit_account_id != 0));
        assert_eq!(cold, expired(&mut self.warm));
    }
}

/// Sends cheap requests until the cold daemon has evicted at least `records` (each request
/// lets it evict a bounded number).
fn wait_for_eviction(daemon: &TestDaemon, client: &mut Client, records: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let evicted = daemon.metric("ledgerd_evicted_records_total");
        if evicted >= records {
            return;
        }
        assert!(Instant::now() < deadline, "only {evicted} of {records} records evicted");
        client.lookup_accounts(&[1]).expect("lookup");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Sends cheap requests until the cold daemon holds no transfer in memory but pending ones
/// (the snapshot it started from may have left out everything already).
fn wait_for_hot_only(daemon: &TestDaemon, client: &mut Client) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pending = client.status().expect("status").pending_transfers;
        let in_memory = daemon.metric("ledgerd_transfers_in_memory");
        assert!(in_memory >= pending, "pending transfers stay in memory");
        if in_memory == pending {
            return;
        }
        assert!(Instant::now() < deadline, "{in_memory} transfers in memory, {pending} pending");
        client.lookup_accounts(&[1]).expect("lookup");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn with_history_on_disk_old_ids_pages_and_restarts_answer_as_if_all_were_in_memory() {
    let cold_dir = tempfile::tempdir().unwrap();
    let warm_dir = tempfile::tempdir().unwrap();
    let mut cold_daemon_ = cold_daemon(cold_dir.path());
    let warm_daemon = TestDaemon::start(warm_dir.path());
    let mut twins = Twins { cold: cold_daemon_.client(), warm: warm_daemon.client() };

    let accounts: Vec<_> = (1..=ACCOUNTS)
        .map(|id| match id {
            1 | 2 => account(id, 1, AccountFlags::HISTORY),
            WALLET => account(id, 1, AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS),
            _ => account(id, 1, 0),
        })
        .collect();
    assert_eq!(twins.cold.create_accounts(&accounts).unwrap(), []);
    assert_eq!(twins.warm.create_accounts(&accounts).unwrap(), []);

    let mut rng = fastrand::Rng::with_seed(9);
    let first = first_round(&mut rng);
    for batch in &first {
        twins.transfers(batch);
    }
    // The pending transfers with a one-second timeout expire in both.
    std::thread::sleep(Duration::from_millis(1_500));
    let created: u64 = 300 + 30 + 20;
    wait_for_eviction(&cold_daemon_, &mut twins.cold, created);
    let in_memory = twins.cold.status().unwrap();
    assert_eq!(in_memory.transfers, twins.warm.status().unwrap().transfers);

    twins.old_ids(&first);
    let hash = twins.cold.status().unwrap().state_hash;

    // SIGKILL: the restart loads a snapshot that holds the hot state only (the index holds
    // every transfer by now, so the last snapshot left them out, or one that does is due).
    cold_daemon_.wait_snapshots_idle(Duration::from_secs(30)).unwrap();
    cold_daemon_.kill();
    cold_daemon_.restart();
    twins.cold = cold_daemon_.client();
    assert_eq!(twins.cold.status().unwrap().state_hash, hash, "hash after SIGKILL and restart");
    wait_for_hot_only(&cold_daemon_, &mut twins.cold);
    twins.old_ids(&first);
    let hash = twins.cold.status().unwrap().state_hash;

    // The index is derived data: deleted, it is rebuilt from the journal before serving.
    cold_daemon_.stop();
    std::fs::remove_dir_all(cold_dir.path().join("index")).unwrap();
    cold_daemon_.restart();
    twins.cold = cold_daemon_.client();
    assert_eq!(twins.cold.status().unwrap().state_hash, hash, "hash after the index was rebuilt");
    twins.old_ids(&first);
    let hash = twins.cold.status().unwrap().state_hash;
    cold_daemon_.stop();
    assert_eq!(common::replay_hash(cold_dir.path()), format!("{hash:032x}"));

    // Started without the index, the hot-only snapshot would make old ids look new: refused.
    let refused = common::builder(cold_dir.path(), &["--cold-index", "false"])
        .run_to_exit(Duration::from_secs(60))
        .expect("run ledgerd to its exit");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "started without its index: {stderr}");
    assert!(stderr.contains("start it with --cold-index true"), "{stderr}");
}

/// A snapshot taken before the index caught up holds the history in memory; once the index
/// has taken in `--snapshot-every-events` more ids, another one at the same sequence (no new
/// records) leaves it out, and a restart loads that one.
#[test]
fn once_the_index_catches_up_a_snapshot_at_the_same_sequence_leaves_history_out() {
    const TRANSFERS: u128 = 2_000;
    let dir = tempfile::tempdir().unwrap();
    // Everything in memory first: the snapshot at the last record holds every transfer.
    let mut daemon = TestDaemon::start_with(dir.path(), &["--snapshot-every-records", "1"]);
    let mut client = daemon.client();
    let accounts: Vec<_> = (1..=ACCOUNTS).map(|id| account(id, 1, 0)).collect();
    assert_eq!(client.create_accounts(&accounts).unwrap(), []);
    let transfers: Vec<Transfer> =
        (0..TRANSFERS).map(|i| transfer(10_000 + i, 1 + i % 5, 1 + (i + 1) % 5, 1)).collect();
    for chunk in transfers.chunks(500) {
        assert_eq!(client.create_transfers(chunk).unwrap(), []);
    }
    let before = client.status().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while daemon.metric("ledgerd_snapshot_sequence") != before.sequence {
        assert!(Instant::now() < deadline, "no snapshot at the last record");
        std::thread::sleep(Duration::from_millis(10));
    }
    daemon.wait_snapshots_idle(Duration::from_secs(30)).unwrap();
    drop(client);
    daemon.stop();
    let snapshot = dir.path().join("snapshots").join(format!("{:020}.snap", before.sequence));
    let full_bytes = std::fs::metadata(&snapshot).unwrap().len();

    // With the index: it takes in the 2,000 transfers from the journal, and with no new
    // record a snapshot at the same sequence replaces the full one.
    let args = [
        "--cold-index",
        "true",
        "--snapshot-every-records",
        "1000000",
        "--snapshot-every-events",
        "500",
    ];
    let mut daemon = TestDaemon::start_with(dir.path(), &args);
    let deadline = Instant::now() + Duration::from_secs(30);
    while daemon.metric("ledgerd_snapshots_total") == 0 {
        assert!(Instant::now() < deadline, "no snapshot once the index caught up");
        std::thread::sleep(Duration::from_millis(10));
    }
    daemon.wait_snapshots_idle(Duration::from_secs(30)).unwrap();
    let hot_bytes = std::fs::metadata(&snapshot).unwrap().len();
    assert!(
        hot_bytes * 4 < full_bytes,
        "the snapshot at {} still holds the history: {hot_bytes} bytes, {full_bytes} before",
        before.sequence
    );
    // One snapshot only: nothing more was indexed after it.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(daemon.metric("ledgerd_snapshots_total"), 1);

    // A restart loads it: the same state, every old id still answers `exists`.
    daemon.kill();
    daemon.restart();
    let mut client = daemon.client();
    let after = client.status().unwrap();
    assert_eq!(daemon.metric("ledgerd_snapshot_sequence"), before.sequence);
    assert_eq!(daemon.metric("ledgerd_transfers_in_memory"), 0, "loaded the hot state only");
    assert_eq!((after.sequence, after.state_hash), (before.sequence, before.state_hash));
    assert_eq!(after.transfers, TRANSFERS as u64);
    let results = client.create_transfers(&transfers[..100]).unwrap();
    assert_eq!(results.len(), 100);
    assert!(results.iter().all(|r| r.result == ResultCode::Exists), "{results:?}");
    assert_eq!(client.status().unwrap().sequence, before.sequence);
    assert_eq!(common::replay_hash(dir.path()), format!("{:032x}", before.state_hash));
}
