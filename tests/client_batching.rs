//! The Rust client crate's batching client against a real daemon: concurrent callers share
//! requests and each gets exactly its own results; an open linked chain never extends into
//! another caller's events; a daemon killed and restarted under load loses nothing and applies
//! nothing twice, because in-flight requests are re-sent with the same ids.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{transfer, wallet, TestDaemon};
use ledgerd::types::{Account, CreateResult, ResultCode, TransferFlags};
use ledgerd_client::{BatchingClient, BatchingOptions};

const THREADS: u64 = 16;

fn connect(daemon: &TestDaemon) -> BatchingClient {
    BatchingClient::connect(
        daemon.addr,
        BatchingOptions { token: daemon.options().token, ..Default::default() },
    )
    .expect("connect")
}

#[test]
fn concurrent_callers_get_exactly_their_own_results() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = TestDaemon::start(dir.path());
    let client = Arc::new(connect(&daemon));
    // Account 1 funds everyone; account 2 is a wallet with 1,000 units.
    let accounts = [Account { id: 1, ledger: 1, code: 1, ..Default::default() }, wallet(2)];
    assert_eq!(client.create_accounts(&accounts).unwrap(), vec![]);
    assert_eq!(client.create_transfers(&[transfer(1, 1, 2, 1_000)]).unwrap(), vec![]);

    let next_id = Arc::new(AtomicU64::new(100));
    let mut handles = Vec::new();
    for t in 0..THREADS {
        let client = Arc::clone(&client);
        let next_id = Arc::clone(&next_id);
        handles.push(std::thread::spawn(move || {
            let mut applied = 0u128;
            for round in 0..200u64 {
                // Three events per call: a good one, one with an unknown debit account, and a
                // payment out of the wallet that fails only once the wallet is empty.
                let base = u128::from(next_id.fetch_add(3, Ordering::Relaxed));
                let calls = [
                    transfer(base, 1, 2, 1),
                    transfer(base + 1, 999_999, 2, 1),
                    transfer(base + 2, 2, 1, 1),
                ];
                let results = client.create_transfers(&calls).expect("create_transfers");
                assert!(
                    results.iter().all(|r| r.index < 3),
                    "thread {t} round {round}: {results:?}"
                );
                assert_eq!(
                    results.first(),
                    Some(&CreateResult { index: 1, result: ResultCode::DebitAccountNotFound }),
                    "thread {t} round {round}"
                );
                applied += 3 - results.len() as u128;
                // A retry of the same call answers `exists` for what was applied.
                if round % 50 == 0 {
                    let again = client.create_transfers(&calls).unwrap();
                    assert_eq!(again[0], CreateResult { index: 0, result: ResultCode::Exists });
                }
            }
            applied
        }));
    }
    let applied: u128 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    // 16 threads made 3,200 create_transfers calls (plus 64 retries). Calls made while a
    // request waits for its flush travel together, so the daemon saw fewer requests than
    // calls. (How many fewer depends on scheduling, so only "fewer" is asserted: without
    // coalescing every call is its own request.)
    let (code, metrics) = daemon.http_get("/metrics");
    assert_eq!(code, 200);
    let requests: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("ledgerd_requests_total{operation=\"create_transfers\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    let calls = THREADS * (200 + 4) + 1;
    assert!(requests < calls, "{requests} requests for {calls} calls: no coalescing");
    let accounts = client.lookup_accounts(&[1, 2]).unwrap();
    // Every applied event moved one unit; the wallet never went below zero.
    assert_eq!(accounts[0].debits_posted + accounts[0].credits_posted, 1_000 + applied);
    assert!(accounts[1].debits_posted <= accounts[1].credits_posted);
}

#[test]
fn an_open_chain_never_joins_another_callers_events() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = TestDaemon::start(dir.path());
    let client = Arc::new(connect(&daemon));
    let accounts = [Account { id: 1, ledger: 1, code: 1, ..Default::default() }, wallet(2)];
    assert_eq!(client.create_accounts(&accounts).unwrap(), vec![]);
    let mut handles = Vec::new();
    for t in 0..THREADS {
        let client = Arc::clone(&client);
        handles.push(std::thread::spawn(move || {
            for round in 0..100u128 {
                let base = 1_000_000 * (u128::from(t) + 1) + 10 * round;
                if (round + u128::from(t)) % 2 == 0 {
                    // An open chain: fails as a whole, on its own.
                    let mut open = [transfer(base, 1, 2, 1), transfer(base + 1, 1, 2, 1)];
                    open[0].flags = TransferFlags::LINKED;
                    open[1].flags = TransferFlags::LINKED;
                    let results = client.create_transfers(&open).unwrap();
                    assert_eq!(
                        results.iter().map(|r| r.result).collect::<Vec<_>>(),
                        [ResultCode::LinkedEventFailed, ResultCode::LinkedEventChainOpen],
                        "thread {t} round {round}"
                    );
                } else {
                    // A plain call right behind it must succeed.
                    let results = client.create_transfers(&[transfer(base, 1, 2, 1)]).unwrap();
                    assert_eq!(results, vec![], "thread {t} round {round}");
                }
            }
        }));
    }
    for h in handles {
        h.join().unwrap();
    }
}

#[test]
fn nothing_lost_or_doubled_across_daemon_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = TestDaemon::start(dir.path());
    let client = Arc::new(
        BatchingClient::connect(
            daemon.addr,
            BatchingOptions { request_timeout: Duration::from_secs(60), ..Default::default() },
        )
        .unwrap(),
    );
    let accounts = [Account { id: 1, ledger: 1, code: 1, ..Default::default() }, wallet(2)];
    assert_eq!(client.create_accounts(&accounts).unwrap(), vec![]);
    // Callers keep sending until the daemon has been killed and restarted three times, so
    // every kill lands while requests are in flight.
    const PER_THREAD_MAX: u128 = 1_000_000;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut handles = Vec::new();
    for t in 0..4u128 {
        let client = Arc::clone(&client);
        let stop = Arc::clone(&stop);
        handles.push(std::thread::spawn(move || {
            let mut sent = 0u128;
            while sent < PER_THREAD_MAX && !stop.load(Ordering::Relaxed) {
                let id = 10 + t * PER_THREAD_MAX + sent;
                let results = client.create_transfers(&[transfer(id, 1, 2, 1)]).unwrap();
                // Applied now, or applied by an attempt whose reply was lost.
                assert!(
                    results.is_empty() || results[0].result == ResultCode::Exists,
                    "{id}: {results:?}"
                );
                sent += 1;
            }
            sent
        }));
    }
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(200));
        daemon.kill();
        daemon.restart();
    }
    stop.store(true, Ordering::Relaxed);
    let sent: u128 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert!(sent > 0);
    let wallet = client.lookup_accounts(&[2]).unwrap()[0];
    assert_eq!(wallet.credits_posted, sent, "every transfer applied exactly once");
}
