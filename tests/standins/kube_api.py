"""A Kubernetes API server stand-in on loopback, for the official `kubernetes` client.

Why not kmock: it answers create with 200 (the client then returns None), ignores selectors, sets no server
metadata, gives 500 for a failed JSON-patch `test`, has no PUT and no validation (running-real-components.md
7.1), and it lives on an asyncio loop while the controller uses the sync client. This server is a
`ThreadingHTTPServer` in a daemon thread over `Store` (tests/standins/kube_store.py), so the sync client just
works.

Besides the API it records every request as an `ApiRequest` (identity, RBAC verb, resource, subresource,
namespace, group, ...) so later tests can derive and check RBAC rules, accepts several bearer tokens, takes an
optional authorizer (403), and injects faults (409/500/429/slow) for the next N matching calls.
"""

from __future__ import annotations

import json
import select
import socket
import threading
from collections.abc import Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml
from kubernetes import client as k8s_client

from tests.standins.crd import Crd
from tests.standins.kube_codec import APPLY_PATCH, Stored, encode
from tests.standins.kube_discovery import non_resource
from tests.standins.kube_requests import ApiRequest, Authorizer, FaultRule, Route
from tests.standins.kube_resources import (
    KUBERAY_CRD,
    ApiError,
    ResourceRegistry,
    ResourceType,
    default_registry,
    success_status,
)
from tests.standins.kube_selectors import SelectorError, parse_field_selector, parse_label_selector
from tests.standins.kube_store import Store

_PUBLIC_PATHS = ("/version", "/version/", "/healthz", "/livez", "/readyz")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    api: KubeApiServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body are separate sends; with Nagle on, keep-alive requests stall 40 ms on delayed ACKs.
    disable_nagle_algorithm = True
    server: _Server
    timeout = 60  # an idle keep-alive connection's thread ends after this

    def setup(self) -> None:
        super().setup()
        self.server.api._track(self.connection, True)

    def finish(self) -> None:
        self.server.api._track(self.connection, False)
        try:
            super().finish()
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        self.server.api._serve(self)

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET


class KubeApiServer:
    """The stand-in. Start with `start()` (or a `with` block); `url` is `http://127.0.0.1:<port>`."""

    def __init__(
        self,
        tokens: Mapping[str, str],
        *,
        authorizer: Authorizer | None = None,
        crds: Iterable[Crd | str | Path] = (KUBERAY_CRD,),
        registry: ResourceRegistry | None = None,
        default_token: str | None = None,
    ) -> None:
        self.tokens = dict(tokens)
        self.default_token = default_token or next(iter(self.tokens))
        self.authorizer = authorizer
        self.registry = registry or default_registry(crds)
        self.store = Store(self.registry)
        self._requests: list[ApiRequest] = []
        self._faults: list[FaultRule] = []
        self._meta_lock = threading.Lock()
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._clients: list[k8s_client.ApiClient] = []
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # ----- lifecycle -----

    def start(self) -> KubeApiServer:
        httpd = _Server(("127.0.0.1", 0), _Handler)
        httpd.api = self
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, name="kube-api-standin", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self.store.close()
        for c in self._clients:
            c.close()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        with self._meta_lock:
            conns = list(self._connections)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> KubeApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._httpd is not None, "server not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    # ----- clients -----

    def token_for(self, identity: str) -> str:
        return next(t for t, who in self.tokens.items() if who == identity)

    def configuration(self, token: str | None = None) -> k8s_client.Configuration:
        cfg = k8s_client.Configuration()
        cfg.host = self.url
        cfg.api_key = {"BearerToken": token or self.default_token}
        cfg.api_key_prefix = {"BearerToken": "Bearer"}
        return cfg

    def client(self, token: str | None = None) -> k8s_client.ApiClient:
        """An `ApiClient` for this server, closed when the server stops."""
        api = k8s_client.ApiClient(self.configuration(token))
        self._clients.append(api)
        return api

    def write_kubeconfig(
        self, path: str | Path, token: str | None = None, namespace: str = "default"
    ) -> Path:
        """A kubeconfig file for code that loads one (`kubernetes.config.load_kube_config`)."""
        cfg = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "standin", "cluster": {"server": self.url}}],
            "users": [{"name": "standin", "user": {"token": token or self.default_token}}],
            "contexts": [
                {
                    "name": "standin",
                    "context": {"cluster": "standin", "user": "standin", "namespace": namespace},
                }
            ],
            "current-context": "standin",
        }
        out = Path(path)
        out.write_text(yaml.safe_dump(cfg))
        return out

    # ----- audit and faults -----

    @property
    def requests(self) -> list[ApiRequest]:
        with self._meta_lock:
            return list(self._requests)

    def resource_requests(self, identity: str | None = None) -> list[ApiRequest]:
        """Requests to resources (no discovery), optionally of one identity."""
        return [r for r in self.requests if r.resource and (identity is None or r.identity == identity)]

    def clear_requests(self) -> None:
        with self._meta_lock:
            self._requests.clear()

    def inject_faults(
        self,
        status: int | None = 500,
        count: int | None = 1,
        *,
        verbs: Iterable[str] | None = None,
        resource: str | None = None,
        subresource: str | None = None,
        namespace: str | None = None,
        name: str | None = None,
        delay: float = 0.0,
        commit: bool = False,
        message: str | None = None,
        retry_after: int | None = None,
    ) -> FaultRule:
        """Fail (or, with `status=None` and `delay`, slow down) the next `count` matching resource requests.

        Rules are tried in the order they were added; the first one with calls left takes the request.
        `commit=True` performs the operation before answering with the error, as when a response is lost.
        """
        rule = FaultRule(
            status=status,
            remaining=count,
            verbs=frozenset(verbs) if verbs is not None else None,
            resource=resource,
            subresource=subresource,
            namespace=namespace,
            name=name,
            delay=delay,
            commit=commit,
            message=message,
            retry_after=retry_after,
        )
        with self._meta_lock:
            self._faults.append(rule)
        return rule

    def clear_faults(self) -> None:
        with self._meta_lock:
            self._faults.clear()

    # ----- direct store access for test set-up -----

    def resource(self, ref: str) -> ResourceType:
        return self.registry.find(ref)

    def put(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Create or overwrite an object, status included (a copy of the caller's dict is stored)."""
        return self.store.put(json.loads(encode(obj))).copy()

    def get_obj(self, resource: str, namespace: str, name: str) -> dict[str, Any] | None:
        found = self.store.find(self.resource(resource), namespace, name)
        return found.copy() if found else None

    def list_objs(
        self, resource: str, namespace: str | None = None, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        rt = self.resource(resource)
        items = self.store.list_objects(rt, namespace, parse_label_selector(label_selector)).items
        return [s.copy() for s in items]

    def delete_obj(self, resource: str, namespace: str, name: str) -> bool:
        rt = self.resource(resource)
        if self.store.find(rt, namespace, name) is None:
            return False
        self.store.delete(rt, namespace, name)
        return True

    # ----- request handling -----

    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._meta_lock:
            (self._connections.add if add else self._connections.discard)(conn)

    def _serve(self, h: _Handler) -> None:
        parts = urlsplit(h.path)
        path = parts.path.rstrip("/") or "/"
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        try:
            body = h.rfile.read(int(h.headers.get("Content-Length") or 0))
        except (OSError, ValueError):
            h.close_connection = True
            return
        identity = self._authenticate(h.headers.get("Authorization"))
        route = Route.parse(h.command, path, query, self.registry)
        req = ApiRequest(
            identity,
            route.verb,
            route.resource,
            route.subresource,
            route.namespace,
            route.group,
            route.name,
            0,
            parts.path,
        )
        try:
            if identity is None and (h.headers.get("Authorization") or parts.path not in _PUBLIC_PATHS):
                raise ApiError(401, "Unauthorized")
            if route.rt is None and route.resource:
                raise ApiError(404, "the server could not find the requested resource")
            if self.authorizer is not None and route.resource and not self.authorizer(req):
                raise self._forbidden(req)
            fault = self._take_fault(req)
            if fault is not None and fault.delay:
                self._stopping.wait(fault.delay)
            if fault is not None and fault.status is not None and not fault.commit:
                raise fault.error(req)
            if route.verb == "watch" and route.rt is not None:
                self._watch(h, req, route, query)
                return
            code, payload = self._dispatch(h, route, query, body)
            if fault is not None and fault.status is not None:
                raise fault.error(req)
            self._send(h, req, code, payload)
        except ApiError as err:
            self._send(h, req, err.code, encode(err.status()), err.headers)
        except SelectorError as err:
            self._send(h, req, 400, encode(ApiError(400, str(err)).status()))

    def _authenticate(self, header: str | None) -> str | None:
        if not header:
            return None
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer":
            return None
        return self.tokens.get(token.strip())

    @staticmethod
    def _forbidden(req: ApiRequest) -> ApiError:
        resource = f"{req.resource}/{req.subresource}" if req.subresource else req.resource
        qualified = f"{req.resource}.{req.api_group}" if req.api_group else req.resource
        subject = f'{qualified} "{req.name}"' if req.name else qualified
        where = f' in the namespace "{req.namespace}"' if req.namespace else " at the cluster scope"
        return ApiError(
            403,
            f'{subject} is forbidden: User "{req.identity}" cannot {req.verb} resource "{resource}" '
            f"in API group "
            f'"{req.api_group}"{where}',
            details={"name": req.name, "group": req.api_group, "kind": req.resource},
        )

    def _take_fault(self, req: ApiRequest) -> FaultRule | None:
        with self._meta_lock:
            for rule in self._faults:
                if rule.matches(req):
                    rule.hits += 1
                    if rule.remaining is not None:
                        rule.remaining -= 1
                    return rule
        return None

    def _send(
        self,
        h: _Handler,
        req: ApiRequest,
        code: int,
        payload: bytes,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        with self._meta_lock:
            self._requests.append(req._replace(code=code))
        try:
            h.send_response(code)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(payload)))
            for k, v in (headers or {}).items():
                h.send_header(k, v)
            h.end_headers()
            h.wfile.write(payload)
        except OSError:
            h.close_connection = True

    def _dispatch(self, h: _Handler, route: Route, query: dict[str, str], body: bytes) -> tuple[int, bytes]:
        if route.rt is None:
            return 200, non_resource(route.path, self.registry, self.url)
        rt, store, ns = route.rt, self.store, route.namespace
        dry_run = query.get("dryRun") == "All"
        if route.subresource and route.subresource not in rt.subresources:
            raise ApiError(404, "the server could not find the requested resource")
        if rt.namespaced and not ns and route.verb not in ("list", "deletecollection"):
            raise ApiError(404, "the server could not find the requested resource")
        verb = route.verb
        if verb == "get":
            return 200, store.get(rt, ns, route.name).raw
        if verb == "list":
            labels = parse_label_selector(query.get("labelSelector"))
            fields = parse_field_selector(query.get("fieldSelector"), rt.field_selectors())
            limit = int(query["limit"]) if query.get("limit") else None
            result = store.list_objects(
                rt, ns or None, labels, fields, limit=limit, continue_token=query.get("continue")
            )
            return 200, _list_body(rt, result.rv, result.items, result.continue_token, result.remaining)
        if verb == "create":
            if route.name:
                raise ApiError(405, "the server does not allow this method on the requested resource")
            return 201, store.create(rt, ns, _json_body(body), dry_run=dry_run).raw
        if verb == "update":
            return 200, store.update(
                rt, ns, route.name, _json_body(body), subresource=route.subresource, dry_run=dry_run
            ).raw
        if verb == "patch":
            content_type = (h.headers.get("Content-Type") or "").split(";")[0].strip()
            patch = yaml.safe_load(body) if content_type == APPLY_PATCH else _json_body(body)
            if content_type == APPLY_PATCH and store.find(rt, ns, route.name) is None:
                return 201, store.create(rt, ns, patch, dry_run=dry_run).raw
            stored = store.patch(
                rt, ns, route.name, content_type, patch, subresource=route.subresource, dry_run=dry_run
            )
            return 200, stored.raw
        if verb == "delete":
            opts = _json_body(body) if body.strip() else {}
            pre = opts.get("preconditions") or {}
            stored, deleted = store.delete(
                rt,
                ns,
                route.name,
                uid=pre.get("uid"),
                resource_version=pre.get("resourceVersion"),
                dry_run=dry_run,
            )
            code = 200 if deleted else 202
            if rt.return_deleted_object or not deleted:
                return code, stored.raw
            details = rt.details(route.name)
            details["uid"] = stored.obj["metadata"].get("uid")
            return code, encode(success_status(details))
        if verb == "deletecollection":
            labels = parse_label_selector(query.get("labelSelector"))
            fields = parse_field_selector(query.get("fieldSelector"), rt.field_selectors())
            gone = store.delete_collection(rt, ns or None, labels, fields)
            return 200, _list_body(rt, store.resource_version, gone, "", None)
        raise ApiError(405, "the server does not allow this method on the requested resource")

    def _watch(self, h: _Handler, req: ApiRequest, route: Route, query: dict[str, str]) -> None:
        assert route.rt is not None
        rt = route.rt
        labels = parse_label_selector(query.get("labelSelector"))
        fields = parse_field_selector(query.get("fieldSelector"), rt.field_selectors())
        rv_param = query.get("resourceVersion") or ""
        since = int(rv_param) if rv_param not in ("", "0") else None
        if query.get("sendInitialEvents") == "true":
            since = None
        timeout = float(query.get("timeoutSeconds") or 1800)
        bookmarks = query.get("allowWatchBookmarks") in ("true", "1")
        with self._meta_lock:
            self._requests.append(req._replace(code=200))
        conn = h.connection

        def alive() -> bool:
            if self._stopping.is_set():
                return False
            try:
                readable, _, _ = select.select([conn], [], [], 0)
                return not readable or conn.recv(1, socket.MSG_PEEK) != b""
            except OSError:
                return False

        try:
            h.send_response(200)
            h.send_header("Content-Type", "application/json")
            h.send_header("Transfer-Encoding", "chunked")
            h.end_headers()
            h.wfile.flush()
            for kind, raw in self.store.watch(
                rt, route.namespace or None, labels, fields, since, timeout, alive
            ):
                _write_chunk(h, b'{"type":"' + kind.encode() + b'","object":' + raw + b"}\n")
            if bookmarks and self.store.closed is False:
                mark = {
                    "kind": rt.kind,
                    "apiVersion": rt.api_version,
                    "metadata": {"resourceVersion": str(self.store.resource_version)},
                }
                _write_chunk(h, encode({"type": "BOOKMARK", "object": mark}) + b"\n")
            _write_chunk(h, b"")
        except OSError:
            h.close_connection = True


def _write_chunk(h: _Handler, data: bytes) -> None:
    h.wfile.write(f"{len(data):X}\r\n".encode() + data + b"\r\n")
    h.wfile.flush()


def _json_body(body: bytes) -> Any:
    try:
        return json.loads(body or b"null")
    except ValueError as exc:
        raise ApiError(400, f"the body of the request could not be decoded: {exc}") from exc


def _list_body(rt: ResourceType, rv: int, items: list[Stored], token: str, remaining: int | None) -> bytes:
    meta: dict[str, Any] = {"resourceVersion": str(rv)}
    if token:
        meta["continue"] = token
    if remaining is not None:
        meta["remainingItemCount"] = remaining
    head = encode({"apiVersion": rt.api_version, "kind": rt.list_kind, "metadata": meta})
    return head[:-1] + b',"items":[' + b",".join(s.raw for s in items) + b"]}"
