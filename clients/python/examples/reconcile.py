#!/usr/bin/env python3
"""Reconciliation: rebuild every account's balances from the change events alone, and check
them against the ledger.

It follows the change stream from its start (paging with next_sequence / next_index until
caught up), applies each event to balances of its own (single-phase, pending, posted, voided,
expired), checks after every event that its rebuilt balances equal the post-state the event
carries, then looks every account seen in the stream up with lookup_accounts and compares,
and checks that debits equal credits on every ledger (pending and posted separately). The
daemon may be shared: ALL accounts in the stream are reconciled, not only this script's.

    LEDGERD_ADDR=127.0.0.1:7400 LEDGERD_TOKEN=... python3 examples/reconcile.py --make-activity 200

Prints one summary line; exits 1 on any mismatch, 2 if it could not finish (bounds, errors).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from collections import defaultdict
from pathlib import Path

try:
    import ledgerd
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import ledgerd

from ledgerd import (
    Account,
    AccountFlags,
    AccountLimit,
    ChangeEventKind,
    Client,
    CreateResult,
    ResultCode,
    Transfer,
    TransferFlags,
)

K = ChangeEventKind


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Rebuild balances from change events and check them.")
    p.add_argument("--make-activity", type=int, default=0, metavar="N",
                   help="first create about N transfers of every kind on a fresh ledger")
    p.add_argument("--max-events", type=int, default=20_000_000,
                   help="give up (exit 2) past this many change events")
    p.add_argument("--seconds", type=float, default=600.0, help="give up (exit 2) after this long")
    return p.parse_args()


# ---- activity ----


def expect_ok(what: str, results: list[CreateResult]) -> None:
    if results:
        raise SystemExit(f"reconcile: making activity: {what} failed: {results[:3]}")


def make_activity(client: Client, n: int) -> dict[str, int]:
    """Accounts, single-phase transfers, pending+post, pending+void, linked chains (one
    applied, one failed), a limit, a balancing transfer and a pending transfer that expires."""
    rng = random.Random()
    ledger = rng.randrange(1_000_000, 1 << 31)
    base = ledgerd.random_id() >> 64 << 64
    next_id = iter(range(base + 1, base + (1 << 62)))

    accounts = [Account(id=next(next_id), ledger=ledger, code=1,
                        flags=AccountFlags.HISTORY if i % 3 == 0 else 0)
                for i in range(max(6, n // 10))]
    wallet = Account(id=next(next_id), ledger=ledger, code=2,
                     flags=AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS)
    expect_ok("accounts", client.create_accounts(accounts + [wallet]))
    ids = [a.id for a in accounts]
    expect_ok("limit", client.set_account_limits([AccountLimit(account_id=wallet.id, limit=500)]))

    def pair() -> tuple[int, int]:
        d, c = rng.sample(ids, 2)
        return d, c

    def t(amount: int, flags: int = 0, **fields) -> Transfer:
        d, c = pair()
        return Transfer(id=next(next_id), debit_account_id=d, credit_account_id=c, amount=amount,
                        ledger=ledger, code=1, flags=flags, **fields)

    counts = defaultdict(int)
    singles = [t(rng.randint(1, 1000)) for _ in range(max(1, n // 2))]
    for i in range(0, len(singles), 100):  # several calls, coalesced by the client as they come
        expect_ok("single-phase", client.create_transfers(singles[i:i + 100]))
    counts["single"] = len(singles)

    pendings = [t(rng.randint(10, 1000), TransferFlags.PENDING, timeout=3600)
                for _ in range(max(2, n // 4))]
    expect_ok("pending", client.create_transfers(pendings))
    half = len(pendings) // 2
    posts = [Transfer(id=next(next_id), pending_id=p.id, amount=rng.choice([0, p.amount // 2]),
                      flags=TransferFlags.POST_PENDING_TRANSFER) for p in pendings[:half]]
    voids = [Transfer(id=next(next_id), pending_id=p.id, flags=TransferFlags.VOID_PENDING_TRANSFER)
             for p in pendings[half:]]
    expect_ok("post/void", client.create_transfers(posts + voids))
    counts["posted"], counts["voided"] = len(posts), len(voids)

    chain = [t(5, TransferFlags.LINKED), t(6, TransferFlags.LINKED), t(7)]
    expect_ok("linked chain", client.create_transfers(chain))
    broken = [t(5, TransferFlags.LINKED), t(0)]  # amount 0 fails, so the chain does
    results = client.create_transfers(broken)
    if results != [CreateResult(0, ResultCode.LINKED_EVENT_FAILED),
                   CreateResult(1, ResultCode.AMOUNT_MUST_NOT_BE_ZERO)]:
        raise SystemExit(f"reconcile: the failing chain answered {results}")
    counts["chains"] = 2

    # The wallet may go 500 past zero; a balancing debit takes what is left of that.
    expect_ok("wallet", client.create_transfers([
        Transfer(id=next(next_id), debit_account_id=wallet.id, credit_account_id=ids[0],
                 amount=300, ledger=ledger, code=1),
        Transfer(id=next(next_id), debit_account_id=wallet.id, credit_account_id=ids[1],
                 amount=10_000, ledger=ledger, code=1, flags=TransferFlags.BALANCING_DEBIT),
    ]))
    # A pending transfer that the ledger voids by itself after a second.
    expect_ok("expiring", client.create_transfers([t(77, TransferFlags.PENDING, timeout=1)]))
    counts["accounts"] = len(accounts) + 1
    return counts


# ---- rebuilding ----


class Rebuilt:
    """Balances per account, rebuilt from the events alone."""

    def __init__(self) -> None:
        # id -> [debits_pending, debits_posted, credits_pending, credits_posted]
        self.balances: dict[int, list[int]] = {}
        self.ledger_of: dict[int, int] = {}
        # pending transfer id -> (debit, credit, amount), until posted, voided or expired
        self.pending: dict[int, tuple[int, int, int]] = {}
        self.events = 0
        self.by_kind: dict[str, int] = defaultdict(int)
        self.problems: list[str] = []

    def problem(self, text: str) -> None:
        if len(self.problems) < 20:
            self.problems.append(text)
        else:
            self.problems[-1] = "... and more"

    def _account(self, account_id: int, where: str) -> list[int]:
        b = self.balances.get(account_id)
        if b is None:
            self.problem(f"{where}: account {account_id} used before its account_created event")
            b = self.balances[account_id] = [0, 0, 0, 0]
        return b

    def apply(self, e: ledgerd.ChangeEvent) -> None:
        self.events += 1
        where = f"event ({e.sequence}, {e.index})"
        kind = e.kind
        self.by_kind[getattr(kind, "wire_name", f"kind_{int(kind)}")] += 1
        t = e.transfer
        if kind == K.ACCOUNT_CREATED:
            a = e.debit_account
            if a.id in self.balances:
                self.problem(f"{where}: account {a.id} created twice")
            self.balances[a.id] = [0, 0, 0, 0]
            self.ledger_of[a.id] = a.ledger
            self._check(where, a)
            return
        if kind == K.LIMIT_SET:
            # Not a balance change. The daemon fills this event's account with the account's
            # state when the event is READ, not when the limit was set (protocol.md only says
            # "the account"), so its balances are not compared here.
            self._account(e.limit.account_id, where)
            if e.debit_account.id != e.limit.account_id:
                self.problem(f"{where}: limit_set for {e.limit.account_id} carries account "
                             f"{e.debit_account.id}")
            return
        if kind == K.TRANSFER_SINGLE_PHASE:
            d = self._account(t.debit_account_id, where)
            c = self._account(t.credit_account_id, where)
            d[1] += t.amount
            c[3] += t.amount
        elif kind == K.TRANSFER_PENDING:
            d = self._account(t.debit_account_id, where)
            c = self._account(t.credit_account_id, where)
            d[0] += t.amount
            c[2] += t.amount
            self.pending[t.id] = (t.debit_account_id, t.credit_account_id, t.amount)
        elif kind in (K.TRANSFER_POSTED, K.TRANSFER_VOIDED, K.TRANSFER_EXPIRED):
            # Posts and voids name their pending transfer; an expiry carries the pending itself.
            pending_id = t.id if kind == K.TRANSFER_EXPIRED else t.pending_id
            held = self.pending.pop(pending_id, None)
            if held is None:
                self.problem(f"{where}: {kind.wire_name} of unknown pending transfer {pending_id}")
                return
            debit, credit, amount = held
            d, c = self._account(debit, where), self._account(credit, where)
            d[0] -= amount
            c[2] -= amount
            if kind == K.TRANSFER_POSTED:
                d[1] += t.amount
                c[3] += t.amount
        else:
            self.problem(f"{where}: unknown change event kind {int(kind)}: cannot rebuild")
            return
        self._check(where, e.debit_account)
        self._check(where, e.credit_account)

    def _check(self, where: str, account: Account) -> None:
        """The event's post-state of an account must equal the rebuilt balances."""
        rebuilt = self.balances.get(account.id)
        carried = [account.debits_pending, account.debits_posted, account.credits_pending,
                   account.credits_posted]
        if rebuilt != carried:
            self.problem(f"{where}: account {account.id} rebuilt {rebuilt}, event says {carried}")


def follow(client: Client, rebuilt: Rebuilt, position: tuple[int, int], max_events: int,
           deadline: float) -> tuple[tuple[int, int], int]:
    """Applies every event from ``position`` until caught up; returns the new position and
    how many events were applied."""
    sequence, index = position
    applied = 0
    while True:
        if rebuilt.events > max_events or time.monotonic() > deadline:
            raise TimeoutError(f"bounds reached after {rebuilt.events} events")
        page = client.change_events(sequence, ledgerd.CHANGE_EVENTS_PER_REPLY_MAX, index)
        for e in page.events:
            rebuilt.apply(e)
        applied += len(page.events)
        if (page.next_sequence, page.next_index) < (sequence, index):
            raise RuntimeError("the change stream went backwards")
        sequence, index = page.next_sequence, page.next_index
        if not page.events:
            return (sequence, index), applied


def lookup_all(client: Client, ids: list[int]) -> dict[int, Account]:
    found: dict[int, Account] = {}
    step = client.hello.events_per_request_max
    for i in range(0, len(ids), step):
        for a in client.lookup_accounts(ids[i:i + step]):
            found[a.id] = a
    return found


def reconcile(client: Client, max_events: int, seconds: float) -> tuple[Rebuilt, dict]:
    deadline = time.monotonic() + seconds
    rebuilt = Rebuilt()
    position = (0, 0)
    for _ in range(20):  # the state may move while we look (other clients, expiries): retry
        position, _ = follow(client, rebuilt, position, max_events, deadline)
        looked = lookup_all(client, sorted(rebuilt.balances))
        position, moved = follow(client, rebuilt, position, max_events, deadline)
        if moved == 0:
            # Nothing changed between the end of the stream and the lookups: they must agree.
            return rebuilt, looked
    raise TimeoutError("the ledger kept changing while reconciling")


def main() -> int:
    args = parse_args()
    addr = os.environ.get("LEDGERD_ADDR")
    if not addr:
        print("reconcile: set LEDGERD_ADDR=host:port (and LEDGERD_TOKEN if needed)",
              file=sys.stderr)
        return 2
    token = os.environ.get("LEDGERD_TOKEN") or None
    started = time.monotonic()
    with Client(addr, token, timeout=60.0) as client:
        made = make_activity(client, args.make_activity) if args.make_activity > 0 else {}
        try:
            rebuilt, looked = reconcile(client, args.max_events, args.seconds)
        except (TimeoutError, RuntimeError) as e:
            print(f"reconcile: INCOMPLETE {e}")
            return 2

    mismatches = list(rebuilt.problems)
    for account_id, balances in rebuilt.balances.items():
        a = looked.get(account_id)
        if a is None:
            mismatches.append(f"account {account_id} is in the events, not in lookup_accounts")
            continue
        actual = [a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted]
        if actual != balances:
            mismatches.append(f"account {account_id}: rebuilt {balances}, ledger {actual}")
    # Double entry: on every ledger, debits equal credits (pending and posted separately).
    sums: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for account_id, a in looked.items():
        s = sums[a.ledger]
        s[0] += a.debits_pending
        s[1] += a.debits_posted
        s[2] += a.credits_pending
        s[3] += a.credits_posted
    for ledger_number, (dp, dq, cp, cq) in sorted(sums.items()):
        if dp != cp or dq != cq:
            mismatches.append(f"ledger {ledger_number}: debits {dp}/{dq} != credits {cp}/{cq}")

    kinds = " ".join(f"{k}={v}" for k, v in sorted(rebuilt.by_kind.items()))
    made_text = (" made: " + ",".join(f"{k}={v}" for k, v in made.items())) if made else ""
    verdict = "OK" if not mismatches else f"MISMATCH ({len(mismatches)})"
    print(f"reconcile: {verdict} events={rebuilt.events} accounts={len(rebuilt.balances)} "
          f"ledgers={len(sums)} pending_open={len(rebuilt.pending)} {kinds}{made_text} "
          f"seconds={time.monotonic() - started:.1f}")
    for line in mismatches[:20]:
        print(f"  {line}", file=sys.stderr)
    return 0 if not mismatches else 1


if __name__ == "__main__":
    sys.exit(main())
