//! Three `ledgerd` processes as one replicated ledger (`--replica I --cluster A,B,C`), on
//! loopback: elections, replication, failover after SIGKILL, a leader cut off (SIGSTOP) and
//! back, catch-up of a replica that was down, `not_leader` hints, readiness, the replication
//! port's handshake, and the flags. Every acknowledged transfer must be on every replica,
//! every replica must reach the same state hash, and each replica's journal must replay to it.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{bin, builder, replay_hash, transfer, wallet};
use ledgerd::harness::proxy::Link;
use ledgerd::harness::{Cluster, Daemon};
use ledgerd_client::protocol::{NotLeaderReply, Operation, ReplicaRole, Status};
use ledgerd_client::types::{Account, ResultCode, Transfer};
use ledgerd_client::{Client, ClusterClient};

const LEADER_TIMEOUT: Duration = Duration::from_secs(20);
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(20);

/// Three replicas in `dir/r0..r2`, each with a fault file `dir/rI.faults` (cleared).
fn start(dir: &Path) -> Cluster {
    Cluster::start(3, |i| {
        let faults = fault_file(dir, i);
        std::fs::write(&faults, "clear").unwrap();
        builder(&dir.join(format!("r{i}")), &["--fault-file", faults.to_str().unwrap()])
    })
    .expect("start three replicas")
}

fn fault_file(dir: &Path, replica: usize) -> std::path::PathBuf {
    dir.join(format!("r{replica}.faults"))
}

/// A funded source account 1 (credits may exceed debits) and wallets 2..=n.
fn open_accounts(client: &mut ClusterClient, n: u128) {
    let mut accounts = vec![Account { id: 1, ledger: 1, code: 1, ..Default::default() }];
    accounts.extend((2..=n).map(wallet));
    assert_eq!(client.create_accounts(&accounts).expect("create accounts"), vec![]);
}

/// Sends `batch` through the leader; every event must be applied now or have been applied
/// by an earlier attempt that a failover interrupted (`exists`).
fn send(client: &mut ClusterClient, batch: &[Transfer]) {
    let results = client.create_transfers(batch).expect("transfers acknowledged");
    for r in results {
        assert_eq!(r.result, ResultCode::Exists, "transfer {} of the batch", r.index);
    }
}

/// Payments from the source account to the wallets, ids from `first`.
fn payments(first: u128, count: u128, wallets: u128) -> Vec<Transfer> {
    (first..first + count).map(|id| transfer(id, 1, 2 + id % (wallets - 1), 1 + id % 7)).collect()
}

/// Waits until every running replica reports the same applied sequence and state hash, and
/// returns the hash.
fn converged(cluster: &Cluster) -> (u64, u128) {
    let deadline = Instant::now() + CONVERGE_TIMEOUT;
    loop {
        let statuses: Vec<_> = cluster
            .replicas
            .iter()
            .filter(|r| r.pid().is_some())
            .map(|r| r.client().ok().and_then(|mut c| c.status().ok()))
            .collect();
        let first = statuses[0];
        if let Some(s) = first {
            let same = statuses.iter().all(|t| {
                t.is_some_and(|t| {
                    (t.sequence, t.state_hash, t.commit) == (s.sequence, s.state_hash, s.commit)
                })
            });
            if same && s.commit == s.sequence {
                return (s.sequence, s.state_hash);
            }
        }
        assert!(Instant::now() < deadline, "replicas did not converge: {statuses:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn role(replica: &Daemon) -> ReplicaRole {
    replica.client().expect("connect").status().expect("status").role
}

/// Every transfer of `ids` is on `replica` (looked up through a leader-following client).
fn all_present(client: &mut ClusterClient, ids: &[u128]) {
    for chunk in ids.chunks(1000) {
        let found = client.lookup_transfers(chunk).expect("lookup");
        assert_eq!(found.len(), chunk.len(), "acknowledged transfers missing");
    }
}

#[test]
fn writes_reach_every_replica_and_survive_the_leader_s_sigkill() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cluster = start(tmp.path());
    let leader = cluster.leader(LEADER_TIMEOUT).expect("a leader");
    assert_eq!(role(&cluster.replicas[leader]), ReplicaRole::Leader);

    // A follower refuses a write and names the leader.
    let follower = (leader + 1) % 3;
    let mut direct = cluster.replicas[follower].client().expect("connect");
    let mut body = Vec::new();
    ledgerd_client::protocol::encode_records(&mut body, &[wallet(99)]);
    direct.send_raw(Operation::CreateAccounts, &body).unwrap();
    let reply = direct.recv().unwrap();
    assert_eq!(reply.status, Status::NotLeader);
    assert_eq!(NotLeaderReply::decode(&reply.body).unwrap().hint(), Some(leader));
    // Every replica is ready: the leader serves, the followers know where it is.
    for r in &cluster.replicas {
        let deadline = Instant::now() + LEADER_TIMEOUT;
        while r.http_get("/readyz").unwrap().0 != 200 {
            assert!(Instant::now() < deadline, "replica not ready");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    let mut client = cluster.client();
    let wallets = 20;
    open_accounts(&mut client, wallets);
    let mut acknowledged = Vec::new();
    for b in 0..10u128 {
        let batch = payments(1000 + b * 50, 50, wallets);
        send(&mut client, &batch);
        acknowledged.extend(batch.iter().map(|t| t.id));
    }

    // The leader dies; the client finds the next one and goes on.
    cluster.replicas[leader].kill();
    let started = Instant::now();
    let batch = payments(5000, 50, wallets);
    send(&mut client, &batch);
    acknowledged.extend(batch.iter().map(|t| t.id));
    let failover = started.elapsed();
    assert!(failover < Duration::from_secs(10), "failover took {failover:?}");
    let new_leader = cluster.leader(LEADER_TIMEOUT).expect("a new leader");
    assert_ne!(new_leader, leader);
    for b in 1..10u128 {
        let batch = payments(5000 + b * 50, 50, wallets);
        send(&mut client, &batch);
        acknowledged.extend(batch.iter().map(|t| t.id));
    }
    // Retrying an acknowledged batch applies nothing twice.
    let again = client.create_transfers(&payments(5000, 50, wallets)).unwrap();
    assert!(again.len() == 50 && again.iter().all(|r| r.result == ResultCode::Exists));

    // The old leader comes back as a follower and catches up.
    cluster.replicas[leader].restart().expect("restart the old leader");
    converged(&cluster);
    // A replica replaced by a new one on an empty data directory catches up from the leader.
    let replaced = (new_leader + 1) % 3;
    cluster.replicas[replaced].kill();
    std::fs::remove_dir_all(tmp.path().join(format!("r{replaced}"))).unwrap();
    cluster.replicas[replaced].restart().expect("start the replacement");
    // The leader believes that replica holds everything until a write shows otherwise.
    send(&mut client, &payments(9000, 1, wallets));
    acknowledged.push(9000);
    let (sequence, hash) = converged(&cluster);
    assert!(sequence > 20, "entries replicated: {sequence}");
    all_present(&mut client, &acknowledged);
    let source = client.lookup_accounts(&[1]).unwrap()[0];
    let paid: u128 = (0..10u128)
        .flat_map(|b| payments(1000 + b * 50, 50, wallets))
        .chain((0..10u128).flat_map(|b| payments(5000 + b * 50, 50, wallets)))
        .chain(payments(9000, 1, wallets))
        .map(|t| t.amount)
        .sum();
    assert_eq!(source.debits_posted, paid, "every payment applied exactly once");

    // Each replica's journal replays to the state every replica agrees on.
    for r in &mut cluster.replicas {
        r.stop().expect("stop");
    }
    for i in 0..3 {
        let replayed = replay_hash(&tmp.path().join(format!("r{i}")));
        assert_eq!(replayed, format!("{hash:032x}"), "replica {i}'s journal");
    }
}

#[test]
fn a_leader_cut_off_and_back_serves_no_stale_read() {
    let tmp = tempfile::tempdir().unwrap();
    let cluster = start(tmp.path());
    let leader = cluster.leader(LEADER_TIMEOUT).expect("a leader");
    let mut client = cluster.client();
    open_accounts(&mut client, 3);
    send(&mut client, &[transfer(10, 1, 2, 5)]);

    // A connection to the old leader, opened while it still leads.
    let mut old = cluster.replicas[leader].client().expect("connect");
    // Cut off from its peers, then frozen before it could notice: to the others the leader
    // is gone; it still believes it leads when it runs again.
    common::set_fault(&fault_file(tmp.path(), leader), "partition");
    let pid = cluster.replicas[leader].pid().expect("running") as i32;
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    // The write goes to the other two only (a client of the old leader could leave it in
    // its socket, to be applied there speculatively).
    let new_leader = write_elsewhere(&cluster, leader, &transfer(11, 1, 3, 7));

    // A read at the old leader, as soon as it runs again.
    let mut body = Vec::new();
    ledgerd_client::protocol::encode_ids(&mut body, &[11]);
    old.send_raw(Operation::LookupTransfers, &body).unwrap();
    old.flush().unwrap();
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
    let reply = old.recv().expect("a reply from the old leader");
    match reply.status {
        // It could not confirm its leadership and stepped down.
        Status::NotLeader => {
            let hint = NotLeaderReply::decode(&reply.body).unwrap().hint();
            assert!(hint.is_none() || hint == Some(new_leader), "hint {hint:?}");
        }
        // A read that succeeds must see the write the new leader acknowledged.
        Status::Ok => assert_eq!(reply.body.len(), 128, "an ok read missed transfer 11"),
        other => panic!("unexpected status {other:?}"),
    }
    common::set_fault(&fault_file(tmp.path(), leader), "clear");
    converged(&cluster);
    all_present(&mut client, &[10, 11]);
}

#[test]
fn writes_go_on_through_message_loss_and_a_follower_s_full_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cluster = start(tmp.path());
    let leader = cluster.leader(LEADER_TIMEOUT).expect("a leader");
    let mut client = cluster.client();
    let wallets = 10;
    open_accounts(&mut client, wallets);
    let mut acknowledged = Vec::new();

    // A fifth of all Raft messages lost, both ways, on every replica.
    for i in 0..3 {
        common::set_fault(&fault_file(tmp.path(), i), "loss 20");
    }
    for b in 0..20u128 {
        let batch = payments(1000 + b * 10, 10, wallets);
        send(&mut client, &batch);
        acknowledged.extend(batch.iter().map(|t| t.id));
    }
    for i in 0..3 {
        common::set_fault(&fault_file(tmp.path(), i), "clear");
    }
    let dropped =
        common::metric(&cluster.replicas[leader], "ledgerd_replica_messages_dropped_total");
    assert!(dropped > 0, "the leader dropped messages");

    // A follower's disk fills: it cannot hold entries, so it stops (a replica that cannot
    // persist must not acknowledge anything); the other two go on.
    let follower = (leader + 1) % 3;
    common::set_fault(&fault_file(tmp.path(), follower), "append ENOSPC");
    for b in 0..10u128 {
        let batch = payments(3000 + b * 10, 10, wallets);
        send(&mut client, &batch);
        acknowledged.extend(batch.iter().map(|t| t.id));
    }
    let exit = cluster.replicas[follower].wait_exit(Duration::from_secs(20));
    assert!(exit.is_ok_and(|s| !s.success()), "the follower with a full disk stopped");
    // Space again: it restarts, catches up and agrees.
    std::fs::write(fault_file(tmp.path(), follower), "clear").unwrap();
    cluster.replicas[follower].restart().expect("restart the follower");
    converged(&cluster);
    all_present(&mut client, &acknowledged);
}

/// Every replica behind a proxy that delays what its peers send it (with jitter), while the
/// test cuts connections, slows one replica's inbound traffic past the election timeout,
/// SIGKILLs the leader and brings it back. The seed (`LEDGERD_TEST_SEED`, else fixed) draws
/// the jitter and the faults; a failure names it. `LEDGERD_TEST_ROUNDS` (default 24, one
/// cycle of the faults) runs the long version: the cycle again and again.
#[test]
fn writes_survive_delay_jitter_cut_connections_and_a_killed_leader() {
    let seed: u64 =
        std::env::var("LEDGERD_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(2026);
    let rounds: u128 =
        std::env::var("LEDGERD_TEST_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(24);
    eprintln!("LEDGERD_TEST_SEED={seed} LEDGERD_TEST_ROUNDS={rounds}");
    let ms = Duration::from_millis;
    let tmp = tempfile::tempdir().unwrap();
    let mut cluster =
        Cluster::start_behind_proxies(3, Link { delay: ms(10), jitter: ms(20) }, seed, |i| {
            // Snapshot files often, so that a restart starts from one.
            builder(&tmp.path().join(format!("r{i}")), &["--snapshot-every-records", "20"])
        })
        .expect("start three replicas behind proxies");
    let mut rng = fastrand::Rng::with_seed(seed);
    cluster.leader(LEADER_TIMEOUT).expect("a leader through delayed links");
    // Round trips of up to a second while one replica's traffic is slow.
    let mut options = cluster.replicas[0].client_options();
    options.io_timeout = Some(Duration::from_secs(3));
    let mut client = ClusterClient::new(cluster.client_addrs(), options);
    let wallets = 10;
    open_accounts(&mut client, wallets);

    let mut acknowledged = Vec::new();
    let mut paid = 0u128;
    let mut killed = None;
    for round in 0..rounds {
        match round % 24 {
            0 => {
                for p in &cluster.proxies {
                    p.set_link(Link { delay: ms(10), jitter: ms(20) });
                }
            }
            // Everything sent to the leader arrives late, past its election timeout.
            4 => {
                let leader = cluster.leader(LEADER_TIMEOUT).expect("a leader");
                cluster.proxies[leader].set_link(Link { delay: ms(250), jitter: ms(50) });
            }
            8 => {
                for p in &cluster.proxies {
                    p.set_link(Link { delay: ms(30), jitter: ms(40) });
                }
            }
            12 => {
                let leader = cluster.leader(LEADER_TIMEOUT).expect("a leader");
                cluster.replicas[leader].kill();
                killed = Some(leader);
            }
            16 => {
                let back = killed.take().unwrap();
                cluster.replicas[back].restart().expect("restart the killed leader");
            }
            20 => {
                for p in &cluster.proxies {
                    p.set_link(Link { delay: ms(2), jitter: ms(3) });
                }
            }
            _ => {}
        }
        if round % 3 == 2 {
            cluster.proxies[rng.usize(0..3)].cut();
        }
        let batch = payments(1000 + round * 20, 20, wallets);
        send(&mut client, &batch);
        acknowledged.extend(batch.iter().map(|t| t.id));
        paid += batch.iter().map(|t| t.amount).sum::<u128>();
    }
    if let Some(back) = killed {
        cluster.replicas[back].restart().expect("restart the killed leader");
    }

    for p in &cluster.proxies {
        p.set_link(Link::default());
    }
    let (sequence, hash) = converged(&cluster);
    assert!(sequence as u128 > rounds, "entries replicated: {sequence}");
    let term = cluster.replicas[0].client().unwrap().status().unwrap().term;
    eprintln!("term {term}, requests sent again {}", client.retries);
    all_present(&mut client, &acknowledged);
    let source = client.lookup_accounts(&[1]).unwrap()[0];
    assert_eq!(source.debits_posted, paid, "every payment applied exactly once (seed {seed})");
    // Replication went through the proxies, and cut connections were opened again.
    for (i, p) in cluster.proxies.iter().enumerate() {
        assert!(p.forwarded_bytes() > 0, "nothing reached replica {i} through its proxy");
    }
    let opened: u64 = cluster.proxies.iter().map(|p| p.connections()).sum();
    assert!(opened > 6, "connections opened through the proxies: {opened}");

    for r in &mut cluster.replicas {
        r.stop().expect("stop");
    }
    for i in 0..3 {
        let replayed = replay_hash(&tmp.path().join(format!("r{i}")));
        assert_eq!(replayed, format!("{hash:032x}"), "replica {i}'s journal (seed {seed})");
    }
}

/// Members write snapshot files of their committed state and start from them: after every
/// replica is SIGKILLed, each restarts from its newest snapshot plus the committed entries
/// after it, and all agree with what their journals replay to.
#[test]
fn members_take_snapshot_files_and_restart_from_them() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(3, |i| {
        builder(&tmp.path().join(format!("r{i}")), &["--snapshot-every-records", "10"])
    })
    .expect("start three replicas");
    cluster.leader(LEADER_TIMEOUT).expect("a leader");
    let mut client = cluster.client();
    let wallets = 10;
    open_accounts(&mut client, wallets);
    let mut acknowledged = Vec::new();
    let mut paid = 0u128;
    let mut write = |client: &mut ClusterClient, first: u128| {
        let batch = payments(first, 10, wallets);
        send(client, &batch);
        acknowledged.extend(batch.iter().map(|t| t.id));
        paid += batch.iter().map(|t| t.amount).sum::<u128>();
    };
    for b in 0..40u128 {
        write(&mut client, 1000 + b * 10);
    }
    // Every replica, followers too, writes snapshots (in a child process, off its business
    // thread).
    for (i, r) in cluster.replicas.iter().enumerate() {
        let deadline = Instant::now() + CONVERGE_TIMEOUT;
        while common::metric(r, "ledgerd_snapshots_total") == 0 {
            assert!(Instant::now() < deadline, "replica {i} wrote no snapshot");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    for r in &mut cluster.replicas {
        r.kill();
    }
    for (i, r) in cluster.replicas.iter_mut().enumerate() {
        r.restart().expect("restart");
        let from = common::metric(r, "ledgerd_snapshot_sequence");
        assert!(from >= 10, "replica {i} started from snapshot {from}");
    }
    let status = cluster.replicas[0].client().unwrap().status().unwrap();
    assert!(status.snapshot_sequence >= 10, "{status:?}");
    write(&mut client, 9000);
    let (_, hash) = converged(&cluster);
    all_present(&mut client, &acknowledged);
    let source = client.lookup_accounts(&[1]).unwrap()[0];
    assert_eq!(source.debits_posted, paid, "every payment applied exactly once");
    for r in &mut cluster.replicas {
        r.stop().expect("stop");
    }
    // From its newest snapshot, and from the journal alone.
    for i in 0..3 {
        let dir = tmp.path().join(format!("r{i}"));
        assert_eq!(replay_hash(&dir), format!("{hash:032x}"), "replica {i}'s snapshot");
        let whole = common::replay_hash_with(&dir, &["--no-snapshots"]);
        assert_eq!(whole, format!("{hash:032x}"), "replica {i}'s journal");
    }
}

/// Sends `t` to the replicas other than `avoid` until one leads and acknowledges it; returns
/// that one.
fn write_elsewhere(cluster: &Cluster, avoid: usize, t: &Transfer) -> usize {
    let deadline = Instant::now() + LEADER_TIMEOUT;
    loop {
        for (i, r) in cluster.replicas.iter().enumerate().filter(|(i, _)| *i != avoid) {
            let Ok(mut c) = r.client() else { continue };
            match c.create_transfers(std::slice::from_ref(t)) {
                Ok(results) => {
                    assert!(results.is_empty(), "{results:?}");
                    return i;
                }
                Err(ledgerd_client::ClientError::Status(Status::NotLeader)) => {}
                Err(e) => panic!("replica {i}: {e}"),
            }
        }
        assert!(Instant::now() < deadline, "no other replica took the write");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn the_replication_port_refuses_strangers_and_wrong_tokens() {
    let tmp = tempfile::tempdir().unwrap();
    let token = b"0123456789abcdef0123456789abcdef";
    let token_file = tmp.path().join("token");
    common::write_token_file(&token_file, token);
    let token_arg = token_file.display().to_string();
    let extra: Vec<&str> = vec!["--auth-token-file", &token_arg];
    let cluster = Cluster::start(3, |i| {
        builder(&tmp.path().join(format!("r{i}")), &extra).client_options(
            ledgerd_client::ClientOptions { token: Some(token.to_vec()), ..Default::default() },
        )
    })
    .expect("start");
    cluster.leader(LEADER_TIMEOUT).expect("replicas with tokens elect a leader");

    let refused = |hello: &[u8]| {
        let mut s = TcpStream::connect(cluster.peers[0]).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(hello).unwrap();
        let mut buf = [0u8; 16];
        // Closed without a byte: the handshake was refused.
        matches!(s.read(&mut buf), Ok(0) | Err(_))
    };
    let handshake = |from: u16, size: u16, token: &[u8]| {
        let mut b = b"LDGRRAFT".to_vec();
        for v in [1u16, from, size, token.len() as u16] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(token);
        b
    };
    assert!(refused(b"GET / HTTP/1.1\r\n\r\n"));
    assert!(refused(&handshake(2, 3, b"wrong-token-wrong-token-wrong-tok")));
    assert!(refused(&handshake(2, 5, token)), "another cluster size");
    assert!(refused(&handshake(1, 3, token)), "replica 1 is the one listening");
    // The cluster still serves.
    let mut client = cluster.client();
    open_accounts(&mut client, 3);
    converged(&cluster);
}

#[test]
fn cluster_flags_are_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let refused = |args: &[&str], says: &str| {
        let out = Daemon::builder(bin("ledgerd"), tmp.path().join("d"))
            .args(args)
            .run_to_exit(Duration::from_secs(30))
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} started");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    };
    let list = "127.0.0.1:1,127.0.0.1:2,127.0.0.1:3";
    refused(&["--replica", "0"], "--replica and --cluster go together");
    refused(&["--cluster", list], "--replica and --cluster go together");
    refused(&["--replica", "3", "--cluster", list], "positions in --cluster go from 0 to 2");
    refused(&["--replica", "0", "--cluster", "127.0.0.1:1,127.0.0.1:1"], "twice");
    refused(&["--replica", "0", "--cluster", "localhost:1"], "is not an address");
    refused(&["--replica", "0", "--cluster", list, "--cold-index", "true"], "--cold-index");
    refused(&["--replication-listen", "127.0.0.1:4"], "--replication-listen needs --replica");
    refused(
        &["--replica", "0", "--cluster", list, "--replication-listen", "0.0.0.0:4"],
        "replication address",
    );
}

/// A single replica is a cluster of one: it elects itself and serves.
#[test]
fn a_cluster_of_one_serves_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(1, |_| builder(&tmp.path().join("r0"), &[])).expect("start");
    cluster.leader(LEADER_TIMEOUT).expect("it leads");
    let mut client = cluster.client();
    open_accounts(&mut client, 3);
    send(&mut client, &[transfer(10, 1, 2, 5)]);
    let mut direct: Client = cluster.replicas[0].client().unwrap();
    let status = direct.status().unwrap();
    assert_eq!((status.role, status.replica, status.leader), (ReplicaRole::Leader, 0, 0));
    assert!(status.term >= 1 && status.commit >= 3, "{status:?}");
}
