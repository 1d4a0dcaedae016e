"""Golden frames: the repository's tests/vectors/frames.json, generated from the daemon's own
codec, checked frame by frame against this client's encoder and decoder, and the constant
tables checked both ways."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest

from ledgerd import _wire
from ledgerd.codes import (
    HEADER_SIZE,
    LEADER_UNKNOWN,
    LIMITS,
    PROTOCOL_VERSION,
    AccountFlags,
    ChangeEventKind,
    FilterFlags,
    Operation,
    ResultCode,
    StatusCode,
    TransferFlags,
    to_result,
)
from ledgerd.records import Account, AccountFilter, AccountLimit, Transfer


def _vectors_path() -> Path:
    override = os.environ.get("LEDGERD_VECTORS")
    if override:
        return Path(override)
    # clients/python/tests/ -> the repository root
    return Path(__file__).resolve().parents[3] / "tests" / "vectors" / "frames.json"


@pytest.fixture(scope="module")
def vectors() -> dict:
    path = _vectors_path()
    if not path.exists():
        pytest.fail(f"golden frames not found at {path} (set LEDGERD_VECTORS to its path)")
    return json.loads(path.read_text())


# Fields whose JSON values are names, not numbers.
_NAMED = {"result", "kind", "state_hash", "token"}


def _norm(value, key=None):
    """JSON body -> the same shape with every decimal string turned into an int."""
    if isinstance(value, dict):
        return {k: _norm(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_norm(v) for v in value]
    if isinstance(value, str) and key not in _NAMED:
        return int(value)
    return value


def _record(cls, fields: dict):
    return cls(**{k: int(v) for k, v in fields.items()})


def _encode_request_body(operation: str, body: dict | None) -> bytes:
    if operation == "hello":
        return _wire.encode_hello(body["token"].encode(), body["version"])
    if operation == "create_accounts":
        accounts = [_record(Account, a) for a in body["accounts"]]
        return _wire.encode_records_body("accounts", accounts)
    if operation == "create_transfers":
        return _wire.encode_records_body(
            "transfers", [_record(Transfer, t) for t in body["transfers"]]
        )
    if operation == "set_account_limits":
        limits = [_record(AccountLimit, x) for x in body["limits"]]
        return _wire.encode_records_body("limits", limits)
    if operation.startswith("lookup_"):
        return _wire.encode_records_body("ids", [int(i) for i in body["ids"]])
    if operation in ("get_account_transfers", "get_account_balances"):
        return _wire.encode_filter(_record(AccountFilter, body["filter"]))
    if operation == "change_events":
        return _wire.encode_change_events_request(
            int(body["from_sequence"]), body["limit"], body["from_index"]
        )
    if operation == "status":
        assert body is None
        return b""
    raise AssertionError(f"no encoder for {operation}")


def _as_dict(record) -> dict:
    return dataclasses.asdict(record)


def _decode_reply_body(operation: str, body: bytes) -> dict:
    if operation == "hello":
        return _as_dict(_wire.decode_hello_reply(body))
    if operation in ("create_accounts", "create_transfers", "set_account_limits"):
        pairs = _wire.decode_create_results(body, 1 << 32)
        return {"results": [{"index": i, "result": to_result(r).wire_name} for i, r in pairs]}
    if operation == "lookup_accounts":
        return {"accounts": [_as_dict(a) for a in _wire.decode_accounts(body)]}
    if operation in ("lookup_transfers", "get_account_transfers"):
        return {"transfers": [_as_dict(t) for t in _wire.decode_transfers(body)]}
    if operation == "lookup_account_limits":
        return {"limits": [_as_dict(x) for x in _wire.decode_limits(body)]}
    if operation == "get_account_balances":
        return {"balances": [_as_dict(b) for b in _wire.decode_balances(body)]}
    if operation == "change_events":
        reply = _wire.decode_change_events(body)
        events = []
        for e in reply.events:
            d = _as_dict(e)
            d["kind"] = e.kind.wire_name
            events.append(d)
        return {
            "next_sequence": reply.next_sequence,
            "next_index": reply.next_index,
            "head_sequence": reply.head_sequence,
            "events": events,
        }
    if operation == "status":
        status = _wire.decode_status(body)
        d = _as_dict(status)
        d["state_hash"] = status.state_hash_hex
        return d
    raise AssertionError(f"no decoder for {operation}")


def test_every_frame(vectors):
    ops = vectors["operations"]
    statuses = vectors["statuses"]
    assert vectors["frames"], "the golden file has no frames"
    seen = set()
    for frame in vectors["frames"]:
        name = frame["name"]
        operation = frame["operation"]
        raw = bytes.fromhex(frame["hex"])
        request_id = int(frame["request_id"])
        seen.add((frame["direction"], operation))
        if frame["direction"] == "request":
            body = _encode_request_body(operation, frame["body"])
            status = statuses[frame["status"]]
            encoded = _wire.encode_frame(ops[operation], request_id, body, status)
            assert encoded.hex() == frame["hex"], name
        else:
            assert frame["direction"] == "reply", name
            header = _wire.decode_header(raw)
            assert header.operation == ops[operation], name
            assert header.status == statuses[frame["status"]], name
            assert header.request_id == request_id, name
            assert header.body_length == len(raw) - HEADER_SIZE, name
            assert _wire.checksum_ok(bytearray(raw), header), name
            body = raw[HEADER_SIZE:]
            if header.status != StatusCode.OK:
                # Every refusal has an empty body, but for not_leader's leader hint.
                error = _wire.status_error(header.status, header.operation, body)
                assert error.status == header.status, name
                if header.status == StatusCode.NOT_LEADER:
                    leader = _wire.decode_not_leader(body)
                    assert {"leader": leader} == frame["body"], name
                    assert error.leader == (None if leader == LEADER_UNKNOWN else leader), name
                else:
                    assert frame["body"] is None and header.body_length == 0, name
                    assert error.leader is None, name
                continue
            if frame["body"] is None:
                assert header.body_length == 0, name
                continue
            decoded = _decode_reply_body(operation, body)
            assert decoded == _norm(frame["body"]), name
    # Every operation's request and ok reply is covered (status has an empty request body).
    for operation in ops:
        assert ("request", operation) in seen, operation
        assert ("reply", operation) in seen, operation


def test_a_corrupted_reply_fails_its_checksum(vectors):
    frame = next(f for f in vectors["frames"] if f["name"] == "lookup_accounts.reply")
    raw = bytearray.fromhex(frame["hex"])
    raw[HEADER_SIZE + 5] ^= 0x01
    header = _wire.decode_header(raw)
    assert not _wire.checksum_ok(raw, header)


def _table(enum) -> dict[str, int]:
    return {m.name.lower(): int(m) for m in enum if m.name != "NONE"}


def test_constants_match_both_ways(vectors):
    assert vectors["protocol_version"] == PROTOCOL_VERSION
    assert vectors["header_size"] == HEADER_SIZE
    assert vectors["limits"] == LIMITS
    assert vectors["operations"] == _table(Operation)
    assert vectors["statuses"] == _table(StatusCode)
    assert vectors["result_codes"] == _table(ResultCode)
    assert vectors["change_event_kinds"] == _table(ChangeEventKind)
    assert vectors["account_flags"] == _table(AccountFlags)
    assert vectors["transfer_flags"] == _table(TransferFlags)
    assert vectors["filter_flags"] == _table(FilterFlags)
