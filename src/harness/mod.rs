//! Starting and stopping a `ledgerd` process: the one harness shared by the end-to-end tests,
//! the benchmarks and `ledger-chaos`.
//!
//! A [`Daemon`] runs the `ledgerd` binary it is given (tests pass `CARGO_BIN_EXE_ledgerd`,
//! `ledger-chaos` the one beside itself) on free loopback ports and a data directory the caller
//! owns, waits until a client can say hello and get a `status` reply, stops it with SIGTERM
//! (then SIGKILL after a bounded wait) and SIGKILLs it on drop. Every wait has a deadline.
//! Errors are returned, never panicked: tests `.expect` them, the tool adds context.
//!
//! It must not be used by the daemon itself: nothing on the daemon's paths calls it, so it
//! adds nothing to the `ledgerd` binary. It speaks to the daemon through `ledgerd-client`,
//! which this crate already depends on.

use std::ffi::{OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use ledgerd_client::protocol::ReplicaRole;
use ledgerd_client::{Client, ClientError, ClientOptions, ClusterClient};

pub mod proxy;
use proxy::{Link, Proxy};

/// How long [`Builder::start`] and [`Daemon::restart`] wait for the daemon to answer, unless
/// [`Builder::start_timeout`] says otherwise.
pub const START_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);
/// How long [`Daemon::stop`] waits after SIGTERM before it sends SIGKILL, unless
/// [`Builder::stop_timeout`] says otherwise.
pub const STOP_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);
/// Between two readiness probes. Short, because the recovery benchmark measures the time to
/// the first answer with [`Daemon::wait_ready`]; a refused loopback connect costs microseconds.
pub const READY_POLL: Duration = Duration::from_micros(500);
/// Between two checks whether the process has exited.
pub const EXIT_POLL: Duration = Duration::from_millis(10);
/// Limit on the connect, the hello and the `status` call of one readiness probe, and on the
/// connect of [`Daemon::client`].
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Limit on each read and write of [`Daemon::http_get`].
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(5);
/// Between two looks at whether a snapshot process runs.
pub const SNAPSHOT_POLL: Duration = Duration::from_millis(50);
/// The log filter (`LEDGERD_LOG`) unless [`Builder::log`] says otherwise.
pub const LOG_DEFAULT: &str = "warn";

/// What can go wrong starting, probing or stopping a daemon. The underlying I/O or client
/// error is the [`std::error::Error::source`] (anyhow's `{:#}` prints the whole chain).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("binding an ephemeral loopback port")]
    Port(#[source] io::Error),
    #[error("starting {binary}")]
    Spawn {
        binary: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("opening the daemon's log file {path}")]
    Log {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("ledgerd exited during start: {0}")]
    ExitedDuringStart(ExitStatus),
    #[error("ledgerd did not answer within {0:?}")]
    NotReady(Duration),
    #[error("ledgerd did not stop within {0:?} of SIGTERM (killed)")]
    NotStopped(Duration),
    #[error("ledgerd did not exit within {0:?}")]
    StillRunning(Duration),
    #[error("ledgerd is not running")]
    NotRunning,
    #[error("ledgerd is already running (stop or kill it first)")]
    AlreadyRunning,
    #[error("waiting for ledgerd")]
    Wait(#[source] io::Error),
    #[error("signalling ledgerd")]
    Signal(#[source] io::Error),
    #[error("connecting to ledgerd at {addr}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: ClientError,
    },
    #[error("no replica of the cluster led within {0:?}")]
    NoLeader(Duration),
    #[error("a snapshot process was still running after {0:?}")]
    SnapshotRunning(Duration),
    #[error("GET {path} from {addr}")]
    Http {
        addr: SocketAddr,
        path: String,
        #[source]
        source: io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A free port on 127.0.0.1 (bound, read and released: another process could take it before
/// the daemon binds it, which on a test machine does not happen in practice). The kernel may
/// hand a just-released port out again, so a port this process was given among the last
/// [`PORTS_REMEMBERED`] is never returned twice: the addresses of one cluster (its peers,
/// clients and metrics) are distinct.
pub fn free_addr() -> Result<SocketAddr> {
    static GIVEN: std::sync::Mutex<std::collections::VecDeque<u16>> =
        std::sync::Mutex::new(std::collections::VecDeque::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    // Ports refused stay bound until a new one is found, so the kernel offers others.
    let mut refused = Vec::new();
    for _ in 0..PORT_ATTEMPTS {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(Error::Port)?;
        let addr = listener.local_addr().map_err(Error::Port)?;
        if given.contains(&addr.port()) {
            refused.push(listener);
            continue;
        }
        if given.len() == PORTS_REMEMBERED {
            given.pop_front();
        }
        given.push_back(addr.port());
        return Ok(addr);
    }
    Err(Error::Port(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        format!("{PORT_ATTEMPTS} ports in a row had been given out already"),
    )))
}

/// Ports [`free_addr`] remembers having given out.
pub const PORTS_REMEMBERED: usize = 4096;
/// Binds [`free_addr`] tries before it gives up.
const PORT_ATTEMPTS: usize = 64;

/// Where the daemon's standard error goes.
#[derive(Clone, Debug)]
pub enum Stderr {
    /// To this process's standard error.
    Inherit,
    /// Nowhere.
    Null,
    /// Appended to this file (created if absent), across restarts.
    File(PathBuf),
}

/// How to start a daemon: the binary, its data directory, its arguments and how clients reach
/// it. [`Daemon::builder`] makes one.
#[derive(Clone, Debug)]
pub struct Builder {
    binary: PathBuf,
    data_dir: PathBuf,
    listen: Option<SocketAddr>,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    log: String,
    stderr: Stderr,
    client: ClientOptions,
    start_timeout: Duration,
    stop_timeout: Duration,
    pre_exec: Option<fn() -> io::Result<()>>,
}

impl Builder {
    /// The daemon at `binary` on `data_dir`, on free loopback ports, with no other arguments.
    pub fn new(binary: impl Into<PathBuf>, data_dir: impl Into<PathBuf>) -> Builder {
        Builder {
            binary: binary.into(),
            data_dir: data_dir.into(),
            listen: None,
            args: Vec::new(),
            envs: Vec::new(),
            log: LOG_DEFAULT.to_string(),
            stderr: Stderr::Inherit,
            client: ClientOptions::default(),
            start_timeout: START_TIMEOUT_DEFAULT,
            stop_timeout: STOP_TIMEOUT_DEFAULT,
            pre_exec: None,
        }
    }

    /// One more argument, after `--data-dir`, `--listen` and `--metrics-listen` (which the
    /// harness passes and the caller must not).
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Builder {
        self.args.push(arg.as_ref().to_os_string());
        self
    }

    /// More arguments, in order (see [`Builder::arg`]).
    pub fn args<I, S>(mut self, args: I) -> Builder
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args.extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        self
    }

    /// An environment variable of the daemon.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Builder {
        self.envs.push((key.as_ref().to_os_string(), value.as_ref().to_os_string()));
        self
    }

    /// The daemon's log filter (`LEDGERD_LOG`); [`LOG_DEFAULT`] otherwise.
    pub fn log(mut self, filter: impl Into<String>) -> Builder {
        self.log = filter.into();
        self
    }

    /// Where the daemon's standard error goes ([`Stderr::Inherit`] otherwise). Its standard
    /// output always goes nowhere.
    pub fn stderr(mut self, stderr: Stderr) -> Builder {
        self.stderr = stderr;
        self
    }

    /// Listen for clients on `addr` instead of a free loopback port. Clients (and the
    /// readiness probe) reach an unspecified address (`0.0.0.0:P`) through 127.0.0.1.
    pub fn listen(mut self, addr: SocketAddr) -> Builder {
        self.listen = Some(addr);
        self
    }

    /// How clients connect: the token of their hello and TLS. The connect timeout is the
    /// harness's own ([`CONNECT_TIMEOUT`]) unless set here.
    pub fn client_options(mut self, options: ClientOptions) -> Builder {
        self.client = options;
        self
    }

    /// How long to wait for the daemon to answer after each start ([`START_TIMEOUT_DEFAULT`]
    /// otherwise).
    pub fn start_timeout(mut self, timeout: Duration) -> Builder {
        self.start_timeout = timeout;
        self
    }

    /// How long [`Daemon::stop`] waits after SIGTERM ([`STOP_TIMEOUT_DEFAULT`] otherwise).
    pub fn stop_timeout(mut self, timeout: Duration) -> Builder {
        self.stop_timeout = timeout;
        self
    }

    /// Runs `f` in the child between fork and exec, on every start (a umask, a resource
    /// limit), as [`std::os::unix::process::CommandExt::pre_exec`] does.
    ///
    /// # Safety
    ///
    /// The same as `pre_exec`'s: `f` runs in a copy of a possibly multi-threaded process and
    /// may only make async-signal-safe calls (no allocation, no locks).
    pub unsafe fn pre_exec(mut self, f: fn() -> io::Result<()>) -> Builder {
        self.pre_exec = Some(f);
        self
    }

    /// Picks the ports and starts the process, without waiting for it to answer.
    pub fn spawn(self) -> Result<Daemon> {
        let listen = match self.listen {
            Some(addr) => addr,
            None => free_addr()?,
        };
        let addr = if listen.ip().is_unspecified() {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), listen.port())
        } else {
            listen
        };
        let mut daemon = Daemon {
            child: None,
            listen,
            addr,
            metrics_addr: free_addr()?,
            data_dir: self.data_dir.clone(),
            config: self,
        };
        daemon.respawn()?;
        Ok(daemon)
    }

    /// Starts the process and waits until a client can say hello and get a `status` reply.
    pub fn start(self) -> Result<Daemon> {
        let timeout = self.start_timeout;
        let mut daemon = self.spawn()?;
        daemon.wait_ready(timeout)?;
        Ok(daemon)
    }

    /// Runs the daemon expecting it to exit by itself (a refusal to start, `--repair`),
    /// waiting at most `timeout` (then it is killed and the result is
    /// [`Error::StillRunning`]). Returns its exit status, standard output and standard error.
    pub fn run_to_exit(self, timeout: Duration) -> Result<Output> {
        let listen = match self.listen {
            Some(addr) => addr,
            None => free_addr()?,
        };
        let mut command = self.command(listen, free_addr()?);
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .map_err(|source| Error::Spawn { binary: self.binary.clone(), source })?;
        if let Err(error) = wait_exit(&mut child, timeout) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(error);
        }
        child.wait_with_output().map_err(Error::Wait)
    }

    /// The command line: `--data-dir`, `--listen`, `--metrics-listen`, then the caller's
    /// arguments; the log filter and environment; standard input and output to nowhere.
    fn command(&self, listen: SocketAddr, metrics: SocketAddr) -> Command {
        let mut command = Command::new(&self.binary);
        command
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--listen")
            .arg(listen.to_string())
            .arg("--metrics-listen")
            .arg(metrics.to_string())
            .args(&self.args)
            .env("LEDGERD_LOG", &self.log)
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        if let Some(f) = self.pre_exec {
            // SAFETY: the caller of `Builder::pre_exec` promised what `pre_exec` requires.
            unsafe { command.pre_exec(f) };
        }
        command
    }
}

/// A `ledgerd` process and how to reach it; SIGKILLed on drop.
#[derive(Debug)]
pub struct Daemon {
    child: Option<Child>,
    listen: SocketAddr,
    /// Where clients connect.
    pub addr: SocketAddr,
    /// The operator endpoint (`/metrics`, `/healthz`, `/readyz`).
    pub metrics_addr: SocketAddr,
    /// The data directory.
    pub data_dir: PathBuf,
    config: Builder,
}

impl Daemon {
    /// How to start the daemon at `binary` on `data_dir`.
    pub fn builder(binary: impl Into<PathBuf>, data_dir: impl Into<PathBuf>) -> Builder {
        Builder::new(binary, data_dir)
    }

    /// Starts the process again on the same data directory and ports, without waiting for it
    /// to answer.
    pub fn respawn(&mut self) -> Result<()> {
        if self.child.is_some() {
            return Err(Error::AlreadyRunning);
        }
        let mut command = self.config.command(self.listen, self.metrics_addr);
        match &self.config.stderr {
            Stderr::Inherit => command.stderr(Stdio::inherit()),
            Stderr::Null => command.stderr(Stdio::null()),
            Stderr::File(path) => command.stderr(open_log(path)?),
        };
        let child = command
            .spawn()
            .map_err(|source| Error::Spawn { binary: self.config.binary.clone(), source })?;
        self.child = Some(child);
        Ok(())
    }

    /// Starts the process again on the same data directory and ports and waits until it
    /// answers; returns when it did.
    pub fn restart(&mut self) -> Result<Instant> {
        self.respawn()?;
        self.wait_ready(self.config.start_timeout)
    }

    /// Polls (every [`READY_POLL`]) until a client can say hello and get a `status` reply, at
    /// most `timeout`; returns the moment it did. Fails at once if the process exits.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<Instant> {
        if self.child.is_none() {
            return Err(Error::NotRunning);
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let probe_timeout = left.clamp(Duration::from_millis(1), CONNECT_TIMEOUT);
            let options = ClientOptions {
                connect_timeout: Some(probe_timeout),
                io_timeout: Some(probe_timeout),
                ..self.config.client.clone()
            };
            if let Ok(mut client) = Client::connect_with(self.addr, options) {
                if client.status().is_ok() {
                    return Ok(Instant::now());
                }
            }
            let child = self.child.as_mut().ok_or(Error::NotRunning)?;
            if let Some(status) = child.try_wait().map_err(Error::Wait)? {
                self.child = None;
                return Err(Error::ExitedDuringStart(status));
            }
            if Instant::now() >= deadline {
                return Err(Error::NotReady(timeout));
            }
            std::thread::sleep(READY_POLL);
        }
    }

    /// The options clients of this daemon use: its token, TLS, and a connect timeout.
    pub fn client_options(&self) -> ClientOptions {
        let mut options = self.config.client.clone();
        options.connect_timeout = options.connect_timeout.or(Some(CONNECT_TIMEOUT));
        options
    }

    /// A client that said hello.
    pub fn client(&self) -> Result<Client> {
        Client::connect_with(self.addr, self.client_options())
            .map_err(|source| Error::Connect { addr: self.addr, source })
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends SIGTERM and returns at once.
    pub fn sigterm(&self) -> Result<()> {
        let pid = self.pid().ok_or(Error::NotRunning)?;
        let pid = libc::pid_t::try_from(pid).map_err(|e| Error::Signal(io::Error::other(e)))?;
        // SAFETY: kill(2) has no memory effects; `pid` is our own child, not yet reaped (the
        // `Child` is still held), so the id cannot belong to another process.
        if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
            return Err(Error::Signal(io::Error::last_os_error()));
        }
        Ok(())
    }

    /// SIGKILL (no chance to flush anything) and reap. Nothing if it is not running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits for the exit; returns the exit status (a clean stop is 0). After
    /// the stop timeout it sends SIGKILL and fails with [`Error::NotStopped`].
    pub fn stop(&mut self) -> Result<ExitStatus> {
        self.sigterm()?;
        let timeout = self.config.stop_timeout;
        match self.wait_exit(timeout) {
            Err(Error::StillRunning(_)) => {
                self.kill();
                Err(Error::NotStopped(timeout))
            }
            other => other,
        }
    }

    /// Waits at most `timeout` for the process to exit by itself (after a SIGTERM or an
    /// abort); fails with [`Error::StillRunning`] and leaves it running otherwise.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let child = self.child.as_mut().ok_or(Error::NotRunning)?;
        let status = wait_exit(child, timeout)?;
        self.child = None;
        Ok(status)
    }

    /// The value of an unlabelled metric (or of a full `name{labels}` line prefix) from
    /// `/metrics`, if it is there.
    pub fn metric(&self, name: &str) -> Result<Option<u64>> {
        let (_, text) = self.http_get("/metrics")?;
        Ok(text
            .lines()
            .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
            .and_then(|v| v.trim().parse().ok()))
    }

    /// Waits (at most `timeout`) until no snapshot process runs, seen on three looks
    /// [`SNAPSHOT_POLL`] apart (the timer may start one more right after another ends): so
    /// that a measurement does not share the machine with snapshots of the load before it.
    pub fn wait_snapshots_idle(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut idle = 0;
        while idle < 3 {
            if Instant::now() >= deadline {
                return Err(Error::SnapshotRunning(timeout));
            }
            let running = self.metric("ledgerd_snapshot_running")?.unwrap_or(0);
            idle = if running == 0 { idle + 1 } else { 0 };
            std::thread::sleep(SNAPSHOT_POLL);
        }
        Ok(())
    }

    /// `GET path` from the operator endpoint: (status code, body). Each read and write is
    /// bounded by [`HTTP_TIMEOUT`].
    pub fn http_get(&self, path: &str) -> Result<(u16, String)> {
        let addr = self.metrics_addr;
        let failed = |source| Error::Http { addr, path: path.to_string(), source };
        let mut stream = TcpStream::connect_timeout(&addr, HTTP_TIMEOUT).map_err(failed)?;
        stream.set_read_timeout(Some(HTTP_TIMEOUT)).map_err(failed)?;
        stream.set_write_timeout(Some(HTTP_TIMEOUT)).map_err(failed)?;
        write!(stream, "GET {path} HTTP/1.1\r\nHost: ledgerd\r\n\r\n").map_err(failed)?;
        let mut text = String::new();
        stream.read_to_string(&mut text).map_err(failed)?;
        let code = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
        Ok((code, body))
    }
}

/// A cluster of replicas on loopback, each a [`Daemon`] started with `--replica I --cluster
/// ADDRS` on free replication ports, optionally each behind a [`Proxy`] that delays and cuts
/// the traffic its peers send it.
pub struct Cluster {
    pub replicas: Vec<Daemon>,
    /// Every replica's replication address, in `--cluster` order (a proxy's, when behind one).
    pub peers: Vec<SocketAddr>,
    /// `proxies[i]` forwards to replica `i`'s replication port; empty unless started with
    /// [`Cluster::start_behind_proxies`].
    pub proxies: Vec<Proxy>,
}

/// Between two looks for the leader.
pub const LEADER_POLL: Duration = Duration::from_millis(5);

impl Cluster {
    /// Starts `n` replicas (replica `i` from `builder(i)`, which must not pass `--replica`
    /// or `--cluster`) and waits until each answers `status`.
    pub fn start(n: usize, builder: impl Fn(usize) -> Builder) -> Result<Cluster> {
        let peers = (0..n).map(|_| free_addr()).collect::<Result<Vec<_>>>()?;
        Cluster::spawn(peers, Vec::new(), builder)
    }

    /// Like [`Cluster::start`], with every replica's replication port behind its own
    /// [`Proxy`] (`--cluster` lists the proxies, `--replication-listen` the real ports):
    /// everything a replica receives from its peers waits `link`, with jitter drawn from
    /// `seed`.
    pub fn start_behind_proxies(
        n: usize,
        link: Link,
        seed: u64,
        builder: impl Fn(usize) -> Builder,
    ) -> Result<Cluster> {
        let mut proxies = Vec::with_capacity(n);
        for i in 0..n {
            let real = free_addr()?;
            proxies
                .push(Proxy::start(real, link, seed.wrapping_add(i as u64)).map_err(Error::Port)?);
        }
        let peers = proxies.iter().map(Proxy::addr).collect();
        Cluster::spawn(peers, proxies, builder)
    }

    fn spawn(
        peers: Vec<SocketAddr>,
        proxies: Vec<Proxy>,
        builder: impl Fn(usize) -> Builder,
    ) -> Result<Cluster> {
        let list = peers.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(",");
        let mut replicas = Vec::with_capacity(peers.len());
        for i in 0..peers.len() {
            let mut b = builder(i).arg("--replica").arg(i.to_string()).arg("--cluster").arg(&list);
            if let Some(p) = proxies.get(i) {
                b = b.arg("--replication-listen").arg(p.target().to_string());
            }
            replicas.push(b.spawn()?);
        }
        for r in &mut replicas {
            r.wait_ready(r.config.start_timeout)?;
        }
        Ok(Cluster { replicas, peers, proxies })
    }

    /// Every replica's client address, in `--cluster` order.
    pub fn client_addrs(&self) -> Vec<String> {
        self.replicas.iter().map(|r| r.addr.to_string()).collect()
    }

    /// A client that follows the leader; a replica that does not answer within a second
    /// (stopped, or cut off) is given up for the next.
    pub fn client(&self) -> ClusterClient {
        let mut options = self.replicas[0].client_options();
        options.io_timeout = Some(Duration::from_secs(1));
        ClusterClient::new(self.client_addrs(), options)
    }

    /// The position of a running replica that says it leads, polling every [`LEADER_POLL`]
    /// for at most `timeout`.
    pub fn leader(&self, timeout: Duration) -> Result<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            for (i, r) in self.replicas.iter().enumerate() {
                if r.child.is_none() {
                    continue;
                }
                let status = r.client().ok().and_then(|mut c| c.status().ok());
                if status.is_some_and(|s| s.role == ReplicaRole::Leader) {
                    return Ok(i);
                }
            }
            if Instant::now() >= deadline {
                return Err(Error::NoLeader(timeout));
            }
            std::thread::sleep(LEADER_POLL);
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls (every [`EXIT_POLL`]) until `child` exits, at most `timeout`.
fn wait_exit(child: &mut Child, timeout: Duration) -> Result<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().map_err(Error::Wait)? {
            return Ok(status);
        }
        if Instant::now() >= deadline {
            return Err(Error::StillRunning(timeout));
        }
        std::thread::sleep(EXIT_POLL);
    }
}

fn open_log(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| Error::Log { path: path.to_path_buf(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_addresses_are_never_given_twice() {
        let ports: Vec<u16> = (0..500).map(|_| free_addr().unwrap().port()).collect();
        let distinct: std::collections::HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len(), "a port was given out twice");
    }
}
