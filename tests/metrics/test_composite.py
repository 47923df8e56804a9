"""Routing signals to sources, and refusing at load time a policy whose signal no source can give."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from controller.domain import GroupRef, Sample, SignalSpec, SignalType
from controller.metrics.base import FetchResult, MetricTarget, Support
from controller.metrics.composite import CompositeSource, check_signals
from controller.metrics.direct import DirectSource
from controller.metrics.prometheus import PrometheusSource
from controller.metrics.ray_dashboard import RayDashboardSource
from controller.policy.model import ScalingPolicy

NOW = datetime(2026, 11, 26, 15, 0, tzinfo=UTC)
REF = GroupRef("ns", "c", "g")
CPU = SignalSpec(SignalType.UTILIZATION, resource="CPU")
PENDING = SignalSpec(SignalType.PENDING_DEMAND, resource="CPU")
QUERY = SignalSpec(SignalType.PROMQL, query="sum by (namespace, ray_io_cluster, ray_io_group) (q)")

POLICY = """
apiVersion: rayops.io/v1alpha1
kind: ScalingPolicy
metadata: {name: queue-and-cpu}
spec:
  maxReplicas: 8
  signals:
    - {name: pending-cpu, type: pendingDemand, resource: CPU}
    - {name: cpu-util, type: utilization, resource: CPU, target: {averageUtilization: 70}}
    - name: queue
      type: promql
      query: sum by (namespace, ray_io_cluster, ray_io_group) (my_queue_depth)
      target: {averageValue: 10}
"""


class Fixed:
    """A source answering fixed values for the types it claims, recording what it was asked."""

    def __init__(self, name: str, types: set[SignalType], value: float) -> None:
        self.name = name
        self.types = types
        self.value = value
        self.asked: list[list[SignalSpec]] = []

    def supports(self, spec: SignalSpec) -> Support:
        return Support(spec.type in self.types, f"{self.name} gives only {sorted(self.types)}")

    def fetch(
        self, targets: Sequence[MetricTarget], signals: Collection[SignalSpec], now: datetime
    ) -> FetchResult:
        self.asked.append(list(signals))
        samples = {t.ref: {s: Sample.ok(self.value, now, self.name) for s in signals} for t in targets}
        return FetchResult(samples=samples, requests=1)


def policy() -> ScalingPolicy:
    return ScalingPolicy.model_validate(yaml.safe_load(POLICY))


def test_each_signal_goes_to_the_first_source_that_supports_it() -> None:
    prom = Fixed("prometheus", {SignalType.UTILIZATION, SignalType.PROMQL}, 1.0)
    dash = Fixed("ray-dashboard", {SignalType.PENDING_DEMAND}, 2.0)
    direct = Fixed("direct", {SignalType.UTILIZATION}, 3.0)
    composite = CompositeSource([prom, dash, direct])
    result = composite.fetch([MetricTarget(REF)], [CPU, PENDING, QUERY], NOW)
    assert result.get(REF, CPU).value == 1.0 and result.get(REF, QUERY).value == 1.0
    assert result.get(REF, PENDING).value == 2.0
    assert prom.asked == [[CPU, QUERY]] and dash.asked == [[PENDING]] and direct.asked == []
    assert result.requests == 2
    preferring = CompositeSource([prom, dash, direct], prefer={SignalType.UTILIZATION: "direct"})
    assert preferring.fetch([MetricTarget(REF)], [CPU], NOW).get(REF, CPU).value == 3.0


def test_signal_nobody_gives_is_unavailable_not_zero() -> None:
    composite = CompositeSource([Fixed("direct", {SignalType.UTILIZATION}, 3.0)])
    sample = composite.fetch([MetricTarget(REF)], [QUERY], NOW).get(REF, QUERY)
    assert sample.value is None and (sample.unavailable or "").startswith("no configured source")


def test_policy_asking_for_promql_is_refused_when_only_the_direct_source_is_configured(
    tmp_path: Path,
) -> None:
    laptop = CompositeSource([DirectSource([tmp_path / "sd.json"]), RayDashboardSource()])
    assert laptop.capabilities() == {
        SignalType.PENDING_DEMAND: "ray-dashboard",
        SignalType.UTILIZATION: "direct",
    }
    errors = check_signals([policy()], laptop)
    assert errors == [
        "ScalingPolicy queue-and-cpu: signal 'queue' (promql 'sum by (namespace, ray_io_cluster, "
        "ray_io_group) (my_queue_depth)'): no configured metrics source can give it: direct: the direct "
        "source reads Ray's own /metrics and cannot evaluate PromQL; configure Prometheus; ray-dashboard: "
        "the Ray dashboard gives pending demand only, not promql"
    ]
    full = CompositeSource([PrometheusSource("http://127.0.0.1:9"), RayDashboardSource()])
    assert check_signals([policy()], full) == []
    assert check_signals({"queue-and-cpu": policy()}, full) == []
    no_dashboard = CompositeSource([PrometheusSource("http://127.0.0.1:9")])
    (error,) = check_signals([policy()], no_dashboard)
    assert "signal 'pending-cpu' (pendingDemand CPU)" in error and "Ray dashboard" in error


def test_check_signals_takes_a_policy_set_or_plain_specs() -> None:
    class PolicySetLike:
        scaling_policies = {"queue-and-cpu": policy()}

    only_prom = CompositeSource([PrometheusSource("http://127.0.0.1:9")])
    assert len(check_signals(PolicySetLike(), only_prom)) == 1
    assert check_signals([CPU, QUERY], only_prom) == []
    (err,) = check_signals([PENDING], only_prom)
    assert err.startswith("signal pendingDemand CPU: no configured metrics source can give it")
    assert check_signals([CPU], CompositeSource([]))[0].endswith("no metrics source is configured")


def test_configuration_errors_are_caught_early() -> None:
    with pytest.raises(ValueError, match="distinct"):
        CompositeSource([Fixed("a", set(), 0), Fixed("a", set(), 0)])
    with pytest.raises(ValueError, match="names source 'prom'"):
        CompositeSource([Fixed("a", set(), 0)], prefer={SignalType.PROMQL: "prom"})


def test_targets_for_the_clusters_a_backend_listed() -> None:
    from controller.backends.base import ManagedCluster, ManagedGroup
    from controller.domain import ClusterRef
    from controller.metrics.base import targets_for

    gpu = ManagedGroup(GroupRef("ns", "c", "gpu"), 1, 0, 4, 1, worker_resources={"CPU": 8.0, "GPU": 1.0})
    cpu = ManagedGroup(GroupRef("ns", "c", "cpu"), 2, 0, 8, 2)
    cluster = ManagedCluster(ClusterRef("ns", "c"), (gpu, cpu), dashboard_url="http://c-head-svc.ns.svc:8265")
    assert targets_for([cluster]) == [
        MetricTarget(gpu.ref, {"CPU": 8.0, "GPU": 1.0}, "http://c-head-svc.ns.svc:8265"),
        MetricTarget(cpu.ref, {"CPU": 1.0}, "http://c-head-svc.ns.svc:8265"),
    ]
