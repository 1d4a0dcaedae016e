//! A single-threaded load generator: many non-blocking connections driven by one `ppoll` loop,
//! each keeping up to `window` requests in flight.
//!
//! Closed loop (`rate_per_s: None`): a connection sends as soon as it has room in its window,
//! and latency is measured from the send. Open loop (`rate_per_s: Some(r)`): requests are
//! scheduled at a fixed total rate, evenly spread over the connections; a request whose
//! connection has no room waits, and its latency is measured from its intended send time, so
//! that a stall is charged to every request it delays (coordinated omission corrected, as
//! wrk2 does). One thread leaves the other core to the daemon on a two-core machine.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::io::AsRawFd;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use ledgerd::protocol::{
    decode_create_results, frame_begin, frame_finish, verify_checksum, Header, Operation, Status,
    HEADER_SIZE,
};
use ledgerd::types::{CreateResult, Transfer};
use ledgerd_client::Client;

use super::{report, Pick, Rng};

/// Most requests in flight per connection (the daemon's default `--in-flight-max`).
pub const WINDOW_MAX: usize = 64;
/// Bytes read from a socket per `read` call.
const READ_CHUNK: usize = 256 * 1024;

/// What to send.
pub trait Workload {
    /// Appends the body of the next request of connection `conn`; returns its event count.
    fn body(&mut self, conn: usize, out: &mut Vec<u8>) -> u32;
    /// Checks one reply (its request had `events` events).
    fn reply(&mut self, conn: usize, events: u32, status: Status, body: &[u8]);
}

/// How to send it.
#[derive(Clone, Debug)]
pub struct Spec {
    pub connections: usize,
    /// Requests in flight per connection, at most.
    pub window: usize,
    /// Stop sending after this many requests in total...
    pub requests_max: u64,
    /// ...or after this long, whichever comes first; replies still due are awaited.
    pub duration_max: Duration,
    /// Open loop: requests per second in total. `None`: closed loop.
    pub rate_per_s: Option<f64>,
    pub operation: Operation,
}

/// What happened.
pub struct Outcome {
    pub requests: u64,
    pub events: u64,
    /// From the first send to the last reply.
    pub elapsed: Duration,
    /// Per-request latency, ns.
    pub latency: Histogram<u64>,
}

impl Outcome {
    pub fn events_per_s(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64()
    }
    pub fn requests_per_s(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
}

struct Conn {
    stream: TcpStream,
    out: Vec<u8>,
    out_pos: usize,
    input: Vec<u8>,
    in_pos: usize,
    /// (request id, intended or actual send time, events), oldest first.
    in_flight: VecDeque<(u64, Instant, u32)>,
    next_due: Instant,
    next_request_id: u64,
}

impl Conn {
    fn write_some(&mut self) {
        while self.out_pos < self.out.len() {
            match self.stream.write(&self.out[self.out_pos..]) {
                Ok(0) => panic!("connection closed while writing"),
                Ok(n) => self.out_pos += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => panic!("write: {e}"),
            }
        }
        self.out.clear();
        self.out_pos = 0;
    }
}

/// Opens `spec.connections` connections to `addr` and runs the load.
pub fn run(addr: SocketAddr, spec: &Spec, workload: &mut dyn Workload) -> Outcome {
    assert!(spec.connections >= 1 && (1..=WINDOW_MAX).contains(&spec.window));
    let mut conns: Vec<Conn> = (0..spec.connections)
        .map(|_| {
            let stream = Client::connect(addr, None).expect("connect").into_stream();
            stream.set_nonblocking(true).expect("non-blocking");
            Conn {
                stream,
                out: Vec::with_capacity(64 * 1024),
                out_pos: 0,
                input: Vec::with_capacity(READ_CHUNK),
                in_pos: 0,
                in_flight: VecDeque::with_capacity(spec.window),
                next_due: Instant::now(),
                next_request_id: 1 << 32,
            }
        })
        .collect();
    let mut latency = report::histogram();
    let mut chunk = vec![0u8; READ_CHUNK];
    let mut fds: Vec<libc::pollfd> = Vec::with_capacity(conns.len());
    let mut polled: Vec<usize> = Vec::with_capacity(conns.len());
    let start = Instant::now();
    let deadline = start + spec.duration_max;
    let interval = spec.rate_per_s.map(|r| Duration::from_secs_f64(spec.connections as f64 / r));
    if let Some(rate) = spec.rate_per_s {
        for (i, c) in conns.iter_mut().enumerate() {
            c.next_due = start + Duration::from_secs_f64(i as f64 / rate);
        }
    }
    let (mut sent, mut replies, mut events) = (0u64, 0u64, 0u64);
    let mut last_reply = start;
    loop {
        let now = Instant::now();
        let sending = sent < spec.requests_max && now < deadline;
        let mut wake: Option<Instant> = None;
        for (i, c) in conns.iter_mut().enumerate() {
            while sending && c.in_flight.len() < spec.window && sent < spec.requests_max {
                let at = match interval {
                    None => now,
                    Some(step) => {
                        if c.next_due > now {
                            wake = Some(wake.map_or(c.next_due, |w| w.min(c.next_due)));
                            break;
                        }
                        let at = c.next_due;
                        c.next_due += step;
                        at
                    }
                };
                let begin = frame_begin(&mut c.out);
                let n = workload.body(i, &mut c.out);
                let id = c.next_request_id;
                c.next_request_id += 1;
                frame_finish(&mut c.out, begin, spec.operation, Status::Ok, id);
                c.in_flight.push_back((id, at, n));
                sent += 1;
            }
            if c.out_pos < c.out.len() {
                c.write_some();
            }
        }
        fds.clear();
        polled.clear();
        for (i, c) in conns.iter().enumerate() {
            if !c.in_flight.is_empty() {
                let mut events = libc::POLLIN;
                if c.out_pos < c.out.len() {
                    events |= libc::POLLOUT;
                }
                fds.push(libc::pollfd { fd: c.stream.as_raw_fd(), events, revents: 0 });
                polled.push(i);
            }
        }
        if fds.is_empty() {
            if !sending {
                break;
            }
            if wake.is_none() {
                continue;
            }
        }
        let timeout = wake.map(|w| {
            let d = w.saturating_duration_since(Instant::now());
            libc::timespec { tv_sec: d.as_secs() as libc::time_t, tv_nsec: d.subsec_nanos() as _ }
        });
        let timeout_ptr = timeout.as_ref().map_or(std::ptr::null(), |t| t as *const _);
        // SAFETY: `fds` is a valid array of `fds.len()` pollfd structures; the timeout, when
        // given, outlives the call; no signal mask is passed.
        let rc = unsafe {
            libc::ppoll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ptr, std::ptr::null())
        };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            assert_eq!(e.kind(), ErrorKind::Interrupted, "ppoll: {e}");
            continue;
        }
        for (fd, &i) in fds.iter().zip(&polled) {
            if fd.revents == 0 {
                continue;
            }
            let c = &mut conns[i];
            if fd.revents & libc::POLLOUT != 0 {
                c.write_some();
            }
            if fd.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) == 0 {
                continue;
            }
            loop {
                match c.stream.read(&mut chunk) {
                    Ok(0) => panic!("the daemon closed a connection with replies due"),
                    Ok(n) => c.input.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => panic!("read: {e}"),
                }
            }
            let now = Instant::now();
            while c.input.len() - c.in_pos >= HEADER_SIZE {
                let head: &[u8; HEADER_SIZE] =
                    c.input[c.in_pos..c.in_pos + HEADER_SIZE].try_into().expect("64 bytes");
                let header = Header::decode(head).expect("reply header");
                let end = c.in_pos + HEADER_SIZE + header.body_length as usize;
                if c.input.len() < end {
                    break;
                }
                let body = &c.input[c.in_pos + HEADER_SIZE..end];
                assert!(verify_checksum(head, body), "reply checksum");
                let status = Status::from_u16(header.status).expect("known status");
                let (id, at, n) = c.in_flight.pop_front().expect("a reply with nothing in flight");
                assert_eq!(header.request_id, id, "replies in request order");
                latency.saturating_record(now.saturating_duration_since(at).as_nanos() as u64);
                workload.reply(i, n, status, body);
                replies += 1;
                events += u64::from(n);
                last_reply = now;
                c.in_pos = end;
            }
            if c.in_pos == c.input.len() {
                c.input.clear();
                c.in_pos = 0;
            } else if c.in_pos > READ_CHUNK {
                c.input.drain(..c.in_pos);
                c.in_pos = 0;
            }
        }
    }
    assert_eq!(replies, sent);
    Outcome {
        requests: replies,
        events,
        elapsed: last_reply.saturating_duration_since(start).max(Duration::from_nanos(1)),
        latency,
    }
}

/// Transfers of `amount` between accounts `first..first+n` picked by `pick`, `batch` per
/// request, with fresh ids from `next_id` on. Every reply must be `ok`; failed events are
/// counted by result.
pub struct Transfers {
    pub pick: Pick,
    pub first_account: u128,
    pub batch: usize,
    pub amount: u128,
    pub next_id: u128,
    rng: Rng,
    pub failed: u64,
    pub failed_by: std::collections::BTreeMap<&'static str, u64>,
    results: Vec<CreateResult>,
}

impl Transfers {
    pub fn new(pick: Pick, first_account: u128, batch: usize, first_id: u128, seed: u64) -> Self {
        Transfers {
            pick,
            first_account,
            batch,
            amount: 1,
            next_id: first_id,
            rng: Rng(seed | 1),
            failed: 0,
            failed_by: Default::default(),
            results: Vec::new(),
        }
    }
}

impl Workload for Transfers {
    fn body(&mut self, _conn: usize, out: &mut Vec<u8>) -> u32 {
        let start = out.len();
        out.resize(start + self.batch * Transfer::SIZE, 0);
        for chunk in out[start..].chunks_exact_mut(Transfer::SIZE) {
            let (a, b) = self.pick.pair(&mut self.rng);
            let t = super::transfer(
                self.next_id,
                self.first_account + u128::from(a),
                self.first_account + u128::from(b),
                self.amount,
            );
            self.next_id += 1;
            t.write_to(chunk);
        }
        self.batch as u32
    }

    fn reply(&mut self, _conn: usize, events: u32, status: Status, body: &[u8]) {
        assert_eq!(status, Status::Ok, "request refused: {}", status.name());
        self.results.clear();
        decode_create_results(body, events as usize, &mut self.results).expect("create results");
        for r in &self.results {
            self.failed += 1;
            let name = r.result.name();
            *self.failed_by.entry(name).or_default() += 1;
        }
    }
}
