"""Worker-hours and GPU-hours used over a rolling window, kept in coarse buckets in GroupState.

Each tick charges `current workers x time since the last tick` (and GPUs per worker x the same),
in whole worker-seconds (GPU-seconds), to the bucket holding `now`: the count seen now stands for
the whole gap, which is the only count the function knows about. A gap longer than the longest
window is charged as one window. Buckets are at least an hour and sized so the longest window
spans at most ~48 of them; a bucket counts until it lies entirely before `now - window`, so the
budget recovers at most one bucket late (conservative: never early). Usage is tracked only while
the policy has a budget (its own or a schedule's).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from controller.policy.durations import parse_duration
from controller.policy.model import Budget, ScalingPolicy
from controller.policy.state import MAX_BUCKETS, Bucket, GroupState

_HOUR_MS = 3_600_000
_TARGET_BUCKETS = 48


@dataclass(frozen=True)
class BudgetUse:
    """How much of one budget is used at one instant, and whether that exhausts it."""

    window_ms: int
    worker_hours: float
    gpu_hours: float
    worker_limit: float | None
    gpu_limit: float | None

    @property
    def exhausted(self) -> bool:
        return (self.worker_limit is not None and self.worker_hours >= self.worker_limit) or (
            self.gpu_limit is not None and self.gpu_hours >= self.gpu_limit
        )


@lru_cache(maxsize=1024)
def window_ms(text: str) -> int:
    return int(parse_duration(text).total_seconds() * 1000)


def budgets_of(policy: ScalingPolicy) -> list[Budget]:
    spec = policy.spec
    out = [spec.budget] if spec.budget is not None else []
    out.extend(s.budget for s in spec.schedules if s.budget is not None)
    return out


def bucket_size_ms(longest_window_ms: int) -> int:
    hours = -(-longest_window_ms // (_TARGET_BUCKETS * _HOUR_MS))  # ceil
    return max(1, hours) * _HOUR_MS


def accumulate(
    state: GroupState, policy: ScalingPolicy, now_ms: int, workers: int, gpus_per_worker: float
) -> GroupState:
    """Charge the time since the last tick; drop buckets no budget can see any more."""
    budgets = budgets_of(policy)
    if not budgets:
        return state.with_changes(bucket_ms=0, buckets=()) if state.buckets else state
    longest = max(window_ms(b.window) for b in budgets)
    size = bucket_size_ms(longest)
    buckets = state.buckets if state.bucket_ms == size else _rebucket(state, size)
    dt = 0 if state.at_ms <= 0 else min(max(0, now_ms - state.at_ms), longest)
    if dt > 0 and workers > 0:
        index = now_ms // size
        worker_s = round(workers * dt / 1000)
        gpu_s = round(workers * gpus_per_worker * dt / 1000)
        if buckets and buckets[-1][0] == index:
            i, w, g = buckets[-1]
            buckets = (*buckets[:-1], (i, w + worker_s, g + gpu_s))
        else:
            buckets = (*buckets, (index, worker_s, gpu_s))
    first_visible = (now_ms - longest) // size  # buckets ending at or before now - longest are gone
    buckets = tuple(b for b in buckets if b[0] >= first_visible)[-MAX_BUCKETS:]
    return state.with_changes(bucket_ms=size, buckets=buckets)


def _rebucket(state: GroupState, size: int) -> tuple[Bucket, ...]:
    """Re-file usage when the longest window (so the bucket size) changed with the policy."""
    if not state.buckets or state.bucket_ms <= 0:
        return ()
    merged: dict[int, tuple[int, int]] = {}
    for i, w, g in state.buckets:
        # file under the bucket holding the old bucket's end, so nothing expires earlier than before
        j = ((i + 1) * state.bucket_ms - 1) // size
        w0, g0 = merged.get(j, (0, 0))
        merged[j] = (w0 + w, g0 + g)
    return tuple((j, w, g) for j, (w, g) in sorted(merged.items()))


def use(state: GroupState, budget: Budget, now_ms: int) -> BudgetUse:
    """Usage within `budget.window` ending at `now_ms`, from the buckets `accumulate` left."""
    win = window_ms(budget.window)
    size = state.bucket_ms
    worker_s = gpu_s = 0
    if size > 0:
        for i, w, g in state.buckets:
            if (i + 1) * size > now_ms - win:
                worker_s += w
                gpu_s += g
    return BudgetUse(
        window_ms=win,
        worker_hours=worker_s / 3600,
        gpu_hours=gpu_s / 3600,
        worker_limit=budget.worker_hours,
        gpu_limit=budget.gpu_hours,
    )
