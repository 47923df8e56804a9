"""Laptop mode's backend: each local cluster is its own real Ray head, its workers `ray start --block`
processes (contracts.md section 7). Implements `ClusterBackend` and `ScaleTarget`.

Everything about a cluster lives in the state directory (`local_state`), so any process may create,
list, scale or delete clusters, and a new `LocalBackend` over the same directory adopts what an
earlier one started. Processes are started and stopped by the reconciler (`local_procs`), the local
stand-in for KubeRay's operator, which removes only the workers a decision named and only if Ray
confirms them idle.

How the controller uses it (one process scales; others only create, delete and annotate):

- `list_clusters()` sweeps dead processes, then reports every opted-in cluster with its workers and
  their activity (from the `ActivitySource`, the Ray dashboard by default).
- `apply(cluster, decisions)` checks the version read (`ConflictError` if someone wrote since), that
  every named worker is a current worker of its group and IDLE right now (`UnsafeRemoval`), that the
  scale-down names all its victims (`UnsafeRemoval`), and the machine's cap (`CapacityExceeded`); then
  writes replicas and removals in one guarded write and reconciles the cluster: synchronously (the
  default: apply returns when workers are up or drained), or in the backend's operator thread with
  `background=True`, so a controller tick does not wait for `ray start`.
- `finish_removals(cluster)` forgets removal requests whose workers are gone.
- `reconcile_all()` (or the operator thread) also replaces workers that died on their own.
"""

from __future__ import annotations

import builtins
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from controller import keys, localray
from controller.backends.base import (
    AlreadyExists,
    ApplyResult,
    BackendError,
    BackendUnavailable,
    ClusterNotFound,
    ClusterRequest,
    ClusterStatus,
    ConflictError,
    GroupNotFound,
    InvalidProfile,
    ManagedCluster,
    NotManaged,
    UnsafeRemoval,
    attach_activity,
)
from controller.backends.local_caps import LocalCaps, Usage
from controller.backends.local_procs import (
    NodeSettings,
    Operator,
    Reconciler,
    ReconcileReport,
    head_labels,
    remove_dir,
    usage_of,
)
from controller.backends.local_state import (
    ClusterPhase,
    ClusterRecord,
    StateStore,
    WorkerPhase,
    default_state_dir,
)
from controller.backends.local_views import cluster_status, managed_view, plan_record
from controller.domain import Activity, ClusterRef, Decision, Worker
from controller.metrics.base import ActivitySource
from controller.names import cluster_name_problem
from controller.policy.loader import PolicySet
from controller.policy.model import ClusterProfile

__all__ = ["LocalBackend", "LocalCaps", "NodeSettings", "ReconcileReport"]

log = logging.getLogger(__name__)

Profiles = PolicySet | Mapping[str, ClusterProfile] | Callable[[], Mapping[str, ClusterProfile]]


class LocalBackend:
    """`ClusterBackend` + `ScaleTarget` over local Ray processes; thread-safe, multi-process-safe.

    `profiles`: a `PolicySet`, a name -> ClusterProfile mapping, or a callable returning one (read on
    every create, so reloads apply). `state_dir`: default `$RAYOPS_STATE_DIR` or
    `~/.local/state/rayops`. `activity`: which workers are idle; default the clusters' own Ray
    dashboards (`RayDashboardSource`). `caps`: default `LocalCaps.from_machine()`. `settings`: how
    nodes start and stop. `background`: reconcile in an operator thread (`resync_s` apart, and at
    once after each apply or create) instead of inside the call.
    """

    def __init__(
        self,
        profiles: Profiles,
        *,
        state_dir: Path | None = None,
        activity: ActivitySource | None = None,
        caps: LocalCaps | None = None,
        settings: NodeSettings | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        background: bool = False,
        resync_s: float = 10.0,
    ) -> None:
        self._profiles = profiles
        self.store = StateStore(state_dir if state_dir is not None else default_state_dir())
        self._activity = activity
        self.caps = caps if caps is not None else LocalCaps.from_machine()
        self.settings = settings or NodeSettings()
        self._clock = clock
        self.reconciler = Reconciler(self.store, self.settings, self.caps, clock)
        self._operator = Operator(self.reconciler, resync_s) if background else None
        if self._operator is not None:
            self._operator.start()

    # ------------------------------------------------------------------ plumbing

    @property
    def state_dir(self) -> Path:
        return self.store.root

    @property
    def file_sd_path(self) -> Path:
        return self.store.file_sd_path

    @property
    def activity_source(self) -> ActivitySource:
        if self._activity is None:
            from controller.metrics.http import HttpSettings
            from controller.metrics.ray_dashboard import RayDashboardSource

            # A laptop's dashboard answers slowly while nodes start; a timeout only postpones a
            # scale-down (unknown is never idle), so wait longer than for a cluster's Service.
            self._activity = RayDashboardSource(http=HttpSettings(timeout_s=20.0, retries=2))
        return self._activity

    def close(self) -> None:
        """Stop the operator thread (if any) after its current reconcile; processes keep running."""
        if self._operator is not None:
            self._operator.stop()
            self._operator = None

    def _profile_map(self) -> Mapping[str, ClusterProfile]:
        p = self._profiles
        if isinstance(p, PolicySet):
            return p.cluster_profiles
        if callable(p):
            return p()
        return p

    def _check_namespace(self, ref: ClusterRef) -> None:
        if ref.namespace != keys.LOCAL_NAMESPACE:
            raise ClusterNotFound(
                f"no local Ray cluster named {ref.name} in namespace {ref.namespace} "
                f"(local clusters are all in namespace {keys.LOCAL_NAMESPACE})"
            )

    def _find(self, ref: ClusterRef) -> ClusterRecord:
        self._check_namespace(ref)
        rec = self.store.read(ref.name)
        if rec is None:
            raise ClusterNotFound(f"no local Ray cluster named {ref.name} in namespace {ref.namespace}")
        return rec

    def _managed(self, ref: ClusterRef) -> ClusterRecord:
        rec = self._find(ref)
        if not rec.opted_in:
            raise NotManaged(f"{ref} is not managed by rayops (it was released)")
        return rec

    def _kick(self, name: str) -> ReconcileReport | None:
        if self._operator is not None:
            self._operator.kick(name)
            return None
        return self.reconciler.reconcile(name)

    # ------------------------------------------------------------------ ClusterBackend

    def create(self, request: ClusterRequest) -> ClusterStatus:
        """Start the head, record the cluster, start the profile's default workers.

        All or nothing for the head: if it does not come up, its processes and temp dir are removed
        and the record is dropped (`BackendUnavailable`, with the start log's tail). Workers that fail
        to start are retried by later reconciles (status says why), as pods would be on Kubernetes.
        """
        if request.namespace != keys.LOCAL_NAMESPACE:
            raise InvalidProfile(
                f"local clusters live in namespace {keys.LOCAL_NAMESPACE}, not {request.namespace}: "
                "nothing was created"
            )
        problem = cluster_name_problem(request.name)
        if problem:
            raise InvalidProfile(f"{problem}: nothing was created")
        rec = self._plan(request)
        ref = ClusterRef(keys.LOCAL_NAMESPACE, request.name)
        with self.store.cluster_lock(request.name):
            with self.store.lock():
                if self.store.read(request.name) is not None:
                    raise AlreadyExists(f"a local Ray cluster named {request.name} already exists")
                add = usage_of([rec])
                self.caps.check(usage_of(self.store.read_all()), add)
                self.caps.check_now(add)
                rec.head_temp_dir = localray.make_temp_dir("rayops-h-", self.settings.temp_parent)
                self.store.write(rec)
            try:
                head = localray.start_head(
                    num_cpus=self.settings.head_cpus,
                    labels=head_labels(rec.name),
                    temp_dir=rec.head_temp_dir,
                    object_store_memory=self.settings.object_store_memory,
                    extra_args=list(self.settings.head_args),
                    timeout_s=self.settings.start_timeout_s,
                )
            except BaseException as e:
                self._undo_create(rec)
                if isinstance(e, localray.LocalRayError | OSError | ValueError):
                    raise BackendUnavailable(
                        f"the head of local cluster {rec.name} did not start, so nothing was created: {e}"
                    ) from e
                raise

            def started(r: ClusterRecord) -> bool:
                r.head, r.phase = head, ClusterPhase.RUNNING
                return True

            if self.store.update(rec.name, started) is None:  # purged meanwhile by another process
                localray.stop_head(head, timeout_s=self.settings.delete_timeout_s)
                self._undo_create(rec)
                raise BackendError(f"local cluster {rec.name} was deleted while it was being created")
            self.store.write_file_sd()
            self._kick(rec.name)
        return self.get(ref)

    def _undo_create(self, rec: ClusterRecord) -> None:
        localray.kill_marked(rec.head_temp_dir)
        with self.store.lock():
            self.store.remove(rec.name)
        remove_dir(rec.head_temp_dir)

    def _plan(self, request: ClusterRequest) -> ClusterRecord:
        return plan_record(request, self._profile_map(), self._clock(), self.settings.head_cpus)

    def _status(self, rec: ClusterRecord) -> ClusterStatus:
        return cluster_status(rec, self._clock())

    def get(self, ref: ClusterRef) -> ClusterStatus:
        return self._status(self._managed(ref))

    def list(self, namespace: str | None = None) -> builtins.list[ClusterStatus]:
        if namespace is not None and namespace != keys.LOCAL_NAMESPACE:
            return []
        return [self._status(r) for r in self.store.read_all() if r.opted_in]

    def delete(self, ref: ClusterRef) -> None:
        """Stop every node (workers first, then the head) and forget the cluster; running tasks end."""
        self._managed(ref)
        self._remove(ref.name)

    def purge(self, ref: ClusterRef) -> None:
        """Like `delete`, for any cluster in the state directory, released ones included (teardown,
        `rayops down`): rayops started those processes, so rayops may always stop them."""
        self._find(ref)
        self._remove(ref.name)

    def _remove(self, name: str) -> None:
        with self.store.cluster_lock(name):

            def deleting(r: ClusterRecord) -> bool:
                r.phase, r.owner_pid = ClusterPhase.DELETING, os.getpid()
                r.version += 1
                return True

            rec = self.store.update(name, deleting)
            if rec is None:
                raise ClusterNotFound(f"no local Ray cluster named {name}")
            self.store.write_file_sd()  # Prometheus stops scraping before the nodes go
            self.reconciler.stop_all(rec)
            with self.store.lock():
                self.store.remove(name)
            self.store.write_file_sd()

    def release(self, ref: ClusterRef) -> None:
        """Hand the cluster back: no removals pending, no rayops annotations or labels. Its processes
        keep running (the user owns them now; `purge` still stops them)."""

        def release(r: ClusterRecord) -> bool:
            for g in r.groups:
                g.pending_deletes.clear()
            r.annotations = {k: v for k, v in r.annotations.items() if not k.startswith(keys.PREFIX)}
            r.labels = {
                k: v
                for k, v in r.labels.items()
                if not k.startswith(keys.PREFIX)
                and not (k == keys.LABEL_MANAGED_BY and v == keys.MANAGED_BY_VALUE)
            }
            r.version += 1
            return True

        self._guarded_update(ref, release)

    def set_annotations(self, ref: ClusterRef, updates: Mapping[str, str | None]) -> None:
        for k, v in updates.items():
            if v is not None and len(v.encode()) > keys.MAX_ANNOTATION_BYTES:
                raise BackendError(
                    f"annotation {k} would be {len(v.encode())} bytes (at most {keys.MAX_ANNOTATION_BYTES})"
                )

        def annotate(r: ClusterRecord) -> bool:
            for k, v in updates.items():
                if v is None:
                    r.annotations.pop(k, None)
                else:
                    r.annotations[k] = v
            r.version += 1
            return True

        self._guarded_update(ref, annotate)

    def _guarded_update(self, ref: ClusterRef, change: Callable[[ClusterRecord], bool]) -> ClusterRecord:
        with self.store.lock():
            rec = self._managed(ref)
            if change(rec):
                self.store.write(rec)
            return rec

    # ------------------------------------------------------------------ status

    # ------------------------------------------------------------------ ScaleTarget

    def list_clusters(self) -> builtins.list[ManagedCluster]:
        records = [r for r in self._swept() if r.opted_in]
        urls: dict[ClusterRef, str | None] = {
            ClusterRef(keys.LOCAL_NAMESPACE, r.name): r.head.dashboard_url if r.head else None
            for r in records
            if r.phase == ClusterPhase.RUNNING
        }
        activity = self.activity_source.activity(urls, self._clock()) if urls else {}
        out = []
        for r in records:
            ref = ClusterRef(keys.LOCAL_NAMESPACE, r.name)
            got = activity.get(ref)
            out.append(managed_view(r, got.nodes if got is not None else ()))
        return out

    def _swept(self) -> builtins.list[ClusterRecord]:
        """Every record, after forgetting workers whose processes died (reported as lost)."""
        out = []
        for name in self.store.names():
            report = ReconcileReport(ClusterRef(keys.LOCAL_NAMESPACE, name))

            def sweep(r: ClusterRecord, report: ReconcileReport = report) -> bool:
                return self.reconciler.sweep(r, report, conclusive=False)

            rec = self.store.update(name, sweep)
            if report.lost:
                self.store.write_file_sd()
                log.warning("local cluster %s: %s", name, report.summary())
            if rec is not None:
                out.append(rec)
        return out

    def apply(self, cluster: ManagedCluster, decisions: Sequence[Decision]) -> ApplyResult:
        ref = cluster.ref
        live = [d for d in decisions if not d.dry_run]
        rec = self._managed(ref)
        for d in live:
            if d.ref.cluster_ref != ref:
                raise BackendError(f"a decision for {d.ref} cannot be applied to {ref}")
            if rec.group(d.ref.group) is None:
                names = ", ".join(g.name for g in rec.groups)
                raise GroupNotFound(f"cluster {ref} has no worker group '{d.ref.group}' (groups: {names})")
        idle = self._idle_now(rec, live)
        with self.store.lock():
            rec = self._managed(ref)
            if cluster.version is not None and cluster.version != str(rec.version):
                raise ConflictError(f"{ref} changed since it was read; re-read and decide again")
            if rec.phase != ClusterPhase.RUNNING:
                raise BackendUnavailable(f"{ref} is {rec.phase}; try again later")
            before = usage_of([rec])
            changed = any([self._apply_one(rec, d, idle) for d in live])
            if not changed:
                return ApplyResult(ref, False)
            others = [r for r in self.store.read_all() if r.name != rec.name]
            after = usage_of([rec])
            grow = Usage(
                0, max(0, after.workers - before.workers), max(0.0, after.worker_cpus - before.worker_cpus)
            )
            self.caps.check(usage_of(others) + before, grow)
            rec.version += 1
            self.store.write(rec)
        report = self._kick(rec.name)
        detail = report.summary() if report is not None else "reconciling in the background"
        return ApplyResult(ref, True, detail)

    def _idle_now(self, rec: ClusterRecord, decisions: Sequence[Decision]) -> dict[str, Activity]:
        """Fresh activity of the workers the decisions name, by worker name (UNKNOWN when unproven)."""
        named = {n for d in decisions if d.mode == "owner" for n in d.remove}
        new = named - {n for g in rec.groups for n in g.pending_deletes}
        if not new or rec.head is None:
            return {}
        ref = ClusterRef(keys.LOCAL_NAMESPACE, rec.name)
        got = self.activity_source.activity({ref: rec.head.dashboard_url}, self._clock()).get(ref)
        nodes = got.nodes if got is not None else ()
        workers = [
            Worker(w.name, node_id=w.node.node_id if w.node else None) for w in rec.workers if w.name in new
        ]
        return {w.name: w.activity for w in attach_activity(workers, nodes)}

    def _apply_one(self, rec: ClusterRecord, d: Decision, idle: Mapping[str, Activity]) -> bool:
        g = rec.group(d.ref.group)
        if g is None:
            raise GroupNotFound(f"cluster {d.ref.cluster_ref} has no worker group '{d.ref.group}'")
        if d.mode != "owner":
            lo = g.min_replicas if d.min_replicas is None else d.min_replicas
            hi = g.max_replicas if d.max_replicas is None else d.max_replicas
            if (lo, hi) == (g.min_replicas, g.max_replicas):
                return False
            g.min_replicas, g.max_replicas = lo, hi
            return True
        if d.target < 0:
            raise BackendError(f"{d.ref}: a target of {d.target} workers is not a count")
        new = [n for n in dict.fromkeys(d.remove) if n not in g.pending_deletes]
        members = {w.name: w for w in rec.workers_of(g.name)}
        for n in new:
            w = members.get(n)
            if w is None or w.phase != WorkerPhase.RUNNING:
                raise UnsafeRemoval(
                    f"{d.ref}: {n} is not a running worker of the group (workers: {sorted(members)}); "
                    "re-read and decide again"
                )
            activity = idle.get(n, Activity.UNKNOWN)
            if activity != Activity.IDLE:
                raise UnsafeRemoval(f"{d.ref}: {n} is {activity}, not idle; only idle workers are removed")
        kept = [
            w
            for w in members.values()
            if w.phase in (WorkerPhase.STARTING, WorkerPhase.RUNNING)
            and w.name not in g.pending_deletes
            and w.name not in new
        ]
        if d.target < len(kept):
            raise UnsafeRemoval(
                f"{d.ref}: a target of {d.target} keeps {len(kept)} workers unless "
                f"{len(kept) - d.target} more are named; local Ray removes only the workers a decision names"
            )
        if d.target == g.replicas and not new:
            return False
        g.replicas = d.target
        g.pending_deletes.extend(new)
        return True

    def finish_removals(self, cluster: ManagedCluster) -> ApplyResult:
        """Forget removal requests whose workers are gone. Does not bump the version: nothing anyone
        decides from changed (the workers were already not counted)."""
        ref = cluster.ref
        self._managed(ref)
        self._swept()

        def clear(r: ClusterRecord) -> bool:
            present = {w.name for w in r.workers}
            changed = False
            for g in r.groups:
                keep = [n for n in g.pending_deletes if n in present]
                if keep != g.pending_deletes:
                    g.pending_deletes, changed = keep, True
            return changed

        before = self._find(ref)
        pending = sum(len(g.pending_deletes) for g in before.groups)
        after = self.store.update(ref.name, clear)
        left = sum(len(g.pending_deletes) for g in after.groups) if after else 0
        return ApplyResult(ref, left < pending, f"{pending - left} finished removal(s) cleared")

    # ------------------------------------------------------------------ operator

    def reconcile(self, ref: ClusterRef) -> ReconcileReport:
        """Make one cluster's processes match its record now (see `local_procs`)."""
        self._find(ref)
        return self.reconciler.reconcile(ref.name)

    def reconcile_all(self) -> builtins.list[ReconcileReport]:
        """Reconcile every cluster in the state directory; orphaned creates and deletes included."""
        reports = []
        for name in self.store.names():
            try:
                reports.append(self.reconciler.reconcile(name))
            except ClusterNotFound:
                continue
        return reports
