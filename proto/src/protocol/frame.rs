//! The 64-byte frame header, operations, statuses, checksums and frame assembly.
//!
//! Knows bytes only: no sockets, no state. The server and the client both frame with these
//! functions, so a format change shows up on both sides (and in the golden-bytes test).

use super::{FRAME_BODY_MAX, HEADER_SIZE, MAGIC, PROTOCOL_VERSION};
use crate::types::{read_u16, read_u32, read_u64};

macro_rules! wire_enum {
    (
        $(#[$meta:meta])* $vis:vis enum $name:ident {
            $( $(#[doc = $doc:literal])* $variant:ident = $num:literal => $text:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u16)]
        $vis enum $name {
            $( $(#[doc = $doc])* $variant = $num, )*
        }

        impl $name {
            /// Every value, in numeric order.
            pub const ALL: &'static [$name] = &[ $( $name::$variant, )* ];

            /// The value with this number, if any.
            pub fn from_u16(n: u16) -> Option<$name> {
                match n { $( $num => Some($name::$variant), )* _ => None }
            }

            /// The stable snake_case name.
            pub fn name(self) -> &'static str {
                match self { $( $name::$variant => $text, )* }
            }

            /// The value with this snake_case name, if any.
            pub fn from_name(name: &str) -> Option<$name> {
                match name { $( $text => Some($name::$variant), )* _ => None }
            }

            /// One line that says what it means.
            pub fn description(self) -> &'static str {
                let doc: &'static str = match self { $( $name::$variant => concat!($($doc),*), )* };
                doc.trim_start()
            }
        }

        impl From<$name> for u16 {
            fn from(v: $name) -> u16 {
                v as u16
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

wire_enum! {
    /// What a request asks for. Numbers are part of the wire format: never renumber.
    pub enum Operation {
        /// Opens a connection: protocol version and optional auth token. Must be first.
        Hello = 1 => "hello",
        /// Creates accounts (128-byte `Account` records).
        CreateAccounts = 2 => "create_accounts",
        /// Creates transfers (128-byte `Transfer` records).
        CreateTransfers = 3 => "create_transfers",
        /// Sets overdraft or credit limits (64-byte `AccountLimit` records).
        SetAccountLimits = 4 => "set_account_limits",
        /// Looks accounts up by id (16-byte ids).
        LookupAccounts = 5 => "lookup_accounts",
        /// Looks transfers up by id (16-byte ids).
        LookupTransfers = 6 => "lookup_transfers",
        /// Looks account limits up by account id (16-byte ids).
        LookupAccountLimits = 7 => "lookup_account_limits",
        /// An account's transfers matching a 64-byte `AccountFilter`.
        GetAccountTransfers = 8 => "get_account_transfers",
        /// A `history` account's balance rows matching a 64-byte `AccountFilter`.
        GetAccountBalances = 9 => "get_account_balances",
        /// Change events from a journal position (follow the ledger).
        ChangeEvents = 10 => "change_events",
        /// Counters, journal sequence and state hash of the daemon.
        Status = 11 => "status",
    }
}

wire_enum! {
    /// The status of a reply, in the header. Anything but `ok` has an empty body.
    pub enum Status {
        /// The request was executed; the body is the operation's reply.
        Ok = 0 => "ok",
        /// The first 4 bytes of a header are not `LDGR`. Closes the connection.
        BadMagic = 1 => "bad_magic",
        /// The header's (or hello's) protocol version is not supported. Closes the connection.
        UnsupportedVersion = 2 => "unsupported_version",
        /// The crc32c over header and body does not match. Closes the connection.
        BadChecksum = 3 => "bad_checksum",
        /// The operation number is unknown.
        UnknownOperation = 4 => "unknown_operation",
        /// `body_length` is above `FRAME_BODY_MAX`. Closes the connection.
        BodyTooLarge = 5 => "body_too_large",
        /// The body's length is not what the operation needs (not a multiple of its record size, or not its exact size).
        BodyLengthInvalid = 6 => "body_length_invalid",
        /// More than `EVENTS_PER_REQUEST_MAX` records in one request.
        TooManyEvents = 7 => "too_many_events",
        /// A batch operation with no records.
        EmptyBatch = 8 => "empty_batch",
        /// The first request of a connection was not a hello. Closes the connection.
        HelloRequired = 9 => "hello_required",
        /// The hello's token does not match the daemon's. Closes the connection.
        AuthFailed = 10 => "auth_failed",
        /// Too many requests in flight, or the daemon is overloaded: retry later.
        Busy = 11 => "busy",
        /// The daemon is stopping and accepts no more requests. Closes the connection.
        ShuttingDown = 12 => "shutting_down",
        /// The journal cannot be written (disk full, I/O error): nothing was applied; retry later.
        JournalUnavailable = 13 => "journal_unavailable",
        /// A bug in the daemon: nothing was applied.
        InternalError = 14 => "internal_error",
        /// A reserved header field is not zero. Closes the connection.
        InvalidHeader = 15 => "invalid_header",
        /// The body has the right length but invalid content (a filter or change-events request out of range, a bad hello).
        InvalidBody = 16 => "invalid_body",
        /// A second hello on the same connection. Closes the connection.
        HelloRepeated = 17 => "hello_repeated",
        /// The connection's role does not allow this operation (e.g. a write with a read-only token); nothing was applied.
        PermissionDenied = 18 => "permission_denied",
        /// Too many failed hellos from this address: hellos are refused for a while without looking at the token. Closes the connection.
        AuthThrottled = 19 => "auth_throttled",
        /// A create request could take the ledger past a configured capacity (accounts, transfers or remembered failed ids): nothing in it was applied.
        LedgerFull = 20 => "ledger_full",
        /// This replica of a cluster does not lead (or stopped leading before the request's entry committed): retry at the leader, which the 8-byte body names. A write refused before it was decided was not applied; one accepted before a leadership change may have been: retrying it with the same ids is safe either way.
        NotLeader = 21 => "not_leader",
    }
}

impl Status {
    /// Whether the daemon closes the connection after replying with this status: the stream
    /// can no longer be trusted (framing is lost) or the peer is not allowed to go on.
    ///
    /// `bad_checksum` closes too: `body_length` is covered by the checksum that failed, so the
    /// position of the next frame is not known either.
    pub fn closes_connection(self) -> bool {
        matches!(
            self,
            Status::BadMagic
                | Status::UnsupportedVersion
                | Status::BadChecksum
                | Status::BodyTooLarge
                | Status::HelloRequired
                | Status::AuthFailed
                | Status::ShuttingDown
                | Status::InvalidHeader
                | Status::HelloRepeated
                | Status::AuthThrottled
        )
    }
}

/// Byte offsets of the header fields.
pub mod offset {
    pub const MAGIC: usize = 0;
    pub const VERSION: usize = 4;
    pub const OPERATION: usize = 6;
    pub const STATUS: usize = 8;
    pub const RESERVED_A: usize = 10;
    pub const BODY_LENGTH: usize = 12;
    pub const REQUEST_ID: usize = 16;
    pub const CHECKSUM: usize = 24;
    pub const RESERVED_B: usize = 28;
}

/// A decoded frame header. `magic` and `version` are implied (checked on decode, written on
/// encode); `operation` stays a number so that an unknown one can still be answered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Header {
    pub operation: u16,
    pub status: u16,
    pub body_length: u32,
    pub request_id: u64,
    pub checksum: u32,
}

/// Why a header was refused. Every one of these closes the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("bad magic {0:02x?} (expected \"LDGR\")")]
    BadMagic([u8; 4]),
    #[error("unsupported protocol version {0} (this side speaks {PROTOCOL_VERSION})")]
    UnsupportedVersion(u16),
    #[error("reserved header bytes are not zero")]
    ReservedNotZero,
    #[error("body length {0} is above the maximum {FRAME_BODY_MAX}")]
    BodyTooLarge(u32),
}

impl HeaderError {
    /// The status to answer with.
    pub fn status(&self) -> Status {
        match self {
            HeaderError::BadMagic(_) => Status::BadMagic,
            HeaderError::UnsupportedVersion(_) => Status::UnsupportedVersion,
            HeaderError::ReservedNotZero => Status::InvalidHeader,
            HeaderError::BodyTooLarge(_) => Status::BodyTooLarge,
        }
    }
}

impl Header {
    /// Checks magic, version, reserved bytes and the body length limit. The checksum is
    /// checked separately ([`verify_checksum`]) once the body has been read.
    pub fn decode(bytes: &[u8; HEADER_SIZE]) -> Result<Header, HeaderError> {
        let magic: [u8; 4] = bytes[0..4].try_into().expect("4 bytes");
        if magic != MAGIC {
            return Err(HeaderError::BadMagic(magic));
        }
        let version = read_u16(bytes, offset::VERSION);
        if version != PROTOCOL_VERSION {
            return Err(HeaderError::UnsupportedVersion(version));
        }
        if read_u16(bytes, offset::RESERVED_A) != 0
            || bytes[offset::RESERVED_B..].iter().any(|&b| b != 0)
        {
            return Err(HeaderError::ReservedNotZero);
        }
        let body_length = read_u32(bytes, offset::BODY_LENGTH);
        if body_length as usize > FRAME_BODY_MAX {
            return Err(HeaderError::BodyTooLarge(body_length));
        }
        Ok(Header {
            operation: read_u16(bytes, offset::OPERATION),
            status: read_u16(bytes, offset::STATUS),
            body_length,
            request_id: read_u64(bytes, offset::REQUEST_ID),
            checksum: read_u32(bytes, offset::CHECKSUM),
        })
    }

    /// Writes all 64 bytes (magic, version, zeroed reserved bytes included).
    pub fn encode(&self, out: &mut [u8; HEADER_SIZE]) {
        out.fill(0);
        out[0..4].copy_from_slice(&MAGIC);
        out[offset::VERSION..offset::VERSION + 2].copy_from_slice(&PROTOCOL_VERSION.to_le_bytes());
        out[offset::OPERATION..offset::OPERATION + 2]
            .copy_from_slice(&self.operation.to_le_bytes());
        out[offset::STATUS..offset::STATUS + 2].copy_from_slice(&self.status.to_le_bytes());
        out[offset::BODY_LENGTH..offset::BODY_LENGTH + 4]
            .copy_from_slice(&self.body_length.to_le_bytes());
        out[offset::REQUEST_ID..offset::REQUEST_ID + 8]
            .copy_from_slice(&self.request_id.to_le_bytes());
        out[offset::CHECKSUM..offset::CHECKSUM + 4].copy_from_slice(&self.checksum.to_le_bytes());
    }

    /// The request id of a header that did not decode, to address the error reply.
    pub fn raw_request_id(bytes: &[u8; HEADER_SIZE]) -> u64 {
        read_u64(bytes, offset::REQUEST_ID)
    }

    /// The operation number of a header that did not decode, to echo in the error reply.
    pub fn raw_operation(bytes: &[u8; HEADER_SIZE]) -> u16 {
        read_u16(bytes, offset::OPERATION)
    }
}

/// crc32c (Castagnoli) over the 64 header bytes with the checksum field zeroed, then the body.
pub fn checksum(header: &[u8; HEADER_SIZE], body: &[u8]) -> u32 {
    let mut zeroed = *header;
    zeroed[offset::CHECKSUM..offset::CHECKSUM + 4].fill(0);
    let crc = crc32c::crc32c(&zeroed);
    crc32c::crc32c_append(crc, body)
}

/// Whether the checksum field of `header` matches the header and `body`.
pub fn verify_checksum(header: &[u8; HEADER_SIZE], body: &[u8]) -> bool {
    read_u32(header, offset::CHECKSUM) == checksum(header, body)
}

/// Appends one complete frame (header and body) to `out`.
pub fn encode_frame(
    out: &mut Vec<u8>,
    operation: impl Into<u16>,
    status: Status,
    request_id: u64,
    body: &[u8],
) {
    let start = frame_begin(out);
    out.extend_from_slice(body);
    frame_finish(out, start, operation, status, request_id);
}

/// Reserves a header at the end of `out` and returns its start; append the body to `out`,
/// then call [`frame_finish`] with the returned start. Builds a frame without copying the body.
pub fn frame_begin(out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.resize(start + HEADER_SIZE, 0);
    start
}

/// Writes the header of the frame begun at `start`: the body is everything after it.
pub fn frame_finish(
    out: &mut [u8],
    start: usize,
    operation: impl Into<u16>,
    status: Status,
    request_id: u64,
) {
    let body_length = out.len() - start - HEADER_SIZE;
    assert!(body_length <= FRAME_BODY_MAX, "frame body of {body_length} bytes is too large");
    let header = Header {
        operation: operation.into(),
        status: status as u16,
        body_length: u32::try_from(body_length).expect("checked against FRAME_BODY_MAX"),
        request_id,
        checksum: 0,
    };
    let (head, body) = out[start..].split_at_mut(HEADER_SIZE);
    let head: &mut [u8; HEADER_SIZE] = head.try_into().expect("64 bytes");
    header.encode(head);
    let crc = checksum(head, body);
    head[offset::CHECKSUM..offset::CHECKSUM + 4].copy_from_slice(&crc.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_header_bytes() {
        let mut out = Vec::new();
        encode_frame(
            &mut out,
            Operation::CreateTransfers,
            Status::Ok,
            0x0102_0304_0506_0708,
            &[0xAA; 8],
        );
        assert_eq!(out.len(), HEADER_SIZE + 8);
        let expected_prefix: [u8; 24] = [
            b'L', b'D', b'G', b'R', // magic
            1, 0, // version
            3, 0, // operation create_transfers
            0, 0, // status ok
            0, 0, // reserved
            8, 0, 0, 0, // body_length
            8, 7, 6, 5, 4, 3, 2, 1, // request_id
        ];
        assert_eq!(&out[..24], &expected_prefix);
        assert!(out[28..64].iter().all(|&b| b == 0));
        let head: &[u8; 64] = out[..64].try_into().unwrap();
        assert!(verify_checksum(head, &out[64..]));
        // Pinned: crc32c of this exact frame.
        let crc = u32::from_le_bytes(out[24..28].try_into().unwrap());
        let mut zeroed = *head;
        zeroed[24..28].fill(0);
        let mut all = zeroed.to_vec();
        all.extend_from_slice(&[0xAA; 8]);
        assert_eq!(crc, crc32c::crc32c(&all));
        assert_eq!(crc, GOLDEN_CRC);
    }

    const GOLDEN_CRC: u32 = 0xb51d_9d68;

    #[test]
    fn decode_round_trips_and_refuses_each_defect() {
        let mut out = Vec::new();
        encode_frame(&mut out, 11u16, Status::Busy, 77, &[]);
        let head: [u8; 64] = out[..64].try_into().unwrap();
        let h = Header::decode(&head).unwrap();
        assert_eq!(
            (h.operation, h.status, h.body_length, h.request_id),
            (11, Status::Busy as u16, 0, 77)
        );
        let mut again = [0u8; 64];
        h.encode(&mut again);
        assert_eq!(again, head);
        assert_eq!(Header::raw_request_id(&head), 77);
        assert_eq!(Header::raw_operation(&head), 11);

        let mut bad = head;
        bad[0] = b'X';
        assert_eq!(Header::decode(&bad).unwrap_err().status(), Status::BadMagic);
        let mut bad = head;
        bad[4] = 2;
        assert_eq!(Header::decode(&bad).unwrap_err().status(), Status::UnsupportedVersion);
        let mut bad = head;
        bad[10] = 1;
        assert_eq!(Header::decode(&bad).unwrap_err().status(), Status::InvalidHeader);
        let mut bad = head;
        bad[63] = 1;
        assert_eq!(Header::decode(&bad).unwrap_err().status(), Status::InvalidHeader);
        let mut bad = head;
        bad[12..16].copy_from_slice(&(FRAME_BODY_MAX as u32 + 1).to_le_bytes());
        assert_eq!(Header::decode(&bad).unwrap_err().status(), Status::BodyTooLarge);
        let mut ok = head;
        ok[12..16].copy_from_slice(&(FRAME_BODY_MAX as u32).to_le_bytes());
        assert!(Header::decode(&ok).is_ok());
    }

    #[test]
    fn checksum_covers_header_and_body() {
        let mut out = Vec::new();
        encode_frame(&mut out, Operation::Status, Status::Ok, 1, b"abc");
        let head: [u8; 64] = out[..64].try_into().unwrap();
        assert!(verify_checksum(&head, b"abc"));
        assert!(!verify_checksum(&head, b"abd"));
        let mut other = head;
        other[16] ^= 1;
        assert!(!verify_checksum(&other, b"abc"));
    }

    #[test]
    fn enums_round_trip_by_number_and_name() {
        for op in Operation::ALL {
            assert_eq!(Operation::from_u16(*op as u16), Some(*op));
            assert_eq!(Operation::from_name(op.name()), Some(*op));
            assert!(!op.description().is_empty());
        }
        for (i, s) in Status::ALL.iter().enumerate() {
            assert_eq!(*s as usize, i, "statuses are dense");
            assert_eq!(Status::from_u16(*s as u16), Some(*s));
            assert_eq!(Status::from_name(s.name()), Some(*s));
        }
        assert_eq!(Operation::from_u16(0), None);
        assert_eq!(Operation::from_u16(12), None);
        assert_eq!(Status::from_u16(Status::ALL.len() as u16), None);
        assert!(!Status::Ok.closes_connection());
        assert!(Status::BadMagic.closes_connection());
        assert!(!Status::TooManyEvents.closes_connection());
    }
}
