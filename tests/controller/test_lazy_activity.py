"""Node activity is asked only of clusters whose decision depends on it (issue 6, benchmark P3).

The KubeRay backend lists without asking any Ray dashboard which workers are idle; the reconciler
decides, and asks again, with activity, only for the clusters that could scale down. These tests run
the real reconciler and KubeRay backend against the Kubernetes stand-in and the fake KubeRay operator,
with the dashboards replaced by `PodActivity` (which records who was asked), and check the claim the
shortcut rests on: a decision is monotone in idleness, so when "all busy" and "all idle" agree, every
real mix of idle and busy workers gives that same decision.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.backends.base import ClusterRequest, DefersActivity
from controller.backends.kube_api import KubeApi, RetryPolicy
from controller.backends.kuberay import KubeRayBackend
from controller.deciding import PolicyVariants, decide_cluster, needs_activity
from controller.domain import Activity, ClusterRef, GroupObservation, GroupRef, Sample, SignalType, Worker
from controller.events import EventType, MemoryEvents
from controller.limits import ClusterLimits
from controller.observe import ClusterView, GroupView
from controller.policy.decide import decide
from controller.policy.loader import PolicyStore
from controller.policy.model import ScalingPolicy
from controller.policy.state import GroupState
from controller.reconcile import Reconciler
from tests.backends.driver_kuberay import PodActivity
from tests.backends.drivers import CONTRACT_PROFILE, REQUESTER
from tests.controller.fakes import T0, TableMetrics
from tests.standins.kube_api import KubeApiServer
from tests.standins.kuberay_operator import FakeKubeRayOperator

FAST = RetryPolicy(attempts=2, base_delay_s=0.01, max_delay_s=0.05, read_timeout_s=5.0)
NS = "team-a"
POLICY = """\
apiVersion: rayops.io/v1alpha1
kind: ScalingPolicy
metadata: {name: two-signals}
spec:
  selector: {namespaces: ["*"]}
  workerGroups: ["*"]
  minReplicas: 0
  maxReplicas: 4
  signals:
    - {name: pending-cpu, type: pendingDemand, resource: CPU}
    - {name: cpu-util, type: utilization, resource: CPU, target: {averageUtilization: 80}}
  behavior:
    scaleUp: {stabilizationWindowSeconds: 0}
    scaleDown: {stabilizationWindowSeconds: 0, policies: [{type: Percent, value: 100, periodSeconds: 1}]}
"""


@pytest.fixture
def server() -> Iterator[KubeApiServer]:
    s = KubeApiServer({"admin": "system:admin"}, default_token="admin").start()
    try:
        yield s
    finally:
        s.stop()


def _fleet(server: KubeApiServer, names: list[str], workers: int) -> KubeRayBackend:
    admin = KubeRayBackend(KubeApi(server.client("admin"), FAST), {CONTRACT_PROFILE.name: CONTRACT_PROFILE})
    for name in names:
        admin.create(ClusterRequest(name, NS, CONTRACT_PROFILE.name, REQUESTER, workers=workers))
    FakeKubeRayOperator(server.store).reconcile_all()
    return admin


def _reconciler(
    server: KubeApiServer, tmp: Path, metrics: TableMetrics, events: MemoryEvents | None = None
) -> tuple[Reconciler, PodActivity]:
    (tmp / "p.yaml").write_text(POLICY)
    activity = PodActivity(server)
    backend = KubeRayBackend(
        KubeApi(server.client("admin"), FAST),
        {CONTRACT_PROFILE.name: CONTRACT_PROFILE},
        activity=activity,
        namespaces=(NS,),
    )
    assert isinstance(backend, DefersActivity)
    return Reconciler(backend, metrics, PolicyStore(str(tmp)), events or MemoryEvents()), activity


def _replicas(server: KubeApiServer, name: str) -> int:
    rc = server.get_obj("rayclusters", NS, name)
    assert rc is not None
    return int(rc["spec"]["workerGroupSpecs"][0]["replicas"])


def test_only_a_cluster_that_could_scale_down_is_asked_and_it_removes_idle_workers(
    server: KubeApiServer, tmp_path: Path
) -> None:
    _fleet(server, ["busy", "quiet", "half"], workers=2)
    metrics = TableMetrics()
    for name, util in (("busy", 80.0), ("quiet", 0.0), ("half", 0.0)):
        g = GroupRef(NS, name, "cpu")
        metrics.set(g, SignalType.PENDING_DEMAND, 0)
        metrics.set(g, SignalType.UTILIZATION, util)
    reconciler, activity = _reconciler(server, tmp_path, metrics)
    half_pods = [
        p["metadata"]["name"]
        for p in server.list_objs("pods", NS, "ray.io/cluster=half")
        if p["metadata"]["labels"].get("ray.io/node-type") == "worker"
    ]
    activity.busy.add(half_pods[0])  # a long task the utilization average hides

    report = reconciler.reconcile_once(T0)

    # `busy` runs at its utilization target: no mix of idle workers could lower it, so no dashboard
    # round; the other two could go to 0 and were asked, once, together.
    assert [sorted(r.name for r in asked) for asked in activity.asked] == [["half", "quiet"]]
    assert report.decision("cpu", "busy").target == 2 and _replicas(server, "busy") == 2
    assert report.decision("cpu", "quiet").target == 0 and _replicas(server, "quiet") == 0
    half = report.decision("cpu", "half")
    assert half.target == 1 and half.remove == (half_pods[1],)  # the busy worker stays
    assert _replicas(server, "half") == 1


def test_without_an_answer_from_the_dashboard_nothing_is_removed(
    server: KubeApiServer, tmp_path: Path
) -> None:
    _fleet(server, ["quiet"], workers=2)
    metrics = TableMetrics()
    g = GroupRef(NS, "quiet", "cpu")
    metrics.set(g, SignalType.PENDING_DEMAND, 0)
    metrics.set(g, SignalType.UTILIZATION, 0.0)
    events = MemoryEvents()
    reconciler, activity = _reconciler(server, tmp_path, metrics, events)
    activity.down.add(ClusterRef(NS, "quiet"))
    report = reconciler.reconcile_once(T0)
    d = report.decision("cpu", "quiet")
    assert d.target == 2 and d.remove == () and len(activity.asked) == 1
    assert _replicas(server, "quiet") == 2
    assert not events.of_type(EventType.SCALED_DOWN)


# --- the monotonicity the shortcut rests on -------------------------------------------------------------

REF = GroupRef(NS, "c", "cpu")


def _policy(min_replicas: int, utilization: bool, window: int) -> ScalingPolicy:
    signals: list[dict[str, object]] = [{"name": "pending-cpu", "type": "pendingDemand", "resource": "CPU"}]
    if utilization:
        signals.append(
            {
                "name": "cpu-util",
                "type": "utilization",
                "resource": "CPU",
                "target": {"averageUtilization": 70},
            }
        )
    return ScalingPolicy.model_validate(
        {
            "apiVersion": "rayops.io/v1alpha1",
            "kind": "ScalingPolicy",
            "metadata": {"name": "p"},
            "spec": {
                "selector": {"namespaces": ["*"]},
                "minReplicas": min_replicas,
                "maxReplicas": 8,
                "signals": signals,
                "behavior": {
                    "scaleUp": {"stabilizationWindowSeconds": 0},
                    "scaleDown": {
                        "stabilizationWindowSeconds": window,
                        "policies": [{"type": "Pods", "value": 2, "periodSeconds": 60}],
                    },
                },
            },
        }
    )


@st.composite
def _cases(draw: st.DrawFn) -> tuple[ClusterView, list[Activity]]:
    n = draw(st.integers(0, 6))
    ready = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    never_started = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    workers = tuple(
        Worker(
            name=f"w{i}",
            activity=Activity.IDLE if (never_started[i] and not ready[i]) else Activity.UNKNOWN,
            ready=ready[i],
            started_at=T0 - timedelta(minutes=i + 1),
        )
        for i in range(n)
    )
    policy = _policy(draw(st.integers(0, 2)), draw(st.booleans()), draw(st.sampled_from([0, 30])))
    samples = {"pending-cpu": Sample.ok(float(draw(st.integers(0, 6))), T0, "t")}
    if len(policy.spec.signals) > 1:
        samples["cpu-util"] = Sample.ok(float(draw(st.integers(0, 100))), T0, "t")
    obs = GroupObservation(
        ref=REF,
        current=n,
        min_replicas=policy.spec.min_replicas,
        max_replicas=policy.spec.max_replicas,
        ready=sum(ready),
        workers=workers,
        pending_deletes=(),
        samples=samples,
        worker_resources={"CPU": 1.0},
    )
    # A state with an earlier, higher recommendation exercises the scale-down window.
    state = GroupState.empty()
    if draw(st.booleans()) and n:
        _, state = decide(
            policy, replace(obs, samples={k: Sample.ok(8.0, T0, "t") for k in samples}), state, T0
        )
    at = [draw(st.sampled_from([Activity.IDLE, Activity.BUSY])) for _ in range(n)]
    view = ClusterView(cluster=None, groups=(GroupView(None, policy, obs, state),), limits=ClusterLimits())  # type: ignore[arg-type]
    return view, at


@settings(max_examples=300, deadline=None)
@given(_cases())
def test_when_all_busy_and_all_idle_agree_every_real_mix_gives_the_same_decision(
    case: tuple[ClusterView, list[Activity]],
) -> None:
    view, actual = case
    now = T0 + timedelta(seconds=10)
    variants = PolicyVariants()
    first = decide_cluster(view, now, variants, "r", False)
    if needs_activity(first, now, variants, "r", False):
        return
    (g,) = view.groups
    known = tuple(
        w if w.activity != Activity.UNKNOWN else replace(w, activity=a)
        for w, a in zip(g.obs.workers, actual, strict=True)
    )
    real = decide_cluster(
        replace(view, groups=(replace(g, obs=replace(g.obs, workers=known)),)), now, variants, "r", False
    )
    assert [(d.target, d.remove) for d in real.decisions] == [(d.target, d.remove) for d in first.decisions]
