"""The controller's whole Kubernetes session (tests/controller/kube_session.py) on the stand-in, with its
own token: election, ticks, the global switch, removals, a refused policy set, expiry."""

from __future__ import annotations

from pathlib import Path

from tests.controller.kube_session import CONTROLLER_IDENTITY, controller_session
from tests.standins.kube_api import KubeApiServer
from tests.standins.kuberay_operator import FakeKubeRayOperator


def test_the_controller_on_kuberay_through_its_real_wiring(
    kube_api: KubeApiServer, kuberay_operator: FakeKubeRayOperator, tmp_path: Path
) -> None:
    controller_session(kube_api, kuberay_operator, tmp_path)
    calls = kube_api.resource_requests(CONTROLLER_IDENTITY)
    # 404s are expected (no Lease yet; no pause ConfigMap before the bot writes one); nothing refused.
    wrong = [(r.verb, r.resource, r.name, r.code) for r in calls if r.code not in (200, 201, 404)]
    assert calls and wrong == []
    assert all(r.namespace for r in calls), "the controller never lists across namespaces"
    assert not any(r.resource == "routes" for r in calls), "the controller never reads Routes"
