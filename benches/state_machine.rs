//! State machine throughput alone (no journal, no network): 10,000 accounts, batches of 8189
//! single-phase transfers between uniformly chosen accounts.
//!
//! Prints `state_machine.transfers_per_s: N` and the batch latency percentiles.
//! `LEDGERD_BENCH_SMOKE=1` runs a short version (about a second) for CI;
//! `LEDGERD_BENCH_BATCHES=N` sets the number of timed batches (1222 gives 10 M transfers).
//! Also prints the rkyv encoding rate of a full event and the resident memory per transfer.

use std::time::Instant;

use hdrhistogram::Histogram;
use ledgerd::event::Event;
use ledgerd::state_machine::StateMachine;
use ledgerd::types::{Account, CreateResult, Transfer};

const ACCOUNTS: u64 = 100_000;
const BATCH_EVENTS: usize = 8189;

/// xorshift64*: deterministic, cheap, good enough to pick accounts.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// CPU time of the calling thread, in ns.
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: plain syscall writing into a local.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A `kB` field of /proc/self/status (0 where there is none).
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn main() {
    // Full only under `cargo bench` (which passes --bench); `cargo test` runs the smoke version.
    let smoke = std::env::var("LEDGERD_BENCH_SMOKE").is_ok_and(|v| v == "1")
        || !std::env::args().any(|a| a == "--bench");
    let batches: usize = std::env::var("LEDGERD_BENCH_BATCHES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if smoke { 30 } else { 300 });
    let rss_start = status_kib("VmRSS:");
    let warmup_batches: usize = if smoke { 3 } else { 30 };
    let total = (batches + warmup_batches) * BATCH_EVENTS;

    let mut sm = StateMachine::with_capacity(ACCOUNTS as usize, total);
    let mut results: Vec<CreateResult> = Vec::with_capacity(BATCH_EVENTS);
    let mut event = Event::default();
    let accounts: Vec<Account> = (1..=ACCOUNTS as u128)
        .map(|id| Account { id, ledger: 1, code: 1, ..Default::default() })
        .collect();
    for chunk in accounts.chunks(8190) {
        sm.create_accounts(1, chunk, &mut results, &mut event);
        assert!(results.is_empty());
    }

    // Prepare every batch up front so that only the state machine is measured.
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut next_id: u128 = 1;
    let mut make_batch = |batch: &mut Vec<Transfer>| {
        batch.clear();
        batch.extend((0..BATCH_EVENTS).map(|_| {
            let dr = rng.next() % ACCOUNTS + 1;
            let mut cr = rng.next() % ACCOUNTS + 1;
            if cr == dr {
                cr = dr % ACCOUNTS + 1;
            }
            next_id += 1;
            Transfer {
                id: next_id,
                debit_account_id: dr as u128,
                credit_account_id: cr as u128,
                amount: 1 + (rng.next() % 1000) as u128,
                ledger: 1,
                code: 1,
                ..Default::default()
            }
        }));
    };
    // Batches are generated outside the timed region, into one reused buffer.
    let mut batch: Vec<Transfer> = Vec::with_capacity(BATCH_EVENTS);

    let mut now_ns: u64 = 1_700_000_000_000_000_000;
    for _ in 0..warmup_batches {
        make_batch(&mut batch);
        now_ns += 1_000_000;
        sm.create_transfers(now_ns, &batch, &mut results, &mut event);
        assert!(results.is_empty());
    }

    let mut latency_ns = Histogram::<u64>::new(3).expect("histogram");
    let mut applying = std::time::Duration::ZERO;
    let cpu_start = thread_cpu_ns();
    for _ in 0..batches {
        make_batch(&mut batch);
        now_ns += 1_000_000;
        let t0 = Instant::now();
        sm.create_transfers(now_ns, &batch, &mut results, &mut event);
        let took = t0.elapsed();
        applying += took;
        latency_ns.record(took.as_nanos() as u64).expect("record");
        assert!(results.is_empty());
        assert_eq!(event.transfers.len(), BATCH_EVENTS);
    }
    let applied = (batches * BATCH_EVENTS) as f64;
    let per_s = applied / applying.as_secs_f64();
    // On a shared machine the thread's CPU time is steadier than wall time (it still includes
    // batch generation, which is small).
    let cpu_per_s = applied / ((thread_cpu_ns() - cpu_start) as f64 / 1e9);

    for totals in sm.ledger_totals() {
        assert_eq!(totals.debits_posted, totals.credits_posted);
    }
    // rkyv encoding of the last full event (8189 transfers + balance pairs), as the business
    // thread does before every journal append.
    let mut encoded = rkyv::util::AlignedVec::<16>::new();
    ledgerd::event::encode(&event, &mut encoded);
    let rounds = if smoke { 5 } else { 50 };
    let mut encode_ns = Histogram::<u64>::new(3).expect("histogram");
    for _ in 0..rounds {
        let t0 = Instant::now();
        ledgerd::event::encode(&event, &mut encoded);
        encode_ns.record(t0.elapsed().as_nanos() as u64).expect("record");
    }
    let encode_p50_us = encode_ns.value_at_quantile(0.5) as f64 / 1e3;
    let rss_end = status_kib("VmRSS:");
    let transfers = sm.counts().transfers;
    println!("event.encode_bytes: {}", encoded.len());
    println!("event.encode_us_p50: {encode_p50_us:.1}");
    println!("event.encode_transfers_per_s: {:.0}", BATCH_EVENTS as f64 / (encode_p50_us / 1e6));
    println!("state_machine.vm_hwm_mib: {:.0}", status_kib("VmHWM:") as f64 / 1024.0);
    println!(
        "state_machine.rss_bytes_per_transfer: {:.0}",
        (rss_end.saturating_sub(rss_start) * 1024) as f64 / transfers as f64
    );

    let hash_started = Instant::now();
    let hash = sm.state_hash();
    let hash_ms = hash_started.elapsed().as_secs_f64() * 1e3;

    println!("state_machine.accounts: {ACCOUNTS}");
    println!("state_machine.batch_events: {BATCH_EVENTS}");
    println!("state_machine.batches: {batches}");
    println!("state_machine.transfers_per_s: {per_s:.0}");
    println!("state_machine.transfers_per_cpu_s: {cpu_per_s:.0}");
    println!(
        "state_machine.batch_latency_us_p50: {:.1}",
        latency_ns.value_at_quantile(0.50) as f64 / 1e3
    );
    println!(
        "state_machine.batch_latency_us_p99: {:.1}",
        latency_ns.value_at_quantile(0.99) as f64 / 1e3
    );
    println!("state_machine.batch_latency_us_max: {:.1}", latency_ns.max() as f64 / 1e3);
    println!("state_machine.transfers: {}", sm.counts().transfers);
    println!("state_machine.state_hash_ms: {hash_ms:.1} (hash {hash:032x})");
}
