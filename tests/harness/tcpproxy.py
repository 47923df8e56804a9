"""A loopback TCP proxy whose behaviour a test switches at run time, to make a real service unreachable.

A metrics source or dashboard client configured with `proxy.url` talks to the real service while the
proxy passes traffic through; the test then switches it to one of the failure modes the code must
survive, without touching the service itself (other tests share it):

- `REFUSE`: nothing listens on the port (connection refused, as when the service is down);
- `HANG`: connections are accepted and never answered (client time-outs);
- `RESET`: connections are accepted and reset at once (connection reset by peer).

Switching mode drops every open connection, so a client's kept-alive connection cannot carry on.
"""

from __future__ import annotations

import contextlib
import enum
import socket
import struct
import threading
from types import TracebackType

from controller.localray import LOCALHOST


class Mode(enum.Enum):
    PASS = "pass"
    REFUSE = "refuse"
    HANG = "hang"
    RESET = "reset"


class TcpProxy:
    def __init__(self, target_port: int, target_host: str = LOCALHOST, port: int = 0) -> None:
        self.target = (target_host, target_port)
        self._lock = threading.Lock()
        self._mode = Mode.PASS
        self._conns: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._closed = False
        self.accepted = 0  # connections accepted in any mode, for tests that assert traffic went through
        self._listen(port)
        self.port = self._bound_port

    @property
    def url(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"

    @property
    def mode(self) -> Mode:
        return self._mode

    def set_mode(self, mode: Mode) -> None:
        with self._lock:
            if mode == self._mode or self._closed:
                return
            old, self._mode = self._mode, mode
        self._drop_connections()
        if mode is Mode.REFUSE:
            self._stop_listening()
        elif old is Mode.REFUSE:
            self._listen(self.port)

    def passthrough(self) -> None:
        self.set_mode(Mode.PASS)

    def refuse(self) -> None:
        self.set_mode(Mode.REFUSE)

    def hang(self) -> None:
        self.set_mode(Mode.HANG)

    def reset(self) -> None:
        self.set_mode(Mode.RESET)

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._stop_listening()
        self._drop_connections()

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ internals

    def _listen(self, port: int) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((LOCALHOST, port))
        sock.listen(64)
        self._bound_port: int = sock.getsockname()[1]
        self._listener = sock
        self._thread = threading.Thread(target=self._accept_loop, args=(sock,), daemon=True, name="tcpproxy")
        self._thread.start()

    def _stop_listening(self) -> None:
        sock, self._listener = self._listener, None
        if sock is not None:
            # shutdown() wakes the thread blocked in accept(); close() alone does not on Linux.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _track(self, *socks: socket.socket) -> None:
        with self._lock:
            self._conns.update(socks)

    def _drop_connections(self) -> None:
        with self._lock:
            conns, self._conns = self._conns, set()
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            c.close()

    def _accept_loop(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            self.accepted += 1
            mode = self._mode
            if mode is Mode.RESET:
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                client.close()
            elif mode is Mode.HANG:
                self._track(client)  # held open, never read, until the mode changes or close()
            else:
                threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        self._track(client, upstream)
        done = threading.Barrier(2, action=lambda: self._close_pair(client, upstream))
        threading.Thread(target=self._pipe, args=(upstream, client, done), daemon=True).start()
        self._pipe(client, upstream, done)

    def _pipe(self, src: socket.socket, dst: socket.socket, done: threading.Barrier) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)  # pass the half-close on, as a real peer would see it
        with contextlib.suppress(threading.BrokenBarrierError):
            done.wait()

    def _close_pair(self, a: socket.socket, b: socket.socket) -> None:
        with self._lock:
            self._conns.discard(a)
            self._conns.discard(b)
        a.close()
        b.close()
