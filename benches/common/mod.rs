//! Shared by the end-to-end benchmarks: the run mode (full under `cargo bench`, a smoke run
//! under `cargo test`), starting `ledgerd` on free loopback ports with a data directory under
//! `target/` (the real disk), a single-threaded load generator that keeps many connections
//! pipelined (closed loop) or sends at a fixed rate (open loop, latency measured from the
//! intended send time), and the outputs: `name: value` lines, HdrHistogram percentile
//! distributions (`.hgrm`) and SVG plots of latency by percentile.

#![allow(dead_code)]

pub mod load;
pub mod report;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr")
}

/// The daemon binary Cargo built for this package.
pub fn ledgerd_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ledgerd"))
}

/// A `ledgerd` process started by a benchmark; SIGKILLed on drop.
pub struct Daemon {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub data_dir: PathBuf,
    pub extra_args: Vec<String>,
}

impl Daemon {
    /// Starts a daemon on `data_dir` with `extra_args` and waits until it answers `status`.
    pub fn start(data_dir: &Path, extra_args: &[&str]) -> Daemon {
        let mut daemon = Daemon {
            child: None,
            addr: free_addr(),
            metrics_addr: free_addr(),
            data_dir: data_dir.to_path_buf(),
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
        };
        daemon.spawn();
        daemon.wait_ready(START_TIMEOUT);
        daemon
    }

    /// Spawns the process without waiting for it to answer.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new(ledgerd_bin())
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--listen")
            .arg(self.addr.to_string())
            .arg("--metrics-listen")
            .arg(self.metrics_addr.to_string())
            .args(&self.extra_args)
            // `LEDGERD_BENCH_LOG=info` shows the daemon's own logs (recovery times, snapshots).
            .env(
                "LEDGERD_LOG",
                std::env::var("LEDGERD_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn ledgerd");
        self.child = Some(child);
    }

    /// Polls until a client can connect and get a `status` reply; returns when it did.
    pub fn wait_ready(&mut self, timeout: Duration) -> Instant {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(mut client) = Client::connect(self.addr, None) {
                if client.status().is_ok() {
                    return Instant::now();
                }
            }
            if let Some(status) = self.child.as_mut().expect("running").try_wait().unwrap() {
                panic!("ledgerd exited during start: {status}");
            }
            assert!(Instant::now() < deadline, "ledgerd did not answer within {timeout:?}");
            std::thread::sleep(Duration::from_micros(500));
        }
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
        let mut daemon = Daemon {
            child: None,
            addr: free_addr(),
            metrics_addr: free_addr(),
            data_dir: data_dir.to_path_buf(),
            extra_args: args,
        };
        daemon.spawn();
        let deadline = Instant::now() + START_TIMEOUT;
        while Client::connect_with(daemon.addr, options.clone())
            .and_then(|mut c| c.status())
            .is_err()
        {
            assert!(Instant::now() < deadline, "ledgerd (TLS) did not answer");
            std::thread::sleep(Duration::from_millis(5));
        }
        (daemon, options)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn client(&self) -> Client {
        Client::connect(self.addr, None).expect("connect")
    }

    /// The daemon's peak resident memory (VmHWM) in MiB.
    pub fn peak_rss_mb(&self) -> f64 {
        proc_status_kb(self.pid(), "VmHWM:") as f64 / 1024.0
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        // SAFETY: sending a signal to our own child process.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(status.success(), "ledgerd exited with {status} after SIGTERM");
                return;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("ledgerd did not stop within {STOP_TIMEOUT:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A `kB` field of /proc/PID/status.
pub fn proc_status_kb(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
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
