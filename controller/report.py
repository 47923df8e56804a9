"""Step 4 of a tick: report. Tell everyone what was decided and what went wrong, once.

Per cluster, after apply:
- **annotations** `rayops.io/decision` and `rayops.io/state` (controller/records.py), written only when
  a decision's key or a state's signature changed, and never in dry-run or by a replica that is not
  the leader: a steady cluster gets no write at all;
- **events** (contracts.md section 6) for decisions whose key changed since they were last announced:
  `ScaledUp`/`ScaledDown` once the backend wrote them; `Held` for a hold worth knowing about (paused,
  metrics missing, busy workers protected, removals converging, Kueue, in-tree autoscaler, budget,
  dry run); one `LimitClamped` alert per incident for a cluster above its access limits; `Conflict`
  and `Failure`/`Recovered` for write trouble, transient trouble only after it repeats;
- prometheus-client metrics (controller/telemetry.py).

Across clusters: one `MetricsUnavailable` alert per metrics source when groups start holding for lack
of its data, one `MetricsRecovered` when none does any more (the incident is per source: a Prometheus
outage is one alert however many clusters it touches), and `rayops_metrics_available{source}`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from controller import keys, records
from controller.alerts import IncidentBook
from controller.apply import Applied, ApplyOutcome
from controller.backends.base import BackendError, ScaleTarget
from controller.deciding import ClusterOutcome, GroupOutcome
from controller.domain import Action, ClusterRef, Decision, GroupRef, JSONScalar, ReasonCode
from controller.events import Event, EventSink, EventType
from controller.observe import AnnotationMemory
from controller.policy.durations import format_duration
from controller.policy.state import GroupState
from controller.settings import LoopSettings
from controller.telemetry import ControllerMetrics, ErrorKind

log = logging.getLogger("rayops.controller.report")

NOTABLE_HOLDS = frozenset(
    {
        ReasonCode.GLOBAL_PAUSE,
        ReasonCode.PAUSED,
        ReasonCode.KUEUE_MANAGED,
        ReasonCode.INTREE_AUTOSCALER_CONFLICT,
        ReasonCode.BUSY_WORKERS_PROTECTED,
        ReasonCode.BACKEND_CONVERGING,
        ReasonCode.BUDGET,
        ReasonCode.FALLBACK,
        ReasonCode.DRY_RUN,
    }
)
_QUIET_CODES = frozenset({ReasonCode.NO_CHANGE, ReasonCode.WITHIN_TOLERANCE})
MAX_EXPLANATION = 600
NEW_WORKER_GRACE = timedelta(minutes=2)


def explain(d: Decision) -> str:
    """The decision's reasons as one line: what each signal said and what limited it."""
    parts = []
    for r in d.reasons:
        if r.code in _QUIET_CODES and len(d.reasons) > 1:
            continue
        if r.code is ReasonCode.SIGNAL_PROPOSAL and r.data.get("proposal") is None:
            continue
        parts.append(r.message)
    text = "; ".join(parts) or "no reason recorded"
    return text if len(text) <= MAX_EXPLANATION else text[: MAX_EXPLANATION - 1] + "…"


def blocking_missing_data(d: Decision) -> bool:
    """The hold that kept a group from scaling down because data was missing (not a per-signal note)."""
    return any(r.code is ReasonCode.METRICS_UNAVAILABLE and "before" in r.data for r in d.reasons)


def unavailable_signals(d: Decision) -> list[str]:
    return [
        str(r.data["signal"])
        for r in d.reasons
        if r.code is ReasonCode.METRICS_UNAVAILABLE and r.data.get("signal") is not None
    ]


@dataclass
class ClusterReport:
    annotations_written: bool = False
    events: int = 0


@dataclass
class _Streak:
    """Consecutive ticks with the same transient trouble, per key."""

    counts: dict[tuple[str, ClusterRef | None], int] = field(default_factory=dict)

    def bump(self, key: tuple[str, ClusterRef | None]) -> int:
        self.counts[key] = self.counts.get(key, 0) + 1
        return self.counts[key]

    def reset(self, key: tuple[str, ClusterRef | None]) -> None:
        self.counts.pop(key, None)


class Reporter:
    def __init__(
        self,
        backend: ScaleTarget,
        sink: EventSink,
        telemetry: ControllerMetrics,
        memory: AnnotationMemory,
        settings: LoopSettings,
        may_act: Callable[[], bool],
    ) -> None:
        self.backend = backend
        self.sink = sink
        self.telemetry = telemetry
        self.memory = memory
        self.settings = settings
        self.may_act = may_act
        self.sources = IncidentBook()
        self.problems = IncidentBook()  # ("failure" | "conflict" | "limit", cluster) and ("list", None)
        self.streaks = _Streak()
        self._ready: dict[GroupRef, tuple[int, datetime]] = {}  # ready workers, and since when that many

    def _starting(self, g: GroupOutcome, now: datetime) -> bool:
        """No ready worker yet, or one that became ready less than `NEW_WORKER_GRACE` ago (or first seen
        by this process that recently): its metrics may not have been scraped yet."""
        ready = g.view.obs.ready
        seen = self._ready.get(g.ref)
        if seen is None or ready > seen[0]:
            self._ready[g.ref] = (ready, now)
        elif ready < seen[0]:
            self._ready[g.ref] = (ready, seen[1])  # losing a worker is no reason to wait again
        return ready == 0 or now - self._ready[g.ref][1] < NEW_WORKER_GRACE

    def _publish(self, event: Event) -> None:
        self.sink.publish(event)

    # ------------------------------------------------------------------ per cluster

    def cluster(self, outcome: ClusterOutcome, applied: ApplyOutcome, now: datetime) -> ClusterReport:
        view = outcome.view
        cluster = view.cluster
        ref = view.ref
        requester = cluster.annotations.get(keys.ANN_REQUESTER)
        report = ClusterReport()
        self._problems(ref, applied, requester, now, report)
        self._limits(outcome, requester, now, report)
        if not outcome.groups:
            return report
        annotated, written_states = self.memory.annotated(cluster)
        reported = self.memory.reported(cluster)
        new_keys = {g.ref.group: records.decision_key(g.decision) for g in outcome.groups}
        names = set(cluster.group_names)
        states = {name: st for name, st in written_states.items() if name in names}
        states.update({g.ref.group: g.state for g in outcome.groups})
        announced: dict[str, records.DecisionKey] = {}
        if applied.status.ok:
            for g in outcome.groups:
                if new_keys[g.ref.group] != reported.get(g.ref.group):
                    report.events += self._decision_events(g, applied, requester, now)
                    announced[g.ref.group] = new_keys[g.ref.group]
        wrote: tuple[str, str] | None = None
        if (
            applied.status.ok
            and not self.settings.dry_run
            and self._changed(outcome, annotated, written_states)
        ):
            wrote = self._write_annotations(ref, outcome, states, now)
            report.annotations_written = wrote is not None
        if applied.status.ok:
            # Not otherwise: the new states record scale events that were not made (a lost race, an
            # unreachable API, not the leader); the next tick decides again from the states before.
            self.memory.after_tick(ref, states, announced, wrote, new_keys if wrote is not None else None)
        return report

    def _changed(
        self,
        outcome: ClusterOutcome,
        annotated: dict[str, records.DecisionKey],
        written: dict[str, GroupState],
    ) -> bool:
        for g in outcome.groups:
            name = g.ref.group
            if records.decision_key(g.decision) != annotated.get(name):
                return True
            before = written.get(name)
            policy = g.view.policy
            if before is None or records.state_signature(before, policy) != records.state_signature(
                g.state, policy
            ):
                return True
        return False

    def _write_annotations(
        self, ref: ClusterRef, outcome: ClusterOutcome, states: dict[str, GroupState], now: datetime
    ) -> tuple[str, str] | None:
        if not self.may_act():
            return None
        decision_text = records.encode_decisions(outcome.decisions)
        state_text = records.encode_states(states)
        try:
            self.backend.set_annotations(ref, {keys.ANN_DECISION: decision_text, keys.ANN_STATE: state_text})
        except BackendError as e:
            self.telemetry.errors.labels(ErrorKind.ANNOTATION).inc()
            log.warning("%s: could not record the decision and state (%s); retrying next tick", ref, e)
            return None
        self.telemetry.writes.labels("annotations").inc()
        return decision_text, state_text

    def _decision_events(
        self, g: GroupOutcome, applied: ApplyOutcome, requester: str | None, now: datetime
    ) -> int:
        d = g.decision
        ref = g.ref
        data: dict[str, JSONScalar] = {
            "group": ref.group,
            "from": d.current,
            "to": d.target,
            "policy": d.policy,
            "mode": d.mode,
            "codes": ",".join(str(c) for c in d.codes),
            "dryRun": d.dry_run,
        }
        what = f"{ref.group}: {d.current} -> {d.target} workers"
        if d.mode == "bounds" and d.min_replicas is not None:
            what = f"{ref.group}: bounds [{d.min_replicas}, {d.max_replicas}]"
        if d.action is not Action.HOLD and not d.dry_run and applied.status is Applied.WRITTEN:
            kind = EventType.SCALED_UP if d.action is Action.UP else EventType.SCALED_DOWN
            message = f"{what}: {explain(d)}"
        elif d.action is not Action.HOLD and d.dry_run:
            kind, message = EventType.HELD, f"dry run, not applied: would set {what}: {explain(d)}"
        elif d.action is Action.HOLD and (NOTABLE_HOLDS.intersection(d.codes) or blocking_missing_data(d)):
            kind, message = EventType.HELD, f"{ref.group}: holding at {d.current}: {explain(d)}"
        else:
            return 0
        self._publish(Event(kind, message, now, ref.cluster_ref, requester, data=data))
        return 1

    def _problems(
        self,
        ref: ClusterRef,
        applied: ApplyOutcome,
        requester: str | None,
        now: datetime,
        report: ClusterReport,
    ) -> None:
        status = applied.status
        errors = self.telemetry.errors
        if status.ok:
            self.streaks.reset(("conflict", ref))
            self.streaks.reset(("unavailable", ref))
            self.problems.close(("conflict", ref))
            closed = self.problems.close(("failure", ref))
            if closed is not None:
                report.events += 1
                lasted = format_duration(now - closed.since)
                self._publish(
                    Event(
                        EventType.RECOVERED,
                        f"writes to {ref} work again (after {lasted})",
                        now,
                        ref,
                        requester,
                    )
                )
            return
        if status in (Applied.NOT_LEADER, Applied.BACKOFF):
            return
        if status is Applied.PERSISTENT_CONFLICT:
            errors.labels(ErrorKind.CONFLICT).inc()
            self.problems.open(("conflict", ref), now, applied.detail)
            report.events += 1
            self._publish(
                Event(EventType.CONFLICT, f"{ref}: {applied.detail}", now, ref, requester, severity="warning")
            )
            return
        if status is Applied.CONFLICT:
            errors.labels(ErrorKind.CONFLICT).inc()
            if self.streaks.bump(
                ("conflict", ref)
            ) >= self.settings.transient_before_alert and self.problems.open(
                ("conflict", ref), now, applied.detail
            ):
                report.events += 1
                self._publish(
                    Event(
                        EventType.CONFLICT,
                        f"{ref}: someone else keeps changing this cluster between our read and our write "
                        f"({applied.detail}); holding until it stops",
                        now,
                        ref,
                        requester,
                        severity="warning",
                    )
                )
            return
        kind = {
            Applied.UNAVAILABLE: ErrorKind.BACKEND_UNAVAILABLE,
            Applied.REFUSED: ErrorKind.BACKEND,
            Applied.INTERNAL: ErrorKind.INTERNAL,
        }[status]
        errors.labels(kind).inc()
        if (
            status is Applied.UNAVAILABLE
            and self.streaks.bump(("unavailable", ref)) < self.settings.transient_before_alert
        ):
            return
        if self.problems.open(("failure", ref), now, applied.detail):
            report.events += 1
            self._publish(
                Event(
                    EventType.FAILURE,
                    f"could not apply decisions to {ref}: {applied.detail}",
                    now,
                    ref,
                    requester,
                    severity="warning",
                )
            )

    def _limits(
        self, outcome: ClusterOutcome, requester: str | None, now: datetime, report: ClusterReport
    ) -> None:
        ref = outcome.view.ref
        beyond = [g for g in outcome.groups if g.beyond_cap]
        if not beyond:
            self.problems.close(("limit", ref))
            return
        g = beyond[0]
        if self.problems.open(("limit", ref), now, g.cap_source):
            report.events += 1
            who = f" of {outcome.view.limits.subject}" if outcome.view.limits.subject else ""
            self._publish(
                Event(
                    EventType.LIMIT_CLAMPED,
                    f"{ref} runs {g.view.obs.current} workers in group {g.ref.group}, above its limit "
                    f"of {g.cap} ({g.cap_source}{who}); clamping it to {g.cap} (idle workers are removed "
                    "first, busy ones when they become idle)",
                    now,
                    ref,
                    requester,
                    severity="warning",
                    data={
                        "group": g.ref.group,
                        "current": g.view.obs.current,
                        "cap": g.cap,
                        "source": g.cap_source,
                    },
                )
            )

    # ------------------------------------------------------------------ across clusters

    def sources_health(self, outcomes: list[ClusterOutcome], now: datetime) -> None:
        """Open or close one incident per metrics source, from the samples decisions found missing.

        Two cases are not an outage: a utilization sample with "no series" for a group with no ready
        worker yet, or with a worker ready for less than `NEW_WORKER_GRACE` (a new node's series appear
        only after its first scrapes: 15-30 s on Kubernetes, longer on a loaded laptop); and a
        source failing for fewer than `transient_before_alert` ticks in a row (a scrape gap, a restart).
        A source that cannot be reached is an outage at once, new workers or not.
        """
        failing: dict[str, list[ClusterRef]] = {}
        causes: dict[str, str] = {}
        healthy: set[str] = set()
        for c in outcomes:
            for g in c.groups:
                missing = set(unavailable_signals(g.decision))
                starting = self._starting(g, now)
                for sig in g.view.policy.spec.signals:
                    sample = g.view.obs.samples.get(sig.name)
                    if sample is None:
                        continue
                    if sig.name in missing:
                        cause = sample.unavailable or ""
                        if sig.type == "utilization" and "no series" in cause and starting:
                            continue
                        refs = failing.setdefault(sample.source, [])
                        if c.view.ref not in refs:
                            refs.append(c.view.ref)
                        causes.setdefault(sample.source, sample.unavailable or "no value")
                    elif sample.available:
                        healthy.add(sample.source)
        for source, refs in failing.items():
            self.telemetry.metrics_available.labels(source).set(0)
            if self.streaks.bump(("source:" + source, None)) < self.settings.transient_before_alert:
                continue
            only = refs[0] if len(refs) == 1 else None
            if self.sources.open(source, now, causes[source], context=only):
                names = ", ".join(str(r) for r in refs[:5])
                if len(refs) > 5:
                    names += f" and {len(refs) - 5} more"
                self._publish(
                    Event(
                        EventType.METRICS_UNAVAILABLE,
                        f"{source}: signals unavailable for {names} ({causes[source]}); their policies apply "
                        "onMissingData (hold: no scale-down) until the data is back",
                        now,
                        only,
                        severity="warning",
                        data={"source": source, "clusters": len(refs), "cause": causes[source]},
                    )
                )
        for source in healthy - failing.keys():
            self.telemetry.metrics_available.labels(source).set(1)
            self.streaks.reset(("source:" + source, None))
            closed = self.sources.close(source)
            if closed is not None:
                lasted = format_duration(now - closed.since)
                self._publish(
                    Event(
                        EventType.METRICS_RECOVERED,
                        f"{source}: signals available again after {lasted}; scaling follows the data again",
                        now,
                        closed.context,
                        data={"source": source, "seconds": int((now - closed.since).total_seconds())},
                    )
                )

    def tick_failed(self, reason: str, now: datetime) -> None:
        self.telemetry.errors.labels(ErrorKind.LIST).inc()
        if self.streaks.bump(("list", None)) >= self.settings.transient_before_alert and self.problems.open(
            ("list", None), now, reason
        ):
            self._publish(
                Event(
                    EventType.FAILURE,
                    f"cannot list the managed clusters: {reason}; nothing is scaled until this works",
                    now,
                    severity="warning",
                )
            )

    def tick_succeeded(self, now: datetime) -> None:
        self.streaks.reset(("list", None))
        closed = self.problems.close(("list", None))
        if closed is not None:
            self._publish(
                Event(
                    EventType.RECOVERED,
                    f"listing the managed clusters works again (after {format_duration(now - closed.since)})",
                    now,
                )
            )
