"""Exceptions of the ledgerd client.

Per-event outcomes of a create are not exceptions: they are the
:class:`~ledgerd.records.CreateResult` list a create returns. Exceptions say that a whole
call failed.
"""

from __future__ import annotations

import builtins

from .codes import LEADER_UNKNOWN, Operation, StatusCode, status_name, to_status

__all__ = [
    "LedgerdError",
    "StatusError",
    "ProtocolError",
    "ConnectError",
    "TimeoutError",
    "ClosedError",
]


class LedgerdError(Exception):
    """Base class of every error this client raises."""


class StatusError(LedgerdError):
    """The daemon refused the whole request with a status other than ``ok`` (or the client
    refused it before sending, with the status the daemon would have answered, e.g.
    ``too_many_events``).

    ``status`` is a :class:`~ledgerd.codes.StatusCode`, or a plain ``int`` for a status newer
    than this client; ``name`` is its protocol name (``status_<n>`` when unknown).

    ``leader`` is, for ``not_leader``, the position in the cluster's address list of the
    replica the daemon believes leads; ``None`` when it named none, and for other statuses.
    """

    def __init__(self, status: StatusCode | int, operation: int | None = None, detail: str = "",
                 *, leader: int | None = None):
        self.status: StatusCode | int = to_status(int(status))
        self.operation = operation
        self.name = status_name(self.status)
        self.detail = detail
        self.leader = None if leader == LEADER_UNKNOWN else leader
        where = ""
        if operation is not None:
            try:
                where = f" to {Operation(operation).wire_name}"
            except ValueError:
                where = f" to operation {operation}"
        message = f"request{where} refused: {self.name} ({int(self.status)})"
        if detail:
            message += f": {detail}"
        if self.status == StatusCode.NOT_LEADER:
            if self.leader is None:
                message += ": leader unknown"
            else:
                message += f": leader is replica {self.leader}"
        super().__init__(message)


class ProtocolError(LedgerdError):
    """The daemon's bytes break the protocol (bad header, checksum, body shape, a reply to no
    request). The client closes that connection."""


class ConnectError(LedgerdError, builtins.ConnectionError):
    """No connection could be established (and said hello) to the daemon."""


class TimeoutError(LedgerdError, builtins.TimeoutError):
    """The call's deadline passed. For a create its outcome is unknown: calling again with the
    same events (same ids) is safe, and tells the outcome (``exists`` = applied)."""


class ClosedError(LedgerdError):
    """The client was closed."""
