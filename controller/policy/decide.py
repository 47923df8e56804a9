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
   `afterFailures` consecutive ticks with missing data, then proposes `replicas`; the proposal then
   goes through behavior, bounds and the busy-worker rule like any other.
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

State: scale events are recorded only for changes rayops makes itself and not in dry-run (nothing
is applied then, and HPA's "count at period start = current - changes" would go wrong).
Recommendations are recorded in dry-run too, so a dry-run shows what the live policy would do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from controller.domain import (
    Action,
    Activity,
    Decision,
    GroupObservation,
    JSONScalar,
    Reason,
    ReasonCode,
)
from controller.policy import behavior, budget
from controller.policy.bounds import EffectiveBounds, effective_bounds
from controller.policy.model import ScalingPolicy
from controller.policy.signals import evaluate, required_signals
from controller.policy.state import GroupState

__all__ = ["decide", "required_signals"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass
class _Run:
    """The inputs of one call plus the reasons gathered so far."""

    policy: ScalingPolicy
    obs: GroupObservation
    now: datetime
    reasons: list[Reason] = field(default_factory=list)

    def add(self, code: ReasonCode, message: str, **data: JSONScalar) -> None:
        self.reasons.append(Reason(code, message, data))

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
            reasons=tuple(self.reasons),
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
        return _bounds_mode(run, bounds, pin), state
    if pin is not None:
        run.add(ReasonCode.MANUAL_PIN, f"pinned to {pin} from chat", replicas=pin, **_pin_data(run))
        target = _clamp(run, bounds, pin)
        target, remove = _protect(run, target)
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


def _pin(run: _Run) -> int | None:
    pin = run.obs.pin
    if pin is None or pin.group != run.obs.ref.group:
        return None
    if pin.until is not None and _utc(pin.until) <= _utc(run.now):
        run.add(
            ReasonCode.MANUAL_PIN_EXPIRED,
            "the manual count has expired; the policy decides again",
            **_pin_data(run),
        )
        return None
    return pin.replicas


def _utc(t: datetime) -> datetime:
    """Compare instants in UTC: aware datetimes sharing a tzinfo compare in wall time (DST folds);
    a naive `until` (a hand-edited annotation) is read as UTC rather than failing the tick."""
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def _pin_data(run: _Run) -> dict[str, JSONScalar]:
    pin = run.obs.pin
    assert pin is not None
    return {"until": pin.until.isoformat() if pin.until else None, "by": pin.by}


def _owner(run: _Run, bounds: EffectiveBounds, state: GroupState, now_ms: int) -> tuple[Decision, GroupState]:
    obs, spec = run.obs, run.policy.spec
    current = obs.current
    up, down = behavior.effective(spec.behavior)
    tol_up = up.tolerance if up.tolerance is not None else spec.tolerance
    tol_down = down.tolerance if down.tolerance is not None else spec.tolerance
    outcome = evaluate(run.policy, obs, tol_up, tol_down)
    run.reasons.extend(outcome.reasons)
    proposal = outcome.proposal if outcome.proposal is not None else current

    failures = state.failures + 1 if outcome.unavailable else 0
    state = state.with_changes(failures=failures)
    if outcome.unavailable:
        missing = spec.on_missing_data
        if missing.action == "fallback" and failures >= missing.after_failures:
            assert missing.replicas is not None
            run.add(
                ReasonCode.FALLBACK,
                f"data missing for {failures} ticks: falling back to {missing.replicas}",
                before=proposal,
                after=missing.replicas,
                failures=failures,
                afterFailures=missing.after_failures,
            )
            proposal = missing.replicas
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
    target = _clamp(run, bounds, value)
    target, remove = _protect(run, target)
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


def _clamp(run: _Run, bounds: EffectiveBounds, value: int) -> int:
    run.reasons.extend(bounds.reasons)
    if value > bounds.high:
        run.add(
            ReasonCode.AT_MAX,
            f"capped at {bounds.high} ({bounds.high_source})",
            before=value,
            after=bounds.high,
            bound=bounds.high,
            source=bounds.high_source,
        )
        return bounds.high
    if value < bounds.low:
        run.add(
            ReasonCode.AT_MIN,
            f"raised to the minimum {bounds.low} ({bounds.low_source})",
            before=value,
            after=bounds.low,
            bound=bounds.low,
            source=bounds.low_source,
        )
        return bounds.low
    return value


def _protect(run: _Run, target: int) -> tuple[int, tuple[str, ...]]:
    """Apply the pending-delete rule and pick idle victims; never imply removing a busy worker."""
    obs = run.obs
    current = obs.current
    if target >= current:
        if target == current:
            run.add(
                ReasonCode.NO_CHANGE,
                f"staying at {current}",
                current=current,
                min=obs.min_replicas,
                max=obs.max_replicas,
            )
        return target, ()
    if obs.pending_deletes:
        run.add(
            ReasonCode.BACKEND_CONVERGING,
            f"{len(obs.pending_deletes)} earlier removal(s) not finished; no new scale-down yet",
            before=target,
            after=current,
            pendingDeletes=len(obs.pending_deletes),
        )
        run.add(ReasonCode.NO_CHANGE, f"staying at {current}", current=current)
        return current, ()
    idle = sorted(
        (w for w in obs.workers if w.activity == Activity.IDLE),
        key=lambda w: (
            w.ready,
            w.started_at is None,
            -w.started_at.timestamp() if w.started_at else 0.0,
            w.name,
        ),
    )
    wanted = current - target
    if len(idle) < wanted:
        run.add(
            ReasonCode.BUSY_WORKERS_PROTECTED,
            f"only {len(idle)} of the {wanted} workers to remove are idle",
            before=target,
            after=current - len(idle),
            idle=len(idle),
            busy=len(obs.workers) - len(idle),
        )
        target = current - len(idle)
        if target == current:
            run.add(ReasonCode.NO_CHANGE, f"staying at {current}", current=current)
    return target, tuple(w.name for w in idle[:wanted])


def _record(run: _Run, state: GroupState, target: int, now_ms: int) -> GroupState:
    if run.policy.spec.dry_run:
        return state
    up, down = behavior.effective(run.policy.spec.behavior)
    return behavior.record_change(state, behavior.longest_period(up, down), now_ms, target - run.obs.current)


def _bounds_mode(run: _Run, bounds: EffectiveBounds, pin: int | None) -> Decision:
    obs = run.obs
    current = obs.current
    run.reasons.extend(bounds.reasons)
    low, high = bounds.low, bounds.high
    if pin is not None:
        pinned = min(max(pin, low), high)
        run.add(
            ReasonCode.MANUAL_PIN,
            f"pinned to {pinned} from chat",
            replicas=pin,
            after=pinned,
            **_pin_data(run),
        )
        low = high = pinned
    if high < current:
        run.add(
            ReasonCode.BOUNDS_MODE_CAP,
            f"maxReplicas stays at the current {current}, not {high}: it comes down as Ray retires "
            "idle workers",
            before=high,
            after=current,
        )
        high = current
    low = min(low, high)
    if (low, high) != (obs.min_replicas, obs.max_replicas):
        run.add(
            ReasonCode.BOUNDS_SET,
            f"bounds [{obs.min_replicas}, {obs.max_replicas}] -> [{low}, {high}]",
            fromMin=obs.min_replicas,
            fromMax=obs.max_replicas,
            min=low,
            max=high,
        )
    target = max(current, low)
    if target == current and (low, high) == (obs.min_replicas, obs.max_replicas):
        run.add(ReasonCode.NO_CHANGE, f"bounds stay [{low}, {high}]", current=current, min=low, max=high)
    return run.decision(target, min_replicas=low, max_replicas=high)
