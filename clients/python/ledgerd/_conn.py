"""Addresses, tokens and the hello handshake (blocking form; the asyncio client has its own)."""

from __future__ import annotations

import socket
import time

from . import _wire
from .codes import HEADER_SIZE, HELLO_TOKEN_MAX, Operation, StatusCode
from .errors import ConnectError, ProtocolError
from .records import HelloReply

HELLO_REQUEST_ID = 0


def parse_address(address: str | tuple[str, int]) -> tuple[str, int]:
    """``"host:port"``, ``"[v6]:port"`` or ``(host, port)`` -> ``(host, port)``."""
    if isinstance(address, tuple):
        host, port = address
        return str(host), int(port)
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"address {address!r} is not host:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host or "127.0.0.1", int(port)


def token_bytes(token: str | bytes | None) -> bytes:
    """The hello token as bytes (``None`` and ``""`` mean no token)."""
    if token is None:
        return b""
    raw = token.encode() if isinstance(token, str) else bytes(token)
    if len(raw) > HELLO_TOKEN_MAX:
        raise ValueError(f"the token is {len(raw)} bytes, at most {HELLO_TOKEN_MAX}")
    return raw


# Room in the kernel for whole request frames: a 1 MiB frame then leaves the process in one
# send() and the kernel feeds it to the daemon while Python goes on (the default buffer starts
# at 16 KiB and grows slowly, so a frame would otherwise need many wake-ups of the I/O thread
# or, for asyncio, many turns of a loop that tasks may keep busy).
SEND_BUFFER = 4 << 20


def _kernel_allows(size: int) -> bool:
    """Whether SO_SNDBUF may be set to ``size`` without capping it lower than the kernel's own
    autotuning could grow (setting it turns autotuning off)."""
    try:
        with open("/proc/sys/net/core/wmem_max") as f:
            return int(f.read()) >= size
    except (OSError, ValueError):
        return False


_SET_SEND_BUFFER = _kernel_allows(SEND_BUFFER)


def tune_socket(sock: socket.socket) -> None:
    """TCP_NODELAY (requests are whole frames: never hold them back to coalesce) and, where the
    kernel allows it, a send buffer that holds whole frames."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if _SET_SEND_BUFFER:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        except OSError:
            pass  # best effort


def hello_frame(token: bytes) -> bytearray:
    return _wire.encode_frame(Operation.HELLO, HELLO_REQUEST_ID, _wire.encode_hello(token))


def hello_reply(head: bytes, body: bytes) -> HelloReply:
    """Checks the hello's reply frame; raises :class:`StatusError` for a refusal."""
    header = _wire.decode_header(head)
    frame = bytearray(head) + body
    if not _wire.checksum_ok(frame, header):
        raise ProtocolError("hello reply: bad checksum")
    if header.status != StatusCode.OK:
        raise _wire.status_error(header.status, Operation.HELLO, body)
    if header.request_id != HELLO_REQUEST_ID or header.operation != Operation.HELLO:
        raise ProtocolError("hello reply: wrong request id or operation")
    return _wire.decode_hello_reply(body)


def _recv_exactly(sock: socket.socket, n: int, deadline: float) -> bytes:
    parts = []
    while n:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout("hello: no reply in time")
        sock.settimeout(remaining)
        chunk = sock.recv(n)
        if not chunk:
            raise ConnectionResetError("the daemon closed the connection during the hello")
        parts.append(chunk)
        n -= len(chunk)
    return b"".join(parts)


def open_blocking(
    host: str, port: int, token: bytes, timeout: float
) -> tuple[socket.socket, HelloReply]:
    """Connects and says hello; returns a blocking socket (the caller sets its mode).

    Raises :class:`StatusError` if the daemon refuses the hello (``auth_failed`` ...),
    :class:`ConnectError` if it cannot be reached or does not answer in time.
    """
    deadline = time.monotonic() + timeout
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as e:
        raise ConnectError(f"cannot connect to {host}:{port}: {e}") from e
    try:
        tune_socket(sock)
        sock.sendall(hello_frame(token))
        head = _recv_exactly(sock, HEADER_SIZE, deadline)
        header = _wire.decode_header(head)
        body = _recv_exactly(sock, header.body_length, deadline) if header.body_length else b""
        hello = hello_reply(head, body)
    except OSError as e:
        sock.close()
        raise ConnectError(f"hello to {host}:{port} failed: {e}") from e
    except BaseException:
        sock.close()
        raise
    return sock, hello
