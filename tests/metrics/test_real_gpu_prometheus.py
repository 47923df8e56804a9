"""The H200 captures (tests/fixtures/ray-gpu/) scraped by a real Prometheus: the Prometheus source reads
GPU utilization, GPU memory, logical GPU use and the pending-task count (summed over `Source`, the
executor side's -1 series included) exactly as the direct source does from the same text.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from controller.domain import ClusterRef, GroupRef, SignalSpec, SignalType
from controller.metrics.base import MetricTarget
from controller.metrics.direct import DirectSource
from controller.metrics.prometheus import PrometheusSource
from tests.harness.prometheus import PrometheusServer
from tests.metrics.conftest import GPU_FIXTURES
from tests.metrics.stub import Reply, StubServer, serve

pytestmark = pytest.mark.slow

CLUSTER = ClusterRef("gpu-team", "h200")
GROUP = GroupRef("gpu-team", "h200", "gpu-workers")
SIGNALS = [
    SignalSpec(SignalType.UTILIZATION, resource=r) for r in ("GPU", "GPU_memory", "logical:GPU", "CPU")
]


@pytest.fixture
def exporter(tmp_path: Path) -> Iterator[tuple[StubServer, Path]]:
    with serve() as stub:
        text = (GPU_FIXTURES / "ray-gpu-metrics-busy-t15.prom").read_text()
        stub.route("/metrics", Reply(body=text, content_type="text/plain; version=0.0.4"))
        sd = tmp_path / "gpu-sd.json"
        labels = {"namespace": "gpu-team", "ray_io_cluster": "h200", "ray_io_group": "gpu-workers"}
        sd.write_text(json.dumps([{"targets": [stub.address], "labels": labels}]))
        yield stub, sd


@pytest.mark.timeout(120)
def test_gpu_signals_through_real_prometheus(
    exporter: tuple[StubServer, Path], prometheus_factory: Callable[..., PrometheusServer]
) -> None:
    _, sd = exporter
    server = prometheus_factory([sd])
    server.wait_for("ray_node_gpus_utilization", timeout_s=60)
    prom = PrometheusSource(server.url)
    now = datetime.now(UTC)
    via_prom = prom.fetch([MetricTarget(GROUP)], SIGNALS, now)
    via_direct = DirectSource([sd]).fetch([MetricTarget(GROUP)], SIGNALS, now)
    got = {s.resource: via_prom.get(GROUP, s) for s in SIGNALS}
    assert all(s.available for s in got.values()), got
    assert got["GPU"].value == 100.0
    assert got["GPU_memory"].value == pytest.approx(9945 / (9945 + 133826) * 100)
    assert got["logical:GPU"].value == 100.0
    assert got["CPU"].value == 26.5
    for s in SIGNALS:
        assert via_prom.get(GROUP, s).value == pytest.approx(via_direct.get(GROUP, s).value)
    assert via_prom.requests == len(SIGNALS)
    assert prom.pending_tasks([CLUSTER], now)[CLUSTER].value == 2.0
    assert DirectSource([sd]).pending_tasks([CLUSTER], now)[CLUSTER].value == 2.0
