//! The shared test vectors: `tests/vectors/frames.json` at the repository root holds one golden
//! frame for every operation (request and reply), every status and every result code and
//! change-event kind, each as bytes (hex) and as typed JSON. This test builds every frame with
//! this crate's codec (the daemon's and the Rust client's) and checks the file byte for byte;
//! the Go and Python clients check their own codecs against the same file.
//!
//! After a deliberate protocol change: `LEDGERD_BLESS=1 cargo test -p ledgerd-proto --test
//! golden_frames` rewrites the file (review the diff: an unintended change is a broken client).

use std::path::PathBuf;

use ledgerd_proto::protocol::{
    encode_create_result, encode_frame, encode_ids, encode_records, verify_checksum, ChangeEvent,
    ChangeEventKind, ChangeEventsReply, ChangeEventsRequest, Header, HelloReply, HelloRequest,
    NotLeaderReply, Operation, ReplicaRole, Status, StatusReply, CHANGE_EVENTS_PER_REPLY_MAX,
    FRAME_BODY_MAX, HEADER_SIZE, HELLO_TOKEN_MAX, PROTOCOL_VERSION, REQUESTS_IN_FLIGHT_MAX_DEFAULT,
};
use ledgerd_proto::types::{
    Account, AccountBalance, AccountFilter, AccountFilterFlags, AccountFlags, AccountLimit,
    CreateResult, ResultCode, Transfer, TransferFlags, EVENTS_PER_REQUEST_MAX,
};
use serde_json::{json, Value};

fn vectors_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/vectors/frames.json")
}

// ---- typed JSON of records: u128 and u64 as decimal strings, u32 and u16 as numbers ----

fn account_json(a: &Account) -> Value {
    json!({
        "id": a.id.to_string(),
        "debits_pending": a.debits_pending.to_string(),
        "debits_posted": a.debits_posted.to_string(),
        "credits_pending": a.credits_pending.to_string(),
        "credits_posted": a.credits_posted.to_string(),
        "user_data_128": a.user_data_128.to_string(),
        "user_data_64": a.user_data_64.to_string(),
        "user_data_32": a.user_data_32,
        "ledger": a.ledger,
        "code": a.code,
        "flags": a.flags,
        "timestamp": a.timestamp.to_string(),
    })
}

fn transfer_json(t: &Transfer) -> Value {
    json!({
        "id": t.id.to_string(),
        "debit_account_id": t.debit_account_id.to_string(),
        "credit_account_id": t.credit_account_id.to_string(),
        "amount": t.amount.to_string(),
        "pending_id": t.pending_id.to_string(),
        "user_data_128": t.user_data_128.to_string(),
        "user_data_64": t.user_data_64.to_string(),
        "user_data_32": t.user_data_32,
        "timeout": t.timeout,
        "ledger": t.ledger,
        "code": t.code,
        "flags": t.flags,
        "timestamp": t.timestamp.to_string(),
    })
}

fn limit_json(l: &AccountLimit) -> Value {
    json!({
        "account_id": l.account_id.to_string(),
        "limit": l.limit.to_string(),
        "timestamp": l.timestamp.to_string(),
    })
}

fn filter_json(f: &AccountFilter) -> Value {
    json!({
        "account_id": f.account_id.to_string(),
        "timestamp_min": f.timestamp_min.to_string(),
        "timestamp_max": f.timestamp_max.to_string(),
        "limit": f.limit,
        "flags": f.flags,
    })
}

fn balance_json(b: &AccountBalance) -> Value {
    json!({
        "debits_pending": b.debits_pending.to_string(),
        "debits_posted": b.debits_posted.to_string(),
        "credits_pending": b.credits_pending.to_string(),
        "credits_posted": b.credits_posted.to_string(),
        "timestamp": b.timestamp.to_string(),
    })
}

fn change_event_json(e: &ChangeEvent) -> Value {
    json!({
        "sequence": e.sequence.to_string(),
        "index": e.index,
        "kind": e.kind.name(),
        "timestamp": e.timestamp.to_string(),
        "transfer": transfer_json(&e.transfer),
        "debit_account": account_json(&e.debit_account),
        "credit_account": account_json(&e.credit_account),
        "limit": limit_json(&e.limit),
    })
}

fn results_json(results: &[CreateResult]) -> Value {
    let list: Vec<Value> =
        results.iter().map(|r| json!({"index": r.index, "result": r.result.name()})).collect();
    json!({ "results": list })
}

// ---- sample records: values with bytes in every position catch endianness mistakes ----

const BIG: u128 = 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210;
const TS: u64 = 1_764_000_000_123_456_789;

fn accounts() -> Vec<Account> {
    vec![
        Account { id: 1, ledger: 1, code: 10, ..Default::default() },
        Account {
            id: BIG,
            user_data_128: u128::MAX - 1,
            user_data_64: u64::MAX,
            user_data_32: 0xdead_beef,
            ledger: 0x0102_0304,
            code: 0xfffe,
            flags: AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS | AccountFlags::HISTORY,
            ..Default::default()
        },
        Account { id: 3, ledger: 1, code: 1, flags: AccountFlags::LINKED, ..Default::default() },
    ]
}

fn stored_accounts() -> Vec<Account> {
    vec![
        Account {
            id: 1,
            debits_pending: 5,
            debits_posted: u128::MAX / 3,
            credits_pending: 1 << 64,
            credits_posted: BIG,
            ledger: 1,
            code: 10,
            timestamp: TS,
            ..Default::default()
        },
        Account { timestamp: TS + 1, ..accounts()[1] },
    ]
}

fn transfers() -> Vec<Transfer> {
    vec![
        Transfer {
            id: 1000,
            debit_account_id: 1,
            credit_account_id: BIG,
            amount: 250,
            user_data_64: 7,
            ledger: 1,
            code: 1,
            ..Default::default()
        },
        Transfer {
            id: 1001,
            debit_account_id: 1,
            credit_account_id: 3,
            amount: u128::MAX,
            timeout: 60,
            ledger: 1,
            code: 2,
            flags: TransferFlags::PENDING | TransferFlags::LINKED,
            ..Default::default()
        },
        Transfer {
            id: 1002,
            pending_id: 1001,
            amount: 100,
            user_data_128: BIG,
            user_data_32: 42,
            flags: TransferFlags::POST_PENDING_TRANSFER,
            ..Default::default()
        },
        Transfer {
            id: BIG,
            debit_account_id: 3,
            credit_account_id: 1,
            amount: 1,
            ledger: 1,
            code: 3,
            flags: TransferFlags::BALANCING_DEBIT | TransferFlags::VOID_PENDING_TRANSFER,
            ..Default::default()
        },
    ]
}

fn stored_transfers() -> Vec<Transfer> {
    transfers()
        .into_iter()
        .take(2)
        .enumerate()
        .map(|(i, t)| Transfer { timestamp: TS + 10 + i as u64, ..t })
        .collect()
}

fn limits() -> Vec<AccountLimit> {
    vec![
        AccountLimit { account_id: BIG, limit: 1_000_000, timestamp: 0, reserved: [0; 24] },
        AccountLimit { account_id: 1, limit: u128::MAX, timestamp: 0, reserved: [0; 24] },
    ]
}

fn filter() -> AccountFilter {
    AccountFilter {
        account_id: BIG,
        timestamp_min: TS,
        timestamp_max: u64::MAX - 1,
        limit: 8190,
        flags: AccountFilterFlags::DEBITS
            | AccountFilterFlags::CREDITS
            | AccountFilterFlags::REVERSED,
        reserved: [0; 24],
    }
}

fn change_events() -> Vec<ChangeEvent> {
    let accounts = stored_accounts();
    let transfers = stored_transfers();
    ChangeEventKind::ALL
        .iter()
        .enumerate()
        .map(|(i, &kind)| {
            let transfer_kind =
                !matches!(kind, ChangeEventKind::AccountCreated | ChangeEventKind::LimitSet);
            ChangeEvent {
                sequence: 77 + i as u64 / 3,
                index: i as u32 % 3,
                kind,
                timestamp: TS + 100 + i as u64,
                transfer: if transfer_kind { transfers[i % 2] } else { Transfer::default() },
                debit_account: accounts[0],
                credit_account: if transfer_kind { accounts[1] } else { Account::default() },
                limit: if kind == ChangeEventKind::LimitSet {
                    AccountLimit { timestamp: TS + 100 + i as u64, ..limits()[1] }
                } else {
                    AccountLimit::default()
                },
            }
        })
        .collect()
}

// ---- frames ----

struct Frame {
    name: String,
    direction: &'static str,
    operation: Operation,
    status: Status,
    request_id: u64,
    body_json: Value,
    body: Vec<u8>,
}

fn frames() -> Vec<Frame> {
    let mut out = Vec::new();
    let mut request_id = 0x0102_0304_0506_0708u64;
    let mut push = |name: &str, direction, operation, status, body_json, body: Vec<u8>| {
        request_id = request_id.wrapping_add(0x1111);
        out.push(Frame {
            name: name.to_string(),
            direction,
            operation,
            status,
            request_id,
            body_json,
            body,
        });
    };
    let ok = Status::Ok;
    let mut b = Vec::new();

    HelloRequest::new(Some(b"s3cret-token")).encode(&mut b);
    push(
        "hello.request",
        "request",
        Operation::Hello,
        ok,
        json!({"version": PROTOCOL_VERSION, "token": "s3cret-token"}),
        std::mem::take(&mut b),
    );
    HelloRequest::new(None).encode(&mut b);
    push(
        "hello.request.no_token",
        "request",
        Operation::Hello,
        ok,
        json!({"version": PROTOCOL_VERSION, "token": ""}),
        std::mem::take(&mut b),
    );
    let hello = HelloReply::default();
    hello.encode(&mut b);
    push(
        "hello.reply",
        "reply",
        Operation::Hello,
        ok,
        json!({
            "version": hello.version,
            "requests_in_flight_max": hello.requests_in_flight_max,
            "frame_body_max": hello.frame_body_max,
            "events_per_request_max": hello.events_per_request_max,
            "change_events_per_reply_max": hello.change_events_per_reply_max,
        }),
        std::mem::take(&mut b),
    );

    // Creates.
    encode_records(&mut b, &accounts());
    let list: Vec<Value> = accounts().iter().map(account_json).collect();
    push(
        "create_accounts.request",
        "request",
        Operation::CreateAccounts,
        ok,
        json!({ "accounts": list }),
        std::mem::take(&mut b),
    );
    push(
        "create_accounts.reply.all_ok",
        "reply",
        Operation::CreateAccounts,
        ok,
        results_json(&[]),
        Vec::new(),
    );
    let failed = [
        CreateResult { index: 0, result: ResultCode::Exists },
        CreateResult { index: 2, result: ResultCode::LinkedEventChainOpen },
    ];
    failed.iter().for_each(|r| encode_create_result(&mut b, r));
    push(
        "create_accounts.reply",
        "reply",
        Operation::CreateAccounts,
        ok,
        results_json(&failed),
        std::mem::take(&mut b),
    );
    encode_records(&mut b, &transfers());
    let list: Vec<Value> = transfers().iter().map(transfer_json).collect();
    push(
        "create_transfers.request",
        "request",
        Operation::CreateTransfers,
        ok,
        json!({ "transfers": list }),
        std::mem::take(&mut b),
    );
    // Every result code but `ok` (which is never sent), in one reply.
    let every: Vec<CreateResult> = ResultCode::ALL
        .iter()
        .filter(|&&code| code != ResultCode::Ok)
        .enumerate()
        .map(|(i, &result)| CreateResult { index: 3 * i as u32 + 1, result })
        .collect();
    every.iter().for_each(|r| encode_create_result(&mut b, r));
    push(
        "create_transfers.reply.every_result_code",
        "reply",
        Operation::CreateTransfers,
        ok,
        results_json(&every),
        std::mem::take(&mut b),
    );
    encode_records(&mut b, &limits());
    let list: Vec<Value> = limits().iter().map(limit_json).collect();
    push(
        "set_account_limits.request",
        "request",
        Operation::SetAccountLimits,
        ok,
        json!({ "limits": list }),
        std::mem::take(&mut b),
    );
    let failed = [CreateResult { index: 1, result: ResultCode::AccountHasNoBalanceLimitFlag }];
    failed.iter().for_each(|r| encode_create_result(&mut b, r));
    push(
        "set_account_limits.reply",
        "reply",
        Operation::SetAccountLimits,
        ok,
        results_json(&failed),
        std::mem::take(&mut b),
    );

    // Lookups.
    let ids = [1u128, BIG, u128::MAX - 1];
    let ids_json: Vec<String> = ids.iter().map(u128::to_string).collect();
    for (operation, name) in [
        (Operation::LookupAccounts, "lookup_accounts"),
        (Operation::LookupTransfers, "lookup_transfers"),
        (Operation::LookupAccountLimits, "lookup_account_limits"),
    ] {
        encode_ids(&mut b, &ids);
        push(
            &format!("{name}.request"),
            "request",
            operation,
            ok,
            json!({ "ids": ids_json }),
            std::mem::take(&mut b),
        );
    }
    encode_records(&mut b, &stored_accounts());
    let list: Vec<Value> = stored_accounts().iter().map(account_json).collect();
    push(
        "lookup_accounts.reply",
        "reply",
        Operation::LookupAccounts,
        ok,
        json!({ "accounts": list }),
        std::mem::take(&mut b),
    );
    encode_records(&mut b, &stored_transfers());
    let list: Vec<Value> = stored_transfers().iter().map(transfer_json).collect();
    push(
        "lookup_transfers.reply",
        "reply",
        Operation::LookupTransfers,
        ok,
        json!({ "transfers": list }),
        std::mem::take(&mut b),
    );
    let stored_limits: Vec<AccountLimit> =
        limits().into_iter().map(|l| AccountLimit { timestamp: TS + 5, ..l }).collect();
    encode_records(&mut b, &stored_limits);
    let list: Vec<Value> = stored_limits.iter().map(limit_json).collect();
    push(
        "lookup_account_limits.reply",
        "reply",
        Operation::LookupAccountLimits,
        ok,
        json!({ "limits": list }),
        std::mem::take(&mut b),
    );

    // Queries.
    for (operation, name) in [
        (Operation::GetAccountTransfers, "get_account_transfers"),
        (Operation::GetAccountBalances, "get_account_balances"),
    ] {
        encode_records(&mut b, &[filter()]);
        push(
            &format!("{name}.request"),
            "request",
            operation,
            ok,
            json!({ "filter": filter_json(&filter()) }),
            std::mem::take(&mut b),
        );
    }
    encode_records(&mut b, &stored_transfers());
    let list: Vec<Value> = stored_transfers().iter().map(transfer_json).collect();
    push(
        "get_account_transfers.reply",
        "reply",
        Operation::GetAccountTransfers,
        ok,
        json!({ "transfers": list }),
        std::mem::take(&mut b),
    );
    let balances = [
        AccountBalance {
            debits_pending: 1,
            debits_posted: BIG,
            credits_pending: 3,
            credits_posted: u128::MAX,
            timestamp: TS + 10,
            reserved: [0; 56],
        },
        AccountBalance {
            debits_pending: 0,
            debits_posted: 2,
            credits_pending: 0,
            credits_posted: 4,
            timestamp: TS + 11,
            reserved: [0; 56],
        },
    ];
    encode_records(&mut b, &balances);
    let list: Vec<Value> = balances.iter().map(balance_json).collect();
    push(
        "get_account_balances.reply",
        "reply",
        Operation::GetAccountBalances,
        ok,
        json!({ "balances": list }),
        std::mem::take(&mut b),
    );

    // Change events: one of every kind.
    let request = ChangeEventsRequest { from_sequence: 77, limit: 2048, from_index: 1 };
    request.encode(&mut b);
    push(
        "change_events.request",
        "request",
        Operation::ChangeEvents,
        ok,
        json!({
            "from_sequence": request.from_sequence.to_string(),
            "limit": request.limit,
            "from_index": request.from_index,
        }),
        std::mem::take(&mut b),
    );
    let reply = ChangeEventsReply {
        next_sequence: 80,
        next_index: 0,
        head_sequence: 1 << 40,
        events: change_events(),
    };
    reply.encode(&mut b);
    let list: Vec<Value> = reply.events.iter().map(change_event_json).collect();
    push(
        "change_events.reply",
        "reply",
        Operation::ChangeEvents,
        ok,
        json!({
            "next_sequence": reply.next_sequence.to_string(),
            "next_index": reply.next_index,
            "head_sequence": reply.head_sequence.to_string(),
            "events": list,
        }),
        std::mem::take(&mut b),
    );

    // Status.
    push("status.request", "request", Operation::Status, ok, Value::Null, Vec::new());
    let status = StatusReply {
        sequence: 123_456,
        snapshot_sequence: 120_000,
        state_hash: BIG,
        accounts: 1_000_000,
        transfers: 10_000_000_000,
        pending_transfers: 17,
        failed_ids: 3,
        clock_ns: TS,
        account_limits: 2,
        uptime_ns: 3_600_000_000_000,
        connections: 12,
        role: ReplicaRole::Leader,
        replica: 1,
        term: 7,
        commit: 123_455,
        leader: 1,
    };
    status.encode(&mut b);
    push(
        "status.reply",
        "reply",
        Operation::Status,
        ok,
        json!({
            "sequence": status.sequence.to_string(),
            "snapshot_sequence": status.snapshot_sequence.to_string(),
            "state_hash": format!("{:032x}", status.state_hash),
            "accounts": status.accounts.to_string(),
            "transfers": status.transfers.to_string(),
            "pending_transfers": status.pending_transfers.to_string(),
            "failed_ids": status.failed_ids.to_string(),
            "clock_ns": status.clock_ns.to_string(),
            "account_limits": status.account_limits.to_string(),
            "uptime_ns": status.uptime_ns.to_string(),
            "connections": status.connections,
            "role": status.role as u8,
            "replica": status.replica,
            "term": status.term.to_string(),
            "commit": status.commit.to_string(),
            "leader": status.leader,
        }),
        std::mem::take(&mut b),
    );

    // Every status other than ok, as the reply to a create_transfers request: an empty body,
    // but for not_leader's leader hint.
    for &status in Status::ALL.iter().filter(|&&s| s != Status::Ok) {
        let (json, body) = if status == Status::NotLeader {
            let hint = NotLeaderReply { leader: 2 };
            hint.encode(&mut b);
            (json!({ "leader": hint.leader }), std::mem::take(&mut b))
        } else {
            (Value::Null, Vec::new())
        };
        push(
            &format!("error.{}", status.name()),
            "reply",
            Operation::CreateTransfers,
            status,
            json,
            body,
        );
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn table<T: Copy>(all: &[T], name: impl Fn(T) -> String, number: impl Fn(T) -> u64) -> Value {
    Value::Object(all.iter().map(|&x| (name(x), json!(number(x)))).collect())
}

fn flag_table<T: Copy + Into<u64>>(names: &[(&str, T)]) -> Value {
    Value::Object(names.iter().map(|&(n, bit)| (n.to_string(), json!(bit.into()))).collect())
}

fn document() -> Value {
    let frames: Vec<Value> = frames()
        .into_iter()
        .map(|f| {
            let mut bytes = Vec::new();
            encode_frame(&mut bytes, f.operation, f.status, f.request_id, &f.body);
            json!({
                "name": f.name,
                "direction": f.direction,
                "operation": f.operation.name(),
                "status": f.status.name(),
                "request_id": f.request_id.to_string(),
                "body": f.body_json,
                "hex": hex(&bytes),
            })
        })
        .collect();
    json!({
        "protocol_version": PROTOCOL_VERSION,
        "header_size": HEADER_SIZE,
        "limits": {
            "frame_body_max": FRAME_BODY_MAX,
            "events_per_request_max": EVENTS_PER_REQUEST_MAX,
            "change_events_per_reply_max": CHANGE_EVENTS_PER_REPLY_MAX,
            "hello_token_max": HELLO_TOKEN_MAX,
            "requests_in_flight_max_default": REQUESTS_IN_FLIGHT_MAX_DEFAULT,
        },
        "operations": table(Operation::ALL, |o| o.name().into(), |o| u16::from(o).into()),
        "statuses": table(Status::ALL, |s| s.name().into(), |s| u16::from(s).into()),
        "result_codes": table(ResultCode::ALL, |r| r.name().into(), |r| r as u64),
        "change_event_kinds": table(&ChangeEventKind::ALL, |k| k.name().into(), |k| k as u64),
        "account_flags": flag_table(&AccountFlags::NAMES),
        "transfer_flags": flag_table(&TransferFlags::NAMES),
        "filter_flags": flag_table(&AccountFilterFlags::NAMES),
        "frames": frames,
    })
}

#[test]
fn golden_frames_file_matches_the_codec() {
    let expected = serde_json::to_string_pretty(&document()).expect("serialize") + "\n";
    let path = vectors_path();
    if std::env::var_os("LEDGERD_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("create tests/vectors");
        std::fs::write(&path, &expected).expect("write the vectors");
    }
    let found = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (LEDGERD_BLESS=1 writes it)", path.display()));
    assert!(
        found == expected,
        "{} differs from what the codec produces: a protocol change? Rerun with LEDGERD_BLESS=1 \
         and review the diff",
        path.display()
    );
}

/// Every frame decodes back with this crate's decoders: the header fields, the checksum, and
/// that the file covers every operation (both ways), status, result code and kind.
#[test]
fn golden_frames_decode_and_cover_everything() {
    let frames = frames();
    let mut seen_ops = std::collections::BTreeSet::new();
    for f in &frames {
        let mut bytes = Vec::new();
        encode_frame(&mut bytes, f.operation, f.status, f.request_id, &f.body);
        let header_bytes: &[u8; HEADER_SIZE] = bytes[..HEADER_SIZE].try_into().expect("header");
        let header = Header::decode(header_bytes).expect("a valid header");
        assert_eq!(header.operation, u16::from(f.operation), "{}", f.name);
        assert_eq!(header.status, u16::from(f.status), "{}", f.name);
        assert_eq!(header.request_id, f.request_id, "{}", f.name);
        assert_eq!(header.body_length as usize, f.body.len(), "{}", f.name);
        assert!(verify_checksum(header_bytes, &bytes[HEADER_SIZE..]), "{}", f.name);
        if f.status == Status::Ok {
            seen_ops.insert((u16::from(f.operation), f.direction));
        }
    }
    for &op in Operation::ALL {
        for direction in ["request", "reply"] {
            assert!(seen_ops.contains(&(u16::from(op), direction)), "{} {direction}", op.name());
        }
    }
    for &status in Status::ALL.iter().filter(|&&s| s != Status::Ok) {
        let name = format!("error.{}", status.name());
        assert!(frames.iter().any(|f| f.name == name), "{name}");
    }
    let reply = ChangeEventsReply::decode(
        &frames.iter().find(|f| f.name == "change_events.reply").expect("change events").body,
    )
    .expect("decodes");
    assert_eq!(reply.events.len(), ChangeEventKind::ALL.len());
}
