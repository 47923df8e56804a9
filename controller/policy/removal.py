"""Which workers a scale-down may remove: idle ones only, never a busy one.

KubeRay removes the pods named in `workersToDelete`; without names it picks at random, which can
kill running tasks and lose objects. So a lower count must be backed by named idle workers:

- only `Activity.IDLE` workers qualify; UNKNOWN counts as busy;
- not-ready workers go first (nothing runs there yet), then the most recently started (least warm
  state lost), then by name so the choice is deterministic;
- with fewer idle workers than the reduction, the count drops only by the idle ones
  (BUSY_WORKERS_PROTECTED); without a worker list nothing can be named, so nothing is removed;
- while earlier removals are still pending, no new scale-down starts (BACKEND_CONVERGING), as
  Ray's own KubeRay provider does.
"""

from __future__ import annotations

from controller.domain import Activity, GroupObservation, ReasonCode, Worker
from controller.policy.trail import Trail


def _victim_order(w: Worker) -> tuple[bool, bool, float, str]:
    return (w.ready, w.started_at is None, -w.started_at.timestamp() if w.started_at else 0.0, w.name)


def protect(obs: GroupObservation, target: int, trail: Trail) -> tuple[int, tuple[str, ...]]:
    """(target, workers to remove), the target raised where the removal would touch busy workers."""
    current = obs.current
    if target > current:
        return target, ()
    if target < current and obs.pending_deletes:
        trail.add(
            ReasonCode.BACKEND_CONVERGING,
            f"{len(obs.pending_deletes)} earlier removal(s) not finished; no new scale-down yet",
            before=target,
            after=current,
            pendingDeletes=len(obs.pending_deletes),
        )
        target = current
    remove: tuple[str, ...] = ()
    if target < current:
        idle = sorted((w for w in obs.workers if w.activity == Activity.IDLE), key=_victim_order)
        wanted = current - target
        if len(idle) < wanted:
            trail.add(
                ReasonCode.BUSY_WORKERS_PROTECTED,
                f"only {len(idle)} of the {wanted} workers to remove are idle",
                before=target,
                after=current - len(idle),
                idle=len(idle),
                busy=len(obs.workers) - len(idle),
            )
            target = current - len(idle)
        remove = tuple(w.name for w in idle[:wanted])
    if target == current:
        trail.add(
            ReasonCode.NO_CHANGE,
            f"staying at {current}",
            current=current,
            min=obs.min_replicas,
            max=obs.max_replicas,
        )
    return target, remove
