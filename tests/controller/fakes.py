"""Test doubles for the loop: a metrics source answering from a table, a backend with named workers.

`TableMetrics` is a `MetricsSource` whose values the test sets per (group, signal type); anything not
set is an explicit "unavailable" sample, as real sources report it (never a silent 0). `down` makes
every sample unavailable, like a Prometheus that stopped.

`WorkerBackend` is the in-memory backend (tests/backends checks it against the contract) plus what a
scale-down needs: named workers per group, each idle unless the test marks it busy. It keeps the
memory backend's guarded writes (versions, ConflictError) and its typed errors.
"""

from __future__ import annotations

import builtins
import itertools
from collections.abc import Collection, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from controller.backends.base import ApplyResult, GroupStatus, ManagedCluster
from controller.backends.memory import MemoryBackend
from controller.domain import Activity, ClusterRef, Decision, GroupRef, Sample, SignalSpec, SignalType, Worker
from controller.metrics.base import FetchResult, MetricTarget, Support

T0 = datetime(2026, 11, 26, 12, 0, 0).astimezone()


class TableMetrics:
    def __init__(self, name: str = "table") -> None:
        self.name = name
        self.values: dict[tuple[GroupRef, SignalType], float] = {}
        self.down: str | None = None
        self.fetches: list[tuple[int, int]] = []  # (targets, signals) per fetch

    def set(self, ref: GroupRef, kind: SignalType, value: float) -> None:
        self.values[(ref, kind)] = value

    def supports(self, spec: SignalSpec) -> Support:
        if spec.type == SignalType.PROMQL:
            return Support(False, "the table source has no PromQL")
        return Support(True)

    def fetch(
        self, targets: Sequence[MetricTarget], signals: Collection[SignalSpec], now: datetime
    ) -> FetchResult:
        self.fetches.append((len(targets), len(signals)))
        samples: dict[GroupRef, dict[SignalSpec, Sample]] = {}
        for t in targets:
            per: dict[SignalSpec, Sample] = {}
            for spec in signals:
                value = self.values.get((t.ref, spec.type))
                if self.down is not None:
                    per[spec] = Sample.missing(self.down, self.name)
                elif value is None:
                    per[spec] = Sample.missing("no series", self.name)
                else:
                    per[spec] = Sample.ok(value, now, self.name)
            samples[t.ref] = per
        return FetchResult(samples=samples, requests=len(signals))


class WorkerBackend(MemoryBackend):
    """MemoryBackend with named, individually idle or busy workers (removal needs names)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.workers: dict[GroupRef, list[str]] = {}
        self.busy: set[str] = set()
        self._names = itertools.count()

    def add(
        self,
        name: str,
        replicas: int = 0,
        *,
        group: str = "cpu",
        max_replicas: int = 10,
        annotations: Mapping[str, str] | None = None,
        labels: Mapping[str, str] | None = None,
        namespace: str = "team-a",
        resources: Mapping[str, float] | None = None,
    ) -> ClusterRef:
        ref = ClusterRef(namespace, name)
        self.add_cluster(
            ref,
            [GroupStatus(group, replicas, replicas, 0, max_replicas, dict(resources or {"CPU": 1.0}))],
            labels={"rayops.io/managed": "true", **(labels or {})},
            annotations=annotations,
        )
        self._sync(GroupRef(namespace, name, group), replicas)
        return ref

    def _sync(self, g: GroupRef, replicas: int) -> None:
        names = self.workers.setdefault(g, [])
        while len(names) < replicas:
            names.append(f"{g.cluster}-{g.group}-w{next(self._names)}")

    def list_clusters(self) -> builtins.list[ManagedCluster]:
        out = []
        for c in super().list_clusters():
            groups = []
            for g in c.groups:
                names = self.workers.get(g.ref, [])
                workers = tuple(
                    Worker(
                        n,
                        Activity.BUSY if n in self.busy else Activity.IDLE,
                        ready=True,
                        started_at=None,
                    )
                    for n in names
                )
                groups.append(replace(g, workers=workers, ready=len(workers)))
            out.append(replace(c, groups=tuple(groups)))
        return out

    def apply(self, cluster: ManagedCluster, decisions: Sequence[Decision]) -> ApplyResult:
        result = super().apply(cluster, decisions)
        if result.written:
            for d in decisions:
                if d.dry_run or d.mode != "owner":
                    continue
                names = self.workers.setdefault(d.ref, [])
                for victim in d.remove:
                    if victim in names:
                        names.remove(victim)
                self._sync(d.ref, d.target)
        return result

    def replicas(self, ref: ClusterRef, group: str = "cpu") -> int:
        """The count the group asks for now (what a decision wrote), opted in or not."""
        with self._lock:
            return self._find(ref).groups[group].replicas


class Clock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now
