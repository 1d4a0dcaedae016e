//! The wire protocol from the outside: the spec document agrees with the code, decoders
//! never panic on arbitrary bytes, and the real daemon answers every case exactly as
//! docs/protocol.md says (statuses, echoed fields, which refusals close the connection,
//! shutdown), through the Rust client and byte by byte.

mod common;

use std::io::Write;
use std::net::TcpStream;

use common::wire::{self, closed, frame, hello_body, hello_frame, reply};
use common::TestDaemon;
use ledgerd::protocol::*;
use ledgerd::types::{
    Account, AccountFilter, AccountFilterFlags, AccountLimit, CreateResult, ResultCode, Transfer,
    EVENTS_PER_REQUEST_MAX,
};
use ledgerd_client::{Client, ClientError};
use proptest::prelude::*;

// ---- docs/protocol.md ----

fn protocol_doc() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/protocol.md");
    std::fs::read_to_string(path).expect("docs/protocol.md exists")
}

/// A table row of the doc that names `name` (in backticks) with `number` in its first cell.
fn has_row(doc: &str, number: u32, name: &str) -> bool {
    doc.lines().any(|line| {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        cells.len() > 3 && cells[1] == number.to_string() && cells[2] == format!("`{name}`")
    })
}

#[test]
fn doc_lists_every_operation_status_and_result_code() {
    let doc = protocol_doc();
    let mut missing = Vec::new();
    for op in Operation::ALL {
        if !has_row(&doc, *op as u32, op.name()) {
            missing.push(format!("operation {} {}", *op as u16, op.name()));
        }
    }
    for s in Status::ALL {
        if !has_row(&doc, *s as u32, s.name()) {
            missing.push(format!("status {} {}", *s as u16, s.name()));
        }
    }
    for code in ResultCode::ALL {
        if !has_row(&doc, *code as u32, code.name()) {
            missing.push(format!("result code {} {}", *code as u32, code.name()));
        }
    }
    for kind in ChangeEventKind::ALL {
        if !has_row(&doc, kind as u32, kind.name()) {
            missing.push(format!("change event kind {} {}", kind as u16, kind.name()));
        }
    }
    assert!(missing.is_empty(), "docs/protocol.md lacks rows for: {missing:#?}");
}

#[test]
fn doc_states_every_limit_and_size() {
    let doc = protocol_doc();
    for (name, value) in [
        ("HEADER_SIZE", HEADER_SIZE),
        ("FRAME_BODY_MAX", FRAME_BODY_MAX),
        ("EVENTS_PER_REQUEST_MAX", EVENTS_PER_REQUEST_MAX),
        ("CHANGE_EVENTS_PER_REPLY_MAX", CHANGE_EVENTS_PER_REPLY_MAX),
        ("HELLO_TOKEN_MAX", HELLO_TOKEN_MAX),
        ("HelloRequest", HelloRequest::SIZE),
        ("HelloReply", HelloReply::SIZE),
        ("StatusReply", StatusReply::SIZE),
        ("ChangeEvent", ChangeEvent::SIZE),
    ] {
        assert!(
            doc.lines().any(|l| l.contains(name) && l.contains(&value.to_string())),
            "docs/protocol.md states {name} = {value} on one line"
        );
    }
}

// ---- decoders never panic ----

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048), op in 0u16..14) {
        let mut head = [0u8; HEADER_SIZE];
        let n = bytes.len().min(HEADER_SIZE);
        head[..n].copy_from_slice(&bytes[..n]);
        let _ = Header::decode(&head);
        let _ = verify_checksum(&head, &bytes);
        if let Some(op) = Operation::from_u16(op) {
            let _ = validate_request_body(op, &bytes);
        }
        let _ = ChangeEventsReply::decode(&bytes);
        let _ = ChangeEventsRequest::decode(&bytes);
        let _ = HelloRequest::decode(&bytes);
        let _ = HelloReply::decode(&bytes);
        let _ = StatusReply::decode(&bytes);
        let _ = decode_create_results(&bytes, 100, &mut Vec::new());
        let _ = decode_records::<Transfer>(&bytes, &mut Vec::new());
    }

    #[test]
    fn valid_header_with_mutations_never_panics(
        operation in any::<u16>(), status in any::<u16>(), request_id in any::<u64>(),
        body in proptest::collection::vec(any::<u8>(), 0..256), flip in 0usize..64, bit in 0u8..8,
    ) {
        let mut out = Vec::new();
        let start = frame_begin(&mut out);
        out.extend_from_slice(&body);
        let st = Status::from_u16(status % Status::ALL.len() as u16).unwrap();
        frame_finish(&mut out, start, operation, st, request_id);
        let head: [u8; 64] = out[..64].try_into().unwrap();
        let h = Header::decode(&head).unwrap();
        prop_assert_eq!((h.operation, h.status, h.body_length as usize, h.request_id), (operation, st as u16, body.len(), request_id));
        prop_assert!(verify_checksum(&head, &out[64..]));
        let mut bad = head;
        bad[flip] ^= 1 << bit;
        // A flipped bit is refused by decode or by the checksum, never accepted silently.
        let refused = Header::decode(&bad).is_err() || !verify_checksum(&bad, &out[64..]);
        prop_assert!(refused);
    }

    #[test]
    fn change_event_records_round_trip(seq in any::<u64>(), index in any::<u32>(), kind in 1u16..8, amount in any::<u128>(), ts in any::<u64>()) {
        let event = ChangeEvent {
            sequence: seq,
            index,
            kind: ChangeEventKind::from_u16(kind).unwrap(),
            timestamp: ts,
            transfer: Transfer { id: 1, amount, ..Default::default() },
            debit_account: Account { id: 2, debits_posted: amount, ..Default::default() },
            credit_account: Account { id: 3, credits_posted: amount, ..Default::default() },
            limit: AccountLimit { account_id: 2, limit: amount, ..Default::default() },
        };
        let mut bytes = [0u8; ChangeEvent::SIZE];
        event.write_to(&mut bytes);
        prop_assert_eq!(ChangeEvent::read_from(&bytes), Ok(event));
    }
}

// ---- the client against the real daemon ----

fn account(id: u128) -> Account {
    Account { id, ledger: 1, code: 1, ..Default::default() }
}

fn transfer(id: u128, from: u128, to: u128, amount: u128) -> Transfer {
    Transfer {
        id,
        debit_account_id: from,
        credit_account_id: to,
        amount,
        ledger: 1,
        code: 1,
        ..Default::default()
    }
}

fn daemon(dir: &std::path::Path) -> TestDaemon {
    TestDaemon::start_with(dir, &["--in-flight-max", "8"])
}

#[test]
fn typed_calls_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = daemon(dir.path());
    let mut client = daemon.client();
    assert_eq!(client.server_limits().requests_in_flight_max, 8);
    assert_eq!(
        client.create_accounts(&[account(1), account(2), account(0)]).unwrap(),
        vec![CreateResult { index: 2, result: ResultCode::IdMustNotBeZero }]
    );
    assert_eq!(
        client.create_accounts(&[account(1)]).unwrap(),
        vec![CreateResult { index: 0, result: ResultCode::Exists }]
    );
    let wallet = Account {
        flags: ledgerd::types::AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS,
        ..account(3)
    };
    assert!(client.create_accounts(&[wallet]).unwrap().is_empty());
    let results =
        client.create_transfers(&[transfer(10, 1, 2, u128::MAX), transfer(11, 1, 9, 1)]).unwrap();
    assert_eq!(results, vec![CreateResult { index: 1, result: ResultCode::CreditAccountNotFound }]);
    let accounts = client.lookup_accounts(&[2, 7, 1]).unwrap();
    assert_eq!(accounts.iter().map(|a| a.id).collect::<Vec<_>>(), vec![2, 1]);
    assert_eq!(accounts[0].credits_posted, u128::MAX);
    assert_eq!(client.lookup_transfers(&[10]).unwrap()[0].amount, u128::MAX);
    assert!(client
        .set_account_limits(&[AccountLimit { account_id: 3, limit: 5, ..Default::default() }])
        .unwrap()
        .is_empty());
    assert_eq!(client.lookup_account_limits(&[3]).unwrap()[0].limit, 5);
    let filter = AccountFilter {
        account_id: 1,
        limit: 10,
        flags: AccountFilterFlags::DEBITS,
        ..Default::default()
    };
    assert_eq!(client.get_account_transfers(&filter).unwrap().len(), 1);
    // Account 1 has no `history` flag: no balance rows.
    assert!(client.get_account_balances(&filter).unwrap().is_empty());
    let events = client
        .change_events(&ChangeEventsRequest { from_sequence: 1, limit: 10, from_index: 0 })
        .unwrap();
    assert_eq!(events.events[0].kind, ChangeEventKind::AccountCreated);
    let status = client.status().unwrap();
    assert_eq!((status.accounts, status.transfers, status.account_limits), (3, 1, 1));
}

#[test]
fn invalid_requests_are_refused_before_sending() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = daemon(dir.path());
    let mut client = daemon.client();
    let sequence = client.status().unwrap().sequence;
    assert!(matches!(client.create_accounts(&[]), Err(ClientError::Status(Status::EmptyBatch))));
    let bad_filter = AccountFilter {
        account_id: 1,
        limit: 0,
        flags: AccountFilterFlags::DEBITS,
        ..Default::default()
    };
    assert!(matches!(
        client.get_account_transfers(&bad_filter),
        Err(ClientError::Status(Status::InvalidBody))
    ));
    assert!(matches!(
        client.send_raw(Operation::Status, &[1]),
        Err(ClientError::Status(Status::BodyLengthInvalid))
    ));
    assert_eq!(client.in_flight(), 0);
    // The connection is still usable, and nothing reached the ledger.
    assert_eq!(client.status().unwrap().sequence, sequence);
}

#[test]
fn pipelined_replies_come_back_in_request_order() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = daemon(dir.path());
    let mut client = daemon.client();
    client.create_accounts(&[account(1), account(2)]).unwrap();
    let mut ids = Vec::new();
    for i in 0..50u128 {
        let mut body = Vec::new();
        encode_records(&mut body, &[transfer(100 + i, 1, 2, 1)]);
        ids.push(client.send_raw(Operation::CreateTransfers, &body).unwrap());
    }
    assert_eq!(client.in_flight(), 50);
    client.flush().unwrap();
    for id in &ids {
        let reply = client.recv().unwrap();
        assert_eq!(reply.request_id, *id);
        assert_eq!(reply.status, Status::Ok);
        assert_eq!(reply.operation, Operation::CreateTransfers as u16);
        assert!(reply.body.is_empty());
    }
    assert!(matches!(client.recv(), Err(ClientError::Protocol(_))));
    assert_eq!(client.lookup_accounts(&[2]).unwrap()[0].credits_posted, 50);
}

#[test]
fn typed_call_refuses_while_pipelined_replies_are_outstanding() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = daemon(dir.path());
    let mut client = daemon.client();
    client.send_raw(Operation::Status, &[]).unwrap();
    assert!(matches!(client.status(), Err(ClientError::Protocol(_))));
    client.recv().unwrap();
    client.status().unwrap();
}

#[test]
fn batched_creates_split_pipeline_and_reindex() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = daemon(dir.path());
    let mut client = daemon.client();
    client.create_accounts(&[account(1), account(2)]).unwrap();
    let n = 2 * EVENTS_PER_REQUEST_MAX + 100;
    let mut transfers: Vec<Transfer> =
        (0..n).map(|i| transfer(1000 + i as u128, 1, 2, 1)).collect();
    // Failures in the second and third chunk, at known global indexes.
    let bad = [EVENTS_PER_REQUEST_MAX + 5, 2 * EVENTS_PER_REQUEST_MAX + 99];
    for &i in &bad {
        transfers[i].credit_account_id = 77;
    }
    let results = client.create_transfers_batched(&transfers).unwrap();
    assert_eq!(
        results,
        bad.iter()
            .map(|&i| CreateResult { index: i as u32, result: ResultCode::CreditAccountNotFound })
            .collect::<Vec<_>>()
    );
    // Three requests, each at most EVENTS_PER_REQUEST_MAX events.
    assert_eq!(
        daemon.metric("ledgerd_requests_total{operation=\"create_transfers\",status=\"ok\"}"),
        3
    );
    assert_eq!(client.lookup_accounts(&[2]).unwrap()[0].credits_posted, (n - 2) as u128);
}

const TOKEN: &[u8] = b"protocol-test-token-0123456789abcdef";

#[test]
fn auth_token_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    common::write_token_file(&token_file, TOKEN);
    let daemon = TestDaemon::start_with_token(&dir.path().join("data"), &token_file, TOKEN);
    assert!(matches!(
        Client::connect(daemon.addr, None),
        Err(ClientError::Status(Status::AuthFailed))
    ));
    assert!(matches!(
        Client::connect(daemon.addr, Some(b"wrong")),
        Err(ClientError::Status(Status::AuthFailed))
    ));
    let mut client = Client::connect(daemon.addr, Some(TOKEN)).unwrap();
    client.status().unwrap();
    assert!(matches!(
        Client::connect(daemon.addr, Some(&[b'x'; 300])),
        Err(ClientError::Protocol(_))
    ));
    assert_eq!(daemon.metric("ledgerd_auth_failures_total"), 2);
}

// ---- byte by byte: what docs/protocol.md §3 and §5 promise ----

/// Every refusal that closes the connection echoes the request's operation and id, and then
/// the connection is closed.
#[test]
fn closing_refusals_echo_the_operation_and_request_id() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    common::write_token_file(&token_file, TOKEN);
    let daemon = TestDaemon::start_with_token(&dir.path().join("data"), &token_file, TOKEN);
    let lookup = Operation::LookupAccounts as u16;
    let good = frame(lookup, 0x77, &[1; 16]);
    let mutate = |at: usize, value: u8| {
        let mut f = good.clone();
        f[at] = value;
        f
    };
    let mut oversize = good.clone();
    oversize[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
    let mut bad_body = good.clone();
    let last = bad_body.len() - 1;
    bad_body[last] ^= 0xff;
    let mut with_status = good.clone();
    with_status[8] = 1;
    let crc = checksum(with_status[..64].try_into().unwrap(), &with_status[64..]);
    with_status[24..28].copy_from_slice(&crc.to_le_bytes());
    let cases: [(&str, Vec<u8>, Status); 6] = [
        ("bad magic", mutate(0, b'X'), Status::BadMagic),
        ("request status", with_status, Status::InvalidHeader),
        ("version", mutate(4, 9), Status::UnsupportedVersion),
        ("reserved", mutate(40, 1), Status::InvalidHeader),
        ("oversize", oversize, Status::BodyTooLarge),
        ("checksum", bad_body, Status::BadChecksum),
    ];
    for (name, bytes, expected) in cases {
        let mut s = wire::greeted(daemon.addr, Some(TOKEN));
        s.write_all(&bytes).unwrap();
        assert_eq!(reply(&mut s), (lookup, expected, 0x77), "{name}");
        assert!(closed(&mut s), "{name}: connection left open");
    }
    // Before hello: a request, and an unknown operation, get hello_required (echoed).
    for op in [lookup, 999] {
        let mut s = TcpStream::connect(daemon.addr).unwrap();
        s.write_all(&frame(op, 5, &[1; 16])).unwrap();
        assert_eq!(reply(&mut s), (op, Status::HelloRequired, 5));
        assert!(closed(&mut s));
    }
    // A wrong token.
    let mut s = TcpStream::connect(daemon.addr).unwrap();
    s.write_all(&hello_frame(9, Some(b"wrong-token"))).unwrap();
    assert_eq!(reply(&mut s), (Operation::Hello as u16, Status::AuthFailed, 9));
    assert!(closed(&mut s));
}

/// A refused hello always closes the connection, whatever the reason.
#[test]
fn refused_hellos_close_the_connection() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = TestDaemon::start(dir.path());
    let hello = Operation::Hello as u16;
    let mut bad_version = hello_body(None);
    bad_version[0] = 9;
    let mut bad_padding = hello_body(None);
    bad_padding[200] = 1;
    let cases: [(&str, Vec<u8>, Status); 4] = [
        ("short body", vec![0; 10], Status::BodyLengthInvalid),
        ("1 MiB body", vec![0; FRAME_BODY_MAX], Status::BodyLengthInvalid),
        ("version", bad_version, Status::UnsupportedVersion),
        ("padding", bad_padding, Status::InvalidBody),
    ];
    for (name, body, expected) in cases {
        let mut s = TcpStream::connect(daemon.addr).unwrap();
        // The 1 MiB body may be refused (and the socket closed) before it is all sent.
        let _ = s.write_all(&frame(hello, 3, &body));
        assert_eq!(reply(&mut s), (hello, expected, 3), "{name}");
        assert!(closed(&mut s), "{name}: connection left open");
    }
}

/// A second hello gets `hello_repeated` and the connection closes; when it follows pipelined
/// requests, they are answered first.
#[test]
fn a_second_hello_is_refused_and_closes() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = TestDaemon::start(dir.path());
    let hello = Operation::Hello as u16;
    let mut s = wire::greeted(daemon.addr, None);
    s.write_all(&hello_frame(2, None)).unwrap();
    assert_eq!(reply(&mut s), (hello, Status::HelloRepeated, 2));
    assert!(closed(&mut s));

    let mut s = wire::greeted(daemon.addr, None);
    let mut bytes = frame(Operation::Status as u16, 3, &[]);
    bytes.extend(hello_frame(4, None));
    bytes.extend(frame(Operation::Status as u16, 5, &[]));
    s.write_all(&bytes).unwrap();
    let (h, body) = wire::read_frame(&mut s).unwrap();
    assert_eq!((h.request_id, h.status, body.len()), (3, Status::Ok as u16, StatusReply::SIZE));
    assert_eq!(reply(&mut s), (hello, Status::HelloRepeated, 4));
    assert!(closed(&mut s), "the request after the second hello was answered");
}

/// After hello, an unknown operation keeps the connection open.
#[test]
fn unknown_operation_after_hello_keeps_the_connection() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = TestDaemon::start(dir.path());
    let mut s = wire::greeted(daemon.addr, None);
    s.write_all(&frame(999, 2, &[])).unwrap();
    assert_eq!(reply(&mut s), (999, Status::UnknownOperation, 2));
    s.write_all(&frame(Operation::Status as u16, 3, &[])).unwrap();
    assert_eq!(reply(&mut s), (Operation::Status as u16, Status::Ok, 3));
}

/// SIGTERM: requests already taken are finished and answered `ok`; the next one gets
/// `shutting_down` and the connection closes; nothing answered `shutting_down` was applied.
#[test]
fn shutdown_answers_every_request_it_took_and_refuses_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = TestDaemon::start_with(dir.path(), &["--in-flight-max", "1"]);
    let mut c = daemon.client();
    assert!(c.create_accounts(&[account(1), account(2)]).unwrap().is_empty());
    drop(c);
    let mut s = wire::greeted(daemon.addr, None);
    const REQUESTS: u64 = 2000;
    let mut bytes = Vec::new();
    for i in 0..REQUESTS {
        let t = transfer(1000 + i as u128, 1, 2, 1);
        bytes.extend(frame(Operation::CreateTransfers as u16, 10 + i, &t.to_bytes()));
    }
    // Written by another thread: the daemon reads them as its window of one allows.
    let mut writer_half = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = writer_half.write_all(&bytes);
    });
    // Wait until the daemon has answered a few (it is serving), then stop it.
    let mut answered = Vec::new();
    for _ in 0..3 {
        answered.push(reply(&mut s));
    }
    daemon.sigterm();
    let refused = loop {
        let Some((h, _)) = wire::read_frame(&mut s) else {
            panic!("EOF after {} replies, without shutting_down", answered.len())
        };
        let status = Status::from_u16(h.status).unwrap();
        if status == Status::ShuttingDown {
            break h.request_id;
        }
        answered.push((h.operation, status, h.request_id));
    };
    assert!(closed(&mut s));
    writer.join().unwrap();
    let ok = answered.len() as u64;
    assert!(ok < REQUESTS, "every request was answered before the shutdown");
    for (i, (op, status, id)) in answered.iter().enumerate() {
        assert_eq!(
            (*op, *status, *id),
            (Operation::CreateTransfers as u16, Status::Ok, 10 + i as u64)
        );
    }
    assert_eq!(refused, 10 + ok, "shutting_down answers the first request not taken");
    assert!(daemon.stop().success());
    daemon.restart();
    let mut c = daemon.client();
    assert_eq!(c.status().unwrap().transfers, ok, "exactly the answered transfers exist");
    eprintln!("shutdown: {ok} of {REQUESTS} pipelined requests answered ok, the next refused");
}
