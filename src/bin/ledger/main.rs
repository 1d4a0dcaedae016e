//! `ledger`: the command-line client of `ledgerd`, for people (aligned tables) and scripts
//! (`--json`, and `exec`: one JSON operation per stdin line, one JSON result per stdout line).
//!
//! Exit codes: 0 success; 1 the daemon refused a request, an event failed, or a looked-up id
//! does not exist (or, for `exec`, some line was answered with `{"error": ...}`); 2 usage or
//! connection error.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

mod exec;

use exec::ExecRequest;
use ledgerd_client::{Client, ClientError, ClientOptions, ClusterClient, Reply};
use ledgerd_proto::json::{self, parse_flag_list};
use ledgerd_proto::protocol::{
    decode_create_results, decode_records, encode_ids, encode_records, ChangeEventsReply,
    ChangeEventsRequest, Operation, Status, StatusReply, CHANGE_EVENTS_PER_REPLY_MAX,
    LEADER_UNKNOWN,
};
use ledgerd_proto::types::{
    Account, AccountBalance, AccountFilter, AccountFilterFlags, AccountFlags, AccountLimit,
    CreateResult, Transfer, TransferFlags, EVENTS_PER_REQUEST_MAX,
};

#[derive(Parser)]
#[command(name = "ledger", version, about = "Command-line client of ledgerd.", long_about = None,
    after_help = "Exit codes: 0 success; 1 a request was refused, an event failed or an id was not found; 2 usage or connection error.")]
struct Cli {
    /// Address of the daemon's client port; for a cluster, every replica's client address,
    /// comma-separated, in the order of the replicas' --cluster list: requests go to the
    /// leader (followed through failovers), `status` asks every replica.
    #[arg(long, global = true, env = "LEDGER_ADDR", default_value = "127.0.0.1:7400")]
    addr: String,
    /// File holding the daemon's auth token (trailing newline ignored).
    #[arg(long, global = true, env = "LEDGER_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// Print JSON (the same lines `exec` prints) instead of tables.
    #[arg(long, global = true)]
    json: bool,
    /// Keep retrying to connect for up to this many seconds (while the daemon starts).
    #[arg(long, global = true, default_value_t = 0)]
    wait_secs: u64,
    /// Speak TLS, trusting the CA certificates in this PEM file (the daemon's --tls-cert, or
    /// the CA that signed it).
    #[arg(long, global = true, env = "LEDGER_TLS_CA")]
    tls_ca: Option<PathBuf>,
    /// The name the daemon's certificate must carry. [default: the host part of --addr]
    #[arg(long, global = true, env = "LEDGER_TLS_SERVER_NAME")]
    tls_server_name: Option<String>,
    /// Client certificate (PEM) for daemons started with --tls-client-ca; needs --tls-client-key.
    #[arg(long, global = true, env = "LEDGER_TLS_CLIENT_CERT")]
    tls_client_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-client-cert.
    #[arg(long, global = true, env = "LEDGER_TLS_CLIENT_KEY")]
    tls_client_key: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct UserData {
    #[arg(long, default_value_t = 0)]
    user_data_128: u128,
    #[arg(long, default_value_t = 0)]
    user_data_64: u64,
    #[arg(long, default_value_t = 0)]
    user_data_32: u32,
}

#[derive(Args)]
struct TransferArgs {
    /// Transfer id (unique for ever; retrying with the same id is safe).
    #[arg(long)]
    id: u128,
    /// Debit account id.
    #[arg(long)]
    from: u128,
    /// Credit account id.
    #[arg(long)]
    to: u128,
    #[arg(long)]
    amount: u128,
    #[arg(long)]
    ledger: u32,
    #[arg(long)]
    code: u16,
    /// Comma-separated: linked, balancing_debit, balancing_credit, ...
    #[arg(long, default_value = "")]
    flags: String,
    #[command(flatten)]
    user_data: UserData,
}

#[derive(Args)]
struct FilterArgs {
    /// The account.
    #[arg(long)]
    account: u128,
    /// Most rows to return.
    #[arg(long, default_value_t = 100)]
    limit: u32,
    /// Newest first.
    #[arg(long)]
    reversed: bool,
    /// Only transfers where the account is debited.
    #[arg(long, conflicts_with = "credits_only")]
    debits_only: bool,
    /// Only transfers where the account is credited.
    #[arg(long)]
    credits_only: bool,
    /// Lowest timestamp (ns, inclusive); 0 = unbounded.
    #[arg(long, default_value_t = 0)]
    timestamp_min: u64,
    /// Highest timestamp (ns, inclusive); 0 = unbounded.
    #[arg(long, default_value_t = 0)]
    timestamp_max: u64,
}

impl FilterArgs {
    fn filter(&self) -> AccountFilter {
        let mut flags = AccountFilterFlags::DEBITS | AccountFilterFlags::CREDITS;
        if self.debits_only {
            flags = AccountFilterFlags::DEBITS;
        }
        if self.credits_only {
            flags = AccountFilterFlags::CREDITS;
        }
        if self.reversed {
            flags |= AccountFilterFlags::REVERSED;
        }
        AccountFilter {
            account_id: self.account,
            timestamp_min: self.timestamp_min,
            timestamp_max: self.timestamp_max,
            limit: self.limit,
            flags,
            reserved: [0; 24],
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Create an account.
    CreateAccount {
        #[arg(long)]
        id: u128,
        #[arg(long)]
        ledger: u32,
        #[arg(long)]
        code: u16,
        /// Comma-separated: linked, debits_must_not_exceed_credits, credits_must_not_exceed_debits, history.
        #[arg(long, default_value = "")]
        flags: String,
        #[command(flatten)]
        user_data: UserData,
    },
    /// Move `amount` from one account to another (single phase).
    Transfer(TransferArgs),
    /// Reserve `amount` (two-phase: post or void it later).
    Pending {
        #[command(flatten)]
        transfer: TransferArgs,
        /// Seconds until the ledger voids it by itself; 0 = never.
        #[arg(long, default_value_t = 0)]
        timeout: u32,
    },
    /// Post a pending transfer (all of it, or --amount of it).
    Post {
        #[arg(long)]
        id: u128,
        #[arg(long)]
        pending_id: u128,
        /// 0 posts the full pending amount.
        #[arg(long, default_value_t = 0)]
        amount: u128,
    },
    /// Void a pending transfer.
    Void {
        #[arg(long)]
        id: u128,
        #[arg(long)]
        pending_id: u128,
        /// 0, or the pending amount.
        #[arg(long, default_value_t = 0)]
        amount: u128,
    },
    /// Set an account's overdraft (or credit) limit.
    SetLimit {
        #[arg(long)]
        account: u128,
        #[arg(long)]
        limit: u128,
    },
    /// Show accounts.
    LookupAccount {
        #[arg(required = true)]
        ids: Vec<u128>,
    },
    /// Show transfers.
    LookupTransfer {
        #[arg(required = true)]
        ids: Vec<u128>,
    },
    /// Show account limits.
    LookupLimit {
        #[arg(required = true)]
        ids: Vec<u128>,
    },
    /// An account's transfers.
    History(FilterArgs),
    /// A `history` account's balance after each of its transfers.
    Balances(FilterArgs),
    /// Change events from a journal position.
    Events {
        #[arg(long, default_value_t = 0)]
        from_sequence: u64,
        #[arg(long, default_value_t = 0)]
        from_index: u32,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// The daemon's counters, journal sequence and state hash.
    Status,
    /// Read one JSON operation per stdin line; write one JSON result per line, in order.
    ///
    /// Input lines: {"op":"create_accounts","accounts":[{...}]}, {"op":"create_transfers",
    /// "transfers":[...]}, {"op":"set_account_limits","limits":[{"account_id":N,"limit":N}]},
    /// {"op":"lookup_accounts"|"lookup_transfers"|"lookup_account_limits","ids":[...]},
    /// {"op":"get_account_transfers"|"get_account_balances","account_id":N, "limit":N,
    /// "timestamp_min":N,"timestamp_max":N,"flags":["debits","credits","reversed"]},
    /// {"op":"change_events","from_sequence":N,"from_index":N,"limit":N}, {"op":"status"}.
    /// Records use the field names of the wire records; omitted fields are 0; flags are arrays
    /// of names; integers (u128 included) are exact JSON integers. Output: creates
    /// {"results":[{"index":0,"result":"ok"},...]} (every event), lookups {"accounts":[...]},
    /// {"transfers":[...]}, {"limits":[...]}, {"balances":[...]}; a line that fails
    /// {"error":"...","status":"..."}. Exit 1 if any line was an error.
    #[command(verbatim_doc_comment)]
    Exec,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ledger: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// The replicas' addresses of `--addr`.
fn addrs(cli: &Cli) -> Vec<String> {
    cli.addr.split(',').map(|a| a.trim().to_string()).filter(|a| !a.is_empty()).collect()
}

fn connect(cli: &Cli) -> Result<Client> {
    let options = client_options(cli)?;
    let deadline = Instant::now() + Duration::from_secs(cli.wait_secs);
    loop {
        match Client::connect_with(cli.addr.as_str(), options.clone()) {
            Ok(client) => return Ok(client),
            Err(ClientError::Io(_)) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(e).with_context(|| format!("connecting to {}", cli.addr)),
        }
    }
}

fn client_options(cli: &Cli) -> Result<ClientOptions> {
    let token = match &cli.token_file {
        Some(path) => {
            let bytes = std::fs::read(path)
                .with_context(|| format!("reading token file {}", path.display()))?;
            Some(bytes.trim_ascii_end().to_vec())
        }
        None => None,
    };
    let tls = match &cli.tls_ca {
        Some(ca) => {
            let name = match &cli.tls_server_name {
                Some(name) => name.clone(),
                None => host_of(&addrs(cli)[0]).to_string(),
            };
            let identity = match (&cli.tls_client_cert, &cli.tls_client_key) {
                (Some(cert), Some(key)) => Some((cert.as_path(), key.as_path())),
                (None, None) => None,
                _ => anyhow::bail!("--tls-client-cert and --tls-client-key go together"),
            };
            Some(ledgerd_client::tls::TlsOptions::new(ca, &name, identity)?)
        }
        None => {
            anyhow::ensure!(
                cli.tls_server_name.is_none() && cli.tls_client_cert.is_none(),
                "--tls-server-name and --tls-client-cert need --tls-ca"
            );
            None
        }
    };
    Ok(ClientOptions {
        token,
        connect_timeout: Some(Duration::from_secs(5)),
        io_timeout: None,
        tls,
    })
}

/// The host of `host:port` (brackets of an IPv6 literal removed).
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}

fn flags16(list: &str, names: &[(&str, u16)]) -> Result<u16> {
    let bits = parse_flag_list(list, names).map_err(anyhow::Error::msg)?;
    Ok(u16::try_from(bits).expect("names are u16 bits"))
}

fn transfer_of(args: &TransferArgs, extra_flags: u16, timeout: u32) -> Result<Transfer> {
    Ok(Transfer {
        id: args.id,
        debit_account_id: args.from,
        credit_account_id: args.to,
        amount: args.amount,
        user_data_128: args.user_data.user_data_128,
        user_data_64: args.user_data.user_data_64,
        user_data_32: args.user_data.user_data_32,
        timeout,
        ledger: args.ledger,
        code: args.code,
        flags: flags16(&args.flags, &TransferFlags::NAMES)? | extra_flags,
        ..Default::default()
    })
}

/// A request built from the command line.
fn request_of(command: &Command) -> Result<ExecRequest> {
    let mut body = Vec::new();
    let (operation, event_count) = match command {
        Command::CreateAccount { id, ledger, code, flags, user_data } => {
            let account = Account {
                id: *id,
                ledger: *ledger,
                code: *code,
                flags: flags16(flags, &AccountFlags::NAMES)?,
                user_data_128: user_data.user_data_128,
                user_data_64: user_data.user_data_64,
                user_data_32: user_data.user_data_32,
                ..Default::default()
            };
            encode_records(&mut body, &[account]);
            (Operation::CreateAccounts, 1)
        }
        Command::Transfer(args) => {
            encode_records(&mut body, &[transfer_of(args, 0, 0)?]);
            (Operation::CreateTransfers, 1)
        }
        Command::Pending { transfer, timeout } => {
            encode_records(&mut body, &[transfer_of(transfer, TransferFlags::PENDING, *timeout)?]);
            (Operation::CreateTransfers, 1)
        }
        Command::Post { id, pending_id, amount } | Command::Void { id, pending_id, amount } => {
            let flags = if matches!(command, Command::Post { .. }) {
                TransferFlags::POST_PENDING_TRANSFER
            } else {
                TransferFlags::VOID_PENDING_TRANSFER
            };
            let t = Transfer {
                id: *id,
                pending_id: *pending_id,
                amount: *amount,
                flags,
                ..Default::default()
            };
            encode_records(&mut body, &[t]);
            (Operation::CreateTransfers, 1)
        }
        Command::SetLimit { account, limit } => {
            let l = AccountLimit { account_id: *account, limit: *limit, ..Default::default() };
            encode_records(&mut body, &[l]);
            (Operation::SetAccountLimits, 1)
        }
        Command::LookupAccount { ids } => {
            encode_ids(&mut body, ids);
            (Operation::LookupAccounts, ids.len())
        }
        Command::LookupTransfer { ids } => {
            encode_ids(&mut body, ids);
            (Operation::LookupTransfers, ids.len())
        }
        Command::LookupLimit { ids } => {
            encode_ids(&mut body, ids);
            (Operation::LookupAccountLimits, ids.len())
        }
        Command::History(f) => {
            encode_records(&mut body, &[f.filter()]);
            (Operation::GetAccountTransfers, 1)
        }
        Command::Balances(f) => {
            encode_records(&mut body, &[f.filter()]);
            (Operation::GetAccountBalances, 1)
        }
        Command::Events { from_sequence, from_index, limit } => {
            ChangeEventsRequest {
                from_sequence: *from_sequence,
                from_index: *from_index,
                limit: *limit,
            }
            .encode(&mut body);
            (Operation::ChangeEvents, 1)
        }
        Command::Status => (Operation::Status, 0),
        Command::Exec => unreachable!("exec is not one request"),
    };
    Ok(ExecRequest { operation, body, event_count })
}

fn run(cli: Cli) -> Result<ExitCode> {
    let replicas = addrs(&cli);
    anyhow::ensure!(!replicas.is_empty(), "--addr names no address");
    if replicas.len() > 1 {
        return run_cluster(&cli, replicas);
    }
    if let Command::Exec = cli.command {
        let mut client = connect(&cli)?;
        return exec(&mut client);
    }
    let request = request_of(&cli.command)?;
    let mut client = connect(&cli)?;
    let request_id = match client.send_raw(request.operation, &request.body) {
        Ok(id) => id,
        Err(ClientError::Status(status)) => return Ok(refused(cli.json, status)),
        Err(e) => return Err(e.into()),
    };
    let reply = client.recv().context("waiting for the reply")?;
    anyhow::ensure!(
        reply.request_id == request_id,
        "reply to request {} (sent {request_id})",
        reply.request_id
    );
    answer(&cli, &request, &reply)
}

fn exec(client: &mut Client) -> Result<ExitCode> {
    let stdin = std::io::BufReader::new(std::io::stdin());
    let stdout = std::io::stdout().lock();
    let summary = exec::run_exec(client, stdin, stdout).context("exec")?;
    Ok(if summary.errors == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// A command for a cluster: `status` of every replica, anything else at the leader.
fn run_cluster(cli: &Cli, replicas: Vec<String>) -> Result<ExitCode> {
    let options = client_options(cli)?;
    if let Command::Status = cli.command {
        let mut code = ExitCode::SUCCESS;
        for (i, addr) in replicas.iter().enumerate() {
            let status = Client::connect_with(addr.as_str(), options.clone())
                .and_then(|mut c| c.status())
                .with_context(|| format!("replica {i} ({addr})"));
            let mut out = std::io::stdout().lock();
            match status {
                Ok(s) if cli.json => {
                    let line = serde_json::to_string(&json::StatusJson::from_status(&s))?;
                    writeln!(out, "{line}")?;
                }
                Ok(s) => {
                    writeln!(out, "replica {i} ({addr})")?;
                    let mut body = Vec::new();
                    s.encode(&mut body);
                    print_table(&mut out, &cli.command, Operation::Status, 0, &body)?;
                }
                Err(e) => {
                    eprintln!("ledger: {e:#}");
                    code = ExitCode::from(2);
                }
            }
        }
        return Ok(code);
    }
    let mut cluster = ClusterClient::new(replicas, options);
    cluster.call_deadline = cluster.call_deadline.max(Duration::from_secs(cli.wait_secs));
    if let Command::Exec = cli.command {
        let client = cluster.leader().context("finding the leader")?;
        return exec(client);
    }
    let request = request_of(&cli.command)?;
    let reply = cluster.call_raw(request.operation, &request.body).context("at the leader")?;
    answer(cli, &request, &reply)
}

/// Prints `reply` to `request` as the command asked; the exit code says how it went.
fn answer(cli: &Cli, request: &ExecRequest, reply: &Reply) -> Result<ExitCode> {
    if reply.status != Status::Ok {
        return Ok(refused(cli.json, reply.status));
    }
    let mut out = std::io::stdout().lock();
    if cli.json {
        let line = exec::format_reply(request.operation, request.event_count, &reply.body)
            .map_err(anyhow::Error::msg)?;
        writeln!(out, "{line}")?;
        return Ok(exit_of(request.operation, request.event_count, &reply.body));
    }
    print_table(&mut out, &cli.command, request.operation, request.event_count, &reply.body)?;
    Ok(exit_of(request.operation, request.event_count, &reply.body))
}

fn refused(json_output: bool, status: Status) -> ExitCode {
    if json_output {
        println!("{}", json::error_line(status.description(), Some(status)));
    } else {
        eprintln!("ledger: request refused: {} ({})", status.name(), status.description());
    }
    ExitCode::from(1)
}

/// 1 when an event failed or an id was not found.
fn exit_of(operation: Operation, event_count: usize, body: &[u8]) -> ExitCode {
    let failed = match operation {
        Operation::CreateAccounts | Operation::CreateTransfers | Operation::SetAccountLimits => {
            !body.is_empty()
        }
        Operation::LookupAccounts | Operation::LookupTransfers => body.len() / 128 < event_count,
        Operation::LookupAccountLimits => body.len() / 64 < event_count,
        _ => false,
    };
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// Columns padded to their widest cell.
fn table(out: &mut impl Write, headers: &[&str], rows: &[Vec<String>]) -> std::io::Result<()> {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}  "));
            }
        }
        s
    };
    writeln!(out, "{}", line(headers.to_vec()))?;
    for row in rows {
        writeln!(out, "{}", line(row.iter().map(String::as_str).collect()))?;
    }
    Ok(())
}

fn flag_names(bits: u16, names: &[(&str, u16)]) -> String {
    let list: Vec<&str> = names.iter().filter(|(_, b)| bits & b != 0).map(|(n, _)| *n).collect();
    if list.is_empty() {
        "-".into()
    } else {
        list.join(",")
    }
}

fn print_table(
    out: &mut impl Write,
    command: &Command,
    operation: Operation,
    event_count: usize,
    body: &[u8],
) -> Result<()> {
    let protocol_error = |e: String| anyhow::anyhow!("malformed reply: {e}");
    match operation {
        Operation::CreateAccounts | Operation::CreateTransfers | Operation::SetAccountLimits => {
            let mut failed: Vec<CreateResult> = Vec::new();
            decode_create_results(body, event_count, &mut failed).map_err(protocol_error)?;
            let rows: Vec<Vec<String>> = json::expand_results(event_count, &failed)
                .into_iter()
                .map(|r| vec![r.index.to_string(), r.result.to_string()])
                .collect();
            table(out, &["index", "result"], &rows)?;
        }
        Operation::LookupAccounts => {
            let mut accounts: Vec<Account> = Vec::new();
            decode_records(body, &mut accounts).map_err(protocol_error)?;
            let rows: Vec<Vec<String>> = accounts
                .iter()
                .map(|a| {
                    vec![
                        a.id.to_string(),
                        a.ledger.to_string(),
                        a.code.to_string(),
                        a.debits_pending.to_string(),
                        a.debits_posted.to_string(),
                        a.credits_pending.to_string(),
                        a.credits_posted.to_string(),
                        flag_names(a.flags, &AccountFlags::NAMES),
                        a.timestamp.to_string(),
                    ]
                })
                .collect();
            table(
                out,
                &[
                    "id",
                    "ledger",
                    "code",
                    "debits_pending",
                    "debits_posted",
                    "credits_pending",
                    "credits_posted",
                    "flags",
                    "timestamp",
                ],
                &rows,
            )?;
            report_missing(command, accounts.iter().map(|a| a.id));
        }
        Operation::LookupTransfers | Operation::GetAccountTransfers => {
            let mut transfers: Vec<Transfer> = Vec::new();
            decode_records(body, &mut transfers).map_err(protocol_error)?;
            let rows: Vec<Vec<String>> = transfers
                .iter()
                .map(|t| {
                    vec![
                        t.id.to_string(),
                        t.debit_account_id.to_string(),
                        t.credit_account_id.to_string(),
                        t.amount.to_string(),
                        t.pending_id.to_string(),
                        t.ledger.to_string(),
                        t.code.to_string(),
                        flag_names(t.flags, &TransferFlags::NAMES),
                        t.timeout.to_string(),
                        t.timestamp.to_string(),
                    ]
                })
                .collect();
            table(
                out,
                &[
                    "id",
                    "debit_account_id",
                    "credit_account_id",
                    "amount",
                    "pending_id",
                    "ledger",
                    "code",
                    "flags",
                    "timeout",
                    "timestamp",
                ],
                &rows,
            )?;
            report_missing(command, transfers.iter().map(|t| t.id));
        }
        Operation::LookupAccountLimits => {
            let mut limits: Vec<AccountLimit> = Vec::new();
            decode_records(body, &mut limits).map_err(protocol_error)?;
            let rows: Vec<Vec<String>> = limits
                .iter()
                .map(|l| {
                    vec![l.account_id.to_string(), l.limit.to_string(), l.timestamp.to_string()]
                })
                .collect();
            table(out, &["account_id", "limit", "timestamp"], &rows)?;
            report_missing(command, limits.iter().map(|l| l.account_id));
        }
        Operation::GetAccountBalances => {
            let mut balances: Vec<AccountBalance> = Vec::new();
            decode_records(body, &mut balances).map_err(protocol_error)?;
            let rows: Vec<Vec<String>> = balances
                .iter()
                .map(|b| {
                    vec![
                        b.timestamp.to_string(),
                        b.debits_pending.to_string(),
                        b.debits_posted.to_string(),
                        b.credits_pending.to_string(),
                        b.credits_posted.to_string(),
                    ]
                })
                .collect();
            table(
                out,
                &[
                    "timestamp",
                    "debits_pending",
                    "debits_posted",
                    "credits_pending",
                    "credits_posted",
                ],
                &rows,
            )?;
        }
        Operation::ChangeEvents => {
            let reply =
                ChangeEventsReply::decode(body).map_err(|s| protocol_error(s.to_string()))?;
            let rows: Vec<Vec<String>> = reply
                .events
                .iter()
                .map(|e| {
                    let (what, amount) = match e.kind {
                        ledgerd_proto::protocol::ChangeEventKind::AccountCreated
                        | ledgerd_proto::protocol::ChangeEventKind::LimitSet => {
                            (format!("account {}", e.debit_account.id), String::new())
                        }
                        _ => (
                            format!(
                                "transfer {} ({} -> {})",
                                e.transfer.id, e.debit_account.id, e.credit_account.id
                            ),
                            e.transfer.amount.to_string(),
                        ),
                    };
                    vec![
                        e.sequence.to_string(),
                        e.index.to_string(),
                        e.kind.name().to_string(),
                        what,
                        amount,
                        e.timestamp.to_string(),
                    ]
                })
                .collect();
            table(out, &["sequence", "index", "kind", "what", "amount", "timestamp"], &rows)?;
            writeln!(
                out,
                "next: --from-sequence {} --from-index {} (head {})",
                reply.next_sequence, reply.next_index, reply.head_sequence
            )?;
        }
        Operation::Status => {
            let s = StatusReply::decode(body).map_err(|s| protocol_error(s.to_string()))?;
            let rows = vec![
                vec!["sequence".into(), s.sequence.to_string()],
                vec!["snapshot_sequence".into(), s.snapshot_sequence.to_string()],
                vec!["state_hash".into(), format!("{:032x}", s.state_hash)],
                vec!["accounts".into(), s.accounts.to_string()],
                vec!["transfers".into(), s.transfers.to_string()],
                vec!["pending_transfers".into(), s.pending_transfers.to_string()],
                vec!["failed_ids".into(), s.failed_ids.to_string()],
                vec!["account_limits".into(), s.account_limits.to_string()],
                vec!["clock_ns".into(), s.clock_ns.to_string()],
                vec!["uptime_ns".into(), s.uptime_ns.to_string()],
                vec!["connections".into(), s.connections.to_string()],
                vec!["role".into(), s.role.name().into()],
                vec!["replica".into(), s.replica.to_string()],
                vec!["term".into(), s.term.to_string()],
                vec!["commit".into(), s.commit.to_string()],
                vec![
                    "leader".into(),
                    if s.leader == LEADER_UNKNOWN { "-".into() } else { s.leader.to_string() },
                ],
            ];
            table(out, &["field", "value"], &rows)?;
        }
        Operation::Hello => unreachable!("not a command"),
    }
    Ok(())
}

fn report_missing(command: &Command, found: impl Iterator<Item = u128>) {
    let asked = match command {
        Command::LookupAccount { ids }
        | Command::LookupTransfer { ids }
        | Command::LookupLimit { ids } => ids,
        _ => return,
    };
    let found: std::collections::HashSet<u128> = found.collect();
    for id in asked.iter().filter(|id| !found.contains(id)) {
        eprintln!("ledger: {id}: not found");
    }
}

// Keep the named limits visible to `--help` readers of the source.
const _: () = assert!(EVENTS_PER_REQUEST_MAX > 0 && CHANGE_EVENTS_PER_REPLY_MAX > 0);
