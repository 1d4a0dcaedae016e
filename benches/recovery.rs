//! Recovery time: 1,000,000 accounts, a snapshot of them, 1,000,000 more events (transfers,
//! in batches of 8189) in the journal after it; SIGKILL; then the time from the new process's
//! start (just before `spawn`) to its first successful reply (`status`) = the RTO. Repeated a
//! few times (kill, restart), median reported. Each restart must answer with the state hash the
//! daemon reported before the kill.
//!
//! The snapshot is written with `ledger-replay snapshot` while the daemon is stopped, and the
//! daemon runs with automatic snapshots off, so that every restart replays exactly the
//! 1,000,000 events after the snapshot.
//!
//! `cargo bench --bench recovery` runs it all; `cargo test` (or `LEDGERD_BENCH_SMOKE=1`) runs a
//! smoke version with the same checks on 20,000 accounts and events.

mod common;
#[path = "recovery/engine.rs"]
mod engine;

use std::process::Command;
use std::time::{Duration, Instant};

use common::load::{self, Spec, Transfers};
use common::{Daemon, Pick};
use ledgerd::protocol::Operation;

const BATCH: usize = 8189;

fn main() {
    let full = common::full_run();
    common::announce("recovery", full);
    let (accounts, events, restarts) =
        if full { (1_000_000u64, 1_000_000u64, 5) } else { (20_000, 20_000, 2) };

    // 0. The engine alone, in process: snapshot load and replay speed.
    {
        let data = common::data_dir();
        engine::run(data.path(), accounts, events);
    }

    let data = common::data_dir();
    let args = ["--snapshot-every-records", "0", "--snapshot-every-events", "0"];

    // 1. The accounts, then a snapshot of them.
    let mut daemon = Daemon::start(data.path(), &args);
    {
        let mut client = daemon.client();
        common::create_accounts(&mut client, 1, accounts, 0);
    }
    daemon.stop();
    let out = Command::new(env!("CARGO_BIN_EXE_ledger-replay"))
        .arg("snapshot")
        .arg(data.path())
        .output()
        .expect("run ledger-replay snapshot");
    assert!(
        out.status.success(),
        "ledger-replay snapshot: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // "snapshot: PATH at sequence N"
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    let snapshot_sequence: u64 = said
        .split_whitespace()
        .last()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no snapshot written: {said}"));

    // 2. The events after the snapshot.
    daemon.spawn();
    daemon.wait_ready(Duration::from_secs(120));
    let mut work = Transfers::new(Pick::Uniform(accounts), 1, BATCH, 1, 7);
    let spec = Spec {
        connections: 1,
        window: 4,
        requests_max: events.div_ceil(BATCH as u64),
        duration_max: Duration::from_secs(600),
        rate_per_s: None,
        operation: Operation::CreateTransfers,
    };
    let outcome = load::run(daemon.addr, &spec, &mut work);
    assert_eq!(work.failed, 0);
    let before = daemon.client().status().expect("status");
    assert_eq!(before.transfers, outcome.events);
    assert!(before.sequence > snapshot_sequence);
    assert_eq!(before.snapshot_sequence, snapshot_sequence, "the daemon started from the snapshot");
    println!("recovery.accounts: {accounts}");
    println!("recovery.events_after_snapshot: {}", outcome.events);
    println!("recovery.snapshot_sequence: {snapshot_sequence}");
    println!("recovery.journal_records_after_snapshot: {}", before.sequence - snapshot_sequence);
    println!("recovery.data_dir_mb: {:.0}", dir_bytes(data.path()) as f64 / 1048576.0);

    // 3. SIGKILL, restart, time to the first reply.
    let mut rto_ms = Vec::new();
    for _ in 0..restarts {
        daemon.kill();
        let start = Instant::now();
        daemon.spawn();
        let ready = daemon.wait_ready(Duration::from_secs(120));
        rto_ms.push(ready.duration_since(start).as_secs_f64() * 1000.0);
        let after = daemon.client().status().expect("status");
        assert_eq!(after.state_hash, before.state_hash, "same state after recovery");
        assert_eq!(after.sequence, before.sequence);
        assert_eq!(after.snapshot_sequence, snapshot_sequence, "recovered from the snapshot");
        assert_eq!((after.accounts, after.transfers), (before.accounts, before.transfers));
    }
    let rss = daemon.peak_rss_mb();
    daemon.kill();
    let mut sorted = rto_ms.clone();
    sorted.sort_by(f64::total_cmp);
    println!("recovery.rto_ms: {:.1}", sorted[sorted.len() / 2]);
    println!("recovery.rto_ms_min: {:.1}", sorted[0]);
    println!("recovery.rto_ms_max: {:.1}", sorted[sorted.len() - 1]);
    println!(
        "recovery.rto_ms_all: {}",
        rto_ms.iter().map(|v| format!("{v:.1}")).collect::<Vec<_>>().join(" ")
    );
    println!("recovery.rss_mb: {rss:.0}");
    println!("recovery.same_state_hash: ok");
}

fn dir_bytes(path: &std::path::Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(path).expect("read dir").flatten() {
        let meta = entry.metadata().expect("metadata");
        total += if meta.is_dir() { dir_bytes(&entry.path()) } else { meta.len() };
    }
    total
}
