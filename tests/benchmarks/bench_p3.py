"""Benchmark P3 (issue 6): the controller's tick over 1,000 RayClusters x 3 worker groups.

    .venv/bin/python -m tests.benchmarks.bench_p3 [--clusters 1000] [--groups 3] [--steady 3] [--changed 10]
        [--no-activity] [--no-watch]

The fleet runs in a **separate process** (so the numbers below are the controller's alone): the
Kubernetes API stand-in holding the RayClusters (rendered from a 3-group profile, opted in) and their
pods (made by the fake KubeRay operator), a Prometheus stand-in answering the utilization query for
every group (synthetic values, one vector per query, as a real Prometheus would), and a Ray dashboard
stand-in serving `/api/cluster_status` (per-cluster pending demand), `/api/v0/nodes|tasks|actors` and
`/nodes/{id}` for every cluster under its own path. Each stand-in counts what it is asked.

The controller is the real one (`Reconciler` over `KubeRayBackend` with its informer cache, as the
daemon builds it, or relisting every tick with `--no-watch`; `CompositeSource` of
`PrometheusSource` + `RayDashboardSource`, Kubernetes Events sink) with a policy of two signals
(pending CPU from the dashboard, CPU utilization from Prometheus). Ticks measured:
1. cold: nothing recorded yet, every decision is new (annotations on every cluster);
2. `--steady` ticks with nothing changed: no write at all is the goal;
3. one tick after pending demand changed on `--changed` clusters: writes for those only.
Per tick: wall and CPU time of this process (`time.process_time()`, all threads), Prometheus queries,
dashboard calls, API requests and writes by kind (the stand-in's audit), and the peak RSS. Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ray-dashboard" / "2.60.0"
CONTROLLER = "system:serviceaccount:rayops:rayops-controller"
TOKENS = {"controller-token": CONTROLLER, "admin-token": "system:admin"}
POLICY = """\
apiVersion: rayops.io/v1alpha1
kind: ScalingPolicy
metadata: {name: fleet}
spec:
  selector: {namespaces: ["*"]}
  maxReplicas: 4
  signals:
    - {name: pending-cpu, type: pendingDemand, resource: CPU}
    - {name: cpu-util, type: utilization, resource: CPU, target: {averageUtilization: 70}}
  behavior:
    scaleDown: {stabilizationWindowSeconds: 300}
"""


def _profile(groups: int) -> Any:
    from controller.policy.model import ClusterProfile

    return ClusterProfile.model_validate(
        {
            "apiVersion": "rayops.io/v1alpha1",
            "kind": "ClusterProfile",
            "metadata": {"name": "fleet"},
            "spec": {
                "workerGroups": [
                    {"name": f"g{i}", "cpu": "1", "memory": "1Gi", "defaultWorkers": 1, "maxWorkers": 4}
                    for i in range(groups)
                ]
            },
        }
    )


def ref_of(c: int) -> tuple[str, str]:
    return f"team-{c % 10}", f"c{c:04d}"


# ----------------------------------------------------------------------------- the fleet process


class Fleet:
    """Everything the controller talks to, in this (separate) process."""

    def __init__(self, clusters: int, groups: int) -> None:
        from controller.backends.base import ClusterRequest
        from controller.backends.render import render_raycluster
        from tests.standins.kube_api import KubeApiServer
        from tests.standins.kuberay_operator import FakeKubeRayOperator

        self.clusters, self.groups = clusters, groups
        self.kube = KubeApiServer(TOKENS, default_token="admin-token").start()
        profile = _profile(groups)
        now = datetime.now(UTC)
        for c in range(clusters):
            ns, name = ref_of(c)
            body = render_raycluster(
                profile, ClusterRequest(name, ns, "fleet", "slack:U0FLEET", workers=1), now
            )
            self.kube.put(body)
        FakeKubeRayOperator(self.kube.store).reconcile_all()
        self.demand: dict[str, int] = {}
        self.counts: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.status = json.loads((FIXTURES / "cluster_status.json").read_text())
        self.lists = {k: (FIXTURES / f"v0-{k}.json").read_bytes() for k in ("nodes", "tasks", "actors")}
        self.node = (FIXTURES / "node-cpu.json").read_bytes()
        self.http = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.http.daemon_threads = True
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http.server_address[1]}"

    def _prometheus(self) -> bytes:
        now = time.time()
        result: list[dict[str, Any]] = []
        for c in range(self.clusters):
            ns, name = ref_of(c)
            for g in range(self.groups):
                labels = {"namespace": ns, "ray_io_cluster": name, "ray_io_group": f"g{g}"}
                for part, value in (("value", "50"), ("time", str(now - 2))):
                    result.append({"metric": {**labels, "rayops_part": part}, "value": [now, value]})
        return json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}}).encode()

    def _cluster_status(self, cluster: str) -> bytes:
        doc = json.loads(json.dumps(self.status))
        cs = doc["data"]["clusterStatus"]
        cs["time"] = time.time()
        k = self.demand.get(cluster, 0)
        cs["loadMetricsReport"]["resourceDemand"] = [[{"CPU": 1.0}, k]] if k else []
        cs["loadMetricsReport"]["pgDemand"] = []
        return json.dumps(doc).encode()

    def stats(self) -> dict[str, Any]:
        kube: Counter[str] = Counter(f"{r.verb} {r.resource}" for r in self.kube.requests if r.resource)
        with self.lock:
            return {"http": dict(self.counts), "kube": dict(kube)}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fleet = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_GET(self) -> None:
                path, _, query = self.path.partition("?")
                kind, body = "other", b"{}"
                if path == "/api/v1/query":
                    kind, body = "prometheus", fleet._prometheus()
                elif path.startswith("/d/"):
                    _, _, _namespace, name, rest = path.split("/", 4)
                    rest = "/" + rest
                    if rest == "/api/cluster_status":
                        kind, body = "dashboard", fleet._cluster_status(name)
                    elif rest.startswith("/api/v0/"):
                        kind, body = "dashboard", fleet.lists[rest.rsplit("/", 1)[1]]
                    elif rest.startswith("/nodes/"):
                        kind, body = "dashboard", fleet.node
                elif path == "/stats":
                    body = json.dumps(fleet.stats()).encode()
                elif path == "/demand":
                    q = urllib.parse.parse_qs(query)
                    for c in range(int(q["clusters"][0])):
                        fleet.demand[ref_of(c)[1]] = int(q["value"][0])
                with fleet.lock:
                    fleet.counts[kind] += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_GET

        return Handler


def serve_fleet(clusters: int, groups: int, out: Path) -> None:
    fleet = Fleet(clusters, groups)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    out.write_text(json.dumps({"kube": fleet.kube.url, "http": fleet.url}))
    stop.wait()
    fleet.http.shutdown()
    fleet.kube.stop()


# ----------------------------------------------------------------------------- the controller side


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.load(r)


def diff(after: Mapping[str, Any], before: Mapping[str, Any]) -> dict[str, int]:
    keys = set(after) | set(before)
    return {
        k: after.get(k, 0) - before.get(k, 0) for k in sorted(keys) if after.get(k, 0) != before.get(k, 0)
    }


def rss_mib() -> float:
    """Resident memory of this process now (the peak is `ru_maxrss`)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def run(
    clusters: int, groups: int, steady: int, changed: int, activity: bool = True, watch: bool = True
) -> dict[str, Any]:
    from kubernetes import client as k8s

    from controller.backends.kube_api import KubeApi
    from controller.backends.kuberay import KubeRayBackend
    from controller.backends.kuberay_events import KubeEventSink
    from controller.events import FanoutSink, MemoryEvents
    from controller.metrics.composite import CompositeSource
    from controller.metrics.http import HttpSettings
    from controller.metrics.prometheus import PrometheusSource
    from controller.metrics.ray_dashboard import RayDashboardSource
    from controller.policy.loader import PolicyStore
    from controller.reconcile import Reconciler, TickClock
    from controller.settings import LoopSettings

    tmp = Path(tempfile.mkdtemp(prefix="bench-p3-"))
    urls = tmp / "fleet.json"
    started = time.monotonic()
    fleet = subprocess.Popen(
        [
            *(sys.executable, "-m", "tests.benchmarks.bench_p3", "--serve", str(urls)),
            *("--clusters", str(clusters), "--groups", str(groups)),
        ],
        start_new_session=True,
    )
    try:
        while not urls.exists():
            if fleet.poll() is not None:
                raise SystemExit("the fleet process exited")
            time.sleep(0.5)
        where = json.loads(urls.read_text())
        print(f"fleet of {clusters} x {groups} ready in {time.monotonic() - started:.0f} s", file=sys.stderr)
        cfg = k8s.Configuration()
        cfg.host = where["kube"]
        cfg.api_key = {"BearerToken": "controller-token"}
        cfg.api_key_prefix = {"BearerToken": "Bearer"}
        api = KubeApi(k8s.ApiClient(cfg))
        base = where["http"]
        dashboard = RayDashboardSource(
            http=HttpSettings(timeout_s=60.0),
            url_for=lambda ref: f"{base}/d/{ref.namespace}/{ref.name}",
            concurrency=16,
        )
        clock = TickClock()
        backend = KubeRayBackend(
            api,
            activity=dashboard if activity else None,
            dashboard_url=lambda ref: f"{base}/d/{ref.namespace}/{ref.name}",
            clock=clock,
            watch=watch,
        )
        prometheus = PrometheusSource(base, http=HttpSettings(timeout_s=30.0))
        metrics = CompositeSource([prometheus, dashboard])
        policies = tmp / "policies"
        policies.mkdir()
        (policies / "fleet.yaml").write_text(POLICY)
        events = MemoryEvents()
        reconciler = Reconciler(
            backend,
            metrics,
            PolicyStore(str(policies)),
            FanoutSink([events, KubeEventSink(api, "rayops", "bench")]),
            settings=LoopSettings(),
            clock=clock,
        )
        rows = []
        plan = ["cold"] + ["steady"] * steady + ["changed"]
        for i, kind in enumerate(plan):
            if kind == "changed":
                _get(f"{base}/demand?clusters={changed}&value=2")
            before = _get(f"{base}/stats")
            cpu0, wall0 = time.process_time(), time.perf_counter()
            report = reconciler.reconcile_once(datetime.now(UTC))
            cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
            after = _get(f"{base}/stats")
            http = diff(after["http"], before["http"])
            kube = diff(after["kube"], before["kube"])
            writes = {
                k: v for k, v in kube.items() if k.split()[0] in ("patch", "create", "update", "delete")
            }
            row = {
                "tick": i + 1,
                "kind": kind,
                "outcome": report.outcome,
                "groups": report.groups,
                "wall_s": round(wall, 2),
                "cpu_s": round(cpu, 2),
                "prometheus_queries": http.get("prometheus", 0),
                "dashboard_calls": http.get("dashboard", 0),
                "api_requests": sum(kube.values()),
                "api_writes": writes,
                "apply_writes": report.writes,
                "annotation_writes": report.annotation_writes,
                "events": report.events,
                "rss_mib": round(rss_mib(), 1),
                "unavailable": sum(
                    1 for d in report.decisions for r in d.reasons if str(r.code) == "METRICS_UNAVAILABLE"
                ),
            }
            rows.append(row)
            print(json.dumps(row), file=sys.stderr)
            time.sleep(1.0)
        backend.close()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return {
            "clusters": clusters,
            "groups": groups,
            "activity": activity,
            "ticks": rows,
            "peak_rss_mib": round(peak, 1),
        }
    finally:
        fleet.send_signal(signal.SIGTERM)
        try:
            fleet.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(fleet.pid, signal.SIGKILL)
            fleet.wait()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clusters", type=int, default=1000)
    p.add_argument("--groups", type=int, default=3)
    p.add_argument("--steady", type=int, default=3)
    p.add_argument("--changed", type=int, default=10)
    p.add_argument(
        "--no-activity", action="store_true", help="no node activity from the dashboards (to see its cost)"
    )
    p.add_argument(
        "--no-watch", action="store_true", help="relist every tick instead of the informer cache (to compare)"
    )
    p.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve is not None:
        serve_fleet(args.clusters, args.groups, args.serve)
        return 0
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    result = run(
        args.clusters,
        args.groups,
        args.steady,
        args.changed,
        activity=not args.no_activity,
        watch=not args.no_watch,
    )
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
