//! One client connection: its transport (plain TCP or TLS), buffers, limits and deadlines,
//! and the slab that owns the connections of a network thread.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use mio::net::TcpStream;

use super::auth::Role;
use crate::protocol::{self, Status};

/// A connection's identity in ring slots: slab index and generation, so that a reply for a
/// connection that closed (and whose index was reused) is recognised and dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnId(pub u64);

impl ConnId {
    pub fn new(index: usize, generation: u32) -> Self {
        ConnId(((generation as u64) << 32) | index as u64)
    }

    pub fn parts(self) -> (usize, u32) {
        ((self.0 & 0xffff_ffff) as usize, (self.0 >> 32) as u32)
    }
}

/// How bytes reach the peer.
pub enum Transport {
    Plain,
    /// rustls on top of the same socket; `rbuf`/`wbuf` hold plaintext frames either way.
    Tls(Box<rustls::ServerConnection>),
}

pub struct Conn {
    pub stream: TcpStream,
    pub transport: Transport,
    pub peer: String,
    /// The peer's address, for the per-address limits (`None` if the OS would not say).
    pub ip: Option<IpAddr>,
    pub generation: u32,
    /// Bytes received and not yet handled (at most one partial frame after parsing).
    pub rbuf: Vec<u8>,
    /// Reply bytes not yet written, from `wpos`.
    pub wbuf: Vec<u8>,
    pub wpos: usize,
    /// The role of the token the hello presented; `None` until a hello succeeds.
    pub role: Option<Role>,
    pub accepted_at: Instant,
    /// Requests published and not yet answered.
    pub in_flight: u32,
    /// Largest reply each in-flight request can get, oldest first (replies come back in
    /// request order), and their sum: reading pauses when this plus the write backlog passes
    /// the limit, so a client that never reads cannot make the daemon build replies without
    /// bound.
    pub reply_bytes_owed: std::collections::VecDeque<usize>,
    pub reply_bytes_owed_total: usize,
    /// No more requests are read; the connection closes once its replies are out.
    pub closing: bool,
    /// Close as soon as `wbuf` is written.
    pub close_when_flushed: bool,
    /// The error frame to send last, once every in-flight reply has gone out:
    /// (status, operation, request id) of the request it answers.
    fatal: Option<(Status, u16, u64)>,
    pub last_activity: Instant,
    /// When the oldest unfinished frame started arriving.
    pub partial_since: Option<Instant>,
    /// Since when replies wait for a peer that does not read them.
    pub write_stalled_since: Option<Instant>,
}

impl Conn {
    pub fn new(stream: TcpStream, transport: Transport) -> Self {
        let address = stream.peer_addr().ok();
        let now = Instant::now();
        Conn {
            stream,
            transport,
            peer: address.map_or_else(|| "unknown".to_string(), |a: SocketAddr| a.to_string()),
            ip: address.map(|a| a.ip()),
            generation: 0,
            rbuf: Vec::new(),
            wbuf: Vec::new(),
            wpos: 0,
            role: None,
            accepted_at: now,
            in_flight: 0,
            reply_bytes_owed: std::collections::VecDeque::new(),
            reply_bytes_owed_total: 0,
            closing: false,
            close_when_flushed: false,
            fatal: None,
            last_activity: now,
            partial_since: None,
            write_stalled_since: None,
        }
    }

    /// Whether a hello succeeded on this connection.
    pub fn greeted(&self) -> bool {
        self.role.is_some()
    }

    pub fn write_backlog(&self) -> usize {
        self.wbuf.len() - self.wpos
    }

    /// Reply memory this connection holds or may soon hold: unsent bytes plus the largest
    /// replies its in-flight requests can get.
    pub fn reply_memory(&self) -> usize {
        self.write_backlog() + self.reply_bytes_owed_total
    }

    pub fn wbuf_is_empty(&self) -> bool {
        self.wpos == self.wbuf.len()
            && match &self.transport {
                Transport::Plain => true,
                Transport::Tls(tls) => !tls.wants_write(),
            }
    }

    /// Appends one frame to the write buffer; returns its length.
    pub fn push_frame(
        &mut self,
        operation: u16,
        status: Status,
        request_id: u64,
        body: &[u8],
    ) -> usize {
        let before = self.wbuf.len();
        protocol::encode_frame(&mut self.wbuf, operation, status, request_id, body);
        self.wbuf.len() - before
    }

    /// The stream can no longer be trusted (or the client may not go on): stop reading, send
    /// `status` for request (`operation`, `request_id`) after the replies already owed, then
    /// close. Returns the bytes queued now (0 while replies are still owed).
    pub fn fail(&mut self, status: Status, operation: u16, request_id: u64) -> usize {
        self.closing = true;
        self.fatal = Some((status, operation, request_id));
        self.rbuf.clear();
        self.partial_since = None;
        self.finish_if_idle()
    }

    /// Once nothing is in flight, queues the final error frame and asks for the close.
    /// Returns the bytes queued.
    pub fn finish_if_idle(&mut self) -> usize {
        let mut queued = 0;
        if self.closing && self.in_flight == 0 {
            if let Some((status, operation, request_id)) = self.fatal.take() {
                queued = self.push_frame(operation, status, request_id, &[]);
            }
            self.close_when_flushed = true;
        }
        queued
    }

    /// Reads what arrived into `scratch` (at most `scratch.len()` plaintext bytes): `Ok(0)` is
    /// the end of the stream, `WouldBlock` means nothing more for now. For TLS, handshake
    /// bytes are consumed here and their answers queued for [`Conn::flush`].
    pub fn read_plain(&mut self, scratch: &mut [u8]) -> std::io::Result<usize> {
        match &mut self.transport {
            Transport::Plain => self.stream.read(scratch),
            Transport::Tls(tls) => loop {
                match tls.reader().read(scratch) {
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
                // No plaintext buffered: feed rustls more ciphertext.
                match tls.read_tls(&mut self.stream) {
                    Ok(0) => return Ok(0),
                    Ok(_) => {
                        if let Err(e) = tls.process_new_packets() {
                            // Tell the peer why (an alert) before closing.
                            let _ = tls.write_tls(&mut self.stream);
                            return Err(std::io::Error::new(ErrorKind::InvalidData, e));
                        }
                    }
                    Err(e) => return Err(e),
                }
            },
        }
    }

    /// Writes as much of the backlog as the socket takes; returns the plaintext bytes of
    /// `wbuf` that left it.
    pub fn flush(&mut self) -> std::io::Result<usize> {
        let before = self.wpos;
        let result = match &mut self.transport {
            Transport::Plain => loop {
                if self.wpos == self.wbuf.len() {
                    break Ok(());
                }
                match self.stream.write(&self.wbuf[self.wpos..]) {
                    Ok(0) => break Err(ErrorKind::WriteZero.into()),
                    Ok(n) => self.wpos += n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break Ok(()),
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) => break Err(e),
                }
            },
            Transport::Tls(tls) => loop {
                if tls.wants_write() {
                    match tls.write_tls(&mut self.stream) {
                        Ok(0) => break Err(ErrorKind::WriteZero.into()),
                        Ok(_) => continue,
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break Ok(()),
                        Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                        Err(e) => break Err(e),
                    }
                }
                if self.wpos == self.wbuf.len() || tls.is_handshaking() {
                    break Ok(());
                }
                // rustls takes what its bounded buffer allows; the rest waits in `wbuf`.
                match tls.writer().write(&self.wbuf[self.wpos..]) {
                    Ok(0) => break Ok(()),
                    Ok(n) => self.wpos += n,
                    Err(e) => break Err(e),
                }
            },
        };
        let written = self.wpos - before;
        if self.wpos == self.wbuf.len() {
            self.wbuf.clear();
            self.wpos = 0;
        }
        if self.wbuf_is_empty() || written > 0 {
            self.write_stalled_since = None;
        }
        if !self.wbuf_is_empty() && self.write_stalled_since.is_none() {
            self.write_stalled_since = Some(Instant::now());
        }
        result.map(|()| written)
    }
}

/// Connections by index, with a generation per index that changes on every reuse.
#[derive(Default)]
pub struct Slab {
    entries: Vec<Option<Conn>>,
    generations: Vec<u32>,
    free: Vec<usize>,
}

impl Slab {
    pub fn insert(&mut self, mut conn: Conn) -> usize {
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.entries.push(None);
                self.generations.push(0);
                self.entries.len() - 1
            }
        };
        conn.generation = self.generations[index];
        self.entries[index] = Some(conn);
        index
    }

    pub fn get_mut(&mut self, index: usize) -> Option<&mut Conn> {
        self.entries.get_mut(index).and_then(Option::as_mut)
    }

    pub fn remove(&mut self, index: usize) -> Option<Conn> {
        let conn = self.entries.get_mut(index)?.take()?;
        self.generations[index] = self.generations[index].wrapping_add(1);
        self.free.push(index);
        Some(conn)
    }

    /// Indexes of the open connections.
    pub fn indexes(&self) -> Vec<usize> {
        self.entries.iter().enumerate().filter(|(_, c)| c.is_some()).map(|(i, _)| i).collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Conn> {
        self.entries.iter().flatten()
    }

    pub fn in_flight_total(&self) -> u64 {
        self.iter().map(|c| c.in_flight as u64).sum()
    }
}
