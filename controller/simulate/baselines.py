"""The four baselines of contracts.md section 8, beside which every policy is reported.

- `static-peak`: a constant pool equal to the peak concurrent demand (capped by maxReplicas), ready from
  the start: what a team does without an autoscaler.
- `ray-like`: Ray's own autoscaler, simplified: every 5 s, enough workers for running + pending demand (at
  most maxReplicas); a worker idle for 60 s is removed.
- `hpa-like`: a Kubernetes HPA on CPU utilization: every 15 s, `ceil(current * utilization / 0.7)` with
  tolerance 0.1, HPA's default behavior (scale-up by max(100 %, 4 pods) per 15 s, scale-down
  stabilization window 300 s), at least 1 worker.
- `oracle`: not a controller but a bound: the least worker-time any controller can spend while every task
  starts the instant it arrives (see `oracle`).

"Concurrent demand" here is the zero-wait demand: at time t, the tasks with arrival <= t < arrival +
duration, converted to workers with perfect packing: `max(ceil(CPUs / worker CPUs), ceil(GPUs / worker
GPUs))`.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from controller.simulate.model import MILLI, Command, GroupView, Model, RunResult
from controller.simulate.trace import Trace

RAY_INTERVAL_S = 5.0
RAY_IDLE_TIMEOUT_S = 60.0
HPA_INTERVAL_S = 15.0
HPA_TARGET = 0.7
HPA_TOLERANCE = 0.1
HPA_DOWN_WINDOW_S = 300.0
HPA_UP_PODS = 4  # scale-up by max(100 %, 4 pods) per 15 s


def demand_steps(trace: Trace, model: Model) -> list[tuple[float, int]]:
    """The zero-wait concurrent demand in workers, as a step function: `(t, workers from t on)`.

    Tasks occupy `[arrival, arrival + duration)`: a task ending at t and one arriving at t do not overlap,
    exactly as in the engine (completions are processed before arrivals).
    """
    wc = round(model.worker_cpus * MILLI)
    wg = round((model.worker_gpus or 0.0) * MILLI)
    deltas: dict[float, list[int]] = {}
    for t in trace.tasks:
        c, g = round(t.cpus * MILLI), round(t.gpus * MILLI)
        for at, sign in ((t.arrival_s, 1), (t.arrival_s + t.duration_s, -1)):
            d = deltas.setdefault(at, [0, 0])
            d[0] += sign * c
            d[1] += sign * g
    steps: list[tuple[float, int]] = [(0.0, 0)]
    cpus = gpus = 0
    for at in sorted(deltas):
        cpus += deltas[at][0]
        gpus += deltas[at][1]
        need = -(-cpus // wc)
        if wg:
            need = max(need, -(-gpus // wg))
        if at == steps[-1][0]:
            steps[-1] = (at, need)
        elif need != steps[-1][1]:
            steps.append((at, need))
    return steps


@dataclass(frozen=True)
class OracleResult:
    worker_seconds: float
    peak: int
    steps: list[tuple[float, int]]


def oracle(trace: Trace, model: Model) -> OracleResult:
    """A true lower bound on worker-time for zero queue wait, knowing every arrival in advance.

    If every task starts on arrival, then at each instant t the ready workers must hold all running tasks,
    so `ready(t) * worker_cpus >= CPUs(t)` and `ready(t) * worker_gpus >= GPUs(t)`, hence `ready(t) >=
    need(t)` (the concurrent demand above). Integrating over the trace's window gives
    `worker-time >= integral of need(t) dt`: the bound holds for every controller, whatever its start-up
    delay or packing, and this oracle reaches it by having exactly need(t) workers ready at every
    instant (no start-up delay, perfect packing). It is not capped by maxReplicas: a cap that forbids
    zero wait is the policy's problem, and the bound shows what serving all demand costs.
    """
    steps = demand_steps(trace, model)
    area = 0.0
    for (t0, n), (t1, _) in zip(steps, [*steps[1:], (trace.end_s, 0)], strict=True):
        area += n * max(0.0, min(t1, trace.end_s) - t0)
    return OracleResult(area, max(n for _, n in steps), steps)


def oracle_run(trace: Trace, model: Model) -> RunResult:
    """The oracle as a run, so reports treat it like the others: zero waits, one action per step change."""
    o = oracle(trace, model)
    actions = [
        (t, 1 if n > prev else -1)
        for (t, n), (_, prev) in zip(o.steps[1:], o.steps[:-1], strict=True)
        if n != prev
    ]
    if o.steps[0][1] > 0:
        actions.insert(0, (0.0, 1))
    res = RunResult("oracle", trace.end_s, o.worker_seconds, [0.0] * len(trace.tasks), 0.0, 0, actions)
    step = max(trace.end_s, 1.0) / max(model.samples, 1)
    j = 0
    s = 0.0
    while s <= trace.end_s:
        while j + 1 < len(o.steps) and o.steps[j + 1][0] <= s:
            j += 1
        res.series_t.append(s)
        res.series_demand.append(float(o.steps[j][1]))
        res.series_ready.append(o.steps[j][1])
        s += step
    return res


def cap(model: Model) -> int:
    return model.max_replicas if model.max_replicas is not None else 10**9


class StaticPeak:
    """A constant pool of `min(peak concurrent demand, maxReplicas)` workers, ready from t=0."""

    name = "static-peak"
    interval_s: float | None = None

    def __init__(self, trace: Trace, model: Model) -> None:
        self.size = min(oracle(trace, model).peak, cap(model))

    def initial(self) -> int:
        return self.size

    def step(self, view: GroupView) -> Command:
        return Command(self.size)


class RayLike:
    """Every 5 s: launch enough workers for running + pending demand (at most maxReplicas), counting the
    ones still starting; remove each ready worker that has been idle for 60 s. Starts with 0 workers."""

    name = "ray-like"
    interval_s: float | None = RAY_INTERVAL_S

    def __init__(self, model: Model) -> None:
        self.max = cap(model)

    def initial(self) -> int:
        return 0

    def step(self, view: GroupView) -> Command:
        return ray_command(view, 0, self.max)


def ray_command(view: GroupView, low: int, high: int) -> Command:
    """One pass of the Ray-like autoscaler within `[low, high]` (also how bounds-mode policies run)."""
    need = view.need(view.running_cpus + view.queued_cpus, view.running_gpus + view.queued_gpus)
    need = min(max(need, low), high)
    idle = [
        w
        for w in view.workers
        if w.ready and not w.busy and w.idle_since is not None and view.t - w.idle_since >= RAY_IDLE_TIMEOUT_S
    ]
    removable = max(0, min(len(idle), view.count - low))
    if view.count - removable > high:  # bounds lowered: Ray retires idle workers above the cap now
        extra = [w for w in view.workers if w.ready and not w.busy and w not in idle]
        idle += extra[: view.count - removable - high]
        removable = min(len(idle), view.count - low)
    remove = tuple(w.name for w in sorted(idle, key=lambda w: -w.created_s)[:removable])
    return Command(max(view.count - len(remove), need), remove)


class HpaLike:
    """A Kubernetes HPA on CPU utilization, target 70 %, with HPA's default behavior.

    Utilization is the busy share of all current workers' CPUs (GPUs for GPU groups, whichever is
    higher); workers still starting count as 0 % busy, which is HPA's rule for not-yet-ready pods when
    scaling up. A queue does not show in utilization: that blindness is the point of this baseline.
    """

    name = "hpa-like"
    interval_s: float | None = HPA_INTERVAL_S

    def __init__(self, model: Model) -> None:
        self.max = max(cap(model), 1)
        self.history: deque[tuple[float, int]] = deque()

    def initial(self) -> int:
        return 1

    def step(self, view: GroupView) -> Command:
        current = max(view.count, 1)
        m = view.model
        util = view.running_cpus / (current * m.worker_cpus)
        if m.worker_gpus:
            util = max(util, view.running_gpus / (current * m.worker_gpus))
        ratio = util / HPA_TARGET
        rec = current if abs(ratio - 1.0) <= HPA_TOLERANCE else math.ceil(current * ratio - 1e-9)
        rec = min(max(rec, 1), self.max)
        self.history.append((view.t, rec))
        while self.history and self.history[0][0] <= view.t - HPA_DOWN_WINDOW_S:
            self.history.popleft()
        if rec > current:
            desired = min(rec, current + max(current, HPA_UP_PODS))
        else:
            desired = min(current, max(r for _, r in self.history))
        return Command(desired)
