"""Replay protection for Slack's HTTP mode, as a bolt middleware.

Slack's `v0` scheme signs `v0:<timestamp>:<body>` and asks apps to refuse timestamps more than
5 minutes off; inside that window a captured request (a slash command, an Approve press) verifies
again if someone sends it again. So after bolt's own `RequestVerification` (which runs first and
refuses wrong signatures and stale timestamps with 401), this middleware remembers every
(timestamp, signature) pair it let through until its timestamp leaves the window, and answers a
second copy 401 before any listener runs: no ack, no command, no Web API call.

Slack itself never sends the same signed request twice: its retries of an event delivery are new
requests (`X-Slack-Retry-Num`), signed anew; refusing an identical copy is also the right answer for
a delivery already processed. The check and the insert are one step under a lock, so of two
identical requests racing, exactly one passes. Only verified requests are remembered (this runs
after verification), so garbage cannot fill the cache; if valid traffic ever fills it, new requests
get 503 (Slack retries events; a person retries a command) rather than an unprotected pass.

Socket Mode envelopes come over the app's own authenticated WebSocket and carry no signature: they
pass untouched.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from slack_bolt.middleware import Middleware
from slack_bolt.request import BoltRequest
from slack_bolt.response import BoltResponse

log = logging.getLogger("rayops.bot.slack.replay")

WINDOW_S = 300  # Slack's: a timestamp further than this from now is refused anyway
_PRUNE_EVERY_S = 10.0


class ReplayGuard(Middleware):  # type: ignore[misc]
    def __init__(
        self,
        window_s: int = WINDOW_S,
        max_entries: int = 100_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.window_s = window_s
        self.max_entries = max_entries
        self.clock = clock
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, str], float] = {}  # (timestamp, signature) -> forget after
        self._next_prune = 0.0
        self.refused = 0

    def process(
        self,
        *,
        req: BoltRequest,
        resp: BoltResponse,
        next: Callable[[], BoltResponse],  # bolt passes it by this name
    ) -> BoltResponse:
        if req.mode == "socket_mode" or req.lazy_only:
            return next()
        timestamp = (req.headers.get("x-slack-request-timestamp") or [""])[0]
        signature = (req.headers.get("x-slack-signature") or [""])[0]
        verdict = self.admit(timestamp, signature)
        if verdict is None:
            return next()
        status, why = verdict
        log.warning("Slack request refused (%s): timestamp %s, signature %s…", why, timestamp, signature[:12])
        return BoltResponse(status=status, body={"error": "invalid request"})

    def admit(self, timestamp: str, signature: str) -> tuple[int, str] | None:
        """None to let the request through (and remember it), else (HTTP status, why)."""
        try:
            ts = int(timestamp)
        except ValueError:
            return 401, "no usable timestamp"
        if not signature:
            return 401, "no signature"
        now = self.clock()
        key = (timestamp, signature)
        with self._lock:
            if now >= self._next_prune or len(self._seen) >= self.max_entries:
                self._seen = {k: until for k, until in self._seen.items() if until > now}
                self._next_prune = now + _PRUNE_EVERY_S
            if key in self._seen:
                self.refused += 1
                return 401, "replayed"
            if len(self._seen) >= self.max_entries:
                return 503, "replay cache full"
            self._seen[key] = ts + self.window_s + 1
        return None

    def __len__(self) -> int:
        with self._lock:
            return len(self._seen)
