"""A cluster profile plus a request, rendered to a RayCluster (`ray.io/v1`): pure, no I/O.

The shape follows what the CodeFlare SDK makes on OpenShift AI (ray-kuberay.md section 11.1), so chat-made
and notebook-made clusters look alike: one head group with `dashboard-host: 0.0.0.0`, worker groups with
requests = limits, resources written as quantity strings. What rayops adds, and why:

- `num-cpus` / `num-gpus` / `resources` in `rayStartParams` for every group, so Ray's view of a worker
  (and the demand attribution in `controller.metrics.demand`) matches the pod, and a GPU group can scale
  from zero (kuberay #321, #863);
- `restartPolicy: Never` on workers: a worker whose Ray process died is replaced, not restarted into a
  half-joined node (ray-kuberay.md 0.7);
- `enableInTreeAutoscaling: false` (owner mode: rayops writes `replicas` and names the idle workers to
  remove) unless the profile's scaling policy is in bounds mode, where Ray's autoscaler picks the count;
- the data connection Secret as `envFrom` on every Ray container (S3 credentials for the job's data);
- the labels and annotations of contracts.md section 3, so the cluster is opted in from birth and the
  bot can say who asked for it, from which profile, until when.

A request outside the profile (too many workers, GPUs from a profile without a GPU group, a time-to-live
over the profile's maximum, a name Kubernetes would refuse) is an `InvalidProfile` before anything is
sent; whatever the API server still refuses (422 from the CRD schema) comes back as the same error.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from controller import keys
from controller.annotations import encode_time
from controller.backends.base import ClusterRequest, InvalidProfile
from controller.names import cluster_name_problem, namespace_problem
from controller.policy.durations import parse_duration
from controller.policy.model import ClusterProfile, NodeResources, WorkerGroupProfile

GPU_RESOURCE = "nvidia.com/gpu"
HEAD_PORTS = {"gcs-server": 6379, "dashboard": 8265, "client": 10001, "metrics": 8080, "dash-metrics": 44227}
AUTOSCALER_METRICS_PORT = {"as-metrics": 44217}  # only where Ray's autoscaler runs (bounds mode)

_SUFFIX = {
    "m": Decimal("0.001"),
    "k": Decimal(10**3),
    "M": Decimal(10**6),
    "G": Decimal(10**9),
    "T": Decimal(10**12),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
}
_QUANTITY = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(m|k|M|G|T|Ki|Mi|Gi|Ti)?\s*$")


def parse_quantity(value: Any) -> float | None:
    """A Kubernetes quantity ("500m", "2", 4, "8Gi") as a number, or None when it is not one."""
    match = _QUANTITY.match(str(value))
    if match is None:
        return None
    try:
        number = Decimal(match.group(1))
    except InvalidOperation:
        return None
    return float(number * _SUFFIX[match.group(2)]) if match.group(2) else float(number)


def _ray_cpus(cpu: str) -> str:
    """KubeRay's own rule for `num-cpus` from the limit (`Quantity.Value()`, which rounds up)."""
    return str(math.ceil(parse_quantity(cpu) or 0))


def _resources(node: NodeResources) -> dict[str, dict[str, str]]:
    amounts = {"cpu": node.cpu, "memory": node.memory}
    if node.gpu:
        amounts[GPU_RESOURCE] = str(node.gpu)
    return {"requests": dict(amounts), "limits": dict(amounts)}


def _container(
    name: str, image: str, node: NodeResources, data_connection: str | None, ports: Mapping[str, int]
) -> dict[str, Any]:
    container: dict[str, Any] = {"name": name, "image": image, "resources": _resources(node)}
    if ports:
        container["ports"] = [{"name": n, "containerPort": p, "protocol": "TCP"} for n, p in ports.items()]
    if data_connection:
        container["envFrom"] = [{"secretRef": {"name": data_connection}}]
    return container


def _worker_start_params(group: WorkerGroupProfile) -> dict[str, str]:
    params = {"num-cpus": _ray_cpus(group.cpu)}
    if group.gpu:
        params["num-gpus"] = str(group.gpu)
    if group.ray_resources:
        # KubeRay passes the value to `ray start --resources` verbatim, so it carries its own quotes.
        amounts = {k: int(v) if float(v).is_integer() else v for k, v in group.ray_resources.items()}
        params["resources"] = json.dumps(json.dumps(amounts, sort_keys=True))
    return params


def requested_workers(profile: ClusterProfile, request: ClusterRequest) -> dict[str, int]:
    """Initial replicas per group: the profile's defaults, `workers` for the CPU group, `gpus` for the
    GPU group; InvalidProfile when outside a group's [minWorkers, maxWorkers]."""
    spec = profile.spec
    cpu_group, gpu_group = spec.cpu_group, spec.gpu_group
    if request.gpus and gpu_group is None:
        raise InvalidProfile(f"profile {profile.name} has no GPU worker group: nothing was created")
    if request.workers and cpu_group is None:
        raise InvalidProfile(f"profile {profile.name} has no CPU worker group: nothing was created")
    wanted: dict[str, int] = {}
    for g in spec.worker_groups:
        count = g.default_workers
        if g is cpu_group and request.workers is not None:
            count = request.workers
        if g is gpu_group and request.gpus is not None:
            count = request.gpus
        if not g.min_workers <= count <= g.max_workers:
            raise InvalidProfile(
                f"group {g.name} of profile {profile.name} takes {g.min_workers} to {g.max_workers} "
                f"workers (asked for {count}): nothing was created"
            )
        wanted[g.name] = count
    return wanted


def time_to_live(profile: ClusterProfile, request: ClusterRequest) -> timedelta:
    spec = profile.spec
    ttl = (
        timedelta(seconds=request.ttl_seconds)
        if request.ttl_seconds is not None
        else parse_duration(spec.default_ttl)
    )
    if ttl <= timedelta(0) or ttl > parse_duration(spec.max_ttl):
        raise InvalidProfile(
            f"a time-to-live must be above 0 and at most {spec.max_ttl} for profile {profile.name}: "
            "nothing was created"
        )
    return ttl


def render_raycluster(
    profile: ClusterProfile, request: ClusterRequest, now: datetime, bounds_mode: bool = False
) -> dict[str, Any]:
    """The RayCluster to create for `request` from `profile` at `now`; `bounds_mode` when the profile's
    scaling policy lets Ray's in-tree autoscaler pick the count (rayops then writes bounds only)."""
    problem = cluster_name_problem(request.name) or namespace_problem(request.namespace)
    if problem:
        raise InvalidProfile(f"{problem}: nothing was created")
    if profile.name != request.profile:
        raise InvalidProfile(f"asked for profile {request.profile} but was given {profile.name}")
    spec = profile.spec
    wanted = requested_workers(profile, request)
    expires = now + time_to_live(profile, request)
    head_ports = dict(HEAD_PORTS) | (AUTOSCALER_METRICS_PORT if bounds_mode else {})
    head_params = {"dashboard-host": "0.0.0.0", "num-cpus": _ray_cpus(spec.head.cpu)}
    if spec.head.gpu:
        head_params["num-gpus"] = str(spec.head.gpu)
    annotations = {
        **request.annotations,
        keys.ANN_REQUESTER: request.requester,
        keys.ANN_PROFILE: profile.name,
        keys.ANN_EXPIRES_AT: encode_time(expires),
    }
    if spec.scaling_policy:
        annotations[keys.ANN_POLICY] = spec.scaling_policy
    workers = [
        {
            "groupName": g.name,
            "replicas": wanted[g.name],
            "minReplicas": g.min_workers,
            "maxReplicas": g.max_workers,
            "rayStartParams": _worker_start_params(g),
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [_container("ray-worker", spec.ray_image, g, spec.data_connection, {})],
                }
            },
        }
        for g in spec.worker_groups
    ]
    body: dict[str, Any] = {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {
            "name": request.name,
            "namespace": request.namespace,
            "labels": {**request.labels, keys.LABEL_MANAGED_BY: keys.MANAGED_BY_VALUE},
            "annotations": annotations,
        },
        "spec": {
            "rayVersion": spec.ray_version,
            "enableInTreeAutoscaling": bounds_mode,
            "headGroupSpec": {
                "enableIngress": spec.enable_ingress,
                "rayStartParams": head_params,
                "template": {
                    "spec": {
                        "containers": [
                            _container(
                                "ray-head", spec.ray_image, spec.head, spec.data_connection, head_ports
                            )
                        ]
                    }
                },
            },
            "workerGroupSpecs": workers,
        },
    }
    if bounds_mode:
        body["spec"]["autoscalerOptions"] = {"upscalingMode": "Default", "idleTimeoutSeconds": 60}
    return body
