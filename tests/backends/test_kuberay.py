"""KubeRay-specific behaviour on the Kubernetes API stand-in with the fake operator.

The contract suite covers what every backend does; these cases pin what only KubeRay has: the
`workersToDelete` protocol, owner/bounds mode on RayCluster fields, the fight with another writer, the
KubeRay samples, pod-level causes of a stuck cluster, and the API faults the official client meets.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from controller import keys
from controller.backends.base import (
    BackendUnavailable,
    ClusterNotFound,
    ClusterRequest,
    ClusterState,
    ConflictError,
    InvalidProfile,
    ManagedCluster,
    ModeRefused,
    NotManaged,
    PersistentConflict,
    UnsafeRemoval,
)
from controller.backends.kube_api import KubeApi, RetryPolicy
from controller.backends.kuberay import KubeRayBackend
from controller.domain import Activity, ClusterRef, Decision
from tests.backends.contract import find, owner_decision, unique_name
from tests.backends.driver_kuberay import NAMESPACE, KubeRayDriver
from tests.backends.drivers import CONTRACT_PROFILE, GROUP, REQUESTER
from tests.backends.profiles import BOUNDS_PROFILE, GPU_PROFILE, POLICIES
from tests.harness.kube import CONTROLLER_TOKEN, KUBE_TOKENS, SAMPLE_FILES, load_sample
from tests.standins.kube_api import KubeApiServer
from tests.standins.kube_resources import KUBERAY_CRD
from tests.standins.kuberay_operator import FakeKubeRayOperator

CONTROLLER = KUBE_TOKENS[CONTROLLER_TOKEN]


@pytest.fixture
def driver(kube_api: KubeApiServer, kuberay_operator: FakeKubeRayOperator) -> Iterator[KubeRayDriver]:
    profiles = {p.name: p for p in (CONTRACT_PROFILE, GPU_PROFILE, BOUNDS_PROFILE)}
    yield KubeRayDriver(kube_api, kuberay_operator, profiles, POLICIES)


def patches(server: KubeApiServer) -> list[Any]:
    return [
        r for r in server.resource_requests(CONTROLLER) if r.verb == "patch" and r.resource == "rayclusters"
    ]


def cluster_with(driver: KubeRayDriver, workers: int, **request: Any) -> ClusterRef:
    status = driver.backend.create(req(CONTRACT_PROFILE.name, workers=workers, **request))
    driver.settle(status.ref)
    return status.ref


def req(profile_name: str, name: str | None = None, **kw: Any) -> ClusterRequest:
    return ClusterRequest(name or unique_name(), NAMESPACE, profile_name, REQUESTER, **kw)


def bounds_decision(cluster: ManagedCluster, low: int, high: int) -> Decision:
    group = cluster.group(GROUP)
    base = owner_decision(group, group.replicas)
    return Decision(
        base.ref,
        "ray-bounds",
        "bounds",
        group.replicas,
        group.replicas,
        base.action,
        base.reasons,
        (),
        low,
        high,
    )


def put_sample(driver: KubeRayDriver, file_name: str, **labels: str) -> ClusterRef:
    body = load_sample(file_name)
    body["metadata"]["namespace"] = NAMESPACE
    body["metadata"].setdefault("labels", {}).update(labels)
    driver.server.put(body)
    ref = ClusterRef(NAMESPACE, body["metadata"]["name"])
    driver.settle(ref)
    return ref


# --- the workersToDelete protocol --------------------------------------------------------------------


def test_workers_to_delete_names_only_idle_pods_and_is_cleared_afterwards(driver: KubeRayDriver) -> None:
    ref = cluster_with(driver, 4)
    pods = sorted(driver.live_workers(ref, GROUP))
    busy = {pods[0], pods[2]}
    for p in busy:
        driver.set_busy(ref, p, True)
    group = find(driver.backend, ref).group(GROUP)
    idle = tuple(w.name for w in group.workers if w.activity == Activity.IDLE)
    assert set(idle) == set(pods) - busy
    driver.operator.actions.clear()

    result = driver.backend.apply(find(driver.backend, ref), [owner_decision(group, 2, idle)])
    assert result.written and "removing" in result.detail
    spec = driver.group_spec(ref, GROUP)
    assert spec["replicas"] == 2 and sorted(spec["scaleStrategy"]["workersToDelete"]) == sorted(idle)

    driver.settle(ref)
    deleted = [(a.pod, a.reason) for a in driver.operator.actions if a.verb == "delete"]
    assert sorted(deleted) == sorted((p, "workersToDelete") for p in idle)  # exactly those, nothing random
    assert driver.live_workers(ref, GROUP) == busy
    # The operator never clears the list; rayops does once the pods are gone.
    assert sorted(driver.group_spec(ref, GROUP)["scaleStrategy"]["workersToDelete"]) == sorted(idle)
    cleared = driver.backend.finish_removals(find(driver.backend, ref))
    assert cleared.written and "finished" in cleared.detail
    assert driver.group_spec(ref, GROUP)["scaleStrategy"]["workersToDelete"] == []
    assert find(driver.backend, ref).group(GROUP).pending_deletes == ()


def test_finish_removals_keeps_names_whose_pods_still_exist(driver: KubeRayDriver) -> None:
    ref = cluster_with(driver, 3)
    group = find(driver.backend, ref).group(GROUP)
    victims = tuple(sorted(w.name for w in group.workers)[:2])
    driver.backend.apply(find(driver.backend, ref), [owner_decision(group, 1, victims)])
    driver.server.delete_obj("pods", NAMESPACE, victims[0])  # one pod gone, the operator not run yet
    assert driver.backend.finish_removals(find(driver.backend, ref)).written
    assert driver.group_spec(ref, GROUP)["scaleStrategy"]["workersToDelete"] == [victims[1]]


def test_no_idle_proof_means_no_removal(driver: KubeRayDriver) -> None:
    ref = cluster_with(driver, 2)
    driver.activity.down.add(ref)
    group = find(driver.backend, ref).group(GROUP)
    assert {w.activity for w in group.workers} == {Activity.UNKNOWN}
    with pytest.raises(UnsafeRemoval, match="unknown"):
        driver.backend.apply(find(driver.backend, ref), [owner_decision(group, 1, (group.workers[0].name,))])
    assert patches(driver.server) == []


def test_workers_are_matched_to_ray_nodes_by_ip_when_no_pod_name_is_known(driver: KubeRayDriver) -> None:
    driver.activity.pod_names = False
    ref = cluster_with(driver, 2)
    busy = sorted(driver.live_workers(ref, GROUP))[0]
    driver.set_busy(ref, busy, True)
    group = find(driver.backend, ref).group(GROUP)
    assert {w.name: (w.activity, w.node_id) for w in group.workers} == {
        w: (Activity.BUSY if w == busy else Activity.IDLE, f"node-{w}")
        for w in driver.live_workers(ref, GROUP)
    }


def test_pods_that_never_started_are_idle_and_can_be_removed(driver: KubeRayDriver) -> None:
    """A group stuck on unschedulable pods must be able to shrink: those pods hold no Ray node."""
    driver.operator.new_pods_pending = True
    ref = cluster_with(driver, 2)
    group = find(driver.backend, ref).group(GROUP)
    assert {(w.activity, w.ready) for w in group.workers} == {(Activity.IDLE, False)}
    names = tuple(w.name for w in group.workers)
    assert driver.backend.apply(find(driver.backend, ref), [owner_decision(group, 0, names)]).written
    driver.settle(ref)
    assert driver.live_workers(ref, GROUP) == set()


def test_lowering_replicas_without_victims_is_refused(driver: KubeRayDriver) -> None:
    ref = cluster_with(driver, 2)
    group = find(driver.backend, ref).group(GROUP)
    with pytest.raises(UnsafeRemoval, match="the operator would pick 1"):
        driver.backend.apply(find(driver.backend, ref), [owner_decision(group, 1)])
    assert patches(driver.server) == [] and driver.group_spec(ref, GROUP)["replicas"] == 2


def test_owner_mode_keeps_replicas_inside_the_bounds(driver: KubeRayDriver) -> None:
    """An SDK-made cluster has min == max; the operator would clamp a count outside them away."""
    ref = cluster_with(driver, 2)
    driver.concurrent_field(ref, GROUP, "minReplicas", 2)
    driver.concurrent_field(ref, GROUP, "maxReplicas", 2)
    group = find(driver.backend, ref).group(GROUP)
    driver.backend.apply(find(driver.backend, ref), [owner_decision(group, 3)])
    spec = driver.group_spec(ref, GROUP)
    assert (spec["replicas"], spec["minReplicas"], spec["maxReplicas"]) == (3, 2, 3)
    driver.settle(ref)
    group = find(driver.backend, ref).group(GROUP)
    idle = tuple(sorted(w.name for w in group.workers)[:2])
    driver.backend.apply(find(driver.backend, ref), [owner_decision(group, 1, idle)])
    spec = driver.group_spec(ref, GROUP)
    assert (spec["replicas"], spec["minReplicas"], spec["maxReplicas"]) == (1, 1, 3)
    driver.settle(ref)
    assert driver.live_count(ref, GROUP) == 1


# --- modes -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("sample", ["ray-cluster.autoscaler.yaml", "ray-cluster.autoscaler-v2.yaml"])
def test_owner_mode_is_refused_next_to_the_in_tree_autoscaler(driver: KubeRayDriver, sample: str) -> None:
    ref = put_sample(driver, sample, **{keys.LABEL_MANAGED: "true"})
    cluster = find(driver.backend, ref)
    assert cluster.in_tree_autoscaling
    with pytest.raises(ModeRefused, match=r"in-tree autoscaler.*use a bounds-mode policy"):
        driver.backend.apply(cluster, [owner_decision(cluster.group("small-group"), 2)])
    # A hold writes nothing and so refuses nothing.
    assert not driver.backend.apply(cluster, [owner_decision(cluster.group("small-group"), 0)]).written
    assert patches(driver.server) == []


def test_the_autoscaler_sidecar_alone_marks_in_tree_autoscaling(driver: KubeRayDriver) -> None:
    ref = cluster_with(driver, 1)
    head = driver.server.list_objs("pods", NAMESPACE, f"ray.io/cluster={ref.name},ray.io/node-type=head")[0]
    head["spec"]["containers"].append({"name": "autoscaler", "image": "rayproject/ray:2.60.0"})
    driver.server.delete_obj("pods", NAMESPACE, head["metadata"]["name"])
    head["metadata"].pop("resourceVersion")
    driver.server.put(head)
    assert find(driver.backend, ref).in_tree_autoscaling


def test_owner_mode_is_refused_on_a_kueue_cluster(driver: KubeRayDriver) -> None:
    ref = cluster_with(driver, 1, labels={keys.LABEL_KUEUE_QUEUE: "team-queue"})
    cluster = find(driver.backend, ref)
    assert cluster.kueue_queue == "team-queue"
    with pytest.raises(ModeRefused, match="Kueue \\(queue team-queue\\)"):
        driver.backend.apply(cluster, [owner_decision(cluster.group(GROUP), 2)])
    assert patches(driver.server) == []


def test_bounds_mode_writes_min_and_max_only(driver: KubeRayDriver) -> None:
    ref = driver.backend.create(req("bounds-box")).ref  # a profile whose policy is in bounds mode
    driver.settle(ref)
    raw = driver.raw(ref)
    assert raw is not None and raw["spec"]["enableInTreeAutoscaling"] is True
    cluster = find(driver.backend, ref)
    before = driver.group_spec(ref, GROUP)
    result = driver.backend.apply(cluster, [bounds_decision(cluster, 2, 3)])
    assert result.written and "bounds [0, 4] -> [2, 3]" in result.detail
    after = driver.group_spec(ref, GROUP)
    assert (after["minReplicas"], after["maxReplicas"]) == (2, 3)
    assert {k: v for k, v in after.items() if k not in ("minReplicas", "maxReplicas")} == {
        k: v for k, v in before.items() if k not in ("minReplicas", "maxReplicas")
    }
    assert not driver.backend.apply(find(driver.backend, ref), [bounds_decision(cluster, 2, 3)]).written


# --- other writers ---------------------------------------------------------------------------------


def test_a_change_elsewhere_in_the_object_is_not_a_conflict(driver: KubeRayDriver) -> None:
    ref = driver.backend.create(req("gpu-box")).ref
    driver.settle(ref)
    stale = find(driver.backend, ref)
    driver.concurrent_field(ref, "gpu", "replicas", 2)  # another group
    driver.concurrent_field(ref, "cpu", "rayStartParams", {"num-cpus": "1", "log-color": "true"})
    driver.concurrent_annotation(ref, "example.com/owner", "nlp")
    assert driver.backend.apply(stale, [owner_decision(stale.group("cpu"), 3)]).written
    rc = driver.raw(ref)
    assert rc is not None
    cpu, gpu = rc["spec"]["workerGroupSpecs"]
    assert (cpu["replicas"], gpu["replicas"]) == (3, 2)
    assert cpu["rayStartParams"]["log-color"] == "true"
    assert rc["metadata"]["annotations"]["example.com/owner"] == "nlp"


def test_a_reordered_group_list_is_a_conflict(driver: KubeRayDriver) -> None:
    ref = driver.backend.create(req("gpu-box")).ref
    stale = find(driver.backend, ref)
    rc = driver.raw(ref)
    assert rc is not None
    rc["spec"]["workerGroupSpecs"].reverse()
    driver.server.put(rc)
    with pytest.raises(ConflictError):
        driver.backend.apply(stale, [owner_decision(stale.group("cpu"), 3)])
    assert (driver.group_spec(ref, "cpu")["replicas"], driver.group_spec(ref, "gpu")["replicas"]) == (1, 0)


def test_a_cluster_released_between_read_and_write_is_not_touched(driver: KubeRayDriver) -> None:
    ref = cluster_with(driver, 1)
    stale = find(driver.backend, ref)
    KubeRayBackend(driver.backend.api).release(ref)  # e.g. DevOps' `release` from the bot
    with pytest.raises(ConflictError):
        driver.backend.apply(stale, [owner_decision(stale.group(GROUP), 3)])
    assert driver.group_spec(ref, GROUP)["replicas"] == 1


def test_a_persistent_fight_is_reported_once_then_left_alone(driver: KubeRayDriver) -> None:
    now = [datetime(2026, 3, 2, 9, 0, tzinfo=UTC)]
    backend = KubeRayBackend(driver.backend.api, activity=driver.activity, clock=lambda: now[0])
    ref = cluster_with(driver, 1)
    outcomes: list[str] = []
    for _tick in range(8):
        cluster = find(backend, ref)
        try:
            result = backend.apply(cluster, [owner_decision(cluster.group(GROUP), 3)])
            outcomes.append("held" if result.backoff_until else "written" if result.written else "no-op")
        except PersistentConflict as e:
            assert e.fields == (f"{GROUP}.replicas",) and e.until == now[0] + timedelta(minutes=10)
            assert "keeps changing cpu.replicas" in str(e)
            outcomes.append("reported")
        driver.concurrent_count(ref, GROUP, 1)  # a notebook's apply puts it back, every time
        now[0] += timedelta(seconds=15)
    assert outcomes == ["written", "written", "written", "reported", "held", "held", "held", "held"]
    writes = len(patches(driver.server))
    now[0] += timedelta(minutes=10)  # the back-off is over: rayops tries again
    cluster = find(backend, ref)
    assert backend.apply(cluster, [owner_decision(cluster.group(GROUP), 3)]).written
    assert len(patches(driver.server)) == writes + 1


def test_strikes_count_ticks_in_a_row_only(driver: KubeRayDriver) -> None:
    """Someone else changing the count now and then is a conflict each time, not a fight."""
    ref = cluster_with(driver, 1)
    for target in (2, 3, 4, 3, 2):
        cluster = find(driver.backend, ref)
        assert driver.backend.apply(cluster, [owner_decision(cluster.group(GROUP), target)]).written
        if target != 4:  # every tick but one, someone else changes it back
            driver.concurrent_count(ref, GROUP, 1)
        else:
            cluster = find(driver.backend, ref)  # a tick on which the value stuck
            driver.backend.apply(cluster, [owner_decision(cluster.group(GROUP), target)])
    cluster = find(driver.backend, ref)
    assert driver.backend.apply(cluster, [owner_decision(cluster.group(GROUP), 2)]).written
    assert driver.backend.fights.holding(ref, datetime.now(UTC)) is None


# --- faults ----------------------------------------------------------------------------------------


def test_injected_409_is_a_conflict(driver: KubeRayDriver) -> None:
    ref = cluster_with(driver, 1)
    driver.server.inject_faults(409, count=1, verbs={"patch"}, resource="rayclusters")
    cluster = find(driver.backend, ref)
    with pytest.raises(ConflictError, match="re-read"):
        driver.backend.apply(cluster, [owner_decision(cluster.group(GROUP), 2)])
    assert driver.group_spec(ref, GROUP)["replicas"] == 1


def test_500s_are_retried_then_unavailable(driver: KubeRayDriver) -> None:
    ref = cluster_with(driver, 1)
    driver.server.inject_faults(500, count=2, verbs={"list"}, resource="rayclusters")
    assert [c.ref for c in driver.backend.list_clusters()] == [ref]  # two failures, third attempt works
    driver.server.inject_faults(500, count=3, verbs={"patch"}, resource="rayclusters")
    cluster = find(driver.backend, ref)
    with pytest.raises(BackendUnavailable, match="answered 500"):
        driver.backend.apply(cluster, [owner_decision(cluster.group(GROUP), 2)])
    assert [r.code for r in patches(driver.server)] == [500, 500, 500]


def test_a_lost_create_answer_is_resolved_by_reading_back(driver: KubeRayDriver) -> None:
    driver.server.inject_faults(500, count=1, verbs={"create"}, resource="rayclusters", commit=True)
    status = driver.backend.create(driver.request("lost-answer"))
    assert status.ref.name == "lost-answer" and status.requester == REQUESTER
    driver.server.inject_faults(503, count=3, verbs={"create"}, resource="rayclusters")
    with pytest.raises(BackendUnavailable, match="nothing was created"):
        driver.backend.create(driver.request("never-made"))
    assert not driver.exists(ClusterRef(NAMESPACE, "never-made"))


def test_a_schema_refusal_is_an_invalid_profile_and_creates_nothing(driver: KubeRayDriver) -> None:
    request = req(CONTRACT_PROFILE.name, "bad-label", labels={"team": "not a label value!"})
    with pytest.raises(InvalidProfile, match=r"metadata\.labels.*nothing was created"):
        driver.backend.create(request)
    assert not driver.exists(ClusterRef(NAMESPACE, "bad-label"))


# --- what is touched -------------------------------------------------------------------------------


def test_a_cluster_that_did_not_opt_in_is_never_listed_or_touched(driver: KubeRayDriver) -> None:
    ref = put_sample(driver, "ray-cluster.sample.yaml")
    assert driver.backend.list_clusters() == [] and driver.backend.list() == []
    for call in (
        lambda: driver.backend.get(ref),
        lambda: driver.backend.set_annotations(ref, {keys.ANN_PAUSED: "true"}),
        lambda: driver.backend.release(ref),
        lambda: driver.backend.delete(ref),
    ):
        with pytest.raises(NotManaged, match=keys.LABEL_MANAGED):
            call()
    writes = [r for r in driver.server.resource_requests(CONTROLLER) if r.verb not in ("get", "list")]
    assert writes == []


def test_release_clears_pending_removals_labels_and_annotations(driver: KubeRayDriver) -> None:
    ref = put_sample(driver, "ray-cluster.complete.yaml", **{keys.LABEL_MANAGED: "true", "team": "nlp"})
    driver.backend.set_annotations(ref, {keys.ANN_PAUSED: "true", keys.ANN_DECISION: "{}"})
    driver.concurrent_annotation(ref, "example.com/keep", "yes")
    cluster = find(driver.backend, ref)
    group = cluster.group("small-group")
    driver.backend.apply(cluster, [owner_decision(group, 0, (group.workers[0].name,))])
    driver.backend.release(ref)
    rc = driver.raw(ref)
    assert rc is not None
    assert rc["spec"]["workerGroupSpecs"][0]["scaleStrategy"]["workersToDelete"] == []
    assert rc["metadata"]["labels"] == {"team": "nlp"}
    assert rc["metadata"]["annotations"] == {"example.com/keep": "yes"}


def test_a_cluster_being_deleted_is_not_scaled(driver: KubeRayDriver) -> None:
    ref = cluster_with(driver, 1)
    rc = driver.raw(ref)
    assert rc is not None
    rc["metadata"]["finalizers"] = ["ray.openshift.ai/oauth-finalizer"]  # CodeFlare's, holds deletion
    driver.server.put(rc)
    driver.server.delete_obj("rayclusters", NAMESPACE, ref.name)
    assert driver.backend.list_clusters() == []
    assert [s.ref for s in driver.backend.list()] == [ref]  # people still see it until it is gone


def test_delete_removes_the_cluster_and_its_pods(driver: KubeRayDriver) -> None:
    ref = cluster_with(driver, 2)
    driver.backend.delete(ref)
    driver.settle(ref)
    assert not driver.exists(ref)
    with pytest.raises(ClusterNotFound):
        driver.backend.delete(ref)


# --- reading ---------------------------------------------------------------------------------------

SAMPLES = {
    # file: (groups as (name, replicas, min, max, CPU per worker), in-tree autoscaling)
    "ray-cluster.sample.yaml": ([("workergroup", 1, 1, 5, 1.0)], False),
    "ray-cluster.complete.yaml": ([("small-group", 1, 1, 10, 1.0)], False),
    "ray-cluster.autoscaler.yaml": ([("small-group", 0, 0, 10, 1.0)], True),
    "ray-cluster.autoscaler-v2.yaml": ([("small-group", 0, 0, 10, 1.0)], True),
    "ray-cluster.verl.yaml": ([], False),
}


@pytest.mark.parametrize("file_name", SAMPLE_FILES)
def test_each_kuberay_sample_is_read_correctly(driver: KubeRayDriver, file_name: str) -> None:
    groups, in_tree = SAMPLES[file_name]
    ref = put_sample(driver, file_name, **{keys.LABEL_MANAGED: "true"})
    cluster = find(driver.backend, ref)
    got = [
        (g.ref.group, g.replicas, g.min_replicas, g.max_replicas, g.worker_resources["CPU"])
        for g in cluster.groups
    ]
    assert got == groups
    assert cluster.in_tree_autoscaling is in_tree and cluster.kueue_queue is None
    assert cluster.head_ready
    assert cluster.dashboard_url == f"http://{ref.name}-head-svc.{NAMESPACE}.svc.cluster.local:8265"
    for g, (_, replicas, *_rest) in zip(cluster.groups, groups, strict=True):
        assert len(g.workers) == replicas == g.ready
        assert {w.activity for w in g.workers} <= {Activity.IDLE}
    status = driver.backend.get(ref)
    assert status.state == ClusterState.READY and status.managed
    assert [(g.name, g.ready, g.desired) for g in status.groups] == [(n, r, r) for n, r, *_ in groups]
    assert status.conditions["HeadPodReady"] == "True"
    assert (
        status.connect is not None
        and status.connect.client_address == f"ray://{ref.name}-head-svc.{NAMESPACE}.svc:10001"
    )


def test_a_stuck_cluster_reports_the_pod_level_cause(driver: KubeRayDriver) -> None:
    driver.operator.new_pods_pending = True
    ref = cluster_with(driver, 2)
    status = driver.backend.get(ref)
    assert status.state == ClusterState.STARTING
    assert status.stuck_cause is not None
    assert "3 pods (e.g." in status.stuck_cause  # head and both workers
    assert "Pending, unschedulable: 0/3 nodes are available: 3 Insufficient cpu." in status.stuck_cause
    assert [(g.ready, g.desired) for g in status.groups] == [(0, 2)]
    for pod in driver.server.list_objs("pods", NAMESPACE, f"ray.io/cluster={ref.name}"):
        driver.operator.set_pod_phase(NAMESPACE, pod["metadata"]["name"], "Running")
    driver.settle(ref)
    status = driver.backend.get(ref)
    assert status.stuck_cause is None and status.state == ClusterState.READY


def test_a_quota_refusal_is_reported(driver: KubeRayDriver) -> None:
    ref = cluster_with(driver, 1)
    rc = driver.raw(ref)
    assert rc is not None
    rc["status"]["conditions"].append(
        {
            "type": "ReplicaFailure",
            "status": "True",
            "reason": "FailedCreateWorkerPod",
            "message": 'pods "x" is forbidden: exceeded quota: team-quota, requested: cpu=1, used: cpu=8, '
            "limited: cpu=8",
            "lastTransitionTime": "2026-03-02T09:00:00Z",
        }
    )
    driver.server.store.write_status(driver.server.resource("rayclusters"), NAMESPACE, ref.name, rc["status"])
    status = driver.backend.get(ref)
    assert status.stuck_cause is not None and status.stuck_cause.startswith("quota refused the pods: pods")
    assert status.conditions["ReplicaFailure"] == "True"


def test_an_image_pull_failure_is_reported(driver: KubeRayDriver) -> None:
    ref = cluster_with(driver, 1)
    (pod,) = driver.pods(ref, GROUP)
    pod["status"]["containerStatuses"][0]["state"] = {
        "waiting": {"reason": "ImagePullBackOff", "message": 'Back-off pulling image "rayproject/ray:nope"'}
    }
    driver.server.store.write_status(
        driver.server.resource("pods"), NAMESPACE, pod["metadata"]["name"], pod["status"]
    )
    cause = driver.backend.get(ref).stuck_cause
    assert cause == (
        f"pod {pod['metadata']['name']}: image pull failed (ImagePullBackOff) for "
        f'{pod["status"]["containerStatuses"][0]["image"]}: Back-off pulling image "rayproject/ray:nope"'
    )


def test_a_kueue_queued_cluster_is_queued_with_its_cause(driver: KubeRayDriver) -> None:
    ref = cluster_with(driver, 1, labels={keys.LABEL_KUEUE_QUEUE: "team-queue"})
    driver.concurrent_annotation(ref, "x/y", "z")
    rc = driver.raw(ref)
    assert rc is not None
    rc["spec"]["suspend"] = True
    driver.server.put(rc)
    driver.settle(ref)
    status = driver.backend.get(ref)
    assert status.state == ClusterState.QUEUED
    assert status.stuck_cause == "waiting in Kueue queue team-queue for admission"
    assert status.conditions["RayClusterSuspended"] == "True"


def test_connect_info_uses_a_route_when_there_is_one() -> None:
    routes_crd = KUBERAY_CRD.parents[1] / "crds" / "routes.crd.yaml"
    with KubeApiServer(KUBE_TOKENS, default_token="admin-token", crds=(KUBERAY_CRD, routes_crd)) as server:
        operator = FakeKubeRayOperator(server.store)
        d = KubeRayDriver(server, operator)
        ref = cluster_with(d, 0)
        server.put(
            {
                "apiVersion": "route.openshift.io/v1",
                "kind": "Route",
                "metadata": {"name": f"{ref.name}-head-route", "namespace": NAMESPACE},
                "spec": {
                    "host": "demo.apps.example.com",
                    "to": {"kind": "Service", "name": f"{ref.name}-head-svc"},
                    "tls": {"termination": "edge"},
                },
            }
        )
        connect = d.backend.get(ref).connect
        assert connect is not None
        assert connect.dashboard_url == connect.job_submission_url == "https://demo.apps.example.com"
        assert connect.client_address == f"ray://{ref.name}-head-svc.{NAMESPACE}.svc:10001"


def test_pods_of_many_clusters_are_listed_per_namespace(driver: KubeRayDriver) -> None:
    refs = [cluster_with(driver, 1) for _ in range(3)]
    driver.server.clear_requests()
    clusters = driver.backend.list_clusters()
    assert [c.ref for c in clusters] == sorted(refs)
    assert all(len(c.group(GROUP).workers) == 1 for c in clusters)
    pod_lists = [r for r in driver.server.resource_requests(CONTROLLER) if r.resource == "pods"]
    assert len(pod_lists) == 1
    assert len(driver.activity.asked[-1]) == 3  # one activity call for all clusters


def test_restart_with_a_new_api_client_sees_the_same_state(driver: KubeRayDriver) -> None:
    ref = cluster_with(driver, 2)
    fresh = KubeRayBackend(
        KubeApi(driver.server.client(CONTROLLER_TOKEN), RetryPolicy()), activity=driver.activity
    )
    assert find(fresh, ref).group(GROUP).replicas == 2
