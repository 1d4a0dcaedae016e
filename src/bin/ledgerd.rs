//! `ledgerd`: the ledger daemon. See `ledgerd --help` and README.md.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use ledgerd::config::Settings;

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("ledgerd: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let settings = Settings::parse().with_file()?;
    let snapshot_up_to = settings.build_snapshot_up_to;
    let config = settings.resolve()?;
    init_logging(&config.log, config.log_json)?;
    ledgerd::daemon::install_panic_hook();

    if let Some(sequence) = snapshot_up_to {
        // A background job: leave the cores to the daemon that started it.
        // SAFETY: nice(2) only changes this process's scheduling priority.
        unsafe { libc::nice(10) };
        let recovery = ledgerd::daemon::recovery_config(&config);
        let written =
            ledgerd::recovery::build_snapshot(&recovery, Some(sequence), config.snapshots_keep)
                .context("building a snapshot")?;
        match written {
            Some(written) => {
                tracing::info!(sequence = written.sequence, path = %written.path.display(), "snapshot built")
            }
            None => tracing::info!("no snapshot built: the journal is empty"),
        }
        return Ok(());
    }

    let shutdown = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, Arc::clone(&shutdown))
            .context("installing signal handlers")?;
    }
    ledgerd::daemon::run(config, shutdown)
}

fn init_logging(filter: &str, json: bool) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .with_context(|| format!("log filter {filter:?}"))?;
    // Colour codes only for a person at a terminal, never in files or a supervisor's journal.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
    Ok(())
}
