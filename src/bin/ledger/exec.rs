//! The `ledger exec` loop: one JSON operation per input line, one JSON result per output line,
//! in order, pipelined. Records and replies are mapped to JSON by `ledgerd_proto::json`; this
//! module parses request lines and drives the client.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, Write};

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};

use ledgerd_client::{Client, ClientError, Reply};
use ledgerd_proto::json::*;
use ledgerd_proto::protocol::{
    decode_create_results, decode_records, encode_ids, encode_records, ChangeEventsReply,
    ChangeEventsRequest, Operation, Status, StatusReply, CHANGE_EVENTS_PER_REPLY_MAX,
};
use ledgerd_proto::types::{
    Account, AccountBalance, AccountFilter, AccountFilterFlags, AccountLimit, Transfer,
    EVENTS_PER_REQUEST_MAX,
};

// ---- exec requests ----

/// One parsed `ledger exec` line: the operation and its encoded body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecRequest {
    pub operation: Operation,
    pub body: Vec<u8>,
    /// Events in the request (to expand create results to one per event).
    pub event_count: usize,
}

#[derive(Deserialize)]
struct OpOnly {
    op: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateAccountsLine {
    #[allow(dead_code)]
    op: IgnoredAny,
    accounts: Vec<AccountJson>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateTransfersLine {
    #[allow(dead_code)]
    op: IgnoredAny,
    transfers: Vec<TransferJson>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetLimitsLine {
    #[allow(dead_code)]
    op: IgnoredAny,
    limits: Vec<AccountLimitJson>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IdsLine {
    #[allow(dead_code)]
    op: IgnoredAny,
    #[serde(deserialize_with = "de_ids")]
    ids: Vec<u128>,
}

/// A filter query; `limit` defaults to the maximum and `flags` to `["debits","credits"]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FilterLine {
    #[allow(dead_code)]
    op: IgnoredAny,
    #[serde(deserialize_with = "de_u128")]
    account_id: u128,
    #[serde(default)]
    timestamp_min: u64,
    #[serde(default)]
    timestamp_max: u64,
    limit: Option<u32>,
    flags: Option<FlagsJson>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangeEventsLine {
    #[allow(dead_code)]
    op: IgnoredAny,
    #[serde(default)]
    from_sequence: u64,
    #[serde(default)]
    from_index: u32,
    limit: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusLine {
    #[allow(dead_code)]
    op: IgnoredAny,
}

fn from_line<'a, T: Deserialize<'a>>(line: &'a str) -> Result<T, String> {
    serde_json::from_str(line).map_err(|e| e.to_string())
}

impl ExecRequest {
    /// Parses one input line. The error is the message for `{"error": ...}`.
    pub fn parse(line: &str) -> Result<ExecRequest, String> {
        let op: OpOnly = from_line(line)?;
        let operation = Operation::from_name(&op.op)
            .filter(|o| *o != Operation::Hello)
            .ok_or_else(|| format!("unknown op {:?}", op.op))?;
        let mut body = Vec::new();
        let event_count = match operation {
            Operation::CreateAccounts => {
                let l: CreateAccountsLine = from_line(line)?;
                let records = l
                    .accounts
                    .iter()
                    .map(AccountJson::to_account)
                    .collect::<Result<Vec<_>, _>>()?;
                encode_records(&mut body, &records);
                records.len()
            }
            Operation::CreateTransfers => {
                let l: CreateTransfersLine = from_line(line)?;
                let records = l
                    .transfers
                    .iter()
                    .map(TransferJson::to_transfer)
                    .collect::<Result<Vec<_>, _>>()?;
                encode_records(&mut body, &records);
                records.len()
            }
            Operation::SetAccountLimits => {
                let l: SetLimitsLine = from_line(line)?;
                let records: Vec<AccountLimit> =
                    l.limits.iter().map(AccountLimitJson::to_limit).collect();
                encode_records(&mut body, &records);
                records.len()
            }
            Operation::LookupAccounts
            | Operation::LookupTransfers
            | Operation::LookupAccountLimits => {
                let l: IdsLine = from_line(line)?;
                encode_ids(&mut body, &l.ids);
                l.ids.len()
            }
            Operation::GetAccountTransfers | Operation::GetAccountBalances => {
                let l: FilterLine = from_line(line)?;
                let flags = match &l.flags {
                    Some(f) => f.to_bits(&AccountFilterFlags::NAMES)?,
                    None => AccountFilterFlags::DEBITS | AccountFilterFlags::CREDITS,
                };
                let filter = AccountFilter {
                    account_id: l.account_id,
                    timestamp_min: l.timestamp_min,
                    timestamp_max: l.timestamp_max,
                    limit: l.limit.unwrap_or(EVENTS_PER_REQUEST_MAX as u32),
                    flags,
                    reserved: [0; 24],
                };
                encode_records(&mut body, std::slice::from_ref(&filter));
                1
            }
            Operation::ChangeEvents => {
                let l: ChangeEventsLine = from_line(line)?;
                ChangeEventsRequest {
                    from_sequence: l.from_sequence,
                    from_index: l.from_index,
                    limit: l.limit.unwrap_or(CHANGE_EVENTS_PER_REPLY_MAX as u32),
                }
                .encode(&mut body);
                1
            }
            Operation::Status => {
                let _: StatusLine = from_line(line)?;
                0
            }
            Operation::Hello => unreachable!("filtered above"),
        };
        Ok(ExecRequest { operation, body, event_count })
    }
}

/// Formats an `ok` reply body of `operation` as one JSON line.
pub fn format_reply(
    operation: Operation,
    event_count: usize,
    body: &[u8],
) -> Result<String, String> {
    fn records<R: ledgerd_proto::protocol::Record>(body: &[u8]) -> Result<Vec<R>, String> {
        let mut out = Vec::new();
        decode_records(body, &mut out)?;
        Ok(out)
    }
    #[derive(Serialize)]
    struct Results {
        results: Vec<CreateResultJson>,
    }
    #[derive(Serialize)]
    struct Accounts {
        accounts: Vec<AccountJson>,
    }
    #[derive(Serialize)]
    struct Transfers {
        transfers: Vec<TransferJson>,
    }
    #[derive(Serialize)]
    struct Limits {
        limits: Vec<AccountLimitJson>,
    }
    #[derive(Serialize)]
    struct Balances {
        balances: Vec<AccountBalanceJson>,
    }
    let json = match operation {
        Operation::CreateAccounts | Operation::CreateTransfers | Operation::SetAccountLimits => {
            let mut failed = Vec::new();
            decode_create_results(body, event_count, &mut failed)?;
            serde_json::to_string(&Results { results: expand_results(event_count, &failed) })
        }
        Operation::LookupAccounts => serde_json::to_string(&Accounts {
            accounts: records::<Account>(body)?.iter().map(AccountJson::from_account).collect(),
        }),
        Operation::LookupTransfers | Operation::GetAccountTransfers => {
            serde_json::to_string(&Transfers {
                transfers: records::<Transfer>(body)?
                    .iter()
                    .map(TransferJson::from_transfer)
                    .collect(),
            })
        }
        Operation::LookupAccountLimits => serde_json::to_string(&Limits {
            limits: records::<AccountLimit>(body)?
                .iter()
                .map(AccountLimitJson::from_limit)
                .collect(),
        }),
        Operation::GetAccountBalances => serde_json::to_string(&Balances {
            balances: records::<AccountBalance>(body)?
                .iter()
                .map(AccountBalanceJson::from_balance)
                .collect(),
        }),
        Operation::ChangeEvents => {
            let reply =
                ChangeEventsReply::decode(body).map_err(|s| format!("change_events reply: {s}"))?;
            serde_json::to_string(&ChangeEventsJson::from_reply(&reply))
        }
        Operation::Status => {
            let reply = StatusReply::decode(body).map_err(|s| format!("status reply: {s}"))?;
            serde_json::to_string(&StatusJson::from_status(&reply))
        }
        Operation::Hello => return Err("hello is not an exec operation".into()),
    };
    json.map_err(|e| e.to_string())
}

// ---- exec loop ----

/// Lines of input buffered between the stdin reader and the exec loop.
const EXEC_INPUT_QUEUE_MAX: usize = 1024;
/// Most exec requests in flight at once (also bounded by the daemon's hello).
const EXEC_IN_FLIGHT_MAX: usize = 64;

/// What `run_exec` did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExecSummary {
    pub lines: u64,
    /// Lines answered with `{"error": ...}`.
    pub errors: u64,
}

enum Slot {
    Done(String),
    Waiting { request_id: u64, operation: Operation, event_count: usize },
}

/// Runs `ledger exec`: reads one JSON operation per line from `input`, writes one JSON line
/// per input line to `output`, in input order. Requests are pipelined while more input is
/// already available; output is flushed whenever the loop would wait. Blank lines are skipped.
/// Returns an error only when the connection fails (the output so far is written).
pub fn run_exec<R, W>(
    client: &mut Client,
    input: R,
    mut output: W,
) -> Result<ExecSummary, ClientError>
where
    R: BufRead + Send,
    W: Write,
{
    use std::sync::mpsc::{sync_channel, TryRecvError};
    let window =
        (client.server_limits().requests_in_flight_max as usize).clamp(1, EXEC_IN_FLIGHT_MAX);
    let (tx, rx) = sync_channel::<std::io::Result<String>>(EXEC_INPUT_QUEUE_MAX);
    std::thread::scope(|scope| {
        scope.spawn(move || {
            for line in input.lines() {
                let stop = line.is_err();
                if tx.send(line).is_err() || stop {
                    break;
                }
            }
        });
        let mut summary = ExecSummary::default();
        let mut queue: VecDeque<Slot> = VecDeque::new();
        let mut early: HashMap<u64, Reply> = HashMap::new();
        let mut input_open = true;
        loop {
            // Write every answered line at the head of the queue.
            while let Some(slot) = queue.front() {
                let line = match slot {
                    Slot::Done(line) => line.clone(),
                    Slot::Waiting { request_id, operation, event_count } => {
                        let Some(reply) = early.remove(request_id) else { break };
                        reply_line(&reply, *operation, *event_count)
                    }
                };
                if line.starts_with("{\"error\"") {
                    summary.errors += 1;
                }
                writeln!(output, "{line}")?;
                queue.pop_front();
            }
            let waiting = queue.len();
            if !input_open && waiting == 0 {
                output.flush()?;
                return Ok(summary);
            }
            // Take more input while there is room in the window; block on input only when
            // nothing is in flight.
            let next = if !input_open || client.in_flight() >= window {
                None
            } else if waiting == 0 {
                output.flush()?;
                match rx.recv() {
                    Ok(line) => Some(line),
                    Err(_) => {
                        input_open = false;
                        None
                    }
                }
            } else {
                match rx.try_recv() {
                    Ok(line) => Some(line),
                    Err(TryRecvError::Empty) => None,
                    Err(TryRecvError::Disconnected) => {
                        input_open = false;
                        None
                    }
                }
            };
            match next {
                Some(Ok(line)) => {
                    if line.trim().is_empty() {
                        continue;
                    }
                    summary.lines += 1;
                    queue.push_back(match ExecRequest::parse(&line) {
                        Err(message) => Slot::Done(error_line(&message, None)),
                        Ok(request) => match client.send_raw(request.operation, &request.body) {
                            Ok(request_id) => Slot::Waiting {
                                request_id,
                                operation: request.operation,
                                event_count: request.event_count,
                            },
                            Err(ClientError::Status(status)) => {
                                Slot::Done(error_line(status.description(), Some(status)))
                            }
                            Err(e) => return Err(e),
                        },
                    });
                }
                Some(Err(e)) => return Err(ClientError::Io(e)),
                None => {
                    if client.in_flight() > 0 {
                        output.flush()?;
                        let reply = client.recv()?;
                        early.insert(reply.request_id, reply);
                    }
                }
            }
        }
    })
}

fn reply_line(reply: &Reply, operation: Operation, event_count: usize) -> String {
    if reply.status != Status::Ok {
        return error_line(reply.status.description(), Some(reply.status));
    }
    if reply.operation != operation as u16 {
        return error_line(
            &format!("reply operation {} to a {} request", reply.operation, operation.name()),
            None,
        );
    }
    format_reply(operation, event_count, &reply.body).unwrap_or_else(|e| error_line(&e, None))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ledgerd_proto::protocol::encode_create_result;
    use ledgerd_proto::types::{AccountFlags, CreateResult, ResultCode, TransferFlags};

    proptest::proptest! {
        #[test]
        fn records_round_trip_through_json(
            id in proptest::prelude::any::<u128>(), amount in proptest::prelude::any::<u128>(),
            u64v in proptest::prelude::any::<u64>(), u32v in proptest::prelude::any::<u32>(),
            code in proptest::prelude::any::<u16>(), flags in 0u16..64,
        ) {
            let t = Transfer {
                id, debit_account_id: amount, credit_account_id: id ^ amount, amount,
                pending_id: amount.rotate_left(7), user_data_128: id.rotate_right(3),
                user_data_64: u64v, user_data_32: u32v, timeout: u32v, ledger: u32v, code, flags,
                timestamp: u64v,
            };
            let text = serde_json::to_string(&TransferJson::from_transfer(&t)).unwrap();
            let back: TransferJson = serde_json::from_str(&text).unwrap();
            proptest::prop_assert_eq!(back.to_transfer().unwrap(), t);
            let a = Account {
                id, debits_pending: amount, debits_posted: !amount, credits_pending: id,
                credits_posted: !id, user_data_128: amount ^ id, user_data_64: u64v,
                user_data_32: u32v, reserved: u32v, ledger: u32v, code, flags: flags & 0xf,
                timestamp: u64v,
            };
            let text = serde_json::to_string(&AccountJson::from_account(&a)).unwrap();
            let back: AccountJson = serde_json::from_str(&text).unwrap();
            proptest::prop_assert_eq!(back.to_account().unwrap(), a);
        }
    }

    #[test]
    fn u128_max_round_trips_exactly() {
        let line = format!(
            r#"{{"op":"create_transfers","transfers":[{{"id":{},"amount":{},"debit_account_id":{},"credit_account_id":1}}]}}"#,
            u128::MAX,
            u128::MAX - 1,
            u128::MAX - 2
        );
        let req = ExecRequest::parse(&line).unwrap();
        assert_eq!(req.operation, Operation::CreateTransfers);
        let t = Transfer::read_from(&req.body);
        assert_eq!(t.id, u128::MAX);
        assert_eq!(t.amount, u128::MAX - 1);
        assert_eq!(t.debit_account_id, u128::MAX - 2);
        let out = serde_json::to_string(&TransferJson::from_transfer(&t)).unwrap();
        assert!(out.contains(&format!("\"id\":{}", u128::MAX)), "{out}");
        assert!(out.contains(&format!("\"amount\":{}", u128::MAX - 1)), "{out}");
        let back: TransferJson = serde_json::from_str(&out).unwrap();
        assert_eq!(back.to_transfer().unwrap(), t);
    }

    #[test]
    fn floats_negatives_and_overflow_are_refused() {
        for bad in [
            r#"{"op":"lookup_accounts","ids":[1.5]}"#,
            r#"{"op":"lookup_accounts","ids":[1e3]}"#,
            r#"{"op":"lookup_accounts","ids":[-1]}"#,
            r#"{"op":"lookup_accounts","ids":[340282366920938463463374607431768211456]}"#,
        ] {
            assert!(ExecRequest::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn flags_map_by_name() {
        let line = r#"{"op":"create_accounts","accounts":[{"id":1,"ledger":2,"code":3,"flags":["linked","history"]}]}"#;
        let req = ExecRequest::parse(line).unwrap();
        let a = Account::read_from(&req.body);
        assert_eq!(a.flags, AccountFlags::LINKED | AccountFlags::HISTORY);
        assert_eq!((a.id, a.ledger, a.code, a.user_data_64), (1, 2, 3, 0));
        let json = serde_json::to_string(&AccountJson::from_account(&a)).unwrap();
        assert!(json.contains(r#""flags":["linked","history"]"#), "{json}");
        let bad = r#"{"op":"create_accounts","accounts":[{"id":1,"flags":["pending"]}]}"#;
        assert!(ExecRequest::parse(bad).unwrap_err().contains("unknown flag"));
        let t = r#"{"op":"create_transfers","transfers":[{"id":1,"flags":["pending","balancing_credit"]}]}"#;
        let t = Transfer::read_from(&ExecRequest::parse(t).unwrap().body);
        assert_eq!(t.flags, TransferFlags::PENDING | TransferFlags::BALANCING_CREDIT);
        assert_eq!(
            parse_flag_list("debits_must_not_exceed_credits,linked", &AccountFlags::NAMES),
            Ok(3)
        );
        assert!(parse_flag_list("nope", &AccountFlags::NAMES).is_err());
        let unknown_bits = FlagsJson::from_bits(0x8001u16, &AccountFlags::NAMES);
        assert_eq!(unknown_bits, FlagsJson::Names(vec!["linked".into(), "0x8000".into()]));
    }

    #[test]
    fn unknown_fields_and_ops_are_errors() {
        assert!(ExecRequest::parse(r#"{"op":"create_accounts","accounts":[{"id":1,"colour":2}]}"#)
            .unwrap_err()
            .contains("colour"));
        assert!(ExecRequest::parse(r#"{"op":"status","extra":1}"#).is_err());
        assert!(ExecRequest::parse(r#"{"op":"hello"}"#).is_err());
        assert!(ExecRequest::parse(r#"{"op":"fly"}"#).is_err());
        assert!(ExecRequest::parse("not json").is_err());
        assert!(ExecRequest::parse(r#"{"accounts":[]}"#).is_err());
    }

    #[test]
    fn filter_and_change_events_defaults() {
        let req = ExecRequest::parse(r#"{"op":"get_account_transfers","account_id":7,"limit":5,"flags":["credits","reversed"]}"#).unwrap();
        let f = AccountFilter::read_from(&req.body);
        assert_eq!(
            (f.account_id, f.limit, f.flags),
            (7, 5, AccountFilterFlags::CREDITS | AccountFilterFlags::REVERSED)
        );
        let req = ExecRequest::parse(r#"{"op":"get_account_balances","account_id":7}"#).unwrap();
        let f = AccountFilter::read_from(&req.body);
        assert_eq!(f.limit as usize, EVENTS_PER_REQUEST_MAX);
        assert_eq!(f.flags, AccountFilterFlags::DEBITS | AccountFilterFlags::CREDITS);
        let req = ExecRequest::parse(r#"{"op":"change_events","from_sequence":3}"#).unwrap();
        assert_eq!(
            ChangeEventsRequest::decode(&req.body).unwrap(),
            ChangeEventsRequest {
                from_sequence: 3,
                from_index: 0,
                limit: CHANGE_EVENTS_PER_REPLY_MAX as u32
            }
        );
        assert_eq!(ExecRequest::parse(r#"{"op":"status"}"#).unwrap().body.len(), 0);
    }

    #[test]
    fn create_results_expand_to_every_event() {
        let mut body = Vec::new();
        encode_create_result(&mut body, &CreateResult { index: 1, result: ResultCode::Exists });
        let line = format_reply(Operation::CreateAccounts, 3, &body).unwrap();
        assert_eq!(
            line,
            r#"{"results":[{"index":0,"result":"ok"},{"index":1,"result":"exists"},{"index":2,"result":"ok"}]}"#
        );
    }

    #[test]
    fn status_hash_is_32_hex_digits() {
        let mut body = Vec::new();
        StatusReply { sequence: 5, state_hash: 0xab, ..Default::default() }.encode(&mut body);
        let line = format_reply(Operation::Status, 0, &body).unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["sequence"], 5);
        assert_eq!(v["state_hash"], format!("{:032x}", 0xab));
        assert_eq!(v["state_hash"].as_str().unwrap().len(), 32);
    }

    #[test]
    fn lookups_print_every_field() {
        let a = Account {
            id: u128::MAX - 1,
            credits_posted: u128::MAX,
            ledger: 1,
            code: 2,
            timestamp: 9,
            ..Default::default()
        };
        let mut body = Vec::new();
        encode_records(&mut body, &[a]);
        let line = format_reply(Operation::LookupAccounts, 1, &body).unwrap();
        for field in [
            "id",
            "debits_pending",
            "debits_posted",
            "credits_pending",
            "credits_posted",
            "user_data_128",
            "user_data_64",
            "user_data_32",
            "reserved",
            "ledger",
            "code",
            "flags",
            "timestamp",
        ] {
            assert!(line.contains(&format!("\"{field}\":")), "{field} in {line}");
        }
        assert!(line.contains(&format!("\"credits_posted\":{}", u128::MAX)));
        #[derive(Deserialize)]
        struct Accounts {
            accounts: Vec<AccountJson>,
        }
        let typed: Accounts = serde_json::from_str(&line).unwrap();
        assert_eq!(typed.accounts[0].to_account().unwrap(), a);
    }

    // The parser never panics, whatever a script sends (the CLI's part of the fuzz tests).
    use proptest::prelude::*;

    proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(
        if std::env::var_os("LEDGERD_TORTURE_LONG").is_some() { 7_500 } else { 150 }
    ))]
    /// Arbitrary text as a `ledger exec` line.
    #[test]
    fn exec_parser_never_panics_on_arbitrary_text(line in ".{0,400}") {
        let _ = ExecRequest::parse(&line);
    }

    /// Structured but wrong JSON: real operation names with wrong, missing, huge or negative
    /// fields, wrong types, unknown flags.
    #[test]
    fn exec_parser_never_panics_on_wrong_json(
        op in prop_oneof![
            Just("create_accounts"), Just("create_transfers"), Just("lookup_accounts"),
            Just("lookup_transfers"), Just("get_account_transfers"), Just("get_account_balances"),
            Just("set_account_limits"), Just("change_events"), Just("status"), Just("nope"),
        ],
        key in prop_oneof![
            Just("accounts"), Just("transfers"), Just("ids"), Just("filter"), Just("limits"),
            Just("from_sequence"), Just("x"),
        ],
        field in prop_oneof![
            Just("id"), Just("amount"), Just("ledger"), Just("flags"), Just("debit_account_id"),
            Just("credit_account_id"), Just("limit"), Just("timeout"), Just("code"),
        ],
        value in prop_oneof![
            Just("0".to_string()), Just("-1".to_string()), Just("1e400".to_string()),
            Just("340282366920938463463374607431768211456".to_string()),
            Just("\"340282366920938463463374607431768211455\"".to_string()),
            Just("[\"linked\",\"bogus\"]".to_string()), Just("null".to_string()),
            Just("{}".to_string()), Just("[]".to_string()), Just("\"\"".to_string()),
            any::<u64>().prop_map(|n| n.to_string()),
        ],
        count in 0usize..5,
    ) {
        let item = format!("{{\"{field}\":{value}}}");
        let items = vec![item; count].join(",");
        for line in [
            format!("{{\"op\":\"{op}\",\"{key}\":[{items}]}}"),
            format!("{{\"op\":\"{op}\",\"{key}\":{value}}}"),
            format!("{{\"op\":\"{op}\",\"{key}\":[{value}]}}"),
            format!("{{\"op\":{value}}}"),
        ] {
            let _ = ExecRequest::parse(&line);
        }
        }
    }
}
