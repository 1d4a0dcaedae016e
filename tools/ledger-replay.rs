//! `ledger-replay`: check, print and replay a `ledgerd` data directory offline.
//!
//! Reads the journal segments and snapshots exactly as the daemon leaves them; never writes
//! the journal (only `snapshot` writes, into the snapshot directory). Safe to run beside a
//! live daemon: it reads what is durable.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use ledgerd::event;
use ledgerd::journal::{End, JournalReader};
use ledgerd::json::{AccountJson, AccountLimitJson, TransferJson};
use ledgerd::recovery::{self, RecoveryConfig};
use ledgerd::types::ResultCode;

#[derive(Parser)]
#[command(name = "ledger-replay", version, about = "Verify, dump and replay a ledgerd journal")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check every record's checksum, the chain and sequence continuity, and the journal
    /// against the superblock and durability slots (missing journal or segments, acknowledged
    /// records missing or damaged, snapshots beyond the journal). Exits 1 on any of them,
    /// naming the segment and offset, and prints what `ledgerd --repair` would discard.
    Verify { dir: PathBuf },
    /// Print records, one line each (JSON Lines with --json).
    Dump {
        dir: PathBuf,
        #[arg(long)]
        json: bool,
        /// First sequence to print.
        #[arg(long, default_value_t = 1)]
        from: u64,
        /// Most records to print.
        #[arg(long)]
        limit: Option<u64>,
    },
    /// Rebuild the state and print counts, per-ledger totals and `state_hash: <hex>`.
    Replay {
        dir: PathBuf,
        /// Ignore snapshots: replay the whole journal.
        #[arg(long)]
        no_snapshots: bool,
        /// Stop after this sequence.
        #[arg(long)]
        up_to: Option<u64>,
    },
    /// Write a snapshot of the state at the journal's last record (or --up-to).
    Snapshot {
        dir: PathBuf,
        #[arg(long)]
        up_to: Option<u64>,
        /// Snapshots to keep.
        #[arg(long, default_value_t = 3)]
        keep: usize,
    },
    /// Print the journal's size, segments, records and events.
    Stats { dir: PathBuf },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Verify { dir } => verify(&dir),
        Command::Dump { dir, json, from, limit } => dump(&dir, json, from, limit),
        Command::Replay { dir, no_snapshots, up_to } => replay(&dir, !no_snapshots, up_to),
        Command::Snapshot { dir, up_to, keep } => snapshot(&dir, up_to, keep),
        Command::Stats { dir } => stats(&dir),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("ledger-replay: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn progress_bar(total: u64) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} records {per_sec} eta {eta}")
            .expect("a valid template"),
    );
    bar
}

fn open(dir: &Path) -> anyhow::Result<JournalReader> {
    JournalReader::open(dir).with_context(|| format!("opening the journal in {}", dir.display()))
}

fn verify(dir: &Path) -> anyhow::Result<ExitCode> {
    let reader = open(dir)?;
    let report = reader.verify();
    println!("records: {}", report.records);
    println!("last_sequence: {}", report.last_sequence);
    println!("acknowledged_sequence: {}", report.acknowledged_sequence);
    let snapshots = ledgerd::snapshot::list_snapshots(dir).unwrap_or_default();
    let beyond: Vec<_> = snapshots.iter().filter(|(seq, _)| *seq > report.last_sequence).collect();
    for (seq, path) in &beyond {
        println!(
            "problem: snapshot {} at sequence {seq} is beyond the journal's end ({})",
            path.display(),
            report.last_sequence
        );
    }
    if !report.is_ok() || !beyond.is_empty() {
        match recovery::repair_plan(dir) {
            Ok(Some((_, text))) => {
                for line in text.lines() {
                    println!("repair: {line}");
                }
            }
            Ok(None) => {}
            Err(reason) => println!("repair: none possible: {reason}"),
        }
        if report.is_ok() {
            println!("end: snapshots beyond the journal");
            return Ok(ExitCode::FAILURE);
        }
    }
    for problem in &report.problems {
        println!(
            "problem: segment {} offset {}: {}",
            problem.segment.display(),
            problem.offset,
            problem.reason
        );
    }
    match &report.end {
        End::Clean => {
            println!("end: clean");
            Ok(if report.problems.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        End::Torn { segment, offset, reason } => {
            // A torn tail is what a crash leaves; the daemon cuts it on start.
            println!(
                "end: torn tail at {} offset {offset}: {reason} (cut on the next start)",
                segment.display()
            );
            Ok(if report.problems.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        End::Corrupt { segment, offset, reason } => {
            println!("end: corrupt at {} offset {offset}: {reason}", segment.display());
            Ok(ExitCode::FAILURE)
        }
    }
}

fn dump(dir: &Path, json: bool, from: u64, limit: Option<u64>) -> anyhow::Result<ExitCode> {
    let reader = open(dir)?;
    let mut records = reader.records(from.max(1), None);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut printed = 0u64;
    while let Some(record) = records.next_record() {
        if limit.is_some_and(|limit| printed >= limit) {
            break;
        }
        let record = record?;
        if record.body.is_empty() {
            // A replica's entry without an event (a new leader's first).
            continue;
        }
        let archived = event::access(record.body)
            .map_err(|e| anyhow::anyhow!("record {} does not decode: {e}", record.seq))?;
        let event: event::Event = rkyv::deserialize::<_, rkyv::rancor::Error>(archived)?;
        let segment = record.segment;
        if json {
            writeln!(out, "{}", serde_json::to_string(&DumpLine::new(&record, &event))?)?;
        } else {
            writeln!(
                out,
                "seq={} segment={} offset={} timestamp={} accounts={} transfers={} expired={} limits={} failed={}",
                record.seq,
                segment,
                record.offset,
                event.timestamp,
                event.accounts.len(),
                event.transfers.len(),
                event.expired.len(),
                event.limits.len(),
                event.failed.len(),
            )?;
        }
        printed += 1;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// One `dump --json` line: where the record is and everything its event changed.
#[derive(serde::Serialize)]
struct DumpLine {
    sequence: u64,
    segment: u64,
    offset: u64,
    timestamp: u64,
    expired: Vec<ExpiryJson>,
    accounts: Vec<AccountJson>,
    transfers: Vec<TransferJson>,
    limits: Vec<AccountLimitJson>,
    failed: Vec<FailedJson>,
}

#[derive(serde::Serialize)]
struct ExpiryJson {
    pending_id: u128,
    timestamp: u64,
}

#[derive(serde::Serialize)]
struct FailedJson {
    id: u128,
    result: &'static str,
}

impl DumpLine {
    fn new(record: &ledgerd::journal::Record<'_>, event: &event::Event) -> DumpLine {
        DumpLine {
            sequence: record.seq,
            segment: record.segment,
            offset: record.offset,
            timestamp: event.timestamp,
            expired: event
                .expired
                .iter()
                .map(|e| ExpiryJson { pending_id: e.pending_id, timestamp: e.timestamp })
                .collect(),
            accounts: event.accounts.iter().map(AccountJson::from_account).collect(),
            transfers: event.transfers.iter().map(TransferJson::from_transfer).collect(),
            limits: event.limits.iter().map(AccountLimitJson::from_limit).collect(),
            failed: event
                .failed
                .iter()
                .map(|f| FailedJson {
                    id: f.id,
                    result: ResultCode::from_u32(f.code).map_or("unknown", ResultCode::name),
                })
                .collect(),
        }
    }
}

fn replay(dir: &Path, use_snapshots: bool, up_to: Option<u64>) -> anyhow::Result<ExitCode> {
    let reader = open(dir)?;
    let total = reader.verify().last_sequence;
    drop(reader);
    let bar = progress_bar(up_to.map_or(total, |u| u.min(total)));
    // Replay never looks a finished record up again: it keeps only the hot state in memory
    // (accounts, pending transfers), whatever the length of the journal. Counts, totals and
    // the state hash include what left memory.
    let (state, sequence, report) =
        recovery::rebuild_evicting(dir, up_to, use_snapshots, u64::MAX, &mut |seq| {
            bar.set_position(seq)
        })?;
    bar.finish_and_clear();
    let counts = state.counts();
    println!("sequence: {sequence}");
    match report.snapshot_sequence {
        Some(s) => println!("snapshot_sequence: {s}"),
        None => println!("snapshot_sequence: none"),
    }
    for (path, reason) in &report.skipped_snapshots {
        println!("skipped_snapshot: {} ({reason})", path.display());
    }
    println!("replayed_records: {}", report.replayed_records);
    println!("accounts: {}", counts.accounts);
    println!("transfers: {}", counts.transfers);
    println!("pending_transfers: {}", counts.pending);
    println!("failed_ids: {}", counts.failed_ids);
    for totals in state.ledger_totals() {
        println!(
            "ledger {}: debits_posted={} credits_posted={} debits_pending={} credits_pending={}",
            totals.ledger,
            totals.debits_posted,
            totals.credits_posted,
            totals.debits_pending,
            totals.credits_pending
        );
    }
    println!("elapsed_ms: {}", report.elapsed.as_millis());
    println!("state_hash: {:032x}", state.state_hash());
    Ok(ExitCode::SUCCESS)
}

fn snapshot(dir: &Path, up_to: Option<u64>, keep: usize) -> anyhow::Result<ExitCode> {
    let config = RecoveryConfig::new(dir);
    match recovery::build_snapshot(&config, up_to, keep)? {
        Some(written) => {
            println!("snapshot: {} at sequence {}", written.path.display(), written.sequence);
            Ok(ExitCode::SUCCESS)
        }
        None => {
            println!("snapshot: none written (the journal is empty)");
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn stats(dir: &Path) -> anyhow::Result<ExitCode> {
    let reader = open(dir)?;
    let total = reader.verify().last_sequence;
    let bar = progress_bar(total);
    let mut records = reader.records(1, None);
    let (mut count, mut bytes) = (0u64, 0u64);
    let (mut accounts, mut transfers, mut expired, mut limits, mut failed) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut segments = std::collections::BTreeSet::new();
    let (mut first_ts, mut last_ts) = (None, 0u64);
    while let Some(record) = records.next_record() {
        let record = record?;
        if record.body.is_empty() {
            continue;
        }
        let archived = event::access(record.body)
            .map_err(|e| anyhow::anyhow!("record {} does not decode: {e}", record.seq))?;
        count += 1;
        bytes += record.body.len() as u64;
        accounts += archived.accounts.len() as u64;
        transfers += archived.transfers.len() as u64;
        expired += archived.expired.len() as u64;
        limits += archived.limits.len() as u64;
        failed += archived.failed.len() as u64;
        let ts = archived.timestamp.to_native();
        first_ts.get_or_insert(ts);
        last_ts = ts;
        segments.insert(record.segment);
        if count.is_multiple_of(65_536) {
            bar.set_position(record.seq);
        }
    }
    bar.finish_and_clear();
    println!("segments: {}", segments.len());
    println!("records: {count}");
    println!("body_bytes: {bytes}");
    println!("accounts_created: {accounts}");
    println!("transfers_created: {transfers}");
    println!("transfers_expired: {expired}");
    println!("limits_set: {limits}");
    println!("failed_ids: {failed}");
    println!("first_timestamp_ns: {}", first_ts.unwrap_or(0));
    println!("last_timestamp_ns: {last_ts}");
    let snapshots = ledgerd::snapshot::list_snapshots(dir).unwrap_or_default();
    println!("snapshots: {}", snapshots.len());
    for (sequence, path) in snapshots {
        println!("snapshot: {} at sequence {sequence}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}
