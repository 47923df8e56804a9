"""The pure decision function: (policy, observation, saved state, now) -> (decision, new state).

No I/O, no clock, no globals beyond memo caches of parsed crons: the live loop, dry-run and trace
replay all call it, and tests drive it with plain values. It always returns a decision, a hold
included, with its reasons in the order they were computed.

Owner mode (rayops writes `replicas` and names the workers to remove), in order:

1. Budget use is charged for the time since the last tick (always, paused or not: it is real cost).
2. Holds that stop everything: global pause, the cluster's `rayops.io/paused`, the policy's
   `paused`, a Kueue-managed cluster, in-tree Ray autoscaling (two writers). Target = current.
3. Effective bounds: policy min/max, overridden by active schedules, capped by exhausted budgets.
4. A manual pin for this group (not expired) sets the count directly: clamped to the bounds, and
   subject to the pending-delete and busy-worker rules below, but not to stabilization or rate
   policies (a human asked for that number). An expired pin is ignored, with MANUAL_PIN_EXPIRED.
5. Signals: each proposes a count (see `signals.py`); the largest wins. With none, the proposal is
   the current count.
6. Missing data: `hold` (default) never goes below the current count while any required signal is
   unavailable, but scales up on the available ones (HPA's rule). `fallback` does the same until
   `afterFailures` consecutive ticks with missing data, then proposes `replicas`, or more if the
   signals that do have data ask for more (KEDA: the failing trigger reports the fallback count and
   the HPA takes the max); the proposal then goes through behavior, bounds and the busy-worker rule
   like any other.
7. Stabilization, then rate policies (see `behavior.py`).
8. Bounds clamp (AT_MIN / AT_MAX, after SCHEDULE / BUDGET saying what is in force). Bounds beat the
   missing-data hold: a schedule's night cap or an exhausted budget still lowers the count.
9. Pending deletes: no new scale-down while earlier removals are unfinished (BACKEND_CONVERGING).
10. Scale-down removes idle workers only (UNKNOWN counts as busy): not-ready ones first, then the
    most recently started, then by name. With fewer idle workers than the reduction, the target is
    reduced only by those (BUSY_WORKERS_PROTECTED); without a worker list nothing can be removed.

Bounds mode (Ray's in-tree autoscaler picks the count, rayops writes `minReplicas`/`maxReplicas`):
only pause holds apply (Kueue and in-tree autoscaling are fine there); the bounds to write are the
effective bounds (a pin writes min = max = pin), except that `maxReplicas` is never written below the
current count (BOUNDS_MODE_CAP): the cap comes down one step at a time as Ray retires idle workers.
Signals and behavior are not evaluated in bounds mode; the target is the current count pulled into
the written bounds.

Where the issue left the choice open, the rules are in the module that applies them: pending
demand counts workers in use + workers needed, utilization samples are percent, tolerance applies to
ratio signals only, activation (KEDA's, strictly above) gates only 0 -> 1 (`signals.py`); omitted
behavior fields take HPA's per-direction defaults, Percent is exact integer arithmetic
(`behavior.py`); windows last elapsed time across DST, crontab weekday numbers (`schedule.py`);
several schedules combine most-restrictive, caps beat floors (`bounds.py`); usage is charged as the
current count over the gap since the last tick, in coarse buckets (`budget.py`); victims
(`removal.py`); the state's size caps (`state.py`). Holds (pause, Kueue, in-tree) charge the budget
but leave the stabilization history and the missing-data count as they were.

State: scale events are recorded only for changes rayops makes itself and not in dry-run (nothing
is applied then, and HPA's "count at period start = current - changes" would go wrong).
Recommendations are recorded in dry-run too, so a dry-run shows what the live policy would do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from controller.domain import (
    Action,
    Decision,
    GroupObservation,
    JSONScalar,
    ManualPin,
    ReasonCode,
)
from controller.policy import behavior, budget
from controller.policy.bounds import EffectiveBounds, bounds_to_write, clamp, effective_bounds
from controller.policy.model import ScalingPolicy
from controller.policy.removal import protect
from controller.policy.signals import evaluate, required_signals
from controller.policy.state import GroupState
from controller.policy.trail import Trail

__all__ = ["decide", "required_signals"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass
class _Run:
    """The inputs of one call plus the reasons gathered so far."""

    policy: ScalingPolicy
    obs: GroupObservation
    now: datetime
    trail: Trail = field(default_factory=Trail)

    def add(self, code: ReasonCode, message: str, /, **data: JSONScalar) -> None:
        self.trail.add(code, message, **data)

    def decision(self, target: int, remove: tuple[str, ...] = (), **bounds: int | None) -> Decision:
        obs, spec = self.obs, self.policy.spec
        if spec.dry_run:
            self.add(ReasonCode.DRY_RUN, "dry run: decided, not applied", target=target)
        action = Action.UP if target > obs.current else Action.DOWN if target < obs.current else Action.HOLD
        return Decision(
            ref=obs.ref,
            policy=self.policy.name,
            mode=spec.mode,
            current=obs.current,
            target=target,
            action=action,
            reasons=tuple(self.trail.reasons),
            remove=remove,
            min_replicas=bounds.get("min_replicas"),
            max_replicas=bounds.get("max_replicas"),
            dry_run=spec.dry_run,
            at=self.now,
        )


def decide(
    policy: ScalingPolicy, obs: GroupObservation, state: GroupState, now: datetime
) -> tuple[Decision, GroupState]:
    """Decide one group's count for this tick; see the module docstring for the order of the rules."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("decide needs a timezone-aware `now` (e.g. datetime.now(UTC))")
    now_ms = (now - _EPOCH) // timedelta(milliseconds=1)
    run = _Run(policy, obs, now)
    state = budget.accumulate(state, policy, now_ms, obs.current, obs.worker_resources.get("GPU", 0.0))
    state = state.with_changes(at_ms=now_ms)

    if _holds(run):
        return run.decision(obs.current), state
    bounds = effective_bounds(policy, state, now, now_ms)
    pin = _pin(run)
    if policy.spec.mode == "bounds":
        low, high = bounds_to_write(obs, bounds, pin, run.trail)
        return run.decision(max(obs.current, low), min_replicas=low, max_replicas=high), state
    if pin is not None:
        run.add(
            ReasonCode.MANUAL_PIN,
            f"pinned to {pin.replicas} from chat",
            replicas=pin.replicas,
            **_pin_data(pin),
        )
        target, remove = protect(obs, clamp(bounds, pin.replicas, run.trail), run.trail)
        return run.decision(target, remove), _record(run, state, target, now_ms)
    return _owner(run, bounds, state, now_ms)


def _holds(run: _Run) -> bool:
    obs, spec = run.obs, run.policy.spec
    if obs.global_pause:
        run.add(ReasonCode.GLOBAL_PAUSE, "autoscaling is paused for all clusters", current=obs.current)
    elif obs.paused:
        run.add(
            ReasonCode.PAUSED,
            "the cluster is paused (rayops.io/paused)",
            current=obs.current,
            by="annotation",
        )
    elif spec.paused:
        run.add(ReasonCode.PAUSED, f"policy {run.policy.name} is paused", current=obs.current, by="policy")
    elif spec.mode == "owner" and obs.kueue_queue:
        run.add(
            ReasonCode.KUEUE_MANAGED,
            f"Kueue manages this cluster (queue {obs.kueue_queue}); owner mode does not scale it",
            queue=obs.kueue_queue,
            current=obs.current,
        )
    elif spec.mode == "owner" and obs.in_tree_autoscaling:
        run.add(
            ReasonCode.INTREE_AUTOSCALER_CONFLICT,
            "Ray's in-tree autoscaler also writes replicas; use bounds mode or turn it off",
            current=obs.current,
        )
    else:
        return False
    return True


def _pin(run: _Run) -> ManualPin | None:
    """This group's pin if it is still in force; an expired one is ignored, with a reason."""
    pin = run.obs.pin
    if pin is None or pin.group != run.obs.ref.group:
        return None
    if pin.until is not None and _utc(pin.until) <= _utc(run.now):
        run.add(
            ReasonCode.MANUAL_PIN_EXPIRED,
            "the manual count has expired; the policy decides again",
            replicas=pin.replicas,
            **_pin_data(pin),
        )
        return None
    return pin


def _utc(t: datetime) -> datetime:
    """Compare instants in UTC: aware datetimes sharing a tzinfo compare in wall time (DST folds);
    a naive `until` (a hand-edited annotation) is read as UTC rather than failing the tick."""
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def _pin_data(pin: ManualPin) -> dict[str, JSONScalar]:
    return {"until": pin.until.isoformat() if pin.until else None, "by": pin.by}


def _owner(run: _Run, bounds: EffectiveBounds, state: GroupState, now_ms: int) -> tuple[Decision, GroupState]:
    obs, spec = run.obs, run.policy.spec
    current = obs.current
    up, down = behavior.effective(spec.behavior)
    tol_up = up.tolerance if up.tolerance is not None else spec.tolerance
    tol_down = down.tolerance if down.tolerance is not None else spec.tolerance
    outcome = evaluate(run.policy, obs, tol_up, tol_down)
    run.trail.extend(outcome.reasons)
    proposal = outcome.proposal if outcome.proposal is not None else current

    failures = state.failures + 1 if outcome.unavailable else 0
    state = state.with_changes(failures=failures)
    if outcome.unavailable:
        missing = spec.on_missing_data
        if missing.action == "fallback" and failures >= missing.after_failures:
            assert missing.replicas is not None
            # KEDA: the failing triggers report the fallback count, the HPA takes the max with the rest
            after = missing.replicas if outcome.proposal is None else max(missing.replicas, outcome.proposal)
            run.add(
                ReasonCode.FALLBACK,
                f"data missing for {failures} ticks: falling back to {missing.replicas}",
                before=proposal,
                after=after,
                replicas=missing.replicas,
                failures=failures,
                afterFailures=missing.after_failures,
            )
            proposal = after
        elif proposal < current:
            run.add(
                ReasonCode.METRICS_UNAVAILABLE,
                f"holding at {current}: no scale-down while {len(outcome.unavailable)} signal(s) lack data",
                before=proposal,
                after=current,
                unavailable=",".join(outcome.unavailable),
                failures=failures,
            )
            proposal = current

    stab = behavior.stabilize(state, up, down, now_ms, current, proposal)
    state = stab.state
    value = stab.value
    if value != proposal:
        scale_down = proposal < value
        rules = down if scale_down else up
        run.add(
            ReasonCode.STABILIZATION,
            f"{'highest' if scale_down else 'lowest'} recommendation of the last "
            f"{rules.window_ms // 1000} s is {value}",
            before=proposal,
            after=value,
            direction="down" if scale_down else "up",
            windowSeconds=rules.window_ms // 1000,
        )

    value = _rate_limit(run, up, down, state, now_ms, value)
    target, remove = protect(obs, clamp(bounds, value, run.trail), run.trail)
    return run.decision(target, remove), _record(run, state, target, now_ms)


def _rate_limit(
    run: _Run, up: behavior.Rules, down: behavior.Rules, state: GroupState, now_ms: int, value: int
) -> int:
    current = run.obs.current
    if value == current:
        return value
    going_up = value > current
    if going_up:
        lim = behavior.scale_up_limit(up, state.events, now_ms, current)
        limited = min(value, lim.limit)
    else:
        lim = behavior.scale_down_limit(down, state.events, now_ms, current)
        limited = max(value, lim.limit)
    if limited != value:
        p = lim.policy
        run.add(
            ReasonCode.RATE_LIMITED,
            f"scale-{'up' if going_up else 'down'} "
            + (
                "is disabled"
                if lim.disabled
                else f"limited by {p.type} {p.value}/{p.period_seconds}s"
                if p
                else ""
            ),
            before=value,
            after=limited,
            direction="up" if going_up else "down",
            policyType=p.type if p else None,
            policyValue=p.value if p else None,
            periodSeconds=p.period_seconds if p else None,
            selectPolicy=(up if going_up else down).select,
        )
    return limited


def _record(run: _Run, state: GroupState, target: int, now_ms: int) -> GroupState:
    if run.policy.spec.dry_run:
        return state
    up, down = behavior.effective(run.policy.spec.behavior)
    return behavior.record_change(state, behavior.longest_period(up, down), now_ms, target - run.obs.current)
