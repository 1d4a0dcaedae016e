"""Producers keep creating transfers through kills (SIGKILL) and restarts of a daemon this
test starts itself; at the end every transfer is applied exactly once (re-sent events answer
``exists``, nothing is lost or doubled). Needs the daemon binary: set ``LEDGERD_BIN`` (e.g.
target/release/ledgerd); without it the test is skipped, saying so."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import threading
import time

import pytest

from helpers import run
from ledgerd import Account, AsyncClient, Client, ResultCode, Transfer, random_id

BIN = os.environ.get("LEDGERD_BIN")
pytestmark = pytest.mark.skipif(not BIN, reason="set LEDGERD_BIN to the ledgerd binary to run")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Daemon:
    def __init__(self, data_dir) -> None:
        self.data_dir = str(data_dir)
        self.addr = f"127.0.0.1:{_free_port()}"
        self.metrics = f"127.0.0.1:{_free_port()}"
        self.process = None
        self.start()

    def start(self) -> None:
        self.process = subprocess.Popen(
            [BIN, "--data-dir", self.data_dir, "--listen", self.addr, "--metrics-listen",
             self.metrics], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(self.addr.split(":"), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.02)
        raise AssertionError("the daemon did not start listening")

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


def _check_batch(results) -> str | None:
    bad = [r for r in results if r.result != ResultCode.EXISTS]
    return f"unexpected results {bad[:2]}" if bad else None


def test_threads_through_restarts(tmp_path):
    daemon = Daemon(tmp_path / "data")
    try:
        client = Client(daemon.addr, timeout=60)
        base = random_id() >> 64 << 64
        a, b = base + 1, base + 2
        assert client.create_accounts([Account(id=a, ledger=1, code=1),
                                       Account(id=b, ledger=1, code=1)]) == []
        stop = threading.Event()
        sent = [0] * 4
        problems: list[str] = []

        def producer(k: int) -> None:
            n = 0
            while not stop.is_set():
                first = base + 1000 + k * 10_000_000 + n * 100
                batch = [Transfer(id=first + i, debit_account_id=a, credit_account_id=b, amount=1,
                                  ledger=1, code=1) for i in range(100)]
                problem = _check_batch(client.create_transfers(batch))
                if problem:
                    problems.append(problem)
                n += 1
                sent[k] += 100

        threads = [threading.Thread(target=producer, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for _ in range(3):
            time.sleep(0.5)
            daemon.kill()
            daemon.start()
        time.sleep(0.5)
        stop.set()
        for t in threads:
            t.join(90)
        (account,) = client.lookup_accounts([a])
        assert not problems, problems[:3]
        assert account.debits_posted == sum(sent)
        assert client.stats()["reconnects"] >= 3
        client.close()
    finally:
        daemon.stop()


def test_tasks_through_restarts(tmp_path):
    daemon = Daemon(tmp_path / "data")

    async def scenario() -> None:
        client = await AsyncClient.connect(daemon.addr, timeout=60)
        base = random_id() >> 64 << 64
        a, b = base + 1, base + 2
        assert await client.create_accounts([Account(id=a, ledger=1, code=1),
                                             Account(id=b, ledger=1, code=1)]) == []
        stop = False
        sent = 0
        problems: list[str] = []

        async def producer(k: int) -> None:
            nonlocal sent
            n = 0
            while not stop:
                first = base + 1000 + k * 10_000_000 + n * 10
                batch = [Transfer(id=first + i, debit_account_id=a, credit_account_id=b, amount=1,
                                  ledger=1, code=1) for i in range(10)]
                problem = _check_batch(await client.create_transfers(batch))
                if problem:
                    problems.append(problem)
                n += 1
                sent += 10

        tasks = [asyncio.create_task(producer(k)) for k in range(50)]
        for _ in range(3):
            await asyncio.sleep(0.5)
            daemon.kill()
            await asyncio.to_thread(daemon.start)
        await asyncio.sleep(0.5)
        stop = True
        await asyncio.gather(*tasks)
        (account,) = await client.lookup_accounts([a])
        assert not problems, problems[:3]
        assert account.debits_posted == sent
        assert client.stats()["reconnects"] >= 3
        await client.close()

    try:
        run(scenario())
    finally:
        daemon.stop()
