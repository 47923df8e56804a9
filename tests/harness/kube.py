"""Fixtures for the Kubernetes API stand-in and the fake KubeRay operator (issue 2).

- `kube_api`: a fresh `KubeApiServer` per test on 127.0.0.1 (starting one costs about a millisecond; the CRD
  is parsed once per process). Tokens are `KUBE_TOKENS`; `kube_api.client(token)` gives an `ApiClient`.
- `kuberay_operator`: a `FakeKubeRayOperator` on that server's store; call `reconcile()`/`reconcile_all()`, or
  `start()` for a background loop. Errors from the background loop fail the test at teardown.
- `kube_target`: the contract-test target. Always the stand-in; a real API server is added as a second
  parameter when `RAYOPS_TEST_KUBECONFIG` names a kubeconfig (an opt-in run, never a skip). On a real server
  each test gets its own namespace, deleted afterwards, and the KubeRay CRD must already be installed.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.client.rest import ApiException

from tests.standins.kube_api import KubeApiServer
from tests.standins.kuberay_operator import FakeKubeRayOperator

REAL_KUBECONFIG_ENV = "RAYOPS_TEST_KUBECONFIG"
KUBERAY_FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "kuberay"
KUBERAY_CRD_FILE = KUBERAY_FIXTURES / "ray.io_rayclusters.yaml"
SAMPLE_FILES = (
    "ray-cluster.sample.yaml",
    "ray-cluster.complete.yaml",
    "ray-cluster.autoscaler.yaml",
    "ray-cluster.autoscaler-v2.yaml",
    "ray-cluster.verl.yaml",
)

ADMIN_TOKEN = "admin-token"
CONTROLLER_TOKEN = "controller-token"
BOT_TOKEN = "bot-token"
USER_TOKEN = "user-token"
KUBE_TOKENS = {
    ADMIN_TOKEN: "system:admin",
    CONTROLLER_TOKEN: "system:serviceaccount:rayops:rayops-controller",
    BOT_TOKEN: "system:serviceaccount:rayops:rayops-bot",
    USER_TOKEN: "alice@example.com",
}


def load_sample(file_name: str) -> dict[str, Any]:
    """The RayCluster document of a KubeRay sample file (two samples also carry a ConfigMap)."""
    with open(KUBERAY_FIXTURES / file_name) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    result: dict[str, Any] = next(d for d in docs if d.get("kind") == "RayCluster")
    return result


@pytest.fixture
def kube_api() -> Iterator[KubeApiServer]:
    server = KubeApiServer(KUBE_TOKENS, default_token=ADMIN_TOKEN).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def kuberay_operator(kube_api: KubeApiServer) -> Iterator[FakeKubeRayOperator]:
    operator = FakeKubeRayOperator(kube_api.store)
    yield operator
    operator.stop()
    if operator.errors:
        pytest.fail(f"fake KubeRay operator loop failed: {operator.errors[0]!r}")


@dataclass
class KubeTarget:
    """Where a contract test runs: the stand-in (`standin` set) or a real API server (`standin` None)."""

    name: str
    api: k8s_client.ApiClient
    namespace: str
    standin: KubeApiServer | None


def _target_params() -> list[Any]:
    params: list[Any] = ["standin"]
    if os.environ.get(REAL_KUBECONFIG_ENV):
        params.append(pytest.param("real", marks=pytest.mark.kube_real))
    return params


@pytest.fixture(params=_target_params())
def kube_target(request: pytest.FixtureRequest) -> Iterator[KubeTarget]:
    if request.param == "standin":
        server = KubeApiServer(KUBE_TOKENS, default_token=ADMIN_TOKEN).start()
        try:
            yield KubeTarget("standin", server.client(), "default", server)
        finally:
            server.stop()
        return
    api = k8s_config.new_client_from_config(config_file=os.environ[REAL_KUBECONFIG_ENV])
    try:
        k8s_client.ApiextensionsV1Api(api).read_custom_resource_definition("rayclusters.ray.io")
    except ApiException as exc:
        pytest.fail(
            f"the real API server needs the KubeRay CRD installed ({KUBERAY_CRD_FILE.name}): {exc.status}"
        )
    namespace = f"rayops-contract-{uuid.uuid4().hex[:8]}"
    core = k8s_client.CoreV1Api(api)
    core.create_namespace(k8s_client.V1Namespace(metadata=k8s_client.V1ObjectMeta(name=namespace)))
    _wait_for_default_service_account(core, namespace)
    try:
        yield KubeTarget("real", api, namespace, None)
    finally:
        core.delete_namespace(namespace)
        api.close()


def _wait_for_default_service_account(core: k8s_client.CoreV1Api, namespace: str) -> None:
    """Pods are refused until the namespace's `default` ServiceAccount exists (a controller creates it)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            core.read_namespaced_service_account("default", namespace)
            return
        except ApiException as exc:
            if exc.status != 404 or time.monotonic() > deadline:
                raise
            time.sleep(0.2)
