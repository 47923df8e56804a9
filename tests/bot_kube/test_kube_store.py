"""The ConfigMap-backed approval store and global switch on their own, against the Kubernetes stand-in:
where requests are kept, compare-and-set under a lost race, what is ignored, and the switch's format."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from bot.approvals import KEEP_DECIDED, ApprovalRequest, ApprovalState
from bot.kube_store import LABEL_APPROVAL_STATE, ConfigMapApprovalStore, ConfigMapPauseSwitch
from controller.backends.kube_api import Forbidden, KubeApi
from controller.pause import ConfigMapPause
from tests.bot_kube.session import FAST
from tests.harness.kube import BOT_TOKEN, CONTROLLER_TOKEN
from tests.standins.kube_api import KubeApiServer

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def _request(rid: str, target: str = "ray-nlp/big") -> ApprovalRequest:
    return ApprovalRequest(
        id=rid,
        requester="slack:U0ALICE",
        command="create big workers=6",
        reasons=("workers 6 > 4",),
        created_at=T0,
        expires_at=T0 + timedelta(hours=2),
        target=target,
    )


@pytest.fixture
def store(kube_api: KubeApiServer) -> ConfigMapApprovalStore:
    return ConfigMapApprovalStore(KubeApi(kube_api.client(BOT_TOKEN), FAST), ["ray-nlp", "ray-cv"])


def test_requests_live_in_their_clusters_namespace(
    kube_api: KubeApiServer, store: ConfigMapApprovalStore
) -> None:
    store.add(_request("aaaaaaaa"))
    store.add(_request("bbbbbbbb", target="ray-cv/big"))
    store.add(_request("cccccccc", target=""))  # about no cluster: the first managed namespace
    assert kube_api.get_obj("configmaps", "ray-nlp", "rayops-approval-aaaaaaaa") is not None
    assert kube_api.get_obj("configmaps", "ray-cv", "rayops-approval-bbbbbbbb") is not None
    assert kube_api.get_obj("configmaps", "ray-nlp", "rayops-approval-cccccccc") is not None
    assert [r.id for r in store.list()] == ["aaaaaaaa", "bbbbbbbb", "cccccccc"]
    with pytest.raises(ValueError, match="exists"):
        store.add(_request("aaaaaaaa"))
    with pytest.raises(ValueError, match="outside the managed namespaces"):
        store.add(_request("dddddddd", target="elsewhere/big"))  # the bot never asks: no Role there
    fresh = ConfigMapApprovalStore(store.api, ["ray-nlp", "ray-cv"])  # nothing cached
    assert fresh.get("bbbbbbbb") == _request("bbbbbbbb", target="ray-cv/big")
    assert fresh.get("../../etc") is None and fresh.get("zzzzzzzz") is None
    assert {r.namespace for r in kube_api.resource_requests()} == {"ray-nlp", "ray-cv"}


def test_a_lost_race_re_reads_and_compares_again(
    kube_api: KubeApiServer, store: ConfigMapApprovalStore
) -> None:
    store.add(_request("aaaaaaaa"))
    claimed = _request("aaaaaaaa").decided(ApprovalState.APPROVED, "slack:U0APPROVER", T0, "running")
    # Someone else's write lands between our read and our write: 409, re-read, still pending, write.
    kube_api.inject_faults(409, 1, verbs=["update"], resource="configmaps")
    assert store.update(claimed, ApprovalState.PENDING)
    cm = kube_api.get_obj("configmaps", "ray-nlp", "rayops-approval-aaaaaaaa")
    assert cm is not None and cm["metadata"]["labels"][LABEL_APPROVAL_STATE] == "approved"
    denied = _request("aaaaaaaa").decided(ApprovalState.DENIED, "slack:U0OTHER", T0)
    assert not store.update(denied, ApprovalState.PENDING)  # decided already: changes nothing
    assert store.get("aaaaaaaa") == claimed
    assert not store.update(_request("dddddddd"), ApprovalState.PENDING)  # never stored


def test_unreadable_configmaps_are_skipped_and_old_decisions_pruned(
    kube_api: KubeApiServer, store: ConfigMapApprovalStore
) -> None:
    store.add(_request("aaaaaaaa"))
    cm = kube_api.get_obj("configmaps", "ray-nlp", "rayops-approval-aaaaaaaa")
    assert cm is not None
    meta = {"name": "rayops-approval-bbbbbbbb", "namespace": "ray-nlp", "labels": cm["metadata"]["labels"]}
    kube_api.put({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"x": "1"}})
    assert [r.id for r in store.list(None)] == ["aaaaaaaa"]
    done = _request("aaaaaaaa").decided(ApprovalState.DENIED, "slack:U0APPROVER", T0)
    assert store.update(done, ApprovalState.PENDING)
    assert store.prune(T0 + KEEP_DECIDED) == 0
    assert store.prune(T0 + KEEP_DECIDED + timedelta(seconds=1)) == 1
    assert store.get("aaaaaaaa") is None


def test_the_switch_is_what_the_controller_reads(kube_api: KubeApiServer) -> None:
    switch = ConfigMapPauseSwitch(KubeApi(kube_api.client(BOT_TOKEN), FAST), "rayops")
    reader = ConfigMapPause(KubeApi(kube_api.client(CONTROLLER_TOKEN), FAST), "rayops")
    assert not switch.get().paused and not reader.read().paused  # no ConfigMap: not paused
    switch.set(True, "slack:U0OPS", T0)
    assert switch.get().paused and switch.get().by == "slack:U0OPS" and switch.get().at == T0
    assert reader.read().paused and reader.read().by == "slack:U0OPS"
    cm = kube_api.get_obj("configmaps", "rayops", "rayops-global-pause")
    assert cm is not None and json.loads(cm["data"]["state"]) == {
        "paused": True,
        "by": "slack:U0OPS",
        "at": T0.isoformat(),
    }
    kube_api.inject_faults(409, 1, verbs=["update"], resource="configmaps")  # a lost race is retried
    switch.set(False, "slack:U0OPS", T0)
    assert not reader.read().paused
    meta = {"name": "rayops-global-pause", "namespace": "rayops"}
    kube_api.put({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"state": "{not json"}})
    assert not switch.get().paused and not reader.read().paused  # unreadable: not paused


def test_an_api_failure_is_not_read_as_not_paused(kube_api: KubeApiServer) -> None:
    switch = ConfigMapPauseSwitch(KubeApi(kube_api.client("no-such-token"), FAST), "rayops")
    with pytest.raises(Forbidden):
        switch.get()
