"""The metrics sources against real Ray 2.60 and a real Prometheus, on loopback.

One private cluster (head with 0 CPUs, as on KubeRay) with two worker "groups": `small` (1 CPU, runs
one long task) and `spare` (0 CPUs, idle). A driver keeps three {CPU: 1} tasks pending. Prometheus
scrapes the nodes through a file_sd file carrying the mapping labels, as the local backend writes it
(contracts.md section 5); the direct source reads the same file.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest

from controller.domain import Activity, ClusterRef, GroupRef, Sample, SignalSpec, SignalType
from controller.localray import LocalWorker
from controller.metrics.base import FetchResult, MetricTarget
from controller.metrics.direct import DirectSource
from controller.metrics.http import HttpSettings
from controller.metrics.prometheus import PrometheusSource
from controller.metrics.ray_dashboard import RayDashboardSource
from tests.harness.prometheus import PrometheusServer
from tests.harness.ray import RayTestCluster
from tests.harness.tcpproxy import TcpProxy

pytestmark = pytest.mark.slow

NS, NAME = "local", "realc"
CLUSTER = ClusterRef(NS, NAME)
HEAD, SMALL, SPARE = (GroupRef(NS, NAME, g) for g in ("headgroup", "small", "spare"))
CPU = SignalSpec(SignalType.UTILIZATION, resource="CPU")
MEM = SignalSpec(SignalType.UTILIZATION, resource="memory")
LOGICAL_CPU = SignalSpec(SignalType.UTILIZATION, resource="logical:CPU")
PENDING_CPU = SignalSpec(SignalType.PENDING_DEMAND, resource="CPU")

DRIVER = """
import time
import ray

ray.init()

@ray.remote(num_cpus=1)
def hold(seconds):
    time.sleep(seconds)

running = hold.remote(600)
pending = [hold.remote(600) for _ in range(3)]
print("submitted", flush=True)
time.sleep(900)
"""

T = TypeVar("T")


def eventually(probe: Callable[[], T], ok: Callable[[T], bool], timeout_s: float, what: str) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if ok(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached in {timeout_s} s; last: {value}")
        time.sleep(1.0)


@dataclass
class World:
    cluster: RayTestCluster
    small: LocalWorker
    spare: LocalWorker
    sd_file: Path
    prometheus: PrometheusServer

    def targets(self) -> list[MetricTarget]:
        url = self.cluster.dashboard_url
        return [
            MetricTarget(SMALL, {"CPU": 1.0}, url),
            MetricTarget(SPARE, {"spare": 1.0}, url),
        ]


def write_sd(path: Path, cluster: RayTestCluster, groups: dict[str, int]) -> None:
    entries = [
        {
            "targets": [f"127.0.0.1:{port}"],
            "labels": {"namespace": NS, "ray_io_cluster": NAME, "ray_io_group": g},
        }
        for g, port in groups.items()
    ]
    path.write_text(json.dumps(entries))


@pytest.fixture
def world(
    fresh_ray_head: Callable[..., RayTestCluster],
    prometheus_factory: Callable[..., PrometheusServer],
    tmp_path: Path,
) -> Iterator[World]:
    cluster = fresh_ray_head(num_cpus=0)
    small = cluster.add_worker(num_cpus=1, env={"RAY_CLOUD_INSTANCE_ID": "realc-small-worker-aaaaa"})
    spare = cluster.add_worker(
        num_cpus=0, resources={"spare": 1}, env={"RAY_CLOUD_INSTANCE_ID": "realc-spare-worker-bbbbb"}
    )
    sd = tmp_path / "rayops-sd.json"
    write_sd(
        sd,
        cluster,
        {"headgroup": cluster.metrics_port, "small": small.metrics_port, "spare": spare.metrics_port},
    )
    prom = prometheus_factory([sd])
    driver = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(DRIVER)],
        env=cluster.driver_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        assert driver.stdout is not None
        assert b"submitted" in driver.stdout.readline()
        yield World(cluster, small, spare, sd, prom)
    finally:
        try:
            os.killpg(driver.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        driver.wait(30)


def _value(sample: Sample) -> float | None:
    return sample.value if sample.available else None


@pytest.mark.timeout(300)
def test_real_ray_and_prometheus(world: World) -> None:
    now = lambda: datetime.now(UTC)  # noqa: E731
    dashboard = RayDashboardSource(http=HttpSettings(timeout_s=5.0))
    prom = PrometheusSource(world.prometheus.url, http=HttpSettings(timeout_s=2.0, retries=1))
    direct = DirectSource([world.sd_file], http=HttpSettings(timeout_s=3.0, retries=0))
    targets = world.targets()

    # Pending demand per shape from the dashboard: 3 x {CPU: 1} wait, all for the `small` group.
    result = eventually(
        lambda: dashboard.fetch(targets, [PENDING_CPU], now()),
        lambda r: r.get(SMALL, PENDING_CPU).value == 3.0,
        60,
        "pending demand 3 CPUs",
    )
    assert result.get(SPARE, PENDING_CPU).value == 0.0 and result.unplaced[CLUSTER] == ()

    # A worker running a long task is busy, the idle one idle; pod names from RAY_CLOUD_INSTANCE_ID.
    # Ray shows the resources in use at once, the task itself once its events reach the GCS (about a
    # second later, more under load): wait for both.
    act = eventually(
        lambda: dashboard.activity({CLUSTER: world.cluster.dashboard_url}, now())[CLUSTER],
        lambda a: (
            (n := a.by_node_id(world.small.node_id)) is not None
            and n.activity == Activity.BUSY
            and n.running_tasks == 1
        ),
        60,
        "small worker busy with its task listed",
    )
    small, spare = act.by_node_id(world.small.node_id), act.by_node_id(world.spare.node_id)
    assert small is not None and spare is not None
    assert small.pod_name == "realc-small-worker-aaaaa" and small.running_tasks == 1
    assert spare.activity == Activity.IDLE and spare.pod_name == "realc-spare-worker-bbbbb"
    assert {n.node_ip for n in act.nodes} == {"127.0.0.1"}
    assert act.by_pod_name("realc-spare-worker-bbbbb") == spare

    # The pending-task count agrees between Prometheus and the direct scrape once steady.
    def counts() -> tuple[float | None, float | None]:
        t = now()
        return _value(prom.pending_tasks([CLUSTER], t)[CLUSTER]), _value(
            direct.pending_tasks([CLUSTER], t)[CLUSTER]
        )

    p, _ = eventually(
        counts,
        lambda c: c[0] is not None and c[1] is not None and abs(c[0] - c[1]) <= 1 and c[1] == 3.0,
        90,
        "pending task counts agree",
    )
    assert p is not None and abs(p - 3.0) <= 1

    # Utilization for each group from both sources; a series for each node in Prometheus.
    signals = [CPU, MEM, LOGICAL_CPU]
    all_groups = [MetricTarget(HEAD), *targets]

    def complete(r: FetchResult) -> bool:  # Ray reports resource use every few seconds
        available = all(r.get(t.ref, s).available for t in all_groups for s in (CPU, MEM))
        return available and r.get(SMALL, LOGICAL_CPU).value == 100.0

    prom_result = eventually(lambda: prom.fetch(all_groups, signals, now()), complete, 30, "prometheus")
    direct_result = eventually(lambda: direct.fetch(all_groups, signals, now()), complete, 30, "direct")
    for t in all_groups:
        for s in (CPU, MEM):
            pv, dv = prom_result.get(t.ref, s).value, direct_result.get(t.ref, s).value
            assert pv is not None and dv is not None and 0 <= pv <= 100 and 0 <= dv <= 100
    assert prom_result.get(SMALL, LOGICAL_CPU).value == direct_result.get(SMALL, LOGICAL_CPU).value == 100.0
    for zero_cpu in (HEAD, SPARE):  # nodes with 0 logical CPUs have no CPU to be in use: no data, not 0 %
        for result in (prom_result, direct_result):
            assert (result.get(zero_cpu, LOGICAL_CPU).unavailable or "").startswith("no series")
    assert prom_result.requests == 3  # one query per signal for the whole cluster set
    instances = {r["metric"]["instance"] for r in world.prometheus.query("ray_node_cpu_utilization")}
    assert instances == {
        f"127.0.0.1:{p}"
        for p in (world.cluster.metrics_port, world.small.metrics_port, world.spare.metrics_port)
    }

    # Prometheus stopped: "unavailable" (never 0) within the timeout; values again after recovery.
    world.prometheus.stop()
    started = time.monotonic()
    down = prom.fetch(all_groups, [CPU], now())
    assert time.monotonic() - started < 2.5
    for t in all_groups:
        sample = down.get(t.ref, CPU)
        assert sample.value is None and (sample.unavailable or "").startswith("cannot connect"), sample
    assert prom.pending_tasks([CLUSTER], now())[CLUSTER].value is None
    world.prometheus.start()
    eventually(
        lambda: prom.fetch(all_groups, [CPU], now()),
        lambda r: all(r.get(t.ref, CPU).available for t in all_groups),
        30,
        "values after Prometheus is back",
    )


@pytest.mark.timeout(120)
def test_unreachable_dashboard_is_unavailable_and_recovers(ray_cluster: RayTestCluster) -> None:
    proxy = TcpProxy(ray_cluster.head.ports.dashboard)
    try:
        source = RayDashboardSource(http=HttpSettings(timeout_s=1.5, retries=0))
        target = [MetricTarget(GroupRef("local", "shared", "workers"), {"CPU": 1.0}, proxy.url)]
        shared = ClusterRef("local", "shared")

        def probe(tag: str) -> tuple[Any, Any]:
            t = datetime.now(UTC)
            return (
                source.fetch(target, [PENDING_CPU], t).get(target[0].ref, PENDING_CPU),
                source.activity({shared: proxy.url}, t)[shared],
            )

        sample, act = eventually(lambda: probe("pass"), lambda r: r[0].available, 30, "dashboard answers")
        assert act.unavailable is None and act.by_node_id(ray_cluster.node_id) is not None
        for mode, reason in ((proxy.hang, "timeout after 1.5 s"), (proxy.refuse, "cannot connect")):
            mode()
            started = time.monotonic()
            sample, act = probe(reason)
            assert time.monotonic() - started < 3.6  # two bounded calls
            assert sample.value is None and (sample.unavailable or "").startswith(reason), sample
            assert act.nodes == () and (act.unavailable or "").startswith(reason)
        proxy.passthrough()
        eventually(
            lambda: probe("back"), lambda r: r[0].available and r[1].unavailable is None, 30, "recovery"
        )
    finally:
        proxy.close()
