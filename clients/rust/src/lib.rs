//! `ledgerd-client`: the Rust client of `ledgerd`. Blocking, one TCP connection, typed calls,
//! and raw pipelining. It depends on the wire crate (`ledgerd-proto`) only, never on the daemon.
//!
//! Owns a socket and two reusable buffers; knows the wire format through [`crate::protocol`]
//! only. Typed calls send one request and wait for its reply; `send_raw`/`flush`/`recv` keep
//! many requests in flight; `create_transfers_batched` splits and pipelines big batches.

pub use ledgerd_proto::{protocol, types};

mod batching;
mod cluster;
pub use batching::{BatchingClient, BatchingOptions};
pub use cluster::{ClusterClient, CALL_DEADLINE_DEFAULT};
#[cfg(feature = "tls")]
pub mod tls;

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::protocol::{
    decode_create_results, decode_records, encode_ids, encode_records, frame_begin, frame_finish,
    verify_checksum, ChangeEventsReply, ChangeEventsRequest, Header, HelloReply, HelloRequest,
    Operation, Record, Status, StatusReply, HEADER_SIZE, HELLO_TOKEN_MAX,
};
use crate::types::{
    Account, AccountBalance, AccountFilter, AccountLimit, CreateResult, Transfer,
    EVENTS_PER_REQUEST_MAX,
};

/// What can go wrong talking to the daemon.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The daemon answered with a non-`ok` status.
    #[error("request refused: {0} ({desc})", desc = .0.description())]
    Status(Status),
    /// The daemon's bytes do not follow the protocol (or the client was misused).
    #[error("protocol: {0}")]
    Protocol(String),
    /// The call's deadline passed: its outcome is unknown. Retrying it with the same ids is
    /// safe (an applied event answers `exists`).
    #[error("the request's deadline passed; its outcome is unknown (retrying with the same ids is safe)")]
    Timeout,
}

pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// How to connect.
#[derive(Clone, Debug, Default)]
pub struct ClientOptions {
    /// The daemon's auth token, if it is configured with one (at most 256 bytes).
    pub token: Option<Vec<u8>>,
    /// Limit on establishing the TCP connection; `None` waits as long as the OS does.
    pub connect_timeout: Option<Duration>,
    /// Limit on every read and write; `None` blocks for ever.
    pub io_timeout: Option<Duration>,
    /// Speak TLS (the daemon runs with `--tls-cert`); `None`: plain TCP.
    #[cfg(feature = "tls")]
    pub tls: Option<tls::TlsOptions>,
}

/// The byte stream under a [`Client`]: plain TCP, or TLS over it (feature `tls`).
pub enum Stream {
    Plain(TcpStream),
    #[cfg(feature = "tls")]
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Stream {
    /// The TCP socket underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            #[cfg(feature = "tls")]
            Stream::Tls(s) => &s.sock,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            #[cfg(feature = "tls")]
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            #[cfg(feature = "tls")]
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            #[cfg(feature = "tls")]
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// One reply, as `recv` returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub request_id: u64,
    pub operation: u16,
    pub status: Status,
    pub body: Vec<u8>,
}

/// A connection to `ledgerd`.
pub struct Client {
    stream: Stream,
    hello: HelloReply,
    next_request_id: u64,
    /// Ids of requests sent (or buffered) whose replies have not been received, oldest first.
    in_flight: VecDeque<u64>,
    /// Frames not yet written to the socket.
    write_buf: Vec<u8>,
    /// The body of the last reply read.
    read_body: Vec<u8>,
}

impl Client {
    /// Connects and says hello.
    pub fn connect(addr: impl ToSocketAddrs, token: Option<&[u8]>) -> Result<Client> {
        Client::connect_with(
            addr,
            ClientOptions { token: token.map(<[u8]>::to_vec), ..Default::default() },
        )
    }

    /// Connects with options and says hello.
    pub fn connect_with(addr: impl ToSocketAddrs, options: ClientOptions) -> Result<Client> {
        if options.token.as_ref().is_some_and(|t| t.len() > HELLO_TOKEN_MAX) {
            return Err(ClientError::Protocol(format!(
                "token longer than {HELLO_TOKEN_MAX} bytes"
            )));
        }
        let addrs: Vec<SocketAddr> = addr.to_socket_addrs()?.collect();
        let mut last_error = None;
        let mut stream = None;
        for a in &addrs {
            let attempt = match options.connect_timeout {
                Some(t) => TcpStream::connect_timeout(a, t),
                None => TcpStream::connect(a),
            };
            match attempt {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last_error = Some(e),
            }
        }
        let stream = match stream {
            Some(s) => s,
            None => {
                return Err(ClientError::Io(last_error.unwrap_or_else(|| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        "no address to connect to",
                    )
                })))
            }
        };
        stream.set_nodelay(true)?;
        stream.set_read_timeout(options.io_timeout)?;
        stream.set_write_timeout(options.io_timeout)?;
        #[cfg(feature = "tls")]
        let stream = match &options.tls {
            Some(tls) => Stream::Tls(Box::new(tls::connect(tls, stream)?)),
            None => Stream::Plain(stream),
        };
        #[cfg(not(feature = "tls"))]
        let stream = Stream::Plain(stream);
        let mut client = Client {
            stream,
            hello: HelloReply::default(),
            next_request_id: 1,
            in_flight: VecDeque::new(),
            write_buf: Vec::with_capacity(64 * 1024),
            read_body: Vec::new(),
        };
        let hello = HelloRequest::new(options.token.as_deref());
        client.call(Operation::Hello, |out| hello.encode(out))?;
        client.hello = HelloReply::decode(&client.read_body)
            .map_err(|s| ClientError::Protocol(format!("hello reply: {s}")))?;
        Ok(client)
    }

    /// The TCP socket after the hello, for speaking the protocol by hand (tests, tools).
    /// Anything still buffered or in flight is the caller's to handle. Plain connections
    /// only: on a TLS connection the socket carries ciphertext (use [`Client::into_transport`]).
    pub fn into_stream(self) -> TcpStream {
        match self.stream {
            Stream::Plain(s) => s,
            #[cfg(feature = "tls")]
            Stream::Tls(s) => s.sock,
        }
    }

    /// The byte stream after the hello (plain or TLS), for speaking the protocol by hand.
    pub fn into_transport(self) -> Stream {
        self.stream
    }

    /// The daemon's limits, from its hello reply.
    pub fn server_limits(&self) -> &HelloReply {
        &self.hello
    }

    /// Requests sent whose replies have not been received.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    // ---- raw pipelining ----

    /// Buffers one request (written by [`Client::flush`], or when the buffer grows large) and
    /// returns its request id. The body is checked with the same rules the daemon applies.
    pub fn send_raw(&mut self, operation: Operation, body: &[u8]) -> Result<u64> {
        self.send_with(operation, |out| out.extend_from_slice(body))
    }

    /// Writes every buffered request to the socket.
    pub fn flush(&mut self) -> Result<()> {
        if !self.write_buf.is_empty() {
            self.stream.write_all(&self.write_buf)?;
            self.write_buf.clear();
        }
        Ok(())
    }

    /// Flushes, then reads the next reply (in the order the daemon sends them).
    pub fn recv(&mut self) -> Result<Reply> {
        let (header, status) = self.recv_frame()?;
        Ok(Reply {
            request_id: header.request_id,
            operation: header.operation,
            status,
            body: self.read_body.clone(),
        })
    }

    fn send_with(&mut self, operation: Operation, body: impl FnOnce(&mut Vec<u8>)) -> Result<u64> {
        let start = frame_begin(&mut self.write_buf);
        body(&mut self.write_buf);
        if let Err(status) =
            protocol::validate_request_body(operation, &self.write_buf[start + HEADER_SIZE..])
        {
            self.write_buf.truncate(start);
            return Err(ClientError::Status(status));
        }
        let request_id = self.next_request_id;
        self.next_request_id += 1;
        frame_finish(&mut self.write_buf, start, operation, Status::Ok, request_id);
        self.in_flight.push_back(request_id);
        if self.write_buf.len() >= 4 * protocol::FRAME_BODY_MAX {
            self.flush()?;
        }
        Ok(request_id)
    }

    /// Reads one frame into `read_body`; checks framing and checksum, and that it answers a
    /// request in flight.
    fn recv_frame(&mut self) -> Result<(Header, Status)> {
        if self.in_flight.is_empty() {
            return Err(ClientError::Protocol("recv with no request in flight".into()));
        }
        self.flush()?;
        let mut head = [0u8; HEADER_SIZE];
        self.stream.read_exact(&mut head)?;
        let header = Header::decode(&head)
            .map_err(|e| ClientError::Protocol(format!("reply header: {e}")))?;
        self.read_body.clear();
        self.read_body.resize(header.body_length as usize, 0);
        self.stream.read_exact(&mut self.read_body)?;
        if !verify_checksum(&head, &self.read_body) {
            return Err(ClientError::Protocol("reply checksum mismatch".into()));
        }
        let status = Status::from_u16(header.status)
            .ok_or_else(|| ClientError::Protocol(format!("unknown status {}", header.status)))?;
        let position = self.in_flight.iter().position(|&id| id == header.request_id);
        match position {
            Some(i) => {
                self.in_flight.remove(i);
            }
            None => {
                // Framing errors are answered before the daemon knows the request id.
                if status == Status::Ok || !status.closes_connection() {
                    return Err(ClientError::Protocol(format!(
                        "reply to unknown request id {}",
                        header.request_id
                    )));
                }
            }
        }
        Ok((header, status))
    }

    /// Sends one request and waits for its reply; leaves an `ok` body in `read_body`.
    fn call(&mut self, operation: Operation, body: impl FnOnce(&mut Vec<u8>)) -> Result<()> {
        if !self.in_flight.is_empty() {
            return Err(ClientError::Protocol(format!(
                "typed call with {} pipelined replies outstanding: recv them first",
                self.in_flight.len()
            )));
        }
        let request_id = self.send_with(operation, body)?;
        let (header, status) = self.recv_frame()?;
        check_reply(&header, status, operation, request_id)
    }

    // ---- typed calls ----

    /// Creates accounts; returns the failed ones only (empty: all created).
    pub fn create_accounts(&mut self, accounts: &[Account]) -> Result<Vec<CreateResult>> {
        self.create(Operation::CreateAccounts, accounts)
    }

    /// Creates transfers; returns the failed ones only (empty: all applied).
    pub fn create_transfers(&mut self, transfers: &[Transfer]) -> Result<Vec<CreateResult>> {
        self.create(Operation::CreateTransfers, transfers)
    }

    /// Sets account limits; returns the failed ones only.
    pub fn set_account_limits(&mut self, limits: &[AccountLimit]) -> Result<Vec<CreateResult>> {
        self.create(Operation::SetAccountLimits, limits)
    }

    fn create<R: Record>(
        &mut self,
        operation: Operation,
        records: &[R],
    ) -> Result<Vec<CreateResult>> {
        self.call(operation, |out| encode_records(out, records))?;
        let mut results = Vec::new();
        decode_create_results(&self.read_body, records.len(), &mut results)
            .map_err(ClientError::Protocol)?;
        Ok(results)
    }

    /// The accounts that exist among `ids`, in request order.
    pub fn lookup_accounts(&mut self, ids: &[u128]) -> Result<Vec<Account>> {
        self.lookup(Operation::LookupAccounts, ids)
    }

    /// The transfers that exist among `ids`, in request order.
    pub fn lookup_transfers(&mut self, ids: &[u128]) -> Result<Vec<Transfer>> {
        self.lookup(Operation::LookupTransfers, ids)
    }

    /// The limits of the accounts among `ids` that exist, in request order.
    pub fn lookup_account_limits(&mut self, account_ids: &[u128]) -> Result<Vec<AccountLimit>> {
        self.lookup(Operation::LookupAccountLimits, account_ids)
    }

    fn lookup<R: Record>(&mut self, operation: Operation, ids: &[u128]) -> Result<Vec<R>> {
        self.call(operation, |out| encode_ids(out, ids))?;
        self.records_reply(ids.len())
    }

    fn records_reply<R: Record>(&mut self, max: usize) -> Result<Vec<R>> {
        let mut out = Vec::new();
        decode_records(&self.read_body, &mut out).map_err(ClientError::Protocol)?;
        if out.len() > max {
            return Err(ClientError::Protocol(format!(
                "{} records, at most {max} asked",
                out.len()
            )));
        }
        Ok(out)
    }

    /// An account's transfers matching `filter`.
    pub fn get_account_transfers(&mut self, filter: &AccountFilter) -> Result<Vec<Transfer>> {
        self.call(Operation::GetAccountTransfers, |out| {
            encode_records(out, std::slice::from_ref(filter))
        })?;
        self.records_reply(filter.limit as usize)
    }

    /// A `history` account's balance rows matching `filter`.
    pub fn get_account_balances(&mut self, filter: &AccountFilter) -> Result<Vec<AccountBalance>> {
        self.call(Operation::GetAccountBalances, |out| {
            encode_records(out, std::slice::from_ref(filter))
        })?;
        self.records_reply(filter.limit as usize)
    }

    /// Change events from a position.
    pub fn change_events(&mut self, request: &ChangeEventsRequest) -> Result<ChangeEventsReply> {
        self.call(Operation::ChangeEvents, |out| request.encode(out))?;
        ChangeEventsReply::decode(&self.read_body)
            .map_err(|s| ClientError::Protocol(format!("change_events reply: {s}")))
    }

    /// The daemon's counters and state hash.
    pub fn status(&mut self) -> Result<StatusReply> {
        self.call(Operation::Status, |_| {})?;
        StatusReply::decode(&self.read_body)
            .map_err(|s| ClientError::Protocol(format!("status reply: {s}")))
    }

    /// Creates any number of transfers: splits them into requests of at most
    /// [`EVENTS_PER_REQUEST_MAX`], keeps up to the daemon's in-flight limit pipelined, and
    /// returns the failures with indexes into `transfers`.
    pub fn create_transfers_batched(
        &mut self,
        transfers: &[Transfer],
    ) -> Result<Vec<CreateResult>> {
        self.create_batched(Operation::CreateTransfers, transfers)
    }

    /// On a refused request the remaining replies are still read, so the connection stays
    /// usable; the error says why. Requests answered `ok` before it were applied: retrying
    /// the whole slice is safe (ids make creates idempotent: applied events return `exists`).
    ///
    /// [`Client::create_transfers_batched`] for accounts.
    pub fn create_accounts_batched(&mut self, accounts: &[Account]) -> Result<Vec<CreateResult>> {
        self.create_batched(Operation::CreateAccounts, accounts)
    }

    fn create_batched<R: Record>(
        &mut self,
        operation: Operation,
        records: &[R],
    ) -> Result<Vec<CreateResult>> {
        if !self.in_flight.is_empty() {
            return Err(ClientError::Protocol(
                "batched call with pipelined replies outstanding".into(),
            ));
        }
        let batch = (self.hello.events_per_request_max as usize).clamp(1, EVENTS_PER_REQUEST_MAX);
        let window = (self.hello.requests_in_flight_max as usize).clamp(1, 64);
        let mut chunks = records.chunks(batch).enumerate();
        // (request id, index of the chunk's first record, chunk length), oldest first.
        let mut pending: VecDeque<(u64, usize, usize)> = VecDeque::new();
        let mut results = Vec::new();
        let mut chunk_results = Vec::new();
        loop {
            while pending.len() < window {
                let Some((i, chunk)) = chunks.next() else { break };
                let id = self.send_with(operation, |out| encode_records(out, chunk))?;
                pending.push_back((id, i * batch, chunk.len()));
            }
            let Some((id, first, len)) = pending.pop_front() else { break };
            let (header, status) = self.recv_frame()?;
            if let Err(e) = check_reply(&header, status, operation, id) {
                // Collect the replies still due so the connection stays usable (a request
                // refused with `busy` can be retried; its events were not applied).
                if !status.closes_connection() {
                    while !self.in_flight.is_empty() {
                        self.recv_frame()?;
                    }
                }
                return Err(e);
            }
            chunk_results.clear();
            decode_create_results(&self.read_body, len, &mut chunk_results)
                .map_err(ClientError::Protocol)?;
            for r in &chunk_results {
                let index = u32::try_from(first + r.index as usize)
                    .map_err(|_| ClientError::Protocol("more than 2^32 events".into()))?;
                results.push(CreateResult { index, result: r.result });
            }
        }
        Ok(results)
    }
}

fn check_reply(
    header: &Header,
    status: Status,
    operation: Operation,
    request_id: u64,
) -> Result<()> {
    if status != Status::Ok {
        return Err(ClientError::Status(status));
    }
    if header.request_id != request_id {
        return Err(ClientError::Protocol(format!(
            "reply to request {} while waiting for {request_id}",
            header.request_id
        )));
    }
    if header.operation != operation as u16 {
        return Err(ClientError::Protocol(format!(
            "reply operation {} to a {} request",
            header.operation,
            operation.name()
        )));
    }
    Ok(())
}
