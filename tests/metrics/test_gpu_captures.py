"""Real captures from a Ray 2.60 node with an NVIDIA H200 (tests/fixtures/ray-gpu/, see its README):
GPU utilization, GPU memory, GPU resource use and pending GPU demand, read through the direct source
(the `/metrics` text served on loopback) and the dashboard source (the recorded answers).

While the captures were taken one GPU task ran matmuls and two more waited (PENDING_NODE_ASSIGNMENT);
`ray_tasks` then holds executor-side series of -1 that only sum to the right counts over `Source`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from controller.domain import Activity, ClusterRef, GroupRef, SignalSpec, SignalType
from controller.metrics.base import MetricTarget
from controller.metrics.direct import DirectSource, parse_series
from controller.metrics.queries import PENDING_TASKS, Aggregate, Selector
from controller.metrics.ray_dashboard import RayDashboardSource
from tests.metrics.conftest import GPU_FIXTURES, load_json
from tests.metrics.stub import Reply, StubServer, serve

CLUSTER = ClusterRef("local", "h200")
GPU_GROUP = GroupRef("local", "h200", "gpu")
CPU_GROUP = GroupRef("local", "h200", "cpu")
PROM_TEXT = "text/plain; version=0.0.4; charset=utf-8"
# The capture's head node had 4 logical CPUs and 1 GPU.
GPU_WORKER = {"CPU": 4.0, "GPU": 1.0}


def util(resource: str) -> SignalSpec:
    return SignalSpec(SignalType.UTILIZATION, resource=resource)


def capture(name: str) -> str:
    return (GPU_FIXTURES / f"ray-gpu-metrics-{name}.prom").read_text()


@pytest.fixture
def exporter(tmp_path: Path) -> Iterator[tuple[StubServer, Path]]:
    """The captured /metrics on loopback, listed in a file_sd file with the mapping labels."""
    with serve() as stub:
        sd = tmp_path / "targets.json"
        labels = {"namespace": "local", "ray_io_cluster": "h200", "ray_io_group": "gpu"}
        sd.write_text(json.dumps([{"targets": [stub.address], "labels": labels}]))
        yield stub, sd


@pytest.mark.parametrize(
    ("name", "gpu", "gpu_memory", "gpu_used", "cpu"),
    [
        ("before", 0.0, 615 / 143771 * 100, 0.0, 0.0),
        ("busy-t15", 100.0, 9945 / 143771 * 100, 100.0, 26.5),
        ("busy-t30", 99.0, 9945 / 143771 * 100, 100.0, 26.0),
        ("idle", 0.0, 615 / 143771 * 100, 0.0, 0.6),
    ],
)
def test_gpu_signals_from_the_captured_metrics(
    exporter: tuple[StubServer, Path], name: str, gpu: float, gpu_memory: float, gpu_used: float, cpu: float
) -> None:
    stub, sd = exporter
    stub.route("/metrics", Reply(body=capture(name), content_type=PROM_TEXT))
    src = DirectSource([sd])
    now = datetime(2026, 11, 26, 13, 23, tzinfo=UTC)
    specs = [util("GPU"), util("GPU_memory"), util("logical:GPU"), util("CPU")]
    result = src.fetch([MetricTarget(GPU_GROUP, GPU_WORKER)], specs, now)
    got = {s.resource: result.get(GPU_GROUP, s) for s in specs}
    assert all(s.available and s.at == now and s.source == "direct" for s in got.values()), got
    assert got["GPU"].value == gpu
    assert got["GPU_memory"].value == pytest.approx(gpu_memory)
    assert got["logical:GPU"].value == gpu_used
    assert got["CPU"].value == cpu
    assert result.requests == 1  # one scrape for all four signals


def test_pending_tasks_sum_the_negative_executor_series(exporter: tuple[StubServer, Path]) -> None:
    text = capture("busy-t15")
    series = parse_series(text, {"ray_tasks"}, {})
    executor = [v for _, labels, v in series if labels["Source"] == "executor" and v < 0]
    assert executor == [-1.0, -3.0]  # SUBMITTED_TO_WORKER, executor side
    submitted = Aggregate("sum", (Selector("ray_tasks", (("State", ("SUBMITTED_TO_WORKER",)),)),))
    running = Aggregate("sum", (Selector("ray_tasks", (("State", ("RUNNING",)),)),))
    assert submitted.evaluate(series) == 0.0  # owner +1 +3, executor -1 -3: all four now run
    assert running.evaluate(series) == 4.0
    assert PENDING_TASKS.evaluate(series) == 2.0  # gpu_pending_0 and gpu_pending_1
    stub, sd = exporter
    stub.route("/metrics", Reply(body=text, content_type=PROM_TEXT))
    counts = DirectSource([sd]).pending_tasks([CLUSTER], datetime.now(UTC))
    assert counts[CLUSTER].value == 2.0
    stub.route("/metrics", Reply(body=capture("idle"), content_type=PROM_TEXT))
    assert DirectSource([sd]).pending_tasks([CLUSTER], datetime.now(UTC))[CLUSTER].value == 0.0
    stub.route("/metrics", Reply(body=capture("before"), content_type=PROM_TEXT))  # no task ever ran
    before = DirectSource([sd]).pending_tasks([CLUSTER], datetime.now(UTC))[CLUSTER]
    assert (before.unavailable or "").startswith("no series")


def test_gpu_utilization_is_absent_on_a_node_without_gpu(exporter: tuple[StubServer, Path]) -> None:
    stub, sd = exporter
    text = "\n".join(line for line in capture("busy-t15").splitlines() if "gpus_utilization" not in line)
    stub.route("/metrics", Reply(body=text, content_type=PROM_TEXT))
    sample = DirectSource([sd]).fetch([MetricTarget(GPU_GROUP)], [util("GPU")], datetime.now(UTC))
    assert (sample.get(GPU_GROUP, util("GPU")).unavailable or "").startswith("no series")


@pytest.fixture
def dashboard() -> Iterator[StubServer]:
    with serve() as stub:
        nodes = load_json(GPU_FIXTURES / "v0-nodes-gpu-t15.json")
        stub.route("/api/v0/nodes", Reply(body=nodes))
        stub.route("/api/v0/tasks", Reply(body=load_json(GPU_FIXTURES / "tasks-list-gpu-t15.json")))
        listing = {"total": 0, "num_after_truncation": 0, "num_filtered": 0, "result": []}
        empty = {"result": True, "msg": "", "data": {"result": {**listing, "partial_failure_warning": ""}}}
        stub.route("/api/v0/actors", Reply(body=empty))
        yield stub


def status_time(name: str) -> datetime:
    return datetime.fromtimestamp(load_json(GPU_FIXTURES / name)["data"]["clusterStatus"]["time"], UTC)


@pytest.mark.parametrize(
    "name", ["cluster_status-gpu-pending-t15.json", "cluster_status-gpu-pending-t30.json"]
)
def test_pending_gpu_demand_goes_to_the_gpu_group(dashboard: StubServer, name: str) -> None:
    dashboard.route("/api/cluster_status", Reply(body=load_json(GPU_FIXTURES / name)))
    src = RayDashboardSource()
    now = status_time(name) + timedelta(seconds=3)
    targets = [
        MetricTarget(CPU_GROUP, {"CPU": 8.0}, dashboard.url),
        MetricTarget(GPU_GROUP, GPU_WORKER, dashboard.url),
    ]
    gpu, cpu = SignalSpec(SignalType.PENDING_DEMAND, "GPU"), SignalSpec(SignalType.PENDING_DEMAND, "CPU")
    result = src.fetch(targets, [gpu, cpu], now)
    # resourceDemand [[{"GPU": 1.0, "CPU": 1.0}, 2]]
    assert result.get(GPU_GROUP, gpu).value == 2.0
    assert result.get(GPU_GROUP, cpu).value == 2.0
    assert result.get(CPU_GROUP, gpu).value == 0.0 and result.get(CPU_GROUP, cpu).value == 0.0
    assert result.unplaced[CLUSTER] == ()
    no_gpu_group = src.fetch(targets[:1], [gpu], now + timedelta(seconds=1))
    assert [(d.resources, d.count) for d in no_gpu_group.unplaced[CLUSTER]] == [({"CPU": 1.0, "GPU": 1.0}, 2)]


def test_pending_gpu_demand_from_the_status_text(dashboard: StubServer) -> None:
    dashboard.route("/api/cluster_status", Reply(body={"result": True, "data": {"clusterStatus": None}}))
    text = load_json(GPU_FIXTURES / "cluster_status-gpu-pending-format1-t15.json")
    dashboard.route("/api/cluster_status?format=1", Reply(body=text))
    gpu = SignalSpec(SignalType.PENDING_DEMAND, "GPU")
    now = datetime(2026, 11, 26, 13, 23, tzinfo=UTC)
    result = RayDashboardSource().fetch([MetricTarget(GPU_GROUP, GPU_WORKER, dashboard.url)], [gpu], now)
    assert result.get(GPU_GROUP, gpu).value == 2.0 and result.get(GPU_GROUP, gpu).at == now


def test_no_gpu_demand_after_the_drain(dashboard: StubServer) -> None:
    name = "cluster_status-gpu-idle.json"
    dashboard.route("/api/cluster_status", Reply(body=load_json(GPU_FIXTURES / name)))
    gpu = SignalSpec(SignalType.PENDING_DEMAND, "GPU")
    now = status_time(name) + timedelta(seconds=1)
    result = RayDashboardSource().fetch([MetricTarget(GPU_GROUP, GPU_WORKER, dashboard.url)], [gpu], now)
    assert result.get(GPU_GROUP, gpu).available and result.get(GPU_GROUP, gpu).value == 0.0


def test_gpu_node_is_busy_with_its_gpu_in_use(dashboard: StubServer) -> None:
    name = "cluster_status-gpu-pending-t15.json"
    dashboard.route("/api/cluster_status", Reply(body=load_json(GPU_FIXTURES / name)))
    act = RayDashboardSource().activity({CLUSTER: dashboard.url}, status_time(name))[CLUSTER]
    (node,) = act.nodes
    assert node.node_id == "7603ba46612d2c61811b12f05e251aa406694975590dee4435c9a211"
    assert node.activity == Activity.BUSY and node.is_head and node.node_ip == "192.0.2.2"
    assert node.running_tasks == 4  # gpu_busy_matmul + 3 x cpu_spin; the 2 pending hold no node
    assert "GPU" in node.detail and "CPU" in node.detail
