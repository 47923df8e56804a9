"""Compare the API calls a role makes with the RBAC rules it is granted, in both directions.

The controller's and the bot's test suites run against the Kubernetes stand-in with their own tokens; the
stand-in records each request as an `ApiCall`. `check_role_matches(recorded, rules)` then answers:
- missing: calls no rule grants (the deployed pod would get 403);
- extra: granted (verb, group, resource[/subresource]) atoms no recorded call used (least privilege).

RBAC semantics reproduced: a subresource (`rayclusters/status`) needs its own rule; `resourceNames` limits a
rule to named objects, and a call whose object name is unknown (list, watch, create) never matches such a
rule; `*` is refused outright (rayops never grants it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

Rule = Mapping[str, Any]


@dataclass(frozen=True, order=True)
class ApiCall:
    """One authorised request: verb, API group ("" for core), resource, subresource, object name."""

    verb: str
    group: str
    resource: str
    subresource: str = ""
    name: str | None = None


@dataclass(frozen=True, order=True)
class Grant:
    """One (verb, group, resource, subresource) atom of a rule."""

    verb: str
    group: str
    resource: str
    subresource: str = ""


class WildcardRule(ValueError):
    pass


def as_call(item: ApiCall | tuple[str, ...]) -> ApiCall:
    if isinstance(item, ApiCall):
        return item
    if len(item) not in (4, 5):
        raise ValueError(f"expected (verb, group, resource, subresource[, name]), got {item!r}")
    return ApiCall(*item)


def _split(resource: str) -> tuple[str, str]:
    base, _, sub = resource.partition("/")
    return base, sub


def _check_no_wildcard(rule: Rule) -> None:
    for key in ("verbs", "apiGroups", "resources", "resourceNames"):
        if any("*" in str(v) for v in rule.get(key) or ()):
            raise WildcardRule(f"rule uses '*' in {key}: {dict(rule)}")
    if rule.get("nonResourceURLs"):
        raise WildcardRule(f"rayops grants no non-resource URLs: {dict(rule)}")


def grants(rules: Iterable[Rule]) -> set[Grant]:
    out: set[Grant] = set()
    for rule in rules:
        _check_no_wildcard(rule)
        for group in rule.get("apiGroups") or ():
            for resource in rule.get("resources") or ():
                base, sub = _split(resource)
                out.update(Grant(verb, group, base, sub) for verb in rule.get("verbs") or ())
    return out


def _allows(rule: Rule, call: ApiCall) -> bool:
    if call.verb not in (rule.get("verbs") or ()) or call.group not in (rule.get("apiGroups") or ()):
        return False
    wanted = f"{call.resource}/{call.subresource}" if call.subresource else call.resource
    if wanted not in (rule.get("resources") or ()):
        return False
    names = rule.get("resourceNames")
    return not names or (call.name is not None and call.name in names)


def check_role_matches(
    recorded: Iterable[ApiCall | tuple[str, ...]], role_rules: Iterable[Rule]
) -> tuple[set[ApiCall], set[Grant]]:
    """(missing, extra): calls the rules do not allow, and granted atoms no call used."""
    rules = list(role_rules)
    granted = grants(rules)  # also refuses wildcards
    calls = {as_call(c) for c in recorded}
    missing = {c for c in calls if not any(_allows(r, c) for r in rules)}
    used = {Grant(c.verb, c.group, c.resource, c.subresource) for c in calls}
    return missing, granted - used


def rules_for_service_account(objs: Iterable[Mapping[str, Any]], service_account: str) -> list[Rule]:
    """Every rule bound to `service_account` by the (Cluster)RoleBindings among `objs`.

    A RoleBinding may point at a ClusterRole rendered elsewhere (deploy/components/multi-namespace); pass all
    the objects that are applied together. Built-in ClusterRoles (cluster-monitoring-view) are ignored: they
    grant no access to the Kubernetes API objects rayops' code calls.
    """
    objs = list(objs)
    roles = {(o["kind"], o["metadata"]["name"]): o for o in objs if o["kind"] in ("Role", "ClusterRole")}
    out: list[Rule] = []
    for binding in (o for o in objs if o["kind"] in ("RoleBinding", "ClusterRoleBinding")):
        if not any(
            s.get("kind") == "ServiceAccount" and s.get("name") == service_account
            for s in binding.get("subjects") or ()
        ):
            continue
        ref = binding["roleRef"]
        role = roles.get((ref["kind"], ref["name"]))
        if role is not None:
            out.extend(role.get("rules") or ())
    return out


def rules_by_namespace(objs: Iterable[Mapping[str, Any]], service_account: str) -> dict[str, list[Rule]]:
    """The rules bound to `service_account` in each namespace: a RoleBinding grants its role's rules in
    its own namespace only (a ClusterRole bound by a RoleBinding included); a ClusterRoleBinding would
    grant them everywhere (key ""). Built-in ClusterRoles are ignored, as in `rules_for_service_account`.

    This is what makes the check namespace-aware: with the ClusterRole variant, a call in rayops' own
    namespace must be granted there, not merely somewhere.
    """
    objs = list(objs)
    roles = {(o["kind"], o["metadata"]["name"]): o for o in objs if o["kind"] in ("Role", "ClusterRole")}
    out: dict[str, list[Rule]] = {}
    for binding in (o for o in objs if o["kind"] in ("RoleBinding", "ClusterRoleBinding")):
        if not any(
            s.get("kind") == "ServiceAccount" and s.get("name") == service_account
            for s in binding.get("subjects") or ()
        ):
            continue
        ref = binding["roleRef"]
        role = roles.get((ref["kind"], ref["name"]))
        if role is None:
            continue
        where = binding["metadata"].get("namespace", "") if binding["kind"] == "RoleBinding" else ""
        if ref["kind"] == "Role" and role["metadata"].get("namespace") != where:
            continue  # a RoleBinding can only use a Role of its own namespace
        out.setdefault(where, []).extend(role.get("rules") or ())
    return out
