//! History beyond RAM (issue "Storage beyond RAM"): what happens to throughput, batch latency,
//! memory, snapshot size, retries of old ids, queries of old history and the restart time as
//! the ledger holds more and more transfers.
//!
//! One daemon on a fresh data directory, 10,000 accounts (`LEDGERD_HISTORY_ACCOUNTS`), then
//! transfers in batches of 8189 (2 connections × 2 in flight, uniform accounts) in windows of
//! 10,000,000 up to `LEDGERD_HISTORY_TRANSFERS` (default 100,000,000), with fresh ids across
//! windows. After each window: one line of figures, and the size of a snapshot that covers the
//! window (the daemon runs with `--snapshot-every-records 1`, so that one always starts once
//! the load stops; one that fails is reported). Then 10,000 byte-identical retries of random transfers of the first window
//! (each must be `exists`), 10,000 `get_account_transfers` pages over the first window's
//! history, and a SIGKILL and restart timed to the first reply.
//!
//! Guards, because the current daemon keeps every transfer in memory: the free disk space is
//! checked first (about 300 bytes per transfer of journal and snapshots) and the transfer
//! count lowered to what fits; before each window, if the daemon's RSS plus the window's
//! expected growth would pass `LEDGERD_HISTORY_RSS_STOP_MB` (default 14,000) the load stops;
//! before every chunk of ~2M transfers, if the daemon plus its snapshot process (which holds
//! the state twice or more) could not fit in the machine's memory the load stops too; and if
//! the machine's available memory falls below 2 GiB during a chunk, the snapshot process is
//! killed and the load stops after the chunk.
//!
//! `cargo bench --bench history` runs it all; `cargo test` (or `LEDGERD_BENCH_SMOKE=1`) runs a
//! smoke version of a few seconds (3 windows of 3 requests) with the same checks.

mod common;

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::load::{self, Spec, Transfers, Workload};
use common::{report, Daemon, Pick, Rng};
use hdrhistogram::Histogram;
use ledgerd::protocol::{decode_create_results, Operation, Status};
use ledgerd::types::{AccountFilter, AccountFilterFlags, ResultCode, Transfer};

const BATCH: usize = 8189;
/// The load generator's seed; the retries regenerate the first window from it.
const SEED: u64 = 0x4157_0e11_7157_0a11;
/// Disk per transfer, journal and snapshots together, before anything is measured.
const DISK_BYTES_PER_TRANSFER: u64 = 300;
/// Left free on the data directory's filesystem.
const DISK_RESERVE: u64 = 2 << 30;
/// Daemon memory per transfer before anything is measured.
const RSS_BYTES_PER_TRANSFER: f64 = 170.0;
/// The snapshot process's peak over the daemon's RSS before one is measured: it loads the
/// previous snapshot's body beside the state it builds, then writes the image beside it.
const SNAPSHOT_PROCESS_RATIO: f64 = 2.0;
/// Memory the projection leaves to everything else on the machine.
const MEMORY_RESERVE_MB: f64 = 4096.0;
/// Below this much available memory during a chunk, the snapshot process is killed.
const MEMORY_EMERGENCY_MB: f64 = 2048.0;
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// The sampler stops by itself after a day.
const SAMPLES_MAX: u64 = 24 * 3600 * 10;
const PAGE: u32 = 100;
/// No snapshot process for this long while none covers the window: the last one failed.
const SNAPSHOT_IDLE: Duration = Duration::from_secs(5);
const MB: f64 = 1024.0 * 1024.0;

/// TigerBeetle's published figures, drawn on the plot as references.
const TB_RSS_MB: f64 = 3033.0;
const TB_FRESH_TPS: (f64, f64) = (205_000.0, 234_000.0);
const TB_62GB_TPS: f64 = 57_000.0;
const TB_10M_SMALL_CACHE: (f64, f64) = (10_000_000.0, 36_000.0);

struct Plan {
    accounts: u64,
    /// Requests of BATCH transfers in all.
    requests: u64,
    window_requests: u64,
    chunk_requests: u64,
    retries: usize,
    queries: usize,
    rss_stop_mb: f64,
    /// History in the disk index (`--cold-index true`; `LEDGERD_HISTORY_COLD=0` keeps
    /// everything in memory, as before it).
    cold: bool,
}

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    let value = value.replace(['_', ','], "");
    Some(value.parse().unwrap_or_else(|_| panic!("{name}={value}: not a number")))
}

impl Plan {
    fn new(full: bool) -> Plan {
        let accounts =
            env_u64("LEDGERD_HISTORY_ACCOUNTS").unwrap_or(if full { 10_000 } else { 1000 });
        let rss_stop_mb = env_u64("LEDGERD_HISTORY_RSS_STOP_MB").unwrap_or(14_000) as f64;
        let cold = env_u64("LEDGERD_HISTORY_COLD").unwrap_or(1) != 0;
        if full {
            let transfers = env_u64("LEDGERD_HISTORY_TRANSFERS").unwrap_or(100_000_000);
            let window_requests = 10_000_000u64.div_ceil(BATCH as u64);
            Plan {
                accounts,
                requests: transfers.div_ceil(BATCH as u64).max(1),
                window_requests,
                chunk_requests: window_requests.div_ceil(5),
                retries: 10_000,
                queries: 10_000,
                rss_stop_mb,
                cold,
            }
        } else {
            Plan {
                accounts,
                requests: 9,
                window_requests: 3,
                chunk_requests: 3,
                retries: 100,
                queries: 100,
                rss_stop_mb,
                cold,
            }
        }
    }

    /// Disk per transfer before anything is measured: the index adds its own copy.
    fn disk_bytes_per_transfer(&self) -> u64 {
        if self.cold {
            2 * DISK_BYTES_PER_TRANSFER
        } else {
            DISK_BYTES_PER_TRANSFER
        }
    }
}

/// The transfers workload, with `ledger_full` refusals counted (and their ids kept) instead
/// of failing the run.
struct Capped {
    inner: Transfers,
    /// Transfers in requests refused with `ledger_full`.
    full: u64,
    /// Transfers in requests answered `busy` (history on disk: the index is behind).
    busy: u64,
    /// Per connection, the first id and count of each request in flight, oldest first.
    in_flight: Vec<VecDeque<(u128, u32)>>,
    /// Id ranges (first, end) of the refused requests.
    refused: Vec<(u128, u128)>,
}

impl Capped {
    fn new(inner: Transfers) -> Capped {
        Capped { inner, full: 0, busy: 0, in_flight: Vec::new(), refused: Vec::new() }
    }
}

impl Workload for Capped {
    fn body(&mut self, conn: usize, out: &mut Vec<u8>) -> u32 {
        let first = self.inner.next_id;
        let n = self.inner.body(conn, out);
        if self.in_flight.len() <= conn {
            self.in_flight.resize_with(conn + 1, VecDeque::new);
        }
        self.in_flight[conn].push_back((first, n));
        n
    }

    fn reply(&mut self, conn: usize, events: u32, status: Status, body: &[u8]) {
        let (first, n) = self.in_flight[conn].pop_front().expect("a request in flight");
        assert_eq!(n, events);
        if status == Status::LedgerFull {
            self.full += u64::from(events);
            self.refused.push((first, first + u128::from(n)));
        } else if status == Status::Busy {
            // History on disk: memory holds its limit of transfers the index does not yet
            // hold. Not stored; counted and skipped (the load goes on).
            self.busy += u64::from(events);
            self.refused.push((first, first + u128::from(n)));
        } else {
            self.inner.reply(conn, events, status, body);
        }
    }
}

/// What one window measured.
struct Window {
    transfers_stored: u64,
    transfers_per_s: f64,
    rss_mb: f64,
    snapshot_mb: Option<f64>,
}

fn main() {
    let full = common::full_run();
    common::announce("history", full);
    let mut plan = Plan::new(full);
    let data = common::data_dir();

    // 1. Disk.
    let free = free_bytes(data.path());
    let disk_per_transfer = plan.disk_bytes_per_transfer();
    let need = plan.requests * BATCH as u64 * disk_per_transfer;
    println!("history.disk_free_gb: {:.1}", free as f64 / 1e9);
    println!(
        "history.disk_needed_gb: {:.1} (~{disk_per_transfer} bytes per transfer of journal, snapshots and index)",
        need as f64 / 1e9
    );
    if need + DISK_RESERVE > free {
        let fits = free.saturating_sub(DISK_RESERVE) / disk_per_transfer / BATCH as u64;
        assert!(fits > 0, "no room on the data directory's filesystem for even one request");
        println!(
            "history.note: NOT ENOUGH DISK: {:.1} GB free, {:.1} GB needed for {} transfers; \
             sending {} transfers instead",
            free as f64 / 1e9,
            need as f64 / 1e9,
            plan.requests * BATCH as u64,
            fits * BATCH as u64
        );
        plan.requests = fits;
    }
    println!("history.accounts: {}", plan.accounts);
    println!("history.transfers_target: {}", plan.requests * BATCH as u64);
    println!("history.window_transfers: {}", plan.window_requests * BATCH as u64);
    let history_transfers = (plan.requests * BATCH as u64).max(1 << 20).to_string();
    let mut flags = vec!["--snapshot-every-records", "1"];
    if plan.cold {
        // History in the disk index; its id filter sized for the whole run.
        flags.extend(["--cold-index", "true", "--cold-index-transfers", &history_transfers]);
    }
    println!("history.daemon_flags: {}", flags.join(" "));

    // 2. The daemon and its accounts.
    let mut daemon = Daemon::start(data.path(), &flags);
    let mut client = daemon.client();
    common::create_accounts(&mut client, 1, plan.accounts, 0);
    let watch = Arc::new(Watch::default());
    let sampler = {
        let (watch, pid) = (Arc::clone(&watch), daemon.pid());
        std::thread::spawn(move || watch.run(pid))
    };
    let rss_base_mb = rss_mb(daemon.pid());
    let clock_start = client.status().expect("status").clock_ns;

    // 3. The windows.
    let mut work = Capped::new(Transfers::new(Pick::Uniform(plan.accounts), 1, BATCH, 1, SEED));
    let spec = |requests| Spec {
        connections: 2,
        window: 2,
        requests_max: requests,
        duration_max: Duration::from_secs(3600),
        rate_per_s: None,
        operation: Operation::CreateTransfers,
    };
    let mut windows: Vec<Window> = Vec::new();
    let mut batches = report::histogram();
    let mut acknowledged = 0u64;
    let mut requests_left = plan.requests;
    // Retries pick among the first window's stored ids: (first, end) ranges.
    let mut first_window_ids: Vec<(u128, u128)> = Vec::new();
    let mut clock_first_window_end = 0u64;
    let mut stopped: Option<String> = None;
    let window_count = plan.requests.div_ceil(plan.window_requests);
    for n in 1..=window_count {
        let window_requests = plan.window_requests.min(requests_left);
        if window_requests == 0 {
            break;
        }
        let rss_now = rss_mb(daemon.pid());
        let per_transfer = rss_per_transfer(rss_now, rss_base_mb, acknowledged);
        let growth_mb = per_transfer * (window_requests * BATCH as u64) as f64 / MB;
        if rss_now + growth_mb > plan.rss_stop_mb {
            stopped = Some(format!(
                "rss_mb={rss_now:.0} at transfers={acknowledged} (the next window would add \
                 ~{growth_mb:.0} MB, past LEDGERD_HISTORY_RSS_STOP_MB={:.0})",
                plan.rss_stop_mb
            ));
            break;
        }
        if let Some(reason) = disk_short(&plan, data.path(), acknowledged, window_requests) {
            println!("history.note: NOT ENOUGH DISK for the next window: {reason}");
            stopped = Some(format!("rss_mb={rss_now:.0} at transfers={acknowledged} ({reason})"));
            break;
        }
        let p = project(&watch, daemon.pid(), rss_base_mb, acknowledged, plan.chunk_requests);
        println!(
            "history.window.{n}.guard: rss_mb={rss_now:.0} after_window_mb={:.0} \
             stop_mb={:.0} after_chunk_mb={:.0} snapshot_ratio={:.2} with_snapshot_mb={:.0} \
             budget_mb={:.0}",
            rss_now + growth_mb,
            plan.rss_stop_mb,
            p.next,
            p.ratio,
            p.projected,
            p.budget
        );
        let mut latency = report::histogram();
        let (mut elapsed, mut sent, mut created) = (Duration::ZERO, 0u64, 0u64);
        let mut window_busy = 0u64;
        for _ in 0..window_requests.div_ceil(plan.chunk_requests) {
            let chunk = plan.chunk_requests.min(window_requests - sent);
            if let Some(reason) =
                memory_short(&watch, daemon.pid(), rss_base_mb, acknowledged, chunk)
            {
                stopped = Some(format!(
                    "rss_mb={:.0} at transfers={acknowledged} ({reason})",
                    rss_mb(daemon.pid())
                ));
                break;
            }
            let (full_before, busy_before) = (work.full, work.busy);
            let out = load::run(daemon.addr, &spec(chunk), &mut work);
            assert_eq!(work.inner.failed, 0, "failed transfers: {:?}", work.inner.failed_by);
            assert_eq!(out.requests, chunk, "every request of the chunk answered");
            let full = work.full - full_before;
            let busy = work.busy - busy_before;
            window_busy += busy;
            acknowledged += out.events - full - busy;
            created += out.events - full - busy;
            sent += chunk;
            elapsed += out.elapsed;
            latency.add(&out.latency).expect("same histogram bounds");
            if full > 0 {
                stopped = Some(format!(
                    "rss_mb={:.0} at transfers={acknowledged} (ledger_full: the daemon's transfer \
                     capacity, --transfers-max or LEDGERD_TRANSFERS_MAX, refused {full})",
                    rss_mb(daemon.pid())
                ));
                break;
            }
        }
        if sent == 0 {
            break;
        }
        requests_left -= sent;
        let rss_after = rss_mb(daemon.pid());
        let status = client.status().expect("status");
        assert_eq!(status.transfers, acknowledged, "every acknowledged transfer is in the ledger");
        if n == 1 {
            first_window_ids = stored_ranges(1, work.inner.next_id, &work.refused);
            assert!(created > 0, "no transfer of the first window stored");
            clock_first_window_end = status.clock_ns;
        }
        let waited = Instant::now();
        let snapshot =
            wait_snapshot(&mut client, daemon.pid(), data.path(), status.sequence, acknowledged);
        let snapshot_mb = match snapshot {
            Snapshot::Written(bytes) => Some(bytes as f64 / MB),
            Snapshot::Failed => {
                println!(
                    "history.note: SNAPSHOT FAILED: no snapshot at sequence {} after window {n} \
                     and no snapshot process running (the daemon's log above says why)",
                    status.sequence
                );
                None
            }
            Snapshot::TimedOut => {
                println!(
                    "history.note: no snapshot at sequence {} within the wait after window {n}",
                    status.sequence
                );
                None
            }
        };
        let (newest_sequence, newest_bytes) = newest_snapshot(data.path()).unwrap_or((0, 0));
        batches.add(&latency).expect("same histogram bounds");
        let w = Window {
            transfers_stored: status.transfers,
            transfers_per_s: created as f64 / elapsed.as_secs_f64(),
            rss_mb: rss_after,
            snapshot_mb,
        };
        println!(
            "history.window.{n}: transfers_stored={} transfers_per_s={:.0} batch_us_p99={:.0} \
             batch_us_max={:.0} rss_mb={:.0} snapshot_mb={}",
            w.transfers_stored,
            w.transfers_per_s,
            report::us(latency.value_at_quantile(0.99)),
            report::us(latency.max()),
            w.rss_mb,
            snapshot_mb.map_or("none".to_string(), |mb| format!("{mb:.1}")),
        );
        println!(
            "history.window.{n}.more: busy_transfers={window_busy} seconds={:.1} sequence={} snapshot_wait_s={:.1} \
             newest_snapshot_sequence={newest_sequence} newest_snapshot_mb={:.1} \
             data_dir_mb={:.0} snapshot_process_rss_mb_max={:.0} mem_available_mb_min={:.0}",
            elapsed.as_secs_f64(),
            status.sequence,
            waited.elapsed().as_secs_f64(),
            newest_bytes as f64 / MB,
            dir_bytes(data.path()) as f64 / MB,
            watch.child_rss_max_kb.load(Relaxed) as f64 / 1024.0,
            watch.available_min_kb.load(Relaxed) as f64 / 1024.0,
        );
        windows.push(w);
        if stopped.is_some() {
            break;
        }
    }
    assert!(!windows.is_empty(), "no window ran: {}", stopped.as_deref().unwrap_or("?"));
    if let Some(reason) = &stopped {
        println!("history.stopped_early: {reason}");
    }

    // 4. Retries of old transfers, then queries of old history.
    let sequence_before = client.status().expect("status").sequence;
    let retry = retries(&mut client, &plan, &first_window_ids);
    let status = client.status().expect("status");
    assert_eq!(status.transfers, acknowledged, "retries created nothing");
    println!("history.retry_journal_records: {}", status.sequence - sequence_before);
    let query = queries(&mut client, &plan, clock_start, clock_first_window_end);

    // 5. RSS, then SIGKILL and restart.
    watch.stop.store(true, Relaxed);
    sampler.join().expect("sampler");
    let rss_hwm = daemon.peak_rss_mb();
    let rss_max = (watch.daemon_rss_max_kb.load(Relaxed) as f64 / 1024.0).max(rss_mb(daemon.pid()));
    let before = client.status().expect("status");
    drop(client);
    // What the index store's own journal holds (blocks written: fjall preallocates the file
    // sparsely): a restart after SIGKILL replays it.
    let store_journal_bytes: u64 = std::fs::read_dir(data.path().join("index").join("store"))
        .map(|entries| {
            use std::os::unix::fs::MetadataExt;
            entries
                .flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "jnl"))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.blocks() * 512)
                .sum()
        })
        .unwrap_or(0);
    println!("history.index_store_journal_mb_at_kill: {:.1}", store_journal_bytes as f64 / MB);
    let killed = Instant::now();
    daemon.kill();
    let spawned = Instant::now();
    daemon.spawn();
    let ready = daemon.wait_ready(Duration::from_secs(1800));
    let rto_ms = ready.duration_since(killed).as_secs_f64() * 1000.0;
    let after = daemon.client().status().expect("status");
    assert_eq!(after.transfers, acknowledged, "every acknowledged transfer survives SIGKILL");
    assert_eq!(after.state_hash, before.state_hash, "same state after recovery");
    assert_eq!(after.sequence, before.sequence);

    // 6. Headlines.
    let (first, last) = (&windows[0], &windows[windows.len() - 1]);
    println!("history.transfers: {acknowledged}");
    println!("history.windows: {}", windows.len());
    println!("history.rss_mb_max: {rss_max:.0}");
    println!("history.rss_hwm_mb: {rss_hwm:.0}");
    println!(
        "history.snapshot_process_rss_mb_max: {:.0}",
        watch.child_rss_max_kb.load(Relaxed) as f64 / 1024.0
    );
    println!(
        "history.snapshot_process_anon_over_rss_max: {:.2}",
        watch.child_ratio_max_milli.load(Relaxed) as f64 / 1000.0
    );
    println!("history.tps_first: {:.0}", first.transfers_per_s);
    println!("history.tps_last: {:.0}", last.transfers_per_s);
    println!("history.tps_last_over_first: {:.2}", last.transfers_per_s / first.transfers_per_s);
    report::print_latency("history.batch", &batches, false);
    println!(
        "history.batch_max_over_p99: {:.2}",
        batches.max() as f64 / batches.value_at_quantile(0.99) as f64
    );
    let ratio = match (first.snapshot_mb, last.snapshot_mb) {
        (Some(a), Some(b)) => format!("{:.2}", b / a),
        _ => "none (no snapshot covers the first or the last window: see history.note)".to_string(),
    };
    println!("history.snapshot_mb_first: {:.1}", first.snapshot_mb.unwrap_or(f64::NAN));
    println!("history.snapshot_mb_last: {:.1}", last.snapshot_mb.unwrap_or(f64::NAN));
    println!("history.snapshot_mb_last_over_first: {ratio}");
    println!("history.retry_exists_us_p50: {:.1}", report::us(retry.value_at_quantile(0.5)));
    println!("history.retry_exists_us_p99: {:.1}", report::us(retry.value_at_quantile(0.99)));
    println!("history.retry_exists_us_max: {:.1}", report::us(retry.max()));
    println!("history.query_us_p50: {:.1}", report::us(query.value_at_quantile(0.5)));
    println!("history.query_us_p99: {:.1}", report::us(query.value_at_quantile(0.99)));
    println!("history.query_us_max: {:.1}", report::us(query.max()));
    println!("history.rto_ms: {rto_ms:.1}");
    println!(
        "history.rto_from_spawn_ms: {:.1}",
        ready.duration_since(spawned).as_secs_f64() * 1000.0
    );
    println!("history.data_dir_mb: {:.0}", dir_bytes(data.path()) as f64 / MB);
    if !full {
        println!("history.smoke: ok");
    }

    // 7. Outputs, then a clean stop before the data directory goes.
    let dir = common::results_dir(if full { "history" } else { "history-smoke" });
    for (name, h) in [("batch_8189", &batches), ("retry_exists", &retry), ("query_page", &query)] {
        report::write_hgrm(&dir.join(format!("{name}.hgrm")), h);
    }
    report::write_svg(
        &dir.join("latency.svg"),
        "ledgerd history: latency by percentile",
        &[
            ("batch of 8189".to_string(), &batches),
            ("retry (exists), 1 per request".to_string(), &retry),
            (format!("get_account_transfers, {PAGE} per page"), &query),
        ],
    );
    write_plot(&dir.join("history.svg"), &windows);
    println!("bench.results: {}", dir.display());
    daemon.stop();
    drop(daemon);
    drop(data);
}

/// Resident memory of `pid` in MiB.
fn rss_mb(pid: u32) -> f64 {
    common::proc_status_kb(pid, "VmRSS:") as f64 / 1024.0
}

/// Daemon memory per transfer stored so far (at least the prior estimate).
fn rss_per_transfer(rss_now_mb: f64, rss_base_mb: f64, transfers: u64) -> f64 {
    if transfers == 0 {
        return RSS_BYTES_PER_TRANSFER;
    }
    ((rss_now_mb - rss_base_mb) * MB / transfers as f64).max(RSS_BYTES_PER_TRANSFER)
}

/// What the machine-memory guard foresees for the next chunk.
struct Projection {
    /// The daemon's RSS after the chunk, MB.
    next: f64,
    /// A snapshot process's anonymous memory over the daemon's RSS.
    ratio: f64,
    /// The daemon after the chunk plus a snapshot process of it, MB.
    projected: f64,
    /// What the daemon and its snapshot process can have: available memory plus what they
    /// hold now, less the reserve, MB.
    budget: f64,
}

fn project(watch: &Watch, pid: u32, rss_base_mb: f64, transfers: u64, requests: u64) -> Projection {
    let rss = rss_mb(pid);
    let children: f64 = snapshot_processes(pid)
        .into_iter()
        .filter_map(|c| common::proc_status_kb_if_running(c, "RssAnon:"))
        .map(|kb| kb as f64 / 1024.0)
        .sum();
    let available = meminfo_kb("MemAvailable:") as f64 / 1024.0;
    let ratio =
        (watch.child_ratio_max_milli.load(Relaxed) as f64 / 1000.0).max(SNAPSHOT_PROCESS_RATIO);
    let next =
        rss + rss_per_transfer(rss, rss_base_mb, transfers) * (requests * BATCH as u64) as f64 / MB;
    Projection {
        next,
        ratio,
        projected: next * (1.0 + ratio),
        budget: available + rss + children - MEMORY_RESERVE_MB,
    }
}

/// Why the next chunk of `requests` must not be sent: the daemon and a snapshot process of
/// it would not fit in the machine's memory; or an emergency.
fn memory_short(
    watch: &Watch,
    pid: u32,
    rss_base_mb: f64,
    transfers: u64,
    requests: u64,
) -> Option<String> {
    if watch.emergency.load(Relaxed) {
        return Some("machine memory ran low during the last chunk".to_string());
    }
    let p = project(watch, pid, rss_base_mb, transfers, requests);
    (p.projected > p.budget).then(|| {
        format!(
            "machine memory: the daemon at ~{:.0} MB plus a snapshot process at {:.1}x would \
             need ~{:.0} MB, {:.0} MB can be had",
            p.next, p.ratio, p.projected, p.budget
        )
    })
}

/// Why the next window must not be sent: the disk would fill.
fn disk_short(plan: &Plan, data: &Path, transfers: u64, requests: u64) -> Option<String> {
    let used = dir_bytes(data);
    let per = used.checked_div(transfers).unwrap_or(0);
    let per = per.max(plan.disk_bytes_per_transfer());
    let newest = ledgerd::snapshot::list_snapshots(data)
        .ok()
        .and_then(|l| l.first().and_then(|(_, p)| std::fs::metadata(p).ok()))
        .map_or(0, |m| m.len());
    // The window, a snapshot being written beside the kept ones, and the reserve.
    let need = per * requests * BATCH as u64 + 2 * newest + DISK_RESERVE;
    let free = free_bytes(data);
    (need > free).then(|| {
        format!(
            "disk: {:.1} GB free, the next window needs ~{:.1} GB",
            free as f64 / 1e9,
            need as f64 / 1e9
        )
    })
}

/// How the wait for a snapshot covering a window ended.
enum Snapshot {
    /// Written: the file's size.
    Written(u64),
    /// No snapshot process ran for a while and none covers the window: the last one failed
    /// (the daemon retries only once more records arrive).
    Failed,
    TimedOut,
}

/// Polls `status` until a snapshot at `sequence` or later is written, or until no snapshot
/// process has run for [`SNAPSHOT_IDLE`]; waits longer for larger states, at most an hour.
fn wait_snapshot(
    client: &mut ledgerd_client::Client,
    pid: u32,
    data: &Path,
    sequence: u64,
    transfers: u64,
) -> Snapshot {
    const POLL: Duration = Duration::from_millis(50);
    let timeout =
        Duration::from_secs(120 + 30 * transfers / 1_000_000).min(Duration::from_secs(3600));
    let polls = (timeout.as_millis() / POLL.as_millis()) as u64;
    let mut last_seen = Instant::now();
    for _ in 0..polls {
        let status = client.status().expect("status");
        if status.snapshot_sequence >= sequence {
            let list = ledgerd::snapshot::list_snapshots(data).expect("list snapshots");
            let (_, path) = list.first().expect("a snapshot file");
            return Snapshot::Written(std::fs::metadata(path).expect("snapshot metadata").len());
        }
        if !snapshot_processes(pid).is_empty() {
            last_seen = Instant::now();
        } else if last_seen.elapsed() > SNAPSHOT_IDLE {
            return Snapshot::Failed;
        }
        std::thread::sleep(POLL);
    }
    Snapshot::TimedOut
}

/// The newest snapshot file: its sequence and size.
fn newest_snapshot(data: &Path) -> Option<(u64, u64)> {
    let list = ledgerd::snapshot::list_snapshots(data).ok()?;
    let (sequence, path) = list.first()?;
    Some((*sequence, std::fs::metadata(path).ok()?.len()))
}

/// The ids in `first..end` outside the `refused` ranges, as (first, end) ranges.
fn stored_ranges(first: u128, end: u128, refused: &[(u128, u128)]) -> Vec<(u128, u128)> {
    let mut refused: Vec<(u128, u128)> =
        refused.iter().map(|&(a, b)| (a.max(first), b.min(end))).filter(|(a, b)| a < b).collect();
    refused.sort_unstable();
    let mut out = Vec::new();
    let mut at = first;
    for (a, b) in refused {
        if a > at {
            out.push((at, a));
        }
        at = at.max(b);
    }
    if at < end {
        out.push((at, end));
    }
    out
}

/// The `k`-th id (from 0) of `ranges`.
fn nth_id(ranges: &[(u128, u128)], k: u64) -> u128 {
    let mut k = u128::from(k);
    for &(a, b) in ranges {
        if k < b - a {
            return a + k;
        }
        k -= b - a;
    }
    panic!("id index past the ranges");
}

/// Re-sends random transfers of the first window, one per request and byte for byte as they
/// were first sent, over one connection; each must be `exists`. Returns the round-trip
/// latencies (ns).
fn retries(
    client: &mut ledgerd_client::Client,
    plan: &Plan,
    stored: &[(u128, u128)],
) -> Histogram<u64> {
    let total: u128 = stored.iter().map(|(a, b)| b - a).sum();
    let total = u64::try_from(total).expect("fewer than 2^64 transfers");
    let end = stored.last().expect("stored transfers").1;
    let first_requests = u64::try_from(end - 1).expect("ids fit u64").div_ceil(BATCH as u64);
    let mut rng = Rng(SEED ^ 0x7e7e_7e7e);
    let picks: Vec<u128> = (0..plan.retries).map(|_| nth_id(stored, rng.below(total))).collect();
    let mut wanted = picks.clone();
    wanted.sort_unstable();
    wanted.dedup();
    // The first window again, from the same generator: keep the picked transfers' bytes.
    let mut generator = Transfers::new(Pick::Uniform(plan.accounts), 1, BATCH, 1, SEED);
    let mut bytes: HashMap<u128, Vec<u8>> = HashMap::with_capacity(wanted.len());
    let mut body = Vec::with_capacity(BATCH * Transfer::SIZE);
    let mut next = wanted.iter().peekable();
    for _ in 0..first_requests {
        body.clear();
        let first_id = generator.next_id;
        generator.body(0, &mut body);
        while let Some(&&id) = next.peek() {
            if id >= generator.next_id {
                break;
            }
            let i = (id - first_id) as usize;
            bytes.insert(id, body[i * Transfer::SIZE..(i + 1) * Transfer::SIZE].to_vec());
            next.next();
        }
    }
    assert_eq!(bytes.len(), wanted.len(), "every picked id regenerated");
    // The regenerated transfers are the stored ones.
    for ids in wanted.chunks(8000) {
        let found = client.lookup_transfers(ids).expect("lookup transfers");
        assert_eq!(found.len(), ids.len(), "every old transfer found");
        for t in found {
            let sent = Transfer::read_from(&bytes[&t.id]);
            assert_eq!(
                (t.debit_account_id, t.credit_account_id, t.amount, t.ledger, t.code),
                (
                    sent.debit_account_id,
                    sent.credit_account_id,
                    sent.amount,
                    sent.ledger,
                    sent.code
                ),
                "transfer {} as stored",
                t.id
            );
        }
    }
    let mut h = report::histogram();
    let mut results = Vec::new();
    for id in &picks {
        let start = Instant::now();
        client.send_raw(Operation::CreateTransfers, &bytes[id]).expect("send");
        let reply = client.recv().expect("reply");
        h.saturating_record(start.elapsed().as_nanos() as u64);
        assert_eq!(reply.status, Status::Ok, "retry refused: {}", reply.status.name());
        results.clear();
        decode_create_results(&reply.body, 1, &mut results).expect("create results");
        assert_eq!(results.len(), 1, "a retry of transfer {id} was applied again");
        assert_eq!(results[0].result, ResultCode::Exists, "retry of transfer {id}");
    }
    h
}

/// `get_account_transfers` pages, oldest first, of random accounts from a random moment of
/// the first window on; each page in ascending timestamps, and empty only for an account
/// whose newest transfer is older than the moment. Returns the latencies (ns).
fn queries(
    client: &mut ledgerd_client::Client,
    plan: &Plan,
    clock_start: u64,
    clock_first_end: u64,
) -> Histogram<u64> {
    let mut rng = Rng(SEED ^ 0x9e37_79b9);
    // From a moment in the first half of the first window: every account has history after
    // it even when the run stopped after one window.
    let span = (clock_first_end.saturating_sub(clock_start) / 2).max(1);
    let mut h = report::histogram();
    let mut rows = 0u64;
    let mut empty = 0u64;
    for _ in 0..plan.queries {
        let account_id = 1 + u128::from(rng.below(plan.accounts));
        let filter = AccountFilter {
            account_id,
            timestamp_min: clock_start + 1 + rng.below(span),
            limit: PAGE,
            flags: AccountFilterFlags::DEBITS | AccountFilterFlags::CREDITS,
            ..Default::default()
        };
        let start = Instant::now();
        let page = client.get_account_transfers(&filter).expect("get_account_transfers");
        h.saturating_record(start.elapsed().as_nanos() as u64);
        if page.is_empty() {
            // With many accounts and few transfers each, an account may have none after the
            // moment: then its newest transfer must be older than it.
            let newest = AccountFilter {
                account_id,
                limit: 1,
                flags: AccountFilterFlags::DEBITS
                    | AccountFilterFlags::CREDITS
                    | AccountFilterFlags::REVERSED,
                ..Default::default()
            };
            let newest = client.get_account_transfers(&newest).expect("get_account_transfers");
            assert!(
                newest.first().is_none_or(|t| t.timestamp < filter.timestamp_min),
                "no page for account {account_id} from {}, but it has a transfer at {}",
                filter.timestamp_min,
                newest[0].timestamp
            );
            empty += 1;
            continue;
        }
        assert!(page[0].timestamp >= filter.timestamp_min);
        assert!(page.windows(2).all(|w| w[0].timestamp < w[1].timestamp), "oldest first");
        assert!(page
            .iter()
            .all(|t| t.debit_account_id == account_id || t.credit_account_id == account_id));
        rows += page.len() as u64;
    }
    println!("history.query_rows_per_page: {:.1}", rows as f64 / plan.queries.max(1) as f64);
    println!("history.query_empty_pages: {empty}");
    h
}

/// What the sampler thread saw of the daemon and its snapshot processes.
struct Watch {
    daemon_rss_max_kb: AtomicU64,
    child_rss_max_kb: AtomicU64,
    /// The largest snapshot process anonymous RSS over the daemon's RSS at the same moment,
    /// × 1000.
    child_ratio_max_milli: AtomicU64,
    available_min_kb: AtomicU64,
    emergency: AtomicBool,
    stop: AtomicBool,
}

impl Default for Watch {
    fn default() -> Watch {
        Watch {
            daemon_rss_max_kb: AtomicU64::new(0),
            child_rss_max_kb: AtomicU64::new(0),
            child_ratio_max_milli: AtomicU64::new(0),
            available_min_kb: AtomicU64::new(u64::MAX),
            emergency: AtomicBool::new(false),
            stop: AtomicBool::new(false),
        }
    }
}

impl Watch {
    fn run(&self, pid: u32) {
        for _ in 0..SAMPLES_MAX {
            if self.stop.load(Relaxed) {
                return;
            }
            let Some(daemon) = common::proc_status_kb_if_running(pid, "VmRSS:") else { return };
            let children = snapshot_processes(pid);
            let child: u64 = children
                .iter()
                .filter_map(|&c| common::proc_status_kb_if_running(c, "VmRSS:"))
                .sum();
            // Its anonymous memory: the mapped journal pages it reads are page cache, which
            // MemAvailable counts as available.
            let anon: u64 = children
                .iter()
                .filter_map(|&c| common::proc_status_kb_if_running(c, "RssAnon:"))
                .sum();
            let available = meminfo_kb("MemAvailable:");
            self.daemon_rss_max_kb.fetch_max(daemon, Relaxed);
            self.child_rss_max_kb.fetch_max(child, Relaxed);
            // Ratios only once the state dominates the daemon's memory (past ~1 GB).
            if daemon > 1 << 20 {
                self.child_ratio_max_milli.fetch_max(anon * 1000 / daemon, Relaxed);
            }
            self.available_min_kb.fetch_min(available, Relaxed);
            if (available as f64) < MEMORY_EMERGENCY_MB * 1024.0 && !self.emergency.load(Relaxed) {
                self.emergency.store(true, Relaxed);
                println!(
                    "history.note: MEMORY LOW ({} MB available): killing the daemon's snapshot \
                     process(es) {children:?}; the load stops after this chunk",
                    available / 1024
                );
                for c in children {
                    // SAFETY: kill(2) has no memory effects; `c` is a child of our daemon,
                    // read from /proc a moment ago.
                    unsafe { libc::kill(c as libc::pid_t, libc::SIGKILL) };
                }
            }
            std::thread::sleep(SAMPLE_EVERY);
        }
    }
}

/// A `kB` field of /proc/meminfo.
fn meminfo_kb(field: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").expect("read /proc/meminfo");
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/meminfo"))
}

/// The daemon's snapshot processes: its children running `--build-snapshot-up-to` (a child
/// between fork and exec shares the daemon's pages and is not one yet).
fn snapshot_processes(pid: u32) -> Vec<u32> {
    children_of(pid)
        .into_iter()
        .filter(|c| {
            std::fs::read(format!("/proc/{c}/cmdline"))
                .is_ok_and(|line| line.split(|&b| b == 0).any(|a| a == b"--build-snapshot-up-to"))
        })
        .collect()
}

/// Processes whose parent is `pid`, from /proc/*/stat.
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let Some(child) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else { continue };
        // Field 4 (the parent) comes second after the command name's closing parenthesis.
        let parent = stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if parent == Some(pid) {
            out.push(child);
        }
    }
    out
}

/// Bytes available to an unprivileged writer on the filesystem holding `path`.
fn free_bytes(path: &Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).expect("a path without NUL");
    // SAFETY: statvfs only writes the structure it is given; `c` is a valid C string.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut s) };
    assert_eq!(rc, 0, "statvfs {}: {}", path.display(), std::io::Error::last_os_error());
    s.f_bavail as u64 * s.f_frsize as u64
}

/// Disk blocks used under `path` (preallocated journal segments count in full).
fn dir_bytes(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(path) else { return 0 };
    let mut total = 0;
    for entry in entries.flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        total += if meta.is_dir() { dir_bytes(&entry.path()) } else { meta.blocks() * 512 };
    }
    total
}

/// Throughput and memory against transfers stored, one point per window, with TigerBeetle's
/// published figures as references.
fn write_plot(path: &Path, windows: &[Window]) {
    const W: f64 = 860.0;
    const H: f64 = 460.0;
    const LEFT: f64 = 70.0;
    const RIGHT: f64 = 330.0;
    const TOP: f64 = 40.0;
    const BOTTOM: f64 = 50.0;
    const TPS: &str = "#1f77b4";
    const RSS: &str = "#d62728";
    const SNAP: &str = "#2ca02c";
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let x_data = windows.iter().map(|w| w.transfers_stored as f64).fold(0.0, f64::max);
    let x_max = x_data.max(TB_10M_SMALL_CACHE.0) * 1.05;
    let tps_data = windows.iter().map(|w| w.transfers_per_s).fold(0.0, f64::max);
    let tps_max = tps_data.max(TB_FRESH_TPS.1) * 1.15;
    let mb_data =
        windows.iter().map(|w| w.rss_mb.max(w.snapshot_mb.unwrap_or(0.0))).fold(0.0, f64::max);
    let mb_max = mb_data.max(TB_RSS_MB) * 1.15;
    let sx = |x: f64| LEFT + x / x_max * pw;
    let sy_tps = |y: f64| TOP + ph - y / tps_max * ph;
    let sy_mb = |y: f64| TOP + ph - y / mb_max * ph;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="20" text-anchor="middle" font-size="13">ledgerd history: throughput and memory by transfers stored</text>"#,
        LEFT + pw / 2.0
    );
    // Grid: x ticks, left (transfers/s) ticks; right (MB) tick labels at the same heights.
    let frame = report::Frame { left: LEFT, top: TOP, width: pw, height: ph, image_height: H };
    let x_step = nice_step(x_max, 6.0);
    for i in 0..=((x_max / x_step) as usize).min(40) {
        let v = i as f64 * x_step;
        frame.x_tick(&mut s, sx(v), &short(v));
    }
    let tps_step = nice_step(tps_max, 6.0);
    for i in 0..=((tps_max / tps_step) as usize).min(40) {
        let v = i as f64 * tps_step;
        frame.y_tick(&mut s, sy_tps(v), &short(v), TPS);
    }
    let mb_step = nice_step(mb_max, 6.0);
    for i in 0..=((mb_max / mb_step) as usize).min(40) {
        let v = i as f64 * mb_step;
        let y = sy_mb(v);
        let _ = writeln!(
            s,
            r#"<line x1="{:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{RSS}"/>"#,
            LEFT + pw,
            LEFT + pw + 4.0
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" fill="{RSS}">{v:.0}</text>"#,
            LEFT + pw + 7.0,
            y + 4.0
        );
    }
    frame.draw(&mut s, "transfers stored", "transfers/s", TPS);
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="{RSS}" transform="rotate(90 {:.1} {:.1})">MB</text>"#,
        LEFT + pw + 48.0,
        TOP + ph / 2.0,
        LEFT + pw + 48.0,
        TOP + ph / 2.0
    );
    // TigerBeetle's references: the fresh band, the 62 GB line, the 10M / 128 MiB point and
    // the RSS line.
    let (band_hi, band_lo) = (sy_tps(TB_FRESH_TPS.1), sy_tps(TB_FRESH_TPS.0));
    let _ = writeln!(
        s,
        r#"<rect x="{LEFT}" y="{band_hi:.1}" width="{pw}" height="{:.1}" fill="{TPS}" fill-opacity="0.12"/>"#,
        band_lo - band_hi
    );
    let y = sy_tps(TB_62GB_TPS);
    let _ = writeln!(
        s,
        r#"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{TPS}" stroke-width="1.2" stroke-dasharray="2 3"/>"#,
        LEFT + pw
    );
    let (x, y) = (sx(TB_10M_SMALL_CACHE.0), sy_tps(TB_10M_SMALL_CACHE.1));
    let _ = writeln!(
        s,
        r#"<rect x="{:.1}" y="{:.1}" width="8" height="8" fill="white" stroke="{TPS}" stroke-width="1.5"/>"#,
        x - 4.0,
        y - 4.0
    );
    let y = sy_mb(TB_RSS_MB);
    let _ = writeln!(
        s,
        r#"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{RSS}" stroke-width="1.2" stroke-dasharray="6 3"/>"#,
        LEFT + pw
    );
    // ledgerd's windows.
    let series: [(&str, Vec<(f64, f64)>); 3] = [
        (
            TPS,
            windows
                .iter()
                .map(|w| (sx(w.transfers_stored as f64), sy_tps(w.transfers_per_s)))
                .collect(),
        ),
        (RSS, windows.iter().map(|w| (sx(w.transfers_stored as f64), sy_mb(w.rss_mb))).collect()),
        (
            SNAP,
            windows
                .iter()
                .filter_map(|w| w.snapshot_mb.map(|mb| (sx(w.transfers_stored as f64), sy_mb(mb))))
                .collect(),
        ),
    ];
    for (color, pts) in &series {
        let line: Vec<String> = pts.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{color}" stroke-width="1.8" points="{}"/>"#,
            line.join(" ")
        );
        for (x, y) in pts {
            let _ = writeln!(s, r#"<circle cx="{x:.1}" cy="{y:.1}" r="3" fill="{color}"/>"#);
        }
    }
    // Windows after which no snapshot could be written.
    for w in windows.iter().filter(|w| w.snapshot_mb.is_none()) {
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="{SNAP}" font-size="13">✕</text>"#,
            sx(w.transfers_stored as f64),
            TOP + ph - 6.0
        );
    }
    // Legend.
    let lx = LEFT + pw + 62.0;
    let legend: [(&str, &str, &str); 7] = [
        ("line", TPS, "ledgerd transfers/s (left)"),
        ("line", RSS, "ledgerd RSS MB (right)"),
        ("line", SNAP, "ledgerd snapshot MB (right; ✕ none written)"),
        ("band", TPS, "TigerBeetle fresh: 205–234k/s"),
        ("dots", TPS, "TigerBeetle at a 62 GB data file: ~57k/s"),
        ("square", TPS, "TigerBeetle 10M, 128 MiB cache: ~36k/s"),
        ("dash", RSS, "TigerBeetle RSS: 3,033 MB"),
    ];
    for (i, (kind, color, label)) in legend.iter().enumerate() {
        let ly = TOP + 10.0 + i as f64 * 18.0;
        let _ = match *kind {
            "band" => writeln!(
                s,
                r#"<rect x="{lx}" y="{:.1}" width="18" height="8" fill="{color}" fill-opacity="0.12"/>"#,
                ly - 4.0
            ),
            "square" => writeln!(
                s,
                r#"<rect x="{:.1}" y="{:.1}" width="8" height="8" fill="white" stroke="{color}" stroke-width="1.5"/>"#,
                lx + 5.0,
                ly - 4.0
            ),
            _ => {
                let dash = match *kind {
                    "dots" => r#" stroke-dasharray="2 3""#,
                    "dash" => r#" stroke-dasharray="6 3""#,
                    _ => "",
                };
                writeln!(
                    s,
                    r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="2"{dash}/>"#,
                    lx + 18.0
                )
            }
        };
        let _ = writeln!(s, r#"<text x="{}" y="{}">{label}</text>"#, lx + 24.0, ly + 4.0);
    }
    s.push_str("</svg>\n");
    std::fs::write(path, s).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// A round step of about `max / ticks`: 1, 2 or 5 times a power of ten.
fn nice_step(max: f64, ticks: f64) -> f64 {
    let raw = (max / ticks).max(1.0);
    let magnitude = 10f64.powf(raw.log10().floor());
    let m = match raw / magnitude {
        n if n <= 1.0 => 1.0,
        n if n <= 2.0 => 2.0,
        n if n <= 5.0 => 5.0,
        _ => 10.0,
    };
    m * magnitude
}

/// 12,000,000 as "12M", 205,000 as "205k".
fn short(v: f64) -> String {
    let (value, unit) = match v {
        v if v >= 1e6 => (v / 1e6, "M"),
        v if v >= 1e3 => (v / 1e3, "k"),
        v => (v, ""),
    };
    if (value - value.round()).abs() < 0.05 {
        format!("{value:.0}{unit}")
    } else {
        format!("{value:.1}{unit}")
    }
}
