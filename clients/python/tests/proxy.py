"""A loopback TCP proxy in front of a real daemon that can lose a reply on purpose.

``proxy.cut_after_next_request()`` arms it: the next request the client sends reaches the
daemon (which applies it), but its reply is thrown away and the connection is cut. This is
the case retries exist for: the request's outcome is unknown to the client.
"""

from __future__ import annotations

import socket
import threading

from ledgerd._conn import parse_address
from ledgerd.codes import HEADER_SIZE


class LossyProxy:
    def __init__(self, target: str) -> None:
        self.target = parse_address(target)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.address = "127.0.0.1:%d" % self._listener.getsockname()[1]
        self._armed = threading.Event()
        self.cut = threading.Event()  # set once a connection was cut
        self.connections = 0
        self._stopped = threading.Event()
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def cut_after_next_request(self) -> None:
        self.cut.clear()
        self._armed.set()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self.connections += 1
                self._socks += [client, upstream]
            threading.Thread(target=self._up, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._down, args=(upstream, client), daemon=True).start()

    def _up(self, client: socket.socket, upstream: socket.socket) -> None:
        """Client -> daemon, untouched."""
        try:
            while True:
                data = client.recv(1 << 16)
                if not data:
                    break
                upstream.sendall(data)
        except OSError:
            pass
        finally:
            self._close(client, upstream)

    def _down(self, upstream: socket.socket, client: socket.socket) -> None:
        """Daemon -> client; when armed, the first bytes after the hello reply are dropped and
        both sides closed."""
        hello_left = HEADER_SIZE + 64  # the hello reply always passes
        try:
            while True:
                data = upstream.recv(1 << 16)
                if not data:
                    break
                if hello_left:
                    passed = data[:hello_left]
                    client.sendall(passed)
                    hello_left -= len(passed)
                    data = data[len(passed):]
                    if not data:
                        continue
                if self._armed.is_set():
                    self._armed.clear()
                    self.cut.set()
                    break  # the reply is lost
                client.sendall(data)
        except OSError:
            pass
        finally:
            self._close(client, upstream)

    @staticmethod
    def _close(*socks: socket.socket) -> None:
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self) -> None:
        self._stopped.set()
        self._listener.close()
        with self._lock:
            self._close(*self._socks)
