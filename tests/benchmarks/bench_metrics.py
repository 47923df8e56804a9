"""Benchmark of the Prometheus metrics source (issue 4): one tick's fetch for 1,000 clusters x 3 groups.

    .venv/bin/python -m tests.benchmarks.bench_metrics [--clusters 1000] [--groups 3] [--ticks 5]

A synthetic exporter on loopback (http.server, pre-rendered text) serves Ray-shaped series for every
(cluster, group) with the mapping labels, as a PodMonitor relabels them: `ray_node_cpu_utilization`,
`ray_node_mem_used`/`_total`, `ray_resources{Name,State}` for CPU and GPU, GPU series
(`ray_node_gpus_utilization`, `ray_node_gram_*`) for one group in three, and `ray_tasks` with owner
(+) and executor (-) series. It is split into 10 shards (10 scrape targets, `__metrics_path__` per
target) listed in a file_sd file; a real Prometheus (Debian's binary, temp dir, free port) scrapes
them every 5 s. Once every series is in, each tick fetches six signals for all 3,000 groups (CPU,
memory, GPU and GPU-memory utilization, logical GPU use, one PromQL signal) plus the pending-task
count of all 1,000 clusters, and reports HTTP queries, wall time and CPU time of this process
(`time.process_time()`, all threads). Every sample must come back available. Not a test.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from controller.domain import GroupRef, SignalSpec, SignalType
from controller.metrics.base import MetricTarget
from controller.metrics.http import HttpSettings
from controller.metrics.prometheus import PrometheusSource
from tests.harness.prometheus import start_prometheus

SHARDS = 10
SIGNALS = [
    SignalSpec(SignalType.UTILIZATION, resource="CPU"),
    SignalSpec(SignalType.UTILIZATION, resource="memory"),
    SignalSpec(SignalType.UTILIZATION, resource="GPU"),
    SignalSpec(SignalType.UTILIZATION, resource="GPU_memory"),
    SignalSpec(SignalType.UTILIZATION, resource="logical:GPU"),
    SignalSpec(
        SignalType.PROMQL,
        query='sum by (namespace, ray_io_cluster, ray_io_group) (ray_resources{Name="CPU",State="USED"})',
    ),
]


def group_refs(clusters: int, groups: int) -> list[GroupRef]:
    return [
        GroupRef(f"ns-{c % 50:02d}", f"c{c:04d}", f"g{g}") for c in range(clusters) for g in range(groups)
    ]


def render_shard(refs: list[GroupRef], seed: int) -> bytes:
    rnd = random.Random(seed)
    lines: dict[str, list[str]] = {}

    def add(name: str, labels: dict[str, str], value: float) -> None:
        text = ",".join(f'{k}="{v}"' for k, v in labels.items())
        lines.setdefault(name, []).append(f"{name}{{{text}}} {value}")

    for ref in refs:
        base = {"namespace": ref.namespace, "ray_io_cluster": ref.cluster, "ray_io_group": ref.group}
        node = {
            **base,
            "ip": f"10.{rnd.randrange(256)}.{rnd.randrange(256)}.7",
            "SessionName": "s",
            "Version": "2.60.0",
        }
        gpu = ref.group.endswith("0")
        add("ray_node_cpu_utilization", node, round(rnd.uniform(0, 100), 1))
        add("ray_node_mem_used", node, float(rnd.randrange(1, 16) * 2**30))
        add("ray_node_mem_total", node, float(16 * 2**30))
        for name, total in (("CPU", 8.0), ("GPU", 1.0 if gpu else 0.0)):
            if total:
                used = float(rnd.randrange(int(total) + 1))
                add("ray_resources", {**node, "Name": name, "State": "USED"}, used)
                add("ray_resources", {**node, "Name": name, "State": "AVAILABLE"}, total - used)
        if gpu:
            gpu_labels = {**node, "GpuIndex": "0", "GpuDeviceName": "NVIDIA H200"}
            add("ray_node_gpus_utilization", gpu_labels, float(rnd.randrange(101)))
            used_mib = float(rnd.randrange(615, 143771))
            add("ray_node_gram_used", gpu_labels, used_mib)
            add("ray_node_gram_available", gpu_labels, 143771.0 - used_mib)
        if ref.group == "g0":  # the driver's node owns the cluster's tasks
            pending = float(rnd.randrange(10))
            add("ray_tasks", {**node, "State": "PENDING_NODE_ASSIGNMENT", "Source": "owner"}, pending)
            add("ray_tasks", {**node, "State": "SUBMITTED_TO_WORKER", "Source": "owner"}, 2.0)
            add("ray_tasks", {**node, "State": "SUBMITTED_TO_WORKER", "Source": "executor"}, -2.0)
            add("ray_tasks", {**node, "State": "RUNNING", "Source": "executor"}, 2.0)
    out = []
    for name, samples in lines.items():
        out += [f"# HELP {name} synthetic", f"# TYPE {name} gauge", *samples]
    return ("\n".join(out) + "\n").encode()


@contextmanager
def exporter(shards: dict[str, bytes]) -> Iterator[tuple[str, dict[str, int]]]:
    hits: dict[str, int] = {}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            body = shards.get(self.path)
            hits[self.path] = hits.get(self.path, 0) + 1
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.1,), daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", hits
    finally:
        server.shutdown()
        server.server_close()


def main() -> None:
    logging.basicConfig(level=logging.ERROR)  # groups without GPUs have no GPU series: expected
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--groups", type=int, default=3)
    parser.add_argument("--ticks", type=int, default=5)
    args = parser.parse_args()

    refs = group_refs(args.clusters, args.groups)
    per_shard = -(-len(refs) // SHARDS)
    shards = {
        f"/metrics/{i}": render_shard(refs[i * per_shard : (i + 1) * per_shard], i) for i in range(SHARDS)
    }
    series = sum(body.count(b"\n") - body.count(b"\n#") for body in shards.values())
    workdir = Path(tempfile.mkdtemp(prefix="rayops-bench-metrics-"))
    with exporter(shards) as (address, hits):
        sd = workdir / "targets.json"
        sd.write_text(json.dumps([{"targets": [address], "labels": {"__metrics_path__": p}} for p in shards]))
        prom = start_prometheus([sd], workdir, job_name="bench", scrape_interval_s=5.0)
        try:
            expected_gpu = sum(1 for r in refs if r.group.endswith("0"))
            prom.wait_for(
                "count(ray_node_cpu_utilization)",
                lambda r: bool(r) and int(float(r[0]["value"][1])) == len(refs),
                90,
            )
            prom.wait_for(
                "count(ray_node_gram_available)",
                lambda r: bool(r) and int(float(r[0]["value"][1])) == expected_gpu,
                60,
            )
            source = PrometheusSource(prom.url, http=HttpSettings(timeout_s=30.0, retries=0), staleness_s=60)
            targets = [MetricTarget(r) for r in refs]
            clusters = sorted({r.cluster_ref for r in refs})
            walls, cpus, queries = [], [], []
            for tick in range(args.ticks + 1):
                sent_before = source.queries_sent
                wall0, cpu0 = time.perf_counter(), time.process_time()
                result = source.fetch(targets, SIGNALS, datetime.now(UTC))
                counts = source.pending_tasks(clusters, datetime.now(UTC))
                wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
                missing = [(r, s) for r in refs for s in SIGNALS if not result.get(r, s).available]
                gpu_missing = [
                    (r, s) for r, s in missing if s.resource in ("GPU", "GPU_memory", "logical:GPU")
                ]
                other = [m for m in missing if m not in gpu_missing]
                assert not other, f"unavailable samples: {other[:3]} ({len(other)})"
                assert len(gpu_missing) == (len(refs) - expected_gpu) * 3  # groups without GPUs: no series
                assert all(counts[c].available for c in clusters)
                if tick == 0:
                    continue  # warm-up: connection set-up and Prometheus' first evaluation
                walls.append(wall)
                cpus.append(cpu)
                queries.append(source.queries_sent - sent_before)
        finally:
            prom.stop()
    print(f"clusters={args.clusters} groups={len(refs)} series={series} signals={len(SIGNALS)}+pending-count")
    print(f"scrapes served: {sum(hits.values())} over {len(shards)} targets")
    print("| HTTP queries per tick | wall ms median (max) | CPU ms median (max) | samples per tick |")
    print("|---:|---:|---:|---:|")
    wall_ms = f"{statistics.median(walls) * 1000:.0f} ({max(walls) * 1000:.0f})"
    cpu_ms = f"{statistics.median(cpus) * 1000:.0f} ({max(cpus) * 1000:.0f})"
    samples = len(refs) * len(SIGNALS) + len(clusters)
    print(f"| {statistics.median(queries):.0f} | {wall_ms} | {cpu_ms} | {samples} |")


if __name__ == "__main__":
    main()
