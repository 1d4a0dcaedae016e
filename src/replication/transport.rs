//! Raft messages between replicas, over TCP.
//!
//! Each replica listens on its own address of the `--cluster` list and keeps one outgoing
//! connection to every other replica; a message travels on its sender's outgoing connection.
//! A connection opens with a handshake ([`HANDSHAKE_MAGIC`], version, the sender's replica
//! id, the cluster's size and, when the daemon has tokens, a read-write token of its token
//! file), then carries frames: `length u32` little-endian, then the message's protobuf bytes.
//!
//! The transport may lose messages (a full queue, a connection that breaks, a peer that is
//! down): Raft retransmits. It never reorders the messages of one connection and never
//! delivers a message as coming from a replica other than the one that shook hands.
//!
//! Threads: one accepting, one reading each accepted connection (at most
//! [`INBOUND_CONNECTIONS_MAX`]), one writing to each peer. Received messages go into a bounded
//! queue that the business thread drains, woken through its doorbell.

use std::io::{BufReader, BufWriter, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use protobuf::Message as _;
use raft::prelude::Message;

use crate::pipeline::Doorbell;

/// First bytes of a replication connection.
pub const HANDSHAKE_MAGIC: [u8; 8] = *b"LDGRRAFT";
pub const HANDSHAKE_VERSION: u16 = 1;
/// Largest message frame accepted (a batch of appended entries is at most raft-rs's
/// `max_size_per_msg`, 4 MiB, plus one entry).
pub const FRAME_MAX_BYTES: usize = 64 << 20;
/// Accepted connections read at once; more are closed (a replica has a few peers).
pub const INBOUND_CONNECTIONS_MAX: usize = 16;
/// Messages queued for one peer before new ones are dropped (Raft sends them again).
const OUTBOX_MESSAGES_MAX: usize = 4096;
/// Messages received and not yet taken by the business thread.
const INBOX_MESSAGES_MAX: usize = 8192;
const CONNECT_TIMEOUT: Duration = Duration::from_millis(200);
/// Wait before connecting again to a peer that refused or broke a connection.
const RECONNECT_BACKOFF: Duration = Duration::from_millis(50);
/// A handshake not finished by then closes the connection.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);
const ACCEPT_POLL: Duration = Duration::from_millis(10);
/// Longest wait of a writer for its next message, so that it sees a shutdown.
const WRITER_POLL: Duration = Duration::from_millis(50);

/// Whether a token a peer presented is one it may use.
pub type TokenCheck = Arc<dyn Fn(&[u8]) -> bool + Send + Sync>;

/// Counters of the transport, for `/metrics`.
#[derive(Default)]
pub struct TransportStats {
    pub sent: AtomicU64,
    pub received: AtomicU64,
    /// Messages dropped: a peer's queue full, or its connection down.
    pub dropped: AtomicU64,
    /// Connections refused: bad handshake, wrong token, too many.
    pub refused: AtomicU64,
}

/// The business thread's side: sends messages, counts.
pub struct Transport {
    /// Per replica id (index 0 unused, and this replica's own slot empty).
    outboxes: Vec<Option<SyncSender<Vec<u8>>>>,
    loss_percent: Arc<AtomicU32>,
    pub stats: Arc<TransportStats>,
    threads: Vec<JoinHandle<()>>,
    shutdown: Arc<AtomicBool>,
}

/// Where a replica listens and whom it talks to.
pub struct TransportConfig {
    /// This replica's id (1-based position in `peers`).
    pub id: u64,
    /// Every replica's replication address, in `--cluster` order: where its peers dial it.
    pub peers: Vec<SocketAddr>,
    /// The address this replica's listener binds (its own entry in `peers` unless something
    /// between the replicas maps one to the other).
    pub listen: SocketAddr,
    /// The token this replica presents to its peers.
    pub token: Option<Vec<u8>>,
    /// Whether a presented token is one the peer may use (`None`: no tokens, accept all).
    pub accepts: Option<TokenCheck>,
    /// Test-only (the fault file's `loss` and `partition`): the percentage of messages sent
    /// or received that are dropped (100: cut off from every peer).
    pub loss_percent: Arc<AtomicU32>,
}

impl Transport {
    /// Binds this replica's address and starts the threads. Received messages arrive on the
    /// returned queue; `doorbell` is rung after each.
    pub fn start(
        config: TransportConfig,
        doorbell: Arc<Doorbell>,
    ) -> std::io::Result<(Transport, Receiver<Message>)> {
        let n = config.peers.len();
        assert!(config.id >= 1 && config.id as usize <= n, "replica id inside the cluster");
        let listener = TcpListener::bind(config.listen)?;
        listener.set_nonblocking(true)?;
        let shutdown = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(TransportStats::default());
        let (inbox_tx, inbox) = mpsc::sync_channel(INBOX_MESSAGES_MAX);
        let mut threads = Vec::new();
        let accepting = Accepting {
            listener,
            reading: Reading {
                id: config.id,
                cluster_size: n as u16,
                accepts: config.accepts.clone(),
                inbox: inbox_tx,
                doorbell,
                loss_percent: Arc::clone(&config.loss_percent),
                stats: Arc::clone(&stats),
                shutdown: Arc::clone(&shutdown),
            },
            open: Arc::new(AtomicUsize::new(0)),
        };
        threads.push(
            std::thread::Builder::new()
                .name("ledgerd-raft-accept".into())
                .spawn(move || accepting.run())?,
        );
        let mut outboxes = vec![None];
        for (i, &addr) in config.peers.iter().enumerate() {
            let peer = i as u64 + 1;
            if peer == config.id {
                outboxes.push(None);
                continue;
            }
            let (tx, rx) = mpsc::sync_channel(OUTBOX_MESSAGES_MAX);
            outboxes.push(Some(tx));
            let writer = Writer {
                addr,
                handshake: handshake(config.id, n as u16, config.token.as_deref()),
                outbox: rx,
                stats: Arc::clone(&stats),
                shutdown: Arc::clone(&shutdown),
            };
            threads.push(
                std::thread::Builder::new()
                    .name(format!("ledgerd-raft-to-{peer}"))
                    .spawn(move || writer.run())?,
            );
        }
        let loss_percent = config.loss_percent;
        Ok((Transport { outboxes, loss_percent, stats, threads, shutdown }, inbox))
    }

    /// Queues `message` for its destination; drops it when that peer's queue is full.
    pub fn send(&self, message: &Message) {
        let Some(Some(outbox)) = self.outboxes.get(message.to as usize) else {
            panic!("a message to replica {}, outside the cluster or to itself", message.to);
        };
        if lost(&self.loss_percent) {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let mut frame = Vec::with_capacity(4 + message.compute_size() as usize);
        frame.extend_from_slice(&[0; 4]);
        message.write_to_vec(&mut frame).expect("a raft message encodes");
        let len = u32::try_from(frame.len() - 4).expect("a message under 4 GiB");
        frame[..4].copy_from_slice(&len.to_le_bytes());
        match outbox.try_send(frame) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Stops the accepting and writing threads (readers stop when their peer closes or sends
    /// its next message).
    pub fn stop(self) {
        self.shutdown.store(true, Ordering::Release);
        drop(self.outboxes);
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

/// Whether the injected loss drops this message.
fn lost(loss_percent: &AtomicU32) -> bool {
    match loss_percent.load(Ordering::Relaxed) {
        0 => false,
        p => p >= 100 || fastrand::u32(0..100) < p,
    }
}

fn handshake(id: u64, cluster_size: u16, token: Option<&[u8]>) -> Vec<u8> {
    let token = token.unwrap_or(&[]);
    let mut b = Vec::with_capacity(16 + token.len());
    b.extend_from_slice(&HANDSHAKE_MAGIC);
    b.extend_from_slice(&HANDSHAKE_VERSION.to_le_bytes());
    b.extend_from_slice(&(id as u16).to_le_bytes());
    b.extend_from_slice(&cluster_size.to_le_bytes());
    b.extend_from_slice(&(token.len() as u16).to_le_bytes());
    b.extend_from_slice(token);
    b
}

struct Writer {
    addr: SocketAddr,
    handshake: Vec<u8>,
    outbox: Receiver<Vec<u8>>,
    stats: Arc<TransportStats>,
    shutdown: Arc<AtomicBool>,
}

impl Writer {
    fn run(self) {
        let mut stream: Option<BufWriter<TcpStream>> = None;
        let mut retry_at = Instant::now();
        loop {
            let frame = match self.outbox.recv_timeout(WRITER_POLL) {
                Ok(frame) => frame,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if self.shutdown.load(Ordering::Acquire) {
                        return;
                    }
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            };
            if stream.is_none() && Instant::now() >= retry_at {
                stream = self.connect();
                if stream.is_none() {
                    retry_at = Instant::now() + RECONNECT_BACKOFF;
                }
            }
            let Some(out) = stream.as_mut() else {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            // Everything queued goes out in one write.
            let mut written = out.write_all(&frame).map(|()| 1u64);
            while let (Ok(n), Ok(next)) = (written.as_ref(), self.outbox.try_recv()) {
                let n = *n;
                written = out.write_all(&next).map(|()| n + 1);
            }
            match written.and_then(|n| out.flush().map(|()| n)) {
                Ok(n) => {
                    self.stats.sent.fetch_add(n, Ordering::Relaxed);
                }
                Err(_) => {
                    self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                    stream = None;
                    retry_at = Instant::now() + RECONNECT_BACKOFF;
                }
            }
        }
    }

    fn connect(&self) -> Option<BufWriter<TcpStream>> {
        let stream = TcpStream::connect_timeout(&self.addr, CONNECT_TIMEOUT).ok()?;
        stream.set_nodelay(true).ok()?;
        stream.set_write_timeout(Some(Duration::from_secs(1))).ok()?;
        let mut out = BufWriter::with_capacity(256 << 10, stream);
        out.write_all(&self.handshake).ok()?;
        Some(out)
    }
}

struct Accepting {
    listener: TcpListener,
    /// What each accepted connection's reader gets a copy of.
    reading: Reading,
    open: Arc<AtomicUsize>,
}

impl Accepting {
    fn run(self) {
        while !self.reading.shutdown.load(Ordering::Acquire) {
            // Non-blocking: nothing to accept (or a failed accept) waits a poll interval.
            let Ok((stream, _)) = self.listener.accept() else {
                std::thread::sleep(ACCEPT_POLL);
                continue;
            };
            if self.open.load(Ordering::Acquire) >= INBOUND_CONNECTIONS_MAX {
                self.reading.stats.refused.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            self.open.fetch_add(1, Ordering::AcqRel);
            let reader = self.reading.clone();
            let open = Arc::clone(&self.open);
            let spawned =
                std::thread::Builder::new().name("ledgerd-raft-from".into()).spawn(move || {
                    reader.run(stream);
                    open.fetch_sub(1, Ordering::AcqRel);
                });
            if spawned.is_err() {
                self.open.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }
}

#[derive(Clone)]
struct Reading {
    id: u64,
    cluster_size: u16,
    accepts: Option<TokenCheck>,
    inbox: SyncSender<Message>,
    doorbell: Arc<Doorbell>,
    loss_percent: Arc<AtomicU32>,
    stats: Arc<TransportStats>,
    shutdown: Arc<AtomicBool>,
}

impl Reading {
    fn run(self, stream: TcpStream) {
        let _ = stream.set_nonblocking(false);
        let _ = stream.set_nodelay(true);
        let _ = stream.set_read_timeout(Some(HANDSHAKE_TIMEOUT));
        let mut input = BufReader::with_capacity(256 << 10, stream);
        let Some(from) = self.handshake(&mut input) else {
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
            return;
        };
        // A reader blocks until its peer sends or closes; it holds nothing the daemon needs
        // at shutdown, so it is not waited for.
        let _ = input.get_ref().set_read_timeout(None);
        let mut frame = Vec::new();
        loop {
            let mut len = [0u8; 4];
            if input.read_exact(&mut len).is_err() || self.shutdown.load(Ordering::Acquire) {
                return;
            }
            let len = u32::from_le_bytes(len) as usize;
            if len > FRAME_MAX_BYTES {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                return;
            }
            frame.resize(len, 0);
            if input.read_exact(&mut frame).is_err() {
                return;
            }
            let Ok(message) = Message::parse_from_bytes(&frame) else {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                return;
            };
            if message.from != from || message.to != self.id {
                // A peer speaks only for itself, and only to this replica.
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                return;
            }
            if lost(&self.loss_percent) {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            self.stats.received.fetch_add(1, Ordering::Relaxed);
            if self.inbox.send(message).is_err() {
                return;
            }
            self.doorbell.wake();
        }
    }

    /// The peer's replica id, if its handshake is valid.
    fn handshake(&self, input: &mut impl Read) -> Option<u64> {
        let mut head = [0u8; 16];
        input.read_exact(&mut head).ok()?;
        let word = |at: usize| u16::from_le_bytes([head[at], head[at + 1]]);
        if head[..8] != HANDSHAKE_MAGIC || word(8) != HANDSHAKE_VERSION {
            return None;
        }
        let (from, size, token_len) = (word(10) as u64, word(12), word(14) as usize);
        if size != self.cluster_size || from == 0 || from > size as u64 || from == self.id {
            return None;
        }
        if token_len > crate::config::AUTH_TOKEN_MAX_BYTES {
            return None;
        }
        let mut token = vec![0u8; token_len];
        input.read_exact(&mut token).ok()?;
        match &self.accepts {
            Some(accepts) if !accepts(&token) => None,
            _ => Some(from),
        }
    }
}
