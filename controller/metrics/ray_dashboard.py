"""Pending demand per resource shape and node activity, from each cluster's Ray dashboard.

Supported Ray: 2.51 to 2.60 (recorded answers of 2.51.1, 2.60.0 and 2.60.0 under autoscaler v2 are
tested in tests/metrics/test_dashboard_versions.py; the shapes read are listed in `dashboard_shapes`).

Per cluster and tick, pending demand costs one request (`/api/cluster_status`; a second,
`?format=1`, when autoscaler v2 leaves the JSON report empty). Activity costs three more
(`/api/v0/nodes` ALIVE only, `/api/v0/tasks` not finished, `/api/v0/actors` ALIVE), reuses the
status answer of the same tick for per-node logical usage, and asks `/nodes/{id}` once per new node
for the pod name Ray knows as `RAY_CLOUD_INSTANCE_ID` (cached: it never changes for a node id).
Clusters are fetched concurrently, bounded by `concurrency`; the whole fetch is bounded by
`http.timeout_s`.

Auth: behind OpenShift's OAuth proxy or a Route, `Authorization: Bearer <token>`
(`HttpSettings(bearer_token=... or token_file=...)`); with Ray's own token auth,
`HttpSettings(auth_header="x-ray-authorization", ...)`.
"""

from __future__ import annotations

import logging
import threading
import urllib.parse
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from functools import partial
from typing import Any

import requests

from controller.domain import ClusterRef, GroupRef, Sample, SignalSpec, SignalType
from controller.metrics.base import ClusterActivity, FetchResult, MetricTarget, Support, as_utc
from controller.metrics.dashboard_shapes import (
    DashboardError,
    DashboardShapeError,
    DemandReport,
    StateList,
    classify_nodes,
    parse_cluster_status,
    parse_instance_id,
    parse_state_list,
    parse_status_text,
    unwrap,
)
from controller.metrics.demand import ShapeDemand, attribute_demand
from controller.metrics.http import HttpSettings, describe_error, run_bounded
from controller.metrics.incidents import IncidentLog

__all__ = ["ACTORS_PATH", "NODES_PATH", "TASKS_PATH", "RayDashboardSource", "kuberay_dashboard_url"]

log = logging.getLogger(__name__)
SOURCE = "ray-dashboard"
MAX_LIST = 10000  # the State API's own ceiling (RAY_MAX_LIMIT_FROM_API_SERVER)

NODES_PATH = "/api/v0/nodes?" + urllib.parse.urlencode(
    [("limit", MAX_LIST), ("filter_keys", "state"), ("filter_predicates", "="), ("filter_values", "ALIVE")]
)
TASKS_PATH = "/api/v0/tasks?" + urllib.parse.urlencode(
    [
        ("detail", "true"),
        ("limit", MAX_LIST),
        ("filter_keys", "state"),
        ("filter_predicates", "!="),
        ("filter_values", "FINISHED"),
        ("filter_keys", "state"),
        ("filter_predicates", "!="),
        ("filter_values", "FAILED"),
    ]
)
ACTORS_PATH = "/api/v0/actors?" + urllib.parse.urlencode(
    [("limit", MAX_LIST), ("filter_keys", "state"), ("filter_predicates", "="), ("filter_values", "ALIVE")]
)
STATUS_PATH = "/api/cluster_status"
STATUS_TEXT_PATH = "/api/cluster_status?format=1"


def kuberay_dashboard_url(ref: ClusterRef) -> str:
    """The in-cluster dashboard of a KubeRay cluster: its head Service, port 8265."""
    return f"http://{ref.name}-head-svc.{ref.namespace}.svc.cluster.local:8265"


class RayDashboardSource:
    """`MetricsSource` (pendingDemand) and `ActivitySource` over Ray's dashboard HTTP API.

    Parameters: `http` (timeout bounding a whole fetch, retries, token, CA bundle); `url_for`, the
    dashboard URL of a cluster when a target carries none (e.g. `kuberay_dashboard_url`);
    `staleness_s`, the oldest v1 autoscaler report accepted (Ray refreshes it every ~5 s);
    `concurrency`, requests in flight across clusters; `resolve_pod_names`, whether to ask
    `/nodes/{id}` for `RAY_CLOUD_INSTANCE_ID`.
    """

    name = SOURCE

    def __init__(
        self,
        *,
        http: HttpSettings | None = None,
        url_for: Callable[[ClusterRef], str | None] | None = None,
        staleness_s: float = 60.0,
        concurrency: int = 8,
        resolve_pod_names: bool = True,
    ) -> None:
        self.http = http or HttpSettings()
        self.url_for = url_for
        self.staleness_s = staleness_s
        self.resolve_pod_names = resolve_pod_names
        self._session = self.http.session()
        self._tokens = self.http.tokens()
        self._executor = ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="dashboard")
        self._incidents = IncidentLog(log, SOURCE)
        self._pods: dict[tuple[str, str], str | None] = {}  # (url, node id) -> instance id
        self._status_cache: dict[str, tuple[datetime, DemandReport | BaseException]] = {}
        self._lock = threading.Lock()
        self.requests_sent = 0

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._session.close()

    # ------------------------------------------------------------------ MetricsSource

    def supports(self, spec: SignalSpec) -> Support:
        if spec.type == SignalType.PENDING_DEMAND:
            return Support(True)
        return Support(False, f"the Ray dashboard gives pending demand only, not {spec.type}")

    def fetch(
        self, targets: Sequence[MetricTarget], signals: Collection[SignalSpec], now: datetime
    ) -> FetchResult:
        now = as_utc(now)
        samples: dict[GroupRef, dict[SignalSpec, Sample]] = {t.ref: {} for t in targets}
        wanted = [s for s in dict.fromkeys(signals) if self.supports(s)]
        for spec in dict.fromkeys(signals):
            if spec not in wanted:
                for t in targets:
                    samples[t.ref][spec] = Sample.missing(
                        f"not supported: {self.supports(spec).reason}", SOURCE
                    )
        if not wanted or not targets:
            return FetchResult(samples=samples)
        by_cluster: dict[ClusterRef, list[MetricTarget]] = {}
        for t in targets:
            by_cluster.setdefault(t.ref.cluster_ref, []).append(t)
        urls = {c: self._url(c, ts) for c, ts in by_cluster.items()}
        before = self.requests_sent
        reports = self._statuses({c: u for c, u in urls.items() if u}, now)
        unplaced: dict[ClusterRef, tuple[ShapeDemand, ...]] = {}
        for cluster, group_targets in by_cluster.items():
            report = reports.get(cluster, "no dashboard URL known for this cluster")
            reason = self._demand_problem(cluster, report, now)
            if reason is not None:
                for t in group_targets:
                    for spec in wanted:
                        samples[t.ref][spec] = Sample.missing(reason, SOURCE)
                continue
            assert isinstance(report, DemandReport)
            attribution = attribute_demand(report.demand, {t.ref: t.worker_resources for t in group_targets})
            at = report.at or now
            for t in group_targets:
                for spec in wanted:
                    samples[t.ref][spec] = Sample.ok(
                        attribution.amount(t.ref, spec.resource or "CPU"), at, SOURCE
                    )
            unplaced[cluster] = attribution.unplaced
            key = f"cluster {cluster}: pending demand no worker group fits"
            if attribution.unplaced:
                self._incidents.fail(key, ", ".join(str(d) for d in attribution.unplaced))
            else:
                self._incidents.ok(key)
        return FetchResult(samples=samples, unplaced=unplaced, requests=self.requests_sent - before)

    def demand(
        self, clusters: Mapping[ClusterRef, str | None], now: datetime
    ) -> dict[ClusterRef, DemandReport | str]:
        """The cluster-wide demand report (all shapes, not attributed), or the reason it is missing."""
        now = as_utc(now)
        reports = self._statuses({c: u for c, u in clusters.items() if u}, now)
        out: dict[ClusterRef, DemandReport | str] = {}
        for c in clusters:
            report = reports.get(c, "no dashboard URL known for this cluster")
            problem = self._demand_problem(c, report, now)
            out[c] = problem if problem is not None else report  # type: ignore[assignment]
        return out

    def _demand_problem(self, cluster: ClusterRef, report: DemandReport | str, now: datetime) -> str | None:
        key = f"cluster {cluster}: pending demand"
        if isinstance(report, str):
            self._incidents.fail(key, report)
            return report
        if report.at is not None:
            age = (now - report.at).total_seconds()
            if age > self.staleness_s:
                reason = f"stale: the autoscaler report is {age:.0f} s old (limit {self.staleness_s:.0f} s)"
                self._incidents.fail(key, reason)
                return reason
        self._incidents.ok(key)
        return None

    # ------------------------------------------------------------------ ActivitySource

    def activity(
        self, clusters: Mapping[ClusterRef, str | None], now: datetime
    ) -> dict[ClusterRef, ClusterActivity]:
        now = as_utc(now)
        urls = {c: (u or (self.url_for(c) if self.url_for else None)) for c, u in clusters.items()}
        reachable = {c: u.rstrip("/") for c, u in urls.items() if u}
        jobs: dict[tuple[ClusterRef, str], Callable[[], Any]] = {}
        for c, u in reachable.items():
            jobs[(c, "nodes")] = partial(self._list, u + NODES_PATH, "nodes")
            jobs[(c, "tasks")] = partial(self._list, u + TASKS_PATH, "tasks")
            jobs[(c, "actors")] = partial(self._list, u + ACTORS_PATH, "actors")
            if not self._cached_status(u, now):
                jobs[(c, "status")] = partial(self._status, u)
        results = run_bounded(self._executor, jobs, self.http.timeout_s)
        for (c, kind), res in results.items():
            if kind == "status":
                with self._lock:
                    self._status_cache[reachable[c]] = (now, res)
        pod_jobs: dict[tuple[ClusterRef, str], Callable[[], Any]] = {}
        if self.resolve_pod_names:
            for c, u in reachable.items():
                nodes = results[(c, "nodes")]
                for n in nodes.rows if isinstance(nodes, StateList) else ():
                    node_id = str(n.get("node_id", ""))
                    if node_id and (u, node_id) not in self._pods:
                        pod_jobs[(c, node_id)] = partial(self._instance_id, u, node_id)
        pod_results = run_bounded(self._executor, pod_jobs, self.http.timeout_s) if pod_jobs else {}
        for (c, node_id), res in pod_results.items():
            if not isinstance(res, BaseException):
                with self._lock:
                    self._pods[(reachable[c], node_id)] = res
        out: dict[ClusterRef, ClusterActivity] = {}
        for c in clusters:
            key = f"cluster {c}: node activity"
            if c not in reachable:
                out[c] = ClusterActivity(c, at=now, unavailable="no dashboard URL known for this cluster")
                self._incidents.fail(key, "no dashboard URL known")
                continue
            u = reachable[c]
            nodes = results[(c, "nodes")]
            if isinstance(nodes, BaseException):
                reason = self._reason(nodes)
                out[c] = ClusterActivity(c, at=now, unavailable=reason)
                self._incidents.fail(key, reason)
                continue
            status = self._cached_status(u, now)
            usage: Any = "not fetched"
            if status is not None:
                got = status[1]
                usage = got.usage_by_node if isinstance(got, DemandReport) else self._reason(got)
            tasks, actors = results[(c, "tasks")], results[(c, "actors")]
            activity = classify_nodes(
                nodes,
                tasks if isinstance(tasks, StateList) else self._reason(tasks),
                actors if isinstance(actors, StateList) else self._reason(actors),
                usage,
                {n.get("node_id", ""): self._pods.get((u, str(n.get("node_id", "")))) for n in nodes.rows},
            )
            out[c] = ClusterActivity(c, activity, now)
            self._incidents.ok(key)
        self._forget_old(now)
        return out

    # ------------------------------------------------------------------ HTTP

    def _url(self, cluster: ClusterRef, targets: Sequence[MetricTarget]) -> str | None:
        url = next((t.dashboard_url for t in targets if t.dashboard_url), None)
        if url is None and self.url_for is not None:
            url = self.url_for(cluster)
        return url.rstrip("/") if url else None

    def _get(self, url: str) -> Any:
        with self._lock:
            self.requests_sent += 1
        resp = self._session.get(
            url, timeout=self.http.attempt_timeout_s, headers=self.http.headers(self._tokens)
        )
        resp.raise_for_status()
        return resp.json()

    def _status(self, base: str) -> DemandReport:
        report = parse_cluster_status(unwrap(self._get(base + STATUS_PATH), STATUS_PATH))
        if report is None:  # autoscaler v2: no JSON report; the text is built from the GCS on request
            data = unwrap(self._get(base + STATUS_TEXT_PATH), STATUS_TEXT_PATH)
            text = data.get("clusterStatus")
            if not isinstance(text, str):
                raise DashboardShapeError(f"{STATUS_TEXT_PATH}: clusterStatus is not text")
            report = parse_status_text(text)
        return report

    def _statuses(
        self, urls: Mapping[ClusterRef, str], now: datetime
    ) -> dict[ClusterRef, DemandReport | str]:
        jobs = {c: partial(self._status, u) for c, u in urls.items() if not self._cached_status(u, now)}
        results = run_bounded(self._executor, jobs, self.http.timeout_s) if jobs else {}
        with self._lock:
            for c, res in results.items():
                self._status_cache[urls[c]] = (now, res)
        out: dict[ClusterRef, DemandReport | str] = {}
        for c, u in urls.items():
            cached = self._cached_status(u, now)
            assert cached is not None
            out[c] = cached[1] if isinstance(cached[1], DemandReport) else self._reason(cached[1])
        return out

    def _cached_status(self, url: str, now: datetime) -> tuple[datetime, DemandReport | BaseException] | None:
        """The status answer fetched earlier in the same tick (same `now`), shared by fetch and activity."""
        with self._lock:
            hit = self._status_cache.get(url)
        return hit if hit is not None and hit[0] == now else None

    def _forget_old(self, now: datetime) -> None:
        with self._lock:
            for url in [u for u, (t, _) in self._status_cache.items() if t != now]:
                del self._status_cache[url]

    def _list(self, url: str, what: str) -> StateList:
        return parse_state_list(unwrap(self._get(url), what), what)

    def _instance_id(self, base: str, node_id: str) -> str | None:
        return parse_instance_id(unwrap(self._get(f"{base}/nodes/{node_id}"), "/nodes/{id}"))

    def _reason(self, err: BaseException) -> str:
        if isinstance(err, DashboardShapeError):
            return f"dashboard changed shape: {err}"
        if isinstance(err, DashboardError):
            return f"dashboard error: {err}"
        if isinstance(err, requests.HTTPError) or not isinstance(err, ValueError):
            return describe_error(err, self.http.timeout_s)
        return f"garbage answer: {str(err)[:200]}"
