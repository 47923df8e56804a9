"""The objects the fake KubeRay operator writes, with KubeRay's names, labels, env and status arithmetic.

Kept apart from the reconcile loop so the rules rayops reads (ray-kuberay.md sections 2 and 6) are in one
place: pod names `<cluster>-<group>-worker-<5 chars>` (prefix cut to 50 characters), the seven KubeRay labels,
`RAY_CLOUD_INSTANCE_ID=<pod name>`, the headless head Service `<cluster>-head-svc`, and desired counts
`clamp(replicas, min, max) * numOfHosts`. Pod IPs are data only, from documentation ranges (RFC 5737, then RFC
3849 IPv6), never connected to.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

from tests.standins.kube_codec import Stored, now_rfc3339

INT32_MAX = 2147483647
OPERATOR_MANAGER = "ray.io/kuberay-operator"
HEAD_GROUP = "headgroup"
DEFAULT_PENDING_MESSAGE = (
    "0/3 nodes are available: 3 Insufficient cpu. preemption: 0/3 nodes are available: "
    "3 No preemption victims found for incoming pod."
)
DEFAULT_HEAD_PORTS = {"gcs-server": 6379, "dashboard": 8265, "client": 10001, "serve": 8000}
NODE_NAME = "standin-node-1"
HOST_IP = "192.0.2.254"

ReplicaSlot = tuple[str, int, int]
"""(replica name, replica index, host index) of a pod in a multi-host group."""


def desired_replicas(group: dict[str, Any]) -> int:
    """KubeRay's clamp: min > max gives max; missing or low replicas give min; high replicas give max."""
    lo, hi = int(group.get("minReplicas", 0)), int(group.get("maxReplicas", INT32_MAX))
    replicas = group.get("replicas")
    if lo > hi:
        return hi
    if replicas is None or int(replicas) < lo:
        return lo
    return min(int(replicas), hi)


def desired_worker_pods(group: dict[str, Any]) -> int:
    """Pods a group should have: clamp(replicas, min, max) * numOfHosts, or 0 when the group is suspended."""
    if group.get("suspend"):
        return 0
    return desired_replicas(group) * int(group.get("numOfHosts", 1))


class IpPool:
    """Unique fake pod IPs; addresses of deleted pods are reused before new ones are drawn."""

    def __init__(self) -> None:
        self._fresh = _doc_addresses()
        self._free: list[str] = []

    def take(self) -> str:
        return self._free.pop(0) if self._free else next(self._fresh)

    def give(self, ip: str | None) -> None:
        if ip:
            self._free.append(ip)


def _doc_addresses() -> Iterator[str]:
    for net in ("203.0.113.0/24", "198.51.100.0/24", "192.0.2.0/25"):
        for host in ipaddress.ip_network(net).hosts():
            yield str(host)
    for host in ipaddress.ip_network("2001:db8::/64").hosts():
        yield str(host)


# ----- reading pods -----


def label(obj: Stored, key: str) -> str:
    return str(((obj.obj.get("metadata") or {}).get("labels") or {}).get(key, ""))


def pod_condition(pod: Stored, kind: str) -> dict[str, Any] | None:
    for c in (pod.obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == kind:
            return dict(c)
    return None


def is_running(pod: Stored) -> bool:
    return (pod.obj.get("status") or {}).get("phase") == "Running"


def is_ready(pod: Stored) -> bool:
    c = pod_condition(pod, "Ready")
    return c is not None and c.get("status") == "True"


# ----- names, ports, service -----


def name_prefix(prefix: str) -> str:
    """KubeRay's CheckName on a generateName prefix: keep the last 50 characters, start alphanumeric."""
    if len(prefix) > 50:
        prefix = prefix[len(prefix) - 50 :]
        if not prefix[0].isalnum():
            prefix = "r" + prefix[1:]
    return prefix


def service_name(rc: Stored) -> str:
    head_service = (rc.obj["spec"].get("headGroupSpec") or {}).get("headService") or {}
    return str((head_service.get("metadata") or {}).get("name") or f"{rc.name}-head-svc")


def head_ports(rc: Stored) -> dict[str, int]:
    """The head container's named ports (KubeRay's defaults when it names none) plus `metrics: 8080`."""
    template = rc.obj["spec"]["headGroupSpec"].get("template") or {}
    containers = (template.get("spec") or {}).get("containers") or []
    ports: dict[str, int] = {}
    if containers:
        ports = {
            p["name"]: int(p["containerPort"]) for p in containers[0].get("ports") or [] if p.get("name")
        }
    if not ports:
        ports = dict(DEFAULT_HEAD_PORTS)
    ports.setdefault("metrics", 8080)
    return ports


def owner_reference(rc: Stored) -> dict[str, Any]:
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "name": rc.name,
        "uid": rc.obj["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def build_head_service(rc: Stored) -> dict[str, Any]:
    """Headless by default (`clusterIP: None`, `publishNotReadyAddresses`), selecting the head pod."""
    ident = {"ray.io/cluster": rc.name, "ray.io/node-type": "head", "ray.io/identifier": f"{rc.name}-head"}
    ports = [
        {"name": n, "port": p, "protocol": "TCP", "targetPort": p} for n, p in sorted(head_ports(rc).items())
    ]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": service_name(rc),
            "namespace": rc.namespace,
            "labels": {
                **ident,
                "app.kubernetes.io/name": "kuberay",
                "app.kubernetes.io/created-by": "kuberay-operator",
            },
            "ownerReferences": [owner_reference(rc)],
        },
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": ident,
            "ports": ports,
            "type": "ClusterIP",
        },
    }


# ----- pods -----


def build_pod(
    rc: Stored,
    group: dict[str, Any] | None,
    name: str,
    *,
    ip: str | None,
    pending_message: str | None,
    replica: ReplicaSlot | None = None,
) -> dict[str, Any]:
    """A head pod (`group` None) or worker pod; `pending_message` set makes it Pending and Unschedulable."""
    cluster, spec = rc.name, rc.obj["spec"]
    is_head = group is None
    template = (spec["headGroupSpec"] if group is None else group).get("template") or {}
    group_name = HEAD_GROUP if group is None else str(group["groupName"])
    tmeta = template.get("metadata") or {}
    labels = dict(tmeta.get("labels") or {})
    labels.update(
        {
            "ray.io/cluster": cluster,
            "ray.io/group": group_name,
            "ray.io/node-type": "head" if is_head else "worker",
            "ray.io/is-ray-node": "yes",
            "ray.io/identifier": f"{cluster}-{'head' if is_head else 'worker'}",
            "app.kubernetes.io/name": "kuberay",
            "app.kubernetes.io/created-by": "kuberay-operator",
        }
    )
    if replica is not None:
        labels["ray.io/worker-group-replica-name"] = replica[0]
        labels["ray.io/worker-group-replica-index"] = str(replica[1])
        labels["ray.io/replica-host-index"] = str(replica[2])
    pod_spec: dict[str, Any] = json.loads(json.dumps(template.get("spec") or {}))
    containers: list[dict[str, Any]] = pod_spec.setdefault("containers", [])
    if containers:
        containers[0].setdefault("env", []).extend(
            [
                {"name": "RAY_CLOUD_INSTANCE_ID", "value": name},
                {"name": "RAY_NODE_TYPE_NAME", "value": group_name},
            ]
        )
    if is_head and spec.get("enableInTreeAutoscaling"):
        containers.append(_autoscaler_container(rc, containers))
    if pending_message is None:
        pod_spec["nodeName"] = NODE_NAME
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": rc.namespace,
            "labels": labels,
            "annotations": dict(tmeta.get("annotations") or {}),
            "ownerReferences": [owner_reference(rc)],
        },
        "spec": pod_spec,
        "status": pod_status(containers, ip, pending_message),
    }


def _autoscaler_container(rc: Stored, containers: list[dict[str, Any]]) -> dict[str, Any]:
    """The sidecar rayops looks for to detect in-tree autoscaling (ray-kuberay.md section 1.3)."""
    options = rc.obj["spec"].get("autoscalerOptions") or {}
    image = containers[0].get("image", "rayproject/ray") if containers else "rayproject/ray"
    default_resources = {"cpu": "500m", "memory": "512Mi"}
    return {
        "name": "autoscaler",
        "image": options.get("image", image),
        "command": ["/bin/bash", "-lc", "--"],
        "args": [f"ray kuberay-autoscaler --cluster-name {rc.name} --cluster-namespace {rc.namespace}"],
        "resources": options.get("resources") or {"limits": default_resources, "requests": default_resources},
    }


def pod_conditions(*, scheduled: bool, ready: bool, message: str) -> list[dict[str, Any]]:
    now = now_rfc3339()
    if not scheduled:
        return [
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": message,
                "lastProbeTime": None,
                "lastTransitionTime": now,
            }
        ]
    flag = "True" if ready else "False"
    ready_cond: dict[str, Any] = {
        "type": "Ready",
        "status": flag,
        "lastProbeTime": None,
        "lastTransitionTime": now,
    }
    if not ready:
        ready_cond["reason"] = "ContainersNotReady"
    return [
        {
            "type": "PodReadyToStartContainers",
            "status": "True",
            "lastProbeTime": None,
            "lastTransitionTime": now,
        },
        {"type": "Initialized", "status": "True", "lastProbeTime": None, "lastTransitionTime": now},
        ready_cond,
        {"type": "ContainersReady", "status": flag, "lastProbeTime": None, "lastTransitionTime": now},
        {"type": "PodScheduled", "status": "True", "lastProbeTime": None, "lastTransitionTime": now},
    ]


def pod_status(
    containers: list[dict[str, Any]], ip: str | None, pending_message: str | None
) -> dict[str, Any]:
    if pending_message is not None:
        return {
            "phase": "Pending",
            "conditions": pod_conditions(scheduled=False, ready=False, message=pending_message),
        }
    now = now_rfc3339()
    return {
        "phase": "Running",
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "hostIP": HOST_IP,
        "startTime": now,
        "conditions": pod_conditions(scheduled=True, ready=True, message=""),
        "containerStatuses": [
            {
                "name": c.get("name", ""),
                "image": c.get("image", ""),
                "imageID": "",
                "ready": True,
                "started": True,
                "restartCount": 0,
                "state": {"running": {"startedAt": now}},
            }
            for c in containers
        ],
    }


# ----- status.desiredCPU/Memory/GPU/TPU -----

_SUFFIXES = {
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal(10**3),
    "M": Decimal(10**6),
    "G": Decimal(10**9),
    "T": Decimal(10**12),
    "P": Decimal(10**15),
    "E": Decimal(10**18),
}
_QUANTITY = re.compile(r"^([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))([eE][+-]?[0-9]+|[KMGTPE]i|[numkMGTPE])?$")
_RESOURCE_BUCKETS = {"cpu": "cpu", "memory": "memory", "nvidia.com/gpu": "gpu", "google.com/tpu": "tpu"}


def parse_quantity(q: Any) -> Decimal:
    """A Kubernetes quantity ("500m", "2Gi", "1e3", 4) as an exact decimal."""
    match = _QUANTITY.match(str(q).strip())
    if match is None:
        raise ValueError(f"not a quantity: {q!r}")
    number, suffix = match.groups()
    if not suffix:
        return Decimal(number)
    if suffix[0] in "eE" and len(suffix) > 1:
        return Decimal(number + suffix)
    return Decimal(number) * _SUFFIXES[suffix]


def _format_count(v: Decimal) -> str:
    return str(int(v)) if v == v.to_integral_value() else f"{int(v * 1000)}m"


def _format_bytes(v: Decimal, binary: bool) -> str:
    """Largest exact unit: binary (Gi) when every input was binary, else decimal (G), as quantities print."""
    for suffix in ("Ti", "Gi", "Mi", "Ki") if binary else ("T", "G", "M", "k"):
        unit = _SUFFIXES[suffix]
        if v and v % unit == 0:
            return f"{int(v / unit)}{suffix}"
    return str(int(v))


def desired_resources(spec: dict[str, Any], suspended: bool) -> dict[str, str]:
    """Totals over the head and the desired workers; a container's limits win over its requests."""
    totals = {"cpu": Decimal(0), "memory": Decimal(0), "gpu": Decimal(0), "tpu": Decimal(0)}
    binary_memory = True
    if not suspended:
        sets = [(spec.get("headGroupSpec") or {}, 1)]
        sets += [(g, desired_worker_pods(g)) for g in spec.get("workerGroupSpecs") or []]
        for group, count in sets:
            for c in ((group.get("template") or {}).get("spec") or {}).get("containers") or []:
                res = c.get("resources") or {}
                for key, value in {**(res.get("requests") or {}), **(res.get("limits") or {})}.items():
                    bucket = _RESOURCE_BUCKETS.get(key)
                    if bucket:
                        totals[bucket] += parse_quantity(value) * count
                        binary_memory &= bucket != "memory" or str(value).endswith("i")
    return {
        "desiredCPU": _format_count(totals["cpu"]),
        "desiredMemory": _format_bytes(totals["memory"], binary_memory),
        "desiredGPU": _format_count(totals["gpu"]),
        "desiredTPU": _format_count(totals["tpu"]),
    }
