"""The KubeRay backend: RayClusters (`ray.io/v1`) on Kubernetes/OpenShift, both protocols.

`KubeRayBackend` is the controller's `ScaleTarget` and the bot's `ClusterBackend`. It reaches the API only
through `KubeApi` (controller/backends/kube_api.py); reading objects into rayops' values is in
`kuberay_read.py`, turning decisions into guarded patches in `kuberay_patch.py`, rendering profiles in
`render.py`.

Rules kept here (ray-kuberay.md sections 3-6, contracts.md sections 3-4):
- Only opted-in clusters are listed or changed: labelled `app.kubernetes.io/managed-by=rayops` (made by
  rayops) or `rayops.io/managed=true` (adopted). Every write `test`s that label, so a cluster released
  between read and write is not touched.
- Every write is one JSON patch guarded by `test` ops on what was read; a failed test is a
  `ConflictError` (re-read next tick). A field someone else keeps changing is reported once as a
  `PersistentConflict`, then left alone for a while (`FightTracker`).
- Owner mode names only idle workers for removal; bounds mode writes only min/max.
- `create` is all or nothing: one object, whose pods and services the operator owns by owner reference;
  an ambiguous failure (timeout, 5xx) is resolved by reading the object back.
"""

from __future__ import annotations

import builtins
import dataclasses
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from controller import keys
from controller.backends import kuberay_read as read
from controller.backends.base import (
    AlreadyExists,
    ApplyResult,
    BackendError,
    BackendUnavailable,
    ClusterNotFound,
    ClusterRequest,
    ClusterStatus,
    ConflictError,
    InvalidProfile,
    ManagedCluster,
    ManagedGroup,
    NotManaged,
    attach_activity,
)
from controller.backends.kube_api import JSON, KubeApi, TestFailed
from controller.backends.kuberay_cache import CacheSettings, KubeRayCache
from controller.backends.kuberay_patch import FightTracker, Op, Plan, plan_apply, plan_finish
from controller.backends.render import render_raycluster
from controller.domain import Activity, ClusterRef, Decision, NodeActivity
from controller.metrics.base import ActivitySource, ClusterActivity
from controller.policy.model import ClusterProfile, ScalingPolicy

log = logging.getLogger("rayops.kuberay")

ProfileSource = Callable[[], Mapping[str, ClusterProfile]]
PolicySource = Callable[[], Mapping[str, ScalingPolicy]]
OPT_IN_SELECTORS = (
    f"{keys.LABEL_MANAGED_BY}={keys.MANAGED_BY_VALUE}",
    f"{keys.LABEL_MANAGED}={keys.MANAGED_VALUE}",
)
POD_SELECTOR_CHUNK = 50  # cluster names per `ray.io/cluster in (...)` selector, to keep URLs short
WRITE_ATTEMPTS = 3  # read-modify-write rounds for people's writes (annotations, release)


def pointer(key: str) -> str:
    """A map key as one JSON-pointer token (`rayops.io/paused` -> `rayops.io~1paused`)."""
    return key.replace("~", "~0").replace("/", "~1")


def opt_in_test(labels: Mapping[str, str]) -> Op:
    """A `test` op that holds only while the cluster is still opted in the way it was when read."""
    if labels.get(keys.LABEL_MANAGED_BY) == keys.MANAGED_BY_VALUE:
        key, value = keys.LABEL_MANAGED_BY, keys.MANAGED_BY_VALUE
    else:
        key, value = keys.LABEL_MANAGED, keys.MANAGED_VALUE
    return {"op": "test", "path": f"/metadata/labels/{pointer(key)}", "value": value}


def _as_source(value: Any) -> Callable[[], Mapping[str, Any]]:
    if value is None:
        return dict
    return value if callable(value) else (lambda: value)


class KubeRayBackend:
    """`ScaleTarget` and `ClusterBackend` over RayClusters; synchronous, safe to share between threads
    (state kept between calls: the fight tracker, whose updates are single dict operations, the
    converted clusters, under a lock, and the optional cache, which has its own).

    `profiles` and `policies` are read at each create (they reload with the policy directory);
    `activity` tells idle from busy workers (without it every worker is UNKNOWN, so nothing is ever
    removed); `namespaces` limits what is touched: listing, and any cluster named in another namespace
    is reported absent (or refused at create) without asking the API, where the Roles grant nothing
    (None: all namespaces, which needs a ClusterRoleBinding);
    `dashboard_url` overrides the in-cluster head Service URL (for the activity and metrics sources:
    a controller outside the cluster, or a benchmark's stand-in);
    `connect_routes` False leaves OpenShift Routes unread (the controller, whose housekeeping reads
    the people's view but never shows an address, so its Role needs no `list routes`);
    `watch` True serves the controller's listings (`list_clusters`, `list_clusters_without_activity`)
    from an informer cache (kuberay_cache.py) once it has synced, instead of relisting every tick; the
    Roles must then grant `watch` on rayclusters and pods. Where watching is impossible (RBAC), it
    says so once and lists as before. `close()` stops the cache's threads.
    """

    def __init__(
        self,
        api: KubeApi,
        profiles: ProfileSource | Mapping[str, ClusterProfile] | None = None,
        *,
        activity: ActivitySource | None = None,
        policies: PolicySource | Mapping[str, ScalingPolicy] | None = None,
        namespaces: Sequence[str] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        dashboard_url: Callable[[ClusterRef], str | None] | None = None,
        fights: FightTracker | None = None,
        connect_routes: bool = True,
        watch: bool = False,
        cache_settings: CacheSettings | None = None,
    ) -> None:
        self.api = api
        self.connect_routes = connect_routes
        self._profiles: ProfileSource = _as_source(profiles)
        self._policies: PolicySource = _as_source(policies)
        self.activity = activity
        self.namespaces = tuple(namespaces) if namespaces is not None else None
        self._clock = clock
        self._dashboard_url = dashboard_url
        self.fights = fights or FightTracker()
        self.cache = KubeRayCache(api, self.namespaces, OPT_IN_SELECTORS, cache_settings) if watch else None
        self._cache_started = False
        self._converted: dict[ClusterRef, tuple[tuple[str, ...], ManagedCluster]] = {}
        self._converted_lock = threading.Lock()

    def close(self) -> None:
        """Stop the cache's watches (nothing else holds a thread or a connection)."""
        if self.cache is not None:
            self.cache.stop()

    # --- reading ----------------------------------------------------------------------------------

    def _opted_in(self, namespace: str | None = None) -> list[JSON]:
        """Opted-in RayClusters (two selectors: a label selector cannot OR two keys), by name."""
        scopes: Sequence[str | None] = (
            [namespace]
            if namespace is not None
            else (self.namespaces if self.namespaces is not None else [None])
        )
        found: dict[str, JSON] = {}
        for scope in scopes:
            for selector in OPT_IN_SELECTORS:
                for rc in self.api.list_rayclusters(scope, selector):
                    meta = rc.get("metadata") or {}
                    if keys.is_opted_in(meta.get("labels")):
                        found[str(meta.get("uid") or read.ref_of(rc))] = rc
        return sorted(found.values(), key=read.ref_of)

    def _pods(self, clusters: Sequence[JSON]) -> dict[ClusterRef, list[JSON]]:
        """The pods of each cluster, one list per namespace (chunked), not one per cluster."""
        by_ns: dict[str, list[str]] = {}
        for rc in clusters:
            ref = read.ref_of(rc)
            by_ns.setdefault(ref.namespace, []).append(ref.name)
        out: dict[ClusterRef, list[JSON]] = {read.ref_of(rc): [] for rc in clusters}
        for ns, names in by_ns.items():
            for start in range(0, len(names), POD_SELECTOR_CHUNK):
                chunk = names[start : start + POD_SELECTOR_CHUNK]
                selector = (
                    f"{keys.LABEL_RAY_CLUSTER}={chunk[0]}"
                    if len(chunk) == 1
                    else f"{keys.LABEL_RAY_CLUSTER} in ({','.join(chunk)})"
                )
                for pod in self.api.list_pods(ns, selector):
                    cluster = ((pod.get("metadata") or {}).get("labels") or {}).get(keys.LABEL_RAY_CLUSTER)
                    ref = ClusterRef(ns, str(cluster))
                    if ref in out:
                        out[ref].append(pod)
        return out

    def _activity(self, clusters: Sequence[JSON]) -> dict[ClusterRef, ClusterActivity]:
        if self.activity is None or not clusters:
            return {}
        urls = {}
        for rc in clusters:
            ref = read.ref_of(rc)
            override = self._dashboard_url(ref) if self._dashboard_url else None
            urls[ref] = override or read.in_cluster_dashboard(rc)
        return self.activity.activity(urls, self._clock())

    def _in_scope(self, namespace: str) -> bool:
        return self.namespaces is None or namespace in self.namespaces

    def _scope_note(self) -> str:
        return f"rayops manages {', '.join(self.namespaces or ()) or 'no namespace'}"

    def _read_managed(self, ref: ClusterRef) -> JSON:
        if not self._in_scope(ref.namespace):
            raise ClusterNotFound(
                f"no Ray cluster named {ref.name} in namespace {ref.namespace} ({self._scope_note()})"
            )
        rc = self.api.get_raycluster(ref.namespace, ref.name)
        if not keys.is_opted_in((rc.get("metadata") or {}).get("labels")):
            raise NotManaged(f"{ref} is not managed by rayops (label it {keys.LABEL_MANAGED}=true to opt in)")
        return rc

    # --- ScaleTarget ------------------------------------------------------------------------------

    def list_clusters(self) -> builtins.list[ManagedCluster]:
        """Opted-in clusters not being deleted (scaling one on its way out would only race the
        garbage collector)."""
        return self._list(with_activity=True)

    def list_clusters_without_activity(self) -> builtins.list[ManagedCluster]:
        """As `list_clusters`, without asking the dashboards (`DefersActivity`)."""
        return self._list(with_activity=False)

    def with_activity(self, clusters: Sequence[ManagedCluster]) -> builtins.list[ManagedCluster]:
        """The clusters again, their workers joined to the node activity their dashboards report.

        Listed without activity, only never-started pods are IDLE (no dashboard needed); they stay so.
        """
        if self.activity is None or not clusters:
            return list(clusters)
        found = self.activity.activity({c.ref: c.dashboard_url for c in clusters}, self._clock())
        out = []
        for c in clusters:
            activity = found.get(c.ref)
            if activity is None or activity.unavailable is not None:
                out.append(c)
                continue
            out.append(dataclasses.replace(c, groups=tuple(_joined(g, activity.nodes) for g in c.groups)))
        return out

    def _list(self, with_activity: bool) -> builtins.list[ManagedCluster]:
        clusters, pods = self._clusters_and_pods()
        activity = self._activity(clusters) if with_activity else {}
        out = []
        for rc in clusters:
            ref = read.ref_of(rc)
            if with_activity:
                out.append(self._with_url(read.managed_cluster(rc, pods[ref], activity.get(ref))))
            else:
                out.append(self._converted_cluster(rc, pods[ref]))
        with self._converted_lock:
            for gone in self._converted.keys() - {c.ref for c in out}:
                del self._converted[gone]
        return out

    def _clusters_and_pods(
        self,
    ) -> tuple[builtins.list[JSON], dict[ClusterRef, builtins.list[JSON]]]:
        """Opted-in clusters not being deleted, and each one's pods: from the cache once it has synced,
        else listed."""
        cached = self._cached()
        listed = self._opted_in() if cached is None else cached[0]
        clusters = [rc for rc in listed if not (rc.get("metadata") or {}).get("deletionTimestamp")]
        if cached is None:
            return clusters, self._pods(clusters)
        by_cluster = cached[1]
        return clusters, {ref: by_cluster.get(ref, []) for ref in map(read.ref_of, clusters)}

    def _converted_cluster(self, rc: JSON, pods: Sequence[JSON]) -> ManagedCluster:
        """`managed_cluster` without activity, reused while the RayCluster and its pods are the same
        versions (it depends on nothing else): a steady tick converts nothing."""
        ref = read.ref_of(rc)
        versions = (_version(rc), *(f"{_name(p)}@{_version(p)}" for p in pods))
        kept = self._converted.get(ref)
        if kept is not None and kept[0] == versions and all(versions):
            return kept[1]
        cluster = self._with_url(read.managed_cluster(rc, pods, None))
        with self._converted_lock:
            self._converted[ref] = (versions, cluster)
        return cluster

    def _with_url(self, cluster: ManagedCluster) -> ManagedCluster:
        if self._dashboard_url is None:
            return cluster
        return dataclasses.replace(
            cluster, dashboard_url=self._dashboard_url(cluster.ref) or cluster.dashboard_url
        )

    def _cached(self) -> tuple[builtins.list[JSON], dict[ClusterRef, builtins.list[JSON]]] | None:
        """The cache's clusters and pods once it has synced; None: list as before (no cache, not synced
        yet, or watching is impossible, which is said once and then the cache is dropped)."""
        cache = self.cache
        if cache is None:
            return None
        if not self._cache_started:  # one wait only: a cache that cannot sync must not slow every tick
            self._cache_started = True
            cache.start()
            cache.wait_ready(cache.settings.first_sync_wait_s)
        failure = cache.failure()
        if failure is not None:
            log.warning("cannot watch RayClusters and pods (%s): listing them every tick instead", failure)
            self.cache = None
            cache.stop()
            return None
        if not cache.ready():
            return None
        return cache.clusters(), cache.pods()

    def _observe(self, rc: JSON) -> None:
        """A RayCluster as our write returned it goes into the cache: the next tick decides on it."""
        if self.cache is not None and rc:
            self.cache.observe(rc)

    def apply(self, cluster: ManagedCluster, decisions: Sequence[Decision]) -> ApplyResult:
        now = self._clock()
        until = self.fights.holding(cluster.ref, now)
        if until is not None:
            return ApplyResult(
                cluster.ref,
                False,
                f"holding back after a persistent conflict until {until.isoformat(timespec='seconds')}",
                backoff_until=until,
            )
        self.fights.observe(cluster, now)
        plan = plan_apply(cluster, decisions)
        if not plan.ops:
            return ApplyResult(cluster.ref, False, "nothing to change")
        try:
            self._patch(cluster, plan)
        except TestFailed:
            self.fights.wrote(cluster.ref, plan.expected)
            raise
        self.fights.wrote(cluster.ref, plan.writes)
        return ApplyResult(cluster.ref, True, "; ".join(plan.details))

    def finish_removals(self, cluster: ManagedCluster) -> ApplyResult:
        plan = plan_finish(cluster)
        if not plan.ops:
            return ApplyResult(cluster.ref, False, "no finished removals to clear")
        self._patch(cluster, plan)
        return ApplyResult(cluster.ref, True, "; ".join(plan.details))

    def _patch(self, cluster: ManagedCluster, plan: Plan) -> None:
        if not keys.is_opted_in(dict(cluster.labels)):
            raise NotManaged(f"{cluster.ref} is not managed by rayops; nothing was written")
        ops = [opt_in_test(cluster.labels), *plan.ops]
        self._observe(self.api.patch_raycluster(cluster.ref.namespace, cluster.ref.name, ops))
        log.info("patched %s: %s", cluster.ref, "; ".join(plan.details))

    def set_annotations(self, ref: ClusterRef, updates: Mapping[str, str | None]) -> None:
        for key, value in updates.items():
            if value is not None and len(value.encode()) > keys.MAX_ANNOTATION_BYTES:
                raise BackendError(
                    f"annotation {key} would be {len(value.encode())} bytes "
                    f"(at most {keys.MAX_ANNOTATION_BYTES}); nothing was written"
                )

        def ops(rc: JSON) -> list[Op]:
            meta = rc.get("metadata") or {}
            current: dict[str, str] = meta.get("annotations") or {}
            if not current and "annotations" not in meta:
                added = {k: v for k, v in updates.items() if v is not None}
                return [{"op": "add", "path": "/metadata/annotations", "value": added}] if added else []
            out: list[Op] = []
            for key, value in updates.items():
                path = f"/metadata/annotations/{pointer(key)}"
                if value is None and key in current:
                    out.append({"op": "remove", "path": path})
                elif value is not None and current.get(key) != value:
                    out.append({"op": "add", "path": path, "value": value})
            return out

        self._read_modify_write(ref, ops)

    def _read_modify_write(self, ref: ClusterRef, build: Callable[[JSON], builtins.list[Op]]) -> None:
        """People's writes: read, build ops, patch with the opt-in test; retry a lost race a few times."""
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            rc = self._read_managed(ref)
            ops = build(rc)
            if not ops:
                return
            labels = (rc.get("metadata") or {}).get("labels") or {}
            try:
                self._observe(self.api.patch_raycluster(ref.namespace, ref.name, [opt_in_test(labels), *ops]))
                return
            except ConflictError:
                if attempt == WRITE_ATTEMPTS:
                    raise
                log.info("%s changed while being written (attempt %d); reading it again", ref, attempt)

    # --- ClusterBackend ---------------------------------------------------------------------------

    def create(self, request: ClusterRequest) -> ClusterStatus:
        if not self._in_scope(request.namespace):
            raise NotManaged(
                f"rayops does not manage namespace {request.namespace} ({self._scope_note()}): "
                "nothing was created"
            )
        profiles = self._profiles()
        profile = profiles.get(request.profile)
        if profile is None:
            known = ", ".join(sorted(profiles)) or "none"
            raise InvalidProfile(
                f"no profile named {request.profile} (profiles: {known}): nothing was created"
            )
        policy = self._policies().get(profile.spec.scaling_policy or "")
        body = render_raycluster(
            profile, request, self._clock(), bounds_mode=bool(policy and policy.spec.mode == "bounds")
        )
        ref = ClusterRef(request.namespace, request.name)
        try:
            created = self.api.create_raycluster(request.namespace, body)
        except AlreadyExists:
            raise AlreadyExists(
                f"a Ray cluster named {request.name} already exists in {request.namespace}"
            ) from None
        except InvalidProfile as e:
            raise InvalidProfile(f"{e}: nothing was created") from e
        except BackendUnavailable as e:
            created = self._resolve_lost_create(ref, body, e)
        self._observe(created)
        log.info("created %s from profile %s for %s", ref, profile.name, request.requester)
        return read.cluster_status(created, [], None)

    def _resolve_lost_create(self, ref: ClusterRef, body: JSON, error: BackendUnavailable) -> JSON:
        """After a timeout or 5xx the object may exist anyway: ours if it carries our annotations."""
        try:
            found = self.api.get_raycluster(ref.namespace, ref.name)
        except ClusterNotFound:
            raise BackendUnavailable(f"{error}; nothing was created") from error
        ours = body["metadata"]["annotations"]
        theirs = (found.get("metadata") or {}).get("annotations") or {}
        if all(theirs.get(k) == v for k, v in ours.items()):
            log.info("%s: the create's answer was lost but the cluster was created", ref)
            return found
        raise AlreadyExists(f"a Ray cluster named {ref.name} already exists in {ref.namespace}") from error

    def get(self, ref: ClusterRef) -> ClusterStatus:
        rc = self._read_managed(ref)
        pods = self._pods([rc])[ref]
        return read.cluster_status(rc, pods, self._routes(ref.namespace))

    def _routes(self, namespace: str) -> builtins.list[JSON] | None:
        return self.api.list_routes(namespace) if self.connect_routes else None

    def list(self, namespace: str | None = None) -> builtins.list[ClusterStatus]:
        if namespace is not None and not self._in_scope(namespace):
            return []
        clusters = self._opted_in(namespace)
        pods = self._pods(clusters)
        routes: dict[str, builtins.list[JSON] | None] = {}
        out = []
        for rc in clusters:
            ref = read.ref_of(rc)
            if ref.namespace not in routes:
                routes[ref.namespace] = self._routes(ref.namespace)
            out.append(read.cluster_status(rc, pods[ref], routes[ref.namespace]))
        return out

    def delete(self, ref: ClusterRef) -> None:
        rc = self._read_managed(ref)
        uid = (rc.get("metadata") or {}).get("uid")
        try:
            self.api.delete_raycluster(ref.namespace, ref.name, uid=uid)
        except ClusterNotFound:
            log.info("%s was already gone when deleted (an earlier attempt's answer was lost)", ref)
        if self.cache is not None:
            self.cache.forget(rc)
        log.info("deleted %s", ref)

    def release(self, ref: ClusterRef) -> None:
        def ops(rc: JSON) -> builtins.list[Op]:
            meta = rc.get("metadata") or {}
            out: builtins.list[Op] = []
            for i, g in enumerate(read.worker_groups(rc)):
                pending = read.workers_to_delete(g)
                if pending:
                    path = f"/spec/workerGroupSpecs/{i}"
                    out += [
                        {"op": "test", "path": f"{path}/groupName", "value": g.get("groupName")},
                        {
                            "op": "test",
                            "path": f"{path}/scaleStrategy/workersToDelete",
                            "value": list(pending),
                        },
                        {"op": "replace", "path": f"{path}/scaleStrategy/workersToDelete", "value": []},
                    ]
            for key in meta.get("annotations") or {}:
                if key.startswith(keys.PREFIX):
                    out.append({"op": "remove", "path": f"/metadata/annotations/{pointer(key)}"})
            for key, value in (meta.get("labels") or {}).items():
                if key.startswith(keys.PREFIX) or (
                    key == keys.LABEL_MANAGED_BY and value == keys.MANAGED_BY_VALUE
                ):
                    out.append({"op": "remove", "path": f"/metadata/labels/{pointer(key)}"})
            return out

        self._read_modify_write(ref, ops)
        log.info("released %s: rayops' labels, annotations and pending removals are gone", ref)


def _version(obj: JSON) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


def _name(obj: JSON) -> str:
    return str((obj.get("metadata") or {}).get("name") or "")


def _joined(group: ManagedGroup, nodes: Sequence[NodeActivity]) -> ManagedGroup:
    """The group with its workers joined to `nodes`; never-started pods (IDLE already) stay IDLE."""
    joined = attach_activity(group.workers, nodes)
    workers = tuple(
        dataclasses.replace(new, activity=Activity.IDLE) if old.activity == Activity.IDLE else new
        for old, new in zip(group.workers, joined, strict=True)
    )
    return dataclasses.replace(group, workers=workers)
