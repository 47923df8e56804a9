"""Ray dashboard answers, read across Ray versions and autoscaler v1/v2 (pure functions, no I/O).

Shapes seen on real clusters (fixtures in tests/fixtures/ray-dashboard/ and tests/fixtures/ray-gpu/):

- `/api/cluster_status` (envelope `{result, msg, data}`; dict keys camelCased, list entries not):
  autoscaler v1 (and Ray's read-only monitor when no autoscaler runs, `legacy: true`) writes
  `data.clusterStatus.loadMetricsReport` with `resourceDemand [[shape, count]]`,
  `pgDemand [[{bundles: [[shape, n]], strategy}, count]]`, `usageByNode {node_id: {res: [used, total]}}`
  and the report time `clusterStatus.time` (unix s). Under autoscaler v2 `clusterStatus` is null.
- `/api/cluster_status?format=1`: `data.clusterStatus` is the `ray status` text, built on request from
  the GCS under v2; its "Pending Demands:" section lists ` {'CPU': 1.0}: 3+ pending tasks/actors` and
  ` {'CPU': 1.0} * 2 (STRICT_SPREAD): 1+ pending placement groups`.
- State API lists (`/api/v0/nodes|tasks|actors`): `data.result = {total, num_after_truncation,
  num_filtered, result: [...], partial_failure_warning, warnings}`, snake_case.
- `/nodes/{node_id}`: `data.detail.raylet.instanceId` is the node's `RAY_CLOUD_INSTANCE_ID` (the pod
  name on KubeRay; empty elsewhere).

Anything else raises `DashboardShapeError`, which the source reports as "unavailable: dashboard changed
shape", so a new Ray version that moves a field shows up as missing data, never as zero demand.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from controller.domain import Activity, NodeActivity
from controller.metrics.demand import ShapeDemand, normalize_shape, placement_group_shapes

__all__ = [
    "DashboardError",
    "DashboardShapeError",
    "DemandReport",
    "StateList",
    "classify_nodes",
    "parse_cluster_status",
    "parse_instance_id",
    "parse_state_list",
    "parse_status_text",
    "unwrap",
]

# Task states in which a task holds no worker on any node.
_NOT_ON_A_NODE = frozenset({"FINISHED", "FAILED", "PENDING_NODE_ASSIGNMENT", "PENDING_ARGS_AVAIL", "NIL"})
_TASK_LINE = re.compile(
    r"^\s*(?P<shape>\{.*\}): (?P<count>\d+)\+ pending tasks/actors"
    r"(?: \((?P<pg>\d+)\+ using placement groups\))?\s*$"
)
_PG_LINE = re.compile(
    r"^\s*(?P<bundles>\{.+?) \((?P<strategy>\w+)\): (?P<count>\d+)\+ pending placement groups\s*$"
)
_PG_BUNDLE = re.compile(r"(\{[^{}]*\}) \* (\d+)")


class DashboardError(Exception):
    """The dashboard answered with `result: false` (its own error report)."""


class DashboardShapeError(ValueError):
    """The answer is not in any shape this code knows (a changed Ray version, or not a dashboard)."""


def unwrap(body: Any, what: str) -> Mapping[str, Any]:
    """`data` of a dashboard envelope; DashboardError when Ray reports failure."""
    if not isinstance(body, dict) or ("data" not in body and "result" not in body):
        raise DashboardShapeError(f"{what}: not a dashboard envelope ({type(body).__name__})")
    if body.get("result") is False:
        raise DashboardError(f"{what}: {body.get('msg') or 'the dashboard reported a failure'}")
    data = body.get("data")
    if not isinstance(data, dict):
        raise DashboardShapeError(f"{what}: 'data' is {type(data).__name__}, not an object")
    return data


@dataclass(frozen=True)
class DemandReport:
    """Pending demand of one cluster as Ray reported it.

    `at` is when Ray computed it (the v1 report time), None when it was built on request (v2 text).
    `usage_by_node` (v1 only) is each node's logical resources `(used, total)`, evidence of activity.
    """

    demand: tuple[ShapeDemand, ...]
    format: str  # "v1" (JSON report) or "text" (`ray status` text, autoscaler v2)
    at: datetime | None = None
    usage_by_node: Mapping[str, Mapping[str, tuple[float, float]]] | None = None


def _pairs(value: Any, what: str) -> list[tuple[Any, int]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise DashboardShapeError(f"{what} is {type(value).__name__}, not a list")
    out = []
    for item in value:
        if not isinstance(item, list | tuple) or len(item) != 2 or not isinstance(item[0], dict):
            raise DashboardShapeError(f"{what} entry {item!r} is not [object, count]")
        out.append((item[0], int(item[1])))
    return out


def parse_cluster_status(data: Mapping[str, Any]) -> DemandReport | None:
    """The v1 JSON report, or the text when given `?format=1`; None when there is no v1 report (v2)."""
    cs = data.get("clusterStatus")
    if cs is None:
        return None
    if isinstance(cs, str):
        return parse_status_text(cs)
    if not isinstance(cs, dict):
        raise DashboardShapeError(f"clusterStatus is {type(cs).__name__}")
    lm = cs.get("loadMetricsReport")
    if not isinstance(lm, dict):
        raise DashboardShapeError("clusterStatus has no loadMetricsReport")
    if "resourceDemand" not in lm:
        raise DashboardShapeError("loadMetricsReport has no resourceDemand")
    demand: list[ShapeDemand] = []
    for shape, count in _pairs(lm.get("resourceDemand"), "resourceDemand"):
        norm = normalize_shape(shape)
        if norm:
            demand.append(ShapeDemand(norm, count))
    for pg, count in _pairs(lm.get("pgDemand"), "pgDemand"):
        bundles = _pairs(pg.get("bundles"), "pgDemand bundles")
        demand.extend(placement_group_shapes(bundles, str(pg.get("strategy", "PACK")), count))
    at = cs.get("time")
    usage = lm.get("usageByNode")
    return DemandReport(
        tuple(demand),
        "v1",
        datetime.fromtimestamp(float(at), UTC) if isinstance(at, int | float) else None,
        _usage(usage) if isinstance(usage, dict) else None,
    )


def _usage(raw: Mapping[str, Any]) -> dict[str, dict[str, tuple[float, float]]]:
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for node_id, resources in raw.items():
        if not isinstance(resources, dict):
            raise DashboardShapeError(f"usageByNode[{node_id}] is not an object")
        out[str(node_id)] = {
            str(k): (float(v[0]), float(v[1]))
            for k, v in resources.items()
            if isinstance(v, list | tuple) and len(v) == 2
        }
    return out


def _literal_shape(text: str) -> dict[str, float]:
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError) as e:
        raise DashboardShapeError(f"unreadable resource shape {text!r}") from e
    if not isinstance(value, dict):
        raise DashboardShapeError(f"resource shape {text!r} is not a dict")
    return {str(k): float(v) for k, v in value.items()}


def parse_status_text(text: str) -> DemandReport:
    """The "Pending Demands:" section of the `ray status` text (`?format=1`; autoscaler v1 and v2)."""
    lines = text.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "Pending Demands:")
    except StopIteration:
        raise DashboardShapeError("the status text has no 'Pending Demands:' section") from None
    demand: list[ShapeDemand] = []
    for line in lines[start + 1 :]:
        if not line.startswith(" ") or not line.strip():
            break
        stripped = line.strip()
        if stripped in ("(no resource demands)", "(none)"):
            continue
        if m := _TASK_LINE.match(line):
            shape = normalize_shape(_literal_shape(m["shape"]))
            count = int(m["count"]) - int(m["pg"] or 0)  # tasks inside placement groups: already reserved
            if shape and count > 0:
                demand.append(ShapeDemand(shape, count))
        elif m := _PG_LINE.match(line):
            bundles = [(_literal_shape(b), int(n)) for b, n in _PG_BUNDLE.findall(m["bundles"])]
            if not bundles:
                raise DashboardShapeError(f"unreadable placement-group demand {stripped!r}")
            demand.extend(placement_group_shapes(bundles, m["strategy"], int(m["count"])))
        else:
            raise DashboardShapeError(f"unknown pending-demand line {stripped!r}")
    return DemandReport(tuple(demand), "text")


@dataclass(frozen=True)
class StateList:
    """Rows of a State API list and whether they are all of them."""

    rows: tuple[Mapping[str, Any], ...]
    complete: bool
    events_dropped: int = 0
    note: str = ""


def parse_state_list(data: Mapping[str, Any], what: str) -> StateList:
    res = data.get("result")
    if not isinstance(res, dict) or not isinstance(res.get("result"), list):
        raise DashboardShapeError(f"{what}: data.result.result is not a list")
    rows = tuple(r for r in res["result"] if isinstance(r, dict))
    notes = []
    complete = True
    filtered = res.get("num_filtered")
    if isinstance(filtered, int) and filtered > len(rows):
        complete = False
        notes.append(f"{what} truncated to {len(rows)} of {filtered}")
    if res.get("partial_failure_warning"):
        complete = False
        notes.append(f"{what}: {str(res['partial_failure_warning'])[:160]}")
    dropped = 0
    total, after = res.get("total"), res.get("num_after_truncation")
    if isinstance(total, int) and isinstance(after, int) and total > after:
        dropped = total - after
        notes.append(f"{what}: {dropped} dropped at the source")
    return StateList(rows, complete, dropped, "; ".join(notes))


def parse_instance_id(data: Mapping[str, Any]) -> str | None:
    """`RAY_CLOUD_INSTANCE_ID` of a node from `/nodes/{id}` (None when Ray knows none)."""
    detail = data.get("detail")
    raylet = detail.get("raylet") if isinstance(detail, dict) else None
    if not isinstance(raylet, dict):
        raise DashboardShapeError("/nodes/{id}: no detail.raylet")
    value = raylet.get("instanceId")
    return str(value) if value else None


@dataclass
class _Evidence:
    tasks: int = 0
    actors: int = 0
    in_use: list[str] = field(default_factory=list)


def classify_nodes(
    nodes: StateList,
    tasks: StateList | str,
    actors: StateList | str,
    usage_by_node: Mapping[str, Mapping[str, tuple[float, float]]] | str | None,
    pod_names: Mapping[str, str | None],
) -> tuple[NodeActivity, ...]:
    """Idle/busy/unknown per ALIVE node; a str in place of a list is the reason it is missing.

    BUSY: a task holds a worker on the node, an actor is alive there, or a logical resource is in use
    there (v1 report). IDLE: none of that, and the task and actor lists are complete (task events
    dropped at the source count as incomplete unless the per-node usage is known too). UNKNOWN
    otherwise, with the reason in `detail`.
    """
    ev: dict[str, _Evidence] = {}
    for t in tasks.rows if isinstance(tasks, StateList) else ():
        node = t.get("node_id")
        if node and str(t.get("state", "")) not in _NOT_ON_A_NODE:
            ev.setdefault(str(node), _Evidence()).tasks += 1
    for a in actors.rows if isinstance(actors, StateList) else ():
        node = a.get("node_id")
        if node and a.get("state", "ALIVE") == "ALIVE":
            ev.setdefault(str(node), _Evidence()).actors += 1
    if isinstance(usage_by_node, Mapping):
        for node, res in usage_by_node.items():
            used = sorted(k for k, (u, _) in res.items() if u > 0)
            if used:
                ev.setdefault(node, _Evidence()).in_use = used
    gaps = []
    if isinstance(tasks, str):
        gaps.append(f"tasks unavailable ({tasks})")
    elif not tasks.complete or (tasks.events_dropped and not isinstance(usage_by_node, Mapping)):
        gaps.append(tasks.note)
    if isinstance(actors, str):
        gaps.append(f"actors unavailable ({actors})")
    elif not actors.complete:
        gaps.append(actors.note)
    out = []
    for n in nodes.rows:
        if str(n.get("state", "ALIVE")) != "ALIVE":
            continue
        node_id = str(n.get("node_id", ""))
        e = ev.get(node_id, _Evidence())
        parts = []
        if e.tasks:
            parts.append(f"{e.tasks} task(s) on the node")
        if e.actors:
            parts.append(f"{e.actors} alive actor(s)")
        if e.in_use:
            parts.append(f"in use: {', '.join(e.in_use)}")
        if parts:
            activity, detail = Activity.BUSY, "; ".join(parts)
        elif gaps:
            activity, detail = Activity.UNKNOWN, "; ".join(gaps)
        else:
            activity, detail = Activity.IDLE, "no tasks, no actors, no resources in use"
        out.append(
            NodeActivity(
                node_id=node_id,
                node_ip=str(n.get("node_ip", "")),
                activity=activity,
                pod_name=pod_names.get(node_id),
                is_head=bool(n.get("is_head_node", False)),
                alive=True,
                running_tasks=e.tasks,
                actors=e.actors,
                detail=detail,
            )
        )
    return tuple(out)
