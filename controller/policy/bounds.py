"""The [min, max] in force at one instant: the policy's, overridden by schedules, capped by budgets.

- Several active schedules: the highest `minReplicas` and the lowest `maxReplicas` among them win
  (each window only ever tightens what it names; "the most restrictive wins", as with Karpenter's
  budgets, for the cap).
- Budgets: while a schedule that names a budget is active, its budget(s) replace the policy's;
  every budget in force must hold. An exhausted budget caps the group at `exhaustedMaxReplicas`,
  below `minReplicas` if need be.
- When a floor ends up above a cap, the cap wins: caps are the safety limits (budget, nights).

Bounds mode writes these bounds instead of a count, with one exception: `maxReplicas` is never
written below the current count (BOUNDS_MODE_CAP), since KubeRay would then delete running workers
of its own choosing; the cap follows the count down as Ray's autoscaler retires idle workers.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from controller.domain import GroupObservation, JSONScalar, ManualPin, Reason, ReasonCode
from controller.policy import budget as budget_mod
from controller.policy.durations import format_duration
from controller.policy.model import ScalingPolicy
from controller.policy.schedule import active_windows
from controller.policy.state import GroupState
from controller.policy.trail import Trail


@dataclass(frozen=True)
class EffectiveBounds:
    low: int
    high: int
    low_source: str  # "policy", "schedule:<name>" or "budget"
    high_source: str
    reasons: tuple[Reason, ...]  # SCHEDULE and BUDGET reasons for what is in force


def effective_bounds(policy: ScalingPolicy, state: GroupState, now: datetime, now_ms: int) -> EffectiveBounds:
    spec = policy.spec
    low, high = spec.min_replicas, spec.max_replicas
    low_src = high_src = "policy"
    reasons: list[Reason] = []
    windows = active_windows(spec.schedules, now) if spec.schedules else []
    for w in windows:
        s = w.schedule
        if s.min_replicas is not None and (low_src == "policy" or s.min_replicas > low):
            low, low_src = s.min_replicas, f"schedule:{s.name}"
        if s.max_replicas is not None and (high_src == "policy" or s.max_replicas < high):
            high, high_src = s.max_replicas, f"schedule:{s.name}"
        reasons.append(
            Reason(
                ReasonCode.SCHEDULE,
                f"schedule {s.name} is active until {w.end.isoformat()}",
                {
                    "schedule": s.name,
                    "start": w.start.isoformat(),
                    "end": w.end.isoformat(),
                    "minReplicas": s.min_replicas,
                    "maxReplicas": s.max_replicas,
                    "budget": s.budget is not None,
                },
            )
        )
    in_force = [w.schedule.budget for w in windows if w.schedule.budget is not None]
    if not in_force and spec.budget is not None:
        in_force = [spec.budget]
    for b in in_force:
        use = budget_mod.use(state, b, now_ms)
        if not use.exhausted:
            continue
        data: dict[str, JSONScalar] = {
            "workerHours": round(use.worker_hours, 3),
            "workerHoursLimit": use.worker_limit,
            "gpuHours": round(use.gpu_hours, 3),
            "gpuHoursLimit": use.gpu_limit,
            "window": format_duration_ms(use.window_ms),
            "exhaustedMaxReplicas": b.exhausted_max_replicas,
        }
        reasons.append(Reason(ReasonCode.BUDGET, _budget_message(use), data))
        if b.exhausted_max_replicas < high:
            high, high_src = b.exhausted_max_replicas, "budget"
    if low > high:
        low, low_src = high, high_src
    return EffectiveBounds(low, high, low_src, high_src, tuple(reasons))


def format_duration_ms(ms: int) -> str:
    return format_duration(timedelta(milliseconds=ms))


def _budget_message(use: budget_mod.BudgetUse) -> str:
    parts = []
    if use.worker_limit is not None:
        parts.append(f"{use.worker_hours:.1f}/{use.worker_limit:g} worker-hours")
    if use.gpu_limit is not None:
        parts.append(f"{use.gpu_hours:.1f}/{use.gpu_limit:g} GPU-hours")
    return f"budget used up ({', '.join(parts)} in {format_duration_ms(use.window_ms)})"


def clamp(bounds: EffectiveBounds, value: int, trail: Trail) -> int:
    """Pull `value` into the bounds, after saying which schedules and budgets are in force."""
    trail.extend(bounds.reasons)
    if value > bounds.high:
        trail.add(
            ReasonCode.AT_MAX,
            f"capped at {bounds.high} ({bounds.high_source})",
            before=value,
            after=bounds.high,
            bound=bounds.high,
            source=bounds.high_source,
        )
        return bounds.high
    if value < bounds.low:
        trail.add(
            ReasonCode.AT_MIN,
            f"raised to the minimum {bounds.low} ({bounds.low_source})",
            before=value,
            after=bounds.low,
            bound=bounds.low,
            source=bounds.low_source,
        )
        return bounds.low
    return value


def bounds_to_write(
    obs: GroupObservation, bounds: EffectiveBounds, pin: ManualPin | None, trail: Trail
) -> tuple[int, int]:
    """Bounds mode: the (minReplicas, maxReplicas) to write; a pin writes min = max = the pin."""
    current = obs.current
    trail.extend(bounds.reasons)
    low, high = bounds.low, bounds.high
    low_src = bounds.low_source
    if pin is not None:
        pinned = min(max(pin.replicas, low), high)
        trail.add(
            ReasonCode.MANUAL_PIN,
            f"pinned to {pinned} from chat",
            replicas=pin.replicas,
            after=pinned,
            until=pin.until.isoformat() if pin.until else None,
            by=pin.by,
        )
        low = high = pinned
        low_src = "pin"
    if high < current:
        trail.add(
            ReasonCode.BOUNDS_MODE_CAP,
            f"maxReplicas stays at the current {current}, not {high}: it comes down as Ray retires "
            "idle workers",
            before=high,
            after=current,
        )
        high = current
    low = min(low, high)
    if (low, high) != (obs.min_replicas, obs.max_replicas):
        trail.add(
            ReasonCode.BOUNDS_SET,
            f"bounds [{obs.min_replicas}, {obs.max_replicas}] -> [{low}, {high}]",
            fromMin=obs.min_replicas,
            fromMax=obs.max_replicas,
            min=low,
            max=high,
        )
    if low > current:
        trail.add(
            ReasonCode.AT_MIN,
            f"raised to the minimum {low} ({low_src})",
            before=current,
            after=low,
            bound=low,
            source=low_src,
        )
    elif (low, high) == (obs.min_replicas, obs.max_replicas):
        trail.add(ReasonCode.NO_CHANGE, f"bounds stay [{low}, {high}]", current=current, min=low, max=high)
    return low, high
