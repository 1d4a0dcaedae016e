"""Every operation against a real daemon (LEDGERD_ADDR / LEDGERD_TOKEN), each scenario run with
both APIs (the ``connect`` fixture is parametrized: sync ``Client`` and ``AsyncClient``)."""

from __future__ import annotations

import pytest

from helpers import run
from ledgerd import (
    Account,
    AccountFilter,
    AccountFlags,
    AccountLimit,
    ChangeEventKind,
    ClosedError,
    CreateResult,
    FilterFlags,
    ResultCode,
    StatusCode,
    StatusError,
    TimeoutError,
    Transfer,
    TransferFlags,
)

R = ResultCode
BOTH = FilterFlags.DEBITS | FilterFlags.CREDITS


def accounts(ids, ledger, n, flags=0):
    return [Account(id=ids(), ledger=ledger, code=10, flags=flags) for _ in range(n)]


def transfer(ids, debit, credit, amount, ledger, **fields):
    return Transfer(id=ids(), debit_account_id=debit, credit_account_id=credit, amount=amount,
                    ledger=ledger, code=1, **fields)


def test_hello_limits(connect):
    async def scenario():
        c = await connect()
        try:
            h = c.hello
            assert h.version == 1
            assert h.events_per_request_max == 8190
            assert h.frame_body_max == 1 << 20
            assert h.change_events_per_reply_max == 2048
            assert h.requests_in_flight_max >= 1
        finally:
            await c.close()

    run(scenario())


def test_create_and_lookup_accounts(connect, ids, ledger):
    async def scenario():
        c = await connect()
        try:
            new = [
                Account(id=ids(), ledger=ledger, code=10, user_data_128=1 << 100,
                        user_data_64=(1 << 64) - 1, user_data_32=7, flags=AccountFlags.HISTORY),
                Account(id=ids(), ledger=ledger, code=11),
            ]
            assert await c.create_accounts(new) == []
            missing = ids()
            found = await c.lookup_accounts([new[1].id, missing, new[0].id])
            assert [a.id for a in found] == [new[1].id, new[0].id]  # request order, missing absent
            for got, sent in zip(found, [new[1], new[0]]):
                assert got.timestamp > 0
                assert (got.user_data_128, got.user_data_64, got.user_data_32, got.ledger, got.code,
                        got.flags) == (sent.user_data_128, sent.user_data_64, sent.user_data_32,
                                       sent.ledger, sent.code, sent.flags)
                assert (got.debits_pending, got.debits_posted, got.credits_pending,
                        got.credits_posted) == (0, 0, 0, 0)
            # Same again: exists; different fields: named by the first differing field.
            assert await c.create_accounts(new) == [CreateResult(0, R.EXISTS),
                                                    CreateResult(1, R.EXISTS)]
            changed = Account(id=new[1].id, ledger=ledger, code=11, user_data_64=5)
            assert await c.create_accounts([changed]) == [
                CreateResult(0, R.EXISTS_WITH_DIFFERENT_USER_DATA_64)
            ]
            invalid = [Account(id=0, ledger=ledger, code=1), Account(id=ids(), ledger=0, code=1),
                       Account(id=ids(), ledger=ledger, code=0),
                       Account(id=ids(), ledger=ledger, code=1, flags=0x100),
                       Account(id=ids(), ledger=ledger, code=1, timestamp=5)]
            assert await c.create_accounts(invalid) == [
                CreateResult(0, R.ID_MUST_NOT_BE_ZERO), CreateResult(1, R.LEDGER_MUST_NOT_BE_ZERO),
                CreateResult(2, R.CODE_MUST_NOT_BE_ZERO), CreateResult(3, R.FLAGS_UNKNOWN),
                CreateResult(4, R.TIMESTAMP_MUST_BE_ZERO),
            ]
        finally:
            await c.close()

    run(scenario())


def test_transfers_single_and_two_phase(connect, ids, ledger):
    async def scenario():
        c = await connect()
        try:
            a, b = accounts(ids, ledger, 2)
            assert await c.create_accounts([a, b]) == []
            single = transfer(ids, a.id, b.id, 100, ledger, user_data_64=42)
            pending = transfer(ids, a.id, b.id, 50, ledger, flags=TransferFlags.PENDING,
                               timeout=3600)
            pending2 = transfer(ids, a.id, b.id, 30, ledger, flags=TransferFlags.PENDING)
            assert await c.create_transfers([single, pending, pending2]) == []
            # A post may leave accounts, ledger and code zero: they come from the pending.
            post = Transfer(id=ids(), pending_id=pending.id, amount=20,
                            flags=TransferFlags.POST_PENDING_TRANSFER)
            void = Transfer(id=ids(), pending_id=pending2.id,
                            flags=TransferFlags.VOID_PENDING_TRANSFER)
            assert await c.create_transfers([post, void]) == []
            again = Transfer(id=ids(), pending_id=pending.id,
                             flags=TransferFlags.VOID_PENDING_TRANSFER)
            assert await c.create_transfers([again]) == [
                CreateResult(0, R.PENDING_TRANSFER_ALREADY_POSTED)
            ]
            got_a, got_b = await c.lookup_accounts([a.id, b.id])
            assert (got_a.debits_pending, got_a.debits_posted) == (0, 120)
            assert (got_b.credits_pending, got_b.credits_posted) == (0, 120)
            assert (got_a.credits_posted, got_b.debits_posted) == (0, 0)

            looked = await c.lookup_transfers([post.id, ids(), single.id])
            assert [t.id for t in looked] == [post.id, single.id]
            assert looked[0].amount == 20 and looked[0].debit_account_id == a.id
            assert looked[1].user_data_64 == 42 and looked[1].timestamp > 0

            # get_account_transfers: all four applied transfers, oldest first, then paging.
            both = await c.get_account_transfers(AccountFilter(account_id=a.id))
            assert [t.id for t in both] == [single.id, pending.id, pending2.id, post.id, void.id]
            newest = await c.get_account_transfers(
                AccountFilter(account_id=a.id, limit=2, flags=BOTH | FilterFlags.REVERSED))
            assert [t.id for t in newest] == [void.id, post.id]
            page = await c.get_account_transfers(AccountFilter(account_id=a.id, limit=2))
            page2 = await c.get_account_transfers(
                AccountFilter(account_id=a.id, limit=2, timestamp_min=page[-1].timestamp + 1))
            assert [t.id for t in page + page2] == [single.id, pending.id, pending2.id, post.id]
            credits_only = await c.get_account_transfers(
                AccountFilter(account_id=a.id, flags=FilterFlags.CREDITS))
            assert credits_only == []
        finally:
            await c.close()

    run(scenario())


def test_linked_chains(connect, ids, ledger):
    async def scenario():
        c = await connect()
        try:
            a, b = accounts(ids, ledger, 2)
            assert await c.create_accounts([a, b]) == []
            L = TransferFlags.LINKED
            chain = [transfer(ids, a.id, b.id, 1, ledger, flags=L),
                     transfer(ids, a.id, ids(), 1, ledger, flags=L),  # no such account
                     transfer(ids, a.id, b.id, 1, ledger)]
            assert await c.create_transfers(chain) == [
                CreateResult(0, R.LINKED_EVENT_FAILED),
                CreateResult(1, R.CREDIT_ACCOUNT_NOT_FOUND),
                CreateResult(2, R.LINKED_EVENT_FAILED),
            ]
            open_chain = [transfer(ids, a.id, b.id, 1, ledger, flags=L) for _ in range(2)]
            assert await c.create_transfers(open_chain) == [
                CreateResult(0, R.LINKED_EVENT_FAILED),
                CreateResult(1, R.LINKED_EVENT_CHAIN_OPEN),
            ]
            good = [transfer(ids, a.id, b.id, 1, ledger, flags=L),
                    transfer(ids, a.id, b.id, 1, ledger)]
            assert await c.create_transfers(good) == []
            (got_a,) = await c.lookup_accounts([a.id])
            assert got_a.debits_posted == 2
        finally:
            await c.close()

    run(scenario())


def test_account_limits(connect, ids, ledger):
    async def scenario():
        c = await connect()
        try:
            wallet = Account(id=ids(), ledger=ledger, code=1,
                             flags=AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS)
            plain, other = accounts(ids, ledger, 2)
            assert await c.create_accounts([wallet, plain, other]) == []
            over = transfer(ids, wallet.id, other.id, 10, ledger)
            assert await c.create_transfers([over]) == [CreateResult(0, R.EXCEEDS_CREDITS)]
            results = await c.set_account_limits([
                AccountLimit(account_id=wallet.id, limit=25),
                AccountLimit(account_id=plain.id, limit=5),
                AccountLimit(account_id=ids(), limit=5),
            ])
            assert results == [CreateResult(1, R.ACCOUNT_HAS_NO_BALANCE_LIMIT_FLAG),
                               CreateResult(2, R.ACCOUNT_NOT_FOUND)]
            limits = await c.lookup_account_limits([wallet.id, ids()])
            assert [(x.account_id, x.limit) for x in limits] == [(wallet.id, 25)]
            assert limits[0].timestamp > 0
            assert await c.create_transfers([transfer(ids, wallet.id, other.id, 25, ledger)]) == []
            assert await c.create_transfers([transfer(ids, wallet.id, other.id, 1, ledger)]) == [
                CreateResult(0, R.EXCEEDS_CREDITS)
            ]
            assert await c.set_account_limits([AccountLimit(account_id=wallet.id, limit=10)]) == [
                CreateResult(0, R.LIMIT_BELOW_CURRENT_BALANCE)
            ]
        finally:
            await c.close()

    run(scenario())


def test_account_balances(connect, ids, ledger):
    async def scenario():
        c = await connect()
        try:
            a = Account(id=ids(), ledger=ledger, code=1, flags=AccountFlags.HISTORY)
            (b,) = accounts(ids, ledger, 1)
            assert await c.create_accounts([a, b]) == []
            t1 = transfer(ids, a.id, b.id, 5, ledger)
            t2 = transfer(ids, b.id, a.id, 3, ledger)
            t3 = transfer(ids, a.id, b.id, 7, ledger, flags=TransferFlags.PENDING)
            for t in (t1, t2, t3):
                assert await c.create_transfers([t]) == []
            rows = await c.get_account_balances(AccountFilter(account_id=a.id))
            assert [(r.debits_pending, r.debits_posted, r.credits_pending, r.credits_posted)
                    for r in rows] == [(0, 5, 0, 0), (0, 5, 0, 3), (7, 5, 0, 3)]
            transfers = await c.lookup_transfers([t1.id, t2.id, t3.id])
            assert [r.timestamp for r in rows] == [t.timestamp for t in transfers]
            newest = await c.get_account_balances(
                AccountFilter(account_id=a.id, limit=1, flags=BOTH | FilterFlags.REVERSED))
            assert newest == rows[-1:]
        finally:
            await c.close()

    run(scenario())


def test_change_events_and_status(connect, ids, ledger):
    async def scenario():
        c = await connect()
        try:
            before = await c.status()
            assert len(before.state_hash_hex) == 32 and before.uptime_ns > 0
            assert before.connections >= 1
            wallet = Account(id=ids(), ledger=ledger, code=1,
                             flags=AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS)
            (other,) = accounts(ids, ledger, 1)
            assert await c.create_accounts([wallet, other]) == []
            assert await c.set_account_limits([AccountLimit(account_id=wallet.id, limit=100)]) == []
            single = transfer(ids, wallet.id, other.id, 10, ledger)
            pend = transfer(ids, wallet.id, other.id, 20, ledger, flags=TransferFlags.PENDING)
            pend2 = transfer(ids, wallet.id, other.id, 30, ledger, flags=TransferFlags.PENDING)
            assert await c.create_transfers([single, pend, pend2]) == []
            post = Transfer(id=ids(), pending_id=pend.id, flags=TransferFlags.POST_PENDING_TRANSFER)
            void = Transfer(id=ids(), pending_id=pend2.id,
                            flags=TransferFlags.VOID_PENDING_TRANSFER)
            assert await c.create_transfers([post, void]) == []
            after = await c.status()
            assert after.sequence > before.sequence
            assert after.accounts >= before.accounts + 2

            mine = {wallet.id, other.id}
            seen = []
            seq, index = before.sequence + 1, 0
            for _ in range(10_000):  # bounded: other tests may be writing too
                page = await c.change_events(seq, 2048, index)
                assert len(page.events) <= 2048
                for e in page.events:
                    if e.debit_account.id in mine:
                        seen.append(e)
                if not page.events:
                    break
                assert (page.next_sequence, page.next_index) > (seq, index)
                seq, index = page.next_sequence, page.next_index
                if page.next_sequence > after.sequence:
                    break
            kinds = [e.kind for e in seen]
            assert kinds == [
                ChangeEventKind.ACCOUNT_CREATED, ChangeEventKind.ACCOUNT_CREATED,
                ChangeEventKind.LIMIT_SET,
                ChangeEventKind.TRANSFER_SINGLE_PHASE, ChangeEventKind.TRANSFER_PENDING,
                ChangeEventKind.TRANSFER_PENDING,
                ChangeEventKind.TRANSFER_POSTED, ChangeEventKind.TRANSFER_VOIDED,
            ]
            limit_set = seen[2]
            assert (limit_set.limit.account_id, limit_set.limit.limit) == (wallet.id, 100)
            posted = seen[6]
            assert posted.transfer.id == post.id and posted.transfer.amount == 20
            assert posted.debit_account.debits_posted == 30  # 10 single + 20 posted
            assert posted.credit_account.credits_posted == 30
            voided = seen[7]
            assert voided.debit_account.debits_pending == 0
            positions = [(e.sequence, e.index) for e in seen]
            assert positions == sorted(positions) and len(set(positions)) == len(positions)
        finally:
            await c.close()

    run(scenario())


def test_wrong_token_is_auth_failed(connect, token):
    async def scenario():
        with pytest.raises(StatusError) as info:
            await connect(tok=(token or "") + "-wrong")
        assert info.value.status == StatusCode.AUTH_FAILED
        assert info.value.name == "auth_failed"

    run(scenario())


@pytest.mark.parametrize(
    "bad_filter",
    [
        dict(flags=0),  # neither debits nor credits
        dict(flags=FilterFlags.DEBITS | 0x10),  # unknown bit
        dict(limit=0),
        dict(timestamp_min=10, timestamp_max=5),
        dict(account_id=0),
    ],
)
def test_invalid_filter_is_invalid_body(connect, ids, bad_filter):
    async def scenario():
        c = await connect()
        try:
            fields = dict(account_id=ids(), flags=FilterFlags.DEBITS, limit=10) | bad_filter
            for query in (c.get_account_transfers, c.get_account_balances):
                with pytest.raises(StatusError) as info:
                    await query(AccountFilter(**fields))
                assert info.value.status == StatusCode.INVALID_BODY
            # The connection stays usable after a refused request.
            assert (await c.status()).sequence >= 0
        finally:
            await c.close()

    run(scenario())


def test_invalid_change_events_request(connect):
    async def scenario():
        c = await connect()
        try:
            for limit in (0, 2049):
                with pytest.raises(StatusError) as info:
                    await c.change_events(0, limit)
                assert info.value.status == StatusCode.INVALID_BODY
        finally:
            await c.close()

    run(scenario())


def test_client_side_limits(connect, ids, ledger):
    async def scenario():
        c = await connect()
        try:
            with pytest.raises(StatusError) as info:
                await c.create_transfers([Transfer(id=i) for i in ids.many(8191)])
            assert info.value.status == StatusCode.TOO_MANY_EVENTS
            with pytest.raises(StatusError) as info:
                await c.create_accounts([])
            assert info.value.status == StatusCode.EMPTY_BATCH
            with pytest.raises(StatusError) as info:
                await c.lookup_accounts([])
            assert info.value.status == StatusCode.EMPTY_BATCH
            with pytest.raises(ValueError, match=r"accounts\[0\]"):
                await c.create_accounts([Account(id=-1, ledger=ledger, code=1)])
            # A full batch of 8190 is fine.
            full = accounts(ids, ledger, 8190)
            assert await c.create_accounts(full) == []
            assert len(await c.lookup_accounts([a.id for a in full])) == 8190
        finally:
            await c.close()

    run(scenario())


def test_retry_semantics_exists_and_id_already_failed(connect, ids, ledger):
    async def scenario():
        c = await connect()
        try:
            a, b = accounts(ids, ledger, 2)
            assert await c.create_accounts([a, b]) == []
            t = transfer(ids, a.id, b.id, 9, ledger)
            assert await c.create_transfers([t]) == []
            # Re-sending the same transfer: exists, and nothing applied twice.
            assert await c.create_transfers([t]) == [CreateResult(0, R.EXISTS)]
            (got,) = await c.lookup_accounts([a.id])
            assert got.debits_posted == 9
            # A failure that could change later is remembered: the retry never flips it.
            late_account = ids()
            early = transfer(ids, a.id, late_account, 1, ledger)
            assert await c.create_transfers([early]) == [
                CreateResult(0, R.CREDIT_ACCOUNT_NOT_FOUND)
            ]
            assert await c.create_accounts([Account(id=late_account, ledger=ledger, code=1)]) == []
            assert await c.create_transfers([early]) == [CreateResult(0, R.ID_ALREADY_FAILED)]
            # A pure validation failure is not remembered: the corrected event may reuse the id.
            zero = transfer(ids, a.id, b.id, 0, ledger)
            assert await c.create_transfers([zero]) == [CreateResult(0, R.AMOUNT_MUST_NOT_BE_ZERO)]
            zero.amount = 1
            assert await c.create_transfers([zero]) == []
        finally:
            await c.close()

    run(scenario())


def test_lost_reply_is_retried_and_answers_exists(connect, addr, ids, ledger):
    """The connection breaks after the daemon applied a request but before its reply arrived:
    the client reconnects and re-sends the same events, which answer ``exists``."""
    from proxy import LossyProxy

    proxy = LossyProxy(addr)

    async def scenario():
        c = await connect(address=proxy.address, timeout=30.0)
        try:
            a, b = accounts(ids, ledger, 2)
            assert await c.create_accounts([a, b]) == []
            batch = [transfer(ids, a.id, b.id, 1, ledger) for _ in range(5)]
            proxy.cut_after_next_request()
            results = await c.create_transfers(batch)
            assert proxy.cut.is_set()
            assert results == [CreateResult(i, R.EXISTS) for i in range(5)]
            stats = c.stats()
            assert stats["reconnects"] == 1 and stats["retries"] >= 1
            (got,) = await c.lookup_accounts([a.id])
            assert got.debits_posted == 5  # applied exactly once
        finally:
            await c.close()

    try:
        run(scenario())
    finally:
        proxy.close()


def test_timeouts_and_close(connect):
    async def scenario():
        c = await connect()
        with pytest.raises(TimeoutError):
            await c.status(timeout=0)
        assert (await c.status(timeout=10)).sequence >= 0
        await c.close()
        with pytest.raises(ClosedError):
            await c.status()

    run(scenario())
