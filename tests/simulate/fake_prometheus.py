"""A tiny Prometheus stand-in on 127.0.0.1: `/api/v1/query_range` answers from a level function.

Only for the simulator's history replay; it answers each request for exactly the range and step asked,
so chunked queries can be checked. A real Prometheus fixture lives in tests/harness/.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


@dataclass
class FakePrometheus:
    level: Callable[[float], float | None]  # value at a Unix time; None: no sample there
    series: int = 1  # how many series the answer holds
    status: int = 200
    error: str = ""
    requests: list[dict[str, str]] = field(default_factory=list)
    url: str = ""

    def answer(self, params: dict[str, str]) -> tuple[int, dict[str, object]]:
        self.requests.append(params)
        if self.status != 200:
            return self.status, {"status": "error", "errorType": "bad_data", "error": self.error}
        start, end = float(params["start"]), float(params["end"])
        step = float(params["step"].rstrip("s"))
        values = []
        t = start
        while t <= end:
            v = self.level(t)
            if v is not None:
                values.append([t, repr(float(v))])
            t += step
        result = [
            {"metric": {"ray_io_cluster": f"c{i}"} if self.series > 1 else {}, "values": values}
            for i in range(self.series)
        ]
        if not values:
            result = []
        return 200, {"status": "success", "data": {"resultType": "matrix", "result": result}}


@contextmanager
def serve(fake: FakePrometheus) -> Iterator[FakePrometheus]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            u = urlparse(self.path)
            if u.path != "/api/v1/query_range":
                self.send_error(404)
                return
            params = {k: v[0] for k, v in parse_qs(u.query).items()}
            status, body = fake.answer(params)
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
