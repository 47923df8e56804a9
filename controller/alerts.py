"""One alert per incident, one recovery per incident: the bookkeeping behind every alert the loop raises.

A Prometheus that is down for an hour, a policy set that stays invalid, a cluster whose writes keep
failing: each would otherwise raise an alert on every tick. `IncidentBook` remembers which incidents
are open (by a key the caller chooses: a source name, a cluster, a cluster and an error class), so the
caller publishes the alert when `open` says the incident is new and the recovery when `close` says it
was open. Kept in memory: a restarted controller re-raises what is still wrong once, which is what an
operator wants after a restart anyway.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass
class OpenIncident:
    key: Hashable
    since: datetime
    reason: str
    repeats: int = 0
    context: Any = None  # what the opening event said (e.g. its cluster), for the matching recovery


class IncidentBook:
    def __init__(self) -> None:
        self._open: dict[Hashable, OpenIncident] = {}
        self._lock = threading.Lock()

    def open(self, key: Hashable, at: datetime, reason: str, context: Any = None) -> bool:
        """Record a failure; True only when this starts a new incident (raise the alert then)."""
        with self._lock:
            inc = self._open.get(key)
            if inc is None:
                self._open[key] = OpenIncident(key, at, reason, 0, context)
                return True
            inc.repeats += 1
            return False

    def close(self, key: Hashable) -> OpenIncident | None:
        """Record a success; the incident it ends (report the recovery), or None if none was open."""
        with self._lock:
            return self._open.pop(key, None)

    def get(self, key: Hashable) -> OpenIncident | None:
        with self._lock:
            return self._open.get(key)

    def keys(self) -> list[Hashable]:
        with self._lock:
            return list(self._open)

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._open
