"""The thread-safe client: any number of threads share one connection, served by one
background I/O thread.

Callers encode their records in their own thread, queue the call and wait on a lock with
their deadline. The I/O thread builds requests from the queue (coalescing concurrent creates,
see :mod:`ledgerd._batch`), writes them with non-blocking sends, reads replies, hands each
caller its own results, and reconnects when the connection breaks, re-sending what was in
flight. One thread does both directions so that a large write can never block while the
daemon waits for us to read its replies.
"""

from __future__ import annotations

import selectors
import socket
import threading
import time
from collections import deque
from typing import Sequence

from . import _ops, _wire
from ._batch import BACKOFF_MAX, BACKOFF_MIN, Answer, Call, Engine
from ._conn import open_blocking, parse_address, token_bytes
from .codes import CHANGE_EVENTS_PER_REPLY_MAX, HEADER_SIZE, Operation, StatusCode
from .errors import (
    ClosedError,
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

__all__ = ["Client"]

_RECV_SIZE = 1 << 20
# Upper bound on one wait of the I/O thread, so that it notices anything it was not woken for.
_IDLE_WAIT = 1.0


def _timeout_error(operation: int) -> TimeoutError:
    return TimeoutError(
        f"{Operation(operation).wire_name}: the deadline passed; the outcome is unknown "
        "(calling again with the same ids is safe: an applied event answers exists)"
    )


class _Connection:
    """A connected socket with its pending output and partial input."""

    __slots__ = ("sock", "out", "rbuf", "writing")

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.out: deque[memoryview] = deque()
        self.rbuf = bytearray()
        self.writing = False  # registered for EVENT_WRITE


class Client:
    """A connection to ledgerd shared by any number of threads.

    >>> client = Client("127.0.0.1:7400", token="secret")
    >>> client.create_accounts([Account(id=1, ledger=1, code=1)])
    []

    Every call takes ``timeout`` (seconds; default: the client's ``timeout``) covering queueing,
    reconnections and retries, and raises :class:`ledgerd.TimeoutError` when it passes.

    Args:
        address: ``"host:port"`` or ``(host, port)``.
        token: the daemon's auth token, if it has one (``str`` or ``bytes``, at most 256 bytes).
        timeout: default deadline of every call, in seconds.
        connect_timeout: limit on one connection attempt (TCP connect and hello).
        requests_in_flight_max: cap on requests in flight (default: the daemon's hello value).

    Raises (from the constructor): :class:`ledgerd.StatusError` if the daemon refuses the hello
    (``auth_failed``), :class:`ledgerd.ConnectError` if it cannot be reached.
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
        self._host, self._port = parse_address(address)
        self._token = token_bytes(token)
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._engine = Engine(requests_in_flight_max)
        self._closed = False
        self._sleeping = False
        self.reconnects = 0
        sock, hello = open_blocking(self._host, self._port, self._token, connect_timeout)
        self._engine.hello = hello
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._thread = threading.Thread(
            target=self._run,
            args=(sock,),
            name=f"ledgerd-io-{self._host}:{self._port}",
            daemon=True,
        )
        self._thread.start()

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

    def create_accounts(
        self, accounts: Sequence[Account], *, timeout: float | None = None
    ) -> list[CreateResult]:
        """Creates accounts. Returns the failed ones only (empty: all created), with indexes
        into ``accounts``. Concurrent calls share requests; a call is never split."""
        return self._call(_ops.create_accounts(accounts, self._engine.events_max), timeout)

    def create_transfers(
        self, transfers: Sequence[Transfer], *, timeout: float | None = None
    ) -> list[CreateResult]:
        """Creates transfers. Returns the failed ones only (empty: all applied), with indexes
        into ``transfers``. Concurrent calls share requests; a call is never split."""
        return self._call(_ops.create_transfers(transfers, self._engine.events_max), timeout)

    def set_account_limits(
        self, limits: Sequence[AccountLimit], *, timeout: float | None = None
    ) -> list[CreateResult]:
        """Sets account limits (one request per call). Returns the failed ones only."""
        return self._call(_ops.set_account_limits(limits, self._engine.events_max), timeout)

    def lookup_accounts(self, ids: Sequence[int], *, timeout: float | None = None) -> list[Account]:
        """The accounts that exist among ``ids``, in request order."""
        return self._call(_ops.lookup_accounts(ids, self._engine.events_max), timeout)

    def lookup_transfers(
        self, ids: Sequence[int], *, timeout: float | None = None
    ) -> list[Transfer]:
        """The transfers that exist among ``ids``, in request order."""
        return self._call(_ops.lookup_transfers(ids, self._engine.events_max), timeout)

    def lookup_account_limits(
        self, account_ids: Sequence[int], *, timeout: float | None = None
    ) -> list[AccountLimit]:
        """The limits of the accounts among ``account_ids`` that exist, in request order."""
        return self._call(_ops.lookup_account_limits(account_ids, self._engine.events_max), timeout)

    def get_account_transfers(
        self, account_filter: AccountFilter, *, timeout: float | None = None
    ) -> list[Transfer]:
        """An account's transfers matching ``account_filter``."""
        return self._call(_ops.get_account_transfers(account_filter), timeout)

    def get_account_balances(
        self, account_filter: AccountFilter, *, timeout: float | None = None
    ) -> list[AccountBalance]:
        """A ``history`` account's balance rows matching ``account_filter``."""
        return self._call(_ops.get_account_balances(account_filter), timeout)

    def change_events(
        self,
        from_sequence: int = 0,
        limit: int = CHANGE_EVENTS_PER_REPLY_MAX,
        from_index: int = 0,
        *,
        timeout: float | None = None,
    ) -> ChangeEvents:
        """Change events from the position ``(from_sequence, from_index)``; continue from the
        reply's ``(next_sequence, next_index)``."""
        return self._call(_ops.change_events(from_sequence, limit, from_index), timeout)

    def status(self, *, timeout: float | None = None) -> Status:
        """The daemon's counters and state hash."""
        return self._call(_ops.status(), timeout)

    def close(self) -> None:
        """Fails every call still waiting with :class:`ledgerd.ClosedError`, closes the
        connection and stops the I/O thread."""
        if self._closed:
            return
        self._closed = True
        self._wake()
        if self._thread is not threading.current_thread():
            self._thread.join(self._connect_timeout + 5.0)
        self._wake_w.close()
        self._wake_r.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- callers ----

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # already full of wake-ups (or closed): the I/O thread will look anyway

    def _call(self, request: _ops.Request, timeout: float | None):
        if self._closed:
            raise ClosedError("the client is closed")
        deadline = time.monotonic() + (self._timeout if timeout is None else timeout)
        waiter = threading.Lock()
        waiter.acquire()
        call = Call(
            request.operation, request.frame, request.events, request.open_chain, deadline, waiter
        )
        self._engine.queue.append(call)
        if self._sleeping:
            self._sleeping = False
            self._wake()
        if self._closed:
            # close() raced with this call: the I/O thread may already have failed the queue.
            call.abandoned = True
            if not call.done:
                raise ClosedError("the client is closed")
        wait = min(max(0.0, deadline - time.monotonic()), threading.TIMEOUT_MAX)
        if not waiter.acquire(timeout=wait):
            call.abandoned = True
            if not call.done:  # the answer may have arrived in between: then use it
                raise _timeout_error(request.operation)
        outcome = call.outcome
        if isinstance(outcome, BaseException):
            raise outcome
        return request.decode(outcome)

    # ---- the I/O thread ----

    def _deliver(self, answers: list[Answer]) -> None:
        for call, outcome in answers:
            if call.abandoned or call.done:
                continue
            call.outcome = outcome
            call.done = True
            call.waiter.release()

    def _run(self, sock: socket.socket) -> None:
        try:
            self._loop(sock)
        except BaseException as e:  # a bug: answer every caller rather than leave them hanging
            failure = f"the client's I/O thread failed: {e!r}"
            self._deliver(self._engine.fail_all(lambda: LedgerdError(failure)))
            self._closed = True
            raise

    def _loop(self, sock: socket.socket) -> None:
        engine = self._engine
        selector = selectors.DefaultSelector()
        selector.register(self._wake_r, selectors.EVENT_READ)
        conn: _Connection | None = _Connection(sock)
        selector.register(conn.sock, selectors.EVENT_READ)
        reconnect_at = 0.0
        backoff = BACKOFF_MIN
        try:
            while not self._closed:
                now = time.monotonic()
                if conn is None:
                    if engine.has_live_calls(now) and now >= reconnect_at:
                        try:
                            sock, hello = open_blocking(
                                self._host, self._port, self._token, self._connect_timeout
                            )
                        except StatusError as e:
                            if isinstance(e.status, StatusCode) and e.status.retryable:
                                reconnect_at = time.monotonic() + backoff
                                backoff = min(backoff * 2, BACKOFF_MAX)
                            else:
                                # Refused for good (auth_failed ...): waiting cannot help.
                                status, leader = e.status, e.leader
                                self._deliver(
                                    engine.fail_queued(
                                        lambda: StatusError(status, Operation.HELLO, leader=leader)
                                    )
                                )
                        except (OSError, LedgerdError):
                            reconnect_at = time.monotonic() + backoff
                            backoff = min(backoff * 2, BACKOFF_MAX)
                        else:
                            engine.hello = hello
                            conn = _Connection(sock)
                            selector.register(conn.sock, selectors.EVENT_READ)
                            backoff = BACKOFF_MIN
                            self.reconnects += 1
                        continue
                else:
                    # Build and write requests while the window allows.
                    write_failed = False
                    while True:
                        request = engine.take(now)
                        if request is None:
                            break
                        conn.out.append(memoryview(request[1]))
                        if not self._flush(conn):
                            write_failed = True
                            break
                    if write_failed:
                        conn = self._broken(selector, conn)
                        reconnect_at = time.monotonic()
                        continue
                    want = selectors.EVENT_READ | (selectors.EVENT_WRITE if conn.out else 0)
                    if conn.writing != bool(conn.out):
                        selector.modify(conn.sock, want)
                        conn.writing = bool(conn.out)

                # Wait for the socket, a wake-up, or the next timer.
                now = time.monotonic()
                if conn is None:
                    wait = max(0.0, reconnect_at - now) if engine.queue else _IDLE_WAIT
                elif engine.queue and now < engine.paused_until:
                    wait = engine.paused_until - now
                else:
                    wait = _IDLE_WAIT
                self._sleeping = True
                if engine.queue and (
                    (conn is not None and engine.can_send(now))
                    or (conn is None and now >= reconnect_at)
                ):
                    wait = 0.0  # a call arrived before the flag was set
                events = selector.select(min(wait, _IDLE_WAIT))
                self._sleeping = False
                for key, mask in events:
                    if key.fileobj is self._wake_r:
                        try:
                            while self._wake_r.recv(4096):
                                pass
                        except (BlockingIOError, OSError):
                            pass
                        continue
                    if conn is None or key.fileobj is not conn.sock:
                        continue
                    ok = True
                    if mask & selectors.EVENT_WRITE:
                        ok = self._flush(conn)
                    if ok and mask & selectors.EVENT_READ:
                        ok = self._read(conn)
                    if not ok:
                        conn = self._broken(selector, conn)
                        reconnect_at = time.monotonic()
        finally:
            if conn is not None:
                conn.sock.close()
            selector.close()
            self._deliver(engine.fail_all(lambda: ClosedError("the client is closed")))

    def _broken(self, selector: selectors.BaseSelector, conn: _Connection) -> None:
        """Drops the connection; what was in flight goes back to the front of the queue."""
        try:
            selector.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        conn.sock.close()
        self._engine.on_broken()
        return None

    def _flush(self, conn: _Connection) -> bool:
        """Writes pending output until the socket would block. False: the connection broke."""
        out = conn.out
        sock = conn.sock
        try:
            while out:
                view = out[0]
                sent = sock.send(view)
                if sent < len(view):
                    out[0] = view[sent:]
                    return True
                out.popleft()
        except BlockingIOError:
            return True
        except OSError:
            return False
        return True

    def _read(self, conn: _Connection) -> bool:
        """Reads what the socket has and routes every complete reply. False: broken."""
        try:
            data = conn.sock.recv(_RECV_SIZE)
        except BlockingIOError:
            return True
        except OSError:
            return False
        if not data:
            return False
        rbuf = conn.rbuf
        rbuf += data
        engine = self._engine
        pos = 0
        size = len(rbuf)
        broken = False
        now = time.monotonic()
        try:
            while size - pos >= HEADER_SIZE:
                header = _wire.decode_header(rbuf[pos : pos + HEADER_SIZE])
                end = pos + HEADER_SIZE + header.body_length
                if end > size:
                    break
                frame = rbuf[pos:end]
                pos = end
                if not _wire.checksum_ok(frame, header):
                    raise ProtocolError("reply checksum mismatch")
                answers, closes = engine.on_reply(header, memoryview(frame)[HEADER_SIZE:], now)
                self._deliver(answers)
                if closes:
                    broken = True
                    break
        except ProtocolError:
            # The stream can no longer be trusted: close it and re-send what was in flight.
            return False
        del rbuf[:pos]
        return not broken
