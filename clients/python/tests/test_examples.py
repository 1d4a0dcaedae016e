"""The benchmark script runs (briefly) against the real daemon and prints its figures; the
reconciliation example is run by the repository's harness itself (examples/reconcile.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("api", ["sync", "async"])
def test_bench_smoke(addr, api):
    env = dict(os.environ, LEDGERD_ADDR=addr, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run(
        [sys.executable, str(HERE / "bench" / "transfers.py"), "--seconds", "0.1",
         "--batch", "300", "--accounts", "20", "--in-flight", "2", "--api", api],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    lines = dict(line.split(" ", 1) for line in out.stdout.splitlines())
    assert float(lines["clients.python.transfers_per_s"]) > 0
    assert int(lines["clients.python.transfers"]) % 300 == 0


def test_examples_compile():
    path = HERE / "examples" / "reconcile.py"
    compile(path.read_text(), str(path), "exec")
