//! Latency of one transfer per request, on loopback with the journal on the real disk:
//! (a) one client with one request in flight, beside the disk's write + fdatasync floor
//!     measured in the same run;
//! (b) 50 clients with one request in flight each (closed loop): throughput and percentiles;
//! (c) open loop at 25%, 50% and 75% of (b)'s throughput, 50 connections, latency measured
//!     from each request's intended send time (coordinated omission corrected, as wrk2 does),
//!     percentiles up to p99.99;
//! (d) what TLS costs: one blocking client, one transfer per request, over plain TCP and over
//!     TLS 1.3 (a second daemon with a self-signed certificate), measured the same way.
//!
//! `cargo bench --bench latency` runs it all; `cargo test` (or `LEDGERD_BENCH_SMOKE=1`) runs a
//! smoke version that checks every transfer was applied.
//!
//! For profiling: `LEDGERD_LATENCY_ONLY=c50` runs only (b), for `LEDGERD_LATENCY_SECS`
//! seconds (default 10), and prints `latency.c50.daemon_pid` as it starts, so that a profiler
//! (`perf stat -p`, `strace -c -f -p`) can attach to the daemon for that phase alone. Each
//! phase prints the daemon's CPU time per request (user + system, all threads, from /proc).

mod common;

use std::time::Duration;

use common::load::{self, Spec, Transfers};
use common::{report, Daemon, Pick};
use ledgerd::protocol::Operation;

const ACCOUNTS: u64 = 10_000;
const CLIENTS: usize = 50;

/// `requests` round trips of one transfer (account 1 to 2) on a blocking client; returns the
/// latency histogram in nanoseconds.
fn blocking_single(
    client: &mut ledgerd_client::Client,
    requests: u64,
    next_id: &mut u128,
) -> hdrhistogram::Histogram<u64> {
    let mut h = hdrhistogram::Histogram::<u64>::new(3).expect("histogram");
    for _ in 0..requests {
        let t = ledgerd::types::Transfer {
            id: 1_000_000_000 + *next_id,
            debit_account_id: 1,
            credit_account_id: 2,
            amount: 1,
            ledger: 1,
            code: 1,
            ..Default::default()
        };
        *next_id += 1;
        let started = std::time::Instant::now();
        let results = client.create_transfers(&[t]).expect("served");
        h.record(started.elapsed().as_nanos() as u64).expect("record");
        assert!(results.is_empty(), "{results:?}");
    }
    h
}

fn main() {
    let full = common::full_run();
    common::announce("latency", full);
    let (single_requests, mut phase, floor_iterations) = if full {
        (20_000, Duration::from_secs(10), 5000)
    } else {
        (200, Duration::from_millis(300), 200)
    };
    if let Some(secs) = std::env::var("LEDGERD_LATENCY_SECS").ok().and_then(|v| v.parse().ok()) {
        phase = Duration::from_secs_f64(secs);
    }
    let c50_only = std::env::var("LEDGERD_LATENCY_ONLY").is_ok_and(|v| v == "c50");
    let data = common::data_dir();
    let mut daemon = Daemon::start(&data.path().join("ledgerd"), &[]);
    let mut client = daemon.client();
    common::create_accounts(&mut client, 1, ACCOUNTS, 0);
    let mut next_id: u128 = 1;
    let mut applied = 0u64;
    let mut series = Vec::new();

    // The floor: what making 4 KiB durable costs on this disk, now: appending into a
    // preallocated file as the journal does (the first write to each block converts an
    // unwritten extent, a metadata commit), and overwriting written blocks (data only).
    let floor = common::disk_floor(data.path(), 4096, floor_iterations, false);
    let floor_p50_us = report::us(floor.value_at_quantile(0.5));
    println!("disk.write_fdatasync_4k_us_p50: {floor_p50_us:.1}");
    println!("disk.write_fdatasync_4k_us_p99: {:.1}", report::us(floor.value_at_quantile(0.99)));
    let floor_overwrite = common::disk_floor(data.path(), 4096, floor_iterations, true);
    let overwrite_p50_us = report::us(floor_overwrite.value_at_quantile(0.5));
    println!("disk.overwrite_fdatasync_4k_us_p50: {overwrite_p50_us:.1}");
    println!(
        "disk.overwrite_fdatasync_4k_us_p99: {:.1}",
        report::us(floor_overwrite.value_at_quantile(0.99))
    );

    let addr = daemon.addr;
    let pid = daemon.pid();
    let mut phase_run = |connections: usize, requests_max: u64, duration_max, rate| {
        let mut work = Transfers::new(Pick::Uniform(ACCOUNTS), 1, 1, next_id, next_id as u64);
        let spec = Spec {
            connections,
            window: 1,
            requests_max,
            duration_max,
            rate_per_s: rate,
            operation: Operation::CreateTransfers,
        };
        let cpu_before = common::cpu_us(pid);
        let out = load::run(addr, &spec, &mut work);
        let cpu_us_per_request = (common::cpu_us(pid) - cpu_before) / out.requests.max(1) as f64;
        assert_eq!(work.failed, 0, "failed transfers: {:?}", work.failed_by);
        next_id = work.next_id;
        applied += out.events;
        (out, cpu_us_per_request)
    };

    let print_c50 = |c50: &load::Outcome, cpu: f64| {
        println!("latency.c50.transfers_per_s: {:.0}", c50.events_per_s());
        println!("latency.c50.cpu_us_per_request: {cpu:.2}");
        report::print_latency("latency.c50", &c50.latency, true);
    };
    if c50_only {
        println!("latency.c50.daemon_pid: {pid}");
        let (c50, cpu) = phase_run(CLIENTS, u64::MAX, phase, None);
        print_c50(&c50, cpu);
        let status = client.status().expect("status");
        assert_eq!(status.transfers, applied, "every acknowledged transfer is in the ledger");
        drop(client);
        daemon.stop();
        return;
    }

    // (a) one client, one request in flight.
    let (single, single_cpu) = phase_run(1, single_requests, phase * 3, None);
    report::print_latency("latency.single", &single.latency, true);
    println!("latency.single.transfers_per_s: {:.0}", single.events_per_s());
    println!("latency.single.cpu_us_per_request: {single_cpu:.2}");
    let single_p50_us = report::us(single.latency.value_at_quantile(0.5));
    println!("latency.single.p50_over_disk_floor: {:.2}", single_p50_us / floor_p50_us);
    println!("latency.single.p50_over_overwrite_floor: {:.2}", single_p50_us / overwrite_p50_us);

    // (b) 50 clients, one request in flight each.
    let (c50, c50_cpu) = phase_run(CLIENTS, u64::MAX, phase, None);
    let max_rate = c50.events_per_s();
    print_c50(&c50, c50_cpu);

    series.push(("disk_write_fdatasync_4k".to_string(), floor));
    series.push(("disk_overwrite_fdatasync_4k".to_string(), floor_overwrite));
    series.push(("single".to_string(), single.latency));
    series.push(("c50_closed".to_string(), c50.latency));

    // (c) open loop at fixed arrival rates.
    for percent in [25u32, 50, 75] {
        let rate = max_rate * f64::from(percent) / 100.0;
        let (open, _) = phase_run(CLIENTS, u64::MAX, phase, Some(rate));
        let prefix = format!("latency.open_{percent}pct");
        println!("{prefix}.target_per_s: {rate:.0}");
        println!("{prefix}.transfers_per_s: {:.0}", open.events_per_s());
        report::print_latency(&prefix, &open.latency, true);
        series.push((format!("open_{percent}pct"), open.latency));
    }

    // (d) TLS against plain TCP, same blocking client and request on both.
    let plain = blocking_single(&mut daemon.client(), single_requests, &mut next_id);
    applied += plain.len();
    report::print_latency("latency.single_blocking", &plain, false);
    let (mut tls_daemon, tls_options) = Daemon::start_tls(&data.path().join("ledgerd-tls"), &[]);
    let mut tls_client =
        ledgerd_client::Client::connect_with(tls_daemon.addr, tls_options).expect("TLS connect");
    common::create_accounts(&mut tls_client, 1, 2, 0);
    let mut tls_next_id = 1;
    let tls = blocking_single(&mut tls_client, single_requests, &mut tls_next_id);
    report::print_latency("latency.single_tls", &tls, false);
    println!(
        "latency.single_tls.p50_over_plain: {:.2}",
        tls.value_at_quantile(0.5) as f64 / plain.value_at_quantile(0.5) as f64
    );
    drop(tls_client);
    tls_daemon.stop();
    series.push(("single_blocking".to_string(), plain));
    series.push(("single_tls".to_string(), tls));

    let status = client.status().expect("status");
    assert_eq!(status.transfers, applied, "every acknowledged transfer is in the ledger");
    if !full {
        println!("latency.smoke: ok ({applied} transfers)");
    }
    drop(client);
    daemon.stop();
    let dir = common::results_dir(if full { "latency" } else { "latency-smoke" });
    report::write_all(&dir, "ledgerd: one transfer per request", &series);
}
