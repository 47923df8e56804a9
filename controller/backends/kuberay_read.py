"""Reading a RayCluster and its pods into rayops' values: pure functions, no I/O.

Status is aggregated over all groups in the RayCluster's `status`, so everything per group (ready and
desired workers, which pods exist, which are stuck) comes from the pods, matched by the labels KubeRay
puts on them (`ray.io/cluster`, `ray.io/group`, `ray.io/node-type`; ray-kuberay.md sections 2 and 6).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from controller import keys
from controller.annotations import decode_decision, decode_pin, decode_time
from controller.backends.base import (
    ClusterState,
    ClusterStatus,
    ConnectInfo,
    GroupStatus,
    ManagedCluster,
    ManagedGroup,
    attach_activity,
)
from controller.backends.render import GPU_RESOURCE, parse_quantity
from controller.domain import Activity, ClusterRef, GroupRef, Worker
from controller.metrics.base import ClusterActivity

JSON = dict[str, Any]
INT32_MAX = 2147483647
DASHBOARD_PORT, CLIENT_PORT = 8265, 10001
AUTOSCALER_CONTAINER = "autoscaler"
IMAGE_PULL_REASONS = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"})
CONTAINER_CONFIG_REASONS = frozenset({"CreateContainerConfigError", "CreateContainerError"})
MAX_CAUSES = 3


def _meta(obj: Mapping[str, Any]) -> JSON:
    return dict(obj.get("metadata") or {})


def _labels(obj: Mapping[str, Any]) -> dict[str, str]:
    return dict(_meta(obj).get("labels") or {})


def ref_of(rc: Mapping[str, Any]) -> ClusterRef:
    meta = _meta(rc)
    return ClusterRef(str(meta.get("namespace", "")), str(meta.get("name", "")))


def parse_time(text: Any) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def worker_groups(rc: Mapping[str, Any]) -> list[JSON]:
    return list((rc.get("spec") or {}).get("workerGroupSpecs") or [])


def workers_to_delete(group: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple((group.get("scaleStrategy") or {}).get("workersToDelete") or ())


def desired_pods(rc: Mapping[str, Any], group: Mapping[str, Any]) -> int:
    """The operator's arithmetic: clamp(replicas, min, max) * numOfHosts, 0 when suspended."""
    if (rc.get("spec") or {}).get("suspend") or group.get("suspend"):
        return 0
    lo, hi = int(group.get("minReplicas", 0)), int(group.get("maxReplicas", INT32_MAX))
    replicas = group.get("replicas")
    count = hi if lo > hi else min(max(lo if replicas is None else int(replicas), lo), hi)
    return count * int(group.get("numOfHosts", 1))


def head_service(rc: Mapping[str, Any]) -> str:
    head = (rc.get("spec") or {}).get("headGroupSpec") or {}
    named = ((head.get("headService") or {}).get("metadata") or {}).get("name")
    return str(named or f"{ref_of(rc).name}-head-svc")


def in_cluster_dashboard(rc: Mapping[str, Any]) -> str:
    ref = ref_of(rc)
    return f"http://{head_service(rc)}.{ref.namespace}.svc.cluster.local:{DASHBOARD_PORT}"


def pods_of(pods: Sequence[JSON], node_type: str, group: str | None = None) -> list[JSON]:
    return [
        p
        for p in pods
        if _labels(p).get(keys.LABEL_RAY_NODE_TYPE) == node_type
        and (group is None or _labels(p).get(keys.LABEL_RAY_GROUP) == group)
    ]


def _condition(obj: Mapping[str, Any], kind: str) -> JSON | None:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == kind:
            return dict(c)
    return None


def pod_ready(pod: Mapping[str, Any]) -> bool:
    """Running, Ready, and not on its way out."""
    status = pod.get("status") or {}
    ready = _condition(pod, "Ready")
    return (
        status.get("phase") == "Running"
        and ready is not None
        and ready.get("status") == "True"
        and not _meta(pod).get("deletionTimestamp")
    )


def in_tree_autoscaling(rc: Mapping[str, Any], pods: Sequence[JSON]) -> bool:
    """Ray's autoscaler writes `replicas` too: the flag, or its sidecar in a head pod (ray-kuberay.md 4)."""
    if (rc.get("spec") or {}).get("enableInTreeAutoscaling"):
        return True
    return any(
        c.get("name") == AUTOSCALER_CONTAINER
        for p in pods_of(pods, "head")
        for c in (p.get("spec") or {}).get("containers") or []
    )


def group_resources(group: Mapping[str, Any]) -> dict[str, float]:
    """What one worker gives Ray: `rayStartParams` first (what Ray is told), else the container limits."""
    params: Mapping[str, Any] = group.get("rayStartParams") or {}
    containers = ((group.get("template") or {}).get("spec") or {}).get("containers") or []
    limits: Mapping[str, Any] = {}
    if containers:
        res = containers[0].get("resources") or {}
        limits = {**(res.get("requests") or {}), **(res.get("limits") or {})}
    out: dict[str, float] = {}
    cpus = parse_quantity(params["num-cpus"]) if "num-cpus" in params else parse_quantity(limits.get("cpu"))
    if cpus is not None:
        out["CPU"] = cpus
    gpus = parse_quantity(params.get("num-gpus", limits.get(GPU_RESOURCE, "")))
    if gpus:
        out["GPU"] = gpus
    out.update(_custom_resources(params.get("resources")))
    return out


def _custom_resources(text: Any) -> dict[str, float]:
    """`rayStartParams.resources`, which KubeRay passes to `ray start` verbatim: a quoted JSON map."""
    if not isinstance(text, str) or not text.strip():
        return {}
    value: Any = text.strip()
    for _ in range(2):  # '"{\"accel\": 2}"' decodes to a string, then to the map
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                return {}
    if not isinstance(value, dict):
        return {}
    return {str(k): float(v) for k, v in value.items() if isinstance(v, int | float)}


def worker_of(pod: Mapping[str, Any]) -> Worker:
    status = pod.get("status") or {}
    return Worker(
        name=str(_meta(pod).get("name", "")),
        ready=pod_ready(pod),
        ip=status.get("podIP") or None,
        started_at=parse_time(status.get("startTime")),
    )


def _never_started(pod: Mapping[str, Any]) -> bool:
    """A Pending pod none of whose containers ever ran holds no Ray node, so it runs nothing: idle for
    certain, whatever the dashboard says (it cannot know the pod). This is what lets a group stuck on
    unschedulable pods shrink."""
    status = pod.get("status") or {}
    if status.get("phase") != "Pending":
        return False
    states = [cs.get("state") or {} for cs in status.get("containerStatuses") or []]
    return not any(st.get("running") or st.get("terminated") for st in states)


def managed_cluster(
    rc: Mapping[str, Any], pods: Sequence[JSON], activity: ClusterActivity | None
) -> ManagedCluster:
    """The controller's view; workers carry activity (UNKNOWN, i.e. busy, without proof of idleness;
    IDLE for pods that never started).

    Groups keep the spec's order: `apply` patches by that index, guarded by a `test` on `groupName`.
    """
    ref = ref_of(rc)
    meta = _meta(rc)
    labels = _labels(rc)
    nodes = activity.nodes if activity is not None and activity.unavailable is None else ()
    groups = []
    for g in worker_groups(rc):
        name = str(g.get("groupName", ""))
        group_pods = pods_of(pods, "worker", name)
        workers = attach_activity([worker_of(p) for p in group_pods], nodes)
        never_started = {str(_meta(p).get("name")) for p in group_pods if _never_started(p)}
        workers = tuple(
            dataclasses.replace(w, activity=Activity.IDLE) if w.name in never_started else w for w in workers
        )
        groups.append(
            ManagedGroup(
                ref=GroupRef(ref.namespace, ref.name, name),
                replicas=int(g.get("replicas", 0)),
                min_replicas=int(g.get("minReplicas", 0)),
                max_replicas=int(g.get("maxReplicas", INT32_MAX)),
                ready=sum(1 for w in workers if w.ready),
                workers=workers,
                pending_deletes=workers_to_delete(g),
                worker_resources=group_resources(g) or {"CPU": 1.0},
                num_of_hosts=int(g.get("numOfHosts", 1)),
            )
        )
    return ManagedCluster(
        ref=ref,
        groups=tuple(groups),
        labels=labels,
        annotations=dict(meta.get("annotations") or {}),
        in_tree_autoscaling=in_tree_autoscaling(rc, pods),
        kueue_queue=labels.get(keys.LABEL_KUEUE_QUEUE),
        dashboard_url=in_cluster_dashboard(rc),
        head_ready=head_ready(rc, pods),
        created_at=parse_time(meta.get("creationTimestamp")),
        version=str(meta.get("resourceVersion", "")) or None,
    )


def head_ready(rc: Mapping[str, Any], pods: Sequence[JSON]) -> bool:
    cond = _condition(rc, "HeadPodReady")
    if cond is not None:
        return cond.get("status") == "True"
    return any(pod_ready(p) for p in pods_of(pods, "head"))


# --- the people's view ------------------------------------------------------------------------


def cluster_state(rc: Mapping[str, Any]) -> ClusterState:
    """CodeFlare SDK's mapping of the (deprecated but still written) `state`, with conditions first."""
    spec, status = rc.get("spec") or {}, rc.get("status") or {}
    suspended = (_condition(rc, "RayClusterSuspended") or {}).get("status") == "True"
    if spec.get("suspend") or suspended or status.get("state") == "suspended":
        return ClusterState.QUEUED if _labels(rc).get(keys.LABEL_KUEUE_QUEUE) else ClusterState.SUSPENDED
    state = str(status.get("state") or "")
    if state in ("failed", "unhealthy"):
        return ClusterState.FAILED
    if state == "ready":
        return ClusterState.READY
    return ClusterState.STARTING


def stuck_cause(rc: Mapping[str, Any], pods: Sequence[JSON]) -> str | None:
    """Why the cluster is not getting the pods it asks for, in the words of whoever refused them."""
    causes: dict[str, list[str]] = {}
    labels = _labels(rc)
    queue = labels.get(keys.LABEL_KUEUE_QUEUE)
    if queue and (rc.get("spec") or {}).get("suspend"):
        causes.setdefault(f"waiting in Kueue queue {queue} for admission", [])
    failure = _condition(rc, "ReplicaFailure")
    if failure is not None and failure.get("status") == "True":
        message = str(failure.get("message") or failure.get("reason") or "")
        kind = (
            "quota refused the pods" if "exceeded quota" in message else "the operator could not create pods"
        )
        causes.setdefault(f"{kind}: {message}", [])
    for pod in pods:
        name = str(_meta(pod).get("name", ""))
        for cause in _pod_causes(pod):
            causes.setdefault(cause, []).append(name)
    if not causes:
        return None
    parts = []
    for cause, names in list(causes.items())[:MAX_CAUSES]:
        if not names:
            parts.append(cause)
        elif len(names) == 1:
            parts.append(f"pod {names[0]}: {cause}")
        else:
            parts.append(f"{len(names)} pods (e.g. {names[0]}): {cause}")
    return "; ".join(parts)


def _pod_causes(pod: Mapping[str, Any]) -> list[str]:
    status = pod.get("status") or {}
    out = []
    scheduled = _condition(pod, "PodScheduled")
    if status.get("phase") == "Pending" and scheduled is not None and scheduled.get("status") == "False":
        reason = scheduled.get("reason") or "not scheduled"
        out.append(f"Pending, {str(reason).lower()}: {scheduled.get('message', '')}".rstrip(": "))
    for cs in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
        waiting = (cs.get("state") or {}).get("waiting") or {}
        reason = str(waiting.get("reason") or "")
        message = str(waiting.get("message") or "")
        if reason in IMAGE_PULL_REASONS:
            out.append(f"image pull failed ({reason}) for {cs.get('image', '')}: {message}".rstrip(": "))
        elif reason in CONTAINER_CONFIG_REASONS:
            out.append(f"container {cs.get('name', '')} cannot start ({reason}): {message}".rstrip(": "))
        elif reason == "CrashLoopBackOff":
            out.append(f"container {cs.get('name', '')} keeps crashing ({reason})")
    return out


def connect_info(rc: Mapping[str, Any], routes: Sequence[JSON] | None) -> ConnectInfo:
    """The Ray client address (always the head Service: Routes carry HTTP only) and the dashboard and
    job-submission URL: an OpenShift Route to the head when there is one, else the Service."""
    ref = ref_of(rc)
    host = f"{head_service(rc)}.{ref.namespace}.svc"
    dashboard = _route_url(rc, routes or ()) or f"http://{host}:{DASHBOARD_PORT}"
    return ConnectInfo(f"ray://{host}:{CLIENT_PORT}", dashboard, dashboard)


def _route_url(rc: Mapping[str, Any], routes: Sequence[JSON]) -> str | None:
    """KubeRay's `<cluster>-head-route`, CodeFlare's `ray-dashboard-<cluster>`, or any Route to the head
    Service's dashboard."""
    name = ref_of(rc).name
    wanted = (f"{name}-head-route", f"ray-dashboard-{name}")
    for route in sorted(routes, key=lambda r: str(_meta(r).get("name")) not in wanted):
        spec = route.get("spec") or {}
        to = (spec.get("to") or {}).get("name")
        if str(_meta(route).get("name")) not in wanted and to != head_service(rc):
            continue
        if not spec.get("host"):
            continue
        scheme = "https" if spec.get("tls") else "http"
        return f"{scheme}://{spec['host']}{spec.get('path') or ''}".rstrip("/")
    return None


def cluster_status(
    rc: Mapping[str, Any], pods: Sequence[JSON], routes: Sequence[JSON] | None
) -> ClusterStatus:
    meta = _meta(rc)
    ann: dict[str, str] = dict(meta.get("annotations") or {})
    groups = []
    for g in worker_groups(rc):
        name = str(g.get("groupName", ""))
        groups.append(
            GroupStatus(
                name=name,
                ready=sum(1 for p in pods_of(pods, "worker", name) if pod_ready(p)),
                desired=desired_pods(rc, g),
                min_replicas=int(g.get("minReplicas", 0)),
                max_replicas=int(g.get("maxReplicas", INT32_MAX)),
                resources=group_resources(g),
            )
        )
    conditions = {
        str(c.get("type")): str(c.get("status"))
        for c in (rc.get("status") or {}).get("conditions") or []
        if c.get("type")
    }
    return ClusterStatus(
        ref=ref_of(rc),
        state=cluster_state(rc),
        groups=tuple(groups),
        requester=ann.get(keys.ANN_REQUESTER),
        profile=ann.get(keys.ANN_PROFILE),
        policy=ann.get(keys.ANN_POLICY),
        created_at=parse_time(meta.get("creationTimestamp")),
        expires_at=decode_time(ann.get(keys.ANN_EXPIRES_AT)),
        paused=ann.get(keys.ANN_PAUSED) == "true",
        pin=decode_pin(ann.get(keys.ANN_MANUAL_REPLICAS)),
        stuck_cause=stuck_cause(rc, pods),
        conditions=conditions,
        connect=connect_info(rc, routes),
        last_decision=decode_decision(ann.get(keys.ANN_DECISION)),
        managed=keys.is_opted_in(_labels(rc)),
        annotations=ann,
        labels=_labels(rc),
    )
