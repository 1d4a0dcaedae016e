"""Each operation of docs/protocol.md as a request builder and a reply decoder, shared by the
thread client and the asyncio client.

Builders run in the caller (its thread or task): the records are checked and encoded there,
so that a bad field raises in the caller with its index, and the I/O side only adds headers.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

from . import _wire
from .codes import (
    CHANGE_EVENTS_PER_REPLY_MAX,
    HEADER_SIZE,
    AccountFlags,
    Operation,
    StatusCode,
    TransferFlags,
    to_result,
)
from .errors import ProtocolError, StatusError
from .records import Account, AccountFilter, AccountLimit, CreateResult, Transfer


class Request(NamedTuple):
    """A prepared call: what to send, and how to turn the answer into the caller's value."""

    operation: int
    frame: bytearray  # 64 bytes of room for the header, then the body
    events: int  # > 0 only for coalescable creates
    open_chain: bool
    decode: Callable[[object], object]


def _identity(outcome: object) -> object:
    return outcome


def _count(operation: int, n: int, most: int, what: str) -> None:
    if n == 0:
        raise StatusError(StatusCode.EMPTY_BATCH, operation, f"no {what}")
    if n > most:
        raise StatusError(
            StatusCode.TOO_MANY_EVENTS,
            operation,
            f"{n} {what} in one call, at most {most}: a call is never split across requests "
            "(split it yourself, minding linked chains)",
        )


def create_accounts(accounts: Sequence[Account], events_max: int) -> Request:
    operation = Operation.CREATE_ACCOUNTS
    n = len(accounts)
    _count(operation, n, events_max, "accounts")
    frame = bytearray(HEADER_SIZE + 128 * n)
    _wire.encode_accounts_into(frame, HEADER_SIZE, accounts)
    open_chain = bool(accounts[-1].flags & AccountFlags.LINKED)
    return Request(operation, frame, n, open_chain, _identity)


def create_transfers(transfers: Sequence[Transfer], events_max: int) -> Request:
    operation = Operation.CREATE_TRANSFERS
    n = len(transfers)
    _count(operation, n, events_max, "transfers")
    frame = bytearray(HEADER_SIZE + 128 * n)
    _wire.encode_transfers_into(frame, HEADER_SIZE, transfers)
    open_chain = bool(transfers[-1].flags & TransferFlags.LINKED)
    return Request(operation, frame, n, open_chain, _identity)


def set_account_limits(limits: Sequence[AccountLimit], events_max: int) -> Request:
    operation = Operation.SET_ACCOUNT_LIMITS
    n = len(limits)
    _count(operation, n, events_max, "limits")
    frame = bytearray(HEADER_SIZE + 64 * n)
    _wire.encode_limits_into(frame, HEADER_SIZE, limits)

    def decode(body: object) -> list[CreateResult]:
        return [CreateResult(i, to_result(r)) for i, r in _wire.decode_create_results(body, n)]

    return Request(operation, frame, 0, False, decode)


def _lookup(operation: int, ids: Sequence[int], events_max: int, decode_records) -> Request:
    n = len(ids)
    _count(operation, n, events_max, "ids")
    frame = bytearray(HEADER_SIZE + 16 * n)
    _wire.encode_ids_into(frame, HEADER_SIZE, ids)

    def decode(body: object) -> list:
        records = decode_records(body)
        if len(records) > n:
            raise ProtocolError(f"{len(records)} records for {n} ids")
        return records

    return Request(operation, frame, 0, False, decode)


def lookup_accounts(ids: Sequence[int], events_max: int) -> Request:
    return _lookup(Operation.LOOKUP_ACCOUNTS, ids, events_max, _wire.decode_accounts)


def lookup_transfers(ids: Sequence[int], events_max: int) -> Request:
    return _lookup(Operation.LOOKUP_TRANSFERS, ids, events_max, _wire.decode_transfers)


def lookup_account_limits(ids: Sequence[int], events_max: int) -> Request:
    return _lookup(Operation.LOOKUP_ACCOUNT_LIMITS, ids, events_max, _wire.decode_limits)


def _with_body(operation: int, body: bytes, decode: Callable[[object], object]) -> Request:
    frame = bytearray(HEADER_SIZE + len(body))
    frame[HEADER_SIZE:] = body
    return Request(operation, frame, 0, False, decode)


def _filtered(operation: int, account_filter: AccountFilter, decode_records) -> Request:
    most = account_filter.limit

    def decode(body: object) -> list:
        records = decode_records(body)
        if len(records) > most:
            raise ProtocolError(f"{len(records)} records, the filter's limit is {most}")
        return records

    return _with_body(operation, _wire.encode_filter(account_filter), decode)


def get_account_transfers(account_filter: AccountFilter) -> Request:
    return _filtered(Operation.GET_ACCOUNT_TRANSFERS, account_filter, _wire.decode_transfers)


def get_account_balances(account_filter: AccountFilter) -> Request:
    return _filtered(Operation.GET_ACCOUNT_BALANCES, account_filter, _wire.decode_balances)


def change_events(
    from_sequence: int = 0, limit: int = CHANGE_EVENTS_PER_REPLY_MAX, from_index: int = 0
) -> Request:
    body = _wire.encode_change_events_request(from_sequence, limit, from_index)
    return _with_body(Operation.CHANGE_EVENTS, body, _wire.decode_change_events)


def status() -> Request:
    return _with_body(Operation.STATUS, b"", _wire.decode_status)

