"""Frames and bodies of the ledgerd protocol, byte by byte (docs/protocol.md §3 and §6).

Everything here is pure: bytes in, records out, and back. Encoders write into a caller-owned
``bytearray`` at an offset, so that a request's records can be encoded once, straight after
the room left for its header, and sent without another copy.

Speed matters for creates (thousands of records per call): every record layout is one
precompiled :class:`struct.Struct`, u128 fields are split into two u64 halves, and records are
packed with ``pack_into`` into one preallocated buffer.
"""

from __future__ import annotations

import struct
from typing import Iterable, NamedTuple, Sequence

from ._crc32c import crc32c
from .codes import (
    CHANGE_EVENTS_PER_REPLY_MAX,
    FRAME_BODY_MAX,
    HEADER_SIZE,
    HELLO_TOKEN_MAX,
    LEADER_UNKNOWN,
    PROTOCOL_VERSION,
    ReplicaRole,
    StatusCode,
    to_kind,
)
from .errors import ProtocolError, StatusError
from .records import (
    Account,
    AccountBalance,
    AccountFilter,
    AccountLimit,
    ChangeEvent,
    ChangeEvents,
    HelloReply,
    Status,
    Transfer,
)

MAGIC = b"LDGR"
_M64 = (1 << 64) - 1

# Header: magic, version, operation, status, reserved u16, body_length, request_id, checksum,
# 36 reserved bytes.
HEADER = struct.Struct("<4sHHHHIQI36s")
_HEADER_PACK = struct.Struct("<4sHHHHIQI")  # the reserved tail of a new frame stays zero
_CHECKSUM = struct.Struct("<I")
_CHECKSUM_OFFSET = 24
_ZERO_RESERVED = bytes(36)

# Account and Transfer share one layout: six u128 (twelve u64 halves), then
# u64, u32, u32, u32, u16, u16, u64. For an Account the first u32 after user_data_32 is
# `reserved`; for a Transfer it is `timeout`.
RECORD_128 = struct.Struct("<12QQIIIHHQ")
ACCOUNT_SIZE = TRANSFER_SIZE = RECORD_128.size
LIMIT = struct.Struct("<QQQQQ24x")
FILTER = struct.Struct("<QQQQII24x")
BALANCE = struct.Struct("<QQQQQQQQQ56x")
ID = struct.Struct("<QQ")
RESULT = struct.Struct("<II")
HELLO_REQUEST = struct.Struct("<HHI256s")
HELLO_REPLY = struct.Struct("<H2xIIII44x")
CHANGE_EVENTS_REQUEST = struct.Struct("<QII")
CHANGE_EVENTS_PREFIX = struct.Struct("<QIIQ8x")
CHANGE_EVENT_HEAD = struct.Struct("<QIH2xQ8x")
CHANGE_EVENT_SIZE = 480
STATUS_REPLY = struct.Struct("<QQQQQQQQQQQIBB2xQQI12x")
NOT_LEADER_REPLY = struct.Struct("<I4x")

assert HEADER.size == HEADER_SIZE and RECORD_128.size == 128 and LIMIT.size == 64
assert FILTER.size == 64 and BALANCE.size == 128 and HELLO_REQUEST.size == 264
assert HELLO_REPLY.size == 64 and CHANGE_EVENT_HEAD.size == 32 and STATUS_REPLY.size == 128
assert NOT_LEADER_REPLY.size == 8


class Header(NamedTuple):
    """A decoded frame header."""

    operation: int
    status: int
    body_length: int
    request_id: int
    checksum: int


# ---- frames ----


def frame_finish(frame: bytearray, operation: int, request_id: int, status: int = 0) -> None:
    """Writes the header of ``frame`` (whose first 64 bytes are the header's room and the rest
    the body) and its checksum."""
    body_length = len(frame) - HEADER_SIZE
    _HEADER_PACK.pack_into(
        frame, 0, MAGIC, PROTOCOL_VERSION, operation, status, 0, body_length, request_id, 0
    )
    _CHECKSUM.pack_into(frame, _CHECKSUM_OFFSET, crc32c(frame))


def encode_frame(
    operation: int, request_id: int, body: bytes | bytearray = b"", status: int = 0
) -> bytearray:
    """A whole frame: header then ``body``."""
    frame = bytearray(HEADER_SIZE + len(body))
    frame[HEADER_SIZE:] = body
    frame_finish(frame, operation, request_id, status)
    return frame


def decode_header(head: bytes | bytearray | memoryview) -> Header:
    """Decodes and checks a header (magic, version, reserved bytes, body length).

    Raises :class:`ProtocolError`: after a bad header the stream cannot be trusted.
    """
    magic, version, operation, status, reserved, body_length, request_id, checksum, tail = (
        HEADER.unpack_from(head)
    )
    if magic != MAGIC:
        raise ProtocolError(f"reply header: bad magic {bytes(magic)!r}")
    if version != PROTOCOL_VERSION:
        raise ProtocolError(f"reply header: protocol version {version}, expected 1")
    if reserved or tail != _ZERO_RESERVED:
        raise ProtocolError("reply header: reserved bytes are not zero")
    if body_length > FRAME_BODY_MAX:
        raise ProtocolError(f"reply header: body_length {body_length} above {FRAME_BODY_MAX}")
    return Header(operation, status, body_length, request_id, checksum)


def checksum_ok(frame: bytearray, header: Header) -> bool:
    """Whether ``frame`` (header and body, contiguous) carries the right checksum.

    Zeroes the checksum field in place: the CRC covers the header with that field zero.
    """
    frame[_CHECKSUM_OFFSET : _CHECKSUM_OFFSET + 4] = b"\0\0\0\0"
    return crc32c(frame) == header.checksum


# ---- request bodies ----


def _field_error(kind: str, index: int, error: Exception) -> ValueError:
    return ValueError(
        f"{kind}[{index}]: a field is out of range (u128/u64/u32/u16, none negative): {error}"
    )


def encode_accounts_into(frame: bytearray, offset: int, accounts: Sequence[Account]) -> None:
    """Packs ``accounts`` (128 bytes each) into ``frame`` from ``offset``."""
    pack = RECORD_128.pack_into
    m = _M64
    off = offset
    try:
        for a in accounts:
            i = a.id
            dp = a.debits_pending
            dq = a.debits_posted
            cp = a.credits_pending
            cq = a.credits_posted
            u = a.user_data_128
            pack(
                frame, off,
                i & m, i >> 64, dp & m, dp >> 64, dq & m, dq >> 64,
                cp & m, cp >> 64, cq & m, cq >> 64, u & m, u >> 64,
                a.user_data_64, a.user_data_32, 0, a.ledger, a.code, a.flags, a.timestamp,
            )  # fmt: skip
            off += 128
    except (struct.error, TypeError, AttributeError) as e:
        raise _field_error("accounts", (off - offset) // 128, e) from None


def encode_transfers_into(frame: bytearray, offset: int, transfers: Sequence[Transfer]) -> None:
    """Packs ``transfers`` (128 bytes each) into ``frame`` from ``offset``."""
    pack = RECORD_128.pack_into
    m = _M64
    off = offset
    try:
        for t in transfers:
            i = t.id
            d = t.debit_account_id
            c = t.credit_account_id
            a = t.amount
            p = t.pending_id
            u = t.user_data_128
            pack(
                frame, off,
                i & m, i >> 64, d & m, d >> 64, c & m, c >> 64,
                a & m, a >> 64, p & m, p >> 64, u & m, u >> 64,
                t.user_data_64, t.user_data_32, t.timeout, t.ledger, t.code, t.flags, t.timestamp,
            )  # fmt: skip
            off += 128
    except (struct.error, TypeError, AttributeError) as e:
        raise _field_error("transfers", (off - offset) // 128, e) from None


def encode_limits_into(frame: bytearray, offset: int, limits: Sequence[AccountLimit]) -> None:
    """Packs ``limits`` (64 bytes each) into ``frame`` from ``offset``."""
    pack = LIMIT.pack_into
    m = _M64
    off = offset
    try:
        for x in limits:
            i = x.account_id
            v = x.limit
            pack(frame, off, i & m, i >> 64, v & m, v >> 64, x.timestamp)
            off += 64
    except (struct.error, TypeError, AttributeError) as e:
        raise _field_error("limits", (off - offset) // 64, e) from None


def encode_ids_into(frame: bytearray, offset: int, ids: Sequence[int]) -> None:
    """Packs u128 ``ids`` (16 bytes each) into ``frame`` from ``offset``."""
    pack = ID.pack_into
    m = _M64
    off = offset
    try:
        for i in ids:
            pack(frame, off, i & m, i >> 64)
            off += 16
    except (struct.error, TypeError) as e:
        raise _field_error("ids", (off - offset) // 16, e) from None


def encode_filter(f: AccountFilter) -> bytes:
    """An ``AccountFilter`` body (64 bytes)."""
    i = f.account_id
    try:
        return FILTER.pack(
            i & _M64, i >> 64, f.timestamp_min, f.timestamp_max, f.limit, int(f.flags)
        )
    except (struct.error, TypeError) as e:
        raise ValueError(f"filter: a field is out of range: {e}") from None


def encode_change_events_request(from_sequence: int, limit: int, from_index: int) -> bytes:
    """A ``ChangeEventsRequest`` body (16 bytes)."""
    try:
        return CHANGE_EVENTS_REQUEST.pack(from_sequence, limit, from_index)
    except struct.error as e:
        raise ValueError(f"change_events: a field is out of range: {e}") from None


def encode_hello(token: bytes, version: int = PROTOCOL_VERSION) -> bytes:
    """A ``HelloRequest`` body (264 bytes)."""
    if len(token) > HELLO_TOKEN_MAX:
        raise ValueError(f"the token is {len(token)} bytes, at most {HELLO_TOKEN_MAX}")
    return HELLO_REQUEST.pack(version, len(token), 0, token)


# ---- reply bodies ----


def _whole_records(body: bytes | memoryview, size: int, what: str) -> None:
    if len(body) % size:
        raise ProtocolError(f"{what} reply: {len(body)} bytes is not a multiple of {size}")


def decode_create_results(body: bytes | memoryview, events: int) -> list[tuple[int, int]]:
    """The ``(index, result)`` pairs of a create reply (failed events only), checked: indexes
    ascending and below ``events``, no ``ok``."""
    _whole_records(body, 8, "create")
    pairs = list(RESULT.iter_unpack(body))
    last = -1
    for index, result in pairs:
        if index <= last or index >= events or result == 0:
            raise ProtocolError(
                f"create reply: result ({index}, {result}) out of order, out of range "
                f"(events {events}) or ok"
            )
        last = index
    return pairs


def decode_accounts(body: bytes | memoryview) -> list[Account]:
    """``Account`` records."""
    _whole_records(body, 128, "accounts")
    return [
        Account(
            a | b << 64, c | d << 64, e | f << 64, g | h << 64, i | j << 64, k | l << 64,
            u64, u32, ledger, code, flags, ts,
        )  # fmt: skip
        for a, b, c, d, e, f, g, h, i, j, k, l, u64, u32, _r, ledger, code, flags, ts
        in RECORD_128.iter_unpack(body)
    ]


def decode_transfers(body: bytes | memoryview) -> list[Transfer]:
    """``Transfer`` records."""
    _whole_records(body, 128, "transfers")
    return [
        Transfer(
            a | b << 64, c | d << 64, e | f << 64, g | h << 64, i | j << 64, k | l << 64,
            u64, u32, timeout, ledger, code, flags, ts,
        )  # fmt: skip
        for a, b, c, d, e, f, g, h, i, j, k, l, u64, u32, timeout, ledger, code, flags, ts
        in RECORD_128.iter_unpack(body)
    ]


def decode_limits(body: bytes | memoryview) -> list[AccountLimit]:
    """``AccountLimit`` records."""
    _whole_records(body, 64, "limits")
    return [
        AccountLimit(a | b << 64, c | d << 64, ts) for a, b, c, d, ts in LIMIT.iter_unpack(body)
    ]


def decode_balances(body: bytes | memoryview) -> list[AccountBalance]:
    """``AccountBalance`` records."""
    _whole_records(body, 128, "balances")
    return [
        AccountBalance(a | b << 64, c | d << 64, e | f << 64, g | h << 64, ts)
        for a, b, c, d, e, f, g, h, ts in BALANCE.iter_unpack(body)
    ]


# One whole ChangeEvent (480 bytes): head, transfer, debit account, credit account, limit.
CHANGE_EVENT = struct.Struct("<QIH2xQ8x" "12QQIIIHHQ" "12QQIIIHHQ" "12QQIIIHHQ" "QQQQQ24x")
assert CHANGE_EVENT.size == 480


def _account(v: tuple, k: int) -> Account:
    return Account(
        v[k] | v[k + 1] << 64, v[k + 2] | v[k + 3] << 64, v[k + 4] | v[k + 5] << 64,
        v[k + 6] | v[k + 7] << 64, v[k + 8] | v[k + 9] << 64, v[k + 10] | v[k + 11] << 64,
        v[k + 12], v[k + 13], v[k + 15], v[k + 16], v[k + 17], v[k + 18],
    )  # fmt: skip


def decode_change_events(body: bytes | memoryview) -> ChangeEvents:
    """A ``ChangeEventsReply``: prefix, then ``count`` events of 480 bytes."""
    if len(body) < CHANGE_EVENTS_PREFIX.size:
        raise ProtocolError(f"change_events reply: {len(body)} bytes, shorter than its prefix")
    next_sequence, next_index, count, head_sequence = CHANGE_EVENTS_PREFIX.unpack_from(body)
    expected = CHANGE_EVENTS_PREFIX.size + count * CHANGE_EVENT_SIZE
    if count > CHANGE_EVENTS_PER_REPLY_MAX or len(body) != expected:
        raise ProtocolError(f"change_events reply: count {count} but {len(body)} bytes")
    events = []
    append = events.append
    for v in CHANGE_EVENT.iter_unpack(memoryview(body)[CHANGE_EVENTS_PREFIX.size :]):
        # v: 0-3 head; 4-22 transfer; 23-41 debit account; 42-60 credit account; 61-65 limit
        transfer = Transfer(
            v[4] | v[5] << 64, v[6] | v[7] << 64, v[8] | v[9] << 64, v[10] | v[11] << 64,
            v[12] | v[13] << 64, v[14] | v[15] << 64, v[16], v[17], v[18], v[19], v[20], v[21],
            v[22],
        )  # fmt: skip
        limit = AccountLimit(v[61] | v[62] << 64, v[63] | v[64] << 64, v[65])
        append(
            ChangeEvent(v[0], v[1], to_kind(v[2]), v[3], transfer, _account(v, 23),
                        _account(v, 42), limit)
        )  # fmt: skip
    return ChangeEvents(next_sequence, next_index, head_sequence, events)


def decode_status(body: bytes | memoryview) -> Status:
    """A ``StatusReply`` (128 bytes)."""
    if len(body) != STATUS_REPLY.size:
        raise ProtocolError(f"status reply: {len(body)} bytes, expected 128")
    (seq, snap, h_lo, h_hi, accounts, transfers, pending, failed, clock, limits, uptime,
     connections, role, replica, term, commit, leader) = STATUS_REPLY.unpack(body)  # fmt: skip
    try:
        role = ReplicaRole(role)
    except ValueError:
        raise ProtocolError(f"status reply: unknown role {role}") from None
    return Status(
        seq, snap, h_lo | h_hi << 64, accounts, transfers, pending, failed, clock, limits,
        uptime, connections, role, replica, term, commit, leader,
    )  # fmt: skip


def decode_not_leader(body: bytes | memoryview) -> int:
    """The leader hint of a ``not_leader`` reply (8 bytes, or none at all:
    :data:`~ledgerd.codes.LEADER_UNKNOWN`)."""
    if not body:
        return LEADER_UNKNOWN
    if len(body) != NOT_LEADER_REPLY.size:
        raise ProtocolError(f"not_leader reply: {len(body)} bytes, expected 8 or 0")
    return NOT_LEADER_REPLY.unpack(body)[0]


def status_error(status: int, operation: int, body: bytes | memoryview) -> StatusError:
    """The :class:`StatusError` of a reply whose status is not ``ok``, with the leader hint of
    a ``not_leader`` reply's body. Raises :class:`ProtocolError` if that body is malformed."""
    if status == StatusCode.NOT_LEADER:
        return StatusError(status, operation, leader=decode_not_leader(body))
    return StatusError(status, operation)


def decode_hello_reply(body: bytes | memoryview) -> HelloReply:
    """A ``HelloReply`` (64 bytes)."""
    if len(body) != HELLO_REPLY.size:
        raise ProtocolError(f"hello reply: {len(body)} bytes, expected 64")
    return HelloReply(*HELLO_REPLY.unpack(body))


# ---- request bodies as whole bytes (tests, tools) ----


def encode_records_body(kind: str, records: Sequence | Iterable) -> bytearray:
    """The body of a create or lookup request: ``kind`` is ``accounts``, ``transfers``,
    ``limits`` or ``ids``."""
    records = list(records)
    size, encode = {
        "accounts": (128, encode_accounts_into),
        "transfers": (128, encode_transfers_into),
        "limits": (64, encode_limits_into),
        "ids": (16, encode_ids_into),
    }[kind]
    body = bytearray(size * len(records))
    encode(body, 0, records)
    return body
