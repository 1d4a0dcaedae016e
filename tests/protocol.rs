//! The wire protocol from the outside: the spec document agrees with the code, decoders
//! never panic on arbitrary bytes, and the client works against a fake daemon over loopback.

#[path = "fake_server/mod.rs"]
mod fake_server;

use std::io::{Read, Write};
use std::net::TcpStream;

use fake_server::{Config, FakeServer};
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
        let st = Status::from_u16(status % 18).unwrap();
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

// ---- client against the fake daemon ----

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

#[test]
fn typed_calls_round_trip() {
    let server = FakeServer::start();
    let mut client = Client::connect(server.addr, None).unwrap();
    assert_eq!(client.server_limits().requests_in_flight_max, 8);
    assert_eq!(
        client.create_accounts(&[account(1), account(2), account(0)]).unwrap(),
        vec![CreateResult { index: 2, result: ResultCode::IdMustNotBeZero }]
    );
    assert_eq!(
        client.create_accounts(&[account(1)]).unwrap(),
        vec![CreateResult { index: 0, result: ResultCode::Exists }]
    );
    let results =
        client.create_transfers(&[transfer(10, 1, 2, u128::MAX), transfer(11, 1, 9, 1)]).unwrap();
    assert_eq!(results, vec![CreateResult { index: 1, result: ResultCode::CreditAccountNotFound }]);
    let accounts = client.lookup_accounts(&[2, 7, 1]).unwrap();
    assert_eq!(accounts.iter().map(|a| a.id).collect::<Vec<_>>(), vec![2, 1]);
    assert_eq!(accounts[0].credits_posted, u128::MAX);
    assert_eq!(client.lookup_transfers(&[10]).unwrap()[0].amount, u128::MAX);
    assert!(client
        .set_account_limits(&[AccountLimit { account_id: 1, limit: 5, ..Default::default() }])
        .unwrap()
        .is_empty());
    assert_eq!(client.lookup_account_limits(&[1]).unwrap()[0].limit, 5);
    let filter = AccountFilter {
        account_id: 1,
        limit: 10,
        flags: AccountFilterFlags::DEBITS,
        ..Default::default()
    };
    assert_eq!(client.get_account_transfers(&filter).unwrap().len(), 1);
    assert!(client.get_account_balances(&filter).unwrap().is_empty());
    let events = client
        .change_events(&ChangeEventsRequest { from_sequence: 1, limit: 10, from_index: 0 })
        .unwrap();
    assert!(events.events.is_empty());
    let status = client.status().unwrap();
    assert_eq!((status.accounts, status.transfers, status.state_hash), (2, 1, 0xabc));
}

#[test]
fn invalid_requests_are_refused_before_sending() {
    let server = FakeServer::start();
    let mut client = Client::connect(server.addr, None).unwrap();
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
    // The connection is still usable.
    client.status().unwrap();
    assert!(server
        .ledger
        .lock()
        .unwrap()
        .requests
        .iter()
        .all(|(op, _)| *op == Operation::Status as u16));
}

#[test]
fn pipelined_replies_come_back_in_request_order() {
    let server = FakeServer::start();
    let mut client = Client::connect(server.addr, None).unwrap();
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
    let server = FakeServer::start();
    let mut client = Client::connect(server.addr, None).unwrap();
    client.send_raw(Operation::Status, &[]).unwrap();
    assert!(matches!(client.status(), Err(ClientError::Protocol(_))));
    client.recv().unwrap();
    client.status().unwrap();
}

#[test]
fn batched_creates_split_pipeline_and_reindex() {
    let server = FakeServer::start();
    let mut client = Client::connect(server.addr, None).unwrap();
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
    let ledger = server.ledger.lock().unwrap();
    let sizes: Vec<usize> = ledger
        .requests
        .iter()
        .filter(|(op, _)| *op == Operation::CreateTransfers as u16)
        .map(|(_, n)| *n)
        .collect();
    assert_eq!(sizes, vec![EVENTS_PER_REQUEST_MAX, EVENTS_PER_REQUEST_MAX, 100]);
    assert_eq!(ledger.accounts[&2].credits_posted, (n - 2) as u128);
}

#[test]
fn auth_token_is_checked() {
    let server = FakeServer::start_with(Config {
        token: Some(b"s3cret".to_vec()),
        requests_in_flight_max: 4,
    });
    assert!(matches!(
        Client::connect(server.addr, None),
        Err(ClientError::Status(Status::AuthFailed))
    ));
    assert!(matches!(
        Client::connect(server.addr, Some(b"wrong")),
        Err(ClientError::Status(Status::AuthFailed))
    ));
    let mut client = Client::connect(server.addr, Some(b"s3cret")).unwrap();
    client.status().unwrap();
    assert!(matches!(
        Client::connect(server.addr, Some(&[b'x'; 300])),
        Err(ClientError::Protocol(_))
    ));
}

fn read_reply(stream: &mut TcpStream) -> (Header, Vec<u8>) {
    let mut head = [0u8; HEADER_SIZE];
    stream.read_exact(&mut head).unwrap();
    let h = Header::decode(&head).unwrap();
    let mut body = vec![0; h.body_length as usize];
    stream.read_exact(&mut body).unwrap();
    assert!(verify_checksum(&head, &body));
    (h, body)
}

fn closed(stream: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(stream.read(&mut byte), Ok(0) | Err(_))
}

#[test]
fn raw_framing_errors_get_a_status_and_close_where_the_stream_is_lost() {
    let server = FakeServer::start();
    // No hello first.
    let mut s = TcpStream::connect(server.addr).unwrap();
    let mut out = Vec::new();
    encode_frame(&mut out, Operation::Status, Status::Ok, 5, &[]);
    s.write_all(&out).unwrap();
    let (h, _) = read_reply(&mut s);
    assert_eq!((h.status, h.request_id), (Status::HelloRequired as u16, 5));
    assert!(closed(&mut s));

    // Bad magic: answered with the raw request id, then closed.
    let mut s = TcpStream::connect(server.addr).unwrap();
    let mut bad = out.clone();
    bad[0] = b'X';
    s.write_all(&bad).unwrap();
    let (h, _) = read_reply(&mut s);
    assert_eq!((h.status, h.request_id), (Status::BadMagic as u16, 5));
    assert!(closed(&mut s));

    // After hello: unknown operation keeps the connection, bad checksum closes it.
    let mut s = TcpStream::connect(server.addr).unwrap();
    let mut hello = Vec::new();
    HelloRequest::new(None).encode(&mut hello);
    out.clear();
    encode_frame(&mut out, Operation::Hello, Status::Ok, 1, &hello);
    s.write_all(&out).unwrap();
    let (h, body) = read_reply(&mut s);
    assert_eq!(h.status, Status::Ok as u16);
    assert_eq!(HelloReply::decode(&body).unwrap().version, PROTOCOL_VERSION);
    out.clear();
    encode_frame(&mut out, 99u16, Status::Ok, 2, &[]);
    s.write_all(&out).unwrap();
    assert_eq!(read_reply(&mut s).0.status, Status::UnknownOperation as u16);
    out.clear();
    encode_frame(&mut out, Operation::Hello, Status::Ok, 3, &hello);
    s.write_all(&out).unwrap();
    assert_eq!(read_reply(&mut s).0.status, Status::HelloRepeated as u16);
    assert!(closed(&mut s));

    let mut s = TcpStream::connect(server.addr).unwrap();
    out.clear();
    encode_frame(&mut out, Operation::Hello, Status::Ok, 1, &hello);
    s.write_all(&out).unwrap();
    read_reply(&mut s);
    out.clear();
    encode_frame(&mut out, Operation::LookupAccounts, Status::Ok, 4, &[1; 16]);
    let last = out.len() - 1;
    out[last] ^= 0xff;
    s.write_all(&out).unwrap();
    assert_eq!(read_reply(&mut s).0.status, Status::BadChecksum as u16);
    assert!(closed(&mut s));
}
