"""A scripted HTTP server on loopback, for recorded and broken answers (no mocking of clients).

Each route maps a path (matched with its query string first, then without) to a `Reply` or a function
of the `Seen` request returning one. Every request is recorded, so tests count queries and check
headers. Replies can be delayed (a slow upstream) or cut (a connection closed without an answer).
"""

from __future__ import annotations

import json
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: Any = b""  # bytes, str, or anything JSON-serialisable
    content_type: str = "application/json"
    delay_s: float = 0.0
    drop: bool = False  # close the connection without answering

    def payload(self) -> bytes:
        if isinstance(self.body, bytes):
            return self.body
        if isinstance(self.body, str):
            return self.body.encode()
        return json.dumps(self.body).encode()


@dataclass(frozen=True)
class Seen:
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]

    def param(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None


Route = Reply | Callable[[Seen], Reply]


@dataclass
class StubServer:
    routes: dict[str, Route] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    port: int = 0
    scheme: str = "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def route(self, path: str, reply: Route) -> None:
        self.routes[path] = reply

    def requests_to(self, path: str) -> list[Seen]:
        return [s for s in self.seen if s.path == path]

    def _find(self, raw_path: str) -> Route | None:
        if raw_path in self.routes:
            return self.routes[raw_path]
        return self.routes.get(raw_path.split("?", 1)[0])


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    stub: StubServer


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        stub = self.server.stub
        parsed = urllib.parse.urlsplit(self.path)
        seen = Seen(
            parsed.path, urllib.parse.parse_qs(parsed.query), {k.lower(): v for k, v in self.headers.items()}
        )
        stub.seen.append(seen)
        route = stub._find(self.path)
        reply = Reply(404, {"error": f"no route for {self.path}"}) if route is None else route
        if callable(reply):
            reply = reply(seen)
        if reply.delay_s:
            time.sleep(reply.delay_s)
        if reply.drop:
            self.close_connection = True
            return
        payload = reply.payload()
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass

    do_POST = do_GET


@contextmanager
def serve(stub: StubServer | None = None, tls: tuple[str, str] | None = None) -> Iterator[StubServer]:
    """Serve `stub` on a free loopback port; `tls=(certfile, keyfile)` serves HTTPS."""
    stub = stub or StubServer()
    server = _Server(("127.0.0.1", 0), _Handler)
    if tls is not None:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(*tls)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
        stub.scheme = "https"
    server.stub = stub
    stub.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="stub-http", daemon=True)
    thread.start()
    try:
        yield stub
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
