"""Helpers the tests import (fresh ids, one scenario for both APIs, bounded asyncio runs)."""

from __future__ import annotations

import asyncio
import itertools
import random

import ledgerd


class Ids:
    """Fresh ids for one test: a random 64-bit base in the high half, a counter below."""

    def __init__(self) -> None:
        self.base = random.SystemRandom().getrandbits(64) << 64
        self.counter = itertools.count(1)

    def __call__(self) -> int:
        return self.base | next(self.counter)

    def many(self, n: int) -> list[int]:
        return [self() for _ in range(n)]


class SyncAsAsync:
    """A :class:`ledgerd.Client` behind the :class:`ledgerd.AsyncClient` interface, so that one
    scenario runs against both APIs (calls block the event loop: fine in a test)."""

    def __init__(self, client: ledgerd.Client) -> None:
        self.sync = client

    @property
    def hello(self):
        return self.sync.hello

    def stats(self):
        return self.sync.stats()

    def __getattr__(self, name):
        method = getattr(self.sync, name)

        async def call(*args, **kwargs):
            return method(*args, **kwargs)

        return call


def run(coro, timeout: float = 120.0):
    """Runs a coroutine to completion with a deadline."""
    return asyncio.run(asyncio.wait_for(coro, timeout))
