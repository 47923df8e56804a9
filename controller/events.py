"""Typed events from the controller to whoever listens (contracts.md section 6).

The controller publishes to an `EventSink`; the bot reads through the matching `EventSource`, so the
two may run as separate processes or pods. Implementations here: in-memory (tests, and `rayops up`
where both run in one process), structured log lines, and the laptop-mode JSON-lines journal. The
Kubernetes Events sink and source live with the rest of the Kubernetes access in
`controller/backends/kube_api.py`.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from controller.domain import ClusterRef, JSONScalar

log = logging.getLogger("rayops.events")


class EventType(StrEnum):
    """Doubles as the Kubernetes Event `reason`; add members, never rename."""

    SCALED_UP = "ScaledUp"
    SCALED_DOWN = "ScaledDown"
    HELD = "Held"
    METRICS_UNAVAILABLE = "MetricsUnavailable"
    METRICS_RECOVERED = "MetricsRecovered"
    POLICY_INVALID = "PolicyInvalid"
    POLICY_RECOVERED = "PolicyRecovered"
    CONFLICT = "Conflict"
    CLUSTER_READY = "ClusterReady"
    CLUSTER_STUCK = "ClusterStuck"
    EXPIRING = "Expiring"
    EXPIRED = "Expired"
    DELETED = "Deleted"
    LIMIT_CLAMPED = "LimitClamped"
    FAILURE = "Failure"
    RECOVERED = "Recovered"


ALERT_TYPES = frozenset(
    {
        EventType.METRICS_UNAVAILABLE,
        EventType.METRICS_RECOVERED,
        EventType.POLICY_INVALID,
        EventType.POLICY_RECOVERED,
        EventType.CONFLICT,
        EventType.LIMIT_CLAMPED,
        EventType.FAILURE,
        EventType.RECOVERED,
    }
)
"""Events for the DevOps channel; the rest go to the cluster's requester."""


@dataclass(frozen=True)
class Event:
    type: EventType
    message: str
    at: datetime
    cluster: ClusterRef | None = None
    requester: str | None = None
    severity: str = "info"  # info | warning
    data: Mapping[str, JSONScalar] = field(default_factory=dict)

    @property
    def is_alert(self) -> bool:
        return self.type in ALERT_TYPES

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": str(self.type),
            "message": self.message,
            "at": self.at.isoformat(),
            "cluster": str(self.cluster) if self.cluster else None,
            "requester": self.requester,
            "severity": self.severity,
            "data": dict(self.data),
        }

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> Event:
        cluster = None
        if d.get("cluster"):
            ns, name = str(d["cluster"]).split("/", 1)
            cluster = ClusterRef(ns, name)
        return Event(
            type=EventType(d["type"]),
            message=str(d["message"]),
            at=datetime.fromisoformat(d["at"]),
            cluster=cluster,
            requester=d.get("requester"),
            severity=str(d.get("severity", "info")),
            data=dict(d.get("data") or {}),
        )


class EventSink(Protocol):
    def publish(self, event: Event) -> None:
        """Deliver one event; must not raise for delivery failures (log them), so reporting never
        stops the reconcile loop."""
        ...


class EventSource(Protocol):
    def poll(self) -> list[Event]:
        """Events published since the previous poll, oldest first; never blocks for long."""
        ...


class MemoryEvents:
    """Sink and source in one: for tests and for `rayops up`, where controller and bot share a process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.events: list[Event] = []
        self._read = 0

    def publish(self, event: Event) -> None:
        with self._lock:
            self.events.append(event)

    def poll(self) -> list[Event]:
        with self._lock:
            new = self.events[self._read :]
            self._read = len(self.events)
        return new

    def of_type(self, *types: EventType) -> list[Event]:
        with self._lock:
            return [e for e in self.events if e.type in types]


class LogSink:
    """Structured log lines: one JSON object per event, for log aggregation."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._log = logger or log

    def publish(self, event: Event) -> None:
        level = logging.WARNING if event.severity == "warning" else logging.INFO
        self._log.log(level, "event %s", json.dumps(event.to_dict(), sort_keys=True))


class JournalSink:
    """Append-only JSON lines in the laptop state directory; one `write` per line keeps lines whole."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def publish(self, event: Event) -> None:
        line = (json.dumps(event.to_dict(), sort_keys=True) + "\n").encode()
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)
        except OSError as e:
            log.warning("could not append to the event journal %s: %s", self.path, e)


class JournalSource:
    """Tails the journal from where it was when created (or from the start), across processes."""

    def __init__(self, path: Path, from_start: bool = False) -> None:
        self.path = path
        self._offset = 0 if from_start or not path.exists() else path.stat().st_size

    def poll(self) -> list[Event]:
        try:
            with self.path.open("rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n")
        if end < 0:
            return []
        self._offset += end + 1
        out = []
        for raw in data[: end + 1].splitlines():
            try:
                out.append(Event.from_dict(json.loads(raw)))
            except (ValueError, KeyError) as e:
                log.warning("skipping a malformed journal line in %s: %s", self.path, e)
        return out

    def history(self, cluster: ClusterRef | None = None, limit: int = 200) -> list[Event]:
        """Recent events from the whole journal (for `why` and charts), newest last."""
        try:
            lines = self.path.read_bytes().splitlines()[-5000:]
        except FileNotFoundError:
            return []
        out = []
        for raw in lines:
            try:
                ev = Event.from_dict(json.loads(raw))
            except (ValueError, KeyError):
                continue
            if cluster is None or ev.cluster == cluster:
                out.append(ev)
        return out[-limit:]


class FanoutSink:
    """Publishes to several sinks; one failing sink does not stop the others."""

    def __init__(self, sinks: Iterable[EventSink]) -> None:
        self.sinks: Sequence[EventSink] = list(sinks)

    def publish(self, event: Event) -> None:
        for sink in self.sinks:
            try:
                sink.publish(event)
            except Exception:  # a sink must not break the loop; the failure is logged with its trace
                log.exception("event sink %s failed", type(sink).__name__)
