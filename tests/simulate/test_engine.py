"""The replay engine and the policy adapter: what the policy sees, what the engine does with its
decisions, and how runs end."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from controller.domain import Activity
from controller.simulate.engine import Engine
from controller.simulate.model import Command, GroupView, Model
from controller.simulate.policy_runner import PolicyController, group_ref, observation
from controller.simulate.run import simulate
from controller.simulate.trace import NUMERIC_EPOCH, SimulationInputError
from tests.simulate.helpers import (
    BOUNDS_POLICY,
    PENDING_POLICY,
    TWO_AT_ZERO,
    UTIL_POLICY,
    policy,
    trace,
)


class Scripted:
    """A controller that returns prepared commands and records what it saw."""

    name = "scripted"

    def __init__(self, commands: list[Command], interval_s: float = 10.0, initial: int = 0) -> None:
        self.commands = commands
        self.interval_s: float | None = interval_s
        self._initial = initial
        self.views: list[GroupView] = []

    def initial(self) -> int:
        return self._initial

    def step(self, view: GroupView) -> Command:
        self.views.append(view)
        return self.commands.pop(0) if self.commands else Command(view.count)


def test_a_pending_demand_policy_through_decide(tmp_path: Path) -> None:
    """pendingDemand only, scale-down window 0. t=0: 2 CPUs pending, 0 in use -> 2 workers (ready
    30); 15: still 2 pending, 0 in use -> hold at 2; 30: tasks start (waits 30); 90: tasks end,
    0 in use, 0 pending -> 0, both idle workers removed. Ready 2 x 60 = 120 worker-s."""
    rep = simulate(trace(TWO_AT_ZERO), [policy(PENDING_POLICY, tmp_path)], Model())
    r = rep.result("pending-only")
    assert r.kind == "policy"
    assert r.worker_hours * 3600 == pytest.approx(120)
    assert (r.queue_wait_p50_s, r.queue_wait_p95_s, r.unserved_demand_s) == (30, 30, 60)
    assert (r.actions, r.flaps, r.decision_interval_s) == (2, 0, 15.0)
    assert [a for a in r.run.actions] == [(0.0, 1), (90.0, -1)]


def test_the_observation_the_policy_sees(tmp_path: Path) -> None:
    """Pending = queued CPUs, utilization = busy / ready CPUs x 100, activity per worker; a
    promql signal is unavailable in simulation."""
    p = policy(
        UTIL_POLICY.replace(
            "    - {name: util,",
            "    - {name: q, type: promql, query: 'sum by (namespace, ray_io_cluster, ray_io_group) (x)', "
            "target: {averageValue: 1}}\n    - {name: util,",
        ),
        tmp_path,
    )
    t = trace("timestamp,tasks,duration_s,cpus\n0,3,100,1\n0,1,100,2\n")
    spy = Scripted([Command(3)], interval_s=40.0, initial=1)
    m = Model(worker_cpus=2).for_trace(t)
    Engine(t, spy, m).run()
    v0, v1 = spy.views[0], spy.views[1]
    now = NUMERIC_EPOCH + timedelta(seconds=40)
    # first-fit by age: the warm worker takes two 1-CPU tasks at 0; at 30 the second worker takes
    # the third 1-CPU task and the third worker the 2-CPU task: 5 of 6 CPUs busy at t=40
    obs = observation(p, v1, group_ref("My Trace!"), now, NUMERIC_EPOCH)
    assert obs.ref.cluster == "my-trace" and obs.current == 3 and obs.ready == 3
    assert obs.samples["pending"].value == 0.0
    assert obs.samples["util"].value == pytest.approx(100 * 5 / 6)
    assert not obs.samples["q"].available and "not modelled" in (obs.samples["q"].unavailable or "")
    assert [w.activity for w in obs.workers] == [Activity.BUSY, Activity.BUSY, Activity.BUSY]
    assert dict(obs.worker_resources) == {"CPU": 2.0}
    first = observation(p, v0, group_ref("t"), NUMERIC_EPOCH, NUMERIC_EPOCH)
    assert first.samples["pending"].value == 3.0  # 1 CPU task + the 2-CPU task still queued
    assert first.samples["util"].value == 100.0


def test_starting_workers_are_idle_and_not_ready_and_utilization_needs_a_ready_worker(tmp_path: Path) -> None:
    p = policy(UTIL_POLICY, tmp_path)
    t = trace("timestamp,tasks,duration_s\n0,1,100\n")
    spy = Scripted([Command(2)], interval_s=10.0, initial=0)
    Engine(t, spy, Model().for_trace(t)).run()
    obs = observation(p, spy.views[1], group_ref("t"), NUMERIC_EPOCH, NUMERIC_EPOCH)
    assert [(w.ready, w.activity) for w in obs.workers] == [(False, Activity.IDLE), (False, Activity.IDLE)]
    assert not obs.samples["util"].available


def test_busy_workers_are_never_removed_and_named_removals_only_take_idle_ones() -> None:
    t = trace("timestamp,tasks,duration_s\n0,1,50\n100,0,1\n")
    # t=0: 2 warm workers, task on w1. t=10: target 0 naming w1 (busy) -> only w2 (idle) goes.
    # t=20: target 0 again: w1 still busy, stays. t=50: the task ends first, then target 0 -> w1 goes.
    spy = Scripted(
        [Command(2), Command(0, ("w1",)), Command(0), Command(1), Command(1), Command(0)], initial=2
    )
    run = Engine(t, spy, Model().for_trace(t)).run()
    assert [v.count for v in spy.views[:7]] == [2, 2, 1, 1, 1, 1, 0]
    assert run.actions == [(10.0, -1), (50.0, -1)]
    assert run.ready_seconds == pytest.approx(50 + 10)


def test_scale_down_cancels_starting_workers_first() -> None:
    t = trace("timestamp,tasks,duration_s\n0,1,50\n100,0,1\n")
    spy = Scripted([Command(3), Command(1)], initial=1)  # +2 at 0 (ready 30), back to 1 at 10
    run = Engine(t, spy, Model().for_trace(t)).run()
    assert [w.name for w in spy.views[2].workers] == ["w1"]  # the warm, busy one stays
    assert run.ready_seconds == pytest.approx(101)  # w1 alone, for the whole run


def test_a_run_that_cannot_serve_stops_at_the_drain_limit() -> None:
    t = trace("timestamp,tasks,duration_s\n0,2,10\n")
    run = Engine(t, Scripted([], initial=0), Model(drain_limit_s=100).for_trace(t)).run()
    assert (run.end_s, run.unfinished, run.waits) == (110.0, 2, [110.0, 110.0])
    assert run.unserved_demand_s == pytest.approx(220)
    assert "had not started" in run.notes[0]


def test_startup_zero_serves_at_once_and_tasks_must_fit_a_worker() -> None:
    t = trace("timestamp,tasks,duration_s\n5,3,10\n")
    run = Engine(t, Scripted([Command(0), Command(3)], interval_s=5.0), Model(startup_s=0).for_trace(t)).run()
    assert run.waits == [0.0, 0.0, 0.0]
    big = trace("timestamp,tasks,duration_s,cpus\n0,1,10,1\n0,1,10,4\n", name="big.csv")
    with pytest.raises(SimulationInputError, match=r"big.csv, line 3: a task needs 4 CPU .* --worker-cpus"):
        Model().for_trace(big)


def test_bounds_mode_runs_ray_like_within_the_bounds_decide_writes(tmp_path: Path) -> None:
    rep = simulate(trace(TWO_AT_ZERO), [policy(BOUNDS_POLICY, tmp_path)], Model())
    ray, bounds = rep.result("ray-like"), rep.result("bounds-mode")
    assert (bounds.worker_hours, bounds.queue_wait_p95_s, bounds.actions) == (
        ray.worker_hours,
        ray.queue_wait_p95_s,
        ray.actions,
    )
    capped = simulate(trace(TWO_AT_ZERO), [policy(BOUNDS_POLICY, tmp_path)], Model(max_replicas=1))
    assert capped.result("bounds-mode").run.waits == [30.0, 90.0]  # one worker at a time


def test_max_replicas_overrides_policies_and_dry_run_is_ignored(tmp_path: Path) -> None:
    p = policy(PENDING_POLICY.replace("  minReplicas: 0\n", "  minReplicas: 0\n  dryRun: true\n"), tmp_path)
    rep = simulate(trace(TWO_AT_ZERO), [p], Model(max_replicas=1))
    r = rep.result("pending-only")
    assert r.run.waits == [30.0, 90.0]
    assert rep.model["max_replicas"] == 1
    assert any("dryRun is ignored" in n for n in rep.notes)


def test_policy_controller_threads_state_and_records_reasons(tmp_path: Path) -> None:
    t = trace(TWO_AT_ZERO)
    m = Model().for_trace(t)
    ctl = PolicyController(policy(PENDING_POLICY, tmp_path), m, t.start, t.name)
    Engine(t, ctl, m).run()
    assert ctl.state.at_ms > 0
    assert ctl.last is not None and ctl.last.policy == "pending-only"
    assert ctl.reasons["NO_CHANGE"] > 0


def test_policy_names_must_not_clash_with_baselines(tmp_path: Path) -> None:
    p = policy(PENDING_POLICY.replace("name: pending-only", "name: oracle"), tmp_path)
    with pytest.raises(SimulationInputError, match="clashes with a baseline"):
        simulate(trace(TWO_AT_ZERO), [p])
