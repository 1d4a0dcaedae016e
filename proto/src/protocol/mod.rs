//! The wire protocol: frames of a 64-byte header and a body of fixed-size records, shared by
//! the daemon and the client. `docs/protocol.md` is the complete description; this module is
//! its implementation and the two must agree (a test checks every name and number).
//!
//! This module knows bytes only: no sockets, no state, no clock. Decoding never panics on
//! any input (proptested) and never allocates more than the frame it was given.

mod body;
mod change_events;
mod frame;

pub use body::{
    decode_create_results, decode_ids, decode_records, encode_create_result, encode_ids,
    encode_records, reply_record_size, request_record_size, token_eq, validate_filter,
    validate_request_body, Hello, HelloReply, HelloRequest, NotLeaderReply, Record, ReplicaRole,
    StatusReply, HELLO_TOKEN_MAX, ID_SIZE, LEADER_UNKNOWN,
};
pub use change_events::{ChangeEvent, ChangeEventKind, ChangeEventsReply, ChangeEventsRequest};
pub use frame::{
    checksum, encode_frame, frame_begin, frame_finish, offset, verify_checksum, Header,
    HeaderError, Operation, Status,
};

use crate::types::EVENTS_PER_REQUEST_MAX;

/// The first four bytes of every frame.
pub const MAGIC: [u8; 4] = *b"LDGR";
/// The protocol version this code speaks (header offset 4, and the hello body).
pub const PROTOCOL_VERSION: u16 = 1;
/// Size of the frame header.
pub const HEADER_SIZE: usize = 64;
/// Largest frame body: 1 MiB, enough for [`EVENTS_PER_REQUEST_MAX`] 128-byte records.
pub const FRAME_BODY_MAX: usize = 1 << 20;
/// Largest frame, header included.
pub const FRAME_SIZE_MAX: usize = HEADER_SIZE + FRAME_BODY_MAX;
/// Most change events in one reply (a full reply is 983,072 bytes).
pub const CHANGE_EVENTS_PER_REPLY_MAX: usize = 2048;
/// Requests in flight per connection a daemon allows unless configured otherwise; the hello
/// reply tells the client the real number.
pub const REQUESTS_IN_FLIGHT_MAX_DEFAULT: u32 = 64;

const _: () = assert!(FRAME_BODY_MAX >= EVENTS_PER_REQUEST_MAX * 128);
const _: () = assert!(FRAME_BODY_MAX <= u32::MAX as usize);
const _: () = assert!(
    ChangeEventsReply::PREFIX_SIZE + CHANGE_EVENTS_PER_REPLY_MAX * ChangeEvent::SIZE
        <= FRAME_BODY_MAX
);
