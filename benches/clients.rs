//! The Go and Python clients against a real daemon:
//! - `clients.go.flash_sale.*`: one Go process, 1,000 goroutines, each with one purchase (a
//!   one-transfer `CreateTransfers`) in flight; the client coalesces them into requests.
//! - `clients.python.transfers_per_s`: batched `create_transfers` from Python (8,190 transfers
//!   per call, encoded in Python, several calls pipelined).
//!
//! This program builds the Go benchmark (`clients/go/cmd/flashsale-bench`), starts a daemon
//! with the shared harness, runs each client program with `LEDGERD_ADDR` and relays its
//! `clients.*` lines. `cargo bench --bench clients` runs 10 s each; `cargo test` runs a
//! one-second smoke with the same checks (the client programs check their own results and exit
//! non-zero on any mismatch).

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Daemon;

/// Longest a client program may run, its build included.
const PROGRAM_TIMEOUT: Duration = Duration::from_secs(600);

fn main() {
    let full = common::full_run();
    common::announce("clients", full);
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let results = common::results_dir("clients");
    let seconds = if full { 10 } else { 1 };

    let go_bench = results.join("flashsale-bench");
    let mut build = Command::new("go");
    build
        .current_dir(repo.join("clients/go"))
        .args(["build", "-o"])
        .arg(&go_bench)
        .arg("./cmd/flashsale-bench");
    run(build, "go build ./cmd/flashsale-bench");

    let data = common::data_dir();
    let mut daemon = Daemon::start(data.path(), &[]);
    let addr = daemon.addr.to_string();

    let mut go = Command::new(&go_bench);
    go.env("LEDGERD_ADDR", &addr).args([
        "-goroutines",
        if full { "1000" } else { "200" },
        "-duration",
        &format!("{seconds}s"),
    ]);
    relay(go, "the Go flash-sale benchmark", "clients.go.");

    let mut python = Command::new("python3");
    python
        .current_dir(repo.join("clients/python"))
        .env("PYTHONPATH", repo.join("clients/python"))
        .env("LEDGERD_ADDR", &addr)
        .args(["bench/transfers.py", "--seconds", &seconds.to_string()]);
    relay(python, "the Python transfers benchmark", "clients.python.");

    println!("clients.daemon_peak_rss_mb: {:.0}", daemon.peak_rss_mb());
    daemon.stop();
}

/// Runs a program to completion (bounded) and fails the benchmark if it fails.
fn run(mut cmd: Command, what: &str) {
    let child = cmd.stdin(Stdio::null()).spawn().unwrap_or_else(|e| {
        panic!(
            "{what}: cannot start {:?}: {e} (bash .ci/test installs Go and pytest)",
            cmd.get_program()
        )
    });
    let output = wait(child, what);
    assert!(output.status.success(), "{what} failed: {}", output.status);
}

/// Runs a client benchmark and prints its `prefix*` lines as `name: value`.
fn relay(mut cmd: Command, what: &str, prefix: &str) {
    let child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).spawn().unwrap_or_else(|e| {
        panic!(
            "{what}: cannot start {:?}: {e} (bash .ci/test installs Go and pytest)",
            cmd.get_program()
        )
    });
    let output = wait(child, what);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{what} failed: {}\n{stdout}", output.status);
    let mut lines = 0;
    for line in stdout.lines().filter(|l| l.starts_with(prefix)) {
        let (name, value) = line.split_once([' ', ':']).unwrap_or((line, ""));
        println!("{name}: {}", value.trim_start_matches(':').trim());
        lines += 1;
    }
    assert!(lines > 0, "{what} printed no {prefix}* lines:\n{stdout}");
}

fn wait(child: std::process::Child, what: &str) -> std::process::Output {
    let pid = child.id();
    let deadline = Instant::now() + PROGRAM_TIMEOUT;
    // A watchdog kills the program if it runs past the deadline; wait_with_output collects it.
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if done_rx.recv_timeout(deadline.saturating_duration_since(Instant::now())).is_err() {
            // SAFETY: signalling our own child process.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    });
    let output = child.wait_with_output().unwrap_or_else(|e| panic!("{what}: {e}"));
    let _ = done_tx.send(());
    let _ = watchdog.join();
    output
}
