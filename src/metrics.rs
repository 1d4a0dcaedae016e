//! Process-wide counters and gauges, rendered in the Prometheus text format.
//!
//! Everything is a relaxed atomic written by the thread that owns the fact (network threads
//! for connections and rejections, the business thread for requests, events, batches and
//! flushes) and read by the metrics endpoint. Nothing here allocates after construction.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::protocol::{Operation, Status};
use crate::types::ResultCode;

/// Upper bounds (inclusive) of the histogram buckets for batch sizes, in requests.
const BATCH_BUCKETS: [u64; 8] = [1, 4, 16, 64, 256, 1024, 4096, 16384];
/// Upper bounds (inclusive) of the histogram buckets for flush latency, in microseconds.
const FLUSH_BUCKETS_US: [u64; 10] =
    [50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 50_000, 250_000];

/// Operations counted per operation (indexed by the operation number).
pub const OPERATION_SLOTS: usize = 16;
/// Statuses counted per status (indexed by the status number).
pub const STATUS_SLOTS: usize = 32;

/// A histogram with fixed bucket bounds.
pub struct Buckets<const N: usize> {
    bounds: [u64; N],
    counts: [AtomicU64; N],
    overflow: AtomicU64,
    sum: AtomicU64,
}

impl<const N: usize> Buckets<N> {
    fn new(bounds: [u64; N]) -> Self {
        Buckets {
            bounds,
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            overflow: AtomicU64::new(0),
            sum: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, value: u64) {
        self.sum.fetch_add(value, Relaxed);
        match self.bounds.iter().position(|&b| value <= b) {
            Some(i) => self.counts[i].fetch_add(1, Relaxed),
            None => self.overflow.fetch_add(1, Relaxed),
        };
    }

    /// Renders bounds and sum divided by `10^scale_digits` (6 turns microseconds into
    /// seconds), printed exactly in decimal: `0.00005`, never `0.000049999999999999996`.
    fn render(&self, out: &mut String, name: &str, help: &str, scale_digits: u32) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            cumulative += count.load(Relaxed);
            let le = Decimal(*bound, scale_digits);
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        cumulative += self.overflow.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let _ = writeln!(out, "{name}_sum {}", Decimal(self.sum.load(Relaxed), scale_digits));
        let _ = writeln!(out, "{name}_count {cumulative}");
    }
}

/// `value / 10^digits` written exactly, without trailing zeros: integer arithmetic only.
struct Decimal(u64, u32);

impl std::fmt::Display for Decimal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Decimal(value, digits) = *self;
        let unit = 10u64.pow(digits);
        let (whole, frac) = (value / unit, value % unit);
        if frac == 0 {
            return write!(f, "{whole}");
        }
        let frac = format!("{frac:0width$}", width = digits as usize);
        write!(f, "{whole}.{}", frac.trim_end_matches('0'))
    }
}

/// Every metric the daemon exports.
pub struct Metrics {
    /// Requests answered, by operation and status.
    pub requests: [[AtomicU64; STATUS_SLOTS]; OPERATION_SLOTS],
    /// Create events, by operation (create_accounts, create_transfers, set_account_limits) and
    /// result code.
    pub events: [Vec<AtomicU64>; 3],
    /// Requests per consumer batch.
    pub batch_requests: Buckets<8>,
    /// Journal flush latency.
    pub flush_us: Buckets<10>,
    pub journal_sequence: AtomicU64,
    pub journal_errors: AtomicU64,
    pub expired_transfers: AtomicU64,
    pub connections_open: AtomicU64,
    pub connections_accepted: AtomicU64,
    /// Refusals, by reason (see [`Rejection`]).
    pub rejections: [AtomicU64; Rejection::COUNT],
    /// Sequences published into the ring and consumed from it: their difference is occupancy.
    pub ring_published: AtomicU64,
    pub ring_consumed: AtomicU64,
    pub ring_capacity: AtomicU64,
    /// History in the disk index: records dropped from memory, index reads that failed,
    /// and the newest event timestamp the index holds.
    pub evicted_records: AtomicU64,
    /// Transfers held in memory after the last batch (all of them without a disk index).
    pub transfers_in_memory: AtomicU64,
    pub cold_read_errors: AtomicU64,
    pub cold_watermark_sequence: AtomicU64,
    pub snapshots_taken: AtomicU64,
    /// 1 while a snapshot process runs.
    pub snapshot_running: AtomicU64,
    /// Journal sequence of the newest snapshot on disk (0: none).
    pub snapshot_sequence: AtomicU64,
    /// Changes (accounts, transfers, limits, expiries) appended to the journal since start.
    pub journal_events: AtomicU64,
    /// When the daemon started, for `status`'s uptime.
    pub started: std::time::Instant,
    pub recovery_ms: AtomicU64,
    pub ready: AtomicU64,
    pub degraded: AtomicU64,
    /// 1 when this daemon is a member of a cluster (`--cluster`).
    pub replica: AtomicU64,
    /// A cluster member's role (the `status` reply's `role`), term, commit index, the leader's
    /// position in the cluster (`u32::MAX`: unknown) and whether it can serve its role (a
    /// serving leader, or a follower that knows its leader).
    pub replica_role: AtomicU64,
    pub replica_term: AtomicU64,
    pub replica_commit: AtomicU64,
    pub replica_leader: AtomicU64,
    pub replica_ready: AtomicU64,
    /// Raft messages sent to and received from peers, and dropped (a full queue, a broken
    /// connection, an injected loss).
    pub replica_messages_sent: AtomicU64,
    pub replica_messages_received: AtomicU64,
    pub replica_messages_dropped: AtomicU64,
    /// 1 while writes are answered `journal_unavailable` (from a journal failure until a write
    /// or a probe of the journal succeeds).
    pub writes_failing: AtomicU64,
    /// Journal failures since writes last succeeded.
    pub write_failures_in_a_row: AtomicU64,
    /// `started.elapsed()` in milliseconds when writes began to fail.
    pub writes_failing_since_ms: AtomicU64,
    /// The last journal error, for `/healthz` (written on failures only, never on the
    /// request path of a healthy daemon).
    pub last_journal_error: std::sync::Mutex<String>,
    /// Hellos refused for a wrong token.
    pub auth_failures: AtomicU64,
    /// Hellos refused because their address failed too often.
    pub auth_throttled: AtomicU64,
    /// Reply memory held or reserved over all connections (updated by housekeeping).
    pub reply_memory_bytes: AtomicU64,
}

/// Why the network layer refused something.
#[derive(Clone, Copy, Debug)]
pub enum Rejection {
    ConnectionLimit = 0,
    BadFrame = 1,
    AuthFailed = 2,
    InFlightLimit = 3,
    RingFull = 4,
    IdleTimeout = 5,
    FrameTimeout = 6,
    InvalidRequest = 7,
    AddressLimit = 8,
    PreHelloLimit = 9,
    HelloTimeout = 10,
    PermissionDenied = 11,
    ReplyMemory = 12,
    WriteStall = 13,
    TlsError = 14,
}

impl Rejection {
    pub const COUNT: usize = 15;
    const NAMES: [&'static str; Self::COUNT] = [
        "connection_limit",
        "bad_frame",
        "auth_failed",
        "in_flight_limit",
        "ring_full",
        "idle_timeout",
        "frame_timeout",
        "invalid_request",
        "address_limit",
        "pre_hello_limit",
        "hello_timeout",
        "permission_denied",
        "reply_memory",
        "write_stall",
        "tls_error",
    ];
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let codes = || (0..ResultCode::ALL.len()).map(|_| AtomicU64::new(0)).collect();
        Metrics {
            requests: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            events: [codes(), codes(), codes()],
            batch_requests: Buckets::new(BATCH_BUCKETS),
            flush_us: Buckets::new(FLUSH_BUCKETS_US),
            journal_sequence: AtomicU64::new(0),
            snapshot_sequence: AtomicU64::new(0),
            snapshot_running: AtomicU64::new(0),
            journal_events: AtomicU64::new(0),
            started: std::time::Instant::now(),
            journal_errors: AtomicU64::new(0),
            expired_transfers: AtomicU64::new(0),
            connections_open: AtomicU64::new(0),
            connections_accepted: AtomicU64::new(0),
            rejections: std::array::from_fn(|_| AtomicU64::new(0)),
            ring_published: AtomicU64::new(0),
            ring_consumed: AtomicU64::new(0),
            evicted_records: AtomicU64::new(0),
            transfers_in_memory: AtomicU64::new(0),
            cold_read_errors: AtomicU64::new(0),
            cold_watermark_sequence: AtomicU64::new(0),
            ring_capacity: AtomicU64::new(0),
            snapshots_taken: AtomicU64::new(0),
            recovery_ms: AtomicU64::new(0),
            ready: AtomicU64::new(0),
            degraded: AtomicU64::new(0),
            replica: AtomicU64::new(0),
            replica_role: AtomicU64::new(0),
            replica_term: AtomicU64::new(0),
            replica_commit: AtomicU64::new(0),
            replica_leader: AtomicU64::new(u32::MAX as u64),
            replica_ready: AtomicU64::new(0),
            replica_messages_sent: AtomicU64::new(0),
            replica_messages_received: AtomicU64::new(0),
            replica_messages_dropped: AtomicU64::new(0),
            writes_failing: AtomicU64::new(0),
            write_failures_in_a_row: AtomicU64::new(0),
            writes_failing_since_ms: AtomicU64::new(0),
            last_journal_error: std::sync::Mutex::new(String::new()),
            auth_failures: AtomicU64::new(0),
            auth_throttled: AtomicU64::new(0),
            reply_memory_bytes: AtomicU64::new(0),
        }
    }

    /// Records a journal failure: writes are failing from now until [`Metrics::writes_ok`].
    pub fn write_failed(&self, error: &dyn std::fmt::Display) {
        if self.writes_failing.swap(1, Relaxed) == 0 {
            let now_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
            self.writes_failing_since_ms.store(now_ms, Relaxed);
        }
        self.write_failures_in_a_row.fetch_add(1, Relaxed);
        if let Ok(mut last) = self.last_journal_error.lock() {
            last.clear();
            let _ = write!(last, "{error}");
        }
    }

    /// Writes succeed again.
    pub fn writes_ok(&self) {
        if self.writes_failing.swap(0, Relaxed) == 1 {
            self.write_failures_in_a_row.store(0, Relaxed);
        }
    }

    /// What `/healthz` reports as wrong, or `None` when writes are served.
    pub fn health_problem(&self) -> Option<String> {
        let degraded = self.degraded.load(Relaxed) == 1;
        let failing = self.writes_failing.load(Relaxed) == 1;
        if !degraded && !failing {
            return None;
        }
        let now_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let since_ms = now_ms.saturating_sub(self.writes_failing_since_ms.load(Relaxed));
        let failures = self.write_failures_in_a_row.load(Relaxed);
        let last = self.last_journal_error.lock().map(|s| s.clone()).unwrap_or_default();
        let state = if degraded {
            "journal unavailable: the journal could not be reopened; every request is answered \
             journal_unavailable"
        } else {
            "journal writes failing: every write is answered journal_unavailable (reads are \
             served from the durable state)"
        };
        Some(format!(
            "{state}; for {}.{:03} s, {failures} failures; last error: {last}\n",
            since_ms / 1000,
            since_ms % 1000
        ))
    }

    pub fn request(&self, operation: u16, status: Status) {
        let op = (operation as usize).min(OPERATION_SLOTS - 1);
        let st = (status as usize).min(STATUS_SLOTS - 1);
        self.requests[op][st].fetch_add(1, Relaxed);
    }

    pub fn reject(&self, why: Rejection) {
        self.rejections[why as usize].fetch_add(1, Relaxed);
    }

    /// Counts create results: `failed` lists the failures, every other event was `ok`.
    pub fn events(&self, kind: usize, total: usize, failed: &[crate::types::CreateResult]) {
        let counters = &self.events[kind];
        for r in failed {
            counters[r.result as usize].fetch_add(1, Relaxed);
        }
        let ok = total.saturating_sub(failed.len()) as u64;
        counters[ResultCode::Ok as usize].fetch_add(ok, Relaxed);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        let _ = writeln!(
            out,
            "# HELP ledgerd_requests_total Requests answered, by operation and status.\n\
             # TYPE ledgerd_requests_total counter"
        );
        for (op, row) in self.requests.iter().enumerate() {
            let Some(operation) = Operation::from_u16(op as u16) else { continue };
            for (st, count) in row.iter().enumerate() {
                let n = count.load(Relaxed);
                if n == 0 {
                    continue;
                }
                let status = Status::from_u16(st as u16).map_or("other", |s| s.name());
                let _ = writeln!(
                    out,
                    "ledgerd_requests_total{{operation=\"{}\",status=\"{status}\"}} {n}",
                    operation.name()
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP ledgerd_events_total Create events, by operation and result.\n\
             # TYPE ledgerd_events_total counter"
        );
        for (kind, counters) in self.events.iter().enumerate() {
            let operation = ["create_accounts", "create_transfers", "set_account_limits"][kind];
            for (code, count) in ResultCode::ALL.iter().zip(counters) {
                let n = count.load(Relaxed);
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "ledgerd_events_total{{operation=\"{operation}\",result=\"{}\"}} {n}",
                        code.name()
                    );
                }
            }
        }
        self.batch_requests.render(
            &mut out,
            "ledgerd_batch_requests",
            "Requests handled per consumer batch (one journal flush each).",
            0,
        );
        self.flush_us.render(
            &mut out,
            "ledgerd_journal_flush_seconds",
            "Latency of one journal flush (group commit).",
            6,
        );
        let gauges: [(&str, &str, u64); 26] = [
            (
                "ledgerd_journal_sequence",
                "Last durable journal sequence.",
                self.journal_sequence.load(Relaxed),
            ),
            (
                "ledgerd_journal_errors_total",
                "Journal I/O errors.",
                self.journal_errors.load(Relaxed),
            ),
            (
                "ledgerd_expired_transfers_total",
                "Pending transfers voided by their timeout.",
                self.expired_transfers.load(Relaxed),
            ),
            (
                "ledgerd_connections",
                "Open client connections.",
                self.connections_open.load(Relaxed),
            ),
            (
                "ledgerd_connections_accepted_total",
                "Client connections accepted.",
                self.connections_accepted.load(Relaxed),
            ),
            (
                "ledgerd_ring_occupancy",
                "Requests published into the ring and not yet consumed.",
                self.ring_published.load(Relaxed).saturating_sub(self.ring_consumed.load(Relaxed)),
            ),
            ("ledgerd_ring_capacity", "Slots in the ring.", self.ring_capacity.load(Relaxed)),
            (
                "ledgerd_ring_consumed_total",
                "Ring entries consumed by the business thread.",
                self.ring_consumed.load(Relaxed),
            ),
            (
                "ledgerd_evicted_records_total",
                "Transfers, their list entries and failed ids dropped from memory (the disk index holds them).",
                self.evicted_records.load(Relaxed),
            ),
            (
                "ledgerd_transfers_in_memory",
                "Transfers held in memory after the last batch: all of them, or with --cold-index those the index does not hold yet and pending ones.",
                self.transfers_in_memory.load(Relaxed),
            ),
            (
                "ledgerd_cold_read_errors_total",
                "Reads of the disk index that failed (retried; a request is refused after three).",
                self.cold_read_errors.load(Relaxed),
            ),
            (
                "ledgerd_cold_index_sequence",
                "Last journal sequence the disk index holds (0: none, or no index).",
                self.cold_watermark_sequence.load(Relaxed),
            ),
            ("ledgerd_snapshots_total", "Snapshots written.", self.snapshots_taken.load(Relaxed)),
            (
                "ledgerd_snapshot_running",
                "1 while a snapshot process runs.",
                self.snapshot_running.load(Relaxed),
            ),
            (
                "ledgerd_replica_messages_sent_total",
                "Raft messages written to peers.",
                self.replica_messages_sent.load(Relaxed),
            ),
            (
                "ledgerd_replica_messages_received_total",
                "Raft messages received from peers.",
                self.replica_messages_received.load(Relaxed),
            ),
            (
                "ledgerd_replica_messages_dropped_total",
                "Raft messages dropped: a full queue, a broken connection (Raft sends again).",
                self.replica_messages_dropped.load(Relaxed),
            ),
            (
                "ledgerd_snapshot_sequence",
                "Journal sequence of the newest snapshot (0: none).",
                self.snapshot_sequence.load(Relaxed),
            ),
            (
                "ledgerd_recovery_milliseconds",
                "Duration of the last recovery.",
                self.recovery_ms.load(Relaxed),
            ),
            ("ledgerd_ready", "1 when the daemon serves requests.", self.ready.load(Relaxed)),
            (
                "ledgerd_degraded",
                "1 while the journal is unavailable.",
                self.degraded.load(Relaxed),
            ),
            (
                "ledgerd_replica_role",
                "A cluster member's role: 0 standalone, 1 follower, 2 candidate, 3 leader.",
                self.replica_role.load(Relaxed),
            ),
            ("ledgerd_replica_term", "A cluster member's Raft term.", self.replica_term.load(Relaxed)),
            (
                "ledgerd_replica_commit",
                "A cluster member's commit index (journal sequence).",
                self.replica_commit.load(Relaxed),
            ),
            (
                "ledgerd_replica_leader",
                "The leader's position in --cluster (4294967295: unknown).",
                self.replica_leader.load(Relaxed),
            ),
            (
                "ledgerd_writes_failing",
                "1 while writes are answered journal_unavailable.",
                self.writes_failing.load(Relaxed),
            ),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
        }
        let _ = writeln!(
            out,
            "# HELP ledgerd_rejections_total Refusals by the network layer, by reason.\n\
             # TYPE ledgerd_rejections_total counter"
        );
        for (name, count) in Rejection::NAMES.iter().zip(&self.rejections) {
            let _ = writeln!(
                out,
                "ledgerd_rejections_total{{reason=\"{name}\"}} {}",
                count.load(Relaxed)
            );
        }
        for (name, kind, help, value) in [
            (
                "ledgerd_auth_failures_total",
                "counter",
                "Hellos refused for a wrong or missing token.",
                &self.auth_failures,
            ),
            (
                "ledgerd_auth_throttled_total",
                "counter",
                "Hellos refused because their address failed too often.",
                &self.auth_throttled,
            ),
            (
                "ledgerd_reply_memory_bytes",
                "gauge",
                "Reply bytes held or reserved for requests in flight, over all connections.",
                &self.reply_memory_bytes,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}",
                value.load(Relaxed)
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_bounds_are_printed_exactly() {
        let metrics = Metrics::new();
        metrics.flush_us.observe(49);
        metrics.flush_us.observe(1_500_000);
        let text = metrics.render();
        for le in ["0.00005", "0.0001", "0.0002", "0.0005", "0.001", "0.05", "0.25"] {
            assert!(
                text.contains(&format!("ledgerd_journal_flush_seconds_bucket{{le=\"{le}\"}}")),
                "no bucket {le}:\n{text}"
            );
        }
        assert!(text.contains("ledgerd_journal_flush_seconds_sum 1.500049\n"), "{text}");
        assert!(text.contains("ledgerd_batch_requests_bucket{le=\"16384\"}"), "{text}");
        assert!(!text.contains("99999"), "{text}");
        assert_eq!(Decimal(0, 6).to_string(), "0");
        assert_eq!(Decimal(2_000_000, 6).to_string(), "2");
    }
}
