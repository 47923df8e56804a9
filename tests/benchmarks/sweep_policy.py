"""Parameter sweep of the default policy in the simulator: worker-hours vs p95 queue wait vs flaps.

    .venv/bin/python -m tests.benchmarks.sweep_policy [--grid NAME] [--traces NAME,...]
        [--cache FILE] [--max-replicas 64] [--all-rows] [--summary] [--laptop]

Every variant is a pending-demand policy built here from explicit knobs (so the sweep does not move
when policies/cpu-default.yaml changes): an optional CPU utilization signal and its target, the
scale-down stabilization window, the scale-up and scale-down rate policies, the tolerance, the
activation threshold, and the decision interval (the controller's tick: 15 s on Kubernetes, 2 s in
laptop mode, controller/settings.py). Each variant runs through the controller's own `decide` on the
traces of bench_simulate (the Azure code trace and the seeded synthetic ones), with the default model
(1-CPU workers, 30 s start-up) and `--max-replicas` for policies and baselines alike.

Grids (`GRIDS`): `main` (signal x window x scale-up limit x tick 15/5 s), `down` (scale-down rate
policies), `misc` (tolerance, activation threshold), `refine` and `decay` (utilization target x window x
Max(Percent, 4 pods) decays x tolerance), `tick` (faster ticks), `flaps` (long windows), `chosen`
(cpu-default before and after this sweep, and its cost-first variant), `curve` (the table of
docs/benchmarks.md), `all` (their union, 293 variants).

Prints, per trace: the baselines and references (below), the Pareto front over (worker-hours, p95,
flaps/h) with each variant as a multiple of ray-like's worker-hours, and, per tick, the cheapest
variant at or under ray-like's p95 and at or under 1 flap per hour. `--all-rows` lists every variant,
`--summary` ends with one table of the grid's variants across the traces. `--cache FILE` keeps
finished runs in a JSON file, so an interrupted or widened sweep only runs what is new (runs are keyed
by the variant's label). `--laptop` adds the laptop check: a burst of 16 one-CPU 15 s tasks on at
most 4 workers with a 5 s start-up and a 2 s tick, policy vs ray-like (makespan, worker-seconds).

The references are not baselines of contracts.md section 8 and are in no report. The reactive ideal
shows what reacting alone can reach: every second it asks for exactly the running + queued demand (so
a task that finds no idle worker waits for a start-up) and removes each worker the moment it is idle.
Its worker-hours are about the oracle's and its p95 about the start-up delay: a p95 below the start-up
delay needs idle workers held in reserve, and those are what a controller pays above it. The
idle-timeout references are Ray's rule (ray-like) with other idle timeouts and ticks: the per-worker
idle removal that `decide` does not have, to compare with its group-level window.

Not a test: it asserts nothing. `--grid all` takes 20-40 minutes on 2 busy cores.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from controller.policy.model import ScalingPolicy
from controller.simulate.engine import Engine
from controller.simulate.model import Command, Controller, GroupView, Model
from controller.simulate.report import PolicyResult
from controller.simulate.run import simulate
from controller.simulate.trace import NUMERIC_EPOCH, Task, Trace
from tests.benchmarks.bench_simulate import traces

Rate = tuple[str, int, int]  # (Pods | Percent, value, periodSeconds)

CPU_DEFAULT_UP: tuple[Rate, ...] = (("Pods", 4, 5), ("Percent", 100, 5))  # as shipped before this sweep
ALL_AT_ONCE: tuple[Rate, ...] = (("Percent", 100, 15),)
# Max(Percent, Pods 4): a large pool decays by the percentage per period, a small one (laptop mode's
# 4 workers) still goes all at once
RATES: tuple[tuple[Rate, ...], ...] = (
    (("Pods", 1, 15),),
    (("Pods", 1, 30),),
    (("Pods", 1, 60),),
    (("Percent", 10, 15),),
    (("Percent", 20, 60),),
    (("Percent", 50, 60),),
    (("Pods", 1, 15), ("Percent", 10, 15)),
)
DECAYS: tuple[tuple[Rate, ...], ...] = (
    (("Percent", 50, 60), ("Pods", 4, 60)),
    (("Percent", 30, 60), ("Pods", 4, 60)),
    (("Percent", 20, 60), ("Pods", 4, 60)),
    (("Percent", 50, 30), ("Pods", 4, 30)),
)


@dataclass(frozen=True)
class Knobs:
    """One variant. `up=None`: no scale-up limit (an explicit empty `policies: []`)."""

    util: int | None = None  # CPU averageUtilization target; None: no utilization signal
    window: int = 30  # scale-down stabilizationWindowSeconds
    up: tuple[Rate, ...] | None = None
    down: tuple[Rate, ...] = ALL_AT_ONCE
    tolerance: float = 0.1
    activation: float = 0.0
    interval: float = 15.0  # decision interval (the controller's tick), s

    def label(self) -> str:
        parts = [f"util {self.util}" if self.util else "pending only", f"window {self.window}"]
        parts.append(
            "up unlimited"
            if self.up is None
            else "up " + "+".join(f"{v}{'%' if k == 'Percent' else 'p'}/{p}s" for k, v, p in self.up)
        )
        if self.down != ALL_AT_ONCE:
            parts.append(
                "down " + "+".join(f"{v}{'%' if k == 'Percent' else 'p'}/{p}s" for k, v, p in self.down)
            )
        if self.tolerance != 0.1:
            parts.append(f"tol {self.tolerance:g}")
        if self.activation:
            parts.append(f"act {self.activation:g}")
        parts.append(f"tick {self.interval:g}s")
        return ", ".join(parts)

    def policy(self, name: str = "variant") -> ScalingPolicy:
        signals: list[dict[str, Any]] = [
            {
                "name": "pending-cpu",
                "type": "pendingDemand",
                "resource": "CPU",
                "activationThreshold": self.activation,
            }
        ]
        if self.util is not None:
            signals.append(
                {
                    "name": "cpu-util",
                    "type": "utilization",
                    "resource": "CPU",
                    "target": {"averageUtilization": self.util},
                }
            )

        def rates(rs: Iterable[Rate]) -> list[dict[str, Any]]:
            return [{"type": k, "value": v, "periodSeconds": p} for k, v, p in rs]

        doc = {
            "apiVersion": "rayops.io/v1alpha1",
            "kind": "ScalingPolicy",
            "metadata": {"name": name},
            "spec": {
                "selector": {"namespaces": ["*"]},
                "workerGroups": ["*"],
                "mode": "owner",
                "minReplicas": 0,
                "maxReplicas": 4,
                "signals": signals,
                "tolerance": self.tolerance,
                "behavior": {
                    "scaleUp": {
                        "stabilizationWindowSeconds": 0,
                        "selectPolicy": "Max",
                        "policies": rates(self.up or ()),
                    },
                    "scaleDown": {
                        "stabilizationWindowSeconds": self.window,
                        "selectPolicy": "Max",
                        "policies": rates(self.down),
                    },
                },
                "onMissingData": {"action": "hold"},
            },
        }
        return ScalingPolicy.model_validate(doc)


GRIDS = ("main", "down", "misc", "refine", "decay", "tick", "flaps", "chosen", "curve", "all")


def grid(name: str) -> list[Knobs]:
    """The named grids; `all` is their union."""
    out: list[Knobs] = []
    if name in ("main", "all"):
        # signal x window x scale-up limit x tick
        for interval in (15.0, 5.0):
            for util in (None, 70, 85, 95):
                for window in (0, 30, 60, 120, 300):
                    for up in (CPU_DEFAULT_UP, None):
                        out.append(Knobs(util, window, up, interval=interval))
    if name in ("down", "all"):
        # scale-down rate policies instead of (or with) a window: the pool decays towards demand
        for util in (None, 85):
            for window in (0, 30):
                for down in RATES:
                    out.append(Knobs(util, window, None, down))
    if name in ("misc", "all"):
        # tolerance and activation threshold around the cost-first and the latency-leaning settings
        for util in (None, 85):
            for tol in (0.0, 0.2, 0.3):
                out.append(Knobs(util, 30, None, tolerance=tol))
            for act in (1.0, 2.0, 4.0):
                out.append(Knobs(util, 30, None, activation=act))
    if name in ("refine", "all"):
        # combinations around the best of the above: utilization target, window, decay, tolerance
        for util in (None, 80, 85, 90):
            for window in (30, 60):
                for down in (ALL_AT_ONCE, *DECAYS):
                    for tol in (0.0, 0.1, 0.2):
                        out.append(Knobs(util, window, None, down, tolerance=tol))
    if name in ("decay", "all"):
        # no window at all: the rate policy alone holds a decaying part of the pool
        for util in (None, 80, 85, 90, 95):
            for down in DECAYS:
                out.append(Knobs(util, 0, None, down))
    if name in ("tick", "all"):
        # the candidates at the faster ticks a controller can be set to (laptop mode's is 2 s)
        for interval in (5.0, 2.0):
            for util in (None, 80, 85, 90, 95):
                for down in (ALL_AT_ONCE, DECAYS[0]):
                    out.append(Knobs(util, 30, None, down, interval=interval))
                out.append(Knobs(util, 0, None, DECAYS[0], interval=interval))
    if name in ("flaps", "all"):
        # what <= 1 flap per hour costs: long windows, wide tolerance
        for util in (None, 85):
            for window in (300, 600, 900, 1200):
                for tol in (0.1, 0.3):
                    out.append(Knobs(util, window, None, tolerance=tol))
    if name in ("chosen", "all"):
        out += CHOSEN
    if name in ("curve", "all"):
        out += CURVE
    seen: dict[Knobs, None] = {}
    for k in out:
        seen.setdefault(k, None)
    return list(seen)


# The settings compared in docs/benchmarks.md: cpu-default as shipped before the sweep and after it
# (policies/cpu-default.yaml), and the cost-first variant its comment mentions.
BEFORE = Knobs(70, 30, CPU_DEFAULT_UP, ALL_AT_ONCE)
AFTER = Knobs(85, 30, None, DECAYS[0])
COST_FIRST = Knobs(None, 30, None, DECAYS[0])
CHOSEN: list[Knobs] = [BEFORE, AFTER, COST_FIRST]
# The laptop check: the shipped settings, and the windows the worker-seconds goal would need
LAPTOP: list[Knobs] = [BEFORE, AFTER, *(replace(AFTER, window=w) for w in (20, 15, 0))]
# The trade-off curve of docs/benchmarks.md: from cheapest to most held back, at the Kubernetes tick,
# then the chosen setting at faster ticks.
CURVE: list[Knobs] = [
    Knobs(None, 0),
    COST_FIRST,
    Knobs(85, 0, None, DECAYS[0]),
    Knobs(95, 30),
    Knobs(90, 30, None, DECAYS[0]),
    AFTER,
    Knobs(85, 30),
    Knobs(80, 30, None, DECAYS[0]),
    BEFORE,
    Knobs(85, 60, None, DECAYS[0]),
    Knobs(85, 300),
    Knobs(85, 600, tolerance=0.3),
    Knobs(85, 1200, tolerance=0.3),
    replace(COST_FIRST, interval=5.0),
    replace(AFTER, interval=5.0),
    replace(AFTER, interval=2.0),
    Knobs(95, 30, interval=2.0),
    Knobs(85, 0, None, DECAYS[0], interval=2.0),
]


@dataclass
class Row:
    trace: str
    label: str
    worker_hours: float
    p95: float
    p99: float
    flaps_per_h: float
    actions: int
    knobs: dict[str, Any] = field(default_factory=dict)


def _capped_need(view: GroupView) -> int:
    """Workers for running + queued demand, at most `--max-replicas` (as the policies and ray-like)."""
    need = view.need(view.running_cpus + view.queued_cpus, view.running_gpus + view.queued_gpus)
    cap = view.model.max_replicas
    return need if cap is None else min(need, cap)


class ReactiveIdeal:
    """Every `interval` s: exactly running + queued demand (starting workers included, capped like the
    policies); idle workers removed at once. No headroom, no hold: the cheapest a purely reactive
    controller can be."""

    name = "reactive-ideal"

    def __init__(self, interval: float = 1.0) -> None:
        self.interval_s: float | None = interval

    def initial(self) -> int:
        return 0

    def step(self, view: GroupView) -> Command:
        need = _capped_need(view)
        idle = [w.name for w in view.workers if w.ready and not w.busy]
        # idle workers go first (they cost); then the engine cancels starting ones (free) if still over
        return Command(need, tuple(idle[: max(view.count - need, 0)]))


class IdleTimeout:
    """Ray's rule per worker with another timeout and tick: every `interval` s, enough workers for
    running + queued demand; a ready worker idle for `timeout` s is removed. The per-worker idle
    removal that `decide` does not have (a Worker carries no idle-since time), to compare with the
    group-level scale-down window."""

    def __init__(self, timeout: float, interval: float) -> None:
        self.timeout = timeout
        self.interval_s: float | None = interval
        self.name = f"idle-timeout {timeout:g}s, tick {interval:g}s"

    def initial(self) -> int:
        return 0

    def step(self, view: GroupView) -> Command:
        need = _capped_need(view)
        idle = [
            w.name
            for w in view.workers
            if w.ready and not w.busy and w.idle_since is not None and view.t - w.idle_since >= self.timeout
        ]
        return Command(max(view.count - len(idle), need), tuple(idle))


IDLE_REFS = tuple(IdleTimeout(t, i) for i in (15.0, 5.0) for t in (15.0, 30.0, 60.0, 120.0))


def _row(tr: Trace, r: PolicyResult, label: str, knobs: Knobs | None) -> Row:
    return Row(
        tr.name,
        label,
        r.worker_hours,
        r.queue_wait_p95_s,
        r.queue_wait_p99_s,
        r.flaps / tr.span_hours,
        r.actions,
        asdict(knobs) if knobs else {},
    )


def baselines(tr: Trace, model: Model, have: Iterable[str] = ()) -> dict[str, Row]:
    """The four baselines and the reference controllers, those not in `have`."""
    out: dict[str, Row] = {}
    if "ray-like" not in have:
        rep = simulate(tr, [], model)
        out = {r.policy: _row(tr, r, r.policy, None) for r in rep.results}
    refs: list[Controller] = [ReactiveIdeal(), *IDLE_REFS]
    for ctl in refs:
        if ctl.name not in have:
            run = Engine(tr, ctl, model.for_trace(tr)).run()
            out[ctl.name] = _row(
                tr, PolicyResult.from_run(run, "reference", 0.0, ctl.interval_s), ctl.name, None
            )
    return out


def run_variants(tr: Trace, model: Model, knobs: Sequence[Knobs]) -> list[Row]:
    rows: list[Row] = []
    for interval in sorted({k.interval for k in knobs}):
        batch = [k for k in knobs if k.interval == interval]
        rep = simulate(
            tr,
            [k.policy(f"v{i}") for i, k in enumerate(batch)],
            replace(model, policy_interval_s=interval),
            baselines=(),
        )
        rows += [_row(tr, rep.result(f"v{i}"), k.label(), k) for i, k in enumerate(batch)]
    return rows


def pareto(rows: Sequence[Row]) -> list[Row]:
    """The rows no other row beats or equals on all of worker-hours, p95 and flaps/h (rounded as shown)."""

    def key(r: Row) -> tuple[float, float, float]:
        return (round(r.worker_hours, 2), round(r.p95, 1), round(r.flaps_per_h, 1))

    front = []
    for r in rows:
        kr = key(r)
        if not any(
            all(a <= b for a, b in zip(key(o), kr, strict=True)) and key(o) != kr for o in rows if o is not r
        ):
            front.append(r)
    uniq: dict[tuple[float, float, float], Row] = {}
    for r in sorted(front, key=key):
        uniq.setdefault(key(r), r)
    return list(uniq.values())


def table(rows: Sequence[Row], ray: Row, oracle: Row) -> list[str]:
    out = [
        "| variant | x ray-like | x oracle | p95 s | p99 s | flaps/h |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        out.append(
            f"| {r.label} | {r.worker_hours / ray.worker_hours:.2f} "
            f"| {r.worker_hours / oracle.worker_hours:.2f} | {r.p95:.1f} | {r.p99:.1f} "
            f"| {r.flaps_per_h:.1f} |"
        )
    return out


def summary_table(knobs: Sequence[Knobs], per_trace: Sequence[tuple[str, Row, Row, list[Row]]]) -> list[str]:
    """One row per variant, one cell per trace: worker-hours as x ray-like, p95 s, flaps per hour."""
    out = [
        "| variant | " + " | ".join(name for name, *_ in per_trace) + " |",
        "|---|" + "---:|" * len(per_trace),
        "| ray-like | "
        + " | ".join(f"1.00 / {ray.p95:.1f} / {ray.flaps_per_h:.1f}" for _, ray, _, _ in per_trace)
        + " |",
        "| oracle | "
        + " | ".join(f"{o.worker_hours / ray.worker_hours:.2f} / 0 / -" for _, ray, o, _ in per_trace)
        + " |",
    ]
    for i, k in enumerate(knobs):
        cells = []
        for _, ray, _, rows in per_trace:
            r = rows[i]
            p95 = f"{r.p95:.1f}" if r.p95 > ray.p95 else f"**{r.p95:.1f}**"  # bold: at or under ray-like's
            cells.append(f"{r.worker_hours / ray.worker_hours:.2f} / {p95} / {r.flaps_per_h:.1f}")
        out.append(f"| {k.label()} | " + " | ".join(cells) + " |")
    return out


def laptop_check(knobs: Sequence[Knobs]) -> list[str]:
    """16 one-CPU 15 s tasks at t=0, at most 4 workers, 5 s start-up, 2 s tick (laptop mode); the window
    runs 300 s past the burst so idle workers held after it are counted."""
    tasks = tuple(Task(0.0, 15.0, 1.0, 0.0, i + 2) for i in range(16))
    tr = Trace("laptop-burst", tasks, 300.0, NUMERIC_EPOCH, "synthetic", ())
    model = Model(startup_s=5.0, policy_interval_s=2.0, max_replicas=4)
    rep = simulate(tr, [k.policy(f"v{i}") for i, k in enumerate(knobs)], model, baselines=("ray-like",))

    def makespan(r: PolicyResult) -> float:
        return max(t.arrival_s + w + t.duration_s for t, w in zip(tasks, r.run.waits, strict=True))

    ray = rep.result("ray-like")
    out = [
        "| variant | makespan s | x ray-like (<= 0.85) | worker-s | x ray-like (<= 0.7) |",
        "|---|---:|---:|---:|---:|",
        f"| ray-like | {makespan(ray):.0f} | 1.00 | {ray.worker_hours * 3600:.0f} | 1.00 |",
    ]
    for i, k in enumerate(knobs):
        r = rep.result(f"v{i}")
        out.append(
            f"| {replace(k, interval=2.0).label()} | {makespan(r):.0f} | {makespan(r) / makespan(ray):.2f} "
            f"| {r.worker_hours * 3600:.0f} | {r.worker_hours / ray.worker_hours:.2f} |"
        )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--grid", default="main", choices=GRIDS)
    ap.add_argument("--traces", help="comma-separated trace names (default: all)")
    ap.add_argument("--cache", type=Path, help="JSON file of finished runs, read and extended")
    ap.add_argument("--max-replicas", type=int, default=64)
    ap.add_argument("--laptop", action="store_true", help="also run the laptop burst check")
    ap.add_argument("--all-rows", action="store_true", help="print every variant, not only the front")
    ap.add_argument(
        "--summary", action="store_true", help="end with one table of every variant across the traces"
    )
    args = ap.parse_args(argv)
    model = Model(max_replicas=args.max_replicas)
    knobs = grid(args.grid)
    wanted = set(args.traces.split(",")) if args.traces else None
    cache: dict[str, dict[str, Any]] = {}
    if args.cache and args.cache.exists():
        cache = json.loads(args.cache.read_text())
    started = time.monotonic()
    summary: list[tuple[str, Row, Row, list[Row]]] = []
    for tr in traces():
        if wanted and tr.name not in wanted:
            continue
        t0 = time.monotonic()
        ckey = f"{tr.name}|max{args.max_replicas}"
        entry = cache.setdefault(ckey, {"baselines": {}, "variants": {}})
        entry["baselines"].update({k: asdict(v) for k, v in baselines(tr, model, entry["baselines"]).items()})
        base = {k: Row(**v) for k, v in entry["baselines"].items()}
        todo = [k for k in knobs if k.label() not in entry["variants"]]
        for r in run_variants(tr, model, todo):
            entry["variants"][r.label] = asdict(r)
        if args.cache:
            args.cache.write_text(json.dumps(cache))
        rows = [Row(**entry["variants"][k.label()]) for k in knobs]
        ray, oracle = base["ray-like"], base["oracle"]
        summary.append((tr.name, ray, oracle, rows))
        print(f"### {tr.name} ({len(todo)} new runs, {time.monotonic() - t0:.0f} s)\n")
        print("| reference | worker-h | x ray-like | x oracle | p95 s | flaps/h |")
        print("|---|---:|---:|---:|---:|---:|")
        for name in (
            "static-peak",
            "ray-like",
            "hpa-like",
            "oracle",
            "reactive-ideal",
            *(c.name for c in IDLE_REFS),
        ):
            b = base[name]
            print(
                f"| {name} | {b.worker_hours:.2f} | {b.worker_hours / ray.worker_hours:.2f} "
                f"| {b.worker_hours / oracle.worker_hours:.2f} | {b.p95:.1f} | {b.flaps_per_h:.1f} |"
            )
        print("\nPareto front (worker-hours, p95, flaps/h):\n")
        print("\n".join(table(pareto(rows), ray, oracle)))
        print()
        for tick in sorted({r.knobs["interval"] for r in rows}, reverse=True):
            at_tick = [r for r in rows if r.knobs["interval"] == tick]
            for what, ok in (
                (f"at <= ray-like's p95 ({ray.p95:.1f} s)", [r for r in at_tick if r.p95 <= ray.p95]),
                ("at <= 1 flap per hour", [r for r in at_tick if r.flaps_per_h <= 1.0]),
            ):
                if ok:
                    best = min(ok, key=lambda r: r.worker_hours)
                    print(
                        f"- tick {tick:g} s, cheapest {what}: {best.label}: "
                        f"{best.worker_hours / ray.worker_hours:.2f}x ray-like "
                        f"({best.worker_hours / oracle.worker_hours:.2f}x oracle), p95 {best.p95:.1f} s, "
                        f"{best.flaps_per_h:.1f} flaps/h"
                    )
        if args.all_rows:
            print("\nAll variants:\n")
            print("\n".join(table(sorted(rows, key=lambda r: r.worker_hours), ray, oracle)))
        print()
    if args.summary and summary:
        print(
            "### Across the traces: x ray-like worker-hours / p95 wait s (bold: <= ray-like's) "
            "/ flaps per hour\n"
        )
        print("\n".join(summary_table(knobs, summary)) + "\n")
    if args.laptop:
        print("### Laptop burst (16 x 15 s one-CPU tasks, max 4 workers, 5 s start-up, 2 s tick)\n")
        print("\n".join(laptop_check(LAPTOP)) + "\n")
    print(f"(total {time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
