//! Storage faults against the real daemon, each with its documented outcome (RELIABILITY.md):
//!
//! - a torn write of a record that was never acknowledged (cut at random offsets): cut, start,
//!   go on; zeroed acknowledged records: refuse to start;
//! - a bit flip in a middle record, a missing or reordered segment: refuse to start, naming the
//!   segment and offset; a confirmed `--repair` cuts at the damage;
//! - a damaged newest snapshot: fall back to an older one; a snapshot of another journal: not
//!   used, full replay;
//! - journal write and flush failures (fault injection through the test-only `--fault-file`)
//!   and a real full filesystem (a small tmpfs, where this machine lets the test mount one):
//!   writes answer `journal_unavailable`, nothing acknowledged is lost, nothing unacknowledged
//!   is applied or served, service resumes when the fault is gone.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{transfer, wallet, Faulty, TestDaemon};
use ledgerd::harness::Daemon;
use ledgerd::journal::JournalReader;
use ledgerd::protocol::Status;
use ledgerd::types::{Account, Transfer};
use ledgerd_client::{Client, ClientError};

/// Bounded wait for something the daemon does in the background.
const WAIT_MAX: Duration = Duration::from_secs(30);

fn hash_hex(client: &mut Client) -> String {
    format!("{:032x}", client.status().expect("status").state_hash)
}

/// Accounts 1 (the bank, may go negative) and 2..=9 (wallets).
fn open_accounts(client: &mut Client) {
    let mut accounts = vec![Account { id: 1, ledger: 1, code: 1, ..Default::default() }];
    accounts.extend((2..10).map(wallet));
    assert!(client.create_accounts(&accounts).unwrap().is_empty());
}

/// `n` requests of one transfer each (so one journal record each), ids from `first`.
fn pay(client: &mut Client, first: u128, n: u128) -> Vec<Transfer> {
    let mut sent = Vec::new();
    for id in first..first + n {
        let t = transfer(id, 1, 2 + (id % 8), 1 + (id % 5));
        assert!(client.create_transfers(&[t]).unwrap().is_empty(), "transfer {id}");
        sent.push(t);
    }
    sent
}

fn present(client: &mut Client, ids: &[u128]) -> Vec<u128> {
    client.lookup_transfers(ids).unwrap().iter().map(|t| t.id).collect()
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join("journal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

/// (segment path, offset, length with padding) of every record.
fn records(dir: &Path) -> Vec<(PathBuf, u64, u64)> {
    let reader = JournalReader::open(dir).unwrap();
    let mut out = Vec::new();
    let mut it = reader.records(1, None);
    while let Some(r) = it.next_record() {
        let r = r.unwrap();
        let path = reader.segment_path(r.segment).unwrap().to_path_buf();
        out.push((path, r.offset, 64 + (r.body.len() as u64).next_multiple_of(16)));
    }
    out
}

fn write_at(path: &Path, offset: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, offset).unwrap();
    f.sync_all().unwrap();
}

/// Runs the daemon on `dir` expecting it to refuse to start; returns its stderr.
fn refused_start(dir: &Path, extra: &[&str]) -> String {
    let out = Daemon::builder(common::bin("ledgerd"), dir)
        .args(["--business-core", "none", "--segment-size-mib", "8"])
        .args(extra)
        .run_to_exit(WAIT_MAX)
        .expect("ledgerd neither started nor refused in time");
    assert!(!out.status.success(), "ledgerd started on a corrupt journal");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn torn_last_record_at_random_offsets_is_cut_and_service_goes_on() {
    let mut rng = fastrand::Rng::with_seed(7);
    let rounds = if std::env::var_os("LEDGERD_TORTURE_LONG").is_some() { 40 } else { 4 };
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = TestDaemon::start(dir.path());
    open_accounts(&mut daemon.client());
    let mut kept: Vec<u128> = Vec::new();
    let mut next = 100u128;
    for round in 0..rounds {
        let sent = pay(&mut daemon.client(), next, 5);
        next += 5;
        daemon.kill();
        // A crash in the middle of writing a record that was never acknowledged: after the
        // last record, the first bytes of a record (a copy of the last one, cut somewhere),
        // then garbage (odd rounds) or zeros (even rounds).
        let (path, offset, len) = records(dir.path()).pop().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let record = &bytes[offset as usize..(offset + len) as usize];
        let cut = 1 + rng.u64(0..len - 1);
        let mut torn = record[..cut as usize].to_vec();
        if round % 2 == 1 {
            torn.extend((0..rng.u64(1..64)).map(|_| rng.u8(1..)));
        }
        write_at(&path, offset + len, &torn);
        daemon.restart();
        let mut client = daemon.client();
        let ids: Vec<u128> = sent.iter().map(|t| t.id).collect();
        // Every acknowledged request survives; the torn write is gone.
        let mut want = kept.clone();
        want.extend(&ids);
        assert_eq!(present(&mut client, &want), want, "round {round}, cut at {cut}");
        kept = want;
        assert_eq!(hash_hex(&mut client), common::replay_hash(dir.path()), "round {round}");
        let tail = std::fs::read(&path).unwrap();
        let end = (offset + len) as usize;
        assert!(tail[end..end + torn.len()].iter().all(|&b| b == 0), "round {round}: not cut");
    }
    // And the journal goes on after the cuts.
    pay(&mut daemon.client(), next, 3);
    daemon.kill();
    daemon.restart();
    assert_eq!(present(&mut daemon.client(), &[next, next + 1, next + 2]).len(), 3);
}

#[test]
fn zeroed_acknowledged_records_refuse_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = TestDaemon::start(dir.path());
    open_accounts(&mut daemon.client());
    pay(&mut daemon.client(), 100, 6);
    // A clean stop seals: every record is recorded as durable.
    assert!(daemon.stop().success());
    // The last two records become zeros: a disk that lost acknowledged writes. Before format
    // 2 this was cut as a torn tail, silently dropping two acknowledged transfers.
    let recs = records(dir.path());
    let (path, offset, _) = &recs[recs.len() - 2];
    let (_, last_offset, last_len) = recs.last().unwrap();
    write_at(path, *offset, &vec![0u8; (last_offset + last_len - offset) as usize]);
    let err = refused_start(dir.path(), &[]);
    assert!(err.contains("acknowledged records are missing"), "{err}");
    assert!(err.contains(&format!("offset {offset}")), "{err}");
}

#[test]
fn bit_flip_in_a_middle_record_refuses_to_start_naming_segment_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = TestDaemon::start(dir.path());
    open_accounts(&mut daemon.client());
    pay(&mut daemon.client(), 100, 10);
    daemon.stop();
    let recs = records(dir.path());
    let (path, offset, _) = &recs[5];
    let mut byte = [0u8; 1];
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::open(path).unwrap();
        f.read_exact_at(&mut byte, offset + 70).unwrap();
    }
    write_at(path, offset + 70, &[byte[0] ^ 0x10]);
    let err = refused_start(dir.path(), &[]);
    let name = path.file_name().unwrap().to_string_lossy().to_string();
    assert!(err.contains(&name), "stderr does not name the segment {name}: {err}");
    assert!(
        err.contains(&format!("offset {offset}")),
        "stderr does not name offset {offset}: {err}"
    );
    // The operator's choice: a confirmed repair cuts at the damage, keeping what comes before.
    let daemon =
        TestDaemon::start_with(dir.path(), &["--repair", "true", "--repair-discard-after", "5"]);
    let got = present(&mut daemon.client(), &(100..110).collect::<Vec<_>>());
    // Record 1 holds the accounts, so record 6 (index 5) is transfer 104.
    assert_eq!(got, (100..104).collect::<Vec<_>>());
    assert_eq!(hash_hex(&mut daemon.client()), common::replay_hash(dir.path()));
}

/// Fills the journal past two segment boundaries (8 MiB segments) with big requests.
fn three_segments(daemon: &TestDaemon) -> u128 {
    let mut client = daemon.client();
    open_accounts(&mut client);
    let mut id = 1_000u128;
    let deadline = Instant::now() + WAIT_MAX;
    while segments(&daemon.data_dir).len() < 3 {
        let batch: Vec<Transfer> = (0..8000).map(|i| transfer(id + i, 1, 2 + (i % 8), 1)).collect();
        assert!(client.create_transfers(&batch).unwrap().is_empty());
        id += 8000;
        assert!(Instant::now() < deadline, "journal did not reach three segments");
    }
    id
}

#[test]
fn missing_or_reordered_segment_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = TestDaemon::start(dir.path());
    three_segments(&daemon);
    daemon.stop();
    let segs = segments(dir.path());
    let backup = dir.path().join("middle.seg.bak");
    std::fs::rename(&segs[1], &backup).unwrap();
    let err = refused_start(dir.path(), &[]);
    let name = segs[2].file_name().unwrap().to_string_lossy().to_string();
    assert!(err.contains(&name) && err.contains("offset 0"), "missing segment: {err}");

    // Reordered: the middle and last segments swap names.
    std::fs::rename(&backup, &segs[1]).unwrap();
    let tmp = dir.path().join("swap.bak");
    std::fs::rename(&segs[1], &tmp).unwrap();
    std::fs::rename(&segs[2], &segs[1]).unwrap();
    std::fs::rename(&tmp, &segs[2]).unwrap();
    let err = refused_start(dir.path(), &[]);
    let named = segs[1..].iter().any(|s| err.contains(&*s.file_name().unwrap().to_string_lossy()));
    assert!(named && err.contains("offset 0"), "reordered segments: {err}");
}

fn snapshots(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join("snapshots"))
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    v.retain(|p| p.extension().is_some_and(|e| e == "snap"));
    v.sort();
    v
}

/// Pays until at least `n` snapshots exist (the daemon takes one every 20 records).
fn with_snapshots(daemon: &TestDaemon, n: usize) -> Vec<u128> {
    let mut client = daemon.client();
    open_accounts(&mut client);
    let mut ids = Vec::new();
    let mut next = 100u128;
    let deadline = Instant::now() + WAIT_MAX;
    while snapshots(&daemon.data_dir).len() < n {
        ids.extend(pay(&mut client, next, 10).iter().map(|t| t.id));
        next += 10;
        std::thread::sleep(Duration::from_millis(20));
        assert!(Instant::now() < deadline, "no {n} snapshots in time");
    }
    ids.extend(pay(&mut client, next, 5).iter().map(|t| t.id));
    ids
}

#[test]
fn damaged_newest_snapshot_falls_back_to_an_older_one() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--snapshot-every-records", "20", "--snapshots-keep", "3"];
    let mut daemon = TestDaemon::start_with(dir.path(), &args);
    let ids = with_snapshots(&daemon, 2);
    let hash = hash_hex(&mut daemon.client());
    daemon.stop();
    let snaps = snapshots(dir.path());
    let newest = snaps.last().unwrap();
    let len = std::fs::metadata(newest).unwrap().len();
    write_at(newest, len - 10, b"\xff\x00\xff");
    let (_, _, report) = ledgerd::recovery::rebuild(dir.path(), None, true, &mut |_| {}).unwrap();
    assert!(!report.skipped_snapshots.is_empty(), "the damaged snapshot was not skipped");
    assert!(report.snapshot_sequence.is_some(), "no older snapshot was used");
    let mut daemon = TestDaemon::start_with(dir.path(), &args);
    assert_eq!(present(&mut daemon.client(), &ids), ids);
    assert_eq!(hash_hex(&mut daemon.client()), hash);
    // Every snapshot damaged: a full replay.
    daemon.stop();
    for s in snapshots(dir.path()) {
        write_at(&s, 20, b"\x01\x02\x03\x04");
    }
    let (_, _, report) = ledgerd::recovery::rebuild(dir.path(), None, true, &mut |_| {}).unwrap();
    assert_eq!(report.snapshot_sequence, None);
    let daemon = TestDaemon::start_with(dir.path(), &args);
    assert_eq!(hash_hex(&mut daemon.client()), hash);
}

#[test]
fn snapshot_of_another_journal_is_not_used() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let args = ["--snapshot-every-records", "20"];
    let mut daemon_a = TestDaemon::start_with(a.path(), &args);
    with_snapshots(&daemon_a, 1);
    daemon_a.stop();
    // Journal B: another history, long enough to hold every sequence A's snapshots name.
    let mut daemon_b = TestDaemon::start(b.path());
    let mut client = daemon_b.client();
    open_accounts(&mut client);
    let last_a = JournalReader::open(a.path()).unwrap().verify().last_sequence;
    let ids: Vec<u128> =
        pay(&mut client, 50_000, last_a as u128 + 5).iter().map(|t| t.id).collect();
    let hash = hash_hex(&mut client);
    daemon_b.stop();
    std::fs::create_dir_all(b.path().join("snapshots")).unwrap();
    for s in snapshots(a.path()) {
        std::fs::copy(&s, b.path().join("snapshots").join(s.file_name().unwrap())).unwrap();
    }
    let (_, _, report) = ledgerd::recovery::rebuild(b.path(), None, true, &mut |_| {}).unwrap();
    assert_eq!(report.snapshot_sequence, None, "a foreign snapshot was used");
    let daemon_b = TestDaemon::start(b.path());
    assert_eq!(hash_hex(&mut daemon_b.client()), hash);
    assert_eq!(present(&mut daemon_b.client(), &ids).len(), ids.len());
}

// ---- journal I/O errors ----

/// Sends `batch` until it is not refused with `journal_unavailable` (the daemon waits a short
/// backoff after a journal failure before it tries the journal again); bounded.
fn create_when_healthy(
    client: &mut Client,
    batch: &[Transfer],
) -> Vec<ledgerd::types::CreateResult> {
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        match client.create_transfers(batch) {
            Err(ClientError::Status(Status::JournalUnavailable)) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10))
            }
            other => return other.expect("create after the fault cleared"),
        }
    }
}

fn refused_unavailable(result: Result<Vec<ledgerd::types::CreateResult>, ClientError>) {
    match result {
        Err(ClientError::Status(Status::JournalUnavailable)) => {}
        other => panic!("expected journal_unavailable, got {other:?}"),
    }
}

#[test]
fn failed_flush_answers_journal_unavailable_and_applies_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let faulty = Faulty::start(&data);
    let mut client = faulty.daemon.client();
    open_accounts(&mut client);
    pay(&mut client, 100, 3);
    for (i, fault) in ["flush-once EIO", "append-once ENOSPC"].iter().enumerate() {
        let before = hash_hex(&mut client);
        faulty.set(fault);
        let t = transfer(200 + i as u128, 1, 2, 7);
        refused_unavailable(client.create_transfers(&[t]));
        // "Nothing was applied": not served now, not after the rebuild, not after a restart.
        assert_eq!(present(&mut client, &[t.id]), Vec::<u128>::new(), "{fault}");
        assert_eq!(hash_hex(&mut client), before, "{fault}");
        faulty.set("clear");
        // Writes work again (after the short backoff).
        assert!(create_when_healthy(&mut client, &[transfer(300 + i as u128, 1, 3, 1)]).is_empty());
    }
    let hash = hash_hex(&mut client);
    let mut faulty = faulty;
    faulty.daemon.kill();
    faulty.daemon.restart();
    let mut client = faulty.daemon.client();
    assert_eq!(present(&mut client, &[200, 201]), Vec::<u128>::new());
    assert_eq!(present(&mut client, &[300, 301]), vec![300, 301]);
    assert_eq!(hash_hex(&mut client), hash);
    // The ids were never used: the same requests now succeed.
    let again = [transfer(200, 1, 2, 7), transfer(201, 1, 2, 7)];
    assert!(create_when_healthy(&mut client, &again).is_empty());
}

#[test]
fn disk_full_by_fault_injection_refuses_writes_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut faulty = Faulty::start(&data);
    let mut client = faulty.daemon.client();
    open_accounts(&mut client);
    let acked: Vec<u128> = pay(&mut client, 100, 20).iter().map(|t| t.id).collect();
    let hash = hash_hex(&mut client);
    faulty.set("append ENOSPC");
    // Several clients keep writing during the fault: every write is refused, every read sees
    // exactly the durable state.
    let refused: Vec<Transfer> = (0..30).map(|i| transfer(500 + i, 1, 2, 1)).collect();
    let handles: Vec<_> = refused
        .chunks(10)
        .map(|chunk| {
            let chunk = chunk.to_vec();
            let mut c = faulty.daemon.client();
            std::thread::spawn(move || {
                for t in chunk {
                    refused_unavailable(c.create_transfers(&[t]));
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let refused_ids: Vec<u128> = refused.iter().map(|t| t.id).collect();
    assert_eq!(present(&mut client, &refused_ids), Vec::<u128>::new());
    assert_eq!(present(&mut client, &acked), acked);
    assert_eq!(hash_hex(&mut client), hash);
    let (code, metrics) = faulty.daemon.http_get("/metrics");
    assert_eq!(code, 200);
    assert!(metrics.contains("journal_errors"), "no journal error metric:\n{metrics}");
    // Space returns: the same requests go through.
    faulty.set("clear");
    let results = create_when_healthy(&mut client, &refused);
    assert!(results.is_empty(), "{results:?}");
    let all: Vec<u128> = acked.iter().chain(&refused_ids).copied().collect();
    faulty.daemon.kill();
    faulty.daemon.restart();
    let mut client = faulty.daemon.client();
    assert_eq!(present(&mut client, &all), all);
    assert_eq!(hash_hex(&mut client), common::replay_hash(&data));
}

/// A tmpfs of `mib` MiB mounted at `dir`, unmounted on drop; `None` where mounting is not
/// permitted.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, mib: u64) -> Option<Tmpfs> {
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn disk_full_on_a_small_filesystem_refuses_writes_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let mount = dir.path().join("fs");
    std::fs::create_dir(&mount).unwrap();
    let Some(_fs) = Tmpfs::mount(&mount, 20) else {
        eprintln!("SKIPPED: cannot mount a tmpfs here; the fault-injection test covers disk full");
        return;
    };
    let data = mount.join("data");
    // 20 MiB: the first 8 MiB segment, a 9 MiB filler, and no room for a second segment.
    let mut daemon = TestDaemon::start_with(&data, &["--snapshot-every-records", "0"]);
    let filler = mount.join("filler");
    std::fs::write(&filler, vec![1u8; 9 << 20]).unwrap();
    let mut client = daemon.client();
    open_accounts(&mut client);
    let mut acked: Vec<u128> = Vec::new();
    let mut refused: Vec<Vec<Transfer>> = Vec::new();
    let mut id = 1_000u128;
    while refused.len() < 3 {
        let batch: Vec<Transfer> = (0..4000).map(|i| transfer(id + i, 1, 2 + (i % 8), 1)).collect();
        id += 4000;
        match client.create_transfers(&batch) {
            Ok(results) => {
                assert!(results.is_empty());
                acked.extend(batch.iter().map(|t| t.id));
            }
            Err(ClientError::Status(Status::JournalUnavailable)) => refused.push(batch),
            Err(e) => panic!("unexpected error on a full disk: {e}"),
        }
        assert!(id < 2_000_000, "the filesystem never filled up");
    }
    assert!(!acked.is_empty());
    let hash = hash_hex(&mut client);
    for chunk in acked.chunks(8000) {
        assert_eq!(present(&mut client, chunk).len(), chunk.len(), "acked lost while full");
    }
    for batch in &refused {
        let ids: Vec<u128> = batch.iter().map(|t| t.id).collect();
        assert!(present(&mut client, &ids).is_empty(), "a refused request was applied");
    }
    // Space returns.
    std::fs::remove_file(&filler).unwrap();
    for batch in &refused {
        assert!(create_when_healthy(&mut client, batch).is_empty());
        acked.extend(batch.iter().map(|t| t.id));
    }
    assert_ne!(hash_hex(&mut client), hash);
    daemon.kill();
    daemon.restart();
    let mut client = daemon.client();
    for chunk in acked.chunks(8000) {
        assert_eq!(present(&mut client, chunk).len(), chunk.len(), "acked lost after restart");
    }
    assert_eq!(hash_hex(&mut client), common::replay_hash(&data));
    daemon.kill();
}
