"""The Ray dashboard source when the dashboard is down, slow, broken, changed, or partly answering."""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from controller.domain import Activity, ClusterRef, GroupRef
from controller.localray import free_ports
from controller.metrics.base import MetricTarget
from controller.metrics.http import HttpSettings
from controller.metrics.ray_dashboard import RayDashboardSource, kuberay_dashboard_url
from tests.metrics.conftest import DASHBOARD_FIXTURES, load_json, serve_recorded_dashboard
from tests.metrics.stub import Reply, StubServer
from tests.metrics.test_dashboard_versions import CLUSTER, CPU_GROUP, PENDING_CPU, targets, tick

VERSION = "2.60.0"
NOW = tick(VERSION)


def fixture_body(name: str) -> Any:
    return copy.deepcopy(load_json(DASHBOARD_FIXTURES / VERSION / name))


def pending(src: RayDashboardSource, url: str, now: Any = NOW) -> Any:
    return src.fetch(targets(url), [PENDING_CPU], now).get(CPU_GROUP, PENDING_CPU)


def src(timeout_s: float = 1.0, **kw: Any) -> RayDashboardSource:
    return RayDashboardSource(http=HttpSettings(timeout_s=timeout_s, retries=kw.pop("retries", 0)), **kw)


def test_dashboard_down_gives_unavailable_for_demand_and_activity() -> None:
    (port,) = free_ports(1)
    url = f"http://127.0.0.1:{port}"
    source = src(retries=2)
    started = time.monotonic()
    sample = pending(source, url)
    act = source.activity({CLUSTER: url}, NOW)[CLUSTER]
    assert time.monotonic() - started < 2.0
    assert sample.value is None and (sample.unavailable or "").startswith("cannot connect")
    assert act.nodes == () and (act.unavailable or "").startswith("cannot connect")


def test_slow_dashboard_times_out_within_the_timeout(stub: StubServer) -> None:
    serve_recorded_dashboard(stub, VERSION)
    for path in ("/api/cluster_status", "/api/v0/nodes", "/api/v0/tasks", "/api/v0/actors"):
        stub.route(path, Reply(body={}, delay_s=5.0))
    source = src(timeout_s=1.0)
    started = time.monotonic()
    sample = pending(source, stub.url)
    act = source.activity({CLUSTER: stub.url}, NOW + timedelta(seconds=1))[CLUSTER]
    assert time.monotonic() - started < 2.6
    assert sample.unavailable == "timeout after 1.0 s"
    assert act.unavailable == "timeout after 1.0 s"


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (Reply(500, {"result": False, "msg": "GCS unavailable", "data": {}}), "HTTP 500"),
        (Reply(200, {"result": False, "msg": "Failed to get cluster status", "data": {}}), "dashboard error"),
        (Reply(200, "<html>login</html>", "text/html"), "garbage answer"),
        (Reply(200, {"data": {"clusterStatus": {"autoscalerReport": {}}}}), "dashboard changed shape"),
        (Reply(200, {"data": {"clusterStatus": 42}}), "dashboard changed shape"),
        (Reply(200, [1, 2, 3]), "dashboard changed shape"),
        (Reply(401, "Unauthorized"), "HTTP 401"),
        (Reply(drop=True), "cannot connect"),
    ],
)
def test_broken_status_answers_are_unavailable(stub: StubServer, reply: Reply, reason: str) -> None:
    stub.route("/api/cluster_status", reply)
    sample = pending(src(), stub.url)
    assert sample.value is None and (sample.unavailable or "").startswith(reason), sample.unavailable


def test_v2_text_with_an_unknown_demand_line_is_unavailable_not_zero(stub: StubServer) -> None:
    stub.route("/api/cluster_status", Reply(body={"result": True, "data": {"clusterStatus": None}}))
    text = fixture_body("cluster_status-format1.json")
    text["data"]["clusterStatus"] += "\n {'CPU': 1.0}: 5 waiting somewhere new"
    stub.route("/api/cluster_status?format=1", Reply(body=text))
    sample = pending(src(), stub.url)
    assert (sample.unavailable or "").startswith("dashboard changed shape: unknown pending-demand line")


def test_no_demand_is_a_real_zero(stub: StubServer) -> None:
    status = fixture_body("cluster_status.json")
    status["data"]["clusterStatus"]["loadMetricsReport"].update(resourceDemand=[], pgDemand=[])
    stub.route("/api/cluster_status", Reply(body=status))
    sample = pending(src(), stub.url)
    assert sample.available and sample.value == 0.0


def test_stale_v1_report_is_unavailable(stub: StubServer) -> None:
    serve_recorded_dashboard(stub, VERSION)
    sample = pending(src(staleness_s=60), stub.url, NOW + timedelta(minutes=10))
    assert (sample.unavailable or "").startswith("stale: the autoscaler report is 605 s old")


def test_missing_tasks_make_idle_looking_nodes_unknown_but_busy_stays_busy(stub: StubServer) -> None:
    scenario = serve_recorded_dashboard(stub, VERSION)
    stub.route("/api/v0/tasks", Reply(500, {"result": False, "msg": "rate limited", "data": None}))
    act = src().activity({CLUSTER: stub.url}, NOW)[CLUSTER]
    by = {n.node_id: n for n in act.nodes}
    spare, cpu, head = (by[scenario["nodes"][r]] for r in ("spare", "cpu", "head"))
    assert spare.activity == Activity.UNKNOWN and "tasks unavailable (HTTP 500" in spare.detail
    assert cpu.activity == Activity.BUSY and "in use: CPU" in cpu.detail  # logical usage still seen
    assert head.activity == Activity.BUSY  # its actor


def test_truncated_task_list_is_not_taken_as_complete(stub: StubServer) -> None:
    scenario = serve_recorded_dashboard(stub, VERSION)
    tasks = fixture_body("v0-tasks.json")
    tasks["data"]["result"]["num_filtered"] = 20000
    stub.route("/api/v0/tasks", Reply(body=tasks))
    act = src().activity({CLUSTER: stub.url}, NOW)[CLUSTER]
    spare = next(n for n in act.nodes if n.node_id == scenario["nodes"]["spare"])
    assert spare.activity == Activity.UNKNOWN and "truncated to 5 of 20000" in spare.detail


def test_dropped_task_events_without_usage_evidence_are_unknown(stub: StubServer) -> None:
    scenario = serve_recorded_dashboard(stub, "2.60.0-autoscaler-v2")  # no per-node usage under v2
    tasks = load_json(DASHBOARD_FIXTURES / "2.60.0-autoscaler-v2" / "v0-tasks.json")
    tasks["data"]["result"]["total"] = tasks["data"]["result"]["num_after_truncation"] + 7
    stub.route("/api/v0/tasks", Reply(body=tasks))
    act = src().activity({CLUSTER: stub.url}, NOW)[CLUSTER]
    spare = next(n for n in act.nodes if n.node_id == scenario["nodes"]["spare"])
    assert spare.activity == Activity.UNKNOWN and "7 dropped at the source" in spare.detail


def test_pod_name_lookup_failing_leaves_activity_intact(stub: StubServer) -> None:
    scenario = serve_recorded_dashboard(stub, VERSION)
    for node_id in scenario["nodes"].values():
        stub.route(f"/nodes/{node_id}", Reply(500, "no"))
    source = src()
    act = source.activity({CLUSTER: stub.url}, NOW)[CLUSTER]
    assert act.unavailable is None and all(n.pod_name is None for n in act.nodes)
    assert {n.activity for n in act.nodes} == {Activity.BUSY, Activity.IDLE}
    serve_recorded_dashboard(stub, VERSION)  # lookups work again: asked again, not cached as None
    act = source.activity({CLUSTER: stub.url}, NOW + timedelta(seconds=15))[CLUSTER]
    assert act.by_pod_name("fixture-cpu-worker-a1b2c") is not None


@pytest.mark.parametrize(
    ("settings", "header", "value"),
    [
        (HttpSettings(bearer_token="oauth-token"), "authorization", "Bearer oauth-token"),
        (
            HttpSettings(bearer_token="ray-token", auth_header="x-ray-authorization"),
            "x-ray-authorization",
            "Bearer ray-token",
        ),
    ],
)
def test_tokens_are_sent(stub: StubServer, settings: HttpSettings, header: str, value: str) -> None:
    serve_recorded_dashboard(stub, VERSION)
    source = RayDashboardSource(http=settings)
    pending(source, stub.url)
    source.activity({CLUSTER: stub.url}, NOW + timedelta(seconds=1))
    assert stub.seen and all(s.headers.get(header) == value for s in stub.seen)


def test_many_clusters_are_fetched_concurrently(stub_factory: Callable[[], StubServer]) -> None:
    servers = [stub_factory() for _ in range(12)]
    ts: list[MetricTarget] = []
    for i, s in enumerate(servers):
        serve_recorded_dashboard(s, VERSION)
        status = fixture_body("cluster_status.json")
        s.route("/api/cluster_status", Reply(body=status, delay_s=0.3))
        ts.append(MetricTarget(GroupRef("ns", f"c{i}", "cpu"), {"CPU": 1.0}, s.url))
    source = RayDashboardSource(http=HttpSettings(timeout_s=3.0), concurrency=6)
    started = time.monotonic()
    result = source.fetch(ts, [PENDING_CPU], NOW)
    elapsed = time.monotonic() - started
    assert all(result.get(t.ref, PENDING_CPU).value == 5.0 for t in ts)
    assert result.requests == 12
    assert elapsed < 1.5, elapsed  # 12 x 0.3 s sequentially would be 3.6 s


def test_url_resolution(stub: StubServer) -> None:
    serve_recorded_dashboard(stub, VERSION)
    ref = GroupRef("ns", "c", "cpu")
    resolved = RayDashboardSource(url_for=lambda c: stub.url if c.name == "c" else None)
    assert (
        resolved.fetch([MetricTarget(ref, {"CPU": 1.0})], [PENDING_CPU], NOW).get(ref, PENDING_CPU).value
        == 5.0
    )
    unknown = RayDashboardSource().fetch([MetricTarget(ref)], [PENDING_CPU], NOW).get(ref, PENDING_CPU)
    assert unknown.unavailable == "no dashboard URL known for this cluster"
    act = RayDashboardSource().activity({ClusterRef("ns", "c"): None}, NOW)[ClusterRef("ns", "c")]
    assert act.unavailable == "no dashboard URL known for this cluster"
    assert (
        kuberay_dashboard_url(ClusterRef("team-a", "llm"))
        == "http://llm-head-svc.team-a.svc.cluster.local:8265"
    )


def test_trouble_is_logged_once_per_incident(stub: StubServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="controller.metrics.ray_dashboard")
    stub.route("/api/cluster_status", Reply(503, "down"))
    source = src()
    for i in range(4):
        pending(source, stub.url, NOW + timedelta(seconds=15 * i))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert (
        len(warnings) == 1 and "cluster local/recorded: pending demand unavailable: HTTP 503" in warnings[0]
    )
    serve_recorded_dashboard(stub, VERSION)
    for i in range(3):
        assert pending(source, stub.url, NOW + timedelta(seconds=1 + i)).value == 5.0
    recovered = [r.getMessage() for r in caplog.records if "recovered" in r.getMessage()]
    assert len(recovered) == 1
    unplaced = [r for r in caplog.records if "no worker group fits" in r.getMessage()]
    assert len(unplaced) == 1 and "{CPU: 1, GPU: 1} x 1" in unplaced[0].getMessage()
