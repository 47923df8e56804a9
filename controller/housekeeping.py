"""Minute-scale jobs beside the tick: clusters past their time-to-live, clusters stuck starting.

- **Expiry** (`rayops.io/expires-at`, set at create from the profile's TTL): one `Expiring` event to the
  requester `expiry_warning` before the end (again if the TTL was extended and comes close again),
  then deletion through the backend and one `Expired` event. Dry-run announces instead of deleting.
- **Stuck**: a cluster whose pods are not ready (state not READY, or a group below its count) and whose
  backend names a cause (image pull, quota, Kueue admission, unschedulable...) for `stuck_after` gets
  one `ClusterStuck` event with the current cause; `ClusterReady` when it recovers after that.

Both read the people's view (`ClusterBackend.list`: states, causes, expiry), both are idempotent, and
both keep what they announced in memory only: a restarted controller may warn once more.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from controller.backends.base import (
    BackendError,
    ClusterBackend,
    ClusterNotFound,
    ClusterState,
    ClusterStatus,
)
from controller.domain import ClusterRef
from controller.events import Event, EventSink, EventType
from controller.policy.durations import format_duration
from controller.settings import LoopSettings
from controller.telemetry import ControllerMetrics, ErrorKind

log = logging.getLogger("rayops.controller.housekeeping")


@dataclass
class HousekeepingReport:
    expiring: int = 0
    expired: int = 0
    stuck: int = 0
    recovered: int = 0


class Housekeeper:
    def __init__(
        self,
        backend: ClusterBackend,
        sink: EventSink,
        telemetry: ControllerMetrics,
        settings: LoopSettings,
        may_act: Callable[[], bool] = lambda: True,
    ) -> None:
        self.backend = backend
        self.sink = sink
        self.telemetry = telemetry
        self.settings = settings
        self.may_act = may_act
        self._warned: set[ClusterRef] = set()
        self._expired_announced: set[ClusterRef] = set()
        self._stuck_since: dict[ClusterRef, datetime] = {}
        self._stuck_reported: set[ClusterRef] = set()

    def run(self, now: datetime) -> HousekeepingReport:
        report = HousekeepingReport()
        if not self.may_act():
            return report
        try:
            statuses = self.backend.list()
        except BackendError as e:
            self.telemetry.errors.labels(ErrorKind.HOUSEKEEPING).inc()
            log.info("housekeeping postponed: cannot list clusters: %s", e)
            return report
        seen = {s.ref for s in statuses}
        for s in statuses:
            self._expiry(s, now, report)
            self._stuck(s, now, report)
        for gone in set(self._stuck_since) - seen:
            del self._stuck_since[gone]
        self._warned &= seen
        self._expired_announced &= seen
        self._stuck_reported &= seen
        return report

    def _expiry(self, s: ClusterStatus, now: datetime, report: HousekeepingReport) -> None:
        if s.expires_at is None:
            return
        left = s.expires_at - now
        if left.total_seconds() > 0:
            if left > self.settings.expiry_warning:
                self._warned.discard(s.ref)  # extended: warn again when it comes close again
            elif s.ref not in self._warned:
                self._warned.add(s.ref)
                report.expiring += 1
                self.sink.publish(
                    Event(
                        EventType.EXPIRING,
                        f"{s.ref} expires in {format_duration(left)} (at {s.expires_at.isoformat()}) "
                        "and will then be deleted; extend it if you still need it",
                        now,
                        s.ref,
                        s.requester,
                        data={"expiresAt": s.expires_at.isoformat()},
                    )
                )
            return
        if self.settings.dry_run:
            if s.ref not in self._expired_announced:
                self._expired_announced.add(s.ref)
                self.sink.publish(
                    Event(
                        EventType.EXPIRED,
                        f"dry run: {s.ref} expired at {s.expires_at.isoformat()}; it would be deleted now",
                        now,
                        s.ref,
                        s.requester,
                        data={"dryRun": True},
                    )
                )
            return
        if not self.may_act():
            return
        try:
            self.backend.delete(s.ref)
        except ClusterNotFound:
            return
        except BackendError as e:
            self.telemetry.errors.labels(ErrorKind.HOUSEKEEPING).inc()
            log.warning("%s expired but could not be deleted (%s); retrying next round", s.ref, e)
            return
        self.telemetry.writes.labels("delete").inc()
        report.expired += 1
        log.info("deleted %s: its time-to-live ended at %s", s.ref, s.expires_at.isoformat())
        self.sink.publish(
            Event(
                EventType.EXPIRED,
                f"{s.ref} reached the end of its time-to-live ({s.expires_at.isoformat()}) and was deleted",
                now,
                s.ref,
                s.requester,
                data={"expiresAt": s.expires_at.isoformat()},
            )
        )

    def _stuck(self, s: ClusterStatus, now: datetime, report: HousekeepingReport) -> None:
        not_ready = s.state is not ClusterState.READY or any(g.ready < g.desired for g in s.groups)
        if not (not_ready and s.stuck_cause):
            self._stuck_since.pop(s.ref, None)
            if s.ref in self._stuck_reported and s.state is ClusterState.READY:
                self._stuck_reported.discard(s.ref)
                report.recovered += 1
                self.sink.publish(
                    Event(EventType.CLUSTER_READY, f"{s.ref} is ready again", now, s.ref, s.requester)
                )
            return
        since = self._stuck_since.setdefault(s.ref, now)
        if now - since >= self.settings.stuck_after and s.ref not in self._stuck_reported:
            self._stuck_reported.add(s.ref)
            report.stuck += 1
            self.sink.publish(
                Event(
                    EventType.CLUSTER_STUCK,
                    f"{s.ref} has not been ready for {format_duration(now - since)}: {s.stuck_cause}",
                    now,
                    s.ref,
                    s.requester,
                    severity="warning",
                    data={"cause": s.stuck_cause, "state": str(s.state)},
                )
            )
