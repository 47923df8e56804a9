"""The controller on KubeRay through its real wiring (`build_controller`, backend kuberay, a kubeconfig with
the controller's token) against the Kubernetes stand-in and the fake KubeRay operator.

`controller_session` drives, deterministically (no scheduler threads, a hand-moved clock), everything the
controller does to the API: leader election (create, renew, release), reconcile ticks that scale up, hold
under the bot's global switch and scale down naming idle workers, finishing those removals, a refused
policy set reported on the controller's own pod, and housekeeping deleting an expired cluster. It asserts
each outcome, and it is the controller's half of the RBAC check: afterwards
`server.resource_requests(CONTROLLER_IDENTITY)` is exactly what the controller's Roles must grant
(tests/deploy/test_rbac.py runs it on a fresh stand-in). Only the Ray dashboard is replaced (by the pods'
phases, `PodActivity`), since no Ray runs here; clusters are made by an administrator, as people would.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from controller import keys
from controller.backends.base import ClusterRequest
from controller.backends.kube_api import KubeApi
from controller.backends.kuberay import KubeRayBackend
from controller.daemon import build_controller
from controller.domain import GroupRef, SignalType
from controller.leader import LeaseElector
from controller.pause import PAUSE_CONFIGMAP, PAUSE_KEY
from controller.settings import ControllerSettings, LeaderSettings, LoopSettings
from tests.backends.cache_sync import wait_cache_current
from tests.backends.driver_kuberay import PodActivity
from tests.backends.drivers import CONTRACT_PROFILE, GROUP, REQUESTER
from tests.controller.conftest import write_policy
from tests.controller.fakes import TableMetrics
from tests.harness.kube import ADMIN_TOKEN, CONTROLLER_TOKEN, KUBE_TOKENS
from tests.standins.kube_api import KubeApiServer
from tests.standins.kuberay_operator import FakeKubeRayOperator

CONTROLLER_IDENTITY = KUBE_TOKENS[CONTROLLER_TOKEN]
TEAM = "team-a"  # the managed namespace
HOME = "rayops"  # the controller's own namespace (POD_NAMESPACE): Lease, global switch, its pod's Events
LEASE = "rayops-controller"


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def _rc(server: KubeApiServer, name: str) -> dict[str, Any] | None:
    return server.get_obj("rayclusters", TEAM, name)


def _group(server: KubeApiServer, name: str) -> dict[str, Any]:
    rc = _rc(server, name)
    assert rc is not None, name
    return dict(rc["spec"]["workerGroupSpecs"][0])


def _events(server: KubeApiServer, namespace: str, reason: str) -> list[dict[str, Any]]:
    return [e for e in server.list_objs("events", namespace) if e.get("reason") == reason]


def _set_switch(server: KubeApiServer, paused: bool) -> None:
    """The bot's `pause-all` / `resume-all` (bot/kube_store.py writes the same ConfigMap)."""
    state = f'{{"paused": {"true" if paused else "false"}, "by": "slack:U0OPS", "at": "2026-01-01T00:00:00"}}'
    meta = {"name": PAUSE_CONFIGMAP, "namespace": HOME}
    server.put({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {PAUSE_KEY: state}})


def controller_session(server: KubeApiServer, operator: FakeKubeRayOperator, tmp: Path) -> None:
    """The scripted session; see the module docstring. Raises AssertionError on any wrong step."""
    admin = KubeRayBackend(KubeApi(server.client(ADMIN_TOKEN)), {CONTRACT_PROFILE.name: CONTRACT_PROFILE})
    for name, ttl in (("demo", None), ("short", 60)):
        admin.create(ClusterRequest(name, TEAM, CONTRACT_PROFILE.name, REQUESTER, workers=1, ttl_seconds=ttl))
    operator.reconcile_all()

    policies = tmp / "policies"
    policies.mkdir()
    write_policy(policies)
    settings = ControllerSettings(
        backend="kuberay",
        policy_dir=policies,
        namespaces=(TEAM,),
        kubeconfig=str(server.write_kubeconfig(tmp / "kubeconfig", CONTROLLER_TOKEN)),
        loop=LoopSettings(tick_seconds=1.0),
        leader=LeaderSettings(lease_name=LEASE, namespace=HOME, identity="controller-0"),
    )
    metrics = TableMetrics()
    controller = build_controller(settings, metrics=metrics, serve=False)
    backend = controller.backend
    assert isinstance(backend, KubeRayBackend) and backend.connect_routes is False
    backend.activity = PodActivity(server)  # Ray's dashboard, as the pods show it
    clock = Clock()
    controller.scheduler.clock = clock
    elector = controller.elector
    assert isinstance(elector, LeaseElector)
    try:
        # Leader election: the first round creates the Lease, the next renews it.
        assert elector.try_acquire_or_renew() and elector.try_acquire_or_renew()
        lease = server.get_obj("leases", HOME, LEASE)
        assert lease is not None and lease["spec"]["holderIdentity"] == "controller-0"

        # Demand: scale up in one tick, with a Kubernetes Event on the cluster.
        cpu = GroupRef(TEAM, "demo", GROUP)
        metrics.set(cpu, SignalType.PENDING_DEMAND, 3)
        metrics.set(GroupRef(TEAM, "short", GROUP), SignalType.PENDING_DEMAND, 1)
        report = controller.scheduler.run_tick()
        assert report is not None and report.decision(GROUP, "demo").target == 3
        assert _group(server, "demo")["replicas"] == 3
        [up] = _events(server, TEAM, "ScaledUp")
        assert up["involvedObject"]["name"] == "demo" and up["reportingComponent"] == "rayops-controller"
        rc = _rc(server, "demo")
        assert rc is not None and keys.ANN_DECISION in rc["metadata"]["annotations"]
        operator.reconcile_all()
        wait_cache_current(backend, server)  # the controller's informer cache sees the new pods

        # The bot's global switch (ConfigMap in rayops' namespace) holds everything.
        _set_switch(server, True)
        metrics.set(cpu, SignalType.PENDING_DEMAND, 0)
        clock.advance(30)
        report = controller.scheduler.run_tick()
        assert report is not None and report.decision(GROUP, "demo").target == 3
        assert _group(server, "demo")["replicas"] == 3
        _set_switch(server, False)

        # No demand past the scale-down window: idle workers are named for removal, then cleared once gone.
        for _ in range(3):
            clock.advance(30)
            controller.scheduler.run_tick()
        group = _group(server, "demo")
        assert group["replicas"] == 0 and len(group["scaleStrategy"]["workersToDelete"]) == 3
        operator.reconcile_all()  # the operator deletes the named pods (and never clears the list)
        wait_cache_current(backend, server)
        assert controller.scheduler.run_removals() == 1
        assert _group(server, "demo")["scaleStrategy"]["workersToDelete"] == []

        # A refused policy set: one PolicyInvalid Event, on the controller's own pod.
        (policies / "broken.yaml").write_text("apiVersion: rayops.io/v1alpha1\nkind: ScalingPolicy\n")
        clock.advance(1)
        controller.scheduler.run_tick()
        [invalid] = _events(server, HOME, "PolicyInvalid")
        assert (
            invalid["involvedObject"]["kind"] == "Pod" and invalid["involvedObject"]["name"] == "controller-0"
        )
        (policies / "broken.yaml").unlink()

        # Housekeeping: the short-lived cluster is warned about, then deleted at its expiry.
        clock.advance(30 * 60)  # past the short one's minute, far from the other's 2h
        controller.scheduler.run_housekeeping()
        assert _rc(server, "short") is None and _rc(server, "demo") is not None
        assert _events(server, TEAM, "Expired")
    finally:
        controller.stop()  # gives the Lease up
    lease = server.get_obj("leases", HOME, LEASE)
    assert lease is not None and lease["spec"]["holderIdentity"] == ""
