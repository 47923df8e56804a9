"""The metrics seams: what the controller asks of a metrics source, and what comes back.

Two protocols (contracts.md section 5):

- `MetricsSource`: signal values per worker group (pending demand, utilization, PromQL), each one a
  `Sample` with a value and its time, or an explicit "unavailable" with the reason. Never a silent 0.
- `ActivitySource`: which Ray nodes of a cluster run something (busy) and which run nothing (idle),
  keyed by node id, with node IP and pod name, for the backends that choose whom to remove.

`PendingTaskCounter` is the cluster-level pending-task count that both Prometheus-side sources can
give (`ray_tasks` carries no resource shape, so it is not a policy signal; it lets the Prometheus and
direct sources be checked against each other and against the dashboard).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

from controller.domain import ClusterRef, GroupRef, NodeActivity, Sample, SignalSpec
from controller.metrics.demand import ShapeDemand

if TYPE_CHECKING:
    from controller.backends.base import ManagedCluster

__all__ = [
    "ActivitySource",
    "ClusterActivity",
    "FetchResult",
    "MetricTarget",
    "MetricsSource",
    "PendingTaskCounter",
    "Support",
    "as_utc",
    "targets_for",
]


@dataclass(frozen=True)
class MetricTarget:
    """One worker group to fetch signals for, with what sources need beyond its name.

    `worker_resources` (what one worker provides) lets pending demand per shape be attributed to the
    group whose workers fit it (`controller.metrics.demand`). `dashboard_url` reaches the cluster's Ray
    dashboard (the head Service's port 8265 in the cluster, an OpenShift Route, or a local head).
    """

    ref: GroupRef
    worker_resources: Mapping[str, float] = field(default_factory=lambda: {"CPU": 1.0})
    dashboard_url: str | None = None


def targets_for(clusters: Sequence[ManagedCluster]) -> list[MetricTarget]:
    """One target per worker group of the clusters a backend listed."""
    return [
        MetricTarget(g.ref, dict(g.worker_resources), c.dashboard_url) for c in clusters for g in c.groups
    ]


@dataclass(frozen=True)
class Support:
    """Whether a source can give a signal; falsy with the reason when not (for load-time errors)."""

    ok: bool
    reason: str = ""

    def __bool__(self) -> bool:
        return self.ok


@dataclass(frozen=True)
class FetchResult:
    """The answer of one fetch: a Sample for every (target, signal) asked for.

    `unplaced` lists, per cluster, pending demand no target group fits (reported, never dropped).
    `requests` counts the HTTP requests the fetch made (the benchmark's "queries per tick").
    """

    samples: Mapping[GroupRef, Mapping[SignalSpec, Sample]] = field(default_factory=dict)
    unplaced: Mapping[ClusterRef, tuple[ShapeDemand, ...]] = field(default_factory=dict)
    requests: int = 0

    def get(self, ref: GroupRef, spec: SignalSpec) -> Sample:
        """The sample, or an explicit "not fetched" one: a caller never sees a made-up value."""
        sample = self.samples.get(ref, {}).get(spec)
        return sample if sample is not None else Sample.missing("not fetched", source="none")


class MetricsSource(Protocol):
    """Signal values per worker group.

    Semantics every implementation keeps (the contract tests in tests/metrics/ check them):
    - `fetch` returns a Sample for every (target, signal) pair it was given: a value with the time
      the value refers to, or `Sample.missing(reason)` (timeout, HTTP error, garbage answer, no
      series, stale sample, NaN/Inf, a result without the mapping labels, unsupported signal).
      A missing value is never reported as 0; a real 0 (nothing pending) is a value.
    - It does not raise for anything the network or the upstream does; it raises only for
      programming errors.
    - It returns within its configured timeout, whatever the upstream does (a slow upstream gives
      "timeout" samples).
    - Each distinct signal is fetched once per call for all targets together, not once per cluster.
    - Trouble is logged once when it starts and once when it ends (`IncidentLog`), not every tick.
    - `now` is the tick's time (timezone-aware); staleness is judged against it.
    """

    name: str

    def supports(self, spec: SignalSpec) -> Support:
        """Whether this source can ever give `spec` (static: configuration, not current health)."""
        ...

    def fetch(
        self, targets: Sequence[MetricTarget], signals: Collection[SignalSpec], now: datetime
    ) -> FetchResult: ...


@dataclass(frozen=True)
class ClusterActivity:
    """The Ray nodes of one cluster and whether each runs anything.

    When the dashboard could not be read at all, `nodes` is empty and `unavailable` says why: the
    backends must then treat every worker of the cluster as UNKNOWN (busy), never as idle. Only ALIVE
    nodes are listed; a pod without a node here is starting, or its node is gone.
    """

    cluster: ClusterRef
    nodes: tuple[NodeActivity, ...] = ()
    at: datetime | None = None
    unavailable: str | None = None

    def by_node_id(self, node_id: str) -> NodeActivity | None:
        return next((n for n in self.nodes if n.node_id == node_id), None)

    def by_pod_name(self, pod_name: str) -> NodeActivity | None:
        return next((n for n in self.nodes if n.pod_name == pod_name), None)

    def by_ip(self, ip: str) -> list[NodeActivity]:
        return [n for n in self.nodes if n.node_ip == ip]


class ActivitySource(Protocol):
    """Node activity per cluster (contracts.md section 5), consumed by the backends.

    `clusters` maps each cluster to its dashboard URL (None when unknown). Every cluster asked for is
    in the answer. A node is IDLE only when every piece of evidence was fetched completely and none
    shows work; a node with any running task, alive actor or logical resource in use is BUSY; when
    the evidence is incomplete (a truncated list, a failed request) a node without evidence of work is
    UNKNOWN, which the backends treat as busy. Same timeout and logging rules as `MetricsSource`.
    """

    def activity(
        self, clusters: Mapping[ClusterRef, str | None], now: datetime
    ) -> dict[ClusterRef, ClusterActivity]: ...


class PendingTaskCounter(Protocol):
    """`sum(ray_tasks{State=~"PENDING_NODE_ASSIGNMENT|PENDING_ARGS_AVAIL"})` per cluster."""

    def pending_tasks(self, clusters: Collection[ClusterRef], now: datetime) -> dict[ClusterRef, Sample]: ...


def as_utc(now: datetime) -> datetime:
    """`now` as an aware UTC datetime (a naive one is taken to be UTC)."""
    return now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)
