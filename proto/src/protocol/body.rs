//! Request and reply bodies: validation of request bodies, hello, status, create results and
//! record lists. Knows bytes and records, not state: the daemon applies, this only checks shape.

use super::{
    Operation, Status, CHANGE_EVENTS_PER_REPLY_MAX, FRAME_BODY_MAX, PROTOCOL_VERSION,
    REQUESTS_IN_FLIGHT_MAX_DEFAULT,
};
use crate::protocol::change_events::ChangeEventsRequest;
use crate::types::{read_u128, read_u16, read_u32, read_u64};
use crate::types::{
    Account, AccountBalance, AccountFilter, AccountFilterFlags, AccountLimit, CreateResult,
    ResultCode, Transfer, EVENTS_PER_REQUEST_MAX,
};

/// Size of one id in lookup request bodies (a little-endian u128).
pub const ID_SIZE: usize = 16;

/// Size of one record of a batch operation's request body, or `None` for operations whose
/// body is one fixed-size structure.
pub fn request_record_size(operation: Operation) -> Option<usize> {
    match operation {
        Operation::CreateAccounts => Some(Account::SIZE),
        Operation::CreateTransfers => Some(Transfer::SIZE),
        Operation::SetAccountLimits => Some(AccountLimit::SIZE),
        Operation::LookupAccounts | Operation::LookupTransfers | Operation::LookupAccountLimits => {
            Some(ID_SIZE)
        }
        _ => None,
    }
}

/// Size of one record of an `ok` reply body.
pub fn reply_record_size(operation: Operation) -> usize {
    match operation {
        Operation::CreateAccounts | Operation::CreateTransfers | Operation::SetAccountLimits => {
            CreateResult::SIZE
        }
        Operation::LookupAccounts => Account::SIZE,
        Operation::LookupTransfers | Operation::GetAccountTransfers => Transfer::SIZE,
        Operation::LookupAccountLimits => AccountLimit::SIZE,
        Operation::GetAccountBalances => AccountBalance::SIZE,
        Operation::Hello => HelloReply::SIZE,
        Operation::Status => StatusReply::SIZE,
        Operation::ChangeEvents => super::ChangeEvent::SIZE,
    }
}

/// Checks the shape of a request body before it goes anywhere near the state; returns the
/// number of fixed-size records in it (0 for `status`, 1 for single-structure bodies).
///
/// Batch bodies: not a multiple of the record size -> `body_length_invalid`, empty ->
/// `empty_batch`, above [`EVENTS_PER_REQUEST_MAX`] records -> `too_many_events`. Fixed bodies
/// of the wrong size -> `body_length_invalid`; right size, invalid content -> `invalid_body`.
pub fn validate_request_body(operation: Operation, body: &[u8]) -> Result<usize, Status> {
    if let Some(size) = request_record_size(operation) {
        if !body.len().is_multiple_of(size) {
            return Err(Status::BodyLengthInvalid);
        }
        let count = body.len() / size;
        if count == 0 {
            return Err(Status::EmptyBatch);
        }
        if count > EVENTS_PER_REQUEST_MAX {
            return Err(Status::TooManyEvents);
        }
        return Ok(count);
    }
    match operation {
        Operation::Hello => Hello::decode(body).map(|_| 1),
        Operation::Status => {
            if body.is_empty() {
                Ok(0)
            } else {
                Err(Status::BodyLengthInvalid)
            }
        }
        Operation::GetAccountTransfers | Operation::GetAccountBalances => {
            if body.len() != AccountFilter::SIZE {
                return Err(Status::BodyLengthInvalid);
            }
            validate_filter(&AccountFilter::read_from(body))?;
            Ok(1)
        }
        Operation::ChangeEvents => ChangeEventsRequest::decode(body).map(|_| 1),
        _ => unreachable!("batch operations are handled above"),
    }
}

/// The rules of an [`AccountFilter`]: a valid account id, zero reserved bytes, known flags with
/// at least one of `debits`/`credits`, `limit` in `1..=EVENTS_PER_REQUEST_MAX`, and
/// `timestamp_min <= timestamp_max` when both are set.
pub fn validate_filter(filter: &AccountFilter) -> Result<(), Status> {
    let ok = filter.account_id != 0
        && filter.account_id != u128::MAX
        && filter.reserved.iter().all(|&b| b == 0)
        && filter.flags & !AccountFilterFlags::ALL == 0
        && filter.flags & (AccountFilterFlags::DEBITS | AccountFilterFlags::CREDITS) != 0
        && filter.limit != 0
        && filter.limit as usize <= EVENTS_PER_REQUEST_MAX
        && (filter.timestamp_min == 0
            || filter.timestamp_max == 0
            || filter.timestamp_min <= filter.timestamp_max);
    if ok {
        Ok(())
    } else {
        Err(Status::InvalidBody)
    }
}

/// The longest auth token a hello carries.
pub const HELLO_TOKEN_MAX: usize = 256;

/// The first request of every connection.
///
/// Body, exactly [`HelloRequest::SIZE`] = 264 bytes: `version@0 u16, token_length@2 u16,
/// reserved@4 [u8; 4], token@8 [u8; 256]` (the first `token_length` bytes are the token, the
/// rest zero). No token: `token_length = 0`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HelloRequest {
    pub version: u16,
    pub token: Vec<u8>,
}

impl HelloRequest {
    pub const SIZE: usize = 8 + HELLO_TOKEN_MAX;

    pub fn new(token: Option<&[u8]>) -> HelloRequest {
        HelloRequest { version: PROTOCOL_VERSION, token: token.unwrap_or_default().to_vec() }
    }

    /// Appends the body. Panics if the token is longer than [`HELLO_TOKEN_MAX`].
    pub fn encode(&self, out: &mut Vec<u8>) {
        assert!(self.token.len() <= HELLO_TOKEN_MAX, "token longer than {HELLO_TOKEN_MAX} bytes");
        let start = out.len();
        out.resize(start + Self::SIZE, 0);
        let b = &mut out[start..];
        b[0..2].copy_from_slice(&self.version.to_le_bytes());
        let len = u16::try_from(self.token.len()).expect("checked above");
        b[2..4].copy_from_slice(&len.to_le_bytes());
        b[8..8 + self.token.len()].copy_from_slice(&self.token);
    }

    /// Decodes and copies the token; see [`Hello::decode`] for the rules.
    pub fn decode(body: &[u8]) -> Result<HelloRequest, Status> {
        let hello = Hello::decode(body)?;
        Ok(HelloRequest { version: hello.version, token: hello.token.to_vec() })
    }
}

/// A hello request borrowed from the frame body, without copying the token: what a server
/// decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hello<'a> {
    pub version: u16,
    pub token: &'a [u8],
}

impl<'a> Hello<'a> {
    /// `body_length_invalid` for a wrong size; `invalid_body` for a token length above the
    /// maximum or non-zero reserved or padding bytes. The version is returned as sent: the
    /// daemon answers `unsupported_version` when it differs from [`PROTOCOL_VERSION`].
    pub fn decode(body: &'a [u8]) -> Result<Hello<'a>, Status> {
        if body.len() != HelloRequest::SIZE {
            return Err(Status::BodyLengthInvalid);
        }
        let len = read_u16(body, 2) as usize;
        if len > HELLO_TOKEN_MAX
            || body[4..8].iter().any(|&b| b != 0)
            || body[8 + len..].iter().any(|&b| b != 0)
        {
            return Err(Status::InvalidBody);
        }
        Ok(Hello { version: read_u16(body, 0), token: &body[8..8 + len] })
    }
}

/// Compares two tokens in time that depends only on their lengths, not their contents.
pub fn token_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

/// The daemon's answer to a hello: its limits, so a client can size its batches and window.
///
/// Body, exactly 64 bytes: `version@0 u16, reserved@2 u16, requests_in_flight_max@4 u32,
/// frame_body_max@8 u32, events_per_request_max@12 u32, change_events_per_reply_max@16 u32,
/// reserved@20 [u8; 44]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HelloReply {
    pub version: u16,
    pub requests_in_flight_max: u32,
    pub frame_body_max: u32,
    pub events_per_request_max: u32,
    pub change_events_per_reply_max: u32,
}

impl Default for HelloReply {
    fn default() -> Self {
        HelloReply {
            version: PROTOCOL_VERSION,
            requests_in_flight_max: REQUESTS_IN_FLIGHT_MAX_DEFAULT,
            frame_body_max: FRAME_BODY_MAX as u32,
            events_per_request_max: EVENTS_PER_REQUEST_MAX as u32,
            change_events_per_reply_max: CHANGE_EVENTS_PER_REPLY_MAX as u32,
        }
    }
}

impl HelloReply {
    pub const SIZE: usize = 64;

    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.resize(start + Self::SIZE, 0);
        let b = &mut out[start..];
        b[0..2].copy_from_slice(&self.version.to_le_bytes());
        b[4..8].copy_from_slice(&self.requests_in_flight_max.to_le_bytes());
        b[8..12].copy_from_slice(&self.frame_body_max.to_le_bytes());
        b[12..16].copy_from_slice(&self.events_per_request_max.to_le_bytes());
        b[16..20].copy_from_slice(&self.change_events_per_reply_max.to_le_bytes());
    }

    pub fn decode(body: &[u8]) -> Result<HelloReply, Status> {
        if body.len() != Self::SIZE {
            return Err(Status::BodyLengthInvalid);
        }
        Ok(HelloReply {
            version: read_u16(body, 0),
            requests_in_flight_max: read_u32(body, 4),
            frame_body_max: read_u32(body, 8),
            events_per_request_max: read_u32(body, 12),
            change_events_per_reply_max: read_u32(body, 16),
        })
    }
}

/// The daemon's counters and state hash (`status` reply).
///
/// Body, exactly 128 bytes: `sequence@0 u64` (last durable journal sequence),
/// `snapshot_sequence@8 u64`, `state_hash@16 u128`, `accounts@32 u64`, `transfers@40 u64`,
/// `pending_transfers@48 u64`, `failed_ids@56 u64`, `clock_ns@64 u64` (the ledger clock),
/// `account_limits@72 u64`, `uptime_ns@80 u64`, `connections@88 u32`, `role@92 u8`
/// ([`ReplicaRole`]), `replica@93 u8` (this replica's position in `--cluster`, 0 when
/// standalone), `reserved@94 [u8; 2]`, `term@96 u64`, `commit@104 u64` (the replicated log's
/// commit index; 0 when standalone), `leader@112 u32` (the leader's position in `--cluster`,
/// `u32::MAX` when unknown or standalone), `reserved@116 [u8; 12]`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatusReply {
    pub sequence: u64,
    pub snapshot_sequence: u64,
    pub state_hash: u128,
    pub accounts: u64,
    pub transfers: u64,
    pub pending_transfers: u64,
    pub failed_ids: u64,
    pub clock_ns: u64,
    pub account_limits: u64,
    pub uptime_ns: u64,
    pub connections: u32,
    pub role: ReplicaRole,
    pub replica: u8,
    pub term: u64,
    pub commit: u64,
    pub leader: u32,
}

/// What a daemon is in its cluster (`status` reply, byte 92).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(u8)]
pub enum ReplicaRole {
    /// A single daemon, no replication (the default).
    #[default]
    Standalone = 0,
    Follower = 1,
    Candidate = 2,
    Leader = 3,
}

impl ReplicaRole {
    pub fn from_u8(v: u8) -> Option<ReplicaRole> {
        Some(match v {
            0 => ReplicaRole::Standalone,
            1 => ReplicaRole::Follower,
            2 => ReplicaRole::Candidate,
            3 => ReplicaRole::Leader,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            ReplicaRole::Standalone => "standalone",
            ReplicaRole::Follower => "follower",
            ReplicaRole::Candidate => "candidate",
            ReplicaRole::Leader => "leader",
        }
    }
}

/// The `leader` of a [`StatusReply`] and of a `not_leader` reply when no leader is known.
pub const LEADER_UNKNOWN: u32 = u32::MAX;

/// The body of a `not_leader` reply, exactly 8 bytes: `leader@0 u32` (the position in the
/// cluster's address list of the replica this one believes leads, [`LEADER_UNKNOWN`] if
/// none), `reserved@4 u32`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotLeaderReply {
    pub leader: u32,
}

impl NotLeaderReply {
    pub const SIZE: usize = 8;

    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.leader.to_le_bytes());
        out.extend_from_slice(&[0u8; 4]);
    }

    /// The hint; an empty body (a daemon that sent none) reads as no hint.
    pub fn decode(body: &[u8]) -> Result<NotLeaderReply, Status> {
        match body.len() {
            0 => Ok(NotLeaderReply { leader: LEADER_UNKNOWN }),
            Self::SIZE => Ok(NotLeaderReply { leader: read_u32(body, 0) }),
            _ => Err(Status::BodyLengthInvalid),
        }
    }

    /// The hinted position, if any.
    pub fn hint(&self) -> Option<usize> {
        (self.leader != LEADER_UNKNOWN).then_some(self.leader as usize)
    }
}

impl StatusReply {
    pub const SIZE: usize = 128;

    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.resize(start + Self::SIZE, 0);
        let b = &mut out[start..];
        b[0..8].copy_from_slice(&self.sequence.to_le_bytes());
        b[8..16].copy_from_slice(&self.snapshot_sequence.to_le_bytes());
        b[16..32].copy_from_slice(&self.state_hash.to_le_bytes());
        b[32..40].copy_from_slice(&self.accounts.to_le_bytes());
        b[40..48].copy_from_slice(&self.transfers.to_le_bytes());
        b[48..56].copy_from_slice(&self.pending_transfers.to_le_bytes());
        b[56..64].copy_from_slice(&self.failed_ids.to_le_bytes());
        b[64..72].copy_from_slice(&self.clock_ns.to_le_bytes());
        b[72..80].copy_from_slice(&self.account_limits.to_le_bytes());
        b[80..88].copy_from_slice(&self.uptime_ns.to_le_bytes());
        b[88..92].copy_from_slice(&self.connections.to_le_bytes());
        b[92] = self.role as u8;
        b[93] = self.replica;
        b[96..104].copy_from_slice(&self.term.to_le_bytes());
        b[104..112].copy_from_slice(&self.commit.to_le_bytes());
        b[112..116].copy_from_slice(&self.leader.to_le_bytes());
    }

    pub fn decode(body: &[u8]) -> Result<StatusReply, Status> {
        if body.len() != Self::SIZE {
            return Err(Status::BodyLengthInvalid);
        }
        Ok(StatusReply {
            sequence: read_u64(body, 0),
            snapshot_sequence: read_u64(body, 8),
            state_hash: read_u128(body, 16),
            accounts: read_u64(body, 32),
            transfers: read_u64(body, 40),
            pending_transfers: read_u64(body, 48),
            failed_ids: read_u64(body, 56),
            clock_ns: read_u64(body, 64),
            account_limits: read_u64(body, 72),
            uptime_ns: read_u64(body, 80),
            connections: read_u32(body, 88),
            role: ReplicaRole::from_u8(body[92]).ok_or(Status::InvalidBody)?,
            replica: body[93],
            term: read_u64(body, 96),
            commit: read_u64(body, 104),
            leader: read_u32(body, 112),
        })
    }
}

/// Appends one create result (`index@0 u32, result@4 u32`).
pub fn encode_create_result(out: &mut Vec<u8>, result: &CreateResult) {
    out.extend_from_slice(&result.index.to_le_bytes());
    out.extend_from_slice(&(result.result as u32).to_le_bytes());
}

/// Decodes a create reply body into `out` (appended). Refuses a body that is not a multiple
/// of 8 bytes, an unknown result code, an index not below `event_count`, an `ok` entry, or
/// indexes that are not strictly increasing.
pub fn decode_create_results(
    body: &[u8],
    event_count: usize,
    out: &mut Vec<CreateResult>,
) -> Result<(), String> {
    if !body.len().is_multiple_of(CreateResult::SIZE) {
        return Err(format!("create reply of {} bytes is not a multiple of 8", body.len()));
    }
    let mut previous: Option<u32> = None;
    for chunk in body.chunks_exact(CreateResult::SIZE) {
        let index = read_u32(chunk, 0);
        let code = read_u32(chunk, 4);
        let result =
            ResultCode::from_u32(code).ok_or_else(|| format!("unknown result code {code}"))?;
        if index as usize >= event_count {
            return Err(format!("result index {index} out of range ({event_count} events)"));
        }
        if previous.is_some_and(|p| p >= index) {
            return Err(format!("result indexes not increasing at {index}"));
        }
        if result == ResultCode::Ok {
            return Err(format!("result for index {index} is ok: replies list failures only"));
        }
        previous = Some(index);
        out.push(CreateResult { index, result });
    }
    Ok(())
}

/// Appends ids as 16-byte little-endian records.
pub fn encode_ids(out: &mut Vec<u8>, ids: &[u128]) {
    for id in ids {
        out.extend_from_slice(&id.to_le_bytes());
    }
}

/// Reads the ids of a lookup request body (length already validated).
pub fn decode_ids(body: &[u8]) -> impl Iterator<Item = u128> + '_ {
    body.chunks_exact(ID_SIZE).map(|c| u128::from_le_bytes(c.try_into().expect("16 bytes")))
}

/// A fixed-size record of a request or reply body.
pub trait Record: Sized {
    const SIZE: usize;
    fn write(&self, out: &mut [u8]);
    fn read(bytes: &[u8]) -> Self;
}

macro_rules! record {
    ($t:ty) => {
        impl Record for $t {
            const SIZE: usize = <$t>::SIZE;
            fn write(&self, out: &mut [u8]) {
                self.write_to(out)
            }
            fn read(bytes: &[u8]) -> Self {
                <$t>::read_from(bytes)
            }
        }
    };
}
record!(Account);
record!(Transfer);
record!(AccountLimit);
record!(AccountBalance);
record!(AccountFilter);

/// Appends records in their wire form.
pub fn encode_records<R: Record>(out: &mut Vec<u8>, records: &[R]) {
    let start = out.len();
    out.resize(start + records.len() * R::SIZE, 0);
    for (record, chunk) in records.iter().zip(out[start..].chunks_exact_mut(R::SIZE)) {
        record.write(chunk);
    }
}

/// Decodes a body of records into `out` (appended); errs if the length is not a multiple.
pub fn decode_records<R: Record>(body: &[u8], out: &mut Vec<R>) -> Result<(), String> {
    if !body.len().is_multiple_of(R::SIZE) {
        return Err(format!("body of {} bytes is not a multiple of {}", body.len(), R::SIZE));
    }
    out.extend(body.chunks_exact(R::SIZE).map(R::read));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_bodies_check_length_and_count() {
        use Status::{BodyLengthInvalid, EmptyBatch, TooManyEvents};
        let op = Operation::CreateTransfers;
        assert_eq!(validate_request_body(op, &[]), Err(EmptyBatch));
        assert_eq!(validate_request_body(op, &[0; 127]), Err(BodyLengthInvalid));
        assert_eq!(validate_request_body(op, &[0; 256]), Ok(2));
        let max = vec![0u8; EVENTS_PER_REQUEST_MAX * 128];
        assert_eq!(validate_request_body(op, &max), Ok(EVENTS_PER_REQUEST_MAX));
        let over = vec![0u8; (EVENTS_PER_REQUEST_MAX + 1) * 128];
        assert_eq!(validate_request_body(op, &over), Err(TooManyEvents));
        assert_eq!(validate_request_body(Operation::SetAccountLimits, &[0; 64]), Ok(1));
        assert_eq!(
            validate_request_body(Operation::SetAccountLimits, &[0; 128 + 1]),
            Err(BodyLengthInvalid)
        );
        assert_eq!(validate_request_body(Operation::LookupAccounts, &[0; 48]), Ok(3));
        assert_eq!(
            validate_request_body(Operation::LookupTransfers, &[0; 17]),
            Err(BodyLengthInvalid)
        );
        let ids_over = vec![0u8; (EVENTS_PER_REQUEST_MAX + 1) * 16];
        assert_eq!(
            validate_request_body(Operation::LookupAccountLimits, &ids_over),
            Err(TooManyEvents)
        );
        assert_eq!(validate_request_body(Operation::Status, &[]), Ok(0));
        assert_eq!(validate_request_body(Operation::Status, &[0]), Err(BodyLengthInvalid));
    }

    fn filter_body(f: &AccountFilter) -> Vec<u8> {
        let mut b = vec![0; 64];
        f.write_to(&mut b);
        b
    }

    #[test]
    fn filter_rules() {
        let good = AccountFilter {
            account_id: 1,
            limit: 10,
            flags: AccountFilterFlags::DEBITS,
            ..Default::default()
        };
        let op = Operation::GetAccountTransfers;
        assert_eq!(validate_request_body(op, &filter_body(&good)), Ok(1));
        assert_eq!(validate_request_body(op, &[0; 63]), Err(Status::BodyLengthInvalid));
        let bad = [
            AccountFilter { account_id: 0, ..good },
            AccountFilter { account_id: u128::MAX, ..good },
            AccountFilter { limit: 0, ..good },
            AccountFilter { limit: EVENTS_PER_REQUEST_MAX as u32 + 1, ..good },
            AccountFilter { flags: AccountFilterFlags::REVERSED, ..good },
            AccountFilter { flags: 1 << 7 | AccountFilterFlags::DEBITS, ..good },
            AccountFilter { timestamp_min: 5, timestamp_max: 4, ..good },
            AccountFilter { reserved: [1; 24], ..good },
        ];
        for f in bad {
            assert_eq!(
                validate_request_body(Operation::GetAccountBalances, &filter_body(&f)),
                Err(Status::InvalidBody),
                "{f:?}"
            );
        }
        let open_range = AccountFilter { timestamp_min: 5, timestamp_max: 0, ..good };
        assert_eq!(validate_request_body(op, &filter_body(&open_range)), Ok(1));
    }

    #[test]
    fn hello_round_trip_and_rules() {
        let hello = HelloRequest::new(Some(b"secret"));
        let mut body = Vec::new();
        hello.encode(&mut body);
        assert_eq!(body.len(), HelloRequest::SIZE);
        assert_eq!(&body[0..4], &[1, 0, 6, 0]);
        assert_eq!(HelloRequest::decode(&body), Ok(hello));
        assert_eq!(Hello::decode(&body), Ok(Hello { version: 1, token: b"secret" }));
        assert_eq!(validate_request_body(Operation::Hello, &body), Ok(1));
        assert_eq!(
            validate_request_body(Operation::Hello, &body[1..]),
            Err(Status::BodyLengthInvalid)
        );
        let mut long = body.clone();
        long[2..4].copy_from_slice(&257u16.to_le_bytes());
        assert_eq!(HelloRequest::decode(&long), Err(Status::InvalidBody));
        let mut junk = body.clone();
        junk[200] = 1;
        assert_eq!(HelloRequest::decode(&junk), Err(Status::InvalidBody));
        let mut reserved = body;
        reserved[5] = 1;
        assert_eq!(HelloRequest::decode(&reserved), Err(Status::InvalidBody));

        let reply = HelloReply { requests_in_flight_max: 9, ..Default::default() };
        let mut out = Vec::new();
        reply.encode(&mut out);
        assert_eq!(HelloReply::decode(&out), Ok(reply));
        assert_eq!(HelloReply::decode(&out[1..]), Err(Status::BodyLengthInvalid));
    }

    #[test]
    fn tokens_compare_exactly() {
        assert!(token_eq(b"abc", b"abc"));
        assert!(!token_eq(b"abc", b"abd"));
        assert!(!token_eq(b"abc", b"abcd"));
        assert!(token_eq(b"", b""));
    }

    #[test]
    fn status_reply_round_trip() {
        let s = StatusReply {
            sequence: 1,
            snapshot_sequence: 2,
            state_hash: u128::MAX - 3,
            accounts: 4,
            transfers: 5,
            pending_transfers: 6,
            failed_ids: 7,
            clock_ns: 8,
            account_limits: 9,
            uptime_ns: 10,
            connections: 11,
            role: ReplicaRole::Follower,
            replica: 2,
            term: 12,
            commit: 13,
            leader: 1,
        };
        let mut out = Vec::new();
        s.encode(&mut out);
        assert_eq!(out.len(), StatusReply::SIZE);
        assert_eq!(out[16], 0xfc);
        assert_eq!(out[88], 11);
        assert_eq!(StatusReply::decode(&out), Ok(s));
        assert_eq!(StatusReply::decode(&out[..127]), Err(Status::BodyLengthInvalid));
        assert_eq!((out[92], out[93], out[96], out[104], out[112]), (1, 2, 12, 13, 1));
        out[92] = 4;
        assert_eq!(StatusReply::decode(&out), Err(Status::InvalidBody));
    }

    #[test]
    fn create_results_round_trip_and_checks() {
        let mut out = Vec::new();
        encode_create_result(&mut out, &CreateResult { index: 1, result: ResultCode::Exists });
        encode_create_result(
            &mut out,
            &CreateResult { index: 3, result: ResultCode::ExceedsCredits },
        );
        assert_eq!(&out[0..8], &[1, 0, 0, 0, 15, 0, 0, 0]);
        let mut results = Vec::new();
        decode_create_results(&out, 4, &mut results).unwrap();
        assert_eq!(results[1], CreateResult { index: 3, result: ResultCode::ExceedsCredits });
        assert!(decode_create_results(&out, 3, &mut Vec::new()).is_err());
        assert!(decode_create_results(&out[..7], 4, &mut Vec::new()).is_err());
        let mut swapped = out[8..].to_vec();
        swapped.extend_from_slice(&out[..8]);
        assert!(decode_create_results(&swapped, 4, &mut Vec::new()).is_err());
    }

    #[test]
    fn records_round_trip() {
        let ts = [
            Transfer { id: 1, amount: u128::MAX, ..Default::default() },
            Transfer { id: 2, ..Default::default() },
        ];
        let mut out = Vec::new();
        encode_records(&mut out, &ts);
        let mut back = Vec::new();
        decode_records::<Transfer>(&out, &mut back).unwrap();
        assert_eq!(back, ts);
        assert!(decode_records::<Transfer>(&out[1..], &mut back).is_err());
        let mut ids = Vec::new();
        encode_ids(&mut ids, &[7, u128::MAX]);
        assert_eq!(decode_ids(&ids).collect::<Vec<_>>(), vec![7, u128::MAX]);
    }
}
