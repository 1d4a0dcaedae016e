"""Python client of ledgerd, the event-sourced ledger daemon.

Two clients speak docs/protocol.md over one TCP connection each:

- :class:`Client`: thread-safe, blocking calls, one background I/O thread;
- :class:`AsyncClient`: asyncio (``await AsyncClient.connect(...)``).

Both coalesce concurrent ``create_accounts`` / ``create_transfers`` calls into shared
requests, pipeline requests, and reconnect and re-send (same ids) when the connection breaks.
"""

from .aio import AsyncClient
from .client import Client
from .codes import (
    CHANGE_EVENTS_PER_REPLY_MAX,
    EVENTS_PER_REQUEST_MAX,
    FRAME_BODY_MAX,
    HEADER_SIZE,
    HELLO_TOKEN_MAX,
    LEADER_UNKNOWN,
    PROTOCOL_VERSION,
    AccountFlags,
    ChangeEventKind,
    FilterFlags,
    Operation,
    ReplicaRole,
    ResultCode,
    StatusCode,
    TransferFlags,
)
from .errors import (
    ClosedError,
    ConnectError,
    LedgerdError,
    ProtocolError,
    StatusError,
    TimeoutError,
)
from .records import (
    U128_MAX,
    Account,
    AccountBalance,
    AccountFilter,
    AccountLimit,
    ChangeEvent,
    ChangeEvents,
    CreateResult,
    HelloReply,
    Status,
    Transfer,
    random_id,
    u128_join,
    u128_split,
)

__version__ = "0.1.0"

__all__ = [
    "AsyncClient",
    "Client",
    "CHANGE_EVENTS_PER_REPLY_MAX",
    "EVENTS_PER_REQUEST_MAX",
    "FRAME_BODY_MAX",
    "HEADER_SIZE",
    "HELLO_TOKEN_MAX",
    "LEADER_UNKNOWN",
    "PROTOCOL_VERSION",
    "AccountFlags",
    "ChangeEventKind",
    "FilterFlags",
    "Operation",
    "ReplicaRole",
    "ResultCode",
    "StatusCode",
    "TransferFlags",
    "ClosedError",
    "ConnectError",
    "LedgerdError",
    "ProtocolError",
    "StatusError",
    "TimeoutError",
    "U128_MAX",
    "Account",
    "AccountBalance",
    "AccountFilter",
    "AccountLimit",
    "ChangeEvent",
    "ChangeEvents",
    "CreateResult",
    "HelloReply",
    "Status",
    "Transfer",
    "random_id",
    "u128_join",
    "u128_split",
]
