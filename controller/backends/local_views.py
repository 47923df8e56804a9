"""Local clusters as values: a request planned into a record, a record shown as status or as the
controller's view. Pure functions of the record (plus process liveness), so every process that reads
the state directory shows the same cluster the same way.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path

from controller import keys, localray
from controller.annotations import decode_decision, decode_pin, decode_time, encode_time
from controller.backends.base import (
    ClusterRequest,
    ClusterState,
    ClusterStatus,
    ConnectInfo,
    GroupStatus,
    InvalidProfile,
    ManagedCluster,
    ManagedGroup,
    attach_activity,
)
from controller.backends.local_state import ClusterPhase, ClusterRecord, GroupRecord, WorkerPhase
from controller.domain import Activity, ClusterRef, GroupRef, NodeActivity, Worker
from controller.policy.durations import parse_duration
from controller.policy.model import ClusterProfile, WorkerGroupProfile

__all__ = ["LOST_SHOWN_FOR", "cluster_status", "managed_view", "plan_record", "whole_cpus"]

LOST_SHOWN_FOR = timedelta(minutes=10)  # how long status mentions a worker that died on its own


def whole_cpus(profile: str, what: str, cpu: str) -> int:
    """A profile's CPU quantity as `ray start --num-cpus` takes it: whole CPUs only."""
    try:
        value = float(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu)
    except ValueError:
        value = -1.0
    if value < 0 or value != int(value):
        raise InvalidProfile(
            f"{what} of {profile} asks for cpu {cpu}; local Ray nodes take whole CPUs (e.g. 1 or 2): "
            "nothing was created"
        )
    return int(value)


def plan_record(
    request: ClusterRequest, profiles: Mapping[str, ClusterProfile], now: datetime, head_cpus: int
) -> ClusterRecord:
    """The record a request makes, validated against its profile (InvalidProfile otherwise)."""
    profile = profiles.get(request.profile)
    if profile is None:
        known = ", ".join(sorted(profiles)) or "none"
        raise InvalidProfile(f"no profile named {request.profile} (profiles: {known})")
    spec = profile.spec
    ttl = (
        timedelta(seconds=request.ttl_seconds)
        if request.ttl_seconds is not None
        else parse_duration(spec.default_ttl)
    )
    if ttl <= timedelta(0) or ttl > parse_duration(spec.max_ttl):
        raise InvalidProfile(f"time-to-live must be above 0 and at most {spec.max_ttl} for {profile.name}")
    cpu_group, gpu_group = spec.cpu_group, spec.gpu_group
    if request.gpus and gpu_group is None:
        raise InvalidProfile(f"profile {profile.name} has no GPU worker group")
    groups = [
        _plan_group(profile.name, g, request, g is cpu_group, g is gpu_group) for g in spec.worker_groups
    ]
    annotations = {
        **request.annotations,
        keys.ANN_REQUESTER: request.requester,
        keys.ANN_PROFILE: profile.name,
        keys.ANN_EXPIRES_AT: encode_time(now + ttl),
    }
    if spec.scaling_policy:
        annotations[keys.ANN_POLICY] = spec.scaling_policy
    return ClusterRecord(
        name=request.name,
        phase=ClusterPhase.CREATING,
        owner_pid=os.getpid(),
        head_temp_dir=Path(),
        groups=groups,
        labels={**request.labels, keys.LABEL_MANAGED_BY: keys.MANAGED_BY_VALUE},
        annotations=annotations,
        created_at=now,
        head_cpus=head_cpus,
    )


def _plan_group(
    profile: str, g: WorkerGroupProfile, request: ClusterRequest, is_cpu: bool, is_gpu: bool
) -> GroupRecord:
    wanted = g.default_workers
    if is_cpu and request.workers is not None:
        wanted = request.workers
    if is_gpu and request.gpus is not None:
        wanted = request.gpus
    if not g.min_workers <= wanted <= g.max_workers:
        raise InvalidProfile(
            f"group {g.name} of {profile} takes {g.min_workers} to {g.max_workers} workers "
            f"(asked for {wanted})"
        )
    return GroupRecord(
        name=g.name,
        replicas=wanted,
        min_replicas=g.min_workers,
        max_replicas=g.max_workers,
        num_cpus=whole_cpus(profile, f"group {g.name}", g.cpu),
        # A GPU-shaped group: Ray is told the node has GPUs, so GPU tasks and GPU policies run
        # on a laptop without one (the tasks must not actually touch a device).
        num_gpus=g.gpu,
        resources=dict(g.ray_resources),
    )


def cluster_status(rec: ClusterRecord, now: datetime) -> ClusterStatus:
    """What people see of a local cluster; process liveness is checked now, so it is never stale."""
    ann = rec.annotations
    ref = ClusterRef(keys.LOCAL_NAMESPACE, rec.name)
    head_up = rec.head is not None and localray.node_running(rec.head)
    groups = []
    all_ready = True
    for g in rec.groups:
        ready = sum(
            1
            for w in rec.workers_of(g.name)
            if w.phase == WorkerPhase.RUNNING and w.node is not None and localray.node_running(w.node)
        )
        all_ready = all_ready and ready == g.replicas
        groups.append(GroupStatus(g.name, ready, g.replicas, g.min_replicas, g.max_replicas, g.shape))
    cause: str | None = None
    if rec.phase == ClusterPhase.DELETING:
        state, cause = ClusterState.UNKNOWN, "being deleted"
    elif rec.phase == ClusterPhase.CREATING:
        state = ClusterState.STARTING
    elif not head_up:
        log_path = rec.head.log_path if rec.head else rec.head_temp_dir
        state, cause = ClusterState.FAILED, f"the head process exited; see {log_path}"
    else:
        state = ClusterState.READY if all_ready else ClusterState.STARTING
        problems = [f"group {g.name}: {g.last_error}" for g in rec.groups if g.last_error]
        recent = [x for x in rec.lost if now - x.at < LOST_SHOWN_FOR]
        problems += [f"worker {x.name} ({x.group}): {x.cause} at {x.at:%H:%M:%S}" for x in recent[-3:]]
        if rec.last_error:
            problems.append(rec.last_error)
        cause = "; ".join(problems) or None
    connect = None
    if rec.head is not None:
        # No Ray Client address: `ray://127.0.0.1:...` cannot reach a loopback head on this kind of
        # host (the client server hands out the routable IP); a driver on this machine uses the GCS.
        connect = ConnectInfo(
            client_address=None,
            dashboard_url=rec.head.dashboard_url,
            job_submission_url=rec.head.dashboard_url,
            driver_address=rec.head.gcs_address,
        )
    return ClusterStatus(
        ref=ref,
        state=state,
        groups=tuple(groups),
        requester=ann.get(keys.ANN_REQUESTER),
        profile=ann.get(keys.ANN_PROFILE),
        policy=ann.get(keys.ANN_POLICY),
        created_at=rec.created_at,
        expires_at=decode_time(ann.get(keys.ANN_EXPIRES_AT)),
        paused=ann.get(keys.ANN_PAUSED) == "true",
        pin=decode_pin(ann.get(keys.ANN_MANUAL_REPLICAS)),
        stuck_cause=cause,
        conditions={"HeadPodReady": "True" if head_up else "False"},
        connect=connect,
        last_decision=decode_decision(ann.get(keys.ANN_DECISION)),
        managed=rec.opted_in,
        annotations=dict(ann),
        labels=dict(rec.labels),
    )


def managed_view(r: ClusterRecord, nodes: Sequence[NodeActivity]) -> ManagedCluster:
    """The controller's view, workers joined to Ray's node activity (UNKNOWN where unproven)."""
    head_up = r.head is not None and localray.node_running(r.head)
    groups = []
    for g in r.groups:
        workers = [
            Worker(
                name=w.name,
                activity=Activity.UNKNOWN,
                ready=w.phase == WorkerPhase.RUNNING and w.node is not None,
                node_id=w.node.node_id if w.node else None,
                ip=localray.LOCALHOST if w.node else None,  # a starting worker proves nothing by IP
                started_at=w.started_at,
            )
            for w in r.workers_of(g.name)
        ]
        groups.append(
            ManagedGroup(
                ref=GroupRef(keys.LOCAL_NAMESPACE, r.name, g.name),
                replicas=g.replicas,
                min_replicas=g.min_replicas,
                max_replicas=g.max_replicas,
                ready=sum(1 for w in workers if w.ready),
                workers=attach_activity(workers, nodes),
                pending_deletes=tuple(g.pending_deletes),
                worker_resources=g.shape,
            )
        )
    return ManagedCluster(
        ref=ClusterRef(keys.LOCAL_NAMESPACE, r.name),
        groups=tuple(groups),
        labels=dict(r.labels),
        annotations=dict(r.annotations),
        kueue_queue=r.labels.get(keys.LABEL_KUEUE_QUEUE),
        dashboard_url=r.head.dashboard_url if r.head else None,
        head_ready=head_up and r.phase == ClusterPhase.RUNNING,
        created_at=r.created_at,
        version=str(r.version),
    )
