"""An in-memory backend: `ClusterBackend` and `ScaleTarget` over plain dicts, for tests and demos.

It is a fake that must stay honest: the shared backend contract suite runs against it as against
KubeRay and local Ray, and the bot's tests trust it. So it validates what the Kubernetes API would
(names, namespaces, the profile's bounds), raises the same typed errors, touches only opted-in
clusters, guards writes with a version like `resourceVersion`, and stores everything the bot says
about a cluster as the annotations of contracts.md section 3. It never moves a cluster's state by
itself: tests drive it (`make_ready`, `set_state`, `set_ready`), because a real cluster's progress is
not the bot's doing.

The annotation encodings (pin, expiry) are in `controller.annotations`, shared by every backend.
"""

from __future__ import annotations

import builtins
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from controller import keys
from controller.annotations import decode_decision, decode_pin, decode_time, encode_pin, encode_time
from controller.backends.base import (
    AlreadyExists,
    ApplyResult,
    BackendError,
    ClusterNotFound,
    ClusterRequest,
    ClusterState,
    ClusterStatus,
    ConflictError,
    ConnectInfo,
    GroupNotFound,
    GroupStatus,
    InvalidProfile,
    ManagedCluster,
    ManagedGroup,
    ModeRefused,
    NotManaged,
)
from controller.domain import ClusterRef, Decision, GroupRef
from controller.names import (
    CLUSTER_NAME,
    MAX_CLUSTER_NAME,
    MAX_NAMESPACE_NAME,
    NAMESPACE_NAME,
    cluster_name_problem,
    namespace_problem,
)
from controller.policy.durations import parse_duration
from controller.policy.model import ClusterProfile

# The annotation codec and the name rules used to live here; real backends and the bot now import
# them from `controller.annotations` and `controller.names`. Re-exported for older callers (tests).
__all__ = [
    "CLUSTER_NAME",
    "MAX_CLUSTER_NAME",
    "MAX_NAMESPACE_NAME",
    "NAMESPACE_NAME",
    "MemoryBackend",
    "cluster_name_problem",
    "decode_decision",
    "decode_pin",
    "decode_time",
    "encode_pin",
    "encode_time",
    "namespace_problem",
]


# --- the store ----------------------------------------------------------------------------------


@dataclass
class _Group:
    name: str
    replicas: int
    min_replicas: int
    max_replicas: int
    ready: int = 0
    resources: dict[str, float] = field(default_factory=dict)
    pending_deletes: list[str] = field(default_factory=list)


@dataclass
class _Cluster:
    ref: ClusterRef
    groups: dict[str, _Group]
    labels: dict[str, str]
    annotations: dict[str, str]
    created_at: datetime
    state: ClusterState = ClusterState.STARTING
    stuck_cause: str | None = None
    head_ready: bool = False
    in_tree_autoscaling: bool = False
    version: int = 1

    @property
    def opted_in(self) -> bool:
        return keys.is_opted_in(self.labels)


ProfileSource = Callable[[], Mapping[str, ClusterProfile]]


def _group_resources(cpu: str, memory: str, gpu: int) -> dict[str, float]:
    out: dict[str, float] = {}
    try:
        out["CPU"] = float(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu)
    except ValueError:
        pass
    if gpu:
        out["GPU"] = float(gpu)
    return out


class MemoryBackend:
    """ClusterBackend and ScaleTarget in memory; thread-safe (one lock around every operation)."""

    def __init__(
        self,
        profiles: ProfileSource | Mapping[str, ClusterProfile],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        ready_on_create: bool = False,
    ) -> None:
        self._profiles: ProfileSource = profiles if callable(profiles) else (lambda: profiles)
        self._clock = clock
        self._ready_on_create = ready_on_create
        self._lock = threading.RLock()
        self._clusters: dict[ClusterRef, _Cluster] = {}
        self._fail_next: dict[str, BackendError] = {}
        self.calls: list[tuple[str, str]] = []  # (method, cluster) of every write, for assertions

    # --- test drivers ---------------------------------------------------------------------------

    def fail_next(self, method: str, error: BackendError) -> None:
        """Make the next call of `method` ("create", "delete", ...) raise `error` (fault injection)."""
        self._fail_next[method] = error

    def make_ready(self, ref: ClusterRef) -> None:
        """The head is up and every group has as many ready workers as it asks for."""
        with self._lock:
            c = self._find(ref)
            c.state, c.head_ready, c.stuck_cause = ClusterState.READY, True, None
            for g in c.groups.values():
                g.ready = g.replicas

    def set_state(self, ref: ClusterRef, state: ClusterState, stuck_cause: str | None = None) -> None:
        with self._lock:
            c = self._find(ref)
            c.state, c.stuck_cause = state, stuck_cause

    def set_ready(self, ref: ClusterRef, group: str, ready: int) -> None:
        with self._lock:
            self._find(ref).groups[group].ready = ready

    def add_cluster(
        self,
        ref: ClusterRef,
        groups: Sequence[GroupStatus],
        labels: Mapping[str, str] | None = None,
        annotations: Mapping[str, str] | None = None,
        in_tree_autoscaling: bool = False,
    ) -> None:
        """A cluster made outside rayops (opted in by label, or not): adoption and refusal tests."""
        with self._lock:
            if ref in self._clusters:
                raise AlreadyExists(f"a RayCluster named {ref.name} already exists in {ref.namespace}")
            self._clusters[ref] = _Cluster(
                ref,
                {
                    g.name: _Group(
                        g.name, g.desired, g.min_replicas, g.max_replicas, g.ready, dict(g.resources)
                    )
                    for g in groups
                },
                dict(labels or {}),
                dict(annotations or {}),
                self._clock(),
                in_tree_autoscaling=in_tree_autoscaling,
            )

    def write_as_another(
        self,
        ref: ClusterRef,
        *,
        group: str | None = None,
        replicas: int | None = None,
        annotations: Mapping[str, str] | None = None,
    ) -> None:
        """Another writer (a person with kubectl, a second controller) changes the object: the
        version moves, so a write based on an earlier read gets ConflictError."""
        with self._lock:
            c = self._find(ref)
            if group is not None and replicas is not None:
                c.groups[group].replicas = replicas
            c.annotations.update(annotations or {})
            c.version += 1

    def raw_annotations(self, ref: ClusterRef) -> dict[str, str]:
        """Every annotation as stored, opted in or not (the API's view, for assertions)."""
        with self._lock:
            return dict(self._find(ref).annotations)

    def ready_count(self, ref: ClusterRef, group: str) -> int:
        with self._lock:
            c = self._clusters.get(ref)
            return c.groups[group].ready if c is not None and group in c.groups else 0

    def exists(self, ref: ClusterRef) -> bool:
        """Whether an object exists at all, opted in or not (the API's view, for assertions)."""
        with self._lock:
            return ref in self._clusters

    def snapshot(self) -> dict[str, object]:
        """Every cluster's full state as plain data, to assert that a refused command changed nothing."""
        with self._lock:
            return {
                str(ref): (
                    c.state,
                    sorted(c.labels.items()),
                    sorted(c.annotations.items()),
                    sorted(
                        (g.name, g.replicas, g.min_replicas, g.max_replicas, g.ready)
                        for g in c.groups.values()
                    ),
                )
                for ref, c in sorted(self._clusters.items())
            }

    # --- internals ------------------------------------------------------------------------------

    def _check_fault(self, method: str) -> None:
        err = self._fail_next.pop(method, None)
        if err is not None:
            raise err

    def _find(self, ref: ClusterRef) -> _Cluster:
        c = self._clusters.get(ref)
        if c is None:
            raise ClusterNotFound(f"no Ray cluster named {ref.name} in namespace {ref.namespace}")
        return c

    def _managed(self, ref: ClusterRef) -> _Cluster:
        c = self._find(ref)
        if not c.opted_in:
            raise NotManaged(f"{ref} is not managed by rayops (label it {keys.LABEL_MANAGED}=true to opt in)")
        return c

    def _status(self, c: _Cluster) -> ClusterStatus:
        ann = c.annotations
        host = f"{c.ref.name}-head-svc.{c.ref.namespace}.svc"
        return ClusterStatus(
            ref=c.ref,
            state=c.state,
            groups=tuple(
                GroupStatus(g.name, g.ready, g.replicas, g.min_replicas, g.max_replicas, dict(g.resources))
                for g in c.groups.values()
            ),
            requester=ann.get(keys.ANN_REQUESTER),
            profile=ann.get(keys.ANN_PROFILE),
            policy=ann.get(keys.ANN_POLICY),
            created_at=c.created_at,
            expires_at=decode_time(ann.get(keys.ANN_EXPIRES_AT)),
            paused=ann.get(keys.ANN_PAUSED) == "true",
            pin=decode_pin(ann.get(keys.ANN_MANUAL_REPLICAS)),
            stuck_cause=c.stuck_cause,
            conditions={"HeadPodReady": "True" if c.head_ready else "False"},
            connect=ConnectInfo(f"ray://{host}:10001", f"http://{host}:8265", f"http://{host}:8265"),
            last_decision=decode_decision(ann.get(keys.ANN_DECISION)),
            managed=c.opted_in,
            annotations=dict(ann),
            labels=dict(c.labels),
        )

    # --- ClusterBackend -------------------------------------------------------------------------

    def create(self, request: ClusterRequest) -> ClusterStatus:
        with self._lock:
            self._check_fault("create")
            problem = cluster_name_problem(request.name) or namespace_problem(request.namespace)
            if problem:
                raise InvalidProfile(f"{problem}: nothing was created")
            ref = ClusterRef(request.namespace, request.name)
            if ref in self._clusters:
                raise AlreadyExists(
                    f"a Ray cluster named {request.name} already exists in {request.namespace}"
                )
            profiles = self._profiles()
            profile = profiles.get(request.profile)
            if profile is None:
                known = ", ".join(sorted(profiles)) or "none"
                raise InvalidProfile(f"no profile named {request.profile} (profiles: {known})")
            spec = profile.spec
            now = self._clock()
            ttl = (
                timedelta(seconds=request.ttl_seconds)
                if request.ttl_seconds is not None
                else parse_duration(spec.default_ttl)
            )
            if ttl <= timedelta(0) or ttl > parse_duration(spec.max_ttl):
                raise InvalidProfile(
                    f"time-to-live must be above 0 and at most {spec.max_ttl} for {profile.name}"
                )
            cpu_group, gpu_group = spec.cpu_group, spec.gpu_group
            if request.gpus and gpu_group is None:
                raise InvalidProfile(f"profile {profile.name} has no GPU worker group")
            groups: dict[str, _Group] = {}
            for g in spec.worker_groups:
                wanted = g.default_workers
                if g is cpu_group and request.workers is not None:
                    wanted = request.workers
                if g is gpu_group and request.gpus is not None:
                    wanted = request.gpus
                if not g.min_workers <= wanted <= g.max_workers:
                    raise InvalidProfile(
                        f"group {g.name} of {profile.name} takes {g.min_workers} to {g.max_workers} "
                        f"workers (asked for {wanted})"
                    )
                resources = _group_resources(g.cpu, g.memory, g.gpu) | dict(g.ray_resources)
                groups[g.name] = _Group(g.name, wanted, g.min_workers, g.max_workers, 0, resources)
            annotations = {
                **request.annotations,
                keys.ANN_REQUESTER: request.requester,
                keys.ANN_PROFILE: profile.name,
                keys.ANN_EXPIRES_AT: encode_time(now + ttl),
            }
            if spec.scaling_policy:
                annotations[keys.ANN_POLICY] = spec.scaling_policy
            labels = {**request.labels, keys.LABEL_MANAGED_BY: keys.MANAGED_BY_VALUE}
            c = _Cluster(ref, groups, labels, annotations, now)
            self._clusters[ref] = c
            self.calls.append(("create", str(ref)))
            if self._ready_on_create:
                self.make_ready(ref)
            return self._status(c)

    def get(self, ref: ClusterRef) -> ClusterStatus:
        with self._lock:
            self._check_fault("get")
            return self._status(self._managed(ref))

    def list(self, namespace: str | None = None) -> list[ClusterStatus]:
        with self._lock:
            self._check_fault("list")
            return [
                self._status(c)
                for ref, c in sorted(self._clusters.items())
                if c.opted_in and (namespace is None or ref.namespace == namespace)
            ]

    def delete(self, ref: ClusterRef) -> None:
        with self._lock:
            self._check_fault("delete")
            self._managed(ref)
            del self._clusters[ref]
            self.calls.append(("delete", str(ref)))

    def release(self, ref: ClusterRef) -> None:
        with self._lock:
            self._check_fault("release")
            c = self._managed(ref)
            for g in c.groups.values():
                g.pending_deletes.clear()
            c.annotations = {k: v for k, v in c.annotations.items() if not k.startswith(keys.PREFIX)}
            c.labels = {
                k: v
                for k, v in c.labels.items()
                if not k.startswith(keys.PREFIX)
                and not (k == keys.LABEL_MANAGED_BY and v == keys.MANAGED_BY_VALUE)
            }
            c.version += 1
            self.calls.append(("release", str(ref)))

    def set_annotations(self, ref: ClusterRef, updates: Mapping[str, str | None]) -> None:
        with self._lock:
            self._check_fault("set_annotations")
            c = self._managed(ref)
            for k, v in updates.items():
                if v is not None and len(v.encode()) > keys.MAX_ANNOTATION_BYTES:
                    raise BackendError(
                        f"annotation {k} would be {len(v.encode())} bytes "
                        f"(at most {keys.MAX_ANNOTATION_BYTES})"
                    )
            for k, v in updates.items():
                if v is None:
                    c.annotations.pop(k, None)
                else:
                    c.annotations[k] = v
            c.version += 1
            self.calls.append(("set_annotations", str(ref)))

    # --- ScaleTarget ----------------------------------------------------------------------------

    def list_clusters(self) -> builtins.list[ManagedCluster]:
        with self._lock:
            return [self._managed_view(c) for _, c in sorted(self._clusters.items()) if c.opted_in]

    def _managed_view(self, c: _Cluster) -> ManagedCluster:
        return ManagedCluster(
            ref=c.ref,
            groups=tuple(
                ManagedGroup(
                    ref=GroupRef(c.ref.namespace, c.ref.name, g.name),
                    replicas=g.replicas,
                    min_replicas=g.min_replicas,
                    max_replicas=g.max_replicas,
                    ready=g.ready,
                    pending_deletes=tuple(g.pending_deletes),
                    worker_resources=dict(g.resources) or {"CPU": 1.0},
                )
                for g in c.groups.values()
            ),
            labels=dict(c.labels),
            annotations=dict(c.annotations),
            in_tree_autoscaling=c.in_tree_autoscaling,
            kueue_queue=c.labels.get(keys.LABEL_KUEUE_QUEUE),
            dashboard_url=f"http://{c.ref.name}-head-svc.{c.ref.namespace}.svc:8265",
            head_ready=c.head_ready,
            created_at=c.created_at,
            version=str(c.version),
        )

    def apply(self, cluster: ManagedCluster, decisions: Sequence[Decision]) -> ApplyResult:
        with self._lock:
            self._check_fault("apply")
            c = self._managed(cluster.ref)
            if cluster.version is not None and cluster.version != str(c.version):
                raise ConflictError(f"{cluster.ref} changed since it was read; re-read and decide again")
            missing = sorted({d.ref.group for d in decisions if not d.dry_run} - set(c.groups))
            if missing:  # checked before any change, so a refused apply changes nothing (as elsewhere)
                raise GroupNotFound(
                    f"cluster {cluster.ref} has no worker group '{missing[0]}' (groups: {sorted(c.groups)})"
                )
            changed = False
            for d in decisions:
                if d.dry_run:
                    continue
                g = c.groups.get(d.ref.group)
                if g is None:
                    continue
                if d.mode == "owner":
                    if c.in_tree_autoscaling:
                        raise ModeRefused(
                            f"{cluster.ref} runs Ray's in-tree autoscaler; owner mode is refused"
                        )
                    new_deletes = [w for w in d.remove if w not in g.pending_deletes]
                    if d.target != g.replicas or new_deletes:
                        g.replicas = d.target
                        g.pending_deletes.extend(new_deletes)
                        changed = True
                else:
                    lo = g.min_replicas if d.min_replicas is None else d.min_replicas
                    hi = g.max_replicas if d.max_replicas is None else d.max_replicas
                    if (lo, hi) != (g.min_replicas, g.max_replicas):
                        g.min_replicas, g.max_replicas = lo, hi
                        changed = True
            if changed:
                c.version += 1
                self.calls.append(("apply", str(c.ref)))
            return ApplyResult(c.ref, changed)

    def finish_removals(self, cluster: ManagedCluster) -> ApplyResult:
        """Workers here are counts, not objects: a removal is finished as soon as it was asked for."""
        with self._lock:
            c = self._managed(cluster.ref)
            pending = any(g.pending_deletes for g in c.groups.values())
            for g in c.groups.values():
                g.pending_deletes.clear()
            if pending:
                c.version += 1
            return ApplyResult(c.ref, pending)
