"""Each signal's own proposal for a group's worker count, before any clamp.

- pendingDemand: the sample is the amount of the resource Ray cannot place (e.g. 6 CPUs). Workers
  needed = ceil(amount / what one worker provides, `obs.worker_resources[resource]`). Pending work is
  work not placed on a running worker, so it will land on workers still starting or newly added; the
  proposal is therefore `workers in use + needed`, where "in use" are ready workers that are not idle
  (unknown counts as in use). Counting `current + needed` instead would add the same workers again on
  every tick while the first ones start. Idle ready workers are not in use, so demand falling to zero
  proposes removing them. Without a worker list every ready worker counts as in use (no scale-down
  from this signal without activity data). A group whose workers provide none of the resource has no
  opinion.
- utilization: the sample is the average utilization in percent (0-100, the unit of
  `averageUtilization`). HPA's `ceil(current * value / target)`. When some workers are not ready yet
  and the ratio asks for more, they count as 0 % (HPA's rule), so starting workers are not counted
  twice; if that reverses the direction or lands in tolerance, the count holds. Not measurable at 0
  workers: no opinion there, and not required.
- promql with averageValue: the sample is the group's total; `ceil(value / averageValue)`.
  promql with value: `ceil(current * value / target)`.
- Tolerance (HPA): a ratio within [1 - scaleDown tolerance, 1 + scaleUp tolerance] proposes the
  current count. It applies to the ratio signals (utilization, promql), not to pending demand, which
  is a count, not a ratio.
- Activation (KEDA): at 0 workers a signal is active only when its value is strictly above
  `activationThreshold`; an active signal proposes at least 1, an inactive one 0. Above zero the
  thresholds play no part: scaling back to zero comes from the signals themselves proposing 0, after
  the scale-down stabilization window (which plays the part of KEDA's cooldownPeriod).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from controller.domain import Activity, GroupObservation, Reason, ReasonCode, SignalSpec
from controller.policy.model import (
    PendingDemandSignal,
    PromQLSignal,
    ScalingPolicy,
    Signal,
    UtilizationSignal,
)


def required_signals(policy: ScalingPolicy) -> list[SignalSpec]:
    """What a metrics source must fetch for this policy, each distinct signal once, in policy order."""
    seen: dict[SignalSpec, None] = {}
    for s in policy.spec.signals:
        seen.setdefault(s.spec(), None)
    return list(seen)


@dataclass(frozen=True)
class SignalOutcome:
    """What the signals say together: the combined proposal, and what was missing."""

    proposal: int | None  # max over the signals with an opinion; None when none had one
    reasons: tuple[Reason, ...]
    unavailable: tuple[str, ...]  # names of required signals without a usable sample
    active: bool  # at 0 workers: some signal is above its activation threshold


def _in_use(obs: GroupObservation) -> int:
    if not obs.workers:
        return obs.ready
    pending = set(obs.pending_deletes)
    return sum(1 for w in obs.workers if w.ready and w.activity != Activity.IDLE and w.name not in pending)


def _ratio_proposal(
    current: int, ratio: float, tol_up: float, tol_down: float, reference: int
) -> tuple[int, int]:
    """HPA's ratio rule: (raw proposal, proposal after tolerance); `reference` workers were measured.

    When only `reference < current` workers are ready and the ratio asks for more, the others count
    as 0 %: the raw proposal is `ceil(reference * ratio)`, and the count holds if that ratio over all
    workers falls within tolerance or no longer asks for more (HPA's conservative recompute).
    """
    if 1 - tol_down <= ratio <= 1 + tol_up:
        return math.ceil(current * ratio), current
    if ratio > 1 and reference < current:
        raw = math.ceil(reference * ratio)
        return raw, (current if ratio * reference / current <= 1 + tol_up else raw)
    raw = math.ceil(current * ratio)
    return raw, raw


def evaluate(policy: ScalingPolicy, obs: GroupObservation, tol_up: float, tol_down: float) -> SignalOutcome:
    current = obs.current
    proposals: list[int] = []
    reasons: list[Reason] = []
    unavailable: list[str] = []
    active = False
    signals: Sequence[Signal] = policy.spec.signals
    for sig in signals:
        if isinstance(sig, UtilizationSignal) and current == 0:
            reasons.append(
                Reason(
                    ReasonCode.SIGNAL_PROPOSAL,
                    f"{sig.name}: utilization cannot be measured at 0 workers",
                    {"signal": sig.name, "type": sig.type, "proposal": None},
                )
            )
            continue
        sample = obs.samples.get(sig.name)
        if sample is None or not sample.available or sample.value is None or not math.isfinite(sample.value):
            cause = "no sample" if sample is None else (sample.unavailable or "no value")
            unavailable.append(sig.name)
            reasons.append(
                Reason(
                    ReasonCode.METRICS_UNAVAILABLE,
                    f"{sig.name}: no usable sample ({cause})",
                    {"signal": sig.name, "type": sig.type, "cause": cause},
                )
            )
            continue
        value = sample.value
        data: dict[str, str | int | float | bool | None] = {
            "signal": sig.name,
            "type": sig.type,
            "value": value,
        }
        if current == 0:
            threshold = sig.activation_threshold
            data["activationThreshold"] = threshold
            if value <= threshold:
                data["proposal"] = 0
                proposals.append(0)
                reasons.append(
                    Reason(
                        ReasonCode.ACTIVATION_BELOW_THRESHOLD,
                        f"{sig.name}: {value:g} is not above the activation threshold {threshold:g}",
                        data,
                    )
                )
                continue
        raw, proposal, message = _one(sig, obs, value, tol_up, tol_down, data)
        if raw is not None and proposal is not None:
            raw, proposal = max(0, raw), max(0, proposal)
        if proposal is not None and current == 0:
            raw = proposal = max(1, proposal)
            active = True
        data["proposal"] = raw
        reasons.append(Reason(ReasonCode.SIGNAL_PROPOSAL, f"{sig.name}: {message} -> {raw}", data))
        if proposal != raw:
            reasons.append(
                Reason(
                    ReasonCode.WITHIN_TOLERANCE,
                    f"{sig.name}: ratio {data.get('ratio')} is within tolerance, keeping {proposal}",
                    {
                        "signal": sig.name,
                        "ratio": data.get("ratio"),
                        "toleranceUp": tol_up,
                        "toleranceDown": tol_down,
                        "before": raw,
                        "after": proposal,
                    },
                )
            )
        if proposal is not None:
            proposals.append(proposal)
    return SignalOutcome(
        proposal=max(proposals) if proposals else None,
        reasons=tuple(reasons),
        unavailable=tuple(unavailable),
        active=active,
    )


def _one(
    sig: Signal,
    obs: GroupObservation,
    value: float,
    tol_up: float,
    tol_down: float,
    data: dict[str, str | int | float | bool | None],
) -> tuple[int | None, int | None, str]:
    """(raw proposal, proposal after tolerance, what it was based on) for one available sample."""
    current = obs.current
    if isinstance(sig, PendingDemandSignal):
        per_worker = obs.worker_resources.get(sig.resource, 0.0)
        data["resource"] = sig.resource
        data["perWorker"] = per_worker
        if per_worker <= 0:
            return None, None, f"the group's workers provide no {sig.resource}"
        needed = math.ceil(value / per_worker) if value > 0 else 0
        in_use = _in_use(obs)
        data["needed"] = needed
        data["inUse"] = in_use
        return (
            in_use + needed,
            in_use + needed,
            f"{value:g} {sig.resource} pending, {in_use} in use + {needed} needed",
        )
    if isinstance(sig, UtilizationSignal):
        target = sig.target.average_utilization
        assert target is not None
        data["target"] = target
        data["targetType"] = "averageUtilization"
        reference = obs.ready if 0 < obs.ready < current else current
        ratio = value / target
        data["ratio"] = round(ratio, 6)
        raw, proposal = _ratio_proposal(current, ratio, tol_up, tol_down, reference)
        return raw, proposal, f"utilization {value:g} % vs target {target:g} %"
    assert isinstance(sig, PromQLSignal)
    if sig.target.average_value is not None:
        avg = sig.target.average_value
        data["target"] = avg
        data["targetType"] = "averageValue"
        raw = math.ceil(value / avg)
        if current > 0:
            ratio = value / (avg * current)
            data["ratio"] = round(ratio, 6)
            if 1 - tol_down <= ratio <= 1 + tol_up:
                return raw, current, f"{value:g} total / {avg:g} per worker"
        return raw, raw, f"{value:g} total / {avg:g} per worker"
    target_value = sig.target.value
    assert target_value is not None
    data["target"] = target_value
    data["targetType"] = "value"
    if current == 0:
        return 1, 1, f"{value:g} active at 0 workers"
    ratio = value / target_value
    data["ratio"] = round(ratio, 6)
    raw, proposal = _ratio_proposal(current, ratio, tol_up, tol_down, current)
    return raw, proposal, f"{value:g} vs target {target_value:g}"
