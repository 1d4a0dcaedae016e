"""Many threads / many asyncio tasks on one client against a real daemon: each caller checks
that it got exactly its own results, including open linked chains mixed in, and the ledger
shows every successful transfer applied exactly once."""

from __future__ import annotations

import asyncio
import random
import threading

from helpers import run
from ledgerd import (
    Account,
    AsyncClient,
    Client,
    CreateResult,
    ResultCode,
    Transfer,
    TransferFlags,
)

R = ResultCode


class Plan:
    """One caller's call: its transfers and exactly the results it must get back."""

    def __init__(self, rng: random.Random, ids, ledger: int, a: int, b: int) -> None:
        n = rng.randint(1, 40)
        self.transfers: list[Transfer] = []
        self.expected: list[CreateResult] = []
        self.applied = 0  # sum of amounts that must be applied
        kind = rng.random()
        if kind < 0.1:
            # An open chain: the daemon fails it as a whole. Were it joined with the next
            # caller's events, they would become part of the chain.
            for i in range(n):
                self.transfers.append(Transfer(id=ids(), debit_account_id=a, credit_account_id=b,
                                               amount=1, ledger=ledger, code=1,
                                               flags=TransferFlags.LINKED))
                self.expected.append(CreateResult(i, R.LINKED_EVENT_FAILED if i < n - 1
                                                  else R.LINKED_EVENT_CHAIN_OPEN))
            return
        for i in range(n):
            amount = rng.randint(1, 100)
            t = Transfer(id=ids(), debit_account_id=a, credit_account_id=b, amount=amount,
                         ledger=ledger, code=1)
            roll = rng.random()
            if roll < 0.05:
                t.amount = 0
                self.expected.append(CreateResult(i, R.AMOUNT_MUST_NOT_BE_ZERO))
            elif roll < 0.1:
                t.credit_account_id = ids()  # no such account
                self.expected.append(CreateResult(i, R.CREDIT_ACCOUNT_NOT_FOUND))
            elif roll < 0.13:
                t.flags = 0x80  # unknown flag
                self.expected.append(CreateResult(i, R.FLAGS_UNKNOWN))
            else:
                self.applied += amount
            self.transfers.append(t)


def _setup(client: Client, ids, ledger: int) -> tuple[int, int]:
    a, b = ids(), ids()
    assert client.create_accounts([Account(id=a, ledger=ledger, code=1),
                                   Account(id=b, ledger=ledger, code=1)]) == []
    return a, b


def test_many_threads_each_get_their_own_results(client, ids, ledger):
    a, b = _setup(client, ids, ledger)
    threads_n, calls_each = 32, 8
    barrier = threading.Barrier(threads_n)
    failures: list[str] = []
    applied = [0] * threads_n

    def worker(k: int) -> None:
        rng = random.Random(k)
        try:
            barrier.wait(30)
            for _ in range(calls_each):
                plan = Plan(rng, ids, ledger, a, b)
                got = client.create_transfers(plan.transfers)
                if got != plan.expected:
                    failures.append(f"thread {k}: got {got}, expected {plan.expected}")
                applied[k] += plan.applied
        except BaseException as e:  # reported below
            failures.append(f"thread {k}: {e!r}")

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not failures, failures[:5]
    got_a, got_b = client.lookup_accounts([a, b])
    assert got_a.debits_posted == sum(applied) == got_b.credits_posted
    stats = client.stats()
    assert stats["calls_sent"] >= threads_n * calls_each
    assert stats["requests_sent"] < stats["calls_sent"], stats  # calls were coalesced


def test_many_tasks_each_get_their_own_results(addr, token, ids, ledger):
    with Client(addr, token) as setup:
        a, b = _setup(setup, ids, ledger)

    async def scenario() -> None:
        client = await AsyncClient.connect(addr, token, timeout=60.0)
        try:
            applied = 0

            async def task(k: int) -> None:
                nonlocal applied
                rng = random.Random(1000 + k)
                for _ in range(4):
                    plan = Plan(rng, ids, ledger, a, b)
                    got = await client.create_transfers(plan.transfers)
                    assert got == plan.expected, (k, got, plan.expected)
                    applied += plan.applied

            await asyncio.gather(*(task(k) for k in range(200)))
            got_a, got_b = await client.lookup_accounts([a, b])
            assert got_a.debits_posted == applied == got_b.credits_posted
            stats = client.stats()
            assert stats["calls_sent"] >= 800
            assert stats["requests_sent"] < stats["calls_sent"] // 4, stats
        finally:
            await client.close()

    run(scenario())


def test_threads_mixing_accounts_transfers_and_queries(client, ids, ledger):
    a, b = _setup(client, ids, ledger)
    failures: list[str] = []

    def creator(k: int) -> None:
        try:
            for _ in range(10):
                new = [Account(id=ids(), ledger=ledger, code=2) for _ in range(3)]
                assert client.create_accounts(new) == []
                new_ids = [x.id for x in new]
                assert [x.id for x in client.lookup_accounts(new_ids)] == new_ids
                t = Transfer(id=ids(), debit_account_id=new[0].id, credit_account_id=a, amount=1,
                             ledger=ledger, code=1)
                assert client.create_transfers([t]) == []
                assert client.create_transfers([t]) == [CreateResult(0, R.EXISTS)]
        except BaseException as e:
            failures.append(f"{k}: {e!r}")

    threads = [threading.Thread(target=creator, args=(k,)) for k in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not failures, failures[:5]
    (got_a,) = client.lookup_accounts([a])
    assert got_a.credits_posted == 160
