"""The PodMonitor's relabelling yields exactly the metric label constant the Prometheus source groups by."""

from __future__ import annotations

import pytest

from controller import keys
from tests.deploy.manifests import APPLIED_DIRS, Obj, render_applied
from tests.deploy.relabel import pod_target, relabel, sanitize, visible

# The labels KubeRay puts on every Ray pod (ray-kuberay.md section 6); here a worker of "small-group-demo".
WORKER_LABELS = {
    keys.LABEL_RAY_CLUSTER: "demo",
    keys.LABEL_RAY_GROUP: "small-group-demo",
    keys.LABEL_RAY_NODE_TYPE: "worker",
    "ray.io/is-ray-node": "yes",
    "ray.io/identifier": "demo-worker",
    "app.kubernetes.io/name": "kuberay",
    "app.kubernetes.io/created-by": "kuberay-operator",
}


def _pod_monitors() -> list[tuple[str, Obj]]:
    found = [(d, o) for d in APPLIED_DIRS for o in render_applied(d) if o["kind"] == "PodMonitor"]
    assert {d for d, _ in found} == set(APPLIED_DIRS), "every overlay and each managed namespace has one"
    return found


@pytest.mark.parametrize(("directory", "monitor"), _pod_monitors())
def test_relabelling_produces_exactly_the_mapping_labels(directory: str, monitor: Obj) -> None:
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert all(WORKER_LABELS.get(k) == v for k, v in selector.items()), "the selector matches Ray pods"
    endpoints = monitor["spec"]["podMetricsEndpoints"]
    assert endpoints[0]["port"] == "metrics", "KubeRay's metrics export port on every Ray node"
    for endpoint in endpoints:
        configs = endpoint["relabelings"]
        assert {c["targetLabel"] for c in configs} == set(keys.METRIC_MAPPING_LABELS)
        target = pod_target("team-a", "demo-small-group-demo-worker-x7k2p", WORKER_LABELS, endpoint["port"])
        result = relabel(target, configs)
        assert result is not None
        assert visible(result) == {
            keys.METRIC_LABEL_NAMESPACE: "team-a",
            keys.METRIC_LABEL_CLUSTER: "demo",
            keys.METRIC_LABEL_GROUP: "small-group-demo",
        }


@pytest.mark.parametrize(("directory", "monitor"), _pod_monitors())
def test_relabelling_reads_the_kuberay_pod_labels_named_in_keys(directory: str, monitor: Obj) -> None:
    sources = {
        c["targetLabel"]: c["sourceLabels"]
        for e in monitor["spec"]["podMetricsEndpoints"]
        for c in e["relabelings"]
    }
    assert sources == {
        keys.METRIC_LABEL_NAMESPACE: ["__meta_kubernetes_namespace"],
        keys.METRIC_LABEL_CLUSTER: [f"__meta_kubernetes_pod_label_{sanitize(keys.LABEL_RAY_CLUSTER)}"],
        keys.METRIC_LABEL_GROUP: [f"__meta_kubernetes_pod_label_{sanitize(keys.LABEL_RAY_GROUP)}"],
    }


def test_the_emulator_follows_prometheus_semantics() -> None:
    labels = {"__meta_a": "x-1", "b": "keep"}
    assert relabel(labels, [{"sourceLabels": ["__meta_a"], "regex": "x-(\\d)", "targetLabel": "n"}]) == {
        **labels,
        "n": "1",
    }
    # No match: unchanged. Anchored regex: "x" does not match "x-1".
    assert relabel(labels, [{"sourceLabels": ["__meta_a"], "regex": "x", "targetLabel": "n"}]) == labels
    # An empty result deletes the target label.
    assert relabel(labels, [{"sourceLabels": ["__missing"], "targetLabel": "b"}]) == {"__meta_a": "x-1"}
    assert relabel(labels, [{"action": "keep", "sourceLabels": ["b"], "regex": "drop-me"}]) is None
    with pytest.raises(NotImplementedError):
        relabel(labels, [{"action": "hashmod", "sourceLabels": ["b"], "targetLabel": "h", "modulus": 2}])
    assert sanitize("ray.io/cluster") == "ray_io_cluster"
