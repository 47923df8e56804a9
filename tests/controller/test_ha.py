"""Two whole controllers (`build_controller`, kuberay backend) against the Kubernetes API stand-in and the
fake KubeRay operator: only the leader writes, both are Ready, and the standby takes over when the
leader stops. The API server's audit log tells who wrote what (each controller has its own token)."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.backends.base import ClusterRequest
from controller.backends.kube_api import KubeApi, RetryPolicy
from controller.backends.kuberay import KubeRayBackend
from controller.daemon import Controller, build_controller
from controller.domain import ClusterRef, GroupRef, SignalType
from controller.settings import ControllerSettings, LeaderSettings, LoopSettings, ServeSettings
from tests.backends.driver_kuberay import PodActivity
from tests.backends.drivers import CONTRACT_PROFILE, REQUESTER
from tests.controller.conftest import write_policy
from tests.controller.fakes import TableMetrics
from tests.standins.kube_api import KubeApiServer
from tests.standins.kuberay_operator import FakeKubeRayOperator

A, B = "system:serviceaccount:rayops:controller-a", "system:serviceaccount:rayops:controller-b"
TOKENS = {"token-a": A, "token-b": B, "admin": "system:admin"}
FAST = RetryPolicy(attempts=2, base_delay_s=0.01, max_delay_s=0.05, read_timeout_s=5.0)
DEMO = ClusterRef("team-a", "demo")


@pytest.fixture
def server() -> Iterator[KubeApiServer]:
    s = KubeApiServer(TOKENS, default_token="admin").start()
    operator = FakeKubeRayOperator(s.store)
    operator.start()
    try:
        yield s
    finally:
        operator.stop()
        s.stop()
        assert not operator.errors


def controller(server: KubeApiServer, token: str, name: str, tmp: Path, metrics: TableMetrics) -> Controller:
    kubeconfig = server.write_kubeconfig(tmp / f"kubeconfig-{name}", token)
    policies = tmp / "policies"
    policies.mkdir(exist_ok=True)
    write_policy(policies)
    settings = ControllerSettings(
        backend="kuberay",
        policy_dir=policies,
        namespaces=("team-a",),
        kubeconfig=str(kubeconfig),
        loop=LoopSettings(tick_seconds=0.3, removals_seconds=0.5, housekeeping_seconds=1.0),
        leader=LeaderSettings(
            namespace="rayops", identity=name, lease_duration_s=2.0, renew_deadline_s=1.2, retry_period_s=0.2
        ),
        serve=ServeSettings(port=0),
    )
    backend = KubeRayBackend(
        KubeApi(server.client(token), FAST),
        {CONTRACT_PROFILE.name: CONTRACT_PROFILE},
        activity=PodActivity(server),
        namespaces=("team-a",),
    )
    return build_controller(settings, backend=backend, metrics=metrics)


def writes(server: KubeApiServer, identity: str) -> list[str]:
    return [
        f"{r.verb} {r.resource}"
        for r in server.resource_requests(identity)
        if r.verb in ("patch", "create", "update", "delete") and r.resource in ("rayclusters", "events")
    ]


def replicas(server: KubeApiServer) -> int:
    rc = server.get_obj("rayclusters", DEMO.namespace, DEMO.name)
    assert rc is not None
    return int(rc["spec"]["workerGroupSpecs"][0]["replicas"])


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def wait_for(predicate, timeout: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def test_only_the_leader_writes_and_the_standby_takes_over(server: KubeApiServer, tmp_path: Path) -> None:
    admin = KubeRayBackend(KubeApi(server.client("admin"), FAST), {CONTRACT_PROFILE.name: CONTRACT_PROFILE})
    admin.create(ClusterRequest(DEMO.name, DEMO.namespace, CONTRACT_PROFILE.name, REQUESTER, workers=0))
    metrics = TableMetrics()
    metrics.set(GroupRef("team-a", "demo", "cpu"), SignalType.PENDING_DEMAND, 2)
    a = controller(server, "token-a", "a", tmp_path, metrics)
    b = controller(server, "token-b", "b", tmp_path, metrics)
    a.start()
    try:
        wait_for(a.elector.is_leader)
        b.start()
        wait_for(lambda: replicas(server) == 2)
        time.sleep(1.0)  # several ticks of both
        assert writes(server, B) == []
        assert "patch rayclusters" in writes(server, A)
        assert a.endpoints is not None and b.endpoints is not None
        for ctl, leading in ((a, "1.0"), (b, "0.0")):
            assert ctl.endpoints is not None
            assert get(ctl.endpoints.url + "/readyz")[0] == 200  # both Ready: able to act if elected
            assert get(ctl.endpoints.url + "/healthz")[0] == 200
            assert f"rayops_leader {leading}" in get(ctl.endpoints.url + "/metrics")[1]
        by_a = len(writes(server, A))
        a.stop()  # a rollout: a releases the lease
        metrics.set(GroupRef("team-a", "demo", "cpu"), SignalType.PENDING_DEMAND, 3)
        wait_for(lambda: replicas(server) == 3)
        assert b.elector.is_leader()
        assert len(writes(server, A)) == by_a  # a stopped writing when it stopped leading
        assert "patch rayclusters" in writes(server, B)

        def scaled() -> list[dict[str, object]]:
            return [e for e in server.list_objs("events", "team-a") if e["reason"] == "ScaledUp"]

        wait_for(lambda: len(scaled()) == 2)  # the event follows the patch within the same tick
        assert {e["reportingInstance"] for e in scaled()} == {"a", "b"}
    finally:
        b.stop()
        a.stop()
