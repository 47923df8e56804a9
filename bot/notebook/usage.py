"""Live CPU/GPU use and pending demand for the indicator, from the cluster's Ray dashboard.

One GET of `/api/cluster_status` per refresh (two under autoscaler v2, whose JSON report is empty:
then the `?format=1` text), the same report the controller's dashboard source parses, with the
same parser, so the indicator costs the head almost nothing. It is optional and
best-effort: the dashboard may be behind an OAuth proxy or unreachable from where the notebook runs,
and then the indicator says "usage unavailable" with the cause and shows the capacity instead; a
number it does not have is never shown as 0. After a failure the probe waits `backoff_s` before
asking again, so an unreachable dashboard does not slow every refresh by a timeout.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

STATUS_PATH = "/api/cluster_status"
STATUS_TEXT_PATH = STATUS_PATH + "?format=1"  # autoscaler v2: the `ray status` text, built on request


@dataclass(frozen=True)
class Usage:
    """`in_use`: `CPU 3 of 4, GPU 0 of 1` (logical resources Ray has handed out); `pending`: what
    waits for a node (`6 CPU in 6 requests`). `problem` says why there is no reading."""

    in_use: str | None = None
    pending: str | None = None
    problem: str | None = None


def _amount(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:.1f}"


def usage_from_report(data: Mapping[str, Any]) -> Usage | None:
    """Parse one `/api/cluster_status` answer: the v1 JSON report, or the text of `?format=1`.
    None when the answer has no v1 report (autoscaler v2): ask again for the text form."""
    from controller.metrics.dashboard_shapes import (
        DashboardShapeError,
        parse_cluster_status,
        unwrap,
    )

    try:
        report = parse_cluster_status(unwrap(data, STATUS_PATH))
    except DashboardShapeError as e:
        return Usage(problem=f"unreadable cluster status ({e})")
    if report is None:
        return None
    requests = sum(d.count for d in report.demand)
    pending_cpu = sum(d.amount("CPU") for d in report.demand)  # amount() counts every request
    pending_gpu = sum(d.amount("GPU") for d in report.demand)
    if requests == 0:
        pending = "none"
    else:
        what = [f"{_amount(pending_cpu)} CPU"] + ([f"{_amount(pending_gpu)} GPU"] if pending_gpu else [])
        pending = f"{' + '.join(what)} in {requests} request" + ("s" if requests != 1 else "")
    if report.usage_by_node is None:
        return Usage(pending=pending, problem="no per-node usage in this Ray version's report")
    used: dict[str, float] = {}
    total: dict[str, float] = {}
    for resources in report.usage_by_node.values():
        for name in ("CPU", "GPU"):
            u, t = resources.get(name, (0.0, 0.0))
            used[name] = used.get(name, 0.0) + u
            total[name] = total.get(name, 0.0) + t
    parts = [f"{n} {_amount(used[n])} of {_amount(total[n])}" for n in ("CPU", "GPU") if total.get(n)]
    return Usage(in_use=", ".join(parts) or "nothing", pending=pending)


class DashboardUsage:
    """`probe(dashboard_url)`: the `Usage` of one cluster now, never raising."""

    def __init__(
        self,
        timeout_s: float = 2.0,
        backoff_s: float = 15.0,
        headers: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.timeout_s = timeout_s
        self.backoff_s = backoff_s
        self.headers = dict(headers or {})
        self._clock = clock
        self._lock = threading.Lock()
        self._failed: dict[str, tuple[float, str]] = {}

    def probe(self, dashboard_url: str | None) -> Usage | None:
        if not dashboard_url:
            return None
        base = dashboard_url.rstrip("/")
        with self._lock:
            failed = self._failed.get(base)
        if failed is not None and self._clock() - failed[0] < self.backoff_s:
            return Usage(problem=failed[1])
        import requests

        def get(path: str) -> Any:
            resp = requests.get(base + path, timeout=self.timeout_s, headers=self.headers)
            resp.raise_for_status()
            return resp.json()

        try:
            usage = usage_from_report(get(STATUS_PATH)) or usage_from_report(get(STATUS_TEXT_PATH))
        except (requests.RequestException, ValueError) as e:
            problem = f"dashboard did not answer ({type(e).__name__})"
            with self._lock:
                self._failed[base] = (self._clock(), problem)
            return Usage(problem=problem)
        with self._lock:
            self._failed.pop(base, None)
        return usage or Usage(problem="the dashboard gave no load report")
