//! Network threads: mio event loops that accept connections, decode and validate frames,
//! publish requests into the ring, and write back the replies the business thread releases.
//!
//! Boundaries:
//! - Network threads never touch the ledger state; everything that reads or changes it goes
//!   through the ring, in order.
//! - Every request published gets exactly one reply, unless its connection dies first.
//! - Backpressure never drops a request: when a connection's in-flight window or write
//!   backlog is full, or the ring is full, the thread stops reading that socket (TCP pushes
//!   back on the client) and resumes when replies drain or slots free up. It never spins:
//!   a connection stalled on the ring is retried on a short poll timeout. Only the global
//!   bound on reply memory answers `busy` (read, refused, nothing applied).
//! - Malformed input never reaches the ring as a request: a frame whose stream can still be
//!   trusted is refused with an error reply (through the ring, so that replies stay in
//!   order); one that cannot (bad magic, checksum, oversize length) closes the connection.
//! - A peer that has not said hello costs little: its frames are capped at the hello's size
//!   before any body is buffered, it must say hello within `hello_timeout`, at most
//!   `pre_hello_max` such connections exist (when full, the oldest of the address holding the
//!   most goes), and each address has
//!   its own connection limit. Failed hellos throttle their address (`auth::Throttle`).

pub mod auth;
mod conn;
mod ratelimit;
pub mod tls;

use std::collections::{HashMap, VecDeque};
use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use disruptor::Producer as _;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};

use crate::metrics::{Metrics, Rejection};
use crate::pipeline::{Doorbell, Producer, ReplyBatch, ReplySink};
use crate::protocol::{self, Operation, Status};
use auth::{Role, Throttle, Tokens};
use conn::{Conn, ConnId, Slab, Transport};
use ratelimit::LogLimiter;

const WAKER: Token = Token(usize::MAX - 1);
const LISTENER: Token = Token(usize::MAX - 2);
/// mio events handled per poll.
const EVENTS_PER_POLL_MAX: usize = 1024;
/// Bytes read from a socket per `read` call.
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// A connection whose unsent replies exceed this stops being read until they drain.
pub const WRITE_BACKLOG_PAUSE_BYTES: usize = 4 * 1024 * 1024;
/// Before hello, a connection's buffer never holds more than one hello frame.
pub const PRE_HELLO_FRAME_MAX: usize = protocol::HEADER_SIZE + protocol::HelloRequest::SIZE;
/// Poll timeout while a connection waits for ring space.
const RING_RETRY_INTERVAL: Duration = Duration::from_millis(1);
/// How often timeouts are checked.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_millis(100);
/// Longest wait for in-flight replies at shutdown.
const SHUTDOWN_DRAIN_MAX: Duration = Duration::from_secs(10);
/// TCP keepalive on client sockets: first probe after this much silence...
const KEEPALIVE_IDLE_SECS: i32 = 60;
/// ...then one probe per interval, and the connection is dropped after this many unanswered.
const KEEPALIVE_INTERVAL_SECS: i32 = 10;
const KEEPALIVE_PROBES: i32 = 6;

/// Limits and settings of the network layer.
#[derive(Clone, Debug)]
pub struct NetConfig {
    /// Most open client connections; more are accepted and closed at once.
    pub connections_max: usize,
    /// Most requests in flight (published, not yet answered) per connection.
    pub in_flight_max: u32,
    /// A connection with nothing in flight and no traffic for this long is closed.
    pub idle_timeout: Duration,
    /// A frame must arrive completely within this time of its first byte (slow senders).
    pub frame_timeout: Duration,
    /// Tokens and their roles; empty: no authentication (every connection is read-write).
    pub tokens: Tokens,
    /// A connection must complete its hello (and TLS handshake) within this time of accept.
    pub hello_timeout: Duration,
    /// Most connections that have not said hello yet, over all network threads; a new one
    /// closes the oldest.
    pub pre_hello_max: usize,
    /// Most open connections from one IP address.
    pub per_address_max: usize,
    /// Most reply memory (unsent reply bytes plus the largest replies of requests in flight)
    /// over all connections; past it new requests are answered `busy`.
    pub reply_memory_max: usize,
    /// A connection whose replies wait this long without the peer reading a byte is closed.
    pub write_stall_timeout: Duration,
    /// TLS on the client port.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            connections_max: 1024,
            in_flight_max: 64,
            idle_timeout: Duration::from_secs(300),
            frame_timeout: Duration::from_secs(10),
            tokens: Tokens::default(),
            hello_timeout: Duration::from_secs(5),
            pre_hello_max: 64,
            per_address_max: 256,
            reply_memory_max: 256 * 1024 * 1024,
            write_stall_timeout: Duration::from_secs(30),
            tls: None,
        }
    }
}

/// What other threads share with one network thread.
pub struct NetShared {
    pub sink: Arc<ReplySink>,
    /// Connections accepted by another thread, to be registered by this one.
    incoming: Mutex<Vec<(TcpStream, SocketAddr)>>,
}

/// What all network threads share: limits that span connections.
#[derive(Default)]
struct Guard {
    /// Open connections per peer IP address.
    per_address: Mutex<HashMap<IpAddr, u32>>,
    /// Failed hellos per address.
    throttle: Mutex<Throttle>,
    /// Reply memory over all connections (see [`Conn::reply_memory`]).
    reply_bytes: AtomicUsize,
}

/// Running network threads.
pub struct NetThreads {
    pub handles: Vec<std::thread::JoinHandle<()>>,
    pub shared: Vec<Arc<NetShared>>,
}

impl NetThreads {
    /// Wakes every network thread (after setting the shutdown flag).
    pub fn wake_all(&self) {
        for s in &self.shared {
            let _ = s.sink.waker.wake();
        }
    }
}

/// Creates the polls and reply sinks of `count` network threads. The sinks are needed by the
/// business thread before the network threads start.
pub fn prepare(count: usize) -> std::io::Result<(Vec<Poll>, Vec<Arc<NetShared>>)> {
    assert!(count >= 1 && count <= u16::MAX as usize);
    let mut polls = Vec::with_capacity(count);
    let mut shared = Vec::with_capacity(count);
    for _ in 0..count {
        let poll = Poll::new()?;
        let waker = Waker::new(poll.registry(), WAKER)?;
        shared.push(Arc::new(NetShared {
            sink: Arc::new(ReplySink::new(waker)),
            incoming: Mutex::new(Vec::new()),
        }));
        polls.push(poll);
    }
    Ok((polls, shared))
}

/// Starts the network threads. Thread 0 owns the listener and deals connections out round
/// robin. Each thread owns a clone of `producer`.
#[allow(clippy::too_many_arguments)]
pub fn start(
    listener: std::net::TcpListener,
    polls: Vec<Poll>,
    shared: Vec<Arc<NetShared>>,
    producer: &Producer,
    doorbell: Arc<Doorbell>,
    metrics: Arc<Metrics>,
    config: NetConfig,
    shutdown: Arc<AtomicBool>,
) -> std::io::Result<NetThreads> {
    assert!(config.pre_hello_max >= 1 && config.per_address_max >= 1);
    listener.set_nonblocking(true)?;
    let mut listener = Some(TcpListener::from_std(listener));
    let guard = Arc::new(Guard::default());
    let threads = polls.len();
    let mut handles = Vec::with_capacity(threads);
    for (index, poll) in polls.into_iter().enumerate() {
        let mut thread = NetThread {
            index: index as u16,
            poll,
            listener: listener.take(),
            peers: shared.clone(),
            conns: Slab::default(),
            producer: producer.clone(),
            doorbell: Arc::clone(&doorbell),
            metrics: Arc::clone(&metrics),
            pre_hello_max: config.pre_hello_max.div_ceil(threads),
            config: config.clone(),
            shutdown: Arc::clone(&shutdown),
            guard: Arc::clone(&guard),
            replies: ReplyBatch::default(),
            stalled: Vec::new(),
            next_peer: 0,
            log: LogLimiter::default(),
            scratch: vec![0; READ_CHUNK_BYTES].into_boxed_slice(),
            pre_hello: VecDeque::new(),
            pre_hello_open: 0,
            reply_bytes: 0,
        };
        if let Some(l) = thread.listener.as_mut() {
            thread.poll.registry().register(l, LISTENER, Interest::READABLE)?;
        }
        let handle = std::thread::Builder::new()
            .name(format!("ledgerd-net-{index}"))
            .spawn(move || thread.run())?;
        handles.push(handle);
    }
    Ok(NetThreads { handles, shared })
}

struct NetThread {
    index: u16,
    poll: Poll,
    listener: Option<TcpListener>,
    peers: Vec<Arc<NetShared>>,
    conns: Slab,
    producer: Producer,
    doorbell: Arc<Doorbell>,
    metrics: Arc<Metrics>,
    config: NetConfig,
    shutdown: Arc<AtomicBool>,
    guard: Arc<Guard>,
    /// Replies taken from the sink, being distributed to connections.
    replies: ReplyBatch,
    /// Connections waiting for ring space.
    stalled: Vec<usize>,
    next_peer: usize,
    log: LogLimiter,
    /// Where reads land before they are appended to a connection's buffer: zeroed once, so
    /// a read costs a copy of what arrived, not a fill of the whole chunk.
    scratch: Box<[u8]>,
    /// This thread's share of `NetConfig::pre_hello_max`.
    pre_hello_max: usize,
    /// Connections registered here, oldest first, that may not have said hello yet (entries
    /// of connections that since said hello or closed are skipped lazily).
    pre_hello: VecDeque<ConnId>,
    /// Connections of this thread that have not said hello.
    pre_hello_open: usize,
    /// This thread's part of `Guard::reply_bytes`: the sum of its connections' reply memory.
    reply_bytes: usize,
}

impl NetThread {
    fn run(mut self) {
        let mut events = Events::with_capacity(EVENTS_PER_POLL_MAX);
        let mut last_housekeeping = Instant::now();
        let mut draining_since: Option<Instant> = None;
        loop {
            let timeout =
                if self.stalled.is_empty() { HOUSEKEEPING_INTERVAL } else { RING_RETRY_INTERVAL };
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::error!(error = %e, thread = self.index, "poll failed; network thread stops");
                    return;
                }
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(),
                    WAKER => {
                        self.register_incoming();
                        self.deliver_replies();
                    }
                    Token(index) => {
                        if event.is_writable() {
                            self.write(index);
                        }
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            self.service(index);
                        }
                    }
                }
            }
            if !self.stalled.is_empty() {
                let stalled = std::mem::take(&mut self.stalled);
                for index in stalled {
                    self.service(index);
                }
            }
            if last_housekeeping.elapsed() >= HOUSEKEEPING_INTERVAL {
                last_housekeeping = Instant::now();
                self.housekeeping();
            }
            if self.shutdown.load(Relaxed) {
                let since = *draining_since.get_or_insert_with(|| {
                    self.begin_shutdown();
                    Instant::now()
                });
                let drained = self.conns.in_flight_total() == 0
                    && self.conns.iter().all(|c| c.wbuf_is_empty());
                if drained || since.elapsed() > SHUTDOWN_DRAIN_MAX {
                    self.flush_all();
                    return;
                }
            }
        }
    }

    /// Stops accepting, and answers every complete request already received but not yet
    /// published with `shutting_down` (requests in the ring are still answered normally).
    fn begin_shutdown(&mut self) {
        if let Some(mut l) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut l);
        }
        for index in self.conns.indexes() {
            self.service(index);
        }
    }

    fn accept(&mut self) {
        loop {
            let Some(listener) = self.listener.as_ref() else { return };
            match listener.accept() {
                Ok((stream, peer)) => {
                    if self.metrics.connections_open.load(Relaxed) as usize
                        >= self.config.connections_max
                    {
                        self.metrics.reject(Rejection::ConnectionLimit);
                        self.log.warn(format_args!(
                            "connection from {peer} refused: connection limit {} reached",
                            self.config.connections_max
                        ));
                        drop(stream);
                        continue;
                    }
                    {
                        let mut per_address =
                            self.guard.per_address.lock().expect("per-address lock");
                        let open = per_address.entry(peer.ip()).or_insert(0);
                        if *open as usize >= self.config.per_address_max {
                            drop(per_address);
                            self.metrics.reject(Rejection::AddressLimit);
                            self.log.warn(format_args!(
                                "connection from {peer} refused: {} connections from {} already",
                                self.config.per_address_max,
                                peer.ip()
                            ));
                            drop(stream);
                            continue;
                        }
                        *open += 1;
                    }
                    self.metrics.connections_open.fetch_add(1, Relaxed);
                    self.metrics.connections_accepted.fetch_add(1, Relaxed);
                    let _ = stream.set_nodelay(true);
                    set_keepalive(&stream);
                    let target = self.next_peer % self.peers.len();
                    self.next_peer = self.next_peer.wrapping_add(1);
                    if target == self.index as usize {
                        self.register(stream, peer);
                    } else {
                        self.peers[target]
                            .incoming
                            .lock()
                            .expect("incoming lock")
                            .push((stream, peer));
                        let _ = self.peers[target].sink.waker.wake();
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and friends: back off until the next event rather than spin.
                    self.log.warn(format_args!("accept failed: {e}"));
                    return;
                }
            }
        }
    }

    fn register_incoming(&mut self) {
        let incoming = std::mem::take(
            &mut *self.peers[self.index as usize].incoming.lock().expect("incoming lock"),
        );
        for (stream, peer) in incoming {
            self.register(stream, peer);
        }
    }

    fn register(&mut self, stream: TcpStream, peer: SocketAddr) {
        let transport = match &self.config.tls {
            None => Transport::Plain,
            Some(tls) => match rustls::ServerConnection::new(Arc::clone(tls)) {
                Ok(c) => Transport::Tls(Box::new(c)),
                Err(e) => {
                    tracing::warn!(error = %e, "could not start a TLS session");
                    self.release_address(peer.ip());
                    self.metrics.connections_open.fetch_sub(1, Relaxed);
                    return;
                }
            },
        };
        // Room for the newcomer: a connection still without hello goes, the oldest of the
        // address that holds the most of them (a flood from one address evicts its own).
        while self.pre_hello_open >= self.pre_hello_max {
            let Some(victim) = self.pre_hello_victim() else { break };
            let conn = self.conns.get_mut(victim).expect("a live connection");
            self.metrics.reject(Rejection::PreHelloLimit);
            self.log.warn(format_args!(
                "connection {} closed without hello: {} connections wait for theirs",
                conn.peer, self.config.pre_hello_max
            ));
            self.close(victim);
        }
        let mut conn = Conn::new(stream, transport);
        conn.ip = Some(peer.ip());
        conn.peer = peer.to_string();
        let index = self.conns.insert(conn);
        let conn = self.conns.get_mut(index).expect("just inserted");
        self.pre_hello.push_back(ConnId::new(index, conn.generation));
        self.pre_hello_open += 1;
        if let Err(e) = self.poll.registry().register(
            &mut conn.stream,
            Token(index),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            tracing::warn!(error = %e, "could not register a connection");
            self.close(index);
        }
        if self.pre_hello.len() > 4 * self.pre_hello_max.max(64) {
            let conns = &mut self.conns;
            self.pre_hello.retain(|id| {
                let (index, generation) = id.parts();
                conns.get_mut(index).is_some_and(|c| c.generation == generation && !c.greeted())
            });
        }
    }

    /// The connection without hello to close for room: the oldest one of the address with
    /// the most connections without hello. Drops stale entries of `pre_hello` on the way.
    fn pre_hello_victim(&mut self) -> Option<usize> {
        let conns = &mut self.conns;
        self.pre_hello.retain(|id| {
            let (index, generation) = id.parts();
            conns.get_mut(index).is_some_and(|c| c.generation == generation && !c.greeted())
        });
        let mut per_ip: HashMap<Option<IpAddr>, usize> = HashMap::new();
        for id in &self.pre_hello {
            let ip = self.conns.get_mut(id.parts().0).and_then(|c| c.ip);
            *per_ip.entry(ip).or_insert(0) += 1;
        }
        let most = per_ip.values().copied().max()?;
        let position = self.pre_hello.iter().position(|id| {
            let ip = self.conns.get_mut(id.parts().0).and_then(|c| c.ip);
            per_ip[&ip] == most
        })?;
        self.pre_hello.remove(position).map(|id| id.parts().0)
    }

    fn release_address(&self, ip: IpAddr) {
        let mut per_address = self.guard.per_address.lock().expect("per-address lock");
        if let Some(open) = per_address.get_mut(&ip) {
            *open -= 1;
            if *open == 0 {
                per_address.remove(&ip);
            }
        }
    }

    /// Counts `bytes` more reply memory.
    fn charge(&mut self, bytes: usize) {
        if bytes > 0 {
            self.reply_bytes += bytes;
            self.guard.reply_bytes.fetch_add(bytes, Relaxed);
        }
    }

    /// Counts `bytes` less reply memory.
    fn release(&mut self, bytes: usize) {
        if bytes > 0 {
            debug_assert!(bytes <= self.reply_bytes);
            self.reply_bytes -= bytes;
            self.guard.reply_bytes.fetch_sub(bytes, Relaxed);
        }
    }

    /// Reads and handles what a connection sent, as far as its limits allow.
    fn service(&mut self, index: usize) {
        loop {
            if !self.parse_frames(index) {
                break;
            }
            let Some(conn) = self.conns.get_mut(index) else { return };
            if conn.closing {
                break;
            }
            // Before hello, never read past one hello frame.
            let want = if conn.greeted() {
                self.scratch.len()
            } else {
                PRE_HELLO_FRAME_MAX.saturating_sub(conn.rbuf.len()).min(self.scratch.len())
            };
            if want == 0 {
                break;
            }
            match conn.read_plain(&mut self.scratch[..want]) {
                Ok(0) => {
                    self.close(index);
                    return;
                }
                Ok(n) => {
                    conn.rbuf.extend_from_slice(&self.scratch[..n]);
                    conn.last_activity = Instant::now();
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    if e.kind() == ErrorKind::InvalidData {
                        self.metrics.reject(Rejection::TlsError);
                        self.log.warn(format_args!("connection {}: TLS: {e}; closing", conn.peer));
                        // Let the alert go out.
                        let _ = conn.flush();
                    }
                    self.close(index);
                    return;
                }
            }
        }
        self.write(index);
    }

    /// Handles every complete frame in the read buffer. Returns `false` when the connection
    /// must not be read further for now (blocked on a limit, closing, or gone).
    fn parse_frames(&mut self, index: usize) -> bool {
        let Some(conn) = self.conns.get_mut(index) else { return false };
        let id = ConnId::new(index, conn.generation);
        // Parsed from a buffer taken out of the connection, so that frames can be answered
        // while their bytes are borrowed.
        let mut rbuf = std::mem::take(&mut conn.rbuf);
        let mut consumed = 0usize;
        let mut readable = true;
        let mut charged = 0usize;
        let mut greeted_now = false;
        while !conn.closing {
            let available = &rbuf[consumed..];
            if available.len() < protocol::HEADER_SIZE {
                break;
            }
            let header_bytes: &[u8; protocol::HEADER_SIZE] =
                available[..protocol::HEADER_SIZE].try_into().expect("checked length");
            let raw_operation = protocol::Header::raw_operation(header_bytes);
            let raw_request_id = protocol::Header::raw_request_id(header_bytes);
            if self.shutdown.load(Relaxed) {
                // Requests already in the ring are answered; this one and later ones are not
                // executed.
                charged += conn.fail(Status::ShuttingDown, raw_operation, raw_request_id);
                break;
            }
            if conn.in_flight >= self.config.in_flight_max
                || conn.write_backlog() + conn.reply_bytes_owed_total > WRITE_BACKLOG_PAUSE_BYTES
            {
                readable = false;
                break;
            }
            let header = match protocol::Header::decode(header_bytes) {
                Ok(h) => h,
                Err(error) => {
                    self.metrics.reject(Rejection::BadFrame);
                    self.log.warn(format_args!("connection {}: {error}; closing", conn.peer));
                    charged += conn.fail(error.status(), raw_operation, raw_request_id);
                    break;
                }
            };
            if header.status != 0 {
                // The status field belongs to replies: a request that sets it was not framed
                // by a client that follows the protocol.
                self.metrics.reject(Rejection::BadFrame);
                self.log
                    .warn(format_args!("connection {}: request with a status; closing", conn.peer));
                charged += conn.fail(Status::InvalidHeader, header.operation, header.request_id);
                break;
            }
            let operation = Operation::from_u16(header.operation);
            if !conn.greeted() {
                // Decided on the header alone, so that no body is buffered before hello.
                let refusal = match operation {
                    Some(Operation::Hello)
                        if header.body_length as usize == protocol::HelloRequest::SIZE =>
                    {
                        None
                    }
                    Some(Operation::Hello) => Some(Status::BodyLengthInvalid),
                    _ => Some(Status::HelloRequired),
                };
                if let Some(status) = refusal {
                    self.metrics.reject(Rejection::InvalidRequest);
                    self.log.warn(format_args!(
                        "connection {}: {} before hello; closing",
                        conn.peer,
                        status.name()
                    ));
                    charged += conn.fail(status, header.operation, header.request_id);
                    break;
                }
            }
            let total = protocol::HEADER_SIZE + header.body_length as usize;
            if available.len() < total {
                break;
            }
            let body = &available[protocol::HEADER_SIZE..total];
            if !protocol::verify_checksum(header_bytes, body) {
                self.metrics.reject(Rejection::BadFrame);
                self.log.warn(format_args!(
                    "connection {}: frame checksum mismatch; closing",
                    conn.peer
                ));
                charged += conn.fail(Status::BadChecksum, header.operation, header.request_id);
                break;
            }
            let verdict = match operation {
                Some(Operation::Hello) if conn.greeted() => {
                    self.metrics.reject(Rejection::InvalidRequest);
                    charged +=
                        conn.fail(Status::HelloRepeated, header.operation, header.request_id);
                    break;
                }
                Some(Operation::Hello) => {
                    let (status, role, throttled_now) =
                        hello_verdict(&self.config, &self.guard, &self.metrics, conn.ip, body);
                    if throttled_now {
                        self.log.warn(format_args!(
                            "{}: too many failed hellos; hellos from this address are refused for a while",
                            conn.ip.map_or_else(|| "unknown".to_string(), |ip| ip.to_string())
                        ));
                    }
                    if let Some(role) = role {
                        conn.role = Some(role);
                        greeted_now = true;
                        let mut reply = Vec::with_capacity(protocol::HelloReply::SIZE);
                        protocol::HelloReply {
                            requests_in_flight_max: self.config.in_flight_max,
                            ..Default::default()
                        }
                        .encode(&mut reply);
                        charged +=
                            conn.push_frame(header.operation, status, header.request_id, &reply);
                        Ok(None)
                    } else {
                        self.metrics.reject(Rejection::AuthFailed);
                        self.log.warn(format_args!(
                            "connection {}: hello refused: {}",
                            conn.peer,
                            status.name()
                        ));
                        charged += conn.fail(status, header.operation, header.request_id);
                        break;
                    }
                }
                None => Err(Status::UnknownOperation),
                Some(op) if !conn.role.is_some_and(|r| r.allows(op)) => {
                    self.metrics.reject(Rejection::PermissionDenied);
                    Err(Status::PermissionDenied)
                }
                Some(op) => match protocol::validate_request_body(op, body) {
                    Ok(_) => Ok(Some(op)),
                    Err(status) => Err(status),
                },
            };
            if let Ok(Some(op)) = verdict {
                let owed = reply_bytes_max(op, body.len());
                if self.guard.reply_bytes.load(Relaxed) + charged + owed
                    > self.config.reply_memory_max
                {
                    // Shed load rather than hold more memory for replies: nothing applied.
                    self.metrics.reject(Rejection::ReplyMemory);
                    charged +=
                        conn.push_frame(header.operation, Status::Busy, header.request_id, &[]);
                    consumed += total;
                    conn.partial_since = None;
                    conn.last_activity = Instant::now();
                    continue;
                }
            }
            let published = match verdict {
                Ok(None) => true,
                Ok(Some(_)) => {
                    let net = self.index;
                    let request_id = header.request_id;
                    let operation = header.operation;
                    self.producer
                        .try_publish(|slot| {
                            slot.set_request(net, id.0, request_id, operation, body)
                        })
                        .is_ok()
                }
                Err(status) => {
                    if status != Status::PermissionDenied {
                        self.metrics.reject(Rejection::InvalidRequest);
                    }
                    let net = self.index;
                    let request_id = header.request_id;
                    let operation = header.operation;
                    self.producer
                        .try_publish(|slot| {
                            slot.set_reject(net, id.0, request_id, operation, status as u16)
                        })
                        .is_ok()
                }
            };
            if !published {
                self.metrics.reject(Rejection::RingFull);
                self.stalled.push(index);
                readable = false;
                break;
            }
            if !matches!(verdict, Ok(None)) {
                let owed = match verdict {
                    Ok(Some(op)) => reply_bytes_max(op, body.len()),
                    _ => protocol::HEADER_SIZE,
                };
                conn.reply_bytes_owed.push_back(owed);
                conn.reply_bytes_owed_total += owed;
                charged += owed;
                conn.in_flight += 1;
                self.metrics.ring_published.fetch_add(1, Relaxed);
                self.doorbell.ring();
            }
            consumed += total;
            conn.partial_since = None;
            conn.last_activity = Instant::now();
        }
        if conn.closing {
            rbuf.clear();
        } else {
            rbuf.drain(..consumed);
        }
        conn.rbuf = rbuf;
        if conn.rbuf.is_empty() {
            conn.partial_since = None;
        } else if conn.partial_since.is_none() && readable {
            conn.partial_since = Some(Instant::now());
        }
        let closing = conn.closing;
        let keep_reading =
            readable && conn.rbuf.len() < protocol::HEADER_SIZE + protocol::FRAME_BODY_MAX;
        if closing {
            charged += conn.finish_if_idle();
        }
        self.charge(charged);
        if greeted_now {
            self.pre_hello_open -= 1;
        }
        // Never buffer more than one maximal frame: beyond that the client must wait.
        !closing && keep_reading
    }

    /// Distributes replies released by the business thread to their connections.
    fn deliver_replies(&mut self) {
        self.peers[self.index as usize].sink.take(&mut self.replies);
        let mut touched = std::mem::take(&mut self.stalled);
        let replies = std::mem::take(&mut self.replies);
        let (mut charged, mut released) = (0usize, 0usize);
        for (conn_id, frame) in replies.iter() {
            let (index, generation) = ConnId(conn_id).parts();
            if let Some(conn) = self.conns.get_mut(index) {
                if conn.generation == generation {
                    conn.wbuf.extend_from_slice(frame);
                    charged += frame.len();
                    conn.in_flight -= 1;
                    let owed = conn.reply_bytes_owed.pop_front().unwrap_or(0);
                    conn.reply_bytes_owed_total = conn.reply_bytes_owed_total.saturating_sub(owed);
                    released += owed;
                    touched.push(index);
                }
            }
        }
        self.charge(charged);
        self.release(released);
        self.replies = replies;
        self.replies.clear();
        touched.sort_unstable();
        touched.dedup();
        for index in touched {
            if let Some(conn) = self.conns.get_mut(index) {
                if conn.closing {
                    let queued = conn.finish_if_idle();
                    self.charge(queued);
                    self.write(index);
                    continue;
                }
            }
            // Limits may have lifted: handle buffered frames and read on.
            self.service(index);
        }
    }

    fn write(&mut self, index: usize) {
        let Some(conn) = self.conns.get_mut(index) else { return };
        match conn.flush() {
            Ok(written) => {
                let done = conn.closing && conn.close_when_flushed && conn.wbuf_is_empty();
                self.release(written);
                if done {
                    self.close(index);
                }
            }
            Err(_) => self.close(index),
        }
    }

    fn flush_all(&mut self) {
        for index in self.conns.indexes() {
            self.write(index);
        }
    }

    fn housekeeping(&mut self) {
        let now = Instant::now();
        let mut expired = Vec::new();
        for index in self.conns.indexes() {
            let conn = self.conns.get_mut(index).expect("listed");
            if !conn.greeted() && now.duration_since(conn.accepted_at) > self.config.hello_timeout {
                self.metrics.reject(Rejection::HelloTimeout);
                self.log.warn(format_args!(
                    "connection {}: no hello within {:?}; closing",
                    conn.peer, self.config.hello_timeout
                ));
                expired.push(index);
                continue;
            }
            if let Some(since) = conn.partial_since {
                if now.duration_since(since) > self.config.frame_timeout
                    && conn.in_flight < self.config.in_flight_max
                {
                    self.metrics.reject(Rejection::FrameTimeout);
                    self.log.warn(format_args!(
                        "connection {}: frame incomplete after {:?}; closing",
                        conn.peer, self.config.frame_timeout
                    ));
                    expired.push(index);
                    continue;
                }
            }
            if let Some(since) = conn.write_stalled_since {
                if now.duration_since(since) > self.config.write_stall_timeout {
                    self.metrics.reject(Rejection::WriteStall);
                    self.log.warn(format_args!(
                        "connection {}: replies unread for {:?}; closing",
                        conn.peer, self.config.write_stall_timeout
                    ));
                    expired.push(index);
                    continue;
                }
            }
            if conn.in_flight == 0
                && now.duration_since(conn.last_activity) > self.config.idle_timeout
            {
                self.metrics.reject(Rejection::IdleTimeout);
                self.log.info(format_args!(
                    "connection {}: idle for {:?}; closing",
                    conn.peer, self.config.idle_timeout
                ));
                expired.push(index);
            }
        }
        for index in expired {
            self.close(index);
        }
        // The busy bound relies on this sum; a few hundred additions every 100 ms.
        assert_eq!(
            self.reply_bytes,
            self.conns.iter().map(Conn::reply_memory).sum::<usize>(),
            "reply memory accounting drifted"
        );
        if self.index == 0 {
            self.guard.throttle.lock().expect("throttle lock").forget_old(now);
            self.metrics
                .reply_memory_bytes
                .store(self.guard.reply_bytes.load(Relaxed) as u64, Relaxed);
        }
        self.log.flush_suppressed();
    }

    fn close(&mut self, index: usize) {
        if let Some(mut conn) = self.conns.remove(index) {
            let _ = self.poll.registry().deregister(&mut conn.stream);
            self.metrics.connections_open.fetch_sub(1, Relaxed);
            if !conn.greeted() {
                self.pre_hello_open -= 1;
            }
            if let Some(ip) = conn.ip {
                self.release_address(ip);
            }
            self.release(conn.reply_memory());
        }
    }
}

/// Turns TCP keepalive on, so that a peer that vanished (power loss, a cut cable) does not
/// hold its connection until the idle timeout.
fn set_keepalive(stream: &TcpStream) {
    use std::os::fd::AsRawFd;
    let fd = stream.as_raw_fd();
    let set = |level: i32, name: i32, value: i32| {
        // SAFETY: setsockopt on a socket we own, with a pointer to a local i32 and its size.
        unsafe {
            libc::setsockopt(
                fd,
                level,
                name,
                (&value as *const i32).cast(),
                std::mem::size_of::<i32>() as libc::socklen_t,
            )
        }
    };
    set(libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1);
    set(libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, KEEPALIVE_IDLE_SECS);
    set(libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, KEEPALIVE_INTERVAL_SECS);
    set(libc::IPPROTO_TCP, libc::TCP_KEEPCNT, KEEPALIVE_PROBES);
}

/// The largest reply frame a valid request of `body_len` bytes can get.
fn reply_bytes_max(operation: Operation, body_len: usize) -> usize {
    use crate::types::{Account, AccountLimit, CreateResult, Transfer};
    const ID_SIZE: usize = 16;
    let body = match operation {
        Operation::LookupAccounts => body_len / ID_SIZE * Account::SIZE,
        Operation::LookupTransfers => body_len / ID_SIZE * Transfer::SIZE,
        Operation::LookupAccountLimits => body_len / ID_SIZE * AccountLimit::SIZE,
        Operation::CreateAccounts => body_len / Account::SIZE * CreateResult::SIZE,
        Operation::CreateTransfers => body_len / Transfer::SIZE * CreateResult::SIZE,
        Operation::SetAccountLimits => body_len / AccountLimit::SIZE * CreateResult::SIZE,
        _ => protocol::FRAME_BODY_MAX,
    };
    protocol::HEADER_SIZE + body.min(protocol::FRAME_BODY_MAX)
}

/// The answer to a hello: `(ok, Some(role), _)`, or the refusal, and whether this failure
/// started a throttle window for the address. Counts failures per address
/// (when tokens are configured) and refuses throttled addresses without looking at the token.
fn hello_verdict(
    config: &NetConfig,
    guard: &Guard,
    metrics: &Metrics,
    ip: Option<IpAddr>,
    body: &[u8],
) -> (Status, Option<Role>, bool) {
    let hello = match protocol::Hello::decode(body) {
        Ok(h) => h,
        Err(status) => return (status, None, false),
    };
    if hello.version != protocol::PROTOCOL_VERSION {
        return (Status::UnsupportedVersion, None, false);
    }
    if config.tokens.is_empty() {
        return (Status::Ok, Some(Role::ReadWrite), false);
    }
    let now = Instant::now();
    let mut throttle = guard.throttle.lock().expect("throttle lock");
    if let Some(ip) = ip {
        if throttle.is_throttled(ip, now) {
            // Not counted as a failure: the token was not looked at, and a client that
            // retries with the right one gets in when the window ends.
            metrics.auth_throttled.fetch_add(1, Relaxed);
            return (Status::AuthThrottled, None, false);
        }
    }
    match config.tokens.role_of(hello.token) {
        Some(role) => {
            if let Some(ip) = ip {
                throttle.succeeded(ip);
            }
            (Status::Ok, Some(role), false)
        }
        None => {
            metrics.auth_failures.fetch_add(1, Relaxed);
            let throttled_now = ip.is_some_and(|ip| throttle.failed(ip, now));
            (Status::AuthFailed, None, throttled_now)
        }
    }
}
