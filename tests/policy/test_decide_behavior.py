"""decide(): stabilization windows and rate policies, HPA's worked examples included."""

from __future__ import annotations

from typing import Any

import pytest

from controller.domain import Decision, ReasonCode
from controller.policy.decide import decide
from controller.policy.state import GroupState
from tests.policy.conftest import at, make_policy, observe, workers

QUEUE = {"name": "queue", "type": "promql", "query": "q", "target": {"averageValue": 1}}


def simulate(spec: dict[str, Any], start: int, wanted: list[int], dt: float) -> list[Decision]:
    """Tick every `dt` seconds; the queue signal asks for `wanted[i]` workers; the backend applies."""
    policy = make_policy(**spec)
    state = GroupState.empty()
    current = start
    out = []
    for i, want in enumerate(wanted):
        obs = observe(current, {"queue": want}, workers=workers(idle=current))
        decision, state = decide(policy, obs, state, at(i * dt))
        out.append(decision)
        current = decision.target
    return out


def test_hpa_docs_worked_example_80_to_10() -> None:
    # Pods 4/60s and Percent 10/60s, Max: remove 8, then 8 (7.2 rounded up), ... and once at 40 or
    # below the Pods policy is the larger change.
    down = {
        "stabilizationWindowSeconds": 0,
        "selectPolicy": "Max",
        "policies": [
            {"type": "Pods", "value": 4, "periodSeconds": 60},
            {"type": "Percent", "value": 10, "periodSeconds": 60},
        ],
    }
    decisions = simulate({"signals": [QUEUE], "behavior": {"scaleDown": down}}, 80, [10] * 22, 60)
    targets = [d.target for d in decisions]
    assert targets[:3] == [72, 64, 57]
    assert targets[:16] == [72, 64, 57, 51, 45, 40, 36, 32, 28, 24, 20, 16, 12, 10, 10, 10]
    first = next(r for r in decisions[0].reasons if r.code == ReasonCode.RATE_LIMITED)
    assert (first.data["before"], first.data["after"], first.data["policyType"]) == (10, 72, "Percent")
    pods = next(r for r in decisions[7].reasons if r.code == ReasonCode.RATE_LIMITED)
    assert pods.data["policyType"] == "Pods"


def test_rate_period_counts_changes_made_within_it() -> None:
    # ticking every 15 s, the same 60 s policies still allow only one step of 8 per minute
    down = {
        "stabilizationWindowSeconds": 0,
        "policies": [
            {"type": "Pods", "value": 4, "periodSeconds": 60},
            {"type": "Percent", "value": 10, "periodSeconds": 60},
        ],
    }
    targets = [
        d.target for d in simulate({"signals": [QUEUE], "behavior": {"scaleDown": down}}, 80, [10] * 9, 15)
    ]
    assert targets == [72, 72, 72, 72, 64, 64, 64, 64, 57]


def test_default_scale_up_is_max_of_100_percent_and_4_pods_per_15s() -> None:
    targets = [d.target for d in simulate({"signals": [QUEUE], "maxReplicas": 20}, 2, [20] * 4, 15)]
    assert targets == [6, 12, 20, 20]


@pytest.mark.parametrize(
    ("select", "expected"),
    [("Max", [6, 12]), ("Min", [4, 8]), ("Disabled", [2, 2])],
)
def test_select_policy(select: str, expected: list[int]) -> None:
    up = {
        "selectPolicy": select,
        "policies": [
            {"type": "Percent", "value": 100, "periodSeconds": 15},
            {"type": "Pods", "value": 4, "periodSeconds": 15},
        ],
    }
    decisions = simulate({"signals": [QUEUE], "behavior": {"scaleUp": up}}, 2, [20, 20], 15)
    assert [d.target for d in decisions] == expected
    if select == "Disabled":
        assert decisions[0].reasons[-2].code == ReasonCode.RATE_LIMITED
        assert "disabled" in decisions[0].reasons[-2].message


def test_percent_is_exact_integer_arithmetic() -> None:
    up = {"policies": [{"type": "Percent", "value": 10, "periodSeconds": 60}]}
    decisions = simulate({"signals": [QUEUE], "behavior": {"scaleUp": up}}, 10, [30], 15)
    assert decisions[0].target == 11  # float64 would make 10 * 1.1 = 11.000000000000002 -> 12


def test_scale_down_stabilization_is_a_rolling_max() -> None:
    # default scale-down window 300 s: the count holds at the highest recommendation of the window
    spec = {"signals": [QUEUE], "behavior": {"scaleDown": {"policies": []}}}
    wanted = [10, 6, 4] + [4] * 19
    decisions = simulate(spec, 10, wanted, 15)
    targets = [d.target for d in decisions]
    assert targets[:20] == [10] * 20  # the 10 recorded at t=0 is in (t-300, t] until t=300
    assert targets[20:] == [6, 4]  # t=300: the 6 from t=15 is the highest left; t=315: only 4s
    stab = next(r for r in decisions[1].reasons if r.code == ReasonCode.STABILIZATION)
    assert (stab.data["before"], stab.data["after"], stab.data["direction"]) == (6, 10, "down")


def test_scale_down_window_drops_each_recommendation_in_turn() -> None:
    spec = {"signals": [QUEUE], "behavior": {"scaleDown": {"policies": [], "stabilizationWindowSeconds": 60}}}
    # recommendations 10, 8, 6, 2, 2, 2, 2, 2 at 15 s intervals; window 60 s
    decisions = simulate(spec, 10, [10, 8, 6, 2, 2, 2, 2, 2], 15)
    assert [d.target for d in decisions] == [10, 10, 10, 10, 8, 6, 2, 2]


def test_scale_up_stabilization_is_a_rolling_min() -> None:
    spec = {"signals": [QUEUE], "behavior": {"scaleUp": {"policies": [], "stabilizationWindowSeconds": 30}}}
    # the 2 from t=0 bounds the count until it leaves (t-30, t] at t=30; falling back to 5 is a
    # scale-down, held by the (default, 300 s) scale-down window
    decisions = simulate(spec, 2, [2, 9, 9, 9, 5], 15)
    assert [d.target for d in decisions] == [2, 2, 9, 9, 9]
    stab = next(r for r in decisions[1].reasons if r.code == ReasonCode.STABILIZATION)
    assert (stab.data["before"], stab.data["after"], stab.data["direction"]) == (9, 2, "up")


def test_omitted_fields_take_hpa_direction_defaults() -> None:
    # scaleDown given with policies only: the window is still HPA's 300 s
    spec = {
        "signals": [QUEUE],
        "behavior": {"scaleDown": {"policies": [{"type": "Pods", "value": 100, "periodSeconds": 15}]}},
    }
    decisions = simulate(spec, 10, [10, 1, 1], 15)
    assert [d.target for d in decisions] == [10, 10, 10]
    # ...and an explicit window of 0 with an explicitly empty policy list means no limit at all
    spec = {"signals": [QUEUE], "behavior": {"scaleDown": {"policies": [], "stabilizationWindowSeconds": 0}}}
    assert [d.target for d in simulate(spec, 10, [1], 15)] == [1]


def test_history_survives_a_json_round_trip_between_ticks() -> None:
    spec = {"signals": [QUEUE], "behavior": {"scaleDown": {"policies": [], "stabilizationWindowSeconds": 60}}}
    policy = make_policy(**spec)
    state = GroupState.empty()
    current = 10
    targets = []
    for i, want in enumerate([10, 8, 6, 2, 2, 2, 2, 2]):
        decision, state = decide(
            policy, observe(current, {"queue": want}, workers=workers(idle=current)), state, at(i * 15)
        )
        state = GroupState.from_json(state.to_json())
        current = decision.target
        targets.append(current)
    assert targets == [10, 10, 10, 10, 8, 6, 2, 2]
