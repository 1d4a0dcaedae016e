//! The Go and Python clients, their tests and their examples, run against a real daemon that
//! this file starts with the shared harness (free loopback port, temporary data directory,
//! an auth token). The client test suites read `LEDGERD_ADDR` and `LEDGERD_TOKEN`.
//!
//! These tests need `go` and `python3` with pytest on the PATH: `.ci/test` installs them where
//! they are missing. A missing tool fails the test with a message saying so.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::TestDaemon;

/// Longest any one client command may run (a Go build on a cold cache included).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(600);
const TOKEN: &[u8] = b"client-tests-token-0123456789abcdef";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn start_daemon(dir: &Path) -> TestDaemon {
    let token_file = dir.join("token");
    common::write_token_file(&token_file, TOKEN);
    TestDaemon::start_with_token(&dir.join("data"), &token_file, TOKEN)
}

fn command(program: &str, dir: &Path, daemon: &TestDaemon) -> Command {
    let mut cmd = Command::new(program);
    cmd.current_dir(dir)
        .env("LEDGERD_ADDR", daemon.addr.to_string())
        .env("LEDGERD_TOKEN", std::str::from_utf8(TOKEN).unwrap())
        .stdin(Stdio::null());
    cmd
}

fn wait_bounded(mut child: Child, what: &str) -> ExitStatus {
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what} did not finish within {COMMAND_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn run(mut cmd: Command, what: &str) {
    let child = cmd.spawn().unwrap_or_else(|e| {
        panic!("{what}: cannot start {:?}: {e} (bash .ci/test installs it)", cmd.get_program())
    });
    let status = wait_bounded(child, what);
    assert!(status.success(), "{what} failed: {status}");
}

fn go_dir() -> PathBuf {
    repo().join("clients/go")
}

#[test]
fn go_client_tests_and_examples() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = start_daemon(dir.path());
    let mut test = command("go", &go_dir(), &daemon);
    test.args(["test", "-count=1", "./..."]);
    run(test, "go test ./... (clients/go)");
    for example in ["payment", "order", "flashsale"] {
        let mut cmd = command("go", &go_dir(), &daemon);
        cmd.args(["run", &format!("./examples/{example}")]);
        run(cmd, &format!("go example {example}"));
    }
}

/// Seed 001: a producer keeps sending through daemon crashes, retrying with the same ids, and
/// proves at the end that nothing was lost or applied twice.
#[test]
fn go_producer_survives_daemon_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = start_daemon(dir.path());
    // Build first, so that the kills below land while the producer runs, not while it compiles.
    let binary = dir.path().join("producer");
    let mut build = command("go", &go_dir(), &daemon);
    build.args(["build", "-o"]).arg(&binary).arg("./examples/producer");
    run(build, "go build ./examples/producer");

    let producer =
        command(binary.to_str().unwrap(), &go_dir(), &daemon).spawn().expect("start the producer");
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(400));
        daemon.kill();
        std::thread::sleep(Duration::from_millis(100));
        daemon.restart();
    }
    let status = wait_bounded(producer, "the producer example");
    assert!(status.success(), "the producer found lost or doubled transfers: {status}");
}

fn python() -> Command {
    Command::new("python3")
}

#[test]
fn python_client_tests_and_reconcile_example() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = start_daemon(dir.path());
    let python_dir = repo().join("clients/python");
    // Installable with pip: install into a throwaway prefix and import from there.
    let prefix = dir.path().join("site");
    let mut install = python();
    install
        .args(["-m", "pip", "install", "--quiet", "--no-deps", "--target"])
        .arg(&prefix)
        .arg(&python_dir)
        .stdin(Stdio::null());
    run(install, "pip install clients/python");

    let mut test = command("python3", &python_dir, &daemon);
    // The restart tests start their own daemons from this binary.
    test.env("PYTHONPATH", &prefix).env("LEDGERD_BIN", common::bin("ledgerd")).args([
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "tests",
    ]);
    run(test, "pytest clients/python/tests");

    let mut reconcile = command("python3", &python_dir, &daemon);
    reconcile.env("PYTHONPATH", &prefix).args(["examples/reconcile.py", "--make-activity", "200"]);
    run(reconcile, "python example reconcile.py");
}
