"""An informer cache of opted-in RayClusters and their pods, so a tick lists nothing.

Relisting 1,000 RayClusters and 4,000 pods and decoding them every tick cost about a second of CPU
(docs/benchmarks.md, P3). Kubernetes operators keep a cache instead: list once, then watch from the
list's resourceVersion, apply each event, resume from the last resourceVersion when a watch ends,
and list again only when the server says the resourceVersion is too old (410 Gone).

`KubeRayCache` does that with one `Informer` (a daemon thread) per watched (resource, namespace,
selector): two per namespace for RayClusters (a label selector cannot OR the two opt-in labels) and
one for the namespace's Ray pods. Reads take a snapshot under a lock and never call the API.

The cache may be behind the server; what keeps decisions correct is unchanged: every write is
guarded by `test` ops or preconditions on what was read, and people's writes read their base
directly (`KubeRayBackend._read_managed`), never from here. What the cache adds is that a write's
answer goes into it at once (`observe`, `forget`), so the next tick does not decide again on what it
just changed.

resourceVersions are opaque to clients in principle; where both are integers (etcd's revisions, and
the stand-in's) an older one never replaces a newer one, so a watch that is behind cannot undo a write
observed here. Where they are not integers, the later arrival wins.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from controller import keys
from controller.backends import kuberay_read as read
from controller.backends.base import BackendError
from controller.backends.kube_api import JSON, Forbidden, KubeApi, Listed, WatchExpired, WatchStream
from controller.domain import ClusterRef

log = logging.getLogger("rayops.kuberay.cache")

Key = tuple[str, str]  # (namespace, name)
POD_SELECTOR = keys.LABEL_RAY_CLUSTER  # every Ray pod: KubeRay labels each with its cluster's name


@dataclass(frozen=True)
class CacheSettings:
    """How long a watch runs before it is resumed (jittered, so many watches do not end in step), the
    backoff after a failed list or watch, and how long the first listing waits for the first sync."""

    watch_timeout_s: float = 300.0
    backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    first_sync_wait_s: float = 10.0


def _version(obj: JSON) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


def _key(obj: JSON) -> Key:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


def without_managed_fields(obj: JSON) -> JSON:
    """Server-side apply's bookkeeping is often the largest part of an object, and nothing reads it:
    client-go's informers drop it too."""
    meta = obj.get("metadata")
    if isinstance(meta, dict) and "managedFields" in meta:
        obj = {**obj, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}
    return obj


def slim_pod(pod: JSON) -> JSON:
    """What the controller's view reads of a pod (kuberay_read.managed_cluster: metadata, status, the
    containers' names), so thousands of pods' full specs (env, volumes, probes) are not held. A reader
    of other spec fields must not read pods from this cache."""
    spec = pod.get("spec") or {}
    containers = [{"name": c.get("name")} for c in spec.get("containers") or [] if isinstance(c, dict)]
    slim = {k: v for k, v in without_managed_fields(pod).items() if k != "spec"}
    slim["spec"] = {"containers": containers}
    return slim


def _older(candidate: str, held: str) -> bool:
    """True when `candidate` is surely older than `held` (both integers); opaque versions never are."""
    if candidate.isdigit() and held.isdigit():
        return int(candidate) < int(held)
    return False


class Informer:
    """One list-then-watch loop over one (resource, namespace, selector), in its own daemon thread.

    `matches` says whether an object belongs here (namespace and selector), so a write's answer can be
    placed without asking the server; `transform` is what is kept of each object. `generation` changes
    with every change of the items, so readers can keep what they derived from an unchanged generation.
    """

    def __init__(
        self,
        resource: str,
        name: str,
        list_fn: Callable[[], Listed],
        watch_fn: Callable[[str, float], WatchStream],
        matches: Callable[[JSON], bool],
        settings: CacheSettings,
        transform: Callable[[JSON], JSON] = without_managed_fields,
    ) -> None:
        self.resource = resource
        self.name = name
        self._list = list_fn
        self._watch = watch_fn
        self.matches = matches
        self._transform = transform
        self.settings = settings
        self._lock = threading.Lock()
        self._items: dict[Key, JSON] = {}
        self._gone: dict[Key, str] = {}  # deleted through us: events not newer than this are stale
        self._version: str | None = None  # where the next watch resumes; None: list first
        self.generation = 0
        self.synced = threading.Event()
        self.failure: str | None = None  # set when watching is impossible (RBAC): the thread has ended
        self._stopping = threading.Event()
        self._stream: WatchStream | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"informer {self.name}", daemon=True)
            self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stopping.set()
        with self._lock:
            stream = self._stream
        if stream is not None:
            stream.close()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)

    @property
    def done(self) -> bool:
        """Synced, or failed for good: either way a reader waits no longer."""
        return self.synced.is_set() or self.failure is not None

    # --- reading and writing through -----------------------------------------------------------

    def items(self) -> list[JSON]:
        with self._lock:
            return list(self._items.values())

    def versions(self) -> dict[Key, str]:
        with self._lock:
            return {k: _version(v) for k, v in self._items.items()}

    def observe(self, obj: JSON) -> None:
        """An object a write returned: held if it belongs here, dropped if it no longer does."""
        key = _key(obj)
        with self._lock:
            if self.matches(obj):
                self._upsert(key, self._transform(obj))
            else:
                self._drop(key, _version(obj))

    def forget(self, obj: JSON) -> None:
        """An object deleted through us (`obj` as read before the delete): gone now, and events not
        newer than it (a watch that is behind) do not bring it back."""
        key = _key(obj)
        with self._lock:
            self._gone[key] = _version(obj)
            if self._items.pop(key, None) is not None:
                self._changed()

    # --- the loop -------------------------------------------------------------------------------

    def _run(self) -> None:
        delay = self.settings.backoff_s
        while not self._stopping.is_set():
            try:
                if self._version is None:
                    self._relist()
                self._watch_once()
                delay = self.settings.backoff_s
            except WatchExpired as e:
                log.info("%s: %s; listing again", self.name, e)
                self._version = None
            except Forbidden as e:
                self._fail(str(e))
                return
            except BackendError as e:
                if self._stopping.is_set():
                    return
                log.warning("%s: %s; retrying in %.1f s", self.name, e, delay)
                self._stopping.wait(delay * (0.5 + random.random() / 2))
                delay = min(self.settings.max_backoff_s, delay * 2)
            except Exception:  # a bug must not silently freeze the cache: log it, back off, go on
                log.exception("%s: unexpected failure; listing again", self.name)
                self._version = None
                self._stopping.wait(delay)
                delay = min(self.settings.max_backoff_s, delay * 2)

    def _relist(self) -> None:
        listed = self._list()
        with self._lock:
            fresh = {
                _key(obj): self._transform(obj)
                for obj in listed.items
                if _key(obj) not in self._gone or _older(self._gone[_key(obj)], _version(obj))
            }
            for key, held in self._items.items():
                # A write observed after the list was taken is newer than what the list says.
                if _older(listed.resource_version, _version(held)):
                    fresh[key] = held
            self._items = fresh
            self._gone.clear()
            self._version = listed.resource_version
            self._changed()
        self.synced.set()

    def _watch_once(self) -> None:
        timeout = self.settings.watch_timeout_s * (1 + random.random())
        assert self._version is not None
        stream = self._watch(self._version, timeout)
        with self._lock:
            self._stream = stream
        try:
            if self._stopping.is_set():
                return
            for kind, obj in stream:
                self._apply(kind, obj)
        finally:
            with self._lock:
                self._stream = None
            stream.close()

    def _apply(self, kind: str, obj: JSON) -> None:
        version = _version(obj)
        key = _key(obj)
        with self._lock:
            if kind in ("ADDED", "MODIFIED"):
                self._upsert(key, self._transform(obj))
            elif kind == "DELETED":
                self._drop(key, version)
                self._gone.pop(key, None)
            if version:
                self._version = version

    def _upsert(self, key: Key, obj: JSON) -> None:
        version = _version(obj)
        held = self._items.get(key)
        if held is not None and (_older(version, _version(held)) or _version(held) == version):
            return
        gone = self._gone.get(key)
        if gone is not None and not _older(gone, version):
            return
        self._items[key] = obj
        self._changed()

    def _drop(self, key: Key, version: str) -> None:
        held = self._items.get(key)
        if held is not None and not _older(version, _version(held)):
            del self._items[key]
            self._changed()

    def _changed(self) -> None:
        self.generation += 1

    def _fail(self, reason: str) -> None:
        self.failure = reason
        self.synced.clear()


def _in_scope(namespace: str | None) -> Callable[[JSON], bool]:
    def inside(obj: JSON) -> bool:
        return namespace is None or _key(obj)[0] == namespace

    return inside


def _labelled(namespace: str | None, selector: str) -> Callable[[JSON], bool]:
    """`key=value` or `key` (exists): the two selector forms the cache watches with."""
    key, _, value = selector.partition("=")
    inside = _in_scope(namespace)

    def matches(obj: JSON) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return inside(obj) and key in labels and (not value or labels[key] == value)

    return matches


class KubeRayCache:
    """Opted-in RayClusters and their pods, kept by watches; see the module docstring.

    `start()` is idempotent; `ready()` says whether every informer has synced (reads before that,
    or after a failure, must not come from here); `failure()` why watching is impossible, if it is.
    """

    def __init__(
        self,
        api: KubeApi,
        namespaces: Sequence[str] | None,
        opt_in_selectors: Iterable[str],
        settings: CacheSettings | None = None,
    ) -> None:
        self.settings = settings or CacheSettings()
        scopes: Sequence[str | None] = list(namespaces) if namespaces is not None else [None]
        self._clusters = [
            self._clusters_informer(api, scope, selector) for scope in scopes for selector in opt_in_selectors
        ]
        self._pods = [self._pods_informer(api, scope) for scope in scopes]
        self._started = False
        self._start_lock = threading.Lock()
        self._pods_memo: tuple[tuple[int, ...], dict[ClusterRef, list[JSON]]] | None = None

    def _clusters_informer(self, api: KubeApi, scope: str | None, selector: str) -> Informer:
        def list_fn() -> Listed:
            return api.list_rayclusters_versioned(scope, selector)

        def watch_fn(version: str, timeout_s: float) -> WatchStream:
            return api.watch_rayclusters(scope, selector, version, timeout_s)

        name = f"rayclusters {scope or 'all namespaces'} {selector}"
        return Informer("rayclusters", name, list_fn, watch_fn, _labelled(scope, selector), self.settings)

    def _pods_informer(self, api: KubeApi, scope: str | None) -> Informer:
        def list_fn() -> Listed:
            return api.list_pods_versioned(scope, POD_SELECTOR)

        def watch_fn(version: str, timeout_s: float) -> WatchStream:
            return api.watch_pods(scope, POD_SELECTOR, version, timeout_s)

        name = f"pods {scope or 'all namespaces'} {POD_SELECTOR}"
        matches = _labelled(scope, POD_SELECTOR)
        return Informer("pods", name, list_fn, watch_fn, matches, self.settings, slim_pod)

    @property
    def informers(self) -> list[Informer]:
        return [*self._clusters, *self._pods]

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        with self._start_lock:
            if not self._started:
                self._started = True
                for informer in self.informers:
                    informer.start()

    def stop(self) -> None:
        for informer in self.informers:
            informer.stop()

    def wait_ready(self, timeout_s: float) -> bool:
        """Wait until every informer has synced or one has failed; True when all synced."""
        deadline = time.monotonic() + timeout_s
        for informer in self.informers:
            while not informer.done:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                informer.synced.wait(min(left, 0.05))
        return self.ready()

    def ready(self) -> bool:
        return all(i.synced.is_set() and i.failure is None for i in self.informers)

    def failure(self) -> str | None:
        return next((i.failure for i in self.informers if i.failure is not None), None)

    # --- reads ----------------------------------------------------------------------------------

    def clusters(self) -> list[JSON]:
        """Opted-in RayClusters, by name (one object however many selectors hold it)."""
        found: dict[str, JSON] = {}
        for informer in self._clusters:
            for rc in informer.items():
                uid = str((rc.get("metadata") or {}).get("uid") or read.ref_of(rc))
                held = found.get(uid)
                if held is None or not _older(_version(rc), _version(held)):
                    found[uid] = rc  # the newer, where one selector's watch is ahead of the other's
        opted_in = (rc for rc in found.values() if keys.is_opted_in((rc.get("metadata") or {}).get("labels")))
        return sorted(opted_in, key=read.ref_of)

    def pods(self) -> dict[ClusterRef, list[JSON]]:
        """Ray pods by cluster, each cluster's by name (as a list answers); the grouping is kept while
        no pod changed. Callers must not modify the lists."""
        generations = tuple(i.generation for i in self._pods)
        memo = self._pods_memo
        if memo is not None and memo[0] == generations:
            return memo[1]
        by_cluster: dict[ClusterRef, list[JSON]] = {}
        for informer in self._pods:
            for pod in informer.items():
                meta = pod.get("metadata") or {}
                cluster = (meta.get("labels") or {}).get(keys.LABEL_RAY_CLUSTER)
                ref = ClusterRef(str(meta.get("namespace") or ""), str(cluster))
                by_cluster.setdefault(ref, []).append(pod)
        for pods in by_cluster.values():
            pods.sort(key=lambda p: str((p.get("metadata") or {}).get("name") or ""))
        self._pods_memo = (generations, by_cluster)
        return by_cluster

    # --- writes through -------------------------------------------------------------------------

    def observe(self, rc: JSON) -> None:
        """A RayCluster as a write of ours returned it."""
        for informer in self._clusters:
            informer.observe(rc)

    def forget(self, rc: JSON) -> None:
        """A RayCluster deleted through us, as read before the delete."""
        for informer in self._clusters:
            informer.forget(rc)
