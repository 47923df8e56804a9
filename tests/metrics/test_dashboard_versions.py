"""The Ray dashboard source on answers recorded from real clusters: Ray 2.51.1 (a year before the
newest), 2.60.0, and 2.60.0 under autoscaler v2 (no JSON report, only the `ray status` text).

The recorded scenario (tests/fixtures/ray-dashboard/record.py): a 0-CPU head running one actor; a
1-CPU worker ("cpu") running one long task; an idle worker ("spare", 0 CPUs, a custom resource); 3
pending {CPU: 1} tasks, 1 pending {CPU: 1, GPU: 1} task (no GPU anywhere), and one pending
STRICT_SPREAD placement group of 2 x {CPU: 1}.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from controller.domain import Activity, ClusterRef, GroupRef, SignalSpec, SignalType
from controller.metrics.base import MetricTarget
from controller.metrics.demand import DemandKind
from controller.metrics.http import HttpSettings
from controller.metrics.ray_dashboard import RayDashboardSource
from tests.metrics.conftest import DASHBOARD_FIXTURES, RECORDED_VERSIONS, load_json, serve_recorded_dashboard
from tests.metrics.stub import StubServer

CLUSTER = ClusterRef("local", "recorded")
CPU_GROUP = GroupRef("local", "recorded", "cpu")
SPARE_GROUP = GroupRef("local", "recorded", "spare")
GPU_GROUP = GroupRef("local", "recorded", "gpu")
PENDING_CPU = SignalSpec(SignalType.PENDING_DEMAND, resource="CPU")
PENDING_GPU = SignalSpec(SignalType.PENDING_DEMAND, resource="GPU")


def report_time(version: str) -> datetime | None:
    status = load_json(DASHBOARD_FIXTURES / version / "cluster_status.json")["data"]["clusterStatus"]
    return datetime.fromtimestamp(status["time"], UTC) if status else None


def tick(version: str) -> datetime:
    """A tick a few seconds after the recording, so a v1 report is fresh."""
    at = report_time(version)
    return (at or datetime(2026, 11, 26, 15, 0, tzinfo=UTC)) + timedelta(seconds=5)


def targets(url: str, gpu_group: bool = False) -> list[MetricTarget]:
    out = [
        MetricTarget(CPU_GROUP, {"CPU": 1.0}, url),
        MetricTarget(SPARE_GROUP, {"spare": 1.0}, url),
    ]
    if gpu_group:
        out.append(MetricTarget(GPU_GROUP, {"CPU": 4.0, "GPU": 1.0}, url))
    return out


@pytest.mark.parametrize("version", RECORDED_VERSIONS)
def test_recorded_versions_are_supported(version: str) -> None:
    scenario = load_json(DASHBOARD_FIXTURES / version / "scenario.json")
    assert scenario["ray_version"] == version.split("-")[0]
    assert scenario["autoscaler_v2"] == version.endswith("autoscaler-v2")


@pytest.mark.parametrize("version", RECORDED_VERSIONS)
def test_pending_demand_per_shape_is_attributed_to_groups(stub: StubServer, version: str) -> None:
    serve_recorded_dashboard(stub, version)
    src = RayDashboardSource(http=HttpSettings(timeout_s=3.0))
    now = tick(version)
    result = src.fetch(targets(stub.url), [PENDING_CPU, PENDING_GPU], now)
    cpu = result.get(CPU_GROUP, PENDING_CPU)
    # 3 x {CPU: 1} tasks + the 2 bundles of the STRICT_SPREAD placement group
    assert cpu.available and cpu.value == 5.0 and cpu.source == "ray-dashboard"
    assert cpu.at == (report_time(version) or now)
    assert result.get(CPU_GROUP, PENDING_GPU).value == 0.0
    assert result.get(SPARE_GROUP, PENDING_CPU).value == 0.0
    # the {CPU: 1, GPU: 1} task fits no group: reported, not dropped
    (unplaced,) = result.unplaced[CLUSTER]
    assert unplaced.resources == {"CPU": 1.0, "GPU": 1.0} and unplaced.count == 1
    v2 = version.endswith("autoscaler-v2")
    assert result.requests == (2 if v2 else 1)
    assert [s.path for s in stub.seen] == ["/api/cluster_status"] * (2 if v2 else 1)
    if v2:
        assert stub.seen[1].param("format") == "1"


@pytest.mark.parametrize("version", RECORDED_VERSIONS)
def test_gpu_shape_goes_to_the_gpu_group(stub: StubServer, version: str) -> None:
    serve_recorded_dashboard(stub, version)
    result = RayDashboardSource().fetch(
        targets(stub.url, gpu_group=True), [PENDING_GPU, PENDING_CPU], tick(version)
    )
    assert result.get(GPU_GROUP, PENDING_GPU).value == 1.0
    assert result.get(GPU_GROUP, PENDING_CPU).value == 1.0  # the GPU task's own CPU
    assert result.get(CPU_GROUP, PENDING_CPU).value == 5.0
    assert result.unplaced[CLUSTER] == ()


@pytest.mark.parametrize("version", RECORDED_VERSIONS)
def test_node_activity_busy_idle_and_pod_names(stub: StubServer, version: str) -> None:
    scenario = serve_recorded_dashboard(stub, version)
    roles = {node_id: role for role, node_id in scenario["nodes"].items()}
    src = RayDashboardSource(http=HttpSettings(timeout_s=3.0))
    now = tick(version)
    act = src.activity({CLUSTER: stub.url}, now)[CLUSTER]
    assert act.unavailable is None and act.at == now
    by_role = {roles[n.node_id]: n for n in act.nodes}
    assert set(by_role) == {"head", "cpu", "spare"}
    assert {r: n.activity for r, n in by_role.items()} == {
        "head": Activity.BUSY,  # an actor lives there
        "cpu": Activity.BUSY,  # a task runs there
        "spare": Activity.IDLE,
    }
    assert by_role["head"].actors == 1 and by_role["head"].is_head
    assert by_role["cpu"].running_tasks == 1 and not by_role["cpu"].is_head
    assert by_role["cpu"].pod_name == scenario["pod_names"]["cpu"] == "fixture-cpu-worker-a1b2c"
    assert by_role["spare"].pod_name == "fixture-spare-worker-d3e4f"
    assert by_role["head"].pod_name is None  # no RAY_CLOUD_INSTANCE_ID on the head
    assert all(n.node_ip == "127.0.0.1" and n.alive for n in act.nodes)
    assert act.by_pod_name("fixture-cpu-worker-a1b2c") == by_role["cpu"]
    assert act.by_node_id(scenario["nodes"]["spare"]) == by_role["spare"]
    # pod names are asked once per node id, then cached
    node_lookups = [s for s in stub.seen if s.path.startswith("/nodes/")]
    assert len(node_lookups) == 3
    src.activity({CLUSTER: stub.url}, now + timedelta(seconds=15))
    assert len([s for s in stub.seen if s.path.startswith("/nodes/")]) == 3


@pytest.mark.parametrize("version", RECORDED_VERSIONS)
def test_activity_reuses_the_status_answer_of_the_same_tick(stub: StubServer, version: str) -> None:
    serve_recorded_dashboard(stub, version)
    src = RayDashboardSource()
    now = tick(version)
    src.fetch(targets(stub.url), [PENDING_CPU], now)
    before = len(stub.requests_to("/api/cluster_status"))
    src.activity({CLUSTER: stub.url}, now)
    assert len(stub.requests_to("/api/cluster_status")) == before
    filters = stub.requests_to("/api/v0/tasks")[0].query
    assert filters["filter_predicates"] == ["!=", "!="] and filters["filter_values"] == ["FINISHED", "FAILED"]
    assert stub.requests_to("/api/v0/tasks")[0].param("detail") == "true"
    assert stub.requests_to("/api/v0/nodes")[0].param("filter_values") == "ALIVE"
    assert stub.requests_to("/api/v0/actors")[0].param("filter_values") == "ALIVE"


def test_demand_report_lists_every_shape(stub: StubServer) -> None:
    serve_recorded_dashboard(stub, "2.51.1")
    report: Any = RayDashboardSource().demand({CLUSTER: stub.url}, tick("2.51.1"))[CLUSTER]
    assert report.format == "v1"
    assert sorted((d.resources == {"CPU": 1.0}, d.count, d.kind) for d in report.demand) == [
        (False, 1, DemandKind.TASK),
        (True, 2, DemandKind.PLACEMENT_GROUP),
        (True, 3, DemandKind.TASK),
    ]
