"""The controller's own Prometheus metrics (served on `/metrics` by controller/http.py).

Names are a contract with `deploy/base/monitoring.yaml` and docs/deploy.md section 7: `rayops_leader`,
`rayops_ticks_total{outcome}`, `rayops_last_successful_tick_timestamp_seconds`,
`rayops_metrics_available{source}`, `rayops_policy_set_valid`. The rest describe what the loop did:
decisions by action and reason code, desired and current workers per group, tick duration, errors by
kind, writes by kind, metrics requests per tick.

Each `ControllerMetrics` has its own registry, so tests (and two controllers in one process) never
collide in prometheus-client's global one. Label values are bounded: reason codes and error kinds are
enums; the per-group gauges are removed when a group disappears.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from controller.domain import Decision, GroupRef

__all__ = ["CONTENT_TYPE_LATEST", "ControllerMetrics", "ErrorKind"]


class ErrorKind:
    """The `kind` label of `rayops_errors_total`: what the loop did about the error (style.md B5)."""

    CONFLICT = "conflict"  # a lost write race: hold, re-read next tick
    BACKEND_UNAVAILABLE = "backend_unavailable"  # transient API trouble: retry next tick
    BACKEND = "backend"  # a refusal the backend explained (unsafe removal, mode refused, ...)
    LIST = "list"  # the clusters could not be listed: the whole tick is skipped
    INTERNAL = "internal"  # a bug: logged with its trace, counted, the next tick runs
    ANNOTATION = "annotation"  # the decision/state annotations could not be written
    HOUSEKEEPING = "housekeeping"  # expiry, stuck detection or removal clean-up failed


class ControllerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.leader = Gauge(
            "rayops_leader", "1 on the replica that holds the lease (or lock), else 0", registry=r
        )
        self.ticks = Counter(
            "rayops_ticks", "Reconcile ticks run by the leader, by outcome", ["outcome"], registry=r
        )
        self.last_success = Gauge(
            "rayops_last_successful_tick_timestamp_seconds",
            "Unix time of the last tick that completed (every cluster observed and decided)",
            registry=r,
        )
        self.tick_duration = Histogram(
            "rayops_tick_duration_seconds",
            "Wall time of one reconcile tick",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 60),
            registry=r,
        )
        self.tick_overruns = Counter(
            "rayops_tick_overruns",
            "Ticks skipped because the previous one was still running (never queued)",
            registry=r,
        )
        self.decisions = Counter(
            "rayops_decisions",
            "Decisions made, by action and by each reason code they carried",
            ["action", "reason"],
            registry=r,
        )
        self.desired = Gauge(
            "rayops_desired_workers",
            "Workers the last decision asked for",
            ["namespace", "cluster", "group"],
            registry=r,
        )
        self.current = Gauge(
            "rayops_current_workers",
            "Workers the group asked for when observed",
            ["namespace", "cluster", "group"],
            registry=r,
        )
        self.metrics_available = Gauge(
            "rayops_metrics_available",
            "1 while the signals from this source are available, 0 during an incident",
            ["source"],
            registry=r,
        )
        self.metrics_requests = Gauge(
            "rayops_metrics_requests_per_tick", "HTTP requests the last tick's metrics fetch made", registry=r
        )
        self.errors = Counter(
            "rayops_errors", "Errors, by what the loop did about them", ["kind"], registry=r
        )
        self.writes = Counter(
            "rayops_cluster_writes",
            "Writes to clusters, by kind (apply, annotations, finish, delete)",
            ["kind"],
            registry=r,
        )
        self.policy_set_valid = Gauge(
            "rayops_policy_set_valid",
            "1 when the policy directory's last load was accepted, 0 while it is refused",
            registry=r,
        )
        self.managed_clusters = Gauge(
            "rayops_managed_clusters", "Opted-in clusters seen by the last tick", registry=r
        )
        self._groups: set[GroupRef] = set()

    def record_decisions(self, decisions: Iterable[Decision]) -> None:
        seen: set[GroupRef] = set()
        for d in decisions:
            for code in dict.fromkeys(d.codes):
                self.decisions.labels(str(d.action), str(code)).inc()
            labels = (d.ref.namespace, d.ref.cluster, d.ref.group)
            self.desired.labels(*labels).set(d.target)
            self.current.labels(*labels).set(d.current)
            seen.add(d.ref)
        for gone in self._groups - seen:
            labels = (gone.namespace, gone.cluster, gone.group)
            for g in (self.desired, self.current):
                try:
                    g.remove(*labels)
                except KeyError:
                    pass
        self._groups = seen

    def render(self) -> bytes:
        return generate_latest(self.registry)
