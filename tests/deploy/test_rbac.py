"""RBAC: the Roles grant exactly the calls the code makes, per namespace; no wildcards; one truth for the
Role and ClusterRole variants; every rule traced to code in docs/deploy.md.

The calls are recorded, not planned: the module fixture runs the bot's and the controller's whole Kubernetes
sessions (tests/bot_kube/session.py, tests/controller/kube_session.py: the same scripts their suites run,
through the real wiring) each against a fresh API stand-in with its own token, and keeps every request the
stand-in saw from that identity. A new call in the code shows up here as a 403-to-be; a rule no session
uses shows up as an extra grant.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from controller.pause import PAUSE_CONFIGMAP
from tests.bot_kube import session as bot
from tests.controller import kube_session as controller
from tests.deploy.manifests import APPLIED_DIRS, DOCS, Obj, render_applied, settings
from tests.deploy.rbac import (
    ApiCall,
    Grant,
    WildcardRule,
    check_role_matches,
    grants,
    rules_by_namespace,
    rules_for_service_account,
)
from tests.harness.kube import ADMIN_TOKEN, KUBE_TOKENS
from tests.standins.kube_api import KubeApiServer
from tests.standins.kuberay_operator import FakeKubeRayOperator

LEASE = "rayops-controller"
Session = Callable[[KubeApiServer, FakeKubeRayOperator, Path], None]
# Each role's session, the identity its token has, and which of the session's namespaces is rayops' own
# ("home") and which is a managed one.
SESSIONS: dict[str, tuple[Session, str, dict[str, str]]] = {
    "rayops-controller": (
        controller.controller_session,
        controller.CONTROLLER_IDENTITY,
        {controller.HOME: "home", controller.TEAM: "managed"},
    ),
    "rayops-bot": (bot.bot_session, bot.BOT_IDENTITY, {bot.HOME: "home", bot.TEAM: "managed"}),
}
# Where "home" and "managed" are in each overlay: single-namespace clusters live in rayops' own namespace;
# the ClusterRole variant binds its rules in deploy/managed-namespace's namespace.
PLACES = {
    "deploy/overlays/crc": {"home": "rayops", "managed": "rayops"},
    "deploy/overlays/moc": {"home": "rayops", "managed": "ray-team-a"},
}
Recorded = dict[str, dict[str, set[ApiCall]]]  # service account -> place -> calls


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Recorded:
    out: Recorded = {}
    for account, (session, identity, places) in SESSIONS.items():
        server = KubeApiServer(KUBE_TOKENS, default_token=ADMIN_TOKEN).start()
        operator = FakeKubeRayOperator(server.store)
        try:
            session(server, operator, tmp_path_factory.mktemp(account))
            requests = server.resource_requests(identity)
        finally:
            operator.stop()
            server.stop()
        by_place: dict[str, set[ApiCall]] = {}
        for r in requests:
            place = places.get(r.namespace, f"namespace {r.namespace!r}" if r.namespace else "cluster-wide")
            by_place.setdefault(place, set()).add(
                ApiCall(r.verb, r.api_group, r.resource, r.subresource, r.name or None)
            )
        out[account] = by_place
    return out


def _applied_together(overlay: str) -> list[Obj]:
    """An overlay plus, for the ClusterRole variant, one managed namespace's RoleBindings."""
    objs = render_applied(overlay)
    if any(o["kind"] == "ClusterRole" for o in objs):
        objs += render_applied("deploy/managed-namespace")
    return objs


def test_the_sessions_stay_in_their_namespaces(recorded: Recorded) -> None:
    """No call lists across namespaces (nothing grants that) or strays outside home and managed."""
    for account, by_place in recorded.items():
        assert set(by_place) == {"home", "managed"}, f"{account}: {sorted(by_place)}"


@pytest.mark.parametrize("overlay", sorted(PLACES))
@pytest.mark.parametrize("service_account", sorted(SESSIONS))
def test_each_role_is_granted_exactly_its_calls(
    recorded: Recorded, overlay: str, service_account: str
) -> None:
    bound = rules_by_namespace(_applied_together(overlay), service_account)
    assert "" not in bound, "no cluster-wide binding for rayops' own service accounts"
    calls: dict[str, set[ApiCall]] = {}
    for place, made in recorded[service_account].items():
        calls.setdefault(PLACES[overlay][place], set()).update(made)
    for namespace in sorted(set(calls) | set(bound)):
        missing, extra = check_role_matches(calls.get(namespace, set()), bound.get(namespace, []))
        assert missing == set(), f"{service_account} would get 403 in {namespace} for these calls"
        assert extra == set(), f"{service_account} is granted more than its code uses in {namespace}"


def test_the_recordings_cover_every_verb_kube_api_can_send(recorded: Recorded) -> None:
    """`RBAC_RULES` in kube_api.py lists what it can send; the two sessions together use all of it."""
    from controller.backends.kube_api import RBAC_RULES

    used = {
        (c.group, c.resource, c.subresource, c.verb)
        for by_place in recorded.values()
        for calls in by_place.values()
        for c in calls
    }
    assert used == set(RBAC_RULES)


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


def test_the_controller_reads_only_the_pause_switch_among_configmaps() -> None:
    for overlay in sorted(PLACES):
        rules = rules_for_service_account(render_applied(overlay), "rayops-controller")
        configmaps = [r for r in rules if "configmaps" in r["resources"]]
        assert configmaps == [
            {
                "apiGroups": [""],
                "resources": ["configmaps"],
                "resourceNames": [PAUSE_CONFIGMAP],
                "verbs": ["get"],
            }
        ]


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
