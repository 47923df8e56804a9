"""RBAC: least privilege, no wildcards, one truth for the Role and ClusterRole variants, traceable rules."""

from __future__ import annotations

import re

import pytest

from tests.deploy.manifests import APPLIED_DIRS, DOCS, Obj, render_applied, settings
from tests.deploy.rbac import (
    ApiCall,
    Grant,
    WildcardRule,
    check_role_matches,
    grants,
    rules_for_service_account,
)

LEASE = "rayops-controller"
# The calls each role's code is planned to make (contracts.md; docs/deploy.md "RBAC"). When the controller's
# and the bot's suites record their calls against the Kubernetes stand-in, those recordings replace these
# sets in the same check_role_matches() calls below.
PLANNED_CALLS: dict[str, set[ApiCall]] = {
    "rayops-controller": {
        *(ApiCall(v, "ray.io", "rayclusters") for v in ("get", "list", "watch", "patch", "delete")),
        *(ApiCall(v, "", "pods") for v in ("get", "list", "watch")),
        *(ApiCall(v, "events.k8s.io", "events") for v in ("create", "patch")),
        ApiCall("create", "coordination.k8s.io", "leases"),
        ApiCall("get", "coordination.k8s.io", "leases", name=LEASE),
        ApiCall("update", "coordination.k8s.io", "leases", name=LEASE),
    },
    "rayops-bot": {
        *(ApiCall(v, "ray.io", "rayclusters") for v in ("get", "list", "watch", "create", "patch", "delete")),
        *(ApiCall(v, "", "pods") for v in ("get", "list")),
        *(ApiCall(v, "events.k8s.io", "events") for v in ("get", "list", "watch")),
        *(ApiCall(v, "", "configmaps") for v in ("get", "list", "create", "update", "delete")),
    },
}


def _applied_together(overlay: str) -> list[Obj]:
    """An overlay plus, for the ClusterRole variant, one managed namespace's RoleBindings."""
    objs = render_applied(overlay)
    if any(o["kind"] == "ClusterRole" for o in objs):
        objs += render_applied("deploy/managed-namespace")
    return objs


@pytest.mark.parametrize("overlay", ["deploy/overlays/crc", "deploy/overlays/moc"])
@pytest.mark.parametrize("service_account", sorted(PLANNED_CALLS))
def test_each_role_is_granted_exactly_its_calls(overlay: str, service_account: str) -> None:
    rules = rules_for_service_account(_applied_together(overlay), service_account)
    missing, extra = check_role_matches(PLANNED_CALLS[service_account], rules)
    assert missing == set(), f"{service_account} would get 403 for these calls"
    assert extra == set(), f"{service_account} is granted more than its code uses"


def test_no_rule_anywhere_uses_a_wildcard() -> None:
    objs = [o for d in APPLIED_DIRS for o in render_applied(d)]
    roles = [o for o in objs if o["kind"] in ("Role", "ClusterRole")]
    assert len(roles) >= 6
    for role in roles:
        for rule in role["rules"]:
            for key in ("verbs", "apiGroups", "resources", "resourceNames"):
                assert not any("*" in v for v in rule.get(key) or ()), f"{role['metadata']['name']}: {rule}"
            assert "nonResourceURLs" not in rule


def test_cluster_roles_equal_the_namespaced_roles_they_replace() -> None:
    namespaced = {
        o["metadata"]["name"]: o for o in render_applied("deploy/overlays/crc") if o["kind"] == "Role"
    }
    cluster = {
        o["metadata"]["name"]: o for o in render_applied("deploy/overlays/moc") if o["kind"] == "ClusterRole"
    }
    assert set(cluster) == {"rayops-controller-clusters", "rayops-bot-clusters"}
    for name, role in cluster.items():
        assert grants(role["rules"]) == grants(namespaced[name]["rules"]), name
        assert role["rules"] == namespaced[name]["rules"], name


def test_the_lease_rule_names_the_lease_the_controller_uses() -> None:
    for overlay in ("deploy/overlays/crc", "deploy/overlays/moc"):
        objs = render_applied(overlay)
        lease_rules = [
            r for o in objs if o["kind"] == "Role" for r in o["rules"] if "leases" in r["resources"]
        ]
        named = [r for r in lease_rules if r.get("resourceNames")]
        assert [r["resourceNames"] for r in named] == [[settings(objs)["RAYOPS_LEASE_NAME"]]]
        assert {v for r in lease_rules if not r.get("resourceNames") for v in r["verbs"]} == {"create"}


@pytest.mark.parametrize("overlay", ["deploy/overlays/crc", "deploy/overlays/moc"])
def test_bindings_point_at_existing_roles_and_service_accounts(overlay: str) -> None:
    objs = _applied_together(overlay)
    roles = {(o["kind"], o["metadata"]["name"]) for o in objs if o["kind"] in ("Role", "ClusterRole")}
    builtin = {("ClusterRole", "cluster-monitoring-view")}
    namespace = {
        o["metadata"]["name"]: o["metadata"]["namespace"]
        for o in render_applied(overlay)
        if o["kind"] == "ServiceAccount"
    }
    assert set(namespace) == {"rayops-controller", "rayops-bot"}
    for b in (o for o in objs if o["kind"] in ("RoleBinding", "ClusterRoleBinding")):
        ref = (b["roleRef"]["kind"], b["roleRef"]["name"])
        assert ref in roles | builtin, f"{b['metadata']['name']} -> {ref}"
        for s in b["subjects"]:
            assert s["kind"] == "ServiceAccount" and s["name"] in namespace
            assert s["namespace"] == namespace[s["name"]], b["metadata"]["name"]


def test_cluster_wide_binding_is_read_only_monitoring_only() -> None:
    bindings = [o for o in render_applied("deploy/overlays/moc") if o["kind"] == "ClusterRoleBinding"]
    assert [b["roleRef"]["name"] for b in bindings] == ["cluster-monitoring-view"]


# ----- docs/deploy.md's RBAC table is the trace from each rule to the code that needs it -----

_ROW = re.compile(
    r"^\|\s*(rayops-[a-z-]+)\s*\|\s*`([^`]*)`\s*\|\s*`([^`]+)`\s*\|\s*([a-z, ]+?)\s*\|\s*(.+?)\s*\|$"
)


def test_docs_rbac_table_lists_every_rule_with_a_code_path() -> None:
    rows = [m.groups() for line in DOCS.read_text().splitlines() if (m := _ROW.match(line))]
    documented: set[tuple[str, str, str, str]] = set()
    for role, group, resource, verbs, code in rows:
        assert re.search(r"(controller|bot)/[\w/]+\.py", code), f"{role} {resource}: no code path"
        api_group = "" if group == "core" else group
        documented |= {(role, api_group, resource, v.strip()) for v in verbs.split(",")}
    rendered: set[tuple[str, str, str, str]] = set()
    for o in render_applied("deploy/overlays/crc"):
        if o["kind"] == "Role":
            for g in grants(o["rules"]):
                resource = f"{g.resource}/{g.subresource}" if g.subresource else g.resource
                rendered.add((o["metadata"]["name"], g.group, resource, g.verb))
    assert documented == rendered


# ----- the matcher itself -----


def test_matcher_reports_missing_and_extra() -> None:
    rules = [{"apiGroups": ["ray.io"], "resources": ["rayclusters"], "verbs": ["get", "list", "delete"]}]
    missing, extra = check_role_matches(
        [("get", "ray.io", "rayclusters", ""), ("patch", "ray.io", "rayclusters", "")], rules
    )
    assert missing == {ApiCall("patch", "ray.io", "rayclusters")}
    assert extra == {Grant("list", "ray.io", "rayclusters"), Grant("delete", "ray.io", "rayclusters")}


def test_matcher_needs_a_rule_for_a_subresource() -> None:
    rules = [{"apiGroups": ["ray.io"], "resources": ["rayclusters"], "verbs": ["patch"]}]
    missing, _ = check_role_matches([("patch", "ray.io", "rayclusters", "status")], rules)
    assert missing == {ApiCall("patch", "ray.io", "rayclusters", "status")}
    rules.append({"apiGroups": ["ray.io"], "resources": ["rayclusters/status"], "verbs": ["patch"]})
    missing, extra = check_role_matches([("patch", "ray.io", "rayclusters", "status")], rules)
    assert missing == set()
    assert extra == {Grant("patch", "ray.io", "rayclusters")}


def test_matcher_honours_resource_names() -> None:
    rules = [
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "verbs": ["get"],
            "resourceNames": [LEASE],
        }
    ]
    assert check_role_matches([("get", "coordination.k8s.io", "leases", "", LEASE)], rules) == (set(), set())
    missing, _ = check_role_matches([("get", "coordination.k8s.io", "leases", "", "other")], rules)
    assert missing == {ApiCall("get", "coordination.k8s.io", "leases", "", "other")}
    missing, _ = check_role_matches([("get", "coordination.k8s.io", "leases", "")], rules)
    assert len(missing) == 1, "an unnamed call never matches a resourceNames rule"


def test_matcher_refuses_wildcards() -> None:
    with pytest.raises(WildcardRule):
        check_role_matches([], [{"apiGroups": ["ray.io"], "resources": ["*"], "verbs": ["get"]}])
    with pytest.raises(WildcardRule):
        check_role_matches([], [{"apiGroups": [""], "resources": ["pods"], "verbs": ["*"]}])
