"""Metrics sources: signal values per worker group and node activity per cluster (contracts.md section 5).

- `base`: the `MetricsSource`, `ActivitySource` and `PendingTaskCounter` protocols and their values.
- `prometheus`: Prometheus / Thanos Querier, one query per signal per tick (per namespace in tenancy mode).
- `ray_dashboard`: pending demand per resource shape and node activity from each Ray dashboard.
- `direct`: Ray's own `/metrics` text, for laptop mode without Prometheus.
- `composite`: routing of each signal to a source, and `check_signals` for load-time refusal.
- `demand`, `queries`, `dashboard_shapes`: the pure parts (attribution, signal arithmetic, parsing).
"""

from controller.metrics.base import (
    ActivitySource,
    ClusterActivity,
    FetchResult,
    MetricsSource,
    MetricTarget,
    PendingTaskCounter,
    Support,
    targets_for,
)
from controller.metrics.composite import CompositeSource, check_signals
from controller.metrics.demand import Attribution, ShapeDemand, attribute_demand
from controller.metrics.http import HttpSettings

__all__ = [
    "ActivitySource",
    "Attribution",
    "ClusterActivity",
    "CompositeSource",
    "FetchResult",
    "HttpSettings",
    "MetricTarget",
    "MetricsSource",
    "PendingTaskCounter",
    "ShapeDemand",
    "Support",
    "attribute_demand",
    "check_signals",
    "targets_for",
]
