"""The two protocols every backend implements, the values they exchange, and their errors.

`ScaleTarget` is what the controller needs (list opted-in clusters with their groups and workers,
apply a decision, finish earlier removals); `ClusterBackend` is what people need through the bot and
the notebook API (create from a profile, status, list, delete, release, annotate). Keeping them apart
keeps the controller's and the bot's RBAC roles apart. KubeRay and local Ray implement both, and one
contract suite (tests/backends/) runs unchanged against each.

Semantics shared by all implementations:
- Only opted-in clusters are listed or touched (contracts.md section 4; `controller.keys.is_opted_in`).
- Writes are guarded against concurrent writers; a lost race raises `ConflictError` (re-read and
  re-decide next tick), never a silent overwrite.
- Errors are the classes below, each with a message a person can act on; transient ones
  (`BackendUnavailable`) are retried by the caller's loop, permanent ones are not.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Protocol, runtime_checkable

from controller.domain import (
    Activity,
    ClusterRef,
    Decision,
    GroupRef,
    ManualPin,
    NodeActivity,
    Worker,
)

# --- errors -------------------------------------------------------------------------------------


class BackendError(Exception):
    """Base of every backend error; `str(e)` says what was wrong and what to do."""


class ClusterNotFound(BackendError):
    pass


class GroupNotFound(BackendError):
    pass


class AlreadyExists(BackendError):
    pass


class InvalidProfile(BackendError):
    """The profile renders an object the API (or the CRD schema) rejects; nothing was created."""


class NotManaged(BackendError):
    """The cluster has not opted in to rayops, so rayops will not change it."""


class ModeRefused(BackendError):
    """The requested mode cannot be used on this cluster (e.g. owner mode with in-tree autoscaling)."""


class ConflictError(BackendError):
    """Someone else changed the object between read and write; re-read and decide again."""


class PersistentConflict(ConflictError):
    """Someone else keeps changing the same fields (a notebook's `apply`, GitOps, another autoscaler).

    Raised once when the fight is detected; the backend then stops writing those fields of that
    cluster until `until` (apply returns `ApplyResult(backoff_until=...)` meanwhile), so the loop
    reports one Conflict event instead of fighting every tick.
    """

    def __init__(self, message: str, fields: tuple[str, ...] = (), until: datetime | None = None) -> None:
        super().__init__(message)
        self.fields = fields
        self.until = until


class UnsafeRemoval(BackendError):
    """A decision would remove a worker not proven idle, or leave the victims to the operator's choice."""


class BackendUnavailable(BackendError):
    """Transient: the API answered 5xx, timed out, or the local machine is out of capacity for now."""


class CapacityExceeded(BackendError):
    """The local machine cannot hold more clusters or workers (memory/CPU cap)."""


# --- controller side ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ManagedGroup:
    ref: GroupRef
    replicas: int  # the count asked for now
    min_replicas: int
    max_replicas: int
    ready: int
    workers: tuple[Worker, ...] = ()
    pending_deletes: tuple[str, ...] = ()
    worker_resources: Mapping[str, float] = field(default_factory=lambda: {"CPU": 1.0})
    num_of_hosts: int = 1  # pods per replica (KubeRay multi-host groups); workers are pods


@dataclass(frozen=True)
class ManagedCluster:
    ref: ClusterRef
    groups: tuple[ManagedGroup, ...]
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    in_tree_autoscaling: bool = False
    kueue_queue: str | None = None
    dashboard_url: str | None = None
    head_ready: bool = False
    created_at: datetime | None = None
    version: str | None = None  # opaque token for guarded writes (resourceVersion on Kubernetes)

    def group(self, name: str) -> ManagedGroup:
        for g in self.groups:
            if g.ref.group == name:
                return g
        raise GroupNotFound(f"cluster {self.ref} has no worker group '{name}' (groups: {self.group_names})")

    @property
    def group_names(self) -> list[str]:
        return [g.ref.group for g in self.groups]


@dataclass(frozen=True)
class ApplyResult:
    cluster: ClusterRef
    written: bool  # False when nothing needed writing (no API call was made)
    detail: str = ""
    backoff_until: datetime | None = None  # set while writes are held back after a PersistentConflict


class ScaleTarget(Protocol):
    def list_clusters(self) -> list[ManagedCluster]:
        """Every opted-in cluster with its groups and workers (activity attached where known)."""
        ...

    def apply(self, cluster: ManagedCluster, decisions: Sequence[Decision]) -> ApplyResult:
        """Make the decisions real in one guarded write per cluster; no write when nothing changes.

        Owner mode: set `replicas` and name only the decision's idle workers for removal. Bounds mode:
        set min/max only. Raises ConflictError (PersistentConflict once per fight), ModeRefused,
        UnsafeRemoval (a named worker not idle, or victims left to the operator), GroupNotFound,
        ClusterNotFound, BackendUnavailable.
        """
        ...

    def finish_removals(self, cluster: ManagedCluster) -> ApplyResult:
        """Clear removal requests whose workers are gone (KubeRay never clears workersToDelete)."""
        ...

    def set_annotations(self, ref: ClusterRef, updates: Mapping[str, str | None]) -> None:
        """Merge annotations (None deletes a key): decision records and saved decision state."""
        ...


@runtime_checkable
class DefersActivity(Protocol):
    """A ScaleTarget that can list without asking Ray which workers are idle, and ask afterwards.

    Asking every cluster's dashboard which nodes are idle is most of a large fleet's tick
    (docs/benchmarks.md, P3), and only a decision that could remove workers needs the answer. The
    reconciler lists without it, decides, and asks only for the clusters whose decision depends on it
    (controller/deciding.py: `needs_activity`). Workers listed without activity are UNKNOWN (busy),
    except pods that never started (IDLE, which needs no dashboard).
    """

    def list_clusters_without_activity(self) -> list[ManagedCluster]: ...

    def with_activity(self, clusters: Sequence[ManagedCluster]) -> list[ManagedCluster]:
        """The same clusters, their workers joined to Ray's node activity (one dashboard round each)."""
        ...


# --- people side --------------------------------------------------------------------------------


class ClusterState(StrEnum):
    """CodeFlare SDK's status names, so chat-made and notebook-made clusters look the same."""

    READY = "READY"
    STARTING = "STARTING"
    QUEUED = "QUEUED"
    SUSPENDED = "SUSPENDED"
    FAILED = "FAILED"
    UNKNOWN = "UNKNOWN"


@dataclass(frozen=True)
class ClusterRequest:
    name: str
    namespace: str
    profile: str
    requester: str
    workers: int | None = None  # initial workers of the profile's default group (None: profile default)
    gpus: int | None = None  # GPU workers wanted (None: profile default)
    ttl_seconds: int | None = None  # None: profile default
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    """Extra annotations the cluster is created with (an approval's `rayops.io/approved-limits`), so
    they are there before the controller's first look. rayops' own keys (requester, profile, policy,
    expiry) are set by the backend and win over these."""


@dataclass(frozen=True)
class GroupStatus:
    name: str
    ready: int
    desired: int
    min_replicas: int
    max_replicas: int
    resources: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ConnectInfo:
    client_address: str | None  # ray://host:10001 for ray.init
    dashboard_url: str | None
    job_submission_url: str | None
    # host:port for `ray.init(address=...)` by a driver on the same machine (local clusters; a driver
    # also needs `controller.localray.DRIVER_ENV`); None where only the client address reaches it.
    driver_address: str | None = None


@dataclass(frozen=True)
class ClusterStatus:
    ref: ClusterRef
    state: ClusterState
    groups: tuple[GroupStatus, ...] = ()
    requester: str | None = None
    profile: str | None = None
    policy: str | None = None
    created_at: datetime | None = None
    expires_at: datetime | None = None
    paused: bool = False
    pin: ManualPin | None = None
    stuck_cause: str | None = None  # pod-level cause when something is stuck
    conditions: Mapping[str, str] = field(default_factory=dict)  # condition type -> status
    connect: ConnectInfo | None = None
    last_decision: Decision | None = None
    managed: bool = True
    annotations: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    """The cluster's labels as stored, so people-side answers (`policy NAME`) can evaluate a
    ScalingPolicy's `matchLabels` as the controller does."""


class ClusterBackend(Protocol):
    def create(self, request: ClusterRequest) -> ClusterStatus:
        """Create from a profile; all or nothing (a failed create leaves no objects or processes)."""
        ...

    def get(self, ref: ClusterRef) -> ClusterStatus: ...

    def list(self, namespace: str | None = None) -> list[ClusterStatus]: ...

    def delete(self, ref: ClusterRef) -> None: ...

    def release(self, ref: ClusterRef) -> None:
        """Hand a cluster back: clear removal requests and remove every rayops annotation and label."""
        ...

    def set_annotations(self, ref: ClusterRef, updates: Mapping[str, str | None]) -> None: ...


def attach_activity(workers: Sequence[Worker], nodes: Sequence[NodeActivity]) -> tuple[Worker, ...]:
    """Join workers to Ray's view of its nodes: by pod name (RAY_CLOUD_INSTANCE_ID), else node id, else IP.

    A worker with no matching node stays UNKNOWN, which every caller treats as busy: removal needs proof
    of idleness, not absence of evidence.
    """
    by_pod = {n.pod_name: n for n in nodes if n.pod_name and n.alive}
    by_id = {n.node_id: n for n in nodes if n.alive}
    by_ip: dict[str, list[NodeActivity]] = {}
    for n in nodes:
        if n.alive and not n.is_head:
            by_ip.setdefault(n.node_ip, []).append(n)
    out = []
    for w in workers:
        node = by_pod.get(w.name) or (by_id.get(w.node_id) if w.node_id else None)
        if node is None and w.ip and len(by_ip.get(w.ip, [])) == 1:
            node = by_ip[w.ip][0]  # an IP shared by several nodes (one host) proves nothing
        activity = node.activity if node is not None else Activity.UNKNOWN
        out.append(
            Worker(
                name=w.name,
                activity=activity,
                ready=w.ready,
                node_id=node.node_id if node else w.node_id,
                ip=w.ip,
                started_at=w.started_at,
            )
        )
    return tuple(out)
