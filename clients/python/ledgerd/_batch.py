"""The batching engine shared by the thread client and the asyncio client.

It owns no socket and no thread: the I/O side (a background thread, or asyncio tasks) asks it
for the next request frame to send (:meth:`Engine.take`), hands it every reply
(:meth:`Engine.on_reply`) and tells it when the connection broke
(:meth:`Engine.on_broken`). It answers with ``(call, outcome)`` pairs, which the I/O side
delivers to the waiting callers its own way (a lock, a future).

Rules it enforces (docs/protocol.md and the client README):

- Concurrent ``create_accounts`` / ``create_transfers`` calls are coalesced into one request,
  in arrival order, up to the daemon's ``events_per_request_max`` events; a call is never
  split, and different operations never share a request.
- A call whose last event has ``linked`` set (an open chain, which the daemon fails as a
  whole) ends the request it is in. Joined with the next caller's events, the chain would run
  on into them: the two callers' events would succeed or fail together, and the chain that
  must fail could be closed, and applied, by someone else's event.
- Up to ``requests_in_flight_max`` requests in flight (the hello's value, capped by the
  client's option).
- A request answered ``busy`` or ``journal_unavailable`` is put back at the front of the queue
  and the engine pauses sending for a backoff; ``shutting_down`` does the same and the
  connection is treated as broken. When the connection breaks, every request in flight goes
  back to the front of the queue, in request order, with the same events: ids make the re-send
  safe.
"""

from __future__ import annotations

from collections import deque
from typing import Callable

from . import _wire
from .codes import (
    EVENTS_PER_REQUEST_MAX,
    FRAME_BODY_MAX,
    HEADER_SIZE,
    REQUESTS_IN_FLIGHT_MAX_DEFAULT,
    StatusCode,
    to_result,
    to_status,
)
from .errors import ProtocolError
from .records import CreateResult, HelloReply

#: First pause after ``busy`` / a failed reconnection, and the longest one.
BACKOFF_MIN = 0.005
BACKOFF_MAX = 0.5


class Call:
    """One caller's request: queued, in flight, or answered.

    ``frame`` is the request frame with room for the header (its first 64 bytes) followed by
    the body; when the call travels alone in a request, the header is written in place and the
    frame sent as it is.
    """

    __slots__ = (
        "operation",
        "frame",
        "events",
        "open_chain",
        "deadline",
        "abandoned",
        "done",
        "outcome",
        "waiter",
        "sends",
    )

    def __init__(
        self,
        operation: int,
        frame: bytearray,
        events: int,
        open_chain: bool,
        deadline: float,
        waiter: object = None,
    ) -> None:
        self.operation = operation
        self.frame = frame
        #: Events of a coalescable create; 0 for every other call (never coalesced).
        self.events = events
        #: The last event has ``linked``: nothing may follow this call in its request.
        self.open_chain = open_chain
        self.deadline = deadline
        #: Set by a caller that stopped waiting (deadline): not sent any more, not answered.
        self.abandoned = False
        self.done = False
        self.outcome: object = None
        self.waiter = waiter
        #: How many times the call was written to a connection (retries included).
        self.sends = 0


class _Flight:
    """A request in flight: its operation, the calls it carries in order, their events."""

    __slots__ = ("operation", "calls", "events")

    def __init__(self, operation: int, calls: list[Call], events: int) -> None:
        self.operation = operation
        self.calls = calls
        self.events = events


Answer = tuple[Call, object]  # (call, outcome): a result, a reply body, or an exception


class Engine:
    """Queue, request building, in-flight bookkeeping and reply routing; no I/O."""

    def __init__(self, requests_in_flight_cap: int | None = None) -> None:
        self.queue: deque[Call] = deque()
        self.in_flight: dict[int, _Flight] = {}
        self.next_request_id = 1
        self.hello = HelloReply(
            1, REQUESTS_IN_FLIGHT_MAX_DEFAULT, FRAME_BODY_MAX, EVENTS_PER_REQUEST_MAX, 2048
        )
        self.requests_in_flight_cap = requests_in_flight_cap
        #: Monotonic time before which nothing is sent (after ``busy``), and the next pause.
        self.paused_until = 0.0
        self.backoff = BACKOFF_MIN
        # Counters, for tests and the benchmark.
        self.requests_sent = 0
        self.events_sent = 0
        self.calls_sent = 0
        self.retries = 0

    # ---- limits ----

    @property
    def window(self) -> int:
        """Requests allowed in flight on the connection."""
        window = max(1, self.hello.requests_in_flight_max)
        if self.requests_in_flight_cap:
            window = min(window, self.requests_in_flight_cap)
        return window

    @property
    def events_max(self) -> int:
        """Events allowed in one request."""
        return max(1, min(self.hello.events_per_request_max, EVENTS_PER_REQUEST_MAX))

    def stats(self) -> dict[str, int]:
        """Counters: requests, calls and events written (retries included), retries."""
        return {
            "requests_sent": self.requests_sent,
            "calls_sent": self.calls_sent,
            "events_sent": self.events_sent,
            "retries": self.retries,
            "in_flight": len(self.in_flight),
            "queued": len(self.queue),
        }

    # ---- sending ----

    def has_live_calls(self, now: float) -> bool:
        """Whether a queued call still waits for an answer. Drops dead calls (abandoned, or
        past their deadline: sending them could only produce an outcome nobody reads) from
        the head of the queue; :meth:`take` skips those further back.

        The queue is only ever popped at the left here and in :meth:`take`, while callers
        append at the right from other threads: each deque operation is atomic, so no lock is
        needed and no call can be lost.
        """
        queue = self.queue
        while queue:
            head = queue[0]
            if not (head.abandoned or head.deadline <= now):
                return True
            queue.popleft()
        return False

    def can_send(self, now: float) -> bool:
        return bool(self.queue) and len(self.in_flight) < self.window and now >= self.paused_until

    def take(self, now: float) -> tuple[int, bytearray] | None:
        """The next request to send, as ``(request_id, frame)``, or None if nothing is
        sendable. The request is recorded as in flight."""
        if len(self.in_flight) >= self.window or now < self.paused_until:
            return None
        queue = self.queue
        first = None
        while queue:
            call = queue.popleft()
            if not (call.abandoned or call.deadline <= now):
                first = call
                break
        if first is None:
            return None
        calls = [first]
        events = first.events
        if events and not first.open_chain:
            operation = first.operation
            events_max = self.events_max
            while queue:
                nxt = queue[0]
                if nxt.abandoned or nxt.deadline <= now:
                    queue.popleft()
                    continue
                if nxt.operation != operation or not nxt.events or events + nxt.events > events_max:
                    break
                queue.popleft()
                calls.append(nxt)
                events += nxt.events
                if nxt.open_chain:
                    break  # an open chain ends the request
        request_id = self.next_request_id
        self.next_request_id += 1
        if len(calls) == 1:
            frame = first.frame
        else:
            size = HEADER_SIZE + sum(len(c.frame) - HEADER_SIZE for c in calls)
            frame = bytearray(size)
            off = HEADER_SIZE
            for c in calls:
                body = memoryview(c.frame)[HEADER_SIZE:]
                frame[off : off + len(body)] = body
                off += len(body)
        _wire.frame_finish(frame, first.operation, request_id)
        for c in calls:
            if c.sends:
                self.retries += 1
            c.sends += 1
        self.in_flight[request_id] = _Flight(first.operation, calls, events)
        self.requests_sent += 1
        self.calls_sent += len(calls)
        self.events_sent += events
        return request_id, frame

    # ---- receiving ----

    def on_reply(
        self, header: _wire.Header, body: memoryview | bytes, now: float
    ) -> tuple[list[Answer], bool]:
        """Routes one reply. Returns the answers to deliver, and whether the connection must
        be treated as broken (a closing status).

        Raises :class:`ProtocolError` for a reply to no request in flight, or a malformed ok
        (or ``not_leader``) body: the caller must then close the connection (see
        :meth:`on_broken`).
        """
        flight = self.in_flight.pop(header.request_id, None)
        if flight is None:
            raise ProtocolError(f"a reply to request {header.request_id}, which is not in flight")
        status = header.status
        if status == StatusCode.OK:
            if header.operation != flight.operation:
                self.in_flight[header.request_id] = flight  # re-sent after the reconnection
                raise ProtocolError(
                    f"reply to request {header.request_id}: operation {header.operation}, "
                    f"expected {flight.operation}"
                )
            self.backoff = BACKOFF_MIN
            if flight.events:
                try:
                    return self._split_results(flight, body), False
                except ProtocolError:
                    self.in_flight[header.request_id] = flight
                    raise
            # Not a create: one call, the whole body (decoded by the caller).
            return [(flight.calls[0], bytes(body))], False
        code = to_status(status)
        if code in (StatusCode.BUSY, StatusCode.JOURNAL_UNAVAILABLE, StatusCode.SHUTTING_DOWN):
            # Nothing was applied: same calls again, first in line, after a pause.
            self.queue.extendleft(reversed([c for c in flight.calls if not c.abandoned]))
            self.paused_until = now + self.backoff
            self.backoff = min(self.backoff * 2, BACKOFF_MAX)
            return [], code == StatusCode.SHUTTING_DOWN
        try:
            answers: list[Answer] = [
                (c, _wire.status_error(code, flight.operation, body)) for c in flight.calls
            ]
        except ProtocolError:
            self.in_flight[header.request_id] = flight  # a malformed not_leader body
            raise
        closes = isinstance(code, StatusCode) and code.closes_connection
        return answers, closes

    def _split_results(self, flight: _Flight, body: memoryview | bytes) -> list[Answer]:
        """Hands each call of a coalesced create its own failed events, re-indexed from 0."""
        pairs = _wire.decode_create_results(body, flight.events)
        answers: list[Answer] = []
        n = len(pairs)
        k = 0
        first = 0
        for call in flight.calls:
            end = first + call.events
            own = []
            while k < n and pairs[k][0] < end:
                index, result = pairs[k]
                own.append(CreateResult(index - first, to_result(result)))
                k += 1
            answers.append((call, own))
            first = end
        return answers

    def on_broken(self) -> None:
        """The connection is gone: every request in flight goes back to the front of the
        queue, oldest first, to be re-sent with the same events on the next connection."""
        for request_id in sorted(self.in_flight, reverse=True):
            flight = self.in_flight.pop(request_id)
            self.queue.extendleft(reversed([c for c in flight.calls if not c.abandoned]))

    def fail_all(self, error: Callable[[], BaseException]) -> list[Answer]:
        """Takes every in-flight and queued call out, each with a fresh ``error()``."""
        calls = []
        for request_id in sorted(self.in_flight):
            calls.extend(self.in_flight.pop(request_id).calls)
        return [(c, error()) for c in calls] + self.fail_queued(error)

    def fail_queued(self, error: Callable[[], BaseException]) -> list[Answer]:
        """Takes every queued call out, each with a fresh ``error()``."""
        answers: list[Answer] = []
        queue = self.queue
        while queue:  # popleft, never clear(): a caller may be appending concurrently
            answers.append((queue.popleft(), error()))
        return answers
