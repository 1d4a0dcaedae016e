//! A client of a cluster of replicas: it finds the leader and follows it.
//!
//! It holds one connection at a time. A request answered `not_leader` is sent again to the
//! replica the reply names (or to the next one when it names none); a connection that fails
//! is replaced by one to the next replica and the request is sent again. Sending a create
//! request again is safe: ids make creates idempotent, so an event that was applied before a
//! failover answers `exists` (or `exists_with_different_*` if the retry differs). A call gives
//! up when its deadline passes ([`ClientError::Timeout`]: outcome unknown, retrying later
//! with the same ids is safe).

use std::time::{Duration, Instant};

use crate::protocol::{
    decode_create_results, encode_ids, encode_records, NotLeaderReply, Operation, Record, Status,
    StatusReply,
};
use crate::types::{Account, CreateResult, Transfer};
use crate::{Client, ClientError, ClientOptions, Reply, Result};

/// How long a call keeps following the leader by default: long enough for an election.
pub const CALL_DEADLINE_DEFAULT: Duration = Duration::from_secs(10);
/// Wait before asking again when no replica knows a leader (an election is running).
const NO_LEADER_BACKOFF: Duration = Duration::from_millis(20);

/// Follows the leader of a cluster whose client addresses are `addrs`, listed in the order
/// of the replicas' `--cluster` list (a `not_leader` reply names the leader by position).
pub struct ClusterClient {
    addrs: Vec<String>,
    options: ClientOptions,
    /// The replica connected to, and the connection.
    current: Option<(usize, Client)>,
    /// The replica to try next when there is no connection.
    next: usize,
    /// Limit on each call, failovers included.
    pub call_deadline: Duration,
    /// Requests sent again because of a `not_leader` reply or a lost connection.
    pub retries: u64,
}

impl ClusterClient {
    /// A client of the replicas at `addrs`; it connects on the first call.
    pub fn new(addrs: Vec<String>, options: ClientOptions) -> ClusterClient {
        assert!(!addrs.is_empty(), "a cluster has at least one replica");
        ClusterClient {
            addrs,
            options,
            current: None,
            next: 0,
            call_deadline: CALL_DEADLINE_DEFAULT,
            retries: 0,
        }
    }

    /// The position of the replica the client is connected to, if any.
    pub fn connected_to(&self) -> Option<usize> {
        self.current.as_ref().map(|(i, _)| *i)
    }

    /// Sends `body` as `operation` until a replica that leads answers it (or one that may
    /// answer it: `status` is answered by whichever replica is connected to) and returns that
    /// reply, whatever its status but `not_leader`.
    pub fn call_raw(&mut self, operation: Operation, body: &[u8]) -> Result<Reply> {
        let deadline = Instant::now() + self.call_deadline;
        let mut first = true;
        loop {
            if !first {
                self.retries += 1;
            }
            first = false;
            if Instant::now() >= deadline {
                return Err(ClientError::Timeout);
            }
            let client = match self.connection() {
                Ok(client) => client,
                Err(ClientError::Io(_)) => {
                    self.next = (self.next + 1) % self.addrs.len();
                    std::thread::sleep(NO_LEADER_BACKOFF);
                    continue;
                }
                Err(e) => return Err(e),
            };
            let sent = client.send_raw(operation, body);
            let reply = sent.and_then(|_| client.recv());
            match reply {
                Ok(reply) if reply.status == Status::NotLeader => {
                    let hint = NotLeaderReply::decode(&reply.body)
                        .map_err(|s| ClientError::Protocol(format!("not_leader reply: {s}")))?;
                    self.follow(hint.hint());
                }
                Ok(reply) => return Ok(reply),
                // The request was not sent, or its reply was lost: send it again elsewhere.
                Err(ClientError::Io(_)) => self.drop_connection(),
                Err(e) => return Err(e),
            }
        }
    }

    /// Connects to the replica that leads and returns that connection (for pipelining or
    /// batching through [`Client`]); [`ClientError::Timeout`] if no leader answered before
    /// the deadline.
    pub fn leader(&mut self) -> Result<&mut Client> {
        // A read-only probe that only a serving leader answers `ok`.
        let probe = [0u8; 16];
        let reply = self.call_raw(Operation::LookupAccounts, &probe)?;
        if reply.status != Status::Ok {
            return Err(ClientError::Status(reply.status));
        }
        Ok(&mut self.current.as_mut().expect("connected after a call").1)
    }

    pub fn create_accounts(&mut self, accounts: &[Account]) -> Result<Vec<CreateResult>> {
        self.create(Operation::CreateAccounts, accounts)
    }

    pub fn create_transfers(&mut self, transfers: &[Transfer]) -> Result<Vec<CreateResult>> {
        self.create(Operation::CreateTransfers, transfers)
    }

    pub fn lookup_accounts(&mut self, ids: &[u128]) -> Result<Vec<Account>> {
        self.lookup(Operation::LookupAccounts, ids)
    }

    pub fn lookup_transfers(&mut self, ids: &[u128]) -> Result<Vec<Transfer>> {
        self.lookup(Operation::LookupTransfers, ids)
    }

    /// The status of the replica connected to (connecting to the first one that answers).
    pub fn status(&mut self) -> Result<StatusReply> {
        let reply = ok(self.call_raw(Operation::Status, &[])?)?;
        StatusReply::decode(&reply.body)
            .map_err(|s| ClientError::Protocol(format!("status reply: {s}")))
    }

    fn create<R: Record>(
        &mut self,
        operation: Operation,
        records: &[R],
    ) -> Result<Vec<CreateResult>> {
        let mut body = Vec::with_capacity(records.len() * R::SIZE);
        encode_records(&mut body, records);
        let reply = ok(self.call_raw(operation, &body)?)?;
        let mut results = Vec::new();
        decode_create_results(&reply.body, records.len(), &mut results)
            .map_err(ClientError::Protocol)?;
        Ok(results)
    }

    fn lookup<R: Record>(&mut self, operation: Operation, ids: &[u128]) -> Result<Vec<R>> {
        let mut body = Vec::with_capacity(ids.len() * 16);
        encode_ids(&mut body, ids);
        let reply = ok(self.call_raw(operation, &body)?)?;
        let mut records = Vec::new();
        crate::protocol::decode_records(&reply.body, &mut records)
            .map_err(ClientError::Protocol)?;
        Ok(records)
    }

    fn connection(&mut self) -> Result<&mut Client> {
        if self.current.is_none() {
            let i = self.next;
            let client = Client::connect_with(self.addrs[i].as_str(), self.options.clone())?;
            self.current = Some((i, client));
        }
        Ok(&mut self.current.as_mut().expect("connected").1)
    }

    /// After `not_leader`: the named replica next, or the one after this one.
    fn follow(&mut self, hint: Option<usize>) {
        let at = self.connected_to().unwrap_or(self.next);
        match hint.filter(|&h| h < self.addrs.len()) {
            Some(leader) if leader != at => {
                self.next = leader;
                self.current = None;
            }
            _ => {
                // No leader known here (an election), or this replica names itself while it
                // cannot serve yet: try the next one after a pause.
                self.next = (at + 1) % self.addrs.len();
                self.current = None;
                std::thread::sleep(NO_LEADER_BACKOFF);
            }
        }
    }

    fn drop_connection(&mut self) {
        let at = self.connected_to().unwrap_or(self.next);
        self.current = None;
        self.next = (at + 1) % self.addrs.len();
    }
}

fn ok(reply: Reply) -> Result<Reply> {
    match reply.status {
        Status::Ok => Ok(reply),
        status => Err(ClientError::Status(status)),
    }
}
