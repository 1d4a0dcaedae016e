"""The asyncio client: any number of tasks share one connection (asyncio streams).

Calls queue themselves and await a future with their deadline. A pump task builds requests
from the queue (coalescing the creates that tasks queued since it last ran, see
:mod:`ledgerd._batch`), writes them, and reconnects when the connection breaks; a reader task
per connection routes replies. Everything runs on the event loop the client was connected
from.
"""

from __future__ import annotations

import asyncio
import time
from typing import Sequence

from . import _ops, _wire
from ._batch import BACKOFF_MAX, BACKOFF_MIN, Answer, Call, Engine
from ._conn import hello_frame, hello_reply, parse_address, token_bytes, tune_socket
from .codes import CHANGE_EVENTS_PER_REPLY_MAX, HEADER_SIZE, Operation, StatusCode
from .errors import (
    ClosedError,
    ConnectError,
    LedgerdError,
    ProtocolError,
    StatusError,
    TimeoutError,
)
from .records import (
    Account,
    AccountBalance,
    AccountFilter,
    AccountLimit,
    ChangeEvents,
    CreateResult,
    HelloReply,
    Status,
    Transfer,
)

__all__ = ["AsyncClient"]


def _timeout_error(operation: int) -> TimeoutError:
    return TimeoutError(
        f"{Operation(operation).wire_name}: the deadline passed; the outcome is unknown "
        "(calling again with the same ids is safe: an applied event answers exists)"
    )


class _Connection:
    __slots__ = ("reader", "writer", "task")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.task: asyncio.Task | None = None


class AsyncClient:
    """A connection to ledgerd shared by any number of asyncio tasks.

    Create it with ``client = await AsyncClient.connect(address, token)`` (or
    ``async with await AsyncClient.connect(...) as client``); the methods are those of
    :class:`ledgerd.Client`, as coroutines.
    """

    def __init__(
        self,
        address: str | tuple[str, int],
        token: str | bytes | None = None,
        *,
        timeout: float = 30.0,
        connect_timeout: float = 5.0,
        requests_in_flight_max: int | None = None,
    ) -> None:
        """Prepares a client without connecting: use :meth:`connect` instead."""
        self._host, self._port = parse_address(address)
        self._token = token_bytes(token)
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._engine = Engine(requests_in_flight_max)
        self._closed = False
        self._conn: _Connection | None = None
        self._pump_task: asyncio.Task | None = None
        self._work: asyncio.Event | None = None
        self._reconnect_at = 0.0
        self._backoff = BACKOFF_MIN
        self.reconnects = 0

    @classmethod
    async def connect(
        cls,
        address: str | tuple[str, int],
        token: str | bytes | None = None,
        *,
        timeout: float = 30.0,
        connect_timeout: float = 5.0,
        requests_in_flight_max: int | None = None,
    ) -> "AsyncClient":
        """Connects and says hello.

        Raises :class:`ledgerd.StatusError` if the daemon refuses the hello (``auth_failed``),
        :class:`ledgerd.ConnectError` if it cannot be reached.
        """
        self = cls(
            address,
            token,
            timeout=timeout,
            connect_timeout=connect_timeout,
            requests_in_flight_max=requests_in_flight_max,
        )
        self._work = asyncio.Event()
        conn, hello = await self._open()
        self._install(conn, hello)
        self._pump_task = asyncio.get_running_loop().create_task(self._pump())
        return self

    # ---- public API ----

    @property
    def hello(self) -> HelloReply:
        """The daemon's version and limits, from the hello of the current connection."""
        return self._engine.hello

    def stats(self) -> dict[str, int]:
        """Counters: requests/calls/events written (retries included), retries, reconnects."""
        stats = self._engine.stats()
        stats["reconnects"] = self.reconnects
        return stats

    async def create_accounts(
        self, accounts: Sequence[Account], *, timeout: float | None = None
    ) -> list[CreateResult]:
        """Creates accounts. Returns the failed ones only (empty: all created), with indexes
        into ``accounts``. Concurrent calls share requests; a call is never split."""
        return await self._call(_ops.create_accounts(accounts, self._engine.events_max), timeout)

    async def create_transfers(
        self, transfers: Sequence[Transfer], *, timeout: float | None = None
    ) -> list[CreateResult]:
        """Creates transfers. Returns the failed ones only (empty: all applied), with indexes
        into ``transfers``. Concurrent calls share requests; a call is never split."""
        return await self._call(_ops.create_transfers(transfers, self._engine.events_max), timeout)

    async def set_account_limits(
        self, limits: Sequence[AccountLimit], *, timeout: float | None = None
    ) -> list[CreateResult]:
        """Sets account limits (one request per call). Returns the failed ones only."""
        return await self._call(_ops.set_account_limits(limits, self._engine.events_max), timeout)

    async def lookup_accounts(
        self, ids: Sequence[int], *, timeout: float | None = None
    ) -> list[Account]:
        """The accounts that exist among ``ids``, in request order."""
        return await self._call(_ops.lookup_accounts(ids, self._engine.events_max), timeout)

    async def lookup_transfers(
        self, ids: Sequence[int], *, timeout: float | None = None
    ) -> list[Transfer]:
        """The transfers that exist among ``ids``, in request order."""
        return await self._call(_ops.lookup_transfers(ids, self._engine.events_max), timeout)

    async def lookup_account_limits(
        self, account_ids: Sequence[int], *, timeout: float | None = None
    ) -> list[AccountLimit]:
        """The limits of the accounts among ``account_ids`` that exist, in request order."""
        request = _ops.lookup_account_limits(account_ids, self._engine.events_max)
        return await self._call(request, timeout)

    async def get_account_transfers(
        self, account_filter: AccountFilter, *, timeout: float | None = None
    ) -> list[Transfer]:
        """An account's transfers matching ``account_filter``."""
        return await self._call(_ops.get_account_transfers(account_filter), timeout)

    async def get_account_balances(
        self, account_filter: AccountFilter, *, timeout: float | None = None
    ) -> list[AccountBalance]:
        """A ``history`` account's balance rows matching ``account_filter``."""
        return await self._call(_ops.get_account_balances(account_filter), timeout)

    async def change_events(
        self,
        from_sequence: int = 0,
        limit: int = CHANGE_EVENTS_PER_REPLY_MAX,
        from_index: int = 0,
        *,
        timeout: float | None = None,
    ) -> ChangeEvents:
        """Change events from the position ``(from_sequence, from_index)``; continue from the
        reply's ``(next_sequence, next_index)``."""
        return await self._call(_ops.change_events(from_sequence, limit, from_index), timeout)

    async def status(self, *, timeout: float | None = None) -> Status:
        """The daemon's counters and state hash."""
        return await self._call(_ops.status(), timeout)

    async def close(self) -> None:
        """Fails every call still waiting with :class:`ledgerd.ClosedError` and closes the
        connection."""
        if self._closed:
            return
        self._closed = True
        if self._work is not None:
            self._work.set()
        if self._pump_task is not None:
            try:
                await asyncio.wait_for(self._pump_task, self._connect_timeout + 5.0)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                self._pump_task.cancel()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ---- callers ----

    async def _call(self, request: _ops.Request, timeout: float | None):
        if self._closed:
            raise ClosedError("the client is closed")
        if self._work is None:
            raise LedgerdError("not connected: create the client with await AsyncClient.connect()")
        deadline = time.monotonic() + (self._timeout if timeout is None else timeout)
        future = asyncio.get_running_loop().create_future()
        call = Call(
            request.operation, request.frame, request.events, request.open_chain, deadline, future
        )
        self._engine.queue.append(call)
        self._work.set()
        if not request.events or request.events * 2 > self._engine.events_max:
            # Nothing could join this call (not a create, or it fills most of a request): write
            # it now. Left to the pump task, it would wait behind every task that is ready to
            # run, and tasks that build big batches keep the loop busy for a while each.
            self._send_ready()
        try:
            outcome = await asyncio.wait_for(future, max(0.0, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            call.abandoned = True
            if not future.done() or future.cancelled():
                raise _timeout_error(request.operation) from None
            outcome = future.result()
        except asyncio.CancelledError:
            call.abandoned = True
            raise
        return request.decode(outcome)

    @staticmethod
    def _deliver(answers: list[Answer]) -> None:
        for call, outcome in answers:
            future = call.waiter
            if call.abandoned or future.done():
                continue
            call.done = True
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

    # ---- connections ----

    async def _open(self) -> tuple[_Connection, HelloReply]:
        """Connects and says hello (within ``connect_timeout``)."""
        writer = None

        async def handshake() -> tuple[_Connection, HelloReply]:
            nonlocal writer
            reader, writer = await asyncio.open_connection(self._host, self._port)
            sock = writer.get_extra_info("socket")
            if sock is not None:
                tune_socket(sock)
            writer.write(hello_frame(self._token))
            await writer.drain()
            head = await reader.readexactly(HEADER_SIZE)
            header = _wire.decode_header(head)
            body = await reader.readexactly(header.body_length) if header.body_length else b""
            return _Connection(reader, writer), hello_reply(head, body)

        try:
            return await asyncio.wait_for(handshake(), self._connect_timeout)
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError) as e:
            if writer is not None:
                writer.close()
            raise ConnectError(f"cannot connect to {self._host}:{self._port}: {e!r}") from e
        except BaseException:
            if writer is not None:
                writer.close()
            raise

    def _install(self, conn: _Connection, hello: HelloReply) -> None:
        self._engine.hello = hello
        self._conn = conn
        conn.task = asyncio.get_running_loop().create_task(self._read_loop(conn))

    def _broken(self, conn: _Connection) -> None:
        """Drops ``conn`` (if still current); what was in flight goes back to the queue."""
        if self._conn is not conn:
            return
        self._conn = None
        conn.writer.transport.abort()
        if conn.task is not None and conn.task is not asyncio.current_task():
            conn.task.cancel()
        self._engine.on_broken()
        self._reconnect_at = time.monotonic()
        self._work.set()

    def _send_ready(self) -> bool:
        """Writes every request the window allows, without waiting (the transport buffers what
        the socket does not take yet; the window bounds it). True if anything was written."""
        conn = self._conn
        if conn is None or conn.writer.transport.is_closing():
            return False
        engine = self._engine
        now = time.monotonic()
        wrote = False
        while True:
            request = engine.take(now)
            if request is None:
                return wrote
            conn.writer.write(request[1])
            wrote = True

    async def _read_loop(self, conn: _Connection) -> None:
        engine = self._engine
        reader = conn.reader
        try:
            while True:
                head = await reader.readexactly(HEADER_SIZE)
                header = _wire.decode_header(head)
                frame = bytearray(head)
                if header.body_length:
                    frame += await reader.readexactly(header.body_length)
                if not _wire.checksum_ok(frame, header):
                    raise ProtocolError("reply checksum mismatch")
                answers, closes = engine.on_reply(
                    header, memoryview(frame)[HEADER_SIZE:], time.monotonic()
                )
                self._deliver(answers)
                self._work.set()  # the window has room again (or calls were re-queued)
                if closes:
                    break
        except (asyncio.IncompleteReadError, OSError, ProtocolError):
            pass  # broken or untrustworthy: reconnect and re-send
        self._broken(conn)

    async def _pump(self) -> None:
        try:
            await self._pump_loop()
        except BaseException as e:  # a bug (or cancellation): answer every caller, accept no more
            self._closed = True
            failure = e
            self._deliver(self._engine.fail_all(
                lambda: ClosedError(f"the client's I/O task stopped: {failure!r}")))
            if not isinstance(e, asyncio.CancelledError):
                raise

    async def _pump_loop(self) -> None:
        engine = self._engine
        work = self._work
        try:
            while not self._closed:
                work.clear()
                now = time.monotonic()
                wait: float | None = None
                conn = self._conn
                if conn is None:
                    if engine.has_live_calls(now):
                        if now >= self._reconnect_at:
                            await self._reconnect()
                            continue
                        wait = self._reconnect_at - now
                else:
                    if self._send_ready():
                        try:
                            await conn.writer.drain()  # backpressure: let the socket catch up
                        except (OSError, RuntimeError):
                            self._broken(conn)
                        continue  # more calls may have queued meanwhile
                    if engine.queue and now < engine.paused_until:
                        wait = engine.paused_until - now
                if wait is None:
                    await work.wait()
                else:
                    try:
                        await asyncio.wait_for(work.wait(), wait)
                    except asyncio.TimeoutError:
                        pass
        finally:
            conn = self._conn
            self._conn = None
            if conn is not None:
                conn.writer.transport.abort()
                if conn.task is not None:
                    conn.task.cancel()
            self._deliver(engine.fail_all(lambda: ClosedError("the client is closed")))

    async def _reconnect(self) -> None:
        engine = self._engine
        try:
            conn, hello = await self._open()
        except StatusError as e:
            if isinstance(e.status, StatusCode) and e.status.retryable:
                self._delay_reconnect()
            else:
                # Refused for good (auth_failed ...): waiting cannot help.
                status, leader = e.status, e.leader
                self._deliver(
                    engine.fail_queued(lambda: StatusError(status, Operation.HELLO, leader=leader))
                )
        except (OSError, LedgerdError):
            self._delay_reconnect()
        else:
            if self._closed:
                conn.writer.transport.abort()
                return
            self._install(conn, hello)
            self._backoff = BACKOFF_MIN
            self.reconnects += 1

    def _delay_reconnect(self) -> None:
        self._reconnect_at = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, BACKOFF_MAX)
