//! The batching client: one connection shared by any number of threads, where concurrent
//! `create_accounts`/`create_transfers` calls are coalesced into one request per round trip.
//!
//! Two threads own the socket: a writer that drains the call queue into frames (many callers'
//! events in one request, up to the daemon's `events_per_request_max`, several requests in
//! flight up to its `requests_in_flight_max`) and a reader that matches replies to requests
//! and hands each caller exactly its own results. When the connection breaks, requests in
//! flight are re-sent on a new connection with the same events: ids make that safe (an event
//! the lost attempt applied answers `exists`; an id that failed for a reason that could change
//! answers `id_already_failed`).
//!
//! Linked chains never cross callers: a call whose last event is `linked` (an open chain,
//! which the daemon fails as a whole) ends the request it is in, so it cannot extend into the
//! next caller's events.

use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::protocol::{
    decode_create_results, decode_records, encode_ids, encode_records, frame_begin, frame_finish,
    verify_checksum, ChangeEventsReply, ChangeEventsRequest, Header, HelloReply, HelloRequest,
    Operation, Record, Status, StatusReply, HEADER_SIZE, HELLO_TOKEN_MAX,
};
use crate::types::{
    Account, AccountBalance, AccountFilter, AccountFlags, AccountLimit, CreateResult, Transfer,
    TransferFlags, EVENTS_PER_REQUEST_MAX,
};
use crate::{ClientError, Result};

/// Most requests this client keeps in flight on its connection, whatever the daemon allows.
const REQUESTS_IN_FLIGHT_CAP: usize = 64;
/// Longest wait between reconnection attempts.
const RECONNECT_BACKOFF_MAX: Duration = Duration::from_millis(500);
/// First wait before reconnecting.
const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(5);

/// How to connect, and how long a call may take.
#[derive(Clone, Debug)]
pub struct BatchingOptions {
    /// The daemon's auth token, if it is configured with one (at most 256 bytes).
    pub token: Option<Vec<u8>>,
    /// How long one call may take, reconnections and retries included. A call that runs out
    /// of time returns [`ClientError::Timeout`]: its outcome is unknown, and retrying it with
    /// the same ids is safe.
    pub request_timeout: Duration,
    /// Limit on establishing one TCP connection.
    pub connect_timeout: Duration,
}

impl Default for BatchingOptions {
    fn default() -> Self {
        BatchingOptions {
            token: None,
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// A connection to `ledgerd` that many threads share (`&self` methods; wrap it in an `Arc`).
pub struct BatchingClient {
    shared: Arc<Shared>,
    writer: Option<JoinHandle<()>>,
}

/// Where a caller waits for its answer.
struct Slot {
    answer: Mutex<Option<Result<Answer>>>,
    ready: Condvar,
}

enum Answer {
    /// A create: this caller's failed events, indexes relative to its own events.
    Results(Vec<CreateResult>),
    /// Any other operation: the reply body.
    Body(Vec<u8>),
}

/// One caller's request, waiting to be sent or in flight.
struct Call {
    operation: Operation,
    /// The encoded records (or the body of a non-create request).
    body: Vec<u8>,
    /// Events in `body` (creates only; 0 otherwise).
    events: usize,
    /// The last event has `linked` set: nothing may follow it in the same request.
    open_chain: bool,
    deadline: Instant,
    slot: Arc<Slot>,
}

/// A request in flight: which calls it carries, in order.
struct InFlight {
    calls: Vec<Call>,
}

struct State {
    queue: VecDeque<Call>,
    in_flight: HashMap<u64, InFlight>,
    next_request_id: u64,
    /// Which connection is current. Whoever finds the current connection broken (the reader
    /// on a failed read, the writer on a failed write) bumps it; a reader whose generation is
    /// no longer current stops, and the writer reconnects.
    generation: u64,
    closed: bool,
    hello: HelloReply,
}

struct Shared {
    state: Mutex<State>,
    /// Signalled when the writer has work: a call queued, a request answered, a reconnection
    /// needed, or the client closed.
    work: Condvar,
    addrs: Vec<SocketAddr>,
    options: BatchingOptions,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock is a bug in this module; the process aborts.
        self.state.lock().expect("batching client state lock poisoned")
    }
}

impl BatchingClient {
    /// Connects, says hello, and starts the connection's threads.
    pub fn connect(addr: impl ToSocketAddrs, options: BatchingOptions) -> Result<BatchingClient> {
        if options.token.as_ref().is_some_and(|t| t.len() > HELLO_TOKEN_MAX) {
            return Err(ClientError::Protocol(format!(
                "token longer than {HELLO_TOKEN_MAX} bytes"
            )));
        }
        let addrs: Vec<SocketAddr> = addr.to_socket_addrs()?.collect();
        let (stream, hello) = open(&addrs, &options)?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                in_flight: HashMap::new(),
                next_request_id: 1,
                generation: 0,
                closed: false,
                hello,
            }),
            work: Condvar::new(),
            addrs,
            options,
        });
        let writer_shared = Arc::clone(&shared);
        let writer = std::thread::Builder::new()
            .name("ledgerd-client-writer".into())
            .spawn(move || writer_loop(writer_shared, stream))?;
        Ok(BatchingClient { shared, writer: Some(writer) })
    }

    /// The daemon's limits, from its latest hello reply.
    pub fn server_limits(&self) -> HelloReply {
        self.shared.lock().hello
    }

    /// Creates accounts; returns this call's failed events only (empty: all created), with
    /// indexes into `accounts`. Concurrent calls share requests.
    pub fn create_accounts(&self, accounts: &[Account]) -> Result<Vec<CreateResult>> {
        let open_chain = accounts.last().is_some_and(|a| a.flags & AccountFlags::LINKED != 0);
        self.create(Operation::CreateAccounts, accounts, open_chain)
    }

    /// Creates transfers; returns this call's failed events only (empty: all applied), with
    /// indexes into `transfers`. Concurrent calls share requests.
    pub fn create_transfers(&self, transfers: &[Transfer]) -> Result<Vec<CreateResult>> {
        let open_chain = transfers.last().is_some_and(|t| t.flags & TransferFlags::LINKED != 0);
        self.create(Operation::CreateTransfers, transfers, open_chain)
    }

    /// Sets account limits; returns the failed ones only (not coalesced with other calls).
    pub fn set_account_limits(&self, limits: &[AccountLimit]) -> Result<Vec<CreateResult>> {
        let mut body = Vec::new();
        encode_records(&mut body, limits);
        let body = self.call(Operation::SetAccountLimits, body, 0, false)?;
        let mut results = Vec::new();
        decode_create_results(&body, limits.len(), &mut results).map_err(ClientError::Protocol)?;
        Ok(results)
    }

    fn create<R: Record>(
        &self,
        operation: Operation,
        records: &[R],
        open_chain: bool,
    ) -> Result<Vec<CreateResult>> {
        if records.is_empty() {
            return Err(ClientError::Status(Status::EmptyBatch));
        }
        let max = (self.shared.lock().hello.events_per_request_max as usize)
            .clamp(1, EVENTS_PER_REQUEST_MAX);
        if records.len() > max {
            return Err(ClientError::Status(Status::TooManyEvents));
        }
        let mut body = Vec::with_capacity(records.len() * R::SIZE);
        encode_records(&mut body, records);
        match self.submit(operation, body, records.len(), open_chain)? {
            Answer::Results(results) => Ok(results),
            Answer::Body(_) => Err(ClientError::Protocol("a create answered with records".into())),
        }
    }

    /// The accounts that exist among `ids`, in request order.
    pub fn lookup_accounts(&self, ids: &[u128]) -> Result<Vec<Account>> {
        self.lookup(Operation::LookupAccounts, ids)
    }

    /// The transfers that exist among `ids`, in request order.
    pub fn lookup_transfers(&self, ids: &[u128]) -> Result<Vec<Transfer>> {
        self.lookup(Operation::LookupTransfers, ids)
    }

    /// The limits of the accounts among `ids` that exist, in request order.
    pub fn lookup_account_limits(&self, account_ids: &[u128]) -> Result<Vec<AccountLimit>> {
        self.lookup(Operation::LookupAccountLimits, account_ids)
    }

    fn lookup<R: Record>(&self, operation: Operation, ids: &[u128]) -> Result<Vec<R>> {
        let mut body = Vec::with_capacity(ids.len() * 16);
        encode_ids(&mut body, ids);
        let body = self.call(operation, body, 0, false)?;
        records(&body, ids.len())
    }

    /// An account's transfers matching `filter`.
    pub fn get_account_transfers(&self, filter: &AccountFilter) -> Result<Vec<Transfer>> {
        let mut body = Vec::new();
        encode_records(&mut body, std::slice::from_ref(filter));
        let body = self.call(Operation::GetAccountTransfers, body, 0, false)?;
        records(&body, filter.limit as usize)
    }

    /// A `history` account's balance rows matching `filter`.
    pub fn get_account_balances(&self, filter: &AccountFilter) -> Result<Vec<AccountBalance>> {
        let mut body = Vec::new();
        encode_records(&mut body, std::slice::from_ref(filter));
        let body = self.call(Operation::GetAccountBalances, body, 0, false)?;
        records(&body, filter.limit as usize)
    }

    /// Change events from a position.
    pub fn change_events(&self, request: &ChangeEventsRequest) -> Result<ChangeEventsReply> {
        let mut body = Vec::new();
        request.encode(&mut body);
        let body = self.call(Operation::ChangeEvents, body, 0, false)?;
        ChangeEventsReply::decode(&body)
            .map_err(|s| ClientError::Protocol(format!("change_events reply: {s}")))
    }

    /// The daemon's counters and state hash.
    pub fn status(&self) -> Result<StatusReply> {
        let body = self.call(Operation::Status, Vec::new(), 0, false)?;
        StatusReply::decode(&body).map_err(|s| ClientError::Protocol(format!("status reply: {s}")))
    }

    fn call(
        &self,
        operation: Operation,
        body: Vec<u8>,
        events: usize,
        open_chain: bool,
    ) -> Result<Vec<u8>> {
        match self.submit(operation, body, events, open_chain)? {
            Answer::Body(body) => Ok(body),
            Answer::Results(_) => Err(ClientError::Protocol("unexpected create results".into())),
        }
    }

    /// Queues one call and waits for its answer (or its deadline).
    fn submit(
        &self,
        operation: Operation,
        body: Vec<u8>,
        events: usize,
        open_chain: bool,
    ) -> Result<Answer> {
        let deadline = Instant::now() + self.shared.options.request_timeout;
        let slot = Arc::new(Slot { answer: Mutex::new(None), ready: Condvar::new() });
        {
            let mut state = self.shared.lock();
            if state.closed {
                return Err(ClientError::Protocol("the client is closed".into()));
            }
            state.queue.push_back(Call {
                operation,
                body,
                events,
                open_chain,
                deadline,
                slot: Arc::clone(&slot),
            });
        }
        self.shared.work.notify_all();
        let mut answer = slot.answer.lock().expect("slot lock poisoned");
        loop {
            if let Some(answer) = answer.take() {
                return answer;
            }
            let now = Instant::now();
            // The writer answers a call whose deadline passed; the margin covers the case where
            // it is blocked reconnecting.
            let wait = deadline.saturating_duration_since(now) + RECONNECT_BACKOFF_MAX;
            let (guard, timeout) =
                slot.ready.wait_timeout(answer, wait).expect("slot lock poisoned");
            answer = guard;
            if timeout.timed_out() && answer.is_none() && Instant::now() >= deadline {
                return Err(ClientError::Timeout);
            }
        }
    }
}

impl Drop for BatchingClient {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.work.notify_all();
        if let Some(writer) = self.writer.take() {
            // The writer answers every call still queued and stops its reader.
            let _ = writer.join();
        }
    }
}

fn answer(slot: &Slot, result: Result<Answer>) {
    *slot.answer.lock().expect("slot lock poisoned") = Some(result);
    slot.ready.notify_all();
}

fn records<R: Record>(body: &[u8], max: usize) -> Result<Vec<R>> {
    let mut out = Vec::new();
    decode_records(body, &mut out).map_err(ClientError::Protocol)?;
    if out.len() > max {
        return Err(ClientError::Protocol(format!("{} records, at most {max} asked", out.len())));
    }
    Ok(out)
}

/// Connects to the first address that answers and says hello.
fn open(addrs: &[SocketAddr], options: &BatchingOptions) -> Result<(TcpStream, HelloReply)> {
    let mut last_error = None;
    for addr in addrs {
        match TcpStream::connect_timeout(addr, options.connect_timeout) {
            Ok(mut stream) => {
                stream.set_nodelay(true)?;
                stream.set_read_timeout(Some(options.connect_timeout))?;
                let mut frame = Vec::new();
                let start = frame_begin(&mut frame);
                HelloRequest::new(options.token.as_deref()).encode(&mut frame);
                frame_finish(&mut frame, start, Operation::Hello, Status::Ok, 0);
                stream.write_all(&frame)?;
                let (header, body) = read_frame(&mut stream)?;
                let status = Status::from_u16(header.status).ok_or_else(|| {
                    ClientError::Protocol(format!("unknown status {}", header.status))
                })?;
                if status != Status::Ok {
                    return Err(ClientError::Status(status));
                }
                let hello = HelloReply::decode(&body)
                    .map_err(|s| ClientError::Protocol(format!("hello reply: {s}")))?;
                stream.set_read_timeout(None)?;
                return Ok((stream, hello));
            }
            Err(e) => last_error = Some(e),
        }
    }
    Err(ClientError::Io(last_error.unwrap_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address to connect to")
    })))
}

fn read_frame(stream: &mut TcpStream) -> Result<(Header, Vec<u8>)> {
    let mut head = [0u8; HEADER_SIZE];
    stream.read_exact(&mut head)?;
    let header =
        Header::decode(&head).map_err(|e| ClientError::Protocol(format!("reply header: {e}")))?;
    let mut body = vec![0u8; header.body_length as usize];
    stream.read_exact(&mut body)?;
    if !verify_checksum(&head, &body) {
        return Err(ClientError::Protocol("reply checksum mismatch".into()));
    }
    Ok((header, body))
}

/// Whether a refused request may be sent again as it is.
fn retryable(status: Status) -> bool {
    matches!(status, Status::Busy | Status::JournalUnavailable | Status::ShuttingDown)
}

/// The writer: builds requests from the queue, writes them, and reconnects when the reader
/// reports a broken connection.
fn writer_loop(shared: Arc<Shared>, stream: TcpStream) {
    let mut stream = Some(stream);
    // The generation `stream` belongs to.
    let mut stream_generation = 0u64;
    let mut reader: Option<JoinHandle<()>> = None;
    let mut frame = Vec::with_capacity(1 << 20);
    let mut backoff = RECONNECT_BACKOFF_MIN;
    loop {
        // (Re)start the reader for the current socket.
        if reader.is_none() {
            if let Some(s) = &stream {
                let generation = stream_generation;
                match s.try_clone() {
                    Ok(read_half) => {
                        let reader_shared = Arc::clone(&shared);
                        reader = std::thread::Builder::new()
                            .name("ledgerd-client-reader".into())
                            .spawn(move || reader_loop(reader_shared, read_half, generation))
                            .ok();
                    }
                    Err(_) => stream = None,
                }
            }
        }
        let mut state = shared.lock();
        expire(&mut state);
        if stream.is_some() && state.generation != stream_generation {
            // The reader found the connection broken.
            if let Some(s) = stream.take() {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
        }
        if state.closed {
            for call in state.queue.drain(..) {
                answer(&call.slot, Err(ClientError::Protocol("the client is closed".into())));
            }
            let in_flight: Vec<InFlight> = state.in_flight.drain().map(|(_, f)| f).collect();
            drop(state);
            for call in in_flight.into_iter().flat_map(|f| f.calls) {
                answer(&call.slot, Err(ClientError::Protocol("the client is closed".into())));
            }
            if let Some(s) = &stream {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
            if let Some(r) = reader.take() {
                let _ = r.join();
            }
            return;
        }
        if stream.is_none() {
            // The connection broke: put what was in flight back at the front of the queue, in
            // request order, and reconnect.
            let mut ids: Vec<u64> = state.in_flight.keys().copied().collect();
            ids.sort_unstable();
            for id in ids.into_iter().rev() {
                let flight = state.in_flight.remove(&id).expect("id listed above");
                for call in flight.calls.into_iter().rev() {
                    state.queue.push_front(call);
                }
            }
            drop(state);
            if let Some(r) = reader.take() {
                let _ = r.join();
            }
            match open(&shared.addrs, &shared.options) {
                Ok((s, hello)) => {
                    let mut state = shared.lock();
                    state.hello = hello;
                    state.generation += 1;
                    stream_generation = state.generation;
                    drop(state);
                    stream = Some(s);
                    backoff = RECONNECT_BACKOFF_MIN;
                }
                Err(ClientError::Status(status)) if !retryable(status) => {
                    // The daemon refuses this client (e.g. `auth_failed`): waiting cannot help.
                    let mut state = shared.lock();
                    for call in state.queue.drain(..) {
                        answer(&call.slot, Err(ClientError::Status(status)));
                    }
                }
                Err(_) => {
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(RECONNECT_BACKOFF_MAX);
                }
            }
            continue;
        }
        let window = (state.hello.requests_in_flight_max as usize).clamp(1, REQUESTS_IN_FLIGHT_CAP);
        if state.queue.is_empty() || state.in_flight.len() >= window {
            let _ = shared.work.wait_timeout(state, RECONNECT_BACKOFF_MAX);
            continue;
        }
        // Take the calls for one request: the first queued call's operation; creates coalesce
        // up to the event limit, and an open chain ends the request.
        let events_max =
            (state.hello.events_per_request_max as usize).clamp(1, EVENTS_PER_REQUEST_MAX);
        let first = state.queue.pop_front().expect("queue is not empty");
        let operation = first.operation;
        let coalesce = first.events > 0;
        let mut events = first.events;
        let mut open_chain = first.open_chain;
        let mut calls = vec![first];
        while coalesce && !open_chain {
            let fits = state.queue.front().is_some_and(|next| {
                next.operation == operation && next.events > 0 && events + next.events <= events_max
            });
            if !fits {
                break;
            }
            let next = state.queue.pop_front().expect("front exists");
            events += next.events;
            open_chain = next.open_chain;
            calls.push(next);
        }
        let request_id = state.next_request_id;
        state.next_request_id += 1;
        frame.clear();
        let start = frame_begin(&mut frame);
        for call in &calls {
            frame.extend_from_slice(&call.body);
        }
        frame_finish(&mut frame, start, operation, Status::Ok, request_id);
        state.in_flight.insert(request_id, InFlight { calls });
        drop(state);
        let written = stream.as_mut().expect("checked above").write_all(&frame);
        if written.is_err() {
            if let Some(s) = stream.take() {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
            mark_broken(&shared, stream_generation);
        }
    }
}

/// Answers queued calls whose deadline passed (in-flight ones are answered by the reader or
/// re-queued on reconnection, then expire here).
fn expire(state: &mut State) {
    let now = Instant::now();
    state.queue.retain(|call| {
        if call.deadline <= now {
            answer(&call.slot, Err(ClientError::Timeout));
            false
        } else {
            true
        }
    });
}

/// The reader: matches each reply to its request and answers the request's callers.
fn reader_loop(shared: Arc<Shared>, mut stream: TcpStream, generation: u64) {
    let mut results = Vec::new();
    loop {
        let frame = read_frame(&mut stream);
        let mut state = shared.lock();
        if state.generation != generation || state.closed {
            return;
        }
        let (header, body) = match frame {
            Ok(frame) => frame,
            Err(_) => {
                // Broken: tell the writer, which re-sends what was in flight.
                let _ = stream.shutdown(std::net::Shutdown::Both);
                drop(state);
                mark_broken(&shared, generation);
                return;
            }
        };
        let status = Status::from_u16(header.status);
        let Some(flight) = state.in_flight.remove(&header.request_id) else {
            // A reply to no request: the stream cannot be trusted any more.
            let _ = stream.shutdown(std::net::Shutdown::Both);
            drop(state);
            mark_broken(&shared, generation);
            return;
        };
        match status {
            Some(Status::Ok) => {
                drop(state);
                deliver(flight, &body, &mut results);
            }
            Some(status) if retryable(status) && !status.closes_connection() => {
                // Not applied: send the same calls again, first.
                for call in flight.calls.into_iter().rev() {
                    state.queue.push_front(call);
                }
                drop(state);
                std::thread::sleep(RECONNECT_BACKOFF_MIN);
            }
            Some(status) if retryable(status) => {
                for call in flight.calls.into_iter().rev() {
                    state.queue.push_front(call);
                }
                drop(state);
                let _ = stream.shutdown(std::net::Shutdown::Both);
                mark_broken(&shared, generation);
                return;
            }
            Some(status) => {
                drop(state);
                for call in flight.calls {
                    answer(&call.slot, Err(ClientError::Status(status)));
                }
            }
            None => {
                drop(state);
                for call in flight.calls {
                    answer(
                        &call.slot,
                        Err(ClientError::Protocol(format!("unknown status {}", header.status))),
                    );
                }
            }
        }
        shared.work.notify_all();
    }
}

/// Marks the connection of `generation` broken so that the writer reconnects.
fn mark_broken(shared: &Shared, generation: u64) {
    let mut state = shared.lock();
    if state.generation == generation {
        state.generation += 1;
    }
    drop(state);
    shared.work.notify_all();
}

/// Splits an `ok` reply among the request's calls.
fn deliver(flight: InFlight, body: &[u8], results: &mut Vec<CreateResult>) {
    let events: usize = flight.calls.iter().map(|c| c.events).sum();
    if events == 0 {
        // Not a create: one call, the whole body.
        for call in flight.calls {
            answer(&call.slot, Ok(Answer::Body(body.to_vec())));
        }
        return;
    }
    results.clear();
    if let Err(e) = decode_create_results(body, events, results) {
        for call in flight.calls {
            answer(&call.slot, Err(ClientError::Protocol(e.clone())));
        }
        return;
    }
    let mut next = results.iter().peekable();
    let mut first = 0usize;
    for call in flight.calls {
        let end = first + call.events;
        let mut own = Vec::new();
        while let Some(r) = next.next_if(|r| (r.index as usize) < end) {
            let index = u32::try_from(r.index as usize - first).expect("below the event limit");
            own.push(CreateResult { index, result: r.result });
        }
        answer(&call.slot, Ok(Answer::Results(own)));
        first = end;
    }
}
