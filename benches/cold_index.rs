//! Cold index benchmark: one thread indexing transfers (requests of 8189 transfers over 100k
//! accounts, 1 in 10 with `history`), then point reads of old ids, negative lookups through the
//! id filter and `account_transfers` pages of 100. Prints `name: value` lines.
//!
//! `LEDGERD_COLD_TRANSFERS` sets how many transfers are indexed (default 2M). Under
//! `cargo test` (or with `LEDGERD_BENCH_SMOKE=1`) a smoke run of about a second.

#[path = "common/mod.rs"]
mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use ledgerd::cold::{ColdConfig, ColdIndex};
use ledgerd::event::{self, Event};
use ledgerd::state_machine::StateMachine;
use ledgerd::types::{Account, AccountFilter, AccountFilterFlags, AccountFlags, Transfer};

const ACCOUNTS: u64 = 100_000;
const TRANSFERS_PER_REQUEST: usize = 8189;
/// Records per index batch: about 64k transfers, as the indexer groups them
/// (`LEDGERD_COLD_BATCH_RECORDS` to change).
const RECORDS_PER_BATCH: usize = 8;
const FIRST_TRANSFER_ID: u128 = 1 << 64;

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("histogram bounds")
}

fn main() {
    let full = common::full_run();
    common::announce("cold_index", full);
    let transfers: u64 = if full {
        std::env::var("LEDGERD_COLD_TRANSFERS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2_000_000)
    } else {
        20_000
    };
    let probes = if full { 20_000 } else { 1_000 };
    let dir = common::data_dir();
    println!("cold.transfers: {transfers}");
    let config = ColdConfig {
        transfers_max: transfers,
        failed_ids_max: 1 << 16,
        // `LEDGERD_COLD_WORKERS`: fjall's flush and compaction threads.
        worker_threads: std::env::var("LEDGERD_COLD_WORKERS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(ColdConfig::default().worker_threads),
        // `LEDGERD_COLD_MEMTABLE_MB`: each keyspace's memtable size.
        memtable_bytes: std::env::var("LEDGERD_COLD_MEMTABLE_MB")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(ColdConfig::default().memtable_bytes, |mb| mb << 20),
        // `LEDGERD_COLD_INGEST_MIN`: batches of at least this many transfers are ingested as
        // a table (u64::MAX: never).
        ingest_transfers_min: std::env::var("LEDGERD_COLD_INGEST_MIN")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(ColdConfig::default().ingest_transfers_min, |n| {
                usize::try_from(n).unwrap_or(usize::MAX)
            }),
        ..ColdConfig::default()
    };
    println!("cold.memtable_mb: {}", config.memtable_bytes >> 20);
    println!("cold.worker_threads: {}", config.worker_threads);
    println!("cold.ingest_transfers_min: {}", config.ingest_transfers_min);
    let records_per_batch = std::env::var("LEDGERD_COLD_BATCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(RECORDS_PER_BATCH);
    println!("cold.batch_records: {records_per_batch}");
    let index = ColdIndex::open(dir.path(), &config).expect("open the index");

    // Events come from the real state machine; only the index's work is timed.
    let mut sm = StateMachine::with_capacity(ACCOUNTS as usize, transfers as usize);
    let mut rng = common::Rng(0x5eed);
    let mut results = Vec::new();
    let mut ev = Event::default();
    let mut bytes = rkyv::util::AlignedVec::<16>::new();
    let mut now = 1_000_000_000_000u64;
    let mut seq = 0u64;
    let mut records = Vec::new();
    for first in (1..=ACCOUNTS).step_by(8189) {
        let accounts: Vec<Account> = (first..(first + 8189).min(ACCOUNTS + 1))
            .map(|id| Account {
                id: u128::from(id),
                ledger: 1,
                code: 1,
                flags: if id % 10 == 0 { AccountFlags::HISTORY } else { 0 },
                ..Default::default()
            })
            .collect();
        sm.create_accounts(now, &accounts, &mut results, &mut ev);
        assert!(results.is_empty());
        event::encode(&ev, &mut bytes);
        records.push(bytes.clone());
    }
    let mut created = 0u64;
    let mut index_time = (Duration::ZERO, Duration::ZERO);
    let mut key_writes = 0u64;
    let mut batch_records: Vec<rkyv::util::AlignedVec<16>> = std::mem::take(&mut records);
    let flush = |batch_records: &mut Vec<rkyv::util::AlignedVec<16>>,
                 seq: &mut u64,
                 index_time: &mut (Duration, Duration)| {
        let started = Instant::now();
        let mut batch = index.batch();
        for body in batch_records.drain(..) {
            *seq += 1;
            let archived = event::access(&body).expect("an event");
            batch.add(*seq, archived).expect("index a record");
        }
        let added = Instant::now();
        batch.commit().expect("commit a batch");
        index_time.0 += started.elapsed();
        index_time.1 += added.elapsed();
    };
    flush(&mut batch_records, &mut seq, &mut index_time);
    while created < transfers {
        now += 1_000_000;
        let n = TRANSFERS_PER_REQUEST.min((transfers - created) as usize);
        let request: Vec<Transfer> = (0..n)
            .map(|i| {
                let dr = 1 + rng.below(ACCOUNTS);
                let cr = 1 + (dr + rng.below(ACCOUNTS - 1)) % ACCOUNTS;
                common::transfer(
                    FIRST_TRANSFER_ID + u128::from(created) + i as u128,
                    u128::from(dr),
                    u128::from(cr),
                    1,
                )
            })
            .collect();
        sm.create_transfers(now, &request, &mut results, &mut ev);
        assert!(results.is_empty(), "{:?}", &results[..1]);
        created += n as u64;
        // A transfer writes its record and two account-list entries; history rows besides.
        key_writes += 3 * n as u64
            + request
                .iter()
                .map(|t| {
                    u64::from(t.debit_account_id % 10 == 0)
                        + u64::from(t.credit_account_id % 10 == 0)
                })
                .sum::<u64>();
        event::encode(&ev, &mut bytes);
        batch_records.push(bytes.clone());
        if batch_records.len() == records_per_batch {
            flush(&mut batch_records, &mut seq, &mut index_time);
        }
    }
    flush(&mut batch_records, &mut seq, &mut index_time);
    assert_eq!(index.watermark().transfers, transfers);
    let secs = index_time.0.as_secs_f64();
    println!("cold.index_s: {secs:.2}");
    // Building batches (decoding, keys, filter bits) against fjall's commit (its journal
    // write and memtable inserts, and any write stall while flushes and compactions catch up).
    println!("cold.index_commit_share: {:.2}", index_time.1.as_secs_f64() / secs);
    println!("cold.inserts_per_s: {:.0}", transfers as f64 / secs);
    println!("cold.key_writes_per_s: {:.0}", key_writes as f64 / secs);

    // Point reads of random ids in the older half.
    let mut h = histogram();
    for _ in 0..probes {
        let id = FIRST_TRANSFER_ID + u128::from(rng.below((transfers / 2).max(1)));
        let started = Instant::now();
        let found = index.transfer(id).expect("read");
        h.record(started.elapsed().as_nanos() as u64).unwrap();
        assert!(found.is_some());
    }
    println!("cold.get_us_p50: {:.2}", h.value_at_quantile(0.5) as f64 / 1e3);
    println!("cold.get_us_p99: {:.2}", h.value_at_quantile(0.99) as f64 / 1e3);

    // Negative lookups: ids never created, answered by the filter.
    let absent: Vec<u128> = (0..probes * 10).map(|i| (i as u128) << 96 | 7).collect();
    let started = Instant::now();
    let mut maybe = 0usize;
    for id in &absent {
        maybe += usize::from(index.may_contain_transfer(black_box(*id)));
    }
    let elapsed = started.elapsed();
    println!("cold.filter_ns: {:.1}", elapsed.as_nanos() as f64 / absent.len() as f64);
    println!("cold.filter_false_positive_rate: {:.4}", maybe as f64 / absent.len() as f64);

    // Pages of 100 of random accounts' transfers, oldest first: while fjall still flushes and
    // compacts what was just written, and again once it is done.
    let mut out = Vec::new();
    let pages = |index: &ColdIndex, rng: &mut common::Rng, out: &mut Vec<Transfer>| {
        let mut h = histogram();
        let mut returned = 0usize;
        for _ in 0..probes / 10 {
            let filter = AccountFilter {
                account_id: u128::from(1 + rng.below(ACCOUNTS)),
                limit: 100,
                flags: AccountFilterFlags::DEBITS | AccountFilterFlags::CREDITS,
                ..Default::default()
            };
            let started = Instant::now();
            index.account_transfers(&filter, out).expect("query");
            h.record(started.elapsed().as_nanos() as u64).unwrap();
            returned += out.len();
        }
        (h, returned as f64 / (probes / 10) as f64)
    };
    let (busy, _) = pages(&index, &mut rng, &mut out);
    let settle = Instant::now();
    while index.background_work() != (0, 0) && settle.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(10));
    }
    println!("cold.settle_s: {:.1}", settle.elapsed().as_secs_f64());
    // Point reads again, once fjall has merged what the indexing left in level 0.
    let mut h = histogram();
    for _ in 0..probes {
        let id = FIRST_TRANSFER_ID + u128::from(rng.below((transfers / 2).max(1)));
        let started = Instant::now();
        let found = index.transfer(id).expect("read");
        h.record(started.elapsed().as_nanos() as u64).unwrap();
        assert!(found.is_some());
    }
    println!("cold.get_settled_us_p50: {:.2}", h.value_at_quantile(0.5) as f64 / 1e3);
    println!("cold.get_settled_us_p99: {:.2}", h.value_at_quantile(0.99) as f64 / 1e3);
    println!("cold.query_busy_us_p50: {:.1}", busy.value_at_quantile(0.5) as f64 / 1e3);
    println!("cold.query_busy_us_p99: {:.1}", busy.value_at_quantile(0.99) as f64 / 1e3);
    let (h, per_page) = pages(&index, &mut rng, &mut out);
    println!("cold.query_transfers_per_page: {per_page:.1}");
    println!("cold.query_us_p50: {:.1}", h.value_at_quantile(0.5) as f64 / 1e3);
    println!("cold.query_us_p99: {:.1}", h.value_at_quantile(0.99) as f64 / 1e3);
    println!("cold.index_disk_mb: {:.1}", dir_bytes(&dir.path().join("index")) as f64 / 1e6);
    drop(index);
    layout_with_records(&sm, transfers, probes, &mut rng);
    redb_candidate(&sm, transfers, probes, &mut rng);
}

/// The same transfers and account lists (no balance rows) in redb: one write transaction per
/// 64k transfers without fsync (`Durability::None`, like fjall's unsynced batches), writes in
/// key order; a read transaction per lookup and per page.
fn redb_candidate(sm: &StateMachine, transfers: u64, probes: usize, rng: &mut common::Rng) {
    use redb::{ReadableDatabase, ReadableTable, TableDefinition};
    const TRANSFERS: TableDefinition<u128, &[u8]> = TableDefinition::new("transfers");
    const ACCOUNT_TRANSFERS: TableDefinition<(u128, u64), &[u8]> =
        TableDefinition::new("account_transfers");
    let dir = common::data_dir();
    let db = redb::Database::create(dir.path().join("index.redb")).expect("create redb");
    let started = Instant::now();
    let mut rows_t: Vec<(u128, [u8; Transfer::SIZE + 1])> = Vec::new();
    let mut rows_a: Vec<((u128, u64), [u8; 17])> = Vec::new();
    for first in (0..transfers).step_by(65_536) {
        for i in first..(first + 65_536).min(transfers) {
            let t = sm.transfer_by_id(FIRST_TRANSFER_ID + u128::from(i)).expect("created");
            let mut value = [0u8; Transfer::SIZE + 1];
            t.write_to(&mut value[..Transfer::SIZE]);
            rows_t.push((t.id, value));
            for (account, side) in [(t.debit_account_id, 1u8), (t.credit_account_id, 2u8)] {
                let mut v = [0u8; 17];
                v[..16].copy_from_slice(&t.id.to_be_bytes());
                v[16] = side;
                rows_a.push(((account, t.timestamp), v));
            }
        }
        rows_t.sort_unstable_by_key(|(k, _)| *k);
        rows_a.sort_unstable_by_key(|(k, _)| *k);
        let mut txn = db.begin_write().expect("write transaction");
        txn.set_durability(redb::Durability::None).expect("durability");
        {
            let mut table = txn.open_table(TRANSFERS).expect("table");
            for (k, v) in rows_t.drain(..) {
                table.insert(k, v.as_slice()).expect("insert");
            }
            let mut table = txn.open_table(ACCOUNT_TRANSFERS).expect("table");
            for (k, v) in rows_a.drain(..) {
                table.insert(k, v.as_slice()).expect("insert");
            }
        }
        txn.commit().expect("commit");
    }
    let secs = started.elapsed().as_secs_f64();
    println!("cold.redb.inserts_per_s: {:.0}", transfers as f64 / secs);
    println!("cold.redb.key_writes_per_s: {:.0}", 3.0 * transfers as f64 / secs);

    let mut h = histogram();
    for _ in 0..probes {
        let id = FIRST_TRANSFER_ID + u128::from(rng.below((transfers / 2).max(1)));
        let started = Instant::now();
        let txn = db.begin_read().expect("read transaction");
        let table = txn.open_table(TRANSFERS).expect("table");
        let found = table.get(id).expect("get").map(|v| Transfer::read_from(&v.value()[..128]));
        h.record(started.elapsed().as_nanos() as u64).unwrap();
        assert!(found.is_some());
    }
    println!("cold.redb.get_us_p50: {:.2}", h.value_at_quantile(0.5) as f64 / 1e3);
    println!("cold.redb.get_us_p99: {:.2}", h.value_at_quantile(0.99) as f64 / 1e3);

    let mut h = histogram();
    let mut out: Vec<Transfer> = Vec::new();
    for _ in 0..probes / 10 {
        let account = u128::from(1 + rng.below(ACCOUNTS));
        let started = Instant::now();
        let txn = db.begin_read().expect("read transaction");
        let lists = txn.open_table(ACCOUNT_TRANSFERS).expect("table");
        let records = txn.open_table(TRANSFERS).expect("table");
        out.clear();
        for entry in lists.range((account, 0)..=(account, u64::MAX)).expect("range").take(100) {
            let (_, v) = entry.expect("entry");
            let id = u128::from_be_bytes(v.value()[..16].try_into().expect("16 bytes"));
            let record = records.get(id).expect("get").expect("listed transfer exists");
            out.push(Transfer::read_from(&record.value()[..128]));
        }
        h.record(started.elapsed().as_nanos() as u64).unwrap();
        black_box(&out);
    }
    println!("cold.redb.query_us_p50: {:.1}", h.value_at_quantile(0.5) as f64 / 1e3);
    println!("cold.redb.query_us_p99: {:.1}", h.value_at_quantile(0.99) as f64 / 1e3);
    println!("cold.redb.disk_mb: {:.1}", dir_bytes(dir.path()) as f64 / 1e6);
}

/// The other layout of `account_transfers`: the record itself as the value (a page is one
/// range scan, no point reads), measured with fjall alone on the same transfers.
fn layout_with_records(sm: &StateMachine, transfers: u64, probes: usize, rng: &mut common::Rng) {
    let dir = common::data_dir();
    let db = fjall::Database::builder(dir.path()).worker_threads(1).open().expect("open");
    let ks = db.keyspace("account_records", fjall::KeyspaceCreateOptions::default).expect("ks");
    let key = |account: u128, ts: u64| {
        let mut k = [0u8; 24];
        k[..16].copy_from_slice(&account.to_be_bytes());
        k[16..].copy_from_slice(&ts.to_be_bytes());
        k
    };
    // Batches of 64k transfers, written in key order like the index's.
    let started = Instant::now();
    let mut rows: Vec<([u8; 24], [u8; Transfer::SIZE + 1])> = Vec::new();
    let write = |rows: &mut Vec<([u8; 24], [u8; Transfer::SIZE + 1])>| {
        rows.sort_unstable_by_key(|(k, _)| *k);
        let mut batch = db.batch();
        for (k, v) in rows.drain(..) {
            batch.insert(&ks, k.as_slice(), v.as_slice());
        }
        batch.commit().expect("commit");
    };
    for i in 0..transfers {
        let t = sm.transfer_by_id(FIRST_TRANSFER_ID + u128::from(i)).expect("created");
        for (account, side) in [(t.debit_account_id, 1u8), (t.credit_account_id, 2u8)] {
            let mut value = [0u8; Transfer::SIZE + 1];
            t.write_to(&mut value[..Transfer::SIZE]);
            value[Transfer::SIZE] = side;
            rows.push((key(account, t.timestamp), value));
        }
        if rows.len() >= 2 * 65_536 {
            write(&mut rows);
        }
    }
    write(&mut rows);
    let secs = started.elapsed().as_secs_f64();
    println!("cold.layout_records.key_writes_per_s: {:.0}", 2.0 * transfers as f64 / secs);
    let mut h = histogram();
    let mut out: Vec<Transfer> = Vec::new();
    for _ in 0..probes / 10 {
        let account = u128::from(1 + rng.below(ACCOUNTS));
        let started = Instant::now();
        out.clear();
        for guard in ks.range(key(account, 0)..=key(account, u64::MAX)).take(100) {
            let (_, value) = guard.into_inner().expect("read");
            out.push(Transfer::read_from(&value[..Transfer::SIZE]));
        }
        h.record(started.elapsed().as_nanos() as u64).unwrap();
        black_box(&out);
    }
    println!("cold.layout_records.query_us_p50: {:.1}", h.value_at_quantile(0.5) as f64 / 1e3);
    println!("cold.layout_records.query_us_p99: {:.1}", h.value_at_quantile(0.99) as f64 / 1e3);
    println!("cold.layout_records.disk_mb: {:.1}", dir_bytes(dir.path()) as f64 / 1e6);
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            total += if path.is_dir() {
                dir_bytes(&path)
            } else {
                // Allocated blocks: fjall preallocates its journal files.
                entry.metadata().map_or(0, |m| m.blocks() * 512)
            };
        }
    }
    total
}
