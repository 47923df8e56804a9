"""The built-in signals: their PromQL text and the same arithmetic in Python."""

from __future__ import annotations

import math
from collections.abc import Mapping

import pytest

from controller.keys import METRIC_MAPPING_LABELS
from controller.metrics.queries import (
    CLUSTER_LABELS,
    PENDING_TASKS,
    Aggregate,
    Selector,
    utilization_aggregate,
)

Row = tuple[str, Mapping[str, str], float]


def test_cpu_utilization_is_a_mean_by_the_mapping_labels() -> None:
    agg = utilization_aggregate("CPU")
    assert agg.promql() == "avg by (namespace, ray_io_cluster, ray_io_group) (ray_node_cpu_utilization)"
    assert METRIC_MAPPING_LABELS == ("namespace", "ray_io_cluster", "ray_io_group")
    rows: list[Row] = [("ray_node_cpu_utilization", {}, 20.0), ("ray_node_cpu_utilization", {}, 60.0)]
    assert agg.evaluate(rows) == 40.0


def test_memory_and_gpu_memory_are_percent_ratios() -> None:
    mem = utilization_aggregate("memory")
    assert mem.promql() == (
        "100 * (sum by (namespace, ray_io_cluster, ray_io_group) (ray_node_mem_used)) / "
        "(sum by (namespace, ray_io_cluster, ray_io_group) (ray_node_mem_total))"
    )
    rows: list[Row] = [
        ("ray_node_mem_used", {}, 1.0),
        ("ray_node_mem_total", {}, 4.0),
        ("ray_node_mem_used", {}, 1.0),
    ]
    rows.append(("ray_node_mem_total", {}, 4.0))
    assert mem.evaluate(rows) == 25.0
    gram = utilization_aggregate("GPU_memory")
    assert "sum by (namespace, ray_io_cluster, ray_io_group) (ray_node_gram_available)" in gram.promql()
    assert gram.evaluate([("ray_node_gram_used", {}, 1.0), ("ray_node_gram_available", {}, 3.0)]) == 25.0


def test_other_resources_are_logical_use_from_ray_resources() -> None:
    explicit = utilization_aggregate("logical:GPU")
    assert explicit.promql() == (
        '100 * (sum by (namespace, ray_io_cluster, ray_io_group) (ray_resources{Name="GPU",State="USED"})) / '
        '(sum by (namespace, ray_io_cluster, ray_io_group) (ray_resources{Name="GPU"}))'
    )
    custom = utilization_aggregate("accel")
    rows = [
        ("ray_resources", {"Name": "accel", "State": "USED"}, 1.0),
        ("ray_resources", {"Name": "accel", "State": "AVAILABLE"}, 3.0),
        ("ray_resources", {"Name": "CPU", "State": "USED"}, 8.0),
    ]
    assert custom.evaluate(rows) == 25.0
    with pytest.raises(ValueError, match="names no Ray resource"):
        utilization_aggregate("logical:")


def test_pending_tasks_sum_every_series_per_cluster() -> None:
    assert PENDING_TASKS.promql(CLUSTER_LABELS) == (
        'sum by (namespace, ray_io_cluster) (ray_tasks{State=~"PENDING_NODE_ASSIGNMENT|PENDING_ARGS_AVAIL"})'
        " or 0 * sum by (namespace, ray_io_cluster) (ray_tasks)"
    )
    rows = [
        ("ray_tasks", {"State": "PENDING_NODE_ASSIGNMENT", "Source": "owner"}, 3.0),
        ("ray_tasks", {"State": "PENDING_ARGS_AVAIL", "Source": "owner"}, 1.0),
        ("ray_tasks", {"State": "PENDING_NODE_ASSIGNMENT", "Source": "executor"}, -1.0),
        ("ray_tasks", {"State": "RUNNING", "Source": "executor"}, 5.0),
    ]
    assert PENDING_TASKS.evaluate(rows) == 3.0
    # Ray drops a state's series once nothing is in it: other ray_tasks series mean 0 pending ...
    assert PENDING_TASKS.evaluate([("ray_tasks", {"State": "FINISHED"}, 12.0)]) == 0.0
    # ... and no ray_tasks at all means no data
    assert PENDING_TASKS.evaluate([("ray_node_cpu_count", {}, 2.0)]) is None


def test_no_series_and_zero_denominators_are_not_zero() -> None:
    agg = utilization_aggregate("memory")
    assert agg.evaluate([]) is None
    assert agg.evaluate([("ray_node_mem_used", {}, 1.0)]) is None  # no denominator series
    assert math.isnan(agg.evaluate([("ray_node_mem_used", {}, 0.0), ("ray_node_mem_total", {}, 0.0)]) or 0)
    assert agg.evaluate([("ray_node_mem_used", {}, 1.0), ("ray_node_mem_total", {}, 0.0)]) == math.inf


def test_label_values_are_quoted_safely() -> None:
    sel = Selector("ray_resources", (("Name", ('we"ird\\name',)),))
    assert sel.promql() == 'ray_resources{Name="we\\"ird\\\\name"}'
    assert sel.matches("ray_resources", {"Name": 'we"ird\\name'})
    regex = Selector("m", (("State", ("A.B", "C")),))
    assert regex.promql() == 'm{State=~"A\\\\.B|C"}'


def test_sample_time_query_uses_timestamp_of_a_plain_selector() -> None:
    agg = Aggregate("avg", (Selector("ray_node_cpu_utilization"),))
    assert agg.promql_sample_time() == (
        "min by (namespace, ray_io_cluster, ray_io_group) (timestamp(ray_node_cpu_utilization))"
    )
