//! Journal benchmark: the disk's durable-write floor, group-commit latency, throughput, the two
//! flush modes, and reopen + verify time. Prints `name: value` lines.
//!
//! Data goes to a temporary directory under the target directory (a real disk, never tmpfs).
//! `LEDGERD_BENCH_SMOKE=1` shrinks every run to about a second.

use std::fs::OpenOptions;
use std::hint::black_box;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use ledgerd::journal::{FlushMode, Journal, JournalConfig, JournalReader};

/// Approximate archived size of one transfer inside an `Event` body.
const TRANSFER_BYTES: usize = 200;

struct Plan {
    smoke: bool,
    latency_iterations: usize,
    throughput_time: Duration,
    reopen_bytes: u64,
}

fn main() {
    // Full only under `cargo bench` (which passes --bench); `cargo test` runs the smoke version.
    let smoke = std::env::var("LEDGERD_BENCH_SMOKE").is_ok_and(|v| v == "1")
        || !std::env::args().any(|a| a == "--bench");
    let plan = if smoke {
        Plan {
            smoke,
            latency_iterations: 40,
            throughput_time: Duration::from_millis(100),
            reopen_bytes: 16 << 20,
        }
    } else {
        Plan {
            smoke,
            latency_iterations: 2000,
            throughput_time: Duration::from_secs(2),
            reopen_bytes: 320 << 20,
        }
    };
    let base = bench_dir();
    std::fs::create_dir_all(&base).expect("create bench dir");
    let tmp = tempfile::tempdir_in(&base).expect("temp dir under target");
    println!("bench.dir: {}", tmp.path().display());
    println!("bench.smoke: {}", plan.smoke as u8);

    let floor_prealloc = disk_floor(&tmp.path().join("floor-fallocate"), &plan, false);
    let floor_written = disk_floor(&tmp.path().join("floor-written"), &plan, true);
    println!("disk.write_fdatasync_4k_us_p50: {:.1}", floor_prealloc);
    println!("disk.write_fdatasync_4k_overwrite_us_p50: {:.1}", floor_written);

    for mode in [FlushMode::Fdatasync, FlushMode::Msync] {
        let name = mode_name(mode);
        let p50 = batch_1_latency(&tmp.path().join(format!("b1-{name}")), &plan, mode);
        if mode == FlushMode::default() {
            println!("journal.batch_1.flush_us_p50: {p50:.1}");
            println!("journal.batch_1.flush_over_disk_floor: {:.2}", p50 / floor_prealloc);
        }
        println!("journal.{name}.batch_1.flush_us_p50: {p50:.1}");
    }

    for mode in [FlushMode::Fdatasync, FlushMode::Msync] {
        let name = mode_name(mode);
        for events in [100usize, 8189] {
            let dir = tmp.path().join(format!("tp-{name}-{events}"));
            // One record per request: an Event of `events` transfers.
            let one = throughput(&dir, &plan, mode, 1, events * TRANSFER_BYTES, events);
            let _ = std::fs::remove_dir_all(&dir);
            // One small record per transfer, the same bytes per flush.
            let many = throughput(&dir, &plan, mode, events, TRANSFER_BYTES, events);
            let _ = std::fs::remove_dir_all(&dir);
            if mode == FlushMode::default() {
                println!("journal.batch_{events}.events_per_s: {:.0}", one.0);
                println!("journal.batch_{events}.flush_us_p50: {:.1}", one.1);
            }
            println!("journal.{name}.batch_{events}.one_record.events_per_s: {:.0}", one.0);
            println!("journal.{name}.batch_{events}.one_record.flush_us_p50: {:.1}", one.1);
            println!("journal.{name}.batch_{events}.records_of_200b.events_per_s: {:.0}", many.0);
            println!("journal.{name}.batch_{events}.records_of_200b.flush_us_p50: {:.1}", many.1);
        }
    }

    reopen_and_verify(&tmp.path().join("reopen"), &plan);
}

fn mode_name(mode: FlushMode) -> &'static str {
    match mode {
        FlushMode::Fdatasync => "fdatasync",
        FlushMode::Msync => "msync",
    }
}

fn bench_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("bench-journal")
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("histogram bounds")
}

fn p50_us(h: &Histogram<u64>) -> f64 {
    h.value_at_quantile(0.5) as f64 / 1000.0
}

fn print_tail(name: &str, h: &Histogram<u64>) {
    println!(
        "{name}.us_p90: {:.1}\n{name}.us_p99: {:.1}\n{name}.us_max: {:.1}",
        h.value_at_quantile(0.9) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
        h.max() as f64 / 1000.0
    );
}

/// pwrite of a new 4 KiB block + fdatasync, on a 64 MiB file either preallocated with
/// `posix_fallocate` (like a journal segment) or written with zeros first (pure overwrite).
fn disk_floor(path: &Path, plan: &Plan, write_zeros: bool) -> f64 {
    let p50 = disk_floor_sized(path, plan, write_zeros, 4096);
    let big = disk_floor_sized(path, plan, write_zeros, 8189 * TRANSFER_BYTES);
    let kind = if write_zeros { "overwrite" } else { "write" };
    println!("disk.{kind}_fdatasync_1600k_us_p50: {big:.1}");
    println!("disk.{kind}_fdatasync_1600k_mib_per_s: {:.0}", 8189.0 * 200.0 / big / 1.048576);
    p50
}

fn disk_floor_sized(path: &Path, plan: &Plan, write_zeros: bool, size: usize) -> f64 {
    const LEN: u64 = 64 << 20;
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .expect("floor file");
    if write_zeros {
        let chunk = vec![0u8; 1 << 20];
        for i in 0..LEN / chunk.len() as u64 {
            f.write_all_at(&chunk, i * chunk.len() as u64).expect("zero fill");
        }
    } else {
        // SAFETY: plain syscall on an open descriptor.
        let rc = unsafe { libc::posix_fallocate(f.as_raw_fd(), 0, LEN as libc::off_t) };
        assert_eq!(rc, 0, "posix_fallocate");
    }
    f.sync_all().expect("sync");
    let page = vec![0x5au8; size];
    let mut h = histogram();
    let iterations =
        if size > 4096 { plan.latency_iterations / 10 + 3 } else { plan.latency_iterations };
    let size = size as u64;
    for i in 0..iterations as u64 {
        let t = Instant::now();
        f.write_all_at(&page, (i * size) % (LEN - size)).expect("pwrite");
        f.sync_data().expect("fdatasync");
        h.saturating_record(t.elapsed().as_nanos() as u64);
    }
    if size == 4096 {
        print_tail(if write_zeros { "disk.overwrite_4k" } else { "disk.write_4k" }, &h);
    }
    p50_us(&h)
}

fn open(dir: &Path, mode: FlushMode) -> Journal {
    let mut cfg = JournalConfig::new(dir);
    cfg.flush_mode = mode;
    Journal::open(cfg).expect("open journal").0
}

/// Append one ~200-byte body, flush; the time of both.
fn batch_1_latency(dir: &Path, plan: &Plan, mode: FlushMode) -> f64 {
    let mut j = open(dir, mode);
    let body = vec![0xA5u8; TRANSFER_BYTES];
    let mut h = histogram();
    for _ in 0..plan.latency_iterations {
        let t = Instant::now();
        j.append(&body).expect("append");
        j.flush().expect("flush");
        h.saturating_record(t.elapsed().as_nanos() as u64);
    }
    print_tail(&format!("journal.{}.batch_1.flush", mode_name(mode)), &h);
    p50_us(&h)
}

/// Appends `records` bodies of `body_len` bytes, then flushes, repeatedly for the planned time.
/// Returns (events per second, p50 of one append-batch + flush in µs).
fn throughput(
    dir: &Path,
    plan: &Plan,
    mode: FlushMode,
    records: usize,
    body_len: usize,
    events: usize,
) -> (f64, f64) {
    let mut j = open(dir, mode);
    let body = vec![0x3Cu8; body_len];
    let mut h = histogram();
    let mut h_append = histogram();
    let start = Instant::now();
    let mut batches = 0u64;
    while start.elapsed() < plan.throughput_time || batches < 3 {
        let t = Instant::now();
        for _ in 0..records {
            black_box(j.append(&body).expect("append"));
        }
        h_append.saturating_record(t.elapsed().as_nanos() as u64);
        j.flush().expect("flush");
        h.saturating_record(t.elapsed().as_nanos() as u64);
        batches += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    if records == 1 && events > 1000 {
        // The tail: segment rolls (every ~40 batches) and the disk's slow flushes.
        print_tail(&format!("journal.{}.batch_{events}.one_record.flush", mode_name(mode)), &h);
        println!(
            "journal.{}.batch_{events}.one_record.flush_us_mean: {:.1}",
            mode_name(mode),
            secs * 1e6 / batches as f64
        );
    }
    println!(
        "journal.{}.batch_{events}.{}.append_only_us_p50: {:.1}",
        mode_name(mode),
        if records == 1 { "one_record" } else { "records_of_200b" },
        p50_us(&h_append)
    );
    ((batches as f64 * events as f64) / secs, p50_us(&h))
}

/// Writes `plan.reopen_bytes` of 1.6 MB records, then times `Journal::open` (the recovery scan)
/// and `JournalReader::verify` (checksums, chain) with a warm page cache.
fn reopen_and_verify(dir: &Path, plan: &Plan) {
    let body = vec![0x77u8; 8189 * TRANSFER_BYTES];
    {
        let mut j = open(dir, FlushMode::Fdatasync);
        let mut written = 0u64;
        while written < plan.reopen_bytes {
            j.append(&body).expect("append");
            written += body.len() as u64;
        }
        j.flush().expect("flush");
    }
    let mib = plan.reopen_bytes as f64 / (1u64 << 20) as f64;
    let t = Instant::now();
    let (j, report) = Journal::open(JournalConfig::new(dir)).expect("reopen");
    let open_ms = t.elapsed().as_secs_f64() * 1000.0;
    drop(j);
    let t = Instant::now();
    let r = JournalReader::open(dir).expect("reader");
    let v = r.verify();
    let verify_ms = t.elapsed().as_secs_f64() * 1000.0;
    assert!(v.is_ok() && v.records == report.last_sequence);
    println!("journal.reopen.mib: {mib:.0}");
    println!("journal.reopen.segments: {}", report.segments);
    println!("journal.reopen.open_ms: {open_ms:.1}");
    println!("journal.reopen.verify_ms: {verify_ms:.1}");
    println!("journal.reopen.verify_mib_per_s: {:.0}", mib / (verify_ms / 1000.0));
}
