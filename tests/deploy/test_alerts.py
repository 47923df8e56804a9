"""rayops' own alerts, run through promtool with synthetic series: each fires when it should, and only then.

promtool comes with Debian's prometheus package, which the set-up script installs for the whole suite.
The series names are the contract with the controller's /metrics (docs/deploy.md, "Metrics and alerts").
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.deploy.manifests import find, render_applied

JOB = 'job="rayops-controller-metrics"'


def _series(name: str, labels: str, values: str) -> dict[str, str]:
    return {"series": f"{name}{{{JOB}{', ' + labels if labels else ''}}}", "values": values}


def _two_replicas(name: str, a: str, b: str, extra: str = "") -> list[dict[str, str]]:
    sep = ", " if extra else ""
    return [_series(name, f'pod="a"{sep}{extra}', a), _series(name, f'pod="b"{sep}{extra}', b)]


# (alert, input series, evaluation time, labels of the expected alerts: [] means "must not fire").
SCENARIOS: list[tuple[str, list[dict[str, str]], str, list[dict[str, str]]]] = [
    ("RayopsControllerDown", _two_replicas("up", "0x10", "0x10"), "7m", [{}]),
    ("RayopsControllerDown", _two_replicas("up", "1x10", "0x10"), "7m", []),
    ("RayopsNoLeader", _two_replicas("rayops_leader", "0x10", "0x10"), "4m", [{}]),
    ("RayopsNoLeader", _two_replicas("rayops_leader", "1x10", "0x10"), "4m", []),
    ("RayopsSeveralLeaders", _two_replicas("rayops_leader", "1x10", "1x10"), "3m", [{}]),
    ("RayopsSeveralLeaders", _two_replicas("rayops_leader", "0x10", "1x10"), "3m", []),
    (
        "RayopsTicksStalled",
        [
            *_two_replicas("rayops_leader", "1x15", "0x15"),
            _series("rayops_last_successful_tick_timestamp_seconds", 'pod="a"', "0x15"),
        ],
        "10m",
        [{}],
    ),
    (
        "RayopsTicksStalled",  # the timestamp follows the clock: ticks succeed every minute
        [
            *_two_replicas("rayops_leader", "1x15", "0x15"),
            _series("rayops_last_successful_tick_timestamp_seconds", 'pod="a"', "0+60x15"),
        ],
        "10m",
        [],
    ),
    (
        "RayopsTicksFailing",
        [
            _series("rayops_ticks_total", 'pod="a", outcome="failure"', "0+4x30"),
            _series("rayops_ticks_total", 'pod="a", outcome="success"', "0+1x30"),
        ],
        "25m",
        [{}],
    ),
    (
        "RayopsTicksFailing",
        [
            _series("rayops_ticks_total", 'pod="a", outcome="failure"', "0+1x30"),
            _series("rayops_ticks_total", 'pod="a", outcome="success"', "0+4x30"),
        ],
        "25m",
        [],
    ),
    (
        "RayopsMetricsUnavailable",
        [
            *_two_replicas("rayops_leader", "1x20", "0x20"),
            *_two_replicas("rayops_metrics_available", "0x20", "1x20", 'source="prometheus"'),
        ],
        "17m",
        [{"job": "rayops-controller-metrics", "pod": "a", "source": "prometheus"}],
    ),
    (
        "RayopsMetricsUnavailable",  # only the standby's (stale) value is 0: not an outage
        [
            *_two_replicas("rayops_leader", "1x20", "0x20"),
            *_two_replicas("rayops_metrics_available", "1x20", "0x20", 'source="prometheus"'),
        ],
        "17m",
        [],
    ),
    ("RayopsPolicyInvalid", _two_replicas("rayops_policy_set_valid", "0x10", "0x10"), "4m", [{}]),
    ("RayopsPolicyInvalid", _two_replicas("rayops_policy_set_valid", "1x10", "1x10"), "4m", []),
]


def _rules() -> dict[str, Any]:
    rule = find(render_applied("deploy/overlays/moc"), "PrometheusRule", "rayops")
    spec: dict[str, Any] = rule["spec"]
    return spec


def _alerts(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for g in spec["groups"] for r in g["rules"] if "alert" in r}


def _annotations(rule: dict[str, Any], labels: dict[str, str]) -> dict[str, str]:
    def expand(text: str) -> str:
        return re.sub(r"\{\{\s*\$labels\.(\w+)\s*\}\}", lambda m: labels[m.group(1)], text)

    return {k: expand(v) for k, v in (rule.get("annotations") or {}).items()}


def _promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool (Debian package prometheus, installed by deploy/laptop/setup.sh) is required"
    return found


def test_rule_file_is_valid_promql(tmp_path: Path) -> None:
    spec = _rules()
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(spec))
    proc = subprocess.run(
        [_promtool(), "check", "rules", "rules.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(_alerts(spec))} rules found" in proc.stdout + proc.stderr


def test_every_alert_fires_when_it_should_and_only_then(tmp_path: Path) -> None:
    spec = _rules()
    alerts = _alerts(spec)
    assert {name for name, *_ in SCENARIOS} == set(alerts), "one firing and one quiet scenario per alert"
    for name in alerts:
        outcomes = [bool(expected) for n, _, _, expected in SCENARIOS if n == name]
        assert sorted(outcomes) == [False, True], name
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(spec))
    tests = []
    for name, series, at, expected in SCENARIOS:
        rule = alerts[name]
        exp = []
        for labels in expected:
            full = {**labels, **rule.get("labels", {})}
            exp.append({"exp_labels": full, "exp_annotations": _annotations(rule, full)})
        tests.append(
            {
                "interval": "1m",
                "input_series": series,
                "alert_rule_test": [{"eval_time": at, "alertname": name, "exp_alerts": exp}],
            }
        )
    (tmp_path / "tests.yaml").write_text(
        yaml.safe_dump({"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": tests})
    )
    proc = subprocess.run(
        [_promtool(), "test", "rules", "tests.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_alert_has_severity_summary_and_a_for_duration() -> None:
    for name, rule in _alerts(_rules()).items():
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
        assert re.fullmatch(r"\d+m", rule["for"]), name
    names = set(_alerts(_rules()))
    # The four: no leader, ticks failing, metrics unavailable for long, policy invalid.
    assert {
        "RayopsNoLeader",
        "RayopsTicksFailing",
        "RayopsMetricsUnavailable",
        "RayopsPolicyInvalid",
    } <= names


def test_service_monitor_scrapes_the_controller_metrics_service() -> None:
    objs = render_applied("deploy/overlays/moc")
    monitor = find(objs, "ServiceMonitor", "rayops-controller")
    service = find(objs, "Service", "rayops-controller-metrics")
    labels = service["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in monitor["spec"]["selector"]["matchLabels"].items())
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    # The alerts' job label is the Service's name (prometheus-operator's default job label).
    assert f'job="{service["metadata"]["name"]}"' == JOB
