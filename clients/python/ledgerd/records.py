"""Records of the ledgerd protocol as dataclasses, and u128 helpers.

Field names are those of docs/protocol.md §6; u128 and u64 fields are plain Python ints.
Reserved fields are not represented: the client always sends them as zero. ``flags`` fields
are ints: pass :class:`~ledgerd.codes.AccountFlags` / :class:`~ledgerd.codes.TransferFlags` /
:class:`~ledgerd.codes.FilterFlags` values (they are ints too) and test bits with ``&``.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from .codes import (
    EVENTS_PER_REQUEST_MAX,
    ChangeEventKind,
    FilterFlags,
    ReplicaRole,
    ResultCode,
)

__all__ = [
    "U128_MAX",
    "U64_MAX",
    "u128_split",
    "u128_join",
    "random_id",
    "Account",
    "Transfer",
    "AccountLimit",
    "AccountFilter",
    "AccountBalance",
    "ChangeEvent",
    "ChangeEvents",
    "Status",
    "HelloReply",
    "CreateResult",
]

U128_MAX = (1 << 128) - 1
U64_MAX = (1 << 64) - 1


def u128_split(value: int) -> tuple[int, int]:
    """``(low, high)`` u64 halves of a u128, as the wire stores them (low half first)."""
    if not 0 <= value <= U128_MAX:
        raise ValueError(f"{value} is not a u128")
    return value & U64_MAX, value >> 64


def u128_join(low: int, high: int) -> int:
    """The u128 whose u64 halves are ``low`` and ``high``."""
    return (high << 64) | low


def random_id() -> int:
    """A random u128 id, never 0 nor 2**128 - 1 (the two values the ledger refuses)."""
    while True:
        value = secrets.randbits(128)
        if 0 < value < U128_MAX:
            return value


@dataclass(slots=True)
class Account:
    """An account (128 bytes on the wire). Balances and ``timestamp`` are set by the ledger:
    leave them 0 when creating."""

    id: int = 0
    debits_pending: int = 0
    debits_posted: int = 0
    credits_pending: int = 0
    credits_posted: int = 0
    user_data_128: int = 0
    user_data_64: int = 0
    user_data_32: int = 0
    ledger: int = 0
    code: int = 0
    flags: int = 0
    timestamp: int = 0


@dataclass(slots=True)
class Transfer:
    """A transfer (128 bytes on the wire). ``timestamp`` is set by the ledger."""

    id: int = 0
    debit_account_id: int = 0
    credit_account_id: int = 0
    amount: int = 0
    pending_id: int = 0
    user_data_128: int = 0
    user_data_64: int = 0
    user_data_32: int = 0
    timeout: int = 0
    ledger: int = 0
    code: int = 0
    flags: int = 0
    timestamp: int = 0


@dataclass(slots=True)
class AccountLimit:
    """How far past zero an account's balance may go (64 bytes on the wire); the account
    needs one of the two balance-limit flags."""

    account_id: int = 0
    limit: int = 0
    timestamp: int = 0


@dataclass(slots=True)
class AccountFilter:
    """Which of an account's transfers (or balance rows) a query returns.

    By default: both debits and credits, oldest first, as many as one reply may carry.
    Paging: repeat with ``timestamp_min`` (``timestamp_max`` when ``REVERSED``) one past the
    last timestamp received.
    """

    account_id: int = 0
    timestamp_min: int = 0
    timestamp_max: int = 0
    limit: int = EVENTS_PER_REQUEST_MAX
    flags: int = FilterFlags.DEBITS | FilterFlags.CREDITS


@dataclass(slots=True)
class AccountBalance:
    """An account's balances right after one of its transfers (``history`` accounts)."""

    debits_pending: int = 0
    debits_posted: int = 0
    credits_pending: int = 0
    credits_posted: int = 0
    timestamp: int = 0


@dataclass(slots=True)
class ChangeEvent:
    """One change the ledger made, with the complete post-state of what it touched.

    ``kind`` is a :class:`~ledgerd.codes.ChangeEventKind` (or a plain int for a kind newer
    than this client). Sub-records that do not apply to the kind are zero-valued.
    """

    sequence: int = 0
    index: int = 0
    kind: ChangeEventKind | int = 0
    timestamp: int = 0
    transfer: Transfer = field(default_factory=Transfer)
    debit_account: Account = field(default_factory=Account)
    credit_account: Account = field(default_factory=Account)
    limit: AccountLimit = field(default_factory=AccountLimit)


@dataclass(slots=True)
class ChangeEvents:
    """A page of change events and where the next request continues."""

    next_sequence: int = 0
    next_index: int = 0
    head_sequence: int = 0
    events: list[ChangeEvent] = field(default_factory=list)

    @property
    def caught_up(self) -> bool:
        """The follower has seen everything durable so far (ask again later)."""
        return self.next_sequence > self.head_sequence


@dataclass(slots=True)
class Status:
    """The daemon's counters and state hash (the ``status`` operation's reply), and its place
    in its cluster: ``role``, ``replica`` (its position in the cluster's address list),
    ``term`` and ``commit`` (of the replicated log), ``leader`` (the leader's position, or
    :data:`~ledgerd.codes.LEADER_UNKNOWN`). A standalone daemon has zeros there, and
    ``leader`` unknown.
    """

    sequence: int = 0
    snapshot_sequence: int = 0
    state_hash: int = 0
    accounts: int = 0
    transfers: int = 0
    pending_transfers: int = 0
    failed_ids: int = 0
    clock_ns: int = 0
    account_limits: int = 0
    uptime_ns: int = 0
    connections: int = 0
    role: ReplicaRole = ReplicaRole.STANDALONE
    replica: int = 0
    term: int = 0
    commit: int = 0
    leader: int = 0

    @property
    def state_hash_hex(self) -> str:
        """``state_hash`` as 32 lowercase hex digits, as the replay tool prints it."""
        return f"{self.state_hash:032x}"


@dataclass(slots=True)
class HelloReply:
    """The daemon's protocol version and limits, from the hello of the current connection."""

    version: int = 0
    requests_in_flight_max: int = 0
    frame_body_max: int = 0
    events_per_request_max: int = 0
    change_events_per_reply_max: int = 0


@dataclass(slots=True, frozen=True)
class CreateResult:
    """The outcome of one event of a create call that did not succeed.

    ``index`` is the position of the event in the caller's own list (not in the request the
    client built); ``result`` is a :class:`~ledgerd.codes.ResultCode` (or a plain int for a
    code newer than this client).
    """

    index: int
    result: ResultCode | int
