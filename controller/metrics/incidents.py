"""Log a failing data source once when the trouble starts and once when it ends, not on every tick.

A Prometheus that is down for an hour would otherwise write 240 identical warnings at a 15 s tick and
bury everything else. Each incident has a key chosen by the caller (a query, a cluster, a namespace);
`fail` logs a warning the first time a key fails, `ok` logs the recovery with how long it lasted. Only
the first reason is logged; later, different reasons of the same incident go to debug. Thread-safe,
because sources fetch from worker threads.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

__all__ = ["Incident", "IncidentLog"]


@dataclass
class Incident:
    key: str
    reason: str
    since: float  # time.monotonic() of the first failure
    failures: int = 1


class IncidentLog:
    def __init__(self, logger: logging.Logger, source: str) -> None:
        self._logger = logger
        self._source = source
        self._open: dict[str, Incident] = {}
        self._lock = threading.Lock()

    def fail(self, key: str, reason: str) -> None:
        with self._lock:
            inc = self._open.get(key)
            if inc is None:
                self._open[key] = Incident(key, reason, time.monotonic())
                self._logger.warning("%s: %s unavailable: %s", self._source, key, reason)
                return
            inc.failures += 1
            if reason != inc.reason:
                self._logger.debug("%s: %s still unavailable: %s", self._source, key, reason)

    def ok(self, key: str) -> None:
        with self._lock:
            inc = self._open.pop(key, None)
        if inc is not None:
            self._logger.info(
                "%s: %s recovered after %.0f s (%d failed attempts; first cause: %s)",
                self._source,
                key,
                time.monotonic() - inc.since,
                inc.failures,
                inc.reason,
            )

    def open_incidents(self) -> dict[str, Incident]:
        with self._lock:
            return {k: Incident(v.key, v.reason, v.since, v.failures) for k, v in self._open.items()}
