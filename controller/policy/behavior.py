"""HPA's `behavior`: stabilization windows and rate policies, over the history in GroupState.

Follows kube-controller-manager's `normalizeDesiredReplicasWithBehaviors` closely so users' HPA
intuition carries over:

- Stabilization: the recommendation for scale-up is the lowest recommendation of the scale-up window
  (rolling min), for scale-down the highest of the scale-down window (rolling max), the current one
  included; the current count is then pulled into [up, down].
- Rate policies: the count at the start of each policy's period is `current - net change rayops
  made within the period`; Pods adds/removes `value`, Percent multiplies (rounded up on the way up,
  down on the way down, so 80 with 10 % may go to 72, then 64 (7.2 removed, rounded up to 8)).
  `selectPolicy: Max` takes the policy allowing the biggest change, `Min` the smallest, `Disabled`
  allows none in that direction. Percent is computed in exact integers (HPA's float64 turns 10 x 110 %
  into 11.000000000000002 and rounds it up to 12).
- Fields left out of a direction take HPA's per-direction default (scale-down window 300 s, etc.),
  as HPA's defaulting does; an explicitly empty `policies: []` means no rate limit at all.
- From zero, a scale-up is always allowed to reach one worker (KEDA's activation owns 0 -> 1), since
  Percent policies can never leave zero.
"""

from __future__ import annotations

from dataclasses import dataclass

from controller.policy.model import Behavior, RatePolicy, ScalingRules
from controller.policy.state import Entry, GroupState, add_event, prune, push_monotone

_UP_DEFAULT_POLICIES = (
    RatePolicy(type="Percent", value=100, period_seconds=15),
    RatePolicy(type="Pods", value=4, period_seconds=15),
)
_DOWN_DEFAULT_POLICIES = (RatePolicy(type="Percent", value=100, period_seconds=15),)
UNLIMITED = 2**31 - 1


@dataclass(frozen=True)
class Rules:
    """One direction's rules with HPA's defaults filled in."""

    window_ms: int
    select: str
    policies: tuple[RatePolicy, ...]
    tolerance: float | None


def _resolve(rules: ScalingRules, window_default: int, policies_default: tuple[RatePolicy, ...]) -> Rules:
    given = rules.model_fields_set
    window = rules.stabilization_window_seconds if "stabilization_window_seconds" in given else window_default
    policies = tuple(rules.policies) if "policies" in given else policies_default
    return Rules(
        window_ms=window * 1000, select=rules.select_policy, policies=policies, tolerance=rules.tolerance
    )


def effective(behavior: Behavior) -> tuple[Rules, Rules]:
    """(scale-up rules, scale-down rules) with HPA's per-direction defaults for omitted fields."""
    return (
        _resolve(behavior.scale_up, 0, _UP_DEFAULT_POLICIES),
        _resolve(behavior.scale_down, 300, _DOWN_DEFAULT_POLICIES),
    )


@dataclass(frozen=True)
class Stabilized:
    value: int
    up_bound: int  # lowest recommendation in the scale-up window
    down_bound: int  # highest recommendation in the scale-down window
    state: GroupState


def stabilize(
    state: GroupState, up: Rules, down: Rules, now_ms: int, current: int, recommendation: int
) -> Stabilized:
    """Record `recommendation` and return the stabilized count."""
    up_hist = push_monotone(
        prune(state.up_history, now_ms - up.window_ms), now_ms, recommendation, keep_max=False
    )
    down_hist = push_monotone(
        prune(state.down_history, now_ms - down.window_ms), now_ms, recommendation, keep_max=True
    )
    up_bound = min(r for _, r in up_hist)
    down_bound = max(r for _, r in down_hist)
    value = min(max(current, up_bound), down_bound)
    return Stabilized(
        value, up_bound, down_bound, state.with_changes(up_history=up_hist, down_history=down_hist)
    )


def _changed_within(events: tuple[Entry, ...], now_ms: int, period_s: int) -> int:
    cutoff = now_ms - period_s * 1000
    return sum(c for t, c in events if t > cutoff)


@dataclass(frozen=True)
class RateLimit:
    limit: int  # the furthest the count may move this tick, in the asked direction
    policy: RatePolicy | None  # the policy that set it (None: disabled or unlimited)
    disabled: bool


def scale_up_limit(rules: Rules, events: tuple[Entry, ...], now_ms: int, current: int) -> RateLimit:
    if rules.select == "Disabled":
        return RateLimit(current, None, True)
    if not rules.policies:
        return RateLimit(UNLIMITED, None, False)
    best: tuple[int, RatePolicy] | None = None
    for p in rules.policies:
        start = current - _changed_within(events, now_ms, p.period_seconds)
        proposed = start + p.value if p.type == "Pods" else -(-start * (100 + p.value) // 100)
        if best is None or (proposed > best[0] if rules.select == "Max" else proposed < best[0]):
            best = (proposed, p)
    assert best is not None
    limit = max(best[0], current, 1 if current == 0 else 0)
    return RateLimit(limit, best[1], False)


def scale_down_limit(rules: Rules, events: tuple[Entry, ...], now_ms: int, current: int) -> RateLimit:
    if rules.select == "Disabled":
        return RateLimit(current, None, True)
    if not rules.policies:
        return RateLimit(0, None, False)
    best: tuple[int, RatePolicy] | None = None
    for p in rules.policies:
        start = current - _changed_within(events, now_ms, p.period_seconds)
        proposed = start - p.value if p.type == "Pods" else start * (100 - p.value) // 100
        if best is None or (proposed < best[0] if rules.select == "Max" else proposed > best[0]):
            best = (proposed, p)
    assert best is not None
    return RateLimit(min(best[0], current), best[1], False)


def record_change(state: GroupState, longest_period_s: int, now_ms: int, change: int) -> GroupState:
    events = prune(state.events, now_ms - longest_period_s * 1000)
    return state.with_changes(events=add_event(events, now_ms, change))


def longest_period(up: Rules, down: Rules) -> int:
    return max((p.period_seconds for p in (*up.policies, *down.policies)), default=0)
