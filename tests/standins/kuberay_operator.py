"""A fake KubeRay operator that acts on the Kubernetes stand-in's store, so RayClusters get pods and status.

The real operator cannot run here. This one reproduces what rayops observes and must cope with (ray-kuberay.md
sections 2 and 3): per group, every pod named in `scaleStrategy.workersToDelete` is deleted first (by name in
the namespace, unchecked, as KubeRay does) and the list is never cleared in the stored object; then pods =
clamp(replicas, min, max) * numOfHosts, surplus pods being deleted (first in name order) only when in-tree
autoscaling is off or `random_pod_delete` is set; `suspend` deletes every pod; status counts and conditions
follow. It works in-process on the store, so its writes never show up in the audit log RBAC tests read, and it
is deterministic: tests call `reconcile()`; `start()` adds a background loop for end-to-end tests. Object
shapes (names, labels, env, IPs) live in `kuberay_objects.py`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tests.standins.kube_codec import Stored, now_rfc3339, random_suffix
from tests.standins.kube_resources import ApiError
from tests.standins.kube_selectors import parse_label_selector
from tests.standins.kube_store import Store
from tests.standins.kuberay_objects import (
    DEFAULT_PENDING_MESSAGE,
    INT32_MAX,
    OPERATOR_MANAGER,
    IpPool,
    ReplicaSlot,
    build_head_service,
    build_pod,
    desired_replicas,
    desired_resources,
    desired_worker_pods,
    head_ports,
    is_ready,
    is_running,
    label,
    name_prefix,
    pod_condition,
    pod_conditions,
    service_name,
)


@dataclass(frozen=True)
class Action:
    """One pod operation the operator performed, in order, with why (tests pin ordering rules on these)."""

    verb: str  # "create" | "delete"
    namespace: str
    pod: str
    group: str
    # head, scale-up, workersToDelete, scale-down, suspend, unhealthy, incomplete, orphan
    reason: str


class FakeKubeRayOperator:
    """Reconciles RayClusters in a `Store` the way KubeRay's `reconcilePods` does, minus real pods."""

    def __init__(
        self, store: Store, *, random_pod_delete: bool = False, deterministic_head_name: bool = False
    ) -> None:
        self.store = store
        self.rc_rt = store.registry.find("ray.io/v1/rayclusters")
        self.pod_rt = store.registry.find("v1/pods")
        self.svc_rt = store.registry.find("v1/services")
        # Operator env ENABLE_RANDOM_POD_DELETE: scale-down deletes pods even with in-tree autoscaling on.
        self.random_pod_delete = random_pod_delete
        # Operator env ENABLE_DETERMINISTIC_HEAD_POD_NAME: head pod named `<cluster>-head`.
        self.deterministic_head_name = deterministic_head_name
        # New pods start Pending/Unschedulable with `pending_message` (a cluster stuck for capacity).
        self.new_pods_pending = False
        self.pending_message = DEFAULT_PENDING_MESSAGE
        self.fail_next_creates = 0  # the next N pod creations fail: ReplicaFailure condition
        self.pod_ip: Callable[[str, str, str], str] | None = None  # (namespace, cluster, pod) -> IP
        self.actions: list[Action] = []
        self.errors: list[BaseException] = []
        self._ips = IpPool()
        self._failures: dict[tuple[str, str], str] = {}
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    # ----- reconcile -----

    def reconcile_all(self) -> None:
        """Every RayCluster, then garbage collection of pods and services whose RayCluster is gone."""
        with self.store.lock:
            clusters = self.store.list_objects(self.rc_rt, None).items
            for rc in clusters:
                self.reconcile(rc.namespace, rc.name)
            self._collect_orphans({rc.obj["metadata"]["uid"] for rc in clusters})

    def reconcile(self, namespace: str, name: str) -> None:
        with self.store.lock:
            rc = self.store.find(self.rc_rt, namespace, name)
            if rc is None:
                live = {s.obj["metadata"]["uid"] for s in self.store.list_objects(self.rc_rt, None).items}
                self._collect_orphans(live)
                return
            spec = rc.obj.get("spec") or {}
            if spec.get("managedBy", OPERATOR_MANAGER) != OPERATOR_MANAGER:
                return  # e.g. MultiKueue owns it; the real operator skips the object
            self._failures.pop((namespace, name), None)
            if spec.get("suspend"):
                for pod in self._pods(namespace, name):
                    self._delete_pod(pod, "suspend")
            else:
                self._ensure_head(rc)
                if self.store.find(self.svc_rt, namespace, service_name(rc)) is None:
                    self.store.create(self.svc_rt, namespace, build_head_service(rc))
                for group in spec.get("workerGroupSpecs") or []:
                    self._reconcile_group(rc, group)
            self._write_status(rc)

    def _reconcile_group(self, rc: Stored, group: dict[str, Any]) -> None:
        name = group["groupName"]
        pods = [
            p
            for p in self._pods(rc.namespace, rc.name)
            if label(p, "ray.io/node-type") == "worker" and label(p, "ray.io/group") == name
        ]
        if group.get("suspend"):
            for pod in pods:
                self._delete_pod(pod, "suspend")
            return
        unhealthy = [p for p in pods if (p.obj.get("status") or {}).get("phase") in ("Failed", "Succeeded")]
        if unhealthy:
            for pod in unhealthy:
                self._delete_pod(pod, "unhealthy")
            return  # the real operator requeues: no creation in the same pass
        hosts = int(group.get("numOfHosts", 1))
        if hosts > 1:
            named = set((group.get("scaleStrategy") or {}).get("workersToDelete") or [])
            self._reconcile_multi_host(rc, group, pods, named, hosts)
            return
        # Like KubeRay, delete each named pod by name in the namespace without checking that it belongs to
        # this cluster or group: naming someone else's pod deletes it.
        deleted: set[str] = set()
        for pod_name in (group.get("scaleStrategy") or {}).get("workersToDelete") or []:
            target = self.store.find(self.pod_rt, rc.namespace, pod_name)
            if target is not None and pod_name not in deleted:
                self._delete_pod(target, "workersToDelete")
                deleted.add(pod_name)
        remaining = [p for p in pods if p.name not in deleted]
        diff = desired_worker_pods(group) - len(remaining)
        for _ in range(diff):
            self._create_worker(rc, group)
        if diff < 0 and self._random_delete_allowed(rc):
            for pod in remaining[:-diff]:
                self._delete_pod(pod, "scale-down")

    def _reconcile_multi_host(
        self, rc: Stored, group: dict[str, Any], pods: list[Stored], named: set[str], hosts: int
    ) -> None:
        """A replica is an atomic set of `numOfHosts` pods: naming one pod deletes its whole replica."""
        replicas: dict[str, list[Stored]] = {}
        for pod in pods:
            replicas.setdefault(label(pod, "ray.io/worker-group-replica-name"), []).append(pod)
        kept: list[str] = []
        for replica, members in sorted(replicas.items()):
            if any(p.name in named for p in members):
                reason = "workersToDelete"
            elif len(members) != hosts:
                reason = "incomplete"
            else:
                kept.append(replica)
                continue
            for pod in members:
                self._delete_pod(pod, reason)
        diff = desired_replicas(group) - len(kept)
        used = {int(label(replicas[r][0], "ray.io/worker-group-replica-index") or 0) for r in kept}
        for _ in range(diff):
            index = next(i for i in range(len(used) + 1) if i not in used)
            used.add(index)
            replica = f"{rc.name}-{group['groupName']}-{random_suffix()}"
            for host in range(hosts):
                self._create_worker(rc, group, (replica, index, host))
        if diff < 0 and self._random_delete_allowed(rc):
            for replica in kept[:-diff]:
                for pod in replicas[replica]:
                    self._delete_pod(pod, "scale-down")

    def _random_delete_allowed(self, rc: Stored) -> bool:
        in_tree = bool((rc.obj.get("spec") or {}).get("enableInTreeAutoscaling"))
        return not in_tree or self.random_pod_delete

    # ----- pods -----

    def _pods(self, namespace: str, cluster: str) -> list[Stored]:
        selector = parse_label_selector(f"ray.io/cluster={cluster}")
        return self.store.list_objects(self.pod_rt, namespace, selector).items

    def _ensure_head(self, rc: Stored) -> None:
        heads = [p for p in self._pods(rc.namespace, rc.name) if label(p, "ray.io/node-type") == "head"]
        if heads and (heads[0].obj.get("status") or {}).get("phase") in ("Failed", "Succeeded"):
            self._delete_pod(heads[0], "unhealthy")
            heads = []
        if not heads:
            if self.deterministic_head_name:
                self._create_pod(rc, None, f"{rc.name}-head", "head")
            else:
                self._create_pod(rc, None, name_prefix(f"{rc.name}-head-") + random_suffix(), "head")
        for extra in heads[1:]:
            self._delete_pod(extra, "head")

    def _create_worker(self, rc: Stored, group: dict[str, Any], replica: ReplicaSlot | None = None) -> None:
        base = name_prefix(f"{rc.name}-{group['groupName']}-worker-")
        existing = {p.name for p in self._pods(rc.namespace, rc.name)}
        name = base + random_suffix()
        while name in existing:
            name = base + random_suffix()
        self._create_pod(rc, group, name, "scale-up", replica)

    def _create_pod(
        self,
        rc: Stored,
        group: dict[str, Any] | None,
        name: str,
        reason: str,
        replica: ReplicaSlot | None = None,
    ) -> None:
        group_name = "headgroup" if group is None else str(group["groupName"])
        if self.fail_next_creates > 0:
            self.fail_next_creates -= 1
            kind = "FailedCreateHeadPod" if group is None else "FailedCreateWorkerPod"
            self._failures[(rc.namespace, rc.name)] = kind
            return
        pending = self.new_pods_pending
        ip = None if pending else self._take_ip(rc.namespace, rc.name, name)
        pod = build_pod(
            rc, group, name, ip=ip, pending_message=self.pending_message if pending else None, replica=replica
        )
        self.store.create(self.pod_rt, rc.namespace, pod, keep_status=True)
        self.actions.append(Action("create", rc.namespace, name, group_name, reason))

    def _take_ip(self, namespace: str, cluster: str, pod: str) -> str:
        return self.pod_ip(namespace, cluster, pod) if self.pod_ip else self._ips.take()

    def _delete_pod(self, pod: Stored, reason: str) -> None:
        try:
            self.store.delete(self.pod_rt, pod.namespace, pod.name)
        except ApiError as err:
            if err.code != 404:  # NotFound is ignored, as in the real operator
                raise
            return
        if not self.pod_ip:
            self._ips.give((pod.obj.get("status") or {}).get("podIP"))
        self.actions.append(Action("delete", pod.namespace, pod.name, label(pod, "ray.io/group"), reason))

    def _collect_orphans(self, live_uids: set[str]) -> None:
        """Garbage collection by owner reference, as the cluster's garbage collector does."""
        for rt in (self.pod_rt, self.svc_rt):
            for obj in self.store.list_objects(rt, None).items:
                owners = obj.obj["metadata"].get("ownerReferences") or []
                uids = [o.get("uid") for o in owners if o.get("kind") == "RayCluster"]
                if uids and not any(u in live_uids for u in uids):
                    if rt is self.pod_rt:
                        self._delete_pod(obj, "orphan")
                    else:
                        self.store.delete(rt, obj.namespace, obj.name)

    # ----- status -----

    def _write_status(self, rc: Stored) -> None:
        spec = rc.obj["spec"]
        old: dict[str, Any] = rc.obj.get("status") or {}
        pods = self._pods(rc.namespace, rc.name)
        workers = [p for p in pods if label(p, "ray.io/node-type") == "worker"]
        heads = [p for p in pods if label(p, "ray.io/node-type") == "head"]
        groups = spec.get("workerGroupSpecs") or []
        suspended = bool(spec.get("suspend"))
        desired = 0 if suspended else sum(desired_worker_pods(g) for g in groups)

        def total(key: str, default: int) -> int:
            return min(INT32_MAX, sum(int(g.get(key, default)) * int(g.get("numOfHosts", 1)) for g in groups))

        status: dict[str, Any] = {
            "readyWorkerReplicas": sum(1 for p in workers if is_running(p) and is_ready(p)),
            "availableWorkerReplicas": sum(1 for p in workers if is_running(p)),
            "desiredWorkerReplicas": desired,
            "minWorkerReplicas": total("minReplicas", 0),
            "maxWorkerReplicas": total("maxReplicas", INT32_MAX),
            "observedGeneration": rc.obj["metadata"].get("generation", 1),
            **desired_resources(spec, suspended),
        }
        if not suspended:
            status["endpoints"] = {n: str(p) for n, p in sorted(head_ports(rc).items())}
        head_status: dict[str, Any] = {"serviceName": service_name(rc)}
        if heads:
            head_status["podName"] = heads[0].name
            ip = (heads[0].obj.get("status") or {}).get("podIP")
            if ip:
                head_status["podIP"] = ip
                head_status["serviceIP"] = ip  # headless service: the head pod's IP
        status["head"] = head_status
        all_ready = (
            bool(heads) and all(is_running(p) and is_ready(p) for p in pods) and len(workers) == desired
        )
        conditions = self._conditions(rc, old, heads, suspended, all_ready)
        status["conditions"] = [conditions[k] for k in sorted(conditions)]
        if suspended:
            status["state"] = "suspended"
        elif all_ready:
            status["state"] = "ready"
        elif old.get("state"):
            status["state"] = old["state"]  # deprecated field: sticky, as in the real operator
        if {k: v for k, v in old.items() if k != "lastUpdateTime"} == status:
            return
        status["lastUpdateTime"] = now_rfc3339()
        self.store.write_status(self.rc_rt, rc.namespace, rc.name, status)

    def _conditions(
        self, rc: Stored, old: dict[str, Any], heads: list[Stored], suspended: bool, all_ready: bool
    ) -> dict[str, dict[str, Any]]:
        conditions = {c["type"]: c for c in old.get("conditions") or []}
        now = now_rfc3339()

        def cond(kind: str, value: bool, reason: str, message: str = "") -> None:
            prev = conditions.get(kind) or {}
            text = "True" if value else "False"
            conditions[kind] = {
                "type": kind,
                "status": text,
                "reason": reason,
                "message": message,
                "lastTransitionTime": prev["lastTransitionTime"] if prev.get("status") == text else now,
            }

        if heads:
            ready = pod_condition(heads[0], "Ready") or {}
            ok = is_running(heads[0]) and ready.get("status") == "True"
            reason = "HeadPodRunningAndReady" if ok else ready.get("reason") or "Unknown"
            cond("HeadPodReady", ok, reason, "" if ok else ready.get("message", ""))
        else:
            cond("HeadPodReady", False, "HeadPodNotFound", "Head Pod not found")
        provisioned = conditions.get("RayClusterProvisioned", {}).get("status") == "True"
        if suspended:
            cond("RayClusterProvisioned", False, "RayClusterPodsProvisioning", "RayCluster is suspended")
            cond("RayClusterSuspending", False, "RayClusterSuspending")
            cond("RayClusterSuspended", True, "RayClusterSuspended")
        else:
            if all_ready or provisioned:
                message = "All Ray Pods are ready for the first time"
                cond("RayClusterProvisioned", True, "AllPodRunningAndReadyFirstTime", message)
            else:
                message = "RayCluster Pods are being provisioned for first time"
                cond("RayClusterProvisioned", False, "RayClusterPodsProvisioning", message)
            if "RayClusterSuspended" in conditions:
                cond("RayClusterSuspended", False, "RayClusterSuspended")
        failure = self._failures.get((rc.namespace, rc.name))
        if failure:
            cond("ReplicaFailure", True, failure, "injected pod creation failure")
        else:
            conditions.pop("ReplicaFailure", None)
        return conditions

    # ----- test helpers -----

    def set_pod_phase(self, namespace: str, pod: str, phase: str, *, ready: bool | None = None) -> None:
        """Move a pod (e.g. a Pending one that got capacity) to another phase; Running gets an IP."""
        with self.store.lock:
            stored = self.store.get(self.pod_rt, namespace, pod)
            status = stored.copy().get("status") or {}
            status["phase"] = phase
            now_ready = phase == "Running" if ready is None else ready
            if phase == "Running" and not status.get("podIP"):
                ip = self._take_ip(namespace, label(stored, "ray.io/cluster"), pod)
                status["podIP"], status["podIPs"] = ip, [{"ip": ip}]
            status["conditions"] = pod_conditions(
                scheduled=phase != "Pending", ready=now_ready, message=self.pending_message
            )
            self.store.write_status(self.pod_rt, namespace, pod, status)

    def start(self, interval: float = 0.05) -> None:
        """Reconcile on every store change (at most every `interval` s) in a daemon thread, until `stop()`."""

        def loop() -> None:
            seen = -1
            while not self._stop.is_set():
                with self.store.changed:
                    if self.store.resource_version == seen:
                        self.store.changed.wait(interval)
                if self._stop.is_set():
                    break
                try:
                    self.reconcile_all()
                except Exception as exc:  # surfaced by the fixture's teardown, never swallowed
                    self.errors.append(exc)
                    self._stop.wait(interval)
                seen = self.store.resource_version

        self._thread = threading.Thread(target=loop, name="fake-kuberay-operator", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self.store.changed:
            self.store.changed.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)
