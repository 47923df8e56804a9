"""decide(): activation from zero, missing data (hold, fallback), busy workers and pending deletes."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from controller.domain import Activity, Sample, Worker
from controller.domain import ReasonCode as RC
from controller.policy.decide import decide
from controller.policy.state import GroupState
from tests.policy.conftest import T0, at, make_policy, observe, workers

FAST = {"scaleUp": {"policies": []}, "scaleDown": {"policies": [], "stabilizationWindowSeconds": 0}}
PENDING = {"name": "pending", "type": "pendingDemand", "resource": "CPU"}
UTIL = {"name": "cpu", "type": "utilization", "target": {"averageUtilization": 50}}
QUEUE = {"name": "queue", "type": "promql", "query": "q", "target": {"averageValue": 10}}


def once(spec: dict[str, Any], current: int, samples: dict[str, float | None], **kw: Any) -> Any:
    decision, _ = decide(
        make_policy(behavior=FAST, **spec), observe(current, samples, **kw), GroupState.empty(), T0
    )
    return decision


@pytest.mark.parametrize(
    ("signal", "value", "expected", "code"),
    [
        (PENDING, 0.5, 1, RC.SIGNAL_PROPOSAL),  # default threshold 0: any pending work wakes the group
        (PENDING, 0, 0, RC.ACTIVATION_BELOW_THRESHOLD),
        ({**PENDING, "activationThreshold": 1}, 1, 0, RC.ACTIVATION_BELOW_THRESHOLD),  # strictly above
        ({**PENDING, "activationThreshold": 1}, 1.5, 2, RC.SIGNAL_PROPOSAL),
        # KEDA's "activation wins": target 10 per worker, activation 50, value 40 -> stays at zero
        ({**QUEUE, "activationThreshold": 50}, 40, 0, RC.ACTIVATION_BELOW_THRESHOLD),
        ({**QUEUE, "activationThreshold": 50}, 60, 6, RC.SIGNAL_PROPOSAL),
        (QUEUE, 3, 1, RC.SIGNAL_PROPOSAL),  # active: at least one worker
        ({"name": "lat", "type": "promql", "query": "l", "target": {"value": 5}}, 9, 1, RC.SIGNAL_PROPOSAL),
    ],
)
def test_activation_from_zero(signal: dict[str, Any], value: float, expected: int, code: RC) -> None:
    decision = once({"signals": [signal]}, 0, {signal["name"]: value})
    assert decision.target == expected
    assert decision.reasons[0].code == code


def test_activation_threshold_plays_no_part_above_zero() -> None:
    signal = {**PENDING, "activationThreshold": 5}
    decision = once({"signals": [signal]}, 2, {"pending": 1}, workers=workers(busy=2))
    assert decision.target == 3


def test_utilization_cannot_wake_a_group_and_is_not_required_at_zero() -> None:
    decision = once({"signals": [UTIL]}, 0, {"cpu": None})
    assert decision.target == 0
    assert RC.METRICS_UNAVAILABLE not in decision.codes
    assert "cannot be measured at 0 workers" in decision.reasons[0].message


def test_min_above_zero_ignores_activation() -> None:
    decision = once({"signals": [PENDING], "minReplicas": 1}, 0, {"pending": 0})
    assert decision.target == 1
    assert decision.codes[-1] == RC.AT_MIN


def test_missing_data_holds_scale_down_but_allows_scale_up() -> None:
    spec = {"signals": [UTIL, QUEUE]}
    down = once(spec, 6, {"cpu": 10, "queue": None}, workers=workers(idle=6))
    assert down.target == 6
    assert down.codes == (RC.SIGNAL_PROPOSAL, RC.METRICS_UNAVAILABLE, RC.METRICS_UNAVAILABLE, RC.NO_CHANGE)
    held = down.reasons[2]
    assert (held.data["before"], held.data["after"], held.data["unavailable"]) == (2, 6, "queue")
    up = once(spec, 6, {"cpu": 100, "queue": None})
    assert up.target == 12


@pytest.mark.parametrize(
    "sample",
    [None, Sample.missing("HTTP 503", "prometheus"), Sample.ok(float("nan"), T0, "prometheus")],
)
def test_every_kind_of_missing_sample_holds(sample: Sample | None) -> None:
    samples = {} if sample is None else {"queue": sample}
    obs = observe(4, workers=workers(idle=4))
    obs = replace(obs, samples=samples)
    decision, state = decide(make_policy(signals=[QUEUE], behavior=FAST), obs, GroupState.empty(), T0)
    assert decision.target == 4
    assert state.failures == 1


def test_fallback_after_n_failures_then_recovery() -> None:
    policy = make_policy(
        signals=[QUEUE],
        behavior=FAST,
        onMissingData={"action": "fallback", "replicas": 2, "afterFailures": 3},
    )
    state = GroupState.empty()
    targets, codes = [], []
    for i, value in enumerate([None, None, None, None, 80]):
        decision, state = decide(
            policy, observe(6, {"queue": value}, workers=workers(idle=6)), state, at(15 * i)
        )
        targets.append(decision.target)
        codes.append(decision.codes)
    assert targets == [6, 6, 2, 2, 8]
    assert RC.FALLBACK in codes[2]
    assert RC.FALLBACK not in codes[1]
    assert state.failures == 0


def test_fallback_never_removes_busy_workers() -> None:
    policy = make_policy(signals=[QUEUE], behavior=FAST, onMissingData={"action": "fallback", "replicas": 0})
    decision, _ = decide(
        policy, observe(5, {"queue": None}, workers=workers(busy=3, idle=2)), GroupState.empty(), T0
    )
    assert decision.target == 3
    assert set(decision.remove) == {"idle-0", "idle-1"}
    assert RC.BUSY_WORKERS_PROTECTED in decision.codes


def test_only_idle_workers_are_removed_and_unknown_counts_as_busy() -> None:
    decision = once({"signals": [QUEUE]}, 5, {"queue": 0}, workers=workers(busy=2, unknown=1, idle=2))
    assert decision.target == 3
    assert sorted(decision.remove) == ["idle-0", "idle-1"]
    protected = next(r for r in decision.reasons if r.code == RC.BUSY_WORKERS_PROTECTED)
    assert (protected.data["before"], protected.data["after"], protected.data["idle"]) == (0, 3, 2)


def test_victims_not_ready_first_then_most_recently_started() -> None:
    pool = (
        Worker("old", Activity.IDLE, started_at=T0 - timedelta(hours=5)),
        Worker("new", Activity.IDLE, started_at=T0 - timedelta(minutes=5)),
        Worker("mid", Activity.IDLE, started_at=T0 - timedelta(hours=1)),
        Worker("starting", Activity.IDLE, ready=False, started_at=T0 - timedelta(hours=9)),
        Worker("busy", Activity.BUSY, started_at=T0),
    )
    decision = once({"signals": [QUEUE]}, 5, {"queue": 20}, workers=pool)
    assert decision.target == 2
    assert decision.remove == ("starting", "new", "mid")


def test_no_worker_list_means_nothing_can_be_removed() -> None:
    decision = once({"signals": [QUEUE]}, 4, {"queue": 0})
    assert decision.target == 4
    assert decision.remove == ()
    assert decision.codes[-2:] == (RC.BUSY_WORKERS_PROTECTED, RC.NO_CHANGE)


def test_pending_deletes_block_a_new_scale_down_not_a_scale_up() -> None:
    kw = {"workers": workers(idle=4), "pending_deletes": ("idle-9",)}
    down = once({"signals": [QUEUE]}, 4, {"queue": 0}, **kw)
    assert down.target == 4
    assert down.codes[-2:] == (RC.BACKEND_CONVERGING, RC.NO_CHANGE)
    up = once({"signals": [QUEUE]}, 4, {"queue": 80}, **kw)
    assert up.target == 8


def test_starting_workers_count_as_zero_utilization_when_scaling_up() -> None:
    # 4 workers, 2 ready at 100 % of a 50 % target: HPA counts the 2 starting ones as 0 %, so the
    # group asks for ceil(2 * 2) = 4 (what it has), not ceil(4 * 2) = 8
    decision = once({"signals": [UTIL]}, 4, {"cpu": 100}, ready=2)
    assert decision.target == 4
    decision = once({"signals": [UTIL]}, 4, {"cpu": 150}, ready=2)
    assert decision.target == 6


def test_fallback_is_a_floor_for_the_signals_that_still_have_data() -> None:
    policy = make_policy(
        signals=[QUEUE, UTIL], behavior=FAST, onMissingData={"action": "fallback", "replicas": 2}
    )
    obs = observe(4, {"queue": None, "cpu": 100}, workers=workers(idle=4))
    decision, _ = decide(policy, obs, GroupState.empty(), T0)
    assert decision.target == 8  # utilization still asks for 8
    fallback = next(r for r in decision.reasons if r.code == RC.FALLBACK)
    assert (fallback.data["replicas"], fallback.data["after"]) == (2, 8)
