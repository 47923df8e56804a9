"""Properties of decide() over generated policies, observations and histories (hypothesis).

The `ci` profile runs each 10,000 times (tests/run.sh); the `dev` default a few hundred.
"""

from __future__ import annotations

import json
import random
from datetime import timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from controller.domain import Activity, Decision, GroupObservation, ManualPin, ReasonCode, Sample, Worker
from controller.policy.bounds import effective_bounds
from controller.policy.decide import decide
from controller.policy.model import ScalingPolicy
from controller.policy.state import GroupState
from tests.policy.conftest import REF, T0, make_policy

HOLD_CODES = {
    ReasonCode.GLOBAL_PAUSE,
    ReasonCode.PAUSED,
    ReasonCode.KUEUE_MANAGED,
    ReasonCode.INTREE_AUTOSCALER_CONFLICT,
}
SIGNALS = [
    {"name": "pending", "type": "pendingDemand", "resource": "CPU"},
    {"name": "cpu", "type": "utilization", "target": {"averageUtilization": 60}},
    {"name": "queue", "type": "promql", "query": "q", "target": {"averageValue": 5}},
    {"name": "lat", "type": "promql", "query": "l", "target": {"value": 100}},
]
SCHEDULES = [
    {
        "name": "nights",
        "cron": "0 20 * * 1-5",
        "duration": "12h",
        "timezone": "America/New_York",
        "maxReplicas": 2,
    },
    {"name": "busy", "cron": "*/30 * * * *", "duration": "10m", "timezone": "UTC", "minReplicas": 3},
    {
        "name": "lean",
        "cron": "0 * * * *",
        "duration": "20m",
        "timezone": "Asia/Kolkata",
        "budget": {"workerHours": 2, "window": "1h"},
    },
]

rate_policy = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["Pods", "Percent"]),
        "value": st.integers(1, 200),
        "periodSeconds": st.integers(1, 600),
    }
)

# Drawing a whole policy, observation or state field by field costs ~100 hypothesis draws (several
# ms); 10,000 examples per property would take minutes. So policies come from a fixed, seeded pool
# of varied documents, and observations, states and tick sequences are built from one drawn seed
# each (a failure reports the seed, which reproduces it exactly).


def _rules(rng: random.Random) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if rng.random() < 0.5:
        out["stabilizationWindowSeconds"] = rng.choice([0, 15, 60, 300])
    if rng.random() < 0.5:
        out["selectPolicy"] = rng.choice(["Max", "Min", "Disabled"])
    if rng.random() < 0.5:
        out["policies"] = [
            {
                "type": rng.choice(["Pods", "Percent"]),
                "value": rng.randint(1, 200),
                "periodSeconds": rng.randint(1, 600),
            }
            for _ in range(rng.randint(0, 2))
        ]
    if rng.random() < 0.5:
        out["tolerance"] = rng.choice([0.0, 0.05, 0.2])
    return out


def _policy(rng: random.Random, mode: str) -> ScalingPolicy:
    low = rng.randint(0, 5)
    spec: dict[str, Any] = {
        "minReplicas": low,
        "maxReplicas": rng.randint(low, 40),
        "mode": mode,
        "signals": rng.sample(SIGNALS, rng.randint(0, 3)),
        "behavior": {"scaleUp": _rules(rng), "scaleDown": _rules(rng)},
        "tolerance": rng.choice([0.0, 0.1]),
        "dryRun": rng.random() < 0.2,
        "paused": rng.random() < 0.1,
        "schedules": rng.sample(SCHEDULES, rng.randint(0, 2)),
    }
    if rng.random() < 0.5:
        spec["budget"] = {
            "workerHours": rng.randint(1, 50),
            "window": "3h",
            "exhaustedMaxReplicas": rng.randint(0, 3),
        }
    if rng.random() < 0.4:
        spec["onMissingData"] = {
            "action": "fallback",
            "replicas": rng.randint(0, 10),
            "afterFailures": rng.randint(1, 3),
        }
    return make_policy(**spec)


_RNG = random.Random(20260601)
OWNER_POLICIES = [_policy(_RNG, "owner") for _ in range(600)]
BOUNDS_POLICIES = [_policy(_RNG, "bounds") for _ in range(200)]
policies = st.sampled_from(OWNER_POLICIES + BOUNDS_POLICIES)
owner_policies = st.sampled_from(OWNER_POLICIES)


def _observation(seed: int) -> GroupObservation:
    rng = random.Random(seed)
    idle, busy, unknown, starting = (rng.randint(0, 8) for _ in range(4))
    kinds = [(Activity.IDLE, True)] * idle + [(Activity.BUSY, True)] * busy
    kinds += [(Activity.UNKNOWN, True)] * unknown + [(Activity.IDLE, False)] * starting
    rng.shuffle(kinds)
    workers = tuple(
        Worker(f"w{i}", act, ready=ready, started_at=T0 - timedelta(seconds=rng.randint(0, 9999)))
        for i, (act, ready) in enumerate(kinds)
    )
    n = len(workers)
    samples = {}
    for s in SIGNALS:
        roll = rng.random()
        if roll < 0.2:
            samples[s["name"]] = Sample.missing("timeout", "test")
        elif roll < 0.3:
            samples[s["name"]] = Sample.ok(0.0, T0, "test")
        else:
            samples[s["name"]] = Sample.ok(rng.uniform(0, 500), T0, "test")

    def rare() -> bool:
        return rng.random() < 0.05

    pin = None
    if rare():
        pin = ManualPin("workers", rng.randint(0, 50), until=T0 + timedelta(seconds=rng.randint(-600, 600)))
    return GroupObservation(
        ref=REF,
        current=n,
        min_replicas=0,
        max_replicas=40,
        ready=n - starting,
        workers=workers if rng.random() < 0.8 else (),
        pending_deletes=("w0",) if n and rare() else (),
        samples=samples,
        worker_resources={"CPU": rng.choice([1.0, 2.0, 4.0])},
        paused=rare(),
        global_pause=rare(),
        pin=pin,
        kueue_queue="q" if rare() else None,
        in_tree_autoscaling=rare(),
    )


observations = st.integers(0, 2**32).map(_observation)


def _state(seed: int) -> GroupState:
    """Arbitrary saved states, including ones no sequence of ticks would produce."""
    rng = random.Random(seed)
    if seed % 4 == 0:
        return GroupState.empty()
    base = int(T0.timestamp() * 1000) - rng.randint(0, 900_000)

    def entries() -> tuple[tuple[int, int], ...]:
        return tuple(
            sorted((base - rng.randint(0, 4_000_000), rng.randint(-20, 60)) for _ in range(rng.randint(0, 6)))
        )

    return GroupState(
        at_ms=base,
        up_history=entries(),
        down_history=entries(),
        events=entries(),
        failures=rng.randint(0, 5),
        bucket_ms=3_600_000,
        buckets=tuple((base // 3_600_000 - k, rng.randint(0, 10**7), 0) for k in range(rng.randint(0, 3))),
    )


states = st.integers(0, 2**32).map(_state)
nows = st.integers(0, 14 * 86_400).map(lambda s: T0 + timedelta(seconds=s))


@given(policies, observations, states, nows)
def test_target_within_effective_bounds(
    policy: ScalingPolicy, obs: GroupObservation, state: GroupState, now: Any
) -> None:
    decision, new_state = decide(policy, obs, state, now)
    assert decision.reasons
    if HOLD_CODES & set(decision.codes):
        assert decision.target == obs.current
        return
    bounds = effective_bounds(policy, new_state, now, new_state.at_ms)
    if policy.spec.mode == "bounds":
        assert decision.min_replicas is not None and decision.max_replicas is not None
        assert decision.min_replicas <= decision.max_replicas
        assert decision.max_replicas >= obs.current
        assert (
            decision.max_replicas == max(bounds.high, obs.current) or ReasonCode.MANUAL_PIN in decision.codes
        )
        assert decision.min_replicas <= decision.target <= decision.max_replicas
        return
    assert decision.target >= bounds.low
    if decision.target > bounds.high:
        assert {ReasonCode.BUSY_WORKERS_PROTECTED, ReasonCode.BACKEND_CONVERGING} & set(decision.codes)
        assert decision.target <= obs.current


@given(owner_policies, observations, states, nows)
def test_never_below_current_while_a_signal_is_missing_under_hold(
    policy: ScalingPolicy, obs: GroupObservation, state: GroupState, now: Any
) -> None:
    decision, new_state = decide(policy, obs, state, now)
    missing = any(r.code == ReasonCode.METRICS_UNAVAILABLE and "signal" in r.data for r in decision.reasons)
    if (
        missing
        and policy.spec.on_missing_data.action == "hold"
        and ReasonCode.MANUAL_PIN not in decision.codes
    ):
        # only the bounds in force (a night cap, an exhausted budget) may lower the count
        high = effective_bounds(policy, new_state, now, new_state.at_ms).high
        assert decision.target >= min(obs.current, high)


@given(policies, observations, states, nows)
def test_busy_workers_are_never_removed(
    policy: ScalingPolicy, obs: GroupObservation, state: GroupState, now: Any
) -> None:
    decision, _ = decide(policy, obs, state, now)
    idle = {w.name for w in obs.workers if w.activity == Activity.IDLE}
    assert set(decision.remove) <= idle
    assert len(set(decision.remove)) == len(decision.remove)
    if decision.target < obs.current:
        assert len(decision.remove) == obs.current - decision.target
        assert not obs.pending_deletes
    else:
        assert decision.remove == ()
    assert decision.target >= sum(1 for w in obs.workers if w.activity != Activity.IDLE)


@given(policies, observations, states, nows)
def test_deterministic_and_state_round_trips(
    policy: ScalingPolicy, obs: GroupObservation, state: GroupState, now: Any
) -> None:
    first = decide(policy, obs, state, now)
    second = decide(policy, obs, state, now)
    assert first == second
    decision, new_state = first
    assert GroupState.from_json(new_state.to_json()) == new_state
    assert len(new_state.to_json()) < 4096
    # the decision record is JSON too (the rayops.io/decision annotation, the journal)
    assert Decision.from_dict(json.loads(decision.to_json())).to_json() == decision.to_json()


def _limit(policies_: list[dict[str, Any]], select: str, start: int, up: bool) -> int:
    """The furthest a count may have moved from `start` (the count one period ago), per HPA."""
    if up:
        allowed = [
            start + p["value"] if p["type"] == "Pods" else -(-start * (100 + p["value"]) // 100)
            for p in policies_
        ]
        return max(allowed) if select == "Max" else min(allowed)
    allowed = [
        start - p["value"] if p["type"] == "Pods" else start * (100 - p["value"]) // 100 for p in policies_
    ]
    return min(allowed) if select == "Max" else max(allowed)


def _rate_policies(rng: random.Random) -> list[dict[str, Any]]:
    return [
        {
            "type": rng.choice(["Pods", "Percent"]),
            "value": rng.randint(1, 200),
            "periodSeconds": rng.randint(1, 600),
        }
        for _ in range(rng.randint(1, 2))
    ]


@given(st.integers(0, 2**32))
def test_rate_limits_hold_over_a_sequence_of_ticks(seed: int) -> None:
    rng = random.Random(seed)
    up, down = _rate_policies(rng), _rate_policies(rng)
    select = rng.choice(["Max", "Min"])
    window = rng.choice([0, 30])
    start = rng.randint(0, 30)
    ticks = [(rng.randint(0, 60), rng.randint(1, 120)) for _ in range(rng.randint(2, 10))]
    behavior = {
        "scaleUp": {"policies": up, "selectPolicy": select, "stabilizationWindowSeconds": window},
        "scaleDown": {"policies": down, "selectPolicy": select, "stabilizationWindowSeconds": window},
    }
    policy = make_policy(maxReplicas=1000, signals=[SIGNALS[2]], behavior=behavior)
    state = GroupState.empty()
    t = 0
    history: list[tuple[int, int]] = [(-(10**9), start)]  # (time in s, count from then on)
    current = start
    for wanted, dt in ticks:
        t += dt
        obs = GroupObservation(
            ref=REF,
            current=current,
            min_replicas=0,
            max_replicas=1000,
            workers=tuple(Worker(f"w{i}", Activity.IDLE) for i in range(current)),
            samples={"queue": Sample.ok(wanted * 5.0, T0, "test")},
        )
        decision, state = decide(policy, obs, state, T0 + timedelta(seconds=t))
        state = GroupState.from_json(state.to_json())  # as the controller stores it between ticks
        target = decision.target
        for rules_, is_up in ((up, True), (down, False)):
            if (target > current) != is_up or target == current:
                continue
            # the count at the start of each period: the last count set at or before t - period
            starts = [[c for ts, c in history if ts <= t - p["periodSeconds"]][-1] for p in rules_]
            bounds = [_limit([p], select, s, is_up) for p, s in zip(rules_, starts, strict=True)]
            if is_up:
                allowed = max(bounds) if select == "Max" else min(bounds)
                assert target <= max(allowed, 1 if current == 0 else 0)
            else:
                allowed = min(bounds) if select == "Max" else max(bounds)
                assert target >= allowed
        if target != current:
            history.append((t, target))
        current = target
