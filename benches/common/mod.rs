//! Shared by the end-to-end benchmarks: the run mode (full under `cargo bench`, a smoke run
//! under `cargo test`), `Daemon`: the library's harness (`ledgerd::harness`) starting `ledgerd`
//! on free loopback ports with a data directory under `target/` (the real disk), a
//! single-threaded load generator that keeps many connections
//! pipelined (closed loop) or sends at a fixed rate (open loop, latency measured from the
//! intended send time), and the outputs: `name: value` lines, HdrHistogram percentile
//! distributions (`.hgrm`) and SVG plots of latency by percentile.

#![allow(dead_code)]

pub mod load;
pub mod report;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ledgerd::harness;
use ledgerd::types::{Account, Transfer};
use ledgerd_client::Client;

/// How long a daemon may take to start answering.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a daemon may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// Full benchmark only under `cargo bench` (which passes `--bench`) and without
/// `LEDGERD_BENCH_SMOKE=1`; otherwise (`cargo test`) a smoke run of a few seconds that checks
/// correctness only.
pub fn full_run() -> bool {
    let bench = std::env::args().any(|a| a == "--bench");
    let smoke = std::env::var("LEDGERD_BENCH_SMOKE").is_ok_and(|v| v == "1");
    bench && !smoke
}

/// Prints the run header every benchmark starts with.
pub fn announce(name: &str, full: bool) {
    // Start with no dirty pages of an earlier run still being written back.
    // SAFETY: sync(2) has no arguments and cannot fail.
    unsafe { libc::sync() };
    println!("bench: {name}");
    println!("bench.smoke: {}", u8::from(!full));
    if let Ok(load) = std::fs::read_to_string("/proc/loadavg") {
        println!(
            "bench.loadavg_before: {}",
            load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
        );
    }
}

/// The Cargo target directory (`target/`), on the real disk.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

/// `target/bench-results/NAME/`, created.
pub fn results_dir(name: &str) -> PathBuf {
    let dir = target_dir().join("bench-results").join(name);
    std::fs::create_dir_all(&dir).expect("create the results directory");
    dir
}

/// A fresh temporary directory under `target/bench-data/` (removed on drop).
pub fn data_dir() -> tempfile::TempDir {
    let base = target_dir().join("bench-data");
    std::fs::create_dir_all(&base).expect("create target/bench-data");
    let mut dir = tempfile::tempdir_in(&base).expect("temporary data directory");
    // `LEDGERD_BENCH_KEEP=1` keeps the data directories (to profile a restart, say).
    if std::env::var("LEDGERD_BENCH_KEEP").is_ok_and(|v| v == "1") {
        dir.disable_cleanup(true);
        println!("bench.kept_data_dir: {}", dir.path().display());
    }
    dir
}

pub fn free_addr() -> SocketAddr {
    harness::free_addr().expect("a free loopback port")
}

/// The daemon binary Cargo built for this package.
pub fn ledgerd_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ledgerd"))
}

/// A `ledgerd` process started by a benchmark ([`harness::Daemon`], whose fields and methods
/// it derefs to), with methods that panic on failure; SIGKILLed on drop.
pub struct Daemon(harness::Daemon);

impl std::ops::Deref for Daemon {
    type Target = harness::Daemon;
    fn deref(&self) -> &harness::Daemon {
        &self.0
    }
}

impl std::ops::DerefMut for Daemon {
    fn deref_mut(&mut self) -> &mut harness::Daemon {
        &mut self.0
    }
}

/// The harness's builder for a benchmark's daemon: `extra_args` only, the log filter from
/// `LEDGERD_BENCH_LOG` (`info` shows the daemon's own logs: recovery times, snapshots).
pub fn builder(data_dir: &Path, extra_args: &[String]) -> harness::Builder {
    harness::Daemon::builder(ledgerd_bin(), data_dir)
        .args(extra_args)
        .log(std::env::var("LEDGERD_BENCH_LOG").unwrap_or_else(|_| "warn".into()))
        .start_timeout(START_TIMEOUT)
        .stop_timeout(STOP_TIMEOUT)
}

impl Daemon {
    /// Starts a daemon on `data_dir` with `extra_args` and waits until it answers `status`.
    pub fn start(data_dir: &Path, extra_args: &[&str]) -> Daemon {
        let args: Vec<String> = extra_args.iter().map(|s| s.to_string()).collect();
        Daemon(builder(data_dir, &args).start().expect("start ledgerd"))
    }

    /// Spawns the process again (same data directory and ports) without waiting for it to
    /// answer.
    pub fn spawn(&mut self) {
        self.0.respawn().expect("spawn ledgerd");
    }

    /// Polls until a client can connect and get a `status` reply; returns when it did.
    pub fn wait_ready(&mut self, timeout: Duration) -> Instant {
        self.0.wait_ready(timeout).expect("ledgerd answers")
    }

    /// Starts a daemon whose client port speaks TLS with a fresh self-signed certificate
    /// for `localhost` (written into `data_dir`'s parent); returns it and the client options.
    pub fn start_tls(
        data_dir: &Path,
        extra_args: &[&str],
    ) -> (Daemon, ledgerd_client::ClientOptions) {
        let dir = data_dir.parent().expect("a parent directory");
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
            .expect("generate a certificate");
        let (cert, key) = (dir.join("bench-tls.crt"), dir.join("bench-tls.key"));
        std::fs::write(&cert, certified.cert.pem()).expect("write the certificate");
        std::fs::write(&key, certified.key_pair.serialize_pem()).expect("write the key");
        let mut args = vec![
            "--tls-cert".to_string(),
            cert.display().to_string(),
            "--tls-key".to_string(),
            key.display().to_string(),
        ];
        args.extend(extra_args.iter().map(|s| s.to_string()));
        let options = ledgerd_client::ClientOptions {
            tls: Some(
                ledgerd_client::tls::TlsOptions::new(&cert, "localhost", None)
                    .expect("TLS client options"),
            ),
            ..Default::default()
        };
        let daemon = builder(data_dir, &args)
            .client_options(options.clone())
            .start()
            .expect("start ledgerd (TLS)");
        (Daemon(daemon), options)
    }

    pub fn pid(&self) -> u32 {
        self.0.pid().expect("running")
    }

    pub fn client(&self) -> Client {
        self.0.client().expect("connect")
    }

    /// The daemon's peak resident memory (VmHWM) in MiB.
    pub fn peak_rss_mb(&self) -> f64 {
        proc_status_kb(self.pid(), "VmHWM:") as f64 / 1024.0
    }

    /// SIGTERM, then wait for a clean exit (nothing if it is not running).
    pub fn stop(&mut self) {
        if self.0.pid().is_none() {
            return;
        }
        let status = self.0.stop().expect("stop ledgerd");
        assert!(status.success(), "ledgerd exited with {status} after SIGTERM");
    }
}

/// A `kB` field of /proc/PID/status.
pub fn proc_status_kb(pid: u32, field: &str) -> u64 {
    proc_status_kb_if_running(pid, field)
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// A `kB` field of /proc/PID/status, or `None` once the process is gone.
pub fn proc_status_kb_if_running(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// CPU time (user + system) a process and its threads have used so far, in microseconds,
/// from /proc/PID/stat (fields 14 and 15, in clock ticks).
pub fn cpu_us(pid: u32) -> f64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc stat");
    // The command name (field 2) may hold spaces: count fields after its closing parenthesis.
    let after = &text[text.rfind(')').expect("a stat line") + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields[i - 3].parse::<f64>().expect("a tick count");
    // SAFETY: sysconf has no memory effects.
    let per_s = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(14) + ticks(15)) * 1e6 / per_s
}

/// Creates accounts `first..first+count` (ledger 1, code 1, the given flags), asserting that
/// every one was created.
pub fn create_accounts(client: &mut Client, first: u128, count: u64, flags: u16) {
    let accounts: Vec<Account> = (0..count as u128)
        .map(|i| Account { id: first + i, ledger: 1, code: 1, flags, ..Default::default() })
        .collect();
    let failed = client.create_accounts_batched(&accounts).expect("create accounts");
    assert!(failed.is_empty(), "account creation failed: {:?}", &failed[..failed.len().min(5)]);
}

/// A transfer of `amount` on ledger 1.
pub fn transfer(id: u128, debit: u128, credit: u128, amount: u128) -> Transfer {
    Transfer {
        id,
        debit_account_id: debit,
        credit_account_id: credit,
        amount,
        ledger: 1,
        code: 1,
        ..Default::default()
    }
}

/// A small, fast, seeded generator (xorshift64*), so runs are repeatable.
#[derive(Clone)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() >> 32) * n) >> 32
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Zipf's law over `0..n`: rank k (0-based) drawn with probability proportional to
/// `1 / (k+1)^exponent`. The cumulative table is built once; a draw is a binary search.
pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    pub fn new(n: usize, exponent: f64) -> Zipf {
        assert!(n > 0);
        let mut cdf = Vec::with_capacity(n);
        let mut sum = 0.0;
        for k in 1..=n {
            sum += 1.0 / (k as f64).powf(exponent);
            cdf.push(sum);
        }
        for c in &mut cdf {
            *c /= sum;
        }
        Zipf { cdf }
    }

    pub fn sample(&self, rng: &mut Rng) -> u64 {
        let u = rng.unit();
        self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1) as u64
    }
}

/// How accounts are picked for a transfer.
pub enum Pick {
    Uniform(u64),
    Zipf(Zipf),
    /// Always debit index 0 (a stock account); credit one of `1..n` uniformly (a buyer).
    OneToMany(u64),
}

impl Pick {
    /// Two distinct account indexes in `0..n`.
    pub fn pair(&self, rng: &mut Rng) -> (u64, u64) {
        let (n, a, b) = match self {
            Pick::Uniform(n) => (*n, rng.below(*n), rng.below(*n)),
            Pick::Zipf(z) => (z.cdf.len() as u64, z.sample(rng), z.sample(rng)),
            Pick::OneToMany(n) => return (0, 1 + rng.below(n - 1)),
        };
        if a == b {
            (a, (b + 1 + rng.below(n - 1)) % n)
        } else {
            (a, b)
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Pick::Uniform(_) => "uniform",
            Pick::Zipf(_) => "zipf",
            Pick::OneToMany(_) => "one_to_many",
        }
    }
}

/// Write + fdatasync latency of `size` bytes at successive offsets of a preallocated
/// (fallocate) file, as the journal's segments are (each write converts an unwritten extent, a
/// metadata commit), or with `overwrite` of a file whose blocks were written before (data
/// only): the physical floor under any durable reply. Returns the histogram (ns).
pub fn disk_floor(
    dir: &Path,
    size: usize,
    iterations: usize,
    overwrite: bool,
) -> hdrhistogram::Histogram<u64> {
    use std::os::unix::fs::FileExt;
    use std::os::unix::io::AsRawFd;
    const LEN: u64 = 64 << 20;
    let path = dir.join("disk-floor");
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .expect("floor file");
    // SAFETY: plain syscall on an open descriptor.
    let rc = unsafe { libc::posix_fallocate(f.as_raw_fd(), 0, LEN as libc::off_t) };
    assert_eq!(rc, 0, "posix_fallocate");
    if overwrite {
        let chunk = vec![0u8; 1 << 20];
        for i in 0..LEN / chunk.len() as u64 {
            f.write_all_at(&chunk, i * chunk.len() as u64).expect("zero fill");
        }
    }
    f.sync_all().expect("sync");
    let page = vec![0x5au8; size];
    let mut h = report::histogram();
    let size = size as u64;
    for i in 0..iterations as u64 {
        let t = Instant::now();
        f.write_all_at(&page, (i * size) % (LEN - size)).expect("pwrite");
        f.sync_data().expect("fdatasync");
        h.saturating_record(t.elapsed().as_nanos() as u64);
    }
    drop(f);
    let _ = std::fs::remove_file(&path);
    h
}
