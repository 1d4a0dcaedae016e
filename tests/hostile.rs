//! Hostile clients against the real daemon, one attack at a time, while a well-behaved client
//! keeps paying and looking up: 1,000 connections held open, slowloris (a frame a byte at a
//! time), clients that never read their replies, oversize frames, connect-and-close floods,
//! wrong auth tokens, 200 connections that never send a byte, 1 MiB bodies before hello.
//! Attackers that would otherwise trip the per-address limits connect from other loopback
//! addresses (127.0.0.2, ...), as they would from other hosts. For each attack: the well-behaved client is served without error and
//! its p99 stays bounded, the daemon's memory stays bounded, it closes what it must, and it
//! logs refusals a bounded number of times (not once per byte).
//!
//! Short by default (about 1.5 s per attack); `LEDGERD_TORTURE_LONG=1` runs each attack for
//! 20 s with a byte a second for slowloris. RELIABILITY.md records the figures.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{transfer, wallet};
use ledgerd::harness::{Daemon, Stderr};
use ledgerd::protocol::{self, HelloRequest, Operation, Status, HEADER_SIZE};
use ledgerd::types::Account;
use ledgerd_client::{Client, ClientOptions};

const TOKEN: &[u8] = b"hostile-test-token-0123456789abcdef";
const HELD_CONNECTIONS: usize = 1000;
const SLOWLORIS_CONNECTIONS: usize = 40;
const NON_READERS: usize = 16;
/// Connections that never send a byte, kept open (reopened when the daemon closes them).
const SILENT_CONNECTIONS: usize = 200;
/// Connections sending a 1 MiB hello body at once.
const PRE_HELLO_FLOODERS: usize = 200;
/// Seconds a connection has to say hello (the daemon's `--hello-timeout-secs` here).
const HELLO_TIMEOUT_SECS: u64 = 2;
/// Where the attackers that say no hello, or a wrong one, come from.
const SILENT_FROM: [u8; 4] = [127, 0, 0, 2];
const WRONG_TOKEN_FROM: [u8; 4] = [127, 0, 0, 3];
const PRE_HELLO_FROM: [u8; 4] = [127, 0, 0, 4];
/// The connect-and-close flood comes from its own address too: the pre-hello cap closes the
/// oldest connection of the address holding the most, which must be the flood's, not the
/// well-behaved client's while it says hello.
const FLOOD_FROM: [u8; 4] = [127, 0, 0, 5];
/// Generous bounds for a shared 2-core CI machine; the measured figures are far below.
const GOOD_P99_MAX: Duration = Duration::from_secs(1);
const RSS_MAX_MIB: u64 = 1024;
/// Seconds a frame may take (the daemon's `--frame-timeout-secs` in this test).
const FRAME_TIMEOUT_SECS: u64 = 2;

fn long() -> bool {
    std::env::var_os("LEDGERD_TORTURE_LONG").is_some()
}

fn raise_fd_limit() {
    // SAFETY: plain getrlimit/setrlimit on our own process (children inherit it).
    unsafe {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max.min(65_536);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

fn start(dir: &Path) -> Daemon {
    raise_fd_limit();
    let token_file = dir.join("token");
    common::write_token_file(&token_file, TOKEN);
    Daemon::builder(common::bin("ledgerd"), dir.join("data"))
        .args(["--business-core", "none", "--segment-size-mib", "8"])
        .args(["--frame-timeout-secs", &FRAME_TIMEOUT_SECS.to_string()])
        .args(["--hello-timeout-secs", &HELLO_TIMEOUT_SECS.to_string()])
        // 1,000 held connections come from 127.0.0.1 like the well-behaved client.
        .args(["--connections-per-address-max", "1100"])
        .arg("--auth-token-file")
        .arg(&token_file)
        .log("info")
        .stderr(Stderr::File(dir.join("ledgerd.log")))
        .client_options(ClientOptions { token: Some(TOKEN.to_vec()), ..Default::default() })
        .start()
        .expect("start ledgerd")
}

fn rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kib| kib / 1024)
}

fn frame(operation: u16, request_id: u64, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    protocol::encode_frame(&mut out, operation, Status::Ok, request_id, body);
    out
}

fn hello_frame(token: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    HelloRequest::new(Some(token)).encode(&mut body);
    frame(Operation::Hello as u16, 1, &body)
}

/// Reads one reply frame's status (None on EOF, error or timeout).
fn read_status(s: &mut TcpStream) -> Option<Status> {
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut head = [0u8; HEADER_SIZE];
    s.read_exact(&mut head).ok()?;
    let header = protocol::Header::decode(&head).ok()?;
    let mut body = vec![0u8; header.body_length as usize];
    s.read_exact(&mut body).ok()?;
    Status::from_u16(header.status)
}

/// A connection that said a valid hello.
fn greeted(addr: SocketAddr) -> Option<TcpStream> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.write_all(&hello_frame(TOKEN)).ok()?;
    (read_status(&mut s)? == Status::Ok).then_some(s)
}

/// Whether the daemon closed `s` (EOF or reset) within `wait`.
fn closed_by_daemon(s: &mut TcpStream, wait: Duration) -> bool {
    s.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return false,
            Err(_) => return true,
        }
    }
}

/// The well-behaved client: one transfer and one lookup per round trip, until `stop`.
fn measure(addr: SocketAddr, duration: Duration, next_id: &AtomicU64) -> Vec<Duration> {
    let options = ClientOptions {
        token: Some(TOKEN.to_vec()),
        connect_timeout: Some(Duration::from_secs(5)),
        io_timeout: Some(Duration::from_secs(10)),
        ..Default::default()
    };
    let mut client = Client::connect_with(addr, options).expect("well-behaved client connects");
    let mut latencies = Vec::new();
    let until = Instant::now() + duration;
    while Instant::now() < until {
        let id = u128::from(next_id.fetch_add(1, Relaxed));
        let started = Instant::now();
        let results = client.create_transfers(&[transfer(id, 1, 2, 1)]).expect("served");
        assert!(results.is_empty(), "{results:?}");
        assert_eq!(client.lookup_transfers(&[id]).expect("served").len(), 1);
        latencies.push(started.elapsed());
        std::thread::sleep(Duration::from_millis(2));
    }
    latencies
}

fn p99(latencies: &mut [Duration]) -> Duration {
    latencies.sort_unstable();
    latencies[(latencies.len() * 99 / 100).min(latencies.len() - 1)]
}

type AttackFn = fn(SocketAddr, &AtomicBool, &AtomicU64);

/// 1,000 connections that said hello and then hold on, idle.
fn hold_connections(addr: SocketAddr, stop: &AtomicBool, count: &AtomicU64) {
    let mut held = Vec::new();
    for _ in 0..HELD_CONNECTIONS {
        if let Some(s) = greeted(addr) {
            held.push(s);
            count.fetch_add(1, Relaxed);
        }
    }
    while !stop.load(Relaxed) {
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(held);
}

/// Connections that send a request frame one byte at a time; the daemon must close each one
/// when the frame timeout passes.
fn slowloris(addr: SocketAddr, stop: &AtomicBool, count: &AtomicU64) {
    let body: Vec<u8> = (0..8).flat_map(|i| transfer(1_000_000 + i, 1, 2, 1).to_bytes()).collect();
    let payload = frame(Operation::CreateTransfers as u16, 2, &body);
    let mut conns: Vec<(TcpStream, usize)> =
        (0..SLOWLORIS_CONNECTIONS).filter_map(|_| greeted(addr).map(|s| (s, 0))).collect();
    let tick = if long() { Duration::from_secs(1) } else { Duration::from_millis(50) };
    while !stop.load(Relaxed) && !conns.is_empty() {
        conns.retain_mut(|(s, sent)| {
            if *sent >= payload.len() {
                return true;
            }
            match s.write_all(&payload[*sent..*sent + 1]) {
                Ok(()) => {
                    *sent += 1;
                    true
                }
                Err(_) => {
                    count.fetch_add(1, Relaxed);
                    false
                }
            }
        });
        std::thread::sleep(tick);
    }
    // Whatever is left must be closed by the daemon shortly after the frame timeout.
    for (mut s, _) in conns {
        if closed_by_daemon(&mut s, Duration::from_secs(FRAME_TIMEOUT_SECS + 3)) {
            count.fetch_add(1, Relaxed);
        }
    }
}

/// Connections that pipeline big lookups and never read a reply.
fn non_readers(addr: SocketAddr, stop: &AtomicBool, count: &AtomicU64) {
    let ids: Vec<u8> = (0..8000u128).flat_map(|i| (1 + i % 9).to_le_bytes()).collect();
    let request = frame(Operation::LookupAccounts as u16, 7, &ids);
    let mut conns: Vec<TcpStream> = (0..NON_READERS).filter_map(|_| greeted(addr)).collect();
    for s in &conns {
        s.set_nonblocking(true).unwrap();
    }
    while !stop.load(Relaxed) {
        for s in &mut conns {
            if s.write_all(&request).is_ok() {
                count.fetch_add(1, Relaxed);
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Hello, then a header that announces a body far above the frame limit.
fn oversize_frames(addr: SocketAddr, stop: &AtomicBool, count: &AtomicU64) {
    while !stop.load(Relaxed) {
        let Some(mut s) = greeted(addr) else { continue };
        let mut f = frame(Operation::CreateTransfers as u16, 3, &[]);
        f[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        let _ = s.write_all(&f);
        assert_eq!(read_status(&mut s), Some(Status::BodyTooLarge));
        assert!(closed_by_daemon(&mut s, Duration::from_secs(5)), "oversize frame left open");
        count.fetch_add(1, Relaxed);
    }
}

fn connect_close_flood(addr: SocketAddr, stop: &AtomicBool, count: &AtomicU64) {
    while !stop.load(Relaxed) {
        if connect_from(FLOOD_FROM, addr).is_ok() {
            count.fetch_add(1, Relaxed);
        }
    }
}

fn connect_from(from: [u8; 4], addr: SocketAddr) -> std::io::Result<TcpStream> {
    common::wire::connect_from(std::net::IpAddr::from(from), addr)
}

/// 200 connections that never send a byte: each is closed by the hello deadline (or sooner,
/// to make room: the pre-hello cap closes the oldest) and reopened at once. `count` counts
/// the closes.
fn silent_connections(addr: SocketAddr, stop: &AtomicBool, count: &AtomicU64) {
    let mut conns: Vec<TcpStream> = Vec::new();
    while !stop.load(Relaxed) {
        while conns.len() < SILENT_CONNECTIONS {
            match connect_from(SILENT_FROM, addr) {
                Ok(s) => {
                    s.set_nonblocking(true).unwrap();
                    conns.push(s);
                }
                Err(_) => break,
            }
        }
        let mut byte = [0u8; 1];
        conns.retain_mut(|s| match s.read(&mut byte) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => true,
            _ => {
                count.fetch_add(1, Relaxed);
                false
            }
        });
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Connections that announce and send a 1 MiB hello body: each must be refused on the
/// header alone (`body_length_invalid`) and closed, with nothing of the body buffered.
fn pre_hello_bodies(addr: SocketAddr, stop: &AtomicBool, count: &AtomicU64) {
    let body = vec![0x55u8; protocol::FRAME_BODY_MAX];
    let big = frame(Operation::Hello as u16, 1, &body);
    while !stop.load(Relaxed) {
        let mut conns: Vec<TcpStream> = (0..PRE_HELLO_FLOODERS)
            .filter_map(|_| connect_from(PRE_HELLO_FROM, addr).ok())
            .collect();
        for s in &mut conns {
            s.set_write_timeout(Some(Duration::from_millis(200))).unwrap();
            // The daemon closes after the header: the rest of the write may fail.
            let _ = s.write_all(&big);
        }
        for mut s in conns {
            if read_status(&mut s) == Some(Status::BodyLengthInvalid) {
                count.fetch_add(1, Relaxed);
            }
        }
    }
}

fn wrong_token(addr: SocketAddr, stop: &AtomicBool, count: &AtomicU64) {
    while !stop.load(Relaxed) {
        let Ok(mut s) = connect_from(WRONG_TOKEN_FROM, addr) else { continue };
        let _ = s.write_all(&hello_frame(b"not-the-token"));
        let status = read_status(&mut s);
        assert!(matches!(status, Some(s) if s != Status::Ok), "wrong token accepted: {status:?}");
        assert!(closed_by_daemon(&mut s, Duration::from_secs(5)), "refused hello left open");
        count.fetch_add(1, Relaxed);
    }
}

#[test]
fn hostile_clients_do_not_starve_well_behaved_ones() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = start(dir.path());
    let pid = daemon.pid().expect("running");
    let mut setup = Client::connect(daemon.addr, Some(TOKEN)).unwrap();
    let mut accounts = vec![Account { id: 1, ledger: 1, code: 1, ..Default::default() }];
    accounts.extend((2..10).map(wallet));
    assert!(setup.create_accounts(&accounts).unwrap().is_empty());
    drop(setup);

    let duration = if long() { Duration::from_secs(20) } else { Duration::from_millis(1500) };
    let next_id = AtomicU64::new(1_000);
    let mut baseline = measure(daemon.addr, duration, &next_id);
    let baseline_p99 = p99(&mut baseline);
    eprintln!(
        "hostile: attack=none p99_us={} requests={} rss_mib={}",
        baseline_p99.as_micros(),
        baseline.len(),
        rss_mib(pid)
    );
    let attacks: [(&str, AttackFn); 8] = [
        ("hold_1000_connections", hold_connections),
        ("slowloris", slowloris),
        ("never_read_replies", non_readers),
        ("oversize_frames", oversize_frames),
        ("connect_close_flood", connect_close_flood),
        ("wrong_auth_token", wrong_token),
        ("silent_200_connections", silent_connections),
        ("pre_hello_1mib_bodies", pre_hello_bodies),
    ];
    let started = Instant::now();
    let mut rss_max = 0;
    for (name, attack) in attacks {
        let stop = Arc::new(AtomicBool::new(false));
        let count = Arc::new(AtomicU64::new(0));
        let addr = daemon.addr;
        let handle = {
            let (stop, count) = (Arc::clone(&stop), Arc::clone(&count));
            std::thread::spawn(move || attack(addr, &stop, &count))
        };
        // Let the attack get going (the held connections open first).
        let settle = Instant::now() + Duration::from_secs(10);
        while name == "hold_1000_connections"
            && count.load(Relaxed) < HELD_CONNECTIONS as u64
            && Instant::now() < settle
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        // The non-readers' first burst (about 700 lookups of 1 MiB replies, until the reply
        // memory bound stops reading them) is queued ahead of everyone in the ring: others
        // wait for it once, for as long as producing those replies takes (milliseconds on a
        // quiet machine, over a second on a loaded one). The promise is about the attack's
        // steady state, so measure once the burst is written.
        if name == "never_read_replies" {
            let mut last = u64::MAX;
            while count.load(Relaxed) != last && Instant::now() < settle {
                last = count.load(Relaxed);
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        std::thread::sleep(Duration::from_millis(100));
        let attack_duration = if name == "slowloris" && !long() {
            Duration::from_secs(FRAME_TIMEOUT_SECS + 1)
        } else if name == "silent_200_connections" && !long() {
            // Long enough for the hello deadline to close the first ones.
            Duration::from_secs(HELLO_TIMEOUT_SECS + 1)
        } else {
            duration
        };
        let mut latencies = measure(daemon.addr, attack_duration, &next_id);
        // A new well-behaved connection is accepted during the attack too.
        let connect_started = Instant::now();
        let mut fresh = Client::connect(daemon.addr, Some(TOKEN))
            .unwrap_or_else(|e| panic!("{name}: a new client was refused: {e}"));
        fresh.status().expect("served");
        let connect_us = connect_started.elapsed().as_micros();
        let rss = rss_mib(pid);
        rss_max = rss_max.max(rss);
        stop.store(true, Relaxed);
        handle.join().unwrap_or_else(|_| panic!("attack {name} failed"));
        let p = p99(&mut latencies);
        let n = count.load(Relaxed);
        eprintln!(
            "hostile: attack={name} p99_us={} requests={} attack_count={n} rss_mib={rss} new_client_us={connect_us}",
            p.as_micros(),
            latencies.len()
        );
        assert!(p < GOOD_P99_MAX, "{name}: well-behaved p99 {p:?}");
        assert!(rss < RSS_MAX_MIB, "{name}: daemon RSS {rss} MiB");
        match name {
            "hold_1000_connections" => assert_eq!(n, HELD_CONNECTIONS as u64, "{name}"),
            "slowloris" => assert_eq!(n, SLOWLORIS_CONNECTIONS as u64, "slowloris left open"),
            // The pre-hello cap closes all but 64 at once, the deadline the rest.
            "silent_200_connections" => {
                assert!(n >= SILENT_CONNECTIONS as u64, "{name}: only {n} closed")
            }
            _ => assert!(n > 0, "{name} did nothing"),
        }
    }
    let elapsed = started.elapsed().as_secs() + 1;
    // Still serving after everything.
    let mut c = Client::connect(daemon.addr, Some(TOKEN)).unwrap();
    assert!(c.status().is_ok());
    drop(daemon);
    let log = std::fs::read_to_string(dir.path().join("ledgerd.log")).unwrap();
    let lines = log.lines().count() as u64;
    let slow = log.lines().filter(|l| l.contains("frame incomplete")).count();
    eprintln!("hostile: log_lines={lines} over {elapsed} s; slowloris lines={slow}; rss_max_mib={rss_max}");
    // Refusals are logged at most once each, and rate-limited: never once per byte.
    assert!(slow <= SLOWLORIS_CONNECTIONS, "slowloris logged {slow} lines");
    assert!(lines <= 15 * elapsed + 50, "{lines} log lines in {elapsed} s");
}
