"""A scripted stand-in for ledgerd, for tests of behaviour a real daemon cannot be made to
show on demand (busy, unknown statuses, lost replies, held replies).

It speaks the real framing (ledgerd._wire) on a loopback port. Each accepted connection gets a
thread: it answers the hello (``hello_status``, ``requests_in_flight_max``), then hands every
request to ``handler(daemon, conn_no, header, body)``, which returns what to do:

- ``("ok", body)`` / ``("status", n)``: one reply, with that body / that status;
- ``("raw", frame)``: send these bytes as they are (a corrupt reply, a stray request id);
- ``"close"``: close the connection without replying;
- ``None``: reply ``ok`` with an empty body (the default for creates: all succeeded).

Every request is recorded in ``daemon.requests`` as ``(conn_no, operation, body)``.
"""

from __future__ import annotations

import socket
import threading

from ledgerd import _wire
from ledgerd.codes import HEADER_SIZE, Operation, StatusCode


def _recv_exactly(sock: socket.socket, n: int) -> bytes | None:
    parts = []
    while n:
        try:
            chunk = sock.recv(n)
        except OSError:
            return None
        if not chunk:
            return None
        parts.append(chunk)
        n -= len(chunk)
    return b"".join(parts)


class FakeDaemon:
    def __init__(self, handler=None, *, requests_in_flight_max: int = 64, hello_status=0,
                 events_per_request_max: int = 8190) -> None:
        self.handler = handler or (lambda daemon, conn_no, header, body: None)
        self.requests_in_flight_max = requests_in_flight_max
        self.hello_status = hello_status
        self.events_per_request_max = events_per_request_max
        self.requests: list[tuple[int, int, bytes]] = []
        self.connections = 0
        self.lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.address = "127.0.0.1:%d" % self._listener.getsockname()[1]
        self._stopped = threading.Event()
        self._socks: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                sock, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self.lock:
                conn_no = self.connections
                self.connections += 1
                self._socks.append(sock)
            threading.Thread(target=self._serve, args=(sock, conn_no), daemon=True).start()

    def reply(self, sock: socket.socket, header: _wire.Header, status: int,
              body: bytes = b"") -> None:
        sock.sendall(_wire.encode_frame(header.operation, header.request_id, body, status))

    def _serve(self, sock: socket.socket, conn_no: int) -> None:
        try:
            head = _recv_exactly(sock, HEADER_SIZE)
            if head is None:
                return
            header = _wire.decode_header(head)
            _recv_exactly(sock, header.body_length)
            hello_status = (self.hello_status(conn_no) if callable(self.hello_status)
                            else self.hello_status)
            if hello_status:
                self.reply(sock, header, hello_status)
                return
            hello = _wire.HELLO_REPLY.pack(1, self.requests_in_flight_max, 1 << 20,
                                          self.events_per_request_max, 2048)
            self.reply(sock, header, 0, hello)
            while not self._stopped.is_set():
                head = _recv_exactly(sock, HEADER_SIZE)
                if head is None:
                    return
                header = _wire.decode_header(head)
                body = _recv_exactly(sock, header.body_length) if header.body_length else b""
                if body is None:
                    return
                frame = bytearray(head) + body
                assert _wire.checksum_ok(frame, header), "the client sent a bad checksum"
                with self.lock:
                    self.requests.append((conn_no, header.operation, body))
                action = self.handler(self, conn_no, header, body)
                if action == "close":
                    return
                if action is None:
                    action = ("ok", b"")
                kind, value = action
                if kind == "ok":
                    self.reply(sock, header, 0, value)
                elif kind == "raw":
                    sock.sendall(value)
                else:
                    self.reply(sock, header, value)
                    if value in (StatusCode.SHUTTING_DOWN,):
                        return
        except OSError:
            pass  # the client went away (test over, or a cut it provoked)
        finally:
            sock.close()

    def requests_of(self, operation: Operation) -> list[bytes]:
        with self.lock:
            return [body for _, op, body in self.requests if op == operation]

    def close(self) -> None:
        self._stopped.set()
        self._listener.close()
        with self.lock:
            for s in self._socks:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        self._thread.join(2)

    def __enter__(self) -> "FakeDaemon":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
