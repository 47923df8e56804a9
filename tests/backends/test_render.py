"""Profiles rendered to RayClusters: the shape rayops relies on, and admission by the real KubeRay CRD."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from controller import keys
from controller.backends.base import ClusterRequest, InvalidProfile
from controller.backends.kuberay_read import group_resources
from controller.backends.render import parse_quantity, render_raycluster
from tests.backends.drivers import CONTRACT_PROFILE
from tests.backends.profiles import BOUNDS_PROFILE, GPU_PROFILE, profile
from tests.harness.kube import KUBERAY_CRD_FILE
from tests.standins.crd import CrdVersion, load_crd

NOW = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)


@pytest.fixture(scope="module")
def crd() -> CrdVersion:
    return load_crd(KUBERAY_CRD_FILE).version("v1")


def request(profile_name: str, **kw: Any) -> ClusterRequest:
    return ClusterRequest(name="demo", namespace="team-a", profile=profile_name, requester="slack:U1", **kw)


def containers(group: dict[str, Any]) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = group["template"]["spec"]["containers"]
    return result


@pytest.mark.parametrize(
    ("prof", "kw", "bounds"),
    [
        (CONTRACT_PROFILE, {}, False),
        (GPU_PROFILE, {"workers": 3, "gpus": 1, "labels": {"team": "nlp"}}, False),
        (BOUNDS_PROFILE, {"ttl_seconds": 600}, True),
        (profile("plain"), {}, False),
    ],
    ids=["contract", "gpu", "bounds", "defaults"],
)
def test_rendered_clusters_pass_crd_admission_unchanged(
    crd: CrdVersion, prof: Any, kw: dict[str, Any], bounds: bool
) -> None:
    body = render_raycluster(prof, request(prof.name, **kw), NOW, bounds_mode=bounds)
    admitted = json.loads(json.dumps(body))
    assert crd.admit(admitted) == []
    # Nothing was pruned: every field rayops writes is one the CRD knows.
    for g_in, g_out in zip(
        body["spec"]["workerGroupSpecs"], admitted["spec"]["workerGroupSpecs"], strict=True
    ):
        assert {k: g_out[k] for k in g_in} == g_in
    assert admitted["spec"]["headGroupSpec"] == body["spec"]["headGroupSpec"]


def test_gpu_profile_shape() -> None:
    body = render_raycluster(GPU_PROFILE, request("gpu-box", workers=3, gpus=1), NOW)
    meta, spec = body["metadata"], body["spec"]
    assert meta["labels"] == {keys.LABEL_MANAGED_BY: keys.MANAGED_BY_VALUE}
    assert meta["annotations"] == {
        keys.ANN_REQUESTER: "slack:U1",
        keys.ANN_PROFILE: "gpu-box",
        keys.ANN_POLICY: "owner-policy",
        keys.ANN_EXPIRES_AT: (NOW + timedelta(hours=8)).isoformat(),
    }
    assert spec["enableInTreeAutoscaling"] is False and "autoscalerOptions" not in spec
    head = spec["headGroupSpec"]
    assert head["rayStartParams"] == {"dashboard-host": "0.0.0.0", "num-cpus": "2"}
    assert head["enableIngress"] is True
    (head_container,) = containers(head)
    assert {p["name"]: p["containerPort"] for p in head_container["ports"]} == {
        "gcs-server": 6379,
        "dashboard": 8265,
        "client": 10001,
        "metrics": 8080,
        "dash-metrics": 44227,
    }
    cpu, gpu = spec["workerGroupSpecs"]
    assert (cpu["groupName"], cpu["replicas"], cpu["minReplicas"], cpu["maxReplicas"]) == ("cpu", 3, 0, 6)
    assert (gpu["groupName"], gpu["replicas"], gpu["minReplicas"], gpu["maxReplicas"]) == ("gpu", 1, 0, 2)
    assert cpu["rayStartParams"] == {"num-cpus": "1"}  # 500m rounds up, as KubeRay does
    assert gpu["rayStartParams"] == {"num-cpus": "8", "num-gpus": "2", "resources": '"{\\"accel\\": 2}"'}
    (gpu_container,) = containers(gpu)
    assert gpu_container["resources"] == {
        "requests": {"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": "2"},
        "limits": {"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": "2"},
    }
    for c in [head_container, *containers(cpu), gpu_container]:
        assert c["envFrom"] == [{"secretRef": {"name": "s3-data"}}]
        assert c["image"] == "quay.io/example/ray:2.60.0-gpu"
    for g in (cpu, gpu):
        assert g["template"]["spec"]["restartPolicy"] == "Never"
    # What rayops reads back from what it wrote: the worker's resources as Ray sees them.
    assert group_resources(gpu) == {"CPU": 8.0, "GPU": 2.0, "accel": 2.0}
    assert group_resources(cpu) == {"CPU": 1.0}


def test_bounds_mode_turns_the_in_tree_autoscaler_on() -> None:
    body = render_raycluster(BOUNDS_PROFILE, request("bounds-box"), NOW, bounds_mode=True)
    spec = body["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["autoscalerOptions"] == {"upscalingMode": "Default", "idleTimeoutSeconds": 60}
    ports = {p["name"] for p in containers(spec["headGroupSpec"])[0]["ports"]}
    assert "as-metrics" in ports
    assert "envFrom" not in containers(spec["headGroupSpec"])[0]  # no data connection in this profile


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"workers": 7}, "cpu of profile gpu-box takes 0 to 6 workers"),
        ({"gpus": 3}, "gpu of profile gpu-box takes 0 to 2 workers"),
        ({"ttl_seconds": 0}, "time-to-live must be above 0 and at most 7d"),
        ({"ttl_seconds": 8 * 24 * 3600}, "at most 7d"),
        ({"name": "Demo"}, "cluster name uses lowercase"),
        ({"name": "x" * 60}, "at most 54 characters"),
        ({"namespace": "Team A"}, "namespace uses lowercase"),
    ],
)
def test_requests_outside_the_profile_are_refused_before_rendering(kw: dict[str, Any], message: str) -> None:
    fields = {"name": "demo", "namespace": "team-a", "profile": "gpu-box", "requester": "u"} | kw
    with pytest.raises(InvalidProfile, match=message) as info:
        render_raycluster(GPU_PROFILE, ClusterRequest(**fields), NOW)
    assert "nothing was created" in str(info.value)


def test_gpus_from_a_profile_without_a_gpu_group() -> None:
    with pytest.raises(InvalidProfile, match="has no GPU worker group"):
        render_raycluster(CONTRACT_PROFILE, request(CONTRACT_PROFILE.name, gpus=1), NOW)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("500m", 0.5),
        ("2", 2.0),
        (4, 4.0),
        ("1.5", 1.5),
        ("8Gi", 8 * 2.0**30),
        ("1k", 1000.0),
        ("x", None),
        ("", None),
    ],
)
def test_parse_quantity(text: Any, value: float | None) -> None:
    assert parse_quantity(text) == value
