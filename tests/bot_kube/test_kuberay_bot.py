"""The bot on KubeRay through its real wiring (`bot.compose.build_runtime`, the bot's own token) against the
Kubernetes stand-in and the fake KubeRay operator: the whole chat flow, ConfigMap approvals that survive a
restart and act once, the global switch the controller reads, notifications from Kubernetes Events."""

from __future__ import annotations

from pathlib import Path

from tests.bot_kube.session import BOT_IDENTITY, bot_session
from tests.standins.kube_api import KubeApiServer
from tests.standins.kuberay_operator import FakeKubeRayOperator


def test_the_whole_bot_flow_on_kuberay(
    kube_api: KubeApiServer, kuberay_operator: FakeKubeRayOperator, tmp_path: Path
) -> None:
    bot_session(kube_api, kuberay_operator, tmp_path)
    calls = kube_api.resource_requests(BOT_IDENTITY)
    # 404 answers are expected (looking before creating; no Routes on plain Kubernetes), 409 too (the
    # approvers' race); a refused, invalid or failed request is not.
    wrong = [(r.verb, r.resource, r.name, r.code) for r in calls if r.code not in (200, 201, 404, 409)]
    assert calls and wrong == []
    assert all(r.namespace for r in calls), "the bot never lists across namespaces"
