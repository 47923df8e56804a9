"""Discovery (`/api`, `/apis`, `/apis/<group>[/<version>]`), `/version` and health endpoints of the stand-in.

The client's `ApisApi`, `get_api_resources()` and `VersionApi.get_code()` (which asks `/version/`) read these;
the `dynamic` client and kubectl build their resource maps from them.
"""

from __future__ import annotations

from typing import Any

from tests.standins.kube_codec import encode
from tests.standins.kube_resources import ApiError, ResourceRegistry, ResourceType

SERVER_VERSION = {
    "major": "1",
    "minor": "36",
    "gitVersion": "v1.36.0",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2026-04-22T00:00:00Z",
    "goVersion": "go1.26.2",
    "compiler": "gc",
    "platform": "linux/amd64",
}


def non_resource(path: str, registry: ResourceRegistry, url: str) -> bytes:
    """Discovery documents, /version and health endpoints, generated from the served resource types."""
    if path == "/version":
        return encode(SERVER_VERSION)
    if path in ("/healthz", "/livez", "/readyz"):
        return b"ok"
    types = registry.all()
    if path == "/api":
        return encode(
            {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [
                    {"clientCIDR": "0.0.0.0/0", "serverAddress": url.removeprefix("http://")}
                ],
            }
        )
    groups: dict[str, list[str]] = {}
    for t in types:
        if t.group and t.version not in groups.setdefault(t.group, []):
            groups[t.group].append(t.version)
    if path == "/apis":
        return encode(
            {
                "kind": "APIGroupList",
                "apiVersion": "v1",
                "groups": [_api_group(g, vs, types) for g, vs in sorted(groups.items())],
            }
        )
    segs = path.strip("/").split("/")
    if segs[0] == "apis" and len(segs) == 2 and segs[1] in groups:
        return encode({"kind": "APIGroup", "apiVersion": "v1", **_api_group(segs[1], groups[segs[1]], types)})
    if (segs[0] == "api" and len(segs) == 2) or (segs[0] == "apis" and len(segs) == 3):
        group, version = ("", segs[1]) if segs[0] == "api" else (segs[1], segs[2])
        served = [t for t in types if t.group == group and t.version == version]
        if served:
            return encode(_resource_list(group, version, served))
    raise ApiError(404, "the server could not find the requested resource")


def _api_group(group: str, versions: list[str], types: list[ResourceType]) -> dict[str, Any]:
    preferred = next(
        (t.version for t in types if t.group == group and (t.crd is None or t.crd.storage)), versions[0]
    )
    return {
        "name": group,
        "versions": [{"groupVersion": f"{group}/{v}", "version": v} for v in versions],
        "preferredVersion": {"groupVersion": f"{group}/{preferred}", "version": preferred},
    }


def _resource_list(group: str, version: str, types: list[ResourceType]) -> dict[str, Any]:
    resources: list[dict[str, Any]] = []
    for t in sorted(types, key=lambda t: t.plural):
        entry: dict[str, Any] = {
            "name": t.plural,
            "singularName": t.singular,
            "namespaced": t.namespaced,
            "kind": t.kind,
            "verbs": list(t.verbs),
        }
        if t.short_names:
            entry["shortNames"] = list(t.short_names)
        resources.append(entry)
        for sub in sorted(t.subresources):
            resources.append(
                {
                    "name": f"{t.plural}/{sub}",
                    "singularName": "",
                    "namespaced": t.namespaced,
                    "kind": t.kind,
                    "verbs": ["get", "patch", "update"],
                }
            )
    gv = f"{group}/{version}" if group else version
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}
