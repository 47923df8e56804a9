"""One contract, every MetricsSource: the same checks against Prometheus, the Ray dashboard, the direct
scrape, the composite and the fake, each driven by a small adapter that sets up "healthy", "down" and
"slow" upstreams on loopback (style.md B6).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from controller.domain import GroupRef, SignalSpec, SignalType
from controller.localray import free_ports
from controller.metrics.base import MetricsSource, MetricTarget
from controller.metrics.composite import CompositeSource
from controller.metrics.direct import DirectSource
from controller.metrics.fake import FakeMetricsSource
from controller.metrics.http import HttpSettings
from controller.metrics.prometheus import PrometheusSource
from controller.metrics.ray_dashboard import RayDashboardSource
from tests.metrics.conftest import serve_recorded_dashboard
from tests.metrics.stub import Reply, StubServer, serve
from tests.metrics.test_dashboard_versions import tick
from tests.metrics.test_prometheus_source import utilization_answer

REF = GroupRef("local", "recorded", "cpu")
OTHER = GroupRef("local", "elsewhere", "cpu")
CPU_UTIL = SignalSpec(SignalType.UTILIZATION, resource="CPU")
PENDING = SignalSpec(SignalType.PENDING_DEMAND, resource="CPU")
QUERY = SignalSpec(SignalType.PROMQL, query="sum by (namespace, ray_io_cluster, ray_io_group) (q)")
ALL = [CPU_UTIL, PENDING, QUERY, CPU_UTIL]  # a duplicate on purpose
NOW = tick("2.60.0")
TIMEOUT_S = 1.0
NODE_TEXT = '# TYPE ray_node_cpu_utilization gauge\nray_node_cpu_utilization{ip="127.0.0.1"} 12.5\n'


@dataclass
class Setup:
    source: MetricsSource
    targets: list[MetricTarget]
    supported: SignalSpec  # a signal this source gives for REF when healthy


Driver = Callable[[str, Path], AbstractContextManager[Setup]]


def _http() -> HttpSettings:
    return HttpSettings(timeout_s=TIMEOUT_S, retries=0)


@contextmanager
def prometheus(mode: str, tmp: Path) -> Iterator[Setup]:
    with serve() as stub:
        reply = Reply(body=utilization_answer({REF: 12.5}), delay_s=5.0 if mode == "slow" else 0.0)
        stub.route("/api/v1/query", reply)
        url = stub.url if mode != "down" else f"http://127.0.0.1:{free_ports(1)[0]}"
        yield Setup(PrometheusSource(url, http=_http()), [MetricTarget(REF), MetricTarget(OTHER)], CPU_UTIL)


@contextmanager
def dashboard(mode: str, tmp: Path) -> Iterator[Setup]:
    with serve() as stub:
        serve_recorded_dashboard(stub, "2.60.0")
        if mode == "slow":
            stub.route("/api/cluster_status", Reply(body={}, delay_s=5.0))
        url = stub.url if mode != "down" else f"http://127.0.0.1:{free_ports(1)[0]}"
        targets = [MetricTarget(REF, {"CPU": 1.0}, url), MetricTarget(OTHER, {"CPU": 1.0}, None)]
        yield Setup(RayDashboardSource(http=_http()), targets, PENDING)


def _direct_sd(tmp: Path, stub: StubServer, mode: str) -> Path:
    address = stub.address if mode != "down" else f"127.0.0.1:{free_ports(1)[0]}"
    labels = {"namespace": REF.namespace, "ray_io_cluster": REF.cluster, "ray_io_group": REF.group}
    sd = tmp / "sd.json"
    sd.write_text(json.dumps([{"targets": [address], "labels": labels}]))
    return sd


@contextmanager
def direct(mode: str, tmp: Path) -> Iterator[Setup]:
    with serve() as stub:
        stub.route(
            "/metrics", Reply(body=NODE_TEXT, content_type="text/plain", delay_s=5.0 if mode == "slow" else 0)
        )
        source = DirectSource([_direct_sd(tmp, stub, mode)], http=_http())
        yield Setup(source, [MetricTarget(REF), MetricTarget(OTHER)], CPU_UTIL)


@contextmanager
def composite(mode: str, tmp: Path) -> Iterator[Setup]:
    with prometheus(mode, tmp) as p, dashboard(mode, tmp) as d:
        targets = [MetricTarget(t.ref, t.worker_resources, t.dashboard_url) for t in d.targets]
        yield Setup(CompositeSource([p.source, d.source]), targets, PENDING)


@contextmanager
def fake(mode: str, tmp: Path) -> Iterator[Setup]:
    source = FakeMetricsSource(types={SignalType.UTILIZATION, SignalType.PENDING_DEMAND})
    if mode == "down":
        source.fail(REF, CPU_UTIL, "cannot connect: test")
    else:
        source.set(REF, CPU_UTIL, 12.5)
    yield Setup(source, [MetricTarget(REF), MetricTarget(OTHER)], CPU_UTIL)


NETWORKED = {"prometheus": prometheus, "dashboard": dashboard, "direct": direct, "composite": composite}
ALL_DRIVERS = {**NETWORKED, "fake": fake}


@pytest.mark.parametrize("driver", ALL_DRIVERS.values(), ids=ALL_DRIVERS.keys())
def test_healthy_every_pair_gets_a_sample(driver: Driver, tmp_path: Path) -> None:
    with driver("healthy", tmp_path) as setup:
        result = setup.source.fetch(setup.targets, ALL, NOW)
        for t in setup.targets:
            assert set(result.samples[t.ref]) == set(ALL)
            for spec in ALL:
                s = result.get(t.ref, spec)
                assert (s.value is None) == (s.unavailable is not None), s
                assert s.available == (s.value is not None)
                if not setup.source.supports(spec):
                    assert (s.unavailable or "").startswith(("not supported", "no configured source")), s
        good = result.get(REF, setup.supported)
        assert good.available and good.at is not None and good.at.tzinfo is not None
        assert not result.get(OTHER, setup.supported).available  # no data for it: a reason, not 0


@pytest.mark.parametrize("driver", ALL_DRIVERS.values(), ids=ALL_DRIVERS.keys())
def test_down_upstream_gives_reasons_not_values(driver: Driver, tmp_path: Path) -> None:
    with driver("down", tmp_path) as setup:
        started = time.monotonic()
        result = setup.source.fetch(setup.targets, ALL, NOW)
        assert time.monotonic() - started < TIMEOUT_S + 0.5
        for t in setup.targets:
            for spec in ALL:
                s = result.get(t.ref, spec)
                assert s.value is None and s.unavailable, s


@pytest.mark.parametrize("driver", NETWORKED.values(), ids=NETWORKED.keys())
def test_slow_upstream_is_cut_at_the_timeout(driver: Driver, tmp_path: Path) -> None:
    with driver("slow", tmp_path) as setup:
        started = time.monotonic()
        result = setup.source.fetch(setup.targets, ALL, NOW)
        assert time.monotonic() - started < TIMEOUT_S + 0.5
        s = result.get(REF, setup.supported)
        assert s.value is None and "timeout" in (s.unavailable or ""), s


@pytest.mark.parametrize("driver", ALL_DRIVERS.values(), ids=ALL_DRIVERS.keys())
def test_no_targets_and_naive_now(driver: Driver, tmp_path: Path) -> None:
    with driver("healthy", tmp_path) as setup:
        assert dict(setup.source.fetch([], ALL, NOW).samples) == {}
        naive = NOW.astimezone(UTC).replace(tzinfo=None)
        s = setup.source.fetch(setup.targets, [setup.supported], naive).get(REF, setup.supported)
        assert s.available and s.at is not None and s.at.tzinfo is not None
        assert datetime(2000, 1, 1, tzinfo=UTC) < s.at


@pytest.mark.parametrize("driver", NETWORKED.values(), ids=NETWORKED.keys())
def test_no_targets_means_no_requests(driver: Driver, tmp_path: Path) -> None:
    with driver("healthy", tmp_path) as setup:
        assert setup.source.fetch([], ALL, NOW).requests == 0
