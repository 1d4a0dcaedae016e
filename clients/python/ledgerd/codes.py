"""Numbers of the ledgerd protocol (docs/protocol.md): limits, operations, statuses, result
codes, change-event kinds, replica roles and flags.

Every number here is stable: the daemon only ever appends new ones. A number this module does
not know (a newer daemon) is therefore not an error by itself; `to_status`, `to_result` and
`to_kind` return the plain ``int`` for it instead of raising.
"""

from __future__ import annotations

from enum import IntEnum, IntFlag

__all__ = [
    "PROTOCOL_VERSION",
    "HEADER_SIZE",
    "FRAME_BODY_MAX",
    "EVENTS_PER_REQUEST_MAX",
    "CHANGE_EVENTS_PER_REPLY_MAX",
    "HELLO_TOKEN_MAX",
    "REQUESTS_IN_FLIGHT_MAX_DEFAULT",
    "LIMITS",
    "Operation",
    "StatusCode",
    "ResultCode",
    "ChangeEventKind",
    "ReplicaRole",
    "LEADER_UNKNOWN",
    "AccountFlags",
    "TransferFlags",
    "FilterFlags",
    "to_status",
    "to_result",
    "to_kind",
    "status_name",
]

#: Protocol version spoken by this client (header offset 4 and the hello).
PROTOCOL_VERSION = 1
#: Bytes of every frame header.
HEADER_SIZE = 64
#: Largest body of any frame, either direction (1 MiB).
FRAME_BODY_MAX = 1_048_576
#: Most records (accounts, transfers, limits, ids) in one request.
EVENTS_PER_REQUEST_MAX = 8190
#: Most change events in one reply.
CHANGE_EVENTS_PER_REPLY_MAX = 2048
#: Longest auth token, in bytes.
HELLO_TOKEN_MAX = 256
#: The daemon's default for requests in flight per connection (the hello reply tells the real
#: value of a given daemon).
REQUESTS_IN_FLIGHT_MAX_DEFAULT = 64

#: The limits by their protocol names (the golden-frame file's ``limits`` table).
LIMITS = {
    "frame_body_max": FRAME_BODY_MAX,
    "events_per_request_max": EVENTS_PER_REQUEST_MAX,
    "change_events_per_reply_max": CHANGE_EVENTS_PER_REPLY_MAX,
    "hello_token_max": HELLO_TOKEN_MAX,
    "requests_in_flight_max_default": REQUESTS_IN_FLIGHT_MAX_DEFAULT,
}


class Operation(IntEnum):
    """Request operations (protocol.md §4); a reply echoes its request's."""

    HELLO = 1
    CREATE_ACCOUNTS = 2
    CREATE_TRANSFERS = 3
    SET_ACCOUNT_LIMITS = 4
    LOOKUP_ACCOUNTS = 5
    LOOKUP_TRANSFERS = 6
    LOOKUP_ACCOUNT_LIMITS = 7
    GET_ACCOUNT_TRANSFERS = 8
    GET_ACCOUNT_BALANCES = 9
    CHANGE_EVENTS = 10
    STATUS = 11

    @property
    def wire_name(self) -> str:
        """The name docs/protocol.md uses (``create_transfers``)."""
        return self.name.lower()


class StatusCode(IntEnum):
    """Whether a *request* was executed (protocol.md §5).

    Not to be confused with :class:`ledgerd.Status`, the daemon's counters that the ``status``
    operation returns.
    """

    OK = 0
    BAD_MAGIC = 1
    UNSUPPORTED_VERSION = 2
    BAD_CHECKSUM = 3
    UNKNOWN_OPERATION = 4
    BODY_TOO_LARGE = 5
    BODY_LENGTH_INVALID = 6
    TOO_MANY_EVENTS = 7
    EMPTY_BATCH = 8
    HELLO_REQUIRED = 9
    AUTH_FAILED = 10
    BUSY = 11
    SHUTTING_DOWN = 12
    JOURNAL_UNAVAILABLE = 13
    INTERNAL_ERROR = 14
    INVALID_HEADER = 15
    INVALID_BODY = 16
    HELLO_REPEATED = 17
    PERMISSION_DENIED = 18
    AUTH_THROTTLED = 19
    LEDGER_FULL = 20
    #: This replica of a cluster does not lead (or stopped leading before the request's entry
    #: committed): retry at the leader, which the reply's 8-byte body names
    #: (:attr:`ledgerd.StatusError.leader`). A write refused before it was decided was not
    #: applied; one accepted before a leadership change may have been: retrying it with the
    #: same ids is safe either way. The connection stays open.
    NOT_LEADER = 21

    @property
    def wire_name(self) -> str:
        """The name docs/protocol.md uses (``auth_failed``)."""
        return self.name.lower()

    @property
    def closes_connection(self) -> bool:
        """The daemon closes the connection after sending this status."""
        return self in _CLOSING

    @property
    def retryable(self) -> bool:
        """Nothing was applied and the same request may simply be sent again later.

        ``shutting_down`` is retryable too, on a new connection (the daemon closes this one).
        """
        return self in _RETRYABLE


_CLOSING = frozenset(
    {
        StatusCode.BAD_MAGIC,
        StatusCode.UNSUPPORTED_VERSION,
        StatusCode.BAD_CHECKSUM,
        StatusCode.BODY_TOO_LARGE,
        StatusCode.HELLO_REQUIRED,
        StatusCode.AUTH_FAILED,
        StatusCode.SHUTTING_DOWN,
        StatusCode.INVALID_HEADER,
        StatusCode.HELLO_REPEATED,
        StatusCode.AUTH_THROTTLED,
    }
)
_RETRYABLE = frozenset(
    {StatusCode.BUSY, StatusCode.JOURNAL_UNAVAILABLE, StatusCode.SHUTTING_DOWN}
)


class ResultCode(IntEnum):
    """Outcome of one event of a create request (protocol.md §7). A create reply lists only
    the events that did not succeed, so ``OK`` never appears in one."""

    OK = 0
    LINKED_EVENT_FAILED = 1
    LINKED_EVENT_CHAIN_OPEN = 2
    TIMESTAMP_MUST_BE_ZERO = 3
    RESERVED_FIELD = 4
    FLAGS_UNKNOWN = 5
    ID_MUST_NOT_BE_ZERO = 6
    ID_MUST_NOT_BE_INT_MAX = 7
    FLAGS_ARE_MUTUALLY_EXCLUSIVE = 8
    LEDGER_MUST_NOT_BE_ZERO = 9
    CODE_MUST_NOT_BE_ZERO = 10
    DEBITS_PENDING_MUST_BE_ZERO = 11
    DEBITS_POSTED_MUST_BE_ZERO = 12
    CREDITS_PENDING_MUST_BE_ZERO = 13
    CREDITS_POSTED_MUST_BE_ZERO = 14
    #: An event with this id exists with identical fields: nothing changed. On a retried
    #: create this means the event is applied (possibly by the attempt whose reply was lost).
    EXISTS = 15
    EXISTS_WITH_DIFFERENT_FLAGS = 16
    EXISTS_WITH_DIFFERENT_USER_DATA_128 = 17
    EXISTS_WITH_DIFFERENT_USER_DATA_64 = 18
    EXISTS_WITH_DIFFERENT_USER_DATA_32 = 19
    EXISTS_WITH_DIFFERENT_LEDGER = 20
    EXISTS_WITH_DIFFERENT_CODE = 21
    EXISTS_WITH_DIFFERENT_DEBIT_ACCOUNT_ID = 22
    EXISTS_WITH_DIFFERENT_CREDIT_ACCOUNT_ID = 23
    EXISTS_WITH_DIFFERENT_AMOUNT = 24
    EXISTS_WITH_DIFFERENT_PENDING_ID = 25
    EXISTS_WITH_DIFFERENT_TIMEOUT = 26
    #: This id failed earlier for a reason that could have changed since (account not found,
    #: limit exceeded, pending transfer not found); it stays failed, so that a retry never
    #: flips an outcome.
    ID_ALREADY_FAILED = 27
    DEBIT_ACCOUNT_ID_MUST_NOT_BE_ZERO = 28
    DEBIT_ACCOUNT_ID_MUST_NOT_BE_INT_MAX = 29
    CREDIT_ACCOUNT_ID_MUST_NOT_BE_ZERO = 30
    CREDIT_ACCOUNT_ID_MUST_NOT_BE_INT_MAX = 31
    ACCOUNTS_MUST_BE_DIFFERENT = 32
    PENDING_ID_MUST_BE_ZERO = 33
    PENDING_ID_MUST_NOT_BE_ZERO = 34
    PENDING_ID_MUST_NOT_BE_INT_MAX = 35
    PENDING_ID_MUST_BE_DIFFERENT = 36
    TIMEOUT_RESERVED_FOR_PENDING_TRANSFER = 37
    AMOUNT_MUST_NOT_BE_ZERO = 38
    DEBIT_ACCOUNT_NOT_FOUND = 39
    CREDIT_ACCOUNT_NOT_FOUND = 40
    ACCOUNTS_MUST_HAVE_THE_SAME_LEDGER = 41
    TRANSFER_MUST_HAVE_THE_SAME_LEDGER_AS_ACCOUNTS = 42
    PENDING_TRANSFER_NOT_FOUND = 43
    PENDING_TRANSFER_NOT_PENDING = 44
    PENDING_TRANSFER_HAS_DIFFERENT_DEBIT_ACCOUNT_ID = 45
    PENDING_TRANSFER_HAS_DIFFERENT_CREDIT_ACCOUNT_ID = 46
    PENDING_TRANSFER_HAS_DIFFERENT_LEDGER = 47
    PENDING_TRANSFER_HAS_DIFFERENT_CODE = 48
    EXCEEDS_PENDING_TRANSFER_AMOUNT = 49
    PENDING_TRANSFER_HAS_DIFFERENT_AMOUNT = 50
    PENDING_TRANSFER_ALREADY_POSTED = 51
    PENDING_TRANSFER_ALREADY_VOIDED = 52
    PENDING_TRANSFER_EXPIRED = 53
    OVERFLOWS_DEBITS_PENDING = 54
    OVERFLOWS_CREDITS_PENDING = 55
    OVERFLOWS_DEBITS_POSTED = 56
    OVERFLOWS_CREDITS_POSTED = 57
    OVERFLOWS_DEBITS = 58
    OVERFLOWS_CREDITS = 59
    OVERFLOWS_TIMEOUT = 60
    EXCEEDS_CREDITS = 61
    EXCEEDS_DEBITS = 62
    ACCOUNT_NOT_FOUND = 63
    ACCOUNT_HAS_NO_BALANCE_LIMIT_FLAG = 64
    LIMIT_BELOW_CURRENT_BALANCE = 65
    ACCOUNT_ID_MUST_NOT_BE_ZERO = 66

    @property
    def wire_name(self) -> str:
        """The name docs/protocol.md uses (``exists``)."""
        return self.name.lower()


class ChangeEventKind(IntEnum):
    """What a change event records (protocol.md §6.12)."""

    ACCOUNT_CREATED = 1
    TRANSFER_SINGLE_PHASE = 2
    TRANSFER_PENDING = 3
    TRANSFER_POSTED = 4
    TRANSFER_VOIDED = 5
    TRANSFER_EXPIRED = 6
    LIMIT_SET = 7

    @property
    def wire_name(self) -> str:
        """The name docs/protocol.md uses (``transfer_posted``)."""
        return self.name.lower()


class ReplicaRole(IntEnum):
    """What a daemon is in its cluster (``Status.role``, protocol.md §6.13). A status reply
    with any other value is a :class:`~ledgerd.ProtocolError`."""

    STANDALONE = 0
    FOLLOWER = 1
    CANDIDATE = 2
    LEADER = 3


#: The ``leader`` of a ``status`` or ``not_leader`` reply that names no replica (no leader
#: known, or a standalone daemon).
LEADER_UNKNOWN = 0xFFFF_FFFF


class AccountFlags(IntFlag):
    """``Account.flags`` bits (protocol.md §6.3)."""

    NONE = 0
    LINKED = 0x1
    DEBITS_MUST_NOT_EXCEED_CREDITS = 0x2
    CREDITS_MUST_NOT_EXCEED_DEBITS = 0x4
    HISTORY = 0x8


class TransferFlags(IntFlag):
    """``Transfer.flags`` bits (protocol.md §6.4)."""

    NONE = 0
    LINKED = 0x1
    PENDING = 0x2
    POST_PENDING_TRANSFER = 0x4
    VOID_PENDING_TRANSFER = 0x8
    BALANCING_DEBIT = 0x10
    BALANCING_CREDIT = 0x20


class FilterFlags(IntFlag):
    """``AccountFilter.flags`` bits (protocol.md §6.8)."""

    NONE = 0
    DEBITS = 0x1
    CREDITS = 0x2
    REVERSED = 0x4


# Lookup tables: converting with a dict is several times faster than calling the enum, which
# matters when a reply carries thousands of results.
_STATUSES = {int(s): s for s in StatusCode}
_RESULTS = {int(r): r for r in ResultCode}
_KINDS = {int(k): k for k in ChangeEventKind}


def to_status(number: int) -> StatusCode | int:
    """The :class:`StatusCode` for ``number``, or ``number`` itself if it is unknown."""
    return _STATUSES.get(number, number)


def to_result(number: int) -> ResultCode | int:
    """The :class:`ResultCode` for ``number``, or ``number`` itself if it is unknown."""
    return _RESULTS.get(number, number)


def to_kind(number: int) -> ChangeEventKind | int:
    """The :class:`ChangeEventKind` for ``number``, or ``number`` itself if it is unknown."""
    return _KINDS.get(number, number)


def status_name(status: int) -> str:
    """The protocol name of a status (``auth_failed``), or ``status_<n>`` when unknown."""
    known = _STATUSES.get(int(status))
    return known.wire_name if known is not None else f"status_{int(status)}"
