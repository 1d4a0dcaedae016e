//! A TCP proxy that delays what it forwards and cuts connections on demand: the network
//! faults between replicas that loopback alone cannot make.
//!
//! Each accepted connection is joined to a new connection to the target. Each direction has
//! a reading thread, which stamps every chunk it reads with a release time (now + delay + a
//! seeded random jitter, never earlier than the chunk before it: a TCP stream is never
//! reordered), and a writing thread, which holds each chunk until its time. [`Proxy::cut`]
//! breaks every open connection (both sides see a reset or an end of stream); new ones are
//! accepted at once. Every wait is bounded, every thread checks the shutdown flag at least
//! every [`POLL`], and dropping the proxy joins them all.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The longest any proxy thread blocks before it looks at the shutdown flag and the cut
/// generation again.
pub const POLL: Duration = Duration::from_millis(20);
/// Limit on connecting to the target.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Chunks read but not yet written, per direction; a full queue stops the reader (and so,
/// through TCP, the sender).
pub const QUEUE_CHUNKS: usize = 256;
/// The largest chunk one read takes.
pub const CHUNK_BYTES: usize = 64 * 1024;

/// What a connection's chunks wait: `delay` plus a uniform random part of at most `jitter`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Link {
    pub delay: Duration,
    pub jitter: Duration,
}

struct Shared {
    target: SocketAddr,
    delay_us: AtomicU64,
    jitter_us: AtomicU64,
    /// Raised by [`Proxy::cut`]; a connection opened under an older generation closes.
    generation: AtomicU64,
    shutdown: AtomicBool,
    rng: Mutex<fastrand::Rng>,
    forwarded: AtomicU64,
    connections: AtomicU64,
}

impl Shared {
    fn release_at(&self, now: Instant) -> Instant {
        let jitter = self.jitter_us.load(Relaxed);
        let extra = if jitter == 0 {
            0
        } else {
            self.rng.lock().unwrap_or_else(|e| e.into_inner()).u64(0..=jitter)
        };
        now + Duration::from_micros(self.delay_us.load(Relaxed) + extra)
    }

    fn stale(&self, generation: u64) -> bool {
        self.shutdown.load(Relaxed) || self.generation.load(Relaxed) != generation
    }
}

/// A running proxy in front of one target address. Dropping it stops it.
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accepting: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `target`, with `link` on both
    /// directions and jitter drawn from `seed`.
    pub fn start(target: SocketAddr, link: Link, seed: u64) -> io::Result<Proxy> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            target,
            delay_us: AtomicU64::new(0),
            jitter_us: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            shutdown: AtomicBool::new(false),
            rng: Mutex::new(fastrand::Rng::with_seed(seed)),
            forwarded: AtomicU64::new(0),
            connections: AtomicU64::new(0),
        });
        let mut proxy = Proxy { addr, shared: Arc::clone(&shared), accepting: None };
        proxy.set_link(link);
        proxy.accepting = Some(
            std::thread::Builder::new()
                .name("proxy-accept".into())
                .spawn(move || accept_loop(listener, shared))?,
        );
        Ok(proxy)
    }

    /// Where to connect to reach the target through the proxy.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where the proxy forwards to.
    pub fn target(&self) -> SocketAddr {
        self.shared.target
    }

    /// Changes the delay and jitter of chunks read from now on (open connections included).
    pub fn set_link(&self, link: Link) {
        self.shared.delay_us.store(link.delay.as_micros() as u64, Relaxed);
        self.shared.jitter_us.store(link.jitter.as_micros() as u64, Relaxed);
    }

    /// Breaks every open connection, dropping what it had not yet delivered.
    pub fn cut(&self) {
        self.shared.generation.fetch_add(1, Relaxed);
    }

    /// Bytes written to either side so far.
    pub fn forwarded_bytes(&self) -> u64 {
        self.shared.forwarded.load(Relaxed)
    }

    /// Connections accepted (and joined to the target) so far.
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Relaxed)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Relaxed);
        if let Some(handle) = self.accepting.take() {
            let _ = handle.join();
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut threads: Vec<JoinHandle<()>> = Vec::new();
    while !shared.shutdown.load(Relaxed) {
        threads.retain(|t| !t.is_finished());
        match listener.accept() {
            Ok((inbound, _)) => {
                if let Ok(pair) = join(inbound, &shared) {
                    threads.extend(pair);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(POLL / 4),
            Err(_) => std::thread::sleep(POLL / 4),
        }
    }
    for t in threads {
        let _ = t.join();
    }
}

/// Connects to the target and starts the four threads of one proxied connection.
fn join(inbound: TcpStream, shared: &Arc<Shared>) -> io::Result<Vec<JoinHandle<()>>> {
    inbound.set_nonblocking(false)?;
    let outbound = TcpStream::connect_timeout(&shared.target, CONNECT_TIMEOUT)?;
    for s in [&inbound, &outbound] {
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(POLL))?;
        s.set_write_timeout(Some(POLL))?;
    }
    shared.connections.fetch_add(1, Relaxed);
    let generation = shared.generation.load(Relaxed);
    let mut threads = direction(inbound.try_clone()?, outbound.try_clone()?, shared, generation)?;
    threads.extend(direction(outbound, inbound, shared, generation)?);
    Ok(threads)
}

/// One direction, `from` → `to`: a reading and a writing thread joined by a bounded queue.
fn direction(
    from: TcpStream,
    to: TcpStream,
    shared: &Arc<Shared>,
    generation: u64,
) -> io::Result<Vec<JoinHandle<()>>> {
    let (tx, rx) = mpsc::sync_channel(QUEUE_CHUNKS);
    let reading = {
        let shared = Arc::clone(shared);
        let to = to.try_clone()?;
        std::thread::Builder::new()
            .name("proxy-read".into())
            .spawn(move || read_loop(from, to, tx, &shared, generation))?
    };
    let writing = {
        let shared = Arc::clone(shared);
        std::thread::Builder::new()
            .name("proxy-write".into())
            .spawn(move || write_loop(to, rx, &shared, generation))?
    };
    Ok(vec![reading, writing])
}

fn read_loop(
    mut from: TcpStream,
    to: TcpStream,
    tx: SyncSender<(Instant, Vec<u8>)>,
    shared: &Shared,
    generation: u64,
) {
    let mut buf = vec![0u8; CHUNK_BYTES];
    let mut last = Instant::now();
    while !shared.stale(generation) {
        match from.read(&mut buf) {
            Ok(0) => return, // end of stream: the writer delivers the rest, then closes
            Ok(n) => {
                let at = shared.release_at(Instant::now()).max(last);
                last = at;
                let mut chunk = (at, buf[..n].to_vec());
                loop {
                    match tx.try_send(chunk) {
                        Ok(()) => break,
                        Err(mpsc::TrySendError::Full(back)) => {
                            if shared.stale(generation) {
                                break;
                            }
                            chunk = back;
                            std::thread::sleep(POLL / 4);
                        }
                        Err(mpsc::TrySendError::Disconnected(_)) => return,
                    }
                }
            }
            Err(e) if timed_out(&e) => {}
            Err(_) => break,
        }
    }
    // Cut, shut down, or broken: close both sides at once.
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

fn write_loop(
    mut to: TcpStream,
    rx: Receiver<(Instant, Vec<u8>)>,
    shared: &Shared,
    generation: u64,
) {
    loop {
        if shared.stale(generation) {
            let _ = to.shutdown(Shutdown::Both);
            return;
        }
        let (at, chunk) = match rx.recv_timeout(POLL) {
            Ok(c) => c,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
        };
        // Hold the chunk until its time, looking up at least every POLL.
        loop {
            let now = Instant::now();
            if now >= at || shared.stale(generation) {
                break;
            }
            std::thread::sleep((at - now).min(POLL));
        }
        if shared.stale(generation) {
            continue;
        }
        let mut written = 0;
        while written < chunk.len() {
            match to.write(&chunk[written..]) {
                Ok(0) => return,
                Ok(n) => written += n,
                Err(e) if timed_out(&e) => {
                    if shared.stale(generation) {
                        break;
                    }
                }
                Err(_) => {
                    let _ = to.shutdown(Shutdown::Both);
                    return;
                }
            }
        }
        shared.forwarded.fetch_add(written as u64, Relaxed);
    }
}

fn timed_out(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server on loopback, serving connections until the test ends.
    fn echo() -> SocketAddr {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for s in listener.incoming().take(8) {
                let Ok(mut s) = s else { return };
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = s.read(&mut buf) {
                        if n == 0 || s.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    fn round_trip(s: &mut TcpStream, bytes: &[u8]) -> Vec<u8> {
        s.write_all(bytes).unwrap();
        let mut back = vec![0u8; bytes.len()];
        s.read_exact(&mut back).unwrap();
        back
    }

    #[test]
    fn forwards_in_order_with_the_delay_it_is_given() {
        let link = Link { delay: Duration::from_millis(30), jitter: Duration::from_millis(20) };
        let proxy = Proxy::start(echo(), link, 7).unwrap();
        let mut s = TcpStream::connect(proxy.addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let started = Instant::now();
        // Many small writes, each released at a random time: the bytes still come back in order.
        let mut sent = Vec::new();
        for i in 0..200u32 {
            let b = i.to_le_bytes();
            s.write_all(&b).unwrap();
            sent.extend_from_slice(&b);
        }
        let mut back = vec![0u8; sent.len()];
        s.read_exact(&mut back).unwrap();
        assert_eq!(back, sent);
        // Two passes through the proxy (there and back), each at least `delay`.
        assert!(started.elapsed() >= Duration::from_millis(60), "{:?}", started.elapsed());
        // The writer counts a chunk after its write returns, which can be after the echo has
        // been read here: wait (bounded) for the count to catch up.
        let expected = 2 * sent.len() as u64;
        for _ in 0..100 {
            if proxy.forwarded_bytes() == expected {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(proxy.forwarded_bytes(), expected);

        // A new link applies to an open connection. (Only lower bounds on time are checked: a
        // loaded machine can make anything slower, nothing faster.)
        proxy.set_link(Link { delay: Duration::from_millis(150), jitter: Duration::ZERO });
        let started = Instant::now();
        assert_eq!(round_trip(&mut s, b"slow"), b"slow");
        assert!(started.elapsed() >= Duration::from_millis(300), "{:?}", started.elapsed());
    }

    #[test]
    fn cut_breaks_open_connections_and_accepts_new_ones() {
        let proxy = Proxy::start(echo(), Link::default(), 1).unwrap();
        let mut s = TcpStream::connect(proxy.addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(round_trip(&mut s, b"before"), b"before");
        proxy.cut();
        // The old connection ends (end of stream or reset) within a few polls.
        let mut buf = [0u8; 16];
        let _ = s.write_all(b"lost");
        let ended = match s.read(&mut buf) {
            Ok(0) | Err(_) => true,
            Ok(_) => false,
        };
        assert!(ended, "a cut connection must not deliver");
        let mut fresh = TcpStream::connect(proxy.addr()).unwrap();
        fresh.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(round_trip(&mut fresh, b"after"), b"after");
        assert_eq!(proxy.connections(), 2);
    }
}
