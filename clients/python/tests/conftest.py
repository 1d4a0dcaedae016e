"""Shared fixtures.

Tests that talk to a daemon read ``LEDGERD_ADDR`` (host:port) and ``LEDGERD_TOKEN`` (the hello
token; unset or empty: none). Without ``LEDGERD_ADDR`` they FAIL, saying so: they never pass
silently. Many runs may share one daemon: every test uses fresh random ids.
"""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import pytest

# Let the helper modules of this folder be imported by name.
sys.path.insert(0, str(Path(__file__).resolve().parent))

import ledgerd  # noqa: E402
from helpers import Ids, SyncAsAsync  # noqa: E402


def daemon_address() -> str:
    addr = os.environ.get("LEDGERD_ADDR")
    if not addr:
        pytest.fail(
            "LEDGERD_ADDR is not set: start a ledgerd and set LEDGERD_ADDR=host:port "
            "(and LEDGERD_TOKEN if it requires a token) to run the integration tests"
        )
    return addr


@pytest.fixture
def addr() -> str:
    return daemon_address()


@pytest.fixture
def token() -> str | None:
    return os.environ.get("LEDGERD_TOKEN") or None


@pytest.fixture
def client(addr, token):
    with ledgerd.Client(addr, token, timeout=60.0) as c:
        yield c


@pytest.fixture
def ids() -> Ids:
    return Ids()


@pytest.fixture
def ledger() -> int:
    """A ledger number of this test's own (so that its accounts never meet another test's)."""
    return random.SystemRandom().randrange(1_000, 1 << 31)


@pytest.fixture(params=["sync", "async"])
def connect(request, addr, token):
    """``await connect(**options)``: a client of the parametrized API (call ``await c.close()``)."""

    async def factory(address=None, tok=token, **options):
        address = address or addr
        if request.param == "sync":
            return SyncAsAsync(ledgerd.Client(address, tok, **options))
        return await ledgerd.AsyncClient.connect(address, tok, **options)

    factory.api = request.param
    return factory
