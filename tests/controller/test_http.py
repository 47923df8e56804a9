"""The HTTP endpoints, and the metric names deploy/base/monitoring.yaml's alerts rely on."""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from pathlib import Path

from controller.domain import GroupRef, SignalType
from controller.http import ControllerEndpoints
from controller.telemetry import ControllerMetrics
from tests.controller.conftest import Loop

MONITORING = Path(__file__).resolve().parents[2] / "deploy" / "base" / "monitoring.yaml"


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_probes_answer_with_their_reason_and_unknown_paths_404() -> None:
    state = {"healthy": True}

    def broken() -> tuple[bool, str]:
        raise RuntimeError("boom")

    ep = ControllerEndpoints(
        ControllerMetrics(), lambda: (state["healthy"], "last tick 1 s ago"), broken, port=0
    ).start()
    try:
        assert ep.address[0] == "127.0.0.1"
        assert get(ep.url + "/healthz") == (200, "ok: last tick 1 s ago\n")
        state["healthy"] = False
        assert get(ep.url + "/healthz")[0] == 503
        code, body = get(ep.url + "/readyz")
        assert code == 503 and "RuntimeError: boom" in body
        assert get(ep.url + "/nope")[0] == 404
    finally:
        ep.stop()


def test_metrics_carry_every_name_the_alerts_use(loop: Loop) -> None:
    loop.backend.add("demo")
    loop.metrics.set(GroupRef("team-a", "demo", "cpu"), SignalType.PENDING_DEMAND, 2)
    loop.tick()
    telemetry = loop.reconciler.telemetry
    telemetry.leader.set(1)
    ep = ControllerEndpoints(telemetry, lambda: (True, ""), lambda: (True, ""), port=0).start()
    try:
        code, text = get(ep.url + "/metrics")
    finally:
        ep.stop()
    assert code == 200
    used = set(re.findall(r"\brayops_[a-z_]+", MONITORING.read_text()))
    exposed = set(re.findall(r"^(rayops_[a-z_]+)", text, re.MULTILINE))
    assert used and used <= exposed, f"alerts use metrics /metrics lacks: {used - exposed}"
    assert 'rayops_ticks_total{outcome="success"} 1.0' in text
    assert 'rayops_desired_workers{cluster="demo",group="cpu",namespace="team-a"} 2.0' in text
    assert 'rayops_decisions_total{action="up",reason="SIGNAL_PROPOSAL"} 1.0' in text
    assert 'rayops_metrics_available{source="table"} 1.0' in text
    assert "rayops_tick_duration_seconds_bucket" in text
