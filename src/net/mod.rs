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
//!   a connection stalled on the ring is retried on a short poll timeout.
//! - Malformed input never reaches the ring as a request: a frame whose stream can still be
//!   trusted is refused with an error reply (through the ring, so that replies stay in
//!   order); one that cannot (bad magic, checksum, oversize length) closes the connection.

mod conn;
mod ratelimit;

use std::io::{ErrorKind, Read};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use disruptor::Producer as _;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};

use crate::metrics::{Metrics, Rejection};
use crate::pipeline::{Doorbell, Producer, ReplyBatch, ReplySink};
use crate::protocol::{self, Operation, Status};
use conn::{Conn, ConnId, Slab};
use ratelimit::LogLimiter;

const WAKER: Token = Token(usize::MAX - 1);
const LISTENER: Token = Token(usize::MAX - 2);
/// mio events handled per poll.
const EVENTS_PER_POLL_MAX: usize = 1024;
/// Bytes read from a socket per `read` call.
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// A connection whose unsent replies exceed this stops being read until they drain.
pub const WRITE_BACKLOG_PAUSE_BYTES: usize = 4 * 1024 * 1024;
/// Poll timeout while a connection waits for ring space.
const RING_RETRY_INTERVAL: Duration = Duration::from_millis(1);
/// How often timeouts are checked.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_millis(100);
/// Longest wait for in-flight replies at shutdown.
const SHUTDOWN_DRAIN_MAX: Duration = Duration::from_secs(10);

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
    /// When set, `hello` must carry this token (compared in constant time).
    pub auth_token: Option<Vec<u8>>,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            connections_max: 1024,
            in_flight_max: 64,
            idle_timeout: Duration::from_secs(300),
            frame_timeout: Duration::from_secs(10),
            auth_token: None,
        }
    }
}

/// What other threads share with one network thread.
pub struct NetShared {
    pub sink: Arc<ReplySink>,
    /// Connections accepted by another thread, to be registered by this one.
    incoming: Mutex<Vec<TcpStream>>,
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
    listener.set_nonblocking(true)?;
    let mut listener = Some(TcpListener::from_std(listener));
    let mut handles = Vec::with_capacity(polls.len());
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
            config: config.clone(),
            shutdown: Arc::clone(&shutdown),
            replies: ReplyBatch::default(),
            stalled: Vec::new(),
            next_peer: 0,
            log: LogLimiter::default(),
            scratch: vec![0; READ_CHUNK_BYTES].into_boxed_slice(),
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
    /// Replies taken from the sink, being distributed to connections.
    replies: ReplyBatch,
    /// Connections waiting for ring space.
    stalled: Vec<usize>,
    next_peer: usize,
    log: LogLimiter,
    /// Where reads land before they are appended to a connection's buffer: zeroed once, so
    /// a read costs a copy of what arrived, not a fill of the whole chunk.
    scratch: Box<[u8]>,
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
                    self.stop_accepting();
                    Instant::now()
                });
                if self.conns.in_flight_total() == 0 || since.elapsed() > SHUTDOWN_DRAIN_MAX {
                    self.flush_all();
                    return;
                }
            }
        }
    }

    fn stop_accepting(&mut self) {
        if let Some(mut l) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut l);
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
                    self.metrics.connections_open.fetch_add(1, Relaxed);
                    self.metrics.connections_accepted.fetch_add(1, Relaxed);
                    let _ = stream.set_nodelay(true);
                    let target = self.next_peer % self.peers.len();
                    self.next_peer = self.next_peer.wrapping_add(1);
                    if target == self.index as usize {
                        self.register(stream);
                    } else {
                        self.peers[target].incoming.lock().expect("incoming lock").push(stream);
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
        for stream in incoming {
            self.register(stream);
        }
    }

    fn register(&mut self, stream: TcpStream) {
        let index = self.conns.insert(Conn::new(stream));
        let conn = self.conns.get_mut(index).expect("just inserted");
        if let Err(e) = self.poll.registry().register(
            &mut conn.stream,
            Token(index),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            tracing::warn!(error = %e, "could not register a connection");
            self.close(index);
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
            match conn.stream.read(&mut self.scratch) {
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
                Err(_) => {
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
        while !conn.closing {
            let available = &rbuf[consumed..];
            if available.len() < protocol::HEADER_SIZE {
                break;
            }
            if self.shutdown.load(Relaxed) {
                readable = false;
                break;
            }
            if conn.in_flight >= self.config.in_flight_max
                || conn.write_backlog() + conn.reply_bytes_owed_total > WRITE_BACKLOG_PAUSE_BYTES
            {
                readable = false;
                break;
            }
            let header_bytes: &[u8; protocol::HEADER_SIZE] =
                available[..protocol::HEADER_SIZE].try_into().expect("checked length");
            let header = match protocol::Header::decode(header_bytes) {
                Ok(h) => h,
                Err(error) => {
                    self.metrics.reject(Rejection::BadFrame);
                    self.log.warn(format_args!("connection {}: {error}; closing", conn.peer));
                    conn.fail(error.status(), protocol::Header::raw_request_id(header_bytes));
                    break;
                }
            };
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
                conn.fail(Status::BadChecksum, header.request_id);
                break;
            }
            let operation = Operation::from_u16(header.operation);
            let verdict = match operation {
                Some(Operation::Hello) => {
                    let status = hello_status(&self.config, body);
                    if status == Status::Ok {
                        conn.hello = true;
                    } else {
                        self.metrics.reject(Rejection::AuthFailed);
                        self.log.warn(format_args!(
                            "connection {}: hello refused: {}",
                            conn.peer,
                            status.name()
                        ));
                    }
                    if conn.in_flight == 0 && status == Status::Ok {
                        let mut reply = Vec::with_capacity(protocol::HelloReply::SIZE);
                        protocol::HelloReply {
                            requests_in_flight_max: self.config.in_flight_max,
                            ..Default::default()
                        }
                        .encode(&mut reply);
                        conn.push_frame(header.operation, status, header.request_id, &reply);
                        Ok(None)
                    } else if status != Status::Ok {
                        conn.fail(status, header.request_id);
                        break;
                    } else {
                        Err(status)
                    }
                }
                _ if !conn.hello => {
                    conn.fail(Status::HelloRequired, header.request_id);
                    break;
                }
                None => Err(Status::UnknownOperation),
                Some(op) => match protocol::validate_request_body(op, body) {
                    Ok(_) => Ok(Some(op)),
                    Err(status) => Err(status),
                },
            };
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
                    self.metrics.reject(Rejection::InvalidRequest);
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
        if conn.closing {
            conn.finish_if_idle();
            return false;
        }
        // Never buffer more than one maximal frame: beyond that the client must wait.
        readable && conn.rbuf.len() < protocol::HEADER_SIZE + protocol::FRAME_BODY_MAX
    }

    /// Distributes replies released by the business thread to their connections.
    fn deliver_replies(&mut self) {
        self.peers[self.index as usize].sink.take(&mut self.replies);
        let mut touched = std::mem::take(&mut self.stalled);
        let replies = std::mem::take(&mut self.replies);
        for (conn_id, frame) in replies.iter() {
            let (index, generation) = ConnId(conn_id).parts();
            if let Some(conn) = self.conns.get_mut(index) {
                if conn.generation == generation {
                    conn.wbuf.extend_from_slice(frame);
                    conn.in_flight -= 1;
                    let owed = conn.reply_bytes_owed.pop_front().unwrap_or(0);
                    conn.reply_bytes_owed_total = conn.reply_bytes_owed_total.saturating_sub(owed);
                    touched.push(index);
                }
            }
        }
        self.replies = replies;
        self.replies.clear();
        touched.sort_unstable();
        touched.dedup();
        for index in touched {
            if let Some(conn) = self.conns.get_mut(index) {
                if conn.closing {
                    conn.finish_if_idle();
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
            Ok(()) => {
                if conn.closing && conn.close_when_flushed && conn.wbuf_is_empty() {
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
        self.log.flush_suppressed();
    }

    fn close(&mut self, index: usize) {
        if let Some(mut conn) = self.conns.remove(index) {
            let _ = self.poll.registry().deregister(&mut conn.stream);
            self.metrics.connections_open.fetch_sub(1, Relaxed);
        }
    }
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

/// The status a `hello` gets: version supported, and the token right when one is required.
fn hello_status(config: &NetConfig, body: &[u8]) -> Status {
    let hello = match protocol::HelloRequest::decode(body) {
        Ok(h) => h,
        Err(status) => return status,
    };
    if hello.version != protocol::PROTOCOL_VERSION {
        return Status::UnsupportedVersion;
    }
    match &config.auth_token {
        Some(token) if !protocol::token_eq(token, &hello.token) => Status::AuthFailed,
        _ => Status::Ok,
    }
}
