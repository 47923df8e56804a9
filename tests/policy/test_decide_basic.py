"""decide(): the HPA formula, signals combined, holds, pins, dry run and bounds mode."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from controller.domain import Action, ManualPin, ReasonCode
from controller.policy.decide import decide, required_signals
from controller.policy.state import GroupState
from tests.policy.conftest import T0, at, make_policy, observe, workers

UTIL = {"name": "cpu", "type": "utilization", "target": {"averageUtilization": 50}}
QUEUE_AVG = {"name": "queue", "type": "promql", "query": "q", "target": {"averageValue": 10}}
QUEUE_VAL = {"name": "lat", "type": "promql", "query": "l", "target": {"value": 200}}
PENDING = {"name": "pending", "type": "pendingDemand", "resource": "CPU"}
NO_LIMITS = {"scaleUp": {"policies": []}, "scaleDown": {"policies": [], "stabilizationWindowSeconds": 0}}


def run(policy_spec: dict, current: int, samples: dict, **obs_kw: object) -> tuple:
    decision, state = decide(
        make_policy(**policy_spec), observe(current, samples, **obs_kw), GroupState.empty(), T0
    )
    return decision, state


@pytest.mark.parametrize(
    ("signal", "current", "value", "expected"),
    [
        # HPA docs: currentMetric 200m, target 100m -> double; 50m -> halve
        (UTIL, 4, 100, 8),
        (UTIL, 4, 25, 2),
        (UTIL, 3, 70, 5),  # ceil(3 * 1.4) = ceil(4.2)
        (UTIL, 10, 53, 10),  # ratio 1.06: within the default tolerance 0.1
        (UTIL, 10, 56, 12),  # ratio 1.12: outside
        (UTIL, 10, 45, 10),  # ratio 0.9: on the edge, within (inclusive, as HPA)
        (UTIL, 10, 44, 9),
        (QUEUE_AVG, 2, 95, 10),  # ceil(95 / 10)
        (QUEUE_AVG, 10, 104, 10),  # 104 / (10 * 10) = 1.04: within tolerance
        (QUEUE_AVG, 10, 0, 0),
        (QUEUE_VAL, 4, 300, 6),  # ceil(4 * 300 / 200)
    ],
)
def test_ratio_formula_and_tolerance(signal: dict, current: int, value: float, expected: int) -> None:
    decision, _ = run(
        {"signals": [signal], "behavior": NO_LIMITS},
        current,
        {signal["name"]: value},
        workers=workers(idle=current),
    )
    assert decision.target == expected
    assert decision.reasons[0].code == ReasonCode.SIGNAL_PROPOSAL
    assert decision.reasons[0].data["value"] == value


def test_tolerance_per_direction_overrides_policy_tolerance() -> None:
    behavior = {
        "scaleUp": {"policies": [], "tolerance": 0.01},
        "scaleDown": {"policies": [], "tolerance": 0.5, "stabilizationWindowSeconds": 0},
    }
    spec = {"signals": [UTIL], "tolerance": 0.1, "behavior": behavior, "maxReplicas": 200}
    up, _ = run(spec, 100, {"cpu": 52.5}, workers=workers(idle=100))  # ratio 1.05 > 1.01
    assert up.target == 105
    down, _ = run(spec, 100, {"cpu": 30}, workers=workers(idle=100))  # ratio 0.6 >= 0.5
    assert down.target == 100
    assert ReasonCode.WITHIN_TOLERANCE in down.codes
    tol = next(r for r in down.reasons if r.code == ReasonCode.WITHIN_TOLERANCE)
    assert (tol.data["before"], tol.data["after"]) == (60, 100)


def test_largest_proposal_wins_and_each_signal_reports() -> None:
    decision, _ = run({"signals": [UTIL, QUEUE_AVG], "behavior": NO_LIMITS}, 4, {"cpu": 60, "queue": 120})
    proposals = [r.data["proposal"] for r in decision.reasons if r.code == ReasonCode.SIGNAL_PROPOSAL]
    assert proposals == [5, 12]
    assert decision.target == 12
    assert decision.action == Action.UP


def test_pending_demand_counts_workers_in_use_plus_needed() -> None:
    # 2 busy, 1 idle; 5 CPUs pending on 2-CPU workers -> 3 more than the busy ones
    obs_kw = {"workers": workers(busy=2, idle=1), "worker_resources": {"CPU": 2.0}}
    decision, _ = run({"signals": [PENDING], "behavior": NO_LIMITS}, 3, {"pending": 5}, **obs_kw)
    assert decision.target == 5
    # workers still starting absorb the demand: no second round of additions
    obs_kw = {"workers": workers(not_ready_idle=3), "ready": 0}
    decision, _ = run({"signals": [PENDING], "behavior": NO_LIMITS}, 3, {"pending": 3}, **obs_kw)
    assert decision.target == 3
    assert decision.action == Action.HOLD


def test_pending_demand_for_a_resource_the_group_lacks_has_no_opinion() -> None:
    gpu = {**PENDING, "resource": "GPU"}
    decision, _ = run({"signals": [gpu], "behavior": NO_LIMITS}, 2, {"pending": 4}, workers=workers(busy=2))
    assert decision.target == 2
    assert decision.reasons[0].data["proposal"] is None


def test_every_decision_has_a_reason_and_no_change_says_so() -> None:
    decision, _ = run({}, 3, {})
    assert decision.codes == (ReasonCode.NO_CHANGE,)
    assert decision.reasons[0].data["current"] == 3


@pytest.mark.parametrize(
    ("obs_kw", "spec", "code"),
    [
        ({"global_pause": True}, {}, ReasonCode.GLOBAL_PAUSE),
        ({"paused": True}, {}, ReasonCode.PAUSED),
        ({}, {"paused": True}, ReasonCode.PAUSED),
        ({"kueue_queue": "team-a"}, {}, ReasonCode.KUEUE_MANAGED),
        ({"in_tree_autoscaling": True}, {}, ReasonCode.INTREE_AUTOSCALER_CONFLICT),
    ],
)
def test_holds(obs_kw: dict, spec: dict, code: ReasonCode) -> None:
    decision, _ = run({"signals": [UTIL], **spec}, 4, {"cpu": 100}, **obs_kw)
    assert decision.action == Action.HOLD
    assert decision.target == 4
    assert decision.codes == (code,)


@pytest.mark.parametrize("obs_kw", [{"kueue_queue": "team-a"}, {"in_tree_autoscaling": True}])
def test_kueue_and_in_tree_are_fine_in_bounds_mode(obs_kw: dict) -> None:
    decision, _ = run({"mode": "bounds", "minReplicas": 1, "maxReplicas": 6}, 4, {}, **obs_kw)
    assert (decision.min_replicas, decision.max_replicas) == (1, 6)
    assert ReasonCode.KUEUE_MANAGED not in decision.codes
    assert ReasonCode.INTREE_AUTOSCALER_CONFLICT not in decision.codes


def test_dry_run_decides_marks_and_records_no_scale_event() -> None:
    decision, state = run({"signals": [UTIL], "dryRun": True}, 4, {"cpu": 100})
    assert decision.target == 8
    assert decision.dry_run
    assert decision.codes[-1] == ReasonCode.DRY_RUN
    assert state.events == ()
    assert state.up_history  # the recommendation is still remembered


def test_manual_pin_sets_the_count_within_bounds() -> None:
    pin = ManualPin("workers", 50, until=T0 + timedelta(hours=1), by="alice")
    decision, _ = run({"signals": [UTIL], "maxReplicas": 20}, 4, {"cpu": 50}, pin=pin)
    assert decision.target == 20
    assert decision.codes[:2] == (ReasonCode.MANUAL_PIN, ReasonCode.AT_MAX)
    assert decision.reasons[0].data["by"] == "alice"


def test_manual_pin_down_removes_idle_workers_only() -> None:
    pin = ManualPin("workers", 1)
    decision, _ = run({}, 4, {}, pin=pin, workers=workers(busy=2, idle=2))
    assert decision.target == 2
    assert set(decision.remove) == {"idle-0", "idle-1"}
    assert ReasonCode.BUSY_WORKERS_PROTECTED in decision.codes


@pytest.mark.parametrize("until", [T0, T0 - timedelta(seconds=1)])
def test_expired_pin_is_ignored_with_a_reason(until: datetime) -> None:
    pin = ManualPin("workers", 9, until=until)
    decision, _ = run({"signals": [UTIL], "behavior": NO_LIMITS}, 4, {"cpu": 50}, pin=pin)
    assert decision.codes[0] == ReasonCode.MANUAL_PIN_EXPIRED
    assert decision.target == 4


def test_pin_for_another_group_is_not_ours() -> None:
    decision, _ = run({}, 4, {}, pin=ManualPin("other", 9))
    assert decision.target == 4
    assert ReasonCode.MANUAL_PIN not in decision.codes


def test_pause_beats_pin() -> None:
    decision, _ = run({}, 4, {}, pin=ManualPin("workers", 9), paused=True)
    assert decision.target == 4
    assert decision.codes == (ReasonCode.PAUSED,)


def test_naive_now_is_rejected() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        decide(make_policy(), observe(1), GroupState.empty(), datetime(2026, 1, 1))


def test_required_signals_lists_each_distinct_spec_once() -> None:
    policy = make_policy(signals=[UTIL, QUEUE_AVG, {**QUEUE_AVG, "name": "queue2"}, PENDING])
    specs = required_signals(policy)
    assert [s.type for s in specs] == ["utilization", "promql", "pendingDemand"]


def test_bounds_mode_never_writes_max_below_current() -> None:
    spec = {"mode": "bounds", "minReplicas": 0, "maxReplicas": 2}
    decision, _ = run(spec, 5, {}, min_replicas=0, max_replicas=8)
    assert decision.max_replicas == 5
    assert decision.min_replicas == 0
    assert decision.target == 5
    assert decision.remove == ()
    cap = next(r for r in decision.reasons if r.code == ReasonCode.BOUNDS_MODE_CAP)
    assert (cap.data["before"], cap.data["after"]) == (2, 5)
    # Ray retired an idle worker: the cap follows it down, step by step
    decision, _ = run(spec, 4, {}, min_replicas=0, max_replicas=5)
    assert decision.max_replicas == 4
    decision, _ = run(spec, 2, {}, min_replicas=0, max_replicas=3)
    assert decision.max_replicas == 2
    assert ReasonCode.BOUNDS_MODE_CAP not in decision.codes


def test_bounds_mode_unchanged_bounds_is_no_change() -> None:
    decision, _ = run(
        {"mode": "bounds", "minReplicas": 1, "maxReplicas": 6}, 3, {}, min_replicas=1, max_replicas=6
    )
    assert decision.codes == (ReasonCode.NO_CHANGE,)
    assert decision.action == Action.HOLD


def test_bounds_mode_raises_min_and_target() -> None:
    decision, _ = run(
        {"mode": "bounds", "minReplicas": 3, "maxReplicas": 6}, 1, {}, min_replicas=0, max_replicas=6
    )
    assert (decision.min_replicas, decision.max_replicas, decision.target) == (3, 6, 3)
    assert decision.action == Action.UP
    assert decision.codes == (ReasonCode.BOUNDS_SET, ReasonCode.AT_MIN)
    # bounds already written, Ray not there yet: the reason is the floor, not a change of bounds
    spec = {"mode": "bounds", "minReplicas": 3, "maxReplicas": 6}
    decision, _ = run(spec, 1, {}, min_replicas=3, max_replicas=6)
    assert decision.codes == (ReasonCode.AT_MIN,)
    assert decision.target == 3


def test_bounds_mode_pin_writes_min_and_max() -> None:
    pin = ManualPin("workers", 4, by="bob")
    decision, _ = run({"mode": "bounds", "minReplicas": 0, "maxReplicas": 6}, 6, {}, pin=pin)
    assert (decision.min_replicas, decision.max_replicas) == (4, 6)  # max not below the current 6
    assert decision.codes[:2] == (ReasonCode.MANUAL_PIN, ReasonCode.BOUNDS_MODE_CAP)
    assert decision.reasons[0].data["by"] == "bob"


def test_decision_time_is_now() -> None:
    decision, state = decide(make_policy(), observe(1), GroupState.empty(), at(30))
    assert decision.at == at(30)
    assert state.at_ms == int(at(30).timestamp() * 1000)


def test_pin_expiry_compares_instants_not_wall_times() -> None:
    ny = ZoneInfo("America/New_York")
    # 01:50 EDT (fold 0) comes an hour before 01:10 EST (fold 1) on 2026-11-01
    until = datetime(2026, 11, 1, 1, 50, tzinfo=ny)
    now = datetime(2026, 11, 1, 1, 10, tzinfo=ny, fold=1)
    policy = make_policy()
    decision, _ = decide(
        policy, observe(2, pin=ManualPin("workers", 5, until=until)), GroupState.empty(), now
    )
    assert decision.codes[0] == ReasonCode.MANUAL_PIN_EXPIRED
    naive = ManualPin("workers", 5, until=datetime(2026, 6, 1, 13, 0))  # read as UTC
    decision, _ = decide(policy, observe(2, pin=naive), GroupState.empty(), T0)
    assert decision.target == 5
