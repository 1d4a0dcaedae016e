"""Client behaviour against a scripted daemon (tests/fake_daemon.py): exact request composition
under coalescing and the linked-chain rule, retries on busy / journal_unavailable /
shutting_down / a lost connection / a corrupt reply, unknown statuses, refusal on reconnect,
deadlines. No real daemon needed."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from fake_daemon import FakeDaemon
from helpers import SyncAsAsync, run
from ledgerd import (
    AsyncClient,
    Client,
    CreateResult,
    Operation,
    ResultCode,
    StatusCode,
    StatusError,
    TimeoutError,
    Transfer,
    TransferFlags,
    _wire,
)
from ledgerd.codes import HEADER_SIZE

CT = Operation.CREATE_TRANSFERS


def fail_zero_amounts(daemon, conn_no, header, body):
    """Like the ledger for one rule: every transfer with amount 0 fails (by request index)."""
    if header.operation != CT:
        return None
    results = [_wire.RESULT.pack(i, ResultCode.AMOUNT_MUST_NOT_BE_ZERO)
               for i, t in enumerate(_wire.decode_transfers(body)) if t.amount == 0]
    return ("ok", b"".join(results))


def make_call(k: int, n: int, *, open_chain: bool = False, zero_at: tuple[int, ...] = ()):
    transfers = [Transfer(id=k * 1000 + i, debit_account_id=1, credit_account_id=2,
                          amount=0 if i in zero_at else 1, ledger=1, code=1,
                          flags=TransferFlags.LINKED if open_chain else 0) for i in range(n)]
    expected = [CreateResult(i, ResultCode.AMOUNT_MUST_NOT_BE_ZERO) for i in zero_at]
    return transfers, expected


def check_composition(daemon: FakeDaemon, calls: dict[int, tuple[list[Transfer], bool]]) -> None:
    """Every caller's events sit contiguously in exactly one request; an open chain is last."""
    owner = {t.id: k for k, (ts, _) in calls.items() for t in ts}
    placed: dict[int, int] = {}
    for n, body in enumerate(daemon.requests_of(CT)):
        ids = [t.id for t in _wire.decode_transfers(body)]
        runs = []
        for i in ids:
            if not runs or runs[-1] != owner[i]:
                runs.append(owner[i])
        assert len(runs) == len(set(runs)), f"a caller's events are not contiguous: {runs}"
        for position, k in enumerate(runs):
            assert k not in placed, f"caller {k} split across requests"
            placed[k] = n
            if calls[k][1]:
                assert position == len(runs) - 1, "an open chain is not last in its request"
        assert [t.id for t in _wire.decode_transfers(body)] == [
            t.id for k in runs for t in calls[k][0]
        ]
    assert set(placed) == set(calls)


def wait_until(predicate, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)


def test_threads_coalesce_behind_a_full_window():
    release = threading.Event()

    def handler(daemon, conn_no, header, body):
        if len(daemon.requests_of(CT)) == 1:
            release.wait(10)  # hold the first request: the others queue up behind it
        return fail_zero_amounts(daemon, conn_no, header, body)

    with FakeDaemon(handler, requests_in_flight_max=1) as daemon:
        with Client(daemon.address, timeout=20) as client:
            # caller -> (events, open chain, indexes of its events that fail)
            shapes = {0: (3, False, ()), 1: (2, False, (1,)), 2: (4, True, ()), 3: (1, False, (0,)),
                      4: (5, False, (0, 4)), 5: (2, True, ()), 6: (3, False, ()),
                      7: (6, False, (2,))}
            plans = {k: make_call(k + 1, n, open_chain=o, zero_at=z)
                     for k, (n, o, z) in shapes.items()}
            results: dict[int, list] = {}

            def caller(k):
                results[k] = client.create_transfers(plans[k][0])

            first = threading.Thread(target=caller, args=(0,))
            first.start()
            wait_until(lambda: len(daemon.requests_of(CT)) == 1)
            others = [threading.Thread(target=caller, args=(k,)) for k in range(1, len(plans))]
            for t in others:
                t.start()
            wait_until(lambda: client.stats()["queued"] == len(plans) - 1)
            release.set()
            for t in [first, *others]:
                t.join(20)
            for k, (transfers, expected) in plans.items():
                if shapes[k][1]:
                    continue  # the fake does not model chains; the composition check covers them
                assert results[k] == expected, k
            check_composition(daemon, {k: (p[0], shapes[k][1]) for k, p in plans.items()})
            # 7 queued calls with 2 open chains: at most 3 requests after the held one.
            assert len(daemon.requests_of(CT)) <= 4
            assert client.stats()["requests_sent"] == len(daemon.requests_of(CT))


def test_tasks_coalesce_and_each_gets_its_own_results():
    with FakeDaemon(fail_zero_amounts, requests_in_flight_max=1) as daemon:

        async def scenario():
            client = await AsyncClient.connect(daemon.address, timeout=20)
            try:
                plans = {k: make_call(k + 1, 1 + k % 7, open_chain=(k % 10 == 9),
                                      zero_at=(0,) if k % 3 == 0 and k % 10 != 9 else ())
                         for k in range(50)}
                got = await asyncio.gather(*(client.create_transfers(p[0]) for p in plans.values()))
                for k, result in zip(plans, got):
                    if k % 10 != 9:
                        assert result == plans[k][1], k
                check_composition(daemon, {k: (p[0], k % 10 == 9) for k, p in plans.items()})
                assert client.stats()["requests_sent"] <= 10  # 50 calls, 5 open chains
            finally:
                await client.close()

        run(scenario())


@pytest.fixture(params=["sync", "async"])
def api(request):
    async def factory(address, **options):
        if request.param == "sync":
            return SyncAsAsync(Client(address, **options))
        return await AsyncClient.connect(address, **options)

    return factory


@pytest.mark.parametrize("status", [StatusCode.BUSY, StatusCode.JOURNAL_UNAVAILABLE])
def test_busy_is_retried_with_the_same_events(api, status):
    def handler(daemon, conn_no, header, body):
        if len(daemon.requests_of(CT)) <= 2:
            return ("status", status)
        return fail_zero_amounts(daemon, conn_no, header, body)

    with FakeDaemon(handler) as daemon:

        async def scenario():
            client = await api(daemon.address, timeout=10)
            try:
                transfers, expected = make_call(1, 4, zero_at=(2,))
                assert await client.create_transfers(transfers) == expected
                bodies = daemon.requests_of(CT)
                assert len(bodies) == 3 and bodies[0] == bodies[1] == bodies[2]
                assert client.stats()["retries"] == 2 and daemon.connections == 1
            finally:
                await client.close()

        run(scenario())


def test_shutting_down_reconnects_and_retries(api):
    def handler(daemon, conn_no, header, body):
        if conn_no == 0:
            return ("status", StatusCode.SHUTTING_DOWN)  # the fake closes after it
        return fail_zero_amounts(daemon, conn_no, header, body)

    with FakeDaemon(handler) as daemon:

        async def scenario():
            client = await api(daemon.address, timeout=10)
            try:
                transfers, expected = make_call(1, 3, zero_at=(0,))
                assert await client.create_transfers(transfers) == expected
                assert daemon.connections == 2
                bodies = daemon.requests_of(CT)
                assert len(bodies) == 2 and bodies[0] == bodies[1]
            finally:
                await client.close()

        run(scenario())


def test_lost_connection_resends_and_exists_comes_back(api):
    """The first attempt's connection dies without a reply; the second answers ``exists`` for
    every event, as the daemon does when the lost attempt had been applied."""

    def handler(daemon, conn_no, header, body):
        if conn_no == 0 and header.operation == CT:
            return "close"
        n = len(_wire.decode_transfers(body))
        return ("ok", b"".join(_wire.RESULT.pack(i, ResultCode.EXISTS) for i in range(n)))

    with FakeDaemon(handler) as daemon:

        async def scenario():
            client = await api(daemon.address, timeout=10)
            try:
                transfers, _ = make_call(1, 3)
                assert await client.create_transfers(transfers) == [
                    CreateResult(i, ResultCode.EXISTS) for i in range(3)
                ]
                bodies = daemon.requests_of(CT)
                assert len(bodies) == 2 and bodies[0] == bodies[1]
                assert client.stats()["reconnects"] == 1
            finally:
                await client.close()

        run(scenario())


@pytest.mark.parametrize("corruption", ["checksum", "stray_request_id"])
def test_a_corrupt_reply_closes_the_connection_and_retries(api, corruption):
    def handler(daemon, conn_no, header, body):
        if conn_no == 0:
            if corruption == "checksum":
                frame = bytearray(_wire.encode_frame(header.operation, header.request_id, b"", 0))
                frame[24] ^= 0xFF
            else:
                frame = _wire.encode_frame(header.operation, header.request_id + 1000, b"", 0)
            return ("raw", bytes(frame))
        return None

    with FakeDaemon(handler) as daemon:

        async def scenario():
            client = await api(daemon.address, timeout=10)
            try:
                transfers, _ = make_call(1, 2)
                assert await client.create_transfers(transfers) == []
                assert daemon.connections == 2
            finally:
                await client.close()

        run(scenario())


@pytest.mark.parametrize("status", [99, StatusCode.INTERNAL_ERROR, StatusCode.INVALID_BODY])
def test_other_statuses_are_errors_carrying_the_status(api, status):
    def handler(daemon, conn_no, header, body):
        if header.operation == Operation.STATUS:
            return ("ok", _wire.STATUS_REPLY.pack(*([0] * 17)))
        return ("status", status)

    with FakeDaemon(handler) as daemon:

        async def scenario():
            client = await api(daemon.address, timeout=10)
            try:
                with pytest.raises(StatusError) as info:
                    await client.create_transfers(make_call(1, 1)[0])
                assert info.value.status == status
                assert int(info.value.status) == int(status)
                if status == 99:
                    assert info.value.name == "status_99"
                assert len(daemon.requests_of(CT)) == 1  # not retried
                assert (await client.status()).sequence == 0  # still connected
                assert daemon.connections == 1
            finally:
                await client.close()

        run(scenario())


@pytest.mark.parametrize("reply, leader", [(_wire.NOT_LEADER_REPLY.pack(2), 2), (b"", None)])
def test_not_leader_is_an_error_carrying_the_leader_hint(api, reply, leader):
    def handler(daemon, conn_no, header, body):
        if header.operation == Operation.STATUS:
            return ("ok", bytes(_wire.STATUS_REPLY.size))
        frame = _wire.encode_frame(header.operation, header.request_id, reply,
                                   StatusCode.NOT_LEADER)
        return ("raw", frame)

    with FakeDaemon(handler) as daemon:

        async def scenario():
            client = await api(daemon.address, timeout=10)
            try:
                with pytest.raises(StatusError) as info:
                    await client.create_transfers(make_call(1, 1)[0])
                assert info.value.status == StatusCode.NOT_LEADER
                assert info.value.leader == leader
                assert len(daemon.requests_of(CT)) == 1  # not retried
                assert (await client.status()).sequence == 0  # still connected
                assert daemon.connections == 1
            finally:
                await client.close()

        run(scenario())


def test_refusal_on_reconnect_fails_the_waiting_calls(api):
    def handler(daemon, conn_no, header, body):
        return "close"

    def hello_status(conn_no):
        return 0 if conn_no == 0 else StatusCode.AUTH_FAILED

    with FakeDaemon(handler, hello_status=hello_status) as daemon:

        async def scenario():
            client = await api(daemon.address, timeout=10)
            try:
                started = time.monotonic()
                with pytest.raises(StatusError) as info:
                    await client.create_transfers(make_call(1, 1)[0])
                assert info.value.status == StatusCode.AUTH_FAILED
                assert time.monotonic() - started < 5  # refused at once, no waiting out
            finally:
                await client.close()

        run(scenario())


def test_deadline_when_the_daemon_never_answers(api):
    stuck = threading.Event()

    def handler(daemon, conn_no, header, body):
        stuck.wait(10)
        return None

    with FakeDaemon(handler) as daemon:

        async def scenario():
            client = await api(daemon.address, timeout=0.3)
            try:
                started = time.monotonic()
                with pytest.raises(TimeoutError, match="outcome is unknown"):
                    await client.create_transfers(make_call(1, 1)[0])
                assert 0.25 < time.monotonic() - started < 3
            finally:
                stuck.set()
                await client.close()

        run(scenario())


def test_daemon_down_then_up_within_the_deadline():
    """Reconnection backs off and keeps trying until the caller's deadline."""
    with FakeDaemon(lambda d, c, h, b: "close" if c == 0 else None) as daemon:
        with Client(daemon.address, timeout=10) as client:
            assert client.create_transfers(make_call(1, 1)[0]) == []
            assert client.stats()["reconnects"] == 1


def test_header_room_is_reused_without_copy_for_single_calls():
    # A call travelling alone is sent from its own buffer (one 1 MiB copy saved per call).
    from ledgerd import _ops
    from ledgerd._batch import Call, Engine

    r = _ops.create_transfers(make_call(1, 2)[0], 8190)
    e = Engine()
    e.queue.append(Call(r.operation, r.frame, r.events, r.open_chain, time.monotonic() + 10))
    _, frame = e.take(time.monotonic())
    assert frame is r.frame and _wire.decode_header(frame).body_length == len(frame) - HEADER_SIZE
