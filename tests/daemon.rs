//! End to end: each test starts `ledgerd` on free loopback ports with a temporary data
//! directory, talks to it through the client (or raw sockets), and stops it.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{account, replay_hash, transfer, wallet, TestDaemon};
use ledgerd::protocol::{self, ChangeEventsRequest, Operation, Status, HEADER_SIZE};
use ledgerd::types::{
    AccountFilter, AccountFilterFlags, AccountFlags, AccountLimit, ResultCode, Transfer,
    TransferFlags,
};
use ledgerd_client::{Client, ClientError};

fn codes(results: &[ledgerd::types::CreateResult], n: usize) -> Vec<ResultCode> {
    let mut all = vec![ResultCode::Ok; n];
    for r in results {
        all[r.index as usize] = r.result;
    }
    all
}

fn hash_hex(client: &mut Client) -> String {
    format!("{:032x}", client.status().expect("status").state_hash)
}

#[test]
fn every_operation_through_the_client() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = TestDaemon::start(dir.path());
    let mut c = daemon.client();

    // Accounts: ok, exists, a validation failure, a different-field retry.
    let accounts = [
        wallet(1),
        wallet(2),
        account(3, 1, 0),
        account(4, 1, AccountFlags::HISTORY),
        account(5, 2, 0),
        account(0, 1, 0),
    ];
    let r = c.create_accounts(&accounts).unwrap();
    assert_eq!(
        codes(&r, accounts.len()),
        [
            ResultCode::Ok,
            ResultCode::Ok,
            ResultCode::Ok,
            ResultCode::Ok,
            ResultCode::Ok,
            ResultCode::IdMustNotBeZero
        ]
    );
    let r = c.create_accounts(&[wallet(1), account(2, 1, 0), account(9, 0, 0)]).unwrap();
    assert_eq!(
        codes(&r, 3),
        [ResultCode::Exists, ResultCode::ExistsWithDifferentFlags, ResultCode::LedgerMustNotBeZero]
    );

    // Fund wallet 1 from the operator account 3, then a table of transfers and their codes.
    assert!(c.create_transfers(&[transfer(100, 3, 1, 1_000)]).unwrap().is_empty());
    let pending =
        Transfer { flags: TransferFlags::PENDING, timeout: 3600, ..transfer(101, 1, 4, 300) };
    let cases: Vec<(Transfer, ResultCode)> = vec![
        (transfer(100, 3, 1, 1_000), ResultCode::Exists),
        (transfer(100, 3, 1, 999), ResultCode::ExistsWithDifferentAmount),
        (transfer(102, 1, 1, 5), ResultCode::AccountsMustBeDifferent),
        (transfer(0, 1, 2, 5), ResultCode::IdMustNotBeZero),
        (transfer(103, 77, 2, 5), ResultCode::DebitAccountNotFound),
        (transfer(104, 1, 77, 5), ResultCode::CreditAccountNotFound),
        (transfer(105, 1, 5, 5), ResultCode::AccountsMustHaveTheSameLedger),
        (Transfer { ledger: 0, ..transfer(106, 1, 2, 5) }, ResultCode::LedgerMustNotBeZero),
        (transfer(107, 1, 2, 0), ResultCode::AmountMustNotBeZero),
        (transfer(108, 1, 2, 5_000), ResultCode::ExceedsCredits),
        (transfer(108, 1, 2, 5), ResultCode::IdAlreadyFailed),
        (pending, ResultCode::Ok),
        (transfer(109, 1, 2, 800), ResultCode::ExceedsCredits),
        (
            Transfer {
                flags: TransferFlags::POST_PENDING_TRANSFER,
                pending_id: 999,
                ..transfer(110, 0, 0, 0)
            },
            ResultCode::PendingTransferNotFound,
        ),
        (
            Transfer {
                flags: TransferFlags::POST_PENDING_TRANSFER,
                pending_id: 101,
                ..transfer(111, 0, 0, 200)
            },
            ResultCode::Ok,
        ),
        (
            Transfer {
                flags: TransferFlags::VOID_PENDING_TRANSFER,
                pending_id: 101,
                ..transfer(112, 0, 0, 0)
            },
            ResultCode::PendingTransferAlreadyPosted,
        ),
    ];
    for (t, want) in &cases {
        let r = c.create_transfers(std::slice::from_ref(t)).unwrap();
        assert_eq!(codes(&r, 1), [*want], "transfer {t:?}");
    }

    // A linked chain fails as a whole.
    let chain = [
        Transfer { flags: TransferFlags::LINKED, ..transfer(120, 1, 2, 10) },
        transfer(121, 1, 2, 100_000),
    ];
    let r = c.create_transfers(&chain).unwrap();
    assert_eq!(codes(&r, 2), [ResultCode::LinkedEventFailed, ResultCode::ExceedsCredits]);
    let r = c
        .create_transfers(&[Transfer { flags: TransferFlags::LINKED, ..transfer(122, 1, 2, 1) }])
        .unwrap();
    assert_eq!(codes(&r, 1), [ResultCode::LinkedEventChainOpen]);

    // Pending then void releases the reservation.
    let p2 = Transfer { flags: TransferFlags::PENDING, ..transfer(130, 1, 2, 50) };
    assert!(c.create_transfers(&[p2]).unwrap().is_empty());
    let void = Transfer {
        flags: TransferFlags::VOID_PENDING_TRANSFER,
        pending_id: 130,
        ..transfer(131, 0, 0, 0)
    };
    assert!(c.create_transfers(&[void]).unwrap().is_empty());

    // Lookups.
    let found = c.lookup_accounts(&[1, 4, 77]).unwrap();
    assert_eq!(found.len(), 2);
    assert_eq!(found[0].credits_posted, 1_000);
    assert_eq!(found[0].debits_posted, 200);
    assert_eq!(found[0].debits_pending, 0);
    assert_eq!(found[1].credits_posted, 200);
    let found = c.lookup_transfers(&[100, 101, 108, 111]).unwrap();
    assert_eq!(found.iter().map(|t| t.id).collect::<Vec<_>>(), [100, 101, 111]);
    assert_eq!(found[2].amount, 200);

    // History of account 1 and balances of history account 4.
    let filter = AccountFilter {
        account_id: 1,
        limit: 10,
        flags: AccountFilterFlags::DEBITS | AccountFilterFlags::CREDITS,
        ..Default::default()
    };
    let history = c.get_account_transfers(&filter).unwrap();
    assert_eq!(history.iter().map(|t| t.id).collect::<Vec<_>>(), [100, 101, 111, 130, 131]);
    let reversed = c
        .get_account_transfers(&AccountFilter {
            flags: filter.flags | AccountFilterFlags::REVERSED,
            limit: 2,
            ..filter
        })
        .unwrap();
    assert_eq!(reversed.iter().map(|t| t.id).collect::<Vec<_>>(), [131, 130]);
    let balances = c.get_account_balances(&AccountFilter { account_id: 4, ..filter }).unwrap();
    assert_eq!(balances.len(), 2, "pending then post");
    assert_eq!(balances[1].credits_posted, 200);

    // Updatable limit on a wallet: raise the overdraft of wallet 2 (debits may exceed credits by 40).
    let r = c
        .set_account_limits(&[AccountLimit { account_id: 2, limit: 40, ..Default::default() }])
        .unwrap();
    assert_eq!(codes(&r, 1), [ResultCode::Ok]);
    let limits = c.lookup_account_limits(&[2]).unwrap();
    assert_eq!(limits.len(), 1);
    assert_eq!(limits[0].limit, 40);

    // Change events follow every change from the start.
    let feed = c
        .change_events(&ChangeEventsRequest { from_sequence: 1, limit: 1000, from_index: 0 })
        .unwrap();
    assert!(feed.events.len() >= 10, "{} change events", feed.events.len());
    assert!(feed.next_sequence > 1);

    // Status, then a clean stop; the replay tool agrees with the daemon.
    let status = c.status().unwrap();
    assert_eq!(status.accounts, 5);
    assert!(status.sequence > 0);
    let hash = hash_hex(&mut c);
    drop(c);
    assert!(daemon.stop().success(), "SIGTERM exits 0");
    assert_eq!(replay_hash(dir.path()), hash);

    // And the restarted daemon recovers the same state.
    daemon.restart();
    let mut c = daemon.client();
    assert_eq!(hash_hex(&mut c), hash);
}

#[test]
fn pipelining_on_one_connection_and_many_connections() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = TestDaemon::start(dir.path());
    let mut c = daemon.client();
    let accounts: Vec<_> = (1..=20).map(|id| account(id, 1, 0)).collect();
    assert!(c.create_accounts(&accounts).unwrap().is_empty());

    // 500 requests in flight on one connection: replies come back in order.
    let mut ids = Vec::new();
    let mut body = vec![0u8; 128];
    for i in 0..500u128 {
        transfer(10_000 + i, 1 + i % 10, 11 + i % 10, 1).write_to(&mut body);
        ids.push(c.send_raw(Operation::CreateTransfers, &body).unwrap());
    }
    c.flush().unwrap();
    for id in ids {
        let reply = c.recv().unwrap();
        assert_eq!(reply.request_id, id);
        assert_eq!(reply.status, Status::Ok);
        assert!(reply.body.is_empty(), "all ok");
    }

    // 8 connections in parallel, each with batches.
    let addr = daemon.addr;
    let threads: Vec<_> = (0..8u128)
        .map(|t| {
            std::thread::spawn(move || {
                let mut c = Client::connect(addr, None).unwrap();
                for batch in 0..25u128 {
                    let transfers: Vec<_> = (0..40u128)
                        .map(|i| {
                            let id = 1_000_000 + t * 100_000 + batch * 100 + i;
                            transfer(id, 1 + (i % 10), 11 + (i % 10), 2)
                        })
                        .collect();
                    assert!(c.create_transfers(&transfers).unwrap().is_empty());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let all = c.lookup_accounts(&(1..=20).collect::<Vec<_>>()).unwrap();
    let debits: u128 = all.iter().map(|a| a.debits_posted).sum();
    let credits: u128 = all.iter().map(|a| a.credits_posted).sum();
    assert_eq!(debits, credits);
    assert_eq!(debits, 500 + 8 * 25 * 40 * 2);
    assert_eq!(c.status().unwrap().transfers, 500 + 8 * 25 * 40);
}

/// Acknowledged transfers (id → amount) and the ids sent without an answer.
#[derive(Default)]
struct Ledger {
    acked: HashMap<u128, Transfer>,
    unanswered: Vec<Transfer>,
}

#[test]
fn sigkill_under_load_loses_no_acknowledged_transfer() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = TestDaemon::start_with(dir.path(), &["--snapshot-every-records", "200"]);
    let accounts: Vec<_> = (1..=50).map(|id| account(id, 1, 0)).collect();
    assert!(daemon.client().create_accounts(&accounts).unwrap().is_empty());

    for round in 0..3u128 {
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let addr = daemon.addr;
        let workers: Vec<_> = (0..4u128)
            .map(|w| {
                let (ledger, stop) = (Arc::clone(&ledger), Arc::clone(&stop));
                std::thread::spawn(move || {
                    let Ok(mut c) = Client::connect(addr, None) else { return };
                    let mut next = 0u128;
                    while !stop.load(Ordering::Relaxed) && next < 200_000 {
                        let batch: Vec<_> = (0..64u128)
                            .map(|i| {
                                let id = (round + 1) << 64 | w << 40 | (next + i + 1);
                                transfer(id, 1 + (id % 50), 1 + ((id + 7) % 50), 1 + id % 13)
                            })
                            .collect();
                        next += 64;
                        match c.create_transfers(&batch) {
                            Ok(results) => {
                                assert!(results.is_empty(), "all distinct accounts: {results:?}");
                                let mut l = ledger.lock().unwrap();
                                l.acked.extend(batch.iter().map(|t| (t.id, *t)));
                            }
                            Err(_) => {
                                ledger.lock().unwrap().unanswered.extend(batch);
                                return;
                            }
                        }
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300 + 150 * round as u64));
        daemon.kill();
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            w.join().unwrap();
        }
        daemon.restart();
        let ledger = ledger.lock().unwrap();
        assert!(!ledger.acked.is_empty(), "round {round}: some transfers were acknowledged");
        let mut c = daemon.client();

        // Every acknowledged transfer is there with identical fields.
        let ids: Vec<u128> = ledger.acked.keys().copied().collect();
        for chunk in ids.chunks(8000) {
            let found = c.lookup_transfers(chunk).unwrap();
            assert_eq!(
                found.len(),
                chunk.len(),
                "round {round}: an acknowledged transfer is missing"
            );
            for t in found {
                let sent = ledger.acked[&t.id];
                assert_eq!(
                    (t.debit_account_id, t.credit_account_id, t.amount),
                    (sent.debit_account_id, sent.credit_account_id, sent.amount)
                );
            }
        }
        // Retrying everything, answered or not, applies nothing twice.
        let retry: Vec<Transfer> =
            ledger.acked.values().copied().chain(ledger.unanswered.iter().copied()).collect();
        for chunk in retry.chunks(8000) {
            for r in c.create_transfers(chunk).unwrap() {
                assert_eq!(
                    r.result,
                    ResultCode::Exists,
                    "round {round}: retry of {}",
                    chunk[r.index as usize].id
                );
            }
        }
        // Invariant: debits equal credits.
        let all = c.lookup_accounts(&(1..=50).collect::<Vec<_>>()).unwrap();
        let debits: u128 = all.iter().map(|a| a.debits_posted).sum();
        let credits: u128 = all.iter().map(|a| a.credits_posted).sum();
        assert_eq!(debits, credits, "round {round}");
    }
    let hash = hash_hex(&mut daemon.client());
    assert!(daemon.stop().success());
    assert_eq!(replay_hash(dir.path()), hash, "daemon and ledger-replay agree");
}

#[test]
fn pending_transfer_expires_on_an_idle_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = TestDaemon::start(dir.path());
    let mut c = daemon.client();
    assert!(c.create_accounts(&[account(1, 1, 0), account(2, 1, 0)]).unwrap().is_empty());
    let pending = Transfer { flags: TransferFlags::PENDING, timeout: 1, ..transfer(7, 1, 2, 40) };
    assert!(c.create_transfers(&[pending]).unwrap().is_empty());
    let created = c.lookup_transfers(&[7]).unwrap()[0];
    let deadline_ns = created.timestamp + 1_000_000_000;
    assert_eq!(c.lookup_accounts(&[1]).unwrap()[0].debits_pending, 40);
    drop(c);

    // No traffic on the connection that created it: only the timer can release it.
    let started = Instant::now();
    let released_at = loop {
        assert!(started.elapsed() < Duration::from_secs(10), "the reservation was never released");
        std::thread::sleep(Duration::from_millis(20));
        let mut c = daemon.client();
        if c.lookup_accounts(&[1]).unwrap()[0].debits_pending == 0 {
            break ledgerd::pipeline::now_ns();
        }
    };
    assert!(released_at >= deadline_ns, "not released before its deadline");
    let mut c = daemon.client();
    let void = Transfer {
        flags: TransferFlags::VOID_PENDING_TRANSFER,
        pending_id: 7,
        ..transfer(8, 0, 0, 0)
    };
    assert_eq!(
        codes(&c.create_transfers(&[void]).unwrap(), 1),
        [ResultCode::PendingTransferExpired]
    );
}

#[test]
fn a_client_that_stops_reading_blocks_nobody_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = TestDaemon::start(dir.path());
    let mut c = daemon.client();
    let accounts: Vec<_> = (1..=100).map(|id| account(id, 1, 0)).collect();
    assert!(c.create_accounts(&accounts).unwrap().is_empty());

    // The slow client sends many large lookups and reads nothing for a while.
    let mut slow = daemon.client();
    let ids: Vec<u8> = (1..=100u128).flat_map(|id| id.to_le_bytes()).collect();
    let sent = 2_000;
    let writer = std::thread::spawn(move || {
        for _ in 0..sent {
            slow.send_raw(Operation::LookupAccounts, &ids).unwrap();
        }
        slow.flush().unwrap();
        slow
    });

    // Others are served meanwhile.
    for i in 0..200u128 {
        assert!(c.create_transfers(&[transfer(50_000 + i, 1, 2, 1)]).unwrap().is_empty());
    }
    std::thread::sleep(Duration::from_millis(200));
    for i in 0..50u128 {
        assert!(c.create_transfers(&[transfer(60_000 + i, 3, 4, 1)]).unwrap().is_empty());
    }

    // The slow client finally reads: every reply is there, in order.
    let mut slow = writer.join().unwrap();
    for _ in 0..sent {
        let reply = slow.recv().unwrap();
        assert_eq!(reply.status, Status::Ok);
        assert_eq!(reply.body.len(), 100 * 128);
    }
}

fn raw_frame(operation: u16, request_id: u64, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    protocol::encode_frame(&mut out, operation, Status::Ok, request_id, body);
    out
}

/// Reads until EOF or the timeout; returns what arrived.
fn read_some(stream: &mut TcpStream) -> Vec<u8> {
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        if out.len() >= HEADER_SIZE {
            break;
        }
    }
    out
}

fn reply_status(bytes: &[u8]) -> Option<Status> {
    let header: &[u8; HEADER_SIZE] = bytes.get(..HEADER_SIZE)?.try_into().ok()?;
    protocol::Header::decode(header).ok().and_then(|h| Status::from_u16(h.status))
}

#[test]
fn garbage_and_lying_lengths_leave_the_daemon_serving() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = TestDaemon::start(dir.path());
    let mut c = daemon.client();
    assert!(c.create_accounts(&[account(1, 1, 0), account(2, 1, 0)]).unwrap().is_empty());
    let before = hash_hex(&mut c);

    // Pure garbage: refused with bad_magic and closed.
    let mut s = TcpStream::connect(daemon.addr).unwrap();
    s.write_all(&[0xAB; 300]).unwrap();
    assert_eq!(reply_status(&read_some(&mut s)), Some(Status::BadMagic));

    // A request before hello.
    let mut s = TcpStream::connect(daemon.addr).unwrap();
    s.write_all(&raw_frame(Operation::Status as u16, 1, &[])).unwrap();
    assert_eq!(reply_status(&read_some(&mut s)), Some(Status::HelloRequired));

    // A length far beyond the limit.
    let mut s = daemon.client().into_stream();
    let mut frame = raw_frame(Operation::CreateTransfers as u16, 9, &[]);
    frame[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
    s.write_all(&frame).unwrap();
    assert_eq!(reply_status(&read_some(&mut s)), Some(Status::BodyTooLarge));

    // A length that lies (claims more than is sent), then the client goes away.
    let mut s = daemon.client().into_stream();
    let mut frame =
        raw_frame(Operation::CreateTransfers as u16, 10, &transfer(5, 1, 2, 1).to_bytes());
    frame[12..16].copy_from_slice(&(128u32 * 4).to_le_bytes());
    s.write_all(&frame).unwrap();
    drop(s);

    // A body whose checksum does not match.
    let mut s = daemon.client().into_stream();
    let mut frame =
        raw_frame(Operation::CreateTransfers as u16, 11, &transfer(6, 1, 2, 1).to_bytes());
    let last = frame.len() - 1;
    frame[last] ^= 1;
    s.write_all(&frame).unwrap();
    assert_eq!(reply_status(&read_some(&mut s)), Some(Status::BadChecksum));

    // An unknown operation and a wrong-sized body get error replies.
    let mut s = daemon.client().into_stream();
    s.write_all(&raw_frame(999, 12, &[])).unwrap();
    assert_eq!(reply_status(&read_some(&mut s)), Some(Status::UnknownOperation));
    let mut s = daemon.client().into_stream();
    s.write_all(&raw_frame(Operation::CreateTransfers as u16, 13, &[1, 2, 3])).unwrap();
    assert_eq!(reply_status(&read_some(&mut s)), Some(Status::BodyLengthInvalid));

    // Nothing changed, and the daemon still serves.
    let mut c = daemon.client();
    assert_eq!(hash_hex(&mut c), before);
    assert!(c.create_transfers(&[transfer(7, 1, 2, 1)]).unwrap().is_empty());
    assert!(c.lookup_transfers(&[5, 6]).unwrap().is_empty());
}

#[test]
fn operator_endpoints_and_auth_token() {
    let dir = tempfile::tempdir().unwrap();
    let token_path = dir.path().join("token");
    common::write_token_file(&token_path, "s3cret-token-of-at-least-32-bytes\n");
    let data = dir.path().join("data");
    let mut daemon =
        TestDaemon::start_with_token(&data, &token_path, b"s3cret-token-of-at-least-32-bytes");

    let (code, body) = daemon.http_get("/healthz");
    assert_eq!(code, 200, "{body}");
    let (code, _) = daemon.http_get("/readyz");
    assert_eq!(code, 200);
    let mut c = daemon.client();
    assert!(c.create_accounts(&[account(1, 1, 0)]).unwrap().is_empty());
    let (code, metrics) = daemon.http_get("/metrics");
    assert_eq!(code, 200);
    for name in ["ledgerd_requests_total", "ledgerd_journal_sequence", "ledgerd_connections"] {
        assert!(metrics.contains(name), "{name} missing from /metrics:\n{metrics}");
    }

    match Client::connect(daemon.addr, None) {
        Err(ClientError::Status(Status::AuthFailed)) => {}
        other => panic!("no token: {:?}", other.map(|_| ())),
    }
    match Client::connect(daemon.addr, Some(b"wrong")) {
        Err(ClientError::Status(Status::AuthFailed)) => {}
        other => panic!("wrong token: {:?}", other.map(|_| ())),
    }
    drop(c);
    assert!(daemon.stop().success());
}

/// The README's CLI tour, run line by line against a daemon: every `ledger` command in it
/// must work, and exit 1 exactly where its comment names a refusal.
#[test]
fn readme_tour_runs_as_written() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme.find("## A two-minute tour").expect("tour section");
    let block = &readme[start..];
    let block = &block[block.find("```sh").unwrap() + 5..];
    let block = &block[..block.find("```").unwrap()];
    let dir = tempfile::tempdir().unwrap();
    let daemon = TestDaemon::start(dir.path());
    let mut ran = 0;
    for line in block.lines() {
        let line = line.trim();
        let (command, comment) = match line.split_once('#') {
            Some((c, comment)) => (c.trim(), comment),
            None => (line, ""),
        };
        let command = match command.strip_prefix("sleep ") {
            Some(rest) => {
                let (secs, rest) = rest.split_once(';').expect("sleep N; command");
                std::thread::sleep(Duration::from_secs_f64(secs.trim().parse().unwrap()));
                rest.trim()
            }
            None => command,
        };
        let (stdin, command) = match command.split_once("| ") {
            Some((echo, rest)) => {
                let json =
                    echo.trim().strip_prefix("echo '").and_then(|e| e.strip_suffix('\'')).unwrap();
                (Some(json.to_string()), rest.trim())
            }
            None => (None, command),
        };
        let Some(args) = command.strip_prefix("ledger ") else { continue };
        let mut child = std::process::Command::new(common::bin("ledger"))
            .arg("--addr")
            .arg(daemon.addr.to_string())
            .args(args.split_whitespace())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(json) = stdin {
            writeln!(child.stdin.as_mut().unwrap(), "{json}").unwrap();
        }
        drop(child.stdin.take());
        let out = child.wait_with_output().unwrap();
        let refused =
            ["exceeds_credits", "pending_transfer_expired"].iter().any(|c| comment.contains(c));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(if refused { 1 } else { 0 }),
            "`{line}` printed:\n{stdout}"
        );
        for code in ["exceeds_credits", "pending_transfer_expired"] {
            if comment.contains(code) {
                assert!(stdout.contains(code), "`{line}` printed:\n{stdout}");
            }
        }
        ran += 1;
    }
    assert!(ran >= 20, "the tour has {ran} commands");
    let mut c = daemon.client();
    let customer = c.lookup_accounts(&[10]).unwrap()[0];
    assert_eq!(
        (customer.debits_posted, customer.debits_pending, customer.credits_posted),
        (250, 0, 1000)
    );
    assert_eq!(c.lookup_accounts(&[1]).unwrap()[0].debits_posted, 3, "the stock was not oversold");
}

/// A follower paging through `change_events` sees every change once, in order, including
/// changes made earlier in the same batch as its request.
#[test]
fn change_events_page_through_every_change_once() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = TestDaemon::start(dir.path());
    let mut c = daemon.client();
    let accounts: Vec<_> = (1..=5).map(|id| account(id, 1, 0)).collect();
    // Pipelined: the feed request rides in the same batch as the creates before it.
    let mut body = Vec::new();
    for a in &accounts {
        body.extend_from_slice(&a.to_bytes());
    }
    c.send_raw(Operation::CreateAccounts, &body).unwrap();
    let transfers: Vec<_> =
        (0..7u128).map(|i| transfer(100 + i, 1 + i % 5, 1 + (i + 1) % 5, 1)).collect();
    let body: Vec<u8> = transfers.iter().flat_map(|t| t.to_bytes()).collect();
    c.send_raw(Operation::CreateTransfers, &body).unwrap();
    let mut request = Vec::new();
    ChangeEventsRequest { from_sequence: 1, limit: 100, from_index: 0 }.encode(&mut request);
    c.send_raw(Operation::ChangeEvents, &request).unwrap();
    c.flush().unwrap();
    for _ in 0..2 {
        assert_eq!(c.recv().unwrap().status, Status::Ok);
    }
    let feed = protocol::ChangeEventsReply::decode(&c.recv().unwrap().body).unwrap();
    assert_eq!(feed.events.len(), 12, "5 accounts and 7 transfers in the same batch");

    // Paging three at a time gives the same changes.
    let (mut sequence, mut index, mut seen) = (1, 0, Vec::new());
    for _ in 0..20 {
        let page = c
            .change_events(&ChangeEventsRequest {
                from_sequence: sequence,
                limit: 3,
                from_index: index,
            })
            .unwrap();
        if page.events.is_empty() {
            break;
        }
        seen.extend(
            page.events.iter().map(|e| (e.sequence, e.index, e.transfer.id, e.debit_account.id)),
        );
        (sequence, index) = (page.next_sequence, page.next_index);
    }
    let all: Vec<_> = feed
        .events
        .iter()
        .map(|e| (e.sequence, e.index, e.transfer.id, e.debit_account.id))
        .collect();
    assert_eq!(seen, all);
    let last = feed.events.last().unwrap();
    assert_eq!(last.transfer.id, 106);
    assert!(last.debit_account.debits_posted >= 1, "post-balances are filled in");
}
