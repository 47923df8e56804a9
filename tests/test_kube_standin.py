"""Contract of the Kubernetes API stand-in, through the official `kubernetes` client only.

The `kube_target` tests run against the stand-in and, when `RAYOPS_TEST_KUBECONFIG` is set, against a real API
server too, so the stand-in is held to what a real server does (ray-kuberay.md section 5). Tests below the
"stand-in only" line cover what only the stand-in offers: tokens and the audit log, the authorizer hook, fault
injection, watch expiry on demand, list speed.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
import urllib3
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from tests.harness.kube import (
    BOT_TOKEN,
    CONTROLLER_TOKEN,
    KUBE_TOKENS,
    KUBERAY_CRD_FILE,
    SAMPLE_FILES,
    USER_TOKEN,
    KubeTarget,
    load_sample,
)
from tests.standins.crd import CrdVersion, load_crd
from tests.standins.kube_api import KubeApiServer
from tests.standins.kube_requests import ApiRequest

RAY = ("ray.io", "v1")
RC = "rayclusters"
IMAGE = "rayproject/ray:2.60.0"
# Pods in contract tests must stay Pending on a real cluster: no node carries this label.
NOWHERE = {"rayops.io/contract-test": "no-such-node"}


def status_body(exc: ApiException) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(exc.body)
    return body


def expect_error(code: int, reason: str, call: Callable[[], Any]) -> dict[str, Any]:
    with pytest.raises(ApiException) as info:
        call()
    assert info.value.status == code, info.value.body
    body = status_body(info.value)
    assert body["kind"] == "Status" and body["status"] == "Failure"
    assert body["reason"] == reason and body["code"] == code
    return body


def cluster(name: str, groups: list[dict[str, Any]] | None = None, **spec: Any) -> dict[str, Any]:
    """A small RayCluster; worker groups omit min/max unless given, so server defaulting is exercised."""
    template = {"spec": {"containers": [{"name": "ray", "image": IMAGE}]}}
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {"name": name, "labels": {"team": "nlp"}},
        "spec": {
            "headGroupSpec": {"rayStartParams": {}, "template": template},
            "workerGroupSpecs": groups if groups is not None else [group("cpu", replicas=1)],
            **spec,
        },
    }


def group(name: str, **fields: Any) -> dict[str, Any]:
    return {
        "groupName": name,
        "rayStartParams": {},
        "template": {"spec": {"containers": [{"name": "ray-worker", "image": IMAGE}]}},
        **fields,
    }


def pod(name: str, labels: dict[str, str] | None = None) -> client.V1Pod:
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, labels=labels or {}),
        spec=client.V1PodSpec(
            containers=[client.V1Container(name="c", image="registry.k8s.io/pause:3.10")],
            node_selector=NOWHERE,
        ),
    )


class Api:
    """Short names for the client calls the contract uses, bound to a target's namespace."""

    def __init__(self, target: KubeTarget) -> None:
        self.ns = target.namespace
        self.co = client.CustomObjectsApi(target.api)
        self.core = client.CoreV1Api(target.api)
        self.coord = client.CoordinationV1Api(target.api)

    def create_rc(self, body: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.co.create_namespaced_custom_object(*RAY, self.ns, RC, body)
        return result

    def get_rc(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self.co.get_namespaced_custom_object(*RAY, self.ns, RC, name)
        return result

    def list_rc(self, **kw: Any) -> dict[str, Any]:
        result: dict[str, Any] = self.co.list_namespaced_custom_object(*RAY, self.ns, RC, **kw)
        return result

    def merge(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.co.patch_namespaced_custom_object(*RAY, self.ns, RC, name, patch)
        return result

    def json_patch(self, name: str, ops: list[dict[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = self.co.patch_namespaced_custom_object(
            *RAY, self.ns, RC, name, ops, _content_type="application/json-patch+json"
        )
        return result

    def merge_status(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.co.patch_namespaced_custom_object_status(*RAY, self.ns, RC, name, patch)
        return result

    def replace_rc(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.co.replace_namespaced_custom_object(*RAY, self.ns, RC, name, body)
        return result


@pytest.fixture
def api(kube_target: KubeTarget) -> Api:
    return Api(kube_target)


# ----- create, get, 404, 409 -----


def test_create_answers_201_with_server_metadata_and_defaults(api: Api) -> None:
    body = cluster("rc-create")
    body["status"] = {"state": "ready"}
    created = api.create_rc(body)
    meta = created["metadata"]
    assert meta["uid"] and meta["resourceVersion"] and meta["creationTimestamp"].endswith("Z")
    assert meta["generation"] == 1 and meta["namespace"] == api.ns
    worker = created["spec"]["workerGroupSpecs"][0]
    # minReplicas/maxReplicas are required by the schema but defaulted by the server before validation.
    assert (worker["minReplicas"], worker["maxReplicas"], worker["numOfHosts"]) == (0, 2147483647, 1)
    assert "status" not in created  # the status subresource: a create cannot set status
    assert api.get_rc("rc-create") == created


def test_create_prunes_unknown_fields(api: Api) -> None:
    body = cluster("rc-prune", notAField=1)
    body["spec"]["workerGroupSpecs"][0]["bogus"] = "x"
    created = api.create_rc(body)
    assert "notAField" not in created["spec"]
    assert "bogus" not in created["spec"]["workerGroupSpecs"][0]


def test_create_with_generate_name(api: Api) -> None:
    body = cluster("ignored")
    body["metadata"] = {"generateName": "rc-gen-"}
    created = api.create_rc(body)
    assert created["metadata"]["name"].startswith("rc-gen-") and len(created["metadata"]["name"]) == 12


def test_dry_run_create_and_patch_store_nothing(api: Api) -> None:
    preview: dict[str, Any] = api.co.create_namespaced_custom_object(
        *RAY, api.ns, RC, cluster("rc-dry"), dry_run="All"
    )
    assert preview["metadata"]["name"] == "rc-dry" and preview["spec"]["workerGroupSpecs"][0]["maxReplicas"]
    expect_error(404, "NotFound", lambda: api.get_rc("rc-dry"))
    created = api.create_rc(cluster("rc-dry"))
    patched: dict[str, Any] = api.co.patch_namespaced_custom_object(
        *RAY, api.ns, RC, "rc-dry", {"spec": {"suspend": True}}, dry_run="All"
    )
    assert patched["spec"]["suspend"] is True
    assert api.get_rc("rc-dry")["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]


def test_duplicate_create_is_409_already_exists(api: Api) -> None:
    api.create_rc(cluster("rc-dup"))
    body = expect_error(409, "AlreadyExists", lambda: api.create_rc(cluster("rc-dup")))
    assert body["details"]["name"] == "rc-dup" and body["details"]["group"] == "ray.io"
    assert body["details"]["kind"] == "rayclusters"


def test_get_patch_delete_of_missing_object_are_404(api: Api) -> None:
    body = expect_error(404, "NotFound", lambda: api.get_rc("nope"))
    assert body["message"] == 'rayclusters.ray.io "nope" not found'
    expect_error(404, "NotFound", lambda: api.merge("nope", {"spec": {"suspend": True}}))
    expect_error(404, "NotFound", lambda: api.co.delete_namespaced_custom_object(*RAY, api.ns, RC, "nope"))
    expect_error(404, "NotFound", lambda: api.core.read_namespaced_pod("nope", api.ns))


def test_pod_create_returns_model_with_server_set_status(api: Api) -> None:
    created = api.core.create_namespaced_pod(api.ns, pod("pod-a", {"app": "x"}))
    assert isinstance(created, client.V1Pod)
    assert created.metadata.uid and created.metadata.creation_timestamp is not None
    assert created.status.phase == "Pending"
    assert created.spec.restart_policy == "Always"
    expect_error(409, "AlreadyExists", lambda: api.core.create_namespaced_pod(api.ns, pod("pod-a")))


# ----- 422 -----


def test_schema_invalid_cluster_is_422_with_field_path(api: Api) -> None:
    body = cluster("rc-bad", [group("cpu", replicas="two")])
    status = expect_error(422, "Invalid", lambda: api.create_rc(body))
    fields = [c["field"] for c in status["details"]["causes"]]
    assert fields == ["spec.workerGroupSpecs[0].replicas"]
    assert status["details"]["kind"] == "RayCluster" and status["details"]["name"] == "rc-bad"
    expect_error(404, "NotFound", lambda: api.get_rc("rc-bad"))


def test_schema_invalid_patch_is_422_and_changes_nothing(api: Api) -> None:
    before = api.create_rc(cluster("rc-bad-patch"))
    ops = [{"op": "replace", "path": "/spec/workerGroupSpecs/0/replicas", "value": "two"}]
    status = expect_error(422, "Invalid", lambda: api.json_patch("rc-bad-patch", ops))
    assert [c["field"] for c in status["details"]["causes"]] == ["spec.workerGroupSpecs[0].replicas"]
    assert api.get_rc("rc-bad-patch")["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]


def test_merge_patch_with_partial_list_item_is_422(api: Api) -> None:
    api.create_rc(cluster("rc-partial"))
    status = expect_error(
        422, "Invalid", lambda: api.merge("rc-partial", {"spec": {"workerGroupSpecs": [{"replicas": 5}]}})
    )
    fields = sorted(c["field"] for c in status["details"]["causes"])
    assert fields == ["spec.workerGroupSpecs[0].groupName", "spec.workerGroupSpecs[0].template"]
    assert all(c["reason"] == "FieldValueRequired" for c in status["details"]["causes"])


def test_failed_json_patch_test_op_is_422(api: Api) -> None:
    api.create_rc(cluster("rc-test-op"))
    ops = [
        {"op": "test", "path": "/spec/workerGroupSpecs/0/groupName", "value": "gpu"},
        {"op": "replace", "path": "/spec/workerGroupSpecs/0/replicas", "value": 4},
    ]
    expect_error(422, "Invalid", lambda: api.json_patch("rc-test-op", ops))
    assert api.get_rc("rc-test-op")["spec"]["workerGroupSpecs"][0]["replicas"] == 1


def test_immutable_managed_by_is_422(api: Api) -> None:
    api.create_rc(cluster("rc-managed", managedBy="ray.io/kuberay-operator"))
    status = expect_error(
        422, "Invalid", lambda: api.merge("rc-managed", {"spec": {"managedBy": "kueue.x-k8s.io/multikueue"}})
    )
    assert [c["field"] for c in status["details"]["causes"]] == ["spec.managedBy"]


# ----- patches, generation, status subresource -----


def test_json_patch_with_test_op_changes_one_field_and_bumps_generation(api: Api) -> None:
    before = api.create_rc(cluster("rc-jp", [group("cpu", replicas=1), group("gpu", replicas=0)]))
    after = api.json_patch(
        "rc-jp",
        [
            {"op": "test", "path": "/spec/workerGroupSpecs/1/groupName", "value": "gpu"},
            {"op": "replace", "path": "/spec/workerGroupSpecs/1/replicas", "value": 2},
            {
                "op": "add",
                "path": "/spec/workerGroupSpecs/1/scaleStrategy",
                "value": {"workersToDelete": ["p"]},
            },
        ],
    )
    assert [g["replicas"] for g in after["spec"]["workerGroupSpecs"]] == [1, 2]
    assert after["spec"]["workerGroupSpecs"][1]["scaleStrategy"] == {"workersToDelete": ["p"]}
    assert after["metadata"]["generation"] == 2
    assert after["metadata"]["resourceVersion"] != before["metadata"]["resourceVersion"]


def test_merge_patch_replaces_lists_whole(api: Api) -> None:
    api.create_rc(cluster("rc-merge", [group("cpu", replicas=1), group("gpu", replicas=1)]))
    after = api.merge("rc-merge", {"spec": {"workerGroupSpecs": [group("gpu", replicas=3)]}})
    assert [(g["groupName"], g["replicas"]) for g in after["spec"]["workerGroupSpecs"]] == [("gpu", 3)]


def test_merge_patch_null_deletes_a_key(api: Api) -> None:
    api.create_rc(cluster("rc-null"))
    after = api.merge("rc-null", {"metadata": {"labels": {"team": None, "tier": "gold"}}})
    assert after["metadata"]["labels"] == {"tier": "gold"}


def test_server_side_apply_creates_then_updates(api: Api) -> None:
    """An apply that creates answers 201, which this client's patch call maps to None (it maps only 200)."""
    body = cluster("rc-apply")

    def apply() -> Any:
        return api.co.patch_namespaced_custom_object(
            *RAY,
            api.ns,
            RC,
            "rc-apply",
            body,
            field_manager="rayops",
            _content_type="application/apply-patch+yaml",
        )

    assert apply() is None
    assert api.get_rc("rc-apply")["metadata"]["generation"] == 1
    body["spec"]["workerGroupSpecs"][0]["replicas"] = 4
    second: dict[str, Any] = apply()
    assert second["spec"]["workerGroupSpecs"][0]["replicas"] == 4 and second["metadata"]["generation"] == 2


def test_metadata_only_write_keeps_generation(api: Api) -> None:
    before = api.create_rc(cluster("rc-meta"))
    after = api.merge("rc-meta", {"metadata": {"annotations": {"rayops.io/mode": "owner"}}})
    assert after["metadata"]["generation"] == 1
    assert after["metadata"]["resourceVersion"] != before["metadata"]["resourceVersion"]


def test_status_subresource_changes_only_status(api: Api) -> None:
    api.create_rc(cluster("rc-status"))
    after = api.merge_status(
        "rc-status", {"status": {"state": "ready", "desiredWorkerReplicas": 1}, "spec": {"suspend": True}}
    )
    assert after["status"] == {"state": "ready", "desiredWorkerReplicas": 1}
    assert "suspend" not in after["spec"] and after["metadata"]["generation"] == 1
    # A write to the main resource ignores status.
    again = api.merge("rc-status", {"spec": {"suspend": True}, "status": {"state": "suspended"}})
    assert again["status"]["state"] == "ready" and again["spec"]["suspend"] is True
    assert again["metadata"]["generation"] == 2
    got: dict[str, Any] = api.co.get_namespaced_custom_object_status(*RAY, api.ns, RC, "rc-status")
    assert got["status"]["state"] == "ready"


def test_invalid_status_is_422(api: Api) -> None:
    api.create_rc(cluster("rc-bad-status"))
    status = expect_error(
        422, "Invalid", lambda: api.merge_status("rc-bad-status", {"status": {"readyWorkerReplicas": "one"}})
    )
    assert [c["field"] for c in status["details"]["causes"]] == ["status.readyWorkerReplicas"]


@pytest.mark.parametrize("file_name", SAMPLE_FILES)
def test_kuberay_samples_are_accepted_and_defaulted(api: Api, file_name: str) -> None:
    created = api.create_rc(load_sample(file_name))
    for g in created["spec"].get("workerGroupSpecs") or []:
        assert {"minReplicas", "maxReplicas", "numOfHosts"} <= set(g)
    assert created["metadata"]["generation"] == 1


# ----- optimistic concurrency -----


def test_stale_resource_version_is_409_conflict(api: Api) -> None:
    first = api.create_rc(cluster("rc-stale"))
    api.json_patch("rc-stale", [{"op": "replace", "path": "/spec/workerGroupSpecs/0/replicas", "value": 2}])
    stale = dict(first)
    stale["spec"]["workerGroupSpecs"][0]["replicas"] = 5
    body = expect_error(409, "Conflict", lambda: api.replace_rc("rc-stale", stale))
    assert "the object has been modified" in body["message"]
    rv = first["metadata"]["resourceVersion"]
    expect_error(409, "Conflict", lambda: api.merge("rc-stale", {"metadata": {"resourceVersion": rv}}))
    current = api.get_rc("rc-stale")
    assert current["spec"]["workerGroupSpecs"][0]["replicas"] == 2
    current["spec"]["workerGroupSpecs"][0]["replicas"] = 3
    replaced = api.replace_rc("rc-stale", current)
    assert (
        replaced["spec"]["workerGroupSpecs"][0]["replicas"] == 3 and replaced["metadata"]["generation"] == 3
    )


def test_custom_object_put_without_resource_version_is_422(api: Api) -> None:
    created = api.create_rc(cluster("rc-put"))
    del created["metadata"]["resourceVersion"]
    status = expect_error(422, "Invalid", lambda: api.replace_rc("rc-put", created))
    assert [c["field"] for c in status["details"]["causes"]] == ["metadata.resourceVersion"]


def test_lease_update_with_stale_resource_version_is_409(api: Api) -> None:
    lease = client.V1Lease(
        metadata=client.V1ObjectMeta(name="rayops-leader"),
        spec=client.V1LeaseSpec(holder_identity="a", lease_duration_seconds=15),
    )
    first = api.coord.create_namespaced_lease(api.ns, lease)
    first.spec.holder_identity = "b"
    second = api.coord.replace_namespaced_lease("rayops-leader", api.ns, first)
    assert second.spec.holder_identity == "b"
    assert second.metadata.resource_version != first.metadata.resource_version
    first.spec.holder_identity = "c"  # still carries the old resourceVersion
    expect_error(409, "Conflict", lambda: api.coord.replace_namespaced_lease("rayops-leader", api.ns, first))
    assert api.coord.read_namespaced_lease("rayops-leader", api.ns).spec.holder_identity == "b"


# ----- list and selectors -----


def test_label_selectors(api: Api) -> None:
    for name, labels in {
        "cm-a": {"tier": "gold", "team": "nlp"},
        "cm-b": {"tier": "silver", "team": "nlp"},
        "cm-c": {"tier": "bronze"},
        "cm-d": {},
    }.items():
        api.core.create_namespaced_config_map(
            api.ns,
            client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name, labels=labels), data={"k": "v"}),
        )

    def names(selector: str) -> list[str]:
        items = api.core.list_namespaced_config_map(api.ns, label_selector=selector).items
        return sorted(i.metadata.name for i in items if i.metadata.name.startswith("cm-"))

    assert names("tier=gold") == ["cm-a"]
    assert names("tier==gold") == ["cm-a"]
    assert names("tier!=gold") == ["cm-b", "cm-c", "cm-d"]  # != also matches objects without the label
    assert names("tier in (gold, silver)") == ["cm-a", "cm-b"]
    assert names("tier notin (gold,silver)") == ["cm-c", "cm-d"]
    assert names("team") == ["cm-a", "cm-b"]
    assert names("!team") == ["cm-c", "cm-d"]
    assert names("team=nlp,tier in (silver)") == ["cm-b"]


def test_label_selector_on_custom_objects_and_bad_selector_is_400(api: Api) -> None:
    api.create_rc(cluster("rc-sel-a"))
    other = cluster("rc-sel-b")
    other["metadata"]["labels"] = {"team": "vision"}
    api.create_rc(other)
    found = api.list_rc(label_selector="team=vision")
    assert [i["metadata"]["name"] for i in found["items"]] == ["rc-sel-b"]
    assert found["kind"] == "RayClusterList" and found["metadata"]["resourceVersion"]
    expect_error(400, "BadRequest", lambda: api.list_rc(label_selector="team in (a"))


def test_field_selectors(api: Api) -> None:
    api.create_rc(cluster("rc-field-a"))
    api.create_rc(cluster("rc-field-b"))
    found = api.list_rc(field_selector="metadata.name=rc-field-b")
    assert [i["metadata"]["name"] for i in found["items"]] == ["rc-field-b"]
    api.core.create_namespaced_pod(api.ns, pod("pod-f", {"ray.io/cluster": "c"}))
    pending = api.core.list_namespaced_pod(api.ns, field_selector="status.phase=Pending,metadata.name=pod-f")
    assert [p.metadata.name for p in pending.items] == ["pod-f"]
    running = api.core.list_namespaced_pod(api.ns, field_selector="status.phase=Running,metadata.name=pod-f")
    assert running.items == []
    ns_pods = api.core.list_namespaced_pod(api.ns, field_selector=f"metadata.namespace={api.ns}")
    assert "pod-f" in [p.metadata.name for p in ns_pods.items]
    expect_error(400, "BadRequest", lambda: api.list_rc(field_selector="spec.suspend=true"))


def test_list_pagination(api: Api) -> None:
    for i in range(5):
        api.core.create_namespaced_config_map(
            api.ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name=f"page-{i}", labels={"page": "yes"}))
        )
    first = api.core.list_namespaced_config_map(api.ns, label_selector="page", limit=2)
    assert [c.metadata.name for c in first.items] == ["page-0", "page-1"]
    assert first.metadata._continue
    assert first.metadata.remaining_item_count is None  # unknown to a server when a selector filters
    rest = api.core.list_namespaced_config_map(
        api.ns, label_selector="page", limit=10, _continue=first.metadata._continue
    )
    assert [c.metadata.name for c in rest.items] == ["page-2", "page-3", "page-4"]
    assert not rest.metadata._continue


# ----- delete -----


def test_delete_custom_object_returns_status_then_404(api: Api) -> None:
    created = api.create_rc(cluster("rc-del"))
    answer = api.co.delete_namespaced_custom_object(*RAY, api.ns, RC, "rc-del")
    assert answer["kind"] == "Status" and answer["status"] == "Success"
    assert answer["details"]["uid"] == created["metadata"]["uid"]
    expect_error(404, "NotFound", lambda: api.get_rc("rc-del"))


def test_delete_pod_returns_the_pod_and_honours_preconditions(api: Api) -> None:
    created = api.core.create_namespaced_pod(api.ns, pod("pod-del"))
    wrong = client.V1DeleteOptions(
        preconditions=client.V1Preconditions(uid="00000000-0000-0000-0000-000000000000")
    )
    expect_error(409, "Conflict", lambda: api.core.delete_namespaced_pod("pod-del", api.ns, body=wrong))
    gone = api.core.delete_namespaced_pod("pod-del", api.ns, grace_period_seconds=0)
    assert isinstance(gone, client.V1Pod) and gone.metadata.uid == created.metadata.uid
    expect_error(404, "NotFound", lambda: api.core.read_namespaced_pod("pod-del", api.ns))


# ----- watch -----


def _collect(stream_call: Callable[..., Any], *args: Any, **kwargs: Any) -> list[tuple[str, str, str]]:
    w = watch.Watch()
    events = []
    for ev in w.stream(stream_call, *args, **kwargs):
        obj = ev["raw_object"]
        events.append((ev["type"], obj["metadata"]["name"], obj["metadata"]["resourceVersion"]))
    return events


def test_watch_from_resource_version_replays_changes_in_order(api: Api) -> None:
    rv = api.list_rc()["metadata"]["resourceVersion"]
    created = api.create_rc(cluster("rc-watch"))
    patched = api.json_patch(
        "rc-watch", [{"op": "replace", "path": "/spec/workerGroupSpecs/0/replicas", "value": 2}]
    )
    api.co.delete_namespaced_custom_object(*RAY, api.ns, RC, "rc-watch")
    events = _collect(
        api.co.list_namespaced_custom_object, *RAY, api.ns, RC, resource_version=rv, timeout_seconds=1
    )
    mine = [e for e in events if e[1] == "rc-watch"]
    assert [e[0] for e in mine] == ["ADDED", "MODIFIED", "DELETED"]
    assert mine[0][2] == created["metadata"]["resourceVersion"]
    assert mine[1][2] == patched["metadata"]["resourceVersion"]
    assert int(mine[2][2]) > int(mine[1][2])


def test_watch_streams_live_events_with_label_selector(api: Api) -> None:
    rv = api.core.list_namespaced_pod(api.ns).metadata.resource_version

    def writer() -> None:
        time.sleep(0.2)
        api.core.create_namespaced_pod(api.ns, pod("pod-other", {"ray.io/cluster": "other"}))
        api.core.create_namespaced_pod(api.ns, pod("pod-w", {"ray.io/cluster": "mine"}))
        api.core.patch_namespaced_pod("pod-w", api.ns, {"metadata": {"annotations": {"a": "b"}}})
        api.core.delete_namespaced_pod("pod-w", api.ns, grace_period_seconds=0)

    thread = threading.Thread(target=writer)
    thread.start()
    w = watch.Watch()
    seen: list[tuple[str, str]] = []
    for ev in w.stream(
        api.core.list_namespaced_pod,
        api.ns,
        label_selector="ray.io/cluster=mine",
        resource_version=rv,
        timeout_seconds=10,
    ):
        assert isinstance(ev["object"], client.V1Pod)
        seen.append((ev["type"], ev["object"].metadata.name))
        if ev["type"] == "DELETED":
            w.stop()
    thread.join()
    assert seen[0] == ("ADDED", "pod-w") and seen[-1] == ("DELETED", "pod-w")
    assert all(name == "pod-w" for _, name in seen)


def test_watch_without_resource_version_starts_with_current_objects(api: Api) -> None:
    api.create_rc(cluster("rc-initial"))
    events = _collect(api.co.list_namespaced_custom_object, *RAY, api.ns, RC, timeout_seconds=1)
    assert ("ADDED", "rc-initial") in [(t, n) for t, n, _ in events]


# ----- other kinds, discovery -----


def test_events_configmaps_and_field_selector_on_involved_object(api: Api) -> None:
    event = client.CoreV1Event(
        metadata=client.V1ObjectMeta(name="rc-e.1"),
        involved_object=client.V1ObjectReference(
            kind="RayCluster", name="rc-e", namespace=api.ns, api_version="ray.io/v1"
        ),
        reason="ScaledUp",
        message="cpu: 1 -> 2",
        type="Normal",
    )
    api.core.create_namespaced_event(api.ns, event)
    found = api.core.list_namespaced_event(api.ns, field_selector="involvedObject.name=rc-e,reason=ScaledUp")
    assert [e.message for e in found.items] == ["cpu: 1 -> 2"]
    cm = api.core.create_namespaced_config_map(
        api.ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="rayops-state"), data={"a": "1"})
    )
    patched = api.core.patch_namespaced_config_map("rayops-state", api.ns, {"data": {"b": "2"}})
    assert patched.data == {"a": "1", "b": "2"}
    assert patched.metadata.resource_version != cm.metadata.resource_version


def test_discovery_and_version(kube_target: KubeTarget) -> None:
    version = client.VersionApi(kube_target.api).get_code()
    assert version.major == "1" and version.git_version.startswith("v1.")
    groups = {g.name for g in client.ApisApi(kube_target.api).get_api_versions().groups}
    assert {"ray.io", "coordination.k8s.io"} <= groups
    resources = client.CustomObjectsApi(kube_target.api).get_api_resources("ray.io", "v1")
    names = {r.name for r in resources.resources}
    assert {"rayclusters", "rayclusters/status"} <= names
    core = {r.name for r in client.CoreV1Api(kube_target.api).get_api_resources().resources}
    assert {"pods", "events", "configmaps"} <= core


# ======================= stand-in only =======================


def test_tokens_map_to_identities_and_unknown_token_is_401(kube_api: KubeApiServer) -> None:
    for token in (CONTROLLER_TOKEN, BOT_TOKEN):
        client.CustomObjectsApi(kube_api.client(token)).list_namespaced_custom_object(*RAY, "team-a", RC)
    bad = client.CoreV1Api(kube_api.client("no-such-token"))
    body = expect_error(401, "Unauthorized", lambda: bad.list_namespaced_pod("team-a"))
    assert body["message"] == "Unauthorized"
    who = [(r.identity, r.code) for r in kube_api.resource_requests()]
    assert who == [(KUBE_TOKENS[CONTROLLER_TOKEN], 200), (KUBE_TOKENS[BOT_TOKEN], 200), (None, 401)]


def test_audit_records_rbac_attributes(kube_api: KubeApiServer) -> None:
    api = client.CustomObjectsApi(kube_api.client(CONTROLLER_TOKEN))
    core = client.CoreV1Api(kube_api.client(CONTROLLER_TOKEN))
    ns = "team-a"
    api.create_namespaced_custom_object(*RAY, ns, RC, cluster("rc-audit"))
    api.get_namespaced_custom_object(*RAY, ns, RC, "rc-audit")
    api.list_cluster_custom_object(*RAY, RC)
    api.patch_namespaced_custom_object(*RAY, ns, RC, "rc-audit", {"spec": {"suspend": False}})
    api.patch_namespaced_custom_object_status(*RAY, ns, RC, "rc-audit", {"status": {"state": "ready"}})
    _collect(api.list_namespaced_custom_object, *RAY, ns, RC, timeout_seconds=0)
    core.list_namespaced_pod(ns, label_selector="ray.io/cluster=rc-audit")
    client.CoordinationV1Api(kube_api.client(CONTROLLER_TOKEN)).list_namespaced_lease(ns)
    api.delete_namespaced_custom_object(*RAY, ns, RC, "rc-audit")
    core.delete_collection_namespaced_config_map(ns)
    who = KUBE_TOKENS[CONTROLLER_TOKEN]
    got = [
        (r.identity, r.verb, r.resource, r.subresource, r.namespace, r.api_group)
        for r in kube_api.resource_requests()
    ]
    assert got == [
        (who, "create", "rayclusters", "", ns, "ray.io"),
        (who, "get", "rayclusters", "", ns, "ray.io"),
        (who, "list", "rayclusters", "", "", "ray.io"),
        (who, "patch", "rayclusters", "", ns, "ray.io"),
        (who, "patch", "rayclusters", "status", ns, "ray.io"),
        (who, "watch", "rayclusters", "", ns, "ray.io"),
        (who, "list", "pods", "", ns, ""),
        (who, "list", "leases", "", ns, "coordination.k8s.io"),
        (who, "delete", "rayclusters", "", ns, "ray.io"),
        (who, "deletecollection", "configmaps", "", ns, ""),
    ]
    assert kube_api.resource_requests()[1].name == "rc-audit"


def test_authorizer_denial_is_403_forbidden(kube_api: KubeApiServer) -> None:
    def only_reads(req: ApiRequest) -> bool:
        return req.identity != KUBE_TOKENS[USER_TOKEN] or req.verb in ("get", "list", "watch")

    kube_api.authorizer = only_reads
    api = client.CustomObjectsApi(kube_api.client(USER_TOKEN))
    api.list_namespaced_custom_object(*RAY, "team-a", RC)
    body = expect_error(
        403,
        "Forbidden",
        lambda: api.patch_namespaced_custom_object_status(*RAY, "team-a", RC, "rc", {"status": {}}),
    )
    assert body["message"] == (
        'rayclusters.ray.io "rc" is forbidden: User "alice@example.com" cannot patch resource '
        '"rayclusters/status" in API group "ray.io" in the namespace "team-a"'
    )
    assert kube_api.requests[-1].code == 403


def test_fault_injection_fails_next_n_matching_calls(kube_api: KubeApiServer) -> None:
    api = Api(KubeTarget("standin", kube_api.client(), "default", kube_api))
    api.create_rc(cluster("rc-fault"))
    rule = kube_api.inject_faults(500, count=2, verbs={"patch"}, resource="rayclusters")
    api.get_rc("rc-fault")  # not a patch: unaffected
    for _ in range(2):
        body = expect_error(500, "InternalError", lambda: api.merge("rc-fault", {"spec": {"suspend": True}}))
        assert "injected" in body["message"]
    assert api.merge("rc-fault", {"spec": {"suspend": True}})["spec"]["suspend"] is True
    assert rule.hits == 2 and rule.remaining == 0
    assert [r.code for r in kube_api.resource_requests() if r.verb == "patch"] == [500, 500, 200]


def test_fault_injection_conflict_and_commit(kube_api: KubeApiServer) -> None:
    api = Api(KubeTarget("standin", kube_api.client(), "default", kube_api))
    api.create_rc(cluster("rc-409"))
    kube_api.inject_faults(409, count=1, resource="rayclusters", name="rc-409")
    body = expect_error(409, "Conflict", lambda: api.merge("rc-409", {"spec": {"suspend": True}}))
    assert "the object has been modified" in body["message"]
    assert "suspend" not in api.get_rc("rc-409")["spec"]  # an injected error does not apply the write
    kube_api.inject_faults(500, count=1, verbs={"patch"}, commit=True)
    expect_error(500, "InternalError", lambda: api.merge("rc-409", {"spec": {"suspend": True}}))
    assert (
        api.get_rc("rc-409")["spec"]["suspend"] is True
    )  # commit=True: the write landed, the answer was lost


def test_fault_injection_429_with_retry_after_is_retried_by_the_client_on_reads(
    kube_api: KubeApiServer,
) -> None:
    """urllib3's default Retry honours Retry-After on 429/503 for GET/PUT/DELETE, never for POST/PATCH."""
    core = client.CoreV1Api(kube_api.client())
    kube_api.inject_faults(429, count=1, verbs={"list"}, resource="pods", retry_after=1)
    assert core.list_namespaced_pod("default").items == []
    assert [r.code for r in kube_api.resource_requests()] == [429, 200]
    kube_api.inject_faults(429, count=1, verbs={"patch"}, resource="configmaps", retry_after=1)
    with pytest.raises(ApiException) as info:
        core.patch_namespaced_config_map("cm", "default", {"data": {"a": "b"}})
    assert info.value.status == 429 and info.value.headers["Retry-After"] == "1"
    assert status_body(info.value)["details"]["retryAfterSeconds"] == 1
    kube_api.inject_faults(503, count=1, verbs={"list"}, resource="pods")  # no Retry-After: surfaces at once
    expect_error(503, "ServiceUnavailable", lambda: core.list_namespaced_pod("default"))


def test_slow_fault_trips_client_timeout_and_the_write_still_lands(kube_api: KubeApiServer) -> None:
    api = Api(KubeTarget("standin", kube_api.client(), "default", kube_api))
    api.create_rc(cluster("rc-slow"))
    kube_api.inject_faults(None, count=1, verbs={"patch"}, resource="rayclusters", delay=0.6)
    start = time.monotonic()
    with pytest.raises(urllib3.exceptions.ReadTimeoutError):
        api.co.patch_namespaced_custom_object(
            *RAY, "default", RC, "rc-slow", {"spec": {"suspend": True}}, _request_timeout=0.2
        )
    assert time.monotonic() - start < 0.5
    deadline = time.monotonic() + 5
    while "suspend" not in api.get_rc("rc-slow")["spec"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert api.get_rc("rc-slow")["spec"]["suspend"] is True  # a timed-out write is not a failed write


def test_watch_from_compacted_resource_version_is_410(kube_api: KubeApiServer) -> None:
    api = Api(KubeTarget("standin", kube_api.client(), "default", kube_api))
    rv = api.list_rc()["metadata"]["resourceVersion"]
    api.create_rc(cluster("rc-old"))
    kube_api.store.compact()
    with pytest.raises(ApiException) as info:
        _collect(
            api.co.list_namespaced_custom_object, *RAY, "default", RC, resource_version=rv, timeout_seconds=1
        )
    assert info.value.status == 410


def test_direct_store_access_for_setup(kube_api: KubeApiServer) -> None:
    body = load_sample("ray-cluster.sample.yaml")
    body["status"] = {"state": "ready", "readyWorkerReplicas": 1}
    stored = kube_api.put(body)
    assert stored["status"]["state"] == "ready"  # put keeps status, unlike an API create
    assert stored["spec"]["workerGroupSpecs"][0]["numOfHosts"] == 1  # still defaulted
    name = stored["metadata"]["name"]
    got = client.CustomObjectsApi(kube_api.client()).get_namespaced_custom_object(*RAY, "default", RC, name)
    assert got == stored == kube_api.get_obj("rayclusters", "default", name)
    assert kube_api.list_objs("rayclusters", label_selector="nope") == []
    assert (
        kube_api.delete_obj("rayclusters", "default", name)
        and kube_api.get_obj("rayclusters", "default", name) is None
    )


def test_list_of_a_thousand_clusters_is_fast(kube_api: KubeApiServer) -> None:
    for i in range(1000):
        body = cluster(
            f"rc-{i:04d}", [group(g, replicas=1, minReplicas=0, maxReplicas=4) for g in ("a", "b", "c")]
        )
        kube_api.put(body)
    request = urllib.request.Request(
        f"{kube_api.url}/apis/ray.io/v1/rayclusters", headers={"Authorization": "Bearer admin-token"}
    )
    timings = []
    for _ in range(3):
        start = time.perf_counter()
        with urllib.request.urlopen(request) as resp:
            data = json.loads(resp.read())
        timings.append(time.perf_counter() - start)
    assert len(data["items"]) == 1000
    print(f"list of 1000 RayClusters (server + json.loads): best {min(timings) * 1000:.1f} ms")
    assert min(timings) < 1.0


# ----- CRD admission (tests/standins/crd.py), no server -----


@pytest.fixture(scope="module")
def raycluster_v1() -> CrdVersion:
    return load_crd(KUBERAY_CRD_FILE).version("v1")


def test_crd_names_versions_and_subresources() -> None:
    crd = load_crd(KUBERAY_CRD_FILE)
    assert (crd.group, crd.kind, crd.plural, crd.namespaced) == ("ray.io", "RayCluster", "rayclusters", True)
    assert sorted(crd.versions) == ["v1", "v1alpha1"] and crd.storage_version.name == "v1"
    assert crd.version("v1").subresources == {"status": {}}  # no scale subresource: HPA cannot drive it


@pytest.mark.parametrize("file_name", SAMPLE_FILES)
def test_samples_pass_admission_and_need_the_defaults(raycluster_v1: CrdVersion, file_name: str) -> None:
    body = load_sample(file_name)
    assert raycluster_v1.admit(body) == []
    bare = load_sample(file_name)
    for g in bare["spec"].get("workerGroupSpecs") or []:
        g.pop("minReplicas", None)
        g.pop("maxReplicas", None)
    if bare["spec"].get("workerGroupSpecs"):
        # Without the server's defaulting step the required bounds are reported missing...
        assert {c.field for c in raycluster_v1.validate(bare)} == {
            f"spec.workerGroupSpecs[{i}].{k}"
            for i in range(len(bare["spec"]["workerGroupSpecs"]))
            for k in ("minReplicas", "maxReplicas")
        }
    # ...and with it they are filled in, as a server does.
    assert raycluster_v1.admit(bare) == []
    assert all(g["maxReplicas"] == 2147483647 for g in bare["spec"].get("workerGroupSpecs") or [])


def _worker(body: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = body["spec"]["workerGroupSpecs"][0]
    return result


@pytest.mark.parametrize(
    ("mutate", "field", "reason"),
    [
        (
            lambda b: _worker(b).update(replicas="two"),
            "spec.workerGroupSpecs[0].replicas",
            "FieldValueTypeInvalid",
        ),
        (lambda b: _worker(b).pop("groupName"), "spec.workerGroupSpecs[0].groupName", "FieldValueRequired"),
        (lambda b: _worker(b).pop("template"), "spec.workerGroupSpecs[0].template", "FieldValueRequired"),
        (lambda b: b["spec"].pop("headGroupSpec"), "spec.headGroupSpec", "FieldValueRequired"),
        (lambda b: b["spec"].update(managedBy="someone-else"), "spec.managedBy", "FieldValueInvalid"),
        (
            lambda b: b["spec"].update(upgradeStrategy={"type": "Sometimes"}),
            "spec.upgradeStrategy.type",
            "FieldValueNotSupported",
        ),
        (
            lambda b: _worker(b)["template"]["spec"]["containers"][0].update(
                resources={"limits": {"cpu": 1.5}}
            ),
            "spec.workerGroupSpecs[0].template.spec.containers[0].resources.limits.cpu",
            "FieldValueInvalid",
        ),
        (
            lambda b: b["spec"].update(
                networkPolicy={"workerGroups": [{"groupName": "a"}, {"groupName": "a"}]}
            ),
            "spec.networkPolicy.workerGroups[1]",
            "FieldValueDuplicate",
        ),
    ],
)
def test_invalid_clusters_name_the_failing_field(
    raycluster_v1: CrdVersion, mutate: Callable[[dict[str, Any]], Any], field: str, reason: str
) -> None:
    body = load_sample("ray-cluster.sample.yaml")
    mutate(body)
    causes = raycluster_v1.admit(body)
    assert [(c.field, c.reason) for c in causes] == [(field, reason)]


def test_pruning_drops_unknown_fields_and_non_nullable_nulls(raycluster_v1: CrdVersion) -> None:
    body = load_sample("ray-cluster.sample.yaml")
    body["spec"]["madeUp"] = {"x": 1}
    body["spec"]["suspend"] = None
    body["metadata"]["notMeta"] = "x"
    body["status"] = {"lastUpdateTime": None, "state": "ready", "extra": 1}
    assert raycluster_v1.admit(body) == []
    assert "madeUp" not in body["spec"] and "suspend" not in body["spec"]
    assert "notMeta" not in body["metadata"]
    assert body["status"] == {"lastUpdateTime": None, "state": "ready"}  # lastUpdateTime is nullable


def test_transition_rules_run_only_on_update(raycluster_v1: CrdVersion) -> None:
    old = load_sample("ray-cluster.sample.yaml")
    old["spec"]["managedBy"] = "ray.io/kuberay-operator"
    new = load_sample("ray-cluster.sample.yaml")
    new["spec"]["managedBy"] = "kueue.x-k8s.io/multikueue"
    assert raycluster_v1.admit(new) == []  # a create may pick either value
    assert [c.field for c in raycluster_v1.admit(new, old)] == ["spec.managedBy"]
    assert raycluster_v1.unsupported_rules == set()  # every CEL rule in this CRD was evaluated


def test_namespaces_are_cluster_scoped_and_deleting_one_removes_its_objects(kube_api: KubeApiServer) -> None:
    core = client.CoreV1Api(kube_api.client())
    ns = core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="team-b")))
    assert ns.status.phase == "Active" and ns.metadata.namespace is None
    core.create_namespaced_config_map("team-b", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="cm")))
    assert [n.metadata.name for n in core.list_namespace().items] == ["team-b"]
    core.delete_namespace("team-b")
    expect_error(404, "NotFound", lambda: core.read_namespaced_config_map("cm", "team-b"))
    assert kube_api.resource_requests()[-1].namespace == "team-b"  # RBAC sees a namespace in itself


def test_watch_bookmarks_are_tolerated(kube_api: KubeApiServer) -> None:
    co = client.CustomObjectsApi(kube_api.client())
    co.create_namespaced_custom_object(*RAY, "default", RC, cluster("rc-mark"))
    events = list(
        watch.Watch().stream(
            co.list_namespaced_custom_object,
            *RAY,
            "default",
            RC,
            allow_watch_bookmarks=True,
            timeout_seconds=1,
        )
    )
    assert [e["type"] for e in events] == ["ADDED", "BOOKMARK"]
    assert events[1]["raw_object"]["metadata"]["resourceVersion"] == str(kube_api.store.resource_version)
