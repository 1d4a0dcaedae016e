//! The daemon's settings: embedded defaults, overridden by a TOML file, then by environment
//! variables, then by command-line flags (each flag has a `LEDGERD_*` variable).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use serde::Deserialize;

use crate::journal::FlushMode;
use crate::state_machine::Capacity;

/// `ledgerd`: the ledger daemon. Starts with embedded defaults and nothing to prepare.
///
/// Every setting can also come from a TOML file (`--config`, keys as the long flag names with
/// `_` for `-`) or an environment variable (shown below). Flags beat variables, which beat the
/// file, which beats the defaults.
#[derive(Parser, Deserialize, Debug, Default, Clone)]
#[command(name = "ledgerd", version, about, long_about = None)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct Settings {
    /// Settings file (TOML).
    #[arg(long, env = "LEDGERD_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// Where the journal and snapshots live (created if missing). [default: ./ledgerd-data]
    #[arg(long, env = "LEDGERD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// Address for clients. [default: 127.0.0.1:7400]
    #[arg(long, env = "LEDGERD_LISTEN")]
    pub listen: Option<SocketAddr>,

    /// Address for /metrics, /healthz and /readyz. [default: 127.0.0.1:7401]
    #[arg(long, env = "LEDGERD_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// File holding the tokens clients present in their hello: one token (role read-write),
    /// or lines "ROLE TOKEN" with ROLE read-only, follower or read-write. Tokens are at least
    /// 32 bytes (`head -c 32 /dev/urandom | base64`). Required to listen on a non-loopback
    /// address (unless --insecure).
    #[arg(long, env = "LEDGERD_AUTH_TOKEN_FILE")]
    pub auth_token_file: Option<PathBuf>,

    /// Network threads. [default: 1]
    #[arg(long, env = "LEDGERD_NET_THREADS")]
    pub net_threads: Option<usize>,

    /// Core to pin the business thread to; "none" disables pinning. [default: the last core]
    #[arg(long, env = "LEDGERD_BUSINESS_CORE")]
    pub business_core: Option<String>,

    /// Busy-spin the business thread when idle (dedicated cores only). [default: false]
    #[arg(long, env = "LEDGERD_BUSY_SPIN")]
    pub busy_spin: Option<bool>,

    /// Ring slots, a power of two >= 64; each keeps up to one request body. [default: 256]
    #[arg(long, env = "LEDGERD_RING_SLOTS")]
    pub ring_slots: Option<usize>,

    /// Most client connections. [default: 1024]
    #[arg(long, env = "LEDGERD_CONNECTIONS_MAX")]
    pub connections_max: Option<usize>,

    /// Most requests in flight per connection. [default: 64]
    #[arg(long, env = "LEDGERD_IN_FLIGHT_MAX")]
    pub in_flight_max: Option<u32>,

    /// Seconds before an idle connection is closed. [default: 300]
    #[arg(long, env = "LEDGERD_IDLE_TIMEOUT_SECS")]
    pub idle_timeout_secs: Option<u64>,

    /// Seconds a frame may take to arrive completely. [default: 10]
    #[arg(long, env = "LEDGERD_FRAME_TIMEOUT_SECS")]
    pub frame_timeout_secs: Option<u64>,

    /// Journal segment size in MiB. [default: 64]
    #[arg(long, env = "LEDGERD_SEGMENT_SIZE_MIB")]
    pub segment_size_mib: Option<u64>,

    /// How the journal makes writes durable: "msync" or "fdatasync". [default: see journal-format.md]
    #[arg(long, env = "LEDGERD_FLUSH_MODE")]
    pub flush_mode: Option<String>,

    /// Take a snapshot after this many journal records (0 disables). [default: 20000]
    #[arg(long, env = "LEDGERD_SNAPSHOT_EVERY_RECORDS")]
    pub snapshot_every_records: Option<u64>,

    /// Also take a snapshot after this many journaled changes (accounts, transfers, limits,
    /// expiries; 0 disables): bounds the replay after a crash when requests are large batches.
    /// With --cold-index, also after the index has taken in this many ids since the last one
    /// (even with no new records): the snapshot leaves them out of memory. [default: 1000000]
    #[arg(long, env = "LEDGERD_SNAPSHOT_EVERY_EVENTS")]
    pub snapshot_every_events: Option<u64>,

    /// Snapshots kept on disk. [default: 3]
    #[arg(long, env = "LEDGERD_SNAPSHOTS_KEEP")]
    pub snapshots_keep: Option<usize>,

    /// Repair a journal that refuses to open: prints what would be discarded (records,
    /// sequences, segment files, snapshots) and the command that confirms it, then exits.
    /// Nothing is discarded without `--repair-discard-after`.
    #[arg(long, env = "LEDGERD_REPAIR")]
    pub repair: Option<bool>,

    /// With `--repair true`: the confirmation, the last sequence to keep, exactly as the
    /// plan printed by `--repair true` names it. Records after it are discarded.
    #[arg(long)]
    #[serde(skip)]
    pub repair_discard_after: Option<u64>,

    /// Check the whole state (debits equal credits per ledger, limits, indexes) after every
    /// batch: slow, for tests and long runs. [default: false]
    #[arg(long, env = "LEDGERD_VERIFY")]
    pub verify: Option<bool>,

    /// Log format: "human" or "json". [default: human]
    #[arg(long, env = "LEDGERD_LOG_FORMAT")]
    pub log_format: Option<String>,

    /// Log filter (tracing EnvFilter syntax, e.g. "info" or "ledgerd=debug"). [default: info]
    #[arg(long, env = "LEDGERD_LOG")]
    pub log: Option<String>,

    /// Test only: a file the daemon polls for journal faults to inject ("append ENOSPC",
    /// "flush EIO", "append-once EIO", "clear", ...; see RELIABILITY.md). Never set in
    /// production: it makes journal writes fail on purpose.
    #[arg(long, env = "LEDGERD_FAULT_FILE", hide = true)]
    #[serde(skip)]
    pub fault_file: Option<PathBuf>,

    /// Accept what is unsafe: a non-loopback address without a token, tokens under 32 bytes.
    #[arg(long, env = "LEDGERD_INSECURE", num_args = 0..=1, default_missing_value = "true")]
    pub insecure: Option<bool>,

    /// Seconds a new connection has to say hello (TLS handshake included). [default: 5]
    #[arg(long, env = "LEDGERD_HELLO_TIMEOUT_SECS")]
    pub hello_timeout_secs: Option<u64>,

    /// Most connections that have not said hello yet; a new one closes the oldest of the address
    /// that holds the most. [default: 64]
    #[arg(long, env = "LEDGERD_PRE_HELLO_CONNECTIONS_MAX")]
    pub pre_hello_connections_max: Option<usize>,

    /// Most open connections from one IP address. [default: 256]
    #[arg(long, env = "LEDGERD_CONNECTIONS_PER_ADDRESS_MAX")]
    pub connections_per_address_max: Option<usize>,

    /// MiB of replies held or reserved over all connections before new requests are answered
    /// `busy`. [default: 256]
    #[arg(long, env = "LEDGERD_REPLY_MEMORY_MAX_MIB")]
    pub reply_memory_max_mib: Option<usize>,

    /// Most accounts the ledger holds; create requests that could pass it are answered
    /// `ledger_full`. [default: 1/20 of physical memory at 320 bytes each]
    #[arg(long, env = "LEDGERD_ACCOUNTS_MAX")]
    pub accounts_max: Option<u64>,

    /// Most transfers the ledger holds (as --accounts-max). With --cold-index: most transfers
    /// in memory (those the disk index does not hold yet, and pending ones); past it creates
    /// are answered `busy` until the index catches up. [default: 3/10 of physical memory at
    /// 192 bytes each; with --cold-index 2,097,152]
    #[arg(long, env = "LEDGERD_TRANSFERS_MAX")]
    pub transfers_max: Option<u64>,

    /// Most failed transfer ids the ledger remembers (as --accounts-max). [default: 1/20 of
    /// physical memory at 64 bytes each]
    #[arg(long, env = "LEDGERD_FAILED_IDS_MAX")]
    pub failed_ids_max: Option<u64>,

    /// TLS certificate chain (PEM, leaf first) for the client port; needs --tls-key.
    #[arg(long, env = "LEDGERD_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,

    /// TLS private key (PEM) of --tls-cert.
    #[arg(long, env = "LEDGERD_TLS_KEY")]
    pub tls_key: Option<PathBuf>,

    /// CA certificates (PEM): when given, clients must present a certificate signed by one.
    #[arg(long, env = "LEDGERD_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,

    /// Internal: write a snapshot of the data directory at this journal sequence and exit
    /// (the daemon runs itself this way so that snapshots never stall it).
    #[arg(long, hide = true)]
    #[serde(skip)]
    pub build_snapshot_up_to: Option<u64>,

    /// Internal, with `--build-snapshot-up-to`: the disk index holds every event up to this
    /// timestamp; the snapshot leaves those records out of memory.
    #[arg(long, hide = true)]
    #[serde(skip)]
    pub evict_through_ns: Option<u64>,

    /// Keep finished history in a disk index (`DATA/index`) maintained from the journal,
    /// and only the hot state in memory: accounts, pending transfers and what the index does
    /// not hold yet. [default: false]
    #[arg(long, env = "LEDGERD_COLD_INDEX")]
    pub cold_index: Option<bool>,

    /// With --cold-index: transfers the index's in-memory id filter is sized for (about 1.2
    /// bytes each; about 1% of new ids are read from disk up to this many transfers, more
    /// past it: correct, slower). [default: 100,000,000]
    #[arg(long, env = "LEDGERD_COLD_INDEX_TRANSFERS")]
    pub cold_index_transfers: Option<u64>,

    /// This daemon's position (from 0) in --cluster: it runs as that replica of a cluster.
    /// Needs --cluster. [default: none, a single daemon]
    #[arg(long, env = "LEDGERD_REPLICA")]
    pub replica: Option<usize>,

    /// The replication addresses of every replica of the cluster, comma-separated, in the
    /// same order on every replica (clients list their client addresses in that order too).
    /// Needs --replica. With tokens (--auth-token-file), replicas present the file's first
    /// read-write token to each other.
    #[arg(long, env = "LEDGERD_CLUSTER")]
    pub cluster: Option<String>,

    /// The address this replica's replication port binds, where it differs from the one its
    /// peers dial (its entry in --cluster): behind a container's port mapping, NAT or a
    /// proxy. Needs --replica. [default: this replica's entry in --cluster]
    #[arg(long, env = "LEDGERD_REPLICATION_LISTEN")]
    pub replication_listen: Option<SocketAddr>,
}

/// A cluster member's place: its position, every replica's replication address, and the
/// address its own replication port binds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterConfig {
    pub position: usize,
    pub peers: Vec<SocketAddr>,
    /// `--replication-listen`, else `peers[position]`.
    pub listen: SocketAddr,
}

/// Most replicas in a cluster.
pub const CLUSTER_REPLICAS_MAX: usize = 7;

/// Settings with every default applied and every value checked.
#[derive(Clone, Debug)]
pub struct DaemonConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub metrics_listen: SocketAddr,
    pub auth_token: Option<Vec<u8>>,
    pub net_threads: usize,
    pub business_core: Option<usize>,
    pub busy_spin: bool,
    pub ring_slots: usize,
    pub connections_max: usize,
    pub in_flight_max: u32,
    pub idle_timeout: Duration,
    pub frame_timeout: Duration,
    pub segment_size_bytes: u64,
    pub flush_mode: FlushMode,
    pub snapshot_every_records: u64,
    pub snapshot_every_events: u64,
    pub snapshots_keep: usize,
    pub repair: bool,
    /// The operator's confirmation of a repair plan: the last sequence to keep.
    pub repair_discard_after: Option<u64>,
    /// Full-state verification after every batch (tests and long runs).
    pub verify: bool,
    /// History in the disk index, hot state in memory.
    pub cold_index: bool,
    /// What the index's id filter is sized for.
    pub cold_index_transfers: u64,
    /// A cluster member's place (`--replica`, `--cluster`); `None` for a single daemon.
    pub cluster: Option<ClusterConfig>,
    /// The snapshot builder's eviction bound (`--evict-through-ns`; 0 otherwise).
    pub evict_through_ns: u64,
    pub log_json: bool,
    pub log: String,
    /// Test-only fault injection (`--fault-file`).
    pub fault_file: Option<PathBuf>,
    /// The tokens of `auth_token` (the token file) with their roles.
    pub tokens: crate::net::auth::Tokens,
    pub insecure: bool,
    pub hello_timeout: Duration,
    pub pre_hello_connections_max: usize,
    pub connections_per_address_max: usize,
    pub reply_memory_max_bytes: usize,
    /// Most records of each kind the ledger holds.
    pub capacity: Capacity,
    /// Certificate, key and optional client CA files, when TLS is on.
    pub tls: Option<(PathBuf, PathBuf, Option<PathBuf>)>,
    /// What `--insecure` let through, to log once logging is up.
    pub warnings: Vec<String>,
}

/// Longest accepted auth token.
pub const AUTH_TOKEN_MAX_BYTES: usize = 256;

/// With --cold-index, the default of --transfers-max and --failed-ids-max: the records kept in
/// memory while the index catches up (about 400 MB of transfers).
pub const COLD_TRANSFERS_IN_MEMORY_DEFAULT: u64 = 1 << 21;

macro_rules! merge {
    ($cli:ident, $file:ident, $($field:ident),*) => { $( if $cli.$field.is_none() { $cli.$field = $file.$field.take(); } )* };
}

impl Settings {
    /// Fills what flags and variables left unset from the TOML file, if one is named.
    pub fn with_file(mut self) -> anyhow::Result<Settings> {
        let Some(path) = self.config.clone() else { return Ok(self) };
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let mut file: Settings =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        merge!(
            self,
            file,
            data_dir,
            listen,
            metrics_listen,
            auth_token_file,
            net_threads,
            business_core,
            busy_spin,
            ring_slots,
            connections_max,
            in_flight_max,
            idle_timeout_secs,
            frame_timeout_secs,
            segment_size_mib,
            flush_mode,
            snapshot_every_records,
            snapshot_every_events,
            snapshots_keep,
            repair,
            verify,
            cold_index,
            cold_index_transfers,
            replica,
            cluster,
            replication_listen,
            log_format,
            log,
            insecure,
            hello_timeout_secs,
            pre_hello_connections_max,
            connections_per_address_max,
            reply_memory_max_mib,
            accounts_max,
            transfers_max,
            failed_ids_max,
            tls_cert,
            tls_key,
            tls_client_ca
        );
        Ok(self)
    }

    /// Applies the defaults and checks every value.
    pub fn resolve(self) -> anyhow::Result<DaemonConfig> {
        let auth_token = match &self.auth_token_file {
            Some(path) => Some(read_token(path)?),
            None => None,
        };
        let business_core = match self.business_core.as_deref() {
            Some("none") => None,
            Some(n) => Some(
                n.parse::<usize>()
                    .with_context(|| format!("--business-core {n:?}: a core number or \"none\""))?,
            ),
            None => core_affinity::get_core_ids().and_then(|ids| ids.last().map(|c| c.id)),
        };
        let ring_slots = self.ring_slots.unwrap_or(crate::pipeline::RING_SLOTS_DEFAULT);
        anyhow::ensure!(
            ring_slots.is_power_of_two() && ring_slots >= 64,
            "--ring-slots {ring_slots}: must be a power of two >= 64"
        );
        let net_threads = self.net_threads.unwrap_or(1);
        anyhow::ensure!(
            (1..=64).contains(&net_threads),
            "--net-threads {net_threads}: must be 1..=64"
        );
        let flush_mode = match self.flush_mode.as_deref() {
            None => FlushMode::default(),
            Some("msync") => FlushMode::Msync,
            Some("fdatasync") => FlushMode::Fdatasync,
            Some(other) => anyhow::bail!("--flush-mode {other:?}: \"msync\" or \"fdatasync\""),
        };
        let log_json = match self.log_format.as_deref() {
            None | Some("human") => false,
            Some("json") => true,
            Some(other) => anyhow::bail!("--log-format {other:?}: \"human\" or \"json\""),
        };
        let segment_size_mib = self.segment_size_mib.unwrap_or(64);
        anyhow::ensure!(
            (8..=4096).contains(&segment_size_mib),
            "--segment-size-mib {segment_size_mib}: must be 8..=4096"
        );
        let in_flight_max = self.in_flight_max.unwrap_or(64);
        anyhow::ensure!(in_flight_max >= 1, "--in-flight-max must be at least 1");
        let connections_max = self.connections_max.unwrap_or(1024);
        anyhow::ensure!(connections_max >= 1, "--connections-max must be at least 1");
        let net = self.resolve_net(auth_token.as_deref())?;
        let capacity = self.resolve_capacity()?;
        let cluster = self.resolve_cluster(&net.tokens, net.insecure)?;
        Ok(DaemonConfig {
            data_dir: self.data_dir.unwrap_or_else(|| PathBuf::from("./ledgerd-data")),
            listen: self.listen.unwrap_or_else(|| "127.0.0.1:7400".parse().expect("literal")),
            metrics_listen: self
                .metrics_listen
                .unwrap_or_else(|| "127.0.0.1:7401".parse().expect("literal")),
            auth_token,
            net_threads,
            business_core,
            busy_spin: self.busy_spin.unwrap_or(false),
            ring_slots,
            connections_max,
            in_flight_max,
            idle_timeout: Duration::from_secs(self.idle_timeout_secs.unwrap_or(300)),
            frame_timeout: Duration::from_secs(self.frame_timeout_secs.unwrap_or(10)),
            segment_size_bytes: segment_size_mib * 1024 * 1024,
            flush_mode,
            snapshot_every_records: self.snapshot_every_records.unwrap_or(20_000),
            snapshot_every_events: self.snapshot_every_events.unwrap_or(1_000_000),
            snapshots_keep: self.snapshots_keep.unwrap_or(3).max(1),
            repair: self.repair.unwrap_or(false),
            repair_discard_after: self.repair_discard_after,
            verify: self.verify.unwrap_or(false),
            cold_index: self.cold_index.unwrap_or(false),
            cold_index_transfers: self.cold_index_transfers.unwrap_or(100_000_000).max(1),
            cluster,
            evict_through_ns: self.evict_through_ns.unwrap_or(0),
            log_json,
            log: self.log.unwrap_or_else(|| "info".to_string()),
            fault_file: self.fault_file,
            tokens: net.tokens,
            insecure: net.insecure,
            hello_timeout: net.hello_timeout,
            pre_hello_connections_max: net.pre_hello_connections_max,
            connections_per_address_max: net.connections_per_address_max,
            reply_memory_max_bytes: net.reply_memory_max_bytes,
            capacity,
            tls: net.tls,
            warnings: net.warnings,
        })
    }

    /// The network security settings: tokens and roles, the listening policy, pre-auth
    /// limits and TLS files.
    /// `--replica` and `--cluster`: both or neither, a position inside a list of distinct
    /// addresses; replication addresses off loopback need tokens, as the client address does.
    fn resolve_cluster(
        &self,
        tokens: &crate::net::auth::Tokens,
        insecure: bool,
    ) -> anyhow::Result<Option<ClusterConfig>> {
        let (position, list) = match (self.replica, self.cluster.as_deref()) {
            (None, None) => {
                anyhow::ensure!(
                    self.replication_listen.is_none(),
                    "--replication-listen needs --replica and --cluster"
                );
                return Ok(None);
            }
            (Some(position), Some(list)) => (position, list),
            _ => anyhow::bail!("--replica and --cluster go together"),
        };
        let peers = list
            .split(',')
            .map(|a| {
                a.trim().parse::<SocketAddr>().with_context(|| {
                    format!("--cluster: {a:?} is not an address (IP:PORT, e.g. 127.0.0.1:7410)")
                })
            })
            .collect::<anyhow::Result<Vec<SocketAddr>>>()?;
        anyhow::ensure!(
            (1..=CLUSTER_REPLICAS_MAX).contains(&peers.len()),
            "--cluster names {} replicas: 1..={CLUSTER_REPLICAS_MAX}",
            peers.len()
        );
        anyhow::ensure!(
            position < peers.len(),
            "--replica {position}: positions in --cluster go from 0 to {}",
            peers.len() - 1
        );
        for (i, a) in peers.iter().enumerate() {
            anyhow::ensure!(!peers[..i].contains(a), "--cluster names {a} twice");
        }
        anyhow::ensure!(
            self.cold_index != Some(true),
            "--cold-index is not available with --cluster yet: a cluster member keeps its \
             history in memory"
        );
        let listen = self.replication_listen.unwrap_or(peers[position]);
        for addr in [peers[position], listen] {
            crate::net::auth::check_listen_policy(addr, tokens, false, insecure)
                .map_err(|e| anyhow::anyhow!("replication address: {e}"))?;
        }
        Ok(Some(ClusterConfig { position, peers, listen }))
    }

    /// The record limits: flags where given, else the defaults for this machine's memory.
    fn resolve_capacity(&self) -> anyhow::Result<Capacity> {
        let mut defaults = Capacity::for_memory(physical_memory_bytes());
        if self.cold_index == Some(true) {
            // Memory holds the hot state only: a window the index must catch up with.
            defaults.transfers = defaults.transfers.min(COLD_TRANSFERS_IN_MEMORY_DEFAULT);
            defaults.failed_ids = defaults.failed_ids.min(COLD_TRANSFERS_IN_MEMORY_DEFAULT);
        }
        let pick = |flag: &str, value: Option<u64>, default: u64| -> anyhow::Result<u64> {
            let n = value.unwrap_or(default);
            anyhow::ensure!(
                (1..=Capacity::MAX.transfers).contains(&n),
                "--{flag} {n}: must be 1..={}",
                Capacity::MAX.transfers
            );
            Ok(n)
        };
        Ok(Capacity {
            accounts: pick("accounts-max", self.accounts_max, defaults.accounts)?,
            transfers: pick("transfers-max", self.transfers_max, defaults.transfers)?,
            failed_ids: pick("failed-ids-max", self.failed_ids_max, defaults.failed_ids)?,
        })
    }

    fn resolve_net(&self, token_file: Option<&[u8]>) -> anyhow::Result<NetSettings> {
        use crate::net::auth;
        let tokens = match (token_file, &self.auth_token_file) {
            (Some(text), Some(path)) => auth::Tokens::parse(text)
                .map_err(|e| anyhow::anyhow!("auth token file {}: {e}", path.display()))?,
            _ => auth::Tokens::default(),
        };
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => {
                Some((cert.clone(), key.clone(), self.tls_client_ca.clone()))
            }
            (None, None) => {
                anyhow::ensure!(
                    self.tls_client_ca.is_none(),
                    "--tls-client-ca needs --tls-cert and --tls-key"
                );
                None
            }
            _ => anyhow::bail!("--tls-cert and --tls-key go together"),
        };
        let insecure = self.insecure.unwrap_or(false);
        let listen = self.listen.unwrap_or_else(|| "127.0.0.1:7400".parse().expect("literal"));
        let warnings = auth::check_listen_policy(listen, &tokens, tls.is_some(), insecure)
            .map_err(|e| anyhow::anyhow!(e))?;
        let hello_timeout_secs = self.hello_timeout_secs.unwrap_or(5);
        anyhow::ensure!(
            (1..=300).contains(&hello_timeout_secs),
            "--hello-timeout-secs {hello_timeout_secs}: must be 1..=300"
        );
        let pre_hello_connections_max = self.pre_hello_connections_max.unwrap_or(64);
        anyhow::ensure!(
            pre_hello_connections_max >= 1,
            "--pre-hello-connections-max must be at least 1"
        );
        let connections_per_address_max = self.connections_per_address_max.unwrap_or(256);
        anyhow::ensure!(
            connections_per_address_max >= 1,
            "--connections-per-address-max must be at least 1"
        );
        let reply_memory_max_mib = self.reply_memory_max_mib.unwrap_or(256);
        anyhow::ensure!(reply_memory_max_mib >= 8, "--reply-memory-max-mib must be at least 8");
        Ok(NetSettings {
            tokens,
            insecure,
            hello_timeout: Duration::from_secs(hello_timeout_secs),
            pre_hello_connections_max,
            connections_per_address_max,
            reply_memory_max_bytes: reply_memory_max_mib * 1024 * 1024,
            tls,
            warnings,
        })
    }
}

struct NetSettings {
    tokens: crate::net::auth::Tokens,
    insecure: bool,
    hello_timeout: Duration,
    pre_hello_connections_max: usize,
    connections_per_address_max: usize,
    reply_memory_max_bytes: usize,
    tls: Option<(PathBuf, PathBuf, Option<PathBuf>)>,
    warnings: Vec<String>,
}

/// Physical memory of this machine (1 GiB if it cannot be read).
fn physical_memory_bytes() -> u64 {
    // SAFETY: sysconf only reads system configuration.
    let (pages, page_size) =
        unsafe { (libc::sysconf(libc::_SC_PHYS_PAGES), libc::sysconf(libc::_SC_PAGESIZE)) };
    if pages <= 0 || page_size <= 0 {
        return 1 << 30;
    }
    (pages as u64).saturating_mul(page_size as u64)
}

fn read_token(path: &Path) -> anyhow::Result<Vec<u8>> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .with_context(|| format!("reading the auth token file {}", path.display()))?
        .permissions()
        .mode();
    anyhow::ensure!(
        mode & 0o077 == 0,
        "auth token file {} can be read by group or others (mode {:03o}); run `chmod 600 {}`",
        path.display(),
        mode & 0o777,
        path.display()
    );
    let mut token = std::fs::read(path)
        .with_context(|| format!("reading the auth token file {}", path.display()))?;
    while token.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        token.pop();
    }
    anyhow::ensure!(!token.is_empty(), "auth token file {} is empty", path.display());
    // One token, or lines of "ROLE TOKEN": `net::auth::Tokens::parse` checks each token
    // against `AUTH_TOKEN_MAX_BYTES`.
    anyhow::ensure!(
        token.len() <= crate::net::auth::TOKEN_FILE_MAX_BYTES,
        "auth token file {} is larger than {} bytes",
        path.display(),
        crate::net::auth::TOKEN_FILE_MAX_BYTES
    );
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = Settings { business_core: Some("none".into()), ..Default::default() }
            .resolve()
            .unwrap();
        assert_eq!(c.data_dir, PathBuf::from("./ledgerd-data"));
        assert_eq!(c.listen.to_string(), "127.0.0.1:7400");
        assert_eq!(c.metrics_listen.to_string(), "127.0.0.1:7401");
        assert_eq!(c.net_threads, 1);
        assert!(!c.busy_spin);
        assert_eq!(c.capacity, Capacity::for_memory(physical_memory_bytes()));
        // 24 GiB: 4M accounts, 40M transfers, 20M failed ids.
        let c = Capacity::for_memory(24 << 30);
        assert_eq!(c.accounts, (24u64 << 30) / 20 / Capacity::ACCOUNT_BYTES);
        assert_eq!(c.transfers, (24u64 << 30) / 10 * 3 / Capacity::TRANSFER_BYTES);
        assert_eq!(c.failed_ids, (24u64 << 30) / 20 / Capacity::FAILED_ID_BYTES);
        assert!(c.transfers > 40_000_000 && c.transfers < 41_000_000);
    }

    #[test]
    fn file_fills_only_what_flags_left_unset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledgerd.toml");
        std::fs::write(&path, "listen = \"127.0.0.1:9000\"\nnet_threads = 2\n").unwrap();
        let s = Settings { config: Some(path), net_threads: Some(3), ..Default::default() }
            .with_file()
            .unwrap();
        assert_eq!(s.listen.unwrap().to_string(), "127.0.0.1:9000");
        assert_eq!(s.net_threads, Some(3));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledgerd.toml");
        std::fs::write(&path, "listn = \"127.0.0.1:9000\"\n").unwrap();
        assert!(Settings { config: Some(path), ..Default::default() }.with_file().is_err());
        assert!(Settings { ring_slots: Some(100), ..Default::default() }.resolve().is_err());
        assert!(Settings { flush_mode: Some("never".into()), ..Default::default() }
            .resolve()
            .is_err());
        assert!(Settings { transfers_max: Some(0), ..Default::default() }.resolve().is_err());
        let past_the_index = Some(u64::from(u32::MAX));
        assert!(Settings { accounts_max: past_the_index, ..Default::default() }.resolve().is_err());
    }

    /// Every key the file may hold, each with a value other than its default: the test below
    /// fails when a new setting is added to `Settings` but not merged from the file.
    const EVERY_KEY: &str = r#"
data_dir = "/tmp/ledgerd-toml-test"
listen = "127.0.0.1:9100"
metrics_listen = "127.0.0.1:9101"
auth_token_file = "/nonexistent/token"
net_threads = 3
business_core = "none"
busy_spin = true
ring_slots = 128
connections_max = 77
in_flight_max = 9
idle_timeout_secs = 11
frame_timeout_secs = 12
segment_size_mib = 16
flush_mode = "msync"
snapshot_every_records = 13
snapshot_every_events = 14
snapshots_keep = 5
repair = true
verify = true
cold_index = true
cold_index_transfers = 21
log_format = "json"
log = "debug"
insecure = true
hello_timeout_secs = 7
pre_hello_connections_max = 15
connections_per_address_max = 16
reply_memory_max_mib = 17
accounts_max = 18
transfers_max = 19
failed_ids_max = 20
tls_cert = "/nonexistent/cert.pem"
tls_key = "/nonexistent/key.pem"
tls_client_ca = "/nonexistent/ca.pem"
replica = 1
cluster = "127.0.0.1:9200,127.0.0.1:9201,127.0.0.1:9202"
replication_listen = "127.0.0.1:9301"
"#;

    #[test]
    fn every_file_key_reaches_the_settings() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledgerd.toml");
        std::fs::write(&path, EVERY_KEY).unwrap();
        let s = Settings { config: Some(path), ..Default::default() }.with_file().unwrap();
        // Fields the file cannot set (serde(skip)) are the only ones left unset.
        let debug = format!("{s:?}");
        let unset: Vec<&str> = debug
            .split(", ")
            .filter(|f| f.ends_with(": None") || f.ends_with(": None }"))
            .map(|f| f.split(':').next().unwrap().trim_start_matches("Settings { "))
            .collect();
        assert_eq!(
            unset,
            ["repair_discard_after", "fault_file", "build_snapshot_up_to", "evict_through_ns"],
            "keys in the file that did not reach the settings: {debug}"
        );
        assert_eq!(
            (s.replica, s.cluster.as_deref()),
            (Some(1), Some("127.0.0.1:9200,127.0.0.1:9201,127.0.0.1:9202"))
        );
        assert_eq!(s.replication_listen, Some("127.0.0.1:9301".parse().unwrap()));
        // (A cluster member cannot keep history on disk yet: resolved without the cluster.)
        let c = Settings {
            auth_token_file: None,
            replica: None,
            cluster: None,
            replication_listen: None,
            ..s
        }
        .resolve()
        .unwrap();
        assert_eq!(c.snapshot_every_events, 14);
        assert_eq!(c.snapshot_every_records, 13);
        assert_eq!(c.connections_max, 77);
        assert!(c.verify && c.repair && c.busy_spin && c.log_json && c.cold_index);
        assert!(c.insecure && c.tls.is_some());
        assert_eq!(c.hello_timeout, Duration::from_secs(7));
        assert_eq!((c.pre_hello_connections_max, c.connections_per_address_max), (15, 16));
        assert_eq!(c.reply_memory_max_bytes, 17 << 20);
        assert_eq!(c.capacity, Capacity { accounts: 18, transfers: 19, failed_ids: 20 });
    }

    #[test]
    fn token_file_readable_by_others_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "secret\n").unwrap();
        for mode in [0o644, 0o640, 0o604] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let err = read_token(&path).unwrap_err().to_string();
            assert!(err.contains("chmod 600"), "mode {mode:o}: {err}");
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_token(&path).unwrap(), b"secret");
    }
}
