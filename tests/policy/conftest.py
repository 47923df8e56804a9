"""Hypothesis profiles and small builders for the decision-function tests.

`HYPOTHESIS_PROFILE=ci` (set by tests/run.sh) runs every property 10,000 times; the default `dev`
profile runs a few hundred so a local run stays quick. decide() is fast and has no I/O, so
deadlines are off: a slow CI machine must not turn into a flaky test.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, settings

from controller.domain import Activity, GroupObservation, GroupRef, Sample, Worker
from controller.policy.model import ScalingPolicy

settings.register_profile(
    "ci", max_examples=10_000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", max_examples=300, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
REF = GroupRef("ray-nlp", "c1", "workers")


def make_policy(**spec: Any) -> ScalingPolicy:
    """A ScalingPolicy from camelCase spec fields, as a YAML document would give them."""
    body: dict[str, Any] = {"maxReplicas": 100}
    body.update(spec)
    return ScalingPolicy.model_validate(
        {"apiVersion": "rayops.io/v1alpha1", "kind": "ScalingPolicy", "metadata": {"name": "p"}, "spec": body}
    )


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def workers(idle: int = 0, busy: int = 0, unknown: int = 0, not_ready_idle: int = 0) -> tuple[Worker, ...]:
    out: list[Worker] = []
    for i in range(busy):
        out.append(Worker(f"busy-{i}", Activity.BUSY, started_at=T0 - timedelta(hours=2, seconds=i)))
    for i in range(unknown):
        out.append(Worker(f"unknown-{i}", Activity.UNKNOWN, started_at=T0 - timedelta(hours=2, seconds=i)))
    for i in range(idle):
        out.append(Worker(f"idle-{i}", Activity.IDLE, started_at=T0 - timedelta(hours=1, seconds=i)))
    for i in range(not_ready_idle):
        out.append(Worker(f"starting-{i}", Activity.IDLE, ready=False, started_at=T0 - timedelta(seconds=i)))
    return tuple(out)


def observe(current: int, samples: dict[str, float | None] | None = None, **kw: Any) -> GroupObservation:
    """An observation; a sample value of None is an unavailable sample."""
    built = {
        name: (Sample.missing("timeout", "test") if v is None else Sample.ok(v, T0, "test"))
        for name, v in (samples or {}).items()
    }
    kw.setdefault("min_replicas", 0)
    kw.setdefault("max_replicas", 100)
    kw.setdefault("ready", current)
    return GroupObservation(ref=REF, current=current, samples=built, **kw)
