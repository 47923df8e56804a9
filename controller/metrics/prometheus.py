"""Signals from Prometheus (or Thanos Querier on OpenShift), one instant query per signal per tick.

Ray pod metrics carry the mapping labels `namespace`, `ray_io_cluster`, `ray_io_group`
(`controller.keys.METRIC_MAPPING_LABELS`, relabelled by the PodMonitor in deploy/, written into the
file_sd file in laptop mode). Every built-in signal is aggregated `by` those labels, so one query
answers for all clusters and groups together, and each series maps back to one `GroupRef`. A PromQL
signal must already aggregate by them (controller/policy/promql.py checks that at load time).

Built-in signals ask for their value and the scrape time of their newest-oldest sample in the same
query (`label_replace(value, "rayops_part", "value") or label_replace(min(timestamp(x)), ..., "time")`),
so the staleness limit costs no extra request. PromQL signals carry the evaluation time only:
Prometheus' own lookback (5 min) is their staleness bound.

OpenShift monitoring, two endpoints (`PrometheusSource.openshift`):
- cluster-wide Thanos Querier, port 9091: one query per signal for every namespace. The controller's
  ServiceAccount needs the ClusterRole `cluster-monitoring-view` (read access to all namespaces'
  metrics: grant it knowingly).
- tenancy port 9092: every query must carry `namespace=<ns>` and only sees that namespace; the
  ServiceAccount needs `view` (get pods) in each managed namespace. Then the source sends one query per
  signal per namespace that has targets.
Both want the ServiceAccount token (`Authorization: Bearer`) and the service CA bundle.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Collection, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from operator import itemgetter
from typing import Any

from prometheus_api_client import PrometheusApiClientException, PrometheusConnect

from controller.domain import ClusterRef, GroupRef, Sample, SignalSpec, SignalType
from controller.keys import METRIC_LABEL_NAMESPACE, METRIC_MAPPING_LABELS
from controller.metrics.base import FetchResult, MetricTarget, Support, as_utc
from controller.metrics.http import SERVICE_ACCOUNT_TOKEN, HttpSettings, describe_error, run_bounded
from controller.metrics.incidents import IncidentLog
from controller.metrics.queries import CLUSTER_LABELS, PENDING_TASKS, Aggregate, utilization_aggregate

__all__ = ["OPENSHIFT_SERVICE_CA", "OPENSHIFT_THANOS", "PrometheusSource", "SeriesPoint", "parse_vector"]

log = logging.getLogger(__name__)

OPENSHIFT_THANOS = "https://thanos-querier.openshift-monitoring.svc.cluster.local"
OPENSHIFT_SERVICE_CA = "/var/run/secrets/kubernetes.io/serviceaccount/service-ca.crt"
PART_LABEL = "rayops_part"
SOURCE = "prometheus"


@dataclass(frozen=True)
class SeriesPoint:
    labels: Mapping[str, str]
    value: float
    at: float  # unix seconds


def parse_vector(result: Any) -> list[SeriesPoint]:
    """The `data.result` of an instant query as points; ValueError on anything but a vector."""
    if not isinstance(result, list):
        raise ValueError(f"result is {type(result).__name__}, not a vector")
    points = []
    for item in result:
        labels = item.get("metric") if isinstance(item, dict) else None
        if not isinstance(labels, dict):
            raise ValueError("a result item has no metric labels")
        pair = item.get("value")
        if not isinstance(pair, list) or len(pair) != 2:
            raise ValueError("a result item has no [time, value] pair (not an instant vector?)")
        points.append(SeriesPoint(labels, float(pair[1]), float(pair[0])))
    return points


@dataclass(frozen=True)
class _Plan:
    query: str
    by: tuple[str, ...]
    with_time: bool


def _combined(agg: Aggregate, by: Sequence[str]) -> str:
    value = f'label_replace({agg.promql(by)}, "{PART_LABEL}", "value", "", "")'
    at = f'label_replace({agg.promql_sample_time(by)}, "{PART_LABEL}", "time", "", "")'
    return f"{value} or {at}"


class PrometheusSource:
    """`MetricsSource` and `PendingTaskCounter` over the Prometheus HTTP API (prometheus-api-client).

    Parameters: `url` of Prometheus or Thanos Querier; `http` (timeout bounding a whole fetch, retries,
    bearer token or token file, CA bundle); `tenancy=True` for OpenShift's tenancy port (one query per
    signal per namespace); `staleness_s`, the oldest sample accepted; `concurrency`, queries in flight.
    """

    name = SOURCE

    def __init__(
        self,
        url: str,
        *,
        http: HttpSettings | None = None,
        tenancy: bool = False,
        staleness_s: float = 120.0,
        concurrency: int = 8,
    ) -> None:
        self.url = url.rstrip("/")
        self.http = http or HttpSettings()
        self.tenancy = tenancy
        self.staleness_s = staleness_s
        self._tokens = self.http.tokens()
        self._client = PrometheusConnect(
            url=self.url,
            retry=self.http.retry(),
            session=self.http.session(),
            timeout=self.http.attempt_timeout_s,  # type: ignore[arg-type]  # typed int, used as float
        )
        self._executor = ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="prom")
        self._incidents = IncidentLog(log, f"{SOURCE} {self.url}")
        self._lock = threading.Lock()
        self.queries_sent = 0  # every instant query sent, over the source's life

    @classmethod
    def openshift(
        cls,
        *,
        tenancy: bool,
        url: str | None = None,
        token_file: str = SERVICE_ACCOUNT_TOKEN,
        ca_bundle: str = OPENSHIFT_SERVICE_CA,
        timeout_s: float = 10.0,
        staleness_s: float = 180.0,
    ) -> PrometheusSource:
        """Thanos Querier of OpenShift monitoring; see the module docstring for the roles each needs."""
        port = 9092 if tenancy else 9091
        http = HttpSettings(timeout_s=timeout_s, token_file=token_file, ca_bundle=ca_bundle)
        return cls(url or f"{OPENSHIFT_THANOS}:{port}", http=http, tenancy=tenancy, staleness_s=staleness_s)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._client.close()

    # ------------------------------------------------------------------ MetricsSource

    def supports(self, spec: SignalSpec) -> Support:
        if spec.type == SignalType.UTILIZATION:
            try:
                utilization_aggregate(spec.resource)
            except ValueError as e:
                return Support(False, str(e))
            return Support(True)
        if spec.type == SignalType.PROMQL:
            return Support(bool(spec.query), "a promql signal needs a query")
        return Support(
            False,
            f"{SOURCE} cannot give {spec.type}: ray_tasks has no resource-shape label; pending demand per "
            "shape comes from the Ray dashboard source",
        )

    def _plan(self, spec: SignalSpec) -> _Plan:
        if spec.type == SignalType.PROMQL:
            assert spec.query is not None
            return _Plan(spec.query, METRIC_MAPPING_LABELS, with_time=False)
        agg = utilization_aggregate(spec.resource)
        return _Plan(_combined(agg, METRIC_MAPPING_LABELS), METRIC_MAPPING_LABELS, with_time=True)

    def fetch(
        self, targets: Sequence[MetricTarget], signals: Collection[SignalSpec], now: datetime
    ) -> FetchResult:
        now = as_utc(now)
        refs = [t.ref for t in targets]
        samples: dict[GroupRef, dict[SignalSpec, Sample]] = {r: {} for r in refs}
        plans: dict[SignalSpec, _Plan] = {}
        for spec in dict.fromkeys(signals):
            support = self.supports(spec)
            if support:
                plans[spec] = self._plan(spec)
            else:
                for r in refs:
                    samples[r][spec] = Sample.missing(f"not supported: {support.reason}", SOURCE)
        if not refs:
            return FetchResult(samples=samples)
        namespaces = self._namespaces(r.namespace for r in refs)
        answers = self._run(
            {(spec, ns): plan.query for spec, plan in plans.items() for ns in namespaces}, now
        )
        keyed: dict[tuple[str, ...], GroupRef] = {(r.namespace, r.cluster, r.group): r for r in refs}
        for spec, plan in plans.items():
            per_ns = {ns: answers[(spec, ns)] for ns in namespaces}
            for key, sample in self._map(spec.key, plan, per_ns, list(keyed), now).items():
                samples[keyed[key]][spec] = sample
        return FetchResult(samples=samples, requests=len(answers))

    # ------------------------------------------------------------------ PendingTaskCounter

    def pending_tasks(self, clusters: Collection[ClusterRef], now: datetime) -> dict[ClusterRef, Sample]:
        now = as_utc(now)
        refs = list(dict.fromkeys(clusters))
        if not refs:
            return {}
        namespaces = self._namespaces(c.namespace for c in refs)
        plan = _Plan(_combined(PENDING_TASKS, CLUSTER_LABELS), CLUSTER_LABELS, with_time=True)
        answers = self._run({("pending tasks", ns): plan.query for ns in namespaces}, now)
        per_ns = {ns: answers[("pending tasks", ns)] for ns in namespaces}
        keyed: dict[tuple[str, ...], ClusterRef] = {(c.namespace, c.name): c for c in refs}
        mapped = self._map("pending tasks", plan, per_ns, list(keyed), now)
        return {keyed[k]: s for k, s in mapped.items()}

    # ------------------------------------------------------------------ internals

    def query_vector(self, query: str, now: datetime, namespace: str | None = None) -> list[SeriesPoint]:
        """One instant query evaluated at `now`; raises on any failure (callers turn it into a reason)."""
        params: dict[str, str] = {"time": f"{as_utc(now).timestamp():.3f}"}
        if namespace is not None:
            params["namespace"] = namespace
        self._client.headers = self.http.headers(self._tokens)
        with self._lock:
            self.queries_sent += 1
        try:
            body = self._client.custom_query(query, params=params)
        except PrometheusApiClientException as e:
            raise _HttpStatusError(str(e)) from e
        except (KeyError, TypeError) as e:
            raise ValueError(f"answer has no data.result ({e})") from e
        return parse_vector(body)

    def _namespaces(self, namespaces: Iterable[str]) -> list[str | None]:
        """Tenancy: one query per namespace with targets. Cluster-wide: one query for all (None)."""
        return list(sorted(set(namespaces))) if self.tenancy else [None]

    def _run(self, queries: Mapping[tuple[Any, str | None], str], now: datetime) -> dict[Any, Any]:
        """Send every query concurrently; each answer is a list of points or the exception it raised."""
        jobs = {k: partial(self.query_vector, q, now, k[1]) for k, q in queries.items()}
        return dict(run_bounded(self._executor, jobs, self.http.timeout_s))

    def _map(
        self,
        what: str,
        plan: _Plan,
        per_ns: Mapping[str | None, Any],
        keys: Sequence[tuple[str, ...]],
        now: datetime,
    ) -> dict[tuple[str, ...], Sample]:
        """Turn the answers into one Sample per key (group or cluster), with a reason when missing."""
        failed: dict[str | None, str] = {}
        points: list[SeriesPoint] = []
        for ns, answer in per_ns.items():
            incident = f"query for {what}" + (f" in namespace {ns}" if ns is not None else "")
            if isinstance(answer, BaseException):
                failed[ns] = _reason(answer, self.http.timeout_s)
                self._incidents.fail(incident, f"{failed[ns]} (query: {plan.query})")
            else:
                self._incidents.ok(incident)
                # Tenancy: keep only the namespace asked for, in case a proxy did not filter.
                points.extend(p for p in answer if ns is None or p.labels.get(METRIC_LABEL_NAMESPACE) == ns)
        index, unmapped = _index(points, plan)
        out: dict[tuple[str, ...], Sample] = {}
        missing: dict[str, list[str]] = {}
        for key in keys:
            ns_key = key[0] if self.tenancy else None
            if ns_key in failed:
                out[key] = Sample.missing(failed[ns_key], SOURCE)
                continue
            sample = self._sample(index.get(key), unmapped, plan, now)
            out[key] = sample
            if sample.unavailable:
                missing.setdefault(sample.unavailable.split(":")[0], []).append("/".join(key))
        for category in _CATEGORIES:
            which = missing.get(category, [])
            incident = f"{what}: {category}"
            if which:
                shown = ", ".join(which[:5]) + (f" and {len(which) - 5} more" if len(which) > 5 else "")
                self._incidents.fail(incident, f"{len(which)} target(s): {shown}")
            else:
                self._incidents.ok(incident)
        return out

    def _sample(self, found: _Found | None, unmapped: int, plan: _Plan, now: datetime) -> Sample:
        if found is None or not found.values:
            if unmapped:
                return Sample.missing(
                    f"unmapped: {unmapped} series in the result lack the mapping labels "
                    f"({', '.join(plan.by)}); the query must aggregate by them",
                    SOURCE,
                )
            return Sample.missing("no series: the result has no series for this target", SOURCE)
        if len(found.values) > 1:
            return Sample.missing(
                f"ambiguous: {len(found.values)} series for one target; aggregate by "
                f"({', '.join(plan.by)}) only",
                SOURCE,
            )
        point = found.values[0]
        at = datetime.fromtimestamp(found.sample_time if found.sample_time is not None else point.at, UTC)
        if math.isnan(point.value):
            return Sample.missing("NaN: the query returned NaN (e.g. 0/0)", SOURCE, at)
        if math.isinf(point.value):
            return Sample.missing("Inf: the query returned an infinite value (division by zero?)", SOURCE, at)
        age = (now - at).total_seconds()
        if plan.with_time and age > self.staleness_s:
            return Sample.missing(
                f"stale: newest sample is {age:.0f} s old (limit {self.staleness_s:.0f} s)", SOURCE, at
            )
        return Sample.ok(point.value, at, SOURCE)


_CATEGORIES = ("no series", "unmapped", "ambiguous", "NaN", "Inf", "stale")


@dataclass
class _Found:
    values: list[SeriesPoint]
    sample_time: float | None = None


class _HttpStatusError(Exception):
    pass


def _index(points: Sequence[SeriesPoint], plan: _Plan) -> tuple[dict[tuple[str, ...], _Found], int]:
    index: dict[tuple[str, ...], _Found] = {}
    unmapped = 0
    key_of = itemgetter(*plan.by)
    for p in points:
        try:
            key = key_of(p.labels)
        except KeyError:
            unmapped += 1
            continue
        if not isinstance(key, tuple):
            key = (key,)
        if not all(key):
            unmapped += 1
            continue
        found = index.get(key)
        if found is None:
            found = index[key] = _Found([])
        if plan.with_time and p.labels.get(PART_LABEL) == "time":
            found.sample_time = p.value if math.isfinite(p.value) else None
        else:
            found.values.append(p)
    return index, unmapped


def _reason(err: BaseException, timeout_s: float) -> str:
    if isinstance(err, _HttpStatusError):
        text = str(err)
        return text.replace("HTTP Status Code", "HTTP", 1)[:200]
    return describe_error(err, timeout_s)
