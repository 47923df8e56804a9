"""Signals straight from Ray's own `/metrics` endpoints, for laptop mode without Prometheus.

Targets come from Prometheus `file_sd` files (a JSON list of `{"targets": ["host:port"], "labels": {...}}`):
the one the local backend writes for its Ray nodes, carrying the mapping labels
(`namespace: local`, `ray_io_cluster`, `ray_io_group`; contracts.md section 5), or Ray's own
`prom_metrics_service_discovery.json` with `extra_labels` naming the cluster. Like Prometheus, the
target's labels are attached to every series scraped from it (they win over scraped labels of the
same name).

Each fetch scrapes every target once, concurrently, within the timeout; keeps only the lines of the
metric families the asked signals need (a Ray node serves ~1000 lines, 300 KB with a GPU); parses them
with `prometheus_client.parser`; and evaluates the same `Aggregate` as the PromQL of the Prometheus
source (`controller.metrics.queries`), so both sources give the same numbers.

A group any of whose targets could not be scraped gets "unavailable" with the failed target and the
reason, not an average over the nodes that answered: the missing node may be the busy one, and a
partial pending-task sum would undercount.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from controller.domain import ClusterRef, GroupRef, Sample, SignalSpec, SignalType
from controller.keys import METRIC_MAPPING_LABELS
from controller.metrics.base import FetchResult, MetricTarget, Support, as_utc
from controller.metrics.http import HttpSettings, describe_error, run_bounded
from controller.metrics.incidents import IncidentLog
from controller.metrics.queries import CLUSTER_LABELS, PENDING_TASKS, Aggregate, utilization_aggregate

__all__ = ["DirectSource", "ScrapeTarget", "filter_families", "parse_series", "read_file_sd"]

log = logging.getLogger(__name__)
SOURCE = "direct"

Series = tuple[str, Mapping[str, str], float]


@dataclass(frozen=True)
class ScrapeTarget:
    address: str  # host:port
    labels: Mapping[str, str] = field(default_factory=dict)

    def key(self, labels: Sequence[str]) -> tuple[str, ...] | None:
        values = tuple(self.labels.get(label, "") for label in labels)
        return values if all(values) else None


def read_file_sd(path: str | Path, extra_labels: Mapping[str, str] | None = None) -> list[ScrapeTarget]:
    """The targets of one file_sd file; raises OSError/ValueError when it is missing or malformed."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, list):
        raise ValueError(f"{path}: a file_sd file is a JSON list, got {type(data).__name__}")
    targets: list[ScrapeTarget] = []
    for group in data:
        if not isinstance(group, dict) or not isinstance(group.get("targets"), list):
            raise ValueError(f"{path}: every entry needs a 'targets' list")
        labels = {str(k): str(v) for k, v in (group.get("labels") or {}).items()}
        merged = {**(extra_labels or {}), **labels}
        targets.extend(ScrapeTarget(str(t), merged) for t in group["targets"])
    return targets


def filter_families(text: str, names: Collection[str]) -> str:
    """Only the lines of the wanted metric families (plus their HELP/TYPE), before the slow parser."""
    keep = []
    for line in text.splitlines():
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE") and parts[2] in names:
                keep.append(line)
            continue
        end = len(line)
        for sep in ("{", " "):
            i = line.find(sep)
            if i != -1:
                end = min(end, i)
        if line[:end] in names:
            keep.append(line)
    return "\n".join(keep) + "\n"


def parse_series(text: str, names: Collection[str], target_labels: Mapping[str, str]) -> list[Series]:
    """(name, labels, value) of every sample of the wanted families; target labels win on clashes."""
    out: list[Series] = []
    for family in text_string_to_metric_families(filter_families(text, names)):
        for s in family.samples:
            if s.name in names:
                out.append((s.name, {**s.labels, **target_labels}, float(s.value)))
    return out


class DirectSource:
    """`MetricsSource` and `PendingTaskCounter` reading Ray's `/metrics` text without Prometheus.

    Parameters: `sd_files`, the file_sd files to read on every fetch (Ray rewrites its own as nodes
    come and go); `extra_labels` added under each file's own labels; `http` (the timeout bounds a whole
    fetch); `concurrency`, scrapes in flight.
    """

    name = SOURCE

    def __init__(
        self,
        sd_files: Sequence[str | Path],
        *,
        extra_labels: Mapping[str, str] | None = None,
        http: HttpSettings | None = None,
        concurrency: int = 8,
        metrics_path: str = "/metrics",
    ) -> None:
        self.sd_files = [Path(p) for p in sd_files]
        self.extra_labels = dict(extra_labels or {})
        self.http = http or HttpSettings(timeout_s=3.0, retries=0)
        self.metrics_path = metrics_path
        self._session = self.http.session()
        self._tokens = self.http.tokens()
        self._executor = ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="direct")
        self._incidents = IncidentLog(log, SOURCE)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._session.close()

    def supports(self, spec: SignalSpec) -> Support:
        if spec.type == SignalType.UTILIZATION:
            try:
                utilization_aggregate(spec.resource)
            except ValueError as e:
                return Support(False, str(e))
            return Support(True)
        if spec.type == SignalType.PROMQL:
            return Support(
                False,
                "the direct source reads Ray's own /metrics and cannot evaluate PromQL; configure Prometheus",
            )
        return Support(False, "pending demand per resource shape comes from the Ray dashboard source")

    # ------------------------------------------------------------------ MetricsSource

    def fetch(
        self, targets: Sequence[MetricTarget], signals: Collection[SignalSpec], now: datetime
    ) -> FetchResult:
        now = as_utc(now)
        refs = [t.ref for t in targets]
        samples: dict[GroupRef, dict[SignalSpec, Sample]] = {r: {} for r in refs}
        aggs: dict[SignalSpec, Aggregate] = {}
        for spec in dict.fromkeys(signals):
            support = self.supports(spec)
            if support:
                aggs[spec] = utilization_aggregate(spec.resource)
            else:
                for r in refs:
                    samples[r][spec] = Sample.missing(f"not supported: {support.reason}", SOURCE)
        if not aggs or not refs:
            return FetchResult(samples=samples)
        scrape = self._scrape(
            frozenset().union(*(a.metric_names for a in aggs.values())), METRIC_MAPPING_LABELS
        )
        for spec, agg in aggs.items():
            for r in refs:
                samples[r][spec] = scrape.sample((r.namespace, r.cluster, r.group), agg, now)
        self._report(scrape, "utilization", [(r.namespace, r.cluster, r.group) for r in refs])
        return FetchResult(samples=samples, requests=scrape.requests)

    # ------------------------------------------------------------------ PendingTaskCounter

    def pending_tasks(self, clusters: Collection[ClusterRef], now: datetime) -> dict[ClusterRef, Sample]:
        now = as_utc(now)
        refs = list(dict.fromkeys(clusters))
        if not refs:
            return {}
        scrape = self._scrape(PENDING_TASKS.metric_names, CLUSTER_LABELS)
        keys = [(c.namespace, c.name) for c in refs]
        self._report(scrape, "pending tasks", keys)
        return {c: scrape.sample(k, PENDING_TASKS, now) for c, k in zip(refs, keys, strict=True)}

    # ------------------------------------------------------------------ internals

    def targets(self) -> list[ScrapeTarget]:
        """Every target of every file, read now; raises when a file cannot be read."""
        out: list[ScrapeTarget] = []
        for path in self.sd_files:
            out.extend(read_file_sd(path, self.extra_labels))
        unique = {(t.address, tuple(sorted(t.labels.items()))): t for t in out}
        return list(unique.values())

    def _scrape_one(self, target: ScrapeTarget, names: frozenset[str]) -> list[Series]:
        resp = self._session.get(
            f"http://{target.address}{self.metrics_path}",
            timeout=self.http.attempt_timeout_s,
            headers={**self.http.headers(self._tokens), "Accept": "text/plain"},
        )
        resp.raise_for_status()
        return parse_series(resp.text, names, {**target.labels, "instance": target.address})

    def _scrape(self, names: frozenset[str], by: Sequence[str]) -> _Scrape:
        try:
            targets = self.targets()
        except (OSError, ValueError) as e:
            reason = f"service discovery: {describe_error(e, self.http.timeout_s)}"
            self._incidents.fail("service discovery files", reason)
            return _Scrape(by=tuple(by), error=reason)
        self._incidents.ok("service discovery files")
        jobs = {i: partial(self._scrape_one, t, names) for i, t in enumerate(targets)}
        results = run_bounded(self._executor, jobs, self.http.timeout_s)
        scrape = _Scrape(by=tuple(by), requests=len(jobs))
        for i, res in results.items():
            t = targets[i]
            key = t.key(by)
            if key is None:
                scrape.unmapped_targets.append(t.address)
                continue
            if isinstance(res, BaseException):
                reason = describe_error(res, self.http.timeout_s)
                scrape.failed.setdefault(key, []).append(f"{t.address}: {reason}")
                self._incidents.fail(f"scrape of {t.address}", reason)
                continue
            self._incidents.ok(f"scrape of {t.address}")
            scrape.series.setdefault(key, []).extend(res)
        return scrape

    def _report(self, scrape: _Scrape, what: str, keys: Iterable[tuple[str, ...]]) -> None:
        absent = [k for k in keys if k not in scrape.series and k not in scrape.failed]
        if absent and scrape.error is None:
            shown = ", ".join("/".join(k) for k in absent[:5])
            self._incidents.fail(f"{what}: targets without scrape targets", f"{len(absent)}: {shown}")
        else:
            self._incidents.ok(f"{what}: targets without scrape targets")


@dataclass
class _Scrape:
    by: tuple[str, ...]
    error: str | None = None
    requests: int = 0
    series: dict[tuple[str, ...], list[Series]] = field(default_factory=dict)
    failed: dict[tuple[str, ...], list[str]] = field(default_factory=dict)
    unmapped_targets: list[str] = field(default_factory=list)

    def sample(self, key: tuple[str, ...], agg: Aggregate, now: datetime) -> Sample:
        if self.error is not None:
            return Sample.missing(self.error, SOURCE)
        if key in self.failed:
            return Sample.missing(f"scrape failed: {'; '.join(self.failed[key])}", SOURCE)
        if key not in self.series:
            if self.unmapped_targets:
                return Sample.missing(
                    f"unmapped: {len(self.unmapped_targets)} target(s) lack the mapping labels "
                    f"({', '.join(self.by)}) and no target has this one's",
                    SOURCE,
                )
            return Sample.missing("no series: no scrape target carries this target's labels", SOURCE)
        value = agg.evaluate(self.series[key])
        if value is None:
            return Sample.missing(
                f"no series: the targets serve no {'/'.join(sorted(agg.metric_names))}", SOURCE
            )
        if math.isnan(value):
            return Sample.missing("NaN: the computation gave NaN (e.g. 0/0)", SOURCE, now)
        if math.isinf(value):
            return Sample.missing(
                "Inf: the computation gave an infinite value (division by zero?)", SOURCE, now
            )
        return Sample.ok(value, now, SOURCE)
