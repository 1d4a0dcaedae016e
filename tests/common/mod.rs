//! Shared by the end-to-end tests: start `ledgerd` on free loopback ports with a temporary
//! data directory, wait until it answers, and stop or kill it.

#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ledgerd::types::{Account, AccountFlags, Transfer};
use ledgerd_client::Client;

/// How long a daemon may take to start answering.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a daemon may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

pub fn free_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr")
}

pub fn bin(name: &str) -> PathBuf {
    match name {
        "ledgerd" => PathBuf::from(env!("CARGO_BIN_EXE_ledgerd")),
        "ledger" => PathBuf::from(env!("CARGO_BIN_EXE_ledger")),
        "ledger-replay" => PathBuf::from(env!("CARGO_BIN_EXE_ledger-replay")),
        other => panic!("unknown binary {other}"),
    }
}

pub struct TestDaemon {
    pub child: Option<Child>,
    pub addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub data_dir: PathBuf,
    pub extra_args: Vec<String>,
    /// The hello token, when the daemon was started with `--auth-token-file`.
    pub token: Option<Vec<u8>>,
    /// How to speak TLS to it, when it was started with `--tls-cert`.
    pub tls: Option<ledgerd_client::tls::TlsOptions>,
}

impl TestDaemon {
    /// Starts a daemon on `data_dir` and waits until a client can say hello.
    pub fn start(data_dir: &Path) -> TestDaemon {
        Self::start_with(data_dir, &[])
    }

    pub fn start_with(data_dir: &Path, extra_args: &[&str]) -> TestDaemon {
        let mut daemon = TestDaemon {
            child: None,
            addr: free_addr(),
            metrics_addr: free_addr(),
            data_dir: data_dir.to_path_buf(),
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            token: None,
            tls: None,
        };
        daemon.spawn();
        daemon
    }

    /// Starts a daemon with `extra_args`, saying hello with `token` (None: no token) while
    /// waiting for it to answer.
    pub fn start_as(
        data_dir: &Path,
        extra_args: &[&str],
        token: Option<&[u8]>,
        tls: Option<ledgerd_client::tls::TlsOptions>,
    ) -> TestDaemon {
        let mut daemon = TestDaemon {
            child: None,
            addr: free_addr(),
            metrics_addr: free_addr(),
            data_dir: data_dir.to_path_buf(),
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            token: token.map(<[u8]>::to_vec),
            tls,
        };
        daemon.spawn();
        daemon
    }

    /// Starts a daemon that requires `token` in the hello, read from `token_file`.
    pub fn start_with_token(data_dir: &Path, token_file: &Path, token: &[u8]) -> TestDaemon {
        let mut daemon = TestDaemon {
            child: None,
            addr: free_addr(),
            metrics_addr: free_addr(),
            data_dir: data_dir.to_path_buf(),
            extra_args: vec!["--auth-token-file".into(), token_file.display().to_string()],
            token: Some(token.to_vec()),
            tls: None,
        };
        daemon.spawn();
        daemon
    }

    fn spawn(&mut self) {
        let child = Command::new(bin("ledgerd"))
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--listen")
            .arg(self.addr.to_string())
            .arg("--metrics-listen")
            .arg(self.metrics_addr.to_string())
            .arg("--business-core")
            .arg("none")
            .arg("--segment-size-mib")
            .arg("8")
            // Tests run with the full-state check after every batch.
            .arg("--verify")
            .arg("true")
            .args(&self.extra_args)
            .env("LEDGERD_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn ledgerd");
        self.child = Some(child);
        self.wait_ready();
    }

    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(mut client) = Client::connect_with(self.addr, self.options()) {
                if client.status().is_ok() {
                    return;
                }
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("ledgerd exited during start: {status}");
            }
            assert!(Instant::now() < deadline, "ledgerd did not answer within {START_TIMEOUT:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn client(&self) -> Client {
        Client::connect_with(self.addr, self.options()).expect("connect")
    }

    /// Client options with this daemon's token and TLS settings.
    pub fn options(&self) -> ledgerd_client::ClientOptions {
        ledgerd_client::ClientOptions {
            token: self.token.clone(),
            connect_timeout: Some(Duration::from_secs(5)),
            io_timeout: None,
            tls: self.tls.clone(),
        }
    }

    /// Sends SIGTERM and returns at once.
    pub fn sigterm(&self) {
        let child = self.child.as_ref().expect("running");
        // SAFETY: sending a signal to our own child process.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    }

    /// The value of an unlabelled metric (or of a full `name{labels}` line prefix).
    pub fn metric(&self, name: &str) -> u64 {
        let (_, text) = self.http_get("/metrics");
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("metric {name} not in /metrics"))
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then wait for a clean exit; returns the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        // SAFETY: sending a signal to our own child process.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("ledgerd did not stop within {STOP_TIMEOUT:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts again on the same data directory and ports.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop or kill first");
        self.spawn();
    }

    pub fn http_get(&self, path: &str) -> (u16, String) {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(self.metrics_addr).expect("metrics connect");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        let code = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
        (code, body)
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        self.kill();
    }
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
    let out = Command::new(bin("ledger-replay"))
        .arg("replay")
        .arg(dir)
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
        std::fs::write(&self.file, line).unwrap();
        let mut applied = self.file.clone().into_os_string();
        applied.push(".applied");
        let deadline = Instant::now() + FAULT_APPLY_MAX;
        while std::fs::read_to_string(&applied).unwrap_or_default() != line {
            assert!(Instant::now() < deadline, "the daemon did not apply fault {line:?}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
