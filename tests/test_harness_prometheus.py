"""The Prometheus fixtures are a real Prometheus, fed only through file_sd, that can be taken away."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from tests.harness.prometheus import PrometheusQueryError, PrometheusServer
from tests.harness.ray import RayTestCluster


def test_scrapes_ray_node_metrics_through_the_discovery_file(
    prometheus: PrometheusServer, ray_cluster: RayTestCluster
) -> None:
    result = prometheus.wait_for("ray_node_cpu_utilization", timeout_s=60)
    sd_targets = set(json.loads(ray_cluster.sd_file.read_text())[0]["targets"])
    assert f"127.0.0.1:{ray_cluster.metrics_port}" in sd_targets
    assert {r["metric"]["instance"] for r in result} <= sd_targets
    assert all(0.0 <= float(r["value"][1]) <= 100.0 for r in result)
    assert {r["metric"]["job"] for r in result} == {"ray"}

    # Every target came from the file, none from a static list.
    config = yaml.safe_load(prometheus.config_path.read_text())
    (job,) = config["scrape_configs"]
    assert "static_configs" not in job
    assert job["file_sd_configs"][0]["files"] == [str(ray_cluster.sd_file)]
    targets = prometheus.targets()
    assert {t["discoveredLabels"]["__meta_filepath"] for t in targets} == {str(ray_cluster.sd_file)}
    assert f"127.0.0.1:{ray_cluster.metrics_port}" in {t["discoveredLabels"]["__address__"] for t in targets}


def test_stopped_prometheus_fails_queries_and_answers_again_after_restart(
    prometheus: PrometheusServer,
) -> None:
    prometheus.wait_for("ray_node_cpu_utilization", timeout_s=60)
    port, pid = prometheus.port, prometheus.pid

    prometheus.stop()
    assert not prometheus.is_ready()
    with pytest.raises(PrometheusQueryError):
        prometheus.query("up")

    prometheus.start()
    assert prometheus.port == port
    assert prometheus.pid != pid
    # The history written before the outage is still there (same data dir).
    history = prometheus.wait_for("count_over_time(ray_node_cpu_utilization[10m])", timeout_s=30)
    assert float(history[0]["value"][1]) >= 1
    prometheus.wait_for("up{job='ray'} == 1", timeout_s=30)


class _Exporter(BaseHTTPRequestHandler):
    value = 42.0

    def do_GET(self) -> None:
        body = f'# TYPE rayops_synthetic gauge\nrayops_synthetic{{shape="cpu"}} {self.value}\n'.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def synthetic_exporter() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Exporter)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_factory_scrapes_any_file_sd_target(
    prometheus_factory: Callable[..., PrometheusServer], synthetic_exporter: int, tmp_path: Path
) -> None:
    sd_file = tmp_path / "targets.json"
    server = prometheus_factory([sd_file], job_name="synthetic")
    # The file may appear after Prometheus starts, as Ray's head writes its own a few seconds in.
    sd_file.write_text(
        json.dumps([{"labels": {"bench": "b1"}, "targets": [f"127.0.0.1:{synthetic_exporter}"]}])
    )
    (sample,) = server.wait_for("rayops_synthetic", timeout_s=30)
    assert sample["metric"]["job"] == "synthetic"
    assert sample["metric"]["bench"] == "b1"
    assert sample["metric"]["shape"] == "cpu"
    assert float(sample["value"][1]) == 42.0
