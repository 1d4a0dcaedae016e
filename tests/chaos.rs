//! Runs `ledger-chaos crash-loop` against the built daemon: a few SIGKILLs under a mixed load,
//! each followed by the full check (nothing acknowledged lost, nothing refused present, nothing
//! applied twice, invariants, state hash = `ledger-replay`'s).
//!
//! `LEDGERD_TORTURE_LONG=1` runs the long version (100 kills); RELIABILITY.md records its
//! figures.

use std::process::Command;

fn crash_loop(kills: u32, seed: u64, extra: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_ledger-chaos"))
        .args(["crash-loop", "--kills", &kills.to_string(), "--seed", &seed.to_string()])
        .args(extra)
        .args(["--ledgerd", env!("CARGO_BIN_EXE_ledgerd")])
        .args(["--ledger-replay", env!("CARGO_BIN_EXE_ledger-replay")])
        .output()
        .expect("run ledger-chaos");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ledger-chaos failed ({}):\n{stdout}\n{stderr}", out.status);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("crash_loop: "))
        .unwrap_or_else(|| panic!("no summary line:\n{stdout}\n{stderr}"));
    assert!(line.contains(&format!("kills={kills} ")), "{line}");
    assert!(
        line.ends_with("lost=0 duplicated=0 invariant_violations=0")
            || line.contains(" lost=0 duplicated=0 invariant_violations=0"),
        "{line}"
    );
    let acked: u64 = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("acked="))
        .and_then(|n| n.parse().ok())
        .expect("acked count");
    assert!(acked > 0, "the workload acknowledged nothing: {line}");
    eprintln!("{line}");
}

#[test]
fn crash_loop_loses_nothing() {
    let long = std::env::var_os("LEDGERD_TORTURE_LONG").is_some();
    crash_loop(if long { 100 } else { 4 }, 20_240_601, &[]);
}

#[test]
fn crash_loop_with_history_on_disk_loses_nothing() {
    let long = std::env::var_os("LEDGERD_TORTURE_LONG").is_some();
    crash_loop(if long { 100 } else { 4 }, 20_261_203, &["--cold-index"]);
}
