"""`KubeApi`, the one module that calls Kubernetes: typed errors, retries, timeouts, secrecy, RBAC surface."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from controller.backends.base import (
    AlreadyExists,
    BackendError,
    BackendUnavailable,
    ClusterNotFound,
    ClusterRequest,
    ConflictError,
    InvalidProfile,
)
from controller.backends.kube_api import RBAC_RULES, Forbidden, KubeApi, NotFound, RetryPolicy, TestFailed
from controller.backends.kuberay import KubeRayBackend
from controller.backends.kuberay_events import KubeEventSink, KubeEventSource
from controller.domain import ClusterRef
from controller.events import Event, EventType
from tests.backends.contract import find, owner_decision
from tests.backends.driver_kuberay import PodActivity
from tests.backends.drivers import CONTRACT_PROFILE, GROUP
from tests.harness.kube import load_sample
from tests.standins.kube_api import KubeApiServer
from tests.standins.kube_requests import ApiRequest
from tests.standins.kuberay_operator import FakeKubeRayOperator

SECRET = "s3cr3t-controller-token-7f1e"
WRONG = "s3cr3t-wrong-token-91aa"
ADMIN = "admin-token-value"
IDENTITY = "system:serviceaccount:rayops:rayops-controller"
NS = "team-a"


@pytest.fixture
def server() -> Iterator[KubeApiServer]:
    with KubeApiServer({SECRET: IDENTITY, ADMIN: "system:admin"}, default_token=ADMIN) as s:
        yield s


def recording(server: KubeApiServer, **retry: Any) -> tuple[KubeApi, list[float]]:
    slept: list[float] = []
    policy = RetryPolicy(**({"base_delay_s": 0.01, "max_delay_s": 5.0} | retry))
    api = KubeApi(KubeApi.from_token(server.url, SECRET).api_client, policy, sleep=slept.append)
    return api, slept


def rc_body(name: str = "demo") -> dict[str, Any]:
    body = load_sample("ray-cluster.sample.yaml")
    body["metadata"] = {"name": name, "labels": {"rayops.io/managed": "true"}}
    return body


# --- typed errors --------------------------------------------------------------------------------


def test_errors_are_typed_and_name_the_request(server: KubeApiServer) -> None:
    api, _ = recording(server)
    with pytest.raises(ClusterNotFound, match="no Ray cluster named nope in namespace team-a"):
        api.get_raycluster(NS, "nope")
    api.create_raycluster(NS, rc_body())
    with pytest.raises(AlreadyExists, match="create rayclusters team-a/demo: already exists"):
        api.create_raycluster(NS, rc_body())
    test_op = {"op": "test", "path": "/spec/workerGroupSpecs/0/groupName", "value": "other"}
    with pytest.raises(TestFailed, match="a field read before the write has changed"):
        api.patch_raycluster(NS, "demo", [test_op])
    bad = {"op": "replace", "path": "/spec/workerGroupSpecs/0/replicas", "value": "two"}
    with pytest.raises(InvalidProfile, match=r"spec\.workerGroupSpecs\[0\]\.replicas"):
        api.patch_raycluster(NS, "demo", [{**test_op, "value": "workergroup"}, bad])
    with pytest.raises(NotFound, match="delete configmaps team-a/x"):
        api.delete_configmap(NS, "x")
    server.authorizer = lambda req: req.verb != "delete"
    with pytest.raises(Forbidden, match="cannot delete"):
        api.delete_raycluster(NS, "demo")
    server.authorizer = None
    server.inject_faults(400, count=1, verbs={"get"})
    with pytest.raises(BackendError, match="answered 400") as info:
        api.get_raycluster(NS, "demo")
    assert type(info.value) is BackendError  # a request rayops got wrong: not retried, not "unavailable"


def test_5xx_and_429_are_retried_with_backoff_honouring_retry_after(server: KubeApiServer) -> None:
    api, slept = recording(server)
    api.create_raycluster(NS, rc_body())
    server.inject_faults(503, count=1, verbs={"get"})
    server.inject_faults(429, count=1, verbs={"get"}, retry_after=2)
    assert api.get_raycluster(NS, "demo")["metadata"]["name"] == "demo"
    assert len(slept) == 2 and slept[0] < 0.02 and slept[1] == 2.0
    server.inject_faults(500, count=3, verbs={"patch"})
    with pytest.raises(BackendUnavailable, match="answered 500: Internal error occurred: injected fault"):
        api.patch_raycluster(NS, "demo", [{"op": "add", "path": "/spec/suspend", "value": False}])
    assert [r.code for r in server.resource_requests(IDENTITY) if r.verb == "patch"] == [500, 500, 500]


def test_a_retry_after_beyond_the_cap_is_capped(server: KubeApiServer) -> None:
    api, slept = recording(server, max_delay_s=1.5)
    server.inject_faults(429, count=1, verbs={"list"}, retry_after=600)
    assert api.list_pods(NS, "ray.io/cluster=x") == []
    assert slept == [1.5]


def test_an_ambiguous_create_failure_is_not_retried(server: KubeApiServer) -> None:
    """A 500 may come after the object was stored: the caller reads back instead of creating twice."""
    api, slept = recording(server)
    server.inject_faults(500, count=1, verbs={"create"}, commit=True)
    with pytest.raises(BackendUnavailable):
        api.create_configmap(NS, {"metadata": {"name": "cm"}})
    assert slept == [] and api.get_configmap(NS, "cm") is not None
    server.inject_faults(429, count=1, verbs={"create"}, retry_after=1)  # 429: surely not acted upon
    api.create_configmap(NS, {"metadata": {"name": "cm2"}})
    assert slept == [1.0]


def test_every_request_has_a_timeout(server: KubeApiServer) -> None:
    api, _ = recording(server, attempts=2, read_timeout_s=0.2)
    server.inject_faults(None, count=2, verbs={"list"}, resource="pods", delay=1.0)
    start = time.monotonic()
    with pytest.raises(BackendUnavailable, match="did not answer in time"):
        api.list_pods(NS, "ray.io/cluster=x")
    assert time.monotonic() - start < 0.9


def test_an_unreachable_server_is_unavailable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again before use: nothing listens there
    slept: list[float] = []
    api = KubeApi(
        KubeApi.from_token(f"http://127.0.0.1:{port}", SECRET).api_client, RetryPolicy(), slept.append
    )
    with pytest.raises(BackendUnavailable, match="could not connect to the API server"):
        api.list_rayclusters(NS)
    assert len(slept) == 2


def test_lists_follow_continue_tokens(server: KubeApiServer) -> None:
    for i in range(501):
        server.put(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"cm-{i:03d}", "namespace": NS}}
        )
    api, _ = recording(server)
    assert len(api.list_configmaps(NS)) == 501
    assert len([r for r in server.resource_requests(IDENTITY) if r.resource == "configmaps"]) == 2


# --- construction --------------------------------------------------------------------------------


def test_kubeconfig_and_environment_construction(
    server: KubeApiServer, tmp_path: Path, monkeypatch: Any
) -> None:
    path = server.write_kubeconfig(tmp_path / "config", token=SECRET, namespace=NS)
    assert KubeApi.from_kubeconfig(str(path)).list_rayclusters(NS) == []
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(path))
    assert KubeApi.from_environment().list_pods(NS, "a=b") == []
    assert {r.identity for r in server.resource_requests()} == {IDENTITY}


# --- leases and configmaps (leader election, the bot's durable state) -------------------------------


def test_lease_helpers_compare_and_set(server: KubeApiServer) -> None:
    api, _ = recording(server)
    assert api.get_lease(NS, "rayops-controller") is None
    body = {
        "metadata": {"name": "rayops-controller"},
        "spec": {"holderIdentity": "pod-a", "leaseDurationSeconds": 15},
    }
    created = api.create_lease(NS, body)
    with pytest.raises(AlreadyExists):
        api.create_lease(NS, body)
    mine = dict(created, spec={**created["spec"], "holderIdentity": "pod-b"})
    replaced = api.replace_lease(NS, "rayops-controller", mine)
    assert replaced["spec"]["holderIdentity"] == "pod-b"
    with pytest.raises(ConflictError):  # a candidate that read before pod-b's write loses
        api.replace_lease(
            NS, "rayops-controller", dict(created, spec={**created["spec"], "holderIdentity": "pod-c"})
        )
    got = api.get_lease(NS, "rayops-controller")
    assert got is not None and got["spec"]["holderIdentity"] == "pod-b"


def test_configmap_helpers_compare_and_set(server: KubeApiServer) -> None:
    api, _ = recording(server)
    labels = {"app.kubernetes.io/managed-by": "rayops", "rayops.io/kind": "approval"}
    created = api.create_configmap(
        NS, {"metadata": {"name": "req-k3j2", "labels": labels}, "data": {"s": "pending"}}
    )
    assert api.list_configmaps(NS, "rayops.io/kind=approval")[0]["data"] == {"s": "pending"}
    approved = api.replace_configmap(NS, "req-k3j2", dict(created, data={"s": "approved"}))
    with pytest.raises(ConflictError):  # the second approver pressing at once loses
        api.replace_configmap(NS, "req-k3j2", dict(created, data={"s": "denied"}))
    with pytest.raises(ConflictError):
        api.delete_configmap(NS, "req-k3j2", resource_version=created["metadata"]["resourceVersion"])
    api.delete_configmap(NS, "req-k3j2", resource_version=approved["metadata"]["resourceVersion"])
    assert api.get_configmap(NS, "req-k3j2") is None


# --- secrecy and the RBAC surface ------------------------------------------------------------------


def test_no_token_in_any_log_line_or_error(server: KubeApiServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    api, _ = recording(server, attempts=2, read_timeout_s=0.2)
    errors: list[BaseException] = []

    def attempt(call: Any) -> None:
        try:
            call()
        except BackendError as e:
            errors.append(e)

    attempt(lambda: api.create_raycluster(NS, rc_body()))
    server.inject_faults(500, count=2, verbs={"get"})
    attempt(lambda: api.get_raycluster(NS, "demo"))
    server.inject_faults(None, count=2, verbs={"list"}, delay=0.5)
    attempt(lambda: api.list_pods(NS, "a=b"))
    attempt(lambda: api.patch_raycluster(NS, "demo", [{"op": "test", "path": "/spec/x", "value": 1}]))
    attempt(lambda: api.get_raycluster(NS, "nope"))
    wrong = KubeApi.from_token(server.url, WRONG, retry=RetryPolicy(attempts=1))
    attempt(lambda: wrong.list_rayclusters(NS))
    sink = KubeEventSink(api, NS, pod_name="rayops-controller-0")
    server.inject_faults(500, count=3, verbs={"create"}, resource="events")
    sink.publish(Event(EventType.FAILURE, "boom", at=datetime.now(UTC)))
    assert len(errors) == 5 and any(isinstance(e, Forbidden) for e in errors)
    assert any("401" in str(e) for e in errors)
    text = caplog.text + "".join(f"{e!s}{e!r}{e.__cause__!s}" for e in errors)
    assert "retrying" in caplog.text and "could not publish event" in caplog.text
    for secret in (SECRET, WRONG):
        assert secret not in text


def rules(requests: list[ApiRequest]) -> set[tuple[str, str, str, str]]:
    return {(r.api_group, r.resource, r.subresource, r.verb) for r in requests}


def test_the_rbac_surface_is_exactly_rbac_rules(server: KubeApiServer) -> None:
    """Every request KubeApi can make, each carrying the token's identity; deploy/ compares the Roles."""
    api, _ = recording(server)
    api.create_raycluster(NS, rc_body())
    api.get_raycluster(NS, "demo")
    api.list_rayclusters(NS, "rayops.io/managed=true")
    api.patch_raycluster(NS, "demo", [{"op": "add", "path": "/spec/suspend", "value": False}])
    api.list_pods(NS, "ray.io/cluster=demo")
    version = api.list_rayclusters_versioned(NS, None).resource_version
    api.watch_rayclusters(NS, "rayops.io/managed=true", version, 1).close()  # the controller's cache
    api.watch_pods(NS, "ray.io/cluster", version, 1).close()
    assert api.list_routes(NS) is None  # no Route API on this server: optional, not an error
    sink = KubeEventSink(api, NS, pod_name="rayops-controller-0")
    sink.publish(Event(EventType.SCALED_UP, "up", at=datetime.now(UTC), cluster=ClusterRef(NS, "demo")))
    KubeEventSource(api, [NS]).poll()
    lease = api.create_lease(NS, {"metadata": {"name": "l"}, "spec": {}})
    api.get_lease(NS, "l")
    api.replace_lease(NS, "l", lease)
    cm = api.create_configmap(NS, {"metadata": {"name": "c"}})
    api.get_configmap(NS, "c")
    api.list_configmaps(NS)
    api.replace_configmap(NS, "c", cm)
    api.delete_configmap(NS, "c")
    api.delete_raycluster(NS, "demo")
    made = server.resource_requests()
    assert {r.identity for r in made} == {IDENTITY}
    assert rules(made) == RBAC_RULES


def test_the_backend_stays_inside_rbac_rules(server: KubeApiServer) -> None:
    operator = FakeKubeRayOperator(server.store)
    api, _ = recording(server)
    backend = KubeRayBackend(api, {CONTRACT_PROFILE.name: CONTRACT_PROFILE}, activity=PodActivity(server))
    ref = backend.create(ClusterRequest("demo", NS, CONTRACT_PROFILE.name, "u", workers=2)).ref
    operator.reconcile_all()
    cluster = find(backend, ref)
    group = cluster.group(GROUP)
    backend.apply(cluster, [owner_decision(group, 1, (group.workers[0].name,))])
    operator.reconcile_all()
    backend.finish_removals(find(backend, ref))
    backend.set_annotations(ref, {"rayops.io/paused": "true"})
    backend.get(ref)
    backend.list()
    backend.release(ref)
    released = server.get_obj("rayclusters", NS, "demo")
    assert released is not None
    released["metadata"]["labels"] = {"rayops.io/managed": "true"}  # opted in again by its owner
    server.put(released)
    backend.delete(ref)
    made = server.resource_requests()
    assert {r.identity for r in made} == {IDENTITY}
    assert rules(made) <= RBAC_RULES
    assert ("ray.io", "rayclusters", "status", "patch") not in rules(made)  # status is the operator's
