"""Budgets: worker- and GPU-hours over a rolling window, charged tick by tick into GroupState."""

from __future__ import annotations

from datetime import timedelta

from controller.domain import ReasonCode
from controller.policy import budget
from controller.policy.decide import decide
from controller.policy.state import MAX_BUCKETS, MAX_EVENTS, MAX_HISTORY, GroupState
from tests.policy.conftest import T0, at, make_policy, observe, workers

FAST = {"scaleUp": {"policies": []}, "scaleDown": {"policies": [], "stabilizationWindowSeconds": 0}}


def test_budget_runs_out_and_recovers_as_the_window_rolls() -> None:
    # 4 workers pinned by minReplicas; 5 worker-hours per 2 h; a tick every 15 min charges 1 worker-hour
    policy = make_policy(
        minReplicas=4, maxReplicas=4, budget={"workerHours": 5, "window": "2h"}, behavior=FAST
    )
    state = GroupState.empty()
    current = 4
    targets = []
    for i in range(6):  # t = 0 .. 75 min
        decision, state = decide(policy, observe(current, workers=workers(idle=current)), state, at(i * 900))
        targets.append(decision.target)
        current = decision.target
    assert targets == [4, 4, 4, 4, 4, 0]  # 5 worker-hours used at 75 min
    exhausted = next(r for r in decision.reasons if r.code == ReasonCode.BUDGET)
    assert exhausted.data["workerHours"] == 5.0
    assert exhausted.data["workerHoursLimit"] == 5
    at_max = next(r for r in decision.reasons if r.code == ReasonCode.AT_MAX)
    assert (at_max.data["source"], at_max.data["after"]) == ("budget", 0)

    # at 0 workers nothing more is charged; the 12:00-13:00 bucket (3 worker-hours) counts until its
    # end is 2 h old (15:00), then only the 2 worker-hours of 13:00-14:00 remain: room again
    decision, state = decide(policy, observe(0), state, T0 + timedelta(hours=2, minutes=59))
    assert decision.target == 0
    assert ReasonCode.BUDGET in decision.codes
    decision, state = decide(policy, observe(0), state, T0 + timedelta(hours=3))
    assert decision.target == 4
    assert ReasonCode.BUDGET not in decision.codes
    assert budget.use(state, policy.spec.budget, state.at_ms).worker_hours == 2.0  # type: ignore[arg-type]


def test_gpu_budget_counts_gpus_per_worker() -> None:
    policy = make_policy(
        minReplicas=2, maxReplicas=2, budget={"gpuHours": 3, "window": "1d", "exhaustedMaxReplicas": 1}
    )
    obs = observe(2, workers=workers(idle=2), worker_resources={"CPU": 8.0, "GPU": 2.0})
    state = GroupState.empty()
    decision, state = decide(policy, obs, state, T0)
    decision, state = decide(policy, obs, state, T0 + timedelta(minutes=30))  # 2 x 2 x 0.5 h = 2 GPU-hours
    assert decision.target == 2
    decision, state = decide(policy, obs, state, T0 + timedelta(minutes=45))  # 3 GPU-hours
    assert decision.target == 1
    reason = next(r for r in decision.reasons if r.code == ReasonCode.BUDGET)
    assert (reason.data["gpuHours"], reason.data["gpuHoursLimit"], reason.data["workerHours"]) == (
        3.0,
        3,
        1.5,
    )


def test_exhausted_budget_caps_below_min_and_beats_scale_up() -> None:
    spec = {
        "minReplicas": 3,
        "maxReplicas": 10,
        "budget": {"workerHours": 1, "window": "1h", "exhaustedMaxReplicas": 2},
        "signals": [{"name": "q", "type": "promql", "query": "q", "target": {"averageValue": 1}}],
    }
    policy = make_policy(**spec)
    state = GroupState.empty()
    _, state = decide(policy, observe(4, {"q": 4}), state, T0)
    decision, state = decide(
        policy, observe(4, {"q": 50}, workers=workers(idle=4)), state, T0 + timedelta(minutes=20)
    )
    assert decision.target == 2


def test_schedule_budget_replaces_the_policy_budget_while_active() -> None:
    weekend = {
        "name": "weekend",
        "cron": "0 0 * * 6",
        "duration": "2d",
        "timezone": "UTC",
        "budget": {"workerHours": 100, "window": "1d"},
    }
    policy = make_policy(
        minReplicas=2, maxReplicas=2, budget={"workerHours": 1, "window": "1d"}, schedules=[weekend]
    )
    state = GroupState.empty()
    obs = observe(2, workers=workers(idle=2))
    saturday = T0.replace(day=6)  # 2026-06-06 is a Saturday
    _, state = decide(policy, obs, state, saturday)
    decision, state = decide(policy, obs, state, saturday + timedelta(hours=1))  # 2 worker-hours > 1
    assert decision.target == 2
    assert ReasonCode.SCHEDULE in decision.codes
    monday = saturday + timedelta(days=2)
    decision, state = decide(policy, obs, state, monday)  # the policy's 1 worker-hour is back in force
    assert decision.target == 0


def test_usage_is_not_tracked_without_a_budget() -> None:
    _, state = decide(make_policy(), observe(3), GroupState.empty(), T0)
    _, state = decide(make_policy(), observe(3), state, T0 + timedelta(hours=1))
    assert state.buckets == ()


def test_buckets_stay_few_for_long_windows() -> None:
    policy = make_policy(minReplicas=1, budget={"workerHours": 10_000, "window": "30d"})
    state = GroupState.empty()
    for hour in range(0, 24 * 40, 3):
        _, state = decide(policy, observe(1), state, T0 + timedelta(hours=hour))
    assert state.bucket_ms == 15 * 3_600_000  # 30 d / 48, rounded up to whole hours
    assert len(state.buckets) <= 49
    assert len(state.to_json()) < 4096


def test_state_at_every_cap_stays_under_4_kb() -> None:
    now = int(T0.timestamp() * 1000)
    hour = 3_600_000
    full = GroupState(
        at_ms=now,
        up_history=tuple((now - hour + 1 + i, 99_999) for i in range(MAX_HISTORY)),
        down_history=tuple((now - hour + 1 + i, 99_999) for i in range(MAX_HISTORY)),
        events=tuple((now - hour // 2 + 1 + i, -99_999) for i in range(MAX_EVENTS)),
        failures=999,
        bucket_ms=15 * hour,
        # 2,000 workers with 8 GPUs each, all through every 15-hour bucket
        buckets=tuple(
            (now // (15 * hour) - i, 2000 * 15 * 3600, 16_000 * 15 * 3600) for i in range(MAX_BUCKETS)
        ),
    )
    assert len(full.to_json()) < 4096
    assert GroupState.from_json(full.to_json()) == full


def test_caps_hold_when_every_tick_adds_history_and_an_event() -> None:
    # a zigzag with falling highs and rising lows grows both stabilization queues; a scale event on
    # every tick; the longest windows and periods; a 30-day GPU budget
    rules = {
        "stabilizationWindowSeconds": 3600,
        "policies": [{"type": "Pods", "value": 10**6, "periodSeconds": 1800}],
    }
    policy = make_policy(
        maxReplicas=2000,
        signals=[{"name": "q", "type": "promql", "query": "q", "target": {"averageValue": 1}}],
        behavior={"scaleUp": rules, "scaleDown": rules},
        budget={"gpuHours": 10**9, "window": "30d"},
    )
    state = GroupState.empty()
    largest = 0
    # 100 ticks 4 h apart fill the budget buckets, then 200 ticks 15 s apart the queues and events
    times = [T0 + timedelta(hours=4 * i) for i in range(100)]
    times += [times[-1] + timedelta(seconds=15 * i) for i in range(1, 201)]
    for i, now in enumerate(times):
        current = 50 + i % 2
        want = 1000 - i if i % 2 else i
        obs = observe(
            current, {"q": want}, workers=workers(idle=current), worker_resources={"CPU": 1.0, "GPU": 8.0}
        )
        _, state = decide(policy, obs, state, now)
        largest = max(largest, len(state.to_json()))
    assert len(state.up_history) == len(state.down_history) == MAX_HISTORY
    assert len(state.events) == MAX_EVENTS
    assert len(state.buckets) >= 25
    assert largest < 4096
