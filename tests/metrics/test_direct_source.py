"""The direct source: file_sd targets, scrape failures, labels, and the text filter before parsing."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from controller.domain import ClusterRef, GroupRef, SignalSpec, SignalType
from controller.localray import free_ports
from controller.metrics.base import MetricTarget
from controller.metrics.direct import DirectSource, filter_families, parse_series, read_file_sd
from controller.metrics.http import HttpSettings
from tests.metrics.stub import Reply, StubServer

NOW = datetime(2026, 11, 26, 15, 0, tzinfo=UTC)
CPU = SignalSpec(SignalType.UTILIZATION, resource="CPU")
MEM = SignalSpec(SignalType.UTILIZATION, resource="memory")
TEXT = "text/plain; version=0.0.4"


def node_text(cpu: float, mem_used: float = 1.0, mem_total: float = 4.0, pending: float | None = None) -> str:
    lines = [
        "# HELP ray_node_cpu_utilization Total CPU usage on a ray node",
        "# TYPE ray_node_cpu_utilization gauge",
        f'ray_node_cpu_utilization{{ip="127.0.0.1",SessionName="s"}} {cpu}',
        "# TYPE ray_node_mem_used gauge",
        f'ray_node_mem_used{{ip="127.0.0.1"}} {mem_used}',
        "# TYPE ray_node_mem_total gauge",
        f'ray_node_mem_total{{ip="127.0.0.1"}} {mem_total}',
        "# TYPE ray_grpc_server_req_process_time_ms histogram",
        'ray_grpc_server_req_process_time_ms_bucket{le="+Inf"} 3',
    ]
    if pending is not None:
        lines += [
            "# TYPE ray_tasks gauge",
            f'ray_tasks{{State="PENDING_NODE_ASSIGNMENT",Source="owner"}} {pending}',
        ]
    return "\n".join(lines) + "\n"


def write_sd(path: Path, groups: list[tuple[list[str], dict[str, str]]]) -> Path:
    path.write_text(json.dumps([{"targets": t, "labels": labels} for t, labels in groups]))
    return path


def mapping(cluster: str, group: str) -> dict[str, str]:
    return {"namespace": "local", "ray_io_cluster": cluster, "ray_io_group": group}


def test_groups_average_their_nodes_and_clusters_sum_pending(
    stub_factory: Callable[[], StubServer], tmp_path: Path
) -> None:
    a1, a2, b1 = stub_factory(), stub_factory(), stub_factory()
    a1.route("/metrics", Reply(body=node_text(20.0, 1, 4, pending=2), content_type=TEXT))
    a2.route("/metrics", Reply(body=node_text(60.0, 3, 4, pending=1), content_type=TEXT))
    b1.route("/metrics", Reply(body=node_text(5.0), content_type=TEXT))
    sd = write_sd(
        tmp_path / "sd.json",
        [([a1.address, a2.address], mapping("a", "workers")), ([b1.address], mapping("b", "workers"))],
    )
    src = DirectSource([sd])
    ga, gb = GroupRef("local", "a", "workers"), GroupRef("local", "b", "workers")
    result = src.fetch([MetricTarget(ga), MetricTarget(gb)], [CPU, MEM], NOW)
    assert result.get(ga, CPU).value == 40.0 and result.get(ga, MEM).value == 50.0
    assert result.get(gb, CPU).value == 5.0 and result.get(gb, MEM).value == 25.0
    assert result.requests == 3
    counts = src.pending_tasks([ClusterRef("local", "a"), ClusterRef("local", "b")], NOW)
    assert counts[ClusterRef("local", "a")].value == 3.0
    assert (counts[ClusterRef("local", "b")].unavailable or "").startswith("no series")


def test_a_failed_node_makes_its_group_unavailable_not_a_partial_average(
    stub_factory: Callable[[], StubServer], tmp_path: Path
) -> None:
    ok, broken = stub_factory(), stub_factory()
    ok.route("/metrics", Reply(body=node_text(20.0), content_type=TEXT))
    broken.route("/metrics", Reply(500, "oops"))
    (dead_port,) = free_ports(1)
    sd = write_sd(
        tmp_path / "sd.json",
        [
            ([ok.address, broken.address], mapping("c", "g1")),
            ([f"127.0.0.1:{dead_port}"], mapping("c", "g2")),
            ([ok.address], mapping("c", "g3")),
        ],
    )
    result = DirectSource([sd]).fetch(
        [MetricTarget(GroupRef("local", "c", g)) for g in ("g1", "g2", "g3")], [CPU], NOW
    )
    g1 = result.get(GroupRef("local", "c", "g1"), CPU).unavailable or ""
    assert g1.startswith(f"scrape failed: {broken.address}: HTTP 500")
    assert "cannot connect" in (result.get(GroupRef("local", "c", "g2"), CPU).unavailable or "")
    assert result.get(GroupRef("local", "c", "g3"), CPU).value == 20.0


def test_slow_target_times_out_within_the_timeout(stub: StubServer, tmp_path: Path) -> None:
    stub.route("/metrics", Reply(body=node_text(1.0), content_type=TEXT, delay_s=5))
    sd = write_sd(tmp_path / "sd.json", [([stub.address], mapping("c", "g"))])
    started = time.monotonic()
    result = DirectSource([sd], http=HttpSettings(timeout_s=1.0, retries=0)).fetch(
        [MetricTarget(GroupRef("local", "c", "g"))], [CPU], NOW
    )
    assert time.monotonic() - started < 1.5
    assert (result.get(GroupRef("local", "c", "g"), CPU).unavailable or "").endswith("timeout after 1.0 s")


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (None, "service discovery: cannot"),
        ("{not json", "service discovery: garbage"),
        ('{"a": 1}', "service"),
    ],
)
def test_unreadable_service_discovery_file(tmp_path: Path, content: str | None, reason: str) -> None:
    sd = tmp_path / "sd.json"
    if content is not None:
        sd.write_text(content)
    result = DirectSource([sd]).fetch([MetricTarget(GroupRef("local", "c", "g"))], [CPU], NOW)
    sample = result.get(GroupRef("local", "c", "g"), CPU)
    assert sample.value is None and (sample.unavailable or "").startswith(reason[:10]), sample.unavailable


def test_targets_without_mapping_labels_and_extra_labels(stub: StubServer, tmp_path: Path) -> None:
    stub.route("/metrics", Reply(body=node_text(30.0), content_type=TEXT))
    ray_own = write_sd(tmp_path / "ray.json", [([stub.address], {"job": "ray"})])  # Ray's own file
    ref = GroupRef("local", "c", "g")
    bare = DirectSource([ray_own]).fetch([MetricTarget(ref)], [CPU], NOW).get(ref, CPU)
    assert (bare.unavailable or "").startswith("unmapped: 1 target(s) lack the mapping labels")
    named = DirectSource([ray_own], extra_labels=mapping("c", "g")).fetch([MetricTarget(ref)], [CPU], NOW)
    assert named.get(ref, CPU).value == 30.0


def test_garbage_metrics_text_is_unavailable(stub: StubServer, tmp_path: Path) -> None:
    stub.route("/metrics", Reply(body='ray_node_cpu_utilization{ip="x" 12\n', content_type=TEXT))
    sd = write_sd(tmp_path / "sd.json", [([stub.address], mapping("c", "g"))])
    sample = DirectSource([sd]).fetch([MetricTarget(GroupRef("local", "c", "g"))], [CPU], NOW)
    reason = sample.get(GroupRef("local", "c", "g"), CPU).unavailable or ""
    assert reason.startswith(f"scrape failed: {stub.address}: garbage answer"), reason


def test_promql_and_pending_demand_are_refused() -> None:
    src = DirectSource([])
    promql = src.supports(
        SignalSpec(SignalType.PROMQL, query="sum by (namespace, ray_io_cluster, ray_io_group) (x)")
    )
    assert not promql and "cannot evaluate PromQL" in promql.reason
    assert not src.supports(SignalSpec(SignalType.PENDING_DEMAND, resource="CPU"))
    assert src.supports(SignalSpec(SignalType.UTILIZATION, resource="accel"))


def test_filter_keeps_only_wanted_families_and_target_labels_win() -> None:
    text = node_text(10.0, pending=1)
    kept = filter_families(text, {"ray_node_cpu_utilization"})
    assert "ray_node_mem_used" not in kept and "ray_grpc" not in kept
    assert kept.count("ray_node_cpu_utilization") == 3  # HELP, TYPE, sample
    series = parse_series(text, {"ray_node_cpu_utilization"}, {"ip": "from-target", "ray_io_group": "g"})
    assert series == [
        ("ray_node_cpu_utilization", {"ip": "from-target", "SessionName": "s", "ray_io_group": "g"}, 10.0)
    ]


def test_read_file_sd_merges_labels(tmp_path: Path) -> None:
    sd = write_sd(tmp_path / "sd.json", [(["127.0.0.1:1", "127.0.0.1:2"], {"ray_io_group": "g"})])
    targets = read_file_sd(sd, {"namespace": "local", "ray_io_group": "ignored"})
    assert [t.address for t in targets] == ["127.0.0.1:1", "127.0.0.1:2"]
    assert targets[0].labels == {"namespace": "local", "ray_io_group": "g"}
