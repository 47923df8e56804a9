"""What each built-in signal measures, written once and evaluated two ways: as PromQL and in Python.

The Prometheus source sends the PromQL; the direct source (laptop mode, no Prometheus) scrapes Ray's
own `/metrics` and evaluates the same `Aggregate` over the parsed series. Keeping both renderings
beside one definition is what makes "the same signals" from both sources true by construction, and
the tests compare the two on real Ray.

Utilization vocabulary (`utilization(resource)` in a policy; the value is a percentage, 0-100, the unit
of `target.averageUtilization`):

| resource | measures | Ray metrics |
|---|---|---|
| `CPU` | physical CPU, mean over the group's nodes | `ray_node_cpu_utilization` |
| `GPU` | physical GPU, mean over the group's GPUs | `ray_node_gpus_utilization` (NVML only) |
| `memory` | node memory used / total | `ray_node_mem_used`, `_total` |
| `GPU_memory` | GPU memory used / (used + available) | `ray_node_gram_used`, `_available` |
| `logical:<Name>` | Ray's logical resource in use / total | `ray_resources{Name, State}` |
| any other name | as `logical:<Name>` (a custom resource has no meter) | `ray_resources{Name, State}` |

`ray_tasks` has no resource-shape label, so pending demand *per shape* comes from the Ray dashboard; the
pending-task *count* per cluster (`PENDING_TASKS`) is offered by both Prometheus-side sources so the two
can be compared. `ray_tasks` is emitted as +/- deltas by several processes (the executor side reads
negative), so it is always summed over every series, never read one series at a time.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from controller.keys import METRIC_LABEL_CLUSTER, METRIC_LABEL_NAMESPACE, METRIC_MAPPING_LABELS

__all__ = [
    "CLUSTER_LABELS",
    "LOGICAL_PREFIX",
    "PENDING_TASKS",
    "PENDING_TASK_STATES",
    "PHYSICAL_UTILIZATION",
    "Aggregate",
    "Selector",
    "utilization_aggregate",
]

# The labels that name a cluster (without the group): pending tasks are owned by the driver's node,
# which is often the head, so they are counted per cluster.
CLUSTER_LABELS = (METRIC_LABEL_NAMESPACE, METRIC_LABEL_CLUSTER)
LOGICAL_PREFIX = "logical:"
# Work Ray has accepted but not placed (ray-kuberay.md 9.7: the recommended pending-demand states).
PENDING_TASK_STATES = ("PENDING_NODE_ASSIGNMENT", "PENDING_ARGS_AVAIL")


@dataclass(frozen=True)
class Selector:
    """A metric name plus equality (one value) or set (several values) matchers on labels."""

    metric: str
    matchers: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def promql(self) -> str:
        parts = []
        for label, values in self.matchers:
            if len(values) == 1:
                parts.append(f"{label}={_promql_string(values[0])}")
            else:
                parts.append(f"{label}=~{_promql_string('|'.join(re.escape(v) for v in values))}")
        return f"{self.metric}{{{','.join(parts)}}}" if parts else self.metric

    def matches(self, name: str, labels: Mapping[str, str]) -> bool:
        return name == self.metric and all(labels.get(label, "") in values for label, values in self.matchers)


def _promql_string(s: str) -> str:
    # A JSON string literal is a valid PromQL double-quoted string (same escapes for ", \ and controls).
    return json.dumps(s)


@dataclass(frozen=True)
class Aggregate:
    """One signal's arithmetic over the series of a group (or cluster).

    - `avg`: mean of every series of `numerator[0]`;
    - `sum`: sum of every series of `numerator[0]`;
    - `ratio`: `scale * sum(numerator) / sum(denominator)`, each side summed over all its selectors.

    A group with no series on one side has no value (PromQL drops it from the result, Python returns
    None); a zero denominator gives NaN or Inf, which callers report as unavailable, never as 0.
    """

    kind: Literal["avg", "sum", "ratio"]
    numerator: tuple[Selector, ...]
    denominator: tuple[Selector, ...] = ()
    scale: float = 1.0
    # For `sum`: a group that has series of this selector but none of the numerator's sums to 0.
    # Ray stops exporting a `ray_tasks` state once nothing is in it, so "no pending series while
    # the cluster reports ray_tasks" means 0 pending, not "no data".
    zero_when: Selector | None = None

    @property
    def selectors(self) -> tuple[Selector, ...]:
        return self.numerator + self.denominator

    @property
    def metric_names(self) -> frozenset[str]:
        extra = {self.zero_when.metric} if self.zero_when else set()
        return frozenset(s.metric for s in self.selectors) | extra

    def promql(self, by: Sequence[str] = METRIC_MAPPING_LABELS) -> str:
        """The value query, aggregated `by` the given labels (the mapping labels by default)."""
        clause = f"by ({', '.join(by)})"
        if self.kind in ("avg", "sum"):
            expr = f"{self.kind} {clause} ({self.numerator[0].promql()})"
            if self.zero_when is not None:
                expr = f"{expr} or 0 * sum {clause} ({self.zero_when.promql()})"
            return expr
        num = " + ".join(f"sum {clause} ({s.promql()})" for s in self.numerator)
        den = " + ".join(f"sum {clause} ({s.promql()})" for s in self.denominator)
        expr = f"({num}) / ({den})"
        return f"{_number(self.scale)} * {expr}" if self.scale != 1.0 else expr

    def promql_sample_time(self, by: Sequence[str] = METRIC_MAPPING_LABELS) -> str:
        """The oldest sample time of the main series per group: `timestamp()` on a plain selector
        returns when the sample was scraped (on any other expression it returns the evaluation time),
        which is what a staleness limit needs."""
        main = self.zero_when or self.numerator[0]
        return f"min by ({', '.join(by)}) (timestamp({main.promql()}))"

    def evaluate(self, series: Iterable[tuple[str, Mapping[str, str], float]]) -> float | None:
        """The same arithmetic in Python over (metric name, labels, value) of one group's series."""
        rows = list(series)

        def values(sel: Selector) -> list[float]:
            return [v for name, labels, v in rows if sel.matches(name, labels)]

        if self.kind in ("avg", "sum"):
            vals = values(self.numerator[0])
            if not vals:
                return 0.0 if self.zero_when is not None and values(self.zero_when) else None
            total = math.fsum(vals)
            return total / len(vals) if self.kind == "avg" else total
        num_parts = [values(s) for s in self.numerator]
        den_parts = [values(s) for s in self.denominator]
        if any(not p for p in num_parts + den_parts):
            return None
        num = math.fsum(math.fsum(p) for p in num_parts)
        den = math.fsum(math.fsum(p) for p in den_parts)
        if den == 0:
            return math.nan if num == 0 else math.copysign(math.inf, num)
        return self.scale * num / den


def _number(x: float) -> str:
    return str(int(x)) if x == int(x) else repr(x)


def _avg(metric: str) -> Aggregate:
    return Aggregate("avg", (Selector(metric),))


PHYSICAL_UTILIZATION: Mapping[str, Aggregate] = {
    "CPU": _avg("ray_node_cpu_utilization"),
    "GPU": _avg("ray_node_gpus_utilization"),
    "memory": Aggregate("ratio", (Selector("ray_node_mem_used"),), (Selector("ray_node_mem_total"),), 100.0),
    "GPU_memory": Aggregate(
        "ratio",
        (Selector("ray_node_gram_used"),),
        (Selector("ray_node_gram_used"), Selector("ray_node_gram_available")),
        100.0,
    ),
}

PENDING_TASKS = Aggregate(
    "sum", (Selector("ray_tasks", (("State", PENDING_TASK_STATES),)),), zero_when=Selector("ray_tasks")
)


def utilization_aggregate(resource: str | None) -> Aggregate:
    """The aggregate behind `utilization(resource)`; see the table in the module docstring."""
    name = resource or "CPU"
    if name in PHYSICAL_UTILIZATION:
        return PHYSICAL_UTILIZATION[name]
    logical = name.removeprefix(LOGICAL_PREFIX)
    if not logical:
        raise ValueError(f"utilization resource '{name}' names no Ray resource")
    return Aggregate(
        "ratio",
        (Selector("ray_resources", (("Name", (logical,)), ("State", ("USED",)))),),
        (Selector("ray_resources", (("Name", (logical,)),)),),
        100.0,
    )
