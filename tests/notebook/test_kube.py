"""The notebook API against the KubeRay backend on the Kubernetes stand-in (issue 9, second test).

The session is built the way a notebook builds it, with the user's own token (`user-token`, which the
stand-in authenticates as alice@example.com): every RayCluster request the API server sees comes
from her, and the bot's access rules apply on top exactly as in chat.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from bot.adapters.base import Platform, ReplyStatus
from bot.authz import AccessView, Identity
from bot.compose import build_runtime
from bot.core import Bot
from bot.notebook import (
    ApprovalPending,
    ClusterGone,
    NotebookCluster,
    RayopsError,
    RayopsSession,
    Refused,
    SetupError,
)
from bot.notebook.kube import identity_of, kube_session, notebook_namespace
from bot.render import to_text
from bot.settings import BotSettings
from controller import keys
from controller.backends.base import ClusterState
from controller.backends.kube_api import KubeApi
from controller.backends.kuberay_events import KubeEventSink
from controller.domain import Action, ClusterRef, Decision, GroupRef, Reason, ReasonCode
from controller.events import Event, EventType
from controller.policy.loader import PolicyStore
from tests.harness.kube import ADMIN_TOKEN, BOT_TOKEN, KUBE_TOKENS, USER_TOKEN
from tests.notebook.support import POLICIES, chat_twin, without_request_id
from tests.standins.kube_api import KubeApiServer
from tests.standins.kuberay_operator import FakeKubeRayOperator

NS = "team-a"
ALICE = "alice@example.com"


@pytest.fixture
def session(kube_api: KubeApiServer) -> Iterator[RayopsSession]:
    s = RayopsSession.kubernetes(NS, server=kube_api.url, token=USER_TOKEN, user=ALICE, policies=POLICIES)
    yield s
    s.close()


def raycluster_calls(server: KubeApiServer, verb: str) -> list[tuple[str | None, str, str, int]]:
    return [
        (r.identity, r.namespace, r.name, r.code)
        for r in server.resource_requests()
        if r.resource == "rayclusters" and r.verb == verb
    ]


def test_request_status_delete_with_the_users_own_credentials(
    kube_api: KubeApiServer, kuberay_operator: FakeKubeRayOperator, session: RayopsSession
) -> None:
    cluster = session.request("demo", "cpu-small")

    assert raycluster_calls(kube_api, "create") == [(ALICE, NS, "", 201)]
    rc = kube_api.get_obj("rayclusters", NS, "demo")
    assert rc is not None
    assert rc["metadata"]["annotations"][keys.ANN_REQUESTER] == "kubernetes:alice@example.com"
    assert rc["metadata"]["annotations"][keys.ANN_PROFILE] == "cpu-small"
    assert cluster.status().state is ClusterState.STARTING

    kuberay_operator.start()
    ready = cluster.wait_ready(timeout=10, poll=0.05)
    assert [(g.name, g.ready, g.desired) for g in ready.groups] == [("cpu", 1, 1)]
    assert cluster.address == "ray://demo-head-svc.team-a.svc:10001"
    assert cluster.dashboard_url == "http://demo-head-svc.team-a.svc:8265"
    details = str(cluster.details())
    assert "State                  READY" in details
    assert "Requested by           kubernetes:alice@example.com" in details

    assert cluster.delete().text == "Deleted demo in team-a."
    assert raycluster_calls(kube_api, "delete") == [(ALICE, NS, "demo", 200)]
    assert kube_api.get_obj("rayclusters", NS, "demo") is None
    with pytest.raises(ClusterGone, match="no cluster named demo in team-a"):
        cluster.status()
    assert {who for who, *_ in raycluster_calls(kube_api, "get")} == {ALICE}


def test_over_quota_waits_for_approval_with_chats_words(
    kube_api: KubeApiServer, session: RayopsSession
) -> None:
    with pytest.raises(ApprovalPending) as caught:
        session.request("big", "cpu-small", workers=3)
    e = caught.value

    chat = chat_twin(session.bot).execute(session.identity, "create team-a/big profile=cpu-small workers=3")
    assert chat.reply.status is ReplyStatus.PENDING
    assert without_request_id(str(e)) == without_request_id(chat.reply.text)
    assert "is over your limits (workers 3 > 2), so it waits for an approver" in str(e)
    assert e.request_id is not None
    stored = session.bot.approvals.get(e.request_id)
    assert stored is not None and stored.requester == "kubernetes:alice@example.com"
    assert f"`{e.request_id}`" in str(e)
    assert kube_api.get_obj("rayclusters", NS, "big") is None
    assert raycluster_calls(kube_api, "create") == []


def test_a_second_cluster_is_over_the_cluster_limit(kube_api: KubeApiServer, session: RayopsSession) -> None:
    session.request("one", "cpu-small")
    with pytest.raises(ApprovalPending, match=r"over your limits \(clusters 2 > 1\)"):
        session.request("two", "cpu-small")
    assert len(raycluster_calls(kube_api, "create")) == 1
    assert kube_api.get_obj("rayclusters", NS, "two") is None


def test_a_namespace_outside_the_rules_is_refused_as_in_chat(session: RayopsSession) -> None:
    with pytest.raises(Refused) as caught:
        session.request("demo", "cpu-small", namespace="team-b")
    chat = chat_twin(session.bot).execute(session.identity, "create team-b/demo profile=cpu-small")
    assert chat.reply.status is ReplyStatus.REFUSED
    assert str(caught.value) == chat.reply.text
    assert str(caught.value) == (
        "Not allowed: you may not use namespace team-b (yours: team-a). Nothing was changed."
    )


def test_an_unknown_user_is_refused(kube_api: KubeApiServer) -> None:
    s = kube_session(NS, server=kube_api.url, token=USER_TOKEN, user="mallory", policies=POLICIES)
    with pytest.raises(Refused, match=r"I don't know you \(kubernetes:mallory\)"):
        s.request("demo", "cpu-small")
    assert kube_api.get_obj("rayclusters", NS, "demo") is None


def test_another_users_cluster_cannot_be_changed(kube_api: KubeApiServer, session: RayopsSession) -> None:
    session.request("demo", "cpu-small")
    bob = kube_session(
        NS,
        api=KubeApi.from_token(kube_api.url, USER_TOKEN),
        user="bob@example.com",
        policies=_policies_with_bob(kube_api, session),
    )
    theirs = bob.cluster("demo")
    with pytest.raises(Refused, match=r"only its requester, kubernetes:alice@example\.com, or DevOps"):
        theirs.delete()
    assert kube_api.get_obj("rayclusters", NS, "demo") is not None


def _policies_with_bob(kube_api: KubeApiServer, session: RayopsSession) -> Path:
    """A copy of the policy set where bob shares alice's rule."""
    out = Path(session.bot.settings.state_dir) / f"policies-bob-{kube_api.url.rsplit(':', 1)[1]}"
    out.mkdir(parents=True, exist_ok=True)
    for f in POLICIES.iterdir():
        text = f.read_text()
        if f.name == "access.yaml":
            text = text.replace("- {kubernetesGroup: team-a-devs}", "- {kubernetesUser: bob@example.com}")
        (out / f.name).write_text(text)
    return out


def test_scale_extend_resume_and_why_go_through_the_bot(
    kube_api: KubeApiServer, session: RayopsSession
) -> None:
    cluster = session.request("demo", "cpu-small")
    assert cluster.scale(2).text.startswith("Pinned demo/cpu at 2 workers until")
    pin = json.loads(
        kube_api.get_obj("rayclusters", NS, "demo")["metadata"]["annotations"][keys.ANN_MANUAL_REPLICAS]
    )
    assert (pin["group"], pin["replicas"]) == ("cpu", 2)
    with pytest.raises(ApprovalPending, match=r"workers 3 > 2"):
        cluster.scale(3)
    assert "now expires" in cluster.extend("4h").text
    assert cluster.resume().text == "Resumed autoscaling of demo (ended its pin)."

    decision = Decision(
        ref=GroupRef(NS, "demo", "cpu"),
        policy="nb-default",
        mode="owner",
        current=1,
        target=3,
        action=Action.UP,
        reasons=(Reason(ReasonCode.BACKLOG_PENDING, "3 CPU tasks wait for a node"),),
        at=datetime(2026, 6, 1, 12, 0, tzinfo=UTC),
    )
    admin = KubeApi(kube_api.client(ADMIN_TOKEN))
    session.bot.backend.set_annotations(ClusterRef(NS, "demo"), {keys.ANN_DECISION: decision.to_json()})
    KubeEventSink(admin, "rayops").publish(
        Event(
            EventType.SCALED_UP,
            "cpu 1 → 3: 3 CPU tasks wait for a node",
            datetime.now(UTC),
            cluster=ClusterRef(NS, "demo"),
            data={"group": "cpu", "current": 1, "target": 3},
        )
    )
    why = cluster.why()
    assert why.last_decision == decision
    assert [e.type for e in why.events] == [EventType.SCALED_UP]
    assert "ScaledUp: cpu 1 → 3: 3 CPU tasks wait for a node" in why.text
    assert "cpu: 1 → 3 by nb-default: BACKLOG_PENDING: 3 CPU tasks wait for a node" in why.text


def test_policies_come_from_the_gitops_configmap(
    kube_api: KubeApiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RAYOPS_POLICY_DIR", raising=False)
    kube_api.put(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "rayops-policies", "namespace": "rayops"},
            "data": {f.name: f.read_text() for f in POLICIES.iterdir()},
        }
    )
    s = kube_session(NS, server=kube_api.url, token=USER_TOKEN, user=ALICE)
    assert sorted(s.bot.policies().cluster_profiles) == ["cpu-small"]  # type: ignore[union-attr]
    s.request("demo", "cpu-small")
    assert kube_api.get_obj("rayclusters", NS, "demo") is not None


def test_missing_policies_say_what_to_pass(kube_api: KubeApiServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAYOPS_POLICY_DIR", raising=False)
    with pytest.raises(SetupError, match="no ConfigMap rayops/rayops-policies; pass policies="):
        kube_session(NS, server=kube_api.url, token=USER_TOKEN, user=ALICE)


def test_without_user_the_stand_in_cannot_say_who_you_are(kube_api: KubeApiServer) -> None:
    with pytest.raises(SetupError, match=r"cannot say who you are .* pass user="):
        kube_session(NS, server=kube_api.url, token=USER_TOKEN, policies=POLICIES)


def test_namespace_and_credentials_from_the_kubeconfig(
    kube_api: KubeApiServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = kube_api.write_kubeconfig(tmp_path / "config", token=USER_TOKEN, namespace=NS)
    monkeypatch.setenv("KUBECONFIG", str(config))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    s = RayopsSession.kubernetes(user=ALICE, policies=POLICIES)
    assert s.namespace == NS
    s.request("demo", "cpu-small")
    assert raycluster_calls(kube_api, "create") == [(ALICE, NS, "", 201)]


class _ReviewHandler(BaseHTTPRequestHandler):
    """Answers SelfSubjectReview as a Kubernetes 1.28+ API server does, for one token."""

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        if self.path != "/apis/authentication.k8s.io/v1/selfsubjectreviews":
            self.send_response(404)
            self.end_headers()
            return
        ok = self.headers.get("Authorization") == "Bearer carol-token"
        body = (
            {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "SelfSubjectReview",
                "status": {
                    "userInfo": {
                        "username": "carol@example.com",
                        "groups": ["team-a-devs", "system:authenticated"],
                    }
                },
            }
            if ok
            else {"kind": "Status", "code": 401, "reason": "Unauthorized"}
        )
        data = json.dumps(body).encode()
        self.send_response(201 if ok else 401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def test_the_identity_comes_from_a_self_subject_review() -> None:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _ReviewHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        api = KubeApi.from_token(f"http://127.0.0.1:{httpd.server_address[1]}", "carol-token")
        identity = identity_of(api, None)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert identity.key == "kubernetes:carol@example.com"
    assert identity.platform is Platform.KUBERNETES
    assert identity.groups == {"team-a-devs", "system:authenticated"}
    from controller.policy.loader import load_policy_set

    grant = AccessView.of(load_policy_set(str(POLICIES)).access_policies.values()).grant_for(identity)
    assert grant.known and grant.may_see(NS)  # her group's rule, as a kubernetesGroup subject


BOSS = Identity(Platform.KUBERNETES, "boss@example.com")


def chat_bot(kube_api: KubeApiServer, state_dir: Path) -> Bot:
    """The bot as `rayops bot run --backend kuberay` wires it, with its own service account token."""
    settings = BotSettings(
        policy_dir=POLICIES,
        state_dir=state_dir,
        backend="kuberay",
        namespaces=(NS,),
        rayops_namespace="rayops",
    )
    store = PolicyStore(str(POLICIES))
    store.reload()
    return build_runtime(settings, store, api=KubeApi(kube_api.client(BOT_TOKEN))).bot


def test_chat_approvers_see_and_approve_a_notebook_request(
    kube_api: KubeApiServer, session: RayopsSession, tmp_path: Path
) -> None:
    with pytest.raises(ApprovalPending) as caught:
        session.request("big", "cpu-small", workers=3)
    rid = caught.value.request_id
    assert rid is not None
    stored = [
        (r.identity, r.namespace, r.code)
        for r in kube_api.resource_requests()
        if r.resource == "configmaps" and r.verb == "create"
    ]
    assert stored == [(ALICE, NS, 201)]  # the request waits in her namespace, written as her

    chat = chat_bot(kube_api, tmp_path)
    listed = chat.execute(BOSS, "pending")
    assert rid in to_text(listed.reply) and "create big profile=cpu-small workers=3" in to_text(listed.reply)
    approved = chat.execute(BOSS, f"approve {rid}")
    assert approved.reply.status is ReplyStatus.OK, approved.reply.text

    cluster = session.wait_for_approval(rid, timeout=5, poll=0.05)
    assert isinstance(cluster, NotebookCluster) and cluster.ref == ClusterRef(NS, "big")
    status = cluster.status()
    assert [(g.name, g.desired) for g in status.groups] == [("cpu", 3)]
    assert status.requester == "kubernetes:alice@example.com"
    assert raycluster_calls(kube_api, "create") == [(KUBE_TOKENS[BOT_TOKEN], NS, "", 201)]


def test_a_denied_request_says_who_and_why(session: RayopsSession) -> None:
    with pytest.raises(ApprovalPending) as caught:
        session.request("big", "cpu-small", workers=3)
    rid = caught.value.request_id
    session.bot.execute(BOSS, f"deny {rid} no budget this week")
    with pytest.raises(Refused, match=r"was denied by kubernetes:boss@example\.com: no budget this week"):
        session.wait_for_approval(rid, timeout=5, poll=0.05)


def test_asking_twice_names_the_waiting_request(session: RayopsSession) -> None:
    with pytest.raises(ApprovalPending) as first:
        session.request("big", "cpu-small", workers=3)
    with pytest.raises(ApprovalPending, match="is already waiting for approval") as second:
        session.request("big", "cpu-small", workers=3)
    assert second.value.request_id == first.value.request_id


def test_a_taken_name_is_an_error_with_chats_words(session: RayopsSession) -> None:
    session.request("demo", "cpu-small")
    with pytest.raises(RayopsError, match="a cluster named demo already exists in team-a") as caught:
        session.request("demo", "cpu-small")
    assert type(caught.value) is RayopsError


def test_in_a_workbench_pod_the_namespace_is_the_pods_own(tmp_path: Path) -> None:
    pod_file = tmp_path / "namespace"
    pod_file.write_text("team-a\n")
    assert notebook_namespace("/nonexistent/kubeconfig", pod_file=pod_file) == "team-a"
    assert notebook_namespace("/nonexistent/kubeconfig", pod_file=tmp_path / "missing") is None
