"""The values every part of rayops passes around: what was observed, what was decided, and why.

Plain frozen dataclasses with no I/O, so the decision function, the simulator, the backends and the
bot can share them without importing each other. Extend by adding fields with defaults or enum
members; never rename (annotations and journals written by older versions must still parse).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


@dataclass(frozen=True, order=True)
class ClusterRef:
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, order=True)
class GroupRef:
    """One worker group of one Ray cluster: the unit rayops scales."""

    namespace: str
    cluster: str
    group: str

    @property
    def cluster_ref(self) -> ClusterRef:
        return ClusterRef(self.namespace, self.cluster)

    def __str__(self) -> str:
        return f"{self.namespace}/{self.cluster}/{self.group}"


class SignalType(StrEnum):
    PENDING_DEMAND = "pendingDemand"
    UTILIZATION = "utilization"
    PROMQL = "promql"


@dataclass(frozen=True)
class SignalSpec:
    """What a metrics source must fetch, independent of which policy asked.

    Hashable, so a source can fetch each distinct signal once per tick for all clusters together.
    """

    type: SignalType
    resource: str | None = None  # CPU, GPU, memory or a custom Ray resource
    query: str | None = None  # PromQL, for SignalType.PROMQL

    @property
    def key(self) -> str:
        return f"{self.type}:{self.resource or ''}:{self.query or ''}"


@dataclass(frozen=True)
class Sample:
    """One signal's value for one group, or an explicit reason why there is none.

    A missing value is never 0: `value is None` and `unavailable` says why (timeout, HTTP error,
    no series, stale sample, NaN, missing mapping labels...).
    """

    value: float | None
    at: datetime | None
    source: str
    unavailable: str | None = None

    @property
    def available(self) -> bool:
        return self.unavailable is None and self.value is not None

    @staticmethod
    def ok(value: float, at: datetime, source: str) -> Sample:
        return Sample(value=value, at=at, source=source)

    @staticmethod
    def missing(reason: str, source: str, at: datetime | None = None) -> Sample:
        return Sample(value=None, at=at, source=source, unavailable=reason)


class Activity(StrEnum):
    IDLE = "idle"
    BUSY = "busy"
    UNKNOWN = "unknown"  # treated as busy wherever removal is concerned


@dataclass(frozen=True)
class NodeActivity:
    """Whether a Ray node runs anything, as the metrics layer saw it (contracts.md section 5)."""

    node_id: str
    node_ip: str
    activity: Activity
    pod_name: str | None = None  # RAY_CLOUD_INSTANCE_ID on Kubernetes
    is_head: bool = False
    alive: bool = True
    running_tasks: int = 0
    actors: int = 0
    detail: str = ""


@dataclass(frozen=True)
class Worker:
    """One worker of a group as the backend sees it: a pod, or a local `ray start --block` process."""

    name: str
    activity: Activity = Activity.UNKNOWN
    ready: bool = True
    node_id: str | None = None
    ip: str | None = None
    started_at: datetime | None = None


@dataclass(frozen=True)
class ManualPin:
    """A count set from chat (`scale NAME N`), honoured until `resume` or `until`."""

    group: str
    replicas: int
    until: datetime | None = None
    by: str | None = None


@dataclass(frozen=True)
class GroupObservation:
    """Everything the decision function may know about one group at one tick."""

    ref: GroupRef
    current: int  # the count the backend is asked to run now (spec replicas, or local target)
    min_replicas: int  # bounds as stored on the cluster
    max_replicas: int
    ready: int = 0
    workers: tuple[Worker, ...] = ()
    pending_deletes: tuple[str, ...] = ()  # removals asked for earlier, not finished yet
    samples: Mapping[str, Sample] = field(default_factory=dict)  # keyed by the policy's signal name
    worker_resources: Mapping[str, float] = field(default_factory=lambda: {"CPU": 1.0})
    paused: bool = False  # rayops.io/paused on the cluster
    global_pause: bool = False  # the global switch (config or `pause-all`)
    pin: ManualPin | None = None
    kueue_queue: str | None = None
    in_tree_autoscaling: bool = False


class Action(StrEnum):
    UP = "up"
    DOWN = "down"
    HOLD = "hold"


class ReasonCode(StrEnum):
    """Stable, greppable codes; safe as metric labels. Add members, never rename."""

    SIGNAL_PROPOSAL = "SIGNAL_PROPOSAL"
    BACKLOG_PENDING = "BACKLOG_PENDING"
    METRIC_ABOVE_TARGET = "METRIC_ABOVE_TARGET"
    METRIC_BELOW_TARGET = "METRIC_BELOW_TARGET"
    WITHIN_TOLERANCE = "WITHIN_TOLERANCE"
    ACTIVATION_BELOW_THRESHOLD = "ACTIVATION_BELOW_THRESHOLD"
    STABILIZATION = "STABILIZATION"
    RATE_LIMITED = "RATE_LIMITED"
    SCHEDULE = "SCHEDULE"
    BUDGET = "BUDGET"
    AT_MAX = "AT_MAX"
    AT_MIN = "AT_MIN"
    BOUNDS_MODE_CAP = "BOUNDS_MODE_CAP"
    MANUAL_PIN = "MANUAL_PIN"
    PAUSED = "PAUSED"
    GLOBAL_PAUSE = "GLOBAL_PAUSE"
    KUEUE_MANAGED = "KUEUE_MANAGED"
    INTREE_AUTOSCALER_CONFLICT = "INTREE_AUTOSCALER_CONFLICT"
    METRICS_UNAVAILABLE = "METRICS_UNAVAILABLE"
    FALLBACK = "FALLBACK"
    BUSY_WORKERS_PROTECTED = "BUSY_WORKERS_PROTECTED"
    BACKEND_CONVERGING = "BACKEND_CONVERGING"
    DRY_RUN = "DRY_RUN"
    NO_CHANGE = "NO_CHANGE"
    MANUAL_PIN_EXPIRED = "MANUAL_PIN_EXPIRED"  # a pin past its `until`, ignored
    BOUNDS_SET = "BOUNDS_SET"  # bounds mode: new minReplicas/maxReplicas to write


JSONScalar = str | int | float | bool | None


@dataclass(frozen=True)
class Reason:
    code: ReasonCode
    message: str
    data: Mapping[str, JSONScalar] = field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    """The outcome for one group at one tick, including a hold, with the reasons in order."""

    ref: GroupRef
    policy: str
    mode: str  # "owner" (write replicas) or "bounds" (write min/max only)
    current: int
    target: int
    action: Action
    reasons: tuple[Reason, ...]
    remove: tuple[str, ...] = ()  # idle workers chosen for removal (owner mode scale-down)
    min_replicas: int | None = None  # bounds mode: the bounds to write
    max_replicas: int | None = None
    dry_run: bool = False
    at: datetime | None = None

    @property
    def codes(self) -> tuple[ReasonCode, ...]:
        return tuple(r.code for r in self.reasons)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ref"] = str(self.ref)
        d["action"] = str(self.action)
        d["at"] = self.at.isoformat() if self.at else None
        d["reasons"] = [
            {"code": str(r.code), "message": r.message, "data": dict(r.data)} for r in self.reasons
        ]
        d["remove"] = list(self.remove)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> Decision:
        ns, cluster, group = str(d["ref"]).split("/", 2)
        return Decision(
            ref=GroupRef(ns, cluster, group),
            policy=d["policy"],
            mode=d["mode"],
            current=int(d["current"]),
            target=int(d["target"]),
            action=Action(d["action"]),
            reasons=tuple(
                Reason(ReasonCode(r["code"]), r["message"], dict(r.get("data", {}))) for r in d["reasons"]
            ),
            remove=tuple(d.get("remove", ())),
            min_replicas=d.get("min_replicas"),
            max_replicas=d.get("max_replicas"),
            dry_run=bool(d.get("dry_run", False)),
            at=datetime.fromisoformat(d["at"]) if d.get("at") else None,
        )
