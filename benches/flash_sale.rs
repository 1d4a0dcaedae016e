//! Flash sale: one stock account that may not go below zero (`debits_must_not_exceed_credits`),
//! 1,000 buyers, far more purchase attempts (transfers of 1 unit from the stock to a buyer)
//! than units in stock.
//! - unbatched: 1,000 connections, one per buyer, one attempt per request, one in flight;
//! - batched: the same 1,000 buyers' attempts gathered by 8 gateway connections into requests
//!   of 1,000 attempts, 4 in flight each.
//!
//! Asserts that exactly the stock was sold: the successes the clients counted, the stock
//! account's debits and the buyers' credits all equal the stock, and every other attempt failed
//! with `exceeds_credits`.
//!
//! `cargo bench --bench flash_sale` runs it all; `cargo test` (or `LEDGERD_BENCH_SMOKE=1`) runs
//! a smoke version with the same checks.

mod common;

use std::time::Duration;

use common::load::{self, Spec, Workload};
use common::{report, Daemon, Rng};
use ledgerd::protocol::{decode_create_results, Operation, Status};
use ledgerd::types::{AccountFlags, CreateResult, ResultCode, Transfer};

const BUYERS: u64 = 1000;
const WAREHOUSE: u128 = 1;
const BUYER_FIRST: u128 = 1_000;

struct Phase {
    name: &'static str,
    stock_account: u128,
    stock: u64,
    attempts: u64,
    batch: usize,
    connections: usize,
    window: usize,
}

fn main() {
    let full = common::full_run();
    common::announce("flash_sale", full);
    let (buyers, phases) = if full {
        (
            BUYERS,
            [
                Phase {
                    name: "unbatched",
                    stock_account: 10,
                    stock: 100_000,
                    attempts: 1_000_000,
                    batch: 1,
                    connections: BUYERS as usize,
                    window: 1,
                },
                Phase {
                    name: "batched",
                    stock_account: 11,
                    stock: 1_000_000,
                    attempts: 10_000_000,
                    batch: 1000,
                    connections: 8,
                    window: 4,
                },
            ],
        )
    } else {
        (
            200,
            [
                Phase {
                    name: "unbatched",
                    stock_account: 10,
                    stock: 500,
                    attempts: 2_000,
                    batch: 1,
                    connections: 200,
                    window: 1,
                },
                Phase {
                    name: "batched",
                    stock_account: 11,
                    stock: 5_000,
                    attempts: 20_000,
                    batch: 100,
                    connections: 4,
                    window: 4,
                },
            ],
        )
    };
    let data = common::data_dir();
    // 1,000 buyers connect from one loopback address: above the default per-address cap.
    let mut daemon = Daemon::start(
        data.path(),
        &["--connections-max", "2048", "--connections-per-address-max", "2048"],
    );
    let mut client = daemon.client();
    common::create_accounts(&mut client, WAREHOUSE, 1, 0);
    common::create_accounts(&mut client, BUYER_FIRST, buyers, 0);
    let mut next_id: u128 = 1;
    let mut series = Vec::new();
    for p in &phases {
        common::create_accounts(
            &mut client,
            p.stock_account,
            1,
            AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS,
        );
        let restock = common::transfer(next_id, WAREHOUSE, p.stock_account, u128::from(p.stock));
        next_id += 1;
        assert!(client.create_transfers(&[restock]).expect("restock").is_empty());
        let buyers_before = buyer_credits(&mut client, buyers);

        let mut work = Purchases {
            stock_account: p.stock_account,
            buyers,
            batch: p.batch,
            next_id,
            rng: Rng(0x000f_1a54_5a1e),
            sold: 0,
            refused: 0,
            results: Vec::new(),
        };
        let spec = Spec {
            connections: p.connections,
            window: p.window,
            requests_max: p.attempts / p.batch as u64,
            duration_max: Duration::from_secs(120),
            rate_per_s: None,
            operation: Operation::CreateTransfers,
        };
        let out = load::run(daemon.addr, &spec, &mut work);
        next_id = work.next_id;

        // Exactly the stock was sold, by every count.
        assert_eq!(work.sold, p.stock, "units the clients were told they bought");
        assert_eq!(work.sold + work.refused, out.events);
        let stock = &client.lookup_accounts(&[p.stock_account]).expect("lookup stock")[0];
        assert_eq!(stock.debits_posted, u128::from(p.stock), "stock account debits");
        assert_eq!(stock.credits_posted, u128::from(p.stock), "stock account credits");
        let buyers_after = buyer_credits(&mut client, buyers);
        assert_eq!(buyers_after - buyers_before, u128::from(p.stock), "units the buyers hold");

        let prefix = format!("flash_sale.{}", p.name);
        println!("{prefix}.stock: {}", p.stock);
        println!("{prefix}.attempts: {}", out.events);
        println!("{prefix}.sold: {}", work.sold);
        println!("{prefix}.connections: {}", p.connections);
        println!("{prefix}.attempts_per_s: {:.0}", out.events_per_s());
        println!("{prefix}.requests_per_s: {:.0}", out.requests_per_s());
        report::print_latency(&prefix, &out.latency, false);
        println!("{prefix}.exactly_sold: ok");
        series.push((p.name.to_string(), out.latency));
    }
    drop(client);
    daemon.stop();
    let dir = common::results_dir(if full { "flash_sale" } else { "flash_sale-smoke" });
    report::write_all(&dir, "ledgerd flash sale: per-request latency", &series);
}

/// The units all buyers hold.
fn buyer_credits(client: &mut ledgerd_client::Client, buyers: u64) -> u128 {
    let ids: Vec<u128> = (0..u128::from(buyers)).map(|i| BUYER_FIRST + i).collect();
    let mut total = 0;
    for chunk in ids.chunks(8000) {
        for a in client.lookup_accounts(chunk).expect("lookup buyers") {
            total += a.credits_posted;
        }
    }
    total
}

/// One attempt = a transfer of 1 unit from the stock account to a buyer: in the unbatched
/// phase connection i is buyer i; in the batched phase each attempt is a random buyer's.
struct Purchases {
    stock_account: u128,
    buyers: u64,
    batch: usize,
    next_id: u128,
    rng: Rng,
    sold: u64,
    refused: u64,
    results: Vec<CreateResult>,
}

impl Workload for Purchases {
    fn body(&mut self, conn: usize, out: &mut Vec<u8>) -> u32 {
        let start = out.len();
        out.resize(start + self.batch * Transfer::SIZE, 0);
        for chunk in out[start..].chunks_exact_mut(Transfer::SIZE) {
            let buyer = if self.batch == 1 {
                conn as u64 % self.buyers
            } else {
                self.rng.below(self.buyers)
            };
            common::transfer(self.next_id, self.stock_account, BUYER_FIRST + u128::from(buyer), 1)
                .write_to(chunk);
            self.next_id += 1;
        }
        self.batch as u32
    }

    fn reply(&mut self, _conn: usize, events: u32, status: Status, body: &[u8]) {
        assert_eq!(status, Status::Ok, "request refused: {}", status.name());
        self.results.clear();
        decode_create_results(body, events as usize, &mut self.results).expect("create results");
        for r in &self.results {
            assert_eq!(r.result, ResultCode::ExceedsCredits, "only a sold-out stock may refuse");
        }
        self.refused += self.results.len() as u64;
        self.sold += u64::from(events) - self.results.len() as u64;
    }
}
