//! Wiring: recover, then start the business thread, the network threads, the timer and the
//! operator endpoint; on shutdown, stop accepting, answer what was accepted, flush, exit.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use disruptor::Producer as _;

use crate::config::DaemonConfig;
use crate::journal::FaultPlan;
use crate::metrics::Metrics;
use crate::net::{self, NetConfig};
use crate::pipeline::now_ns;
use crate::pipeline::{self, Business, BusinessConfig, Doorbell, Producer};
use crate::recovery::{self, RecoveryConfig};

/// How often the timer looks for due expiries, a journal to retry and snapshots to take.
const TIMER_INTERVAL: Duration = Duration::from_millis(10);

/// The recovery settings a daemon config implies.
pub fn recovery_config(config: &DaemonConfig) -> RecoveryConfig {
    RecoveryConfig {
        data_dir: config.data_dir.clone(),
        segment_size_bytes: config.segment_size_bytes,
        flush_mode: config.flush_mode,
        truncate_corrupt: config.repair,
        fault: None,
    }
}

/// Runs the daemon until `shutdown` is set (by SIGTERM/SIGINT in the binary).
pub fn run(config: DaemonConfig, shutdown: Arc<AtomicBool>) -> anyhow::Result<()> {
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    // Certificates are read before anything else starts: a bad file fails the start at once.
    let tls = match &config.tls {
        Some((cert, key, client_ca)) => {
            Some(net::tls::server_config(cert, key, client_ca.as_deref())?)
        }
        None => None,
    };
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating the data directory {}", config.data_dir.display()))?;
    let _lock = lock_data_dir(&config.data_dir)?;
    let metrics = Arc::new(Metrics::new());

    // The operator endpoint comes up first, so that /readyz can say "not ready" during recovery.
    let metrics_listener = std::net::TcpListener::bind(config.metrics_listen)
        .with_context(|| format!("binding the metrics address {}", config.metrics_listen))?;
    let http_shutdown = Arc::new(AtomicBool::new(false));
    let http = {
        let (metrics, stop) = (Arc::clone(&metrics), Arc::clone(&http_shutdown));
        std::thread::Builder::new()
            .name("ledgerd-http".into())
            .spawn(move || crate::http::serve(metrics_listener, metrics, stop))?
    };

    let started = Instant::now();
    let mut recovery_config = recovery_config(&config);
    let faults = config.fault_file.as_ref().map(|path| {
        tracing::warn!(file = %path.display(), "TEST ONLY: journal fault injection is armed from this file");
        FaultFile { path: path.clone(), plan: Arc::new(FaultPlan::new()), applied: None }
    });
    recovery_config.fault = faults.as_ref().map(|f| Arc::clone(&f.plan));
    let recovered = recovery::recover(&recovery_config).context("recovery failed")?;
    let recovery_ms = started.elapsed().as_millis() as u64;
    metrics.recovery_ms.store(recovery_ms, Relaxed);
    tracing::info!(
        sequence = recovered.journal.last_sequence(),
        snapshot_sequence = recovered.report.snapshot_sequence,
        replayed_records = recovered.report.replayed_records,
        recovery_ms,
        state_hash = %format!("{:032x}", recovered.state.state_hash()),
        "recovered"
    );
    let snapshot_sequence = recovered.report.snapshot_sequence.unwrap_or(0);
    metrics.snapshot_sequence.store(snapshot_sequence, Relaxed);

    let listener = std::net::TcpListener::bind(config.listen)
        .with_context(|| format!("binding the client address {}", config.listen))?;
    let (polls, shared) = net::prepare(config.net_threads)?;
    let (producer, poller) = pipeline::build_ring(config.ring_slots);
    metrics.ring_capacity.store(config.ring_slots as u64, Relaxed);
    let doorbell = Arc::new(Doorbell::new());
    let next_expiry_ns =
        Arc::new(AtomicU64::new(recovered.state.next_expiry_ns().unwrap_or(u64::MAX)));

    let business = Business::new(
        BusinessConfig {
            recovery: recovery_config,
            pin_core: config.business_core,
            busy_spin: config.busy_spin,
            next_expiry_ns: Arc::clone(&next_expiry_ns),
        },
        recovered.state,
        recovered.journal,
        Arc::clone(&metrics),
        shared.iter().map(|s| Arc::clone(&s.sink)).collect(),
    );
    let business_thread = {
        let doorbell = Arc::clone(&doorbell);
        std::thread::Builder::new()
            .name("ledgerd-business".into())
            .spawn(move || business.run(poller, doorbell))?
    };

    let net_shutdown = Arc::new(AtomicBool::new(false));
    let net_threads = net::start(
        listener,
        polls,
        shared,
        &producer,
        Arc::clone(&doorbell),
        Arc::clone(&metrics),
        NetConfig {
            connections_max: config.connections_max,
            in_flight_max: config.in_flight_max,
            idle_timeout: config.idle_timeout,
            frame_timeout: config.frame_timeout,
            tokens: config.tokens.clone(),
            hello_timeout: config.hello_timeout,
            pre_hello_max: config.pre_hello_connections_max,
            per_address_max: config.connections_per_address_max,
            reply_memory_max: config.reply_memory_max_bytes,
            tls,
            ..NetConfig::default()
        },
        Arc::clone(&net_shutdown),
    )?;

    let timer_shutdown = Arc::new(AtomicBool::new(false));
    let timer = {
        let timer = Timer {
            producer: producer.clone(),
            doorbell: Arc::clone(&doorbell),
            metrics: Arc::clone(&metrics),
            next_expiry_ns,
            shutdown: Arc::clone(&timer_shutdown),
            config: config.clone(),
            last_snapshot_sequence: snapshot_sequence,
            last_snapshot_events: 0,
            child: None,
            faults,
        };
        std::thread::Builder::new().name("ledgerd-timer".into()).spawn(move || timer.run())?
    };
    drop(producer);

    metrics.ready.store(1, Relaxed);
    tracing::info!(listen = %config.listen, metrics = %config.metrics_listen, data_dir = %config.data_dir.display(), "serving");

    while !shutdown.load(Relaxed) {
        std::thread::sleep(Duration::from_millis(20));
    }

    tracing::info!("shutting down: no new requests; answering what was accepted");
    metrics.ready.store(0, Relaxed);
    net_shutdown.store(true, Relaxed);
    net_threads.wake_all();
    for handle in net_threads.handles {
        let _ = handle.join();
    }
    timer_shutdown.store(true, Relaxed);
    let _ = timer.join();
    // Every producer is gone: the business thread drains the ring, flushes and stops.
    doorbell.wake();
    business_thread.join().map_err(|_| anyhow::anyhow!("the business thread panicked"))?;
    http_shutdown.store(true, Relaxed);
    let _ = http.join();
    tracing::info!("stopped");
    Ok(())
}

/// Publishes ticks when an expiry is due (or the journal must be retried) and takes
/// snapshots in a child process, so that the business thread never stalls for one.
struct Timer {
    producer: Producer,
    doorbell: Arc<Doorbell>,
    metrics: Arc<Metrics>,
    next_expiry_ns: Arc<AtomicU64>,
    shutdown: Arc<AtomicBool>,
    config: DaemonConfig,
    last_snapshot_sequence: u64,
    /// `metrics.journal_events` when the last snapshot started.
    last_snapshot_events: u64,
    child: Option<(Child, u64)>,
    faults: Option<FaultFile>,
}

/// Test-only fault injection: a file whose one line says which journal operation fails with
/// which errno. The timer rereads it every tick and arms the plan when the line changes, then
/// writes the line it applied to `FILE.applied`, so that a test knows the fault is in force.
///
/// `clear` (or an empty or missing file) disarms; `append ERRNO` / `flush ERRNO` fail every
/// append / flush from now on; `append-once ERRNO` / `flush-once ERRNO` fail the next one
/// only. ERRNO is `ENOSPC` or `EIO`.
struct FaultFile {
    path: PathBuf,
    plan: Arc<FaultPlan>,
    applied: Option<String>,
}

impl FaultFile {
    fn poll(&mut self) {
        let line = std::fs::read_to_string(&self.path).unwrap_or_default();
        let line = line.trim().to_string();
        if self.applied.as_deref() == Some(line.as_str()) {
            return;
        }
        let mut words = line.split_whitespace();
        let (site, errno) = (words.next().unwrap_or("clear"), words.next().unwrap_or("EIO"));
        let errno = match errno {
            "ENOSPC" => FaultPlan::ENOSPC,
            _ => FaultPlan::EIO,
        };
        self.plan.clear();
        match site {
            "append" => self.plan.fail_appends_from(1, errno),
            "flush" => self.plan.fail_flushes_from(1, errno),
            "append-once" => self.plan.fail_append(1, errno),
            "flush-once" => self.plan.fail_flush(1, errno),
            _ => {}
        }
        tracing::warn!(fault = %line, "TEST ONLY: journal fault plan changed");
        let mut applied = self.path.clone().into_os_string();
        applied.push(".applied");
        let _ = std::fs::write(applied, &line);
        self.applied = Some(line);
    }
}

impl Timer {
    fn run(mut self) {
        while !self.shutdown.load(Relaxed) {
            std::thread::sleep(TIMER_INTERVAL);
            if let Some(faults) = self.faults.as_mut() {
                faults.poll();
            }
            let due = now_ns() >= self.next_expiry_ns.load(Relaxed);
            if due || self.metrics.degraded.load(Relaxed) == 1 {
                // A full ring means the business thread is busy anyway; the next tick retries.
                if self.producer.try_publish(|slot| slot.set_tick()).is_ok() {
                    self.metrics.ring_published.fetch_add(1, Relaxed);
                    self.doorbell.ring();
                }
            }
            self.snapshots();
        }
        if let Some((mut child, _)) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn snapshots(&mut self) {
        if let Some((child, sequence)) = self.child.as_mut() {
            match child.try_wait() {
                Ok(None) => return,
                Ok(Some(status)) if status.success() => {
                    self.last_snapshot_sequence = *sequence;
                    self.metrics.snapshots_taken.fetch_add(1, Relaxed);
                    self.metrics.snapshot_sequence.store(*sequence, Relaxed);
                    tracing::info!(sequence = *sequence, "snapshot written");
                }
                Ok(Some(status)) => {
                    // Not retried before another interval: the journal alone still recovers.
                    self.last_snapshot_sequence = *sequence;
                    tracing::warn!(%status, "snapshot process failed; the journal alone still recovers everything")
                }
                Err(e) => tracing::warn!(error = %e, "snapshot process lost"),
            }
            self.child = None;
        }
        let sequence = self.metrics.journal_sequence.load(Relaxed);
        let events = self.metrics.journal_events.load(Relaxed);
        let (every_records, every_events) =
            (self.config.snapshot_every_records, self.config.snapshot_every_events);
        let due = (every_records > 0 && sequence >= self.last_snapshot_sequence + every_records)
            || (every_events > 0 && events >= self.last_snapshot_events + every_events);
        if !due || sequence <= self.last_snapshot_sequence {
            return;
        }
        // Counted from the start, not from the end, of the snapshot: a failed one is not
        // retried before another interval of changes.
        self.last_snapshot_events = events;
        match spawn_snapshot(&self.config, sequence) {
            Ok(child) => self.child = Some((child, sequence)),
            Err(e) => {
                tracing::warn!(error = %e, "could not start the snapshot process");
                self.last_snapshot_sequence = sequence;
            }
        }
    }
}

/// Runs this executable with `--build-snapshot-up-to SEQ` on the same data directory.
fn spawn_snapshot(config: &DaemonConfig, sequence: u64) -> std::io::Result<Child> {
    let exe = std::env::current_exe()?;
    Command::new(exe)
        .arg("--data-dir")
        .arg(&config.data_dir)
        .arg("--segment-size-mib")
        .arg((config.segment_size_bytes / (1024 * 1024)).to_string())
        .arg("--snapshots-keep")
        .arg(config.snapshots_keep.to_string())
        .arg("--build-snapshot-up-to")
        .arg(sequence.to_string())
        .stdin(std::process::Stdio::null())
        .pre_exec_die_with_parent()
        .spawn()
}

trait DieWithParent {
    /// Makes the child receive SIGKILL when the daemon dies (a SIGKILLed daemon must not leave
    /// a snapshot builder behind, still writing into the data directory).
    fn pre_exec_die_with_parent(&mut self) -> &mut Self;
}

impl DieWithParent for Command {
    fn pre_exec_die_with_parent(&mut self) -> &mut Self {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            self.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            })
        }
    }
}

/// Takes an exclusive lock on the data directory for the life of the returned file, so that
/// two daemons can never write one journal.
fn lock_data_dir(dir: &Path) -> anyhow::Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    let path = dir.join("LOCK");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: flock on a file descriptor we own; no memory is involved.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        anyhow::bail!("{} is locked: another ledgerd is using this data directory", dir.display());
    }
    Ok(file)
}
