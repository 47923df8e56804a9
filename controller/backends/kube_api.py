"""The one module that talks to the Kubernetes API (official `kubernetes` client).

Everything else in rayops goes through `KubeApi`, so three things hold in one place:

- **Errors are rayops' typed errors** (`controller.backends.base`): 404 on a RayCluster is
  `ClusterNotFound`; 409 is `AlreadyExists` or `ConflictError`; 422 is `ConflictError` when a JSON
  patch `test` failed (someone changed a field we read) and `InvalidObject` when the schema refused the
  object; 401/403 are `Forbidden`; 429, 5xx, timeouts and connection failures are retried with
  exponential backoff (honouring `Retry-After`) and then become `BackendUnavailable`. Every write rayops
  makes is safe to repeat after a lost answer (creates are checked by the caller, patches carry `test`
  ops or preconditions), so writes are retried too; a create only when the server surely did not act
  (429, or never reached): otherwise the caller reads back whether the object exists.
- **Every request has a timeout** (connect, read); no call can hang a reconcile tick.
- **No credential reaches a log line or an error message**: messages are built from the verb, the
  resource and the server's Status message only, never from the client configuration or `str()` of a
  client exception (which would print headers).

Objects go in and come out as plain JSON dicts in API shape (`_preload_content=False`), the same for
custom objects and core kinds, so callers never see the client's generated model classes.

`RBAC_RULES` lists every (API group, resource, subresource, verb) this module can send; a test drives
the whole surface against the stand-in's audit log and `deploy/` compares the Roles with it.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from controller.backends.base import (
    AlreadyExists,
    BackendError,
    BackendUnavailable,
    ClusterNotFound,
    ConflictError,
    InvalidProfile,
)

log = logging.getLogger("rayops.kube")

JSON = dict[str, Any]
RAY_GROUP, RAY_VERSION, RAYCLUSTERS = "ray.io", "v1", "rayclusters"
ROUTE_GROUP, ROUTE_VERSION, ROUTES = "route.openshift.io", "v1", "routes"
JSON_PATCH = "application/json-patch+json"
LIST_PAGE = 500
ROUTES_ABSENT_S = 300.0
# Connections kept for watches: each open watch holds one for its whole life (3 per managed namespace);
# a pool slot costs nothing until used, and a full pool would drop a connection at each watch's end.
WATCH_POOL = 256

RBAC_RULES: frozenset[tuple[str, str, str, str]] = frozenset(
    {
        # (api group, resource, subresource, verb)
        ("ray.io", "rayclusters", "", "get"),
        ("ray.io", "rayclusters", "", "list"),
        ("ray.io", "rayclusters", "", "watch"),
        ("ray.io", "rayclusters", "", "create"),
        ("ray.io", "rayclusters", "", "patch"),
        ("ray.io", "rayclusters", "", "delete"),
        ("", "pods", "", "list"),
        ("", "pods", "", "watch"),
        ("route.openshift.io", "routes", "", "list"),
        ("", "events", "", "create"),
        ("", "events", "", "list"),
        ("coordination.k8s.io", "leases", "", "get"),
        ("coordination.k8s.io", "leases", "", "create"),
        ("coordination.k8s.io", "leases", "", "update"),
        ("", "configmaps", "", "get"),
        ("", "configmaps", "", "list"),
        ("", "configmaps", "", "create"),
        ("", "configmaps", "", "update"),
        ("", "configmaps", "", "delete"),
    }
)
"""Everything `KubeApi` may send. The controller uses RayCluster get/list/watch/patch/delete, pods
list/watch (its cache), events create, the lease rules and one configmap get (the global switch); the
bot RayCluster get/list/create/patch/delete, pods list, routes list, events list and the configmap
rules (approvals, the switch). tests/deploy/test_rbac.py records which process sends what, per
namespace, checks that the two together use exactly this set, and that deploy/'s Roles grant exactly
what each uses."""


class Forbidden(BackendError):
    """401/403: this identity may not do that (RBAC, or an expired token). Not retried."""


class NotFound(BackendError):
    """404 on an object other than a RayCluster (a RayCluster's 404 is `ClusterNotFound`)."""


class InvalidObject(InvalidProfile):
    """422 from the API server's validation (the CRD schema, ObjectMeta rules): nothing was written."""


class WatchExpired(BackendError):
    """410 Gone on a watch: the resourceVersion it resumes from is older than the server keeps. Only a
    fresh list can say what changed since, so a cache re-lists on it instead of retrying."""


class TestFailed(ConflictError):
    """422 from a JSON patch `test` op: a field we read has changed since; re-read and decide again."""

    __test__ = False  # not a pytest class, whatever its name says


@dataclass(frozen=True)
class _Op:
    """What a request is about, for messages: `patch rayclusters team-a/demo`."""

    verb: str
    resource: str
    namespace: str | None = None
    name: str | None = None
    has_tests: bool = False

    def __str__(self) -> str:
        where = "/".join(p for p in (self.namespace, self.name) if p) or "all namespaces"
        return f"{self.verb} {self.resource} {where}"


class Listed(NamedTuple):
    """A whole list and the resourceVersion it was taken at: where a watch picks up without a gap."""

    items: list[JSON]
    resource_version: str


class WatchStream:
    """One open watch: iterate it for (event type, object) pairs, as plain dicts (`ADDED`, `MODIFIED`,
    `DELETED`, `BOOKMARK`); the iteration ends when the server ends the watch (its timeout).

    Errors are typed as for every other call: an `ERROR` event or a 410 is `WatchExpired`, 403
    `Forbidden`, a broken or timed-out connection `BackendUnavailable`. `close()` may be called from
    any thread (a cache stopping): it shuts the socket so a blocked read returns at once, and the
    iteration then simply ends.
    """

    def __init__(self, op: _Op, response: Any) -> None:
        self._op = op
        self._response = response
        self._closed = threading.Event()

    def __iter__(self) -> Iterator[tuple[str, JSON]]:
        try:
            for line in iter_resp_lines(self._response):
                if not line.strip():
                    continue
                kind, obj = _watch_event(line, self._op)
                yield kind, obj
        except (urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            if self._closed.is_set():
                return
            problem = "a garbled event" if isinstance(exc, ValueError) else _transport_problem(exc)
            raise BackendUnavailable(f"{self._op}: {problem}") from exc
        finally:
            self._release()

    def close(self) -> None:
        self._closed.set()
        sock = getattr(getattr(self._response, "connection", None), "sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):  # already closed: nothing left to wake
                sock.shutdown(socket.SHUT_RDWR)

    def _release(self) -> None:
        with contextlib.suppress(urllib3.exceptions.HTTPError, OSError):  # best effort: it is over
            self._response.close()
            self._response.release_conn()


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries for transient failures; `Retry-After` raises the delay, capped at `max_delay_s`."""

    attempts: int = 3
    base_delay_s: float = 0.2
    max_delay_s: float = 5.0
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 15.0


class KubeApi:
    """Typed access to the few Kubernetes endpoints rayops uses; see the module docstring for the rules.

    `api_client` carries the server address and credentials (kubeconfig, in-cluster or explicit; see the
    constructors). `sleep` is injectable so tests can check backoff without waiting.
    """

    def __init__(
        self,
        api_client: k8s.ApiClient,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.api_client = api_client
        _disable_client_retries(api_client)
        self.retry = retry or RetryPolicy()
        self._sleep = sleep
        self._custom = k8s.CustomObjectsApi(api_client)
        self._core = k8s.CoreV1Api(api_client)
        self._coord = k8s.CoordinationV1Api(api_client)
        self._routes_absent_until = 0.0  # monotonic time until which Routes are known to be absent
        self._watch_apis: tuple[k8s.CustomObjectsApi, k8s.CoreV1Api] | None = None
        self._watch_lock = threading.Lock()

    # --- construction ---------------------------------------------------------------------------

    @classmethod
    def from_kubeconfig(
        cls, path: str | None = None, context: str | None = None, retry: RetryPolicy | None = None
    ) -> KubeApi:
        return cls(k8s_config.new_client_from_config(config_file=path, context=context), retry)

    @classmethod
    def in_cluster(cls, retry: RetryPolicy | None = None) -> KubeApi:
        """The pod's ServiceAccount token and CA (rotated tokens are re-read by the client)."""
        cfg = k8s.Configuration()
        k8s_config.load_incluster_config(client_configuration=cfg)
        return cls(k8s.ApiClient(cfg), retry)

    @classmethod
    def from_token(
        cls,
        host: str,
        token: str,
        ca_cert: str | None = None,
        verify_ssl: bool = True,
        retry: RetryPolicy | None = None,
    ) -> KubeApi:
        cfg = k8s.Configuration()
        cfg.host = host
        cfg.api_key = {"BearerToken": token}
        cfg.api_key_prefix = {"BearerToken": "Bearer"}
        cfg.ssl_ca_cert = ca_cert
        cfg.verify_ssl = verify_ssl
        return cls(k8s.ApiClient(cfg), retry)

    @classmethod
    def from_environment(
        cls, kubeconfig: str | None = None, context: str | None = None, retry: RetryPolicy | None = None
    ) -> KubeApi:
        """In a pod: the ServiceAccount; elsewhere: the kubeconfig (`$KUBECONFIG` or ~/.kube/config)."""
        if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            return cls.in_cluster(retry)
        # Read $KUBECONFIG now: the client reads it once, when it is imported.
        return cls.from_kubeconfig(kubeconfig or os.environ.get("KUBECONFIG"), context, retry)

    # --- RayClusters ----------------------------------------------------------------------------

    def get_raycluster(self, namespace: str, name: str) -> JSON:
        return self._call(
            _Op("get", RAYCLUSTERS, namespace, name),
            self._custom.get_namespaced_custom_object,
            RAY_GROUP,
            RAY_VERSION,
            namespace,
            RAYCLUSTERS,
            name,
        )

    def list_rayclusters(self, namespace: str | None = None, label_selector: str | None = None) -> list[JSON]:
        """All pages; `namespace` None lists across namespaces (needs a ClusterRole)."""
        return self.list_rayclusters_versioned(namespace, label_selector).items

    def list_rayclusters_versioned(self, namespace: str | None, label_selector: str | None) -> Listed:
        """As `list_rayclusters`, with the list's resourceVersion (to watch from)."""
        op = _Op("list", RAYCLUSTERS, namespace)
        return self._list_versioned(op, *self._rayclusters_call(self._custom, namespace), label_selector)

    def watch_rayclusters(
        self, namespace: str | None, label_selector: str | None, resource_version: str, timeout_s: float
    ) -> WatchStream:
        """Changes since `resource_version` (from `list_rayclusters_versioned` or the last event), for
        about `timeout_s` seconds; see `WatchStream`."""
        custom, _ = self._watchers()
        fn, args = self._rayclusters_call(custom, namespace)
        op = _Op("watch", RAYCLUSTERS, namespace)
        return self._open_watch(op, fn, args, label_selector, resource_version, timeout_s)

    @staticmethod
    def _rayclusters_call(
        custom: k8s.CustomObjectsApi, namespace: str | None
    ) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        if namespace is None:
            return custom.list_cluster_custom_object, (RAY_GROUP, RAY_VERSION, RAYCLUSTERS)
        return custom.list_namespaced_custom_object, (RAY_GROUP, RAY_VERSION, namespace, RAYCLUSTERS)

    def create_raycluster(self, namespace: str, body: Mapping[str, Any]) -> JSON:
        name = str((body.get("metadata") or {}).get("name", ""))
        return self._call(
            _Op("create", RAYCLUSTERS, namespace, name),
            self._custom.create_namespaced_custom_object,
            RAY_GROUP,
            RAY_VERSION,
            namespace,
            RAYCLUSTERS,
            dict(body),
        )

    def patch_raycluster(self, namespace: str, name: str, ops: Sequence[Mapping[str, Any]]) -> JSON:
        """One JSON patch (RFC 6902). A failed `test` op raises `TestFailed` (a `ConflictError`)."""
        has_tests = any(op.get("op") == "test" for op in ops)
        return self._call(
            _Op("patch", RAYCLUSTERS, namespace, name, has_tests),
            self._custom.patch_namespaced_custom_object,
            RAY_GROUP,
            RAY_VERSION,
            namespace,
            RAYCLUSTERS,
            name,
            [dict(op) for op in ops],
            _content_type=JSON_PATCH,
        )

    def delete_raycluster(self, namespace: str, name: str, uid: str | None = None) -> None:
        """Delete (pods and services follow by owner reference); `uid` makes sure it is the object read."""
        options = k8s.V1DeleteOptions(
            propagation_policy="Background", preconditions=k8s.V1Preconditions(uid=uid) if uid else None
        )
        self._call(
            _Op("delete", RAYCLUSTERS, namespace, name),
            self._custom.delete_namespaced_custom_object,
            RAY_GROUP,
            RAY_VERSION,
            namespace,
            RAYCLUSTERS,
            name,
            body=options,
        )

    # --- pods and routes (read only) ------------------------------------------------------------

    def list_pods(self, namespace: str, label_selector: str) -> list[JSON]:
        return self._list(
            _Op("list", "pods", namespace),
            self._core.list_namespaced_pod,
            namespace,
            label_selector=label_selector,
        )

    def list_pods_versioned(self, namespace: str | None, label_selector: str) -> Listed:
        """Pods with the list's resourceVersion (to watch from); `namespace` None: all namespaces."""
        op = _Op("list", "pods", namespace)
        return self._list_versioned(op, *self._pods_call(self._core, namespace), label_selector)

    def watch_pods(
        self, namespace: str | None, label_selector: str, resource_version: str, timeout_s: float
    ) -> WatchStream:
        """Pod changes since `resource_version`; see `watch_rayclusters`."""
        _, core = self._watchers()
        fn, args = self._pods_call(core, namespace)
        op = _Op("watch", "pods", namespace)
        return self._open_watch(op, fn, args, label_selector, resource_version, timeout_s)

    @staticmethod
    def _pods_call(core: k8s.CoreV1Api, namespace: str | None) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        if namespace is None:
            return core.list_pod_for_all_namespaces, ()
        return core.list_namespaced_pod, (namespace,)

    def list_routes(self, namespace: str) -> list[JSON] | None:
        """OpenShift Routes in a namespace, or None where the API has none (plain Kubernetes: 404) or
        this identity may not list them (403): Routes are optional, the head Service always works.
        Either answer is remembered for a while, so plain Kubernetes does not pay a 404 per status."""
        if time.monotonic() < self._routes_absent_until:
            return None
        try:
            return self._list(
                _Op("list", ROUTES, namespace),
                self._custom.list_namespaced_custom_object,
                ROUTE_GROUP,
                ROUTE_VERSION,
                namespace,
                ROUTES,
            )
        except (NotFound, Forbidden) as e:
            log.debug("no OpenShift Routes in %s: %s", namespace, e)
            self._routes_absent_until = time.monotonic() + ROUTES_ABSENT_S
            return None

    # --- events ---------------------------------------------------------------------------------

    def create_event(self, namespace: str, body: Mapping[str, Any]) -> JSON:
        name = str((body.get("metadata") or {}).get("name", ""))
        return self._call(
            _Op("create", "events", namespace, name),
            self._core.create_namespaced_event,
            namespace,
            dict(body),
        )

    def list_events(self, namespace: str | None, field_selector: str | None = None) -> list[JSON]:
        op = _Op("list", "events", namespace)
        if namespace is None:
            return self._list(op, self._core.list_event_for_all_namespaces, field_selector=field_selector)
        return self._list(op, self._core.list_namespaced_event, namespace, field_selector=field_selector)

    # --- leases (leader election) ---------------------------------------------------------------

    def get_lease(self, namespace: str, name: str) -> JSON | None:
        try:
            return self._call(
                _Op("get", "leases", namespace, name), self._coord.read_namespaced_lease, name, namespace
            )
        except NotFound:
            return None

    def create_lease(self, namespace: str, body: Mapping[str, Any]) -> JSON:
        """AlreadyExists when another candidate created it first."""
        name = str((body.get("metadata") or {}).get("name", ""))
        return self._call(
            _Op("create", "leases", namespace, name),
            self._coord.create_namespaced_lease,
            namespace,
            dict(body),
        )

    def replace_lease(self, namespace: str, name: str, body: Mapping[str, Any]) -> JSON:
        """PUT with the body's `metadata.resourceVersion`: ConflictError when another candidate won."""
        return self._call(
            _Op("update", "leases", namespace, name),
            self._coord.replace_namespaced_lease,
            name,
            namespace,
            dict(body),
        )

    # --- configmaps (durable bot state: approvals, the global pause switch) -----------------------

    def get_configmap(self, namespace: str, name: str) -> JSON | None:
        try:
            return self._call(
                _Op("get", "configmaps", namespace, name),
                self._core.read_namespaced_config_map,
                name,
                namespace,
            )
        except NotFound:
            return None

    def list_configmaps(self, namespace: str | None, label_selector: str | None = None) -> list[JSON]:
        """All pages; `namespace` None lists across namespaces (needs a ClusterRoleBinding, which the
        deployment does not grant: only a developer's kubeconfig without managed namespaces uses it)."""
        op = _Op("list", "configmaps", namespace)
        if namespace is None:
            return self._list(
                op, self._core.list_config_map_for_all_namespaces, label_selector=label_selector
            )
        return self._list(op, self._core.list_namespaced_config_map, namespace, label_selector=label_selector)

    def create_configmap(self, namespace: str, body: Mapping[str, Any]) -> JSON:
        name = str((body.get("metadata") or {}).get("name", ""))
        return self._call(
            _Op("create", "configmaps", namespace, name),
            self._core.create_namespaced_config_map,
            namespace,
            dict(body),
        )

    def replace_configmap(self, namespace: str, name: str, body: Mapping[str, Any]) -> JSON:
        """PUT guarded by the body's `metadata.resourceVersion` (compare-and-set): ConflictError if stale."""
        return self._call(
            _Op("update", "configmaps", namespace, name),
            self._core.replace_namespaced_config_map,
            name,
            namespace,
            dict(body),
        )

    def delete_configmap(self, namespace: str, name: str, resource_version: str | None = None) -> None:
        options = k8s.V1DeleteOptions(
            preconditions=k8s.V1Preconditions(resource_version=resource_version) if resource_version else None
        )
        self._call(
            _Op("delete", "configmaps", namespace, name),
            self._core.delete_namespaced_config_map,
            name,
            namespace,
            body=options,
        )

    # --- who is calling (the notebook API, bot/notebook/kube.py) ----------------------------------

    def whoami(self) -> tuple[str, tuple[str, ...]] | None:
        """The caller's user name and groups as the API server authenticated them; None where the
        server offers no way to ask. SelfSubjectReview (authentication.k8s.io/v1, Kubernetes 1.28+),
        else OpenShift's `user.openshift.io/v1` `users/~`. Not in `RBAC_RULES`: every authenticated
        user may ask both (system:basic-user), so no Role grants them."""
        review = k8s.V1SelfSubjectReview(api_version="authentication.k8s.io/v1", kind="SelfSubjectReview")
        try:
            answer = self._call(
                _Op("create", "selfsubjectreviews"),
                k8s.AuthenticationV1Api(self.api_client).create_self_subject_review,
                review,
            )
            info = (answer.get("status") or {}).get("userInfo") or {}
            if info.get("username"):
                return str(info["username"]), tuple(str(g) for g in info.get("groups") or ())
        except NotFound:
            pass
        try:
            user = self._call(
                _Op("get", "users", None, "~"),
                self._custom.get_cluster_custom_object,
                "user.openshift.io",
                "v1",
                "users",
                "~",
            )
        except NotFound:
            return None
        name = (user.get("metadata") or {}).get("name")
        return (str(name), tuple(str(g) for g in user.get("groups") or ())) if name else None

    # --- the request loop -----------------------------------------------------------------------

    def _list(self, op: _Op, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> list[JSON]:
        items: list[JSON] = []
        token: str | None = None
        while True:
            page = self._call(op, fn, *args, limit=LIST_PAGE, _continue=token, **kwargs)
            items.extend(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue") or None
            if not token:
                return items

    def _list_versioned(
        self, op: _Op, fn: Callable[..., Any], args: tuple[Any, ...], label_selector: str | None
    ) -> Listed:
        """All pages; the resourceVersion is the first page's, which every later page shares (they are
        one snapshot, read through the continue token)."""
        items: list[JSON] = []
        token: str | None = None
        version = ""
        while True:
            page = self._call(op, fn, *args, limit=LIST_PAGE, _continue=token, label_selector=label_selector)
            items.extend(page.get("items") or [])
            meta = page.get("metadata") or {}
            version = version or str(meta.get("resourceVersion") or "")
            token = meta.get("continue") or None
            if not token:
                return Listed(items, version)

    def _watchers(self) -> tuple[k8s.CustomObjectsApi, k8s.CoreV1Api]:
        """APIs over a client of their own: an open watch holds its connection for minutes, and in the
        shared pool a few of them would leave the tick's requests opening a new connection each."""
        with self._watch_lock:
            if self._watch_apis is None:
                cfg = copy.copy(self.api_client.configuration)
                cfg.connection_pool_maxsize = WATCH_POOL
                client = k8s.ApiClient(cfg)
                _disable_client_retries(client)
                self._watch_apis = (k8s.CustomObjectsApi(client), k8s.CoreV1Api(client))
            return self._watch_apis

    def _open_watch(
        self,
        op: _Op,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        label_selector: str | None,
        resource_version: str,
        timeout_s: float,
    ) -> WatchStream:
        """Start one watch. Not retried here: the caller's loop backs off, and after a failure it may
        have to re-list rather than resume."""
        kwargs = {"label_selector": label_selector} if label_selector else {}
        server_timeout = max(1, int(timeout_s))
        # The read timeout outlasts the server's: a quiet watch sends nothing until it ends.
        timeout = (self.retry.connect_timeout_s, server_timeout + self.retry.read_timeout_s)
        try:
            response = fn(
                *args,
                watch=True,
                allow_watch_bookmarks=True,
                resource_version=resource_version,
                timeout_seconds=server_timeout,
                _preload_content=False,
                _request_timeout=timeout,
                **kwargs,
            )
        except ApiException as exc:
            if exc.status == 410:
                raise WatchExpired(f"{op}: resourceVersion {resource_version} is too old") from exc
            raise _map_api_error(exc, op) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise BackendUnavailable(f"{op}: {_transport_problem(exc)}") from exc
        return WatchStream(op, response)

    def _call(self, op: _Op, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> JSON:
        """Run one request with timeouts, retries on transient failures, and typed errors."""
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        timeout = (self.retry.connect_timeout_s, self.retry.read_timeout_s)
        for attempt in range(1, self.retry.attempts + 1):
            retry_after: float | None = None
            try:
                response = fn(*args, _preload_content=False, _request_timeout=timeout, **kwargs)
                return _decode(response)
            except ApiException as exc:
                error = _map_api_error(exc, op)
                retry_after = _retry_after(exc)
                cause: BaseException = exc
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                error = BackendUnavailable(f"{op}: {_transport_problem(exc)}")
                cause = exc
            if not isinstance(error, BackendUnavailable) or attempt == self.retry.attempts:
                raise error from cause
            if op.verb == "create" and not _surely_unprocessed(cause):
                raise error from cause  # it may have been created: the caller reads back, not retries
            delay = min(self.retry.max_delay_s, self.retry.base_delay_s * 2 ** (attempt - 1))
            delay *= 0.5 + random.random() / 2  # jitter, so many clients do not retry in step
            if retry_after is not None:
                delay = min(self.retry.max_delay_s, max(delay, retry_after))
            log.info("%s (attempt %d of %d); retrying in %.2f s", error, attempt, self.retry.attempts, delay)
            self._sleep(delay)
        raise AssertionError("unreachable: the loop returns or raises")


def _disable_client_retries(api_client: k8s.ApiClient) -> None:
    """Retries happen in `KubeApi._call` only. urllib3's own (the client's default) would retry reads
    again underneath, and sleep for whatever `Retry-After` says, so one call could block a tick for
    minutes; with them off, every failure comes back to the one bounded loop."""
    api_client.configuration.retries = False
    manager = api_client.rest_client.pool_manager
    manager.connection_pool_kw["retries"] = False
    manager.clear()  # pools made before take the setting when they are made again


# --- error mapping ------------------------------------------------------------------------------


def _decode(response: Any) -> JSON:
    try:
        data = response.data
    finally:
        response.release_conn()
    if not data:
        return {}
    decoded = json.loads(data)
    return decoded if isinstance(decoded, dict) else {"items": decoded}


def _watch_event(line: str, op: _Op) -> tuple[str, JSON]:
    """One event line as (type, object); an `ERROR` event (a Status) raised as its typed error."""
    event = json.loads(line)
    kind = str(event.get("type") or "")
    obj = event.get("object")
    obj = obj if isinstance(obj, dict) else {}
    if kind != "ERROR":
        return kind, obj
    code = int(obj.get("code") or 0)
    message = str(obj.get("message") or obj.get("reason") or f"HTTP {code}")
    if code == 410:
        raise WatchExpired(f"{op}: {message}")
    if code in (401, 403):
        raise Forbidden(f"{op}: refused for this identity ({code}): {message}")
    if code == 429 or code >= 500 or code == 0:
        raise BackendUnavailable(f"{op}: the watch ended with {code}: {message}")
    raise BackendError(f"{op}: the watch ended with {code}: {message}")


def _status_of(exc: ApiException) -> JSON:
    try:
        body = json.loads(exc.body or b"{}")
    except (ValueError, TypeError):
        return {}
    return body if isinstance(body, dict) else {}


def _server_message(exc: ApiException, status: JSON) -> str:
    message = str(status.get("message") or exc.reason or "").strip()
    causes = (status.get("details") or {}).get("causes") or []
    fields = [f"{c.get('field')}: {c.get('message')}" for c in causes if c.get("field") and c.get("message")]
    if fields and not all(f.split(":", 1)[0] in message for f in fields):
        message = f"{message} ({'; '.join(fields)})"
    return message or f"HTTP {exc.status}"


def _is_test_failure(status: JSON) -> bool:
    """A JSON patch `test` failure, as opposed to the schema refusing the patched object.

    A schema refusal is a Status naming the object's kind with causes on `spec.`/`metadata.` fields;
    a failed `test` names no kind (the server words it "the server rejected our request due to an error
    in our request", its cause field being `patch` where one is given).
    """
    details = status.get("details") or {}
    causes = details.get("causes") or []
    on_object = [c for c in causes if str(c.get("field", "")).startswith(("spec", "metadata", "status"))]
    return not (details.get("kind") and on_object)


def _map_api_error(exc: ApiException, op: _Op) -> BackendError:
    status = _status_of(exc)
    code = int(exc.status or 0)
    message = _server_message(exc, status)
    if code == 404:
        if op.resource == RAYCLUSTERS and op.name:
            return ClusterNotFound(f"no Ray cluster named {op.name} in namespace {op.namespace}")
        return NotFound(f"{op}: not found ({message})")
    if code == 409:
        if status.get("reason") == "AlreadyExists":
            return AlreadyExists(f"{op}: already exists")
        return ConflictError(f"{op}: changed by someone else since it was read; re-read and decide again")
    if code == 422:
        if op.has_tests and _is_test_failure(status):
            return TestFailed(
                f"{op}: a field read before the write has changed since; re-read and decide again"
            )
        return InvalidObject(f"{op}: refused by the API server: {message}")
    if code in (401, 403):
        return Forbidden(f"{op}: refused for this identity ({code}): {message}")
    if code == 429 or code >= 500 or code == 0:
        return BackendUnavailable(f"{op}: the API server answered {code}: {message}")
    return BackendError(f"{op}: the API server answered {code}: {message}")


def _retry_after(exc: ApiException) -> float | None:
    headers: Mapping[str, str] = exc.headers or {}
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    if value is None:
        value = (_status_of(exc).get("details") or {}).get("retryAfterSeconds")
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None  # an HTTP-date Retry-After: fall back to our own backoff


def _surely_unprocessed(exc: BaseException) -> bool:
    """Failures after which the server cannot have acted: told to slow down (429), or never reached."""
    if isinstance(exc, ApiException):
        return exc.status == 429
    inner = exc.reason if isinstance(exc, urllib3.exceptions.MaxRetryError) else exc
    return isinstance(inner, urllib3.exceptions.NewConnectionError | urllib3.exceptions.ConnectTimeoutError)


def _transport_problem(exc: BaseException) -> str:
    """The kind of network failure, without URLs' query strings or anything from the configuration."""
    inner: BaseException = exc
    while isinstance(inner, urllib3.exceptions.MaxRetryError) and inner.reason is not None:
        inner = inner.reason
    if isinstance(inner, urllib3.exceptions.NewConnectionError | ConnectionError):  # before: a subclass
        return "could not connect to the API server"
    if isinstance(inner, urllib3.exceptions.TimeoutError | TimeoutError):
        return "the API server did not answer in time"
    if isinstance(inner, urllib3.exceptions.ProtocolError):
        return "the connection to the API server broke"
    return f"request failed ({type(inner).__name__})"
