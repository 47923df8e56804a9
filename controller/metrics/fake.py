"""In-memory metrics and activity sources for tests of the loop and the backends.

They keep the same contract as the real sources (tests/metrics/test_contract.py runs the same suite
against all of them): a sample for every (target, signal) asked for, an explicit reason where there is
no value, never a made-up 0. Set values with `set`, reasons with `fail`; everything else is
"no series".
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime

from controller.domain import Activity, ClusterRef, GroupRef, NodeActivity, Sample, SignalSpec, SignalType
from controller.metrics.base import ClusterActivity, FetchResult, MetricTarget, Support, as_utc

__all__ = ["FakeActivitySource", "FakeMetricsSource"]


class FakeMetricsSource:
    """Answers what was `set` (value) or `fail`ed (reason) per (group, signal); counts fetches."""

    def __init__(self, name: str = "fake", types: Collection[SignalType] = tuple(SignalType)) -> None:
        self.name = name
        self.types = frozenset(types)
        self._values: dict[tuple[GroupRef, SignalSpec], float | str] = {}
        self.fetches: list[tuple[list[GroupRef], list[SignalSpec], datetime]] = []

    def set(self, ref: GroupRef, spec: SignalSpec, value: float) -> None:
        self._values[(ref, spec)] = float(value)

    def fail(self, ref: GroupRef, spec: SignalSpec, reason: str) -> None:
        self._values[(ref, spec)] = reason

    def supports(self, spec: SignalSpec) -> Support:
        return Support(spec.type in self.types, f"{self.name} is configured for {sorted(self.types)} only")

    def fetch(
        self, targets: Sequence[MetricTarget], signals: Collection[SignalSpec], now: datetime
    ) -> FetchResult:
        now = as_utc(now)
        specs = list(dict.fromkeys(signals))
        self.fetches.append(([t.ref for t in targets], specs, now))
        samples: dict[GroupRef, dict[SignalSpec, Sample]] = {}
        for t in targets:
            row = samples.setdefault(t.ref, {})
            for spec in specs:
                if not self.supports(spec):
                    row[spec] = Sample.missing(f"not supported: {self.supports(spec).reason}", self.name)
                    continue
                got = self._values.get((t.ref, spec))
                if isinstance(got, float):
                    row[spec] = Sample.ok(got, now, self.name)
                else:
                    row[spec] = Sample.missing(got or "no series: nothing set for this target", self.name)
        return FetchResult(samples=samples)


class FakeActivitySource:
    """Node activity set per cluster; a cluster without any is unavailable, never "all idle"."""

    def __init__(self) -> None:
        self._nodes: dict[ClusterRef, tuple[NodeActivity, ...]] = {}
        self._down: dict[ClusterRef, str] = {}

    def set_nodes(self, cluster: ClusterRef, nodes: Sequence[NodeActivity]) -> None:
        self._nodes[cluster] = tuple(nodes)
        self._down.pop(cluster, None)

    def set_node(
        self, cluster: ClusterRef, node_id: str, activity: Activity, pod_name: str | None = None
    ) -> None:
        others = [n for n in self._nodes.get(cluster, ()) if n.node_id != node_id]
        self.set_nodes(cluster, [*others, NodeActivity(node_id, "127.0.0.1", activity, pod_name)])

    def fail(self, cluster: ClusterRef, reason: str) -> None:
        self._down[cluster] = reason

    def activity(
        self, clusters: Mapping[ClusterRef, str | None], now: datetime
    ) -> dict[ClusterRef, ClusterActivity]:
        now = as_utc(now)
        out = {}
        for c in clusters:
            if c in self._down:
                out[c] = ClusterActivity(c, at=now, unavailable=self._down[c])
            elif c in self._nodes:
                out[c] = ClusterActivity(c, self._nodes[c], now)
            else:
                out[c] = ClusterActivity(c, at=now, unavailable="no activity known for this cluster")
        return out
