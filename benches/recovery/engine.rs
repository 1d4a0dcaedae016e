//! The engine's own recovery, in process: the same shape as the daemon's RTO run (accounts, a
//! snapshot, then events after it), timed by phase with `recovery::recover` itself.

use std::path::Path;
use std::time::Instant;

use ledgerd::event::{self, Event};
use ledgerd::recovery::{self, RecoveryConfig};
use ledgerd::types::{Account, CreateResult, Transfer};

const BATCH: usize = 8189;

/// Fills `dir` with `accounts` accounts, a snapshot, then `events` transfers; recovers it and
/// prints `recovery.snapshot_load_ms`, `recovery.replay_events_per_s` and `recovery.total_ms`.
pub fn run(dir: &Path, accounts: u64, events: u64) {
    let config = RecoveryConfig::new(dir);
    let recovered = recovery::recover(&config).expect("open an empty data directory");
    let (mut state, mut journal) = (recovered.state, recovered.journal);
    let (mut results, mut event) = (Vec::<CreateResult>::new(), Event::default());
    let mut encoded = rkyv::util::AlignedVec::<16>::new();
    let mut now = 1u64;
    let mut append = |event: &Event, journal: &mut ledgerd::journal::Journal| {
        event::encode(event, &mut encoded);
        journal.append(&encoded).expect("append");
    };
    let all: Vec<Account> = (1..=u128::from(accounts))
        .map(|id| Account { id, ledger: 1, code: 1, ..Default::default() })
        .collect();
    for chunk in all.chunks(BATCH) {
        now += 1;
        state.create_accounts(now, chunk, &mut results, &mut event);
        assert!(results.is_empty(), "accounts refused: {results:?}");
        append(&event, &mut journal);
    }
    journal.flush().expect("flush");
    drop(journal);
    let written = recovery::build_snapshot(&config, None, 3).expect("snapshot").expect("not empty");

    let recovered = recovery::recover(&config).expect("reopen");
    let (mut state, mut journal) = (recovered.state, recovered.journal);
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut transfers = Vec::with_capacity(BATCH);
    let mut id = 1u128;
    let mut left = events;
    while left > 0 {
        transfers.clear();
        for _ in 0..left.min(BATCH as u64) {
            let debit = next() % accounts + 1;
            let credit = (debit + next() % (accounts - 1)) % accounts + 1;
            transfers.push(Transfer {
                id,
                debit_account_id: u128::from(debit),
                credit_account_id: u128::from(credit),
                amount: 1,
                ledger: 1,
                code: 1,
                ..Default::default()
            });
            id += 1;
        }
        left -= transfers.len() as u64;
        now += 1;
        state.create_transfers(now, &transfers, &mut results, &mut event);
        assert!(results.is_empty(), "transfers refused: {results:?}");
        append(&event, &mut journal);
    }
    journal.flush().expect("flush");
    let live_hash = state.state_hash();
    drop((state, journal));

    let started = Instant::now();
    let recovered = recovery::recover(&config).expect("recover");
    let total = started.elapsed();
    assert_eq!(
        recovered.report.snapshot_sequence,
        Some(written.sequence),
        "recovered from the snapshot"
    );
    assert_eq!(recovered.state.state_hash(), live_hash, "recovered state equals the live state");
    let report = &recovered.report;
    let replay_s = report.replay.as_secs_f64().max(1e-9);
    println!("recovery.journal_open_ms: {:.1}", report.journal_open.as_secs_f64() * 1e3);
    println!("recovery.snapshot_load_ms: {:.1}", report.snapshot_load.as_secs_f64() * 1e3);
    println!("recovery.replayed_events: {}", report.replayed_events);
    println!("recovery.replay_events_per_s: {:.0}", report.replayed_events as f64 / replay_s);
    println!("recovery.total_ms: {:.1}", total.as_secs_f64() * 1e3);
}
