//! Three replicas (`--replica I --cluster A,B,C`) on loopback against one single daemon, in
//! the same run on the same disk: throughput of batches of 8189, the latency of one transfer
//! per request, and failover after SIGKILL of the leader (the time from the kill until a
//! write is acknowledged again, with a client that follows the leader and retries with the
//! same ids). After the trials every acknowledged transfer must be present (`lost`) and none
//! applied twice (`duplicated`).
//!
//! `cargo bench --bench cluster` runs it all; `cargo test` (or `LEDGERD_BENCH_SMOKE=1`) runs a
//! smoke version that checks the same things on a few requests and two failovers.
//!
//! On this 2-core machine the three replicas share the cores (no pinning: `--business-core
//! none` for every replica; the single daemon runs with its defaults) and one disk, so each
//! batch is flushed three times on the same device. Every process takes snapshots with its
//! defaults; the latency phase starts once the snapshots the load caused have ended.

mod common;

use std::time::{Duration, Instant};

use common::load::{self, Spec, Transfers};
use common::{report, Daemon, Pick};
use ledgerd::harness::Cluster;
use ledgerd::protocol::{Operation, ReplicaRole};
use ledgerd_client::types::{Account, ResultCode};
use ledgerd_client::{Client, ClusterClient};

const ACCOUNTS: u64 = 10_000;
const BATCH: usize = 8189;
const LEADER_TIMEOUT: Duration = Duration::from_secs(30);
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest wait, between throughput and latency, for the snapshots of the load to end: the
/// latency is measured without them (for the single daemon and the replicas alike).
const SNAPSHOT_IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// The source account of the failover trials' payments (credits may exceed debits).
const SOURCE: u128 = 1_000_000;

struct Sizes {
    transfers: u64,
    single_requests: usize,
    trials: usize,
}

fn main() {
    let full = common::full_run();
    common::announce("cluster", full);
    let sizes = if full {
        Sizes { transfers: 2_000_000, single_requests: 5000, trials: 20 }
    } else {
        Sizes { transfers: 3 * BATCH as u64, single_requests: 200, trials: 2 }
    };
    let accounts = if full { ACCOUNTS } else { 1000 };

    // The single daemon.
    let data = common::data_dir();
    let daemon = Daemon::start(&data.path().join("single"), &[]);
    let mut client = daemon.client();
    common::create_accounts(&mut client, 1, accounts, 0);
    let single_tps = throughput(daemon.addr, accounts, sizes.transfers, &mut client);
    daemon.wait_snapshots_idle(SNAPSHOT_IDLE_TIMEOUT).expect("snapshots of the load end");
    let single_lat = one_by_one(&mut client, accounts, sizes.single_requests);
    drop(client);
    drop(daemon);

    // The cluster.
    let cluster = Cluster::start(3, |i| {
        common::builder(
            &data.path().join(format!("r{i}")),
            &["--business-core".into(), "none".into()],
        )
    })
    .expect("start three replicas");
    let leader = cluster.leader(LEADER_TIMEOUT).expect("a leader");
    let mut client = cluster.replicas[leader].client().expect("connect to the leader");
    common::create_accounts(&mut client, 1, accounts, 0);
    let cluster_tps =
        throughput(cluster.replicas[leader].addr, accounts, sizes.transfers, &mut client);
    for r in &cluster.replicas {
        r.wait_snapshots_idle(SNAPSHOT_IDLE_TIMEOUT).expect("snapshots of the load end");
    }
    let cluster_lat = one_by_one(&mut client, accounts, sizes.single_requests);
    drop(client);
    let failover = failovers(cluster, sizes.trials);

    println!("cluster.single.transfers_per_s: {single_tps:.0}");
    println!("cluster.replicated.transfers_per_s: {cluster_tps:.0}");
    report::print_latency("cluster.single.one_transfer", &single_lat, false);
    report::print_latency("cluster.replicated.one_transfer", &cluster_lat, false);
    let p50 = |h: &hdrhistogram::Histogram<u64>| h.value_at_quantile(0.5) as f64;
    println!("cluster.failover_trials: {}", failover.times.len());
    println!("cluster.e2e_over_single: {:.2}", cluster_tps / single_tps);
    println!("cluster.single_us_p50_over_single: {:.2}", p50(&cluster_lat) / p50(&single_lat));
    println!("cluster.failover_ms_p50: {:.0}", failover.times.value_at_quantile(0.5) as f64 / 1e6);
    println!("cluster.failover_ms_p99: {:.0}", failover.times.value_at_quantile(0.99) as f64 / 1e6);
    println!("cluster.failover_ms_max: {:.0}", failover.times.max() as f64 / 1e6);
    println!("cluster.lost: {}", failover.lost);
    println!("cluster.duplicated: {}", failover.duplicated);
    let dir = common::results_dir(if full { "cluster" } else { "cluster-smoke" });
    report::write_all(
        &dir,
        "ledgerd: one transfer per request, single daemon and three replicas",
        &[("single".into(), single_lat), ("three_replicas".into(), cluster_lat)],
    );
    assert_eq!((failover.lost, failover.duplicated), (0, 0), "nothing lost, nothing applied twice");
}

/// Transfers in batches of 8189 over two connections, two requests in flight each (the e2e
/// benchmark's headline shape); returns transfers per second, checked against `status`.
fn throughput(
    addr: std::net::SocketAddr,
    accounts: u64,
    transfers: u64,
    client: &mut Client,
) -> f64 {
    let before = client.status().expect("status").transfers;
    let mut work = Transfers::new(Pick::Uniform(accounts), 1, BATCH, 1, 0x5eed);
    let spec = Spec {
        connections: 2,
        window: 2,
        requests_max: transfers.div_ceil(BATCH as u64),
        duration_max: Duration::from_secs(300),
        rate_per_s: None,
        operation: Operation::CreateTransfers,
    };
    let out = load::run(addr, &spec, &mut work);
    assert_eq!(work.failed, 0, "failed transfers: {:?}", work.failed_by);
    let after = client.status().expect("status").transfers;
    assert_eq!(after - before, out.events, "every acknowledged transfer is in the ledger");
    out.events_per_s()
}

/// One transfer per request, one at a time; the latency histogram (ns).
fn one_by_one(client: &mut Client, accounts: u64, requests: usize) -> hdrhistogram::Histogram<u64> {
    let mut h = report::histogram();
    for i in 0..requests as u128 {
        let t = common::transfer(
            1 << 40 | i,
            1 + i % accounts as u128,
            2 + i % (accounts as u128 - 1),
            1,
        );
        let started = Instant::now();
        let results = client.create_transfers(&[t]).expect("transfer");
        h.record(started.elapsed().as_nanos() as u64).expect("record");
        assert!(results.is_empty(), "{results:?}");
    }
    h
}

struct Failovers {
    /// From SIGKILL of the leader to the next acknowledged write (ns).
    times: hdrhistogram::Histogram<u64>,
    lost: u64,
    duplicated: u64,
}

/// `trials` times: a few payments, SIGKILL the leader, pay until one is acknowledged (the
/// failover time), restart the killed replica and wait until all three agree. Then counts
/// acknowledged payments that are missing and payments applied more than once.
fn failovers(mut cluster: Cluster, trials: usize) -> Failovers {
    let mut client: ClusterClient = cluster.client();
    client.call_deadline = LEADER_TIMEOUT;
    let wallet = Account { id: SOURCE + 1, ledger: 1, code: 1, ..Default::default() };
    let source = Account { id: SOURCE, ledger: 1, code: 1, ..Default::default() };
    assert!(client.create_accounts(&[source, wallet]).expect("accounts").is_empty());
    let mut next_id: u128 = 1 << 48;
    let mut acknowledged = Vec::new();
    let mut pay = |client: &mut ClusterClient, acknowledged: &mut Vec<u128>| {
        let t = common::transfer(next_id, SOURCE, SOURCE + 1, 1);
        next_id += 1;
        let results = client.create_transfers(&[t]).expect("a payment acknowledged");
        // `exists`: an attempt before the failover was applied; the retry applied nothing.
        assert!(results.iter().all(|r| r.result == ResultCode::Exists), "{results:?}");
        acknowledged.push(t.id);
    };
    let mut times = report::histogram();
    for _ in 0..trials {
        let leader = cluster.leader(LEADER_TIMEOUT).expect("a leader");
        for _ in 0..10 {
            pay(&mut client, &mut acknowledged);
        }
        let killed = Instant::now();
        cluster.replicas[leader].kill();
        pay(&mut client, &mut acknowledged);
        times.record(killed.elapsed().as_nanos() as u64).expect("record");
        cluster.replicas[leader].restart().expect("restart the killed replica");
        converge(&cluster);
    }
    let mut lost = 0u64;
    for chunk in acknowledged.chunks(1000) {
        lost += (chunk.len() - client.lookup_transfers(chunk).expect("lookup").len()) as u64;
    }
    let present = acknowledged.len() as u64 - lost;
    let debits = client.lookup_accounts(&[SOURCE]).expect("lookup")[0].debits_posted;
    // Each payment moves 1: more debits than payments present means one applied twice.
    let duplicated = u64::try_from(debits).expect("small").saturating_sub(present);
    for r in &mut cluster.replicas {
        r.stop().expect("stop");
    }
    Failovers { times, lost, duplicated }
}

/// Waits until every replica reports the same commit index and state hash, all applied.
fn converge(cluster: &Cluster) {
    let deadline = Instant::now() + CONVERGE_TIMEOUT;
    loop {
        let statuses: Vec<_> = cluster
            .replicas
            .iter()
            .map(|r| r.client().ok().and_then(|mut c| c.status().ok()))
            .collect();
        if let Some(Some(s)) = statuses.first() {
            let leaders =
                statuses.iter().flatten().filter(|t| t.role == ReplicaRole::Leader).count();
            let same = statuses.iter().all(|t| {
                t.is_some_and(|t| {
                    (t.commit, t.sequence, t.state_hash) == (s.commit, s.sequence, s.state_hash)
                })
            });
            if same && leaders == 1 {
                return;
            }
        }
        assert!(Instant::now() < deadline, "replicas did not converge: {statuses:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}
