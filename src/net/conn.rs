//! One client connection's buffers and limits, and the slab that owns them.

use std::io::{ErrorKind, Write};
use std::net::SocketAddr;
use std::time::Instant;

use mio::net::TcpStream;

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

pub struct Conn {
    pub stream: TcpStream,
    pub peer: String,
    pub generation: u32,
    /// Bytes received and not yet handled (at most one partial frame after parsing).
    pub rbuf: Vec<u8>,
    /// Reply bytes not yet written, from `wpos`.
    pub wbuf: Vec<u8>,
    pub wpos: usize,
    /// `hello` succeeded.
    pub hello: bool,
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
    /// The error frame to send last, once every in-flight reply has gone out.
    fatal: Option<(Status, u64)>,
    pub last_activity: Instant,
    /// When the oldest unfinished frame started arriving.
    pub partial_since: Option<Instant>,
}

impl Conn {
    pub fn new(stream: TcpStream) -> Self {
        let peer = stream
            .peer_addr()
            .map_or_else(|_| "unknown".to_string(), |a: SocketAddr| a.to_string());
        Conn {
            stream,
            peer,
            generation: 0,
            rbuf: Vec::new(),
            wbuf: Vec::new(),
            wpos: 0,
            hello: false,
            in_flight: 0,
            reply_bytes_owed: std::collections::VecDeque::new(),
            reply_bytes_owed_total: 0,
            closing: false,
            close_when_flushed: false,
            fatal: None,
            last_activity: Instant::now(),
            partial_since: None,
        }
    }

    pub fn write_backlog(&self) -> usize {
        self.wbuf.len() - self.wpos
    }

    pub fn wbuf_is_empty(&self) -> bool {
        self.wpos == self.wbuf.len()
    }

    /// Appends one frame to the write buffer.
    pub fn push_frame(&mut self, operation: u16, status: Status, request_id: u64, body: &[u8]) {
        protocol::encode_frame(&mut self.wbuf, operation, status, request_id, body);
    }

    /// The stream can no longer be trusted (or the client may not go on): stop reading, send
    /// `status` after the replies already owed, then close.
    pub fn fail(&mut self, status: Status, request_id: u64) {
        self.closing = true;
        self.fatal = Some((status, request_id));
        self.rbuf.clear();
        self.partial_since = None;
        self.finish_if_idle();
    }

    /// Once nothing is in flight, queues the final error frame and asks for the close.
    pub fn finish_if_idle(&mut self) {
        if self.closing && self.in_flight == 0 {
            if let Some((status, request_id)) = self.fatal.take() {
                self.push_frame(0, status, request_id, &[]);
            }
            self.close_when_flushed = true;
        }
    }

    /// Writes as much of the backlog as the socket takes.
    pub fn flush(&mut self) -> std::io::Result<()> {
        while self.wpos < self.wbuf.len() {
            match self.stream.write(&self.wbuf[self.wpos..]) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => self.wpos += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        self.wbuf.clear();
        self.wpos = 0;
        Ok(())
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

    pub fn in_flight_total(&self) -> u64 {
        self.entries.iter().flatten().map(|c| c.in_flight as u64).sum()
    }
}
