"""`reconcile_once(now)`: one tick of the controller, in four steps you can find and test one by one.

    policies = gate.refresh(now)                 controller/policy_gate.py
    observation = observe(...)                   controller/observe.py    (reads only)
    outcomes = decide_all(observation, ...)      controller/deciding.py   (pure)
    ... again with node activity, only where     controller/deciding.py   (needs_activity)
        it could change a decision
    applied = apply_cluster(...) per cluster     controller/apply.py      (one guarded write)
    reporter.cluster(...), sources_health(...)   controller/report.py     (annotations, events, metrics)

Time is passed in (`now`, timezone-aware), so tests drive ticks without sleeping and every decision of
a tick sees the same instant. The scheduler (controller/scheduler.py) only calls this, one tick at a
time, when this replica leads; `may_act` is checked again before each write, so a replica that loses
its lease in the middle of a tick writes nothing more.

The loop is level-triggered: each tick decides from what it observes now, so the next tick is the
retry of anything that failed in this one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from controller.apply import Applied, ApplyOutcome, apply_cluster
from controller.backends.base import BackendError, DefersActivity, ManagedCluster, ScaleTarget
from controller.deciding import ClusterOutcome, PolicyVariants, decide_all, decide_cluster, needs_activity
from controller.domain import ClusterRef, Decision
from controller.events import EventSink
from controller.metrics.base import MetricsSource
from controller.observe import AnnotationMemory, Observation, observe, with_cluster
from controller.pause import PauseSource, StaticPause
from controller.policy.loader import PolicyStore
from controller.policy_gate import PolicyGate
from controller.report import Reporter
from controller.scrub import Scrubber, ScrubbingSink
from controller.settings import LoopSettings
from controller.telemetry import ControllerMetrics, ErrorKind

log = logging.getLogger("rayops.controller.reconcile")


@dataclass(frozen=True)
class TickReport:
    """What one tick did; the scheduler logs it, tests and benchmarks assert on it."""

    at: datetime
    outcome: str  # success | failure | no-policies
    clusters: int = 0
    groups: int = 0
    decisions: tuple[Decision, ...] = ()
    applied: Mapping[ClusterRef, ApplyOutcome] = field(default_factory=dict)
    writes: int = 0  # apply calls that wrote
    annotation_writes: int = 0
    events: int = 0
    metrics_requests: int = 0
    errors: Mapping[str, int] = field(default_factory=dict)
    duration_s: float = 0.0
    detail: str = ""

    def decision(self, group: str, cluster: str | None = None) -> Decision:
        """The decision for a group (by name, optionally of one cluster), for tests."""
        for d in self.decisions:
            if d.ref.group == group and (cluster is None or d.ref.cluster == cluster):
                return d
        raise KeyError(f"no decision for group {group}")


class TickClock:
    """The running tick's `now`, for parts that read a clock during a tick (the backends ask Ray for
    node activity with it). Sharing one instant lets the Ray dashboard source answer a cluster's
    pending demand and its node activity from one status request (its per-tick cache is keyed by
    `now`). Outside a tick it is the wall clock."""

    def __init__(self) -> None:
        self._now: datetime | None = None

    def set(self, now: datetime | None) -> None:
        self._now = now

    def __call__(self) -> datetime:
        return self._now if self._now is not None else datetime.now(UTC)


class Reconciler:
    """The four steps wired to one backend, one metrics source, one policy store and one event sink."""

    def __init__(
        self,
        backend: ScaleTarget,
        metrics: MetricsSource,
        policies: PolicyStore,
        sink: EventSink,
        *,
        settings: LoopSettings | None = None,
        pause: PauseSource | None = None,
        telemetry: ControllerMetrics | None = None,
        may_act: Callable[[], bool] = lambda: True,
        check_signals: bool = True,
        scrub: Scrubber | None = None,
        clock: TickClock | None = None,
    ) -> None:
        self.backend = backend
        self.metrics = metrics
        self.settings = settings or LoopSettings()
        self.scrub = scrub or Scrubber()
        self.sink = ScrubbingSink(sink, self.scrub)
        sink = self.sink
        self.pause = pause or StaticPause(self.settings.paused)
        self.telemetry = telemetry or ControllerMetrics()
        self.may_act = may_act
        self.memory = AnnotationMemory()
        self.gate = PolicyGate(policies, sink, self.telemetry, metrics if check_signals else None)
        self.reporter = Reporter(backend, sink, self.telemetry, self.memory, self.settings, may_act)
        self.variants = PolicyVariants()
        self._pending_removals: set[ClusterRef] = set()
        self._lock = threading.Lock()  # one tick (or housekeeping write) at a time per reconciler
        self.last_report: TickReport | None = None
        self.clock = clock or TickClock()

    @property
    def lock(self) -> threading.Lock:
        """Held by every step that writes; housekeeping jobs take it too, so they never race a tick."""
        return self._lock

    # ------------------------------------------------------------------ the tick

    def reconcile_once(self, now: datetime) -> TickReport:
        with self._lock:
            started = time.perf_counter()
            self.clock.set(now)
            try:
                report = self._tick(now)
            finally:
                self.clock.set(None)
            report = replace(report, duration_s=time.perf_counter() - started)
            self._record(report)
            return report

    def _tick(self, now: datetime) -> TickReport:
        policy_set = self.gate.refresh(now)
        if policy_set is None:
            return TickReport(now, "no-policies", detail="no valid policy set loaded yet")
        pause = self.pause.read()
        lazy = self.backend if isinstance(self.backend, DefersActivity) else None
        try:
            listed = lazy.list_clusters_without_activity() if lazy is not None else None
            observation = observe(
                self.backend, self.metrics, policy_set, self.memory, pause, now, listed, scrub=self.scrub
            )
        except BackendError as e:
            self.reporter.tick_failed(str(e), now)
            log.warning("tick skipped: cannot list clusters: %s", e)
            return TickReport(now, "failure", errors={ErrorKind.LIST: 1}, detail=str(e))
        self.reporter.tick_succeeded(now)
        outcomes = decide_all(observation, self.variants, policy_set.revision, self.settings.dry_run)
        if lazy is not None:
            outcomes = self._with_activity(lazy, outcomes, now, policy_set.revision)
        applied = self.apply(outcomes)
        return self.report(observation, outcomes, applied, now)

    def _with_activity(
        self, lazy: DefersActivity, outcomes: list[ClusterOutcome], now: datetime, revision: str
    ) -> list[ClusterOutcome]:
        """Step 2b: decide again, with node activity, the clusters whose decision depends on it.

        Only a cluster that could scale down needs to know which workers are idle; asking the
        dashboards of the others is the cost a large fleet cannot carry every tick. If the dashboards
        cannot be asked, the first decisions stand: every worker counts as busy, nothing is removed.
        """
        dry_run = self.settings.dry_run
        wanting = [c.view for c in outcomes if needs_activity(c, now, self.variants, revision, dry_run)]
        if not wanting:
            return outcomes
        try:
            fresh = {c.ref: c for c in lazy.with_activity([v.cluster for v in wanting])}
        except BackendError as e:
            log.info("node activity unavailable this tick (%s); workers count as busy", e)
            return outcomes
        redone = {
            v.ref: decide_cluster(with_cluster(v, fresh[v.ref]), now, self.variants, revision, dry_run)
            for v in wanting
            if v.ref in fresh
        }
        return [redone.get(c.view.ref, c) for c in outcomes]

    def apply(self, outcomes: list[ClusterOutcome]) -> dict[ClusterRef, ApplyOutcome]:
        """Step 3, per cluster and isolated (see controller/apply.py)."""
        return {
            c.view.ref: apply_cluster(
                self.backend, c.view.cluster, c.decisions, dry_run=self.settings.dry_run, may_act=self.may_act
            )
            for c in outcomes
        }

    def report(
        self,
        observation: Observation,
        outcomes: list[ClusterOutcome],
        applied: Mapping[ClusterRef, ApplyOutcome],
        now: datetime,
    ) -> TickReport:
        """Step 4: annotations, events and metrics (see controller/report.py)."""
        errors: Counter[str] = Counter()
        annotation_writes = events = 0
        for c in outcomes:
            result = self.reporter.cluster(c, applied[c.view.ref], now)
            annotation_writes += result.annotations_written
            events += result.events
            if c.failed:
                errors[ErrorKind.INTERNAL] += len(c.failed)
                self.telemetry.errors.labels(ErrorKind.INTERNAL).inc(len(c.failed))
        self.reporter.sources_health(outcomes, now)
        for a in applied.values():
            if not a.status.ok and a.status is not Applied.NOT_LEADER:
                errors[a.status.value] += 1
        decisions = tuple(d for c in outcomes for d in c.decisions)
        self._pending_removals = {
            c.view.ref for c in outcomes if any(g.pending_deletes for g in c.view.cluster.groups)
        } | {ref for ref, a in applied.items() if a.status is Applied.WRITTEN}
        return TickReport(
            at=now,
            outcome="success",
            clusters=len(observation.clusters),
            groups=observation.group_count,
            decisions=decisions,
            applied=dict(applied),
            writes=sum(1 for a in applied.values() if a.status is Applied.WRITTEN),
            annotation_writes=annotation_writes,
            events=events,
            metrics_requests=observation.fetch.requests,
            errors=dict(errors),
        )

    def _record(self, report: TickReport) -> None:
        t = self.telemetry
        t.ticks.labels("success" if report.outcome != "failure" else "failure").inc()
        t.tick_duration.observe(report.duration_s)
        if report.outcome == "success":
            t.last_success.set(report.at.timestamp())
            t.managed_clusters.set(report.clusters)
            t.metrics_requests.set(report.metrics_requests)
            t.record_decisions(report.decisions)
            t.writes.labels("apply").inc(report.writes)
        self.last_report = report
        log.debug(
            "tick %s: %d clusters, %d groups, %d writes, %d annotation writes, %d events in %.3f s",
            report.outcome,
            report.clusters,
            report.groups,
            report.writes,
            report.annotation_writes,
            report.events,
            report.duration_s,
        )

    # ------------------------------------------------------------------ housekeeping: removals

    def finish_pending_removals(self, now: datetime) -> int:
        """Clear finished worker removals (KubeRay never clears `workersToDelete` itself).

        Costs nothing while the last tick saw no removal pending and wrote nothing; otherwise re-lists
        the clusters and asks the backend to clear, for those clusters only, the removals whose workers
        are gone. Returns how many clusters were written.
        """
        if not self._pending_removals or self.settings.dry_run:
            return 0
        with self._lock:
            if not self.may_act():
                return 0
            try:
                clusters = self.backend.list_clusters()
            except BackendError as e:
                self.telemetry.errors.labels(ErrorKind.HOUSEKEEPING).inc()
                log.info("finishing removals postponed: cannot list clusters: %s", e)
                return 0
            written = 0
            still: set[ClusterRef] = set()
            for cluster in clusters:
                if cluster.ref not in self._pending_removals or not _has_pending(cluster):
                    continue
                still.add(cluster.ref)
                written += self._finish(cluster)
            self._pending_removals = still
            return written

    def _finish(self, cluster: ManagedCluster) -> int:
        if not self.may_act():
            return 0
        try:
            result = self.backend.finish_removals(cluster)
        except BackendError as e:
            self.telemetry.errors.labels(ErrorKind.HOUSEKEEPING).inc()
            log.info("%s: clearing finished removals failed (%s); next round retries", cluster.ref, e)
            return 0
        if result.written:
            self.telemetry.writes.labels("finish").inc()
            log.info("%s: %s", cluster.ref, result.detail or "finished removals cleared")
        return int(result.written)


def _has_pending(cluster: ManagedCluster) -> bool:
    return any(g.pending_deletes for g in cluster.groups)
