"""Pending demand per resource shape, and which worker group it belongs to (pure functions).

Ray reports what it cannot place as shapes with counts (`{"CPU": 1, "GPU": 1}: 2`), for the whole
cluster. A policy scales one worker group, so each shape is attributed to the group whose workers it
would land on. `attribute_demand` is that rule, written down so the decision can be explained:

1. A group *fits* a shape when one of its workers has at least the shape's amount of every resource
   the shape asks for. `memory` and `object_store_memory` are compared only when the group declares
   them (KubeRay groups often do not list them). `accelerator_type:X` is satisfied by a group that
   declares it, or by a GPU group that declares no accelerator type at all (Ray adds the resource on
   its own, from the GPU it sees). `node:<ip>` (node affinity) never fits a new worker.
2. A shape that asks for GPUs can only fit a group with GPUs (rule 1). A shape without GPUs goes to a
   group without GPUs when one fits, and to a GPU group only when nothing else fits: Ray's own
   autoscaler avoids GPU nodes for CPU work the same way.
3. Among the candidates the *smallest* group wins: fewest GPUs, then CPUs, then memory, then the sum of
   the other resources, then the group name (so the result never depends on input order).
4. A shape no group fits is returned in `unplaced`, never dropped: Ray will not run it until someone
   adds a fitting group, and the operator should hear about it.

Placement groups: a STRICT_PACK group's bundles must share one node, so they form one shape (their
sum); every other strategy places bundles independently, so each bundle counts as its own shape.
Task shapes that use placement-group resources (`CPU_group_<id>`) are dropped: the group's capacity is
already reserved, and a still-pending group appears as placement-group demand.

The signal value of `pendingDemand(R)` for a group is `sum(shape[R] * count)` over the shapes
attributed to it: the amount of R that is waiting (e.g. 6 CPUs), not a number of workers.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from controller.domain import GroupRef

__all__ = [
    "Attribution",
    "DemandKind",
    "ShapeDemand",
    "attribute_demand",
    "fits",
    "normalize_shape",
    "placement_group_shapes",
]

Shape = tuple[tuple[str, float], ...]

# `{resource}_group_{bundle index}_{pg id}` or `{resource}_group_{pg id}` (Ray's placement-group resources).
_PG_RESOURCE = re.compile(r"^.+_group_(\d+_)?[0-9a-f]{6,}$")
_SOFT_RESOURCES = frozenset({"memory", "object_store_memory"})
_ACCELERATOR_PREFIX = "accelerator_type:"
_NODE_PREFIX = "node:"


class DemandKind(StrEnum):
    TASK = "task"  # tasks and actors waiting for a node (`resourceDemand`)
    PLACEMENT_GROUP = "placementGroup"  # bundles of pending placement groups (`pgDemand`)


@dataclass(frozen=True)
class ShapeDemand:
    """`count` requests of one resource shape that Ray cannot place yet."""

    shape: Shape
    count: int
    kind: DemandKind = DemandKind.TASK
    strategy: str | None = None  # placement-group strategy, for PLACEMENT_GROUP demand

    @property
    def resources(self) -> dict[str, float]:
        return dict(self.shape)

    def amount(self, resource: str) -> float:
        return dict(self.shape).get(resource, 0.0) * self.count

    def __str__(self) -> str:
        inner = ", ".join(f"{k}: {_num(v)}" for k, v in self.shape)
        extra = f" ({self.kind}{', ' + self.strategy if self.strategy else ''})"
        return f"{{{inner}}} x {self.count}{extra if self.kind != DemandKind.TASK else ''}"


def _num(v: float) -> str:
    return str(int(v)) if v == int(v) else str(v)


def normalize_shape(resources: Mapping[str, float]) -> Shape | None:
    """A sorted shape without zero amounts; None when the shape uses placement-group resources."""
    out: dict[str, float] = {}
    for name, amount in resources.items():
        if name == "bundle" or _PG_RESOURCE.match(name):
            return None
        value = float(amount)
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"resource {name!r} has amount {amount!r}")
        if value > 0:
            out[str(name)] = value
    return tuple(sorted(out.items()))


def placement_group_shapes(
    bundles: Sequence[tuple[Mapping[str, float], int]], strategy: str, pending_groups: int
) -> list[ShapeDemand]:
    """The shapes of `pending_groups` pending placement groups with these bundles (see module doc)."""
    strategy = strategy.upper()
    if strategy == "STRICT_PACK":
        total: dict[str, float] = {}
        for bundle, n in bundles:
            for k, v in bundle.items():
                total[k] = total.get(k, 0.0) + float(v) * int(n)
        shape = normalize_shape(total)
        return [ShapeDemand(shape, pending_groups, DemandKind.PLACEMENT_GROUP, strategy)] if shape else []
    out = []
    for bundle, n in bundles:
        shape = normalize_shape(bundle)
        if shape:
            out.append(ShapeDemand(shape, int(n) * pending_groups, DemandKind.PLACEMENT_GROUP, strategy))
    return out


def fits(shape: Shape, worker: Mapping[str, float]) -> bool:
    """Whether one worker with `worker` resources can hold `shape` (rule 1 of the module doc)."""
    has_gpu = worker.get("GPU", 0) > 0
    declares_accelerator = any(k.startswith(_ACCELERATOR_PREFIX) for k in worker)
    for name, amount in shape:
        if name.startswith(_NODE_PREFIX):
            return False
        if name in _SOFT_RESOURCES and name not in worker:
            continue
        if name.startswith(_ACCELERATOR_PREFIX) and name not in worker:
            if has_gpu and not declares_accelerator:
                continue
            return False
        if worker.get(name, 0.0) + 1e-9 < amount:
            return False
    return True


def _size_key(group: GroupRef, worker: Mapping[str, float]) -> tuple[float, float, float, float, str]:
    main = ("GPU", "CPU", "memory")
    rest = math.fsum(v for k, v in worker.items() if k not in main)
    return (worker.get("GPU", 0.0), worker.get("CPU", 0.0), worker.get("memory", 0.0), rest, group.group)


@dataclass(frozen=True)
class Attribution:
    """Demand per group, and what no group fits."""

    by_group: Mapping[GroupRef, tuple[ShapeDemand, ...]] = field(default_factory=dict)
    unplaced: tuple[ShapeDemand, ...] = ()

    def amount(self, group: GroupRef, resource: str) -> float:
        """`sum(shape[resource] * count)` over the shapes attributed to `group` (0 when none)."""
        return math.fsum(d.amount(resource) for d in self.by_group.get(group, ()))


def attribute_demand(
    demand: Iterable[ShapeDemand], groups: Mapping[GroupRef, Mapping[str, float]]
) -> Attribution:
    """Attribute each shape to the smallest fitting group of the same cluster (module doc, rules 1-4).

    `groups` maps every worker group of ONE cluster to the resources of one of its workers. Every
    group appears in `by_group`, possibly with no demand, so "no demand" is distinguishable from "not
    computed".
    """
    ordered = sorted(groups.items(), key=lambda kv: _size_key(kv[0], kv[1]))
    by_group: dict[GroupRef, list[ShapeDemand]] = {g: [] for g, _ in ordered}
    unplaced: list[ShapeDemand] = []
    for d in demand:
        candidates = [g for g, w in ordered if fits(d.shape, w)]
        if not candidates:
            unplaced.append(d)
            continue
        wants_gpu = dict(d.shape).get("GPU", 0) > 0
        if not wants_gpu:
            without_gpu = [g for g in candidates if groups[g].get("GPU", 0) <= 0]
            candidates = without_gpu or candidates
        by_group[candidates[0]].append(d)
    return Attribution({g: tuple(v) for g, v in by_group.items()}, tuple(unplaced))
