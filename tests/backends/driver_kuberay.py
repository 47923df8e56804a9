"""The contract suite's KubeRay driver: the Kubernetes API stand-in, the fake operator, and Ray activity.

The stand-in runs no Ray, so which worker is busy comes from `PodActivity`, a test double of
`ActivitySource` that answers from the pods the operator made (node id, pod IP and pod name, as the Ray
dashboard source reports them on Kubernetes). Everything else is real: the official client, the CRD's
admission, the operator's `workersToDelete` and clamping rules.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

import pytest
from kubernetes import client as k8s

from controller.backends.base import ClusterRequest
from controller.backends.kube_api import KubeApi, RetryPolicy
from controller.backends.kuberay import KubeRayBackend
from controller.domain import Activity, ClusterRef, NodeActivity
from controller.metrics.base import ClusterActivity
from controller.policy.model import ClusterProfile, ScalingPolicy
from tests.backends.drivers import CONTRACT_PROFILE, REQUESTER
from tests.harness.kube import CONTROLLER_TOKEN, USER_TOKEN
from tests.standins.kube_api import KubeApiServer
from tests.standins.kuberay_operator import FakeKubeRayOperator

NAMESPACE = "team-a"
RAY = ("ray.io", "v1")
FAST_RETRY = RetryPolicy(attempts=3, base_delay_s=0.001, max_delay_s=0.01, read_timeout_s=5.0)


class PodActivity:
    """`ActivitySource` double: every Running Ray pod of a cluster is a node, idle unless marked busy."""

    def __init__(self, server: KubeApiServer) -> None:
        self.server = server
        self.busy: set[str] = set()
        self.down: set[ClusterRef] = set()  # clusters whose dashboard "does not answer"
        self.asked: list[dict[ClusterRef, str | None]] = []
        self.pod_names = True  # False: nodes known by IP only (a source without RAY_CLOUD_INSTANCE_ID)

    def activity(
        self, clusters: Mapping[ClusterRef, str | None], now: datetime
    ) -> dict[ClusterRef, ClusterActivity]:
        self.asked.append(dict(clusters))
        out = {}
        for ref in clusters:
            if ref in self.down:
                out[ref] = ClusterActivity(ref, at=now, unavailable="dashboard did not answer")
                continue
            nodes = []
            for pod in self.server.list_objs("pods", ref.namespace, f"ray.io/cluster={ref.name}"):
                status, meta = pod.get("status") or {}, pod["metadata"]
                if status.get("phase") != "Running":
                    continue
                name = meta["name"]
                nodes.append(
                    NodeActivity(
                        node_id=f"node-{name}",
                        node_ip=str(status.get("podIP")),
                        activity=Activity.BUSY if name in self.busy else Activity.IDLE,
                        pod_name=name if self.pod_names else None,
                        is_head=meta["labels"].get("ray.io/node-type") == "head",
                        running_tasks=1 if name in self.busy else 0,
                    )
                )
            out[ref] = ClusterActivity(ref, tuple(nodes), at=now)
        return out


class KubeRayDriver:
    name = "kuberay"
    namespace = NAMESPACE

    def __init__(
        self,
        server: KubeApiServer,
        operator: FakeKubeRayOperator,
        profiles: Mapping[str, ClusterProfile] | None = None,
        policies: Mapping[str, ScalingPolicy] | None = None,
    ) -> None:
        self.server = server
        self.operator = operator
        self.activity = PodActivity(server)
        self.profiles = dict(profiles or {CONTRACT_PROFILE.name: CONTRACT_PROFILE})
        self.policies = dict(policies or {})
        self._custom = k8s.CustomObjectsApi(server.client(USER_TOKEN))  # "someone else": a notebook user
        self._backend = self._new_backend()

    def _new_backend(self) -> KubeRayBackend:
        api = KubeApi(self.server.client(CONTROLLER_TOKEN), FAST_RETRY, sleep=lambda _: None)
        return KubeRayBackend(api, self.profiles, activity=self.activity, policies=self.policies)

    @property
    def backend(self) -> KubeRayBackend:
        return self._backend

    def request(
        self, name: str, workers: int | None = None, ttl_seconds: int | None = None
    ) -> ClusterRequest:
        return ClusterRequest(
            name, NAMESPACE, CONTRACT_PROFILE.name, REQUESTER, workers=workers, ttl_seconds=ttl_seconds
        )

    def settle(self, ref: ClusterRef) -> None:
        """Reconcile until nothing changes (the operator deletes unhealthy pods in one pass, creates in
        the next)."""
        for _ in range(5):
            before = self.server.store.resource_version
            self.operator.reconcile_all()
            if self.server.store.resource_version == before:
                return
        pytest.fail(f"the fake operator did not settle {ref}")

    def pods(self, ref: ClusterRef, group: str | None = None) -> list[dict[str, Any]]:
        selector = f"ray.io/cluster={ref.name},ray.io/node-type=worker"
        if group is not None:
            selector += f",ray.io/group={group}"
        return self.server.list_objs("pods", ref.namespace, selector)

    def live_workers(self, ref: ClusterRef, group: str) -> set[str]:
        return {p["metadata"]["name"] for p in self.pods(ref, group)}

    def live_count(self, ref: ClusterRef, group: str) -> int:
        return len(self.live_workers(ref, group))

    def exists(self, ref: ClusterRef) -> bool:
        return self.raw(ref) is not None or bool(
            self.server.list_objs("pods", ref.namespace, f"ray.io/cluster={ref.name}")
        )

    def raw(self, ref: ClusterRef) -> dict[str, Any] | None:
        return self.server.get_obj("rayclusters", ref.namespace, ref.name)

    def annotations(self, ref: ClusterRef) -> dict[str, str]:
        rc = self.raw(ref)
        assert rc is not None, f"{ref} does not exist"
        return dict(rc["metadata"].get("annotations") or {})

    def group_spec(self, ref: ClusterRef, group: str) -> dict[str, Any]:
        rc = self.raw(ref)
        assert rc is not None, f"{ref} does not exist"
        return next(g for g in rc["spec"]["workerGroupSpecs"] if g["groupName"] == group)

    def _index(self, ref: ClusterRef, group: str) -> int:
        rc = self.raw(ref)
        assert rc is not None
        return [g["groupName"] for g in rc["spec"]["workerGroupSpecs"]].index(group)

    def concurrent_count(self, ref: ClusterRef, group: str, replicas: int) -> None:
        self.concurrent_field(ref, group, "replicas", replicas)

    def concurrent_field(self, ref: ClusterRef, group: str, field: str, value: Any) -> None:
        path = f"/spec/workerGroupSpecs/{self._index(ref, group)}/{field}"
        ops = [{"op": "replace", "path": path, "value": value}]
        self._custom.patch_namespaced_custom_object(
            *RAY, ref.namespace, "rayclusters", ref.name, ops, _content_type="application/json-patch+json"
        )

    def concurrent_annotation(self, ref: ClusterRef, key: str, value: str) -> None:
        self._custom.patch_namespaced_custom_object(
            *RAY, ref.namespace, "rayclusters", ref.name, {"metadata": {"annotations": {key: value}}}
        )

    def restart(self) -> KubeRayBackend:
        self._backend = self._new_backend()
        return self._backend

    def set_busy(self, ref: ClusterRef, worker: str, busy: bool) -> None:
        (self.activity.busy.add if busy else self.activity.busy.discard)(worker)


def kuberay_driver(request: pytest.FixtureRequest) -> Iterator[KubeRayDriver]:
    server: KubeApiServer = request.getfixturevalue("kube_api")
    operator: FakeKubeRayOperator = request.getfixturevalue("kuberay_operator")
    yield KubeRayDriver(server, operator)
