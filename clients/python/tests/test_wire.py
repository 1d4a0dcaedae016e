"""Unit tests of the codec: CRC-32C, header, records, and their limits."""

from __future__ import annotations

import os
import random

import pytest

from ledgerd import _crc32c, _wire
from ledgerd.codes import (
    HEADER_SIZE,
    LEADER_UNKNOWN,
    Operation,
    ReplicaRole,
    StatusCode,
    to_result,
    to_status,
)
from ledgerd.errors import ProtocolError, StatusError
from ledgerd.records import (
    U128_MAX,
    Account,
    AccountFilter,
    AccountLimit,
    Transfer,
    random_id,
    u128_join,
    u128_split,
)


def _crc_bitwise(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def test_crc32c_check_value():
    assert _crc32c.crc32c(b"123456789") == 0xE3069283
    assert _crc32c.crc32c(b"") == 0


def test_crc32c_protocol_golden_header():
    # protocol.md §3: create_transfers, request id 0x0102030405060708, 8 bytes of 0xaa.
    frame = _wire.encode_frame(Operation.CREATE_TRANSFERS, 0x0102030405060708, b"\xaa" * 8)
    assert frame[:28].hex() == (
        "4c444752" "0100" "0300" "0000" "0000" "08000000" "0807060504030201" "689d1db5"
    )
    assert frame[28:64] == bytes(36)


def test_crc32c_sparse_relation_holds():
    # The fast path relies on y**(8*_CHUNK) == y**_A + y**_B + 1 (mod G).
    lhs = _crc32c._ppow(2, 8 * _crc32c._CHUNK)
    rhs = _crc32c._pmod((1 << _crc32c._A) ^ (1 << _crc32c._B) ^ 1)
    assert lhs == rhs


@pytest.mark.parametrize(
    "length",
    [255, 256, 257, 1000, 8563, 8564, 8565, 2 * 8564, 2 * 8564 + 1, 50_000, 64 + 8190 * 128],
)
def test_crc32c_big_int_path_matches_bitwise(length):
    rng = random.Random(length)
    data = bytes(rng.getrandbits(8) for _ in range(min(length, 4096))) * (length // 4096 + 1)
    data = data[:length]
    expected = _crc32c._crc_table(data)
    assert _crc32c.crc32c(data) == expected
    assert _crc32c.crc32c(bytearray(data)) == expected
    assert _crc32c.crc32c(memoryview(data)) == expected
    if length <= 2000:
        assert _crc_bitwise(data) == expected


def test_crc32c_random_lengths():
    rng = random.Random(7)
    for _ in range(40):
        data = os.urandom(rng.randrange(200, 30_000))
        assert _crc32c.crc32c(data) == _crc32c._crc_table(data)


def test_header_checks():
    frame = _wire.encode_frame(Operation.STATUS, 9)
    header = _wire.decode_header(frame)
    assert header == _wire.Header(Operation.STATUS, 0, 0, 9, header.checksum)
    assert _wire.checksum_ok(bytearray(frame), header)
    for offset, value, what in [(0, 0x4D, "magic"), (4, 2, "version"), (10, 1, "reserved"),
                                (40, 1, "reserved")]:
        bad = bytearray(frame)
        bad[offset] = value
        with pytest.raises(ProtocolError, match=what):
            _wire.decode_header(bad)
    too_big = bytearray(frame)
    too_big[12:16] = (1 << 20 | 1).to_bytes(4, "little")
    with pytest.raises(ProtocolError, match="body_length"):
        _wire.decode_header(too_big)


def test_transfer_round_trip_with_u128_extremes():
    t = Transfer(
        id=U128_MAX - 1, debit_account_id=1 << 64, credit_account_id=(1 << 64) - 1,
        amount=U128_MAX, pending_id=12345, user_data_128=1 << 127, user_data_64=(1 << 64) - 1,
        user_data_32=(1 << 32) - 1, timeout=77, ledger=(1 << 32) - 1, code=65535, flags=0x3F,
        timestamp=(1 << 64) - 1,
    )  # fmt: skip
    body = _wire.encode_records_body("transfers", [t])
    assert len(body) == 128
    assert body[:16] == (U128_MAX - 1).to_bytes(16, "little")
    assert body[48:64] == U128_MAX.to_bytes(16, "little")
    assert _wire.decode_transfers(body) == [t]


def test_account_round_trip_and_reserved_zero():
    a = Account(id=random_id(), user_data_128=3, user_data_64=4, user_data_32=5, ledger=6,
                code=7, flags=0xF, timestamp=8)
    body = _wire.encode_records_body("accounts", [a])
    assert body[108:112] == bytes(4)  # reserved
    assert body[112:116] == (6).to_bytes(4, "little")
    assert _wire.decode_accounts(body) == [a]


def test_limit_filter_ids_layout():
    body = _wire.encode_records_body("limits", [AccountLimit(account_id=1 << 70, limit=9)])
    assert len(body) == 64 and body[40:] == bytes(24)
    assert _wire.decode_limits(body) == [AccountLimit(1 << 70, 9, 0)]
    f = _wire.encode_filter(AccountFilter(account_id=5, timestamp_min=1, timestamp_max=2, limit=3,
                                          flags=7))
    assert len(f) == 64
    assert f[32:36] == (3).to_bytes(4, "little") and f[36:40] == (7).to_bytes(4, "little")
    ids = _wire.encode_records_body("ids", [1, U128_MAX])
    assert ids == (1).to_bytes(16, "little") + U128_MAX.to_bytes(16, "little")


@pytest.mark.parametrize(
    "bad",
    [
        Transfer(id=-1),
        Transfer(id=1 << 128),
        Transfer(id=1, ledger=1 << 32),
        Transfer(id=1, code=1 << 16),
        Transfer(id=1, user_data_64=1 << 64),
        Transfer(id=1, amount=-5),
    ],
)
def test_out_of_range_fields_raise_with_the_index(bad):
    with pytest.raises(ValueError, match=r"transfers\[1\]"):
        _wire.encode_records_body("transfers", [Transfer(id=1), bad])


def test_create_results_are_checked():
    body = _wire.RESULT.pack(1, 15) + _wire.RESULT.pack(3, 27)
    assert _wire.decode_create_results(body, 4) == [(1, 15), (3, 27)]
    for bad, events in [(_wire.RESULT.pack(4, 15), 4), (_wire.RESULT.pack(0, 0), 4),
                        (_wire.RESULT.pack(2, 1) + _wire.RESULT.pack(1, 1), 4), (b"\0" * 7, 4)]:
        with pytest.raises(ProtocolError):
            _wire.decode_create_results(bad, events)


def test_unknown_numbers_do_not_crash():
    assert to_status(9999) == 9999
    assert to_result(4242) == 4242
    e = StatusError(9999, Operation.CREATE_TRANSFERS)
    assert e.status == 9999 and e.name == "status_9999"
    assert "status_9999" in str(e) and "create_transfers" in str(e)
    assert StatusError(StatusCode.AUTH_FAILED).name == "auth_failed"


def test_status_reply_cluster_fields_and_roles():
    raw = bytearray(_wire.STATUS_REPLY.size)
    raw[92], raw[93] = ReplicaRole.FOLLOWER, 2
    raw[96:104] = (12).to_bytes(8, "little")
    raw[104:112] = (13).to_bytes(8, "little")
    raw[112:116] = LEADER_UNKNOWN.to_bytes(4, "little")
    status = _wire.decode_status(raw)
    assert status.role is ReplicaRole.FOLLOWER and status.replica == 2
    assert (status.term, status.commit, status.leader) == (12, 13, LEADER_UNKNOWN)
    raw[92] = 4
    with pytest.raises(ProtocolError):
        _wire.decode_status(raw)


def test_not_leader_body_is_the_leader_hint():
    assert _wire.decode_not_leader(_wire.NOT_LEADER_REPLY.pack(2)) == 2
    assert _wire.decode_not_leader(b"") == LEADER_UNKNOWN
    with pytest.raises(ProtocolError):
        _wire.decode_not_leader(bytes(4))
    e = _wire.status_error(StatusCode.NOT_LEADER, Operation.CREATE_TRANSFERS, b"")
    assert e.leader is None and "leader unknown" in str(e)
    e = _wire.status_error(StatusCode.NOT_LEADER, Operation.CREATE_TRANSFERS,
                           _wire.NOT_LEADER_REPLY.pack(1))
    assert e.name == "not_leader" and e.leader == 1 and "replica 1" in str(e)
    assert not StatusCode.NOT_LEADER.closes_connection and not StatusCode.NOT_LEADER.retryable


def test_u128_helpers():
    assert u128_split(U128_MAX) == ((1 << 64) - 1, (1 << 64) - 1)
    assert u128_join(*u128_split(1 << 100 | 5)) == 1 << 100 | 5
    with pytest.raises(ValueError):
        u128_split(-1)
    assert all(0 < random_id() < U128_MAX for _ in range(100))


def test_frame_body_limit_fits():
    # 8190 records of 128 bytes fit in one frame body.
    assert 8190 * 128 <= 1 << 20
    frame = bytearray(HEADER_SIZE + 8190 * 128)
    _wire.encode_transfers_into(frame, HEADER_SIZE, [Transfer(id=i + 1) for i in range(8190)])
    _wire.frame_finish(frame, Operation.CREATE_TRANSFERS, 1)
    header = _wire.decode_header(frame)
    assert header.body_length == 8190 * 128
    assert _wire.checksum_ok(bytearray(frame), header)
