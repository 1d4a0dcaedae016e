//! End-to-end throughput and per-request latency: the daemon on loopback with its journal on
//! the real disk, 10,000 accounts, transfers in batches of 8189 (10,000,000 of them, the shape
//! of `tigerbeetle benchmark`) and of 1000, 100, 10 and 1, pipelined over a few connections,
//! with uniform and zipfian (exponent 1) account choice. Each configuration gets a fresh
//! daemon, so that its peak memory (VmHWM) is its own.
//!
//! `cargo bench --bench e2e` runs it all; `cargo test` (or `LEDGERD_BENCH_SMOKE=1`) runs a
//! smoke version that checks every transfer was applied.

mod common;

use std::time::Duration;

use common::load::{self, Spec, Transfers};
use common::{report, Daemon, Pick, Zipf};
use ledgerd::protocol::Operation;

const ACCOUNTS: u64 = 10_000;
const ZIPF_EXPONENT: f64 = 1.0;

/// One configuration of the run.
struct Config {
    batch: usize,
    zipf: bool,
    /// Transfers to send (rounded up to whole requests), unless `duration_max` comes first.
    transfers: u64,
    duration_max: Duration,
    connections: usize,
    window: usize,
}

fn main() {
    let full = common::full_run();
    common::announce("e2e", full);
    let accounts = if full { ACCOUNTS } else { 1000 };
    let configs = if full { full_configs() } else { smoke_configs() };
    let mut series = Vec::new();
    // `LEDGERD_E2E_ONLY=batch_8189_uniform` (a substring) runs only the matching configurations.
    let only = std::env::var("LEDGERD_E2E_ONLY").unwrap_or_default();
    for c in &configs {
        let pick = if c.zipf { "zipf" } else { "uniform" };
        if !format!("batch_{}_{pick}", c.batch).contains(&only) {
            continue;
        }
        let (name, h) = run(c, accounts, full);
        series.push((name, h));
    }
    let dir = common::results_dir(if full { "e2e" } else { "e2e-smoke" });
    report::write_all(&dir, "ledgerd end to end: per-request latency by batch size", &series);
}

fn full_configs() -> Vec<Config> {
    let mut v = Vec::new();
    for zipf in [false, true] {
        // The headline: 10M transfers, uniform. The rest are sized to run for seconds.
        let headline = (8189, if zipf { 2_000_000 } else { 10_000_000 }, 600, 2, 2);
        for (batch, transfers, secs, connections, window) in [
            headline,
            (1000, 2_000_000, 10, 2, 4),
            (100, 2_000_000, 10, 4, 16),
            (10, 1_000_000, 10, 8, 32),
            (1, 500_000, 10, 8, 64),
        ] {
            v.push(Config {
                batch,
                zipf,
                transfers,
                duration_max: Duration::from_secs(secs),
                connections,
                window,
            });
        }
    }
    v
}

fn smoke_configs() -> Vec<Config> {
    [(8189, false, 3 * 8189), (10, true, 2000), (1, false, 500)]
        .into_iter()
        .map(|(batch, zipf, transfers)| Config {
            batch,
            zipf,
            transfers,
            duration_max: Duration::from_secs(30),
            connections: 2,
            window: 4,
        })
        .collect()
}

fn run(c: &Config, accounts: u64, full: bool) -> (String, hdrhistogram::Histogram<u64>) {
    let data = common::data_dir();
    let mut daemon = Daemon::start(data.path(), &[]);
    let mut client = daemon.client();
    common::create_accounts(&mut client, 1, accounts, 0);
    let pick = if c.zipf {
        Pick::Zipf(Zipf::new(accounts as usize, ZIPF_EXPONENT))
    } else {
        Pick::Uniform(accounts)
    };
    let pick_name = pick.name();
    let mut work = Transfers::new(pick, 1, c.batch, 1, 0x5eed + c.batch as u64);
    let spec = Spec {
        connections: c.connections,
        window: c.window,
        requests_max: c.transfers.div_ceil(c.batch as u64),
        duration_max: c.duration_max,
        rate_per_s: None,
        operation: Operation::CreateTransfers,
    };
    let out = load::run(daemon.addr, &spec, &mut work);
    assert_eq!(work.failed, 0, "failed transfers: {:?}", work.failed_by);
    let status = client.status().expect("status");
    assert_eq!(status.transfers, out.events, "every acknowledged transfer is in the ledger");
    assert_eq!(status.accounts, accounts);

    let prefix = if c.zipf {
        format!("e2e.batch_{}.zipf", c.batch)
    } else {
        format!("e2e.batch_{}", c.batch)
    };
    println!("{prefix}.transfers: {}", out.events);
    println!("{prefix}.seconds: {:.2}", out.elapsed.as_secs_f64());
    println!("{prefix}.transfers_per_s: {:.0}", out.events_per_s());
    println!("{prefix}.requests_per_s: {:.0}", out.requests_per_s());
    println!("{prefix}.in_flight: {}", c.connections * c.window);
    report::print_latency(&prefix, &out.latency, false);
    println!("{prefix}.rss_mb: {:.0}", daemon.peak_rss_mb());
    // What the resident memory is at the end: anonymous (state, buffers) and file-backed
    // (mapped journal pages).
    for field in ["RssAnon:", "RssFile:"] {
        let mb = common::proc_status_kb(daemon.pid(), field) as f64 / 1024.0;
        println!("{prefix}.{}_mb: {mb:.0}", field.trim_end_matches(':').to_lowercase());
    }
    if !full {
        println!("{prefix}.smoke: ok");
    }
    drop(client);
    // SIGTERM: the daemon finishes its work (and any snapshot it started) before its data
    // directory is removed.
    daemon.stop();
    (format!("batch_{}_{pick_name}", c.batch), out.latency)
}
