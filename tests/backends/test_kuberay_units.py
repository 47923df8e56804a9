"""The pure halves of the KubeRay backend: reading objects (`kuberay_read`) and planning patches
(`kuberay_patch`), with plain values and no server."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from controller import keys
from controller.backends.base import (
    ClusterState,
    GroupNotFound,
    ManagedCluster,
    ManagedGroup,
    ModeRefused,
    PersistentConflict,
    UnsafeRemoval,
)
from controller.backends.kuberay_patch import FightTracker, plan_apply, plan_finish
from controller.backends.kuberay_read import (
    cluster_state,
    connect_info,
    desired_pods,
    group_resources,
    stuck_cause,
)
from controller.domain import Activity, ClusterRef, Decision, GroupRef, Worker
from tests.backends.contract import owner_decision

REF = ClusterRef("team-a", "demo")
NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def rc(
    status: dict[str, Any] | None = None, labels: dict[str, str] | None = None, **spec: Any
) -> dict[str, Any]:
    return {
        "metadata": {"name": "demo", "namespace": "team-a", "labels": labels or {}},
        "spec": {"headGroupSpec": {}, "workerGroupSpecs": [], **spec},
        "status": status or {},
    }


def pod(name: str, phase: str = "Running", **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {"ray.io/node-type": "worker", "ray.io/group": "cpu"}},
        "status": {"phase": phase, **status},
    }


def waiting(reason: str, message: str = "", name: str = "ray-worker") -> dict[str, Any]:
    return {
        "containerStatuses": [
            {"name": name, "image": "img:1", "state": {"waiting": {"reason": reason, "message": message}}}
        ]
    }


def group(
    name: str = "cpu",
    replicas: int = 3,
    workers: dict[str, Activity] | None = None,
    pending: tuple[str, ...] = (),
    hosts: int = 1,
    bounds: tuple[int, int] = (0, 8),
) -> ManagedGroup:
    if workers is None:
        workers = {f"w{i}": Activity.IDLE for i in range(replicas)}
    return ManagedGroup(
        ref=GroupRef(REF.namespace, REF.name, name),
        replicas=replicas,
        min_replicas=bounds[0],
        max_replicas=bounds[1],
        ready=len(workers),
        workers=tuple(Worker(n, activity=a) for n, a in workers.items()),
        pending_deletes=pending,
        num_of_hosts=hosts,
    )


def cluster(*groups: ManagedGroup, **kw: Any) -> ManagedCluster:
    return ManagedCluster(REF, tuple(groups), labels={keys.LABEL_MANAGED: "true"}, **kw)


# --- state, causes, resources, connect ------------------------------------------------------------


@pytest.mark.parametrize(
    ("obj", "state"),
    [
        (rc(), ClusterState.STARTING),
        (rc({"state": "ready"}), ClusterState.READY),
        (rc({"state": "failed"}), ClusterState.FAILED),
        (rc({"state": "unhealthy"}), ClusterState.FAILED),
        (rc({"state": "ready"}, suspend=True), ClusterState.SUSPENDED),
        (rc({"conditions": [{"type": "RayClusterSuspended", "status": "True"}]}), ClusterState.SUSPENDED),
        (rc({}, {keys.LABEL_KUEUE_QUEUE: "q"}, suspend=True), ClusterState.QUEUED),
        (rc({"state": "ready"}, {keys.LABEL_KUEUE_QUEUE: "q"}), ClusterState.READY),
    ],
)
def test_state_follows_codeflare_names(obj: dict[str, Any], state: ClusterState) -> None:
    assert cluster_state(obj) == state


def test_stuck_causes_name_pods_and_group_repeats() -> None:
    pods = [
        pod("w1", **waiting("CreateContainerConfigError", 'secret "s3-data" not found')),
        pod("w2", **waiting("CrashLoopBackOff")),
        pod("w3", **waiting("CrashLoopBackOff")),
        pod("w4", **waiting("ErrImagePull", "manifest unknown")),
        pod("fine"),
    ]
    assert stuck_cause(rc(), pods) == (
        'pod w1: container ray-worker cannot start (CreateContainerConfigError): secret "s3-data" not found; '
        "2 pods (e.g. w2): container ray-worker keeps crashing (CrashLoopBackOff); "
        "pod w4: image pull failed (ErrImagePull) for img:1: manifest unknown"
    )
    assert stuck_cause(rc(), [pod("fine"), pod("starting", "Pending")]) is None


def test_a_replica_failure_without_quota_words_is_the_operator_s() -> None:
    obj = rc({"conditions": [{"type": "ReplicaFailure", "status": "True", "message": "injected failure"}]})
    assert stuck_cause(obj, []) == "the operator could not create pods: injected failure"


@pytest.mark.parametrize(
    ("params", "limits", "expected"),
    [
        ({}, {"cpu": "2", "nvidia.com/gpu": "1"}, {"CPU": 2.0, "GPU": 1.0}),
        ({"num-cpus": "0"}, {"cpu": "4"}, {"CPU": 0.0}),
        ({"resources": '"{\\"TPU\\": 4}"'}, {"cpu": "500m"}, {"CPU": 0.5, "TPU": 4.0}),
        ({"resources": '{"accel": 1.5}'}, {}, {"accel": 1.5}),
        ({"resources": "not json"}, {"cpu": "1"}, {"CPU": 1.0}),
    ],
)
def test_worker_resources_as_ray_sees_them(
    params: dict[str, str], limits: dict[str, str], expected: dict[str, float]
) -> None:
    spec = {
        "rayStartParams": params,
        "template": {"spec": {"containers": [{"resources": {"limits": limits}}]}},
    }
    assert group_resources(spec) == expected


def test_desired_pods_clamps_like_the_operator() -> None:
    assert desired_pods(rc(), {"replicas": 9, "minReplicas": 1, "maxReplicas": 4}) == 4
    assert desired_pods(rc(), {"replicas": 0, "minReplicas": 2, "maxReplicas": 4, "numOfHosts": 2}) == 4
    assert desired_pods(rc(), {"replicas": 3, "minReplicas": 5, "maxReplicas": 4}) == 4
    assert desired_pods(rc(suspend=True), {"replicas": 3}) == 0


def test_connect_info_prefers_a_named_route_and_needs_a_host() -> None:
    routes: list[dict[str, Any]] = [
        {"metadata": {"name": "unrelated"}, "spec": {"host": "x.example.com", "to": {"name": "other-svc"}}},
        {"metadata": {"name": "demo-head-route"}, "spec": {"to": {"name": "demo-head-svc"}}},  # no host yet
        {"metadata": {"name": "ray-dashboard-demo"}, "spec": {"host": "dash.example.com", "path": "/ray"}},
    ]
    info = connect_info(rc(), routes)
    assert info.dashboard_url == "http://dash.example.com/ray"
    assert connect_info(rc(), None).dashboard_url == "http://demo-head-svc.team-a.svc:8265"
    custom = rc(headGroupSpec={"headService": {"metadata": {"name": "gateway"}}})
    assert connect_info(custom, []).client_address == "ray://gateway.team-a.svc:10001"


# --- plans --------------------------------------------------------------------------------------------


def test_an_owner_scale_down_is_one_guarded_patch() -> None:
    g = group(replicas=3)
    plan = plan_apply(cluster(group("gpu", 0), g), [owner_decision(g, 1, ("w0", "w2"))])
    assert plan.ops == [
        {"op": "test", "path": "/spec/workerGroupSpecs/1/groupName", "value": "cpu"},
        {"op": "test", "path": "/spec/workerGroupSpecs/1/replicas", "value": 3},
        {"op": "replace", "path": "/spec/workerGroupSpecs/1/replicas", "value": 1},
        {
            "op": "add",
            "path": "/spec/workerGroupSpecs/1/scaleStrategy",
            "value": {"workersToDelete": ["w0", "w2"]},
        },
    ]


def test_names_already_pending_are_tested_and_kept() -> None:
    g = group(replicas=3, pending=("gone",))
    plan = plan_apply(cluster(g), [owner_decision(g, 2, ("w1", "gone"))])
    assert plan.ops[-2:] == [
        {"op": "test", "path": "/spec/workerGroupSpecs/0/scaleStrategy/workersToDelete", "value": ["gone"]},
        {
            "op": "add",
            "path": "/spec/workerGroupSpecs/0/scaleStrategy",
            "value": {"workersToDelete": ["gone", "w1"]},
        },
    ]


@pytest.mark.parametrize(
    ("g", "target", "remove", "error", "message"),
    [
        (group(replicas=2, hosts=2), 1, ("w0",), ModeRefused, "multi-host"),
        (group(replicas=2), 1, ("nobody",), UnsafeRemoval, "not a worker of this group"),
        (
            group(replicas=2, workers={"w0": Activity.BUSY, "w1": Activity.IDLE}),
            1,
            ("w0",),
            UnsafeRemoval,
            "busy",
        ),
        (group(replicas=2), 2, ("w0",), UnsafeRemoval, "without lowering replicas"),
        (group(replicas=3), 1, ("w0",), UnsafeRemoval, "the operator would pick 1"),
        (group(replicas=2), -1, (), ModeRefused, "cannot scale to -1"),
    ],
)
def test_unsafe_owner_plans_are_refused(
    g: ManagedGroup, target: int, remove: tuple[str, ...], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        plan_apply(cluster(g), [owner_decision(g, target, remove)])


def test_bounds_plans_and_their_refusals() -> None:
    g = group(replicas=2, bounds=(0, 8))
    base = owner_decision(g, 2)
    bounds = Decision(g.ref, "p", "bounds", 2, 2, base.action, base.reasons, (), 1, 4)
    assert plan_apply(cluster(g, in_tree_autoscaling=True), [bounds]).ops == [
        {"op": "test", "path": "/spec/workerGroupSpecs/0/groupName", "value": "cpu"},
        {"op": "test", "path": "/spec/workerGroupSpecs/0/minReplicas", "value": 0},
        {"op": "replace", "path": "/spec/workerGroupSpecs/0/minReplicas", "value": 1},
        {"op": "test", "path": "/spec/workerGroupSpecs/0/maxReplicas", "value": 8},
        {"op": "replace", "path": "/spec/workerGroupSpecs/0/maxReplicas", "value": 4},
    ]
    inverted = Decision(g.ref, "p", "bounds", 2, 2, base.action, base.reasons, (), 5, 4)
    with pytest.raises(ModeRefused, match="minReplicas 5 above maxReplicas 4"):
        plan_apply(cluster(g), [inverted])


def test_dry_runs_write_nothing_and_unknown_groups_are_errors() -> None:
    g = group(replicas=2)
    dry = dataclasses.replace(owner_decision(g, 5), dry_run=True)
    assert plan_apply(cluster(g), [dry]).ops == []
    with pytest.raises(GroupNotFound):
        plan_apply(cluster(g), [owner_decision(group("gpu"), 1)])


def test_finishing_keeps_the_names_of_live_pods() -> None:
    g = group(replicas=1, workers={"w0": Activity.IDLE, "w1": Activity.BUSY}, pending=("w1", "gone"))
    plan = plan_finish(cluster(g))
    assert plan.ops[-1] == {
        "op": "replace",
        "path": "/spec/workerGroupSpecs/0/scaleStrategy/workersToDelete",
        "value": ["w1"],
    }
    assert plan_finish(cluster(group(pending=()))).ops == []


# --- the fight tracker --------------------------------------------------------------------------------


def test_fight_tracker_reports_at_the_threshold_and_holds_until_the_back_off_ends() -> None:
    tracker = FightTracker(threshold=2, backoff=timedelta(minutes=5))
    tracker.wrote(REF, {("cpu", "replicas"): 4, ("cpu", "rayStartParams"): {}})  # untracked fields ignored
    tracker.observe(cluster(group(replicas=1)), NOW)  # strike 1
    tracker.wrote(REF, {("cpu", "replicas"): 4})
    with pytest.raises(PersistentConflict) as info:
        tracker.observe(cluster(group(replicas=1)), NOW)
    assert info.value.fields == ("cpu.replicas",) and info.value.until == NOW + timedelta(minutes=5)
    assert tracker.holding(REF, NOW + timedelta(minutes=4)) == NOW + timedelta(minutes=5)
    assert tracker.holding(REF, NOW + timedelta(minutes=5)) is None
    tracker.observe(cluster(group(replicas=1)), NOW + timedelta(minutes=6))  # forgotten: no strike
    assert tracker.holding(REF, NOW + timedelta(minutes=6)) is None
