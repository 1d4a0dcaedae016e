//! Wiring: recover, then start the business thread, the network threads, the timer and the
//! operator endpoint; on shutdown, stop accepting, answer what was accepted, flush, exit.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use disruptor::Producer as _;

use crate::cold::{ColdConfig, ColdIndex, Indexer};
use crate::config::{ClusterConfig, DaemonConfig};
use crate::journal::FaultPlan;
use crate::metrics::Metrics;
use crate::net::{self, NetConfig};
use crate::pipeline::now_ns;
use crate::pipeline::resolve::{self, Resolutions};
use crate::pipeline::{self, Business, BusinessConfig, ColdStage, Doorbell, Producer};
use crate::recovery::{self, RecoveryConfig};
use crate::replication::node::{Node, NodeConfig};
use crate::replication::transport::{TokenCheck, Transport, TransportConfig};
use crate::replication::{self, JournalLog, Replica};
use crate::snapshot;

/// Scheduling niceness of the snapshot process (0 is the daemon's; 19 the lowest priority).
const SNAPSHOT_NICE: libc::c_int = 10;
/// How often the timer looks for due expiries, a journal to retry and snapshots to take.
const TIMER_INTERVAL: Duration = Duration::from_millis(10);
/// Descriptors kept for everything but client connections: standard streams, the two locks,
/// the superblock, the active journal segment and the next one being created (temporary file
/// and directory syncs), the listeners, the operator endpoint's connections
/// (`HTTP_CONNECTIONS_MAX`), a snapshot process being started, the read-only journal view of
/// an in-process rebuild, with room to spare. Per network thread add `FDS_PER_NET_THREAD`
/// (its poll and waker).
pub const FDS_RESERVED: u64 = 64;
/// Descriptors each network thread needs besides its connections.
pub const FDS_PER_NET_THREAD: u64 = 4;
/// Highest soft descriptor limit asked for when the hard limit is unlimited.
const FDS_WANTED_MAX: u64 = 1 << 20;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and returns how many client connections
/// the result can hold beside the descriptors the journal and snapshots need: `connections_max`,
/// or fewer (with a warning) when the limit cannot hold it. A connection flood then meets the
/// connection limit, never EMFILE in a segment roll-over.
pub fn descriptor_budget(connections_max: usize, net_threads: usize) -> anyhow::Result<usize> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit on this process, with a struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            anyhow::bail!("getrlimit(RLIMIT_NOFILE): {}", std::io::Error::last_os_error());
        }
        let wanted = lim.rlim_max.min(FDS_WANTED_MAX as libc::rlim_t);
        if lim.rlim_cur < wanted {
            let raised = libc::rlimit { rlim_cur: wanted, rlim_max: lim.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = wanted;
            }
        }
    }
    let soft: u64 = lim.rlim_cur;
    let reserved = FDS_RESERVED + FDS_PER_NET_THREAD * net_threads as u64;
    anyhow::ensure!(
        soft > reserved,
        "the descriptor limit ({soft}, hard limit {}) is too low: ledgerd needs {reserved} for          its journal, snapshots and listeners plus one per client connection; raise it          (ulimit -n, LimitNOFILE=)",
        lim.rlim_max
    );
    let room = usize::try_from(soft - reserved).unwrap_or(usize::MAX);
    if room < connections_max {
        tracing::warn!(
            connections_max,
            clamped_to = room,
            descriptor_limit = soft,
            reserved,
            "the descriptor limit cannot hold --connections-max; accepting at most {room}              connections so the journal and snapshots always have descriptors"
        );
        return Ok(room);
    }
    Ok(connections_max)
}

/// Makes every panic, on any thread, log at ERROR (with the thread's name, the message, where
/// and a backtrace) and abort the process. A panic is a bug: a business thread that unwinds
/// would leave the ring full and clients waiting for ever, and a half-updated state must never
/// be served. The supervisor restarts the daemon, which recovers from the journal. Release
/// builds also set `panic = "abort"`; the hook makes debug builds behave the same.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("unnamed");
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(no message)");
        let location = info.location().map(|l| l.to_string()).unwrap_or_default();
        let backtrace = std::backtrace::Backtrace::force_capture();
        tracing::error!(
            thread = name,
            %location,
            %backtrace,
            "panic: {message}; aborting (a restart recovers from the journal)"
        );
        std::process::abort();
    }));
}

/// The recovery settings a daemon config implies.
pub fn recovery_config(config: &DaemonConfig) -> RecoveryConfig {
    RecoveryConfig {
        data_dir: config.data_dir.clone(),
        segment_size_bytes: config.segment_size_bytes,
        flush_mode: config.flush_mode,
        discard_after: if config.repair { config.repair_discard_after } else { None },
        fault: None,
        evict_through_ns: config.evict_through_ns,
    }
}

/// Runs the daemon until `shutdown` is set (by SIGTERM/SIGINT in the binary).
pub fn run(mut config: DaemonConfig, shutdown: Arc<AtomicBool>) -> anyhow::Result<()> {
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
    private_data_dir(&config.data_dir)?;
    let _lock = lock_data_dir(&config.data_dir)?;
    config.connections_max = descriptor_budget(config.connections_max, config.net_threads)?;
    if config.repair && config.repair_discard_after.is_none() {
        return repair_dry_run(&config.data_dir);
    }
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
        FaultFile {
            path: path.clone(),
            plan: Arc::new(FaultPlan::new()),
            loss_percent: Arc::new(std::sync::atomic::AtomicU32::new(0)),
            applied: None,
        }
    });
    let loss = faults.as_ref().map(|f| Arc::clone(&f.loss_percent));
    recovery_config.fault = faults.as_ref().map(|f| Arc::clone(&f.plan));
    // Producers ring the first stage's doorbell: the resolve stage's when history is on disk
    // (it rings the business thread's), else the business thread's.
    let doorbell = Arc::new(Doorbell::new());
    let business_doorbell = match config.cold_index {
        true => Arc::new(Doorbell::new()),
        false => Arc::clone(&doorbell),
    };
    let core = match &config.cluster {
        Some(cluster) => {
            let doorbell = &business_doorbell;
            start_member(&config, cluster, &recovery_config, doorbell, &metrics, loss)?
        }
        None => start_single(&config, &mut recovery_config, &metrics)?,
    };
    let recovery_ms = started.elapsed().as_millis() as u64;
    metrics.recovery_ms.store(recovery_ms, Relaxed);
    // What the snapshot loaded left out of memory: the rule for the next one starts there.
    let (snapshot_sequence, next_expiry, snapshot_evicted_ids) = match &core {
        Core::Single { recovered, .. } => (
            recovered.report.snapshot_sequence.unwrap_or(0),
            recovered.state.next_expiry_ns(),
            recovered.state.evicted_ids(),
        ),
        Core::Member { replica, .. } => {
            (replica.started_from(), replica.state().next_expiry_ns(), 0)
        }
    };
    metrics.snapshot_sequence.store(snapshot_sequence, Relaxed);

    let listener = std::net::TcpListener::bind(config.listen)
        .with_context(|| format!("binding the client address {}", config.listen))?;
    let (polls, shared) = net::prepare(config.net_threads)?;
    metrics.ring_capacity.store(config.ring_slots as u64, Relaxed);
    let next_expiry_ns = Arc::new(AtomicU64::new(next_expiry.unwrap_or(u64::MAX)));
    let sinks: Vec<_> = shared.iter().map(|s| Arc::clone(&s.sink)).collect();
    let business_thread = std::thread::Builder::new().name("ledgerd-business".into());
    let (producer, business_thread, resolve_thread, cold) = match core {
        Core::Member { replica, transport, inbox } => {
            let node = Node::new(
                NodeConfig {
                    pin_core: config.business_core,
                    capacity: config.capacity,
                    next_expiry_ns: Arc::clone(&next_expiry_ns),
                    tick: replication::node::TICK_DEFAULT,
                    verify: config.verify,
                },
                *replica,
                transport,
                inbox,
                Arc::clone(&metrics),
                sinks,
            );
            let (producer, poller) = pipeline::build_ring(config.ring_slots);
            let doorbell = Arc::clone(&business_doorbell);
            (producer, business_thread.spawn(move || node.run(poller, doorbell))?, None, None)
        }
        Core::Single { recovered, cold } => {
            let business = Business::new(
                BusinessConfig {
                    recovery: recovery_config,
                    pin_core: config.business_core,
                    busy_spin: config.busy_spin,
                    next_expiry_ns: Arc::clone(&next_expiry_ns),
                    verify: config.verify,
                    capacity: config.capacity,
                },
                recovered.state,
                recovered.journal,
                Arc::clone(&metrics),
                sinks,
            );
            match cold {
                None => {
                    let (producer, poller) = pipeline::build_ring(config.ring_slots);
                    let doorbell = Arc::clone(&business_doorbell);
                    let thread = business_thread.spawn(move || business.run(poller, doorbell))?;
                    (producer, thread, None, None)
                }
                Some(cold) => {
                    let (producer, resolve_poller, poller) =
                        pipeline::build_ring_with_resolve(config.ring_slots);
                    let resolutions = Arc::new(Resolutions::new(config.ring_slots));
                    let business = business.with_cold_stage(ColdStage {
                        resolutions: Arc::clone(&resolutions),
                        durable: Arc::clone(&cold.durable),
                        index: cold.index.clone(),
                    });
                    let own = Arc::clone(&business_doorbell);
                    let business_thread =
                        business_thread.spawn(move || business.run(poller, own))?;
                    let (doorbell, next, index, metrics) = (
                        Arc::clone(&doorbell),
                        Arc::clone(&business_doorbell),
                        cold.index.clone(),
                        Arc::clone(&metrics),
                    );
                    let resolve_thread = std::thread::Builder::new()
                        .name("ledgerd-resolve".into())
                        .spawn(move || {
                            resolve::run(
                                resolve_poller,
                                doorbell,
                                next,
                                index,
                                resolutions,
                                metrics,
                            )
                        })?;
                    (producer, business_thread, Some(resolve_thread), Some(cold))
                }
            }
        }
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
            last_snapshot_indexed: snapshot_evicted_ids,
            child: None,
            faults,
            cold_index: cold.as_ref().map(|c| c.index.clone()),
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
    // Every producer is gone: the stages drain the ring, the business thread flushes and
    // they stop.
    doorbell.wake();
    if let Some(thread) = resolve_thread {
        thread.join().map_err(|_| anyhow::anyhow!("the resolve stage panicked"))?;
    }
    business_doorbell.wake();
    business_thread.join().map_err(|_| anyhow::anyhow!("the business thread panicked"))?;
    if let Some(cold) = cold {
        cold.stop.store(true, std::sync::atomic::Ordering::Release);
        cold.indexer.join().map_err(|_| anyhow::anyhow!("the cold indexer panicked"))?;
    }
    http_shutdown.store(true, Relaxed);
    let _ = http.join();
    tracing::info!("stopped");
    Ok(())
}

/// What the business thread starts from.
enum Core {
    /// A single daemon: the recovered state and journal, and the disk index if any.
    Single { recovered: Box<recovery::Recovered>, cold: Option<Cold> },
    /// A cluster member: its replica (log in the journal) and the transport to its peers.
    Member {
        replica: Box<Replica<JournalLog>>,
        transport: Transport,
        inbox: std::sync::mpsc::Receiver<raft::prelude::Message>,
    },
}

/// Recovers a single daemon's state (snapshot and journal) and starts its disk index.
fn start_single(
    config: &DaemonConfig,
    recovery_config: &mut RecoveryConfig,
    metrics: &Metrics,
) -> anyhow::Result<Core> {
    let started = Instant::now();
    // The index store opens on its own thread while the journal is scanned and the snapshot
    // loaded: they touch different files, and both take a while after a crash (fjall removes
    // the tables a compaction left behind; recovery checks every record). Only on an existing
    // ledger (a new one is created in an empty directory only: the index's directory must not
    // appear before recovery looks), and not beside a confirmed repair, which may cut records
    // the index has read (`start_cold` checks).
    let cold_config = cold_config(config);
    let existing = crate::journal::superblock::superblock_path(&config.data_dir).exists();
    let parallel = config.cold_index && existing && recovery_config.discard_after.is_none();
    let opening = parallel.then(|| {
        let (data_dir, cold_config) = (config.data_dir.clone(), cold_config.clone());
        std::thread::Builder::new()
            .name("cold-index-open".into())
            .spawn(move || ColdIndex::open(&data_dir, &cold_config))
    });
    let opening = opening.transpose().context("starting the cold index's opening thread")?;
    let recovered = recovery::recover(recovery_config).context("recovery failed");
    let opened = opening
        .map(|thread| thread.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)));
    let recovered = recovered?;
    let index = match opened {
        Some(opened) => Some(opened.context("opening the cold index")?),
        None if config.cold_index => Some(
            ColdIndex::open(&config.data_dir, &cold_config).context("opening the cold index")?,
        ),
        None => None,
    };
    // The operator confirmed a repair for this start only: an in-process rebuild after a
    // journal failure must never repair anything by itself.
    recovery_config.discard_after = None;
    tracing::info!(
        sequence = recovered.journal.last_sequence(),
        snapshot_sequence = recovered.report.snapshot_sequence,
        replayed_records = recovered.report.replayed_records,
        recovery_ms = started.elapsed().as_millis() as u64,
        state_hash = %format!("{:032x}", recovered.state.state_hash()),
        "recovered"
    );
    // A state whose snapshot left history to the disk index cannot decide retries without it.
    anyhow::ensure!(
        config.cold_index || recovered.state.evicted_through_ns() == 0,
        "this ledger keeps its history in the disk index (its snapshot holds the hot state \
         only): start it with --cold-index true. To run it with everything in memory instead, \
         move {}/snapshots aside: the state is then rebuilt from the journal",
        config.data_dir.display()
    );
    metrics.journal_sequence.store(recovered.journal.last_sequence(), Relaxed);
    // History on disk: nothing is decided before the index holds what memory left out.
    let cold = match index {
        Some(index) => Some(start_cold(config, &cold_config, index, &recovered)?),
        None => None,
    };
    Ok(Core::Single { recovered: Box::new(recovered), cold })
}

/// Opens a cluster member's journal as its Raft log, rebuilds its state from the committed
/// entries, and starts the transport to its peers.
fn start_member(
    config: &DaemonConfig,
    cluster: &ClusterConfig,
    recovery_config: &RecoveryConfig,
    doorbell: &Arc<Doorbell>,
    metrics: &Metrics,
    loss: Option<Arc<std::sync::atomic::AtomicU32>>,
) -> anyhow::Result<Core> {
    let started = Instant::now();
    // A member's snapshots sit beside its hard state; snapshots without one are a single
    // daemon's, of a journal no cluster wrote.
    anyhow::ensure!(
        config.data_dir.join(replication::RAFT_STATE_FILE).exists()
            || snapshot::list_snapshots(&config.data_dir)?.is_empty(),
        "{} holds snapshots of a single daemon: a cluster member starts from a journal of its \
         own (an empty data directory, or one a member of this cluster wrote)",
        config.data_dir.display()
    );
    let voters: Vec<u64> = (1..=cluster.peers.len() as u64).collect();
    let log = JournalLog::open(recovery_config.journal_config(), &voters)
        .context("opening the replica's journal")?;
    let id = cluster.position as u64 + 1;
    let replica = Replica::start(id, log, replication::Options::default());
    tracing::info!(
        replica = cluster.position,
        snapshot_index = replica.started_from(),
        term = replica.term(),
        commit = replica.commit_index(),
        last_index = replica.last_index(),
        recovery_ms = started.elapsed().as_millis() as u64,
        state_hash = %format!("{:032x}", replica.state().state_hash()),
        "replica recovered"
    );
    let accepts: Option<TokenCheck> = if config.tokens.is_empty() {
        None
    } else {
        let tokens = config.tokens.clone();
        Some(Arc::new(move |presented: &[u8]| {
            tokens.role_of(presented) == Some(crate::net::auth::Role::ReadWrite)
        }))
    };
    let (transport, inbox) = Transport::start(
        TransportConfig {
            id,
            peers: cluster.peers.clone(),
            listen: cluster.listen,
            token: config.tokens.first_read_write().map(<[u8]>::to_vec),
            accepts,
            loss_percent: loss.unwrap_or_default(),
        },
        Arc::clone(doorbell),
    )
    .with_context(|| format!("binding the replication address {}", cluster.listen))?;
    metrics.replica.store(1, Relaxed);
    metrics.journal_sequence.store(replica.commit_index(), Relaxed);
    Ok(Core::Member { replica: Box::new(replica), transport, inbox })
}

/// Creates the data directory (0700), or tightens an existing one that group or others could
/// enter: journal, snapshots and superblock hold every account.
fn private_data_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let loose = std::fs::metadata(dir).ok().map(|m| m.permissions().mode() & 0o077 != 0);
    if loose.is_some() {
        // Never tighten a directory that is not (or not yet) a ledger's: refuse it first.
        crate::recovery::check_data_dir(dir)?;
    }
    crate::journal::private_dir(dir)
        .with_context(|| format!("creating the data directory {}", dir.display()))?;
    if loose == Some(true) {
        tracing::warn!(dir = %dir.display(), "the data directory was open to group or others; set it to 0700");
    }
    Ok(())
}

/// `--repair true` without a confirmation: states what a repair would discard and the
/// command that confirms it, and exits without serving.
fn repair_dry_run(data_dir: &Path) -> anyhow::Result<()> {
    match crate::recovery::repair_plan(data_dir) {
        Ok(None) => {
            println!("repair: nothing to repair in {}; start without --repair", data_dir.display());
            Ok(())
        }
        Ok(Some((plan, text))) => {
            print!("repair plan for {}:\n{text}", data_dir.display());
            anyhow::bail!(
                "repair not confirmed: nothing was changed. To discard what the plan above \
                 names (records {}..={}), run again with --repair-discard-after {}",
                plan.keep_through + 1,
                plan.discard_through.max(plan.keep_through + 1),
                plan.keep_through
            )
        }
        Err(reason) => anyhow::bail!("no repair possible: {reason}"),
    }
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
    /// Ids the cold index held when the last snapshot started (see [`indexed_ids`]): what it
    /// left out of memory. At start, what the snapshot loaded left out.
    last_snapshot_indexed: u64,
    child: Option<(Child, u64)>,
    faults: Option<FaultFile>,
    /// History on disk: snapshots leave out what the index holds.
    cold_index: Option<ColdIndex>,
}

/// Test-only fault injection: a file whose one line says which journal operation fails with
/// which errno. The timer rereads it every tick and arms the plan when the line changes, then
/// writes the line it applied to `FILE.applied`, so that a test knows the fault is in force.
///
/// `clear` (or an empty or missing file) disarms; `append ERRNO` / `flush ERRNO` fail every
/// append / flush from now on; `append-once ERRNO` / `flush-once ERRNO` fail the next one
/// only. ERRNO is `ENOSPC` or `EIO`. `panic` makes the business thread panic on the next
/// request or tick (the process must abort). On a cluster member, `loss PERCENT` drops that
/// share of the Raft messages it sends and receives, and `partition` all of them (cut off
/// from its peers).
struct FaultFile {
    path: PathBuf,
    plan: Arc<FaultPlan>,
    loss_percent: Arc<std::sync::atomic::AtomicU32>,
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
        let (site, argument) = (words.next().unwrap_or("clear"), words.next().unwrap_or("EIO"));
        let errno = match argument {
            "ENOSPC" => FaultPlan::ENOSPC,
            _ => FaultPlan::EIO,
        };
        self.plan.clear();
        let loss = match site {
            "partition" => 100,
            "loss" => argument.parse::<u32>().unwrap_or(0).min(100),
            _ => 0,
        };
        self.loss_percent.store(loss, Relaxed);
        match site {
            "append" => self.plan.fail_appends_from(1, errno),
            "flush" => self.plan.fail_flushes_from(1, errno),
            "append-once" => self.plan.fail_append(1, errno),
            "flush-once" => self.plan.fail_flush(1, errno),
            "panic" => self.plan.request_panic(),
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
            let failing = self.metrics.degraded.load(Relaxed) == 1
                || self.metrics.writes_failing.load(Relaxed) == 1;
            if due || failing {
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
            self.metrics.snapshot_running.store(0, Relaxed);
        }
        let sequence = self.metrics.journal_sequence.load(Relaxed);
        let events = self.metrics.journal_events.load(Relaxed);
        let (every_records, every_events) =
            (self.config.snapshot_every_records, self.config.snapshot_every_events);
        let due = (every_records > 0 && sequence >= self.last_snapshot_sequence + every_records)
            || (every_events > 0 && events >= self.last_snapshot_events + every_events);
        // History on disk: once the index has taken in another `every_events` ids, a snapshot
        // leaves them out of memory, and a restart loads that much less. Due even with no new
        // records (the index catching up after a burst): it replaces the snapshot at the same
        // sequence.
        let indexed = self.cold_index.as_ref().map_or(0, indexed_ids);
        let hot_due = every_events > 0
            && self.cold_index.is_some()
            && indexed >= self.last_snapshot_indexed + every_events;
        let new_records = sequence > self.last_snapshot_sequence;
        if !((due && new_records) || (hot_due && sequence > 0)) {
            return;
        }
        // Counted from the start, not from the end, of the snapshot: a failed one is not
        // retried before another interval of changes.
        self.last_snapshot_events = events;
        self.last_snapshot_indexed = indexed;
        let evict_through_ns = self.cold_index.as_ref().map_or(0, |i| i.watermark().timestamp);
        match spawn_snapshot(&self.config, sequence, evict_through_ns) {
            Ok(child) => {
                self.child = Some((child, sequence));
                self.metrics.snapshot_running.store(1, Relaxed);
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not start the snapshot process");
                self.last_snapshot_sequence = sequence;
            }
        }
    }
}

/// Transfer and failed ids the cold index holds (both only grow).
fn indexed_ids(index: &ColdIndex) -> u64 {
    let watermark = index.watermark();
    watermark.transfers + watermark.failed
}

/// Runs this executable with `--build-snapshot-up-to SEQ` on the same data directory.
///
/// The child gets everything it needs on its command line and none of the daemon's
/// `LEDGERD_*` environment: it must not depend on files the daemon read at start (a settings
/// file or an auth token file moved since then would stop every snapshot).
fn spawn_snapshot(
    config: &DaemonConfig,
    sequence: u64,
    evict_through_ns: u64,
) -> std::io::Result<Child> {
    let exe = std::env::current_exe()?;
    let mut command = Command::new(exe);
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(|n| n.starts_with("LEDGERD_")) {
            command.env_remove(name);
        }
    }
    command
        .arg("--log")
        .arg(&config.log)
        .arg("--log-format")
        .arg(if config.log_json { "json" } else { "human" })
        .arg("--business-core")
        .arg("none")
        .arg("--data-dir")
        .arg(&config.data_dir)
        .arg("--segment-size-mib")
        .arg((config.segment_size_bytes / (1024 * 1024)).to_string())
        .arg("--snapshots-keep")
        .arg(config.snapshots_keep.to_string())
        .arg("--build-snapshot-up-to")
        .arg(sequence.to_string())
        .arg("--evict-through-ns")
        .arg(evict_through_ns.to_string())
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
        // SAFETY: prctl and setpriority are async-signal-safe and touch no memory of the
        // parent.
        unsafe {
            self.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // Background work: the request path (network and business threads)
                // goes first on a busy machine; a slower snapshot only means fewer of them.
                // Best effort: a failure leaves the default priority.
                let _ = libc::setpriority(libc::PRIO_PROCESS, 0, SNAPSHOT_NICE);
                Ok(())
            })
        }
    }
}

/// Takes an exclusive lock on the data directory for the life of the returned file, so that
/// two daemons can never write one journal.
fn lock_data_dir(dir: &Path) -> anyhow::Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join("LOCK");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(crate::journal::FILE_MODE)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    crate::journal::private_file(&file).with_context(|| format!("chmod {}", path.display()))?;
    // SAFETY: flock on a file descriptor we own; no memory is involved.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        anyhow::bail!("{} is locked: another ledgerd is using this data directory", dir.display());
    }
    Ok(file)
}

/// The disk index of history and the thread that maintains it.
struct Cold {
    index: ColdIndex,
    /// The journal's durable sequence, which the business thread publishes.
    durable: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    indexer: std::thread::JoinHandle<()>,
}

/// The disk index's settings from the daemon's.
fn cold_config(config: &DaemonConfig) -> ColdConfig {
    ColdConfig {
        transfers_max: config.cold_index_transfers,
        failed_ids_max: config.capacity.failed_ids.max(config.cold_index_transfers / 16),
        ..ColdConfig::default()
    }
}

/// How often the start-up wait for the index logs its progress.
const COLD_CATCH_UP_LOG_INTERVAL: Duration = Duration::from_secs(2);

/// Starts the indexer on the opened index and waits until it holds every record the
/// recovered state left out of memory (a snapshot taken with eviction): until then a retry of
/// an evicted id would look new.
fn start_cold(
    config: &DaemonConfig,
    cold_config: &ColdConfig,
    mut index: ColdIndex,
    recovered: &recovery::Recovered,
) -> anyhow::Result<Cold> {
    let last = recovered.journal.last_sequence();
    if index.watermark().sequence > last {
        // A confirmed repair cut the journal after the index read it: what the index holds
        // past the cut is no longer true. It is derived data: start it again.
        tracing::warn!(
            index_sequence = index.watermark().sequence,
            journal_sequence = last,
            "the cold index is ahead of the journal; rebuilding it from the journal"
        );
        let dir = index.dir().to_path_buf();
        drop(index);
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("removing the cold index {}", dir.display()))?;
        index = ColdIndex::open(&config.data_dir, cold_config).context("opening the cold index")?;
    }
    let durable = Arc::new(AtomicU64::new(last));
    let stop = Arc::new(AtomicBool::new(false));
    let indexer = Indexer::spawn(
        index.clone(),
        config.data_dir.clone(),
        Arc::clone(&durable),
        Arc::clone(&stop),
    );
    let needed_ns = recovered.state.evicted_through_ns();
    let started = Instant::now();
    let mut logged = started;
    loop {
        let watermark = index.watermark();
        if watermark.timestamp >= needed_ns || watermark.sequence >= last {
            tracing::info!(
                sequence = watermark.sequence,
                waited_ms = started.elapsed().as_millis() as u64,
                "cold index ready"
            );
            break;
        }
        anyhow::ensure!(!indexer.is_finished(), "the cold indexer stopped while catching up");
        if logged.elapsed() >= COLD_CATCH_UP_LOG_INTERVAL {
            logged = Instant::now();
            tracing::info!(
                sequence = watermark.sequence,
                journal_sequence = last,
                "the cold index is catching up with the journal before serving"
            );
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(Cold { index, durable, stop, indexer })
}
