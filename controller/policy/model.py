"""Pydantic models of the policy documents (contracts.md section 2).

Every model rejects unknown fields, so a typo (`maxReplica`) is an error with its path rather than a
silently ignored setting. Field names are camelCase in YAML (HPA/KEDA names where they mean the same
thing) and snake_case in Python.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from controller.domain import SignalSpec, SignalType
from controller.policy.durations import parse_duration

API_VERSION = "rayops.io/v1alpha1"
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


class PolicyValueError(ValueError):
    """A rule a document breaks, in the parts every front end prints: `what (got X; expected Y)`.

    `field` (camelCase path elements below the validated model) lets a model-level rule point at the
    field to fix, e.g. `minReplicas` rather than the whole `spec`; the loader appends it to the
    error's location. The exception text is already the final message.
    """

    def __init__(self, what: str, got: str, expected: str, field: tuple[str | int, ...] = ()) -> None:
        self.what, self.got, self.expected, self.field = what, got, expected, field
        super().__init__(f"{what} (got {got}; expected {expected})")


def _min_max(min_replicas: int | None, max_replicas: int | None) -> None:
    if min_replicas is not None and max_replicas is not None and min_replicas > max_replicas:
        raise PolicyValueError(
            f"minReplicas {min_replicas} > maxReplicas {max_replicas}",
            str(min_replicas),
            f"at most maxReplicas {max_replicas}",
            ("minReplicas",),
        )


def _positive_duration(v: str) -> str:
    expected = "a duration longer than 0, e.g. 90s, 15m, 12h, 7d, 1h30m"
    try:
        d = parse_duration(v)
    except ValueError:
        raise PolicyValueError("not a duration", repr(v), expected) from None
    if d <= timedelta(0):
        raise PolicyValueError("must be longer than 0", repr(v), expected)
    return v


def _first_duplicate(names: list[str]) -> int | None:
    seen: set[str] = set()
    for i, n in enumerate(names):
        if n in seen:
            return i
        seen.add(n)
    return None


class Strict(BaseModel):
    model_config = ConfigDict(
        extra="forbid", alias_generator=to_camel, populate_by_name=True, frozen=True, validate_default=True
    )


def _duration(v: str) -> str:
    parse_duration(v)
    return v


Duration = Annotated[str, Field(description="e.g. 90s, 15m, 12h, 7d")]


# --- ScalingPolicy -----------------------------------------------------------------------------


class Selector(Strict):
    """Which clusters a policy applies to. Globs (`ray-*`) on namespace and cluster name."""

    namespaces: list[str] = Field(default_factory=lambda: ["*"])
    clusters: list[str] = Field(default_factory=lambda: ["*"])
    match_labels: dict[str, str] = Field(default_factory=dict)


class Target(Strict):
    """Exactly one of the HPA target kinds."""

    average_utilization: float | None = Field(default=None, gt=0, le=100)
    average_value: float | None = Field(default=None, gt=0)
    value: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _exactly_one(self) -> Target:
        given = [n for n in ("average_utilization", "average_value", "value") if getattr(self, n) is not None]
        if len(given) != 1:
            raise PolicyValueError(
                "a target needs exactly one kind",
                " and ".join(to_camel(n) for n in given) or "none",
                "one of averageUtilization, averageValue, value",
            )
        return self


class PendingDemandSignal(Strict):
    """Work Ray cannot place yet, per resource shape (from the Ray dashboard)."""

    name: str
    type: Literal["pendingDemand"]
    resource: str = "CPU"
    # KEDA's rule: active only when strictly above the threshold, so the default 0 wakes a group at
    # zero for any pending work (a default of 1 would leave a single 1-CPU task waiting forever).
    activation_threshold: float = Field(default=0, ge=0)

    def spec(self) -> SignalSpec:
        return SignalSpec(SignalType.PENDING_DEMAND, resource=self.resource)


class UtilizationSignal(Strict):
    """Physical or logical utilization of the group's workers, HPA-style ratio to a target."""

    name: str
    type: Literal["utilization"]
    resource: str = "CPU"
    target: Target
    activation_threshold: float = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _utilization_target(self) -> UtilizationSignal:
        if self.target.average_utilization is None:
            raise PolicyValueError(
                "a utilization signal needs target.averageUtilization",
                "averageValue" if self.target.average_value is not None else "value",
                "averageUtilization (percent, 1-100)",
                ("target",),
            )
        return self

    def spec(self) -> SignalSpec:
        return SignalSpec(SignalType.UTILIZATION, resource=self.resource)


class PromQLSignal(Strict):
    """Any PromQL returning a vector with the mapping labels (contracts.md section 5)."""

    name: str
    type: Literal["promql"]
    query: str = Field(min_length=1)
    target: Target
    activation_threshold: float = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _value_target(self) -> PromQLSignal:
        if self.target.average_utilization is not None:
            raise PolicyValueError(
                "a promql signal takes target.averageValue or target.value",
                "averageUtilization",
                "averageValue or value",
                ("target",),
            )
        return self

    def spec(self) -> SignalSpec:
        return SignalSpec(SignalType.PROMQL, query=self.query)


Signal = Annotated[PendingDemandSignal | UtilizationSignal | PromQLSignal, Field(discriminator="type")]


class RatePolicy(Strict):
    type: Literal["Pods", "Percent"]
    value: int = Field(gt=0)
    period_seconds: int = Field(ge=1, le=1800)


class ScalingRules(Strict):
    stabilization_window_seconds: int = Field(default=0, ge=0, le=3600)
    select_policy: Literal["Max", "Min", "Disabled"] = "Max"
    policies: list[RatePolicy] = Field(default_factory=list)
    tolerance: float | None = Field(default=None, ge=0, lt=1)


def _default_scale_up() -> ScalingRules:
    return ScalingRules(
        stabilization_window_seconds=0,
        select_policy="Max",
        policies=[
            RatePolicy(type="Percent", value=100, period_seconds=15),
            RatePolicy(type="Pods", value=4, period_seconds=15),
        ],
    )


def _default_scale_down() -> ScalingRules:
    return ScalingRules(
        stabilization_window_seconds=300,
        select_policy="Max",
        policies=[RatePolicy(type="Percent", value=100, period_seconds=15)],
    )


class Behavior(Strict):
    """HPA's `behavior`, with HPA's defaults when a direction is left out."""

    scale_up: ScalingRules = Field(default_factory=_default_scale_up)
    scale_down: ScalingRules = Field(default_factory=_default_scale_down)


class Budget(Strict):
    """Worker-hours and GPU-hours per rolling window. When used up, the group is capped at
    `exhaustedMaxReplicas` (a hard cap: it overrides minReplicas) until usage falls out of the window."""

    worker_hours: float | None = Field(default=None, gt=0)
    gpu_hours: float | None = Field(default=None, gt=0)
    window: str = "7d"
    exhausted_max_replicas: int = Field(default=0, ge=0)

    @field_validator("window")
    @classmethod
    def _window(cls, v: str) -> str:
        return _positive_duration(v)

    @model_validator(mode="after")
    def _something(self) -> Budget:
        if self.worker_hours is None and self.gpu_hours is None:
            raise PolicyValueError("a budget needs a limit", "neither", "workerHours, gpuHours or both")
        return self


class Schedule(Strict):
    """A recurring window (cron start + duration, in an IANA timezone) that overrides bounds or budget."""

    name: str
    cron: str
    duration: str
    timezone: str = "UTC"
    min_replicas: int | None = Field(default=None, ge=0)
    max_replicas: int | None = Field(default=None, ge=0)
    budget: Budget | None = None

    @field_validator("duration")
    @classmethod
    def _duration(cls, v: str) -> str:
        return _positive_duration(v)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as e:
            raise PolicyValueError(
                "unknown IANA timezone", repr(v), "a name like America/New_York, Europe/Paris or UTC"
            ) from e
        return v

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str) -> str:
        from controller.policy.schedule import cron_trigger  # crontab weekdays (0/7 = Sunday)

        if len(v.split()) != 5:
            raise PolicyValueError(
                f"cron needs 5 fields, has {len(v.split())}", repr(v), "minute hour day month weekday"
            )
        try:
            cron_trigger(v, "UTC")
        except ValueError as e:
            raise PolicyValueError(f"invalid cron: {e}", repr(v), "minute hour day month weekday") from e
        return v

    @model_validator(mode="after")
    def _overrides_something(self) -> Schedule:
        if self.min_replicas is None and self.max_replicas is None and self.budget is None:
            raise PolicyValueError(
                "a schedule must override something", "no override", "minReplicas, maxReplicas or budget"
            )
        _min_max(self.min_replicas, self.max_replicas)
        return self


class OnMissingData(Strict):
    action: Literal["hold", "fallback"] = "hold"
    replicas: int | None = Field(default=None, ge=0)
    after_failures: int = Field(default=1, ge=1)

    @model_validator(mode="after")
    def _fallback_needs_replicas(self) -> OnMissingData:
        if self.action == "fallback" and self.replicas is None:
            raise PolicyValueError(
                "action fallback needs replicas",
                "nothing",
                "the count to run while data is missing",
                ("replicas",),
            )
        return self


class ScalingPolicySpec(Strict):
    selector: Selector = Field(default_factory=Selector)
    worker_groups: list[str] = Field(default_factory=lambda: ["*"])
    mode: Literal["owner", "bounds"] = "owner"
    priority: int = 0
    min_replicas: int = Field(default=0, ge=0)
    max_replicas: int = Field(ge=0)
    signals: list[Signal] = Field(default_factory=list)
    combine: Literal["max"] = "max"
    tolerance: float = Field(default=0.1, ge=0, lt=1)
    behavior: Behavior = Field(default_factory=Behavior)
    schedules: list[Schedule] = Field(default_factory=list)
    budget: Budget | None = None
    on_missing_data: OnMissingData = Field(default_factory=OnMissingData)
    dry_run: bool = False
    paused: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> ScalingPolicySpec:
        _min_max(self.min_replicas, self.max_replicas)
        for what, items in (("signal", self.signals), ("schedule", self.schedules)):
            names = [s.name for s in items]
            i = _first_duplicate(names)
            if i is not None:
                raise PolicyValueError(
                    f"duplicate {what} name",
                    repr(names[i]),
                    f"each {what} named once",
                    (f"{what}s", i, "name"),
                )
        return self


# --- ClusterProfile and AccessPolicy (fields grow with issues 5 and 7) ---------------------------


QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti)?$")


def _quantity(v: str) -> str:
    if not QUANTITY.match(v):
        raise ValueError(f"'{v}' is not a Kubernetes quantity (expected e.g. 500m, 2, 4Gi)")
    return v


class NodeResources(Strict):
    """Requests = limits for a Ray pod (Ray sizes itself from the limits)."""

    cpu: str = "1"
    memory: str = "4Gi"
    gpu: int = Field(default=0, ge=0)

    @field_validator("cpu", "memory")
    @classmethod
    def _q(cls, v: str) -> str:
        return _quantity(v)


class WorkerGroupProfile(NodeResources):
    """One worker group of clusters made from this profile; a GPU group has `gpu > 0`."""

    name: str
    min_workers: int = Field(default=0, ge=0)
    default_workers: int = Field(default=0, ge=0)
    max_workers: int = Field(default=4, ge=0)
    ray_resources: dict[str, float] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _dns(cls, v: str) -> str:
        if not DNS_LABEL.match(v):
            raise ValueError(f"'{v}' is not a valid group name (lowercase letters, digits and '-')")
        return v

    @model_validator(mode="after")
    def _order(self) -> WorkerGroupProfile:
        if not self.min_workers <= self.default_workers <= self.max_workers:
            raise ValueError(
                "expected minWorkers <= defaultWorkers <= maxWorkers "
                f"(got {self.min_workers}, {self.default_workers}, {self.max_workers})"
            )
        return self


class ClusterProfileSpec(Strict):
    """What a requested cluster looks like; rendered to a RayCluster (KubeRay) or local processes."""

    description: str = ""
    ray_image: str = "docker.io/rayproject/ray:2.60.0-py311"
    ray_version: str = "2.60.0"
    head: NodeResources = Field(default_factory=NodeResources)
    worker_groups: list[WorkerGroupProfile] = Field(
        default_factory=lambda: [WorkerGroupProfile(name="cpu", default_workers=0, max_workers=4)],
        min_length=1,
    )
    default_ttl: str = "8h"
    max_ttl: str = "7d"
    scaling_policy: str | None = None
    data_connection: str | None = None  # an ODH data connection: Secret name with S3 credentials
    enable_ingress: bool = False

    @field_validator("default_ttl", "max_ttl")
    @classmethod
    def _ttl(cls, v: str) -> str:
        if parse_duration(v) <= timedelta(0):
            raise ValueError("a time-to-live must be longer than 0")
        return v

    @model_validator(mode="after")
    def _groups(self) -> ClusterProfileSpec:
        names = [g.name for g in self.worker_groups]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate worker group names: {', '.join(dupes)}")
        if parse_duration(self.default_ttl) > parse_duration(self.max_ttl):
            raise ValueError(f"defaultTtl {self.default_ttl} is longer than maxTtl {self.max_ttl}")
        return self

    @property
    def cpu_group(self) -> WorkerGroupProfile | None:
        return next((g for g in self.worker_groups if g.gpu == 0), None)

    @property
    def gpu_group(self) -> WorkerGroupProfile | None:
        return next((g for g in self.worker_groups if g.gpu > 0), None)


SUBJECT_KINDS = ("slackUser", "slackGroup", "matrixUser", "kubernetesUser", "kubernetesGroup", "consoleUser")


class Subject(Strict):
    """Exactly one identity: a chat user or group, a Kubernetes user or group (the notebook path of
    issue 9), or a console user (laptop mode). The value `"*"` matches every user of that kind."""

    slack_user: str | None = Field(default=None, min_length=1)
    slack_group: str | None = Field(default=None, min_length=1)
    matrix_user: str | None = Field(default=None, min_length=1)
    kubernetes_user: str | None = Field(default=None, min_length=1)
    kubernetes_group: str | None = Field(default=None, min_length=1)
    console_user: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _exactly_one(self) -> Subject:
        given = [k for k in SUBJECT_KINDS if getattr(self, _SNAKE[k]) is not None]
        if len(given) != 1:
            raise PolicyValueError(
                "a subject names exactly one identity",
                " and ".join(given) or "none",
                f"one of {', '.join(SUBJECT_KINDS)}",
            )
        return self

    @property
    def kind(self) -> str:
        """The camelCase key given (`slackUser`...)."""
        return next(k for k in SUBJECT_KINDS if getattr(self, _SNAKE[k]) is not None)

    @property
    def value(self) -> str:
        v = next(getattr(self, _SNAKE[k]) for k in SUBJECT_KINDS if getattr(self, _SNAKE[k]) is not None)
        assert isinstance(v, str)
        return v


_SNAKE = {k: re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), k) for k in SUBJECT_KINDS}


class AccessLimits(Strict):
    """What one person may have without an approver. A request over any of these is not refused: it
    waits for an approver (issue 7). `workersPerCluster` counts the workers of all groups together,
    `gpusPerCluster` the GPUs (GPU workers x GPUs per worker)."""

    clusters_per_user: int = Field(default=2, ge=0)
    workers_per_cluster: int = Field(default=4, ge=0)
    gpus_per_cluster: int = Field(default=0, ge=0)
    max_ttl: str | None = None

    @field_validator("max_ttl")
    @classmethod
    def _ttl(cls, v: str | None) -> str | None:
        return None if v is None else _positive_duration(v)


class AccessRule(Strict):
    """Who (`subjects`) may use which namespaces (globs) with which profiles (names or globs), within
    which limits. A rule with no subjects or no namespaces grants nothing. `devops: true` adds the
    DevOps commands (pause-all, resume-all, release), rights over every cluster in the rule's
    namespaces whoever requested it, and approving requests."""

    subjects: list[Subject] = Field(default_factory=list)
    namespaces: list[str] = Field(default_factory=list)
    profiles: list[str] = Field(default_factory=list)
    limits: AccessLimits = Field(default_factory=AccessLimits)
    devops: bool = False


class SlackDevOps(Strict):
    channel: str = Field(min_length=1)


class MatrixDevOps(Strict):
    room: str = Field(min_length=1)


class DevOpsChannels(Strict):
    """Where approvals and alerts go, per platform (the console prints them in laptop mode)."""

    slack: SlackDevOps | None = None
    matrix: MatrixDevOps | None = None


class AccessPolicySpec(Strict):
    devops: DevOpsChannels = Field(default_factory=DevOpsChannels)
    approvers: list[Subject] = Field(default_factory=list)
    request_expiry: str = "24h"
    rules: list[AccessRule] = Field(default_factory=list)

    @field_validator("request_expiry")
    @classmethod
    def _expiry(cls, v: str) -> str:
        return _positive_duration(v)


# --- Envelope ------------------------------------------------------------------------------------


class Metadata(Strict):
    name: str
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _dns(cls, v: str) -> str:
        if not DNS_LABEL.match(v):
            raise PolicyValueError(
                "not a valid name",
                repr(v),
                "lowercase letters, digits and '-', at most 63, starting and ending with a letter or digit",
            )
        return v


class _Doc(Strict):
    api_version: Literal["rayops.io/v1alpha1"]
    metadata: Metadata


class ScalingPolicy(_Doc):
    kind: Literal["ScalingPolicy"]
    spec: ScalingPolicySpec

    @property
    def name(self) -> str:
        return self.metadata.name


class ClusterProfile(_Doc):
    kind: Literal["ClusterProfile"]
    spec: ClusterProfileSpec

    @property
    def name(self) -> str:
        return self.metadata.name


class AccessPolicy(_Doc):
    kind: Literal["AccessPolicy"]
    spec: AccessPolicySpec

    @property
    def name(self) -> str:
        return self.metadata.name


Document = Annotated[ScalingPolicy | ClusterProfile | AccessPolicy, Field(discriminator="kind")]
KINDS = ("ScalingPolicy", "ClusterProfile", "AccessPolicy")
