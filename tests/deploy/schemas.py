"""Schema validation for every object deploy/ produces: built-in kinds and custom resources alike.

- Built-in kinds: `kubernetes_validate` in strict mode (unknown fields are errors), against the oldest
  Kubernetes rayops supports on OpenShift (1.33 = OpenShift 4.20) and the newest the package carries.
- Custom kinds (Route, ServiceMonitor, PodMonitor, PrometheusRule, DataScienceCluster, RayCluster): the real
  CRDs in tests/fixtures/, through the API-server admission steps of tests/standins/crd.py (defaults applied
  before validating, as a server does), plus a strict check that nothing would be pruned (kubectl's default
  `--validate=strict` rejects unknown fields).
- A kind nobody can check raises `NoSchema`, and so does a CEL rule of a CRD that neither
  tests/standins/crd.py nor the reviewed rules below evaluate: "cannot check" fails, never passes silently.
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes_validate
import kubernetes_validate.utils
import yaml
from kubernetes_validate.utils import SchemaNotFoundError, latest_version

from tests.deploy.manifests import REPO, Obj
from tests.standins.crd import Crd, CrdVersion, crd_from_dict

# kubernetes_validate re-reads its 1.4 MB definitions file on every call (0.2 s); the files never change, and
# validation only reads the parsed schemas, so memoising the reader makes the suite ten times faster.
kubernetes_validate.utils.schema_contents = functools.lru_cache(maxsize=None)(  # type: ignore[assignment]
    kubernetes_validate.utils.schema_contents
)

# OpenShift 4.20 runs Kubernetes 1.33; the newest schema set in kubernetes-validate catches removed APIs.
KUBE_VERSIONS = ("1.33.0", latest_version())

FIXTURES = REPO / "tests" / "fixtures"
CRD_FILES: dict[tuple[str, str], Path] = {
    ("route.openshift.io", "Route"): FIXTURES / "crds" / "routes.crd.yaml",
    ("monitoring.coreos.com", "ServiceMonitor"): FIXTURES
    / "crds"
    / "monitoring.coreos.com_servicemonitors.yaml",
    ("monitoring.coreos.com", "PodMonitor"): FIXTURES / "crds" / "monitoring.coreos.com_podmonitors.yaml",
    ("monitoring.coreos.com", "PrometheusRule"): FIXTURES
    / "crds"
    / "monitoring.coreos.com_prometheusrules.yaml",
    ("datasciencecluster.opendatahub.io", "DataScienceCluster"): FIXTURES
    / "crds"
    / "datasciencecluster.opendatahub.io_datascienceclusters.yaml",
    ("ray.io", "RayCluster"): FIXTURES / "kuberay" / "ray.io_rayclusters.yaml",
}


class NoSchema(AssertionError):
    """The object (or one of its CRD's rules) cannot be checked here: a failure, not a pass."""


def split_api_version(api_version: str) -> tuple[str, str]:
    group, _, version = api_version.rpartition("/")
    return group, version


def is_custom(obj: Obj) -> bool:
    group, _ = split_api_version(obj["apiVersion"])
    return (group, obj["kind"]) in CRD_FILES


def validate(obj: Obj) -> list[str]:
    """Error messages for `obj` (empty when valid); raises NoSchema when it cannot be checked."""
    if is_custom(obj):
        return validate_custom(obj)
    return validate_builtin(obj)


def validate_builtin(obj: Obj) -> list[str]:
    errors: list[str] = []
    for version in KUBE_VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except SchemaNotFoundError as e:
            raise NoSchema(f"{describe(obj)}: {e.message}") from e
        except kubernetes_validate.ValidationError as e:
            where = ".".join(str(p) for p in e.path)
            errors.append(f"Kubernetes {version}: {where}: {e.message}")
    return errors


def validate_custom(obj: Obj) -> list[str]:
    group, version_name = split_api_version(obj["apiVersion"])
    crd = load_fixture_crd(CRD_FILES[(group, obj["kind"])])
    version = crd.versions.get(version_name)
    if version is None or not version.served:
        return [f"{obj['apiVersion']} is not a served version of {crd.kind} (served: {served(crd)})"]
    body = copy.deepcopy(obj)
    pruned = copy.deepcopy(body)
    version.prune(pruned)
    errors = [
        f"{path}: unknown field (a server would prune it; kubectl --validate=strict rejects it)"
        for path in dropped_paths(body, pruned)
    ]
    version.apply_defaults(pruned)
    version.unsupported_rules.clear()
    errors.extend(f"{c.field}: {c.message}" for c in version.validate(pruned))
    errors.extend(check_unsupported_rules(version, pruned, describe(obj)))
    return errors


def describe(obj: Obj) -> str:
    meta = obj.get("metadata") or {}
    return f"{obj.get('kind')}/{meta.get('name')}"


def served(crd: Crd) -> str:
    return ", ".join(name for name, v in crd.versions.items() if v.served)


# ----- CRD loading -----

_SCHEMA_COMBINATORS = frozenset({"anyOf", "allOf", "oneOf", "not", "items", "properties"})


def _drop_null_combinators(node: Any) -> Any:
    """The Route CRD has `anyOf: null` (an API server reads it as absent); jsonschema would crash on it."""
    if isinstance(node, dict):
        return {
            k: _drop_null_combinators(v)
            for k, v in node.items()
            if not (v is None and k in _SCHEMA_COMBINATORS)
        }
    if isinstance(node, list):
        return [_drop_null_combinators(x) for x in node]
    return node


@functools.lru_cache(maxsize=16)
def load_fixture_crd(path: Path) -> Crd:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with path.open("rb") as f:
        docs = [d for d in yaml.load_all(f, Loader=loader) if d]
    if len(docs) != 1:
        raise ValueError(f"{path}: expected one CustomResourceDefinition, found {len(docs)} documents")
    return crd_from_dict(_drop_null_combinators(docs[0]))


def dropped_paths(before: Any, after: Any, path: str = "") -> list[str]:
    """Paths present in `before` but missing from `after` (what pruning removed)."""
    out: list[str] = []
    if isinstance(before, dict) and isinstance(after, dict):
        for key, value in before.items():
            sub = f"{path}.{key}" if path else str(key)
            if key not in after:
                out.append(sub)
            else:
                out.extend(dropped_paths(value, after[key], sub))
    elif isinstance(before, list) and isinstance(after, list):
        for i, (b, a) in enumerate(zip(before, after, strict=False)):
            out.extend(dropped_paths(b, a, f"{path}[{i}]"))
    return out


# ----- CEL rules tests/standins/crd.py does not evaluate -----


def _has(node: Any, key: str) -> bool:
    return isinstance(node, dict) and key in node


# Rules read by hand from the fixture CRDs and written out in Python. A rule that is neither here, nor
# evaluated by tests/standins/crd.py, nor a transition rule, makes validation raise NoSchema.
REVIEWED_RULES: dict[str, Callable[[Any], bool]] = {
    # routes.crd.yaml, spec
    "!has(self.tls) || self.tls.termination != 'passthrough' || !has(self.httpHeaders)": lambda s: (
        not _has(s, "tls") or s["tls"].get("termination") != "passthrough" or not _has(s, "httpHeaders")
    ),
    # routes.crd.yaml, spec.tls
    "!(has(self.certificate) && has(self.externalCertificate))": lambda t: (
        not (_has(t, "certificate") and _has(t, "externalCertificate"))
    ),
    # routes.crd.yaml, spec.tls
    "has(self.termination) && has(self.insecureEdgeTerminationPolicy) ? !((self.termination=='passthrough') "
    "&& (self.insecureEdgeTerminationPolicy=='Allow')) : true": lambda t: (
        not (
            _has(t, "termination")
            and _has(t, "insecureEdgeTerminationPolicy")
            and t["termination"] == "passthrough"
            and t["insecureEdgeTerminationPolicy"] == "Allow"
        )
    ),
}

_PATH_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def node_at(obj: Any, where: str) -> Any:
    """The value at a server-style path such as `spec.tls` or `spec.workerGroupSpecs[0]`."""
    node = obj
    for name, index in _PATH_PART.findall(where):
        node = node[int(index)] if index else node[name]
    return node


def _is_transition_rule(rule: str) -> bool:
    # Transition rules compare with the stored object; an API server skips them on create.
    return re.search(r"\boldSelf\b", rule) is not None


def check_unsupported_rules(version: CrdVersion, obj: Obj, what: str) -> list[str]:
    errors: list[str] = []
    for where, rule in sorted(version.unsupported_rules):
        if _is_transition_rule(rule):
            continue
        check = REVIEWED_RULES.get(" ".join(rule.split()))
        if check is None:
            raise NoSchema(f"{what}: CEL rule at {where} is not evaluated by these tests: {rule!r}")
        if not check(node_at(obj, where)):
            errors.append(f"{where}: violates CEL rule {rule!r}")
    return errors
