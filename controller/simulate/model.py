"""The values the engine, the baselines and the policy adapter share: the model's parameters, a
controller's view of the group, its command, and one run's raw result."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol

from controller.simulate.trace import SimulationInputError, Trace

MILLI = 1000  # resources are integers in thousandths, so packing arithmetic is exact


@dataclass(frozen=True)
class Model:
    """The simulation's parameters; every report prints them (contracts.md section 8)."""

    startup_s: float = 30.0  # a pod on Kubernetes; `--startup 5` for laptop mode
    worker_cpus: float = 1.0
    worker_gpus: float | None = None  # None: 1 when the trace has GPU tasks, else 0
    policy_interval_s: float = 15.0  # how often a policy's decide() runs
    max_replicas: int | None = None  # overrides every policy's maxReplicas and caps the baselines
    drain_limit_s: float = 3 * 3600.0  # how long past the trace's end a run may take to finish its queue
    samples: int = 4000  # points of the time series kept for plots

    def for_trace(self, trace: Trace) -> Model:
        """Resolve `worker_gpus` and check that every task fits on one worker."""
        gpus = self.worker_gpus if self.worker_gpus is not None else (1.0 if trace.has_gpus else 0.0)
        for t in trace.tasks:
            if t.cpus > self.worker_cpus or t.gpus > gpus:
                raise SimulationInputError(
                    f"{trace.name}, line {t.row}: a task needs {t.cpus:g} CPU and {t.gpus:g} GPU "
                    f"but a worker has {self.worker_cpus:g} CPU and {gpus:g} GPU "
                    "(set --worker-cpus / --worker-gpus)"
                )
        return Model(
            self.startup_s,
            self.worker_cpus,
            gpus,
            self.policy_interval_s,
            self.max_replicas,
            self.drain_limit_s,
            self.samples,
        )

    def units(self, cpus: float, gpus: float) -> float:
        """Demand in workers with perfect packing: the larger of the CPU and GPU shares."""
        g = gpus / self.worker_gpus if self.worker_gpus else 0.0
        return max(cpus / self.worker_cpus, g)

    def to_dict(self) -> dict[str, object]:
        return {
            "startup_s": self.startup_s,
            "worker_cpus": self.worker_cpus,
            "worker_gpus": self.worker_gpus,
            "policy_interval_s": self.policy_interval_s,
            "max_replicas": self.max_replicas,
            "idle_removal": "immediate once decided",
            "drain_limit_s": self.drain_limit_s,
        }


@dataclass(frozen=True)
class WorkerView:
    name: str
    ready: bool
    busy: bool
    idle_since: float | None  # when it last became idle (ready and running nothing)
    created_s: float


@dataclass(frozen=True)
class GroupView:
    """What a controller may see at one decision time: the simulated group, as a snapshot."""

    t: float
    workers: tuple[WorkerView, ...]
    queued_tasks: int
    queued_cpus: float
    queued_gpus: float
    running_cpus: float
    running_gpus: float
    model: Model

    @property
    def count(self) -> int:
        return len(self.workers)

    @property
    def ready(self) -> int:
        return sum(1 for w in self.workers if w.ready)

    def need(self, cpus: float, gpus: float) -> int:
        """Workers needed for this much demand with perfect packing."""
        n = math.ceil(cpus / self.model.worker_cpus - 1e-9)
        if self.model.worker_gpus:
            n = max(n, math.ceil(gpus / self.model.worker_gpus - 1e-9))
        return max(n, 0)


@dataclass(frozen=True)
class Command:
    """Set the group to `target` workers; remove the named workers first (honoured only if idle)."""

    target: int
    remove: tuple[str, ...] = ()


class Controller(Protocol):
    """A policy or a baseline as the engine drives it."""

    name: str
    interval_s: float | None  # None: called never (a static pool)

    def initial(self) -> int:
        """Workers already ready at t=0 (the group existed before the trace started)."""
        ...

    def step(self, view: GroupView) -> Command: ...


@dataclass
class RunResult:
    name: str
    end_s: float  # cost is counted over [0, end_s]
    ready_seconds: float  # integral of ready workers over time
    waits: list[float]  # per task, seconds from arrival to start (censored at end_s if never started)
    unserved_demand_s: float  # integral of queued demand in worker units
    unfinished: int  # tasks not started by end_s (only when the drain limit was hit)
    actions: list[tuple[float, int]]  # (time, +1 up / -1 down) for each decision that changed the count
    series_t: list[float] = field(default_factory=list)
    series_demand: list[float] = field(default_factory=list)  # running + queued, in worker units
    series_ready: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
