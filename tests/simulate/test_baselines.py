"""Each baseline on tiny traces, with the expected numbers worked out by hand in the comments, so
nobody can doubt what `static-peak`, `ray-like`, `hpa-like` and `oracle` mean.

Model unless said otherwise: 1-CPU workers, start-up 30 s, idle removal immediate. Worker-hours count
ready workers over [0, end of run]; the run ends at the trace's end (its last row's timestamp +
duration_s), or when its last task finishes if later.
"""

from __future__ import annotations

import pytest

from controller.simulate.baselines import HpaLike, RayLike, StaticPeak, demand_steps, oracle
from controller.simulate.engine import Engine
from controller.simulate.model import Model
from controller.simulate.report import PolicyResult, Report
from controller.simulate.run import simulate
from tests.simulate.helpers import FIVE_AT_ZERO, TWENTY_AT_ZERO, TWO_APART, TWO_AT_ZERO, trace


def results(text: str, model: Model | None = None) -> Report:
    return simulate(trace(text), [], model or Model())


def check(
    r: PolicyResult,
    worker_s: float,
    p50: float,
    p95: float,
    p99: float,
    unserved: float,
    actions: int,
    flaps: int,
) -> None:
    got = (r.worker_hours * 3600, r.queue_wait_p50_s, r.queue_wait_p95_s, r.queue_wait_p99_s)
    assert got == pytest.approx((worker_s, p50, p95, p99), abs=1e-9)
    assert r.unserved_demand_s == pytest.approx(unserved, abs=1e-9)
    assert (r.actions, r.flaps) == (actions, flaps)


def test_two_tasks_at_zero() -> None:
    """Two 60 s tasks arrive at t=0; the window ends at t=300."""
    rep = results(TWO_AT_ZERO)
    # oracle: 2 workers exactly while the tasks run, 0-60 s: 120 worker-s; up at 0, down at 60
    check(rep.result("oracle"), 120, 0, 0, 0, 0, actions=2, flaps=0)
    # static-peak: peak concurrency 2, ready from 0 to the end at 300: 600 worker-s, no wait
    check(rep.result("static-peak"), 600, 0, 0, 0, 0, actions=0, flaps=0)
    # ray-like: at 0 both tasks pend -> 2 workers, ready at 30; tasks run 30-90 (waits 30, 30);
    # idle from 90, removed at the 5 s check when idle 60 s: t=150. Ready 30-150 x 2 = 240 worker-s.
    # Unserved: 2 workers of demand for 30 s = 60.
    check(rep.result("ray-like"), 240, 30, 30, 30, 60, actions=2, flaps=0)
    # hpa-like: 1 worker ready at 0 (min 1) takes task 1. t=0: util 100 % -> ceil(1 x 1/0.7) = 2, +1
    # (ready 30, task 2 waits 30). t=15: util 1/2 -> ceil(2 x 0.714) = 2. t=30: 2 busy of 2 ->
    # ceil(2 x 1.43) = 3, +1 (ready 60). t=45: 2/3 -> ratio 0.95, in tolerance: 3. From t=60 the
    # ratio falls but the 300 s scale-down window still holds the 3 of t=45 at the end (t=300).
    # Ready: 0-300 + 30-300 + 60-300 = 300 + 270 + 240 = 810 worker-s. Waits 0 and 30: p50 = 0
    # (nearest rank 1 of 2), p95 = p99 = 30.
    check(rep.result("hpa-like"), 810, 0, 30, 30, 30, actions=2, flaps=0)


def test_two_tasks_apart_show_ray_like_flapping() -> None:
    """A 10 s task at t=0 and another at t=200; window to t=400."""
    rep = results(TWO_APART)
    # oracle: 1 worker 0-10 and 200-210 = 20 worker-s; up 0, down 10, up 200 (a flap: 190 s after
    # a down), down 210
    check(rep.result("oracle"), 20, 0, 0, 0, 0, actions=4, flaps=1)
    # static-peak: 1 worker for 400 s
    check(rep.result("static-peak"), 400, 0, 0, 0, 0, actions=0, flaps=0)
    # ray-like: launch at 0 (ready 30, task 30-40, idle from 40, removed at 100); the second task
    # pends at 200: launch (ready 230, task 230-240, removed at 300). Ready 70 + 70 = 140 worker-s;
    # waits 30, 30. Actions up 0, down 100, up 200 (flap: 100 s after the down), down 300.
    check(rep.result("ray-like"), 140, 30, 30, 30, 60, actions=4, flaps=1)
    # hpa-like: the first task runs at once on the warm worker; t=0: util 100 % -> 2 workers
    # (+1, ready 30). Then utilization is 0, but the 300 s window keeps 2 until t=300, when the
    # t=0 recommendation leaves it: -1 at 300. The second task (200-210) runs on the warm worker
    # between two 15 s checks. Ready: 0-400 + 30-300 = 400 + 270 = 670 worker-s.
    check(rep.result("hpa-like"), 670, 0, 0, 0, 0, actions=2, flaps=0)


def test_static_peak_is_capped_by_max_replicas() -> None:
    """Five 60 s tasks at t=0, maxReplicas 3: the pool is 3, two tasks wait for the first three."""
    rep = results(FIVE_AT_ZERO, Model(max_replicas=3))
    # tasks 1-3 run 0-60, tasks 4-5 run 60-120; the run lasts until 120: 3 x 120 = 360 worker-s.
    # Waits 0,0,0,60,60: p50 = 3rd = 0, p95 = p99 = 5th = 60; unserved 2 x 60 = 120.
    check(rep.result("static-peak"), 360, 0, 60, 60, 120, actions=0, flaps=0)
    # the oracle is not capped: 5 workers for 60 s
    check(rep.result("oracle"), 300, 0, 0, 0, 0, actions=2, flaps=0)
    # ray-like launches min(5, 3) = 3 at t=0 (ready 30): tasks 1-3 run 30-90, 4-5 run 90-150 on
    # the two oldest workers; the third is idle from 90 and removed by the check at 150, the
    # instant the run ends: 3 x 120 = 360 worker-s. Waits 30,30,30,90,90: p50 30, p95 90;
    # unserved 3 x 30 + 2 x 90 = 270. Actions: up at 0, down at 150.
    check(rep.result("ray-like"), 360, 30, 90, 90, 270, actions=2, flaps=0)


def test_hpa_like_grows_by_the_ratio_every_15_s() -> None:
    """Twenty 100 s tasks at t=0 with start-up 0 s: HPA sees only utilization (always 100 % while
    tasks wait), so it grows by ceil(current / 0.7) per 15 s."""
    rep = results(TWENTY_AT_ZERO, Model(startup_s=0))
    # counts: 1 -> 2 (t=0) -> 3 (15) -> 5 (30) -> 8 (45) -> 12 (60) -> 18 (75) -> 26 (90): 7 ups.
    # Starts: 2 tasks at 0, 1 at 15, 2 at 30, 3 at 45, 4 at 60, 6 at 75, 2 at 90.
    # Waits sorted: 0,0,15,30,30,45,45,45,60x4,75x6,90,90 -> p50 = 10th = 60, p95 = 19th = 90,
    # p99 = 20th = 90; unserved = sum of waits = 15+60+135+240+450+180 = 1080.
    # The run ends at 190 (last start 90 + 100 s); the 300 s window keeps all 26 until then:
    # 2x190 + 1x175 + 2x160 + 3x145 + 4x130 + 6x115 + 8x100 = 3320 worker-s.
    check(rep.result("hpa-like"), 3320, 60, 90, 90, 1080, actions=7, flaps=0)
    # ray-like (start-up 0): all 20 at t=0, no wait; 20 x 100 = 2000 worker-s (the run ends at 100)
    check(rep.result("ray-like"), 2000, 0, 0, 0, 0, actions=1, flaps=0)


def test_ray_like_packs_by_worker_shape_and_counts_starting_workers() -> None:
    """Three 1-CPU tasks on 2-CPU workers need 2 workers, launched once (not again while starting)."""
    rep = results("timestamp,tasks,duration_s\n0,3,40\n", Model(worker_cpus=2))
    # need = ceil(3 / 2) = 2 at t=0 (ready 30); checks at 5..25 see 2 workers already: no action.
    # Tasks 30-70 (first-fit: 2 on the first worker, 1 on the second); run ends at 70: 2 x 40 = 80.
    check(rep.result("ray-like"), 80, 30, 30, 30, 45, actions=1, flaps=0)
    # unserved above: 3 tasks x 30 s x 0.5 worker each = 45 worker-s
    # oracle: ceil(3 CPUs / 2) = 2 workers for 40 s = 80 worker-s; static-peak: 2 x 40 = 80
    check(rep.result("oracle"), 80, 0, 0, 0, 0, actions=2, flaps=0)
    check(rep.result("static-peak"), 80, 0, 0, 0, 0, actions=0, flaps=0)


def test_oracle_is_the_integral_of_concurrent_demand_in_workers() -> None:
    t = trace("timestamp,tasks,duration_s,cpus,gpus\n0,1,10,1,0\n5,1,10,0.5,1\n15,1,5,1,1\n30,0,1,1,0\n")
    m = Model(worker_cpus=1, worker_gpus=1).for_trace(t)
    # 0-5: 1 CPU -> 1; 5-10: 1.5 CPU, 1 GPU -> 2; 10-15: 0.5 CPU, 1 GPU -> 1;
    # 15-20: 1 CPU, 1 GPU -> 1 (a task ending at 15 and one arriving at 15 do not overlap);
    # 20-31: 0
    assert demand_steps(t, m) == [(0.0, 1), (5.0, 2), (10.0, 1), (20.0, 0)]
    o = oracle(t, m)
    assert (o.worker_seconds, o.peak) == (5 + 10 + 5 + 5, 2)


def test_baseline_controllers_directly() -> None:
    """The controllers as the engine drives them: initial pools and intervals of contracts.md 8."""
    t = trace(TWO_AT_ZERO)
    m = Model(max_replicas=1).for_trace(t)
    assert (StaticPeak(t, m).initial(), StaticPeak(t, m).interval_s) == (1, None)
    assert (RayLike(m).initial(), RayLike(m).interval_s) == (0, 5.0)
    assert (HpaLike(m).initial(), HpaLike(m).interval_s) == (1, 15.0)
    run = Engine(t, RayLike(m), m).run()
    # capped at 1: task 1 runs 30-90, task 2 90-150; idle from 150; the run ends at 300 (the
    # window) with the worker removed at 210: ready 30-210 = 180 s
    assert run.ready_seconds == pytest.approx(180)
    assert run.waits == [30, 90]


def test_gpu_tasks_get_1_gpu_workers_and_gpu_hours() -> None:
    """Two 60 s tasks needing 1 CPU and 1 GPU: the default worker shape becomes 1 CPU + 1 GPU, and
    GPU-hours are worker-hours x 1 GPU."""
    rep = results("timestamp,tasks,duration_s,cpus,gpus\n0,2,60,1,1\n299,0,1,1,0\n")
    assert rep.model["worker_gpus"] == 1.0
    for name, worker_s in (("oracle", 120), ("static-peak", 600), ("ray-like", 240)):
        r = rep.result(name)
        assert (r.worker_hours * 3600, r.gpu_hours * 3600) == pytest.approx((worker_s, worker_s))
    cpu_only = results(TWO_AT_ZERO)
    assert cpu_only.result("static-peak").gpu_hours == 0.0
