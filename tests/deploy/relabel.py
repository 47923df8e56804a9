"""Prometheus' relabelling, for the actions rayops' monitors use, applied to a Kubernetes pod target.

Follows prometheus/model/relabel: the source labels' values joined by `separator` are matched against the
fully anchored `regex`; `replace` writes the expanded `replacement` to `target_label` (an empty result
deletes the label); `keep`/`drop` filter the target. Label names from Kubernetes are sanitised the way
Prometheus' Kubernetes discovery does (every character outside [a-zA-Z0-9_] becomes `_`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

DEFAULT_REGEX = "(.*)"
_INVALID = re.compile(r"[^a-zA-Z0-9_]")
_GROUP_REF = re.compile(r"\$\{(\w+)\}|\$(\w+)")


def sanitize(name: str) -> str:
    return _INVALID.sub("_", name)


def pod_target(namespace: str, pod: str, pod_labels: Mapping[str, str], port_name: str) -> dict[str, str]:
    """The discovered labels of one PodMonitor target (role: pod), before any relabelling."""
    labels = {
        "__address__": "10.128.0.10:8080",
        "__meta_kubernetes_namespace": namespace,
        "__meta_kubernetes_pod_name": pod,
        "__meta_kubernetes_pod_container_port_name": port_name,
    }
    for key, value in pod_labels.items():
        labels[f"__meta_kubernetes_pod_label_{sanitize(key)}"] = value
        labels[f"__meta_kubernetes_pod_labelpresent_{sanitize(key)}"] = "true"
    return labels


def _expand(template: str, match: re.Match[str]) -> str:
    def group(m: re.Match[str]) -> str:
        ref = m.group(1) or m.group(2)
        try:
            value = match.group(int(ref)) if ref.isdigit() else match.group(ref)
        except (IndexError, re.error):
            return ""
        return value or ""

    return _GROUP_REF.sub(group, template)


def relabel(labels: Mapping[str, str], configs: Iterable[Mapping[str, Any]]) -> dict[str, str] | None:
    """Apply prometheus-operator style (camelCase) relabel configs; None when the target is dropped."""
    out = dict(labels)
    for cfg in configs:
        action = str(cfg.get("action", "replace")).lower()
        regex = re.compile(f"^(?:{cfg.get('regex', DEFAULT_REGEX)})$")
        value = str(cfg.get("separator", ";")).join(out.get(s, "") for s in cfg.get("sourceLabels", []))
        if action == "replace":
            match = regex.match(value)
            if match is None:
                continue
            target = _expand(str(cfg["targetLabel"]), match)
            result = _expand(str(cfg.get("replacement", "$1")), match)
            if result:
                out[target] = result
            else:
                out.pop(target, None)
        elif action == "keep":
            if regex.match(value) is None:
                return None
        elif action == "drop":
            if regex.match(value) is not None:
                return None
        else:
            raise NotImplementedError(f"relabel action {action!r} is not emulated here")
    return out


def visible(labels: Mapping[str, str]) -> dict[str, str]:
    """What remains on the scraped series: Prometheus drops every `__`-prefixed label after relabelling."""
    return {k: v for k, v in labels.items() if not k.startswith("__")}
