#!/usr/bin/env python3
"""Throughput of batched create_transfers from Python.

Sets up accounts with fresh random ids, then for ``--seconds`` keeps ``--in-flight`` calls of
``--batch`` (8190) transfers going through one client: each call's ``Transfer`` records are
built and encoded in Python, right before the call. Every result is checked (all must
succeed). Prints ``clients.python.transfers_per_s <n>`` and other ``clients.python.*`` lines.

    LEDGERD_ADDR=127.0.0.1:7400 LEDGERD_TOKEN=... python3 bench/transfers.py --seconds 10

``--api sync`` (default) runs the calls from threads on a :class:`ledgerd.Client`;
``--api async`` from tasks on a :class:`ledgerd.AsyncClient`.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
import threading
import time
from pathlib import Path

try:
    import ledgerd
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import ledgerd

from ledgerd import Account, Transfer

LEDGER = 7001
CODE = 1


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=10.0, help="how long to send (default 10)")
    p.add_argument("--batch", type=int, default=ledgerd.EVENTS_PER_REQUEST_MAX,
                   help="transfers per call (default 8190)")
    p.add_argument("--in-flight", type=int, default=4, help="calls in flight (default 4)")
    p.add_argument("--accounts", type=int, default=1000, help="accounts to spread over")
    p.add_argument("--api", choices=("sync", "async"), default="sync")
    p.add_argument("--gc-threshold", type=int, default=50_000,
                   help="gc generation-0 threshold (default 50000; 0 keeps Python's 700)")
    return p.parse_args()


class Producer:
    """Builds batches of transfers with fresh ids between the bench's accounts."""

    def __init__(self, accounts: list[int], batch: int) -> None:
        self.batch = batch
        self.next_id = ledgerd.random_id() >> 32 << 32  # room for 2**32 ids
        self.lock = threading.Lock()
        n = len(accounts)
        # Debit/credit pairs spread uniformly over the accounts (the same pattern each call).
        self.debits = [accounts[i % n] for i in range(batch)]
        self.credits = [accounts[(i * 7 + 1) % n] for i in range(batch)]
        for i, (d, c) in enumerate(zip(self.debits, self.credits)):
            if d == c:
                self.credits[i] = accounts[(i + 1) % n]

    def build(self) -> list[Transfer]:
        with self.lock:
            first = self.next_id
            self.next_id += self.batch
        # The records are built here, per call, and encoded by the client: that cost is part
        # of what is measured. (Positional arguments: protocol field order, about twice as
        # fast as keywords in CPython.)
        return [
            Transfer(first + i, d, c, 1, 0, 0, 0, 0, 0, LEDGER, CODE)
            for i, d, c in zip(range(self.batch), self.debits, self.credits)
        ]


def check(results: list[ledgerd.CreateResult]) -> None:
    if results:
        raise SystemExit(
            f"clients.python.error {len(results)} transfers failed, first {results[0]}"
        )


def setup_accounts(client: ledgerd.Client, count: int) -> list[int]:
    base = ledgerd.random_id() >> 32 << 32
    ids = [base + i for i in range(1, count + 1)]
    check(client.create_accounts([Account(id=i, ledger=LEDGER, code=CODE) for i in ids]))
    return ids


Outcome = tuple[int, float, list[float], dict]  # transfers, seconds, call latencies, stats


def run_sync(args: argparse.Namespace, addr: str, token: str | None) -> Outcome:
    with ledgerd.Client(addr, token, timeout=120.0) as client:
        producer = Producer(setup_accounts(client, args.accounts), args.batch)
        done = 0
        latencies: list[float] = []
        lock = threading.Lock()
        errors: list[BaseException] = []
        start = time.perf_counter()
        stop_at = start + args.seconds

        def worker() -> None:
            nonlocal done
            try:
                while time.perf_counter() < stop_at:
                    transfers = producer.build()
                    t0 = time.perf_counter()
                    check(client.create_transfers(transfers))
                    with lock:
                        done += len(transfers)
                        latencies.append(time.perf_counter() - t0)
            except BaseException as e:  # reported below
                errors.append(e)

        threads = [threading.Thread(target=worker) for _ in range(args.in_flight)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(args.seconds + 300)
        elapsed = time.perf_counter() - start
        if errors:
            raise errors[0]
        return done, elapsed, latencies, client.stats()


async def run_async(args: argparse.Namespace, addr: str, token: str | None) -> Outcome:
    client = await ledgerd.AsyncClient.connect(addr, token, timeout=120.0)
    try:
        base = ledgerd.random_id() >> 32 << 32
        ids = [base + i for i in range(1, args.accounts + 1)]
        check(await client.create_accounts([Account(id=i, ledger=LEDGER, code=CODE) for i in ids]))
        producer = Producer(ids, args.batch)
        done = 0
        latencies: list[float] = []
        start = time.perf_counter()
        stop_at = start + args.seconds

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < stop_at:
                transfers = producer.build()
                t0 = time.perf_counter()
                check(await client.create_transfers(transfers))
                done += len(transfers)
                latencies.append(time.perf_counter() - t0)

        await asyncio.gather(*(worker() for _ in range(args.in_flight)))
        return done, time.perf_counter() - start, latencies, client.stats()
    finally:
        await client.close()


def main() -> None:
    args = parse_args()
    addr = os.environ.get("LEDGERD_ADDR")
    if not addr:
        raise SystemExit("set LEDGERD_ADDR (host:port of a running ledgerd), "
                         "and LEDGERD_TOKEN if it has a token")
    token = os.environ.get("LEDGERD_TOKEN") or None
    if args.gc_threshold:
        # ~200,000 Transfer objects a second, each alive until its call returns: with the
        # default threshold (700) the collector runs over a hundred times a second and takes
        # about a fifth of the client's CPU. A producer of that many objects tunes it.
        gc.set_threshold(args.gc_threshold, *gc.get_threshold()[1:])
    cpu0 = time.process_time()
    if args.api == "sync":
        done, elapsed, latencies, stats = run_sync(args, addr, token)
    else:
        done, elapsed, latencies, stats = asyncio.run(run_async(args, addr, token))
    cpu = time.process_time() - cpu0
    latencies.sort()
    latencies = latencies or [0.0]
    p50 = latencies[len(latencies) // 2] * 1000
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000
    print(f"clients.python.transfers_per_s {done / elapsed:.0f}")
    print(f"clients.python.transfers {done}")
    print(f"clients.python.seconds {elapsed:.2f}")
    print(f"clients.python.api {args.api}")
    print(f"clients.python.batch {args.batch}")
    print(f"clients.python.calls_in_flight {args.in_flight}")
    print(f"clients.python.requests {stats['requests_sent']}")
    print(f"clients.python.call_latency_ms_p50 {p50:.1f}")
    print(f"clients.python.call_latency_ms_p99 {p99:.1f}")
    print(f"clients.python.client_cpu_percent {100 * cpu / elapsed:.0f}")
    print(f"clients.python.client_cpu_us_per_transfer {1e6 * cpu / max(done, 1):.2f}")
    print(f"clients.python.gc_threshold {gc.get_threshold()[0]}")


if __name__ == "__main__":
    main()
