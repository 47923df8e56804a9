"""The report: JSON fields exactly as contracts.md section 8, the metric definitions, the tables."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from controller.simulate.model import Model
from controller.simulate.report import FIELDS, count_flaps, percentile
from controller.simulate.run import simulate
from tests.simulate.helpers import PENDING_POLICY, TWO_AT_ZERO, policy, trace

SECTION_8_FIELDS = [
    "policy",
    "worker_hours",
    "gpu_hours",
    "queue_wait_p50_s",
    "queue_wait_p95_s",
    "queue_wait_p99_s",
    "unserved_demand_s",
    "actions",
    "flaps",
]


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 21)]  # 1..20
    assert (percentile(values, 50), percentile(values, 95), percentile(values, 99)) == (10.0, 19.0, 20.0)
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) == 0.0
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0


def test_flaps_are_scale_ups_within_10_minutes_of_a_scale_down() -> None:
    # up, down (normal scale-in, not a flap), up 599 s later (flap), down, up 601 s later (no flap)
    actions = [(0.0, 1), (100.0, -1), (699.0, 1), (800.0, -1), (1401.0, 1), (1500.0, 1)]
    assert count_flaps(actions) == 1
    assert count_flaps([(0.0, -1), (600.0, 1)]) == 1  # exactly W is within
    assert count_flaps([(0.0, 1), (10.0, -1), (20.0, -1)]) == 0


def test_json_report_has_the_section_8_fields_per_policy_plus_the_model(tmp_path: Path) -> None:
    rep = simulate(trace(TWO_AT_ZERO), [policy(PENDING_POLICY, tmp_path)], Model(startup_s=5))
    data = json.loads(rep.to_json())
    assert list(FIELDS) == SECTION_8_FIELDS
    assert [r["policy"] for r in data["results"]] == [
        "pending-only",
        "static-peak",
        "ray-like",
        "hpa-like",
        "oracle",
    ]
    for row in data["results"]:
        assert list(row)[:9] == SECTION_8_FIELDS
        assert set(row) == {*SECTION_8_FIELDS, "unfinished_tasks", "model"}
        assert isinstance(row["policy"], str)
        assert all(isinstance(row[f], float | int) for f in SECTION_8_FIELDS[1:])
        assert isinstance(row["actions"], int) and isinstance(row["flaps"], int)
        assert row["model"]["startup_s"] == 5
        assert row["model"]["worker_cpus"] == 1.0
        assert row["model"]["idle_removal"] == "immediate once decided"
    intervals = {r["policy"]: r["model"]["decision_interval_s"] for r in data["results"]}
    assert intervals == {
        "pending-only": 15.0,
        "static-peak": None,
        "ray-like": 5.0,
        "hpa-like": 15.0,
        "oracle": None,
    }
    # the model parameters once for the whole report too, with the trace and the definitions
    assert data["model"]["startup_s"] == 5 and data["model"]["max_replicas"] == 10
    assert data["trace"] == {
        "name": "t",
        "source": "csv",
        "tasks": 2,
        "span_s": 300.0,
        "start": "2024-01-01T00:00:00+00:00",
    }
    assert "flaps" in data["definitions"] and "oracle" in data["definitions"]
    # with startup 5: ray-like serves at 5, tasks end at 65, workers removed at 125 -> 240 worker-s
    ray = next(r for r in data["results"] if r["policy"] == "ray-like")
    assert ray["worker_hours"] == pytest.approx(240 / 3600, abs=1e-6)
    assert ray["queue_wait_p95_s"] == 5.0


def test_text_and_markdown_tables(tmp_path: Path) -> None:
    rep = simulate(trace(TWO_AT_ZERO), [policy(PENDING_POLICY, tmp_path)], Model())
    text = rep.to_text()
    lines = text.splitlines()
    assert lines[0] == "trace t (csv): 2 tasks over 0.08 h from 2024-01-01T00:00:00+00:00"
    assert "startup_s=30.0" in lines[1] and "max_replicas=10" in lines[1]
    header = next(line for line in lines if line.startswith("policy"))
    assert header.split() == [
        "policy", "worker-h", "GPU-h", "wait", "p50", "s", "wait", "p95", "s", "wait", "p99", "s",
        "unserved", "s", "actions", "flaps", "vs", "oracle",
    ]  # fmt: skip
    oracle_row = next(line for line in lines if line.startswith("oracle *"))
    assert oracle_row.split()[2:4] == ["0.033", "0.000"] and oracle_row.endswith("1.00x")
    pending_row = next(line for line in lines if line.startswith("pending-only "))
    assert pending_row.split()[1] == "0.033"  # 120 worker-s, the same as the oracle, but with waits
    md = rep.to_markdown()
    assert "| policy | worker-h | GPU-h | wait p50 s |" in md
    assert "|---|---:|" in md
    assert "| oracle * | 0.033 | 0.000 | 0.0 | 0.0 | 0.0 | 0 | 2 | 0 | 1.00x |" in md
