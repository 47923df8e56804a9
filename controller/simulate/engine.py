"""The replay engine: tasks arrive, wait in a FIFO queue, run on ready workers; a controller sets the count.

Event-driven with exact (float) times rather than fixed ticks: a task starts the instant a worker has
room, so a queue wait of 0 means exactly 0 and the oracle's lower bound (baselines.py) holds without a
tick's rounding. Controllers (a policy through `decide`, or a baseline) are called every `interval_s`.

The model (contracts.md section 8): one worker group of identical workers (`worker_cpus`, `worker_gpus`);
a worker added at t is ready at t + `startup_s` and costs nothing before (worker-hours count ready
workers, autoscaling-anchors.md 6.1); removal of an idle worker is immediate; a busy worker is never
removed (its tasks would be lost), so a scale-down below the busy count waits until workers are idle.
Tasks are placed first-fit on ready workers in age order (oldest first), which packs work onto old
workers and leaves the newest idle, ready for removal.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter, deque
from collections.abc import Sequence

from controller.simulate.model import MILLI, Command, Controller, GroupView, Model, RunResult, WorkerView
from controller.simulate.trace import Task, Trace


class _Worker:
    __slots__ = ("created", "free_c", "free_g", "idle_since", "name", "ready", "removed", "running")

    def __init__(self, name: str, created: float, free_c: int, free_g: int) -> None:
        self.name = name
        self.created = created
        self.free_c = free_c
        self.free_g = free_g
        self.ready = False
        self.removed = False
        self.running = 0
        self.idle_since: float | None = None


def _m(x: float) -> int:
    return round(x * MILLI)


class Engine:
    """One run of one controller over one trace. Use `run()`; the object is single-use."""

    def __init__(self, trace: Trace, controller: Controller, model: Model) -> None:
        self.trace = trace
        self.ctl = controller
        self.model = model
        self.wc = _m(model.worker_cpus)
        self.wg = _m(model.worker_gpus or 0.0)
        self.workers: list[_Worker] = []  # in creation order (placement order)
        self.by_name: dict[str, _Worker] = {}
        self.seq = 0
        self.ready_heap: list[tuple[float, int, _Worker]] = []
        self.done_heap: list[tuple[float, int, _Worker, int, int, int]] = []
        self.queue: deque[int] = deque()  # task indexes
        self.queue_shapes: Counter[tuple[int, int]] = Counter()
        self.q_c = self.q_g = self.r_c = self.r_g = 0
        self.n_ready = 0
        self.start_s: list[float | None] = [None] * len(trace.tasks)
        self.shape = [(_m(t.cpus), _m(t.gpus)) for t in trace.tasks]

    # --- workers -----------------------------------------------------------------------------
    def _add(self, t: float) -> None:
        self.seq += 1
        w = _Worker(f"w{self.seq}", t, self.wc, self.wg)
        self.workers.append(w)
        self.by_name[w.name] = w
        heapq.heappush(self.ready_heap, (t + self.model.startup_s, self.seq, w))

    def _remove(self, w: _Worker) -> None:
        w.removed = True
        if w.ready:
            self.n_ready -= 1
        self.workers.remove(w)
        del self.by_name[w.name]

    def _apply(self, cmd: Command, t: float) -> int:
        """Apply a command; return +1 if workers were added, -1 if removed, 0 if nothing changed."""
        before = len(self.workers)
        for name in cmd.remove:
            w = self.by_name.get(name)
            if w is not None and w.ready and w.running == 0:
                self._remove(w)
        target = max(cmd.target, 0)
        if target > len(self.workers):
            for _ in range(target - len(self.workers)):
                self._add(t)
        elif target < len(self.workers):
            starting = [w for w in reversed(self.workers) if not w.ready]
            idle = [w for w in reversed(self.workers) if w.ready and w.running == 0]
            for w in (starting + idle)[: len(self.workers) - target]:
                self._remove(w)
        after = len(self.workers)
        return (after > before) - (after < before)

    # --- tasks -------------------------------------------------------------------------------
    def _place(self, t: float) -> None:
        if not self.queue:
            return
        failed: set[tuple[int, int]] = set()
        kept: deque[int] = deque()
        tasks = self.trace.tasks
        while self.queue:
            if len(failed) == len(self.queue_shapes):
                break  # every shape still queued fits nowhere: the rest of the queue waits
            i = self.queue.popleft()
            c, g = self.shape[i]
            if (c, g) not in failed:
                for w in self.workers:
                    if w.ready and w.free_c >= c and w.free_g >= g:
                        w.free_c -= c
                        w.free_g -= g
                        w.running += 1
                        w.idle_since = None
                        self.q_c -= c
                        self.q_g -= g
                        self.r_c += c
                        self.r_g += g
                        self.queue_shapes[(c, g)] -= 1
                        if not self.queue_shapes[(c, g)]:
                            del self.queue_shapes[(c, g)]
                        self.start_s[i] = t
                        self.seq += 1
                        heapq.heappush(self.done_heap, (t + tasks[i].duration_s, self.seq, w, c, g, i))
                        break
                else:
                    failed.add((c, g))
                    kept.append(i)
                continue
            kept.append(i)
        kept.extend(self.queue)
        self.queue = kept

    def _view(self, t: float) -> GroupView:
        return GroupView(
            t=t,
            workers=tuple(
                WorkerView(w.name, w.ready, w.running > 0, w.idle_since, w.created) for w in self.workers
            ),
            queued_tasks=len(self.queue),
            queued_cpus=self.q_c / MILLI,
            queued_gpus=self.q_g / MILLI,
            running_cpus=self.r_c / MILLI,
            running_gpus=self.r_g / MILLI,
            model=self.model,
        )

    def _demand_units(self) -> float:
        return self.model.units((self.q_c + self.r_c) / MILLI, (self.q_g + self.r_g) / MILLI)

    # --- the loop ----------------------------------------------------------------------------
    def run(self) -> RunResult:
        tasks: Sequence[Task] = self.trace.tasks
        horizon = self.trace.end_s
        limit = horizon + self.model.drain_limit_s
        interval = self.ctl.interval_s
        for _ in range(self.ctl.initial()):
            self._add(-self.model.startup_s)  # ready at t=0
        k = 0  # decision number; decision k runs at k * interval
        i = 0  # next arrival
        t = 0.0
        area = 0.0
        last = 0.0
        actions: list[tuple[float, int]] = []
        res = RunResult(self.ctl.name, horizon, 0.0, [], 0.0, 0, actions)
        step = max(horizon, 1.0) / max(self.model.samples, 1)
        next_sample = 0.0
        end = horizon
        while True:
            # 1. workers become ready, tasks finish, tasks arrive (in that order at equal times)
            while self.ready_heap and self.ready_heap[0][0] <= t:
                _, _, w = heapq.heappop(self.ready_heap)
                if not w.removed:
                    area += self.n_ready * (t - last)
                    last = t
                    w.ready = True
                    w.idle_since = t
                    self.n_ready += 1
            while self.done_heap and self.done_heap[0][0] <= t:
                _, _, w, c, g, _ti = heapq.heappop(self.done_heap)
                w.free_c += c
                w.free_g += g
                w.running -= 1
                self.r_c -= c
                self.r_g -= g
                if w.running == 0:
                    w.idle_since = t
            while i < len(tasks) and tasks[i].arrival_s <= t:
                c, g = self.shape[i]
                self.queue.append(i)
                self.queue_shapes[(c, g)] += 1
                self.q_c += c
                self.q_g += g
                i += 1
            self._place(t)
            # 2. the controller decides
            if interval is not None and k * interval <= t:
                area += self.n_ready * (t - last)
                last = t
                direction = self._apply(self.ctl.step(self._view(t)), t)
                if direction:
                    actions.append((t, direction))
                k = math.floor(t / interval + 1e-9) + 1
                if self.model.startup_s == 0:
                    continue  # new workers are ready now: process them at this same time
            # 3. what happens next
            done = i == len(tasks) and not self.queue and not self.done_heap
            candidates = [limit]
            if i < len(tasks):
                candidates.append(tasks[i].arrival_s)
            if self.done_heap:
                candidates.append(self.done_heap[0][0])
            if self.ready_heap:
                candidates.append(self.ready_heap[0][0])
            if interval is not None:
                candidates.append(k * interval)
            t_next = min(candidates)
            # the run ends once everything is served and the trace's window is over, or at the limit
            finished = (done and t_next > horizon) or t_next >= limit
            if finished:
                end = max(horizon, t) if done else limit
            stop = end if finished else t_next
            # queued demand and the plot series are constant until `stop`
            res.unserved_demand_s += self.model.units(self.q_c / MILLI, self.q_g / MILLI) * (stop - t)
            if next_sample < stop:
                demand = self._demand_units()
                while next_sample < stop:
                    res.series_t.append(next_sample)
                    res.series_demand.append(demand)
                    res.series_ready.append(self.n_ready)
                    next_sample += step
                    if len(res.series_t) >= 2 * self.model.samples:
                        # a run far past the trace's window: keep every other point, halve the rate
                        step *= 2
                        res.series_t = res.series_t[::2]
                        res.series_demand = res.series_demand[::2]
                        res.series_ready = res.series_ready[::2]
                        next_sample = math.ceil(next_sample / step - 1e-9) * step
            if finished:
                res.series_t.append(end)
                res.series_demand.append(self._demand_units())
                res.series_ready.append(self.n_ready)
                break
            t = t_next
        area += self.n_ready * (end - last)
        res.end_s = end
        res.ready_seconds = area
        for idx, task in enumerate(tasks):
            s = self.start_s[idx]
            if s is None:
                res.unfinished += 1
                res.waits.append(end - task.arrival_s)
            else:
                res.waits.append(s - task.arrival_s)
        if res.unfinished:
            res.notes.append(
                f"{res.unfinished} task(s) had not started {self.model.drain_limit_s:g} s after the "
                "trace's end; their waits are counted up to then"
            )
        return res
