"""Every label, annotation and metric-label key rayops reads or writes (contracts.md sections 3-5).

One module, so a grep finds every place a key is used, and the PodMonitor in deploy/ and the
Prometheus source are tested against the same constant.
"""

from __future__ import annotations

PREFIX = "rayops.io/"

# Labels on RayClusters rayops manages (section 3/4): created by rayops, or opted in by hand.
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "rayops"
LABEL_MANAGED = "rayops.io/managed"
MANAGED_VALUE = "true"

# Annotations (section 3).
ANN_REQUESTER = "rayops.io/requester"
ANN_PROFILE = "rayops.io/profile"
ANN_POLICY = "rayops.io/policy"
ANN_EXPIRES_AT = "rayops.io/expires-at"
ANN_PAUSED = "rayops.io/paused"
ANN_MANUAL_REPLICAS = "rayops.io/manual-replicas"
ANN_DECISION = "rayops.io/decision"
ANN_STATE = "rayops.io/state"
# What an approver allowed beyond the requester's access limits (controller.annotations.ApprovedLimits):
# the controller caps the cluster at the larger of this and the rule limits (controller/limits.py).
ANN_APPROVED_LIMITS = "rayops.io/approved-limits"
ALL_ANNOTATIONS = (
    ANN_REQUESTER,
    ANN_PROFILE,
    ANN_POLICY,
    ANN_EXPIRES_AT,
    ANN_PAUSED,
    ANN_MANUAL_REPLICAS,
    ANN_DECISION,
    ANN_STATE,
    ANN_APPROVED_LIMITS,
)
# Annotations are bounded so a RayCluster stays far below the 256 KiB annotation limit.
MAX_ANNOTATION_BYTES = 16 * 1024

# Kueue and KubeRay keys rayops reads.
LABEL_KUEUE_QUEUE = "kueue.x-k8s.io/queue-name"
LABEL_RAY_CLUSTER = "ray.io/cluster"
LABEL_RAY_GROUP = "ray.io/group"
LABEL_RAY_NODE_TYPE = "ray.io/node-type"

# Section 5: the labels that map a Ray metric series to (namespace, cluster, group).
METRIC_LABEL_NAMESPACE = "namespace"
METRIC_LABEL_CLUSTER = "ray_io_cluster"
METRIC_LABEL_GROUP = "ray_io_group"
METRIC_MAPPING_LABELS = (METRIC_LABEL_NAMESPACE, METRIC_LABEL_CLUSTER, METRIC_LABEL_GROUP)
LOCAL_NAMESPACE = "local"  # namespace label of laptop-mode clusters

# Kubernetes Events rayops emits (section 6).
EVENT_REPORTING_COMPONENT = "rayops-controller"
# On each of those Events: the whole typed event as JSON, so the bot reads back exactly what was sent
# (requester, severity, data), not only reason and message. Not on RayClusters: not in ALL_ANNOTATIONS.
EVENT_ANNOTATION = "rayops.io/event"


def is_opted_in(labels: dict[str, str] | None) -> bool:
    """Only clusters created by rayops or labelled by their owner are ever touched (section 4)."""
    labels = labels or {}
    return labels.get(LABEL_MANAGED_BY) == MANAGED_BY_VALUE or labels.get(LABEL_MANAGED) == MANAGED_VALUE
