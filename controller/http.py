"""`/metrics`, `/healthz` and `/readyz` on a small threaded HTTP server (standard library only).

- `/metrics`: the controller's registry (controller/telemetry.py) in Prometheus' text format.
- `/healthz` (liveness): the process is alive *and its scheduler is still running jobs*: the tick job
  beats on every run, leader or not, so a wedged scheduler fails the probe and the pod is restarted.
- `/readyz` (readiness): able to act if elected: a valid policy set is loaded and the coordination
  service / backend answered recently. Not "is leader": both replicas are Ready, so a rollout or a lost
  node never leaves the Service without endpoints (deploy/base/controller.yaml).

Each check is a callable returning `(ok, reason)`, so the composition root decides what they mean and
tests drive them directly. Bound to 127.0.0.1 unless configured (a pod binds 0.0.0.0 for its probes).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from controller.telemetry import CONTENT_TYPE_LATEST, ControllerMetrics

log = logging.getLogger("rayops.controller.http")

Check = Callable[[], tuple[bool, str]]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    endpoints: ControllerEndpoints


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        return  # probes every few seconds would drown the log

    def do_GET(self) -> None:
        ep = self.server.endpoints
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(200, ep.telemetry.render(), CONTENT_TYPE_LATEST)
        elif path in ("/healthz", "/livez"):
            self._check(ep.health)
        elif path == "/readyz":
            self._check(ep.ready)
        else:
            self._send(404, b"not found: try /metrics, /healthz or /readyz\n")

    def _check(self, check: Check) -> None:
        try:
            ok, reason = check()
        except Exception as e:  # a failing check is an unhealthy answer, not a dead endpoint
            ok, reason = False, f"check failed: {type(e).__name__}: {e}"
        self._send(200 if ok else 503, f"{'ok' if ok else 'not ok'}: {reason}\n".encode())

    def _send(self, code: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class ControllerEndpoints:
    def __init__(
        self,
        telemetry: ControllerMetrics,
        health: Check,
        ready: Check,
        host: str = "127.0.0.1",
        port: int = 8080,
    ) -> None:
        self.telemetry = telemetry
        self.health = health
        self.ready = ready
        self._server = _Server((host, port), _Handler)
        self._server.endpoints = self
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://{'127.0.0.1' if host == '0.0.0.0' else host}:{port}"

    def start(self) -> ControllerEndpoints:
        self._thread = threading.Thread(target=self._server.serve_forever, name="rayops-http", daemon=True)
        self._thread.start()
        log.info("serving /metrics, /healthz and /readyz on %s", self.url)
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
