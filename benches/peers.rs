//! The peers side by side, in one run, at equal client counts (50):
//! - transfer: debit one random account of 100,000, credit another, refusing an overdraft
//!   (balances start at 1,000,000; amount 1 for Redis and ledgerd, 1..100 for PostgreSQL);
//! - stock: take one unit from one stock counter that never runs out.
//!
//! Peers (adapted from `../shared/peers/`, copies in `benches/peers/`): Redis with the Lua
//! scripts `transfer.lua` and `stock.lua` under `redis-benchmark`, AOF `appendfsync always`
//! and `everysec`; PostgreSQL with a `pgbench` transaction per transfer, `synchronous_commit`
//! on and off. Each is started privately on 127.0.0.1 with its data on the real disk, and
//! stopped after. Unbatched = one operation per request (Redis `-P 1`, one transfer per
//! PostgreSQL transaction, one transfer per ledgerd request); batched = 16 operations per
//! round trip (Redis `-P 16`, 16 transfers per PostgreSQL transaction, 16 transfers per
//! ledgerd request). ledgerd is also run with batches of 8189, its natural size.
//!
//! A peer that cannot be had is skipped with the reason printed. `cargo bench --bench peers`
//! installs missing peers with `benches/peers/install.sh` (Debian packages; root) unless
//! `LEDGERD_PEERS_INSTALL=0`; the smoke run under `cargo test` never installs and skips absent
//! peers.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::load::{self, Spec, Transfers};
use common::{report, Daemon, Pick};
use hdrhistogram::Histogram;
use ledgerd::protocol::Operation;
use ledgerd::types::AccountFlags;

const CLIENTS: usize = 50;
const BALANCE: u64 = 1_000_000;
const PIPELINE: usize = 16;

struct Plan {
    full: bool,
    accounts: u64,
    seconds: f64,
}

/// One measured configuration.
struct Row {
    key: String,
    per_s: f64,
    latency: Histogram<u64>,
    /// The server process's CPU time (user + system, all threads) per request (NaN where the
    /// server is many processes: PostgreSQL).
    cpu_us_per_request: f64,
}

fn main() {
    let full = common::full_run();
    common::announce("peers", full);
    let plan = Plan {
        full,
        accounts: if full { 100_000 } else { 1_000 },
        seconds: if full { 5.0 } else { 0.4 },
    };
    let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/peers");
    if full && std::env::var("LEDGERD_PEERS_INSTALL").map_or(true, |v| v != "0") {
        let ok =
            Command::new("bash").arg(here.join("install.sh")).status().is_ok_and(|s| s.success());
        if !ok {
            println!("peers.install: failed (peers that are missing will be skipped)");
        }
    }
    let mut rows: Vec<Row> = Vec::new();
    for mode in ["always", "everysec"] {
        match redis(&plan, &here, mode) {
            Ok(mut r) => rows.append(&mut r),
            Err(why) => println!("peers.redis_{mode}: skipped: {why}"),
        }
    }
    match postgres(&plan, &here) {
        Ok(mut r) => rows.append(&mut r),
        Err(why) => println!("peers.postgres: skipped: {why}"),
    }
    rows.append(&mut ledgerd(&plan));

    for r in &rows {
        println!("peers.{}.per_s: {:.0}", r.key, r.per_s);
        println!("peers.{}.ms_p50: {:.3}", r.key, r.latency.value_at_quantile(0.5) as f64 / 1e6);
        println!("peers.{}.ms_p99: {:.3}", r.key, r.latency.value_at_quantile(0.99) as f64 / 1e6);
        if r.cpu_us_per_request.is_finite() {
            println!("peers.{}.cpu_us_per_request: {:.2}", r.key, r.cpu_us_per_request);
        }
    }
    // The headline CPU figures: one transfer per request, 50 clients.
    for (name, key) in
        [("ledgerd", "ledgerd.transfer.b1"), ("redis_always", "redis_always.transfer.p1")]
    {
        if let Some(r) = rows.iter().find(|r| r.key == key) {
            println!("peers.{name}.cpu_us_per_request: {:.2}", r.cpu_us_per_request);
        }
    }
    let get = |k: &str| rows.iter().find(|r| r.key == k).map(|r| r.per_s);
    for (name, ours, theirs) in [
        (
            "transfer.ledgerd_over_redis_always.unbatched",
            "ledgerd.transfer.b1",
            "redis_always.transfer.p1",
        ),
        (
            "transfer.ledgerd_over_redis_always.batched",
            "ledgerd.transfer.b16",
            "redis_always.transfer.p16",
        ),
        (
            "transfer.ledgerd_over_redis_always.batched_8189",
            "ledgerd.transfer.b8189",
            "redis_always.transfer.p16",
        ),
        (
            "transfer.ledgerd_over_redis_everysec.unbatched",
            "ledgerd.transfer.b1",
            "redis_everysec.transfer.p1",
        ),
        (
            "transfer.ledgerd_over_redis_everysec.batched",
            "ledgerd.transfer.b16",
            "redis_everysec.transfer.p16",
        ),
        (
            "transfer.ledgerd_over_postgres_sync.unbatched",
            "ledgerd.transfer.b1",
            "postgres_sync_on.transfer.b1",
        ),
        (
            "transfer.ledgerd_over_postgres_sync.batched",
            "ledgerd.transfer.b16",
            "postgres_sync_on.transfer.b16",
        ),
        (
            "transfer.ledgerd_over_postgres_sync.batched_8189",
            "ledgerd.transfer.b8189",
            "postgres_sync_on.transfer.b16",
        ),
        (
            "transfer.ledgerd_over_postgres_async.unbatched",
            "ledgerd.transfer.b1",
            "postgres_sync_off.transfer.b1",
        ),
        (
            "transfer.ledgerd_over_postgres_async.batched",
            "ledgerd.transfer.b16",
            "postgres_sync_off.transfer.b16",
        ),
        ("stock.ledgerd_over_redis_always.unbatched", "ledgerd.stock.b1", "redis_always.stock.p1"),
        ("stock.ledgerd_over_redis_always.batched", "ledgerd.stock.b16", "redis_always.stock.p16"),
        (
            "stock.ledgerd_over_redis_everysec.unbatched",
            "ledgerd.stock.b1",
            "redis_everysec.stock.p1",
        ),
        (
            "stock.ledgerd_over_redis_everysec.batched",
            "ledgerd.stock.b16",
            "redis_everysec.stock.p16",
        ),
    ] {
        if let (Some(a), Some(b)) = (get(ours), get(theirs)) {
            println!("peers.{name}: {:.2}", a / b);
        }
    }
    let dir = common::results_dir(if full { "peers" } else { "peers-smoke" });
    let series: Vec<(String, Histogram<u64>)> =
        rows.into_iter().map(|r| (r.key.replace('.', "_"), r.latency)).collect();
    report::write_all(&dir, "transfer and stock workloads, 50 clients", &series);
}

// ---------------------------------------------------------------- ledgerd

fn ledgerd(plan: &Plan) -> Vec<Row> {
    let data = common::data_dir();
    let mut daemon = Daemon::start(data.path(), &[]);
    let mut client = daemon.client();
    // Wallets 1..=N that may not be overdrawn, funded from a bank account, as in Redis.
    const BANK: u128 = 1_000_000_000;
    const STOCK: u128 = 2_000_000_000;
    common::create_accounts(&mut client, BANK, 1, 0);
    common::create_accounts(
        &mut client,
        1,
        plan.accounts,
        AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS,
    );
    let funding: Vec<_> = (1..=u128::from(plan.accounts))
        .map(|i| common::transfer(BANK + i, BANK, i, u128::from(BALANCE)))
        .collect();
    assert!(client.create_transfers_batched(&funding).expect("funding").is_empty());
    // A stock account that may not go below zero, never running out, and 50 buyers.
    common::create_accounts(&mut client, STOCK, 1, AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS);
    common::create_accounts(&mut client, STOCK + 1, CLIENTS as u64, 0);
    let restock = common::transfer(STOCK, BANK, STOCK, 1 << 60);
    assert!(client.create_transfers(&[restock]).expect("restock").is_empty());

    let mut next_id: u128 = 1 << 40;
    let mut rows = Vec::new();
    let runs: [(&str, usize); 5] = [
        ("transfer", 1),
        ("stock", 1),
        ("transfer", PIPELINE),
        ("stock", PIPELINE),
        ("transfer", 8189),
    ];
    for (workload, batch) in runs {
        let (pick, first) = match workload {
            "transfer" => (Pick::Uniform(plan.accounts), 1),
            _ => (Pick::OneToMany(CLIENTS as u64 + 1), STOCK),
        };
        let mut work = Transfers::new(pick, first, batch, next_id, next_id as u64);
        let spec = Spec {
            connections: CLIENTS,
            window: 1,
            requests_max: u64::MAX,
            duration_max: Duration::from_secs_f64(plan.seconds),
            rate_per_s: None,
            operation: Operation::CreateTransfers,
        };
        let cpu_before = common::cpu_us(daemon.pid());
        let out = load::run(daemon.addr, &spec, &mut work);
        let cpu_us = common::cpu_us(daemon.pid()) - cpu_before;
        assert_eq!(work.failed, 0, "ledgerd {workload}: {:?}", work.failed_by);
        next_id = work.next_id;
        rows.push(Row {
            key: format!("ledgerd.{workload}.b{batch}"),
            per_s: out.events_per_s(),
            latency: out.latency,
            cpu_us_per_request: cpu_us / out.requests.max(1) as f64,
        });
    }
    let status = client.status().expect("status");
    println!("peers.ledgerd.transfers_total: {}", status.transfers);
    drop(client);
    daemon.stop();
    rows
}

// ---------------------------------------------------------------- Redis

struct Redis {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "shutdown", "nosave"])
            .output();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Redis {
    fn cli(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .output()
            .map_err(|e| format!("redis-cli: {e}"))?;
        if !out.status.success() {
            return Err(format!("redis-cli {args:?}: {}", String::from_utf8_lossy(&out.stderr)));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

fn redis(plan: &Plan, here: &Path, mode: &str) -> Result<Vec<Row>, String> {
    for tool in ["redis-server", "redis-cli", "redis-benchmark"] {
        if !on_path(tool) {
            return Err(format!("{tool} not found (benches/peers/install.sh installs it)"));
        }
    }
    let dir = common::data_dir();
    let port = common::free_addr().port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--protected-mode", "yes"])
        .arg("--dir")
        .arg(dir.path())
        .args(["--save", "", "--appendonly", "yes", "--appendfsync", mode])
        .args(["--auto-aof-rewrite-percentage", "0", "--daemonize", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("redis-server: {e}"))?;
    let r = Redis { child, port, _dir: dir };
    let deadline = Instant::now() + Duration::from_secs(30);
    while r.cli(&["ping"]).as_deref() != Ok("PONG") {
        if Instant::now() > deadline {
            return Err("redis-server did not answer PING within 30 s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    println!(
        "peers.redis_{mode}.version: {}",
        first_line(&cmd_output("redis-server", &["--version"]))
    );
    let read = |f: &str| std::fs::read_to_string(here.join("redis").join(f)).expect("peer script");
    let stock_sha = r.cli(&["script", "load", &read("stock.lua")])?;
    let xfer_sha = r.cli(&["script", "load", &read("transfer.lua")])?;
    let n = plan.accounts.to_string();
    r.cli(&["eval", &read("load_accounts.lua"), "0", &n, &BALANCE.to_string()])?;
    r.cli(&["set", "stock", "1000000000000000"])?;

    let mut rows = Vec::new();
    for p in [1usize, PIPELINE] {
        let transfer = [
            "-r",
            &n,
            "EVALSHA",
            &xfer_sha,
            "3",
            "acct:__rand_int__",
            "acct:__rand_int__",
            "xfer:ids",
            "1",
            "tx:__rand_int__:__rand_int__:__rand_int__",
        ];
        let pid = r.child.id();
        let (rps, h, cpu) = redis_benchmark(plan, port, pid, p, &transfer)?;
        rows.push(Row {
            key: format!("redis_{mode}.transfer.p{p}"),
            per_s: rps,
            latency: h,
            cpu_us_per_request: cpu,
        });
        let stock = ["EVALSHA", &stock_sha, "1", "stock"];
        let (rps, h, cpu) = redis_benchmark(plan, port, pid, p, &stock)?;
        rows.push(Row {
            key: format!("redis_{mode}.stock.p{p}"),
            per_s: rps,
            latency: h,
            cpu_us_per_request: cpu,
        });
    }
    // Audit: money conserved, nothing negative, nothing missing.
    let audit = r.cli(&["eval", &read("audit_accounts.lua"), "0", &n])?;
    let v: Vec<i64> = audit.lines().filter_map(|l| l.trim().parse().ok()).collect();
    let expected = plan.accounts as i64 * BALANCE as i64;
    if v.len() != 4 || v[0] != expected || v[2] != 0 || v[3] != 0 {
        return Err(format!("Redis audit failed: {audit:?} (expected sum {expected})"));
    }
    println!(
        "peers.redis_{mode}.audit: ok (sum {expected}, applied ids {})",
        r.cli(&["scard", "xfer:ids"])?
    );
    Ok(rows)
}

/// Runs redis-benchmark with 50 clients for about `plan.seconds` (sized from a short
/// calibration run); returns requests/s, a latency histogram rebuilt from its percentiles and
/// the server's (`pid`) CPU time per request.
fn redis_benchmark(
    plan: &Plan,
    port: u16,
    pid: u32,
    pipeline: usize,
    command: &[&str],
) -> Result<(f64, Histogram<u64>, f64), String> {
    let run = |n: u64| -> Result<(f64, Vec<f64>), String> {
        let out = Command::new("redis-benchmark")
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-c", &CLIENTS.to_string()])
            .args(["-P", &pipeline.to_string(), "-n", &n.to_string(), "--csv"])
            .args(command)
            .output()
            .map_err(|e| format!("redis-benchmark: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        // "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
        let line = text.lines().last().ok_or("redis-benchmark printed nothing")?;
        let v: Vec<f64> =
            line.split(',').skip(1).filter_map(|f| f.trim_matches('"').parse().ok()).collect();
        if v.len() < 7 {
            return Err(format!("redis-benchmark output not understood: {text}"));
        }
        Ok((v[0], v))
    };
    let calibration = if plan.full { 10_000 } else { 1_000 } * pipeline as u64;
    let (rps, _) = run(calibration)?;
    let n = ((rps * plan.seconds) as u64).max(calibration);
    let cpu_before = common::cpu_us(pid);
    let (rps, v) = run(n)?;
    let cpu_us_per_request = (common::cpu_us(pid) - cpu_before) / n as f64;
    // redis-benchmark reports percentiles only (ms): p50, p95, p99, max. Rebuild a histogram
    // with the same quantiles so that the plot and the .hgrm carry them.
    let mut h = report::histogram();
    let ns = |ms: f64| (ms * 1e6) as u64;
    h.saturating_record_n(ns(v[3]), 50);
    h.saturating_record_n(ns(v[4]), 45);
    h.saturating_record_n(ns(v[5]), 4);
    h.saturating_record_n(ns(v[6]), 1);
    Ok((rps, h, cpu_us_per_request))
}

// ---------------------------------------------------------------- PostgreSQL

struct Postgres {
    bin: PathBuf,
    base: PathBuf,
    port: u16,
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = as_postgres(
            &self.bin.join("pg_ctl"),
            &["-D", &self.data(), "-m", "fast", "-w", "stop"],
        );
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

impl Postgres {
    fn data(&self) -> String {
        self.base.join("data").display().to_string()
    }

    fn psql(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
            ])
            .args(["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1"])
            .args(args)
            .env("PGOPTIONS", "-c client_min_messages=warning")
            .output()
            .map_err(|e| format!("psql: {e}"))?;
        if !out.status.success() {
            return Err(format!("psql {args:?}: {}", String::from_utf8_lossy(&out.stderr)));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

fn as_postgres(program: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(program)
        .args(args)
        .output()
        .map_err(|e| format!("runuser: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{} {args:?}: {}{}",
            program.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

fn postgres(plan: &Plan, here: &Path) -> Result<Vec<Row>, String> {
    let bin = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|_| "PostgreSQL not installed (benches/peers/install.sh installs it)".to_string())?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("pg_ctl").exists())
        .max()
        .ok_or("no /usr/lib/postgresql/*/bin/pg_ctl")?;
    for tool in ["psql", "pgbench", "runuser"] {
        if !on_path(tool) {
            return Err(format!("{tool} not found"));
        }
    }
    if cmd_output("id", &["-u", "postgres"]).is_empty() {
        return Err("no postgres OS user".into());
    }
    // /tmp is on the same disk here; the postgres user must be able to reach the directory.
    let base = std::env::temp_dir().join(format!("ledgerd-peers-pg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(base.join("sock")).map_err(|e| e.to_string())?;
    let chown = Command::new("chown").args(["-R", "postgres:postgres"]).arg(&base).status();
    if !chown.is_ok_and(|s| s.success()) {
        return Err("cannot chown the cluster directory to postgres (not root?)".into());
    }
    let pg = Postgres { bin: bin.clone(), base: base.clone(), port: common::free_addr().port() };
    as_postgres(
        &bin.join("initdb"),
        &["-D", &pg.data(), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C"],
    )?;
    let opts = format!(
        "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c max_connections=100",
        pg.port,
        base.join("sock").display()
    );
    let log = base.join("server.log").display().to_string();
    as_postgres(
        &bin.join("pg_ctl"),
        &["-D", &pg.data(), "-l", &log, "-w", "-t", "120", "-o", &opts, "start"],
    )?;
    println!("peers.postgres.version: {}", first_line(&pg.psql(&["-c", "SELECT version()"])?));

    let mut rows = Vec::new();
    for sync in ["on", "off"] {
        pg.psql(&[
            "-c",
            &format!("ALTER SYSTEM SET synchronous_commit = '{sync}'"),
            "-c",
            "SELECT pg_reload_conf()",
        ])?;
        std::thread::sleep(Duration::from_millis(300));
        let shown = pg.psql(&["-c", "SHOW synchronous_commit"])?;
        if shown != sync {
            return Err(format!("synchronous_commit is {shown}, wanted {sync}"));
        }
        for batch in [1usize, PIPELINE] {
            let schema = here.join("pg/schema.sql").display().to_string();
            pg.psql(&[
                "-v",
                &format!("naccounts={}", plan.accounts),
                "-v",
                &format!("balance={BALANCE}"),
                "-f",
                &schema,
            ])?;
            let script = base.join(format!("transfer{batch}.pgbench"));
            std::fs::write(&script, pgbench_script(plan.accounts, batch))
                .map_err(|e| e.to_string())?;
            let (tps, committed, h) = pgbench(plan, &pg, &script)?;
            // Audit: money conserved, nothing negative, every committed transfer present.
            let audit_sql = here.join("pg/audit.sql").display().to_string();
            let row =
                pg.psql(&["-F", " ", "-v", &format!("balance={BALANCE}"), "-f", &audit_sql])?;
            let v: Vec<i64> = row.split_whitespace().filter_map(|f| f.parse().ok()).collect();
            let expected = plan.accounts as i64 * BALANCE as i64;
            if v.len() != 7
                || v[1] != expected
                || v[3] != 0
                || v[4] != (committed * batch as u64) as i64
                || v[6] != 0
            {
                return Err(format!(
                    "PostgreSQL audit failed: {row:?} (sum {expected}, {committed} transactions)"
                ));
            }
            println!("peers.postgres_sync_{sync}.b{batch}.audit: ok ({} transfers)", v[4]);
            rows.push(Row {
                key: format!("postgres_sync_{sync}.transfer.b{batch}"),
                per_s: tps * batch as f64,
                latency: h,
                // One backend process per connection: not measured.
                cpu_us_per_request: f64::NAN,
            });
        }
    }
    Ok(rows)
}

/// `batch` double-entry transfers per transaction between random accounts of `accounts`.
fn pgbench_script(accounts: u64, batch: usize) -> String {
    let mut s = String::new();
    for i in 0..batch {
        s.push_str(&format!(
            "\\set a{i} random(1, {accounts})\n\\set b{i} random(1, {accounts})\n\\set amt{i} random(1, 100)\n"
        ));
    }
    s.push_str("BEGIN;\n");
    if batch > 1 {
        // Lock the rows in id order first, as a careful application does: without it, 50
        // clients updating 32 random rows each deadlock constantly.
        let ids: Vec<String> =
            (0..batch).flat_map(|i| [format!(":a{i}"), format!(":b{i}")]).collect();
        s.push_str(&format!(
            "SELECT 1 FROM accounts WHERE id IN ({}) ORDER BY id FOR UPDATE;\n",
            ids.join(", ")
        ));
    }
    for i in 0..batch {
        s.push_str(&format!(
            "INSERT INTO transfers (id, debit, credit, amount) VALUES (nextval('transfer_ids'), :a{i}, :b{i}, :amt{i});\n\
             UPDATE accounts SET balance = balance - :amt{i} WHERE id = :a{i};\n\
             UPDATE accounts SET balance = balance + :amt{i} WHERE id = :b{i};\n"
        ));
    }
    s.push_str("COMMIT;\n");
    s
}

/// Runs pgbench with 50 clients; returns transactions/s, committed transactions and the
/// per-transaction latency histogram from its `-l` log.
fn pgbench(
    plan: &Plan,
    pg: &Postgres,
    script: &Path,
) -> Result<(f64, u64, Histogram<u64>), String> {
    let prefix = pg.base.join("pgbench_log");
    for e in std::fs::read_dir(&pg.base).map_err(|e| e.to_string())?.flatten() {
        if e.file_name().to_string_lossy().starts_with("pgbench_log") {
            let _ = std::fs::remove_file(e.path());
        }
    }
    let seconds = plan.seconds.ceil().max(1.0) as u64;
    let out = Command::new("pgbench")
        .args(["-h", "127.0.0.1", "-p", &pg.port.to_string(), "-U", "postgres", "-n"])
        .arg("-f")
        .arg(script)
        .args([
            "-c",
            &CLIENTS.to_string(),
            "-j",
            "2",
            "-T",
            &seconds.to_string(),
            "--max-tries=10",
            "-l",
        ])
        .arg(format!("--log-prefix={}", prefix.display()))
        .arg("postgres")
        .output()
        .map_err(|e| format!("pgbench: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!("pgbench failed: {text}{}", String::from_utf8_lossy(&out.stderr)));
    }
    let tps: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("no tps in pgbench output: {text}"))?;
    let committed: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
        .and_then(|l| l.split('/').next())
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("no transaction count in pgbench output: {text}"))?;
    // Log lines: client_id transaction_no time_us script_no time_epoch time_us_part [...]
    let mut h = report::histogram();
    for e in std::fs::read_dir(&pg.base).map_err(|e| e.to_string())?.flatten() {
        if e.file_name().to_string_lossy().starts_with("pgbench_log") {
            let log = std::fs::read_to_string(e.path()).map_err(|e| e.to_string())?;
            for l in log.lines() {
                if let Some(us) = l.split_whitespace().nth(2).and_then(|v| v.parse::<u64>().ok()) {
                    h.saturating_record(us * 1000);
                }
            }
        }
    }
    Ok((tps, committed, h))
}

// ---------------------------------------------------------------- helpers

fn on_path(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn cmd_output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").to_string()
}
