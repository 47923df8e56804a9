"""Profiles and policies the KubeRay-specific tests share (the contract suite's profile is in drivers.py)."""

from __future__ import annotations

from typing import Any

from controller.policy.model import ClusterProfile, ScalingPolicy


def profile(name: str, **spec: Any) -> ClusterProfile:
    return ClusterProfile.model_validate(
        {
            "apiVersion": "rayops.io/v1alpha1",
            "kind": "ClusterProfile",
            "metadata": {"name": name},
            "spec": spec,
        }
    )


def policy(name: str, mode: str) -> ScalingPolicy:
    return ScalingPolicy.model_validate(
        {
            "apiVersion": "rayops.io/v1alpha1",
            "kind": "ScalingPolicy",
            "metadata": {"name": name},
            "spec": {"mode": mode, "minReplicas": 0, "maxReplicas": 4},
        }
    )


GPU_PROFILE = profile(
    "gpu-box",
    rayImage="quay.io/example/ray:2.60.0-gpu",
    head={"cpu": "2", "memory": "8Gi"},
    workerGroups=[
        {"name": "cpu", "cpu": "500m", "memory": "2Gi", "defaultWorkers": 1, "maxWorkers": 6},
        {
            "name": "gpu",
            "cpu": "8",
            "memory": "32Gi",
            "gpu": 2,
            "maxWorkers": 2,
            "rayResources": {"accel": 2},
        },
    ],
    dataConnection="s3-data",
    enableIngress=True,
    scalingPolicy="owner-policy",
)
BOUNDS_PROFILE = profile(
    "bounds-box",
    workerGroups=[{"name": "cpu", "cpu": "1", "memory": "1Gi", "defaultWorkers": 1, "maxWorkers": 4}],
    scalingPolicy="ray-bounds",
)
POLICIES = {"owner-policy": policy("owner-policy", "owner"), "ray-bounds": policy("ray-bounds", "bounds")}
