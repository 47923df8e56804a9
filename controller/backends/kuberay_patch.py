"""Turning decisions into one guarded JSON patch per RayCluster, and noticing a fight: pure, no I/O.

Why a JSON patch with `test` ops (ray-kuberay.md sections 4 and 5): a merge patch replaces the whole
`workerGroupSpecs` list, and a `resourceVersion` guard would conflict with every status write of the
operator. A `test` on each group's `groupName` (lists are patched by index) and on each value the decision
was based on makes the write fail exactly when someone changed what we read, and lets every other change
(another group, another field, status) through untouched.

Owner mode writes `replicas`, and on scale-down names the idle workers in `scaleStrategy.workersToDelete`
in the same patch: the operator deletes every named pod, and deletes arbitrary pods when more remain than
`replicas` allows, so lowering `replicas` without naming enough victims is refused here
(`UnsafeRemoval`), as is naming a worker that is not proven idle. Bounds mode writes `minReplicas` and
`maxReplicas` only; `replicas` is Ray's autoscaler's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from controller.backends.base import (
    ManagedCluster,
    ManagedGroup,
    ModeRefused,
    PersistentConflict,
    UnsafeRemoval,
)
from controller.domain import Activity, ClusterRef, Decision

Op = dict[str, Any]
TRACKED_FIELDS = ("replicas", "minReplicas", "maxReplicas")


def group_path(index: int, *parts: str) -> str:
    return "/".join([f"/spec/workerGroupSpecs/{index}", *parts])


def _test(path: str, value: Any) -> Op:
    return {"op": "test", "path": path, "value": value}


def _replace(path: str, value: Any) -> Op:
    return {"op": "replace", "path": path, "value": value}


@dataclass
class Plan:
    """The ops for one cluster, and which (group, field) values they write, for the fight tracker."""

    ops: list[Op] = field(default_factory=list)
    writes: dict[tuple[str, str], Any] = field(default_factory=dict)
    expected: dict[tuple[str, str], Any] = field(default_factory=dict)  # values read, for changed fields
    details: list[str] = field(default_factory=list)

    def change(self, index: int, group: str, name: str, before: Any, after: Any) -> None:
        path = group_path(index, name)
        self.ops += [_test(path, before), _replace(path, after)]
        self.writes[(group, name)] = after
        self.expected[(group, name)] = before


def _guard_group(plan: Plan, index: int, group: ManagedGroup) -> None:
    plan.ops.append(_test(group_path(index, "groupName"), group.ref.group))


def plan_apply(cluster: ManagedCluster, decisions: Sequence[Decision]) -> Plan:
    """The patch making `decisions` real on `cluster` as read; empty when nothing changes.

    Raises GroupNotFound, ModeRefused and UnsafeRemoval before anything is sent.
    """
    plan = Plan()
    latest = {d.ref.group: d for d in decisions if not d.dry_run}  # one decision per group: the last
    for name, d in latest.items():
        group = cluster.group(name)
        index = cluster.groups.index(group)
        if d.mode == "bounds":
            _plan_bounds(plan, index, group, d)
        else:
            _plan_owner(plan, cluster, index, group, d)
    return plan


def _plan_bounds(plan: Plan, index: int, group: ManagedGroup, d: Decision) -> None:
    low = group.min_replicas if d.min_replicas is None else d.min_replicas
    high = group.max_replicas if d.max_replicas is None else d.max_replicas
    if low > high:
        raise ModeRefused(f"{d.ref}: minReplicas {low} above maxReplicas {high}; not written")
    if (low, high) == (group.min_replicas, group.max_replicas):
        return
    _guard_group(plan, index, group)
    if low != group.min_replicas:
        plan.change(index, group.ref.group, "minReplicas", group.min_replicas, low)
    if high != group.max_replicas:
        plan.change(index, group.ref.group, "maxReplicas", group.max_replicas, high)
    plan.details.append(
        f"{group.ref.group}: bounds [{group.min_replicas}, {group.max_replicas}] -> [{low}, {high}]"
    )


def _plan_owner(plan: Plan, cluster: ManagedCluster, index: int, group: ManagedGroup, d: Decision) -> None:
    victims = [n for n in dict.fromkeys(d.remove) if n not in group.pending_deletes]
    if d.target == group.replicas and not victims:
        return
    if d.target < 0:
        raise ModeRefused(f"{d.ref}: cannot scale to {d.target} workers")
    if cluster.in_tree_autoscaling:
        raise ModeRefused(
            f"{cluster.ref} runs Ray's in-tree autoscaler (enableInTreeAutoscaling or an autoscaler "
            "sidecar), which also writes replicas: owner mode is refused; use a bounds-mode policy or "
            "turn the in-tree autoscaler off"
        )
    if cluster.kueue_queue:
        raise ModeRefused(
            f"{cluster.ref} is managed by Kueue (queue {cluster.kueue_queue}): owner mode does not change "
            "the size of an admitted workload; use a bounds-mode policy or leave it to Kueue"
        )
    _check_victims(group, d, victims)
    _guard_group(plan, index, group)
    plan.change(index, group.ref.group, "replicas", group.replicas, d.target)
    if d.target < group.min_replicas:  # the operator clamps: a count below the bounds would not hold
        plan.change(index, group.ref.group, "minReplicas", group.min_replicas, d.target)
    if d.target > group.max_replicas:
        plan.change(index, group.ref.group, "maxReplicas", group.max_replicas, d.target)
    if victims:
        pending = list(group.pending_deletes)
        if pending:  # a list that exists can be tested; an absent one cannot (see the module doc)
            plan.ops.append(_test(group_path(index, "scaleStrategy", "workersToDelete"), pending))
        plan.ops.append(
            {
                "op": "add",
                "path": group_path(index, "scaleStrategy"),
                "value": {"workersToDelete": pending + victims},
            }
        )
    removing = f", removing {', '.join(victims)}" if victims else ""
    plan.details.append(f"{group.ref.group}: replicas {group.replicas} -> {d.target}{removing}")


def _check_victims(group: ManagedGroup, d: Decision, victims: list[str]) -> None:
    """Only idle workers of this group may be named, and enough of them that the operator picks none."""
    by_name = {w.name: w for w in group.workers}
    for name in victims:
        worker = by_name.get(name)
        if worker is None:
            raise UnsafeRemoval(f"{d.ref}: {name} is not a worker of this group; nothing was written")
        if worker.activity != Activity.IDLE:
            raise UnsafeRemoval(
                f"{d.ref}: {name} is {worker.activity} (only idle workers are removed); nothing was written"
            )
    if victims and group.num_of_hosts > 1:
        raise ModeRefused(
            f"{d.ref} is a multi-host group (numOfHosts {group.num_of_hosts}): naming one pod removes its "
            "whole replica, so owner-mode scale-down is refused; use a bounds-mode policy"
        )
    if victims and d.target >= group.replicas:
        raise UnsafeRemoval(
            f"{d.ref}: removing {len(victims)} worker(s) without lowering replicas from {group.replicas} "
            "would only replace them; nothing was written"
        )
    gone = set(victims) | set(group.pending_deletes)
    survivors = [w for w in group.workers if w.name not in gone]
    allowed = d.target * group.num_of_hosts
    if len(survivors) > allowed:
        raise UnsafeRemoval(
            f"{d.ref}: {len(survivors)} workers would remain for {allowed} wanted; the operator would pick "
            f"{len(survivors) - allowed} to delete itself, busy or not, so nothing was written (name idle "
            "workers for every removal)"
        )


def plan_finish(cluster: ManagedCluster) -> Plan:
    """Drop from `workersToDelete` the names whose pods are gone (the operator never does)."""
    plan = Plan()
    for index, group in enumerate(cluster.groups):
        if not group.pending_deletes:
            continue
        live = {w.name for w in group.workers}
        remaining = [n for n in group.pending_deletes if n in live]
        if len(remaining) == len(group.pending_deletes):
            continue
        path = group_path(index, "scaleStrategy", "workersToDelete")
        _guard_group(plan, index, group)
        plan.ops += [_test(path, list(group.pending_deletes)), _replace(path, remaining)]
        done = [n for n in group.pending_deletes if n not in live]
        plan.details.append(f"{group.ref.group}: removal of {', '.join(done)} finished")
    return plan


# --- noticing a fight -----------------------------------------------------------------------------


@dataclass
class _ClusterFight:
    written: dict[tuple[str, str], Any] = field(default_factory=dict)  # what we wrote (or expected)
    strikes: dict[tuple[str, str], int] = field(default_factory=dict)
    backoff_until: datetime | None = None


class FightTracker:
    """Counts ticks in a row on which someone else changed a field rayops wrote, per cluster and field.

    At `threshold` strikes the fight is reported once (`PersistentConflict`) and rayops stops writing
    that cluster for `backoff`; then the count starts over. A value that stays as written clears the
    field's strikes. In memory only: after a restart a fight is noticed again within `threshold` ticks.
    """

    def __init__(self, threshold: int = 3, backoff: timedelta = timedelta(minutes=10)) -> None:
        self.threshold = threshold
        self.backoff = backoff
        self._fights: dict[ClusterRef, _ClusterFight] = {}

    def holding(self, ref: ClusterRef, now: datetime) -> datetime | None:
        """The end of the back-off when writes to `ref` are held now; None when they are not."""
        fight = self._fights.get(ref)
        if fight is None or fight.backoff_until is None:
            return None
        if now < fight.backoff_until:
            return fight.backoff_until
        self._fights.pop(ref, None)  # back-off over: start counting afresh
        return None

    def observe(self, cluster: ManagedCluster, now: datetime) -> None:
        """Compare what was read with what rayops wrote last; raise PersistentConflict at the threshold."""
        fight = self._fights.get(cluster.ref)
        if fight is None or not fight.written:
            return
        current = {
            (g.ref.group, f): v
            for g in cluster.groups
            for f, v in (
                ("replicas", g.replicas),
                ("minReplicas", g.min_replicas),
                ("maxReplicas", g.max_replicas),
            )
        }
        for key, value in list(fight.written.items()):
            if current.get(key) == value:
                fight.strikes.pop(key, None)
            else:
                fight.strikes[key] = fight.strikes.get(key, 0) + 1
                del fight.written[key]  # counted once; our next write re-arms it
        fought = sorted(k for k, n in fight.strikes.items() if n >= self.threshold)
        if fought:
            fight.backoff_until = now + self.backoff
            fight.strikes.clear()
            fields = tuple(f"{g}.{f}" for g, f in fought)
            until = fight.backoff_until.isoformat(timespec="seconds")
            raise PersistentConflict(
                f"{cluster.ref}: someone else keeps changing {', '.join(fields)} "
                f"({self.threshold} ticks in a row; e.g. a notebook's apply, GitOps or another autoscaler); "
                f"rayops stops writing this cluster until {until}",
                fields,
                fight.backoff_until,
            )

    def wrote(self, ref: ClusterRef, values: dict[tuple[str, str], Any]) -> None:
        """Values rayops just wrote (or, after a failed `test`, the values it expected): what the next
        read should show unless someone else changed them."""
        tracked = {k: v for k, v in values.items() if k[1] in TRACKED_FIELDS}
        if tracked:
            self._fights.setdefault(ref, _ClusterFight()).written.update(tracked)
