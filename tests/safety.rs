//! Safe by default, against the real daemon: each operator mistake or bug below is refused or
//! survived as RELIABILITY.md §6 promises.
//!
//! - a data directory that lost its journal, a segment (oldest, newest), acknowledged records,
//!   or that holds a snapshot beyond its journal: refused, naming what is missing, and
//!   `ledger-replay verify` exits non-zero;
//! - a non-empty directory that is not a ledger: refused, naming what is there;
//! - `--repair` states what it would discard and does nothing without the confirmation;
//! - a panic in the business thread aborts the process; a restart recovers;
//! - while writes fail, `/readyz` and `/healthz` say so; a slow HTTP client does not block them;
//! - files are private whatever the umask; a token file others can read is refused;
//! - a low descriptor limit clamps the connections so a flood cannot break segment roll-over;
//! - at a configured capacity, creates are refused whole with `ledger_full`, never a panic.

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{transfer, wallet, Faulty, TestDaemon};
use ledgerd::harness::{self, Daemon, Stderr};
use ledgerd::journal::JournalReader;
use ledgerd::protocol::Status;
use ledgerd::types::{Account, Transfer};
use ledgerd_client::{Client, ClientError, ClientOptions};

/// Bounded wait for something the daemon does in the background.
const WAIT_MAX: Duration = Duration::from_secs(30);

/// Accounts 1 (the bank, may go negative) and 2..=9 (wallets).
fn open_accounts(client: &mut Client) {
    let mut accounts = vec![Account { id: 1, ledger: 1, code: 1, ..Default::default() }];
    accounts.extend((2..10).map(wallet));
    assert!(client.create_accounts(&accounts).unwrap().is_empty());
}

/// `n` requests of one transfer each (one journal record each), ids from `first`.
fn pay(client: &mut Client, first: u128, n: u128) -> Vec<u128> {
    for id in first..first + n {
        let t = transfer(id, 1, 2 + (id % 8), 1 + (id % 5));
        assert!(client.create_transfers(&[t]).unwrap().is_empty(), "transfer {id}");
    }
    (first..first + n).collect()
}

fn present(client: &mut Client, ids: &[u128]) -> Vec<u128> {
    client.lookup_transfers(ids).unwrap().iter().map(|t| t.id).collect()
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join("journal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

fn snapshots(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join("snapshots"))
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    v.retain(|p| p.extension().is_some_and(|e| e == "snap"));
    v.sort();
    v
}

/// (segment path, offset, length with padding) of every record.
fn records(dir: &Path) -> Vec<(PathBuf, u64, u64)> {
    let reader = JournalReader::open(dir).unwrap();
    let mut out = Vec::new();
    let mut it = reader.records(1, None);
    while let Some(r) = it.next_record() {
        let r = r.unwrap();
        let path = reader.segment_path(r.segment).unwrap().to_path_buf();
        out.push((path, r.offset, 64 + (r.body.len() as u64).next_multiple_of(16)));
    }
    out
}

fn flip_bit(path: &Path, offset: u64) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[offset as usize] ^= 0x10;
    std::fs::write(path, bytes).unwrap();
}

/// The harness's builder for `ledgerd` on `dir` with 8 MiB segments, no pinned core and
/// `extra` (no full-state check: these tests start daemons on damaged or unusual directories).
fn ledgerd(dir: &Path, extra: &[&str]) -> harness::Builder {
    Daemon::builder(common::bin("ledgerd"), dir)
        .args(["--business-core", "none", "--segment-size-mib", "8"])
        .args(extra)
}

/// Starts the daemon on `dir` expecting a refusal; returns stdout + stderr.
fn refused(dir: &Path, extra: &[&str]) -> String {
    let out = ledgerd(dir, extra)
        .run_to_exit(WAIT_MAX)
        .expect("ledgerd exits by itself (a refusal) in time");
    assert!(!out.status.success(), "ledgerd started on {}", dir.display());
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    // Logs to a pipe carry no colour codes.
    assert!(!text.contains('\x1b'), "ANSI escape codes in a log that is not a terminal: {text:?}");
    text
}

/// `ledger-replay verify DIR`: (success, output).
fn verify(dir: &Path) -> (bool, String) {
    let out = Command::new(common::bin("ledger-replay")).arg("verify").arg(dir).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).to_string())
}

/// Fills the journal past two segment boundaries (8 MiB segments) with big requests.
fn three_segments(daemon: &TestDaemon) {
    let mut client = daemon.client();
    open_accounts(&mut client);
    let mut id = 1_000u128;
    let deadline = Instant::now() + WAIT_MAX;
    while segments(&daemon.data_dir).len() < 3 {
        let batch: Vec<Transfer> = (0..8000).map(|i| transfer(id + i, 1, 2 + (i % 8), 1)).collect();
        assert!(client.create_transfers(&batch).unwrap().is_empty());
        id += 8000;
        assert!(Instant::now() < deadline, "journal did not reach three segments");
    }
}

// ---- what the journal must hold ----

#[test]
fn journal_directory_moved_with_snapshots_left_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--snapshot-every-records", "20"];
    let mut daemon = TestDaemon::start_with(dir.path(), &args);
    let mut client = daemon.client();
    open_accounts(&mut client);
    let mut ids = Vec::new();
    let deadline = Instant::now() + WAIT_MAX;
    while snapshots(dir.path()).is_empty() {
        ids.extend(pay(&mut client, 100 + ids.len() as u128, 10));
        assert!(Instant::now() < deadline, "no snapshot in time");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(daemon.stop().success());
    let journal = dir.path().join("journal");
    let moved = dir.path().with_extension("journal-moved");
    std::fs::rename(&journal, &moved).unwrap();
    // The superblock is left: it names what is gone. (Before format 2 the daemon started an
    // empty ledger here, served it, and skipped the snapshots.)
    let err = refused(dir.path(), &args);
    assert!(err.contains("journal directory") && err.contains("missing"), "{err}");
    assert!(!journal.exists(), "the refusal created a new journal");
    assert!(!verify(dir.path()).0);
    // The superblock moved too: only snapshots are left, and they are named.
    let sb = dir.path().join("superblock");
    let sb_moved = dir.path().with_extension("superblock-moved");
    std::fs::rename(&sb, &sb_moved).unwrap();
    let err = refused(dir.path(), &args);
    assert!(err.contains("holds no ledger") && err.contains("snapshots"), "{err}");
    // Everything back: serving again, nothing lost.
    std::fs::rename(&moved, &journal).unwrap();
    std::fs::rename(&sb_moved, &sb).unwrap();
    let daemon = TestDaemon::start_with(dir.path(), &args);
    assert_eq!(present(&mut daemon.client(), &ids), ids);
}

#[test]
fn non_empty_directory_without_a_ledger_is_refused_naming_what_it_holds() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not a ledger").unwrap();
    let err = refused(dir.path(), &[]);
    assert!(err.contains("holds no ledger") && err.contains("notes.txt"), "{err}");
    assert!(!dir.path().join("journal").exists() && !dir.path().join("superblock").exists());
}

#[test]
fn a_data_directory_of_the_older_format_is_refused_saying_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("journal")).unwrap();
    std::fs::create_dir_all(dir.path().join("snapshots")).unwrap();
    // A format 1 segment header: magic, then version 1.
    let mut seg = vec![0u8; 8192];
    seg[..8].copy_from_slice(b"LDGRJSEG");
    seg[8..10].copy_from_slice(&1u16.to_le_bytes());
    std::fs::write(dir.path().join("journal").join(format!("{:020}.seg", 0)), &seg).unwrap();
    let err = refused(dir.path(), &[]);
    assert!(err.contains("format version 1") && err.contains("older ledgerd"), "{err}");
    assert!(err.contains("new, empty data directory"), "{err}");
    assert!(!verify(dir.path()).0);
}

#[test]
fn newest_or_oldest_segment_deleted_is_refused_and_verify_fails() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = TestDaemon::start(dir.path());
    three_segments(&daemon);
    assert!(daemon.stop().success());
    let segs = segments(dir.path());
    let newest = segs.last().unwrap();
    let aside = dir.path().with_extension("newest");
    std::fs::rename(newest, &aside).unwrap();
    let err = refused(dir.path(), &[]);
    let name = format!("segment {} is missing", segs.len() - 1);
    assert!(err.contains(&name), "{err}");
    let (ok, out) = verify(dir.path());
    assert!(!ok && out.contains(&name), "{out}");
    std::fs::rename(&aside, newest).unwrap();

    let oldest = &segs[0];
    std::fs::rename(oldest, &aside).unwrap();
    let err = refused(dir.path(), &[]);
    assert!(err.contains("oldest segment 0"), "{err}");
    let (ok, out) = verify(dir.path());
    assert!(!ok && out.contains("none possible"), "{out}");
    // Not even a repair can rebuild missing history.
    let err = refused(dir.path(), &["--repair", "true"]);
    assert!(err.contains("no repair possible"), "{err}");
    std::fs::rename(&aside, oldest).unwrap();
    assert!(verify(dir.path()).0);
}

#[test]
fn bit_flip_in_the_last_acknowledged_record_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = TestDaemon::start(dir.path());
    open_accounts(&mut daemon.client());
    pay(&mut daemon.client(), 100, 10);
    // A clean stop records every flushed record as durable (the seal).
    assert!(daemon.stop().success());
    let (path, offset, _) = records(dir.path()).pop().unwrap();
    flip_bit(&path, offset + 70);
    // Before format 2 this was cut as a torn tail: an acknowledged transfer silently lost.
    let err = refused(dir.path(), &[]);
    assert!(err.contains("acknowledged records are missing"), "{err}");
    assert!(err.contains(&format!("offset {offset}")), "{err}");
    let (ok, out) = verify(dir.path());
    assert!(!ok && out.contains("acknowledged"), "{out}");
    // A journal cut short before that record: refused too.
    flip_bit(&path, offset + 70);
    std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(offset + 20).unwrap();
    let err = refused(dir.path(), &[]);
    assert!(err.contains("acknowledged records are missing"), "{err}");
}

#[test]
fn snapshot_beyond_the_journal_end_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let mut daemon = TestDaemon::start(&a);
    open_accounts(&mut daemon.client());
    pay(&mut daemon.client(), 100, 5);
    assert!(daemon.stop().success());
    // B: a copy of A that went on for 10 more records, and a snapshot of it.
    let cp = Command::new("cp").arg("-a").arg(&a).arg(&b).status().unwrap();
    assert!(cp.success());
    let mut daemon = TestDaemon::start(&b);
    pay(&mut daemon.client(), 200, 10);
    assert!(daemon.stop().success());
    let out = Command::new(common::bin("ledger-replay")).arg("snapshot").arg(&b).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // A's journal is the shorter history: the snapshot names records it does not hold.
    std::fs::create_dir_all(a.join("snapshots")).unwrap();
    let snap = snapshots(&b).pop().unwrap();
    std::fs::copy(&snap, a.join("snapshots").join(snap.file_name().unwrap())).unwrap();
    let err = refused(&a, &[]);
    assert!(err.contains("beyond the journal's end"), "{err}");
    let (ok, out) = verify(&a);
    assert!(!ok && out.contains("beyond the journal's end"), "{out}");
}

#[test]
fn repair_states_what_it_discards_and_needs_the_confirmation() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = TestDaemon::start(dir.path());
    open_accounts(&mut daemon.client());
    pay(&mut daemon.client(), 100, 10);
    assert!(daemon.stop().success());
    // Record 6 (transfer 104) is damaged; records 7..=11 follow it.
    let recs = records(dir.path());
    let (path, offset, _) = &recs[5];
    flip_bit(path, offset + 70);
    let before = std::fs::read(path).unwrap();
    let err = refused(dir.path(), &[]);
    assert!(err.contains(&format!("offset {offset}")), "{err}");

    // A dry run: the plan and the confirming command; nothing changes.
    let out = refused(dir.path(), &["--repair", "true"]);
    assert!(
        out.contains("discard: sequences 6..=11 (at least 6 records, 6 of them acknowledged)"),
        "{out}"
    );
    assert!(out.contains("--repair-discard-after 5"), "{out}");
    assert!(out.contains("repair not confirmed: nothing was changed"), "{out}");
    assert_eq!(std::fs::read(path).unwrap(), before, "a dry run changed the journal");
    // A confirmation that does not match the plan: refused, nothing changes.
    let out = refused(dir.path(), &["--repair", "true", "--repair-discard-after", "4"]);
    assert!(out.contains("does not match the plan"), "{out}");
    assert_eq!(std::fs::read(path).unwrap(), before, "a wrong confirmation changed the journal");
    // Confirmed: exactly records 6..=11 go, logged at ERROR with the counts.
    let log_path = dir.path().with_extension("repair.log");
    let mut daemon = ledgerd(dir.path(), &["--repair", "true", "--repair-discard-after", "5"])
        .stderr(Stderr::File(log_path.clone()))
        .spawn()
        .expect("start ledgerd");
    let deadline = Instant::now() + WAIT_MAX;
    while JournalReader::open(dir.path()).unwrap().verify().end != ledgerd::journal::End::Clean {
        assert!(Instant::now() < deadline, "the confirmed repair did not happen");
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = daemon.stop().expect("stop ledgerd");
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(status.success(), "{log}");
    assert!(log.contains("ERROR") && log.contains("repair: discarded"), "{log}");
    assert!(log.contains("discarded_records=6") && log.contains("kept_through=5"), "{log}");
    let v = JournalReader::open(dir.path()).unwrap().verify();
    assert_eq!(v.last_sequence, 5);
    let daemon = TestDaemon::start(dir.path());
    assert_eq!(
        present(&mut daemon.client(), &(100..110).collect::<Vec<_>>()),
        vec![100, 101, 102, 103]
    );
}

// ---- crash on bugs ----

#[test]
fn a_panic_in_the_business_thread_aborts_the_process_and_a_restart_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut faulty = Faulty::start(&data);
    let mut client = faulty.daemon.client();
    open_accounts(&mut client);
    let acked = pay(&mut client, 100, 5);
    faulty.set("panic");
    // The next request reaches the business thread, which panics: the whole process must go,
    // and the client must see its connection end instead of waiting for ever.
    let sent = Instant::now();
    let answer = client.create_transfers(&[transfer(999, 1, 2, 1)]);
    assert!(
        matches!(answer, Err(ClientError::Io(_)) | Err(ClientError::Protocol(_))),
        "{answer:?}"
    );
    let status =
        faulty.daemon.wait_exit(WAIT_MAX).expect("the daemon is still running after a panic");
    assert_eq!(status.signal(), Some(libc::SIGABRT), "{status:?}");
    eprintln!("figure: panic to process exit {} ms (SIGABRT)", sent.elapsed().as_millis());
    std::fs::write(&faulty.file, "clear").unwrap();
    faulty.daemon.restart();
    let mut client = faulty.daemon.client();
    assert_eq!(present(&mut client, &acked), acked);
    assert!(present(&mut client, &[999]).is_empty());
    assert_eq!(format!("{:032x}", client.status().unwrap().state_hash), common::replay_hash(&data));
}

// ---- capacities ----

#[test]
fn at_a_configured_capacity_creates_are_refused_whole_with_ledger_full() {
    let dir = tempfile::tempdir().unwrap();
    let limits = ["--accounts-max", "10", "--transfers-max", "6", "--failed-ids-max", "8"];
    let mut daemon = TestDaemon::start_with(dir.path(), &limits);
    let mut client = daemon.client();
    open_accounts(&mut client); // 9 accounts
    let full = |answer: Result<Vec<ledgerd::types::CreateResult>, ClientError>| {
        matches!(answer, Err(ClientError::Status(Status::LedgerFull)))
    };
    // Two more accounts could pass 10: refused whole, nothing created.
    assert!(full(client.create_accounts(&[wallet(10), wallet(11)])));
    assert!(client.lookup_accounts(&[10]).unwrap().is_empty());
    assert!(client.create_accounts(&[wallet(10)]).unwrap().is_empty());
    assert!(full(client.create_accounts(&[wallet(11)])));

    let acked = pay(&mut client, 100, 4);
    // Three transfers could pass 6 transfers, even if some of them would fail.
    let three: Vec<Transfer> = (200..203).map(|id| transfer(id, 1, 2, 1)).collect();
    assert!(full(client.create_transfers(&three)));
    assert!(present(&mut client, &[200, 201, 202]).is_empty());
    // Failed transfers count against the failed ids: a transfer from an empty wallet to the
    // bank fails (exceeds_credits) and is remembered; 4 + 2 transfers fit, 8 failed ids fit.
    let broke: Vec<Transfer> = (300..306).map(|id| transfer(id, 9, 1, 1_000_000)).collect();
    assert!(full(client.create_transfers(&broke[..3])), "3 could pass the 6 transfers");
    let failed = client.create_transfers(&broke[..2]).unwrap();
    assert_eq!(failed.len(), 2, "{failed:?}");
    let status = client.status().unwrap();
    assert_eq!((status.accounts, status.transfers, status.failed_ids), (10, 4, 2));
    let acked: Vec<u128> = [acked, pay(&mut client, 400, 2)].concat();
    assert!(full(client.create_transfers(&[transfer(500, 1, 2, 1)])));

    // Reads and retries still work at the limit, and a restart keeps the limit and the ledger.
    assert_eq!(present(&mut client, &acked), acked);
    drop(client);
    daemon.kill();
    daemon.restart();
    let mut client = daemon.client();
    assert!(full(client.create_transfers(&[transfer(500, 1, 2, 1)])));
    assert_eq!(present(&mut client, &acked), acked);
    let status = client.status().unwrap();
    assert_eq!((status.accounts, status.transfers, status.failed_ids), (10, 6, 2));
}

// ---- health tells the truth ----

fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
}

#[test]
fn health_and_readiness_report_failing_writes_and_recover() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let faulty = Faulty::start(&data);
    let mut client = faulty.daemon.client();
    open_accounts(&mut client);
    pay(&mut client, 100, 3);
    assert_eq!(faulty.daemon.http_get("/readyz").0, 200);
    faulty.set("append ENOSPC");
    for id in 500..505 {
        match client.create_transfers(&[transfer(id, 1, 2, 1)]) {
            Err(ClientError::Status(Status::JournalUnavailable)) => {}
            other => panic!("expected journal_unavailable, got {other:?}"),
        }
    }
    // Every write fails: not ready, unhealthy with the reason, and a metric says so. (Before,
    // /readyz answered 200 between rebuilds and /healthz "ok".)
    let (code, body) = faulty.daemon.http_get("/readyz");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("journal writes failing"), "{body}");
    let (code, body) = faulty.daemon.http_get("/healthz");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("No space left on device") && body.contains("failures"), "{body}");
    let (_, metrics) = faulty.daemon.http_get("/metrics");
    assert_eq!(metric(&metrics, "ledgerd_writes_failing "), Some(1), "{metrics}");
    // The disk recovers and nobody writes: readiness comes back by itself (a probe).
    faulty.set("clear");
    let cleared = Instant::now();
    let deadline = Instant::now() + WAIT_MAX;
    while faulty.daemon.http_get("/readyz").0 != 200 {
        assert!(Instant::now() < deadline, "readiness did not come back");
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("figure: ready again {} ms after the fault cleared", cleared.elapsed().as_millis());
    assert_eq!(faulty.daemon.http_get("/healthz"), (200, "ok\n".to_string()));
    let (_, metrics) = faulty.daemon.http_get("/metrics");
    assert_eq!(metric(&metrics, "ledgerd_writes_failing "), Some(0), "{metrics}");
    assert!(client.create_transfers(&[transfer(600, 1, 2, 1)]).unwrap().is_empty());
}

#[test]
fn a_slow_http_client_does_not_block_healthz() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = TestDaemon::start(dir.path());
    let addr = daemon.metrics_addr;
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    // A client sending its request a byte at a time, slower than anyone should.
    let slow = std::thread::spawn(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        for &b in b"GET /metrics HTTP/1.1\r\n" {
            if s.write_all(&[b]).is_err()
                || done_rx.recv_timeout(Duration::from_millis(150)).is_ok()
            {
                break;
            }
        }
    });
    std::thread::sleep(Duration::from_millis(100));
    // Several health checks are answered while the slow client is still sending.
    for _ in 0..3 {
        let asked = Instant::now();
        assert_eq!(daemon.http_get("/healthz"), (200, "ok\n".to_string()));
        eprintln!("figure: /healthz in {} us beside a slow client", asked.elapsed().as_micros());
        assert!(!slow.is_finished(), "the slow client finished first: the check proves nothing");
    }
    let _ = done_tx.send(());
    slow.join().unwrap();
}

#[test]
fn snapshots_go_on_after_the_token_file_moves() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    common::write_token_file(&token, "s3cret-token-of-at-least-32-bytes\n");
    let data = dir.path().join("data");
    let daemon = ledgerd(&data, &["--snapshot-every-records", "10"])
        // The token comes from the environment, as a supervisor would set it.
        .env("LEDGERD_AUTH_TOKEN_FILE", &token)
        .stderr(Stderr::Null)
        .client_options(ClientOptions {
            token: Some(b"s3cret-token-of-at-least-32-bytes".to_vec()),
            ..Default::default()
        })
        .start()
        .expect("start ledgerd");
    let mut client = daemon.client().expect("connect");
    let deadline = Instant::now() + WAIT_MAX;
    // The operator rotates the token file away; the daemon keeps the token it read.
    std::fs::rename(&token, dir.path().join("token.old")).unwrap();
    open_accounts(&mut client);
    let mut next = 100u128;
    // Before, each snapshot process re-read LEDGERD_AUTH_TOKEN_FILE and failed: no snapshot.
    while snapshots(&data).is_empty() {
        pay(&mut client, next, 10);
        next += 10;
        assert!(Instant::now() < deadline, "no snapshot after the token file moved");
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---- files ----

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn files_are_private_whatever_the_umask() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let builder = ledgerd(&data, &["--snapshot-every-records", "5"]).stderr(Stderr::Null);
    // SAFETY: umask(2) is async-signal-safe.
    let builder = unsafe {
        builder.pre_exec(|| {
            libc::umask(0);
            Ok(())
        })
    };
    let mut daemon = builder.start().expect("start ledgerd");
    let mut client = daemon.client().expect("connect");
    let deadline = Instant::now() + WAIT_MAX;
    open_accounts(&mut client);
    pay(&mut client, 100, 12);
    while snapshots(&data).is_empty() {
        assert!(Instant::now() < deadline, "no snapshot in time");
        std::thread::sleep(Duration::from_millis(20));
    }
    daemon.kill();
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("journal")), 0o700);
    assert_eq!(mode(&data.join("snapshots")), 0o700);
    let mut files = vec![data.join("LOCK"), data.join("superblock"), data.join("journal/LOCK")];
    files.extend(segments(&data));
    files.extend(snapshots(&data));
    for f in files {
        assert_eq!(mode(&f), 0o600, "{}", f.display());
    }
}

#[test]
fn an_auth_token_file_others_can_read_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret\n").unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = refused(&dir.path().join("data"), &["--auth-token-file", token.to_str().unwrap()]);
    assert!(err.contains(&format!("chmod 600 {}", token.display())), "{err}");
}

// ---- descriptors ----

#[test]
fn a_connection_flood_under_a_low_descriptor_limit_cannot_break_segment_roll_over() {
    const LIMIT: u64 = 160;
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().with_extension("log");
    let builder = ledgerd(dir.path(), &[]).stderr(Stderr::File(log_path.clone()));
    // SAFETY: setrlimit(2) is async-signal-safe.
    let builder = unsafe {
        builder.pre_exec(|| {
            let lim =
                libc::rlimit { rlim_cur: LIMIT as libc::rlim_t, rlim_max: LIMIT as libc::rlim_t };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    };
    let mut daemon = builder.start().expect("start ledgerd");
    let listen = daemon.addr;
    let mut client = daemon.client().expect("connect");
    let deadline = Instant::now() + WAIT_MAX;
    open_accounts(&mut client);
    // A flood: far more connections than descriptors, all held open.
    let flood: Vec<std::net::TcpStream> =
        (0..2 * LIMIT).filter_map(|_| std::net::TcpStream::connect(listen).ok()).collect();
    assert!(flood.len() as u64 > LIMIT, "could not open the flood");
    // Roll the 8 MiB segments over twice while the flood holds its connections.
    let mut id = 1_000u128;
    while segments(dir.path()).len() < 3 {
        let batch: Vec<Transfer> = (0..8000).map(|i| transfer(id + i, 1, 2 + (i % 8), 1)).collect();
        match client.create_transfers(&batch) {
            Ok(results) => assert!(results.is_empty()),
            Err(e) => panic!("a write failed during the flood (segment roll-over?): {e}"),
        }
        id += 8000;
        assert!(Instant::now() < deadline, "journal did not reach three segments");
    }
    eprintln!(
        "figure: descriptor limit {LIMIT}, {} connections held by the flood, {} segments, {} \
         transfers written",
        flood.len(),
        segments(dir.path()).len(),
        id - 1_000
    );
    drop(flood);
    assert!(daemon.stop().expect("stop ledgerd").success());
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("cannot hold --connections-max"), "{log}");
    assert!(!log.contains("journal write failed"), "{log}");
}
