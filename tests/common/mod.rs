//! Shared by the end-to-end tests: `TestDaemon`, the library's harness (`ledgerd::harness`)
//! with the settings every test uses (full-state check after every batch, small segments, no
//! pinned core) and panics instead of errors; records, the replay tool, hand-made frames,
//! certificates and the fault-file daemon.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use ledgerd::harness::{self, Daemon};
use ledgerd::types::{Account, AccountFlags, Transfer};
use ledgerd_client::tls::TlsOptions;
use ledgerd_client::{Client, ClientOptions};

pub fn free_addr() -> SocketAddr {
    harness::free_addr().expect("a free loopback port")
}

pub fn bin(name: &str) -> PathBuf {
    match name {
        "ledgerd" => PathBuf::from(env!("CARGO_BIN_EXE_ledgerd")),
        "ledger" => PathBuf::from(env!("CARGO_BIN_EXE_ledger")),
        "ledger-replay" => PathBuf::from(env!("CARGO_BIN_EXE_ledger-replay")),
        other => panic!("unknown binary {other}"),
    }
}

/// The harness's builder for `ledgerd` on `data_dir` with the arguments every test uses (the
/// full-state check after every batch, 8 MiB segments, no pinned core), then `extra_args`.
pub fn builder(data_dir: &Path, extra_args: &[&str]) -> harness::Builder {
    Daemon::builder(bin("ledgerd"), data_dir)
        .args(["--business-core", "none", "--segment-size-mib", "8", "--verify", "true"])
        .args(extra_args)
}

/// A daemon started for a test ([`harness::Daemon`], whose fields and methods it derefs to),
/// with methods that panic on failure; SIGKILLed on drop.
pub struct TestDaemon(Daemon);

impl Deref for TestDaemon {
    type Target = Daemon;
    fn deref(&self) -> &Daemon {
        &self.0
    }
}

impl DerefMut for TestDaemon {
    fn deref_mut(&mut self) -> &mut Daemon {
        &mut self.0
    }
}

impl TestDaemon {
    /// Starts a daemon on `data_dir` and waits until a client can say hello.
    pub fn start(data_dir: &Path) -> TestDaemon {
        Self::start_with(data_dir, &[])
    }

    pub fn start_with(data_dir: &Path, extra_args: &[&str]) -> TestDaemon {
        Self::start_as(data_dir, extra_args, None, None)
    }

    /// Starts a daemon with `extra_args`, saying hello with `token` (None: no token) and
    /// speaking `tls` (None: plain TCP).
    pub fn start_as(
        data_dir: &Path,
        extra_args: &[&str],
        token: Option<&[u8]>,
        tls: Option<TlsOptions>,
    ) -> TestDaemon {
        let options = ClientOptions { token: token.map(<[u8]>::to_vec), tls, ..Default::default() };
        let builder = builder(data_dir, extra_args).client_options(options);
        TestDaemon(builder.start().expect("start ledgerd"))
    }

    /// Starts a daemon that requires `token` in the hello, read from `token_file`.
    pub fn start_with_token(data_dir: &Path, token_file: &Path, token: &[u8]) -> TestDaemon {
        let token_file = token_file.display().to_string();
        Self::start_as(data_dir, &["--auth-token-file", &token_file], Some(token), None)
    }

    pub fn client(&self) -> Client {
        self.0.client().expect("connect")
    }

    /// Client options with this daemon's token and TLS settings.
    pub fn options(&self) -> ClientOptions {
        self.0.client_options()
    }

    /// Sends SIGTERM and returns at once.
    pub fn sigterm(&self) {
        self.0.sigterm().expect("SIGTERM");
    }

    /// The value of an unlabelled metric (or of a full `name{labels}` line prefix).
    pub fn metric(&self, name: &str) -> u64 {
        metric(&self.0, name)
    }

    /// SIGTERM, then wait for the exit; returns the exit status.
    pub fn stop(&mut self) -> ExitStatus {
        self.0.stop().expect("stop ledgerd")
    }

    /// Starts again on the same data directory and ports and waits until it answers.
    pub fn restart(&mut self) {
        self.0.restart().expect("restart ledgerd");
    }

    pub fn http_get(&self, path: &str) -> (u16, String) {
        self.0.http_get(path).expect("GET from the operator endpoint")
    }
}

/// The value of an unlabelled metric of `daemon` (or of a full `name{labels}` line prefix).
pub fn metric(daemon: &Daemon, name: &str) -> u64 {
    daemon
        .metric(name)
        .expect("GET /metrics")
        .unwrap_or_else(|| panic!("metric {name} not in /metrics"))
}

/// Writes a token file as the daemon requires it: readable by its owner only (mode 0600).
pub fn write_token_file(path: &Path, contents: impl AsRef<[u8]>) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, contents).expect("write the token file");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .expect("make the token file private");
}

pub fn account(id: u128, ledger: u32, flags: u16) -> Account {
    Account { id, ledger, code: 1, flags, ..Default::default() }
}

pub fn wallet(id: u128) -> Account {
    account(id, 1, AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS)
}

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

/// Runs `ledger-replay replay DIR` and returns the state hash it prints.
pub fn replay_hash(dir: &Path) -> String {
    replay_hash_with(dir, &[])
}

/// Runs `ledger-replay replay DIR ARGS` and returns the state hash it prints.
pub fn replay_hash_with(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(bin("ledger-replay"))
        .arg("replay")
        .arg(dir)
        .args(args)
        .output()
        .expect("run ledger-replay");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "ledger-replay replay failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("state_hash: "))
        .unwrap_or_else(|| panic!("no state_hash line in: {stdout}"))
        .trim()
        .to_string()
}

// ---- speaking the protocol by hand ----

pub mod wire {
    use std::io::{Read, Write};
    use std::net::{IpAddr, SocketAddr, TcpStream};
    use std::time::Duration;

    use ledgerd::protocol::{self, Header, HelloRequest, Operation, Status, HEADER_SIZE};

    /// How long a test waits for one reply or for the daemon to close a connection.
    pub const REPLY_WAIT: Duration = Duration::from_secs(10);

    pub fn frame(operation: u16, request_id: u64, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        protocol::encode_frame(&mut out, operation, Status::Ok, request_id, body);
        out
    }

    pub fn hello_body(token: Option<&[u8]>) -> Vec<u8> {
        let mut body = Vec::new();
        HelloRequest::new(token).encode(&mut body);
        body
    }

    pub fn hello_frame(request_id: u64, token: Option<&[u8]>) -> Vec<u8> {
        frame(Operation::Hello as u16, request_id, &hello_body(token))
    }

    /// Reads one frame; `None` on EOF, error or timeout. Panics on a malformed reply.
    pub fn read_frame(s: &mut TcpStream) -> Option<(Header, Vec<u8>)> {
        s.set_read_timeout(Some(REPLY_WAIT)).ok()?;
        let mut head = [0u8; HEADER_SIZE];
        s.read_exact(&mut head).ok()?;
        let header = Header::decode(&head).expect("reply header decodes");
        let mut body = vec![0u8; header.body_length as usize];
        s.read_exact(&mut body).ok()?;
        assert!(protocol::verify_checksum(&head, &body), "reply checksum");
        Some((header, body))
    }

    /// Reads one reply and returns (operation, status, request id).
    pub fn reply(s: &mut TcpStream) -> (u16, Status, u64) {
        let (h, _) = read_frame(s).expect("a reply");
        (h.operation, Status::from_u16(h.status).expect("known status"), h.request_id)
    }

    /// Whether the daemon closed `s` (EOF or reset) without sending anything more.
    pub fn closed(s: &mut TcpStream) -> bool {
        s.set_read_timeout(Some(REPLY_WAIT)).unwrap();
        let mut byte = [0u8; 1];
        match s.read(&mut byte) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => {
                !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)
            }
        }
    }

    /// A connection that said hello.
    pub fn greeted(addr: SocketAddr, token: Option<&[u8]>) -> TcpStream {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.write_all(&hello_frame(1, token)).unwrap();
        let (op, status, id) = reply(&mut s);
        assert_eq!((op, status, id), (Operation::Hello as u16, Status::Ok, 1));
        s
    }

    /// Connects to `addr` from the loopback source address `from` (e.g. 127.0.0.2), so that
    /// per-address limits see another peer.
    pub fn connect_from(from: IpAddr, addr: SocketAddr) -> std::io::Result<TcpStream> {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
        socket.bind(&SocketAddr::new(from, 0).into())?;
        socket.connect_timeout(&addr.into(), Duration::from_secs(5))?;
        Ok(socket.into())
    }
}

/// A self-signed certificate for `localhost` and 127.0.0.1, written as PEM files into `dir`:
/// returns (certificate path, key path).
pub fn self_signed(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .expect("generate a certificate");
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.key_pair.serialize_pem()).unwrap();
    (cert, key)
}

/// The peak resident memory of process `pid`, in KiB (VmHWM).
pub fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0)
}

/// How long a test waits for the daemon to apply an injected fault.
const FAULT_APPLY_MAX: Duration = Duration::from_secs(30);

/// A daemon with the test-only fault file (`--fault-file`): the tests write a fault line and
/// wait until the daemon has applied it.
pub struct Faulty {
    pub daemon: TestDaemon,
    pub file: PathBuf,
}

impl Faulty {
    pub fn start(dir: &Path) -> Faulty {
        let file = dir.with_extension("faults");
        std::fs::write(&file, "clear").unwrap();
        let daemon = TestDaemon::start_with(dir, &["--fault-file", file.to_str().unwrap()]);
        let faulty = Faulty { daemon, file };
        faulty.set("clear");
        faulty
    }

    /// Writes the fault line and waits until the daemon says it applied it.
    pub fn set(&self, line: &str) {
        set_fault(&self.file, line);
    }
}

/// Writes `line` to the fault file `file` and waits until the daemon says it applied it.
pub fn set_fault(file: &Path, line: &str) {
    std::fs::write(file, line).unwrap();
    let mut applied = file.to_path_buf().into_os_string();
    applied.push(".applied");
    let deadline = Instant::now() + FAULT_APPLY_MAX;
    while std::fs::read_to_string(&applied).unwrap_or_default() != line {
        assert!(Instant::now() < deadline, "the daemon did not apply fault {line:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}
