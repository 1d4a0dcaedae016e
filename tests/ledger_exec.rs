//! The `ledger` binary against the daemon on loopback: `exec` (JSON lines in, JSON lines
//! out, in order, exact integers) and the commands for people (tables, exit codes).

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use common::TestDaemon;

/// A daemon on a fresh directory (kept alive by the returned guard).
fn start() -> (TestDaemon, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    (TestDaemon::start(dir.path()), dir)
}

fn ledger(server: &TestDaemon, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ledger"))
        .arg("--addr")
        .arg(server.addr.to_string())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ledger runs");
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

fn lines(out: &Output) -> Vec<String> {
    String::from_utf8(out.stdout.clone()).unwrap().lines().map(String::from).collect()
}

#[test]
fn exec_answers_every_line_in_order_with_exact_integers() {
    let (server, _dir) = start();
    let max = u128::MAX;
    let input = format!(
        r#"{{"op":"create_accounts","accounts":[{{"id":1,"ledger":1,"code":1,"flags":["history"]}},{{"id":2,"ledger":1,"code":1,"flags":["debits_must_not_exceed_credits"]}},{{"id":0,"ledger":1,"code":1}}]}}
this is not json
{{"op":"create_transfers","transfers":[{{"id":10,"debit_account_id":1,"credit_account_id":2,"amount":{max},"ledger":1,"code":1}}]}}

{{"op":"lookup_accounts","ids":[2,99]}}
{{"op":"lookup_transfers","ids":[10]}}
{{"op":"create_accounts","accounts":[{{"id":3,"colour":"red"}}]}}
{{"op":"get_account_transfers","account_id":1,"limit":10}}
{{"op":"set_account_limits","limits":[{{"account_id":2,"limit":5}},{{"account_id":42,"limit":5}}]}}
{{"op":"lookup_account_limits","ids":[2]}}
{{"op":"status"}}
{{"op":"create_accounts","accounts":[]}}
"#
    );
    let out = ledger(&server, &["exec"], &input);
    let got = lines(&out);
    assert_eq!(got.len(), 11, "one line per non-blank input line: {got:#?}");
    assert_eq!(
        got[0],
        r#"{"results":[{"index":0,"result":"ok"},{"index":1,"result":"ok"},{"index":2,"result":"id_must_not_be_zero"}]}"#
    );
    assert!(got[1].starts_with(r#"{"error":"#), "{}", got[1]);
    assert_eq!(got[2], r#"{"results":[{"index":0,"result":"ok"}]}"#);
    assert!(got[3].starts_with(r#"{"accounts":[{"id":2,"#), "{}", got[3]);
    assert!(got[3].contains(&format!(r#""credits_posted":{max}"#)), "{}", got[3]);
    assert!(!got[3].contains(r#""id":99"#));
    assert!(got[4].contains(&format!(r#""amount":{max}"#)), "{}", got[4]);
    assert!(got[5].contains("colour"), "{}", got[5]);
    assert!(got[6].starts_with(r#"{"transfers":[{"id":10,"#), "{}", got[6]);
    assert_eq!(
        got[7],
        r#"{"results":[{"index":0,"result":"ok"},{"index":1,"result":"account_not_found"}]}"#
    );
    assert!(got[8].starts_with(r#"{"limits":[{"account_id":2,"limit":5,"#), "{}", got[8]);
    let status: serde_json::Value = serde_json::from_str(&got[9]).unwrap();
    let hash = status["state_hash"].as_str().unwrap();
    assert!(hash.len() == 32 && hash.bytes().all(|b| b.is_ascii_hexdigit()), "{hash}");
    // Three requests changed the ledger: accounts, the transfer, the limit.
    assert_eq!(status["sequence"].as_u64(), Some(3));
    assert_eq!(got[10], r#"{"error":"A batch operation with no records.","status":"empty_batch"}"#);
    assert_eq!(out.status.code(), Some(1), "some lines were errors");
}

#[test]
fn exec_pipelines_many_lines() {
    let (server, _dir) = start();
    let mut input = String::from(
        "{\"op\":\"create_accounts\",\"accounts\":[{\"id\":1,\"ledger\":1,\"code\":1},{\"id\":2,\"ledger\":1,\"code\":1}]}\n",
    );
    for i in 0..500 {
        input.push_str(&format!(
            "{{\"op\":\"create_transfers\",\"transfers\":[{{\"id\":{},\"debit_account_id\":1,\"credit_account_id\":2,\"amount\":1,\"ledger\":1,\"code\":1}}]}}\n",
            100 + i
        ));
    }
    input.push_str("{\"op\":\"lookup_accounts\",\"ids\":[2]}\n");
    let out = ledger(&server, &["exec"], &input);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let got = lines(&out);
    assert_eq!(got.len(), 502);
    assert!(got[1..501].iter().all(|l| l == r#"{"results":[{"index":0,"result":"ok"}]}"#));
    assert!(got[501].contains(r#""credits_posted":500"#), "{}", got[501]);
}

#[test]
fn commands_print_tables_and_set_exit_codes() {
    let (server, _dir) = start();
    let ok = ledger(
        &server,
        &["create-account", "--id", "1", "--ledger", "1", "--code", "1", "--flags", "history"],
        "",
    );
    assert_eq!(ok.status.code(), Some(0));
    assert_eq!(lines(&ok), vec!["index  result", "0      ok"]);
    let again =
        ledger(&server, &["create-account", "--id", "1", "--ledger", "1", "--code", "1"], "");
    assert_eq!(again.status.code(), Some(1), "a failed event exits 1");
    assert!(lines(&again)[1].contains("exists_with_different_flags"));
    ledger(&server, &["create-account", "--id", "2", "--ledger", "1", "--code", "1"], "");
    let t = ledger(
        &server,
        &[
            "transfer",
            "--id",
            "7",
            "--from",
            "1",
            "--to",
            "2",
            "--amount",
            "340282366920938463463374607431768211455",
            "--ledger",
            "1",
            "--code",
            "1",
        ],
        "",
    );
    assert_eq!(t.status.code(), Some(0));
    let look = ledger(&server, &["lookup-account", "2", "5"], "");
    assert_eq!(look.status.code(), Some(1), "a missing id exits 1");
    let table = lines(&look);
    assert!(table[0].starts_with("id  ledger  code"), "{table:?}");
    assert!(table[1].contains("340282366920938463463374607431768211455"));
    assert!(String::from_utf8_lossy(&look.stderr).contains("5: not found"));
    let json = ledger(&server, &["--json", "lookup-transfer", "7"], "");
    assert_eq!(json.status.code(), Some(0));
    assert!(lines(&json)[0].starts_with(r#"{"transfers":[{"id":7,"#));
    let status = ledger(&server, &["status"], "");
    assert!(lines(&status).iter().any(|l| l.starts_with("state_hash")), "{:?}", lines(&status));
    let bad_flag = ledger(
        &server,
        &["create-account", "--id", "3", "--ledger", "1", "--code", "1", "--flags", "bogus"],
        "",
    );
    assert_eq!(bad_flag.status.code(), Some(2));
    let usage = ledger(&server, &["transfer", "--id", "1"], "");
    assert_eq!(usage.status.code(), Some(2));
}

#[test]
fn connection_failure_exits_2() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let out = Command::new(env!("CARGO_BIN_EXE_ledger"))
        .args(["--addr", &addr.to_string(), "status"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("connecting to"));
}
