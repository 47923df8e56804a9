"""What the Kubernetes stand-in serves: resource types, their per-kind rules, and `Status` errors.

Per-kind rules are the ones a client can observe: which resources have a status subresource and a generation,
which may be updated without a resourceVersion, which return the deleted object, which fields a field selector
may use, and the few pod rules (defaults, status reset on create, an immutable spec) that make a fake
operator's pods look like real ones. Custom resources take all of this from their CRD
(`tests/standins/crd.py`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.standins.crd import Crd, CrdVersion, FieldCause, load_crd

KUBERAY_CRD = Path(__file__).resolve().parents[1] / "fixtures" / "kuberay" / "ray.io_rayclusters.yaml"

STATUS_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Expired",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


class ApiError(Exception):
    """An error the server answers with a `Status` body; raised anywhere below the HTTP layer."""

    def __init__(
        self,
        code: int,
        message: str,
        reason: str | None = None,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or STATUS_REASONS.get(code, "Unknown")
        self.details = details
        self.headers = headers or {}

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            body["details"] = self.details
        return body


def success_status(details: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}


Validator = Callable[[dict[str, Any], dict[str, Any] | None, str], list[FieldCause]]
"""(new object, old object or None, subresource) -> causes; may default and prune the new object first."""


@dataclass(frozen=True)
class ResourceType:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    singular: str = ""
    short_names: tuple[str, ...] = ()
    subresources: frozenset[str] = frozenset()
    has_generation: bool = False
    allow_unconditional_update: bool = True
    return_deleted_object: bool = False
    # field-selector name -> dotted path in the object (metadata.name/namespace are always present)
    field_paths: dict[str, str] = field(default_factory=dict)
    admit: Validator | None = None
    on_create: Callable[[dict[str, Any]], None] | None = None
    crd: CrdVersion | None = None
    verbs: tuple[str, ...] = (
        "create",
        "delete",
        "deletecollection",
        "get",
        "list",
        "patch",
        "update",
        "watch",
    )

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> str:
        """Store key: `ray.io/v1/rayclusters`, `v1/pods`."""
        return f"{self.api_version}/{self.plural}"

    @property
    def qualified(self) -> str:
        """How the server names the resource in messages: `rayclusters.ray.io`, `pods`."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def list_kind(self) -> str:
        return self.kind + "List"

    @property
    def is_custom(self) -> bool:
        return self.crd is not None

    def field_selectors(self) -> frozenset[str]:
        return frozenset({"metadata.name", "metadata.namespace", *self.field_paths})

    def details(self, name: str, *, kind: str | None = None) -> dict[str, Any]:
        d: dict[str, Any] = {"name": name, "kind": kind or self.plural}
        if self.group:
            d["group"] = self.group
        return d

    # ----- the errors a real server gives, worded as it words them -----

    def not_found(self, name: str) -> ApiError:
        return ApiError(404, f'{self.qualified} "{name}" not found', details=self.details(name))

    def already_exists(self, name: str) -> ApiError:
        return ApiError(
            409, f'{self.qualified} "{name}" already exists', "AlreadyExists", details=self.details(name)
        )

    def conflict(self, name: str) -> ApiError:
        return ApiError(
            409,
            f'Operation cannot be fulfilled on {self.qualified} "{name}": the object has been modified; '
            "please apply your changes to the latest version and try again",
            "Conflict",
            details=self.details(name),
        )

    def invalid(self, name: str, causes: list[FieldCause]) -> ApiError:
        items = [f"{c.field}: {c.message}" for c in causes]
        joined = items[0] if len(items) == 1 else "[" + ", ".join(items) + "]"
        group_kind = f"{self.kind}.{self.group}" if self.group else self.kind
        details = self.details(name, kind=self.kind)
        details["causes"] = [c.as_status_cause() for c in causes]
        return ApiError(422, f'{group_kind} "{name}" is invalid: {joined}', "Invalid", details=details)


def resource_from_crd(version: CrdVersion) -> ResourceType:
    def admit(obj: dict[str, Any], old: dict[str, Any] | None, subresource: str) -> list[FieldCause]:
        return version.admit(obj, old, subresource=subresource)

    return ResourceType(
        group=version.group,
        version=version.name,
        plural=version.plural,
        kind=version.kind,
        namespaced=version.namespaced,
        singular=version.singular,
        short_names=version.short_names,
        subresources=frozenset(version.subresources),
        has_generation=True,
        allow_unconditional_update=False,
        field_paths={f: f for f in version.selectable_fields},
        admit=admit,
        crd=version,
    )


def resources_from_crd(crd: Crd) -> list[ResourceType]:
    return [resource_from_crd(v) for v in crd.versions.values() if v.served]


# ----- pods: the server-side rules a fake operator's pods should show -----

_POD_MUTABLE_SPEC = ("activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds")


def _pod_on_create(pod: dict[str, Any]) -> None:
    spec = pod.setdefault("spec", {})
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("securityContext", {})
    for c in spec.get("containers") or []:
        if isinstance(c, dict):
            image = str(c.get("image", ""))
            latest = ":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest")
            c.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")
            c.setdefault("terminationMessagePath", "/dev/termination-log")
            c.setdefault("terminationMessagePolicy", "File")
            c.setdefault("resources", {})
    # A new pod's status comes from the server, never from the client.
    pod["status"] = {"phase": "Pending", "qosClass": _qos_class(spec)}


def _qos_class(spec: dict[str, Any]) -> str:
    containers = [c for c in spec.get("containers") or [] if isinstance(c, dict)]
    res = [c.get("resources") or {} for c in containers]
    if not any(r.get("requests") or r.get("limits") for r in res):
        return "BestEffort"
    guaranteed = all(
        (r.get("limits") or {}).get(k) is not None
        and (r.get("requests") or {}).get(k, (r.get("limits") or {}).get(k)) == (r.get("limits") or {}).get(k)
        for r in res
        for k in ("cpu", "memory")
    )
    return "Guaranteed" if guaranteed else "Burstable"


def _pod_admit(pod: dict[str, Any], old: dict[str, Any] | None, subresource: str) -> list[FieldCause]:
    causes: list[FieldCause] = []
    raw_spec = pod.get("spec")
    spec: dict[str, Any] = raw_spec if isinstance(raw_spec, dict) else {}
    containers = spec.get("containers")
    if not isinstance(containers, list) or not containers:
        causes.append(FieldCause("FieldValueRequired", "Required value", "spec.containers"))
    else:
        for i, c in enumerate(containers):
            for key in ("name", "image"):
                if not isinstance(c, dict) or not c.get(key):
                    causes.append(
                        FieldCause("FieldValueRequired", "Required value", f"spec.containers[{i}].{key}")
                    )
    if old is not None:
        old_spec = dict(old.get("spec") or {})
        new_spec = dict(spec)
        for key in _POD_MUTABLE_SPEC:
            old_spec.pop(key, None)
            new_spec.pop(key, None)
        for spec_ in (old_spec, new_spec):
            spec_["containers"] = [
                {k: v for k, v in c.items() if k != "image"} for c in spec_.get("containers") or []
            ]
        if old_spec != new_spec:
            causes.append(
                FieldCause(
                    "FieldValueForbidden",
                    "Forbidden: pod updates may not change fields other than `spec.containers[*].image`, "
                    "`spec.activeDeadlineSeconds`, `spec.tolerations` "
                    "(only additions to existing tolerations), "
                    "`spec.terminationGracePeriodSeconds`",
                    "spec",
                )
            )
    return causes


_EVENT_FIELDS = {
    f"involvedObject.{k}": f"involvedObject.{k}"
    for k in ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath")
} | {
    "reason": "reason",
    "reportingComponent": "reportingComponent",
    "source": "source.component",
    "type": "type",
}

_EVENTS_V1_FIELDS = {
    f"regarding.{k}": f"regarding.{k}" for k in ("kind", "namespace", "name", "uid", "apiVersion")
} | {"reason": "reason", "reportingController": "reportingController", "type": "type"}


def builtin_resources() -> list[ResourceType]:
    """The core kinds rayops touches, with their server-side quirks."""
    return [
        ResourceType(
            "",
            "v1",
            "pods",
            "Pod",
            singular="pod",
            short_names=("po",),
            subresources=frozenset({"status"}),
            has_generation=True,
            return_deleted_object=True,
            field_paths={
                f: f
                for f in (
                    "spec.nodeName",
                    "spec.restartPolicy",
                    "spec.schedulerName",
                    "spec.serviceAccountName",
                    "spec.hostNetwork",
                    "status.phase",
                    "status.podIP",
                    "status.nominatedNodeName",
                )
            },
            admit=_pod_admit,
            on_create=_pod_on_create,
        ),
        ResourceType(
            "", "v1", "events", "Event", singular="event", short_names=("ev",), field_paths=_EVENT_FIELDS
        ),
        ResourceType("", "v1", "configmaps", "ConfigMap", singular="configmap", short_names=("cm",)),
        ResourceType("", "v1", "secrets", "Secret", singular="secret", field_paths={"type": "type"}),
        ResourceType(
            "",
            "v1",
            "services",
            "Service",
            singular="service",
            short_names=("svc",),
            subresources=frozenset({"status"}),
        ),
        ResourceType(
            "", "v1", "serviceaccounts", "ServiceAccount", singular="serviceaccount", short_names=("sa",)
        ),
        ResourceType(
            "",
            "v1",
            "namespaces",
            "Namespace",
            namespaced=False,
            singular="namespace",
            short_names=("ns",),
            subresources=frozenset({"status"}),
            return_deleted_object=True,
            field_paths={"status.phase": "status.phase"},
            on_create=lambda ns: ns.__setitem__("status", {"phase": "Active"}),
        ),
        ResourceType("coordination.k8s.io", "v1", "leases", "Lease", singular="lease"),
        ResourceType(
            "events.k8s.io",
            "v1",
            "events",
            "Event",
            singular="event",
            short_names=("ev",),
            field_paths=_EVENTS_V1_FIELDS,
        ),
    ]


class ResourceRegistry:
    """Resource types by store key and by (group, version, plural) as they appear in URLs."""

    def __init__(self, types: Iterable[ResourceType] = ()) -> None:
        self._by_gvr: dict[tuple[str, str, str], ResourceType] = {}
        for t in types:
            self.add(t)

    def add(self, rt: ResourceType) -> None:
        self._by_gvr[(rt.group, rt.version, rt.plural)] = rt

    def add_crd(self, crd: Crd | str | Path) -> list[ResourceType]:
        loaded = crd if isinstance(crd, Crd) else load_crd(crd)
        added = resources_from_crd(loaded)
        for rt in added:
            self.add(rt)
        return added

    def lookup(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self._by_gvr.get((group, version, plural))

    def all(self) -> list[ResourceType]:
        return list(self._by_gvr.values())

    def find(self, ref: str) -> ResourceType:
        """Accept `rayclusters`, `ray.io/v1/rayclusters`, `v1/pods`, `leases`, or a kind like `Pod`."""
        matches = [
            t
            for t in self._by_gvr.values()
            if ref in (t.key, t.plural, t.kind, t.singular, f"{t.plural}.{t.group}")
        ]
        if not matches:
            raise KeyError(f"unknown resource {ref!r}")
        # Prefer core over events.k8s.io for the bare name `events`, and a CRD's storage version.
        matches.sort(key=lambda t: (t.group != "", not (t.crd is None or t.crd.storage)))
        return matches[0]

    def for_object(self, obj: dict[str, Any]) -> ResourceType:
        api_version, kind = obj.get("apiVersion", ""), obj.get("kind", "")
        group, _, version = api_version.rpartition("/")
        for t in self._by_gvr.values():
            if t.group == group and t.version == version and t.kind == kind:
                return t
        raise KeyError(f"no resource serves {api_version} {kind}")


def default_registry(crds: Iterable[Crd | str | Path] = (KUBERAY_CRD,)) -> ResourceRegistry:
    registry = ResourceRegistry(builtin_resources())
    for crd in crds:
        registry.add_crd(crd)
    return registry


_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")


def validate_metadata(meta: dict[str, Any]) -> list[FieldCause]:
    """Name, label and annotation-key rules every kind shares (ObjectMeta validation)."""
    causes: list[FieldCause] = []
    name = meta.get("name")
    if isinstance(name, str) and (len(name) > 253 or not _DNS_SUBDOMAIN.match(name)):
        causes.append(
            FieldCause(
                "FieldValueInvalid",
                f'Invalid value: "{name}": a lowercase RFC 1123 subdomain must consist of '
                "lower case alphanumeric "
                "characters, '-' or '.', and must start and end with an alphanumeric character",
                "metadata.name",
            )
        )
    for section in ("labels", "annotations"):
        entries = meta.get(section) or {}
        if not isinstance(entries, dict):
            causes.append(
                FieldCause("FieldValueTypeInvalid", "must be a map of strings", f"metadata.{section}")
            )
            continue
        for key, value in entries.items():
            if not _qualified_name_ok(key):
                causes.append(
                    FieldCause(
                        "FieldValueInvalid",
                        f'Invalid value: "{key}": name part must consist of '
                        "alphanumeric characters, '-', '_' or '.'",
                        f"metadata.{section}",
                    )
                )
            if not isinstance(value, str):
                causes.append(
                    FieldCause("FieldValueTypeInvalid", "must be a string", f"metadata.{section}.{key}")
                )
            elif section == "labels" and value and (len(value) > 63 or not _LABEL_NAME.match(value)):
                causes.append(
                    FieldCause(
                        "FieldValueInvalid",
                        f'Invalid value: "{value}": a valid label must be an empty string or consist '
                        "of alphanumeric "
                        "characters, '-', '_' or '.', and must start and end with an alphanumeric character",
                        "metadata.labels",
                    )
                )
    return causes


def _qualified_name_ok(key: str) -> bool:
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        return False
    return 0 < len(name) <= 63 and bool(_LABEL_NAME.match(name))
