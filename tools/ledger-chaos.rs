//! `ledger-chaos`: prove that `ledgerd` loses and duplicates nothing it acknowledged.
//!
//! `crash-loop` starts a daemon on a free loopback port with a temporary data directory,
//! drives a mixed workload from several clients (single-phase and pending/post/void transfers,
//! linked chains, flash-sale purchases of a hot stock account), records every reply, kills the
//! daemon with SIGKILL at random moments, restarts it, retries every unanswered request with the
//! same ids, and checks after each restart:
//! - every acknowledged create is present with the fields it was sent with (else `lost`);
//! - nothing that was refused is present (else an invariant violation);
//! - every account's balances equal what the transfers present imply (else `duplicated`:
//!   something applied twice);
//! - per ledger, debits equal credits; no balance limit is broken; the stock is never oversold;
//! - the daemon's state hash equals the one `ledger-replay replay` computes from the files;
//! - a sample of answered transfers, sent again, keeps its outcome (`exists` for an applied
//!   one, `id_already_failed` for one refused for a reason that could change).
//!
//! SIGKILL leaves the page cache alone, so a crash loop proves the recovery logic (torn tails,
//! snapshots, replay, idempotent retries), not the order of fsyncs: the storage-fault tests
//! (`tests/faults.rs`) cover that.
//!
//! The same seed gives the same workload and kill schedule (the kill moments are relative to
//! the daemon's pace, so a rerun reproduces the pattern, not the exact interleaving).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use ledgerd::harness::Daemon;
use ledgerd::types::{Account, AccountFlags, ResultCode, Transfer, TransferFlags};
use ledgerd_client::Client;

#[derive(Parser)]
#[command(name = "ledger-chaos", version, about = "Crash and check ledgerd")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Kill the daemon N times under load and check that nothing acknowledged is lost.
    CrashLoop {
        /// How many SIGKILLs.
        #[arg(long, default_value_t = 10)]
        kills: u32,
        /// Seed of the workload and the kill schedule (default: from the clock, printed).
        #[arg(long)]
        seed: Option<u64>,
        /// Concurrent clients.
        #[arg(long, default_value_t = 4)]
        clients: u32,
        /// Longest run of load between two kills, in milliseconds.
        #[arg(long, default_value_t = 400)]
        max_run_ms: u64,
        /// The daemon binary (default: `ledgerd` beside this executable).
        #[arg(long)]
        ledgerd: Option<PathBuf>,
        /// The replay tool (default: `ledger-replay` beside this executable).
        #[arg(long)]
        ledger_replay: Option<PathBuf>,
        /// Keep the data directory (its path is printed) instead of deleting it.
        #[arg(long)]
        keep: bool,
        /// Run the daemon with history in the disk index (`--cold-index true`): kills land
        /// during indexing, eviction and hot-state snapshots, and the retries after restarts
        /// go through the index.
        #[arg(long)]
        cold_index: bool,
    },
}

const WALLETS: u128 = 64;
const WALLET_FUNDS: u128 = 1_000;
const BUYERS: u128 = 1_000;
const STOCK: u128 = 5_000;
const OPERATOR: u128 = 1;
const STOCK_ACCOUNT: u128 = 2;
const SUPPLIER: u128 = 3;
const WALLET_BASE: u128 = 100;
const BUYER_BASE: u128 = 10_000;
const LEDGER_MONEY: u32 = 1;
const LEDGER_STOCK: u32 = 2;
/// Ids of transfers the workload creates start here (setup transfers use small ids).
const TRANSFER_ID_BASE: u128 = 1 << 64;
const START_TIMEOUT: Duration = Duration::from_secs(60);

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Cmd::CrashLoop {
            kills,
            seed,
            clients,
            max_run_ms,
            ledgerd,
            ledger_replay,
            keep,
            cold_index,
        } => {
            let seed = seed.unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            });
            let options = Options {
                kills,
                seed,
                clients: clients.max(1),
                max_run: Duration::from_millis(max_run_ms.max(20)),
                ledgerd: ledgerd.unwrap_or_else(|| sibling("ledgerd")),
                ledger_replay: ledger_replay.unwrap_or_else(|| sibling("ledger-replay")),
                keep,
                cold_index,
            };
            match crash_loop(&options) {
                Ok(totals) => {
                    eprintln!(
                        "ledger-chaos: {} answered transfers retried after restarts",
                        totals.retries_checked
                    );
                    println!(
                        "crash_loop: kills={} acked={} lost={} duplicated={} invariant_violations={}",
                        totals.kills, totals.acked, totals.lost, totals.duplicated, totals.violations
                    );
                    if totals.lost + totals.duplicated + totals.violations == 0 {
                        ExitCode::SUCCESS
                    } else {
                        eprintln!("ledger-chaos: FAILED; rerun with --seed {seed}");
                        ExitCode::FAILURE
                    }
                }
                Err(error) => {
                    eprintln!("ledger-chaos: {error:#} (seed {seed})");
                    ExitCode::from(2)
                }
            }
        }
    }
}

fn sibling(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    exe.with_file_name(name)
}

struct Options {
    kills: u32,
    seed: u64,
    clients: u32,
    max_run: Duration,
    ledgerd: PathBuf,
    ledger_replay: PathBuf,
    keep: bool,
    cold_index: bool,
}

#[derive(Default)]
struct Totals {
    kills: u32,
    acked: u64,
    lost: u64,
    duplicated: u64,
    violations: u64,
    /// Answered transfers sent again after a restart (each must keep its outcome).
    retries_checked: u64,
}

/// What became of one transfer we sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// Answered `ok` or `exists`: must be present.
    Applied,
    /// Answered with a failure: must be absent.
    Refused(ResultCode),
}

/// Everything sent and every answer, shared by the client threads.
#[derive(Default)]
struct Record {
    sent: HashMap<u128, Transfer>,
    outcome: HashMap<u128, Outcome>,
    /// Requests without an answer (the daemon died), retried after the restart as sent.
    unanswered: Vec<Vec<Transfer>>,
    acked: u64,
}

impl Record {
    fn answer(&mut self, batch: &[Transfer], results: &[ledgerd::types::CreateResult]) {
        let mut codes = vec![ResultCode::Ok; batch.len()];
        for r in results {
            codes[r.index as usize] = r.result;
        }
        // A linked chain applies as a whole. When a retried chain had applied before, its
        // first event answers `exists` and the others `linked_event_failed`: all are present.
        let mut start = 0;
        for (i, t) in batch.iter().enumerate() {
            if t.flags & TransferFlags::LINKED != 0 {
                continue;
            }
            if codes[start..=i].contains(&ResultCode::Exists) {
                for code in &mut codes[start..=i] {
                    if *code == ResultCode::LinkedEventFailed {
                        *code = ResultCode::Exists;
                    }
                }
            }
            start = i + 1;
        }
        for (t, code) in batch.iter().zip(codes) {
            let outcome = match code {
                ResultCode::Ok | ResultCode::Exists => Outcome::Applied,
                other => Outcome::Refused(other),
            };
            if code == ResultCode::Ok {
                self.acked += 1;
            }
            // A retry answers `id_already_failed` for an id refused before: still refused.
            match (self.outcome.get(&t.id), outcome) {
                (Some(Outcome::Refused(_)), Outcome::Refused(ResultCode::IdAlreadyFailed)) => {}
                _ => {
                    self.outcome.insert(t.id, outcome);
                }
            }
        }
    }
}

/// A daemon on a free loopback port: the library's harness with the crash loop's settings.
fn start_daemon(binary: &Path, dir: &Path, cold_index: bool) -> anyhow::Result<Daemon> {
    let daemon = Daemon::builder(binary, dir)
        .args(["--business-core", "none", "--segment-size-mib", "8"])
        .args(["--snapshot-every-records", "300"])
        .args(["--cold-index", if cold_index { "true" } else { "false" }])
        // The whole state is checked after every batch: a broken invariant aborts the
        // daemon, which the crash loop reports.
        .args(["--verify", "true"])
        .start_timeout(START_TIMEOUT)
        .start()?;
    Ok(daemon)
}

/// SIGTERM and a clean exit (status 0).
fn stop(daemon: &mut Daemon) -> anyhow::Result<()> {
    let status = daemon.stop()?;
    if !status.success() {
        bail!("ledgerd exited with {status} after SIGTERM");
    }
    Ok(())
}

fn crash_loop(options: &Options) -> anyhow::Result<Totals> {
    let temp = tempfile::Builder::new().prefix("ledger-chaos-").tempdir()?;
    let dir = temp.path().join("data");
    eprintln!("ledger-chaos: seed {} data {}", options.seed, dir.display());
    let mut daemon = start_daemon(&options.ledgerd, &dir, options.cold_index)?;
    let mut record = Record::default();
    setup(&mut daemon.client()?, &mut record)?;
    let record = Arc::new(Mutex::new(record));
    let next_id = Arc::new(AtomicU64::new(0));
    let mut rng = fastrand::Rng::with_seed(options.seed);
    let mut totals = Totals::default();

    for kill in 0..options.kills {
        let stop = Arc::new(AtomicBool::new(false));
        let workers: Vec<_> = (0..options.clients)
            .map(|c| {
                let (record, stop, next_id) =
                    (Arc::clone(&record), Arc::clone(&stop), Arc::clone(&next_id));
                let seed = options.seed
                    ^ (u64::from(kill) << 32 | u64::from(c)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                let addr = daemon.addr;
                std::thread::spawn(move || drive(addr, seed, &record, &stop, &next_id))
            })
            .collect();
        let run = Duration::from_millis(rng.u64(10..=options.max_run.as_millis() as u64));
        std::thread::sleep(run);
        daemon.kill();
        stop.store(true, Ordering::Relaxed);
        for worker in workers {
            let _ = worker.join();
        }
        totals.kills += 1;
        daemon.restart().with_context(|| format!("restart after kill {}", kill + 1))?;
        let mut client = daemon.client()?;
        retry_unanswered(&mut client, &mut record.lock().expect("no poisoned lock"))?;
        let mut found = check(
            &mut client,
            &record.lock().expect("no poisoned lock"),
            &options.ledger_replay,
            &dir,
        )?;
        found.violations += check_retries(
            &mut client,
            &mut record.lock().expect("no poisoned lock"),
            &mut rng,
            &mut totals.retries_checked,
        )?;
        if found.lost + found.duplicated + found.violations > 0 {
            eprintln!(
                "ledger-chaos: after kill {}: lost={} duplicated={} invariant_violations={}",
                kill + 1,
                found.lost,
                found.duplicated,
                found.violations
            );
        }
        totals.lost += found.lost;
        totals.duplicated += found.duplicated;
        totals.violations += found.violations;
    }

    stop(&mut daemon)?;
    let hash_after_stop = replay_hash(&options.ledger_replay, &dir)?;
    daemon.restart().context("restart after the clean stop")?;
    let live = format!("{:032x}", daemon.client()?.status()?.state_hash);
    if live != hash_after_stop {
        eprintln!(
            "ledger-chaos: state hash after restart {live} != ledger-replay {hash_after_stop}"
        );
        totals.violations += 1;
    }
    stop(&mut daemon)?;
    totals.acked = record.lock().expect("no poisoned lock").acked;
    if options.keep {
        let kept = temp.keep();
        eprintln!("ledger-chaos: kept {}", kept.display());
    }
    Ok(totals)
}

/// Accounts, wallet funding and the stock.
fn setup(client: &mut Client, record: &mut Record) -> anyhow::Result<()> {
    let mut accounts = vec![
        Account { id: OPERATOR, ledger: LEDGER_MONEY, code: 1, ..Default::default() },
        Account {
            id: STOCK_ACCOUNT,
            ledger: LEDGER_STOCK,
            code: 2,
            flags: AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS,
            ..Default::default()
        },
        Account { id: SUPPLIER, ledger: LEDGER_STOCK, code: 2, ..Default::default() },
    ];
    accounts.extend((0..WALLETS).map(|i| Account {
        id: WALLET_BASE + i,
        ledger: LEDGER_MONEY,
        code: 1,
        flags: AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS,
        ..Default::default()
    }));
    accounts.extend((0..BUYERS).map(|i| Account {
        id: BUYER_BASE + i,
        ledger: LEDGER_STOCK,
        code: 2,
        ..Default::default()
    }));
    for chunk in accounts.chunks(4096) {
        let results = client.create_accounts(chunk)?;
        if !results.is_empty() {
            bail!("setup: accounts refused: {results:?}");
        }
    }
    let mut funding: Vec<Transfer> =
        (0..WALLETS).map(|i| money(1 + i, OPERATOR, WALLET_BASE + i, WALLET_FUNDS)).collect();
    funding.push(Transfer {
        id: 1 + WALLETS,
        debit_account_id: SUPPLIER,
        credit_account_id: STOCK_ACCOUNT,
        amount: STOCK,
        ledger: LEDGER_STOCK,
        code: 2,
        ..Default::default()
    });
    let results = client.create_transfers(&funding)?;
    if !results.is_empty() {
        bail!("setup: funding refused: {results:?}");
    }
    for t in &funding {
        record.sent.insert(t.id, *t);
    }
    record.answer(&funding, &results);
    Ok(())
}

fn money(id: u128, from: u128, to: u128, amount: u128) -> Transfer {
    Transfer {
        id,
        debit_account_id: from,
        credit_account_id: to,
        amount,
        ledger: LEDGER_MONEY,
        code: 1,
        ..Default::default()
    }
}

/// One client: random requests until told to stop or the connection dies.
fn drive(
    addr: SocketAddr,
    seed: u64,
    record: &Mutex<Record>,
    stop: &AtomicBool,
    next_id: &AtomicU64,
) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let Ok(mut client) = Client::connect(addr, None) else { return };
    // Pending transfers this client created and has not resolved yet.
    let mut pending: Vec<Transfer> = Vec::new();
    let mut batch: Vec<Transfer> = Vec::new();
    let id = || TRANSFER_ID_BASE + u128::from(next_id.fetch_add(1, Ordering::Relaxed));
    let wallet = |rng: &mut fastrand::Rng| WALLET_BASE + u128::from(rng.u64(0..WALLETS as u64));
    while !stop.load(Ordering::Relaxed) {
        batch.clear();
        match rng.u32(0..100) {
            // Single-phase payments; some exceed the payer's funds.
            0..=34 => {
                for _ in 0..rng.usize(1..=16) {
                    let (a, b) = (wallet(&mut rng), wallet(&mut rng));
                    if a != b {
                        batch.push(money(id(), a, b, u128::from(rng.u64(1..=60))));
                    }
                }
            }
            // Reservations.
            35..=54 => {
                for _ in 0..rng.usize(1..=8) {
                    let (a, b) = (wallet(&mut rng), wallet(&mut rng));
                    if a != b {
                        let t = money(id(), a, b, u128::from(rng.u64(1..=40)));
                        batch.push(Transfer { flags: TransferFlags::PENDING, timeout: 3600, ..t });
                    }
                }
            }
            // Post (in full or in part) or void reservations this client made.
            55..=69 => {
                for _ in 0..rng.usize(1..=4).min(pending.len()) {
                    let p = pending.swap_remove(rng.usize(0..pending.len()));
                    let (flags, amount) = match rng.u32(0..3) {
                        0 => (TransferFlags::VOID_PENDING_TRANSFER, 0),
                        1 => (TransferFlags::POST_PENDING_TRANSFER, 0),
                        _ => (
                            TransferFlags::POST_PENDING_TRANSFER,
                            u128::from(rng.u64(1..=p.amount as u64)),
                        ),
                    };
                    batch.push(Transfer {
                        flags,
                        pending_id: p.id,
                        amount,
                        ..money(id(), 0, 0, 0)
                    });
                }
            }
            // Linked chains: all or nothing.
            70..=84 => {
                let n = rng.usize(2..=4);
                for i in 0..n {
                    let (a, b) = (wallet(&mut rng), wallet(&mut rng));
                    let b = if a == b { WALLET_BASE + (b - WALLET_BASE + 1) % WALLETS } else { b };
                    let flags = if i + 1 < n { TransferFlags::LINKED } else { 0 };
                    batch
                        .push(Transfer { flags, ..money(id(), a, b, u128::from(rng.u64(1..=80))) });
                }
            }
            // Flash sale: buyers take one unit each from the hot stock account.
            _ => {
                for _ in 0..rng.usize(1..=32) {
                    let buyer = BUYER_BASE + u128::from(rng.u64(0..BUYERS as u64));
                    batch.push(Transfer {
                        id: id(),
                        debit_account_id: STOCK_ACCOUNT,
                        credit_account_id: buyer,
                        amount: 1,
                        ledger: LEDGER_STOCK,
                        code: 2,
                        ..Default::default()
                    });
                }
            }
        }
        if batch.is_empty() {
            continue;
        }
        {
            let mut r = record.lock().expect("no poisoned lock");
            for t in &batch {
                r.sent.insert(t.id, *t);
            }
        }
        match client.create_transfers(&batch) {
            Ok(results) => {
                let mut r = record.lock().expect("no poisoned lock");
                r.answer(&batch, &results);
                for (i, t) in batch.iter().enumerate() {
                    let ok = !results.iter().any(|x| x.index as usize == i);
                    if ok && t.flags & TransferFlags::PENDING != 0 {
                        pending.push(*t);
                    }
                }
            }
            Err(_) => {
                record.lock().expect("no poisoned lock").unanswered.push(batch.clone());
                return;
            }
        }
    }
}

/// Sends every unanswered request again, exactly as it was first sent.
fn retry_unanswered(client: &mut Client, record: &mut Record) -> anyhow::Result<()> {
    for batch in std::mem::take(&mut record.unanswered) {
        let results = client.create_transfers(&batch)?;
        record.answer(&batch, &results);
    }
    Ok(())
}

/// Transfers sent again per restart by [`check_retries`].
const RETRIES_PER_RESTART: usize = 64;

/// Sends a sample of already answered transfers again, exactly as first sent: one that was
/// applied must answer `exists`, one refused for a reason that could change later must answer
/// `id_already_failed` (SPEC §3: a retry never flips an outcome, across restarts too).
/// Returns the number of violations.
fn check_retries(
    client: &mut Client,
    record: &mut Record,
    rng: &mut fastrand::Rng,
    checked: &mut u64,
) -> anyhow::Result<u64> {
    let mut candidates: Vec<(u128, ResultCode)> = record
        .outcome
        .iter()
        .filter(|(id, _)| record.sent[id].flags & TransferFlags::LINKED == 0)
        .filter_map(|(id, outcome)| match outcome {
            Outcome::Applied => Some((*id, ResultCode::Exists)),
            Outcome::Refused(code)
                if code.is_transient() || *code == ResultCode::IdAlreadyFailed =>
            {
                Some((*id, ResultCode::IdAlreadyFailed))
            }
            Outcome::Refused(_) => None,
        })
        .collect();
    // Sorted, so that a seed picks the same sample again.
    candidates.sort_unstable_by_key(|(id, _)| *id);
    rng.shuffle(&mut candidates);
    candidates.truncate(RETRIES_PER_RESTART);
    if candidates.is_empty() {
        return Ok(0);
    }
    let batch: Vec<Transfer> = candidates.iter().map(|(id, _)| record.sent[id]).collect();
    let results = client.create_transfers(&batch)?;
    let mut codes = vec![ResultCode::Ok; batch.len()];
    for r in &results {
        codes[r.index as usize] = r.result;
    }
    let mut violations = 0;
    for ((id, want), got) in candidates.iter().zip(&codes) {
        if got != want {
            eprintln!(
                "violation: transfer {id} sent again answered {} instead of {}",
                got.name(),
                want.name()
            );
            violations += 1;
        }
    }
    // Keep the record true to what the daemon now holds.
    record.answer(&batch, &results);
    *checked += batch.len() as u64;
    Ok(violations)
}

#[derive(Default)]
struct Found {
    lost: u64,
    duplicated: u64,
    violations: u64,
}

/// Checks the daemon against everything the clients were told.
fn check(client: &mut Client, record: &Record, replay: &Path, dir: &Path) -> anyhow::Result<Found> {
    let mut found = Found::default();
    let ids: Vec<u128> = record.sent.keys().copied().collect();
    let mut present: HashMap<u128, Transfer> = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(8000) {
        for t in client.lookup_transfers(chunk)? {
            present.insert(t.id, t);
        }
    }
    for (id, outcome) in &record.outcome {
        let sent = &record.sent[id];
        match (outcome, present.get(id)) {
            (Outcome::Applied, None) => {
                eprintln!("lost: transfer {id} was acknowledged but is missing");
                found.lost += 1;
            }
            (Outcome::Applied, Some(t)) => {
                let same = t.user_data_128 == sent.user_data_128
                    && t.pending_id == sent.pending_id
                    && t.flags == sent.flags
                    && t.timeout == sent.timeout
                    && (sent.debit_account_id == 0 || t.debit_account_id == sent.debit_account_id)
                    && (sent.credit_account_id == 0
                        || t.credit_account_id == sent.credit_account_id)
                    && (sent.amount == 0 || t.amount == sent.amount);
                if !same {
                    eprintln!(
                        "lost: transfer {id} differs from what was acknowledged: {t:?} vs {sent:?}"
                    );
                    found.lost += 1;
                }
            }
            (Outcome::Refused(code), Some(_)) => {
                eprintln!("violation: transfer {id} was refused ({}) but is present", code.name());
                found.violations += 1;
            }
            (Outcome::Refused(_), None) => {}
        }
    }

    // Balances implied by the transfers present.
    #[derive(Default, Clone, Copy)]
    struct Implied {
        debits_pending: u128,
        debits_posted: u128,
        credits_pending: u128,
        credits_posted: u128,
    }
    let mut implied: HashMap<u128, Implied> = HashMap::new();
    let resolved: std::collections::HashSet<u128> = present
        .values()
        .filter(|t| {
            t.flags & (TransferFlags::POST_PENDING_TRANSFER | TransferFlags::VOID_PENDING_TRANSFER)
                != 0
        })
        .map(|t| t.pending_id)
        .collect();
    for t in present.values() {
        let (posted, pending) = if t.flags & TransferFlags::PENDING != 0 {
            (0, if resolved.contains(&t.id) { 0 } else { t.amount })
        } else if t.flags & TransferFlags::VOID_PENDING_TRANSFER != 0 {
            (0, 0)
        } else {
            (t.amount, 0)
        };
        let d = implied.entry(t.debit_account_id).or_default();
        d.debits_posted += posted;
        d.debits_pending += pending;
        let c = implied.entry(t.credit_account_id).or_default();
        c.credits_posted += posted;
        c.credits_pending += pending;
    }
    let account_ids: Vec<u128> = [OPERATOR, STOCK_ACCOUNT, SUPPLIER]
        .into_iter()
        .chain((0..WALLETS).map(|i| WALLET_BASE + i))
        .chain((0..BUYERS).map(|i| BUYER_BASE + i))
        .collect();
    let mut per_ledger: HashMap<u32, [u128; 4]> = HashMap::new();
    for chunk in account_ids.chunks(8000) {
        let accounts = client.lookup_accounts(chunk)?;
        if accounts.len() != chunk.len() {
            eprintln!("lost: {} accounts missing", chunk.len() - accounts.len());
            found.lost += (chunk.len() - accounts.len()) as u64;
        }
        for a in accounts {
            let want = implied.get(&a.id).copied().unwrap_or_default();
            if (a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted)
                != (
                    want.debits_pending,
                    want.debits_posted,
                    want.credits_pending,
                    want.credits_posted,
                )
            {
                eprintln!(
                    "duplicated: account {} balances differ from the transfers present",
                    a.id
                );
                found.duplicated += 1;
            }
            if a.flags & AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS != 0
                && a.debits_pending + a.debits_posted > a.credits_posted
            {
                eprintln!("violation: account {} exceeds its credits", a.id);
                found.violations += 1;
            }
            let totals = per_ledger.entry(a.ledger).or_default();
            totals[0] += a.debits_pending;
            totals[1] += a.debits_posted;
            totals[2] += a.credits_pending;
            totals[3] += a.credits_posted;
            if a.id == STOCK_ACCOUNT && a.debits_posted + a.debits_pending > STOCK {
                eprintln!("violation: the stock was oversold ({} of {STOCK})", a.debits_posted);
                found.violations += 1;
            }
        }
    }
    for (ledger, [dp, dpo, cp, cpo]) in per_ledger {
        if dp != cp || dpo != cpo {
            eprintln!("violation: ledger {ledger} debits {dp}/{dpo} != credits {cp}/{cpo}");
            found.violations += 1;
        }
    }

    let live = format!("{:032x}", client.status()?.state_hash);
    let replayed = replay_hash(replay, dir)?;
    if live != replayed {
        eprintln!("violation: daemon state hash {live} != ledger-replay {replayed}");
        found.violations += 1;
    }
    Ok(found)
}

fn replay_hash(replay: &Path, dir: &Path) -> anyhow::Result<String> {
    let out = Command::new(replay)
        .arg("replay")
        .arg(dir)
        .output()
        .with_context(|| format!("running {}", replay.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("ledger-replay replay failed: {}{stdout}", String::from_utf8_lossy(&out.stderr));
    }
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("state_hash: "))
        .map(|h| h.trim().to_string())
        .with_context(|| format!("no state_hash line in: {stdout}"))
}
