//! Safe by default: the listening policy (no token, no non-loopback address), token roles,
//! TLS (a round trip, a wrong certificate, client certificates), failed-auth throttling per
//! address, and the pre-hello limits, all against the real daemon.

mod common;

use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::wire::{self, closed, connect_from, frame, hello_frame, reply};
use common::TestDaemon;
use ledgerd::harness::{self, Daemon, Stderr};
use ledgerd::protocol::{ChangeEventsRequest, Operation, Status};
use ledgerd::types::Account;
use ledgerd_client::tls::TlsOptions;
use ledgerd_client::{Client, ClientError, ClientOptions};

const WRITER: &[u8] = b"writer-token-0123456789abcdef0123456789";
const READER: &[u8] = b"reader-token-0123456789abcdef0123456789";
const FOLLOWER: &[u8] = b"follower-token-0123456789abcdef012345678";

fn account(id: u128) -> Account {
    Account { id, ledger: 1, code: 1, ..Default::default() }
}

/// Runs `ledgerd` listening on `listen` with `args` until it exits (at most 30 s) and returns
/// (success, stderr).
fn run_daemon(dir: &std::path::Path, listen: &str, args: &[&str]) -> (bool, String) {
    let outcome = Daemon::builder(common::bin("ledgerd"), dir.join("data"))
        .listen(listen.parse().expect("a socket address"))
        .args(["--business-core", "none"])
        .args(args)
        .run_to_exit(Duration::from_secs(30));
    match outcome {
        Ok(out) => (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned()),
        Err(harness::Error::StillRunning(_)) => (true, "still running".into()),
        Err(e) => panic!("running ledgerd: {e:?}"),
    }
}

#[test]
fn non_loopback_without_token_is_refused_unless_insecure() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, err) = run_daemon(dir.path(), "0.0.0.0:0", &[]);
    assert!(!ok, "started on 0.0.0.0 without a token");
    assert!(err.contains("refusing to listen on 0.0.0.0:0 without a token"), "{err}");
    assert!(err.contains("--insecure"), "{err}");

    // A token shorter than 32 bytes is refused too.
    let short = dir.path().join("short");
    common::write_token_file(&short, "short-token\n");
    let (ok, err) =
        run_daemon(dir.path(), "127.0.0.1:0", &["--auth-token-file", short.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("at least 32"), "{err}");

    // --insecure: it starts on all addresses and serves (reached through loopback).
    let port = std::net::TcpListener::bind("0.0.0.0:0").unwrap().local_addr().unwrap().port();
    let served = Daemon::builder(common::bin("ledgerd"), dir.path().join("insecure"))
        .listen(SocketAddr::from(([0, 0, 0, 0], port)))
        .args(["--insecure", "--business-core", "none"])
        .stderr(Stderr::Null)
        .start()
        .is_ok();
    assert!(served, "--insecure on 0.0.0.0 did not serve");
}

fn token_file(dir: &std::path::Path) -> String {
    let path = dir.join("tokens");
    let mut text = String::from("# role token\n");
    for (role, token) in [("read-write", WRITER), ("read-only", READER), ("follower", FOLLOWER)] {
        text.push_str(&format!("{role} {}\n", std::str::from_utf8(token).unwrap()));
    }
    common::write_token_file(&path, text);
    path.display().to_string()
}

#[test]
fn roles_refuse_what_they_do_not_allow() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = token_file(dir.path());
    let daemon = TestDaemon::start_as(
        &dir.path().join("data"),
        &["--auth-token-file", &tokens],
        Some(WRITER),
        None,
    );
    let mut writer = Client::connect(daemon.addr, Some(WRITER)).unwrap();
    assert!(writer.create_accounts(&[account(1), account(2)]).unwrap().is_empty());
    let events = ChangeEventsRequest { from_sequence: 1, limit: 10, from_index: 0 };
    assert!(!writer.change_events(&events).unwrap().events.is_empty());

    let mut reader = Client::connect(daemon.addr, Some(READER)).unwrap();
    assert_eq!(reader.lookup_accounts(&[1, 2]).unwrap().len(), 2);
    for refused in [
        reader.create_accounts(&[account(3)]).map(|_| ()),
        reader.change_events(&events).map(|_| ()),
    ] {
        assert!(
            matches!(refused, Err(ClientError::Status(Status::PermissionDenied))),
            "{refused:?}"
        );
    }
    // The connection stays open after a refusal, and nothing was applied.
    assert_eq!(reader.status().unwrap().accounts, 2);

    let mut follower = Client::connect(daemon.addr, Some(FOLLOWER)).unwrap();
    assert!(!follower.change_events(&events).unwrap().events.is_empty());
    assert!(matches!(
        follower.create_transfers(&[]).map(|_| ()),
        Err(ClientError::Status(Status::EmptyBatch))
    ));
    let t = ledgerd::types::Transfer {
        id: 9,
        debit_account_id: 1,
        credit_account_id: 2,
        amount: 1,
        ledger: 1,
        code: 1,
        ..Default::default()
    };
    assert!(matches!(
        follower.create_transfers(&[t]),
        Err(ClientError::Status(Status::PermissionDenied))
    ));
    assert!(writer.lookup_transfers(&[9]).unwrap().is_empty());

    // Byte by byte: the refusal echoes operation and id and keeps the connection.
    let mut s = wire::greeted(daemon.addr, Some(READER));
    let op = Operation::CreateAccounts as u16;
    s.write_all(&frame(op, 7, &account(5).to_bytes())).unwrap();
    assert_eq!(reply(&mut s), (op, Status::PermissionDenied, 7));
    s.write_all(&frame(Operation::Status as u16, 8, &[])).unwrap();
    assert_eq!(reply(&mut s), (Operation::Status as u16, Status::Ok, 8));
}

#[test]
fn failed_hellos_throttle_their_address_only() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = token_file(dir.path());
    let daemon = TestDaemon::start_as(
        &dir.path().join("data"),
        &["--auth-token-file", &tokens],
        Some(WRITER),
        None,
    );
    let attacker: IpAddr = "127.0.0.2".parse().unwrap();
    let hello = Operation::Hello as u16;
    let mut statuses = Vec::new();
    for i in 0..5 {
        let mut s = connect_from(attacker, daemon.addr).unwrap();
        s.write_all(&hello_frame(i, Some(b"guess-0123456789abcdef0123456789"))).unwrap();
        statuses.push(reply(&mut s).1);
        assert!(closed(&mut s));
    }
    assert_eq!(statuses, vec![Status::AuthFailed; 5]);
    // Now even the right token is refused from that address, without being looked at...
    let mut s = connect_from(attacker, daemon.addr).unwrap();
    s.write_all(&hello_frame(6, Some(WRITER))).unwrap();
    assert_eq!(reply(&mut s), (hello, Status::AuthThrottled, 6));
    assert!(closed(&mut s));
    // ...while other addresses are served.
    Client::connect(daemon.addr, Some(WRITER)).unwrap().status().unwrap();
    assert_eq!(daemon.metric("ledgerd_auth_failures_total"), 5);
    assert_eq!(daemon.metric("ledgerd_auth_throttled_total"), 1);
    // The window (1 s after the fifth failure) passes; throttled hellos do not extend it.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut s = connect_from(attacker, daemon.addr).unwrap();
        s.write_all(&hello_frame(7, Some(WRITER))).unwrap();
        match reply(&mut s).1 {
            Status::Ok => break,
            Status::AuthThrottled => {}
            other => panic!("{other:?}"),
        }
        assert!(Instant::now() < deadline, "still throttled after 20 s");
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn tls_daemon(dir: &std::path::Path, extra: &[&str]) -> (TestDaemon, TlsOptions) {
    let (cert, key) = common::self_signed(dir, "server");
    let tls = TlsOptions::new(&cert, "localhost", None).unwrap();
    let mut args = vec!["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()];
    args.extend_from_slice(extra);
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let daemon = TestDaemon::start_as(&dir.join("data"), &args, None, Some(tls.clone()));
    (daemon, tls)
}

#[test]
fn tls_round_trip_and_a_wrong_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (daemon, _) = tls_daemon(dir.path(), &[]);
    let mut c = daemon.client();
    assert!(c.create_accounts(&[account(1), account(2)]).unwrap().is_empty());
    assert_eq!(c.lookup_accounts(&[1, 2]).unwrap().len(), 2);
    // Pipelined, with replies larger than one TLS record.
    let ids: Vec<u128> = (0..4000).map(|i| 1 + i % 2).collect();
    for _ in 0..8 {
        let mut body = Vec::new();
        ledgerd::protocol::encode_ids(&mut body, &ids);
        c.send_raw(Operation::LookupAccounts, &body).unwrap();
    }
    for _ in 0..8 {
        let r = c.recv().unwrap();
        assert_eq!((r.status, r.body.len()), (Status::Ok, 4000 * 128));
    }

    // A client that trusts another certificate refuses the daemon.
    let (other, _) = common::self_signed(dir.path(), "other");
    let options = ClientOptions {
        tls: Some(TlsOptions::new(&other, "localhost", None).unwrap()),
        connect_timeout: Some(Duration::from_secs(5)),
        io_timeout: Some(Duration::from_secs(5)),
        ..Default::default()
    };
    let refused = Client::connect_with(daemon.addr, options);
    assert!(
        matches!(&refused, Err(ClientError::Protocol(m)) if m.contains("TLS")),
        "{:?}",
        refused.map(|_| ())
    );
    // The wrong name is refused too.
    let mut options = daemon.options();
    options.tls =
        Some(TlsOptions::new(&dir.path().join("server.crt"), "ledger.example", None).unwrap());
    assert!(Client::connect_with(daemon.addr, options).is_err());
    // Plain TCP to the TLS port gets no frame back: the connection is closed.
    let mut s = TcpStream::connect(daemon.addr).unwrap();
    s.write_all(&hello_frame(1, None)).unwrap();
    assert!(wire::read_frame(&mut s).is_none());
    // And the daemon still serves TLS clients.
    daemon.client().status().unwrap();
}

#[test]
fn tls_client_certificates_when_a_client_ca_is_given() {
    let dir = tempfile::tempdir().unwrap();
    let (client_cert, client_key) = common::self_signed(dir.path(), "client");
    let (cert, key) = common::self_signed(dir.path(), "server");
    let with_identity =
        TlsOptions::new(&cert, "localhost", Some((&client_cert, &client_key))).unwrap();
    let args = [
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
        "--tls-client-ca",
        client_cert.to_str().unwrap(),
    ];
    let daemon = TestDaemon::start_as(&dir.path().join("data"), &args, None, Some(with_identity));
    daemon.client().status().unwrap();
    let mut without = daemon.options();
    without.tls = Some(TlsOptions::new(&cert, "localhost", None).unwrap());
    let refused = Client::connect_with(daemon.addr, without);
    assert!(refused.is_err(), "a client without certificate was served");
}

// ---- pre-hello limits ----

#[test]
fn a_large_body_before_hello_is_refused_on_its_header() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = TestDaemon::start(dir.path());
    let hello = Operation::Hello as u16;
    // Only the header of a 1 MiB hello: the daemon must answer without waiting for the body.
    let mut header = frame(hello, 4, &[]);
    header[12..16].copy_from_slice(&(ledgerd::protocol::FRAME_BODY_MAX as u32).to_le_bytes());
    let mut s = TcpStream::connect(daemon.addr).unwrap();
    s.write_all(&header).unwrap();
    assert_eq!(reply(&mut s), (hello, Status::BodyLengthInvalid, 4));
    assert!(closed(&mut s));
    // The same for any other operation: hello_required on the header alone.
    let mut header = frame(Operation::CreateTransfers as u16, 5, &[]);
    header[12..16].copy_from_slice(&(1024u32 * 128).to_le_bytes());
    let mut s = TcpStream::connect(daemon.addr).unwrap();
    s.write_all(&header).unwrap();
    assert_eq!(reply(&mut s), (Operation::CreateTransfers as u16, Status::HelloRequired, 5));
    assert!(closed(&mut s));
}

#[test]
fn connections_without_hello_are_closed_by_deadline_and_cap() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = TestDaemon::start_with(
        dir.path(),
        &["--hello-timeout-secs", "1", "--pre-hello-connections-max", "4"],
    );
    let silent: IpAddr = "127.0.0.2".parse().unwrap();
    let started = Instant::now();
    let mut first = connect_from(silent, daemon.addr).unwrap();
    assert!(closed(&mut first), "a silent connection outlived the hello deadline");
    let deadline_ms = started.elapsed().as_millis();
    // A cap of four: one silent connection from another address (the oldest), three from
    // `silent`; a fourth from `silent` closes `silent`'s oldest at once, not the other one.
    let mut lone = connect_from("127.0.0.6".parse().unwrap(), daemon.addr).unwrap();
    let mut conns: Vec<TcpStream> =
        (0..3).map(|_| connect_from(silent, daemon.addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    conns.push(connect_from(silent, daemon.addr).unwrap());
    assert!(closed(&mut conns[0]));
    let evicted_ms = started.elapsed().as_millis();
    assert!(evicted_ms < 900, "the oldest waited for the deadline ({evicted_ms} ms)");
    lone.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let mut byte = [0u8; 1];
    assert!(
        matches!(std::io::Read::read(&mut lone, &mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the other address's connection was closed instead of the flooder's"
    );
    // A well-behaved client still gets in and is served.
    Client::connect(daemon.addr, None).unwrap().status().unwrap();
    assert!(daemon.metric("ledgerd_rejections_total{reason=\"pre_hello_limit\"}") >= 1);
    assert!(daemon.metric("ledgerd_rejections_total{reason=\"hello_timeout\"}") >= 1);
    eprintln!("pre-hello: silent connection closed after {deadline_ms} ms (deadline 1 s); the flooder's oldest closed after {evicted_ms} ms (cap 4)");
}

#[test]
fn each_address_has_its_own_connection_limit() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = TestDaemon::start_with(dir.path(), &["--connections-per-address-max", "3"]);
    let crowd: IpAddr = "127.0.0.5".parse().unwrap();
    let _held: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut s = connect_from(crowd, daemon.addr).unwrap();
            s.write_all(&hello_frame(1, None)).unwrap();
            assert_eq!(reply(&mut s).1, Status::Ok);
            s
        })
        .collect();
    let mut fourth = connect_from(crowd, daemon.addr).unwrap();
    assert!(closed(&mut fourth), "a fourth connection from one address was kept");
    // Other addresses are not affected.
    Client::connect(daemon.addr, None).unwrap().status().unwrap();
    assert_eq!(daemon.metric("ledgerd_rejections_total{reason=\"address_limit\"}"), 1);
}

#[test]
fn reply_memory_is_bounded_over_all_connections_with_busy() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = TestDaemon::start_with(dir.path(), &["--reply-memory-max-mib", "8"]);
    let mut c = daemon.client();
    assert!(c.create_accounts(&[account(1)]).unwrap().is_empty());
    // Lookups of 8,190 ids: each may get a 1 MiB reply, reserved while in flight.
    let ids: Vec<u128> = vec![1; ledgerd::types::EVENTS_PER_REQUEST_MAX];
    let mut body = Vec::new();
    ledgerd::protocol::encode_ids(&mut body, &ids);
    let lookup = frame(Operation::LookupAccounts as u16, 2, &body);
    // Three clients that never read hold more than 8 MiB of replies between them.
    let mut readers_never = Vec::new();
    for _ in 0..3 {
        let s = wire::greeted(daemon.addr, None);
        s.set_nonblocking(true).unwrap();
        // (stream, bytes of the current frame already written)
        readers_never.push((s, 0usize));
    }
    // The bound refuses a request that could push it past 8 MiB: memory settles within one
    // maximal reply below it.
    let deadline = Instant::now() + Duration::from_secs(20);
    while daemon.metric("ledgerd_reply_memory_bytes") < (8 << 20) - (1 << 20) - (64 << 10) {
        for (s, sent) in &mut readers_never {
            while let Ok(n) = s.write(&lookup[*sent..]) {
                *sent = (*sent + n) % lookup.len();
                if n == 0 {
                    break;
                }
            }
        }
        assert!(Instant::now() < deadline, "reply memory never reached the bound");
        std::thread::sleep(Duration::from_millis(20));
    }
    // A newcomer's large lookup is shed with busy; nothing is held for it. (The non-readers'
    // kernel buffers still take some replies, so they are topped up between attempts.)
    let mut s = wire::greeted(daemon.addr, None);
    let mut attempts = 0;
    loop {
        attempts += 1;
        s.write_all(&lookup).unwrap();
        let (op, status, _) = reply(&mut s);
        assert_eq!(op, Operation::LookupAccounts as u16);
        if status == Status::Busy {
            break;
        }
        assert_eq!(status, Status::Ok);
        assert!(attempts < 200, "never busy at the bound");
        for (s, sent) in &mut readers_never {
            while let Ok(n) = s.write(&lookup[*sent..]) {
                *sent = (*sent + n) % lookup.len();
                if n == 0 {
                    break;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let held = daemon.metric("ledgerd_reply_memory_bytes");
    assert!(held <= (8 << 20) + (2 << 20), "{held} bytes held");
    assert!(daemon.metric("ledgerd_rejections_total{reason=\"reply_memory\"}") >= 1);
    // When the non-readers go, memory is released and the same lookup is served.
    drop(readers_never);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        s.write_all(&lookup).unwrap();
        let (op, status, _) = reply(&mut s);
        assert_eq!(op, Operation::LookupAccounts as u16);
        if status == Status::Ok {
            break;
        }
        assert_eq!(status, Status::Busy);
        assert!(Instant::now() < deadline, "still busy after the non-readers left");
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("reply memory: {held} bytes held at the 8 MiB bound");
}
