"""Unit tests of the batching engine (no sockets): coalescing, the linked-chain rule, limits,
result index mapping, re-queueing after busy and after a broken connection."""

from __future__ import annotations

import pytest

from ledgerd import _ops, _wire
from ledgerd._batch import Call, Engine
from ledgerd.codes import (
    HEADER_SIZE,
    Operation,
    ResultCode,
    StatusCode,
    TransferFlags,
)
from ledgerd.errors import StatusError
from ledgerd.records import CreateResult, HelloReply, Transfer

NOW = 1000.0
LATER = NOW + 60


def transfers(first_id: int, n: int, *, open_chain: bool = False) -> list[Transfer]:
    ts = [Transfer(id=first_id + i, debit_account_id=1, credit_account_id=2, amount=1, ledger=1,
                   code=1) for i in range(n)]
    if open_chain:
        for t in ts:
            t.flags = TransferFlags.LINKED
    return ts


def call(records: list[Transfer], operation=Operation.CREATE_TRANSFERS) -> Call:
    if operation == Operation.CREATE_TRANSFERS:
        r = _ops.create_transfers(records, 8190)
    else:
        r = _ops.lookup_transfers([t.id for t in records], 8190)
    return Call(r.operation, r.frame, r.events, r.open_chain, LATER)


def ids_in(frame: bytearray) -> list[int]:
    return [t.id for t in _wire.decode_transfers(memoryview(frame)[HEADER_SIZE:])]


def engine(events_max: int = 8190, in_flight: int = 64) -> Engine:
    e = Engine()
    e.hello = HelloReply(1, in_flight, 1 << 20, events_max, 2048)
    return e


def header(request_id: int, status: int = 0, operation=Operation.CREATE_TRANSFERS) -> _wire.Header:
    return _wire.Header(operation, status, 0, request_id, 0)


def test_concurrent_creates_share_one_request():
    e = engine()
    calls = [call(transfers(100 * k, 3)) for k in range(1, 6)]
    e.queue.extend(calls)
    request_id, frame = e.take(NOW)
    assert ids_in(frame) == [100 * k + i for k in range(1, 6) for i in range(3)]
    assert e.take(NOW) is None
    assert e.stats()["requests_sent"] == 1 and e.stats()["events_sent"] == 15


def test_an_open_chain_ends_its_request():
    e = engine()
    a = call(transfers(100, 2))
    chain = call(transfers(200, 2, open_chain=True))
    b = call(transfers(300, 2))
    e.queue.extend([a, chain, b])
    _, first = e.take(NOW)
    assert ids_in(first) == [100, 101, 200, 201]  # the open chain is last
    _, second = e.take(NOW)
    assert ids_in(second) == [300, 301]


def test_an_open_chain_first_travels_alone():
    e = engine()
    e.queue.extend([call(transfers(200, 2, open_chain=True)), call(transfers(300, 1))])
    assert ids_in(e.take(NOW)[1]) == [200, 201]
    assert ids_in(e.take(NOW)[1]) == [300]


def test_a_closed_chain_may_be_joined():
    e = engine()
    chain = transfers(200, 3, open_chain=True)
    chain[-1].flags = 0  # closed by its last event
    e.queue.extend([call(chain), call(transfers(300, 1))])
    assert ids_in(e.take(NOW)[1]) == [200, 201, 202, 300]


def test_calls_are_never_split_and_respect_the_event_limit():
    e = engine(events_max=5)
    e.queue.extend([call(transfers(100, 3)), call(transfers(200, 3)), call(transfers(300, 2))])
    assert ids_in(e.take(NOW)[1]) == [100, 101, 102]
    assert ids_in(e.take(NOW)[1]) == [200, 201, 202, 300, 301]


def test_too_many_events_in_one_call_is_a_clear_error():
    with pytest.raises(StatusError) as info:
        _ops.create_transfers(transfers(1, 6), 5)
    assert info.value.status == StatusCode.TOO_MANY_EVENTS
    assert "never split" in str(info.value)
    with pytest.raises(StatusError) as info:
        _ops.create_transfers([], 5)
    assert info.value.status == StatusCode.EMPTY_BATCH


def test_operations_never_share_a_request():
    e = engine()
    lookup = call(transfers(50, 2), Operation.LOOKUP_TRANSFERS)
    e.queue.extend([call(transfers(100, 1)), lookup, call(transfers(200, 1))])
    assert ids_in(e.take(NOW)[1]) == [100]
    _, frame = e.take(NOW)
    assert _wire.decode_header(frame).operation == Operation.LOOKUP_TRANSFERS
    assert ids_in(e.take(NOW)[1]) == [200]


def test_accounts_and_transfers_do_not_mix():
    from ledgerd.records import Account

    e = engine()
    r = _ops.create_accounts([Account(id=9, ledger=1, code=1)], 8190)
    e.queue.append(Call(r.operation, r.frame, r.events, r.open_chain, LATER))
    e.queue.append(call(transfers(100, 1)))
    assert _wire.decode_header(e.take(NOW)[1]).operation == Operation.CREATE_ACCOUNTS
    assert _wire.decode_header(e.take(NOW)[1]).operation == Operation.CREATE_TRANSFERS


def test_pipelining_window():
    e = engine(in_flight=2)
    e.queue.extend([call(transfers(100 * k, 1), Operation.LOOKUP_TRANSFERS) for k in range(1, 5)])
    assert e.take(NOW) and e.take(NOW)
    assert e.take(NOW) is None  # window full
    e.on_reply(header(1, operation=Operation.LOOKUP_TRANSFERS), b"", NOW)
    assert e.take(NOW) is not None


def test_results_are_mapped_to_each_callers_own_indexes():
    e = engine()
    a, b, c = call(transfers(100, 3)), call(transfers(200, 4)), call(transfers(300, 2))
    e.queue.extend([a, b, c])
    request_id, _ = e.take(NOW)
    # request indexes: a = 0..2, b = 3..6, c = 7..8
    body = b"".join(_wire.RESULT.pack(i, r) for i, r in [(1, 15), (3, 39), (6, 27), (8, 1)])
    answers, closes = e.on_reply(header(request_id), body, NOW)
    assert not closes
    got = {id(call_): outcome for call_, outcome in answers}
    assert got[id(a)] == [CreateResult(1, ResultCode.EXISTS)]
    assert got[id(b)] == [CreateResult(0, ResultCode.DEBIT_ACCOUNT_NOT_FOUND),
                          CreateResult(3, ResultCode.ID_ALREADY_FAILED)]
    assert got[id(c)] == [CreateResult(1, ResultCode.LINKED_EVENT_FAILED)]


def test_unknown_result_codes_pass_through_as_ints():
    e = engine()
    a = call(transfers(100, 2))
    e.queue.append(a)
    request_id, _ = e.take(NOW)
    answers, _ = e.on_reply(header(request_id), _wire.RESULT.pack(1, 500), NOW)
    assert answers == [(a, [CreateResult(1, 500)])]


@pytest.mark.parametrize("status", [StatusCode.BUSY, StatusCode.JOURNAL_UNAVAILABLE])
def test_busy_requeues_the_same_calls_first_and_pauses(status):
    e = engine()
    a, b, c = call(transfers(100, 1)), call(transfers(200, 1)), call(transfers(300, 1))
    e.queue.extend([a, b])
    request_id, _ = e.take(NOW)
    e.queue.append(c)
    answers, closes = e.on_reply(header(request_id, status), b"", NOW)
    assert answers == [] and not closes
    assert list(e.queue) == [a, b, c]
    assert e.take(NOW) is None  # paused
    _, frame = e.take(NOW + 1)
    assert ids_in(frame) == [100, 200, 300]
    assert e.stats()["retries"] == 2


def test_shutting_down_requeues_and_reports_closing():
    e = engine()
    a = call(transfers(100, 1))
    e.queue.append(a)
    request_id, _ = e.take(NOW)
    answers, closes = e.on_reply(header(request_id, StatusCode.SHUTTING_DOWN), b"", NOW)
    assert answers == [] and closes and list(e.queue) == [a]


def test_other_statuses_fail_every_call_of_the_request():
    e = engine()
    a, b = call(transfers(100, 1)), call(transfers(200, 1))
    e.queue.extend([a, b])
    request_id, _ = e.take(NOW)
    answers, closes = e.on_reply(header(request_id, 4242), b"", NOW)
    assert [c for c, _ in answers] == [a, b] and not closes
    for _, error in answers:
        assert isinstance(error, StatusError) and error.status == 4242
    assert answers[0][1] is not answers[1][1]  # one exception per caller


def test_broken_connection_requeues_in_flight_in_request_order():
    e = engine()
    calls = [call(transfers(100 * k, 1), Operation.LOOKUP_TRANSFERS) for k in range(1, 4)]
    e.queue.extend(calls)
    frames = [e.take(NOW) for _ in calls]
    later = call(transfers(900, 1))
    e.queue.append(later)
    calls[1].abandoned = True  # its caller gave up: not re-sent
    e.on_broken()
    assert list(e.queue) == [calls[0], calls[2], later]
    assert not e.in_flight
    # Re-sent with new request ids and the same bodies.
    request_id, frame = e.take(NOW)
    assert request_id == 4
    assert bytes(frame[HEADER_SIZE:]) == bytes(frames[0][1][HEADER_SIZE:])


def test_dead_calls_are_skipped():
    e = engine()
    a, b = call(transfers(100, 1)), call(transfers(200, 1))
    a.abandoned = True
    b.deadline = NOW - 1
    c = call(transfers(300, 1))
    e.queue.extend([a, b, c])
    assert ids_in(e.take(NOW)[1]) == [300]
    assert not e.has_live_calls(NOW)


def test_reply_to_no_request_is_a_protocol_error():
    from ledgerd.errors import ProtocolError

    e = engine()
    with pytest.raises(ProtocolError):
        e.on_reply(header(77), b"", NOW)
