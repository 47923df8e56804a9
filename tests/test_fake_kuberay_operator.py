"""The fake KubeRay operator, pinned to the operator facts in ray-kuberay.md (sections 0, 2, 3 and 6).

RayClusters are written through the official client, as rayops writes them; the operator is then reconciled
explicitly so every test is deterministic. The one background-loop test polls with a deadline.
"""

from __future__ import annotations

import ipaddress
import re
import time
from typing import Any

import pytest
from kubernetes import client, watch

from tests.harness.kube import SAMPLE_FILES, load_sample
from tests.standins.kube_api import KubeApiServer
from tests.standins.kuberay_objects import desired_worker_pods
from tests.standins.kuberay_operator import FakeKubeRayOperator

NS = "team-a"
IMAGE = "rayproject/ray:2.60.0"
DOC_NETS = [
    ipaddress.ip_network(n) for n in ("203.0.113.0/24", "198.51.100.0/24", "192.0.2.0/24", "2001:db8::/32")
]


def group(
    name: str, replicas: int | None = 1, lo: int | None = 0, hi: int | None = 10, **extra: Any
) -> dict[str, Any]:
    g: dict[str, Any] = {
        "groupName": name,
        "rayStartParams": {},
        "template": {
            "metadata": {"labels": {"team": "nlp"}},
            "spec": {
                "containers": [
                    {
                        "name": "ray-worker",
                        "image": IMAGE,
                        "resources": {"limits": {"cpu": "2", "memory": "4Gi"}},
                    }
                ]
            },
        },
        **extra,
    }
    for key, value in (("replicas", replicas), ("minReplicas", lo), ("maxReplicas", hi)):
        if value is not None:
            g[key] = value
    return g


def cluster(name: str, groups: list[dict[str, Any]], *, in_tree: bool = False, **spec: Any) -> dict[str, Any]:
    head = {
        "name": "ray-head",
        "image": IMAGE,
        "ports": [
            {"name": "gcs-server", "containerPort": 6379},
            {"name": "dashboard", "containerPort": 8265},
            {"name": "client", "containerPort": 10001},
        ],
        "resources": {"limits": {"cpu": "1", "memory": "2Gi"}},
    }
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {"name": name},
        "spec": {
            "enableInTreeAutoscaling": in_tree,
            "headGroupSpec": {"rayStartParams": {}, "template": {"spec": {"containers": [head]}}},
            "workerGroupSpecs": groups,
            **spec,
        },
    }


class Kube:
    """The official client against the stand-in, plus reads of what the operator produced."""

    def __init__(self, kube_api: KubeApiServer) -> None:
        self.server = kube_api
        self.co = client.CustomObjectsApi(kube_api.client())
        self.core = client.CoreV1Api(kube_api.client())

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.co.create_namespaced_custom_object(
            "ray.io", "v1", NS, "rayclusters", body
        )
        return result

    def get(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self.co.get_namespaced_custom_object("ray.io", "v1", NS, "rayclusters", name)
        return result

    def json_patch(self, name: str, ops: list[dict[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = self.co.patch_namespaced_custom_object(
            "ray.io", "v1", NS, "rayclusters", name, ops, _content_type="application/json-patch+json"
        )
        return result

    def merge(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.co.patch_namespaced_custom_object(
            "ray.io", "v1", NS, "rayclusters", name, patch
        )
        return result

    def pods(
        self, cluster_name: str, group_name: str | None = None, node_type: str = "worker"
    ) -> list[client.V1Pod]:
        selector = f"ray.io/cluster={cluster_name},ray.io/node-type={node_type}"
        if group_name:
            selector += f",ray.io/group={group_name}"
        return list(self.core.list_namespaced_pod(NS, label_selector=selector).items)

    def pod_names(self, cluster_name: str, group_name: str | None = None) -> list[str]:
        return sorted(p.metadata.name for p in self.pods(cluster_name, group_name))

    def status(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self.get(name).get("status") or {}
        return result

    def conditions(self, name: str) -> dict[str, tuple[str, str]]:
        return {c["type"]: (c["status"], c["reason"]) for c in self.status(name).get("conditions", [])}


@pytest.fixture
def kube(kube_api: KubeApiServer) -> Kube:
    return Kube(kube_api)


def set_workers(kube: Kube, name: str, index: int, group_name: str, replicas: int, delete: list[str]) -> None:
    """Owner-mode scale-down per ray-kuberay.md section 4: one JSON patch with a `test` on groupName."""
    kube.json_patch(
        name,
        [
            {"op": "test", "path": f"/spec/workerGroupSpecs/{index}/groupName", "value": group_name},
            {"op": "replace", "path": f"/spec/workerGroupSpecs/{index}/replicas", "value": replicas},
            {
                "op": "add",
                "path": f"/spec/workerGroupSpecs/{index}/scaleStrategy",
                "value": {"workersToDelete": delete},
            },
        ],
    )


# ----- clamping -----


@pytest.mark.parametrize(
    ("replicas", "lo", "hi", "expected"),
    [
        (2, 0, 10, 2),
        (5, 0, 3, 3),  # above max: silently clamped
        (0, 2, 5, 2),  # below min
        (None, 1, 4, 1),  # replicas omitted: defaulted to 0 by the server, then clamped to min
        (-3, 0, 5, 0),  # the schema has no minimum on replicas
        (3, 4, 2, 2),  # min > max: max wins
        (3, None, None, 3),  # bounds omitted: defaulted to 0 and 2147483647
    ],
)
def test_pods_per_group_are_clamped_replicas(
    kube: Kube,
    kuberay_operator: FakeKubeRayOperator,
    replicas: int | None,
    lo: int | None,
    hi: int | None,
    expected: int,
) -> None:
    kube.create(cluster("rc", [group("cpu", replicas, lo, hi)]))
    kuberay_operator.reconcile(NS, "rc")
    assert len(kube.pod_names("rc", "cpu")) == expected
    assert kube.status("rc")["desiredWorkerReplicas"] == expected


def test_num_of_hosts_multiplies_pods_and_a_named_pod_takes_its_whole_replica(
    kube: Kube, kuberay_operator: FakeKubeRayOperator
) -> None:
    kube.create(cluster("tpu", [group("slice", 2, 0, 4, numOfHosts=2)]))
    kuberay_operator.reconcile(NS, "tpu")
    pods = kube.pods("tpu", "slice")
    assert len(pods) == 4
    by_replica: dict[str, list[str]] = {}
    for p in pods:
        by_replica.setdefault(p.metadata.labels["ray.io/worker-group-replica-name"], []).append(
            p.metadata.labels["ray.io/replica-host-index"]
        )
    assert sorted(sorted(v) for v in by_replica.values()) == [["0", "1"], ["0", "1"]]
    status = kube.status("tpu")
    assert (status["desiredWorkerReplicas"], status["minWorkerReplicas"], status["maxWorkerReplicas"]) == (
        4,
        0,
        8,
    )
    victim = pods[0]
    replica = victim.metadata.labels["ray.io/worker-group-replica-name"]
    set_workers(kube, "tpu", 0, "slice", 1, [victim.metadata.name])
    kuberay_operator.reconcile(NS, "tpu")
    left = kube.pods("tpu", "slice")
    assert len(left) == 2
    assert all(p.metadata.labels["ray.io/worker-group-replica-name"] != replica for p in left)


# ----- workersToDelete and scale-down -----


def test_workers_to_delete_are_deleted_first_and_the_list_is_never_cleared(
    kube: Kube, kuberay_operator: FakeKubeRayOperator
) -> None:
    kube.create(cluster("rc", [group("cpu", 3)]))
    kuberay_operator.reconcile(NS, "rc")
    before = kube.pod_names("rc", "cpu")
    victim = before[1]
    kuberay_operator.actions.clear()
    set_workers(kube, "rc", 0, "cpu", 2, [victim])
    kuberay_operator.reconcile(NS, "rc")
    assert kube.pod_names("rc", "cpu") == [before[0], before[2]]
    assert [(a.verb, a.pod, a.reason) for a in kuberay_operator.actions] == [
        ("delete", victim, "workersToDelete")
    ]
    stored = kube.get("rc")["spec"]["workerGroupSpecs"][0]
    assert stored["scaleStrategy"]["workersToDelete"] == [victim]  # the operator never clears it
    kuberay_operator.reconcile(NS, "rc")  # a stale list naming a gone pod is harmless (NotFound ignored)
    assert kube.pod_names("rc", "cpu") == [before[0], before[2]]


def test_workers_to_delete_is_not_checked_against_the_group(
    kube: Kube, kuberay_operator: FakeKubeRayOperator
) -> None:
    """KubeRay deletes each named pod by name in the namespace: a foreign pod named by mistake dies too."""
    kube.create(cluster("rc", [group("cpu", 2), group("gpu", 1)]))
    kube.create(cluster("other", [group("cpu", 1)]))
    kuberay_operator.reconcile_all()
    foreign = kube.pod_names("other", "cpu")[0]
    set_workers(kube, "rc", 0, "cpu", 2, [foreign])
    kuberay_operator.reconcile(NS, "rc")
    assert kube.pod_names("other", "cpu") == []
    assert len(kube.pod_names("rc", "cpu")) == 2  # this group's count was not lowered by the foreign delete
    assert [(a.pod, a.reason) for a in kuberay_operator.actions if a.verb == "delete"] == [
        (foreign, "workersToDelete")
    ]


def test_named_worker_with_unchanged_replicas_is_replaced(
    kube: Kube, kuberay_operator: FakeKubeRayOperator
) -> None:
    """Why rayops must lower `replicas` in the same patch: otherwise the operator just replaces the pod."""
    kube.create(cluster("rc", [group("cpu", 2)]))
    kuberay_operator.reconcile(NS, "rc")
    victim = kube.pod_names("rc", "cpu")[0]
    set_workers(kube, "rc", 0, "cpu", 2, [victim])
    kuberay_operator.reconcile(NS, "rc")
    after = kube.pod_names("rc", "cpu")
    assert len(after) == 2 and victim not in after


def test_lowering_replicas_alone_deletes_arbitrary_pods_when_in_tree_autoscaling_is_off(
    kube: Kube, kuberay_operator: FakeKubeRayOperator
) -> None:
    kube.create(cluster("rc", [group("cpu", 3)]))
    kuberay_operator.reconcile(NS, "rc")
    before = kube.pod_names("rc", "cpu")
    kuberay_operator.actions.clear()
    kube.json_patch("rc", [{"op": "replace", "path": "/spec/workerGroupSpecs/0/replicas", "value": 1}])
    kuberay_operator.reconcile(NS, "rc")
    after = kube.pod_names("rc", "cpu")
    assert len(after) == 1 and set(after) < set(before)
    assert [a.reason for a in kuberay_operator.actions] == ["scale-down", "scale-down"]


def test_in_tree_autoscaling_on_deletes_nothing_unnamed(
    kube: Kube, kuberay_operator: FakeKubeRayOperator
) -> None:
    kube.create(cluster("rc", [group("cpu", 3)], in_tree=True))
    kuberay_operator.reconcile(NS, "rc")
    before = kube.pod_names("rc", "cpu")
    kube.json_patch("rc", [{"op": "replace", "path": "/spec/workerGroupSpecs/0/replicas", "value": 1}])
    kuberay_operator.reconcile(NS, "rc")
    assert kube.pod_names("rc", "cpu") == before  # the autoscaler is the only decision-maker
    status = kube.status("rc")
    assert (status["desiredWorkerReplicas"], status["availableWorkerReplicas"]) == (1, 3)
    set_workers(kube, "rc", 0, "cpu", 1, before[:2])  # named pods always go, autoscaler or not
    kuberay_operator.reconcile(NS, "rc")
    assert kube.pod_names("rc", "cpu") == before[2:]


def test_random_pod_delete_env_deletes_even_with_in_tree_autoscaling(
    kube_api: KubeApiServer, kube: Kube
) -> None:
    operator = FakeKubeRayOperator(kube_api.store, random_pod_delete=True)
    kube.create(cluster("rc", [group("cpu", 3)], in_tree=True))
    operator.reconcile(NS, "rc")
    kube.json_patch("rc", [{"op": "replace", "path": "/spec/workerGroupSpecs/0/replicas", "value": 1}])
    operator.reconcile(NS, "rc")
    assert len(kube.pod_names("rc", "cpu")) == 1


# ----- suspend -----


def test_suspend_deletes_every_pod_and_resume_recreates(
    kube: Kube, kuberay_operator: FakeKubeRayOperator
) -> None:
    kube.create(cluster("rc", [group("cpu", 2)]))
    kuberay_operator.reconcile(NS, "rc")
    kube.merge("rc", {"spec": {"suspend": True}})
    kuberay_operator.reconcile(NS, "rc")
    assert kube.core.list_namespaced_pod(NS, label_selector="ray.io/cluster=rc").items == []
    status = kube.status("rc")
    assert status["state"] == "suspended" and status["desiredWorkerReplicas"] == 0
    conditions = kube.conditions("rc")
    assert conditions["RayClusterSuspended"] == ("True", "RayClusterSuspended")
    assert conditions["RayClusterSuspending"][0] == "False"
    assert conditions["RayClusterProvisioned"][0] == "False"
    kube.merge("rc", {"spec": {"suspend": False}})
    kuberay_operator.reconcile(NS, "rc")
    assert len(kube.pod_names("rc", "cpu")) == 2 and len(kube.pods("rc", node_type="head")) == 1
    assert kube.status("rc")["state"] == "ready"
    assert kube.conditions("rc")["RayClusterSuspended"][0] == "False"


def test_suspended_group_has_no_pods(kube: Kube, kuberay_operator: FakeKubeRayOperator) -> None:
    kube.create(cluster("rc", [group("cpu", 2), group("gpu", 2, suspend=True)]))
    kuberay_operator.reconcile(NS, "rc")
    assert (len(kube.pod_names("rc", "cpu")), len(kube.pod_names("rc", "gpu"))) == (2, 0)
    assert kube.status("rc")["desiredWorkerReplicas"] == 2


# ----- status, conditions, pod shape -----


def test_status_of_a_ready_cluster(kube: Kube, kuberay_operator: FakeKubeRayOperator) -> None:
    kube.create(cluster("rc", [group("cpu", 2, 1, 5), group("gpu", 0, 0, 3)]))
    kuberay_operator.reconcile(NS, "rc")
    status = kube.status("rc")
    head = kube.pods("rc", node_type="head")[0]
    assert (
        status["readyWorkerReplicas"]
        == status["availableWorkerReplicas"]
        == status["desiredWorkerReplicas"]
        == 2
    )
    assert (status["minWorkerReplicas"], status["maxWorkerReplicas"]) == (1, 8)
    assert (status["desiredCPU"], status["desiredMemory"]) == ("5", "10Gi")
    assert status["endpoints"] == {
        "client": "10001",
        "dashboard": "8265",
        "gcs-server": "6379",
        "metrics": "8080",
    }
    assert status["head"] == {
        "podName": head.metadata.name,
        "podIP": head.status.pod_ip,
        "serviceIP": head.status.pod_ip,
        "serviceName": "rc-head-svc",
    }
    assert status["state"] == "ready" and status["observedGeneration"] == 1
    conditions = kube.conditions("rc")
    assert conditions["HeadPodReady"] == ("True", "HeadPodRunningAndReady")
    assert conditions["RayClusterProvisioned"] == ("True", "AllPodRunningAndReadyFirstTime")
    svc = kube.core.read_namespaced_service("rc-head-svc", NS)
    assert svc.spec.cluster_ip == "None" and svc.spec.selector["ray.io/node-type"] == "head"


def test_pending_pods_show_unschedulable_and_provisioning(
    kube: Kube, kuberay_operator: FakeKubeRayOperator
) -> None:
    kuberay_operator.new_pods_pending = True
    kube.create(cluster("rc", [group("gpu", 2)]))
    kuberay_operator.reconcile(NS, "rc")
    pods = kube.pods("rc", "gpu")
    assert [p.status.phase for p in pods] == ["Pending", "Pending"] and pods[0].status.pod_ip is None
    scheduled = pods[0].status.conditions[0]
    assert (scheduled.type, scheduled.status, scheduled.reason) == ("PodScheduled", "False", "Unschedulable")
    assert "Insufficient cpu" in scheduled.message
    status = kube.status("rc")
    assert (
        status["readyWorkerReplicas"],
        status["availableWorkerReplicas"],
        status["desiredWorkerReplicas"],
    ) == (
        0,
        0,
        2,
    )
    assert kube.conditions("rc")["RayClusterProvisioned"] == ("False", "RayClusterPodsProvisioning")
    assert kube.conditions("rc")["HeadPodReady"][0] == "False"
    assert "state" not in status
    for p in [*pods, *kube.pods("rc", node_type="head")]:
        kuberay_operator.set_pod_phase(NS, p.metadata.name, "Running")
    kuberay_operator.reconcile(NS, "rc")
    assert kube.conditions("rc")["RayClusterProvisioned"] == ("True", "AllPodRunningAndReadyFirstTime")
    kuberay_operator.set_pod_phase(NS, pods[0].metadata.name, "Running", ready=False)
    kuberay_operator.reconcile(NS, "rc")
    status = kube.status("rc")
    assert (status["readyWorkerReplicas"], status["availableWorkerReplicas"]) == (1, 2)
    assert (
        kube.conditions("rc")["RayClusterProvisioned"][0] == "True"
    )  # first-time condition does not flip back


def test_pod_names_labels_env_and_ips(kube: Kube, kuberay_operator: FakeKubeRayOperator) -> None:
    kube.create(cluster("rc", [group("cpu", 3), group("gpu", 2)]))
    kuberay_operator.reconcile(NS, "rc")
    workers = kube.pods("rc")
    head = kube.pods("rc", node_type="head")
    assert len(workers) == 5 and len(head) == 1
    assert re.fullmatch(r"rc-head-[a-z0-9]{5}", head[0].metadata.name)
    assert head[0].metadata.labels["ray.io/group"] == "headgroup"
    assert head[0].metadata.labels["ray.io/identifier"] == "rc-head"
    for p in workers:
        labels = p.metadata.labels
        g = labels["ray.io/group"]
        assert re.fullmatch(rf"rc-{g}-worker-[a-z0-9]{{5}}", p.metadata.name)
        assert labels == {
            "team": "nlp",  # template labels are kept
            "ray.io/cluster": "rc",
            "ray.io/group": g,
            "ray.io/node-type": "worker",
            "ray.io/is-ray-node": "yes",
            "ray.io/identifier": "rc-worker",
            "app.kubernetes.io/name": "kuberay",
            "app.kubernetes.io/created-by": "kuberay-operator",
        }
        env = {e.name: e.value for e in p.spec.containers[0].env}
        assert env["RAY_CLOUD_INSTANCE_ID"] == p.metadata.name and env["RAY_NODE_TYPE_NAME"] == g
        assert (
            p.metadata.owner_references[0].kind == "RayCluster" and p.metadata.owner_references[0].controller
        )
        assert p.status.phase == "Running" and p.status.conditions[2].type == "Ready"
    ips = [p.status.pod_ip for p in [*workers, *head]]
    assert len(set(ips)) == 6
    assert all(any(ipaddress.ip_address(ip) in net for net in DOC_NETS) for ip in ips)


def test_long_names_keep_the_last_50_characters_of_the_prefix(
    kube: Kube, kuberay_operator: FakeKubeRayOperator
) -> None:
    name = "a-very-long-cluster-name-for-the-nlp-team"
    kube.create(cluster(name, [group("gpu-workers-large", 1)]))
    kuberay_operator.reconcile(NS, name)
    pod_name = kube.pod_names(name, "gpu-workers-large")[0]
    prefix = f"{name}-gpu-workers-large-worker-"
    assert pod_name[:-5] == prefix[-50:] and len(pod_name) == 55


def test_in_tree_autoscaling_adds_the_autoscaler_sidecar_to_the_head(
    kube: Kube, kuberay_operator: FakeKubeRayOperator
) -> None:
    kube.create(cluster("auto", [group("cpu", 1)], in_tree=True))
    kube.create(cluster("plain", [group("cpu", 1)]))
    kuberay_operator.reconcile_all()
    assert [c.name for c in kube.pods("auto", node_type="head")[0].spec.containers] == [
        "ray-head",
        "autoscaler",
    ]
    assert [c.name for c in kube.pods("plain", node_type="head")[0].spec.containers] == ["ray-head"]


def test_failed_worker_is_deleted_then_replaced_on_the_next_pass(
    kube: Kube, kuberay_operator: FakeKubeRayOperator
) -> None:
    kube.create(cluster("rc", [group("cpu", 2)]))
    kuberay_operator.reconcile(NS, "rc")
    broken = kube.pod_names("rc", "cpu")[0]
    kuberay_operator.set_pod_phase(NS, broken, "Failed", ready=False)
    kuberay_operator.reconcile(NS, "rc")
    assert len(kube.pod_names("rc", "cpu")) == 1  # deletion only, then requeue
    kuberay_operator.reconcile(NS, "rc")
    assert len(kube.pod_names("rc", "cpu")) == 2 and broken not in kube.pod_names("rc", "cpu")


def test_failed_pod_creation_sets_replica_failure(kube: Kube, kuberay_operator: FakeKubeRayOperator) -> None:
    kube.create(cluster("rc", [group("cpu", 2)]))
    kuberay_operator.fail_next_creates = 1
    kuberay_operator.reconcile(NS, "rc")
    assert kube.conditions("rc")["ReplicaFailure"] == ("True", "FailedCreateHeadPod")
    kuberay_operator.reconcile(NS, "rc")
    assert "ReplicaFailure" not in kube.conditions("rc")
    assert kube.status("rc")["state"] == "ready"


def test_deleting_the_cluster_garbage_collects_its_pods_and_service(
    kube: Kube, kuberay_operator: FakeKubeRayOperator
) -> None:
    kube.create(cluster("rc", [group("cpu", 2)]))
    kube.create(cluster("other", [group("cpu", 1)]))
    kuberay_operator.reconcile_all()
    kube.co.delete_namespaced_custom_object("ray.io", "v1", NS, "rayclusters", "rc")
    kuberay_operator.reconcile_all()
    assert kube.core.list_namespaced_pod(NS, label_selector="ray.io/cluster=rc").items == []
    assert [s.metadata.name for s in kube.core.list_namespaced_service(NS).items] == ["other-head-svc"]
    assert len(kube.pod_names("other")) == 1


def test_reconcile_is_idempotent_and_skips_clusters_managed_elsewhere(
    kube: Kube, kube_api: KubeApiServer, kuberay_operator: FakeKubeRayOperator
) -> None:
    kube.create(cluster("rc", [group("cpu", 2)]))
    kube.create(cluster("queued", [group("cpu", 2)], managedBy="kueue.x-k8s.io/multikueue"))
    kuberay_operator.reconcile_all()
    rv = kube_api.store.resource_version
    kuberay_operator.reconcile_all()
    assert kube_api.store.resource_version == rv  # nothing to do: no write, no watch event
    assert kube.core.list_namespaced_pod(NS, label_selector="ray.io/cluster=queued").items == []
    assert "status" not in kube.get("queued")


def test_operator_writes_are_not_in_the_audit_log_but_reach_watchers(
    kube: Kube, kube_api: KubeApiServer, kuberay_operator: FakeKubeRayOperator
) -> None:
    rv = kube.core.list_namespaced_pod(NS).metadata.resource_version
    kube.create(cluster("rc", [group("cpu", 1)]))
    kube_api.clear_requests()
    kuberay_operator.reconcile(NS, "rc")
    assert kube_api.requests == []
    events = [
        (e["type"], e["object"].metadata.labels["ray.io/node-type"])
        for e in watch.Watch().stream(
            kube.core.list_namespaced_pod,
            NS,
            label_selector="ray.io/cluster=rc",
            resource_version=rv,
            timeout_seconds=0,
        )
    ]
    assert sorted(events) == [("ADDED", "head"), ("ADDED", "worker")]


@pytest.mark.parametrize("file_name", SAMPLE_FILES)
def test_kuberay_samples_reconcile_to_ready(
    kube: Kube, kuberay_operator: FakeKubeRayOperator, file_name: str
) -> None:
    body = load_sample(file_name)
    created = kube.create(body)
    name = created["metadata"]["name"]
    kuberay_operator.reconcile(NS, name)
    groups = created["spec"].get("workerGroupSpecs") or []
    desired = sum(desired_worker_pods(g) for g in groups)
    status = kube.status(name)
    assert status["desiredWorkerReplicas"] == desired == len(kube.pod_names(name))
    assert status["state"] == "ready"
    assert kube.conditions(name)["RayClusterProvisioned"] == ("True", "AllPodRunningAndReadyFirstTime")
    head_containers = [c.name for c in kube.pods(name, node_type="head")[0].spec.containers]
    assert ("autoscaler" in head_containers) == bool(created["spec"].get("enableInTreeAutoscaling"))


def test_background_loop_follows_api_writes(kube: Kube, kuberay_operator: FakeKubeRayOperator) -> None:
    kuberay_operator.start(interval=0.02)
    kube.create(cluster("rc", [group("cpu", 1)]))

    def wait_for(check: Any) -> None:
        deadline = time.monotonic() + 5
        while not check():
            assert time.monotonic() < deadline, "the operator loop did not converge"
            time.sleep(0.02)

    wait_for(lambda: kube.status("rc").get("state") == "ready")
    kube.json_patch("rc", [{"op": "replace", "path": "/spec/workerGroupSpecs/0/replicas", "value": 3}])
    wait_for(lambda: kube.status("rc").get("readyWorkerReplicas") == 3)
    assert len(kube.pod_names("rc", "cpu")) == 3
