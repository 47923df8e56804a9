"""Each request's RBAC attributes (routing), the audit record kept for RBAC checks, injected faults."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from tests.standins.kube_resources import ApiError, ResourceRegistry, ResourceType


class ApiRequest(NamedTuple):
    """One request as an authorizer sees it, plus the answer's status code (0 while undecided)."""

    identity: str | None  # None: authentication failed (401)
    verb: str  # get, list, watch, create, update, patch, delete, deletecollection
    resource: str  # "" for non-resource paths (discovery, /version)
    subresource: str
    namespace: str
    api_group: str
    name: str = ""
    code: int = 0
    path: str = ""


Authorizer = Callable[[ApiRequest], bool]


@dataclass
class FaultRule:
    """Answer the next `remaining` matching requests with `status` (None: answer normally) after `delay`."""

    status: int | None
    remaining: int | None  # None: until cleared
    verbs: frozenset[str] | None = None
    resource: str | None = None
    subresource: str | None = None
    namespace: str | None = None
    name: str | None = None
    delay: float = 0.0
    commit: bool = False  # perform the operation, then fail anyway (a lost response)
    message: str | None = None
    retry_after: int | None = None
    hits: int = 0

    def matches(self, req: ApiRequest) -> bool:
        if not req.resource or self.remaining == 0:
            return False
        return (
            (self.verbs is None or req.verb in self.verbs)
            and (self.resource is None or req.resource == self.resource)
            and (self.subresource is None or req.subresource == self.subresource)
            and (self.namespace is None or req.namespace == self.namespace)
            and (self.name is None or req.name == self.name)
        )

    def error(self, req: ApiRequest) -> ApiError:
        assert self.status is not None
        code = self.status
        headers = {"Retry-After": str(self.retry_after)} if self.retry_after is not None else {}
        details: dict[str, Any] = {"name": req.name, "kind": req.resource}
        if req.api_group:
            details["group"] = req.api_group
        if self.retry_after is not None:
            details["retryAfterSeconds"] = self.retry_after
        qualified = f"{req.resource}.{req.api_group}" if req.api_group else req.resource
        default = {
            409: f'Operation cannot be fulfilled on {qualified} "{req.name}": the object has been modified; '
            "please apply your changes to the latest version and try again",
            429: "Too many requests, please try again later.",
            500: "Internal error occurred: injected fault",
            503: "the server is currently unable to handle the request",
            504: "the server was unable to return a response in the time allotted, "
            "but may still be processing",
        }.get(code, f"injected fault {code}")
        return ApiError(code, self.message or default, details=details, headers=headers)


@dataclass(frozen=True)
class Route:
    """A request path and method resolved into RBAC attributes, as the server's RequestInfoFactory does."""

    path: str
    verb: str
    group: str = ""
    version: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    rt: ResourceType | None = None

    @staticmethod
    def parse(method: str, path: str, query: Mapping[str, str], registry: ResourceRegistry) -> Route:
        segs = [s for s in path.split("/") if s]
        if len(segs) >= 3 and segs[0] == "api":
            group, version, rest = "", segs[1], segs[2:]
        elif len(segs) >= 4 and segs[0] == "apis":
            group, version, rest = segs[1], segs[2], segs[3:]
        else:
            return Route(path, {"GET": "get"}.get(method, method.lower()))
        namespace = ""
        if rest[0] == "namespaces" and len(rest) >= 3:
            namespace, rest = rest[1], rest[2:]
        resource, name, sub = rest[0], (rest[1] if len(rest) > 1 else ""), "/".join(rest[2:])
        if resource == "namespaces" and group == "":
            namespace = name  # RBAC sees a namespace object as living in itself
        if method == "GET":
            verb = "get" if name else ("watch" if query.get("watch") in ("true", "1") else "list")
        elif method == "DELETE":
            verb = "delete" if name else "deletecollection"
        else:
            verb = {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(method, method.lower())
        rt = registry.lookup(group, version, resource)
        return Route(path, verb, group, version, resource, sub, namespace, name, rt)
